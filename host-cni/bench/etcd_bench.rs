//! Benchmark of the etcd store: ADD/s and ADD latency (p50/p99) with 1, 4 and 16 concurrent
//! clients on one pool (and on 16 pools), and the ADD's median against the pool's size (1,000,
//! 10,000 and 60,000 allocations), each printed beside its baseline.
//!
//! In process, each ADD opens a fresh store and allocator (a new etcd connection, the cached
//! component deserialised), as a fresh CNI process does; only the process spawn is left out.
//! With `HEREABOUTS_BENCH_BINS="NAME=PATH …"` the same scenarios also run with a fresh plugin
//! process per call (CNI environment and stdin, as a runtime calls it) for each binary — for
//! instance the previous release, whose layout keeps one key per allocation and reads the whole
//! pool on every ADD. Pools of a given size are written in the previous layout (which both
//! versions read; ours upgrades it with its first commit, outside the timings).
//!
//! Run with `host-cni/bench/etcd.sh` (starts a private etcd); compiled into the `etcd` test
//! target and run as its ignored test `bench_stores`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hereabouts_host::bindings::{AllocateRequest, Owner};
use serde_json::{Value, json};

use crate::support::*;

/// ADDs per concurrency scenario, spread over the clients (in process; processes do half).
const TOTAL: usize = 480;
/// ADD + DEL rounds per pool size.
const ROUNDS: usize = 100;
const SIZES: [u32; 3] = [1_000, 10_000, 60_000];

/// A row of the previous layout's figures (docs/benchmarks.md, `host-cni/bench/etcd.sh` then),
/// in process.
struct Before {
    pools: usize,
    clients: usize,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

const fn before(pools: usize, clients: usize, per_second: f64, p50_ms: f64, p99_ms: f64) -> Before {
    Before { pools, clients, per_second, p50_ms, p99_ms }
}

const BEFORE: [Before; 6] = [
    before(1, 1, 243.0, 2.60, 8.9),
    before(1, 4, 185.0, 15.3, 106.0),
    before(1, 16, 81.0, 112.0, 1058.0),
    before(16, 1, 334.0, 2.18, 13.5),
    before(16, 4, 500.0, 6.75, 23.3),
    before(16, 16, 507.0, 25.4, 86.4),
];

/// Who makes the calls: this process (fresh store and allocator per call) or a plugin binary.
#[derive(Clone)]
enum Caller {
    InProcess,
    Binary { name: String, path: String },
}

impl Caller {
    fn name(&self) -> String {
        match self {
            Caller::InProcess => "in process".into(),
            Caller::Binary { name, .. } => format!("{name} (processes)"),
        }
    }

    /// One ADD or DEL; panics on failure (a benchmark of errors measures nothing).
    fn call(&self, verb: &str, ipam: &Value, id: &str) {
        match self {
            Caller::InProcess => {
                // As the plugin does: open the store, load the component, read the config.
                let mut alloc = allocator(ipam).expect("etcd");
                let network = alloc.read_config(&ipam.to_string()).expect("config").network;
                let owner = bench_owner(id);
                if verb == "ADD" {
                    let request = AllocateRequest { owner, requested: vec![] };
                    alloc.allocate(&network, &request).expect("ADD");
                } else {
                    alloc.release(&network, &owner).expect("DEL");
                }
            }
            Caller::Binary { path, .. } => {
                let config = json!({"cniVersion": "1.0.0", "name": CNI_NETWORK, "type": "bridge", "ipam": ipam});
                let mut child = Command::new(path)
                    .env("CNI_COMMAND", verb)
                    .env("CNI_CONTAINERID", id)
                    .env("CNI_NETNS", format!("/var/run/netns/{id}"))
                    .env("CNI_IFNAME", "eth0")
                    .env("CNI_PATH", "/usr/lib/cni")
                    .env("CNI_ARGS", format!("K8S_POD_NAMESPACE=bench;K8S_POD_NAME={id}"))
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("the plugin binary");
                use std::io::Write;
                child.stdin.take().unwrap().write_all(config.to_string().as_bytes()).unwrap();
                let out = child.wait_with_output().unwrap();
                assert!(
                    out.status.success(),
                    "{verb} {id} with {path}: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
    }
}

fn bench_owner(id: &str) -> Owner {
    Owner {
        container_id: id.into(),
        ifname: "eth0".into(),
        podref: format!("bench/{id}"),
        cni_network: CNI_NETWORK.into(),
    }
}

struct Stats {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

fn stats(mut latencies: Vec<Duration>, wall: Duration) -> Stats {
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    Stats {
        per_second: latencies.len() as f64 / wall.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `clients` clients making `total` ADDs on `pools` pools (ADD i of client c goes to pool
/// (c + i) mod pools; pool p is 10.{100+p}.0.0/22, room for every ADD).
fn concurrency(
    caller: &Caller,
    endpoints: &str,
    tag: &str,
    pools: usize,
    clients: usize,
    total: usize,
) -> Stats {
    let prefix = unique_prefix(&format!("bench-{tag}-{pools}-{clients}"));
    let ipams: Vec<Value> = (0..pools)
        .map(|p| ipam_value(endpoints, &prefix, &format!("10.{}.0.0/22", 100 + p), json!({})))
        .collect();
    let per_client = total / clients;
    let started = Instant::now();
    let latencies: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let ipams = &ipams;
                scope.spawn(move || {
                    (0..per_client)
                        .map(|i| {
                            let ipam = &ipams[(c + i) % pools];
                            let t0 = Instant::now();
                            caller.call("ADD", ipam, &format!("c{c:02}-{i:04}"));
                            t0.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    stats(latencies, started.elapsed())
}

/// ADD and DEL medians with the pool holding `size` allocations (of the previous layout, then
/// upgraded by a first DEL outside the timings): each round ADDs a new container, which gets
/// the lowest free address, and DELs it again.
fn by_size(
    caller: &Caller,
    endpoints: &str,
    tag: &str,
    size: u32,
    rounds: usize,
) -> (Duration, Duration, Duration) {
    let prefix = unique_prefix(&format!("bench-size-{tag}-{size}"));
    let (range, name) = ("10.60.0.0/16", "10.60.0.0-16");
    let ipam = ipam_value(endpoints, &prefix, range, json!({"etcd_request_timeout": "20s"}));
    let raw = Raw::connect(endpoints);
    let slots: Vec<(u32, Owner)> = (1..=size).map(|i| (i, large_owner(i))).collect();
    write_previous_layout(&raw, &prefix, name, range, &slots);
    // Free one address in the middle, so each ADD has a hole to fill (and, with our plugin,
    // the upgrade happens: outside the timings). A DEL needs only the container id.
    caller.call("DEL", &ipam, &large_owner(size / 2).container_id);
    let mut adds = Vec::with_capacity(rounds);
    let mut dels = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let id = format!("size-{i:04}");
        let t0 = Instant::now();
        caller.call("ADD", &ipam, &id);
        adds.push(t0.elapsed());
        let t0 = Instant::now();
        caller.call("DEL", &ipam, &id);
        dels.push(t0.elapsed());
    }
    adds.sort();
    dels.sort();
    let p = |v: &[Duration], q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    (p(&adds, 0.5), p(&adds, 0.99), p(&dels, 0.5))
}

fn callers() -> Vec<Caller> {
    let mut callers = vec![Caller::InProcess];
    for item in env("HEREABOUTS_BENCH_BINS").unwrap_or_default().split_whitespace() {
        let (name, path) = item.split_once('=').expect("HEREABOUTS_BENCH_BINS: NAME=PATH …");
        callers.push(Caller::Binary { name: name.into(), path: path.into() });
    }
    callers
}

/// Runs every scenario and prints Markdown tables.
pub fn run(endpoints: &str) {
    // Warm the component cache and the connection path once.
    let warm = ipam_value(endpoints, &unique_prefix("bench-warm"), "10.99.0.0/24", json!({}));
    Caller::InProcess.call("ADD", &warm, "warm");

    let mut rows = Vec::new();
    for (k, caller) in callers().iter().enumerate() {
        let total = if matches!(caller, Caller::InProcess) { TOTAL } else { TOTAL / 2 };
        for pools in [1, 16] {
            for clients in [1, 4, 16] {
                let s = concurrency(caller, endpoints, &format!("{k}"), pools, clients, total);
                eprintln!(
                    "{:>24} pools={pools:2} clients={clients:2}: {:7.1} ADD/s  p50 {:7.2} ms  p99 {:7.2} ms",
                    caller.name(),
                    s.per_second,
                    ms(s.p50),
                    ms(s.p99)
                );
                rows.push((caller.name(), matches!(caller, Caller::InProcess), pools, clients, s));
            }
        }
    }
    println!("\n### ADD throughput and latency\n");
    println!(
        "{TOTAL} ADDs per row in process, {} per row through processes. `before`: the previous layout, same method (docs/benchmarks.md).\n",
        TOTAL / 2
    );
    println!(
        "| caller | pools | clients | ADD/s | p50 ms | p99 ms | before: ADD/s | p50 ms | p99 ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, in_process, pools, clients, s) in &rows {
        let before = BEFORE
            .iter()
            .find(|b| *in_process && (b.pools, b.clients) == (*pools, *clients))
            .map(|b| format!("{:.0} | {:.2} | {:.1}", b.per_second, b.p50_ms, b.p99_ms))
            .unwrap_or_else(|| "| |".into());
        println!(
            "| {name} | {pools} | {clients} | {:.0} | {:.2} | {:.1} | {before} |",
            s.per_second,
            ms(s.p50),
            ms(s.p99)
        );
    }

    println!("\n### ADD against the pool's size\n");
    println!(
        "{ROUNDS} rounds of ADD + DEL per size in process, {} through processes; the pool holds the size's allocations (64-character container ids) plus the round's own.\n",
        ROUNDS / 2
    );
    println!(
        "| caller | allocations | ADD p50 ms | ADD p99 ms | DEL p50 ms | ADD p50 ÷ at 1,000 |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (k, caller) in callers().iter().enumerate() {
        let rounds = if matches!(caller, Caller::InProcess) { ROUNDS } else { ROUNDS / 2 };
        let mut first = None;
        for size in SIZES {
            let (add50, add99, del50) = by_size(caller, endpoints, &format!("{k}"), size, rounds);
            let base = *first.get_or_insert(add50);
            eprintln!(
                "{:>24} size={size:6}: ADD p50 {:7.2} ms  p99 {:7.2} ms  DEL p50 {:7.2} ms",
                caller.name(),
                ms(add50),
                ms(add99),
                ms(del50)
            );
            println!(
                "| {} | {size} | {:.2} | {:.2} | {:.2} | {:.2}× |",
                caller.name(),
                ms(add50),
                ms(add99),
                ms(del50),
                add50.as_secs_f64() / base.as_secs_f64()
            );
        }
    }
}
