//! Hereabouts on Kubernetes: freeing the addresses of pods that are gone. The CNI runtime's
//! DEL frees an address in the normal course; these catch what it misses (a node that died, a
//! DEL that never came).
//!
//! - [`reconcile`]: one pass over every pool and reservation (the CronJob);
//! - [`controller`]: watches pods and frees a deleted pod's addresses within seconds (the
//!   Deployment);
//! - [`pods`]: the policy both follow — when a pod no longer uses an address, and when an
//!   IPAMClaim's address is freed (its claim is gone) — in one place;
//! - [`slices`]: the node-slice controller (Fast IPAM): a NodeSlicePool per network with
//!   `node_slice_size`, a slice per node (part of `hereabouts controller`).
//!
//! Every free of an allocation goes through the allocator component's `release` of one exact
//! container id and interface: a write conditioned on the version read, so it frees nothing if
//! the address changed hands meanwhile. The network config of an existing IPPool is the core's
//! reading of its range and network name ([`pool_network`]); this crate builds none itself. A
//! reservation is deleted only with a `resourceVersion` precondition. No lock, no leader
//! election: safe beside the CNI plugin, beside a second controller and beside itself.

pub mod controller;
pub mod events;
pub mod metrics;
pub mod pods;
pub mod reconcile;
pub mod slices;
pub mod watch;

use std::collections::HashMap;
use std::fmt;

use hereabouts_host::bindings::{HeldLease, NetworkConfig};
use hereabouts_host::error::CniError;
use hereabouts_host::runtime::{Allocator, CallError, ReadError};
use hereabouts_stores::kube::crd::{self, IPPool};
use hereabouts_stores::kube::{KubeError, KubeStore, Request};
use k8s_openapi::api::core::v1::{Node, Pod};
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

impl Freed {
    /// The allocation `held` in `object`, freed (or to be) for `verdict`'s reason.
    pub fn allocation(object: String, held: &HeldLease, verdict: &pods::Verdict) -> Self {
        Freed {
            object,
            kind: "allocation",
            address: held.lease.address.clone(),
            podref: held.owner.podref.clone(),
            container_id: held.owner.container_id.clone(),
            ifname: held.owner.ifname.clone(),
            reason: verdict.reason().to_string(),
        }
    }
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

/// An existing IPPool as the allocator addresses it: its object name, and the network config
/// of its range and network name, read by the core from `{"range": spec.range,
/// "network_name": …}` (overlapping-range reservations on, Whereabouts' default), so that
/// `release` and `list-leases` name exactly this pool. A node's slice pool (Fast IPAM) is the
/// core's narrowing of its NodeSlicePool's network to that node's slice, so its network name
/// — and with it its reservations' names — is the network's, not read from the object name.
pub struct PoolNetwork {
    pub object: String,
    pub network: NetworkConfig,
}

/// Why an IPPool cannot be addressed, and is skipped (objects of other tools).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unaddressable {
    /// Its name is not `[network_name-]<range>`, nor a node's slice pool.
    Name,
    /// The core does not read its `spec.range` as a range.
    Range(String),
    /// It is a node's slice pool, but the core does not read its NodeSlicePool's network.
    Slice(String),
}

impl fmt::Display for Unaddressable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unaddressable::Name => f.write_str("its name is not [network_name-]<range>"),
            Unaddressable::Range(why) => write!(f, "its spec.range is not a range: {why}"),
            Unaddressable::Slice(why) => write!(f, "its NodeSlicePool's network: {why}"),
        }
    }
}

/// The namespace's NodeSlicePools: which IPPools are nodes' slice pools, and of which network.
#[derive(Debug, Default)]
pub struct SlicePools(Vec<crd::NodeSlicePool>);

/// A slice pool's place: its NodeSlicePool, network name, node and slice.
struct SliceOwner<'a> {
    slice_pool: &'a crd::NodeSlicePool,
    network_name: String,
    node: String,
    slice: &'a str,
}

impl SlicePools {
    /// Lists them; none when the NodeSlicePool CRD is not installed.
    pub fn list(store: &KubeStore) -> Result<Self, KubeError> {
        match store.list_node_slice_pools() {
            Ok(pools) => Ok(Self(pools)),
            Err(e) if e.is_not_found() => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    /// The slice `pool` is a node's pool for, if any NodeSlicePool lists its range as a slice
    /// and its name is that slice's (preferring a named network's reading of the name).
    fn owner_of(&self, pool: &IPPool) -> Option<SliceOwner<'_>> {
        let object = pool.metadata.name.as_deref()?;
        let mut unnamed = None;
        for slice_pool in &self.0 {
            let Some(name) = slice_pool.metadata.name.as_deref() else { continue };
            let statuses = slice_pool.status.iter().flat_map(|s| &s.allocations);
            for slice in statuses.filter(|a| a.slice_range == pool.spec.range) {
                let Some((network_name, node)) =
                    crd::slice_pool_owner(object, &slice.slice_range, name)
                else {
                    continue;
                };
                let owner =
                    SliceOwner { slice_pool, network_name, node, slice: &slice.slice_range };
                if !owner.network_name.is_empty() {
                    return Some(owner);
                }
                unnamed.get_or_insert(owner);
            }
        }
        unnamed
    }
}

/// The network config that addresses `pool` (see [`PoolNetwork`]); a component failure is an
/// error, a pool it cannot address is `Ok(Err(…))`.
pub fn pool_network(
    allocator: &mut Allocator,
    pool: &IPPool,
    slices: &SlicePools,
) -> Result<Result<PoolNetwork, Unaddressable>, CniError> {
    let object = pool.metadata.name.clone().unwrap_or_default();
    if let Some(owner) = slices.owner_of(pool) {
        let spec = &owner.slice_pool.spec;
        let ipam = serde_json::json!({"range": spec.range, "network_name": owner.network_name,
            "node_slice_size": spec.slice_size});
        let network = match allocator.read_config(&ipam.to_string()) {
            Ok(reading) => reading.network,
            Err(ReadError::Config(e)) => {
                let why = hereabouts_host::bindings::describe_config_error(&e);
                return Ok(Err(Unaddressable::Slice(why)));
            }
            Err(ReadError::Runtime(e)) => return Err(e.into()),
        };
        return match allocator.on_node_slice(&network, &owner.node, owner.slice) {
            Ok(network) => Ok(Ok(PoolNetwork { object, network })),
            Err(CallError::Ipam(e)) => Ok(Err(Unaddressable::Slice(e.to_string()))),
            Err(CallError::Runtime(e)) => Err(e.into()),
        };
    }
    let Some(network_name) = crd::network_of_pool(&object, &pool.spec.range) else {
        return Ok(Err(Unaddressable::Name));
    };
    let ipam = serde_json::json!({"range": pool.spec.range, "network_name": network_name});
    match allocator.read_config(&ipam.to_string()) {
        Ok(reading) => Ok(Ok(PoolNetwork { object, network: reading.network })),
        Err(ReadError::Config(e)) => {
            Ok(Err(Unaddressable::Range(hereabouts_host::bindings::describe_config_error(&e))))
        }
        Err(ReadError::Runtime(e)) => Err(e.into()),
    }
}

/// Pods per page when listing every pod: one page at a time is held as whole objects.
pub const PODS_PER_PAGE: u32 = 500;

/// The pods `wanted` names, as the facts the policy needs, listed page by page (`limit` and
/// `continue`): a pass over 50,000 pods holds one page of objects, and facts only of the pods
/// that hold addresses.
fn list_pod_facts(
    store: &KubeStore,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<Vec<pods::PodFacts>, KubeError> {
    let api: Api<Pod> = Api::all(store.client().clone());
    let mut facts = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(PODS_PER_PAGE);
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        let page = store.request(Request::new("list", "pods", ""), api.list(&params))?;
        facts.extend(
            page.items
                .iter()
                .filter(|pod| pods::podref_of(pod).is_some_and(|podref| wanted(&podref)))
                .filter_map(pods::PodFacts::of),
        );
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(facts);
        }
        store.restart_budget();
    }
}

/// Every node, as the facts the policy needs.
fn list_node_facts(store: &KubeStore) -> Result<HashMap<String, pods::NodeFacts>, KubeError> {
    let api: Api<Node> = Api::all(store.client().clone());
    let nodes =
        store.request(Request::new("list", "nodes", ""), api.list(&ListParams::default()))?;
    Ok(nodes
        .items
        .iter()
        .filter_map(|node| Some((node.metadata.name.clone()?, pods::NodeFacts::of(node))))
        .collect())
}

/// Whether pod `podref` still uses `address`, as the pod policy reads the pod now (running
/// with it, pending, being deleted on a live node): false once the pod is gone or done with it.
/// `hereabouts status` tells persistent addresses no pod holds from those a pod holds.
pub fn pod_uses(store: &KubeStore, podref: &str, address: &str) -> Result<bool, CniError> {
    let (pod, nodes) = controller::read_pod(store, podref)?;
    Ok(!pods::allocation(pod.as_ref(), address, &nodes).is_free())
}

/// One node by name, as the policy's facts; None when it does not exist.
fn get_node_facts(store: &KubeStore, name: &str) -> Result<Option<pods::NodeFacts>, KubeError> {
    let api: Api<Node> = Api::all(store.client().clone());
    let node = store.request(Request::new("get", "nodes", name), api.get_opt(name))?;
    Ok(node.as_ref().map(pods::NodeFacts::of))
}

/// Now, in seconds since the epoch.
fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// One pod by namespace and name; None when it does not exist.
fn get_pod(store: &KubeStore, namespace: &str, name: &str) -> Result<Option<Pod>, KubeError> {
    let api: Api<Pod> = Api::namespaced(store.client().clone(), namespace);
    store.request(Request::new("get", "pods", name), api.get_opt(name))
}
