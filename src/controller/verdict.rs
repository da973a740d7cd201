//! The pure end of a pass: from the totals of a credential's namespaces, its Ready verdict (reason,
//! message, whether it waits for a human) and when to look again. No client, no clock.

use std::time::Duration;

use crate::{
    api::NamespaceFailure,
    controller::{apply::NOT_OWNED, contests, ledger::Totals},
};

/// Reason of a same-name Secret we may not touch.
const CONFLICT: &str = "Conflict";

/// The Ready verdict of a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent facts the status and the schedule read, not a state machine"
)]
pub(crate) struct Verdict {
    pub(crate) ready: bool,
    pub(crate) reason: String,
    pub(crate) message: String,
    /// Waiting for a human (conflicts, contested entries) rather than for the operator.
    pub(crate) stalled: bool,
    /// Every failure is a Secret we may not touch: only a person can resolve it.
    pub(crate) only_conflicts: bool,
    /// Not ready only because namespaces wait for their `default` ServiceAccount: its arrival
    /// wakes the credential, nothing is to be retried.
    pub(crate) waiting: bool,
    /// Target namespaces not being deleted.
    pub(crate) targets: u32,
}

fn all(failures: &[NamespaceFailure], reasons: &[&str]) -> bool {
    !failures.is_empty()
        && failures
            .iter()
            .all(|f| reasons.contains(&f.reason.as_str()))
}

/// Judges a pass from its totals. `note` is appended to the message of a ready credential (the
/// token's clock-skew remark).
pub(crate) fn judge(totals: &Totals, note: Option<&str>) -> Verdict {
    let targets = totals.targets.saturating_sub(totals.terminating);
    let failures = &totals.failures;
    let ready = failures.is_empty() && totals.synced == targets;
    let only_conflicts = all(failures, &[CONFLICT, NOT_OWNED]);
    // ...or another tool keeps removing our ServiceAccount entries.
    let stalled = only_conflicts || all(failures, &[CONFLICT, NOT_OWNED, contests::REASON]);
    let synced = totals.synced;
    let (reason, message) = if ready {
        let mut message = format!("{synced}/{targets} namespaces in sync");
        if let Some(note) = note {
            message.push_str("; ");
            message.push_str(note);
        }
        ("Synced".to_string(), message)
    } else {
        let first = failures.first();
        let reason = if only_conflicts {
            if all(failures, &[NOT_OWNED]) {
                NOT_OWNED
            } else {
                CONFLICT
            }
            .to_string()
        } else {
            first.map_or_else(|| "Progressing".into(), |f| f.reason.clone())
        };
        let message = if failures.is_empty() && totals.awaiting_default_account > 0 {
            format!(
                "{synced}/{targets} namespaces in sync, {} waiting for their default ServiceAccount",
                totals.awaiting_default_account
            )
        } else {
            let detail = first
                .map(|f| format!(": {}", f.message))
                .unwrap_or_default();
            format!(
                "{synced}/{targets} namespaces in sync, {} failing{detail}",
                failures.len()
            )
        };
        (reason, message)
    };
    Verdict {
        ready,
        reason,
        message,
        stalled,
        only_conflicts,
        waiting: !ready && failures.is_empty() && totals.awaiting_default_account > 0,
        targets,
    }
}

/// What the time of the next pass depends on besides the verdict.
pub(crate) struct Timers {
    /// The periodic resync of a converged credential.
    pub(crate) resync: Duration,
    /// When a contested ServiceAccount may be restored again, if one is.
    pub(crate) contest_retry: Option<Duration>,
    /// How long a same-name Secret we do not manage is trusted before it is read again.
    pub(crate) conflict_recheck: Duration,
    /// How long namespaces may wait for their `default` ServiceAccount before a pass looks again
    /// without being woken (the account's arrival wakes it at once).
    pub(crate) awaiting_recheck: Duration,
    /// When a minted token is to be refreshed.
    pub(crate) token_refresh: Option<Duration>,
    /// When pod recovery wants to look again.
    pub(crate) recovery_retry: Option<Duration>,
}

/// When to run the next pass. `backoff` is asked only for a pass that failed for the operator's
/// own reasons (it counts the failures).
pub(crate) fn next_pass(
    verdict: &Verdict,
    timers: &Timers,
    backoff: impl FnOnce() -> Duration,
) -> Duration {
    let contest_retry = timers.contest_retry.filter(|_| verdict.stalled);
    let next = if verdict.ready {
        timers.resync
    } else if let Some(retry) = contest_retry {
        // Restore once more when the backoff ends (or on the next change, whichever is first).
        retry.min(timers.conflict_recheck) + Duration::from_secs(1)
    } else if verdict.only_conflicts {
        timers.conflict_recheck + Duration::from_secs(1)
    } else if verdict.waiting {
        timers.awaiting_recheck
    } else {
        backoff()
    };
    [timers.token_refresh, timers.recovery_retry]
        .into_iter()
        .flatten()
        .fold(next, Duration::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(ns: &str, reason: &str) -> NamespaceFailure {
        NamespaceFailure {
            namespace: ns.into(),
            reason: reason.into(),
            message: format!("{reason} in {ns}"),
        }
    }

    fn totals(targets: u32, synced: u32, failures: Vec<NamespaceFailure>) -> Totals {
        Totals {
            targets,
            synced,
            failures,
            ..Totals::default()
        }
    }

    const TIMERS: Timers = Timers {
        resync: Duration::from_secs(600),
        contest_retry: None,
        conflict_recheck: Duration::from_secs(60),
        awaiting_recheck: Duration::from_secs(30),
        token_refresh: None,
        recovery_retry: None,
    };

    fn no_backoff() -> Duration {
        panic!("no backoff expected")
    }

    #[test]
    fn every_target_in_sync_is_ready_and_resyncs_later() {
        let v = judge(&totals(3, 3, vec![]), None);
        assert!(v.ready && !v.stalled);
        assert_eq!(
            (v.reason.as_str(), v.message.as_str()),
            ("Synced", "3/3 namespaces in sync")
        );
        assert_eq!(next_pass(&v, &TIMERS, no_backoff), Duration::from_secs(600));
    }

    #[test]
    fn namespaces_being_deleted_do_not_count_as_targets() {
        let t = Totals {
            terminating: 1,
            ..totals(3, 2, vec![])
        };
        let v = judge(&t, None);
        assert!(v.ready);
        assert_eq!(v.targets, 2);
        assert_eq!(v.message, "2/2 namespaces in sync");
    }

    #[test]
    fn a_namespace_waiting_for_its_default_account_is_progressing_not_failing() {
        let t = Totals {
            awaiting_default_account: 1,
            ..totals(3, 2, vec![])
        };
        let v = judge(&t, None);
        assert!(!v.ready && !v.stalled);
        assert_eq!(v.reason, "Progressing");
        assert_eq!(
            v.message,
            "2/3 namespaces in sync, 1 waiting for their default ServiceAccount"
        );
        // Not a failure to back off from: the account's arrival wakes the credential.
        assert!(v.waiting);
        assert_eq!(next_pass(&v, &TIMERS, no_backoff), Duration::from_secs(30));
    }

    #[test]
    fn a_same_name_secret_we_may_not_touch_stalls_and_is_read_again_after_a_minute() {
        let v = judge(&totals(2, 1, vec![failure("b", "Conflict")]), None);
        assert!(!v.ready && v.stalled && v.only_conflicts);
        assert_eq!(v.reason, "Conflict");
        assert_eq!(
            v.message,
            "1/2 namespaces in sync, 1 failing: Conflict in b"
        );
        assert_eq!(next_pass(&v, &TIMERS, no_backoff), Duration::from_secs(61));
    }

    #[test]
    fn lookalike_copies_alone_are_reported_as_not_owned() {
        let v = judge(
            &totals(2, 0, vec![failure("a", NOT_OWNED), failure("b", NOT_OWNED)]),
            None,
        );
        assert_eq!(v.reason, NOT_OWNED);
        assert!(v.stalled);
        let mixed = judge(
            &totals(
                2,
                0,
                vec![failure("a", NOT_OWNED), failure("b", "Conflict")],
            ),
            None,
        );
        assert_eq!(mixed.reason, "Conflict");
    }

    #[test]
    fn a_contested_account_stalls_and_is_restored_when_its_backoff_ends() {
        let v = judge(&totals(1, 0, vec![failure("a", contests::REASON)]), None);
        assert!(v.stalled && !v.only_conflicts);
        assert_eq!(v.reason, contests::REASON);
        let timers = Timers {
            contest_retry: Some(Duration::from_secs(20)),
            ..TIMERS
        };
        assert_eq!(next_pass(&v, &timers, no_backoff), Duration::from_secs(21));
        // Never later than the conflict recheck.
        let timers = Timers {
            contest_retry: Some(Duration::from_secs(300)),
            ..TIMERS
        };
        assert_eq!(next_pass(&v, &timers, no_backoff), Duration::from_secs(61));
    }

    #[test]
    fn a_refused_write_is_not_stalled_and_backs_off() {
        let v = judge(
            &totals(
                2,
                1,
                vec![failure("b", "Forbidden"), failure("c", "Conflict")],
            ),
            None,
        );
        assert!(!v.ready && !v.stalled && !v.only_conflicts);
        assert_eq!(v.reason, "Forbidden", "the first failure names the reason");
        assert_eq!(
            next_pass(&v, &TIMERS, || Duration::from_secs(4)),
            Duration::from_secs(4)
        );
    }

    #[test]
    fn a_failed_cleanup_keeps_the_credential_from_ready_even_with_every_target_synced() {
        let v = judge(&totals(2, 2, vec![failure("gone", "Forbidden")]), None);
        assert!(!v.ready);
        assert_eq!(
            v.message,
            "2/2 namespaces in sync, 1 failing: Forbidden in gone"
        );
    }

    #[test]
    fn a_token_refresh_or_pod_recovery_can_only_bring_the_next_pass_closer() {
        let v = judge(
            &totals(1, 1, vec![]),
            Some("the token's expiry is not in the future"),
        );
        assert!(
            v.message
                .ends_with("; the token's expiry is not in the future")
        );
        let timers = Timers {
            token_refresh: Some(Duration::from_secs(120)),
            recovery_retry: Some(Duration::from_secs(10)),
            ..TIMERS
        };
        assert_eq!(next_pass(&v, &timers, no_backoff), Duration::from_secs(10));
        let timers = Timers {
            token_refresh: Some(Duration::from_secs(7200)),
            ..TIMERS
        };
        assert_eq!(next_pass(&v, &timers, no_backoff), Duration::from_secs(600));
    }

    #[test]
    fn no_targets_is_ready() {
        let v = judge(&totals(0, 0, vec![]), None);
        assert!(v.ready);
        assert_eq!(v.message, "0/0 namespaces in sync");
    }
}
