//! Bytes ⇄ frames.
//!
//! ```text
//!  type(1) channel(2) size(4) payload(size) 0xCE
//! ```
//! [`decode`] checks the size against `frame_max` before waiting for the payload (so an oversized
//! frame is refused without buffering it), checks the frame-end octet, then parses the payload:
//! methods and content headers with `amq-protocol`, body frames as zero-copy slices.

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::{
    AMQPClass, basic::AMQPProperties, basic::parse_properties, gen_class, parse_class,
};
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// What a 0-9-1 client sends first, and what the server answers with before closing when a
/// client sends anything else.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
/// Every peer must accept frames of this size (the spec's `frame-min-size`).
pub const FRAME_MIN_SIZE: u32 = 4096;
/// Type, channel, size and frame-end.
pub const FRAME_OVERHEAD: usize = 8;
const FRAME_END: u8 = 0xCE;

const TYPE_METHOD: u8 = 1;
const TYPE_HEADER: u8 = 2;
const TYPE_BODY: u8 = 3;
const TYPE_HEARTBEAT: u8 = 8;

/// One frame from a client.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Method {
        channel: u16,
        method: AMQPClass,
    },
    /// A content header. `raw_properties` are the property bytes exactly as sent (flags and
    /// fields), stored with the message so it is delivered intact.
    Header {
        channel: u16,
        class_id: u16,
        body_size: u64,
        properties: Box<AMQPProperties>,
        raw_properties: Bytes,
    },
    Body {
        channel: u16,
        data: Bytes,
    },
    Heartbeat {
        channel: u16,
    },
}

impl Frame {
    pub fn channel(&self) -> u16 {
        match self {
            Frame::Method { channel, .. }
            | Frame::Header { channel, .. }
            | Frame::Body { channel, .. }
            | Frame::Heartbeat { channel } => *channel,
        }
    }
}

/// A frame that cannot be read. Every one of these is a connection error (the stream cannot be
/// trusted past it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes is larger than frame_max {max}")]
    TooLarge { size: u64, max: u32 },
    #[error("frame end octet is {0:#04x}, expected 0xce")]
    BadFrameEnd(u8),
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    #[error("malformed {what} on channel {channel}")]
    Malformed { channel: u16, what: &'static str },
    #[error("unknown method {class_id}.{method_id} on channel {channel}")]
    UnknownMethod { channel: u16, class_id: u16, method_id: u16 },
}

/// Takes the next complete frame off `buf`: `Ok(None)` when more bytes are needed. `frame_max`
/// bounds the whole frame, overhead included; 0 means no limit.
pub fn decode(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 7 {
        return Ok(None);
    }
    let kind = buf[0];
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    let total = size + FRAME_OVERHEAD;
    if frame_max != 0 && total > frame_max as usize {
        return Err(FrameError::TooLarge { size: total as u64, max: frame_max });
    }
    if !matches!(kind, TYPE_METHOD | TYPE_HEADER | TYPE_BODY | TYPE_HEARTBEAT) {
        return Err(FrameError::UnknownType(kind));
    }
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    if buf[total - 1] != FRAME_END {
        return Err(FrameError::BadFrameEnd(buf[total - 1]));
    }
    buf.advance(7);
    let payload = buf.split_to(size).freeze();
    buf.advance(1);
    match kind {
        TYPE_METHOD => parse_method(channel, &payload).map(Some),
        TYPE_HEADER => parse_header(channel, payload).map(Some),
        TYPE_BODY => Ok(Some(Frame::Body { channel, data: payload })),
        _ => Ok(Some(Frame::Heartbeat { channel })),
    }
}

fn parse_method(channel: u16, payload: &[u8]) -> Result<Frame, FrameError> {
    if payload.len() < 4 {
        return Err(FrameError::Malformed { channel, what: "method frame" });
    }
    let class_id = u16::from_be_bytes([payload[0], payload[1]]);
    let method_id = u16::from_be_bytes([payload[2], payload[3]]);
    match parse_class(payload) {
        Ok(([], method)) => Ok(Frame::Method { channel, method }),
        _ if !known_method(class_id, method_id) => {
            Err(FrameError::UnknownMethod { channel, class_id, method_id })
        }
        _ => Err(FrameError::Malformed { channel, what: "method arguments" }),
    }
}

fn parse_header(channel: u16, payload: Bytes) -> Result<Frame, FrameError> {
    let malformed = FrameError::Malformed { channel, what: "content header" };
    if payload.len() < 14 {
        return Err(malformed);
    }
    let class_id = u16::from_be_bytes([payload[0], payload[1]]);
    let body_size = u64::from_be_bytes(payload[4..12].try_into().expect("8 bytes"));
    let raw_properties = payload.slice(12..);
    match parse_properties(&raw_properties[..]) {
        Ok(([], properties)) => Ok(Frame::Header {
            channel,
            class_id,
            body_size,
            properties: Box::new(properties),
            raw_properties,
        }),
        _ => Err(malformed),
    }
}

/// Whether `class.method` exists in AMQP 0-9-1 (as RabbitMQ extends it).
pub fn known_method(class_id: u16, method_id: u16) -> bool {
    match class_id {
        10 => matches!(method_id, 10 | 11 | 20 | 21 | 30 | 31 | 40 | 41 | 50 | 51 | 60 | 61 | 70 | 71),
        20 => matches!(method_id, 10 | 11 | 20 | 21 | 40 | 41),
        30 => matches!(method_id, 10 | 11),
        40 => matches!(method_id, 10 | 11 | 20 | 21 | 30 | 31 | 40 | 51),
        50 => matches!(method_id, 10 | 11 | 20 | 21 | 30 | 31 | 40 | 41 | 50 | 51),
        60 => matches!(
            method_id,
            10 | 11 | 20 | 21 | 30 | 31 | 40 | 50 | 60 | 70 | 71 | 72 | 80 | 90 | 100 | 110 | 111 | 120
        ),
        85 => matches!(method_id, 10 | 11),
        90 => matches!(method_id, 10 | 11 | 20 | 21 | 30 | 31),
        _ => false,
    }
}

/// The method's name as RabbitMQ writes it (`basic.publish`), for logs and metrics.
pub fn method_name(class_id: u16, method_id: u16) -> &'static str {
    match (class_id, method_id) {
        (10, 10) => "connection.start",
        (10, 11) => "connection.start-ok",
        (10, 30) => "connection.tune",
        (10, 31) => "connection.tune-ok",
        (10, 40) => "connection.open",
        (10, 50) => "connection.close",
        (10, 51) => "connection.close-ok",
        (10, _) => "connection.other",
        (20, 10) => "channel.open",
        (20, 20) => "channel.flow",
        (20, 21) => "channel.flow-ok",
        (20, 40) => "channel.close",
        (20, 41) => "channel.close-ok",
        (30, _) => "access.request",
        (40, 10) => "exchange.declare",
        (40, 20) => "exchange.delete",
        (40, 30) => "exchange.bind",
        (40, 40) => "exchange.unbind",
        (50, 10) => "queue.declare",
        (50, 20) => "queue.bind",
        (50, 30) => "queue.purge",
        (50, 40) => "queue.delete",
        (50, 50) => "queue.unbind",
        (60, 10) => "basic.qos",
        (60, 20) => "basic.consume",
        (60, 30) => "basic.cancel",
        (60, 40) => "basic.publish",
        (60, 70) => "basic.get",
        (60, 80) => "basic.ack",
        (60, 90) => "basic.reject",
        (60, 100) => "basic.recover-async",
        (60, 110) => "basic.recover",
        (60, 120) => "basic.nack",
        (85, 10) => "confirm.select",
        (90, _) => "tx",
        _ => "unknown",
    }
}

/// Appends a method frame.
pub fn write_method(out: &mut BytesMut, channel: u16, method: &AMQPClass) {
    let payload = gen_class(method)(WriteContext::from(Vec::with_capacity(64)))
        .expect("writing to a Vec cannot fail")
        .write;
    put_frame(out, TYPE_METHOD, channel, &payload);
}

/// Appends a content header frame for a body of `body_size` bytes with these property bytes
/// (flags and fields, as [`Frame::Header::raw_properties`] holds them).
pub fn write_header(out: &mut BytesMut, channel: u16, body_size: u64, raw_properties: &[u8]) {
    out.reserve(FRAME_OVERHEAD + 12 + raw_properties.len().max(2));
    out.put_u8(TYPE_HEADER);
    out.put_u16(channel);
    let len = 12 + raw_properties.len().max(2);
    out.put_u32(u32::try_from(len).expect("properties are short"));
    out.put_u16(60);
    out.put_u16(0);
    out.put_u64(body_size);
    if raw_properties.is_empty() {
        out.put_u16(0);
    } else {
        out.put_slice(raw_properties);
    }
    out.put_u8(FRAME_END);
}

/// Appends one body frame.
pub fn write_body(out: &mut BytesMut, channel: u16, data: &[u8]) {
    put_frame(out, TYPE_BODY, channel, data);
}

pub fn write_heartbeat(out: &mut BytesMut) {
    put_frame(out, TYPE_HEARTBEAT, 0, &[]);
}

fn put_frame(out: &mut BytesMut, kind: u8, channel: u16, payload: &[u8]) {
    out.reserve(FRAME_OVERHEAD + payload.len());
    out.put_u8(kind);
    out.put_u16(channel);
    out.put_u32(u32::try_from(payload.len()).expect("frames are split below 4 GiB"));
    out.put_slice(payload);
    out.put_u8(FRAME_END);
}

/// Parses a whole field table (4-byte length first); `None` if malformed or followed by more bytes.
pub fn field_table(bytes: &[u8]) -> Option<amq_protocol::types::FieldTable> {
    match amq_protocol::types::parsing::parse_field_table(bytes) {
        Ok(([], table)) => Some(table),
        _ => None,
    }
}

/// Generates basic properties into bytes (for properties the server makes itself).
pub fn properties_bytes(properties: &AMQPProperties) -> Vec<u8> {
    amq_protocol::protocol::basic::gen_properties(properties)(WriteContext::from(Vec::new()))
        .expect("writing to a Vec cannot fail")
        .write
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::{basic, channel as chan};

    fn method_bytes(channel: u16, method: &AMQPClass) -> BytesMut {
        let mut out = BytesMut::new();
        write_method(&mut out, channel, method);
        out
    }

    #[test]
    fn a_method_round_trips_and_waits_for_its_last_byte() {
        let method = AMQPClass::Channel(chan::AMQPMethod::Open(chan::Open {}));
        let bytes = method_bytes(3, &method);
        assert_eq!(&bytes[..], &[1, 0, 3, 0, 0, 0, 5, 0, 20, 0, 10, 0, 0xCE]);
        let mut partial = BytesMut::from(&bytes[..bytes.len() - 1]);
        assert_eq!(decode(&mut partial, 4096), Ok(None));
        assert_eq!(partial.len(), bytes.len() - 1, "nothing consumed while incomplete");
        let mut whole = bytes.clone();
        whole.extend_from_slice(&bytes);
        assert_eq!(decode(&mut whole, 4096), Ok(Some(Frame::Method { channel: 3, method: method.clone() })));
        assert_eq!(decode(&mut whole, 4096), Ok(Some(Frame::Method { channel: 3, method })));
        assert!(whole.is_empty());
    }

    #[test]
    fn a_frame_over_frame_max_is_refused_from_its_header_alone() {
        let mut buf = BytesMut::from(&[3u8, 0, 1, 0, 0, 0x10, 0][..]);
        assert_eq!(decode(&mut buf, 4096), Err(FrameError::TooLarge { size: 4104, max: 4096 }));
        let mut unlimited = BytesMut::from(&[3u8, 0, 1, 0, 0, 0x10, 0][..]);
        assert_eq!(decode(&mut unlimited, 0), Ok(None));
    }

    #[test]
    fn bad_frame_end_unknown_type_and_garbage_are_errors() {
        let mut bytes = method_bytes(1, &AMQPClass::Channel(chan::AMQPMethod::Open(chan::Open {})));
        let last = bytes.len() - 1;
        bytes[last] = 0;
        assert_eq!(decode(&mut bytes, 4096), Err(FrameError::BadFrameEnd(0)));
        let mut kind = BytesMut::from(&[9u8, 0, 0, 0, 0, 0, 0, 0xCE][..]);
        assert_eq!(decode(&mut kind, 4096), Err(FrameError::UnknownType(9)));
        // queue.declare whose arguments stop short.
        let mut short = BytesMut::from(&[1u8, 0, 1, 0, 0, 0, 6, 0, 50, 0, 10, 0, 0, 0xCE][..]);
        assert!(matches!(decode(&mut short, 4096), Err(FrameError::Malformed { channel: 1, .. })));
        let mut unknown = BytesMut::from(&[1u8, 0, 1, 0, 0, 0, 4, 0, 99, 0, 1, 0xCE][..]);
        assert_eq!(
            decode(&mut unknown, 4096),
            Err(FrameError::UnknownMethod { channel: 1, class_id: 99, method_id: 1 })
        );
    }

    #[test]
    fn header_and_body_frames_keep_their_bytes() {
        let props = basic::AMQPProperties::default().with_content_type("text/plain".into()).with_priority(7);
        let raw = properties_bytes(&props);
        let mut out = BytesMut::new();
        write_header(&mut out, 2, 5, &raw);
        write_body(&mut out, 2, b"hello");
        match decode(&mut out, 4096).unwrap().unwrap() {
            Frame::Header { channel, class_id, body_size, properties, raw_properties } => {
                assert_eq!((channel, class_id, body_size), (2, 60, 5));
                assert_eq!(*properties, props);
                assert_eq!(&raw_properties[..], &raw[..]);
            }
            other => panic!("expected a header, got {other:?}"),
        }
        assert_eq!(
            decode(&mut out, 4096),
            Ok(Some(Frame::Body { channel: 2, data: Bytes::from_static(b"hello") }))
        );
        let mut empty = BytesMut::new();
        write_header(&mut empty, 1, 0, &[]);
        assert!(matches!(decode(&mut empty, 4096), Ok(Some(Frame::Header { body_size: 0, .. }))));
    }

    proptest::proptest! {
        /// Whatever a client sends, decoding ends in a frame, a wait for more, or an error: it never
        /// panics, and it never takes bytes without giving a frame for them.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&bytes[..]);
            loop {
                let before = buf.len();
                match decode(&mut buf, 4096) {
                    Ok(Some(_)) => proptest::prop_assert!(buf.len() < before),
                    Ok(None) => {
                        proptest::prop_assert_eq!(buf.len(), before);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }

        /// Well-framed method, header and body frames with random payloads: amq-protocol's parsers
        /// see arbitrary argument bytes and must refuse them cleanly.
        #[test]
        fn random_payloads_in_valid_frames_fail_cleanly(
            kind in 1u8..4,
            class in 0u16..100,
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            let mut bytes = BytesMut::new();
            let mut body = class.to_be_bytes().to_vec();
            body.extend_from_slice(&payload);
            put_frame(&mut bytes, kind, 1, &body);
            let _ = decode(&mut bytes, 4096);
        }

        /// A well-formed frame whose payload bytes were changed decodes or fails cleanly.
        #[test]
        fn corrupted_method_payloads_fail_cleanly(flip in 7usize..40, with in proptest::prelude::any::<u8>()) {
            let declare = AMQPClass::Queue(amq_protocol::protocol::queue::AMQPMethod::Declare(
                amq_protocol::protocol::queue::Declare { queue: "jobs".into(), durable: true, ..Default::default() },
            ));
            let mut bytes = method_bytes(1, &declare);
            let at = flip.min(bytes.len() - 2);
            bytes[at] = with;
            let _ = decode(&mut bytes, 4096);
        }
    }

    #[test]
    fn every_generated_method_is_known() {
        let methods = [
            AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos::default())),
            AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack::default())),
            AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {})),
        ];
        for m in methods {
            assert!(known_method(m.get_amqp_class_id(), m.get_amqp_method_id()));
        }
        assert!(!known_method(60, 130));
    }
}
