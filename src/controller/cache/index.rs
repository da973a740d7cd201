//! Indexes over a watch cache, kept up to date by the watch events themselves: which objects
//! belong to each group (a namespace, a credential). A lookup costs the size of its group, never
//! a walk over the whole cache.
//!
//! An index holds object keys only; the objects stay in the reflector's store. It follows the
//! watch the way the store does: a re-list builds a new index aside and swaps it in when the list
//! is complete, so that a lookup never sees half a list.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, RwLock},
};

use kube::{Resource, runtime::watcher::Event};

/// `(namespace, name)` of an object.
pub(crate) type Key = (String, String);

/// An object's key as the index holds it: `namespace/name` in one shared allocation (neither a
/// namespace nor the name of a ServiceAccount or Secret can hold a `/`). The set of its groups and
/// the object-to-groups map share it, and each group name is held once.
type Compact = Arc<str>;

fn compact((ns, name): &Key) -> Compact {
    Arc::from(format!("{ns}/{name}"))
}

fn expand(key: &str) -> Key {
    let (ns, name) = key.split_once('/').unwrap_or(("", key));
    (ns.to_string(), name.to_string())
}

#[derive(Default)]
struct Groups {
    members: HashMap<Arc<str>, BTreeSet<Compact>>,
    /// The groups each object is in, to take it out of them when it changes or goes.
    of: HashMap<Compact, Box<[Arc<str>]>>,
}

impl Groups {
    fn remove(&mut self, key: &str) {
        for group in self.of.remove(key).into_iter().flat_map(Vec::from) {
            if let Some(members) = self.members.get_mut(&group) {
                members.remove(key);
                if members.is_empty() {
                    self.members.remove(&group);
                }
            }
        }
    }

    fn put(&mut self, key: &Key, mut groups: Vec<String>) {
        groups.sort_unstable();
        groups.dedup();
        let compact_key = compact(key);
        // Most events change nothing an index groups by (a ServiceAccount's entries, a status).
        let unchanged = match self.of.get(&compact_key) {
            Some(now) => now
                .iter()
                .map(|g| &**g)
                .eq(groups.iter().map(String::as_str)),
            None => groups.is_empty(),
        };
        if unchanged {
            return;
        }
        self.remove(&compact_key);
        if groups.is_empty() {
            return;
        }
        let mut shared = Vec::with_capacity(groups.len());
        for group in groups {
            let name = match self.members.get_key_value(group.as_str()) {
                Some((name, _)) => name.clone(),
                None => Arc::from(group),
            };
            self.members
                .entry(name.clone())
                .or_default()
                .insert(compact_key.clone());
            shared.push(name);
        }
        self.of.insert(compact_key, shared.into_boxed_slice());
    }
}

/// Objects of kind `K` by the groups `group_of` puts them in.
pub(crate) struct Index<K> {
    group_of: fn(&K) -> Vec<String>,
    live: RwLock<Groups>,
    /// The index being built from a re-list, until its `InitDone`.
    relist: std::sync::Mutex<Option<Groups>>,
}

fn key_of<K: Resource>(obj: &K) -> Key {
    let meta = obj.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl<K: Resource> Index<K> {
    pub(crate) fn new(group_of: fn(&K) -> Vec<String>) -> Self {
        Self {
            group_of,
            live: RwLock::default(),
            relist: std::sync::Mutex::default(),
        }
    }

    /// Follows one watch event (after the store has it).
    pub(crate) fn observe(&self, event: &Event<K>) {
        match event {
            Event::Apply(obj) => {
                let groups = (self.group_of)(obj);
                self.live
                    .write()
                    .expect("index lock")
                    .put(&key_of(obj), groups);
            }
            Event::Delete(obj) => self
                .live
                .write()
                .expect("index lock")
                .remove(&compact(&key_of(obj))),
            Event::Init => *self.relist.lock().expect("index lock") = Some(Groups::default()),
            Event::InitApply(obj) => {
                if let Some(building) = self.relist.lock().expect("index lock").as_mut() {
                    building.put(&key_of(obj), (self.group_of)(obj));
                }
            }
            Event::InitDone => {
                if let Some(built) = self.relist.lock().expect("index lock").take() {
                    *self.live.write().expect("index lock") = built;
                }
            }
        }
    }

    /// The keys of the objects in `group`.
    pub(crate) fn members(&self, group: &str) -> Vec<Key> {
        self.live
            .read()
            .expect("index lock")
            .members
            .get(group)
            .map(|m| m.iter().map(|k| expand(k)).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ServiceAccount;

    use super::*;

    fn sa(ns: &str, name: &str, groups: &str) -> ServiceAccount {
        let mut sa = ServiceAccount::default();
        sa.metadata.namespace = Some(ns.into());
        sa.metadata.name = Some(name.into());
        sa.metadata.annotations = Some([("groups".to_string(), groups.to_string())].into());
        sa
    }

    fn groups(sa: &ServiceAccount) -> Vec<String> {
        let text = &sa.metadata.annotations.as_ref().unwrap()["groups"];
        text.split(',')
            .filter(|g| !g.is_empty())
            .map(String::from)
            .collect()
    }

    fn key(ns: &str, name: &str) -> Key {
        (ns.into(), name.into())
    }

    #[test]
    fn objects_move_between_groups_and_leave_on_delete() {
        let index = Index::new(groups);
        index.observe(&Event::Apply(sa("a", "default", "x,y")));
        index.observe(&Event::Apply(sa("b", "default", "y")));
        assert_eq!(index.members("x"), [key("a", "default")]);
        assert_eq!(
            index.members("y"),
            [key("a", "default"), key("b", "default")]
        );
        index.observe(&Event::Apply(sa("a", "default", "x")));
        assert_eq!(index.members("y"), [key("b", "default")]);
        index.observe(&Event::Delete(sa("b", "default", "y")));
        assert!(index.members("y").is_empty());
        index.observe(&Event::Apply(sa("a", "default", "")));
        assert!(index.members("x").is_empty());
    }

    #[test]
    fn repeated_groups_count_once_and_names_with_dashes_keep_their_namespace() {
        let index = Index::new(groups);
        index.observe(&Event::Apply(sa("team-a", "ci-bot", "x,x,y")));
        index.observe(&Event::Apply(sa("team", "a-ci", "x")));
        let mut x = index.members("x");
        x.sort_unstable();
        assert_eq!(x, [key("team", "a-ci"), key("team-a", "ci-bot")]);
        // The same groups again: nothing moves.
        index.observe(&Event::Apply(sa("team-a", "ci-bot", "y,x")));
        assert_eq!(index.members("y"), [key("team-a", "ci-bot")]);
        index.observe(&Event::Delete(sa("team-a", "ci-bot", "")));
        assert!(index.members("y").is_empty());
        assert_eq!(index.members("x"), [key("team", "a-ci")]);
    }

    #[test]
    fn a_relist_is_swapped_in_whole_when_it_is_complete() {
        let index = Index::new(groups);
        index.observe(&Event::Apply(sa("a", "default", "x")));
        index.observe(&Event::Init);
        index.observe(&Event::InitApply(sa("b", "default", "x")));
        // Until the list is complete, lookups see the old index.
        assert_eq!(index.members("x"), [key("a", "default")]);
        index.observe(&Event::InitDone);
        assert_eq!(index.members("x"), [key("b", "default")]);
    }
}
