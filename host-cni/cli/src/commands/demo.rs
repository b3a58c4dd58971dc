//! `hereabouts demo`: the plugin doing its job, without root or a cluster.
//!
//! It plays the container runtime: starts N `hereabouts` processes at once with the CNI
//! environment and a network config on stdin — exactly how containerd or CRI-O call an IPAM
//! plugin — against a fresh local store, prints which container got which address, shows
//! what the store recorded, then deletes them all the same way.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use hereabouts_host::NoStore;
use hereabouts_host::config::{ConfigError, IpamConfig};
use hereabouts_host::error::CniError;
use hereabouts_host::runtime::{Allocator, CallError, ReadError, RuntimeError};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How many containers start at once.
    #[arg(long, short = 'n', default_value_t = 8)]
    pub count: usize,
    /// The range to hand addresses out from.
    #[arg(long, default_value = "10.22.0.0/24")]
    pub range: String,
    /// The cniVersion of the network config.
    #[arg(long, default_value = "1.0.0")]
    pub cni_version: String,
    /// Use (and keep) this store directory instead of a fresh temporary one.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep the allocations: skip the DELs.
    #[arg(long)]
    pub no_del: bool,
}

/// What one plugin process answered.
struct Call {
    container: String,
    elapsed: Duration,
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
enum DemoError {
    #[error("cannot find my own binary: {0}")]
    OwnBinary(std::io::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Store(#[from] CniError),
    #[error("{failures} calls failed or the store disagrees with the results")]
    Disagreement { failures: usize },
}

pub fn exec(args: &DemoArgs) -> i32 {
    let temporary = args.data_dir.is_none();
    let dir = args.data_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("hereabouts-demo-{}", std::process::id()))
    });
    let code = match demo(args, &dir) {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("hereabouts demo: {message}");
            1
        }
    };
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    code
}

fn demo(args: &DemoArgs, dir: &Path) -> Result<(), DemoError> {
    let ipam = json!({"type": "hereabouts", "range": args.range, "data_dir": dir});
    let config =
        json!({"cniVersion": args.cni_version, "name": "demo", "type": "bridge", "ipam": ipam})
            .to_string();
    let exe = std::env::current_exe().map_err(DemoError::OwnBinary)?;
    let cache = crate::cni::cache_dir_for(dir);
    // Compile the component into the store's cache once, as the first real call on a node would.
    Allocator::with_cache(Box::new(NoStore), Some(&cache))?;

    println!("store: {} (network config on stdin of every call below)", dir.display());
    println!("{config}\n");
    println!(
        "{} containers call ADD at the same time, each a fresh `hereabouts` process:\n",
        args.count
    );
    let adds = call_all(&exe, "ADD", &config, args.count);
    let mut rows = Vec::new();
    let mut failures = 0;
    for call in &adds {
        let result: Option<Value> = serde_json::from_str(&call.stdout).ok();
        let address = result
            .as_ref()
            .and_then(|r| r["ips"][0]["address"].as_str().or(r["ip4"]["ip"].as_str()));
        match (call.status, address) {
            (Some(0), Some(address)) => rows.push((address.to_string(), call)),
            _ => {
                failures += 1;
                println!(
                    "  {}  FAILED  {} {}",
                    call.container,
                    call.stdout.trim(),
                    call.stderr.trim()
                );
            }
        }
    }
    rows.sort_by_key(|(address, _)| {
        address.split('/').next().and_then(|a| a.parse::<IpAddr>().ok())
    });
    println!("  {:<14} {:<16} {:<20} {:>8}", "CONTAINER", "POD", "ADDRESS", "TIME");
    for (address, call) in &rows {
        let pod = format!("demo/{}", call.container.replace("ctr", "pod"));
        println!(
            "  {:<14} {:<16} {:<20} {:>5.1} ms",
            call.container,
            pod,
            address,
            call.elapsed.as_secs_f64() * 1e3
        );
    }
    let mut distinct: Vec<&String> = rows.iter().map(|(a, _)| a).collect();
    distinct.sort();
    distinct.dedup();
    println!(
        "\n{} of {} ADDs succeeded; {} distinct addresses.",
        rows.len(),
        args.count,
        distinct.len()
    );

    let host_keys = IpamConfig::from_value(&ipam)?;
    let held = |what: &str| -> Result<usize, DemoError> {
        let store = hereabouts_stores::open(&host_keys)?;
        let mut allocator = Allocator::with_cache(store, Some(&cache))?;
        let network = allocator.read_config(&ipam.to_string())?.network;
        let leases = allocator.list_leases(&network)?;
        println!("The store {what} {} allocations.", leases.len());
        Ok(leases.len())
    };
    let recorded = held("records")?;
    if args.no_del {
        println!("Keeping them (--no-del).");
    } else {
        println!("\nEvery container calls DEL at the same time:");
        let dels = call_all(&exe, "DEL", &config, args.count);
        for call in dels.iter().filter(|c| c.status != Some(0)) {
            failures += 1;
            println!(
                "  {}  DEL FAILED  {} {}",
                call.container,
                call.stdout.trim(),
                call.stderr.trim()
            );
        }
        if held("now holds")? != 0 {
            failures += 1;
        }
    }
    if failures > 0 || distinct.len() != rows.len() || recorded != rows.len() {
        return Err(DemoError::Disagreement { failures });
    }
    Ok(())
}

/// Runs `count` plugin processes at once, one per container, and collects their answers.
fn call_all(exe: &Path, command: &str, config: &str, count: usize) -> Vec<Call> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (1..=count)
            .map(|i| scope.spawn(move || call(exe, command, config, &format!("ctr-{i:02}"))))
            .collect();
        handles.into_iter().map(|h| h.join().expect("caller thread")).collect()
    })
}

fn call(exe: &Path, command: &str, config: &str, container: &str) -> Call {
    let started = Instant::now();
    let pod = container.replace("ctr", "pod");
    let child = Command::new(exe)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", format!("/var/run/netns/{container}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME={pod}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let output = child.and_then(|mut child| {
        child.stdin.take().expect("piped").write_all(config.as_bytes())?;
        child.wait_with_output()
    });
    let elapsed = started.elapsed();
    match output {
        Ok(out) => Call {
            container: container.to_string(),
            elapsed,
            status: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Err(e) => Call {
            container: container.to_string(),
            elapsed,
            status: None,
            stdout: String::new(),
            stderr: e.to_string(),
        },
    }
}
