//! Hereabouts' stores: the host side of the component's `store` import, over real storage.
//! Each is a [`hereabouts_host::Backend`] and does exactly what the contract asks — make each
//! write atomic and conditional on the version read — and nothing else: the allocation logic
//! stays in the component, the retry budget in [`hereabouts_host::retry`].
//!
//! - [`sqlite`] (feature `local`, default; `"datastore": "local"`): one SQLite database on
//!   the node, shared by every plugin process there;
//! - [`etcd`] (feature `etcd`): cluster-wide, in etcd: a head per pool holding the core's
//!   summary, one key per allocation and an index by attachment and by pod interface, so an
//!   ADD or DEL is one read-only and one conditional transaction whatever the pool's size;
//!   with `node_slice_size`, the nodes' claims of their slices ([`etcd::slices`]);
//! - [`kube`] (feature `kube`): Whereabouts' own custom resources, so a cluster can switch
//!   between Whereabouts and Hereabouts in either direction.
//!
//! Not here: deciding which pods are gone (`hereabouts-kube`), the CNI protocol (`hereabouts`).

#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "kube")]
pub mod kube;
#[cfg(feature = "local")]
pub mod sqlite;

use hereabouts_host::Backend;
use hereabouts_host::config::{ConfigError, IpamConfig, StoreKind};
use hereabouts_host::error::CniError;

/// Opens the store the ipam config names (see [`IpamConfig::store_kind`]). An unknown store,
/// or one this build leaves out, is an invalid config (CNI 7); a store that cannot be opened
/// is CNI 5, or 11 when it is unreachable.
pub fn open(config: &IpamConfig) -> Result<Box<dyn Backend>, CniError> {
    match config.store_kind()? {
        #[cfg(feature = "local")]
        StoreKind::Local => Ok(Box::new(sqlite::SqliteStore::open(&config.data_dir())?)),
        #[cfg(feature = "etcd")]
        StoreKind::Etcd => Ok(Box::new(etcd::open(config)?)),
        #[cfg(feature = "kube")]
        StoreKind::Kubernetes => Ok(Box::new(kube::open(config)?)),
        #[allow(unreachable_patterns)]
        other => Err(ConfigError::at(
            "datastore",
            format!("this build of hereabouts has no {other:?} store"),
        )
        .into()),
    }
}
