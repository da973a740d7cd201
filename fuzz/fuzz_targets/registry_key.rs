//! A registry key (a key of a docker config's `auths` map).
//!
//! The input is the key as text. When it holds two `\x01` bytes, the text
//! between them is taken as a password written into the key: the key is the
//! text without the markers, and the password must not show in any error when
//! it sits in the user information (before the last `@`) or in a query or
//! fragment.
//!
//! Invariants: no panic; an accepted key has the documented shape and its
//! Display parses back to the same key; whitespace anywhere, also around the
//! key, is refused; an error quotes the key at bounded length.

#![no_main]

use libfuzzer_sys::fuzz_target;
use regcred_operator::kubelet::{RegistryKey, RegistryKeyError};

const MARKER: char = '\u{1}';

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parts: Vec<&str> = text.split(MARKER).collect();
    match parts.as_slice() {
        [prefix, secret, rest] => {
            let key = format!("{prefix}{secret}{rest}");
            check(&key);
            check_secret(&key, prefix, secret, rest);
        }
        _ => check(&text),
    }
});

fn check(key: &str) {
    match RegistryKey::parse(key) {
        Ok(k) => {
            let host = k.host();
            assert!(!host.is_empty());
            assert!(host.is_ascii());
            assert_eq!(host, host.to_ascii_lowercase());
            if !host.starts_with('[') {
                for label in host.split('.') {
                    assert!(!label.is_empty() && label.len() <= 63, "{host:?}");
                    assert!(
                        label == "*"
                            || label
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-'),
                        "{host:?}"
                    );
                }
            }
            if let Some(port) = k.port() {
                let n: u32 = port.parse().expect("numeric port");
                assert!((1..=65535).contains(&n) && port.len() <= 5, "{port:?}");
            }
            let path = k.path();
            assert!(!path.starts_with('/') && !path.ends_with('/') && !path.contains("//"));
            assert!(!key.contains('@'), "a key with '@' was accepted: {key:?}");
            // Display is the normalised key and reads back as the same key.
            let shown = k.to_string();
            assert_eq!(
                RegistryKey::parse(&shown).as_ref(),
                Ok(&k),
                "{key:?} shown as {shown:?}"
            );
            assert_eq!(RegistryKey::parse(&shown).unwrap().to_string(), shown);
            assert!(!key.chars().any(|c| c.is_whitespace() || c.is_control()));
            // Surrounding whitespace is refused, as by the kubelet.
            assert!(matches!(
                RegistryKey::parse(&format!(" {key}\n")),
                Err(RegistryKeyError::Whitespace { .. })
            ));
        }
        Err(e) => {
            let text = format!("{e} {e:?}");
            assert_eq!(e.key().is_none(), e == RegistryKeyError::Empty);
            if let Some(quoted) = e.key() {
                assert!(quoted.chars().count() <= 257, "{quoted:?}");
            }
            // The quoted key is at most 257 characters, each escaped to at
            // most 10 ("\u{10ffff}"), twice (Display and Debug).
            assert!(text.chars().count() < 6000, "{}", text.len());
            // Whitespace anywhere, also around the key, is refused first.
            if !key.is_empty() && key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                assert!(matches!(e, RegistryKeyError::Whitespace { .. }), "{e:?}");
            }
        }
    }
}

fn check_secret(key: &str, prefix: &str, secret: &str, rest: &str) {
    if secret.chars().count() < 4 || secret.contains(['<', '>', '…']) {
        return;
    }
    // Only when nothing but the password holds it.
    if prefix.contains(secret) || rest.contains(secret) || "<redacted>".contains(secret) {
        return;
    }
    let (start, end) = (prefix.len(), prefix.len() + secret.len());
    // In the user information: before the last '@' and after a scheme.
    let at = key.rfind('@');
    let scheme_end = at
        .and_then(|at| key[..at].find("://"))
        .filter(|&i| {
            i > 0
                && key[..i]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        })
        .map_or(0, |i| i + 3);
    let in_userinfo = at.is_some_and(|at| end <= at) && start >= scheme_end;
    // In a query or fragment.
    let in_query = key.find(['?', '#']).is_some_and(|q| start > q);
    if !in_userinfo && !in_query {
        return;
    }
    let Err(e) = RegistryKey::parse(key) else {
        panic!("{key:?} with user information or a query was accepted");
    };
    // Messages are made of fixed text, the quoted key and (for an
    // unsupported scheme) the scheme.
    let mut shown = vec![e.key().unwrap_or_default()];
    if let RegistryKeyError::UnsupportedScheme { scheme, .. } = &e {
        shown.push(scheme);
    }
    for s in shown {
        assert!(
            !s.contains(secret),
            "password {secret:?} of {key:?} shown: {e}"
        );
    }
}
