//! Where a credential sits in a registry key, by RFC 3986: the user
//! information is what comes between `scheme://` (or the start) and the `@`
//! before the host, `user:password` or a token; a query starts at `?`, a
//! fragment at `#`. Both may hold credentials, and nothing shown for a key may
//! contain them.

#![allow(dead_code)]

/// Characters of RFC 3986 user information.
fn userinfo_chars(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:%".contains(&b))
}

/// Whether `secret`, written between `prefix` and `rest`, is in the user
/// information: `[http(s)://]user:` + secret + `@...`, or the whole user
/// information right after a scheme.
pub fn in_userinfo(prefix: &str, rest: &str) -> bool {
    let after_scheme = prefix
        .strip_prefix("https://")
        .or_else(|| prefix.strip_prefix("http://"))
        .unwrap_or(prefix);
    rest.starts_with('@')
        && userinfo_chars(after_scheme)
        && (after_scheme.contains(':') || (after_scheme.is_empty() && !prefix.is_empty()))
}

/// Whether a secret after `prefix` is in a query or fragment.
pub fn in_query(prefix: &str) -> bool {
    prefix.contains(['?', '#'])
}

/// Whether `secret` can be told apart in what is shown: four characters or
/// more, not made of the redaction marks (`<redacted>`, `…`), and changed by
/// [`disguise`].
pub fn telling(secret: &str) -> bool {
    secret.chars().count() >= 4 && !secret.contains(['<', '>', '…']) && disguise(secret) != secret
}

/// The secret with its letters moved to other letters of the same kind (hex
/// digits stay hex digits, digits and punctuation stay), so that a key with
/// either reads alike to Go's URL parser and to the operator.
pub fn disguise(secret: &str) -> String {
    let turn = |c: char, base: u8, len: u8| (base + (c as u8 - base + 1) % len) as char;
    secret
        .chars()
        .map(|c| match c {
            'a'..='f' => turn(c, b'a', 6),
            'g'..='z' => turn(c, b'g', 20),
            'A'..='F' => turn(c, b'A', 6),
            'G'..='Z' => turn(c, b'G', 20),
            c => c,
        })
        .collect()
}
