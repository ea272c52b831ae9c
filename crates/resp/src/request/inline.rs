//! Inline commands (`SET k "a b"\r\n`): what telnet users and `redis-cli` in some modes send.

/// Splits an inline command line into arguments like Redis's `sdssplitargs`: whitespace
/// separates, `"..."` understands `\n \r \t \b \a \xHH` and `\<any>`, `'...'` understands
/// `\'`, and a closing quote must be followed by whitespace or the end of the line.
/// `None` means unbalanced quotes.
///
/// One difference: C stops at a NUL byte, this keeps it as an ordinary byte.
pub(super) fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while line.get(i).is_some_and(|&b| is_space(b)) {
            i += 1;
        }
        if i >= line.len() {
            return Some(args);
        }
        let mut arg = Vec::new();
        let mut quote = None;
        loop {
            let Some(&c) = line.get(i) else {
                // End of line: fine between arguments, unbalanced inside quotes.
                if quote.is_some() {
                    return None;
                }
                break;
            };
            i += 1;
            match (quote, c) {
                (None, c) if is_space(c) => break,
                (None, b'"' | b'\'') => quote = Some(c),
                (None, c) => arg.push(c),
                (Some(q), c) if c == q => {
                    if line.get(i).is_some_and(|&b| !is_space(b)) {
                        return None;
                    }
                    break;
                }
                (Some(b'"'), b'\\') => {
                    if let Some(byte) = hex_escape(&line[i..]) {
                        arg.push(byte);
                        i += 3;
                        continue;
                    }
                    match line.get(i) {
                        Some(&escaped) => {
                            arg.push(match escaped {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 0x08,
                                b'a' => 0x07,
                                other => other,
                            });
                            i += 1;
                        }
                        None => arg.push(c),
                    }
                }
                (Some(b'\''), b'\\') if line.get(i) == Some(&b'\'') => {
                    arg.push(b'\'');
                    i += 1;
                }
                (Some(_), c) => arg.push(c),
            }
        }
        args.push(arg);
    }
}

/// C's `isspace`.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// The byte of `xHH` (what follows a backslash), if `rest` starts with one.
fn hex_escape(rest: &[u8]) -> Option<u8> {
    let [b'x', hi, lo, ..] = *rest else { return None };
    let digit = |b: u8| char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok());
    Some((digit(hi)? << 4) | digit(lo)?)
}

#[cfg(test)]
mod tests {
    use super::split_args;

    fn split(line: &str) -> Option<Vec<String>> {
        split_args(line.as_bytes())
            .map(|args| args.into_iter().map(|a| String::from_utf8_lossy(&a).into_owned()).collect())
    }

    #[test]
    fn splits_like_sdssplitargs() {
        assert_eq!(split("  SET  k\tv "), Some(vec!["SET".into(), "k".into(), "v".into()]));
        assert_eq!(split(r#"SET "a b" 'c d'"#), Some(vec!["SET".into(), "a b".into(), "c d".into()]));
        assert_eq!(split(r#""\x41\x4a\n\t\\\"\q""#), Some(vec!["AJ\n\t\\\"q".into()]));
        assert_eq!(split(r#""\x4g""#), Some(vec!["x4g".into()]));
        assert_eq!(split(r"'it\'s' '\n'"), Some(vec!["it's".into(), "\\n".into()]));
        assert_eq!(split(r#"a"b c"d"#), None, "closing quote followed by a non-space");
        assert_eq!(split(r#"a"b c" d"#), Some(vec!["ab c".into(), "d".into()]));
        assert_eq!(split("\"\""), Some(vec![String::new()]));
        assert_eq!(split("   "), Some(vec![]));
    }

    #[test]
    fn unbalanced_quotes_are_refused() {
        for line in [r#"SET "a"#, "SET 'a", r#"SET "a\""#, r#""\"#, r"'\'"] {
            assert_eq!(split(line), None, "{line}");
        }
    }
}
