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
    "exclude_gateway",
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
        let config = deserialize_naming_the_key(value)?;
        config.check_paths()?;
        Ok(config)
    }

    /// The paths a network config names are absolute, without `..`: a relative one would
    /// depend on the runtime's working directory (`log_file` is checked where it is opened:
    /// a log file that cannot be used never fails a call).
    fn check_paths(&self) -> Result<(), ConfigError> {
        let kubeconfig = self.kubernetes.as_ref().and_then(|k| k.kubeconfig.as_ref());
        let paths = [
            ("data_dir", self.data_dir.as_ref()),
            ("configuration_path", self.configuration_path.as_ref()),
            ("etcd_ca_cert_file", self.etcd_ca_cert_file.as_ref()),
            ("etcd_cert_file", self.etcd_cert_file.as_ref()),
            ("etcd_key_file", self.etcd_key_file.as_ref()),
        ];
        let bad = |path: &str| format!("{path:?} must be an absolute path without \"..\"");
        let relative =
            |path: &&String| !path.is_empty() && crate::files::absolute("", path).is_err();
        for (key, path) in paths {
            if let Some(path) = path.filter(relative) {
                return Err(ConfigError::at(key, bad(path)));
            }
        }
        if let Some(path) = kubeconfig.filter(relative) {
            let at = vec![Step::key("kubernetes"), Step::key("kubeconfig")];
            return Err(ConfigError::new(at, bad(path)));
        }
        Ok(())
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

/// A flat file that exists but cannot be used. No variant quotes the file's content: the
/// message reaches the pod's events, and the path may name a file that is not a config.
#[derive(Debug, thiserror::Error)]
pub enum FlatFileError {
    /// Refused before reading (relative path, symbolic link, not a regular file, too big) or
    /// unreadable.
    #[error("flat configuration file: {0}")]
    File(#[from] crate::files::FileError),
    #[error("flat configuration file {}: not valid JSON (at line {line}, column {column})", path.display())]
    NotJson { path: PathBuf, line: usize, column: usize },
    #[error("flat configuration file {}: expected an object, found {found}", path.display())]
    NotAnObject { path: PathBuf, found: &'static str },
    /// The file's etcd credentials would go to an endpoint the network config chose.
    #[error(
        "ipam.{key}: the etcd credentials ({credentials}) come from the flat configuration file {}, \
         so the endpoint and CA must too; the network config sets its own {key}. Remove it from \
         the network config, or give the network config its own credentials", path.display()
    )]
    ForeignEndpoint { path: PathBuf, key: &'static str, credentials: String },
}

impl FlatFileError {
    /// Whether the config (not the node's files) is at fault: CNI 7 rather than 5.
    pub fn is_config_error(&self) -> bool {
        use crate::files::FileError;
        match self {
            FlatFileError::File(FileError::Io { .. }) => false,
            FlatFileError::File(_) => true,
            _ => true,
        }
    }
}

/// The etcd keys that carry credentials, and those that decide where they are sent.
const ETCD_CREDENTIAL_KEYS: &[&str] =
    &["etcd_username", "etcd_password", "etcd_key_file", "etcd_cert_file"];
const ETCD_DESTINATION_KEYS: &[&str] = &["etcd_host", "etcd_ca_cert_file"];

/// Merges Whereabouts' flat configuration file into an ipam JSON object, as Whereabouts does
/// (`mergo.Merge` into the decoded config): the network config's values win, the file fills in
/// what is absent *or empty* (`""`, `0`, `false`, `null`, `[]`, `{}`), nested objects key by
/// key, keys matched case-insensitively as Go's JSON decoder does; `enable_overlapping_ranges`
/// is never taken from the file (Whereabouts restores it after the merge). `candidates` are
/// tried after the ipam section's own `configuration_path`; returns the file used, if any.
///
/// Unlike Whereabouts, etcd credentials the file provides are sent only to the file's own
/// endpoint (with the file's CA): a network config that names another `etcd_host` or
/// `etcd_ca_cert_file` while the credentials come from the file is refused
/// ([`FlatFileError::ForeignEndpoint`]), as whoever writes a NAD could otherwise collect them.
pub fn merge_flat_file(
    ipam: &mut Value,
    candidates: &[&str],
) -> Result<Option<PathBuf>, FlatFileError> {
    Ok(merge_flat_file_tracked(ipam, candidates)?.map(|merged| merged.path))
}

/// The flat file used, and which top-level keys of the ipam section it filled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatMerge {
    pub path: PathBuf,
    /// The file's keys, lower-cased, that filled an absent or empty key.
    pub filled: Vec<String>,
}

impl FlatMerge {
    /// Whether `key` (lower case) of the merged ipam section came from the file.
    pub fn filled(&self, key: &str) -> bool {
        self.filled.iter().any(|k| k == key)
    }
}

/// As [`merge_flat_file`], saying which keys came from the file.
pub fn merge_flat_file_tracked(
    ipam: &mut Value,
    candidates: &[&str],
) -> Result<Option<FlatMerge>, FlatFileError> {
    let own = ipam
        .get("configuration_path")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .map(str::to_string);
    let paths = own
        .iter()
        .map(|p| ("configuration_path", p.as_str()))
        .chain(candidates.iter().map(|p| ("flat configuration file", *p)));
    for (key, path) in paths {
        let text = match crate::files::read_config_text(key, path) {
            Ok(text) => text,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        let path = PathBuf::from(path);
        let flat: Value = match serde_json::from_str(&text) {
            Ok(flat) => flat,
            Err(e) => {
                return Err(FlatFileError::NotJson { path, line: e.line(), column: e.column() });
            }
        };
        if !flat.is_object() {
            return Err(FlatFileError::NotAnObject { path, found: json_kind(&flat) });
        }
        let file_has = |key: &str| {
            flat.as_object()
                .is_some_and(|o| o.iter().any(|(k, v)| k.eq_ignore_ascii_case(key) && !is_empty(v)))
        };
        let mut filled = Vec::new();
        fill_empty(ipam, flat.clone(), true, &mut filled);
        let merged = FlatMerge { path, filled };
        let credentials: Vec<&str> =
            ETCD_CREDENTIAL_KEYS.iter().copied().filter(|k| merged.filled(k)).collect();
        if !credentials.is_empty() {
            for &key in ETCD_DESTINATION_KEYS {
                let network_set = ipam.as_object().is_some_and(|o| {
                    o.iter().any(|(k, v)| k.eq_ignore_ascii_case(key) && !is_empty(v))
                });
                // The network config's own value, where the file has none or another one.
                if network_set
                    && !merged.filled(key)
                    && !same_value(ipam, &flat, key, file_has(key))
                {
                    return Err(FlatFileError::ForeignEndpoint {
                        path: merged.path,
                        key,
                        credentials: credentials.join(", "),
                    });
                }
            }
        }
        return Ok(Some(merged));
    }
    Ok(None)
}

/// The flat-file paths [`merge_flat_file`] tries, in order: the ipam section's own
/// `configuration_path`, then `candidates`.
pub fn flat_file_search(ipam: &Value, candidates: &[&str]) -> Vec<String> {
    let own = ipam.get("configuration_path").and_then(Value::as_str).filter(|p| !p.is_empty());
    own.into_iter().chain(candidates.iter().copied()).map(str::to_string).collect()
}

/// Whether the network config's `key` says what the file's does (endpoints compared as the
/// set of comma-separated entries, trimmed).
fn same_value(ipam: &Value, flat: &Value, key: &str, file_has: bool) -> bool {
    if !file_has {
        return false;
    }
    let get = |v: &Value| {
        v.as_object()
            .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)))
            .map(|(_, v)| v.clone())
    };
    let entries = |v: Option<Value>| -> Option<std::collections::BTreeSet<String>> {
        let mut set = std::collections::BTreeSet::new();
        let mut add = |s: &str| {
            set.extend(s.split(',').map(str::trim).filter(|e| !e.is_empty()).map(String::from))
        };
        match v? {
            Value::String(s) => add(&s),
            Value::Array(items) => {
                for item in items {
                    add(item.as_str()?);
                }
            }
            _ => return None,
        }
        Some(set)
    };
    match (entries(get(ipam)), entries(get(flat))) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
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

/// Fills what `target` lacks or holds empty from `source`, recursing into objects; the
/// top-level keys filled are added to `filled` (lower case).
fn fill_empty(target: &mut Value, source: Value, top_level: bool, filled: &mut Vec<String>) {
    let (Value::Object(target), Value::Object(source)) = (target, source) else { return };
    for (key, value) in source {
        if top_level && key.eq_ignore_ascii_case("enable_overlapping_ranges") {
            continue;
        }
        let fills = !is_empty(&value);
        let lower = key.to_ascii_lowercase();
        match target.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(&key)) {
            None => {
                target.insert(key, value);
            }
            Some((_, existing)) if existing.is_object() => {
                fill_empty(existing, value, false, &mut Vec::new())
            }
            Some((_, existing)) if is_empty(existing) => *existing = value,
            Some(_) => continue,
        }
        if top_level && fills {
            filled.push(lower);
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
