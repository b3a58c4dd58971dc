//! `hereabouts reconcile [--dry-run]`: frees the addresses of pods that are gone (run it as a
//! CronJob, like Whereabouts' ip-reconciler).
//!
//! Order matters: the IPPools and reservations are listed *before* the pods, so an address
//! allocated while we run belongs to a pod that is in our pod list and is never mistaken for
//! an orphan. Which allocations and reservations are freed is decided by [`crate::pods`].
//! Each free of an allocation goes through the allocator's `release` for that exact container
//! id + ifname, a conditional write: if the slot has been re-owned meanwhile (a sticky address
//! taken over by the pod's new container), it is kept. Safe to run beside
//! `hereabouts controller` and beside itself.
//!
//! Reservations: the Kubernetes store creates a reservation before it writes the IPPool (no
//! transaction spans the two), so a crash in between strands one that no allocation backs;
//! so does a DEL whose reservation delete failed after the pool was written. A reservation is
//! freed when no allocation kept by this pass backs it (the same network's address, held by
//! the same container id + ifname, or — Whereabouts writes no container id — the same podref
//! and ifname) and its pod is gone. One that an allocation backs goes with its allocation.
//!
//! Every free (not in a dry run) is reported as a Kubernetes Event ([`crate::events`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use hereabouts_host::bindings::Owner;
use hereabouts_host::error::CniError;
use hereabouts_host::runtime::Allocator;
use hereabouts_stores::kube::{KubeStore, Timeouts, crd, reservation_owner};
use serde::Serialize;

use crate::{Freed, pods};

/// What a pass found and did (`hereabouts reconcile --json` prints it as is).
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub checked: usize,
    pub kept: usize,
    pub freed: Vec<Freed>,
    /// Pools skipped because their name does not follow `[network-]<range>` (e.g. node slices)
    /// or their `spec.range` is not a range.
    pub skipped_pools: Vec<String>,
}

/// How a pass runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Report what would be freed; free nothing.
    pub dry_run: bool,
    /// Free the addresses of pods being deleted on a node whose `Ready` condition has not
    /// been True for this long (a dead node's kubelet never sends their DEL). None: off.
    pub not_ready_grace: Option<Duration>,
}

/// Connects (a kubeconfig, else in-cluster) and runs one pass.
pub fn run(kubeconfig: Option<&Path>, options: &Options) -> Result<Report, CniError> {
    // Listing every pod of a large cluster can take longer than a CNI call may.
    let timeouts = Timeouts {
        request: Duration::from_secs(60),
        total: Duration::from_secs(300),
        ..Timeouts::default()
    };
    let store = KubeStore::connect(kubeconfig, timeouts)?;
    reconcile_with(&store, options)
}

/// One pass with the default options but `dry_run`.
pub fn reconcile(store: &KubeStore, dry_run: bool) -> Result<Report, CniError> {
    reconcile_with(store, &Options { dry_run, ..Options::default() })
}

/// The whole pass over one namespace's pools and reservations.
pub fn reconcile_with(store: &KubeStore, options: &Options) -> Result<Report, CniError> {
    let dry_run = options.dry_run;
    let pools = store.list_pool_objects()?;
    let reservations = store.list_reservation_objects()?;
    // Only the pods that hold something are kept (Whereabouts' reconciler filters so too).
    let holders: HashSet<&str> = pools
        .iter()
        .flat_map(|pool| pool.spec.allocations.values().map(|a| a.podref.as_str()))
        .chain(reservations.iter().map(|r| r.spec.podref.as_str()))
        .collect();
    let pods: HashMap<String, pods::PodFacts> =
        crate::list_pod_facts(store, &|podref| holders.contains(podref))?
            .into_iter()
            .map(|pod| (pod.podref.clone(), pod))
            .collect();
    drop(holders);
    // After the pods: a pod scheduled on a node that joined meanwhile finds its node.
    store.restart_budget();
    let nodes = pods::Nodes {
        known: Some(crate::list_node_facts(store)?),
        not_ready_grace: options.not_ready_grace,
        now: crate::now_seconds(),
    };

    let mut report = Report { dry_run, ..Report::default() };
    let mut networks = BTreeSet::new();
    // The reservation each kept allocation backs: its name, and who holds the allocation.
    let mut backing: HashMap<String, Vec<Owner>> = HashMap::new();
    let mut allocator = Allocator::new(Box::new(store.clone()))?;
    let events = crate::events::FreeEvents::new(store);
    for pool in &pools {
        let crate::PoolNetwork { object, network } =
            match crate::pool_network(&mut allocator, pool)? {
                Ok(addressed) => addressed,
                Err(_) => {
                    report.skipped_pools.push(pool.metadata.name.clone().unwrap_or_default());
                    continue;
                }
            };
        networks.insert(network.network_name.clone());
        for held in allocator.list_leases(&network)? {
            report.checked += 1;
            let verdict = if held.owner.podref.is_empty() {
                // Whereabouts' rule too: without a podref nobody can tell whose it is.
                None
            } else {
                Some(pods::allocation(pods.get(&held.owner.podref), &held.lease.address, &nodes))
                    .filter(pods::Verdict::is_free)
            };
            let Some(verdict) = verdict else {
                report.kept += 1;
                let name = crd::reservation_name(&network.network_name, &held.lease.address);
                backing.entry(name).or_default().push(held.owner.clone());
                continue;
            };
            let freed = Freed {
                object: object.clone(),
                kind: "allocation",
                address: held.lease.address.clone(),
                podref: held.owner.podref.clone(),
                container_id: held.owner.container_id.clone(),
                ifname: held.owner.ifname.clone(),
                reason: verdict.reason().to_string(),
            };
            if !dry_run {
                store.restart_budget();
                allocator.release(&network, &held.owner)?;
                events.freed(store, &freed, pods.contains_key(&freed.podref));
            }
            report.freed.push(freed);
        }
    }

    // Reservations of allocations freed above went with them (the release deleted them).
    let released: HashSet<(String, String)> =
        report.freed.iter().map(|f| (f.container_id.clone(), f.ifname.clone())).collect();
    for reservation in &reservations {
        let name = reservation.metadata.name.clone().unwrap_or_default();
        let holder = reservation_owner(reservation);
        if holder.podref.is_empty()
            || released.contains(&(holder.container_id.clone(), holder.ifname.clone()))
        {
            continue;
        }
        report.checked += 1;
        let backed =
            backing.get(&name).is_some_and(|owners| owners.iter().any(|o| backs(o, &holder)));
        let verdict = pods::reservation(pods.get(&holder.podref), &nodes);
        if backed || !verdict.is_free() {
            report.kept += 1;
            continue;
        }
        let freed = Freed {
            address: crd::reservation_address(&name, networks.iter().map(String::as_str))
                .unwrap_or_default(),
            object: name.clone(),
            kind: "reservation",
            podref: holder.podref,
            container_id: holder.container_id,
            ifname: holder.ifname,
            reason: verdict.reason().to_string(),
        };
        if !dry_run {
            let version = reservation.metadata.resource_version.clone().unwrap_or_default();
            store.restart_budget();
            store.delete_reservation(&name, &version)?;
            events.freed(store, &freed, pods.contains_key(&freed.podref));
        }
        report.freed.push(freed);
    }
    Ok(report)
}

/// Whether an allocation held by `allocation` backs a reservation held by `holder` at its
/// address: the same attachment, or, for a reservation Whereabouts wrote (no container id),
/// the same pod and interface.
fn backs(allocation: &Owner, holder: &Owner) -> bool {
    allocation.same_attachment(holder)
        || (holder.container_id.is_empty()
            && allocation.podref == holder.podref
            && allocation.ifname == holder.ifname)
}
