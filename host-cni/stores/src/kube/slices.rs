//! Node slices on Kubernetes: Whereabouts' `NodeSlicePool` objects, read by the CNI plugin to
//! find its node's slice and written by the node-slice controller (`hereabouts-kube`).
//!
//! The slice maths (how the range is cut, which pool a slice is) is the core's; this module
//! only moves the object and keeps Whereabouts' assignment rules, which are about the object:
//! a node keeps the slice it has; a new node takes the first slice whose `nodeName` is "";
//! a node that is gone leaves its slice with `nodeName` "" (Whereabouts' `assignNodeToSlice`
//! and `removeUnusedNodes`); a changed range or slice size starts the allocations afresh from
//! the new slices (as Whereabouts re-allocates). Every write is conditioned on the
//! `resourceVersion` read, so two controllers, or a controller and a user, never lose a write.
//!
//! The node's name, as Whereabouts' `getNodeName` finds it: `$NODENAME` (trimmed), else the
//! file `<configuration_path>/nodename`, else `/etc/hostname`.

use std::path::PathBuf;

use ::kube::api::{Api, ListParams, PostParams};
use k8s_openapi::api::core::v1::Node;

use super::crd::{NodeSliceAllocation, NodeSlicePool, NodeSlicePoolSpec, NodeSlicePoolStatus};
use super::{KubeError, KubeStore, Request};

/// Why the node's name could not be found.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot tell which node this is: NODENAME is not set, and neither {} nor /etc/hostname can be read ({source})",
    nodename_file.display()
)]
pub struct NodeNameError {
    pub nodename_file: PathBuf,
    pub source: std::io::Error,
}

/// This node's name, as Whereabouts finds it (see the module doc).
pub fn node_name(configuration_path: Option<&str>) -> Result<String, NodeNameError> {
    if let Ok(name) = std::env::var("NODENAME")
        && !name.trim().is_empty()
    {
        return Ok(name.trim().to_string());
    }
    // Whereabouts: fmt.Sprintf("%s/%s", ConfigurationPath, "nodename"), even when it is "".
    let nodename_file = PathBuf::from(format!("{}/nodename", configuration_path.unwrap_or("")));
    let text = std::fs::read_to_string(&nodename_file)
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map_err(|source| NodeNameError { nodename_file: nodename_file.clone(), source })?;
    Ok(text.trim().to_string())
}

/// The slice `node` is given in `pool`, if any.
pub fn slice_of_node<'a>(pool: &'a NodeSlicePool, node: &str) -> Option<&'a str> {
    let status = pool.status.as_ref()?;
    status.allocations.iter().find(|a| a.node_name == node).map(|a| a.slice_range.as_str())
}

/// Fresh allocations: every slice free, in order.
pub fn free_slices(slices: &[String]) -> Vec<NodeSliceAllocation> {
    slices
        .iter()
        .map(|s| NodeSliceAllocation { node_name: String::new(), slice_range: s.clone() })
        .collect()
}

/// Whereabouts' `assignNodeToSlice` for every node, then `removeUnusedNodes`: a node keeps
/// its slice, a new node takes the first free one (none left: it gets none), and the slice of
/// a node not in `nodes` is freed. Returns the nodes left without a slice.
pub fn assign(allocations: &mut [NodeSliceAllocation], nodes: &[String]) -> Vec<String> {
    let mut unassigned = Vec::new();
    for node in nodes {
        if allocations.iter().any(|a| &a.node_name == node) {
            continue;
        }
        match allocations.iter_mut().find(|a| a.node_name.is_empty()) {
            Some(free) => free.node_name = node.clone(),
            None => unassigned.push(node.clone()),
        }
    }
    for allocation in allocations.iter_mut() {
        if !allocation.node_name.is_empty() && !nodes.contains(&allocation.node_name) {
            allocation.node_name.clear();
        }
    }
    unassigned
}

/// A new NodeSlicePool object, every node assigned.
pub fn new_pool(
    name: &str,
    namespace: &str,
    spec: NodeSlicePoolSpec,
    slices: &[String],
    nodes: &[String],
) -> NodeSlicePool {
    let mut allocations = free_slices(slices);
    assign(&mut allocations, nodes);
    let mut pool = NodeSlicePool::new(name, spec);
    pool.metadata.namespace = Some(namespace.to_string());
    pool.status = Some(NodeSlicePoolStatus { allocations });
    pool
}

impl KubeStore {
    fn node_slice_pools(&self) -> Api<NodeSlicePool> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The NodeSlicePool `name` in the store's namespace; None when it does not exist.
    pub fn get_node_slice_pool(&self, name: &str) -> Result<Option<NodeSlicePool>, KubeError> {
        let api = self.node_slice_pools();
        self.request(Request::new("get", "nodeslicepools", name), api.get_opt(name))
    }

    /// The name of every Node in the cluster (`hereabouts slices release --gone` frees the
    /// etcd slice claims of nodes not among them).
    pub fn list_node_names(&self) -> Result<Vec<String>, KubeError> {
        let api: Api<Node> = Api::all(self.client.clone());
        let nodes =
            self.request(Request::new("list", "nodes", ""), api.list(&ListParams::default()))?;
        Ok(nodes.items.into_iter().filter_map(|node| node.metadata.name).collect())
    }

    /// Every NodeSlicePool in the namespace.
    pub fn list_node_slice_pools(&self) -> Result<Vec<NodeSlicePool>, KubeError> {
        let api = self.node_slice_pools();
        let request = Request::new("list", "nodeslicepools", "");
        Ok(self.request(request, api.list(&ListParams::default()))?.items)
    }

    /// Creates a NodeSlicePool (409 AlreadyExists when another writer was first).
    pub fn create_node_slice_pool(&self, pool: &NodeSlicePool) -> Result<NodeSlicePool, KubeError> {
        let api = self.node_slice_pools();
        let name = pool.metadata.name.clone().unwrap_or_default();
        let request = Request::new("create", "nodeslicepools", &name);
        self.request(request, api.create(&PostParams::default(), pool))
    }

    /// Replaces a NodeSlicePool, conditioned on the `resourceVersion` it carries (409 Conflict
    /// when it changed since it was read).
    pub fn replace_node_slice_pool(
        &self,
        pool: &NodeSlicePool,
    ) -> Result<NodeSlicePool, KubeError> {
        let api = self.node_slice_pools();
        let name = pool.metadata.name.clone().unwrap_or_default();
        let request = Request::new("update", "nodeslicepools", &name);
        self.request(request, api.replace(&name, &PostParams::default(), pool))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slices(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{}/28", i * 16)).collect()
    }

    fn nodes(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn new_nodes_take_the_first_free_slice_and_keep_it() {
        let mut allocations = free_slices(&slices(3));
        assert!(assign(&mut allocations, &nodes(&["b", "a"])).is_empty());
        let owners: Vec<&str> = allocations.iter().map(|a| a.node_name.as_str()).collect();
        assert_eq!(owners, ["b", "a", ""]);
        // "b" goes away as "c" arrives: as in Whereabouts, "c" is assigned before "b"'s
        // slice is freed, so it takes the slice that was free already.
        let left = assign(&mut allocations, &nodes(&["a", "c"]));
        assert!(left.is_empty());
        let owners: Vec<&str> = allocations.iter().map(|a| a.node_name.as_str()).collect();
        assert_eq!(owners, ["", "a", "c"]);
        // The next node takes "b"'s old slice, the first free one.
        assign(&mut allocations, &nodes(&["a", "c", "d"]));
        let owners: Vec<&str> = allocations.iter().map(|a| a.node_name.as_str()).collect();
        assert_eq!(owners, ["d", "a", "c"]);
    }

    #[test]
    fn nodes_beyond_the_slices_get_none() {
        let mut allocations = free_slices(&slices(2));
        let left = assign(&mut allocations, &nodes(&["a", "b", "c"]));
        assert_eq!(left, ["c"]);
    }
}
