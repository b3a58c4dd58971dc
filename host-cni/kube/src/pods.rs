//! Is a pod still using its addresses? The one policy for every part of Hereabouts that frees
//! addresses on Kubernetes (`reconcile` and `controller`), kept pure so it is tested as a
//! table of pod states.
//!
//! An allocation records `podref` ("namespace/name"), container id and ifname, but not the
//! pod's UID, so a pod recreated under the same name looks like the old one. The policy is
//! therefore deliberately conservative — an address is freed only when we can *see* it is not
//! used:
//! - no pod of that name exists (callers read the allocations *before* the pods, so an
//!   allocation made after the pod was read cannot be mistaken for an orphan);
//! - the pod is in a terminal phase (Succeeded/Failed: the kubelet has torn its sandbox down);
//! - the pod is Running and its Multus `k8s.v1.cni.cncf.io/network-status` annotation lists its
//!   secondary networks without this address (the pod no longer has that interface/network —
//!   this is also what frees the old address of a StatefulSet pod recreated under its name).
//!
//! Everything else is kept: a Pending pod (it may not be annotated yet, or it is the recreated
//! pod about to take over a sticky address), a pod being deleted (the runtime's DEL is coming),
//! and a Running pod without a readable annotation (we cannot tell).

use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;

/// Multus' annotation listing a pod's networks and their addresses.
pub const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";

/// What the policy sees of a pod.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PodState<'a> {
    /// No pod of that namespace and name exists.
    Missing,
    /// The pod has a deletion timestamp: its runtime's DEL frees the address.
    Deleting,
    /// Succeeded or Failed.
    Terminated(&'a str),
    /// Running; what its network-status annotation says decides.
    Running(&'a Pod),
    /// Pending, Unknown, or no phase reported yet.
    Other(&'a str),
}

impl<'a> PodState<'a> {
    pub fn of(pod: Option<&'a Pod>) -> Self {
        let Some(pod) = pod else { return PodState::Missing };
        if pod.metadata.deletion_timestamp.is_some() {
            return PodState::Deleting;
        }
        match pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending") {
            phase @ ("Succeeded" | "Failed") => PodState::Terminated(phase),
            "Running" => PodState::Running(pod),
            phase => PodState::Other(phase),
        }
    }
}

/// Free an address, or keep it; with the reason, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Keep(String),
    Free(String),
}

impl Verdict {
    pub fn is_free(&self) -> bool {
        matches!(self, Verdict::Free(_))
    }
    pub fn reason(&self) -> &str {
        match self {
            Verdict::Keep(r) | Verdict::Free(r) => r,
        }
    }
}

#[derive(Deserialize)]
struct NetworkStatus {
    #[serde(default)]
    ips: Vec<String>,
    #[serde(default)]
    default: bool,
}

/// An allocation of `address` whose podref names `pod` (None: no such pod).
pub fn allocation(pod: Option<&Pod>, address: &str) -> Verdict {
    match PodState::of(pod) {
        PodState::Missing => Verdict::Free("pod no longer exists".into()),
        PodState::Deleting => {
            Verdict::Keep("pod is being deleted; its runtime DEL frees the address".into())
        }
        PodState::Terminated(phase) => Verdict::Free(format!("pod has terminated ({phase})")),
        PodState::Other(phase) => Verdict::Keep(format!("pod is {phase}")),
        PodState::Running(pod) => network_status(pod, address),
    }
}

/// A reservation (OverlappingRangeIPReservation) whose podref names `pod`. Only a pod that is
/// gone frees it: the reservations of allocations the policy frees go with their allocation.
pub fn reservation(pod: Option<&Pod>) -> Verdict {
    match PodState::of(pod) {
        PodState::Missing => Verdict::Free("pod no longer exists".into()),
        PodState::Terminated(phase) => Verdict::Free(format!("pod has terminated ({phase})")),
        PodState::Deleting => {
            Verdict::Keep("pod is being deleted; its runtime DEL frees the address".into())
        }
        PodState::Running(_) | PodState::Other(_) => Verdict::Keep("pod exists".into()),
    }
}

/// Whether a watch event's pod is worth a look by the controller: it terminated (deletions
/// are looked at anyway).
pub fn has_terminated(pod: &Pod) -> bool {
    matches!(PodState::of(Some(pod)), PodState::Terminated(_))
}

fn network_status(pod: &Pod, address: &str) -> Verdict {
    let Some(annotation) = pod.metadata.annotations.as_ref().and_then(|a| a.get(NETWORK_STATUS))
    else {
        return Verdict::Keep("pod has no network-status annotation; cannot tell".into());
    };
    let Ok(networks) = serde_json::from_str::<Vec<NetworkStatus>>(annotation) else {
        return Verdict::Keep("pod's network-status annotation is unreadable; cannot tell".into());
    };
    let listed =
        networks.iter().filter(|n| !n.default).flat_map(|n| n.ips.iter()).any(|ip| ip == address);
    if listed {
        Verdict::Keep("pod uses the address".into())
    } else {
        Verdict::Free("running pod no longer has this address on any network".into())
    }
}

/// Splits "namespace/name"; None for anything else.
pub fn split_podref(podref: &str) -> Option<(&str, &str)> {
    let (namespace, name) = podref.split_once('/')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains('/')).then_some((namespace, name))
}

/// A pod's "namespace/name".
pub fn podref_of(pod: &Pod) -> Option<String> {
    Some(format!("{}/{}", pod.metadata.namespace.as_deref()?, pod.metadata.name.as_deref()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const STATUS: &str = r#"[{"name":"default/blue","interface":"net1","ips":["10.0.0.2"]},{"name":"cbr0","ips":["10.244.0.5"],"default":true}]"#;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn running(annotations: serde_json::Value) -> Pod {
        pod(json!({"metadata": {"name": "a", "namespace": "default", "annotations": annotations},
            "status": {"phase": "Running"}}))
    }

    fn phase(phase: &str) -> Pod {
        pod(json!({"metadata": {"name": "a"}, "status": {"phase": phase}}))
    }

    /// Every pod state against both rules: (case, pod, address, allocation freed, reservation
    /// freed).
    #[test]
    fn the_policy_as_a_table() {
        let deleting =
            pod(json!({"metadata": {"name": "a", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"phase": "Failed"}}));
        let no_phase = pod(json!({"metadata": {"name": "a"}}));
        let cases: Vec<(&str, Option<Pod>, &str, bool, bool)> = vec![
            ("no pod", None, "10.0.0.2", true, true),
            ("succeeded", Some(phase("Succeeded")), "10.0.0.2", true, true),
            ("failed", Some(phase("Failed")), "10.0.0.2", true, true),
            ("being deleted, even terminated", Some(deleting), "10.0.0.2", false, false),
            ("pending", Some(phase("Pending")), "10.0.0.2", false, false),
            ("unknown", Some(phase("Unknown")), "10.0.0.2", false, false),
            ("no phase yet", Some(no_phase), "10.0.0.2", false, false),
            (
                "running, listed",
                Some(running(json!({NETWORK_STATUS: STATUS}))),
                "10.0.0.2",
                false,
                false,
            ),
            (
                "running, not listed",
                Some(running(json!({NETWORK_STATUS: STATUS}))),
                "10.0.0.3",
                true,
                false,
            ),
            // The default network's addresses do not count.
            (
                "running, only on the default network",
                Some(running(json!({NETWORK_STATUS: STATUS}))),
                "10.244.0.5",
                true,
                false,
            ),
            ("running, no annotation", Some(running(json!({}))), "10.0.0.3", false, false),
            (
                "running, unreadable annotation",
                Some(running(json!({NETWORK_STATUS: "not json"}))),
                "10.0.0.3",
                false,
                false,
            ),
        ];
        for (case, pod, address, allocation_freed, reservation_freed) in cases {
            let a = allocation(pod.as_ref(), address);
            let r = reservation(pod.as_ref());
            assert_eq!(a.is_free(), allocation_freed, "{case}: allocation {a:?}");
            assert_eq!(r.is_free(), reservation_freed, "{case}: reservation {r:?}");
        }
    }

    #[test]
    fn reasons_say_why() {
        assert_eq!(allocation(None, "x").reason(), "pod no longer exists");
        assert_eq!(allocation(Some(&phase("Failed")), "x").reason(), "pod has terminated (Failed)");
        assert_eq!(allocation(Some(&phase("Pending")), "x").reason(), "pod is Pending");
        assert!(has_terminated(&phase("Succeeded")) && !has_terminated(&phase("Running")));
    }

    #[test]
    fn podrefs() {
        assert_eq!(split_podref("ns/a"), Some(("ns", "a")));
        assert_eq!(split_podref(""), None);
        assert_eq!(split_podref("a"), None);
        assert_eq!(split_podref("/a"), None);
        assert_eq!(split_podref("a/b/c"), None);
        let pod = pod(json!({"metadata": {"name": "a", "namespace": "ns"}}));
        assert_eq!(podref_of(&pod).as_deref(), Some("ns/a"));
    }
}
