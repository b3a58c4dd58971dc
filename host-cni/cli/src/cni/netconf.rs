//! The network configuration on stdin, parsed and validated before anything is touched.
//!
//! Out of it we need: `cniVersion` (the result's format), the `ipam` section merged with
//! Whereabouts' flat file, the runtime's requested addresses (`runtimeConfig.ips`, the `ips`
//! capability, and `args.cni.ips`), `prevResult` for CHECK, and `cni.dev/valid-attachments`
//! for GC; for IPAMClaims, the NAD's `allowPersistentIPs` and an `ipam-claim-reference` the
//! runtime passes in `args.cni` (Multus forwards a selection element's `cni-args` there); for
//! StatefulSets, `persistentStatefulSetIPs` beside it. Every rejection names the field: 6 when
//! stdin is not JSON, 1 for an unsupported version, 7 for everything else.

use std::path::PathBuf;

use serde_json::Value;

use super::env::CniArgs;
use super::result::Statics;
use super::version::CniVersion;
use hereabouts_host::bindings::Owner;
use hereabouts_host::config::{self, IpamConfig};
use hereabouts_host::error::{CniError, Code};
use hereabouts_stores::kube::statefulsets::{Policy, Retention};

/// The ipam `type`s we answer to: an installer links the binary under both names.
pub const PLUGIN_TYPES: &[&str] = &["hereabouts", "whereabouts"];

#[derive(Debug, Clone)]
pub struct NetConf {
    pub cni_version: CniVersion,
    /// The network's `name`.
    pub name: String,
    pub ipam: IpamConfig,
    /// The ipam section as JSON text, Whereabouts' flat file merged in: what the component
    /// reads (`read-config`).
    pub ipam_text: String,
    /// `routes`, `dns` and static `addresses` of the ipam section, validated.
    pub statics: Statics,
    /// Addresses the runtime asks for through the config (`runtimeConfig.ips`, `args.cni.ips`).
    pub requested: Vec<String>,
    pub prev_result: Option<Value>,
    /// `cni.dev/valid-attachments` (GC): the attachments to keep.
    pub valid_attachments: Option<Vec<Owner>>,
    /// The flat file merged into `ipam`, if one was found.
    pub flat_file: Option<PathBuf>,
    /// Every flat-file path tried, in order (`configuration_path` first).
    pub flat_files_searched: Vec<String>,
    /// Whether `ipam.log_file` came from the flat file (the node's admin) rather than the
    /// network config (whoever may write a NAD): see `log`.
    pub log_file_from_flat_file: bool,
    /// `allowPersistentIPs` (the NAD's config, as OVN-Kubernetes reads it): IPAMClaims are
    /// honoured only when true.
    pub allow_persistent_ips: bool,
    /// `args.cni["ipam-claim-reference"]`: the claim, when the runtime names it (else the
    /// pod's network-selection annotation is read).
    pub claim_reference: Option<String>,
    /// `persistentStatefulSetIPs` (top level, beside `allowPersistentIPs`): a StatefulSet
    /// pod's address outlives the pod, kept and freed as this policy says; None: off.
    pub persistent_statefulset_ips: Option<Retention>,
}

impl NetConf {
    /// Parses stdin's network config; `flat_files` are the default flat-file locations.
    pub fn parse(text: &str, flat_files: &[&str]) -> Result<Self, CniError> {
        let document: Value = serde_json::from_str(text).map_err(|e| {
            CniError::new(Code::Decode, format!("network config on stdin is not valid JSON: {e}"))
        })?;
        let Value::Object(mut object) = document else {
            return Err(CniError::new(
                Code::Decode,
                "network config on stdin: expected a JSON object",
            ));
        };
        let cni_version = match object.get("cniVersion") {
            // The spec's decoders treat a config without a version as 0.1.0.
            None => CniVersion::parse("0.1.0")?,
            Some(Value::String(v)) => CniVersion::parse(v)?,
            Some(_) => return Err(invalid("cniVersion: must be a string such as \"1.0.0\"")),
        };
        let name = match object.get("name") {
            None => String::new(),
            Some(Value::String(name)) => name.clone(),
            Some(_) => return Err(invalid("name: must be a string")),
        };
        let mut ipam = object
            .remove("ipam")
            .ok_or_else(|| invalid("ipam: missing; the network config needs an \"ipam\" object"))?;
        if !ipam.is_object() {
            return Err(invalid("ipam: must be an object"));
        }
        match ipam.get("type").and_then(Value::as_str) {
            Some(kind) if PLUGIN_TYPES.contains(&kind) => {}
            Some(kind) => {
                return Err(invalid(format!(
                    "ipam.type: {kind:?} is not this plugin (expected \"hereabouts\" or \"whereabouts\")"
                )));
            }
            None => {
                return Err(invalid(
                    "ipam.type: missing (expected \"hereabouts\" or \"whereabouts\")",
                ));
            }
        }
        let flat_files_searched = config::flat_file_search(&ipam, flat_files);
        let merged = config::merge_flat_file_tracked(&mut ipam, flat_files).map_err(|e| {
            CniError::new(
                if e.is_config_error() { Code::InvalidConfig } else { Code::Io },
                e.to_string(),
            )
        })?;
        let log_file_from_flat_file = merged.as_ref().is_some_and(|m| m.filled("log_file"));
        let flat_file = merged.map(|m| m.path);
        let ipam_text = ipam.to_string();
        let ipam = IpamConfig::from_value(&ipam)?;
        let statics = Statics::from_ipam(&ipam)?;

        let mut requested = string_list(
            object.get("runtimeConfig").and_then(|r| r.get("ips")),
            "runtimeConfig.ips",
        )?;
        requested.extend(string_list(args_cni(&object, "ips"), "args.cni.ips")?);

        let allow_persistent_ips = match object.get("allowPersistentIPs") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(allow)) => *allow,
            Some(_) => return Err(invalid("allowPersistentIPs: must be true or false")),
        };
        let claim_reference = match args_cni(&object, "ipam-claim-reference") {
            None | Some(Value::Null) => None,
            Some(Value::String(claim)) => Some(claim.clone()).filter(|c| !c.is_empty()),
            Some(_) => {
                return Err(invalid("args.cni.ipam-claim-reference: must be an IPAMClaim name"));
            }
        };
        let persistent_statefulset_ips = retention(object.get(STATEFULSET_KEY))?;
        let valid_attachments = match object.get("cni.dev/valid-attachments") {
            None | Some(Value::Null) => None,
            Some(value) => Some(attachments(value)?),
        };
        Ok(Self {
            cni_version,
            name,
            ipam,
            ipam_text,
            statics,
            requested,
            prev_result: object.remove("prevResult").filter(|v| !v.is_null()),
            valid_attachments,
            flat_file,
            flat_files_searched,
            log_file_from_flat_file,
            allow_persistent_ips,
            claim_reference,
            persistent_statefulset_ips,
        })
    }
}

impl NetConf {
    /// Whether this call comes from Kubernetes: the runtime names a pod (`K8S_POD_*` in
    /// CNI_ARGS, as every CRI runtime and Multus do), or the ipam type is Whereabouts' own.
    pub fn comes_from_kubernetes(&self, args: &CniArgs) -> bool {
        !args.pod_namespace.is_empty()
            || !args.pod_name.is_empty()
            || self.ipam.kind == "whereabouts"
    }

    /// Refuses a call from Kubernetes whose config (flat file merged) chooses no store: the
    /// embedded local store is used when a config asks for it, or where no Kubernetes is
    /// involved at all — never silently for a pod (see [`config::unchosen_store`]).
    pub fn require_chosen_store(&self, args: &CniArgs) -> Result<(), CniError> {
        if self.ipam.chooses_store() || !self.comes_from_kubernetes(args) {
            return Ok(());
        }
        let why = config::unchosen_store(&self.flat_files_searched, self.flat_file.as_deref());
        Err(invalid(why))
    }
}

/// The top-level key that opts a network's StatefulSet pods into persistent addresses.
pub const STATEFULSET_KEY: &str = "persistentStatefulSetIPs";

/// `persistentStatefulSetIPs`: absent, null or false is off; true is the defaults
/// (`whenDeleted: Delete`, `whenScaled: Retain`); an object sets either, as a StatefulSet's
/// `persistentVolumeClaimRetentionPolicy` does, the other keeping its default.
fn retention(value: Option<&Value>) -> Result<Option<Retention>, CniError> {
    let object = match value {
        None | Some(Value::Null) | Some(Value::Bool(false)) => return Ok(None),
        Some(Value::Bool(true)) => return Ok(Some(Retention::default())),
        Some(Value::Object(object)) => object,
        Some(_) => {
            return Err(invalid(format!(
                "{STATEFULSET_KEY}: must be true, false or {{\"whenDeleted\": …, \"whenScaled\": …}}"
            )));
        }
    };
    let mut retention = Retention::default();
    for (key, value) in object {
        let slot = match key.as_str() {
            "whenDeleted" => &mut retention.when_deleted,
            "whenScaled" => &mut retention.when_scaled,
            _ => {
                return Err(invalid(format!(
                    "{STATEFULSET_KEY}.{key}: unknown key (expected whenDeleted or whenScaled)"
                )));
            }
        };
        *slot = value.as_str().and_then(Policy::parse).ok_or_else(|| {
            invalid(format!(
                "{STATEFULSET_KEY}.{key}: must be \"Retain\" or \"Delete\", not {value}"
            ))
        })?;
    }
    Ok(Some(retention))
}

/// The `cniVersion` to report an error in, even when the config is otherwise unusable.
pub fn error_version(text: &str) -> &'static str {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| {
            v.get("cniVersion").and_then(Value::as_str).and_then(|v| CniVersion::parse(v).ok())
        })
        .map(CniVersion::as_str)
        .unwrap_or(super::version::LATEST)
}

fn args_cni<'a>(object: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    object.get("args").and_then(|a| a.get("cni")).and_then(|c| c.get(key))
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(Code::InvalidConfig, msg)
}

fn string_list(value: Option<&Value>, field: &str) -> Result<Vec<String>, CniError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_str()
                    .map(String::from)
                    .ok_or_else(|| invalid(format!("{field}[{i}]: must be an address string")))
            })
            .collect(),
        Some(_) => Err(invalid(format!("{field}: must be a list of addresses"))),
    }
}

/// `[{"containerID": "…", "ifname": "…"}, …]`
fn attachments(value: &Value) -> Result<Vec<Owner>, CniError> {
    const FIELD: &str = "cni.dev/valid-attachments";
    let items = value.as_array().ok_or_else(|| invalid(format!("{FIELD}: must be a list")))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let text = |key: &str| {
                item.get(key)
                    .and_then(Value::as_str)
                    .map(String::from)
                    .ok_or_else(|| invalid(format!("{FIELD}[{i}].{key}: missing or not a string")))
            };
            Ok(Owner {
                container_id: text("containerID")?,
                ifname: text("ifname")?,
                podref: String::new(),
                cni_network: String::new(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NetConf, CniError> {
        NetConf::parse(text, &[])
    }

    #[test]
    fn reads_version_ipam_requests_and_attachments() {
        let conf = parse(
            r#"{"cniVersion": "1.1.0", "name": "n", "ipam": {"type": "whereabouts", "range": "10.0.0.0/24"},
                "runtimeConfig": {"ips": ["10.0.0.9/24"]}, "args": {"cni": {"ips": ["10.0.0.10"]}},
                "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(conf.cni_version.as_str(), "1.1.0");
        assert!(conf.ipam_text.contains(r#""range":"10.0.0.0/24""#), "{}", conf.ipam_text);
        assert_eq!(conf.requested, vec!["10.0.0.9/24", "10.0.0.10"]);
        assert_eq!(conf.valid_attachments.unwrap()[0].container_id, "c1");
        assert!(!conf.allow_persistent_ips);
        let claimed = parse(
            r#"{"cniVersion": "1.0.0", "name": "n", "allowPersistentIPs": true, "ipam": {"type": "hereabouts"},
                "args": {"cni": {"ipam-claim-reference": "vm-a.n"}}}"#,
        )
        .unwrap();
        assert!(claimed.allow_persistent_ips);
        assert_eq!(claimed.claim_reference.as_deref(), Some("vm-a.n"));
        assert_eq!(conf.persistent_statefulset_ips, None);
    }

    #[test]
    fn persistent_statefulset_ips_mirrors_the_pvc_retention_policy() {
        let with = |value: &str| {
            parse(&format!(
                r#"{{"cniVersion": "1.0.0", "ipam": {{"type": "hereabouts"}}, "persistentStatefulSetIPs": {value}}}"#
            ))
            .map(|conf| conf.persistent_statefulset_ips)
        };
        let policy = |when_deleted, when_scaled| Some(Retention { when_deleted, when_scaled });
        assert_eq!(with("false").unwrap(), None);
        assert_eq!(with("null").unwrap(), None);
        assert_eq!(with("true").unwrap(), policy(Policy::Delete, Policy::Retain));
        assert_eq!(with("{}").unwrap(), policy(Policy::Delete, Policy::Retain));
        assert_eq!(
            with(r#"{"whenDeleted": "Retain", "whenScaled": "Delete"}"#).unwrap(),
            policy(Policy::Retain, Policy::Delete)
        );
        for (value, start) in [
            ("\"yes\"", "persistentStatefulSetIPs: must be true, false or"),
            (
                r#"{"whenScaled": "delete"}"#,
                "persistentStatefulSetIPs.whenScaled: must be \"Retain\" or \"Delete\"",
            ),
            (r#"{"whenDeleted": 1}"#, "persistentStatefulSetIPs.whenDeleted: must be"),
            (r#"{"whenGone": "Delete"}"#, "persistentStatefulSetIPs.whenGone: unknown key"),
        ] {
            let error = with(value).unwrap_err();
            assert_eq!(error.code, Code::InvalidConfig, "{value}");
            assert!(error.msg.starts_with(start), "{value}: {}", error.msg);
        }
    }

    #[test]
    fn rejections_name_the_field() {
        let cases = [
            ("{", Code::Decode, "network config on stdin is not valid JSON"),
            ("[]", Code::Decode, "network config on stdin: expected a JSON object"),
            (
                r#"{"cniVersion": "3.0.0", "ipam": {}}"#,
                Code::IncompatibleVersion,
                "cniVersion: \"3.0.0\"",
            ),
            (r#"{"cniVersion": 1, "ipam": {}}"#, Code::InvalidConfig, "cniVersion:"),
            (r#"{"cniVersion": "1.0.0"}"#, Code::InvalidConfig, "ipam: missing"),
            (
                r#"{"cniVersion": "1.0.0", "ipam": {"type": "host-local"}}"#,
                Code::InvalidConfig,
                "ipam.type: \"host-local\"",
            ),
            (
                r#"{"cniVersion": "1.0.0", "ipam": {"type": "hereabouts", "data_dir": 5}}"#,
                Code::InvalidConfig,
                "ipam.data_dir:",
            ),
            (
                r#"{"cniVersion": "1.0.0", "ipam": {"type": "hereabouts"}, "runtimeConfig": {"ips": [1]}}"#,
                Code::InvalidConfig,
                "runtimeConfig.ips[0]:",
            ),
            (
                r#"{"cniVersion": "1.1.0", "ipam": {"type": "hereabouts"}, "cni.dev/valid-attachments": [{"containerID": "c"}]}"#,
                Code::InvalidConfig,
                "cni.dev/valid-attachments[0].ifname:",
            ),
            (
                r#"{"cniVersion": "1.0.0", "ipam": {"type": "hereabouts"}, "allowPersistentIPs": "yes"}"#,
                Code::InvalidConfig,
                "allowPersistentIPs:",
            ),
        ];
        for (text, code, start) in cases {
            let error = parse(text).unwrap_err();
            assert_eq!(error.code, code, "{text}: {}", error.msg);
            assert!(error.msg.starts_with(start), "{text}: {}", error.msg);
        }
    }

    /// Which calls get a store: the table of issue 20. The embedded store only when the config
    /// asks for it (`datastore: local`, a `data_dir`) or no Kubernetes is involved at all.
    #[test]
    fn a_kubernetes_call_needs_a_store_chosen() {
        let dir = std::env::temp_dir().join(format!("hereabouts-choice-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let flat = |name: &str, body: &str| {
            let path = dir.join(name);
            std::fs::write(&path, body).unwrap();
            path.to_str().unwrap().to_string()
        };
        let kube_flat = flat("kube.conf", r#"{"kubernetes": {"kubeconfig": "/k"}}"#);
        let local_flat = flat("local.conf", r#"{"datastore": "local"}"#);
        let log_flat = flat("log.conf", r#"{"log_level": "debug"}"#);
        let missing = dir.join("missing.conf").to_str().unwrap().to_string();
        let pod = CniArgs::parse("K8S_POD_NAMESPACE=web;K8S_POD_NAME=db-0").unwrap();
        let namespace_only = CniArgs::parse("K8S_POD_NAMESPACE=web").unwrap();
        let no_pod = CniArgs::parse("IgnoreUnknown=1").unwrap();
        // (ipam type, extra ipam keys, flat files, CNI_ARGS, served?)
        let cases: &[(&str, &str, &[&str], &CniArgs, bool)] = &[
            ("hereabouts", "", &[], &no_pod, true),
            ("hereabouts", "", &[], &pod, false),
            ("hereabouts", "", &[], &namespace_only, false),
            ("whereabouts", "", &[], &no_pod, false),
            ("whereabouts", "", &[&missing], &pod, false),
            ("whereabouts", r#", "datastore": "local""#, &[], &pod, true),
            ("whereabouts", r#", "data_dir": "/d""#, &[], &pod, true),
            ("whereabouts", r#", "data_dir": """#, &[], &pod, false),
            ("whereabouts", r#", "etcd_host": "127.0.0.1:2379""#, &[], &pod, true),
            ("whereabouts", r#", "datastore": "etcd""#, &[], &pod, true),
            ("whereabouts", r#", "kubernetes": {"kubeconfig": "/k"}"#, &[], &pod, true),
            ("whereabouts", r#", "kubernetes": {"k8s_api_root": "x"}"#, &[], &pod, false),
            ("whereabouts", "", &[&missing, &kube_flat], &pod, true),
            ("whereabouts", "", &[&local_flat], &pod, true),
            ("whereabouts", "", &[&log_flat], &pod, false),
        ];
        for (kind, extra, flat_files, args, served) in cases {
            let text = format!(
                r#"{{"cniVersion": "1.0.0", "name": "n", "ipam": {{"type": "{kind}", "range": "10.0.0.0/24"{extra}}}}}"#
            );
            let conf = NetConf::parse(&text, flat_files).unwrap();
            let outcome = conf.require_chosen_store(args);
            assert_eq!(outcome.is_ok(), *served, "{text} {flat_files:?} {args:?}: {outcome:?}");
            if let Err(error) = outcome {
                assert_eq!(error.code, Code::InvalidConfig);
                for path in *flat_files {
                    assert!(error.msg.contains(path), "lists {path}: {}", error.msg);
                }
                assert!(error.msg.contains(r#""datastore": "local""#), "{}", error.msg);
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn error_version_falls_back_to_latest() {
        assert_eq!(error_version(r#"{"cniVersion": "0.3.1"}"#), "0.3.1");
        assert_eq!(error_version(r#"{"cniVersion": "9.0.0"}"#), "1.1.0");
        assert_eq!(error_version("nonsense"), "1.1.0");
    }
}
