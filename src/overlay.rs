//! Our own recent writes, laid over the watch caches.
//!
//! A reflector learns of a write only when its watch event arrives, a moment after the write
//! returned. A reconcile that runs in between would see the old object and write again. This
//! overlay remembers the object each write returned (or that it was deleted) until the cache has
//! caught up, which is decided by comparing resourceVersions: they are comparable integers (etcd
//! revisions; a documented guarantee since Kubernetes 1.35). An entry the cache has caught up with
//! is dropped when next read; a newer cached object (someone else's write) always wins.

use std::{collections::HashMap, sync::Arc};

use kube::Resource;
use std::sync::Mutex;

type Key = (String, String); // namespace, name

#[derive(Clone)]
enum Written<K> {
    Object(Arc<K>),
    /// Deleted; the resourceVersion is the one the object had when we deleted it.
    Deleted(u64),
}

pub struct Overlay<K> {
    entries: Mutex<HashMap<Key, Written<K>>>,
}

impl<K> Default for Overlay<K> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

fn rv<K: Resource>(obj: &K) -> Option<u64> {
    obj.meta()
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
}

impl<K: Resource + Clone> Overlay<K> {
    /// Records the object a create/update/patch returned.
    pub fn wrote(&self, obj: K) {
        let key = key_of(&obj);
        self.entries
            .lock()
            .expect("overlay lock")
            .insert(key, Written::Object(Arc::new(obj)));
    }

    /// Records that we deleted the object, last seen at `obj`'s resourceVersion.
    pub fn deleted(&self, obj: &K) {
        if let Some(v) = rv(obj) {
            self.entries
                .lock()
                .expect("overlay lock")
                .insert(key_of(obj), Written::Deleted(v));
        }
    }

    /// The freshest view of `namespace/name`: the cached object unless our own write is newer.
    pub fn view(&self, namespace: &str, name: &str, cached: Option<Arc<K>>) -> Option<Arc<K>> {
        let key = (namespace.to_string(), name.to_string());
        let mut entries = self.entries.lock().expect("overlay lock");
        let Some(written) = entries.get(&key) else {
            return cached;
        };
        let cached_rv = cached.as_deref().and_then(rv);
        let (ours, result) = match written {
            Written::Object(obj) => (rv(obj.as_ref()), Some(obj.clone())),
            Written::Deleted(v) => (Some(*v), None),
        };
        match (cached_rv, ours) {
            // The cache has our write or something newer: it is the truth from now on. For a
            // deletion, an object at the same version is the one we deleted: still stale.
            (Some(c), Some(o)) if c > o || (c == o && matches!(written, Written::Object(_))) => {
                entries.remove(&key);
                cached
            }
            // Cache is behind our write (or has no object yet).
            (_, Some(_)) => {
                if cached.is_none() && matches!(written, Written::Deleted(_)) {
                    entries.remove(&key); // the deletion reached the cache
                }
                result
            }
            _ => {
                entries.remove(&key);
                cached
            }
        }
    }

    /// Forgets what we know about an object (e.g. after a conflict told us our view is wrong).
    pub fn forget(&self, namespace: &str, name: &str) {
        self.entries
            .lock()
            .expect("overlay lock")
            .remove(&(namespace.to_string(), name.to_string()));
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("overlay lock").len()
    }

    pub fn is_empty(&self) -> bool {
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

    fn secret(rv: &str, marker: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some("s".into()),
                resource_version: Some(rv.into()),
                labels: Some([("m".to_string(), marker.to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn marker(s: &Option<Arc<Secret>>) -> Option<String> {
        s.as_ref()
            .map(|s| s.metadata.labels.as_ref().unwrap()["m"].clone())
    }

    #[test]
    fn stale_cache_is_covered_by_our_write() {
        let o = Overlay::default();
        o.wrote(secret("10", "ours"));
        assert_eq!(marker(&o.view("ns", "s", None)), Some("ours".into()));
        assert_eq!(
            marker(&o.view("ns", "s", Some(Arc::new(secret("9", "old"))))),
            Some("ours".into())
        );
        assert_eq!(o.len(), 1);
    }

    #[test]
    fn cache_that_caught_up_or_moved_on_wins_and_entry_is_dropped() {
        let o = Overlay::default();
        o.wrote(secret("10", "ours"));
        assert_eq!(
            marker(&o.view("ns", "s", Some(Arc::new(secret("10", "cache"))))),
            Some("cache".into())
        );
        assert!(o.is_empty());
        o.wrote(secret("10", "ours"));
        assert_eq!(
            marker(&o.view("ns", "s", Some(Arc::new(secret("12", "theirs"))))),
            Some("theirs".into())
        );
        assert!(o.is_empty());
    }

    #[test]
    fn deletion_hides_the_stale_object_until_the_cache_drops_it() {
        let o = Overlay::default();
        o.deleted(&secret("10", "gone"));
        assert_eq!(
            o.view("ns", "s", Some(Arc::new(secret("10", "gone")))),
            None
        );
        assert_eq!(o.len(), 1);
        assert_eq!(o.view("ns", "s", None), None);
        assert!(o.is_empty());
    }

    #[test]
    fn object_recreated_after_our_deletion_is_seen() {
        let o = Overlay::default();
        o.deleted(&secret("10", "gone"));
        assert_eq!(
            marker(&o.view("ns", "s", Some(Arc::new(secret("15", "new"))))),
            Some("new".into())
        );
    }
}
