//! vectors/store-contract.json over the in-memory store, in both of its shapes. The same file
//! runs over every real store in the host's conformance suite and over the JavaScript store.

use std::collections::BTreeMap;

use hereabouts_core::memory::MemoryStore;
use hereabouts_core::types::{
    CommitOutcome, Owner, PoolChange, PoolEdit, PoolRef, PoolView, Reservation, ReservationEdit,
    Slot, Store,
};
use serde_json::Value;

struct Case<'a> {
    pools: &'a Value,
    owners: &'a Value,
    /// `$name` → (pool, version): versions are per pool.
    versions: BTreeMap<String, (String, String)>,
}

impl Case<'_> {
    fn pool(&self, name: &Value) -> PoolRef {
        let p = &self.pools[name.as_str().unwrap()];
        PoolRef {
            name: p["name"].as_str().unwrap().into(),
            range: p["range"].as_str().unwrap().into(),
            network_name: p["network-name"].as_str().unwrap().into(),
        }
    }

    fn owner(&self, name: &str) -> Owner {
        let o = &self.owners[name];
        let text = |k: &str| o[k].as_str().unwrap().to_string();
        Owner {
            container_id: text("container-id"),
            ifname: text("ifname"),
            podref: text("podref"),
            cni_network: text("cni-network"),
        }
    }

    fn slot(&self, text: &Value) -> Slot {
        let (owner, offset) = text.as_str().unwrap().split_once('@').unwrap();
        Slot { offset: offset.into(), owner: self.owner(owner) }
    }

    /// `$x` binds on first sight; a literal is itself. Two names of one pool's versions must
    /// stand for different versions.
    fn version(&mut self, pool: &PoolRef, text: &Value, got: &str) {
        let text = text.as_str().unwrap();
        match text.strip_prefix('$') {
            None => assert_eq!(got, text, "version"),
            Some(name) => match self.versions.get(name) {
                Some((_, bound)) => assert_eq!(got, bound, "version ${name}"),
                None => {
                    assert!(
                        !self.versions.values().any(|(p, v)| *p == pool.name && v == got),
                        "${name} = {got:?} is a version of {} already seen under another name",
                        pool.name
                    );
                    self.versions.insert(name.into(), (pool.name.clone(), got.into()));
                }
            },
        }
    }

    fn bound(&self, text: &Value) -> String {
        let text = text.as_str().unwrap();
        match text.strip_prefix('$') {
            Some(name) => self.versions[name].1.clone(),
            None => text.into(),
        }
    }

    fn reservation(&self, pool: &PoolRef, r: &Value) -> Reservation {
        Reservation {
            network_name: r
                .get("network-name")
                .and_then(Value::as_str)
                .unwrap_or(&pool.network_name)
                .into(),
            address: r["address"].as_str().unwrap().into(),
            owner: self.owner(r["owner"].as_str().unwrap()),
        }
    }

    fn change(&self, pool: &PoolRef, c: &Value) -> PoolChange {
        let edits = c["edits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| match (e.get("claim"), e.get("free"), e.get("reown")) {
                (Some(s), _, _) => PoolEdit::Claim(self.slot(s)),
                (_, Some(s), _) => PoolEdit::Free(self.slot(s)),
                (_, _, Some(r)) => PoolEdit::Reown {
                    slot: self.slot(&r["slot"]),
                    to: self.owner(r["to"].as_str().unwrap()),
                },
                _ => panic!("unknown edit {e}"),
            })
            .collect();
        let reservations = c
            .get("reservations")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .map(|e| match (e.get("reserve"), e.get("release")) {
                        (Some(r), _) => ReservationEdit::Reserve(self.reservation(pool, r)),
                        (_, Some(r)) => ReservationEdit::Release(self.reservation(pool, r)),
                        _ => panic!("unknown reservation edit {e}"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        PoolChange {
            version: self.bound(&c["version"]),
            summary: c["summary"].as_str().unwrap().into(),
            edits,
            reservations,
        }
    }

    fn expect_view(
        &mut self,
        store: &MemoryStore,
        pool: &PoolRef,
        query: &Owner,
        view: PoolView,
        expect: &Value,
    ) {
        self.version(pool, &expect["version"], &view.version);
        if store.keeps_summaries {
            assert_eq!(view.summary.as_deref(), expect["summary"].as_str(), "summary");
        } else {
            assert_eq!(view.summary, None, "a store of whole pools keeps no summary");
        }
        let matching: Vec<Slot> = view
            .slots
            .into_iter()
            .filter(|s| s.owner.same_attachment(query) || s.owner.same_pod_interface(query))
            .collect();
        let expected: Vec<Slot> =
            expect["slots"].as_array().unwrap().iter().map(|s| self.slot(s)).collect();
        assert_eq!(by_offset(matching), by_offset(expected), "slots for the query");
    }
}

/// Stores may list slots in any order: compare them by offset.
fn by_offset(mut slots: Vec<Slot>) -> Vec<Slot> {
    slots.sort_by_key(|s| s.offset.parse::<u128>().unwrap_or(u128::MAX));
    slots
}

fn run(store: &mut MemoryStore, vectors: &Value) -> usize {
    let mut steps = 0;
    for case in vectors["cases"].as_array().unwrap() {
        *store =
            if store.keeps_summaries { MemoryStore::new() } else { MemoryStore::whole_pools() };
        let mut c = Case {
            pools: &vectors["pools"],
            owners: &vectors["owners"],
            versions: BTreeMap::new(),
        };
        let name = case["name"].as_str().unwrap();
        for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
            let context = format!("case {name:?}, step {i}");
            let expect = &step["expect"];
            let query = || c.owner(step["query"].as_str().unwrap());
            if let Some(pool) = step.get("read-pool") {
                let (pool, query) = (c.pool(pool), query());
                let view = store.read_pool(&pool, &query).expect(&context);
                c.expect_view(store, &pool, &query, view, expect);
            } else if let Some(pool) = step.get("list-slots") {
                let pool = c.pool(pool);
                let listing = store.list_slots(&pool).expect(&context);
                c.version(&pool, &expect["version"], &listing.version);
                let expected: Vec<Slot> =
                    expect["slots"].as_array().unwrap().iter().map(|s| c.slot(s)).collect();
                assert_eq!(by_offset(listing.slots), by_offset(expected), "{context}");
            } else if let Some(network) = step.get("list-reservations") {
                let mut got = store.list_reservations(network.as_str().unwrap()).expect(&context);
                got.sort_by(|a, b| a.address.cmp(&b.address));
                let expected: Vec<(String, Owner)> = expect
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| {
                        (
                            r["address"].as_str().unwrap().into(),
                            c.owner(r["owner"].as_str().unwrap()),
                        )
                    })
                    .collect();
                let got: Vec<(String, Owner)> =
                    got.into_iter().map(|r| (r.address, r.owner)).collect();
                assert_eq!(got, expected, "{context}");
            } else if let Some(pool) = step.get("commit") {
                let (pool, query) = (c.pool(pool), query());
                let change = c.change(&pool, &step["change"]);
                let outcome = store.commit(&pool, &query, &change).expect(&context);
                let kind = match &outcome {
                    CommitOutcome::Committed(_) => "committed",
                    CommitOutcome::Stale(_) => "stale",
                    CommitOutcome::Occupied(_) => "occupied",
                    CommitOutcome::Reserved(_) => "reserved",
                };
                assert!(
                    expect.get(kind).is_some(),
                    "{context}: expected {expect}, got {outcome:?}"
                );
                match outcome {
                    CommitOutcome::Committed(version) => {
                        c.version(&pool, &expect["committed"], &version)
                    }
                    CommitOutcome::Stale(view) => {
                        c.expect_view(store, &pool, &query, view, &expect["stale"])
                    }
                    CommitOutcome::Occupied(slot) => {
                        assert_eq!(slot, c.slot(&expect["occupied"]), "{context}")
                    }
                    CommitOutcome::Reserved(r) => {
                        let want = &expect["reserved"];
                        assert_eq!(r.address, want["address"].as_str().unwrap(), "{context}");
                        assert_eq!(r.owner, c.owner(want["owner"].as_str().unwrap()), "{context}");
                    }
                }
            } else {
                panic!("{context}: unknown step {step}");
            }
            steps += 1;
        }
    }
    steps
}

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../vectors/store-contract.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn the_memory_store_keeping_summaries_meets_the_contract() {
    let steps = run(&mut MemoryStore::new(), &vectors());
    assert!(steps > 50, "only {steps} steps ran");
}

#[test]
fn the_memory_store_of_whole_pools_meets_the_contract() {
    let steps = run(&mut MemoryStore::whole_pools(), &vectors());
    assert!(steps > 50, "only {steps} steps ran");
}
