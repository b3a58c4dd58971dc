//! StatefulSet pods' persistent addresses on ADD and CHECK: when the network opts in
//! (`persistentStatefulSetIPs` in its top-level CNI config) and no IPAMClaim applies, the
//! allocation of pod `<set>-<N>` belongs to the StatefulSet's member N, not to the container.
//!
//! The owner is container id `statefulset:<namespace>/<set>/<N>/<whenDeleted>/<whenScaled>`
//! (`hereabouts_stores::kube::statefulsets`), `CNI_IFNAME`, the pod's podref, the CNI network.
//! The pod's name survives its recreation, so the core's idempotent ADD per owner hands the
//! next pod `<set>-<N>` the address the last one had; DEL never resolves this owner (the
//! container's own holds nothing), so DEL frees nothing and succeeds. The retention policy
//! rides in the id: reconcile and the controller free by it (StatefulSet deleted, or scaled
//! below N) without reading the NAD. The pod is read (GET, shared with [`super::claim`]) to
//! find its controller
//! ownerReference; a pod that is not a StatefulSet's, or that cannot be found, allocates per
//! container as usual. Kubernetes store only; the others ignore the key with a warning.

use hereabouts_host::bindings::Owner;
use hereabouts_host::error::CniError;
use hereabouts_stores::kube::KubeStore;
use hereabouts_stores::kube::statefulsets::{self, Member};

use super::env::CniEnv;
use super::netconf::{NetConf, STATEFULSET_KEY};

/// The persistent owner of this attachment, if the network opts in and the pod is a
/// StatefulSet's (see the module doc).
pub fn owner(
    env: &CniEnv,
    conf: &NetConf,
    kube: Option<&KubeStore>,
    pod_once: &mut super::claim::PodOnce,
) -> Result<Option<Owner>, CniError> {
    let Some(retention) = conf.persistent_statefulset_ips else { return Ok(None) };
    let Some((namespace, pod)) = super::claim::kube_pod(env, conf, STATEFULSET_KEY)? else {
        return Ok(None);
    };
    let store = super::claim::session_store(kube, conf)?;
    let Some(object) = pod_once.get(&store, namespace, pod)? else {
        tracing::warn!(network = %conf.name, pod = %format!("{namespace}/{pod}"),
            "{STATEFULSET_KEY}: the pod does not exist; allocating as usual");
        return Ok(None);
    };
    let Some((set, ordinal)) = statefulsets::member_of_pod(object) else { return Ok(None) };
    let member = Member { namespace: namespace.clone(), set, ordinal, retention };
    Ok(Some(Owner {
        container_id: statefulsets::owner_id(&member),
        ifname: env.ifname.clone(),
        podref: env.args.podref(),
        cni_network: conf.name.clone(),
    }))
}
