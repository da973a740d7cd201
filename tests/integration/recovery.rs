//! Pod recovery (`spec.podRecovery`) and admission-time injection, on pods whose pull failure is
//! written through the pod status subresource (the way the kubelet reports it) on pods bound to a
//! node name no kubelet serves, so that nothing else changes them.

use std::time::Duration;

use k8s_openapi::api::{
    admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
    apps::v1::ReplicaSet,
    core::v1::Pod,
    events::v1::Event,
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::support::*;

const IMAGE: &str = "registry.example.com/team/app:1";
/// No kubelet serves this node: the pods stay as the test writes them.
const NO_NODE: &str = "regcred-test-no-kubelet";

/// A pod bound to [`NO_NODE`], with its own `imagePullSecrets` if given, optionally controlled by
/// `owner` (kind, name, uid), labelled `app: <name>`.
async fn create_pod(
    client: &Client,
    ns: &str,
    name: &str,
    own_secrets: &[&str],
    owner: Option<(&str, &str, &str)>,
) -> Pod {
    let mut pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "nodeName": NO_NODE,
            "containers": [{"name": "app", "image": IMAGE}],
            "imagePullSecrets": own_secrets.iter().map(|s| json!({"name": s})).collect::<Vec<_>>(),
        }
    }))
    .unwrap();
    if let Some((kind, owner_name, uid)) = owner {
        pod.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "apps/v1".into(),
                kind: kind.into(),
                name: owner_name.into(),
                uid: uid.into(),
                controller: Some(true),
                block_owner_deletion: None,
            },
        ]);
    }
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap_or_else(|e| panic!("creating pod {ns}/{name}: {e}"))
}

/// What the kubelet writes when a pull fails.
async fn fail_pull(client: &Client, ns: &str, name: &str) {
    Api::<Pod>::namespaced(client.clone(), ns)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"phase": "Pending", "containerStatuses": [{
                "name": "app", "image": IMAGE, "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff",
                    "message": format!("Back-off pulling image \"{IMAGE}\"")}}}]}}),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("writing the status of pod {ns}/{name}: {e}"));
}

/// A ReplicaSet no controller acts on (the test cluster runs none): a real owner for a pod.
async fn replica_set(client: &Client, ns: &str, name: &str) -> String {
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "app", "image": IMAGE}]}}}
    }))
    .unwrap();
    Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &rs)
        .await
        .expect("creating ReplicaSet")
        .uid()
        .unwrap()
}

async fn pod_events(client: &Client, ns: &str, pod: &str, reason: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("listing events")
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod)
        })
        .collect()
}

async fn wait_pod_event(client: &Client, ns: &str, pod: &str, reason: &str) -> Event {
    wait_for(
        &format!("an Event {reason} on pod {ns}/{pod}"),
        TIMEOUT,
        || async {
            pod_events(client, ns, pod, reason)
                .await
                .into_iter()
                .next()
                .ok_or(())
        },
    )
    .await
}

async fn pod_exists(client: &Client, ns: &str, name: &str) -> bool {
    Api::<Pod>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("reading pod")
        .is_some()
}

/// Evicted: gone, or being deleted (no kubelet serves [`NO_NODE`] to confirm the deletion).
async fn evicted(client: &Client, ns: &str, name: &str) -> bool {
    Api::<Pod>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("reading pod")
        .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
}

/// Waits until pod `name` is [`evicted`].
async fn wait_evicted(client: &Client, ns: &str, name: &str, what: &str) {
    wait_for(what, TIMEOUT, || async {
        if evicted(client, ns, name).await {
            Ok(())
        } else {
            Err("still there")
        }
    })
    .await;
}

/// A namespace whose pods fail before the credential selects it; the credential's source covers
/// [`IMAGE`]'s registry. Returns (credential, namespace, selector key).
async fn failing_before_selected(
    client: &Client,
    prefix: &str,
    recovery: &str,
    pods: &[(&str, Option<&str>)],
) -> (String, String, String) {
    let key = unique(prefix);
    let ns = namespace(client, prefix, &[]).await;
    for (pod, owner_kind) in pods {
        let owner = match owner_kind {
            Some(kind) => {
                let uid = replica_set(client, &ns, pod).await;
                Some((*kind, pod.to_string(), uid))
            }
            None => None,
        };
        create_pod(
            client,
            &ns,
            pod,
            &[],
            owner.as_ref().map(|(k, n, u)| (*k, n.as_str(), u.as_str())),
        )
        .await;
        fail_pull(client, &ns, pod).await;
    }
    let (source, _) = source_secret(client).await;
    let name = unique(prefix);
    create_credential(
        client,
        &name,
        json!({"source": {"secretRef": {"namespace": SOURCE_NS, "name": source}},
               "namespaceSelector": {"matchLabels": {key.clone(): "yes"}},
               "podRecovery": recovery}),
    )
    .await;
    label_namespace(client, &ns, &key, Some("yes")).await;
    wait_sa_lists(client, &ns, "default", &name).await;
    (name, ns, key)
}

/// `Report`: the pod that failed before the credential reached it gets one Event saying how to
/// recover, and is counted; it is never deleted.
#[tokio::test]
async fn report_tells_a_failing_pod_to_be_recreated_and_counts_it() {
    let client = admin().await;
    let (name, ns, _) = failing_before_selected(
        &client,
        "rec-report",
        "Report",
        &[("web", Some("ReplicaSet"))],
    )
    .await;
    let event = wait_pod_event(&client, &ns, "web", "RecreateToPull").await;
    let note = event.note.unwrap_or_default();
    assert!(
        note.contains(&format!("recreate it to pick up {name}")),
        "{note}"
    );
    wait_awaiting(&client, &name, 1).await;
    wait_synced(&client, &name).await;
    assert!(pod_exists(&client, &ns, "web").await, "Report never evicts");
    // Later passes do not repeat the Event.
    let source = credential(&client, &name)
        .await
        .spec
        .source
        .secret_ref
        .unwrap()
        .name;
    rotate(&client, &source).await;
    wait_synced(&client, &name).await;
    let events = pod_events(&client, &ns, "web", "RecreateToPull").await;
    assert_eq!(events.len(), 1);
    assert!(
        events[0].series.as_ref().is_none_or(|s| s.count <= 1),
        "{events:?}"
    );
}

/// `Evict`: the ReplicaSet's pod is evicted (its controller would recreate it with the Secret);
/// the bare pod is only reported and stays.
#[tokio::test]
async fn evict_recovers_a_controlled_pod_and_only_reports_a_bare_one() {
    let client = admin().await;
    let (name, ns, _) = failing_before_selected(
        &client,
        "rec-evict",
        "Evict",
        &[("web", Some("ReplicaSet")), ("bare", None)],
    )
    .await;
    wait_evicted(&client, &ns, "web", "the ReplicaSet's pod to be evicted").await;
    wait_pod_event(&client, &ns, "web", "EvictedForPullSecret").await;
    let event = wait_pod_event(&client, &ns, "bare", "RecreateToPull").await;
    assert!(
        event.note.unwrap_or_default().contains("never evicted"),
        "a bare pod is told why it stays"
    );
    wait_awaiting(&client, &name, 1).await;
    stays("the bare pod", Duration::from_secs(2), || async {
        if evicted(&client, &ns, "bare").await {
            Err("deleted")
        } else {
            Ok(())
        }
    })
    .await;
    let metrics = scrape(&std::env::var("REGCRED_TEST_METRICS_URL").unwrap())
        .await
        .expect("metrics");
    assert_eq!(
        sample(
            &metrics,
            &format!("regcred_pods_recovered_total{{credential=\"{name}\"}}")
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            &format!("regcred_pods_awaiting_recovery{{credential=\"{name}\"}}")
        ),
        Some(1.0)
    );
}

/// An eviction the API server refuses is retried, never forced: the pod is not deleted while
/// the refusal holds, and is evicted once it is lifted. The refusal here is an admission policy on
/// `pods/eviction` (as a policy engine guarding a workload would answer). A PodDisruptionBudget
/// would not refuse: the Eviction API never counts a `Pending` pod against its budget, and a pod
/// that never pulled its image is `Pending`; the test shows that too.
#[tokio::test]
async fn a_refused_eviction_is_retried_never_forced() {
    let client = admin().await;
    let key = unique("rec-hold");
    let ns = namespace(&client, "rec-hold", &[(&format!("{key}-hold"), "yes")]).await;
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "keep-web"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}
    }))
    .unwrap();
    Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &pdb)
        .await
        .unwrap();
    let policy_name = unique("rec-hold");
    let policies = Api::<ValidatingAdmissionPolicy>::all(client.clone());
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone());
    policies
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": policy_name},
                "spec": {
                    "failurePolicy": "Fail",
                    "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                        "operations": ["CREATE"], "resources": ["pods/eviction"]}]},
                    "validations": [{"expression": "false", "message": "held by the test"}]
                }
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": policy_name},
                "spec": {"policyName": policy_name, "validationActions": ["Deny"],
                         "matchResources": {"namespaceSelector":
                             {"matchLabels": {format!("{key}-hold"): "yes"}}}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    // The policy is in force once an eviction in the namespace is refused.
    let probe_uid = replica_set(&client, &ns, "probe").await;
    create_pod(
        &client,
        &ns,
        "probe",
        &[],
        Some(("ReplicaSet", "probe", &probe_uid)),
    )
    .await;
    wait_for("the eviction policy in force", TIMEOUT, || async {
        match Api::<Pod>::namespaced(client.clone(), &ns)
            .evict("probe", &Default::default())
            .await
        {
            Err(kube::Error::Api(s)) if s.message.contains("held by the test") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    let uid = replica_set(&client, &ns, "web").await;
    create_pod(&client, &ns, "web", &[], Some(("ReplicaSet", "web", &uid))).await;
    fail_pull(&client, &ns, "web").await;
    let (source, _) = source_secret(&client).await;
    let name = unique("rec-hold");
    create_credential(
        &client,
        &name,
        json!({"source": {"secretRef": {"namespace": SOURCE_NS, "name": source}},
               "namespaceSelector": {"matchLabels": {key.clone(): "yes"}},
               "podRecovery": "Evict"}),
    )
    .await;
    label_namespace(&client, &ns, &key, Some("yes")).await;
    let refused = wait_pod_event(&client, &ns, "web", "EvictionRefused").await;
    assert!(
        refused
            .note
            .unwrap_or_default()
            .contains("held by the test")
    );
    wait_awaiting(&client, &name, 1).await;
    stays(
        "the held pod not deleted",
        Duration::from_secs(3),
        || async {
            if evicted(&client, &ns, "web").await {
                Err("deleted although its eviction was refused")
            } else {
                Ok(())
            }
        },
    )
    .await;
    bindings
        .delete(&policy_name, &Default::default())
        .await
        .unwrap();
    policies
        .delete(&policy_name, &Default::default())
        .await
        .unwrap();
    wait_evicted(
        &client,
        &ns,
        "web",
        "the pod evicted on a retry, through its budget",
    )
    .await;
    wait_awaiting(&client, &name, 0).await;
}

/// With recovery off everywhere no pod is watched; the watch starts with the first credential
/// that turns it on and stops with the last that turns it off.
#[tokio::test]
async fn pods_are_watched_only_while_a_credential_has_recovery_on() {
    let client = admin().await;
    let instance = unique("rec-watch");
    let mut operator = Operator::start(
        &kubeconfig_path(),
        &instance,
        &format!("{instance}-op"),
        &["--leader-election=false"],
    )
    .await;
    let watch_active = |want: f64| {
        let url = operator.metrics_url.clone();
        async move {
            wait_for(
                &format!("regcred_pod_watch_active {want}"),
                TIMEOUT,
                || async {
                    let m = scrape(&url).await;
                    match m
                        .as_deref()
                        .and_then(|m| sample(m, "regcred_pod_watch_active"))
                    {
                        #[allow(clippy::float_cmp, reason = "a gauge of 0 or 1, exact")]
                        Some(v) if v == want => Ok(()),
                        other => Err(other),
                    }
                },
            )
            .await;
        }
    };
    let key = unique("rec-watch");
    let ns = namespace(&client, "rec-watch", &[(&key, "yes")]).await;
    let (source, _) = source_secret(&client).await;
    let name = unique("rec-watch");
    create_credential_for(
        &client,
        &instance,
        &name,
        json!({"source": {"secretRef": {"namespace": SOURCE_NS, "name": source}},
               "namespaceSelector": {"matchLabels": {key.clone(): "yes"}}}),
    )
    .await;
    wait_sa_lists(&client, &ns, "default", &name).await;
    watch_active(0.0).await;
    patch_spec(&client, &name, json!({"podRecovery": "Report"})).await;
    watch_active(1.0).await;
    patch_spec(&client, &name, json!({"podRecovery": "Off"})).await;
    watch_active(0.0).await;
    operator.assert_running();
}

/// A pod that lists a pull secret of its own gets none from its ServiceAccount (the admission
/// plugin fills only an empty list): the MutatingAdmissionPolicy appends the copy at admission.
/// A pod without any gets the copy from its ServiceAccount, once.
#[tokio::test]
async fn a_pod_with_its_own_pull_secrets_gets_ours_at_admission() {
    let client = admin().await;
    let s = setup(&client, "rec-inject", 1, json!({})).await;
    let ns = s.namespaces[0].clone();
    wait_copy(&client, &ns, &s.name, &s.password).await;
    wait_sa_lists(&client, &ns, "default", &s.name).await;
    // The API server loads a new policy within moments of its creation: retry until it acts.
    let injected = wait_for("the copy injected at admission", TIMEOUT, || async {
        let name = unique("own");
        let pod = create_pod(&client, &ns, &name, &["other-registry"], None).await;
        let names = pod_pull_secret_names(&pod);
        if names.len() > 1 {
            Ok(names)
        } else {
            Err(names)
        }
    })
    .await;
    assert_eq!(injected, ["other-registry", s.name.as_str()]);
    wait_admission_lists(&client, &ns, "default", &s.name).await;
    let plain = create_pod(&client, &ns, "plain", &[], None).await;
    assert_eq!(
        pod_pull_secret_names(&plain),
        [s.name.as_str()],
        "from the ServiceAccount, not twice"
    );
    // A namespace without a copy is left alone.
    let elsewhere = namespace(&client, "rec-inject-x", &[]).await;
    let pod = create_pod(&client, &elsewhere, "own", &["other-registry"], None).await;
    assert_eq!(pod.spec.unwrap().image_pull_secrets.unwrap().len(), 1);
}
