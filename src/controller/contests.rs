//! ServiceAccounts on which another writer keeps removing our `imagePullSecrets` entry.
//!
//! A restoration is a write that puts back an entry our annotation still records as ours: someone
//! removed the entry and left our bookkeeping (a GitOps tool applying the ServiceAccount with its
//! own list, say). Restoring at once is right for a one-off edit; against a writer that removes it
//! again every time, it is a hot loop of two controllers. So once one entry has been restored
//! [`MAX_RESTORES`] times within [`WINDOW`], the next removal leaves it alone for a backoff (30 s,
//! doubling up to 10 minutes) and the namespace is reported as `ServiceAccountContested`; after
//! the backoff it is restored once more, and a quiet [`FORGET_AFTER`] resets the backoff.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

/// Stable reason for status, Events and metrics.
pub(crate) const REASON: &str = "ServiceAccountContested";
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
pub(crate) const MAX_RESTORES: usize = 3;
const FIRST_BACKOFF: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Without a restoration for this long, an account starts afresh.
pub(crate) const FORGET_AFTER: Duration = Duration::from_secs(900);

/// `(credential, namespace, ServiceAccount)`.
type Key = (String, String, String);

#[derive(Debug, Default)]
struct Entry {
    restores: VecDeque<Instant>,
    /// Leave the entry alone until then.
    until: Option<Instant>,
    /// Backoffs so far: the next one is twice as long.
    rounds: u32,
    last: Option<Instant>,
    /// What the report says during the current backoff.
    note: Option<String>,
}

/// The verdict on a restoration about to be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Go ahead (it has been counted).
    Restore,
    /// Contested: do not write; try again after this long.
    BackOff {
        remaining: Duration,
        /// True when this restoration started the backoff (report it now).
        started: bool,
    },
}

#[derive(Default)]
pub(crate) struct Contests {
    entries: Mutex<HashMap<Key, Entry>>,
}

impl Contests {
    /// Called before restoring `credential`'s entry on `namespace/name`.
    pub(crate) fn restoring(
        &self,
        credential: &str,
        namespace: &str,
        name: &str,
        now: Instant,
    ) -> Verdict {
        let mut entries = self.entries.lock().expect("contests lock");
        entries.retain(|_, e| {
            e.until.is_some_and(|u| u > now)
                || e.last.is_some_and(|l| now.duration_since(l) < FORGET_AFTER)
        });
        let e = entries
            .entry((credential.into(), namespace.into(), name.into()))
            .or_default();
        if let Some(until) = e.until {
            if until > now {
                return Verdict::BackOff {
                    remaining: until - now,
                    started: false,
                };
            }
            e.until = None;
            e.note = None;
        }
        e.last = Some(now);
        while e
            .restores
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            e.restores.pop_front();
        }
        if e.restores.len() < MAX_RESTORES {
            e.restores.push_back(now);
            return Verdict::Restore;
        }
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << e.rounds.min(5))
            .min(MAX_BACKOFF);
        e.rounds += 1;
        e.restores.clear();
        e.until = Some(now + backoff);
        Verdict::BackOff {
            remaining: backoff,
            started: true,
        }
    }

    /// Records what to report about the account during its current backoff.
    pub(crate) fn note(&self, credential: &str, namespace: &str, name: &str, note: String) {
        if let Some(e) = self.entries.lock().expect("contests lock").get_mut(&(
            credential.into(),
            namespace.into(),
            name.into(),
        )) {
            e.note = Some(note);
        }
    }

    pub(crate) fn noted(&self, credential: &str, namespace: &str, name: &str) -> Option<String> {
        self.entries
            .lock()
            .expect("contests lock")
            .get(&(credential.into(), namespace.into(), name.into()))
            .and_then(|e| e.note.clone())
    }

    /// The shortest remaining backoff of `credential`'s contested accounts, if any.
    pub(crate) fn next_retry(&self, credential: &str, now: Instant) -> Option<Duration> {
        self.entries
            .lock()
            .expect("contests lock")
            .iter()
            .filter(|((c, _, _), _)| c == credential)
            .filter_map(|(_, e)| e.until.filter(|u| *u > now).map(|u| u - now))
            .min()
    }

    /// Forgets a credential (deleted).
    pub(crate) fn forget(&self, credential: &str) {
        self.entries
            .lock()
            .expect("contests lock")
            .retain(|(c, _, _), _| c != credential);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_few_restorations_go_ahead_then_the_entry_is_left_alone() {
        let c = Contests::default();
        let t = Instant::now();
        for i in 0..MAX_RESTORES as u64 {
            assert_eq!(
                c.restoring("acme", "ns", "default", t + secs(i)),
                Verdict::Restore
            );
        }
        assert_eq!(
            c.restoring("acme", "ns", "default", t + secs(5)),
            Verdict::BackOff {
                remaining: FIRST_BACKOFF,
                started: true
            }
        );
        assert_eq!(
            c.restoring("acme", "ns", "default", t + secs(15)),
            Verdict::BackOff {
                remaining: secs(20),
                started: false
            }
        );
        assert_eq!(c.next_retry("acme", t + secs(15)), Some(secs(20)));
        assert_eq!(c.next_retry("other", t + secs(15)), None);
        // Other accounts and other credentials are not affected.
        assert_eq!(
            c.restoring("acme", "ns", "builder", t + secs(15)),
            Verdict::Restore
        );
        assert_eq!(
            c.restoring("other", "ns", "default", t + secs(15)),
            Verdict::Restore
        );
    }

    #[test]
    fn restorations_spread_beyond_the_window_never_back_off() {
        let c = Contests::default();
        let t = Instant::now();
        for i in 0..20u64 {
            assert_eq!(
                c.restoring("acme", "ns", "default", t + secs(i * 21)),
                Verdict::Restore,
                "restoration {i}"
            );
        }
    }

    #[test]
    fn backoff_doubles_while_the_fight_goes_on_and_resets_after_a_quiet_time() {
        let c = Contests::default();
        let mut t = Instant::now();
        let mut backoffs = Vec::new();
        for _ in 0..7 {
            loop {
                match c.restoring("acme", "ns", "default", t) {
                    Verdict::Restore => t += secs(1),
                    Verdict::BackOff { remaining, started } => {
                        assert!(started);
                        backoffs.push(remaining.as_secs());
                        t += remaining;
                        break;
                    }
                }
            }
        }
        assert_eq!(backoffs, [30, 60, 120, 240, 480, 600, 600]);
        t += FORGET_AFTER;
        for _ in 0..MAX_RESTORES {
            assert_eq!(c.restoring("acme", "ns", "default", t), Verdict::Restore);
        }
        assert_eq!(
            c.restoring("acme", "ns", "default", t),
            Verdict::BackOff {
                remaining: FIRST_BACKOFF,
                started: true
            }
        );
        c.forget("acme");
        assert_eq!(c.next_retry("acme", t), None);
    }
}
