//! Allocation semantics through the store contract, over the in-memory store in both of its
//! shapes: one that keeps the core's summaries (as SQLite and etcd do) and one of whole pools
//! (as Kubernetes' IPPool is). Every behaviour test runs on both.

use hereabouts_core::allocator::{
    IMMEDIATE_RETRIES, MAX_EDITS_PER_COMMIT, allocate, collect_garbage, leases_of, list_leases,
    release,
};
use hereabouts_core::memory::MemoryStore;
use hereabouts_core::types::{
    AllocateRequest, IpamError, NetworkConfig, Owner, RangeConfig, StoreError,
};

fn net(range: &str, exclude: &[&str]) -> NetworkConfig {
    NetworkConfig {
        range: Some(RangeConfig {
            range: range.into(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        enable_overlapping_ranges: true,
        sticky: true,
        ..Default::default()
    }
}

fn owner(i: usize) -> Owner {
    Owner::new(&format!("ctr-{i}"), "eth0", &format!("ns/pod-{i}")).in_cni_network("blue")
}

fn add(
    store: &mut MemoryStore,
    network: &NetworkConfig,
    i: usize,
) -> Result<Vec<String>, IpamError> {
    let request = AllocateRequest { owner: owner(i), ..Default::default() };
    allocate(store, network, &request).map(|l| l.into_iter().map(|l| l.address).collect())
}

/// Both shapes of store: summaries kept (SQLite, etcd) and whole pools (Kubernetes).
fn stores() -> [MemoryStore; 2] {
    [MemoryStore::new(), MemoryStore::whole_pools()]
}

#[test]
fn hands_out_lowest_free_and_reuses_the_lowest_released() {
    for mut store in stores() {
        let network = net("10.0.0.0/29", &["10.0.0.2"]);
        let got: Vec<String> =
            (0..5).map(|i| add(&mut store, &network, i).unwrap()[0].clone()).collect();
        assert_eq!(got, ["10.0.0.1", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
        match add(&mut store, &network, 5) {
            Err(IpamError::Exhausted(message)) => {
                assert!(message.contains("10.0.0.0/29"), "{message}")
            }
            other => panic!("expected exhaustion, got {other:?}"),
        }
        let freed = release(&mut store, &network, &owner(2)).unwrap();
        assert_eq!(freed[0].address, "10.0.0.4");
        assert_eq!(add(&mut store, &network, 9).unwrap(), ["10.0.0.4"]);
    }
}

#[test]
fn add_is_idempotent_and_del_of_unknown_succeeds() {
    for mut store in stores() {
        let network = net("10.0.0.0/24", &[]);
        assert_eq!(add(&mut store, &network, 1).unwrap(), ["10.0.0.1"]);
        assert_eq!(add(&mut store, &network, 1).unwrap(), ["10.0.0.1"]);
        assert_eq!(list_leases(&mut store, &network).unwrap().len(), 1);
        assert!(release(&mut store, &network, &owner(7)).unwrap().is_empty());
        assert!(release(&mut store, &network, &owner(1)).unwrap().len() == 1);
        assert!(release(&mut store, &network, &owner(1)).unwrap().is_empty());
        assert!(leases_of(&mut store, &network, &owner(1)).unwrap().is_empty());
    }
}

#[test]
fn an_add_and_a_del_are_one_read_and_one_commit_whatever_the_pool_size() {
    let network = net("10.0.0.0/16", &[]);
    let mut store = MemoryStore::new();
    for i in 0..10_000 {
        add(&mut store, &network, i).unwrap();
    }
    let summary = store.pools["10.0.0.0-16"].summary.clone().unwrap();
    assert_eq!(summary, "1:0-9999", "a packed pool is one run");
    let (reads, commits, listings) = (store.reads, store.commits, store.listings);
    assert_eq!(add(&mut store, &network, 10_000).unwrap(), ["10.0.39.56"]);
    assert_eq!(
        (store.reads - reads, store.commits - commits, store.listings - listings),
        (1, 1, 0)
    );
    release(&mut store, &network, &owner(77)).unwrap();
    assert_eq!(
        (store.reads - reads, store.commits - commits, store.listings - listings),
        (2, 2, 0)
    );
    assert_eq!(store.pools["10.0.0.0-16"].summary.as_deref(), Some("1:0-76,78-10000"));
    // A repeated ADD is a read and nothing else.
    add(&mut store, &network, 5).unwrap();
    assert_eq!((store.reads - reads, store.commits - commits), (3, 2));
}

#[test]
fn allocations_are_stored_as_whereabouts_offsets_in_whereabouts_pool_names() {
    for store in stores() {
        let mut network = net("fd00::/64", &[]);
        network.network_name = "blue".into();
        let mut s = store.clone();
        add(&mut s, &network, 1).unwrap();
        let pool = &s.pools["blue-fd00---64"].slots;
        assert_eq!(pool.keys().collect::<Vec<_>>(), ["1"]);
        assert_eq!(pool["1"].cni_network, "blue");
        let mut s = store.clone();
        add(&mut s, &net("10.0.0.5-10.0.0.9/24", &[]), 1).unwrap();
        assert_eq!(s.pools["10.0.0.0-24"].slots.keys().collect::<Vec<_>>(), ["5"]);
    }
}

#[test]
fn dual_stack_takes_one_of_each_and_rolls_back_on_failure() {
    for mut store in stores() {
        let mut network = net("10.0.0.0/30", &[]);
        network.ip_ranges.push(RangeConfig { range: "fd00::/126".into(), ..Default::default() });
        assert_eq!(add(&mut store, &network, 1).unwrap(), ["10.0.0.1", "fd00::1"]);
        // Fill the IPv6 range from another network sharing the pool, then ask again.
        let v6_only = NetworkConfig {
            range: None,
            ip_ranges: vec![network.ip_ranges[0].clone()],
            ..network.clone()
        };
        add(&mut store, &v6_only, 2).unwrap();
        assert!(matches!(add(&mut store, &network, 3), Err(IpamError::Exhausted(_))));
        // The IPv4 address taken before the IPv6 range failed was given back.
        assert_eq!(list_leases(&mut store, &net("10.0.0.0/30", &[])).unwrap().len(), 1);
    }
}

#[test]
fn overlapping_ranges_of_one_network_never_share_an_address() {
    for store in stores() {
        let mut a = net("10.0.0.0/24", &[]);
        let mut b = net("10.0.0.0/25", &[]);
        a.network_name = "shared".into();
        b.network_name = "shared".into();
        let mut s = store.clone();
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..20 {
            let network = if i % 2 == 0 { &a } else { &b };
            let address = add(&mut s, network, i).unwrap().remove(0);
            assert!(seen.insert(address.clone()), "{address} handed out twice");
        }
        assert_eq!(s.reservations.len(), 20);
        // Every reservation is backed by the pool entry written in the same commit.
        for i in (0..20).step_by(2) {
            release(&mut s, &a, &owner(i)).unwrap();
        }
        assert_eq!(s.reservations.len(), 10);
        // With overlapping disabled the two pools are independent (Whereabouts' behaviour).
        a.enable_overlapping_ranges = false;
        b.enable_overlapping_ranges = false;
        let mut s = store.clone();
        assert_eq!(add(&mut s, &a, 1).unwrap(), add(&mut s, &b, 2).unwrap());
        assert!(s.reservations.is_empty());
    }
}

#[test]
fn lost_commits_are_retried_on_the_fresh_view_and_contention_is_reported() {
    for mut store in stores() {
        let network = net("10.0.0.0/24", &[]);
        store.races_to_inject = 5;
        let reads = store.reads;
        assert_eq!(add(&mut store, &network, 1).unwrap(), ["10.0.0.1"]);
        // A stale answer carries the fresh pool: each retry goes at once on it, with no read
        // and no pause, for the first IMMEDIATE_RETRIES losses in a row.
        assert_eq!((store.reads - reads, store.commits, store.pauses), (1, 6, 0));
        store.races_to_inject = IMMEDIATE_RETRIES + 2;
        let (reads, commits) = (store.reads, store.commits);
        assert_eq!(add(&mut store, &network, 4).unwrap(), ["10.0.0.2"]);
        // Losses 17 and 18 pause (more writers than that on the pool) and read afresh.
        assert_eq!(store.commits - commits, IMMEDIATE_RETRIES + 3);
        assert_eq!((store.reads - reads, store.pauses), (3, 2));
        store.races_to_inject = 1_000;
        match add(&mut store, &network, 2) {
            Err(IpamError::Contention(m)) => assert!(m.contains("100 attempts"), "{m}"),
            other => panic!("{other:?}"),
        }
        // The host's deadline ends it sooner.
        store.deadline_at_attempt = Some(IMMEDIATE_RETRIES + 2);
        let pauses = store.pauses;
        assert!(matches!(add(&mut store, &network, 3), Err(IpamError::Contention(_))));
        // Pauses after the immediate retries, at attempts 16 and 17; the host refuses the one
        // at attempt 18.
        assert_eq!(store.pauses - pauses, 3);
        // Giving up leaves nothing behind.
        store.races_to_inject = 0;
        assert_eq!(list_leases(&mut store, &network).unwrap().len(), 2);
        assert_eq!(store.reservations.len(), 2);
    }
}

#[test]
fn requested_addresses_are_honoured_or_refused() {
    for mut store in stores() {
        let network = net("10.0.0.0/24", &[]);
        let ask = |i: usize, ips: &[&str]| AllocateRequest {
            owner: owner(i),
            requested: ips.iter().map(|s| s.to_string()).collect(),
        };
        let got = allocate(&mut store, &network, &ask(1, &["10.0.0.50/24"])).unwrap();
        assert_eq!(got[0].address, "10.0.0.50");
        match allocate(&mut store, &network, &ask(2, &["10.0.0.50"])) {
            Err(IpamError::AddressUnavailable(m)) => {
                assert!(m.contains("already allocated"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            allocate(&mut store, &network, &ask(3, &["10.9.0.1"])),
            Err(IpamError::AddressUnavailable(_))
        ));
        assert!(matches!(
            allocate(&mut store, &network, &ask(3, &["10.0.0.255"])),
            Err(IpamError::AddressUnavailable(_))
        ));
        // The same address twice is one request (podman's `network reload` sends that).
        let got = allocate(&mut store, &network, &ask(4, &["10.0.0.70", "10.0.0.70/24"])).unwrap();
        assert_eq!(got.iter().map(|l| l.address.as_str()).collect::<Vec<_>>(), ["10.0.0.70"]);
        match allocate(&mut store, &network, &ask(5, &["10.0.0.71", "10.0.0.72"])) {
            Err(IpamError::AddressUnavailable(m)) => {
                assert!(m.contains("10.0.0.71 and 10.0.0.72"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        // Asking again is idempotent; asking for another address while holding one is refused.
        let got = allocate(&mut store, &network, &ask(1, &["10.0.0.50"])).unwrap();
        assert_eq!(got[0].address, "10.0.0.50");
        match allocate(&mut store, &network, &ask(1, &["10.0.0.51"])) {
            Err(IpamError::AddressUnavailable(m)) => {
                assert!(m.contains("already holds 10.0.0.50") && m.contains("10.0.0.51"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        // The lowest free is unaffected by the requested ones.
        assert_eq!(add(&mut store, &network, 6).unwrap(), ["10.0.0.1"]);
    }
}

#[test]
fn a_requested_address_reserved_by_another_range_names_the_holder() {
    let mut a = net("10.0.0.0/24", &[]);
    let mut b = net("10.0.0.0/25", &[]);
    a.network_name = "shared".into();
    b.network_name = "shared".into();
    let mut store = MemoryStore::new();
    let ask = AllocateRequest { owner: owner(1), requested: vec!["10.0.0.9".into()] };
    allocate(&mut store, &a, &ask).unwrap();
    let ask = AllocateRequest { owner: owner(2), requested: vec!["10.0.0.9".into()] };
    match allocate(&mut store, &b, &ask) {
        Err(IpamError::AddressUnavailable(m)) => assert!(m.contains("ns/pod-1"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(list_leases(&mut store, &b).unwrap().len(), 0);
}

#[test]
fn a_pods_new_sandbox_gets_its_address_back_by_default() {
    for mut store in stores() {
        let network = net("10.0.0.0/24", &[]);
        let first = Owner::new("old-sandbox", "eth0", "ns/db-0");
        let second = Owner::new("new-sandbox", "eth0", "ns/db-0");
        add(&mut store, &network, 1).unwrap();
        let request = |o: &Owner| AllocateRequest { owner: o.clone(), requested: vec![] };
        let a = allocate(&mut store, &network, &request(&first)).unwrap();
        let b = allocate(&mut store, &network, &request(&second)).unwrap();
        assert_eq!(a, b);
        assert_eq!(list_leases(&mut store, &network).unwrap().len(), 2);
        let key = (String::new(), a[0].address.clone());
        assert_eq!(store.reservations[&key].container_id, "new-sandbox");
        // The old container's DEL (it may come late) frees nothing of the new one's.
        assert!(release(&mut store, &network, &first).unwrap().is_empty());
        assert_eq!(leases_of(&mut store, &network, &second).unwrap(), b);
        // Another interface of the same pod is another attachment.
        let other_if = Owner::new("new-sandbox", "net1", "ns/db-0");
        assert_ne!(allocate(&mut store, &network, &request(&other_if)).unwrap(), b);
        // With `sticky: false`, the same pod name gets a fresh address.
        let fresh = NetworkConfig { sticky: false, ..network.clone() };
        let third = Owner::new("third", "eth0", "ns/db-0");
        assert_ne!(allocate(&mut store, &fresh, &request(&third)).unwrap(), b);
    }
}

#[test]
fn garbage_collection_keeps_valid_attachments_and_other_cni_networks() {
    for mut store in stores() {
        let network = net("10.0.0.0/24", &[]);
        for i in 0..5 {
            add(&mut store, &network, i).unwrap();
        }
        // Another CNI network sharing the pool (same range, no network_name).
        let red = AllocateRequest {
            owner: Owner::new("red-1", "eth0", "").in_cni_network("red"),
            requested: vec![],
        };
        allocate(&mut store, &network, &red).unwrap();
        // An allocation that records no CNI network (made by Whereabouts) counts as ours.
        let legacy = AllocateRequest { owner: Owner::new("legacy", "eth0", ""), requested: vec![] };
        allocate(&mut store, &network, &legacy).unwrap();
        let freed = collect_garbage(&mut store, &network, "blue", &[owner(1), owner(3)]).unwrap();
        let mut gone: Vec<_> = freed.iter().map(|h| h.owner.container_id.clone()).collect();
        gone.sort();
        assert_eq!(gone, ["ctr-0", "ctr-2", "ctr-4", "legacy"]);
        assert_eq!(list_leases(&mut store, &network).unwrap().len(), 3);
        assert_eq!(store.reservations.len(), 3);
    }
}

#[test]
fn garbage_collection_commits_in_bounded_batches() {
    let network = net("10.0.0.0/24", &[]);
    let mut store = MemoryStore::new();
    for i in 0..40 {
        add(&mut store, &network, i).unwrap();
    }
    let commits = store.commits;
    let freed = collect_garbage(&mut store, &network, "blue", &[owner(39)]).unwrap();
    assert_eq!(freed.len(), 39);
    assert_eq!(store.commits - commits, 39usize.div_ceil(MAX_EDITS_PER_COMMIT) as u32);
    assert_eq!(store.pools["10.0.0.0-24"].summary.as_deref(), Some("1:39"));
    assert_eq!(store.reservations.len(), 1);
}

#[test]
fn corrupt_pool_data_is_an_error_and_nothing_is_written() {
    for mut store in stores() {
        let network = net("10.0.0.0/24", &[]);
        add(&mut store, &network, 1).unwrap();
        store.pools.get_mut("10.0.0.0-24").unwrap().slots.insert("9999".into(), owner(2));
        let before = store.pools.clone();
        // A summarized read shows only the query's slots, so the damage surfaces where the
        // whole pool is read.
        match list_leases(&mut store, &network) {
            Err(IpamError::Store(StoreError::Corrupt(m))) => {
                assert!(m.contains("9999") && m.contains("10.0.0.0-24"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        if !store.keeps_summaries {
            assert!(matches!(
                add(&mut store, &network, 3),
                Err(IpamError::Store(StoreError::Corrupt(_)))
            ));
        }
        assert_eq!(store.pools, before);
    }
}

#[test]
fn a_damaged_or_stale_summary_is_rebuilt_and_never_duplicates_an_address() {
    let network = net("10.0.0.0/24", &[]);
    let mut store = MemoryStore::new();
    for i in 0..3 {
        add(&mut store, &network, i).unwrap();
    }
    // A summary that does not decode: rebuilt from the whole pool.
    store.pools.get_mut("10.0.0.0-24").unwrap().summary = Some("garbage".into());
    assert_eq!(add(&mut store, &network, 3).unwrap(), ["10.0.0.4"]);
    assert_eq!(store.pools["10.0.0.0-24"].summary.as_deref(), Some("1:0-3"));
    // A summary that says .1–.4 are free: the claim is refused, the summary rebuilt.
    store.pools.get_mut("10.0.0.0-24").unwrap().summary = Some("1:".into());
    assert_eq!(add(&mut store, &network, 4).unwrap(), ["10.0.0.5"]);
    assert_eq!(store.pools["10.0.0.0-24"].summary.as_deref(), Some("1:0-4"));
    let leases = list_leases(&mut store, &network).unwrap();
    let mut addresses: Vec<_> = leases.iter().map(|h| h.lease.address.clone()).collect();
    addresses.dedup();
    assert_eq!(addresses.len(), 5);
}

#[test]
fn a_pool_without_a_summary_gets_one_with_its_next_commit() {
    let network = net("10.0.0.0/24", &[]);
    let mut store = MemoryStore::new();
    for i in 0..3 {
        add(&mut store, &network, i).unwrap();
    }
    // As imported from an older store: the slots, no summary.
    store.pools.get_mut("10.0.0.0-24").unwrap().summary = None;
    assert_eq!(add(&mut store, &network, 3).unwrap(), ["10.0.0.4"]);
    assert_eq!(store.pools["10.0.0.0-24"].summary.as_deref(), Some("1:0-3"));
}

#[test]
fn invalid_config_names_the_field() {
    let mut store = MemoryStore::new();
    match add(&mut store, &net("10.0.0.0/16", &["10.0.1.0/24", "10.0.2.0/24", "10.9.0.0/24"]), 1) {
        Err(IpamError::InvalidConfig(e)) => {
            assert_eq!(e.to_string(), "exclude[2]: 10.9.0.0/24 is outside range 10.0.0.0/16");
        }
        other => panic!("{other:?}"),
    }
    assert!(store.pools.is_empty());
}

#[test]
fn overlaps_count_only_addresses_both_ranges_can_hand_out() {
    use hereabouts_core::plan::overlaps;
    let a = net("10.0.0.0/24", &[]);
    let span = |o: &hereabouts_core::types::Overlap| (o.first.clone(), o.last.clone());
    // Plain overlap: the shared allocatable span.
    let found = overlaps(&a, &net("10.0.0.128/25", &[])).unwrap();
    assert_eq!(
        found.iter().map(span).collect::<Vec<_>>(),
        [("10.0.0.129".to_string(), "10.0.0.254".to_string())]
    );
    // Excluded on one side at both ends: the overlap shrinks.
    let found = overlaps(&a, &net("10.0.0.0/25", &["10.0.0.0/28", "10.0.0.112/28"])).unwrap();
    assert_eq!(
        found.iter().map(span).collect::<Vec<_>>(),
        [("10.0.0.16".to_string(), "10.0.0.111".to_string())]
    );
    // Wholly excluded on one side: no overlap at all.
    assert!(overlaps(&a, &net("10.0.1.0/24", &[])).unwrap().is_empty());
    let mut b = net("10.0.0.0/23", &["10.0.0.0/24"]);
    assert!(overlaps(&a, &b).unwrap().is_empty());
    // Interleaved excludes on both sides meet at the first address free in both.
    let c = net("10.0.0.0/24", &["10.0.0.0/29"]);
    b = net("10.0.0.0/24", &["10.0.0.8/29", "10.0.0.16/32"]);
    assert_eq!(
        overlaps(&c, &b).unwrap().iter().map(span).collect::<Vec<_>>(),
        [("10.0.0.17".to_string(), "10.0.0.254".to_string())]
    );
}

#[test]
fn a_config_that_refuses_new_addresses_still_serves_held_ones_del_and_gc() {
    for mut store in stores() {
        let good = net("10.0.0.0/24", &[]);
        add(&mut store, &good, 1).unwrap();
        let error = hereabouts_core::types::FieldError {
            field: "exclude[0]".into(),
            message: "x is not a CIDR or an IP address".into(),
        };
        let refusing = NetworkConfig { allocation_error: Some(error), ..good.clone() };
        // A pod that holds an address gets it again (Whereabouts' AssignIP looks it up first).
        assert_eq!(add(&mut store, &refusing, 1).unwrap(), ["10.0.0.1"]);
        match add(&mut store, &refusing, 2) {
            Err(IpamError::InvalidConfig(e)) => assert_eq!(e.field, "exclude[0]"),
            other => panic!("{other:?}"),
        }
        assert_eq!(leases_of(&mut store, &refusing, &owner(1)).unwrap().len(), 1);
        assert_eq!(release(&mut store, &refusing, &owner(1)).unwrap().len(), 1);
        add(&mut store, &good, 3).unwrap();
        assert_eq!(collect_garbage(&mut store, &refusing, "blue", &[]).unwrap().len(), 1);
    }
}
