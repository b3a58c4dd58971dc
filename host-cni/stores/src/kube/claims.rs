//! IPAMClaims (`k8s.cni.cncf.io/v1alpha1`): addresses that belong to a claim, not to a pod, so
//! a KubeVirt VM keeps its address across a stop/start (a new pod) and during a live migration
//! (two pods at once), as OVN-Kubernetes gives them.
//!
//! What this module holds is what every part of Hereabouts must agree on about a claim:
//! - the **owner identity** of a claimed allocation: container id `ipamclaim:<namespace>/<name>`
//!   ([`owner_id`], read back by [`claim_of_owner`]). The claim's name survives every pod of the
//!   VM, so the allocator's idempotent ADD per owner hands each of them the same address, and
//!   two pods of one claim are one attachment (no reservation conflict). The podref stays the
//!   pod's, so Whereabouts-style tools still show a pod; reconcile recognises the prefix and
//!   keeps the allocation while the claim exists (`hereabouts-kube`'s pod policy);
//! - which claim a pod's attachment names: the `ipam-claim-reference` of its network-selection
//!   element in `k8s.v1.cni.cncf.io/networks` ([`claim_reference`]);
//! - the claim's status as we write it ([`allocated`], [`failed`]): `status.ips` as CIDRs
//!   ("10.0.0.5/24", as OVN-Kubernetes writes them), `status.ownerPod.name`, and one condition
//!   of type [`CONDITION`] (`IPsAllocated`): True with reason [`ALLOCATED`], or False with
//!   [`ADDRESS_IN_USE`] (its address is someone else's) or [`ALLOCATION_FAILED`] (anything else);
//! - the requests: GET a pod or a claim, PUT a claim's status subresource conditioned on the
//!   `resourceVersion` read, list every claim (reconcile).

use ::kube::api::{Api, ListParams, PostParams};
use serde::Deserialize;

use super::crd::{ClaimCondition, IPAMClaim, IPAMClaimStatus, OwnerPod};
use super::{KubeError, KubeStore, Request};

/// Multus' network-selection annotation on a pod.
pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";
/// The key of a network-selection element naming its IPAMClaim.
pub const CLAIM_REFERENCE: &str = "ipam-claim-reference";
/// The container id prefix of a claimed allocation's owner.
pub const OWNER_PREFIX: &str = "ipamclaim:";
/// The condition we keep on a claim.
pub const CONDITION: &str = "IPsAllocated";
/// Reason: the claim's addresses are allocated to it.
pub const ALLOCATED: &str = "Allocated";
/// Reason: an address of the claim's `status.ips` is held by someone else.
pub const ADDRESS_IN_USE: &str = "AddressInUse";
/// Reason: allocation failed otherwise (range exhausted, store unavailable, …).
pub const ALLOCATION_FAILED: &str = "AllocationFailed";

/// The container id of the owner of the claim `namespace/name`'s allocations.
pub fn owner_id(namespace: &str, name: &str) -> String {
    format!("{OWNER_PREFIX}{namespace}/{name}")
}

/// The claim (namespace, name) a container id names, if it is a claim's owner.
pub fn claim_of_owner(container_id: &str) -> Option<(&str, &str)> {
    let (namespace, name) = container_id.strip_prefix(OWNER_PREFIX)?.split_once('/')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains('/')).then_some((namespace, name))
}

/// Why a network-selection annotation cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {NETWORKS_ANNOTATION}: {0}")]
pub struct SelectionError(String);

#[derive(Deserialize)]
struct Selection {
    #[serde(default)]
    interface: Option<String>,
    #[serde(rename = "ipam-claim-reference", default)]
    claim: Option<String>,
}

/// The `ipam-claim-reference` of the network-selection element for interface `ifname`, in the
/// annotation's text. An element names its interface, or Multus names it `net<position>`
/// (1-based: the cluster's default network is 0). The short form (`ns/name@if, …`) carries no
/// claim references.
pub fn claim_reference(annotation: &str, ifname: &str) -> Result<Option<String>, SelectionError> {
    let text = annotation.trim();
    if !text.starts_with('[') {
        return Ok(None);
    }
    let selections: Vec<Selection> = serde_json::from_str(text)
        .map_err(|e| SelectionError(format!("not a list of network selections: {e}")))?;
    let mine = selections.iter().enumerate().find(|(i, s)| match &s.interface {
        Some(interface) if !interface.is_empty() => interface == ifname,
        _ => format!("net{}", i + 1) == ifname,
    });
    Ok(mine.and_then(|(_, s)| s.claim.clone()).filter(|c| !c.is_empty()))
}

/// The status after `pod` got `ips`: `status.ips` kept if set (they are the same addresses),
/// else `ips`; the owner pod; the condition True.
pub fn allocated(claim: &IPAMClaim, ips: &[String], pod: &str, now: &str) -> IPAMClaimStatus {
    let mut status = claim.status.clone().unwrap_or_default();
    if status.ips.is_empty() {
        status.ips = ips.to_vec();
    }
    if !pod.is_empty() {
        status.owner_pod = Some(OwnerPod { name: pod.to_string() });
    }
    let message = format!("{} allocated to the claim", status.ips.join(", "));
    set_condition(&mut status, claim, true, ALLOCATED, message, now);
    status
}

/// The status after an allocation failed: the condition False, with `reason` and `message`.
pub fn failed(claim: &IPAMClaim, reason: &str, message: &str, now: &str) -> IPAMClaimStatus {
    let mut status = claim.status.clone().unwrap_or_default();
    set_condition(&mut status, claim, false, reason, message.to_string(), now);
    status
}

/// Now, as a Kubernetes timestamp (RFC 3339, whole seconds, UTC): a condition's
/// `lastTransitionTime`.
pub fn now() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    k8s_openapi::jiff::Timestamp::from_second(seconds)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// Sets our condition; its `lastTransitionTime` changes only when its status does.
fn set_condition(
    status: &mut IPAMClaimStatus,
    claim: &IPAMClaim,
    ok: bool,
    reason: &str,
    message: String,
    now: &str,
) {
    let value = if ok { "True" } else { "False" };
    let since = status
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION && c.status == value)
        .map_or_else(|| now.to_string(), |c| c.last_transition_time.clone());
    status.conditions.retain(|c| c.type_ != CONDITION);
    status.conditions.push(ClaimCondition {
        type_: CONDITION.to_string(),
        status: value.to_string(),
        reason: reason.to_string(),
        message,
        last_transition_time: since,
        observed_generation: claim.metadata.generation,
    });
}

impl KubeStore {
    /// The claim `namespace/name`; None when it does not exist.
    pub fn get_claim(&self, namespace: &str, name: &str) -> Result<Option<IPAMClaim>, KubeError> {
        let api: Api<IPAMClaim> = Api::namespaced(self.client.clone(), namespace);
        self.request(Request::new("get", "ipamclaims", name), api.get_opt(name))
    }

    /// Writes `status` to the claim's status subresource, conditioned on the claim's
    /// `resourceVersion` as read (409 Conflict when it changed: read it again).
    pub fn write_claim_status(
        &self,
        claim: &IPAMClaim,
        status: IPAMClaimStatus,
    ) -> Result<IPAMClaim, KubeError> {
        let namespace = claim.metadata.namespace.as_deref().unwrap_or_default();
        let name = claim.metadata.name.as_deref().unwrap_or_default();
        let api: Api<IPAMClaim> = Api::namespaced(self.client.clone(), namespace);
        let mut object = claim.clone();
        object.status = Some(status);
        let request = Request::new("update", "ipamclaims/status", name);
        self.request(request, api.replace_status(name, &PostParams::default(), &object))
    }

    /// Every IPAMClaim in every namespace (reconcile).
    pub fn list_claims(&self) -> Result<Vec<IPAMClaim>, KubeError> {
        let api: Api<IPAMClaim> = Api::all(self.client.clone());
        let request = Request::new("list", "ipamclaims", "");
        Ok(self.request(request, api.list(&ListParams::default()))?.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_ids_name_their_claim() {
        let id = owner_id("vms", "vm-a.blue");
        assert_eq!(id, "ipamclaim:vms/vm-a.blue");
        assert_eq!(claim_of_owner(&id), Some(("vms", "vm-a.blue")));
        for other in ["c1", "ipamclaim:", "ipamclaim:vms", "ipamclaim:/x", "ipamclaim:a/b/c"] {
            assert_eq!(claim_of_owner(other), None, "{other}");
        }
    }

    #[test]
    fn the_selection_for_the_interface_names_the_claim() {
        let annotation = r#"[{"name": "red"},
            {"name": "blue", "namespace": "vms", "ipam-claim-reference": "vm-a.blue"},
            {"name": "green", "interface": "pod1a2b", "ipam-claim-reference": "vm-a.green"}]"#;
        let cases = [
            ("net1", None),
            ("net2", Some("vm-a.blue")),
            ("pod1a2b", Some("vm-a.green")),
            // An element naming its interface is not `net3`.
            ("net3", None),
            ("eth0", None),
        ];
        for (ifname, claim) in cases {
            assert_eq!(claim_reference(annotation, ifname).unwrap().as_deref(), claim, "{ifname}");
        }
        assert_eq!(claim_reference("vms/blue@net1, red", "net1"), Ok(None));
        assert!(claim_reference("[{", "net1").unwrap_err().to_string().starts_with(
            "annotation k8s.v1.cni.cncf.io/networks: not a list of network selections"
        ));
    }

    #[test]
    fn status_keeps_its_ips_and_its_transition_time() {
        let mut claim = IPAMClaim::new("vm-a.blue", Default::default());
        let status = allocated(&claim, &["10.0.0.1/24".into()], "virt-launcher-a", "t1");
        assert_eq!(status.ips, ["10.0.0.1/24"]);
        assert_eq!(status.owner_pod.as_ref().unwrap().name, "virt-launcher-a");
        assert_eq!(status.conditions[0].last_transition_time, "t1");
        claim.status = Some(status);
        let again = allocated(&claim, &["10.0.0.9/24".into()], "virt-launcher-b", "t2");
        assert_eq!(again.ips, ["10.0.0.1/24"], "status.ips is the claim's");
        assert_eq!(again.conditions[0].last_transition_time, "t1", "no transition");
        claim.status = Some(again);
        let failure = failed(&claim, ADDRESS_IN_USE, "taken", "t3");
        assert_eq!(failure.conditions.len(), 1);
        let condition = &failure.conditions[0];
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str(), condition.type_.as_str()),
            ("False", ADDRESS_IN_USE, CONDITION)
        );
        assert_eq!(condition.last_transition_time, "t3");
    }
}
