//! The kubelet's matching of pull-secret keys against an image, as `doctor`
//! evaluates it.
//!
//! The oracle is `spec_kubelet`, a model of the kubelet's keyring written from
//! `k8s.io/kubernetes/pkg/credentialprovider/keyring.go` (`Add`, `Lookup`,
//! `URLsMatchStr`, `SplitURL`, `isDefaultRegistryMatch`) and Go's `url.Parse`,
//! `net.SplitHostPort` and `filepath.Match`; the image name is
//! `spec_reference`'s `ParseNormalizedNamed(image).Name()`. Checked, for keys
//! every modelled Go release reads alike:
//!
//! * `evaluate` says a key matches exactly when the kubelet uses its
//!   credentials: the index keys `URLsMatchStr` matches, tried in reverse
//!   lexicographic order (so `quay.io/org` before `quay.io`), and only when
//!   none matches, the `index.docker.io` entry for an image
//!   `isDefaultRegistryMatch` calls Docker Hub; the matches come first in
//!   that order, and `pulls_anonymously` holds exactly when nothing is used;
//! * a key the kubelet skips is reported by `unmatchable_key`;
//! * metamorphic, without the model: `https://` or `http://` in front of a key
//!   changes no verdict; adding a key never takes a match from another key
//!   nor reorders the others' matches; the order of the keys decides only
//!   ties; keys naming the image's own registry match;
//! * a password in a key's user information (`[http(s)://]user:password@`)
//!   never shows: the evaluation reads the same for another password wherever
//!   the password is.
//!
//! The input is text: the first line is the image (a fixed image is used when
//! it does not parse), every further line a registry key. A line `\x02` plus
//! text is a key built from the image's own registry; in a line with two
//! `\x01` bytes the text between them is a password.

#![no_main]

mod key_secrets;
mod spec_kubelet;
mod spec_reference;

use libfuzzer_sys::fuzz_target;
use regcred_operator::kubelet::{
    Evaluation, ImageRef, MissReason, Verdict, evaluate, match_key, pulls_anonymously,
    unmatchable_key,
};

const IMAGES: [&str; 9] = [
    "nginx",
    "user/app:1.0",
    "quay.io/org/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "registry.example.com:5000/team/app",
    "localhost:5000/a/b",
    "[::1]:5000/app",
    "Reg.Example.COM/x",
    "10.0.0.1/a_b/c-d",
    "localhost/app",
];

enum Line<'a> {
    Plain(String),
    Own(String),
    Secret {
        prefix: &'a str,
        secret: &'a str,
        rest: &'a str,
    },
}

impl Line<'_> {
    fn key(&self) -> String {
        match self {
            Line::Plain(k) | Line::Own(k) => k.clone(),
            Line::Secret {
                prefix,
                secret,
                rest,
            } => format!("{prefix}{secret}{rest}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or_default();
    let image = ImageRef::parse(first)
        .unwrap_or_else(|_| ImageRef::parse(IMAGES[first.len() % IMAGES.len()]).unwrap());
    let lines: Vec<Line> = lines.take(16).map(|l| read_line(l, &image)).collect();
    let owned: Vec<String> = lines.iter().map(Line::key).collect();
    let keys: Vec<&str> = owned.iter().map(String::as_str).collect();

    let evaluations = evaluate(keys.iter().copied(), &image);
    check_shape(&keys, &evaluations);
    check_model(&keys, &image, &evaluations);
    check_relations(&keys, &image, &evaluations);
    for e in &evaluations {
        match &lines[e.position] {
            Line::Own(key) => assert!(e.verdict.is_match(), "{key:?} for {image:?}: {}", e.verdict),
            Line::Secret {
                prefix,
                secret,
                rest,
            } => check_secret(&keys, &image, e, prefix, secret, rest),
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
    match line.split('\u{1}').collect::<Vec<_>>().as_slice() {
        [prefix, secret, rest] => Line::Secret {
            prefix,
            secret,
            rest,
        },
        _ => Line::Plain(line.replace('\u{1}', "")),
    }
}

/// A key that names the image's registry, chosen by `spec`, when the kubelet
/// (every modelled Go release) matches it.
fn own_key(spec: &str, image: &ImageRef) -> Option<String> {
    let r = &image.registry;
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
    let key = match spec.bytes().next().unwrap_or(0) % 6 {
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
    };
    let name = spec_reference::parse_normalized_named(&image.original)?.name();
    let lookup = spec_kubelet::agreed_lookup(&[key.as_str()], &name)?;
    lookup.uses(0).then_some(key)
}

/// One evaluation per key; matches first; keys the kubelet cannot use last.
fn check_shape(keys: &[&str], evaluations: &[Evaluation]) {
    assert_eq!(evaluations.len(), keys.len());
    let mut positions: Vec<usize> = evaluations.iter().map(|e| e.position).collect();
    positions.sort_unstable();
    assert!(positions.iter().copied().eq(0..keys.len()));
    let matches = evaluations
        .iter()
        .take_while(|e| e.verdict.is_match())
        .count();
    assert!(evaluations[matches..].iter().all(|e| !e.verdict.is_match()));
    let unusable = |e: &Evaluation| matches!(e.verdict, Verdict::Miss(MissReason::InvalidKey(_)));
    let usable = evaluations.iter().take_while(|e| !unusable(e)).count();
    assert!(evaluations[usable..].iter().all(unusable));
    for e in evaluations {
        if e.kubelet_key.is_none() {
            assert!(unusable(e), "{e:?}");
        }
        let _ = e.verdict.to_string();
        let _ = serde_json::to_string(e).unwrap();
    }
}

/// Differences from the kubelet that are reported and skipped unless
/// FUZZ_KNOWN_BUGS is set:
///
/// * a key with an `@` in its query or fragment after a real host and path
///   (`quay.io/org?x#y@z`): Go drops query and fragment, the kubelet uses
///   the key (`quay.io/org`), `doctor` calls it unusable;
/// * a key whose control characters or surrounding white space are all in
///   its fragment (`r.io#\t`): Go checks control characters before the `#`
///   only, the kubelet uses the key, `doctor` calls it unusable;
/// * a glob class in a host with a `%`-escape of a non-ASCII byte
///   (`x[a-%ff].io`): Go keeps the byte, which is no UTF-8, so
///   `filepath.Match` reports a bad pattern and the key never matches;
///   `doctor` reads U+FFFD and matches;
/// * the Docker Hub fallback for an image whose first name part has no `.`
///   or `:` but is not Docker Hub (`localhost/app`, `Registry/app`):
///   `isDefaultRegistryMatch` is true for it, so the kubelet sends the
///   `index.docker.io` credentials, `doctor` says it pulls anonymously.
fn known_difference(keys: &[&str], image: &ImageRef, lookup: &spec_kubelet::Lookup) -> bool {
    let query_at = keys.iter().any(|key| {
        let bare = key
            .strip_prefix("https://")
            .or_else(|| key.strip_prefix("http://"))
            .unwrap_or(key);
        match (bare.find('/'), bare.find(['?', '#'])) {
            (Some(slash), Some(cut)) => slash < cut && bare[cut..].contains('@'),
            _ => false,
        }
    });
    let odd_fragment = keys.iter().any(|key| {
        key.split_once('#').is_some_and(|(before, fragment)| {
            !before.chars().any(char::is_control)
                && fragment
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace())
        })
    });
    let raw_byte_class = keys.iter().any(|key| {
        key.contains('[')
            && key
                .split('%')
                .skip(1)
                .any(|escape| escape.starts_with(|c: char| "89abcdefABCDEF".contains(c)))
    });
    let fallback = lookup.fallback && !image.is_docker_hub();
    query_at || odd_fragment || raw_byte_class || fallback
}

fn check_model(keys: &[&str], image: &ImageRef, evaluations: &[Evaluation]) {
    // The kubelet's name of the image; image_ref checks that it is ours.
    let Some(named) = spec_reference::parse_normalized_named(&image.original) else {
        return;
    };
    let name = named.name();
    if name != image.matching_path() {
        return;
    }
    for (position, key) in keys.iter().enumerate() {
        let skipped = spec_kubelet::GO_RELEASES
            .iter()
            .all(|&go| spec_kubelet::index_key(go, key).is_none());
        if skipped {
            assert!(
                unmatchable_key(key).is_some(),
                "the kubelet skips {key:?} (key {position})"
            );
        }
    }
    let Some(lookup) = spec_kubelet::agreed_lookup(keys, &name) else {
        return;
    };
    if known_difference(keys, image, &lookup) && std::env::var_os("FUZZ_KNOWN_BUGS").is_none() {
        return;
    }
    for e in evaluations {
        assert_eq!(
            e.verdict.is_match(),
            lookup.uses(e.position),
            "key {:?} for {name:?}: {} (the kubelet tries {:?})",
            keys[e.position],
            e.verdict,
            lookup
                .tried
                .iter()
                .map(|k| String::from_utf8_lossy(k))
                .collect::<Vec<_>>()
        );
        if e.verdict.is_match() {
            assert_eq!(e.via_docker_hub_fallback, lookup.fallback, "{e:?}");
        }
        if let (Some(ours), Some(Ok(theirs))) = (
            &e.kubelet_key,
            lookup.index[e.position]
                .as_ref()
                .map(|k| std::str::from_utf8(k)),
        ) {
            assert_eq!(ours, theirs, "index key of {:?}", keys[e.position]);
        }
    }
    // Tried in the kubelet's order.
    let mut order: Vec<&str> = evaluations
        .iter()
        .filter(|e| e.verdict.is_match())
        .filter_map(|e| e.kubelet_key.as_deref())
        .collect();
    order.dedup();
    let tried: Vec<String> = lookup
        .tried
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    if tried.iter().all(|k| !k.contains('\u{fffd}')) {
        assert_eq!(order, tried);
    }
    assert_eq!(pulls_anonymously(evaluations), lookup.tried.is_empty());
}

fn matched_positions(evaluations: &[Evaluation]) -> Vec<usize> {
    evaluations
        .iter()
        .filter(|e| e.verdict.is_match())
        .map(|e| e.position)
        .collect()
}

fn check_relations(keys: &[&str], image: &ImageRef, evaluations: &[Evaluation]) {
    // A scheme in front changes nothing: the kubelet adds https:// itself.
    for key in keys {
        if key.starts_with("https://") || key.starts_with("http://") {
            continue;
        }
        let alone = match_key(key, image).is_match();
        for scheme in ["https://", "http://"] {
            assert_eq!(
                match_key(&format!("{scheme}{key}"), image).is_match(),
                alone,
                "{scheme}{key}"
            );
        }
    }

    // Another key takes no direct match away and reorders none.
    let direct: Vec<usize> = evaluations
        .iter()
        .filter(|e| e.verdict.is_match() && !e.via_docker_hub_fallback)
        .map(|e| e.position)
        .collect();
    for extra in [
        image.registry.clone(),
        format!("{}/{}", image.registry, image.repository),
    ] {
        let mut more = keys.to_vec();
        more.push(&extra);
        let after = matched_positions(&evaluate(more.iter().copied(), image));
        let kept: Vec<usize> = after
            .iter()
            .copied()
            .filter(|p| direct.contains(p))
            .collect();
        assert_eq!(kept, direct, "after adding {extra:?}");
    }

    // The order of the keys decides only ties: reversed, the same keys match.
    let reversed: Vec<&str> = keys.iter().rev().copied().collect();
    let again = evaluate(reversed.iter().copied(), image);
    let flip = |p: usize| keys.len() - 1 - p;
    let mut before = matched_positions(evaluations);
    let mut after: Vec<usize> = matched_positions(&again).into_iter().map(flip).collect();
    before.sort_unstable();
    after.sort_unstable();
    assert_eq!(before, after);
    let tried = |es: &[Evaluation]| {
        let mut k: Vec<Option<String>> = es
            .iter()
            .filter(|e| e.verdict.is_match())
            .map(|e| e.kubelet_key.clone())
            .collect();
        k.dedup();
        k
    };
    assert_eq!(tried(&again), tried(evaluations));
}

fn check_secret(
    keys: &[&str],
    image: &ImageRef,
    e: &Evaluation,
    prefix: &str,
    secret: &str,
    rest: &str,
) {
    if !key_secrets::telling(secret) || !key_secrets::in_userinfo(prefix, rest) {
        return;
    }
    let visible = format!(
        "{prefix}{rest}<redacted>…{}{}",
        image.original,
        image.normalized()
    );
    if visible.contains(secret)
        || keys
            .iter()
            .enumerate()
            .any(|(i, k)| i != e.position && k.contains(secret))
    {
        return;
    }
    let shown =
        |e: &Evaluation| format!("{e:?} {} {}", e.verdict, serde_json::to_string(e).unwrap());
    let mut other: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    other[e.position] = format!("{prefix}{}{rest}", key_secrets::disguise(secret));
    let others = evaluate(other.iter().map(String::as_str), image);
    let twin = others.iter().find(|o| o.position == e.position).unwrap();
    if !shown(twin).contains(secret) {
        assert!(
            !shown(e).contains(secret),
            "password {secret:?} shown: {e:?}"
        );
    }
}
