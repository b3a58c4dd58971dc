//! `hereabouts controller`: watches pods (kube::runtime's watcher) and frees the addresses of
//! each deleted or terminated pod within seconds, instead of waiting for the next reconcile;
//! beside it, on its own thread, runs the node-slice controller ([`crate::slices`]).
//!
//! Safe beside the reconcile CronJob, the CNI plugin and a second controller replica: it takes
//! no lock, and each free is the allocator's `release` of one exact container id + ifname — a
//! write conditioned on the version read, which frees nothing if the slot changed hands.
//! A deletion is acted on after a grace period (default 10 s); then the pod's allocations are
//! read, then the pod is looked up again, and [`crate::pods`] decides as it does for reconcile:
//! a pod recreated under the same name (StatefulSet) that is Pending, or Running with the
//! address in its network-status, keeps it. A claimed allocation (an IPAMClaim's, KubeVirt's
//! persistent IPs) is freed only if its claim is gone, looked up then too: a VM's pod comes and
//! goes, its claim stays. A claim deleted while its pods stay is reconcile's to free. A
//! StatefulSet member's allocation (`persistentStatefulSetIPs`) is freed only as
//! [`pods::stateful`] says, its StatefulSet looked up then: a deleted member pod's address
//! waits for the pod that replaces it. A set deleted or scaled down after its pods are gone is
//! reconcile's to free (the controller does not watch StatefulSets).
//!
//! The watch runs on its own thread and client; the main thread does the frees with the
//! allocator component. Deletions missed while the controller was down, and reservations no
//! allocation backs (a crash between a reservation and its pool write), are the CronJob's job.

use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hereabouts_host::error::{CniError, Code};
use hereabouts_host::runtime::Allocator;
use hereabouts_stores::kube::statefulsets::{self, Ordinals};
use hereabouts_stores::kube::{KubeStore, Timeouts, claims};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use crate::{Freed, pods};

/// Watches until the watch ends (it does not, short of the API server going away for good);
/// prints each free as it happens.
/// How the controller runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Wait this long after a pod is deleted before freeing its addresses.
    pub grace: Duration,
    /// Serve Prometheus metrics here (`GET /metrics`); None: no endpoint.
    pub metrics: Option<std::net::SocketAddr>,
    /// Also run a reconcile pass this often (None: the CronJob does).
    pub reconcile_every: Option<Duration>,
    /// For those passes.
    pub reconcile: crate::reconcile::Options,
}

pub fn run(kubeconfig: Option<&Path>, options: &Options) -> Result<(), CniError> {
    let grace = options.grace;
    let timeouts = Timeouts {
        request: Duration::from_secs(60),
        total: Duration::from_secs(60),
        ..Timeouts::default()
    };
    let store = KubeStore::connect(kubeconfig, timeouts)?;
    // A watch is a long poll (the watcher asks for 290 s): its reads may idle that long.
    let watch_timeouts = Timeouts { request: Duration::from_secs(330), ..timeouts };
    let watch_store = KubeStore::connect(kubeconfig, watch_timeouts)?;
    let mut allocator = Allocator::new(Box::new(store.clone()))?;

    // The node-slice controller: its own clients and allocator, on its own thread.
    let slice_store = KubeStore::connect(kubeconfig, timeouts)?;
    let slice_watch_store = KubeStore::connect(kubeconfig, watch_timeouts)?;
    std::thread::spawn(move || {
        if let Err(e) = crate::slices::run(slice_store, slice_watch_store) {
            eprintln!("hereabouts controller: node slices: {} (code {})", e.msg, e.code);
        }
    });

    let metrics = match options.metrics {
        Some(addr) => {
            let listener = std::net::TcpListener::bind(addr).map_err(|e| {
                CniError::new(Code::Io, format!("--metrics-port: cannot listen on {addr}: {e}"))
            })?;
            eprintln!("hereabouts controller: metrics on http://{addr}/metrics");
            Some(crate::metrics::serve(listener, KubeStore::connect(kubeconfig, timeouts)?)?)
        }
        None => None,
    };
    let mut next_reconcile = options.reconcile_every.map(|every| Instant::now() + every);

    let (gone, pods_gone) = mpsc::channel::<String>();
    std::thread::spawn(move || watch(&watch_store, &gone));
    eprintln!("hereabouts controller: watching pods; IPPools in namespace {}", store.namespace());

    // Deletions wait out the grace period in arrival order (one grace for all: FIFO is sorted).
    let mut due: VecDeque<(Instant, String)> = VecDeque::new();
    loop {
        let wait = due
            .front()
            .map(|(at, _)| *at)
            .into_iter()
            .chain(next_reconcile)
            .min()
            .map(|at| at.saturating_duration_since(Instant::now()));
        let received = match wait {
            Some(wait) => pods_gone.recv_timeout(wait),
            None => pods_gone.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(podref) => due.push_back((Instant::now() + grace, podref)),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        while let Some((_, podref)) = due.pop_front_if(|(at, _)| *at <= Instant::now()) {
            match free_pod(&store, &mut allocator, &podref) {
                Ok(freed) => {
                    for f in &freed {
                        println!("freed {f}");
                        metrics.iter().for_each(|m| m.freed(&f.reason));
                    }
                }
                Err(e) => {
                    eprintln!(
                        "hereabouts controller: freeing {podref}: {} (code {})",
                        e.msg, e.code
                    );
                    metrics.iter().for_each(|m| m.failed(&e));
                }
            }
        }
        if let (Some(at), Some(every)) = (next_reconcile, options.reconcile_every)
            && at <= Instant::now()
        {
            let started = Instant::now();
            match crate::reconcile::reconcile_with(&store, &options.reconcile) {
                Ok(report) => {
                    for f in &report.freed {
                        println!("reconcile freed {f}");
                        metrics.iter().for_each(|m| m.freed(&f.reason));
                    }
                }
                Err(e) => {
                    eprintln!("hereabouts controller: reconcile: {} (code {})", e.msg, e.code);
                    metrics.iter().for_each(|m| m.failed(&e));
                }
            }
            metrics.iter().for_each(|m| m.reconciled(started.elapsed().as_secs_f64()));
            next_reconcile = Some(Instant::now() + every);
        }
    }
    Err(CniError::new(Code::Internal, "the pod watch ended"))
}

/// Sends the podref of every pod deleted or terminated, until the receiver hangs up.
///
/// kube's watcher resumes a dropped watch from the last `resourceVersion` it saw, and lists
/// again when the API server answers `410 Gone` (that version is compacted away). A relist
/// reports the pods that exist, not the ones deleted in the gap: so the podrefs the watch has
/// seen are kept, and a pod missing from the relist is sent as deleted.
fn watch(store: &KubeStore, gone: &mpsc::Sender<String>) {
    let api: Api<Pod> = Api::all(store.client().clone());
    store.run(async move {
        let mut events =
            Box::pin(watcher::watcher(api, watcher::Config::default()).default_backoff());
        let mut seen = PodsSeen::default();
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    eprintln!("hereabouts controller: watching pods: {e}");
                    continue;
                }
            };
            for podref in seen.gone_after(event) {
                if gone.send(podref).is_err() {
                    return;
                }
            }
        }
    });
}

/// The podrefs of the pods the watch has seen, for finding the pods a relist no longer has.
#[derive(Debug, Default)]
pub struct PodsSeen {
    known: HashSet<String>,
    /// During a relist: the pods it has listed so far.
    relisting: Option<HashSet<String>>,
}

impl PodsSeen {
    /// The podrefs `event` says are gone or terminated: a deleted pod, a pod that terminated,
    /// and, when a relist ends, every known pod it did not list.
    pub fn gone_after(&mut self, event: Event<Pod>) -> Vec<String> {
        match event {
            Event::Init => {
                self.relisting = Some(HashSet::new());
                Vec::new()
            }
            Event::InitApply(pod) => {
                if let (Some(listed), Some(podref)) = (&mut self.relisting, pods::podref_of(&pod)) {
                    listed.insert(podref);
                }
                Vec::new()
            }
            Event::InitDone => match self.relisting.take() {
                Some(listed) => {
                    let known = std::mem::replace(&mut self.known, listed);
                    known.into_iter().filter(|podref| !self.known.contains(podref)).collect()
                }
                None => Vec::new(),
            },
            Event::Apply(pod) => {
                let Some(podref) = pods::podref_of(&pod) else { return Vec::new() };
                self.known.insert(podref.clone());
                if pods::has_terminated(&pod) { vec![podref] } else { Vec::new() }
            }
            Event::Delete(pod) => {
                let Some(podref) = pods::podref_of(&pod) else { return Vec::new() };
                self.known.remove(&podref);
                vec![podref]
            }
        }
    }
}

/// Frees the allocations of `podref` that the pod policy says it no longer uses.
pub fn free_pod(
    store: &KubeStore,
    allocator: &mut Allocator,
    podref: &str,
) -> Result<Vec<Freed>, CniError> {
    let Some((namespace, name)) = pods::split_podref(podref) else { return Ok(Vec::new()) };
    store.restart_budget();
    // The allocations first, then the pod: an allocation made after the pod was read cannot be
    // among them (the order reconcile keeps too).
    let mut held = Vec::new();
    let slices = crate::SlicePools::list(store)?;
    for pool in store.list_pool_objects()? {
        if !pool.spec.allocations.values().any(|a| a.podref == podref) {
            continue;
        }
        let Ok(crate::PoolNetwork { object, network }) =
            crate::pool_network(allocator, &pool, &slices)?
        else {
            continue;
        };
        for lease in allocator.list_leases(&network)? {
            if lease.owner.podref == podref {
                held.push((object.clone(), network.clone(), lease));
            }
        }
    }
    if held.is_empty() {
        return Ok(Vec::new());
    }
    let pod = crate::get_pod(store, namespace, name)?.as_ref().and_then(pods::PodFacts::of);
    // A pod being deleted: whether its node still exists decides too.
    let mut nodes = pods::Nodes { now: crate::now_seconds(), ..pods::Nodes::default() };
    if let Some(pod) = pod.as_ref().filter(|p| p.deleting && !p.node.is_empty()) {
        let node = crate::get_node_facts(store, &pod.node)?;
        nodes.known = Some(node.map(|n| (pod.node.clone(), n)).into_iter().collect());
    }
    let events = crate::events::FreeEvents::new(store);
    let mut freed = Vec::new();
    for (object, network, held) in held {
        let by_pod = pods::allocation(pod.as_ref(), &held.lease.address, &nodes);
        let id = &held.owner.container_id;
        let verdict = if let Some((namespace, name)) = claims::claim_of_owner(id) {
            pods::claimed(store.get_claim(namespace, name).map_err(CniError::from)?.is_some())
        } else if let Some(member) = statefulsets::member_of_owner(id) {
            let set = store.get_statefulset(&member.namespace, &member.set)?;
            pods::stateful(&member, set.as_ref().map(Ordinals::of).as_ref(), by_pod)
        } else {
            by_pod
        };
        if !verdict.is_free() {
            continue;
        }
        store.restart_budget();
        allocator.release(&network, &held.owner)?;
        let one = Freed::allocation(object, &held, &verdict);
        events.freed(store, &one, pod.is_some());
        freed.push(one);
    }
    Ok(freed)
}
