//! Whereabouts' two custom resources, field for field as Whereabouts (v0.9) writes them, so a
//! cluster can switch between Whereabouts and Hereabouts in either direction without migration.
//!
//! Group `whereabouts.cni.cncf.io/v1alpha1`, both namespaced (Whereabouts keeps them in the
//! kubeconfig context's namespace, `kube-system` when the context names none):
//! - `IPPool` — one per range: `spec.range` and `spec.allocations`, a map from the decimal
//!   offset of an address from the range's network address to `{id, podref, ifname}`.
//! - `OverlappingRangeIPReservation` — one per address in use per network:
//!   `spec {containerid, podref, ifname}`.
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

/// Go writes a nil map as `null`; read it as an empty pool rather than failing.
fn null_as_empty<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, IPAllocation>, D::Error> {
    Ok(Option::<BTreeMap<String, IPAllocation>>::deserialize(deserializer)?.unwrap_or_default())
}

/// Both CRDs as one multi-document YAML stream (what `hereabouts crds` prints).
pub fn crds_yaml() -> String {
    let mut out = String::new();
    for crd in [IPPool::crd(), OverlappingRangeIPReservation::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd).expect("a CRD serialises"));
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// An IPPool's object name: the range with `:` and `/` turned into `-`, after `network_name-`.
/// (The core computes the same for `pool-ref.name`; this one serves reconcile's reverse lookup.)
pub fn pool_name(network_name: &str, range: &str) -> String {
    let normalized = normalize_range(range);
    if network_name.is_empty() { normalized } else { format!("{network_name}-{normalized}") }
}

fn normalize_range(range: &str) -> String {
    let mut range = range.to_string();
    // Whereabouts: a range ending in ':' gets a '0' so the name does not end in '-'.
    if range.ends_with(':') {
        range.push('0');
    }
    range.replace([':', '/'], "-")
}

/// The network name encoded in a pool's object name, if the name is `[network-]<range>`.
pub fn network_of_pool(pool_name_: &str, range: &str) -> Option<String> {
    let normalized = normalize_range(range);
    if pool_name_ == normalized {
        return Some(String::new());
    }
    pool_name_.strip_suffix(&normalized)?.strip_suffix('-').map(str::to_string)
}

/// An OverlappingRangeIPReservation's object name: the address with `:` turned into `-`,
/// after `network_name-`.
pub fn reservation_name(network_name: &str, address: &str) -> String {
    let normalized = address.replace(':', "-");
    if network_name.is_empty() { normalized } else { format!("{network_name}-{normalized}") }
}
