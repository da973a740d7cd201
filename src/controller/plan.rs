//! The pure middle of a reconcile: from what the caches show, decide which Secrets to create,
//! update or delete and which ServiceAccounts to edit. No client here; every rule is unit-tested.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use k8s_openapi::{
    ByteString,
    api::core::v1::{Secret, ServiceAccount},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::api::ObjectMeta;

use crate::{
    api::{CREDENTIAL_LABEL, DeletionPolicy, MANAGED_BY_LABEL, MANAGER},
    controller::service_accounts::{self, SaEdit, Want},
    dockerconfig::{DOCKER_CONFIG_JSON_KEY, DOCKER_CONFIG_JSON_TYPE},
};

/// What the plan reads: the watch caches with our own recent writes laid over them.
pub(crate) trait View {
    /// A Secret we may manage, by namespace and name (only labelled Secrets are cached).
    fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>>;
    /// The ServiceAccounts of a namespace.
    fn service_accounts(&self, namespace: &str) -> Vec<Arc<ServiceAccount>>;
    /// Every Secret labelled as belonging to `credential`, in any namespace, but those whose
    /// namespace and name `except` accepts (not even read: a pass over thousands of namespaces
    /// rebuilds only the Secrets it may have to clean up).
    fn secrets_of(&self, credential: &str, except: Except<'_>) -> Vec<Arc<Secret>>;
    /// The Secrets of these namespaces labelled as managed by this operator, whichever
    /// credential, but those `except` accepts.
    fn managed_secrets_in(
        &self,
        namespaces: &BTreeSet<String>,
        except: Except<'_>,
    ) -> Vec<Arc<Secret>>;
    /// Every ServiceAccount whose annotation records an entry added for `credential`, but those
    /// `except` accepts.
    fn service_accounts_of(&self, credential: &str, except: Except<'_>)
    -> Vec<Arc<ServiceAccount>>;
    /// A same-name Secret we do not manage found here before, so that we do not try to create over
    /// it on every pass: `Some(Some(message))` while the finding is fresh, `Some(None)` once it is
    /// old enough to be read again.
    fn known_conflict(&self, namespace: &str, name: &str) -> Option<Option<String>>;
    /// A RegistryCredential that reads Secret `namespace/name` as its source, if any. Sources are
    /// never written, adopted or deleted, whatever labels they carry.
    fn source_of(&self, namespace: &str, name: &str) -> Option<String>;
}

/// Objects a lookup leaves out by namespace and name, before it reads them.
pub(crate) type Except<'a> = &'a dyn Fn(&str, &str) -> bool;

/// Leaves nothing out.
pub(crate) fn nothing(_: &str, _: &str) -> bool {
    false
}

/// A view whose ServiceAccounts are a fresh read (for the teardown); everything else comes from
/// `inner`.
pub(crate) struct FreshServiceAccounts<'a, V: View> {
    pub(crate) inner: &'a V,
    pub(crate) service_accounts: Vec<Arc<ServiceAccount>>,
}

impl<V: View> View for FreshServiceAccounts<'_, V> {
    fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.inner.secret(namespace, name)
    }
    fn service_accounts(&self, namespace: &str) -> Vec<Arc<ServiceAccount>> {
        self.service_accounts
            .iter()
            .filter(|sa| sa.metadata.namespace.as_deref() == Some(namespace))
            .cloned()
            .collect()
    }
    fn secrets_of(&self, credential: &str, except: Except<'_>) -> Vec<Arc<Secret>> {
        self.inner.secrets_of(credential, except)
    }
    fn managed_secrets_in(
        &self,
        namespaces: &BTreeSet<String>,
        except: Except<'_>,
    ) -> Vec<Arc<Secret>> {
        self.inner.managed_secrets_in(namespaces, except)
    }
    fn service_accounts_of(
        &self,
        credential: &str,
        except: Except<'_>,
    ) -> Vec<Arc<ServiceAccount>> {
        self.service_accounts
            .iter()
            .filter(|sa| {
                let (ns, name) = (
                    sa.metadata.namespace.as_deref().unwrap_or_default(),
                    sa.metadata.name.as_deref().unwrap_or_default(),
                );
                !except(ns, name) && !service_accounts::owned_by(sa, credential).is_empty()
            })
            .cloned()
            .collect()
    }
    fn known_conflict(&self, namespace: &str, name: &str) -> Option<Option<String>> {
        self.inner.known_conflict(namespace, name)
    }
    fn source_of(&self, namespace: &str, name: &str) -> Option<String> {
        self.inner.source_of(namespace, name)
    }
}

/// Identity of the credential being reconciled.
#[derive(Debug, Clone)]
pub(crate) struct Owner {
    pub(crate) name: String,
    pub(crate) uid: String,
}

impl Owner {
    pub(crate) fn reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: "regcred.dev/v1alpha1".into(),
            kind: "RegistryCredential".into(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: None,
        }
    }
}

/// Whether a Secret carries the label of `credential` (what the managed-Secrets cache is
/// searched by).
pub(crate) fn labelled_for(secret: &Secret, credential: &str) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(CREDENTIAL_LABEL))
        .map(String::as_str)
        == Some(credential)
}

/// Who an existing Secret belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ownership {
    /// It carries this credential's controller ownerReference (by uid).
    Ours,
    /// It carries this credential's labels but not its controller ownerReference: a source
    /// exported from a copy, a decoy, a replacement made by hand. Never written or deleted; reported.
    LabelledOnly,
    /// Managed by this operator for another RegistryCredential.
    OtherCredential(String),
    /// Not managed by this operator.
    Foreign,
}

/// Whether a Secret names the credential with `uid` as its controller.
pub(crate) fn controlled_by(secret: &Secret, uid: &str) -> bool {
    secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == uid && r.controller == Some(true))
}

/// Labels are only a hint (anyone who can write a Secret can set them, and `kubectl get -o yaml`
/// keeps them): a Secret is ours only through our controller ownerReference.
pub(crate) fn ownership(secret: &Secret, owner: &Owner) -> Ownership {
    if controlled_by(secret, &owner.uid) {
        return Ownership::Ours;
    }
    let labels = secret.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    match (label(MANAGED_BY_LABEL), label(CREDENTIAL_LABEL)) {
        (Some(MANAGER), Some(c)) if c == owner.name => Ownership::LabelledOnly,
        (Some(MANAGER), Some(c)) => Ownership::OtherCredential(c.to_string()),
        _ => Ownership::Foreign,
    }
}

/// Why a Secret read just before a deletion may not be deleted, if it may not. All must hold: it
/// is controlled by this credential (uid), it is no credential's source or password, and this
/// operator wrote it (its field manager is in managedFields: a copy made elsewhere and applied by
/// hand is not something we wrote, whatever it carries).
pub(crate) fn undeletable(secret: &Secret, owner: &Owner, is_source: bool) -> Option<&'static str> {
    if is_source {
        return Some("it is read as a source by a RegistryCredential");
    }
    if !controlled_by(secret, &owner.uid) {
        return Some("it does not carry this credential's controller ownerReference");
    }
    let written_by_us = secret
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|m| m.manager.as_deref() == Some(MANAGER));
    (!written_by_us).then_some("the operator did not write it in this namespace")
}

/// The report for a Secret that looks like ours but is not provably ours.
pub(crate) fn not_owned(namespace: &str, name: &str, credential: &str, why: &str) -> String {
    format!(
        "Secret {namespace}/{name} carries the labels of RegistryCredential {credential} but is not its copy \
         ({why}); it is never overwritten or deleted. Delete it or remove its regcred labels"
    )
}

/// The Secret this operator writes into a target namespace.
pub(crate) fn desired_secret(owner: &Owner, namespace: &str, name: &str, data: &[u8]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_string(), MANAGER.to_string()),
                (CREDENTIAL_LABEL.to_string(), owner.name.clone()),
            ])),
            owner_references: Some(vec![owner.reference()]),
            ..Default::default()
        },
        type_: Some(DOCKER_CONFIG_JSON_TYPE.into()),
        data: Some(BTreeMap::from([(
            DOCKER_CONFIG_JSON_KEY.to_string(),
            ByteString(data.to_vec()),
        )])),
        ..Default::default()
    }
}

/// Whether a Secret of ours already carries everything we write. Fields others added (extra
/// labels, annotations, keys) are theirs and are left alone.
pub(crate) fn in_sync(secret: &Secret, owner: &Owner, data: &[u8]) -> bool {
    let labels = secret.metadata.labels.as_ref();
    secret.type_.as_deref() == Some(DOCKER_CONFIG_JSON_TYPE)
        && secret
            .data
            .as_ref()
            .and_then(|d| d.get(DOCKER_CONFIG_JSON_KEY))
            .map(|b| b.0.as_slice())
            == Some(data)
        && labels
            .and_then(|l| l.get(MANAGED_BY_LABEL))
            .map(String::as_str)
            == Some(MANAGER)
        && labels.and_then(|l| l.get(CREDENTIAL_LABEL)) == Some(&owner.name)
        && controlled_by(secret, &owner.uid)
}

/// A JSON merge patch that brings a Secret of ours (or one being adopted) to what we write: our
/// labels, our ownerReference added to any others, the config. It carries the resourceVersion it
/// was computed from, so the API server refuses it (409) if the Secret changed meanwhile. Fields
/// others added stay; the type cannot change in place (it is immutable).
pub(crate) fn update_patch(current: &Secret, owner: &Owner, data: &[u8]) -> serde_json::Value {
    let mut refs = current
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default();
    if !refs.iter().any(|r| r.uid == owner.uid) {
        refs.push(owner.reference());
    }
    serde_json::json!({
        "metadata": {
            "resourceVersion": current.metadata.resource_version,
            "labels": { MANAGED_BY_LABEL: MANAGER, CREDENTIAL_LABEL: owner.name },
            "ownerReferences": refs,
        },
        "data": { DOCKER_CONFIG_JSON_KEY: ByteString(data.to_vec()) },
    })
}

/// The step for the Secret of one target namespace.
#[derive(Debug, Clone)]
pub(crate) enum SecretStep {
    InSync,
    /// Not in the cache: create it (a same-name Secret we do not manage answers 409).
    Create,
    /// Ours but different: patch our fields, with its resourceVersion as precondition.
    Update {
        current: Arc<Secret>,
    },
    /// A foreign Secret was seen here a while ago, or one is cached that is not ours: read it
    /// before deciding.
    Recheck,
    /// Not ours (another RegistryCredential's, or foreign and recently checked): never touched.
    Conflict {
        message: String,
    },
    /// Labelled as our copy without being ours: never touched, reported.
    NotOwned {
        message: String,
    },
}

/// One ServiceAccount write: the account as read, what we want on it, and the edit that gets
/// there. `want` lets a write that lost a race recompute the edit on a fresh read.
#[derive(Debug, Clone)]
pub(crate) struct SaChange {
    pub(crate) service_account: Arc<ServiceAccount>,
    pub(crate) want: Want,
    pub(crate) edit: SaEdit,
}

/// Work in one target namespace: the Secret first, then (only if that succeeded) the
/// ServiceAccount edits.
#[derive(Debug, Clone)]
pub(crate) struct TargetPlan {
    pub(crate) namespace: String,
    pub(crate) secret: SecretStep,
    pub(crate) edits: Vec<SaChange>,
    /// Selected ServiceAccounts that exist, and how many already list the Secret.
    pub(crate) selected_service_accounts: u32,
    pub(crate) listing_service_accounts: u32,
    /// `default` is selected but not cached yet.
    pub(crate) awaiting_default_account: bool,
}

/// Removal work in a namespace that is no longer (or no longer fully) ours: ServiceAccount edits
/// first, then the Secret deletions, so that no ServiceAccount points at a Secret we deleted.
#[derive(Debug, Clone, Default)]
pub(crate) struct CleanupPlan {
    pub(crate) namespace: String,
    pub(crate) edits: Vec<SaChange>,
    pub(crate) delete: Vec<Arc<Secret>>,
    /// With `Orphan`: Secrets whose labels and ownerReference are to be removed.
    pub(crate) release: Vec<Arc<Secret>>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    pub(crate) targets: Vec<TargetPlan>,
    pub(crate) cleanups: Vec<CleanupPlan>,
    /// Secrets labelled as copies of this credential outside its targets that are not ours:
    /// reported, never touched.
    pub(crate) unowned: Vec<Arc<Secret>>,
}

impl Plan {
    /// Number of write requests the plan needs at least.
    pub(crate) fn writes(&self) -> usize {
        self.targets
            .iter()
            .map(|t| {
                usize::from(matches!(
                    t.secret,
                    SecretStep::Create | SecretStep::Update { .. }
                )) + t.edits.len()
            })
            .sum::<usize>()
            + self
                .cleanups
                .iter()
                .map(|c| c.edits.len() + c.delete.len() + c.release.len())
                .sum::<usize>()
    }
}

/// What one credential wants.
pub(crate) struct Desired<'a> {
    pub(crate) owner: &'a Owner,
    pub(crate) secret_name: &'a str,
    pub(crate) data: &'a [u8],
    pub(crate) service_accounts: &'a [String],
    /// Target namespace names, sorted (with `within`, those of its namespaces that are targets).
    pub(crate) targets: &'a [String],
    /// `None` plans the whole cluster; `Some` only these namespaces, everything outside them
    /// being known to be as it should.
    pub(crate) within: Option<&'a BTreeSet<String>>,
}

fn selected(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| p == "*" || p == name)
}

pub(crate) fn is_a_source(namespace: &str, name: &str, credential: &str) -> String {
    format!(
        "Secret {namespace}/{name} is the source of RegistryCredential {credential}; a source is never \
         overwritten or deleted. Choose another secretName or exclude namespace {namespace}"
    )
}

pub(crate) fn held_by_other(namespace: &str, name: &str, credential: &str) -> String {
    format!("Secret {namespace}/{name} is managed by RegistryCredential {credential}")
}

fn push_change(changes: &mut Vec<SaChange>, sa: Arc<ServiceAccount>, want: Want, credential: &str) {
    if let Some(edit) = service_accounts::edit(&sa, credential, &want) {
        changes.push(SaChange {
            service_account: sa,
            want,
            edit,
        });
    }
}

/// Plans one target namespace: its Secret and the edits of its ServiceAccounts.
pub(crate) fn target(desired: &Desired<'_>, view: &impl View, ns: &str) -> TargetPlan {
    let owner = desired.owner;
    let existing = view.secret(ns, desired.secret_name);
    let source_of = view.source_of(ns, desired.secret_name);
    let secret = match existing.as_deref().map(|s| (s, ownership(s, owner))) {
        _ if source_of.is_some() => SecretStep::Conflict {
            message: is_a_source(ns, desired.secret_name, &source_of.unwrap_or_default()),
        },
        None => match view.known_conflict(ns, desired.secret_name) {
            Some(Some(message)) => SecretStep::Conflict { message },
            Some(None) => SecretStep::Recheck,
            None => SecretStep::Create,
        },
        Some((s, Ownership::Ours)) if in_sync(s, owner, desired.data) => SecretStep::InSync,
        Some((_, Ownership::Ours)) => SecretStep::Update {
            current: existing.clone().expect("matched Some"),
        },
        Some((_, Ownership::OtherCredential(c))) => SecretStep::Conflict {
            message: held_by_other(ns, desired.secret_name, &c),
        },
        Some((_, Ownership::LabelledOnly)) => SecretStep::NotOwned {
            message: not_owned(
                ns,
                desired.secret_name,
                &owner.name,
                "no controller ownerReference of this credential",
            ),
        },
        // Only labelled Secrets are cached, so this is one whose labels changed under us.
        Some((_, Ownership::Foreign)) => SecretStep::Recheck,
    };
    let accounts = view.service_accounts(ns);
    let mut target = TargetPlan {
        namespace: ns.to_string(),
        secret,
        edits: Vec::new(),
        selected_service_accounts: 0,
        listing_service_accounts: 0,
        // Every namespace gets its `default` ServiceAccount moments after it appears; until the
        // watch has delivered it, pods created there could miss the Secret, so the namespace
        // is not in sync yet (the account's arrival wakes the credential).
        awaiting_default_account: selected(desired.service_accounts, "default")
            && !accounts
                .iter()
                .any(|sa| sa.metadata.name.as_deref() == Some("default")),
    };
    if !matches!(
        target.secret,
        SecretStep::Conflict { .. } | SecretStep::NotOwned { .. }
    ) {
        for sa in accounts {
            let name = sa.metadata.name.as_deref().unwrap_or_default();
            let want = if selected(desired.service_accounts, name) {
                target.selected_service_accounts += 1;
                if service_accounts::lists(&sa, desired.secret_name) {
                    target.listing_service_accounts += 1;
                }
                Want::Listed(desired.secret_name.to_string())
            } else {
                Want::Removed
            };
            push_change(&mut target.edits, sa, want, &owner.name);
        }
    }
    target
}

/// Plans what is ours outside the desired state: Secrets in namespaces no longer targeted or
/// under an old name, and ServiceAccount entries outside target namespaces (with
/// `desired.within`: in those namespaces only). The plan's `targets` stay empty: a pass plans
/// each target as its turn comes ([`target`]), so that a pass over thousands of namespaces
/// holds the work of a few at a time.
pub(crate) fn cleanup(desired: &Desired<'_>, view: &impl View) -> Plan {
    let owner = desired.owner;
    let mut plan = Plan::default();
    let is_target = |ns: &str| {
        desired
            .targets
            .binary_search_by(|t| t.as_str().cmp(ns))
            .is_ok()
    };
    // What a target namespace should hold is no cleanup candidate, nor is a source.
    let wanted = |ns: &str, name: &str| {
        (name == desired.secret_name && is_target(ns)) || view.source_of(ns, name).is_some()
    };
    // Target namespaces' accounts are handled with the target's own edits.
    let in_target = |ns: &str, _: &str| is_target(ns);
    let mut cleanups: BTreeMap<String, CleanupPlan> = BTreeMap::new();
    let (secrets, sas) = match desired.within {
        None => (
            view.secrets_of(&owner.name, &wanted),
            view.service_accounts_of(&owner.name, &in_target),
        ),
        Some(namespaces) => (
            view.managed_secrets_in(namespaces, &wanted)
                .into_iter()
                .filter(|s| labelled_for(s, &owner.name))
                .collect(),
            namespaces
                .iter()
                .filter(|ns| !is_target(ns))
                .flat_map(|ns| view.service_accounts(ns))
                .filter(|sa| !service_accounts::owned_by(sa, &owner.name).is_empty())
                .collect(),
        ),
    };
    for secret in secrets {
        let ns = secret.metadata.namespace.clone().unwrap_or_default();
        let name = secret.metadata.name.as_deref().unwrap_or_default();
        if wanted(&ns, name) {
            continue;
        }
        match ownership(&secret, owner) {
            Ownership::Ours => cleanups.entry(ns.clone()).or_default().delete.push(secret),
            Ownership::LabelledOnly => plan.unowned.push(secret),
            _ => {}
        }
    }
    for sa in sas {
        let ns = sa.metadata.namespace.clone().unwrap_or_default();
        if is_target(&ns) {
            continue;
        }
        push_change(
            &mut cleanups.entry(ns).or_default().edits,
            sa,
            Want::Removed,
            &owner.name,
        );
    }
    plan.cleanups = cleanups
        .into_iter()
        .map(|(namespace, c)| CleanupPlan { namespace, ..c })
        .collect();
    plan
}

/// Plans the cleanup when the credential is deleted.
pub(crate) fn teardown(owner: &Owner, policy: DeletionPolicy, view: &impl View) -> Plan {
    let want = match policy {
        DeletionPolicy::Delete => Want::Removed,
        DeletionPolicy::Orphan => Want::Released,
    };
    let mut cleanups: BTreeMap<String, CleanupPlan> = BTreeMap::new();
    for sa in view.service_accounts_of(&owner.name, &nothing) {
        let ns = sa.metadata.namespace.clone().unwrap_or_default();
        push_change(
            &mut cleanups.entry(ns).or_default().edits,
            sa,
            want.clone(),
            &owner.name,
        );
    }
    let mut unowned = Vec::new();
    for secret in view.secrets_of(&owner.name, &nothing) {
        let (ns, name) = (
            secret.metadata.namespace.as_deref().unwrap_or_default(),
            secret.metadata.name.as_deref().unwrap_or_default(),
        );
        if view.source_of(ns, name).is_some() {
            continue; // a source labelled as ours (e.g. exported from a copy) stays
        }
        match ownership(&secret, owner) {
            Ownership::Ours => {}
            Ownership::LabelledOnly => {
                unowned.push(secret);
                continue;
            }
            _ => continue,
        }
        let entry = cleanups
            .entry(secret.metadata.namespace.clone().unwrap_or_default())
            .or_default();
        match policy {
            DeletionPolicy::Delete => entry.delete.push(secret),
            DeletionPolicy::Orphan => entry.release.push(secret),
        }
    }
    Plan {
        targets: Vec::new(),
        unowned,
        cleanups: cleanups
            .into_iter()
            .map(|(namespace, c)| CleanupPlan { namespace, ..c })
            .collect(),
    }
}

#[cfg(test)]
mod tests;
