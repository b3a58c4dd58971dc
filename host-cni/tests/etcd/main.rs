//! The etcd store against a real etcd: contention between processes, faults, large pools, bad
//! data, TLS and auth, a three-member cluster. Each test that needs an etcd is
//! `#[ignore = "needs etcd"]`: `run.sh` beside this file starts the etcds, sets the environment
//! and runs them with `--ignored`; run that way without the environment, they fail.
//!
//! Environment (set by run.sh):
//! - `HEREABOUTS_ETCD_ENDPOINTS`: the private single-node etcd (comma-separated).
//! - `HEREABOUTS_ETCD_CTL`: a script taking `stop` / `start` for that etcd (fault test).
//! - `HEREABOUTS_ETCD_TLS_ENDPOINT`, `HEREABOUTS_ETCD_TLS_DIR`: an etcd with TLS, client
//!   certificates and password auth (user `root`, password `s3cret`); the dir holds `ca.pem`,
//!   `other-ca.pem`, `client.pem`, `client-key.pem`.
//! - `HEREABOUTS_ETCD_CLUSTER_ENDPOINTS`: three members, one of them stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hereabouts_host::Backend;
use hereabouts_host::bindings::{
    AllocateRequest, NetworkConfig, Owner, PoolEdit, PoolRef, Slot, StoreError,
};
use hereabouts_host::config::IpamConfig;
use hereabouts_host::error::{CniError, Code};
use hereabouts_host::runtime::Allocator;
use hereabouts_stores::etcd::{EtcdConfig, EtcdStore};
use serde_json::{Value, json};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// An environment variable run.sh sets; a test that needs it fails without it.
fn needed(name: &str) -> String {
    env(name).unwrap_or_else(|| {
        panic!("{name} is not set: this test needs an etcd; run host-cni/tests/etcd/run.sh")
    })
}

/// The single-node etcd run.sh started.
fn endpoints() -> String {
    needed("HEREABOUTS_ETCD_ENDPOINTS")
}

/// `$HEREABOUTS_CACHE_DIR` (run.sh points it into its temporary directory), else a temp dir.
fn cache_dir() -> std::path::PathBuf {
    match env("HEREABOUTS_CACHE_DIR") {
        Some(dir) => dir.into(),
        None => std::env::temp_dir().join("hereabouts-etcd-test-cache"),
    }
}

/// An ipam section for the etcd store; `prefix` isolates each test's keys.
fn ipam(endpoints: &str, prefix: &str, range: &str, extra: Value) -> IpamConfig {
    let mut value = json!({"type": "hereabouts", "range": range, "etcd_host": endpoints,
        "etcd_prefix": prefix, "etcd_dial_timeout": "1s", "etcd_request_timeout": "3s"});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        value[k] = v;
    }
    IpamConfig::from_value(&value).unwrap()
}

fn store(config: &IpamConfig) -> EtcdStore {
    EtcdStore::connect(EtcdConfig::from_ipam(config).unwrap()).unwrap()
}

fn allocator(config: &IpamConfig) -> Result<Allocator, CniError> {
    let backend = hereabouts_stores::etcd::open(config)?;
    Ok(Allocator::with_cache(Box::new(backend), Some(&cache_dir())).unwrap())
}

fn owner(id: &str) -> Owner {
    Owner { container_id: id.to_string(), ifname: "eth0".into(), podref: format!("default/{id}") }
}

fn add(alloc: &mut Allocator, network: &NetworkConfig, id: &str) -> Result<String, CniError> {
    let request = AllocateRequest { owner: owner(id), requested: vec![], sticky: false };
    match alloc.allocate(network, &request) {
        Ok(leases) => Ok(leases[0].address.clone()),
        Err(e) => Err(CniError::from(e)),
    }
}

fn pool_ref(name: &str, range: &str) -> PoolRef {
    PoolRef { name: name.into(), range: range.into(), network_name: String::new() }
}

/// The lowest `n` allocatable addresses of an IPv4 range: from network + 1 upward, never an
/// address ending in .0 (nor the broadcast; the tests stay far below it).
fn lowest(range: &str, n: usize) -> BTreeSet<String> {
    let (base, _) = range.split_once('/').unwrap();
    let base: std::net::Ipv4Addr = base.parse().unwrap();
    (u32::from(base) + 1..)
        .map(std::net::Ipv4Addr::from)
        .filter(|a| a.octets()[3] != 0)
        .take(n)
        .map(|a| a.to_string())
        .collect()
}

/// Compares address sets without printing thousands of them.
fn assert_same(got: &BTreeSet<String>, want: &BTreeSet<String>, what: &str) {
    let extra: Vec<_> = got.difference(want).take(5).collect();
    let missing: Vec<_> = want.difference(got).take(5).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{what}: unexpected {extra:?}…, missing {missing:?}…"
    );
}

fn etcdctl(endpoints: &str, args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoints)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn unique_prefix(test: &str) -> String {
    format!(
        "/hereabouts-test/{test}-{}-{}/",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    )
}

// ---------------------------------------------------------------------------------------------
// Worker processes: the test binary re-executes itself (`--exact worker -- …`), so contention
// and kill -9 happen between real processes, each with its own client, as on separate nodes.
// ---------------------------------------------------------------------------------------------

/// A worker: `HEREABOUTS_ETCD_WORKER` = JSON {config, name, count, retry_unavailable}. For each
/// container `{name}-{i}` it opens a fresh store and allocator (as a fresh CNI process would),
/// ADDs, and prints `ok ID ADDRESS` or `err CODE ID MSG`; with retry_unavailable it retries an
/// error 11 after 100 ms, as a runtime would.
#[test]
#[ignore = "a child process of the contention and fault tests, which start it"]
fn worker() {
    let spec = needed("HEREABOUTS_ETCD_WORKER");
    let spec: Value = serde_json::from_str(&spec).unwrap();
    let config = IpamConfig::from_value(&spec["config"]).unwrap();
    let network = config.network_config();
    let name = spec["name"].as_str().unwrap();
    let count = spec["count"].as_u64().unwrap();
    let retry = spec["retry_unavailable"].as_bool().unwrap_or(false);
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for i in 0..count {
        let id = format!("{name}-{i}");
        loop {
            let result = allocator(&config).and_then(|mut a| add(&mut a, &network, &id));
            match result {
                Ok(address) => {
                    writeln!(out, "ok {id} {address}").unwrap();
                    break;
                }
                Err(e) => {
                    writeln!(out, "err {} {id} {}", e.code, e.msg.replace('\n', " ")).unwrap();
                    out.flush().unwrap();
                    if !(retry && e.code == Code::TryAgainLater) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        out.flush().unwrap();
    }
}

fn spawn_worker(
    config: &Value,
    name: &str,
    count: u32,
    retry_unavailable: bool,
) -> std::process::Child {
    let spec = json!({"config": config, "name": name, "count": count, "retry_unavailable": retry_unavailable});
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "worker", "--ignored", "--nocapture", "--test-threads", "1", "--quiet"])
        .env("HEREABOUTS_ETCD_WORKER", spec.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Container id → address.
type Successes = BTreeMap<String, String>;
/// (CNI code, container id, message).
type Failures = Vec<(u32, String, String)>;

/// Parses a worker's output lines: what succeeded and what failed.
fn parse_worker(output: &str) -> (Successes, Failures) {
    let mut ok = BTreeMap::new();
    let mut errors = Vec::new();
    for line in output.lines() {
        let parts: Vec<&str> = line.splitn(4, ' ').collect();
        match parts.as_slice() {
            ["ok", id, address] => {
                ok.insert(id.to_string(), address.to_string());
            }
            ["err", code, id, msg] => {
                errors.push((code.parse().unwrap(), id.to_string(), msg.to_string()))
            }
            _ => {}
        }
    }
    (ok, errors)
}

fn ipam_value(endpoints: &str, prefix: &str, range: &str) -> Value {
    json!({"type": "hereabouts", "range": range, "etcd_host": endpoints, "etcd_prefix": prefix,
        "etcd_dial_timeout": "1s", "etcd_request_timeout": "2s"})
}

/// 8 processes × 200 ADDs on one /20: exactly 1,600 distinct addresses, the lowest 1,600
/// allocatable; then DELs from 8 processes leave the pool empty.
#[test]
#[ignore = "needs etcd"]
fn contention_8_processes_200_adds_each() {
    let endpoints = endpoints();
    let prefix = unique_prefix("contention");
    let range = "10.10.0.0/20";
    let value = ipam_value(&endpoints, &prefix, range);
    let started = Instant::now();
    let children: Vec<_> =
        (0..8).map(|n| spawn_worker(&value, &format!("node{n}"), 200, false)).collect();
    let mut got = BTreeMap::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let (ok, errors) = parse_worker(&String::from_utf8_lossy(&out.stdout));
        assert!(errors.is_empty(), "worker errors: {errors:?}");
        got.extend(ok);
    }
    let elapsed = started.elapsed();
    assert_eq!(got.len(), 1600);
    let distinct: BTreeSet<_> = got.values().cloned().collect();
    assert_eq!(distinct.len(), 1600, "duplicate addresses handed out");
    let config = IpamConfig::from_value(&value).unwrap();
    let network = config.network_config();
    assert_same(&distinct, &lowest(range, 1600), "not the lowest 1,600 allocatable addresses");
    // The store agrees with what the processes were told.
    let mut s = store(&config);
    let snapshot = s.read_pool(&pool_ref("10.10.0.0-20", range)).unwrap();
    assert_eq!(snapshot.slots.len(), 1600);
    eprintln!(
        "contention: 1600 ADDs from 8 processes in {:.2} s ({:.0}/s)",
        elapsed.as_secs_f64(),
        1600.0 / elapsed.as_secs_f64()
    );

    // DELs, 8 threads (one allocator each) over the 1,600 containers.
    let ids: Vec<String> = got.keys().cloned().collect();
    std::thread::scope(|scope| {
        for chunk in ids.chunks(200) {
            let config = config.clone();
            let network = network.clone();
            scope.spawn(move || {
                let mut a = allocator(&config).unwrap();
                for id in chunk {
                    a.release(&network, &owner(id)).unwrap();
                }
            });
        }
    });
    let snapshot = s.read_pool(&pool_ref("10.10.0.0-20", range)).unwrap();
    assert!(snapshot.slots.is_empty(), "{} allocations left after all DELs", snapshot.slots.len());
    assert!(
        etcdctl(&endpoints, &["get", "--prefix", "--keys-only", &format!("{prefix}reservations/")])
            .trim()
            .is_empty()
    );
}

/// kill -9 of worker processes mid-run, and etcd stopped and restarted mid-run: callers get
/// error 11 while it is down and succeed after; in the end no address is held twice and every
/// allocation belongs to a container the runtime knows (its in-flight ADDs are DELed, as a
/// runtime does after a failed ADD).
#[test]
#[ignore = "needs etcd"]
fn faults_kill_9_and_etcd_restart() {
    let endpoints = endpoints();
    let ctl = needed("HEREABOUTS_ETCD_CTL");
    let prefix = unique_prefix("faults");
    let range = "10.11.0.0/22";
    let value = ipam_value(&endpoints, &prefix, range);
    let config = IpamConfig::from_value(&value).unwrap();
    let network = config.network_config();
    let mut children: Vec<(String, std::process::Child)> = (0..6)
        .map(|n| (format!("w{n}"), spawn_worker(&value, &format!("w{n}"), 60, true)))
        .collect();

    // Read every worker's lines as they come, so a killed one's output is not lost.
    let (tx, rx) = std::sync::mpsc::channel::<(String, String)>();
    for (name, child) in children.iter_mut() {
        let stdout = child.stdout.take().unwrap();
        let tx = tx.clone();
        let name = name.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send((name.clone(), line));
            }
        });
    }
    drop(tx);

    // Kill two workers with SIGKILL at pseudo-random moments.
    let seed = std::process::id() as u64;
    std::thread::sleep(Duration::from_millis(300 + seed % 400));
    let victims = [(seed % 3) as usize, 3 + (seed / 3 % 3) as usize];
    for &v in &victims {
        children[v].1.kill().unwrap(); // SIGKILL
        std::thread::sleep(Duration::from_millis(150 + seed % 200));
    }

    // Stop etcd mid-run; a fresh caller must get error 11 quickly.
    let run = |action: &str| {
        let status = Command::new("bash").arg(&ctl).arg(action).status().unwrap();
        assert!(status.success(), "{ctl} {action}");
    };
    run("stop");
    let t0 = Instant::now();
    let down = allocator(&config).and_then(|mut a| add(&mut a, &network, "probe-while-down"));
    let waited = t0.elapsed();
    let error = down.expect_err("an ADD succeeded with etcd down");
    assert_eq!(error.code, Code::TryAgainLater, "{error:?}");
    assert!(waited < Duration::from_secs(3), "error 11 took {waited:?}");
    eprintln!("faults: with etcd down, ADD failed with 11 in {waited:?}: {}", error.msg);
    std::thread::sleep(Duration::from_secs(2));
    run("start");

    for (_, child) in children.iter_mut() {
        let _ = child.wait();
    }
    let mut ok = BTreeMap::new();
    let mut errors = Vec::new();
    for (_, line) in rx.iter() {
        let (o, e) = parse_worker(&line);
        ok.extend(o);
        errors.extend(e);
    }
    let elevens = errors.iter().filter(|(c, _, _)| *c == 11).count();
    assert!(errors.iter().all(|(c, _, _)| *c == 11), "errors other than 11: {errors:?}");
    assert!(elevens > 0, "no caller saw error 11 while etcd was down");
    eprintln!(
        "faults: {} ADDs succeeded, {elevens} answered 11 while etcd was down, workers killed: {victims:?}",
        ok.len()
    );

    // The runtime DELs every ADD it did not see succeed: the killed workers' in-flight ones.
    let mut a = allocator(&config).unwrap();
    for &v in &victims {
        let name = format!("w{v}");
        let done = ok.keys().filter(|id| id.starts_with(&format!("{name}-"))).count();
        a.release(&network, &owner(&format!("{name}-{done}"))).unwrap();
    }
    let leases = a.list_leases(&network).unwrap();
    let mut by_address = BTreeMap::new();
    for held in &leases {
        assert!(
            by_address
                .insert(held.lease.address.clone(), held.owner.container_id.clone())
                .is_none(),
            "address held twice"
        );
    }
    let holders: BTreeMap<String, String> =
        leases.iter().map(|h| (h.owner.container_id.clone(), h.lease.address.clone())).collect();
    assert_eq!(holders.len(), leases.len(), "a container holds two addresses");
    let lost: Vec<_> = ok.keys().filter(|id| !holders.contains_key(*id)).take(5).collect();
    let orphaned: Vec<_> = holders.keys().filter(|id| !ok.contains_key(*id)).take(5).collect();
    assert!(
        lost.is_empty() && orphaned.is_empty(),
        "lost allocations {lost:?}, orphaned {orphaned:?}"
    );
    assert!(
        ok.iter().all(|(id, address)| holders[id] == *address),
        "a caller was told another address than stored"
    );
    let survivors = 6 - victims.len();
    assert!(ok.len() >= survivors * 60, "surviving workers did not finish");
}

/// A /16 with 65,534 allocations (64-character container ids, as runtimes make them): every
/// request stays far below etcd's 1.5 MiB limit; reading it works; the allocator reports the
/// pool exhausted, and a released address is handed out again.
#[test]
#[ignore = "needs etcd"]
fn large_pool_65534_allocations() {
    let endpoints = endpoints();
    let prefix = unique_prefix("large");
    let range = "10.20.0.0/16";
    let config = ipam(&endpoints, &prefix, range, json!({}));
    let network = config.network_config();
    let mut s = store(&config);
    let pool = pool_ref("10.20.0.0-16", range);
    let db_before = db_size(&endpoints);
    let id = |i: u32| format!("{:064x}", (i as u128) * 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    let edits: Vec<PoolEdit> = (1..=65534u32)
        .map(|offset| {
            PoolEdit::Claim(Slot {
                offset: offset.to_string(),
                owner: Owner {
                    container_id: id(offset),
                    ifname: "eth0".into(),
                    podref: format!("team-a/web-{offset:05}"),
                },
            })
        })
        .collect();
    let t0 = Instant::now();
    s.write_pool(&pool, "", &edits).unwrap();
    let write = t0.elapsed();
    let t0 = Instant::now();
    let snapshot = s.read_pool(&pool).unwrap();
    let read = t0.elapsed();
    assert_eq!(snapshot.slots.len(), 65534);
    let usage = alloc_usage(&endpoints, &format!("{prefix}pools/10.20.0.0-16/alloc/"));
    assert_eq!(usage.allocations, 65534);
    let db_after = db_size(&endpoints);
    // The test's own prefix is longer than the default `/hereabouts/`; report both.
    let default_key =
        usage.key_bytes as f64 / 65534.0 - (prefix.len() - "/hereabouts/".len()) as f64;
    eprintln!(
        "large pool: 65,534 allocations written in {:.2} s, read in {:.0} ms; per allocation {:.0} bytes ({:.0} key + {:.0} value; {:.0} with the default prefix), etcd db grew {:.0} bytes/allocation",
        write.as_secs_f64(),
        read.as_secs_f64() * 1e3,
        (usage.key_bytes + usage.value_bytes) as f64 / 65534.0,
        usage.key_bytes as f64 / 65534.0,
        usage.value_bytes as f64 / 65534.0,
        default_key + usage.value_bytes as f64 / 65534.0,
        (db_after.saturating_sub(db_before)) as f64 / 65534.0,
    );
    // A whole-pool value would not fit etcd's default request limit; one key per allocation does.
    assert!(usage.key_bytes + usage.value_bytes > 1_572_864);

    let mut a = allocator(&config).unwrap();
    let t0 = Instant::now();
    let error = add(&mut a, &network, "one-too-many").unwrap_err();
    eprintln!(
        "large pool: ADD into the full /16 answered in {:.0} ms: {}",
        t0.elapsed().as_secs_f64() * 1e3,
        error.msg
    );
    assert_eq!(error.code, Code::Exhausted, "{error:?}");
    // Release the owner of 10.20.3.233 (offset 1001) through the allocator; the next ADD gets it.
    let holder =
        Owner { container_id: id(1001), ifname: "eth0".into(), podref: "team-a/web-01001".into() };
    let released = a.release(&network, &holder).unwrap();
    assert_eq!(released[0].address, "10.20.3.233");
    assert_eq!(add(&mut a, &network, "newcomer").unwrap(), "10.20.3.233");

    // Freeing everything at once is a chain of transactions (etcd allows 128 operations in one).
    let snapshot = s.read_pool(&pool).unwrap();
    let frees: Vec<PoolEdit> =
        snapshot.slots.iter().map(|slot| PoolEdit::Free(slot.offset.clone())).collect();
    s.write_pool(&pool, &snapshot.version, &frees).unwrap();
    assert!(s.read_pool(&pool).unwrap().slots.is_empty());
}

/// What the allocations under `dir` occupy: count, and the bytes of their keys and values.
struct Usage {
    allocations: u64,
    key_bytes: u64,
    value_bytes: u64,
}

/// Read with etcdctl, which prints each key and then its value on a line of its own (ours hold
/// no newline).
fn alloc_usage(endpoints: &str, dir: &str) -> Usage {
    let out = etcdctl(endpoints, &["get", "--prefix", dir]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len() % 2, 0, "etcdctl printed an odd number of lines");
    let (keys, values): (Vec<_>, Vec<_>) = lines.chunks(2).map(|kv| (kv[0], kv[1])).unzip();
    Usage {
        allocations: keys.len() as u64,
        key_bytes: keys.iter().map(|k| k.len() as u64).sum(),
        value_bytes: values.iter().map(|v| v.len() as u64).sum(),
    }
}

fn db_size(endpoints: &str) -> u64 {
    let out = etcdctl(endpoints.split(',').next().unwrap(), &["endpoint", "status", "-w", "json"]);
    let status: Value = serde_json::from_str(&out).unwrap();
    status[0]["Status"]["dbSize"].as_u64().unwrap_or(0)
}

/// Compare-and-swap semantics of the backend itself, against the real etcd.
#[test]
#[ignore = "needs etcd"]
fn conditional_writes_and_reservations() {
    let endpoints = endpoints();
    let prefix = unique_prefix("cas");
    let config = ipam(&endpoints, &prefix, "10.12.0.0/24", json!({}));
    let mut s = store(&config);
    let pool = pool_ref("10.12.0.0-24", "10.12.0.0/24");
    let empty = s.read_pool(&pool).unwrap();
    assert_eq!(empty.version, "");
    let claim =
        |offset: &str, id: &str| PoolEdit::Claim(Slot { offset: offset.into(), owner: owner(id) });
    s.write_pool(&pool, "", &[claim("1", "a")]).unwrap();
    assert!(
        matches!(s.write_pool(&pool, "", &[claim("2", "b")]), Err(StoreError::Conflict)),
        "create twice"
    );
    let v1 = s.read_pool(&pool).unwrap();
    s.write_pool(&pool, &v1.version, &[claim("2", "b")]).unwrap();
    assert!(
        matches!(s.write_pool(&pool, &v1.version, &[claim("3", "c")]), Err(StoreError::Conflict)),
        "stale version"
    );
    let v2 = s.read_pool(&pool).unwrap();
    assert_eq!(v2.slots.len(), 2);
    s.write_pool(
        &pool,
        &v2.version,
        &[PoolEdit::Free("1".into()), claim("1", "d"), PoolEdit::Free("2".into())],
    )
    .unwrap();
    let v3 = s.read_pool(&pool).unwrap();
    assert_eq!(v3.slots.len(), 1);
    assert_eq!(v3.slots[0].owner.container_id, "d");

    let mut holder = |network: &str, id: &str| {
        s.reserve_address(network, "10.12.0.1", &owner(id)).unwrap().map(|o| o.container_id)
    };
    assert_eq!(holder("blue", "a"), None);
    assert_eq!(holder("blue", "a"), None, "idempotent");
    assert_eq!(holder("blue", "b").as_deref(), Some("a"));
    assert_eq!(holder("", "b"), None, "other network");
    s.release_address("blue", "10.12.0.1", &owner("b")).unwrap();
    assert_eq!(
        s.reserve_address("blue", "10.12.0.1", &owner("b"))
            .unwrap()
            .map(|o| o.container_id)
            .as_deref(),
        Some("a"),
        "not b's to release"
    );
    s.release_address("blue", "10.12.0.1", &owner("a")).unwrap();
    assert!(s.reserve_address("blue", "10.12.0.1", &owner("b")).unwrap().is_none());
    s.release_address("blue", "10.9.9.9", &owner("a")).unwrap();
}

/// Threads in one process, each its own client, racing on a small pool: no address twice.
#[test]
#[ignore = "needs etcd"]
fn threads_race_on_one_pool() {
    let endpoints = endpoints();
    let prefix = unique_prefix("threads");
    let config = ipam(&endpoints, &prefix, "10.13.0.0/25", json!({}));
    let network = config.network_config();
    let results: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|t| {
                let (config, network) = (config.clone(), network.clone());
                scope.spawn(move || {
                    let mut a = allocator(&config).unwrap();
                    (0..20)
                        .map(|i| add(&mut a, &network, &format!("t{t}-{i}")).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let distinct: BTreeSet<_> = results.iter().cloned().collect();
    assert_eq!(distinct.len(), 120);
    assert_same(&distinct, &lowest("10.13.0.0/25", 120), "threads");
}

/// Unreachable etcd: error 11 within the dial timeout (nothing listens), and within the request
/// timeout when something accepts connections but never answers — never a hang.
#[test]
fn unreachable_etcd_is_error_11_quickly() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let config = ipam(&format!("127.0.0.1:{port}"), "/x/", "10.14.0.0/24", json!({}));
    let t0 = Instant::now();
    let error = allocator(&config).err().expect("connected to nothing");
    assert_eq!(error.code, Code::TryAgainLater, "{error:?}");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    eprintln!("unreachable: refused endpoint → 11 in {:?}: {}", t0.elapsed(), error.msg);

    // A black hole: accepts TCP, never speaks HTTP/2.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = hole.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in hole.incoming().take(16) {
            held.push(stream);
        }
    });
    let config =
        ipam(&format!("{addr}"), "/x/", "10.14.0.0/24", json!({"etcd_request_timeout": "1s"}));
    let t0 = Instant::now();
    let result = allocator(&config).and_then(|mut a| add(&mut a, &config.network_config(), "c"));
    let error = result.expect_err("a black hole allocated");
    assert_eq!(error.code, Code::TryAgainLater, "{error:?}");
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    eprintln!("unreachable: silent endpoint → 11 in {:?}: {}", t0.elapsed(), error.msg);
}

/// Data in etcd that is not ours: a clear error naming the key (CNI 5), nothing overwritten.
#[test]
#[ignore = "needs etcd"]
fn bad_data_is_a_clear_error_and_nothing_is_overwritten() {
    let endpoints = endpoints();
    let prefix = unique_prefix("bad");
    let range = "10.15.0.0/24";
    let config = ipam(&endpoints, &prefix, range, json!({}));
    let network = config.network_config();
    let mut a = allocator(&config).unwrap();
    assert_eq!(add(&mut a, &network, "first").unwrap(), "10.15.0.1");
    let dump = || etcdctl(&endpoints, &["get", "--prefix", &prefix]);

    let cases: Vec<(String, &str)> = vec![
        (format!("{prefix}pools/10.15.0.0-24/alloc/1"), r#"{"id":"first","ifname":"eth0","pod"#), // truncated
        (format!("{prefix}pools/10.15.0.0-24/alloc/1"), "hello from another program"), // foreign
        (format!("{prefix}pools/10.15.0.0-24/alloc/1"), r#"{"ip":"10.15.0.1","owner":"x"}"#), // foreign JSON
        (format!("{prefix}pools/10.15.0.0-24/spec"), r#"{"range":"10.15.0.0/2"#), // truncated spec
        (format!("{prefix}pools/10.15.0.0-24/spec"), r#"{"range":"10.99.0.0/24"}"#), // another pool's
        (format!("{prefix}pools/10.15.0.0-24/zzz"), "x"),                            // foreign key
        (
            format!("{prefix}pools/10.15.0.0-24/alloc/007"),
            r#"{"id":"x","ifname":"eth0","podref":""}"#,
        ),
    ];
    let good = dump();
    for (key, value) in cases {
        let original = etcdctl(&endpoints, &["get", "--print-value-only", &key]);
        etcdctl(&endpoints, &["put", &key, value]);
        let before = dump();
        let error = add(&mut a, &network, "second").unwrap_err();
        assert_eq!(error.code, Code::Io, "{key} = {value:?}: {error:?}");
        assert!(error.msg.contains(&key), "the message must name {key}: {}", error.msg);
        let error = a.release(&network, &owner("first")).map_err(CniError::from).unwrap_err();
        assert_eq!(error.code, Code::Io, "{error:?}");
        assert_eq!(dump(), before, "the store changed after {key} = {value:?}");
        eprintln!("bad data: {key} = {value:?} → {}", error.msg);
        // Put the good value back (or remove the foreign key).
        match original.trim_end_matches('\n') {
            "" => etcdctl(&endpoints, &["del", &key]),
            v => etcdctl(&endpoints, &["put", &key, v]),
        };
        assert_eq!(dump(), good);
    }
    // A foreign reservation of the address the next ADD wants.
    let key = format!("{prefix}reservations//10.15.0.2");
    etcdctl(&endpoints, &["put", &key, "not a reservation"]);
    let before = dump();
    let error = add(&mut a, &network, "second").unwrap_err();
    assert_eq!(error.code, Code::Io, "{error:?}");
    assert!(error.msg.contains(&key), "{}", error.msg);
    assert_eq!(dump(), before);
}

/// TLS with a client certificate and password auth; a wrong password or CA is a clear error.
#[test]
#[ignore = "needs etcd"]
fn tls_and_auth() {
    let (endpoint, dir) =
        (needed("HEREABOUTS_ETCD_TLS_ENDPOINT"), needed("HEREABOUTS_ETCD_TLS_DIR"));
    let prefix = unique_prefix("tls");
    let file = |name: &str| format!("{dir}/{name}");
    let good = json!({"etcd_username": "root", "etcd_password": "s3cret", "etcd_ca_cert_file": file("ca.pem"),
        "etcd_cert_file": file("client.pem"), "etcd_key_file": file("client-key.pem")});
    let config = ipam(&endpoint, &prefix, "10.16.0.0/24", good.clone());
    let network = config.network_config();
    let mut a = allocator(&config).unwrap();
    assert_eq!(add(&mut a, &network, "secure").unwrap(), "10.16.0.1");

    let variant = |patch: Value| {
        let mut v = good.clone();
        for (k, x) in patch.as_object().unwrap() {
            v[k] = x.clone();
        }
        ipam(&endpoint, &prefix, "10.16.0.0/24", v)
    };
    let error = allocator(&variant(json!({"etcd_password": "wrong"})))
        .err()
        .expect("wrong password accepted");
    eprintln!("tls: wrong password → {} {}", error.code, error.msg);
    assert_eq!(error.code, Code::Io, "{error:?}");
    assert!(error.msg.contains("credentials"), "{}", error.msg);

    let t0 = Instant::now();
    let error = allocator(&variant(json!({"etcd_ca_cert_file": file("other-ca.pem")})))
        .and_then(|mut a| add(&mut a, &network, "x"))
        .expect_err("wrong CA accepted");
    eprintln!("tls: wrong CA → {} {} ({:?})", error.code, error.msg, t0.elapsed());
    assert!(error.msg.contains("TLS") && error.msg.contains("UnknownIssuer"), "{}", error.msg);
    assert_eq!(error.code, Code::Io, "{error:?}");

    let error =
        allocator(&variant(json!({"etcd_ca_cert_file": file("missing.pem")}))).err().unwrap();
    assert_eq!(error.code, Code::InvalidConfig, "{error:?}");
    assert!(error.msg.contains("etcd_ca_cert_file"), "{}", error.msg);

    let error = allocator(&variant(json!({"etcd_cert_file": null, "etcd_key_file": null})))
        .and_then(|mut a| add(&mut a, &network, "x"))
        .expect_err("no client certificate accepted");
    // The server's rejection surfaces as an alert or a reset, depending on timing.
    eprintln!("tls: no client certificate → {} {}", error.code, error.msg);
    assert!(matches!(error.code, Code::Io | Code::TryAgainLater), "{error:?}");

    let plain = ipam(
        &endpoint.replace("https://", "http://"),
        &prefix,
        "10.16.0.0/24",
        json!({"etcd_request_timeout": "1s"}),
    );
    let error = allocator(&plain)
        .and_then(|mut a| add(&mut a, &network, "x"))
        .expect_err("plain http to a TLS etcd");
    eprintln!("tls: plain http → {} {}", error.code, error.msg);
    assert!(matches!(error.code, Code::Io | Code::TryAgainLater), "{error:?}");
}

/// Three members on loopback, one stopped (by run.sh): allocation continues.
#[test]
#[ignore = "needs etcd"]
fn cluster_with_one_member_down() {
    let endpoints = needed("HEREABOUTS_ETCD_CLUSTER_ENDPOINTS");
    let prefix = unique_prefix("cluster");
    let config = ipam(&endpoints, &prefix, "10.17.0.0/24", json!({}));
    let network = config.network_config();
    let mut got = BTreeSet::new();
    for i in 0..40 {
        // Each ADD a fresh client, as separate CNI processes: the dead member is in every list.
        let mut a = allocator(&config).unwrap();
        got.insert(add(&mut a, &network, &format!("c{i}")).unwrap());
    }
    assert_same(&got, &lowest("10.17.0.0/24", 40), "cluster");
    eprintln!("cluster: 40 ADDs with one of three members down: ok");
}

#[path = "../../bench/etcd_bench.rs"]
mod bench;

/// The benchmark (host-cni/bench/etcd.sh runs it): ADD/s and latency, etcd beside local.
#[test]
#[ignore = "a benchmark: host-cni/bench/etcd.sh starts an etcd and runs it"]
fn bench_stores() {
    let endpoints = endpoints();
    bench::run(&endpoints);
}
