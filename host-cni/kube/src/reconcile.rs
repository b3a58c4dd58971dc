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
//! Claimed allocations and reservations (container id `ipamclaim:<namespace>/<name>`) follow
//! their IPAMClaim, not their pod ([`pods::claimed`]): the claims are listed, after the pools and
//! reservations, only when something is claimed; this pass is what frees a deleted claim's
//! address (the controller frees one too when it looks at the claim's pod).
//!
//! StatefulSet members' allocations and reservations (container id
//! `statefulset:<namespace>/<set>/<N>/…`, `persistentStatefulSetIPs`) follow their StatefulSet
//! and the retention policy in the id ([`pods::stateful`]); the StatefulSets are listed, after
//! the pools and reservations, only when a member holds something. A member's address whose
//! policy is `Retain` is never freed here: an operator who wants it back deletes the IPPool
//! allocation (and its reservation) by hand — no command does it.
//!
//! Every free (not in a dry run) is reported as a Kubernetes Event ([`crate::events`]).
//!
//! [`reconcile_stored`] is the same pass for networks whose allocations live in etcd: the
//! networks (and their stores) come from a CNI config, the pods still from the API server.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use hereabouts_host::bindings::{HeldLease, NetworkConfig, Owner, Reservation};
use hereabouts_host::error::CniError;
use hereabouts_host::runtime::Allocator;
use hereabouts_stores::kube::statefulsets::{self, Ordinals};
use hereabouts_stores::kube::{KubeStore, Timeouts, claims, crd, reservation_owner};
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
    reconcile_with(&connect(kubeconfig)?, options)
}

/// The API server (a kubeconfig, else in-cluster), with the timeouts of a pass: listing every
/// pod of a large cluster can take longer than a CNI call may.
pub fn connect(kubeconfig: Option<&Path>) -> Result<KubeStore, CniError> {
    let timeouts = Timeouts {
        request: Duration::from_secs(60),
        total: Duration::from_secs(300),
        ..Timeouts::default()
    };
    Ok(KubeStore::connect(kubeconfig, timeouts)?)
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
    let owners = pools
        .iter()
        .flat_map(|pool| pool.spec.allocations.values().map(|a| a.id.as_str()))
        .chain(reservations.iter().map(|r| r.spec.containerid.as_str()));
    let claims = Persistent::list(store, owners)?;
    let (pods, nodes) = pods_and_nodes(store, &holders, options)?;
    drop(holders);

    let mut report = Report { dry_run, ..Report::default() };
    let mut networks = BTreeSet::new();
    // The reservation each kept allocation backs: its name, and who holds the allocation.
    let mut backing: HashMap<String, Vec<Owner>> = HashMap::new();
    let mut allocator = Allocator::new(Box::new(store.clone()))?;
    let events = crate::events::FreeEvents::new(store);
    let slices = crate::SlicePools::list(store)?;
    for pool in &pools {
        let crate::PoolNetwork { object, network } =
            match crate::pool_network(&mut allocator, pool, &slices)? {
                Ok(addressed) => addressed,
                Err(_) => {
                    report.skipped_pools.push(pool.metadata.name.clone().unwrap_or_default());
                    continue;
                }
            };
        networks.insert(network.network_name.clone());
        for held in allocator.list_leases(&network)? {
            report.checked += 1;
            let Some(verdict) = allocation_to_free(&held, &claims, &pods, &nodes) else {
                report.kept += 1;
                let name = crd::reservation_name(&network.network_name, &held.lease.address);
                backing.entry(name).or_default().push(held.owner.clone());
                continue;
            };
            let freed = Freed::allocation(object.clone(), &held, &verdict);
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
        let Some(verdict) = reservation_to_free(backed, &holder, &claims, &pods, &nodes) else {
            report.kept += 1;
            continue;
        };
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

/// The pods `holders` names, as facts by podref, and then every node (after the pods: a pod
/// scheduled on a node that joined meanwhile finds its node).
fn pods_and_nodes(
    store: &KubeStore,
    holders: &HashSet<&str>,
    options: &Options,
) -> Result<(HashMap<String, pods::PodFacts>, pods::Nodes), CniError> {
    let pods = crate::list_pod_facts(store, &|podref| holders.contains(podref))?
        .into_iter()
        .map(|pod| (pod.podref.clone(), pod))
        .collect();
    store.restart_budget();
    let nodes = pods::Nodes {
        known: Some(crate::list_node_facts(store)?),
        not_ready_grace: options.not_ready_grace,
        now: crate::now_seconds(),
    };
    Ok((pods, nodes))
}

/// The owners that outlive their pods: the IPAMClaims that exist, by "namespace/name", and
/// the StatefulSets that exist, by "namespace/name", with their ordinals.
#[derive(Debug, Default)]
struct Persistent {
    claims: HashSet<String>,
    sets: HashMap<String, Ordinals>,
}

impl Persistent {
    /// Lists the claims when one of `owners` (container ids) is a claim's, the StatefulSets
    /// when one is a member's. No claim exists when the IPAMClaim CRD is not installed
    /// (deleting a CRD deletes its objects).
    fn list<'a>(api: &KubeStore, owners: impl Iterator<Item = &'a str>) -> Result<Self, CniError> {
        let (mut claimed, mut membered) = (false, false);
        for id in owners {
            claimed |= claims::claim_of_owner(id).is_some();
            membered |= id.starts_with(statefulsets::OWNER_PREFIX);
        }
        let mut persistent = Self::default();
        if claimed {
            api.restart_budget();
            let listed = match api.list_claims() {
                Ok(listed) => listed,
                Err(e) if e.is_not_found() => Vec::new(),
                Err(e) => return Err(e.into()),
            };
            persistent.claims = listed.iter().filter_map(|c| namespaced(&c.metadata)).collect();
        }
        if membered {
            api.restart_budget();
            let listed = api.list_statefulsets()?;
            persistent.sets = listed
                .iter()
                .filter_map(|set| Some((namespaced(&set.metadata)?, Ordinals::of(set))))
                .collect();
        }
        Ok(persistent)
    }

    /// The verdict for an owner that is a claim's or a StatefulSet member's (`pod`: the pod
    /// rule's, which a member's also needs); None for any other owner.
    fn verdict(&self, owner: &Owner, pod: impl FnOnce() -> pods::Verdict) -> Option<pods::Verdict> {
        if let Some((namespace, name)) = claims::claim_of_owner(&owner.container_id) {
            return Some(pods::claimed(self.claims.contains(&format!("{namespace}/{name}"))));
        }
        let member = statefulsets::member_of_owner(&owner.container_id)?;
        Some(pods::stateful(&member, self.sets.get(&member.set_ref()), pod()))
    }
}

/// An object's "namespace/name".
fn namespaced(
    metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<String> {
    Some(format!("{}/{}", metadata.namespace.as_deref()?, metadata.name.as_deref()?))
}

/// Why `held` is to be freed; None to keep it. A claimed allocation follows its claim, a
/// StatefulSet member's its set. Without a podref nobody can tell whose it is, and it is kept
/// (Whereabouts' rule too).
fn allocation_to_free(
    held: &HeldLease,
    claims: &Persistent,
    pods: &HashMap<String, pods::PodFacts>,
    nodes: &pods::Nodes,
) -> Option<pods::Verdict> {
    let pod = || pods::allocation(pods.get(&held.owner.podref), &held.lease.address, nodes);
    if let Some(verdict) = claims.verdict(&held.owner, pod) {
        return Some(verdict).filter(pods::Verdict::is_free);
    }
    if held.owner.podref.is_empty() {
        return None;
    }
    Some(pod()).filter(pods::Verdict::is_free)
}

/// Why a reservation held by `holder` is to be freed; None to keep it. One a kept allocation
/// backs goes with that allocation.
fn reservation_to_free(
    backed: bool,
    holder: &Owner,
    claims: &Persistent,
    pods: &HashMap<String, pods::PodFacts>,
    nodes: &pods::Nodes,
) -> Option<pods::Verdict> {
    if backed {
        return None;
    }
    let pod = || pods::reservation(pods.get(&holder.podref), nodes);
    if let Some(verdict) = claims.verdict(holder, pod) {
        return Some(verdict).filter(pods::Verdict::is_free);
    }
    Some(pod()).filter(pods::Verdict::is_free)
}

// ---- networks whose allocations live outside the API server (etcd) ------------------------

/// One network of a CNI config whose store is not the API server, with its store.
pub struct StoredNetwork {
    /// The CNI network's name: reports name the allocation's object as `<label> <range>`.
    pub label: String,
    /// The configs that address the network's pools: the network itself, and with node
    /// slices each node's slice (the core's narrowing of it). One `network_name`.
    pub networks: Vec<NetworkConfig>,
    /// The allocator over the network's store: lists and frees its allocations.
    pub allocator: Allocator,
    /// The same store, for the network's overlapping-range reservations.
    pub reservations: Box<dyn StoredReservations>,
}

/// The reservations of a store that is not the API server. The allocator frees the
/// reservation of every allocation it frees; this is for the ones no allocation backs.
pub trait StoredReservations {
    /// Every reservation of `network_name`.
    fn list(&mut self, network_name: &str) -> Result<Vec<Reservation>, CniError>;
    /// Deletes `reservation` if it is still held exactly as listed; false when it changed
    /// hands or is gone.
    fn delete_if_unchanged(&mut self, reservation: &Reservation) -> Result<bool, CniError>;
}

/// One pass over the allocations and reservations of `networks` (their stores named by a CNI
/// config; etcd), against the pods and nodes the API server `api` lists. The same order and
/// policy as [`reconcile_with`]: the store is read before the pods; each free is the
/// allocator's conditional `release`, or a reservation's delete conditioned on its value;
/// Events go on the pod when it exists (there is no IPPool object to report on otherwise).
///
/// Networks that share a `network_name` share its reservations, and are expected to share a
/// store (as they do in Whereabouts, where the name scopes the reservations).
pub fn reconcile_stored(
    api: &KubeStore,
    networks: &mut [StoredNetwork],
    options: &Options,
) -> Result<Report, CniError> {
    // Per network, per config: its leases.
    let mut leases: Vec<Vec<Vec<HeldLease>>> = Vec::with_capacity(networks.len());
    // Each network_name's reservations, listed once, from the first network that names it.
    let mut reservations: Vec<(usize, Reservation)> = Vec::new();
    let mut listed: HashSet<String> = HashSet::new();
    for (index, stored) in networks.iter_mut().enumerate() {
        let mut of_configs = Vec::with_capacity(stored.networks.len());
        for network in &stored.networks {
            of_configs.push(stored.allocator.list_leases(network)?);
        }
        leases.push(of_configs);
        let Some(network_name) = stored.networks.first().map(|n| n.network_name.clone()) else {
            continue;
        };
        if listed.insert(network_name.clone()) {
            let of_network = stored.reservations.list(&network_name)?;
            reservations.extend(of_network.into_iter().map(|r| (index, r)));
        }
    }
    let holders: HashSet<&str> = leases
        .iter()
        .flatten()
        .flatten()
        .map(|held| held.owner.podref.as_str())
        .chain(reservations.iter().map(|(_, r)| r.owner.podref.as_str()))
        .collect();
    let owners = leases
        .iter()
        .flatten()
        .flatten()
        .map(|held| held.owner.container_id.as_str())
        .chain(reservations.iter().map(|(_, r)| r.owner.container_id.as_str()));
    let claims = Persistent::list(api, owners)?;
    let (pods, nodes) = pods_and_nodes(api, &holders, options)?;
    drop(holders);

    let dry_run = options.dry_run;
    let mut report = Report { dry_run, ..Report::default() };
    let events = crate::events::FreeEvents::new(api);
    // The kept allocations, by network_name and address: what backs a reservation.
    let mut backing: HashMap<(String, String), Vec<Owner>> = HashMap::new();
    let mut released: HashSet<(String, String, String)> = HashSet::new();
    for (stored, of_configs) in networks.iter_mut().zip(leases) {
        for (network, held_leases) in stored.networks.iter().zip(of_configs) {
            let network_name = network.network_name.clone();
            for held in held_leases {
                report.checked += 1;
                let Some(verdict) = allocation_to_free(&held, &claims, &pods, &nodes) else {
                    report.kept += 1;
                    backing
                        .entry((network_name.clone(), held.lease.address.clone()))
                        .or_default()
                        .push(held.owner);
                    continue;
                };
                let freed = Freed::allocation(
                    format!("{} {}", stored.label, held.lease.range),
                    &held,
                    &verdict,
                );
                // Its reservation goes with it (or would, in a dry run).
                released.insert((
                    network_name.clone(),
                    held.owner.container_id.clone(),
                    held.owner.ifname.clone(),
                ));
                if !dry_run {
                    stored.allocator.release(network, &held.owner)?;
                    if pods.contains_key(&freed.podref) {
                        events.freed(api, &freed, true);
                    }
                }
                report.freed.push(freed);
            }
        }
    }

    for (index, reservation) in reservations {
        let holder = &reservation.owner;
        let released_with_allocation = released.contains(&(
            reservation.network_name.clone(),
            holder.container_id.clone(),
            holder.ifname.clone(),
        ));
        if holder.podref.is_empty() || released_with_allocation {
            continue;
        }
        report.checked += 1;
        let backed = backing
            .get(&(reservation.network_name.clone(), reservation.address.clone()))
            .is_some_and(|owners| owners.iter().any(|o| backs(o, holder)));
        let Some(verdict) = reservation_to_free(backed, holder, &claims, &pods, &nodes) else {
            report.kept += 1;
            continue;
        };
        let freed = Freed {
            object: format!("reservation {}/{}", reservation.network_name, reservation.address),
            kind: "reservation",
            address: reservation.address.clone(),
            podref: holder.podref.clone(),
            container_id: holder.container_id.clone(),
            ifname: holder.ifname.clone(),
            reason: verdict.reason().to_string(),
        };
        if !dry_run {
            if !networks[index].reservations.delete_if_unchanged(&reservation)? {
                // Changed hands since it was listed: no longer stranded.
                report.kept += 1;
                continue;
            }
            if pods.contains_key(&freed.podref) {
                events.freed(api, &freed, true);
            }
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
