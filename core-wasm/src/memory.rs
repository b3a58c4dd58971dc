//! The in-memory [`Store`]: the contract's semantics with nothing else around them (versioned
//! pools, one atomic conditional commit, create-if-absent claims and reservations), for native
//! tests, property tests and benchmarks of the pure logic. It is the Rust reference of the
//! store contract: the host's conformance suite runs the same cases over it and every real
//! store (SQLite, etcd, Kubernetes).
//!
//! It can behave like either kind of store: one that keeps the core's summaries (SQLite, etcd:
//! reads return the query's slots only) or one that keeps whole pools (Kubernetes: reads return
//! every slot), so both code paths of the core are tested.

use std::collections::BTreeMap;

use crate::types::{
    CommitOutcome, Owner, PoolChange, PoolEdit, PoolListing, PoolRef, PoolView, Reservation,
    ReservationEdit, Slot, Store, StoreError,
};

/// One stored pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredPool {
    pub version: u64,
    pub range: String,
    /// The core's summary as last committed; `None` before the first commit that carried one
    /// (or always, for a store that keeps none).
    pub summary: Option<String>,
    /// Decimal offset → holder.
    pub slots: BTreeMap<String, Owner>,
}

#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    pub pools: BTreeMap<String, StoredPool>,
    /// (network name, address) → holder.
    pub reservations: BTreeMap<(String, String), Owner>,
    /// Keep summaries and answer reads with the query's slots only (SQLite and etcd do);
    /// false: whole pools, like Kubernetes' IPPool.
    pub keeps_summaries: bool,
    /// Refuse this many upcoming commits as stale after bumping the pool's version, as if
    /// another writer had committed in between.
    pub races_to_inject: u32,
    /// Make `pause-before-retry` answer false from this attempt on (a host deadline).
    pub deadline_at_attempt: Option<u32>,
    /// Calls made, by kind (for tests of the transaction shape).
    pub reads: u32,
    pub listings: u32,
    pub commits: u32,
    pub pauses: u32,
}

impl MemoryStore {
    /// A store that keeps summaries, like SQLite and etcd.
    pub fn new() -> Self {
        Self { keeps_summaries: true, ..Self::default() }
    }

    /// A store of whole pools, like Kubernetes' IPPool objects.
    pub fn whole_pools() -> Self {
        Self { keeps_summaries: false, ..Self::default() }
    }

    fn version_of(&self, pool: &PoolRef) -> String {
        self.pools.get(&pool.name).map(|p| p.version.to_string()).unwrap_or_default()
    }

    fn view(&self, pool: &PoolRef, query: &Owner) -> PoolView {
        let Some(stored) = self.pools.get(&pool.name) else { return PoolView::default() };
        let summary = stored.summary.clone().filter(|_| self.keeps_summaries);
        let slots = stored
            .slots
            .iter()
            .filter(|(_, o)| {
                summary.is_none() || o.same_attachment(query) || o.same_pod_interface(query)
            })
            .map(|(offset, owner)| Slot { offset: offset.clone(), owner: owner.clone() })
            .collect();
        PoolView { version: stored.version.to_string(), summary, slots }
    }
}

/// Whether a reservation held by `holder` may be taken by `owner` (see `reserve` in the WIT).
pub fn may_take_over(holder: &Owner, owner: &Owner) -> bool {
    holder.same_attachment(owner) || holder.same_pod_interface(owner)
}

impl Store for MemoryStore {
    fn read_pool(&mut self, pool: &PoolRef, query: &Owner) -> Result<PoolView, StoreError> {
        self.reads += 1;
        Ok(self.view(pool, query))
    }

    fn list_slots(&mut self, pool: &PoolRef) -> Result<PoolListing, StoreError> {
        self.listings += 1;
        let slots = self
            .pools
            .get(&pool.name)
            .map(|p| {
                p.slots
                    .iter()
                    .map(|(offset, owner)| Slot { offset: offset.clone(), owner: owner.clone() })
                    .collect()
            })
            .unwrap_or_default();
        Ok(PoolListing { version: self.version_of(pool), slots })
    }

    fn commit(
        &mut self,
        pool: &PoolRef,
        query: &Owner,
        change: &PoolChange,
    ) -> Result<CommitOutcome, StoreError> {
        self.commits += 1;
        if self.races_to_inject > 0 {
            self.races_to_inject -= 1;
            let stored = self.pools.entry(pool.name.clone()).or_default();
            stored.version += 1;
            stored.range = pool.range.clone();
            return Ok(CommitOutcome::Stale(self.view(pool, query)));
        }
        if self.version_of(pool) != change.version {
            return Ok(CommitOutcome::Stale(self.view(pool, query)));
        }
        let stored = self.pools.get(&pool.name);
        for edit in &change.edits {
            if let PoolEdit::Claim(slot) = edit
                && let Some(holder) = stored.and_then(|p| p.slots.get(&slot.offset))
            {
                let slot = Slot { offset: slot.offset.clone(), owner: holder.clone() };
                return Ok(CommitOutcome::Occupied(slot));
            }
        }
        for edit in &change.reservations {
            if let ReservationEdit::Reserve(r) = edit
                && let Some(holder) =
                    self.reservations.get(&(r.network_name.clone(), r.address.clone()))
                && !may_take_over(holder, &r.owner)
            {
                return Ok(CommitOutcome::Reserved(Reservation {
                    owner: holder.clone(),
                    ..r.clone()
                }));
            }
        }
        let keeps_summaries = self.keeps_summaries;
        let stored = self.pools.entry(pool.name.clone()).or_default();
        stored.version += 1;
        stored.range = pool.range.clone();
        if keeps_summaries {
            stored.summary = Some(change.summary.clone());
        }
        for edit in &change.edits {
            match edit {
                PoolEdit::Claim(slot) => {
                    stored.slots.insert(slot.offset.clone(), slot.owner.clone());
                }
                PoolEdit::Free(slot) => {
                    stored.slots.remove(&slot.offset);
                }
                PoolEdit::Reown { slot, to } => {
                    stored.slots.insert(slot.offset.clone(), to.clone());
                }
            }
        }
        let version = stored.version.to_string();
        for edit in &change.reservations {
            match edit {
                ReservationEdit::Reserve(r) => {
                    self.reservations
                        .insert((r.network_name.clone(), r.address.clone()), r.owner.clone());
                }
                ReservationEdit::Release(r) => {
                    let key = (r.network_name.clone(), r.address.clone());
                    if self.reservations.get(&key).is_some_and(|h| h.same_attachment(&r.owner)) {
                        self.reservations.remove(&key);
                    }
                }
            }
        }
        Ok(CommitOutcome::Committed(version))
    }

    fn list_reservations(&mut self, network_name: &str) -> Result<Vec<Reservation>, StoreError> {
        Ok(self
            .reservations
            .iter()
            .filter(|((network, _), _)| network == network_name)
            .map(|((network, address), owner)| Reservation {
                network_name: network.clone(),
                address: address.clone(),
                owner: owner.clone(),
            })
            .collect())
    }

    fn pause_before_retry(&mut self, attempt: u32, _ceiling_us: u32) -> bool {
        self.pauses += 1;
        self.deadline_at_attempt.is_none_or(|deadline| attempt < deadline)
    }
}
