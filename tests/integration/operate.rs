//! Running it for real: the RBAC in deploy/ is exactly enough, leader election hands over, and the
//! metrics tell the truth. (The shared operator of the whole suite already runs as deploy/'s
//! ServiceAccount with deploy/'s RBAC; see tests/run-integration.sh.)

use std::time::{Duration, Instant};

use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::ServiceAccount,
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject},
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use serde_json::json;

use crate::support::*;

fn deploy_cluster_role() -> ClusterRole {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rbac.yaml")).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde_yaml_ng::Value::deserialize(doc).unwrap())
        .filter(|v| v["kind"] == "ClusterRole")
        .map(|v| serde_yaml_ng::from_value(v).unwrap())
        .next()
        .expect("a ClusterRole in deploy/rbac.yaml")
}

use serde::Deserialize;

#[test]
fn deploy_rbac_has_no_wildcards() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rbac.yaml")).unwrap();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        assert!(!line.contains('*'), "wildcard in deploy/rbac.yaml: {line}");
    }
}

/// Starts an operator as a fresh ServiceAccount bound to deploy/'s ClusterRole with `edit` applied.
async fn operator_with_rules(
    client: &Client,
    instance: &str,
    edit: impl Fn(&mut Vec<PolicyRule>),
) -> Operator {
    let name = format!("op-{instance}");
    ensure_namespace(client, SOURCE_NS).await;
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), SOURCE_NS)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let mut role = deploy_cluster_role();
    role.metadata = ObjectMeta {
        name: Some(name.clone()),
        ..Default::default()
    };
    let mut rules = role.rules.take().unwrap();
    edit(&mut rules);
    role.rules = Some(rules);
    Api::<ClusterRole>::all(client.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: name.clone(),
        namespace: Some(SOURCE_NS.into()),
        ..Default::default()
    };
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: name.clone(),
        },
        subjects: Some(vec![subject.clone()]),
    };
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let dir = std::env::var_os("REGCRED_TEST_LOG_DIR")
        .map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let kubeconfig = dir.join(format!("{name}.kubeconfig"));
    kubeconfig_for_service_account(client, SOURCE_NS, &name, &kubeconfig).await;
    Operator::start(&kubeconfig, instance, &name, &["--leader-election=false"]).await
}

fn drop_verb(rules: &mut [PolicyRule], resource: &str, verb: &str) {
    let rule = rules
        .iter_mut()
        .find(|r| r.resources.as_deref() == Some(&[resource.to_string()][..]))
        .expect("rule");
    rule.verbs.retain(|v| v != verb);
}

async fn credential_for(client: &Client, instance: &str, prefix: &str) -> (String, String) {
    let key = unique(prefix);
    let ns = namespace(client, prefix, &[(&key, "yes")]).await;
    let (src, _) = source_secret(client).await;
    let name = unique(prefix);
    create_credential_for(
        client,
        instance,
        &name,
        json!({"source": {"secretRef": {"namespace": SOURCE_NS, "name": src}}, "namespaceSelector": {"matchLabels": {key: "yes"}}}),
    )
    .await;
    (name, ns)
}

#[tokio::test]
async fn without_secret_create_the_fan_out_fails_with_a_clear_error() {
    let client = admin().await;
    let instance = unique("nocreate");
    let _op = operator_with_rules(&client, &instance, |r| drop_verb(r, "secrets", "create")).await;
    let (name, ns) = credential_for(&client, &instance, "nocreate").await;
    let rc = wait_ready_reason(&client, &name, "Forbidden").await;
    let failure = &rc.status.unwrap().failures[0];
    assert_eq!(failure.namespace, ns);
    assert!(
        failure.message.contains("creating Secret") && failure.message.contains("forbidden"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn without_service_account_patch_the_entry_fails_with_a_clear_error() {
    let client = admin().await;
    let instance = unique("nopatch");
    let _op = operator_with_rules(&client, &instance, |r| {
        drop_verb(r, "serviceaccounts", "patch");
    })
    .await;
    let (name, ns) = credential_for(&client, &instance, "nopatch").await;
    let rc = wait_ready_reason(&client, &name, "Forbidden").await;
    let failure = &rc.status.unwrap().failures[0];
    assert!(
        failure
            .message
            .contains(&format!("updating ServiceAccount {ns}/default"))
            && failure.message.contains("forbidden"),
        "{}",
        failure.message
    );
    assert!(
        get_secret(&client, &ns, &name).await.is_some(),
        "the Secret itself was allowed"
    );
}

/// A status write the API server refuses does not hold up the copies, is reported in the log, and
/// is tried again with a backoff: once the permission is back, the status arrives with no other
/// change to the credential.
#[tokio::test]
async fn a_refused_status_write_is_retried_until_it_lands() {
    let client = admin().await;
    let instance = unique("nostatus");
    let status_rule = |r: &PolicyRule| {
        r.resources.as_deref() == Some(&["registrycredentials/status".to_string()][..])
    };
    let op = operator_with_rules(&client, &instance, |r| r.retain(|r| !status_rule(r))).await;
    let (name, ns) = credential_for(&client, &instance, "nostatus").await;
    wait_sa_lists(&client, &ns, "default", &name).await;
    wait_for("the refused status write in the log", TIMEOUT, || async {
        let log = std::fs::read_to_string(&op.log).unwrap_or_default();
        if log.contains("writing the status failed") && log.contains(name.as_str()) {
            Ok(())
        } else {
            Err("not yet")
        }
    })
    .await;
    assert!(
        credential(&client, &name).await.status.is_none(),
        "the status subresource was not writable"
    );

    let roles = Api::<ClusterRole>::all(client.clone());
    let mut role = roles.get(&op.identity).await.unwrap();
    role.rules = deploy_cluster_role().rules;
    roles
        .replace(&op.identity, &PostParams::default(), &role)
        .await
        .unwrap();

    // The retries back off up to 64 s: wait past one whole interval.
    let status = wait_for(
        "the status once allowed",
        Duration::from_secs(150),
        || async {
            let rc = credential(&client, &name).await;
            match (ready(&rc), rc.status) {
                (Some((ok, reason, _)), Some(status)) if ok == "True" && reason == "Synced" => {
                    Ok(status)
                }
                (ready, _) => Err(ready),
            }
        },
    )
    .await;
    assert_eq!((status.synced_namespaces, status.target_namespaces), (1, 1));
}

#[tokio::test]
async fn without_the_secrets_rule_the_operator_refuses_to_start() {
    let client = admin().await;
    let instance = unique("nosecrets");
    let mut op = operator_with_rules(&client, &instance, |r| {
        r.retain(|r| r.resources.as_deref() != Some(&["secrets".to_string()][..]));
    })
    .await;
    let (ok, log) = op.wait_exit(Duration::from_secs(30)).await;
    assert!(!ok, "{log}");
    assert!(
        log.contains("may not list secrets") && log.contains("deploy/"),
        "{log}"
    );
}

async fn lease_holder(client: &Client, lease: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), SOURCE_NS)
        .get_opt(lease)
        .await
        .unwrap()?
        .spec?
        .holder_identity
}

async fn wait_leader(client: &Client, lease: &str, who: &Operator, timeout: Duration) {
    wait_for(
        &format!("{} to hold lease {lease}", who.identity),
        timeout,
        || async {
            let holder = lease_holder(client, lease).await;
            let gauge = who
                .metrics()
                .await
                .and_then(|m| sample(&m, "regcred_leader"));
            if holder.as_deref() == Some(&who.identity) && gauge == Some(1.0) {
                Ok(())
            } else {
                Err((holder, gauge))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn only_the_leader_writes_and_a_follower_takes_over_after_sigkill() {
    let client = admin().await;
    let instance = unique("ha");
    let lease = unique("lease-ha");
    let config = kubeconfig_path();
    let args = ["--lease-name", lease.as_str(), "--lease-duration", "4"];
    let mut a = Operator::start(&config, &instance, &format!("{instance}-a"), &args).await;
    wait_leader(&client, &lease, &a, TIMEOUT).await;
    let b = Operator::start(&config, &instance, &format!("{instance}-b"), &args).await;

    let key = unique("ha");
    let first = namespace(&client, "ha", &[(&key, "yes")]).await;
    let (src, pw) = source_secret(&client).await;
    let name = unique("ha");
    create_credential_for(
        &client,
        &instance,
        &name,
        json!({"source": {"secretRef": {"namespace": SOURCE_NS, "name": src}}, "namespaceSelector": {"matchLabels": {key.clone(): "yes"}}}),
    )
    .await;
    wait_copy(&client, &first, &name, &pw).await;
    wait_synced(&client, &name).await;
    // The follower may still be starting: a scrape before its metrics server is up is no answer.
    let follower = wait_for("the follower serving metrics", TIMEOUT, || async {
        b.metrics().await.ok_or("no answer yet")
    })
    .await;
    assert_eq!(sample(&follower, "regcred_leader"), Some(0.0));
    assert!(
        !follower.contains("regcred_api_writes_total{"),
        "a follower makes no writes:\n{follower}"
    );
    assert!(
        a.metrics()
            .await
            .unwrap()
            .contains("regcred_api_writes_total{resource=\"secrets\",verb=\"create\"}")
    );

    a.signal("KILL");
    a.wait_exit(Duration::from_secs(10)).await;
    let killed = Instant::now();
    let second = namespace(&client, "ha", &[(&key, "yes")]).await;
    // Converges within the lease duration (4 s) plus a retry period; the timeout is generous.
    wait_copy(&client, &second, &name, &pw).await;
    wait_leader(&client, &lease, &b, Duration::from_secs(30)).await;
    eprintln!(
        "follower converged new work {:?} after the leader was killed",
        killed.elapsed()
    );
}

#[tokio::test]
async fn sigterm_hands_the_lease_over_at_once() {
    let client = admin().await;
    let instance = unique("handover");
    let lease = unique("lease-ho");
    let config = kubeconfig_path();
    // A long lease: a hand-over faster than it proves the leader released it.
    let args = ["--lease-name", lease.as_str(), "--lease-duration", "60"];
    let mut a = Operator::start(&config, &instance, &format!("{instance}-a"), &args).await;
    wait_leader(&client, &lease, &a, TIMEOUT).await;
    let b = Operator::start(&config, &instance, &format!("{instance}-b"), &args).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.signal("TERM");
    let (ok, log) = a.wait_exit(Duration::from_secs(30)).await;
    assert!(ok, "graceful exit: {log}");
    assert!(log.contains("released the lease"), "{log}");
    wait_leader(&client, &lease, &b, Duration::from_secs(30)).await;
}

#[tokio::test]
async fn metrics_show_the_domain_values_after_a_fan_out() {
    let client = admin().await;
    let url = std::env::var("REGCRED_TEST_METRICS_URL")
        .expect("REGCRED_TEST_METRICS_URL is set by tests/run-integration.sh");
    let s = setup(&client, "metrics", 3, json!({})).await;
    wait_synced(&client, &s.name).await;
    let metrics = scrape(&url).await.expect("metrics endpoint");
    let label = format!("{{credential=\"{}\"}}", s.name);
    assert_eq!(
        sample(&metrics, &format!("regcred_namespaces_targeted{label}")),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, &format!("regcred_namespaces_synced{label}")),
        Some(3.0)
    );
    assert!(!metrics.contains(&format!(
        "regcred_namespace_failures{{credential=\"{}\"",
        s.name
    )));
    assert_eq!(sample(&metrics, "regcred_leader"), Some(1.0));
    assert!(
        sample(&metrics, "regcred_serviceaccount_onboarding_seconds_count").unwrap_or(0.0) >= 3.0,
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            "regcred_api_writes_total{resource=\"secrets\",verb=\"create\"}"
        )
        .unwrap_or(0.0)
            >= 3.0
    );
    assert!(sample(&metrics, "regcred_reconciles_total{result=\"success\"}").unwrap_or(0.0) >= 1.0);
}
