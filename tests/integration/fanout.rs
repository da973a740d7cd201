//! Fan-out: which namespaces get the Secret and the ServiceAccount entry, and when.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use regcred_operator::api::{CREDENTIAL_LABEL, EXCLUDE_ANNOTATION, MANAGED_BY_LABEL};
use serde_json::json;

use crate::{foundation::pod, support::*};

#[tokio::test]
async fn fan_out_reaches_selected_and_listed_namespaces_only() {
    let client = admin().await;
    let key = unique("fanout");
    let a = namespace(&client, "fan-a", &[(&key, "yes")]).await;
    let b = namespace(&client, "fan-b", &[(&key, "yes")]).await;
    let listed = namespace(&client, "fan-listed", &[]).await;
    let other = namespace(&client, "fan-other", &[(&key, "no")]).await;
    let (src, pw) = source_secret(&client).await;
    let name = unique("fan");
    create_credential(
        &client,
        &name,
        json!({
            "source": {"secretRef": {"namespace": SOURCE_NS, "name": src}},
            "secretName": "team-pull",
            "namespaceSelector": {"matchLabels": {key.clone(): "yes"}},
            "namespaces": [listed],
        }),
    )
    .await;
    let rc = wait_synced(&client, &name).await;
    let source = get_secret(&client, SOURCE_NS, &src).await.unwrap();
    for ns in [&a, &b, &listed] {
        let copy = get_secret(&client, ns, "team-pull").await.expect("copy");
        assert_eq!(
            copy.type_.as_deref(),
            Some("kubernetes.io/dockerconfigjson")
        );
        assert_eq!(
            secret_config(&copy),
            secret_config(&source),
            "same config as the source"
        );
        assert_eq!(
            copy.labels().get(MANAGED_BY_LABEL).map(String::as_str),
            Some("regcred-operator")
        );
        assert_eq!(copy.labels().get(CREDENTIAL_LABEL), Some(&name));
        let owner = &copy.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("RegistryCredential", name.as_str())
        );
        assert_eq!(owner.uid, rc.uid().unwrap());
        assert_eq!(
            pull_secret_names(&get_sa(&client, ns, "default").await.unwrap()),
            ["team-pull"]
        );
    }
    assert!(
        get_secret(&client, &other, "team-pull").await.is_none(),
        "unselected namespace untouched"
    );
    assert!(pull_secret_names(&get_sa(&client, &other, "default").await.unwrap()).is_empty());
    let status = rc.status.unwrap();
    assert_eq!(
        (
            status.target_namespaces,
            status.synced_namespaces,
            status.patched_service_accounts
        ),
        (3, 3, 3)
    );
    assert_eq!(status.synced.as_deref(), Some("3/3"));
    assert_eq!(status.secret_name.as_deref(), Some("team-pull"));
    assert_eq!(
        status.synced_source_version,
        source.metadata.resource_version
    );
    assert_nothing_leaked(&client, &name, &[&pw]).await;
}

#[tokio::test]
async fn exclusions_and_exclude_annotation_win() {
    let client = admin().await;
    let key = unique("excl");
    let kept = namespace(&client, "excl-kept", &[(&key, "yes")]).await;
    let globbed = namespace(&client, "excl-glob", &[(&key, "yes")]).await;
    let annotated = namespace(&client, "excl-annotated", &[(&key, "yes")]).await;
    Api::<Namespace>::all(client.clone())
        .patch(
            &annotated,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {EXCLUDE_ANNOTATION: "true"}}})),
        )
        .await
        .unwrap();
    let (src, _) = source_secret(&client).await;
    let name = unique("excl");
    create_credential(
        &client,
        &name,
        json!({
            "source": {"secretRef": {"namespace": SOURCE_NS, "name": src}},
            "namespaceSelector": {"matchLabels": {key.clone(): "yes"}},
            "namespaces": [globbed.clone()],
            "excludeNamespaces": ["excl-glob-*"],
        }),
    )
    .await;
    wait_synced_with(&client, &name, "1 target", |s| s.target_namespaces == 1).await;
    assert!(get_secret(&client, &kept, &name).await.is_some());
    assert!(
        get_secret(&client, &globbed, &name).await.is_none(),
        "a glob exclusion beats the explicit list"
    );
    assert!(
        get_secret(&client, &annotated, &name).await.is_none(),
        "the exclude annotation beats the selector"
    );
}

#[tokio::test]
async fn namespace_labelled_later_is_onboarded_and_unlabelled_later_is_pruned() {
    let client = admin().await;
    let key = unique("onboard");
    let ns = namespace(&client, "onboard", &[]).await;
    let sas = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), &ns);
    sas.patch(
        "default",
        &PatchParams::default(),
        &Patch::Merge(json!({"imagePullSecrets": [{"name": "foreign"}]})),
    )
    .await
    .unwrap();
    let (src, pw) = source_secret(&client).await;
    let name = unique("onboard");
    create_credential(
        &client,
        &name,
        json!({"source": {"secretRef": {"namespace": SOURCE_NS, "name": src}}, "namespaceSelector": {"matchLabels": {key.clone(): "yes"}}}),
    )
    .await;
    wait_synced(&client, &name).await;
    assert!(get_secret(&client, &ns, &name).await.is_none());

    label_namespace(&client, &ns, &key, Some("yes")).await;
    wait_copy(&client, &ns, &name, &pw).await;
    let sa = wait_sa_lists(&client, &ns, "default", &name).await;
    assert_eq!(pull_secret_names(&sa), ["foreign", name.as_str()]);

    label_namespace(&client, &ns, &key, None).await;
    wait_secret_gone(&client, &ns, &name).await;
    wait_for(
        "our entry to be removed, the foreign one kept",
        TIMEOUT,
        || async {
            let names = pull_secret_names(&get_sa(&client, &ns, "default").await.unwrap());
            if names == ["foreign"] {
                Ok(())
            } else {
                Err(names)
            }
        },
    )
    .await;
    wait_synced_with(&client, &name, "no target", |s| s.target_namespaces == 0).await;
}

#[tokio::test]
async fn new_namespace_and_its_pods_get_the_secret_through_admission() {
    let client = admin().await;
    let key = unique("pods");
    let (src, pw) = source_secret(&client).await;
    let name = unique("pods");
    create_credential(
        &client,
        &name,
        json!({"source": {"secretRef": {"namespace": SOURCE_NS, "name": src}}, "namespaceSelector": {"matchLabels": {key.clone(): "yes"}}}),
    )
    .await;
    // Created after the credential: the default ServiceAccount appears a moment after the namespace.
    let ns = namespace(&client, "pods", &[(&key, "yes")]).await;
    wait_copy(&client, &ns, &name, &pw).await;
    wait_sa_lists(&client, &ns, "default", &name).await;
    wait_admission_lists(&client, &ns, "default", &name).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let created = pods
        .create(&PostParams::default(), &pod("app"))
        .await
        .unwrap();
    let names: Vec<_> = created
        .spec
        .unwrap()
        .image_pull_secrets
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, [name]);
}

#[tokio::test]
async fn kubectl_wait_for_ready_works_and_status_settles() {
    let client = admin().await;
    let key = unique("wait");
    namespace(&client, "wait", &[(&key, "yes")]).await;
    let (src, _) = source_secret(&client).await;
    let name = unique("wait");
    create_credential(
        &client,
        &name,
        json!({"source": {"secretRef": {"namespace": SOURCE_NS, "name": src}}, "namespaceSelector": {"matchLabels": {key.clone(): "yes"}}}),
    )
    .await;
    let out = tokio::process::Command::new("kubectl")
        .args([
            "wait",
            "--for=condition=Ready",
            &format!("registrycredential/{name}"),
            "--timeout=60s",
        ])
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .await
        .expect("kubectl is installed");
    assert!(
        out.status.success(),
        "kubectl wait: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Converged: no further status writes (which would mean a reconcile hot loop).
    let rc = wait_synced(&client, &name).await;
    let version = rc.resource_version();
    stays(
        "the RegistryCredential to stay unchanged",
        Duration::from_secs(3),
        || async {
            let now = credential(&client, &name).await.resource_version();
            if now == version { Ok(()) } else { Err(now) }
        },
    )
    .await;
}

async fn passes(credential: &str, scope: &str) -> u64 {
    let url = std::env::var("REGCRED_TEST_METRICS_URL").expect("REGCRED_TEST_METRICS_URL");
    let text = scrape(&url).await.expect("the operator serves /metrics");
    sample(
        &text,
        &format!("regcred_sync_passes_total{{credential=\"{credential}\",scope=\"{scope}\"}}"),
    )
    // A counter: a whole number.
    .map_or(0, |v| format!("{v}").parse().expect("a counter"))
}

/// With a credential converged, a new namespace is onboarded by passes over that namespace alone
/// (its cost is the objects there, not every target), and the counts in status stay those of the
/// whole set. A change of the source is a pass over every target.
#[tokio::test]
async fn a_new_namespace_is_onboarded_by_a_pass_over_that_namespace_alone() {
    let client = admin().await;
    let key = unique("scoped");
    let first = namespace(&client, "scoped", &[(&key, "yes")]).await;
    let (src, pw) = source_secret(&client).await;
    let name = unique("scoped");
    create_credential(&client, &name, labelled_spec(&src, &key)).await;
    wait_synced(&client, &name).await;
    wait_sa_lists(&client, &first, "default", &name).await;
    // The first passes may retry while the first namespace's default account arrives: wait until
    // full passes stop.
    let mut full = passes(&name, "full").await;
    let started = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = passes(&name, "full").await;
        if now == full {
            break;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "full passes did not settle: {now}"
        );
        full = now;
    }
    assert!(full >= 1, "the first pass is a full one");
    let scoped = passes(&name, "namespaces").await;

    let second = namespace(&client, "scoped", &[(&key, "yes")]).await;
    wait_copy(&client, &second, &name, &pw).await;
    wait_sa_lists(&client, &second, "default", &name).await;
    let status = wait_synced_with(&client, &name, "2 of 2 in sync", |s| {
        (
            s.target_namespaces,
            s.synced_namespaces,
            s.patched_service_accounts,
        ) == (2, 2, 2)
    })
    .await
    .status
    .unwrap();
    assert_eq!(status.synced.as_deref(), Some("2/2"));
    assert_eq!(
        passes(&name, "full").await,
        full,
        "no pass over every target"
    );
    assert!(passes(&name, "namespaces").await > scoped);

    // A source change: every copy is rewritten by a full pass.
    let new_pw = rotate(&client, &src).await;
    for ns in [&first, &second] {
        wait_copy(&client, ns, &name, &new_pw).await;
    }
    assert!(passes(&name, "full").await > full);
    delete_credential(&client, &name).await;
}
