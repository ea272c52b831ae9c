//! RESP's wire syntax shared by requests and replies: CRLF-terminated lines, strict decimal
//! integers and length-prefixed blobs. Every function here takes untrusted bytes and an
//! offset, never indexes out of bounds, and tells "need more bytes" (`Ok(None)`) apart from
//! "cannot be RESP" (`Err`).

use crate::ProtocolError;

/// Index of the `\r` that ends the line starting at `from`, once its `\n` has arrived too.
/// A `\r` followed by anything but `\n` is `malformed`.
pub(crate) fn line_end(
    buf: &[u8],
    from: usize,
    malformed: ProtocolError,
) -> Result<Option<usize>, ProtocolError> {
    let Some(cr) = buf.get(from..).and_then(|rest| rest.iter().position(|&b| b == b'\r')) else {
        return Ok(None);
    };
    let cr = from + cr;
    match buf.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some(cr)),
        Some(_) => Err(malformed),
    }
}

/// Offset just past the CRLF that must follow `len` data bytes starting at `start`.
/// The terminator is checked byte by byte as it arrives, so a wrong length fails early.
pub(crate) fn blob_end(
    buf: &[u8],
    start: usize,
    len: usize,
    malformed: ProtocolError,
) -> Result<Option<usize>, ProtocolError> {
    let Some(end) = start.checked_add(len) else { return Err(malformed) };
    let tail = buf.get(end..).unwrap_or_default();
    let tail = &tail[..tail.len().min(2)];
    if !b"\r\n".starts_with(tail) {
        return Err(malformed);
    }
    Ok((tail.len() == 2).then_some(end + 2))
}

/// Parses a decimal integer as strictly as Redis's `string2ll`: optional `-`, no `+`, no
/// spaces, no leading zeros, no `-0`, no overflow.
pub(crate) fn parse_int(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    match digits {
        [] => return None,
        [b'0'] if !negative => return Some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    // Accumulate towards the sign so that i64::MIN, whose magnitude has no i64, parses.
    digits.iter().try_fold(0i64, |acc, &b| {
        let digit = i64::from(b.checked_sub(b'0').filter(|d| *d <= 9)?);
        let acc = acc.checked_mul(10)?;
        if negative { acc.checked_sub(digit) } else { acc.checked_add(digit) }
    })
}

/// Parses a length or count header value: like [`parse_int`], but only `0..` passes.
pub(crate) fn parse_len(text: &[u8]) -> Option<usize> {
    parse_int(text).and_then(|n| usize::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_int_is_as_strict_as_redis() {
        assert_eq!(parse_int(b"0"), Some(0));
        assert_eq!(parse_int(b"-1"), Some(-1));
        assert_eq!(parse_int(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [&b""[..], b"-", b"-0", b"01", b"+1", b" 1", b"1 ", b"1a", b"9223372036854775808"] {
            assert_eq!(parse_int(bad), None, "{:?}", bad.escape_ascii().to_string());
        }
        assert_eq!(parse_len(b"-1"), None);
    }

    #[test]
    fn blob_end_checks_the_terminator_as_it_arrives() {
        let err = ProtocolError::MissingBulkTerminator;
        assert_eq!(blob_end(b"ab", 0, 2, err.clone()), Ok(None));
        assert_eq!(blob_end(b"ab\r", 0, 2, err.clone()), Ok(None));
        assert_eq!(blob_end(b"ab\r\nxx", 0, 2, err.clone()), Ok(Some(4)));
        assert_eq!(blob_end(b"abX", 0, 2, err.clone()), Err(err.clone()));
        assert_eq!(blob_end(b"ab\rX", 0, 2, err.clone()), Err(err.clone()));
        assert_eq!(blob_end(b"", usize::MAX, 2, err.clone()), Err(err));
    }
}
