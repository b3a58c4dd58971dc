//! IPAMClaims on ADD and CHECK: when the attachment's network allows persistent addresses
//! (`allowPersistentIPs: true` in the NAD's config, as KubeVirt and OVN-Kubernetes use it) and
//! the pod's network-selection element names an `ipam-claim-reference`, the allocation belongs
//! to the claim, not to the container. The host only builds the request; the core decides:
//! - owner: container id `ipamclaim:<namespace>/<name>` (`hereabouts_stores::kube::claims`),
//!   the claim's `spec.interface` (else `CNI_IFNAME`), the pod's podref, the CNI network;
//! - requested: the claim's `status.ips` (prefix dropped) when set, so a VM's new pod gets its
//!   address back; else the lowest free address as usual, written to `status.ips` after.
//!
//! Both pods of a live migration are the same owner, so the core's idempotent ADD hands the
//! second the address the first holds. DEL never resolves a claim: the container's own owner
//! holds nothing, so DEL frees nothing and succeeds; deleting the IPAMClaim frees the address
//! (`hereabouts reconcile`). Only the Kubernetes store has claims; on the others a claim is
//! ignored with a warning. The claim reference comes from `args.cni.ipam-claim-reference`
//! when the runtime passes it, else from the pod (`K8S_POD_NAMESPACE`/`K8S_POD_NAME`), GET
//! from the API server.

use hereabouts_host::bindings::{HeldLease, Lease, Owner};
use hereabouts_host::config::StoreKind;
use hereabouts_host::error::{CniError, Code};
use hereabouts_stores::kube::KubeStore;
use hereabouts_stores::kube::claims::{self, NETWORKS_ANNOTATION};
use hereabouts_stores::kube::crd::IPAMClaim;
use k8s_openapi::api::core::v1::Pod;

use super::env::CniEnv;
use super::netconf::NetConf;

/// How often a status write is tried when the claim changes between our read and our write.
const STATUS_ATTEMPTS: usize = 3;

/// The pod (namespace, name) `CNI_ARGS` names, for a persistence feature (`key`, on): None,
/// logged, when the store is not Kubernetes or no pod is named — then allocation is per
/// container as usual.
pub fn kube_pod<'a>(
    env: &'a CniEnv,
    conf: &NetConf,
    key: &str,
) -> Result<Option<(&'a String, &'a String)>, CniError> {
    if conf.ipam.store_kind()? != StoreKind::Kubernetes {
        tracing::warn!(network = %conf.name,
            "{key}: persistent addresses need the Kubernetes store; allocating as usual");
        return Ok(None);
    }
    let (namespace, pod) = (&env.args.pod_namespace, &env.args.pod_name);
    if namespace.is_empty() || pod.is_empty() {
        tracing::warn!(network = %conf.name,
            "{key}: CNI_ARGS names no pod; allocating as usual");
        return Ok(None);
    }
    Ok(Some((namespace, pod)))
}

/// The call's Kubernetes client (the one the allocator writes through), else a new one: one
/// client per CNI call, as every call is a fresh process.
pub fn session_store(kube: Option<&KubeStore>, conf: &NetConf) -> Result<KubeStore, CniError> {
    match kube {
        Some(store) => Ok(store.clone()),
        None => hereabouts_stores::kube::open(&conf.ipam),
    }
}

/// The call's pod (`K8S_POD_NAMESPACE`/`K8S_POD_NAME`), read from the API server at most once
/// per CNI call: its network-selection annotation (the claim reference) and its controller
/// ownerReference (StatefulSet membership) are both read off it.
#[derive(Debug, Default)]
pub struct PodOnce(Option<Option<Pod>>);

impl PodOnce {
    /// The pod; None when it does not exist.
    pub fn get(
        &mut self,
        store: &KubeStore,
        namespace: &str,
        name: &str,
    ) -> Result<Option<&Pod>, CniError> {
        if self.0.is_none() {
            self.0 = Some(store.get_pod(namespace, name)?);
        }
        Ok(self.0.as_ref().and_then(Option::as_ref))
    }
}

/// The claim an attachment's allocation belongs to.
pub struct Claim {
    store: KubeStore,
    object: IPAMClaim,
    /// "namespace/name".
    reference: String,
    pod: String,
}

impl Claim {
    /// The claim of this attachment, if its network allows persistent addresses and the pod
    /// names one (see the module doc). A claim that does not exist (yet) is CNI 11.
    pub fn resolve(
        env: &CniEnv,
        conf: &NetConf,
        kube: Option<&KubeStore>,
        pod_once: &mut PodOnce,
    ) -> Result<Option<Self>, CniError> {
        if !conf.allow_persistent_ips {
            return Ok(None);
        }
        let Some((namespace, pod)) = kube_pod(env, conf, "allowPersistentIPs")? else {
            return Ok(None);
        };
        let store = session_store(kube, conf)?;
        let name = match &conf.claim_reference {
            Some(name) => name.clone(),
            None => {
                let object = pod_once.get(&store, namespace, pod)?;
                let annotation =
                    object.and_then(|p| p.metadata.annotations.as_ref()?.get(NETWORKS_ANNOTATION));
                let reference = annotation
                    .map(|text| claims::claim_reference(text, &env.ifname))
                    .transpose()
                    .map_err(|e| {
                        CniError::new(Code::InvalidConfig, format!("pod {namespace}/{pod}: {e}"))
                    })?
                    .flatten();
                let Some(name) = reference else { return Ok(None) };
                name
            }
        };
        let reference = format!("{namespace}/{name}");
        let object = store.get_claim(namespace, &name)?.ok_or_else(|| {
            CniError::new(
                Code::TryAgainLater,
                format!(
                    "IPAMClaim {reference} (ipam-claim-reference of pod {namespace}/{pod}, {}) does not exist (yet)",
                    env.ifname
                ),
            )
        })?;
        Ok(Some(Self { store, object, reference, pod: pod.clone() }))
    }

    /// The allocation's owner: the claim (see the module doc).
    pub fn owner(&self, env: &CniEnv, conf: &NetConf) -> Owner {
        let (namespace, name) = self.reference.split_once('/').unwrap_or_default();
        let interface = &self.object.spec.interface;
        Owner {
            container_id: claims::owner_id(namespace, name),
            ifname: if interface.is_empty() { env.ifname.clone() } else { interface.clone() },
            podref: env.args.podref(),
            cni_network: conf.name.clone(),
        }
    }

    /// The claim's `status.ips`, without their prefix lengths: the addresses to hand out.
    pub fn requested(&self) -> Vec<String> {
        let ips = self.object.status.iter().flat_map(|s| &s.ips);
        ips.map(|ip| ip.split_once('/').map_or(ip.as_str(), |(a, _)| a).to_string()).collect()
    }

    /// After a successful ADD: `status.ips` (when unset), `ownerPod`, the condition True.
    pub fn allocated(&mut self, leases: &[Lease]) -> Result<(), CniError> {
        let ips: Vec<String> = leases.iter().map(|l| l.cidr.clone()).collect();
        let pod = self.pod.clone();
        self.write_status(|claim| claims::allocated(claim, &ips, &pod, &claims::now()))
    }

    /// After a failed ADD: the error, naming the claim and, when its address is held by
    /// someone else, the holder (`held`: the network's allocations); the condition False on
    /// the claim. The error is returned either way; a condition that cannot be written is logged.
    pub fn failed(&mut self, error: CniError, held: &[HeldLease], owner: &Owner) -> CniError {
        let wanted = self.requested();
        let holder = held
            .iter()
            .find(|h| wanted.contains(&h.lease.address) && !h.owner.same_attachment(owner));
        let (reason, msg) = match holder {
            Some(h) if error.code == Code::AddressUnavailable => (
                claims::ADDRESS_IN_USE,
                format!(
                    "IPAMClaim {}: its address {} is held by pod {} (container {}, {}), not by the claim: {}",
                    self.reference,
                    h.lease.cidr,
                    if h.owner.podref.is_empty() { "(unknown)" } else { &h.owner.podref },
                    h.owner.container_id,
                    h.owner.ifname,
                    error.msg
                ),
            ),
            _ => {
                (claims::ALLOCATION_FAILED, format!("IPAMClaim {}: {}", self.reference, error.msg))
            }
        };
        let written =
            self.write_status(|claim| claims::failed(claim, reason, &msg, &claims::now()));
        if let Err(e) = written {
            tracing::warn!(claim = %self.reference, "cannot set the claim's condition: {}", e.msg);
        }
        CniError { msg, ..error }
    }

    /// PUTs the status `make` computes from the claim, reading the claim again on a conflict.
    fn write_status(
        &mut self,
        make: impl Fn(&IPAMClaim) -> hereabouts_stores::kube::crd::IPAMClaimStatus,
    ) -> Result<(), CniError> {
        let (namespace, name) = self.reference.split_once('/').unwrap_or_default();
        for _ in 0..STATUS_ATTEMPTS {
            let status = make(&self.object);
            if self.object.status.as_ref() == Some(&status) {
                return Ok(());
            }
            match self.store.write_claim_status(&self.object, status) {
                Ok(written) => {
                    self.object = written;
                    return Ok(());
                }
                Err(e) if e.is_conflict() => {
                    self.object = self.store.get_claim(namespace, name)?.ok_or_else(|| {
                        CniError::new(
                            Code::TryAgainLater,
                            format!("IPAMClaim {} was deleted during the ADD", self.reference),
                        )
                    })?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(CniError::new(
            Code::TryAgainLater,
            format!(
                "IPAMClaim {}: its status changed under each of {STATUS_ATTEMPTS} writes",
                self.reference
            ),
        ))
    }
}
