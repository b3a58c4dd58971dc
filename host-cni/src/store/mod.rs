//! Stores: the host side of the WIT `store` interface.
//!
//! A [`Backend`] is what a real store implements — the embedded local store, etcd, Kubernetes
//! CRDs. The runtime hands the component exactly one backend; the component runs the
//! read → decide → conditional-write loop, the backend only has to make each write atomic and
//! conditional on the version it returned from the read.

use std::time::Duration;

use crate::runtime::{Owner, PoolEdit, PoolRef, PoolSnapshot, StoreError};

pub mod etcd;
pub mod kube;
pub mod local;
pub mod memory;

/// Opens the store the ipam config names (see [`IpamConfig::store_kind`]). An unknown or not
/// yet available store is an invalid config (CNI 7); a store that cannot be opened is CNI 5.
pub fn open(
    config: &crate::config::IpamConfig,
) -> Result<Box<dyn Backend>, crate::error::CniError> {
    use crate::config::StoreKind;
    use crate::error::{CniError, Code};
    match config.store_kind().map_err(|msg| CniError::new(Code::InvalidConfig, msg))? {
        StoreKind::Local => {
            let store =
                local::LocalStore::open(&config.data_dir()).map_err(|e| CniError::from(&e))?;
            Ok(Box::new(store))
        }
        StoreKind::Etcd => Ok(Box::new(etcd::open(config)?)),
        StoreKind::Kubernetes => Ok(Box::new(kube::open(config)?)),
    }
}

/// The storage contract, mirroring `interface store` in wit/hereabouts.wit. See there for the
/// meaning of each call; the types are the ones generated from the WIT file.
pub trait Backend: Send {
    fn read_pool(&mut self, pool: &PoolRef) -> Result<PoolSnapshot, StoreError>;
    fn write_pool(
        &mut self,
        pool: &PoolRef,
        version: &str,
        edits: &[PoolEdit],
    ) -> Result<(), StoreError>;
    fn reserve_address(
        &mut self,
        network_name: &str,
        address: &str,
        owner: &Owner,
    ) -> Result<Option<Owner>, StoreError>;
    fn release_address(
        &mut self,
        network_name: &str,
        address: &str,
        owner: &Owner,
    ) -> Result<(), StoreError>;
    /// Waits before retry `attempt + 1` after a lost write; false gives up (CNI error 11).
    fn pause_before_retry(&mut self, attempt: u32) -> bool {
        RetryPolicy::default().pause(attempt)
    }
}

/// Bounded exponential backoff with full jitter, shared by every backend.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 100, base: Duration::from_millis(2), cap: Duration::from_millis(200) }
    }
}

impl RetryPolicy {
    /// Sleeps a random time in [0, min(cap, base·2^attempt)]; false once attempts are spent.
    pub fn pause(&self, attempt: u32) -> bool {
        if attempt + 1 >= self.max_attempts {
            return false;
        }
        let ceiling = self.base.saturating_mul(1u32 << attempt.min(16)).min(self.cap);
        let nanos = ceiling.as_nanos() as u64;
        if nanos > 0 {
            std::thread::sleep(Duration::from_nanos(jitter() % nanos));
        }
        true
    }
}

/// A cheap per-process random number for jitter: no crate, no syscall beyond the clock.
fn jitter() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// For commands that never touch a store (`plan`, `check`): any store call is a bug.
pub struct NoStore;

impl Backend for NoStore {
    fn read_pool(&mut self, _: &PoolRef) -> Result<PoolSnapshot, StoreError> {
        Err(StoreError::Failed("this command has no store".into()))
    }
    fn write_pool(&mut self, _: &PoolRef, _: &str, _: &[PoolEdit]) -> Result<(), StoreError> {
        Err(StoreError::Failed("this command has no store".into()))
    }
    fn reserve_address(
        &mut self,
        _: &str,
        _: &str,
        _: &Owner,
    ) -> Result<Option<Owner>, StoreError> {
        Err(StoreError::Failed("this command has no store".into()))
    }
    fn release_address(&mut self, _: &str, _: &str, _: &Owner) -> Result<(), StoreError> {
        Err(StoreError::Failed("this command has no store".into()))
    }
}
