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
