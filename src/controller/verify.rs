//! Asking the registries whether a credential works, without holding up a pass.
//!
//! A pass only reads the latest result ([`Verifier::condition`]) and, when a check is due (never
//! checked, the source or the CA bundle changed, or the interval elapsed), queues one. The checks
//! run in a task of their own; when one ends, the credential is reconciled again so that its
//! status shows the result. Checkers are built once per CA bundle, off the async workers (the first
//! one reads the system's roots from disk). Results never hold a credential.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;
use tracing::debug;

use crate::{
    api::{RegistryCredential, Verification},
    controller::{resolve::ResolvedSource, status::CredentialsCondition},
    dockerconfig::DockerConfig,
    kubelet::RegistryKey,
    remote::registry::Checker,
};

/// How long one registry may take to answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// What a check was of: the same source content with the same CA bundle gives the same answer
/// until the interval elapses.
#[derive(Clone, PartialEq, Eq)]
struct Subject {
    version: String,
    ca_bundle: Option<String>,
}

struct Entry {
    subject: Subject,
    /// When the last check of `subject` was queued.
    queued: Instant,
    running: bool,
    result: Option<CredentialsCondition>,
}

struct Job {
    credential: String,
    subject: Subject,
    data: Vec<u8>,
}

/// The verification state of every credential, and the queue of the task that checks.
pub(crate) struct Verifier {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    jobs: mpsc::UnboundedSender<Job>,
}

impl Verifier {
    /// The verifier and the task that runs its checks; `checked` receives the credential of every
    /// check that ended (to reconcile it again). The task ends when the verifier is dropped.
    pub(crate) fn start(
        forbid_cross_host_realms: bool,
        checked: mpsc::UnboundedSender<ObjectRef<RegistryCredential>>,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let entries = Arc::new(Mutex::new(HashMap::new()));
        let (jobs, queue) = mpsc::unbounded_channel();
        let task = run(queue, entries.clone(), forbid_cross_host_realms, checked);
        (Self { entries, jobs }, task)
    }

    /// The condition to report for `rc` in this pass: the latest result for its current source,
    /// or [`CredentialsCondition::Keep`] while the first check of it runs. Queues a check when one
    /// is due.
    pub(crate) fn condition(
        &self,
        rc: &RegistryCredential,
        resolved: &ResolvedSource,
    ) -> CredentialsCondition {
        let name = rc.metadata.name.clone().unwrap_or_default();
        let Some(verify) = &rc.spec.verify else {
            self.forget(&name);
            return CredentialsCondition::Off;
        };
        let subject = Subject {
            version: resolved.version.clone(),
            ca_bundle: verify.ca_bundle.clone(),
        };
        let mut entries = self.entries.lock().expect("verifier lock");
        let entry = entries.entry(name.clone()).or_insert_with(|| Entry {
            subject: subject.clone(),
            queued: Instant::now(),
            running: false,
            result: None,
        });
        let (due, result) = decide(entry, &subject, interval(verify), Instant::now());
        if due {
            entry.subject = subject.clone();
            entry.queued = Instant::now();
            entry.running = true;
            let job = Job {
                credential: name,
                subject,
                data: resolved.data.clone(),
            };
            // The task outlives every pass; a closed queue only happens at shutdown.
            let _ = self.jobs.send(job);
        }
        result
    }

    /// Drops what is known of a credential (verification turned off, or the credential deleted).
    pub(crate) fn forget(&self, credential: &str) {
        self.entries
            .lock()
            .expect("verifier lock")
            .remove(credential);
    }
}

fn interval(verify: &Verification) -> Duration {
    Duration::from_secs(verify.interval_seconds.max(10).into())
}

/// Whether a check of `subject` is due, and what to report meanwhile. A result of another source
/// version or CA bundle is never reported: it says nothing of the credentials now in the copies.
fn decide(
    entry: &mut Entry,
    subject: &Subject,
    interval: Duration,
    now: Instant,
) -> (bool, CredentialsCondition) {
    if entry.subject != *subject {
        entry.result = None;
        return (true, CredentialsCondition::Keep);
    }
    let result = entry.result.clone().unwrap_or(CredentialsCondition::Keep);
    if entry.running {
        return (false, result);
    }
    let due = entry.result.is_none() || now.duration_since(entry.queued) >= interval;
    (due, result)
}

async fn run(
    mut queue: mpsc::UnboundedReceiver<Job>,
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    forbid_cross_host_realms: bool,
    checked: mpsc::UnboundedSender<ObjectRef<RegistryCredential>>,
) {
    let checkers: Arc<Mutex<HashMap<Option<String>, Checker>>> = Arc::default();
    while let Some(job) = queue.recv().await {
        let (entries, checkers, checked) = (entries.clone(), checkers.clone(), checked.clone());
        // One task per check: a registry that times out holds up no other credential.
        tokio::spawn(async move {
            let checker = checker_for(&checkers, &job.subject.ca_bundle, forbid_cross_host_realms);
            let result = match checker.await {
                Ok(checker) => check(&checker, &job.data).await,
                Err(message) => set(false, "InvalidCABundle", message),
            };
            let mut entries = entries.lock().expect("verifier lock");
            // Stored only if it is still what the credential asks for.
            if let Some(entry) = entries.get_mut(&job.credential)
                && entry.subject == job.subject
            {
                entry.running = false;
                entry.result = Some(result);
                drop(entries);
                debug!(credential = %job.credential, "registry check done");
                let _ = checked.send(ObjectRef::new(&job.credential));
            }
        });
    }
}

/// The checker of a CA bundle, built once, on a blocking thread.
#[allow(clippy::ref_option, reason = "the key of the checkers map")]
async fn checker_for(
    checkers: &Mutex<HashMap<Option<String>, Checker>>,
    ca_bundle: &Option<String>,
    forbid_cross_host_realms: bool,
) -> Result<Checker, String> {
    if let Some(checker) = checkers.lock().expect("checkers lock").get(ca_bundle) {
        return Ok(checker.clone());
    }
    let pem = ca_bundle.clone();
    let built = tokio::task::spawn_blocking(move || {
        Checker::new(pem.as_deref().map(str::as_bytes), CHECK_TIMEOUT)
    })
    .await
    .map_err(|e| format!("building the registry client: {e}"))?
    .map_err(|e| format!("spec.verify.caBundle: {e}"))?
    .forbid_cross_host_realms(forbid_cross_host_realms);
    checkers
        .lock()
        .expect("checkers lock")
        .insert(ca_bundle.clone(), built.clone());
    Ok(built)
}

fn set(valid: bool, reason: &str, message: String) -> CredentialsCondition {
    CredentialsCondition::Set {
        valid,
        reason: reason.into(),
        message,
    }
}

/// Asks each registry of the config whether it accepts its credentials.
async fn check(checker: &Checker, data: &[u8]) -> CredentialsCondition {
    let Ok(config) = DockerConfig::from_dockerconfigjson(data) else {
        return set(
            false,
            "InvalidSource",
            "the source config could not be read".into(),
        );
    };
    // All registries at once: an unreachable one costs its timeout once, not once per registry.
    let mut checks = Vec::new();
    for key in config.registries() {
        let Ok(parsed) = RegistryKey::parse(key) else {
            continue;
        };
        let host = match parsed.port() {
            Some(port) => format!("{}:{port}", parsed.host()),
            None => parsed.host().to_string(),
        };
        // A wildcard key names no single registry; token-only entries have nothing to send.
        let (false, Some(credentials)) = (host.contains('*'), config.credentials(key)) else {
            continue;
        };
        checks.push(async move {
            let outcome = checker.check(&host, &credentials).await;
            (host, outcome)
        });
    }
    let outcomes = futures::future::join_all(checks).await;
    let failure = outcomes
        .iter()
        .find(|(_, checked)| !checked.outcome.ok())
        .map(|(host, checked)| (checked.outcome.reason(), checked.describe(host)));
    // A token service on another host than its registry is named: that is where the
    // credentials went.
    let checked: Vec<String> = outcomes
        .into_iter()
        .map(|(host, checked)| match checked.other_host_realm {
            Some(realm) => format!("{host} (token service on another host: {realm})"),
            None => host,
        })
        .collect();
    match failure {
        Some((reason, message)) => set(false, reason, message),
        None if checked.is_empty() => set(
            true,
            "NotChecked",
            "no entry with a user name and password to check".into(),
        ),
        None => set(
            true,
            "Authenticated",
            format!("accepted by {}", checked.join(", ")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(version: &str) -> Subject {
        Subject {
            version: version.into(),
            ca_bundle: None,
        }
    }

    fn entry(version: &str, queued: Instant, running: bool, valid: Option<bool>) -> Entry {
        Entry {
            subject: subject(version),
            queued,
            running,
            result: valid.map(|v| set(v, "R", "m".into())),
        }
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn a_credential_never_checked_is_checked_and_keeps_its_condition_meanwhile() {
        let now = Instant::now();
        let mut e = entry("v1", now, false, None);
        assert_eq!(
            decide(&mut e, &subject("v1"), MINUTE, now),
            (true, CredentialsCondition::Keep)
        );
    }

    #[test]
    fn a_running_check_is_not_queued_twice() {
        let now = Instant::now();
        let mut e = entry("v1", now.checked_sub(2 * MINUTE).unwrap(), true, Some(true));
        let (due, shown) = decide(&mut e, &subject("v1"), MINUTE, now);
        assert!(!due);
        assert!(matches!(
            shown,
            CredentialsCondition::Set { valid: true, .. }
        ));
    }

    #[test]
    fn a_result_is_reported_until_the_interval_elapses_then_checked_again() {
        let now = Instant::now();
        let mut e = entry(
            "v1",
            now.checked_sub(MINUTE / 2).unwrap(),
            false,
            Some(false),
        );
        let (due, shown) = decide(&mut e, &subject("v1"), MINUTE, now);
        assert!(!due);
        assert!(matches!(
            shown,
            CredentialsCondition::Set { valid: false, .. }
        ));
        let (due, _) = decide(&mut e, &subject("v1"), MINUTE, now + MINUTE);
        assert!(due);
    }

    #[test]
    fn a_rotated_source_is_checked_at_once_and_the_old_result_is_not_shown() {
        let now = Instant::now();
        let mut e = entry("v1", now, true, Some(true));
        assert_eq!(
            decide(&mut e, &subject("v2"), MINUTE, now),
            (true, CredentialsCondition::Keep)
        );
        assert!(e.result.is_none());
        let mut other_ca = subject("v1");
        other_ca.ca_bundle = Some("PEM".into());
        let mut e = entry("v1", now, false, Some(true));
        assert_eq!(
            decide(&mut e, &other_ca, MINUTE, now),
            (true, CredentialsCondition::Keep)
        );
    }
}
