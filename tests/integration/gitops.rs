//! GitOps tools see the truth: the Argo CD health check (run by a Lua VM configured as Argo CD
//! configures it) and Flux's kstatus judge objects the operator really wrote; `kubectl apply -f
//! crds/` works; a ServiceAccount that a GitOps tool also applies keeps our entry, and a tool that
//! keeps removing it is reported instead of fought.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;

use crate::support::*;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

const HEALTH_CHECK: &str = "deploy/argocd/resource_customizations/regcred.dev/RegistryCredential";

fn gitops_bin() -> String {
    std::env::var("REGCRED_TEST_GITOPS_BIN").unwrap_or_else(|_| {
        panic!("REGCRED_TEST_GITOPS_BIN is not set: run the tests with tests/run-integration.sh")
    })
}

/// What Argo CD's health check and Flux's kstatus make of the live object:
/// `((argo status, argo message), (kstatus status, kstatus message))`.
async fn judged(name: &str) -> ((String, String), (String, String)) {
    let object = run_ok(
        "kubectl",
        &["get", "registrycredential", name, "-o", "json"],
        None,
    )
    .await;
    let script = repo(HEALTH_CHECK).join("health.lua");
    let bin = gitops_bin();
    let verdict = |out: String| {
        let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON line");
        (
            v["status"].as_str().unwrap().to_string(),
            v["message"].as_str().unwrap_or_default().to_string(),
        )
    };
    let argo = verdict(run_ok(&bin, &["argocd", script.to_str().unwrap()], Some(&object)).await);
    let flux = verdict(run_ok(&bin, &["kstatus"], Some(&object)).await);
    (argo, flux)
}

/// Waits until Argo CD sees `argo` (with a message containing `message`) and kstatus sees `flux`.
async fn wait_judged(name: &str, argo: &str, message: &str, flux: &str) {
    wait_for(
        &format!("{name}: Argo CD {argo} ({message:?}), kstatus {flux}"),
        TIMEOUT,
        || async {
            let seen = judged(name).await;
            if seen.0.0 == argo && seen.0.1.contains(message) && seen.1.0 == flux {
                Ok(())
            } else {
                Err(seen)
            }
        },
    )
    .await;
}

#[tokio::test]
async fn argo_cd_and_kstatus_judge_live_credentials_through_their_lifecycle() {
    let client = admin().await;
    let instance = unique("gitops");
    // An operator of the test's own, so that it can be paused to catch a lagging generation.
    let lease = unique("gitops-lease");
    let mut operator = Operator::start(
        &kubeconfig_path(),
        &instance,
        &format!("{instance}-a"),
        &["--lease-name", lease.as_str()],
    )
    .await;
    let key = unique("gitops");
    namespace(&client, "gitops", &[(&key, "yes")]).await;
    let (source, password) = source_secret(&client).await;
    let name = unique("gitops");
    let spec = json!({
        "source": {"secretRef": {"namespace": SOURCE_NS, "name": source}},
        "namespaceSelector": {"matchLabels": {key.clone(): "yes"}},
    });
    create_credential_for(&client, &instance, &name, spec).await;
    wait_judged(&name, "Healthy", "1/1 namespaces in sync", "Current").await;

    // A spec change the operator has not acted on yet: the generation is ahead of the status.
    operator.signal("STOP");
    let second = namespace(&client, "gitops", &[]).await;
    patch_spec(&client, &name, json!({"namespaces": [second.clone()]})).await;
    let lagging = judged(&name).await;
    operator.signal("CONT");
    assert_eq!(
        lagging.0,
        (
            "Progressing".to_string(),
            "Waiting for the operator to act on generation 2".to_string()
        )
    );
    assert_eq!(lagging.1.0, "InProgress", "{lagging:?}");
    wait_judged(&name, "Healthy", "2/2 namespaces in sync", "Current").await;

    // A namespace that refuses the copy (an admission policy): Ready=False with Reconciling=True
    // and a failure listed. Argo CD: Degraded with the reason; kstatus: still in progress.
    let refusing = refusing_namespace(&client, &key).await;
    wait_judged(&name, "Degraded", "Rejected: ", "InProgress").await;
    let (argo, _) = judged(&name).await;
    assert!(argo.1.contains(&refusing), "{argo:?}");
    remove_refusal(&refusing).await;
    wait_judged(&name, "Healthy", "3/3 namespaces in sync", "Current").await;

    // A problem a person must fix (the source is gone): Stalled. Degraded, and Failed for Flux.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), SOURCE_NS);
    secrets.delete(&source, &Default::default()).await.unwrap();
    wait_judged(&name, "Degraded", "SourceNotFound: ", "Failed").await;
    let rotated = rotate(&client, &source).await;
    wait_judged(&name, "Healthy", "3/3 namespaces in sync", "Current").await;

    // Suspended.
    patch_spec(&client, &name, json!({"suspend": true})).await;
    wait_judged(&name, "Suspended", "spec.suspend is true", "Failed").await;
    patch_spec(&client, &name, json!({"suspend": false})).await;
    wait_judged(&name, "Healthy", "3/3 namespaces in sync", "Current").await;

    operator.assert_running();
    assert_nothing_leaked(&client, &name, &[&password, &rotated]).await;
    delete_credential(&client, &name).await;
}

#[tokio::test]
async fn a_credential_without_status_yet_is_progressing_for_argo_cd() {
    let client = admin().await;
    // Labelled for an operator that does not run: nobody writes its status.
    let name = unique("gitops-nostatus");
    create_credential_for(
        &client,
        &unique("nobody"),
        &name,
        json!({"source": {"secretRef": {"namespace": SOURCE_NS, "name": "absent"}}, "namespaces": []}),
    )
    .await;
    let (argo, flux) = judged(&name).await;
    assert_eq!(
        argo,
        (
            "Progressing".to_string(),
            "Waiting for the operator to report status".to_string()
        )
    );
    // kstatus has no way to tell "no status yet" from "nothing to report" (documented).
    assert_eq!(flux.0, "Current", "{flux:?}");
    Api::<regcred_operator::api::RegistryCredential>::all(client.clone())
        .delete(&name, &Default::default())
        .await
        .unwrap();
}

/// A namespace whose Secrets an admission policy refuses, made a target (labelled `key`) once the
/// policy is in force.
async fn refusing_namespace(client: &Client, key: &str) -> String {
    let ns = namespace(client, "gitops-refuse", &[]).await;
    let policy = format!("regcred-test-refuse-{ns}");
    let manifest = json!({
        "apiVersion": "v1", "kind": "List", "items": [
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicy",
                "metadata": {"name": policy},
                "spec": {
                    "failurePolicy": "Fail",
                    "matchConstraints": {"resourceRules": [{
                        "apiGroups": [""], "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"], "resources": ["secrets"]
                    }]},
                    "validations": [{"expression": "false", "message": "no Secrets in this namespace"}]
                }
            },
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": policy},
                "spec": {
                    "policyName": policy,
                    "validationActions": ["Deny"],
                    "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
                }
            }
        ]
    });
    run_ok(
        "kubectl",
        &["apply", "-f", "-"],
        Some(&manifest.to_string()),
    )
    .await;
    // The policy takes a moment to load: wait until it refuses a Secret of our own.
    wait_for("the admission policy to be in force", TIMEOUT, || async {
        let (created, _, err) = run_program(
            "kubectl",
            &[
                "-n",
                &ns,
                "create",
                "secret",
                "generic",
                "probe",
                "--from-literal=a=b",
            ],
            None,
        )
        .await;
        if created {
            run_ok("kubectl", &["-n", &ns, "delete", "secret", "probe"], None).await;
            Err("created".to_string())
        } else if err.contains("no Secrets in this namespace") {
            Ok(())
        } else {
            Err(err)
        }
    })
    .await;
    label_namespace(client, &ns, key, Some("yes")).await;
    ns
}

async fn remove_refusal(ns: &str) {
    let policy = format!("regcred-test-refuse-{ns}");
    run_ok(
        "kubectl",
        &[
            "delete",
            "validatingadmissionpolicybinding,validatingadmissionpolicy",
            &policy,
        ],
        None,
    )
    .await;
}

#[tokio::test]
async fn kubectl_apply_of_the_crds_directory_succeeds() {
    let out = run_ok(
        "kubectl",
        &["apply", "-f", repo("crds").to_str().unwrap()],
        None,
    )
    .await;
    assert!(
        out.contains(
            "customresourcedefinition.apiextensions.k8s.io/registrycredentials.regcred.dev"
        ),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1, "only the CRD is applied: {out}");
}

#[tokio::test]
async fn the_argo_cd_component_installs_the_health_check_into_argocd_cm() {
    // The kustomization that installs Argo CD, reduced to its argocd-cm.
    let root = tempfile_dir("argocd-install");
    std::fs::write(
        root.join("argocd-cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: argocd-cm\n  namespace: argocd\n  labels: {app.kubernetes.io/part-of: argocd}\ndata:\n  timeout.reconciliation: 180s\n",
    )
    .unwrap();
    let component = relative_to(&root, &repo("deploy/argocd"));
    std::fs::write(
        root.join("kustomization.yaml"),
        format!("resources: [argocd-cm.yaml]\ncomponents: [{component}]\n"),
    )
    .unwrap();
    let rendered = run_ok("kubectl", &["kustomize", root.to_str().unwrap()], None).await;
    let cm: serde_yaml_ng::Value = serde_yaml_ng::from_str(&rendered).unwrap();
    let data = &cm["data"];
    assert_eq!(cm["metadata"]["name"], "argocd-cm", "no name suffix");
    assert_eq!(
        data["timeout.reconciliation"], "180s",
        "existing settings kept"
    );
    let script = std::fs::read_to_string(repo(HEALTH_CHECK).join("health.lua")).unwrap();
    assert_eq!(
        data["resource.customizations.health.regcred.dev_RegistryCredential"]
            .as_str()
            .unwrap(),
        script
    );
    let ignore: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        data["resource.customizations.ignoreDifferences.ServiceAccount"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        ignore["managedFieldsManagers"],
        serde_yaml_ng::from_str::<serde_yaml_ng::Value>("[regcred-operator]").unwrap()
    );
    // And it is a ConfigMap the API server takes.
    run_ok(
        "kubectl",
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&rendered.replace("namespace: argocd", "namespace: default")),
    )
    .await;
    std::fs::remove_dir_all(root).ok();
}

fn tempfile_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(prefix));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `to` as a path relative to `from` (kustomize refuses absolute component paths).
fn relative_to(from: &std::path::Path, to: &std::path::Path) -> String {
    let depth = from.components().count() - 1;
    let up = "../".repeat(depth);
    format!("{up}{}", to.strip_prefix("/").unwrap().display())
}

/// A ServiceAccount as Argo CD or Flux apply it: server-side apply under their own field manager.
fn gitops_service_account(ns: &str, name: &str, label: &str, pull: &[&str]) -> String {
    let mut sa = json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": ns, "labels": {"team": label}},
    });
    if !pull.is_empty() {
        sa["imagePullSecrets"] = json!(pull.iter().map(|n| json!({"name": n})).collect::<Vec<_>>());
    }
    sa.to_string()
}

const ARGO_MANAGER: &str = "argocd-controller";

#[tokio::test]
async fn a_service_account_applied_by_a_gitops_tool_keeps_our_entry() {
    let client = admin().await;
    let s = setup(
        &client,
        "gitops-sa",
        1,
        json!({"serviceAccounts": ["default", "app"]}),
    )
    .await;
    let ns = &s.namespaces[0];
    wait_synced(&client, &s.name).await;
    let apply = |manifest: String, force: bool| async move {
        let mut args = vec![
            "apply",
            "--server-side",
            "--field-manager",
            ARGO_MANAGER,
            "-o",
            "json",
            "-f",
            "-",
        ];
        if force {
            args.push("--force-conflicts");
        }
        run_program("kubectl", &args, Some(&manifest)).await
    };
    let names = |out: &str| -> Vec<String> {
        let sa: ServiceAccount = serde_json::from_str(out).unwrap();
        pull_secret_names(&sa)
    };

    // Created from Git without imagePullSecrets: the operator adds its entry.
    let (applied, _, err) = apply(gitops_service_account(ns, "app", "a", &[]), false).await;
    assert!(applied, "{err}");
    wait_sa_lists(&client, ns, "app", &s.name).await;

    // Applied again (a change in Git): the apply itself keeps our entry, nothing to restore.
    let (applied, out, err) = apply(gitops_service_account(ns, "app", "b", &[]), false).await;
    assert!(applied, "{err}");
    assert_eq!(names(&out), [s.name.as_str()], "the apply's own result");

    // The operator owns the whole (atomic) list and its annotation key, nothing else: exactly
    // what Argo CD's managedFieldsManagers rule then ignores.
    let sa = run_ok(
        "kubectl",
        &[
            "-n",
            ns,
            "get",
            "sa",
            "app",
            "-o",
            "json",
            "--show-managed-fields",
        ],
        None,
    )
    .await;
    let sa: serde_json::Value = serde_json::from_str(&sa).unwrap();
    let ours = sa["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["manager"] == "regcred-operator")
        .expect("the operator's managedFields entry");
    assert_eq!(
        ours["fieldsV1"],
        json!({"f:imagePullSecrets": {}, "f:metadata": {"f:annotations": {".": {}, "f:regcred.dev/image-pull-secrets": {}}}}),
    );

    // Declaring imagePullSecrets in Git conflicts with the operator's ownership...
    let manifest = gitops_service_account(ns, "app", "b", &["from-git"]);
    let (applied, _, err) = apply(manifest.clone(), false).await;
    assert!(!applied, "an apply of another list must conflict");
    assert!(
        err.contains("conflict with \"regcred-operator\"") && err.contains(".imagePullSecrets"),
        "{err}"
    );
    // ...and forcing it (as Argo CD and Flux do) replaces the list: our entry is gone in the
    // apply's result, and the operator puts it back right after, behind the Git entry.
    let (applied, out, err) = apply(manifest, true).await;
    assert!(applied, "{err}");
    assert_eq!(names(&out), ["from-git"]);
    let restored = wait_sa_lists(&client, ns, "app", &s.name).await;
    assert_eq!(pull_secret_names(&restored), ["from-git", s.name.as_str()]);
    wait_synced(&client, &s.name).await;
    delete_credential(&client, &s.name).await;
}

#[tokio::test]
async fn a_writer_that_keeps_removing_our_entry_is_reported_and_not_fought() {
    let client = admin().await;
    let s = setup(
        &client,
        "gitops-fight",
        1,
        json!({"serviceAccounts": ["app"]}),
    )
    .await;
    let ns = s.namespaces[0].clone();
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let sa_manifest: serde_json::Value =
        serde_json::from_str(&gitops_service_account(&ns, "app", "a", &["from-git"])).unwrap();
    let force = PatchParams::apply(ARGO_MANAGER).force();
    api.patch("app", &force, &Patch::Apply(&sa_manifest))
        .await
        .unwrap();
    wait_sa_lists(&client, &ns, "app", &s.name).await;
    wait_synced(&client, &s.name).await;

    // A tool applying its own list with force whenever our entry is back (Argo CD with
    // self-heal and no ignore rule does exactly this).
    let stop = Arc::new(AtomicBool::new(false));
    let restorations = Arc::new(AtomicU32::new(0));
    let fighter = tokio::spawn({
        let (api, stop, restorations, name) = (
            api.clone(),
            stop.clone(),
            restorations.clone(),
            s.name.clone(),
        );
        let (manifest, force) = (sa_manifest.clone(), force.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let sa = api.get("app").await.unwrap();
                if pull_secret_names(&sa).contains(&name) {
                    restorations.fetch_add(1, Ordering::Relaxed);
                    api.patch("app", &force, &Patch::Apply(&manifest))
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });

    let rc = wait_problem(
        &client,
        &s.name,
        "a fighting writer",
        "ServiceAccountContested",
        ARGO_MANAGER,
    )
    .await;
    let failure = &rc.status.as_ref().unwrap().failures[0];
    assert_eq!(
        (failure.namespace.as_str(), failure.reason.as_str()),
        (ns.as_str(), "ServiceAccountContested")
    );
    assert!(
        failure
            .message
            .contains(&format!("ServiceAccount {ns}/app")),
        "{}",
        failure.message
    );
    wait_event(&client, &s.name, "ServiceAccountContested").await;
    wait_judged(&s.name, "Degraded", "ServiceAccountContested: ", "Failed").await;
    // A few restorations, then the operator leaves the entry alone while the fight goes on.
    let seen = restorations.load(Ordering::Relaxed);
    assert!(seen <= 5, "{seen} restorations before backing off");
    stays(
        "the operator not restoring a contested entry",
        Duration::from_secs(8),
        || async {
            let now = restorations.load(Ordering::Relaxed);
            if now == seen { Ok(()) } else { Err(now) }
        },
    )
    .await;

    // The fight stops: after the backoff the entry is restored once more and stays.
    stop.store(true, Ordering::Relaxed);
    fighter.await.unwrap();
    wait_for(
        "the credential to recover after the backoff",
        Duration::from_secs(90),
        || async {
            let rc = credential(&client, &s.name).await;
            match ready(&rc) {
                Some((status, reason, _)) if reason == "Synced" => Ok(status),
                other => Err(other),
            }
        },
    )
    .await;
    let sa = get_sa(&client, &ns, "app").await.unwrap();
    assert_eq!(pull_secret_names(&sa), ["from-git", s.name.as_str()]);
    wait_event(&client, &s.name, "Synced").await;
    delete_credential(&client, &s.name).await;
}
