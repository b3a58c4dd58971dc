//! The host side of the WIT `store` interface.
//!
//! A [`Backend`] is what a real store implements — the embedded local store, etcd, Kubernetes
//! CRDs (crate `hereabouts-stores`), or [`crate::memory::MemoryStore`] in tests. The runtime
//! hands the component exactly one backend; the component runs the read → decide →
//! conditional-write loop, the backend only has to make each write atomic and conditional on
//! the version it returned from the read.

use crate::bindings::{Owner, PoolEdit, PoolRef, PoolSnapshot, StoreError};
use crate::retry::RetryPolicy;

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
