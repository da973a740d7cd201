//! Resolving a RegistryCredential's source into a validated docker config.
//!
//! Pure: Secrets come from a lookup function (the watch caches of the allowed source namespaces),
//! so every rule here is unit-tested without a cluster. Error messages name Secrets, keys, types and
//! registries, never values.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;

use crate::{
    api::{CredentialSource, RegistryLogin as LoginSpec},
    dockerconfig::{DockerConfig, RegistryLogin, config_from_secret, keys_of},
};

/// A validated source, ready to be copied.
#[derive(Clone)]
pub(crate) struct ResolvedSource {
    /// Compact JSON of the `.dockerconfigjson` to write.
    pub(crate) data: Vec<u8>,
    /// resourceVersion(s) of the Secret(s) it was built from.
    pub(crate) version: String,
    /// Registries configured (keys of `auths`), for logs and status.
    pub(crate) registries: Vec<String>,
}

impl std::fmt::Debug for ResolvedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedSource")
            .field("version", &self.version)
            .field("registries", &self.registries)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SourceError {
    #[error(
        "Secret {namespace}/{name} is in namespace {namespace:?}, which is not an allowed source namespace of the operator (allowed: {allowed}); move the Secret there or add the namespace with --source-namespaces"
    )]
    NamespaceNotAllowed {
        namespace: String,
        name: String,
        allowed: String,
    },
    #[error("source Secret {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("source Secret {namespace}/{name}: {problem}")]
    Invalid {
        namespace: String,
        name: String,
        problem: String,
    },
}

impl SourceError {
    /// Stable PascalCase reason for conditions, Events and metrics.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            SourceError::NamespaceNotAllowed { .. } => "SourceNamespaceNotAllowed",
            SourceError::NotFound { .. } => "SourceNotFound",
            SourceError::Invalid { .. } => "InvalidSource",
        }
    }
}

/// Every Secret a source reads, as `(namespace, name)`: what the source watches map back from.
pub(crate) fn referenced_secrets(source: &CredentialSource) -> Vec<(&str, &str)> {
    let mut refs: Vec<(&str, &str)> = source
        .secret_ref
        .iter()
        .map(|r| (r.namespace.as_str(), r.name.as_str()))
        .chain(source.registries.iter().flatten().map(|l| {
            (
                l.password_secret_ref.namespace.as_str(),
                l.password_secret_ref.name.as_str(),
            )
        }))
        .chain(
            source
                .ecr
                .iter()
                .filter_map(|e| e.credentials.secret_ref.as_ref())
                .map(|r| (r.namespace.as_str(), r.name.as_str())),
        )
        .collect();
    refs.sort_unstable();
    refs.dedup();
    refs
}

/// Resolves and validates the source. `lookup(namespace, name)` reads the source caches.
pub(crate) fn resolve(
    source: &CredentialSource,
    allowed: &[String],
    lookup: impl Fn(&str, &str) -> Option<Arc<Secret>>,
) -> Result<ResolvedSource, SourceError> {
    let fetch = |namespace: &str, name: &str| -> Result<Arc<Secret>, SourceError> {
        if !allowed.iter().any(|a| a == namespace) {
            return Err(SourceError::NamespaceNotAllowed {
                namespace: namespace.into(),
                name: name.into(),
                allowed: allowed.join(", "),
            });
        }
        lookup(namespace, name).ok_or_else(|| SourceError::NotFound {
            namespace: namespace.into(),
            name: name.into(),
        })
    };
    let invalid = |namespace: &str, name: &str, problem: String| SourceError::Invalid {
        namespace: namespace.into(),
        name: name.into(),
        problem,
    };

    let (config, version) = match (&source.secret_ref, &source.registries, &source.ecr) {
        (Some(r), None, None) => {
            let secret = fetch(&r.namespace, &r.name)?;
            let config =
                config_from_secret(&secret).map_err(|p| invalid(&r.namespace, &r.name, p))?;
            (
                config,
                secret.metadata.resource_version.clone().unwrap_or_default(),
            )
        }
        (None, Some(logins), None) => {
            let mut versions = Vec::new();
            let mut built = Vec::with_capacity(logins.len());
            for login in logins {
                let key_ref = &login.password_secret_ref;
                let secret = fetch(&key_ref.namespace, &key_ref.name)?;
                let password = password_from(&secret, &key_ref.key)
                    .map_err(|p| invalid(&key_ref.namespace, &key_ref.name, p))?;
                versions.push(secret.metadata.resource_version.clone().unwrap_or_default());
                built.push(login_of(login, password));
            }
            versions.sort_unstable();
            versions.dedup();
            let config = DockerConfig::from_logins(&built).map_err(|e| SourceError::Invalid {
                namespace: "spec".into(),
                name: "source.registries".into(),
                problem: e.to_string(),
            })?;
            (config, versions.join(","))
        }
        // The CRD's validation rejects both and neither; an object stored before that rule
        // existed still gets a clear answer.
        _ => {
            return Err(SourceError::Invalid {
                namespace: "spec".into(),
                name: "source".into(),
                problem:
                    "exactly one of source.secretRef, source.registries or source.ecr must be set"
                        .into(),
            });
        }
    };
    Ok(ResolvedSource {
        data: config.to_json(),
        version,
        registries: config.registries().map(str::to_string).collect(),
    })
}

fn login_of(spec: &LoginSpec, password: String) -> RegistryLogin {
    RegistryLogin {
        server: spec.server.clone(),
        username: spec.username.clone(),
        password,
        email: spec.email.clone().filter(|e| !e.is_empty()),
    }
}

fn password_from(secret: &Secret, key: &str) -> Result<String, String> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| format!("key {key:?} not found (found {})", keys_of(secret)))?;
    let text =
        std::str::from_utf8(&bytes.0).map_err(|_| format!("key {key:?} is not UTF-8 text"))?;
    // Files written by editors end in a newline that is never part of a password.
    let text = text
        .strip_suffix('\n')
        .map_or(text, |t| t.strip_suffix('\r').unwrap_or(t));
    if text.is_empty() {
        return Err(format!("key {key:?} is empty"));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{SecretKeyReference, SecretReference};
    use crate::dockerconfig::{DOCKER_CONFIG_JSON_TYPE, DOCKERCFG_TYPE};
    use crate::testing::secret_object;

    const PASSWORD: &str = "s3cr3t-PASSWORD";

    fn secret(ns: &str, name: &str, type_: &str, data: &[(&str, &[u8])]) -> Arc<Secret> {
        let mut s = secret_object(ns, name, type_, data);
        s.metadata.resource_version = Some("7".into());
        Arc::new(s)
    }

    fn by_ref(ns: &str, name: &str) -> CredentialSource {
        CredentialSource {
            secret_ref: Some(SecretReference {
                namespace: ns.into(),
                name: name.into(),
            }),
            registries: None,
            ecr: None,
        }
    }

    fn allowed() -> Vec<String> {
        vec!["regcred-system".into()]
    }

    fn good_json() -> Vec<u8> {
        format!(r#"{{"auths":{{"r.io":{{"username":"u","password":"{PASSWORD}"}}}}}}"#).into_bytes()
    }

    #[allow(clippy::needless_pass_by_value, reason = "called with fresh Arcs")]
    fn resolve_one(s: Arc<Secret>) -> Result<ResolvedSource, SourceError> {
        let (ns, name) = (
            s.metadata.namespace.clone().unwrap(),
            s.metadata.name.clone().unwrap(),
        );
        resolve(&by_ref(&ns, &name), &allowed(), |n, m| {
            (n == ns && m == name).then(|| s.clone())
        })
    }

    #[test]
    fn dockerconfigjson_source() {
        let r = resolve_one(secret(
            "regcred-system",
            "s",
            DOCKER_CONFIG_JSON_TYPE,
            &[(".dockerconfigjson", &good_json())],
        ))
        .unwrap();
        assert_eq!(r.version, "7");
        assert_eq!(r.registries, ["r.io"]);
        let v: serde_json::Value = serde_json::from_slice(&r.data).unwrap();
        assert_eq!(v["auths"]["r.io"]["username"], "u");
    }

    #[test]
    fn opaque_with_dockerconfigjson_key_is_accepted() {
        assert!(
            resolve_one(secret(
                "regcred-system",
                "s",
                "Opaque",
                &[(".dockerconfigjson", &good_json())]
            ))
            .is_ok()
        );
    }

    #[test]
    fn legacy_dockercfg_is_converted() {
        let cfg = format!(r#"{{"r.io":{{"username":"u","password":"{PASSWORD}"}}}}"#);
        let r = resolve_one(secret(
            "regcred-system",
            "s",
            DOCKERCFG_TYPE,
            &[(".dockercfg", cfg.as_bytes())],
        ))
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.data).unwrap();
        assert_eq!(v["auths"]["r.io"]["username"], "u");
    }

    #[test]
    fn generic_secret_with_username_password_is_explained() {
        let err = resolve_one(secret(
            "regcred-system",
            "s",
            "Opaque",
            &[("username", b"u"), ("password", PASSWORD.as_bytes())],
        ))
        .unwrap_err();
        assert_eq!(err.reason(), "InvalidSource");
        let msg = err.to_string();
        assert!(
            msg.contains("keys [password, username]") && msg.contains("docker-registry"),
            "{msg}"
        );
        assert!(!msg.contains(PASSWORD));
    }

    #[test]
    fn wrong_type_and_missing_key() {
        let err = resolve_one(secret(
            "regcred-system",
            "s",
            "kubernetes.io/tls",
            &[("tls.crt", b"x")],
        ))
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("kubernetes.io/tls is not a registry credential"),
            "{err}"
        );
        let err = resolve_one(secret(
            "regcred-system",
            "s",
            DOCKER_CONFIG_JSON_TYPE,
            &[("other", b"x")],
        ))
        .unwrap_err();
        assert!(
            err.to_string().contains("key .dockerconfigjson is missing"),
            "{err}"
        );
    }

    #[test]
    fn invalid_config_names_the_key_not_the_value() {
        let err = resolve_one(secret(
            "regcred-system",
            "s",
            DOCKER_CONFIG_JSON_TYPE,
            &[(".dockerconfigjson", b"not json")],
        ))
        .unwrap_err();
        assert_eq!(err.reason(), "InvalidSource");
        assert!(
            err.to_string()
                .starts_with("source Secret regcred-system/s: key .dockerconfigjson:"),
            "{err}"
        );
    }

    #[test]
    fn namespace_outside_allow_list_is_refused_before_lookup() {
        let err = resolve(&by_ref("kube-system", "s"), &allowed(), |_, _| {
            panic!("must not be read")
        })
        .unwrap_err();
        assert_eq!(err.reason(), "SourceNamespaceNotAllowed");
        assert!(err.to_string().contains("allowed: regcred-system"), "{err}");
    }

    #[test]
    fn missing_source() {
        let err = resolve(&by_ref("regcred-system", "nope"), &allowed(), |_, _| None).unwrap_err();
        assert_eq!(
            err,
            SourceError::NotFound {
                namespace: "regcred-system".into(),
                name: "nope".into()
            }
        );
    }

    fn logins(key: &str) -> CredentialSource {
        CredentialSource {
            secret_ref: None,
            registries: Some(vec![LoginSpec {
                server: "registry.example.com".into(),
                username: "robot".into(),
                password_secret_ref: SecretKeyReference {
                    namespace: "regcred-system".into(),
                    name: "token".into(),
                    key: key.into(),
                },
                email: Some("ops@example.com".into()),
            }]),
            ecr: None,
        }
    }

    #[test]
    fn registries_source_matches_kubectl_create_secret_docker_registry() {
        let pw = format!("{PASSWORD}\n");
        let s = secret(
            "regcred-system",
            "token",
            "Opaque",
            &[("password", pw.as_bytes())],
        );
        let r = resolve(&logins("password"), &allowed(), |_, _| Some(s.clone())).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.data).unwrap();
        let entry = &v["auths"]["registry.example.com"];
        assert_eq!(entry["username"], "robot");
        assert_eq!(
            entry["password"], PASSWORD,
            "a trailing newline is not part of the password"
        );
        assert_eq!(entry["email"], "ops@example.com");
        use base64::Engine;
        assert_eq!(
            entry["auth"],
            base64::engine::general_purpose::STANDARD.encode(format!("robot:{PASSWORD}"))
        );
        assert_eq!(r.version, "7");
    }

    #[test]
    fn registries_source_with_missing_key() {
        let s = secret(
            "regcred-system",
            "token",
            "Opaque",
            &[("password", PASSWORD.as_bytes())],
        );
        let err = resolve(&logins("token"), &allowed(), |_, _| Some(s.clone())).unwrap_err();
        assert_eq!(err.reason(), "InvalidSource");
        assert!(
            err.to_string()
                .contains("key \"token\" not found (found keys [password])"),
            "{err}"
        );
    }

    #[test]
    fn referenced_secrets_are_deduplicated() {
        let mut src = logins("password");
        let mut second = src.registries.as_ref().unwrap()[0].clone();
        second.server = "other.io".into();
        src.registries.as_mut().unwrap().push(second);
        assert_eq!(referenced_secrets(&src), [("regcred-system", "token")]);
    }
}
