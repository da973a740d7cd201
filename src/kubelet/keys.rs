//! Registry keys exactly as the kubelet's keyring reads them (`BasicDockerKeyring.Add`, then
//! `URLsMatchStr`): Go's `url.Parse` with nothing cleaned up, and the keys it will never match.

use std::net::Ipv6Addr;

use super::image::*;

/// A key after the kubelet's `Add` (the index key) and after `Lookup`
/// re-parses the index key as a URL.
pub(super) struct KubeletKey {
    /// The key the kubelet indexes credentials under: `host[:port][path]`.
    pub(super) index_key: String,
    /// Go's `url.URL.Host` of the re-parsed index key.
    pub(super) host: String,
    /// Go's `url.URL.Path` of the re-parsed index key (starts with `/` or is
    /// empty).
    pub(super) path: String,
}

/// What an image is matched as: Go's `url.URL` of `https://<image name>`.
pub(super) struct Target {
    pub(super) host: String,
    pub(super) path: String,
    /// `isDefaultRegistryMatch`: whether the Docker Hub fallback applies.
    pub(super) docker_hub: bool,
}

impl Target {
    pub(super) fn from_image(image: &ImageRef) -> Target {
        Target {
            host: image.registry.clone(),
            path: format!("/{}", image.repository),
            docker_hub: image.is_docker_hub(),
        }
    }
}

/// The host and path Go's `url.Parse` finds in an absolute `http(s)://` URL.
pub(super) struct GoUrl {
    pub(super) host: String,
    pub(super) path: String,
}

/// How the kubelet reads a registry key (`BasicDockerKeyring.Add`, then
/// `URLsMatchStr` re-parsing the index key). The error says why the key is
/// never used.
pub(super) fn read_key(raw: &str) -> Result<KubeletKey, String> {
    if raw != raw.trim() {
        return Err("it has leading or trailing whitespace, which the kubelet does not trim (so it skips the key or reads the whitespace as part of the host or path)".to_owned());
    }
    // Go cuts the fragment and the query off before it looks for user information, so in
    // `u:123?x@r.io` it reads the host `u` and the port `123`: parts of a user name and password.
    // Such a key never matches the registry after the '@', and nothing read from it may be shown.
    let after_scheme = raw
        .strip_prefix("https://")
        .or_else(|| raw.strip_prefix("http://"))
        .unwrap_or(raw);
    if let Some(cut) = after_scheme.find(['?', '#'])
        && after_scheme[cut..].contains('@')
    {
        return Err("it has an '@' after a '?' or '#', which the kubelet drops together with everything after it, so it reads the text before the '?' or '#' as the host; it never matches the registry after the '@' (if the '@' ends a user name and password, write the key without them)".to_owned());
    }
    let url = if raw.starts_with("https://") || raw.starts_with("http://") {
        parse_go_url(raw)
    } else {
        parse_go_url(&format!("https://{raw}"))
    }
    .map_err(|e| format!("Go's URL parser rejects it ({e}), so the kubelet skips it"))?;
    // Go ends the host at the first '/', so a password containing '/' puts
    // the rest of the user information, '@' and the real host into the path.
    // No image path contains '@', so the key never matches; and neither the
    // index key nor anything derived from it may be shown, as it holds part of
    // the password.
    if url.path.contains('@') {
        return Err("it has an '@' after the first '/', which the kubelet reads as part of the path, so it never matches (if the '@' ends a user name and password, the password's '/' ended the host early)".to_owned());
    }

    let path = match url.path.get(..4) {
        Some("/v1/" | "/v2/") => &url.path[3..],
        _ => url.path.as_str(),
    };
    let index_key = if path.is_empty() || path == "/" {
        url.host
    } else {
        format!("{}{path}", url.host)
    };
    let again = parse_go_url(&format!("https://{index_key}")).map_err(|e| {
        format!(
            "the kubelet reads it as {:?}, which Go's URL parser then rejects ({e}), so it never matches",
            quote(&index_key)
        )
    })?;
    if again.host.is_empty() {
        return Err("it has no host name, so it never matches".to_owned());
    }
    Ok(KubeletKey {
        index_key,
        host: again.host,
        path: again.path,
    })
}

/// Why the kubelet will not match a registry key as its writer most likely meant, by the
/// kubelet's own reading of it; `None` for a key it uses as written. The message never quotes
/// the key (callers show it through `kubelet::redact_key`).
///
/// The operator accepts such keys (the config is still a valid config) and reports them: a host
/// with upper-case letters (hosts are compared case-sensitively, image references name them in
/// lower case), `host/v1` or `host/v2` without a trailing `/` (kept as a repository path), a path
/// ending in `/` or with an empty segment (never the repository itself), the port `:443` (ports
/// are compared as strings, and images name no port), and keys the kubelet cannot read at all.
pub fn unmatchable_key(raw: &str) -> Option<String> {
    let key = match read_key(raw) {
        Ok(key) => key,
        Err(why) => return Some(why),
    };
    let (host, port) = split_host_port(&key.host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some(format!(
            "its host has upper-case letters: the kubelet compares hosts case-sensitively and images name registries in lower case, so it does not match images on {}",
            quote(&key.host.to_ascii_lowercase())
        ));
    }
    if port == "443" {
        return Some(format!(
            "its port :443 is compared as written: images on {} (no port) do not match it; write the key without the port",
            quote(host)
        ));
    }
    if key.path == "/v1" || key.path == "/v2" {
        return Some(format!(
            "the kubelet keeps {} (no '/' after it) as a repository path, so it matches only images below {}; write {} or {}",
            quote(&key.path),
            quote(&key.index_key),
            quote(&key.host),
            quote(&format!("{}{}/", key.host, key.path))
        ));
    }
    if key.path.contains("//") {
        return Some(
            "its path has an empty segment ('//'), which no image path has, so it never matches"
                .to_owned(),
        );
    }
    if key.path.len() > 1 && key.path.ends_with('/') {
        let repository = key.index_key.trim_end_matches('/');
        return Some(format!(
            "its path ends with '/': the kubelet matches it only against images below {}, never the image {} itself; drop the trailing '/' to match both",
            quote(&format!("{repository}/")),
            quote(repository)
        ));
    }
    None
}

/// Go's `url.Parse` for a URL that starts with `http://` or `https://`, as far
/// as the host and path go. Errors never quote user information.
pub(super) fn parse_go_url(url: &str) -> Result<GoUrl, String> {
    if url.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err("a control character such as a newline or tab".to_owned());
    }
    let (url, fragment) = match url.split_once('#') {
        Some((url, fragment)) => (url, Some(fragment)),
        None => (url, None),
    };
    if let Some(fragment) = fragment {
        percent_decode(fragment).ok_or("a malformed %-escape in the fragment")?;
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("no http:// or https:// scheme")?;
    let rest = rest.split_once('?').map_or(rest, |(rest, _query)| rest);
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            if !userinfo
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._:~!$&'()*+,;=%@".contains(&b))
                || percent_decode(userinfo).is_none()
            {
                return Err("invalid user information before '@'".to_owned());
            }
            parse_go_host(&authority[at + 1..])?
        }
        None => parse_go_host(authority)?,
    };
    let path = percent_decode(path).ok_or("a malformed %-escape in the path")?;
    Ok(GoUrl {
        host,
        path: String::from_utf8_lossy(&path).into_owned(),
    })
}

/// Go's `parseHost`: checks the port and the characters of a host.
pub(super) fn parse_go_host(host: &str) -> Result<String, String> {
    let valid_optional_port = |port: &str| {
        port.is_empty()
            || port
                .strip_prefix(':')
                .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
    };
    if host.starts_with('[') {
        let Some(close) = host.rfind(']') else {
            return Err("a '[' without ']' in the host".to_owned());
        };
        let port = &host[close + 1..];
        if !valid_optional_port(port) {
            // Not quoted: with a '/', '?' or '#' in a password, Go reads
            // part of the user information as the port.
            return Err("a port that is not a number after the host".to_owned());
        }
        let literal = &host[1..close];
        let address = literal.split_once("%25").map_or(literal, |(a, _zone)| a);
        if address.parse::<Ipv6Addr>().is_err() {
            return Err("the bracketed host is not an IPv6 address".to_owned());
        }
    } else if let Some(colon) = host.rfind(':') {
        let port = &host[colon..];
        if !valid_optional_port(port) {
            // Not quoted: with a '/', '?' or '#' in a password, Go reads
            // part of the user information as the port.
            return Err("a port that is not a number after the host".to_owned());
        }
    }
    let mut out = Vec::with_capacity(host.len());
    let bytes = host.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let escape = host.get(i..i + 3).unwrap_or("");
            match escape.get(1..).and_then(hex_byte) {
                Some(d) if d >= 0x80 || escape == "%25" => out.push(d),
                _ => return Err("a %-escape in the host".to_owned()),
            }
            i += 3;
            continue;
        }
        let allowed =
            b >= 0x80 || b.is_ascii_alphanumeric() || b"-_.~!$&'()*+,;=:[]<>\"".contains(&b);
        if !allowed {
            return Err(format!("invalid character {:?} in the host", b as char));
        }
        out.push(b);
        i += 1;
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Decodes `%XX` escapes; `None` when an escape is malformed.
pub(super) fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(hex_byte(s.get(i + 1..i + 3)?)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Two hexadecimal digits as a byte.
pub(super) fn hex_byte(hex: &str) -> Option<u8> {
    if hex.len() == 2 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        u8::from_str_radix(hex, 16).ok()
    } else {
        None
    }
}

/// The kubelet's `SplitURL`: Go's `net.SplitHostPort`, falling back to the
/// whole host and no port when that fails (it fails when there is no port).
pub(super) fn split_host_port(hostport: &str) -> (&str, &str) {
    fn split(hostport: &str) -> Option<(&str, &str)> {
        let colon = hostport.rfind(':')?;
        let (host, after_host) = if hostport.starts_with('[') {
            let end = hostport.find(']')?;
            if end + 1 != colon {
                return None;
            }
            (&hostport[1..end], end + 1)
        } else {
            let host = &hostport[..colon];
            if host.contains(':') {
                return None;
            }
            (host, 0)
        };
        let start = usize::from(hostport.starts_with('['));
        if hostport[start..].contains('[') || hostport[after_host..].contains(']') {
            return None;
        }
        Some((host, &hostport[colon + 1..]))
    }
    split(hostport).unwrap_or((hostport, ""))
}
