//! Ownership: the operator deletes or rewrites only what it can prove is its own — a copy with
//! this credential's controller ownerReference, written by the operator, that is nobody's source —
//! and a credential's deletion runs its teardown once, whatever events arrive meanwhile.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use regcred_operator::api::{CREDENTIAL_LABEL, MANAGED_BY_LABEL};
use serde_json::json;

use crate::support::*;

/// Rounds of the deletion race: each deletes a credential while ServiceAccount events for it keep
/// arriving. Before the teardown ran once, about one round in ten deleted the source.
const RACE_ROUNDS: usize = 12;

/// A source exported from a copy (`kubectl get secret -o yaml` keeps our labels).
async fn exported_source(client: &Client, name: &str, password: &str) -> Secret {
    ensure_namespace(client, SOURCE_NS).await;
    let config = docker_config("registry.example.com", "robot", password);
    let mut source = secret_object(
        SOURCE_NS,
        name,
        "kubernetes.io/dockerconfigjson",
        &[(".dockerconfigjson", config.as_bytes())],
    );
    source.metadata.labels = Some(labels(&[
        (MANAGED_BY_LABEL, "regcred-operator"),
        (CREDENTIAL_LABEL, name),
    ]));
    put_secret(client, &source).await
}

/// A Secret dressed as a copy of `credential` (our labels, no ownerReference), made by hand.
async fn lookalike(client: &Client, ns: &str, name: &str, credential: &str) -> Secret {
    put_secret(client, &lookalike_object(ns, name, credential)).await
}

fn lookalike_object(ns: &str, name: &str, credential: &str) -> Secret {
    let mut secret = secret_object(
        ns,
        name,
        "kubernetes.io/dockerconfigjson",
        &[(
            ".dockerconfigjson",
            br#"{"auths":{"lookalike.example.com":{"auth":"dTpw"}}}"#,
        )],
    );
    secret.metadata.labels = Some(labels(&[
        (MANAGED_BY_LABEL, "regcred-operator"),
        (CREDENTIAL_LABEL, credential),
    ]));
    secret
}

/// Lines of the shared operator's log that mention `credential` and contain `text`.
fn operator_log_lines(credential: &str, text: &str) -> usize {
    let dir = std::env::var("REGCRED_TEST_LOG_DIR")
        .expect("REGCRED_TEST_LOG_DIR is set by tests/run-integration.sh");
    let log = std::fs::read_to_string(std::path::Path::new(&dir).join("operator.log"))
        .expect("reading the shared operator's log");
    log.lines()
        .filter(|l| l.contains(text) && l.contains(credential))
        .count()
}

/// Status failures of a credential with `reason`, as (namespace, message).
async fn failures_with(client: &Client, name: &str, reason: &str) -> Vec<(String, String)> {
    credential(client, name)
        .await
        .status
        .map(|s| s.failures)
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f.reason == reason)
        .map(|f| (f.namespace, f.message))
        .collect()
}

/// The Events with `reason` about a credential, and the highest series count among them.
async fn events_with(client: &Client, name: &str, reason: &str) -> (usize, i32) {
    let events: Vec<_> = events_for(client, name)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect();
    let count = events
        .iter()
        .map(|e| e.series.as_ref().map_or(1, |s| s.count))
        .max()
        .unwrap_or(0);
    (events.len(), count)
}

/// The race of the double teardown: the credential is deleted while ServiceAccounts keep
/// appearing in its namespaces (each wakes it). Its exported source, which carries our labels,
/// must survive every round, and so must every foreign ServiceAccount entry; the teardown runs
/// once per credential.
#[tokio::test]
async fn deletion_during_service_account_events_removes_only_our_copies() {
    let client = admin().await;
    for round in 0..RACE_ROUNDS {
        let name = unique("race");
        let pw = password();
        let written = exported_source(&client, &name, &pw).await;
        let key = unique("race");
        let targets = [
            namespace(&client, "race", &[(&key, "yes")]).await,
            namespace(&client, "race", &[(&key, "yes")]).await,
        ];
        for ns in &targets {
            Api::<ServiceAccount>::namespaced(client.clone(), ns)
                .patch(
                    "default",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"imagePullSecrets": [{"name": "other-tool"}]})),
                )
                .await
                .expect("adding a foreign entry");
        }
        create_credential(
            &client,
            &name,
            json!({"source": {"secretRef": {"namespace": SOURCE_NS, "name": name}},
                   "namespaceSelector": {"matchLabels": {key.clone(): "yes"}},
                   "serviceAccounts": ["*"]}),
        )
        .await;
        for ns in &targets {
            wait_copy(&client, ns, &name, &pw).await;
            wait_sa_lists(&client, ns, "default", &name).await;
        }
        wait_synced(&client, &name).await;

        // ServiceAccount events for the credential, from before the deletion until after it.
        let churn = tokio::spawn({
            let (client, targets) = (client.clone(), targets.clone());
            async move {
                for i in 0.. {
                    for ns in &targets {
                        let sa = ServiceAccount {
                            metadata: kube::api::ObjectMeta {
                                name: Some(format!("churn-{i}")),
                                ..Default::default()
                            },
                            ..Default::default()
                        };
                        let _ = Api::<ServiceAccount>::namespaced(client.clone(), ns)
                            .create(&PostParams::default(), &sa)
                            .await;
                    }
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(20 * (round as u64 % 5))).await;
        delete_credential(&client, &name).await;
        for ns in &targets {
            wait_secret_gone(&client, ns, &name).await;
        }
        // Late events for the gone credential keep arriving: the source stays through them.
        stays("the source", Duration::from_secs(1), || async {
            get_secret(&client, SOURCE_NS, &name)
                .await
                .map(|_| ())
                .ok_or(format!(
                    "round {round}: the source {SOURCE_NS}/{name} was deleted"
                ))
        })
        .await;
        churn.abort();

        let now = get_secret(&client, SOURCE_NS, &name).await.unwrap();
        assert_eq!(
            now.metadata.resource_version, written.metadata.resource_version,
            "round {round}: the source was written"
        );
        for ns in &targets {
            let sa = get_sa(&client, ns, "default").await.unwrap();
            assert_eq!(
                pull_secret_names(&sa),
                ["other-tool"],
                "round {round}: {ns}/default keeps exactly the foreign entry"
            );
            let listing: Vec<String> = Api::<ServiceAccount>::namespaced(client.clone(), ns)
                .list(&Default::default())
                .await
                .expect("listing ServiceAccounts")
                .items
                .iter()
                .filter(|sa| pull_secret_names(sa).contains(&name))
                .map(kube::ResourceExt::name_any)
                .collect();
            assert!(
                listing.is_empty(),
                "round {round}: {ns}: {listing:?} still list {name}"
            );
        }
        assert_eq!(
            operator_log_lines(&name, "cleaned up"),
            1,
            "round {round}: the teardown of {name} ran once"
        );
    }
}

/// A Secret dressed as our copy outside the targets (a decoy, a copy exported elsewhere) is
/// never deleted: not while the credential syncs, not when it is deleted. It is reported once
/// (one Event, one status entry) while the credential stays Ready.
#[tokio::test]
async fn labelled_secret_without_our_owner_reference_is_reported_never_deleted() {
    let client = admin().await;
    let s = setup(&client, "own-decoy", 1, json!({})).await;
    wait_synced(&client, &s.name).await;
    let elsewhere = namespace(&client, "own-decoy-x", &[]).await;
    let decoy = lookalike(&client, &elsewhere, &s.name, &s.name).await;

    // Two rotations: two more passes that see the decoy.
    for _ in 0..2 {
        let pw = rotate(&client, &s.source).await;
        wait_copy(&client, &s.namespaces[0], &s.name, &pw).await;
    }
    let found = wait_for("the decoy in status.failures", TIMEOUT, || async {
        let f = failures_with(&client, &s.name, "NotOwned").await;
        if f.iter().any(|(ns, _)| *ns == elsewhere) {
            Ok(f)
        } else {
            Err(f)
        }
    })
    .await;
    assert!(
        found[0].1.contains("not its copy") && found[0].1.contains("never overwritten or deleted"),
        "{found:?}"
    );
    wait_synced(&client, &s.name).await;
    wait_event(&client, &s.name, "NotOwned").await;
    let pw = rotate(&client, &s.source).await;
    wait_copy(&client, &s.namespaces[0], &s.name, &pw).await;
    wait_synced(&client, &s.name).await;
    assert_eq!(
        events_with(&client, &s.name, "NotOwned").await,
        (1, 1),
        "reported once, not once per pass"
    );

    delete_credential(&client, &s.name).await;
    wait_secret_gone(&client, &s.namespaces[0], &s.name).await;
    let now = get_secret(&client, &elsewhere, &s.name)
        .await
        .expect("the decoy stays");
    assert_eq!(
        now.metadata.resource_version,
        decoy.metadata.resource_version
    );
}

/// A copy replaced by hand with a Secret that keeps our labels but not our ownerReference: the
/// replacement is the user's. It is reported (NotOwned, Ready=False) and never overwritten; once
/// the user deletes it the operator writes its copy again.
#[tokio::test]
async fn replacement_made_by_hand_is_reported_not_overwritten() {
    let client = admin().await;
    let s = setup(&client, "own-repl", 1, json!({})).await;
    wait_synced(&client, &s.name).await;
    let ns = s.namespaces[0].clone();
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    // The operator restores a deleted copy at once: retry until the hand-made one is in place.
    let replacement = lookalike_object(&ns, &s.name, &s.name);
    wait_for("a hand-made replacement in place", TIMEOUT, || async {
        let current = get_secret(&client, &ns, &s.name).await;
        if current
            .as_ref()
            .is_some_and(|c| c.owner_references().is_empty())
        {
            return Ok(());
        }
        if let Some(c) = current {
            let _ = api
                .delete(
                    &s.name,
                    &kube::api::DeleteParams {
                        preconditions: Some(kube::api::Preconditions {
                            uid: c.metadata.uid.clone(),
                            resource_version: None,
                        }),
                        ..Default::default()
                    },
                )
                .await;
        }
        match api.create(&PostParams::default(), &replacement).await {
            Ok(_) => Err("created; checking".to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    let replacement = get_secret(&client, &ns, &s.name).await.unwrap();
    wait_problem(&client, &s.name, "replacement", "NotOwned", "not its copy").await;
    wait_event(&client, &s.name, "NotOwned").await;
    assert_copy_untouched_and_quiet(&client, &s.name, &ns, &replacement).await;
    let now = get_secret(&client, &ns, &s.name).await.unwrap();
    assert_eq!(
        now.data, replacement.data,
        "the replacement keeps its content"
    );

    api.delete(&s.name, &Default::default())
        .await
        .expect("deleting the replacement");
    wait_copy(&client, &ns, &s.name, &s.password).await;
    wait_synced(&client, &s.name).await;
}

/// A Secret that carries our labels and even our controller ownerReference, but that the
/// operator never wrote (made elsewhere and applied by hand), is not deleted when its namespace
/// leaves the targets: a fresh read before any delete must prove the copy ours.
#[tokio::test]
async fn copy_the_operator_did_not_write_is_not_pruned() {
    let client = admin().await;
    let s = setup(&client, "own-forged", 1, json!({})).await;
    let rc = wait_synced(&client, &s.name).await;
    let elsewhere = namespace(&client, "own-forged-x", &[]).await;
    let mut forged = secret_object(
        &elsewhere,
        &s.name,
        "kubernetes.io/dockerconfigjson",
        &[(".dockerconfigjson", br#"{"auths":{}}"#)],
    );
    forged.metadata.labels = Some(labels(&[
        (MANAGED_BY_LABEL, "regcred-operator"),
        (CREDENTIAL_LABEL, &s.name),
    ]));
    forged.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "regcred.dev/v1alpha1".into(),
            kind: "RegistryCredential".into(),
            name: s.name.clone(),
            uid: rc.uid().unwrap(),
            controller: Some(true),
            block_owner_deletion: None,
        },
    ]);
    let forged = put_secret(&client, &forged).await;
    wait_for("the forged copy reported", TIMEOUT, || async {
        let f = failures_with(&client, &s.name, "NotOwned").await;
        match f.iter().find(|(ns, _)| *ns == elsewhere) {
            Some((_, message)) if message.contains("did not write it") => Ok(()),
            _ => Err(f),
        }
    })
    .await;
    let now = get_secret(&client, &elsewhere, &s.name)
        .await
        .expect("the forged copy stays");
    assert_eq!(
        now.metadata.resource_version,
        forged.metadata.resource_version
    );
    wait_synced(&client, &s.name).await;
}
