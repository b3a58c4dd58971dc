//! The real kube-apiserver that `host-cni/tests/k8s/run.sh` starts (etcd and kube-apiserver
//! built from their Go modules, client certificates, `--authorization-mode=RBAC`, the shipped
//! CRDs and RBAC applied as a user applies them), seen through the same methods as the
//! emulation so one test runs against either.
//!
//! - The test side (creating pods and nodes, setting their status as a kubelet would, reading
//!   back what the product wrote) acts as a cluster admin (the `system:masters` client
//!   certificate in `admin.kubeconfig`).
//! - The product runs as its own ServiceAccounts: [`RealServer::kubeconfig`] writes a
//!   kubeconfig with a token from the TokenRequest API for the account a component runs as in
//!   deploy/ (`hereabouts` for the node plugin, `hereabouts-reconciler` for reconcile and the
//!   controller), so every test passes with exactly the RBAC we ship, or fails with its 403.
//! - The server is shared by the tests of a run, which run one at a time
//!   (`--test-threads=1`); [`RealServer::connect`] first deletes what earlier tests left (every
//!   object of the kinds the tests use, in every namespace, and every Node).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::emulation::{group_of, has_status_subresource, is_cluster_scoped, kind_of};

/// The namespace deploy/ puts the ServiceAccounts and the custom resources in.
const SYSTEM: &str = "kube-system";

/// The kinds a test may create; [`RealServer::connect`] deletes what earlier tests left of each.
const TEST_KINDS: [&str; 9] = [
    "ippools",
    "overlappingrangeipreservations",
    "nodeslicepools",
    "network-attachment-definitions",
    "ipamclaims",
    "statefulsets",
    "pods",
    "events",
    "nodes",
];

pub struct RealServer {
    url: String,
    /// The cluster CA, base64 (for the kubeconfigs written for the product).
    ca_data: String,
    runtime: tokio::runtime::Runtime,
    admin: kube::Client,
    /// Namespaces known to exist (with their `default` ServiceAccount, which pods need: no
    /// controller-manager runs to make it).
    namespaces: Mutex<BTreeSet<String>>,
    /// TokenRequest tokens by ServiceAccount name.
    tokens: Mutex<BTreeMap<String, String>>,
    /// Clients that authenticate with those tokens, by ServiceAccount name.
    clients: Mutex<BTreeMap<String, kube::Client>>,
    /// Where this server's kubeconfigs for the product are written.
    dir: PathBuf,
    /// The RBAC as run.sh applied it (deploy/rbac.yaml), kept in the cluster directory.
    shipped_rbac: PathBuf,
    /// (verb, plural) pairs taken out of our roles by [`RealServer::deny`].
    denied: Mutex<BTreeSet<(String, String)>>,
}

/// A failed request: the HTTP status and the Status body the server sent.
#[derive(Debug)]
pub struct Refused {
    pub code: u16,
    pub body: Value,
}

impl RealServer {
    /// Connects as the admin of the cluster in `dir` (run.sh's cluster directory) and removes
    /// what earlier tests left.
    pub fn connect(dir: &Path) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let kubeconfig_path = dir.join("admin.kubeconfig");
        let kubeconfig = kube::config::Kubeconfig::read_from(&kubeconfig_path)
            .unwrap_or_else(|e| panic!("{}: {e}", kubeconfig_path.display()));
        let cluster = &kubeconfig.clusters[0].cluster.as_ref().unwrap();
        let url = cluster.server.clone().unwrap();
        let ca_data = cluster.certificate_authority_data.clone().unwrap();
        let admin = runtime.block_on(async {
            let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .unwrap();
            kube::Client::try_from(config).unwrap()
        });
        let server = Self {
            url,
            ca_data,
            runtime,
            admin,
            namespaces: Mutex::default(),
            tokens: Mutex::default(),
            clients: Mutex::default(),
            dir: dir.to_path_buf(),
            shipped_rbac: dir.join("rbac-shipped.json"),
            denied: Mutex::default(),
        };
        server.reset();
        server
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// One request as the admin: the body the server answered, or its refusal.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Refused> {
        self.send(&self.admin, method, path, body)
    }

    /// One request as ServiceAccount `account` of kube-system, with its TokenRequest token.
    pub fn request_as(
        &self,
        account: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Refused> {
        let client = self.clients.lock().unwrap().get(account).cloned();
        let client = client.unwrap_or_else(|| {
            let path = self.dir.join(format!("{account}.kubeconfig"));
            self.kubeconfig(&path, None, account);
            let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
            let client = self.runtime.block_on(async {
                let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .unwrap();
                kube::Client::try_from(config).unwrap()
            });
            self.clients.lock().unwrap().insert(account.into(), client.clone());
            client
        });
        self.send(&client, method, path, body)
    }

    fn send(
        &self,
        client: &kube::Client,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Refused> {
        self.runtime.block_on(Self::send_async(client, method, path, body))
    }

    async fn send_async(
        client: &kube::Client,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Refused> {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
            .unwrap();
        match client.request_text(request).await {
            Ok(text) if text.is_empty() => Ok(Value::Null),
            Ok(text) => Ok(serde_json::from_str(&text).unwrap_or(Value::String(text))),
            Err(kube::Error::Api(status)) => Err(Refused {
                code: status.code,
                body: json!({"code": status.code, "reason": status.reason, "message": status.message}),
            }),
            Err(other) => panic!("{method} {path}: {other}"),
        }
    }

    /// The REST path of `plural` in `namespace` (all namespaces when None), or of one object.
    pub fn path(plural: &str, namespace: Option<&str>, name: Option<&str>) -> String {
        let (api_version, _) = kind_of(plural).unwrap_or_else(|| panic!("unknown kind {plural}"));
        let base = match group_of(plural) {
            "" => format!("/api/{api_version}"),
            _ => format!("/apis/{api_version}"),
        };
        let scope = match namespace {
            Some(ns) if !is_cluster_scoped(plural) => format!("/namespaces/{ns}"),
            _ => String::new(),
        };
        let name = name.map(|n| format!("/{n}")).unwrap_or_default();
        format!("{base}{scope}/{plural}{name}")
    }

    fn namespace_of(plural: &str, object: &Value) -> Option<String> {
        (!is_cluster_scoped(plural))
            .then(|| object["metadata"]["namespace"].as_str().unwrap_or("default").to_string())
    }

    /// Creates `namespace` and its `default` ServiceAccount if they do not exist yet.
    pub fn ensure_namespace(&self, namespace: &str) {
        if self.namespaces.lock().unwrap().contains(namespace) {
            return;
        }
        let created = self.request(
            "POST",
            "/api/v1/namespaces",
            Some(
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
            ),
        );
        assert!(matches!(&created, Ok(_) | Err(Refused { code: 409, .. })), "{created:?}");
        let account = self.request(
            "POST",
            &format!("/api/v1/namespaces/{namespace}/serviceaccounts"),
            Some(&json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})),
        );
        assert!(matches!(&account, Ok(_) | Err(Refused { code: 409, .. })), "{account:?}");
        self.namespaces.lock().unwrap().insert(namespace.to_string());
    }

    /// Creates an object as a test's `kubectl create` would; a `status` in it is then written
    /// through the status subresource, as the kubelet or a controller writes it.
    pub fn insert(&self, plural: &str, mut object: Value) -> Value {
        let namespace = Self::namespace_of(plural, &object);
        if let Some(ns) = &namespace {
            self.ensure_namespace(ns);
        }
        // What the server sets itself (a fixture exported from a cluster has them): a create
        // that sends a resourceVersion is refused, as `kubectl create` of such a file is.
        if let Some(metadata) = object["metadata"].as_object_mut() {
            for field in
                ["resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"]
            {
                metadata.remove(field);
            }
        }
        if object.get("apiVersion").is_none() {
            let (api_version, kind) = kind_of(plural).unwrap();
            object["apiVersion"] = json!(api_version);
            object["kind"] = json!(kind);
        }
        let status = object.get("status").cloned();
        // No client can create an object that is being deleted: a pod on a node is created,
        // then deleted with a grace period, and stays Terminating (no kubelet confirms it).
        let deleting = object["metadata"].as_object_mut().unwrap().remove("deletionTimestamp");
        let path = Self::path(plural, namespace.as_deref(), None);
        let stored = self
            .request("POST", &path, Some(&object))
            .unwrap_or_else(|e| panic!("create {plural}: {e:?}\n{object}"));
        let stored = match status {
            Some(status) if Self::status_is_separate(plural) => {
                self.write_status(plural, stored, status)
            }
            _ => stored,
        };
        if deleting.is_none() {
            return stored;
        }
        assert!(
            plural == "pods" && stored["spec"]["nodeName"].is_string(),
            "only a pod on a node can be left deleting: {stored}"
        );
        let name = stored["metadata"]["name"].as_str().unwrap();
        let options =
            json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 30});
        self.request(
            "DELETE",
            &Self::path(plural, namespace.as_deref(), Some(name)),
            Some(&options),
        )
        .unwrap_or_else(|e| panic!("delete {plural}: {e:?}"))
    }

    /// Creates many objects of `plural` (none of them deleting), 64 requests in flight: what
    /// a benchmark's tens of thousands of pods need.
    pub fn insert_all(&self, plural: &str, objects: Vec<Value>) {
        for namespace in
            objects.iter().filter_map(|o| Self::namespace_of(plural, o)).collect::<BTreeSet<_>>()
        {
            self.ensure_namespace(&namespace);
        }
        let separate = Self::status_is_separate(plural);
        for chunk in objects.chunks(64) {
            let creates = chunk.iter().map(|object| async move {
                let namespace = Self::namespace_of(plural, object);
                let path = Self::path(plural, namespace.as_deref(), None);
                let mut stored = Self::send_async(&self.admin, "POST", &path, Some(object))
                    .await
                    .unwrap_or_else(|e| panic!("create {plural}: {e:?}"));
                if let (true, Some(status)) = (separate, object.get("status")) {
                    stored["status"] = status.clone();
                    let name = stored["metadata"]["name"].as_str().unwrap().to_string();
                    let path =
                        format!("{}/status", Self::path(plural, namespace.as_deref(), Some(&name)));
                    Self::send_async(&self.admin, "PUT", &path, Some(&stored))
                        .await
                        .unwrap_or_else(|e| panic!("status of {plural}: {e:?}"));
                }
            });
            self.runtime.block_on(futures_util::future::join_all(creates));
        }
    }

    /// Whether the real server keeps `status` apart (a PUT of the object ignores it).
    fn status_is_separate(plural: &str) -> bool {
        matches!(plural, "pods" | "nodes" | "statefulsets") || has_status_subresource(plural)
    }

    fn write_status(&self, plural: &str, mut stored: Value, status: Value) -> Value {
        stored["status"] = status;
        let path = format!(
            "{}/status",
            Self::path(
                plural,
                Self::namespace_of(plural, &stored).as_deref(),
                stored["metadata"]["name"].as_str()
            )
        );
        self.request("PUT", &path, Some(&stored))
            .unwrap_or_else(|e| panic!("status of {plural}: {e:?}\n{stored}"))
    }

    /// Replaces an object unconditionally (a test's `kubectl edit`), its status included.
    pub fn update(&self, plural: &str, object: Value) -> Value {
        let namespace = Self::namespace_of(plural, &object);
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let path = Self::path(plural, namespace.as_deref(), Some(&name));
        for _ in 0..20 {
            let current = self.request("GET", &path, None).expect("update of a missing object");
            let mut sent = object.clone();
            if plural == "pods" {
                // A pod's spec is immutable but for images and tolerations (the server has
                // defaulted it since): a test edits its metadata and status only.
                sent["spec"] = current["spec"].clone();
            }
            sent["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
            match self.request("PUT", &path, Some(&sent)) {
                Ok(stored) => {
                    return match object.get("status") {
                        Some(status) if Self::status_is_separate(plural) => {
                            self.write_status(plural, stored, status.clone())
                        }
                        _ => stored,
                    };
                }
                Err(Refused { code: 409, .. }) => continue,
                Err(other) => panic!("update {plural}/{name}: {other:?}"),
            }
        }
        panic!("update {plural}/{name}: conflicts for ever");
    }

    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        match self.request("GET", &Self::path(plural, Some(namespace), Some(name)), None) {
            Ok(object) => Some(object),
            Err(Refused { code: 404, .. }) => None,
            Err(other) => panic!("get {plural} {namespace}/{name}: {other:?}"),
        }
    }

    /// Every object of `plural` in every namespace (all pages).
    pub fn list(&self, plural: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut token = String::new();
        loop {
            let path = format!("{}?limit=500&continue={token}", Self::path(plural, None, None));
            let page = match self.request("GET", &path, None) {
                Ok(page) => page,
                // A CRD the run did not install (an optional one): nothing of it exists.
                Err(Refused { code: 404, .. }) => return items,
                Err(other) => panic!("list {plural}: {other:?}"),
            };
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["metadata"]["continue"].as_str() {
                Some(next) if !next.is_empty() => token = next.to_string(),
                _ => return items,
            }
        }
    }

    /// Deletes an object at once (a pod with no grace period, as the kubelet confirms it);
    /// false when it does not exist.
    pub fn delete(&self, plural: &str, namespace: &str, name: &str) -> bool {
        let path = Self::path(plural, Some(namespace), Some(name));
        let options = json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0});
        match self.request("DELETE", &path, Some(&options)) {
            Ok(_) => true,
            Err(Refused { code: 404, .. }) => false,
            Err(other) => panic!("delete {plural} {namespace}/{name}: {other:?}"),
        }
    }

    /// Deletes every object the tests' kinds have, and waits until the server lists none;
    /// puts back the RBAC as shipped if an earlier test's [`RealServer::deny`] was left.
    pub fn reset(&self) {
        self.write_roles();
        for plural in TEST_KINDS {
            for object in self.list(plural) {
                let namespace = object["metadata"]["namespace"].as_str().unwrap_or("");
                let name = object["metadata"]["name"].as_str().unwrap();
                // Finalizers would keep an object Terminating; the tests set none, but a
                // product bug must not make every later test fail too.
                if object["metadata"]["finalizers"].is_array() {
                    let mut cleared = object.clone();
                    cleared["metadata"]["finalizers"] = json!([]);
                    let _ = self.request(
                        "PUT",
                        &Self::path(plural, Some(namespace), Some(name)),
                        Some(&cleared),
                    );
                }
                self.delete(plural, namespace, name);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for plural in TEST_KINDS {
            while !self.list(plural).is_empty() {
                assert!(Instant::now() < deadline, "{plural} left after the reset");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// A token for ServiceAccount `account` of kube-system, from the TokenRequest API (one
    /// hour, the API server's audience), as the kubelet projects it into a pod.
    pub fn token(&self, account: &str) -> String {
        if let Some(token) = self.tokens.lock().unwrap().get(account) {
            return token.clone();
        }
        let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                             "spec": {"expirationSeconds": 3600}});
        let answer = self
            .request(
                "POST",
                &format!("/api/v1/namespaces/{SYSTEM}/serviceaccounts/{account}/token"),
                Some(&request),
            )
            .unwrap_or_else(|e| {
                panic!("TokenRequest for {account}: {e:?} (is deploy/rbac.yaml applied?)")
            });
        let token = answer["status"]["token"].as_str().unwrap().to_string();
        self.tokens.lock().unwrap().insert(account.into(), token.clone());
        token
    }

    /// Writes `path`, a kubeconfig for ServiceAccount `account` (context namespace
    /// `namespace`).
    pub fn kubeconfig(&self, path: &Path, namespace: Option<&str>, account: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        if let Some(namespace) = namespace.filter(|ns| *ns != SYSTEM) {
            self.grant_roles_in(namespace);
        }
        let ns = namespace.map(|n| format!("\n    namespace: {n}")).unwrap_or_default();
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority-data: {}\n\
                 contexts:\n- name: test\n  context:\n    cluster: test\n    user: {account}{ns}\n\
                 current-context: test\nusers:\n- name: {account}\n  user:\n    token: {}\n",
                self.url,
                self.ca_data,
                self.token(account)
            ),
        )
        .unwrap();
    }

    /// The API server's own request counters (`apiserver_request_total` from /metrics),
    /// summed over the series whose labels all match `wanted`.
    pub fn request_total(&self, wanted: &[(&str, &str)]) -> u64 {
        self.metric_sum("apiserver_request_total", wanted)
    }

    /// Watches open now on `resource` (`apiserver_longrunning_requests`, verb WATCH).
    pub fn watching(&self, resource: &str) -> u64 {
        self.metric_sum(
            "apiserver_longrunning_requests",
            &[("verb", "WATCH"), ("resource", resource)],
        )
    }

    fn metric_sum(&self, metric: &str, wanted: &[(&str, &str)]) -> u64 {
        let Ok(Value::String(text)) = self.request("GET", "/metrics", None) else {
            panic!("GET /metrics did not answer text");
        };
        let mut sum = 0.0;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(metric).and_then(|r| r.strip_prefix('{')) else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else { continue };
            let labels: BTreeMap<&str, &str> = labels
                .split(",")
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k, v.trim_matches('"')))
                .collect();
            if wanted.iter().all(|(k, v)| labels.get(k).copied().unwrap_or("") == *v) {
                sum += value.trim().parse::<f64>().unwrap_or(0.0);
            }
        }
        sum as u64
    }

    // ---- real 403s: RBAC as shipped, less a grant --------------------------------------------

    /// Our Roles (kube-system) and ClusterRoles: (path, object), as run.sh applied them. Saved
    /// by the first test of the run, before any denial, and read back by every later one.
    fn shipped_roles(&self) -> Vec<(String, Value)> {
        if let Ok(text) = std::fs::read_to_string(&self.shipped_rbac) {
            return serde_json::from_str(&text).unwrap();
        }
        let mut roles = Vec::new();
        for list in [
            format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{SYSTEM}/roles"),
            "/apis/rbac.authorization.k8s.io/v1/clusterroles".to_string(),
        ] {
            let items = self.request("GET", &list, None).unwrap()["items"].clone();
            for mut role in items.as_array().cloned().unwrap_or_default() {
                let name = role["metadata"]["name"].as_str().unwrap().to_string();
                if name.starts_with("hereabouts") {
                    let metadata = role["metadata"].as_object_mut().unwrap();
                    metadata.retain(|k, _| k == "name" || k == "namespace");
                    roles.push((format!("{list}/{name}"), role));
                }
            }
        }
        assert!(!roles.is_empty(), "no hereabouts Roles: is deploy/rbac.yaml applied?");
        std::fs::write(&self.shipped_rbac, serde_json::to_string(&roles).unwrap()).unwrap();
        roles
    }

    /// Writes every role as shipped, less the grants in `self.denied`.
    fn write_roles(&self) {
        let denied = self.denied.lock().unwrap().clone();
        if denied.is_empty() && !self.shipped_rbac.exists() {
            return;
        }
        for (path, mut role) in self.shipped_roles() {
            let mut rules = Vec::new();
            for rule in role["rules"].as_array().cloned().unwrap_or_default() {
                let resources: Vec<String> =
                    serde_json::from_value(rule["resources"].clone()).unwrap_or_default();
                for resource in resources {
                    let mut one = rule.clone();
                    one["resources"] = json!([resource]);
                    let verbs: Vec<Value> = rule["verbs"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|v| {
                            !denied.contains(&(v.as_str().unwrap().into(), resource.clone()))
                        })
                        .cloned()
                        .collect();
                    if !verbs.is_empty() {
                        one["verbs"] = json!(verbs);
                        rules.push(one);
                    }
                }
            }
            role["rules"] = json!(rules);
            let current = self.request("GET", &path, None).unwrap();
            role["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
            self.request("PUT", &path, Some(&role)).unwrap_or_else(|e| panic!("{path}: {e:?}"));
        }
    }

    /// Whether ServiceAccount `account` of kube-system may `verb` `plural` in kube-system, as
    /// the authorizer answers a SubjectAccessReview.
    pub fn may(&self, account: &str, verb: &str, plural: &str) -> bool {
        let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": format!("system:serviceaccount:{SYSTEM}:{account}"),
                     "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{SYSTEM}")],
                     "resourceAttributes": {"namespace": SYSTEM, "verb": verb,
                                            "group": group_of(plural), "resource": plural}}});
        let answer = self
            .request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", Some(&review))
            .unwrap();
        answer["status"]["allowed"] == json!(true)
    }

    /// Takes `verb` on `plural` out of every role we ship (a real 403 for every component
    /// that had it), and waits until the authorizer says so.
    pub fn deny(&self, verb: &str, plural: &str) {
        self.denied.lock().unwrap().insert((verb.into(), plural.into()));
        self.write_roles();
        self.wait_for_authorizer(verb, plural, false);
    }

    /// Gives back what [`RealServer::deny`] took.
    pub fn allow(&self, verb: &str, plural: &str) {
        self.denied.lock().unwrap().remove(&(verb.to_string(), plural.to_string()));
        self.write_roles();
        self.wait_for_authorizer(verb, plural, true);
    }

    /// Waits until some component may (`allowed`) or none may `verb` `plural`.
    fn wait_for_authorizer(&self, verb: &str, plural: &str, allowed: bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let accounts = [super::NODE_PLUGIN, super::RECONCILER];
        while accounts.iter().any(|a| self.may(a, verb, plural)) != allowed {
            assert!(Instant::now() < deadline, "RBAC change on {verb} {plural} not seen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Custom resources kept in another namespace than kube-system: the user applies our
    /// Roles and RoleBindings of deploy/rbac.yaml there too (deploy/README.md), as this does.
    fn grant_roles_in(&self, namespace: &str) {
        self.ensure_namespace(namespace);
        let rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces";
        for kind in ["roles", "rolebindings"] {
            let items = self.request("GET", &format!("{rbac}/{SYSTEM}/{kind}"), None).unwrap();
            for mut object in items["items"].as_array().cloned().unwrap_or_default() {
                let name = object["metadata"]["name"].as_str().unwrap().to_string();
                if !name.starts_with("hereabouts") {
                    continue;
                }
                object["metadata"] = json!({"name": name, "namespace": namespace});
                let path = format!("{rbac}/{namespace}/{kind}");
                if let Err(Refused { code: 409, .. }) = self.request("POST", &path, Some(&object)) {
                    // Left by an earlier test: made the same as kube-system's again.
                    let current = self.request("GET", &format!("{path}/{name}"), None).unwrap();
                    object["metadata"]["resourceVersion"] =
                        current["metadata"]["resourceVersion"].clone();
                    self.request("PUT", &format!("{path}/{name}"), Some(&object)).unwrap();
                }
            }
        }
        // The authorizer sees new bindings within moments; wait until it does.
        let review = |account: &str| {
            let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {"user": format!("system:serviceaccount:{SYSTEM}:{account}"),
                         "resourceAttributes": {"namespace": namespace, "verb": "get",
                                                "group": "whereabouts.cni.cncf.io", "resource": "ippools"}}});
            self.request(
                "POST",
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                Some(&review),
            )
            .unwrap()["status"]["allowed"]
                == json!(true)
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(review(super::NODE_PLUGIN) && review(super::RECONCILER)) {
            assert!(Instant::now() < deadline, "the roles in {namespace} are not seen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // ---- what only a real control plane does -------------------------------------------------

    fn cluster_script(&self, command: &str) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/k8s/cluster.sh");
        let output = std::process::Command::new("bash")
            .arg(&script)
            .args([command, self.dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "cluster.sh {command}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// `kubectl ARGS…` as the cluster's admin (the kubectl of run.sh's tools, from `DIR/env`),
    /// with `stdin` on its standard input: its stdout, or a panic with its stderr.
    pub fn kubectl(&self, args: &[&str], stdin: &str) -> String {
        use std::io::Write;
        let env = std::fs::read_to_string(self.dir.join("env")).unwrap();
        let kubectl = env
            .lines()
            .find_map(|line| line.strip_prefix("KUBECTL="))
            .unwrap_or_else(|| panic!("no KUBECTL= in {}/env", self.dir.display()));
        let mut child = std::process::Command::new(kubectl)
            .args(args)
            .env("KUBECONFIG", self.dir.join("admin.kubeconfig"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Stops the API server and starts it again on the same address (every watch is cut).
    pub fn restart(&self) {
        self.cluster_script("restart-apiserver");
    }

    /// Compacts etcd's history up to now: a watch from an older resourceVersion gets 410.
    pub fn compact(&self) {
        self.cluster_script("compact");
    }
}
