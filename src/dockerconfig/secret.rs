//! The Secrets that hold a docker config: the kubelet's two pull-secret types, and `Opaque` with a
//! `.dockerconfigjson` key as External Secrets writes it. Errors name types and keys, never values.

use k8s_openapi::api::core::v1::Secret;

use super::{ConfigError, DockerConfig};

pub const DOCKER_CONFIG_JSON_TYPE: &str = "kubernetes.io/dockerconfigjson";
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
pub const DOCKERCFG_TYPE: &str = "kubernetes.io/dockercfg";
pub const DOCKERCFG_KEY: &str = ".dockercfg";

type Parser = fn(&[u8]) -> Result<DockerConfig, ConfigError>;

pub(crate) fn keys_of(secret: &Secret) -> String {
    let keys: Vec<&str> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .collect();
    if keys.is_empty() {
        "no keys".into()
    } else {
        format!("keys [{}]", keys.join(", "))
    }
}

/// Reads a Secret of one of the two types the kubelet uses as a pull secret
/// (`kubernetes.io/dockerconfigjson`, legacy `kubernetes.io/dockercfg`); `None` for any other type.
pub fn kubelet_config(secret: &Secret) -> Option<Result<DockerConfig, String>> {
    let (key, parse): (&str, Parser) = match secret.type_.as_deref() {
        Some(DOCKER_CONFIG_JSON_TYPE) => {
            (DOCKER_CONFIG_JSON_KEY, DockerConfig::from_dockerconfigjson)
        }
        Some(DOCKERCFG_TYPE) => (DOCKERCFG_KEY, DockerConfig::from_dockercfg),
        _ => return None,
    };
    let type_ = secret.type_.as_deref().unwrap_or_default();
    Some(match secret.data.as_ref().and_then(|d| d.get(key)) {
        Some(bytes) => parse(&bytes.0).map_err(|e| format!("key {key}: {e}")),
        None => Err(format!(
            "type {type_} but key {key} is missing (found {})",
            keys_of(secret)
        )),
    })
}

/// Reads a registry config from a source Secret of any supported shape: the kubelet's two types,
/// or `Opaque` with a `.dockerconfigjson` key (as External Secrets writes it).
pub fn config_from_secret(secret: &Secret) -> Result<DockerConfig, String> {
    if let Some(parsed) = kubelet_config(secret) {
        return parsed;
    }
    match secret.type_.as_deref().unwrap_or("Opaque") {
        "Opaque" => match secret
            .data
            .as_ref()
            .and_then(|d| d.get(DOCKER_CONFIG_JSON_KEY))
        {
            Some(bytes) => DockerConfig::from_dockerconfigjson(&bytes.0)
                .map_err(|e| format!("key {DOCKER_CONFIG_JSON_KEY}: {e}")),
            None => Err(format!(
                "type Opaque with {}; expected type {DOCKER_CONFIG_JSON_TYPE} with key {DOCKER_CONFIG_JSON_KEY} \
                 (create it with `kubectl create secret docker-registry`, not `generic`), or use \
                 spec.source.registries with a passwordSecretRef",
                keys_of(secret)
            )),
        },
        other => Err(format!(
            "type {other} is not a registry credential; expected {DOCKER_CONFIG_JSON_TYPE} (key {DOCKER_CONFIG_JSON_KEY}), \
             {DOCKERCFG_TYPE} (key {DOCKERCFG_KEY}) or Opaque with key {DOCKER_CONFIG_JSON_KEY}"
        )),
    }
}
