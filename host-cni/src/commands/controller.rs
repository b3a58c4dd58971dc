//! `hereabouts controller`: watches pods (kube::runtime's watcher) and frees the addresses of
//! each deleted or terminated pod within seconds, instead of waiting for the next reconcile.
//!
//! Safe beside the reconcile CronJob, the CNI plugin and a second controller replica: it takes
//! no lock, and each free is the allocator's `release` of one exact container id + ifname — a
//! write conditioned on the version read, which frees nothing if the slot changed hands.
//! A pod deleted and recreated under the same name (StatefulSet) is left alone: a deletion is
//! acted on after a grace period (`--grace-seconds`, default 10), then the pod is looked up
//! again, and if a pod of that name exists and is not terminated, the addresses are kept (the
//! reconcile job decides later with the new pod's network-status).
//!
//! The watch runs on its own thread and client; the main thread does the frees with the
//! allocator component. Deletions missed while the controller was down are the CronJob's job.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use crate::commands::reconcile::Freed;
use crate::error::CniError;
use crate::runtime::Allocator;
use crate::store::kube::{KubeStore, Timeouts, crd, pods};

#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    /// Kubeconfig to use (default: in-cluster service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Wait this long after a pod is deleted before freeing its addresses, so a pod recreated
    /// under the same name (StatefulSet) is found and its sticky address kept.
    #[arg(long, default_value_t = 10)]
    pub grace_seconds: u64,
}

pub fn exec(args: &ControllerArgs) -> i32 {
    match run(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("hereabouts controller: {} (code {})", e.msg, e.code);
            1
        }
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

fn podref(pod: &Pod) -> Option<String> {
    Some(format!("{}/{}", pod.metadata.namespace.as_deref()?, pod.metadata.name.as_deref()?))
}

pub fn run(args: &ControllerArgs) -> Result<(), CniError> {
    let timeouts = Timeouts {
        request: Duration::from_secs(60),
        total: Duration::from_secs(60),
        ..Timeouts::default()
    };
    let store =
        KubeStore::connect(args.kubeconfig.as_deref(), timeouts).map_err(|e| CniError::from(&e))?;
    // A watch is a long poll (the watcher asks for 290 s): its reads may idle that long.
    let watch_timeouts = Timeouts { request: Duration::from_secs(330), ..timeouts };
    let watch_store = KubeStore::connect(args.kubeconfig.as_deref(), watch_timeouts)
        .map_err(|e| CniError::from(&e))?;
    let mut allocator = Allocator::new(Box::new(store.clone()))?;

    let (gone, pods_gone) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let api: Api<Pod> = Api::all(watch_store.client().clone());
        watch_store.run(async move {
            let mut events =
                Box::pin(watcher::watcher(api, watcher::Config::default()).default_backoff());
            while let Some(event) = events.next().await {
                let pod = match event {
                    Ok(Event::Delete(pod)) => pod,
                    Ok(Event::Apply(pod)) if is_terminal(&pod) => pod,
                    Ok(_) => continue,
                    Err(e) => {
                        eprintln!("hereabouts controller: watching pods: {e}");
                        continue;
                    }
                };
                if let Some(podref) = podref(&pod) {
                    if gone.send(podref).is_err() {
                        return;
                    }
                }
            }
        });
    });
    eprintln!("hereabouts controller: watching pods; IPPools in namespace {}", store.namespace());

    // Deletions wait out the grace period in arrival order (one grace for all: FIFO is sorted).
    let grace = Duration::from_secs(args.grace_seconds);
    let mut due: std::collections::VecDeque<(std::time::Instant, String)> = Default::default();
    loop {
        let wait =
            due.front().map(|(at, _)| at.saturating_duration_since(std::time::Instant::now()));
        let received = match wait {
            Some(wait) => pods_gone.recv_timeout(wait),
            None => pods_gone.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(podref) => due.push_back((std::time::Instant::now() + grace, podref)),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        while due.front().is_some_and(|(at, _)| *at <= std::time::Instant::now()) {
            let (_, podref) = due.pop_front().unwrap();
            match free_pod(&store, &mut allocator, &podref) {
                Ok(freed) => {
                    for f in freed {
                        println!(
                            "freed {} ({} {}, pod {}, container {} {}): {}",
                            f.address,
                            f.kind,
                            f.object,
                            f.podref,
                            f.container_id,
                            f.ifname,
                            f.reason
                        );
                    }
                }
                Err(e) => eprintln!(
                    "hereabouts controller: freeing {podref}: {} (code {})",
                    e.msg, e.code
                ),
            }
        }
    }
    Err(CniError::new(crate::error::Code::Internal, "the pod watch ended"))
}

/// Frees every allocation of `podref` if the pod is really gone.
pub fn free_pod(
    store: &KubeStore,
    allocator: &mut Allocator,
    podref: &str,
) -> Result<Vec<Freed>, CniError> {
    let Some((namespace, name)) = pods::split_podref(podref) else { return Ok(Vec::new()) };
    store.restart_budget();
    let current = store.get_pod(namespace, name).map_err(|e| CniError::from(&e))?;
    if current.as_ref().is_some_and(|pod| !is_terminal(pod)) {
        // Recreated under the same name (or the event was stale): keep.
        return Ok(Vec::new());
    }
    let reason = if current.is_some() { "pod has terminated" } else { "pod was deleted" };
    let mut freed = Vec::new();
    for pool in store.list_pools().map_err(|e| CniError::from(&e))? {
        if !pool.spec.allocations.values().any(|a| a.podref == podref) {
            continue;
        }
        let object = pool.metadata.name.clone().unwrap_or_default();
        let Some(network_name) = crd::network_of_pool(&object, &pool.spec.range) else { continue };
        let network = super::reconcile::pool_network(&pool.spec.range, network_name);
        for held in allocator.list_leases(&network)? {
            if held.owner.podref != podref {
                continue;
            }
            store.restart_budget();
            allocator.release(&network, &held.owner)?;
            freed.push(Freed {
                object: object.clone(),
                kind: "allocation",
                address: held.lease.address.clone(),
                podref: podref.to_string(),
                container_id: held.owner.container_id.clone(),
                ifname: held.owner.ifname.clone(),
                reason: reason.to_string(),
            });
        }
    }
    Ok(freed)
}
