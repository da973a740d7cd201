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

use serde::Serialize;

use super::{glob::*, image::*, keys::*};
use crate::kubelet::redact_key;

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

pub(super) fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The kubelet's `URLsMatch` with the reason for a miss.
pub(super) fn compare(key: &KubeletKey, target: &Target) -> Verdict {
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

pub(super) fn evaluate_target<'a>(
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
pub(super) fn evaluate_unsorted<'a>(
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
pub(super) fn names_docker_hub(kubelet_key: &str) -> bool {
    let host_port = kubelet_key.split('/').next().unwrap_or_default();
    let (host, _port) = split_host_port(host_port);
    DOCKER_HUB_ALIASES
        .iter()
        .any(|alias| alias.eq_ignore_ascii_case(host))
}

/// 0: same host; 1: other near miss; 2: other miss; 3: unusable key.
#[allow(
    clippy::match_same_arms,
    reason = "the ranks read as a table, one reason a row"
)]
pub(super) fn miss_rank(e: &Evaluation) -> u8 {
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
