//! `hereabouts migrate check --kubeconfig K`: what of Whereabouts still runs in a cluster, or
//! would conflict with Hereabouts, read from the API server. Exit status 0 when nothing would,
//! 1 while something would (each such finding says what to do), 2 when it could not ask.
//!
//! Whereabouts' current layout (its doc/crds and Helm chart) and what each part does to a
//! cluster that runs Hereabouts:
//! - the DaemonSet (`install-cni.sh`, `token-watcher.sh`, `ip-control-loop`): its installer
//!   copies its own binary over `/opt/cni/bin/whereabouts` and rewrites the flat file; its
//!   ip-control-loop frees addresses whose pod it considers gone — including the IPAMClaim and
//!   StatefulSet addresses Hereabouts keeps for a pod that will come back;
//! - the `whereabouts-reconciler` Deployment (`/ip-reconciler`, on the schedule of the
//!   `whereabouts-config` ConfigMap's `cron-expression`): the same frees, on a schedule;
//! - the node-slice controller Deployment (`/node-slice-controller`): writes NodeSlicePools
//!   beside the ones Hereabouts' controller writes;
//! - an older layout's `whereabouts-ip-reconciler` CronJob;
//! - Leases: its plugin takes the Lease `whereabouts` (with node slices, one named as each
//!   pool) for every ADD and DEL; one renewed recently means a node still runs its binary.
//!
//! Also what Hereabouts would read differently: a flat file the Whereabouts DaemonSet writes
//! where Hereabouts does not search ([`FLAT_FILE_PATHS`]), and each NetworkAttachmentDefinition
//! whose ipam section the core refuses (its ADDs would fail) or reads with warnings (a value
//! both ignore), or that sets Whereabouts' leader-election keys (Hereabouts takes no lock).
//! Every verdict about a config is the core's (`read-config`); this module only lists objects.

use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec};
use kube::Api;
use kube::api::ListParams;
use serde::Serialize;

use hereabouts_host::NoStore;
use hereabouts_host::config::FLAT_FILE_PATHS;
use hereabouts_host::runtime::{Allocator, ReadError};
use hereabouts_stores::kube::crd::{IPPool, NetworkAttachmentDefinition};
use hereabouts_stores::kube::{KubeError, KubeStore, Request, Timeouts};

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    #[command(subcommand)]
    pub command: MigrateCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum MigrateCommand {
    /// List what of Whereabouts still runs or would conflict; exit 1 while something would.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Kubeconfig to use (default: in-cluster service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Where Whereabouts' custom resources, ConfigMap and Leases live (default: the kubeconfig
    /// context's namespace, else kube-system). Workloads are looked for in every namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// A Whereabouts Lease renewed within this many seconds means a node still runs its plugin.
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    pub lease_window_seconds: u64,
    /// Print the findings as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// One thing found: a conflict (blocks the switch) or a note (left over, harmless).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub conflict: bool,
    /// `Kind namespace/name`.
    pub object: String,
    pub why: String,
    /// What to do about it.
    pub action: String,
}

pub fn exec(args: &MigrateArgs) -> i32 {
    let MigrateCommand::Check(args) = &args.command;
    let findings = match check(args) {
        Ok(findings) => findings,
        Err(e) => {
            eprintln!("hereabouts migrate check: {e}");
            return 2;
        }
    };
    let conflicts = findings.iter().filter(|f| f.conflict).count();
    if args.json {
        let out = serde_json::json!({"conflicts": conflicts, "findings": findings});
        println!("{out}");
    } else {
        for f in &findings {
            let level = if f.conflict { "conflict" } else { "note" };
            println!("{level}: {}: {}\n  do: {}", f.object, f.why, f.action);
        }
        println!("{conflicts} conflicts, {} notes", findings.len() - conflicts);
    }
    i32::from(conflicts > 0)
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Connect(#[from] hereabouts_host::bindings::StoreError),
    #[error(transparent)]
    Api(#[from] KubeError),
    #[error(transparent)]
    Component(#[from] hereabouts_host::runtime::RuntimeError),
}

fn check(args: &CheckArgs) -> Result<Vec<Finding>, Failure> {
    let store = KubeStore::connect(args.kubeconfig.as_deref(), Timeouts::default())?;
    let ns = args.namespace.clone().unwrap_or_else(|| store.namespace().to_string());
    let client = store.client().clone();
    let list = |resource: &'static str| Request::new("list", resource, "");
    let all = ListParams::default();
    let mut findings = Vec::new();

    let daemonsets =
        store.request(list("daemonsets"), Api::<DaemonSet>::all(client.clone()).list(&all))?;
    for ds in &daemonsets.items {
        let Some(spec) = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref()) else { continue };
        let Some(parts) = whereabouts_parts(spec) else { continue };
        let object = name_of("DaemonSet", &ds.metadata);
        findings.push(Finding {
            conflict: true,
            object: object.clone(),
            why: format!(
                "Whereabouts' node DaemonSet ({parts}): its installer copies its own binary over \
                 /opt/cni/bin/whereabouts and rewrites the flat file, and its ip-control-loop frees \
                 addresses Hereabouts keeps (IPAMClaim and StatefulSet addresses whose pod is gone)"
            ),
            action: delete_command("daemonset", &ds.metadata),
        });
        if let Some(path) =
            flat_file_written_by(spec).filter(|p| !FLAT_FILE_PATHS.contains(&p.as_str()))
        {
            findings.push(Finding {
                conflict: true,
                object: format!("{object} flat file {path}"),
                why: format!(
                    "Whereabouts' installer writes its flat file at {path}, where Hereabouts does not \
                     look (it searches {})",
                    FLAT_FILE_PATHS.join(", ")
                ),
                action: format!(
                    "set \"configuration_path\": \"{path}\" in the ipam of every NAD that relies on \
                     the flat file, and install Hereabouts with the same CNI config directory \
                     (Helm: cniConfDir)"
                ),
            });
        }
    }

    let deployments =
        store.request(list("deployments"), Api::<Deployment>::all(client.clone()).list(&all))?;
    for d in &deployments.items {
        let Some(spec) = d.spec.as_ref() else { continue };
        let Some(parts) = spec.template.spec.as_ref().and_then(whereabouts_parts) else { continue };
        let what = if parts.contains("node-slice-controller") {
            "Whereabouts' node-slice controller: writes NodeSlicePools beside the ones Hereabouts' controller writes"
        } else {
            "Whereabouts' reconciler: frees addresses Hereabouts keeps (IPAMClaim and StatefulSet addresses whose pod is gone)"
        };
        let running = spec.replicas != Some(0);
        findings.push(Finding {
            conflict: running,
            object: name_of("Deployment", &d.metadata),
            why: format!("{what} ({parts}){}", if running { "" } else { "; scaled to 0" }),
            action: delete_command("deployment", &d.metadata),
        });
    }

    let cronjobs =
        store.request(list("cronjobs"), Api::<CronJob>::all(client.clone()).list(&all))?;
    for c in &cronjobs.items {
        let Some(spec) = c.spec.as_ref() else { continue };
        let Some(parts) = spec
            .job_template
            .spec
            .as_ref()
            .and_then(|j| j.template.spec.as_ref())
            .and_then(whereabouts_parts)
        else {
            continue;
        };
        let running = spec.suspend != Some(true);
        findings.push(Finding {
            conflict: running,
            object: name_of("CronJob", &c.metadata),
            why: format!(
                "an older Whereabouts' reconciler CronJob ({parts}){}",
                if running { "" } else { "; suspended" }
            ),
            action: delete_command("cronjob", &c.metadata),
        });
    }

    let configmaps = store.request(
        list("configmaps"),
        Api::<ConfigMap>::namespaced(client.clone(), &ns).list(&all),
    )?;
    for cm in &configmaps.items {
        let Some(cron) = cm.data.as_ref().and_then(|d| d.get("cron-expression")) else { continue };
        findings.push(Finding {
            conflict: false,
            object: name_of("ConfigMap", &cm.metadata),
            why: format!(
                "the Whereabouts reconciler's schedule (cron-expression {cron:?}); Hereabouts' \
                 reconcile runs on its CronJob's schedule (Helm: reconcile.schedule)"
            ),
            action: delete_command("configmap", &cm.metadata),
        });
    }

    let pools = store
        .request(list("ippools"), Api::<IPPool>::namespaced(client.clone(), &ns).list(&all))?;
    let pool_names: Vec<String> =
        pools.items.iter().filter_map(|p| p.metadata.name.clone()).collect();
    let leases =
        store.request(list("leases"), Api::<Lease>::namespaced(client.clone(), &ns).list(&all))?;
    let now = k8s_openapi::jiff::Timestamp::now();
    for lease in &leases.items {
        let name = lease.metadata.name.as_deref().unwrap_or_default();
        if name != "whereabouts" && !pool_names.iter().any(|p| p == name) {
            continue;
        }
        let spec = lease.spec.as_ref();
        let last =
            spec.and_then(|s| s.renew_time.as_ref().or(s.acquire_time.as_ref())).map(|t| t.0);
        let age = last.map(|t| now.duration_since(t).as_secs().max(0));
        let recent = age.is_some_and(|age| age.unsigned_abs() <= args.lease_window_seconds);
        let holder = spec.and_then(|s| s.holder_identity.as_deref()).filter(|h| !h.is_empty());
        findings.push(Finding {
            conflict: recent,
            object: name_of("Lease", &lease.metadata),
            why: match (recent, age) {
                (true, Some(age)) => format!(
                    "Whereabouts' plugin took this lock {age} s ago{}: a node still runs Whereabouts' \
                     binary (Hereabouts takes no lock)",
                    holder.map(|h| format!(" (holder {h})")).unwrap_or_default()
                ),
                _ => "left by Whereabouts' plugin, not renewed recently; Hereabouts takes no lock".into(),
            },
            action: if recent {
                format!(
                    "remove Whereabouts' DaemonSet and let Hereabouts' install replace \
                     /opt/cni/bin/whereabouts on every node; then {}",
                    delete_command("lease", &lease.metadata)
                )
            } else {
                delete_command("lease", &lease.metadata)
            },
        });
    }

    let nads = store.request(
        list("network-attachment-definitions"),
        Api::<NetworkAttachmentDefinition>::all(client.clone()).list(&all),
    )?;
    let mut allocator = Allocator::new(Box::new(NoStore))?;
    for nad in &nads.items {
        let object = name_of("NetworkAttachmentDefinition", &nad.metadata);
        for ipam in ipam_sections(&nad.spec.config) {
            findings.extend(review_ipam(&mut allocator, &object, &ipam)?);
        }
    }
    Ok(findings)
}

/// How the core reads one NAD's ipam section, as findings: refused or read with nothing to
/// hand out (conflict: every ADD would fail), read with warnings (notes), Whereabouts'
/// leader-election keys (a note).
fn review_ipam(
    allocator: &mut Allocator,
    object: &str,
    ipam: &serde_json::Value,
) -> Result<Vec<Finding>, Failure> {
    let mut out = Vec::new();
    match allocator.read_config(&ipam.to_string()) {
        Ok(reading) => {
            // Read, but with nothing to hand out (a `/32`, everything excluded, no range) or
            // an exclude Whereabouts cannot parse: the pools are named, every new ADD fails.
            if let Some(error) = reading.network.allocation_error {
                out.push(Finding {
                    conflict: true,
                    object: object.to_string(),
                    why: format!(
                        "Hereabouts reads its ipam section, but an ADD that needs a new address fails: {}: {}",
                        error.field, error.message
                    ),
                    action: "fix the config (`hereabouts check` on the NAD's YAML names the field)"
                        .into(),
                });
            }
            for w in reading.warnings {
                out.push(Finding {
                    conflict: false,
                    object: format!("{object} ipam.{}", w.field),
                    why: format!(
                        "read as Whereabouts reads it, but `{}` {} {} (rule {})",
                        w.field, w.ignored, w.reason, w.rule
                    ),
                    action: format!("fix or remove `{}` (Whereabouts ignores it too)", w.field),
                });
            }
        }
        Err(ReadError::Config(error)) => out.push(Finding {
            conflict: true,
            object: object.to_string(),
            why: format!(
                "Hereabouts refuses its ipam section, so its ADDs would fail: {}",
                ReadError::Config(error)
            ),
            action: "fix the config (`hereabouts check` on the NAD's YAML names the field)".into(),
        }),
        Err(ReadError::Runtime(e)) => return Err(e.into()),
    }
    let leader_keys: Vec<&str> =
        ["leader_lease_duration", "leader_renew_deadline", "leader_retry_period"]
            .into_iter()
            .filter(|k| ipam.get(*k).is_some())
            .collect();
    if !leader_keys.is_empty() {
        out.push(Finding {
            conflict: false,
            object: object.to_string(),
            why: format!(
                "sets Whereabouts' leader election ({}); Hereabouts takes no lock and ignores them",
                leader_keys.join(", ")
            ),
            action: "nothing (or remove them after the switch)".into(),
        });
    }
    Ok(out)
}

/// The ipam sections of type whereabouts/hereabouts in a NAD's `spec.config` (a network
/// config or a conflist); none when it is empty or not JSON (Multus then reads a file).
fn ipam_sections(config: &str) -> Vec<serde_json::Value> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(config) else { return Vec::new() };
    let plugins = match value.get("plugins").and_then(|p| p.as_array()) {
        Some(plugins) => plugins.clone(),
        None => vec![value],
    };
    plugins
        .into_iter()
        .filter_map(|p| p.get("ipam").cloned())
        .filter(|ipam| matches!(ipam["type"].as_str(), Some("whereabouts" | "hereabouts")))
        .collect()
}

/// Markers of Whereabouts' programs in a pod's commands, or None when it runs none of them.
fn whereabouts_parts(spec: &PodSpec) -> Option<String> {
    const MARKERS: [&str; 5] = [
        "install-cni.sh",
        "token-watcher.sh",
        "ip-control-loop",
        "ip-reconciler",
        "node-slice-controller",
    ];
    let mut found: Vec<&str> = Vec::new();
    for container in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
        let words: Vec<&String> =
            container.command.iter().flatten().chain(container.args.iter().flatten()).collect();
        for marker in MARKERS {
            if words.iter().any(|w| w.contains(marker)) && !found.contains(&marker) {
                found.push(marker);
            }
        }
    }
    (!found.is_empty()).then(|| found.join(", "))
}

/// Where Whereabouts' installer writes the flat file on the host: `whereabouts.d/whereabouts.conf`
/// in the host directory mounted at /host/etc/cni/net.d.
fn flat_file_written_by(spec: &PodSpec) -> Option<String> {
    let mount = spec
        .containers
        .iter()
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .find(|m| Path::new(&m.mount_path) == Path::new("/host/etc/cni/net.d"))?;
    let volume = spec.volumes.iter().flatten().find(|v| v.name == mount.name)?;
    let dir = &volume.host_path.as_ref()?.path;
    Some(Path::new(dir).join("whereabouts.d/whereabouts.conf").display().to_string())
}

fn name_of(
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> String {
    format!(
        "{kind} {}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

fn delete_command(
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> String {
    format!(
        "kubectl -n {} delete {kind} {}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}
