//! Registry keys (the keys of a docker config's `auths` map) as the kubelet
//! reads them.
//!
//! The kubelet (`pkg/credentialprovider/keyring.go`) turns every key of a
//! pull secret into a URL: it adds `https://` when the key has no scheme,
//! parses it, drops a leading `/v1/` or `/v2/` from the path and then matches
//! image references on `host[:port][/path]`, where the host may contain `*`
//! globs such as `*.example.com`.
//!
//! [`RegistryKey::parse`] follows that reading but is stricter than Go's URL
//! parser: anything the kubelet would silently misread (user information,
//! queries, whitespace, odd schemes, bad ports) is rejected with an error that
//! says what is wrong.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The longest key that is quoted in full in an error message; longer keys are
/// shortened so that a hostile secret cannot blow up a status message.
const MAX_QUOTED_KEY_CHARS: usize = 256;

/// The longest host name DNS allows.
const MAX_HOST_LEN: usize = 253;

/// The longest label DNS allows.
const MAX_LABEL_LEN: usize = 63;

/// A registry key in the normalised form the kubelet matches on:
/// `host[:port][/path]`.
///
/// * `host` is lower-cased. It is a DNS name whose labels may be `*` (a glob
///   the kubelet expands per label), an IPv4 address, or a bracketed IPv6
///   address (kept with its brackets, as Go's `url.URL.Host` does).
/// * `port` is kept as written (the kubelet compares ports as strings).
/// * `path` has the `/v1/` or `/v2/` API prefix and the leading and trailing
///   `/` removed; it is empty when the key names a whole registry.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct RegistryKey {
    host: String,
    port: Option<String>,
    path: String,
}

/// Why a registry key was rejected.
///
/// Every message quotes the key (registry keys are not secret), except that
/// user information (`user:password@`) and any query or fragment are replaced
/// by `<redacted>` before quoting, since those parts may hold credentials.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum RegistryKeyError {
    /// The key is empty.
    #[error("registry key is empty")]
    Empty,
    /// The key contains whitespace or control characters.
    #[error("registry key {key:?} contains whitespace or control characters")]
    Whitespace { key: String },
    /// The key has a scheme other than `http` or `https`.
    #[error(
        "registry key {key:?} has unsupported scheme {scheme:?}: only http and https are allowed"
    )]
    UnsupportedScheme { key: String, scheme: String },
    /// The key contains `user@` or `user:password@` before the host.
    #[error("registry key {key:?} contains user information (user@host), which is not allowed")]
    UserInfo { key: String },
    /// The key contains a `?query` or `#fragment`.
    #[error("registry key {key:?} contains a query or fragment ('?' or '#'), which is not allowed")]
    QueryOrFragment { key: String },
    /// The key has no host.
    #[error("registry key {key:?} has no host")]
    MissingHost { key: String },
    /// The host is not a DNS name, an IPv4 address or a bracketed IPv6 address.
    #[error("registry key {key:?} has an invalid host: {reason}")]
    InvalidHost { key: String, reason: &'static str },
    /// The port is not a number from 1 to 65535.
    #[error("registry key {key:?} has an invalid port: expected a number from 1 to 65535")]
    InvalidPort { key: String },
    /// The path is malformed.
    #[error("registry key {key:?} has an invalid path: {reason}")]
    InvalidPath { key: String, reason: &'static str },
}

impl RegistryKeyError {
    /// The rejected key as quoted in the message (credentials redacted,
    /// very long keys shortened); `None` for [`RegistryKeyError::Empty`].
    pub fn key(&self) -> Option<&str> {
        match self {
            RegistryKeyError::Empty => None,
            RegistryKeyError::Whitespace { key }
            | RegistryKeyError::UnsupportedScheme { key, .. }
            | RegistryKeyError::UserInfo { key }
            | RegistryKeyError::QueryOrFragment { key }
            | RegistryKeyError::MissingHost { key }
            | RegistryKeyError::InvalidHost { key, .. }
            | RegistryKeyError::InvalidPort { key }
            | RegistryKeyError::InvalidPath { key, .. } => Some(key),
        }
    }
}

impl RegistryKey {
    /// Parses a key of a docker config's `auths` map.
    ///
    /// Accepted: `[http://|https://]host[:port][/path]`. Whitespace anywhere,
    /// also around the key, is refused: the kubelet cannot parse such a key
    /// and would skip the entry. See the module documentation for the rules.
    ///
    /// Unlike the kubelet, a path of exactly `/v1` or `/v2` is treated like
    /// `/v1/` or `/v2/` (the kubelet would keep it as a path `v1`/`v2`, which
    /// never matches a real image).
    pub fn parse(key: &str) -> Result<RegistryKey, RegistryKeyError> {
        if key.is_empty() {
            return Err(RegistryKeyError::Empty);
        }
        let quoted = || redact_key(key);

        if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(RegistryKeyError::Whitespace { key: quoted() });
        }

        let rest = match split_scheme(key) {
            Some((scheme, rest)) => {
                if scheme != "http" && scheme != "https" {
                    return Err(RegistryKeyError::UnsupportedScheme {
                        key: quoted(),
                        scheme: scheme.to_owned(),
                    });
                }
                rest
            }
            None => key,
        };

        if rest.contains(['?', '#']) {
            return Err(RegistryKeyError::QueryOrFragment { key: quoted() });
        }

        let (authority, raw_path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(RegistryKeyError::UserInfo { key: quoted() });
        }
        if authority.is_empty() {
            return Err(RegistryKeyError::MissingHost { key: quoted() });
        }

        let (host, port) = split_host_port(authority).map_err(|reason| match reason {
            HostPortError::MissingHost => RegistryKeyError::MissingHost { key: quoted() },
            HostPortError::Host(reason) => RegistryKeyError::InvalidHost {
                key: quoted(),
                reason,
            },
        })?;
        let host = validate_host(host).map_err(|reason| RegistryKeyError::InvalidHost {
            key: quoted(),
            reason,
        })?;
        if let Some(port) = port
            && !valid_port(port)
        {
            return Err(RegistryKeyError::InvalidPort { key: quoted() });
        }
        let path = normalise_path(raw_path).map_err(|reason| RegistryKeyError::InvalidPath {
            key: quoted(),
            reason,
        })?;

        Ok(RegistryKey {
            host,
            port: port.map(str::to_owned),
            path,
        })
    }

    /// The lower-cased host; an IPv6 address keeps its brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port as written, if any.
    pub fn port(&self) -> Option<&str> {
        self.port.as_deref()
    }

    /// The path without the API prefix and without leading or trailing `/`;
    /// empty when the key names a whole registry.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for RegistryKey {
    /// The normalised key `host[:port][/path]`, which parses back to the same
    /// key. A path whose first segment is `v1` or `v2` is written after a
    /// `/v2/` API prefix (`host/v2/v1/x`), as `host/v1/x` would read as the
    /// path `x`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)?;
        if let Some(port) = &self.port {
            write!(f, ":{port}")?;
        }
        if !self.path.is_empty() {
            let first = self.path.split('/').next().unwrap_or_default();
            if first == "v1" || first == "v2" {
                f.write_str("/v2")?;
            }
            write!(f, "/{}", self.path)?;
        }
        Ok(())
    }
}

/// Returns `(scheme, rest)` when `key` starts with `scheme://`, where the
/// scheme follows RFC 3986 (`ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`).
fn split_scheme(key: &str) -> Option<(&str, &str)> {
    let idx = key.find("://")?;
    let scheme = &key[..idx];
    let mut chars = scheme.chars();
    let first = chars.next()?;
    if !first.is_ascii_alphabetic()
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    Some((scheme, &key[idx + 3..]))
}

enum HostPortError {
    MissingHost,
    Host(&'static str),
}

/// Splits `host[:port]` or `[ipv6][:port]`. The port is returned unchecked
/// (possibly empty).
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), HostPortError> {
    if authority.starts_with('[') {
        let Some(close) = authority.find(']') else {
            return Err(HostPortError::Host("an IPv6 address has no closing ']'"));
        };
        let host = &authority[..=close];
        let after = &authority[close + 1..];
        if after.is_empty() {
            return Ok((host, None));
        }
        return match after.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None => Err(HostPortError::Host(
                "unexpected characters after the IPv6 address",
            )),
        };
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if let Some(port) = port
        && port.contains(':')
    {
        return Err(HostPortError::Host(
            "too many ':' (IPv6 addresses must be written in brackets)",
        ));
    }
    if host.is_empty() {
        return Err(HostPortError::MissingHost);
    }
    Ok((host, port))
}

/// Checks a host and returns it lower-cased.
fn validate_host(host: &str) -> Result<String, &'static str> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').unwrap_or(inner);
        if inner.parse::<Ipv6Addr>().is_err() {
            return Err("not a valid IPv6 address");
        }
        return Ok(host.to_ascii_lowercase());
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(host.to_owned());
    }
    if !host.is_ascii() {
        return Err(
            "only ASCII letters, digits, '-', '.' and '*' are allowed (write internationalised names in punycode)",
        );
    }
    if host.len() > MAX_HOST_LEN {
        return Err("longer than 253 characters");
    }
    let labels: Vec<&str> = host.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            return Err("empty label (leading, trailing or doubled '.')");
        }
        if *label == "*" {
            continue;
        }
        if label.len() > MAX_LABEL_LEN {
            return Err("a label is longer than 63 characters");
        }
        if label.contains('*') {
            return Err("'*' must be a whole label, as in *.example.com");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("only ASCII letters, digits, '-', '.' and '*' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label starts or ends with '-'");
        }
    }
    // A name whose last label is numeric is meant as an IPv4 address (as in
    // the WHATWG URL rules), and it did not parse as one.
    if labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("looks like an IPv4 address but is not a valid one");
    }
    Ok(host.to_ascii_lowercase())
}

fn valid_port(port: &str) -> bool {
    !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p))
}

/// Strips the API prefix and the surrounding `/` and checks what is left.
fn normalise_path(raw: &str) -> Result<String, &'static str> {
    let path = if raw == "/v1" || raw == "/v2" {
        ""
    } else if let Some(rest) = raw
        .strip_prefix("/v1/")
        .or_else(|| raw.strip_prefix("/v2/"))
    {
        rest
    } else {
        raw.strip_prefix('/').unwrap_or(raw)
    };
    let path = path.strip_suffix('/').unwrap_or(path);
    if path.is_empty() {
        return Ok(String::new());
    }
    for segment in path.split('/') {
        if segment.is_empty() {
            return Err("empty path segment ('//')");
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
        {
            return Err("only ASCII letters, digits, '-', '.', '_', '~' and '/' are allowed");
        }
        if segment == "." || segment == ".." {
            return Err("'.' and '..' segments are not allowed");
        }
    }
    Ok(path.to_owned())
}

/// The key as it may be quoted in a message: user information and any query or
/// fragment are replaced by `<redacted>`, and very long keys are shortened.
///
/// This errs on the side of hiding too much: everything up to the last `@`
/// (after a scheme) is hidden, and everything after the first `?` or `#`.
/// When a `?` or `#` comes before the last `@` (a password containing `?` or
/// `#`), everything after the scheme is hidden.
pub(crate) fn redact_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len().min(MAX_QUOTED_KEY_CHARS + 16));
    let query = key.find(['?', '#']);
    let mut visible_from = 0;
    if let Some(at) = key.rfind('@') {
        // Keep a scheme in front of the user information, but only one that
        // looks like a scheme: a password may contain "://" too.
        let scheme_end = key[..at]
            .find("://")
            .filter(|&i| {
                i > 0
                    && key[..i]
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
            })
            .map_or(0, |i| i + 3);
        out.push_str(&key[..scheme_end]);
        out.push_str("<redacted>");
        if query.is_some_and(|q| q < at) {
            return shorten(out);
        }
        visible_from = at;
    }
    match query {
        Some(q) => {
            out.push_str(&key[visible_from..=q]);
            out.push_str("<redacted>");
        }
        None => out.push_str(&key[visible_from..]),
    }
    shorten(out)
}

/// Shortens a quoted key to [`MAX_QUOTED_KEY_CHARS`] characters and `…`.
fn shorten(mut out: String) -> String {
    if out.chars().count() > MAX_QUOTED_KEY_CHARS {
        out = out.chars().take(MAX_QUOTED_KEY_CHARS).collect();
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(key: &str) -> RegistryKey {
        RegistryKey::parse(key).unwrap_or_else(|e| panic!("{key:?} should parse: {e}"))
    }

    fn err(key: &str) -> RegistryKeyError {
        match RegistryKey::parse(key) {
            Ok(k) => panic!("{key:?} should be rejected, got {k:?}"),
            Err(e) => e,
        }
    }

    fn norm(key: &str) -> String {
        ok(key).to_string()
    }

    #[test]
    fn docker_hub_v1() {
        let k = ok("https://index.docker.io/v1/");
        assert_eq!(k.host(), "index.docker.io");
        assert_eq!(k.port(), None);
        assert_eq!(k.path(), "");
        assert_eq!(k.to_string(), "index.docker.io");
    }

    #[test]
    fn port_and_path() {
        let k = ok("registry.example.com:5000/team");
        assert_eq!(k.host(), "registry.example.com");
        assert_eq!(k.port(), Some("5000"));
        assert_eq!(k.path(), "team");
        assert_eq!(k.to_string(), "registry.example.com:5000/team");
    }

    #[test]
    fn ipv4_with_port() {
        let k = ok("127.0.0.1:5000");
        assert_eq!(k.host(), "127.0.0.1");
        assert_eq!(k.port(), Some("5000"));
        assert_eq!(k.path(), "");
    }

    #[test]
    fn ipv6() {
        let k = ok("[::1]:5000/x");
        assert_eq!(k.host(), "[::1]");
        assert_eq!(k.port(), Some("5000"));
        assert_eq!(k.path(), "x");
        assert_eq!(k.to_string(), "[::1]:5000/x");
        assert_eq!(ok("http://[FE80::1]").host(), "[fe80::1]");
        assert!(matches!(err("[::1"), RegistryKeyError::InvalidHost { .. }));
        assert!(matches!(
            err("[zz::1]"),
            RegistryKeyError::InvalidHost { .. }
        ));
        assert!(matches!(
            err("[::1]x"),
            RegistryKeyError::InvalidHost { .. }
        ));
        assert!(matches!(err("::1"), RegistryKeyError::InvalidHost { .. }));
        assert!(matches!(
            err("fe80::1"),
            RegistryKeyError::InvalidHost { .. }
        ));
        assert!(matches!(
            err("[::1]:0"),
            RegistryKeyError::InvalidPort { .. }
        ));
    }

    #[test]
    fn empty_and_blank() {
        assert_eq!(err(""), RegistryKeyError::Empty);
        assert!(matches!(err("  \t\n"), RegistryKeyError::Whitespace { .. }));
    }

    #[test]
    fn scheme_without_host() {
        assert!(matches!(
            err("http://"),
            RegistryKeyError::MissingHost { .. }
        ));
        assert!(matches!(
            err("https:///v2/"),
            RegistryKeyError::MissingHost { .. }
        ));
        assert!(matches!(err(":5000"), RegistryKeyError::MissingHost { .. }));
        assert!(matches!(err("/team"), RegistryKeyError::MissingHost { .. }));
    }

    #[test]
    fn whitespace_inside() {
        assert!(matches!(
            err("exa mple.com"),
            RegistryKeyError::Whitespace { .. }
        ));
        assert!(matches!(
            err("a.io/x\ty"),
            RegistryKeyError::Whitespace { .. }
        ));
        assert!(matches!(
            err("a.io\u{0}"),
            RegistryKeyError::Whitespace { .. }
        ));
    }

    #[test]
    fn surrounding_whitespace_is_refused() {
        // The kubelet's url.Parse refuses these, so it would never use the entry.
        for key in ["  https://a.io/v2/  ", "\na.io\n", "a.io\n", " a.io", "   "] {
            assert!(
                matches!(err(key), RegistryKeyError::Whitespace { .. }),
                "{key:?}"
            );
        }
    }

    #[test]
    fn schemes() {
        assert_eq!(norm("http://a.io"), "a.io");
        assert_eq!(norm("https://a.io"), "a.io");
        match err("ftp://x") {
            RegistryKeyError::UnsupportedScheme { scheme, key } => {
                assert_eq!(scheme, "ftp");
                assert_eq!(key, "ftp://x");
            }
            e => panic!("unexpected {e:?}"),
        }
        // The kubelet only recognises lower-case schemes.
        assert!(matches!(
            err("HTTPS://a.io"),
            RegistryKeyError::UnsupportedScheme { .. }
        ));
        assert!(matches!(
            err("oci://a.io"),
            RegistryKeyError::UnsupportedScheme { .. }
        ));
    }

    #[test]
    fn ports() {
        assert!(matches!(
            err("host:99999"),
            RegistryKeyError::InvalidPort { .. }
        ));
        assert!(matches!(
            err("host:abc"),
            RegistryKeyError::InvalidPort { .. }
        ));
        assert!(matches!(err("host:"), RegistryKeyError::InvalidPort { .. }));
        assert!(matches!(
            err("host:0"),
            RegistryKeyError::InvalidPort { .. }
        ));
        assert!(matches!(
            err("host:65536"),
            RegistryKeyError::InvalidPort { .. }
        ));
        assert!(matches!(
            err("host:-1"),
            RegistryKeyError::InvalidPort { .. }
        ));
        assert!(matches!(
            err("host:+80"),
            RegistryKeyError::InvalidPort { .. }
        ));
        assert!(matches!(
            err("host:0000000080"),
            RegistryKeyError::InvalidPort { .. }
        ));
        assert_eq!(ok("host:65535").port(), Some("65535"));
        assert_eq!(ok("host:1").port(), Some("1"));
        assert!(matches!(
            err("host:1:2"),
            RegistryKeyError::InvalidHost { .. }
        ));
    }

    #[test]
    fn api_prefixes() {
        assert_eq!(norm("https://a.io/v1/"), "a.io");
        assert_eq!(norm("https://a.io/v2/"), "a.io");
        assert_eq!(norm("a.io/v1"), "a.io");
        assert_eq!(norm("a.io/v2"), "a.io");
        assert_eq!(norm("a.io/v2/team/app"), "a.io/team/app");
        assert_eq!(norm("a.io/v2/team/"), "a.io/team");
        // Only a whole leading segment is an API prefix.
        assert_eq!(norm("a.io/v2x"), "a.io/v2x");
        assert_eq!(norm("a.io/team/v2"), "a.io/team/v2");
        assert_eq!(norm("a.io/v3/"), "a.io/v3");
        // Only one prefix is stripped; a path that starts with v1 or v2 is
        // shown after an API prefix so that it reads back the same.
        assert_eq!(ok("a.io/v2/v2/").path(), "v2");
        assert_eq!(norm("a.io/v2/v2/"), "a.io/v2/v2");
    }

    #[test]
    fn trailing_slash() {
        assert_eq!(norm("a.io/"), "a.io");
        assert_eq!(norm("a.io/team/"), "a.io/team");
        assert_eq!(ok("a.io/").path(), "");
    }

    #[test]
    fn bad_paths() {
        assert!(matches!(
            err("a.io//x"),
            RegistryKeyError::InvalidPath { .. }
        ));
        assert!(matches!(
            err("a.io/x//"),
            RegistryKeyError::InvalidPath { .. }
        ));
        assert!(matches!(
            err("a.io/v2//x"),
            RegistryKeyError::InvalidPath { .. }
        ));
        assert!(matches!(
            err("a.io/x%2Fy"),
            RegistryKeyError::InvalidPath { .. }
        ));
        assert!(matches!(
            err("a.io/x:y"),
            RegistryKeyError::InvalidPath { .. }
        ));
        assert!(matches!(
            err("a.io/../x"),
            RegistryKeyError::InvalidPath { .. }
        ));
        assert!(matches!(
            err("a.io/é"),
            RegistryKeyError::InvalidPath { .. }
        ));
        assert_eq!(ok("a.io/my_team/app-1.2~x").path(), "my_team/app-1.2~x");
    }

    #[test]
    fn userinfo_rejected() {
        assert!(matches!(
            err("user@host"),
            RegistryKeyError::UserInfo { .. }
        ));
        assert!(matches!(
            err("https://u:p@host/v2/"),
            RegistryKeyError::UserInfo { .. }
        ));
        assert!(matches!(err("@host"), RegistryKeyError::UserInfo { .. }));
        // '@' in the path is not user information, but it is not allowed either.
        assert!(matches!(
            err("host/a@b"),
            RegistryKeyError::InvalidPath { .. }
        ));
    }

    #[test]
    fn query_and_fragment_rejected() {
        assert!(matches!(
            err("a.io/x?y=1"),
            RegistryKeyError::QueryOrFragment { .. }
        ));
        assert!(matches!(
            err("a.io#x"),
            RegistryKeyError::QueryOrFragment { .. }
        ));
        assert!(matches!(
            err("a.io?"),
            RegistryKeyError::QueryOrFragment { .. }
        ));
    }

    #[test]
    fn host_is_lowercased() {
        let k = ok("Registry.Example.COM:5000/Team");
        assert_eq!(k.host(), "registry.example.com");
        // The path is kept as written.
        assert_eq!(k.path(), "Team");
        assert_eq!(ok("https://A.IO"), ok("a.io"));
    }

    #[test]
    fn globs() {
        let k = ok("*.example.com");
        assert_eq!(k.host(), "*.example.com");
        assert_eq!(norm("https://*.a.*.io:443/v2/x"), "*.a.*.io:443/x");
        assert_eq!(norm("*"), "*");
        assert!(matches!(err("a*.io"), RegistryKeyError::InvalidHost { .. }));
        assert!(matches!(err("**.io"), RegistryKeyError::InvalidHost { .. }));
    }

    #[test]
    fn bad_hosts() {
        for key in [
            "a..io",
            ".a.io",
            "a.io.",
            "-a.io",
            "a-.io",
            "a_b.io",
            "exämple.com",
            "a!.io",
            "999.1.1.1",
            "1.2.3",
            "123",
            "a.1",
        ] {
            assert!(
                matches!(err(key), RegistryKeyError::InvalidHost { .. }),
                "{key:?}"
            );
        }
        let long_label = format!("{}.io", "a".repeat(64));
        assert!(matches!(
            err(&long_label),
            RegistryKeyError::InvalidHost { .. }
        ));
        let long_host = format!("{}io", "abcdefghi.".repeat(26));
        assert!(long_host.len() > MAX_HOST_LEN);
        assert!(matches!(
            err(&long_host),
            RegistryKeyError::InvalidHost { .. }
        ));
        assert_eq!(ok(&"a".repeat(63)).host().len(), 63);
    }

    #[test]
    fn good_hosts() {
        for key in [
            "localhost",
            "localhost:5000",
            "a",
            "1a.io",
            "a.io1",
            "my-registry.internal",
            "xn--bcher-kva.example",
            "10.0.0.1",
            "gcr.io",
            "docker.io",
        ] {
            ok(key);
        }
    }

    #[test]
    fn equivalent_keys_normalise_equal() {
        assert_eq!(ok("https://index.docker.io/v1/"), ok("index.docker.io"));
        assert_eq!(ok("http://a.io:5000/v2/x/"), ok("a.io:5000/x"));
        assert_ne!(ok("a.io:5000"), ok("a.io"));
        assert_ne!(ok("a.io/x"), ok("a.io"));
    }

    #[test]
    fn messages_quote_the_key() {
        let msg = err("ftp://x").to_string();
        assert_eq!(
            msg,
            "registry key \"ftp://x\" has unsupported scheme \"ftp\": only http and https are allowed"
        );
        assert_eq!(
            err("host:abc").to_string(),
            "registry key \"host:abc\" has an invalid port: expected a number from 1 to 65535"
        );
        assert_eq!(
            err("exa mple.com").to_string(),
            "registry key \"exa mple.com\" contains whitespace or control characters"
        );
        assert_eq!(
            err("http://").to_string(),
            "registry key \"http://\" has no host"
        );
        assert_eq!(err("").to_string(), "registry key is empty");
        assert_eq!(err("a_b.io").key(), Some("a_b.io"));
        assert_eq!(err("").key(), None);
    }

    #[test]
    fn messages_redact_credentials() {
        let e = err("https://user:s3cr3t@registry.io/v2/");
        let msg = e.to_string();
        assert!(!msg.contains("s3cr3t"), "{msg}");
        assert!(!msg.contains("user:"), "{msg}");
        assert!(msg.contains("https://<redacted>@registry.io/v2/"), "{msg}");
        assert!(!format!("{e:?}").contains("s3cr3t"));

        let e = err("registry.io/x?token=s3cr3t");
        let msg = e.to_string();
        assert!(!msg.contains("s3cr3t"), "{msg}");
        assert!(msg.contains("registry.io/x?<redacted>"), "{msg}");

        // Redaction also applies when another problem is reported first.
        let e = err("ftp://user:s3cr3t@registry.io");
        assert!(!e.to_string().contains("s3cr3t"));
        let e = err("u:s3cr3t@exa mple.com");
        assert!(!e.to_string().contains("s3cr3t"));
    }

    #[test]
    fn long_keys_are_shortened_in_messages() {
        let key = format!("{}_", "a".repeat(1000));
        let msg = err(&key).to_string();
        assert!(msg.len() < 400, "{}", msg.len());
        assert!(msg.contains('…'));
    }

    #[test]
    fn redact_key_cases() {
        assert_eq!(redact_key("a.io"), "a.io");
        assert_eq!(redact_key("u:p@a.io/x"), "<redacted>@a.io/x");
        assert_eq!(redact_key("https://u@v:p@a.io"), "https://<redacted>@a.io");
        assert_eq!(redact_key("a.io/x@y"), "<redacted>@y");
        assert_eq!(redact_key("1ftp://u:p@a.io"), "1ftp://<redacted>@a.io");
        assert_eq!(redact_key("a.io#frag"), "a.io#<redacted>");
        assert_eq!(redact_key("u:p@a.io?q"), "<redacted>@a.io?<redacted>");
    }

    #[test]
    fn display_reads_back_when_the_path_starts_with_an_api_version() {
        // Found by prop_display_round_trips: "a/v1/v1" has the path "v1", which
        // was shown as "a/v1" and read back as the bare host "a".
        for key in ["a/v1/v1", "a.io/v2/v2/", "a.io:5000/v1/v2/x", "a.io/v2/v1x"] {
            let k = ok(key);
            assert_eq!(ok(&k.to_string()), k, "{key:?} shown as {k}");
        }
        assert_eq!(norm("a/v1/v1"), "a/v2/v1");
        assert_eq!(norm("a.io:5000/v1/v2/x"), "a.io:5000/v2/v2/x");
        assert_eq!(norm("a.io/v2/v1x"), "a.io/v1x");
    }

    #[test]
    fn redact_key_hides_passwords_with_query_characters() {
        // Found by prop_errors_never_show_userinfo_or_query: a '?' or '#' in a
        // password was taken for the start of a query, and what came before it
        // was quoted.
        assert_eq!(redact_key(":Aa$#@r.io"), "<redacted>");
        assert_eq!(redact_key("https://u:p?ss@r.io/x"), "https://<redacted>");
        let e = err("https://u:s3cr3t#x@r.io");
        assert!(!format!("{e} {e:?}").contains("s3cr3t"), "{e}");
        // A password containing "://" does not make what precedes it a scheme.
        assert_eq!(redact_key("u:s3://cr3t@r.io"), "<redacted>@r.io");
        let e = err("u:s3://cr3t@r.io");
        assert!(!format!("{e} {e:?}").contains("s3"), "{e}");
        // An '@' in a query hides everything after the scheme.
        assert_eq!(redact_key("https://r.io/x?t=a@b"), "https://<redacted>");
    }

    #[test]
    fn schemeless_key_with_colon_slash_later() {
        // "://" after a '/' is not a scheme separator; the ':' lands in the path.
        assert!(matches!(
            err("a.io/x://y"),
            RegistryKeyError::InvalidPath { .. }
        ));
    }
}

#[cfg(test)]
mod proptests {
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
}
