//! `doctor` on the real control plane: one test per diagnosis, through the real binary.

use k8s_openapi::api::core::v1::{Event, ObjectReference, Pod, ServiceAccount};
use kube::{
    Api, Client,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::{foundation::pod, support::*};

const IMAGE: &str = "registry.example.com/team/app:1.0";

/// Runs `regcred-operator doctor <args>`; returns the exit code and the JSON report (or stderr).
async fn doctor(args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["doctor"];
    all.extend_from_slice(args);
    let json = args.contains(&"json");
    let out = tokio::process::Command::new(operator_binary())
        .args(&all)
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let report = if json {
        serde_json::from_str(&stdout).unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    (
        out.status.code().unwrap_or(-1),
        report,
        format!("{stdout}{stderr}"),
    )
}

/// `doctor pod/app -n <ns> -o json`: the exit code and the report.
async fn doctor_app(ns: &str) -> (i32, Value) {
    let (code, report, _) = doctor(&["pod/app", "-n", ns, "-o", "json"]).await;
    (code, report)
}

async fn pull_secret(client: &Client, ns: &str, name: &str, server: &str, pw: &str) {
    let config = docker_config(server, "robot", pw);
    put_secret(client, &pull_secret_object(ns, name, &config)).await;
}

/// A pull Secret `secret` for `server` with a fresh password, and pod `app` listing it; returns the
/// password.
async fn app_with_pull_secret(client: &Client, ns: &str, secret: &str, server: &str) -> String {
    let pw = password();
    pull_secret(client, ns, secret, server, &pw).await;
    pod_with_secrets(client, ns, "app", &[secret]).await;
    pw
}

async fn pod_with_secrets(client: &Client, ns: &str, name: &str, secrets: &[&str]) {
    let mut p = pod(name);
    p.spec.as_mut().unwrap().containers[0].image = Some(IMAGE.into());
    if !secrets.is_empty() {
        p.spec.as_mut().unwrap().image_pull_secrets = Some(
            secrets
                .iter()
                .map(|s| k8s_openapi::api::core::v1::LocalObjectReference {
                    name: s.to_string(),
                })
                .collect(),
        );
    }
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &p)
        .await
        .unwrap();
}

#[tokio::test]
async fn all_good_exits_zero_and_never_prints_credentials() {
    let client = admin().await;
    let ns = namespace(&client, "doc-ok", &[]).await;
    let pw = app_with_pull_secret(&client, &ns, "good-pull", "registry.example.com").await;
    let (code, report) = doctor_app(&ns).await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["ok"], true);
    assert_eq!(
        report["images"][0]["normalized"],
        "registry.example.com/team/app:1.0"
    );
    assert_eq!(report["images"][0]["entries"][0]["matches"], true);
    let (code, _, text) = doctor(&["app", "-n", &ns]).await;
    assert_eq!(code, 0);
    assert!(text.contains("OK:"), "{text}");
    for output in [report.to_string(), text] {
        assert!(
            !output.contains(&pw) && !output.contains(SECRET_MARKER),
            "credential material printed: {output}"
        );
    }
}

#[tokio::test]
async fn missing_secret_is_found() {
    let client = admin().await;
    let ns = namespace(&client, "doc-missing", &[]).await;
    pod_with_secrets(&client, &ns, "app", &["nope"]).await;
    let (code, report) = doctor_app(&ns).await;
    assert_eq!(code, 1);
    assert!(has_problem(&report, "SecretMissing"), "{report}");
}

#[tokio::test]
async fn secret_in_another_namespace_is_named() {
    let client = admin().await;
    let home = namespace(&client, "doc-home", &[]).await;
    let ns = namespace(&client, "doc-elsewhere", &[]).await;
    let name = unique("shared-pull");
    pull_secret(&client, &home, &name, "registry.example.com", &password()).await;
    pod_with_secrets(&client, &ns, "app", &[&name]).await;
    let (code, report) = doctor_app(&ns).await;
    assert_eq!(code, 1);
    assert!(has_problem(&report, "SecretInOtherNamespace"), "{report}");
    assert_eq!(report["secrets"][0]["foundInNamespaces"], json!([home]));
}

#[tokio::test]
async fn wrong_type_and_malformed_config_are_explained() {
    let client = admin().await;
    let ns = namespace(&client, "doc-type", &[]).await;
    put_secret(
        &client,
        &secret_object(
            &ns,
            "generic",
            "Opaque",
            &[("username", b"u"), ("password", b"p")],
        ),
    )
    .await;
    put_secret(
        &client,
        &pull_secret_object(&ns, "empty", r#"{"auths":{}}"#),
    )
    .await;
    pod_with_secrets(&client, &ns, "app", &["generic", "empty"]).await;
    let (code, report) = doctor_app(&ns).await;
    assert_eq!(code, 1);
    assert!(
        has_problem(&report, "WrongSecretType") && has_problem(&report, "MalformedSecret"),
        "{report}"
    );
}

#[tokio::test]
async fn no_matching_entry_explains_the_near_miss() {
    let client = admin().await;
    let ns = namespace(&client, "doc-nomatch", &[]).await;
    app_with_pull_secret(&client, &ns, "port-pull", "registry.example.com:5000").await;
    let (code, report) = doctor_app(&ns).await;
    assert_eq!(code, 1);
    assert!(has_problem(&report, "NoMatchingEntry"), "{report}");
    let entry = &report["images"][0]["entries"][0];
    assert_eq!(entry["nearMiss"], true);
    assert!(
        entry["whyNot"].as_str().unwrap().contains("port"),
        "{entry}"
    );
}

#[tokio::test]
async fn pod_created_before_the_service_account_patch_is_detected() {
    let client = admin().await;
    let ns = namespace(&client, "doc-order", &[]).await;
    pull_secret(
        &client,
        &ns,
        "late-pull",
        "registry.example.com",
        &password(),
    )
    .await;
    pod_with_secrets(&client, &ns, "app", &[]).await;
    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"imagePullSecrets": [{"name": "late-pull"}]})),
        )
        .await
        .unwrap();
    let (code, report) = doctor_app(&ns).await;
    assert_eq!(code, 1);
    assert!(
        has_problem(&report, "PodCreatedBeforeServiceAccountPatch"),
        "{report}"
    );
    let fix = report["fix"].as_str().unwrap();
    assert!(fix.contains("recreate the pod"), "{fix}");
    assert!(
        fix.contains("spec.podRecovery: Evict"),
        "doctor points at podRecovery: {fix}"
    );
}

#[tokio::test]
async fn pull_events_are_classified() {
    let client = admin().await;
    let ns = namespace(&client, "doc-events", &[]).await;
    app_with_pull_secret(&client, &ns, "good-pull", "registry.example.com").await;
    let event = Event {
        metadata: ObjectMeta {
            name: Some("app.pull-failed".into()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            kind: Some("Pod".into()),
            name: Some("app".into()),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        reason: Some("Failed".into()),
        type_: Some("Warning".into()),
        message: Some(format!(
            "Failed to pull image \"{IMAGE}\": failed to authorize: failed to fetch oauth token: unexpected status from GET request to https://registry.example.com/token: 401 Unauthorized"
        )),
        ..Default::default()
    };
    Api::<Event>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &event)
        .await
        .unwrap();
    let (code, report) = doctor_app(&ns).await;
    assert_eq!(code, 1);
    assert_eq!(
        report["images"][0]["events"][0]["classification"], "authRefused",
        "{report}"
    );
    assert!(has_problem(&report, "PullFailed"));
}

#[tokio::test]
async fn image_mode_uses_the_service_account_before_anything_is_deployed() {
    let client = admin().await;
    let s = setup(&client, "doc-image", 1, json!({})).await;
    wait_synced(&client, &s.name).await;
    let ns = &s.namespaces[0];
    let (code, report, _) = doctor(&[
        "-n",
        ns,
        "--image",
        "registry.example.com/team/app",
        "--service-account",
        "default",
        "-o",
        "json",
    ])
    .await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["pullSecretsFrom"], "serviceAccount");
    assert_eq!(
        report["secrets"][0]["managedBy"], s.name,
        "names the RegistryCredential"
    );
    let (code, report, _) =
        doctor(&["-n", ns, "--image", "other.example.com/app", "-o", "json"]).await;
    assert_eq!(code, 1);
    assert!(has_problem(&report, "NoMatchingEntry"));
}

#[tokio::test]
async fn usage_errors_exit_two_and_kubectl_plugin_works() {
    let (code, _, out) = doctor(&[]).await;
    assert_eq!(code, 2, "{out}");
    let (code, _, out) = doctor(&["pod/none", "-n", "default"]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not found"), "{out}");

    // As a kubectl plugin: an executable named kubectl-regcred on PATH.
    let client = admin().await;
    let ns = namespace(&client, "doc-plugin", &[]).await;
    app_with_pull_secret(&client, &ns, "good-pull", "registry.example.com").await;
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(operator_binary(), dir.path().join("kubectl-regcred")).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap()
    );
    let out = tokio::process::Command::new("kubectl")
        .args(["regcred", "doctor", "pod/app", "-n", &ns])
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK:"));
}
