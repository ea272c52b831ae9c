//! Reading replies back into [`Frame`]s: for tests and for Turnstile's Rust client.

use bytes::Bytes;

use super::Frame;
use crate::ProtocolError;
use crate::wire::{blob_end, line_end, parse_int, parse_len};

/// How deep aggregates may nest in a reply before [`parse_frame`] refuses it. Parsing
/// recurses once per level, so this bounds the stack a peer can make us use.
pub const MAX_REPLY_DEPTH: usize = 128;

/// Parses the first reply in `buf`, RESP2 or RESP3, and returns it with the bytes it used.
/// `Ok(None)` means more bytes are needed.
///
/// Null (`$-1`, `_`) parses as [`Frame::Null`], `*-1` as [`Frame::NullArray`]; the RESP3
/// blob error `!` and attributes `|` are not supported.
///
/// ```
/// use turnstile_resp::{Frame, parse_frame};
///
/// assert_eq!(parse_frame(b"*2\r\n:1\r\n#t\r\n+next"), Ok(Some((
///     Frame::Array(vec![Frame::Integer(1), Frame::Boolean(true)]),
///     12,
/// ))));
/// assert_eq!(parse_frame(b"*2\r\n:1\r\n#"), Ok(None));
/// ```
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, ProtocolError> {
    frame_at(buf, 0, 0)
}

/// The frame starting at `pos`, and the offset just past it.
fn frame_at(buf: &[u8], pos: usize, depth: usize) -> Result<Option<(Frame, usize)>, ProtocolError> {
    let Some(&tag) = buf.get(pos) else { return Ok(None) };
    let what = match tag {
        b'+' => "simple string",
        b'-' => "error",
        b':' => "integer",
        b'$' => "bulk string",
        b'*' => "array",
        b'_' => "null",
        b',' => "double",
        b'#' => "boolean",
        b'(' => "big number",
        b'=' => "verbatim string",
        b'%' => "map",
        b'~' => "set",
        b'>' => "push",
        got => return Err(ProtocolError::UnknownReplyType { got }),
    };
    let invalid = ProtocolError::InvalidReply { what };
    let Some(cr) = line_end(buf, pos + 1, invalid.clone())? else { return Ok(None) };
    let line = &buf[pos + 1..cr];
    let next = cr + 2;
    let text = || std::str::from_utf8(line).map_err(|_| invalid.clone());
    let frame = match tag {
        b'+' => Frame::Simple(text()?.to_owned()),
        b'-' => Frame::Error(text()?.to_owned()),
        b':' => Frame::Integer(parse_int(line).ok_or(invalid)?),
        b'_' if line.is_empty() => Frame::Null,
        b',' => Frame::Double(text()?.parse().map_err(|_| invalid)?),
        b'#' if line == b"t" => Frame::Boolean(true),
        b'#' if line == b"f" => Frame::Boolean(false),
        b'(' if is_big_number(line) => Frame::BigNumber(text()?.to_owned()),
        b'$' if line == b"-1" => Frame::Null,
        b'*' if line == b"-1" => Frame::NullArray,
        b'$' | b'=' => {
            let len = parse_len(line).ok_or(invalid.clone())?;
            let Some(end) = blob_end(buf, next, len, invalid.clone())? else { return Ok(None) };
            let data = &buf[next..next + len];
            let frame = if tag == b'$' {
                Frame::Bulk(Bytes::copy_from_slice(data))
            } else {
                let [f0, f1, f2, b':', text @ ..] = data else { return Err(invalid) };
                Frame::Verbatim { format: [*f0, *f1, *f2], text: Bytes::copy_from_slice(text) }
            };
            return Ok(Some((frame, end)));
        }
        b'*' | b'~' | b'>' | b'%' => {
            if depth >= MAX_REPLY_DEPTH {
                return Err(ProtocolError::TooDeep { max: MAX_REPLY_DEPTH });
            }
            let count = parse_len(line).ok_or(invalid.clone())?;
            let items = if tag == b'%' { count.checked_mul(2).ok_or(invalid)? } else { count };
            let Some((items, end)) = frames_at(buf, next, items, depth + 1)? else { return Ok(None) };
            let frame = match tag {
                b'*' => Frame::Array(items),
                b'~' => Frame::Set(items),
                b'>' => Frame::Push(items),
                _ => {
                    let mut items = items.into_iter();
                    let mut pairs = Vec::with_capacity(count);
                    while let (Some(key), Some(value)) = (items.next(), items.next()) {
                        pairs.push((key, value));
                    }
                    Frame::Map(pairs)
                }
            };
            return Ok(Some((frame, end)));
        }
        _ => return Err(invalid),
    };
    Ok(Some((frame, next)))
}

/// `count` consecutive frames starting at `pos`. The vector grows as frames really parse,
/// never by the announced count: every frame takes at least three bytes, so capacity is
/// bounded by the bytes that arrived.
fn frames_at(
    buf: &[u8],
    mut pos: usize,
    count: usize,
    depth: usize,
) -> Result<Option<(Vec<Frame>, usize)>, ProtocolError> {
    let mut items = Vec::with_capacity(count.min(buf.len().saturating_sub(pos) / 3));
    for _ in 0..count {
        let Some((item, next)) = frame_at(buf, pos, depth)? else { return Ok(None) };
        items.push(item);
        pos = next;
    }
    Ok(Some((items, pos)))
}

fn is_big_number(line: &[u8]) -> bool {
    let digits = line.strip_prefix(b"-").unwrap_or(line);
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use proptest::prelude::*;

    use super::*;
    use crate::Protocol;

    fn encode(frame: &Frame, protocol: Protocol) -> BytesMut {
        let mut out = BytesMut::new();
        frame.encode(protocol, &mut out);
        out
    }

    /// What a RESP2 client sees of a frame: RESP3-only types folded the way `encode` folds them.
    fn as_resp2(frame: Frame) -> Frame {
        let all = |items: Vec<Frame>| items.into_iter().map(as_resp2).collect();
        match frame {
            Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => Frame::Array(all(items)),
            Frame::Map(pairs) => Frame::Array(all(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect())),
            Frame::Double(d) => Frame::bulk(crate::frame::double_text(d)),
            Frame::Boolean(b) => Frame::Integer(i64::from(b)),
            Frame::BigNumber(digits) => Frame::bulk(digits),
            Frame::Verbatim { text, .. } => Frame::Bulk(text),
            other => other,
        }
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        let line = "[^\r\n]{0,12}";
        let leaf = prop_oneof![
            line.prop_map(Frame::Simple),
            line.prop_map(Frame::Error),
            any::<i64>().prop_map(Frame::Integer),
            proptest::collection::vec(any::<u8>(), 0..24).prop_map(Frame::bulk),
            Just(Frame::Null),
            // NaN is left out only because NaN != NaN; its encoding is tested byte for byte.
            any::<f64>().prop_filter("NaN", |d| !d.is_nan()).prop_map(Frame::Double),
            any::<bool>().prop_map(Frame::Boolean),
            any::<i128>().prop_map(|n| Frame::BigNumber(n.to_string())),
            (prop_oneof![Just(*b"txt"), Just(*b"mkd")], proptest::collection::vec(any::<u8>(), 0..24))
                .prop_map(|(format, text)| Frame::Verbatim { format, text: text.into() }),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let items = proptest::collection::vec(inner.clone(), 0..6);
            prop_oneof![
                items.clone().prop_map(Frame::Array),
                items.clone().prop_map(Frame::Set),
                items.prop_map(Frame::Push),
                proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Frame::Map),
            ]
        })
    }

    proptest! {
        #[test]
        fn resp3_round_trips(frame in arb_frame()) {
            let mut bytes = encode(&frame, Protocol::Resp3);
            let len = bytes.len();
            bytes.extend_from_slice(b":1\r\n"); // the next reply must not be consumed
            prop_assert_eq!(parse_frame(&bytes), Ok(Some((frame, len))));
        }

        #[test]
        fn resp2_round_trips_to_the_folded_frame(frame in arb_frame()) {
            let bytes = encode(&frame, Protocol::Resp2);
            prop_assert_eq!(parse_frame(&bytes), Ok(Some((as_resp2(frame), bytes.len()))));
        }

        #[test]
        fn every_truncation_of_an_encoded_frame_is_incomplete(frame in arb_frame()) {
            for protocol in [Protocol::Resp2, Protocol::Resp3] {
                let bytes = encode(&frame, protocol);
                for cut in 0..bytes.len() {
                    prop_assert_eq!(parse_frame(&bytes[..cut]), Ok(None));
                }
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            if let Ok(Some((_, used))) = parse_frame(&bytes) {
                prop_assert!(used > 0 && used <= bytes.len());
            }
        }
    }

    #[test]
    fn parses_every_type_both_protocols_send() {
        let cases: [(&[u8], Frame); 8] = [
            (b"$-1\r\n", Frame::Null),
            (b"_\r\n", Frame::Null),
            (b"*-1\r\n", Frame::NullArray),
            (b"-ERR x\r\n", Frame::error("ERR", "x")),
            (b",nan\r\n", Frame::Double(f64::NAN)),
            (b",-inf\r\n", Frame::Double(f64::NEG_INFINITY)),
            (b"=7\r\ntxt:a b\r\n", Frame::Verbatim { format: *b"txt", text: "a b".into() }),
            (b"%1\r\n+a\r\n:1\r\n", Frame::Map(vec![(Frame::simple("a"), Frame::Integer(1))])),
        ];
        for (input, expected) in cases {
            let (frame, used) = parse_frame(input).unwrap().unwrap();
            assert_eq!(used, input.len());
            // Compare encodings: NaN != NaN as f64, but its bytes are equal.
            assert_eq!(encode(&frame, Protocol::Resp3), encode(&expected, Protocol::Resp3));
        }
    }

    #[test]
    fn malformed_replies_are_errors() {
        let invalid = |what| ProtocolError::InvalidReply { what };
        let cases: [(&[u8], ProtocolError); 11] = [
            (b"?\r\n", ProtocolError::UnknownReplyType { got: b'?' }),
            (b":1.5\r\n", invalid("integer")),
            (b"_x\r\n", invalid("null")),
            (b"#x\r\n", invalid("boolean")),
            (b",one\r\n", invalid("double")),
            (b"(12a\r\n", invalid("big number")),
            (b"$-2\r\n", invalid("bulk string")),
            (b"$1\r\nab", invalid("bulk string")),
            (b"=3\r\ntxt\r\n", invalid("verbatim string")),
            (b"+\xff\r\n", invalid("simple string")),
            (b"*1\rx", invalid("array")),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_frame(input), Err(expected), "{:?}", input.escape_ascii().to_string());
        }
    }

    #[test]
    fn announced_sizes_cost_nothing_until_the_bytes_arrive() {
        assert_eq!(parse_frame(b"*9223372036854775807\r\n:1\r\n"), Ok(None));
        assert_eq!(parse_frame(b"%9223372036854775807\r\n+k\r\n"), Ok(None));
        assert_eq!(parse_frame(b"$9223372036854775807\r\nabc"), Ok(None));
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = b"*1\r\n".repeat(MAX_REPLY_DEPTH + 1);
        assert_eq!(parse_frame(&deep), Err(ProtocolError::TooDeep { max: MAX_REPLY_DEPTH }));
        let ok = [b"*1\r\n".repeat(MAX_REPLY_DEPTH), b":1\r\n".to_vec()].concat();
        assert!(matches!(parse_frame(&ok), Ok(Some((_, used))) if used == ok.len()));
    }
}
