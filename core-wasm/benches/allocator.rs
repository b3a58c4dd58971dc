//! Ours against a linear-scan baseline written the way Whereabouts allocates
//! (pkg/allocate/allocate.go `IterateForAssignment`): walk from the first usable address,
//! turn each into a string to test a map of reserved addresses, test every exclude CIDR and
//! jump past an exclude that contains it. The baseline also skips IPv4 `.0` so both sides
//! hand out the very same sequence (checked below before anything is timed).
//!
//! `cargo bench -p hereabouts-core` prints a criterion report per case, then one table with
//! both columns and the ratio. The quadratic baseline fill is timed once, by hand: criterion
//! would want ten runs of minutes each.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use criterion::Criterion;
use hereabouts_core::allocator::allocate;
use hereabouts_core::memory::MemoryStore;
use hereabouts_core::range::Range;
use hereabouts_core::types::{AllocateRequest, NetworkConfig, Owner, RangeConfig};

// ---------- the baseline ----------

struct Baseline {
    v6: bool,
    first: u128,
    last: u128,
    /// (network, broadcast) of each exclude, as Whereabouts tests `ipnet.Contains`.
    excludes: Vec<(u128, u128)>,
}

fn to_ip(v6: bool, a: u128) -> IpAddr {
    if v6 { IpAddr::V6(Ipv6Addr::from(a)) } else { IpAddr::V4(Ipv4Addr::from(a as u32)) }
}

impl Baseline {
    fn new(range: &Range) -> Self {
        Self {
            v6: range.family == hereabouts_core::addr::Family::V6,
            first: range.first,
            last: range.last,
            excludes: range.excludes.clone(),
        }
    }

    /// One allocation: the reserved list arrives as strings, as it does from a store.
    fn next(&self, reserved: &HashMap<String, bool>) -> Option<u128> {
        let mut a = self.first;
        'walk: while a <= self.last {
            if !self.v6 && a & 0xff == 0 {
                a += 1;
                continue;
            }
            if reserved.contains_key(&to_ip(self.v6, a).to_string()) {
                a += 1;
                continue;
            }
            for &(lo, hi) in &self.excludes {
                if lo <= a && a <= hi {
                    a = hi + 1;
                    continue 'walk;
                }
            }
            return Some(a);
        }
        None
    }
}

// ---------- scenarios ----------

fn range(text: &str, exclude: Vec<String>) -> Range {
    let config = RangeConfig { range: text.into(), exclude, ..Default::default() };
    Range::parse(&config, "", &mut Vec::new()).expect("valid bench range")
}

fn first_n(range: &Range, n: usize) -> Vec<u128> {
    range.pool(std::iter::empty()).next_free(n)
}

struct Row {
    case: String,
    ours: Duration,
    baseline: Duration,
}

fn median(c: &mut Criterion, id: &str, mut f: impl FnMut()) -> Duration {
    // Criterion prints its own report; we also keep a median of our own for the table.
    c.bench_function(id, |b| b.iter(&mut f));
    let mut samples: Vec<Duration> = (0..15)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut rows = Vec::new();

    // 1. The next allocation after N used, in a /8: build from the stored list, then search
    //    (what every CNI ADD does), and the search alone on a built pool.
    let slash8 = range("10.0.0.0/8", vec![]);
    let base8 = Baseline::new(&slash8);
    for n in [1_000usize, 10_000, 100_000] {
        let used = first_n(&slash8, n + 1);
        let (used, expected) = (used[..n].to_vec(), used[n]);
        let reserved: HashMap<String, bool> =
            used.iter().map(|&a| (to_ip(false, a).to_string(), true)).collect();
        assert_eq!(slash8.pool(used.iter().copied()).lowest_free(), Some(expected));
        assert_eq!(base8.next(&reserved), Some(expected));
        let ours =
            median(&mut c, &format!("next after {n} used / ours (build pool + search)"), || {
                black_box(slash8.pool(black_box(used.iter().copied())).lowest_free());
            });
        let baseline = median(&mut c, &format!("next after {n} used / baseline"), || {
            black_box(base8.next(black_box(&reserved)));
        });
        rows.push(Row { case: format!("next allocation after {n} used (/8)"), ours, baseline });
        let pool = slash8.pool(used.iter().copied());
        let search = median(&mut c, &format!("next after {n} used / ours (search only)"), || {
            black_box(pool.lowest_free());
        });
        rows.push(Row {
            case: format!("  … search only, pool already built ({n})"),
            ours: search,
            baseline,
        });
    }

    // 2. The first allocation in an IPv6 /64 with 10,000 excludes in front of the free space.
    let excludes: Vec<String> = (1..=10_000u32).map(|i| format!("fd00::{:x}/128", i)).collect();
    let slash64 = range("fd00::/64", excludes);
    let base64 = Baseline::new(&slash64);
    let empty = HashMap::new();
    assert_eq!(slash64.pool(std::iter::empty()).lowest_free(), base64.next(&empty));
    let ours = median(&mut c, "ipv6 /64, 10k excludes, first allocation / ours", || {
        black_box(slash64.pool(std::iter::empty()).lowest_free());
    });
    let baseline = median(&mut c, "ipv6 /64, 10k excludes, first allocation / baseline", || {
        black_box(base64.next(black_box(&empty)));
    });
    rows.push(Row {
        case: "first allocation, IPv6 /64 with 10,000 excludes".into(),
        ours,
        baseline,
    });

    // 3. Filling a /16 one allocation at a time.
    let slash16 = range("10.0.0.0/16", vec![]);
    let base16 = Baseline::new(&slash16);
    let capacity = slash16.pool(std::iter::empty()).capacity() as usize;
    let t = Instant::now();
    let mut pool = slash16.pool(std::iter::empty());
    let mut ours_sequence = Vec::with_capacity(capacity);
    while let Some(a) = pool.lowest_free() {
        pool.claim(a);
        ours_sequence.push(a);
    }
    let ours = t.elapsed();
    eprintln!("filling a /16 with the baseline (quadratic: this takes a while)…");
    let t = Instant::now();
    let mut reserved = HashMap::with_capacity(capacity);
    let mut count = 0;
    while let Some(a) = base16.next(&reserved) {
        reserved.insert(to_ip(false, a).to_string(), true);
        assert_eq!(ours_sequence[count], a, "the two allocators disagree");
        count += 1;
    }
    let baseline = t.elapsed();
    assert_eq!(count, capacity);
    rows.push(Row {
        case: format!("fill a /16, one allocation at a time ({capacity} allocations)"),
        ours,
        baseline,
    });

    // 4. The same fill through the store contract (read pool → decide → conditional write),
    //    as the component runs it, over the in-memory store: the whole ADD path minus wasm.
    let network = NetworkConfig {
        range: Some(RangeConfig { range: "10.0.0.0/20".into(), ..Default::default() }),
        enable_overlapping_ranges: false,
        ..Default::default()
    };
    let t = Instant::now();
    let mut store = MemoryStore::new();
    for i in 0..4094 - 15 {
        let request = AllocateRequest {
            owner: Owner::new(&format!("c{i}"), "eth0", ""),
            ..Default::default()
        };
        allocate(&mut store, &network, &request).unwrap();
    }
    let through_store = t.elapsed();

    c.final_summary();
    println!();
    println!("{:<62} {:>14} {:>14} {:>10}", "case", "ours", "baseline", "speed-up");
    for row in &rows {
        println!(
            "{:<62} {:>14} {:>14} {:>9.0}x",
            row.case,
            format!("{:.3?}", row.ours),
            format!("{:.3?}", row.baseline),
            row.baseline.as_secs_f64() / row.ours.as_secs_f64().max(1e-9)
        );
    }
    println!(
        "fill a /20 through the store contract (4079 ADDs, each re-reading the pool): {:.3?} ({:.1?} per ADD)",
        through_store,
        through_store / 4079
    );
}
