//! An image reference, as in a Pod's `image` field.
//!
//! The oracle is `spec_reference`, a model of `ParseNormalizedNamed` from
//! `github.com/distribution/reference` (the grammar of `regexp.go`,
//! `normalize.go`'s Docker Hub rules, `reference.go`'s length limit, and
//! go-digest's algorithms), which is what the kubelet parses an image with
//! before it looks up credentials for `Name()`. Checked:
//!
//! * `ImageRef::parse` accepts exactly what the model accepts, and reads the
//!   same registry, repository, tag and digest (so `matching_path()` is the
//!   kubelet's `Name()`);
//! * the normalised reference reads back as the same image (`:latest` added
//!   when there is neither tag nor digest), and familiar spellings
//!   (`nginx`, `docker.io/nginx`, `index.docker.io/library/nginx`) are one
//!   image;
//! * keys naming the image's own registry, as people write them
//!   (`host[:port]`, `https://host/v2/`, `host/v2/<repository>`,
//!   `https://user:pass@host/v1/<repository>`, `http://host/`), match the
//!   image exactly when the kubelet model (`spec_kubelet`) says they do;
//! * no panic; errors quote at most 257 characters of any part.

#![no_main]

mod spec_kubelet;
mod spec_reference;

use libfuzzer_sys::fuzz_target;
use regcred_operator::kubelet::{ImageRef, ImageRefError, match_key};
use spec_reference::{Named, parse_normalized_named};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let model = parse_normalized_named(text);
    match (ImageRef::parse(text), model) {
        (Ok(image), Some(named)) => check(&image, &named),
        (Err(e), None) => check_error(&e),
        (Ok(image), None) => panic!("{text:?} is not a reference, but parses as {image:?}"),
        (Err(e), Some(named)) => {
            assert!(
                known_difference(&named),
                "{text:?} is the reference {named:?}, but is refused: {e}"
            );
            check_error(&e);
        }
    }
});

/// References the operator is known to refuse although the kubelet reads
/// them (reported; asserted only when FUZZ_KNOWN_BUGS is set): a first part
/// with a '.' that is no domain but a valid path component, such as
/// `my_registry.local/app`, parses with no domain, and `Name()` is the
/// whole path (`reference.Parse`: the domain is optional in `namePat`).
fn known_difference(named: &Named) -> bool {
    named.domain.is_empty() && std::env::var_os("FUZZ_KNOWN_BUGS").is_none()
}

fn check(image: &ImageRef, named: &Named) {
    assert_eq!(
        image.registry, named.domain,
        "registry of {:?}",
        image.original
    );
    assert_eq!(
        image.repository, named.path,
        "repository of {:?}",
        image.original
    );
    assert_eq!(image.tag, named.tag);
    assert_eq!(image.digest, named.digest);
    assert_eq!(image.matching_path(), named.name());
    assert_eq!(image.is_docker_hub(), named.domain == "docker.io");

    // The normalised form is the same image, with ":latest" when untagged.
    let normalized = image.normalized();
    assert_eq!(image.to_string(), normalized);
    let again = parse_normalized_named(&normalized).unwrap_or_else(|| {
        panic!(
            "{normalized:?} (from {:?}) is not a reference",
            image.original
        )
    });
    assert_eq!(again.name(), named.name());
    assert_eq!(again.digest, named.digest);
    let tag = named
        .tag
        .clone()
        .or_else(|| named.digest.is_none().then(|| "latest".to_owned()));
    assert_eq!(again.tag, tag);

    // Familiar Docker Hub spellings are one image.
    if let Some(short) = named.name().strip_prefix("docker.io/").map(|p| {
        p.strip_prefix("library/")
            .filter(|r| !r.contains('/'))
            .unwrap_or(p)
            .to_owned()
    }) {
        let suffix = &normalized[named.name().len()..];
        for spelling in [
            short.clone(),
            format!("docker.io/{short}"),
            format!("index.docker.io/{}", named.path),
        ] {
            let spelled = format!("{spelling}{suffix}");
            if parse_normalized_named(&spelled).is_none_or(|n| n.name() != named.name()) {
                continue;
            }
            let other = ImageRef::parse(&spelled).unwrap_or_else(|e| panic!("{spelled:?}: {e}"));
            assert_eq!(other.matching_path(), image.matching_path(), "{spelled:?}");
        }
    }

    // Keys for the image's own registry match when the kubelet says so.
    let r = &image.registry;
    let repo = &image.repository;
    let mut keys = vec![
        r.clone(),
        format!("https://{r}/v2/"),
        format!("{r}/v2/{repo}"),
        format!("https://user:pass@{r}/v1/{repo}"),
        format!("http://{r}/"),
    ];
    if image.is_docker_hub() {
        keys.push("https://index.docker.io/v1/".to_owned());
    }
    for key in keys {
        let Some(lookup) = spec_kubelet::agreed_lookup(&[key.as_str()], &named.name()) else {
            continue;
        };
        assert_eq!(
            match_key(&key, image).is_match(),
            lookup.uses(0),
            "{key:?} for {image:?}"
        );
    }
}

/// Every quoted part of the input is at most 256 characters and '…'.
fn check_error(e: &ImageRefError) {
    let text = format!("{e} {e:?}");
    let quoted: Vec<&str> = match e {
        ImageRefError::Empty => vec![],
        ImageRefError::Whitespace { image }
        | ImageRefError::ImageId { image }
        | ImageRefError::RepositoryTooLong { image, .. } => vec![image],
        ImageRefError::InvalidRegistry { image, registry } => vec![image, registry],
        ImageRefError::UppercaseRepository { image, repository } => vec![image, repository],
        ImageRefError::InvalidRepository {
            image, repository, ..
        } => vec![image, repository],
        ImageRefError::InvalidTag { image, tag } => vec![image, tag],
        ImageRefError::InvalidDigest { image, digest, .. } => vec![image, digest],
    };
    for q in quoted {
        assert!(
            q.chars().count() <= 257,
            "{} characters quoted",
            q.chars().count()
        );
    }
    // Bounded whatever the input's length (quoted parts are shortened).
    assert!(text.chars().count() < 30_000, "{}", text.len());
}
