//! The install paths: the kustomize base and the Helm chart render the same objects, and both
//! renderings install on the real control plane (the kustomize one is what the whole suite's
//! operator runs under).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::support::*;

fn chart() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/helm/regcred-operator").to_string()
}

async fn run(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} is not available: {e}"));
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn documents(yaml: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// `kind/namespace/name` → object.
fn by_identity(docs: Vec<serde_yaml::Value>) -> BTreeMap<String, serde_yaml::Value> {
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

#[tokio::test]
async fn helm_lint_passes() {
    run("helm", &["lint", "--strict", &chart()], None).await;
}

#[tokio::test]
async fn helm_and_kustomize_render_the_same_objects() {
    let kustomize = by_identity(documents(
        &run(
            "kubectl",
            &["kustomize", concat!(env!("CARGO_MANIFEST_DIR"), "/deploy")],
            None,
        )
        .await,
    ));
    let helm = by_identity(documents(
        &run(
            "helm",
            &[
                "template",
                "regcred-operator",
                &chart(),
                "--namespace",
                "regcred-system",
                "--include-crds",
                "--skip-tests",
            ],
            None,
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
    let pod = |m: &BTreeMap<String, serde_yaml::Value>| {
        m["Deployment/regcred-system/regcred-operator"]["spec"]["template"]["spec"].clone()
    };
    let (h, k) = (pod(&helm), pod(&kustomize));
    assert_eq!(h["securityContext"], k["securityContext"]);
    assert_eq!(
        h["containers"][0]["securityContext"],
        k["containers"][0]["securityContext"]
    );
    assert_eq!(h["serviceAccountName"], k["serviceAccountName"]);
    let replicas = |m: &BTreeMap<String, serde_yaml::Value>| {
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
    let rendered = run(
        "helm",
        &[
            "template",
            &release,
            &chart(),
            "--namespace",
            &ns,
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
        None,
    )
    .await;
    let objects = by_identity(documents(&rendered));
    let deployment = objects
        .values()
        .find(|o| o["kind"] == "Deployment")
        .unwrap();
    assert_eq!(deployment["spec"]["replicas"], 3);
    let args =
        serde_yaml::to_string(&deployment["spec"]["template"]["spec"]["containers"][0]["args"])
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
    run("kubectl", &["apply", "-f", "-"], Some(&rendered)).await;
    let names = run(
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

    let monitored = run(
        "helm",
        &[
            "template",
            &release,
            &chart(),
            "--namespace",
            &ns,
            "--set",
            "metrics.serviceMonitor.enabled=true",
        ],
        None,
    )
    .await;
    assert!(
        documents(&monitored)
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
    let without = run(
        "helm",
        &[
            "template",
            &release,
            &chart(),
            "--namespace",
            &ns,
            "--set",
            "admissionPolicies.enabled=false",
        ],
        None,
    )
    .await;
    assert!(!documents(&without).iter().any(|d| {
        d["kind"]
            .as_str()
            .unwrap_or("")
            .starts_with("ValidatingAdmission")
    }));
}
