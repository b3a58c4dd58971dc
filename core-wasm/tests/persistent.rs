//! Persistent addresses in `plan` and `range-map`: kept for an IPAMClaim or a StatefulSet
//! member while no pod holds them. They are taken (never free, never next) and counted as their
//! own kind: a map bucket's kinds partition it, whatever the two lists hold.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use hereabouts_core::config::{read_config, read_plan_document};
use hereabouts_core::plan::{plan, range_map};
use hereabouts_core::types::{ConfigError, IpamError, MapBucket, NetworkConfig, PlanRequest};
use proptest::prelude::*;

fn network(ipam: &str) -> NetworkConfig {
    read_config(ipam).unwrap().network
}

fn request(ipam: &str, allocated: &[&str], persistent: &[&str]) -> PlanRequest {
    PlanRequest {
        network: network(ipam),
        allocated: allocated.iter().map(|s| s.to_string()).collect(),
        persistent: persistent.iter().map(|s| s.to_string()).collect(),
        preview: 16,
    }
}

fn n(text: &str) -> u128 {
    text.parse().unwrap()
}

fn size(b: &MapBucket) -> u128 {
    let (first, last): (Ipv4Addr, Ipv4Addr) = (b.first.parse().unwrap(), b.last.parse().unwrap());
    u128::from(u32::from(last) - u32::from(first)) + 1
}

/// Every address of a bucket is exactly one kind.
fn assert_partition(buckets: &[MapBucket]) {
    for b in buckets {
        let sum = n(&b.allocatable)
            + n(&b.allocated)
            + n(&b.persistent)
            + n(&b.excluded)
            + n(&b.reserved);
        assert_eq!(sum, size(b), "{b:?}");
    }
}

/// The counts of a whole-range map, one bucket per address: (free, allocated, persistent).
fn kinds(request: &PlanRequest) -> (u128, u128, u128) {
    let buckets = range_map(request, 0, None, None, 65_536).unwrap();
    assert_partition(&buckets);
    buckets.iter().fold((0, 0, 0), |(f, a, p), b| {
        (f + n(&b.allocatable), a + n(&b.allocated), p + n(&b.persistent))
    })
}

#[test]
fn persistent_addresses_are_taken_but_neither_free_nor_allocated() {
    let ipam = r#"{"range": "10.0.0.0/28", "exclude": ["10.0.0.12/30"]}"#;
    // .3 is in both lists (a store lists a claim's address among its allocations): persistent.
    let r = request(ipam, &["10.0.0.1", "10.0.0.3"], &["10.0.0.2", "10.0.0.3/28", "10.0.0.13"]);
    let report = &plan(&r).unwrap()[0];
    assert_eq!((report.capacity.as_str(), report.free.as_str()), ("11", "8"));
    // .13 is excluded: excluded, not persistent.
    assert_eq!(report.persistent, "2");
    assert_eq!(report.next[..2], ["10.0.0.4", "10.0.0.5"]);
    assert_eq!(kinds(&r), (8, 1, 2));
    let cell = |address: &str| {
        let b = range_map(&r, 0, Some(address), Some(address), 1).unwrap();
        (n(&b[0].allocatable), n(&b[0].allocated), n(&b[0].persistent), n(&b[0].excluded))
    };
    assert_eq!(cell("10.0.0.1"), (0, 1, 0, 0));
    assert_eq!(cell("10.0.0.2"), (0, 0, 1, 0));
    assert_eq!(cell("10.0.0.3"), (0, 0, 1, 0));
    assert_eq!(cell("10.0.0.4"), (1, 0, 0, 0));
    assert_eq!(cell("10.0.0.13"), (0, 0, 0, 1));
}

#[test]
fn without_persistent_addresses_nothing_changes() {
    let ipam = r#"{"range": "10.0.0.0/29"}"#;
    let r = request(ipam, &["10.0.0.1"], &[]);
    let report = &plan(&r).unwrap()[0];
    assert_eq!((report.free.as_str(), report.persistent.as_str()), ("5", "0"));
    assert_eq!(kinds(&r), (5, 1, 0));
    // The same address persistent instead: one fewer allocated, one more persistent, same free.
    let r = request(ipam, &[], &["10.0.0.1"]);
    assert_eq!(plan(&r).unwrap()[0].free, "5");
    assert_eq!(plan(&r).unwrap()[0].next[0], "10.0.0.2");
    assert_eq!(kinds(&r), (5, 0, 1));
}

#[test]
fn persistent_addresses_count_in_their_own_range_only() {
    let r = PlanRequest {
        network: network(r#"{"range": "10.0.0.0/30", "ipRanges": [{"range": "fd00::/126"}]}"#),
        allocated: Vec::new(),
        persistent: vec!["fd00::2".into(), "10.9.9.9".into()],
        preview: 4,
    };
    let reports = plan(&r).unwrap();
    assert_eq!(reports.iter().map(|r| r.persistent.as_str()).collect::<Vec<_>>(), ["0", "1"]);
    assert_eq!(reports[1].next, ["fd00::1"]);
    let v6 = range_map(&r, 1, None, None, 4).unwrap();
    assert_eq!(v6.iter().map(|b| b.persistent.as_str()).collect::<Vec<_>>(), ["0", "0", "1", "0"]);
}

#[test]
fn a_persistent_entry_that_is_not_an_address_names_its_field() {
    let r = request(r#"{"range": "10.0.0.0/24"}"#, &["10.0.0.1"], &["10.0.0.2", "x"]);
    for result in [plan(&r).map(|_| ()), range_map(&r, 0, None, None, 8).map(|_| ())] {
        match result {
            Err(IpamError::InvalidConfig(e)) => {
                assert_eq!(
                    (e.field.as_str(), e.message.as_str()),
                    ("persistent[1]", "x is not an IP address")
                );
            }
            other => panic!("expected invalid-config, got {other:?}"),
        }
    }
}

#[test]
fn the_plan_document_reads_persistent_like_allocated() {
    let doc = read_plan_document(
        r#"{"ipam": {"range": "10.0.0.0/24"}, "allocated": ["10.0.0.1"], "persistent": ["10.0.0.2"]}"#,
    )
    .unwrap();
    assert_eq!((doc.allocated, doc.persistent), (vec!["10.0.0.1".into()], vec!["10.0.0.2".into()]));
    for (text, field, message) in [
        (
            r#"{"ipam": {"range": "10.0.0.0/24"}, "persistent": {}}"#,
            "persistent",
            "must be a list of addresses",
        ),
        (
            r#"{"ipam": {"range": "10.0.0.0/24"}, "persistent": [true]}"#,
            "persistent[0]",
            "must be an address string",
        ),
    ] {
        match read_plan_document(text) {
            Err(ConfigError::Invalid(p)) => {
                assert_eq!((p.field.as_str(), p.message.as_str()), (field, message))
            }
            other => panic!("{text}: expected invalid, got {other:?}"),
        }
    }
    let none = read_plan_document(r#"{"ipam": {"range": "10.0.0.0/24"}, "persistent": null}"#);
    assert!(none.unwrap().persistent.is_empty());
}

proptest! {
    /// Whatever the excludes and the two lists (overlapping, duplicated, outside the range),
    /// every bucket of every bucketing is partitioned by the five kinds, each persistent
    /// address is persistent and never allocated, and plan's counts agree with the map's.
    #[test]
    fn map_kinds_partition_every_bucket(
        exclude in proptest::collection::vec((0u32..64, 0u32..4), 0..3),
        allocated in proptest::collection::vec(0u32..72, 0..24),
        persistent in proptest::collection::vec(0u32..72, 0..12),
        buckets in 1u32..70,
    ) {
        let at = |i: u32| Ipv4Addr::from(0x0a00_0000 + i).to_string();
        let excludes: Vec<String> = exclude.iter().map(|&(i, bits)| format!("{}/{}", at(i & !((1 << bits) - 1)), 32 - bits)).collect();
        let ipam = serde_json::json!({"range": "10.0.0.0/26", "range_start": "10.0.0.3", "exclude": excludes}).to_string();
        let list = |v: &[u32]| v.iter().map(|&i| at(i)).collect::<Vec<_>>();
        let r = PlanRequest { network: network(&ipam), allocated: list(&allocated), persistent: list(&persistent), preview: 0 };
        let map = range_map(&r, 0, None, None, buckets).unwrap();
        assert_partition(&map);
        let (free, _, kept) = kinds(&r);
        let report = &plan(&r).unwrap()[0];
        prop_assert_eq!(n(&report.free), free);
        prop_assert_eq!(n(&report.persistent), kept);
        // A naive count of the persistent addresses: allocatable (in range_start.., not
        // excluded, not network/broadcast), each once.
        let excluded = |i: u32| exclude.iter().any(|&(e, bits)| { let lo = e & !((1 << bits) - 1); lo <= i && i < lo + (1 << bits) });
        let naive: BTreeSet<u32> = persistent.iter().copied().filter(|&i| (3..63).contains(&i) && !excluded(i)).collect();
        prop_assert_eq!(kept, naive.len() as u128);
        let taken: BTreeSet<u32> = allocated.iter().chain(&persistent).copied().filter(|&i| (3..63).contains(&i) && !excluded(i)).collect();
        let capacity = (3..63).filter(|&i| !excluded(i)).count();
        prop_assert_eq!(free, (capacity - taken.len()) as u128);
    }
}
