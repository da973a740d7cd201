//! Object builders for tests, one way to build each object: the unit tests use this module, and
//! the integration tests include this very file (`tests/integration/support`). It depends on
//! nothing of the crate, only on `k8s-openapi` and `kube`.

use k8s_openapi::{
    ByteString,
    api::core::v1::{LocalObjectReference, Secret, ServiceAccount},
};
use kube::api::ObjectMeta;

/// A Secret `ns/name` of type `type_` holding `data`.
pub fn secret_object(ns: &str, name: &str, type_: &str, data: &[(&str, &[u8])]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..ObjectMeta::default()
        },
        type_: Some(type_.into()),
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_string(), ByteString(v.to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// A ServiceAccount `ns/name` whose `imagePullSecrets` lists `pull_secrets`, in that order.
pub fn service_account(ns: &str, name: &str, pull_secrets: &[&str]) -> ServiceAccount {
    ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..ObjectMeta::default()
        },
        image_pull_secrets: Some(
            pull_secrets
                .iter()
                .map(|n| LocalObjectReference {
                    name: (*n).to_string(),
                })
                .collect(),
        ),
        ..ServiceAccount::default()
    }
}
