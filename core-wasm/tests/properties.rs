//! Property tests: whatever the range, excludes and sequence of ADD/DEL, every address handed
//! out is unique, inside the range, outside every exclude, never network/broadcast/.0, and
//! exactly the lowest free one a naive walk (Whereabouts' algorithm) would pick.

use std::collections::BTreeMap;

use hereabouts_core::allocator::{allocate, release};
use hereabouts_core::memory::MemoryStore;
use hereabouts_core::types::{AllocateRequest, NetworkConfig, Owner, RangeConfig};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Add(usize),
    Del(usize),
}

/// The naive model: walk the range address by address.
fn naive_lowest(
    network: u32,
    prefix: u32,
    start: u32,
    excludes: &[(u32, u32)],
    used: &BTreeMap<u32, usize>,
) -> Option<u32> {
    let size = 1u32 << (32 - prefix);
    (start.max(network + 1)..network + size - 1).find(|a| {
        a & 0xff != 0
            && !used.contains_key(a)
            && !excludes.iter().any(|(lo, hi)| lo <= a && a <= hi)
    })
}

fn v4(a: u32) -> String {
    std::net::Ipv4Addr::from(a).to_string()
}

fn scenario() -> impl Strategy<Value = (u32, u32, u32, Vec<(u32, u32)>, Vec<Op>)> {
    (22u32..=29, 0u32..4096).prop_flat_map(|(prefix, base)| {
        let network = (10u32 << 24)
            | ((base << (32 - prefix)) & 0x00ff_ffff & !((1u32 << (32 - prefix)) - 1));
        let size = 1u32 << (32 - prefix);
        let exclude = (0..size, 26u32..=32).prop_map(move |(offset, p)| {
            let m = (1u64 << (32 - p)) as u32 - 1;
            let start = (network + offset) & !m;
            (start, start | m)
        });
        let op =
            prop_oneof![3 => (0usize..40).prop_map(Op::Add), 1 => (0usize..40).prop_map(Op::Del)];
        // A range_start just below a .0 boundary makes short sequences cross it.
        let start = (0..size, 0u32..24).prop_map(move |(offset, below)| {
            let near_zero = ((network + offset) & !0xff).saturating_sub(below).max(network);
            if offset % 2 == 0 { near_zero } else { network + offset }
        });
        (
            Just(network),
            Just(prefix),
            start,
            prop::collection::vec(exclude, 0..4),
            prop::collection::vec(op, 1..120),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn allocations_match_the_naive_lowest_free_walk(
        (network, prefix, start, excludes, ops) in scenario(),
        summaries in any::<bool>(),
        races in 0u32..3,
    ) {
        let excludes: Vec<(u32, u32)> = excludes.into_iter().filter(|&(lo, hi)| lo >= network && hi < network + (1u32 << (32 - prefix))).collect();
        let config = NetworkConfig {
            range: Some(RangeConfig {
                range: format!("{}/{}", v4(network), prefix),
                range_start: Some(v4(start)),
                exclude: excludes.iter().map(|&(lo, hi)| format!("{}/{}", v4(lo), 32 - (hi - lo + 1).trailing_zeros())).collect(),
                ..Default::default()
            }),
            enable_overlapping_ranges: true,
            ..Default::default()
        };
        let owner = |i: usize| Owner::new(&format!("c{i}"), "eth0", "");
        // Both shapes of store (summaries kept, whole pools), with racing writers now and then.
        let mut store = if summaries { MemoryStore::new() } else { MemoryStore::whole_pools() };
        let mut used: BTreeMap<u32, usize> = BTreeMap::new();
        let mut held: BTreeMap<usize, u32> = BTreeMap::new();
        let capacity_empty = naive_lowest(network, prefix, start, &excludes, &BTreeMap::new()).is_none();
        for op in ops {
            store.races_to_inject = races;
            match op {
                Op::Add(i) => {
                    let result = allocate(&mut store, &config, &AllocateRequest { owner: owner(i), ..Default::default() });
                    if capacity_empty {
                        prop_assert!(result.is_err());
                        continue;
                    }
                    if let Some(&existing) = held.get(&i) {
                        prop_assert_eq!(result.unwrap()[0].address.clone(), v4(existing), "ADD must be idempotent");
                        continue;
                    }
                    match naive_lowest(network, prefix, start, &excludes, &used) {
                        None => prop_assert!(result.is_err(), "pool is full but allocation succeeded"),
                        Some(expected) => {
                            let got = result.unwrap()[0].address.clone();
                            prop_assert_eq!(&got, &v4(expected));
                            prop_assert!(used.insert(expected, i).is_none(), "duplicate {}", got);
                            held.insert(i, expected);
                        }
                    }
                }
                Op::Del(i) => {
                    if capacity_empty { continue; }
                    let freed = release(&mut store, &config, &owner(i)).unwrap();
                    match held.remove(&i) {
                        Some(address) => {
                            prop_assert_eq!(freed.len(), 1);
                            prop_assert_eq!(freed[0].address.clone(), v4(address));
                            used.remove(&address);
                        }
                        None => prop_assert!(freed.is_empty()),
                    }
                }
            }
        }
    }
}
