//! The bytes of a pull Secret's `.dockerconfigjson` or `.dockercfg`, read the
//! way the operator reads a Secret, judged against how the kubelet reads them.
//!
//! The oracle is a model of the kubelet written from
//! `k8s.io/kubernetes/pkg/credentialprovider` (`config.go`: `DockerConfigJSON`
//! with `auths` and `HttpHeaders`, `DockerConfigEntry.UnmarshalJSON`,
//! `decodeDockerConfigFieldAuth`; `secrets/secrets.go`: a
//! `kubernetes.io/dockerconfigjson` Secret is read from `.dockerconfigjson`
//! into the wrapper, a `kubernetes.io/dockercfg` Secret from `.dockercfg`
//! as the bare map) and from Go's `encoding/json` (object keys match struct
//! fields exactly or else case-insensitively, `null` leaves a field as it
//! is, a repeated object is merged into the same map, a value of the wrong
//! type fails the whole document) and `encoding/base64` (`StdEncoding` when
//! the value ends in `=`, else `RawStdEncoding`; CR and LF are skipped,
//! trailing bits are ignored). A non-empty `auth` is decoded, split at its
//! first `:`, and replaces `username` and `password`.
//!
//! Checked, for every input and for a config built from the input the way
//! `kubectl create secret docker-registry` builds one
//! (`{"auths":{S:{"username":U,"password":P,"email":E,"auth":base64(U:P)}}}`):
//!
//! * a config the operator accepts is one the kubelet reads, with the same
//!   registry keys and, for every entry with a user name and password, the
//!   credentials the kubelet will send;
//! * the operator's copy (`to_json`) gives the kubelet exactly what the
//!   source gives it, and keeps every entry's fields;
//! * kubectl's output with a usable server, user name (without `:`) and
//!   password is accepted with those credentials, and `from_logins` writes
//!   the JSON value kubectl writes;
//! * no panic; `Debug` of a config or of its credentials shows no password
//!   or `auth`; an error never shows a credential of the input (only
//!   registry keys, field names and positions); the Secret readers use the
//!   parsers for the Secret types the kubelet reads.

#![no_main]

use std::collections::BTreeMap;
use std::error::Error as _;
use std::sync::OnceLock;

use arbitrary::Unstructured;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use libfuzzer_sys::fuzz_target;
use regcred_operator::dockerconfig::{
    ConfigError, DOCKER_CONFIG_JSON_KEY, DOCKER_CONFIG_JSON_TYPE, DOCKERCFG_KEY, DOCKERCFG_TYPE,
    DockerConfig, RegistryLogin, config_from_secret, kubelet_config,
};
use regcred_operator::kubelet::{RegistryKey, RegistryKeyError};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

fuzz_target!(|data: &[u8]| {
    check_document(data);
    check_kubectl(data);
});

// ---------------------------------------------------------------------------
// JSON as Go's decoder walks it: objects keep every key, repeats included, in
// order.

#[derive(Clone, Debug)]
enum Json {
    Null,
    Scalar,
    Text(String),
    List(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_none<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Json, E> {
                Ok(Json::Scalar)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Json, E> {
                Ok(Json::Scalar)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Json, E> {
                Ok(Json::Scalar)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Json, E> {
                Ok(Json::Scalar)
            }
            fn visit_str<E>(self, s: &str) -> Result<Json, E> {
                Ok(Json::Text(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Json, E> {
                Ok(Json::Text(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = a.next_element()? {
                    items.push(item);
                }
                Ok(Json::List(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Json, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = a.next_entry()? {
                    pairs.push(pair);
                }
                Ok(Json::Object(pairs))
            }
        }
        d.deserialize_any(V)
    }
}

fn read_json(bytes: &[u8]) -> Option<Json> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Json::deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(value)
}

// ---------------------------------------------------------------------------
// The kubelet's reading.

/// Go's case folding of a JSON object key for field matching: ASCII letters
/// to upper case, and the four non-ASCII letters whose simple case mappings
/// lead to an ASCII letter (Kelvin sign, long s, dotted and dotless I).
fn go_fold(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\u{212a}' => 'K',
            '\u{17f}' => 'S',
            '\u{130}' | '\u{131}' => 'I',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// Which of `fields` a JSON key sets: the exact name, else the first name
/// equal under folding.
fn go_field<'a>(key: &str, fields: &[&'a str]) -> Option<&'a str> {
    fields
        .iter()
        .find(|f| **f == key)
        .or_else(|| fields.iter().find(|f| go_fold(f) == go_fold(key)))
        .copied()
}

/// `base64.StdEncoding` (padded) or `RawStdEncoding` of `text`.
fn go_base64(text: &str, padded: bool) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut chars: Vec<u8> = text
        .bytes()
        .filter(|b| !matches!(b, b'\r' | b'\n'))
        .collect();
    if padded {
        if !chars.len().is_multiple_of(4) {
            return None;
        }
        for _ in 0..2 {
            if chars.last() == Some(&b'=') {
                chars.pop();
            }
        }
        if chars.len() % 4 == 1 {
            return None;
        }
    } else if chars.len() % 4 == 1 {
        return None;
    }
    let mut bits: Vec<bool> = Vec::new();
    for c in chars {
        let v = ALPHABET.iter().position(|&a| a == c)?;
        bits.extend((0..6).rev().map(|i| v >> i & 1 == 1));
    }
    Some(
        bits.chunks_exact(8)
            .map(|byte| byte.iter().fold(0u8, |acc, &b| acc << 1 | u8::from(b)))
            .collect(),
    )
}

type Creds = (Vec<u8>, Vec<u8>);

/// `DockerConfigEntry.UnmarshalJSON`; `None` where Go fails.
fn kubelet_entry(value: &Json) -> Option<Creds> {
    let pairs = match value {
        Json::Null => return Some((Vec::new(), Vec::new())),
        Json::Object(pairs) => pairs,
        _ => return None,
    };
    let mut fields: BTreeMap<&str, String> = BTreeMap::new();
    for (k, v) in pairs {
        let Some(field) = go_field(k, &["username", "password", "email", "auth"]) else {
            continue;
        };
        match v {
            Json::Null => {}
            Json::Text(s) => {
                fields.insert(field, s.clone());
            }
            _ => return None,
        }
    }
    let get = |f: &str| fields.get(f).cloned().unwrap_or_default().into_bytes();
    match fields.get("auth").filter(|a| !a.is_empty()) {
        None => Some((get("username"), get("password"))),
        Some(auth) => {
            let padded = auth.trim_end_matches(char::is_whitespace).ends_with('=');
            let decoded = go_base64(auth, padded)?;
            let colon = decoded.iter().position(|&b| b == b':')?;
            Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
        }
    }
}

/// The kubelet's credentials per `auths` key; `None` where it cannot read
/// the Secret at all (and so fails every pull of the pod).
fn kubelet_read(doc: &Json, wrapped: bool) -> Option<BTreeMap<String, Creds>> {
    let mut out = BTreeMap::new();
    let add_entries = |out: &mut BTreeMap<String, Creds>, map: &Json| -> Option<()> {
        match map {
            Json::Null => out.clear(),
            Json::Object(pairs) => {
                for (k, v) in pairs {
                    out.insert(k.clone(), kubelet_entry(v)?);
                }
            }
            _ => return None,
        }
        Some(())
    };
    if !wrapped {
        add_entries(&mut out, doc)?;
        return Some(out);
    }
    let pairs = match doc {
        Json::Null => return Some(out),
        Json::Object(pairs) => pairs,
        _ => return None,
    };
    for (k, v) in pairs {
        match go_field(k, &["auths", "HttpHeaders"]) {
            Some("auths") => add_entries(&mut out, v)?,
            Some(_) => match v {
                Json::Null => {}
                Json::Object(headers) => {
                    if headers
                        .iter()
                        .any(|(_, h)| !matches!(h, Json::Null | Json::Text(_)))
                    {
                        return None;
                    }
                }
                _ => return None,
            },
            None => {}
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------
// Inputs the operator is known to read differently from the kubelet. They are
// reported (see the fuzz report) and skipped unless FUZZ_KNOWN_BUGS is set, so
// that a run keeps looking for new differences.

fn strict() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("FUZZ_KNOWN_BUGS").is_some())
}

/// * a key Go's decoder matches to a field case-insensitively (`"Auth"`,
///   `"USERNAME"`, `"Auths"`, `"httpheaders"`): the kubelet reads it as that
///   field, the operator ignores it (other credentials, or a Secret the
///   kubelet cannot read: `"autH":"!!"`);
/// * `auths` given twice: Go merges both maps, the operator keeps the last;
/// * `HttpHeaders` that is not a map of strings: the kubelet cannot read the
///   Secret, the operator drops the field;
/// * a repeated key: Go decodes every occurrence, so an earlier one it cannot
///   read fails the Secret (`"r.io":{"auth":"!!"},"r.io":{...}`,
///   `"auth":5,"auth":"dTpw"`) and a later `null` leaves the earlier value
///   (`"auth":"dTpw","auth":null`); the operator keeps the last occurrence.
fn known_difference(doc: &Json, wrapped: bool) -> bool {
    const ENTRY: [&str; 4] = ["username", "password", "email", "auth"];
    const TOP: [&str; 2] = ["auths", "HttpHeaders"];
    let folded = |pairs: &[(String, Json)], fields: &[&str]| {
        pairs
            .iter()
            .any(|(k, _)| go_field(k, fields).is_some_and(|f| f != k))
    };
    // An occurrence of a key that a later one repeats, and is read by Go.
    let overridden = |pairs: &[(String, Json)], readable: &dyn Fn(&Json) -> bool| {
        pairs.iter().enumerate().any(|(i, (k, v))| {
            let again = &pairs[i + 1..];
            again.iter().any(|(later, _)| later == k)
                && (!readable(v) || again.iter().any(|(l, w)| l == k && matches!(w, Json::Null)))
        })
    };
    let string_or_null = |v: &Json| matches!(v, Json::Null | Json::Text(_));
    let entry_readable = |v: &Json| kubelet_entry(v).is_some();
    let entries_differ = |map: &Json| match map {
        Json::Object(entries) => {
            overridden(entries, &entry_readable)
                || entries.iter().any(|(_, entry)| match entry {
                    Json::Object(fields) => {
                        folded(fields, &ENTRY) || overridden(fields, &string_or_null)
                    }
                    _ => false,
                })
        }
        _ => false,
    };
    let Json::Object(top) = doc else {
        return false;
    };
    if !wrapped {
        return entries_differ(doc);
    }
    let auths: Vec<&Json> = top
        .iter()
        .filter(|(k, _)| go_field(k, &TOP) == Some("auths"))
        .map(|(_, v)| v)
        .collect();
    let headers_fail = top.iter().any(|(k, v)| {
        go_field(k, &TOP) == Some("HttpHeaders")
            && match v {
                Json::Null => false,
                Json::Object(h) => h
                    .iter()
                    .any(|(_, x)| !matches!(x, Json::Null | Json::Text(_))),
                _ => true,
            }
    });
    folded(top, &TOP) || auths.len() > 1 || headers_fail || auths.iter().any(|a| entries_differ(a))
}

// ---------------------------------------------------------------------------
// What must not show.

/// Credential values anywhere in the input: `password`, `auth` and the tokens
/// (under any spelling Go accepts), and the password decoded from `auth`.
fn secrets_of(doc: &Json, out: &mut Vec<String>) {
    match doc {
        Json::List(items) => items.iter().for_each(|i| secrets_of(i, out)),
        Json::Object(pairs) => {
            for (k, v) in pairs {
                let field = go_field(k, &["password", "auth", "identitytoken", "registrytoken"]);
                if let (Some(field), Json::Text(s)) = (field, v) {
                    out.push(s.clone());
                    if field == "auth" {
                        for padded in [true, false] {
                            if let Some(bytes) = go_base64(s, padded) {
                                let text = String::from_utf8_lossy(&bytes).into_owned();
                                if let Some((_, password)) = text.split_once(':') {
                                    out.push(password.to_owned());
                                }
                                out.push(text);
                            }
                        }
                    }
                }
                secrets_of(v, out);
            }
        }
        _ => {}
    }
}

fn keys_of(doc: &Json, out: &mut Vec<String>) {
    match doc {
        Json::List(items) => items.iter().for_each(|i| keys_of(i, out)),
        Json::Object(pairs) => {
            for (k, v) in pairs {
                out.push(k.clone());
                keys_of(v, out);
            }
        }
        _ => {}
    }
}

/// Whether `secret` is worth looking for: long enough to tell apart, not part
/// of a key (which may show) and not made of the redaction marks.
fn telling(secret: &str, keys: &[String]) -> bool {
    secret.chars().count() >= 4
        && !secret.contains(['<', '>', '…', '\u{1}'])
        && !"<redacted>".contains(secret)
        && !keys.iter().any(|k| k.contains(secret))
}

/// Every text an error can be shown as.
fn all_texts(e: &ConfigError) -> String {
    let causes = std::iter::successors(e.source(), |&s| s.source());
    std::iter::once(format!("{e} {e:?} {e:#?}"))
        .chain(causes.map(|s| format!("{s} {s:?}")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The key an entry error names.
fn entry_named(e: &ConfigError) -> Option<&str> {
    match e {
        ConfigError::EntryNotAnObject { registry }
        | ConfigError::NoCredentials { registry }
        | ConfigError::FieldNotAString { registry, .. }
        | ConfigError::AuthNotBase64 { registry }
        | ConfigError::AuthMalformed { registry, .. }
        | ConfigError::AuthDisagrees { registry } => Some(registry),
        _ => None,
    }
}

/// The parts of an error that come from registry keys of the input.
fn key_parts(e: &ConfigError) -> Vec<String> {
    match e {
        ConfigError::InvalidRegistryKey { key, source } => {
            let mut parts = vec![key.clone()];
            parts.extend(source.key().map(str::to_owned));
            if let RegistryKeyError::UnsupportedScheme { scheme, .. } = source {
                parts.push(scheme.clone());
            }
            parts
        }
        ConfigError::DuplicateServer { server } => vec![server.clone()],
        e => entry_named(e).map(str::to_owned).into_iter().collect(),
    }
}

fn check_error(e: &ConfigError, keys: &[String], secrets: &[String]) {
    let parts = key_parts(e);
    for part in &parts {
        // Known (reported): the scheme of an unsupported scheme is quoted in
        // full.
        let scheme = matches!(e, ConfigError::InvalidRegistryKey {
            source: RegistryKeyError::UnsupportedScheme { scheme, .. }, ..
        } if scheme == part);
        if !scheme || strict() {
            assert!(part.chars().count() <= 257, "{part:?}");
        }
    }
    // An entry is named by its key as written (every key parsed by then, so
    // none holds a credential), or its first 256 characters and '…'.
    if let Some(registry) = entry_named(e) {
        let named = match registry.strip_suffix('…') {
            Some(start) if registry.chars().count() == 257 => keys
                .iter()
                .any(|k| k.starts_with(start) && k.chars().count() > 256),
            _ => keys.iter().any(|k| k == registry),
        };
        assert!(named, "{registry:?} is not a key of the input");
    }
    // The quoted keys are the only part of the message that comes from the
    // input: they hold no credential that is not part of a key ...
    for part in &parts {
        for secret in secrets {
            if telling(secret, keys) && part.contains(secret.as_str()) {
                panic!("credential {secret:?} shown in {e}");
            }
        }
    }
    // ... and the rest is short, whatever the input.
    let mut rest = all_texts(e);
    for part in &parts {
        rest = rest.replace(&format!("{part:?}"), "\"\"");
    }
    assert!(rest.chars().count() < 1500, "{rest}");
}

// ---------------------------------------------------------------------------
// Checks.

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

/// The Secret readers read the data key the kubelet reads for the type with
/// the parser for that key's format.
fn check_secret_readers(
    data: &[u8],
    json: &Result<DockerConfig, ConfigError>,
    cfg: &Result<DockerConfig, ConfigError>,
) {
    let same = |read: Result<DockerConfig, String>,
                parsed: &Result<DockerConfig, ConfigError>,
                key: &str| {
        match (read, parsed) {
            (Ok(a), Ok(b)) => assert_eq!(&a, b),
            (Err(message), Err(e)) => {
                assert!(
                    message.contains(key) && message.contains(&e.to_string()),
                    "{message}"
                )
            }
            (read, _) => panic!("the Secret reader disagrees with the parser: {read:?}"),
        }
    };
    let read = kubelet_config(&secret(
        DOCKER_CONFIG_JSON_TYPE,
        DOCKER_CONFIG_JSON_KEY,
        data,
    ));
    same(read.expect("a kubelet type"), json, DOCKER_CONFIG_JSON_KEY);
    let read = kubelet_config(&secret(DOCKERCFG_TYPE, DOCKERCFG_KEY, data));
    same(read.expect("a kubelet type"), cfg, DOCKERCFG_KEY);
    // The kubelet reads no other type as a pull secret.
    assert!(kubelet_config(&secret("Opaque", DOCKER_CONFIG_JSON_KEY, data)).is_none());
    let opaque = config_from_secret(&secret("Opaque", DOCKER_CONFIG_JSON_KEY, data));
    same(opaque, json, DOCKER_CONFIG_JSON_KEY);
}

fn check_document(data: &[u8]) {
    let json = DockerConfig::from_dockerconfigjson(data);
    let cfg = DockerConfig::from_dockercfg(data);
    check_secret_readers(data, &json, &cfg);

    let doc = read_json(data);
    let mut keys = Vec::new();
    let mut secrets = Vec::new();
    if let Some(doc) = &doc {
        keys_of(doc, &mut keys);
        secrets_of(doc, &mut secrets);
    }
    for (parsed, wrapped) in [(&json, true), (&cfg, false)] {
        match parsed {
            Ok(config) => {
                let doc = doc.as_ref().expect("an accepted config is JSON");
                check_accepted(config, doc, wrapped);
            }
            Err(e) => check_error(e, &keys, &secrets),
        }
    }
}

fn check_accepted(config: &DockerConfig, doc: &Json, wrapped: bool) {
    let registries: Vec<&str> = config.registries().collect();
    assert!(!registries.is_empty() && registries.len() == config.len());
    for key in &registries {
        assert!(
            RegistryKey::parse(key).is_ok(),
            "accepted key {key:?} does not parse"
        );
    }

    // Debug shows the keys and nothing else.
    let mut debug = format!("{config:?}");
    for key in &registries {
        debug = debug.replacen(&format!("{key:?}"), "\u{1}", 1);
    }
    let placeholders = vec!["\u{1}"; registries.len()].join(", ");
    assert_eq!(
        debug,
        format!("DockerConfig {{ registries: [{placeholders}] }}")
    );
    for key in &registries {
        if let Some(c) = config.credentials(key) {
            assert!(!c.username.is_empty());
            let shown = format!("{c:?}").replacen(&format!("{:?}", c.username), "\u{1}", 1);
            assert_eq!(
                shown,
                "Credentials { username: \u{1}, password: \"<redacted>\" }"
            );
        }
    }

    let differs = known_difference(doc, wrapped) && !strict();
    let kubelet = kubelet_read(doc, wrapped);
    if !differs {
        // The kubelet reads it, with the same keys and credentials.
        let kubelet = kubelet.as_ref().unwrap_or_else(|| {
            panic!("accepted, but the kubelet cannot read this config (wrapped: {wrapped})")
        });
        assert_eq!(
            kubelet.keys().map(String::as_str).collect::<Vec<_>>(),
            registries,
            "the kubelet reads other registry keys"
        );
        for key in &registries {
            if let Some(c) = config.credentials(key) {
                let got = (c.username.into_bytes(), c.password.into_bytes());
                assert!(
                    kubelet[*key] == got,
                    "for {key:?} the kubelet sends other credentials than the operator reports"
                );
            }
        }
    }

    // The copy gives the kubelet what the source gives it, and reads back.
    let out = config.to_json();
    let copy = read_json(&out).expect("the output is JSON");
    if !differs {
        assert_eq!(
            kubelet_read(&copy, true),
            kubelet,
            "the copy reads differently"
        );
    }
    let again = DockerConfig::from_dockerconfigjson(&out)
        .unwrap_or_else(|e| panic!("the output does not read back: {e}"));
    assert_eq!(again.registries().collect::<Vec<_>>(), registries);
    for key in &registries {
        assert_eq!(again.credentials(key), config.credentials(key));
    }
    // Every field of every entry is kept, strings unchanged.
    check_fields_kept(doc, wrapped, &copy);
}

/// The entries of an `auths` map as the operator reads them: the last of a
/// repeated key wins.
fn entries(map: &Json) -> BTreeMap<&str, BTreeMap<&str, &Json>> {
    let mut out: BTreeMap<&str, BTreeMap<&str, &Json>> = BTreeMap::new();
    if let Json::Object(pairs) = map {
        for (k, v) in pairs {
            let mut fields = BTreeMap::new();
            if let Json::Object(fs) = v {
                for (f, x) in fs {
                    fields.insert(f.as_str(), x);
                }
            }
            out.insert(k.as_str(), fields);
        }
    }
    out
}

fn check_fields_kept(doc: &Json, wrapped: bool, copy: &Json) {
    let auths = |d: &'_ Json| -> Option<Json> {
        let Json::Object(pairs) = d else { return None };
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == "auths")
            .map(|(_, v)| v.clone())
    };
    let source = if wrapped {
        auths(doc)
    } else {
        Some(doc.clone())
    };
    let (Some(source), Some(written)) = (source, auths(copy)) else {
        panic!("no auths map");
    };
    let (source, written) = (entries(&source), entries(&written));
    assert_eq!(
        source.keys().collect::<Vec<_>>(),
        written.keys().collect::<Vec<_>>()
    );
    for (key, fields) in &source {
        let out = &written[key];
        assert_eq!(
            fields.keys().collect::<Vec<_>>(),
            out.keys().collect::<Vec<_>>(),
            "{key:?}"
        );
        for (f, v) in fields {
            if let Json::Text(s) = v {
                assert!(matches!(out[f], Json::Text(t) if t == s), "{key:?} {f:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// kubectl create secret docker-registry.

/// A Go `json.Marshal` string: `"`, `\` and control characters escaped, and
/// `<`, `>`, `&`, U+2028 and U+2029 as `\u` escapes.
fn go_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `handleDockerCfgJSONContent`: fields in struct order, empty ones omitted.
fn kubectl_json(server: &str, username: &str, password: &str, email: &str) -> Vec<u8> {
    let auth = STANDARD.encode(format!("{username}:{password}"));
    let fields: Vec<String> = [
        ("username", username),
        ("password", password),
        ("email", email),
        ("auth", auth.as_str()),
    ]
    .iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| format!("\"{k}\":{}", go_string(v)))
    .collect();
    format!(
        "{{\"auths\":{{{}:{{{}}}}}}}",
        go_string(server),
        fields.join(",")
    )
    .into_bytes()
}

fn check_kubectl(data: &[u8]) {
    const SERVERS: [&str; 5] = [
        "https://index.docker.io/v1/",
        "registry.example.com",
        "quay.io/org",
        "localhost:5000",
        "*.example.com",
    ];
    let mut u = Unstructured::new(data);
    let server = match u.choose_index(SERVERS.len() + 1) {
        Ok(i) if i < SERVERS.len() => SERVERS[i].to_owned(),
        _ => u.arbitrary::<String>().unwrap_or_default(),
    };
    let (Ok(username), Ok(password), Ok(email)) = (
        u.arbitrary::<String>(),
        u.arbitrary::<String>(),
        u.arbitrary::<String>(),
    ) else {
        return;
    };
    // kubectl requires all three.
    if server.is_empty() || username.is_empty() || password.is_empty() {
        return;
    }
    let bytes = kubectl_json(&server, &username, &password, &email);
    let doc = read_json(&bytes).expect("kubectl writes JSON");

    // The model reads kubectl's output as the auth field says.
    let (user, pass) = match username.split_once(':') {
        Some((u, rest)) => (u.to_owned(), format!("{rest}:{password}")),
        None => (username.clone(), password.clone()),
    };
    let expected = BTreeMap::from([(server.clone(), (user.into_bytes(), pass.into_bytes()))]);
    assert_eq!(kubelet_read(&doc, true), Some(expected), "model");

    check_document(&bytes);
    if RegistryKey::parse(&server).is_ok() && !username.contains(':') {
        let config = DockerConfig::from_dockerconfigjson(&bytes)
            .unwrap_or_else(|e| panic!("kubectl's config is refused: {e}"));
        let c = config.credentials(&server).expect("credentials");
        assert!(c.username == username && c.password == password);
    }

    // from_logins writes what kubectl writes.
    let login = RegistryLogin {
        server: server.clone(),
        username: username.clone(),
        password: password.clone(),
        email: Some(email.clone()),
    };
    if let Ok(config) = DockerConfig::from_logins(&[login]) {
        let ours: serde_json::Value = serde_json::from_slice(&config.to_json()).unwrap();
        let theirs: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(ours, theirs);
    }
}
