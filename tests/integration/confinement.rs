//! Self-confinement: the ValidatingAdmissionPolicies that `deploy/` installs (the suite's
//! operator runs under them) limit the operator's own ServiceAccount to what the operator does.
//! Each request here is made with the admin's credentials impersonating that ServiceAccount, as a
//! stolen token would be used: every denial and every write the operator needs is shown.

use k8s_openapi::{
    ByteString,
    api::{
        admissionregistration::v1::ValidatingAdmissionPolicy,
        core::v1::{Secret, ServiceAccount},
        rbac::v1::{RoleBinding, RoleRef, Subject},
    },
};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use regcred_operator::api::{CREDENTIAL_LABEL, MANAGED_BY_LABEL, PULL_SECRETS_ANNOTATION};
use serde_json::json;

use crate::support::*;

const OPERATOR_USER: &str = "system:serviceaccount:regcred-system:regcred-operator";
const SECRETS_POLICY: &str = "regcred-operator-secrets";
const SA_POLICY: &str = "regcred-operator-service-accounts";
const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";

/// The admin's client impersonating `user` (its groups are added by the API server).
async fn impersonating(user: &str) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig_path()).expect("kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    config.auth_info.impersonate = Some(user.into());
    Client::try_from(config).expect("client")
}

fn ours(secret: &mut Secret, credential: &str) {
    secret.metadata.labels = Some(labels(&[
        (MANAGED_BY_LABEL, "regcred-operator"),
        (CREDENTIAL_LABEL, credential),
    ]));
}

fn pull_config(password: &str) -> Vec<u8> {
    docker_config("confine.example", "robot", password).into_bytes()
}

/// The message of a request the named policy refused; panics if it was allowed or refused
/// for another reason.
fn refused_by<T: std::fmt::Debug>(
    result: Result<T, kube::Error>,
    policy: &str,
    what: &str,
) -> String {
    match result {
        Err(kube::Error::Api(s))
            if s.code == 403
                && s.message.contains("ValidatingAdmissionPolicy")
                && s.message.contains(&format!("'{policy}'")) =>
        {
            s.message
        }
        other => panic!("{what}: expected a refusal by {policy}, got {other:?}"),
    }
}

fn allowed<T>(result: Result<T, kube::Error>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("{what}: expected to be allowed, got {e}"))
}

/// Waits until the policy refuses the operator (checked with a server-side dry run, so that
/// nothing is written while the API server is still loading the policies).
async fn wait_policies_enforced(operator: &Client, ns: &str) {
    let api: Api<Secret> = Api::namespaced(operator.clone(), ns);
    let probe = secret_object(ns, "probe", "Opaque", &[("k", b"v")]);
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    wait_for("the admission policies to be enforced", TIMEOUT, || async {
        match api.create(&dry, &probe).await {
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains(SECRETS_POLICY) => {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// Both policies are installed by `deploy/`, fail closed, and match the operator's
/// ServiceAccount only. (Whether their expressions hold is what the tests below show: the test
/// cluster runs no policy status controller to type-check them.)
#[tokio::test]
async fn the_admission_policies_are_installed_and_fail_closed() {
    let admin = admin().await;
    let api: Api<ValidatingAdmissionPolicy> = Api::all(admin);
    for name in [SECRETS_POLICY, SA_POLICY] {
        let policy = api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let spec = policy.spec.as_ref().expect("spec");
        assert_eq!(spec.failure_policy.as_deref(), Some("Fail"), "{name}");
        let conditions: Vec<_> = spec.match_conditions.iter().flatten().collect();
        assert_eq!(conditions.len(), 1, "{name}");
        assert_eq!(
            conditions[0].expression,
            format!("request.userInfo.username == '{OPERATOR_USER}'"),
            "{name} matches the operator's ServiceAccount only"
        );
    }
}

#[tokio::test]
async fn a_stolen_operator_token_cannot_touch_other_secrets() {
    let admin = admin().await;
    let ns = namespace(&admin, "confine", &[]).await;
    let operator = impersonating(OPERATOR_USER).await;
    wait_policies_enforced(&operator, &ns).await;
    let as_admin: Api<Secret> = Api::namespaced(admin.clone(), &ns);
    let api: Api<Secret> = Api::namespaced(operator.clone(), &ns);
    let pp = PostParams::default();
    let credential = unique("confine-rc");
    let pw = password();

    // A user's Opaque Secret, a user's pull secret, a legacy dockercfg Secret.
    let app = put_secret(
        &admin,
        &secret_object(&ns, "app-config", "Opaque", &[("token", b"user data")]),
    )
    .await;
    let user_pull = put_secret(
        &admin,
        &secret_object(
            &ns,
            "user-pull",
            DOCKER_CONFIG_JSON,
            &[(".dockerconfigjson", &pull_config(&pw))],
        ),
    )
    .await;
    put_secret(
        &admin,
        &secret_object(
            &ns,
            "legacy",
            "kubernetes.io/dockercfg",
            &[(".dockercfg", br#"{"r.io":{"auth":"dTpw"}}"#)],
        ),
    )
    .await;

    // Creating anything but a labelled dockerconfigjson Secret.
    let mut opaque = secret_object(&ns, "stolen", "Opaque", &[("k", b"v")]);
    ours(&mut opaque, &credential);
    refused_by(
        api.create(&pp, &opaque).await,
        SECRETS_POLICY,
        "an Opaque Secret with our labels",
    );
    let unlabelled = secret_object(
        &ns,
        "stolen",
        DOCKER_CONFIG_JSON,
        &[(".dockerconfigjson", &pull_config(&pw))],
    );
    refused_by(
        api.create(&pp, &unlabelled).await,
        SECRETS_POLICY,
        "an unlabelled pull secret",
    );
    let mut half = unlabelled.clone();
    half.metadata.labels = Some(labels(&[(MANAGED_BY_LABEL, "regcred-operator")]));
    refused_by(
        api.create(&pp, &half).await,
        SECRETS_POLICY,
        "a pull secret without the credential label",
    );
    let mut wrong_manager = unlabelled.clone();
    wrong_manager.metadata.labels = Some(labels(&[
        (MANAGED_BY_LABEL, "someone"),
        (CREDENTIAL_LABEL, credential.as_str()),
    ]));
    refused_by(
        api.create(&pp, &wrong_manager).await,
        SECRETS_POLICY,
        "a pull secret managed by someone else",
    );

    // Changing a user's Secret: its data, or taking an Opaque one over with our labels.
    let merge = |v: serde_json::Value| Patch::Merge(v);
    let message = refused_by(
        api.patch(
            "app-config",
            &PatchParams::default(),
            &merge(json!({"data": {"token": "c3RvbGVu"}})),
        )
        .await,
        SECRETS_POLICY,
        "editing a user's Opaque Secret",
    );
    assert!(message.contains("may only update"), "{message}");
    refused_by(
        api.patch(
            "app-config",
            &PatchParams::default(),
            &merge(json!({"metadata": {"labels": {MANAGED_BY_LABEL: "regcred-operator", CREDENTIAL_LABEL: credential}}})),
        )
        .await,
        SECRETS_POLICY,
        "labelling a user's Opaque Secret as ours",
    );
    refused_by(
        api.patch(
            "user-pull",
            &PatchParams::default(),
            &merge(json!({"data": {".dockerconfigjson": "e30="}})),
        )
        .await,
        SECRETS_POLICY,
        "editing a user's pull secret without taking it over",
    );
    // Deleting a user's Secret.
    let message = refused_by(
        api.delete("app-config", &DeleteParams::default()).await,
        SECRETS_POLICY,
        "deleting a user's Opaque Secret",
    );
    assert!(message.contains("may only delete"), "{message}");
    refused_by(
        api.delete("user-pull", &DeleteParams::default()).await,
        SECRETS_POLICY,
        "deleting a user's pull secret",
    );
    // Nothing of the user's changed.
    let now = as_admin.get("app-config").await.unwrap();
    assert_eq!(now.metadata.resource_version, app.metadata.resource_version);
    let now = as_admin.get("user-pull").await.unwrap();
    assert_eq!(
        now.metadata.resource_version,
        user_pull.metadata.resource_version
    );

    // What the operator does: create a copy, update it, release it (deletionPolicy: Orphan).
    let mut copy = secret_object(
        &ns,
        "copy",
        DOCKER_CONFIG_JSON,
        &[(".dockerconfigjson", &pull_config(&pw))],
    );
    ours(&mut copy, &credential);
    allowed(api.create(&pp, &copy).await, "creating a copy");
    let rotated = pull_config(&password());
    allowed(
        api.patch(
            "copy",
            &PatchParams::default(),
            &merge(json!({"data": {".dockerconfigjson": ByteString(rotated)}})),
        )
        .await,
        "updating a copy",
    );
    allowed(
        api.patch(
            "copy",
            &PatchParams::default(),
            &merge(
                json!({"metadata": {"labels": {MANAGED_BY_LABEL: null, CREDENTIAL_LABEL: null}}}),
            ),
        )
        .await,
        "releasing a copy",
    );
    // Released, it is the user's: no more edits nor deletion.
    refused_by(
        api.patch(
            "copy",
            &PatchParams::default(),
            &merge(json!({"data": {".dockerconfigjson": "e30="}})),
        )
        .await,
        SECRETS_POLICY,
        "editing a released copy",
    );
    refused_by(
        api.delete("copy", &DeleteParams::default()).await,
        SECRETS_POLICY,
        "deleting a released copy",
    );
    // Releasing may not change data on the way.
    let mut second = copy.clone();
    second.metadata.name = Some("copy-2".into());
    allowed(api.create(&pp, &second).await, "creating a second copy");
    refused_by(
        api.patch(
            "copy-2",
            &PatchParams::default(),
            &merge(json!({"metadata": {"labels": {MANAGED_BY_LABEL: null}}, "data": {"extra": "eA=="}})),
        )
        .await,
        SECRETS_POLICY,
        "releasing a copy while changing its data",
    );
    allowed(
        api.delete("copy-2", &DeleteParams::default()).await,
        "deleting a copy",
    );

    // conflictPolicy: Adopt takes a pull secret over in place (labels and data in one write),
    // and replaces a legacy dockercfg Secret (delete, then create).
    allowed(
        api.patch(
            "user-pull",
            &PatchParams::default(),
            &merge(json!({
                "metadata": {"labels": {MANAGED_BY_LABEL: "regcred-operator", CREDENTIAL_LABEL: credential}},
                "data": {".dockerconfigjson": ByteString(pull_config(&pw))},
            })),
        )
        .await,
        "adopting a pull secret",
    );
    allowed(
        api.delete("user-pull", &DeleteParams::default()).await,
        "deleting an adopted copy",
    );
    allowed(
        api.delete("legacy", &DeleteParams::default()).await,
        "replacing a legacy dockercfg Secret",
    );
    // A copy recreated by hand as Opaque with our labels is replaced: deleting it is allowed.
    let mut fake = secret_object(&ns, "recreated", "Opaque", &[("k", b"v")]);
    ours(&mut fake, &credential);
    put_secret(&admin, &fake).await;
    allowed(
        api.delete("recreated", &DeleteParams::default()).await,
        "deleting a labelled Opaque Secret",
    );

    // Nobody else is confined: the admin, and a ServiceAccount of the same name in another
    // namespace holding the same role.
    allowed(
        as_admin
            .patch(
                "app-config",
                &PatchParams::default(),
                &merge(json!({"data": {"token": "YWRtaW4="}})),
            )
            .await,
        "the admin editing an Opaque Secret",
    );
    create_service_account(&admin, &ns, "regcred-operator").await;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("namesake".into()),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "regcred-operator".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "regcred-operator".into(),
            namespace: Some(ns.clone()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(&pp, &binding)
        .await
        .expect("binding the namesake");
    let namesake: Api<Secret> = Api::namespaced(
        impersonating(&format!("system:serviceaccount:{ns}:regcred-operator")).await,
        &ns,
    );
    let mut other = secret_object(&ns, "namesake-opaque", "Opaque", &[("k", b"v")]);
    other.metadata.labels = None;
    wait_for("the namesake's role to take effect", TIMEOUT, || async {
        namesake
            .create(&pp, &other)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
}

#[tokio::test]
async fn a_stolen_operator_token_changes_only_image_pull_secrets_of_service_accounts() {
    let admin = admin().await;
    let ns = namespace(&admin, "confine-sa", &[]).await;
    let operator = impersonating(OPERATOR_USER).await;
    wait_policies_enforced(&operator, &ns).await;
    let as_admin: Api<ServiceAccount> = Api::namespaced(admin.clone(), &ns);
    let api: Api<ServiceAccount> = Api::namespaced(operator.clone(), &ns);
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("app".into()),
            labels: Some(labels(&[("team", "payments")])),
            annotations: Some(labels(&[("note", "kept")])),
            ..Default::default()
        },
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    let before = as_admin.create(&PostParams::default(), &sa).await.unwrap();
    let merge = |v: serde_json::Value| Patch::Merge(v);
    let pp = PatchParams::default();

    for (what, patch) in [
        (
            "changing a label",
            json!({"metadata": {"labels": {"team": "stolen"}}}),
        ),
        (
            "adding a label",
            json!({"metadata": {"labels": {"extra": "x"}}}),
        ),
        (
            "changing another annotation",
            json!({"metadata": {"annotations": {"note": "stolen"}}}),
        ),
        (
            "adding another annotation",
            json!({"metadata": {"annotations": {"x": "y"}}}),
        ),
        (
            "removing another annotation",
            json!({"metadata": {"annotations": {"note": null}}}),
        ),
        (
            "adding a finalizer",
            json!({"metadata": {"finalizers": ["example.com/hold"]}}),
        ),
        (
            "changing automountServiceAccountToken",
            json!({"automountServiceAccountToken": true}),
        ),
        (
            "adding a token Secret",
            json!({"secrets": [{"name": "stolen-token"}]}),
        ),
        (
            "changing a label along with imagePullSecrets",
            json!({"metadata": {"labels": {"team": "stolen"}}, "imagePullSecrets": [{"name": "x"}]}),
        ),
    ] {
        let message = refused_by(api.patch("app", &pp, &merge(patch)).await, SA_POLICY, what);
        assert!(
            message.contains("may change only imagePullSecrets"),
            "{what}: {message}"
        );
    }
    let now = as_admin.get("app").await.unwrap();
    assert_eq!(
        now.metadata.resource_version, before.metadata.resource_version,
        "nothing changed"
    );

    // What the operator does: its entry and its bookkeeping annotation, with a precondition.
    let rv = now.metadata.resource_version.clone();
    let credential = unique("confine-rc");
    allowed(
        api.patch(
            "app",
            &pp,
            &merge(json!({
                "metadata": {"resourceVersion": rv, "annotations": {PULL_SECRETS_ANNOTATION: format!("{credential}/pull")}},
                "imagePullSecrets": [{"name": "foreign"}, {"name": "pull"}],
            })),
        )
        .await,
        "listing our entry",
    );
    allowed(
        api.patch(
            "app",
            &pp,
            &merge(json!({"metadata": {"annotations": {PULL_SECRETS_ANNOTATION: null}}, "imagePullSecrets": [{"name": "foreign"}]})),
        )
        .await,
        "removing our entry",
    );
    let after = as_admin.get("app").await.unwrap();
    assert_eq!(after.metadata.labels, before.metadata.labels);
    assert_eq!(after.metadata.annotations, before.metadata.annotations);
    assert_eq!(after.automount_service_account_token, Some(false));
    assert_eq!(pull_secret_names(&after), vec!["foreign".to_string()]);

    // The admin is not confined.
    allowed(
        as_admin
            .patch(
                "app",
                &pp,
                &merge(json!({"metadata": {"labels": {"team": "platform"}}})),
            )
            .await,
        "the admin changing a label",
    );
}
