//! Node slices (`node_slice_size`) in the CNI plugin on Kubernetes: which slice this node
//! allocates from, as Whereabouts finds it — the node's name (`$NODENAME`, else
//! `<configuration_path>/nodename`, else `/etc/hostname`), the network's NodeSlicePool (named by
//! `network_name`, else the CNI network's `name`), and that node's entry in it. The core says
//! how the range is cut and which IPPool the slice is; this module only reads the object.
//!
//! A node without a slice yet is "try again later" (CNI 11): the controller assigns one when
//! it sees the node, and the runtime retries the sandbox.
//!
//! On etcd there is no controller: an ADD on a node without a slice claims the lowest free
//! one itself (`hereabouts_stores::etcd::slices` keeps the claims). A claim is current when its
//! slice is one of the network's slices as the core cuts them now; a claim made before the
//! network was re-cut (another range or slice size) is stale. A stale claim is never allocated
//! from, and it stays (its pool may still hold pods' addresses): the node claims a current
//! slice afresh, never one that shares an address with any stale claim (the core's
//! `overlaps` says which do), and its DEL and GC free in its stale slices as well, so the
//! addresses of pods from before the re-cut are found. `hereabouts slices release` frees a
//! stale claim once its pool is empty.

use hereabouts_host::bindings::{NetworkConfig, Slicing};
use hereabouts_host::error::{CniError, Code};
use hereabouts_host::runtime::Allocator;
use hereabouts_stores::etcd::EtcdStore;
use hereabouts_stores::etcd::slices::{ClaimOutcome, ClaimRecord, SliceClaim, SliceClaims};
use hereabouts_stores::kube::KubeStore;
use hereabouts_stores::kube::slices::{node_name, slice_of_node};

use super::netconf::NetConf;

/// The network narrowed to this node's slice; `Ok(Err(why))` when the node has none (yet),
/// `Err` when the API server or the component failed.
pub fn node_network(
    allocator: &mut Allocator,
    store: &KubeStore,
    network: &NetworkConfig,
    conf: &NetConf,
) -> Result<Result<NetworkConfig, CniError>, CniError> {
    let slicing = allocator.node_slicing(network, &conf.name)?;
    let node = match this_node(conf) {
        Ok(node) => node,
        Err(why) => return Ok(Err(why)),
    };
    let object = format!("NodeSlicePool {}/{}", store.namespace(), slicing.pool_name);
    let Some(pool) = store.get_node_slice_pool(&slicing.pool_name)? else {
        return Ok(Err(CniError::new(
            Code::TryAgainLater,
            format!(
                "node_slice_size: {object} does not exist yet; the node-slice controller \
                 (`hereabouts controller`) creates it from the network's NetworkAttachmentDefinition"
            ),
        )));
    };
    if pool.spec.range != slicing.range || pool.spec.slice_size != slicing.slice_size {
        return Ok(Err(CniError::new(
            Code::TryAgainLater,
            format!(
                "node_slice_size: {object} cuts range {} into {} slices, but this network is \
                 range {} with node_slice_size {}; waiting for the node-slice controller to \
                 re-slice it",
                pool.spec.range, pool.spec.slice_size, slicing.range, slicing.slice_size
            ),
        )));
    }
    let Some(slice) = slice_of_node(&pool, &node) else {
        let free = pool
            .status
            .as_ref()
            .map_or(0, |s| s.allocations.iter().filter(|a| a.node_name.is_empty()).count());
        let why = if free == 0 {
            format!("all {} slices are taken by other nodes", slicing.slices.len())
        } else {
            "the node-slice controller has not assigned one yet".to_string()
        };
        return Ok(Err(CniError::new(
            Code::TryAgainLater,
            format!("node_slice_size: node {node:?} has no slice in {object}: {why}"),
        )));
    };
    let narrowed = allocator.on_node_slice(network, &node, slice)?;
    tracing::debug!(node = %node, slice = %slice, "allocating from the node's slice");
    Ok(Ok(narrowed))
}

/// This node's name, as Whereabouts finds it; CNI 4 when it cannot be found or is empty.
fn this_node(conf: &NetConf) -> Result<String, CniError> {
    match node_name(conf.ipam.configuration_path.as_deref()) {
        Ok(node) if !node.is_empty() => Ok(node),
        Ok(_) => Err(CniError::new(
            Code::InvalidEnvironment,
            "node_slice_size: the node's name is empty (NODENAME, the nodename file, /etc/hostname)",
        )),
        Err(e) => Err(CniError::new(Code::InvalidEnvironment, format!("node_slice_size: {e}"))),
    }
}

/// Claim rounds of one ADD: each lost round means another claim in the network succeeded, so
/// with N nodes claiming at once every one of them is done within N rounds.
const CLAIM_ROUNDS: usize = 64;

/// Whether a call may claim a slice for this node (ADD) or only uses the one it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claiming {
    Claim,
    FindOnly,
}

/// This node's slices on etcd, for one CNI call.
pub struct EtcdNodeSlices {
    /// The network narrowed to the node's current slice, or why it has none.
    pub current: Result<NetworkConfig, CniError>,
    /// The node's stale claims (cut for an earlier range or slice size), as networks narrowed
    /// to them: DEL and GC free there too.
    pub stale: Vec<NetworkConfig>,
}

/// Finds this node's slice of `network` on etcd, claiming the lowest free one when
/// `claiming` says so and the node has none. `Err` when etcd or the component failed.
pub fn etcd_node_network(
    allocator: &mut Allocator,
    store: &EtcdStore,
    network: &NetworkConfig,
    conf: &NetConf,
    claiming: Claiming,
) -> Result<EtcdNodeSlices, CniError> {
    let slicing = allocator.node_slicing(network, &conf.name)?;
    let node = match this_node(conf) {
        Ok(node) => node,
        Err(why) => return Ok(EtcdNodeSlices { current: Err(why), stale: Vec::new() }),
    };
    let record = ClaimRecord {
        node: node.clone(),
        range: slicing.range.clone(),
        slice_size: slicing.slice_size.clone(),
    };
    for _ in 0..CLAIM_ROUNDS {
        let seen = store.slice_claims(&slicing.pool_name)?;
        let mut stale = Vec::new();
        for claim in seen.of_node(&node).filter(|c| !is_current(&slicing, c)) {
            stale.push(claim_network(allocator, network, &slicing, claim)?);
        }
        if let Some(slice) = held_slice(&slicing, &seen, &node) {
            tracing::debug!(node = %node, slice = %slice, "allocating from the node's slice");
            let current = allocator.on_node_slice(network, &node, slice)?;
            return Ok(EtcdNodeSlices { current: Ok(current), stale });
        }
        if claiming == Claiming::FindOnly {
            let why = CniError::new(
                Code::TryAgainLater,
                format!(
                    "node_slice_size: node {node:?} has claimed no slice of network {:?} yet \
                     (its first ADD claims one)",
                    slicing.pool_name
                ),
            );
            return Ok(EtcdNodeSlices { current: Err(why), stale });
        }
        let Some(slice) = lowest_free(allocator, network, &slicing, &seen, &node)? else {
            let why = all_taken(&slicing, &seen, &node);
            return Ok(EtcdNodeSlices { current: Err(why), stale });
        };
        match store.claim_slice(&slicing.pool_name, &slice, &record, &seen)? {
            ClaimOutcome::Claimed => {
                tracing::info!(node = %node, slice = %slice, network = %slicing.pool_name,
                    "claimed the node's slice");
                let current = allocator.on_node_slice(network, &node, &slice)?;
                return Ok(EtcdNodeSlices { current: Ok(current), stale });
            }
            ClaimOutcome::Lost => continue,
        }
    }
    Err(CniError::new(
        Code::TryAgainLater,
        format!(
            "node_slice_size: claiming a slice of network {:?} lost {CLAIM_ROUNDS} times in a row \
             to other claims; try again",
            slicing.pool_name
        ),
    ))
}

/// Whether a claim's slice is one of the network's slices as cut now.
pub fn is_current(slicing: &Slicing, claim: &SliceClaim) -> bool {
    slicing.slices.contains(&claim.slice)
}

/// The lowest current slice `node` holds. A node holds one slice (claims are fenced, see
/// `hereabouts_stores::etcd::slices`); should it hold several (written by hand, or a NAD
/// re-cut back), the lowest is used and `hereabouts slices list` shows the others.
fn held_slice<'a>(slicing: &'a Slicing, seen: &SliceClaims, node: &str) -> Option<&'a str> {
    let mut held =
        slicing.slices.iter().filter(|s| seen.of_slice(s).is_some_and(|c| c.record.node == node));
    let lowest = held.next()?;
    if let Some(other) = held.next() {
        tracing::warn!(node = %node, using = %lowest, also = %other,
            "the node holds more than one slice; allocating from the lowest");
    }
    Some(lowest)
}

/// The lowest slice no one has claimed and that shares no address with a stale claim (the
/// pods of a slice cut before may still hold those addresses in its pool).
fn lowest_free(
    allocator: &mut Allocator,
    network: &NetworkConfig,
    slicing: &Slicing,
    seen: &SliceClaims,
    node: &str,
) -> Result<Option<String>, CniError> {
    let stale = stale_networks(allocator, network, slicing, seen)?;
    for slice in slicing.slices.iter().filter(|s| seen.of_slice(s).is_none()) {
        if !blocked(allocator, network, node, slice, &stale)? {
            return Ok(Some(slice.clone()));
        }
    }
    Ok(None)
}

/// Every stale claim, as the network narrowed to it.
pub fn stale_networks(
    allocator: &mut Allocator,
    network: &NetworkConfig,
    slicing: &Slicing,
    seen: &SliceClaims,
) -> Result<Vec<NetworkConfig>, CniError> {
    let mut stale = Vec::new();
    for claim in seen.claims.iter().filter(|c| !is_current(slicing, c)) {
        stale.push(claim_network(allocator, network, slicing, claim)?);
    }
    Ok(stale)
}

/// Whether `slice`, given to `node`, shares an allocatable address with one of the `stale`
/// slices (the core's `overlaps` decides).
pub fn blocked(
    allocator: &mut Allocator,
    network: &NetworkConfig,
    node: &str,
    slice: &str,
    stale: &[NetworkConfig],
) -> Result<bool, CniError> {
    if stale.is_empty() {
        return Ok(false);
    }
    let candidate = allocator.on_node_slice(network, node, slice)?;
    for old in stale {
        if !allocator.overlaps(&candidate, old)?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// CNI 100 naming the network, the size and what to do about it.
fn all_taken(slicing: &Slicing, seen: &SliceClaims, node: &str) -> CniError {
    let holders: Vec<&str> = seen.claims.iter().map(|c| c.record.node.as_str()).collect();
    let stale = seen.claims.iter().filter(|c| !is_current(slicing, c)).count();
    let mut msg = format!(
        "node_slice_size {}: every one of the {} slices of range {} in network {:?} is claimed \
         by another node ({}), so node {node:?} has none to allocate from",
        slicing.slice_size,
        slicing.slices.len(),
        slicing.range,
        slicing.pool_name,
        holders.join(", ")
    );
    if stale > 0 {
        msg.push_str(&format!(
            " ({stale} claims were cut for an earlier range or size and block the slices they \
             overlap)"
        ));
    }
    msg.push_str("; free the slices of nodes that are gone with `hereabouts slices release`");
    CniError::new(Code::Exhausted, msg)
}

/// The network narrowed to a claim's slice. A current claim narrows `network` itself; a stale
/// one narrows the network as it was cut when the claim was made (its recorded range and
/// slice size, read by the core), so its pool is found.
pub fn claim_network(
    allocator: &mut Allocator,
    network: &NetworkConfig,
    slicing: &Slicing,
    claim: &SliceClaim,
) -> Result<NetworkConfig, CniError> {
    if is_current(slicing, claim) {
        return Ok(allocator.on_node_slice(network, &claim.record.node, &claim.slice)?);
    }
    let ipam = serde_json::json!({
        "range": claim.record.range,
        "node_slice_size": claim.record.slice_size,
        "network_name": network.network_name,
        "enable_overlapping_ranges": network.enable_overlapping_ranges,
    });
    let reading = allocator.read_config(&ipam.to_string()).map_err(|e| {
        let e = CniError::from(e);
        CniError::new(
            Code::Io,
            format!("{}: the claim's range and slice size do not read: {}", claim.key, e.msg),
        )
    })?;
    Ok(allocator.on_node_slice(&reading.network, &claim.record.node, &claim.slice)?)
}
