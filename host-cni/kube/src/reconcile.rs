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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use hereabouts_host::error::CniError;
use hereabouts_host::runtime::Allocator;
use hereabouts_stores::kube::{KubeStore, Timeouts, crd};
use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

use crate::{Freed, pods};

/// What a pass found and did.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub checked: usize,
    pub kept: usize,
    pub freed: Vec<Freed>,
    /// Pools skipped because their name does not follow `[network-]<range>` (e.g. node slices).
    pub skipped_pools: Vec<String>,
}

/// Connects (a kubeconfig, else in-cluster) and runs one pass.
pub fn run(kubeconfig: Option<&Path>, dry_run: bool) -> Result<Report, CniError> {
    // Listing every pod of a large cluster can take longer than a CNI call may.
    let timeouts = Timeouts {
        request: Duration::from_secs(60),
        total: Duration::from_secs(300),
        ..Timeouts::default()
    };
    let store = KubeStore::connect(kubeconfig, timeouts)?;
    reconcile(&store, dry_run)
}

/// The whole pass over one namespace's pools and reservations.
pub fn reconcile(store: &KubeStore, dry_run: bool) -> Result<Report, CniError> {
    let pools = store.list_pools()?;
    let reservations = store.list_reservations()?;
    let pods: HashMap<String, Pod> = crate::list_pods(store)?
        .into_iter()
        .filter_map(|pod| Some((pods::podref_of(&pod)?, pod)))
        .collect();

    let mut report = Report { dry_run, ..Report::default() };
    let mut networks = BTreeSet::new();
    let mut allocator = Allocator::new(Box::new(store.clone()))?;
    for pool in &pools {
        let name = pool.metadata.name.clone().unwrap_or_default();
        let Some(network_name) = crd::network_of_pool(&name, &pool.spec.range) else {
            report.skipped_pools.push(name);
            continue;
        };
        networks.insert(network_name.clone());
        let network = crate::pool_network(&pool.spec.range, network_name);
        for held in allocator.list_leases(&network)? {
            report.checked += 1;
            if held.owner.podref.is_empty() {
                // Whereabouts' rule too: without a podref nobody can tell whose it is.
                report.kept += 1;
                continue;
            }
            let verdict = pods::allocation(pods.get(&held.owner.podref), &held.lease.address);
            if !verdict.is_free() {
                report.kept += 1;
                continue;
            }
            if !dry_run {
                store.restart_budget();
                allocator.release(&network, &held.owner)?;
            }
            report.freed.push(Freed {
                object: name.clone(),
                kind: "allocation",
                address: held.lease.address.clone(),
                podref: held.owner.podref.clone(),
                container_id: held.owner.container_id.clone(),
                ifname: held.owner.ifname.clone(),
                reason: verdict.reason().to_string(),
            });
        }
    }

    // Reservations whose pod is gone (those of allocations freed above are already deleted).
    let released: HashSet<(String, String)> =
        report.freed.iter().map(|f| (f.container_id.clone(), f.ifname.clone())).collect();
    for reservation in &reservations {
        let spec = &reservation.spec;
        if spec.podref.is_empty()
            || released.contains(&(spec.containerid.clone(), spec.ifname.clone()))
        {
            continue;
        }
        report.checked += 1;
        let verdict = pods::reservation(pods.get(&spec.podref));
        if !verdict.is_free() {
            report.kept += 1;
            continue;
        }
        let name = reservation.metadata.name.clone().unwrap_or_default();
        if !dry_run {
            let version = reservation.metadata.resource_version.clone().unwrap_or_default();
            store.delete_reservation(&name, &version)?;
        }
        report.freed.push(Freed {
            address: crd::reservation_address(&name, networks.iter().map(String::as_str))
                .unwrap_or_default(),
            object: name,
            kind: "reservation",
            podref: spec.podref.clone(),
            container_id: spec.containerid.clone(),
            ifname: spec.ifname.clone(),
            reason: verdict.reason().to_string(),
        });
    }
    Ok(report)
}
