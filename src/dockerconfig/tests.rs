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
        DockerConfig::from_logins(&[login("r.io", "u", "p", None), login("r.io", "v", "q", None)])
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
        DockerConfig::from_dockerconfigjson(b"{\"auths\":{\"r.io\":{\"password\":\"\xc3\x28\"}}}")
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
