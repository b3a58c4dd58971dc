//! The `hereabouts` binary on the Kubernetes store, against the API-server emulation
//! (tests/kube_emulator): CNI ADD, DEL and GC as a runtime calls them (a fresh process each),
//! `hereabouts reconcile` (text, `--json`, `--dry-run`) and `hereabouts controller` watching
//! pods. (The store itself: kube_store.rs; reconcile's rules: kube_reconcile.rs.)

mod kube_emulator;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kube_emulator::{Emulator, percentile, pod};
use serde_json::{Value, json};

const NS: &str = "kube-system";

fn temp_dir(name: &str) -> PathBuf {
    kube_emulator::temp_dir("kube-cli", name)
}

/// One CNI call of the real binary, as a runtime makes it: (success, stdout as JSON or null).
fn cni(
    command: &str,
    config: &Value,
    container: &str,
    podref: &str,
    cache: &Path,
) -> (bool, Value) {
    cni_on(None, command, config, container, podref, cache)
}

/// [`cni`] on node `node` (`NODENAME`, as Whereabouts reads it), or with NODENAME unset.
fn cni_on(
    node: Option<&str>,
    command: &str,
    config: &Value,
    container: &str,
    podref: &str,
    cache: &Path,
) -> (bool, Value) {
    use std::io::Write;
    let (namespace, name) = podref.split_once('/').unwrap();
    let mut process = Command::new(env!("CARGO_BIN_EXE_hereabouts"));
    match node {
        Some(node) => process.env("NODENAME", node),
        None => process.env_remove("NODENAME"),
    };
    let mut child = process
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
        // DEL and GC print nothing on success.
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

/// A network config named `name` on this emulator, its ipam keys extended by `extra`.
fn cni_config(name: &str, kubeconfig: &Path, dir: &Path, range: &str, extra: Value) -> Value {
    let mut ipam = json!({
        "type": "whereabouts",
        "range": range,
        "datastore": "kubernetes",
        "kubernetes": {"kubeconfig": kubeconfig},
        // A flat file that does not exist, so the machine's own is never read.
        "configuration_path": dir.join("no-flat-file.conf"),
    });
    for (k, v) in extra.as_object().unwrap() {
        ipam[k] = v.clone();
    }
    json!({"cniVersion": "1.0.0", "name": name, "type": "macvlan", "ipam": ipam})
}

fn ip(result: &Value) -> &str {
    result["ips"][0]["address"].as_str().unwrap_or_else(|| panic!("no address in {result}"))
}

fn allocations(emulator: &Emulator, pool: &str) -> serde_json::Map<String, Value> {
    let pool = emulator.get("ippools", NS, pool).expect("pool written");
    pool["spec"]["allocations"].as_object().unwrap().clone()
}

// ---- CNI ----------------------------------------------------------------------------------

/// Node slices: each node allocates in its own slice pool, named as Whereabouts names it,
/// around the allocations Whereabouts made there; a node without a slice is CNI 11.
#[test]
fn cni_on_node_slices_uses_the_nodes_slice_pool() {
    let emulator = Emulator::start();
    let dir = temp_dir("slices");
    let kubeconfig = emulator.kubeconfig(&dir, Some(NS));
    let cache = dir.join("cache");
    let fixture = |name: &str| -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/kube_fixtures").join(name);
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    // Whereabouts' Fast IPAM objects: worker-2 holds 10.40.0.0/28, worker-1 10.40.0.16/28.
    emulator.insert("nodeslicepools", fixture("nodeslicepool-blue.json"));
    emulator.insert("ippools", fixture("ippool-blue-worker-1.json"));
    let slices = json!({"network_name": "blue", "node_slice_size": "/28"});
    let config = cni_config("blue-net", &kubeconfig, &dir, "10.40.0.0/24", slices);

    let (ok, result) = cni_on(Some("worker-1"), "ADD", &config, "c1", "default/p1", &cache);
    assert!(ok, "{result}");
    assert_eq!(ip(&result), "10.40.0.18/24", "lowest free around Whereabouts' .17 and .19");
    let (ok, result) = cni_on(Some("worker-2"), "ADD", &config, "c2", "default/p2", &cache);
    assert!(ok, "{result}");
    assert_eq!(ip(&result), "10.40.0.1/24");
    let pool = emulator.get("ippools", NS, "blue-worker-2-10.40.0.0-28").expect("slice pool");
    assert_eq!(pool["spec"]["range"], "10.40.0.0/28");
    assert_eq!(pool["spec"]["allocations"]["1"]["id"], "c2");
    let keys: Vec<String> =
        allocations(&emulator, "blue-worker-1-10.40.0.16-28").keys().cloned().collect();
    assert_eq!(keys, ["1", "2", "3"]);
    // No whole-range pool is ever written.
    assert!(emulator.get("ippools", NS, "blue-10.40.0.0-24").is_none());

    // A node the controller has not given a slice: try again later, saying why.
    let (ok, error) = cni_on(Some("worker-3"), "ADD", &config, "c3", "default/p3", &cache);
    assert!(!ok);
    assert_eq!(error["code"], 11, "{error}");
    let msg = error["msg"].as_str().unwrap();
    assert!(
        msg.contains("\"worker-3\"")
            && msg.contains("has no slice")
            && msg.contains("NodeSlicePool kube-system/blue"),
        "{msg}"
    );
    // Its DEL has nothing to free and succeeds.
    assert!(cni_on(Some("worker-3"), "DEL", &config, "c3", "default/p3", &cache).0);

    // DEL frees in the node's slice pool, leaving Whereabouts' allocations.
    assert!(cni_on(Some("worker-1"), "DEL", &config, "c1", "default/p1", &cache).0);
    let keys: Vec<String> =
        allocations(&emulator, "blue-worker-1-10.40.0.16-28").keys().cloned().collect();
    assert_eq!(keys, ["1", "3"]);

    // ADDs that fail: (CNI network, range, ipam keys, CNI code, what the message says).
    let refused = [
        // A network whose NodeSlicePool does not exist yet.
        (
            "green-net",
            "10.41.0.0/24",
            json!({"network_name": "green", "node_slice_size": "/28"}),
            11,
            "does not exist yet",
        ),
        // A NodeSlicePool cut for another slice size (the controller has not re-sliced yet).
        (
            "blue-net",
            "10.40.0.0/24",
            json!({"network_name": "blue", "node_slice_size": "/27"}),
            11,
            "re-slice",
        ),
        // A bad node_slice_size is CNI 7 naming the key.
        (
            "blue-net",
            "10.40.0.0/24",
            json!({"network_name": "blue", "node_slice_size": "/22"}),
            7,
            "node_slice_size: /22",
        ),
    ];
    for (i, (name, range, keys, code, says)) in refused.into_iter().enumerate() {
        let config = cni_config(name, &kubeconfig, &dir, range, keys);
        let container = format!("c-refused-{i}");
        let (ok, error) =
            cni_on(Some("worker-1"), "ADD", &config, &container, "default/p4", &cache);
        assert!(!ok);
        assert_eq!(error["code"], code, "{error}");
        assert!(error["msg"].as_str().unwrap().contains(says), "{error}");
    }
}

#[test]
fn cni_add_del_gc_and_errors_through_the_binary() {
    let emulator = Emulator::start();
    let dir = temp_dir("cni");
    let kubeconfig = emulator.kubeconfig(&dir, None);
    let config = cni_config("blue", &kubeconfig, &dir, "10.70.0.0/22", json!({}));
    let (ok, result) = cni("ADD", &config, "c1", "default/a", &dir);
    assert!(ok, "{result}");
    assert_eq!(ip(&result), "10.70.0.1/22");
    assert_eq!(
        allocations(&emulator, "10.70.0.0-22")["1"],
        json!({"id": "c1", "podref": "default/a", "ifname": "net1"})
    );
    assert!(cni("DEL", &config, "c1", "default/a", &dir).0);
    assert!(allocations(&emulator, "10.70.0.0-22").is_empty());

    // Sticky by default (as Whereabouts): the pod's new sandbox gets its address back...
    assert_eq!(ip(&cni("ADD", &config, "s1", "default/db-0", &dir).1), "10.70.0.1/22");
    assert_eq!(ip(&cni("ADD", &config, "s2", "default/db-0", &dir).1), "10.70.0.1/22");
    // ...and with `sticky: false` a new one.
    let plain = cni_config("blue", &kubeconfig, &dir, "10.70.0.0/22", json!({"sticky": false}));
    assert_eq!(ip(&cni("ADD", &plain, "n1", "default/db-1", &dir).1), "10.70.0.2/22");
    assert_eq!(ip(&cni("ADD", &plain, "n2", "default/db-1", &dir).1), "10.70.0.3/22");

    // CNI GC (1.1.0): frees every attachment of this CNI network that is not listed, keeps the
    // listed ones and those of another CNI network on the same pool.
    for c in ["g1", "g2"] {
        assert!(cni("ADD", &config, c, &format!("default/{c}"), &dir).0);
    }
    let green = cni_config("green", &kubeconfig, &dir, "10.70.0.0/22", json!({}));
    assert!(cni("ADD", &green, "gr1", "default/gr1", &dir).0);
    let mut gc = config.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] =
        json!([{"containerID": "g2", "ifname": "net1"}, {"containerID": "s2", "ifname": "net1"}]);
    let (ok, result) = cni("GC", &gc, "", "default/x", &dir);
    assert!(ok, "{result}");
    let ids: BTreeSet<String> = allocations(&emulator, "10.70.0.0-22")
        .values()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, BTreeSet::from(["g2", "s2", "gr1"].map(String::from)));
    let reservations: BTreeSet<String> = emulator
        .list("overlappingrangeipreservations")
        .iter()
        .map(|r| r["spec"]["containerid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reservations, ids, "GC released the freed ones' reservations");

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
    let unreachable = cni_config("blue", &dead, &dir, "10.70.0.0/22", json!({}));
    let (ok, error) = cni("ADD", &unreachable, "c4", "default/d", &dir);
    assert!(!ok);
    assert_eq!(error["code"], 11, "{error}");
}

const WORKERS: usize = 8;
const ADDS_PER_WORKER: usize = 100;

#[test]
fn cni_contention_8_processes_x_100_adds() {
    let emulator = Emulator::start();
    let dir = temp_dir("cni-contention");
    let kubeconfig = emulator.kubeconfig(&dir, None);
    let config = cni_config("blue", &kubeconfig, &dir, "10.70.0.0/22", json!({}));
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
    let allocations = allocations(&emulator, "10.70.0.0-22");
    let owners: BTreeSet<&str> = allocations.values().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!((allocations.len(), owners.len()), (total, total), "0 duplicates");
    let offsets: BTreeSet<u32> = allocations.keys().map(|k| k.parse().unwrap()).collect();
    assert_eq!(
        offsets,
        (1..).filter(|o| o % 256 != 0).take(total).collect::<BTreeSet<u32>>(),
        "lowest-packed"
    );
    assert_eq!(emulator.list("overlappingrangeipreservations").len(), total);
    latencies.sort_by(f64::total_cmp);
    println!(
        "hereabouts CNI ADD (fresh process each) vs emulator: {total} ADDs by {WORKERS} parallel runtimes in {:.2} s = {:.0} allocations/s; \
         latency ms: min {:.2} median {:.2} p99 {:.2} max {:.2}; {} conflicts (409) retried \
         (baseline, contract v1, docs/benchmarks.md: 49–58 ADD/s, median 102–133, p99 468–583)",
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
    let config = cni_config("blue", &kubeconfig, &dir, "10.70.0.0/22", json!({}));
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
        "hereabouts CNI vs emulator, one at a time (100 each): ADD median {:.2} ms p99 {:.2} ms; DEL median {:.2} ms p99 {:.2} ms; {} requests",
        percentile(&add, 0.5),
        percentile(&add, 0.99),
        percentile(&del, 0.5),
        percentile(&del, 0.99),
        emulator.requests()
    );
}

// ---- reconcile ----------------------------------------------------------------------------

/// Runs `hereabouts ARGS…` (a tool command, not the plugin): stdout, stderr, exit code.
fn run_binary(args: &[&str], cache: &Path) -> (String, String, i32) {
    let output = Command::new(env!("CARGO_BIN_EXE_hereabouts"))
        .args(args)
        .env("HEREABOUTS_CACHE_DIR", cache)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        output.status.code().unwrap(),
    )
}

fn run_reconcile(kubeconfig: &Path, args: &[&str]) -> (String, String, bool) {
    let kubeconfig = kubeconfig.to_str().unwrap();
    let mut all = vec!["reconcile", "--kubeconfig", kubeconfig];
    all.extend(args);
    let (stdout, stderr, code) = run_binary(&all, &Path::new(kubeconfig).with_extension("cache"));
    (stdout, stderr, code == 0)
}

#[test]
fn reconcile_through_the_binary_in_text_and_json() {
    let emulator = Emulator::start();
    let dir = temp_dir("reconcile");
    let kubeconfig = emulator.kubeconfig(&dir, None);
    let config =
        cni_config("blue", &kubeconfig, &dir, "10.50.0.0/24", json!({"network_name": "blue"}));
    // live: running with .1 in its network-status · gone: no pod.
    for (container, podref) in [("c-live", "default/live"), ("c-gone", "default/gone")] {
        assert!(cni("ADD", &config, container, podref, &dir).0);
    }
    emulator.insert("pods", pod("default", "live", "Running", &["10.50.0.1"]));
    // A reservation Whereabouts left behind for a pod that is gone.
    emulator.insert(
        "overlappingrangeipreservations",
        json!({"metadata": {"name": "blue-10.50.0.77", "namespace": NS}, "spec": {"podref": "default/ghost"}}),
    );
    let pool_before = emulator.get("ippools", NS, "blue-10.50.0.0-24").unwrap();

    let (stdout, stderr, ok) = run_reconcile(&kubeconfig, &["--dry-run"]);
    assert!(ok, "{stdout}\n{stderr}");
    for line in [
        "would free 10.50.0.2 (allocation blue-10.50.0.0-24, pod default/gone, container c-gone net1): pod no longer exists",
        "would free 10.50.0.77 (reservation blue-10.50.0.77, pod default/ghost",
        "reconcile (dry run): 4 checked, 2 kept, 2 would free",
    ] {
        assert!(stdout.contains(line), "{line:?} missing:\n{stdout}");
    }
    assert_eq!(emulator.get("ippools", NS, "blue-10.50.0.0-24").unwrap(), pool_before);

    let (stdout, stderr, ok) = run_reconcile(&kubeconfig, &["--json"]);
    assert!(ok, "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("--json prints one JSON object");
    assert_eq!(
        report,
        json!({"dry_run": false, "checked": 4, "kept": 2, "skipped_pools": [], "freed": [
            {"object": "blue-10.50.0.0-24", "kind": "allocation", "address": "10.50.0.2",
             "podref": "default/gone", "container_id": "c-gone", "ifname": "net1",
             "reason": "pod no longer exists"},
            {"object": "blue-10.50.0.77", "kind": "reservation", "address": "10.50.0.77",
             "podref": "default/ghost", "container_id": "", "ifname": "",
             "reason": "pod no longer exists"}]})
    );
    assert_eq!(allocations(&emulator, "blue-10.50.0.0-24").keys().collect::<Vec<_>>(), ["1"]);

    let (stdout, _, ok) = run_reconcile(&kubeconfig, &[]);
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
    let dir = temp_dir("controller");
    let kubeconfig = emulator.kubeconfig(&dir, None);
    let config =
        cni_config("blue", &kubeconfig, &dir, "10.60.0.0/24", json!({"network_name": "blue"}));
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        assert!(cni("ADD", &config, &format!("c-{name}"), &format!("default/{name}"), &dir).0);
        emulator.insert("pods", pod("default", name, "Running", &[&format!("10.60.0.{}", i + 1)]));
    }
    let child = Command::new(env!("CARGO_BIN_EXE_hereabouts"))
        .args(["controller", "--grace-seconds=1", "--kubeconfig"])
        .arg(&kubeconfig)
        .env("HEREABOUTS_CACHE_DIR", &dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _child = KillOnDrop(child);
    let slots = || allocations(&emulator, "blue-10.60.0.0-24").keys().cloned().collect::<Vec<_>>();
    // Let the controller list and start watching, then delete pod a.
    eventually("the controller to watch pods", || emulator.watches() > 0);
    let started = Instant::now();
    emulator.delete("pods", "default", "a");
    eventually("a's address to be freed", || slots() == ["2", "3"]);
    let freed_after = started.elapsed();
    // The pool is written first and the reservation deleted right after (so a crash can never
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

/// Peak resident memory (VmHWM, KiB) of a child, polled from /proc until it exits; the last
/// reading before exit (a high-water mark only grows).
fn run_measuring_peak(mut command: Command) -> (std::process::Output, u64, Duration) {
    use std::io::Read;
    let started = Instant::now();
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).unwrap();
        out
    });
    let mut peak_kib = 0;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(line) = text.lines().find(|l| l.starts_with("VmHWM:"))
        {
            peak_kib = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let elapsed = started.elapsed();
    let mut stderr = Vec::new();
    child.stderr.take().unwrap().read_to_end(&mut stderr).unwrap();
    let output = std::process::Output { status, stdout: reader.join().unwrap(), stderr };
    (output, peak_kib, elapsed)
}

/// Reconcile at scale through the binary: 50,000 pods and 20,000 allocations in four pools.
/// The pods are listed in pages, the gone pods' addresses (every 20th) are found, and the
/// pass's time and peak memory are printed (docs/benchmarks.md). `HEREABOUTS_BEFORE=BIN` also
/// runs an earlier binary's reconcile on the same objects, for the side-by-side figure.
#[test]
fn reconcile_pages_through_50000_pods() {
    let emulator = Emulator::start();
    let dir = temp_dir("reconcile-scale");
    let kubeconfig = emulator.kubeconfig(&dir, None);
    let mut gone = 0;
    for quarter in 0..4u32 {
        let mut allocations = serde_json::Map::new();
        for offset in 1..=5_000u32 {
            let i = quarter * 5_000 + offset;
            allocations.insert(
                offset.to_string(),
                json!({"id": format!("c-{i}"), "podref": format!("default/p{i}"), "ifname": "net1"}),
            );
            let address = std::net::Ipv4Addr::from(
                u32::from(std::net::Ipv4Addr::new(10, 60, 0, 0)) + quarter * 16_384 + offset,
            );
            if i % 20 == 0 {
                gone += 1;
            } else {
                emulator.insert(
                    "pods",
                    pod("default", &format!("p{i}"), "Running", &[&address.to_string()]),
                );
            }
        }
        let name = format!("blue-10.60.{}.0-18", quarter * 64);
        emulator.insert(
            "ippools",
            json!({"metadata": {"name": name, "namespace": NS},
                   "spec": {"range": format!("10.60.{}.0/18", quarter * 64), "allocations": allocations}}),
        );
    }
    // Other workloads' pods, up to 50,000 in all.
    for i in 0..(50_000 - (20_000 - gone)) {
        emulator.insert("pods", pod("other", &format!("q{i}"), "Running", &[]));
    }
    assert_eq!(emulator.list("pods").len(), 50_000);

    let mut runs = vec![("now", env!("CARGO_BIN_EXE_hereabouts").to_string())];
    if let Ok(before) = std::env::var("HEREABOUTS_BEFORE") {
        runs.push(("before", before));
    }
    for (label, binary) in runs {
        let (lists_before, _) = emulator.lists("pods");
        let mut command = Command::new(&binary);
        command.args(["reconcile", "--dry-run", "--json", "--kubeconfig"]).arg(&kubeconfig);
        let (output, peak_kib, elapsed) = run_measuring_peak(command);
        assert!(output.status.success(), "{label}: {}", String::from_utf8_lossy(&output.stderr));
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["freed"].as_array().unwrap().len(), gone as usize, "{label}");
        assert_eq!(report["checked"], 20_000, "{label}");
        let (lists, _) = emulator.lists("pods");
        println!(
            "reconcile ({label}), 50,000 pods, 20,000 allocations: {:.2} s, peak RSS {:.1} MiB, {} pod list requests",
            elapsed.as_secs_f64(),
            peak_kib as f64 / 1024.0,
            lists - lists_before
        );
        if label == "now" {
            assert_eq!(lists - lists_before, 100, "pages of 500");
        }
    }
}

fn status(args: &[&str], cache: &Path) -> (String, String, i32) {
    let mut all = vec!["status"];
    all.extend(args);
    run_binary(&all, cache)
}

/// `hereabouts status` on the Kubernetes store, from a NetworkAttachmentDefinition: the pool
/// counted, and what does not add up (a stranded reservation, one attachment on two
/// addresses), in text and JSON; `--who` names a holder.
#[test]
fn status_reads_a_nad_and_reports_the_pool_and_its_inconsistencies() {
    let emulator = Emulator::start();
    let dir = temp_dir("status");
    let kubeconfig = emulator.kubeconfig(&dir, None);
    let config =
        cni_config("blue-net", &kubeconfig, &dir, "10.53.0.0/28", json!({"network_name": "blue"}));
    for (container, podref) in [("c-a", "default/a"), ("c-b", "default/b")] {
        assert!(cni("ADD", &config, container, podref, &dir).0);
    }
    let nad = format!(
        "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: blue-net\n  namespace: default\nspec:\n  config: '{}'\n",
        config
    );
    let nad_path = dir.join("nad.yaml");
    std::fs::write(&nad_path, nad).unwrap();
    let nad_arg = nad_path.to_str().unwrap();

    let (stdout, stderr, code) = status(&["--config", nad_arg, "--format", "json"], &dir);
    assert_eq!(code, 0, "{stderr}");
    let expected = json!({"pools": [{"network": "NAD default/blue-net", "network_name": "blue",
        "range": "10.53.0.0/28", "pool": "blue-10.53.0.0-28", "capacity": "14", "allocated": 2,
        "free": "12", "reservations": 2, "inconsistent": []}]});
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap(), expected);

    // A reservation stranded by a process that died between its two writes, and the same
    // attachment written on a second address.
    emulator.insert(
        "overlappingrangeipreservations",
        json!({"metadata": {"name": "blue-10.53.0.9", "namespace": NS},
               "spec": {"containerid": "c-ghost", "podref": "default/ghost", "ifname": "net1"}}),
    );
    let mut pool = emulator.get("ippools", NS, "blue-10.53.0.0-28").unwrap();
    pool["spec"]["allocations"]["5"] =
        json!({"id": "c-a", "podref": "default/a", "ifname": "net1"});
    emulator.update("ippools", pool);

    let (stdout, stderr, code) = status(&["--config", nad_arg], &dir);
    assert_eq!(code, 2, "inconsistencies exit 2: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        [
            "NAD",
            "default/blue-net",
            "blue",
            "10.53.0.0/28",
            "blue-10.53.0.0-28",
            "14",
            "3",
            "11",
            "3"
        ]
    );
    assert_eq!(
        lines[2],
        "  inconsistent: container c-a (net1) holds 2 addresses: 10.53.0.1, 10.53.0.5"
    );
    assert_eq!(
        lines[3],
        "  inconsistent: reservation of 10.53.0.9 (pod default/ghost, container c-ghost) has no allocation behind it"
    );

    let (stdout, _, code) = status(&["--config", nad_arg, "--who", "10.53.0.2"], &dir);
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        "10.53.0.2 in NAD default/blue-net (pool blue-10.53.0.0-28): container c-b, pod default/b, ifname net1"
    );
    let (stdout, _, code) =
        status(&["--config", nad_arg, "--who", "10.53.0.7", "--format", "json"], &dir);
    assert_eq!((stdout.trim(), code), (r#"{"holders":[]}"#, 3));
}

/// `GET /metrics` from the controller's port (raw HTTP/1.1): the body.
fn scrape(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The value of the sample whose name and labels start with `prefix`.
fn sample(body: &str, prefix: &str) -> Option<f64> {
    body.lines().find(|l| l.starts_with(prefix))?.rsplit(' ').next()?.parse().ok()
}

/// The controller's metrics, scraped: the pool gauges match the store, a reconcile pass run by
/// the controller is counted with its duration, and its frees are counted by reason.
#[test]
fn the_controller_serves_metrics_that_match_the_store() {
    let emulator = Emulator::start();
    let dir = temp_dir("metrics");
    let kubeconfig = emulator.kubeconfig(&dir, None);
    let config =
        cni_config("blue", &kubeconfig, &dir, "10.61.0.0/24", json!({"network_name": "blue"}));
    // a and b run; c's pod is gone.
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        assert!(cni("ADD", &config, &format!("c-{name}"), &format!("default/{name}"), &dir).0);
        if *name != "c" {
            emulator
                .insert("pods", pod("default", name, "Running", &[&format!("10.61.0.{}", i + 1)]));
        }
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(env!("CARGO_BIN_EXE_hereabouts"))
        .args(["controller", "--grace-seconds=1", "--reconcile-every-seconds=1"])
        .args(["--metrics-address=127.0.0.1", &format!("--metrics-port={port}"), "--kubeconfig"])
        .arg(&kubeconfig)
        .env("HEREABOUTS_CACHE_DIR", &dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _child = KillOnDrop(child);
    let pool = r#"{pool="blue-10.61.0.0-24",range="10.61.0.0/24",network_name="blue"}"#;
    eventually("a reconcile pass to free c", || {
        scrape(port).is_some_and(|body| {
            sample(&body, r#"hereabouts_frees_total{reason="pod no longer exists"}"#) == Some(1.0)
        })
    });
    let body = scrape(port).unwrap();
    let held = allocations(&emulator, "blue-10.61.0.0-24").len() as f64;
    assert_eq!(held, 2.0);
    assert_eq!(sample(&body, &format!("hereabouts_pool_allocated{pool}")), Some(held), "{body}");
    assert_eq!(sample(&body, &format!("hereabouts_pool_capacity{pool}")), Some(254.0), "{body}");
    assert_eq!(sample(&body, &format!("hereabouts_pool_free{pool}")), Some(254.0 - held), "{body}");
    assert!(sample(&body, "hereabouts_reconcile_runs_total").is_some_and(|n| n >= 1.0), "{body}");
    assert!(
        sample(&body, "hereabouts_reconcile_duration_seconds_count").is_some_and(|n| n >= 1.0),
        "{body}"
    );
    assert!(body.trim_end().ends_with("# EOF"), "OpenMetrics text: {body}");
}
