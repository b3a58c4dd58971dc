//! The store contract's conformance suite: vectors/store-contract.json over any [`Backend`].
//!
//! Every store's tests call [`run`] with a way to open a fresh, empty store: the in-memory
//! store in both shapes (host-cni/host/tests), SQLite, etcd (real, where it runs) and
//! Kubernetes (the API-server emulation). The cases are data, shared with the core's and the
//! JavaScript store's runners, so the stores cannot drift apart. A failing step panics with
//! the case, the step and both answers.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::backend::Backend;
use crate::bindings::{
    CommitOutcome, Owner, PoolChange, PoolEdit, PoolRef, PoolView, Reown, Reservation,
    ReservationEdit, Slot,
};

/// The cases, read at compile time from the tree.
pub const VECTORS: &str = include_str!("../../../vectors/store-contract.json");

/// What a store keeps, where the contract lets stores differ.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Keeps the core's summaries (SQLite, etcd); else returns whole pools (Kubernetes).
    pub keeps_summaries: bool,
    /// Stores the owner's CNI network name; a store that cannot (Whereabouts' CRD schema has
    /// no field for it) reads it back as "", and the runner compares accordingly.
    pub keeps_cni_network: bool,
}

struct Case<'a> {
    pools: &'a Value,
    owners: &'a Value,
    shape: Shape,
    /// `$name` → (pool, version): versions are per pool.
    versions: BTreeMap<String, (String, String)>,
    context: String,
}

impl Case<'_> {
    fn pool(&self, name: &Value) -> PoolRef {
        let p = &self.pools[name.as_str().expect("pool name")];
        PoolRef {
            name: p["name"].as_str().expect("name").into(),
            range: p["range"].as_str().expect("range").into(),
            network_name: p["network-name"].as_str().expect("network-name").into(),
        }
    }

    fn owner(&self, name: &str) -> Owner {
        let o = &self.owners[name];
        let text =
            |k: &str| o[k].as_str().unwrap_or_else(|| panic!("owner {name}.{k}")).to_string();
        Owner {
            container_id: text("container-id"),
            ifname: text("ifname"),
            podref: text("podref"),
            cni_network: text("cni-network"),
        }
    }

    /// An owner as this store reads it back.
    fn stored(&self, mut owner: Owner) -> Owner {
        if !self.shape.keeps_cni_network {
            owner.cni_network.clear();
        }
        owner
    }

    fn slot(&self, text: &Value) -> Slot {
        let (owner, offset) = text.as_str().and_then(|t| t.split_once('@')).expect("owner@offset");
        Slot { offset: offset.into(), owner: self.owner(owner) }
    }

    fn stored_slot(&self, text: &Value) -> Slot {
        let slot = self.slot(text);
        Slot { owner: self.stored(slot.owner), ..slot }
    }

    fn version(&mut self, pool: &PoolRef, text: &Value, got: &str) {
        let text = text.as_str().expect("version");
        match text.strip_prefix('$') {
            None => assert_eq!(got, text, "{}: version", self.context),
            Some(name) => match self.versions.get(name) {
                Some((_, bound)) => assert_eq!(got, bound, "{}: version ${name}", self.context),
                None => {
                    assert!(
                        !self.versions.values().any(|(p, v)| *p == pool.name && v == got),
                        "{}: ${name} = {got:?} is a version of {} already seen under another name",
                        self.context,
                        pool.name
                    );
                    self.versions.insert(name.into(), (pool.name.clone(), got.into()));
                }
            },
        }
    }

    /// Binds `$name` to a version already bound to another name (or checks it, if bound).
    fn alias(&mut self, text: &Value, got: &str) {
        let text = text.as_str().expect("version");
        let name = text.strip_prefix('$').expect("a committed version is a $name");
        let pool = self.versions.values().find(|(_, v)| v == got).map(|(p, _)| p.clone());
        match self.versions.get(name) {
            Some((_, bound)) => assert_eq!(got, bound, "{}: version ${name}", self.context),
            None => {
                let pool = pool.unwrap_or_else(|| {
                    panic!("{}: unchanged version {got:?} was never seen", self.context)
                });
                self.versions.insert(name.into(), (pool, got.into()));
            }
        }
    }

    fn bound(&self, text: &Value) -> String {
        let text = text.as_str().expect("version");
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
            address: r["address"].as_str().expect("address").into(),
            owner: self.owner(r["owner"].as_str().expect("owner")),
        }
    }

    fn change(&self, pool: &PoolRef, c: &Value) -> PoolChange {
        let edits = c["edits"]
            .as_array()
            .expect("edits")
            .iter()
            .map(|e| match (e.get("claim"), e.get("free"), e.get("reown")) {
                (Some(s), _, _) => PoolEdit::Claim(self.slot(s)),
                // A free names the slot as read back from this store.
                (_, Some(s), _) => PoolEdit::Free(self.stored_slot(s)),
                (_, _, Some(r)) => PoolEdit::Reown(Reown {
                    slot: self.stored_slot(&r["slot"]),
                    to: self.owner(r["to"].as_str().expect("to")),
                }),
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
                        (_, Some(r)) => {
                            let mut r = self.reservation(pool, r);
                            r.owner = self.stored(r.owner);
                            ReservationEdit::Release(r)
                        }
                        _ => panic!("unknown reservation edit {e}"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        PoolChange {
            version: self.bound(&c["version"]),
            summary: c["summary"].as_str().expect("summary").into(),
            edits,
            reservations,
        }
    }

    fn expect_view(&mut self, pool: &PoolRef, query: &Owner, view: PoolView, expect: &Value) {
        self.version(pool, &expect["version"], &view.version);
        if self.shape.keeps_summaries {
            assert_eq!(
                view.summary.as_deref(),
                expect["summary"].as_str(),
                "{}: summary",
                self.context
            );
        } else {
            assert_eq!(
                view.summary, None,
                "{}: a store of whole pools keeps no summary",
                self.context
            );
        }
        let matching: Vec<Slot> = view
            .slots
            .into_iter()
            .filter(|s| {
                s.owner.same_attachment(query)
                    || (!query.podref.is_empty()
                        && s.owner.podref == query.podref
                        && s.owner.ifname == query.ifname)
            })
            .collect();
        let expected: Vec<Slot> = expect["slots"]
            .as_array()
            .expect("slots")
            .iter()
            .map(|s| self.stored_slot(s))
            .collect();
        assert_eq!(
            by_offset(matching),
            by_offset(expected),
            "{}: slots for the query",
            self.context
        );
    }
}

/// Stores may list slots in any order: compare them by offset.
fn by_offset(mut slots: Vec<Slot>) -> Vec<Slot> {
    slots.sort_by_key(|s| s.offset.parse::<u128>().unwrap_or(u128::MAX));
    slots
}

/// Runs every case, each on a store from `fresh` (which must be empty); returns the number of
/// steps run.
pub fn run(shape: Shape, fresh: &mut dyn FnMut() -> Box<dyn Backend>) -> usize {
    let vectors: Value = serde_json::from_str(VECTORS).expect("store-contract.json is JSON");
    let mut steps = 0;
    for case in vectors["cases"].as_array().expect("cases") {
        let mut store = fresh();
        let name = case["name"].as_str().expect("case name");
        let mut c = Case {
            pools: &vectors["pools"],
            owners: &vectors["owners"],
            shape,
            versions: BTreeMap::new(),
            context: String::new(),
        };
        for (i, step) in case["steps"].as_array().expect("steps").iter().enumerate() {
            c.context = format!("case {name:?}, step {i}");
            let context = c.context.clone();
            let expect = &step["expect"];
            let query = || c.owner(step["query"].as_str().expect("query"));
            if let Some(pool) = step.get("read-pool") {
                let (pool, query) = (c.pool(pool), query());
                let view =
                    store.read_pool(&pool, &query).unwrap_or_else(|e| panic!("{context}: {e:?}"));
                c.expect_view(&pool, &query, view, expect);
            } else if let Some(pool) = step.get("list-slots") {
                let pool = c.pool(pool);
                let listing =
                    store.list_slots(&pool).unwrap_or_else(|e| panic!("{context}: {e:?}"));
                c.version(&pool, &expect["version"], &listing.version);
                let expected: Vec<Slot> = expect["slots"]
                    .as_array()
                    .expect("slots")
                    .iter()
                    .map(|s| c.stored_slot(s))
                    .collect();
                assert_eq!(by_offset(listing.slots), by_offset(expected), "{context}");
            } else if let Some(network) = step.get("list-reservations") {
                let mut got = store
                    .list_reservations(network.as_str().expect("network"))
                    .unwrap_or_else(|e| panic!("{context}: {e:?}"));
                got.sort_by(|a, b| a.address.cmp(&b.address));
                let expected: Vec<(String, Owner)> = expect
                    .as_array()
                    .expect("reservations")
                    .iter()
                    .map(|r| {
                        let owner = c.owner(r["owner"].as_str().expect("owner"));
                        (r["address"].as_str().expect("address").into(), c.stored(owner))
                    })
                    .collect();
                let got: Vec<(String, Owner)> =
                    got.into_iter().map(|r| (r.address, r.owner)).collect();
                assert_eq!(got, expected, "{context}");
            } else if let Some(pool) = step.get("commit") {
                let (pool, query) = (c.pool(pool), query());
                let change = c.change(&pool, &step["change"]);
                let outcome = store
                    .commit(&pool, &query, &change)
                    .unwrap_or_else(|e| panic!("{context}: {e:?}"));
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
                    // Kubernetes writes no update that changes nothing: a commit of no pool
                    // edits to a store of whole pools may keep the version it was made at.
                    CommitOutcome::Committed(version)
                        if !shape.keeps_summaries
                            && change.edits.is_empty()
                            && version == change.version =>
                    {
                        c.alias(&expect["committed"], &version)
                    }
                    CommitOutcome::Committed(version) => {
                        c.version(&pool, &expect["committed"], &version)
                    }
                    CommitOutcome::Stale(view) => {
                        c.expect_view(&pool, &query, view, &expect["stale"])
                    }
                    CommitOutcome::Occupied(slot) => {
                        assert_eq!(slot, c.stored_slot(&expect["occupied"]), "{context}")
                    }
                    CommitOutcome::Reserved(r) => {
                        let want = &expect["reserved"];
                        assert_eq!(
                            r.address,
                            want["address"].as_str().expect("address"),
                            "{context}"
                        );
                        let holder = c.stored(c.owner(want["owner"].as_str().expect("owner")));
                        assert_eq!(r.owner, holder, "{context}");
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
