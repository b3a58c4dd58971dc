//! The node-slice controller (Whereabouts' `node-controller`, its Fast IPAM): one
//! NodeSlicePool per network whose NetworkAttachmentDefinition sets `node_slice_size`, each
//! node given a slice of the range, the slice of a deleted node freed.
//!
//! [`sync`] is one level-triggered pass over every NAD, every Node and every NodeSlicePool;
//! `hereabouts controller` runs it whenever a NAD or a Node changes (and every minute). A pass
//! does what Whereabouts' `syncHandler` does for each NAD:
//! - no NodeSlicePool yet: create it with every slice, the nodes assigned in name order;
//! - the range or the slice size changed: start afresh from the new slices (Whereabouts
//!   re-allocates every node; pods keep their addresses until they are recreated);
//! - otherwise: each node without a slice takes the first free one, and the slice of a node
//!   that is gone is freed;
//! - a NAD that is gone: its NodeSlicePool is deleted when no other NAD of the network is left.
//!
//! The slice maths is the core's (`node-slicing`); the assignment rules live beside the object
//! in [`hereabouts_stores::kube::slices`]. Every write is conditioned on the `resourceVersion`
//! read (a create on absence), so replicas need no leader election: a lost write is a conflict,
//! and the next pass starts from what won.

use std::collections::BTreeMap;

use hereabouts_host::bindings::describe_config_error;
use hereabouts_host::error::CniError;
use hereabouts_host::runtime::{Allocator, ReadError};
use hereabouts_stores::kube::crd::{NetworkAttachmentDefinition, NodeSlicePool, NodeSlicePoolSpec};
use hereabouts_stores::kube::slices::{assign, free_slices, new_pool};
use hereabouts_stores::kube::{KubeError, KubeStore, Request};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, Preconditions};
use kube::{Api, Resource, ResourceExt};
use serde_json::Value;

/// What one pass did to one NodeSlicePool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created {
        pool: String,
        slices: usize,
    },
    /// Range or slice size changed: every slice handed out afresh.
    Resliced {
        pool: String,
        slices: usize,
    },
    /// Nodes assigned or freed.
    Assigned {
        pool: String,
        assigned: Vec<String>,
        freed: Vec<String>,
    },
    Deleted {
        pool: String,
    },
    /// Another writer changed the object between our read and our write; the next pass
    /// starts from theirs.
    Conflict {
        pool: String,
    },
    /// A NAD that cannot be sliced, or NADs of one network that disagree; nothing written.
    Skipped {
        pool: String,
        reason: String,
    },
}

/// The desired NodeSlicePool of one network, and the NADs that ask for it.
struct Wanted {
    spec: NodeSlicePoolSpec,
    slices: Vec<String>,
    owners: Vec<OwnerReference>,
    /// Set when two NADs of the network disagree (Whereabouts' `checkForMultiNadMismatch`).
    mismatch: Option<String>,
}

/// One pass (see the module doc). Fails only when the API server or the component does;
/// per-pool outcomes are in the answer.
pub fn sync(store: &KubeStore, allocator: &mut Allocator) -> Result<Vec<Change>, CniError> {
    store.restart_budget();
    let nads = list_nads(store)?;
    let mut nodes: Vec<String> = list_nodes(store)?.iter().map(|n| n.name_any()).collect();
    nodes.sort();
    let mut changes = Vec::new();
    let mut wanted: BTreeMap<String, Wanted> = BTreeMap::new();
    for nad in &nads {
        match wanted_by(allocator, nad)? {
            None => {}
            Some(Err((pool, reason))) => changes.push(Change::Skipped { pool, reason }),
            Some(Ok((pool, spec, slices))) => {
                let owner = owner_of(nad);
                match wanted.get_mut(&pool) {
                    None => {
                        wanted.insert(
                            pool,
                            Wanted { spec, slices, owners: vec![owner], mismatch: None },
                        );
                    }
                    Some(w) => {
                        if w.spec != spec {
                            w.mismatch = Some(format!(
                                "NetworkAttachmentDefinitions of network {pool} disagree: range \
                                 {} / node_slice_size {} against range {} / node_slice_size {} \
                                 ({}/{})",
                                w.spec.range,
                                w.spec.slice_size,
                                spec.range,
                                spec.slice_size,
                                nad.namespace().unwrap_or_default(),
                                nad.name_any()
                            ));
                        }
                        w.owners.push(owner);
                    }
                }
            }
        }
    }
    let existing: BTreeMap<String, NodeSlicePool> =
        store.list_node_slice_pools()?.into_iter().map(|p| (p.name_any(), p)).collect();

    for (name, w) in &wanted {
        if let Some(reason) = &w.mismatch {
            changes.push(Change::Skipped { pool: name.clone(), reason: reason.clone() });
            continue;
        }
        let change = match existing.get(name) {
            None => {
                let mut pool = new_pool(name, store.namespace(), w.spec.clone(), &w.slices, &nodes);
                pool.metadata.owner_references = Some(owner_references(&w.owners, &[]));
                match store.create_node_slice_pool(&pool) {
                    Ok(_) => Change::Created { pool: name.clone(), slices: w.slices.len() },
                    Err(e) if e.is_already_exists() => Change::Conflict { pool: name.clone() },
                    Err(e) => return Err(e.into()),
                }
            }
            Some(current) => {
                let mut pool = current.clone();
                let status = pool.status.get_or_insert_with(Default::default);
                let before = status.allocations.clone();
                let resliced = pool.spec != w.spec;
                if resliced {
                    pool.spec = w.spec.clone();
                    status.allocations = free_slices(&w.slices);
                }
                assign(&mut status.allocations, &nodes);
                let after = status.allocations.clone();
                let existing_refs = pool.metadata.owner_references.clone().unwrap_or_default();
                let refs = owner_references(&w.owners, &existing_refs);
                let refs_changed = refs != existing_refs;
                pool.metadata.owner_references = Some(refs);
                if !resliced && before == after && !refs_changed {
                    continue;
                }
                match store.replace_node_slice_pool(&pool) {
                    Ok(_) if resliced => {
                        Change::Resliced { pool: name.clone(), slices: w.slices.len() }
                    }
                    Ok(_) => {
                        let holders =
                            |list: &[hereabouts_stores::kube::crd::NodeSliceAllocation]| {
                                list.iter()
                                    .filter(|a| !a.node_name.is_empty())
                                    .map(|a| a.node_name.clone())
                                    .collect::<Vec<_>>()
                            };
                        let (old, new) = (holders(&before), holders(&after));
                        Change::Assigned {
                            pool: name.clone(),
                            assigned: new.iter().filter(|n| !old.contains(n)).cloned().collect(),
                            freed: old.iter().filter(|n| !new.contains(n)).cloned().collect(),
                        }
                    }
                    Err(e) if e.is_conflict() || e.is_not_found() => {
                        Change::Conflict { pool: name.clone() }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        changes.push(change);
    }

    // NodeSlicePools of NADs that are gone (only those a NAD owns: ours and Whereabouts').
    for (name, pool) in &existing {
        let nad_owned =
            pool.owner_references().iter().any(|r| r.kind == "NetworkAttachmentDefinition");
        if wanted.contains_key(name) || !nad_owned {
            continue;
        }
        match delete_pool(store, pool) {
            Ok(()) => changes.push(Change::Deleted { pool: name.clone() }),
            Err(e) if e.is_conflict() => changes.push(Change::Conflict { pool: name.clone() }),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(changes)
}

type Slicing = Result<(String, NodeSlicePoolSpec, Vec<String>), (String, String)>;

/// The NodeSlicePool a NAD asks for: None when it is not a Whereabouts/Hereabouts IPAM config
/// or sets no `node_slice_size`; `Err((pool, why))` when it cannot be sliced.
fn wanted_by(
    allocator: &mut Allocator,
    nad: &NetworkAttachmentDefinition,
) -> Result<Option<Slicing>, CniError> {
    let label = format!("{}/{}", nad.namespace().unwrap_or_default(), nad.name_any());
    let Ok(config) = serde_json::from_str::<Value>(&nad.spec.config) else { return Ok(None) };
    // As Whereabouts' `LoadIPAMConfiguration`: the config's own `ipam`, of our type.
    let Some(ipam) = config.get("ipam") else { return Ok(None) };
    let is_ours = ipam
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| t == "whereabouts" || t == "hereabouts");
    // Go matches JSON keys case-insensitively; the core's reading does too.
    let sets_slices = ipam
        .as_object()
        .is_some_and(|o| o.keys().any(|k| k.eq_ignore_ascii_case("node_slice_size")));
    if !is_ours || !sets_slices {
        return Ok(None);
    }
    let cni_name = config.get("name").and_then(Value::as_str).unwrap_or_default();
    let network = match allocator.read_config(&ipam.to_string()) {
        Ok(reading) => reading.network,
        Err(ReadError::Config(e)) => {
            let reason = format!("{label}: {}", describe_config_error(&e));
            return Ok(Some(Err((cni_name.to_string(), reason))));
        }
        Err(ReadError::Runtime(e)) => return Err(e.into()),
    };
    if network.node_slice_size.is_none() {
        return Ok(None);
    }
    let slicing = allocator.node_slicing(&network, cni_name)?;
    let spec = NodeSlicePoolSpec { range: slicing.range, slice_size: slicing.slice_size };
    Ok(Some(Ok((slicing.pool_name, spec, slicing.slices))))
}

/// Whereabouts' owner references: the first NAD as the controller, later ones auxiliary.
fn owner_of(nad: &NetworkAttachmentDefinition) -> OwnerReference {
    OwnerReference {
        api_version: NetworkAttachmentDefinition::api_version(&()).to_string(),
        kind: NetworkAttachmentDefinition::kind(&()).to_string(),
        name: nad.name_any(),
        uid: nad.uid().unwrap_or_default(),
        controller: None,
        block_owner_deletion: None,
    }
}

/// `existing` references kept, the NADs' added (the first as controller on a new object).
fn owner_references(nads: &[OwnerReference], existing: &[OwnerReference]) -> Vec<OwnerReference> {
    let mut refs = existing.to_vec();
    for (i, nad) in nads.iter().enumerate() {
        if refs.iter().any(|r| r.name == nad.name && r.kind == nad.kind) {
            continue;
        }
        let mut nad = nad.clone();
        if i == 0 && existing.is_empty() {
            nad.controller = Some(true);
            nad.block_owner_deletion = Some(true);
        }
        refs.push(nad);
    }
    refs
}

fn list_nads(store: &KubeStore) -> Result<Vec<NetworkAttachmentDefinition>, KubeError> {
    let api: Api<NetworkAttachmentDefinition> = Api::all(store.client().clone());
    let request = Request::new("list", "network-attachment-definitions", "");
    Ok(store.request(request, api.list(&ListParams::default()))?.items)
}

fn list_nodes(store: &KubeStore) -> Result<Vec<Node>, KubeError> {
    let api: Api<Node> = Api::all(store.client().clone());
    Ok(store.request(Request::new("list", "nodes", ""), api.list(&ListParams::default()))?.items)
}

fn delete_pool(store: &KubeStore, pool: &NodeSlicePool) -> Result<(), KubeError> {
    let api: Api<NodeSlicePool> = Api::namespaced(store.client().clone(), store.namespace());
    let name = pool.name_any();
    let params = DeleteParams {
        preconditions: Some(Preconditions { resource_version: pool.resource_version(), uid: None }),
        ..DeleteParams::default()
    };
    store
        .request(Request::new("delete", "nodeslicepools", &name), api.delete(&name, &params))
        .map(|_| ())
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Created { pool, slices } => {
                write!(f, "NodeSlicePool {pool}: created with {slices} slices")
            }
            Change::Resliced { pool, slices } => write!(
                f,
                "NodeSlicePool {pool}: range or slice size changed, every node re-assigned \
                 ({slices} slices)"
            ),
            Change::Assigned { pool, assigned, freed } => write!(
                f,
                "NodeSlicePool {pool}: slices given to {assigned:?}, freed from {freed:?}"
            ),
            Change::Deleted { pool } => {
                write!(
                    f,
                    "NodeSlicePool {pool}: deleted (its NetworkAttachmentDefinitions are gone)"
                )
            }
            Change::Conflict { pool } => {
                write!(f, "NodeSlicePool {pool}: changed by another writer; retrying")
            }
            Change::Skipped { pool, reason } => {
                write!(f, "NodeSlicePool {pool}: skipped: {reason}")
            }
        }
    }
}

/// How long the controller waits, without events, before a pass anyway.
const RESYNC: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs the node-slice controller until the watches end: a pass at start, on every NAD or
/// Node event (events arriving together make one pass), a retry pass after a conflict, and
/// one every minute.
pub fn run(store: KubeStore, watch_store: KubeStore) -> Result<(), CniError> {
    use std::sync::mpsc;
    let mut allocator = Allocator::new(Box::new(store.clone()))?;
    let (poke, pokes) = mpsc::channel::<()>();
    let nodes_poke = poke.clone();
    let nodes_store = watch_store.clone();
    std::thread::spawn(move || watch::<Node>(&nodes_store, &nodes_poke));
    std::thread::spawn(move || watch::<NetworkAttachmentDefinition>(&watch_store, &poke));
    loop {
        match sync(&store, &mut allocator) {
            Ok(changes) => {
                let conflicted = changes.iter().any(|c| matches!(c, Change::Conflict { .. }));
                changes.iter().for_each(|c| println!("{c}"));
                if conflicted {
                    continue;
                }
            }
            Err(e) => eprintln!("hereabouts controller: node slices: {} (code {})", e.msg, e.code),
        }
        match pokes.recv_timeout(RESYNC) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => while pokes.try_recv().is_ok() {},
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    Err(CniError::new(hereabouts_host::error::Code::Internal, "the node and NAD watches ended"))
}

/// Pokes `poke` on every event of `K`, until the receiver hangs up.
fn watch<K>(store: &KubeStore, poke: &std::sync::mpsc::Sender<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    crate::watch::watch_all::<K>(store, |_| poke.send(()).is_ok());
}
