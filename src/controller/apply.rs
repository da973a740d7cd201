//! Carrying out a plan against the API: Secrets first, then ServiceAccount edits, namespaces in
//! parallel (bounded). Every ServiceAccount write carries the resourceVersion it was computed
//! from; on 409 the account is read again and the edit recomputed.

use std::{sync::Arc, time::Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::{Api, api::Patch};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::writes::{Conflict as _, delete_exactly, patch_params, post_params, retry_on_conflict};
use crate::{
    api::{
        CREDENTIAL_LABEL, ConflictPolicy, CredentialSource, MANAGED_BY_LABEL, MANAGER,
        NamespaceFailure,
    },
    controller::cache::overlay,
    controller::contests::Verdict,
    controller::context::Context,
    controller::error::{Error, namespace_terminating, status_code},
    controller::ledger::Applied,
    controller::plan::{
        self, CleanupPlan, Owner, Ownership, Plan, SaChange, SecretStep, TargetPlan,
    },
    controller::resolve,
    controller::service_accounts::{self, Want},
    dockerconfig::{DOCKER_CONFIG_JSON_TYPE, DOCKERCFG_TYPE},
};

/// Reason of a Secret that carries our labels without being provably ours.
pub(crate) const NOT_OWNED: &str = "NotOwned";

/// Attempts at a ServiceAccount write that keeps losing races with other writers.
const SA_WRITE_ATTEMPTS: usize = 8;

impl NamespaceFailure {
    fn conflict(namespace: &str, message: String) -> Self {
        NamespaceFailure {
            namespace: namespace.into(),
            reason: "Conflict".into(),
            message,
        }
    }

    fn not_owned(namespace: &str, message: String) -> Self {
        NamespaceFailure {
            namespace: namespace.into(),
            reason: NOT_OWNED.into(),
            message,
        }
    }

    /// The Secret changed while we wrote it; the next pass decides from the watch.
    fn write_conflict(namespace: &str, message: String) -> Self {
        NamespaceFailure {
            namespace: namespace.into(),
            reason: "WriteConflict".into(),
            message,
        }
    }

    fn from_error(namespace: &str, e: &Error) -> Self {
        NamespaceFailure {
            namespace: namespace.into(),
            reason: e.reason().into(),
            message: e.to_string(),
        }
    }
}

/// Result of the work in one target namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TargetOutcome {
    /// Secret in place, every selected ServiceAccount lists it.
    Synced { service_accounts: u32 },
    /// The namespace is being deleted: skipped quietly.
    Terminating,
    /// Written, but its `default` ServiceAccount is not in the cache yet.
    AwaitingDefaultAccount,
    Failed {
        failure: NamespaceFailure,
        service_accounts: u32,
    },
}

/// Everything apply needs to know about the credential besides the plan.
pub(crate) struct Apply<'a> {
    pub(crate) ctx: &'a Context,
    pub(crate) owner: &'a Owner,
    pub(crate) secret_name: &'a str,
    pub(crate) data: &'a [u8],
    pub(crate) conflict_policy: ConflictPolicy,
    /// The credential's own source: never deleted, whatever the caches say.
    pub(crate) source: &'a CredentialSource,
}

impl Apply<'_> {
    /// Carries out `plan`, its targets and then `targets` (planned as the stream pulls them),
    /// then its cleanups.
    pub(crate) async fn run(
        &self,
        targets: impl Iterator<Item = TargetPlan> + Send,
        plan: Plan,
    ) -> Applied {
        let concurrency = self.ctx.settings.write_concurrency.max(1);
        let mut applied = Applied::default();
        let results: Vec<(String, TargetOutcome, Option<String>)> =
            stream::iter(plan.targets.into_iter().chain(targets))
                .map(|t| async {
                    let ns = t.namespace.clone();
                    let (outcome, adopted) = self.target(t).await;
                    (ns, outcome, adopted)
                })
                .buffer_unordered(concurrency)
                // Boxed where its lifetimes are concrete: the controller's future must be Send.
                .boxed()
                .collect()
                .await;
        for (ns, outcome, adopted) in results {
            applied.targets.push((ns, outcome));
            applied.adopted.extend(adopted);
        }
        applied.adopted.sort_unstable();
        let cleaned = self.cleanups(plan.cleanups).await;
        applied.cleanup_failures = cleaned.failures;
        applied.unowned = cleaned.unowned;
        applied.unowned.extend(plan.unowned.iter().map(|s| {
            let (ns, name) = (
                s.metadata.namespace.as_deref().unwrap_or_default(),
                s.metadata.name.as_deref().unwrap_or_default(),
            );
            NamespaceFailure::not_owned(
                ns,
                plan::not_owned(
                    ns,
                    name,
                    &self.owner.name,
                    "no controller ownerReference of this credential",
                ),
            )
        }));
        applied
    }

    /// Runs cleanups only (teardown).
    pub(crate) async fn cleanups(&self, cleanups: Vec<CleanupPlan>) -> Cleaned {
        let concurrency = self.ctx.settings.write_concurrency.max(1);
        let results: Vec<_> = stream::iter(cleanups)
            .map(|c| self.cleanup(c))
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut cleaned = Cleaned::default();
        for r in results {
            match r {
                Ok(unowned) => cleaned.unowned.extend(unowned),
                Err(f) => cleaned.failures.push(f),
            }
        }
        cleaned
    }

    /// Whether Secret `ns/name` is read as a source or password by this or any other credential.
    fn is_source(&self, ns: &str, name: &str) -> bool {
        resolve::referenced_secrets(self.source).contains(&(ns, name))
            || self.ctx.source_reader(ns, name).is_some()
    }

    /// Returns the outcome and, if the Secret was adopted, the namespace.
    async fn target(&self, target: TargetPlan) -> (TargetOutcome, Option<String>) {
        let ns = target.namespace.clone();
        let listing = target.listing_service_accounts;
        let failed = |failure: NamespaceFailure| TargetOutcome::Failed {
            failure,
            service_accounts: listing,
        };
        let adopted = match self.secret(&ns, target.secret).await {
            Ok(done) => (done == SecretDone::Adopted).then(|| ns.clone()),
            Err(StepError::Terminating) => return (TargetOutcome::Terminating, None),
            Err(StepError::Failed(f)) => return (failed(f), None),
        };
        for change in target.edits {
            match write_service_account(self.ctx, &self.owner.name, change).await {
                Ok(()) => {}
                Err(Error::Api { source, .. }) if namespace_terminating(&source) => {
                    return (TargetOutcome::Terminating, None);
                }
                Err(e) => return (failed(NamespaceFailure::from_error(&ns, &e)), adopted),
            }
        }
        if target.awaiting_default_account {
            return (TargetOutcome::AwaitingDefaultAccount, adopted);
        }
        (
            TargetOutcome::Synced {
                service_accounts: target.selected_service_accounts,
            },
            adopted,
        )
    }

    async fn secret(&self, ns: &str, step: SecretStep) -> Result<SecretDone, StepError> {
        match step {
            SecretStep::InSync => Ok(SecretDone::Unchanged),
            SecretStep::Conflict { message } => {
                Err(StepError::Failed(NamespaceFailure::conflict(ns, message)))
            }
            SecretStep::NotOwned { message } => {
                Err(StepError::Failed(NamespaceFailure::not_owned(ns, message)))
            }
            SecretStep::Create => self.create(ns, true).await,
            SecretStep::Update { current } => self
                .update(ns, &current, false)
                .await
                .map(|()| SecretDone::Written),
            SecretStep::Recheck => self.recheck(ns).await,
        }
    }

    fn api(&self, ns: &str) -> Api<Secret> {
        Api::namespaced(self.ctx.client.clone(), ns)
    }

    fn desired(&self, ns: &str) -> Secret {
        plan::desired_secret(self.owner, ns, self.secret_name, self.data)
    }

    async fn create(&self, ns: &str, recheck_on_conflict: bool) -> Result<SecretDone, StepError> {
        match self.api(ns).create(&post_params(), &self.desired(ns)).await {
            Ok(created) => {
                debug!(namespace = ns, secret = self.secret_name, "created Secret");
                self.ctx.metrics.write("secrets", "create");
                self.ctx.secret_writes.wrote(created);
                Ok(SecretDone::Written)
            }
            // Boxed: recheck may itself create once (never recursing further).
            Err(e) if status_code(&e) == Some(409) && recheck_on_conflict => {
                Box::pin(self.recheck(ns)).await
            }
            Err(e) => Err(self.step_error(ns, "creating", e)),
        }
    }

    /// Patches our fields onto `current` (ours, or being adopted) with its resourceVersion as
    /// precondition; after a 409 reads it again once. A Secret of another type is replaced.
    async fn update(&self, ns: &str, current: &Secret, adopting: bool) -> Result<(), StepError> {
        if current.type_.as_deref() != Some(DOCKER_CONFIG_JSON_TYPE) {
            return self.replace(ns, current, adopting).await;
        }
        let api = self.api(ns);
        let mut current = std::borrow::Cow::Borrowed(current);
        let written = retry_on_conflict!(2, |conflicted| {
            if conflicted {
                self.ctx.secret_writes.forget(ns, self.secret_name);
                match api.get_opt(self.secret_name).await? {
                    Some(fresh) if plan::ownership(&fresh, self.owner) == Ownership::Ours => {
                        if plan::in_sync(&fresh, self.owner, self.data) {
                            return Ok(Some(fresh));
                        }
                        current = std::borrow::Cow::Owned(fresh);
                    }
                    _ => return Ok(None),
                }
            }
            let patch = plan::update_patch(&current, self.owner, self.data);
            let updated = api
                .patch(self.secret_name, &patch_params(), &Patch::Merge(patch))
                .await?;
            debug!(namespace = ns, secret = self.secret_name, "updated Secret");
            self.ctx.metrics.write("secrets", "patch");
            Ok(Some(updated))
        });
        match written {
            Ok(Some(secret)) => {
                self.ctx.secret_writes.wrote(secret);
                Ok(())
            }
            // Gone or no longer ours after a conflict: the next pass decides from the watch.
            Ok(None) => Err(StepError::Failed(NamespaceFailure::write_conflict(
                ns,
                format!(
                    "updating Secret {ns}/{}: it changed while being updated and is gone or no longer ours",
                    self.secret_name
                ),
            ))),
            Err(e) => {
                self.ctx.secret_writes.forget(ns, self.secret_name);
                Err(self.step_error(ns, "updating", e))
            }
        }
    }

    /// The type of a Secret is immutable: replace it, guarded by its uid and resourceVersion. A
    /// Secret being adopted (conflictPolicy: Adopt said so) is replaced as it is; one of ours only
    /// once proven ours.
    async fn replace(&self, ns: &str, current: &Secret, adopting: bool) -> Result<(), StepError> {
        // The proof is made on the object as the server has it now, as for a deletion: a cached
        // copy carries no managedFields, so it could never show that we wrote it.
        let fresh;
        let current = if adopting {
            current
        } else {
            fresh = self
                .api(ns)
                .get_opt(self.secret_name)
                .await
                .map_err(|e| self.step_error(ns, "reading", e))?;
            let Some(fresh) = fresh
                .as_ref()
                .filter(|f| f.metadata.uid == current.metadata.uid)
            else {
                // Gone or replaced since the plan: the watch tells the next pass.
                self.ctx.secret_writes.forget(ns, self.secret_name);
                return Err(StepError::Failed(NamespaceFailure::write_conflict(
                    ns,
                    format!(
                        "replacing Secret {ns}/{}: it changed while being replaced",
                        self.secret_name
                    ),
                )));
            };
            if let Some(why) =
                plan::undeletable(fresh, self.owner, self.is_source(ns, self.secret_name))
            {
                return Err(StepError::Failed(NamespaceFailure::not_owned(
                    ns,
                    plan::not_owned(ns, self.secret_name, &self.owner.name, why),
                )));
            }
            fresh
        };
        let dp = delete_exactly(
            current.metadata.uid.clone(),
            current.metadata.resource_version.clone(),
        );
        self.api(ns)
            .delete(self.secret_name, &dp)
            .await
            .map_err(|e| self.step_error(ns, "replacing", e))?;
        self.ctx.metrics.write("secrets", "delete");
        self.create(ns, false).await.map(|_| ())
    }

    /// Reads a same-name Secret we could not see in our cache and decides what it is.
    async fn recheck(&self, ns: &str) -> Result<SecretDone, StepError> {
        let existing = self
            .api(ns)
            .get_opt(self.secret_name)
            .await
            .map_err(|e| self.step_error(ns, "reading", e))?;
        let Some(existing) = existing else {
            self.ctx.clear_conflict(ns, self.secret_name);
            return self.create(ns, false).await;
        };
        match plan::ownership(&existing, self.owner) {
            Ownership::Ours => {
                self.ctx.clear_conflict(ns, self.secret_name);
                if plan::in_sync(&existing, self.owner, self.data) {
                    self.ctx.secret_writes.wrote(existing);
                    Ok(SecretDone::Unchanged)
                } else {
                    self.update(ns, &existing, false)
                        .await
                        .map(|()| SecretDone::Written)
                }
            }
            Ownership::LabelledOnly => Err(StepError::Failed(NamespaceFailure::not_owned(
                ns,
                plan::not_owned(
                    ns,
                    self.secret_name,
                    &self.owner.name,
                    "no controller ownerReference of this credential",
                ),
            ))),
            Ownership::OtherCredential(c) => {
                let message = plan::held_by_other(ns, self.secret_name, &c);
                self.ctx.record_conflict(ns, self.secret_name, &message);
                Err(StepError::Failed(NamespaceFailure::conflict(ns, message)))
            }
            Ownership::Foreign => self.foreign(ns, existing).await,
        }
    }

    async fn foreign(&self, ns: &str, existing: Secret) -> Result<SecretDone, StepError> {
        let type_ = existing.type_.as_deref().unwrap_or("Opaque");
        let refuse = |message: String| {
            self.ctx.record_conflict(ns, self.secret_name, &message);
            Err(StepError::Failed(NamespaceFailure::conflict(ns, message)))
        };
        if self.conflict_policy == ConflictPolicy::Skip {
            return refuse(format!(
                "Secret {ns}/{} exists and is not managed by {MANAGER}; left untouched (conflictPolicy: Skip). \
                 Delete it, choose another secretName, or set conflictPolicy: Adopt",
                self.secret_name
            ));
        }
        match type_ {
            // In place; a legacy dockercfg Secret is replaced (its type is immutable).
            DOCKER_CONFIG_JSON_TYPE | DOCKERCFG_TYPE => self.update(ns, &existing, true).await?,
            other => {
                return refuse(format!(
                    "Secret {ns}/{} exists and is not a registry-credential Secret (type {other}); \
                     conflictPolicy: Adopt only takes over {DOCKER_CONFIG_JSON_TYPE} or {DOCKERCFG_TYPE} Secrets",
                    self.secret_name
                ));
            }
        }
        self.ctx.clear_conflict(ns, self.secret_name);
        info!(namespace = ns, secret = self.secret_name, credential = %self.owner.name, "adopted Secret");
        Ok(SecretDone::Adopted)
    }

    fn step_error(&self, ns: &str, action: &'static str, e: kube::Error) -> StepError {
        if namespace_terminating(&e) {
            return StepError::Terminating;
        }
        StepError::Failed(NamespaceFailure::from_error(
            ns,
            &Error::api(action, "Secret", ns, self.secret_name, e),
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SecretDone {
    Unchanged,
    Written,
    Adopted,
}

enum StepError {
    Terminating,
    Failed(NamespaceFailure),
}

/// Writes one ServiceAccount edit; on 409 reads the account again and recomputes.
pub(crate) async fn write_service_account(
    ctx: &Context,
    credential: &str,
    change: SaChange,
) -> Result<(), Error> {
    let SaChange {
        service_account,
        want,
        mut edit,
    } = change;
    let ns = service_account
        .metadata
        .namespace
        .clone()
        .unwrap_or_default();
    let name = service_account.metadata.name.clone().unwrap_or_default();
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &ns);
    let mut rv = service_account
        .metadata
        .resource_version
        .clone()
        .unwrap_or_default();
    let mut base = service_account;
    retry_on_conflict!(SA_WRITE_ATTEMPTS, |conflicted| {
        if conflicted {
            ctx.sa_writes.forget(&ns, &name);
            let fresh = match api.get_opt(&name).await {
                Ok(Some(fresh)) => fresh,
                Ok(None) => return Ok(()), // deleted meanwhile: nothing to edit
                Err(e) => return Err(Error::api("reading", "ServiceAccount", &ns, &name, e)),
            };
            let Some(next) = service_accounts::edit(&fresh, credential, &want) else {
                ctx.sa_writes.wrote(fresh);
                return Ok(());
            };
            rv = fresh.metadata.resource_version.clone().unwrap_or_default();
            edit = next;
            base = Arc::new(fresh);
        }
        if service_accounts::restores(&base, credential, &want) {
            contested(ctx, &api, credential, &ns, &name).await?;
        }
        match api
            .patch(&name, &patch_params(), &Patch::Merge(edit.merge_patch(&rv)))
            .await
        {
            Ok(updated) => {
                debug!(namespace = %ns, service_account = %name, "updated imagePullSecrets");
                ctx.metrics.write("serviceaccounts", "patch");
                if matches!(want, Want::Listed(_))
                    && let Some(took) = updated
                        .metadata
                        .uid
                        .as_deref()
                        .and_then(|uid| ctx.appeared.onboarded(uid))
                {
                    ctx.metrics.onboarding.observe(took.as_secs_f64());
                }
                ctx.sa_writes.wrote(updated);
                Ok(())
            }
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(Error::api("updating", "ServiceAccount", &ns, &name, e)),
        }
    })
}

/// Counts a restoration of our entry on `ns/name`; refuses it while another writer is found to keep
/// removing the entry (see [`crate::controller::contests`]). The report names the field manager that last
/// wrote the list, from a fresh read with managedFields (the caches drop them), once per backoff.
async fn contested(
    ctx: &Context,
    api: &Api<ServiceAccount>,
    credential: &str,
    ns: &str,
    name: &str,
) -> Result<(), Error> {
    let remaining = match ctx.contests.restoring(credential, ns, name, Instant::now()) {
        Verdict::Restore => return Ok(()),
        Verdict::BackOff { remaining, started } => {
            if !started && let Some(message) = ctx.contests.noted(credential, ns, name) {
                return Err(Error::Contested { message });
            }
            remaining
        }
    };
    let writer = match api.get_opt(name).await {
        Ok(Some(sa)) => list_writers(&sa),
        _ => Vec::new(),
    };
    let by = if writer.is_empty() {
        String::new()
    } else {
        format!(" (imagePullSecrets last written by {})", writer.join(", "))
    };
    let message = format!(
        "ServiceAccount {ns}/{name}: another writer removed our imagePullSecrets entry more than {} \
         times within {} s{by}; it is left alone for {} s, then restored once more. Let the other \
         tool keep the entry (Argo CD: ignoreDifferences with managedFieldsManagers: [{MANAGER}] \
         and RespectIgnoreDifferences=true; server-side apply: do not declare imagePullSecrets on \
         this ServiceAccount)",
        crate::controller::contests::MAX_RESTORES,
        crate::controller::contests::WINDOW.as_secs(),
        remaining.as_secs(),
    );
    warn!(
        namespace = ns,
        service_account = name,
        credential,
        "imagePullSecrets entry contested by another writer; backing off"
    );
    ctx.contests.note(credential, ns, name, message.clone());
    Err(Error::Contested { message })
}

/// Field managers other than ours that own `imagePullSecrets`, as `manager (operation)`.
fn list_writers(sa: &ServiceAccount) -> Vec<String> {
    sa.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() != Some(MANAGER))
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.get("f:imagePullSecrets").is_some())
        })
        .map(|m| {
            format!(
                "{} ({})",
                m.manager.as_deref().unwrap_or("unknown"),
                m.operation.as_deref().unwrap_or("unknown")
            )
        })
        .collect()
}

/// What the cleanups of a pass left: failures to retry, and Secrets not provably ours (reported,
/// never retried).
#[derive(Debug, Default)]
pub(crate) struct Cleaned {
    pub(crate) failures: Vec<NamespaceFailure>,
    pub(crate) unowned: Vec<NamespaceFailure>,
}

/// Attempts at deleting a copy that keeps changing between our read and our delete.
const DELETE_ATTEMPTS: usize = 3;

impl Apply<'_> {
    /// Removes what we did in a namespace: ServiceAccount entries first, then Secrets. Returns
    /// the Secrets left alone because they are not provably ours.
    async fn cleanup(&self, c: CleanupPlan) -> Result<Vec<NamespaceFailure>, NamespaceFailure> {
        let (ctx, owner) = (self.ctx, self.owner);
        let ns = c.namespace;
        let fail = |e: Error| NamespaceFailure::from_error(&ns, &e);
        for change in c.edits {
            match write_service_account(ctx, &owner.name, change).await {
                Err(Error::Api { source, .. }) if namespace_terminating(&source) => {
                    return Ok(Vec::new());
                }
                r => r.map_err(fail)?,
            }
        }
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        let mut unowned = Vec::new();
        for secret in c.delete {
            if let Some(why) = self.delete_proven(&api, &secret).await.map_err(fail)? {
                let name = secret.metadata.name.as_deref().unwrap_or_default();
                info!(namespace = %ns, secret = name, credential = %owner.name, why, "left a Secret that is not provably ours");
                unowned.push(NamespaceFailure::not_owned(
                    &ns,
                    plan::not_owned(&ns, name, &owner.name, why),
                ));
            }
        }
        for secret in c.release {
            release(owner, &api, secret).await.map_err(fail)?;
        }
        Ok(unowned)
    }

    /// Deletes a copy only once a fresh read (never the cache) proves it ours, with that read's
    /// uid and resourceVersion as preconditions, so that a Secret replaced or changed meanwhile
    /// is never hit. Returns why it was left, if it was.
    async fn delete_proven(
        &self,
        api: &Api<Secret>,
        planned: &Secret,
    ) -> Result<Option<&'static str>, Error> {
        let ns = planned.metadata.namespace.clone().unwrap_or_default();
        let name = planned.metadata.name.clone().unwrap_or_default();
        // A 409 means the Secret changed between our read and our delete: read and prove again.
        let deleted = retry_on_conflict!(DELETE_ATTEMPTS, |_conflicted| {
            let Some(fresh) = api
                .get_opt(&name)
                .await
                .map_err(|e| Error::api("reading", "Secret", &ns, &name, e))?
            else {
                self.ctx.secret_writes.forget(&ns, &name);
                return Ok(None);
            };
            if fresh.metadata.uid != planned.metadata.uid {
                // Replaced since the plan: not the object we planned to delete; the watch will tell.
                self.ctx.secret_writes.forget(&ns, &name);
                return Ok(None);
            }
            if let Some(why) = plan::undeletable(&fresh, self.owner, self.is_source(&ns, &name)) {
                return Ok(Some(why));
            }
            let dp = delete_exactly(
                fresh.metadata.uid.clone(),
                fresh.metadata.resource_version.clone(),
            );
            match api.delete(&name, &dp).await {
                Ok(response) => {
                    debug!(namespace = %ns, secret = %name, "deleted Secret");
                    self.ctx.metrics.write("secrets", "delete");
                    let version = response.left().as_ref().and_then(overlay::resource_version);
                    self.ctx.secret_writes.deleted(&fresh, version);
                    Ok(None)
                }
                Err(e) if status_code(&e) == Some(404) => {
                    self.ctx.secret_writes.forget(&ns, &name);
                    Ok(None)
                }
                Err(e) => Err(Error::api("deleting", "Secret", &ns, &name, e)),
            }
        });
        match deleted {
            Err(e) if e.is_conflict() => Err(Error::Finalizer {
                name: self.owner.name.clone(),
                message: format!("Secret {ns}/{name} kept changing while being deleted"),
            }),
            other => other,
        }
    }
}

/// Removes our labels and ownerReference from a Secret (deletion with `Orphan`).
async fn release(owner: &Owner, api: &Api<Secret>, secret: Arc<Secret>) -> Result<(), Error> {
    let ns = secret.metadata.namespace.clone().unwrap_or_default();
    let name = secret.metadata.name.clone().unwrap_or_default();
    let mut current = (*secret).clone();
    let released = retry_on_conflict!(SA_WRITE_ATTEMPTS, |conflicted| {
        if conflicted {
            match api.get_opt(&name).await {
                Ok(Some(fresh)) => current = fresh,
                Ok(None) => return Ok(()),
                Err(e) => return Err(Error::api("reading", "Secret", &ns, &name, e)),
            }
        }
        let refs: Vec<_> = current
            .metadata
            .owner_references
            .iter()
            .flatten()
            .filter(|r| r.uid != owner.uid)
            .cloned()
            .collect();
        let patch = json!({
            "metadata": {
                "resourceVersion": current.metadata.resource_version,
                "labels": { MANAGED_BY_LABEL: null, CREDENTIAL_LABEL: null },
                "ownerReferences": if refs.is_empty() { serde_json::Value::Null } else { json!(refs) },
            }
        });
        match api
            .patch(&name, &patch_params(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(Error::api("releasing", "Secret", &ns, &name, e)),
        }
    });
    match released {
        Err(e) if e.is_conflict() => Err(Error::Finalizer {
            name: owner.name.clone(),
            message: format!("Secret {ns}/{name} kept changing while being released"),
        }),
        other => other,
    }
}
