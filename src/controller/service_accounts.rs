//! Edits of a ServiceAccount's `imagePullSecrets`.
//!
//! The list is atomic in the Kubernetes API: a write replaces it whole. So an edit starts from the
//! list as read (with its resourceVersion, which the write carries as a precondition), adds or
//! removes only this operator's entry and keeps every other entry in place and in order.
//!
//! Which entries are ours is recorded on the ServiceAccount itself, in the annotation
//! `regcred.dev/image-pull-secrets: "<credential>/<secret>,..."`, written in the same request as
//! the list. An entry that was there before us is never claimed and never removed.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{LocalObjectReference, ServiceAccount};
use serde_json::json;

use crate::api::PULL_SECRETS_ANNOTATION;

/// `(credential, secret name)` pairs recorded in the annotation.
fn owned_pairs(sa: &ServiceAccount) -> BTreeSet<(String, String)> {
    sa.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PULL_SECRETS_ANNOTATION))
        .map(|v| {
            v.split(',')
                .filter_map(|pair| pair.trim().split_once('/'))
                .map(|(c, s)| (c.to_string(), s.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The credentials whose entries the annotation of this ServiceAccount records.
pub(crate) fn credentials_recorded(sa: &ServiceAccount) -> Vec<String> {
    let credentials: BTreeSet<String> = owned_pairs(sa).into_iter().map(|(c, _)| c).collect();
    credentials.into_iter().collect()
}

/// Secret names that `credential` added to this ServiceAccount.
pub(crate) fn owned_by(sa: &ServiceAccount, credential: &str) -> Vec<String> {
    owned_pairs(sa)
        .into_iter()
        .filter(|(c, _)| c == credential)
        .map(|(_, s)| s)
        .collect()
}

/// Whether `imagePullSecrets` lists `secret`.
pub(crate) fn lists(sa: &ServiceAccount, secret: &str) -> bool {
    sa.image_pull_secrets
        .iter()
        .flatten()
        .any(|r| r.name == secret)
}

/// Whether bringing `sa` to `want` puts back an entry that our annotation still records as
/// `credential`'s: someone else removed the entry (see [`crate::controller::contests`]).
pub(crate) fn restores(sa: &ServiceAccount, credential: &str, want: &Want) -> bool {
    match want {
        Want::Listed(name) => {
            !lists(sa, name) && owned_by(sa, credential).iter().any(|s| s == name)
        }
        Want::Removed | Want::Released => false,
    }
}

/// What a credential wants on one ServiceAccount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Want {
    /// List this Secret (and own the entry, unless it was there before us).
    Listed(String),
    /// Remove every entry this credential added.
    Removed,
    /// Keep the entries but forget that they are ours (deletion with `Orphan`).
    Released,
}

/// A change to one ServiceAccount: the full new list and the new annotation value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SaEdit {
    pub(crate) image_pull_secrets: Vec<LocalObjectReference>,
    /// `None` removes the annotation.
    pub(crate) annotation: Option<String>,
}

impl SaEdit {
    /// A JSON merge patch carrying the resourceVersion the edit was computed from: the API server
    /// rejects it with 409 Conflict if the ServiceAccount changed since it was read.
    pub(crate) fn merge_patch(&self, resource_version: &str) -> serde_json::Value {
        json!({
            "metadata": {
                "resourceVersion": resource_version,
                "annotations": { PULL_SECRETS_ANNOTATION: self.annotation },
            },
            "imagePullSecrets": self.image_pull_secrets,
        })
    }
}

/// The edit that brings `sa` to what `credential` wants, or `None` if it already is.
pub(crate) fn edit(sa: &ServiceAccount, credential: &str, want: &Want) -> Option<SaEdit> {
    let mut pairs = owned_pairs(sa);
    let mut list: Vec<LocalObjectReference> = sa.image_pull_secrets.clone().unwrap_or_default();
    let before = (pairs.clone(), list.clone());

    let keep = match want {
        Want::Listed(name) => Some(name.as_str()),
        Want::Removed | Want::Released => None,
    };
    for secret in owned_by(sa, credential) {
        if Some(secret.as_str()) == keep {
            continue;
        }
        if *want != Want::Released {
            list.retain(|r| r.name != secret);
        }
        pairs.remove(&(credential.to_string(), secret));
    }
    if let Want::Listed(name) = want {
        let name = name.as_str();
        let ours = pairs.contains(&(credential.to_string(), name.to_string()));
        match list.iter().position(|r| r.name == name) {
            None => {
                list.push(LocalObjectReference {
                    name: name.to_string(),
                });
                pairs.insert((credential.to_string(), name.to_string()));
            }
            Some(first) if ours => {
                // Exactly once: drop duplicates of our own entry after the first.
                let mut index = 0;
                list.retain(|r| {
                    let keep = r.name != name || index == first;
                    index += 1;
                    keep
                });
            }
            Some(_) => {} // listed before we came: not ours, leave it be
        }
    }

    if (pairs.clone(), list.clone()) == before {
        return None;
    }
    let annotation = (!pairs.is_empty()).then(|| {
        pairs
            .iter()
            .map(|(c, s)| format!("{c}/{s}"))
            .collect::<Vec<_>>()
            .join(",")
    });
    Some(SaEdit {
        image_pull_secrets: list,
        annotation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::service_account;

    /// The `default` ServiceAccount; no entries means no list at all, as a new one has.
    fn sa(entries: &[&str], annotation: Option<&str>) -> ServiceAccount {
        let mut sa = service_account("", "default", entries);
        if entries.is_empty() {
            sa.image_pull_secrets = None;
        }
        sa.metadata.annotations =
            annotation.map(|a| [(PULL_SECRETS_ANNOTATION.to_string(), a.to_string())].into());
        sa
    }

    fn names(edit: &SaEdit) -> Vec<&str> {
        edit.image_pull_secrets
            .iter()
            .map(|r| r.name.as_str())
            .collect()
    }

    #[test]
    fn adds_entry_at_the_end_keeping_foreign_entries_in_order() {
        let e = edit(
            &sa(&["z-other", "a-other"], None),
            "acme",
            &Want::Listed("acme-pull".into()),
        )
        .unwrap();
        assert_eq!(names(&e), ["z-other", "a-other", "acme-pull"]);
        assert_eq!(e.annotation.as_deref(), Some("acme/acme-pull"));
    }

    #[test]
    fn no_edit_when_already_listed_and_owned() {
        assert_eq!(
            edit(
                &sa(&["x", "acme-pull"], Some("acme/acme-pull")),
                "acme",
                &Want::Listed("acme-pull".into())
            ),
            None
        );
    }

    #[test]
    fn foreign_entry_with_our_name_is_not_claimed() {
        assert_eq!(
            edit(
                &sa(&["acme-pull"], None),
                "acme",
                &Want::Listed("acme-pull".into())
            ),
            None
        );
        // ...and so never removed.
        assert_eq!(
            edit(&sa(&["acme-pull"], None), "acme", &Want::Removed),
            None
        );
    }

    #[test]
    fn owned_entry_removed_by_hand_is_restored() {
        let e = edit(
            &sa(&["x"], Some("acme/acme-pull")),
            "acme",
            &Want::Listed("acme-pull".into()),
        )
        .unwrap();
        assert_eq!(names(&e), ["x", "acme-pull"]);
    }

    #[test]
    fn duplicates_of_our_entry_collapse_to_the_first() {
        let e = edit(
            &sa(&["acme-pull", "x", "acme-pull"], Some("acme/acme-pull")),
            "acme",
            &Want::Listed("acme-pull".into()),
        )
        .unwrap();
        assert_eq!(names(&e), ["acme-pull", "x"]);
    }

    #[test]
    fn removal_takes_only_our_entries_and_keeps_other_credentials_pairs() {
        let s = sa(
            &["a", "acme-pull", "b", "other-pull"],
            Some("acme/acme-pull,other/other-pull"),
        );
        let e = edit(&s, "acme", &Want::Removed).unwrap();
        assert_eq!(names(&e), ["a", "b", "other-pull"]);
        assert_eq!(e.annotation.as_deref(), Some("other/other-pull"));
    }

    #[test]
    fn removal_of_last_pair_drops_annotation() {
        let e = edit(
            &sa(&["a", "acme-pull"], Some("acme/acme-pull")),
            "acme",
            &Want::Removed,
        )
        .unwrap();
        assert_eq!(names(&e), ["a"]);
        assert_eq!(e.annotation, None);
        let patch = e.merge_patch("42");
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert!(patch["metadata"]["annotations"][PULL_SECRETS_ANNOTATION].is_null());
    }

    #[test]
    fn renamed_secret_replaces_old_entry_in_one_edit() {
        let e = edit(
            &sa(&["a", "old-pull", "b"], Some("acme/old-pull")),
            "acme",
            &Want::Listed("new-pull".into()),
        )
        .unwrap();
        assert_eq!(names(&e), ["a", "b", "new-pull"]);
        assert_eq!(e.annotation.as_deref(), Some("acme/new-pull"));
    }

    #[test]
    fn release_keeps_entries_and_drops_ownership() {
        let e = edit(
            &sa(&["a", "acme-pull"], Some("acme/acme-pull")),
            "acme",
            &Want::Released,
        )
        .unwrap();
        assert_eq!(names(&e), ["a", "acme-pull"]);
        assert_eq!(e.annotation, None);
    }

    #[test]
    fn only_putting_back_an_entry_recorded_as_ours_is_a_restoration() {
        let want = Want::Listed("acme-pull".into());
        assert!(restores(&sa(&["x"], Some("acme/acme-pull")), "acme", &want));
        assert!(!restores(&sa(&["x"], None), "acme", &want), "a first add");
        assert!(!restores(
            &sa(&["x", "acme-pull"], Some("acme/acme-pull")),
            "acme",
            &want
        ));
        assert!(!restores(
            &sa(&["x"], Some("other/acme-pull")),
            "acme",
            &want
        ));
        assert!(!restores(
            &sa(&["x"], Some("acme/acme-pull")),
            "acme",
            &Want::Removed
        ));
    }

    #[test]
    fn removed_when_nothing_owned_is_a_no_op() {
        assert_eq!(edit(&sa(&[], None), "acme", &Want::Removed), None);
        assert_eq!(
            edit(&sa(&["x"], Some("other/x")), "acme", &Want::Released),
            None
        );
    }
}
