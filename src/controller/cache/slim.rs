//! What the caches keep of a ServiceAccount, of one of our Secrets and of a Namespace: only the
//! fields the controller reads, in compact form. The Kubernetes types of ServiceAccounts and
//! Secrets are rebuilt from them when a pass reads one, so everything past the cache works on the
//! real types; a Namespace is read only as the facts selection needs.
//!
//! A `ServiceAccount` is 416 bytes before any of its strings, and each label map a B-tree node of
//! about half a kilobyte: with tens of thousands of accounts and copies, the full types would be
//! most of the operator's memory.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::core::v1::{LocalObjectReference, Namespace, Secret, ServiceAccount},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::core::PartialObjectMeta;

use crate::{controller::targets::NamespaceFacts, dockerconfig::DOCKER_CONFIG_JSON_KEY};

/// A kind the caches hold as `Self`, made from the watched kind `Full`.
pub(crate) trait Cached {
    type Full: kube::Resource + Clone;
    fn keep(full: &Self::Full) -> Self;
}

impl Cached for k8s_openapi::api::core::v1::Secret {
    type Full = Self;
    fn keep(full: &Self) -> Self {
        full.clone()
    }
}

/// A Namespace as selection reads it (see [`NamespaceFacts`]); its name is the cache's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CachedNamespace {
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    terminating: bool,
}

impl Cached for CachedNamespace {
    type Full = PartialObjectMeta<Namespace>;
    fn keep(ns: &Self::Full) -> Self {
        Self {
            labels: ns.metadata.labels.clone(),
            annotations: ns.metadata.annotations.clone(),
            terminating: ns.metadata.deletion_timestamp.is_some(),
        }
    }
}

impl CachedNamespace {
    pub(crate) fn facts<'a>(&'a self, name: &'a str) -> NamespaceFacts<'a> {
        NamespaceFacts {
            name,
            labels: self.labels.as_ref(),
            annotations: self.annotations.as_ref(),
            terminating: self.terminating,
        }
    }
}

/// The facts of a Namespace as the watch delivers it.
pub(crate) fn facts_of(ns: &PartialObjectMeta<Namespace>) -> NamespaceFacts<'_> {
    NamespaceFacts {
        name: ns.metadata.name.as_deref().unwrap_or_default(),
        labels: ns.metadata.labels.as_ref(),
        annotations: ns.metadata.annotations.as_ref(),
        terminating: ns.metadata.deletion_timestamp.is_some(),
    }
}

type Pairs = Box<[(Box<str>, Box<str>)]>;

fn pairs(map: Option<&BTreeMap<String, String>>) -> Option<Pairs> {
    map.map(|m| {
        m.iter()
            .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
            .collect()
    })
}

fn map(pairs: Option<&Pairs>) -> Option<BTreeMap<String, String>> {
    pairs.map(|p| {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

fn text(s: Option<&String>) -> Option<Box<str>> {
    s.map(|s| s.as_str().into())
}

fn string(s: Option<&str>) -> Option<String> {
    s.map(ToString::to_string)
}

/// The names a list of references holds, in its order.
fn names(refs: Option<&[LocalObjectReference]>) -> Option<Box<[Box<str>]>> {
    refs.map(|list| list.iter().map(|r| r.name.as_str().into()).collect())
}

/// The identity of an object and its version; its namespace and name are the cache's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    uid: Option<Box<str>>,
    resource_version: Option<Box<str>>,
}

impl Identity {
    fn of(meta: &ObjectMeta) -> Self {
        Self {
            uid: text(meta.uid.as_ref()),
            resource_version: text(meta.resource_version.as_ref()),
        }
    }

    fn meta(&self, namespace: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            uid: string(self.uid.as_deref()),
            resource_version: string(self.resource_version.as_deref()),
            ..ObjectMeta::default()
        }
    }
}

/// A ServiceAccount as the controller reads it: identity, this operator's annotations,
/// `imagePullSecrets`, `automountServiceAccountToken`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CachedServiceAccount {
    identity: Identity,
    annotations: Option<Pairs>,
    image_pull_secrets: Option<Box<[Box<str>]>>,
    automount_token: Option<bool>,
}

impl Cached for CachedServiceAccount {
    type Full = ServiceAccount;
    fn keep(sa: &ServiceAccount) -> Self {
        Self {
            identity: Identity::of(&sa.metadata),
            annotations: pairs(sa.metadata.annotations.as_ref()),
            image_pull_secrets: names(sa.image_pull_secrets.as_deref()),
            automount_token: sa.automount_service_account_token,
        }
    }
}

impl CachedServiceAccount {
    /// Whether its `imagePullSecrets` names `secret`.
    pub(crate) fn lists(&self, secret: &str) -> bool {
        self.image_pull_secrets
            .iter()
            .flatten()
            .any(|name| &**name == secret)
    }

    /// The ServiceAccount `namespace/name` with what the cache kept of it.
    pub(crate) fn restore(&self, namespace: &str, name: &str) -> ServiceAccount {
        let mut metadata = self.identity.meta(namespace, name);
        metadata.annotations = map(self.annotations.as_ref());
        ServiceAccount {
            metadata,
            image_pull_secrets: self.image_pull_secrets.as_ref().map(|list| {
                list.iter()
                    .map(|name| LocalObjectReference {
                        name: name.to_string(),
                    })
                    .collect()
            }),
            automount_service_account_token: self.automount_token,
            secrets: None,
        }
    }
}

/// One of our Secrets as the controller reads it: identity, labels, ownerReferences, type, and
/// the value of `.dockerconfigjson` (the only key we write or compare).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CachedSecret {
    identity: Identity,
    labels: Option<Pairs>,
    owner_references: Option<Box<[OwnerReference]>>,
    type_: Option<Box<str>>,
    config: Option<Box<[u8]>>,
    /// Whether `data` was present at all (an empty Secret has none).
    has_data: bool,
}

impl Cached for CachedSecret {
    type Full = Secret;
    fn keep(secret: &Secret) -> Self {
        Self {
            identity: Identity::of(&secret.metadata),
            labels: pairs(secret.metadata.labels.as_ref()),
            owner_references: secret.metadata.owner_references.as_deref().map(Into::into),
            type_: text(secret.type_.as_ref()),
            config: secret
                .data
                .as_ref()
                .and_then(|d| d.get(DOCKER_CONFIG_JSON_KEY))
                .map(|b| b.0.as_slice().into()),
            has_data: secret.data.is_some(),
        }
    }
}

impl CachedSecret {
    /// The Secret `namespace/name` with what the cache kept of it.
    pub(crate) fn restore(&self, namespace: &str, name: &str) -> Secret {
        let mut metadata = self.identity.meta(namespace, name);
        metadata.labels = map(self.labels.as_ref());
        metadata.owner_references = self.owner_references.as_ref().map(|r| r.to_vec());
        Secret {
            metadata,
            type_: string(self.type_.as_deref()),
            data: self.has_data.then(|| {
                self.config
                    .iter()
                    .map(|c| (DOCKER_CONFIG_JSON_KEY.to_string(), ByteString(c.to_vec())))
                    .collect()
            }),
            ..Secret::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(ns: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            uid: Some("0b6f6d5e-1".into()),
            resource_version: Some("42".into()),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn a_service_account_comes_back_with_everything_the_controller_reads() {
        let mut sa = ServiceAccount {
            metadata: meta("team-a", "default"),
            image_pull_secrets: Some(vec![
                LocalObjectReference {
                    name: "theirs".into(),
                },
                LocalObjectReference {
                    name: "acme-pull".into(),
                },
            ]),
            automount_service_account_token: Some(false),
            secrets: None,
        };
        sa.metadata.annotations = Some(BTreeMap::from([(
            "regcred.dev/image-pull-secrets".to_string(),
            "acme/acme-pull".to_string(),
        )]));
        let kept = CachedServiceAccount::keep(&sa);
        assert_eq!(kept.restore("team-a", "default"), sa);
        // No list and an empty list stay apart.
        sa.image_pull_secrets = Some(vec![]);
        assert_eq!(
            CachedServiceAccount::keep(&sa).restore("team-a", "default"),
            sa
        );
        sa.image_pull_secrets = None;
        sa.metadata.annotations = None;
        assert_eq!(
            CachedServiceAccount::keep(&sa).restore("team-a", "default"),
            sa
        );
    }

    #[test]
    fn a_secret_comes_back_with_its_ownership_type_and_config() {
        let mut secret = Secret {
            metadata: meta("team-a", "acme-pull"),
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some(BTreeMap::from([(
                DOCKER_CONFIG_JSON_KEY.to_string(),
                ByteString(b"{\"auths\":{}}".to_vec()),
            )])),
            ..Secret::default()
        };
        secret.metadata.labels = Some(BTreeMap::from([
            (
                "app.kubernetes.io/managed-by".to_string(),
                "regcred-operator".to_string(),
            ),
            ("regcred.dev/credential".to_string(), "acme".to_string()),
        ]));
        secret.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "regcred.dev/v1alpha1".into(),
            kind: "RegistryCredential".into(),
            name: "acme".into(),
            uid: "u1".into(),
            controller: Some(true),
            block_owner_deletion: None,
        }]);
        let kept = CachedSecret::keep(&secret);
        assert_eq!(kept.restore("team-a", "acme-pull"), secret);
    }

    #[test]
    fn of_a_secret_s_data_only_the_docker_config_is_kept() {
        let secret = Secret {
            metadata: meta("team-a", "acme-pull"),
            data: Some(BTreeMap::from([
                ("notes".to_string(), ByteString(b"theirs".to_vec())),
                (
                    DOCKER_CONFIG_JSON_KEY.to_string(),
                    ByteString(b"{}".to_vec()),
                ),
            ])),
            ..Secret::default()
        };
        let restored = CachedSecret::keep(&secret).restore("team-a", "acme-pull");
        let data = restored.data.unwrap();
        assert_eq!(data.len(), 1);
        assert_eq!(data[DOCKER_CONFIG_JSON_KEY].0, b"{}");
        // A Secret without data, or with data but not ours, stays so.
        let empty = Secret {
            metadata: meta("team-a", "acme-pull"),
            ..Secret::default()
        };
        assert!(
            CachedSecret::keep(&empty)
                .restore("team-a", "acme-pull")
                .data
                .is_none()
        );
        let other = Secret {
            metadata: meta("team-a", "acme-pull"),
            data: Some(BTreeMap::from([(
                "notes".to_string(),
                ByteString(b"x".to_vec()),
            )])),
            ..Secret::default()
        };
        assert_eq!(
            CachedSecret::keep(&other)
                .restore("team-a", "acme-pull")
                .data,
            Some(BTreeMap::new())
        );
    }
}
