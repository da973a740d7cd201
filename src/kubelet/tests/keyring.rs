use super::*;

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
