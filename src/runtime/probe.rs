//! Start-up checks: the CRD is installed and every watch the controller needs is allowed. A
//! forbidden watch would otherwise retry quietly forever, and a missing CRD looks like "nothing to
//! do"; both must stop the process with a message that says what to fix.

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::{Api, Client, api::ListParams};

use crate::api::{MANAGED_BY_LABEL, MANAGER, RegistryCredential};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "the RegistryCredential CRD (registrycredentials.regcred.dev, version v1alpha1) is not installed in this cluster; \
         install it with `kubectl apply -f crds/registrycredential.yaml` (or `regcred-operator crd | kubectl apply -f -`) and start the operator again"
    )]
    CrdMissing,
    #[error(
        "the operator may not {verb} {resource}{scope}: {message}; grant it the RBAC rules in deploy/"
    )]
    Forbidden {
        verb: &'static str,
        resource: &'static str,
        scope: String,
        message: String,
    },
    #[error("cannot reach the Kubernetes API server: {0}")]
    Unreachable(#[source] kube::Error),
}

fn classify(e: kube::Error, resource: &'static str, scope: String) -> ProbeError {
    match e {
        kube::Error::Api(s) if s.code == 404 && resource == "registrycredentials.regcred.dev" => {
            ProbeError::CrdMissing
        }
        kube::Error::Api(s) if s.code == 403 => ProbeError::Forbidden {
            verb: "list",
            resource,
            scope,
            message: s.message,
        },
        other => ProbeError::Unreachable(other),
    }
}

/// Lists (one item) everything the controller watches.
pub async fn check(client: &Client, source_namespaces: &[String]) -> Result<(), ProbeError> {
    let one = ListParams::default().limit(1);
    let cluster = || " cluster-wide".to_string();
    Api::<RegistryCredential>::all(client.clone())
        .list_metadata(&one)
        .await
        .map_err(|e| classify(e, "registrycredentials.regcred.dev", cluster()))?;
    Api::<Namespace>::all(client.clone())
        .list_metadata(&one)
        .await
        .map_err(|e| classify(e, "namespaces", cluster()))?;
    Api::<ServiceAccount>::all(client.clone())
        .list_metadata(&one)
        .await
        .map_err(|e| classify(e, "serviceaccounts", cluster()))?;
    let managed = ListParams::default()
        .limit(1)
        .labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));
    Api::<Secret>::all(client.clone())
        .list_metadata(&managed)
        .await
        .map_err(|e| classify(e, "secrets", cluster()))?;
    for ns in source_namespaces {
        Api::<Secret>::namespaced(client.clone(), ns)
            .list_metadata(&one)
            .await
            .map_err(|e| classify(e, "secrets", format!(" in source namespace {ns}")))?;
    }
    Ok(())
}
