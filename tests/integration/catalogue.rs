//! The bad-input catalogue: malformed and hostile sources, specs, Secrets, namespaces and
//! ServiceAccounts. Each gets a clear condition (and an Event where it is a problem), the operator
//! stays up and quiet, and nothing that should stay is deleted or dropped. (More entries live in
//! `bad_input`, `conflicts` and `service_accounts`; the README lists them all.)

use base64::Engine;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use regcred_operator::api::{CREDENTIAL_LABEL, MANAGED_BY_LABEL, MANAGER, PULL_SECRETS_ANNOTATION};
use serde_json::json;

use crate::support::*;

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// One source Secret (type, data) per case, written over a working source: each must give
/// InvalidSource naming the problem, keep the existing copy, stay quiet and leak nothing.
#[tokio::test]
async fn malformed_source_contents() {
    let client = admin().await;
    let (s, ns, copy) = synced_with_copy(&client, "cat-src", json!({})).await;
    let pw = password();
    let entry = |key: &str, value: serde_json::Value| {
        json!({"auths": {key: value}}).to_string().into_bytes()
    };
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    let many_bad = {
        let mut auths = serde_json::Map::new();
        for i in 0..2000 {
            auths.insert(
                format!("r{i}.example.com"),
                json!({"username": "u", "password": pw}),
            );
        }
        auths.insert("bad key.example.com".into(), json!({"auth": b64("u:p")}));
        json!({ "auths": auths }).to_string().into_bytes()
    };
    // Configs in an Opaque Secret (as External Secrets writes them): the API server itself refuses
    // unparseable JSON in a Secret of type kubernetes.io/dockerconfigjson.
    // (case, .dockerconfigjson value, expected fragment of the message)
    let configs: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "invalid UTF-8",
            b"{\"auths\":{\"r.io\":{\"auth\":\"\xff\xfe\"}}}".to_vec(),
            "not valid UTF-8",
        ),
        ("empty value", Vec::new(), "not valid JSON"),
        ("JSON array", b"[]".to_vec(), "not a JSON object"),
        ("JSON null", b"null".to_vec(), "not a JSON object"),
        (
            "no auths field",
            b"{\"credsStore\":\"desktop\"}".to_vec(),
            "no \"auths\" field",
        ),
        (
            "auths not an object",
            b"{\"auths\":[]}".to_vec(),
            "not a JSON object",
        ),
        (
            "entry not an object",
            entry("r.io", json!("robot")),
            "is not a JSON object",
        ),
        (
            "entry without credentials",
            entry("r.io", json!({"email": "a@b.c"})),
            "r.io",
        ),
        (
            "password not a string",
            entry("r.io", json!({"username": "u", "password": 12345})),
            "is not a string",
        ),
        (
            "auth not base64",
            entry("r.io", json!({"auth": "***not-base64***"})),
            "not valid base64",
        ),
        (
            "auth without colon",
            entry("r.io", json!({"auth": b64(&format!("robot{pw}"))})),
            "r.io",
        ),
        ("nesting 100000 deep", deep, "not valid JSON"),
        (
            "empty registry key",
            entry("", json!({"auth": b64("u:p")})),
            "registry key is empty",
        ),
        (
            "control character in key",
            entry("r\u{7}.io", json!({"auth": b64("u:p")})),
            "control characters",
        ),
        (
            "newline after the key (the kubelet cannot parse it)",
            entry("r.io\n", json!({"auth": b64("u:p")})),
            "whitespace",
        ),
        (
            "port out of range",
            entry("r.io:99999", json!({"auth": b64("u:p")})),
            "invalid port",
        ),
        (
            "query in key",
            entry("r.io/?x=1", json!({"auth": b64("u:p")})),
            "query or fragment",
        ),
        (
            "credentials in the key",
            entry(&format!("robot:{pw}@r.io"), json!({"auth": b64("u:p")})),
            "user information",
        ),
        (
            "scheme only",
            entry("https://", json!({"auth": b64("u:p")})),
            "no host",
        ),
        ("one bad key among 2000", many_bad, "bad key.example.com"),
    ];
    // (case, type, key, value, expected fragment of the message)
    let others: Vec<(&str, &str, &str, Vec<u8>, &str)> = vec![
        (
            "legacy dockercfg entry not an object",
            "kubernetes.io/dockercfg",
            ".dockercfg",
            b"{\"r.io\":\"robot\"}".to_vec(),
            "is not a JSON object",
        ),
        (
            "SSH key Secret",
            "kubernetes.io/ssh-auth",
            "ssh-privatekey",
            b"-----BEGIN OPENSSH PRIVATE KEY-----".to_vec(),
            "kubernetes.io/ssh-auth",
        ),
        (
            "basic-auth Secret",
            "kubernetes.io/basic-auth",
            "password",
            pw.as_bytes().to_vec(),
            "kubernetes.io/basic-auth",
        ),
    ];
    let cases = configs
        .into_iter()
        .map(|(case, value, expected)| (case, "Opaque", ".dockerconfigjson", value, expected))
        .chain(others);
    let sources: Api<Secret> = Api::namespaced(client.clone(), SOURCE_NS);
    let mut cases_run = 0;
    for (case, type_, key, value, expected) in cases {
        // The type of a Secret is immutable: the source is replaced (deleted, then created).
        sources
            .delete(&s.source, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("{case}: deleting the source: {e}"));
        put_source_secret(&client, &s.source, type_, &[(key, value.as_slice())]).await;
        wait_problem(&client, &s.name, case, "InvalidSource", expected).await;
        assert_copy_untouched_and_quiet(&client, &s.name, &ns, &copy).await;
        cases_run += 1;
    }
    assert_eq!(cases_run, 23);
    wait_event(&client, &s.name, "InvalidSource").await;
    assert_nothing_leaked(&client, &s.name, &[&pw, &s.password]).await;

    // A good source again: back in sync.
    sources
        .delete(&s.source, &DeleteParams::default())
        .await
        .unwrap();
    let fresh = rotate(&client, &s.source).await;
    wait_copy(&client, &ns, &s.name, &fresh).await;
    wait_synced(&client, &s.name).await;
}

#[tokio::test]
async fn registries_source_problems() {
    let client = admin().await;
    let (s, ns, copy) = synced_with_copy(&client, "cat-login", json!({})).await;
    let pw = password();
    let good = login_source(&client, "registry.example.com", &pw).await;
    let password_ref = good["registries"][0]["passwordSecretRef"].clone();
    let token = password_ref["name"].as_str().unwrap().to_string();
    let login = |server: &str, pref: serde_json::Value| json!({"server": server, "username": "robot", "passwordSecretRef": pref});
    let cases = [
        (
            "the same server twice",
            json!({"registries": [login("r.example.com", password_ref.clone()), login("r.example.com", password_ref.clone())]}),
            "InvalidSource",
            "more than once",
        ),
        (
            "an unparseable server",
            json!({"registries": [login("exa mple.com", password_ref.clone())]}),
            "InvalidSource",
            "exa mple.com",
        ),
        (
            "a password Secret that does not exist",
            json!({"registries": [login("r.example.com", json!({"namespace": SOURCE_NS, "name": unique("absent"), "key": "password"}))]}),
            "SourceNotFound",
            "not found",
        ),
        (
            "a password Secret outside the allowed namespaces",
            json!({"registries": [login("r.example.com", json!({"namespace": "kube-system", "name": token, "key": "password"}))]}),
            "SourceNamespaceNotAllowed",
            "--source-namespaces",
        ),
    ];
    for (case, mut source, reason, expected) in cases {
        source["secretRef"] = serde_json::Value::Null; // a merge patch: drop the other form
        patch_spec(&client, &s.name, json!({ "source": source })).await;
        wait_problem(&client, &s.name, case, reason, expected).await;
        assert_copy_untouched_and_quiet(&client, &s.name, &ns, &copy).await;
    }
    // An empty password: a login without a password is refused, the copy stays.
    put_password_secret(&client, &token, "").await;
    let mut good = good;
    good["secretRef"] = serde_json::Value::Null;
    patch_spec(&client, &s.name, json!({ "source": good })).await;
    wait_problem(
        &client,
        &s.name,
        "an empty password",
        "InvalidSource",
        "empty",
    )
    .await;
    // The spec change and the emptied password Secret arrive on different watches: the operator
    // may have synced the new spec with the old password first. From the report on, no writes.
    let copy = get_secret(&client, &ns, &s.name).await.unwrap();
    assert!(
        !copy_has(&copy, &format!("\"{}\"", b64("robot:"))),
        "an empty password was copied"
    );
    assert_copy_untouched_and_quiet(&client, &s.name, &ns, &copy).await;
    assert_nothing_leaked(&client, &s.name, &[&pw, &s.password]).await;
}

/// Big but valid configs are copied as they are: thousands of registries, duplicate JSON keys
/// (the last one wins, as in the kubelet), a config close to the 1 MiB Secret limit.
#[tokio::test]
async fn extreme_but_valid_sources_are_copied() {
    let client = admin().await;
    let s = setup(&client, "cat-big", 1, json!({})).await;
    let ns = s.namespaces[0].clone();
    let pw = password();

    let mut auths = serde_json::Map::new();
    for i in 0..5000 {
        auths.insert(
            format!("r{i}.example.com"),
            json!({"username": "robot", "password": format!("{pw}-{i}")}),
        );
    }
    let thousands = json!({ "auths": auths }).to_string();
    let duplicate = format!(
        r#"{{"auths":{{"dup.example.com":{{"username":"first","password":"{pw}-first"}},"dup.example.com":{{"username":"last","password":"{pw}-last"}}}}}}"#
    );
    let huge_token = "t".repeat(900 * 1024);
    let huge = json!({"auths": {"r.example.com": {"identitytoken": huge_token, "username": "u", "password": pw}}})
        .to_string();
    for (case, config) in [
        ("5000 registries", &thousands),
        ("duplicate keys", &duplicate),
        ("900 KiB", &huge),
    ] {
        put_secret(&client, &pull_secret_object(SOURCE_NS, &s.source, config)).await;
        let copy = wait_for(&format!("the copy of {case}"), TIMEOUT, || async {
            let copy = get_secret(&client, &ns, &s.name).await.unwrap();
            let want: serde_json::Value = match serde_json::from_str(config) {
                Ok(v) => v,
                Err(e) => panic!("{case}: {e}"),
            };
            if secret_config(&copy) == want {
                Ok(copy)
            } else {
                Err(case)
            }
        })
        .await;
        if case == "duplicate keys" {
            let text = serde_json::to_string(&secret_config(&copy)).unwrap();
            assert!(text.contains("-last") && !text.contains("-first"), "{case}");
        }
        wait_synced(&client, &s.name).await;
        assert_copy_untouched_and_quiet(&client, &s.name, &ns, &copy).await;
    }
    assert_nothing_leaked(&client, &s.name, &[&pw]).await;
}

/// Names at their maximum lengths: a 63-character credential (it is a label value), a
/// 253-character secretName and ServiceAccount, a 63-character namespace.
#[tokio::test]
async fn maximum_length_names() {
    let client = admin().await;
    let base = unique("max");
    let pad = |n: usize| format!("{base}{}", "x".repeat(n - base.len()));
    let (credential_name, secret_name, ns_name, sa_name) = (pad(63), pad(253), pad(63), pad(253));
    let key = unique("max");
    ensure_namespace(&client, &ns_name).await;
    label_namespace(&client, &ns_name, &key, Some("yes")).await;
    create_service_account(&client, &ns_name, &sa_name).await;
    let (source, pw) = source_secret(&client).await;
    create_credential(
        &client,
        &credential_name,
        json!({"source": {"secretRef": {"namespace": SOURCE_NS, "name": source}},
               "namespaceSelector": {"matchLabels": {key: "yes"}},
               "secretName": secret_name, "serviceAccounts": [sa_name]}),
    )
    .await;
    wait_copy(&client, &ns_name, &secret_name, &pw).await;
    wait_sa_lists(&client, &ns_name, &sa_name, &secret_name).await;
    wait_synced(&client, &credential_name).await;
    delete_credential(&client, &credential_name).await;
    wait_secret_gone(&client, &ns_name, &secret_name).await;
    let sa = get_sa(&client, &ns_name, &sa_name).await.unwrap();
    assert!(!pull_secret_names(&sa).contains(&secret_name));
}

/// Our own source as a target (the source namespace selected, secretName = the source's name),
/// even with conflictPolicy: Adopt and a source exported from a copy with our labels: the source
/// is never written or deleted.
#[tokio::test]
async fn a_source_is_never_a_target() {
    let client = admin().await;
    ensure_namespace(&client, SOURCE_NS).await;
    let name = unique("selfsrc");
    let pw = password();
    let config = docker_config("registry.example.com", "robot", &pw);
    // Exported from a copy: it still carries our labels.
    let mut source = pull_secret_object(SOURCE_NS, &name, &config);
    source.metadata.labels = Some(labels(&[
        (MANAGED_BY_LABEL, "regcred-operator"),
        (CREDENTIAL_LABEL, &name),
    ]));
    let written = put_secret(&client, &source).await;
    let key = unique("selfsrc");
    let other = namespace(&client, "selfsrc", &[(&key, "yes")]).await;
    create_credential(
        &client,
        &name,
        json!({"source": {"secretRef": {"namespace": SOURCE_NS, "name": name}},
               "namespaces": [SOURCE_NS], "namespaceSelector": {"matchLabels": {key.clone(): "yes"}},
               "conflictPolicy": "Adopt"}),
    )
    .await;
    wait_copy(&client, &other, &name, &pw).await;
    wait_problem(
        &client,
        &name,
        "source as target",
        "Conflict",
        "is the source of",
    )
    .await;
    let now = get_secret(&client, SOURCE_NS, &name).await.unwrap();
    assert_eq!(
        now.metadata.resource_version,
        written.metadata.resource_version
    );
    wait_event(&client, &name, "Conflict").await;

    // The source namespace leaves the targets, then the credential goes (deletionPolicy:
    // Delete): the copy elsewhere is deleted, the labelled source stays.
    patch_spec(&client, &name, json!({"namespaces": []})).await;
    wait_synced(&client, &name).await;
    delete_credential(&client, &name).await;
    wait_secret_gone(&client, &other, &name).await;
    let now = get_secret(&client, SOURCE_NS, &name)
        .await
        .expect("the source stays");
    assert_eq!(
        now.metadata.resource_version,
        written.metadata.resource_version
    );
}

/// A copy replaced by hand with a Secret of another type that still carries our labels: the
/// replacement is not ours (no ownerReference of the credential), so it is reported and never
/// replaced, however wrong its type.
#[tokio::test]
async fn copy_recreated_with_another_type_is_reported_not_replaced() {
    let client = admin().await;
    let s = setup(&client, "cat-type", 1, json!({})).await;
    wait_synced(&client, &s.name).await;
    let ns = s.namespaces[0].clone();
    let copy = wait_copy(&client, &ns, &s.name, &s.password).await;
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut opaque = secret_object(&ns, &s.name, "Opaque", &[("note", b"hand-made")]);
    opaque.metadata.labels = copy.metadata.labels.clone();
    // The operator restores a deleted copy at once: retry until the hand-made one is in place.
    wait_for("a hand-made Opaque copy in place", TIMEOUT, || async {
        if get_secret(&client, &ns, &s.name)
            .await
            .is_some_and(|c| c.type_.as_deref() == Some("Opaque"))
        {
            return Ok(());
        }
        match api.delete(&s.name, &DeleteParams::default()).await {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
        match api.create(&kube::api::PostParams::default(), &opaque).await {
            Ok(_) => Err("created; checking".to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    let hand_made = get_secret(&client, &ns, &s.name).await.unwrap();
    wait_problem(
        &client,
        &s.name,
        "hand-made Opaque",
        "NotOwned",
        "not its copy",
    )
    .await;
    assert_copy_untouched_and_quiet(&client, &s.name, &ns, &hand_made).await;
}

/// A Secret of another type that the operator provably wrote (the credential's controller
/// ownerReference, the operator's field manager in managedFields), as an older copy would be: a
/// type cannot change in place, so it is replaced by a dockerconfigjson copy. It is put in place
/// while the credential is suspended, so that the pass after resuming plans from the cached object,
/// which keeps no managedFields: the proof is made on the object as the server has it.
#[tokio::test]
async fn copy_of_another_type_the_operator_wrote_is_replaced() {
    let client = admin().await;
    let (s, ns, copy) = synced_with_copy(&client, "cat-retype", json!({})).await;
    patch_spec(&client, &s.name, json!({"suspend": true})).await;
    wait_ready_reason(&client, &s.name, "Suspended").await;
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    api.delete(&s.name, &DeleteParams::default())
        .await
        .expect("deleting the copy");
    let mut opaque = secret_object(&ns, &s.name, "Opaque", &[("note", b"older copy")]);
    opaque.metadata.labels = copy.metadata.labels.clone();
    opaque.metadata.owner_references = copy.metadata.owner_references.clone();
    let as_operator = PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    let opaque_uid = api
        .create(&as_operator, &opaque)
        .await
        .expect("an Opaque copy written as the operator")
        .metadata
        .uid;
    // Suspended, the operator leaves it alone (meanwhile its watch delivers it to the cache).
    stays(
        "the Opaque copy, untouched while suspended",
        std::time::Duration::from_secs(1),
        || async {
            match get_secret(&client, &ns, &s.name).await {
                Some(c) if c.metadata.uid == opaque_uid => Ok(()),
                _ => Err("replaced while suspended"),
            }
        },
    )
    .await;
    patch_spec(&client, &s.name, json!({"suspend": false})).await;
    wait_for("the Opaque copy replaced", TIMEOUT, || async {
        match get_secret(&client, &ns, &s.name).await {
            Some(c)
                if c.metadata.uid != opaque_uid
                    && c.type_.as_deref() == Some("kubernetes.io/dockerconfigjson") =>
            {
                Ok(())
            }
            other => Err(format!("type {:?}", other.and_then(|c| c.type_))),
        }
    })
    .await;
    wait_copy(&client, &ns, &s.name, &s.password).await;
    wait_synced(&client, &s.name).await;
}

/// ServiceAccounts in odd states: duplicate and empty-named foreign entries, a garbage
/// bookkeeping annotation, an entry of our name that was there before us.
#[tokio::test]
async fn odd_service_account_states_keep_every_foreign_entry() {
    let client = admin().await;
    let key = unique("cat-sa");
    let ns = namespace(&client, "cat-sa", &[(&key, "yes")]).await;
    for sa in ["dups", "garbage", "prior"] {
        create_service_account(&client, &ns, sa).await;
    }
    let (source, _) = source_secret(&client).await;
    let name = unique("cat-sa");
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let set = |sa: &str, body: serde_json::Value| {
        let sas = sas.clone();
        let sa = sa.to_string();
        async move {
            sas.patch(&sa, &PatchParams::default(), &Patch::Merge(body))
                .await
                .unwrap_or_else(|e| panic!("patching {sa}: {e}"));
        }
    };
    set(
        "dups",
        json!({"imagePullSecrets": [{"name": "a"}, {"name": "a"}, {"name": ""}, {"name": "b"}]}),
    )
    .await;
    set(
        "garbage",
        json!({"metadata": {"annotations": {PULL_SECRETS_ANNOTATION: ",,/,\u{1F512}/x,,,=\"'"}},
                          "imagePullSecrets": [{"name": "x"}]}),
    )
    .await;
    set(
        "prior",
        json!({"imagePullSecrets": [{"name": name.clone()}, {"name": "c"}]}),
    )
    .await;
    create_credential(
        &client,
        &name,
        json!({"source": {"secretRef": {"namespace": SOURCE_NS, "name": source}},
               "namespaceSelector": {"matchLabels": {key.clone(): "yes"}}, "serviceAccounts": ["*"]}),
    )
    .await;
    wait_synced(&client, &name).await;
    // Synced counts the ServiceAccounts the operator has seen; these were created just before.
    for (sa, expected) in [
        ("dups", vec!["a", "a", "", "b", name.as_str()]),
        ("garbage", vec!["x", name.as_str()]),
        ("prior", vec![name.as_str(), "c"]),
    ] {
        wait_for(
            &format!("ServiceAccount {sa} listing {expected:?}"),
            TIMEOUT,
            || async {
                let listed = pull_secret_names(&get_sa(&client, &ns, sa).await.unwrap());
                if listed == expected {
                    Ok(())
                } else {
                    Err(listed)
                }
            },
        )
        .await;
    }

    let listed = |sa: &str| {
        let client = client.clone();
        let (ns, sa) = (ns.clone(), sa.to_string());
        async move { pull_secret_names(&get_sa(&client, &ns, &sa).await.unwrap()) }
    };

    // Deleting the credential removes what it added, and only that.
    delete_credential(&client, &name).await;
    assert_eq!(listed("dups").await, ["a", "a", "", "b"]);
    assert_eq!(listed("garbage").await, ["x"]);
    assert_eq!(
        listed("prior").await,
        [name.as_str(), "c"],
        "an entry that was there before us stays"
    );
}

/// A namespace flapping its label 20 times: the end state wins, with nothing left behind.
#[tokio::test]
async fn namespace_flapping_labels_ends_in_the_right_state() {
    let client = admin().await;
    let s = setup(&client, "cat-flap", 1, json!({})).await;
    let ns = s.namespaces[0].clone();
    for i in 0..20 {
        let value = if i % 2 == 0 { None } else { Some("yes") };
        label_namespace(&client, &ns, &s.key, value).await;
    }
    // 20 flips end labelled: a copy and an entry.
    settled_after_namespace_events(&client, &s).await;
    let copy = wait_copy(&client, &ns, &s.name, &s.password).await;
    wait_sa_lists(&client, &ns, "default", &s.name).await;
    wait_synced(&client, &s.name).await;
    assert_copy_untouched_and_quiet(&client, &s.name, &ns, &copy).await;
    for i in 0..21 {
        let value = if i % 2 == 0 { None } else { Some("yes") };
        label_namespace(&client, &ns, &s.key, value).await;
    }
    // 21 flips end unlabelled: nothing of ours left.
    settled_after_namespace_events(&client, &s).await;
    wait_secret_gone(&client, &ns, &s.name).await;
    wait_for("our entry to leave default", TIMEOUT, || async {
        let listed = pull_secret_names(&get_sa(&client, &ns, "default").await.unwrap());
        if listed.contains(&s.name) {
            Err(listed)
        } else {
            Ok(())
        }
    })
    .await;
    wait_synced(&client, &s.name).await;
}

/// Waits until the operator has acted on every namespace event so far: namespace events reach it
/// in order on one watch, so once a namespace created now has its copy, the pass that wrote it
/// (and any pass after it) saw the flips before it. Without this barrier a copy written for an
/// intermediate flip could pass for the end state.
async fn settled_after_namespace_events(client: &kube::Client, s: &Setup) {
    let barrier = namespace(client, "cat-flap-barrier", &[(&s.key, "yes")]).await;
    wait_copy(client, &barrier, &s.name, &s.password).await;
}

/// Targets that are odd but not errors: a listed namespace that does not exist, a listed
/// ServiceAccount that does not exist (yet), an exclusion pattern that matches nothing.
#[tokio::test]
async fn absent_namespaces_and_service_accounts_are_not_errors() {
    let client = admin().await;
    let s = setup(
        &client,
        "cat-absent",
        1,
        json!({"namespaces": [unique("does-not-exist")], "serviceAccounts": ["default", "later"],
               "excludeNamespaces": ["[", "*]"]}),
    )
    .await;
    let ns = s.namespaces[0].clone();
    wait_synced_with(&client, &s.name, "1 target", |s| s.target_namespaces == 1).await;
    create_service_account(&client, &ns, "later").await;
    wait_sa_lists(&client, &ns, "later", &s.name).await;
}
