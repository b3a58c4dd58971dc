//! The CNI plugin: what `hereabouts` does when a runtime (or Multus, or a main plugin such as
//! `bridge`) calls it with `CNI_COMMAND` set.
//!
//! Each verb reads top to bottom like the reference plugins' `cmdAdd`: parse the environment
//! and the config → open the store → ask the allocator component → print the result. Nothing
//! is touched before the whole input is validated. Every failure, a panic included, leaves as
//! one CNI error JSON on stdout with a non-zero exit; logs go to `log_file` or stderr only.

pub mod claim;
mod del;
pub mod env;
mod limits;
mod log;
pub mod netconf;
pub mod result;
pub mod slices;
pub mod statefulset;
pub mod version;

use std::path::PathBuf;

use serde_json::{Value, json};

use env::{CniEnv, Command};
use hereabouts_host::NoStore;
use hereabouts_host::bindings::{AllocateRequest, NetworkConfig, Owner};
use hereabouts_host::config::{self, StoreKind};
use hereabouts_host::error::{CniError, Code, guarded};
use hereabouts_host::runtime::Allocator;
use netconf::NetConf;
use slices::Claiming;

/// Runs the CNI call described by this process's environment and stdin; returns the exit
/// status. Prints exactly one JSON document (result or error) or nothing (DEL, GC, STATUS).
pub fn main() -> i32 {
    // The default hook would print panic text; keep it for stderr/log only.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!("internal error: {info}");
        eprintln!("hereabouts: internal error: {info}");
    }));
    limits::arm(limits::deadline());
    let mut stdin = String::new();
    let outcome = guarded(|| {
        limits::read_stdin(&mut stdin)?;
        limits::set_error_version(netconf::error_version(&stdin));
        let env = CniEnv::from_process()?;
        run(&env, &stdin)
    });
    let (output, status) = match outcome {
        Ok(Some(result)) => (Some(result), 0),
        Ok(None) => (None, 0),
        Err(error) => {
            tracing::error!(code = error.code.number(), "{}", error.msg);
            (Some(error.to_json(netconf::error_version(&stdin))), 1)
        }
    };
    if limits::print_once(output.as_ref()) { status } else { 1 } // else the deadline answered
}

/// One call: the verb in `env` on the network config `stdin`.
pub fn run(env: &CniEnv, stdin: &str) -> Result<Option<Value>, CniError> {
    if env.command == Command::Version {
        return Ok(Some(
            json!({ "cniVersion": version::LATEST, "supportedVersions": version::SUPPORTED }),
        ));
    }
    limits::check_env(env)?;
    let conf = match NetConf::parse(stdin, config::FLAT_FILE_PATHS) {
        Err(e) if env.command == Command::Del && del::forgives(&e) => {
            del::unreadable_config(env, &e);
            return Ok(None);
        }
        conf => conf?,
    };
    log::init(&conf);
    tracing::debug!(command = ?env.command, container = %env.container_id, ifname = %env.ifname,
        network = %conf.name, flat_file = ?conf.flat_file, "CNI call");
    if env.command == Command::Del {
        del::run(env, &conf);
        return Ok(None);
    }
    conf.require_chosen_store(&env.args)?;
    // The whole input is read and validated — the ipam section by the component — before
    // any store is opened.
    let mut session = Session::read(&conf)?;
    let find = Claiming::FindOnly;
    match env.command {
        Command::Add => session.on_store(&conf, Claiming::Claim)?.add(env, &conf).map(Some),
        Command::Del => unreachable!("answered above"),
        Command::Check => session.on_store(&conf, find)?.check(env, &conf).map(|()| None),
        Command::Gc => session.on_store(&conf, find)?.gc(&conf).map(|()| None),
        Command::Status => session.status(&conf).map(|()| None),
        Command::Version => unreachable!("answered above"),
    }
}

/// One call's allocator and the network it read.
pub struct Session {
    pub allocator: Allocator,
    pub network: NetworkConfig,
    /// Node slices: why this node has no slice to allocate from (CNI 11 for ADD and CHECK,
    /// 100 when every slice is claimed on etcd; DEL and GC have nothing of this node's to
    /// free there, and succeed).
    pub no_slice: Option<CniError>,
    /// Node slices on etcd: this node's slices cut for an earlier range or slice size, as
    /// networks. DEL and GC free in them too; nothing is allocated from them.
    pub stale_slices: Vec<NetworkConfig>,
    /// Node slices on etcd: the whole range, where ADDs went before node slices on etcd
    /// existed (the key was ignored there). DEL frees there too; GC does not (that pool is
    /// shared by every node, and this node's runtime lists only its own attachments).
    pub whole_range: Option<NetworkConfig>,
    /// The Kubernetes store's client, when that is the store: IPAMClaim and StatefulSet
    /// lookups share it with the allocator (one client per call).
    pub kube: Option<hereabouts_stores::kube::KubeStore>,
    /// The call's pod, read at most once (claims and StatefulSet membership both need it).
    pub pod: claim::PodOnce,
}

impl Session {
    /// Loads the component (no store yet) and has it read the ipam section. What Whereabouts
    /// silently ignores is logged, naming the field, and ignored the same way.
    pub fn read(conf: &NetConf) -> Result<Self, CniError> {
        let cache = cache_dir(conf);
        let _compiling = first_compile_lock(&cache);
        let mut allocator = Allocator::with_cache(Box::new(NoStore), Some(&cache))?;
        let reading = allocator.read_config(&conf.ipam_text)?;
        for w in &reading.warnings {
            tracing::warn!(field = %w.field, ignored = %w.ignored, rule = %w.rule, network = %conf.name,
                "ipam.{}: ignored {:?}: {}", w.field, w.ignored, w.reason);
        }
        Ok(Self {
            allocator,
            network: reading.network,
            no_slice: None,
            kube: None,
            pod: claim::PodOnce::default(),
            stale_slices: Vec::new(),
            whole_range: None,
        })
    }

    /// Connects the configured store. With `node_slice_size` on Kubernetes or etcd, the
    /// network is narrowed to this node's slice first (see [`slices`]; on etcd an ADD claims
    /// the slice when the node has none); on the local store the key has no effect, and the
    /// whole range is one pool as before.
    pub fn on_store(&mut self, conf: &NetConf, claiming: Claiming) -> Result<&mut Self, CniError> {
        if self.network.node_slice_size.is_some() {
            match conf.ipam.store_kind()? {
                StoreKind::Kubernetes => {
                    let store = hereabouts_stores::kube::open(&conf.ipam)?;
                    match slices::node_network(&mut self.allocator, &store, &self.network, conf)? {
                        Ok(network) => self.network = network,
                        Err(why) => self.no_slice = Some(why),
                    }
                    self.kube = Some(store.clone());
                    self.allocator.set_backend(Box::new(store));
                    return Ok(self);
                }
                StoreKind::Etcd => {
                    let store = hereabouts_stores::etcd::open(&conf.ipam)?;
                    let found = slices::etcd_node_network(
                        &mut self.allocator,
                        &store,
                        &self.network,
                        conf,
                        claiming,
                    )?;
                    self.whole_range = Some(self.network.clone());
                    match found.current {
                        Ok(network) => self.network = network,
                        Err(why) => self.no_slice = Some(why),
                    }
                    self.stale_slices = found.stale;
                    self.allocator.set_backend(Box::new(store));
                    return Ok(self);
                }
                kind => tracing::info!(network = %conf.name, store = ?kind,
                    "ipam.node_slice_size has no effect on the {kind:?} store: \
                     allocating from the whole range as one pool"),
            }
        }
        if conf.ipam.store_kind()? == StoreKind::Kubernetes {
            let store = hereabouts_stores::kube::open(&conf.ipam)?;
            self.kube = Some(store.clone());
            self.allocator.set_backend(Box::new(store));
        } else {
            self.allocator.set_backend(hereabouts_stores::open(&conf.ipam)?);
        }
        Ok(self)
    }

    /// Fails when this node has no slice (ADD, CHECK).
    fn require_slice(&mut self) -> Result<(), CniError> {
        self.no_slice.take().map_or(Ok(()), Err)
    }

    /// Whether the call has a pool to work on; logs why not (DEL, GC).
    fn has_slice(&self) -> bool {
        if let Some(why) = &self.no_slice {
            tracing::warn!("{}: nothing of this node's to free", why.msg);
        }
        self.no_slice.is_none()
    }

    /// ADD: the lowest free address of each range (or the one asked for), idempotently. With
    /// an IPAMClaim ([`claim`]), the claim owns the allocation and its `status.ips` are the
    /// addresses asked for; else a StatefulSet's pod may own it as its member ([`statefulset`]).
    pub fn add(&mut self, env: &CniEnv, conf: &NetConf) -> Result<Value, CniError> {
        let arg_gateways = env.args.gateways()?;
        self.require_slice()?;
        let mut claim = claim::Claim::resolve(env, conf, self.kube.as_ref(), &mut self.pod)?;
        let request = match &claim {
            Some(claim) => AllocateRequest {
                owner: claim.owner(env, conf),
                requested: Some(claim.requested()).filter(|r| !r.is_empty()).unwrap_or_else(|| {
                    env.args.ips.iter().chain(&conf.requested).cloned().collect()
                }),
            },
            None => AllocateRequest {
                owner: statefulset::owner(env, conf, self.kube.as_ref(), &mut self.pod)?
                    .unwrap_or_else(|| owner(env, conf)),
                requested: env.args.ips.iter().chain(&conf.requested).cloned().collect(),
            },
        };
        let leases = match (self.allocator.allocate(&self.network, &request), &mut claim) {
            (Ok(leases), Some(claim)) => {
                claim.allocated(&leases)?;
                leases
            }
            (Ok(leases), None) => leases,
            (Err(e), Some(claim)) => {
                let held = self.allocator.list_leases(&self.network).unwrap_or_default();
                return Err(claim.failed(e.into(), &held, &request.owner));
            }
            (Err(e), None) => return Err(e.into()),
        };
        tracing::info!(container = %env.container_id, ifname = %env.ifname,
            addresses = ?leases.iter().map(|l| &l.cidr).collect::<Vec<_>>(),
            commits = self.allocator.commits_attempted(), "allocated");
        let ip_args = env.args.ips.iter().filter_map(|ip| ip.split('/').next()?.parse().ok());
        let statics = conf
            .statics
            .clone()
            .with_gateway(self.network.gateway.as_deref())
            .with_arg_gateways(arg_gateways, ip_args.collect());
        Ok(result::render(conf.cni_version, &leases, &statics))
    }

    /// DEL: frees the container's addresses; freeing nothing is success (DEL is retried). A
    /// claimed address is the claim's, not the container's, and a StatefulSet member's is the
    /// member's: DEL leaves them (see [`claim`], [`statefulset`]).
    pub fn del(&mut self, env: &CniEnv) -> Result<(), CniError> {
        let mut freed = Vec::new();
        for network in self.stale_slices.iter().chain(&self.whole_range) {
            freed.extend(self.allocator.release(network, &env.owner())?);
        }
        if self.has_slice() {
            freed.extend(self.allocator.release(&self.network, &env.owner())?);
        }
        tracing::info!(container = %env.container_id, ifname = %env.ifname,
            addresses = ?freed.iter().map(|l| &l.cidr).collect::<Vec<_>>(), "released");
        Ok(())
    }

    /// CHECK: the container holds exactly the addresses `prevResult` reports for this plugin
    /// (its allocations and the ipam section's static `addresses`); with an IPAMClaim, the
    /// claim's allocations; of a StatefulSet member, the member's.
    pub fn check(&mut self, env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
        conf.cni_version.require("CHECK", "0.4.0")?;
        self.require_slice()?;
        let prev = conf.prev_result.as_ref().ok_or_else(|| {
            CniError::new(
                Code::InvalidConfig,
                "prevResult: missing; CHECK needs the result of the ADD it checks",
            )
        })?;
        let owner = match claim::Claim::resolve(env, conf, self.kube.as_ref(), &mut self.pod)? {
            Some(claim) => claim.owner(env, conf),
            None => statefulset::owner(env, conf, self.kube.as_ref(), &mut self.pod)?
                .unwrap_or_else(|| env.owner()),
        };
        let leases = self.allocator.leases_of(&self.network, &owner)?;
        if leases.is_empty() {
            return Err(CniError::new(
                Code::UnknownContainer,
                format!(
                    "container {} (ifname {}) holds no address in network {:?}",
                    env.container_id, env.ifname, conf.name
                ),
            ));
        }
        let reported = result::addresses_in(prev);
        let held: Vec<std::net::IpAddr> =
            leases.iter().filter_map(|l| l.address.parse().ok()).collect();
        for lease in &leases {
            if !lease.address.parse().is_ok_and(|a| reported.contains(&a)) {
                return Err(CniError::new(
                    Code::InvalidConfig,
                    format!(
                        "prevResult.ips: {} is allocated to container {} but missing from prevResult",
                        lease.cidr, env.container_id
                    ),
                ));
            }
        }
        let statics = conf.statics.static_addresses();
        if let Some(extra) = reported.iter().find(|a| !held.contains(a) && !statics.contains(a)) {
            return Err(CniError::new(
                Code::InvalidConfig,
                format!(
                    "prevResult.ips: {extra} is not allocated to container {} (ifname {}) in network {:?}",
                    env.container_id, env.ifname, conf.name
                ),
            ));
        }
        Ok(())
    }

    /// GC: frees every allocation of this CNI network whose attachment the runtime no longer
    /// lists (another network's attachments on a shared pool are left alone).
    pub fn gc(&mut self, conf: &NetConf) -> Result<(), CniError> {
        conf.cni_version.require("GC", "1.1.0")?;
        let keep = conf.valid_attachments.as_deref().ok_or_else(|| {
            CniError::new(
                Code::InvalidConfig,
                "cni.dev/valid-attachments: missing; GC needs the attachments to keep",
            )
        })?;
        let mut freed = Vec::new();
        for network in &self.stale_slices {
            freed.extend(self.allocator.collect_garbage(network, &conf.name, keep)?);
        }
        if self.has_slice() {
            freed.extend(self.allocator.collect_garbage(&self.network, &conf.name, keep)?);
        }
        for held in &freed {
            tracing::info!(container = %held.owner.container_id, ifname = %held.owner.ifname,
                address = %held.lease.cidr, "garbage-collected");
        }
        Ok(())
    }

    /// STATUS: can ADD be served? The store must open and its pools for this network read.
    pub fn status(&mut self, conf: &NetConf) -> Result<(), CniError> {
        conf.cni_version.require("STATUS", "1.1.0")?;
        let unavailable = |e: CniError| {
            CniError::new(Code::PluginNotAvailable, format!("store not usable: {}", e.msg))
                .with_details(e.details)
        };
        self.on_store(conf, Claiming::FindOnly)
            .map_err(|e| if e.code == Code::InvalidConfig { e } else { unavailable(e) })?;
        self.allocator.list_leases(&self.network).map_err(|e| unavailable(e.into()))?;
        Ok(())
    }
}

/// The attachment's owner, recorded with the CNI network it belongs to.
fn owner(env: &CniEnv, conf: &NetConf) -> Owner {
    Owner { cni_network: conf.name.clone(), ..env.owner() }
}

/// On a node's first pods (an empty cache) every process would compile the component at once
/// — 50 pods × ~250 ms of CPU. While the cache holds no compiled artifact, callers queue on a
/// lock instead: the first compiles and fills the cache, the others then load it. With a warm
/// cache this is one directory read. Best effort: without the lock we just compile.
fn first_compile_lock(cache: &std::path::Path) -> Option<std::fs::File> {
    let compiled = |dir: &std::path::Path| {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
        })
    };
    if compiled(cache) {
        return None;
    }
    // Checks that the directory is private before creating anything in it.
    let lock = hereabouts_host::runtime::open_compile_lock(cache)?;
    lock.lock().ok()?;
    Some(lock)
}

pub fn cache_dir(conf: &NetConf) -> PathBuf {
    cache_dir_for(&conf.ipam.data_dir())
}

/// `$HEREABOUTS_CACHE_DIR`, else `<data_dir>/cache`.
pub fn cache_dir_for(data_dir: &std::path::Path) -> PathBuf {
    std::env::var_os("HEREABOUTS_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| data_dir.join("cache"))
}
