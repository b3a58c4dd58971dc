//! A model of N clients allocating from one pool at the same time (issue 23), each on its own
//! thread through the real allocator, against the in-memory store behind a scheduler that makes
//! them collide as badly as a store can: every commit waits until every live client has one
//! ready, then the round's commits are applied in an order the test draws. All of a round decided
//! on the same version, so exactly one wins and the rest get `stale` with the same fresh view.
//!
//! What the retry policy must keep under that: no address twice, the allocated set lowest-packed
//! once the burst is over (the pre-existing holes filled first, then the lowest addresses, no
//! gaps), and bounded attempts — with N ≤ `IMMEDIATE_RETRIES` no client pauses and the k-th
//! winner commits at its k-th attempt; beyond that, every client still commits within N.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Condvar, Mutex};

use hereabouts_core::allocator::{IMMEDIATE_RETRIES, allocate, list_leases, release};
use hereabouts_core::memory::MemoryStore;
use hereabouts_core::types::{
    AllocateRequest, CommitOutcome, NetworkConfig, Owner, PoolChange, PoolListing, PoolRef,
    PoolView, RangeConfig, Reservation, Store, StoreError,
};
use proptest::prelude::*;

/// The shared pool and the round being gathered.
struct Model {
    store: MemoryStore,
    /// Clients still allocating.
    live: usize,
    /// Commits waiting for the round to fill: client → (pool, query, change).
    pending: BTreeMap<usize, (PoolRef, Owner, PoolChange)>,
    /// Answers of the last resolved round, taken by their clients.
    answers: BTreeMap<usize, CommitOutcome>,
    /// Draws the order of each round (a simple LCG seeded by the test).
    seed: u64,
}

impl Model {
    /// Applies the round in a drawn order once every live client has a commit in it.
    fn resolve_if_full(&mut self) {
        if self.pending.is_empty() || self.pending.len() < self.live {
            return;
        }
        let mut round: Vec<_> = std::mem::take(&mut self.pending).into_iter().collect();
        // Fisher–Yates with the LCG.
        for i in (1..round.len()).rev() {
            self.seed =
                self.seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            round.swap(i, (self.seed >> 33) as usize % (i + 1));
        }
        for (client, (pool, query, change)) in round {
            let answer = self.store.commit(&pool, &query, &change).expect("memory store");
            self.answers.insert(client, answer);
        }
    }
}

/// One client's view of the shared store; counts its own commits and pauses.
struct Client {
    id: usize,
    shared: Arc<(Mutex<Model>, Condvar)>,
    commits: u32,
    pauses: u32,
}

impl Store for Client {
    fn read_pool(&mut self, pool: &PoolRef, query: &Owner) -> Result<PoolView, StoreError> {
        self.shared.0.lock().unwrap().store.read_pool(pool, query)
    }
    fn list_slots(&mut self, pool: &PoolRef) -> Result<PoolListing, StoreError> {
        self.shared.0.lock().unwrap().store.list_slots(pool)
    }
    fn commit(
        &mut self,
        pool: &PoolRef,
        query: &Owner,
        change: &PoolChange,
    ) -> Result<CommitOutcome, StoreError> {
        self.commits += 1;
        let (lock, ready) = &*self.shared;
        let mut model = lock.lock().unwrap();
        model.pending.insert(self.id, (pool.clone(), query.clone(), change.clone()));
        model.resolve_if_full();
        ready.notify_all();
        loop {
            if let Some(answer) = model.answers.remove(&self.id) {
                return Ok(answer);
            }
            model = ready.wait(model).unwrap();
        }
    }
    fn list_reservations(&mut self, network_name: &str) -> Result<Vec<Reservation>, StoreError> {
        self.shared.0.lock().unwrap().store.list_reservations(network_name)
    }
    fn pause_before_retry(&mut self, _attempt: u32, _ceiling_us: u32) -> bool {
        self.pauses += 1;
        true
    }
}

fn network() -> NetworkConfig {
    NetworkConfig {
        range: Some(RangeConfig { range: "10.9.0.0/24".into(), ..Default::default() }),
        enable_overlapping_ranges: true,
        ..Default::default()
    }
}

fn owner(name: &str) -> Owner {
    Owner::new(name, "eth0", &format!("ns/{name}")).in_cni_network("blue")
}

/// What each client saw: its address, commits attempted, pauses.
struct Outcome {
    address: String,
    commits: u32,
    pauses: u32,
}

/// `before` addresses allocated, then `holes` of them freed, then `clients` concurrent ADDs.
fn burst(
    clients: usize,
    before: usize,
    holes: &[usize],
    seed: u64,
    summaries: bool,
) -> Vec<Outcome> {
    let network = network();
    let mut store = if summaries { MemoryStore::new() } else { MemoryStore::whole_pools() };
    for i in 0..before {
        let request = AllocateRequest { owner: owner(&format!("old-{i}")), ..Default::default() };
        allocate(&mut store, &network, &request).unwrap();
    }
    for &i in holes {
        release(&mut store, &network, &owner(&format!("old-{i}"))).unwrap();
    }
    let model =
        Model { store, live: clients, pending: BTreeMap::new(), answers: BTreeMap::new(), seed };
    let shared = Arc::new((Mutex::new(model), Condvar::new()));
    let threads: Vec<_> = (0..clients)
        .map(|id| {
            let shared = shared.clone();
            let network = network.clone();
            std::thread::spawn(move || {
                let mut client = Client { id, shared, commits: 0, pauses: 0 };
                let request =
                    AllocateRequest { owner: owner(&format!("new-{id}")), ..Default::default() };
                let leases = allocate(&mut client, &network, &request);
                let (lock, ready) = &*client.shared;
                let mut model = lock.lock().unwrap();
                model.live -= 1;
                model.resolve_if_full();
                ready.notify_all();
                drop(model);
                let address = leases.expect("every client allocates").remove(0).address;
                Outcome { address, commits: client.commits, pauses: client.pauses }
            })
        })
        .collect();
    let outcomes: Vec<Outcome> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    // The store agrees with what the clients were told.
    let mut model = shared.0.lock().unwrap();
    let held = list_leases(&mut model.store, &network).unwrap();
    assert_eq!(held.len(), before - holes.len() + clients);
    outcomes
}

/// The lowest `n` free addresses of 10.9.0.0/24 after `before` allocations and `holes` freed.
fn lowest_free(n: usize, before: usize, holes: &[usize]) -> BTreeSet<String> {
    let taken: BTreeSet<usize> =
        (0..before).filter(|i| !holes.contains(i)).map(|i| i + 1).collect();
    (1..255).filter(|a| !taken.contains(a)).take(n).map(|a| format!("10.9.0.{a}")).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn concurrent_clients_get_distinct_lowest_addresses_in_bounded_attempts(
        clients in 2usize..=IMMEDIATE_RETRIES as usize + 6,
        before in 0usize..12,
        holes in prop::collection::btree_set(0usize..12, 0..4),
        seed in any::<u64>(),
        summaries in any::<bool>(),
    ) {
        let holes: Vec<usize> = holes.into_iter().filter(|&h| h < before).collect();
        let outcomes = burst(clients, before, &holes, seed, summaries);
        let got: BTreeSet<String> = outcomes.iter().map(|o| o.address.clone()).collect();
        prop_assert_eq!(got.len(), clients, "an address was handed out twice");
        prop_assert_eq!(got, lowest_free(clients, before, &holes), "not lowest-packed");
        // One winner per round: the k-th winner commits at its k-th attempt, never later.
        let mut attempts: Vec<u32> = outcomes.iter().map(|o| o.commits).collect();
        attempts.sort();
        prop_assert_eq!(attempts, (1..=clients as u32).collect::<Vec<_>>());
        for o in &outcomes {
            // No pause until IMMEDIATE_RETRIES losses in a row; then one per further loss.
            prop_assert_eq!(o.pauses, (o.commits - 1).saturating_sub(IMMEDIATE_RETRIES));
        }
    }
}

#[test]
fn sixteen_clients_in_one_burst_never_pause() {
    let outcomes = burst(16, 0, &[], 7, true);
    assert!(outcomes.iter().all(|o| o.pauses == 0));
    assert_eq!(outcomes.iter().map(|o| o.commits).max(), Some(16));
    // The mean attempt of a burst of 16: (1 + … + 16) / 16.
    let total: u32 = outcomes.iter().map(|o| o.commits).sum();
    assert_eq!(total, 136);
}
