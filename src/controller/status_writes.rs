//! Status writes, apart from the passes.
//!
//! A status only reports: no copy or ServiceAccount entry waits for it. So a pass hands its status
//! to the writer and returns, and the next pass of the credential (often an event in another
//! namespace, a moment later) does not wait a round trip for it. Per credential at most one write
//! is in flight; a status handed in meanwhile replaces the one still waiting (the newest wins).
//! A write that fails is forgotten, so that the next pass compares with the cached object and
//! writes again; that pass is asked for after a backoff.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::{Api, Client, api::Patch, runtime::reflector::ObjectRef};
use serde_json::json;
use tracing::{debug, warn};

use crate::{
    api::{RegistryCredential, RegistryCredentialStatus},
    controller::status,
};

/// A status to write, with what the API server holds before it (`old`: its fields that `new`
/// leaves out are cleared).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pending {
    pub(crate) uid: String,
    pub(crate) old: Option<RegistryCredentialStatus>,
    pub(crate) new: RegistryCredentialStatus,
}

/// The writes of one credential: one in flight, the newest one waiting.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    waiting: Option<Pending>,
    busy: bool,
    /// Consecutive failed writes, for the retry's backoff.
    failures: u32,
}

impl Slot {
    /// Hands `next` in. Returns it if no write is in flight (the caller writes it now); else it
    /// waits, replacing a waiting one but keeping that one's `old`, which is still what the
    /// server holds.
    pub(crate) fn hand_in(&mut self, mut next: Pending) -> Option<Pending> {
        if !self.busy {
            self.busy = true;
            return Some(next);
        }
        if let Some(waiting) = self.waiting.take()
            && waiting.uid == next.uid
        {
            next.old = waiting.old;
        }
        self.waiting = Some(next);
        None
    }

    /// A write ended: the next one to write, if any (the slot stays busy then). After a failure
    /// nothing waiting is written: it was computed against a status the server does not hold, and
    /// the pass asked for computes it again.
    pub(crate) fn done(&mut self, ok: bool) -> Option<Pending> {
        self.failures = if ok { 0 } else { self.failures + 1 };
        let next = self.waiting.take().filter(|_| ok);
        self.busy = next.is_some();
        next
    }
}

pub(crate) struct StatusWriter {
    client: Client,
    slots: Mutex<HashMap<String, Slot>>,
    /// Asks for a pass of a credential whose status write failed.
    again: tokio::sync::mpsc::UnboundedSender<ObjectRef<RegistryCredential>>,
}

/// What the writer needs of the context: the statuses we believe written, by uid.
pub(crate) type Written = Arc<Mutex<HashMap<String, RegistryCredentialStatus>>>;

impl StatusWriter {
    pub(crate) fn new(
        client: Client,
        again: tokio::sync::mpsc::UnboundedSender<ObjectRef<RegistryCredential>>,
    ) -> Self {
        Self {
            client,
            slots: Mutex::default(),
            again,
        }
    }

    /// Writes `pending` as status of credential `name` in a task of its own (or after the write
    /// in flight). `written` already holds `pending.new`; a failed write removes it there.
    pub(crate) fn submit(self: &Arc<Self>, name: String, pending: Pending, written: Written) {
        let first = self.slot(&name, |slot| slot.hand_in(pending));
        let Some(first) = first else { return };
        let writer = self.clone();
        tokio::spawn(async move {
            let mut next = Some(first);
            while let Some(pending) = next {
                let ok = writer.write(&name, &pending, &written).await;
                next = writer.slot(&name, |slot| slot.done(ok));
            }
            writer.forget_idle(&name);
        });
    }

    /// Forgets a credential that is gone: its failures no longer count towards a backoff. A
    /// write still in flight ends on a 404 and drops the slot then.
    pub(crate) fn forget(&self, name: &str) {
        let mut slots = self.slots.lock().expect("status slots lock");
        if slots.get(name).is_some_and(|s| !s.busy) {
            slots.remove(name);
        }
    }

    fn slot<T>(&self, name: &str, f: impl FnOnce(&mut Slot) -> T) -> T {
        let mut slots = self.slots.lock().expect("status slots lock");
        f(slots.entry(name.to_string()).or_default())
    }

    /// Drops the slot of a credential with nothing in flight and no failures to remember.
    fn forget_idle(&self, name: &str) {
        let mut slots = self.slots.lock().expect("status slots lock");
        if slots.get(name).is_some_and(|s| !s.busy && s.failures == 0) {
            slots.remove(name);
        }
    }

    async fn write(&self, name: &str, pending: &Pending, written: &Written) -> bool {
        let api = Api::<RegistryCredential>::all(self.client.clone());
        let patch = json!({ "status": status::merge_patch(pending.old.as_ref(), &pending.new) });
        let Err(error) = api
            .patch_status(name, &crate::writes::patch_params(), &Patch::Merge(patch))
            .await
        else {
            return true;
        };
        // Believed written no longer (nor anything waiting after it): the next pass compares
        // with the cached object again.
        written.lock().expect("statuses lock").remove(&pending.uid);
        if crate::controller::error::status_code(&error) == Some(404) {
            debug!(credential = %name, "credential gone before its status was written");
            return true;
        }
        let failures = self.slot(name, |slot| slot.failures) + 1;
        let retry = Duration::from_secs(1 << failures.min(6));
        warn!(credential = %name, error = %error, retry_in = ?retry, "writing the status failed");
        let again = self.again.clone();
        let credential = ObjectRef::new(name);
        tokio::spawn(async move {
            tokio::time::sleep(retry).await;
            let _ = again.send(credential);
        });
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(synced: u32) -> RegistryCredentialStatus {
        RegistryCredentialStatus {
            synced_namespaces: synced,
            ..Default::default()
        }
    }

    fn pending(old: Option<u32>, new: u32) -> Pending {
        Pending {
            uid: "u1".into(),
            old: old.map(status),
            new: status(new),
        }
    }

    #[test]
    fn a_status_is_written_at_once_when_no_write_is_in_flight() {
        let mut slot = Slot::default();
        assert_eq!(slot.hand_in(pending(None, 1)), Some(pending(None, 1)));
        assert_eq!(slot.done(true), None);
        assert_eq!(slot.hand_in(pending(Some(1), 2)), Some(pending(Some(1), 2)));
    }

    #[test]
    fn the_newest_status_replaces_one_still_waiting_and_clears_from_what_the_server_holds() {
        let mut slot = Slot::default();
        assert!(slot.hand_in(pending(None, 1)).is_some());
        assert_eq!(slot.hand_in(pending(Some(1), 2)), None);
        assert_eq!(slot.hand_in(pending(Some(2), 3)), None);
        // Status 2 was never written: the server holds 1 once the write in flight ends.
        assert_eq!(slot.done(true), Some(pending(Some(1), 3)));
        assert_eq!(slot.done(true), None);
    }

    #[test]
    fn a_credential_created_again_does_not_inherit_what_the_old_one_held() {
        let mut slot = Slot::default();
        assert!(slot.hand_in(pending(None, 1)).is_some());
        assert_eq!(slot.hand_in(pending(Some(1), 2)), None);
        let recreated = Pending {
            uid: "u2".into(),
            old: None,
            new: status(5),
        };
        assert_eq!(slot.hand_in(recreated.clone()), None);
        assert_eq!(slot.done(true), Some(recreated));
    }

    #[test]
    fn after_a_failed_write_nothing_computed_against_it_is_written() {
        let mut slot = Slot::default();
        assert!(slot.hand_in(pending(None, 1)).is_some());
        assert_eq!(slot.hand_in(pending(Some(1), 2)), None);
        assert_eq!(slot.done(false), None);
        // The pass asked for hands in a status computed against the cached object.
        assert_eq!(slot.hand_in(pending(None, 2)), Some(pending(None, 2)));
    }

    #[tokio::test]
    async fn a_deleted_credential_leaves_no_slot_behind_unless_a_write_is_in_flight() {
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let (again, _) = tokio::sync::mpsc::unbounded_channel();
        let writer = StatusWriter::new(Client::try_from(config).unwrap(), again);
        writer.slot("failed", |slot| {
            slot.hand_in(pending(None, 1));
            slot.done(false);
        });
        writer.slot("busy", |slot| slot.hand_in(pending(None, 1)));
        writer.forget("failed");
        writer.forget("busy");
        let slots = writer.slots.lock().unwrap();
        assert!(!slots.contains_key("failed"));
        assert!(slots.contains_key("busy"));
    }

    #[test]
    fn failures_are_counted_until_a_write_succeeds() {
        let mut slot = Slot::default();
        assert!(slot.hand_in(pending(None, 1)).is_some());
        assert_eq!(slot.done(false), None);
        assert!(slot.hand_in(pending(None, 2)).is_some());
        assert_eq!(slot.done(false), None);
        assert_eq!(slot.failures, 2);
        assert!(slot.hand_in(pending(None, 3)).is_some());
        assert_eq!(slot.done(true), None);
        assert_eq!(slot.failures, 0);
    }
}
