//! `hereabouts reconcile [--dry-run]`: frees the addresses of pods that are gone (run it as a
//! CronJob, like Whereabouts' ip-reconciler).
//!
//! Order matters: the IPPools and reservations are listed *before* the pods, so an address
//! allocated while we run belongs to a pod that is in our pod list and is never mistaken for
//! an orphan. Which allocations are freed is decided by [`pods::judge`] (documented there:
//! a missing or terminated pod, or a running pod whose network-status no longer lists the
//! address; never a pending pod or one being deleted). Each free goes through the allocator's
//! `release` for that exact container id + ifname, a conditional write: if the slot has been
//! re-owned meanwhile (a sticky address taken over by the pod's new container), it is kept.
//! Safe to run beside `hereabouts controller` and beside itself.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::error::CniError;
use crate::runtime::{Allocator, NetworkConfig, RangeConfig};
use crate::store::kube::{KubeStore, Timeouts, crd, pods};

#[derive(Debug, clap::Args)]
pub struct ReconcileArgs {
    /// Kubeconfig to use (default: in-cluster service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Print what would be freed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as one JSON object instead of lines of text.
    #[arg(long)]
    pub json: bool,
}

/// One allocation (or reservation) that was, or would be, freed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Freed {
    /// The IPPool (or, for `kind: reservation`, the OverlappingRangeIPReservation) object.
    pub object: String,
    pub kind: &'static str,
    pub address: String,
    pub podref: String,
    pub container_id: String,
    pub ifname: String,
    pub reason: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub checked: usize,
    pub kept: usize,
    pub freed: Vec<Freed>,
    /// Pools skipped because their name does not follow `[network-]<range>` (e.g. node slices).
    pub skipped_pools: Vec<String>,
}

pub fn exec(args: &ReconcileArgs) -> i32 {
    match run(args) {
        Ok(report) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report).expect("serialisable"));
            } else {
                let verb = if report.dry_run { "would free" } else { "freed" };
                for f in &report.freed {
                    println!(
                        "{verb} {} ({} {}, pod {}, container {} {}): {}",
                        f.address, f.kind, f.object, f.podref, f.container_id, f.ifname, f.reason
                    );
                }
                for pool in &report.skipped_pools {
                    println!("skipped IPPool {pool}: its name is not [network_name-]<range>");
                }
                println!(
                    "reconcile{}: {} checked, {} kept, {} {verb}",
                    if report.dry_run { " (dry run)" } else { "" },
                    report.checked,
                    report.kept,
                    report.freed.len()
                );
            }
            0
        }
        Err(e) => {
            eprintln!("hereabouts reconcile: {} (code {})", e.msg, e.code);
            1
        }
    }
}

pub fn run(args: &ReconcileArgs) -> Result<Report, CniError> {
    // Listing every pod of a large cluster can take longer than a CNI call may.
    let timeouts = Timeouts {
        request: std::time::Duration::from_secs(60),
        total: std::time::Duration::from_secs(300),
        ..Timeouts::default()
    };
    let store =
        KubeStore::connect(args.kubeconfig.as_deref(), timeouts).map_err(|e| CniError::from(&e))?;
    reconcile(&store, args.dry_run)
}

/// The whole pass over one namespace's pools and reservations.
pub fn reconcile(store: &KubeStore, dry_run: bool) -> Result<Report, CniError> {
    let pools = store.list_pools().map_err(|e| CniError::from(&e))?;
    let reservations = store.list_reservations().map_err(|e| CniError::from(&e))?;
    let pods: HashMap<String, k8s_openapi::api::core::v1::Pod> = store
        .list_pods()
        .map_err(|e| CniError::from(&e))?
        .into_iter()
        .filter_map(|pod| {
            let key =
                format!("{}/{}", pod.metadata.namespace.as_deref()?, pod.metadata.name.as_deref()?);
            Some((key, pod))
        })
        .collect();

    let mut report = Report { dry_run, ..Report::default() };
    let mut allocator = Allocator::new(Box::new(store.clone()))?;
    for pool in &pools {
        let name = pool.metadata.name.clone().unwrap_or_default();
        let Some(network_name) = crd::network_of_pool(&name, &pool.spec.range) else {
            report.skipped_pools.push(name);
            continue;
        };
        let network = pool_network(&pool.spec.range, network_name);
        for held in allocator.list_leases(&network)? {
            report.checked += 1;
            if held.owner.podref.is_empty() {
                // Whereabouts' rule too: without a podref nobody can tell whose it is.
                report.kept += 1;
                continue;
            }
            let verdict = pods::judge(pods.get(&held.owner.podref), &held.lease.address);
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
    let released: std::collections::HashSet<(String, String)> =
        report.freed.iter().map(|f| (f.container_id.clone(), f.ifname.clone())).collect();
    for reservation in &reservations {
        let spec = &reservation.spec;
        if spec.podref.is_empty()
            || released.contains(&(spec.containerid.clone(), spec.ifname.clone()))
        {
            continue;
        }
        report.checked += 1;
        let gone = match pods.get(&spec.podref) {
            None => Some("pod no longer exists"),
            Some(pod)
                if pod.metadata.deletion_timestamp.is_none()
                    && matches!(
                        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Succeeded" | "Failed")
                    ) =>
            {
                Some("pod has terminated")
            }
            Some(_) => None,
        };
        let Some(reason) = gone else {
            report.kept += 1;
            continue;
        };
        let name = reservation.metadata.name.clone().unwrap_or_default();
        if !dry_run {
            let version = reservation.metadata.resource_version.clone().unwrap_or_default();
            store.delete_reservation(&name, &version).map_err(|e| CniError::from(&e))?;
        }
        report.freed.push(Freed {
            address: name.clone(),
            object: name,
            kind: "reservation",
            podref: spec.podref.clone(),
            container_id: spec.containerid.clone(),
            ifname: spec.ifname.clone(),
            reason: reason.to_string(),
        });
    }
    Ok(report)
}

/// The network config that addresses one existing IPPool (its range as stored, overlapping
/// reservations on, as Whereabouts keeps them): what reconcile and the controller hand the
/// allocator to release an allocation in that pool.
pub(crate) fn pool_network(range: &str, network_name: String) -> NetworkConfig {
    NetworkConfig {
        range: Some(RangeConfig {
            range: range.to_string(),
            range_start: None,
            range_end: None,
            exclude: Vec::new(),
        }),
        ip_ranges: Vec::new(),
        gateway: None,
        network_name,
        enable_overlapping_ranges: true,
    }
}
