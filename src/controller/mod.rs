//! The RegistryCredential controller: watches, the mapping of every watched object to the
//! cluster-scoped RegistryCredential key, and the reconcile pipeline
//! resolve → plan → apply (with prune) → status.

//!
//! Layers, each calling only those after it: [`reconcile`](self) (this module: watches and the
//! pass), [`resolve`] and [`targets`] (what is wanted), [`plan`] (the writes, pure), [`apply`]
//! (carrying them out), [`status`] (reporting), over [`context`] and [`cache`] (the watch caches,
//! their indexes and our own recent writes).

pub mod apply;
pub mod cache;
pub mod contests;
pub mod context;
pub mod error;
pub mod plan;
pub mod recovery;
pub mod resolve;
pub mod service_accounts;
pub mod status;
pub mod targets;
pub mod tokens;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Pod, Secret, ServiceAccount};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{EvictParams, Patch, PatchParams},
    core::PartialObjectMeta,
    runtime::{
        Controller, WatchStreamExt,
        controller::{Action, Config},
        events::{Event, EventType, Recorder, Reporter},
        finalizer::{self, finalizer},
        reflector::{self, ObjectRef},
        watcher,
    },
};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::{
    api::{
        CREDENTIAL_LABEL, FINALIZER, MANAGED_BY_LABEL, MANAGER, PodRecovery, RegistryCredential,
    },
    controller::apply::{Apply, Failure},
    controller::cache::overlay::Overlay,
    controller::context::{Appearances, CONFLICT_RECHECK, CacheView, Caches, Context, Settings},
    controller::error::{Error, status_code},
    controller::plan::{Desired, Owner, View},
    controller::recovery::{EvictionBudget, PodWatch, Reported},
    controller::resolve::ResolvedSource,
    controller::status::{CredentialsCondition, Report},
    controller::targets::{NamespaceFacts, Selection},
    dockerconfig::DockerConfig,
    kubelet::RegistryKey,
    remote::registry::Checker,
    runtime::http::Health,
    runtime::metrics::{CredentialLabels, Metrics},
};

/// Periodic resync of a converged credential: repairs anything a missed event could hide.
const RESYNC: Duration = Duration::from_secs(600);
/// Re-check of a configuration error, in addition to the watch on the source.
const CONFIG_RETRY: Duration = Duration::from_secs(300);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Runs the controller until `shutdown` completes; in-flight reconciles finish first.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let credentials = Api::<RegistryCredential>::all(client.clone());
    let mut selection = watcher::Config::default().any_semantic();
    if let Some(selector) = &settings.credential_selector {
        selection = selection.labels(selector);
    }
    let controller =
        Controller::new(credentials, selection).with_config(Config::default().concurrency(8));
    let credential_store = controller.store();

    // Namespaces: metadata only (labels, annotations, deletion), all of them.
    let (namespaces, ns_writer) = reflector::store();
    let ns_events = cached_watch(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default(),
        ns_writer,
        None,
    );

    // Our writes, laid over the caches until each watch has delivered them.
    let secret_writes = Arc::new(Overlay::<Secret>::default());
    let sa_writes = Arc::new(Overlay::<ServiceAccount>::default());

    // ServiceAccounts: full objects (imagePullSecrets is not metadata); they are small.
    let (service_accounts, sa_writer) = reflector::store();
    let appeared = Arc::new(Appearances::default());
    let sa_events = cached_watch(
        Api::<ServiceAccount>::all(client.clone()),
        watcher::Config::default(),
        sa_writer,
        Some(sa_writes.clone()),
    )
    .inspect({
        let appeared = appeared.clone();
        move |sa| {
            if let Ok(sa) = sa {
                appeared.note(sa);
            }
        }
    });

    // Secrets: only ours, by label. Never every Secret of the cluster.
    let (secrets, secret_writer) = reflector::store();
    let secret_events = cached_watch(
        Api::<Secret>::all(client.clone()),
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}")),
        secret_writer,
        Some(secret_writes.clone()),
    );

    // Source Secrets: every Secret of each allowed source namespace.
    let mut sources = BTreeMap::new();
    let mut source_streams = Vec::new();
    for ns in &settings.source_namespaces {
        let (store, writer) = reflector::store();
        sources.insert(ns.clone(), store);
        let api = Api::<Secret>::namespaced(client.clone(), ns);
        source_streams.push(cached_watch(api, watcher::Config::default(), writer, None).boxed());
    }
    let source_events = futures::stream::select_all(source_streams);

    // Pods: watched only while some credential has podRecovery on.
    let (pods, pod_events) = PodWatch::new(client.clone(), metrics.pod_watch.clone());

    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    let caches = Caches {
        credentials: credential_store.clone(),
        namespaces,
        service_accounts,
        secrets,
        sources,
        ready,
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: MANAGER.into(),
            instance: None,
        },
    );
    let ctx = Arc::new(Context {
        client,
        caches: caches.clone(),
        recorder,
        metrics,
        settings,
        secret_writes,
        sa_writes,
        appeared,
        verifications: Mutex::default(),
        tokens: crate::controller::tokens::Tokens::default(),
        contests: Default::default(),
        reported: Mutex::default(),
        statuses: Mutex::default(),
        pods,
        evictions: EvictionBudget::default(),
        reported_pods: Reported::default(),
        conflicts: Mutex::default(),
        failures: Mutex::default(),
    });

    tokio::spawn({
        let caches = caches.clone();
        async move {
            caches.stores_ready().await;
            info!("caches synced");
            let _ = ready_tx.send(true);
            health.set_ready(true);
        }
    });

    // Map each event to the credentials it concerns, not to all of them: with many namespaces,
    // waking every credential on every namespace or ServiceAccount event would keep the
    // unaffected ones re-planning back to back.
    let by_namespace = {
        let (store, secrets) = (credential_store.clone(), caches.secrets.clone());
        move |ns: PartialObjectMeta<Namespace>| {
            store
                .state()
                .iter()
                .filter(|rc| concerns_namespace(rc, &ns, &secrets))
                .map(|rc| ObjectRef::from_obj(rc.as_ref()))
                .collect::<Vec<_>>()
        }
    };
    let by_service_account = {
        let (store, namespaces) = (credential_store.clone(), caches.namespaces.clone());
        move |sa: ServiceAccount| {
            let ns = namespaces.get(&ObjectRef::new(
                sa.namespace().as_deref().unwrap_or_default(),
            ));
            store
                .state()
                .iter()
                .filter(|rc| concerns_service_account(rc, &sa, ns.as_deref()))
                .map(|rc| ObjectRef::from_obj(rc.as_ref()))
                .collect::<Vec<_>>()
        }
    };
    let by_source = {
        let store = credential_store.clone();
        move |secret: Secret| {
            let (ns, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
            store
                .state()
                .iter()
                .filter(|rc| {
                    resolve::referenced_secrets(&rc.spec.source)
                        .contains(&(ns.as_str(), name.as_str()))
                })
                .map(|rc| ObjectRef::from_obj(rc.as_ref()))
                .collect::<Vec<_>>()
        }
    };

    let by_pod = {
        let (store, namespaces) = (credential_store.clone(), caches.namespaces.clone());
        move |pod: Pod| {
            let ns = namespaces.get(&ObjectRef::new(
                pod.metadata.namespace.as_deref().unwrap_or_default(),
            ));
            store
                .state()
                .iter()
                .filter(|rc| {
                    rc.spec.pod_recovery != PodRecovery::Off
                        && ns.as_deref().is_some_and(|ns| targets_namespace(rc, ns))
                })
                .map(|rc| ObjectRef::from_obj(rc.as_ref()))
                .collect::<Vec<_>>()
        }
    };

    controller
        .watches_stream(pod_events, by_pod)
        .watches_stream(ns_events, by_namespace)
        .watches_stream(sa_events, by_service_account)
        .watches_stream(secret_events, {
            let store = credential_store.clone();
            move |s: Secret| {
                s.labels()
                    .get(CREDENTIAL_LABEL)
                    .map(|c| ObjectRef::<RegistryCredential>::new(c))
                    .filter(|r| store.get(r).is_some())
            }
        })
        .watches_stream(source_events, by_source)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            match result {
                Ok((obj, _)) => debug!(credential = %obj.name, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile failed"),
            }
            future::ready(())
        })
        .await;
    info!("controller stopped");
}

fn targets_namespace(rc: &RegistryCredential, ns: &PartialObjectMeta<Namespace>) -> bool {
    // An invalid selector is reported by the reconcile, so it must run.
    Selection::new(&rc.spec).map_or(true, |selection| {
        selection.targets(&NamespaceFacts {
            name: ns.metadata.name.as_deref().unwrap_or_default(),
            labels: ns.metadata.labels.as_ref(),
            annotations: ns.metadata.annotations.as_ref(),
            terminating: ns.metadata.deletion_timestamp.is_some(),
        })
    })
}

/// A namespace event matters to a credential that targets the namespace now, or that has its
/// copy there (it may have to prune it).
fn concerns_namespace(
    rc: &RegistryCredential,
    ns: &PartialObjectMeta<Namespace>,
    secrets: &reflector::Store<Secret>,
) -> bool {
    targets_namespace(rc, ns)
        || secrets
            .get(
                &ObjectRef::new(&rc.secret_name())
                    .within(ns.metadata.name.as_deref().unwrap_or_default()),
            )
            .is_some()
}

/// A ServiceAccount event matters to a credential that selects the account in a namespace it
/// targets (or in a namespace not cached yet), or whose entry the account carries.
fn concerns_service_account(
    rc: &RegistryCredential,
    sa: &ServiceAccount,
    ns: Option<&PartialObjectMeta<Namespace>>,
) -> bool {
    let name = sa.name_any();
    let selected = rc
        .spec
        .service_accounts
        .iter()
        .any(|p| p == "*" || *p == name);
    (selected && ns.is_none_or(|ns| targets_namespace(rc, ns)))
        || !service_accounts::owned_by(sa, &rc.name_any()).is_empty()
}

/// A watch feeding a reflector store, without managedFields (memory), feeding our write overlay
/// its watermark, yielding every object it touched (deletions included) as a reconcile trigger.
fn cached_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    overlay: Option<Arc<Overlay<K>>>,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    watcher(api, config.any_semantic())
        .default_backoff()
        .modify(|o| o.meta_mut().managed_fields = None)
        .reflect(writer)
        // After the store has the event: the overlay must never give up our write for a store
        // that does not hold it yet.
        .inspect(move |event| {
            if let (Ok(event), Some(overlay)) = (event, &overlay) {
                overlay.observe(event);
            }
        })
        .touched_objects()
}

async fn reconcile(rc: Arc<RegistryCredential>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.caches.wait_until_ready().await;
    let started = Instant::now();
    let name = rc.name_any();
    let api = Api::<RegistryCredential>::all(ctx.client.clone());
    // The cached object of a credential being deleted may be older than its finalizer's removal:
    // a pass woken by a late event would tear down a second time, from caches that may no longer
    // know the credential (nor so its source). Only a fresh read that still carries our finalizer
    // on the same object starts a teardown.
    let rc = if rc.metadata.deletion_timestamp.is_some() {
        match api.get_opt(&name).await {
            Ok(Some(fresh))
                if fresh.uid() == rc.uid() && fresh.finalizers().iter().any(|f| f == FINALIZER) =>
            {
                Arc::new(fresh)
            }
            Ok(_) => {
                debug!(credential = %name, "already torn down");
                return Ok(Action::await_change());
            }
            Err(e) => return Err(Error::api("reading", "RegistryCredential", "", &name, e)),
        }
    } else {
        rc
    };
    let result = finalizer(&api, FINALIZER, rc, |event| async {
        match event {
            finalizer::Event::Apply(rc) => sync(&rc, &ctx).await,
            finalizer::Event::Cleanup(rc) => teardown(&rc, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer {
            name: name.clone(),
            message: other.to_string(),
        },
    });
    ctx.metrics
        .observe_reconcile(result.is_ok(), started.elapsed());
    if result.is_ok() {
        ctx.failures.lock().expect("failures lock").remove(&name);
    }
    result
}

fn error_policy(rc: Arc<RegistryCredential>, error: &Error, ctx: Arc<Context>) -> Action {
    let name = rc.name_any();
    warn!(credential = %name, reason = error.reason(), error = %error, "reconcile failed");
    if error.is_configuration() {
        return Action::requeue(CONFIG_RETRY);
    }
    Action::requeue(backoff(&ctx, &name))
}

/// Per-credential exponential backoff (1 s, 2 s, 4 s, ... up to 5 min), reset on success.
fn backoff(ctx: &Context, name: &str) -> Duration {
    let mut failures = ctx.failures.lock().expect("failures lock");
    let n = failures.entry(name.to_string()).or_insert(0);
    *n = n.saturating_add(1);
    Duration::from_secs(1u64 << (*n - 1).min(9)).min(MAX_BACKOFF)
}

fn owner_of(rc: &RegistryCredential) -> Result<Owner, Error> {
    Ok(Owner {
        name: rc.name_any(),
        uid: rc.uid().ok_or(Error::MissingField("metadata.uid"))?,
    })
}

/// Target namespaces from the namespace cache, sorted.
fn target_namespaces(ctx: &Context, selection: &Selection<'_>) -> Vec<String> {
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
fn update_pod_watch(ctx: &Context, current: &RegistryCredential, leaving: bool) {
    let name = current.name_any();
    let others = ctx.caches.credentials.state().iter().any(|rc| {
        rc.name_any() != name
            && rc.spec.pod_recovery != PodRecovery::Off
            && rc.metadata.deletion_timestamp.is_none()
    });
    ctx.pods
        .set_wanted(others || (!leaving && current.spec.pod_recovery != PodRecovery::Off));
}

async fn sync(rc: &RegistryCredential, ctx: &Context) -> Result<Action, Error> {
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
        Some(spec) => match ctx.tokens.resolve(ctx, rc, spec).await {
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
            first
                .map(|f| f.reason.clone())
                .unwrap_or_else(|| "Progressing".into())
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
        credentials: verification(ctx, rc, &resolved).await,
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

/// What pod recovery did in a pass.
struct Recovered {
    /// Pods not recovered yet; `None` keeps the last count (the pod watch is still listing).
    awaiting: Option<u32>,
    /// When to look again for pods held back (refused or rate-limited evictions).
    retry: Option<Duration>,
}

/// Retry of an eviction a PodDisruptionBudget refused.
const EVICTION_RETRY: Duration = Duration::from_secs(10);

/// `spec.podRecovery`: pods that failed to pull before the Secret reached their ServiceAccount.
/// Runs after apply, so that the ServiceAccounts it reads include this pass's writes.
async fn recover(
    ctx: &Context,
    rc: &RegistryCredential,
    view: &CacheView<'_>,
    resolved: &ResolvedSource,
    targets: &[String],
    secret_name: &str,
) -> Recovered {
    let name = rc.name_any();
    let mode = rc.spec.pod_recovery;
    if mode == PodRecovery::Off {
        ctx.reported_pods.forget(&name);
        ctx.metrics
            .pods_awaiting_recovery
            .remove(&CredentialLabels {
                credential: name.clone(),
            });
        return Recovered {
            awaiting: Some(0),
            retry: None,
        };
    }
    let Some(pods) = ctx.pods.pods() else {
        // The watch has just started: its initial list triggers a pass for each failing pod.
        return Recovered {
            awaiting: None,
            retry: Some(Duration::from_secs(5)),
        };
    };
    let Ok(config) = DockerConfig::from_dockerconfigjson(&resolved.data) else {
        return Recovered {
            awaiting: None,
            retry: None,
        };
    };
    let offer = recovery::Offer {
        targets,
        service_accounts: &rc.spec.service_accounts,
        secret_name,
        keys: config.registries().collect(),
    };
    let found = recovery::candidates(pods.iter().map(AsRef::as_ref), &offer, |ns, account| {
        view.service_accounts(ns).iter().any(|sa| {
            sa.metadata.name.as_deref() == Some(account) && service_accounts::lists(sa, secret_name)
        })
    });
    let fresh: Vec<String> = ctx
        .reported_pods
        .fresh(&name, &found)
        .into_iter()
        .map(|c| c.uid.clone())
        .collect();
    let (mut awaiting, mut retry) = (0u32, None::<Duration>);
    let mut hold = |wait: Duration| retry = Some(retry.map_or(wait, |r: Duration| r.min(wait)));
    for pod in &found {
        let first = fresh.contains(&pod.uid);
        if mode == PodRecovery::Evict && pod.recreated {
            if let Err(wait) = ctx
                .evictions
                .take(&name, ctx.settings.max_evictions_per_minute)
            {
                awaiting += 1;
                hold(wait);
                continue;
            }
            let api = Api::<Pod>::namespaced(ctx.client.clone(), &pod.namespace);
            match api.evict(&pod.name, &EvictParams::default()).await {
                Ok(_) => {
                    info!(credential = %name, namespace = %pod.namespace, pod = %pod.name, "evicted a pod to recover its pull");
                    ctx.metrics
                        .pods_recovered
                        .get_or_create(&CredentialLabels {
                            credential: name.clone(),
                        })
                        .inc();
                    publish_on_pod(
                        ctx,
                        pod,
                        EventType::Normal,
                        "EvictedForPullSecret",
                        format!(
                            "evicted by RegistryCredential {name} so that its controller recreates it with imagePullSecrets {secret_name} (ServiceAccount {} lists it now)",
                            pod.service_account
                        ),
                    )
                    .await;
                }
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => {
                    // 429: a PodDisruptionBudget says no. Never forced: asked again later.
                    ctx.evictions.refund(&name);
                    awaiting += 1;
                    hold(EVICTION_RETRY);
                    if first {
                        publish_on_pod(
                            ctx,
                            pod,
                            EventType::Warning,
                            "EvictionRefused",
                            format!(
                                "RegistryCredential {name} could not evict the pod to recover its pull ({}); retrying",
                                crate::controller::error::api_message(&e)
                            ),
                        )
                        .await;
                    }
                }
            }
        } else {
            awaiting += 1;
            if first {
                let why = if mode == PodRecovery::Evict {
                    " (a pod without a ReplicaSet, StatefulSet, DaemonSet or Job is never evicted)"
                } else {
                    ""
                };
                publish_on_pod(
                    ctx,
                    pod,
                    EventType::Warning,
                    "RecreateToPull",
                    format!(
                        "recreate it to pick up {secret_name}: ServiceAccount {} lists it now, but the pod's imagePullSecrets were fixed when it was created{why}",
                        pod.service_account
                    ),
                )
                .await;
            }
        }
    }
    ctx.metrics
        .pods_awaiting_recovery
        .get_or_create(&CredentialLabels {
            credential: name.clone(),
        })
        .set(awaiting.into());
    Recovered {
        awaiting: Some(awaiting),
        retry,
    }
}

/// An Event on a pod, in its namespace.
async fn publish_on_pod(
    ctx: &Context,
    pod: &recovery::Candidate,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(pod.name.clone()),
        namespace: Some(pod.namespace.clone()),
        uid: Some(pod.uid.clone()),
        ..Default::default()
    };
    publish_about(ctx, &reference, "RecoverPull", type_, reason, note).await;
}

/// Asks each registry of the config whether it accepts the credentials, when verification is on
/// and due (interval elapsed, or the source changed).
async fn verification(
    ctx: &Context,
    rc: &RegistryCredential,
    resolved: &ResolvedSource,
) -> CredentialsCondition {
    let Some(verify) = &rc.spec.verify else {
        return CredentialsCondition::Off;
    };
    let name = rc.name_any();
    let interval = Duration::from_secs(verify.interval_seconds.max(10).into());
    let due = match ctx
        .verifications
        .lock()
        .expect("verifications lock")
        .get(&name)
    {
        Some((at, version)) => at.elapsed() >= interval || *version != resolved.version,
        None => true,
    };
    if !due {
        return CredentialsCondition::Keep;
    }
    let set = |valid: bool, reason: &str, message: String| CredentialsCondition::Set {
        valid,
        reason: reason.into(),
        message,
    };
    let checker = match Checker::new(
        verify.ca_bundle.as_deref().map(str::as_bytes),
        Duration::from_secs(10),
    ) {
        Ok(c) => c.forbid_cross_host_realms(ctx.settings.forbid_cross_host_realms),
        Err(e) => {
            return set(
                false,
                "InvalidCABundle",
                format!("spec.verify.caBundle: {e}"),
            );
        }
    };
    let Ok(config) = DockerConfig::from_dockerconfigjson(&resolved.data) else {
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
        let checker = &checker;
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
    ctx.verifications
        .lock()
        .expect("verifications lock")
        .insert(name, (Instant::now(), resolved.version.clone()));
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

/// A report for a configuration problem: the counts stay as last observed.
fn stalled_report(
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
                    .map(|f| Failure {
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
fn key_warnings(registries: &[String]) -> Vec<String> {
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
async fn write_status(ctx: &Context, rc: &RegistryCredential, report: Report) -> Result<(), Error> {
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
        &PatchParams::default(),
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

/// One Warning Event per Secret found carrying our labels without being ours, while it lasts.
async fn report_unowned(ctx: &Context, rc: &RegistryCredential, unowned: &[Failure]) {
    for finding in ctx.new_findings(&rc.name_any(), unowned) {
        warn!(credential = %rc.name_any(), namespace = %finding.namespace, "{}", finding.message);
        publish(
            ctx,
            rc,
            EventType::Warning,
            apply::NOT_OWNED,
            finding.message.clone(),
        )
        .await;
    }
}

async fn publish(
    ctx: &Context,
    rc: &RegistryCredential,
    type_: EventType,
    reason: &str,
    note: String,
) {
    publish_about(ctx, &rc.object_ref(&()), "Reconcile", type_, reason, note).await;
}

/// Events go through the one Recorder of the process, so that repeats aggregate.
async fn publish_about(
    ctx: &Context,
    regarding: &ObjectReference,
    action: &str,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(truncate(note, 1000)),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, regarding).await {
        warn!(regarding = ?regarding.name, error = %e, "could not publish event");
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

fn summarize(namespaces: &[String]) -> String {
    let shown: Vec<&str> = namespaces.iter().take(10).map(String::as_str).collect();
    match namespaces.len() {
        n if n > shown.len() => format!("{} and {} more", shown.join(", "), n - shown.len()),
        _ => shown.join(", "),
    }
}

async fn teardown(rc: &RegistryCredential, ctx: &Context) -> Result<Action, Error> {
    update_pod_watch(ctx, rc, true);
    let owner = owner_of(rc)?;
    // The last chance to remove our entries: plan from ServiceAccounts read just now in every
    // namespace where we left something, not from caches that may be a moment behind.
    let view = ctx.view(rc);
    let mut namespaces: Vec<String> = view
        .secrets_of(&owner.name)
        .iter()
        .filter_map(|s| s.metadata.namespace.clone())
        .chain(
            view.service_accounts_of(&owner.name)
                .iter()
                .filter_map(|sa| sa.metadata.namespace.clone()),
        )
        .collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    let fresh: Vec<Arc<ServiceAccount>> = futures::stream::iter(namespaces)
        .map(|ns| {
            let api = Api::<ServiceAccount>::namespaced(ctx.client.clone(), &ns);
            async move {
                api.list(&kube::api::ListParams::default())
                    .await
                    .map_err(|e| Error::api("listing", "ServiceAccounts", &ns, "", e))
            }
        })
        .buffer_unordered(ctx.settings.write_concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flat_map(|list| list.items)
        .map(Arc::new)
        .collect();
    let view = plan::FreshServiceAccounts {
        inner: &view,
        service_accounts: fresh,
    };
    let plan = plan::teardown(&owner, rc.spec.deletion_policy, &view);
    let secret_name = rc.secret_name();
    let cleaned = Apply {
        ctx,
        owner: &owner,
        secret_name: &secret_name,
        data: &[],
        conflict_policy: rc.spec.conflict_policy,
        source: &rc.spec.source,
    }
    .cleanups(plan.cleanups)
    .await;
    // Left alone for good: they do not hold the deletion up.
    let unowned: Vec<Failure> = cleaned
        .unowned
        .into_iter()
        .chain(plan.unowned.iter().map(|s| {
            let (ns, name) = (
                s.metadata.namespace.as_deref().unwrap_or_default(),
                s.metadata.name.as_deref().unwrap_or_default(),
            );
            Failure {
                namespace: ns.into(),
                reason: apply::NOT_OWNED.into(),
                message: plan::not_owned(
                    ns,
                    name,
                    &owner.name,
                    "no controller ownerReference of this credential",
                ),
            }
        }))
        .collect();
    report_unowned(ctx, rc, &unowned).await;
    let failures = cleaned.failures;
    if let Some(first) = failures.first() {
        return Err(Error::Finalizer {
            name: owner.name.clone(),
            message: format!(
                "cleanup failed in {} namespaces; first: {}",
                failures.len(),
                first.message
            ),
        });
    }
    ctx.metrics.forget(&owner.name);
    ctx.tokens.forget(&owner.name);
    ctx.contests.forget(&owner.name);
    ctx.forget_status(rc);
    ctx.forget_findings(&owner.name);
    ctx.reported_pods.forget(&owner.name);
    ctx.evictions.forget(&owner.name);
    info!(credential = %owner.name, policy = ?rc.spec.deletion_policy, "cleaned up");
    Ok(Action::await_change())
}
