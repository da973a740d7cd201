//! An image reference, as in a Pod's `image` field.
//!
//! Invariants: no panic; an accepted reference has the documented shape, its
//! normalised form reads back as the same image, and a registry key naming
//! the image's own registry matches it; errors are of bounded length.

#![no_main]

use libfuzzer_sys::fuzz_target;
use regcred_operator::kubelet::{ImageRef, ImageRefError, Verdict, match_key};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ImageRef::parse(text) {
        Ok(image) => check(&image),
        Err(e) => check_error(&e),
    }
});

fn check(image: &ImageRef) {
    assert!(!image.registry.is_empty());
    assert!(!image.repository.is_empty() && image.repository.len() <= 255);
    assert!(!image.repository.starts_with('/') && !image.repository.ends_with('/'));
    assert!(!image.repository.contains(['@', ':']) && !image.registry.contains(['/', '@']));
    assert_eq!(image.is_docker_hub(), image.registry == "docker.io");
    if image.is_docker_hub() {
        assert!(image.repository.contains('/'), "{image:?}");
    }
    assert_eq!(
        image.matching_path(),
        format!("{}/{}", image.registry, image.repository)
    );
    let normalized = image.normalized();
    assert_eq!(image.to_string(), normalized);
    assert!(image.tag.is_some() || image.digest.is_some() || normalized.ends_with(":latest"));

    // The normalised reference reads back as the same image.
    let again = ImageRef::parse(&normalized).unwrap_or_else(|e| {
        panic!(
            "{normalized:?} (from {:?}) does not parse: {e}",
            image.original
        )
    });
    assert_eq!(again.registry, image.registry);
    assert_eq!(again.repository, image.repository);
    assert_eq!(again.digest, image.digest);
    assert_eq!(again.normalized(), normalized);

    // A key naming the image's own registry matches it. (A bracketed IPv6
    // host without a port is a glob class to the kubelet: it never matches;
    // and Go's URL parser rejects a bracketed host that is not an IPv6
    // address, which the reference grammar lets through.)
    let r = &image.registry;
    if usable_as_key(r) {
        for key in [
            r.clone(),
            format!("https://{r}/v2/"),
            // A leading /v1/ or /v2/ of a key's path is an API version to the
            // kubelet, so the repository goes after one.
            format!("{r}/v2/{}", image.repository),
            format!("https://user:pass@{r}/v1/{}", image.repository),
        ] {
            assert_eq!(
                match_key(&key, image),
                Verdict::Match,
                "{key:?} for {image:?}"
            );
        }
    }
    if image.is_docker_hub() {
        assert_eq!(
            match_key("https://index.docker.io/v1/", image),
            Verdict::Match
        );
    }
}

/// Whether the kubelet can read the registry as a key at all.
pub fn usable_as_key(registry: &str) -> bool {
    match registry.strip_prefix('[') {
        None => true,
        Some(rest) => rest
            .split_once("]:")
            .is_some_and(|(address, _)| address.parse::<std::net::Ipv6Addr>().is_ok()),
    }
}

/// Every quoted part of the input is at most 256 characters and '…'.
fn check_error(e: &ImageRefError) {
    let _ = format!("{e} {e:?}");
    let quoted: Vec<&str> = match e {
        ImageRefError::Empty => vec![],
        ImageRefError::Whitespace { image }
        | ImageRefError::ImageId { image }
        | ImageRefError::RepositoryTooLong { image, .. } => vec![image],
        ImageRefError::InvalidRegistry { image, registry } => vec![image, registry],
        ImageRefError::UppercaseRepository { image, repository } => vec![image, repository],
        ImageRefError::InvalidRepository {
            image,
            repository,
            reason,
        } => {
            // The component is quoted escaped (up to 10 characters each).
            assert!(reason.chars().count() <= 2570 + 200, "{reason:?}");
            vec![image, repository]
        }
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
}
