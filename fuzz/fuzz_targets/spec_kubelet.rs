//! A reference model of the kubelet's credential keyring, written from the
//! Kubernetes and Go sources rather than from this crate:
//!
//! * `k8s.io/kubernetes/pkg/credentialprovider/keyring.go`: `BasicDockerKeyring.Add`
//!   (a key without `https://` or `http://` gets `https://`, is parsed with
//!   `url.Parse`, loses a leading `/v1` or `/v2` when a `/` follows, and is
//!   indexed as `Host + Path`, or `Host` alone when the path is empty or `/`),
//!   `Lookup` (every index key that `URLsMatchStr` matches, in reverse
//!   lexicographic order; only when none does, and `isDefaultRegistryMatch`
//!   holds for the image, the entry `index.docker.io`), `URLsMatch` (equal
//!   ports as strings, the same number of `.`-separated host labels, the key's
//!   path a plain string prefix of the image's, every key label a
//!   `filepath.Match` pattern of the image label) and `SplitURL`
//!   (`net.SplitHostPort`, else the whole host and no port).
//! * Go's `net/url.Parse` as far as host and path go, `net.SplitHostPort`,
//!   `path/filepath.Match` (on Unix), `net/netip.ParseAddr` for bracketed hosts.
//!
//! Go changed how `url.Parse` reads a host with `[` (Go 1.25.2 / 1.24.8, the
//! fix for CVE-2025-47912: a bracketed host must be an IPv6 address, and a
//! host with `[` anywhere is read as one) and then once more (a `[` after the
//! start is refused, and an http(s) host may hold only one `:`). Kubelets in
//! use are built with all of these, so the model reads every key under each
//! [`GoRelease`]; callers judge only what all releases agree on.
//!
//! Strings are bytes here, as in Go: a `%ff` in a host is the byte 0xff, not
//! U+FFFD.

#![allow(dead_code)]

/// The Go releases whose `url.Parse` reads hosts differently.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GoRelease {
    /// Go 1.25.1 and earlier: only a leading `[` opens an IP literal, and it
    /// is not checked; a port is what follows the last `:`.
    Before1252,
    /// Go 1.25.2 / 1.24.8: the last `[` opens an IP literal, which must be an
    /// IPv6 address (text before it is dropped).
    BracketCheck,
    /// Later releases: a `[` after the start is an error, and an http(s) host's
    /// port is what follows its first `:`.
    StrictHost,
}

pub const GO_RELEASES: [GoRelease; 3] = [
    GoRelease::Before1252,
    GoRelease::BracketCheck,
    GoRelease::StrictHost,
];

/// Host and path of a parsed URL, unescaped as Go leaves them in `url.URL`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Url {
    pub host: Vec<u8>,
    pub path: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Host,
    Zone,
    Other,
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// `shouldEscape(c, encodeHost)` for an ASCII byte: what may not stand in a
/// host as it is.
fn must_escape_in_host(c: u8) -> bool {
    let allowed = c.is_ascii_alphanumeric() || b"-_.~!$&'()*+,;=:[]<>\"".contains(&c);
    !allowed
}

/// Go's `unescape` for one URL part; `None` where Go returns an error.
fn unescape(s: &[u8], part: Part) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some((&c, tail)) = rest.split_first() {
        if c == b'%' {
            let (hi, lo) = match tail {
                [h, l, ..] => (hex_value(*h)?, hex_value(*l)?),
                _ => return None,
            };
            let byte = hi * 16 + lo;
            let is_percent = byte == b'%';
            match part {
                // Only non-ASCII bytes, and %25, may be escaped in a host.
                Part::Host if hi < 8 && !is_percent => return None,
                Part::Zone
                    if !is_percent
                        && byte != b' '
                        && (byte >= 0x80 || must_escape_in_host(byte)) =>
                {
                    return None;
                }
                _ => {}
            }
            out.push(byte);
            rest = &tail[2..];
        } else {
            if matches!(part, Part::Host | Part::Zone) && c < 0x80 && must_escape_in_host(c) {
                return None;
            }
            out.push(c);
            rest = tail;
        }
    }
    Some(out)
}

/// `validOptionalPort`: empty, or `:` and digits (possibly none).
fn optional_port_ok(p: &[u8]) -> bool {
    match p.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    }
}

fn last(s: &[u8], b: u8) -> Option<usize> {
    s.iter().rposition(|&c| c == b)
}

fn first(s: &[u8], b: u8) -> Option<usize> {
    s.iter().position(|&c| c == b)
}

fn find_seq(s: &[u8], needle: &[u8]) -> Option<usize> {
    s.windows(needle.len()).position(|w| w == needle)
}

/// `netip.ParseAddr` accepting an IPv6 address (with an optional non-empty
/// zone); IPv4 and anything else is refused.
fn is_ipv6(s: &[u8]) -> bool {
    // ParseAddr decides by the first '.', ':' or '%'.
    match s.iter().find(|b| matches!(b, b'.' | b':' | b'%')) {
        Some(b':') => {}
        _ => return false,
    }
    let (address, zone) = match first(s, b'%') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    if zone.is_some_and(<[u8]>::is_empty) {
        return false;
    }
    std::str::from_utf8(address).is_ok_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
}

/// Go's `parseHost` in one release.
fn parse_host(go: GoRelease, host: &[u8]) -> Option<Vec<u8>> {
    let open = last(host, b'[');
    if go == GoRelease::Before1252 {
        if host.first() == Some(&b'[') {
            let close = last(host, b']')?;
            if !optional_port_ok(&host[close + 1..]) {
                return None;
            }
            if let Some(zone) = find_seq(&host[..close], b"%25") {
                let mut out = unescape(&host[..zone], Part::Host)?;
                out.extend(unescape(&host[zone..close], Part::Zone)?);
                out.extend(unescape(&host[close..], Part::Host)?);
                return Some(out);
            }
        } else if let Some(colon) = last(host, b':')
            && !optional_port_ok(&host[colon..])
        {
            return None;
        }
        return unescape(host, Part::Host);
    }
    match open {
        Some(o) if go == GoRelease::StrictHost && o > 0 => None,
        Some(o) => {
            let close = last(host, b']')?;
            let port = &host[close + 1..];
            if !optional_port_ok(port) {
                return None;
            }
            // The port holds no '[', so the ']' comes after the '['.
            let inner = &host[o + 1..close];
            let address = match find_seq(inner, b"%25") {
                Some(z) => {
                    let mut a = unescape(&inner[..z], Part::Host)?;
                    a.extend(unescape(&inner[z..], Part::Zone)?);
                    a
                }
                None => unescape(inner, Part::Host)?,
            };
            if !is_ipv6(&address) {
                return None;
            }
            let mut out = vec![b'['];
            out.extend(address);
            out.push(b']');
            out.extend(unescape(port, Part::Host)?);
            Some(out)
        }
        None => {
            let colon = if go == GoRelease::StrictHost {
                first(host, b':')
            } else {
                last(host, b':')
            };
            if let Some(c) = colon
                && !optional_port_ok(&host[c..])
            {
                return None;
            }
            unescape(host, Part::Host)
        }
    }
}

/// `validUserinfo`: ASCII letters, digits and `-._:~!$&'()*+,;=%@` only.
fn userinfo_ok(u: &[u8]) -> bool {
    u.iter()
        .all(|&c| c.is_ascii_alphanumeric() || b"-._:~!$&'()*+,;=%@".contains(&c))
}

/// Go's `url.Parse` of a URL that starts with `https://` or `http://`.
pub fn url_parse(go: GoRelease, raw: &[u8]) -> Option<Url> {
    let (raw, fragment) = match first(raw, b'#') {
        Some(i) => (&raw[..i], Some(&raw[i + 1..])),
        None => (raw, None),
    };
    // Control characters are refused before the fragment only: Go cuts the
    // fragment off first and only unescapes it.
    if raw.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return None;
    }
    if let Some(f) = fragment {
        unescape(f, Part::Other)?;
    }
    let after_scheme = raw
        .strip_prefix(b"https://")
        .or_else(|| raw.strip_prefix(b"http://"))?;
    let without_query = match first(after_scheme, b'?') {
        Some(q) => &after_scheme[..q],
        None => after_scheme,
    };
    let (authority, path) = match first(without_query, b'/') {
        Some(i) => without_query.split_at(i),
        None => (without_query, &b""[..]),
    };
    let host = match last(authority, b'@') {
        Some(at) => {
            let host = parse_host(go, &authority[at + 1..])?;
            let userinfo = &authority[..at];
            if !userinfo_ok(userinfo) {
                return None;
            }
            unescape(userinfo, Part::Other)?;
            host
        }
        None => parse_host(go, authority)?,
    };
    let path = unescape(path, Part::Other)?;
    Some(Url { host, path })
}

/// The URL `BasicDockerKeyring.Add` reads an `auths` key as; `None` for a key
/// it skips.
pub fn read_key(go: GoRelease, key: &str) -> Option<Url> {
    if key.starts_with("https://") || key.starts_with("http://") {
        url_parse(go, key.as_bytes())
    } else {
        url_parse(go, format!("https://{key}").as_bytes())
    }
}

/// The key `BasicDockerKeyring.Add` indexes an `auths` key under; `None` for a
/// key it skips.
pub fn index_key(go: GoRelease, key: &str) -> Option<Vec<u8>> {
    let url = read_key(go, key)?;
    let mut path = url.path.as_slice();
    if path.starts_with(b"/v1/") || path.starts_with(b"/v2/") {
        path = &path[3..];
    }
    let mut out = url.host;
    if !path.is_empty() && path != b"/" {
        out.extend_from_slice(path);
    }
    Some(out)
}

/// `net.SplitHostPort`; `None` where it returns an error.
fn split_host_port(hp: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = last(hp, b':')?;
    let (host, no_open_from, no_close_from) = if hp.first() == Some(&b'[') {
        let close = first(hp, b']')?;
        if close + 1 != colon {
            return None;
        }
        (&hp[1..close], 1, close + 1)
    } else {
        let host = &hp[..colon];
        if host.contains(&b':') {
            return None;
        }
        (host, 0, 0)
    };
    if hp[no_open_from..].contains(&b'[') || hp[no_close_from..].contains(&b']') {
        return None;
    }
    Some((host, &hp[colon + 1..]))
}

/// `SplitURL`: the host's labels and its port.
fn labels_and_port(host: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let (name, port) = split_host_port(host).unwrap_or((host, b""));
    (name.split(|&b| b == b'.').collect(), port)
}

/// One element of a `filepath.Match` pattern.
#[derive(Debug)]
enum Glob {
    AnyRun,
    AnyOne,
    Byte(u8),
    Set {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// One character of a class (`getEsc`): `\` escapes, `-` and `]` may not
/// stand bare, the character must be UTF-8 and something must follow it.
fn class_char(p: &[u8]) -> Option<(char, &[u8])> {
    let p = match p {
        [] | [b'-' | b']', ..] => return None,
        [b'\\', rest @ ..] => rest,
        _ => p,
    };
    let width = match p.first()? {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    };
    let c = std::str::from_utf8(p.get(..width)?).ok()?.chars().next()?;
    let rest = &p[width..];
    (!rest.is_empty()).then_some((c, rest))
}

/// The pattern as elements; `None` for a malformed pattern (`ErrBadPattern`,
/// which recent Go reports whatever the name).
fn compile_glob(mut p: &[u8]) -> Option<Vec<Glob>> {
    let mut out = Vec::new();
    while let Some((&c, rest)) = p.split_first() {
        p = rest;
        out.push(match c {
            b'*' => Glob::AnyRun,
            b'?' => Glob::AnyOne,
            b'\\' => {
                let (&e, rest) = p.split_first()?;
                p = rest;
                Glob::Byte(e)
            }
            b'[' => {
                let negated = p.first() == Some(&b'^');
                if negated {
                    p = &p[1..];
                }
                let mut ranges = Vec::new();
                loop {
                    if !ranges.is_empty() && p.first() == Some(&b']') {
                        p = &p[1..];
                        break;
                    }
                    let (lo, rest) = class_char(p)?;
                    p = rest;
                    let mut hi = lo;
                    if p.first() == Some(&b'-') {
                        let (h, rest) = class_char(&p[1..])?;
                        hi = h;
                        p = rest;
                    }
                    ranges.push((lo, hi));
                }
                Glob::Set { negated, ranges }
            }
            other => Glob::Byte(other),
        });
    }
    Some(out)
}

/// The character at the start of `s` and its width, as Go's
/// `utf8.DecodeRuneInString` reads it (U+FFFD and width 1 when invalid).
fn decode(s: &[u8]) -> (char, usize) {
    for width in 1..=4.min(s.len()) {
        if let Ok(text) = std::str::from_utf8(&s[..width]) {
            return (text.chars().next().unwrap_or('\u{fffd}'), width);
        }
    }
    ('\u{fffd}', 1)
}

/// `filepath.Match(pattern, name)`: `None` for a malformed pattern. A plain
/// table over (element, position), so no backtracking order matters.
pub fn glob_match(pattern: &[u8], name: &[u8]) -> Option<bool> {
    let globs = compile_glob(pattern)?;
    let n = name.len();
    // reach[i][j]: the first i elements can consume exactly name[..j].
    let mut reach = vec![vec![false; n + 1]; globs.len() + 1];
    reach[0][0] = true;
    for (i, g) in globs.iter().enumerate() {
        for j in 0..=n {
            if !reach[i][j] {
                continue;
            }
            match g {
                Glob::AnyRun => {
                    let mut k = j;
                    reach[i + 1][k] = true;
                    while k < n && name[k] != b'/' {
                        k += 1;
                        reach[i + 1][k] = true;
                    }
                }
                Glob::AnyOne => {
                    if j < n && name[j] != b'/' {
                        let (_, w) = decode(&name[j..]);
                        reach[i + 1][j + w] = true;
                    }
                }
                Glob::Byte(b) => {
                    if name.get(j) == Some(b) {
                        reach[i + 1][j + 1] = true;
                    }
                }
                Glob::Set { negated, ranges } => {
                    if j < n {
                        let (c, w) = decode(&name[j..]);
                        let inside = ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
                        if inside != *negated {
                            reach[i + 1][j + w] = true;
                        }
                    }
                }
            }
        }
    }
    Some(reach[globs.len()][n])
}

/// `URLsMatchStr(glob, target)`: both are read as `https://` + text.
pub fn urls_match(go: GoRelease, glob: &[u8], target: &[u8]) -> bool {
    let with_scheme = |s: &[u8]| [b"https://".as_slice(), s].concat();
    let (Some(g), Some(t)) = (
        url_parse(go, &with_scheme(glob)),
        url_parse(go, &with_scheme(target)),
    ) else {
        return false;
    };
    let (g_labels, g_port) = labels_and_port(&g.host);
    let (t_labels, t_port) = labels_and_port(&t.host);
    g_port == t_port
        && g_labels.len() == t_labels.len()
        && t.path.starts_with(&g.path)
        && g_labels
            .iter()
            .zip(&t_labels)
            .all(|(p, l)| glob_match(p, l) == Some(true))
}

/// `isDefaultRegistryMatch(image)` of an image name (`Named.Name()`).
pub fn is_default_registry_match(name: &str) -> bool {
    let first = match name.split_once('/') {
        None => return !name.is_empty(),
        Some((first, _)) => first,
    };
    if first.is_empty() {
        return false;
    }
    first == "docker.io" || first == "index.docker.io" || !first.contains(['.', ':'])
}

/// What `Lookup(image)` gives for the keys of a pod's pull secrets.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Lookup {
    /// Each key's index key (`None` for a key `Add` skips, or, from
    /// [`agreed_lookup`], where Go releases read the key differently).
    pub index: Vec<Option<Vec<u8>>>,
    /// Whether each key's credentials are used.
    pub used: Vec<bool>,
    /// The index keys whose credentials are used, in the order tried.
    pub tried: Vec<Vec<u8>>,
    /// Whether `tried` is the Docker Hub fallback (`index.docker.io`).
    pub fallback: bool,
}

impl Lookup {
    /// Whether the credentials of the key at `position` are used.
    pub fn uses(&self, position: usize) -> bool {
        self.used[position]
    }
}

pub fn lookup(go: GoRelease, keys: &[&str], image_name: &str) -> Lookup {
    let index: Vec<Option<Vec<u8>>> = keys.iter().map(|k| index_key(go, k)).collect();
    let mut sorted: Vec<Vec<u8>> = index.iter().flatten().cloned().collect();
    sorted.sort();
    sorted.dedup();
    sorted.reverse();
    let mut tried: Vec<Vec<u8>> = sorted
        .iter()
        .filter(|k| urls_match(go, k, image_name.as_bytes()))
        .cloned()
        .collect();
    let fallback = tried.is_empty()
        && is_default_registry_match(image_name)
        && sorted.iter().any(|k| k == b"index.docker.io");
    if fallback {
        tried.push(b"index.docker.io".to_vec());
    }
    let used = index
        .iter()
        .map(|k| k.as_ref().is_some_and(|k| tried.contains(k)))
        .collect();
    Lookup {
        index,
        used,
        tried,
        fallback,
    }
}

/// The lookup when every Go release uses the same credentials in the same
/// order, else `None`; index keys the releases read differently are `None`.
pub fn agreed_lookup(keys: &[&str], image_name: &str) -> Option<Lookup> {
    let mut agreed = lookup(GO_RELEASES[0], keys, image_name);
    for &go in &GO_RELEASES[1..] {
        let other = lookup(go, keys, image_name);
        if (&other.used, &other.tried, other.fallback)
            != (&agreed.used, &agreed.tried, agreed.fallback)
        {
            return None;
        }
        for (mine, theirs) in agreed.index.iter_mut().zip(other.index) {
            if *mine != theirs {
                *mine = None;
            }
        }
    }
    Some(agreed)
}
