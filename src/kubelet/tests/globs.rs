use super::*;

// --- Glob engine ------------------------------------------------------------

#[test]
fn path_match_semantics() {
    let m = |p: &str, n: &str| parse_glob(p).is_some_and(|t| glob_matches(&t, n));
    assert!(m("*", ""));
    assert!(m("*", "abc"));
    assert!(m("a*c", "abbbc"));
    assert!(m("a*c*", "acbc"));
    assert!(!m("a*c", "abd"));
    assert!(m("?", "x"));
    assert!(!m("?", ""));
    assert!(m("[abc]", "b"));
    assert!(m("[^abc]", "d"));
    assert!(!m("[^abc]", "a"));
    assert!(m("[a-c]x", "bx"));
    assert!(m("[\\-]", "-"));
    assert!(m("\\*", "*"));
    assert!(!m("\\*", "a"));
    assert!(!m("*", "a/b"));
    assert!(parse_glob("[").is_none());
    assert!(parse_glob("[]").is_none());
    assert!(parse_glob("[a-]").is_none());
    assert!(parse_glob("[-a]").is_none());
    assert!(parse_glob("\\").is_none());
    assert!(parse_glob("a]").is_some());
}

#[test]
fn split_host_port_like_go() {
    assert_eq!(split_host_port("a.io:5000"), ("a.io", "5000"));
    assert_eq!(split_host_port("a.io"), ("a.io", ""));
    assert_eq!(split_host_port("a.io:"), ("a.io", ""));
    assert_eq!(split_host_port("[::1]:5000"), ("::1", "5000"));
    assert_eq!(split_host_port("[::1]"), ("[::1]", ""));
    assert_eq!(split_host_port("::1"), ("::1", ""));
    assert_eq!(split_host_port(""), ("", ""));
}
