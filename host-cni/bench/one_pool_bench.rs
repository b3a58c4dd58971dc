//! One network on many nodes without node slices (issue 23): R runtimes each making 30 ADDs
//! with a fresh plugin process per ADD, all on one pool, beside the same runtimes on one pool
//! each, in the same run and for each binary given (`HEREABOUTS_BENCH_BINS="NAME=PATH …"`).
//! Prints ADD/s, p50, p99 and the commits each ADD attempted (from the plugin's `allocated`
//! log line; a binary that does not log them shows "–").
//!
//! Run with `host-cni/bench/one-pool.sh NAME=BIN …` (starts a private etcd); compiled into the
//! `etcd` test target and run as its ignored test `bench_one_pool`.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

const ADDS_PER_RUNTIME: usize = 30;
const RUNTIMES: [usize; 3] = [4, 8, 16];

struct Row {
    binary: String,
    runtimes: usize,
    pools: &'static str,
    per_second: f64,
    p50: Duration,
    p99: Duration,
    /// Commits attempted per ADD, when the binary logs them.
    commits: Option<(f64, u32)>,
}

/// One ADD through a fresh process; returns its latency and the commits it logged.
fn add(path: &str, ipam: &Value, id: &str) -> (Duration, Option<u32>) {
    let config =
        json!({"cniVersion": "1.0.0", "name": CNI_NETWORK, "type": "bridge", "ipam": ipam});
    let t0 = Instant::now();
    let mut child = Command::new(path)
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", format!("/var/run/netns/{id}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .env("CNI_ARGS", format!("K8S_POD_NAMESPACE=bench;K8S_POD_NAME={id}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the plugin binary");
    child.stdin.take().unwrap().write_all(config.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let elapsed = t0.elapsed();
    assert!(out.status.success(), "ADD {id} with {path}: {}", String::from_utf8_lossy(&out.stdout));
    let log = String::from_utf8_lossy(&out.stderr);
    let commits = log
        .lines()
        .filter(|l| l.contains("allocated"))
        .find_map(|l| l.split("commits=").nth(1)?.split_whitespace().next()?.parse().ok());
    (elapsed, commits)
}

/// `runtimes` threads, each making its ADDs one after another; `one_pool`: all on
/// 10.100.0.0/20, else runtime r on its own 10.{100+r}.0.0/24.
fn run_once(binary: &(String, String), endpoints: &str, runtimes: usize, one_pool: bool) -> Row {
    let prefix = unique_prefix(&format!("one-pool-{}-{runtimes}-{one_pool}", binary.0));
    let extra = json!({"log_level": "verbose"});
    let ipams: Vec<Value> = (0..runtimes)
        .map(|r| {
            let range = if one_pool {
                "10.100.0.0/20".to_string()
            } else {
                format!("10.{}.0.0/24", 100 + r)
            };
            ipam_value(endpoints, &prefix, &range, extra.clone())
        })
        .collect();
    let started = Instant::now();
    let results: Vec<(Duration, Option<u32>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..runtimes)
            .map(|r| {
                let ipam = &ipams[r];
                scope.spawn(move || {
                    (0..ADDS_PER_RUNTIME)
                        .map(|i| add(&binary.1, ipam, &format!("r{r:02}-{i:04}")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let wall = started.elapsed();
    let mut latencies: Vec<Duration> = results.iter().map(|r| r.0).collect();
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    let counted: Vec<u32> = results.iter().filter_map(|r| r.1).collect();
    let commits = (counted.len() == results.len()).then(|| {
        let mean = counted.iter().sum::<u32>() as f64 / counted.len() as f64;
        (mean, *counted.iter().max().unwrap())
    });
    Row {
        binary: binary.0.clone(),
        runtimes,
        pools: if one_pool { "one pool" } else { "one pool each" },
        per_second: latencies.len() as f64 / wall.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        commits,
    }
}

pub fn run(endpoints: &str) {
    let binaries: Vec<(String, String)> = env("HEREABOUTS_BENCH_BINS")
        .unwrap_or_default()
        .split_whitespace()
        .map(|item| {
            let (name, path) = item.split_once('=').expect("HEREABOUTS_BENCH_BINS: NAME=PATH …");
            (name.to_string(), path.to_string())
        })
        .collect();
    assert!(!binaries.is_empty(), "HEREABOUTS_BENCH_BINS names no binary");
    // Warm each binary's component cache.
    for binary in &binaries {
        let warm =
            ipam_value(endpoints, &unique_prefix("one-pool-warm"), "10.99.0.0/24", json!({}));
        add(&binary.1, &warm, &format!("warm-{}", binary.0));
    }
    let mut rows = Vec::new();
    for runtimes in RUNTIMES {
        for binary in &binaries {
            for one_pool in [true, false] {
                let row = run_once(binary, endpoints, runtimes, one_pool);
                eprintln!(
                    "{:>10} runtimes={runtimes:2} {:>13}: {:6.1} ADD/s  p50 {:7.2} ms  p99 {:7.2} ms",
                    row.binary,
                    row.pools,
                    row.per_second,
                    row.p50.as_secs_f64() * 1e3,
                    row.p99.as_secs_f64() * 1e3
                );
                rows.push(row);
            }
        }
    }
    println!(
        "\n### One pool against one pool each ({ADDS_PER_RUNTIME} fresh-process ADDs per runtime)\n"
    );
    println!(
        "| binary | runtimes | pools | ADD/s | p50 ms | p99 ms | commits per ADD (mean / max) | one pool ÷ one each: rate | p99 |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|");
    for (i, row) in rows.iter().enumerate() {
        let ratio = if row.pools == "one pool" {
            let each = &rows[i + 1];
            format!(
                "{:.2}× | {:.2}×",
                row.per_second / each.per_second,
                row.p99.as_secs_f64() / each.p99.as_secs_f64()
            )
        } else {
            " | ".into()
        };
        println!(
            "| {} | {} | {} | {:.0} | {:.1} | {:.1} | {} | {ratio} |",
            row.binary,
            row.runtimes,
            row.pools,
            row.per_second,
            row.p50.as_secs_f64() * 1e3,
            row.p99.as_secs_f64() * 1e3,
            row.commits.map(|(m, x)| format!("{m:.2} / {x}")).unwrap_or_else(|| "–".into())
        );
    }
}
