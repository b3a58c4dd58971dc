//! The Kubernetes store: Whereabouts' own `IPPool` and `OverlappingRangeIPReservation` custom
//! resources, through the real `kube` client, so Hereabouts and Whereabouts can take turns on
//! one cluster.
//!
//! Each WIT `store` call is one or two API requests, run on a current-thread tokio runtime
//! owned by the store (`block_on` per call; a CNI process is single-threaded anyway):
//! - `read-pool`: GET the IPPool; its `resourceVersion` is the version (404 → empty, "").
//! - `write-pool`: PUT the pool with the `resourceVersion` read (POST when the version is "");
//!   the API server answers 409 when someone wrote in between → `StoreError::Conflict`, and the
//!   core re-reads and retries. No leader election and no Lease: unlike Whereabouts, concurrent
//!   ADDs across the cluster are not serialised, they only retry when they really collide.
//! - `reserve-address`: POST the reservation (create-if-absent); 409 AlreadyExists → GET the
//!   holder. `release-address`: DELETE with a resourceVersion precondition if we hold it.
//!
//! Time is bounded: connect 3 s, each request 10 s (Whereabouts' RequestTimeout), the whole
//! call 30 s across retries. An unreachable or overloaded API server is
//! `StoreError::Unavailable` (CNI 11); 401/403 are `Failed` with a message naming the verb,
//! resource, namespace and the RBAC fix.
//!
//! Namespace: as Whereabouts, the kubeconfig's current-context namespace, else `kube-system`.
//! In a pod without a kubeconfig: `$WHEREABOUTS_NAMESPACE`, else the pod's own namespace.

pub mod crd;

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::core::Status;
use ::kube::{Client, Config};
use hereabouts_host::Backend;
use hereabouts_host::bindings::{Owner, PoolEdit, PoolRef, PoolSnapshot, Slot, StoreError};
use hereabouts_host::config::IpamConfig;
use hereabouts_host::error::CniError;
use hereabouts_host::retry::RetryPolicy;

use self::crd::{
    IPAllocation, IPPool, IPPoolSpec, OverlappingRangeIPReservation,
    OverlappingRangeIPReservationSpec,
};

/// Whereabouts' default namespace for its custom resources.
pub const DEFAULT_NAMESPACE: &str = "kube-system";

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
    retry: RetryPolicy,
    /// Start of the current operation's time budget (shared by clones; see `restart_budget`).
    started: Arc<std::sync::Mutex<Instant>>,
    /// The pools as last read: `write-pool` applies its edits to the object it read (a PUT
    /// replaces the whole object), so labels, annotations and owner references are kept.
    read: HashMap<String, IPPool>,
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
                let file = Kubeconfig::read_from(path).map_err(|e| {
                    StoreError::Failed(format!("kubeconfig {}: {e}", path.display()))
                })?;
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
        // Retries are ours (bounded, jittered, reported); the client must not add its own.
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
            retry: RetryPolicy::default(),
            started: Arc::new(std::sync::Mutex::new(Instant::now())),
            read: HashMap::new(),
        })
    }

    /// Starts a new `total` time budget (long-running commands call it before each operation).
    pub fn restart_budget(&self) {
        *self.started.lock().unwrap() = Instant::now();
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
            Err(KubeError { request, namespace: namespace.clone(), failure: Box::new(failure) })
        })
    }

    /// Every IPPool in the namespace (reconcile).
    pub fn list_pools(&self) -> Result<Vec<IPPool>, KubeError> {
        let api = self.pools();
        Ok(self
            .request(Request::new("list", "ippools", ""), api.list(&ListParams::default()))?
            .items)
    }

    /// Every OverlappingRangeIPReservation in the namespace (reconcile).
    pub fn list_reservations(&self) -> Result<Vec<OverlappingRangeIPReservation>, KubeError> {
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

#[derive(Debug)]
enum Failure {
    Client(::kube::Error),
    Timeout(Duration),
}

/// How a failed request reaches the component: retry later (CNI 11) or a failure (CNI 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Severity {
    Unavailable,
    Failed,
}

impl KubeError {
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

fn owner_of(allocation: &IPAllocation) -> Owner {
    Owner {
        container_id: allocation.id.clone(),
        ifname: allocation.ifname.clone(),
        podref: allocation.podref.clone(),
    }
}

fn same_attachment(a: &Owner, b: &Owner) -> bool {
    a.container_id == b.container_id && a.ifname == b.ifname
}

impl Backend for KubeStore {
    fn read_pool(&mut self, pool: &PoolRef) -> Result<PoolSnapshot, StoreError> {
        let api = self.pools();
        let object =
            self.request(Request::new("get", "ippools", &pool.name), api.get_opt(&pool.name))?;
        let Some(object) = object else {
            self.read.remove(&pool.name);
            return Ok(PoolSnapshot { version: String::new(), slots: Vec::new() });
        };
        if object.spec.range != pool.range {
            tracing::debug!(pool = %pool.name, stored = %object.spec.range, expected = %pool.range, "IPPool spec.range differs");
        }
        let version = object.metadata.resource_version.clone().unwrap_or_default();
        if version.is_empty() {
            return Err(StoreError::Corrupt(format!(
                "IPPool {:?} has no resourceVersion",
                pool.name
            )));
        }
        let slots = object
            .spec
            .allocations
            .iter()
            .map(|(offset, allocation)| Slot {
                offset: offset.clone(),
                owner: owner_of(allocation),
            })
            .collect();
        self.read.insert(pool.name.clone(), object);
        Ok(PoolSnapshot { version, slots })
    }

    fn write_pool(
        &mut self,
        pool: &PoolRef,
        version: &str,
        edits: &[PoolEdit],
    ) -> Result<(), StoreError> {
        let api = self.pools();
        let mut object = if version.is_empty() {
            self.new_pool(pool)
        } else {
            match self.read.get(&pool.name) {
                Some(object) if object.metadata.resource_version.as_deref() == Some(version) => {
                    object.clone()
                }
                // Not the version we hold (another handle read it): fetch it to edit.
                _ => match self
                    .request(Request::new("get", "ippools", &pool.name), api.get_opt(&pool.name))?
                {
                    Some(fresh) if fresh.metadata.resource_version.as_deref() == Some(version) => {
                        fresh
                    }
                    _ => return Err(StoreError::Conflict),
                },
            }
        };
        for edit in edits {
            match edit {
                PoolEdit::Claim(slot) => {
                    object.spec.allocations.insert(
                        slot.offset.clone(),
                        IPAllocation {
                            id: slot.owner.container_id.clone(),
                            podref: slot.owner.podref.clone(),
                            ifname: slot.owner.ifname.clone(),
                        },
                    );
                }
                PoolEdit::Free(offset) => {
                    object.spec.allocations.remove(offset);
                }
            }
        }
        let params = PostParams::default();
        let result = if version.is_empty() {
            self.request(
                Request::new("create", "ippools", &pool.name),
                api.create(&params, &object),
            )
        } else {
            self.request(
                Request::new("update", "ippools", &pool.name),
                api.replace(&pool.name, &params, &object),
            )
        };
        match result {
            Ok(written) => {
                self.read.insert(pool.name.clone(), written);
                Ok(())
            }
            Err(e) => {
                self.read.remove(&pool.name);
                // Stale resourceVersion (update) or created meanwhile (create); or deleted
                // since we read it: the core re-reads (and creates) again.
                let lost = if version.is_empty() {
                    e.is_already_exists()
                } else {
                    e.is_conflict() || e.is_not_found()
                };
                if lost { Err(StoreError::Conflict) } else { Err(e.into()) }
            }
        }
    }

    fn reserve_address(
        &mut self,
        network_name: &str,
        address: &str,
        owner: &Owner,
    ) -> Result<Option<Owner>, StoreError> {
        let name = crd::reservation_name(network_name, address);
        let api = self.reservations();
        let mut object = OverlappingRangeIPReservation::new(
            &name,
            OverlappingRangeIPReservationSpec {
                containerid: owner.container_id.clone(),
                podref: owner.podref.clone(),
                ifname: owner.ifname.clone(),
            },
        );
        object.metadata.namespace = Some(self.namespace.clone());
        // Create-if-absent; when it exists, report its holder. A holder deleted between our
        // create and get lets the create be tried again (bounded).
        for _ in 0..5 {
            match self.request(
                Request::new("create", "overlappingrangeipreservations", &name),
                api.create(&PostParams::default(), &object),
            ) {
                Ok(_) => return Ok(None),
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(e.into()),
            }
            let holder = self.request(
                Request::new("get", "overlappingrangeipreservations", &name),
                api.get_opt(&name),
            )?;
            if let Some(holder) = holder {
                let holder = Owner {
                    container_id: holder.spec.containerid,
                    ifname: holder.spec.ifname,
                    podref: holder.spec.podref,
                };
                return Ok(if same_attachment(&holder, owner) { None } else { Some(holder) });
            }
        }
        Err(StoreError::Unavailable(format!(
            "reservation {name:?} keeps appearing and disappearing"
        )))
    }

    fn release_address(
        &mut self,
        network_name: &str,
        address: &str,
        owner: &Owner,
    ) -> Result<(), StoreError> {
        let name = crd::reservation_name(network_name, address);
        let api = self.reservations();
        let Some(holder) = self.request(
            Request::new("get", "overlappingrangeipreservations", &name),
            api.get_opt(&name),
        )?
        else {
            return Ok(());
        };
        let holder_owner = Owner {
            container_id: holder.spec.containerid.clone(),
            ifname: holder.spec.ifname.clone(),
            podref: holder.spec.podref.clone(),
        };
        if !same_attachment(&holder_owner, owner) {
            return Ok(());
        }
        let version = holder.metadata.resource_version.clone().unwrap_or_default();
        Ok(self.delete_reservation(&name, &version)?)
    }

    fn pause_before_retry(&mut self, attempt: u32) -> bool {
        if self.started.lock().unwrap().elapsed() >= self.timeouts.total {
            return false;
        }
        self.retry.pause(attempt)
    }
}
