//! Bad input: a clear condition and Event, existing copies untouched, no hot loop.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::{
    Api,
    api::{DeleteParams, ObjectMeta, PostParams},
};
use regcred_operator::api::RegistryCredential;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn invalid_source_content_keeps_existing_copies() {
    let client = admin().await;
    ensure_namespace(&client, SOURCE_NS).await;
    let src = unique("bad-src");
    let pw = password();
    let good = docker_config("registry.example.com", "robot", &pw);
    let good_data = [(".dockerconfigjson", good.as_bytes())];
    put_source_secret(&client, &src, "Opaque", &good_data).await;
    let (s, ns, copy) = synced_with_copy(
        &client,
        "bad-src",
        json!({"source": {"secretRef": {"namespace": SOURCE_NS, "name": src}}}),
    )
    .await;

    use base64::Engine;
    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
    // (case, source data, expected fragment of the message)
    type Case<'a> = (&'a str, Vec<(&'a str, Vec<u8>)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "generic secret with username/password",
            vec![("username", b"robot".to_vec()), ("password", pw.as_bytes().to_vec())],
            "kubectl create secret docker-registry",
        ),
        ("key missing", vec![("config.json", good.as_bytes().to_vec())], "keys [config.json]"),
        ("not JSON", vec![(".dockerconfigjson", b"{not json".to_vec())], "not valid JSON"),
        ("empty auths", vec![(".dockerconfigjson", br#"{"auths":{}}"#.to_vec())], "no registries"),
        (
            "auth disagrees",
            vec![(
                ".dockerconfigjson",
                json!({"auths": {"r.io": {"username": "robot", "password": pw, "auth": b64(&format!("robot:{pw}-other"))}}})
                    .to_string()
                    .into_bytes(),
            )],
            "disagree",
        ),
        (
            "unparseable registry key",
            vec![(".dockerconfigjson", json!({"auths": {"exa mple.com": {"username": "u", "password": pw}}}).to_string().into_bytes())],
            "exa mple.com",
        ),
    ];
    for (case, data, expected) in cases {
        let data: Vec<(&str, &[u8])> = data.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        put_source_secret(&client, &src, "Opaque", &data).await;
        let rc = wait_problem(&client, &s.name, case, "InvalidSource", expected).await;
        assert!(
            rc.status
                .unwrap()
                .conditions
                .iter()
                .any(|c| c.type_ == "Stalled" && c.status == "True"),
            "{case}"
        );
        assert_copy_untouched_and_quiet(&client, &s.name, &ns, &copy).await;
    }
    wait_event(&client, &s.name, "InvalidSource").await;
    assert_nothing_leaked(&client, &s.name, &[&pw]).await;

    put_source_secret(&client, &src, "Opaque", &good_data).await;
    wait_synced(&client, &s.name).await;
}

#[tokio::test]
async fn missing_source_keeps_existing_copies() {
    let client = admin().await;
    let (s, ns, copy) = synced_with_copy(&client, "missing", json!({})).await;
    Api::<Secret>::namespaced(client.clone(), SOURCE_NS)
        .delete(&s.source, &DeleteParams::default())
        .await
        .unwrap();
    let rc = wait_ready_reason(&client, &s.name, "SourceNotFound").await;
    assert!(ready(&rc).unwrap().2.contains(&s.source));
    wait_event(&client, &s.name, "SourceNotFound").await;
    assert_copy_untouched_and_quiet(&client, &s.name, &ns, &copy).await;
    // Recreating the source is noticed without any change to the credential.
    rotate(&client, &s.source).await;
    wait_synced(&client, &s.name).await;
}

#[tokio::test]
async fn source_outside_allowed_namespaces_is_refused() {
    let client = admin().await;
    let elsewhere = namespace(&client, "not-allowed", &[]).await;
    let config = docker_config("registry.example.com", "robot", &password());
    put_secret(&client, &pull_secret_object(&elsewhere, "stolen", &config)).await;
    let s = setup(
        &client,
        "notallowed",
        1,
        json!({"source": {"secretRef": {"namespace": elsewhere, "name": "stolen"}}}),
    )
    .await;
    let rc = wait_ready_reason(&client, &s.name, "SourceNamespaceNotAllowed").await;
    assert!(ready(&rc).unwrap().2.contains("--source-namespaces"));
    wait_event(&client, &s.name, "SourceNamespaceNotAllowed").await;
    assert!(
        get_secret(&client, &s.namespaces[0], &s.name)
            .await
            .is_none(),
        "nothing copied"
    );
}

#[tokio::test]
async fn password_secret_key_missing_is_reported() {
    let client = admin().await;
    ensure_namespace(&client, SOURCE_NS).await;
    let token = unique("token");
    put_password_secret(&client, &token, "x").await;
    let s = setup(
        &client,
        "nokey",
        1,
        json!({"source": {"registries": [{"server": "r.example.com", "username": "u",
                "passwordSecretRef": {"namespace": SOURCE_NS, "name": token, "key": "token"}}]}}),
    )
    .await;
    let rc = wait_ready_reason(&client, &s.name, "InvalidSource").await;
    assert!(
        ready(&rc).unwrap().2.contains("key \"token\" not found"),
        "{:?}",
        ready(&rc)
    );
    wait_event(&client, &s.name, "InvalidSource").await;
}

#[tokio::test]
async fn invalid_selector_is_reported() {
    let client = admin().await;
    let (src, _) = source_secret(&client).await;
    let name = unique("badsel");
    create_credential(
        &client,
        &name,
        json!({"source": {"secretRef": {"namespace": SOURCE_NS, "name": src}},
               "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Equals", "values": ["a"]}]}}),
    )
    .await;
    let rc = wait_ready_reason(&client, &name, "InvalidSelector").await;
    assert!(
        ready(&rc)
            .unwrap()
            .2
            .contains("unknown operator \"Equals\"")
    );
}

#[tokio::test]
async fn terminating_namespace_is_skipped_quietly() {
    let client = admin().await;
    let s = setup(&client, "term", 1, json!({})).await;
    wait_synced(&client, &s.name).await;
    let dying = namespace(&client, "term-dying", &[(&s.key, "yes")]).await;
    wait_copy(&client, &dying, &s.name, &s.password).await;
    // A finalizer keeps the namespace in Terminating.
    let blocker = ConfigMap {
        metadata: ObjectMeta {
            name: Some("blocker".into()),
            finalizers: Some(vec!["regcred.test/block".into()]),
            ..Default::default()
        },
        ..Default::default()
    };
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &dying);
    cms.create(&PostParams::default(), &blocker).await.unwrap();
    Api::<Namespace>::all(client.clone())
        .delete(&dying, &DeleteParams::default())
        .await
        .unwrap();
    let rc = wait_for(
        "the terminating namespace to leave the targets",
        TIMEOUT,
        || async {
            let rc = wait_synced(&client, &s.name).await;
            let targets = rc.status.as_ref().unwrap().target_namespaces;
            if targets == 1 { Ok(rc) } else { Err(targets) }
        },
    )
    .await;
    assert!(rc.status.unwrap().failures.is_empty());
    // Release the namespace so that the cluster can finish deleting it.
    cms.patch(
        "blocker",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn api_server_rejects_invalid_objects() {
    let client = admin().await;
    let resource = kube::api::ApiResource::erase::<RegistryCredential>(&());
    let api: Api<kube::api::DynamicObject> = Api::all_with(client.clone(), &resource);
    let src = json!({"namespace": SOURCE_NS, "name": "x"});
    let login = json!({"server": "r.io", "username": "u", "passwordSecretRef": {"namespace": SOURCE_NS, "name": "x", "key": "k"}});
    let cases = [
        (
            "both source forms",
            unique("both"),
            json!({"source": {"secretRef": src, "registries": [login]}}),
            "exactly one of source.secretRef, source.registries or source.ecr",
        ),
        (
            "neither source form",
            unique("neither"),
            json!({"source": {}}),
            "exactly one of source.secretRef, source.registries or source.ecr",
        ),
        (
            "secretRef and ecr",
            unique("both-ecr"),
            json!({"source": {"secretRef": src, "ecr": {"region": "us-east-1", "credentials": {"secretRef": src}}}}),
            "exactly one of source.secretRef, source.registries or source.ecr",
        ),
        (
            "ecr with an empty region",
            unique("ecr-region"),
            json!({"source": {"ecr": {"region": "", "credentials": {"secretRef": src}}}}),
            "spec.source.ecr.region",
        ),
        (
            "ecr with a region that is not a region name",
            unique("ecr-region2"),
            json!({"source": {"ecr": {"region": "us-east-1.evil.example", "credentials": {"secretRef": src}}}}),
            "spec.source.ecr.region",
        ),
        (
            "ecr with both credential forms",
            unique("ecr-both"),
            json!({"source": {"ecr": {"region": "us-east-1", "credentials": {"secretRef": src, "webIdentity": {"roleArn": "arn:aws:iam::123456789012:role/puller"}}}}}),
            "exactly one of source.ecr.credentials.secretRef or source.ecr.credentials.webIdentity",
        ),
        (
            "ecr with no credentials form",
            unique("ecr-neither"),
            json!({"source": {"ecr": {"region": "us-east-1", "credentials": {}}}}),
            "exactly one of source.ecr.credentials.secretRef or source.ecr.credentials.webIdentity",
        ),
        (
            "ecr without credentials",
            unique("ecr-nocreds"),
            json!({"source": {"ecr": {"region": "us-east-1"}}}),
            "spec.source.ecr.credentials: Required value",
        ),
        (
            "ecr with a registry id that is not an account id",
            unique("ecr-id"),
            json!({"source": {"ecr": {"region": "us-east-1", "registryIds": ["12345"], "credentials": {"secretRef": src}}}}),
            "spec.source.ecr.registryIds[0]",
        ),
        (
            "webIdentity with a roleArn that is not a role",
            unique("ecr-arn"),
            json!({"source": {"ecr": {"region": "us-east-1", "credentials": {"webIdentity": {"roleArn": "arn:aws:iam::123456789012:user/puller"}}}}}),
            "spec.source.ecr.credentials.webIdentity.roleArn",
        ),
        (
            "invalid secretName",
            unique("badname"),
            json!({"source": {"secretRef": src}, "secretName": "Not_A_Name"}),
            "secretName must be a valid Secret name",
        ),
        (
            "unknown policy",
            unique("badpolicy"),
            json!({"source": {"secretRef": src}, "conflictPolicy": "Overwrite"}),
            "Unsupported value",
        ),
        (
            "name too long",
            format!("{}-{}", unique("long"), "x".repeat(60)),
            json!({"source": {"secretRef": src}}),
            "at most 63 characters",
        ),
    ];
    for (case, name, spec, expected) in cases {
        let body: kube::api::DynamicObject = serde_json::from_value(json!({
            "apiVersion": "regcred.dev/v1alpha1", "kind": "RegistryCredential",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        match api.create(&PostParams::default(), &body).await {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 422, "{case}: {s:?}");
                assert!(s.message.contains(expected), "{case}: {}", s.message);
            }
            other => panic!("{case}: the API server must reject it, got {other:?}"),
        }
    }
}

/// Keys the operator accepts but the kubelet will not match as written are copied as they are
/// (the config is valid) and reported: a condition naming each key and why, a Warning Event, a
/// status written once; fixing the source clears the condition.
#[tokio::test]
async fn keys_the_kubelet_cannot_match_are_reported() {
    let client = admin().await;
    ensure_namespace(&client, SOURCE_NS).await;
    let src = unique("odd-keys");
    let pw = password();
    let entry = json!({"username": "robot", "password": pw});
    let odd = json!({"auths": {
        "Registry.Example.com": entry,
        "odd.example.com/v1": entry,
        "odd.example.com/team/app/": entry,
        "good.example.com": entry,
    }})
    .to_string();
    let write = |config: String| {
        let client = client.clone();
        let src = src.clone();
        async move { put_secret(&client, &pull_secret_object(SOURCE_NS, &src, &config)).await }
    };
    write(odd).await;
    let s = setup(
        &client,
        "odd-keys",
        1,
        json!({"source": {"secretRef": {"namespace": SOURCE_NS, "name": src}}}),
    )
    .await;
    wait_synced(&client, &s.name).await;
    let ns = s.namespaces[0].clone();
    let copy = wait_copy(&client, &ns, &s.name, &pw).await;
    let keys = secret_config(&copy)["auths"]
        .as_object()
        .map(serde_json::Map::len)
        .unwrap_or_default();
    assert_eq!(keys, 4, "every key is copied as written");

    let condition = |rc: &RegistryCredential| {
        rc.status
            .as_ref()
            .and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == "UnmatchableRegistryKeys")
            })
            .cloned()
    };
    let found = wait_for("the UnmatchableRegistryKeys condition", TIMEOUT, || async {
        let rc = credential(&client, &s.name).await;
        condition(&rc).ok_or(rc.status)
    })
    .await;
    assert_eq!(found.status, "True");
    assert_eq!(found.reason, "UnmatchableRegistryKey");
    for expected in [
        "3 registry keys",
        "\"Registry.Example.com\": its host has upper-case letters",
        "\"odd.example.com/v1\": the kubelet keeps /v1",
        "\"odd.example.com/team/app/\": its path ends with '/'",
    ] {
        assert!(
            found.message.contains(expected),
            "{expected}: {}",
            found.message
        );
    }
    assert!(
        !found.message.contains("good.example.com"),
        "{}",
        found.message
    );
    let event = wait_event(&client, &s.name, "UnmatchableRegistryKey").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    // Ready is not affected, and the status settles: written once, not every pass.
    let rc = credential(&client, &s.name).await;
    assert_eq!(ready(&rc).map(|r| r.1), Some("Synced".to_string()));
    assert_copy_untouched_and_quiet(&client, &s.name, &ns, &copy).await;
    let events = events_for(&client, &s.name)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("UnmatchableRegistryKey"))
        .count();
    assert_eq!(events, 1, "one Event for one finding");
    assert!(
        events_for(&client, &s.name)
            .await
            .iter()
            .filter(|e| e.reason.as_deref() == Some("UnmatchableRegistryKey"))
            .all(|e| e.series.is_none()),
        "published once"
    );

    // Fixed keys: the condition goes.
    write(json!({"auths": {"registry.example.com": entry, "good.example.com": entry}}).to_string())
        .await;
    wait_for("the condition to clear", TIMEOUT, || async {
        let rc = credential(&client, &s.name).await;
        match condition(&rc) {
            None if ready(&rc).is_some_and(|r| r.1 == "Synced") => Ok(()),
            other => Err(other),
        }
    })
    .await;
    assert_nothing_leaked(&client, &s.name, &[&pw]).await;
}

/// A misspelt field of the ECR source is refused as `kubectl apply` (strict field validation, its
/// default) sends it, not silently dropped.
#[tokio::test]
async fn unknown_ecr_fields_are_refused_by_strict_validation() {
    let client = admin().await;
    let resource = kube::api::ApiResource::erase::<RegistryCredential>(&());
    let api: Api<kube::api::DynamicObject> = Api::all_with(client.clone(), &resource);
    let keys = json!({"namespace": SOURCE_NS, "name": "x"});
    // One unknown field per case: the server may name only the first it finds.
    let cases = [
        (
            json!({"region": "us-east-1", "regsitryIds": ["123456789012"], "credentials": {"secretRef": keys}}),
            ".spec.source.ecr.regsitryIds: field not declared in schema",
        ),
        (
            json!({"region": "us-east-1", "credentials": {"secretRef": keys, "roleArn": "x"}}),
            ".spec.source.ecr.credentials.roleArn: field not declared in schema",
        ),
    ];
    for (ecr, expected) in cases {
        let name = unique("ecr-typo");
        let body = json!({
            "apiVersion": "regcred.dev/v1alpha1", "kind": "RegistryCredential",
            "metadata": {"name": name},
            "spec": {"source": {"ecr": ecr}},
        });
        let params = kube::api::PatchParams::apply("bad-input-test").validation_strict();
        match api
            .patch(&name, &params, &kube::api::Patch::Apply(&body))
            .await
        {
            Err(kube::Error::Api(s)) => assert!(s.message.contains(expected), "{}", s.message),
            other => panic!("the API server must refuse unknown fields, got {other:?}"),
        }
    }
}
