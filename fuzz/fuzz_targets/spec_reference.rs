//! A reference model of `ParseNormalizedNamed` from
//! `github.com/distribution/reference` v0.6 (what the kubelet's
//! `parsers.ParseImageName` calls before it looks up credentials), written
//! from its grammar (`regexp.go`), `normalize.go` and `reference.go`:
//!
//! ```text
//! reference        := name [ ":" tag ] [ "@" digest ]
//! name             := [domain '/'] remote-name
//! domain           := host [':' port-number]
//! host             := domain-name | '[' [a-fA-F0-9:]+ ']'
//! domain-name      := domain-component ['.' domain-component]*
//! domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
//! port-number      := /[0-9]+/
//! remote-name      := path-component ['/' path-component]*
//! path-component   := /[a-z0-9]+/ [separator /[a-z0-9]+/]*
//! separator        := /[_.]|__|[-]+/
//! tag              := /[\w][\w.-]{0,127}/
//! digest           := algorithm ":" hex   (go-digest: sha256, sha384 or
//!                     sha512 with exactly 64, 96 or 128 lower-case hex digits)
//! ```
//!
//! plus: a bare 64-digit lower-case hex string is refused; the first
//! `/`-separated part is the domain when it is `localhost`, contains `.` or
//! `:`, or has upper case (else the domain is `docker.io`); `index.docker.io`
//! becomes `docker.io`; a Docker Hub name without `/` gets `library/`; the
//! remote name (up to the first `:`) must be lower case; the path is at most
//! 255 characters. A name whose first part fails the domain grammar but
//! passes the path grammar parses with no domain (`Name()` is then the whole
//! path).

#![allow(dead_code)]

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Named {
    pub domain: String,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Named {
    /// `Named.Name()`: what the kubelet looks credentials up for.
    pub fn name(&self) -> String {
        if self.domain.is_empty() {
            self.path.clone()
        } else {
            format!("{}/{}", self.domain, self.path)
        }
    }
}

fn alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `path-component`: runs of `[a-z0-9]` joined by exactly one separator.
fn path_component(s: &str) -> bool {
    let mut runs: Vec<(bool, &str)> = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    for w in 0..chars.len() {
        let (i, c) = chars[w];
        let next_differs = chars
            .get(w + 1)
            .is_none_or(|&(_, d)| alnum_lower(d) != alnum_lower(c));
        if next_differs {
            let end = i + c.len_utf8();
            runs.push((alnum_lower(c), &s[start..end]));
            start = end;
        }
    }
    // Alternating runs, beginning and ending with letters and digits.
    let (Some(first), Some(last)) = (runs.first(), runs.last()) else {
        return false;
    };
    first.0
        && last.0
        && runs.iter().all(|&(is_alnum, text)| {
            is_alnum
                || matches!(text, "." | "_" | "__")
                || (!text.is_empty() && text.chars().all(|c| c == '-'))
        })
}

fn remote_name(s: &str) -> bool {
    s.split('/').all(path_component)
}

fn domain_component(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric();
    match (s.chars().next(), s.chars().last()) {
        (Some(a), Some(z)) => ok(a) && ok(z) && s.chars().all(|c| ok(c) || c == '-'),
        _ => false,
    }
}

/// `domainAndPort`.
fn domain_and_port(s: &str) -> bool {
    let (host, port) = if let Some(inner) = s.strip_prefix('[') {
        let Some((address, after)) = inner.split_once(']') else {
            return false;
        };
        if address.is_empty() || !address.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return false;
        }
        (None, after)
    } else {
        match s.find(':') {
            Some(i) => (Some(&s[..i]), &s[i..]),
            None => (Some(s), ""),
        }
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
    port_ok && host.is_none_or(|h| h.split('.').all(domain_component))
}

fn tag_ok(t: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let n = t.chars().count();
    (1..=128).contains(&n)
        && t.chars().next().is_some_and(word)
        && t.chars().all(|c| word(c) || c == '.' || c == '-')
}

fn digest_ok(d: &str) -> bool {
    let Some((algorithm, hex)) = d.split_once(':') else {
        return false;
    };
    let want = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == want && hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

/// `splitDockerDomain` (v0.6).
fn split_docker_domain(s: &str) -> (String, String) {
    let Some((first, rest)) = s.split_once('/') else {
        return ("docker.io".into(), format!("library/{s}"));
    };
    let (domain, remote) = if first == "localhost" {
        (first, rest.to_owned())
    } else if first == "index.docker.io" {
        ("docker.io", rest.to_owned())
    } else if first.contains(['.', ':']) || first.to_lowercase() != first {
        (first, rest.to_owned())
    } else {
        ("docker.io", s.to_owned())
    };
    if domain == "docker.io" && !remote.contains('/') {
        return (domain.into(), format!("library/{remote}"));
    }
    (domain.into(), remote)
}

/// `reference.Parse` of `domain/remainder`.
fn parse(s: &str) -> Option<Named> {
    let (before, digest) = match s.split_once('@') {
        Some((b, d)) => (b, Some(d)),
        None => (s, None),
    };
    let tail_start = before.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match before[tail_start..].find(':') {
        Some(i) => (
            &before[..tail_start + i],
            Some(&before[tail_start + i + 1..]),
        ),
        None => (before, None),
    };
    // The domain is optional and tried first.
    let (domain, path) = match name.split_once('/') {
        Some((d, p)) if domain_and_port(d) && remote_name(p) => (d, p),
        _ if remote_name(name) => ("", name),
        _ => return None,
    };
    if path.len() > 255 || tag.is_some_and(|t| !tag_ok(t)) || digest.is_some_and(|d| !digest_ok(d))
    {
        return None;
    }
    Some(Named {
        domain: domain.to_owned(),
        path: path.to_owned(),
        tag: tag.map(str::to_owned),
        digest: digest.map(str::to_owned),
    })
}

/// `ParseNormalizedNamed(s)`; `None` where it returns an error.
pub fn parse_normalized_named(s: &str) -> Option<Named> {
    if s.len() == 64 && s.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
        return None;
    }
    let (domain, remainder) = split_docker_domain(s);
    let remote = remainder.split(':').next().unwrap_or_default();
    if remote.to_lowercase() != remote {
        return None;
    }
    parse(&format!("{domain}/{remainder}"))
}
