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
    "[a-z0-9]{1,5}(-[a-z0-9]{1,3})?".prop_filter("localhost is a registry", |c| c != "localhost")
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
    let unusable = |e: &Evaluation| matches!(e.verdict, Verdict::Miss(MissReason::InvalidKey(_)));
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
