//! Image references as the kubelet normalises them before it looks up credentials
//! (`distribution/reference`'s `ParseNormalizedNamed`): `nginx` is `docker.io/library/nginx`.

use std::fmt;

use serde::Serialize;

/// The longest input quoted in full in an error message.
pub(super) const MAX_QUOTED_CHARS: usize = 256;

/// The longest repository path (without the registry) a reference may have.
pub(super) const MAX_REPOSITORY_LEN: usize = 255;

/// The registry Docker Hub images are normalised to.
pub(super) const DOCKER_HUB: &str = "docker.io";

/// The legacy Docker Hub name, normalised to [`DOCKER_HUB`] in images.
pub(super) const LEGACY_DOCKER_HUB: &str = "index.docker.io";

/// The index key whose credentials the kubelet uses for Docker Hub images when
/// nothing else matched.
pub(super) const DOCKER_HUB_FALLBACK_KEY: &str = "index.docker.io";

/// Hosts that people use for Docker Hub but that the kubelet does not treat as
/// Docker Hub in a key (lower case).
pub(super) const DOCKER_HUB_ALIASES: [&str; 3] = [
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

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
pub(super) fn split_docker_domain(s: &str) -> (String, String) {
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
pub(super) fn registry_ok(registry: &str) -> bool {
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
pub(super) fn repository_problem(repository: &str) -> Option<String> {
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

pub(super) fn path_component_ok(component: &str) -> bool {
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
pub(super) fn tag_ok(tag: &str) -> bool {
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
pub(super) fn digest_problem(digest: &str) -> Option<&'static str> {
    const FORMAT: &str =
        "expected algorithm:hex, such as sha256: followed by 64 lower-case hexadecimal digits";
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return Some(FORMAT);
    };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.split(['-', '_', '+', '.']).all(|part| {
            part.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
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
pub(super) fn quote(s: &str) -> String {
    if s.chars().count() > MAX_QUOTED_CHARS {
        let mut out: String = s.chars().take(MAX_QUOTED_CHARS).collect();
        out.push('…');
        out
    } else {
        s.to_owned()
    }
}
