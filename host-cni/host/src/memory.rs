//! The in-process store, for tests of the component through the real storage import.
//!
//! There is one in-memory store in Rust: the core's ([`hereabouts_core::memory::MemoryStore`],
//! the contract's reference, which vectors/store-contract.json runs over in both of its
//! shapes). This module only puts it behind the [`Backend`] trait, converting between the
//! host's generated types and the core's plain ones, field for field. It is built only with
//! the `testing` feature (tests and benchmarks), so the plugin never links the core natively:
//! every decision a user relies on is the component's.

use std::sync::{Arc, Mutex, MutexGuard};

use hereabouts_core::memory::MemoryStore;
use hereabouts_core::types as core;
use hereabouts_core::types::Store as _;

use crate::backend::Backend;
use crate::bindings::{
    CommitOutcome, Owner, PoolChange, PoolEdit, PoolListing, PoolRef, PoolView, Reown, Reservation,
    ReservationEdit, Slot, StoreError,
};

/// Cloning shares the state, so several allocators can race on one store.
#[derive(Clone)]
pub struct Memory {
    inner: Arc<Mutex<MemoryStore>>,
}

impl Default for Memory {
    fn default() -> Self {
        Self::new()
    }
}

impl Memory {
    /// A store that keeps summaries, as SQLite and etcd do.
    pub fn new() -> Self {
        Self { inner: Arc::new(Mutex::new(MemoryStore::new())) }
    }

    /// A store of whole pools, as Kubernetes' IPPool objects are.
    pub fn whole_pools() -> Self {
        Self { inner: Arc::new(Mutex::new(MemoryStore::whole_pools())) }
    }

    /// The store's state, to inspect or to inject faults (`races_to_inject`, …).
    pub fn state(&self) -> MutexGuard<'_, MemoryStore> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The allocations of a pool by name: offset → owner.
    pub fn pool(&self, name: &str) -> Vec<(String, Owner)> {
        let state = self.state();
        let Some(pool) = state.pools.get(name) else { return Vec::new() };
        pool.slots.iter().map(|(offset, owner)| (offset.clone(), owner.clone().into())).collect()
    }

    /// All reservations as (network, address, holder).
    pub fn reservations(&self) -> Vec<(String, String, Owner)> {
        let state = self.state();
        state
            .reservations
            .iter()
            .map(|((network, address), owner)| {
                (network.clone(), address.clone(), owner.clone().into())
            })
            .collect()
    }
}

impl From<core::Owner> for Owner {
    fn from(o: core::Owner) -> Self {
        Self {
            container_id: o.container_id,
            ifname: o.ifname,
            podref: o.podref,
            cni_network: o.cni_network,
        }
    }
}

impl From<&Owner> for core::Owner {
    fn from(o: &Owner) -> Self {
        Self {
            container_id: o.container_id.clone(),
            ifname: o.ifname.clone(),
            podref: o.podref.clone(),
            cni_network: o.cni_network.clone(),
        }
    }
}

impl From<core::Slot> for Slot {
    fn from(s: core::Slot) -> Self {
        Self { offset: s.offset, owner: s.owner.into() }
    }
}

impl From<&Slot> for core::Slot {
    fn from(s: &Slot) -> Self {
        Self { offset: s.offset.clone(), owner: (&s.owner).into() }
    }
}

impl From<core::Reservation> for Reservation {
    fn from(r: core::Reservation) -> Self {
        Self { network_name: r.network_name, address: r.address, owner: r.owner.into() }
    }
}

impl From<&Reservation> for core::Reservation {
    fn from(r: &Reservation) -> Self {
        Self {
            network_name: r.network_name.clone(),
            address: r.address.clone(),
            owner: (&r.owner).into(),
        }
    }
}

impl From<core::PoolView> for PoolView {
    fn from(v: core::PoolView) -> Self {
        Self {
            version: v.version,
            summary: v.summary,
            slots: v.slots.into_iter().map(Into::into).collect(),
        }
    }
}

fn pool_ref(p: &PoolRef) -> core::PoolRef {
    core::PoolRef {
        name: p.name.clone(),
        range: p.range.clone(),
        network_name: p.network_name.clone(),
    }
}

fn change(c: &PoolChange) -> core::PoolChange {
    core::PoolChange {
        version: c.version.clone(),
        summary: c.summary.clone(),
        edits: c
            .edits
            .iter()
            .map(|e| match e {
                PoolEdit::Claim(slot) => core::PoolEdit::Claim(slot.into()),
                PoolEdit::Free(slot) => core::PoolEdit::Free(slot.into()),
                PoolEdit::Reown(Reown { slot, to }) => {
                    core::PoolEdit::Reown { slot: slot.into(), to: to.into() }
                }
            })
            .collect(),
        reservations: c
            .reservations
            .iter()
            .map(|e| match e {
                ReservationEdit::Reserve(r) => core::ReservationEdit::Reserve(r.into()),
                ReservationEdit::Release(r) => core::ReservationEdit::Release(r.into()),
            })
            .collect(),
    }
}

fn store_error(e: core::StoreError) -> StoreError {
    match e {
        core::StoreError::Unavailable(m) => StoreError::Unavailable(m),
        core::StoreError::Corrupt(m) => StoreError::Corrupt(m),
        core::StoreError::Failed(m) => StoreError::Failed(m),
    }
}

impl Backend for Memory {
    fn read_pool(&mut self, pool: &PoolRef, query: &Owner) -> Result<PoolView, StoreError> {
        self.state().read_pool(&pool_ref(pool), &query.into()).map(Into::into).map_err(store_error)
    }

    fn list_slots(&mut self, pool: &PoolRef) -> Result<PoolListing, StoreError> {
        let listing = self.state().list_slots(&pool_ref(pool)).map_err(store_error)?;
        Ok(PoolListing {
            version: listing.version,
            slots: listing.slots.into_iter().map(Into::into).collect(),
        })
    }

    fn commit(
        &mut self,
        pool: &PoolRef,
        query: &Owner,
        change_: &PoolChange,
    ) -> Result<CommitOutcome, StoreError> {
        let outcome = self
            .state()
            .commit(&pool_ref(pool), &query.into(), &change(change_))
            .map_err(store_error)?;
        Ok(match outcome {
            core::CommitOutcome::Committed(version) => CommitOutcome::Committed(version),
            core::CommitOutcome::Stale(view) => CommitOutcome::Stale(view.into()),
            core::CommitOutcome::Occupied(slot) => CommitOutcome::Occupied(slot.into()),
            core::CommitOutcome::Reserved(r) => CommitOutcome::Reserved(r.into()),
        })
    }

    fn list_reservations(&mut self, network_name: &str) -> Result<Vec<Reservation>, StoreError> {
        let list = self.state().list_reservations(network_name).map_err(store_error)?;
        Ok(list.into_iter().map(Into::into).collect())
    }

    /// In process, the writer that won is a thread of this process and has already finished:
    /// no wait, but the state's hook for host deadlines is honoured.
    fn pause_before_retry(&mut self, attempt: u32, ceiling_us: u32) -> bool {
        self.state().pause_before_retry(attempt, ceiling_us)
    }
}
