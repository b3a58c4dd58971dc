//! The CNI plugin: what `hereabouts` does when a runtime (or Multus, or a main plugin such as
//! `bridge`) calls it with `CNI_COMMAND` set.
//!
//! Each verb reads top to bottom like the reference plugins' `cmdAdd`: parse the environment
//! and the config → open the store → ask the allocator component → print the result. Nothing
//! is touched before the whole input is validated. Every failure, a panic included, leaves as
//! one CNI error JSON on stdout with a non-zero exit; logs go to `log_file` or stderr only.

pub mod env;
mod log;
pub mod netconf;
pub mod result;
pub mod version;

use std::io::{Read, Write};
use std::path::PathBuf;

use serde_json::{Value, json};

use env::{CniEnv, Command};
use hereabouts_host::bindings::AllocateRequest;
use hereabouts_host::config;
use hereabouts_host::error::{CniError, Code, guarded};
use hereabouts_host::runtime::Allocator;
use netconf::NetConf;

/// Runs the CNI call described by this process's environment and stdin; returns the exit
/// status. Prints exactly one JSON document (result or error) or nothing (DEL, GC, STATUS).
pub fn main() -> i32 {
    // The default hook would print panic text; keep it for stderr/log only.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!("internal error: {info}");
        eprintln!("hereabouts: internal error: {info}");
    }));
    let mut stdin = String::new();
    let outcome = guarded(|| {
        std::io::stdin().read_to_string(&mut stdin).map_err(|e| {
            CniError::new(Code::Decode, format!("stdin: cannot read the network config: {e}"))
        })?;
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
    if let Some(output) = output {
        let mut stdout = std::io::stdout().lock();
        // If the runtime closed stdout there is nobody left to tell.
        let _ = writeln!(stdout, "{output}").and_then(|()| stdout.flush());
    }
    status
}

/// One call: the verb in `env` on the network config `stdin`.
pub fn run(env: &CniEnv, stdin: &str) -> Result<Option<Value>, CniError> {
    if env.command == Command::Version {
        return Ok(Some(
            json!({ "cniVersion": version::LATEST, "supportedVersions": version::SUPPORTED }),
        ));
    }
    let conf = NetConf::parse(stdin, config::FLAT_FILE_PATHS)?;
    log::init(&conf.ipam);
    tracing::debug!(command = ?env.command, container = %env.container_id, ifname = %env.ifname,
        network = %conf.name, flat_file = ?conf.flat_file, "CNI call");
    match env.command {
        Command::Add => add(env, &conf, &mut open(&conf)?).map(Some),
        Command::Del => del(env, &conf, &mut open(&conf)?).map(|()| None),
        Command::Check => check(env, &conf, &mut open(&conf)?).map(|()| None),
        Command::Gc => gc(&conf, &mut open(&conf)?).map(|()| None),
        Command::Status => status(&conf).map(|()| None),
        Command::Version => unreachable!("answered above"),
    }
}

/// The allocator on the configured store. The compiled component is cached in the data
/// directory (or `$HEREABOUTS_CACHE_DIR`): root-owned like the store, unlike a shared /tmp.
pub fn open(conf: &NetConf) -> Result<Allocator, CniError> {
    let backend = hereabouts_stores::open(&conf.ipam)?;
    let cache = cache_dir(conf);
    let _compiling = first_compile_lock(&cache);
    Ok(Allocator::with_cache(backend, Some(&cache))?)
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
    std::fs::create_dir_all(cache).ok()?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(cache.join("compile.lock"))
        .ok()?;
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

/// ADD: the lowest free address of each range (or the one asked for), idempotently.
pub fn add(env: &CniEnv, conf: &NetConf, allocator: &mut Allocator) -> Result<Value, CniError> {
    let request = AllocateRequest {
        owner: env.owner(),
        requested: env.args.ips.iter().chain(&conf.requested).cloned().collect(),
        sticky: conf.ipam.sticky.unwrap_or(false),
    };
    let leases = allocator.allocate(&conf.ipam.network_config(), &request)?;
    tracing::info!(container = %env.container_id, ifname = %env.ifname,
        addresses = ?leases.iter().map(|l| &l.cidr).collect::<Vec<_>>(), "allocated");
    Ok(result::render(conf.cni_version, &leases, &conf.statics))
}

/// DEL: frees the container's addresses; freeing nothing is success (DEL is retried).
pub fn del(env: &CniEnv, conf: &NetConf, allocator: &mut Allocator) -> Result<(), CniError> {
    let freed = allocator.release(&conf.ipam.network_config(), &env.owner())?;
    tracing::info!(container = %env.container_id, ifname = %env.ifname,
        addresses = ?freed.iter().map(|l| &l.cidr).collect::<Vec<_>>(), "released");
    Ok(())
}

/// CHECK: the container still holds its addresses, and `prevResult` reports them.
pub fn check(env: &CniEnv, conf: &NetConf, allocator: &mut Allocator) -> Result<(), CniError> {
    conf.cni_version.require("CHECK", "0.4.0")?;
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            Code::InvalidConfig,
            "prevResult: missing; CHECK needs the result of the ADD it checks",
        )
    })?;
    let leases = allocator.lookup(&conf.ipam.network_config(), &env.owner())?;
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
    Ok(())
}

/// GC: frees every allocation of the network whose attachment the runtime no longer lists.
pub fn gc(conf: &NetConf, allocator: &mut Allocator) -> Result<(), CniError> {
    conf.cni_version.require("GC", "1.1.0")?;
    let keep = conf.valid_attachments.as_deref().ok_or_else(|| {
        CniError::new(
            Code::InvalidConfig,
            "cni.dev/valid-attachments: missing; GC needs the attachments to keep",
        )
    })?;
    let freed = allocator.collect_garbage(&conf.ipam.network_config(), keep)?;
    for held in &freed {
        tracing::info!(container = %held.owner.container_id, ifname = %held.owner.ifname, address = %held.lease.cidr,
            "garbage-collected");
    }
    Ok(())
}

/// STATUS: can ADD be served? The store must open and its pools for this network must read.
pub fn status(conf: &NetConf) -> Result<(), CniError> {
    conf.cni_version.require("STATUS", "1.1.0")?;
    let unavailable = |e: CniError| {
        if e.code == Code::InvalidConfig {
            e
        } else {
            CniError::new(Code::PluginNotAvailable, format!("store not usable: {}", e.msg))
                .with_details(e.details)
        }
    };
    let mut allocator = open(conf).map_err(unavailable)?;
    allocator.list_leases(&conf.ipam.network_config()).map_err(|e| unavailable(e.into()))?;
    Ok(())
}
