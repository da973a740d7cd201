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

type Objects<K> = HashMap<Box<str>, HashMap<Box<str>, Arc<K>>>;

struct Inner<K> {
    live: RwLock<Objects<K>>,
    /// The list being received, until its `InitDone`.
    relist: Mutex<Option<Objects<K>>>,
    ready: tokio::sync::watch::Sender<bool>,
}

/// Objects of kind `K` as the watch last delivered them. Clones share the cache.
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

fn put<K: Resource + Clone>(objects: &mut Objects<K>, obj: &K) {
    let meta = obj.meta();
    let (ns, name) = (
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    );
    let names = match objects.get_mut(ns) {
        Some(names) => names,
        None => objects.entry(ns.into()).or_default(),
    };
    names.insert(name.into(), Arc::new(obj.clone()));
}

fn remove<K: Resource>(objects: &mut Objects<K>, obj: &K) {
    let meta = obj.meta();
    let ns = meta.namespace.as_deref().unwrap_or_default();
    if let Some(names) = objects.get_mut(ns) {
        names.remove(meta.name.as_deref().unwrap_or_default());
        if names.is_empty() {
            objects.remove(ns);
        }
    }
}

impl<K: Resource + Clone> Store<K> {
    /// Follows one watch event.
    pub(crate) fn observe(&self, event: &Event<K>) {
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

    /// The objects of `namespace`, in no particular order.
    pub(crate) fn in_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        let live = self.inner.live.read().expect("store lock");
        live.get(namespace)
            .map(|names| names.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every object, in no particular order.
    pub(crate) fn state(&self) -> Vec<Arc<K>> {
        let live = self.inner.live.read().expect("store lock");
        live.values()
            .flat_map(|names| names.values().cloned())
            .collect()
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
    use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
    use kube::core::PartialObjectMeta;

    use super::*;

    fn sa(ns: &str, name: &str, rv: &str) -> ServiceAccount {
        let mut sa = ServiceAccount::default();
        sa.metadata.namespace = Some(ns.into());
        sa.metadata.name = Some(name.into());
        sa.metadata.resource_version = Some(rv.into());
        sa
    }

    fn names(mut objects: Vec<Arc<ServiceAccount>>) -> Vec<String> {
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
        let store = Store::default();
        store.observe(&Event::Apply(sa("a", "default", "1")));
        store.observe(&Event::Apply(sa("a", "builder", "2")));
        store.observe(&Event::Apply(sa("b", "default", "3")));
        store.observe(&Event::Apply(sa("a", "default", "4")));
        assert_eq!(
            store.get("a", "default").unwrap().metadata.resource_version,
            Some("4".into())
        );
        assert_eq!(
            names(store.in_namespace("a")),
            ["a/builder@2", "a/default@4"]
        );
        store.observe(&Event::Delete(sa("b", "default", "5")));
        assert!(store.get("b", "default").is_none());
        assert!(store.in_namespace("b").is_empty());
        assert_eq!(names(store.state()), ["a/builder@2", "a/default@4"]);
    }

    #[test]
    fn cluster_scoped_objects_have_the_empty_namespace() {
        let store = Store::<PartialObjectMeta<Namespace>>::default();
        let mut ns = PartialObjectMeta::<Namespace>::default();
        ns.metadata.name = Some("team-a".into());
        store.observe(&Event::Apply(ns));
        assert!(store.get("", "team-a").is_some());
        assert_eq!(store.state().len(), 1);
    }

    #[tokio::test]
    async fn a_relist_is_swapped_in_whole_when_it_is_complete() {
        let store = Store::default();
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
        assert_eq!(names(store.state()), ["a/default@1"]);
        store.observe(&Event::InitDone);
        assert_eq!(names(store.state()), ["b/default@2"]);
        store.wait_until_ready().await;
    }
}
