//! Is an allocation's pod still using its address? The rule shared by `reconcile` and
//! `controller`, kept pure so it is tested by tables.
//!
//! An allocation records `podref` ("namespace/name"), container id and ifname, but not the
//! pod's UID, so a pod recreated under the same name looks like the old one. The rule is
//! therefore deliberately conservative — an address is freed only when we can *see* it is not
//! used:
//! - no pod of that name exists (the pools are listed *before* the pods, so an allocation made
//!   after the pod list cannot be mistaken for an orphan);
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

pub const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";

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

/// Judges one allocation of `address` given the pod of its podref (None: no such pod).
pub fn judge(pod: Option<&Pod>, address: &str) -> Verdict {
    let Some(pod) = pod else {
        return Verdict::Free("pod no longer exists".into());
    };
    if pod.metadata.deletion_timestamp.is_some() {
        return Verdict::Keep("pod is being deleted; its runtime DEL frees the address".into());
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    match phase {
        "Succeeded" | "Failed" => return Verdict::Free(format!("pod has terminated ({phase})")),
        "Running" => {}
        other => return Verdict::Keep(format!("pod is {other}")),
    }
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
