//! The ipam section of a CNI network config, with every key Whereabouts accepts.
//!
//! Parsing is typed and strict about types (a number where a CIDR string belongs is an error
//! naming the key) but lenient about unknown keys, as Whereabouts is: a config that works with
//! Whereabouts must work here. Range strings are *not* interpreted here: the allocator
//! component owns that, so the CLI, the CNI plugin and the browser agree on every address.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::runtime::{NetworkConfig, RangeConfig};

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

/// One range: the top-level keys or an `ipRanges` item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RangeKeys {
    #[serde(default)]
    pub range: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KubernetesKeys {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_api_root: Option<String>,
}

/// The ipam section. Unknown keys are kept in `extra` (and ignored by the allocator).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpamConfig {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default, rename = "ipRanges", skip_serializing_if = "Vec::is_empty")]
    pub ip_ranges: Vec<RangeKeys>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_overlapping_ranges: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_name: Option<String>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<bool>,
    /// Keys we do not interpret (Whereabouts' leader-election tunables among them).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl IpamConfig {
    /// Parses an ipam JSON object; the error names the key whose value has the wrong type.
    pub fn from_value(value: &Value) -> Result<Self, String> {
        if !value.is_object() {
            return Err(format!("ipam: expected an object, found {}", json_kind(value)));
        }
        serde_path_error(value)
    }

    /// The allocation-relevant part, as the component takes it.
    pub fn network_config(&self) -> NetworkConfig {
        let range = self.range.as_ref().map(|range| RangeConfig {
            range: range.clone(),
            range_start: self.range_start.clone(),
            range_end: self.range_end.clone(),
            exclude: self.exclude.clone(),
        });
        NetworkConfig {
            range,
            ip_ranges: self
                .ip_ranges
                .iter()
                .map(|r| RangeConfig {
                    range: r.range.clone(),
                    range_start: r.range_start.clone(),
                    range_end: r.range_end.clone(),
                    exclude: r.exclude.clone(),
                })
                .collect(),
            gateway: self.gateway.clone().filter(|g| !g.is_empty()),
            network_name: self.network_name.clone().unwrap_or_default(),
            // Whereabouts' default is true.
            enable_overlapping_ranges: self.enable_overlapping_ranges.unwrap_or(true),
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

/// Deserialises key by key so a type error names its key (`ipam.exclude[1]: expected a string`).
fn serde_path_error(value: &Value) -> Result<IpamConfig, String> {
    match IpamConfig::deserialize(value) {
        Ok(config) => Ok(config),
        Err(whole) => {
            let object = value.as_object().expect("checked above");
            for (key, item) in object {
                let mut probe = serde_json::Map::new();
                probe.insert(key.clone(), item.clone());
                if let Err(e) = IpamConfig::deserialize(Value::Object(probe)) {
                    return Err(format!("ipam.{key}: {}", describe_type_error(&e.to_string(), item)));
                }
            }
            Err(format!("ipam: {whole}"))
        }
    }
}

fn describe_type_error(serde_message: &str, item: &Value) -> String {
    match item {
        Value::Array(items) => {
            for (i, element) in items.iter().enumerate() {
                if !(element.is_string() || element.is_object()) {
                    return format!("[{i}] must be a string, found {}", json_kind(element));
                }
            }
            serde_message.to_string()
        }
        _ => format!("unexpected {}: {serde_message}", json_kind(item)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn top_level_range_and_ip_ranges_map_to_the_component_shape() {
        let config = IpamConfig::from_value(&json!({
            "type": "whereabouts", "range": "10.0.0.0/24", "exclude": ["10.0.0.1/32"],
            "ipRanges": [{"range": "fd00::/64", "range_start": "fd00::10"}],
            "network_name": "blue", "leader_lease_duration": 1500
        }))
        .unwrap();
        let network = config.network_config();
        assert_eq!(network.range.as_ref().unwrap().exclude, vec!["10.0.0.1/32".to_string()]);
        assert_eq!(network.ip_ranges[0].range_start.as_deref(), Some("fd00::10"));
        assert_eq!(network.network_name, "blue");
        assert!(network.enable_overlapping_ranges);
        assert!(config.extra.contains_key("leader_lease_duration"));
    }

    #[test]
    fn a_type_error_names_its_key() {
        let error = IpamConfig::from_value(&json!({"range": 10})).unwrap_err();
        assert!(error.starts_with("ipam.range:"), "{error}");
        let error = IpamConfig::from_value(&json!({"exclude": ["10.0.0.0/30", 7]})).unwrap_err();
        assert!(error.contains("ipam.exclude: [1]"), "{error}");
    }
}
