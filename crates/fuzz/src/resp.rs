//! The RESP request parser, the command table behind it, and the reply parser.

use bytes::BytesMut;
use turnstile_core::{Command, HostId, Reply, State};
use turnstile_resp::cmd::{self, Action};
use turnstile_resp::{
    Frame, Limits, Protocol, ProtocolError, Request, decode_request, parse_frame, parse_request,
};

/// Small limits, so that inputs a fuzzer can make reach every "too long" and "too many" branch.
fn limits() -> Limits {
    Limits { max_bulk_len: 512, max_args: 16, max_inline_len: 256 }
}

/// The requests in `input`, read as a server reads them: every request, then the error (if any)
/// that stopped the reading. Bytes of an unfinished request are left over.
type Outcome = (Vec<Request>, Option<ProtocolError>);

/// RESP requests from arbitrary bytes. The first byte picks where the bytes are split in two
/// reads, and the limits (default or small).
///
/// Asserts: the requests and the error are the same however the bytes are split, and the same
/// from `decode_request` (zero copy) and `parse_request` (copying); every request, encoded
/// again as a multibulk, parses back to itself using all its bytes; the command table parses
/// it without panicking, and what it makes of it applies to a state whose invariants hold and
/// whose reply renders. The same bytes read as a reply: any frame parsed encodes and parses
/// back to the same bytes.
pub fn resp_request(data: &[u8]) {
    let (c, input) = crate::control(data);
    let limits = if c & 1 == 0 { limits() } else { Limits::default() };
    let whole = decode_all(&[input], &limits);
    let cut = crate::split_point(c, input.len());
    let split = decode_all(&[&input[..cut], &input[cut..]], &limits);
    assert_eq!(whole, split, "the requests depend on how the bytes were split (at {cut})");
    assert_eq!(whole, parse_all(input, &limits), "decode_request and parse_request disagree");

    let mut state = State::new();
    let Reply::Session(session) = crate::apply_checked(
        &mut state,
        1,
        Command::OpenSession { host: HostId(1), secret: 7, timeout: 10_000 },
    ) else {
        panic!("a session opens in an empty state");
    };
    for request in &whole.0 {
        round_trip(request, &limits);
        run(&mut state, session, request);
    }
    replies(input);
}

/// Reads every request from `reads`, fed one after the other to one buffer.
fn decode_all(reads: &[&[u8]], limits: &Limits) -> Outcome {
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            match decode_request(&mut buf, limits) {
                Ok(Some(request)) => {
                    assert!(!request.args.is_empty(), "a request has a command name");
                    requests.push(request);
                }
                Ok(None) => break,
                Err(e) => return (requests, Some(e)),
            }
        }
    }
    (requests, None)
}

/// [`decode_all`] with `parse_request` on one buffer.
fn parse_all(input: &[u8], limits: &Limits) -> Outcome {
    let mut requests = Vec::new();
    let mut at = 0;
    loop {
        match parse_request(&input[at..], limits) {
            Ok(Some((request, used))) => {
                assert!(used > 0 && at + used <= input.len(), "used {used} bytes at {at}");
                at += used;
                requests.push(request);
            }
            Ok(None) => return (requests, None),
            Err(e) => return (requests, Some(e)),
        }
    }
}

/// Encodes `request` as a client library would (an array of bulk strings) and parses it back.
fn round_trip(request: &Request, limits: &Limits) {
    let mut encoded = BytesMut::new();
    Frame::Array(request.args.iter().cloned().map(Frame::Bulk).collect())
        .encode(Protocol::Resp2, &mut encoded);
    match parse_request(&encoded, limits) {
        Ok(Some((again, used))) => {
            assert_eq!(&again, request, "a request encoded again parses differently");
            assert_eq!(used, encoded.len(), "a request encoded again leaves bytes over");
        }
        // An inline request may hold more than a multibulk of the same limits allows: each
        // argument at most the line's length, but a bulk's limit can be lower.
        Err(ProtocolError::BulkTooLarge { .. }) => {}
        other => panic!("a request encoded again does not parse: {other:?}"),
    }
}

/// What the server would do with `request`, done on `state` for `session`.
fn run(state: &mut State, session: turnstile_core::SessionId, request: &Request) {
    let _ = cmd::command_name(&request.args);
    let (reply, shape) = match cmd::parse(&request.args) {
        Ok(Action::Write { mut cmd, shape }) => {
            if let Some(slot @ None) = cmd.session_mut() {
                *slot = Some(session);
            }
            cmd.names(&mut |_, _| {});
            let _ = (cmd.payload_len(), cmd.message_len(), cmd.may_wait());
            let now = state.clock() + 1;
            (crate::apply_checked(state, now, cmd), shape)
        }
        Ok(Action::Read { query, shape }) => (state.query(state.clock(), query), shape),
        Ok(Action::Connection(_)) => return,
        Err(frame) => {
            assert!(matches!(frame, Frame::Error(_)), "a refused request is answered by an error: {frame:?}");
            return;
        }
    };
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let mut out = BytesMut::new();
        cmd::render(shape, reply.clone(), protocol).encode(protocol, &mut out);
        match parse_frame(&out) {
            Ok(Some((_, used))) => assert_eq!(used, out.len(), "a rendered reply leaves bytes over"),
            other => panic!("a rendered reply does not parse back: {other:?}"),
        }
    }
}

/// The input read as replies, as the client reads them: each frame found encodes in RESP3 and
/// parses back to the same bytes.
fn replies(input: &[u8]) {
    let mut at = 0;
    while let Ok(Some((frame, used))) = parse_frame(&input[at..]) {
        assert!(used > 0 && at + used <= input.len());
        at += used;
        let mut encoded = BytesMut::new();
        frame.encode(Protocol::Resp3, &mut encoded);
        let (again, used) = match parse_frame(&encoded) {
            Ok(Some(parsed)) => parsed,
            other => panic!("{frame:?} encoded as {encoded:?} does not parse back: {other:?}"),
        };
        assert_eq!(used, encoded.len(), "{frame:?}: bytes over after parsing it back");
        let mut twice = BytesMut::new();
        again.encode(Protocol::Resp3, &mut twice);
        assert_eq!(encoded, twice, "{frame:?} changes when encoded and parsed again");
    }
}
