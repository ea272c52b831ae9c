//! Server → client: the [`Frame`] a reply is made of, and its bytes in RESP2 or RESP3.
//!
//! One `Frame` value serves both protocols; the connection's [`Protocol`] (set by `HELLO`)
//! picks the encoding. RESP3-only types fall back to what Redis sends a RESP2 client.

pub(crate) mod parse;

use bytes::{BufMut, Bytes, BytesMut};

/// The protocol version a connection speaks. RESP2 until the client sends `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

/// A reply, or part of one.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `+OK`. CR and LF are sent as spaces: a simple string cannot carry them.
    Simple(String),
    /// The full error text, prefix included: `ERR ...`, `WRONGTYPE ...`, `DEADLOCK ...`.
    /// CR and LF are sent as spaces.
    Error(String),
    Integer(i64),
    Bulk(Bytes),
    /// "No value": `$-1` in RESP2, `_` in RESP3.
    Null,
    /// The null *array* (`*-1`) that RESP2 uses for some timeouts; `_` in RESP3.
    NullArray,
    Array(Vec<Frame>),
    /// RESP3 map; a flat `[k1, v1, k2, v2, ...]` array in RESP2.
    Map(Vec<(Frame, Frame)>),
    /// RESP3 set; an array in RESP2.
    Set(Vec<Frame>),
    /// RESP3 double; its text as a bulk string in RESP2.
    Double(f64),
    /// RESP3 boolean; integer 1 or 0 in RESP2.
    Boolean(bool),
    /// RESP3 big number, as decimal digits with an optional `-`; a bulk string in RESP2.
    BigNumber(String),
    /// RESP3 verbatim string (`INFO`): a three-letter format such as `txt` and the text;
    /// just the text as a bulk string in RESP2.
    Verbatim {
        format: [u8; 3],
        text: Bytes,
    },
    /// RESP3 out-of-band push; an array in RESP2, as Redis sends pub/sub messages.
    Push(Vec<Frame>),
}

impl Frame {
    /// `+OK`.
    pub fn ok() -> Frame {
        Frame::Simple("OK".to_owned())
    }

    pub fn simple(text: impl Into<String>) -> Frame {
        Frame::Simple(text.into())
    }

    /// An error reply `-{prefix} {message}`, e.g. `Frame::error("WRONGTYPE", "...")`, or
    /// `Frame::error("ERR", &protocol_error)` for what Redis sends before closing.
    pub fn error(prefix: &str, message: impl std::fmt::Display) -> Frame {
        Frame::Error(format!("{prefix} {message}"))
    }

    pub fn bulk(bytes: impl Into<Bytes>) -> Frame {
        Frame::Bulk(bytes.into())
    }

    /// Appends this frame's bytes in `protocol` to `out`.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use turnstile_resp::{Frame, Protocol};
    ///
    /// let reply = Frame::Map(vec![(Frame::simple("mode"), Frame::simple("shared"))]);
    /// let mut out = BytesMut::new();
    /// reply.encode(Protocol::Resp2, &mut out);
    /// assert_eq!(&out[..], b"*2\r\n+mode\r\n+shared\r\n");
    /// out.clear();
    /// reply.encode(Protocol::Resp3, &mut out);
    /// assert_eq!(&out[..], b"%1\r\n+mode\r\n+shared\r\n");
    /// ```
    pub fn encode(&self, protocol: Protocol, out: &mut BytesMut) {
        let resp3 = protocol == Protocol::Resp3;
        match self {
            Frame::Simple(text) => put_simple(out, b'+', text.as_bytes()),
            Frame::Error(text) => put_simple(out, b'-', text.as_bytes()),
            Frame::Integer(n) => put_header(out, b':', *n),
            Frame::Bulk(bytes) => put_blob(out, b'$', bytes),
            Frame::Null if resp3 => out.put_slice(b"_\r\n"),
            Frame::Null => out.put_slice(b"$-1\r\n"),
            Frame::NullArray if resp3 => out.put_slice(b"_\r\n"),
            Frame::NullArray => out.put_slice(b"*-1\r\n"),
            Frame::Array(items) => put_aggregate(out, b'*', items, protocol),
            Frame::Set(items) => put_aggregate(out, if resp3 { b'~' } else { b'*' }, items, protocol),
            Frame::Push(items) => put_aggregate(out, if resp3 { b'>' } else { b'*' }, items, protocol),
            Frame::Map(pairs) => {
                if resp3 {
                    put_header(out, b'%', pairs.len());
                } else {
                    put_header(out, b'*', pairs.len().saturating_mul(2));
                }
                for (key, value) in pairs {
                    key.encode(protocol, out);
                    value.encode(protocol, out);
                }
            }
            Frame::Double(d) if resp3 => put_simple(out, b',', double_text(*d).as_bytes()),
            Frame::Double(d) => put_blob(out, b'$', double_text(*d).as_bytes()),
            Frame::Boolean(b) if resp3 => out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Frame::Boolean(b) => out.put_slice(if *b { b":1\r\n" } else { b":0\r\n" }),
            Frame::BigNumber(digits) if resp3 => put_simple(out, b'(', digits.as_bytes()),
            Frame::BigNumber(digits) => put_blob(out, b'$', digits.as_bytes()),
            Frame::Verbatim { format, text } if resp3 => {
                put_header(out, b'=', text.len().saturating_add(4));
                out.put_slice(format);
                out.put_u8(b':');
                out.put_slice(text);
                out.put_slice(b"\r\n");
            }
            Frame::Verbatim { text, .. } => put_blob(out, b'$', text),
        }
    }
}

/// A line-type frame. CR and LF would end the line early and desynchronise the client, so
/// they become spaces (Redis's `addReplyError` does the same).
fn put_simple(out: &mut BytesMut, tag: u8, text: &[u8]) {
    out.reserve(text.len() + 3);
    out.put_u8(tag);
    out.extend(text.iter().map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
    out.put_slice(b"\r\n");
}

/// `{tag}{n}\r\n`: integers and the length/count line of blobs and aggregates.
fn put_header(out: &mut BytesMut, tag: u8, n: impl std::fmt::Display) {
    use std::fmt::Write;
    out.put_u8(tag);
    // Writing to a BytesMut cannot fail: it grows as needed.
    let _ = write!(out, "{n}\r\n");
}

fn put_blob(out: &mut BytesMut, tag: u8, bytes: &[u8]) {
    put_header(out, tag, bytes.len());
    out.put_slice(bytes);
    out.put_slice(b"\r\n");
}

fn put_aggregate(out: &mut BytesMut, tag: u8, items: &[Frame], protocol: Protocol) {
    put_header(out, tag, items.len());
    for item in items {
        item.encode(protocol, out);
    }
}

/// Shortest text that parses back to the same `f64`; exponent notation only for very large or
/// small magnitudes, `inf`/`-inf`/`nan` as RESP3 spells them.
pub(crate) fn double_text(d: f64) -> String {
    if d.is_nan() {
        "nan".to_owned()
    } else if d.is_infinite() {
        if d > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else if d == 0.0 || (1e-4..1e16).contains(&d.abs()) {
        format!("{d}")
    } else {
        format!("{d:e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(frame: &Frame, protocol: Protocol) -> String {
        let mut out = BytesMut::new();
        frame.encode(protocol, &mut out);
        out.escape_ascii().to_string()
    }

    /// Every variant, byte for byte, in both protocols: (frame, RESP2, RESP3).
    #[test]
    fn exact_encodings() {
        let verbatim = Frame::Verbatim { format: *b"txt", text: Bytes::from_static(b"a\r\nb") };
        let cases: Vec<(Frame, &[u8], &[u8])> = vec![
            (Frame::ok(), b"+OK\r\n", b"+OK\r\n"),
            (Frame::simple("a\r\nb"), b"+a  b\r\n", b"+a  b\r\n"),
            (Frame::error("ERR", "bad\nthing"), b"-ERR bad thing\r\n", b"-ERR bad thing\r\n"),
            (Frame::error("DEADLOCK", "cycle"), b"-DEADLOCK cycle\r\n", b"-DEADLOCK cycle\r\n"),
            (Frame::Integer(-42), b":-42\r\n", b":-42\r\n"),
            (Frame::Integer(i64::MIN), b":-9223372036854775808\r\n", b":-9223372036854775808\r\n"),
            (Frame::bulk("a\r\nb"), b"$4\r\na\r\nb\r\n", b"$4\r\na\r\nb\r\n"),
            (Frame::bulk(""), b"$0\r\n\r\n", b"$0\r\n\r\n"),
            (Frame::Null, b"$-1\r\n", b"_\r\n"),
            (Frame::NullArray, b"*-1\r\n", b"_\r\n"),
            (Frame::Array(vec![]), b"*0\r\n", b"*0\r\n"),
            (
                Frame::Array(vec![Frame::Integer(1), Frame::Null]),
                b"*2\r\n:1\r\n$-1\r\n",
                b"*2\r\n:1\r\n_\r\n",
            ),
            (
                Frame::Map(vec![(Frame::simple("k"), Frame::Boolean(true))]),
                b"*2\r\n+k\r\n:1\r\n",
                b"%1\r\n+k\r\n#t\r\n",
            ),
            (Frame::Set(vec![Frame::bulk("x")]), b"*1\r\n$1\r\nx\r\n", b"~1\r\n$1\r\nx\r\n"),
            (Frame::Push(vec![Frame::bulk("x")]), b"*1\r\n$1\r\nx\r\n", b">1\r\n$1\r\nx\r\n"),
            (Frame::Double(1.5), b"$3\r\n1.5\r\n", b",1.5\r\n"),
            (Frame::Double(-3.0), b"$2\r\n-3\r\n", b",-3\r\n"),
            (Frame::Double(1e300), b"$5\r\n1e300\r\n", b",1e300\r\n"),
            (Frame::Double(f64::INFINITY), b"$3\r\ninf\r\n", b",inf\r\n"),
            (Frame::Double(f64::NEG_INFINITY), b"$4\r\n-inf\r\n", b",-inf\r\n"),
            (Frame::Double(f64::NAN), b"$3\r\nnan\r\n", b",nan\r\n"),
            (Frame::Boolean(false), b":0\r\n", b"#f\r\n"),
            (
                Frame::BigNumber("-123456789012345678901234567890".into()),
                b"$31\r\n-123456789012345678901234567890\r\n",
                b"(-123456789012345678901234567890\r\n",
            ),
            (verbatim, b"$4\r\na\r\nb\r\n", b"=8\r\ntxt:a\r\nb\r\n"),
        ];
        for (frame, resp2, resp3) in cases {
            assert_eq!(encoded(&frame, Protocol::Resp2), resp2.escape_ascii().to_string(), "{frame:?}");
            assert_eq!(encoded(&frame, Protocol::Resp3), resp3.escape_ascii().to_string(), "{frame:?}");
        }
    }

    #[test]
    fn protocol_error_becomes_the_redis_reply() {
        let err = crate::ProtocolError::ExpectedBulk { got: b'\r' };
        let mut out = BytesMut::new();
        Frame::error("ERR", &err).encode(Protocol::Resp2, &mut out);
        assert_eq!(&out[..], b"-ERR Protocol error: expected '$', got '\\r'\r\n");
    }
}
