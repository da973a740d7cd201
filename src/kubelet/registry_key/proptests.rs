use super::*;
use proptest::prelude::*;

/// A DNS label as written in a key: letters of either case, digits and
/// inner '-', or a whole-label '*'.
fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9]([a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?",
        1 => Just("*".to_owned()),
    ]
}

/// A valid host: a DNS name whose last label is not numeric, an IPv4
/// address or a bracketed IPv6 address.
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (prop::collection::vec(label(), 0..4), "[a-zA-Z][a-zA-Z0-9]{0,5}").prop_map(
            |(mut labels, last)| {
                labels.push(last);
                labels.join(".")
            }
        ),
        1 => any::<Ipv4Addr>().prop_map(|a| a.to_string()),
        1 => any::<Ipv6Addr>().prop_map(|a| format!("[{a}]")),
    ]
}

/// Path segments, including the API-prefix look-alikes `v1` and `v2`.
fn segments() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop_oneof![
            3 => "[a-zA-Z0-9_~-][a-zA-Z0-9._~-]{0,6}",
            1 => Just("v1".to_owned()),
            1 => Just("v2".to_owned()),
        ],
        0..4,
    )
}

/// A key as people write it, with the parts it must normalise to.
#[derive(Debug, Clone)]
struct Written {
    key: String,
    host: String,
    port: Option<u16>,
    path: String,
}

fn written() -> impl Strategy<Value = Written> {
    (
        prop_oneof![Just(""), Just("http://"), Just("https://")],
        host(),
        prop::option::of(1u16..=65535),
        prop_oneof![Just(""), Just("/v1/"), Just("/v2/"), Just("/")],
        segments(),
        any::<bool>(),
        Just(""),
    )
        .prop_map(|(scheme, host, port, api, segments, trailing, space)| {
            let path = segments.join("/");
            let mut key = format!("{space}{scheme}{host}");
            if let Some(port) = port {
                key.push_str(&format!(":{port}"));
            }
            // Without an API prefix, a '/' separates host and path.
            let api = if api.is_empty() && !path.is_empty() {
                "/"
            } else {
                api
            };
            key.push_str(api);
            key.push_str(&path);
            if trailing && !path.is_empty() {
                key.push('/');
            }
            key.push_str(space);
            // Without an API prefix, a path that starts with a "v1" or "v2" segment
            // has one.
            let path = if api != "/" {
                path
            } else if path == "v1" || path == "v2" {
                String::new()
            } else if let Some(rest) = path.strip_prefix("v1/").or(path.strip_prefix("v2/")) {
                rest.to_owned()
            } else {
                path
            };
            Written {
                key,
                host: host.to_ascii_lowercase(),
                port,
                path,
            }
        })
}

/// Text made of the characters that matter to the parser.
fn urlish() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9:/@?#.\\[\\]*%_~ é-]{0,40}"
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn prop_parse_never_panics(s in any::<String>(), t in urlish()) {
        let _ = RegistryKey::parse(&s);
        let _ = RegistryKey::parse(&t);
        let _ = redact_key(&s);
        let _ = redact_key(&t);
    }

    #[test]
    fn prop_written_keys_parse_to_their_parts(w in written()) {
        let k = RegistryKey::parse(&w.key)
            .unwrap_or_else(|e| panic!("{:?} should parse: {e}", w.key));
        prop_assert_eq!(k.host(), w.host.as_str());
        let port = w.port.map(|p| p.to_string());
        prop_assert_eq!(k.port(), port.as_deref());
        prop_assert_eq!(k.path(), w.path.as_str());
    }

    /// Display writes a key that parses back to the same key, and
    /// normalising is idempotent.
    #[test]
    fn prop_display_round_trips(w in written(), t in urlish()) {
        for key in [w.key.as_str(), t.as_str()] {
            let Ok(k) = RegistryKey::parse(key) else { continue };
            let shown = k.to_string();
            prop_assert_eq!(RegistryKey::parse(&shown), Ok(k.clone()), "{:?} -> {:?}", key, shown);
            prop_assert_eq!(RegistryKey::parse(&shown).unwrap().to_string(), shown);
        }
    }

    /// The documented shape of a parsed key.
    #[test]
    fn prop_parsed_key_invariants(w in written(), t in urlish()) {
        for key in [w.key.as_str(), t.as_str()] {
            let Ok(k) = RegistryKey::parse(key) else { continue };
            prop_assert!(!k.host().is_empty());
            prop_assert_eq!(k.host(), k.host().to_ascii_lowercase());
            if let Some(port) = k.port() {
                prop_assert!(valid_port(port), "{:?}", port);
            }
            prop_assert!(!k.path().starts_with('/') && !k.path().ends_with('/'));
            prop_assert!(!k.path().contains("//"));
            // Surrounding whitespace is refused, as by the kubelet.
            let padded = RegistryKey::parse(&format!(" {key} "));
            let refused = matches!(padded, Err(RegistryKeyError::Whitespace { .. }));
            prop_assert!(refused, "{:?}", padded);
        }
    }

    /// Errors quote the key with its user information, query and
    /// fragment redacted, so a password written there never shows.
    #[test]
    fn prop_errors_never_show_userinfo_or_query(
        scheme in prop_oneof![Just(""), Just("https://"), Just("ftp://"), Just("1x://")],
        user in "[a-z]{0,5}",
        // "Zq" is in no message, so only the key can show it.
        secret in "[a-zA-Z0-9:/?#.%!$&*+=~ -]{0,8}Zq[a-zA-Z0-9:/?#.%!$&*+=~ -]{0,8}",
        rest in urlish(),
        in_query in any::<bool>(),
    ) {
        let key = if in_query {
            format!("{scheme}r.io/x?token={secret}{rest}")
        } else {
            format!("{scheme}{user}:{secret}@r.io{rest}")
        };
        // Only meaningful when the secret does not also appear in the
        // parts of the key that may be shown.
        prop_assume!(!format!("{scheme}r.io{rest}").contains(&secret));
        prop_assume!(!secret.contains(['@', '<', '>']));
        let redacted = redact_key(&key);
        prop_assert!(!redacted.contains(&secret), "{:?} -> {:?}", key, redacted);
        if let Err(e) = RegistryKey::parse(&key) {
            let text = format!("{e} {e:?}");
            prop_assert!(!text.contains(&secret), "{:?} -> {}", key, text);
        }
    }

    /// Messages stay short whatever the key.
    #[test]
    fn prop_error_messages_are_bounded(s in any::<String>(), t in urlish(), n in 0usize..2000) {
        let long = t.repeat(n / t.len().max(1));
        for key in [s.as_str(), t.as_str(), long.as_str()] {
            if let Err(e) = RegistryKey::parse(key) {
                let key_chars = e.key().map_or(0, |k| k.chars().count());
                prop_assert!(key_chars <= MAX_QUOTED_KEY_CHARS + 1, "{}", key_chars);
                prop_assert_eq!(e.key().map(str::to_owned), (e != RegistryKeyError::Empty).then(|| redact_key(key)));
            }
        }
    }
}
