//! The bytes of a pull Secret's `.dockerconfigjson` or `.dockercfg`, read the
//! way the operator reads a Secret.
//!
//! Invariants: no panic; the Secret readers agree with the parsers; an
//! accepted config has at least one parseable key, `Debug` shows only its keys
//! and its output reads back as the same config; an error never shows a
//! credential of the input (only registry keys, field names and positions).

#![no_main]

use std::collections::BTreeMap;
use std::error::Error as _;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use libfuzzer_sys::fuzz_target;
use regcred_operator::dockerconfig::{ConfigError, DockerConfig};
use regcred_operator::kubelet::{RegistryKey, RegistryKeyError};
use regcred_operator::dockerconfig::{
    DOCKER_CONFIG_JSON_KEY, DOCKER_CONFIG_JSON_TYPE, DOCKERCFG_KEY, DOCKERCFG_TYPE,
    config_from_secret, kubelet_config,
};
use serde_json::Value;

fn secret(type_: &str, key: &str, bytes: &[u8]) -> Secret {
    Secret {
        type_: Some(type_.to_owned()),
        data: Some(BTreeMap::from([(
            key.to_owned(),
            ByteString(bytes.to_vec()),
        )])),
        ..Secret::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let json = DockerConfig::from_dockerconfigjson(data);
    let cfg = DockerConfig::from_dockercfg(data);

    // The Secret readers use the same parsers and only add the data key.
    let wrap = |key: &str, r: &Result<DockerConfig, ConfigError>| {
        r.clone().map_err(|e| format!("key {key}: {e}"))
    };
    let by_type = kubelet_config(&secret(
        DOCKER_CONFIG_JSON_TYPE,
        DOCKER_CONFIG_JSON_KEY,
        data,
    ));
    assert_eq!(by_type, Some(wrap(DOCKER_CONFIG_JSON_KEY, &json)));
    let by_type = kubelet_config(&secret(DOCKERCFG_TYPE, DOCKERCFG_KEY, data));
    assert_eq!(by_type, Some(wrap(DOCKERCFG_KEY, &cfg)));
    let opaque = config_from_secret(&secret("Opaque", DOCKER_CONFIG_JSON_KEY, data));
    assert_eq!(opaque, wrap(DOCKER_CONFIG_JSON_KEY, &json));

    let input = Input::read(data);
    for parsed in [&json, &cfg] {
        match parsed {
            Ok(config) => check_accepted(config),
            Err(e) => check_error(e, &input),
        }
    }
});

fn check_accepted(config: &DockerConfig) {
    assert!(!config.is_empty());
    assert_eq!(config.len(), config.registries().count());
    let keys: Vec<&str> = config.registries().collect();
    for key in &keys {
        assert!(
            RegistryKey::parse(key).is_ok(),
            "accepted key {key:?} does not parse"
        );
    }
    assert_eq!(
        format!("{config:?}"),
        format!("DockerConfig {{ registries: {keys:?} }}")
    );
    for key in &keys {
        if let Some(c) = config.credentials(key) {
            assert!(!c.username.is_empty());
            assert_eq!(
                format!("{c:?}"),
                format!(
                    "Credentials {{ username: {:?}, password: \"<redacted>\" }}",
                    c.username
                )
            );
        }
    }
    // The output reads back as the same config (floats compared loosely:
    // serde_json reads them with best-effort precision, as DockerConfig says).
    let out = config.to_json();
    let again = DockerConfig::from_dockerconfigjson(&out)
        .unwrap_or_else(|e| panic!("the output does not read back: {e}"));
    assert_eq!(again.registries().collect::<Vec<_>>(), keys);
    let value: Value = serde_json::from_slice(&out).unwrap();
    if has_float(&value) {
        let again: Value = serde_json::from_slice(&again.to_json()).unwrap();
        assert_eq!(mask_floats(again), mask_floats(value));
    } else {
        assert_eq!(&again, config);
        assert_eq!(again.to_json(), out);
    }
    for key in &keys {
        assert_eq!(again.credentials(key), config.credentials(key));
    }
}

/// What of the input may and may not show in an error.
struct Input {
    /// Every object key of the input, at any depth (registry keys may show).
    keys: Vec<String>,
    /// Credential values: `auth`, `password`, the tokens, and the password
    /// decoded from `auth`.
    secrets: Vec<String>,
}

impl Input {
    fn read(data: &[u8]) -> Input {
        let mut input = Input {
            keys: Vec::new(),
            secrets: Vec::new(),
        };
        if let Ok(value) = serde_json::from_slice::<Value>(data) {
            input.walk(&value);
        }
        input
    }

    fn walk(&mut self, value: &Value) {
        match value {
            Value::Array(a) => a.iter().for_each(|v| self.walk(v)),
            Value::Object(o) => {
                for (k, v) in o {
                    self.keys.push(k.clone());
                    if let Value::String(s) = v {
                        match k.as_str() {
                            "password" | "identitytoken" | "registrytoken" => {
                                self.secrets.push(s.clone())
                            }
                            "auth" => {
                                self.secrets.push(s.clone());
                                for engine in [&STANDARD, &STANDARD_NO_PAD] {
                                    if let Ok(bytes) = engine.decode(s) {
                                        let text = String::from_utf8_lossy(&bytes).into_owned();
                                        if let Some((_, password)) = text.split_once(':') {
                                            self.secrets.push(password.to_owned());
                                        }
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                    self.walk(v);
                }
            }
            _ => {}
        }
    }
}

/// Every text an error can be shown as.
fn texts(e: &ConfigError) -> String {
    let mut text = format!("{e} {e:?} {e:#?}");
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(" {s} {s:?}"));
        source = s.source();
    }
    text
}

/// The error with every quoted key blanked: what it says about anything but
/// the keys.
fn skeleton(e: &ConfigError) -> ConfigError {
    let mut e = e.clone();
    match &mut e {
        ConfigError::InvalidRegistryKey { key, source } => {
            key.clear();
            match source {
                RegistryKeyError::Empty => {}
                RegistryKeyError::Whitespace { key }
                | RegistryKeyError::UnsupportedScheme { key, .. }
                | RegistryKeyError::UserInfo { key }
                | RegistryKeyError::QueryOrFragment { key }
                | RegistryKeyError::MissingHost { key }
                | RegistryKeyError::InvalidHost { key, .. }
                | RegistryKeyError::InvalidPort { key }
                | RegistryKeyError::InvalidPath { key, .. } => key.clear(),
            }
            if let RegistryKeyError::UnsupportedScheme { scheme, .. } = source {
                scheme.clear();
            }
        }
        ConfigError::EntryNotAnObject { registry }
        | ConfigError::NoCredentials { registry }
        | ConfigError::FieldNotAString { registry, .. }
        | ConfigError::AuthNotBase64 { registry }
        | ConfigError::AuthMalformed { registry, .. }
        | ConfigError::AuthDisagrees { registry } => registry.clear(),
        ConfigError::DuplicateServer { server } => server.clear(),
        ConfigError::NotUtf8
        | ConfigError::NotJson { .. }
        | ConfigError::NotAnObject
        | ConfigError::MissingAuths
        | ConfigError::AuthsNotAnObject
        | ConfigError::NoRegistries => {}
    }
    e
}

fn check_error(e: &ConfigError, input: &Input) {
    // Entry errors name a key of the input as written.
    match e {
        ConfigError::EntryNotAnObject { registry }
        | ConfigError::NoCredentials { registry }
        | ConfigError::FieldNotAString { registry, .. }
        | ConfigError::AuthNotBase64 { registry }
        | ConfigError::AuthMalformed { registry, .. }
        | ConfigError::AuthDisagrees { registry } => {
            // Shortened to 256 characters and '…' when longer.
            let named = match registry.strip_suffix('…') {
                Some(start) if registry.chars().count() == 257 => input
                    .keys
                    .iter()
                    .any(|k| k.starts_with(start) && k.chars().count() > 256),
                _ => input.keys.contains(registry) && RegistryKey::parse(registry).is_ok(),
            };
            assert!(named, "{registry:?} is not a key of the input");
        }
        ConfigError::InvalidRegistryKey { key, source } => {
            assert_eq!(source.key().is_none(), *source == RegistryKeyError::Empty);
            assert!(key.chars().count() <= 257, "{key:?}");
        }
        _ => {}
    }
    let text = texts(e);
    let skeleton = texts(&skeleton(e));
    for secret in &input.secrets {
        // Too short to tell apart from the message or a key.
        if secret.chars().count() < 4
            || skeleton.contains(secret.as_str())
            || input.keys.iter().any(|k| k.contains(secret.as_str()))
        {
            continue;
        }
        assert!(
            !text.contains(secret.as_str()),
            "credential {secret:?} shown in {text}"
        );
    }
}

fn has_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_f64(),
        Value::Array(a) => a.iter().any(has_float),
        Value::Object(o) => o.values().any(has_float),
        _ => false,
    }
}

fn mask_floats(v: Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => Value::String("<float>".into()),
        Value::Array(a) => Value::Array(a.into_iter().map(mask_floats).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, mask_floats(v))).collect())
        }
        v => v,
    }
}
