//! Redis's glob patterns (`PSUBSCRIBE`, `PUBSUB CHANNELS`, `CONFIG GET`): `*`, `?`, `[abc]`,
//! `[a-z]`, `[^x]`, and `\` to take the next character as it is.
//!
//! Patterns come from clients and a pattern subscription is tried against every published
//! channel, so matching must not go exponential on `*a*a*a*…b`: the pattern is read into tokens
//! that each match one byte (or a `*`), and the match backtracks only to the last `*` seen, which
//! keeps it within pattern length × text length steps. Every case Redis's `stringmatchlen`
//! decides, this decides the same way, an unclosed `[` included (the rest of the pattern is the
//! class).

/// Whether `text` matches `pattern`; `nocase` compares ASCII letters without case, as `CONFIG GET`
/// does (pub/sub patterns are case-sensitive).
pub fn matches(pattern: &[u8], text: &[u8], nocase: bool) -> bool {
    let tokens = tokens(pattern);
    let one = |token: &Token, byte: u8| token.matches(byte, nocase);
    // The classic two cursors: on a mismatch, go back to just after the last `*` and let it
    // swallow one more byte of the text.
    let (mut t, mut s) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while s < text.len() {
        match tokens.get(t) {
            Some(Token::Star) => {
                star = Some((t, s));
                t += 1;
            }
            Some(token) if one(token, text[s]) => {
                t += 1;
                s += 1;
            }
            _ => match star {
                Some((star_t, star_s)) => {
                    t = star_t + 1;
                    s = star_s + 1;
                    star = Some((star_t, star_s + 1));
                }
                None => return false,
            },
        }
    }
    tokens[t..].iter().all(|token| matches!(token, Token::Star))
}

/// One step of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// Any run of bytes, empty included.
    Star,
    /// Any one byte.
    Any,
    Byte(u8),
    /// `[...]`: single bytes and inclusive ranges; `negate` for `[^...]`.
    Class {
        negate: bool,
        bytes: Vec<u8>,
        ranges: Vec<(u8, u8)>,
    },
}

impl Token {
    fn matches(&self, byte: u8, nocase: bool) -> bool {
        let fold = |b: u8| if nocase { b.to_ascii_lowercase() } else { b };
        match self {
            Token::Star | Token::Any => true,
            Token::Byte(b) => fold(*b) == fold(byte),
            Token::Class { negate, bytes, ranges } => {
                let byte = fold(byte);
                let hit = bytes.iter().any(|&b| fold(b) == byte)
                    || ranges.iter().any(|&(low, high)| {
                        let (low, high) = (fold(low), fold(high));
                        (low.min(high)..=low.max(high)).contains(&byte)
                    });
                hit != *negate
            }
        }
    }
}

fn tokens(pattern: &[u8]) -> Vec<Token> {
    let mut out = Vec::with_capacity(pattern.len());
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            // Consecutive stars are one star.
            b'*' if out.last() == Some(&Token::Star) => {}
            b'*' => out.push(Token::Star),
            b'?' => out.push(Token::Any),
            b'\\' if i + 1 < pattern.len() => {
                i += 1;
                out.push(Token::Byte(pattern[i]));
            }
            b'[' => {
                let (token, next) = class(pattern, i + 1);
                out.push(token);
                i = next;
                continue;
            }
            b => out.push(Token::Byte(b)),
        }
        i += 1;
    }
    out
}

/// The class starting at `pattern[start]` (just after the `[`), and where the pattern goes on.
fn class(pattern: &[u8], start: usize) -> (Token, usize) {
    let mut i = start;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let (mut bytes, mut ranges) = (Vec::new(), Vec::new());
    while i < pattern.len() {
        match pattern[i] {
            b']' => return (Token::Class { negate, bytes, ranges }, i + 1),
            b'\\' if i + 1 < pattern.len() => {
                bytes.push(pattern[i + 1]);
                i += 2;
            }
            low if i + 2 < pattern.len() && pattern[i + 1] == b'-' => {
                ranges.push((low, pattern[i + 2]));
                i += 3;
            }
            b => {
                bytes.push(b);
                i += 1;
            }
        }
    }
    // Unclosed: the rest of the pattern was the class, as in Redis.
    (Token::Class { negate, bytes, ranges }, i)
}

#[cfg(test)]
mod tests {
    use super::matches;

    fn m(pattern: &str, text: &str) -> bool {
        matches(pattern.as_bytes(), text.as_bytes(), false)
    }

    #[test]
    fn stars_and_question_marks() {
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("news.*", "news.sport"));
        assert!(m("news.*", "news."));
        assert!(!m("news.*", "news"));
        assert!(m("h?llo", "hello"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("*a*b", "xxaxxb"));
        assert!(!m("*a*b", "xxaxxbc"));
        assert!(m("a**b", "ab"));
        assert!(!m("", "a"));
        assert!(m("", ""));
    }

    #[test]
    fn classes_ranges_negation_and_escapes() {
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(m("h[b-a]llo", "hallo"), "a reversed range is swapped");
        assert!(!m("h[a-b]llo", "hcllo"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("[\\]]", "]"));
        assert!(m("[abc", "a"), "an unclosed class takes the rest of the pattern, as Redis does");
        assert!(m("x\\", "x\\"), "a trailing backslash is itself");
    }

    #[test]
    fn case() {
        assert!(!m("News", "news"));
        assert!(matches(b"MAX*", b"maxmemory", true));
        assert!(matches(b"[A-Z]axclients", b"maxclients", true));
    }

    #[test]
    fn a_hostile_pattern_stays_linear_in_its_text() {
        // Exponential with naive recursion; here pattern × text steps.
        let pattern = "*a".repeat(40) + "b";
        let text = "a".repeat(4000);
        assert!(!m(&pattern, &text));
    }
}
