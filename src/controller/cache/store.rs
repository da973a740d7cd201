//! A watch cache: the objects of one kind, by namespace and then by name.
//!
//! The objects of a namespace (all that a pass over that namespace reads) are one lookup away, and
//! a lookup by namespace and name allocates nothing. Each namespace's name is held once for all of
//! its objects, and an object's key is its name alone: with tens of thousands of ServiceAccounts,
//! keys are a good part of a cache. A re-list (after a watch restart) is built aside and swapped
//! in when it is complete, so that a reader never sees half a list.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
};

use kube::{Resource, runtime::watcher::Event};

use super::slim::Cached;

type Objects<K> = HashMap<Box<str>, HashMap<Box<str>, Arc<K>>>;

struct Inner<K> {
    live: RwLock<Objects<K>>,
    /// The list being received, until its `InitDone`.
    relist: Mutex<Option<Objects<K>>>,
    ready: tokio::sync::watch::Sender<bool>,
}

/// What the watch last delivered of each object, kept as `K` (see [`Cached`]). Clones share the
/// cache.
pub(crate) struct Store<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K> Default for Store<K> {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                live: RwLock::default(),
                relist: Mutex::default(),
                ready: tokio::sync::watch::Sender::new(false),
            }),
        }
    }
}

fn put<K: Cached>(objects: &mut Objects<K>, obj: &K::Full) {
    let meta = obj.meta();
    let (ns, name) = (
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    );
    let names = match objects.get_mut(ns) {
        Some(names) => names,
        None => objects.entry(ns.into()).or_default(),
    };
    names.insert(name.into(), Arc::new(K::keep(obj)));
}

fn remove<K>(objects: &mut Objects<K>, obj: &impl Resource) {
    let meta = obj.meta();
    let ns = meta.namespace.as_deref().unwrap_or_default();
    if let Some(names) = objects.get_mut(ns) {
        names.remove(meta.name.as_deref().unwrap_or_default());
        if names.is_empty() {
            objects.remove(ns);
        }
    }
}

impl<K: Cached> Store<K> {
    /// Follows one watch event.
    pub(crate) fn observe(&self, event: &Event<K::Full>) {
        let inner = &self.inner;
        match event {
            Event::Apply(obj) => put(&mut inner.live.write().expect("store lock"), obj),
            Event::Delete(obj) => remove(&mut inner.live.write().expect("store lock"), obj),
            Event::Init => *inner.relist.lock().expect("store lock") = Some(Objects::default()),
            Event::InitApply(obj) => {
                if let Some(building) = inner.relist.lock().expect("store lock").as_mut() {
                    put(building, obj);
                }
            }
            Event::InitDone => {
                if let Some(built) = inner.relist.lock().expect("store lock").take() {
                    *inner.live.write().expect("store lock") = built;
                }
                inner.ready.send_replace(true);
            }
        }
    }
}

impl<K> Store<K> {
    /// The object `name` of `namespace` (`""` for a cluster-scoped kind).
    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let live = self.inner.live.read().expect("store lock");
        live.get(namespace)?.get(name).cloned()
    }

    /// The objects of `namespace` with their names, in no particular order.
    pub(crate) fn in_namespace(&self, namespace: &str) -> Vec<(String, Arc<K>)> {
        let live = self.inner.live.read().expect("store lock");
        live.get(namespace)
            .map(|names| {
                names
                    .iter()
                    .map(|(name, obj)| (name.to_string(), obj.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Calls `f` with the namespace, name and object of every object, in no particular order,
    /// while the cache is locked for reading (so `f` must not wait for anything).
    pub(crate) fn scan(&self, mut f: impl FnMut(&str, &str, &K)) {
        let live = self.inner.live.read().expect("store lock");
        for (ns, names) in live.iter() {
            for (name, obj) in names {
                f(ns, name, obj);
            }
        }
    }

    /// Waits until the first complete list is in.
    pub(crate) async fn wait_until_ready(&self) {
        let mut ready = self.inner.ready.subscribe();
        // The sender lives as long as the store: the wait ends only with a list.
        let _ = ready.wait_for(|ready| *ready).await;
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Namespace, Secret};
    use kube::core::PartialObjectMeta;

    use super::*;
    use crate::controller::cache::slim::CachedNamespace;

    fn sa(ns: &str, name: &str, rv: &str) -> Secret {
        let mut sa = Secret::default();
        sa.metadata.namespace = Some(ns.into());
        sa.metadata.name = Some(name.into());
        sa.metadata.resource_version = Some(rv.into());
        sa
    }

    fn all(store: &Store<Secret>) -> Vec<Arc<Secret>> {
        let mut objects = Vec::new();
        store.scan(|ns, name, o| {
            assert_eq!(
                (o.metadata.namespace.as_deref(), o.metadata.name.as_deref()),
                (Some(ns), Some(name))
            );
            objects.push(Arc::new(o.clone()));
        });
        objects
    }

    fn names(mut objects: Vec<Arc<Secret>>) -> Vec<String> {
        objects.sort_by_key(|o| (o.metadata.namespace.clone(), o.metadata.name.clone()));
        objects
            .iter()
            .map(|o| {
                format!(
                    "{}/{}@{}",
                    o.metadata.namespace.as_deref().unwrap_or_default(),
                    o.metadata.name.as_deref().unwrap_or_default(),
                    o.metadata.resource_version.as_deref().unwrap_or_default()
                )
            })
            .collect()
    }

    #[test]
    fn objects_are_found_by_namespace_and_name_and_leave_on_delete() {
        let store = Store::<Secret>::default();
        store.observe(&Event::Apply(sa("a", "default", "1")));
        store.observe(&Event::Apply(sa("a", "builder", "2")));
        store.observe(&Event::Apply(sa("b", "default", "3")));
        store.observe(&Event::Apply(sa("a", "default", "4")));
        assert_eq!(
            store.get("a", "default").unwrap().metadata.resource_version,
            Some("4".into())
        );
        let in_a = store.in_namespace("a");
        assert!(
            in_a.iter()
                .all(|(name, o)| o.metadata.name.as_ref() == Some(name))
        );
        assert_eq!(
            names(in_a.into_iter().map(|(_, o)| o).collect()),
            ["a/builder@2", "a/default@4"]
        );
        store.observe(&Event::Delete(sa("b", "default", "5")));
        assert!(store.get("b", "default").is_none());
        assert!(store.in_namespace("b").is_empty());
        assert_eq!(names(all(&store)), ["a/builder@2", "a/default@4"]);
    }

    #[test]
    fn cluster_scoped_objects_have_the_empty_namespace() {
        let store = Store::<CachedNamespace>::default();
        let mut ns = PartialObjectMeta::<Namespace>::default();
        ns.metadata.name = Some("team-a".into());
        store.observe(&Event::Apply(ns));
        assert!(store.get("", "team-a").is_some());
        let mut seen = Vec::new();
        store.scan(|ns, name, _| seen.push(format!("{ns}/{name}")));
        assert_eq!(seen, ["/team-a"]);
    }

    #[tokio::test]
    async fn a_relist_is_swapped_in_whole_when_it_is_complete() {
        let store = Store::<Secret>::default();
        let waiting = tokio::spawn({
            let store = store.clone();
            async move { store.wait_until_ready().await }
        });
        store.observe(&Event::Init);
        store.observe(&Event::InitApply(sa("a", "default", "1")));
        assert!(store.get("a", "default").is_none());
        assert!(!waiting.is_finished());
        store.observe(&Event::InitDone);
        waiting.await.unwrap();
        assert!(store.get("a", "default").is_some());
        // A later re-list drops what it no longer holds, once complete.
        store.observe(&Event::Init);
        store.observe(&Event::InitApply(sa("b", "default", "2")));
        assert_eq!(names(all(&store)), ["a/default@1"]);
        store.observe(&Event::InitDone);
        assert_eq!(names(all(&store)), ["b/default@2"]);
        store.wait_until_ready().await;
    }
}
