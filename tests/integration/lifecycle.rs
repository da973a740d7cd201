//! Drift, renames, suspension and deletion.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use regcred_operator::api::{CREDENTIAL_LABEL, MANAGED_BY_LABEL, PULL_SECRETS_ANNOTATION};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn copy_deleted_or_edited_by_hand_is_restored() {
    let client = admin().await;
    let s = setup(&client, "drift", 1, json!({})).await;
    let ns = &s.namespaces[0];
    wait_synced(&client, &s.name).await;
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    api.delete(&s.name, &DeleteParams::default()).await.unwrap();
    wait_copy(&client, ns, &s.name, &s.password).await;

    let bogus = docker_config("registry.example.com", "robot", "hand-edited");
    api.patch(
        &s.name,
        &PatchParams::default(),
        &Patch::Merge(json!({"stringData": {".dockerconfigjson": bogus}})),
    )
    .await
    .unwrap();
    wait_copy(&client, ns, &s.name, &s.password).await;
    wait_synced(&client, &s.name).await;
}

#[tokio::test]
async fn changing_secret_name_replaces_the_old_secret_and_entry() {
    let client = admin().await;
    let s = setup(&client, "rename", 2, json!({"secretName": "old-pull"})).await;
    wait_synced(&client, &s.name).await;
    patch_spec(&client, &s.name, json!({"secretName": "new-pull"})).await;
    for ns in &s.namespaces {
        wait_copy(&client, ns, "new-pull", &s.password).await;
        wait_secret_gone(&client, ns, "old-pull").await;
        wait_for("SA to list only the new name", TIMEOUT, || async {
            let names = pull_secret_names(&get_sa(&client, ns, "default").await.unwrap());
            if names == ["new-pull"] {
                Ok(())
            } else {
                Err(names)
            }
        })
        .await;
    }
    wait_synced_with(&client, &s.name, "secretName new-pull", |s| {
        s.secret_name.as_deref() == Some("new-pull")
    })
    .await;
}

#[tokio::test]
async fn deletion_with_delete_removes_copies_and_our_entries_only() {
    let client = admin().await;
    let s = setup(&client, "del", 2, json!({})).await;
    wait_synced(&client, &s.name).await;
    let ns = &s.namespaces[0];
    // Our entry first: written by the test before the operator's patch, it would be an entry
    // that was there before the operator came, which is never claimed.
    wait_sa_lists(&client, ns, "default", &s.name).await;
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), ns)
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"imagePullSecrets": [{"name": "before"}, {"name": s.name}, {"name": "after"}]})),
        )
        .await
        .unwrap();
    put_secret(
        &client,
        &secret_object(ns, "unrelated", "Opaque", &[("k", b"v")]),
    )
    .await;
    delete_credential(&client, &s.name).await;
    for ns in &s.namespaces {
        assert!(
            get_secret(&client, ns, &s.name).await.is_none(),
            "copy deleted in {ns}"
        );
    }
    let sa = get_sa(&client, ns, "default").await.unwrap();
    assert_eq!(pull_secret_names(&sa), ["before", "after"]);
    assert!(!sa.annotations().contains_key(PULL_SECRETS_ANNOTATION));
    assert!(get_secret(&client, ns, "unrelated").await.is_some());
}

#[tokio::test]
async fn deletion_with_orphan_leaves_copies_working() {
    let client = admin().await;
    let s = setup(&client, "orphan", 1, json!({"deletionPolicy": "Orphan"})).await;
    wait_synced(&client, &s.name).await;
    let ns = &s.namespaces[0];
    wait_sa_lists(&client, ns, "default", &s.name).await;
    delete_credential(&client, &s.name).await;
    // The garbage collector would act within this if an ownerReference were left behind.
    stays("the orphaned copy", Duration::from_secs(3), || async {
        get_secret(&client, ns, &s.name)
            .await
            .map(|_| ())
            .ok_or("the copy was deleted")
    })
    .await;
    let copy = get_secret(&client, ns, &s.name).await.expect("copy kept");
    assert!(
        !copy.labels().contains_key(MANAGED_BY_LABEL)
            && !copy.labels().contains_key(CREDENTIAL_LABEL)
    );
    assert!(copy.owner_references().is_empty());
    assert!(
        String::from_utf8_lossy(&copy.data.unwrap()[".dockerconfigjson"].0).contains(&s.password)
    );
    let sa = get_sa(&client, ns, "default").await.unwrap();
    assert_eq!(
        pull_secret_names(&sa),
        [s.name.as_str()],
        "entry kept working"
    );
    assert!(
        !sa.annotations().contains_key(PULL_SECRETS_ANNOTATION),
        "our marking removed"
    );
}

#[tokio::test]
async fn suspend_makes_no_writes_and_still_reports_targets() {
    let client = admin().await;
    let s = setup(&client, "suspend", 2, json!({"suspend": true})).await;
    let rc = wait_ready_reason(&client, &s.name, "Suspended").await;
    assert_eq!(rc.status.unwrap().target_namespaces, 2);
    stays(
        "no copies while suspended",
        Duration::from_secs(2),
        || async {
            for ns in &s.namespaces {
                if get_secret(&client, ns, &s.name).await.is_some() {
                    return Err(ns.clone());
                }
            }
            Ok(())
        },
    )
    .await;
    patch_spec(&client, &s.name, json!({"suspend": false})).await;
    wait_synced(&client, &s.name).await;
    // Suspended again: a rotation is not propagated.
    patch_spec(&client, &s.name, json!({"suspend": true})).await;
    wait_ready_reason(&client, &s.name, "Suspended").await;
    let new_pw = rotate(&client, &s.source).await;
    stays(
        "copies unchanged while suspended",
        Duration::from_secs(2),
        || async {
            let copy = get_secret(&client, &s.namespaces[0], &s.name)
                .await
                .unwrap();
            let text =
                String::from_utf8_lossy(&copy.data.unwrap()[".dockerconfigjson"].0).to_string();
            if text.contains(&new_pw) {
                Err("rotated while suspended")
            } else {
                Ok(())
            }
        },
    )
    .await;
}
