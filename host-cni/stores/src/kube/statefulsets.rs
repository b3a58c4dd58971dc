//! Persistent addresses for StatefulSet pods: an allocation of pod `<set>-<N>` that outlives
//! the pod, so the next pod of that name (the StatefulSet recreates it) gets it back, as a
//! PersistentVolumeClaim of the set's `volumeClaimTemplates` would be reattached.
//!
//! What every part of Hereabouts must agree on, held here:
//! - the **retention policy** ([`Retention`]), mirroring the StatefulSet's
//!   `spec.persistentVolumeClaimRetentionPolicy`: `whenDeleted` (the set is deleted) and
//!   `whenScaled` (scaled down so that ordinal N no longer exists), each `Retain` or `Delete`;
//!   defaults `whenDeleted: Delete`, `whenScaled: Retain`. It comes from the network's CNI
//!   config (`persistentStatefulSetIPs`), read by the plugin at ADD;
//! - the **owner identity** of such an allocation: container id
//!   `statefulset:<namespace>/<set>/<ordinal>/<whenDeleted>/<whenScaled>` ([`owner_id`], read
//!   back by [`member_of_owner`]). It names no container, so the allocator's idempotent ADD per
//!   owner hands every pod `<set>-<N>` the same address, and a container's DEL frees nothing.
//!   The policy is in the id so reconcile and the controller decide without reading NADs (a
//!   NAD changed later does not change what an existing allocation was promised);
//! - which StatefulSet a pod belongs to ([`member_of_pod`]): its controller ownerReference of
//!   kind StatefulSet (`apps/v1`) and a name `<set>-<ordinal>`;
//! - which ordinals a StatefulSet has ([`Ordinals`]): `spec.ordinals.start` (default 0) up to
//!   `spec.replicas` (default 1, as the API server defaults it) of them;
//! - the requests: GET a pod, GET one StatefulSet (controller), list every one (reconcile).

use ::kube::api::{Api, ListParams};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;

use super::{KubeError, KubeStore, Request};

/// The container id prefix of a StatefulSet pod's persistent allocation.
pub const OWNER_PREFIX: &str = "statefulset:";

/// What happens to a persistent address on an event, as for a PVC: kept, or freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Retain,
    Delete,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Retain => "Retain",
            Policy::Delete => "Delete",
        }
    }

    /// `Retain` or `Delete`, exactly as the Kubernetes API spells them.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "Retain" => Some(Policy::Retain),
            "Delete" => Some(Policy::Delete),
            _ => None,
        }
    }
}

/// `persistentVolumeClaimRetentionPolicy`'s two choices, for addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The StatefulSet is deleted.
    pub when_deleted: Policy,
    /// The StatefulSet is scaled down below the pod's ordinal.
    pub when_scaled: Policy,
}

impl Default for Retention {
    /// Freed with the StatefulSet, kept across scale-downs (a scale back up gets them back).
    fn default() -> Self {
        Self { when_deleted: Policy::Delete, when_scaled: Policy::Retain }
    }
}

/// A persistent allocation's owner, parsed: pod `<set>-<ordinal>` of StatefulSet
/// `namespace/set`, with the policy it was allocated under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub namespace: String,
    pub set: String,
    pub ordinal: u32,
    pub retention: Retention,
}

impl Member {
    /// The StatefulSet's "namespace/name".
    pub fn set_ref(&self) -> String {
        format!("{}/{}", self.namespace, self.set)
    }
}

/// The container id of member `ordinal` of StatefulSet `namespace/set`.
pub fn owner_id(member: &Member) -> String {
    let Member { namespace, set, ordinal, retention } = member;
    format!(
        "{OWNER_PREFIX}{namespace}/{set}/{ordinal}/{}/{}",
        retention.when_deleted.as_str(),
        retention.when_scaled.as_str()
    )
}

/// The member a container id names, if it is a StatefulSet pod's persistent owner.
pub fn member_of_owner(container_id: &str) -> Option<Member> {
    let rest = container_id.strip_prefix(OWNER_PREFIX)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [namespace, set, ordinal, when_deleted, when_scaled] = parts.as_slice() else {
        return None;
    };
    if namespace.is_empty() || set.is_empty() {
        return None;
    }
    Some(Member {
        namespace: namespace.to_string(),
        set: set.to_string(),
        ordinal: ordinal.parse().ok()?,
        retention: Retention {
            when_deleted: Policy::parse(when_deleted)?,
            when_scaled: Policy::parse(when_scaled)?,
        },
    })
}

/// The StatefulSet (name) and ordinal of a pod its StatefulSet controls: a controller
/// ownerReference of kind StatefulSet in `apps/v1`, and the pod named `<set>-<ordinal>`.
pub fn member_of_pod(pod: &Pod) -> Option<(String, u32)> {
    let name = pod.metadata.name.as_deref()?;
    let owner = pod.metadata.owner_references.as_ref()?.iter().find(|r| {
        r.controller == Some(true) && r.kind == "StatefulSet" && r.api_version == "apps/v1"
    })?;
    let ordinal = name.strip_prefix(owner.name.as_str())?.strip_prefix('-')?;
    // Kubernetes writes ordinals in decimal without leading zeros.
    if ordinal.starts_with('0') && ordinal != "0" {
        return None;
    }
    Some((owner.name.clone(), ordinal.parse().ok()?))
}

/// The ordinals a StatefulSet has: `start..start + replicas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ordinals {
    pub start: u32,
    pub replicas: u32,
}

impl Ordinals {
    pub fn of(set: &StatefulSet) -> Self {
        let spec = set.spec.as_ref();
        let count = |n: i32| u32::try_from(n).unwrap_or(0);
        Self {
            start: count(spec.and_then(|s| s.ordinals.as_ref()?.start).unwrap_or(0)),
            replicas: count(spec.and_then(|s| s.replicas).unwrap_or(1)),
        }
    }

    pub fn contains(&self, ordinal: u32) -> bool {
        ordinal >= self.start
            && u64::from(ordinal) < u64::from(self.start) + u64::from(self.replicas)
    }
}

impl KubeStore {
    /// The pod `namespace/name`; None when it does not exist.
    pub fn get_pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>, KubeError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        self.request(Request::new("get", "pods", name), api.get_opt(name))
    }

    /// The StatefulSet `namespace/name`; None when it does not exist.
    pub fn get_statefulset(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<StatefulSet>, KubeError> {
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), namespace);
        self.request(Request::new("get", "statefulsets", name), api.get_opt(name))
    }

    /// Every StatefulSet in every namespace (reconcile).
    pub fn list_statefulsets(&self) -> Result<Vec<StatefulSet>, KubeError> {
        let api: Api<StatefulSet> = Api::all(self.client.clone());
        let request = Request::new("list", "statefulsets", "");
        Ok(self.request(request, api.list(&ListParams::default()))?.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn owner_ids_round_trip_and_reject_others() {
        let member = Member {
            namespace: "db".into(),
            set: "web".into(),
            ordinal: 2,
            retention: Retention::default(),
        };
        let id = owner_id(&member);
        assert_eq!(id, "statefulset:db/web/2/Delete/Retain");
        assert_eq!(member_of_owner(&id), Some(member));
        for other in [
            "c1",
            "statefulset:",
            "statefulset:db/web/2/Delete",
            "statefulset:db/web/x/Delete/Retain",
            "statefulset:db/web/2/delete/Retain",
            "statefulset:/web/2/Delete/Retain",
            "statefulset:db/web/2/Delete/Retain/x",
        ] {
            assert_eq!(member_of_owner(other), None, "{other}");
        }
    }

    fn pod(name: &str, owner: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "db",
            "ownerReferences": [owner]}}))
        .unwrap()
    }

    #[test]
    fn a_pod_is_a_member_of_its_controlling_statefulset() {
        let set = |name: &str| {
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name, "uid": "u",
                "controller": true})
        };
        assert_eq!(member_of_pod(&pod("web-0", set("web"))), Some(("web".into(), 0)));
        assert_eq!(member_of_pod(&pod("my-web-12", set("my-web"))), Some(("my-web".into(), 12)));
        assert_eq!(member_of_pod(&pod("web-01", set("web"))), None);
        assert_eq!(member_of_pod(&pod("other-0", set("web"))), None);
        assert_eq!(member_of_pod(&pod("web-x", set("web"))), None);
        let mut not_controller = set("web");
        not_controller["controller"] = json!(false);
        assert_eq!(member_of_pod(&pod("web-0", not_controller)), None);
        let replica_set = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
            "uid": "u", "controller": true});
        assert_eq!(member_of_pod(&pod("web-0", replica_set)), None);
    }

    #[test]
    fn ordinals_default_as_kubernetes_does() {
        let set = |spec: serde_json::Value| -> StatefulSet {
            serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": spec})).unwrap()
        };
        let template = json!({"selector": {}, "serviceName": "web", "template": {}});
        let defaulted = Ordinals::of(&set(template.clone()));
        assert_eq!(defaulted, Ordinals { start: 0, replicas: 1 });
        assert!(defaulted.contains(0) && !defaulted.contains(1));
        let mut shifted = template;
        shifted["replicas"] = json!(2);
        shifted["ordinals"] = json!({"start": 5});
        let shifted = Ordinals::of(&set(shifted));
        assert!(!shifted.contains(4) && shifted.contains(5) && shifted.contains(6));
        assert!(!shifted.contains(7));
    }
}
