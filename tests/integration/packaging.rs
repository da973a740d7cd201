//! The install paths: the kustomize base and the Helm chart render the same objects, and both
//! renderings install on the real control plane (the kustomize one is what the whole suite's
//! operator runs under).

use std::collections::BTreeMap;

use crate::support::*;

/// `kind/namespace/name` → object.
fn by_identity(docs: Vec<serde_yaml_ng::Value>) -> BTreeMap<String, serde_yaml_ng::Value> {
    docs.into_iter()
        .map(|d| {
            let ns = d["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string();
            (
                format!(
                    "{}/{ns}/{}",
                    d["kind"].as_str().unwrap(),
                    d["metadata"]["name"].as_str().unwrap()
                ),
                d,
            )
        })
        .collect()
}

/// `helm template <release> <chart> --namespace <ns> <args>`: the rendered YAML.
async fn helm_template(release: &str, ns: &str, args: &[&str]) -> String {
    let chart = chart_dir();
    let mut all = vec!["template", release, &chart, "--namespace", ns];
    all.extend_from_slice(args);
    run_ok("helm", &all, None).await
}

#[tokio::test]
async fn helm_lint_passes() {
    run_ok("helm", &["lint", "--strict", &chart_dir()], None).await;
}

#[tokio::test]
async fn helm_and_kustomize_render_the_same_objects() {
    let kustomize = by_identity(yaml_documents(
        &run_ok(
            "kubectl",
            &["kustomize", concat!(env!("CARGO_MANIFEST_DIR"), "/deploy")],
            None,
        )
        .await,
    ));
    let helm = by_identity(yaml_documents(
        &helm_template(
            "regcred-operator",
            "regcred-system",
            &["--include-crds", "--skip-tests"],
        )
        .await,
    ));
    let mut expected: Vec<_> = kustomize
        .keys()
        .filter(|k| !k.starts_with("Namespace/"))
        .cloned()
        .collect();
    expected.sort();
    let rendered: Vec<_> = helm.keys().cloned().collect();
    assert_eq!(
        rendered, expected,
        "same objects (helm does not create the release namespace)"
    );
    for key in [
        "ClusterRole//regcred-operator",
        "Role/regcred-system/regcred-operator-leader-election",
    ] {
        assert_eq!(helm[key]["rules"], kustomize[key]["rules"], "{key} rules");
    }
    for key in [
        "ValidatingAdmissionPolicy//regcred-operator-secrets",
        "ValidatingAdmissionPolicy//regcred-operator-service-accounts",
        "ValidatingAdmissionPolicyBinding//regcred-operator-secrets",
        "ValidatingAdmissionPolicyBinding//regcred-operator-service-accounts",
    ] {
        assert_eq!(helm[key]["spec"], kustomize[key]["spec"], "{key} spec");
    }
    let crd = "CustomResourceDefinition//registrycredentials.regcred.dev";
    assert_eq!(helm[crd]["spec"], kustomize[crd]["spec"]);
    let pod = |m: &BTreeMap<String, serde_yaml_ng::Value>| {
        m["Deployment/regcred-system/regcred-operator"]["spec"]["template"]["spec"].clone()
    };
    let (h, k) = (pod(&helm), pod(&kustomize));
    assert_eq!(h["securityContext"], k["securityContext"]);
    assert_eq!(
        h["containers"][0]["securityContext"],
        k["containers"][0]["securityContext"]
    );
    assert_eq!(h["serviceAccountName"], k["serviceAccountName"]);
    let replicas = |m: &BTreeMap<String, serde_yaml_ng::Value>| {
        m["Deployment/regcred-system/regcred-operator"]["spec"]["replicas"].clone()
    };
    assert_eq!(replicas(&helm), replicas(&kustomize));
}

#[tokio::test]
async fn helm_rendering_installs_and_values_apply() {
    let client = admin().await;
    let ns = unique("helm");
    ensure_namespace(&client, &ns).await;
    let release = unique("rel");
    let rendered = helm_template(
        &release,
        &ns,
        &[
            "--set",
            "replicaCount=3",
            "--set",
            "sourceNamespaces={regcred-system,team-secrets}",
            "--set",
            "extraLabels.team=platform",
            "--set",
            "logFormat=text",
            "--skip-tests",
        ],
    )
    .await;
    let objects = by_identity(yaml_documents(&rendered));
    let deployment = objects
        .values()
        .find(|o| o["kind"] == "Deployment")
        .unwrap();
    assert_eq!(deployment["spec"]["replicas"], 3);
    let args =
        serde_yaml_ng::to_string(&deployment["spec"]["template"]["spec"]["containers"][0]["args"])
            .unwrap();
    assert!(
        args.contains("--source-namespaces=regcred-system,team-secrets")
            && args.contains("--log-format=text"),
        "{args}"
    );
    assert!(
        objects
            .values()
            .all(|o| o["metadata"]["labels"]["team"] == "platform"),
        "extraLabels on every object"
    );
    run_ok("kubectl", &["apply", "-f", "-"], Some(&rendered)).await;
    let names = run_ok(
        "kubectl",
        &[
            "get",
            "clusterrole,deployment,pdb,service",
            "-A",
            "-l",
            &format!("app.kubernetes.io/instance={release}"),
            "-o",
            "name",
        ],
        None,
    )
    .await;
    assert_eq!(names.lines().count(), 4, "{names}");

    let monitored = helm_template(
        &release,
        &ns,
        &["--set", "metrics.serviceMonitor.enabled=true"],
    )
    .await;
    assert!(
        yaml_documents(&monitored)
            .iter()
            .any(|d| d["kind"] == "ServiceMonitor")
    );

    // The admission policies confine this release's ServiceAccount, and can be left out.
    let policies: Vec<_> = objects
        .values()
        .filter(|o| o["kind"] == "ValidatingAdmissionPolicy")
        .collect();
    assert_eq!(policies.len(), 2);
    let user = format!("'system:serviceaccount:{ns}:{release}-regcred-operator'");
    for policy in policies {
        let condition = policy["spec"]["matchConditions"][0]["expression"]
            .as_str()
            .unwrap();
        assert!(condition.contains(&user), "{condition}");
    }
    let without = helm_template(&release, &ns, &["--set", "admissionPolicies.enabled=false"]).await;
    assert!(!yaml_documents(&without).iter().any(|d| {
        d["kind"]
            .as_str()
            .unwrap_or("")
            .starts_with("ValidatingAdmission")
    }));
}
