//! Same-name Secrets we do not manage: Skip leaves them, Adopt takes them over, and two
//! credentials never fight over one Secret.

use std::time::Duration;

use kube::ResourceExt;
use regcred_operator::api::CREDENTIAL_LABEL;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn skip_leaves_unmanaged_secret_byte_identical_and_reports_conflict() {
    let client = admin().await;
    let key = unique("skip");
    let taken = namespace(&client, "skip-taken", &[(&key, "yes")]).await;
    let free = namespace(&client, "skip-free", &[(&key, "yes")]).await;
    let theirs = docker_config("their.example.com", "them", "their-password");
    let original = put_secret(
        &client,
        &secret_object(
            &taken,
            "shared-pull",
            "kubernetes.io/dockerconfigjson",
            &[(".dockerconfigjson", theirs.as_bytes())],
        ),
    )
    .await;
    let (src, pw) = source_secret(&client).await;
    let name = unique("skip");
    create_credential(
        &client,
        &name,
        json!({"source": {"secretRef": {"namespace": SOURCE_NS, "name": src}}, "secretName": "shared-pull",
               "namespaceSelector": {"matchLabels": {key.clone(): "yes"}}}),
    )
    .await;
    wait_copy(&client, &free, "shared-pull", &pw).await;
    let rc = wait_ready_reason(&client, &name, "Conflict").await;
    let status = rc.status.unwrap();
    assert_eq!((status.target_namespaces, status.synced_namespaces), (2, 1));
    assert_eq!(status.failures.len(), 1);
    assert_eq!(status.failures[0].namespace, taken);
    assert!(
        status.failures[0]
            .message
            .contains("not managed by regcred-operator"),
        "{:?}",
        status.failures
    );
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True")
    );
    wait_event(&client, &name, "Conflict").await;
    stays(
        "the unmanaged Secret to stay byte-identical",
        Duration::from_secs(2),
        || async {
            let now = get_secret(&client, &taken, "shared-pull").await.unwrap();
            if now.metadata.resource_version == original.metadata.resource_version
                && now.data == original.data
            {
                Ok(())
            } else {
                Err(now.metadata.resource_version)
            }
        },
    )
    .await;
    assert!(
        pull_secret_names(&get_sa(&client, &taken, "default").await.unwrap()).is_empty(),
        "namespace untouched"
    );
    assert_nothing_leaked(&client, &name, &[&pw, "their-password"]).await;
}

#[tokio::test]
async fn adopt_takes_over_a_registry_secret() {
    let client = admin().await;
    let key = unique("adopt");
    let ns = namespace(&client, "adopt", &[(&key, "yes")]).await;
    let theirs = docker_config("their.example.com", "them", "their-password");
    put_secret(
        &client,
        &secret_object(
            &ns,
            "legacy-pull",
            "kubernetes.io/dockerconfigjson",
            &[(".dockerconfigjson", theirs.as_bytes())],
        ),
    )
    .await;
    let (src, pw) = source_secret(&client).await;
    let name = unique("adopt");
    create_credential(
        &client,
        &name,
        json!({"source": {"secretRef": {"namespace": SOURCE_NS, "name": src}}, "secretName": "legacy-pull",
               "conflictPolicy": "Adopt", "namespaceSelector": {"matchLabels": {key.clone(): "yes"}}}),
    )
    .await;
    wait_synced(&client, &name).await;
    let copy = wait_copy(&client, &ns, "legacy-pull", &pw).await;
    assert_eq!(copy.labels().get(CREDENTIAL_LABEL), Some(&name));
    assert_eq!(copy.owner_references()[0].name, name);
    wait_sa_lists(&client, &ns, "default", "legacy-pull").await;
    wait_event(&client, &name, "Adopted").await;
}

#[tokio::test]
async fn adopt_refuses_a_secret_that_is_not_a_registry_credential() {
    let client = admin().await;
    let key = unique("adopt-no");
    let ns = namespace(&client, "adopt-no", &[(&key, "yes")]).await;
    let original = put_secret(
        &client,
        &secret_object(&ns, "app-config", "Opaque", &[("token", b"not-for-pulls")]),
    )
    .await;
    let (src, _) = source_secret(&client).await;
    let name = unique("adopt-no");
    create_credential(
        &client,
        &name,
        json!({"source": {"secretRef": {"namespace": SOURCE_NS, "name": src}}, "secretName": "app-config",
               "conflictPolicy": "Adopt", "namespaceSelector": {"matchLabels": {key.clone(): "yes"}}}),
    )
    .await;
    let rc = wait_ready_reason(&client, &name, "Conflict").await;
    assert!(
        rc.status.unwrap().failures[0]
            .message
            .contains("not a registry-credential Secret (type Opaque)")
    );
    let now = get_secret(&client, &ns, "app-config").await.unwrap();
    assert_eq!(
        now.metadata.resource_version,
        original.metadata.resource_version
    );
}

#[tokio::test]
async fn two_credentials_never_fight_over_one_secret() {
    let client = admin().await;
    let first = setup(&client, "fight", 1, json!({"secretName": "contested"})).await;
    let ns = first.namespaces[0].clone();
    wait_synced(&client, &first.name).await;
    let (src2, pw2) = source_secret(&client).await;
    let second = unique("fight2");
    create_credential(
        &client,
        &second,
        json!({"source": {"secretRef": {"namespace": SOURCE_NS, "name": src2}}, "secretName": "contested",
               "conflictPolicy": "Adopt", "namespaces": [ns.clone()]}),
    )
    .await;
    let rc = wait_ready_reason(&client, &second, "Conflict").await;
    assert!(
        rc.status.unwrap().failures[0]
            .message
            .contains(&format!("managed by RegistryCredential {}", first.name))
    );
    let held = get_secret(&client, &ns, "contested").await.unwrap();
    stays(
        "the contested Secret to stay with the first credential",
        Duration::from_secs(3),
        || async {
            let now = get_secret(&client, &ns, "contested").await.unwrap();
            if now.metadata.resource_version == held.metadata.resource_version {
                Ok(())
            } else {
                Err(now.labels().clone())
            }
        },
    )
    .await;
    let copy = get_secret(&client, &ns, "contested").await.unwrap();
    assert!(!String::from_utf8_lossy(&copy.data.unwrap()[".dockerconfigjson"].0).contains(&pw2));
    wait_synced(&client, &first.name).await;
}
