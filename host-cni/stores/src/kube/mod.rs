//! The Kubernetes store: Whereabouts' own `IPPool` and `OverlappingRangeIPReservation` custom
//! resources, exactly as Whereabouts writes them, through the real `kube` client, so Hereabouts
//! and Whereabouts can take turns on one cluster.
//!
//! The IPPool is kept as it is, so this store keeps no summary: `read-pool` and `list-slots`
//! GET the IPPool and return every allocation; its `resourceVersion` is the version (404: "").
//! Each call runs on a current-thread tokio runtime owned by the store (`block_on` per call; a
//! CNI process is single-threaded anyway). No leader election and no Lease: unlike Whereabouts,
//! concurrent ADDs across the cluster are not serialised, they only retry when they collide.
//!
//! There is no transaction over several objects, so `commit` orders its writes so that a
//! crash at any point can strand a reservation but never hand an address out twice:
//! 1. the IPPool at the version read (the object read, else a GET; another version: `stale`),
//!    and a claimed offset already in it: `occupied`;
//! 2. each reservation to make: POST (create-if-absent); 409 → GET the holder; the same
//!    attachment, or the same non-empty podref and ifname, takes it over (PUT conditioned on
//!    its `resourceVersion`); anyone else: undo what this commit made, answer `reserved`;
//! 3. the IPPool: PUT conditioned on the `resourceVersion` read (POST when the version is "");
//!    409 Conflict/AlreadyExists, or 404: undo this commit's reservations, answer `stale` with
//!    a fresh GET; the new `resourceVersion` is `committed`'s version;
//! 4. each reservation to release: GET, and DELETE with a `resourceVersion` precondition if
//!    the attachment holds it — or if it has no container id and the same podref and ifname,
//!    as Whereabouts writes them (without this, every DEL after a switch from Whereabouts
//!    would strand its reservation). A failure here is logged, not returned: the pool is
//!    already written, and `hereabouts reconcile` frees what is left.
//!
//! A commit that changes no allocation still PUTs (its condition is the point); the API server
//! then keeps the `resourceVersion`, so `committed` answers the version read.
//!
//! The owner's CNI network survives in annotations (Whereabouts' CRDs have no field for it):
//! see [`networks`] for the format and its 256 KiB limit.
//!
//! `list-reservations(network)` lists every reservation of the namespace and keeps those whose
//! name is the network's ([`crd::reservation_in`], which says where a name is ambiguous).
//!
//! Time is bounded: connect 3 s, each request 10 s (Whereabouts' RequestTimeout), the whole
//! call 30 s across the core's retries. An unreachable or overloaded API server is
//! `StoreError::Unavailable` (CNI 11); 401/403 are `Failed` with a message naming the verb,
//! resource, namespace and the RBAC fix. Failed requests keep kube's error ([`KubeError`]).
//!
//! Namespace: as Whereabouts, the kubeconfig's current-context namespace, else `kube-system`.
//! In a pod without a kubeconfig: `$WHEREABOUTS_NAMESPACE`, else the pod's own namespace.

pub mod claims;
pub mod crd;
pub mod networks;
pub mod slices;
pub mod statefulsets;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::core::Status;
use ::kube::{Client, Config};
use hereabouts_host::Backend;
use hereabouts_host::bindings::{
    CommitOutcome, Owner, PoolChange, PoolEdit, PoolListing, PoolRef, PoolView, Reown, Reservation,
    ReservationEdit, Slot, StoreError,
};
use hereabouts_host::config::IpamConfig;
use hereabouts_host::error::CniError;
use hereabouts_host::retry::jittered_wait;

use self::crd::{
    IPAllocation, IPPool, IPPoolSpec, OverlappingRangeIPReservation,
    OverlappingRangeIPReservationSpec,
};
use self::networks::{PoolNetworks, RESERVATION_ANNOTATION};

/// Whereabouts' default namespace for its custom resources.
pub const DEFAULT_NAMESPACE: &str = "kube-system";

/// How often one reservation is tried when it keeps changing under us (created, deleted or
/// taken over between our requests) before the commit gives up as unavailable.
const RESERVATION_ATTEMPTS: usize = 5;

/// Time limits; the defaults suit a CNI ADD.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
    /// Budget for one store-using command, retries included.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(3),
            request: Duration::from_secs(10),
            total: Duration::from_secs(30),
        }
    }
}

/// A connection to the API server plus the namespace the custom resources live in.
/// Cloning shares the runtime and the client (reconcile hands one clone to the allocator).
#[derive(Clone)]
pub struct KubeStore {
    runtime: Arc<tokio::runtime::Runtime>,
    client: Client,
    namespace: String,
    timeouts: Timeouts,
    /// Start of the current operation's time budget (shared by clones; see `restart_budget`).
    started: Arc<std::sync::Mutex<Instant>>,
    /// The pools as last read or written (None: read as missing). A commit at that version
    /// edits this object instead of reading it again; a PUT replaces the whole object, so its
    /// labels, annotations and owner references are kept.
    read: HashMap<String, Option<IPPool>>,
}

/// Opens the Kubernetes store an ipam config names (`kubernetes.kubeconfig`, else in-cluster).
pub fn open(config: &IpamConfig) -> Result<KubeStore, CniError> {
    let kubeconfig =
        config.kubernetes.as_ref().and_then(|k| k.kubeconfig.as_deref()).filter(|p| !p.is_empty());
    Ok(KubeStore::connect(kubeconfig.map(Path::new), Timeouts::default())?)
}

impl KubeStore {
    /// Connects with a kubeconfig file (the `kubernetes.kubeconfig` key), or in-cluster
    /// service-account credentials when `kubeconfig` is None.
    pub fn connect(kubeconfig: Option<&Path>, timeouts: Timeouts) -> Result<Self, StoreError> {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
                StoreError::Failed(format!("cannot start the Kubernetes client runtime: {e}"))
            })?;
        let (mut config, namespace) = match kubeconfig {
            Some(path) => {
                let file = read_kubeconfig(path)?;
                let namespace = context_namespace(&file);
                let config = runtime
                    .block_on(Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()))
                    .map_err(|e| {
                        StoreError::Failed(format!("kubeconfig {}: {e}", path.display()))
                    })?;
                (config, namespace)
            }
            None => {
                let config = Config::incluster().map_err(|e| {
                    StoreError::Failed(format!(
                        "no kubernetes.kubeconfig in the ipam config and not running in a pod: {e}"
                    ))
                })?;
                let namespace = std::env::var("WHEREABOUTS_NAMESPACE")
                    .ok()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| config.default_namespace.clone());
                (config, namespace)
            }
        };
        config.connect_timeout = Some(timeouts.connect);
        config.read_timeout = Some(timeouts.request);
        config.write_timeout = Some(timeouts.request);
        // Retries are the core's (bounded, jittered, reported); the client must not add its own.
        config.default_retry = false;
        let client = {
            let _guard = runtime.enter();
            Client::try_from(config).map_err(|e| {
                StoreError::Failed(format!("cannot build the Kubernetes client: {e}"))
            })?
        };
        Ok(Self {
            runtime: Arc::new(runtime),
            client,
            namespace,
            timeouts,
            started: Arc::new(std::sync::Mutex::new(Instant::now())),
            read: HashMap::new(),
        })
    }

    /// Starts a new `total` time budget (long-running commands call it before each operation).
    pub fn restart_budget(&self) {
        *self.started.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn pools(&self) -> Api<IPPool> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn reservations(&self) -> Api<OverlappingRangeIPReservation> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Runs one request with the request timeout; a failure keeps kube's error (and its
    /// `Status`), with what the request was.
    pub fn request<T>(
        &self,
        request: Request,
        future: impl Future<Output = Result<T, ::kube::Error>>,
    ) -> Result<T, KubeError> {
        let limit = self.timeouts.request;
        let namespace = &self.namespace;
        self.runtime.block_on(async {
            let failure = match tokio::time::timeout(limit, future).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) => Failure::Client(error),
                Err(_) => Failure::Timeout(limit),
            };
            count_failure(&failure);
            Err(KubeError { request, namespace: namespace.clone(), failure: Box::new(failure) })
        })
    }

    /// Every IPPool in the namespace, as stored (reconcile, the controller).
    pub fn list_pool_objects(&self) -> Result<Vec<IPPool>, KubeError> {
        let api = self.pools();
        Ok(self
            .request(Request::new("list", "ippools", ""), api.list(&ListParams::default()))?
            .items)
    }

    /// Every OverlappingRangeIPReservation in the namespace, as stored (reconcile).
    pub fn list_reservation_objects(
        &self,
    ) -> Result<Vec<OverlappingRangeIPReservation>, KubeError> {
        let api = self.reservations();
        let request = Request::new("list", "overlappingrangeipreservations", "");
        Ok(self.request(request, api.list(&ListParams::default()))?.items)
    }

    /// Deletes a reservation if it is still at `resource_version`. Gone already (404) or
    /// changed since (409, the precondition failed: someone else's now) is fine.
    pub fn delete_reservation(&self, name: &str, resource_version: &str) -> Result<(), KubeError> {
        let api = self.reservations();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(resource_version.to_string()),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        let request = Request::new("delete", "overlappingrangeipreservations", name);
        match self.request(request, api.delete(name, &params)) {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs an arbitrary future on the store's runtime (the controller's watch loop).
    pub fn run<T>(&self, future: impl Future<Output = T>) -> T {
        self.runtime.block_on(future)
    }

    fn new_pool(&self, pool: &PoolRef) -> IPPool {
        let mut object = IPPool::new(
            &pool.name,
            IPPoolSpec { range: pool.range.clone(), allocations: Default::default() },
        );
        object.metadata.namespace = Some(self.namespace.clone());
        object
    }

    /// GETs the pool (None: it does not exist) and remembers it for the next commit.
    fn fetch(&mut self, pool: &PoolRef) -> Result<Option<IPPool>, StoreError> {
        let api = self.pools();
        let object =
            self.request(Request::new("get", "ippools", &pool.name), api.get_opt(&pool.name))?;
        if let Some(object) = &object
            && object.spec.range != pool.range
        {
            tracing::debug!(pool = %pool.name, stored = %object.spec.range, expected = %pool.range, "IPPool spec.range differs");
        }
        self.read.insert(pool.name.clone(), object.clone());
        Ok(object)
    }

    /// The whole pool as the contract's view: every slot, no summary.
    fn listing(pool: &PoolRef, object: Option<&IPPool>) -> Result<PoolListing, StoreError> {
        let Some(object) = object else {
            return Ok(PoolListing { version: String::new(), slots: Vec::new() });
        };
        let version = version_of(Some(object));
        if version.is_empty() {
            return Err(StoreError::Corrupt(format!(
                "IPPool {:?} has no resourceVersion",
                pool.name
            )));
        }
        let networks = pool_networks(pool, object)?;
        let slots = object
            .spec
            .allocations
            .iter()
            .map(|(offset, allocation)| Slot {
                offset: offset.clone(),
                owner: owner_of(allocation, networks.of(offset)),
            })
            .collect();
        Ok(PoolListing { version, slots })
    }

    fn view(pool: &PoolRef, object: Option<&IPPool>) -> Result<PoolView, StoreError> {
        let PoolListing { version, slots } = Self::listing(pool, object)?;
        Ok(PoolView { version, summary: None, slots })
    }

    /// The answer to a commit that lost the compare: the pool as it is now.
    fn stale(&mut self, pool: &PoolRef) -> Result<CommitOutcome, StoreError> {
        let fresh = self.fetch(pool)?;
        Ok(CommitOutcome::Stale(Self::view(pool, fresh.as_ref())?))
    }

    /// Creates the reservation, or takes it over (see the module doc).
    fn reserve(&self, wanted: &Reservation) -> Result<Reserved, KubeError> {
        let name = crd::reservation_name(&wanted.network_name, &wanted.address);
        let api = self.reservations();
        let mut object = OverlappingRangeIPReservation::new(&name, reservation_spec(&wanted.owner));
        object.metadata.namespace = Some(self.namespace.clone());
        set_reservation_network(&mut object, &wanted.owner.cni_network);
        for _ in 0..RESERVATION_ATTEMPTS {
            let create = Request::new("create", "overlappingrangeipreservations", &name);
            match self.request(create, api.create(&PostParams::default(), &object)) {
                Ok(created) => {
                    let version = created.metadata.resource_version.unwrap_or_default();
                    return Ok(Reserved::Made(Some(Undo::Created { name, version })));
                }
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(e),
            }
            let get = Request::new("get", "overlappingrangeipreservations", &name);
            // Deleted since our create: create it again.
            let Some(holder) = self.request(get, api.get_opt(&name))? else { continue };
            let held_by = reservation_owner(&holder);
            if !may_take_over(&held_by, &wanted.owner) {
                return Ok(Reserved::Held(held_by));
            }
            if held_by == wanted.owner {
                return Ok(Reserved::Made(None));
            }
            let mut replacement = holder.clone();
            replacement.spec = object.spec.clone();
            set_reservation_network(&mut replacement, &wanted.owner.cni_network);
            let replace = Request::new("update", "overlappingrangeipreservations", &name);
            match self.request(replace, api.replace(&name, &PostParams::default(), &replacement)) {
                Ok(written) => {
                    let version = written.metadata.resource_version.unwrap_or_default();
                    let previous = Box::new(holder);
                    return Ok(Reserved::Made(Some(Undo::TakenOver { previous, version })));
                }
                // Changed or deleted since our GET: look again.
                Err(e) if e.is_conflict() || e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Err(KubeError::unsettled(
            Request::new("create", "overlappingrangeipreservations", &name),
            &self.namespace,
        ))
    }

    /// Puts back what a commit that did not go through changed in reservations, newest
    /// first, each only if nobody changed it since (a failure is logged: `hereabouts
    /// reconcile` frees a reservation left behind).
    fn undo(&self, undo: Vec<Undo>) {
        let api = self.reservations();
        for step in undo.into_iter().rev() {
            let (name, result) = match step {
                Undo::Created { name, version } => {
                    let result = self.delete_reservation(&name, &version);
                    (name, result)
                }
                Undo::TakenOver { mut previous, version } => {
                    let name = previous.metadata.name.clone().unwrap_or_default();
                    previous.metadata.resource_version = Some(version);
                    let request = Request::new("update", "overlappingrangeipreservations", &name);
                    let result = match self
                        .request(request, api.replace(&name, &PostParams::default(), &previous))
                    {
                        Err(e) if e.is_conflict() || e.is_not_found() => Ok(()),
                        other => other.map(drop),
                    };
                    (name, result)
                }
            };
            if let Err(e) = result {
                tracing::warn!(reservation = %name, "cannot undo a reservation of a commit that did not go through ({e}); `hereabouts reconcile` frees it once its pod is gone");
            }
        }
    }

    /// Deletes the reservation if `released.owner` holds it (see the module doc).
    fn release(&self, released: &Reservation) -> Result<(), KubeError> {
        let name = crd::reservation_name(&released.network_name, &released.address);
        let api = self.reservations();
        let get = Request::new("get", "overlappingrangeipreservations", &name);
        let Some(holder) = self.request(get, api.get_opt(&name))? else { return Ok(()) };
        let held_by = reservation_owner(&holder);
        let whereabouts_of_the_pod = held_by.container_id.is_empty()
            && !held_by.podref.is_empty()
            && same_pod_interface(&held_by, &released.owner);
        if !(held_by.same_attachment(&released.owner) || whereabouts_of_the_pod) {
            return Ok(());
        }
        let version = holder.metadata.resource_version.clone().unwrap_or_default();
        self.delete_reservation(&name, &version)
    }

    /// Writes the pool: POST when `version` is "", else PUT conditioned on it. Ok(None): the
    /// compare was lost (the object exists by now, changed, or was deleted).
    fn write_pool(&self, version: &str, object: &IPPool) -> Result<Option<IPPool>, KubeError> {
        let api = self.pools();
        let name = object.metadata.name.clone().unwrap_or_default();
        let params = PostParams::default();
        let result = if version.is_empty() {
            self.request(Request::new("create", "ippools", &name), api.create(&params, object))
        } else {
            self.request(
                Request::new("update", "ippools", &name),
                api.replace(&name, &params, object),
            )
        };
        match result {
            Ok(written) => Ok(Some(written)),
            Err(e) if version.is_empty() && e.is_already_exists() => Ok(None),
            Err(e) if !version.is_empty() && (e.is_conflict() || e.is_not_found()) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// What became of one reservation to make.
enum Reserved {
    /// Ours now; how to put it back if the commit does not go through (None: it already was).
    Made(Option<Undo>),
    /// Held by another owner.
    Held(Owner),
}

/// A reservation change to revert when the pool write does not go through.
enum Undo {
    /// We created it: delete it if it is still at `version`.
    Created { name: String, version: String },
    /// We took it over from `previous`: put that back if it is still at `version`.
    TakenOver { previous: Box<OverlappingRangeIPReservation>, version: String },
}

fn version_of(object: Option<&IPPool>) -> String {
    object.and_then(|o| o.metadata.resource_version.clone()).unwrap_or_default()
}

fn pool_networks(pool: &PoolRef, object: &IPPool) -> Result<PoolNetworks, StoreError> {
    PoolNetworks::read(object.metadata.annotations.as_ref(), &object.spec.allocations)
        .map_err(|e| StoreError::Corrupt(format!("IPPool {:?}: {e}", pool.name)))
}

fn owner_of(allocation: &IPAllocation, cni_network: &str) -> Owner {
    Owner {
        container_id: allocation.id.clone(),
        ifname: allocation.ifname.clone(),
        podref: allocation.podref.clone(),
        cni_network: cni_network.to_string(),
    }
}

fn allocation_of(owner: &Owner) -> IPAllocation {
    IPAllocation {
        id: owner.container_id.clone(),
        podref: owner.podref.clone(),
        ifname: owner.ifname.clone(),
    }
}

fn reservation_spec(owner: &Owner) -> OverlappingRangeIPReservationSpec {
    OverlappingRangeIPReservationSpec {
        containerid: owner.container_id.clone(),
        podref: owner.podref.clone(),
        ifname: owner.ifname.clone(),
    }
}

/// The holder of a reservation as stored.
pub fn reservation_owner(object: &OverlappingRangeIPReservation) -> Owner {
    let cni_network = object
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RESERVATION_ANNOTATION))
        .cloned()
        .unwrap_or_default();
    Owner {
        container_id: object.spec.containerid.clone(),
        ifname: object.spec.ifname.clone(),
        podref: object.spec.podref.clone(),
        cni_network,
    }
}

fn set_reservation_network(object: &mut OverlappingRangeIPReservation, cni_network: &str) {
    let annotations = object.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if cni_network.is_empty() {
        annotations.remove(RESERVATION_ANNOTATION);
    } else {
        annotations.insert(RESERVATION_ANNOTATION.to_string(), cni_network.to_string());
    }
    if annotations.is_empty() {
        object.metadata.annotations = None;
    }
}

/// Whereabouts' `podRef` + `ifName` match (a pod's new sandbox); an empty podref matches none.
fn same_pod_interface(holder: &Owner, owner: &Owner) -> bool {
    !holder.podref.is_empty() && holder.podref == owner.podref && holder.ifname == owner.ifname
}

/// Whether `owner` may take over a reservation `holder` has (`reserve` in the WIT).
fn may_take_over(holder: &Owner, owner: &Owner) -> bool {
    holder.same_attachment(owner) || same_pod_interface(holder, owner)
}

/// Reads a kubeconfig as every file a config names is read (`hereabouts_host::files`: no
/// final symbolic link, a regular file, at most 1 MiB). A file that is not a kubeconfig is
/// refused without a word of its content: the message reaches the pod's events, and the path
/// is the NAD's choice (a private key, say).
fn read_kubeconfig(path: &Path) -> Result<Kubeconfig, StoreError> {
    let key = "kubernetes.kubeconfig";
    let text = hereabouts_host::files::read_config_text(key, &path.to_string_lossy())
        .map_err(|e| StoreError::Failed(e.to_string()))?;
    let not_one = || {
        StoreError::Failed(format!(
            "{key}: {}: not a kubeconfig (YAML with clusters, users and contexts); its content is not shown",
            path.display()
        ))
    };
    Kubeconfig::from_yaml(&text).map_err(|_| not_one())?;
    // Again through kube, which makes the certificate paths in it absolute (relative to the
    // file's directory); the file was vetted just now.
    Kubeconfig::read_from(path).map_err(|_| not_one())
}

/// The kubeconfig's current-context namespace, else Whereabouts' default.
fn context_namespace(file: &Kubeconfig) -> String {
    file.current_context
        .as_ref()
        .and_then(|current| file.contexts.iter().find(|c| &c.name == current))
        .and_then(|c| c.context.as_ref())
        .and_then(|c| c.namespace.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
}

/// What a request was, for error messages.
#[derive(Debug, Clone)]
pub struct Request {
    verb: &'static str,
    resource: &'static str,
    name: String,
}

impl Request {
    pub fn new(verb: &'static str, resource: &'static str, name: &str) -> Self {
        Self { verb, resource, name: name.to_string() }
    }
}

/// A request to the API server that failed. It keeps kube's own error, so callers ask
/// [`KubeError::is_conflict`] / [`KubeError::is_not_found`] of the API's `Status`; the
/// component gets the [`StoreError`] it summarises to (`From`).
#[derive(Debug, thiserror::Error)]
#[error("{}", self.summary().1)]
pub struct KubeError {
    request: Request,
    namespace: String,
    /// Boxed: kube's error is large, and every request's `Result` carries this.
    failure: Box<Failure>,
}

/// The requests [`KubeStore::request`] saw fail in this process, by outcome (see
/// [`api_failures`]).
static API_FAILURES: std::sync::Mutex<BTreeMap<String, u64>> =
    std::sync::Mutex::new(BTreeMap::new());

/// How many API requests of this process have failed, by outcome: the HTTP status the API
/// server answered (`"409"`: a conditional write that lost to another writer), `"timeout"`,
/// or `"transport"` (no answer: connection, TLS, decoding). Process-wide, so every client of
/// a command counts (the controller exports it as metrics).
pub fn api_failures() -> BTreeMap<String, u64> {
    API_FAILURES.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn count_failure(failure: &Failure) {
    let outcome = match failure {
        Failure::Client(::kube::Error::Api(status)) => status.code.to_string(),
        Failure::Client(_) => "transport".to_string(),
        Failure::Timeout(_) => "timeout".to_string(),
        // Not a request's outcome: a summary of several that each succeeded.
        Failure::Unsettled(_) => return,
    };
    *API_FAILURES.lock().unwrap_or_else(|p| p.into_inner()).entry(outcome).or_default() += 1;
}

#[derive(Debug)]
enum Failure {
    Client(::kube::Error),
    Timeout(Duration),
    /// The object kept changing between our requests (created, deleted, taken over).
    Unsettled(usize),
}

/// How a failed request reaches the component: retry later (CNI 11) or a failure (CNI 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Severity {
    Unavailable,
    Failed,
}

impl KubeError {
    fn unsettled(request: Request, namespace: &str) -> Self {
        let failure = Box::new(Failure::Unsettled(RESERVATION_ATTEMPTS));
        Self { request, namespace: namespace.to_string(), failure }
    }

    /// The API server's answer, when it answered with an error status.
    pub fn status(&self) -> Option<&Status> {
        match self.failure.as_ref() {
            Failure::Client(::kube::Error::Api(status)) => Some(status),
            _ => None,
        }
    }

    /// 404: the object does not exist (or no longer).
    pub fn is_not_found(&self) -> bool {
        self.status().is_some_and(|s| s.is_not_found())
    }

    /// 409 Conflict: the object changed since it was read (a stale `resourceVersion` on
    /// update, a failed precondition on delete).
    pub fn is_conflict(&self) -> bool {
        self.status().is_some_and(|s| s.is_conflict())
    }

    /// 409 AlreadyExists: a create found the object there.
    pub fn is_already_exists(&self) -> bool {
        self.status().is_some_and(|s| s.is_already_exists())
    }

    /// Whether it reaches the component as unavailable or failed, and the message, naming
    /// the verb, the resource and, where it helps, the fix.
    fn summary(&self) -> (Severity, String) {
        let Request { verb, resource, name } = &self.request;
        let namespace = &self.namespace;
        let target = if name.is_empty() {
            format!("{resource} in namespace {namespace}")
        } else {
            format!("{resource} {name:?} in namespace {namespace}")
        };
        let error = match self.failure.as_ref() {
            Failure::Timeout(limit) => {
                let message = format!(
                    "Kubernetes API: {verb} {resource} timed out after {} s",
                    limit.as_secs_f32()
                );
                return (Severity::Unavailable, message);
            }
            Failure::Unsettled(attempts) => {
                let message = format!(
                    "Kubernetes API: {target} changed under every one of {attempts} attempts to {verb} it"
                );
                return (Severity::Unavailable, message);
            }
            Failure::Client(error) => error,
        };
        use Severity::{Failed, Unavailable};
        match error {
            ::kube::Error::Api(status) => {
                let (code, message) = (status.code, &status.message);
                match code {
                    401 => (
                        Failed,
                        format!(
                            "Kubernetes API rejected the credentials (401) to {verb} {target}: {message}; check the kubeconfig's token"
                        ),
                    ),
                    403 => (
                        Failed,
                        format!(
                            "Kubernetes API denied {verb} on {target} (403 Forbidden): {message}; grant the service account \
                         the RBAC rules in deploy/rbac.yaml"
                        ),
                    ),
                    429 | 500 | 502 | 503 | 504 => (
                        Unavailable,
                        format!("Kubernetes API busy ({code}) on {verb} {target}: {message}"),
                    ),
                    404 if *verb == "create" || *verb == "list" => (
                        Failed,
                        format!(
                            "Kubernetes API: {verb} {target} failed (404): {message}; are the CRDs installed? \
                         (`hereabouts crds | kubectl apply -f -`)"
                        ),
                    ),
                    _ => (
                        Failed,
                        format!("Kubernetes API: {verb} {target} failed ({code}): {message}"),
                    ),
                }
            }
            other @ (::kube::Error::HyperError(_) | ::kube::Error::Service(_)) => (
                Unavailable,
                format!("Kubernetes API unreachable ({verb} {target}): {}", error_chain(other)),
            ),
            other => (Failed, format!("Kubernetes API: {verb} {target}: {}", error_chain(other))),
        }
    }
}

impl From<KubeError> for StoreError {
    fn from(error: KubeError) -> Self {
        match error.summary() {
            (Severity::Unavailable, message) => StoreError::Unavailable(message),
            (Severity::Failed, message) => StoreError::Failed(message),
        }
    }
}

impl From<KubeError> for CniError {
    fn from(error: KubeError) -> Self {
        CniError::from(StoreError::from(error))
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    text
}

impl Backend for KubeStore {
    fn read_pool(&mut self, pool: &PoolRef, _query: &Owner) -> Result<PoolView, StoreError> {
        let object = self.fetch(pool)?;
        Self::view(pool, object.as_ref())
    }

    fn list_slots(&mut self, pool: &PoolRef) -> Result<PoolListing, StoreError> {
        let object = self.fetch(pool)?;
        Self::listing(pool, object.as_ref())
    }

    fn commit(
        &mut self,
        pool: &PoolRef,
        _query: &Owner,
        change: &PoolChange,
    ) -> Result<CommitOutcome, StoreError> {
        // 1. The pool at the version read.
        let base = match self.read.get(&pool.name) {
            Some(read) if version_of(read.as_ref()) == change.version => read.clone(),
            _ => {
                let fresh = self.fetch(pool)?;
                if version_of(fresh.as_ref()) != change.version {
                    return Ok(CommitOutcome::Stale(Self::view(pool, fresh.as_ref())?));
                }
                fresh
            }
        };
        let mut object = base.unwrap_or_else(|| self.new_pool(pool));
        let mut networks = pool_networks(pool, &object)?;
        for edit in &change.edits {
            if let PoolEdit::Claim(slot) = edit
                && let Some(held) = object.spec.allocations.get(&slot.offset)
            {
                let owner = owner_of(held, networks.of(&slot.offset));
                return Ok(CommitOutcome::Occupied(Slot { offset: slot.offset.clone(), owner }));
            }
        }
        for edit in &change.edits {
            let (offset, to) = match edit {
                PoolEdit::Claim(slot) => (&slot.offset, Some(&slot.owner)),
                PoolEdit::Reown(Reown { slot, to }) => (&slot.offset, Some(to)),
                PoolEdit::Free(slot) => (&slot.offset, None),
            };
            match to {
                Some(owner) => {
                    object.spec.allocations.insert(offset.clone(), allocation_of(owner));
                    networks.set(offset, &owner.cni_network);
                }
                None => {
                    object.spec.allocations.remove(offset);
                    networks.set(offset, "");
                }
            }
        }
        let annotations = object.metadata.annotations.get_or_insert_with(BTreeMap::new);
        if let Err(e) = networks.write(annotations, &object.spec.allocations) {
            tracing::warn!(pool = %pool.name, "{e}: written without them; CNI GC takes these allocations for the calling network's");
        }
        if annotations.is_empty() {
            object.metadata.annotations = None;
        }

        // 2. The reservations to make.
        let mut undo = Vec::new();
        for edit in &change.reservations {
            let ReservationEdit::Reserve(wanted) = edit else { continue };
            match self.reserve(wanted) {
                Ok(Reserved::Made(step)) => undo.extend(step),
                Ok(Reserved::Held(owner)) => {
                    self.undo(undo);
                    return Ok(CommitOutcome::Reserved(Reservation { owner, ..wanted.clone() }));
                }
                Err(e) => {
                    self.undo(undo);
                    return Err(e.into());
                }
            }
        }

        // 3. The pool, conditioned on the version read.
        let written = match self.write_pool(&change.version, &object) {
            Ok(Some(written)) => written,
            Ok(None) => {
                self.undo(undo);
                return self.stale(pool);
            }
            Err(e) => {
                self.read.remove(&pool.name);
                self.undo(undo);
                return Err(e.into());
            }
        };
        let version = version_of(Some(&written));
        self.read.insert(pool.name.clone(), Some(written));

        // 4. The reservations to release.
        for edit in &change.reservations {
            let ReservationEdit::Release(released) = edit else { continue };
            if let Err(e) = self.release(released) {
                tracing::warn!(address = %released.address, network = %released.network_name, "the pool is written but its reservation is not released ({e}); `hereabouts reconcile` frees it once its pod is gone");
            }
        }
        Ok(CommitOutcome::Committed(version))
    }

    fn list_reservations(&mut self, network_name: &str) -> Result<Vec<Reservation>, StoreError> {
        let objects = self.list_reservation_objects()?;
        Ok(objects
            .iter()
            .filter_map(|object| {
                let name = object.metadata.name.as_deref()?;
                Some(Reservation {
                    network_name: network_name.to_string(),
                    address: crd::reservation_in(name, network_name)?,
                    owner: reservation_owner(object),
                })
            })
            .collect())
    }

    fn pause_before_retry(&mut self, _attempt: u32, ceiling_us: u32) -> bool {
        if self.started.lock().unwrap_or_else(|p| p.into_inner()).elapsed() >= self.timeouts.total {
            return false;
        }
        jittered_wait(ceiling_us);
        true
    }
}
