//! Every manifest in deploy/ (and the Helm chart, rendered with its default values) parses into
//! its typed k8s-openapi object, and serialising that object gives back exactly what the file
//! says — so a misspelt or misplaced field, which the typed parse alone would silently drop,
//! fails here. Also: deploy/crds.yaml is what `hereabouts crds` prints, the chart's defaults
//! render to the same objects as deploy/ and its other values to what they say (rendered by
//! real helm, built by tests/k8s/tools/helm.sh, which `helm lint`s it too), every workload
//! drops all capabilities under `seccompProfile: RuntimeDefault`, and the RBAC rules cover
//! what the store uses.

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
    // through), release (get, delete); CNI GC lists the reservations (list-reservations), as
    // the real API server showed (host-cni/tests/k8s: 403 without it).
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
            pair("overlappingrangeipreservations", "list"),
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

fn chart_dir() -> PathBuf {
    deploy_dir().join("helm/hereabouts")
}

/// The helm binary: built once from its pinned Go module by tests/k8s/tools/helm.sh (cached
/// under target/tools), the same script the real-apiserver suite uses.
fn helm() -> PathBuf {
    static HELM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    HELM.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/k8s/tools/helm.sh");
        let output = std::process::Command::new("bash").arg(&script).output().unwrap();
        assert!(
            output.status.success(),
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
    })
    .clone()
}

/// `helm template hereabouts deploy/helm/hereabouts -n kube-system` with `values` (YAML, may
/// be empty) as an extra values file: the rendered documents, each typed-checked.
fn helm_template(values: &str) -> Vec<Value> {
    static RENDERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = RENDERS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let file =
        std::env::temp_dir().join(format!("hereabouts-values-{}-{n}.yaml", std::process::id()));
    std::fs::write(&file, values).unwrap();
    let output = std::process::Command::new(helm())
        .args(["template", "hereabouts"])
        .arg(chart_dir())
        .args(["--namespace", "kube-system", "--values"])
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(output.status.success(), "helm template: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let docs = documents(&text, "helm template");
    for doc in &docs {
        if doc["kind"] != "ServiceMonitor" {
            check_document(doc, "helm template");
        }
    }
    docs
}

fn by_key(docs: &[Value]) -> BTreeMap<String, Value> {
    docs.iter()
        .map(|d| {
            (
                format!(
                    "{}/{}",
                    d["kind"].as_str().unwrap(),
                    d["metadata"]["name"].as_str().unwrap()
                ),
                d.clone(),
            )
        })
        .collect()
}

/// The pod spec of a workload (DaemonSet, Deployment, CronJob).
fn pod_spec(doc: &Value) -> &Value {
    doc.pointer("/spec/template/spec")
        .or_else(|| doc.pointer("/spec/jobTemplate/spec/template/spec"))
        .unwrap_or_else(|| panic!("no pod spec in {}", doc["kind"]))
}

fn pod_metadata(doc: &Value) -> &Value {
    doc.pointer("/spec/template/metadata")
        .or_else(|| doc.pointer("/spec/jobTemplate/spec/template/metadata"))
        .unwrap()
}

#[test]
fn the_helm_chart_renders_to_the_same_objects_as_deploy_and_lints() {
    let meta: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap())
            .unwrap();
    assert_eq!(meta["apiVersion"], "v2");
    assert_eq!(meta["name"], "hereabouts");

    let mut rendered = BTreeMap::new();
    for file in ["crds.yaml", "ipamclaims-crd.yaml"] {
        let crds = std::fs::read_to_string(chart_dir().join("crds").join(file)).unwrap();
        for doc in documents(&crds, "chart crds") {
            rendered.insert(check_document(&doc, &format!("chart crds/{file}")), doc);
        }
    }
    rendered.extend(by_key(&helm_template("")));
    let deploy = deploy_objects();
    assert_eq!(rendered.keys().collect::<Vec<_>>(), deploy.keys().collect::<Vec<_>>());
    for (key, doc) in &deploy {
        assert_eq!(&rendered[key], doc, "chart and deploy/ differ for {key}");
    }

    for values in ["", NON_DEFAULT_VALUES] {
        let file = std::env::temp_dir().join(format!(
            "hereabouts-lint-{}-{}.yaml",
            std::process::id(),
            values.len()
        ));
        std::fs::write(&file, values).unwrap();
        let output = std::process::Command::new(helm())
            .args(["lint", "--strict"])
            .arg(chart_dir())
            .arg("--values")
            .arg(&file)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&file);
        assert!(
            output.status.success(),
            "helm lint:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Issue 21: no workload keeps a capability or runs without the runtime's seccomp profile.
#[test]
fn every_workload_drops_all_capabilities_under_runtime_default_seccomp() {
    let deploy = deploy_objects();
    let chart = by_key(&helm_template(NON_DEFAULT_VALUES));
    for (origin, objects) in [("deploy/", &deploy), ("chart", &chart)] {
        let workloads: Vec<_> = objects
            .iter()
            .filter(|(k, _)| {
                ["DaemonSet/", "Deployment/", "CronJob/"].iter().any(|p| k.starts_with(p))
            })
            .collect();
        assert_eq!(workloads.len(), 3, "{origin}: {:?}", objects.keys());
        for (key, doc) in workloads {
            let spec = pod_spec(doc);
            assert_eq!(
                spec.pointer("/securityContext/seccompProfile/type"),
                Some(&Value::from("RuntimeDefault")),
                "{origin} {key}"
            );
            for container in spec["containers"].as_array().unwrap() {
                let security = &container["securityContext"];
                assert_eq!(
                    security["capabilities"],
                    serde_json::json!({"drop": ["ALL"]}),
                    "{origin} {key}"
                );
                assert_eq!(security["allowPrivilegeEscalation"], false, "{origin} {key}");
                assert!(security.get("privileged").is_none(), "{origin} {key}");
            }
        }
    }
}

/// Every value Whereabouts' chart offers, set to something other than its default.
const NON_DEFAULT_VALUES: &str = r#"
fullnameOverride: ipam
nameOverride: addresses
namespaceOverride: networking
image:
  repository: registry.example.com/hereabouts
  tag: ""
imagePullSecrets:
- name: pull-secret
podAnnotations:
  example.com/owner: network-team
serviceAccount:
  create: false
  name: existing-plugin
reconcilerServiceAccount:
  name: cleaner
  annotations:
    example.com/role: reconcile
nodeSelector:
  node-role.example.com/cni: "true"
tolerations:
- key: example.com/dedicated
  operator: Equal
  value: network
  effect: NoSchedule
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
      - matchExpressions:
        - key: kubernetes.io/arch
          operator: In
          values: [amd64, arm64]
priorityClassName: cni-critical
updateStrategy: OnDelete
resources:
  requests:
    cpu: 50m
    memory: 32Mi
  limits:
    cpu: 200m
    memory: 128Mi
podSecurityContext:
  seccompProfile:
    type: RuntimeDefault
  fsGroup: 2000
securityContext:
  runAsUser: 0
  readOnlyRootFilesystem: true
  allowPrivilegeEscalation: false
  capabilities:
    drop: ["ALL"]
reconcile:
  priorityClassName: batch-low
  tolerations:
  - operator: Exists
    effect: NoSchedule
  resources:
    limits:
      memory: 256Mi
controller:
  nodeSelector:
    kubernetes.io/os: linux
    node-role.kubernetes.io/control-plane: ""
  affinity:
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 1
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              app.kubernetes.io/component: controller
  updateStrategy:
    type: Recreate
  priorityClassName: system-cluster-critical
"#;

#[test]
fn helm_values_of_whereabouts_chart_land_where_they_say() {
    use serde_json::json;
    let objects = by_key(&helm_template(NON_DEFAULT_VALUES));
    // Names from fullnameOverride; no ServiceAccount for the plugin (create: false), the
    // reconciler's under its own name.
    assert_eq!(
        objects.keys().cloned().collect::<Vec<_>>(),
        [
            "ClusterRole/ipam",
            "ClusterRole/ipam-reconciler",
            "ClusterRoleBinding/ipam",
            "ClusterRoleBinding/ipam-reconciler",
            "CronJob/ipam-reconcile",
            "DaemonSet/ipam",
            "Deployment/ipam-controller",
            "Role/ipam",
            "Role/ipam-reconciler",
            "RoleBinding/ipam",
            "RoleBinding/ipam-reconciler",
            "Service/ipam-controller-metrics",
            "ServiceAccount/cleaner",
        ]
        .map(String::from)
    );
    // namespaceOverride: every namespaced object, and every binding's subject.
    for (key, doc) in &objects {
        if !key.starts_with("Cluster") {
            assert_eq!(doc["metadata"]["namespace"], "networking", "{key}");
        }
        if let Some(subjects) = doc["subjects"].as_array() {
            assert_eq!(subjects[0]["namespace"], "networking", "{key}");
        }
    }
    assert_eq!(
        objects["ServiceAccount/cleaner"]["metadata"]["annotations"]["example.com/role"],
        "reconcile"
    );
    for key in ["RoleBinding/ipam", "ClusterRoleBinding/ipam"] {
        assert_eq!(objects[key]["subjects"][0]["name"], "existing-plugin", "{key}");
    }
    for key in ["RoleBinding/ipam-reconciler", "ClusterRoleBinding/ipam-reconciler"] {
        assert_eq!(objects[key]["subjects"][0]["name"], "cleaner", "{key}");
    }
    // Grants are the chart's whatever the names: the same rules as with the defaults.
    let defaults = by_key(&helm_template(""));
    for (key, default_key) in [
        ("Role/ipam", "Role/hereabouts"),
        ("Role/ipam-reconciler", "Role/hereabouts-reconciler"),
        ("ClusterRole/ipam", "ClusterRole/hereabouts"),
        ("ClusterRole/ipam-reconciler", "ClusterRole/hereabouts-reconciler"),
    ] {
        assert_eq!(objects[key]["rules"], defaults[default_key]["rules"], "{key}");
    }

    let ds = &objects["DaemonSet/ipam"];
    let spec = pod_spec(ds);
    assert_eq!(spec["serviceAccountName"], "existing-plugin");
    // Helm merges maps: the default `kubernetes.io/os: linux` stays beside the keys added.
    assert_eq!(
        spec["nodeSelector"],
        json!({"kubernetes.io/os": "linux", "node-role.example.com/cni": "true"})
    );
    assert_eq!(spec["tolerations"][0]["key"], "example.com/dedicated");
    assert_eq!(spec["tolerations"].as_array().unwrap().len(), 1);
    assert_eq!(
        spec.pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchExpressions/0/values"),
        Some(&json!(["amd64", "arm64"]))
    );
    assert_eq!(spec["priorityClassName"], "cni-critical");
    assert_eq!(spec["securityContext"]["fsGroup"], 2000);
    assert_eq!(ds["spec"]["updateStrategy"], json!({"type": "OnDelete"}));
    let container = &spec["containers"][0];
    assert_eq!(container["resources"]["limits"], json!({"cpu": "200m", "memory": "128Mi"}));
    // An empty tag: the chart's appVersion.
    assert_eq!(container["image"], "registry.example.com/hereabouts:0.1.0");
    // nameOverride names the app; the selector is the release's own.
    assert_eq!(ds["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"], "addresses");
    assert_eq!(pod_metadata(ds)["labels"], ds["spec"]["selector"]["matchLabels"]);

    let controller = &objects["Deployment/ipam-controller"];
    let spec = pod_spec(controller);
    assert_eq!(spec["serviceAccountName"], "cleaner");
    assert_eq!(spec["priorityClassName"], "system-cluster-critical");
    assert_eq!(spec["nodeSelector"]["node-role.kubernetes.io/control-plane"], "");
    assert!(spec.pointer("/affinity/podAntiAffinity").is_some());
    assert!(spec.get("tolerations").is_none(), "the DaemonSet's tolerations are its own");
    assert_eq!(controller["spec"]["strategy"], json!({"type": "Recreate"}));
    assert_eq!(
        objects["Service/ipam-controller-metrics"]["spec"]["selector"],
        controller["spec"]["selector"]["matchLabels"]
    );

    let cronjob = &objects["CronJob/ipam-reconcile"];
    let spec = pod_spec(cronjob);
    assert_eq!(spec["serviceAccountName"], "cleaner");
    assert_eq!(spec["priorityClassName"], "batch-low");
    assert_eq!(spec["tolerations"], json!([{"operator": "Exists", "effect": "NoSchedule"}]));
    assert_eq!(spec["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    // Merged over the defaults, as Helm merges maps.
    assert_eq!(
        spec["containers"][0]["resources"],
        json!({"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}})
    );

    // Every pod: the pull secret and the annotations.
    for key in ["DaemonSet/ipam", "Deployment/ipam-controller", "CronJob/ipam-reconcile"] {
        let doc = &objects[key];
        assert_eq!(pod_spec(doc)["imagePullSecrets"], json!([{"name": "pull-secret"}]), "{key}");
        assert_eq!(pod_metadata(doc)["annotations"]["example.com/owner"], "network-team", "{key}");
    }

    // The defaults: the DaemonSet on Linux nodes only, tolerating every taint.
    let spec = pod_spec(&defaults["DaemonSet/hereabouts"]);
    assert_eq!(spec["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    assert_eq!(spec["tolerations"], json!([{"operator": "Exists"}]));
}

#[test]
fn helm_optional_parts_switch_on_and_off() {
    use serde_json::json;
    // The dead-node grace period, off by default, reaches reconcile's arguments when set.
    let args = |values: &str| {
        pod_spec(&by_key(&helm_template(values))["CronJob/hereabouts-reconcile"])
            .pointer("/containers/0/args")
            .cloned()
    };
    assert_eq!(args(""), None);
    assert_eq!(
        args("reconcile: {notReadyGraceSeconds: 600}"),
        Some(json!(["--not-ready-grace-seconds=600"]))
    );
    // With the etcd store, reconcile reads the networks from the Secret named.
    let on_etcd = by_key(&helm_template("reconcile: {etcdConfigSecret: etcd-networks}"));
    let job = pod_spec(&on_etcd["CronJob/hereabouts-reconcile"]);
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
    let kinds = |values: &str| {
        helm_template(values)
            .iter()
            .filter(|d| d["metadata"]["labels"]["app.kubernetes.io/component"] == "controller")
            .map(|d| d["kind"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds(""), ["Service", "Deployment"]);
    assert_eq!(
        kinds("controller: {serviceMonitor: true}"),
        ["Service", "Deployment", "ServiceMonitor"]
    );
    let monitored = by_key(&helm_template("controller: {serviceMonitor: true}"));
    let monitor = &monitored["ServiceMonitor/hereabouts-controller"];
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        monitored["Service/hereabouts-controller-metrics"]["metadata"]["labels"]
    );
    assert_eq!(
        pod_spec(&monitored["Deployment/hereabouts-controller"])
            .pointer("/containers/0/ports/0/name"),
        Some(&Value::from("metrics"))
    );

    // Switching the optional parts off removes them.
    let off = by_key(&helm_template("controller: {enabled: false}\nreconcile: {enabled: false}"));
    assert!(
        off.keys().all(|k| !k.starts_with("Deployment/")
            && !k.starts_with("CronJob/")
            && !k.starts_with("Service/")),
        "{:?}",
        off.keys()
    );
    assert!(off.contains_key("DaemonSet/hereabouts"));
}
