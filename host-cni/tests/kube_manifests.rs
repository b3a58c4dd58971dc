//! Every manifest in deploy/ (and the Helm chart, rendered with its default values) parses into
//! its typed k8s-openapi object, and serialising that object gives back exactly what the file
//! says — so a misspelt or misplaced field, which the typed parse alone would silently drop,
//! fails here. Also: deploy/crds.yaml is what `hereabouts crds` prints, the chart's defaults
//! render to the same objects as deploy/, and the RBAC rules cover what the store uses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn documents(text: &str, origin: &str) -> Vec<Value> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).unwrap_or_else(|e| panic!("{origin}: not YAML: {e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// Typed parse + round trip: the typed object must serialise back to the document.
fn check_typed<T: DeserializeOwned + Serialize>(doc: &Value, origin: &str) {
    let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{origin}: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(&back, doc, "{origin}: fields the typed object does not know were dropped (typo?)");
}

fn check_document(doc: &Value, origin: &str) -> String {
    let api_version =
        doc["apiVersion"].as_str().unwrap_or_else(|| panic!("{origin}: no apiVersion"));
    let kind = doc["kind"].as_str().unwrap_or_else(|| panic!("{origin}: no kind"));
    let name =
        doc["metadata"]["name"].as_str().unwrap_or_else(|| panic!("{origin}: no metadata.name"));
    let origin = format!("{origin} {kind}/{name}");
    match (api_version, kind) {
        ("v1", "ServiceAccount") => check_typed::<ServiceAccount>(doc, &origin),
        ("v1", "Service") => check_typed::<Service>(doc, &origin),
        ("rbac.authorization.k8s.io/v1", "Role") => check_typed::<Role>(doc, &origin),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => check_typed::<RoleBinding>(doc, &origin),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => check_typed::<ClusterRole>(doc, &origin),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            check_typed::<ClusterRoleBinding>(doc, &origin)
        }
        ("apps/v1", "DaemonSet") => check_typed::<DaemonSet>(doc, &origin),
        ("apps/v1", "Deployment") => check_typed::<Deployment>(doc, &origin),
        ("batch/v1", "CronJob") => check_typed::<CronJob>(doc, &origin),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            check_typed::<CustomResourceDefinition>(doc, &origin)
        }
        other => panic!("{origin}: no typed check for {other:?}"),
    }
    format!("{kind}/{name}")
}

/// deploy/*.yaml: kind/name → document.
fn deploy_objects() -> BTreeMap<String, Value> {
    let mut objects = BTreeMap::new();
    let mut files: Vec<_> =
        std::fs::read_dir(deploy_dir()).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for path in files.iter().filter(|p| p.extension().is_some_and(|e| e == "yaml")) {
        let text = std::fs::read_to_string(path).unwrap();
        for doc in documents(&text, &path.display().to_string()) {
            let key = check_document(&doc, &path.display().to_string());
            assert!(objects.insert(key.clone(), doc).is_none(), "{key} defined twice");
        }
    }
    objects
}

#[test]
fn every_deploy_manifest_is_a_valid_typed_object() {
    let objects = deploy_objects();
    for expected in [
        "CustomResourceDefinition/ippools.whereabouts.cni.cncf.io",
        "CustomResourceDefinition/overlappingrangeipreservations.whereabouts.cni.cncf.io",
        "ServiceAccount/hereabouts",
        "DaemonSet/hereabouts",
        "CronJob/hereabouts-reconcile",
        "Deployment/hereabouts-controller",
    ] {
        assert!(
            objects.contains_key(expected),
            "{expected} missing from deploy/: {:?}",
            objects.keys()
        );
    }
}

#[test]
fn deploy_crds_are_what_hereabouts_crds_prints() {
    let file = std::fs::read_to_string(deploy_dir().join("crds.yaml")).unwrap();
    let body: String =
        file.lines().skip_while(|l| l.starts_with('#')).map(|l| format!("{l}\n")).collect();
    assert_eq!(
        body,
        hereabouts_stores::kube::crd::crds_yaml(),
        "regenerate: hereabouts crds > deploy/crds.yaml"
    );
    let chart =
        std::fs::read_to_string(deploy_dir().join("helm/hereabouts/crds/crds.yaml")).unwrap();
    assert_eq!(chart, file, "the chart's crds/ must be deploy/crds.yaml");
    // And the output of the binary itself.
    let output =
        std::process::Command::new(env!("CARGO_BIN_EXE_hereabouts")).arg("crds").output().unwrap();
    assert!(output.status.success());
    assert_eq!(String::from_utf8(output.stdout).unwrap(), body);
}

/// The IPAMClaim CRD ships on its own (KubeVirt and OVN-Kubernetes install it too): what
/// `hereabouts crds --ipamclaims` prints, in deploy/ and the chart's crds/ (which Helm skips
/// when the CRD exists), with upstream's names, scope and status subresource.
#[test]
fn deploy_ipamclaims_crd_is_what_hereabouts_crds_ipamclaims_prints() {
    let file = std::fs::read_to_string(deploy_dir().join("ipamclaims-crd.yaml")).unwrap();
    let body: String =
        file.lines().skip_while(|l| l.starts_with('#')).map(|l| format!("{l}\n")).collect();
    assert_eq!(
        body,
        hereabouts_stores::kube::crd::ipamclaims_crd_yaml(),
        "regenerate: hereabouts crds --ipamclaims (after the comment) > deploy/ipamclaims-crd.yaml"
    );
    let chart =
        std::fs::read_to_string(deploy_dir().join("helm/hereabouts/crds/ipamclaims-crd.yaml"))
            .unwrap();
    assert_eq!(chart, file, "the chart's crds/ must hold deploy/ipamclaims-crd.yaml");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hereabouts"))
        .args(["crds", "--ipamclaims"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(String::from_utf8(output.stdout).unwrap(), body);
    let crd = &documents(&body, "ipamclaims-crd.yaml")[0];
    assert_eq!(crd["metadata"]["name"], "ipamclaims.k8s.cni.cncf.io");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["subresources"]["status"], serde_json::json!({}));
    let schema = &version["schema"]["openAPIV3Schema"];
    assert!(schema.get("required").is_none(), "spec is optional upstream");
    assert_eq!(
        schema["properties"]["spec"]["required"],
        serde_json::json!(["interface", "network"])
    );
    assert_eq!(schema["properties"]["status"]["required"], serde_json::json!(["ips"]));
    // Whereabouts' CRDs never include it.
    assert!(!hereabouts_stores::kube::crd::crds_yaml().contains("ipamclaims"));
}

fn rules_of(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for rule in doc["rules"].as_array().unwrap() {
        for resource in rule["resources"].as_array().unwrap() {
            for verb in rule["verbs"].as_array().unwrap() {
                out.push((
                    resource.as_str().unwrap().to_string(),
                    verb.as_str().unwrap().to_string(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn rbac_grants_exactly_what_the_store_and_reconciler_use() {
    let objects = deploy_objects();
    let pair = |r: &str, v: &str| (r.to_string(), v.to_string());
    // The CNI plugin: read-pool (get), commit: the pool (create/update), reserve (create; get
    // the holder; update to take it over, and to put it back when the commit does not go
    // through), release (get, delete).
    assert_eq!(
        rules_of(&objects["Role/hereabouts"]),
        vec![
            pair("ippools", "create"),
            pair("ippools", "get"),
            pair("ippools", "update"),
            pair("nodeslicepools", "get"),
            pair("overlappingrangeipreservations", "create"),
            pair("overlappingrangeipreservations", "delete"),
            pair("overlappingrangeipreservations", "get"),
            pair("overlappingrangeipreservations", "update"),
        ]
    );
    // IPAMClaims: the plugin reads the pod's network selections and the claim, and writes the
    // claim's status, in the pod's namespace (a cluster role).
    assert_eq!(
        rules_of(&objects["ClusterRole/hereabouts"]),
        vec![pair("ipamclaims", "get"), pair("ipamclaims/status", "update"), pair("pods", "get")]
    );
    assert_eq!(
        objects["ClusterRoleBinding/hereabouts"]["subjects"][0]["name"], "hereabouts",
        "bound to the plugin's service account"
    );
    assert_eq!(
        rules_of(&objects["ClusterRole/hereabouts-reconciler"]),
        vec![
            pair("events", "create"),
            // Reconcile lists the claims; the controller watches them and gets one.
            pair("ipamclaims", "get"),
            pair("ipamclaims", "list"),
            pair("ipamclaims", "watch"),
            pair("network-attachment-definitions", "list"),
            pair("network-attachment-definitions", "watch"),
            pair("nodes", "get"),
            pair("nodes", "list"),
            pair("nodes", "watch"),
            pair("pods", "get"),
            pair("pods", "list"),
            pair("pods", "watch"),
            // StatefulSet members' addresses: reconcile lists the sets; the controller watches
            // them and gets one.
            pair("statefulsets", "get"),
            pair("statefulsets", "list"),
            pair("statefulsets", "watch"),
        ]
    );
    // The node-slice controller writes NodeSlicePools.
    assert_eq!(
        rules_of(&objects["Role/hereabouts-reconciler"])
            .into_iter()
            .filter(|(r, _)| r == "nodeslicepools")
            .map(|(_, v)| v)
            .collect::<Vec<_>>(),
        ["create", "delete", "get", "list", "update"]
    );
    // The plugin learns its node's name from the nodename file `install` writes.
    let env = objects["DaemonSet/hereabouts"]
        .pointer("/spec/template/spec/containers/0/env")
        .unwrap()
        .to_string();
    assert!(env.contains("NODENAME") && env.contains("spec.nodeName"), "{env}");
    // Every workload runs under a service account that exists.
    for (key, account) in [
        ("DaemonSet/hereabouts", "/spec/template/spec/serviceAccountName"),
        ("Deployment/hereabouts-controller", "/spec/template/spec/serviceAccountName"),
        ("CronJob/hereabouts-reconcile", "/spec/jobTemplate/spec/template/spec/serviceAccountName"),
    ] {
        let name = objects[key].pointer(account).and_then(Value::as_str).unwrap();
        assert!(
            objects.contains_key(&format!("ServiceAccount/{name}")),
            "{key}: service account {name} missing"
        );
    }
    // The DaemonSet installs into the CNI directories of the host.
    let ds = &objects["DaemonSet/hereabouts"];
    let command = ds.pointer("/spec/template/spec/containers/0/command").unwrap().to_string();
    assert!(
        command.contains("install") && command.contains("--bin-dir=/host/opt/cni/bin"),
        "{command}"
    );
    let volumes = ds.pointer("/spec/template/spec/volumes").unwrap().to_string();
    assert!(volumes.contains("/opt/cni/bin") && volumes.contains("/etc/cni/net.d"), "{volumes}");
}

/// Renders the subset of Helm's template language the chart uses: `{{ .Values.a.b }}`,
/// `{{ .Release.Namespace }}`, and whole-line `{{- if .Values.x }}` … `{{- end }}`.
/// The test fails on any other action, so the chart cannot outgrow what is checked here.
fn render(template: &str, values: &Value, namespace: &str) -> String {
    let lookup = |path: &str| -> Value {
        let pointer = format!("/{}", path.trim().trim_start_matches(".Values.").replace('.', "/"));
        values.pointer(&pointer).cloned().unwrap_or_else(|| panic!("no value {path}"))
    };
    let mut out = String::new();
    let mut skipping = 0usize;
    let mut depth = 0usize;
    for line in template.lines() {
        let trimmed = line.trim();
        if let Some(condition) = trimmed.strip_prefix("{{- if ").and_then(|r| r.strip_suffix("}}"))
        {
            depth += 1;
            let on = match lookup(condition) {
                Value::Bool(b) => b,
                Value::Null => false,
                _ => true,
            };
            if skipping == 0 && !on {
                skipping = depth;
            }
            continue;
        }
        if trimmed == "{{- end }}" {
            if skipping == depth {
                skipping = 0;
            }
            depth -= 1;
            continue;
        }
        if skipping > 0 {
            continue;
        }
        let mut rendered = String::new();
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            rendered.push_str(&rest[..start]);
            let end = rest[start..].find("}}").expect("unclosed action") + start;
            let action = rest[start + 2..end].trim();
            let value = match action {
                ".Release.Namespace" => namespace.to_string(),
                a if a.starts_with(".Values.") => match lookup(a) {
                    Value::String(s) => s,
                    other => other.to_string(),
                },
                other => panic!("template action {other:?} is not in the checked subset"),
            };
            rendered.push_str(&value);
            rest = &rest[end + 2..];
        }
        rendered.push_str(rest);
        out.push_str(&rendered);
        out.push('\n');
    }
    out
}

#[test]
fn the_helm_chart_renders_to_the_same_objects_as_deploy() {
    let chart = deploy_dir().join("helm/hereabouts");
    let values: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart.join("values.yaml")).unwrap())
            .unwrap();
    let meta: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart.join("Chart.yaml")).unwrap())
            .unwrap();
    assert_eq!(meta["apiVersion"], "v2");
    assert_eq!(meta["name"], "hereabouts");

    let mut rendered = BTreeMap::new();
    for file in ["crds.yaml", "ipamclaims-crd.yaml"] {
        let crds = std::fs::read_to_string(chart.join("crds").join(file)).unwrap();
        for doc in documents(&crds, "chart crds") {
            rendered.insert(check_document(&doc, &format!("chart crds/{file}")), doc);
        }
    }
    let mut templates: Vec<_> =
        std::fs::read_dir(chart.join("templates")).unwrap().map(|e| e.unwrap().path()).collect();
    templates.sort();
    for path in templates {
        let text = render(&std::fs::read_to_string(&path).unwrap(), &values, "kube-system");
        for doc in documents(&text, &path.display().to_string()) {
            rendered.insert(check_document(&doc, &path.display().to_string()), doc);
        }
    }
    let deploy = deploy_objects();
    assert_eq!(rendered.keys().collect::<Vec<_>>(), deploy.keys().collect::<Vec<_>>());
    for (key, doc) in &deploy {
        assert_eq!(&rendered[key], doc, "chart and deploy/ differ for {key}");
    }

    // The dead-node grace period, off by default, reaches reconcile's arguments when set.
    let cronjob = std::fs::read_to_string(chart.join("templates/reconcile-cronjob.yaml")).unwrap();
    let args = |values: &Value| {
        let text = render(&cronjob, values, "kube-system");
        documents(&text, "reconcile-cronjob.yaml")[0]
            .pointer("/spec/jobTemplate/spec/template/spec/containers/0/args")
            .cloned()
    };
    assert_eq!(args(&values), None);
    let mut graced = values.clone();
    graced["reconcile"]["notReadyGraceSeconds"] = serde_json::json!(600);
    assert_eq!(args(&graced), Some(serde_json::json!(["--not-ready-grace-seconds=600"])));
    // With the etcd store, reconcile reads the networks from the Secret named.
    let mut on_etcd = values.clone();
    on_etcd["reconcile"]["etcdConfigSecret"] = Value::from("etcd-networks");
    let job = documents(&render(&cronjob, &on_etcd, "kube-system"), "reconcile-cronjob.yaml")[0]
        .pointer("/spec/jobTemplate/spec/template/spec")
        .cloned()
        .unwrap();
    let env = job.pointer("/containers/0/env").unwrap().as_array().unwrap();
    let config = env.iter().find(|e| e["name"] == "HEREABOUTS_RECONCILE_CONFIG").unwrap();
    let mount = job.pointer("/containers/0/volumeMounts/0").unwrap();
    assert_eq!(
        Path::new(config["value"].as_str().unwrap()).parent().unwrap(),
        Path::new(mount["mountPath"].as_str().unwrap())
    );
    assert_eq!(job.pointer("/volumes/0/secret/secretName"), Some(&Value::from("etcd-networks")));
    assert_eq!(job.pointer("/volumes/0/name"), Some(&mount["name"]));

    // The ServiceMonitor, off by default, scrapes the controller's metrics port when on.
    let controller = std::fs::read_to_string(chart.join("templates/controller.yaml")).unwrap();
    let kinds = |values: &Value| {
        documents(&render(&controller, values, "kube-system"), "controller.yaml")
            .iter()
            .map(|d| d["kind"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds(&values), ["Deployment", "Service"]);
    let mut monitored = values.clone();
    monitored["controller"]["serviceMonitor"] = Value::Bool(true);
    assert_eq!(kinds(&monitored), ["Deployment", "Service", "ServiceMonitor"]);
    let monitor =
        documents(&render(&controller, &monitored, "kube-system"), "controller.yaml")[2].clone();
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    let deployment = &rendered["Deployment/hereabouts-controller"];
    assert_eq!(
        deployment.pointer("/spec/template/spec/containers/0/ports/0/name"),
        Some(&Value::from("metrics"))
    );

    // Switching the optional parts off removes them.
    let mut off = values.clone();
    off["controller"]["enabled"] = Value::Bool(false);
    off["reconcile"]["enabled"] = Value::Bool(false);
    for name in ["controller.yaml", "reconcile-cronjob.yaml"] {
        let text = render(
            &std::fs::read_to_string(chart.join("templates").join(name)).unwrap(),
            &off,
            "kube-system",
        );
        assert!(documents(&text, name).is_empty(), "{name} still renders when disabled:\n{text}");
    }
}
