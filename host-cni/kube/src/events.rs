//! A Kubernetes Event for every address reconcile or the controller frees, so `kubectl
//! describe pod` (or, once the pod is gone, `kubectl describe ippool`) says which address was
//! freed and why.
//!
//! Events go through kube's event recorder (`events.k8s.io/v1`). Each free is its own Event: a
//! recorder folds repeats on one object into a series that keeps the first note, and every
//! free has its own address and reason, so each is published by a fresh recorder. They are a
//! report, not a record: one that cannot be written is logged and the free stands.

use hereabouts_stores::kube::KubeStore;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::{Freed, pods};

/// The reason every free is reported with.
pub const REASON: &str = "AddressFreed";

/// Publishes free events as `hereabouts` (the reporting controller).
pub struct FreeEvents {
    client: kube::Client,
    reporter: Reporter,
    namespace: String,
}

impl FreeEvents {
    pub fn new(store: &KubeStore) -> Self {
        let reporter =
            Reporter { controller: "hereabouts".into(), instance: std::env::var("POD_NAME").ok() };
        Self { client: store.client().clone(), reporter, namespace: store.namespace().to_string() }
    }

    /// Reports `freed`: on its pod when the pod still exists, else on the object that held it.
    pub fn freed(&self, store: &KubeStore, freed: &Freed, pod_exists: bool) {
        let regarding = match pods::split_podref(&freed.podref).filter(|_| pod_exists) {
            Some((namespace, name)) => ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                ..ObjectReference::default()
            },
            None => ObjectReference {
                api_version: Some("whereabouts.cni.cncf.io/v1alpha1".into()),
                kind: Some(
                    if freed.kind == "reservation" {
                        "OverlappingRangeIPReservation"
                    } else {
                        "IPPool"
                    }
                    .into(),
                ),
                namespace: Some(self.namespace.clone()),
                name: Some(freed.object.clone()),
                ..ObjectReference::default()
            },
        };
        let event = Event {
            type_: EventType::Normal,
            reason: REASON.into(),
            note: Some(note(freed)),
            action: "Free".into(),
            secondary: None,
        };
        store.restart_budget();
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(e) = store.run(recorder.publish(&event, &regarding)) {
            eprintln!("hereabouts: event for {}: {e}", freed.address);
        }
    }
}

/// `freed 10.0.0.5 (allocation in blue-10.0.0.0-24, pod ns/a, container c1 net1): pod no
/// longer exists`, cut to the API's 1 kB.
fn note(freed: &Freed) -> String {
    let mut note = format!("freed {freed}");
    if note.len() > 1024 {
        let mut cut = 1021;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    note
}
