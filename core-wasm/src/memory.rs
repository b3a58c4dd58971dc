//! An in-memory [`Store`] with the same semantics every real store must have (versioned
//! pools, conditional writes, create-if-absent reservations), for native tests, property
//! tests and benchmarks of the pure logic.

use std::collections::BTreeMap;

use crate::types::{Owner, PoolEdit, PoolRef, PoolSnapshot, Slot, Store, StoreError};

#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    pub pools: BTreeMap<String, (u64, BTreeMap<String, Owner>)>,
    pub reservations: BTreeMap<(String, String), Owner>,
    /// Fail this many upcoming pool writes with a conflict (a simulated racing writer).
    pub conflicts_to_inject: u32,
    /// Retries the store allows before giving up.
    pub max_attempts: u32,
    /// How many store calls were made, by kind (for tests of the transaction shape).
    pub reserve_calls: u32,
    pub release_calls: u32,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self { max_attempts: 100, ..Self::default() }
    }
}

impl Store for MemoryStore {
    fn read_pool(&mut self, pool: &PoolRef) -> Result<PoolSnapshot, StoreError> {
        Ok(match self.pools.get(&pool.name) {
            None => PoolSnapshot::default(),
            Some((version, slots)) => PoolSnapshot {
                version: version.to_string(),
                slots: slots
                    .iter()
                    .map(|(offset, owner)| Slot { offset: offset.clone(), owner: owner.clone() })
                    .collect(),
            },
        })
    }

    fn write_pool(
        &mut self,
        pool: &PoolRef,
        version: &str,
        edits: &[PoolEdit],
    ) -> Result<(), StoreError> {
        if self.conflicts_to_inject > 0 {
            self.conflicts_to_inject -= 1;
            return Err(StoreError::Conflict);
        }
        let current = self.pools.get(&pool.name).map(|(v, _)| v.to_string()).unwrap_or_default();
        if current != version {
            return Err(StoreError::Conflict);
        }
        let entry = self.pools.entry(pool.name.clone()).or_default();
        entry.0 += 1;
        for edit in edits {
            match edit {
                PoolEdit::Claim(slot) => {
                    entry.1.insert(slot.offset.clone(), slot.owner.clone());
                }
                PoolEdit::Free(offset) => {
                    entry.1.remove(offset);
                }
            }
        }
        Ok(())
    }

    fn reserve_address(
        &mut self,
        network_name: &str,
        address: &str,
        owner: &Owner,
    ) -> Result<Option<Owner>, StoreError> {
        self.reserve_calls += 1;
        let key = (network_name.to_string(), address.to_string());
        match self.reservations.get(&key) {
            Some(holder) if !holder.same_attachment(owner) => Ok(Some(holder.clone())),
            _ => {
                self.reservations.insert(key, owner.clone());
                Ok(None)
            }
        }
    }

    fn release_address(
        &mut self,
        network_name: &str,
        address: &str,
        owner: &Owner,
    ) -> Result<(), StoreError> {
        self.release_calls += 1;
        let key = (network_name.to_string(), address.to_string());
        if self.reservations.get(&key).is_some_and(|holder| holder.same_attachment(owner)) {
            self.reservations.remove(&key);
        }
        Ok(())
    }

    fn pause_before_retry(&mut self, attempt: u32) -> bool {
        attempt + 1 < self.max_attempts
    }
}
