//! The platform the product relies on: admission copies a ServiceAccount's pull secrets into new
//! pods, RBAC binds restricted clients, and the operator refuses to run without its CRD.

use std::process::Stdio;

use k8s_openapi::api::{
    core::v1::{LocalObjectReference, Pod, Secret, ServiceAccount},
    rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
};
use kube::{
    Api,
    api::{ListParams, ObjectMeta, PostParams},
};
use serde_json::json;

use crate::support::*;

pub fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/team/app:1.0"}]}
    }))
    .unwrap()
}

/// The plugin reads the ServiceAccount from the API server's cache, falling back to a live read when
/// the cache has not seen it yet. A ServiceAccount created with its list is therefore seen with it
/// at once; a later change to a list reaches new pods moments later (see `wait_admission_lists`).
#[tokio::test]
async fn pod_gets_service_account_pull_secrets_through_admission() {
    let client = admin().await;
    let ns = namespace(&client, "admission", &[]).await;
    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &service_account(&ns, "puller", &["team-pull"]),
        )
        .await
        .unwrap();
    let mut app = pod("app");
    app.spec.as_mut().unwrap().service_account_name = Some("puller".into());
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let created = pods.create(&PostParams::default(), &app).await.unwrap();
    assert_eq!(
        created.spec.unwrap().image_pull_secrets,
        Some(vec![LocalObjectReference {
            name: "team-pull".into()
        }]),
        "the ServiceAccount admission plugin copies imagePullSecrets into new pods"
    );
}

#[tokio::test]
async fn service_account_token_client_is_bound_by_rbac() {
    let client = admin().await;
    let ns = namespace(&client, "rbac", &[]).await;
    let restricted = client_as_service_account(&client, &ns, "default").await;
    let secrets: Api<Secret> = Api::namespaced(restricted.clone(), &ns);
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("listing Secrets without a Role must be forbidden, got {other:?}"),
    }
    let role = Role {
        metadata: ObjectMeta {
            name: Some("read-secrets".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            verbs: vec!["list".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("read-secrets".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "read-secrets".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "default".into(),
            namespace: Some(ns.clone()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    wait_for("the Role to allow listing Secrets", TIMEOUT, || async {
        secrets
            .list(&ListParams::default())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    // Still nothing beyond the Role: no writes, no other namespace.
    let err = secrets
        .create(
            &PostParams::default(),
            &secret_object(&ns, "x", "Opaque", &[]),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "{err:?}"
    );
    let other: Api<Secret> = Api::namespaced(restricted, SOURCE_NS);
    assert!(
        matches!(other.list(&ListParams::default()).await, Err(kube::Error::Api(s)) if s.code == 403)
    );
}

/// Starts a pristine cluster without the CRD (no controller manager needed) and runs the operator.
#[tokio::test]
async fn run_without_crd_exits_with_install_hint() {
    let dir = tempfile::tempdir().unwrap();
    let up = tokio::process::Command::new(cluster_script())
        .args(["up", dir.path().to_str().unwrap()])
        .env("CONTROLLER_MANAGER", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    let down = || {
        std::process::Command::new(cluster_script())
            .args(["down", dir.path().to_str().unwrap()])
            .stderr(Stdio::null())
            .status()
    };
    if !up.status.success() {
        let _ = down();
        panic!(
            "pristine cluster did not start: {}",
            String::from_utf8_lossy(&up.stderr)
        );
    }
    let run = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new(operator_binary())
            .args([
                "run",
                "--metrics-addr",
                "127.0.0.1:0",
                "--health-addr",
                "127.0.0.1:0",
            ])
            .env("KUBECONFIG", dir.path().join("kubeconfig"))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .kill_on_drop(true)
            .output(),
    )
    .await;
    let _ = down();
    let out = run
        .expect("the operator must exit, not wait for the CRD forever")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "must exit non-zero; stderr: {stderr}"
    );
    assert!(
        stderr.contains("registrycredentials.regcred.dev"),
        "names the CRD: {stderr}"
    );
    assert!(
        stderr.contains("kubectl apply -f crds/registrycredential.yaml"),
        "says how to install it: {stderr}"
    );
}

/// Runs the cluster script with a modified environment; returns (success, stderr, seconds).
async fn cluster_script_with(args: &[&str], env: &[(&str, &str)]) -> (bool, String, f64) {
    let start = std::time::Instant::now();
    let mut cmd = tokio::process::Command::new(cluster_script());
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), cmd.output())
        .await
        .expect("the script must fail fast, not hang")
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        start.elapsed().as_secs_f64(),
    )
}

fn no_process_mentions(dir: &std::path::Path) {
    let needle = dir.to_str().unwrap();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            assert!(
                !cmdline.contains(needle) || cmdline.contains("cluster.sh"),
                "orphan process left behind: {cmdline}"
            );
        }
    }
}

#[tokio::test]
async fn cluster_up_fails_fast_on_a_taken_port_and_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (ok, stderr, _) = cluster_script_with(
        &["up", dir.path().to_str().unwrap()],
        &[("APISERVER_PORT", &port), ("CONTROLLER_MANAGER", "0")],
    )
    .await;
    assert!(!ok);
    assert!(
        stderr.contains(&format!("port {port}")) && stderr.contains("already in use"),
        "{stderr}"
    );
    no_process_mentions(dir.path());
}

#[tokio::test]
async fn cluster_up_explains_a_missing_go_toolchain() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, stderr, _) = cluster_script_with(
        &["up", dir.path().to_str().unwrap()],
        &[("PATH", "/usr/bin:/bin")],
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("Go is not installed"), "{stderr}");
    no_process_mentions(dir.path());
}

#[tokio::test]
async fn cluster_up_explains_a_failed_module_download() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let modcache = tempfile::tempdir().unwrap();
    let (ok, stderr, secs) = cluster_script_with(
        &["up", dir.path().to_str().unwrap()],
        &[
            ("REGCRED_CACHE_DIR", cache.path().to_str().unwrap()),
            ("GOMODCACHE", modcache.path().to_str().unwrap()),
            ("GOPROXY", "off"),
        ],
    )
    .await;
    assert!(!ok);
    assert!(
        stderr.contains("downloading Go modules") && stderr.contains("GOPROXY")
            || stderr.contains("module proxy"),
        "{stderr}"
    );
    assert!(secs < 60.0, "fails fast ({secs:.0}s)");
    no_process_mentions(dir.path());
    // Module cache files are read-only; make them removable for the temp dir cleanup.
    let _ = std::process::Command::new("chmod")
        .args(["-R", "u+w", modcache.path().to_str().unwrap()])
        .status();
}
