//! The API server a Kubernetes test talks to, one type for both kinds:
//! - the **real kube-apiserver** that `host-cni/tests/k8s/run.sh` starts, when
//!   `HEREABOUTS_TEST_APISERVER` names its directory ([`real`]): the product runs there as the
//!   ServiceAccounts deploy/ ships, under RBAC;
//! - else the **emulation** ([`emulation`]), so `cargo test` needs no server.
//!
//! A test written against [`Cluster`] runs on both, unchanged. A test that needs a fault only
//! the emulation can inject (a chosen 403, a counted request, a dropped watch) says so by its
//! name, ending in `_emulated`, and calls [`Cluster::emulation`]; run.sh skips those names.

#![allow(dead_code)]

pub mod emulation;
pub mod real;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

pub use emulation::Emulator;
use real::RealServer;

/// The environment variable that points the tests at a real API server's directory.
pub const REAL_SERVER: &str = "HEREABOUTS_TEST_APISERVER";

/// The ServiceAccounts deploy/ runs the product as (kube-system).
pub const NODE_PLUGIN: &str = "hereabouts";
pub const RECONCILER: &str = "hereabouts-reconciler";

pub enum Cluster {
    Emulated(Emulator),
    Real(Box<RealServer>),
}

impl Cluster {
    /// The real API server when [`REAL_SERVER`] is set (emptied of earlier tests' objects),
    /// else a fresh emulation.
    pub fn start() -> Self {
        match std::env::var_os(REAL_SERVER).filter(|dir| !dir.is_empty()) {
            Some(dir) => Cluster::Real(Box::new(RealServer::connect(Path::new(&dir)))),
            None => Cluster::Emulated(Emulator::start()),
        }
    }

    /// A fresh emulation, whatever the environment says (a benchmark's side-by-side row).
    pub fn emulated() -> Self {
        Cluster::Emulated(Emulator::start())
    }

    /// The real API server, when [`REAL_SERVER`] is set.
    pub fn real_if_configured() -> Option<fn() -> Cluster> {
        std::env::var_os(REAL_SERVER)
            .filter(|dir| !dir.is_empty())
            .map(|_| Cluster::start as fn() -> Cluster)
    }

    /// Whether this is the real API server.
    pub fn is_real(&self) -> bool {
        matches!(self, Cluster::Real(_))
    }

    /// The emulation, for a test that injects a fault only it can (its name ends in
    /// `_emulated`, which the real-server run skips).
    pub fn emulation(&self) -> &Emulator {
        match self {
            Cluster::Emulated(emulator) => emulator,
            Cluster::Real(_) => panic!("this test needs the emulation (name it *_emulated)"),
        }
    }

    /// The real server, for what only it has (TokenRequest, raw requests).
    pub fn real(&self) -> Option<&RealServer> {
        match self {
            Cluster::Real(server) => Some(server),
            Cluster::Emulated(_) => None,
        }
    }

    pub fn url(&self) -> String {
        match self {
            Cluster::Emulated(e) => e.url(),
            Cluster::Real(r) => r.url(),
        }
    }

    /// `dir/kubeconfig` for the node plugin (the DaemonSet's ServiceAccount on the real
    /// server), context namespace `namespace` (None: the product's default, kube-system);
    /// beside it, [`reconciler_beside`] it, the same for reconcile and the controller.
    pub fn kubeconfig(&self, dir: &Path, namespace: Option<&str>) -> PathBuf {
        self.kubeconfig_as(reconciler_beside(&dir.join("kubeconfig")), namespace, RECONCILER);
        self.kubeconfig_as(dir.join("kubeconfig"), namespace, NODE_PLUGIN)
    }

    /// `dir/reconciler.kubeconfig` for `hereabouts reconcile` and `hereabouts controller`
    /// (the reconciler's ServiceAccount on the real server).
    pub fn reconciler_kubeconfig(&self, dir: &Path, namespace: Option<&str>) -> PathBuf {
        self.kubeconfig_as(dir.join("reconciler.kubeconfig"), namespace, RECONCILER)
    }

    /// A kubeconfig at `path` for ServiceAccount `account` of kube-system.
    pub fn kubeconfig_as(&self, path: PathBuf, namespace: Option<&str>, account: &str) -> PathBuf {
        match self {
            Cluster::Emulated(e) => {
                let written = e.kubeconfig(path.parent().unwrap(), namespace);
                if written != path {
                    std::fs::rename(&written, &path).unwrap();
                }
            }
            Cluster::Real(r) => r.kubeconfig(&path, namespace, account),
        }
        path
    }

    /// Creates an object as a test's `kubectl create` would (its `status` as the kubelet or
    /// a controller writes it).
    pub fn insert(&self, plural: &str, object: Value) -> Value {
        match self {
            Cluster::Emulated(e) => e.insert(plural, object),
            Cluster::Real(r) => r.insert(plural, object),
        }
    }

    /// Creates many objects at once (on the real server, many requests in flight).
    pub fn insert_all(&self, plural: &str, objects: Vec<Value>) {
        match self {
            Cluster::Emulated(e) => objects.into_iter().for_each(|o| drop(e.insert(plural, o))),
            Cluster::Real(r) => r.insert_all(plural, objects),
        }
    }

    /// Replaces an object unconditionally (a test's `kubectl edit`), status included.
    pub fn update(&self, plural: &str, object: Value) -> Value {
        match self {
            Cluster::Emulated(e) => e.update(plural, object),
            Cluster::Real(r) => r.update(plural, object),
        }
    }

    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        match self {
            Cluster::Emulated(e) => e.get(plural, namespace, name),
            Cluster::Real(r) => r.get(plural, namespace, name),
        }
    }

    /// Every object of `plural`, in every namespace.
    pub fn list(&self, plural: &str) -> Vec<Value> {
        match self {
            Cluster::Emulated(e) => e.list(plural),
            Cluster::Real(r) => r.list(plural),
        }
    }

    /// Deletes an object at once (a pod as the kubelet confirms it); false when absent.
    pub fn delete(&self, plural: &str, namespace: &str, name: &str) -> bool {
        match self {
            Cluster::Emulated(e) => e.delete(plural, namespace, name),
            Cluster::Real(r) => r.delete(plural, namespace, name),
        }
    }
}

impl Cluster {
    /// Responses with HTTP status `code` so far (the real server counts them in
    /// `apiserver_request_total`, the test's own requests included).
    pub fn responses(&self, code: u16) -> u64 {
        match self {
            Cluster::Emulated(e) => e.responses(code),
            Cluster::Real(r) => r.request_total(&[("code", &code.to_string())]),
        }
    }

    /// Requests to the API's resources so far.
    pub fn requests(&self) -> u64 {
        match self {
            Cluster::Emulated(e) => e.requests(),
            Cluster::Real(r) => r.request_total(&[]) - r.request_total(&[("resource", "")]),
        }
    }

    /// List requests of `plural` so far.
    pub fn lists(&self, plural: &str) -> u64 {
        match self {
            Cluster::Emulated(e) => e.lists(plural).0,
            Cluster::Real(r) => r.request_total(&[("verb", "LIST"), ("resource", plural)]),
        }
    }

    /// GETs of one object of `resource` (`pods`, or `ipamclaims/status`) so far.
    pub fn gets(&self, resource: &str) -> u64 {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        match self {
            Cluster::Emulated(e) => e.gets(&format!(
                "{resource}{}",
                if subresource.is_empty() { String::new() } else { format!("/{subresource}") }
            )),
            Cluster::Real(r) => r.request_total(&[
                ("verb", "GET"),
                ("resource", resource),
                ("subresource", subresource),
            ]),
        }
    }

    /// Answers `verb` on `plural` with 403: the emulation by its switch, the real server by
    /// taking the grant out of the roles we ship.
    pub fn deny(&self, verb: &str, plural: &str) {
        match self {
            Cluster::Emulated(e) => e.deny(verb, plural),
            Cluster::Real(r) => r.deny(verb, plural),
        }
    }

    /// Lifts a denial made with [`Cluster::deny`].
    pub fn allow(&self, verb: &str, plural: &str) {
        match self {
            Cluster::Emulated(e) => e.allow(verb, plural),
            Cluster::Real(r) => r.allow(verb, plural),
        }
    }

    /// Watch streams of `plural` open now (the emulation: opened so far).
    pub fn watching(&self, plural: &str) -> u64 {
        match self {
            Cluster::Emulated(e) => e.watching(plural),
            Cluster::Real(r) => r.watching(plural),
        }
    }
}

// ---- what the kube tests share beside the API server ---------------------------------------

/// One CNI call of the plugin binary `bin`, as a runtime makes it (a fresh process, the pod in
/// `K8S_POD_*`, interface net1, `NODENAME` = `node` or unset): success, and stdout as JSON
/// (null when empty, as DEL and GC print nothing; stdout as a JSON string when it is not JSON).
pub fn cni_call(
    bin: &str,
    node: Option<&str>,
    command: &str,
    config: &Value,
    container: &str,
    podref: &str,
    cache: &Path,
) -> (bool, Value, String) {
    use std::io::Write;
    let (namespace, name) = podref.split_once('/').unwrap();
    let mut process = std::process::Command::new(bin);
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
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let stdout = if output.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&output.stdout).into()))
    };
    (output.status.success(), stdout, stderr)
}

/// The kubeconfig `hereabouts reconcile`, `controller` and `status` run with (the reconciler's
/// ServiceAccount), written by [`Cluster::kubeconfig`] beside the node plugin's.
pub fn reconciler_beside(kubeconfig: &Path) -> PathBuf {
    kubeconfig.with_file_name("reconciler.kubeconfig")
}

/// A pod object as the API server would return it.
pub fn pod(namespace: &str, name: &str, phase: &str, network_ips: &[&str]) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": {}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
        "status": {"phase": phase}
    });
    if !network_ips.is_empty() {
        let status = json!([
            {"name": "cbr0", "interface": "eth0", "ips": ["10.244.0.9"], "default": true},
            {"name": format!("{namespace}/blue"), "interface": "net1", "ips": network_ips}
        ]);
        pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"] =
            json!(status.to_string());
    }
    pod
}

// ---- what the kube tests share beside the emulation ----------------------------------------

/// A fresh directory for one test (its kubeconfig, its CNI cache), under cargo's target tmp.
pub fn temp_dir(suite: &str, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{suite}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `p` quantile of sorted latencies (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}
