use super::*;

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
