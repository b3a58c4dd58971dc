//! The one watch loop the controller's watches share (pods, IPAMClaims, StatefulSets, and the
//! node-slice controller's Nodes and NADs): kube::runtime's watcher over every object of a
//! kind, with its default backoff.
//!
//! The watcher resumes a dropped watch from the last `resourceVersion` it saw and lists again
//! after `410 Gone`; its errors are retried, so they are printed when they start and when
//! they change, not at every retry: a cluster without the IPAMClaim CRD answers that watch
//! with 404 for as long as the controller runs.

use futures_util::StreamExt;
use hereabouts_stores::kube::KubeStore;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

/// Feeds every event of every `K` to `on_event` until it returns false (its receiver hung
/// up). Blocks the calling thread: run it on its own.
pub fn watch_all<K>(store: &KubeStore, mut on_event: impl FnMut(Event<K>) -> bool)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let api: Api<K> = Api::all(store.client().clone());
    let plural = K::plural(&()).to_string();
    store.run(async move {
        let mut events =
            Box::pin(watcher::watcher(api, watcher::Config::default()).default_backoff());
        let mut last_error: Option<String> = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    if !on_event(event) {
                        return;
                    }
                }
                Err(e) => {
                    let text = e.to_string();
                    if last_error.as_ref() != Some(&text) {
                        eprintln!("hereabouts controller: watching {plural}: {text} (retrying)");
                        last_error = Some(text);
                    }
                }
            }
        }
    });
}
