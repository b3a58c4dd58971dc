//! The host's keys of the ipam section: which store, where its data lives, logging, and
//! Whereabouts' flat configuration file.
//!
//! The allocation keys (`range`, `range_start`, `range_end`, `exclude`, `ipRanges`, `gateway`,
//! `network_name`, `enable_overlapping_ranges`, `sticky`) are *not* read here: the allocator
//! component reads the ipam section itself (`read-config`), so the CNI plugin, `plan`, `check`,
//! Node and the browser agree on every address. This module is strict about the types of the
//! keys it owns (a type error names the key) and ignores every other key, as Whereabouts does.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where the local store lives unless the ipam config's `data_dir` says otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/hereabouts";

/// One step of a path into the ipam section: a key, or an index into a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

impl Step {
    pub fn key(key: &str) -> Self {
        Step::Key(key.to_string())
    }
}

/// A value of the ipam section that is wrong: where it is, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    /// The path inside the ipam section (`[exclude, 1]`); empty for the section itself.
    pub path: Vec<Step>,
    pub problem: Problem,
}

/// What is wrong with a value of the ipam section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// serde's verdict on the value's type (`invalid type: integer `10`, expected a string`);
    /// `found` is the kind of JSON value found (`a number`) when the value itself is the wrong
    /// kind, as opposed to something inside it.
    Type { found: Option<&'static str>, serde: String },
    /// An element of a list of strings that is not one; the path ends at its index.
    NotAString { found: &'static str },
    /// Anything else, in words.
    Invalid(String),
}

impl ConfigError {
    pub fn new(path: Vec<Step>, message: impl Into<String>) -> Self {
        Self { path, problem: Problem::Invalid(message.into()) }
    }

    /// An error about one top-level key of the ipam section.
    pub fn at(key: &str, message: impl Into<String>) -> Self {
        Self::new(vec![Step::key(key)], message)
    }

    /// What is wrong, without the path (for tools that show the path themselves).
    pub fn message(&self) -> String {
        match &self.problem {
            Problem::Type { serde, .. } => serde.clone(),
            Problem::NotAString { found } => format!("must be a string, found {found}"),
            Problem::Invalid(message) => message.clone(),
        }
    }

    /// `ipam.KEY…: MESSAGE`. The type errors keep the layout Whereabouts users (and the
    /// shared plan vectors) know: `ipam.exclude: [1] must be a string, found a number`,
    /// `ipam.range: unexpected a number: invalid type: …`.
    fn render(&self) -> String {
        match (&self.problem, self.path.split_last()) {
            (Problem::NotAString { found }, Some((Step::Index(index), parent))) => {
                format!("{}: [{index}] must be a string, found {found}", FieldPath(parent))
            }
            (Problem::Type { found: Some(found), serde }, _) => {
                format!("{}: unexpected {found}: {serde}", FieldPath(&self.path))
            }
            _ => format!("{}: {}", FieldPath(&self.path), self.message()),
        }
    }
}

/// A path inside the ipam section as users write it: `ipam.ipRanges[0].exclude`.
pub struct FieldPath<'a>(pub &'a [Step]);

impl fmt::Display for FieldPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ipam")?;
        for step in self.0 {
            match step {
                Step::Key(key) => write!(f, ".{key}")?,
                Step::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Every ipam key Whereabouts reads (plus ours). `check` uses this list for did-you-mean.
pub const KNOWN_IPAM_KEYS: &[&str] = &[
    "type",
    "range",
    "range_start",
    "range_end",
    "exclude",
    "ipRanges",
    "gateway",
    "routes",
    "dns",
    "addresses",
    "enable_overlapping_ranges",
    "network_name",
    "datastore",
    "kubernetes",
    "etcd_host",
    "etcd_username",
    "etcd_password",
    "etcd_key_file",
    "etcd_cert_file",
    "etcd_ca_cert_file",
    "etcd_prefix",
    "etcd_dial_timeout",
    "etcd_request_timeout",
    "configuration_path",
    "log_file",
    "log_level",
    "leader_lease_duration",
    "leader_renew_deadline",
    "leader_retry_period",
    "reconciler_cron_expression",
    "sleep_for_race",
    "node_slice_size",
    "data_dir",
    "sticky",
    "name",
];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KubernetesKeys {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_api_root: Option<String>,
}

/// The host's keys of the ipam section. Every other key (the allocator's among them) is kept
/// in `extra`, untouched.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpamConfig {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastore: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesKeys>,
    /// One endpoint, a list, or a comma-separated string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_host: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_key_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_cert_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_ca_cert_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    /// Keys we do not interpret (Whereabouts' leader-election tunables among them).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl IpamConfig {
    /// Parses an ipam JSON object; the error names the key whose value has the wrong type.
    pub fn from_value(value: &Value) -> Result<Self, ConfigError> {
        if !value.is_object() {
            let message = format!("expected an object, found {}", json_kind(value));
            return Err(ConfigError::new(Vec::new(), message));
        }
        deserialize_naming_the_key(value)
    }

    /// Which store the config names: `datastore` when set; otherwise an etcd endpoint means
    /// etcd, a kubeconfig means Kubernetes, and anything else the embedded local store.
    pub fn store_kind(&self) -> Result<StoreKind, ConfigError> {
        match self.datastore.as_deref().map(str::trim) {
            Some("local") => Ok(StoreKind::Local),
            Some("etcd") => Ok(StoreKind::Etcd),
            Some("kubernetes") => Ok(StoreKind::Kubernetes),
            Some(other) => Err(ConfigError::at(
                "datastore",
                format!("unknown store {other:?} (expected \"local\", \"etcd\" or \"kubernetes\")"),
            )),
            None if self.etcd_host.as_ref().is_some_and(|h| !h.is_null()) => Ok(StoreKind::Etcd),
            None if self.kubernetes.as_ref().is_some_and(|k| k.kubeconfig.is_some()) => {
                Ok(StoreKind::Kubernetes)
            }
            None => Ok(StoreKind::Local),
        }
    }

    /// Whether the config (its flat file merged) chooses its store itself: a `datastore`, a
    /// `data_dir`, an etcd endpoint or a kubeconfig. A config that chooses none gets the
    /// embedded local store only where no Kubernetes is involved (see [`unchosen_store`]).
    pub fn chooses_store(&self) -> bool {
        self.datastore.is_some()
            || self.data_dir.as_deref().is_some_and(|d| !d.is_empty())
            || self.etcd_host.as_ref().is_some_and(|h| !h.is_null())
            || self.kubernetes.as_ref().is_some_and(|k| k.kubeconfig.is_some())
    }

    /// The local store's directory (`data_dir`, default `/var/lib/cni/hereabouts`).
    pub fn data_dir(&self) -> PathBuf {
        let dir = self.data_dir.as_deref().filter(|d| !d.is_empty());
        PathBuf::from(dir.unwrap_or(DEFAULT_DATA_DIR))
    }
}

/// The stores a config can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Local,
    Etcd,
    Kubernetes,
}

/// Where Whereabouts looks for its flat configuration file after the ipam section's own
/// `configuration_path` (`GetFlatIPAM` in pkg/config/config.go, in its order, plus k3s' CNI
/// directory, where k3s installs put it); the `hereabouts.d` twin of each directory is tried
/// before the `whereabouts.d` one. The first file that exists is used.
pub const FLAT_FILE_PATHS: &[&str] = &[
    "/etc/kubernetes/cni/net.d/hereabouts.d/hereabouts.conf",
    "/etc/kubernetes/cni/net.d/whereabouts.d/whereabouts.conf",
    "/etc/cni/net.d/hereabouts.d/hereabouts.conf",
    "/etc/cni/net.d/whereabouts.d/whereabouts.conf",
    "/host/etc/cni/net.d/hereabouts.d/hereabouts.conf",
    "/host/etc/cni/net.d/whereabouts.d/whereabouts.conf",
    "/var/lib/rancher/k3s/agent/etc/cni/net.d/hereabouts.d/hereabouts.conf",
    "/var/lib/rancher/k3s/agent/etc/cni/net.d/whereabouts.d/whereabouts.conf",
];

/// Why a call from Kubernetes whose config chooses no store (see
/// [`IpamConfig::chooses_store`]) is refused instead of served from the node's embedded store:
/// every node would then keep its own pool and hand out the same addresses as its neighbours.
/// `searched` are the flat-file paths tried, `found` the one merged (which named no store).
pub fn unchosen_store(searched: &[String], found: Option<&std::path::Path>) -> String {
    let flat = match found {
        Some(path) => format!("the flat file {} names none either", path.display()),
        None if searched.is_empty() => "there is no flat file".to_string(),
        None => format!("no flat file was found at any of {}", searched.join(", ")),
    };
    format!(
        "no store configured: a Kubernetes network (K8S_POD_* in CNI_ARGS, or ipam type \
         \"whereabouts\") needs ipam.kubernetes.kubeconfig or ipam.etcd_host, and {flat}; \
         Hereabouts does not fall back to the node-local store, which would give every node its \
         own pool. Point ipam.configuration_path at your flat file, or choose the node-local \
         store on purpose with \"datastore\": \"local\" (or a \"data_dir\")"
    )
}

/// A flat file that exists but cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FlatFileError {
    #[error("flat configuration file {}: cannot read: {source}", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("flat configuration file {}: not valid JSON: {source}", path.display())]
    NotJson { path: PathBuf, source: serde_json::Error },
    #[error("flat configuration file {}: expected an object, found {found}", path.display())]
    NotAnObject { path: PathBuf, found: &'static str },
}

/// Merges Whereabouts' flat configuration file into an ipam JSON object, as Whereabouts does
/// (`mergo.Merge` into the decoded config): the network config's values win, the file fills in
/// what is absent *or empty* (`""`, `0`, `false`, `null`, `[]`, `{}`), nested objects key by
/// key, keys matched case-insensitively as Go's JSON decoder does; `enable_overlapping_ranges`
/// is never taken from the file (Whereabouts restores it after the merge). `candidates` are
/// tried after the ipam section's own `configuration_path`; returns the file used, if any.
pub fn merge_flat_file(
    ipam: &mut Value,
    candidates: &[&str],
) -> Result<Option<PathBuf>, FlatFileError> {
    for path in flat_file_search(ipam, candidates).into_iter().map(PathBuf::from) {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(FlatFileError::Unreadable { path, source }),
        };
        let flat: Value = match serde_json::from_str(&text) {
            Ok(flat) => flat,
            Err(source) => return Err(FlatFileError::NotJson { path, source }),
        };
        if !flat.is_object() {
            return Err(FlatFileError::NotAnObject { path, found: json_kind(&flat) });
        }
        fill_empty(ipam, flat, true);
        return Ok(Some(path));
    }
    Ok(None)
}

/// The flat-file paths [`merge_flat_file`] tries, in order: the ipam section's own
/// `configuration_path`, then `candidates`.
pub fn flat_file_search(ipam: &Value, candidates: &[&str]) -> Vec<String> {
    let own = ipam.get("configuration_path").and_then(Value::as_str).filter(|p| !p.is_empty());
    own.into_iter().chain(candidates.iter().copied()).map(str::to_string).collect()
}

/// Whether Go's zero value is what a key holds (mergo fills those).
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(_) => false,
    }
}

/// Fills what `target` lacks or holds empty from `source`, recursing into objects.
fn fill_empty(target: &mut Value, source: Value, top_level: bool) {
    let (Value::Object(target), Value::Object(source)) = (target, source) else { return };
    for (key, value) in source {
        if top_level && key.eq_ignore_ascii_case("enable_overlapping_ranges") {
            continue;
        }
        match target.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(&key)) {
            None => {
                target.insert(key, value);
            }
            Some((_, existing)) if existing.is_object() => fill_empty(existing, value, false),
            Some((_, existing)) if is_empty(existing) => *existing = value,
            Some(_) => {}
        }
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Deserialises key by key so a type error names its key (and, in a list, its element).
fn deserialize_naming_the_key(value: &Value) -> Result<IpamConfig, ConfigError> {
    let whole = match IpamConfig::deserialize(value) {
        Ok(config) => return Ok(config),
        Err(whole) => whole,
    };
    let object = value.as_object().expect("checked by the caller");
    for (key, item) in object {
        let mut probe = serde_json::Map::new();
        probe.insert(key.clone(), item.clone());
        if let Err(e) = IpamConfig::deserialize(Value::Object(probe)) {
            return Err(type_error(key, item, e.to_string()));
        }
    }
    Err(ConfigError {
        path: Vec::new(),
        problem: Problem::Type { found: None, serde: whole.to_string() },
    })
}

/// The error for `key` holding `item`, whose type serde rejected with `serde`.
fn type_error(key: &str, item: &Value, serde: String) -> ConfigError {
    let mut path = vec![Step::key(key)];
    let problem = match item {
        Value::Array(items) => {
            match items.iter().position(|element| !(element.is_string() || element.is_object())) {
                Some(index) => {
                    path.push(Step::Index(index));
                    Problem::NotAString { found: json_kind(&items[index]) }
                }
                // Something inside an element (an `ipRanges` item) is wrong: serde says what.
                None => Problem::Type { found: None, serde },
            }
        }
        _ => Problem::Type { found: Some(json_kind(item)), serde },
    };
    ConfigError { path, problem }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_allocators_keys_are_left_to_the_component() {
        let config = IpamConfig::from_value(&json!({
            "type": "whereabouts", "range": 10, "exclude": ["10.0.0.1/32", 7],
            "data_dir": "/d", "leader_lease_duration": 1500
        }))
        .unwrap();
        assert_eq!(config.data_dir(), PathBuf::from("/d"));
        assert_eq!(config.extra["range"], 10);
        assert!(config.extra.contains_key("leader_lease_duration"));
    }

    #[test]
    fn a_type_error_names_its_key() {
        let error = IpamConfig::from_value(&json!({"data_dir": 10})).unwrap_err();
        assert_eq!(error.path, [Step::key("data_dir")]);
        assert_eq!(error.message(), "invalid type: integer `10`, expected a string");
        assert_eq!(
            error.to_string(),
            "ipam.data_dir: unexpected a number: invalid type: integer `10`, expected a string"
        );
        let error = IpamConfig::from_value(&json!([])).unwrap_err();
        assert_eq!(error.to_string(), "ipam: expected an object, found an array");
        let error = ConfigError::new(vec![Step::key("etcd_host"), Step::Index(2)], "bad");
        assert_eq!(error.to_string(), "ipam.etcd_host[2]: bad");
    }

    #[test]
    fn store_kind_follows_datastore_then_etcd_then_kubeconfig() {
        let kind = |v: Value| IpamConfig::from_value(&v).unwrap().store_kind();
        assert_eq!(kind(json!({})), Ok(StoreKind::Local));
        assert_eq!(kind(json!({"datastore": "local", "etcd_host": "x"})), Ok(StoreKind::Local));
        assert_eq!(kind(json!({"etcd_host": "127.0.0.1:2379"})), Ok(StoreKind::Etcd));
        assert_eq!(kind(json!({"kubernetes": {"kubeconfig": "/k"}})), Ok(StoreKind::Kubernetes));
        assert_eq!(kind(json!({"datastore": "kubernetes"})), Ok(StoreKind::Kubernetes));
        assert_eq!(
            kind(json!({"datastore": "zookeeper"})).unwrap_err().path,
            [Step::key("datastore")]
        );
    }

    #[test]
    fn flat_file_fills_absent_and_empty_keys_as_mergo_does() {
        let dir = std::env::temp_dir().join(format!("hereabouts-flat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let flat = dir.join("whereabouts.conf");
        std::fs::write(
            &flat,
            r#"{"datastore": "local", "range": "10.9.0.0/16", "gateway": "10.9.0.1",
            "exclude": ["10.9.0.0/30"], "enable_overlapping_ranges": false,
            "kubernetes": {"kubeconfig": "/k", "k8s_api_root": "r"}}"#,
        )
        .unwrap();
        let mut ipam = json!({"range": "10.0.0.0/24", "Gateway": "", "exclude": [],
            "kubernetes": {"kubeconfig": "/mine"}});
        let missing = dir.join("missing.conf");
        let used = merge_flat_file(&mut ipam, &[missing.to_str().unwrap(), flat.to_str().unwrap()])
            .unwrap();
        assert_eq!(used.as_deref(), Some(flat.as_path()));
        assert_eq!(
            ipam,
            json!({"range": "10.0.0.0/24", "Gateway": "10.9.0.1", "exclude": ["10.9.0.0/30"],
            "datastore": "local", "kubernetes": {"kubeconfig": "/mine", "k8s_api_root": "r"}})
        );
        // `configuration_path` is tried before the candidates.
        let own = dir.join("own.conf");
        std::fs::write(&own, r#"{"log_level": "debug"}"#).unwrap();
        let mut ipam = json!({"configuration_path": own.to_str().unwrap()});
        let used = merge_flat_file(&mut ipam, &[flat.to_str().unwrap()]).unwrap();
        assert_eq!(used.as_deref(), Some(own.as_path()));
        assert_eq!(ipam["log_level"], "debug");
        assert!(ipam.get("datastore").is_none());
        // A file that exists but is not JSON is an error naming it, not skipped.
        std::fs::write(&own, "datastore: local").unwrap();
        let error = merge_flat_file(&mut json!({"configuration_path": own.to_str().unwrap()}), &[])
            .unwrap_err();
        assert!(error.to_string().contains(own.to_str().unwrap()), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
