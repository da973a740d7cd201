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
                None | Some(Value::Null) | Some(Value::String(_)) => {}
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
mod tests {
    use super::*;
    use std::error::Error as _;

    const SECRET: &str = "s3cr3t-PASSWORD";

    fn b64(s: &str) -> String {
        STANDARD.encode(s)
    }

    fn json(config: &DockerConfig) -> String {
        String::from_utf8(config.to_json()).unwrap()
    }

    fn parse(text: &str) -> Result<DockerConfig, ConfigError> {
        DockerConfig::from_dockerconfigjson(text.as_bytes())
    }

    fn parse_ok(text: &str) -> DockerConfig {
        parse(text).unwrap_or_else(|e| panic!("{text} should parse: {e}"))
    }

    fn parse_err(text: &str) -> ConfigError {
        match parse(text) {
            Ok(c) => panic!("{text} should be rejected, got {c:?}"),
            Err(e) => e,
        }
    }

    fn login(server: &str, username: &str, password: &str, email: Option<&str>) -> RegistryLogin {
        RegistryLogin {
            server: server.to_owned(),
            username: username.to_owned(),
            password: password.to_owned(),
            email: email.map(str::to_owned),
        }
    }

    /// A config with one entry for "r.io".
    fn entry(entry: &str) -> String {
        format!(r#"{{"auths":{{"r.io":{entry}}}}}"#)
    }

    // ---- parsing and output ----

    #[test]
    fn round_trip_preserves_unknown_fields() {
        let input = r#"{
            "auths": {
                "r.io": {
                    "auth": "dTpw",
                    "x-custom": {"nested": [1, true, null, "s"]},
                    "email": "e@x",
                    "serveraddress": "https://r.io"
                }
            }
        }"#;
        let config = parse_ok(input);
        assert_eq!(
            json(&config),
            r#"{"auths":{"r.io":{"auth":"dTpw","email":"e@x","serveraddress":"https://r.io","x-custom":{"nested":[1,true,null,"s"]}}}}"#
        );
        // Reading the output again gives the same config and the same bytes.
        let again = DockerConfig::from_dockerconfigjson(&config.to_json()).unwrap();
        assert_eq!(again, config);
        assert_eq!(again.to_json(), config.to_json());
    }

    #[test]
    fn output_is_compact_and_sorted() {
        let config = parse_ok(&format!(
            r#"{{ "auths" : {{ "z.io" : {{ "password":"p", "username":"u" }},
                 "a.io" : {{ "auth" : "{}" }} }} }}"#,
            b64("u:p")
        ));
        let out = json(&config);
        assert_eq!(
            out,
            r#"{"auths":{"a.io":{"auth":"dTpw"},"z.io":{"password":"p","username":"u"}}}"#
        );
        assert!(!out.contains(' ') && !out.contains('\n'));
        assert_eq!(config.registries().collect::<Vec<_>>(), ["a.io", "z.io"]);
        assert_eq!(config.len(), 2);
        assert!(!config.is_empty());
    }

    #[test]
    fn other_top_level_fields_are_dropped() {
        let config = parse_ok(
            r#"{"auths":{"r.io":{"auth":"dTpw"}},"credHelpers":{"gcr.io":"gcloud"},"credsStore":"desktop","HttpHeaders":{"X":"y"}}"#,
        );
        assert_eq!(json(&config), r#"{"auths":{"r.io":{"auth":"dTpw"}}}"#);
    }

    #[test]
    fn keys_are_kept_as_written_even_when_equivalent() {
        let config = parse_ok(
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},"index.docker.io":{"auth":"dTpw"},"R.IO/v2/":{"auth":"dTpw"}}}"#,
        );
        assert_eq!(
            config.registries().collect::<Vec<_>>(),
            ["R.IO/v2/", "https://index.docker.io/v1/", "index.docker.io"]
        );
    }

    #[test]
    fn duplicate_json_keys_last_wins() {
        let config = parse_ok(r#"{"auths":{"r.io":{"auth":"!!"},"r.io":{"auth":"dTpw"}}}"#);
        assert_eq!(json(&config), r#"{"auths":{"r.io":{"auth":"dTpw"}}}"#);
    }

    #[test]
    fn unicode_and_escapes_survive() {
        let config = parse_ok(
            r#"{"auths":{"r.io":{"username":"\u00fcser","password":"p\"w\\d\n","note":"<&>"}}}"#,
        );
        let again = DockerConfig::from_dockerconfigjson(&config.to_json()).unwrap();
        assert_eq!(again, config);
        assert_eq!(
            json(&config),
            "{\"auths\":{\"r.io\":{\"note\":\"<&>\",\"password\":\"p\\\"w\\\\d\\n\",\"username\":\"üser\"}}}"
        );
    }

    #[test]
    fn every_kind_of_credentials_is_usable() {
        parse_ok(&entry(r#"{"auth":"dTpw"}"#));
        parse_ok(&entry(r#"{"username":"u","password":"p"}"#));
        parse_ok(&entry(r#"{"identitytoken":"tok"}"#));
        parse_ok(&entry(r#"{"registrytoken":"tok"}"#));
        parse_ok(&entry(
            r#"{"auth":"dTpw","username":"u","password":"p","email":"e"}"#,
        ));
        // An empty password is allowed inside auth ("u:").
        parse_ok(&entry(&format!(r#"{{"auth":"{}"}}"#, b64("u:"))));
        // A ':' in the password is fine: only the first ':' separates.
        parse_ok(&entry(&format!(
            r#"{{"auth":"{}","username":"u","password":"a:b"}}"#,
            b64("u:a:b")
        )));
        // null and "" count as absent.
        parse_ok(&entry(
            r#"{"auth":"","username":"u","password":"p","email":null}"#,
        ));
        parse_ok(&entry(r#"{"auth":null,"identitytoken":"t"}"#));
    }

    #[test]
    fn auth_base64_flavours() {
        // Padded and unpadded, like the kubelet.
        parse_ok(&entry(&format!(r#"{{"auth":"{}"}}"#, b64("user:pw"))));
        assert!(b64("user:pw").ends_with('='));
        parse_ok(&entry(r#"{"auth":"dXNlcjpwdw"}"#));
        // URL-safe alphabet is not standard base64.
        let urlsafe = base64::engine::general_purpose::URL_SAFE.encode("u:p>>>?");
        assert!(urlsafe.contains(['-', '_']));
        assert!(matches!(
            parse_err(&entry(&format!(r#"{{"auth":"{urlsafe}"}}"#))),
            ConfigError::AuthNotBase64 { .. }
        ));
        // Wrong padding.
        assert!(matches!(
            parse_err(&entry(r#"{"auth":"dXNlcjpwdw="}"#)),
            ConfigError::AuthNotBase64 { .. }
        ));
        assert!(matches!(
            parse_err(&entry(r#"{"auth":"not base64!"}"#)),
            ConfigError::AuthNotBase64 { .. }
        ));
    }

    // ---- .dockercfg ----

    #[test]
    fn dockercfg_is_converted() {
        let config = DockerConfig::from_dockercfg(
            br#"{"https://index.docker.io/v1/":{"auth":"dTpw","email":"e@x"},"r.io":{"username":"u","password":"p"}}"#,
        )
        .unwrap();
        assert_eq!(
            json(&config),
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw","email":"e@x"},"r.io":{"password":"p","username":"u"}}}"#
        );
        assert_eq!(
            DockerConfig::from_dockerconfigjson(&config.to_json()).unwrap(),
            config
        );
    }

    #[test]
    fn dockercfg_errors() {
        assert_eq!(
            DockerConfig::from_dockercfg(b"{}").unwrap_err(),
            ConfigError::NoRegistries
        );
        assert_eq!(
            DockerConfig::from_dockercfg(b"[]").unwrap_err(),
            ConfigError::NotAnObject
        );
        assert_eq!(
            DockerConfig::from_dockercfg(b"\xff").unwrap_err(),
            ConfigError::NotUtf8
        );
        // A .dockerconfigjson document in a .dockercfg key: "auths" is read as
        // a registry whose entry has no credentials.
        assert_eq!(
            DockerConfig::from_dockercfg(br#"{"auths":{"r.io":{"auth":"dTpw"}}}"#).unwrap_err(),
            ConfigError::NoCredentials {
                registry: "auths".into()
            }
        );
    }

    // ---- from_logins ----

    #[test]
    fn from_logins_matches_kubectl() {
        let config = DockerConfig::from_logins(&[login("r.io", "u", "p", Some("e@x"))]).unwrap();
        assert_eq!(
            json(&config),
            r#"{"auths":{"r.io":{"auth":"dTpw","email":"e@x","password":"p","username":"u"}}}"#
        );
    }

    #[test]
    fn from_logins_omits_empty_email() {
        for email in [None, Some("")] {
            let config = DockerConfig::from_logins(&[login("r.io", "u", "p", email)]).unwrap();
            assert_eq!(
                json(&config),
                r#"{"auths":{"r.io":{"auth":"dTpw","password":"p","username":"u"}}}"#
            );
        }
    }

    #[test]
    fn from_logins_keeps_server_as_given_and_sorts() {
        let config = DockerConfig::from_logins(&[
            login("https://index.docker.io/v1/", "u", "p", None),
            login("Registry.IO:5000", "a", "b:c", None),
        ])
        .unwrap();
        assert_eq!(
            json(&config),
            format!(
                r#"{{"auths":{{"Registry.IO:5000":{{"auth":"{}","password":"b:c","username":"a"}},"https://index.docker.io/v1/":{{"auth":"dTpw","password":"p","username":"u"}}}}}}"#,
                b64("a:b:c")
            )
        );
    }

    #[test]
    fn from_logins_errors() {
        assert_eq!(
            DockerConfig::from_logins(&[]).unwrap_err(),
            ConfigError::NoRegistries
        );
        assert_eq!(
            DockerConfig::from_logins(&[
                login("r.io", "u", "p", None),
                login("r.io", "v", "q", None)
            ])
            .unwrap_err(),
            ConfigError::DuplicateServer {
                server: "r.io".into()
            }
        );
        // Same registry, different spelling: not a duplicate.
        DockerConfig::from_logins(&[login("r.io", "u", "p", None), login("R.io", "u", "p", None)])
            .unwrap();
        assert!(matches!(
            DockerConfig::from_logins(&[login("ftp://r.io", "u", "p", None)]).unwrap_err(),
            ConfigError::InvalidRegistryKey { .. }
        ));
        assert_eq!(
            DockerConfig::from_logins(&[login("r.io", "", "p", None)]).unwrap_err(),
            ConfigError::AuthMalformed {
                registry: "r.io".into(),
                reason: "the user name is empty"
            }
        );
        // An empty password is accepted, as in kubectl (auth is "u:").
        let config = DockerConfig::from_logins(&[login("r.io", "u", "", None)]).unwrap();
        assert_eq!(
            json(&config),
            format!(
                r#"{{"auths":{{"r.io":{{"auth":"{}","username":"u"}}}}}}"#,
                b64("u:")
            )
        );
    }

    // ---- errors, one by one ----

    #[test]
    fn not_utf8() {
        assert_eq!(
            DockerConfig::from_dockerconfigjson(
                b"{\"auths\":{\"r.io\":{\"password\":\"\xc3\x28\"}}}"
            )
            .unwrap_err(),
            ConfigError::NotUtf8
        );
    }

    #[test]
    fn not_json() {
        assert_eq!(parse_err(""), ConfigError::NotJson { line: 1, column: 0 });
        assert_eq!(
            parse_err("{\n  \"auths\": {,}\n}"),
            ConfigError::NotJson {
                line: 2,
                column: 13
            }
        );
        assert!(matches!(
            parse_err("{\"auths\":{}} x"),
            ConfigError::NotJson { .. }
        ));
        assert!(matches!(
            parse_err("\u{feff}{}"),
            ConfigError::NotJson { .. }
        ));
    }

    #[test]
    fn not_an_object() {
        for text in ["[]", "null", "\"auths\"", "1"] {
            assert_eq!(parse_err(text), ConfigError::NotAnObject, "{text}");
        }
    }

    #[test]
    fn missing_or_bad_auths() {
        assert_eq!(parse_err("{}"), ConfigError::MissingAuths);
        assert_eq!(
            parse_err(r#"{"Auths":{"r.io":{"auth":"dTpw"}}}"#),
            ConfigError::MissingAuths
        );
        assert_eq!(parse_err(r#"{"auths":[]}"#), ConfigError::AuthsNotAnObject);
        assert_eq!(
            parse_err(r#"{"auths":null}"#),
            ConfigError::AuthsNotAnObject
        );
        assert_eq!(parse_err(r#"{"auths":{}}"#), ConfigError::NoRegistries);
    }

    #[test]
    fn invalid_registry_key() {
        let e = parse_err(r#"{"auths":{"ftp://r.io":{"auth":"dTpw"}}}"#);
        match &e {
            ConfigError::InvalidRegistryKey { key, source } => {
                assert_eq!(key, "ftp://r.io");
                assert!(matches!(source, RegistryKeyError::UnsupportedScheme { .. }));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            e.to_string(),
            "registry key \"ftp://r.io\" has unsupported scheme \"ftp\": only http and https are allowed"
        );
        assert!(e.source().is_some());
        assert!(matches!(
            parse_err(r#"{"auths":{"":{"auth":"dTpw"}}}"#),
            ConfigError::InvalidRegistryKey {
                source: RegistryKeyError::Empty,
                ..
            }
        ));
    }

    #[test]
    fn entry_not_an_object() {
        assert_eq!(
            parse_err(r#"{"auths":{"r.io":"dTpw"}}"#),
            ConfigError::EntryNotAnObject {
                registry: "r.io".into()
            }
        );
        assert_eq!(
            parse_err(r#"{"auths":{"r.io":null}}"#),
            ConfigError::EntryNotAnObject {
                registry: "r.io".into()
            }
        );
    }

    #[test]
    fn no_credentials() {
        for e in [
            "{}",
            r#"{"email":"e@x"}"#,
            r#"{"username":"u"}"#,
            r#"{"password":"p"}"#,
            r#"{"username":"","password":"p"}"#,
            r#"{"identitytoken":""}"#,
            r#"{"auth":"","registrytoken":null}"#,
            r#"{"Auth":"dTpw"}"#,
        ] {
            assert_eq!(
                parse_err(&entry(e)),
                ConfigError::NoCredentials {
                    registry: "r.io".into()
                },
                "{e}"
            );
        }
        assert_eq!(
            parse_err(&entry("{}")).to_string(),
            "the entry for registry \"r.io\" has no usable credentials: expected auth, username and password, identitytoken or registrytoken"
        );
    }

    #[test]
    fn field_not_a_string() {
        for (e, field) in [
            (r#"{"auth":1}"#, "auth"),
            (r#"{"username":["u"],"password":"p"}"#, "username"),
            (r#"{"username":"u","password":{"v":1}}"#, "password"),
            (r#"{"auth":"dTpw","email":false}"#, "email"),
            (r#"{"identitytoken":true}"#, "identitytoken"),
            (r#"{"registrytoken":2.5}"#, "registrytoken"),
            // Fields are checked in a fixed order.
            (r#"{"registrytoken":1,"auth":1}"#, "auth"),
        ] {
            assert_eq!(
                parse_err(&entry(e)),
                ConfigError::FieldNotAString {
                    registry: "r.io".into(),
                    field
                },
                "{e}"
            );
        }
    }

    #[test]
    fn auth_not_base64() {
        assert_eq!(
            parse_err(&entry(r#"{"auth":"d T p w"}"#)),
            ConfigError::AuthNotBase64 {
                registry: "r.io".into()
            }
        );
    }

    #[test]
    fn auth_malformed() {
        let cases = [
            (b64("nocolon"), "there is no ':'"),
            (b64(":p"), "the user name is empty"),
            (STANDARD.encode(b"u:\xff"), "it is not UTF-8"),
            ("cGFudHM=".to_owned(), "there is no ':'"),
        ];
        for (auth, reason) in cases {
            assert_eq!(
                parse_err(&entry(&format!(r#"{{"auth":"{auth}"}}"#))),
                ConfigError::AuthMalformed {
                    registry: "r.io".into(),
                    reason
                }
            );
        }
        // A broken auth is an error even when username and password are usable.
        assert!(matches!(
            parse_err(&entry(&format!(
                r#"{{"auth":"{}","username":"u","password":"p"}}"#,
                b64("up")
            ))),
            ConfigError::AuthMalformed { .. }
        ));
    }

    #[test]
    fn auth_disagrees() {
        for e in [
            r#"{"auth":"dTpw","username":"v","password":"p"}"#,
            r#"{"auth":"dTpw","username":"u","password":"q"}"#,
            r#"{"auth":"dTpw","username":"v"}"#,
            r#"{"auth":"dTpw","password":"q"}"#,
        ] {
            assert_eq!(
                parse_err(&entry(e)),
                ConfigError::AuthDisagrees {
                    registry: "r.io".into()
                },
                "{e}"
            );
        }
        // Agreement on the part that is given is enough.
        parse_ok(&entry(r#"{"auth":"dTpw","username":"u"}"#));
        parse_ok(&entry(r#"{"auth":"dTpw","password":"p"}"#));
    }

    #[test]
    fn duplicate_server_message() {
        assert_eq!(
            ConfigError::DuplicateServer {
                server: "r.io".into()
            }
            .to_string(),
            "the registry server \"r.io\" is given more than once"
        );
    }

    #[test]
    fn long_keys_are_shortened_in_entry_errors() {
        // A valid key can have a path of any length; quoted in full it could
        // blow up a status message.
        let key = format!("r.io/{}", "a".repeat(5000));
        let e = parse_err(&format!(r#"{{"auths":{{"{key}":{{}}}}}}"#));
        let ConfigError::NoCredentials { registry } = &e else {
            panic!("unexpected {e:?}");
        };
        assert_eq!(registry.chars().count(), 257);
        assert!(registry.ends_with('…'));
        assert!(e.to_string().len() < 500);
    }

    // ---- check order ----

    #[test]
    fn keys_are_checked_before_entries() {
        // "a.io" has no credentials, but "z io" is an invalid key: step 2 first.
        assert!(matches!(
            parse_err(r#"{"auths":{"a.io":{},"z io":{"auth":"dTpw"}}}"#),
            ConfigError::InvalidRegistryKey { .. }
        ));
        // Also ahead of a non-object entry.
        assert!(matches!(
            parse_err(r#"{"auths":{"a.io":[],"z io":{"auth":"dTpw"}}}"#),
            ConfigError::InvalidRegistryKey { .. }
        ));
    }

    #[test]
    fn entries_are_checked_in_key_order() {
        assert_eq!(
            parse_err(r#"{"auths":{"b.io":[],"a.io":{}}}"#),
            ConfigError::NoCredentials {
                registry: "a.io".into()
            }
        );
        assert_eq!(
            parse_err(r#"{"auths":{"b.io":{},"a.io":7}}"#),
            ConfigError::EntryNotAnObject {
                registry: "a.io".into()
            }
        );
    }

    #[test]
    fn disagreement_is_checked_after_all_credentials() {
        // "a.io" disagrees (step 4), "b.io" has no credentials (step 3).
        assert_eq!(
            parse_err(r#"{"auths":{"a.io":{"auth":"dTpw","username":"x"},"b.io":{}}}"#),
            ConfigError::NoCredentials {
                registry: "b.io".into()
            }
        );
    }

    // ---- Debug ----

    #[test]
    fn debug_shows_only_registries() {
        let config = parse_ok(r#"{"auths":{"b.io":{"auth":"dTpw"},"a.io":{"auth":"dTpw"}}}"#);
        assert_eq!(
            format!("{config:?}"),
            r#"DockerConfig { registries: ["a.io", "b.io"] }"#
        );
        assert_eq!(
            format!("{:?}", login("r.io", "u", "p", Some("e"))),
            r#"RegistryLogin { server: "r.io", username: "u", password: <redacted>, email: Some("e") }"#
        );
    }

    // ---- no secret ever leaks ----

    #[test]
    fn secrets_never_appear_in_errors_or_debug() {
        let auth = b64(&format!("u:{SECRET}"));
        let other_auth = b64("u:other");
        assert!(!auth.contains(SECRET));

        let mut errors: Vec<ConfigError> = Vec::new();
        let mut push = |result: Result<DockerConfig, ConfigError>| match result {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => errors.push(e),
        };
        let dcj = |text: String| DockerConfig::from_dockerconfigjson(text.as_bytes());

        // NotUtf8
        let mut bytes = format!(r#"{{"auths":{{"r.io":{{"password":"{SECRET}"#).into_bytes();
        bytes.push(0xff);
        push(DockerConfig::from_dockerconfigjson(&bytes));
        // NotJson, in several ways
        push(dcj(format!(
            r#"{{"auths":{{"r.io":{{"password":"{SECRET}""#
        )));
        push(dcj(format!(
            r#"{{"auths":{{"r.io":{{"password":"{SECRET}\q"}}}}}}"#
        )));
        push(dcj(format!(
            r#"{{"auths":{{"r.io":{{"password":{SECRET}}}}}}}"#
        )));
        push(dcj(format!(
            r#"{{"auths":{{"r.io":{{"auth":"{auth}"}}}}}} {SECRET}"#
        )));
        push(dcj(format!(
            "{{\"auths\":{{\"r.io\":{{\"password\":\"{SECRET}\u{1}\"}}}}}}"
        )));
        // NotAnObject
        push(dcj(format!(r#"["{SECRET}","{auth}"]"#)));
        push(dcj(format!(r#""{SECRET}""#)));
        // MissingAuths
        push(dcj(format!(
            r#"{{"r.io":{{"auth":"{auth}","password":"{SECRET}"}}}}"#
        )));
        // AuthsNotAnObject
        push(dcj(format!(r#"{{"auths":["{SECRET}","{auth}"]}}"#)));
        push(dcj(format!(r#"{{"auths":"{auth}"}}"#)));
        // NoRegistries
        push(dcj(format!(
            r#"{{"auths":{{}},"credHelpers":{{"x":"{SECRET}"}}}}"#
        )));
        // InvalidRegistryKey, including keys that carry the secret themselves
        push(dcj(format!(
            r#"{{"auths":{{"ftp://r.io":{{"auth":"{auth}"}}}}}}"#
        )));
        push(dcj(format!(
            r#"{{"auths":{{"https://u:{SECRET}@r.io":{{"auth":"{auth}"}}}}}}"#
        )));
        push(dcj(format!(
            r#"{{"auths":{{"u:{SECRET}@r.io/v2/":{{"auth":"{auth}"}}}}}}"#
        )));
        push(dcj(format!(
            r#"{{"auths":{{"r.io/x?token={SECRET}":{{"auth":"{auth}"}}}}}}"#
        )));
        push(dcj(format!(
            r#"{{"auths":{{"r.io#{SECRET}":{{"auth":"{auth}"}}}}}}"#
        )));
        push(dcj(format!(
            r#"{{"auths":{{"ftp://u:{SECRET}@r.io":{{"auth":"{auth}"}}}}}}"#
        )));
        push(dcj(format!(
            r#"{{"auths":{{"{auth}@r.io":{{"auth":"{auth}"}}}}}}"#
        )));
        // EntryNotAnObject
        push(dcj(format!(r#"{{"auths":{{"r.io":"{auth}"}}}}"#)));
        push(dcj(format!(r#"{{"auths":{{"r.io":["{SECRET}"]}}}}"#)));
        // NoCredentials
        push(dcj(format!(
            r#"{{"auths":{{"r.io":{{"password":"{SECRET}"}}}}}}"#
        )));
        push(dcj(format!(
            r#"{{"auths":{{"r.io":{{"Auth":"{auth}"}}}}}}"#
        )));
        // FieldNotAString
        push(dcj(format!(
            r#"{{"auths":{{"r.io":{{"auth":["{auth}"]}}}}}}"#
        )));
        push(dcj(format!(
            r#"{{"auths":{{"r.io":{{"username":"u","password":["{SECRET}"]}}}}}}"#
        )));
        push(dcj(format!(
            r#"{{"auths":{{"r.io":{{"identitytoken":{{"t":"{SECRET}"}}}}}}}}"#
        )));
        // AuthNotBase64
        push(dcj(format!(
            r#"{{"auths":{{"r.io":{{"auth":"{SECRET}"}}}}}}"#
        )));
        push(dcj(format!(
            r#"{{"auths":{{"r.io":{{"auth":"{auth}!"}}}}}}"#
        )));
        // AuthMalformed
        let no_colon = b64(SECRET);
        push(dcj(format!(
            r#"{{"auths":{{"r.io":{{"auth":"{no_colon}"}}}}}}"#
        )));
        let no_user = b64(&format!(":{SECRET}"));
        push(dcj(format!(
            r#"{{"auths":{{"r.io":{{"auth":"{no_user}"}}}}}}"#
        )));
        let mut not_utf8 = format!("u:{SECRET}").into_bytes();
        not_utf8.push(0xff);
        let not_utf8 = STANDARD.encode(not_utf8);
        push(dcj(format!(
            r#"{{"auths":{{"r.io":{{"auth":"{not_utf8}"}}}}}}"#
        )));
        // AuthDisagrees, both ways round
        push(dcj(format!(
            r#"{{"auths":{{"r.io":{{"auth":"{other_auth}","username":"u","password":"{SECRET}"}}}}}}"#
        )));
        push(dcj(format!(
            r#"{{"auths":{{"r.io":{{"auth":"{auth}","username":"u","password":"other"}}}}}}"#
        )));
        // .dockercfg
        push(DockerConfig::from_dockercfg(
            format!(r#"{{"r.io":{{"password":"{SECRET}"}}}}"#).as_bytes(),
        ));
        push(DockerConfig::from_dockercfg(
            format!(r#"["{SECRET}"]"#).as_bytes(),
        ));
        // from_logins: DuplicateServer (also with the secret in the server),
        // and validation errors
        push(DockerConfig::from_logins(&[
            login("r.io", "u", SECRET, None),
            login("r.io", "u", SECRET, None),
        ]));
        let server = format!("https://u:{SECRET}@r.io");
        push(DockerConfig::from_logins(&[
            login(&server, "u", SECRET, None),
            login(&server, "u", SECRET, None),
        ]));
        push(DockerConfig::from_logins(&[login(
            &server, "u", SECRET, None,
        )]));
        push(DockerConfig::from_logins(&[login(
            "ftp://r.io",
            "u",
            SECRET,
            None,
        )]));
        push(DockerConfig::from_logins(&[login(
            "r.io", "", SECRET, None,
        )]));

        // Every variant was produced at least once.
        let mut seen: Vec<&str> = errors
            .iter()
            .map(|e| match e {
                ConfigError::NotUtf8 => "NotUtf8",
                ConfigError::NotJson { .. } => "NotJson",
                ConfigError::NotAnObject => "NotAnObject",
                ConfigError::MissingAuths => "MissingAuths",
                ConfigError::AuthsNotAnObject => "AuthsNotAnObject",
                ConfigError::NoRegistries => "NoRegistries",
                ConfigError::InvalidRegistryKey { .. } => "InvalidRegistryKey",
                ConfigError::EntryNotAnObject { .. } => "EntryNotAnObject",
                ConfigError::NoCredentials { .. } => "NoCredentials",
                ConfigError::FieldNotAString { .. } => "FieldNotAString",
                ConfigError::AuthNotBase64 { .. } => "AuthNotBase64",
                ConfigError::AuthMalformed { .. } => "AuthMalformed",
                ConfigError::AuthDisagrees { .. } => "AuthDisagrees",
                ConfigError::DuplicateServer { .. } => "DuplicateServer",
            })
            .collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 14, "{seen:?}");

        let mut texts: Vec<String> = Vec::new();
        for e in &errors {
            texts.push(e.to_string());
            texts.push(format!("{e:?}"));
            texts.push(format!("{e:#?}"));
            let mut source = e.source();
            while let Some(s) = source {
                texts.push(s.to_string());
                texts.push(format!("{s:?}"));
                source = s.source();
            }
        }

        // Debug of values that hold the secret.
        let config = DockerConfig::from_dockerconfigjson(
            format!(
                r#"{{"auths":{{"r.io":{{"auth":"{auth}","username":"u","password":"{SECRET}","identitytoken":"{SECRET}"}}}}}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        texts.push(format!("{config:?}"));
        texts.push(format!("{config:#?}"));
        let from_logins = DockerConfig::from_logins(&[login("r.io", "u", SECRET, None)]).unwrap();
        assert!(
            String::from_utf8(from_logins.to_json())
                .unwrap()
                .contains(&auth)
        );
        texts.push(format!("{from_logins:?}"));
        let l = login("r.io", "u", SECRET, Some("e@x"));
        texts.push(format!("{l:?}"));
        texts.push(format!("{l:#?}"));

        for text in &texts {
            assert!(!text.contains(SECRET), "secret leaked: {text}");
            assert!(!text.contains(&auth), "auth leaked: {text}");
            assert!(!text.contains("s3cr3t"), "secret leaked: {text}");
        }
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use std::error::Error as _;

    /// A registry key that [`RegistryKey::parse`] accepts, as written.
    fn key() -> impl Strategy<Value = String> {
        "(https?://)?[a-z][a-z0-9-]{0,6}[a-z0-9]\\.(io|com|local)(:[1-9][0-9]{0,3})?(/[a-z0-9_]{1,6}){0,2}/?"
    }

    /// A password that no message template, key or field name contains: it
    /// starts with a marker no generated key has.
    fn password() -> impl Strategy<Value = String> {
        any::<String>().prop_map(|s| format!("Pw~{s}"))
    }

    /// What one generated entry holds.
    #[derive(Debug, Clone)]
    enum Kind {
        /// `auth` only.
        Auth,
        /// `username` and `password` only.
        UserPassword,
        /// All three, agreeing.
        Both,
        /// A token only (`identitytoken` when true).
        Token(bool),
    }

    #[derive(Debug, Clone)]
    struct Entry {
        key: String,
        username: String,
        password: String,
        kind: Kind,
        email: Option<String>,
        extra: Option<(String, Value)>,
    }

    impl Entry {
        fn to_value(&self) -> Value {
            let auth = STANDARD.encode(format!("{}:{}", self.username, self.password));
            let mut entry = match self.kind {
                Kind::Auth => json!({ "auth": auth }),
                Kind::UserPassword => {
                    json!({ "username": self.username, "password": self.password })
                }
                Kind::Both => {
                    json!({ "auth": auth, "username": self.username, "password": self.password })
                }
                Kind::Token(true) => json!({ "identitytoken": self.password }),
                Kind::Token(false) => json!({ "registrytoken": self.password }),
            };
            let object = entry.as_object_mut().unwrap();
            if let Some(email) = &self.email {
                object.insert("email".into(), json!(email));
            }
            if let Some((field, value)) = &self.extra {
                object.entry(field.clone()).or_insert_with(|| value.clone());
            }
            entry
        }

        fn credentials(&self) -> Option<Credentials> {
            match self.kind {
                Kind::Token(_) => None,
                _ => Some(Credentials {
                    username: self.username.clone(),
                    password: self.password.clone(),
                }),
            }
        }
    }

    fn entry() -> impl Strategy<Value = Entry> {
        (
            key(),
            "[a-zA-Z0-9._@-]{1,12}",
            password(),
            prop_oneof![
                Just(Kind::Auth),
                Just(Kind::UserPassword),
                Just(Kind::Both),
                any::<bool>().prop_map(Kind::Token),
            ],
            prop::option::of("[a-z]{1,5}@[a-z]{1,5}\\.com"),
            prop::option::of(("x-[a-z]{1,6}", json_value())),
        )
            .prop_map(|(key, username, password, kind, email, extra)| Entry {
                key,
                username,
                password,
                kind,
                email,
                extra,
            })
    }

    /// 1 to 4 entries with distinct keys.
    fn entries() -> impl Strategy<Value = Vec<Entry>> {
        prop::collection::vec(entry(), 1..5).prop_map(|mut entries| {
            let mut seen = std::collections::BTreeSet::new();
            entries.retain(|e| seen.insert(e.key.clone()));
            entries
        })
    }

    fn auths(entries: &[Entry]) -> Value {
        Value::Object(
            entries
                .iter()
                .map(|e| (e.key.clone(), e.to_value()))
                .collect(),
        )
    }

    /// Any JSON value, biased towards the field names of a docker config.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            prop_oneof![
                any::<String>(),
                Just("dTpw".to_owned()),
                Just("r.io".to_owned())
            ]
            .prop_map(Value::from),
        ];
        let name = prop_oneof![
            Just("auths".to_owned()),
            Just("auth".to_owned()),
            Just("username".to_owned()),
            Just("password".to_owned()),
            Just("identitytoken".to_owned()),
            Just("registrytoken".to_owned()),
            Just("email".to_owned()),
            Just("r.io".to_owned()),
            ".{0,8}",
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(name.clone(), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Every text an error can be shown as.
    fn error_texts(e: &ConfigError) -> String {
        let mut text = format!("{e} {e:?} {e:#?}");
        let mut source = e.source();
        while let Some(s) = source {
            text.push_str(&format!(" {s} {s:?}"));
            source = s.source();
        }
        text
    }

    /// The checks that hold for every config the parsers accept.
    fn check_accepted(config: &DockerConfig) -> Result<(), TestCaseError> {
        prop_assert!(!config.is_empty());
        prop_assert_eq!(config.len(), config.registries().count());
        for key in config.registries() {
            prop_assert!(RegistryKey::parse(key).is_ok(), "{:?}", key);
        }
        // Debug shows the keys and nothing else.
        let keys: Vec<&str> = config.registries().collect();
        prop_assert_eq!(
            format!("{config:?}"),
            format!("DockerConfig {{ registries: {keys:?} }}")
        );
        // The output reads back as the same config, and writing it again
        // gives the same bytes. Floats are the exception: serde_json reads
        // them with best-effort precision (see DockerConfig), so they are
        // compared as "some float".
        let json = config.to_json();
        let again = DockerConfig::from_dockerconfigjson(&json);
        let again =
            again.map_err(|e| TestCaseError::fail(format!("output does not read back: {e}")))?;
        let value: Value = serde_json::from_slice(&json).unwrap();
        if has_float(&value) {
            let again_value: Value = serde_json::from_slice(&again.to_json()).unwrap();
            prop_assert_eq!(mask_floats(again_value), mask_floats(value));
        } else {
            prop_assert_eq!(&again, config);
            prop_assert_eq!(again.to_json(), json);
        }
        Ok(())
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

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn prop_generated_configs_round_trip(entries in entries()) {
            let auths = auths(&entries);
            let bytes = serde_json::to_vec(&json!({ "auths": auths, "credsStore": "x" })).unwrap();
            let config = DockerConfig::from_dockerconfigjson(&bytes)
                .unwrap_or_else(|e| panic!("{} should parse: {e}", String::from_utf8_lossy(&bytes)));
            check_accepted(&config)?;
            let mut keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
            keys.sort_unstable();
            prop_assert_eq!(config.registries().collect::<Vec<_>>(), keys);
            for e in &entries {
                prop_assert_eq!(config.credentials(&e.key), e.credentials());
            }
            // The legacy form of the same entries is the same config.
            let legacy = DockerConfig::from_dockercfg(&serde_json::to_vec(&auths).unwrap());
            prop_assert_eq!(legacy.map(|c| c.to_json()), Ok(config.to_json()));
            // Nothing but the keys is shown.
            let debug = format!("{config:?} {config:#?}");
            for e in &entries {
                prop_assert!(!debug.contains(&e.password));
                if let Some(c) = config.credentials(&e.key) {
                    let shown = format!("{c:?} {c:#?}");
                    prop_assert!(!shown.contains(&e.password), "{}", shown);
                }
            }
        }

        #[test]
        fn prop_logins_round_trip(
            logins in prop::collection::btree_map(
                key(),
                ("[a-zA-Z0-9._@-]{1,12}", password(), prop::option::of("[a-z@.]{0,8}")),
                1..4,
            )
        ) {
            let logins: Vec<RegistryLogin> = logins
                .into_iter()
                .map(|(server, (username, password, email))| RegistryLogin {
                    server,
                    username,
                    password,
                    email,
                })
                .collect();
            let config = DockerConfig::from_logins(&logins).unwrap();
            check_accepted(&config)?;
            for login in &logins {
                prop_assert_eq!(
                    config.credentials(&login.server),
                    Some(Credentials {
                        username: login.username.clone(),
                        password: login.password.clone(),
                    })
                );
                let shown = format!("{login:?} {login:#?}");
                prop_assert!(!shown.contains(&login.password), "{}", shown);
            }
        }

        /// Arbitrary bytes and arbitrary JSON: no panic, and whatever is
        /// accepted satisfies the invariants.
        #[test]
        fn prop_never_panics(bytes in any::<Vec<u8>>(), value in json_value()) {
            let json = serde_json::to_vec(&value).unwrap();
            let wrapped = serde_json::to_vec(&json!({ "auths": value })).unwrap();
            for input in [&bytes, &json, &wrapped] {
                for parsed in [
                    DockerConfig::from_dockerconfigjson(input),
                    DockerConfig::from_dockercfg(input),
                ] {
                    match parsed {
                        Ok(config) => check_accepted(&config)?,
                        Err(e) => {
                            let _ = error_texts(&e);
                        }
                    }
                }
            }
        }

        /// Broken configs that carry a password in every possible place: no
        /// error text contains it or the `auth` that encodes it.
        #[test]
        fn prop_errors_never_contain_credentials(
            e in entry(),
            broken in 0usize..12,
            cut in any::<prop::sample::Index>(),
        ) {
            let p = e.password.clone();
            let u = e.username.clone();
            let auth = STANDARD.encode(format!("{u}:{p}"));
            let k = e.key.clone();
            let entry_with = |v: Value| json!({ "auths": { &k: v } });
            let doc = match broken {
                0 => entry_with(json!({ "password": p })),
                1 => entry_with(json!({ "auth": STANDARD.encode(format!("{u}:other")), "username": u, "password": p })),
                2 => entry_with(json!({ "auth": auth, "username": u, "password": "other" })),
                3 => entry_with(json!({ "auth": STANDARD.encode(&p) })),
                4 => entry_with(json!({ "auth": STANDARD.encode(format!(":{p}")) })),
                5 => entry_with(json!({ "auth": p })),
                6 => entry_with(json!({ "username": u, "password": [p] })),
                7 => json!({ "auths": { format!("https://{u}:{p}@r.io"): { "auth": auth } } }),
                8 => json!({ "auths": { format!("r.io/x?token={p}"): { "auth": auth } } }),
                9 => json!({ "auths": { &k: { "auth": auth }, "ftp://r.io": { "password": p } } }),
                10 => json!({ "auths": [p, auth] }),
                _ => json!({ "auths": { &k: { "identitytoken": p, "auth": format!("{auth}!") } } }),
            };
            let bytes = serde_json::to_vec(&doc).unwrap();
            // Also every prefix of the document, which is not JSON.
            let cut = cut.index(bytes.len());
            for input in [&bytes[..], &bytes[..cut]] {
                for parsed in [
                    DockerConfig::from_dockerconfigjson(input),
                    DockerConfig::from_dockercfg(input),
                ] {
                    let Err(err) = parsed else { continue };
                    let text = error_texts(&err);
                    prop_assert!(!text.contains(&p), "password in {}", text);
                    prop_assert!(!text.contains(&auth), "auth in {}", text);
                }
            }
        }
    }
}
