//! What the last passes of each credential found in each namespace, and which namespaces changed
//! since: the memory that lets a watch event in one namespace be reconciled in that namespace
//! alone, at the cost of the objects there rather than of every target.
//!
//! The watch mappers mark the namespace of every event they route to a credential ([`Ledgers::touch`]);
//! events that may concern every namespace (a source Secret, a pod) mark all of them. A pass takes
//! the marks ([`Ledgers::begin`]): a full pass when something beyond those namespaces may have
//! changed, else a pass over the marked namespaces whose results replace theirs in the [`Record`].
//! The status is always built from the whole record, so both kinds of pass report the same way.
//! Pure bookkeeping: no client, no clock of its own.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{api::NamespaceFailure, controller::apply::TargetOutcome};

/// Namespaces that changed since a credential's last pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dirty {
    /// Something that may concern any namespace changed.
    All,
    Namespaces(BTreeSet<String>),
}

impl Default for Dirty {
    fn default() -> Self {
        Dirty::Namespaces(BTreeSet::new())
    }
}

/// What a full pass was computed from: a later pass may work on a few namespaces only while all
/// of it still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Basis {
    pub(crate) uid: String,
    pub(crate) generation: Option<i64>,
    /// The resolved source's version (a digest of the config).
    pub(crate) source_version: String,
}

/// The results of a credential's passes, one per namespace they touched, with running totals:
/// reading them costs the failures, not the targets.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) basis: Basis,
    /// When the next full pass is due (the requeue the last full pass asked for).
    pub(crate) due: Instant,
    /// When the full pass ran.
    full_at: Instant,
    /// Each target namespace and what its work ended in.
    targets: BTreeMap<String, TargetOutcome>,
    /// The sums over `targets`.
    counts: Counts,
    /// The failures among `targets`, by namespace.
    failing: BTreeMap<String, NamespaceFailure>,
    /// Cleanups that did not finish, by namespace.
    cleanup_failures: BTreeMap<String, Vec<NamespaceFailure>>,
    /// Secrets labelled as this credential's copies that are not, by namespace.
    unowned: BTreeMap<String, Vec<NamespaceFailure>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    synced: u32,
    terminating: u32,
    awaiting_default_account: u32,
    patched_service_accounts: u32,
}

impl Counts {
    /// Adds (`sign` 1) or takes away (`sign` -1) one target's outcome.
    fn add(&mut self, outcome: &TargetOutcome, sign: i8) {
        let apply = |n: &mut u32, by: u32| {
            *n = if sign > 0 {
                n.saturating_add(by)
            } else {
                n.saturating_sub(by)
            };
        };
        match outcome {
            TargetOutcome::Synced { service_accounts } => {
                apply(&mut self.synced, 1);
                apply(&mut self.patched_service_accounts, *service_accounts);
            }
            TargetOutcome::Terminating => apply(&mut self.terminating, 1),
            TargetOutcome::AwaitingDefaultAccount => apply(&mut self.awaiting_default_account, 1),
            TargetOutcome::Failed {
                service_accounts, ..
            } => apply(&mut self.patched_service_accounts, *service_accounts),
        }
    }
}

/// What one pass applied: per target namespace, and the findings of its cleanups.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub(crate) targets: Vec<(String, TargetOutcome)>,
    pub(crate) cleanup_failures: Vec<NamespaceFailure>,
    pub(crate) unowned: Vec<NamespaceFailure>,
    /// Namespaces whose Secret was adopted in this pass.
    pub(crate) adopted: Vec<String>,
}

impl Applied {
    /// Whether this pass itself failed somewhere (a write refused, a conflict, a cleanup that did
    /// not finish): then its namespaces alone are not a basis to report on.
    pub(crate) fn failed(&self) -> bool {
        !self.cleanup_failures.is_empty()
            || self
                .targets
                .iter()
                .any(|(_, t)| matches!(t, TargetOutcome::Failed { .. }))
    }
}

/// The totals a status is written from.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Target namespaces, those being deleted included.
    pub(crate) targets: u32,
    pub(crate) synced: u32,
    pub(crate) terminating: u32,
    /// Namespaces whose `default` ServiceAccount has not reached the cache yet.
    pub(crate) awaiting_default_account: u32,
    pub(crate) patched_service_accounts: u32,
    /// Failures in target namespaces and of cleanups, by namespace.
    pub(crate) failures: Vec<NamespaceFailure>,
    /// Secrets outside the targets that carry our labels without being ours: reported only.
    pub(crate) unowned: Vec<NamespaceFailure>,
}

impl Record {
    /// The record of a full pass.
    pub(crate) fn new(basis: Basis, due: Instant, applied: &Applied) -> Self {
        let mut record = Record {
            basis,
            due,
            full_at: Instant::now(),
            targets: BTreeMap::new(),
            counts: Counts::default(),
            failing: BTreeMap::new(),
            cleanup_failures: BTreeMap::new(),
            unowned: BTreeMap::new(),
        };
        record.update(&BTreeSet::new(), applied);
        record
    }

    fn remove(&mut self, ns: &str) {
        if let Some(old) = self.targets.remove(ns) {
            self.counts.add(&old, -1);
        }
        self.failing.remove(ns);
        self.cleanup_failures.remove(ns);
        self.unowned.remove(ns);
    }

    /// Replaces what the record knew of `namespaces` with what a pass over them found; a
    /// namespace it no longer targets leaves the targets.
    pub(crate) fn update(&mut self, namespaces: &BTreeSet<String>, applied: &Applied) {
        for ns in namespaces {
            self.remove(ns);
        }
        for (ns, outcome) in &applied.targets {
            self.remove(ns);
            self.counts.add(outcome, 1);
            if let TargetOutcome::Failed { failure, .. } = outcome {
                self.failing.insert(ns.clone(), failure.clone());
            }
            self.targets.insert(ns.clone(), outcome.clone());
        }
        for (found, into) in [
            (&applied.cleanup_failures, &mut self.cleanup_failures),
            (&applied.unowned, &mut self.unowned),
        ] {
            for f in found {
                into.entry(f.namespace.clone()).or_default().push(f.clone());
            }
        }
    }

    pub(crate) fn totals(&self) -> Totals {
        Totals {
            targets: u32::try_from(self.targets.len()).unwrap_or(u32::MAX),
            synced: self.counts.synced,
            terminating: self.counts.terminating,
            awaiting_default_account: self.counts.awaiting_default_account,
            patched_service_accounts: self.counts.patched_service_accounts,
            failures: self
                .failing
                .values()
                .cloned()
                .chain(self.cleanup_failures.values().flatten().cloned())
                .collect(),
            unowned: self.unowned.values().flatten().cloned().collect(),
        }
    }
}

/// How a pass is to work.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Every target and everything of the credential's outside them.
    Full,
    /// Only these namespaces: the rest of the record still holds.
    Namespaces(BTreeSet<String>),
}

#[derive(Default)]
struct Entry {
    dirty: Dirty,
    record: Option<Record>,
}

/// Records and marks of every credential, by name.
#[derive(Default)]
pub(crate) struct Ledgers {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Ledgers {
    fn with<T>(&self, credential: &str, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut entries = self.entries.lock().expect("ledgers lock");
        f(entries.entry(credential.to_string()).or_default())
    }

    /// Marks `namespace` as changed for `credential`.
    pub(crate) fn touch(&self, credential: &str, namespace: &str) {
        self.with(credential, |e| {
            if let Dirty::Namespaces(set) = &mut e.dirty {
                set.insert(namespace.to_string());
            }
        });
    }

    /// Marks everything as changed for `credential`.
    pub(crate) fn touch_all(&self, credential: &str) {
        self.with(credential, |e| e.dirty = Dirty::All);
    }

    /// Takes the marks of `credential` and decides the scope of its pass: the marked namespaces
    /// when a record of a full pass on the same `basis` exists and its next full pass is not due
    /// at `now`, else a full pass.
    pub(crate) fn begin(&self, credential: &str, basis: &Basis, now: Instant) -> Scope {
        self.with(credential, |e| {
            let dirty = std::mem::take(&mut e.dirty);
            match (&e.record, dirty) {
                (Some(r), Dirty::Namespaces(set)) if r.basis == *basis && now < r.due => {
                    Scope::Namespaces(set)
                }
                _ => Scope::Full,
            }
        })
    }

    /// Replaces what the record of `credential` knew of `namespaces` with what a pass over them
    /// found: the totals and when the next full pass is due, if there is a record.
    pub(crate) fn update(
        &self,
        credential: &str,
        namespaces: &BTreeSet<String>,
        applied: &Applied,
    ) -> Option<(Totals, Instant)> {
        self.with(credential, |e| {
            let record = e.record.as_mut()?;
            record.update(namespaces, applied);
            Some((record.totals(), record.due))
        })
    }

    /// Everything of `credential` is in sync again: its next full pass is the resync of its last
    /// one (`resync` after it), not an earlier look the full pass asked for. The new due time.
    pub(crate) fn settled(&self, credential: &str, resync: Duration) -> Option<Instant> {
        self.with(credential, |e| {
            let record = e.record.as_mut()?;
            record.due = record.due.max(record.full_at + resync);
            Some(record.due)
        })
    }

    pub(crate) fn keep(&self, credential: &str, record: Record) {
        self.with(credential, |e| e.record = Some(record));
    }

    /// Forgets the record and the marks: the next pass is a full one.
    pub(crate) fn invalidate(&self, credential: &str) {
        self.with(credential, |e| *e = Entry::default());
    }

    /// Forgets a credential that is gone.
    pub(crate) fn forget(&self, credential: &str) {
        self.entries
            .lock()
            .expect("ledgers lock")
            .remove(credential);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basis() -> Basis {
        Basis {
            uid: "u1".into(),
            generation: Some(1),
            source_version: "v1".into(),
        }
    }

    fn synced(ns: &str, sas: u32) -> (String, TargetOutcome) {
        (
            ns.into(),
            TargetOutcome::Synced {
                service_accounts: sas,
            },
        )
    }

    fn failure(ns: &str, reason: &str) -> NamespaceFailure {
        NamespaceFailure {
            namespace: ns.into(),
            reason: reason.into(),
            message: format!("{reason} in {ns}"),
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_string()).collect()
    }

    fn full_record(now: Instant) -> Record {
        let applied = Applied {
            targets: vec![synced("a", 1), synced("b", 2)],
            ..Applied::default()
        };
        Record::new(basis(), now + Duration::from_secs(600), &applied)
    }

    #[test]
    fn the_first_pass_of_a_credential_is_full() {
        let ledgers = Ledgers::default();
        ledgers.touch("rc", "a");
        assert_eq!(ledgers.begin("rc", &basis(), Instant::now()), Scope::Full);
    }

    #[test]
    fn an_event_in_one_namespace_is_reconciled_in_that_namespace_alone() {
        let (ledgers, now) = (Ledgers::default(), Instant::now());
        ledgers.keep("rc", full_record(now));
        ledgers.touch("rc", "new");
        ledgers.touch("rc", "b");
        assert_eq!(
            ledgers.begin("rc", &basis(), now),
            Scope::Namespaces(set(&["b", "new"]))
        );
        // The marks were taken: a pass woken by our own status write works on nothing.
        assert_eq!(
            ledgers.begin("rc", &basis(), now),
            Scope::Namespaces(BTreeSet::new())
        );
    }

    #[test]
    fn a_changed_spec_source_or_object_makes_a_full_pass() {
        let now = Instant::now();
        let changes = [
            Basis {
                generation: Some(2),
                ..basis()
            },
            Basis {
                source_version: "v2".into(),
                ..basis()
            },
            Basis {
                uid: "u2".into(),
                ..basis()
            },
        ];
        for changed in changes {
            let ledgers = Ledgers::default();
            ledgers.keep("rc", full_record(now));
            ledgers.touch("rc", "a");
            assert_eq!(
                ledgers.begin("rc", &changed, now),
                Scope::Full,
                "{changed:?}"
            );
        }
    }

    #[test]
    fn an_event_that_may_concern_every_namespace_makes_a_full_pass() {
        let (ledgers, now) = (Ledgers::default(), Instant::now());
        ledgers.keep("rc", full_record(now));
        ledgers.touch("rc", "a");
        ledgers.touch_all("rc");
        ledgers.touch("rc", "b");
        assert_eq!(ledgers.begin("rc", &basis(), now), Scope::Full);
    }

    #[test]
    fn the_periodic_resync_is_a_full_pass() {
        let (ledgers, now) = (Ledgers::default(), Instant::now());
        ledgers.keep("rc", full_record(now));
        ledgers.touch("rc", "a");
        let later = now + Duration::from_secs(600);
        assert_eq!(ledgers.begin("rc", &basis(), later), Scope::Full);
    }

    #[test]
    fn once_in_sync_the_early_look_of_a_waiting_full_pass_becomes_the_resync() {
        let (ledgers, now) = (Ledgers::default(), Instant::now());
        let waiting = Record::new(basis(), now + Duration::from_secs(30), &Applied::default());
        ledgers.keep("rc", waiting);
        let due = ledgers.settled("rc", Duration::from_secs(600)).unwrap();
        assert!(due >= now + Duration::from_secs(599));
        // Never later than the resync of the last full pass, however many passes settle.
        assert_eq!(ledgers.settled("rc", Duration::from_secs(600)), Some(due));
        ledgers.touch("rc", "a");
        let later = now + Duration::from_secs(60);
        assert_eq!(
            ledgers.begin("rc", &basis(), later),
            Scope::Namespaces(set(&["a"]))
        );
    }

    #[test]
    fn a_forgotten_record_makes_the_next_pass_full() {
        let (ledgers, now) = (Ledgers::default(), Instant::now());
        ledgers.keep("rc", full_record(now));
        ledgers.invalidate("rc");
        assert_eq!(ledgers.begin("rc", &basis(), now), Scope::Full);
    }

    #[test]
    fn a_pass_over_some_namespaces_replaces_only_theirs() {
        let mut record = full_record(Instant::now());
        let applied = Applied {
            targets: vec![
                synced("c", 3),
                (String::from("b"), TargetOutcome::AwaitingDefaultAccount),
            ],
            ..Applied::default()
        };
        record.update(&set(&["b", "c"]), &applied);
        let totals = record.totals();
        assert_eq!(totals.targets, 3);
        assert_eq!(totals.synced, 2);
        assert_eq!(totals.awaiting_default_account, 1);
        assert_eq!(totals.patched_service_accounts, 1 + 3);
    }

    #[test]
    fn a_namespace_no_longer_targeted_leaves_the_counts() {
        let mut record = full_record(Instant::now());
        record.update(&set(&["a"]), &Applied::default());
        let totals = record.totals();
        assert_eq!((totals.targets, totals.synced), (1, 1));
        assert_eq!(totals.patched_service_accounts, 2);
    }

    #[test]
    fn findings_are_replaced_with_their_namespace() {
        let now = Instant::now();
        let applied = Applied {
            targets: vec![(
                "a".into(),
                TargetOutcome::Failed {
                    failure: failure("a", "Conflict"),
                    service_accounts: 0,
                },
            )],
            cleanup_failures: vec![failure("gone", "Forbidden")],
            unowned: vec![failure("elsewhere", crate::controller::apply::NOT_OWNED)],
            adopted: vec![],
        };
        assert!(applied.failed());
        let mut record = Record::new(basis(), now, &applied);
        let totals = record.totals();
        assert_eq!(totals.failures.len(), 2, "{totals:?}");
        assert_eq!(totals.unowned, vec![failure("elsewhere", "NotOwned")]);
        // The cleanup of "gone" finished, the labelled Secret in "elsewhere" was removed.
        record.update(&set(&["gone", "elsewhere"]), &Applied::default());
        let totals = record.totals();
        assert_eq!(totals.failures, vec![failure("a", "Conflict")]);
        assert!(totals.unowned.is_empty());
    }
}
