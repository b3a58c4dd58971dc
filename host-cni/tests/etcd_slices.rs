//! `hereabouts slices release --gone` on the etcd store: the nodes Kubernetes lists (the
//! API-server emulation, tests/kube_api) keep their slices, a node it does not list loses
//! its claim once its slice pool is empty, and an empty node list is refused. Needs an etcd:
//! `#[ignore = "needs etcd"]`, run by host-cni/tests/etcd/run.sh (`HEREABOUTS_ETCD_ENDPOINTS`).
//! The rest of node slices on etcd is tested through the plugin in tests/etcd/cni.py.

mod kube_api;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use kube_api::Cluster;
use serde_json::{Value, json};

fn endpoints() -> String {
    std::env::var("HEREABOUTS_ETCD_ENDPOINTS").expect("HEREABOUTS_ETCD_ENDPOINTS (run.sh sets it)")
}

fn bin() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hereabouts"));
    command.env("HEREABOUTS_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("cache"));
    command
}

/// One ADD of the real binary on `node`; the address it got.
fn add(config: &Value, node: &str, container: &str) -> String {
    use std::io::Write;
    let mut child = bin()
        .env("NODENAME", node)
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", "/var/run/netns/x")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env("CNI_ARGS", format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={container}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(config.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(output.status.success(), "ADD on {node}: {result}");
    result["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string()
}

fn slices(args: &[&str], config_file: &Path) -> Output {
    bin().arg("slices").args(args).arg("--config").arg(config_file).output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn claimed(config_file: &Path) -> Vec<(String, String)> {
    let output = slices(&["list", "--format", "json"], config_file);
    assert!(output.status.success(), "{}", text(&output));
    let listed: Value = serde_json::from_slice(&output.stdout).unwrap();
    listed["slices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "claimed")
        .map(|s| (s["slice"].as_str().unwrap().into(), s["node"].as_str().unwrap().into()))
        .collect()
}

fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
}

#[test]
#[ignore = "needs etcd"]
fn release_gone_frees_the_empty_claims_of_nodes_kubernetes_does_not_list() {
    let dir = kube_api::temp_dir("etcd-slices", "gone");
    let cluster = Cluster::start();
    let kubeconfig = cluster.kubeconfig(&dir, None);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let prefix = format!("/hereabouts-test/slices-gone-{}-{nanos}/", std::process::id());
    let config = json!({"cniVersion": "1.0.0", "name": "gonenet", "type": "bridge", "ipam": {
        "type": "hereabouts", "range": "10.60.0.0/26", "node_slice_size": "/28",
        "etcd_host": endpoints(), "etcd_prefix": prefix,
        "configuration_path": dir.join("no-flat-file.conf")}});
    let config_file = dir.join("net.conf");
    std::fs::write(&config_file, config.to_string()).unwrap();

    assert_eq!(add(&config, "live", "p1"), "10.60.0.1");
    assert_eq!(add(&config, "gone-empty", "p2"), "10.60.0.17");
    assert_eq!(add(&config, "gone-busy", "p3"), "10.60.0.33");
    // gone-empty's pod went away properly: its pool is empty, only the claim is left.
    let mut del = bin();
    del.env("NODENAME", "gone-empty")
        .env("CNI_COMMAND", "DEL")
        .env("CNI_CONTAINERID", "p2")
        .env("CNI_NETNS", "/var/run/netns/x")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = del.spawn().unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(config.to_string().as_bytes()).unwrap();
    }
    assert!(child.wait_with_output().unwrap().status.success());

    let gone = ["--gone", "--kubeconfig", kubeconfig.to_str().unwrap()];
    // No nodes listed at all: far more likely the wrong cluster; nothing is released.
    let mut release = vec!["release"];
    release.extend(gone);
    let refused = slices(&release, &config_file);
    assert!(
        !refused.status.success() && text(&refused).contains("lists no nodes"),
        "{}",
        text(&refused)
    );
    assert_eq!(claimed(&config_file).len(), 3);

    cluster.insert("nodes", node("live"));
    cluster.insert("nodes", node("unrelated"));
    let output = slices(&release, &config_file);
    let said = text(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(
        said.contains("released slice 10.60.0.16/28") && said.contains("(node gone-empty)"),
        "{said}"
    );
    assert!(said.contains("kept slice 10.60.0.32/28") && said.contains("10.60.0.33"), "{said}");
    assert_eq!(
        claimed(&config_file),
        [
            ("10.60.0.0/28".to_string(), "live".to_string()),
            ("10.60.0.32/28".into(), "gone-busy".into())
        ]
    );
    // --force frees the busy pool's addresses, then the claim; live keeps its slice.
    let mut forced = release.clone();
    forced.push("--force");
    let output = slices(&forced, &config_file);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(claimed(&config_file), [("10.60.0.0/28".to_string(), "live".to_string())]);
    // The freed slices go to new nodes, lowest first, and are empty.
    assert_eq!(add(&config, "new-1", "p4"), "10.60.0.17");
    assert_eq!(add(&config, "new-2", "p5"), "10.60.0.33");
}
