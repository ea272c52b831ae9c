//! Client → server: turning buffered bytes into [`Request`]s.
//!
//! ```text
//!  buf ──first byte──┬─ '*' ─► multibulk: *N\r\n then N × $len\r\n<len bytes>\r\n
//!                    └─ else ► inline:    one line, split like redis-cli/telnet send it
//!  each way ends in  Ok(None)  need more bytes (nothing consumed)
//!                    Err(e)    malformed: reply "-ERR {e}" and close, as Redis does
//!                    a Request and how many bytes it used
//! ```
//!
//! The scan first checks that a whole request is there and only then builds the arguments
//! (walking a multibulk request's headers a second time, which costs less than keeping every
//! argument's place in a vector of its own), so [`decode_request`] can cut them out of the read
//! buffer without copying. Nothing is ever allocated according to a length the client
//! announced: a `*1000000000` header costs as much as the bytes that actually arrived.

mod inline;

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};

use crate::ProtocolError;
use crate::wire::{blob_end, line_end, parse_int, parse_len};

/// One command from a client: its arguments, the command name first. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Arguments exactly as sent; when decoded by [`decode_request`] they share the read
    /// buffer's memory.
    pub args: Vec<Bytes>,
}

/// What a client may make the parser hold or allocate. The defaults fit Turnstile, whose
/// payloads are queue messages and lock names, not Redis values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest bulk argument, in bytes (Redis: `proto-max-bulk-len`). Default 16 MiB.
    pub max_bulk_len: usize,
    /// Most arguments in one multibulk request (Redis's fixed 1024 × 1024). Default 1,048,576.
    pub max_args: usize,
    /// Longest inline command line, and longest `*N`/`$N` header line (Redis's
    /// `PROTO_INLINE_MAX_SIZE`). Default 64 KiB.
    pub max_inline_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bulk_len: 16 * 1024 * 1024, max_args: 1024 * 1024, max_inline_len: 64 * 1024 }
    }
}

/// Cap on the argument vector's initial capacity: past it, the vector grows only as fast as
/// arguments really arrive.
/// The outcome of scanning one complete request.
#[derive(Debug)]
enum Scanned {
    /// `*0`, `*-1` or a blank inline line of this many bytes: Redis drops those silently.
    Skip(usize),
    /// A multibulk request of `count` arguments using `used` bytes, the first argument's header
    /// at `first`; [`bulk_args`] finds the arguments.
    Multibulk { count: usize, first: usize, used: usize },
    /// An inline request's arguments (quote unescaping may have rewritten them) and the bytes it
    /// used.
    Inline(Vec<Vec<u8>>, usize),
}

/// Parses the first request in `buf`, copying its arguments. Returns the request and the
/// bytes it used, counting any empty requests skipped before it.
///
/// `Ok(None)` means more bytes are needed. Empty requests before an incomplete one are not
/// reported as consumed, so a read loop should prefer [`decode_request`], which drops them.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Option<(Request, usize)>, ProtocolError> {
    let mut skipped = 0;
    loop {
        let rest = buf.get(skipped..).unwrap_or_default();
        match scan(rest, limits)? {
            None => return Ok(None),
            Some(Scanned::Skip(used)) => skipped += used,
            Some(Scanned::Multibulk { count, first, used }) => {
                let args =
                    bulk_args(rest, first, count, limits).map(|range| Bytes::copy_from_slice(&rest[range]));
                return Ok(Some((Request { args: args.collect() }, skipped + used)));
            }
            Some(Scanned::Inline(args, used)) => {
                let args = args.into_iter().map(Bytes::from).collect();
                return Ok(Some((Request { args }, skipped + used)));
            }
        }
    }
}

/// Takes the first request off the front of a read buffer, without copying multibulk
/// arguments: they become slices of the request's own frozen bytes. Empty requests in front
/// of it are dropped from `buf` too. `Ok(None)` leaves `buf` holding an incomplete request.
///
/// ```
/// use bytes::BytesMut;
/// use turnstile_resp::{Limits, decode_request};
///
/// let mut buf = BytesMut::from(&b"*1\r\n$4\r\nPING\r\nGET"[..]);
/// let request = decode_request(&mut buf, &Limits::default()).unwrap().unwrap();
/// assert_eq!(request.args, vec!["PING"]);
/// assert_eq!(&buf[..], b"GET"); // incomplete: wait for more bytes
/// assert_eq!(decode_request(&mut buf, &Limits::default()), Ok(None));
/// ```
pub fn decode_request(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Request>, ProtocolError> {
    loop {
        match scan(buf, limits)? {
            None => return Ok(None),
            Some(Scanned::Skip(used)) => buf.advance(used),
            Some(Scanned::Multibulk { count, first, used }) => {
                let frame = buf.split_to(used).freeze();
                let args = bulk_args(&frame, first, count, limits).map(|range| frame.slice(range)).collect();
                return Ok(Some(Request { args }));
            }
            Some(Scanned::Inline(args, used)) => {
                buf.advance(used);
                return Ok(Some(Request { args: args.into_iter().map(Bytes::from).collect() }));
            }
        }
    }
}

fn scan(buf: &[u8], limits: &Limits) -> Result<Option<Scanned>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => scan_multibulk(buf, limits),
        Some(_) => scan_inline(buf, limits),
    }
}

fn scan_multibulk(buf: &[u8], limits: &Limits) -> Result<Option<Scanned>, ProtocolError> {
    let Some(cr) = line_end(buf, 1, ProtocolError::InvalidMultibulkLength)? else {
        return too_long(buf.len(), limits, ProtocolError::TooBigMultibulkCount);
    };
    let count = parse_int(&buf[1..cr]).ok_or(ProtocolError::InvalidMultibulkLength)?;
    let mut pos = cr + 2;
    let Ok(count) = usize::try_from(count) else { return Ok(Some(Scanned::Skip(pos))) };
    if count == 0 {
        return Ok(Some(Scanned::Skip(pos)));
    }
    if count > limits.max_args {
        return Err(ProtocolError::TooManyArgs { max: limits.max_args });
    }
    let first = pos;
    for _ in 0..count {
        let Some((_, next)) = bulk_at(buf, pos, limits)? else { return Ok(None) };
        pos = next;
    }
    Ok(Some(Scanned::Multibulk { count, first, used: pos }))
}

/// The bulk argument whose `$` header starts at `pos`: where its bytes are and where the next
/// header starts. `Ok(None)` while it has not all arrived.
fn bulk_at(buf: &[u8], pos: usize, limits: &Limits) -> Result<Option<(Range<usize>, usize)>, ProtocolError> {
    match buf.get(pos) {
        None => return Ok(None),
        Some(b'$') => {}
        Some(&got) => return Err(ProtocolError::ExpectedBulk { got }),
    }
    let Some(cr) = line_end(buf, pos + 1, ProtocolError::InvalidBulkLength)? else {
        return too_long(buf.len() - pos, limits, ProtocolError::TooBigBulkCount);
    };
    let len = parse_len(&buf[pos + 1..cr]).ok_or(ProtocolError::InvalidBulkLength)?;
    if len > limits.max_bulk_len {
        return Err(ProtocolError::BulkTooLarge { max: limits.max_bulk_len });
    }
    let start = cr + 2;
    let Some(next) = blob_end(buf, start, len, ProtocolError::MissingBulkTerminator)? else {
        return Ok(None);
    };
    Ok(Some((start..start + len, next)))
}

/// The arguments of a multibulk request [`scan_multibulk`] accepted in `frame`: its headers are
/// walked again with the same rules, so each is found.
fn bulk_args<'a>(
    frame: &'a [u8],
    first: usize,
    count: usize,
    limits: &'a Limits,
) -> impl Iterator<Item = Range<usize>> + 'a {
    let mut pos = first;
    (0..count).map(move |_| {
        let (range, next) = bulk_at(frame, pos, limits)
            .ok()
            .flatten()
            .expect("scan_multibulk accepted every argument of this request");
        pos = next;
        range
    })
}

fn scan_inline(buf: &[u8], limits: &Limits) -> Result<Option<Scanned>, ProtocolError> {
    let Some(newline) = buf.iter().position(|&b| b == b'\n') else {
        return too_long(buf.len(), limits, ProtocolError::TooBigInlineRequest);
    };
    if newline > limits.max_inline_len {
        return Err(ProtocolError::TooBigInlineRequest);
    }
    let line = &buf[..newline];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let args = inline::split_args(line).ok_or(ProtocolError::UnbalancedQuotes)?;
    if args.is_empty() {
        return Ok(Some(Scanned::Skip(newline + 1)));
    }
    if args.len() > limits.max_args {
        return Err(ProtocolError::TooManyArgs { max: limits.max_args });
    }
    Ok(Some(Scanned::Inline(args, newline + 1)))
}

/// An unfinished line: wait for more bytes unless it is already longer than any valid one.
fn too_long<T>(unfinished: usize, limits: &Limits, err: ProtocolError) -> Result<Option<T>, ProtocolError> {
    if unfinished > limits.max_inline_len { Err(err) } else { Ok(None) }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{Frame, Protocol};

    fn args(request: &Request) -> Vec<&[u8]> {
        request.args.iter().map(|a| &a[..]).collect()
    }

    /// A parse result with plain vectors for arguments, so expectations are short to write.
    type Parsed = Result<Option<(Vec<Vec<u8>>, usize)>, ProtocolError>;

    fn parse(input: &[u8]) -> Parsed {
        parse_with(input, &Limits::default())
    }

    fn parse_with(input: &[u8], limits: &Limits) -> Parsed {
        parse_request(input, limits)
            .map(|parsed| parsed.map(|(r, used)| (r.args.iter().map(|a| a.to_vec()).collect(), used)))
    }

    fn owned(args: &[&str]) -> Vec<Vec<u8>> {
        args.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn multibulk_and_inline() {
        let set = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\na\r\nb\0\r\n";
        assert_eq!(
            parse(set),
            Ok(Some((vec![b"SET".to_vec(), b"k".to_vec(), b"a\r\nb\0".to_vec()], set.len())))
        );
        assert_eq!(parse(b"PING\r\n"), Ok(Some((owned(&["PING"]), 6))));
        assert_eq!(parse(b"PING\n"), Ok(Some((owned(&["PING"]), 5))));
        assert_eq!(parse(b"set k \"a b\"\r\n"), Ok(Some((owned(&["set", "k", "a b"]), 13))));
        assert_eq!(parse(b"*1\r\n$0\r\n\r\n"), Ok(Some((owned(&[""]), 10))));
    }

    #[test]
    fn empty_requests_are_skipped() {
        assert_eq!(parse(b"*0\r\n*-1\r\n\r\n  \n*1\r\n$4\r\nPING\r\n"), Ok(Some((owned(&["PING"]), 28))));
        assert_eq!(parse(b"*0\r\n"), Ok(None));
        let mut buf = BytesMut::from(&b"*0\r\n\r\n*-5\r\n*1\r\n$1"[..]);
        assert_eq!(decode_request(&mut buf, &Limits::default()), Ok(None));
        assert_eq!(&buf[..], b"*1\r\n$1", "skipped requests are dropped from the buffer");
    }

    #[test]
    fn pipelined_requests_report_what_each_used() {
        let input = b"*1\r\n$4\r\nPING\r\nECHO hi\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPI";
        let mut at = 0;
        let mut seen = Vec::new();
        while let Some((request, used)) = parse(&input[at..]).unwrap() {
            seen.push((request, used));
            at += used;
        }
        assert_eq!(
            seen,
            vec![(owned(&["PING"]), 14), (owned(&["ECHO", "hi"]), 9), (owned(&["GET", "k"]), 20)]
        );
        assert_eq!(&input[at..], b"*1\r\n$4\r\nPI");

        let mut buf = BytesMut::from(&input[..]);
        let limits = Limits::default();
        let decoded: Vec<Request> =
            std::iter::from_fn(|| decode_request(&mut buf, &limits).unwrap()).collect();
        assert_eq!(
            decoded.iter().map(args).collect::<Vec<_>>(),
            vec![vec![&b"PING"[..]], vec![b"ECHO", b"hi"], vec![b"GET", b"k"]]
        );
        assert_eq!(&buf[..], b"*1\r\n$4\r\nPI");
    }

    #[test]
    fn every_truncation_is_incomplete() {
        let inputs: [&[u8]; 5] = [
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\n0123456789\r\n",
            b"*1\r\n$0\r\n\r\n",
            b"*0\r\n*1\r\n$4\r\nPING\r\n",
            b"SET k \"a b\"\r\n",
            b"\r\nPING\n",
        ];
        for input in inputs {
            for cut in 0..input.len() {
                assert_eq!(
                    parse(&input[..cut]),
                    Ok(None),
                    "{:?} cut at {cut}",
                    input.escape_ascii().to_string()
                );
            }
            assert_eq!(parse(input).map(|p| p.map(|(_, used)| used)), Ok(Some(input.len())));
        }
    }

    #[test]
    fn malformed_requests_get_redis_errors() {
        use ProtocolError::*;
        let cases: [(&[u8], ProtocolError); 13] = [
            (b"*x\r\n", InvalidMultibulkLength),
            (b"*01\r\n", InvalidMultibulkLength),
            (b"*1\rx", InvalidMultibulkLength),
            (b"*99999999999999999999\r\n", InvalidMultibulkLength),
            (b"*1\r\nx", ExpectedBulk { got: b'x' }),
            (b"*2\r\n$1\r\na\r\n:1\r\n", ExpectedBulk { got: b':' }),
            (b"*1\r\n$-1\r\n", InvalidBulkLength),
            (b"*1\r\n$ 1\r\n", InvalidBulkLength),
            (b"*1\r\n$1\rx", InvalidBulkLength),
            (b"*1\r\n$1\r\nab", MissingBulkTerminator),
            (b"*1\r\n$1\r\na\rb", MissingBulkTerminator),
            (b"GET \"k\r\n", UnbalancedQuotes),
            (b"GET 'k'x\r\n", UnbalancedQuotes),
        ];
        for (input, expected) in cases {
            assert_eq!(parse(input), Err(expected), "{:?}", input.escape_ascii().to_string());
        }
        assert_eq!(ExpectedBulk { got: b'x' }.to_string(), "Protocol error: expected '$', got 'x'");
        assert_eq!(InvalidBulkLength.to_string(), "Protocol error: invalid bulk length");
        assert_eq!(UnbalancedQuotes.to_string(), "Protocol error: unbalanced quotes in request");
    }

    #[test]
    fn limits_are_enforced() {
        let limits = Limits { max_bulk_len: 4, max_args: 2, max_inline_len: 16 };
        assert_eq!(parse_with(b"*1\r\n$4\r\nabcd\r\n", &limits).unwrap().unwrap().1, 14);
        assert_eq!(parse_with(b"*1\r\n$5\r\n", &limits), Err(ProtocolError::BulkTooLarge { max: 4 }));
        assert_eq!(parse_with(b"*2\r\n", &limits), Ok(None));
        assert_eq!(parse_with(b"*3\r\n", &limits), Err(ProtocolError::TooManyArgs { max: 2 }));
        assert_eq!(parse_with(b"a b c\r\n", &limits), Err(ProtocolError::TooManyArgs { max: 2 }));
        assert_eq!(
            ProtocolError::BulkTooLarge { max: 4 }.to_string(),
            "Protocol error: invalid bulk length: value is larger than max-payload (4 bytes)"
        );
        // Lines: up to max_inline_len bytes may wait for their end; one more is refused.
        assert_eq!(parse_with(&[b'a'; 16], &limits), Ok(None));
        assert_eq!(parse_with(&[b'a'; 17], &limits), Err(ProtocolError::TooBigInlineRequest));
        let long_line = [&[b'a'; 17][..], b"\r\n"].concat();
        assert_eq!(parse_with(&long_line, &limits), Err(ProtocolError::TooBigInlineRequest));
        assert_eq!(parse_with(b"*0000000000000000", &limits), Err(ProtocolError::TooBigMultibulkCount));
        assert_eq!(parse_with(b"*1\r\n$0000000000000000", &limits), Err(ProtocolError::TooBigBulkCount));

        let defaults = Limits::default();
        assert_eq!(parse_with(b"*1048577\r\n", &defaults), Err(ProtocolError::TooManyArgs { max: 1 << 20 }));
        assert_eq!(
            parse_with(b"*1\r\n$16777217\r\n", &defaults),
            Err(ProtocolError::BulkTooLarge { max: 16 << 20 })
        );
        // A huge announced count within the limit waits for bytes instead of reserving memory.
        assert_eq!(parse_with(b"*1048576\r\n$1\r\na\r\n", &defaults), Ok(None));
    }

    #[test]
    fn decoded_arguments_share_the_read_buffer() {
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"[..]);
        let start = buf.as_ptr() as usize;
        let request = decode_request(&mut buf, &Limits::default()).unwrap().unwrap();
        assert_eq!(request.args[0].as_ptr() as usize, start + 8, "GET was not copied");
        assert!(buf.is_empty());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
            prefix in prop_oneof![Just(&b""[..]), Just(&b"*"[..]), Just(&b"*2\r\n$"[..]), Just(&b"\""[..])],
        ) {
            let input = [prefix, &bytes[..]].concat();
            for limits in [Limits::default(), Limits { max_bulk_len: 8, max_args: 3, max_inline_len: 12 }] {
                if let Ok(Some((_, used))) = parse_request(&input, &limits) {
                    prop_assert!(used > 0 && used <= input.len());
                }
                let mut buf = BytesMut::from(&input[..]);
                let before = buf.len();
                let decoded = decode_request(&mut buf, &limits);
                prop_assert!(buf.len() <= before);
                if let Ok(Some(request)) = decoded {
                    prop_assert!(!request.args.is_empty());
                }
            }
        }

        /// What a client library sends (an array of bulk strings) parses back to its arguments.
        #[test]
        fn encoded_commands_parse_back(
            command in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8),
        ) {
            let mut out = BytesMut::new();
            Frame::Array(command.iter().map(|a| Frame::bulk(a.clone())).collect()).encode(Protocol::Resp2, &mut out);
            out.extend_from_slice(b"*1\r\n");
            prop_assert_eq!(parse(&out), Ok(Some((command, out.len() - 4))));
        }
    }
}
