//! Pod recovery, the executor: evicts or reports the pods that [`recovery`](super::recovery) picks.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::{Api, ResourceExt, runtime::events::EventType};
use tracing::info;

use super::{events::publish_about, recovery, service_accounts};

use crate::{
    api::{PodRecovery, RegistryCredential},
    controller::context::{CacheView, Context},
    controller::error::status_code,
    controller::plan::View,
    controller::resolve::ResolvedSource,
    dockerconfig::DockerConfig,
    runtime::metrics::CredentialLabels,
};

/// What pod recovery did in a pass.
pub(super) struct Recovered {
    /// Pods not recovered yet; `None` keeps the last count (the pod watch is still listing).
    pub(super) awaiting: Option<u32>,
    /// When to look again for pods held back (refused or rate-limited evictions).
    pub(super) retry: Option<Duration>,
}

/// A second look at pods whose ServiceAccount lists the Secret only by our own write so far.
const UNSEEN_RETRY: Duration = Duration::from_secs(1);

/// Retry of an eviction a PodDisruptionBudget refused.
pub(super) const EVICTION_RETRY: Duration = Duration::from_secs(10);

/// `spec.podRecovery`: pods that failed to pull before the Secret reached their ServiceAccount.
/// Runs after apply, so that the ServiceAccounts it reads include this pass's writes.
pub(super) async fn recover(
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
    let found = recovery::candidates(pods.iter().map(|p| p.pod()), &offer, |ns, account| {
        let listed = view.service_accounts(ns).iter().any(|sa| {
            sa.metadata.name.as_deref() == Some(account) && service_accounts::lists(sa, secret_name)
        });
        // The watch's own copy, without our recent writes laid over it.
        let seen = || {
            (ctx.caches.service_accounts.get(ns, account)).is_some_and(|sa| sa.lists(secret_name))
        };
        if !listed {
            recovery::Listing::No
        } else if seen() {
            recovery::Listing::Seen
        } else {
            recovery::Listing::Written
        }
    });
    let (found, unseen) = recovery::seen_only(found);
    let fresh: Vec<String> = ctx
        .reported_pods
        .fresh(&name, &found)
        .into_iter()
        .map(|c| c.uid.clone())
        .collect();
    let (mut awaiting, mut retry) = (0u32, None::<Duration>);
    let mut hold = |wait: Duration| retry = Some(retry.map_or(wait, |r: Duration| r.min(wait)));
    if unseen > 0 {
        // The watch brings the ServiceAccount moments after our write, and with it a pass.
        awaiting += unseen;
        hold(UNSEEN_RETRY);
    }
    for pod in &found {
        let first = fresh.contains(&pod.uid);
        if mode == PodRecovery::Evict && pod.recreated {
            if ctx.evictions.was_evicted(&pod.uid) {
                continue; // recovered; the watch has not shown it terminating yet
            }
            if let Err(wait) = ctx
                .evictions
                .take(&name, ctx.settings.max_evictions_per_minute)
            {
                awaiting += 1;
                hold(wait);
                continue;
            }
            let api = Api::<Pod>::namespaced(ctx.client.clone(), &pod.namespace);
            match api.evict(&pod.name, &crate::writes::evict_params()).await {
                Ok(_) => {
                    ctx.evictions.evicted(&pod.uid);
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
                    );
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
                        );
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
                );
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
pub(super) fn publish_on_pod(
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
    publish_about(ctx, &reference, "RecoverPull", type_, reason, note);
}
