//! The in-process reference backend: for tests of the component through the real storage
//! import, and for simulations. Same semantics as every other backend: versioned pools,
//! conditional writes, create-if-absent reservations.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::backend::Backend;
use crate::bindings::{Owner, PoolEdit, PoolRef, PoolSnapshot, Slot, StoreError};
use crate::retry::RetryPolicy;

#[derive(Default)]
struct State {
    /// pool name → (version counter, offset → owner)
    pools: BTreeMap<String, (u64, BTreeMap<String, Owner>)>,
    /// (network name, address) → holder
    reservations: BTreeMap<(String, String), Owner>,
}

/// Cloning shares the state, so several allocators can race on one "store".
#[derive(Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    /// Test hook: fail this many upcoming writes with a conflict.
    forced_conflicts: Arc<Mutex<u32>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next `n` `write_pool` calls lose as if another writer got there first.
    pub fn force_conflicts(&self, n: u32) {
        *self.forced_conflicts.lock().unwrap() = n;
    }

    /// The allocations of a pool by name: offset → owner.
    pub fn pool(&self, name: &str) -> BTreeMap<String, Owner> {
        self.state
            .lock()
            .unwrap()
            .pools
            .get(name)
            .map(|(_, slots)| slots.clone())
            .unwrap_or_default()
    }

    /// All reservations: (network, address) → holder.
    pub fn reservations(&self) -> BTreeMap<(String, String), Owner> {
        self.state.lock().unwrap().reservations.clone()
    }
}

impl Backend for MemoryStore {
    fn read_pool(&mut self, pool: &PoolRef) -> Result<PoolSnapshot, StoreError> {
        let state = self.state.lock().unwrap();
        Ok(match state.pools.get(&pool.name) {
            None => PoolSnapshot { version: String::new(), slots: Vec::new() },
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
        {
            let mut forced = self.forced_conflicts.lock().unwrap();
            if *forced > 0 {
                *forced -= 1;
                return Err(StoreError::Conflict);
            }
        }
        let mut state = self.state.lock().unwrap();
        let current = state.pools.get(&pool.name).map(|(v, _)| v.to_string()).unwrap_or_default();
        if current != version {
            return Err(StoreError::Conflict);
        }
        let entry = state.pools.entry(pool.name.clone()).or_default();
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
        let mut state = self.state.lock().unwrap();
        let key = (network_name.to_string(), address.to_string());
        match state.reservations.get(&key) {
            Some(holder)
                if !(holder.container_id == owner.container_id
                    && holder.ifname == owner.ifname) =>
            {
                Ok(Some(holder.clone()))
            }
            _ => {
                state.reservations.insert(key, owner.clone());
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
        let mut state = self.state.lock().unwrap();
        let key = (network_name.to_string(), address.to_string());
        if let Some(holder) = state.reservations.get(&key)
            && holder.container_id == owner.container_id
            && holder.ifname == owner.ifname
        {
            state.reservations.remove(&key);
        }
        Ok(())
    }

    fn pause_before_retry(&mut self, attempt: u32) -> bool {
        RetryPolicy::without_waiting().pause(attempt)
    }
}
