//! The RegistryCredential controller: watches, the mapping of every watched object to the
//! cluster-scoped RegistryCredential key, and the reconcile pipeline
//! resolve → plan → apply (with prune) → status.
//!
//! This module owns the watches and the mapping of events to credentials; one pass is in [`pass`]
//! (a credential being deleted: [`teardown`]). Its layers call only those after them:
//! [`resolve`], [`tokens`] and [`targets`] (what is wanted), [`plan`] and [`recovery`] (the
//! decisions, pure), [`apply`] and [`recover`] (carrying them out), [`status`] and [`events`]
//! (reporting), [`verify`] (registry checks, in a task of their own), over [`context`] and
//! [`cache`] (the watch caches, their indexes and our own recent writes). Writes go through
//! `crate::writes`.

pub(crate) mod apply;
pub(crate) mod cache;
pub(crate) mod contests;
pub(crate) mod context;
pub(crate) mod error;
pub(crate) mod events;
pub(crate) mod ledger;
mod pass;
pub(crate) mod plan;
mod recover;
pub(crate) mod recovery;
pub(crate) mod resolve;
pub(crate) mod service_accounts;
pub mod settings;
pub(crate) mod status;
pub(crate) mod status_writes;
pub(crate) mod targets;
mod teardown;
pub(crate) mod tokens;
pub(crate) mod verdict;
pub(crate) mod verify;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use kube::{
    Api, Client, Resource, ResourceExt,
    core::PartialObjectMeta,
    runtime::{
        Controller, WatchStreamExt,
        controller::{Action, Config},
        events::{Recorder, Reporter},
        finalizer::{self, finalizer},
        reflector::ObjectRef,
        watcher,
    },
};
use tracing::{debug, info, warn};

use crate::{
    api::{
        CREDENTIAL_LABEL, FINALIZER, MANAGED_BY_LABEL, MANAGER, PodRecovery, RegistryCredential,
    },
    controller::cache::{
        Caches,
        slim::{Cached, CachedSecret, facts_of},
        store::Store,
    },
    controller::cache::{index::Index, overlay::Overlay},
    controller::context::{Appearances, Context},
    controller::error::Error,
    controller::ledger::Ledgers,
    controller::recovery::{EvictionBudget, PodWatch, Reported},
    controller::settings::Settings,
    controller::targets::{NamespaceFacts, Selection},
    runtime::http::Health,
    runtime::metrics::Metrics,
};

use pass::sync;
use status_writes::StatusWriter;
use teardown::teardown;
use verify::Verifier;

/// Periodic resync of a converged credential: repairs anything a missed event could hide.
const RESYNC: Duration = Duration::from_secs(600);
/// Re-check of a configuration error, in addition to the watch on the source.
const CONFIG_RETRY: Duration = Duration::from_secs(300);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Runs the controller until `shutdown` completes; in-flight reconciles finish first.
pub(crate) async fn run(
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
    let namespaces = Store::default();
    let ns_events = cached_watch(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default(),
        namespaces.clone(),
        None,
        Vec::new(),
        slim_namespace,
    );

    // Our writes, laid over the caches until each watch has delivered them.
    let secret_writes = Arc::new(Overlay::<Secret>::default());
    let sa_writes = Arc::new(Overlay::<ServiceAccount>::default());

    // ServiceAccounts: watched whole (imagePullSecrets is not metadata), cached slim.
    let service_accounts = Store::default();
    let sas_by_credential = Arc::new(Index::new(service_accounts::credentials_recorded));
    let appeared = Arc::new(Appearances::default());
    let sa_events = cached_watch(
        Api::<ServiceAccount>::all(client.clone()),
        watcher::Config::default(),
        service_accounts.clone(),
        Some(sa_writes.clone()),
        vec![sas_by_credential.clone()],
        slim_service_account,
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
    let secrets = Store::default();
    let secrets_by_credential = Arc::new(Index::new(|secret: &Secret| {
        let label = secret.labels().get(CREDENTIAL_LABEL);
        label.into_iter().cloned().collect()
    }));
    let secret_events = cached_watch(
        Api::<Secret>::all(client.clone()),
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}")),
        secrets.clone(),
        Some(secret_writes.clone()),
        vec![secrets_by_credential.clone()],
        |_| {},
    );

    // Source Secrets: every Secret of each allowed source namespace.
    let mut sources = BTreeMap::new();
    let mut source_streams = Vec::new();
    for ns in &settings.source_namespaces {
        let store = Store::default();
        sources.insert(ns.clone(), store.clone());
        let api = Api::<Secret>::namespaced(client.clone(), ns);
        let events = cached_watch(
            api,
            watcher::Config::default(),
            store,
            None,
            Vec::new(),
            |_| {},
        );
        source_streams.push(events.boxed());
    }
    let source_events = futures::stream::select_all(source_streams);

    // Pods: watched only while some credential has podRecovery on.
    let (pods, pod_events) = PodWatch::new(client.clone(), metrics.pod_watch.clone());

    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    // Registry checks end in their own time: each ending reconciles its credential again.
    let (checked_tx, mut checked) = tokio::sync::mpsc::unbounded_channel();
    let status_writer = Arc::new(StatusWriter::new(client.clone(), checked_tx.clone()));
    let (verifier, checks) = Verifier::start(settings.forbid_cross_host_realms, checked_tx);
    tokio::spawn(checks);
    let checked = futures::stream::poll_fn(move |cx| checked.poll_recv(cx));
    let caches = Caches {
        credentials: credential_store.clone(),
        namespaces,
        service_accounts,
        secrets,
        sources,
        sas_by_credential,
        secrets_by_credential,
        ready,
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: MANAGER.into(),
            instance: None,
        },
    );
    let (events, recording) = events::EventQueue::start(recorder);
    let recording = tokio::spawn(recording);
    let ledgers = Arc::new(Ledgers::default());
    let ctx = Arc::new(Context {
        client,
        caches: caches.clone(),
        events,
        metrics,
        settings,
        secret_writes,
        sa_writes,
        appeared,
        verifier,
        tokens: crate::controller::tokens::Tokens::default(),
        contests: Default::default(),
        reported: Mutex::default(),
        ledgers: ledgers.clone(),
        statuses: Arc::default(),
        status_writer,
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
    // Each also marks the event's namespace for the credentials it wakes (see `ledger`).
    let by_namespace = {
        let (store, secrets) = (credential_store.clone(), caches.secrets.clone());
        let ledgers = ledgers.clone();
        move |ns: PartialObjectMeta<Namespace>| {
            let name = ns.name_any();
            touching(
                &ledgers,
                Some(&name),
                store
                    .state()
                    .iter()
                    .filter(|rc| concerns_namespace(rc, &ns, &secrets)),
            )
        }
    };
    let by_service_account = {
        let (store, namespaces) = (credential_store.clone(), caches.namespaces.clone());
        let ledgers = ledgers.clone();
        move |sa: ServiceAccount| {
            let namespace = sa.namespace().unwrap_or_default();
            let ns = namespaces.get("", &namespace);
            let facts = ns.as_ref().map(|ns| ns.facts(&namespace));
            touching(
                &ledgers,
                Some(&namespace),
                store
                    .state()
                    .iter()
                    .filter(|rc| concerns_service_account(rc, &sa, facts.as_ref())),
            )
        }
    };
    // A source changes every copy: a full pass.
    let by_source = {
        let store = credential_store.clone();
        let ledgers = ledgers.clone();
        move |secret: Secret| {
            let (ns, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
            touching(
                &ledgers,
                None,
                store.state().iter().filter(|rc| {
                    resolve::referenced_secrets(&rc.spec.source)
                        .contains(&(ns.as_str(), name.as_str()))
                }),
            )
        }
    };

    // Pod recovery looks at the pods of every target: a full pass.
    let by_pod = {
        let (store, namespaces) = (credential_store.clone(), caches.namespaces.clone());
        let ledgers = ledgers.clone();
        move |pod: Pod| {
            let name = pod.metadata.namespace.as_deref().unwrap_or_default();
            let ns = namespaces.get("", name);
            let facts = ns.as_ref().map(|ns| ns.facts(name));
            touching(
                &ledgers,
                None,
                store.state().iter().filter(|rc| {
                    rc.spec.pod_recovery != PodRecovery::Off
                        && facts.as_ref().is_some_and(|ns| targets_namespace(rc, ns))
                }),
            )
        }
    };
    let by_copy = {
        let store = credential_store.clone();
        let ledgers = ledgers.clone();
        move |s: Secret| {
            let credential = s.labels().get(CREDENTIAL_LABEL)?;
            let rc = store.get(&ObjectRef::new(credential))?;
            ledgers.touch(
                credential,
                s.metadata.namespace.as_deref().unwrap_or_default(),
            );
            Some(ObjectRef::from_obj(rc.as_ref()))
        }
    };

    controller
        .reconcile_on(checked)
        .watches_stream(pod_events, by_pod)
        .watches_stream(ns_events, by_namespace)
        .watches_stream(sa_events, by_service_account)
        .watches_stream(secret_events, by_copy)
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
    // The Events of the last passes: recorded once the controller (and so every sender) is gone.
    if tokio::time::timeout(Duration::from_secs(5), recording)
        .await
        .is_err()
    {
        warn!("controller stopped with Events not recorded");
    }
    info!("controller stopped");
}

/// The credentials an event wakes, each with the event's namespace marked (all of them when
/// `namespace` is `None`).
fn touching<'a>(
    ledgers: &Ledgers,
    namespace: Option<&str>,
    credentials: impl Iterator<Item = &'a Arc<RegistryCredential>>,
) -> Vec<ObjectRef<RegistryCredential>> {
    credentials
        .map(|rc| {
            let name = rc.name_any();
            match namespace {
                Some(ns) => ledgers.touch(&name, ns),
                None => ledgers.touch_all(&name),
            }
            ObjectRef::from_obj(rc.as_ref())
        })
        .collect()
}

fn targets_namespace(rc: &RegistryCredential, ns: &NamespaceFacts<'_>) -> bool {
    // An invalid selector is reported by the reconcile, so it must run.
    Selection::new(&rc.spec).map_or(true, |selection| selection.targets(ns))
}

/// A namespace event matters to a credential that targets the namespace now, or that has its
/// copy there (it may have to prune it).
fn concerns_namespace(
    rc: &RegistryCredential,
    ns: &PartialObjectMeta<Namespace>,
    secrets: &Store<CachedSecret>,
) -> bool {
    targets_namespace(rc, &facts_of(ns))
        || secrets
            .get(
                ns.metadata.name.as_deref().unwrap_or_default(),
                &rc.secret_name(),
            )
            .is_some()
}

/// A ServiceAccount event matters to a credential that selects the account in a namespace it
/// targets (or in a namespace not cached yet), or whose entry the account carries.
fn concerns_service_account(
    rc: &RegistryCredential,
    sa: &ServiceAccount,
    ns: Option<&NamespaceFacts<'_>>,
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

/// Only what the controller reads of an object is kept in memory: never managedFields, and of a
/// ServiceAccount or Namespace only the annotations of this operator (under GitOps,
/// `last-applied-configuration` alone can be kilobytes per object).
fn keep_our_annotations(meta: &mut kube::api::ObjectMeta) {
    if let Some(annotations) = &mut meta.annotations {
        annotations.retain(|k, _| k.starts_with("regcred.dev/"));
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

fn slim_service_account(sa: &mut ServiceAccount) {
    keep_our_annotations(&mut sa.metadata);
    sa.metadata.labels = None;
    sa.metadata.owner_references = None;
    sa.metadata.finalizers = None;
    sa.secrets = None;
}

fn slim_namespace(ns: &mut PartialObjectMeta<Namespace>) {
    keep_our_annotations(&mut ns.metadata);
    ns.metadata.owner_references = None;
    ns.metadata.finalizers = None;
}

/// A watch feeding `store`, without managedFields and slimmed by `slim` (memory), then the
/// indexes and our write overlay its watermark, yielding every object it touched (deletions
/// included) as a reconcile trigger.
fn cached_watch<K, C>(
    api: Api<K>,
    config: watcher::Config,
    store: Store<C>,
    overlay: Option<Arc<Overlay<K>>>,
    indexes: Vec<Arc<Index<K>>>,
    slim: fn(&mut K),
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    C: Cached<Full = K> + Send + Sync + 'static,
{
    watcher(api, config.any_semantic())
        .default_backoff()
        .modify(move |o| {
            o.meta_mut().managed_fields = None;
            slim(o);
        })
        .inspect(move |event| {
            let Ok(event) = event else { return };
            // The store first: the overlay must never give up our write for a store that does
            // not hold it yet.
            store.observe(event);
            for index in &indexes {
                index.observe(event);
            }
            if let Some(overlay) = &overlay {
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
    } else {
        // What the failed pass did is not known exactly: the next one looks at everything.
        ctx.ledgers.invalidate(&name);
    }
    result
}

#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature kube-runtime calls"
)]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_service_accounts_keep_only_what_the_controller_reads() {
        let mut sa: ServiceAccount = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "default", "namespace": "team", "uid": "u", "resourceVersion": "7",
                "labels": {"app": "x"},
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{...}",
                    crate::api::PULL_SECRETS_ANNOTATION: "acme/acme-pull",
                },
            },
            "imagePullSecrets": [{"name": "acme-pull"}, {"name": "theirs"}],
            "secrets": [{"name": "token"}],
        }))
        .unwrap();
        slim_service_account(&mut sa);
        let annotations = sa.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            [crate::api::PULL_SECRETS_ANNOTATION]
        );
        assert!(sa.metadata.labels.is_none() && sa.secrets.is_none());
        assert_eq!(sa.image_pull_secrets.as_ref().map(Vec::len), Some(2));
        assert_eq!(sa.metadata.resource_version.as_deref(), Some("7"));
    }

    #[test]
    fn cached_namespaces_keep_their_labels_and_our_annotations() {
        let mut ns = PartialObjectMeta::<Namespace>::default();
        ns.metadata.labels = Some([("team".to_string(), "a".to_string())].into());
        ns.metadata.annotations = Some(
            [
                (
                    crate::api::EXCLUDE_ANNOTATION.to_string(),
                    "true".to_string(),
                ),
                ("other".to_string(), "x".repeat(4096)),
            ]
            .into(),
        );
        slim_namespace(&mut ns);
        assert_eq!(ns.metadata.labels.as_ref().map(BTreeMap::len), Some(1));
        assert_eq!(
            ns.metadata.annotations.unwrap().keys().collect::<Vec<_>>(),
            [crate::api::EXCLUDE_ANNOTATION]
        );
    }
}
