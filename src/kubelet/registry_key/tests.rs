use super::*;

fn ok(key: &str) -> RegistryKey {
    RegistryKey::parse(key).unwrap_or_else(|e| panic!("{key:?} should parse: {e}"))
}

fn err(key: &str) -> RegistryKeyError {
    match RegistryKey::parse(key) {
        Ok(k) => panic!("{key:?} should be rejected, got {k:?}"),
        Err(e) => e,
    }
}

fn norm(key: &str) -> String {
    ok(key).to_string()
}

#[test]
fn docker_hub_v1() {
    let k = ok("https://index.docker.io/v1/");
    assert_eq!(k.host(), "index.docker.io");
    assert_eq!(k.port(), None);
    assert_eq!(k.path(), "");
    assert_eq!(k.to_string(), "index.docker.io");
}

#[test]
fn port_and_path() {
    let k = ok("registry.example.com:5000/team");
    assert_eq!(k.host(), "registry.example.com");
    assert_eq!(k.port(), Some("5000"));
    assert_eq!(k.path(), "team");
    assert_eq!(k.to_string(), "registry.example.com:5000/team");
}

#[test]
fn ipv4_with_port() {
    let k = ok("127.0.0.1:5000");
    assert_eq!(k.host(), "127.0.0.1");
    assert_eq!(k.port(), Some("5000"));
    assert_eq!(k.path(), "");
}

#[test]
fn ipv6() {
    let k = ok("[::1]:5000/x");
    assert_eq!(k.host(), "[::1]");
    assert_eq!(k.port(), Some("5000"));
    assert_eq!(k.path(), "x");
    assert_eq!(k.to_string(), "[::1]:5000/x");
    assert_eq!(ok("http://[FE80::1]").host(), "[fe80::1]");
    assert!(matches!(err("[::1"), RegistryKeyError::InvalidHost { .. }));
    assert!(matches!(
        err("[zz::1]"),
        RegistryKeyError::InvalidHost { .. }
    ));
    assert!(matches!(
        err("[::1]x"),
        RegistryKeyError::InvalidHost { .. }
    ));
    assert!(matches!(err("::1"), RegistryKeyError::InvalidHost { .. }));
    assert!(matches!(
        err("fe80::1"),
        RegistryKeyError::InvalidHost { .. }
    ));
    assert!(matches!(
        err("[::1]:0"),
        RegistryKeyError::InvalidPort { .. }
    ));
}

#[test]
fn empty_and_blank() {
    assert_eq!(err(""), RegistryKeyError::Empty);
    assert!(matches!(err("  \t\n"), RegistryKeyError::Whitespace { .. }));
}

#[test]
fn scheme_without_host() {
    assert!(matches!(
        err("http://"),
        RegistryKeyError::MissingHost { .. }
    ));
    assert!(matches!(
        err("https:///v2/"),
        RegistryKeyError::MissingHost { .. }
    ));
    assert!(matches!(err(":5000"), RegistryKeyError::MissingHost { .. }));
    assert!(matches!(err("/team"), RegistryKeyError::MissingHost { .. }));
}

#[test]
fn whitespace_inside() {
    assert!(matches!(
        err("exa mple.com"),
        RegistryKeyError::Whitespace { .. }
    ));
    assert!(matches!(
        err("a.io/x\ty"),
        RegistryKeyError::Whitespace { .. }
    ));
    assert!(matches!(
        err("a.io\u{0}"),
        RegistryKeyError::Whitespace { .. }
    ));
}

#[test]
fn surrounding_whitespace_is_refused() {
    // The kubelet's url.Parse refuses these, so it would never use the entry.
    for key in ["  https://a.io/v2/  ", "\na.io\n", "a.io\n", " a.io", "   "] {
        assert!(
            matches!(err(key), RegistryKeyError::Whitespace { .. }),
            "{key:?}"
        );
    }
}

#[test]
fn schemes() {
    assert_eq!(norm("http://a.io"), "a.io");
    assert_eq!(norm("https://a.io"), "a.io");
    match err("ftp://x") {
        RegistryKeyError::UnsupportedScheme { scheme, key } => {
            assert_eq!(scheme, "ftp");
            assert_eq!(key, "ftp://x");
        }
        e => panic!("unexpected {e:?}"),
    }
    // The kubelet only recognises lower-case schemes.
    assert!(matches!(
        err("HTTPS://a.io"),
        RegistryKeyError::UnsupportedScheme { .. }
    ));
    assert!(matches!(
        err("oci://a.io"),
        RegistryKeyError::UnsupportedScheme { .. }
    ));
}

#[test]
fn ports() {
    assert!(matches!(
        err("host:99999"),
        RegistryKeyError::InvalidPort { .. }
    ));
    assert!(matches!(
        err("host:abc"),
        RegistryKeyError::InvalidPort { .. }
    ));
    assert!(matches!(err("host:"), RegistryKeyError::InvalidPort { .. }));
    assert!(matches!(
        err("host:0"),
        RegistryKeyError::InvalidPort { .. }
    ));
    assert!(matches!(
        err("host:65536"),
        RegistryKeyError::InvalidPort { .. }
    ));
    assert!(matches!(
        err("host:-1"),
        RegistryKeyError::InvalidPort { .. }
    ));
    assert!(matches!(
        err("host:+80"),
        RegistryKeyError::InvalidPort { .. }
    ));
    assert!(matches!(
        err("host:0000000080"),
        RegistryKeyError::InvalidPort { .. }
    ));
    assert_eq!(ok("host:65535").port(), Some("65535"));
    assert_eq!(ok("host:1").port(), Some("1"));
    assert!(matches!(
        err("host:1:2"),
        RegistryKeyError::InvalidHost { .. }
    ));
}

#[test]
fn api_prefixes() {
    assert_eq!(norm("https://a.io/v1/"), "a.io");
    assert_eq!(norm("https://a.io/v2/"), "a.io");
    assert_eq!(norm("a.io/v1"), "a.io");
    assert_eq!(norm("a.io/v2"), "a.io");
    assert_eq!(norm("a.io/v2/team/app"), "a.io/team/app");
    assert_eq!(norm("a.io/v2/team/"), "a.io/team");
    // Only a whole leading segment is an API prefix.
    assert_eq!(norm("a.io/v2x"), "a.io/v2x");
    assert_eq!(norm("a.io/team/v2"), "a.io/team/v2");
    assert_eq!(norm("a.io/v3/"), "a.io/v3");
    // Only one prefix is stripped; a path that starts with v1 or v2 is
    // shown after an API prefix so that it reads back the same.
    assert_eq!(ok("a.io/v2/v2/").path(), "v2");
    assert_eq!(norm("a.io/v2/v2/"), "a.io/v2/v2");
}

#[test]
fn trailing_slash() {
    assert_eq!(norm("a.io/"), "a.io");
    assert_eq!(norm("a.io/team/"), "a.io/team");
    assert_eq!(ok("a.io/").path(), "");
}

#[test]
fn bad_paths() {
    assert!(matches!(
        err("a.io//x"),
        RegistryKeyError::InvalidPath { .. }
    ));
    assert!(matches!(
        err("a.io/x//"),
        RegistryKeyError::InvalidPath { .. }
    ));
    assert!(matches!(
        err("a.io/v2//x"),
        RegistryKeyError::InvalidPath { .. }
    ));
    assert!(matches!(
        err("a.io/x%2Fy"),
        RegistryKeyError::InvalidPath { .. }
    ));
    assert!(matches!(
        err("a.io/x:y"),
        RegistryKeyError::InvalidPath { .. }
    ));
    assert!(matches!(
        err("a.io/../x"),
        RegistryKeyError::InvalidPath { .. }
    ));
    assert!(matches!(
        err("a.io/é"),
        RegistryKeyError::InvalidPath { .. }
    ));
    assert_eq!(ok("a.io/my_team/app-1.2~x").path(), "my_team/app-1.2~x");
}

#[test]
fn userinfo_rejected() {
    assert!(matches!(
        err("user@host"),
        RegistryKeyError::UserInfo { .. }
    ));
    assert!(matches!(
        err("https://u:p@host/v2/"),
        RegistryKeyError::UserInfo { .. }
    ));
    assert!(matches!(err("@host"), RegistryKeyError::UserInfo { .. }));
    // '@' in the path is not user information, but it is not allowed either.
    assert!(matches!(
        err("host/a@b"),
        RegistryKeyError::InvalidPath { .. }
    ));
}

#[test]
fn query_and_fragment_rejected() {
    assert!(matches!(
        err("a.io/x?y=1"),
        RegistryKeyError::QueryOrFragment { .. }
    ));
    assert!(matches!(
        err("a.io#x"),
        RegistryKeyError::QueryOrFragment { .. }
    ));
    assert!(matches!(
        err("a.io?"),
        RegistryKeyError::QueryOrFragment { .. }
    ));
}

#[test]
fn host_is_lowercased() {
    let k = ok("Registry.Example.COM:5000/Team");
    assert_eq!(k.host(), "registry.example.com");
    // The path is kept as written.
    assert_eq!(k.path(), "Team");
    assert_eq!(ok("https://A.IO"), ok("a.io"));
}

#[test]
fn globs() {
    let k = ok("*.example.com");
    assert_eq!(k.host(), "*.example.com");
    assert_eq!(norm("https://*.a.*.io:443/v2/x"), "*.a.*.io:443/x");
    assert_eq!(norm("*"), "*");
    assert!(matches!(err("a*.io"), RegistryKeyError::InvalidHost { .. }));
    assert!(matches!(err("**.io"), RegistryKeyError::InvalidHost { .. }));
}

#[test]
fn bad_hosts() {
    for key in [
        "a..io",
        ".a.io",
        "a.io.",
        "-a.io",
        "a-.io",
        "a_b.io",
        "exämple.com",
        "a!.io",
        "999.1.1.1",
        "1.2.3",
        "123",
        "a.1",
    ] {
        assert!(
            matches!(err(key), RegistryKeyError::InvalidHost { .. }),
            "{key:?}"
        );
    }
    let long_label = format!("{}.io", "a".repeat(64));
    assert!(matches!(
        err(&long_label),
        RegistryKeyError::InvalidHost { .. }
    ));
    let long_host = format!("{}io", "abcdefghi.".repeat(26));
    assert!(long_host.len() > MAX_HOST_LEN);
    assert!(matches!(
        err(&long_host),
        RegistryKeyError::InvalidHost { .. }
    ));
    assert_eq!(ok(&"a".repeat(63)).host().len(), 63);
}

#[test]
fn good_hosts() {
    for key in [
        "localhost",
        "localhost:5000",
        "a",
        "1a.io",
        "a.io1",
        "my-registry.internal",
        "xn--bcher-kva.example",
        "10.0.0.1",
        "gcr.io",
        "docker.io",
    ] {
        ok(key);
    }
}

#[test]
fn equivalent_keys_normalise_equal() {
    assert_eq!(ok("https://index.docker.io/v1/"), ok("index.docker.io"));
    assert_eq!(ok("http://a.io:5000/v2/x/"), ok("a.io:5000/x"));
    assert_ne!(ok("a.io:5000"), ok("a.io"));
    assert_ne!(ok("a.io/x"), ok("a.io"));
}

#[test]
fn messages_quote_the_key() {
    let msg = err("ftp://x").to_string();
    assert_eq!(
        msg,
        "registry key \"ftp://x\" has unsupported scheme \"ftp\": only http and https are allowed"
    );
    assert_eq!(
        err("host:abc").to_string(),
        "registry key \"host:abc\" has an invalid port: expected a number from 1 to 65535"
    );
    assert_eq!(
        err("exa mple.com").to_string(),
        "registry key \"exa mple.com\" contains whitespace or control characters"
    );
    assert_eq!(
        err("http://").to_string(),
        "registry key \"http://\" has no host"
    );
    assert_eq!(err("").to_string(), "registry key is empty");
    assert_eq!(err("a_b.io").key(), Some("a_b.io"));
    assert_eq!(err("").key(), None);
}

#[test]
fn messages_redact_credentials() {
    let e = err("https://user:s3cr3t@registry.io/v2/");
    let msg = e.to_string();
    assert!(!msg.contains("s3cr3t"), "{msg}");
    assert!(!msg.contains("user:"), "{msg}");
    assert!(msg.contains("https://<redacted>@registry.io/v2/"), "{msg}");
    assert!(!format!("{e:?}").contains("s3cr3t"));

    let e = err("registry.io/x?token=s3cr3t");
    let msg = e.to_string();
    assert!(!msg.contains("s3cr3t"), "{msg}");
    assert!(msg.contains("registry.io/x?<redacted>"), "{msg}");

    // Redaction also applies when another problem is reported first.
    let e = err("ftp://user:s3cr3t@registry.io");
    assert!(!e.to_string().contains("s3cr3t"));
    let e = err("u:s3cr3t@exa mple.com");
    assert!(!e.to_string().contains("s3cr3t"));
}

#[test]
fn long_keys_are_shortened_in_messages() {
    let key = format!("{}_", "a".repeat(1000));
    let msg = err(&key).to_string();
    assert!(msg.len() < 400, "{}", msg.len());
    assert!(msg.contains('…'));
}

#[test]
fn redact_key_cases() {
    assert_eq!(redact_key("a.io"), "a.io");
    assert_eq!(redact_key("u:p@a.io/x"), "<redacted>@a.io/x");
    assert_eq!(redact_key("https://u@v:p@a.io"), "https://<redacted>@a.io");
    assert_eq!(redact_key("a.io/x@y"), "<redacted>@y");
    assert_eq!(redact_key("1ftp://u:p@a.io"), "1ftp://<redacted>@a.io");
    assert_eq!(redact_key("a.io#frag"), "a.io#<redacted>");
    assert_eq!(redact_key("u:p@a.io?q"), "<redacted>@a.io?<redacted>");
}

#[test]
fn display_reads_back_when_the_path_starts_with_an_api_version() {
    // Found by prop_display_round_trips: "a/v1/v1" has the path "v1", which
    // was shown as "a/v1" and read back as the bare host "a".
    for key in ["a/v1/v1", "a.io/v2/v2/", "a.io:5000/v1/v2/x", "a.io/v2/v1x"] {
        let k = ok(key);
        assert_eq!(ok(&k.to_string()), k, "{key:?} shown as {k}");
    }
    assert_eq!(norm("a/v1/v1"), "a/v2/v1");
    assert_eq!(norm("a.io:5000/v1/v2/x"), "a.io:5000/v2/v2/x");
    assert_eq!(norm("a.io/v2/v1x"), "a.io/v1x");
}

#[test]
fn redact_key_hides_passwords_with_query_characters() {
    // Found by prop_errors_never_show_userinfo_or_query: a '?' or '#' in a
    // password was taken for the start of a query, and what came before it
    // was quoted.
    assert_eq!(redact_key(":Aa$#@r.io"), "<redacted>");
    assert_eq!(redact_key("https://u:p?ss@r.io/x"), "https://<redacted>");
    let e = err("https://u:s3cr3t#x@r.io");
    assert!(!format!("{e} {e:?}").contains("s3cr3t"), "{e}");
    // A password containing "://" does not make what precedes it a scheme.
    assert_eq!(redact_key("u:s3://cr3t@r.io"), "<redacted>@r.io");
    let e = err("u:s3://cr3t@r.io");
    assert!(!format!("{e} {e:?}").contains("s3"), "{e}");
    // An '@' in a query hides everything after the scheme.
    assert_eq!(redact_key("https://r.io/x?t=a@b"), "https://<redacted>");
}

#[test]
fn schemeless_key_with_colon_slash_later() {
    // "://" after a '/' is not a scheme separator; the ':' lands in the path.
    assert!(matches!(
        err("a.io/x://y"),
        RegistryKeyError::InvalidPath { .. }
    ));
}

#[test]
fn a_long_scheme_is_quoted_shortened() {
    let key = format!("{}://r.io", "a".repeat(3000));
    let e = RegistryKey::parse(&key).unwrap_err();
    assert!(matches!(e, RegistryKeyError::UnsupportedScheme { .. }));
    assert!(e.to_string().len() < 1000, "{} chars", e.to_string().len());
}
