//! DEL always lets the pod go. A runtime retries a failed DEL for ever (the pod stays
//! Terminating), so once the network config is JSON for this plugin, DEL succeeds: it frees
//! what the container holds where the store can be found, else nothing, and logs why.
//!
//! - A config the core refuses because it can hand out nothing (a `/32`, every address
//!   excluded, no range) still names its pools: the core reads it with an `allocation-error`,
//!   so DEL frees there (the NAD may have been edited after the ADD).
//! - Any other refusal (a range that does not parse, a bad key), or a store that cannot be
//!   reached: DEL logs the error and what may be left behind, and succeeds, as Whereabouts'
//!   DEL does. The address stays allocated until `hereabouts reconcile` (or the runtime's GC,
//!   or the pod's next sandbox, which takes it back) frees it; `hereabouts status` shows it.
//!   docs/semantics.md says why this beats failing for a retry.
//! - A call from Kubernetes whose config chooses no store (see [`NetConf::require_chosen_store`]):
//!   ADD refuses it, so the pod holds nothing — unless an older Hereabouts served it from the
//!   node's embedded store, which DEL frees if that store exists (it is never created here).

use hereabouts_host::config::StoreKind;
use hereabouts_host::error::{CniError, Code};
use hereabouts_stores::sqlite::{DATABASE_FILE, SqliteStore};

use super::env::CniEnv;
use super::netconf::NetConf;
use super::slices::Claiming;
use super::{Session, log};

/// Whether a `NetConf::parse` error is one DEL logs and succeeds on: a config that is JSON
/// but not one we can use (7) or a flat file we cannot read (5). Stdin that is not JSON (6)
/// and an unsupported `cniVersion` (1) are the runtime's mistakes, and still fail.
pub fn forgives(error: &CniError) -> bool {
    matches!(error.code, Code::InvalidConfig | Code::Io)
}

/// DEL when the network config itself cannot be read: nothing can be found to free.
pub fn unreadable_config(env: &CniEnv, error: &CniError) {
    log::init_for(&Default::default(), false);
    tracing::warn!(container = %env.container_id, ifname = %env.ifname, code = error.code.number(),
        "DEL: the network config cannot be used ({}); nothing freed, DEL succeeds", error.msg);
}

/// DEL: frees what the container holds; every failure is logged, never returned.
pub fn run(env: &CniEnv, conf: &NetConf) {
    if let Err(error) = release(env, conf) {
        tracing::warn!(container = %env.container_id, ifname = %env.ifname, network = %conf.name,
            code = error.code.number(),
            "DEL: {}; nothing freed, DEL succeeds: an address the container held stays allocated \
             until `hereabouts reconcile` frees it (`hereabouts status` lists it)", error.msg);
    }
}

fn release(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let mut session = Session::read(conf)?;
    if conf.require_chosen_store(&env.args).is_err() {
        let dir = conf.ipam.data_dir();
        if !dir.join(DATABASE_FILE).exists() {
            tracing::info!(container = %env.container_id, network = %conf.name,
                "DEL: the config chooses no store (ADD refuses it), and this node has no \
                 embedded store at {}: nothing to free", dir.display());
            return Ok(());
        }
        debug_assert_eq!(conf.ipam.store_kind().ok(), Some(StoreKind::Local));
        tracing::info!(container = %env.container_id, network = %conf.name,
            "DEL: the config chooses no store; freeing in the node's embedded store at {}, \
             where an older Hereabouts allocated", dir.display());
        session.allocator.set_backend(Box::new(SqliteStore::open_existing(&dir)?));
        return session.del(env);
    }
    session.on_store(conf, Claiming::FindOnly)?.del(env)
}
