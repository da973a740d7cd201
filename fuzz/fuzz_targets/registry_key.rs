//! A registry key (a key of a docker config's `auths` map), validated by
//! `RegistryKey::parse`.
//!
//! The oracle is the kubelet's reading of a key (`spec_kubelet`, from
//! `k8s.io/kubernetes/pkg/credentialprovider/keyring.go` `Add`: `https://`
//! added when there is no `http(s)://`, Go's `url.Parse`, a leading `/v1/`
//! or `/v2/` dropped, the index key `host[:port][path]`) plus the rules
//! `RegistryKey` documents on top (RFC 1123 host names with `*` labels, IPv4,
//! bracketed IPv6, ports 1-65535, unreserved path characters, no user
//! information, query, fragment or whitespace). Checked:
//!
//! * every accepted key is one the kubelet reads, under every Go release,
//!   as the host (ignoring case), port and path `RegistryKey` reports; the
//!   key has the documented shape and its `Display` reads back as itself;
//! * keys built from the documented grammar (labels, `*`, IPv4, IPv6, port,
//!   path, `/v1/` or `/v2/`, scheme, trailing `/`, any case) are accepted
//!   with exactly their parts;
//! * metamorphic: adding `https://` or `http://`, upper-casing the host or
//!   adding a trailing `/` gives the same key; surrounding whitespace is
//!   refused;
//! * a credential in the user information (`[http(s)://]user:password@`) or
//!   in a query or fragment makes the key refused, and never shows in the
//!   error: the error for the key and for the key with that credential's
//!   letters changed read the same wherever the credential is.
//!
//! The input is the key as text. When it holds two `\x01` bytes, the text
//! between them is such a credential.

#![no_main]

mod key_secrets;
mod spec_kubelet;

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use regcred_operator::kubelet::{RegistryKey, RegistryKeyError};
use spec_kubelet::{GO_RELEASES, index_key, read_key};

const MARKER: char = '\u{1}';

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parts: Vec<&str> = text.split(MARKER).collect();
    match parts.as_slice() {
        [prefix, secret, rest] => {
            let key = format!("{prefix}{secret}{rest}");
            check(&key);
            check_secret(prefix, secret, rest);
        }
        _ => check(&text),
    }
    check_generated(data);
});

fn check(key: &str) {
    match RegistryKey::parse(key) {
        Ok(k) => check_accepted(key, &k),
        Err(e) => {
            assert_eq!(e.key().is_none(), e == RegistryKeyError::Empty);
            if let Some(quoted) = e.key() {
                assert!(quoted.chars().count() <= 257, "{quoted:?}");
            }
            // Bounded whatever the key's length, the quoted scheme included.
            assert!(
                format!("{e} {e:?}").chars().count() < 6000,
                "{} characters",
                format!("{e}").len()
            );
            if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                assert!(matches!(e, RegistryKeyError::Whitespace { .. }), "{e:?}");
            }
        }
    }
}

/// A DNS label of RFC 1123, or `*`.
fn label_ok(label: &str) -> bool {
    let b = label.as_bytes();
    label == "*"
        || (!b.is_empty()
            && b.len() <= 63
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-')
}

fn check_accepted(key: &str, k: &RegistryKey) {
    // The documented shape.
    let host = k.host();
    assert_eq!(host, host.to_ascii_lowercase());
    if let Some(inner) = host.strip_prefix('[') {
        let address = inner.strip_suffix(']').expect("closing bracket");
        assert!(address.parse::<std::net::Ipv6Addr>().is_ok(), "{host:?}");
    } else if host.parse::<std::net::Ipv4Addr>().is_err() {
        assert!(
            host.len() <= 253 && host.split('.').all(label_ok),
            "{host:?}"
        );
        let last = host.rsplit('.').next().unwrap_or_default();
        assert!(!last.bytes().all(|b| b.is_ascii_digit()), "{host:?}");
    }
    if let Some(port) = k.port() {
        assert!(port.len() <= 5 && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p)));
    }
    let path = k.path();
    if !path.is_empty() {
        for segment in path.split('/') {
            assert!(
                !segment.is_empty() && segment != "." && segment != "..",
                "{path:?}"
            );
            assert!(
                segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
            );
        }
    }
    assert!(
        !key.contains(['@', '?', '#']) && !key.chars().any(|c| c.is_whitespace() || c.is_control())
    );

    // The kubelet reads it alike under every Go release, as these parts.
    let mut readings = GO_RELEASES.iter().map(|&go| read_key(go, key));
    let url = readings
        .next()
        .flatten()
        .unwrap_or_else(|| panic!("the kubelet skips {key:?}"));
    assert!(readings.all(|r| r.as_ref() == Some(&url)), "{key:?}");
    let mut authority = host.to_owned();
    if let Some(port) = k.port() {
        authority.push(':');
        authority.push_str(port);
    }
    assert_eq!(
        String::from_utf8_lossy(&url.host).to_ascii_lowercase(),
        authority
    );
    let raw = String::from_utf8_lossy(&url.path).into_owned();
    let expected = if raw == "/v1" || raw == "/v2" {
        // Documented: read as the API prefix, not as a path.
        String::new()
    } else {
        let index = String::from_utf8(index_key(GO_RELEASES[0], key).unwrap()).unwrap();
        let p = &index[url.host.len()..];
        let p = p.strip_prefix('/').unwrap_or(p);
        p.strip_suffix('/').unwrap_or(p).to_owned()
    };
    assert_eq!(path, expected, "path of {key:?}");

    // Display reads back as the same key.
    let shown = k.to_string();
    assert_eq!(
        RegistryKey::parse(&shown).as_ref(),
        Ok(k),
        "{key:?} shown as {shown:?}"
    );

    // Metamorphic relations.
    let same = |other: String| {
        assert_eq!(
            RegistryKey::parse(&other).as_ref(),
            Ok(k),
            "{other:?} and {key:?}"
        );
    };
    let bare = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    if bare.len() == key.len() {
        same(format!("https://{key}"));
        same(format!("http://{key}"));
    }
    let scheme = &key[..key.len() - bare.len()];
    let (authority, rest) = bare.split_at(bare.find('/').unwrap_or(bare.len()));
    same(format!("{scheme}{}{rest}", authority.to_ascii_uppercase()));
    if !key.ends_with('/') {
        same(format!("{key}/"));
    }
    assert!(matches!(
        RegistryKey::parse(&format!(" {key}\n")),
        Err(RegistryKeyError::Whitespace { .. })
    ));
}

/// Keys built from the documented grammar are accepted with their parts.
fn check_generated(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(generated) = generate(&mut u) else {
        return;
    };
    let (key, host, port, path) = generated;
    let k = RegistryKey::parse(&key).unwrap_or_else(|e| panic!("{key:?} is refused: {e}"));
    assert_eq!(
        (k.host(), k.port(), k.path()),
        (host.as_str(), port.as_deref(), path.as_str()),
        "{key:?}"
    );
}

type Generated = (String, String, Option<String>, String);

fn generate(u: &mut Unstructured) -> arbitrary::Result<Generated> {
    const LABEL: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-";
    const SEGMENT: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
    let host = match u.int_in_range(0..=9)? {
        0 => std::net::Ipv4Addr::from(u.arbitrary::<u32>()?).to_string(),
        1 => format!("[{}]", std::net::Ipv6Addr::from(u.arbitrary::<u128>()?)),
        _ => {
            let mut labels = Vec::new();
            for _ in 0..u.int_in_range(1..=4)? {
                if u.ratio(1, 6)? {
                    labels.push("*".to_owned());
                    continue;
                }
                let len = u.int_in_range(1..=63)?;
                let mut label: Vec<u8> = (0..len)
                    .map(|_| u.choose(LABEL).copied())
                    .collect::<arbitrary::Result<_>>()?;
                for end in [0, len - 1] {
                    if label[end] == b'-' {
                        label[end] = b'x';
                    }
                }
                labels.push(String::from_utf8(label).unwrap());
            }
            // A numeric last label would read as an IPv4 address.
            let last = labels.last_mut().unwrap();
            if last.bytes().all(|b| b.is_ascii_digit()) {
                last.replace_range(..1, "z");
            }
            let host = labels.join(".");
            if host.len() > 253 {
                return Err(arbitrary::Error::IncorrectFormat);
            }
            host
        }
    };
    let port = if u.arbitrary()? {
        Some(u.int_in_range(1..=65535u32)?.to_string())
    } else {
        None
    };
    let mut segments = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        let len = u.int_in_range(1..=12)?;
        let segment: String = (0..len)
            .map(|_| u.choose(SEGMENT).map(|&b| b as char))
            .collect::<arbitrary::Result<_>>()?;
        if segment == "." || segment == ".." {
            return Err(arbitrary::Error::IncorrectFormat);
        }
        segments.push(segment);
    }
    let path = segments.join("/");
    let scheme = *u.choose(&["", "https://", "http://"])?;
    // An API prefix is needed when the path itself starts with v1 or v2.
    let first = segments.first().map(String::as_str);
    let api = if matches!(first, Some("v1" | "v2")) || u.arbitrary()? {
        *u.choose(&["/v1", "/v2"])?
    } else {
        ""
    };
    let slash = if u.arbitrary()? { "/" } else { "" };
    let written_host = if u.arbitrary()? {
        host.to_ascii_uppercase()
    } else {
        host.clone()
    };
    let colon_port = port.as_ref().map(|p| format!(":{p}")).unwrap_or_default();
    let key = if path.is_empty() {
        format!("{scheme}{written_host}{colon_port}{api}{slash}")
    } else {
        format!("{scheme}{written_host}{colon_port}{api}/{path}{slash}")
    };
    Ok((key, host.to_ascii_lowercase(), port, path))
}

fn check_secret(prefix: &str, secret: &str, rest: &str) {
    if !key_secrets::telling(secret) {
        return;
    }
    if !key_secrets::in_userinfo(prefix, rest) && !key_secrets::in_query(prefix) {
        return;
    }
    let key = format!("{prefix}{secret}{rest}");
    let Err(e) = RegistryKey::parse(&key) else {
        panic!("{key:?} with user information or a query was accepted");
    };
    let visible = format!("{prefix}{rest}<redacted>…");
    if visible.contains(secret) {
        return;
    }
    // The quoted key and scheme never hold it.
    let mut quoted = vec![e.key().unwrap_or_default()];
    if let RegistryKeyError::UnsupportedScheme { scheme, .. } = &e {
        quoted.push(scheme);
    }
    for q in quoted {
        assert!(!q.contains(secret), "{secret:?} of {key:?} shown: {e}");
    }
    // Nor does any text of the error: the same error for a changed credential
    // shows the credential exactly where it is fixed text.
    let other = RegistryKey::parse(&format!("{prefix}{}{rest}", key_secrets::disguise(secret)))
        .expect_err("the same key with other letters");
    let text = |e: &RegistryKeyError| format!("{e} {e:?} {e:#?}");
    if !text(&other).contains(secret) {
        assert!(
            !text(&e).contains(secret),
            "{secret:?} of {key:?} shown: {e}"
        );
    }
}
