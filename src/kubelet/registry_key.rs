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
                        // Bounded like the key: an error ends up in status and Events.
                        scheme: shorten(scheme.to_owned()),
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
mod tests;

#[cfg(test)]
mod proptests;
