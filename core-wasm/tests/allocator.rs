//! Allocation semantics through the store contract, over the in-memory store.

use hereabouts_core::allocator::{allocate, collect_garbage, leases_of, list_leases, release};
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
        ..Default::default()
    }
}

fn owner(i: usize) -> Owner {
    Owner::new(&format!("ctr-{i}"), "eth0", &format!("ns/pod-{i}"))
}

fn add(
    store: &mut MemoryStore,
    network: &NetworkConfig,
    i: usize,
) -> Result<Vec<String>, IpamError> {
    let request = AllocateRequest { owner: owner(i), ..Default::default() };
    allocate(store, network, &request).map(|l| l.into_iter().map(|l| l.address).collect())
}

#[test]
fn hands_out_lowest_free_and_reuses_the_lowest_released() {
    let network = net("10.0.0.0/29", &["10.0.0.2"]);
    let mut store = MemoryStore::new();
    let got: Vec<String> =
        (0..5).map(|i| add(&mut store, &network, i).unwrap()[0].clone()).collect();
    assert_eq!(got, ["10.0.0.1", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
    match add(&mut store, &network, 5) {
        Err(IpamError::Exhausted(message)) => assert!(message.contains("10.0.0.0/29"), "{message}"),
        other => panic!("expected exhaustion, got {other:?}"),
    }
    let freed = release(&mut store, &network, &owner(2)).unwrap();
    assert_eq!(freed[0].address, "10.0.0.4");
    assert_eq!(add(&mut store, &network, 9).unwrap(), ["10.0.0.4"]);
}

#[test]
fn add_is_idempotent_and_del_of_unknown_succeeds() {
    let network = net("10.0.0.0/24", &[]);
    let mut store = MemoryStore::new();
    assert_eq!(add(&mut store, &network, 1).unwrap(), ["10.0.0.1"]);
    assert_eq!(add(&mut store, &network, 1).unwrap(), ["10.0.0.1"]);
    assert_eq!(list_leases(&mut store, &network).unwrap().len(), 1);
    assert!(release(&mut store, &network, &owner(7)).unwrap().is_empty());
    assert!(release(&mut store, &network, &owner(1)).unwrap().len() == 1);
    assert!(release(&mut store, &network, &owner(1)).unwrap().is_empty());
    assert!(leases_of(&mut store, &network, &owner(1)).unwrap().is_empty());
}

#[test]
fn allocations_are_stored_as_whereabouts_offsets_in_whereabouts_pool_names() {
    let mut network = net("fd00::/64", &[]);
    network.network_name = "blue".into();
    let mut store = MemoryStore::new();
    add(&mut store, &network, 1).unwrap();
    let pool = &store.pools["blue-fd00---64"].1;
    assert_eq!(pool.keys().collect::<Vec<_>>(), ["1"]);
    let mut store = MemoryStore::new();
    add(&mut store, &net("10.0.0.5-10.0.0.9/24", &[]), 1).unwrap();
    assert_eq!(store.pools["10.0.0.0-24"].1.keys().collect::<Vec<_>>(), ["5"]);
}

#[test]
fn dual_stack_takes_one_of_each_and_rolls_back_on_failure() {
    let mut network = net("10.0.0.0/30", &[]);
    network.ip_ranges.push(RangeConfig { range: "fd00::/126".into(), ..Default::default() });
    let mut store = MemoryStore::new();
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

#[test]
fn overlapping_ranges_of_one_network_never_share_an_address() {
    let mut a = net("10.0.0.0/24", &[]);
    let mut b = net("10.0.0.0/25", &[]);
    a.network_name = "shared".into();
    b.network_name = "shared".into();
    let mut store = MemoryStore::new();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..20 {
        let network = if i % 2 == 0 { &a } else { &b };
        let address = add(&mut store, network, i).unwrap().remove(0);
        assert!(seen.insert(address.clone()), "{address} handed out twice");
    }
    assert_eq!(store.reservations.len(), 20);
    // With overlapping disabled the two pools are independent (Whereabouts' behaviour).
    a.enable_overlapping_ranges = false;
    b.enable_overlapping_ranges = false;
    let mut store = MemoryStore::new();
    assert_eq!(add(&mut store, &a, 1).unwrap(), add(&mut store, &b, 2).unwrap());
}

#[test]
fn conflicts_are_retried_and_contention_is_reported() {
    let network = net("10.0.0.0/24", &[]);
    let mut store = MemoryStore::new();
    store.conflicts_to_inject = 5;
    assert_eq!(add(&mut store, &network, 1).unwrap(), ["10.0.0.1"]);
    // The reservation is kept across lost writes: one reserve, no release.
    assert_eq!((store.reserve_calls, store.release_calls), (1, 0));
    store.conflicts_to_inject = 1_000;
    store.max_attempts = 3;
    assert!(matches!(add(&mut store, &network, 2), Err(IpamError::Contention(_))));
    // Giving up leaves no reservation behind.
    assert_eq!(store.reservations.len(), 1);
}

#[test]
fn requested_addresses_are_honoured_or_refused_with_the_holder() {
    let network = net("10.0.0.0/24", &[]);
    let mut store = MemoryStore::new();
    let ask = |i: usize, ip: &str| AllocateRequest {
        owner: owner(i),
        requested: vec![ip.into()],
        sticky: false,
    };
    assert_eq!(
        allocate(&mut store, &network, &ask(1, "10.0.0.50/24")).unwrap()[0].address,
        "10.0.0.50"
    );
    match allocate(&mut store, &network, &ask(2, "10.0.0.50")) {
        Err(IpamError::AddressUnavailable(m)) => assert!(m.contains("ns/pod-1"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        allocate(&mut store, &network, &ask(3, "10.9.0.1")),
        Err(IpamError::AddressUnavailable(_))
    ));
    assert!(matches!(
        allocate(&mut store, &network, &ask(3, "10.0.0.255")),
        Err(IpamError::AddressUnavailable(_))
    ));
    // The lowest free is unaffected by the requested one.
    assert_eq!(add(&mut store, &network, 4).unwrap(), ["10.0.0.1"]);
}

#[test]
fn sticky_hands_a_pods_address_to_its_next_container() {
    let network = net("10.0.0.0/24", &[]);
    let mut store = MemoryStore::new();
    let first = Owner::new("old-sandbox", "eth0", "ns/db-0");
    let second = Owner::new("new-sandbox", "eth0", "ns/db-0");
    add(&mut store, &network, 1).unwrap();
    let sticky = |o: &Owner| AllocateRequest { owner: o.clone(), requested: vec![], sticky: true };
    let a = allocate(&mut store, &network, &sticky(&first)).unwrap();
    let b = allocate(&mut store, &network, &sticky(&second)).unwrap();
    assert_eq!(a, b);
    assert_eq!(list_leases(&mut store, &network).unwrap().len(), 2);
    assert_eq!(
        store.reservations[&(String::new(), a[0].address.clone())].container_id,
        "new-sandbox"
    );
    // Without sticky, the same pod name gets a fresh address.
    let third = Owner::new("third", "eth0", "ns/db-0");
    let c = allocate(&mut store, &network, &AllocateRequest { owner: third, ..Default::default() })
        .unwrap();
    assert_ne!(c, b);
}

#[test]
fn garbage_collection_keeps_only_valid_attachments() {
    let network = net("10.0.0.0/24", &[]);
    let mut store = MemoryStore::new();
    for i in 0..5 {
        add(&mut store, &network, i).unwrap();
    }
    let freed = collect_garbage(&mut store, &network, &[owner(1), owner(3)]).unwrap();
    let mut gone: Vec<_> = freed.iter().map(|h| h.owner.container_id.clone()).collect();
    gone.sort();
    assert_eq!(gone, ["ctr-0", "ctr-2", "ctr-4"]);
    assert_eq!(list_leases(&mut store, &network).unwrap().len(), 2);
    assert_eq!(store.reservations.len(), 2);
}

#[test]
fn corrupt_pool_data_is_an_error_and_nothing_is_written() {
    let network = net("10.0.0.0/24", &[]);
    let mut store = MemoryStore::new();
    add(&mut store, &network, 1).unwrap();
    store.pools.get_mut("10.0.0.0-24").unwrap().1.insert("9999".into(), owner(2));
    let before = store.pools.clone();
    match add(&mut store, &network, 3) {
        Err(IpamError::Store(StoreError::Corrupt(m))) => {
            assert!(m.contains("9999") && m.contains("10.0.0.0-24"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.pools, before);
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
