//! The RBAC we ship (deploy/rbac.yaml, as host-cni/tests/k8s/run.sh applies it), on the real
//! kube-apiserver: each component's ServiceAccount may do exactly what deploy/README.md's
//! table says — the API server's own SelfSubjectRulesReview, made with the account's
//! TokenRequest token, is compared with the table — and what a component must not do is
//! refused with a real 403. (That the components can do their jobs with exactly these grants
//! is what the rest of the Kubernetes suite shows: it runs each as its ServiceAccount.)
//!
//! These tests need the real server: run.sh runs them with `--ignored`.

mod kube_api;

use std::collections::BTreeSet;
use std::path::Path;

use kube_api::real::{RealServer, Refused};
use kube_api::{NODE_PLUGIN, REAL_SERVER, RECONCILER};
use serde_json::{Value, json};

const NEEDS: &str = "needs the real kube-apiserver: host-cni/tests/k8s/run.sh";

fn server() -> RealServer {
    let dir =
        std::env::var_os(REAL_SERVER).unwrap_or_else(|| panic!("{REAL_SERVER} unset: {NEEDS}"));
    RealServer::connect(Path::new(&dir))
}

/// (account, group, resource, verb, where) — where: `kube-system` or `cluster`.
type Grant = (String, String, String, String, String);

/// The grants deploy/README.md documents, one per verb.
fn documented() -> BTreeSet<Grant> {
    let readme = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/README.md"),
    )
    .unwrap();
    let header = "| ServiceAccount | API group | resource | verbs | where | why |";
    let table = readme.split(header).nth(1).expect("deploy/README.md's RBAC table");
    let mut grants = BTreeSet::new();
    for line in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(|c| c.trim().trim_matches('`')).collect();
        let group = if cells[2] == "(core)" { "" } else { cells[2] };
        for verb in cells[4].split(',') {
            grants.insert((
                cells[1].to_string(),
                group.to_string(),
                cells[3].to_string(),
                verb.trim().to_string(),
                cells[5].to_string(),
            ));
        }
    }
    assert!(grants.len() > 20, "{grants:?}");
    grants
}

/// What the API server grants every authenticated user, whatever we ship: ask what it may do
/// (system:basic-user) and read the cluster's trust bundles (ClusterTrustBundles, readable by
/// all since Kubernetes 1.33).
fn is_everyones(group: &str, resource: &str) -> bool {
    matches!(group, "authorization.k8s.io" | "authentication.k8s.io")
        || (group, resource) == ("certificates.k8s.io", "clustertrustbundles")
}

/// (group, resource, verb) the API server says `account` may do in `namespace`.
fn rules(
    server: &RealServer,
    account: &str,
    namespace: &str,
) -> BTreeSet<(String, String, String)> {
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
                        "spec": {"namespace": namespace}});
    let answer = server
        .request_as(
            account,
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
            Some(&review),
        )
        .unwrap();
    assert_ne!(answer["status"]["incomplete"], true, "{answer}");
    let mut rules = BTreeSet::new();
    for rule in answer["status"]["resourceRules"].as_array().unwrap() {
        let strings = |key: &str| -> Vec<String> {
            serde_json::from_value(rule[key].clone()).unwrap_or_default()
        };
        assert!(strings("resourceNames").is_empty(), "no grant is limited to names: {rule}");
        for group in strings("apiGroups") {
            for resource in strings("resources") {
                for verb in strings("verbs") {
                    if !is_everyones(&group, &resource) {
                        rules.insert((group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    rules
}

#[test]
#[ignore = "needs the real kube-apiserver: host-cni/tests/k8s/run.sh"]
fn each_service_account_may_do_exactly_what_deploy_readme_documents() {
    let server = server();
    let mut granted = BTreeSet::new();
    for account in [NODE_PLUGIN, RECONCILER] {
        let in_system = rules(&server, account, "kube-system");
        // Another namespace sees only the cluster-wide grants.
        let elsewhere = rules(&server, account, "default");
        assert!(elsewhere.is_subset(&in_system), "{account}: {elsewhere:?} vs {in_system:?}");
        for (group, resource, verb) in &in_system {
            let place = if elsewhere.contains(&(group.clone(), resource.clone(), verb.clone())) {
                "cluster"
            } else {
                "kube-system"
            };
            granted.insert((
                account.to_string(),
                group.clone(),
                resource.clone(),
                verb.clone(),
                place.to_string(),
            ));
        }
    }
    let documented = documented();
    let undocumented: Vec<_> = granted.difference(&documented).collect();
    let missing: Vec<_> = documented.difference(&granted).collect();
    assert!(
        undocumented.is_empty() && missing.is_empty(),
        "granted but not in deploy/README.md: {undocumented:#?}\ndocumented but not granted: {missing:#?}"
    );
}

/// (account, method, path, body): what each component must not do.
fn forbidden() -> Vec<(&'static str, &'static str, &'static str, Option<Value>)> {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "intruder"},
                     "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let slices = json!({"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "NodeSlicePool",
                        "metadata": {"name": "x"}, "spec": {"range": "10.0.0.0/16", "sliceSize": "/24"}});
    let pool = json!({"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "IPPool",
                      "metadata": {"name": "10.9.0.0-24"}, "spec": {"range": "10.9.0.0/24", "allocations": {}}});
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                       "metadata": {"name": "whereabouts"}, "spec": {}});
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "intruder"}});
    vec![
        (NODE_PLUGIN, "DELETE", "/api/v1/namespaces/default/pods/web-0", None),
        (NODE_PLUGIN, "GET", "/api/v1/pods", None),
        (NODE_PLUGIN, "GET", "/api/v1/namespaces/kube-system/secrets", None),
        (NODE_PLUGIN, "GET", "/api/v1/namespaces/kube-system/secrets/hereabouts-etcd", None),
        (NODE_PLUGIN, "GET", "/api/v1/namespaces/kube-system/configmaps", None),
        (
            NODE_PLUGIN,
            "POST",
            "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/kube-system/nodeslicepools",
            Some(slices.clone()),
        ),
        (
            NODE_PLUGIN,
            "DELETE",
            "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/kube-system/ippools/10.9.0.0-24",
            None,
        ),
        (
            NODE_PLUGIN,
            "GET",
            "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/kube-system/ippools",
            None,
        ),
        (
            NODE_PLUGIN,
            "POST",
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases",
            Some(lease),
        ),
        (NODE_PLUGIN, "POST", "/api/v1/nodes", Some(node.clone())),
        (
            NODE_PLUGIN,
            "POST",
            "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/default/ippools",
            Some(pool.clone()),
        ),
        (RECONCILER, "POST", "/api/v1/namespaces/default/pods", Some(pod)),
        (RECONCILER, "DELETE", "/api/v1/namespaces/default/pods/web-0", None),
        (RECONCILER, "GET", "/api/v1/namespaces/kube-system/secrets", None),
        (
            RECONCILER,
            "POST",
            "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/kube-system/ippools",
            Some(pool),
        ),
        (
            RECONCILER,
            "POST",
            "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/kube-system/overlappingrangeipreservations",
            Some(json!({
            "apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "OverlappingRangeIPReservation",
            "metadata": {"name": "10.9.0.1"}, "spec": {"podref": "default/x"}})),
        ),
        (RECONCILER, "POST", "/api/v1/nodes", Some(node)),
        (RECONCILER, "DELETE", "/api/v1/nodes/worker-1", None),
        (
            RECONCILER,
            "POST",
            "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/default/nodeslicepools",
            Some(slices),
        ),
        (RECONCILER, "PUT", "/apis/apps/v1/namespaces/default/statefulsets/db", Some(json!({}))),
        (
            RECONCILER,
            "DELETE",
            "/apis/k8s.cni.cncf.io/v1alpha1/namespaces/default/ipamclaims/vm",
            None,
        ),
    ]
}

#[test]
#[ignore = "needs the real kube-apiserver: host-cni/tests/k8s/run.sh"]
fn what_a_component_must_not_do_is_refused_with_403() {
    let server = server();
    for (account, method, path, body) in forbidden() {
        match server.request_as(account, method, path, body.as_ref()) {
            Err(Refused { code: 403, body }) => {
                let message = body["message"].as_str().unwrap();
                assert!(
                    message.contains(&format!("system:serviceaccount:kube-system:{account}")),
                    "{message}"
                );
            }
            other => panic!("{account} {method} {path}: expected 403, got {other:?}"),
        }
    }
    // And what it must do is not refused (an absent object is 404, not 403).
    let wb = "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/kube-system";
    for (account, path) in [
        (NODE_PLUGIN, format!("{wb}/ippools/10.9.0.0-24")),
        (NODE_PLUGIN, format!("{wb}/nodeslicepools/blue")),
        (NODE_PLUGIN, "/api/v1/namespaces/default/pods/web-0".to_string()),
        (RECONCILER, format!("{wb}/ippools")),
        (RECONCILER, "/api/v1/pods?limit=1".to_string()),
    ] {
        match server.request_as(account, "GET", &path, None) {
            Ok(_) | Err(Refused { code: 404, .. }) => {}
            other => panic!("{account} GET {path}: {other:?}"),
        }
    }
}

/// One CNI call of the plugin: (success, stdout as JSON or null).
fn cni(
    command: &str,
    config: &Value,
    container: &str,
    podref: &str,
    cache: &Path,
) -> (bool, Value) {
    let bin = env!("CARGO_BIN_EXE_hereabouts");
    let (ok, stdout, _) = kube_api::cni_call(bin, None, command, config, container, podref, cache);
    (ok, stdout)
}

/// The node plugin as the DaemonSet runs it: `hereabouts install` writes the kubeconfig from
/// the pod's service-account mount (a TokenRequest token and the cluster CA, as the kubelet
/// projects them) and the API server's address from the pod's environment; ADD and DEL then
/// work through that kubeconfig, as ServiceAccount `hereabouts`.
#[test]
#[ignore = "needs the real kube-apiserver: host-cni/tests/k8s/run.sh"]
fn the_plugin_works_with_the_kubeconfig_install_writes() {
    let server = server();
    let cluster_dir = std::path::PathBuf::from(std::env::var_os(REAL_SERVER).unwrap());
    let root =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("rbac-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (bin, conf, sa) = (root.join("opt/cni/bin"), root.join("etc/cni/net.d"), root.join("sa"));
    for d in [&bin, &conf, &sa] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(sa.join("token"), server.token(NODE_PLUGIN)).unwrap();
    std::fs::copy(cluster_dir.join("pki/ca.crt"), sa.join("ca.crt")).unwrap();
    std::fs::write(sa.join("namespace"), "kube-system").unwrap();
    let url = server.url();
    let (host, port) = url.trim_start_matches("https://").split_once(':').unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hereabouts"))
        .arg("install")
        .arg(format!("--bin-dir={}", bin.display()))
        .arg(format!("--conf-dir={}", conf.display()))
        .arg(format!("--host-conf-dir={}", conf.display()))
        .arg(format!("--service-account-dir={}", sa.display()))
        .env("KUBERNETES_SERVICE_HOST", host)
        .env("KUBERNETES_SERVICE_PORT", port)
        .env("NODENAME", "worker-1")
        .env_remove("WHEREABOUTS_NAMESPACE")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let kubeconfig = conf.join("whereabouts.d/whereabouts.kubeconfig");
    let config = json!({"cniVersion": "1.0.0", "name": "blue", "type": "whereabouts",
        "ipam": {"type": "whereabouts", "range": "10.88.0.0/24",
                 "kubernetes": {"kubeconfig": kubeconfig}}});
    let (ok, result) = cni("ADD", &config, "c-install", "default/web-0", &root);
    assert!(ok, "{result}");
    assert_eq!(result["ips"][0]["address"], "10.88.0.1/24");
    let pool = server.get("ippools", "kube-system", "10.88.0.0-24").expect("the pool is written");
    assert_eq!(pool["spec"]["allocations"]["1"]["podref"], "default/web-0");
    assert!(cni("DEL", &config, "c-install", "default/web-0", &root).0, "DEL");
    let pool = server.get("ippools", "kube-system", "10.88.0.0-24").unwrap();
    assert_eq!(pool["spec"]["allocations"], json!({}), "DEL freed it");
    let _ = std::fs::remove_dir_all(&root);
}
