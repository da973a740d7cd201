//! Shared state of the controller: the client, the watch caches, our recent writes, settings.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::{Client, ResourceExt};

use crate::{
    api::NamespaceFailure,
    api::{RegistryCredential, RegistryCredentialStatus},
    controller::cache::{Caches, index::Key, overlay::Overlay},
    controller::plan::{self, Except, View},
    controller::service_accounts,
    controller::settings::Settings,
    runtime::metrics::Metrics,
};

/// How long a same-name Secret we do not manage is remembered before we read it again.
pub(crate) const CONFLICT_RECHECK: Duration = Duration::from_secs(60);

pub(crate) struct Context {
    pub(crate) client: Client,
    pub(crate) caches: Caches,
    /// Events, recorded in order by a task of their own.
    pub(crate) events: crate::controller::events::EventQueue,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) settings: Settings,
    pub(crate) secret_writes: Arc<Overlay<Secret>>,
    pub(crate) sa_writes: Arc<Overlay<ServiceAccount>>,
    /// `(namespace, name)` of foreign same-name Secrets found, with when and why.
    pub(crate) conflicts: Mutex<HashMap<(String, String), (Instant, String)>>,
    /// Consecutive failures per credential, for backoff; reset on success.
    pub(crate) failures: Mutex<HashMap<String, u32>>,
    /// When new ServiceAccounts appeared, for the onboarding-latency metric.
    pub(crate) appeared: Arc<Appearances>,
    /// ServiceAccounts on which another writer keeps removing our entries.
    pub(crate) contests: crate::controller::contests::Contests,
    /// Registry checks of `spec.verify`, run in a task of their own.
    pub(crate) verifier: crate::controller::verify::Verifier,
    /// The pod watch of `podRecovery`, running only while a credential has it on.
    pub(crate) pods: crate::controller::recovery::PodWatch,
    pub(crate) evictions: crate::controller::recovery::EvictionBudget,
    pub(crate) reported_pods: crate::controller::recovery::Reported,
    /// `source.ecr`: the minted token of each credential.
    pub(crate) tokens: crate::controller::tokens::Tokens,
    /// The last status written (or being written) per credential uid.
    pub(crate) statuses: crate::controller::status_writes::Written,
    /// Writes the statuses, apart from the passes.
    pub(crate) status_writer: Arc<crate::controller::status_writes::StatusWriter>,
    /// Per credential: what its passes found in each namespace, and which namespaces changed
    /// since.
    pub(crate) ledgers: Arc<crate::controller::ledger::Ledgers>,
    /// Findings already reported by an Event, per credential: (namespace, message).
    pub(crate) reported: Mutex<HashMap<String, std::collections::BTreeSet<(String, String)>>>,
}

/// When the watch first delivered each newly created ServiceAccount. Only accounts created in the
/// last minute count: older ones were not "just onboarded".
#[derive(Default)]
pub(crate) struct Appearances {
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    /// By a hash of the account's uid, not the uid itself: after a wave of new namespaces this
    /// holds tens of thousands of entries for minutes, and a collision costs one latency sample.
    at: HashMap<u64, Instant>,
    /// When entries older than `KEEP` were last dropped: at most every `KEEP`, so that an event
    /// costs O(1) however many accounts were just created.
    pruned: Option<Instant>,
}

fn uid_key(uid: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(uid)
}

impl Appearances {
    const RECENT: Duration = Duration::from_secs(60);
    const KEEP: Duration = Duration::from_secs(300);

    pub(crate) fn note(&self, sa: &ServiceAccount) {
        let (Some(uid), Some(created)) = (&sa.metadata.uid, &sa.metadata.creation_timestamp) else {
            return;
        };
        let age = k8s_openapi::jiff::Timestamp::now().duration_since(created.0);
        if age.as_secs() > Self::RECENT.as_secs() as i64 {
            return;
        }
        let mut seen = self.seen.lock().expect("appearances lock");
        let now = Instant::now();
        if seen
            .pruned
            .is_none_or(|at| now.duration_since(at) >= Self::KEEP)
        {
            seen.at.retain(|_, at| now.duration_since(*at) < Self::KEEP);
            seen.at.shrink_to_fit();
            seen.pruned = Some(now);
        }
        seen.at.entry(uid_key(uid)).or_insert(now);
    }

    /// Time since the account appeared, once: the first entry added to it ends its onboarding.
    pub(crate) fn onboarded(&self, uid: &str) -> Option<Duration> {
        self.seen
            .lock()
            .expect("appearances lock")
            .at
            .remove(&uid_key(uid))
            .map(|at| at.elapsed())
    }
}

impl Context {
    /// What minting tokens needs of the context.
    pub(crate) fn token_env(&self) -> crate::controller::tokens::Env<'_> {
        crate::controller::tokens::Env {
            client: &self.client,
            settings: &self.settings,
            caches: &self.caches,
            metrics: &self.metrics,
        }
    }

    /// The view of one reconcile pass of `current`: lookups go through the caches' indexes, so a
    /// pass costs what its credential touches, not the size of the cluster. `current`'s own
    /// sources count as sources even when the credential cache no longer holds it (a pass for a
    /// credential being deleted).
    pub(crate) fn view(&self, current: &RegistryCredential) -> CacheView<'_> {
        let mut sources = HashMap::new();
        let cached = self.caches.credentials.state();
        for rc in cached.iter().map(AsRef::as_ref).chain([current]) {
            for (ns, name) in crate::controller::resolve::referenced_secrets(&rc.spec.source) {
                sources.insert((ns.to_string(), name.to_string()), rc.name_any());
            }
        }
        CacheView { ctx: self, sources }
    }

    /// A credential (from the cache) that reads Secret `namespace/name` as its source or password.
    pub(crate) fn source_reader(&self, namespace: &str, name: &str) -> Option<String> {
        self.caches
            .credentials
            .state()
            .iter()
            .find(|rc| {
                crate::controller::resolve::referenced_secrets(&rc.spec.source)
                    .contains(&(namespace, name))
            })
            .map(|rc| rc.name_any())
    }

    /// The findings of this pass that the previous pass of `credential` did not have: a finding
    /// gets one Event while it lasts, not one per pass (and a new one if it comes back).
    pub(crate) fn new_findings<'f>(
        &self,
        credential: &str,
        findings: &'f [NamespaceFailure],
    ) -> Vec<&'f NamespaceFailure> {
        let now: std::collections::BTreeSet<(String, String)> = findings
            .iter()
            .map(|f| (f.namespace.clone(), f.message.clone()))
            .collect();
        let mut reported = self.reported.lock().expect("reported lock");
        let before = reported.insert(credential.into(), now).unwrap_or_default();
        findings
            .iter()
            .filter(|f| !before.contains(&(f.namespace.clone(), f.message.clone())))
            .collect()
    }

    /// The status this process last wrote for `rc` (by uid), or the cached one: only the operator
    /// writes status, so its own last write is the newest, even before the watch delivers it.
    /// Comparing with it keeps a second pass in quick succession from writing the same status
    /// again and repeating its Events.
    pub(crate) fn previous_status(
        &self,
        rc: &RegistryCredential,
    ) -> Option<RegistryCredentialStatus> {
        let written = rc.metadata.uid.as_ref().and_then(|uid| {
            self.statuses
                .lock()
                .expect("statuses lock")
                .get(uid)
                .cloned()
        });
        written.or_else(|| rc.status.clone())
    }

    pub(crate) fn wrote_status(&self, rc: &RegistryCredential, status: &RegistryCredentialStatus) {
        if let Some(uid) = &rc.metadata.uid {
            self.statuses
                .lock()
                .expect("statuses lock")
                .insert(uid.clone(), status.clone());
        }
    }

    pub(crate) fn forget_status(&self, rc: &RegistryCredential) {
        if let Some(uid) = &rc.metadata.uid {
            self.statuses.lock().expect("statuses lock").remove(uid);
        }
    }

    /// Forgets what was reported for a credential that is gone.
    pub(crate) fn forget_findings(&self, credential: &str) {
        self.reported
            .lock()
            .expect("reported lock")
            .remove(credential);
    }

    pub(crate) fn record_conflict(&self, namespace: &str, name: &str, message: &str) {
        self.conflicts.lock().expect("conflicts lock").insert(
            (namespace.into(), name.into()),
            (Instant::now(), message.into()),
        );
    }

    pub(crate) fn clear_conflict(&self, namespace: &str, name: &str) {
        self.conflicts
            .lock()
            .expect("conflicts lock")
            .remove(&(namespace.into(), name.into()));
    }
}

pub(crate) struct CacheView<'a> {
    ctx: &'a Context,
    /// Secrets read as a source, with a credential that reads each.
    sources: HashMap<(String, String), String>,
}

impl CacheView<'_> {
    fn sa(&self, (ns, name): &Key) -> Option<Arc<ServiceAccount>> {
        let cached = (self.ctx.caches.service_accounts.get(ns, name))
            .map(|sa| Arc::new(sa.restore(ns, name)));
        self.ctx.sa_writes.view(ns, name, cached)
    }

    fn managed_secret(&self, (ns, name): &Key) -> Option<Arc<Secret>> {
        let cached = (self.ctx.caches.secrets.get(ns, name))
            .map(|secret| Arc::new(secret.restore(ns, name)));
        self.ctx.secret_writes.view(ns, name, cached)
    }
}

/// The keys of a group of an index, with those of our own writes the watch has not delivered yet.
fn with_written(mut keys: Vec<Key>, written: Vec<Key>) -> Vec<Key> {
    keys.extend(written);
    keys.sort_unstable();
    keys.dedup();
    keys
}

impl View for CacheView<'_> {
    fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.managed_secret(&(namespace.to_string(), name.to_string()))
    }

    fn service_accounts(&self, namespace: &str) -> Vec<Arc<ServiceAccount>> {
        // Cached accounts only: one the watch has not delivered yet is planned when it does.
        self.ctx
            .caches
            .service_accounts
            .in_namespace(namespace)
            .into_iter()
            .filter_map(|(name, sa)| {
                let sa = Arc::new(sa.restore(namespace, &name));
                self.ctx.sa_writes.view(namespace, &name, Some(sa))
            })
            .collect()
    }

    fn secrets_of(&self, credential: &str, except: Except<'_>) -> Vec<Arc<Secret>> {
        with_written(
            self.ctx.caches.secrets_by_credential.members(credential),
            self.ctx.secret_writes.written(),
        )
        .iter()
        .filter(|(ns, name)| !except(ns, name))
        .filter_map(|key| self.managed_secret(key))
        .filter(|s| plan::labelled_for(s, credential))
        .collect()
    }

    fn managed_secrets_in(
        &self,
        namespaces: &BTreeSet<String>,
        except: Except<'_>,
    ) -> Vec<Arc<Secret>> {
        // Our own writes are looked through once for all the namespaces: after a large fan-out
        // the overlay may hold thousands of them.
        let written = self
            .ctx
            .secret_writes
            .written()
            .into_iter()
            .filter(|(ns, _)| namespaces.contains(ns))
            .collect();
        let cached = namespaces
            .iter()
            .flat_map(|ns| {
                let cached = self.ctx.caches.secrets.in_namespace(ns);
                cached.into_iter().map(move |(name, _)| (ns.clone(), name))
            })
            .collect();
        with_written(cached, written)
            .iter()
            .filter(|(ns, name)| !except(ns, name))
            .filter_map(|key| self.managed_secret(key))
            .collect()
    }

    fn service_accounts_of(
        &self,
        credential: &str,
        except: Except<'_>,
    ) -> Vec<Arc<ServiceAccount>> {
        with_written(
            self.ctx.caches.sas_by_credential.members(credential),
            self.ctx.sa_writes.written(),
        )
        .iter()
        .filter(|(ns, name)| !except(ns, name))
        .filter_map(|key| self.sa(key))
        .filter(|sa| !service_accounts::owned_by(sa, credential).is_empty())
        .collect()
    }

    fn source_of(&self, namespace: &str, name: &str) -> Option<String> {
        self.sources
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    fn known_conflict(&self, namespace: &str, name: &str) -> Option<Option<String>> {
        let conflicts = self.ctx.conflicts.lock().expect("conflicts lock");
        let (at, message) = conflicts.get(&(namespace.to_string(), name.to_string()))?;
        Some((at.elapsed() < CONFLICT_RECHECK).then(|| message.clone()))
    }
}
