//! Credentials against a real registry: doctor's --check-registry, an independent client
//! (skopeo) using the Secret the operator generated, and the operator's verification.

use std::process::Command;

use serde_json::json;

use crate::{registry_fixture::TestRegistry, support::*};

async fn doctor_check(ns: &str, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec![
        "doctor",
        "pod/app",
        "-n",
        ns,
        "--check-registry",
        "-o",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = tokio::process::Command::new(operator_binary())
        .args(&args)
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .await
        .unwrap();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("doctor: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), report)
}

async fn pod_pulling_from(client: &kube::Client, prefix: &str, server: &str, pw: &str) -> String {
    let ns = namespace(client, prefix, &[]).await;
    let config = docker_config(server, "robot", pw);
    put_secret(
        client,
        &secret_object(
            &ns,
            "reg-pull",
            "kubernetes.io/dockerconfigjson",
            &[(".dockerconfigjson", config.as_bytes())],
        ),
    )
    .await;
    let mut p = crate::foundation::pod("app");
    let spec = p.spec.as_mut().unwrap();
    spec.containers[0].image = Some(format!("{server}/team/app:v1"));
    spec.image_pull_secrets = Some(vec![k8s_openapi::api::core::v1::LocalObjectReference {
        name: "reg-pull".into(),
    }]);
    kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), &ns)
        .create(&Default::default(), &p)
        .await
        .unwrap();
    ns
}

#[tokio::test]
async fn check_registry_tells_authenticated_refused_unreachable_and_tls_apart() {
    let client = admin().await;
    let pw = password();
    let registry = TestRegistry::start("robot", &pw);
    let ca = registry.ca_file();
    let ca = ca.to_str().unwrap();

    let good = pod_pulling_from(&client, "reg-good", &registry.addr(), &pw).await;
    let (code, report) = doctor_check(&good, &["--ca-file", ca]).await;
    assert_eq!(
        report["images"][0]["registryChecks"][0]["outcome"], "authenticated",
        "{report}"
    );
    assert_eq!(code, 0);
    assert!(!report.to_string().contains(&pw));

    let wrong = pod_pulling_from(&client, "reg-wrong", &registry.addr(), "not-the-password").await;
    let (code, report) = doctor_check(&wrong, &["--ca-file", ca]).await;
    assert_eq!(
        report["images"][0]["registryChecks"][0]["outcome"], "refused",
        "{report}"
    );
    assert_eq!(code, 1);

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = pod_pulling_from(&client, "reg-port", &format!("127.0.0.1:{closed}"), &pw).await;
    let (_, report) = doctor_check(&nowhere, &["--ca-file", ca]).await;
    assert_eq!(
        report["images"][0]["registryChecks"][0]["outcome"], "unreachable",
        "{report}"
    );

    let (code, report) = doctor_check(&good, &[]).await; // the test CA is not trusted
    assert_eq!(
        report["images"][0]["registryChecks"][0]["outcome"], "tls",
        "{report}"
    );
    assert_eq!(code, 1);
}

#[tokio::test]
async fn generated_secret_authenticates_with_an_independent_client() {
    let client = admin().await;
    let pw = password();
    let registry = TestRegistry::start("robot", &pw);
    let source = login_source(&client, &registry.addr(), &pw).await;
    let s = setup(&client, "skopeo", 1, json!({ "source": source })).await;
    wait_synced(&client, &s.name).await;
    let copy = get_secret(&client, &s.namespaces[0], &s.name)
        .await
        .unwrap();
    let authfile = registry.dir.path().join("auth.json");
    std::fs::write(&authfile, &copy.data.unwrap()[".dockerconfigjson"].0).unwrap();

    // Build a tiny OCI image, push it with the generated credentials, then inspect it.
    let layout = registry.dir.path().join("oci");
    let layout_s = layout.to_str().unwrap();
    let ok = |cmd: &mut Command| {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    ok(Command::new("umoci").args(["init", "--layout", layout_s]));
    ok(Command::new("umoci").args(["new", "--image", &format!("{layout_s}:v1")]));
    let target = format!("docker://{}/team/app:v1", registry.addr());
    ok(Command::new("skopeo")
        .args(["copy", "--dest-authfile"])
        .arg(&authfile)
        .arg("--dest-cert-dir")
        .arg(registry.cert_dir())
        .arg(format!("oci:{layout_s}:v1"))
        .arg(&target));
    let inspected = ok(Command::new("skopeo")
        .args(["inspect", "--authfile"])
        .arg(&authfile)
        .arg("--cert-dir")
        .arg(registry.cert_dir())
        .arg(&target));
    assert!(inspected.contains("\"Digest\""), "{inspected}");
    // And a wrong password is refused by the same client: the check above is not vacuous.
    std::fs::write(&authfile, docker_config(&registry.addr(), "robot", "wrong")).unwrap();
    let out = Command::new("skopeo")
        .args(["inspect", "--authfile"])
        .arg(&authfile)
        .arg("--cert-dir")
        .arg(registry.cert_dir())
        .arg(&target)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn verification_flips_credentials_valid_when_the_registry_password_changes() {
    let client = admin().await;
    let pw = password();
    let mut registry = TestRegistry::start("robot", &pw);
    let source = login_source(&client, &registry.addr(), &pw).await;
    let s = setup(
        &client,
        "verify",
        1,
        json!({
            "source": source,
            "verify": {"intervalSeconds": 10, "caBundle": registry.ca_pem()},
        }),
    )
    .await;
    let condition = |rc: &regcred_operator::api::RegistryCredential| {
        rc.status.as_ref().and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "CredentialsValid")
                .cloned()
        })
    };
    wait_for("CredentialsValid=True", TIMEOUT, || async {
        let rc = credential(&client, &s.name).await;
        match condition(&rc) {
            Some(c) if c.status == "True" && c.reason == "Authenticated" => Ok(()),
            other => Err(other.map(|c| (c.status, c.reason, c.message))),
        }
    })
    .await;
    registry.set_password("robot", "rotated-at-the-registry");
    wait_for(
        "CredentialsValid=False after the registry changed the password",
        TIMEOUT,
        || async {
            let rc = credential(&client, &s.name).await;
            match condition(&rc) {
                Some(c) if c.status == "False" && c.reason == "Refused" => Ok(()),
                other => Err(other.map(|c| (c.status, c.reason, c.message))),
            }
        },
    )
    .await;
    wait_event(&client, &s.name, "CredentialsRejected").await;
    assert_nothing_leaked(&client, &s.name, &[&pw]).await;
}

/// A token service that records every request reaching it (whether it carried credentials)
/// and refuses it: what a hostile realm would harvest.
async fn recording_realm() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<bool>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                record
                    .lock()
                    .unwrap()
                    .push(text.contains("\r\nauthorization:"));
                let _ = conn
                    .write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (port, seen)
}

fn credentials_valid(
    rc: &regcred_operator::api::RegistryCredential,
) -> Option<(String, String, String)> {
    rc.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "CredentialsValid")
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    })
}

async fn wait_credentials_valid(
    client: &kube::Client,
    name: &str,
    reason: &str,
) -> (String, String, String) {
    wait_for(&format!("CredentialsValid {reason}"), TIMEOUT, || async {
        let rc = credential(client, name).await;
        match credentials_valid(&rc) {
            Some(c) if c.1 == reason => Ok(c),
            other => Err(other),
        }
    })
    .await
}

#[tokio::test]
async fn verification_never_sends_credentials_to_a_metadata_realm() {
    let client = admin().await;
    let pw = password();
    let registry =
        TestRegistry::start_with_token_realm("http://169.254.169.254/latest/meta-data/iam");
    let source = login_source(&client, &registry.addr(), &pw).await;
    let s = setup(
        &client,
        "realm-meta",
        1,
        json!({"source": source, "verify": {"intervalSeconds": 10, "caBundle": registry.ca_pem()}}),
    )
    .await;
    let (status, _, message) = wait_credentials_valid(&client, &s.name, "RealmRefused").await;
    assert_eq!(status, "False");
    assert!(
        message.contains("credentials not sent")
            && message.contains("169.254.169.254, a link-local or cloud metadata address")
            && !message.contains("meta-data"),
        "{message}"
    );
    let event = wait_event(&client, &s.name, "CredentialsRejected").await;
    assert!(event.note.unwrap_or_default().contains("169.254.169.254"));
    assert_nothing_leaked(&client, &s.name, &[&pw]).await;

    // doctor --check-registry refuses the same realm, and says so.
    let ns = pod_pulling_from(&client, "realm-meta-doc", &registry.addr(), &pw).await;
    let ca = registry.ca_file();
    let (code, report) = doctor_check(&ns, &["--ca-file", ca.to_str().unwrap()]).await;
    assert_eq!(code, 1, "{report}");
    assert_eq!(
        report["images"][0]["registryChecks"][0]["outcome"], "realmRefused",
        "{report}"
    );
    let problems = report["images"][0]["problems"].to_string();
    assert!(problems.contains("RegistryRealmRefused"), "{report}");
    assert!(!report.to_string().contains(SECRET_MARKER), "{report}");
}

#[tokio::test]
async fn a_cross_host_realm_is_named_and_a_forbidding_operator_sends_it_nothing() {
    let client = admin().await;
    let pw = password();
    // The registry is 127.0.0.1, its realm `localhost`: another host (the same machine here).
    let (port, seen) = recording_realm().await;
    let registry = TestRegistry::start_with_token_realm(&format!("http://localhost:{port}/token"));
    let source = login_source(&client, &registry.addr(), &pw).await;
    let verify = json!({"intervalSeconds": 10, "caBundle": registry.ca_pem()});
    let s = setup(
        &client,
        "realm-cross",
        1,
        json!({"source": source, "verify": verify}),
    )
    .await;
    // Allowed (Docker Hub works this way), and named where the result is shown.
    let (status, _, message) = wait_credentials_valid(&client, &s.name, "Refused").await;
    assert_eq!(status, "False");
    assert!(
        message.contains(&format!(
            "token service on another host: http://localhost:{port}"
        )),
        "{message}"
    );
    assert!(
        seen.lock().unwrap().iter().any(|&auth| auth),
        "the realm got the credentials"
    );
    let event = wait_event(&client, &s.name, "CredentialsRejected").await;
    assert!(event.note.unwrap_or_default().contains("http://localhost:"));
    assert_nothing_leaked(&client, &s.name, &[&pw]).await;

    // An operator with --forbid-cross-host-realms sends nothing there.
    let (port, seen) = recording_realm().await;
    let registry = TestRegistry::start_with_token_realm(&format!("http://localhost:{port}/token"));
    let source = login_source(&client, &registry.addr(), &pw).await;
    let instance = unique("realm-forbid");
    let key = unique("realm-forbid");
    namespace(&client, "realm-forbid", &[(&key, "yes")]).await;
    let name = unique("realm-forbid");
    create_credential_for(
        &client,
        &instance,
        &name,
        json!({
            "source": source,
            "namespaceSelector": {"matchLabels": {key.clone(): "yes"}},
            "verify": {"intervalSeconds": 10, "caBundle": registry.ca_pem()},
        }),
    )
    .await;
    let mut operator = Operator::start(
        &kubeconfig_path(),
        &instance,
        &format!("{instance}-op"),
        &["--leader-election=false", "--forbid-cross-host-realms"],
    )
    .await;
    let (status, _, message) = wait_credentials_valid(&client, &name, "RealmRefused").await;
    operator.assert_running();
    assert_eq!(status, "False");
    assert!(
        message.contains("another host than the registry (127.0.0.1)")
            && message.contains("cross-host token realms are forbidden"),
        "{message}"
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the realm: {seen:?}"
    );
    assert_nothing_leaked(&client, &name, &[&pw]).await;
    delete_credential(&client, &name).await;
}
