//! The host side of the WIT `store` interface.
//!
//! A [`Backend`] is what a real store implements — SQLite (the embedded default), etcd,
//! Kubernetes CRDs (crate `hereabouts-stores`), or [`crate::memory::Memory`] in tests. The
//! runtime hands the component exactly one backend. The component decides everything (which
//! address, which edits, when to retry); a backend only keeps data: it answers reads and
//! applies each commit atomically if the pool is still at the version read. The guarantees of
//! each store are written in wit/hereabouts.wit; vectors/store-contract.json states them as
//! cases every backend passes (host-cni/tests/store_contract.rs).

use crate::bindings::{
    CommitOutcome, Owner, PoolChange, PoolListing, PoolRef, PoolView, Reservation, StoreError,
};
use crate::retry::jittered_wait;

/// The storage contract, mirroring `interface store` in wit/hereabouts.wit. See there for the
/// meaning of each call; the types are the ones generated from the WIT file.
pub trait Backend: Send {
    /// What an ADD, DEL or CHECK of `query` needs: the version, the summary, and the query's
    /// slots (or every slot, for a store that keeps no summary).
    fn read_pool(&mut self, pool: &PoolRef, query: &Owner) -> Result<PoolView, StoreError>;
    /// Every slot of the pool.
    fn list_slots(&mut self, pool: &PoolRef) -> Result<PoolListing, StoreError>;
    /// Applies `change` atomically if the pool is still at `change.version`.
    fn commit(
        &mut self,
        pool: &PoolRef,
        query: &Owner,
        change: &PoolChange,
    ) -> Result<CommitOutcome, StoreError>;
    /// Every reservation of a network.
    fn list_reservations(&mut self, network_name: &str) -> Result<Vec<Reservation>, StoreError>;
    /// Waits a random time in [0, `ceiling_us`] µs before the core's next attempt; false when
    /// this call's own deadline has passed. The budget and the curve are the core's.
    fn pause_before_retry(&mut self, _attempt: u32, ceiling_us: u32) -> bool {
        jittered_wait(ceiling_us);
        true
    }
}

/// For commands that never touch a store (`plan`, `check`): any store call is a bug.
pub struct NoStore;

fn no_store<T>() -> Result<T, StoreError> {
    Err(StoreError::Failed("this command has no store".into()))
}

impl Backend for NoStore {
    fn read_pool(&mut self, _: &PoolRef, _: &Owner) -> Result<PoolView, StoreError> {
        no_store()
    }
    fn list_slots(&mut self, _: &PoolRef) -> Result<PoolListing, StoreError> {
        no_store()
    }
    fn commit(
        &mut self,
        _: &PoolRef,
        _: &Owner,
        _: &PoolChange,
    ) -> Result<CommitOutcome, StoreError> {
        no_store()
    }
    fn list_reservations(&mut self, _: &str) -> Result<Vec<Reservation>, StoreError> {
        no_store()
    }
}
