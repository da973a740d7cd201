//! Our own recent writes, laid over the watch caches.
//!
//! A reflector learns of a write only when its watch event arrives, a moment after the write
//! returned. A reconcile that runs in between would see the old object and write again. This
//! overlay remembers the object each write returned (or that we deleted it) until the watch has
//! caught up with that write.
//!
//! "Caught up" is decided by the watch's watermark: the highest resourceVersion it has delivered.
//! resourceVersions are comparable integers (etcd revisions; documented as comparable since
//! Kubernetes 1.35) and a watch delivers them in order, so once the watermark reaches our write's
//! version the cache reflects our write and everything before it, and is the truth again, including
//! when someone deleted or changed the object right after us. A time limit backs this up for the
//! case where no further event arrives after a watch restart.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use kube::{Resource, runtime::watcher};

type Key = (String, String); // namespace, name

/// How long an entry may cover the cache at most.
const MAX_AGE: Duration = Duration::from_secs(30);

enum Written<K> {
    Object(Arc<K>),
    Deleted,
}

struct Entry<K> {
    written: Written<K>,
    /// resourceVersion of the write (for a deletion: the deletion's revision).
    version: u64,
    at: Instant,
}

pub(crate) struct Overlay<K> {
    entries: Mutex<HashMap<Key, Entry<K>>>,
    watermark: AtomicU64,
    /// Highest resourceVersion of a re-list in progress.
    relisted: AtomicU64,
}

impl<K> Default for Overlay<K> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            watermark: AtomicU64::new(0),
            relisted: AtomicU64::new(0),
        }
    }
}

pub(crate) fn resource_version<K: Resource>(obj: &K) -> Option<u64> {
    obj.meta()
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
}

impl<K: Resource + Clone> Overlay<K> {
    /// Feeds the watch's events in; call it on the stream after the reflector, so that the store
    /// holds every event it is told of.
    pub(crate) fn observe(&self, event: &watcher::Event<K>) {
        match event {
            watcher::Event::Apply(obj) | watcher::Event::Delete(obj) => {
                if let Some(v) = resource_version(obj) {
                    self.watermark.fetch_max(v, Ordering::Relaxed);
                    // The store now holds this object at least as new as our write: the entry has
                    // done its work (a lookup would drop it too), so it does not wait for one.
                    let mut entries = self.entries.lock().expect("overlay lock");
                    if entries.get(&key_of(obj)).is_some_and(|e| e.version <= v) {
                        entries.remove(&key_of(obj));
                    }
                }
            }
            // A re-list reaches the store only when it is complete: until then the store holds
            // the old state, so the watermark waits too.
            watcher::Event::Init => self.relisted.store(0, Ordering::Relaxed),
            watcher::Event::InitApply(obj) => {
                if let Some(v) = resource_version(obj) {
                    self.relisted.fetch_max(v, Ordering::Relaxed);
                }
            }
            watcher::Event::InitDone => {
                let v = self.relisted.swap(0, Ordering::Relaxed);
                self.watermark.fetch_max(v, Ordering::Relaxed);
            }
        }
    }

    /// Records the object a create/update/patch returned.
    pub(crate) fn wrote(&self, obj: K) {
        let Some(version) = resource_version(&obj) else {
            return;
        };
        let key = key_of(&obj);
        let entry = Entry {
            written: Written::Object(Arc::new(obj)),
            version,
            at: Instant::now(),
        };
        self.entries
            .lock()
            .expect("overlay lock")
            .insert(key, entry);
    }

    /// Records that we deleted the object; `version` is the deletion's revision when the API
    /// returned it, else one past the last version we saw.
    pub(crate) fn deleted(&self, obj: &K, version: Option<u64>) {
        let Some(version) = version.or_else(|| resource_version(obj).map(|v| v + 1)) else {
            return;
        };
        let entry = Entry {
            written: Written::Deleted,
            version,
            at: Instant::now(),
        };
        self.entries
            .lock()
            .expect("overlay lock")
            .insert(key_of(obj), entry);
    }

    /// The freshest view of `namespace/name`: the cached object unless our own write is newer than
    /// anything the watch has delivered.
    pub(crate) fn view(
        &self,
        namespace: &str,
        name: &str,
        cached: Option<Arc<K>>,
    ) -> Option<Arc<K>> {
        let key = (namespace.to_string(), name.to_string());
        let mut entries = self.entries.lock().expect("overlay lock");
        let Some(entry) = entries.get(&key) else {
            return cached;
        };
        if self.watermark.load(Ordering::Relaxed) >= entry.version || entry.at.elapsed() > MAX_AGE {
            entries.remove(&key);
            return cached;
        }
        match &entry.written {
            Written::Object(obj) => Some(obj.clone()),
            Written::Deleted => None,
        }
    }

    /// The objects we wrote that the watch may not have delivered yet: lookups through an index of
    /// the cache add them, so that our newest write is never missed.
    pub(crate) fn written(&self) -> Vec<Key> {
        self.entries
            .lock()
            .expect("overlay lock")
            .iter()
            .filter(|(_, e)| matches!(e.written, Written::Object(_)))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Forgets what we know about an object (e.g. after a conflict told us our view is wrong).
    pub(crate) fn forget(&self, namespace: &str, name: &str) {
        self.entries
            .lock()
            .expect("overlay lock")
            .remove(&(namespace.to_string(), name.to_string()));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().expect("overlay lock").len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn key_of<K: Resource>(obj: &K) -> Key {
    let meta = obj.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::ObjectMeta;

    fn secret(name: &str, rv: &str, marker: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some(name.into()),
                resource_version: Some(rv.into()),
                labels: Some([("m".to_string(), marker.to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[allow(clippy::ref_option, reason = "takes what `view` returns")]
    fn marker(s: &Option<Arc<Secret>>) -> Option<String> {
        s.as_ref()
            .map(|s| s.metadata.labels.as_ref().unwrap()["m"].clone())
    }

    #[test]
    fn stale_cache_is_covered_by_our_write() {
        let o = Overlay::default();
        o.observe(&watcher::Event::Apply(secret("s", "9", "old")));
        o.wrote(secret("s", "10", "ours"));
        assert_eq!(marker(&o.view("ns", "s", None)), Some("ours".into()));
        assert_eq!(
            marker(&o.view("ns", "s", Some(Arc::new(secret("s", "9", "old"))))),
            Some("ours".into())
        );
        assert_eq!(o.len(), 1);
    }

    #[test]
    fn the_watch_delivering_our_write_drops_its_entry_but_not_a_newer_one() {
        let o = Overlay::default();
        o.wrote(secret("s", "10", "ours"));
        o.wrote(secret("t", "12", "ours"));
        o.observe(&watcher::Event::Apply(secret("s", "10", "cache")));
        o.observe(&watcher::Event::Apply(secret("t", "11", "older")));
        // `s` is gone from the overlay; `t` still covers the older cache (the watermark is now 11).
        assert_eq!(o.len(), 1);
        let stale = Some(Arc::new(secret("t", "11", "older")));
        assert_eq!(marker(&o.view("ns", "t", stale)), Some("ours".into()));
    }

    #[test]
    fn a_relist_moves_the_watermark_only_when_complete() {
        let o = Overlay::default();
        o.wrote(secret("s", "10", "ours"));
        o.observe(&watcher::Event::Init);
        // Another object's newer version arrives first; the store still holds the old list.
        o.observe(&watcher::Event::InitApply(secret("t", "12", "x")));
        let stale = Some(Arc::new(secret("s", "9", "old")));
        assert_eq!(marker(&o.view("ns", "s", stale)), Some("ours".into()));
        o.observe(&watcher::Event::InitApply(secret("s", "10", "cache")));
        o.observe(&watcher::Event::InitDone);
        let fresh = Some(Arc::new(secret("s", "10", "cache")));
        assert_eq!(marker(&o.view("ns", "s", fresh)), Some("cache".into()));
    }

    #[test]
    fn once_the_watch_delivered_our_write_the_cache_wins() {
        let o = Overlay::default();
        o.wrote(secret("s", "10", "ours"));
        o.observe(&watcher::Event::Apply(secret("s", "10", "cache")));
        assert_eq!(
            marker(&o.view("ns", "s", Some(Arc::new(secret("s", "10", "cache"))))),
            Some("cache".into())
        );
        assert!(o.is_empty());
    }

    #[test]
    fn deleted_by_someone_right_after_our_write_is_seen_as_deleted() {
        let o = Overlay::default();
        o.wrote(secret("s", "10", "ours"));
        // Our create and their delete both arrive; the cache holds nothing.
        o.observe(&watcher::Event::Apply(secret("s", "10", "ours")));
        o.observe(&watcher::Event::Delete(secret("s", "11", "ours")));
        assert_eq!(
            o.view("ns", "s", None),
            None,
            "must not claim the copy still exists"
        );
    }

    #[test]
    fn an_event_of_another_object_past_our_version_also_proves_catch_up() {
        let o = Overlay::default();
        o.wrote(secret("s", "10", "ours"));
        o.observe(&watcher::Event::Apply(secret("other", "12", "x")));
        assert_eq!(o.view("ns", "s", None), None);
    }

    #[test]
    fn deletion_hides_the_stale_object_until_the_watch_delivers_it() {
        let o = Overlay::default();
        let gone = secret("s", "10", "gone");
        o.deleted(&gone, Some(11));
        assert_eq!(o.view("ns", "s", Some(Arc::new(gone.clone()))), None);
        o.observe(&watcher::Event::Delete(secret("s", "11", "gone")));
        assert_eq!(o.view("ns", "s", None), None);
        assert!(o.is_empty());
    }

    #[test]
    fn object_recreated_after_our_deletion_is_seen() {
        let o = Overlay::default();
        o.deleted(&secret("s", "10", "gone"), Some(11));
        o.observe(&watcher::Event::Apply(secret("s", "15", "new")));
        assert_eq!(
            marker(&o.view("ns", "s", Some(Arc::new(secret("s", "15", "new"))))),
            Some("new".into())
        );
    }
}
