//! Sources: every supported shape, and rotation reaching every copy.

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn rotation_reaches_every_copy() {
    let client = admin().await;
    let s = setup(&client, "rotate", 3, json!({})).await;
    let before = wait_synced(&client, &s.name)
        .await
        .status
        .unwrap()
        .synced_source_version;
    let new_pw = rotate(&client, &s.source).await;
    for ns in &s.namespaces {
        wait_copy(&client, ns, &s.name, &new_pw).await;
    }
    let rc = wait_for("syncedSourceVersion to move", TIMEOUT, || async {
        let rc = wait_synced(&client, &s.name).await;
        let v = rc.status.as_ref().unwrap().synced_source_version.clone();
        if v == before { Err(v) } else { Ok(rc) }
    })
    .await;
    let source = get_secret(&client, SOURCE_NS, &s.source).await.unwrap();
    assert_eq!(
        rc.status.unwrap().synced_source_version,
        source.metadata.resource_version
    );
    wait_event(&client, &s.name, "Rotated").await;
    assert_nothing_leaked(&client, &s.name, &[&s.password, &new_pw]).await;
}

#[tokio::test]
async fn registries_source_matches_kubectl_and_follows_password_rotation() {
    let client = admin().await;
    ensure_namespace(&client, SOURCE_NS).await;
    let token = unique("token");
    let pw = password();
    put_secret(
        &client,
        &secret_object(SOURCE_NS, &token, "Opaque", &[("password", pw.as_bytes())]),
    )
    .await;
    let s = setup(
        &client,
        "logins",
        2,
        json!({"source": {"registries": [{
            "server": "registry.example.com:5000",
            "username": "robot",
            "email": "ops@example.com",
            "passwordSecretRef": {"namespace": SOURCE_NS, "name": token, "key": "password"},
        }]}}),
    )
    .await;
    wait_synced(&client, &s.name).await;
    for ns in &s.namespaces {
        let copy = wait_copy(&client, ns, &s.name, &pw).await;
        use base64::Engine;
        let expected = json!({"auths": {"registry.example.com:5000": {
            "username": "robot", "password": pw, "email": "ops@example.com",
            "auth": base64::engine::general_purpose::STANDARD.encode(format!("robot:{pw}")),
        }}});
        assert_eq!(
            secret_config(&copy),
            expected,
            "what `kubectl create secret docker-registry` produces"
        );
    }
    let new_pw = password();
    put_secret(
        &client,
        &secret_object(
            SOURCE_NS,
            &token,
            "Opaque",
            &[("password", new_pw.as_bytes())],
        ),
    )
    .await;
    for ns in &s.namespaces {
        wait_copy(&client, ns, &s.name, &new_pw).await;
    }
    assert_nothing_leaked(&client, &s.name, &[&pw, &new_pw]).await;
}

#[tokio::test]
async fn legacy_dockercfg_and_opaque_sources_are_accepted() {
    let client = admin().await;
    ensure_namespace(&client, SOURCE_NS).await;
    let pw = password();
    let legacy = unique("legacy");
    let cfg = json!({"old.example.com": {"username": "u", "password": pw}}).to_string();
    put_secret(
        &client,
        &secret_object(
            SOURCE_NS,
            &legacy,
            "kubernetes.io/dockercfg",
            &[(".dockercfg", cfg.as_bytes())],
        ),
    )
    .await;
    let s = setup(
        &client,
        "legacy",
        1,
        json!({"source": {"secretRef": {"namespace": SOURCE_NS, "name": legacy}}}),
    )
    .await;
    wait_synced(&client, &s.name).await;
    let copy = get_secret(&client, &s.namespaces[0], &s.name)
        .await
        .unwrap();
    assert_eq!(
        copy.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    assert_eq!(
        secret_config(&copy)["auths"]["old.example.com"]["username"],
        "u",
        "converted to auths"
    );

    // Opaque with a .dockerconfigjson key (as External Secrets writes it).
    let opaque = unique("opaque");
    let config = docker_config("registry.example.com", "robot", &pw);
    put_secret(
        &client,
        &secret_object(
            SOURCE_NS,
            &opaque,
            "Opaque",
            &[(".dockerconfigjson", config.as_bytes())],
        ),
    )
    .await;
    patch_spec(
        &client,
        &s.name,
        json!({"source": {"secretRef": {"namespace": SOURCE_NS, "name": opaque}}}),
    )
    .await;
    wait_for("the copy to follow the new source", TIMEOUT, || async {
        let copy = get_secret(&client, &s.namespaces[0], &s.name)
            .await
            .unwrap();
        let v = secret_config(&copy);
        if v["auths"]["registry.example.com"]["username"] == "robot" {
            Ok(())
        } else {
            Err(v["auths"]
                .as_object()
                .map(|m| m.keys().cloned().collect::<Vec<_>>()))
        }
    })
    .await;
    wait_synced(&client, &s.name).await;
}

#[tokio::test]
async fn source_labels_and_annotations_are_not_copied() {
    let client = admin().await;
    let s = setup(&client, "nolabels", 1, json!({})).await;
    Api::<Secret>::namespaced(client.clone(), SOURCE_NS)
        .patch(
            &s.source,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"team": "x"}, "annotations": {"note": "y"}}}),
            ),
        )
        .await
        .unwrap();
    wait_synced(&client, &s.name).await;
    let copy = get_secret(&client, &s.namespaces[0], &s.name)
        .await
        .unwrap();
    assert!(!copy.labels().contains_key("team"));
    assert!(!copy.annotations().contains_key("note"));
}
