//! Redis's glob patterns (`KEYS`, `SCAN MATCH`, `HSCAN MATCH`, `COMMAND LIST FILTERBY PATTERN`),
//! matched byte for byte as Redis 7 matches them, odd corners included: a `[` never closed is a
//! class that runs to the end of the pattern, a range written backwards (`[z-a]`) is the same
//! range, and a `\` at the very end stands for itself.
//!
//! | pattern | matches |
//! |---|---|
//! | `*` | any run of bytes, none included |
//! | `?` | one byte |
//! | `[abc]` `[a-z]` `[^a]` | one byte in (or, with `^`, not in) the class |
//! | `\x` | `x` itself, outside a class or inside one |

/// Whether `text` matches `pattern`; `nocase` compares ASCII letters case-insensitively.
pub fn glob_match(pattern: &[u8], text: &[u8], nocase: bool) -> bool {
    // Redis's callers take `*` alone as "everything", the empty name included.
    if pattern == b"*" {
        return true;
    }
    let mut give_up = false;
    matches(pattern, text, nocase, &mut give_up)
}

/// One step of the match. `give_up` is Redis's shortcut: once the part after a `*` has failed
/// against every suffix of the text, no earlier `*` can make it match either, so every caller
/// stops at once (without it, patterns like `*a*a*a*b` take exponential time).
fn matches(mut pattern: &[u8], mut text: &[u8], nocase: bool, give_up: &mut bool) -> bool {
    let same = |a: u8, b: u8| if nocase { a.eq_ignore_ascii_case(&b) } else { a == b };
    while let (Some(&p), Some(&c)) = (pattern.first(), text.first()) {
        match p {
            b'*' => {
                while pattern.get(1) == Some(&b'*') {
                    pattern = &pattern[1..];
                }
                if pattern.len() == 1 {
                    return true;
                }
                while !text.is_empty() {
                    if matches(&pattern[1..], text, nocase, give_up) {
                        return true;
                    }
                    if *give_up {
                        return false;
                    }
                    text = &text[1..];
                }
                *give_up = true;
                return false;
            }
            b'?' => text = &text[1..],
            b'[' => {
                pattern = &pattern[1..];
                let negate = pattern.first() == Some(&b'^');
                if negate {
                    pattern = &pattern[1..];
                }
                let mut hit = false;
                loop {
                    match pattern {
                        [b'\\', escaped, ..] => {
                            hit |= same(*escaped, c);
                            pattern = &pattern[2..];
                        }
                        [b']', ..] => break,
                        // Never closed: the class ends with the pattern.
                        [] => break,
                        [low, b'-', high, ..] => {
                            let (low, high) = if low <= high { (*low, *high) } else { (*high, *low) };
                            hit |= if nocase {
                                let c = c.to_ascii_lowercase();
                                (low.to_ascii_lowercase()..=high.to_ascii_lowercase()).contains(&c)
                            } else {
                                (low..=high).contains(&c)
                            };
                            pattern = &pattern[3..];
                        }
                        [other, ..] => {
                            hit |= same(*other, c);
                            pattern = &pattern[1..];
                        }
                    }
                }
                if hit == negate {
                    return false;
                }
                text = &text[1..];
                // `pattern` is at the closing `]`, or empty for a class never closed.
                if pattern.is_empty() {
                    return text.is_empty();
                }
            }
            b'\\' if pattern.len() >= 2 => {
                pattern = &pattern[1..];
                if !same(pattern[0], c) {
                    return false;
                }
                text = &text[1..];
            }
            _ => {
                if !same(p, c) {
                    return false;
                }
                text = &text[1..];
            }
        }
        pattern = &pattern[1..];
        if text.is_empty() {
            while pattern.first() == Some(&b'*') {
                pattern = &pattern[1..];
            }
            break;
        }
    }
    pattern.is_empty() && text.is_empty()
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    fn m(pattern: &str, text: &str) -> bool {
        glob_match(pattern.as_bytes(), text.as_bytes(), false)
    }

    #[test]
    fn stars_and_question_marks() {
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("user:*", "user:1"));
        assert!(m("user:*", "user:"));
        assert!(!m("user:*", "user"));
        assert!(m("h?llo", "hello"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("a**b", "ab"));
        assert!(m("*a*b", "xxaxxb"));
        assert!(!m("*a*b", "xxaxx"));
        assert!(!m("", "a"));
        assert!(m("", ""));
        // The shortcut keeps this fast: without it, 2^30 ways to place the stars.
        let text = "a".repeat(60);
        assert!(!m(&format!("{}b", "*a".repeat(30)), &text));
    }

    #[test]
    fn classes_ranges_and_negation() {
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(m("[z-a]", "k"), "a range written backwards");
        assert!(!m("[]]", "]"), "an empty class matches nothing");
        assert!(m("[^]", "x"), "an empty negated class matches any byte");
        assert!(m("[abc", "a"), "a class never closed runs to the end");
        assert!(m("[a-", "a"));
        assert!(!m("[abc", "ab"));
        assert!(!m("[", "a"));
        assert!(m("[\\]]", "]"));
    }

    #[test]
    fn escapes() {
        assert!(m("\\*", "*"));
        assert!(!m("\\*", "a"));
        assert!(m("\\a", "a"));
        assert!(m("a\\", "a\\"), "a trailing backslash stands for itself");
        assert!(!m("a\\", "a"));
    }

    #[test]
    fn case_insensitive() {
        assert!(glob_match(b"Q.P?SH", b"q.push", true));
        assert!(glob_match(b"[A-C]*", b"bit", true));
        assert!(!glob_match(b"Q.P?SH", b"q.push", false));
    }
}
