//! The node-slice controller (hereabouts-kube `slices`) and slice allocation on the Kubernetes
//! store, against the API-server emulation (tests/kube_api), through the real client and
//! allocator component: NodeSlicePools created from NADs, nodes assigned and freed, a resized
//! range re-sliced, writes conditioned on `resourceVersion`, and a cluster switching from
//! Whereabouts' Fast IPAM keeping every allocation. (The CNI binary on slices: kube_cli.rs.)

mod kube_api;

use std::path::{Path, PathBuf};

use hereabouts_host::bindings::{AllocateRequest, Owner};
use hereabouts_host::runtime::Allocator;
use hereabouts_kube::slices::{Change, sync};
use hereabouts_stores::kube::{KubeStore, Timeouts};
use kube_api::{Cluster, reconciler_beside};
use serde_json::{Value, json};

const NS: &str = "kube-system";

fn temp_dir(name: &str) -> PathBuf {
    kube_api::temp_dir("kube-slices", name)
}

fn connect(kubeconfig: &Path) -> (KubeStore, Allocator) {
    let store = KubeStore::connect(Some(kubeconfig), Timeouts::default()).expect("connect");
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kube-slices-cache");
    let allocator =
        Allocator::with_cache(Box::new(store.clone()), Some(&cache)).expect("load the component");
    (store, allocator)
}

fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
}

fn nad(name: &str, ipam: Value) -> Value {
    let config = json!({"cniVersion": "0.3.1", "name": name, "type": "macvlan", "ipam": ipam});
    json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"config": config.to_string()}})
}

/// (nodeName, sliceRange) of the NodeSlicePool, in order.
fn assignments(cluster: &Cluster, pool: &str) -> Vec<(String, String)> {
    let object = cluster.get("nodeslicepools", NS, pool).expect("NodeSlicePool written");
    object["status"]["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (a["nodeName"].as_str().unwrap().to_string(), a["sliceRange"].as_str().unwrap().into())
        })
        .collect()
}

/// A Whereabouts-shaped object from tests/kube_fixtures.
fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/kube_fixtures").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(n, s)| (n.to_string(), s.to_string())).collect()
}

#[test]
fn the_controller_slices_a_network_assigns_nodes_frees_and_reslices() {
    let cluster = Cluster::start();
    let kubeconfig = cluster.kubeconfig(&temp_dir("controller"), Some(NS));
    // The node-slice controller, as the reconciler's ServiceAccount.
    let (store, mut allocator) = connect(&reconciler_beside(&kubeconfig));
    for name in ["n3", "n1", "n2"] {
        cluster.insert("nodes", node(name));
    }
    let blue = json!({"type": "whereabouts", "range": "10.30.0.0/24", "network_name": "blue",
                      "node_slice_size": "/26"});
    cluster.insert("network-attachment-definitions", nad("blue-net", blue.clone()));
    // Not ours, and ours without slices: no NodeSlicePool.
    cluster.insert(
        "network-attachment-definitions",
        nad("other", json!({"type": "host-local", "node_slice_size": "/26"})),
    );
    cluster.insert(
        "network-attachment-definitions",
        nad("plain", json!({"type": "whereabouts", "range": "10.31.0.0/24"})),
    );

    // Keys match case-insensitively, as Go's decoder matches them.
    cluster.insert(
        "network-attachment-definitions",
        nad(
            "upper",
            json!({"type": "whereabouts", "range": "10.34.0.0/24", "network_name": "upper",
                   "NODE_SLICE_SIZE": "/25"}),
        ),
    );

    let changes = sync(&store, &mut allocator).unwrap();
    assert_eq!(
        changes,
        [
            Change::Created { pool: "blue".into(), slices: 4 },
            Change::Created { pool: "upper".into(), slices: 2 }
        ]
    );
    assert_eq!(cluster.list("nodeslicepools").len(), 2);
    assert!(cluster.delete("network-attachment-definitions", "default", "upper"));
    assert_eq!(sync(&store, &mut allocator).unwrap(), [Change::Deleted { pool: "upper".into() }]);
    let object = cluster.get("nodeslicepools", NS, "blue").unwrap();
    assert_eq!(object["spec"], json!({"range": "10.30.0.0/24", "sliceSize": "/26"}));
    let owner = &object["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["name"].as_str(), owner["controller"].as_bool()),
        (Some("NetworkAttachmentDefinition"), Some("blue-net"), Some(true))
    );
    assert_eq!(
        assignments(&cluster, "blue"),
        pairs(&[
            ("n1", "10.30.0.0/26"),
            ("n2", "10.30.0.64/26"),
            ("n3", "10.30.0.128/26"),
            ("", "10.30.0.192/26")
        ])
    );

    // Nothing changed: nothing written (same resourceVersion).
    let version = object["metadata"]["resourceVersion"].clone();
    assert_eq!(sync(&store, &mut allocator).unwrap(), []);
    assert_eq!(
        cluster.get("nodeslicepools", NS, "blue").unwrap()["metadata"]["resourceVersion"],
        version
    );

    // n2 is deleted as n4 joins: n4 takes the free slice, n2's is freed (Whereabouts' order);
    // then n5 takes n2's old slice, the first free one.
    assert!(cluster.delete("nodes", "", "n2"));
    cluster.insert("nodes", node("n4"));
    let changes = sync(&store, &mut allocator).unwrap();
    assert_eq!(
        changes,
        [Change::Assigned {
            pool: "blue".into(),
            assigned: vec!["n4".into()],
            freed: vec!["n2".into()]
        }]
    );
    cluster.insert("nodes", node("n5"));
    sync(&store, &mut allocator).unwrap();
    assert_eq!(
        assignments(&cluster, "blue"),
        pairs(&[
            ("n1", "10.30.0.0/26"),
            ("n5", "10.30.0.64/26"),
            ("n3", "10.30.0.128/26"),
            ("n4", "10.30.0.192/26")
        ])
    );
    // A sixth node finds every slice taken: it gets none, and nothing is written for it.
    cluster.insert("nodes", node("n6"));
    assert_eq!(sync(&store, &mut allocator).unwrap(), []);

    // The range grows: as Whereabouts, the slices are cut afresh and every node re-assigned.
    let mut edited = cluster.get("network-attachment-definitions", "default", "blue-net").unwrap();
    let grown = json!({"type": "whereabouts", "range": "10.30.0.0/23", "network_name": "blue",
                       "node_slice_size": "/26"});
    let config =
        json!({"cniVersion": "0.3.1", "name": "blue-net", "type": "macvlan", "ipam": grown});
    edited["spec"]["config"] = json!(config.to_string());
    cluster.update("network-attachment-definitions", edited);
    let changes = sync(&store, &mut allocator).unwrap();
    assert_eq!(changes, [Change::Resliced { pool: "blue".into(), slices: 8 }]);
    let object = cluster.get("nodeslicepools", NS, "blue").unwrap();
    assert_eq!(object["spec"], json!({"range": "10.30.0.0/23", "sliceSize": "/26"}));
    let after: Vec<String> = assignments(&cluster, "blue").into_iter().map(|(n, _)| n).collect();
    assert_eq!(after, ["n1", "n3", "n4", "n5", "n6", "", "", ""]);

    // The NAD is deleted: its NodeSlicePool goes with it.
    assert!(cluster.delete("network-attachment-definitions", "default", "blue-net"));
    assert_eq!(sync(&store, &mut allocator).unwrap(), [Change::Deleted { pool: "blue".into() }]);
    assert!(cluster.get("nodeslicepools", NS, "blue").is_none());
}

#[test]
fn writes_are_conditioned_on_the_resource_version_read() {
    let cluster = Cluster::start();
    let kubeconfig = cluster.kubeconfig(&temp_dir("conditional"), Some(NS));
    // The node-slice controller, as the reconciler's ServiceAccount.
    let (store, mut allocator) = connect(&reconciler_beside(&kubeconfig));
    cluster.insert("nodes", node("n1"));
    let ipam = json!({"type": "whereabouts", "range": "10.32.0.0/24", "node_slice_size": "28"});
    cluster.insert("network-attachment-definitions", nad("red", ipam));
    sync(&store, &mut allocator).unwrap();
    // Unnamed network: the NodeSlicePool is named by the CNI network's name.
    let read = store.get_node_slice_pool("red").unwrap().expect("created");
    // Someone else writes in between: our write of what we read is refused, not applied.
    let mut theirs = cluster.get("nodeslicepools", NS, "red").unwrap();
    theirs["status"]["allocations"][5]["nodeName"] = json!("manual");
    cluster.update("nodeslicepools", theirs);
    let error = store.replace_node_slice_pool(&read).unwrap_err();
    assert!(error.is_conflict(), "{error}");
    assert_eq!(assignments(&cluster, "red")[5].0, "manual");
    // A controller that loses the race starts again from what won: "manual" is not a node,
    // so its slice is freed; n1 keeps its own.
    sync(&store, &mut allocator).unwrap();
    let now = assignments(&cluster, "red");
    assert_eq!(now[0], ("n1".to_string(), "10.32.0.0/28".to_string()));
    assert_eq!(now[5].0, "");
}

#[test]
fn two_nads_of_one_network_that_disagree_are_skipped() {
    let cluster = Cluster::start();
    let kubeconfig = cluster.kubeconfig(&temp_dir("mismatch"), Some(NS));
    // The node-slice controller, as the reconciler's ServiceAccount.
    let (store, mut allocator) = connect(&reconciler_beside(&kubeconfig));
    let a = json!({"type": "whereabouts", "range": "10.33.0.0/24", "network_name": "green",
                   "node_slice_size": "/28"});
    let b = json!({"type": "whereabouts", "range": "10.33.0.0/24", "network_name": "green",
                   "node_slice_size": "/27"});
    cluster.insert("network-attachment-definitions", nad("green-a", a));
    cluster.insert("network-attachment-definitions", nad("green-b", b));
    let changes = sync(&store, &mut allocator).unwrap();
    assert!(
        matches!(&changes[..], [Change::Skipped { pool, reason }] if pool == "green" && reason.contains("disagree")),
        "{changes:?}"
    );
    assert!(cluster.list("nodeslicepools").is_empty());
}

/// A cluster on Whereabouts' Fast IPAM switches over: its NodeSlicePool (assigned by
/// Whereabouts' controller, not in name order) and per-node IPPools are read as they are.
#[test]
fn migration_from_whereabouts_fast_ipam_keeps_every_allocation() {
    let cluster = Cluster::start();
    let kubeconfig = cluster.kubeconfig(&temp_dir("migration"), Some(NS));
    // The controller as the reconciler; the ADDs as the node plugin.
    let (controller, mut controller_allocator) = connect(&reconciler_beside(&kubeconfig));
    let (_, mut allocator) = connect(&kubeconfig);
    cluster.insert("nodeslicepools", fixture("nodeslicepool-blue.json"));
    cluster.insert("ippools", fixture("ippool-blue-worker-1.json"));
    for name in ["worker-1", "worker-2"] {
        cluster.insert("nodes", node(name));
    }
    let ipam = json!({"type": "whereabouts", "range": "10.40.0.0/24", "network_name": "blue",
                      "node_slice_size": "/28"});
    cluster.insert("network-attachment-definitions", nad("blue-net", ipam.clone()));
    let before = assignments(&cluster, "blue");

    // The controller keeps Whereabouts' assignment (worker-2 holds the first slice).
    assert_eq!(sync(&controller, &mut controller_allocator).unwrap(), []);
    assert_eq!(assignments(&cluster, "blue"), before);

    // ADD on worker-1 allocates in its existing slice pool, around Whereabouts' allocations.
    let network = allocator.read_config(&ipam.to_string()).unwrap().network;
    let on_worker_1 = allocator.on_node_slice(&network, "worker-1", "10.40.0.16/28").unwrap();
    let owner = |id: &str| Owner {
        container_id: id.into(),
        ifname: "net1".into(),
        podref: format!("default/{id}"),
        cni_network: "blue-net".into(),
    };
    let add = |allocator: &mut Allocator, id: &str| {
        let request = AllocateRequest { owner: owner(id), requested: vec![] };
        allocator.allocate(&on_worker_1, &request).unwrap()[0].cidr.clone()
    };
    assert_eq!(add(&mut allocator, "new-1"), "10.40.0.18/24");
    assert_eq!(add(&mut allocator, "new-2"), "10.40.0.20/24");
    let pool = cluster.get("ippools", NS, "blue-worker-1-10.40.0.16-28").unwrap();
    let allocations = pool["spec"]["allocations"].as_object().unwrap();
    let keys: Vec<&str> = allocations.keys().map(String::as_str).collect();
    assert_eq!(keys, ["1", "2", "3", "4"]);
    assert_eq!(allocations["1"]["podref"], "default/web-0");
    assert_eq!(allocations["3"]["podref"], "default/web-1");
    assert_eq!(pool["spec"]["range"], "10.40.0.16/28");
    // And a release frees only ours.
    allocator.release(&on_worker_1, &owner("new-1")).unwrap();
    let pool = cluster.get("ippools", NS, "blue-worker-1-10.40.0.16-28").unwrap();
    let keys: Vec<String> =
        pool["spec"]["allocations"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["1", "3", "4"]);
}

/// Reconcile on node slices: a slice pool is addressed as its NodeSlicePool's network narrowed
/// to the node's slice, so a gone pod's allocation is freed with its reservation (named by the
/// network, `blue-…`, not by the pool's object name) in one pass, and a running pod's
/// reservation counts as backed.
#[test]
fn reconcile_frees_slice_allocations_with_their_reservations() {
    let cluster = Cluster::start();
    let kubeconfig = cluster.kubeconfig(&temp_dir("reconcile"), Some(NS));
    // The ADDs as the node plugin; reconcile as the reconciler.
    let (_, mut allocator) = connect(&kubeconfig);
    let (reconciler, _) = connect(&reconciler_beside(&kubeconfig));
    cluster.insert("nodeslicepools", fixture("nodeslicepool-blue.json"));
    cluster.insert("ippools", fixture("ippool-blue-worker-1.json"));
    let ipam = json!({"range": "10.40.0.0/24", "network_name": "blue", "node_slice_size": "/28"});
    let network = allocator.read_config(&ipam.to_string()).unwrap().network;
    let on_worker_1 = allocator.on_node_slice(&network, "worker-1", "10.40.0.16/28").unwrap();
    for id in ["ours-gone", "ours-running"] {
        let owner = Owner {
            container_id: id.into(),
            ifname: "net1".into(),
            podref: format!("default/{id}"),
            cni_network: "blue-net".into(),
        };
        allocator.allocate(&on_worker_1, &AllocateRequest { owner, requested: vec![] }).unwrap();
    }
    // .17 web-0 (Whereabouts', running), .18 ours-gone, .19 web-1 (Whereabouts', gone),
    // .20 ours-running.
    cluster.insert("pods", kube_api::pod("default", "web-0", "Running", &["10.40.0.17"]));
    cluster.insert("pods", kube_api::pod("default", "ours-running", "Running", &["10.40.0.20"]));
    let reservations = || -> Vec<String> {
        let mut names: Vec<String> = cluster
            .list("overlappingrangeipreservations")
            .iter()
            .map(|r| r["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };
    assert_eq!(reservations(), ["blue-10.40.0.18", "blue-10.40.0.20"]);

    let report = hereabouts_kube::reconcile::reconcile(&reconciler, false).unwrap();
    let mut freed: Vec<(&str, &str)> =
        report.freed.iter().map(|f| (f.kind, f.address.as_str())).collect();
    freed.sort();
    assert_eq!(freed, [("allocation", "10.40.0.18"), ("allocation", "10.40.0.19")], "{report:?}");
    assert!(report.skipped_pools.is_empty(), "{report:?}");
    let pool = cluster.get("ippools", NS, "blue-worker-1-10.40.0.16-28").unwrap();
    let keys: Vec<&String> = pool["spec"]["allocations"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["1", "4"]);
    // The gone pod's reservation went with its allocation; the running pod's is backed.
    assert_eq!(reservations(), ["blue-10.40.0.20"]);
    let again = hereabouts_kube::reconcile::reconcile(&reconciler, false).unwrap();
    assert!(again.freed.is_empty(), "{again:?}");
}
