//! Hereabouts on Kubernetes: freeing the addresses of pods that are gone. The CNI runtime's
//! DEL frees an address in the normal course; these catch what it misses (a node that died, a
//! DEL that never came).
//!
//! - [`reconcile`]: one pass over every pool and reservation (the CronJob);
//! - [`controller`]: watches pods and frees a deleted pod's addresses within seconds (the
//!   Deployment);
//! - [`pods`]: the policy both follow — when a pod no longer uses an address — in one place.
//!
//! Every free goes through the allocator component's `release` of one exact container id and
//! interface: a write conditioned on the version read, so it frees nothing if the address
//! changed hands meanwhile. No lock, no leader election: safe beside the CNI plugin, beside a
//! second controller and beside itself.

pub mod controller;
pub mod pods;
pub mod reconcile;

use std::fmt;

use hereabouts_host::bindings::{NetworkConfig, RangeConfig};
use hereabouts_stores::kube::{KubeError, KubeStore, Request};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use serde::Serialize;

/// One allocation (or reservation) that was, or would be, freed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Freed {
    /// The IPPool (or, for `kind: reservation`, the OverlappingRangeIPReservation) object.
    pub object: String,
    pub kind: &'static str,
    /// The address; a reservation whose name gives none (not written by Whereabouts or us)
    /// has "".
    pub address: String,
    pub podref: String,
    pub container_id: String,
    pub ifname: String,
    pub reason: String,
}

impl fmt::Display for Freed {
    /// `10.0.0.5 (allocation blue-10.0.0.0-24, pod ns/a, container c1 net1): pod no longer exists`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let address = if self.address.is_empty() { "(no address)" } else { &self.address };
        write!(
            f,
            "{address} ({} {}, pod {}, container {} {}): {}",
            self.kind, self.object, self.podref, self.container_id, self.ifname, self.reason
        )
    }
}

/// The network config that addresses one existing IPPool (its range as stored, overlapping
/// reservations on, as Whereabouts keeps them): what reconcile and the controller hand the
/// allocator to release an allocation in that pool.
fn pool_network(range: &str, network_name: String) -> NetworkConfig {
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

/// Every pod in the cluster.
fn list_pods(store: &KubeStore) -> Result<Vec<Pod>, KubeError> {
    let api: Api<Pod> = Api::all(store.client().clone());
    Ok(store.request(Request::new("list", "pods", ""), api.list(&ListParams::default()))?.items)
}

/// One pod by namespace and name; None when it does not exist.
fn get_pod(store: &KubeStore, namespace: &str, name: &str) -> Result<Option<Pod>, KubeError> {
    let api: Api<Pod> = Api::namespaced(store.client().clone(), namespace);
    store.request(Request::new("get", "pods", name), api.get_opt(name))
}
