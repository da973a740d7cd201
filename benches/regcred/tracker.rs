//! What the driver's watches have seen, per namespace: the `default` ServiceAccount and the copy.
//! The operator and the floor client are timed the same way, by these watches.

use super::*;

/// What the watches have seen, per namespace.
#[derive(Default, Clone)]
pub(crate) struct NsSeen {
    /// When `default` first appeared.
    pub(crate) sa_appeared: Option<Instant>,
    /// When `default` first listed [`SECRET_NAME`].
    pub(crate) sa_listed: Option<Instant>,
    /// The copy's `.dockerconfigjson` and when it last changed.
    pub(crate) secret: Option<(Vec<u8>, Instant)>,
}

#[derive(Default)]
pub(crate) struct Tracker {
    seen: Mutex<HashMap<String, NsSeen>>,
    changed: Notify,
}

impl Tracker {
    fn on_sa(&self, sa: &ServiceAccount) {
        if sa.name_any() != "default" {
            return;
        }
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap();
        let entry = seen.entry(sa.namespace().unwrap_or_default()).or_default();
        entry.sa_appeared.get_or_insert(now);
        if sa
            .image_pull_secrets
            .iter()
            .flatten()
            .any(|r| r.name == SECRET_NAME)
        {
            entry.sa_listed.get_or_insert(now);
        } else {
            // Taken out again (a teardown between fan-out pairs).
            entry.sa_listed = None;
        }
        drop(seen);
        self.changed.notify_waiters();
    }

    fn on_secret(&self, s: &Secret) {
        if s.name_any() != SECRET_NAME {
            return;
        }
        let data = s
            .data
            .as_ref()
            .and_then(|d| d.get(".dockerconfigjson"))
            .map(|b| b.0.clone())
            .unwrap_or_default();
        let mut seen = self.seen.lock().unwrap();
        let entry = seen.entry(s.namespace().unwrap_or_default()).or_default();
        if entry.secret.as_ref().is_none_or(|(old, _)| *old != data) {
            entry.secret = Some((data, Instant::now()));
        }
        drop(seen);
        self.changed.notify_waiters();
    }

    fn on_secret_deleted(&self, s: &Secret) {
        if s.name_any() != SECRET_NAME {
            return;
        }
        if let Some(entry) = self
            .seen
            .lock()
            .unwrap()
            .get_mut(&s.namespace().unwrap_or_default())
        {
            entry.secret = None;
        }
        self.changed.notify_waiters();
    }

    /// Waits until no namespace of `namespaces` holds a copy or lists it any more.
    pub(crate) async fn wait_cleared(&self, namespaces: &[String], what: &str) {
        self.wait_all(namespaces, what, |s| {
            (s.secret.is_none() && s.sa_listed.is_none()).then(Instant::now)
        })
        .await;
    }

    /// Waits until `done` holds for every namespace; returns the latest time `at` gives among them.
    pub(crate) async fn wait_all(
        &self,
        namespaces: &[String],
        what: &str,
        done: impl Fn(&NsSeen) -> Option<Instant>,
    ) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(900);
        loop {
            let notified = self.changed.notified();
            {
                let seen = self.seen.lock().unwrap();
                let times: Vec<Option<Instant>> = namespaces
                    .iter()
                    .map(|ns| seen.get(ns).and_then(&done))
                    .collect();
                if times.iter().all(Option::is_some) {
                    return times
                        .into_iter()
                        .flatten()
                        .max()
                        .unwrap_or_else(Instant::now);
                }
                if Instant::now() > deadline {
                    let missing = times.iter().filter(|t| t.is_none()).count();
                    panic!(
                        "timed out waiting for {what}: {missing} of {} namespaces missing",
                        namespaces.len()
                    );
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(500), notified).await;
        }
    }

    /// Waits until every namespace's copy holds `want`; returns the latest time one changed.
    pub(crate) async fn wait_copies(
        &self,
        namespaces: &[String],
        what: &str,
        want: &[u8],
    ) -> Instant {
        self.wait_all(namespaces, what, |s| {
            s.secret
                .as_ref()
                .filter(|(d, _)| d.as_slice() == want)
                .map(|(_, at)| *at)
        })
        .await
    }

    pub(crate) fn get(&self, ns: &str) -> NsSeen {
        self.seen
            .lock()
            .unwrap()
            .get(ns)
            .cloned()
            .unwrap_or_default()
    }
}

pub(crate) fn watch_into(client: &Client, tracker: Arc<Tracker>) {
    let sas = watcher(
        Api::<ServiceAccount>::all(client.clone()),
        watcher::Config::default().fields("metadata.name=default"),
    )
    .default_backoff()
    .applied_objects();
    let t = tracker.clone();
    tokio::spawn(async move {
        let mut sas = std::pin::pin!(sas);
        while let Some(sa) = sas.next().await {
            if let Ok(sa) = sa {
                t.on_sa(&sa);
            }
        }
    });
    let secrets = watcher(
        Api::<Secret>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={SECRET_NAME}")),
    )
    .default_backoff();
    tokio::spawn(async move {
        let mut secrets = std::pin::pin!(secrets);
        while let Some(event) = secrets.next().await {
            match event {
                Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                    tracker.on_secret(&s);
                }
                Ok(watcher::Event::Delete(s)) => tracker.on_secret_deleted(&s),
                _ => {}
            }
        }
    });
}
