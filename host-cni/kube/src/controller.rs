//! `hereabouts controller`: watches pods (kube::runtime's watcher) and frees the addresses of
//! each deleted or terminated pod within seconds, instead of waiting for the next reconcile;
//! beside it, on its own thread, runs the node-slice controller ([`crate::slices`]).
//!
//! Safe beside the reconcile CronJob, the CNI plugin and a second controller replica: it takes
//! no lock, and each free is the allocator's `release` of one exact container id + ifname — a
//! write conditioned on the version read, which frees nothing if the slot changed hands.
//! A deletion is acted on after a grace period (default 10 s); then the allocations it
//! concerns are read, then each one's pod is looked up again, and [`crate::pods`] decides as
//! it does for reconcile: a pod recreated under the same name (StatefulSet) that is Pending,
//! or Running with the address in its network-status, keeps it.
//!
//! Persistent addresses outlive their pods, so the controller watches what owns them too:
//! - a claimed allocation (an IPAMClaim's, KubeVirt's persistent IPs) is freed only once its
//!   claim is gone, looked up then: a VM's pod comes and goes, its claim stays. The IPAMClaim
//!   watch frees a claim's address when the claim is deleted (KubeVirt deletes it with the VM);
//! - a StatefulSet member's allocation (`persistentStatefulSetIPs`) is freed only as
//!   [`pods::stateful`] says, its StatefulSet looked up then: a deleted member pod's address
//!   waits for the pod that replaces it. The StatefulSet watch acts when a set is deleted or
//!   its ordinals change (scaled), for members whose pods are already gone.
//!
//! A cluster without the IPAMClaim CRD: that watch retries quietly (one message), the rest
//! works. The watches run on their own threads and client; the main thread does the frees
//! with the allocator component. What happened while the controller was down, and
//! reservations no allocation backs (a crash between a reservation and its pool write), are
//! the CronJob's job.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hereabouts_host::error::{CniError, Code};
use hereabouts_host::runtime::Allocator;
use hereabouts_stores::kube::crd::IPAMClaim;
use hereabouts_stores::kube::statefulsets::{self, Ordinals};
use hereabouts_stores::kube::{KubeStore, Timeouts, claims};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::Event;

use crate::{Freed, pods};

/// Watches until the watch ends (it does not, short of the API server going away for good);
/// prints each free as it happens.
/// How the controller runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Wait this long after a pod is deleted before freeing its addresses.
    pub grace: Duration,
    /// Serve Prometheus metrics here (`GET /metrics`); None: no endpoint.
    pub metrics: Option<std::net::SocketAddr>,
    /// Also run a reconcile pass this often (None: the CronJob does).
    pub reconcile_every: Option<Duration>,
    /// For those passes.
    pub reconcile: crate::reconcile::Options,
}

pub fn run(kubeconfig: Option<&Path>, options: &Options) -> Result<(), CniError> {
    let grace = options.grace;
    let timeouts = Timeouts {
        request: Duration::from_secs(60),
        total: Duration::from_secs(60),
        ..Timeouts::default()
    };
    let store = KubeStore::connect(kubeconfig, timeouts)?;
    // A watch is a long poll (the watcher asks for 290 s): its reads may idle that long.
    let watch_timeouts = Timeouts { request: Duration::from_secs(330), ..timeouts };
    let watch_store = KubeStore::connect(kubeconfig, watch_timeouts)?;
    let mut allocator = Allocator::new(Box::new(store.clone()))?;

    // The node-slice controller: its own clients and allocator, on its own thread.
    let slice_store = KubeStore::connect(kubeconfig, timeouts)?;
    let slice_watch_store = KubeStore::connect(kubeconfig, watch_timeouts)?;
    std::thread::spawn(move || {
        if let Err(e) = crate::slices::run(slice_store, slice_watch_store) {
            eprintln!("hereabouts controller: node slices: {} (code {})", e.msg, e.code);
        }
    });

    let metrics = match options.metrics {
        Some(addr) => {
            let listener = std::net::TcpListener::bind(addr).map_err(|e| {
                CniError::new(Code::Io, format!("--metrics-port: cannot listen on {addr}: {e}"))
            })?;
            eprintln!("hereabouts controller: metrics on http://{addr}/metrics");
            Some(crate::metrics::serve(listener, KubeStore::connect(kubeconfig, timeouts)?)?)
        }
        None => None,
    };
    let mut next_reconcile = options.reconcile_every.map(|every| Instant::now() + every);

    let (triggers, triggered) = mpsc::channel::<Trigger>();
    for watch in [watch_pods, watch_claims, watch_statefulsets] {
        let (store, triggers) = (watch_store.clone(), triggers.clone());
        std::thread::spawn(move || watch(&store, &triggers));
    }
    drop(triggers);
    eprintln!(
        "hereabouts controller: watching pods, IPAMClaims and StatefulSets; IPPools in namespace {}",
        store.namespace()
    );

    // Triggers wait out the grace period in arrival order (one grace for all: FIFO is sorted);
    // one that failed for a passing reason (CNI 11: the API server restarting, busy, a lost
    // race) goes back in, in time order, after a backoff that doubles up to 30 s.
    let mut due: VecDeque<(Instant, Trigger, u32)> = VecDeque::new();
    loop {
        let wait = due
            .front()
            .map(|(at, _, _)| *at)
            .into_iter()
            .chain(next_reconcile)
            .min()
            .map(|at| at.saturating_duration_since(Instant::now()));
        let received = match wait {
            Some(wait) => triggered.recv_timeout(wait),
            None => triggered.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(trigger) => due.push_back((Instant::now() + grace, trigger, 0)),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        while let Some((_, trigger, failures)) =
            due.pop_front_if(|(at, _, _)| *at <= Instant::now())
        {
            match free(&store, &mut allocator, &trigger) {
                Ok(freed) => {
                    for f in &freed {
                        println!("freed {f}");
                        metrics.iter().for_each(|m| m.freed(&f.reason));
                    }
                }
                Err(e) => {
                    let retry = e.code == Code::TryAgainLater;
                    eprintln!(
                        "hereabouts controller: freeing for {trigger}: {} (code {}){}",
                        e.msg,
                        e.code,
                        if retry { "; trying again" } else { "" }
                    );
                    metrics.iter().for_each(|m| m.failed(&e));
                    if retry {
                        let at = Instant::now() + retry_backoff(failures);
                        let place = due.partition_point(|(due_at, _, _)| *due_at <= at);
                        due.insert(place, (at, trigger, failures + 1));
                    }
                }
            }
        }
        if let (Some(at), Some(every)) = (next_reconcile, options.reconcile_every)
            && at <= Instant::now()
        {
            let started = Instant::now();
            match crate::reconcile::reconcile_with(&store, &options.reconcile) {
                Ok(report) => {
                    for f in &report.freed {
                        println!("reconcile freed {f}");
                        metrics.iter().for_each(|m| m.freed(&f.reason));
                    }
                }
                Err(e) => {
                    eprintln!("hereabouts controller: reconcile: {} (code {})", e.msg, e.code);
                    metrics.iter().for_each(|m| m.failed(&e));
                }
            }
            metrics.iter().for_each(|m| m.reconciled(started.elapsed().as_secs_f64()));
            next_reconcile = Some(Instant::now() + every);
        }
    }
    Err(CniError::new(Code::Internal, "the watches ended"))
}

/// The wait before freeing again after `failures` passing failures: 1 s doubling, at most 30 s.
fn retry_backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(5)).min(Duration::from_secs(30))
}

/// Sends a [`Trigger::Pod`] for every pod deleted or terminated, until the receiver hangs up.
///
/// kube's watcher resumes a dropped watch from the last `resourceVersion` it saw, and lists
/// again when the API server answers `410 Gone` (that version is compacted away). A relist
/// reports the pods that exist, not the ones deleted in the gap: so the podrefs the watch has
/// seen are kept, and a pod missing from the relist is sent as deleted.
fn watch_pods(store: &KubeStore, triggers: &mpsc::Sender<Trigger>) {
    let mut seen = PodsSeen::default();
    crate::watch::watch_all::<Pod>(store, |event| {
        seen.gone_after(event).into_iter().all(|podref| triggers.send(Trigger::Pod(podref)).is_ok())
    });
}

/// Sends a [`Trigger::Claim`] for every IPAMClaim deleted (or missing from a relist), until
/// the receiver hangs up: a stopped VM's claim deleted after its pods are gone.
fn watch_claims(store: &KubeStore, triggers: &mpsc::Sender<Trigger>) {
    watch_objects::<IPAMClaim, ()>(
        store,
        triggers,
        |_| (),
        |namespace, name| Trigger::Claim { namespace, name },
    );
}

/// Sends a [`Trigger::StatefulSet`] for every StatefulSet deleted (or missing from a relist)
/// and every one whose ordinals changed (scaled), until the receiver hangs up: a set deleted
/// or scaled down after its member pods are gone.
fn watch_statefulsets(store: &KubeStore, triggers: &mpsc::Sender<Trigger>) {
    watch_objects::<StatefulSet, Ordinals>(store, triggers, Ordinals::of, |namespace, name| {
        Trigger::StatefulSet { namespace, name }
    });
}

fn watch_objects<K, V>(
    store: &KubeStore,
    triggers: &mpsc::Sender<Trigger>,
    facts: fn(&K) -> V,
    trigger: fn(String, String) -> Trigger,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
    V: PartialEq,
{
    let mut seen = ObjectsSeen::<V>::default();
    let keyed = |object: &K| {
        let namespace = object.meta().namespace.clone().unwrap_or_default();
        let name = object.meta().name.clone().unwrap_or_default();
        ((namespace, name), facts(object))
    };
    crate::watch::watch_all::<K>(store, |event| {
        let event = match event {
            Event::Init => Event::Init,
            Event::InitApply(object) => Event::InitApply(keyed(&object)),
            Event::InitDone => Event::InitDone,
            Event::Apply(object) => Event::Apply(keyed(&object)),
            Event::Delete(object) => Event::Delete(keyed(&object)),
        };
        seen.changed_after(event)
            .into_iter()
            .all(|(namespace, name)| triggers.send(trigger(namespace, name)).is_ok())
    });
}

/// The objects of one kind a watch has seen, by (namespace, name), each with the facts about
/// it that matter (a StatefulSet's ordinals), for telling which were deleted or changed, across
/// a relist too: a relist reports what exists, not what was deleted in the gap.
#[derive(Debug)]
pub struct ObjectsSeen<V> {
    known: HashMap<(String, String), V>,
    /// During a relist: the objects it has listed so far.
    relisting: Option<HashMap<(String, String), V>>,
}

impl<V> Default for ObjectsSeen<V> {
    fn default() -> Self {
        Self { known: HashMap::new(), relisting: None }
    }
}

impl<V: PartialEq> ObjectsSeen<V> {
    /// The objects `event` says were deleted or whose facts changed: a deleted object, one
    /// applied with other facts than last seen, and, when a relist ends, every known object it
    /// did not list or listed with other facts. An object seen for the first time is neither.
    pub fn changed_after(&mut self, event: Event<((String, String), V)>) -> Vec<(String, String)> {
        match event {
            Event::Init => {
                self.relisting = Some(HashMap::new());
                Vec::new()
            }
            Event::InitApply((key, facts)) => {
                if let Some(listed) = &mut self.relisting {
                    listed.insert(key, facts);
                }
                Vec::new()
            }
            Event::InitDone => match self.relisting.take() {
                Some(listed) => {
                    let known = std::mem::replace(&mut self.known, listed);
                    known
                        .into_iter()
                        .filter(|(key, facts)| self.known.get(key) != Some(facts))
                        .map(|(key, _)| key)
                        .collect()
                }
                None => Vec::new(),
            },
            Event::Apply((key, facts)) => match self.known.insert(key.clone(), facts) {
                Some(before) if Some(&before) != self.known.get(&key) => vec![key],
                _ => Vec::new(),
            },
            Event::Delete((key, _)) => {
                self.known.remove(&key);
                vec![key]
            }
        }
    }
}

/// The podrefs of the pods the watch has seen, for finding the pods a relist no longer has.
#[derive(Debug, Default)]
pub struct PodsSeen {
    known: HashSet<String>,
    /// During a relist: the pods it has listed so far.
    relisting: Option<HashSet<String>>,
}

impl PodsSeen {
    /// The podrefs `event` says are gone or terminated: a deleted pod, a pod that terminated,
    /// and, when a relist ends, every known pod it did not list.
    pub fn gone_after(&mut self, event: Event<Pod>) -> Vec<String> {
        match event {
            Event::Init => {
                self.relisting = Some(HashSet::new());
                Vec::new()
            }
            Event::InitApply(pod) => {
                if let (Some(listed), Some(podref)) = (&mut self.relisting, pods::podref_of(&pod)) {
                    listed.insert(podref);
                }
                Vec::new()
            }
            Event::InitDone => match self.relisting.take() {
                Some(listed) => {
                    let known = std::mem::replace(&mut self.known, listed);
                    known.into_iter().filter(|podref| !self.known.contains(podref)).collect()
                }
                None => Vec::new(),
            },
            Event::Apply(pod) => {
                let Some(podref) = pods::podref_of(&pod) else { return Vec::new() };
                self.known.insert(podref.clone());
                if pods::has_terminated(&pod) { vec![podref] } else { Vec::new() }
            }
            Event::Delete(pod) => {
                let Some(podref) = pods::podref_of(&pod) else { return Vec::new() };
                self.known.remove(&podref);
                vec![podref]
            }
        }
    }
}

/// What sent the controller to look at some allocations: a pod, an IPAMClaim or a StatefulSet
/// that was deleted (or, for a pod, terminated; for a StatefulSet, re-scaled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// `namespace/name`.
    Pod(String),
    Claim {
        namespace: String,
        name: String,
    },
    StatefulSet {
        namespace: String,
        name: String,
    },
}

impl Trigger {
    /// Whether an IPPool allocation (container id, podref) may be one this trigger concerns.
    fn concerns(&self, container_id: &str, podref: &str) -> bool {
        match self {
            Trigger::Pod(pod) => podref == pod,
            Trigger::Claim { namespace, name } => {
                claims::claim_of_owner(container_id) == Some((namespace, name))
            }
            Trigger::StatefulSet { namespace, name } => statefulsets::member_of_owner(container_id)
                .is_some_and(|m| m.namespace == *namespace && m.set == *name),
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::Pod(podref) => write!(f, "pod {podref}"),
            Trigger::Claim { namespace, name } => write!(f, "IPAMClaim {namespace}/{name}"),
            Trigger::StatefulSet { namespace, name } => {
                write!(f, "StatefulSet {namespace}/{name}")
            }
        }
    }
}

/// Frees the allocations of `podref` that the pod policy says it no longer uses.
pub fn free_pod(
    store: &KubeStore,
    allocator: &mut Allocator,
    podref: &str,
) -> Result<Vec<Freed>, CniError> {
    free(store, allocator, &Trigger::Pod(podref.to_string()))
}

/// Frees the allocations `trigger` concerns that the policy says nobody uses any more: for
/// each, its pod is read (and, if it is being deleted, its node), then its claim or
/// StatefulSet, and [`crate::pods`] decides as it does for reconcile.
pub fn free(
    store: &KubeStore,
    allocator: &mut Allocator,
    trigger: &Trigger,
) -> Result<Vec<Freed>, CniError> {
    store.restart_budget();
    // The allocations first, then the pods: an allocation made after a pod was read cannot be
    // among them (the order reconcile keeps too).
    let mut held = Vec::new();
    let slices = crate::SlicePools::list(store)?;
    for pool in store.list_pool_objects()? {
        if !pool.spec.allocations.values().any(|a| trigger.concerns(&a.id, &a.podref)) {
            continue;
        }
        let Ok(crate::PoolNetwork { object, network }) =
            crate::pool_network(allocator, &pool, &slices)?
        else {
            continue;
        };
        for lease in allocator.list_leases(&network)? {
            if trigger.concerns(&lease.owner.container_id, &lease.owner.podref) {
                held.push((object.clone(), network.clone(), lease));
            }
        }
    }
    let mut pods_read: HashMap<String, (Option<pods::PodFacts>, pods::Nodes)> = HashMap::new();
    let events = crate::events::FreeEvents::new(store);
    let mut freed = Vec::new();
    for (object, network, held) in held {
        let podref = &held.owner.podref;
        if !pods_read.contains_key(podref) {
            pods_read.insert(podref.clone(), read_pod(store, podref)?);
        }
        let (pod, nodes) = &pods_read[podref];
        let by_pod = pods::allocation(pod.as_ref(), &held.lease.address, nodes);
        let id = &held.owner.container_id;
        let verdict = if let Some((namespace, name)) = claims::claim_of_owner(id) {
            pods::claimed(store.get_claim(namespace, name).map_err(CniError::from)?.is_some())
        } else if let Some(member) = statefulsets::member_of_owner(id) {
            let set = store.get_statefulset(&member.namespace, &member.set)?;
            pods::stateful(&member, set.as_ref().map(Ordinals::of).as_ref(), by_pod)
        } else {
            by_pod
        };
        if !verdict.is_free() {
            continue;
        }
        store.restart_budget();
        allocator.release(&network, &held.owner)?;
        let one = Freed::allocation(object, &held, &verdict);
        events.freed(store, &one, pod.is_some());
        freed.push(one);
    }
    Ok(freed)
}

/// A pod as the policy sees it, with its node when it is being deleted (whether the node
/// still exists decides too); a podref that names no pod reads as a missing pod.
pub(crate) fn read_pod(
    store: &KubeStore,
    podref: &str,
) -> Result<(Option<pods::PodFacts>, pods::Nodes), CniError> {
    let mut nodes = pods::Nodes { now: crate::now_seconds(), ..pods::Nodes::default() };
    let Some((namespace, name)) = pods::split_podref(podref) else { return Ok((None, nodes)) };
    let pod = crate::get_pod(store, namespace, name)?.as_ref().and_then(pods::PodFacts::of);
    if let Some(pod) = pod.as_ref().filter(|p| p.deleting && !p.node.is_empty()) {
        let node = crate::get_node_facts(store, &pod.node)?;
        nodes.known = Some(node.map(|n| (pod.node.clone(), n)).into_iter().collect());
    }
    Ok((pod, nodes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passing_failure_is_tried_again_after_a_backoff_that_doubles_to_30_seconds() {
        let waits: Vec<u64> = (0..8).map(|n| retry_backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    fn key(name: &str) -> (String, String) {
        ("db".to_string(), name.to_string())
    }

    #[test]
    fn objects_seen_reports_deletions_and_changed_facts_but_not_new_objects() {
        let mut seen = ObjectsSeen::<u32>::default();
        assert!(seen.changed_after(Event::Apply((key("web"), 3))).is_empty(), "new");
        assert!(seen.changed_after(Event::Apply((key("web"), 3))).is_empty(), "same facts");
        assert_eq!(seen.changed_after(Event::Apply((key("web"), 2))), [key("web")]);
        assert_eq!(seen.changed_after(Event::Delete((key("web"), 2))), [key("web")]);
        assert!(seen.changed_after(Event::Apply((key("web"), 2))).is_empty(), "created again");
    }

    #[test]
    fn objects_seen_finds_what_a_relist_no_longer_has_or_has_changed() {
        let mut seen = ObjectsSeen::<u32>::default();
        for (name, facts) in [("a", 1), ("b", 1), ("c", 1)] {
            seen.changed_after(Event::Apply((key(name), facts)));
        }
        // A relist after a gap: a was deleted, b was scaled, c is as it was, d is new.
        assert!(seen.changed_after(Event::Init).is_empty());
        for (name, facts) in [("b", 2), ("c", 1), ("d", 1)] {
            assert!(seen.changed_after(Event::InitApply((key(name), facts))).is_empty());
        }
        let mut changed = seen.changed_after(Event::InitDone);
        changed.sort();
        assert_eq!(changed, [key("a"), key("b")]);
        // What the relist listed is what is known now.
        assert_eq!(seen.changed_after(Event::Apply((key("d"), 5))), [key("d")]);
        assert_eq!(seen.changed_after(Event::Delete((key("c"), 1))), [key("c")]);
    }
}
