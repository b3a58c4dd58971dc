//! Whereabouts' two custom resources, field for field as Whereabouts (v0.9) writes them, so a
//! cluster can switch between Whereabouts and Hereabouts in either direction without migration.
//!
//! Group `whereabouts.cni.cncf.io/v1alpha1`, both namespaced (Whereabouts keeps them in the
//! kubeconfig context's namespace, `kube-system` when the context names none):
//! - `IPPool` — one per range: `spec.range` and `spec.allocations`, a map from the decimal
//!   offset of an address from the range's network address to `{id, podref, ifname}`.
//! - `OverlappingRangeIPReservation` — one per address in use per network:
//!   `spec {containerid, podref, ifname}`.
//! - `NodeSlicePool` — one per network with `node_slice_size` (Fast IPAM): `spec {range,
//!   sliceSize}` and `status.allocations`, every slice in order with the node it is given to
//!   (`nodeName` "" when free). Written by `hereabouts controller`, read by the CNI plugin.
//!
//! Serialisation follows Whereabouts' Go tags: `ifname` and `containerid` are `omitempty`,
//! `id`, `podref` and `allocations` are always written (an empty pool is `allocations: {}`).
//! `hereabouts crds` prints the CRDs derived from these types.

use std::collections::BTreeMap;

use kube::CustomResource;
use kube::core::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

pub const GROUP: &str = "whereabouts.cni.cncf.io";
pub const VERSION: &str = "v1alpha1";

/// IPPoolSpec defines the desired state of IPPool.
#[derive(
    CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema,
)]
#[kube(
    group = "whereabouts.cni.cncf.io",
    version = "v1alpha1",
    kind = "IPPool",
    plural = "ippools",
    singular = "ippool",
    namespaced,
    doc = "IPPool is the Schema for the ippools API"
)]
pub struct IPPoolSpec {
    /// Range is a RFC 4632/4291-style string that represents an IP address and prefix length in CIDR notation
    pub range: String,
    /// Allocations is the set of allocated IPs for the given range. Its indices are a direct mapping to the
    /// IP with the same index/offset for the pool's range.
    // Required, as in Whereabouts' CRD; Go's nil map (`null`) reads as empty.
    #[serde(deserialize_with = "null_as_empty")]
    pub allocations: BTreeMap<String, IPAllocation>,
}

/// IPAllocation represents metadata about the pod/container owner of a specific IP
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct IPAllocation {
    /// The container id (CNI_CONTAINERID).
    pub id: String,
    /// "namespace/name" of the pod.
    pub podref: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ifname: String,
}

/// OverlappingRangeIPReservationSpec defines the desired state of OverlappingRangeIPReservation
#[derive(
    CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema,
)]
#[kube(
    group = "whereabouts.cni.cncf.io",
    version = "v1alpha1",
    kind = "OverlappingRangeIPReservation",
    plural = "overlappingrangeipreservations",
    singular = "overlappingrangeipreservation",
    namespaced,
    doc = "OverlappingRangeIPReservation is the Schema for the OverlappingRangeIPReservations API"
)]
pub struct OverlappingRangeIPReservationSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub containerid: String,
    pub podref: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ifname: String,
}

/// NodeSlicePoolSpec defines the desired state of NodeSlicePool
// Whereabouts' Fast IPAM: one per network, named by its `network_name`, else by the CNI
// network's `name`. (The doc line above is the CRD's description, as Whereabouts words it.)
#[derive(
    CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema,
)]
#[kube(
    group = "whereabouts.cni.cncf.io",
    version = "v1alpha1",
    kind = "NodeSlicePool",
    plural = "nodeslicepools",
    singular = "nodeslicepool",
    namespaced,
    status = "NodeSlicePoolStatus",
    doc = "NodeSlicePool is the Schema for the nodesliceippools API"
)]
pub struct NodeSlicePoolSpec {
    /// Range is a RFC 4632/4291-style string that represents an IP address and prefix length in CIDR notation
    /// this refers to the entire range where the node is allocated a subset
    pub range: String,
    /// SliceSize is the size of subnets or slices of the range that each node will be assigned
    #[serde(rename = "sliceSize")]
    pub slice_size: String,
}

/// NodeSlicePoolStatus defines the desired state of NodeSlicePool
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct NodeSlicePoolStatus {
    /// Allocations holds the allocations of nodes to slices
    #[serde(deserialize_with = "null_as_empty_list")]
    pub allocations: Vec<NodeSliceAllocation>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct NodeSliceAllocation {
    /// NodeName is the name of the node assigned to this slice, empty node name is an available slice for assignment
    #[serde(rename = "nodeName")]
    pub node_name: String,
    /// SliceRange is the subnet of this slice
    #[serde(rename = "sliceRange")]
    pub slice_range: String,
}

/// Multus' NetworkAttachmentDefinition (`k8s.cni.cncf.io/v1`), as far as the node-slice
/// controller reads it: `spec.config`, the CNI config as a JSON string. Not ours: never
/// printed by `hereabouts crds`, never written.
#[derive(
    CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema,
)]
#[kube(
    group = "k8s.cni.cncf.io",
    version = "v1",
    kind = "NetworkAttachmentDefinition",
    plural = "network-attachment-definitions",
    namespaced
)]
pub struct NetworkAttachmentDefinitionSpec {
    #[serde(default)]
    pub config: String,
}

// What a persistent allocation is for: k8s.cni.cncf.io's `IPAMClaim`, the API KubeVirt and
// OVN-Kubernetes share for addresses that outlive a pod. Not Whereabouts': `hereabouts crds`
// prints it only with `--ipamclaims` (see [`ipamclaims_crd_yaml`]). (No doc comment: upstream's
// spec has no description.)
#[derive(
    CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema,
)]
#[kube(
    group = "k8s.cni.cncf.io",
    version = "v1alpha1",
    kind = "IPAMClaim",
    plural = "ipamclaims",
    singular = "ipamclaim",
    namespaced,
    status = "IPAMClaimStatus",
    doc = "IPAMClaim is the Schema for the IPAMClaim API"
)]
pub struct IPAMClaimSpec {
    /// The network name for which this persistent allocation was created
    pub network: String,
    /// The pod interface name for which this allocation was created
    pub interface: String,
}

/// IPAMClaimStatus contains the observed status of the IPAMClaim.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct IPAMClaimStatus {
    /// The list of IP addresses (v4, v6) that were allocated for the pod interface
    // Required upstream and always written; Go's nil slice (`null`) reads as empty.
    #[serde(deserialize_with = "null_as_empty_strings")]
    pub ips: Vec<String>,
    /// The name of the pod holding the IPAMClaim
    #[serde(rename = "ownerPod", default, skip_serializing_if = "Option::is_none")]
    pub owner_pod: Option<OwnerPod>,
    /// Conditions contains details for one aspect of the current state of this API Resource
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ClaimCondition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct OwnerPod {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// Condition contains details for one aspect of the current state of this API Resource.
// metav1.Condition, field for field (k8s-openapi's type has no JSON schema here).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ClaimCondition {
    /// type of condition in CamelCase or in foo.example.com/CamelCase.
    #[serde(rename = "type")]
    pub type_: String,
    /// status of the condition, one of True, False, Unknown.
    pub status: String,
    /// reason contains a programmatic identifier indicating the reason for the condition's last transition.
    pub reason: String,
    /// message is a human readable message indicating details about the transition.
    pub message: String,
    /// lastTransitionTime is the last time the condition transitioned from one status to another.
    #[serde(rename = "lastTransitionTime")]
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
    /// observedGeneration represents the .metadata.generation that the condition was set based upon.
    #[serde(rename = "observedGeneration", default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

fn null_as_empty_strings<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(deserializer)?.unwrap_or_default())
}

/// The IPAMClaim CRD alone (`hereabouts crds --ipamclaims`, deploy/ipamclaims-crd.yaml): KubeVirt
/// and OVN-Kubernetes install the same CRD, so it is never part of [`crds_yaml`]; apply it only
/// where nothing else has.
pub fn ipamclaims_crd_yaml() -> String {
    let mut crd = IPAMClaim::crd();
    // Upstream's `spec` is optional (`omitempty`); the derive makes it required.
    for version in &mut crd.spec.versions {
        if let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) {
            schema.required = None;
        }
    }
    let mut out = String::from("---\n");
    out.push_str(&serde_saphyr::to_string(&crd).expect("a CRD serialises"));
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// Go writes a nil slice as `null`.
fn null_as_empty_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<NodeSliceAllocation>, D::Error> {
    Ok(Option::<Vec<NodeSliceAllocation>>::deserialize(deserializer)?.unwrap_or_default())
}

/// Go writes a nil map as `null`; read it as an empty pool rather than failing.
fn null_as_empty<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, IPAllocation>, D::Error> {
    Ok(Option::<BTreeMap<String, IPAllocation>>::deserialize(deserializer)?.unwrap_or_default())
}

/// The three CRDs as one multi-document YAML stream (what `hereabouts crds` prints).
pub fn crds_yaml() -> String {
    let mut out = String::new();
    // Whereabouts' NodeSlicePool has no status subresource: its controller writes
    // `status.allocations` with a plain update, and so does ours.
    let mut node_slice_pool = NodeSlicePool::crd();
    for version in &mut node_slice_pool.spec.versions {
        version.subresources = None;
    }
    for crd in [IPPool::crd(), OverlappingRangeIPReservation::crd(), node_slice_pool] {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd).expect("a CRD serialises"));
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// A range or an address as Whereabouts puts it in an object name (before `network_name-`):
/// `:` and `/` turned into `-`. (The core names pools for `pool-ref.name`; this serves the
/// reverse lookups, [`network_of_pool`] and [`reservation_in`], and reservation names.)
fn normalize(text: &str) -> String {
    let mut text = text.to_string();
    // Whereabouts: text ending in ':' gets a '0' so the name does not end in '-'.
    if text.ends_with(':') {
        text.push('0');
    }
    text.replace([':', '/'], "-")
}

/// The network name encoded in a pool's object name, if the name is `[network-]<range>`.
pub fn network_of_pool(pool_name: &str, range: &str) -> Option<String> {
    let normalized = normalize(range);
    if pool_name == normalized {
        return Some(String::new());
    }
    pool_name.strip_suffix(&normalized)?.strip_suffix('-').map(str::to_string)
}

/// The network name and node of a node's slice pool: an IPPool named `pool_name` for the
/// slice `slice_range` of the NodeSlicePool `slice_pool`. Whereabouts names a slice pool
/// `[network_name-]<node>-<slice>` and the NodeSlicePool after the `network_name` (else the CNI
/// network's name): the network name is the NodeSlicePool's when the pool's name starts with
/// it, else "" (an unnamed network). None when the name is not the slice's.
pub fn slice_pool_owner(
    pool_name: &str,
    slice_range: &str,
    slice_pool: &str,
) -> Option<(String, String)> {
    let head = pool_name.strip_suffix(&normalize(slice_range))?.strip_suffix('-')?;
    let named = head.strip_prefix(slice_pool).and_then(|rest| rest.strip_prefix('-'));
    match named {
        Some(node) if !node.is_empty() => Some((slice_pool.to_string(), node.to_string())),
        _ if !head.is_empty() => Some((String::new(), head.to_string())),
        _ => None,
    }
}

/// An OverlappingRangeIPReservation's object name, as Whereabouts' `NormalizeIP` makes it:
/// the address with `:` turned into `-` (an address ending in `:` gets a `0` first, so the
/// name ends in an alphanumeric), after `network_name-`.
pub fn reservation_name(network_name: &str, address: &str) -> String {
    let normalized = normalize(address);
    if network_name.is_empty() { normalized } else { format!("{network_name}-{normalized}") }
}

/// The address a reservation of network `network_name` named `name` is for (the spec has no
/// address field), if the name is that network's: `network_name-` (nothing for the unnamed
/// network) and then an address with `:` turned into `-`, in the canonical form we and
/// Whereabouts write.
///
/// A name can be two networks' at once: `ab-cd--1` is network `ab`'s `cd::1` and the unnamed
/// network's `ab:cd::1` (a network name made of hex groups, an IPv6 address with fewer than
/// eight groups). Whereabouts names both the same, so they are one object and cannot both
/// exist; this answers each network's reading of it.
pub fn reservation_in(name: &str, network_name: &str) -> Option<String> {
    let rest = if network_name.is_empty() {
        name
    } else {
        name.strip_prefix(network_name)?.strip_prefix('-')?
    };
    let address: std::net::IpAddr = rest.replace('-', ":").parse().ok()?;
    let address = address.to_string();
    (reservation_name(network_name, &address) == name).then_some(address)
}

/// The address an OverlappingRangeIPReservation is for, read back from its name when its
/// network is not known: of the networks whose reading of the name gives an address
/// ([`reservation_in`]), the longest among `networks` (those of the pools) wins, else the
/// unnamed network's reading, else the first. None when no reading gives an address.
pub fn reservation_address<'a>(
    name: &str,
    networks: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let splits = std::iter::once("").chain(name.match_indices('-').map(|(at, _)| &name[..at]));
    let candidates: Vec<(&str, String)> =
        splits.filter_map(|network| Some((network, reservation_in(name, network)?))).collect();
    let known: Vec<&str> = networks.into_iter().collect();
    let best = candidates
        .iter()
        .filter(|(network, _)| known.contains(network))
        .max_by_key(|(network, _)| network.len())
        .or(candidates.first())?;
    Some(best.1.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_pools_name_their_network_and_node() {
        let owner = |pool, slice, slice_pool| slice_pool_owner(pool, slice, slice_pool);
        let pair = |n: &str, node: &str| Some((n.to_string(), node.to_string()));
        assert_eq!(
            owner("blue-worker-1-10.40.0.16-28", "10.40.0.16/28", "blue"),
            pair("blue", "worker-1")
        );
        // An unnamed network: the NodeSlicePool is named after the CNI network.
        assert_eq!(
            owner("worker-1-10.40.0.16-28", "10.40.0.16/28", "blue-net"),
            pair("", "worker-1")
        );
        assert_eq!(owner("blue-fd00--20-124", "fd00::20/124", "blue"), pair("", "blue"));
        assert_eq!(owner("blue-w-fd00--20-124", "fd00::20/124", "blue"), pair("blue", "w"));
        // Another slice's pool, or a whole-range pool.
        assert_eq!(owner("blue-worker-1-10.40.0.16-28", "10.40.0.32/28", "blue"), None);
        assert_eq!(owner("10.40.0.16-28", "10.40.0.16/28", "blue"), None);
        assert_eq!(owner("blue-10.40.0.16-28", "10.40.0.16/28", "blue"), pair("", "blue"));
    }

    #[test]
    fn names_match_whereabouts() {
        assert_eq!(reservation_name("", "fd00::5"), "fd00--5");
        // Whereabouts' NormalizeIP: an address ending in ':' gets a '0'.
        assert_eq!(reservation_name("", "fd00::"), "fd00--0");
        assert_eq!(reservation_name("blue", "fd00:1::"), "blue-fd00-1--0");
        assert_eq!(reservation_name("blue", "10.0.0.5"), "blue-10.0.0.5");
        let cases = [
            ("blue-10.0.0.0-24", "10.0.0.0/24", Some("blue")),
            ("10.0.0.0-24", "10.0.0.0/24", Some("")),
            ("blue-fd00---64", "fd00::/64", Some("blue")),
            ("fd00--0-64", "fd00::/64", None),
            ("blue-fd00-0", "fd00:", Some("blue")),
            ("other", "10.0.0.0/24", None),
            ("blue10.0.0.0-24", "10.0.0.0/24", None),
        ];
        for (pool, range, network) in cases {
            assert_eq!(network_of_pool(pool, range).as_deref(), network, "{pool} {range}");
        }
    }

    #[test]
    fn a_reservation_name_gives_its_address_back() {
        let networks = ["blue", "ab", ""];
        let cases = [
            ("blue-10.50.0.77", Some("10.50.0.77")),
            ("10.0.0.5", Some("10.0.0.5")),
            ("fd00--5", Some("fd00::5")),
            ("blue-fd00--5", Some("fd00::5")),
            // "ab:cd::1" and network "ab" with "cd::1" both name the object; "ab" is a pool's.
            ("ab-cd--1", Some("cd::1")),
            ("blue-not-an-address", None),
            ("blue-10.050.0.1", None),
            ("fd00--0", Some("fd00::")),
            ("blue-fd00-1--0", Some("fd00:1::")),
            // Not the canonical form: neither we nor Whereabouts write it.
            ("fd00-0-0-0-0-0-0-5", None),
        ];
        for (name, address) in cases {
            assert_eq!(reservation_address(name, networks).as_deref(), address, "{name}");
        }
        assert_eq!(reservation_address("ab-cd--1", [""]).as_deref(), Some("ab:cd::1"));
    }

    #[test]
    fn a_networks_reservations_are_told_by_their_names() {
        let cases = [
            ("blue-10.0.0.5", "blue", Some("10.0.0.5")),
            ("blue-10.0.0.5", "", None),
            ("blue-10.0.0.5", "blu", None),
            ("blue-10.0.0.5", "red", None),
            ("10.0.0.5", "", Some("10.0.0.5")),
            ("10.0.0.5", "blue", None),
            ("blue-fd00--5", "blue", Some("fd00::5")),
            ("fd00--5", "", Some("fd00::5")),
            ("my-net-fd00--5", "my-net", Some("fd00::5")),
            ("my-net-fd00--5", "my", None),
            ("fd00--0", "", Some("fd00::")),
            // One object, two readings (see reservation_in).
            ("ab-cd--1", "ab", Some("cd::1")),
            ("ab-cd--1", "", Some("ab:cd::1")),
            ("blue-", "blue", None),
            ("blue-10.0.0.05", "blue", None),
        ];
        for (name, network, address) in cases {
            assert_eq!(reservation_in(name, network).as_deref(), address, "{name} in {network:?}");
        }
    }

    #[test]
    fn whereabouts_json_round_trips() {
        let text = r#"{"apiVersion":"whereabouts.cni.cncf.io/v1alpha1","kind":"IPPool","metadata":{"name":"10.0.0.0-24","namespace":"kube-system","resourceVersion":"7"},"spec":{"range":"10.0.0.0/24","allocations":{"1":{"id":"c1","podref":"default/a","ifname":"net1"},"2":{"id":"c2","podref":""}}}}"#;
        let pool: IPPool = serde_json::from_str(text).unwrap();
        assert_eq!(pool.spec.allocations["2"].ifname, "");
        let back = serde_json::to_value(&pool).unwrap();
        assert_eq!(back["spec"]["allocations"]["2"], serde_json::json!({"id": "c2", "podref": ""}));
        let empty: IPPool = serde_json::from_str(
            r#"{"metadata":{"name":"x"},"spec":{"range":"10.0.0.0/24","allocations":null}}"#,
        )
        .unwrap();
        assert!(empty.spec.allocations.is_empty());
        assert_eq!(
            serde_json::to_value(&empty).unwrap()["spec"]["allocations"],
            serde_json::json!({})
        );
    }

    #[test]
    fn crds_have_whereabouts_names_and_scope() {
        let yaml = crds_yaml();
        assert!(yaml.contains("name: ippools.whereabouts.cni.cncf.io"), "{yaml}");
        assert!(yaml.contains("name: overlappingrangeipreservations.whereabouts.cni.cncf.io"));
        assert!(yaml.contains("scope: Namespaced"));
        assert!(!yaml.contains("ipamclaims"), "the IPAMClaim CRD is printed on its own");
        let claims = ipamclaims_crd_yaml();
        assert!(claims.contains("name: ipamclaims.k8s.cni.cncf.io"), "{claims}");
        assert!(claims.contains("status: {}"), "a status subresource: {claims}");
    }
}
