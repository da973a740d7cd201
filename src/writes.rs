//! How the operator writes to the API server: every create, update and patch names the field
//! manager [`MANAGER`], so `managedFields` tell people (and our own ownership proofs) who wrote
//! what; and a write that loses a race with another writer (409 Conflict) is retried in one
//! place, [`retry_on_conflict`].

use kube::api::{DeleteParams, EvictParams, PatchParams, PostParams, Preconditions};

use crate::api::MANAGER;

/// Parameters of every patch the operator sends.
pub(crate) fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(MANAGER.into()),
        ..PatchParams::default()
    }
}

/// Parameters of every create and replace the operator sends.
pub(crate) fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(MANAGER.into()),
        ..PostParams::default()
    }
}

/// Parameters of every eviction (a create of an `Eviction`).
pub(crate) fn evict_params() -> EvictParams {
    EvictParams {
        post_options: post_params(),
        ..EvictParams::default()
    }
}

/// A delete of exactly the object that was read (same uid, same resourceVersion): anything
/// changed since is answered with 409 and left alone.
pub(crate) fn delete_exactly(
    uid: Option<String>,
    resource_version: Option<String>,
) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version,
        }),
        ..DeleteParams::default()
    }
}

/// An error that may say the write lost a race (409 Conflict).
pub(crate) trait Conflict {
    fn is_conflict(&self) -> bool;
}

impl Conflict for kube::Error {
    fn is_conflict(&self) -> bool {
        matches!(self, kube::Error::Api(s) if s.code == 409)
    }
}

/// Runs `$body` (an attempt, `async` code whose value is a `Result`) until it succeeds, fails
/// otherwise than with a conflict, or has been tried `$attempts` times; the last conflict is
/// returned as it is. `$conflicted` tells the attempt whether the one before it conflicted, so
/// that it reads the object again before it writes. `return` in the body ends the attempt.
///
/// A macro rather than a function taking an async closure: an attempt borrows the caller's
/// state mutably, and such closures do not yet make `Send` futures.
macro_rules! retry_on_conflict {
    ($attempts:expr, |$conflicted:ident| $body:block) => {{
        let attempts: usize = $attempts;
        let mut tries = 0usize;
        let mut $conflicted = false;
        loop {
            tries += 1;
            let result = async { $body }.await;
            match result {
                Err(e) if $crate::writes::Conflict::is_conflict(&e) && tries < attempts => {
                    $conflicted = true;
                }
                done => break done,
            }
        }
    }};
}
pub(crate) use retry_on_conflict;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum E {
        Conflict,
        Other,
    }

    impl Conflict for E {
        fn is_conflict(&self) -> bool {
            *self == E::Conflict
        }
    }

    #[tokio::test]
    async fn a_conflict_is_retried_after_a_fresh_read_and_the_last_one_is_returned() {
        let mut seen = Vec::new();
        let result: Result<(), E> = retry_on_conflict!(3, |conflicted| {
            seen.push(conflicted);
            Err(E::Conflict)
        });
        assert_eq!(result, Err(E::Conflict));
        assert_eq!(seen, [false, true, true]);
    }

    #[tokio::test]
    async fn other_errors_and_successes_end_at_once() {
        let mut tries = 0;
        let result: Result<(), E> = retry_on_conflict!(5, |_conflicted| {
            tries += 1;
            Err(E::Other)
        });
        assert_eq!((result, tries), (Err(E::Other), 1));
        let mut tries = 0;
        let result: Result<u8, E> = retry_on_conflict!(5, |conflicted| {
            tries += 1;
            if conflicted { Ok(7) } else { Err(E::Conflict) }
        });
        assert_eq!((result, tries), (Ok(7), 2));
    }

    #[test]
    fn every_write_names_the_field_manager() {
        assert_eq!(patch_params().field_manager.as_deref(), Some(MANAGER));
        assert_eq!(post_params().field_manager.as_deref(), Some(MANAGER));
    }
}
