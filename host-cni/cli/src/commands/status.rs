//! `hereabouts status --config FILE [--format json|text] [--who ADDRESS]`: how full each pool
//! of a network is, who holds an address, and what in the store does not add up.
//!
//! The config is read as `check` reads it (a CNI config, a conflist or NetworkAttachmentDefinition
//! YAML; `-` is stdin) and each ipam section as the plugin reads it (flat file merged, the
//! store it names opened: local, etcd or Kubernetes). Everything about ranges comes from the
//! component: the leases (`list-leases`), the pool each range maps to (the pool names the
//! core asks the store for, recorded on the way), and capacity and free (`plan`). The host
//! only counts and compares what the store holds:
//! - a reservation with no allocation behind it (the Kubernetes store strands one when a
//!   process dies between its two writes; `hereabouts reconcile` frees it);
//! - one attachment (container id + ifname) holding two addresses in one pool.
//!
//! And on the Kubernetes store, the persistent addresses no pod holds: an IPAMClaim's or a
//! StatefulSet member's allocation whose pod is gone (a stopped VM, a member scaled to zero).
//! They are not free, and not in use: the answer to "why did that address not come back".
//! `plan` counts them with the same words when given as the plan document's `persistent`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use hereabouts_host::Backend;
use hereabouts_host::bindings::{
    CommitOutcome, HeldLease, Owner, PlanRequest, PoolChange, PoolListing, PoolRef, PoolView,
    Reservation, StoreError,
};
use hereabouts_host::error::{CniError, Code};

use hereabouts_host::bindings::NetworkConfig;
use hereabouts_host::config::{FLAT_FILE_PATHS, StoreKind};

use crate::cni::netconf::NetConf;
use crate::cni::{Session, slices};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Text,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// A CNI config, conflist or NAD YAML naming the network and its store; `-` reads stdin.
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Name the holder of this address instead (container id, podref, ifname).
    #[arg(long, value_name = "ADDRESS")]
    pub who: Option<String>,
}

/// One pool, as `--format json` prints it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct PoolStatus {
    pub network: String,
    pub network_name: String,
    pub range: String,
    pub pool: String,
    pub capacity: String,
    pub allocated: usize,
    pub free: String,
    pub reservations: usize,
    /// Persistent addresses no pod holds (see the module doc).
    pub persistent: Vec<Kept>,
    pub inconsistent: Vec<String>,
}

/// A persistent address no pod holds: what keeps it, and the pod that had it last.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Kept {
    pub address: String,
    pub kept_for: String,
    pub podref: String,
}

/// The holder of an address (`--who`).
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Holder {
    pub network: String,
    pub address: String,
    pub pool: String,
    pub container_id: String,
    pub podref: String,
    pub ifname: String,
    /// What keeps it when it is a persistent address (an IPAMClaim, a StatefulSet member).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_for: Option<String>,
}

/// What keeps a persistent allocation, from its owner's container id: an IPAMClaim or a
/// StatefulSet member; None for an ordinary container's.
pub fn kept_for(container_id: &str) -> Option<String> {
    use hereabouts_stores::kube::{claims, statefulsets};
    if let Some((namespace, name)) = claims::claim_of_owner(container_id) {
        return Some(format!("IPAMClaim {namespace}/{name}"));
    }
    statefulsets::member_of_owner(container_id)
        .map(|m| format!("StatefulSet {}/{} ordinal {}", m.namespace, m.set, m.ordinal))
}

/// The persistent leases of `held` that no pod uses now, as the pod policy reads each pod
/// (Kubernetes store only: the others have no persistent owners).
fn kept_unheld(conf: &NetConf, held: &[HeldLease]) -> Result<Vec<(String, Kept)>, CniError> {
    let persistent: Vec<(&HeldLease, String)> =
        held.iter().filter_map(|h| kept_for(&h.owner.container_id).map(|why| (h, why))).collect();
    if persistent.is_empty() || conf.ipam.store_kind()? != StoreKind::Kubernetes {
        return Ok(Vec::new());
    }
    let store = hereabouts_stores::kube::open(&conf.ipam)?;
    let mut kept = Vec::new();
    for (h, why) in persistent {
        if !hereabouts_kube::pod_uses(&store, &h.owner.podref, &h.lease.address)? {
            let one = Kept {
                address: h.lease.address.clone(),
                kept_for: why,
                podref: h.owner.podref.clone(),
            };
            kept.push((h.lease.range.clone(), one));
        }
    }
    Ok(kept)
}

/// The store, shared between the component and this command, and the pools the core reads
/// from it (so the pool each range maps to is the core's answer).
struct Recording {
    inner: Arc<Mutex<Box<dyn Backend>>>,
    pools: Arc<Mutex<Vec<PoolRef>>>,
}

fn locked(store: &Mutex<Box<dyn Backend>>) -> std::sync::MutexGuard<'_, Box<dyn Backend>> {
    store.lock().unwrap_or_else(|p| p.into_inner())
}

impl Backend for Recording {
    fn read_pool(&mut self, pool: &PoolRef, query: &Owner) -> Result<PoolView, StoreError> {
        locked(&self.inner).read_pool(pool, query)
    }
    fn list_slots(&mut self, pool: &PoolRef) -> Result<PoolListing, StoreError> {
        self.pools.lock().unwrap().push(pool.clone());
        locked(&self.inner).list_slots(pool)
    }
    fn commit(
        &mut self,
        pool: &PoolRef,
        query: &Owner,
        change: &PoolChange,
    ) -> Result<CommitOutcome, StoreError> {
        // A status view never writes.
        let _ = (pool, query, change);
        Err(StoreError::Failed("status is read-only".into()))
    }
    fn list_reservations(&mut self, network_name: &str) -> Result<Vec<Reservation>, StoreError> {
        locked(&self.inner).list_reservations(network_name)
    }
}

/// What the store holds for the config's networks: each pool, and each lease with the label
/// of the network it belongs to.
pub struct Found {
    pub pools: Vec<PoolStatus>,
    pub leases: Vec<(String, HeldLease)>,
}

/// One ipam section of a `--config` file.
pub struct Section {
    /// Who declares it (`network NAME`, `NAD namespace/name`); `conf.name` is this label.
    pub label: String,
    /// The CNI network's `name` as a runtime passes it (names the node slices of a network
    /// without `network_name`): the config's `name`.
    pub cni_name: String,
    pub conf: NetConf,
}

/// Every ipam section of `config` (a CNI config, conflist or NAD YAML; `-` is stdin), read as
/// the plugin reads it (flat file merged).
pub fn sections(config: &Path) -> Result<Vec<Section>, CniError> {
    let (sections, problems) = hereabouts_check::ipam_sections(&[config.to_path_buf()])
        .map_err(|e| CniError::new(Code::Io, e.to_string()))?;
    if let Some(problem) = problems.first() {
        return Err(CniError::new(Code::Decode, problem.clone()));
    }
    if sections.is_empty() {
        return Err(CniError::new(
            Code::InvalidConfig,
            format!("{}: no ipam section of type hereabouts or whereabouts", config.display()),
        ));
    }
    let mut read = Vec::new();
    for section in sections {
        let text = serde_json::json!({"cniVersion": "1.0.0", "name": section.label,
            "ipam": section.ipam})
        .to_string();
        let conf = NetConf::parse(&text, FLAT_FILE_PATHS)
            .map_err(|e| CniError::new(e.code, format!("{}: {}", section.label, e.msg)))?;
        read.push(Section { label: section.label, cni_name: section.cni_name, conf });
    }
    Ok(read)
}

/// Every ipam section of `args.config`, with its pools.
pub fn pools(args: &StatusArgs) -> Result<Found, CniError> {
    let mut statuses = Vec::new();
    let mut leases = Vec::new();
    for section in sections(&args.config)? {
        let (mut pools, held) = network_pools(&section)?;
        statuses.append(&mut pools);
        leases.extend(held.into_iter().map(|h| (section.label.clone(), h)));
    }
    Ok(Found { pools: statuses, leases })
}

fn network_pools(section: &Section) -> Result<(Vec<PoolStatus>, Vec<HeldLease>), CniError> {
    let conf = &section.conf;
    let mut session = Session::read(conf)?;
    // One connection to the store: the component reads through it, and so does this command.
    let (store, networks) = open_networks(&mut session, section)?;
    let store = Arc::new(Mutex::new(store));
    let recorded = Arc::new(Mutex::new(Vec::new()));
    session
        .allocator
        .set_backend(Box::new(Recording { inner: store.clone(), pools: recorded.clone() }));
    let mut held = Vec::new();
    let mut pools = Vec::new();
    for network in &networks {
        held.extend(session.allocator.list_leases(network)?);
        pools.extend(recorded.lock().unwrap().drain(..).map(|pool| (network, pool)));
    }
    let network_name = &session.network.network_name;
    let reservations = locked(&store).list_reservations(network_name).map_err(CniError::from)?;
    let kept = kept_unheld(conf, &held)?;

    let mut statuses = Vec::new();
    for (network, pool) in pools {
        let in_pool: Vec<&HeldLease> =
            held.iter().filter(|h| h.lease.range == pool.range).collect();
        let kept_in_pool: Vec<Kept> =
            kept.iter().filter(|(range, _)| *range == pool.range).map(|(_, k)| k.clone()).collect();
        let request = PlanRequest {
            network: network.clone(),
            allocated: in_pool.iter().map(|h| h.lease.address.clone()).collect(),
            persistent: kept_in_pool.iter().map(|k| k.address.clone()).collect(),
            preview: 0,
        };
        let report = session.allocator.plan(&request)?;
        let Some(report) = report.into_iter().find(|r| r.range == pool.range) else { continue };
        let mut inconsistent = Vec::new();
        let mut by_attachment: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
        for h in &in_pool {
            by_attachment
                .entry((&h.owner.container_id, &h.owner.ifname))
                .or_default()
                .push(&h.lease.address);
        }
        for ((container_id, ifname), addresses) in by_attachment {
            if addresses.len() > 1 {
                inconsistent.push(format!(
                    "container {container_id} ({ifname}) holds {} addresses: {}",
                    addresses.len(),
                    addresses.join(", ")
                ));
            }
        }
        let in_range: Vec<&Reservation> =
            reservations.iter().filter(|r| report_contains(&report.range, &r.address)).collect();
        for reservation in &in_range {
            let backed = held.iter().any(|h| {
                h.lease.address == reservation.address && backs(&h.owner, &reservation.owner)
            });
            if !backed {
                inconsistent.push(format!(
                    "reservation of {} (pod {}, container {}) has no allocation behind it",
                    reservation.address, reservation.owner.podref, reservation.owner.container_id
                ));
            }
        }
        statuses.push(PoolStatus {
            network: conf.name.clone(),
            network_name: network_name.clone(),
            range: pool.range.clone(),
            pool: pool.name.clone(),
            capacity: report.capacity,
            allocated: in_pool.len(),
            free: report.free,
            reservations: in_range.len(),
            persistent: kept_in_pool,
            inconsistent,
        });
    }
    Ok((statuses, held))
}

/// The store and the networks whose pools status shows: the network itself, or with
/// `node_slice_size` on etcd every claimed slice (current or stale) narrowed to its node.
pub fn open_networks(
    session: &mut Session,
    section: &Section,
) -> Result<(Box<dyn Backend>, Vec<NetworkConfig>), CniError> {
    let conf = &section.conf;
    if session.network.node_slice_size.is_none() || conf.ipam.store_kind()? != StoreKind::Etcd {
        return Ok((hereabouts_stores::open(&conf.ipam)?, vec![session.network.clone()]));
    }
    let store = hereabouts_stores::etcd::open(&conf.ipam)?;
    let slicing = session.allocator.node_slicing(&session.network, &section.cni_name)?;
    let mut networks = Vec::new();
    for claim in store.slice_claims(&slicing.pool_name).map_err(CniError::from)?.claims {
        networks.push(slices::claim_network(
            &mut session.allocator,
            &session.network,
            &slicing,
            &claim,
        )?);
    }
    Ok((Box::new(store), networks))
}

/// Whether `address` falls in the normalised `range` (a CIDR the core printed).
fn report_contains(range: &str, address: &str) -> bool {
    match (range.parse::<ipnet::IpNet>(), address.parse::<std::net::IpAddr>()) {
        (Ok(net), Ok(address)) => net.contains(&address),
        _ => false,
    }
}

/// Whether an allocation held by `allocation` backs a reservation held by `holder`: the same
/// attachment, or for a reservation Whereabouts wrote (no container id) the same pod and ifname.
fn backs(allocation: &Owner, holder: &Owner) -> bool {
    (allocation.container_id == holder.container_id && allocation.ifname == holder.ifname)
        || (holder.container_id.is_empty()
            && allocation.podref == holder.podref
            && allocation.ifname == holder.ifname)
}

pub fn exec(args: &StatusArgs) -> i32 {
    let Found { pools, leases: held } = match pools(args) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("hereabouts status: {} (code {})", e.msg, e.code);
            println!("{}", e.to_json("1.0.0"));
            return 1;
        }
    };
    if let Some(address) = &args.who {
        let holders: Vec<Holder> = held
            .iter()
            .filter(|(_, h)| &h.lease.address == address)
            .map(|(network, h)| Holder {
                network: network.clone(),
                address: h.lease.address.clone(),
                pool: pools
                    .iter()
                    .find(|p| p.network == *network && p.range == h.lease.range)
                    .map(|p| p.pool.clone())
                    .unwrap_or_default(),
                container_id: h.owner.container_id.clone(),
                podref: h.owner.podref.clone(),
                ifname: h.owner.ifname.clone(),
                kept_for: kept_for(&h.owner.container_id),
            })
            .collect();
        match args.format {
            Format::Json => println!("{}", serde_json::json!({"holders": holders})),
            Format::Text if holders.is_empty() => println!("{address}: not allocated"),
            Format::Text => {
                for h in &holders {
                    let kept = h.kept_for.as_ref().map(|k| format!(", kept for {k}"));
                    println!(
                        "{} in {} (pool {}): container {}, pod {}, ifname {}{}",
                        h.address,
                        h.network,
                        h.pool,
                        h.container_id,
                        h.podref,
                        h.ifname,
                        kept.unwrap_or_default()
                    );
                }
            }
        }
        return if holders.is_empty() { 3 } else { 0 };
    }
    match args.format {
        Format::Json => println!("{}", serde_json::json!({"pools": pools})),
        Format::Text => {
            println!(
                "{:<24} {:<14} {:<20} {:<28} {:>10} {:>9} {:>10} {:>12}",
                "NETWORK",
                "NETWORK_NAME",
                "RANGE",
                "POOL",
                "CAPACITY",
                "ALLOCATED",
                "FREE",
                "RESERVATIONS"
            );
            for p in &pools {
                println!(
                    "{:<24} {:<14} {:<20} {:<28} {:>10} {:>9} {:>10} {:>12}",
                    p.network,
                    if p.network_name.is_empty() { "-" } else { &p.network_name },
                    p.range,
                    p.pool,
                    p.capacity,
                    p.allocated,
                    p.free,
                    p.reservations
                );
                for k in &p.persistent {
                    println!(
                        "  persistent: {} kept for {}; no pod holds it (last: {})",
                        k.address, k.kept_for, k.podref
                    );
                }
                for problem in &p.inconsistent {
                    println!("  inconsistent: {problem}");
                }
            }
        }
    }
    if pools.iter().any(|p| !p.inconsistent.is_empty()) { 2 } else { 0 }
}
