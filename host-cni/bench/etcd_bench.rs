//! Benchmark: allocations per second and ADD latency (p50/p99) over the etcd store, beside the
//! embedded local store, with 1, 4 and 16 concurrent clients on one pool and on 16 pools.
//!
//! Each ADD opens a fresh store and allocator (a new etcd connection, the cached component
//! deserialised), as a fresh CNI process does; only the process spawn itself is left out.
//! Run with `host-cni/bench/etcd.sh` (starts a private etcd); compiled into the `etcd` test
//! target and run as its ignored test `bench_stores`.

use std::time::{Duration, Instant};

use hereabouts_host::Backend;
use hereabouts_host::bindings::{AllocateRequest, Owner};
use hereabouts_host::config::IpamConfig;
use hereabouts_host::runtime::Allocator;
use serde_json::json;

/// ADDs per scenario, spread over the clients.
const TOTAL: usize = 480;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Etcd,
    Local,
}

struct Row {
    store: &'static str,
    clients: usize,
    pools: usize,
    per_second: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn open(kind: Kind, config: &IpamConfig) -> Box<dyn Backend> {
    match kind {
        Kind::Etcd => Box::new(hereabouts_stores::etcd::open(config).expect("etcd")),
        Kind::Local => Box::new(
            hereabouts_stores::local::LocalStore::open(&config.data_dir()).expect("local store"),
        ),
    }
}

fn scenario(
    kind: Kind,
    endpoints: &str,
    scratch: &std::path::Path,
    clients: usize,
    pools: usize,
    tag: &str,
) -> Row {
    let prefix = format!("/hereabouts-bench/{tag}-{clients}-{pools}-{}/", std::process::id());
    let data_dir = scratch.join(format!("{tag}-{clients}-{pools}"));
    // Pool p is 10.{100+p}.0.0/22 (1,022 addresses: room for every ADD of the scenario).
    let configs: Vec<IpamConfig> = (0..pools)
        .map(|p| {
            IpamConfig::from_value(
                &json!({"type": "hereabouts", "range": format!("10.{}.0.0/22", 100 + p),
                "etcd_host": endpoints, "etcd_prefix": prefix, "data_dir": data_dir}),
            )
            .unwrap()
        })
        .collect();
    let cache = hereabouts_host::runtime::default_cache_dir();
    let per_client = TOTAL / clients;
    let started = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let (configs, cache) = (&configs, &cache);
                scope.spawn(move || {
                    let mut lat = Vec::with_capacity(per_client);
                    for i in 0..per_client {
                        let config = &configs[(c + i) % pools];
                        let owner = Owner {
                            container_id: format!("{c:02}-{i:04}-{tag}"),
                            ifname: "eth0".into(),
                            podref: format!("bench/pod-{c}-{i}"),
                        };
                        let request = AllocateRequest { owner, requested: vec![], sticky: false };
                        let t0 = Instant::now();
                        let mut alloc =
                            Allocator::with_cache(open(kind, config), Some(cache)).unwrap();
                        alloc.allocate(&config.network_config(), &request).expect("ADD");
                        lat.push(t0.elapsed());
                    }
                    lat
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let wall = started.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    let _ = std::fs::remove_dir_all(&data_dir);
    Row {
        store: if kind == Kind::Etcd { "etcd" } else { "local" },
        clients,
        pools,
        per_second: latencies.len() as f64 / wall.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        max: *latencies.last().unwrap(),
    }
}

/// Runs every scenario and prints a Markdown table.
pub fn run(endpoints: &str) {
    let scratch = std::env::temp_dir().join(format!("hereabouts-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let mut rows = Vec::new();
    for kind in [Kind::Etcd, Kind::Local] {
        for pools in [1, 16] {
            for clients in [1, 4, 16] {
                let row = scenario(
                    kind,
                    endpoints,
                    &scratch,
                    clients,
                    pools,
                    if kind == Kind::Etcd { "e" } else { "l" },
                );
                eprintln!(
                    "{:5} clients={:2} pools={:2}: {:7.1} ADD/s  p50 {:6.2} ms  p99 {:6.2} ms",
                    row.store,
                    row.clients,
                    row.pools,
                    row.per_second,
                    row.p50.as_secs_f64() * 1e3,
                    row.p99.as_secs_f64() * 1e3
                );
                rows.push(row);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    println!(
        "\n{TOTAL} ADDs per scenario; each ADD opens its store and allocator afresh (as a CNI process).\n"
    );
    println!("| store | pools | clients | ADD/s | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.1} |",
            r.store,
            r.pools,
            r.clients,
            r.per_second,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.max.as_secs_f64() * 1e3
        );
    }
}
