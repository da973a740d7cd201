//! The kubelet's matching of pull-secret keys against an image, as `doctor`
//! evaluates it.
//!
//! The input is text: the first line is the image (a fixed image is used when
//! it does not parse), every further line a registry key. A line `\x02` plus
//! text is a key built from the image's own registry (which must match); a
//! line with two `\x01` bytes is a key with a password between them, which
//! must never show when it ends the user information (`\x01@` follows it).
//!
//! Invariants: one evaluation per key; matches first, in reverse order of the
//! index keys, ties in input order; unreadable keys last; each verdict is the
//! key's verdict alone except for the Docker Hub fallback, which applies only
//! when nothing else matched; the order of the keys decides only ties.

#![no_main]

use libfuzzer_sys::fuzz_target;
use regcred_operator::kubelet::{
    Evaluation, ImageRef, MissReason, Verdict, evaluate, is_near_miss, match_key, pulls_anonymously,
};

const IMAGES: [&str; 8] = [
    "nginx",
    "user/app:1.0",
    "quay.io/org/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "registry.example.com:5000/team/app",
    "localhost:5000/a/b",
    "[::1]:5000/app",
    "Reg.Example.COM/x",
    "10.0.0.1/a_b/c-d",
];

const FALLBACK_KEY: &str = "index.docker.io";

enum Line<'a> {
    Plain(String),
    Own(String),
    Secret {
        key: String,
        secret: &'a str,
        visible: String,
    },
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or_default();
    let image = ImageRef::parse(first)
        .unwrap_or_else(|_| ImageRef::parse(IMAGES[first.len() % IMAGES.len()]).unwrap());
    let lines: Vec<Line> = lines.take(16).map(|l| read_line(l, &image)).collect();
    let keys: Vec<&str> = lines
        .iter()
        .map(|l| match l {
            Line::Plain(k) | Line::Own(k) | Line::Secret { key: k, .. } => k.as_str(),
        })
        .collect();

    let evaluations = evaluate(keys.iter().copied(), &image);
    check_order(&keys, &image, &evaluations);

    for e in &evaluations {
        match &lines[e.position] {
            Line::Own(key) => {
                assert!(
                    e.verdict.is_match(),
                    "{key:?} does not match {image:?}: {}",
                    e.verdict
                )
            }
            Line::Secret {
                key,
                secret,
                visible,
            } => {
                if secret.chars().count() < 4
                    || visible.contains(secret)
                    || image.original.contains(secret)
                    || image.normalized().contains(secret)
                    || secret.contains(['<', '>', '…'])
                    || "<redacted>".contains(secret)
                {
                    continue;
                }
                let _ = serde_json::to_string(e).unwrap();
                for s in shown(e) {
                    assert!(
                        !s.contains(secret),
                        "password {secret:?} of {key:?} shown: {e:?}"
                    );
                }
            }
            Line::Plain(_) => {}
        }
    }
});

fn read_line<'a>(line: &'a str, image: &ImageRef) -> Line<'a> {
    if let Some(spec) = line.strip_prefix('\u{2}') {
        return match own_key(spec, image) {
            Some(key) => Line::Own(key),
            None => Line::Plain(spec.to_owned()),
        };
    }
    let parts: Vec<&str> = line.split('\u{1}').collect();
    match parts.as_slice() {
        [prefix, secret, rest] if rest.starts_with('@') && !in_scheme(prefix, secret, rest) => {
            Line::Secret {
                key: format!("{prefix}{secret}{rest}"),
                secret,
                visible: format!("{prefix}{rest}"),
            }
        }
        _ => Line::Plain(line.replace('\u{1}', "")),
    }
}

/// A key that names the image's registry, chosen by `spec`; `None` for a
/// bracketed IPv6 registry without a port, which the kubelet reads as a glob
/// class and never matches, and for a bracketed host that is not an IPv6
/// address, which Go's URL parser rejects.
fn own_key(spec: &str, image: &ImageRef) -> Option<String> {
    let r = &image.registry;
    let usable = match r.strip_prefix('[') {
        None => true,
        Some(rest) => rest
            .split_once("]:")
            .is_some_and(|(address, _)| address.parse::<std::net::Ipv6Addr>().is_ok()),
    };
    if !usable {
        return None;
    }
    let repository = &image.repository;
    let n = spec.len();
    let mut cut = n.min(repository.len());
    while !repository.is_char_boundary(cut) {
        cut -= 1;
    }
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) if !r.ends_with(']') => (h.to_owned(), format!(":{p}")),
        _ => (r.clone(), String::new()),
    };
    Some(match spec.bytes().next().unwrap_or(0) % 6 {
        0 => r.clone(),
        1 => format!("https://{r}/v2/"),
        // A leading /v1/ or /v2/ of a key's path is an API version to the
        // kubelet, so the repository goes after one.
        2 => format!("{r}/v2/{}", &repository[..cut]),
        3 => format!("https://robot:pw@{r}/v1/{}", &repository[..cut]),
        4 => {
            // One label replaced by '*'.
            let mut labels: Vec<&str> = host.split('.').collect();
            let i = n % labels.len();
            labels[i] = "*";
            format!("{}{port}", labels.join("."))
        }
        _ => format!("https://{r}"),
    })
}

fn check_order(keys: &[&str], image: &ImageRef, evaluations: &[Evaluation]) {
    assert_eq!(evaluations.len(), keys.len());
    let mut positions: Vec<usize> = evaluations.iter().map(|e| e.position).collect();
    positions.sort_unstable();
    assert_eq!(positions, (0..keys.len()).collect::<Vec<_>>());

    let matches = evaluations
        .iter()
        .take_while(|e| e.verdict.is_match())
        .count();
    assert!(evaluations[matches..].iter().all(|e| !e.verdict.is_match()));
    for pair in evaluations[..matches].windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(a.kubelet_key >= b.kubelet_key, "{a:?} before {b:?}");
        if a.kubelet_key == b.kubelet_key {
            assert!(a.position < b.position);
        }
    }
    // Keys the kubelet cannot use come last.
    let unusable = |e: &Evaluation| matches!(e.verdict, Verdict::Miss(MissReason::InvalidKey(_)));
    let usable = evaluations.iter().take_while(|e| !unusable(e)).count();
    assert!(evaluations[usable..].iter().all(unusable));
    assert_eq!(pulls_anonymously(evaluations), matches == 0);

    let direct = evaluations
        .iter()
        .filter(|e| e.verdict.is_match() && !e.via_docker_hub_fallback)
        .count();
    for e in evaluations {
        let alone = match_key(keys[e.position], image);
        let fallback = e.kubelet_key.as_deref() == Some(FALLBACK_KEY) && image.is_docker_hub();
        if fallback {
            assert!(alone.is_match());
            if direct > 0 {
                assert_eq!(
                    e.verdict,
                    Verdict::Miss(MissReason::DockerHubFallbackUnused { matched: direct })
                );
            } else {
                assert!(e.via_docker_hub_fallback);
            }
        } else {
            assert!(!e.via_docker_hub_fallback);
            assert_eq!(e.verdict, alone, "{:?}", keys[e.position]);
        }
        if e.verdict.is_match() {
            assert!(!is_near_miss(e));
        }
        if e.kubelet_key.is_none() {
            assert!(matches!(
                e.verdict,
                Verdict::Miss(MissReason::InvalidKey(_))
            ));
        }
        let _ = e.verdict.to_string();
    }

    // The order of the keys only decides ties.
    let reversed: Vec<&str> = keys.iter().rev().copied().collect();
    let again = evaluate(reversed.iter().copied(), image);
    let tried = |es: &[Evaluation]| {
        es.iter()
            .filter(|e| e.verdict.is_match())
            .map(|e| e.kubelet_key.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(tried(&again), tried(evaluations));
    let summary = |es: &[Evaluation], n: usize, flip: bool| {
        let mut v: Vec<(usize, String)> = es
            .iter()
            .map(|e| {
                let position = if flip { n - 1 - e.position } else { e.position };
                (position, format!("{:?}", e.verdict))
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        summary(&again, keys.len(), true),
        summary(evaluations, keys.len(), false)
    );
}

/// The parts of an evaluation that come from its key or the image; the rest of
/// what it prints (Debug, Display, JSON) is fixed text.
fn shown(e: &Evaluation) -> Vec<String> {
    let mut out = vec![e.key.clone()];
    out.extend(e.kubelet_key.clone());
    let Verdict::Miss(reason) = &e.verdict else {
        return out;
    };
    match reason {
        MissReason::HostLabelCount {
            key_host,
            image_host,
            ..
        } => out.extend([key_host.clone(), image_host.clone()]),
        MissReason::HostLabel {
            key_host,
            image_host,
            key_label,
            image_label,
        } => out.extend([
            key_host.clone(),
            image_host.clone(),
            key_label.clone(),
            image_label.clone(),
        ]),
        MissReason::Port { key, image } => out.extend(key.iter().chain(image).cloned()),
        MissReason::PathPrefix {
            key_path,
            image_path,
        } => out.extend([key_path.clone(), image_path.clone()]),
        MissReason::DockerHubAlias { kubelet_key } => out.push(kubelet_key.clone()),
        MissReason::DockerHubFallbackUnused { .. } => {}
        // Fixed text with quoted parts ("..."), each of which counts.
        MissReason::InvalidKey(reason) => {
            out.extend(reason.split('"').skip(1).step_by(2).map(str::to_owned));
        }
    }
    out
}

/// Whether the password reaches into what reads as the key's scheme
/// (`[A-Za-z0-9+.-]+://` before the last `@`), which is shown.
fn in_scheme(prefix: &str, secret: &str, rest: &str) -> bool {
    let key = format!("{prefix}{secret}{rest}");
    let at = key.rfind('@').unwrap_or(key.len());
    key[..at].find("://").is_some_and(|i| {
        i + 3 > prefix.len()
            && i > 0
            && key[..i]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    })
}
