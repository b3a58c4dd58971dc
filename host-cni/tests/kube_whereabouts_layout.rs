//! Taking over a running Whereabouts cluster on the real kube-apiserver: the objects Whereabouts
//! v0.9 wrote (tests/k8s/fixtures/whereabouts-v0.9.yaml: IPPools with allocations, their
//! OverlappingRangeIPReservations, a NodeSlicePool and a node's slice pool) are applied with
//! `kubectl apply --server-side`, as they would be restored from a backup, and Hereabouts then
//! works on them as they are: its ADDs skip every address Whereabouts handed out, a repeated
//! ADD finds the pod's own address, DEL frees Whereabouts' allocation and reservation, reconcile
//! frees only the gone pod's, and `hereabouts controller` keeps the slice assignments and frees
//! a deleted pod's address. Run by tests/k8s/run.sh (`--ignored on_the_real_server`).

mod kube_api;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kube_api::{Cluster, cni_call, pod, reconciler_beside, temp_dir};
use serde_json::{Value, json};

const NS: &str = "kube-system";
const FIXTURE: &str = include_str!("k8s/fixtures/whereabouts-v0.9.yaml");

/// The plugin's config of network `name`, as the NAD of the fixture has it, on `kubeconfig`.
fn network(name: &str, kubeconfig: &Path, dir: &Path) -> Value {
    let mut ipam = match name {
        "blue" => json!({"range": "10.50.0.0/24"}),
        _ => json!({"range": "10.60.0.0/24", "network_name": "green", "node_slice_size": "/28"}),
    };
    ipam["type"] = json!("whereabouts");
    ipam["kubernetes"] = json!({"kubeconfig": kubeconfig});
    ipam["configuration_path"] = json!(dir.join("no-flat-file.conf"));
    json!({"cniVersion": "0.3.1", "name": name, "type": "macvlan", "ipam": ipam})
}

/// ADD of pod `default/<name>` (container `c-<name>`) on `node`: the address it got.
fn add(config: &Value, node: &str, name: &str, dir: &Path) -> String {
    let bin = env!("CARGO_BIN_EXE_hereabouts");
    let podref = format!("default/{name}");
    let (ok, out, err) =
        cni_call(bin, Some(node), "ADD", config, &format!("c-{name}"), &podref, dir);
    assert!(ok, "ADD {name}: {out} {err}");
    let address = out["ips"][0]["address"].as_str().unwrap_or_else(|| panic!("{out}"));
    address.split('/').next().unwrap().to_string()
}

fn offsets(cluster: &Cluster, pool: &str) -> Vec<u32> {
    let pool = cluster.get("ippools", NS, pool).unwrap_or_else(|| panic!("no IPPool {pool}"));
    let mut keys: Vec<u32> = pool["spec"]["allocations"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.parse().unwrap())
        .collect();
    keys.sort();
    keys
}

fn reservations(cluster: &Cluster) -> Vec<String> {
    let mut names: Vec<String> = cluster
        .list("overlappingrangeipreservations")
        .iter()
        .map(|r| r["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn slice_owners(cluster: &Cluster) -> Vec<(String, String)> {
    let pool = cluster.get("nodeslicepools", NS, "green").expect("NodeSlicePool green");
    pool["status"]["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["nodeName"] != "")
        .map(|a| (a["nodeName"].as_str().unwrap().into(), a["sliceRange"].as_str().unwrap().into()))
        .collect()
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs the real kube-apiserver: host-cni/tests/k8s/run.sh"]
fn whereabouts_objects_applied_with_kubectl_keep_their_addresses_on_the_real_server() {
    let cluster = Cluster::start();
    let server = cluster.real().expect("HEREABOUTS_TEST_APISERVER names the real server");
    let dir = temp_dir("whereabouts-layout", "takeover");
    let kubeconfig = cluster.kubeconfig(&dir, None);
    for node in ["worker-1", "worker-2"] {
        cluster.insert(
            "nodes",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}),
        );
    }

    // 1. Whereabouts' objects, applied as a user applies them; read back unpruned.
    let applied = server
        .kubectl(&["apply", "--server-side", "--field-manager=whereabouts", "-f", "-"], FIXTURE);
    assert_eq!(applied.lines().count(), 9, "every object applied: {applied}");
    assert_eq!(offsets(&cluster, "10.50.0.0-24"), [1, 2, 5]);
    let web_1 = &cluster.get("ippools", NS, "10.50.0.0-24").unwrap()["spec"]["allocations"]["2"];
    assert_eq!(*web_1, json!({"id": "c-web-1", "podref": "default/web-1", "ifname": "net1"}));
    assert_eq!(offsets(&cluster, "green-worker-1-10.60.0.0-28"), [1]);
    let slices = slice_owners(&cluster);
    let expected_slices = vec![
        ("worker-1".to_string(), "10.60.0.0/28".to_string()),
        ("worker-2".to_string(), "10.60.0.16/28".to_string()),
    ];
    assert_eq!(slices, expected_slices);
    let whereabouts_reservations =
        ["10.50.0.1", "10.50.0.2", "10.50.0.5", "green-10.60.0.1"].map(String::from).to_vec();
    assert_eq!(reservations(&cluster), whereabouts_reservations);
    // The pods Whereabouts gave those addresses to, running (db-0 on worker-1); `gone` is not.
    for (name, address) in [("web-0", "10.50.0.1"), ("web-1", "10.50.0.2"), ("db-0", "10.60.0.1")] {
        cluster.insert("pods", pod("default", name, "Running", &[address]));
    }

    // 2. Hereabouts' ADDs on the same objects: the lowest address Whereabouts did not hand out.
    let blue = network("blue", &kubeconfig, &dir);
    let green = network("green", &kubeconfig, &dir);
    assert_eq!(add(&blue, "worker-1", "new-1", &dir), "10.50.0.3");
    assert_eq!(add(&blue, "worker-2", "new-2", &dir), "10.50.0.4");
    assert_eq!(add(&blue, "worker-1", "new-3", &dir), "10.50.0.6", "5 is still the gone pod's");
    assert_eq!(add(&blue, "worker-1", "web-0", &dir), "10.50.0.1", "a repeated ADD: its own");
    assert_eq!(add(&green, "worker-1", "db-1", &dir), "10.60.0.2", "worker-1's slice, after db-0");
    assert_eq!(add(&green, "worker-2", "db-2", &dir), "10.60.0.17", "worker-2's slice");
    assert_eq!(offsets(&cluster, "10.50.0.0-24"), [1, 2, 3, 4, 5, 6]);
    assert_eq!(offsets(&cluster, "green-worker-1-10.60.0.0-28"), [1, 2]);
    assert_eq!(offsets(&cluster, "green-worker-2-10.60.0.16-28"), [1]);
    for (name, address) in [
        ("new-1", "10.50.0.3"),
        ("new-2", "10.50.0.4"),
        ("new-3", "10.50.0.6"),
        ("db-1", "10.60.0.2"),
        ("db-2", "10.60.0.17"),
    ] {
        cluster.insert("pods", pod("default", name, "Running", &[address]));
    }

    // 3. DEL of a pod Whereabouts set up frees its allocation and its reservation.
    let bin = env!("CARGO_BIN_EXE_hereabouts");
    let (ok, _, err) =
        cni_call(bin, Some("worker-1"), "DEL", &blue, "c-web-1", "default/web-1", &dir);
    assert!(ok, "DEL web-1: {err}");
    cluster.delete("pods", "default", "web-1");
    assert_eq!(offsets(&cluster, "10.50.0.0-24"), [1, 3, 4, 5, 6]);
    assert!(!reservations(&cluster).contains(&"10.50.0.2".to_string()));

    // 4. Reconcile, as the reconciler's ServiceAccount: only the gone pod's address is freed.
    let output = Command::new(bin)
        .args(["reconcile", "--json", "--kubeconfig"])
        .arg(reconciler_beside(&kubeconfig))
        .env("HEREABOUTS_CACHE_DIR", &dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "reconcile: {}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let freed = report["freed"].as_array().unwrap();
    assert_eq!(freed.len(), 1, "only the gone pod's: {report}");
    assert!(freed[0].to_string().contains("10.50.0.5"), "{report}");
    assert_eq!(offsets(&cluster, "10.50.0.0-24"), [1, 3, 4, 6]);
    assert_eq!(offsets(&cluster, "green-worker-1-10.60.0.0-28"), [1, 2]);
    assert!(!reservations(&cluster).contains(&"10.50.0.5".to_string()));

    // 5. The controller (pods and node slices): Whereabouts' slice assignments are kept, and a
    // pod deleted while it watches has its address freed, nothing else.
    let mut controller = Command::new(bin)
        .args(["controller", "--grace-seconds=0", "--kubeconfig"])
        .arg(reconciler_beside(&kubeconfig))
        .env("HEREABOUTS_CACHE_DIR", &dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("the controller to watch pods", || cluster.watching("pods") > 0);
    cluster.delete("pods", "default", "web-0");
    eventually("web-0's address to be freed", || offsets(&cluster, "10.50.0.0-24") == [3, 4, 6]);
    std::thread::sleep(Duration::from_secs(2));
    let _ = controller.kill();
    let _ = controller.wait();
    assert_eq!(offsets(&cluster, "10.50.0.0-24"), [3, 4, 6]);
    assert_eq!(offsets(&cluster, "green-worker-1-10.60.0.0-28"), [1, 2]);
    assert_eq!(offsets(&cluster, "green-worker-2-10.60.0.16-28"), [1]);
    assert_eq!(slice_owners(&cluster), expected_slices, "the slice assignments are kept");
    let held = reservations(&cluster);
    for kept in ["10.50.0.3", "10.50.0.4", "10.50.0.6", "green-10.60.0.1", "green-10.60.0.2"] {
        assert!(held.contains(&kept.to_string()), "{kept} kept: {held:?}");
    }
    assert!(!held.contains(&"10.50.0.1".to_string()), "web-0's reservation freed: {held:?}");
}
