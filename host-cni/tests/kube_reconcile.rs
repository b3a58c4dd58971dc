//! Reconcile and the controller's frees (hereabouts-kube) against the API-server emulation
//! (tests/kube_api), through the real store, client and allocator component: what is
//! freed and kept for each pod state, the report, and the reservations the Kubernetes store
//! can strand — a crash between a reservation's POST and its IPPool's PUT, a release whose
//! delete failed after the pool was written. (The `hereabouts reconcile` and `controller`
//! commands themselves: kube_cli.rs.)

mod kube_api;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hereabouts_host::bindings::{AllocateRequest, Lease, NetworkConfig, Owner};
use hereabouts_host::error::CniError;
use hereabouts_host::runtime::Allocator;
use hereabouts_kube::{controller, reconcile};
use hereabouts_stores::kube::{KubeStore, Timeouts};
use kube_api::{Cluster, pod, reconciler_beside};
use serde_json::{Value, json};

const NS: &str = "kube-system";

fn temp_dir(name: &str) -> PathBuf {
    kube_api::temp_dir("kube-reconcile", name)
}

fn store(kubeconfig: &Path) -> KubeStore {
    KubeStore::connect(Some(kubeconfig), Timeouts::default()).expect("connect")
}

fn allocator(store: &KubeStore) -> Allocator {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kube-reconcile-cache");
    Allocator::with_cache(Box::new(store.clone()), Some(&cache)).expect("load the component")
}

/// Reconcile's and the controller's store and allocator, as the reconciler's ServiceAccount
/// (the kubeconfig beside the node plugin's `kubeconfig`): the tests allocate as the plugin
/// and free as the reconciler, each with the grants deploy/ gives it.
fn reconciler_of(kubeconfig: &Path) -> (KubeStore, Allocator) {
    let store = store(&reconciler_beside(kubeconfig));
    let allocator = allocator(&store);
    (store, allocator)
}

fn blue(allocator: &mut Allocator, range: &str) -> NetworkConfig {
    let ipam = json!({"network_name": "blue", "range": range});
    allocator.read_config(&ipam.to_string()).expect("a valid ipam section").network
}

fn owner(name: &str) -> Owner {
    Owner {
        container_id: format!("c-{name}"),
        ifname: "net1".into(),
        podref: format!("default/{name}"),
        cni_network: "blue-net".into(),
    }
}

fn allocate(
    allocator: &mut Allocator,
    network: &NetworkConfig,
    name: &str,
) -> Result<Vec<Lease>, CniError> {
    let request = AllocateRequest { owner: owner(name), requested: Vec::new() };
    allocator.allocate(network, &request).map_err(CniError::from)
}

fn addresses(leases: &[Lease]) -> Vec<String> {
    leases.iter().map(|l| l.address.clone()).collect()
}

fn offsets(cluster: &Cluster, pool: &str) -> Vec<String> {
    let pool = cluster.get("ippools", NS, pool).expect("pool");
    pool["spec"]["allocations"].as_object().unwrap().keys().cloned().collect()
}

fn reservation_names(cluster: &Cluster) -> BTreeSet<String> {
    cluster
        .list("overlappingrangeipreservations")
        .iter()
        .map(|r| r["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn freed(report: &reconcile::Report) -> Vec<(&str, &str, &str)> {
    report.freed.iter().map(|f| (f.kind, f.address.as_str(), f.reason.as_str())).collect()
}

#[test]
fn reconcile_frees_gone_pods_and_keeps_live_and_pending_ones() {
    let cluster = Cluster::start();
    let kubeconfig = cluster.kubeconfig(&temp_dir("pods"), None);
    let store = store(&kubeconfig);
    let mut allocator = allocator(&store);
    let (reconciler, _) = reconciler_of(&kubeconfig);
    let blue = blue(&mut allocator, "10.50.0.0/24");
    // live: running, its network-status lists .1 · pending: not annotated yet · gone: no pod ·
    // moved: running but its status lists another address · done: Succeeded.
    for (i, name) in ["live", "pending", "gone", "moved", "done"].iter().enumerate() {
        let leases = allocate(&mut allocator, &blue, name).unwrap();
        assert_eq!(addresses(&leases), [format!("10.50.0.{}", i + 1)]);
    }
    cluster.insert("pods", pod("default", "live", "Running", &["10.50.0.1"]));
    cluster.insert("pods", pod("default", "pending", "Pending", &[]));
    cluster.insert("pods", pod("default", "moved", "Running", &["10.50.0.99"]));
    cluster.insert("pods", pod("default", "done", "Succeeded", &["10.50.0.5"]));
    // A reservation Whereabouts left behind for a pod that is gone.
    cluster.insert(
        "overlappingrangeipreservations",
        json!({"metadata": {"name": "blue-10.50.0.77", "namespace": NS}, "spec": {"containerid": "c-ghost", "podref": "default/ghost", "ifname": "net1"}}),
    );
    // A node slice's pool (not `[network_name-]<range>`): skipped, untouched.
    cluster.insert(
        "ippools",
        json!({"metadata": {"name": "10.52.0.0-24-node1", "namespace": NS}, "spec": {"range": "10.52.0.0/24", "allocations": {"1": {"id": "c-x", "podref": "default/gone-too"}}}}),
    );
    let pool_before = cluster.get("ippools", NS, "blue-10.50.0.0-24").unwrap();
    let expected = [
        ("allocation", "10.50.0.3", "pod no longer exists"),
        ("allocation", "10.50.0.4", "running pod no longer has this address on any network"),
        ("allocation", "10.50.0.5", "pod has terminated (Succeeded)"),
        // A reservation reports its address, read back from its object's name.
        ("reservation", "10.50.0.77", "pod no longer exists"),
    ];

    let report = reconcile::reconcile(&reconciler, true).unwrap();
    assert_eq!(freed(&report), expected);
    // 5 allocations, and the reservations not released with them (.1, .2, .77).
    assert_eq!((report.checked, report.kept), (8, 4));
    assert_eq!(report.skipped_pools, ["10.52.0.0-24-node1"]);
    assert_eq!(
        cluster.get("ippools", NS, "blue-10.50.0.0-24").unwrap(),
        pool_before,
        "--dry-run changed nothing"
    );
    // The report's shape, as `hereabouts reconcile --json` prints it.
    let json = serde_json::to_value(&report).unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&json), ["checked", "dry_run", "freed", "kept", "skipped_pools"]);
    assert_eq!(
        json["freed"][0],
        json!({"object": "blue-10.50.0.0-24", "kind": "allocation", "address": "10.50.0.3",
               "podref": "default/gone", "container_id": "c-gone", "ifname": "net1",
               "reason": "pod no longer exists"})
    );

    assert!(cluster.list("events").is_empty(), "a dry run reports nothing");
    let report = reconcile::reconcile(&reconciler, false).unwrap();
    assert_eq!(freed(&report), expected);
    assert_eq!(offsets(&cluster, "blue-10.50.0.0-24"), ["1", "2"], "live and pending kept");
    // Each free is an Event: on its pod while the pod exists, else on the object that held it.
    let mut events: Vec<(String, String, String, String)> = cluster
        .list("events")
        .iter()
        .map(|e| {
            let text = |p: &str| e.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
            (text("/regarding/kind"), text("/regarding/name"), text("/reason"), text("/note"))
        })
        .collect();
    events.sort();
    let event = |kind: &str, name: &str, note: &str| {
        (kind.to_string(), name.to_string(), "AddressFreed".to_string(), note.to_string())
    };
    assert_eq!(
        events,
        [
            event(
                "IPPool",
                "blue-10.50.0.0-24",
                "freed 10.50.0.3 (allocation blue-10.50.0.0-24, pod default/gone, container c-gone net1): pod no longer exists"
            ),
            event(
                "OverlappingRangeIPReservation",
                "blue-10.50.0.77",
                "freed 10.50.0.77 (reservation blue-10.50.0.77, pod default/ghost, container c-ghost net1): pod no longer exists"
            ),
            event(
                "Pod",
                "done",
                "freed 10.50.0.5 (allocation blue-10.50.0.0-24, pod default/done, container c-done net1): pod has terminated (Succeeded)"
            ),
            event(
                "Pod",
                "moved",
                "freed 10.50.0.4 (allocation blue-10.50.0.0-24, pod default/moved, container c-moved net1): running pod no longer has this address on any network"
            ),
        ]
    );
    assert_eq!(
        reservation_names(&cluster),
        BTreeSet::from(["blue-10.50.0.1".to_string(), "blue-10.50.0.2".to_string()])
    );
    assert_eq!(offsets(&cluster, "10.52.0.0-24-node1"), ["1"]);

    // A second pass finds nothing to do.
    let report = reconcile::reconcile(&reconciler, false).unwrap();
    assert!(report.freed.is_empty(), "{:?}", report.freed);
}

#[test]
fn reconcile_frees_the_reservations_the_kubernetes_store_strands() {
    let cluster = Cluster::start();
    let kubeconfig = cluster.kubeconfig(&temp_dir("stranded"), None);
    let store = store(&kubeconfig);
    let mut allocator = allocator(&store);
    let (reconciler, _) = reconciler_of(&kubeconfig);
    let blue = blue(&mut allocator, "10.51.0.0/24");

    // The crash shape: the reservation's POST went through, the IPPool's PUT (here its first
    // write, a POST) did not, and neither did the undo. Twice: for a pod that is then gone,
    // and for one that lives on.
    cluster.deny("create", "ippools");
    cluster.deny("delete", "overlappingrangeipreservations");
    allocate(&mut allocator, &blue, "crashed").unwrap_err();
    allocate(&mut allocator, &blue, "alive").unwrap_err();
    cluster.allow("create", "ippools");
    cluster.allow("delete", "overlappingrangeipreservations");
    assert!(cluster.get("ippools", NS, "blue-10.51.0.0-24").is_none());
    assert_eq!(
        reservation_names(&cluster),
        BTreeSet::from(["blue-10.51.0.1".to_string(), "blue-10.51.0.2".to_string()])
    );
    cluster.insert("pods", pod("default", "alive", "Pending", &[]));
    // A pod whose reservation an allocation backs.
    cluster.insert("pods", pod("default", "kept", "Pending", &[]));
    assert_eq!(addresses(&allocate(&mut allocator, &blue, "kept").unwrap()), ["10.51.0.3"]);

    let report = reconcile::reconcile(&reconciler, false).unwrap();
    assert_eq!(freed(&report), [("reservation", "10.51.0.1", "pod no longer exists")]);
    assert_eq!(report.freed[0].podref, "default/crashed");
    assert_eq!(
        reservation_names(&cluster),
        BTreeSet::from(["blue-10.51.0.2".to_string(), "blue-10.51.0.3".to_string()]),
        "the living pod's stranded reservation and the backed one are kept"
    );
    // .1 is free again.
    cluster.insert("pods", pod("default", "next", "Pending", &[]));
    assert_eq!(addresses(&allocate(&mut allocator, &blue, "next").unwrap()), ["10.51.0.1"]);

    // The other shape: a DEL whose reservation delete fails after the pool was written.
    cluster.deny("delete", "overlappingrangeipreservations");
    let released = allocator.release(&blue, &owner("kept")).map_err(CniError::from).unwrap();
    assert_eq!(addresses(&released), ["10.51.0.3"], "the DEL itself succeeds");
    cluster.allow("delete", "overlappingrangeipreservations");
    assert!(reservation_names(&cluster).contains("blue-10.51.0.3"));
    // While its pod is there (the runtime's DEL came first), the reservation is kept.
    let report = reconcile::reconcile(&reconciler, false).unwrap();
    assert!(report.freed.is_empty(), "{:?}", report.freed);
    cluster.delete("pods", "default", "kept");
    let report = reconcile::reconcile(&reconciler, false).unwrap();
    assert_eq!(freed(&report), [("reservation", "10.51.0.3", "pod no longer exists")]);
    assert!(!reservation_names(&cluster).contains("blue-10.51.0.3"));
}

#[test]
fn the_controller_frees_a_gone_pods_addresses_and_keeps_a_recreated_ones() {
    let cluster = Cluster::start();
    let kubeconfig = cluster.kubeconfig(&temp_dir("controller"), None);
    let store = store(&kubeconfig);
    let mut allocator = allocator(&store);
    let (reconciler, mut freeing) = reconciler_of(&kubeconfig);
    let blue = blue(&mut allocator, "10.60.0.0/24");
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        allocate(&mut allocator, &blue, name).unwrap();
        cluster.insert("pods", pod("default", name, "Running", &[&format!("10.60.0.{}", i + 1)]));
    }
    // a is gone; b was deleted and recreated under its name (StatefulSet), Pending; c lives.
    cluster.delete("pods", "default", "a");
    cluster.delete("pods", "default", "b");
    cluster.insert("pods", pod("default", "b", "Pending", &[]));
    let freed = controller::free_pod(&reconciler, &mut freeing, "default/a").unwrap();
    let freed: Vec<(&str, &str)> =
        freed.iter().map(|f| (f.address.as_str(), f.reason.as_str())).collect();
    assert_eq!(freed, [("10.60.0.1", "pod no longer exists")]);
    for podref in ["default/b", "default/c", "default/never-had-one", "not-a-podref"] {
        let freed = controller::free_pod(&reconciler, &mut freeing, podref).unwrap();
        assert!(freed.is_empty(), "{podref}: {freed:?}");
    }
    assert_eq!(offsets(&cluster, "blue-10.60.0.0-24"), ["2", "3"]);
    assert!(cluster.get("overlappingrangeipreservations", NS, "blue-10.60.0.1").is_none());
}

/// A pod of `pod(…)` bound to `node`, being deleted or not, with status conditions.
fn on_node(name: &str, ip: &str, node: &str, deleting: bool, conditions: Value) -> Value {
    let mut object = pod("default", name, "Running", &[ip]);
    object["spec"]["nodeName"] = json!(node);
    object["status"]["conditions"] = conditions;
    if deleting {
        object["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    object
}

fn node(name: &str, ready: &str, since_seconds_ago: u64) -> Value {
    let since = std::time::SystemTime::now() - std::time::Duration::from_secs(since_seconds_ago);
    let since = since.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let since = k8s_openapi::jiff::Timestamp::from_second(since as i64).unwrap().to_string();
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
           "status": {"conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": since,
                                      "reason": "KubeletReady"}]}})
}

/// Pods that can never run again, as a table of pod and node states in the emulation: the
/// taint manager's eviction (Whereabouts' rule), a deleting pod whose node object is gone, and
/// with the grace period set, a deleting pod on a node NotReady for longer. The pods are listed
/// in pages, one extra page of unrelated pods at a time.
#[test]
fn reconcile_frees_what_dead_nodes_strand() {
    let cluster = Cluster::start();
    let kubeconfig = cluster.kubeconfig(&temp_dir("dead-nodes"), None);
    let store = store(&kubeconfig);
    let mut allocator = allocator(&store);
    let (reconciler, mut freeing) = reconciler_of(&kubeconfig);
    let blue = blue(&mut allocator, "10.51.0.0/24");
    cluster.insert("nodes", node("live", "True", 3600));
    cluster.insert("nodes", node("dead", "Unknown", 600));
    let evicted = json!([{"type": "DisruptionTarget", "status": "True",
                          "reason": "DeletionByTaintManager", "message": "Taint manager: deleting due to NoExecute taint"}]);
    let preempted =
        json!([{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}]);
    // (pod, node, deleting, conditions)
    let table = [
        ("evicted", "dead", true, evicted),
        ("preempted", "live", true, preempted),
        ("node-gone", "gone", true, json!([])),
        ("running-node-gone", "gone", false, json!([])),
        ("deleting-live", "live", true, json!([])),
        ("deleting-dead", "dead", true, json!([])),
        ("running-dead", "dead", false, json!([])),
    ];
    for (i, (name, node, deleting, conditions)) in table.iter().enumerate() {
        let leases = allocate(&mut allocator, &blue, name).unwrap();
        let address = format!("10.51.0.{}", i + 1);
        assert_eq!(addresses(&leases), std::slice::from_ref(&address));
        cluster.insert("pods", on_node(name, &address, node, *deleting, conditions.clone()));
    }
    // 1,200 pods of other workloads: the pods are listed 500 at a time.
    for i in 0..1200 {
        cluster.insert("pods", pod("other", &format!("p{i:04}"), "Running", &[]));
    }

    let lists_before = cluster.lists("pods");
    let report = reconcile::reconcile(&reconciler, false).unwrap();
    assert_eq!(
        freed(&report),
        [
            (
                "allocation",
                "10.51.0.1",
                "pod was evicted from its node by the taint manager (DisruptionTarget: DeletionByTaintManager)"
            ),
            ("allocation", "10.51.0.3", "pod is being deleted and its node no longer exists"),
        ]
    );
    // 1,207 pods in pages of 500 (the real server counts each page as a list request).
    assert_eq!(cluster.lists("pods") - lists_before, 3, "1,207 pods in pages of 500");
    if let Cluster::Emulated(emulator) = &cluster {
        assert_eq!(emulator.lists("pods").1, 3, "each list asked for a page");
    }
    assert_eq!(offsets(&cluster, "blue-10.51.0.0-24"), ["2", "4", "5", "6", "7"]);

    // With a grace period shorter than the dead node's 600 s: its deleting pod is freed too;
    // the running pod on it, and the deleting pod on the live node, are not.
    let options = reconcile::Options {
        dry_run: false,
        not_ready_grace: Some(std::time::Duration::from_secs(300)),
    };
    let report = reconcile::reconcile_with(&reconciler, &options).unwrap();
    assert_eq!(
        freed(&report),
        [(
            "allocation",
            "10.51.0.6",
            "pod is being deleted on a node that has not been Ready for longer than the grace period"
        )]
    );
    // Longer than the node has been down: nothing more.
    let options = reconcile::Options {
        not_ready_grace: Some(std::time::Duration::from_secs(900)),
        ..options
    };
    assert!(reconcile::reconcile_with(&reconciler, &options).unwrap().freed.is_empty());
    assert_eq!(offsets(&cluster, "blue-10.51.0.0-24"), ["2", "4", "5", "7"]);

    // The controller applies the node rules to a deleting pod it is told of.
    let leases = allocate(&mut allocator, &blue, "late").unwrap();
    cluster.insert("pods", on_node("late", &leases[0].address, "gone", true, json!([])));
    let freed = controller::free_pod(&reconciler, &mut freeing, "default/late").unwrap();
    assert_eq!(
        freed.iter().map(|f| f.reason.as_str()).collect::<Vec<_>>(),
        ["pod is being deleted and its node no longer exists"]
    );
}

/// Claimed addresses (container id `ipamclaim:<namespace>/<name>`) follow their IPAMClaim,
/// not their pod, in the controller as in reconcile — the allocation and a reservation no
/// allocation backs alike.
#[test]
fn claimed_addresses_are_kept_while_their_claim_exists() {
    let cluster = Cluster::start();
    let kubeconfig = cluster.kubeconfig(&temp_dir("claimed"), None);
    let store = store(&kubeconfig);
    let mut allocator = allocator(&store);
    let (reconciler, mut freeing) = reconciler_of(&kubeconfig);
    let blue = blue(&mut allocator, "10.61.0.0/24");
    let claimed = Owner { container_id: "ipamclaim:vms/vm-a.blue".into(), ..owner("launcher") };
    let request = AllocateRequest { owner: claimed.clone(), requested: Vec::new() };
    allocator.allocate(&blue, &request).map_err(CniError::from).unwrap();
    cluster.insert(
        "ipamclaims",
        json!({"metadata": {"name": "vm-a.blue", "namespace": "vms"},
            "spec": {"network": "blue", "interface": "net1"}}),
    );
    // A claimed reservation no allocation backs (a crash between it and its pool write).
    cluster.insert(
        "overlappingrangeipreservations",
        json!({"metadata": {"name": "blue-10.61.0.9", "namespace": NS},
            "spec": {"containerid": "ipamclaim:vms/vm-b.blue", "podref": "vms/gone", "ifname": "net1"}}),
    );
    cluster.insert(
        "ipamclaims",
        json!({"metadata": {"name": "vm-b.blue", "namespace": "vms"},
            "spec": {"network": "blue", "interface": "net1"}}),
    );

    // Their pods are gone (the VM is stopped): kept.
    let kept = controller::free_pod(&reconciler, &mut freeing, "default/launcher").unwrap();
    assert!(kept.is_empty(), "{kept:?}");
    let report = reconcile::reconcile(&reconciler, false).unwrap();
    assert!(report.freed.is_empty(), "{:?}", report.freed);

    // The claims are deleted (with their VMs): freed.
    cluster.delete("ipamclaims", "vms", "vm-b.blue");
    let report = reconcile::reconcile(&reconciler, false).unwrap();
    assert_eq!(freed(&report), [("reservation", "10.61.0.9", "its IPAMClaim no longer exists")]);
    cluster.delete("ipamclaims", "vms", "vm-a.blue");
    let gone = controller::free_pod(&reconciler, &mut freeing, "default/launcher").unwrap();
    let gone: Vec<(&str, &str)> =
        gone.iter().map(|f| (f.address.as_str(), f.reason.as_str())).collect();
    assert_eq!(gone, [("10.61.0.1", "its IPAMClaim no longer exists")]);
    assert!(offsets(&cluster, "blue-10.61.0.0-24").is_empty());
}
