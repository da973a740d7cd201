//! `source.ecr`: tokens minted from moto's ECR/STS/IAM (signatures and policies checked), fanned
//! out, refreshed in place, and failures that keep the copies.

use std::{path::PathBuf, time::Duration};

use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::io::AsyncBufReadExt;

use crate::support::*;

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "123456789012";
const OTHER_ACCOUNT: &str = "210987654321";

/// moto's server with the adjustments of `tests/aws/moto_ecr.py`, on a free loopback port.
struct Moto {
    child: tokio::process::Child,
    endpoint: String,
    access_key_id: String,
    secret_access_key: String,
    role_arn: String,
}

fn moto_python() -> PathBuf {
    if let Some(p) = std::env::var_os("REGCRED_MOTO_PYTHON") {
        return p.into();
    }
    let cache = std::env::var_os("REGCRED_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("regcred-operator"))
        })
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/regcred-operator")
        });
    cache.join("moto-venv/bin/python")
}

impl Moto {
    /// `lifetime`: seconds the minted tokens are valid, or `fixed` for moto's expiry in 2015.
    async fn start(lifetime: &str, audience: &str) -> Moto {
        let python = moto_python();
        assert!(
            python.exists(),
            "moto is not installed ({} is missing): run hack/install-deps.sh (or make deps)",
            python.display()
        );
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aws/moto_ecr.py");
        let log_dir =
            std::env::var_os("REGCRED_TEST_LOG_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
        let log = std::fs::File::create(log_dir.join(format!("{}.log", unique("moto")))).unwrap();
        let mut child = tokio::process::Command::new(&python)
            .args([script, "--token-lifetime", lifetime, "--audience", audience])
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("starting moto");
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(90), lines.next_line())
            .await
            .expect("moto did not start within 90 s")
            .unwrap()
            .expect("moto exited at start-up (see its log)");
        let ready: serde_json::Value = serde_json::from_str(&line).expect("moto's ready line");
        let field = |k: &str| ready[k].as_str().unwrap().to_string();
        Moto {
            endpoint: field("endpoint"),
            access_key_id: field("access_key_id"),
            secret_access_key: field("secret_access_key"),
            role_arn: field("role_arn"),
            child,
        }
    }

    async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// The AWS keys Secret in the source namespace.
async fn put_keys(client: &Client, name: &str, access_key_id: &str, secret: &str) {
    put_source_secret(
        client,
        name,
        "Opaque",
        &[
            ("AWS_ACCESS_KEY_ID", access_key_id.as_bytes()),
            ("AWS_SECRET_ACCESS_KEY", secret.as_bytes()),
        ],
    )
    .await;
}

fn registry(account: &str) -> String {
    format!("{account}.dkr.ecr.{REGION}.amazonaws.com")
}

/// The token of `account`'s registry in a copy, checked to be what kubectl would write.
fn token_in(copy: &Secret, account: &str) -> String {
    use base64::Engine;
    let config = secret_config(copy);
    let entry = &config["auths"][registry(account)];
    assert_eq!(entry["username"], "AWS", "{}", entry["username"]);
    let password = entry["password"].as_str().expect("a password").to_string();
    let auth = base64::engine::general_purpose::STANDARD
        .decode(entry["auth"].as_str().expect("an auth"))
        .unwrap();
    assert_eq!(String::from_utf8(auth).unwrap(), format!("AWS:{password}"));
    assert!(password.starts_with(SECRET_MARKER), "a minted token");
    password
}

fn expires_at(rc: &regcred_operator::api::RegistryCredential) -> Option<Timestamp> {
    rc.status
        .as_ref()?
        .credential_expires_at
        .as_deref()
        .map(|t| t.parse().expect("RFC 3339"))
}

async fn ecr_credential(client: &Client, prefix: &str, n: usize, ecr: serde_json::Value) -> Setup {
    let key = unique(prefix);
    let mut namespaces = Vec::new();
    for _ in 0..n {
        namespaces.push(namespace(client, prefix, &[(&key, "yes")]).await);
    }
    let name = unique(prefix);
    create_credential(
        client,
        &name,
        json!({
            "source": {"ecr": ecr},
            "namespaceSelector": {"matchLabels": {key.clone(): "yes"}},
        }),
    )
    .await;
    Setup {
        name,
        key,
        namespaces,
        source: String::new(),
        password: String::new(),
    }
}

async fn metric(name: &str, series: &str) -> Option<f64> {
    let url = std::env::var("REGCRED_TEST_METRICS_URL").expect("REGCRED_TEST_METRICS_URL");
    let text = scrape(&url).await?;
    sample(&text, &series.replace("{name}", name))
}

#[tokio::test]
async fn ecr_tokens_reach_every_namespace_and_are_refreshed_in_place() {
    let client = admin().await;
    ensure_namespace(&client, SOURCE_NS).await;
    // 20 s tokens: the operator refreshes when less than half is left, i.e. after about 10 s.
    let moto = Moto::start("20", "sts.amazonaws.com").await;
    let keys = unique("aws-keys");
    put_keys(&client, &keys, &moto.access_key_id, &moto.secret_access_key).await;
    let s = ecr_credential(
        &client,
        "ecr",
        2,
        json!({
            "region": REGION,
            "registryIds": [ACCOUNT, OTHER_ACCOUNT],
            "endpoint": moto.endpoint,
            "credentials": {"secretRef": {"namespace": SOURCE_NS, "name": keys}},
        }),
    )
    .await;
    let rc = wait_synced(&client, &s.name).await;
    let expiry = expires_at(&rc).expect("status.credentialExpiresAt");
    let left = expiry.as_second() - Timestamp::now().as_second();
    assert!((0..=21).contains(&left), "expires in {left}s");
    let mut first = Vec::new();
    for ns in &s.namespaces {
        let copy = get_secret(&client, ns, &s.name).await.expect("a copy");
        assert_eq!(
            copy.type_.as_deref(),
            Some("kubernetes.io/dockerconfigjson")
        );
        let config = secret_config(&copy);
        assert_eq!(
            config["auths"].as_object().unwrap().len(),
            2,
            "one entry per registry"
        );
        token_in(&copy, OTHER_ACCOUNT);
        first.push((ns.clone(), copy.uid().unwrap(), token_in(&copy, ACCOUNT)));
    }
    let gauge = wait_for("the expiry metric", TIMEOUT, || async {
        metric(
            &s.name,
            "regcred_credential_expiry_timestamp_seconds{credential=\"{name}\"}",
        )
        .await
        .filter(|v| *v as i64 >= expiry.as_second())
        .ok_or(())
    })
    .await;
    assert!(gauge as i64 >= expiry.as_second());

    // Refreshed in place: same Secret (uid), new token, a later expiry.
    for (ns, uid, token) in &first {
        let copy = wait_for("a refreshed token in the copy", TIMEOUT, || async {
            let copy = get_secret(&client, ns, &s.name).await.expect("the copy");
            if token_in(&copy, ACCOUNT) == *token {
                Err("same token")
            } else {
                Ok(copy)
            }
        })
        .await;
        assert_eq!(
            copy.uid().as_deref(),
            Some(uid.as_str()),
            "updated in place"
        );
    }
    let rc = wait_for("a later credentialExpiresAt", TIMEOUT, || async {
        let rc = wait_synced(&client, &s.name).await;
        match expires_at(&rc) {
            Some(at) if at > expiry => Ok(rc),
            other => Err(other),
        }
    })
    .await;
    assert_eq!(ready(&rc).unwrap().1, "Synced");
    wait_event(&client, &s.name, "Rotated").await;
    let tokens: Vec<&str> = first.iter().map(|(_, _, t)| t.as_str()).collect();
    assert_nothing_leaked(&client, &s.name, &tokens).await;
    delete_credential(&client, &s.name).await;
}

/// moto's own expiry (2015-01-01) is in the past, like a token read with a skewed clock: the
/// operator does not refresh in a loop but at the minimum interval, and says so.
#[tokio::test]
async fn an_expiry_in_the_past_is_refreshed_at_the_minimum_interval_not_in_a_loop() {
    let client = admin().await;
    ensure_namespace(&client, SOURCE_NS).await;
    let moto = Moto::start("fixed", "sts.amazonaws.com").await;
    let keys = unique("aws-keys");
    put_keys(&client, &keys, &moto.access_key_id, &moto.secret_access_key).await;
    let s = ecr_credential(
        &client,
        "ecr-skew",
        1,
        json!({
            "region": REGION,
            "endpoint": moto.endpoint,
            "credentials": {"secretRef": {"namespace": SOURCE_NS, "name": keys}},
        }),
    )
    .await;
    let rc = wait_synced(&client, &s.name).await;
    let message = ready(&rc).unwrap().2;
    assert!(
        message.contains("is not in the future (clock skew?)") && message.contains("every 5s"),
        "{message}"
    );
    assert_eq!(
        rc.status.unwrap().credential_expires_at.as_deref(),
        Some("2015-01-01T00:00:00Z")
    );
    let copy = get_secret(&client, &s.namespaces[0], &s.name)
        .await
        .unwrap();
    token_in(&copy, ACCOUNT);
    let series = "regcred_token_mints_total{credential=\"{name}\",result=\"success\"}";
    let before = wait_for("the mint counter", TIMEOUT, || async {
        metric(&s.name, series).await.ok_or(())
    })
    .await;
    let started = std::time::Instant::now();
    // Over 12 s, at most one mint per 5 s (plus one in flight): no hot loop.
    stays("no hot loop of mints", Duration::from_secs(12), || async {
        let now = metric(&s.name, series).await.unwrap_or(before);
        let allowed = before + 1.0 + (started.elapsed().as_secs_f64() / 5.0).floor();
        if now <= allowed { Ok(()) } else { Err(now) }
    })
    .await;
    let after = metric(&s.name, series).await.unwrap();
    assert!(
        after > before,
        "refreshed at the minimum interval: {before} → {after}"
    );
    delete_credential(&client, &s.name).await;
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_copies_and_explains() {
    let client = admin().await;
    ensure_namespace(&client, SOURCE_NS).await;
    let mut moto = Moto::start("20", "sts.amazonaws.com").await;
    let keys = unique("aws-keys");
    put_keys(&client, &keys, &moto.access_key_id, &moto.secret_access_key).await;
    let s = ecr_credential(
        &client,
        "ecr-fail",
        1,
        json!({
            "region": REGION,
            "endpoint": moto.endpoint,
            "credentials": {"secretRef": {"namespace": SOURCE_NS, "name": keys}},
        }),
    )
    .await;
    wait_synced(&client, &s.name).await;
    let ns = s.namespaces[0].clone();

    // Credentials revoked (an access key AWS does not know): refused, copies kept.
    let copy = get_secret(&client, &ns, &s.name).await.unwrap();
    put_keys(
        &client,
        &keys,
        "AKIAREVOKEDKEY000000",
        &moto.secret_access_key,
    )
    .await;
    let rc = wait_problem(
        &client,
        &s.name,
        "revoked keys",
        "TokenRefreshFailed",
        "InvalidClientTokenId",
    )
    .await;
    let message = ready(&rc).unwrap().2;
    assert!(
        message.contains("the copies keep the current token, which expire"),
        "{message}"
    );
    let kept = get_secret(&client, &ns, &s.name).await.unwrap();
    assert_eq!(
        kept.metadata.resource_version,
        copy.metadata.resource_version
    );
    // Retried with backoff (5 s, 10 s, ...), not on every pass (a status write is one).
    let errors = "regcred_token_mints_total{credential=\"{name}\",result=\"error\"}";
    let failed = metric(&s.name, errors).await.unwrap_or(0.0);
    stays("retries with backoff", Duration::from_secs(7), || async {
        let now = metric(&s.name, errors).await.unwrap_or(0.0);
        if now <= failed + 2.0 {
            Ok(())
        } else {
            Err(now)
        }
    })
    .await;
    wait_event(&client, &s.name, "TokenRefreshFailed").await;
    wait_event(&client, &s.name, "TokenExpiringSoon").await;

    // Keys restored: a new token, Synced again.
    put_keys(&client, &keys, &moto.access_key_id, &moto.secret_access_key).await;
    wait_for("Synced after the keys are restored", TIMEOUT, || async {
        let rc = credential(&client, &s.name).await;
        match ready(&rc) {
            Some((_, r, _)) if r == "Synced" => Ok(()),
            other => Err(other),
        }
    })
    .await;
    let copy = get_secret(&client, &ns, &s.name).await.unwrap();

    // The endpoint down: the next refresh fails, the copy stays as it is.
    moto.stop().await;
    wait_problem(
        &client,
        &s.name,
        "endpoint down",
        "TokenRefreshFailed",
        "is unreachable",
    )
    .await;
    let kept = get_secret(&client, &ns, &s.name).await.unwrap();
    assert_eq!(
        kept.metadata.resource_version,
        copy.metadata.resource_version
    );
    assert_eq!(kept.uid(), copy.uid());
    assert_nothing_leaked(&client, &s.name, &[&moto.secret_access_key]).await;
    delete_credential(&client, &s.name).await;
}

/// webIdentity: the operator's own ServiceAccount token (audience as configured) is exchanged with
/// STS for a role's credentials; a token for another audience is refused by STS and explained.
#[tokio::test]
async fn web_identity_assumes_the_role_with_the_operators_own_token() {
    let client = admin().await;
    let moto = Moto::start("43200", "sts.example.test").await;
    let spec = |audience: &str| {
        json!({
            "region": REGION,
            "endpoint": moto.endpoint,
            "credentials": {"webIdentity": {
                "roleArn": moto.role_arn,
                "audience": audience,
                "stsEndpoint": moto.endpoint,
            }},
        })
    };
    let s = ecr_credential(&client, "ecr-wi", 1, spec("sts.example.test")).await;
    let rc = wait_synced(&client, &s.name).await;
    let copy = get_secret(&client, &s.namespaces[0], &s.name)
        .await
        .unwrap();
    token_in(&copy, ACCOUNT);
    let left = expires_at(&rc).unwrap().as_second() - Timestamp::now().as_second();
    assert!(left > 40000, "a 12-hour token: {left}s");

    patch_spec(
        &client,
        &s.name,
        json!({"source": {"ecr": spec("sts.amazonaws.com")}}),
    )
    .await;
    wait_problem(
        &client,
        &s.name,
        "wrong audience",
        "TokenRefreshFailed",
        "InvalidIdentityToken",
    )
    .await;
    let kept = get_secret(&client, &s.namespaces[0], &s.name)
        .await
        .unwrap();
    assert_eq!(
        kept.metadata.resource_version,
        copy.metadata.resource_version
    );
    assert_nothing_leaked(&client, &s.name, &[]).await;
    delete_credential(&client, &s.name).await;
}

/// Problems of the ECR source a person must fix: reported like any bad source, no AWS call.
#[tokio::test]
async fn ecr_configuration_problems_are_reported() {
    let client = admin().await;
    ensure_namespace(&client, SOURCE_NS).await;
    let keys = unique("aws-keys");
    put_source_secret(
        &client,
        &keys,
        "Opaque",
        &[
            ("aws_access_key_id", b"AKIA"),
            ("aws_secret_access_key", b"TOPSECRET-lowercase"),
        ],
    )
    .await;
    let ecr = |credentials: serde_json::Value, endpoint: &str| json!({"region": REGION, "endpoint": endpoint, "credentials": credentials});
    let s = ecr_credential(
        &client,
        "ecr-bad",
        1,
        ecr(
            json!({"secretRef": {"namespace": SOURCE_NS, "name": keys}}),
            "http://127.0.0.1:9",
        ),
    )
    .await;
    let cases = [
        (
            "unknown keys in the credentials Secret",
            ecr(
                json!({"secretRef": {"namespace": SOURCE_NS, "name": keys}}),
                "http://127.0.0.1:9",
            ),
            "InvalidSource",
            "expected keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        ),
        (
            "credentials Secret missing",
            ecr(
                json!({"secretRef": {"namespace": SOURCE_NS, "name": "nope"}}),
                "http://127.0.0.1:9",
            ),
            "SourceNotFound",
            "nope",
        ),
        (
            "credentials Secret outside the allowed namespaces",
            ecr(
                json!({"secretRef": {"namespace": "kube-system", "name": keys}}),
                "http://127.0.0.1:9",
            ),
            "SourceNamespaceNotAllowed",
            "kube-system",
        ),
        (
            "plain http to a non-loopback endpoint",
            ecr(
                json!({"secretRef": {"namespace": SOURCE_NS, "name": keys}}),
                "http://192.0.2.1:5000",
            ),
            "InvalidSource",
            "plain http is allowed to a loopback address only",
        ),
    ];
    for (case, spec, reason, expected) in cases {
        patch_spec(&client, &s.name, json!({"source": {"ecr": spec}})).await;
        wait_problem(&client, &s.name, case, reason, expected).await;
    }
    assert!(
        get_secret(&client, &s.namespaces[0], &s.name)
            .await
            .is_none()
    );
    assert_nothing_leaked(&client, &s.name, &["TOPSECRET-lowercase"]).await;
    delete_credential(&client, &s.name).await;
}
