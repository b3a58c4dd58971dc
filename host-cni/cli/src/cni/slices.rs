//! Node slices (`node_slice_size`) in the CNI plugin on Kubernetes: which slice this node
//! allocates from, as Whereabouts finds it — the node's name (`$NODENAME`, else
//! `<configuration_path>/nodename`, else `/etc/hostname`), the network's NodeSlicePool (named by
//! `network_name`, else the CNI network's `name`), and that node's entry in it. The core says
//! how the range is cut and which IPPool the slice is; this module only reads the object.
//!
//! A node without a slice yet is "try again later" (CNI 11): the controller assigns one when
//! it sees the node, and the runtime retries the sandbox.

use hereabouts_host::bindings::NetworkConfig;
use hereabouts_host::error::{CniError, Code};
use hereabouts_host::runtime::Allocator;
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
    let node = match node_name(conf.ipam.configuration_path.as_deref()) {
        Ok(node) if !node.is_empty() => node,
        Ok(_) => {
            return Ok(Err(CniError::new(
                Code::InvalidEnvironment,
                "node_slice_size: the node's name is empty (NODENAME, the nodename file, /etc/hostname)",
            )));
        }
        Err(e) => {
            return Ok(Err(CniError::new(
                Code::InvalidEnvironment,
                format!("node_slice_size: {e}"),
            )));
        }
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
