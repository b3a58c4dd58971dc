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
//! address in its network-status, keeps it.
//!
//! The watch runs on its own thread and client; the main thread does the frees with the
//! allocator component. Deletions missed while the controller was down, and reservations no
//! allocation backs (a crash between a reservation and its pool write), are the CronJob's job.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hereabouts_host::error::{CniError, Code};
use hereabouts_host::runtime::Allocator;
use hereabouts_stores::kube::{KubeStore, Timeouts};
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
fn watch(store: &KubeStore, gone: &mpsc::Sender<String>) {
    let api: Api<Pod> = Api::all(store.client().clone());
    store.run(async move {
        let mut events =
            Box::pin(watcher::watcher(api, watcher::Config::default()).default_backoff());
        while let Some(event) = events.next().await {
            let pod = match event {
                Ok(Event::Delete(pod)) => pod,
                Ok(Event::Apply(pod)) if pods::has_terminated(&pod) => pod,
                Ok(_) => continue,
                Err(e) => {
                    eprintln!("hereabouts controller: watching pods: {e}");
                    continue;
                }
            };
            if let Some(podref) = pods::podref_of(&pod)
                && gone.send(podref).is_err()
            {
                return;
            }
        }
    });
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
    for pool in store.list_pool_objects()? {
        if !pool.spec.allocations.values().any(|a| a.podref == podref) {
            continue;
        }
        let Ok(crate::PoolNetwork { object, network }) = crate::pool_network(allocator, &pool)?
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
        let verdict = pods::allocation(pod.as_ref(), &held.lease.address, &nodes);
        if !verdict.is_free() {
            continue;
        }
        store.restart_budget();
        allocator.release(&network, &held.owner)?;
        let one = Freed {
            object,
            kind: "allocation",
            address: held.lease.address.clone(),
            podref: podref.to_string(),
            container_id: held.owner.container_id.clone(),
            ifname: held.owner.ifname.clone(),
            reason: verdict.reason().to_string(),
        };
        events.freed(store, &one, pod.is_some());
        freed.push(one);
    }
    Ok(freed)
}
