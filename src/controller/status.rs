//! Status of a RegistryCredential: kstatus-compatible conditions, counts and failures.
//!
//! Built to be stable: the same situation yields an equal status, `lastTransitionTime` moves only
//! when a condition's status flips, and nothing in it changes on every pass, so a status write
//! (which triggers a watch event) happens only when something really changed.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

use crate::api::{NamespaceFailure, RegistryCredentialStatus};

/// At most this many failures are listed in status.
pub(crate) const MAX_FAILURES: usize = 10;

/// The outcome of a reconcile, before it becomes a status.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Report {
    pub(crate) ready: bool,
    /// PascalCase reason of the Ready condition.
    pub(crate) reason: String,
    pub(crate) message: String,
    /// Waiting for a human (bad source, conflicts) rather than for the operator to finish.
    pub(crate) stalled: bool,
    pub(crate) secret_name: String,
    pub(crate) targets: u32,
    pub(crate) synced: u32,
    pub(crate) patched_service_accounts: u32,
    pub(crate) failures: Vec<NamespaceFailure>,
    /// Version of the source now in every copy; `None` keeps the previous value.
    pub(crate) source_version: Option<String>,
    /// The `CredentialsValid` condition.
    pub(crate) credentials: CredentialsCondition,
    /// Pods awaiting recovery; `None` keeps the previous count.
    pub(crate) pods_awaiting_recovery: Option<u32>,
    /// Registry keys of the source the kubelet will not match as written, each with why
    /// (`UnmatchableRegistryKeys`); `None` keeps the previous condition (source not read).
    pub(crate) key_warnings: Option<Vec<String>>,
    /// `status.credentialExpiresAt`: `None` keeps the previous value, `Some(None)` clears it.
    pub(crate) credential_expires_at: Option<Option<String>>,
}

/// Condition present while the source has registry keys the kubelet will not match as written.
pub(crate) const UNMATCHABLE_KEYS: &str = "UnmatchableRegistryKeys";

/// At most this many keys are named in the `UnmatchableRegistryKeys` message.
const MAX_KEY_WARNINGS: usize = 5;

/// The message of the `UnmatchableRegistryKeys` condition, `None` when every key is fine.
pub(crate) fn key_warnings_message(warnings: &[String]) -> Option<String> {
    let (first, more) = match warnings.len() {
        0 => return None,
        n => (
            &warnings[..n.min(MAX_KEY_WARNINGS)],
            n.saturating_sub(MAX_KEY_WARNINGS),
        ),
    };
    let mut message = format!(
        "the kubelet will not match {} registry key{} as written: {}",
        warnings.len(),
        if warnings.len() == 1 { "" } else { "s" },
        first.join("; ")
    );
    if more > 0 {
        message.push_str(&format!("; and {more} more"));
    }
    Some(message)
}

/// What to do with the `CredentialsValid` condition in this status.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) enum CredentialsCondition {
    /// Verification is off: no such condition.
    #[default]
    Off,
    /// Not checked in this pass: keep the previous one.
    Keep,
    Set {
        valid: bool,
        reason: String,
        message: String,
    },
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    old: &[Condition],
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// The status for `report`, given the status currently stored.
pub(crate) fn build(
    old: Option<&RegistryCredentialStatus>,
    generation: Option<i64>,
    report: &Report,
) -> RegistryCredentialStatus {
    let now = Time(Timestamp::now());
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let mut conditions = vec![condition(
        "Ready",
        report.ready,
        &report.reason,
        &report.message,
        generation,
        old_conditions,
        &now,
    )];
    // kstatus: abnormal-true conditions are present only while they hold.
    if !report.ready {
        let (type_, reason) = if report.stalled {
            ("Stalled", report.reason.as_str())
        } else {
            ("Reconciling", "Progressing")
        };
        conditions.push(condition(
            type_,
            true,
            reason,
            &report.message,
            generation,
            old_conditions,
            &now,
        ));
    }
    match &report.credentials {
        CredentialsCondition::Set {
            valid,
            reason,
            message,
        } => {
            conditions.push(condition(
                "CredentialsValid",
                *valid,
                reason,
                message,
                generation,
                old_conditions,
                &now,
            ));
        }
        CredentialsCondition::Keep => {
            conditions.extend(
                old_conditions
                    .iter()
                    .filter(|c| c.type_ == "CredentialsValid")
                    .cloned(),
            );
        }
        CredentialsCondition::Off => {}
    }
    // Abnormal-true (kstatus): present only while some key is unmatchable.
    match &report.key_warnings {
        Some(warnings) => {
            if let Some(message) = key_warnings_message(warnings) {
                conditions.push(condition(
                    UNMATCHABLE_KEYS,
                    true,
                    "UnmatchableRegistryKey",
                    &message,
                    generation,
                    old_conditions,
                    &now,
                ));
            }
        }
        None => conditions.extend(
            old_conditions
                .iter()
                .filter(|c| c.type_ == UNMATCHABLE_KEYS)
                .cloned(),
        ),
    }
    let mut failures: Vec<NamespaceFailure> = report.failures.clone();
    // Stable order, so that the same failures do not make a new status each pass.
    failures.sort_by(|a, b| (&a.reason, &a.namespace).cmp(&(&b.reason, &b.namespace)));
    failures.truncate(MAX_FAILURES);
    RegistryCredentialStatus {
        observed_generation: generation,
        conditions,
        secret_name: Some(report.secret_name.clone()),
        target_namespaces: report.targets,
        synced_namespaces: report.synced,
        patched_service_accounts: report.patched_service_accounts,
        synced: Some(format!("{}/{}", report.synced, report.targets)),
        synced_source_version: report
            .source_version
            .clone()
            .or_else(|| old.and_then(|s| s.synced_source_version.clone())),
        credential_expires_at: match &report.credential_expires_at {
            Some(at) => at.clone(),
            None => old.and_then(|s| s.credential_expires_at.clone()),
        },
        failures,
        pods_awaiting_recovery: report
            .pods_awaiting_recovery
            .unwrap_or_else(|| old.map_or(0, |s| s.pods_awaiting_recovery)),
    }
}

/// `new` as a JSON merge patch over `old`: a field `new` leaves out (an empty list, a zero count)
/// is sent as `null`, or the stored value would stay.
pub(crate) fn merge_patch(
    old: Option<&RegistryCredentialStatus>,
    new: &RegistryCredentialStatus,
) -> serde_json::Value {
    let mut patch = serde_json::to_value(new).expect("status serializes");
    if let (Some(old), Some(fields)) = (
        old.and_then(|o| serde_json::to_value(o).ok()),
        patch.as_object_mut(),
    ) {
        for key in old.as_object().into_iter().flat_map(|o| o.keys()) {
            fields.entry(key.clone()).or_insert(serde_json::Value::Null);
        }
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(ready: bool, reason: &str, synced: u32) -> Report {
        Report {
            ready,
            reason: reason.into(),
            message: format!("{synced}/3 namespaces in sync"),
            stalled: false,
            secret_name: "acme-pull".into(),
            targets: 3,
            synced,
            patched_service_accounts: synced,
            failures: vec![],
            source_version: Some("42".into()),
            credentials: CredentialsCondition::Off,
            pods_awaiting_recovery: None,
            key_warnings: Some(vec![]),
            credential_expires_at: Some(None),
        }
    }

    #[test]
    fn credential_expiry_is_set_kept_and_cleared() {
        let mut minted = report(true, "Synced", 3);
        minted.credential_expires_at = Some(Some("2026-12-03T21:25:00Z".into()));
        let first = build(None, Some(1), &minted);
        assert_eq!(
            first.credential_expires_at.as_deref(),
            Some("2026-12-03T21:25:00Z")
        );
        assert_eq!(build(Some(&first), Some(1), &minted), first, "stable");
        let mut failing = report(false, "TokenRefreshFailed", 3);
        failing.credential_expires_at = None;
        assert_eq!(
            build(Some(&first), Some(1), &failing)
                .credential_expires_at
                .as_deref(),
            Some("2026-12-03T21:25:00Z"),
            "a failed refresh keeps the expiry of the token in the copies"
        );
        let other = build(Some(&first), Some(1), &report(true, "Synced", 3));
        assert_eq!(other.credential_expires_at, None);
        assert_eq!(
            merge_patch(Some(&first), &other)["credentialExpiresAt"],
            serde_json::Value::Null,
            "removed from the stored status"
        );
    }

    #[test]
    fn unmatchable_keys_condition_is_stable_kept_and_cleared() {
        let mut odd = report(true, "Synced", 3);
        odd.key_warnings = Some(vec![
            r#""R.io": its host has upper-case letters"#.into(),
            r#""r.io/v1": the kubelet keeps /v1"#.into(),
        ]);
        let first = build(None, Some(1), &odd);
        let c = first
            .conditions
            .iter()
            .find(|c| c.type_ == UNMATCHABLE_KEYS)
            .expect("condition");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "UnmatchableRegistryKey")
        );
        assert!(
            c.message
                .starts_with("the kubelet will not match 2 registry keys as written")
        );
        // The same finding: an equal status (no write); not read this pass: kept.
        assert_eq!(build(Some(&first), Some(1), &odd), first);
        let mut unread = odd.clone();
        unread.key_warnings = None;
        assert_eq!(build(Some(&first), Some(1), &unread), first);
        // Fixed: gone.
        let fixed = build(Some(&first), Some(1), &report(true, "Synced", 3));
        assert!(fixed.conditions.iter().all(|c| c.type_ != UNMATCHABLE_KEYS));
        // Many keys: the message names five and counts the rest.
        let many: Vec<String> = (0..8).map(|i| format!("key{i}")).collect();
        let message = key_warnings_message(&many).unwrap();
        assert!(
            message.contains("key4")
                && !message.contains("key5")
                && message.ends_with("and 3 more")
        );
        assert_eq!(key_warnings_message(&[]), None);
    }

    #[test]
    fn same_report_builds_an_equal_status() {
        let first = build(None, Some(1), &report(true, "Synced", 3));
        let second = build(Some(&first), Some(1), &report(true, "Synced", 3));
        assert_eq!(first, second);
        assert_eq!(first.synced.as_deref(), Some("3/3"));
        assert_eq!(
            first.conditions.len(),
            1,
            "no Reconciling/Stalled when ready"
        );
    }

    #[test]
    fn transition_time_moves_only_on_flip() {
        let mut old = build(None, Some(1), &report(false, "Progressing", 1));
        let long_ago = Time("2020-01-01T00:00:00Z".parse().unwrap());
        old.conditions[0].last_transition_time = long_ago.clone();
        let still = build(Some(&old), Some(1), &report(false, "Progressing", 2));
        assert_eq!(
            still.conditions[0].last_transition_time, long_ago,
            "message change is no transition"
        );
        assert_eq!(still.conditions[1].type_, "Reconciling");
        let flipped = build(Some(&old), Some(1), &report(true, "Synced", 3));
        assert_ne!(flipped.conditions[0].last_transition_time, long_ago);
    }

    #[test]
    fn stalled_and_failures_are_capped_and_sorted() {
        let mut r = report(false, "Conflict", 0);
        r.stalled = true;
        r.failures = (0..15)
            .rev()
            .map(|i| NamespaceFailure {
                namespace: format!("ns-{i:02}"),
                reason: "Conflict".into(),
                message: "m".into(),
            })
            .collect();
        let s = build(None, Some(2), &r);
        assert_eq!(s.conditions[1].type_, "Stalled");
        assert_eq!(s.failures.len(), MAX_FAILURES);
        assert_eq!(s.failures[0].namespace, "ns-00");
        assert_eq!(s.conditions[0].observed_generation, Some(2));
    }

    #[test]
    fn fields_that_become_empty_are_removed_by_the_patch() {
        let mut r = report(false, "Conflict", 2);
        r.failures = vec![NamespaceFailure {
            namespace: "a".into(),
            reason: "Conflict".into(),
            message: "m".into(),
        }];
        r.pods_awaiting_recovery = Some(3);
        let old = build(None, Some(1), &r);
        let mut fixed = report(true, "Synced", 3);
        fixed.pods_awaiting_recovery = Some(0);
        let new = build(Some(&old), Some(1), &fixed);
        let patch = merge_patch(Some(&old), &new);
        assert_eq!(patch["failures"], serde_json::Value::Null);
        assert_eq!(patch["podsAwaitingRecovery"], serde_json::Value::Null);
        assert_eq!(patch["syncedNamespaces"], 3);
        assert!(merge_patch(None, &new).get("failures").is_none());
    }

    #[test]
    fn source_version_is_kept_when_not_reported() {
        let first = build(None, Some(1), &report(true, "Synced", 3));
        let mut r = report(false, "InvalidSource", 3);
        r.source_version = None;
        assert_eq!(
            build(Some(&first), Some(1), &r)
                .synced_source_version
                .as_deref(),
            Some("42")
        );
    }
}
