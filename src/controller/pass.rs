//! One reconcile pass of a credential that is not being deleted: resolve, plan, apply, recover,
//! then the status and its Events.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use kube::{
    ResourceExt,
    runtime::{controller::Action, events::EventType},
};
use tracing::debug;

use super::{
    CONFIG_RETRY, RESYNC, backoff,
    events::{publish, report_unowned, summarize},
    ledger::{Applied, Basis, Record, Scope},
    plan,
    recover::recover,
    resolve, status, tokens, verdict,
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
    controller::status_writes::Pending,
    controller::targets::Selection,
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
    let mut targets = Vec::new();
    ctx.caches.namespaces.scan(|_, name, ns| {
        if selection.targets(&ns.facts(name)) {
            targets.push(name.to_string());
        }
    });
    targets.sort_unstable();
    targets
}

/// A pass whose namespaces wait only for their `default` ServiceAccount looks again after this
/// even if no event woke it.
const AWAITING_RECHECK: Duration = Duration::from_secs(30);

/// Those of `namespaces` that are targets, sorted (one not in the namespace cache is not).
pub(super) fn targets_among(
    ctx: &Context,
    selection: &Selection<'_>,
    namespaces: &BTreeSet<String>,
) -> Vec<String> {
    namespaces
        .iter()
        .filter(|name| {
            ctx.caches
                .namespaces
                .get("", name)
                .is_some_and(|ns| selection.targets(&ns.facts(name)))
        })
        .cloned()
        .collect()
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
            ctx.ledgers.invalidate(&owner.name);
            write_status(ctx, rc, &report);
            return Ok(Action::requeue(CONFIG_RETRY));
        }
    };
    // Every namespace is looked at only where the pass needs all its targets: a pass over the
    // namespaces of one event costs those namespaces, not the cluster.
    let all_targets = || target_namespaces(ctx, &selection);
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
                    );
                }
                let mut report = stalled_report(old, &secret_name, failed.reason, failed.message);
                report.stalled = failed.configuration;
                report.targets = all_targets().len() as u32;
                ctx.ledgers.invalidate(&owner.name);
                write_status(ctx, rc, &report);
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
            report.targets = all_targets().len() as u32;
            ctx.ledgers.invalidate(&owner.name);
            write_status(ctx, rc, &report);
            return Ok(Action::requeue(CONFIG_RETRY));
        }
    };
    let expires_at = token.as_ref().map(|t| tokens::rfc3339(t.expires_at));

    if rc.spec.suspend {
        let view = ctx.view(rc);
        let targets = all_targets();
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
        ctx.ledgers.invalidate(&owner.name);
        write_status(ctx, rc, &report);
        return Ok(Action::await_change());
    }

    let basis = Basis {
        uid: owner.uid.clone(),
        generation: rc.metadata.generation,
        source_version: resolved.version.clone(),
    };
    let scope = ctx.ledgers.begin(&owner.name, &basis, Instant::now());
    // A minted token and pod recovery have schedules of their own over every target.
    let scoped = token.is_none() && rc.spec.pod_recovery == PodRecovery::Off;
    let work = Work {
        ctx,
        rc,
        owner: &owner,
        secret_name: &secret_name,
        resolved: &resolved,
    };
    let mut scoped_pass = None;
    // Adopted in a pass over some namespaces that a full pass then follows.
    let mut adopted = Vec::new();
    if let (Scope::Namespaces(within), true) = (&scope, scoped) {
        ctx.metrics.pass(&owner.name, false);
        let targets = targets_among(ctx, &selection, within);
        let applied = work.apply(&targets, Some(within)).await;
        // A pass that failed somewhere is judged with everything else: a full pass follows.
        match (
            applied.failed(),
            ctx.ledgers.update(&owner.name, within, &applied),
        ) {
            (false, Some((totals, due))) => scoped_pass = Some((totals, due, applied, targets)),
            _ => adopted = applied.adopted,
        }
    }
    let (totals, due, mut applied, targets, mut full) =
        if let Some((totals, due, applied, targets)) = scoped_pass {
            (totals, due, applied, targets, None)
        } else {
            ctx.metrics.pass(&owner.name, true);
            let targets = all_targets();
            let applied = work.apply(&targets, None).await;
            let record = Record::new(basis, Instant::now(), &applied);
            (record.totals(), record.due, applied, targets, Some(record))
        };
    applied.adopted.extend(adopted);
    // After apply: the ServiceAccounts it reads include this pass's entries.
    let recovered = recover(ctx, rc, &ctx.view(rc), &resolved, &targets, &secret_name).await;
    report_unowned(ctx, rc, &totals.unowned);

    if !applied.adopted.is_empty() {
        publish(
            ctx,
            rc,
            EventType::Normal,
            "Adopted",
            format!(
                "took over Secret {secret_name} in namespaces: {}",
                summarize(&applied.adopted)
            ),
        );
    }

    let skew = token.as_ref().filter(|t| t.skewed).map(|t| {
        format!(
            "the token's expiry {} is not in the future (clock skew?): it is minted again every {}s",
            tokens::rfc3339(t.expires_at),
            ctx.settings.min_token_refresh.as_secs()
        )
    });
    let verdict = verdict::judge(&totals, skew.as_deref());
    let ready = verdict.ready;
    let target_count = verdict.targets;
    let report = Report {
        ready,
        reason: verdict.reason.clone(),
        message: verdict.message.clone(),
        stalled: verdict.stalled,
        secret_name,
        targets: target_count,
        synced: totals.synced,
        patched_service_accounts: totals.patched_service_accounts,
        source_version: ready.then(|| resolved.version.clone()),
        // Findings outside the targets are listed but do not make the targets fail.
        failures: totals
            .failures
            .iter()
            .chain(&totals.unowned)
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
    for f in &totals.failures {
        *reasons.entry(f.reason.clone()).or_default() += 1;
    }
    ctx.metrics.set_counts(
        &owner.name,
        target_count,
        totals.synced,
        &reasons.into_iter().collect::<Vec<_>>(),
    );

    let rotated = ready
        && old
            .and_then(|s| s.synced_source_version.as_deref())
            .is_some_and(|v| v != resolved.version);
    let resync = rc.spec.verify.as_ref().map_or(RESYNC, |v| {
        RESYNC.min(Duration::from_secs(v.interval_seconds.max(10).into()))
    });
    let next = if let Some(mut record) = full.take() {
        let timers = verdict::Timers {
            resync,
            contest_retry: ctx.contests.next_retry(&owner.name, Instant::now()),
            conflict_recheck: CONFLICT_RECHECK,
            awaiting_recheck: AWAITING_RECHECK,
            token_refresh: token.as_ref().map(|t| t.refresh_in),
            recovery_retry: recovered.retry,
        };
        let next = verdict::next_pass(&verdict, &timers, || backoff(ctx, &owner.name));
        record.due = Instant::now() + next;
        ctx.ledgers.keep(&owner.name, record);
        next
    } else if verdict.ready {
        // Everything is in sync: what the full pass was to look at again early (a namespace
        // waiting for its account) is done, its resync still stands.
        ctx.ledgers
            .settled(&owner.name, resync)
            .unwrap_or(due)
            .saturating_duration_since(Instant::now())
    } else {
        // The full pass's schedule stands: the namespaces not looked at are owed their resync.
        due.saturating_duration_since(Instant::now())
    };
    write_status(ctx, rc, &report);
    if rotated {
        publish(
            ctx,
            rc,
            EventType::Normal,
            "Rotated",
            format!("new source content reached all {target_count} namespaces"),
        );
    }
    Ok(Action::requeue(next))
}

/// What one pass works from.
struct Work<'a> {
    ctx: &'a Context,
    rc: &'a RegistryCredential,
    owner: &'a Owner,
    secret_name: &'a str,
    resolved: &'a ResolvedSource,
}

impl Work<'_> {
    /// Plans `targets` (within `within`, or the whole cluster) and carries the plan out. The
    /// cleanup is planned first, from the caches as they are before this pass writes; each target
    /// is planned when a write slot is free for it, so that a pass holds the work of a few
    /// namespaces at a time, not of all of them.
    async fn apply(&self, targets: &[String], within: Option<&BTreeSet<String>>) -> Applied {
        let view = self.ctx.view(self.rc);
        let desired = Desired {
            owner: self.owner,
            secret_name: self.secret_name,
            data: &self.resolved.data,
            service_accounts: &self.rc.spec.service_accounts,
            targets,
            within,
        };
        let cleanup = plan::cleanup(&desired, &view);
        debug!(
            credential = %self.owner.name,
            targets = targets.len(),
            scoped = within.is_some(),
            cleanup_writes = cleanup.writes(),
            "planned"
        );
        Apply {
            ctx: self.ctx,
            owner: self.owner,
            secret_name: self.secret_name,
            data: &self.resolved.data,
            conflict_policy: self.rc.spec.conflict_policy,
            source: &self.rc.spec.source,
        }
        .run(
            targets.iter().map(|ns| plan::target(&desired, &view, ns)),
            cleanup,
        )
        .await
    }
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
pub(super) fn write_status(ctx: &Context, rc: &RegistryCredential, report: &Report) {
    let previous = ctx.previous_status(rc);
    let old = previous.as_ref();
    let name = rc.name_any();
    ctx.metrics.set_ready(&name, report.ready);
    match &report.credentials {
        CredentialsCondition::Set { valid, .. } => ctx.metrics.set_verified(&name, Some(*valid)),
        CredentialsCondition::Off => ctx.metrics.set_verified(&name, None),
        CredentialsCondition::Keep => {}
    }
    let new = status::build(old, rc.metadata.generation, report);
    if old == Some(&new) {
        return;
    }
    let old_ready = old.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let transition = match old_ready {
        None => true,
        Some(c) => {
            c.reason != report.reason
                || (!report.ready && c.message != report.message && report.stalled)
        }
    };
    // Written in the background; what the next pass compares with is this status already.
    if let Some(uid) = &rc.metadata.uid {
        ctx.wrote_status(rc, &new);
        ctx.status_writer.submit(
            name.clone(),
            Pending {
                uid: uid.clone(),
                old: previous.clone(),
                new: new.clone(),
            },
            ctx.statuses.clone(),
        );
    }
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
            publish(ctx, rc, type_, event_reason, message.clone());
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
        );
    }
    if transition && !(report.reason == "Progressing" && old_ready.is_none()) {
        let type_ = if report.ready {
            EventType::Normal
        } else {
            EventType::Warning
        };
        publish(ctx, rc, type_, &report.reason, report.message.clone());
    }
}
