//! The Helm chart for production: values checked against values.schema.json, an optional
//! NetworkPolicy, a `helm test` hook, and pods that pass the restricted Pod Security Standard.

use serde_json::json;

use crate::support::*;

async fn template(release: &str, ns: &str, values: &[&str]) -> (bool, String, String) {
    let chart = chart_dir();
    let mut args = vec!["template", release, chart.as_str(), "--namespace", ns];
    for v in values {
        args.extend(["--set", v]);
    }
    run_program("helm", &args, None).await
}

fn of_kind<'a>(docs: &'a [serde_yaml_ng::Value], kind: &str) -> Vec<&'a serde_yaml_ng::Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

#[tokio::test]
async fn values_of_the_wrong_type_or_unknown_keys_are_refused() {
    for (values, complaint) in [
        ("replicaCount=two", "/replicaCount"),
        (
            "replicaConut=2",
            "additional properties 'replicaConut' not allowed",
        ),
        ("image.tga=1.0", "additional properties 'tga' not allowed"),
        ("logFormat=yaml", "/logFormat"),
        ("metrics.port=http", "/metrics/port"),
        ("networkPolicy.enabled=yes", "/networkPolicy/enabled"),
        (
            "admissionPolicies.enabled=maybe",
            "/admissionPolicies/enabled",
        ),
    ] {
        let (rendered, _, err) = template("schema", "regcred-system", &[values]).await;
        assert!(!rendered, "{values} was accepted");
        assert!(err.contains(complaint), "{values}: {err}");
    }
    // What the chart offers, and the admission policies' own settings, pass.
    let (rendered, _, err) = template(
        "schema",
        "regcred-system",
        &[
            "replicaCount=3",
            "admissionPolicies.enabled=true",
            "admissionPolicies.mode=Deny",
            "networkPolicy.enabled=true",
            "podDisruptionBudget.minAvailable=50%",
        ],
    )
    .await;
    assert!(rendered, "{err}");
}

#[tokio::test]
async fn the_network_policy_is_off_by_default_and_admits_only_metrics_and_health() {
    let client = admin().await;
    let ns = unique("chart-netpol");
    ensure_namespace(&client, &ns).await;
    let (_, off, _) = template("np", &ns, &[]).await;
    assert!(of_kind(&yaml_documents(&off), "NetworkPolicy").is_empty());

    let (rendered, out, err) = template(
        "np",
        &ns,
        &[
            "networkPolicy.enabled=true",
            "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name=monitoring",
        ],
    )
    .await;
    assert!(rendered, "{err}");
    let docs = yaml_documents(&out);
    let policy = of_kind(&docs, "NetworkPolicy")[0];
    let deployment = of_kind(&docs, "Deployment")[0];
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        serde_json::to_value(&policy["spec"]["policyTypes"]).unwrap(),
        json!(["Ingress"])
    );
    let ingress = serde_json::to_value(&policy["spec"]["ingress"]).unwrap();
    assert_eq!(
        ingress,
        json!([
            {"ports": [{"protocol": "TCP", "port": "metrics"}],
             "from": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
            {"ports": [{"protocol": "TCP", "port": "health"}]}
        ])
    );
    // The named ports are the container's.
    let ports =
        serde_json::to_value(&deployment["spec"]["template"]["spec"]["containers"][0]["ports"])
            .unwrap();
    assert_eq!(
        ports,
        json!([{"name": "metrics", "containerPort": 8080}, {"name": "health", "containerPort": 8081}])
    );
    let manifest = serde_yaml_ng::to_string(policy).unwrap();
    run_ok(
        "kubectl",
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&manifest),
    )
    .await;
}

/// Pods as the Deployment (no kubelet or ReplicaSet controller here, so made directly from its
/// template) and the `helm test` hook would run them.
fn pods_of(docs: &[serde_yaml_ng::Value], ns: &str) -> Vec<serde_json::Value> {
    let mut pods = Vec::new();
    for d in docs {
        let kind = d["kind"].as_str().unwrap_or_default();
        if kind == "Deployment" {
            let spec = serde_json::to_value(&d["spec"]["template"]["spec"]).unwrap();
            pods.push(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("{}-pod", d["metadata"]["name"].as_str().unwrap()), "namespace": ns},
                "spec": spec,
            }));
        } else if kind == "Pod" {
            let mut pod = serde_json::to_value(d).unwrap();
            pod["metadata"]["annotations"] = json!({});
            pods.push(pod);
        }
    }
    pods
}

/// What `kubectl label --dry-run=server` says about enforcing `restricted` on `ns`.
async fn restricted_warnings(ns: &str) -> String {
    let (labelled, _, err) = run_program(
        "kubectl",
        &[
            "label",
            "--dry-run=server",
            "--overwrite",
            "ns",
            ns,
            "pod-security.kubernetes.io/enforce=restricted",
        ],
        None,
    )
    .await;
    assert!(labelled, "{err}");
    err
}

#[tokio::test]
async fn the_operators_pods_pass_the_restricted_pod_security_standard() {
    let client = admin().await;
    let ns = unique("chart-pss");
    ensure_namespace(&client, &ns).await;
    let release = unique("pss");
    let (rendered, out, err) = template(&release, &ns, &[]).await;
    assert!(rendered, "{err}");
    let docs = yaml_documents(&out);
    // The test hook is part of the rendering, and a test hook.
    let hook = of_kind(&docs, "Pod");
    assert_eq!(hook.len(), 1, "the helm test pod");
    assert_eq!(hook[0]["metadata"]["annotations"]["helm.sh/hook"], "test");
    // Everything but the hook (the ServiceAccount must exist for the pods), then the pods.
    let objects: Vec<_> = docs.iter().filter(|d| d["kind"] != "Pod").collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    run_ok("kubectl", &["apply", "-f", "-"], Some(&list.to_string())).await;
    // The kustomize Deployment's pod as well.
    let kustomized = yaml_documents(
        &run_ok(
            "kubectl",
            &["kustomize", concat!(env!("CARGO_MANIFEST_DIR"), "/deploy")],
            None,
        )
        .await,
    );
    let mut pods = pods_of(&docs, &ns);
    let mut from_kustomize = pods_of(
        &kustomized
            .into_iter()
            .filter(|d| d["kind"] == "Deployment")
            .collect::<Vec<_>>(),
        &ns,
    );
    from_kustomize[0]["metadata"]["name"] = json!("kustomize-pod");
    from_kustomize[0]["spec"]["serviceAccountName"] = json!(format!("{release}-regcred-operator"));
    pods.append(&mut from_kustomize);
    assert_eq!(pods.len(), 3);
    for pod in &pods {
        run_ok("kubectl", &["apply", "-f", "-"], Some(&pod.to_string())).await;
    }
    let warnings = restricted_warnings(&ns).await;
    assert!(
        !warnings.contains("Warning"),
        "the operator's pods violate restricted: {warnings}"
    );

    // The check itself can fail: a pod without the hardening draws a warning.
    let careless = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "careless", "namespace": ns},
        "spec": {"serviceAccountName": format!("{release}-regcred-operator"), "containers": [{"name": "c", "image": "busybox"}]},
    });
    run_ok(
        "kubectl",
        &["apply", "-f", "-"],
        Some(&careless.to_string()),
    )
    .await;
    let warnings = restricted_warnings(&ns).await;
    assert!(
        warnings.contains("violate the new PodSecurity enforce level")
            && warnings.contains("careless"),
        "{warnings}"
    );
    run_ok(
        "kubectl",
        &["delete", "namespace", &ns, "--wait=false"],
        None,
    )
    .await;
    run_ok(
        "kubectl",
        &[
            "delete",
            "clusterrole,clusterrolebinding,role,rolebinding",
            "-A",
            "-l",
            &format!("app.kubernetes.io/instance={release}"),
        ],
        None,
    )
    .await;
}

#[tokio::test]
async fn the_helm_test_hook_checks_what_the_operator_serves() {
    // The hook's own command, pointed at the suite's operator instead of the in-cluster Service.
    let (rendered, out, err) = template("hook", "regcred-system", &[]).await;
    assert!(rendered, "{err}");
    let docs = yaml_documents(&out);
    let pod = of_kind(&docs, "Pod")[0];
    let command = pod["spec"]["containers"][0]["command"][2]
        .as_str()
        .unwrap()
        .to_string();
    let service_url = "http://hook-regcred-operator-metrics:8080/metrics";
    assert!(command.contains(service_url), "{command}");
    let url = std::env::var("REGCRED_TEST_METRICS_URL").expect("REGCRED_TEST_METRICS_URL");
    let (passed, _, err) =
        run_program("sh", &["-c", &command.replace(service_url, &url)], None).await;
    assert!(
        passed,
        "the hook's check fails against a running operator: {err}"
    );
    let (passed, _, _) = run_program(
        "sh",
        &[
            "-c",
            &command.replace(service_url, "http://127.0.0.1:1/metrics"),
        ],
        None,
    )
    .await;
    assert!(!passed, "the hook's check passes without an operator");
}

#[tokio::test]
async fn the_krew_manifest_names_the_plugin_archive_and_its_digest() {
    let dir = std::env::temp_dir().join(unique("krew"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("kubectl-regcred"), b"#!/bin/sh\n").unwrap();
    let archive = dir.join("kubectl-regcred_linux_amd64.tar.gz");
    run_ok(
        "tar",
        &[
            "-C",
            dir.to_str().unwrap(),
            "-czf",
            archive.to_str().unwrap(),
            "kubectl-regcred",
        ],
        None,
    )
    .await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/hack/krew-manifest.sh");
    let manifest = run_ok(script, &["v0.1.0", archive.to_str().unwrap()], None).await;
    let plugin: serde_yaml_ng::Value = serde_yaml_ng::from_str(&manifest).expect("YAML");
    assert_eq!(
        plugin["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(plugin["kind"], "Plugin");
    assert_eq!(plugin["metadata"]["name"], "regcred");
    assert_eq!(plugin["spec"]["version"], "v0.1.0");
    let platform = &plugin["spec"]["platforms"][0];
    assert_eq!(platform["selector"]["matchLabels"]["os"], "linux");
    assert_eq!(platform["selector"]["matchLabels"]["arch"], "amd64");
    assert_eq!(platform["bin"], "kubectl-regcred");
    assert!(
        platform["uri"]
            .as_str()
            .unwrap()
            .ends_with("/v0.1.0/kubectl-regcred_linux_amd64.tar.gz")
    );
    let digest = run_ok("sha256sum", &[archive.to_str().unwrap()], None).await;
    assert_eq!(
        platform["sha256"].as_str().unwrap(),
        digest.split_whitespace().next().unwrap()
    );
    // An archive without the plugin binary is refused.
    std::fs::write(dir.join("other"), b"x").unwrap();
    let wrong = dir.join("kubectl-regcred_linux_arm64.tar.gz");
    run_ok(
        "tar",
        &[
            "-C",
            dir.to_str().unwrap(),
            "-czf",
            wrong.to_str().unwrap(),
            "other",
        ],
        None,
    )
    .await;
    let (made, _, _) = run_program(script, &["v0.1.0", wrong.to_str().unwrap()], None).await;
    assert!(!made);
    std::fs::remove_dir_all(dir).ok();
}
