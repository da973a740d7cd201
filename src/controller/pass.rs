//! One reconcile pass of a credential that is not being deleted: resolve, plan, apply, recover,
//! then the status and its Events.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use kube::{
    Api, ResourceExt,
    api::Patch,
    runtime::{controller::Action, events::EventType},
};
use serde_json::json;
use tracing::debug;

use super::{
    CONFIG_RETRY, RESYNC, apply, backoff, contests,
    events::{publish, report_unowned, summarize},
    plan,
    recover::recover,
    resolve, status, tokens,
};

use crate::{
    api::NamespaceFailure,
    api::{PodRecovery, RegistryCredential},
    controller::apply::Apply,
    controller::context::{CONFLICT_RECHECK, Context},
    controller::error::Error,
    controller::plan::{Desired, Owner},
    controller::resolve::ResolvedSource,
    controller::status::{CredentialsCondition, Report},
    controller::targets::{NamespaceFacts, Selection},
    runtime::metrics::CredentialLabels,
};

pub(super) fn owner_of(rc: &RegistryCredential) -> Result<Owner, Error> {
    Ok(Owner {
        name: rc.name_any(),
        uid: rc.uid().ok_or(Error::MissingField("metadata.uid"))?,
    })
}

/// Target namespaces from the namespace cache, sorted.
pub(super) fn target_namespaces(ctx: &Context, selection: &Selection<'_>) -> Vec<String> {
    let mut targets: Vec<String> = ctx
        .caches
        .namespaces
        .state()
        .iter()
        .filter(|ns| {
            selection.targets(&NamespaceFacts {
                name: ns.metadata.name.as_deref().unwrap_or_default(),
                labels: ns.metadata.labels.as_ref(),
                annotations: ns.metadata.annotations.as_ref(),
                terminating: ns.metadata.deletion_timestamp.is_some(),
            })
        })
        .map(|ns| ns.name_any())
        .collect();
    targets.sort_unstable();
    targets
}

/// Keeps the pod watch running exactly while some credential (not being deleted) has
/// podRecovery on; `current` counts as it is now, or not at all when `leaving`.
pub(super) fn update_pod_watch(ctx: &Context, current: &RegistryCredential, leaving: bool) {
    let name = current.name_any();
    let others = ctx.caches.credentials.state().iter().any(|rc| {
        rc.name_any() != name
            && rc.spec.pod_recovery != PodRecovery::Off
            && rc.metadata.deletion_timestamp.is_none()
    });
    ctx.pods
        .set_wanted(others || (!leaving && current.spec.pod_recovery != PodRecovery::Off));
}

pub(super) async fn sync(rc: &RegistryCredential, ctx: &Context) -> Result<Action, Error> {
    update_pod_watch(ctx, rc, false);
    let owner = owner_of(rc)?;
    let secret_name = rc.secret_name();
    let previous = ctx.previous_status(rc);
    let old = previous.as_ref();

    let selection = match Selection::new(&rc.spec) {
        Ok(s) => s,
        Err(e) => {
            let e = Error::from(e);
            let report = stalled_report(old, &secret_name, e.reason(), e.to_string());
            write_status(ctx, rc, report).await?;
            return Ok(Action::requeue(CONFIG_RETRY));
        }
    };
    let targets = target_namespaces(ctx, &selection);
    // A minted token (source.ecr) is a source like the others, with a schedule of its own.
    let mut token: Option<tokens::Fresh> = None;
    let resolved = match &rc.spec.source.ecr {
        // Suspended: no AWS call either; the token in memory (if any) tells which copies are current.
        Some(_) if rc.spec.suspend => {
            ctx.tokens
                .cached(&owner.name)
                .ok_or_else(|| resolve::SourceError::Invalid {
                    namespace: "spec".into(),
                    name: "source.ecr".into(),
                    problem: "suspended before a token was minted".into(),
                })
        }
        Some(spec) => match ctx.tokens.resolve(&ctx.token_env(), rc, spec).await {
            Ok(fresh) => {
                let resolved = fresh.resolved.clone();
                token = Some(fresh);
                Ok(resolved)
            }
            Err(failed) => {
                // Existing copies keep the token they have: no write of any kind.
                if failed.expiring.is_some() {
                    publish(
                        ctx,
                        rc,
                        EventType::Warning,
                        "TokenExpiringSoon",
                        format!(
                            "less than an hour is left of the token in the copies: {}",
                            failed.message
                        ),
                    )
                    .await;
                }
                let mut report = stalled_report(old, &secret_name, failed.reason, failed.message);
                report.stalled = failed.configuration;
                report.targets = targets.len() as u32;
                write_status(ctx, rc, report).await?;
                return Ok(Action::requeue(failed.retry_in));
            }
        },
        None => {
            // Not (or no longer) a minted source.
            ctx.tokens.forget(&owner.name);
            ctx.metrics.credential_expiry.remove(&CredentialLabels {
                credential: owner.name.clone(),
            });
            resolve::resolve(
                &rc.spec.source,
                &ctx.settings.source_namespaces,
                |ns, name| ctx.caches.source_secret(ns, name),
            )
        }
    };
    let resolved: ResolvedSource = match resolved {
        Ok(r) => r,
        Err(e) => {
            // Existing copies stay exactly as they are: no write of any kind.
            let mut report = stalled_report(old, &secret_name, e.reason(), e.to_string());
            report.targets = targets.len() as u32;
            write_status(ctx, rc, report).await?;
            return Ok(Action::requeue(CONFIG_RETRY));
        }
    };
    let expires_at = token.as_ref().map(|t| tokens::rfc3339(t.expires_at));

    if rc.spec.suspend {
        let view = ctx.view(rc);
        let synced = targets
            .iter()
            .filter(|ns| {
                use plan::View;
                view.secret(ns, &secret_name)
                    .is_some_and(|s| plan::in_sync(&s, &owner, &resolved.data))
            })
            .count() as u32;
        let report = Report {
            ready: false,
            reason: "Suspended".into(),
            message: format!(
                "suspended: no changes are made; {} namespaces targeted, {synced} in sync",
                targets.len()
            ),
            stalled: true,
            secret_name,
            targets: targets.len() as u32,
            synced,
            patched_service_accounts: old.map(|s| s.patched_service_accounts).unwrap_or_default(),
            failures: Vec::new(),
            source_version: None,
            credentials: CredentialsCondition::Keep,
            pods_awaiting_recovery: None,
            key_warnings: Some(key_warnings(&resolved.registries)),
            credential_expires_at: None,
        };
        write_status(ctx, rc, report).await?;
        return Ok(Action::await_change());
    }

    // One snapshot for the plan and for pod recovery after apply: its ServiceAccounts are read
    // through our write overlay, so recovery sees this pass's entries.
    let view = ctx.view(rc);
    let plan = plan::sync(
        &Desired {
            owner: &owner,
            secret_name: &secret_name,
            data: &resolved.data,
            service_accounts: &rc.spec.service_accounts,
            targets: &targets,
        },
        &view,
    );
    debug!(credential = %owner.name, targets = targets.len(), writes = plan.writes(), "planned");
    let outcome = Apply {
        ctx,
        owner: &owner,
        secret_name: &secret_name,
        data: &resolved.data,
        conflict_policy: rc.spec.conflict_policy,
        source: &rc.spec.source,
    }
    .run(plan)
    .await;
    report_unowned(ctx, rc, &outcome.unowned).await;
    let recovered = recover(ctx, rc, &view, &resolved, &targets, &secret_name).await;

    if !outcome.adopted.is_empty() {
        publish(
            ctx,
            rc,
            EventType::Normal,
            "Adopted",
            format!(
                "took over Secret {secret_name} in namespaces: {}",
                summarize(&outcome.adopted)
            ),
        )
        .await;
    }

    let target_count = (targets.len() as u32).saturating_sub(outcome.terminating);
    let ready = outcome.failures.is_empty() && outcome.synced == target_count;
    // Waiting for a human: same-name Secrets we may not touch.
    let only_conflicts = !outcome.failures.is_empty()
        && outcome
            .failures
            .iter()
            .all(|f| f.reason == "Conflict" || f.reason == apply::NOT_OWNED);
    // ...or another tool keeps removing our ServiceAccount entries.
    let stalled = only_conflicts
        || (!outcome.failures.is_empty()
            && outcome.failures.iter().all(|f| {
                f.reason == "Conflict"
                    || f.reason == apply::NOT_OWNED
                    || f.reason == contests::REASON
            }));
    let (reason, message) = if ready {
        let mut message = format!("{}/{target_count} namespaces in sync", outcome.synced);
        if let Some(t) = token.as_ref().filter(|t| t.skewed) {
            message.push_str(&format!(
                "; the token's expiry {} is not in the future (clock skew?): it is minted again every {}s",
                tokens::rfc3339(t.expires_at),
                ctx.settings.min_token_refresh.as_secs()
            ));
        }
        ("Synced".to_string(), message)
    } else {
        let first = outcome.failures.first();
        let reason = if only_conflicts {
            let all_unowned = outcome
                .failures
                .iter()
                .all(|f| f.reason == apply::NOT_OWNED);
            if all_unowned {
                apply::NOT_OWNED
            } else {
                "Conflict"
            }
            .to_string()
        } else {
            first.map_or_else(|| "Progressing".into(), |f| f.reason.clone())
        };
        let detail = first
            .map(|f| format!(": {}", f.message))
            .unwrap_or_default();
        let message = if outcome.failures.is_empty() && outcome.awaiting_default_account > 0 {
            format!(
                "{}/{target_count} namespaces in sync, {} waiting for their default ServiceAccount",
                outcome.synced, outcome.awaiting_default_account
            )
        } else {
            format!(
                "{}/{target_count} namespaces in sync, {} failing{detail}",
                outcome.synced,
                outcome.failures.len()
            )
        };
        (reason, message)
    };
    let report = Report {
        ready,
        reason,
        message,
        stalled,
        secret_name,
        targets: target_count,
        synced: outcome.synced,
        patched_service_accounts: outcome.patched_service_accounts,
        source_version: ready.then(|| resolved.version.clone()),
        // Findings outside the targets are listed but do not make the targets fail.
        failures: outcome
            .failures
            .iter()
            .chain(&outcome.unowned)
            .cloned()
            .collect(),
        credentials: ctx.verifier.condition(rc, &resolved),
        pods_awaiting_recovery: recovered.awaiting,
        key_warnings: Some(key_warnings(&resolved.registries)),
        // Only once the token is in every copy; cleared when the source is no longer ECR.
        credential_expires_at: match &expires_at {
            Some(at) => ready.then(|| Some(at.clone())),
            None => Some(None),
        },
    };
    let mut reasons: BTreeMap<String, u32> = BTreeMap::new();
    for f in &outcome.failures {
        *reasons.entry(f.reason.clone()).or_default() += 1;
    }
    ctx.metrics.set_counts(
        &owner.name,
        target_count,
        outcome.synced,
        &reasons.into_iter().collect::<Vec<_>>(),
    );

    let rotated = ready
        && old
            .and_then(|s| s.synced_source_version.as_deref())
            .is_some_and(|v| v != resolved.version);
    write_status(ctx, rc, report).await?;
    if rotated {
        publish(
            ctx,
            rc,
            EventType::Normal,
            "Rotated",
            format!("new source content reached all {target_count} namespaces"),
        )
        .await;
    }

    let resync = rc.spec.verify.as_ref().map_or(RESYNC, |v| {
        RESYNC.min(Duration::from_secs(v.interval_seconds.max(10).into()))
    });
    let contest_retry = ctx
        .contests
        .next_retry(&owner.name, Instant::now())
        .filter(|_| stalled);
    let next = if ready {
        resync
    } else if let Some(retry) = contest_retry {
        // Restore once more when the backoff ends (or on the next change, whichever is first).
        retry.min(CONFLICT_RECHECK) + Duration::from_secs(1)
    } else if only_conflicts {
        CONFLICT_RECHECK + Duration::from_secs(1)
    } else {
        backoff(ctx, &owner.name)
    };
    let next = token.as_ref().map_or(next, |t| next.min(t.refresh_in));
    Ok(Action::requeue(
        recovered.retry.map_or(next, |r| r.min(next)),
    ))
}

/// A report for a configuration problem: the counts stay as last observed.
pub(super) fn stalled_report(
    old: Option<&crate::api::RegistryCredentialStatus>,
    secret_name: &str,
    reason: &str,
    message: String,
) -> Report {
    Report {
        ready: false,
        reason: reason.into(),
        message,
        stalled: true,
        secret_name: secret_name.into(),
        targets: old.map(|s| s.target_namespaces).unwrap_or_default(),
        synced: old.map(|s| s.synced_namespaces).unwrap_or_default(),
        patched_service_accounts: old.map(|s| s.patched_service_accounts).unwrap_or_default(),
        failures: old
            .map(|s| {
                s.failures
                    .iter()
                    .map(|f| NamespaceFailure {
                        namespace: f.namespace.clone(),
                        reason: f.reason.clone(),
                        message: f.message.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        source_version: None,
        credentials: CredentialsCondition::Keep,
        pods_awaiting_recovery: None,
        key_warnings: None,
        credential_expires_at: None,
    }
}

/// Registry keys the kubelet will not match as written (`kubelet::unmatchable_key`), each
/// redacted and with why. The copies still carry them: the config is valid, only unlikely to
/// work as meant.
pub(super) fn key_warnings(registries: &[String]) -> Vec<String> {
    registries
        .iter()
        .filter_map(|key| {
            crate::kubelet::unmatchable_key(key)
                .map(|why| format!("{:?}: {why}", crate::kubelet::redact_key(key)))
        })
        .collect()
}

/// Writes the status if it changed, and emits an Event when the Ready reason changes (or, for a
/// problem, its message): Events mark transitions, not passes.
pub(super) async fn write_status(
    ctx: &Context,
    rc: &RegistryCredential,
    report: Report,
) -> Result<(), Error> {
    let previous = ctx.previous_status(rc);
    let old = previous.as_ref();
    let name = rc.name_any();
    ctx.metrics.set_ready(&name, report.ready);
    match &report.credentials {
        CredentialsCondition::Set { valid, .. } => ctx.metrics.set_verified(&name, Some(*valid)),
        CredentialsCondition::Off => ctx.metrics.set_verified(&name, None),
        CredentialsCondition::Keep => {}
    }
    let new = status::build(old, rc.metadata.generation, &report);
    if old == Some(&new) {
        return Ok(());
    }
    let old_ready = old.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let transition = match old_ready {
        None => true,
        Some(c) => {
            c.reason != report.reason
                || (!report.ready && c.message != report.message && report.stalled)
        }
    };
    let api = Api::<RegistryCredential>::all(ctx.client.clone());
    api.patch_status(
        &name,
        &crate::writes::patch_params(),
        &Patch::Merge(json!({ "status": status::merge_patch(old, &new) })),
    )
    .await
    .map_err(|source| Error::Status {
        name: name.clone(),
        source: Box::new(source),
    })?;
    ctx.wrote_status(rc, &new);
    if let CredentialsCondition::Set {
        valid,
        reason,
        message,
    } = &report.credentials
    {
        let before = old.and_then(|s| s.conditions.iter().find(|c| c.type_ == "CredentialsValid"));
        if before.is_none_or(|c| c.reason != *reason) && !(before.is_none() && *valid) {
            let (type_, event_reason) = if *valid {
                (EventType::Normal, "CredentialsValid")
            } else {
                (EventType::Warning, "CredentialsRejected")
            };
            publish(ctx, rc, type_, event_reason, message.clone()).await;
        }
    }
    let old_keys = old.and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == status::UNMATCHABLE_KEYS)
    });
    let new_keys = new
        .conditions
        .iter()
        .find(|c| c.type_ == status::UNMATCHABLE_KEYS);
    if let Some(c) = new_keys
        && old_keys.is_none_or(|o| o.message != c.message)
    {
        publish(
            ctx,
            rc,
            EventType::Warning,
            "UnmatchableRegistryKey",
            c.message.clone(),
        )
        .await;
    }
    if transition && !(report.reason == "Progressing" && old_ready.is_none()) {
        let type_ = if report.ready {
            EventType::Normal
        } else {
            EventType::Warning
        };
        publish(ctx, rc, type_, &report.reason, report.message.clone()).await;
    }
    Ok(())
}
