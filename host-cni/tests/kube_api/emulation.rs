//! A Kubernetes API-server **emulation** for the tests — not a Kubernetes API server.
//!
//! The tests also run against a real kube-apiserver (see [`super`]); this emulation stays for
//! `cargo test` without one, and for the faults a real server cannot be made to produce. This
//! small HTTP/1.1 server on 127.0.0.1 speaks just enough of the real REST API for Hereabouts' production code
//! (the real `kube` client, over real HTTP, configured by a real kubeconfig) to run against it:
//! - the three Whereabouts custom resources (`ippools`, `overlappingrangeipreservations`,
//!   `nodeslicepools` in `whereabouts.cni.cncf.io/v1alpha1`), Multus'
//!   `network-attachment-definitions` (`k8s.cni.cncf.io/v1`), `ipamclaims`
//!   (`k8s.cni.cncf.io/v1alpha1`, with its status subresource: `PUT …/status` writes only
//!   `status`, a PUT of the object keeps the stored `status`, a create drops it), core `pods`
//!   and cluster-scoped `nodes`, `apps/v1` `statefulsets` (stored as sent: no controller makes
//!   their pods), `daemonsets` and `deployments` (stored as sent, like every workload here),
//!   `batch/v1` `cronjobs`, core `configmaps`, `coordination.k8s.io/v1` `leases` (what
//!   Whereabouts deploys and takes, for `hereabouts migrate check`), and `events.k8s.io/v1` `events` (created, never patched here), at their real
//!   paths;
//! - lists in pages: `limit` and `continue` (an opaque token; a page of `limit` items and
//!   `metadata.continue` while more remain), as the real server pages them;
//! - GET (one object or a list, with the list's `resourceVersion`), POST (create; 409
//!   AlreadyExists), PUT (replace; `resourceVersion` required and compared, 409 Conflict when
//!   stale), DELETE (404 when absent; `preconditions.resourceVersion` honoured, 409 when stale);
//! - `?watch=true&resourceVersion=N` on pods, ipamclaims and statefulsets (chunked stream of ADDED/MODIFIED/DELETED events
//!   after N, ended by `timeoutSeconds`, or by the test as a dropped connection; a version
//!   older than a compaction the test made gets the real server's 410 Gone ERROR event);
//! - one cluster-wide `resourceVersion` counter, as etcd's revision is;
//! - the CRDs' structural schema, as the real server applies it to Whereabouts' CRDs and ours:
//!   unknown fields are pruned on every write, required fields are validated (422);
//! - metadata.annotations limited to 256 KiB, keys and values together (422), as apimachinery
//!   validates every object;
//! - an update that changes nothing keeps the object's `resourceVersion` (no write, no event),
//!   as the real server does;
//! - RBAC denials on demand (403 with the real message shape) and a request log for tests.
//!
//! It does not do: authentication, field/label selectors, PATCH, server-side apply,
//! admission, or anything not listed above.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const GROUP_PREFIX: &str = "/apis/whereabouts.cni.cncf.io/v1alpha1";
const EVENTS_PREFIX: &str = "/apis/events.k8s.io/v1";

#[derive(Default)]
struct State {
    revision: u64,
    /// (plural, namespace, name) → object
    objects: BTreeMap<(String, String, String), Value>,
    /// Events for watches of the [`WATCHED`] kinds: (revision, plural, type, object).
    events: Vec<(u64, &'static str, &'static str, Value)>,
    /// (verb, plural) pairs answered with 403.
    denied: HashSet<(String, String)>,
    /// Count of responses by status code.
    codes: BTreeMap<u16, u64>,
    requests: u64,
    watches: u64,
    /// Watch streams opened, by plural.
    streams: BTreeMap<String, u64>,
    /// The `resourceVersion` each watch request asked to start from ("" when none).
    watch_versions: Vec<String>,
    /// Bumped to end every open watch stream (a dropped connection).
    watch_epoch: u64,
    /// Events at or below this revision are compacted away: a watch from an older
    /// `resourceVersion` is answered with a 410 Gone ERROR event, as the real server does.
    compacted: u64,
    /// GET requests of one object, by resource (`pods`, `ipamclaims/status`).
    gets: BTreeMap<String, u64>,
    /// List requests by plural, and how many of them asked for a page (`limit`).
    lists: BTreeMap<String, (u64, u64)>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
}

pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

pub(super) fn kind_of(plural: &str) -> Option<(&'static str, &'static str)> {
    match plural {
        "ippools" => Some(("whereabouts.cni.cncf.io/v1alpha1", "IPPool")),
        "overlappingrangeipreservations" => {
            Some(("whereabouts.cni.cncf.io/v1alpha1", "OverlappingRangeIPReservation"))
        }
        "nodeslicepools" => Some(("whereabouts.cni.cncf.io/v1alpha1", "NodeSlicePool")),
        "pods" => Some(("v1", "Pod")),
        "nodes" => Some(("v1", "Node")),
        "events" => Some(("events.k8s.io/v1", "Event")),
        "network-attachment-definitions" => {
            Some(("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition"))
        }
        "ipamclaims" => Some(("k8s.cni.cncf.io/v1alpha1", "IPAMClaim")),
        "statefulsets" => Some(("apps/v1", "StatefulSet")),
        "daemonsets" => Some(("apps/v1", "DaemonSet")),
        "deployments" => Some(("apps/v1", "Deployment")),
        "cronjobs" => Some(("batch/v1", "CronJob")),
        "configmaps" => Some(("v1", "ConfigMap")),
        "leases" => Some(("coordination.k8s.io/v1", "Lease")),
        _ => None,
    }
}

/// Kubernetes' own kinds (under /api/v1), not Whereabouts' custom resources.
pub(super) fn is_core(plural: &str) -> bool {
    matches!(plural, "pods" | "nodes" | "configmaps")
}

/// Kinds without a namespace.
pub(super) fn is_cluster_scoped(plural: &str) -> bool {
    plural == "nodes"
}

pub(super) fn group_of(plural: &str) -> &'static str {
    match plural {
        _ if is_core(plural) => "",
        "events" => "events.k8s.io",
        "statefulsets" | "daemonsets" | "deployments" => "apps",
        "cronjobs" => "batch",
        "leases" => "coordination.k8s.io",
        "network-attachment-definitions" | "ipamclaims" => "k8s.cni.cncf.io",
        _ => "whereabouts.cni.cncf.io",
    }
}

fn qualified(plural: &str) -> String {
    match group_of(plural) {
        "" => plural.into(),
        group => format!("{plural}.{group}"),
    }
}

fn status(code: u16, reason: &str, message: String, details: Value) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "details": details, "code": code}),
    )
}

impl Emulator {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State { revision: 1000, ..State::default() }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let accept_shared = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accept_shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let shared = accept_shared.clone();
                std::thread::spawn(move || serve_connection(stream, shared));
            }
        });
        Self { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig for this emulator (context namespace `namespace`, or none).
    pub fn kubeconfig(&self, dir: &Path, namespace: Option<&str>) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("kubeconfig");
        let ns = namespace.map(|n| format!("\n    namespace: {n}")).unwrap_or_default();
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: emulator\n  cluster:\n    server: {}\n\
                 contexts:\n- name: emulator\n  context:\n    cluster: emulator\n    user: hereabouts{ns}\n\
                 current-context: emulator\nusers:\n- name: hereabouts\n  user:\n    token: emulator-token\n",
                self.url()
            ),
        )
        .unwrap();
        path
    }

    /// Answers `verb` (get, list, watch, create, update, delete) on `plural` with 403.
    pub fn deny(&self, verb: &str, plural: &str) {
        self.shared.state.lock().unwrap().denied.insert((verb.into(), plural.into()));
    }

    /// Lifts a denial made with [`Emulator::deny`].
    pub fn allow(&self, verb: &str, plural: &str) {
        self.shared.state.lock().unwrap().denied.remove(&(verb.to_string(), plural.to_string()));
    }

    /// Stores an object as a client's create would (fresh resourceVersion, uid, timestamp).
    pub fn insert(&self, plural: &str, object: Value) -> Value {
        let mut state = self.shared.state.lock().unwrap();
        let ns = if is_cluster_scoped(plural) {
            ""
        } else {
            object["metadata"]["namespace"].as_str().unwrap_or("default")
        }
        .to_string();
        let stored = create(&mut state, plural, &ns, object)
            .unwrap_or_else(|(code, body)| panic!("insert {code}: {body}"));
        self.shared.changed.notify_all();
        stored
    }

    /// Replaces an object unconditionally (a test's kubectl edit, status included).
    pub fn update(&self, plural: &str, mut object: Value) -> Value {
        let mut state = self.shared.state.lock().unwrap();
        let ns = if is_cluster_scoped(plural) {
            ""
        } else {
            object["metadata"]["namespace"].as_str().unwrap_or("default")
        }
        .to_string();
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let current = state
            .objects
            .get(&(plural.into(), ns.clone(), name))
            .expect("update of a missing object");
        object["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        let stored = replace(&mut state, plural, &ns, object)
            .unwrap_or_else(|(code, body)| panic!("update {code}: {body}"));
        self.shared.changed.notify_all();
        stored
    }

    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .state
            .lock()
            .unwrap()
            .objects
            .get(&(plural.into(), namespace.into(), name.into()))
            .cloned()
    }

    pub fn list(&self, plural: &str) -> Vec<Value> {
        let state = self.shared.state.lock().unwrap();
        state.objects.iter().filter(|((p, _, _), _)| p == plural).map(|(_, v)| v.clone()).collect()
    }

    pub fn delete(&self, plural: &str, namespace: &str, name: &str) -> bool {
        let mut state = self.shared.state.lock().unwrap();
        let removed = remove(&mut state, plural, namespace, name, None).is_ok();
        self.shared.changed.notify_all();
        removed
    }

    /// How many responses had this HTTP status.
    pub fn responses(&self, code: u16) -> u64 {
        self.shared.state.lock().unwrap().codes.get(&code).copied().unwrap_or(0)
    }

    /// List requests of `plural` that arrived, and how many of them asked for a page.
    pub fn lists(&self, plural: &str) -> (u64, u64) {
        self.shared.state.lock().unwrap().lists.get(plural).copied().unwrap_or((0, 0))
    }

    /// How many GETs of one object of `resource` arrived.
    pub fn gets(&self, resource: &str) -> u64 {
        self.shared.state.lock().unwrap().gets.get(resource).copied().unwrap_or(0)
    }

    /// How many watch requests arrived.
    pub fn watches(&self) -> u64 {
        self.shared.state.lock().unwrap().watches
    }

    /// How many watch streams of `plural` were opened (requests answered with events).
    pub fn watching(&self, plural: &str) -> u64 {
        self.shared.state.lock().unwrap().streams.get(plural).copied().unwrap_or(0)
    }

    pub fn requests(&self) -> u64 {
        self.shared.state.lock().unwrap().requests
    }

    /// The `resourceVersion` each watch request asked to start from, in arrival order.
    pub fn watch_versions(&self) -> Vec<String> {
        self.shared.state.lock().unwrap().watch_versions.clone()
    }

    /// Ends every open watch stream, as a dropped connection would (clients resume).
    pub fn drop_watches(&self) {
        let mut state = self.shared.state.lock().unwrap();
        state.watch_epoch += 1;
        self.shared.changed.notify_all();
    }

    /// While no watch is open: ends every open watch stream, deletes `pods` (namespace,
    /// name) and compacts the event history up to now, so a client resuming from the version
    /// it saw gets 410 Gone and must list again to learn of the deletions.
    pub fn delete_while_disconnected_and_compact(&self, pods: &[(&str, &str)]) {
        let mut state = self.shared.state.lock().unwrap();
        state.watch_epoch += 1;
        for (namespace, name) in pods {
            remove(&mut state, "pods", namespace, name, None).expect("the pod exists");
        }
        let compacted = state.revision;
        state.compacted = compacted;
        state.events.retain(|(rv, _, _, _)| *rv > compacted);
        self.shared.changed.notify_all();
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        let _ = TcpStream::connect(self.addr);
    }
}

fn bump(state: &mut State) -> String {
    state.revision += 1;
    state.revision.to_string()
}

/// The kinds this emulation can watch; a watch of any other is 405.
const WATCHED: [&str; 3] = ["pods", "ipamclaims", "statefulsets"];

fn record(state: &mut State, plural: &str, kind: &'static str, object: &Value) {
    if let Some(plural) = WATCHED.iter().find(|w| **w == plural) {
        state.events.push((state.revision, plural, kind, object.clone()));
    }
}

/// Keeps only the fields of `object` that are in `fields` (a structural schema's pruning).
fn keep_fields(object: &mut Value, fields: &[&str]) {
    if let Some(map) = object.as_object_mut() {
        map.retain(|key, _| fields.contains(&key.as_str()));
    }
}

/// What a structural schema does to a custom resource: drops every field it does not declare
/// (Whereabouts' CRDs and ours declare the same ones). Pods are left as they are.
fn prune(plural: &str, object: &mut Value) {
    match plural {
        "ippools" => {
            keep_fields(object, &["apiVersion", "kind", "metadata", "spec"]);
            keep_fields(&mut object["spec"], &["range", "allocations"]);
            if let Some(allocations) = object["spec"]["allocations"].as_object_mut() {
                for allocation in allocations.values_mut() {
                    keep_fields(allocation, &["id", "podref", "ifname"]);
                }
            }
        }
        "overlappingrangeipreservations" => {
            keep_fields(object, &["apiVersion", "kind", "metadata", "spec"]);
            keep_fields(&mut object["spec"], &["containerid", "podref", "ifname"]);
        }
        "nodeslicepools" => {
            keep_fields(object, &["apiVersion", "kind", "metadata", "spec", "status"]);
            keep_fields(&mut object["spec"], &["range", "sliceSize"]);
            if object.get("status").is_some() {
                keep_fields(&mut object["status"], &["allocations"]);
                if let Some(items) = object["status"]["allocations"].as_array_mut() {
                    for item in items {
                        keep_fields(item, &["nodeName", "sliceRange"]);
                    }
                }
            }
        }
        "ipamclaims" => {
            keep_fields(object, &["apiVersion", "kind", "metadata", "spec", "status"]);
            keep_fields(&mut object["spec"], &["network", "interface"]);
            if object.get("status").is_some() {
                keep_fields(&mut object["status"], &["ips", "ownerPod", "conditions"]);
            }
        }
        _ => {}
    }
}

/// apimachinery's `TotalAnnotationSizeLimitB`: keys and values together.
const ANNOTATIONS_LIMIT: usize = 256 * 1024;

/// Schema validation for the fields the CRDs mark required, and the annotations' size limit
/// (what the real server enforces).
fn validate(plural: &str, object: &Value) -> Result<(), (u16, Value)> {
    let name = object["metadata"]["name"].as_str().unwrap_or("");
    if let Some(annotations) = object["metadata"]["annotations"].as_object() {
        let size: usize =
            annotations.iter().map(|(k, v)| k.len() + v.as_str().map_or(0, str::len)).sum();
        if size > ANNOTATIONS_LIMIT {
            return Err(status(
                422,
                "Invalid",
                format!(
                    "{} {name:?} is invalid: metadata.annotations: Too long: must have at most {ANNOTATIONS_LIMIT} bytes",
                    kind_of(plural).unwrap().1
                ),
                json!({"name": name, "group": group_of(plural), "kind": plural}),
            ));
        }
    }
    let missing = |field: &str| {
        Err(status(
            422,
            "Invalid",
            format!("{} {name:?} is invalid: {field}: Required value", kind_of(plural).unwrap().1),
            json!({"name": name, "group": group_of(plural), "kind": plural}),
        ))
    };
    match plural {
        "ippools" => {
            if !object["spec"]["range"].is_string() {
                return missing("spec.range");
            }
            let Some(allocations) = object["spec"]["allocations"].as_object() else {
                return missing("spec.allocations");
            };
            for (offset, allocation) in allocations {
                if !allocation["id"].is_string() {
                    return missing(&format!("spec.allocations[{offset}].id"));
                }
                if !allocation["podref"].is_string() {
                    return missing(&format!("spec.allocations[{offset}].podref"));
                }
            }
        }
        "overlappingrangeipreservations" if !object["spec"]["podref"].is_string() => {
            return missing("spec.podref");
        }
        "ipamclaims" => {
            for field in ["network", "interface"] {
                if !object["spec"][field].is_string() {
                    return missing(&format!("spec.{field}"));
                }
            }
            if let Some(status) = object.get("status").filter(|s| !s.is_null())
                && !status["ips"].is_array()
            {
                return missing("status.ips");
            }
        }
        "nodeslicepools" => {
            for field in ["range", "sliceSize"] {
                if !object["spec"][field].is_string() {
                    return missing(&format!("spec.{field}"));
                }
            }
            if let Some(status) = object.get("status").filter(|s| !s.is_null()) {
                let Some(items) = status["allocations"].as_array() else {
                    return missing("status.allocations");
                };
                for (i, item) in items.iter().enumerate() {
                    for field in ["nodeName", "sliceRange"] {
                        if !item[field].is_string() {
                            return missing(&format!("status.allocations[{i}].{field}"));
                        }
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn create(
    state: &mut State,
    plural: &str,
    ns: &str,
    mut object: Value,
) -> Result<Value, (u16, Value)> {
    let (api_version, kind) = kind_of(plural).unwrap();
    let Some(name) = object["metadata"]["name"].as_str().map(str::to_string) else {
        return Err(status(
            422,
            "Invalid",
            "metadata.name: Required value: name or generateName is required".into(),
            json!({}),
        ));
    };
    prune(plural, &mut object);
    // With a status subresource, a create ignores `status` (set it with a PUT of …/status).
    if has_status_subresource(plural)
        && let Some(map) = object.as_object_mut()
    {
        map.remove("status");
    }
    validate(plural, &object)?;
    let key = (plural.to_string(), ns.to_string(), name.clone());
    if state.objects.contains_key(&key) {
        return Err(status(
            409,
            "AlreadyExists",
            format!("{} {name:?} already exists", qualified(plural)),
            json!({"name": name, "group": group_of(plural), "kind": plural}),
        ));
    }
    let rv = bump(state);
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    let meta = object["metadata"].as_object_mut().unwrap();
    if !is_cluster_scoped(plural) {
        meta.insert("namespace".into(), json!(ns));
    }
    meta.insert("resourceVersion".into(), json!(rv));
    meta.insert("uid".into(), json!(format!("00000000-0000-4000-8000-{:012}", state.revision)));
    meta.insert("creationTimestamp".into(), json!("2026-01-01T00:00:00Z"));
    meta.insert("generation".into(), json!(1));
    state.objects.insert(key, object.clone());
    record(state, plural, "ADDED", &object);
    Ok(object)
}

fn replace(
    state: &mut State,
    plural: &str,
    ns: &str,
    mut object: Value,
) -> Result<Value, (u16, Value)> {
    let name = object["metadata"]["name"].as_str().unwrap_or("").to_string();
    let key = (plural.to_string(), ns.to_string(), name.clone());
    let Some(current) = state.objects.get(&key).cloned() else {
        return Err(status(
            404,
            "NotFound",
            format!("{} {name:?} not found", qualified(plural)),
            json!({"name": name, "group": group_of(plural), "kind": plural}),
        ));
    };
    let sent = object["metadata"]["resourceVersion"].as_str().unwrap_or("");
    if sent.is_empty() {
        return Err(status(
            422,
            "Invalid",
            format!(
                "{} {name:?} is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                kind_of(plural).unwrap().1
            ),
            json!({"name": name, "group": group_of(plural), "kind": plural}),
        ));
    }
    if sent != current["metadata"]["resourceVersion"].as_str().unwrap() {
        return Err(status(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                qualified(plural)
            ),
            json!({"name": name, "group": group_of(plural), "kind": plural}),
        ));
    }
    prune(plural, &mut object);
    validate(plural, &object)?;
    let (api_version, kind) = kind_of(plural).unwrap();
    let keep = current["metadata"].clone();
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    let meta = object["metadata"].as_object_mut().unwrap();
    for field in ["uid", "creationTimestamp", "namespace", "resourceVersion", "generation"] {
        match keep.get(field) {
            Some(value) => meta.insert(field.into(), value.clone()),
            None => meta.remove(field),
        };
    }
    // A no-op update is not written: same resourceVersion, no event (as the real server).
    if object == current {
        return Ok(object);
    }
    let rv = bump(state);
    let meta = object["metadata"].as_object_mut().unwrap();
    meta.insert("resourceVersion".into(), json!(rv));
    // With a status subresource, a status change is not a new generation.
    let changed_beyond_metadata = {
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(m) = v.as_object_mut() {
                m.remove("metadata");
                if has_status_subresource(plural) {
                    m.remove("status");
                }
            }
            v
        };
        strip(&object) != strip(&current)
    };
    if changed_beyond_metadata {
        let generation = keep["generation"].as_i64().unwrap_or(1) + 1;
        object["metadata"]["generation"] = json!(generation);
    }
    state.objects.insert(key, object.clone());
    record(state, plural, "MODIFIED", &object);
    Ok(object)
}

fn remove(
    state: &mut State,
    plural: &str,
    ns: &str,
    name: &str,
    precondition: Option<&str>,
) -> Result<Value, (u16, Value)> {
    let key = (plural.to_string(), ns.to_string(), name.to_string());
    let Some(current) = state.objects.get(&key) else {
        return Err(status(
            404,
            "NotFound",
            format!("{} {name:?} not found", qualified(plural)),
            json!({"name": name, "group": group_of(plural), "kind": plural}),
        ));
    };
    if let Some(rv) = precondition
        && current["metadata"]["resourceVersion"].as_str() != Some(rv)
    {
        return Err(status(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                qualified(plural),
                current["metadata"]["resourceVersion"].as_str().unwrap()
            ),
            json!({"name": name, "group": group_of(plural), "kind": plural}),
        ));
    }
    let mut object = state.objects.remove(&key).unwrap();
    object["metadata"]["resourceVersion"] = json!(bump(state));
    record(state, plural, "DELETED", &object);
    Ok(object)
}

/// A parsed request.
struct Request {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    body: Vec<u8>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut length = 0usize;
    let mut chunked = false;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "transfer-encoding" => chunked = value.trim().eq_ignore_ascii_case("chunked"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        body.resize(length, 0);
        reader.read_exact(&mut body).ok()?;
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q),
        None => (target.clone(), ""),
    };
    let query = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.to_string(), String::new()),
        })
        .collect();
    Some(Request { method, path, query, body })
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        _ => "Status",
    }
}

fn write_response(stream: &mut TcpStream, code: u16, body: &Value) -> std::io::Result<()> {
    let body = serde_json::to_vec(body).unwrap();
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        reason_phrase(code),
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(&body)?;
    stream.flush()
}

fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader) {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        if request.method == "GET"
            && request.query.get("watch").is_some_and(|w| w == "true" || w == "1")
        {
            serve_watch(&mut writer, &shared, &request);
            return;
        }
        let (code, body) = {
            let mut state = shared.state.lock().unwrap();
            state.requests += 1;
            let answer = handle(&mut state, &request);
            *state.codes.entry(answer.0).or_default() += 1;
            answer
        };
        shared.changed.notify_all();
        if write_response(&mut writer, code, &body).is_err() {
            return;
        }
    }
}

/// Splits a path into (plural, namespace or None for all namespaces, name or None).
fn route(path: &str) -> Option<(String, Option<String>, Option<String>)> {
    let (rest, group) = if let Some(rest) = path.strip_prefix(GROUP_PREFIX) {
        (rest, "whereabouts.cni.cncf.io")
    } else if let Some(rest) = path.strip_prefix(EVENTS_PREFIX) {
        (rest, "events.k8s.io")
    } else if let Some(rest) = path.strip_prefix("/apis/apps/v1") {
        (rest, "apps")
    } else if let Some(rest) = path.strip_prefix("/apis/batch/v1") {
        (rest, "batch")
    } else if let Some(rest) = path.strip_prefix("/apis/coordination.k8s.io/v1") {
        (rest, "coordination.k8s.io")
    } else if let Some(rest) = path.strip_prefix("/apis/k8s.cni.cncf.io/v1alpha1") {
        (rest, "k8s.cni.cncf.io")
    } else if let Some(rest) = path.strip_prefix("/apis/k8s.cni.cncf.io/v1") {
        (rest, "k8s.cni.cncf.io")
    } else {
        (path.strip_prefix("/api/v1")?, "")
    };
    let parts: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let parsed = match parts.as_slice() {
        [plural] => (plural.to_string(), None, None),
        [plural, name] if is_cluster_scoped(plural) => {
            (plural.to_string(), None, Some(name.to_string()))
        }
        ["namespaces", ns, plural] => (plural.to_string(), Some(ns.to_string()), None),
        ["namespaces", ns, plural, name] => {
            (plural.to_string(), Some(ns.to_string()), Some(name.to_string()))
        }
        _ => return None,
    };
    if kind_of(&parsed.0).is_none() || group_of(&parsed.0) != group {
        return None;
    }
    Some(parsed)
}

fn forbidden(verb: &str, plural: &str, ns: Option<&str>, name: Option<&str>) -> (u16, Value) {
    let scope = match ns {
        Some(ns) => format!(" in the namespace {ns:?}"),
        None => " at the cluster scope".into(),
    };
    let object = name.map(|n| format!(" {n:?}")).unwrap_or_default();
    status(
        403,
        "Forbidden",
        format!(
            "{}{object} is forbidden: User \"system:serviceaccount:kube-system:hereabouts\" cannot {verb} resource {plural:?} in API group {:?}{scope}",
            qualified(plural),
            group_of(plural)
        ),
        json!({"name": name.unwrap_or(""), "group": group_of(plural), "kind": plural}),
    )
}

fn handle(state: &mut State, request: &Request) -> (u16, Value) {
    // The status subresource, for the kinds that have one (the real server: 404 for others).
    let (path, subresource) = match request.path.strip_suffix("/status") {
        Some(path) if path.contains("/ipamclaims/") => (path, true),
        _ => (request.path.as_str(), false),
    };
    let Some((plural, ns, name)) = route(path) else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
            json!({}),
        );
    };
    let verb = match (request.method.as_str(), &name) {
        ("GET", Some(_)) => "get",
        ("GET", None) => "list",
        ("POST", None) => "create",
        ("PUT", Some(_)) => "update",
        ("DELETE", Some(_)) => "delete",
        _ => {
            return status(
                405,
                "MethodNotAllowed",
                format!("{} is not supported here", request.method),
                json!({}),
            );
        }
    };
    let resource = if subresource { format!("{plural}/status") } else { plural.clone() };
    if state.denied.contains(&(verb.to_string(), resource.clone())) {
        return forbidden(verb, &resource, ns.as_deref(), name.as_deref());
    }
    if subresource && verb != "get" && verb != "update" {
        return status(405, "MethodNotAllowed", format!("{verb} on {resource}"), json!({}));
    }
    let body = || serde_json::from_slice::<Value>(&request.body);
    match verb {
        "get" => {
            *state.gets.entry(resource.clone()).or_default() += 1;
            let key = (plural.clone(), ns.clone().unwrap_or_default(), name.clone().unwrap());
            match state.objects.get(&key) {
                Some(object) => (200, object.clone()),
                None => status(
                    404,
                    "NotFound",
                    format!("{} {:?} not found", qualified(&plural), key.2),
                    json!({"name": key.2, "group": group_of(&plural), "kind": plural}),
                ),
            }
        }
        "list" => {
            let (api_version, kind) = kind_of(&plural).unwrap();
            let limit = request.query.get("limit").and_then(|l| l.parse::<usize>().ok());
            let after = request.query.get("continue").map(|token| unhex(token));
            let counts = state.lists.entry(plural.clone()).or_default();
            counts.0 += 1;
            counts.1 += u64::from(limit.is_some());
            let mut matching = state
                .objects
                .iter()
                .filter(|((p, n, _), _)| *p == plural && ns.as_ref().is_none_or(|ns| ns == n))
                .filter(|((_, n, name), _)| {
                    after.as_ref().is_none_or(|after| format!("{n}/{name}") > *after)
                })
                .peekable();
            let mut items = Vec::new();
            let mut last = None;
            for ((_, n, name), object) in matching.by_ref() {
                items.push(object.clone());
                last = Some(format!("{n}/{name}"));
                if limit.is_some_and(|limit| limit > 0 && items.len() >= limit) {
                    break;
                }
            }
            let mut metadata = json!({"resourceVersion": state.revision.to_string()});
            if let (true, Some(last)) = (matching.peek().is_some(), last) {
                metadata["continue"] = json!(hex(&last));
            }
            (
                200,
                json!({"apiVersion": api_version, "kind": format!("{kind}List"),
                         "metadata": metadata, "items": items}),
            )
        }
        "create" => {
            let Ok(object) = body() else {
                return status(400, "BadRequest", "body is not JSON".into(), json!({}));
            };
            let ns = ns.unwrap_or_default();
            if object["metadata"]["namespace"].as_str().is_some_and(|n| n != ns) {
                return status(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request".into(), json!({}));
            }
            match create(state, &plural, &ns, object) {
                Ok(object) => (201, object),
                Err(e) => e,
            }
        }
        "update" => {
            let Ok(object) = body() else {
                return status(400, "BadRequest", "body is not JSON".into(), json!({}));
            };
            if object["metadata"]["name"].as_str() != name.as_deref() {
                return status(
                    400,
                    "BadRequest",
                    "the name of the object does not match the name on the URL".into(),
                    json!({}),
                );
            }
            let ns = ns.unwrap_or_default();
            let object = match has_status_subresource(&plural) {
                true => split_status(state, &plural, &ns, object, subresource),
                false => object,
            };
            match replace(state, &plural, &ns, object) {
                Ok(object) => (200, object),
                Err(e) => e,
            }
        }
        "delete" => {
            let options = body().unwrap_or(Value::Null);
            let precondition =
                options["preconditions"]["resourceVersion"].as_str().map(str::to_string);
            match remove(
                state,
                &plural,
                &ns.unwrap_or_default(),
                name.as_deref().unwrap(),
                precondition.as_deref(),
            ) {
                Ok(object) => (200, object),
                Err(e) => e,
            }
        }
        _ => unreachable!(),
    }
}

pub(super) fn has_status_subresource(plural: &str) -> bool {
    plural == "ipamclaims"
}

/// With a status subresource, a PUT of the object keeps the stored `status` and a PUT of
/// `…/status` keeps everything but `status` (metadata's `resourceVersion` is still compared).
fn split_status(state: &State, plural: &str, ns: &str, sent: Value, to_status: bool) -> Value {
    let name = sent["metadata"]["name"].as_str().unwrap_or("").to_string();
    let Some(current) = state.objects.get(&(plural.to_string(), ns.to_string(), name)) else {
        return sent;
    };
    let mut object = if to_status { current.clone() } else { sent.clone() };
    object["metadata"]["resourceVersion"] = sent["metadata"]["resourceVersion"].clone();
    let status = if to_status { sent.get("status") } else { current.get("status") };
    match (object.as_object_mut(), status) {
        (Some(map), Some(status)) => {
            map.insert("status".into(), status.clone());
        }
        (Some(map), None) => {
            map.remove("status");
        }
        (None, _) => {}
    }
    object
}

/// A continue token: the last listed key, hex-encoded (opaque to clients, as the real one is).
fn hex(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(token: &str) -> String {
    let bytes: Vec<u8> = (0..token.len() / 2)
        .filter_map(|i| u8::from_str_radix(token.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn serve_watch(writer: &mut TcpStream, shared: &Shared, request: &Request) {
    let Some((plural, ns, None)) = route(&request.path) else {
        let _ = write_response(
            writer,
            404,
            &status(
                404,
                "NotFound",
                "the server could not find the requested resource".into(),
                json!({}),
            )
            .1,
        );
        return;
    };
    {
        let mut state = shared.state.lock().unwrap();
        state.requests += 1;
        state.watches += 1;
        if state.denied.contains(&("watch".to_string(), plural.clone())) {
            let (code, body) = forbidden("watch", &plural, ns.as_deref(), None);
            drop(state);
            let _ = write_response(writer, code, &body);
            return;
        }
    }
    if !WATCHED.contains(&plural.as_str()) {
        let message = format!("this emulation watches only {}", WATCHED.join(", "));
        let _ = write_response(writer, 405, &status(405, "MethodNotAllowed", message, json!({})).1);
        return;
    }
    let asked = request.query.get("resourceVersion").cloned().unwrap_or_default();
    let mut since: u64 = asked.parse().unwrap_or(0);
    let deadline = Instant::now()
        + Duration::from_secs(
            request
                .query
                .get("timeoutSeconds")
                .and_then(|v| v.parse().ok())
                .unwrap_or(300)
                .min(300),
        );
    if writer
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        .is_err()
    {
        return;
    }
    let mut state = shared.state.lock().unwrap();
    state.watch_versions.push(asked);
    *state.streams.entry(plural.clone()).or_default() += 1;
    let epoch = state.watch_epoch;
    if since > 0 && since < state.compacted {
        let expired = json!({"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {since} ({})", state.compacted + 1),
            "reason": "Expired", "code": 410}});
        drop(state);
        let mut line = serde_json::to_vec(&expired).unwrap();
        line.push(b'\n');
        let chunk = [format!("{:x}\r\n", line.len()).into_bytes(), line, b"\r\n0\r\n\r\n".to_vec()]
            .concat();
        let _ = writer.write_all(&chunk).and_then(|_| writer.flush());
        return;
    }
    loop {
        if state.watch_epoch != epoch {
            drop(state);
            let _ = writer.write_all(b"0\r\n\r\n");
            return;
        }
        let events: Vec<Value> = state
            .events
            .iter()
            .filter(|(rv, kind_plural, _, object)| {
                *rv > since
                    && *kind_plural == plural
                    && ns
                        .as_ref()
                        .is_none_or(|ns| object["metadata"]["namespace"].as_str() == Some(ns))
            })
            .map(|(_, _, kind, object)| json!({"type": kind, "object": object}))
            .collect();
        since = state.revision;
        drop(state);
        for event in events {
            let mut line = serde_json::to_vec(&event).unwrap();
            line.push(b'\n');
            let chunk =
                [format!("{:x}\r\n", line.len()).into_bytes(), line, b"\r\n".to_vec()].concat();
            if writer.write_all(&chunk).and_then(|_| writer.flush()).is_err() {
                return;
            }
        }
        if Instant::now() >= deadline || shared.stop.load(Ordering::SeqCst) {
            let _ = writer.write_all(b"0\r\n\r\n");
            return;
        }
        state = shared.state.lock().unwrap();
        if state.revision == since {
            state = shared.changed.wait_timeout(state, Duration::from_millis(200)).unwrap().0;
        }
    }
}
