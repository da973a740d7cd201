//! Go's `path.Match`, one host label at a time: the globs of registry keys.

pub(super) enum GlobToken {
    /// `*`: any run of characters except `/`.
    Star,
    /// `?`: any one character except `/`.
    AnyChar,
    /// A literal character (possibly escaped with `\`).
    Char(char),
    /// `[...]` or `[^...]`.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl GlobToken {
    fn matches_char(&self, c: char) -> bool {
        match self {
            GlobToken::Star => true,
            GlobToken::AnyChar => c != '/',
            GlobToken::Char(l) => *l == c,
            GlobToken::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

/// Parses a `path.Match` pattern; `None` for a malformed pattern
/// (`ErrBadPattern`), which never matches.
pub(super) fn parse_glob(pattern: &str) -> Option<Vec<GlobToken>> {
    let mut chars = pattern.chars().peekable();
    let mut tokens = Vec::new();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '*' => GlobToken::Star,
            '?' => GlobToken::AnyChar,
            '\\' => GlobToken::Char(chars.next()?),
            '[' => {
                let negated = chars.next_if_eq(&'^').is_some();
                let mut ranges = Vec::new();
                loop {
                    if !ranges.is_empty() && chars.next_if_eq(&']').is_some() {
                        break;
                    }
                    let class_char = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
                        match chars.next()? {
                            '-' | ']' => None,
                            '\\' => chars.next(),
                            c => Some(c),
                        }
                    };
                    let lo = class_char(&mut chars)?;
                    let hi = if chars.next_if_eq(&'-').is_some() {
                        class_char(&mut chars)?
                    } else {
                        lo
                    };
                    ranges.push((lo, hi));
                }
                GlobToken::Class { negated, ranges }
            }
            c => GlobToken::Char(c),
        });
    }
    Some(tokens)
}

pub(super) fn glob_matches(tokens: &[GlobToken], name: &str) -> bool {
    let name: Vec<char> = name.chars().collect();
    let (mut t, mut n) = (0, 0);
    // The last `*` seen and the position in `name` it currently stops at.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match tokens.get(t) {
            Some(GlobToken::Star) => {
                star = Some((t, n));
                t += 1;
                continue;
            }
            Some(token) if token.matches_char(name[n]) => {
                t += 1;
                n += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((star_t, star_n)) if name[star_n] != '/' => {
                star = Some((star_t, star_n + 1));
                t = star_t + 1;
                n = star_n + 1;
            }
            _ => return false,
        }
    }
    tokens[t..]
        .iter()
        .all(|token| matches!(token, GlobToken::Star))
}

pub(super) fn is_glob(label: &str) -> bool {
    label.contains(['*', '?', '[', '\\'])
}
