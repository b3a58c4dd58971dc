//! `hereabouts slices list|release --config FILE`: the node-slice claims of a network with
//! `node_slice_size` on the etcd store, and freeing the claims of nodes that are gone.
//!
//! On etcd a node claims its slice itself on its first ADD and keeps it (see
//! `hereabouts_stores::etcd::slices`); nothing frees the slice of a node that left the
//! cluster. `release` does, for the nodes named (`--node`), or for every node Kubernetes no
//! longer lists (`--gone`, with `--kubeconfig` or in-cluster credentials).
//!
//! A claim is released only when its slice pool holds no address: a node that is not really
//! gone, or whose pods' DELs never came, still has addresses there, and a new node given the
//! slice would hand them out again. Such a claim is kept and reported (exit 1). `--force` is for
//! a node known to be gone for good: it frees every address in the slice's pool first (the
//! core's release of each holder, reservations included), then the claim. The release is
//! conditioned on the claim as read, not on the pool: it is for nodes that are gone, and a
//! node still running that ADDs between the check and the release leaves an address in a pool
//! no claim names any more.
//!
//! The config is read as `status` reads it (a CNI config, conflist or NAD YAML, `-` for stdin,
//! flat file merged); the slicing comes from the core, the claims from the store it names.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use hereabouts_host::Backend;
use hereabouts_host::bindings::{
    CommitOutcome, HeldLease, NetworkConfig, Owner, PoolChange, PoolListing, PoolRef, PoolView,
    Reservation, Slicing, StoreError,
};
use hereabouts_host::config::StoreKind;
use hereabouts_host::error::{CniError, Code};
use hereabouts_stores::etcd::EtcdStore;
use hereabouts_stores::etcd::slices::{SliceClaim, SliceClaims};

use crate::cni::Session;
use crate::cni::slices::{blocked, claim_network, is_current, stale_networks};
use crate::commands::status::{Format, Section, sections};

#[derive(Debug, clap::Args)]
pub struct SlicesArgs {
    #[command(subcommand)]
    pub command: SlicesCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum SlicesCommand {
    /// Every slice of each network: the node that claimed it, and the addresses its pool holds.
    List(ListArgs),
    /// Free the slice claims of nodes that are gone (only slices whose pool is empty).
    Release(ReleaseArgs),
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// A CNI config, conflist or NAD YAML naming the network and its store; `-` reads stdin.
    #[arg(long)]
    pub config: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["node", "gone"])))]
pub struct ReleaseArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Release the claims of this node (repeat for several).
    #[arg(long, value_name = "NAME")]
    pub node: Vec<String>,
    /// Release the claims of every node the Kubernetes API does not list.
    #[arg(long)]
    pub gone: bool,
    /// Kubeconfig for `--gone` (default: in-cluster service account).
    #[arg(long, requires = "gone")]
    pub kubeconfig: Option<PathBuf>,
    /// Free the addresses left in the slice's pool first: only for nodes gone for good.
    #[arg(long)]
    pub force: bool,
    /// Print what would be released; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// One slice, as `list --format json` prints it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct SliceStatus {
    pub network: String,
    pub slice: String,
    /// "" when free.
    pub node: String,
    /// `free`; `blocked` (free, but it shares addresses with a stale claim, so no node is
    /// given it until that claim is released); `claimed`; or `stale` (a claim cut for another
    /// range or slice size: not allocated from, released once its pool is empty).
    pub state: &'static str,
    pub allocated: usize,
}

/// A network's slicing and claims, with the component reading through the same store.
struct Sliced {
    session: Session,
    store: Arc<Mutex<EtcdStore>>,
    slicing: Slicing,
    claims: SliceClaims,
}

/// The store, shared by the component and this command (one connection).
struct Shared(Arc<Mutex<EtcdStore>>);

impl Shared {
    fn with<T>(&self, f: impl FnOnce(&mut EtcdStore) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Backend for Shared {
    fn read_pool(&mut self, pool: &PoolRef, query: &Owner) -> Result<PoolView, StoreError> {
        self.with(|s| s.read_pool(pool, query))
    }
    fn list_slots(&mut self, pool: &PoolRef) -> Result<PoolListing, StoreError> {
        self.with(|s| s.list_slots(pool))
    }
    fn commit(
        &mut self,
        pool: &PoolRef,
        query: &Owner,
        change: &PoolChange,
    ) -> Result<CommitOutcome, StoreError> {
        self.with(|s| s.commit(pool, query, change))
    }
    fn list_reservations(&mut self, network_name: &str) -> Result<Vec<Reservation>, StoreError> {
        self.with(|s| s.list_reservations(network_name))
    }
}

impl Sliced {
    fn open(section: &Section) -> Result<Self, CniError> {
        let conf = &section.conf;
        let mut session = Session::read(conf)?;
        if session.network.node_slice_size.is_none() {
            return Err(CniError::new(
                Code::InvalidConfig,
                format!("{}: ipam.node_slice_size is not set: no node slices", section.label),
            ));
        }
        if conf.ipam.store_kind()? != StoreKind::Etcd {
            return Err(CniError::new(
                Code::InvalidConfig,
                format!(
                    "{}: node slices are claimed by the nodes only on the etcd store (on \
                     Kubernetes, `hereabouts controller` keeps the NodeSlicePool)",
                    section.label
                ),
            ));
        }
        let store = hereabouts_stores::etcd::open(&conf.ipam)?;
        let slicing = session.allocator.node_slicing(&session.network, &section.cni_name)?;
        let claims = store.slice_claims(&slicing.pool_name)?;
        let store = Arc::new(Mutex::new(store));
        session.allocator.set_backend(Box::new(Shared(store.clone())));
        Ok(Self { session, store, slicing, claims })
    }

    fn claim_network(&mut self, claim: &SliceClaim) -> Result<NetworkConfig, CniError> {
        claim_network(&mut self.session.allocator, &self.session.network, &self.slicing, claim)
    }

    /// The addresses the claim's slice pool holds.
    fn leases(&mut self, claim: &SliceClaim) -> Result<Vec<HeldLease>, CniError> {
        let network = self.claim_network(claim)?;
        Ok(self.session.allocator.list_leases(&network)?)
    }

    fn statuses(&mut self) -> Result<Vec<SliceStatus>, CniError> {
        let mut out = Vec::new();
        let network = self.slicing.pool_name.clone();
        let allocator = &mut self.session.allocator;
        let stale = stale_networks(allocator, &self.session.network, &self.slicing, &self.claims)?;
        for slice in self.slicing.slices.clone() {
            let claim = self.claims.of_slice(&slice).cloned();
            let (node, state, allocated) = match &claim {
                Some(claim) => (claim.record.node.clone(), "claimed", self.leases(claim)?.len()),
                None => {
                    // Any node name narrows the network to the slice for the overlap test.
                    let network = &self.session.network;
                    let allocator = &mut self.session.allocator;
                    let state = match blocked(allocator, network, "-", &slice, &stale)? {
                        true => "blocked",
                        false => "free",
                    };
                    (String::new(), state, 0)
                }
            };
            out.push(SliceStatus { network: network.clone(), slice, node, state, allocated });
        }
        let stale: Vec<SliceClaim> =
            self.claims.claims.iter().filter(|c| !is_current(&self.slicing, c)).cloned().collect();
        for claim in stale {
            let allocated = self.leases(&claim)?.len();
            out.push(SliceStatus {
                network: network.clone(),
                slice: claim.slice.clone(),
                node: claim.record.node.clone(),
                state: "stale",
                allocated,
            });
        }
        Ok(out)
    }
}

pub fn exec(args: &SlicesArgs) -> i32 {
    let outcome = match &args.command {
        SlicesCommand::List(list) => self::list(list),
        SlicesCommand::Release(release) => self::release(release),
    };
    match outcome {
        Ok(status) => status,
        Err(e) => {
            eprintln!("hereabouts slices: {} (code {})", e.msg, e.code);
            1
        }
    }
}

fn list(args: &ListArgs) -> Result<i32, CniError> {
    let mut all = Vec::new();
    for section in sections(&args.config.config)? {
        all.extend(Sliced::open(&section)?.statuses()?);
    }
    match args.format {
        Format::Json => println!("{}", serde_json::json!({"slices": all})),
        Format::Text => {
            println!(
                "{:<24} {:<28} {:<24} {:<8} {:>9}",
                "NETWORK", "SLICE", "NODE", "STATE", "ALLOCATED"
            );
            for s in &all {
                let node = if s.node.is_empty() { "-" } else { &s.node };
                println!(
                    "{:<24} {:<28} {:<24} {:<8} {:>9}",
                    s.network, s.slice, node, s.state, s.allocated
                );
            }
        }
    }
    Ok(0)
}

fn release(args: &ReleaseArgs) -> Result<i32, CniError> {
    let live = match args.gone {
        true => Some(kubernetes_nodes(args.kubeconfig.as_deref())?),
        false => None,
    };
    let releasing = |node: &str| match &live {
        Some(live) => !live.iter().any(|n| n == node),
        None => args.node.iter().any(|n| n == node),
    };
    let verb = if args.dry_run { "would release" } else { "released" };
    let mut kept = 0;
    for section in sections(&args.config.config)? {
        let mut sliced = Sliced::open(&section)?;
        let network = sliced.slicing.pool_name.clone();
        let claims: Vec<SliceClaim> =
            sliced.claims.claims.iter().filter(|c| releasing(&c.record.node)).cloned().collect();
        for claim in claims {
            let what = format!(
                "slice {} of network {network:?} (node {})",
                claim.slice, claim.record.node
            );
            let mut held = sliced.leases(&claim)?;
            if !held.is_empty() && !args.force {
                kept += 1;
                println!("kept {what}: {}", holds(&held));
                continue;
            }
            if args.dry_run {
                let freeing = match held.len() {
                    0 => String::new(),
                    n => format!(", freeing the {n} address(es) its pool holds first"),
                };
                println!("{verb} {what}{freeing}");
                continue;
            }
            if !held.is_empty() {
                let narrowed = sliced.claim_network(&claim)?;
                for h in &held {
                    sliced.session.allocator.release(&narrowed, &h.owner)?;
                }
                held = sliced.leases(&claim)?;
                if !held.is_empty() {
                    kept += 1;
                    println!("kept {what}: after freeing, {}", holds(&held));
                    continue;
                }
            }
            let released =
                sliced.store.lock().unwrap_or_else(|p| p.into_inner()).release_slice(&claim)?;
            if released {
                println!("{verb} {what}");
            } else {
                kept += 1;
                println!("kept {what}: the claim changed since it was read; run again");
            }
        }
    }
    Ok(if kept == 0 { 0 } else { 1 })
}

/// Why a claim is kept: the addresses its pool still holds.
fn holds(held: &[HeldLease]) -> String {
    let addresses: Vec<&str> = held.iter().map(|h| h.lease.address.as_str()).collect();
    format!(
        "its pool still holds {} address{} ({}); their pods' DEL frees them, or --force once \
         the node is gone for good",
        held.len(),
        if held.len() == 1 { "" } else { "es" },
        addresses.join(", ")
    )
}

/// The names of the nodes Kubernetes lists.
fn kubernetes_nodes(kubeconfig: Option<&std::path::Path>) -> Result<Vec<String>, CniError> {
    let store = hereabouts_stores::kube::KubeStore::connect(
        kubeconfig,
        hereabouts_stores::kube::Timeouts::default(),
    )?;
    let nodes = store.list_node_names()?;
    if nodes.is_empty() {
        // An empty list is far more likely a wrong cluster than a cluster without nodes.
        return Err(CniError::new(
            Code::Io,
            "the Kubernetes API lists no nodes: refusing to treat every node as gone",
        ));
    }
    Ok(nodes)
}
