//! `hereabouts migrate check` against the API-server emulation (tests/kube_api/emulation.rs), holding
//! objects shaped as Whereabouts deploys them today (its doc/crds and Helm chart: the node
//! DaemonSet running install-cni.sh, token-watcher.sh and ip-control-loop, the
//! `whereabouts-reconciler` Deployment and its `whereabouts-config` ConfigMap, the node-slice
//! controller Deployment, the Lease its plugin takes) beside Hereabouts' own deploy/ objects.
//! Only the kubeconfig ties it to the emulator: the same test runs against a real API server.

mod kube_api;

use std::path::Path;
use std::process::Command;

use kube_api::Emulator;
use serde_json::{Value, json};

const NS: &str = "kube-system";

/// `hereabouts migrate check --json`: (exit code, findings).
fn migrate_check(kubeconfig: &Path) -> (i32, Vec<Value>) {
    let output = Command::new(env!("CARGO_BIN_EXE_hereabouts"))
        .args(["migrate", "check", "--json", "--kubeconfig"])
        .arg(kubeconfig)
        .env_remove("WHEREABOUTS_NAMESPACE")
        .output()
        .unwrap();
    let stdout: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "not JSON: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let findings = stdout["findings"].as_array().unwrap().clone();
    let conflicts = findings.iter().filter(|f| f["conflict"] == true).count();
    assert_eq!(stdout["conflicts"], json!(conflicts));
    (output.status.code().unwrap(), findings)
}

fn finding<'a>(findings: &'a [Value], object: &str) -> &'a Value {
    findings
        .iter()
        .find(|f| f["object"] == object)
        .unwrap_or_else(|| panic!("no finding for {object}: {findings:#?}"))
}

fn pod_template(labels: Value, containers: Value, volumes: Value) -> Value {
    json!({"metadata": {"labels": labels}, "spec": {"containers": containers, "volumes": volumes}})
}

/// Whereabouts' node DaemonSet, with its CNI config directory on the host at `conf_dir`.
fn whereabouts_daemonset(conf_dir: &str) -> Value {
    let labels = json!({"tier": "node", "app": "whereabouts", "name": "whereabouts"});
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "whereabouts", "namespace": NS,
                     "labels": {"tier": "node", "app": "whereabouts"}},
        "spec": {
            "selector": {"matchLabels": {"name": "whereabouts"}},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": pod_template(labels, json!([{
                "name": "whereabouts",
                "image": "ghcr.io/k8snetworkplumbingwg/whereabouts:latest",
                "command": ["/bin/sh"],
                "args": ["-c", "SLEEP=false source /install-cni.sh\n/token-watcher.sh &\n/ip-control-loop -log-level debug\n"],
                "securityContext": {"privileged": true},
                "volumeMounts": [{"name": "cnibin", "mountPath": "/host/opt/cni/bin"},
                                 {"name": "cni-net-dir", "mountPath": "/host/etc/cni/net.d"}],
            }]), json!([
                {"name": "cnibin", "hostPath": {"path": "/opt/cni/bin"}},
                {"name": "cni-net-dir", "hostPath": {"path": conf_dir}},
            ])),
        },
    })
}

fn whereabouts_deployment(name: &str, command: &str) -> Value {
    let labels = json!({"app": name, "name": name});
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"name": name}},
            "template": pod_template(labels, json!([{
                "name": "whereabouts",
                "image": "ghcr.io/k8snetworkplumbingwg/whereabouts:latest",
                "command": [command],
                "args": ["-log-level", "debug"],
                "volumeMounts": [{"name": "cron-scheduler-configmap", "mountPath": "/cron-schedule"}],
            }]), json!([{"name": "cron-scheduler-configmap",
                         "configMap": {"name": "whereabouts-config", "defaultMode": 484,
                                       "items": [{"key": "cron-expression", "path": "config"}]}}])),
        },
    })
}

fn lease(name: &str, renewed: &str, holder: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 1,
                 "acquireTime": renewed, "renewTime": renewed},
    })
}

fn nad(namespace: &str, name: &str, ipam: Value) -> Value {
    let config = json!({"cniVersion": "0.3.1", "name": name, "type": "macvlan", "master": "eth0",
                        "ipam": ipam});
    json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"config": config.to_string()},
    })
}

/// Hereabouts' own objects from deploy/: never a finding.
fn insert_hereabouts(emulator: &Emulator) {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    for (file, plural) in [
        ("daemonset.yaml", "daemonsets"),
        ("controller.yaml", "deployments"),
        ("reconcile-cronjob.yaml", "cronjobs"),
    ] {
        let text = std::fs::read_to_string(deploy.join(file)).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        for doc in docs.into_iter().filter(|d| d["kind"] != "Service") {
            emulator.insert(plural, doc);
        }
    }
}

#[test]
fn migrate_check_lists_what_of_whereabouts_runs_and_passes_once_it_is_gone() {
    let emulator = Emulator::start();
    let dir = kube_api::temp_dir("kube-migrate", "layout");
    let kubeconfig = emulator.kubeconfig(&dir, Some(NS));

    // A cluster without Whereabouts (Hereabouts installed, one good NAD): nothing to do.
    insert_hereabouts(&emulator);
    emulator.insert(
        "network-attachment-definitions",
        nad("default", "blue", json!({"type": "whereabouts", "range": "10.10.0.0/24"})),
    );
    let (code, findings) = migrate_check(&kubeconfig);
    assert_eq!((code, findings.as_slice()), (0, &[][..]), "{findings:#?}");

    // Whereabouts as it deploys itself, its plugin still taking its lock a minute ago.
    let now = k8s_openapi::jiff::Timestamp::now();
    let recent = (now - k8s_openapi::jiff::SignedDuration::from_secs(60)).to_string();
    let stale = (now - k8s_openapi::jiff::SignedDuration::from_hours(48)).to_string();
    emulator.insert("daemonsets", whereabouts_daemonset("/etc/cni/net.d"));
    emulator
        .insert("deployments", whereabouts_deployment("whereabouts-reconciler", "/ip-reconciler"));
    emulator.insert(
        "deployments",
        whereabouts_deployment("whereabouts-controller", "/node-slice-controller"),
    );
    emulator.insert(
        "configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "whereabouts-config", "namespace": NS},
               "data": {"cron-expression": "30 4 * * *"}}),
    );
    emulator.insert("leases", lease("whereabouts", &recent, "default/pod-1"));
    // A pool's Lease (node slices) Whereabouts released two days ago, and an unrelated Lease.
    emulator.insert(
        "ippools",
        json!({"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "IPPool",
               "metadata": {"name": "worker-1-green-10.40.0.0-28", "namespace": NS},
               "spec": {"range": "10.40.0.0/28", "allocations": {}}}),
    );
    emulator.insert("leases", lease("worker-1-green-10.40.0.0-28", &stale, ""));
    emulator.insert("leases", lease("kube-scheduler", &recent, "master-1"));
    // A NAD the core refuses (everything excluded: every ADD would fail), one with a value
    // both ignore, one with Whereabouts' leader-election keys.
    emulator.insert(
        "network-attachment-definitions",
        nad(
            "default",
            "closed",
            json!({"type": "whereabouts", "range": "10.7.0.4/30", "exclude": ["10.7.0.4/30"]}),
        ),
    );
    emulator.insert(
        "network-attachment-definitions",
        nad(
            "tenant-a",
            "outside",
            json!({"type": "whereabouts", "range": "10.20.0.0/24", "range_start": "10.99.0.10"}),
        ),
    );
    emulator.insert(
        "network-attachment-definitions",
        nad(
            "tenant-a",
            "elected",
            json!({"type": "whereabouts", "range": "10.30.0.0/24", "leader_lease_duration": 1500}),
        ),
    );

    let (code, findings) = migrate_check(&kubeconfig);
    assert_eq!(code, 1, "{findings:#?}");
    let ds = finding(&findings, "DaemonSet kube-system/whereabouts");
    assert_eq!(ds["conflict"], true);
    let why = ds["why"].as_str().unwrap();
    assert!(
        why.contains("ip-control-loop")
            && why.contains("install-cni.sh")
            && why.contains("IPAMClaim"),
        "{why}"
    );
    assert_eq!(ds["action"], "kubectl -n kube-system delete daemonset whereabouts");
    let reconciler = finding(&findings, "Deployment kube-system/whereabouts-reconciler");
    assert_eq!(reconciler["conflict"], true);
    assert!(reconciler["why"].as_str().unwrap().contains("reconciler"), "{reconciler}");
    let slices = finding(&findings, "Deployment kube-system/whereabouts-controller");
    assert_eq!(slices["conflict"], true);
    assert!(slices["why"].as_str().unwrap().contains("NodeSlicePools"), "{slices}");
    let config = finding(&findings, "ConfigMap kube-system/whereabouts-config");
    assert_eq!(config["conflict"], false);
    assert!(config["why"].as_str().unwrap().contains("30 4 * * *"), "{config}");
    let lock = finding(&findings, "Lease kube-system/whereabouts");
    assert_eq!(lock["conflict"], true, "renewed a minute ago: {lock}");
    assert!(lock["why"].as_str().unwrap().contains("default/pod-1"), "{lock}");
    let released = finding(&findings, "Lease kube-system/worker-1-green-10.40.0.0-28");
    assert_eq!(released["conflict"], false, "{released}");
    assert!(!findings.iter().any(|f| f["object"].as_str().unwrap().contains("kube-scheduler")));
    let closed = finding(&findings, "NetworkAttachmentDefinition default/closed");
    assert_eq!(closed["conflict"], true);
    assert!(closed["why"].as_str().unwrap().contains("exclude"), "{closed}");
    let outside =
        finding(&findings, "NetworkAttachmentDefinition tenant-a/outside ipam.range_start");
    assert_eq!(outside["conflict"], false, "{outside}");
    let elected = finding(&findings, "NetworkAttachmentDefinition tenant-a/elected");
    assert_eq!(elected["conflict"], false);
    assert!(elected["why"].as_str().unwrap().contains("leader_lease_duration"), "{elected}");
    // The default CNI config directory: a flat file Hereabouts reads too.
    assert!(!findings.iter().any(|f| f["object"].as_str().unwrap().contains("flat file")));
    // Hereabouts' own workloads are never taken for Whereabouts'.
    assert!(
        !findings.iter().any(|f| f["object"].as_str().unwrap().contains("/hereabouts")),
        "{findings:#?}"
    );

    // The text form says the same, one conflict or note per object, and what to do.
    let text = Command::new(env!("CARGO_BIN_EXE_hereabouts"))
        .args(["migrate", "check", "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .unwrap();
    assert_eq!(text.status.code(), Some(1));
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("conflict: DaemonSet kube-system/whereabouts:"), "{text}");
    assert!(text.contains("  do: kubectl -n kube-system delete deployment whereabouts-reconciler"));
    assert!(text.lines().last().unwrap().ends_with("notes"), "{text}");

    // A Whereabouts installed with another CNI config directory wrote its flat file where
    // Hereabouts does not look.
    let mut elsewhere = whereabouts_daemonset("/etc/cni/multus/net.d");
    elsewhere["metadata"]["name"] = json!("whereabouts-multus");
    emulator.insert("daemonsets", elsewhere);
    let (_, findings) = migrate_check(&kubeconfig);
    let flat = finding(
        &findings,
        "DaemonSet kube-system/whereabouts-multus flat file /etc/cni/multus/net.d/whereabouts.d/whereabouts.conf",
    );
    assert_eq!(flat["conflict"], true);
    assert!(flat["action"].as_str().unwrap().contains("configuration_path"), "{flat}");

    // Done as the findings say (and the refused NAD fixed): only notes remain, exit 0.
    for (plural, name) in [
        ("daemonsets", "whereabouts"),
        ("daemonsets", "whereabouts-multus"),
        ("deployments", "whereabouts-reconciler"),
        ("deployments", "whereabouts-controller"),
        ("leases", "whereabouts"),
    ] {
        assert!(emulator.delete(plural, NS, name), "{plural}/{name}");
    }
    let mut fixed = emulator.get("network-attachment-definitions", "default", "closed").unwrap();
    fixed["spec"] =
        nad("default", "closed", json!({"type": "whereabouts", "range": "10.7.0.0/24"}))["spec"]
            .clone();
    emulator.update("network-attachment-definitions", fixed);
    let (code, findings) = migrate_check(&kubeconfig);
    assert_eq!(code, 0, "{findings:#?}");
    assert!(findings.iter().all(|f| f["conflict"] == false), "{findings:#?}");
    assert!(!findings.is_empty(), "the notes stay listed: {findings:#?}");
}

/// A reconciler scaled to zero no longer runs: a note, not a conflict; an API server that
/// cannot be reached is exit 2, never a clean pass.
#[test]
fn migrate_check_tells_a_stopped_reconciler_and_an_unreachable_server_apart() {
    let emulator = Emulator::start();
    let dir = kube_api::temp_dir("kube-migrate", "stopped");
    let kubeconfig = emulator.kubeconfig(&dir, Some(NS));
    let mut stopped = whereabouts_deployment("whereabouts-reconciler", "/ip-reconciler");
    stopped["spec"]["replicas"] = json!(0);
    emulator.insert("deployments", stopped);
    let (code, findings) = migrate_check(&kubeconfig);
    assert_eq!(code, 0, "{findings:#?}");
    let note = finding(&findings, "Deployment kube-system/whereabouts-reconciler");
    assert_eq!(note["conflict"], false);
    assert!(note["why"].as_str().unwrap().contains("scaled to 0"), "{note}");

    // --namespace: where Whereabouts' objects are looked for (a context's namespace is often
    // `default`); its Lease there is found.
    let elsewhere = emulator.kubeconfig(&dir.join("default-context"), Some("default"));
    emulator.insert(
        "leases",
        lease("whereabouts", &k8s_openapi::jiff::Timestamp::now().to_string(), "default/pod-2"),
    );
    let (code, findings) = migrate_check(&elsewhere);
    assert_eq!(code, 0, "nothing of Whereabouts in `default`: {findings:#?}");
    let output = Command::new(env!("CARGO_BIN_EXE_hereabouts"))
        .args(["migrate", "check", "--json", "--namespace", NS, "--kubeconfig"])
        .arg(&elsewhere)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stdout));
    assert!(String::from_utf8_lossy(&output.stdout).contains("Lease kube-system/whereabouts"));

    emulator.deny("list", "leases");
    let output = Command::new(env!("CARGO_BIN_EXE_hereabouts"))
        .args(["migrate", "check", "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stdout));
    assert!(String::from_utf8_lossy(&output.stderr).contains("leases"));
}
