//! The kubelet's own test vectors (`keyring_test.go`, `reference` tests), ported, and
//! properties of the rules.

use super::{glob::*, image::*, keys::*, matching::*, registry_key::redact_key};

mod globs;
mod images;
mod keyring;
mod proptests;

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
