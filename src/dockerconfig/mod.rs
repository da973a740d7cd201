//! The docker config held by registry-credential Secrets: parse, validate and
//! build.
//!
//! A `kubernetes.io/dockerconfigjson` Secret holds `{"auths": {KEY: ENTRY}}`
//! under `.dockerconfigjson`; the legacy `kubernetes.io/dockercfg` type holds
//! the bare `{KEY: ENTRY}` map under `.dockercfg`. Both are read into
//! [`DockerConfig`], which always writes the `.dockerconfigjson` form.
//!
//! This module handles credentials. Nothing here prints them: [`DockerConfig`]
//! and [`RegistryLogin`] have hand-written `Debug` impls, and [`ConfigError`]
//! messages name only registry keys, field names and the kind of problem,
//! never a value, a decoded `auth` or a fragment of the input.

mod secret;

pub use secret::*;
use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::kubelet::{RegistryKey, RegistryKeyError, redact_key};

/// Decodes a padded `auth` value like Go's `base64.StdEncoding` (which the
/// kubelet uses when the value ends in `=`): padding required, non-zero
/// trailing bits tolerated.
const AUTH_PADDED: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// Decodes an unpadded `auth` value like Go's `base64.RawStdEncoding` (which
/// recent kubelets use when the value does not end in `=`).
const AUTH_UNPADDED: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// The entry fields that must be strings when present, in the order they are
/// checked. `email` is included because the kubelet fails to read the whole
/// Secret when it is not a string.
const STRING_FIELDS: [&str; 6] = [
    "auth",
    "username",
    "password",
    "email",
    "identitytoken",
    "registrytoken",
];

/// A validated docker config: registry keys mapped to their entries.
///
/// * Every field of every entry is kept verbatim, unknown ones included.
///   Values are kept as JSON values, not as text: insignificant whitespace,
///   string escapes and the spelling of numbers are not preserved, and integers
///   beyond 64 bits or floats may lose precision (serde_json without
///   `arbitrary_precision`). Docker configs hold strings, so this does not
///   matter in practice.
/// * Top-level fields other than `auths` (`credHelpers`, `credsStore`,
///   `HttpHeaders`, ...) are dropped: the kubelet reads only `auths`, and they
///   are meaningless (or harmful) inside a cluster.
/// * Keys are kept as written, not normalised. Two keys that normalise to the
///   same [`RegistryKey`] (such as `https://index.docker.io/v1/` and
///   `index.docker.io`) are both kept, as the kubelet keeps both.
/// * When the input repeats a JSON key, the last occurrence wins, as in Go.
///
/// Every constructor validates (see [`ConfigError`] for what is checked), so a
/// `DockerConfig` always has at least one registry and every entry has usable
/// credentials.
///
/// `Debug` prints only the registry keys.
#[derive(Clone, PartialEq, Eq)]
pub struct DockerConfig {
    auths: BTreeMap<String, Map<String, Value>>,
}

/// The user name and password of one entry, for talking to the registry.
///
/// `Debug` shows the password as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// One `kubectl create secret docker-registry` login.
///
/// `Debug` shows the password as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryLogin {
    /// The registry key, used as given (`--docker-server`).
    pub server: String,
    /// `--docker-username`.
    pub username: String,
    /// `--docker-password`.
    pub password: String,
    /// `--docker-email`; omitted from the config when `None` or empty.
    pub email: Option<String>,
}

/// Why a docker config was rejected.
///
/// The checks run in this order and the first problem is reported:
///
/// 1. the content is UTF-8 JSON, an object, with an `auths` object (for
///    `.dockerconfigjson`) that is not empty;
/// 2. every registry key parses with [`RegistryKey::parse`];
/// 3. every entry is an object with usable credentials: a non-empty `auth`
///    that is base64 of `user:password` with a non-empty user, or non-empty
///    `username` and `password`, or a non-empty `identitytoken` or
///    `registrytoken`. `auth`, `username`, `password`, `email`,
///    `identitytoken` and `registrytoken` must be strings when present
///    (`null` and `""` count as absent, as in the kubelet);
/// 4. when `auth` and `username`/`password` are both given they agree.
///
/// Messages never contain credentials or input text: only registry keys
/// (with any `user:password@`, query or fragment redacted, and shortened to
/// 256 characters), field names and a description of the problem.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ConfigError {
    /// The content is not UTF-8.
    #[error("the docker config is not valid UTF-8")]
    NotUtf8,
    /// The content is not JSON; the position of the first syntax error.
    #[error("the docker config is not valid JSON (syntax error at line {line}, column {column})")]
    NotJson { line: usize, column: usize },
    /// The JSON document is not an object.
    #[error("the docker config is not a JSON object")]
    NotAnObject,
    /// A `.dockerconfigjson` document has no `auths` field.
    #[error("the docker config has no \"auths\" field")]
    MissingAuths,
    /// The `auths` field is not an object.
    #[error("the \"auths\" field of the docker config is not a JSON object")]
    AuthsNotAnObject,
    /// The config names no registry.
    #[error("the docker config has no registries configured")]
    NoRegistries,
    /// A registry key does not parse. `key` is redacted like the message.
    #[error("{source}")]
    InvalidRegistryKey {
        key: String,
        source: RegistryKeyError,
    },
    /// An entry is not an object.
    #[error("the entry for registry {registry:?} is not a JSON object")]
    EntryNotAnObject { registry: String },
    /// An entry has no usable credentials.
    #[error(
        "the entry for registry {registry:?} has no usable credentials: expected auth, username and password, identitytoken or registrytoken"
    )]
    NoCredentials { registry: String },
    /// A credential field is not a string.
    #[error("the field {field:?} of the entry for registry {registry:?} is not a string")]
    FieldNotAString {
        registry: String,
        field: &'static str,
    },
    /// `auth` is not standard base64.
    #[error("the auth field of the entry for registry {registry:?} is not valid base64")]
    AuthNotBase64 { registry: String },
    /// `auth` decodes, but not to `user:password`.
    #[error(
        "the auth field of the entry for registry {registry:?} is not base64 of user:password: {reason}"
    )]
    AuthMalformed {
        registry: String,
        reason: &'static str,
    },
    /// `auth` and `username`/`password` name different credentials.
    #[error(
        "the entry for registry {registry:?} has an auth field that disagrees with its username and password"
    )]
    AuthDisagrees { registry: String },
    /// [`DockerConfig::from_logins`] got the same server twice.
    #[error("the registry server {server:?} is given more than once")]
    DuplicateServer { server: String },
}

impl DockerConfig {
    /// Reads the content of a `.dockerconfigjson` key:
    /// `{"auths": {KEY: ENTRY, ...}, ...}`.
    pub fn from_dockerconfigjson(bytes: &[u8]) -> Result<DockerConfig, ConfigError> {
        let mut top = parse_object(bytes)?;
        match top.remove("auths") {
            None => Err(ConfigError::MissingAuths),
            Some(Value::Object(auths)) => Self::from_auths(auths),
            Some(_) => Err(ConfigError::AuthsNotAnObject),
        }
    }

    /// Reads the content of a legacy `.dockercfg` key, whose object is the
    /// `auths` map itself: `{KEY: ENTRY, ...}`.
    pub fn from_dockercfg(bytes: &[u8]) -> Result<DockerConfig, ConfigError> {
        Self::from_auths(parse_object(bytes)?)
    }

    /// Builds what `kubectl create secret docker-registry --docker-server S
    /// --docker-username U --docker-password P [--docker-email E]` builds:
    /// `{"auths":{"S":{"username":"U","password":"P","email":"E","auth":"base64(U:P)"}}}`,
    /// one entry per login. Like kubectl, empty strings are omitted.
    ///
    /// [`DockerConfig::to_json`] writes keys sorted, so the bytes differ from
    /// kubectl's only in field order (and in that Go escapes `<`, `>` and
    /// `&` in strings as `\u003c` etc.); the JSON value is the same.
    pub fn from_logins(logins: &[RegistryLogin]) -> Result<DockerConfig, ConfigError> {
        let mut auths = BTreeMap::new();
        for login in logins {
            if auths.contains_key(&login.server) {
                return Err(ConfigError::DuplicateServer {
                    server: redact_key(&login.server),
                });
            }
            let mut entry = Map::new();
            let mut put = |field: &str, value: &str| {
                if !value.is_empty() {
                    entry.insert(field.to_owned(), Value::String(value.to_owned()));
                }
            };
            put("username", &login.username);
            put("password", &login.password);
            put("email", login.email.as_deref().unwrap_or(""));
            put(
                "auth",
                &STANDARD.encode(format!("{}:{}", login.username, login.password)),
            );
            auths.insert(login.server.clone(), entry);
        }
        let config = DockerConfig { auths };
        config.validate()?;
        Ok(config)
    }

    /// The config as compact `.dockerconfigjson` content, `{"auths":{...}}`,
    /// with object keys sorted at every level; the same config always gives the
    /// same bytes.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Wire<'a> {
            auths: &'a BTreeMap<String, Map<String, Value>>,
        }
        serde_json::to_vec(&Wire { auths: &self.auths })
            .expect("a map of JSON values with string keys always serialises")
    }

    /// The registry keys, as written in the input, in sorted order.
    pub fn registries(&self) -> impl Iterator<Item = &str> {
        self.auths.keys().map(String::as_str)
    }

    /// The number of registry keys (at least one for a validated config).
    /// The credentials of the entry `registry` (a key as written): `username`/`password`, or
    /// the decoded `auth`. `None` for token-only entries and unknown keys.
    pub fn credentials(&self, registry: &str) -> Option<Credentials> {
        let entry = self.auths.get(registry)?;
        let fields = CredentialFields::read(registry, entry).ok()?;
        if let (Some(username), Some(password)) = (fields.username, fields.password) {
            return Some(Credentials {
                username: username.into(),
                password: password.into(),
            });
        }
        let (username, password) = decode_auth(registry, fields.auth?).ok()?;
        Some(Credentials { username, password })
    }

    pub fn len(&self) -> usize {
        self.auths.len()
    }

    /// Whether there are no registry keys (never true for a validated config).
    pub fn is_empty(&self) -> bool {
        self.auths.is_empty()
    }

    /// Checks the config; see [`ConfigError`] for the checks and their order.
    fn validate(&self) -> Result<(), ConfigError> {
        validate_entries(self.auths.iter().map(|(k, v)| (k.as_str(), Some(v))))
    }

    /// Validates a raw `auths` map and converts it. The raw map is validated
    /// with the same code as [`DockerConfig::validate`], before conversion, so
    /// that a non-object entry is reported in its place in the check order.
    fn from_auths(auths: Map<String, Value>) -> Result<DockerConfig, ConfigError> {
        validate_entries(auths.iter().map(|(k, v)| (k.as_str(), v.as_object())))?;
        let mut out = BTreeMap::new();
        for (registry, entry) in auths {
            match entry {
                Value::Object(entry) => {
                    out.insert(registry, entry);
                }
                // Already rejected by validate_entries.
                _ => return Err(ConfigError::EntryNotAnObject { registry }),
            }
        }
        Ok(DockerConfig { auths: out })
    }
}

impl fmt::Debug for DockerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerConfig")
            .field("registries", &self.auths.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryLogin")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &format_args!("<redacted>"))
            .field("email", &self.email)
            .finish()
    }
}

/// Parses UTF-8 JSON that must be an object. serde_json's error text is not
/// used (only its position), so no input can reach the message.
fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ConfigError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ConfigError::NotUtf8)?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ConfigError::NotAnObject),
        Err(e) => Err(ConfigError::NotJson {
            line: e.line(),
            column: e.column(),
        }),
    }
}

/// The checks of [`ConfigError`], over `(key, entry)` pairs where the entry is
/// `None` when it is not a JSON object.
fn validate_entries<'a, I>(entries: I) -> Result<(), ConfigError>
where
    I: Iterator<Item = (&'a str, Option<&'a Map<String, Value>>)> + Clone,
{
    if entries.clone().next().is_none() {
        return Err(ConfigError::NoRegistries);
    }
    for (key, _) in entries.clone() {
        RegistryKey::parse(key).map_err(|source| ConfigError::InvalidRegistryKey {
            key: redact_key(key),
            source,
        })?;
    }
    for (key, entry) in entries.clone() {
        let registry = || redact_key(key);
        let entry = entry.ok_or_else(|| ConfigError::EntryNotAnObject {
            registry: registry(),
        })?;
        let fields = CredentialFields::read(key, entry)?;
        let decoded = fields.auth.map(|auth| decode_auth(key, auth)).transpose()?;
        let usable = decoded.is_some()
            || (fields.username.is_some() && fields.password.is_some())
            || fields.identitytoken.is_some()
            || fields.registrytoken.is_some();
        if !usable {
            return Err(ConfigError::NoCredentials {
                registry: registry(),
            });
        }
    }
    for (key, entry) in entries {
        // Every entry is an object with well-formed fields by now.
        let Some(entry) = entry else { continue };
        let fields = CredentialFields::read(key, entry)?;
        let Some(auth) = fields.auth else { continue };
        let (user, password) = decode_auth(key, auth)?;
        let user_differs = fields.username.is_some_and(|u| u != user);
        let password_differs = fields.password.is_some_and(|p| p != password);
        if user_differs || password_differs {
            return Err(ConfigError::AuthDisagrees {
                registry: redact_key(key),
            });
        }
    }
    Ok(())
}

/// The credential fields of one entry; `None` when absent, `null` or empty.
struct CredentialFields<'a> {
    auth: Option<&'a str>,
    username: Option<&'a str>,
    password: Option<&'a str>,
    identitytoken: Option<&'a str>,
    registrytoken: Option<&'a str>,
}

impl<'a> CredentialFields<'a> {
    fn read(registry: &str, entry: &'a Map<String, Value>) -> Result<Self, ConfigError> {
        for field in STRING_FIELDS {
            match entry.get(field) {
                None | Some(Value::Null | Value::String(_)) => {}
                Some(_) => {
                    return Err(ConfigError::FieldNotAString {
                        registry: redact_key(registry),
                        field,
                    });
                }
            }
        }
        let get = |field: &str| {
            entry
                .get(field)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        Ok(CredentialFields {
            auth: get("auth"),
            username: get("username"),
            password: get("password"),
            identitytoken: get("identitytoken"),
            registrytoken: get("registrytoken"),
        })
    }
}

/// Decodes `auth` into `(user, password)` the way the kubelet does, but also
/// requires UTF-8 and a non-empty user.
fn decode_auth(registry: &str, auth: &str) -> Result<(String, String), ConfigError> {
    let engine = if auth.ends_with('=') {
        &AUTH_PADDED
    } else {
        &AUTH_UNPADDED
    };
    let bytes = engine
        .decode(auth)
        .map_err(|_| ConfigError::AuthNotBase64 {
            registry: redact_key(registry),
        })?;
    let malformed = |reason| ConfigError::AuthMalformed {
        registry: redact_key(registry),
        reason,
    };
    let text = String::from_utf8(bytes).map_err(|_| malformed("it is not UTF-8"))?;
    let (user, password) = text
        .split_once(':')
        .ok_or_else(|| malformed("there is no ':'"))?;
    if user.is_empty() {
        return Err(malformed("the user name is empty"));
    }
    Ok((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
