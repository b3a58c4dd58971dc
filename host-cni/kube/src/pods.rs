//! Is a pod still using its addresses? The one policy for every part of Hereabouts that frees
//! addresses on Kubernetes (`reconcile` and `controller`), kept pure so it is tested as a
//! table of pod and node states.
//!
//! An allocation records `podref` ("namespace/name"), container id and ifname, but not the
//! pod's UID, so a pod recreated under the same name looks like the old one. The policy is
//! therefore deliberately conservative — an address is freed only when we can *see* it is not
//! used:
//! - no pod of that name exists (callers read the allocations *before* the pods, so an
//!   allocation made after the pod was read cannot be mistaken for an orphan);
//! - the pod is in a terminal phase (Succeeded/Failed: the kubelet has torn its sandbox down);
//! - the pod can never run again: the taint manager evicted it from a failed node (condition
//!   `DisruptionTarget`, status True, reason `DeletionByTaintManager`), which is Whereabouts'
//!   rule since its PR #485; or it is being deleted and its node object is gone (nodes are
//!   read *after* the pods, so a pod on a node that joined meanwhile still finds its node);
//!   or, when the operator sets a grace period (off by default), it is being deleted on a
//!   node whose `Ready` condition has not been True for longer than that period: a dead node's
//!   kubelet never sends the DEL, so these addresses came back only with a force-delete;
//! - the pod is Running and its Multus `k8s.v1.cni.cncf.io/network-status` annotation lists its
//!   secondary networks without this address (the pod no longer has that interface/network —
//!   this is also what frees the old address of a StatefulSet pod recreated under its name).
//!
//! Everything else is kept: a Pending pod (it may not be annotated yet, or it is the recreated
//! pod about to take over a sticky address), a pod being deleted on a live node (the runtime's
//! DEL is coming), a Running pod whose node is gone (the kubelet may register its node again;
//! Kubernetes' pod garbage collector deletes such pods, and then they are freed), and a Running
//! pod without a readable annotation (we cannot tell).
//!
//! Claimed addresses (IPAMClaims, KubeVirt's persistent IPs) are the exception to all of the
//! above: an allocation or reservation whose container id is an IPAMClaim's
//! (`ipamclaim:<namespace>/<name>`, see `hereabouts_stores::kube::claims`) outlives its pods —
//! a stopped VM has none — so its podref says nothing. It is kept while the claim exists and
//! freed when it does not ([`claimed`]); KubeVirt deletes the claim with the VM.
//!
//! StatefulSet members' addresses (`persistentStatefulSetIPs`) outlive their pods too: an
//! allocation or reservation whose container id is a member's
//! (`statefulset:<namespace>/<set>/<N>/<whenDeleted>/<whenScaled>`, see
//! `hereabouts_stores::kube::statefulsets`) follows its StatefulSet, as a PVC of its
//! `volumeClaimTemplates` does under `persistentVolumeClaimRetentionPolicy` ([`stateful`]):
//! kept while the set exists and has ordinal N; with `whenScaled: Delete`, freed once a scale
//! down removed N; with `whenDeleted: Delete`, freed once the set is gone; `Retain` keeps it
//! for good. Even then it is freed only when the pod rule above would free it too — a pod of
//! an orphaning delete (`--cascade=orphan`) or one still terminating after a scale-down keeps
//! using its address until it is gone.
//!
//! Callers keep only [`PodFacts`] and [`NodeFacts`] of the objects they list, so a pass over
//! a large cluster holds a few hundred bytes per pod, not the whole object.

use std::collections::HashMap;
use std::time::Duration;

use hereabouts_stores::kube::statefulsets::{Member, Ordinals, Policy};
use k8s_openapi::api::core::v1::{Node, Pod};
use serde::Deserialize;

/// Multus' annotation listing a pod's networks and their addresses.
pub const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";

/// What the policy needs of a pod, taken from the object once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFacts {
    /// "namespace/name".
    pub podref: String,
    /// `status.phase`; "Pending" when none is reported yet.
    pub phase: String,
    /// It has a deletion timestamp.
    pub deleting: bool,
    /// The taint manager evicted it (`DisruptionTarget`: `DeletionByTaintManager`).
    pub evicted: bool,
    /// `spec.nodeName`; empty when not scheduled.
    pub node: String,
    /// The addresses Multus lists on its secondary networks.
    pub secondary: Secondary,
}

/// What the network-status annotation says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secondary {
    Listed(Vec<String>),
    NoAnnotation,
    Unreadable,
}

impl PodFacts {
    pub fn of(pod: &Pod) -> Option<Self> {
        let status = pod.status.as_ref();
        let evicted = status.and_then(|s| s.conditions.as_ref()).is_some_and(|conditions| {
            conditions.iter().any(|c| {
                c.type_ == "DisruptionTarget"
                    && c.status == "True"
                    && c.reason.as_deref() == Some("DeletionByTaintManager")
            })
        });
        let secondary = match pod.metadata.annotations.as_ref().and_then(|a| a.get(NETWORK_STATUS))
        {
            None => Secondary::NoAnnotation,
            Some(text) => match serde_json::from_str::<Vec<NetworkStatus>>(text) {
                Ok(networks) => Secondary::Listed(
                    networks.into_iter().filter(|n| !n.default).flat_map(|n| n.ips).collect(),
                ),
                Err(_) => Secondary::Unreadable,
            },
        };
        Some(Self {
            podref: podref_of(pod)?,
            phase: status.and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into()),
            deleting: pod.metadata.deletion_timestamp.is_some(),
            evicted,
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default(),
            secondary,
        })
    }
}

/// What the policy needs of a node: since when (seconds since the epoch) its `Ready`
/// condition has not been True; None while it is Ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeFacts {
    pub not_ready_since: Option<i64>,
}

impl NodeFacts {
    pub fn of(node: &Node) -> Self {
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|conditions| conditions.iter().find(|c| c.type_ == "Ready"));
        let not_ready_since = match ready {
            Some(c) if c.status == "True" => None,
            // No transition time: count from the epoch, i.e. as long past.
            Some(c) => Some(c.last_transition_time.as_ref().map_or(0, |t| t.0.as_second())),
            // A node that never reported Ready is treated as not ready since forever too.
            None => Some(0),
        };
        Self { not_ready_since }
    }
}

/// What the policy knows of the cluster's nodes.
#[derive(Debug, Clone, Default)]
pub struct Nodes {
    /// By name; None when the caller did not read the nodes (the node rules then never fire).
    pub known: Option<HashMap<String, NodeFacts>>,
    /// Free a deleting pod's addresses once its node has not been Ready for this long.
    pub not_ready_grace: Option<Duration>,
    /// Now, in seconds since the epoch.
    pub now: i64,
}

/// What the policy sees of a pod.
#[derive(Debug, Clone, Copy, PartialEq)]
enum PodState<'a> {
    /// No pod of that namespace and name exists.
    Missing,
    /// It can never run again; why.
    Dead(&'static str),
    /// The pod has a deletion timestamp: its runtime's DEL frees the address.
    Deleting,
    /// Succeeded or Failed.
    Terminated(&'a str),
    /// Running; what its network-status annotation says decides.
    Running(&'a Secondary),
    /// Pending, Unknown, or no phase reported yet.
    Other(&'a str),
}

fn state<'a>(pod: Option<&'a PodFacts>, nodes: &Nodes) -> PodState<'a> {
    let Some(pod) = pod else { return PodState::Missing };
    if pod.evicted {
        return PodState::Dead(
            "pod was evicted from its node by the taint manager (DisruptionTarget: DeletionByTaintManager)",
        );
    }
    if pod.deleting {
        if let (Some(known), false) = (&nodes.known, pod.node.is_empty()) {
            match known.get(&pod.node) {
                None => {
                    return PodState::Dead("pod is being deleted and its node no longer exists");
                }
                Some(NodeFacts { not_ready_since: Some(since) }) => {
                    if let Some(grace) = nodes.not_ready_grace
                        && nodes.now.saturating_sub(*since) >= grace.as_secs() as i64
                    {
                        return PodState::Dead(
                            "pod is being deleted on a node that has not been Ready for longer than the grace period",
                        );
                    }
                }
                Some(_) => {}
            }
        }
        return PodState::Deleting;
    }
    match pod.phase.as_str() {
        phase @ ("Succeeded" | "Failed") => PodState::Terminated(phase),
        "Running" => PodState::Running(&pod.secondary),
        phase => PodState::Other(phase),
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
pub fn allocation(pod: Option<&PodFacts>, address: &str, nodes: &Nodes) -> Verdict {
    match state(pod, nodes) {
        PodState::Missing => Verdict::Free("pod no longer exists".into()),
        PodState::Dead(why) => Verdict::Free(why.into()),
        PodState::Deleting => {
            Verdict::Keep("pod is being deleted; its runtime DEL frees the address".into())
        }
        PodState::Terminated(phase) => Verdict::Free(format!("pod has terminated ({phase})")),
        PodState::Other(phase) => Verdict::Keep(format!("pod is {phase}")),
        PodState::Running(secondary) => network_status(secondary, address),
    }
}

/// An allocation or reservation an IPAMClaim owns: kept while the claim exists, whatever its
/// pods do (callers list the claims *after* the allocations, as they list pods).
pub fn claimed(claim_exists: bool) -> Verdict {
    if claim_exists {
        Verdict::Keep("its IPAMClaim exists".into())
    } else {
        Verdict::Free("its IPAMClaim no longer exists".into())
    }
}

/// An allocation or reservation a StatefulSet member owns (see the module doc): `set` is the
/// StatefulSet's ordinals, None when it does not exist (callers list the sets *after* the
/// allocations); `pod` is what the pod rule says of the address. Freed only when both agree.
pub fn stateful(member: &Member, set: Option<&Ordinals>, pod: Verdict) -> Verdict {
    let ordinal = member.ordinal;
    let why = match set {
        None if member.retention.when_deleted == Policy::Delete => {
            "its StatefulSet no longer exists (whenDeleted: Delete)".to_string()
        }
        None => {
            return Verdict::Keep("its StatefulSet is gone; whenDeleted: Retain keeps it".into());
        }
        Some(set) if set.contains(ordinal) => {
            return Verdict::Keep(format!("its StatefulSet has ordinal {ordinal}"));
        }
        Some(_) if member.retention.when_scaled == Policy::Delete => {
            format!("its StatefulSet was scaled down below ordinal {ordinal} (whenScaled: Delete)")
        }
        Some(_) => {
            return Verdict::Keep(format!(
                "its StatefulSet was scaled down below ordinal {ordinal}; whenScaled: Retain keeps it"
            ));
        }
    };
    match pod {
        Verdict::Free(_) => Verdict::Free(why),
        Verdict::Keep(pod) => Verdict::Keep(format!("{why}, but {pod}")),
    }
}

/// A reservation (OverlappingRangeIPReservation) whose podref names `pod`. Only a pod that is
/// gone frees it: the reservations of allocations the policy frees go with their allocation.
pub fn reservation(pod: Option<&PodFacts>, nodes: &Nodes) -> Verdict {
    match state(pod, nodes) {
        PodState::Missing => Verdict::Free("pod no longer exists".into()),
        PodState::Dead(why) => Verdict::Free(why.into()),
        PodState::Terminated(phase) => Verdict::Free(format!("pod has terminated ({phase})")),
        PodState::Deleting => {
            Verdict::Keep("pod is being deleted; its runtime DEL frees the address".into())
        }
        PodState::Running(_) | PodState::Other(_) => Verdict::Keep("pod exists".into()),
    }
}

/// Whether a watch event's pod is worth a look by the controller: it terminated or can never
/// run again (deletions are looked at anyway).
pub fn has_terminated(pod: &Pod) -> bool {
    PodFacts::of(pod).is_some_and(|facts| {
        matches!(
            state(Some(&facts), &Nodes::default()),
            PodState::Terminated(_) | PodState::Dead(_)
        )
    })
}

fn network_status(secondary: &Secondary, address: &str) -> Verdict {
    match secondary {
        Secondary::NoAnnotation => {
            Verdict::Keep("pod has no network-status annotation; cannot tell".into())
        }
        Secondary::Unreadable => {
            Verdict::Keep("pod's network-status annotation is unreadable; cannot tell".into())
        }
        Secondary::Listed(ips) if ips.iter().any(|ip| ip == address) => {
            Verdict::Keep("pod uses the address".into())
        }
        Secondary::Listed(_) => {
            Verdict::Free("running pod no longer has this address on any network".into())
        }
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
    const NOW: i64 = 1_800_000_000;

    fn pod(mut value: serde_json::Value) -> PodFacts {
        value["metadata"]["namespace"] = json!("default");
        PodFacts::of(&serde_json::from_value(value).unwrap()).unwrap()
    }

    fn running(annotations: serde_json::Value) -> PodFacts {
        pod(json!({"metadata": {"name": "a", "annotations": annotations},
            "status": {"phase": "Running"}}))
    }

    fn phase(phase: &str) -> PodFacts {
        pod(json!({"metadata": {"name": "a"}, "status": {"phase": phase}}))
    }

    /// A pod on node `node`, being deleted or not, with extra status conditions.
    fn on_node(node: &str, deleting: bool, conditions: serde_json::Value) -> PodFacts {
        let mut value = json!({"metadata": {"name": "a"}, "spec": {"nodeName": node, "containers": []},
            "status": {"phase": "Running", "conditions": conditions}});
        if deleting {
            value["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        pod(value)
    }

    fn node(ready: &str, since: &str) -> NodeFacts {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n"},
            "status": {"conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": since}]}}))
        .unwrap();
        NodeFacts::of(&node)
    }

    fn cluster(grace: Option<u64>) -> Nodes {
        Nodes {
            known: Some(HashMap::from([
                ("live".to_string(), node("True", "2026-01-01T00:00:00Z")),
                // NotReady for 600 s at NOW.
                ("dead".to_string(), node("Unknown", "2027-01-15T07:50:00Z")),
            ])),
            not_ready_grace: grace.map(Duration::from_secs),
            now: NOW,
        }
    }

    #[test]
    fn a_claimed_address_follows_its_claim() {
        assert_eq!(claimed(true), Verdict::Keep("its IPAMClaim exists".into()));
        assert_eq!(claimed(false), Verdict::Free("its IPAMClaim no longer exists".into()));
    }

    #[test]
    fn a_statefulset_members_address_follows_its_set_and_its_policy() {
        use hereabouts_stores::kube::statefulsets::Retention;
        let member = |when_deleted, when_scaled| Member {
            namespace: "db".into(),
            set: "web".into(),
            ordinal: 2,
            retention: Retention { when_deleted, when_scaled },
        };
        let (retain, delete) = (Policy::Retain, Policy::Delete);
        let three = Ordinals { start: 0, replicas: 3 };
        let one = Ordinals { start: 0, replicas: 1 };
        let gone = || Verdict::Free("pod no longer exists".into());
        let running = || Verdict::Keep("pod uses the address".into());
        // (member, set, pod rule, freed)
        let cases = [
            (member(delete, delete), Some(three), gone(), false),
            (member(delete, retain), Some(one), gone(), false),
            (member(delete, delete), Some(one), gone(), true),
            (member(delete, delete), Some(one), running(), false),
            (member(delete, retain), None, gone(), true),
            (member(delete, retain), None, running(), false),
            (member(retain, delete), None, gone(), false),
        ];
        for (i, (member, set, pod, freed)) in cases.into_iter().enumerate() {
            let verdict = stateful(&member, set.as_ref(), pod);
            assert_eq!(verdict.is_free(), freed, "case {i}: {verdict:?}");
        }
        assert_eq!(
            stateful(&member(delete, retain), None, gone()),
            Verdict::Free("its StatefulSet no longer exists (whenDeleted: Delete)".into())
        );
    }

    /// Every pod state against both rules, without node facts: (case, pod, address,
    /// allocation freed, reservation freed).
    #[test]
    fn the_policy_as_a_table() {
        let deleting =
            pod(json!({"metadata": {"name": "a", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"phase": "Failed"}}));
        let no_phase = pod(json!({"metadata": {"name": "a"}}));
        let cases: Vec<(&str, Option<PodFacts>, &str, bool, bool)> = vec![
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
            let a = allocation(pod.as_ref(), address, &Nodes::default());
            let r = reservation(pod.as_ref(), &Nodes::default());
            assert_eq!(a.is_free(), allocation_freed, "{case}: allocation {a:?}");
            assert_eq!(r.is_free(), reservation_freed, "{case}: reservation {r:?}");
        }
    }

    /// Pods that can never run again, against node states and the grace period: (case, pod,
    /// grace in seconds, freed). Allocation and reservation agree on each.
    #[test]
    fn dead_nodes_as_a_table() {
        let evicted = json!([{"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager"}]);
        let other_disruption = json!([{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}]);
        let cases: Vec<(&str, PodFacts, Option<u64>, bool)> = vec![
            (
                "evicted by the taint manager, deleting",
                on_node("dead", true, evicted.clone()),
                None,
                true,
            ),
            (
                "evicted by the taint manager, not deleting yet",
                on_node("live", false, evicted),
                None,
                true,
            ),
            (
                "another disruption (preemption): its DEL comes",
                on_node("live", true, other_disruption),
                None,
                false,
            ),
            ("deleting, node gone", on_node("gone", true, json!([])), None, true),
            (
                "running, node gone: kept (the kubelet may re-register)",
                on_node("gone", false, json!([])),
                None,
                false,
            ),
            ("deleting, live node", on_node("live", true, json!([])), Some(1), false),
            (
                "deleting, node NotReady, no grace set",
                on_node("dead", true, json!([])),
                None,
                false,
            ),
            (
                "deleting, node NotReady 600 s, grace 300 s",
                on_node("dead", true, json!([])),
                Some(300),
                true,
            ),
            (
                "deleting, node NotReady 600 s, grace 900 s",
                on_node("dead", true, json!([])),
                Some(900),
                false,
            ),
            (
                "running on a NotReady node, grace 300 s",
                on_node("dead", false, json!([])),
                Some(300),
                false,
            ),
            ("deleting, not scheduled", on_node("", true, json!([])), Some(1), false),
        ];
        for (case, pod, grace, freed) in cases {
            let nodes = cluster(grace);
            let a = allocation(Some(&pod), "10.0.0.9", &nodes);
            let r = reservation(Some(&pod), &nodes);
            assert_eq!(a.is_free(), freed, "{case}: allocation {a:?}");
            assert_eq!(r.is_free(), freed, "{case}: reservation {r:?}");
        }
        // Without node facts the node rules never fire.
        let pod = on_node("gone", true, json!([]));
        assert!(!allocation(Some(&pod), "10.0.0.9", &Nodes::default()).is_free());
    }

    #[test]
    fn node_readiness() {
        let never: Node = serde_json::from_value(json!({"metadata": {"name": "n"}})).unwrap();
        assert_eq!(NodeFacts::of(&never).not_ready_since, Some(0));
        assert_eq!(node("True", "2026-01-01T00:00:00Z").not_ready_since, None);
        assert_eq!(node("False", "2027-01-15T08:00:00Z").not_ready_since, Some(NOW));
    }

    #[test]
    fn reasons_say_why() {
        let none = Nodes::default();
        assert_eq!(allocation(None, "x", &none).reason(), "pod no longer exists");
        assert_eq!(
            allocation(Some(&phase("Failed")), "x", &none).reason(),
            "pod has terminated (Failed)"
        );
        assert_eq!(allocation(Some(&phase("Pending")), "x", &none).reason(), "pod is Pending");
        let gone = allocation(Some(&on_node("gone", true, json!([]))), "x", &cluster(None));
        assert_eq!(gone.reason(), "pod is being deleted and its node no longer exists");
    }

    #[test]
    fn terminated_for_the_watch() {
        let pod = |v| serde_json::from_value::<Pod>(v).unwrap();
        let meta = json!({"name": "a", "namespace": "default"});
        assert!(has_terminated(&pod(json!({"metadata": meta, "status": {"phase": "Succeeded"}}))));
        assert!(!has_terminated(&pod(json!({"metadata": meta, "status": {"phase": "Running"}}))));
        let evicted = json!({"phase": "Running", "conditions": [{"type": "DisruptionTarget",
            "status": "True", "reason": "DeletionByTaintManager"}]});
        assert!(has_terminated(&pod(json!({"metadata": meta, "status": evicted}))));
    }

    #[test]
    fn podrefs() {
        assert_eq!(split_podref("ns/a"), Some(("ns", "a")));
        assert_eq!(split_podref(""), None);
        assert_eq!(split_podref("a"), None);
        assert_eq!(split_podref("/a"), None);
        assert_eq!(split_podref("a/b/c"), None);
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": "a", "namespace": "ns"}})).unwrap();
        assert_eq!(podref_of(&pod).as_deref(), Some("ns/a"));
    }
}
