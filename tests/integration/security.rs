//! Tenants: someone with the usual namespace-scoped `admin` role in their own namespace can read
//! the copy there (that is what it is for), but no other namespace's copy, no source, and cannot
//! make the operator copy a credential into their namespace.

use std::time::Duration;

use k8s_openapi::api::{
    core::v1::{Namespace, Secret, ServiceAccount},
    rbac::v1::{RoleBinding, RoleRef, Subject},
};
use kube::{
    Api, Client,
    api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use regcred_operator::api::{
    CREDENTIAL_LABEL, MANAGED_BY_LABEL, PULL_SECRETS_ANNOTATION, RegistryCredential,
};
use serde_json::json;

use crate::support::*;

/// A ServiceAccount `tenant` in `ns` bound to the built-in `admin` ClusterRole in `ns` only.
async fn tenant(admin: &Client, ns: &str) -> Client {
    create_service_account(admin, ns, "tenant").await;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("tenant-admin".into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "admin".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "tenant".into(),
            namespace: Some(ns.into()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding the tenant");
    let client = client_as_service_account(admin, ns, "tenant").await;
    // The binding reaches the authorizer through a watch, and the built-in `admin` role gets its
    // rules from kube-controller-manager's aggregation: wait until the tenant may list Secrets.
    let own: Api<Secret> = Api::namespaced(client.clone(), ns);
    wait_for("the tenant's role to take effect", TIMEOUT, || async {
        own.list(&ListParams::default())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    client
}

fn forbidden<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>) {
    match result {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: expected Forbidden, got {other:?}"),
    }
}

#[tokio::test]
async fn a_tenant_reads_only_its_own_copy() {
    let client = admin().await;
    let s = setup(&client, "tenant-read", 2, json!({})).await;
    wait_synced(&client, &s.name).await;
    let (mine, theirs) = (&s.namespaces[0], &s.namespaces[1]);
    let tenant = tenant(&client, mine).await;

    let own: Api<Secret> = Api::namespaced(tenant.clone(), mine);
    assert!(own.get(&s.name).await.is_ok(), "its own copy is readable");
    forbidden(
        "another namespace's copy",
        Api::<Secret>::namespaced(tenant.clone(), theirs)
            .get(&s.name)
            .await,
    );
    forbidden(
        "the source",
        Api::<Secret>::namespaced(tenant.clone(), SOURCE_NS)
            .get(&s.source)
            .await,
    );
    forbidden(
        "Secrets of all namespaces",
        Api::<Secret>::all(tenant.clone())
            .list(&ListParams::default())
            .await,
    );
    forbidden(
        "the RegistryCredential's spec (it names the source)",
        Api::<RegistryCredential>::all(tenant.clone())
            .get(&s.name)
            .await,
    );
}

#[tokio::test]
async fn a_tenant_cannot_make_the_operator_copy_into_its_namespace() {
    let client = admin().await;
    let s = setup(&client, "tenant-pull", 1, json!({})).await;
    wait_synced(&client, &s.name).await;
    // A namespace the credential does not select, administered by the tenant.
    let ns = namespace(&client, "tenant-own", &[]).await;
    let tenant = tenant(&client, &ns).await;

    // The two ways in are cluster-scoped: a RegistryCredential, and the namespace's labels.
    let rc = RegistryCredential::new(
        &unique("tenant-rc"),
        spec_from(
            json!({"source": {"secretRef": {"namespace": SOURCE_NS, "name": s.source}},
                         "namespaces": [ns.clone()]}),
        ),
    );
    forbidden(
        "creating a RegistryCredential",
        Api::<RegistryCredential>::all(tenant.clone())
            .create(&PostParams::default(), &rc)
            .await,
    );
    forbidden(
        "labelling its own namespace",
        Api::<Namespace>::all(tenant.clone())
            .patch(
                &ns,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {s.key.clone(): "yes"}}})),
            )
            .await,
    );
    forbidden(
        "removing the exclusion annotation's opposite: annotating its namespace",
        Api::<Namespace>::all(tenant.clone())
            .patch(
                &ns,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"x": "y"}}})),
            )
            .await,
    );

    // What the tenant can write, in its own namespace: a Secret dressed as a copy, and a
    // ServiceAccount whose bookkeeping claims the credential. Neither draws the credential in.
    let decoy = secret_object(
        &ns,
        &s.name,
        "kubernetes.io/dockerconfigjson",
        &[(
            ".dockerconfigjson",
            br#"{"auths":{"decoy.example.com":{"auth":"dTpw"}}}"#,
        )],
    );
    let mut decoy = decoy;
    decoy.metadata.labels = Some(labels(&[
        (MANAGED_BY_LABEL, "regcred-operator"),
        (CREDENTIAL_LABEL, &s.name),
    ]));
    Api::<Secret>::namespaced(tenant.clone(), &ns)
        .create(&PostParams::default(), &decoy)
        .await
        .expect("the tenant writes Secrets in its namespace");
    Api::<ServiceAccount>::namespaced(tenant.clone(), &ns)
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                PULL_SECRETS_ANNOTATION: format!("{}/{}", s.name, s.name)}}})),
        )
        .await
        .expect("the tenant edits its ServiceAccounts");
    // Nudge the operator: a rotation makes it reconcile the credential.
    let password = rotate(&client, &s.source).await;
    wait_copy(&client, &s.namespaces[0], &s.name, &password).await;
    stays(
        "no Secret in the tenant's namespace to carry the credential",
        Duration::from_secs(3),
        || async {
            let secrets = Api::<Secret>::namespaced(client.clone(), &ns)
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            match secrets.items.iter().find(|x| copy_has(x, &password)) {
                Some(x) => Err(format!("{:?} carries it", x.metadata.name)),
                None => Ok(()),
            }
        },
    )
    .await;
    let sa = get_sa(&client, &ns, "default").await.unwrap();
    assert!(pull_secret_names(&sa).is_empty(), "{sa:?}");
    wait_synced_with(&client, &s.name, "1 target", |s| s.target_namespaces == 1).await;
}
