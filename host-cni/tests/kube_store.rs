//! The Kubernetes store against the API-server emulation (tests/kube_emulator: an emulation,
//! not a real API server — none can be installed here). The production code path is real:
//! the allocator component in wasmtime, `KubeStore`, the `kube` client, HTTP, a kubeconfig.
//!
//! Covers: migration from objects exactly as Whereabouts writes them, contention between
//! processes, requested and sticky addresses, RBAC denial, an unreachable API server, and
//! `hereabouts reconcile` (+ `--dry-run`).

mod kube_emulator;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hereabouts_host::bindings::{AllocateRequest, Lease, NetworkConfig, Owner, RangeConfig};
use hereabouts_host::error::{CniError, Code};
use hereabouts_host::runtime::Allocator;
use hereabouts_stores::kube::{KubeStore, Timeouts};
use kube_emulator::{Emulator, pod};
use serde_json::{Value, json};

const NS: &str = "kube-system";

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/kube_fixtures").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hereabouts-kube-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn range(range: &str) -> RangeConfig {
    RangeConfig { range: range.into(), range_start: None, range_end: None, exclude: Vec::new() }
}

fn network(name: &str, ranges: &[&str]) -> NetworkConfig {
    NetworkConfig {
        range: Some(range(ranges[0])),
        ip_ranges: ranges[1..].iter().map(|r| range(r)).collect(),
        gateway: None,
        network_name: name.into(),
        enable_overlapping_ranges: true,
    }
}

fn owner(container_id: &str, podref: &str) -> Owner {
    Owner { container_id: container_id.into(), ifname: "net1".into(), podref: podref.into() }
}

fn allocator(kubeconfig: &Path) -> Allocator {
    let store = KubeStore::connect(Some(kubeconfig), Timeouts::default()).expect("connect");
    Allocator::new(Box::new(store)).expect("load the allocator component")
}

fn allocate(
    allocator: &mut Allocator,
    network: &NetworkConfig,
    owner: &Owner,
) -> Result<Vec<Lease>, CniError> {
    let request = AllocateRequest { owner: owner.clone(), requested: Vec::new(), sticky: false };
    allocator.allocate(network, &request).map_err(CniError::from)
}

fn addresses(leases: &[Lease]) -> Vec<String> {
    leases.iter().map(|l| l.address.clone()).collect()
}

fn load_fixtures(emulator: &Emulator) {
    emulator.insert("ippools", fixture("ippool-blue-v4.json"));
    emulator.insert("ippools", fixture("ippool-blue-v6.json"));
    for reservation in fixture("reservations-blue.json").as_array().unwrap() {
        emulator.insert("overlappingrangeipreservations", reservation.clone());
    }
}

#[test]
fn migration_reads_whereabouts_objects_and_writes_them_back_in_their_format() {
    let emulator = Emulator::start();
    load_fixtures(&emulator);
    // Whereabouts' default namespace: a context without one means kube-system.
    let kubeconfig = emulator.kubeconfig(&temp_dir("migration"), None);
    let mut allocator = allocator(&kubeconfig);
    let blue = network("blue", &["10.10.0.0/24", "fd00:10::/64"]);

    // .1, .2 and .4 are Whereabouts' allocations: the lowest free is .3 (and ::3).
    let new = owner("c-new", "default/new");
    let leases = allocate(&mut allocator, &blue, &new).unwrap();
    assert_eq!(addresses(&leases), ["10.10.0.3", "fd00:10::3"]);
    assert_eq!(
        addresses(&allocate(&mut allocator, &blue, &new).unwrap()),
        ["10.10.0.3", "fd00:10::3"],
        "idempotent"
    );

    // What we wrote keeps Whereabouts' format: the old entries untouched, the new one keyed by
    // its decimal offset with exactly {id, podref, ifname}, nothing else in spec.
    let before = fixture("ippool-blue-v4.json");
    let pool = emulator.get("ippools", NS, "blue-10.10.0.0-24").unwrap();
    let allocations = pool["spec"]["allocations"].as_object().unwrap();
    for offset in ["1", "2", "4"] {
        assert_eq!(
            allocations[offset], before["spec"]["allocations"][offset],
            "offset {offset} changed"
        );
    }
    assert_eq!(allocations["3"], json!({"id": "c-new", "podref": "default/new", "ifname": "net1"}));
    assert_eq!(
        pool["spec"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["allocations", "range"]
    );
    assert_eq!(pool["spec"]["range"], "10.10.0.0/24");
    assert_eq!(pool["metadata"]["annotations"], before["metadata"]["annotations"], "metadata kept");
    let pool6 = emulator.get("ippools", NS, "blue-fd00-10---64").unwrap();
    assert_eq!(
        pool6["spec"]["allocations"]["3"],
        json!({"id": "c-new", "podref": "default/new", "ifname": "net1"})
    );
    // ...and the reservation Whereabouts would have written, under its name.
    let reservation =
        emulator.get("overlappingrangeipreservations", NS, "blue-10.10.0.3").expect("reservation");
    assert_eq!(
        reservation["spec"],
        json!({"containerid": "c-new", "podref": "default/new", "ifname": "net1"})
    );
    assert!(emulator.get("overlappingrangeipreservations", NS, "blue-fd00-10--3").is_some());

    // .5 is reserved network-wide by another range's pod (overlapping ranges): skipped.
    let next = allocate(&mut allocator, &blue, &owner("c-next", "default/next")).unwrap();
    assert_eq!(addresses(&next), ["10.10.0.6", "fd00:10::4"]);

    // Release frees both the slot and the reservation; Whereabouts' entries stay.
    allocator.release(&blue, &new).map_err(CniError::from).unwrap();
    let pool = emulator.get("ippools", NS, "blue-10.10.0.0-24").unwrap();
    let offsets: Vec<&String> = pool["spec"]["allocations"].as_object().unwrap().keys().collect();
    assert_eq!(offsets, ["1", "2", "4", "6"]);
    assert!(emulator.get("overlappingrangeipreservations", NS, "blue-10.10.0.3").is_none());
    assert!(emulator.get("overlappingrangeipreservations", NS, "blue-10.10.0.1").is_some());
}

#[test]
fn a_new_pool_is_created_in_whereabouts_format_in_the_context_namespace() {
    let emulator = Emulator::start();
    let kubeconfig = emulator.kubeconfig(&temp_dir("create"), Some("cni"));
    let mut allocator = allocator(&kubeconfig);
    let leases =
        allocate(&mut allocator, &network("", &["192.168.7.0/24"]), &owner("c1", "default/a"))
            .unwrap();
    assert_eq!(addresses(&leases), ["192.168.7.1"]);
    let pool = emulator
        .get("ippools", "cni", "192.168.7.0-24")
        .expect("unnamed network: name is the range");
    assert_eq!(
        pool["spec"],
        json!({"range": "192.168.7.0/24", "allocations": {"1": {"id": "c1", "podref": "default/a", "ifname": "net1"}}})
    );
    assert!(emulator.get("overlappingrangeipreservations", "cni", "192.168.7.1").is_some());
}

#[test]
fn requested_addresses_are_handed_out_or_refused_naming_the_holder() {
    let emulator = Emulator::start();
    load_fixtures(&emulator);
    let kubeconfig = emulator.kubeconfig(&temp_dir("requested"), None);
    let mut allocator = allocator(&kubeconfig);
    let blue = network("blue", &["10.10.0.0/24"]);
    let asking = AllocateRequest {
        owner: owner("c-req", "default/req"),
        requested: vec!["10.10.0.9".into()],
        sticky: false,
    };
    assert_eq!(addresses(&allocator.allocate(&blue, &asking).unwrap()), ["10.10.0.9"]);
    assert_eq!(
        emulator.get("ippools", NS, "blue-10.10.0.0-24").unwrap()["spec"]["allocations"]["9"]["id"],
        "c-req"
    );

    let taken = AllocateRequest {
        owner: owner("c-req2", "default/req2"),
        requested: vec!["10.10.0.1".into()],
        sticky: false,
    };
    let error = CniError::from(allocator.allocate(&blue, &taken).unwrap_err());
    assert_eq!(error.code, Code::AddressUnavailable, "{error:?}");
    assert!(error.msg.contains("10.10.0.1"), "{error:?}");
}

#[test]
fn sticky_addresses_follow_the_pod_across_containers() {
    let emulator = Emulator::start();
    let kubeconfig = emulator.kubeconfig(&temp_dir("sticky"), None);
    let mut allocator = allocator(&kubeconfig);
    let blue = network("blue", &["10.30.0.0/24"]);
    for (i, name) in ["db-0", "db-1", "db-2"].iter().enumerate() {
        let leases =
            allocate(&mut allocator, &blue, &owner(&format!("c{i}"), &format!("default/{name}")))
                .unwrap();
        assert_eq!(addresses(&leases), [format!("10.30.0.{}", i + 1)]);
    }
    // db-1 restarts under a new container id before its old one was released.
    let again = AllocateRequest {
        owner: owner("c1-restarted", "default/db-1"),
        requested: Vec::new(),
        sticky: true,
    };
    assert_eq!(addresses(&allocator.allocate(&blue, &again).unwrap()), ["10.30.0.2"]);
    let pool = emulator.get("ippools", NS, "blue-10.30.0.0-24").unwrap();
    assert_eq!(pool["spec"]["allocations"]["2"]["id"], "c1-restarted");
    assert_eq!(pool["spec"]["allocations"].as_object().unwrap().len(), 3);
    // Without sticky, a new container of the same pod gets a new address.
    let plain = allocate(&mut allocator, &blue, &owner("c2-restarted", "default/db-2")).unwrap();
    assert_eq!(addresses(&plain), ["10.30.0.4"]);
}

#[test]
fn rbac_denial_is_a_clear_error() {
    let emulator = Emulator::start();
    load_fixtures(&emulator);
    emulator.deny("update", "ippools");
    let kubeconfig = emulator.kubeconfig(&temp_dir("rbac"), None);
    let mut allocator = allocator(&kubeconfig);
    let error =
        allocate(&mut allocator, &network("blue", &["10.10.0.0/24"]), &owner("c1", "default/a"))
            .unwrap_err();
    assert_eq!(error.code, Code::Io, "{error:?}");
    for part in ["403", "update", "ippools", "kube-system", "deploy/rbac.yaml"] {
        assert!(error.msg.contains(part), "{part:?} missing in {:?}", error.msg);
    }
    // Nothing was written.
    assert_eq!(
        emulator.get("ippools", NS, "blue-10.10.0.0-24").unwrap()["spec"],
        fixture("ippool-blue-v4.json")["spec"]
    );
}

#[test]
fn an_unreachable_api_server_is_try_again_later() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = temp_dir("unreachable");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user: {{}}\n"
        ),
    )
    .unwrap();
    let started = Instant::now();
    let mut allocator = allocator(&kubeconfig);
    let error =
        allocate(&mut allocator, &network("", &["10.40.0.0/24"]), &owner("c1", "default/a"))
            .unwrap_err();
    assert_eq!(error.code, Code::TryAgainLater, "{error:?}");
    assert!(error.msg.contains("unreachable"), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

// ---- contention: 8 processes × 100 ADDs ---------------------------------------------------

const WORKERS: usize = 8;
const ADDS_PER_WORKER: usize = 100;
const CONTENTION_RANGE: &str = "10.20.0.0/22";

/// A child process of `contention_between_processes`, which starts it. Each ADD is what a
/// CNI process does: a new client, the component loaded, one allocate; the latency of each is
/// printed for the parent.
#[test]
#[ignore = "a child process of contention_between_processes, which starts it"]
fn contention_child() {
    let kubeconfig = std::env::var("HEREABOUTS_KUBE_CHILD_KUBECONFIG")
        .expect("HEREABOUTS_KUBE_CHILD_KUBECONFIG: set by contention_between_processes");
    let worker: usize = std::env::var("HEREABOUTS_KUBE_CHILD_WORKER").unwrap().parse().unwrap();
    let net = network("", &[CONTENTION_RANGE]);
    let mut latencies = Vec::new();
    for i in 0..ADDS_PER_WORKER {
        let started = Instant::now();
        let mut allocator = allocator(Path::new(&kubeconfig));
        let leases = allocate(
            &mut allocator,
            &net,
            &owner(&format!("w{worker}-c{i}"), &format!("default/w{worker}-{i}")),
        )
        .unwrap_or_else(|e| panic!("worker {worker} add {i}: {e:?}"));
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(leases.len(), 1);
    }
    println!("LATENCIES {}", serde_json::to_string(&latencies).unwrap());
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
fn contention_between_processes() {
    let emulator = Emulator::start();
    let kubeconfig = emulator.kubeconfig(&temp_dir("contention"), None);
    // Warm the compiled-component cache once, as the first CNI call on a node does.
    drop(allocator(&kubeconfig));
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let children: Vec<_> = (0..WORKERS)
        .map(|worker| {
            Command::new(&exe)
                .args([
                    "contention_child",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("HEREABOUTS_KUBE_CHILD_KUBECONFIG", &kubeconfig)
                .env("HEREABOUTS_KUBE_CHILD_WORKER", worker.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut latencies = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("LATENCIES ").map(|(_, rest)| rest))
            .unwrap_or_else(|| panic!("no latencies line in:\n{stdout}"));
        latencies.extend(serde_json::from_str::<Vec<f64>>(line).unwrap());
    }
    let elapsed = started.elapsed();

    let pool = emulator.get("ippools", NS, "10.20.0.0-22").unwrap();
    let allocations = pool["spec"]["allocations"].as_object().unwrap();
    let total = WORKERS * ADDS_PER_WORKER;
    assert_eq!(allocations.len(), total, "every ADD has its own slot");
    let owners: BTreeSet<&str> = allocations.values().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(owners.len(), total, "0 duplicates: one container per address");
    // Lowest-packed: exactly the first 800 allocatable offsets (x.0 addresses are never used).
    let offsets: BTreeSet<u32> = allocations.keys().map(|k| k.parse().unwrap()).collect();
    let expected: BTreeSet<u32> = (1..).filter(|o| o % 256 != 0).take(total).collect();
    assert_eq!(offsets, expected);
    assert_eq!(emulator.list("overlappingrangeipreservations").len(), total);

    latencies.sort_by(f64::total_cmp);
    let conflicts = emulator.responses(409);
    println!(
        "kube store vs emulator: {total} ADDs by {WORKERS} processes in {:.2} s = {:.0} allocations/s; \
         ADD latency ms: min {:.2} median {:.2} p99 {:.2} max {:.2}; {conflicts} conflicts (409) retried; {} requests",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        latencies[0],
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
        emulator.requests()
    );
    assert!(conflicts > 0, "8 concurrent writers on one pool must have collided at least once");
}

// ---- reconcile ----------------------------------------------------------------------------

fn run_reconcile(kubeconfig: &Path, dry_run: bool) -> (String, String, bool) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hereabouts"));
    command.args(["reconcile", "--kubeconfig"]).arg(kubeconfig);
    if dry_run {
        command.arg("--dry-run");
    }
    let output = command.output().unwrap();
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        output.status.success(),
    )
}

#[test]
fn reconcile_frees_gone_pods_and_keeps_live_and_pending_ones() {
    let emulator = Emulator::start();
    let kubeconfig = emulator.kubeconfig(&temp_dir("reconcile"), None);
    let mut allocator = allocator(&kubeconfig);
    let blue = network("blue", &["10.50.0.0/24"]);
    // live: running, its network-status lists .1 · pending: not annotated yet · gone: no pod ·
    // moved: running but its status lists another address · done: Succeeded.
    for (i, name) in ["live", "pending", "gone", "moved", "done"].iter().enumerate() {
        let leases = allocate(
            &mut allocator,
            &blue,
            &owner(&format!("c-{name}"), &format!("default/{name}")),
        )
        .unwrap();
        assert_eq!(addresses(&leases), [format!("10.50.0.{}", i + 1)]);
    }
    emulator.insert("pods", pod("default", "live", "Running", &["10.50.0.1"]));
    emulator.insert("pods", pod("default", "pending", "Pending", &[]));
    emulator.insert("pods", pod("default", "moved", "Running", &["10.50.0.99"]));
    emulator.insert("pods", pod("default", "done", "Succeeded", &["10.50.0.5"]));
    // A reservation Whereabouts left behind for a pod that is gone.
    emulator.insert(
        "overlappingrangeipreservations",
        json!({"metadata": {"name": "blue-10.50.0.77", "namespace": NS}, "spec": {"containerid": "c-ghost", "podref": "default/ghost", "ifname": "net1"}}),
    );
    let pool_before = emulator.get("ippools", NS, "blue-10.50.0.0-24").unwrap();

    let (stdout, stderr, ok) = run_reconcile(&kubeconfig, true);
    assert!(ok, "{stdout}\n{stderr}");
    for freed in [
        "would free 10.50.0.3",
        "would free 10.50.0.4",
        "would free 10.50.0.5",
        // A reservation reports its address, read back from its object's name.
        "would free 10.50.0.77 (reservation blue-10.50.0.77, pod default/ghost",
    ] {
        assert!(stdout.contains(freed), "{freed:?} missing:\n{stdout}");
    }
    assert!(!stdout.contains("10.50.0.1 ") && !stdout.contains("10.50.0.2 "), "{stdout}");
    assert_eq!(
        emulator.get("ippools", NS, "blue-10.50.0.0-24").unwrap(),
        pool_before,
        "--dry-run changed nothing"
    );

    let (stdout, stderr, ok) = run_reconcile(&kubeconfig, false);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("4 freed"), "{stdout}");
    let pool = emulator.get("ippools", NS, "blue-10.50.0.0-24").unwrap();
    let offsets: Vec<&String> = pool["spec"]["allocations"].as_object().unwrap().keys().collect();
    assert_eq!(offsets, ["1", "2"], "live and pending kept");
    let reservations: BTreeSet<String> = emulator
        .list("overlappingrangeipreservations")
        .iter()
        .map(|r| r["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        reservations,
        BTreeSet::from(["blue-10.50.0.1".to_string(), "blue-10.50.0.2".to_string()])
    );

    // A second pass finds nothing to do.
    let (stdout, _, ok) = run_reconcile(&kubeconfig, false);
    assert!(ok && stdout.contains("0 freed"), "{stdout}");
}

// ---- controller ---------------------------------------------------------------------------

/// Polls `check` for up to 15 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn controller_frees_deleted_pods_promptly_and_keeps_recreated_ones() {
    let emulator = Emulator::start();
    let kubeconfig = emulator.kubeconfig(&temp_dir("controller"), None);
    let mut allocator = allocator(&kubeconfig);
    let blue = network("blue", &["10.60.0.0/24"]);
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        allocate(&mut allocator, &blue, &owner(&format!("c-{name}"), &format!("default/{name}")))
            .unwrap();
        emulator.insert("pods", pod("default", name, "Running", &[&format!("10.60.0.{}", i + 1)]));
    }
    let child = Command::new(env!("CARGO_BIN_EXE_hereabouts"))
        .args(["controller", "--grace-seconds=1", "--kubeconfig"])
        .arg(&kubeconfig)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _child = KillOnDrop(child);
    let slots = || -> Vec<String> {
        let pool = emulator.get("ippools", NS, "blue-10.60.0.0-24").unwrap();
        pool["spec"]["allocations"].as_object().unwrap().keys().cloned().collect()
    };
    // Let the controller list and start watching, then delete pod a.
    eventually("the controller to watch pods", || emulator.watches() > 0);
    let started = Instant::now();
    emulator.delete("pods", "default", "a");
    eventually("a's address to be freed", || slots() == ["2", "3"]);
    let freed_after = started.elapsed();
    // The pool is written first and the reservation dropped right after (so a crash can never
    // duplicate an address): wait for the second step too.
    eventually("a's reservation to be deleted", || {
        emulator.get("overlappingrangeipreservations", NS, "blue-10.60.0.1").is_none()
    });

    // b is deleted and recreated under its name at once (StatefulSet): kept.
    emulator.delete("pods", "default", "b");
    emulator.insert("pods", pod("default", "b", "Pending", &[]));
    // c terminates: freed.
    emulator.update("pods", pod("default", "c", "Succeeded", &["10.60.0.3"]));
    eventually("c's address to be freed", || slots() == ["2"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(slots(), ["2"], "the recreated pod's address is kept");
    println!(
        "controller freed a deleted pod's address {:.0} ms after the deletion (grace period 1 s)",
        freed_after.as_secs_f64() * 1000.0
    );
}

// ---- the hereabouts binary in CNI mode ------------------------------------------------------

/// One CNI call of the real binary, as a runtime makes it.
fn cni(
    command: &str,
    config: &Value,
    container: &str,
    podref: &str,
    cache: &Path,
) -> (bool, Value) {
    use std::io::Write;
    let (namespace, name) = podref.split_once('/').unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hereabouts"))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", format!("/var/run/netns/{container}"))
        .env("CNI_IFNAME", "net1")
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name}"),
        )
        .env("CNI_PATH", "/opt/cni/bin")
        .env("HEREABOUTS_CACHE_DIR", cache)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(config.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    if output.stdout.is_empty() {
        // DEL prints nothing on success.
        return (output.status.success(), Value::Null);
    }
    let stdout: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "not JSON: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.success(), stdout)
}

fn cni_config(kubeconfig: &Path, dir: &Path, extra: Value) -> Value {
    let mut ipam = json!({
        "type": "whereabouts",
        "range": "10.70.0.0/22",
        "datastore": "kubernetes",
        "kubernetes": {"kubeconfig": kubeconfig},
        // A flat file that does not exist, so the machine's own is never read.
        "configuration_path": dir.join("no-flat-file.conf"),
    });
    for (k, v) in extra.as_object().unwrap() {
        ipam[k] = v.clone();
    }
    json!({"cniVersion": "1.0.0", "name": "blue", "type": "macvlan", "ipam": ipam})
}

#[test]
fn cni_add_del_and_errors_through_the_binary() {
    let emulator = Emulator::start();
    let dir = temp_dir("cni");
    let kubeconfig = emulator.kubeconfig(&dir, None);
    let config = cni_config(&kubeconfig, &dir, json!({}));
    let (ok, result) = cni("ADD", &config, "c1", "default/a", &dir);
    assert!(ok, "{result}");
    assert_eq!(result["ips"][0]["address"], "10.70.0.1/22");
    let pool = emulator.get("ippools", NS, "10.70.0.0-22").expect("pool written");
    assert_eq!(
        pool["spec"]["allocations"]["1"],
        json!({"id": "c1", "podref": "default/a", "ifname": "net1"})
    );
    assert!(cni("DEL", &config, "c1", "default/a", &dir).0);
    assert!(
        emulator.get("ippools", NS, "10.70.0.0-22").unwrap()["spec"]["allocations"]
            .as_object()
            .unwrap()
            .is_empty()
    );

    // Sticky through the config key.
    let sticky = cni_config(&kubeconfig, &dir, json!({"sticky": true}));
    assert_eq!(
        cni("ADD", &sticky, "s1", "default/db-0", &dir).1["ips"][0]["address"],
        "10.70.0.1/22"
    );
    assert_eq!(
        cni("ADD", &sticky, "s2", "default/db-0", &dir).1["ips"][0]["address"],
        "10.70.0.1/22"
    );

    // CNI GC (1.1.0) on this store: frees every attachment not listed, keeps the listed one.
    for c in ["g1", "g2"] {
        assert!(cni("ADD", &config, c, &format!("default/{c}"), &dir).0);
    }
    let mut gc = config.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] =
        json!([{"containerID": "g2", "ifname": "net1"}, {"containerID": "s2", "ifname": "net1"}]);
    let (ok, result) = cni("GC", &gc, "", "default/x", &dir);
    assert!(ok, "{result}");
    let pool = emulator.get("ippools", NS, "10.70.0.0-22").unwrap();
    let ids: BTreeSet<&str> = pool["spec"]["allocations"]
        .as_object()
        .unwrap()
        .values()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, BTreeSet::from(["g2", "s2"]));

    // 403 → a CNI error naming the permission; unreachable → 11.
    emulator.deny("update", "ippools");
    let (ok, error) = cni("ADD", &config, "c3", "default/c", &dir);
    assert!(!ok);
    assert_eq!(error["code"], 5, "{error}");
    assert!(error["msg"].as_str().unwrap().contains("403"), "{error}");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = dir.join("dead.kubeconfig");
    std::fs::write(
        &dead,
        std::fs::read_to_string(&kubeconfig)
            .unwrap()
            .replace(&emulator.url(), &format!("http://127.0.0.1:{port}")),
    )
    .unwrap();
    let (ok, error) = cni("ADD", &cni_config(&dead, &dir, json!({})), "c4", "default/d", &dir);
    assert!(!ok);
    assert_eq!(error["code"], 11, "{error}");
}

#[test]
fn cni_contention_8_processes_x_100_adds() {
    let emulator = Emulator::start();
    let dir = temp_dir("cni-contention");
    let kubeconfig = emulator.kubeconfig(&dir, None);
    let config = cni_config(&kubeconfig, &dir, json!({}));
    // The first call on a node compiles the component into the cache.
    let (ok, warm) = cni("ADD", &config, "warm", "default/warm", &dir);
    assert!(ok, "{warm}");
    assert!(cni("DEL", &config, "warm", "default/warm", &dir).0);
    let before = emulator.responses(409);
    let started = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (config, dir) = (config.clone(), dir.clone());
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                for i in 0..ADDS_PER_WORKER {
                    let t = Instant::now();
                    let (ok, result) = cni(
                        "ADD",
                        &config,
                        &format!("w{w}-c{i}"),
                        &format!("default/w{w}-{i}"),
                        &dir,
                    );
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                    assert!(ok, "worker {w} ADD {i}: {result}");
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<f64> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    let elapsed = started.elapsed();
    let total = WORKERS * ADDS_PER_WORKER;
    let pool = emulator.get("ippools", NS, "10.70.0.0-22").unwrap();
    let allocations = pool["spec"]["allocations"].as_object().unwrap();
    let owners: BTreeSet<&str> = allocations.values().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!((allocations.len(), owners.len()), (total, total), "0 duplicates");
    let offsets: BTreeSet<u32> = allocations.keys().map(|k| k.parse().unwrap()).collect();
    assert_eq!(
        offsets,
        (1..).filter(|o| o % 256 != 0).take(total).collect::<BTreeSet<u32>>(),
        "lowest-packed"
    );
    latencies.sort_by(f64::total_cmp);
    println!(
        "hereabouts CNI ADD (fresh process each) vs emulator: {total} ADDs by {WORKERS} parallel runtimes in {:.2} s = {:.0} allocations/s; \
         latency ms: min {:.2} median {:.2} p99 {:.2} max {:.2}; {} conflicts (409) retried",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        latencies[0],
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
        emulator.responses(409) - before
    );
}

#[test]
fn cni_add_latency_without_contention() {
    let emulator = Emulator::start();
    let dir = temp_dir("cni-latency");
    let kubeconfig = emulator.kubeconfig(&dir, None);
    let config = cni_config(&kubeconfig, &dir, json!({}));
    assert!(cni("ADD", &config, "warm", "default/warm", &dir).0);
    let (mut add, mut del) = (Vec::new(), Vec::new());
    for i in 0..100 {
        let t = Instant::now();
        assert!(cni("ADD", &config, &format!("c{i}"), &format!("default/p{i}"), &dir).0);
        add.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    for i in 0..100 {
        let t = Instant::now();
        assert!(cni("DEL", &config, &format!("c{i}"), &format!("default/p{i}"), &dir).0);
        del.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    add.sort_by(f64::total_cmp);
    del.sort_by(f64::total_cmp);
    println!(
        "hereabouts CNI vs emulator, one at a time (100 each): ADD median {:.2} ms p99 {:.2} ms; DEL median {:.2} ms p99 {:.2} ms",
        percentile(&add, 0.5),
        percentile(&add, 0.99),
        percentile(&del, 0.5),
        percentile(&del, 0.99)
    );
}
