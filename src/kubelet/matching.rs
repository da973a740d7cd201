//! Which pull-secret keys the kubelet uses for an image, and why a key does
//! not match.
//!
//! This backs the `doctor` command. It works on registry keys (the keys of a
//! docker config's `auths` map) and image references only, never on
//! credentials, so nothing it returns or prints can contain a password.
//!
//! # What the kubelet does
//!
//! `pkg/credentialprovider/keyring.go`:
//!
//! * **Keys.** A key without `https://` or `http://` gets `https://` in front
//!   and is parsed with Go's `url.Parse`; keys Go cannot parse are skipped.
//!   The path loses a leading `/v1` or `/v2` when a `/` follows it, and the
//!   index key is `host[:port]` plus that path unless the path is empty or
//!   `/`. User information, queries and fragments are dropped by the URL
//!   parser. Nothing is lower-cased, trimmed or otherwise cleaned up.
//! * **Images.** The image is first normalised the Docker way (`nginx` is
//!   `docker.io/library/nginx`) and stripped of its tag and digest.
//! * **Matching.** A key matches when the ports are equal as strings (no port
//!   is not `:443`), both hosts have the same number of `.`-separated labels,
//!   every key label glob-matches the image label (Go's `filepath.Match`, so
//!   `*` is exactly one label and `*.example.com` does not match
//!   `example.com`), and the key's path is a plain string prefix of the
//!   image's path (`/team` matches `/teamx/app`; `/team/` does not match
//!   `/team`).
//! * **Order.** Every matching key contributes, in reverse lexicographic order
//!   of the index keys (so `quay.io/org` comes before `quay.io`).
//! * **Docker Hub fallback.** Only when no key matched at all, and the image is
//!   on Docker Hub, the credentials stored under exactly `index.docker.io`
//!   (written e.g. as `https://index.docker.io/v1/`) are used.
//! * **Pulling.** The runtime tries the credentials in that order and stops at
//!   the first success. If all fail, the pull fails: there is no retry without
//!   credentials. Only when no key matched at all is the image pulled
//!   anonymously.
//!
//! The kubelet also adds the node's own credentials (credential provider
//! plugins, the node's `config.json`) after those of the pod's pull secrets;
//! they are invisible here.
//!
//! # Differences from [`RegistryKey::parse`](crate::kubelet::RegistryKey)
//!
//! The operator validates keys with `RegistryKey::parse` but copies them as
//! written, so the kubelet sees the raw key. This module therefore reads keys
//! the way the kubelet does rather than through `RegistryKey`:
//!
//! * `RegistryKey` lower-cases the host; the kubelet compares hosts
//!   case-sensitively, so `Registry.example.com` never matches an image on
//!   `registry.example.com`.
//! * `RegistryKey` drops a trailing `/`; for the kubelet `quay.io/org/app/`
//!   does not match the image `quay.io/org/app`, and `quay.io/org/` does not
//!   match `quay.io/orgx/...` while `quay.io/org` does.
//! * `RegistryKey` reads `host/v1` and `host/v2` (no trailing `/`) as the bare
//!   host; the kubelet keeps `/v1` as a path, which never matches, so
//!   `https://index.docker.io/v1` is not the Docker Hub fallback key.
//! * `RegistryKey` trims surrounding whitespace; the kubelet does not, and
//!   such a key never matches.
//! * `RegistryKey` rejects user information and queries; the kubelet drops
//!   them and uses the key.
//! * `RegistryKey` allows `*` only as a whole label; the kubelet accepts any
//!   `filepath.Match` pattern Go's URL parser lets through
//!   (`reg-*.example.com`, `reg-[0-9].example.com`; not `?`, which starts the
//!   URL's query, nor `\` or `^`, which Go rejects in a host).

use std::fmt;
use std::net::Ipv6Addr;

use serde::Serialize;

use crate::kubelet::redact_key;

/// The longest input quoted in full in an error message.
const MAX_QUOTED_CHARS: usize = 256;

/// The longest repository path (without the registry) a reference may have.
const MAX_REPOSITORY_LEN: usize = 255;

/// The registry Docker Hub images are normalised to.
const DOCKER_HUB: &str = "docker.io";

/// The legacy Docker Hub name, normalised to [`DOCKER_HUB`] in images.
const LEGACY_DOCKER_HUB: &str = "index.docker.io";

/// The index key whose credentials the kubelet uses for Docker Hub images when
/// nothing else matched.
const DOCKER_HUB_FALLBACK_KEY: &str = "index.docker.io";

/// Hosts that people use for Docker Hub but that the kubelet does not treat as
/// Docker Hub in a key (lower case).
const DOCKER_HUB_ALIASES: [&str; 3] = [
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

// ---------------------------------------------------------------------------
// Image references
// ---------------------------------------------------------------------------

/// An image reference, normalised the way the kubelet normalises it before
/// looking up credentials (`github.com/distribution/reference`,
/// `ParseNormalizedNamed`).
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct ImageRef {
    /// The reference as given.
    pub original: String,
    /// `host[:port]`, as written except that Docker Hub is always
    /// `docker.io` (also when written `index.docker.io`). The host keeps its
    /// case; an IPv6 address keeps its brackets.
    pub registry: String,
    /// The repository path without the registry, e.g. `library/nginx`.
    pub repository: String,
    /// The tag, if one was given.
    pub tag: Option<String>,
    /// The digest (`algorithm:hex`), if one was given.
    pub digest: Option<String>,
}

/// Why an image reference was rejected. Messages quote the reference (image
/// references are not secret); very long ones are shortened.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ImageRefError {
    /// The reference is empty.
    #[error("image reference is empty")]
    Empty,
    /// The reference contains whitespace or control characters.
    #[error("image reference {image:?} contains whitespace or control characters")]
    Whitespace { image: String },
    /// The reference is a bare 64-digit hexadecimal image ID.
    #[error(
        "{image:?} is a 64-digit hexadecimal image ID, not an image name (write repository@sha256:<digest> to pin by digest)"
    )]
    ImageId { image: String },
    /// The registry part is not `host[:port]`.
    #[error(
        "image reference {image:?} has an invalid registry {registry:?}: expected a host name, IPv4 address or [IPv6] address with an optional :port"
    )]
    InvalidRegistry { image: String, registry: String },
    /// The repository contains upper-case letters.
    #[error(
        "image reference {image:?} is invalid: the repository name {repository:?} must be lower case"
    )]
    UppercaseRepository { image: String, repository: String },
    /// The repository path is malformed.
    #[error("image reference {image:?} has an invalid repository {repository:?}: {reason}")]
    InvalidRepository {
        image: String,
        repository: String,
        reason: String,
    },
    /// The repository path is longer than 255 characters.
    #[error(
        "image reference {image:?} is invalid: the repository name has {len} characters, at most 255 are allowed"
    )]
    RepositoryTooLong { image: String, len: usize },
    /// The tag is malformed.
    #[error(
        "image reference {image:?} has an invalid tag {tag:?}: a tag has 1 to 128 letters, digits, '_', '.' or '-' and does not start with '.' or '-'"
    )]
    InvalidTag { image: String, tag: String },
    /// The digest is malformed or uses an unsupported algorithm.
    #[error("image reference {image:?} has an invalid digest {digest:?}: {reason}")]
    InvalidDigest {
        image: String,
        digest: String,
        reason: &'static str,
    },
}

impl ImageRef {
    /// Parses and normalises an image reference:
    ///
    /// * `nginx` → `docker.io/library/nginx`, `user/app` → `docker.io/user/app`,
    ///   `index.docker.io/app` → `docker.io/library/app`;
    /// * the first `/`-separated part is the registry when it contains `.` or
    ///   `:`, is `localhost`, or has upper-case letters (`localhost:5000/app`,
    ///   `registry.example.com/app`); a reference without `/` is always on
    ///   Docker Hub (`localhost:5000` is the image `library/localhost` with the
    ///   tag `5000`);
    /// * the tag and digest are kept apart; a reference may have both.
    pub fn parse(s: &str) -> Result<ImageRef, ImageRefError> {
        if s.is_empty() {
            return Err(ImageRefError::Empty);
        }
        let image = || quote(s);
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ImageRefError::Whitespace { image: image() });
        }
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ImageRefError::ImageId { image: image() });
        }

        let (registry, remainder) = split_docker_domain(s);
        let (name, digest) = match remainder.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (remainder.as_str(), None),
        };
        let (repository, tag) = match name.split_once(':') {
            Some((repository, tag)) => (repository, Some(tag)),
            None => (name, None),
        };

        if repository.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ImageRefError::UppercaseRepository {
                image: image(),
                repository: quote(repository),
            });
        }
        if !registry_ok(&registry) {
            return Err(ImageRefError::InvalidRegistry {
                image: image(),
                registry: quote(&registry),
            });
        }
        if let Some(reason) = repository_problem(repository) {
            return Err(ImageRefError::InvalidRepository {
                image: image(),
                repository: quote(repository),
                reason,
            });
        }
        if repository.len() > MAX_REPOSITORY_LEN {
            return Err(ImageRefError::RepositoryTooLong {
                image: image(),
                len: repository.len(),
            });
        }
        if let Some(tag) = tag
            && !tag_ok(tag)
        {
            return Err(ImageRefError::InvalidTag {
                image: image(),
                tag: quote(tag),
            });
        }
        if let Some(digest) = digest
            && let Some(reason) = digest_problem(digest)
        {
            return Err(ImageRefError::InvalidDigest {
                image: image(),
                digest: quote(digest),
                reason,
            });
        }

        Ok(ImageRef {
            original: s.to_owned(),
            registry,
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest: digest.map(str::to_owned),
        })
    }

    /// The fully qualified reference the runtime pulls:
    /// `registry/repository[:tag][@digest]`, with `:latest` added when
    /// neither a tag nor a digest was given (as the kubelet does), e.g.
    /// `docker.io/library/nginx:1.25`.
    pub fn normalized(&self) -> String {
        let mut out = self.matching_path();
        match (&self.tag, &self.digest) {
            (None, None) => out.push_str(":latest"),
            (tag, digest) => {
                if let Some(tag) = tag {
                    out.push(':');
                    out.push_str(tag);
                }
                if let Some(digest) = digest {
                    out.push('@');
                    out.push_str(digest);
                }
            }
        }
        out
    }

    /// `registry/repository`: what registry keys are matched against.
    pub fn matching_path(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// Whether the image is on Docker Hub, i.e. whether the kubelet's Docker
    /// Hub fallback applies to it.
    pub fn is_docker_hub(&self) -> bool {
        self.registry == DOCKER_HUB
    }
}

impl fmt::Display for ImageRef {
    /// The [normalised](ImageRef::normalized) reference.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.normalized())
    }
}

/// `splitDockerDomain` of `distribution/reference`: the registry and the rest
/// (repository with tag and digest).
fn split_docker_domain(s: &str) -> (String, String) {
    let (registry, rest) = match s.split_once('/') {
        None => (DOCKER_HUB, s),
        Some((first, rest)) => {
            if first == "localhost"
                || first.contains(['.', ':'])
                || first.bytes().any(|b| b.is_ascii_uppercase())
            {
                (first, rest)
            } else {
                (DOCKER_HUB, s)
            }
        }
    };
    let registry = if registry == LEGACY_DOCKER_HUB {
        DOCKER_HUB
    } else {
        registry
    };
    let rest = if registry == DOCKER_HUB && !rest.contains('/') {
        format!("library/{rest}")
    } else {
        rest.to_owned()
    };
    (registry.to_owned(), rest)
}

/// `host[:port]` where the host is a domain name (labels of letters, digits
/// and inner `-`), an IPv4 address or a bracketed IPv6 address.
fn registry_ok(registry: &str) -> bool {
    let (host, port) = if let Some(inner) = registry.strip_prefix('[') {
        let Some((address, after)) = inner.split_once(']') else {
            return false;
        };
        if address.is_empty() || !address.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    if registry.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Why a repository path does not follow the reference grammar, if it does
/// not: components of lower-case letters and digits joined by `.`, `_`, `__`
/// or runs of `-`.
fn repository_problem(repository: &str) -> Option<String> {
    if repository.is_empty() {
        return Some("the repository name is empty".to_owned());
    }
    for component in repository.split('/') {
        if component.is_empty() {
            return Some("it has an empty path component ('//' or a '/' at an end)".to_owned());
        }
        if !path_component_ok(component) {
            return Some(format!(
                "the path component {:?} is not lower-case letters and digits separated by '.', '_', '__' or '-' (starting and ending with a letter or digit)",
                quote(component)
            ));
        }
    }
    None
}

fn path_component_ok(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let run = |mut i: usize| {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        (i > start).then_some(i)
    };
    let Some(mut i) = run(0) else {
        return false;
    };
    while i < bytes.len() {
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if bytes.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        match run(i) {
            Some(next) => i = next,
            None => return false,
        }
    }
    true
}

/// `[\w][\w.-]{0,127}`.
fn tag_ok(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes[1..]
            .iter()
            .all(|&b| word(b) || b == b'.' || b == b'-')
}

/// Why a digest is not acceptable, if it is not (the reference grammar plus
/// `go-digest`'s checks of the algorithm and the encoded length).
fn digest_problem(digest: &str) -> Option<&'static str> {
    const FORMAT: &str =
        "expected algorithm:hex, such as sha256: followed by 64 lower-case hexadecimal digits";
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return Some(FORMAT);
    };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.split(['-', '_', '+', '.']).all(|part| {
            part.as_bytes()
                .first()
                .is_some_and(|b| b.is_ascii_alphabetic())
                && part.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    if !algorithm_ok || encoded.len() < 32 || !encoded.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(FORMAT);
    }
    let expected_len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Some("unsupported digest algorithm (sha256, sha384 and sha512 are supported)"),
    };
    if encoded.len() != expected_len {
        return Some(match algorithm {
            "sha256" => "a sha256 digest has exactly 64 hexadecimal digits",
            "sha384" => "a sha384 digest has exactly 96 hexadecimal digits",
            _ => "a sha512 digest has exactly 128 hexadecimal digits",
        });
    }
    if encoded.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some("the hexadecimal digits of a digest must be lower case");
    }
    None
}

/// Quotes user input in a message, shortening very long input.
fn quote(s: &str) -> String {
    if s.chars().count() > MAX_QUOTED_CHARS {
        let mut out: String = s.chars().take(MAX_QUOTED_CHARS).collect();
        out.push('…');
        out
    } else {
        s.to_owned()
    }
}

// ---------------------------------------------------------------------------
// Registry keys as the kubelet reads them
// ---------------------------------------------------------------------------

/// A key after the kubelet's `Add` (the index key) and after `Lookup`
/// re-parses the index key as a URL.
struct KubeletKey {
    /// The key the kubelet indexes credentials under: `host[:port][path]`.
    index_key: String,
    /// Go's `url.URL.Host` of the re-parsed index key.
    host: String,
    /// Go's `url.URL.Path` of the re-parsed index key (starts with `/` or is
    /// empty).
    path: String,
}

/// What an image is matched as: Go's `url.URL` of `https://<image name>`.
struct Target {
    host: String,
    path: String,
    /// `isDefaultRegistryMatch`: whether the Docker Hub fallback applies.
    docker_hub: bool,
}

impl Target {
    fn from_image(image: &ImageRef) -> Target {
        Target {
            host: image.registry.clone(),
            path: format!("/{}", image.repository),
            docker_hub: image.is_docker_hub(),
        }
    }
}

/// The host and path Go's `url.Parse` finds in an absolute `http(s)://` URL.
struct GoUrl {
    host: String,
    path: String,
}

/// How the kubelet reads a registry key (`BasicDockerKeyring.Add`, then
/// `URLsMatchStr` re-parsing the index key). The error says why the key is
/// never used.
fn read_key(raw: &str) -> Result<KubeletKey, String> {
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
fn parse_go_url(url: &str) -> Result<GoUrl, String> {
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
fn parse_go_host(host: &str) -> Result<String, String> {
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
fn percent_decode(s: &str) -> Option<Vec<u8>> {
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
fn hex_byte(hex: &str) -> Option<u8> {
    if hex.len() == 2 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        u8::from_str_radix(hex, 16).ok()
    } else {
        None
    }
}

/// The kubelet's `SplitURL`: Go's `net.SplitHostPort`, falling back to the
/// whole host and no port when that fails (it fails when there is no port).
fn split_host_port(hostport: &str) -> (&str, &str) {
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

// ---------------------------------------------------------------------------
// Globs (Go's path.Match, one host label at a time)
// ---------------------------------------------------------------------------

enum GlobToken {
    /// `*`: any run of characters except `/`.
    Star,
    /// `?`: any one character except `/`.
    AnyChar,
    /// A literal character (possibly escaped with `\`).
    Char(char),
    /// `[...]` or `[^...]`.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl GlobToken {
    fn matches_char(&self, c: char) -> bool {
        match self {
            GlobToken::Star => true,
            GlobToken::AnyChar => c != '/',
            GlobToken::Char(l) => *l == c,
            GlobToken::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

/// Parses a `path.Match` pattern; `None` for a malformed pattern
/// (`ErrBadPattern`), which never matches.
fn parse_glob(pattern: &str) -> Option<Vec<GlobToken>> {
    let mut chars = pattern.chars().peekable();
    let mut tokens = Vec::new();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '*' => GlobToken::Star,
            '?' => GlobToken::AnyChar,
            '\\' => GlobToken::Char(chars.next()?),
            '[' => {
                let negated = chars.next_if_eq(&'^').is_some();
                let mut ranges = Vec::new();
                loop {
                    if !ranges.is_empty() && chars.next_if_eq(&']').is_some() {
                        break;
                    }
                    let class_char = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
                        match chars.next()? {
                            '-' | ']' => None,
                            '\\' => chars.next(),
                            c => Some(c),
                        }
                    };
                    let lo = class_char(&mut chars)?;
                    let hi = if chars.next_if_eq(&'-').is_some() {
                        class_char(&mut chars)?
                    } else {
                        lo
                    };
                    ranges.push((lo, hi));
                }
                GlobToken::Class { negated, ranges }
            }
            c => GlobToken::Char(c),
        });
    }
    Some(tokens)
}

fn glob_matches(tokens: &[GlobToken], name: &str) -> bool {
    let name: Vec<char> = name.chars().collect();
    let (mut t, mut n) = (0, 0);
    // The last `*` seen and the position in `name` it currently stops at.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match tokens.get(t) {
            Some(GlobToken::Star) => {
                star = Some((t, n));
                t += 1;
                continue;
            }
            Some(token) if token.matches_char(name[n]) => {
                t += 1;
                n += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((star_t, star_n)) if name[star_n] != '/' => {
                star = Some((star_t, star_n + 1));
                t = star_t + 1;
                n = star_n + 1;
            }
            _ => return false,
        }
    }
    tokens[t..]
        .iter()
        .all(|token| matches!(token, GlobToken::Star))
}

fn is_glob(label: &str) -> bool {
    label.contains(['*', '?', '[', '\\'])
}

// ---------------------------------------------------------------------------
// Matching
// ---------------------------------------------------------------------------

/// Whether the kubelet uses a key's credentials for an image.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// The kubelet tries this key's credentials.
    Match,
    /// The kubelet does not use this key for the image.
    Miss(MissReason),
}

impl Verdict {
    pub fn is_match(&self) -> bool {
        matches!(self, Verdict::Match)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Match => f.write_str("matches"),
            Verdict::Miss(reason) => write!(f, "does not match: {reason}"),
        }
    }
}

/// Why a key does not match an image: the first difference in the order host,
/// port, path. (The kubelet checks the port first; a different host is the
/// more useful explanation.)
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum MissReason {
    /// The hosts have different numbers of `.`-separated labels.
    #[serde(rename_all = "camelCase")]
    HostLabelCount {
        key_host: String,
        image_host: String,
        key: usize,
        image: usize,
    },
    /// A label of the key's host does not (glob-)match the image's label.
    #[serde(rename_all = "camelCase")]
    HostLabel {
        key_host: String,
        image_host: String,
        key_label: String,
        image_label: String,
    },
    /// The ports differ (compared as written; no port is not `:443`).
    Port {
        key: Option<String>,
        image: Option<String>,
    },
    /// The key's path is not a prefix of the image's repository path. Both
    /// start with `/` (the key's may be empty).
    #[serde(rename_all = "camelCase")]
    PathPrefix {
        key_path: String,
        image_path: String,
    },
    /// The key names Docker Hub in a way the kubelet does not use for Docker
    /// Hub images; `kubelet_key` is how the kubelet reads it.
    #[serde(rename_all = "camelCase")]
    DockerHubAlias { kubelet_key: String },
    /// The key is the Docker Hub fallback (`index.docker.io`), which the
    /// kubelet only uses when no key matches; `matched` keys matched.
    DockerHubFallbackUnused { matched: usize },
    /// The kubelet never uses the key: the reason.
    InvalidKey(String),
}

impl fmt::Display for MissReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MissReason::HostLabelCount {
                key_host,
                image_host,
                key,
                image,
            } => {
                write!(
                    f,
                    "host differs: the key's host {key_host} has {key} dot-separated label{}, the image's host {image_host} has {image}",
                    plural(*key)
                )?;
                if key_host.split('.').any(is_glob) {
                    f.write_str(" (a '*' in a key stands for exactly one label)")?;
                }
                Ok(())
            }
            MissReason::HostLabel {
                key_host,
                image_host,
                key_label,
                image_label,
            } => {
                write!(
                    f,
                    "host differs: {key_host} does not match {image_host} (label {key_label:?} does not match {image_label:?})"
                )?;
                if key_label == image_label {
                    f.write_str("; the kubelet reads '[' and '*' in a key's host as glob syntax")?;
                } else if key_host.eq_ignore_ascii_case(image_host) {
                    f.write_str(
                        "; the kubelet compares host names case-sensitively, write the key's host in lower case",
                    )?;
                }
                Ok(())
            }
            MissReason::Port { key, image } => {
                let show = |p: &Option<String>| match p {
                    Some(p) => format!(":{p}"),
                    None => "none".to_owned(),
                };
                write!(
                    f,
                    "port differs: key has {}, image has {}",
                    show(key),
                    show(image)
                )?;
                if key.is_none() || image.is_none() {
                    f.write_str(" (no port is not the same as :443)")?;
                } else {
                    f.write_str(" (ports are compared as written)")?;
                }
                Ok(())
            }
            MissReason::PathPrefix {
                key_path,
                image_path,
            } => {
                write!(
                    f,
                    "path differs: the key only covers repositories whose path starts with {key_path}, the image's path is {image_path}"
                )?;
                if let Some(without_slash) = key_path.strip_suffix('/')
                    && image_path == without_slash
                {
                    f.write_str(" (remove the key's trailing '/')")?;
                } else if key_path == "/v1" || key_path == "/v2" {
                    f.write_str(
                        " (the kubelet only drops /v1/ and /v2/ with a trailing '/'; add it)",
                    )?;
                } else if (image_path.starts_with("/v1/") || image_path.starts_with("/v2/"))
                    && image_path[3..].starts_with(key_path.as_str())
                {
                    f.write_str(
                        " (the kubelet drops a leading /v1/ or /v2/ from a key's path as an API version; for a repository that starts with one, write the key as host/v2/v1/... or host/v2/v2/...)",
                    )?;
                }
                Ok(())
            }
            MissReason::DockerHubAlias { kubelet_key } => write!(
                f,
                "the key names Docker Hub but the kubelet reads it as {kubelet_key}; docker.io images only match keys for docker.io, or, when no key matches at all, a key that reads exactly index.docker.io (such as https://index.docker.io/v1/)"
            ),
            MissReason::DockerHubFallbackUnused { matched } => write!(
                f,
                "this Docker Hub key (index.docker.io) is only used when no other key matches, and {matched} other key{} matched this image",
                plural(*matched)
            ),
            MissReason::InvalidKey(reason) => write!(f, "the key is unusable: {reason}"),
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The kubelet's `URLsMatch` with the reason for a miss.
fn compare(key: &KubeletKey, target: &Target) -> Verdict {
    let (key_host, key_port) = split_host_port(&key.host);
    let (image_host, image_port) = split_host_port(&target.host);
    let key_labels: Vec<&str> = key_host.split('.').collect();
    let image_labels: Vec<&str> = image_host.split('.').collect();

    let mut patterns = Vec::with_capacity(key_labels.len());
    for label in &key_labels {
        match parse_glob(label) {
            Some(tokens) => patterns.push(tokens),
            None => {
                return Verdict::Miss(MissReason::InvalidKey(format!(
                    "its host label {:?} is not a valid glob pattern, so it never matches",
                    quote(label)
                )));
            }
        }
    }
    if key_labels.len() != image_labels.len() {
        return Verdict::Miss(MissReason::HostLabelCount {
            key_host: key_host.to_owned(),
            image_host: image_host.to_owned(),
            key: key_labels.len(),
            image: image_labels.len(),
        });
    }
    for ((pattern, key_label), image_label) in patterns.iter().zip(&key_labels).zip(&image_labels) {
        if !glob_matches(pattern, image_label) {
            return Verdict::Miss(MissReason::HostLabel {
                key_host: key_host.to_owned(),
                image_host: image_host.to_owned(),
                key_label: (*key_label).to_owned(),
                image_label: (*image_label).to_owned(),
            });
        }
    }
    if key_port != image_port {
        let port = |p: &str| (!p.is_empty()).then(|| p.to_owned());
        return Verdict::Miss(MissReason::Port {
            key: port(key_port),
            image: port(image_port),
        });
    }
    if !target.path.starts_with(&key.path) {
        return Verdict::Miss(MissReason::PathPrefix {
            key_path: key.path.clone(),
            image_path: target.path.clone(),
        });
    }
    Verdict::Match
}

/// Whether the kubelet would use this key for the image if it were the only
/// key of the pod's pull secrets (a key that reads `index.docker.io` matches
/// Docker Hub images through the fallback). Use [`evaluate`] for a whole set
/// of keys: other keys can suppress the fallback.
pub fn match_key(key: &str, image: &ImageRef) -> Verdict {
    let mut evaluations = evaluate_unsorted([key], &Target::from_image(image));
    evaluations.swap_remove(0).verdict
}

/// One registry key evaluated against an image.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    /// The key as given, with any `user:password@`, query or fragment
    /// replaced by `<redacted>` (see `kubelet::redact_key`).
    pub key: String,
    /// The position of the key in the input of [`evaluate`].
    pub position: usize,
    /// The key as the kubelet indexes it (`host[:port][path]`); `None` when
    /// the kubelet cannot read the key, or when it reads an `@` into the path
    /// (the index key would then show part of a password).
    pub kubelet_key: Option<String>,
    pub verdict: Verdict,
    /// The key matched only through the Docker Hub fallback.
    pub via_docker_hub_fallback: bool,
}

/// Evaluates every key of the pod's pull secrets against the image.
///
/// The result has one entry per key: first the matches in the order the
/// kubelet tries them (reverse lexicographic order of the index keys; keys
/// with the same index key in input order, where the kubelet's order depends
/// on Go map iteration), then the misses, nearest first (see
/// [`is_near_miss`]): same host, then other near misses, then other misses,
/// then keys the kubelet cannot use; ties keep the input order.
///
/// Pass the keys of all the pod's pull secrets, in the order of
/// `imagePullSecrets`: the kubelet merges them into one keyring.
pub fn evaluate<'a>(keys: impl IntoIterator<Item = &'a str>, image: &ImageRef) -> Vec<Evaluation> {
    evaluate_target(keys, &Target::from_image(image))
}

fn evaluate_target<'a>(
    keys: impl IntoIterator<Item = &'a str>,
    target: &Target,
) -> Vec<Evaluation> {
    let mut evaluations = evaluate_unsorted(keys, target);
    // A stable sort: equal entries keep the input order.
    evaluations.sort_by(|a, b| {
        let rank = |e: &Evaluation| match e.verdict {
            Verdict::Match => 0,
            Verdict::Miss(_) => 1 + miss_rank(e),
        };
        rank(a).cmp(&rank(b)).then_with(|| {
            if a.verdict.is_match() && b.verdict.is_match() {
                b.kubelet_key.cmp(&a.kubelet_key)
            } else {
                std::cmp::Ordering::Equal
            }
        })
    });
    evaluations
}

/// The evaluations in input order, with the Docker Hub fallback applied.
fn evaluate_unsorted<'a>(
    keys: impl IntoIterator<Item = &'a str>,
    target: &Target,
) -> Vec<Evaluation> {
    let mut evaluations: Vec<Evaluation> = keys
        .into_iter()
        .enumerate()
        .map(|(position, raw)| {
            let (kubelet_key, verdict) = match read_key(raw) {
                Ok(key) => {
                    let verdict = compare(&key, target);
                    (Some(key.index_key), verdict)
                }
                Err(reason) => (None, Verdict::Miss(MissReason::InvalidKey(reason))),
            };
            Evaluation {
                key: redact_key(raw),
                position,
                kubelet_key,
                verdict,
                via_docker_hub_fallback: false,
            }
        })
        .collect();

    if target.docker_hub {
        let matched = evaluations.iter().filter(|e| e.verdict.is_match()).count();
        for e in &mut evaluations {
            let Some(kubelet_key) = &e.kubelet_key else {
                continue;
            };
            if e.verdict.is_match() {
                continue;
            }
            if kubelet_key == DOCKER_HUB_FALLBACK_KEY {
                if matched == 0 {
                    e.verdict = Verdict::Match;
                    e.via_docker_hub_fallback = true;
                } else {
                    e.verdict = Verdict::Miss(MissReason::DockerHubFallbackUnused { matched });
                }
            } else if names_docker_hub(kubelet_key) {
                e.verdict = Verdict::Miss(MissReason::DockerHubAlias {
                    kubelet_key: kubelet_key.clone(),
                });
            }
        }
    }
    evaluations
}

/// Whether a key's host (without port, ignoring case) is a Docker Hub name
/// other than `docker.io` itself.
fn names_docker_hub(kubelet_key: &str) -> bool {
    let host_port = kubelet_key.split('/').next().unwrap_or_default();
    let (host, _port) = split_host_port(host_port);
    DOCKER_HUB_ALIASES
        .iter()
        .any(|alias| alias.eq_ignore_ascii_case(host))
}

/// 0: same host; 1: other near miss; 2: other miss; 3: unusable key.
fn miss_rank(e: &Evaluation) -> u8 {
    match &e.verdict {
        Verdict::Match => 0,
        Verdict::Miss(
            MissReason::Port { .. }
            | MissReason::PathPrefix { .. }
            | MissReason::DockerHubAlias { .. }
            | MissReason::DockerHubFallbackUnused { .. },
        ) => 0,
        Verdict::Miss(MissReason::HostLabel {
            key_host,
            image_host,
            ..
        }) if key_host.eq_ignore_ascii_case(image_host) => 0,
        Verdict::Miss(MissReason::InvalidKey(_)) => 3,
        Verdict::Miss(_) if is_near_miss(e) => 1,
        Verdict::Miss(_) => 2,
    }
}

/// Whether a key that does not match was probably meant for the image:
///
/// * the host matches and only the port or the path differs;
/// * the hosts differ only in case;
/// * a wildcard label of the key fails (`reg-*.example.com` against
///   `mirror.example.com`);
/// * the label counts differ but the key's host, without its leading wildcard
///   labels, and the image's host end in the same two or more labels
///   (`*.example.com` against `example.com` or `a.b.example.com`,
///   `example.com` against `registry.example.com`);
/// * the key names Docker Hub in a way the kubelet does not use, or is the
///   Docker Hub fallback suppressed by other matches.
///
/// The verdict holds both hosts, so no image is needed.
pub fn is_near_miss(e: &Evaluation) -> bool {
    let Verdict::Miss(reason) = &e.verdict else {
        return false;
    };
    match reason {
        MissReason::Port { .. }
        | MissReason::PathPrefix { .. }
        | MissReason::DockerHubAlias { .. }
        | MissReason::DockerHubFallbackUnused { .. } => true,
        MissReason::HostLabel {
            key_host,
            image_host,
            key_label,
            ..
        } => key_host.eq_ignore_ascii_case(image_host) || is_glob(key_label),
        MissReason::HostLabelCount {
            key_host,
            image_host,
            ..
        } => {
            let key_labels: Vec<&str> = key_host.split('.').collect();
            let literal_start = key_labels
                .iter()
                .position(|l| !is_glob(l))
                .unwrap_or(key_labels.len());
            let key_rest = &key_labels[literal_start..];
            let image_labels: Vec<&str> = image_host.split('.').collect();
            let common = key_rest
                .iter()
                .rev()
                .zip(image_labels.iter().rev())
                .take_while(|(k, i)| k.eq_ignore_ascii_case(i))
                .count();
            common >= 2 && (common == key_rest.len() || common == image_labels.len())
        }
        MissReason::InvalidKey(_) => false,
    }
}

/// Whether the kubelet pulls the image without credentials from the pod's
/// pull secrets: true only when no key matched (not even through the Docker
/// Hub fallback). When keys match and all their credentials fail, the pull
/// fails; there is no anonymous retry.
pub fn pulls_anonymously(evaluations: &[Evaluation]) -> bool {
    !evaluations.iter().any(|e| e.verdict.is_match())
}

// ---------------------------------------------------------------------------
// Pull failures
// ---------------------------------------------------------------------------

/// Whether the message has a registry's `denied: ...` error (not a local
/// `permission denied: ...`).
fn registry_denied(m: &str) -> bool {
    m.match_indices("denied: ")
        .any(|(i, _)| !m[..i].ends_with("permission "))
}

/// What a failed pull's event message (reasons `Failed`, `ErrImagePull`,
/// `ImagePullBackOff`) says went wrong.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PullFailure {
    /// The registry refused the request for lack of (valid) credentials.
    AuthRefused,
    /// The repository, tag, digest or platform does not exist.
    NotFound,
    /// The node could not connect to the registry.
    Unreachable,
    /// The registry's host name did not resolve.
    Dns,
    /// TLS failed (untrusted or wrong certificate, or a plain-HTTP registry).
    Tls,
    /// The pull or a connection timed out.
    Timeout,
    /// The registry is rate-limiting pulls.
    RateLimited,
    /// Anything else.
    Other,
}

impl PullFailure {
    /// A one-line hint at the fix.
    pub fn fix(&self) -> &'static str {
        match self {
            PullFailure::AuthRefused => {
                "Check that a pull secret key matches the image (see the key evaluation) and that its credentials are current and may pull this repository; registries also answer this way for a repository that does not exist."
            }
            PullFailure::NotFound => {
                "Check the repository name, tag or digest for typos, and that the image was pushed for this node's platform."
            }
            PullFailure::Unreachable => {
                "Check the registry host and port, and firewalls, proxies and network policies between the node and the registry."
            }
            PullFailure::Dns => {
                "Check the spelling of the registry host and that the node's DNS resolves it."
            }
            PullFailure::Tls => {
                "Make the node trust the registry's certificate (CA in the container runtime's registry configuration, e.g. containerd hosts.toml or CRI-O registries.conf), or configure the registry as plain HTTP if it has no TLS."
            }
            PullFailure::Timeout => {
                "Check connectivity and proxies between the node and the registry, and whether the registry is overloaded; retry."
            }
            PullFailure::RateLimited => {
                "Authenticate pulls to this registry (a matching pull secret raises Docker Hub's limit), use a mirror or pull-through cache, or wait for the limit to reset."
            }
            PullFailure::Other => {
                "Read the full event message; an ImagePullBackOff event only repeats an earlier Failed event, which has the cause."
            }
        }
    }
}

impl fmt::Display for PullFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PullFailure::AuthRefused => "authentication refused",
            PullFailure::NotFound => "image not found",
            PullFailure::Unreachable => "registry unreachable",
            PullFailure::Dns => "registry host name does not resolve",
            PullFailure::Tls => "TLS failure",
            PullFailure::Timeout => "timeout",
            PullFailure::RateLimited => "rate limited",
            PullFailure::Other => "other failure",
        })
    }
}

/// Classifies the message of a pull-failure event from the kubelet with
/// containerd, CRI-O or Docker. The checks run from the most to the least
/// specific: rate limits, DNS, TLS, authentication, missing images, timeouts,
/// connection failures. The message may name the image, so a repository
/// called, say, `unauthorized-app` can mislead the classification.
pub fn classify_pull_message(msg: &str) -> PullFailure {
    let m = msg.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| m.contains(n));

    if any(&["toomanyrequests", "too many requests", "pull rate limit"]) {
        return PullFailure::RateLimited;
    }
    if any(&[
        "no such host",
        "server misbehaving",
        "temporary failure in name resolution",
        "name or service not known",
        "no address associated with hostname",
        "dial tcp: lookup ",
    ]) {
        return PullFailure::Dns;
    }
    if any(&["tls handshake timeout"]) {
        return PullFailure::Timeout;
    }
    if any(&[
        "x509:",
        "tls:",
        "certificate signed by unknown authority",
        "server gave http response to https client",
        "first record does not look like a tls handshake",
    ]) {
        return PullFailure::Tls;
    }
    if any(&[
        "pull access denied",
        "unauthorized",
        "authorization failed",
        "authentication required",
        "no basic auth credentials",
        "requested access to the resource is denied",
        "access denied",
        "incorrect username or password",
        "invalid username/password",
        "insufficient_scope",
        "forbidden",
        "code = unauthenticated",
        "code = permissiondenied",
    ]) || registry_denied(&m)
    {
        return PullFailure::AuthRefused;
    }
    if any(&[
        "manifest unknown",
        "not found",
        "name unknown",
        "code = notfound",
        "repository does not exist",
        "no match for platform",
    ]) {
        return PullFailure::NotFound;
    }
    if any(&[
        "context deadline exceeded",
        "deadlineexceeded",
        "i/o timeout",
        "timeout exceeded",
        "timed out",
    ]) {
        return PullFailure::Timeout;
    }
    if any(&[
        "connection refused",
        "actively refused",
        "no route to host",
        "network is unreachable",
        "connection reset by peer",
        "proxyconnect",
        "dial tcp",
        ": eof",
    ]) {
        return PullFailure::Unreachable;
    }
    PullFailure::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn image_err(s: &str) -> ImageRefError {
        match ImageRef::parse(s) {
            Ok(i) => panic!("{s:?} should be rejected, got {i:?}"),
            Err(e) => e,
        }
    }

    /// The kubelet's `isDefaultRegistryMatch`, for lookups of raw strings.
    fn is_default_registry_match(image: &str) -> bool {
        let (first, rest) = match image.split_once('/') {
            Some((first, rest)) => (first, Some(rest)),
            None => (image, None),
        };
        if first.is_empty() {
            return false;
        }
        if rest.is_none() || first == "docker.io" || first == "index.docker.io" {
            return true;
        }
        !first.contains(['.', ':'])
    }

    /// A raw string passed to the kubelet's `Lookup`, as its tests do.
    fn raw_target(s: &str) -> Target {
        let url = parse_go_url(&format!("https://{s}")).expect("target parses");
        Target {
            host: url.host,
            path: url.path,
            docker_hub: is_default_registry_match(s),
        }
    }

    /// The kubelet's `URLsMatchStr(glob, target)`.
    fn urls_match_str(glob: &str, target: &str) -> bool {
        let key = parse_go_url(&format!("https://{glob}")).expect("glob parses");
        let key = KubeletKey {
            index_key: String::new(),
            host: key.host,
            path: key.path,
        };
        compare(&key, &raw_target(target)).is_match()
    }

    /// The keys the kubelet's `Lookup` returns credentials for, in order.
    fn lookup_raw<'a>(keys: &[&'a str], target: &str) -> Vec<&'a str> {
        evaluate_target(keys.iter().copied(), &raw_target(target))
            .into_iter()
            .filter(|e| e.verdict.is_match())
            .map(|e| keys[e.position])
            .collect()
    }

    /// The keys tried for an image, in order.
    fn lookup<'a>(keys: &[&'a str], img: &str) -> Vec<&'a str> {
        evaluate(keys.iter().copied(), &image(img))
            .into_iter()
            .filter(|e| e.verdict.is_match())
            .map(|e| keys[e.position])
            .collect()
    }

    fn miss(key: &str, img: &str) -> MissReason {
        match match_key(key, &image(img)) {
            Verdict::Match => panic!("{key:?} should not match {img:?}"),
            Verdict::Miss(reason) => reason,
        }
    }

    // --- keyring_test.go: TestURLsMatch --------------------------------------

    #[test]
    fn kubelet_urls_match_vectors() {
        let cases = [
            // no path component
            ("*.kubernetes.io", "prefix.kubernetes.io", true),
            ("prefix.*.io", "prefix.kubernetes.io", true),
            ("prefix.kubernetes.*", "prefix.kubernetes.io", true),
            ("*-good.kubernetes.io", "prefix-good.kubernetes.io", true),
            // path components
            ("*.kubernetes.io/blah", "prefix.kubernetes.io/blah", true),
            ("prefix.*.io/foo", "prefix.kubernetes.io/foo/bar", true),
            // path components and ports
            (
                "*.kubernetes.io:1111/blah",
                "prefix.kubernetes.io:1111/blah",
                true,
            ),
            (
                "prefix.*.io:1111/foo",
                "prefix.kubernetes.io:1111/foo/bar",
                true,
            ),
            // number of labels differs
            ("*.kubernetes.io", "kubernetes.io", false),
            ("*.*.kubernetes.io", "prefix.kubernetes.io", false),
            ("*.*.kubernetes.io", "kubernetes.io", false),
            ("*kubernetes.io", "a.kubernetes.io", false),
            // number of labels equal
            ("*kubernetes.io", "kubernetes.io", true),
            ("*.*.*.kubernetes.io", "a.b.c.kubernetes.io", true),
            // some labels differ
            ("kubernetes.io", "kubernetes.com", false),
            ("k*.io", "quay.io", false),
            // ports differ
            (
                "*.kubernetes.io:1234/blah",
                "prefix.kubernetes.io:1111/blah",
                false,
            ),
            (
                "prefix.*.io/foo",
                "prefix.kubernetes.io:1111/foo/bar",
                false,
            ),
        ];
        for (glob, target, expected) in cases {
            assert_eq!(urls_match_str(glob, target), expected, "{glob} vs {target}");
        }
    }

    // --- TestDockerKeyringForGlob and TestKeyringMiss ------------------------

    #[test]
    fn kubelet_keyring_glob_hits() {
        let cases = [
            ("https://hello.kubernetes.io", "hello.kubernetes.io"),
            ("https://*.docker.io", "prefix.docker.io"),
            ("https://prefix.*.io", "prefix.docker.io"),
            ("https://prefix.docker.*", "prefix.docker.io"),
            ("https://*.docker.io/path", "prefix.docker.io/path"),
            ("https://prefix.*.io/path", "prefix.docker.io/path/subpath"),
            ("https://prefix.docker.*/path", "prefix.docker.io/path"),
            ("https://*.docker.io:8888", "prefix.docker.io:8888"),
            ("https://prefix.*.io:8888", "prefix.docker.io:8888"),
            ("https://prefix.docker.*:8888", "prefix.docker.io:8888"),
            (
                "https://*.docker.io/path:1111",
                "prefix.docker.io/path:1111",
            ),
            ("https://*.docker.io/v1/", "prefix.docker.io/path:1111"),
            ("https://*.docker.io/v2/", "prefix.docker.io/path:1111"),
            (
                "https://prefix.docker.*/path:1111",
                "prefix.docker.io/path:1111",
            ),
            ("prefix.docker.io:1111", "prefix.docker.io:1111/path"),
            ("*.docker.io:1111", "prefix.docker.io:1111/path"),
        ];
        for (key, target) in cases {
            assert_eq!(
                lookup_raw(&[key], &format!("{target}/foo/bar")),
                [key],
                "{key} vs {target}"
            );
        }
    }

    #[test]
    fn kubelet_keyring_glob_misses() {
        let cases = [
            ("https://hello.kubernetes.io", "world.mesos.org/foo/bar"),
            ("https://*.docker.com", "prefix.docker.io"),
            ("https://suffix.*.io", "prefix.docker.io"),
            ("https://prefix.docker.c*", "prefix.docker.io"),
            (
                "https://prefix.*.io/path:1111",
                "prefix.docker.io/path/subpath:1111",
            ),
            ("suffix.*.io", "prefix.docker.io"),
        ];
        for (key, target) in cases {
            assert!(
                lookup_raw(&[key], &format!("{target}/foo/bar")).is_empty(),
                "{key} vs {target}"
            );
        }
    }

    #[test]
    fn glob_vectors_on_images() {
        let hits = [
            ("*.kubernetes.io", "prefix.kubernetes.io/app"),
            ("*-good.kubernetes.io", "prefix-good.kubernetes.io/app"),
            ("*kubernetes.io", "kubernetes.io/app"),
            ("reg-[0-9].example.com", "reg-5.example.com/app"),
            ("*.*.*.kubernetes.io", "a.b.c.kubernetes.io/app"),
        ];
        for (key, img) in hits {
            assert_eq!(
                match_key(key, &image(img)),
                Verdict::Match,
                "{key} vs {img}"
            );
        }
        let misses = [
            ("reg-[a-z].example.com", "reg-5.example.com/app"),
            ("k*.io", "quay.io/app"),
        ];
        for (key, img) in misses {
            assert!(!match_key(key, &image(img)).is_match(), "{key} vs {img}");
        }
        // '?' starts the URL's query, so the kubelet reads the host "reg-".
        assert_eq!(
            read_key("reg-?.example.com").map(|k| k.index_key),
            Ok("reg-".to_owned())
        );
        assert!(matches!(
            miss("reg-?.example.com", "reg-1.example.com/app"),
            MissReason::HostLabelCount {
                key: 1,
                image: 3,
                ..
            }
        ));
        // Go's URL parser does not allow '\\' or '^' in a host.
        for key in ["reg-\\x.example.com", "reg-[^a-z].example.com"] {
            assert!(
                matches!(
                    miss(key, "reg-5.example.com/app"),
                    MissReason::InvalidKey(_)
                ),
                "{key}"
            );
        }
    }

    #[test]
    fn malformed_glob_never_matches() {
        for key in ["reg-[a.example.com", "reg-[].example.com", "reg-\\"] {
            assert!(
                matches!(
                    miss(key, "reg-a.example.com/app"),
                    MissReason::InvalidKey(_)
                ),
                "{key}"
            );
        }
    }

    // --- TestDockerKeyringLookup and TestIssue3797 ---------------------------

    #[test]
    fn kubelet_lookup_order_and_prefixes() {
        let keys = ["bar.example.com/pong", "bar.example.com"];
        let cases: [(&str, &[&str]); 7] = [
            ("bar.example.com", &["bar.example.com"]),
            (
                "bar.example.com/pong",
                &["bar.example.com/pong", "bar.example.com"],
            ),
            ("bar.example.com/ping", &["bar.example.com"]),
            (
                "bar.example.com/pongz",
                &["bar.example.com/pong", "bar.example.com"],
            ),
            (
                "bar.example.com/pong/pang",
                &["bar.example.com/pong", "bar.example.com"],
            ),
            ("example.com", &[]),
            ("foo.example.com", &[]),
        ];
        for (target, expected) in cases {
            assert_eq!(lookup_raw(&keys, target), expected, "{target}");
        }
        // The same through image references.
        assert_eq!(
            lookup(&keys, "bar.example.com/pongz:1"),
            ["bar.example.com/pong", "bar.example.com"]
        );
        assert_eq!(lookup(&keys, "bar.example.com/ping"), ["bar.example.com"]);
        assert!(lookup(&keys, "foo.example.com/pong").is_empty());
    }

    #[test]
    fn kubelet_issue_3797_scheme_and_api_path() {
        let keys = ["https://quay.io/v1/"];
        for target in ["quay.io", "quay.io/foo", "quay.io/foo/bar"] {
            assert_eq!(lookup_raw(&keys, target), keys, "{target}");
        }
        assert_eq!(lookup(&keys, "quay.io/foo/bar:1"), keys);
    }

    #[test]
    fn most_specific_first() {
        let keys = ["quay.io", "quay.io/coreos/etcd", "*.io", "quay.io/coreos"];
        assert_eq!(
            lookup(&keys, "quay.io/coreos/etcd:v3"),
            ["quay.io/coreos/etcd", "quay.io/coreos", "quay.io", "*.io"]
        );
        // Reverse lexicographic, not by length: "team" sorts after "te".
        assert_eq!(
            lookup(&["r.io/te", "r.io/team"], "r.io/team/app"),
            ["r.io/team", "r.io/te"]
        );
        // The order is by the kubelet's index key, not by the key as written.
        assert_eq!(
            lookup(
                &["https://quay.io/v2/", "quay.io/coreos"],
                "quay.io/coreos/etcd"
            ),
            ["quay.io/coreos", "https://quay.io/v2/"]
        );
    }

    #[test]
    fn equal_index_keys_keep_input_order() {
        let keys = ["https://quay.io/v1/", "quay.io", "http://quay.io/"];
        let evaluations = evaluate(keys, &image("quay.io/a/b"));
        let positions: Vec<usize> = evaluations.iter().map(|e| e.position).collect();
        assert_eq!(positions, [0, 1, 2]);
        assert!(
            evaluations
                .iter()
                .all(|e| e.kubelet_key.as_deref() == Some("quay.io"))
        );
    }

    // --- Docker Hub ----------------------------------------------------------

    #[test]
    fn kubelet_docker_hub_fallback_vectors() {
        let keys = ["https://index.docker.io/v1/"];
        // TestKeyringMissWithDockerHubCredentials
        assert!(lookup_raw(&keys, "world.mesos.org/foo/bar").is_empty());
        // TestKeyringHitWithUnqualifiedDockerHub
        assert_eq!(lookup_raw(&keys, "google/docker-registry"), keys);
        // TestKeyringHitWithUnqualifiedLibraryDockerHub
        assert_eq!(lookup_raw(&keys, "jenkins"), keys);
        // TestKeyringHitWithQualifiedDockerHub
        assert_eq!(
            lookup_raw(&keys, "index.docker.io/v1//google/docker-registry"),
            keys
        );

        // The same with real image references (normalised to docker.io).
        for img in [
            "google/docker-registry",
            "jenkins",
            "index.docker.io/google/docker-registry",
            "docker.io/library/nginx:1.25",
        ] {
            let evaluations = evaluate(keys, &image(img));
            assert_eq!(evaluations[0].verdict, Verdict::Match, "{img}");
            assert!(evaluations[0].via_docker_hub_fallback, "{img}");
        }
        assert!(lookup(&keys, "world.mesos.org/foo/bar").is_empty());
        assert!(lookup(&keys, "registry-1.docker.io/library/nginx").is_empty());
    }

    #[test]
    fn fallback_key_spellings() {
        for key in [
            "index.docker.io",
            "https://index.docker.io/v1/",
            "https://index.docker.io/v2/",
            "http://index.docker.io/",
        ] {
            let e = &evaluate([key], &image("nginx"))[0];
            assert!(e.via_docker_hub_fallback, "{key}");
        }
        for key in [
            "https://index.docker.io/v1",
            "index.docker.io:443",
            "Index.Docker.io",
            "registry-1.docker.io",
        ] {
            match miss(key, "nginx") {
                MissReason::DockerHubAlias { kubelet_key } => {
                    assert!(
                        kubelet_key.to_ascii_lowercase().contains("docker.io"),
                        "{key}"
                    );
                }
                other => panic!("{key}: {other:?}"),
            }
        }
        let reason = miss("https://index.docker.io/v1", "nginx");
        assert!(
            reason.to_string().contains("index.docker.io/v1;"),
            "{reason}"
        );
    }

    #[test]
    fn docker_io_keys_match_directly() {
        assert_eq!(match_key("docker.io", &image("nginx")), Verdict::Match);
        assert_eq!(
            match_key("https://docker.io/v1/", &image("user/app")),
            Verdict::Match
        );
        assert_eq!(
            match_key("docker.io/library", &image("nginx")),
            Verdict::Match
        );
        let e = &evaluate(["docker.io"], &image("nginx"))[0];
        assert!(!e.via_docker_hub_fallback);
    }

    #[test]
    fn fallback_suppressed_by_any_match() {
        let keys = ["https://index.docker.io/v1/", "docker.io/someone-else"];
        let evaluations = evaluate(keys, &image("someone-else/app"));
        assert_eq!(evaluations[0].key, "docker.io/someone-else");
        assert_eq!(evaluations[0].verdict, Verdict::Match);
        assert_eq!(
            evaluations[1].verdict,
            Verdict::Miss(MissReason::DockerHubFallbackUnused { matched: 1 })
        );
        assert!(is_near_miss(&evaluations[1]));

        // Even a broad glob suppresses the fallback: *.io has two labels, like
        // docker.io.
        assert_eq!(
            lookup(&["https://index.docker.io/v1/", "*.io"], "nginx"),
            ["*.io"]
        );
        // A key that does not match leaves the fallback alone.
        assert_eq!(
            lookup(&["https://index.docker.io/v1/", "quay.io"], "nginx"),
            ["https://index.docker.io/v1/"]
        );
    }

    #[test]
    fn is_docker_hub_vectors() {
        // keyring_test.go TestIsDefaultRegistryMatch, through normalisation.
        for (img, expected) in [
            ("foo/bar", true),
            ("docker.io/foo/bar", true),
            ("index.docker.io/foo/bar", true),
            ("foo", true),
            ("registry.tld/foo/bar", false),
            ("registry:5000/foo/bar", false),
            ("myhostdocker.io/foo/bar", false),
        ] {
            assert_eq!(image(img).is_docker_hub(), expected, "{img}");
        }
        assert_eq!(image_err(""), ImageRefError::Empty);
    }

    // --- Ports, paths, case ----------------------------------------------------

    #[test]
    fn ports_compare_as_strings() {
        let reason = miss("registry.example.com:443", "registry.example.com/app");
        assert_eq!(
            reason,
            MissReason::Port {
                key: Some("443".into()),
                image: None
            }
        );
        assert_eq!(
            reason.to_string(),
            "port differs: key has :443, image has none (no port is not the same as :443)"
        );
        assert_eq!(
            miss("registry.example.com:5000", "registry.example.com/app").to_string(),
            "port differs: key has :5000, image has none (no port is not the same as :443)"
        );
        assert_eq!(
            miss("registry.example.com", "registry.example.com:5000/app").to_string(),
            "port differs: key has none, image has :5000 (no port is not the same as :443)"
        );
        assert_eq!(
            miss(
                "registry.example.com:05000",
                "registry.example.com:5000/app"
            )
            .to_string(),
            "port differs: key has :05000, image has :5000 (ports are compared as written)"
        );
        assert_eq!(
            match_key("localhost:5000", &image("localhost:5000/app")),
            Verdict::Match
        );
        // An empty port in a key is no port.
        assert_eq!(
            match_key("registry.example.com:", &image("registry.example.com/app")),
            Verdict::Match
        );
    }

    #[test]
    fn path_is_a_plain_prefix() {
        assert_eq!(
            match_key("quay.io/org", &image("quay.io/orgx/app")),
            Verdict::Match
        );
        assert_eq!(
            match_key("quay.io/org/", &image("quay.io/org/app")),
            Verdict::Match
        );
        assert_eq!(
            miss("quay.io/org/", "quay.io/orgx/app"),
            MissReason::PathPrefix {
                key_path: "/org/".into(),
                image_path: "/orgx/app".into()
            }
        );
        let reason = miss("quay.io/org/app/", "quay.io/org/app:1");
        assert_eq!(
            reason.to_string(),
            "path differs: the key only covers repositories whose path starts with /org/app/, the image's path is /org/app (remove the key's trailing '/')"
        );
        let reason = miss("registry.example.com/v2", "registry.example.com/app");
        assert!(
            reason.to_string().contains("trailing '/'; add it"),
            "{reason}"
        );
        assert_eq!(
            match_key(
                "registry.example.com/v2/",
                &image("registry.example.com/app")
            ),
            Verdict::Match
        );
        // Only one API prefix is dropped.
        assert!(matches!(
            miss("https://quay.io/v2/v2/", "quay.io/app"),
            MissReason::PathPrefix { .. }
        ));
        // The path of a Docker Hub key is matched after normalisation.
        assert_eq!(
            match_key("docker.io/library/ng", &image("nginx")),
            Verdict::Match
        );
    }

    #[test]
    fn hosts_are_case_sensitive() {
        let reason = miss("Registry.Example.com", "registry.example.com/app");
        assert!(matches!(reason, MissReason::HostLabel { .. }));
        assert!(reason.to_string().contains("case-sensitively"), "{reason}");
        // An image may spell its registry in upper case, too.
        assert_eq!(
            match_key("Registry.Example.com", &image("Registry.Example.com/app")),
            Verdict::Match
        );
        assert!(!match_key("registry.example.com", &image("Registry.Example.com/app")).is_match());
    }

    #[test]
    fn label_count_messages() {
        let reason = miss("*.example.com", "example.com/app");
        assert_eq!(
            reason.to_string(),
            "host differs: the key's host *.example.com has 3 dot-separated labels, the image's host example.com has 2 (a '*' in a key stands for exactly one label)"
        );
        assert!(matches!(
            miss("*.example.com", "a.b.example.com/app"),
            MissReason::HostLabelCount {
                key: 3,
                image: 4,
                ..
            }
        ));
    }

    // --- How the kubelet reads keys ------------------------------------------

    #[test]
    fn kubelet_key_reading() {
        let kubelet_key = |k: &str| read_key(k).map(|k| k.index_key);
        assert_eq!(
            kubelet_key("https://index.docker.io/v1/").unwrap(),
            "index.docker.io"
        );
        assert_eq!(
            kubelet_key("index.docker.io/v1").unwrap(),
            "index.docker.io/v1"
        );
        assert_eq!(kubelet_key("quay.io/v2/org/").unwrap(), "quay.io/org/");
        assert_eq!(kubelet_key("http://quay.io/").unwrap(), "quay.io");
        assert_eq!(kubelet_key("Quay.IO").unwrap(), "Quay.IO");
        assert_eq!(kubelet_key("quay.io/org?x=1#y").unwrap(), "quay.io/org");
        assert_eq!(kubelet_key("quay.io/a%20b").unwrap(), "quay.io/a b");
        assert_eq!(kubelet_key("[::1]:5000/x").unwrap(), "[::1]:5000/x");
        // Go accepts several colons before the port; the key never matches.
        assert_eq!(kubelet_key("quay.io:5000:1").unwrap(), "quay.io:5000:1");
        // Only lower-case schemes are recognised; the rest becomes the host.
        assert_eq!(kubelet_key("HTTPS://quay.io").unwrap(), "HTTPS://quay.io");
        for bad in [
            " quay.io",
            "quay.io ",
            "quay.io\n",
            "quay.io:abc",
            "qu ay.io",
            "quay.io/%zz",
            "[::1",
            "[example.com]:5000",
            "https:///v2/",
            "",
        ] {
            assert!(kubelet_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn surrounding_whitespace_is_never_used() {
        for key in [" quay.io", "quay.io\n", "https://quay.io/v1/ "] {
            let reason = miss(key, "quay.io/app");
            assert!(
                reason.to_string().contains("whitespace"),
                "{key:?}: {reason}"
            );
        }
    }

    #[test]
    fn user_information_is_dropped_and_redacted() {
        let key = "https://robot:s3cr3t@quay.io/v1/";
        let evaluations = evaluate([key], &image("quay.io/org/app"));
        let e = &evaluations[0];
        assert_eq!(e.verdict, Verdict::Match);
        assert_eq!(e.kubelet_key.as_deref(), Some("quay.io"));
        assert_eq!(e.key, "https://<redacted>@quay.io/v1/");
        let shown = format!("{e:?} {}", serde_json::to_string(e).unwrap());
        assert!(!shown.contains("s3cr3t"), "{shown}");

        // A malformed key with credentials: the reason does not quote them.
        let key = "https://robot:s3cr3t^@quay.io";
        let e = &evaluate([key], &image("quay.io/org/app"))[0];
        let shown = format!("{e:?} {}", e.verdict);
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn passwords_with_slash_or_query_characters_are_not_shown() {
        // Found by prop_userinfo_never_shown: Go's URL parser ends the host at
        // the first '/', '?' or '#', so part of such a password became the
        // port (quoted in the reason) or the host and path of the index key.
        for (key, secret) in [
            ("https://a:*=$?@docker.io", "*=$"),
            ("https://a:/A_A@docker.io", "A_A"),
            ("https://robot:s3/cr3t@quay.io", "s3"),
            ("https://robot:12/s3cr3t@quay.io", "s3cr3t"),
            ("https://robot:s3cr3t#x@quay.io", "s3cr3t"),
        ] {
            for img in ["quay.io/app", "nginx"] {
                let e = &evaluate([key], &image(img))[0];
                assert!(!e.verdict.is_match(), "{key:?}");
                let shown = format!("{e:?} {} {}", e.verdict, serde_json::to_string(e).unwrap());
                assert!(!shown.contains(secret), "{key:?}: {shown}");
            }
        }
        // An '@' in the path never matches an image, whatever its origin.
        let e = &evaluate(["quay.io/a%40b"], &image("quay.io/a"))[0];
        assert_eq!(e.kubelet_key, None);
        assert!(matches!(
            e.verdict,
            Verdict::Miss(MissReason::InvalidKey(_))
        ));
    }

    #[test]
    fn repository_starting_with_an_api_version() {
        // Found by fuzzing (image_ref): the kubelet drops "/v1/" from the key
        // "ind.io/v1/r/app", so it does not cover the repository "v1/r/app";
        // the key needs an API prefix in front.
        let img = "ind.io/v1/r/app:1.0";
        let reason = miss("ind.io/v1/r/app", img);
        assert_eq!(
            reason,
            MissReason::PathPrefix {
                key_path: "/r/app".into(),
                image_path: "/v1/r/app".into()
            }
        );
        assert!(
            reason
                .to_string()
                .contains("write the key as host/v2/v1/..."),
            "{reason}"
        );
        assert_eq!(match_key("ind.io/v2/v1/r/app", &image(img)), Verdict::Match);
        assert_eq!(match_key("ind.io/v2/v1", &image(img)), Verdict::Match);
        // A key that differs otherwise gets no such hint.
        let reason = miss("ind.io/v1/x", img);
        assert!(!reason.to_string().contains("host/v2/v1"), "{reason}");
    }

    #[test]
    fn ipv6_registries() {
        assert_eq!(
            match_key("[::1]:5000", &image("[::1]:5000/app")),
            Verdict::Match
        );
        // Without a port the kubelet keeps the brackets and reads them as a glob
        // class, so the key never matches.
        let reason = miss("[::1]", "[::1]/app");
        assert!(reason.to_string().contains("glob syntax"), "{reason}");
    }

    // --- Evaluation order and near misses -------------------------------------

    #[test]
    fn evaluation_order_and_nearness() {
        let keys = [
            "ghcr.io",
            " quay.io",
            "*.example.org",
            "example.com",
            "registry.example.com:5000",
            "registry.example.com/other",
            "registry.example.com/team",
            "reg-*.example.com",
        ];
        let evaluations = evaluate(keys, &image("registry.example.com/team/app:1"));
        let order: Vec<&str> = evaluations.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            order,
            [
                "registry.example.com/team",
                // same host
                "registry.example.com:5000",
                "registry.example.com/other",
                // other near misses
                "example.com",
                "reg-*.example.com",
                // other misses
                "ghcr.io",
                "*.example.org",
                // unusable
                " quay.io",
            ]
        );
        let near: Vec<bool> = evaluations.iter().map(is_near_miss).collect();
        assert_eq!(near, [false, true, true, true, true, false, false, false]);
        assert!(!pulls_anonymously(&evaluations));
        assert!(pulls_anonymously(&evaluate(
            ["ghcr.io"],
            &image("quay.io/a")
        )));
    }

    #[test]
    fn near_miss_label_counts() {
        let near = |key: &str, img: &str| is_near_miss(&evaluate([key], &image(img))[0]);
        assert!(near("*.example.com", "example.com/app"));
        assert!(near("*.example.com", "a.b.example.com/app"));
        assert!(near("example.com", "registry.example.com/app"));
        assert!(near("registry.example.com", "example.com/app"));
        assert!(!near("*.io", "registry.example.io/app"));
        assert!(!near("*.example.org", "a.b.example.com/app"));
        assert!(near("reg-*.example.com", "mirror.example.com/app"));
        assert!(!near("*.example.org", "a.example.com/app"));
        assert!(near("Registry.example.com", "registry.example.com/app"));
    }

    #[test]
    fn serialises_to_json() {
        let e = &evaluate(["quay.io:443"], &image("quay.io/app"))[0];
        let json = serde_json::to_value(e).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "key": "quay.io:443",
                "position": 0,
                "kubeletKey": "quay.io:443",
                "verdict": {"miss": {"port": {"key": "443", "image": null}}},
                "viaDockerHubFallback": false
            })
        );
    }

    // --- Image references ------------------------------------------------------

    #[test]
    fn image_normalisation() {
        let cases = [
            ("nginx", "docker.io", "library/nginx", None, None),
            (
                "nginx:1.25",
                "docker.io",
                "library/nginx",
                Some("1.25"),
                None,
            ),
            ("user/app", "docker.io", "user/app", None, None),
            ("docker.io/nginx", "docker.io", "library/nginx", None, None),
            (
                "index.docker.io/nginx",
                "docker.io",
                "library/nginx",
                None,
                None,
            ),
            (
                "index.docker.io/user/app",
                "docker.io",
                "user/app",
                None,
                None,
            ),
            ("localhost/app", "localhost", "app", None, None),
            (
                "localhost:5000/app:v1",
                "localhost:5000",
                "app",
                Some("v1"),
                None,
            ),
            (
                "localhost:5000",
                "docker.io",
                "library/localhost",
                Some("5000"),
                None,
            ),
            (
                "example.com",
                "docker.io",
                "library/example.com",
                None,
                None,
            ),
            (
                "registry:5000/team/app",
                "registry:5000",
                "team/app",
                None,
                None,
            ),
            ("quay.io/org/sub/app", "quay.io", "org/sub/app", None, None),
            ("Foo/bar", "Foo", "bar", None, None),
            ("10.0.0.1:5000/app", "10.0.0.1:5000", "app", None, None),
            ("[::1]:5000/app", "[::1]:5000", "app", None, None),
            ("[fe80::1]/app", "[fe80::1]", "app", None, None),
            (
                "a/b-c__d.e_f---g",
                "docker.io",
                "a/b-c__d.e_f---g",
                None,
                None,
            ),
        ];
        for (s, registry, repository, tag, digest) in cases {
            let i = image(s);
            assert_eq!(i.original, s);
            assert_eq!(i.registry, registry, "{s}");
            assert_eq!(i.repository, repository, "{s}");
            assert_eq!(i.tag.as_deref(), tag, "{s}");
            assert_eq!(i.digest.as_deref(), digest, "{s}");
        }
    }

    #[test]
    fn image_tags_and_digests() {
        let sha = "sha256:7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa";
        let i = image("nginx:1.25");
        assert_eq!(i.normalized(), "docker.io/library/nginx:1.25");
        assert_eq!(i.matching_path(), "docker.io/library/nginx");
        assert_eq!(
            image("nginx").normalized(),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(i.to_string(), "docker.io/library/nginx:1.25");

        let i = image(&format!("nginx@{sha}"));
        assert_eq!(i.tag, None);
        assert_eq!(i.digest.as_deref(), Some(sha));
        assert_eq!(i.normalized(), format!("docker.io/library/nginx@{sha}"));

        let i = image(&format!("registry:5000/busybox:latest@{sha}"));
        assert_eq!(i.registry, "registry:5000");
        assert_eq!(i.tag.as_deref(), Some("latest"));
        assert_eq!(i.digest.as_deref(), Some(sha));
        assert_eq!(
            i.normalized(),
            format!("registry:5000/busybox:latest@{sha}")
        );
        assert_eq!(i.matching_path(), "registry:5000/busybox");

        let sha512 = format!("sha512:{}", "ab".repeat(64));
        assert_eq!(image(&format!("a@{sha512}")).digest, Some(sha512));
        assert_eq!(image("a:_x.Y-1").tag.as_deref(), Some("_x.Y-1"));
        assert!(image(&format!("a:{}", "t".repeat(128))).tag.is_some());
    }

    #[test]
    fn invalid_images() {
        let sha = "7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa";
        assert_eq!(image_err(""), ImageRefError::Empty);
        assert!(matches!(
            image_err("ngi nx"),
            ImageRefError::Whitespace { .. }
        ));
        assert!(matches!(
            image_err(" nginx"),
            ImageRefError::Whitespace { .. }
        ));
        assert!(matches!(
            image_err("nginx\n"),
            ImageRefError::Whitespace { .. }
        ));
        assert!(matches!(image_err(sha), ImageRefError::ImageId { .. }));
        assert!(matches!(
            image_err("Nginx"),
            ImageRefError::UppercaseRepository { .. }
        ));
        assert!(matches!(
            image_err("quay.io/Org/app"),
            ImageRefError::UppercaseRepository { .. }
        ));
        for s in [
            "a//b", "a/", "-a", "a-", "a..b", "a___b", "quay.io/", "a$b", "a/.b", "[zz]/app",
        ] {
            assert!(
                matches!(image_err(s), ImageRefError::InvalidRepository { .. }),
                "{s}"
            );
        }
        for s in [
            "my_host.com/app",
            "host:port/app",
            "-a.io/app",
            "[::1/app",
            "[zz]:5000/app",
            "a.io:/x",
        ] {
            assert!(
                matches!(image_err(s), ImageRefError::InvalidRegistry { .. }),
                "{s}"
            );
        }
        for s in ["nginx:", "nginx:.x", "nginx:-x", "nginx:a+b"] {
            assert!(
                matches!(image_err(s), ImageRefError::InvalidTag { .. }),
                "{s}"
            );
        }
        assert!(matches!(
            image_err(&format!("nginx:{}", "t".repeat(129))),
            ImageRefError::InvalidTag { .. }
        ));
        for s in [
            "nginx@".to_owned(),
            "nginx@sha256".to_owned(),
            "nginx@sha256:abc".to_owned(),
            format!("nginx@sha256:{}", sha.to_ascii_uppercase()),
            format!("nginx@sha256:{sha}00"),
            format!("nginx@md5:{sha}"),
            format!("nginx@1sha:{sha}"),
            format!("nginx@sha256:{}", &sha[..63]),
        ] {
            assert!(
                matches!(image_err(&s), ImageRefError::InvalidDigest { .. }),
                "{s}"
            );
        }
        let long = format!("a/{}", "b".repeat(300));
        assert!(matches!(
            image_err(&long),
            ImageRefError::RepositoryTooLong { .. }
        ));
    }

    #[test]
    fn image_error_messages() {
        assert_eq!(
            image_err("Nginx:1").to_string(),
            "image reference \"Nginx:1\" is invalid: the repository name \"library/Nginx\" must be lower case"
        );
        assert_eq!(
            image_err("nginx@sha256:abc").to_string(),
            "image reference \"nginx@sha256:abc\" has an invalid digest \"sha256:abc\": expected algorithm:hex, such as sha256: followed by 64 lower-case hexadecimal digits"
        );
        assert_eq!(
            image_err("ngi nx").to_string(),
            "image reference \"ngi nx\" contains whitespace or control characters"
        );
        let msg = image_err(&format!("{}$", "a".repeat(1000))).to_string();
        assert!(msg.len() < 1000, "{}", msg.len());
    }

    // --- Glob engine ------------------------------------------------------------

    #[test]
    fn path_match_semantics() {
        let m = |p: &str, n: &str| parse_glob(p).is_some_and(|t| glob_matches(&t, n));
        assert!(m("*", ""));
        assert!(m("*", "abc"));
        assert!(m("a*c", "abbbc"));
        assert!(m("a*c*", "acbc"));
        assert!(!m("a*c", "abd"));
        assert!(m("?", "x"));
        assert!(!m("?", ""));
        assert!(m("[abc]", "b"));
        assert!(m("[^abc]", "d"));
        assert!(!m("[^abc]", "a"));
        assert!(m("[a-c]x", "bx"));
        assert!(m("[\\-]", "-"));
        assert!(m("\\*", "*"));
        assert!(!m("\\*", "a"));
        assert!(!m("*", "a/b"));
        assert!(parse_glob("[").is_none());
        assert!(parse_glob("[]").is_none());
        assert!(parse_glob("[a-]").is_none());
        assert!(parse_glob("[-a]").is_none());
        assert!(parse_glob("\\").is_none());
        assert!(parse_glob("a]").is_some());
    }

    #[test]
    fn split_host_port_like_go() {
        assert_eq!(split_host_port("a.io:5000"), ("a.io", "5000"));
        assert_eq!(split_host_port("a.io"), ("a.io", ""));
        assert_eq!(split_host_port("a.io:"), ("a.io", ""));
        assert_eq!(split_host_port("[::1]:5000"), ("::1", "5000"));
        assert_eq!(split_host_port("[::1]"), ("[::1]", ""));
        assert_eq!(split_host_port("::1"), ("::1", ""));
        assert_eq!(split_host_port(""), ("", ""));
    }

    // --- Pull failure classification -------------------------------------------

    #[test]
    fn classifies_real_messages() {
        use PullFailure::*;
        let cases = [
            // containerd, Docker Hub, private or missing repository
            (
                "Failed to pull image \"docker.io/acme/private:1\": failed to pull and unpack image \"docker.io/acme/private:1\": failed to resolve reference \"docker.io/acme/private:1\": pull access denied, repository does not exist or may require authorization: server message: insufficient_scope: authorization failed",
                AuthRefused,
            ),
            // dockershim
            (
                "Failed to pull image \"rmeuser-auth:latest\": rpc error: code = Unknown desc = Error response from daemon: pull access denied for rmeuser-auth, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
                AuthRefused,
            ),
            (
                "failed to resolve reference \"proxy.replicated.com/proxy/gitpod/busybox:1\": failed to authorize: failed to fetch oauth token: unexpected status: 401 Unauthorized",
                AuthRefused,
            ),
            (
                "failed to resolve reference \"registry.app.example.net/team/app:v1\": pulling from host registry.app.example.net failed with status code [manifests v1]: 401 Unauthorized",
                AuthRefused,
            ),
            (
                "rpc error: code = Unknown desc = Error response from daemon: Get https://123456789012.dkr.ecr.eu-west-1.amazonaws.com/v2/app/manifests/latest: no basic auth credentials",
                AuthRefused,
            ),
            (
                "failed to resolve reference \"123456789012.dkr.ecr.ap-southeast-2.amazonaws.com/k8s/pause@sha256:7031c1b283388d2c2e09b57badb803c05ebed362dc88d84b480cc47f72a21097\": pull access denied, repository does not exist or may require authorization: authorization failed: no basic auth credentials",
                AuthRefused,
            ),
            (
                "failed to resolve reference \"ghcr.io/acme/app:latest\": unexpected status from HEAD request to https://ghcr.io/v2/acme/app/manifests/latest: 403 Forbidden",
                AuthRefused,
            ),
            // CRI-O
            (
                "rpc error: code = Unknown desc = Error reading manifest sha256:ba919b34aa7c7c7135f4474791defb6240ff1af2491b876c25ba960af81c5267 in quay.io/acme/bundle: unauthorized: access to the requested resource is not authorized",
                AuthRefused,
            ),
            (
                "initializing source docker://quay.io/acme/app:latest: reading manifest latest in quay.io/acme/app: unauthorized: access to the requested resource is not authorized",
                AuthRefused,
            ),
            (
                "failed to authorize: failed to fetch oauth token: unexpected status from GET request to https://auth.docker.io/token?scope=repository%3Afsfe%2Freuse%3Apull&service=registry.docker.io: 401 Unauthorized: incorrect username or password",
                AuthRefused,
            ),
            // not found
            (
                "rpc error: code = NotFound desc = failed to pull and unpack image \"docker.io/salesforce/salesforcedx:latest\": failed to resolve reference \"docker.io/salesforce/salesforcedx:latest\": docker.io/salesforce/salesforcedx:latest: not found",
                NotFound,
            ),
            (
                "rpc error: code = Unknown desc = Error reading manifest latest in registry.example.com/image: manifest unknown: manifest unknown",
                NotFound,
            ),
            (
                "failed to pull and unpack image \"docker.io/library/nginx:1.25\": no match for platform in manifest: not found",
                NotFound,
            ),
            // DNS
            (
                "rpc error: code = Unknown desc = Error response from daemon: Get https://registry-1.docker.io/v2/: dial tcp: lookup registry-1.docker.io on 127.0.0.53:53: server misbehaving",
                Dns,
            ),
            (
                "failed to do request: Head \"https://ghcr.io/v2/siderolabs/kubelet/manifests/v1.30.0\": dial tcp: lookup ghcr.io on 8.8.8.8:53: read udp 10.128.152.4:41986->8.8.8.8:53: i/o timeout",
                Dns,
            ),
            (
                "failed to do request: Head \"https://registry.internal/v2/app/manifests/1\": dial tcp: lookup registry.internal on 10.96.0.10:53: no such host",
                Dns,
            ),
            (
                "v2 ping attempt failed with error: Get https://gcr.io/v2/: dial tcp: lookup gcr.io: Temporary failure in name resolution",
                Dns,
            ),
            // TLS
            (
                "failed to resolve reference \"registry.k8s.io/coredns/coredns:v1.11.1\": failed to do request: Head \"https://registry.k8s.io/v2/coredns/coredns/manifests/v1.11.1\": tls: failed to verify certificate: x509: certificate signed by unknown authority",
                Tls,
            ),
            (
                "failed to do request: Head https://registry.example.com/v2/core/portal/manifests/1: x509: certificate signed by unknown authority",
                Tls,
            ),
            (
                "failed to do request: Head \"https://registry:5000/v2/hello-app/manifests/1.0\": http: server gave HTTP response to HTTPS client",
                Tls,
            ),
            (
                "pinging container registry registry.example.com: Get \"https://registry.example.com/v2/\": tls: failed to verify certificate: x509: certificate is valid for ingress.local, not registry.example.com",
                Tls,
            ),
            // unreachable
            (
                "Error response from daemon: Get https://registry-1.docker.io/v2/: dial tcp 52.44.30.97:443: getsockopt: connection refused",
                Unreachable,
            ),
            (
                "failed to do request: Head \"https://registry.example.com/v2/app/manifests/1\": dial tcp 10.0.0.5:443: connect: connection refused",
                Unreachable,
            ),
            (
                "failed to do request: Head \"https://10.0.0.9:5000/v2/app/manifests/1\": dial tcp 10.0.0.9:5000: connect: no route to host",
                Unreachable,
            ),
            (
                "failed to resolve reference \"docker.io/acme/app:latest\": failed to authorize: failed to fetch anonymous token: Get \"https://auth.docker.io/token?scope=repository%3Aacme%2Fapp%3Apull&service=registry.docker.io\": EOF",
                Unreachable,
            ),
            // timeouts
            (
                "Failed to pull image \"nginx\": rpc error: code = 4 desc = context deadline exceeded",
                Timeout,
            ),
            (
                "rpc error: code = DeadlineExceeded desc = context deadline exceeded",
                Timeout,
            ),
            (
                "failed to do request: Head \"https://registry.k8s.io/v2/kube-proxy/manifests/v1.28.2\": dial tcp 34.96.108.209:443: connect: connection timed out",
                Timeout,
            ),
            (
                "Error response from daemon: Get https://gcr.io/v2/: net/http: request canceled while waiting for connection (Client.Timeout exceeded while awaiting headers)",
                Timeout,
            ),
            (
                "failed to do request: Head \"https://quay.io/v2/a/b/manifests/1\": dial tcp 3.4.5.6:443: i/o timeout",
                Timeout,
            ),
            (
                "Get \"https://registry.example.com/v2/\": net/http: TLS handshake timeout",
                Timeout,
            ),
            // rate limits
            (
                "failed to copy: httpReadSeeker: failed open: unexpected status code https://registry-1.docker.io/v2/library/rust/manifests/sha256:de6e081a4e9c10e70731071cec6f629892da1bbaa24b478a96bdc59060674117: 429 Too Many Requests - Server message: toomanyrequests: You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit",
                RateLimited,
            ),
            (
                "reading manifest 1.13 in docker.io/library/nginx: toomanyrequests: You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit",
                RateLimited,
            ),
            (
                "failed to resolve reference \"docker.io/library/nginx:latest\": unexpected status from HEAD request to https://registry-1.docker.io/v2/library/nginx/manifests/latest: 429 Too Many Requests",
                RateLimited,
            ),
            // nothing to go on
            ("Back-off pulling image \"nginx:1.25\"", Other),
            ("Error: ErrImagePull", Other),
            ("Error: ImagePullBackOff", Other),
            (
                "failed to extract layer sha256:401abc: mkdir /var/lib/containerd/tmp: permission denied",
                Other,
            ),
            (
                "failed to pull and unpack image \"quay.io/a/b:1\": failed to prepare extraction snapshot: permission denied: unknown",
                Other,
            ),
            (
                "reading manifest 1.0 in docker.io/acme/app: denied: requested access to the resource is denied",
                AuthRefused,
            ),
        ];
        for (msg, expected) in cases {
            assert_eq!(classify_pull_message(msg), expected, "{msg}");
        }
    }

    /// What a kubelet v1.36 with containerd v2.4 really reports (Events and container statuses,
    /// recorded on the node of the local cluster against Debian's docker-registry 2.8).
    #[test]
    fn classifies_real_containerd_2_messages() {
        use PullFailure::*;
        let cases = [
            // no credentials (an unselected namespace, a missing pull secret): the Failed Event,
            // the ErrImagePull status and the ImagePullBackOff status
            (
                r#"Failed to pull image "127.0.0.1:35583/node-tests/unselected-10371-36:1": failed to pull and unpack image "127.0.0.1:35583/node-tests/unselected-10371-36:1": failed to resolve image: pull access denied, repository does not exist or may require authorization: authorization failed: no basic auth credentials"#,
                AuthRefused,
            ),
            (
                r#"failed to pull and unpack image "127.0.0.1:35583/node-tests/unselected-10371-36:1": failed to resolve image: pull access denied, repository does not exist or may require authorization: authorization failed: no basic auth credentials"#,
                AuthRefused,
            ),
            (
                r#"Back-off pulling image "127.0.0.1:35583/node-tests/missing-10371-3:1": ErrImagePull: failed to pull and unpack image "127.0.0.1:35583/node-tests/missing-10371-3:1": failed to resolve image: pull access denied, repository does not exist or may require authorization: authorization failed: no basic auth credentials"#,
                AuthRefused,
            ),
            // a wrong password
            (
                r#"Failed to pull image "127.0.0.1:44977/node-tests/wrong-1:1": failed to pull and unpack image "127.0.0.1:44977/node-tests/wrong-1:1": failed to resolve image: unexpected status from HEAD request to https://127.0.0.1:44977/v2/node-tests/wrong-1/manifests/1: 401 Unauthorized"#,
                AuthRefused,
            ),
            // valid credentials, no such tag or repository
            (
                r#"rpc error: code = NotFound desc = failed to pull and unpack image "127.0.0.1:48425/regcred/sleeper:nope": failed to resolve image: 127.0.0.1:48425/regcred/sleeper:nope: not found"#,
                NotFound,
            ),
            // nothing listening
            (
                r#"failed to pull and unpack image "127.0.0.1:1/x:1": failed to resolve image: failed to do request: Head "https://127.0.0.1:1/v2/x/manifests/1": dial tcp 127.0.0.1:1: connect: connection refused"#,
                Unreachable,
            ),
        ];
        for (msg, expected) in cases {
            assert_eq!(classify_pull_message(msg), expected, "{msg}");
        }
    }

    #[test]
    fn every_failure_has_a_fix() {
        use PullFailure::*;
        for f in [
            AuthRefused,
            NotFound,
            Unreachable,
            Dns,
            Tls,
            Timeout,
            RateLimited,
            Other,
        ] {
            assert!(!f.fix().is_empty());
            assert!(!f.fix().contains('\n'));
            assert!(!f.to_string().is_empty());
        }
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// An image reference as written, with what it must parse to.
    #[derive(Debug, Clone)]
    struct Written {
        text: String,
        registry: String,
        repository: String,
    }

    fn component() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,5}([._-][a-z0-9]{1,3})?"
    }

    /// A component that is never read as a registry (no '.').
    fn plain_component() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,5}(-[a-z0-9]{1,3})?"
            .prop_filter("localhost is a registry", |c| c != "localhost")
    }

    fn registry() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "[a-z][a-z0-9-]{0,5}[a-z0-9](\\.[a-z0-9]{1,5}){1,3}(:[1-9][0-9]{0,4})?",
            1 => "[A-Z][a-zA-Z0-9]{0,4}(\\.[a-zA-Z]{1,4}){0,2}(:[0-9]{1,5})?",
            1 => "localhost(:[0-9]{1,5})?",
            1 => Just("docker.io".to_owned()),
            1 => Just("index.docker.io".to_owned()),
            1 => "\\[(::1|fe80::[0-9a-f]{1,4}|2001:db8::[0-9a-f]{1,4})\\]:[1-9][0-9]{0,4}",
            1 => "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(:[1-9][0-9]{0,4})?",
        ]
    }

    fn written() -> impl Strategy<Value = Written> {
        (
            prop::option::of(registry()),
            plain_component(),
            prop::collection::vec(component(), 0..3),
            prop::option::of("[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,10}"),
            prop::option::of("[0-9a-f]{64}"),
        )
            .prop_map(|(registry, first, rest, tag, digest)| {
                let mut components = vec![first];
                components.extend(rest);
                let path = components.join("/");
                let mut text = match &registry {
                    Some(r) => format!("{r}/{path}"),
                    None => path.clone(),
                };
                if let Some(tag) = &tag {
                    text.push(':');
                    text.push_str(tag);
                }
                if let Some(digest) = &digest {
                    text.push_str("@sha256:");
                    text.push_str(digest);
                }
                let registry = match registry.as_deref() {
                    None | Some("index.docker.io") => "docker.io".to_owned(),
                    Some(r) => r.to_owned(),
                };
                let repository = if registry == "docker.io" && components.len() == 1 {
                    format!("library/{path}")
                } else {
                    path
                };
                Written {
                    text,
                    registry,
                    repository,
                }
            })
    }

    /// Text made of the characters that matter to image and key parsing.
    fn urlish() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9:/@?#.\\[\\]*%_~^\\\\ é-]{0,40}"
    }

    /// Whether the kubelet can match the image's registry as a key: a
    /// bracketed IPv6 host without a port is read as a glob class.
    fn registry_usable_as_key(image: &ImageRef) -> bool {
        !(image.registry.starts_with('[') && image.registry.ends_with(']'))
    }

    /// Keys built from the image's own registry, all of which must match it.
    fn own_keys(image: &ImageRef, prefix_len: usize) -> Vec<String> {
        let r = &image.registry;
        let repository = &image.repository;
        let mut cut = prefix_len.min(repository.len());
        while !repository.is_char_boundary(cut) {
            cut -= 1;
        }
        // A repository that starts with "v1/" or "v2/" needs the API prefix
        // in front: the kubelet drops a leading /v1/ or /v2/ from a key.
        let api = if repository.starts_with("v1/") || repository.starts_with("v2/") {
            "/v2"
        } else {
            ""
        };
        vec![
            r.clone(),
            format!("https://{r}"),
            format!("http://{r}/"),
            format!("https://{r}/v1/"),
            format!("{r}/v2/"),
            format!("{r}{api}/{repository}"),
            format!("https://{r}/v2/{repository}"),
            format!("{r}/v2/{}", &repository[..cut]),
            format!("https://robot:s3cr3t@{r}/"),
        ]
    }

    fn check_evaluations(keys: &[String], image: &ImageRef) -> Result<(), TestCaseError> {
        let evaluations = evaluate(keys.iter().map(String::as_str), image);
        prop_assert_eq!(evaluations.len(), keys.len());
        let mut positions: Vec<usize> = evaluations.iter().map(|e| e.position).collect();
        positions.sort_unstable();
        prop_assert_eq!(positions, (0..keys.len()).collect::<Vec<_>>());
        for e in &evaluations {
            prop_assert_eq!(&e.key, &redact_key(&keys[e.position]));
        }
        // Matches first, most specific (highest index key) first, ties in
        // input order.
        let matches = evaluations
            .iter()
            .take_while(|e| e.verdict.is_match())
            .count();
        prop_assert!(evaluations[matches..].iter().all(|e| !e.verdict.is_match()));
        for pair in evaluations[..matches].windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            prop_assert!(a.kubelet_key >= b.kubelet_key);
            if a.kubelet_key == b.kubelet_key {
                prop_assert!(a.position < b.position);
            }
        }
        // Keys the kubelet cannot use come last (unreadable ones, and those
        // whose host is not a valid glob).
        let unusable =
            |e: &Evaluation| matches!(e.verdict, Verdict::Miss(MissReason::InvalidKey(_)));
        let usable = evaluations.iter().take_while(|e| !unusable(e)).count();
        prop_assert!(evaluations[usable..].iter().all(unusable));
        prop_assert!(
            evaluations
                .iter()
                .all(|e| e.kubelet_key.is_some() || unusable(e))
        );
        prop_assert_eq!(pulls_anonymously(&evaluations), matches == 0);
        // The Docker Hub fallback applies only when nothing else matched, and
        // otherwise each key's verdict is its verdict alone.
        let direct = evaluations
            .iter()
            .filter(|e| e.verdict.is_match() && !e.via_docker_hub_fallback)
            .count();
        for e in &evaluations {
            let alone = match_key(&keys[e.position], image);
            let fallback = e.kubelet_key.as_deref() == Some(DOCKER_HUB_FALLBACK_KEY);
            if e.via_docker_hub_fallback {
                prop_assert!(fallback && image.is_docker_hub() && direct == 0);
                prop_assert_eq!(&e.verdict, &Verdict::Match);
            }
            if fallback && image.is_docker_hub() {
                prop_assert!(alone.is_match());
                if direct > 0 {
                    prop_assert_eq!(
                        &e.verdict,
                        &Verdict::Miss(MissReason::DockerHubFallbackUnused { matched: direct })
                    );
                } else {
                    prop_assert!(e.via_docker_hub_fallback);
                }
            } else {
                prop_assert_eq!(&e.verdict, &alone, "{:?}", keys[e.position]);
            }
            if e.verdict.is_match() {
                prop_assert!(!is_near_miss(e));
            }
            let _ = e.verdict.to_string();
        }
        // The order of the input only decides ties.
        let reversed: Vec<&str> = keys.iter().rev().map(String::as_str).collect();
        let again = evaluate(reversed, image);
        let tried = |es: &[Evaluation]| {
            es.iter()
                .filter(|e| e.verdict.is_match())
                .map(|e| e.kubelet_key.clone())
                .collect::<Vec<_>>()
        };
        prop_assert_eq!(tried(&again), tried(&evaluations));
        let mut a: Vec<(String, Verdict)> = evaluations
            .iter()
            .map(|e| (e.key.clone(), e.verdict.clone()))
            .collect();
        let mut b: Vec<(String, Verdict)> = again
            .iter()
            .map(|e| (e.key.clone(), e.verdict.clone()))
            .collect();
        a.sort_by(|x, y| {
            x.0.cmp(&y.0)
                .then_with(|| format!("{:?}", x.1).cmp(&format!("{:?}", y.1)))
        });
        b.sort_by(|x, y| {
            x.0.cmp(&y.0)
                .then_with(|| format!("{:?}", x.1).cmp(&format!("{:?}", y.1)))
        });
        prop_assert_eq!(a, b);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn prop_image_parse_never_panics(s in any::<String>(), t in urlish()) {
            for input in [&s, &t] {
                match ImageRef::parse(input) {
                    Ok(image) => {
                        let again = ImageRef::parse(&image.normalized()).unwrap();
                        prop_assert_eq!(again.normalized(), image.normalized());
                    }
                    Err(e) => prop_assert!(e.to_string().chars().count() < 1200),
                }
            }
        }

        #[test]
        fn prop_written_images_parse(w in written()) {
            let image = ImageRef::parse(&w.text)
                .unwrap_or_else(|e| panic!("{:?} should parse: {e}", w.text));
            prop_assert_eq!(&image.registry, &w.registry);
            prop_assert_eq!(&image.repository, &w.repository);
            prop_assert_eq!(image.is_docker_hub(), w.registry == "docker.io");
            prop_assert_eq!(image.to_string(), image.normalized());
            // Normalising is idempotent.
            let again = ImageRef::parse(&image.normalized()).unwrap();
            prop_assert_eq!(&again.registry, &image.registry);
            prop_assert_eq!(&again.repository, &image.repository);
            prop_assert_eq!(again.normalized(), image.normalized());
        }

        /// A key naming the image's own registry (with or without scheme, API
        /// prefix, user information or a prefix of the repository path)
        /// matches it.
        #[test]
        fn prop_own_registry_keys_match(w in written(), prefix_len in 0usize..40) {
            let image = ImageRef::parse(&w.text).unwrap();
            prop_assume!(registry_usable_as_key(&image));
            for key in own_keys(&image, prefix_len) {
                prop_assert_eq!(match_key(&key, &image), Verdict::Match, "{:?} for {}", key, image);
            }
            if image.is_docker_hub() {
                for key in ["https://index.docker.io/v1/", "index.docker.io", "docker.io"] {
                    prop_assert_eq!(match_key(key, &image), Verdict::Match, "{:?}", key);
                }
            }
        }

        /// Ports are compared as written: another port, or a port on one side
        /// only, never matches.
        #[test]
        fn prop_ports_must_be_equal(w in written(), port in 1u32..99999) {
            let image = ImageRef::parse(&w.text).unwrap();
            prop_assume!(registry_usable_as_key(&image));
            let (host, image_port) = split_host_port(&image.registry);
            let host = if image.registry.starts_with('[') { format!("[{host}]") } else { host.to_owned() };
            let port = port.to_string();
            prop_assume!(port != image_port);
            for key in [format!("{host}:{port}"), format!("{host}:{port}/{}", image.repository)] {
                let expected = MissReason::Port {
                    key: Some(port.clone()),
                    image: (!image_port.is_empty()).then(|| image_port.to_owned()),
                };
                prop_assert_eq!(match_key(&key, &image), Verdict::Miss(expected), "{:?}", key);
            }
            if !image_port.is_empty() && !image.registry.starts_with('[') {
                prop_assert!(!match_key(&host, &image).is_match());
            }
        }

        /// A `*` label matches any one label, and only one.
        #[test]
        fn prop_wildcard_labels(w in written(), which in any::<prop::sample::Index>()) {
            let image = ImageRef::parse(&w.text).unwrap();
            prop_assume!(!image.registry.starts_with('['));
            let (host, port) = split_host_port(&image.registry);
            let port = if port.is_empty() { String::new() } else { format!(":{port}") };
            let mut labels: Vec<&str> = host.split('.').collect();
            let i = which.index(labels.len());
            labels[i] = "*";
            let key = format!("{}{port}", labels.join("."));
            prop_assert_eq!(match_key(&key, &image), Verdict::Match, "{:?}", key);
            // One label more never matches.
            let longer = format!("*.{host}{port}");
            prop_assert!(!match_key(&longer, &image).is_match(), "{:?}", longer);
            // Host names are compared case-sensitively.
            let upper = format!("{}{port}", host.to_ascii_uppercase());
            prop_assert_eq!(
                match_key(&upper, &image).is_match(),
                host.to_ascii_uppercase() == host,
                "{:?}", upper
            );
        }

        #[test]
        fn prop_evaluation_order(
            w in written(),
            prefix_len in 0usize..40,
            picks in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            others in prop::collection::vec(
                prop_oneof![
                    urlish(),
                    "(https?://)?[a-z*]{1,4}(\\.[a-z*]{1,4}){0,2}(:[0-9]{1,4})?(/[a-z]{1,3}){0,2}/?",
                    Just("https://index.docker.io/v1/".to_owned()),
                    Just("index.docker.io".to_owned()),
                    Just("docker.io".to_owned()),
                    Just("registry-1.docker.io".to_owned()),
                ],
                0..6,
            ),
        ) {
            let image = ImageRef::parse(&w.text).unwrap();
            let own = own_keys(&image, prefix_len);
            let mut keys: Vec<String> = picks.iter().map(|i| own[i.index(own.len())].clone()).collect();
            keys.extend(others);
            check_evaluations(&keys, &image)?;
        }

        /// A password in a key's user information never shows in what the
        /// evaluation prints.
        #[test]
        fn prop_userinfo_never_shown(
            w in written(),
            user in "[a-z]{1,5}",
            // "Zq" is in no message, so only the key can show it.
            secret in "[a-zA-Z0-9/?#%:._~!$&*+=-]{0,6}Zq[a-zA-Z0-9/?#%:._~!$&*+=-]{0,6}",
            rest in "(/[a-z]{1,3}){0,2}/?",
        ) {
            let image = ImageRef::parse(&w.text).unwrap();
            let key = format!("https://{user}:{secret}@{}{rest}", image.registry);
            prop_assume!(!format!("https://{}{rest}", image.registry).contains(&secret));
            let evaluations = evaluate([key.as_str()], &image);
            let e = &evaluations[0];
            let shown = format!("{e:?} {} {}", e.verdict, serde_json::to_string(e).unwrap());
            prop_assert!(!shown.contains(&secret), "{:?}: {}", key, shown);
        }

        /// A user name and password read as a URL (with or without a scheme; the password cut
        /// by a '?', '#' or '/', so that the kubelet reads `user:digits` as host and port) never
        /// show: not the user name as a host, not the digits as a port.
        #[test]
        fn prop_userinfo_read_as_url_never_shows_fragments(
            w in written(),
            scheme in prop_oneof![Just(""), Just("https://"), Just("http://")],
            // "Zq" is in no message nor registry, so only the key can show it.
            user in "Zq[a-z]{0,4}",
            // Three digits or more: no message has such a number.
            digits in "[1-9][0-9]{2,4}",
            cut in prop_oneof![Just('?'), Just('#'), Just('/')],
            rest in "[a-zA-Z0-9?#/:._~!$&*+=-]{0,6}",
            path in "(/[a-z]{1,3}){0,2}/?",
        ) {
            // The image itself may hold the marker (a registry such as `0.0.0.544`): only
            // the key's own user information is the secret to look for.
            prop_assume!(!w.text.contains("Zq") && !w.text.contains(&digits));
            let image = ImageRef::parse(&w.text).unwrap();
            let key = format!("{scheme}{user}:{digits}{cut}{rest}@{}{path}", image.registry);
            let evaluations = evaluate([key.as_str()], &image);
            let e = &evaluations[0];
            let shown = format!(
                "{e:?} {} {} {:?}",
                e.verdict,
                serde_json::to_string(e).unwrap(),
                unmatchable_key(&key)
            );
            prop_assert!(!shown.contains("Zq"), "{:?}: {}", key, shown);
            prop_assert!(!shown.contains(&digits), "{:?}: {}", key, shown);
            prop_assert!(!e.verdict.is_match(), "{:?}", key);
        }

        /// Keys as the kubelet writes them are never reported; the odd forms always are.
        #[test]
        fn prop_unmatchable_keys(w in written(), upper in any::<prop::sample::Index>()) {
            let image = ImageRef::parse(&w.text).unwrap();
            // An upper-case registry matches a key written the same way, but images name
            // registries in lower case: the rule reports every upper-case host.
            prop_assume!(registry_usable_as_key(&image) && !image.registry.starts_with('['));
            prop_assume!(image.registry == image.registry.to_ascii_lowercase());
            let registry = &image.registry;
            let (host, port) = split_host_port(registry);
            // A key with :443 is reported whatever the image: images that name the port
            // are too rare to be worth a key that misses all the others.
            prop_assume!(port != "443");
            // `r.io/v1` is reported as the mistaken `r.io/v1/` even when a repository
            // happens to be called `v1`, and `r.io/v1/` is then the right key.
            prop_assume!(image.repository != "v1" && image.repository != "v2");
            for key in [
                registry.clone(),
                format!("https://{registry}"),
                format!("https://{registry}/v1/"),
                format!("{registry}/v2/"),
                format!("{registry}/"),
                format!("{registry}/{}", image.repository),
            ] {
                prop_assert_eq!(unmatchable_key(&key), None, "{:?}", key);
            }
            let mut chars: Vec<char> = host.chars().collect();
            let letters: Vec<usize> = (0..chars.len()).filter(|&i| chars[i].is_ascii_lowercase()).collect();
            if !letters.is_empty() {
                let i = letters[upper.index(letters.len())];
                chars[i] = chars[i].to_ascii_uppercase();
                let shouting: String = chars.into_iter().collect();
                let key = if port.is_empty() { shouting } else { format!("{shouting}:{port}") };
                prop_assert!(unmatchable_key(&key).is_some(), "{:?}", key);
            }
            for key in [
                format!("{registry}/v1"),
                format!("https://{registry}/v2"),
                format!("{registry}/{}/", image.repository),
                format!("{registry}//{}", image.repository),
            ] {
                prop_assert!(unmatchable_key(&key).is_some(), "{:?}", key);
            }
            if port.is_empty() {
                let key = format!("{host}:443");
                prop_assert!(unmatchable_key(&key).is_some(), "{:?}", key);
            }
        }
    }

    #[test]
    fn a_password_cut_by_a_question_mark_is_not_shown_as_a_port() {
        let image = ImageRef::parse("r.io/app").unwrap();
        let e = &evaluate(["u:123?x@r.io"], &image)[0];
        let shown = format!("{e:?} {}", e.verdict);
        assert!(!shown.contains("123") && e.kubelet_key.is_none(), "{shown}");
        assert!(unmatchable_key("u:123?x@r.io").is_some());
    }

    #[test]
    fn unmatchable_key_messages() {
        assert_eq!(unmatchable_key("r.io"), None);
        assert_eq!(unmatchable_key("https://index.docker.io/v1/"), None);
        assert_eq!(unmatchable_key("r.io/team"), None);
        assert!(
            unmatchable_key("Registry.example.com")
                .unwrap()
                .ends_with("images on registry.example.com")
        );
        assert!(
            unmatchable_key("r.io/v1")
                .unwrap()
                .ends_with("write r.io or r.io/v1/")
        );
        assert!(
            unmatchable_key("r.io/team/app/")
                .unwrap()
                .contains("never the image r.io/team/app itself")
        );
        assert!(unmatchable_key("r.io:443").unwrap().contains(":443"));
        assert!(unmatchable_key("r.io//app").is_some());
    }
}
