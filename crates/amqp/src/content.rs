//! Content: a method that carries a message (`Basic.Publish` from a client; `Basic.Deliver`,
//! `Basic.GetOk`, `Basic.Return` from the server), followed by one content header and the body
//! split into frames.
//!
//! ```text
//!  method(Basic.Publish) ─► header(class 60, body size, properties) ─► body … body ─► Message
//! ```
//! [`write_content`] writes one; [`Incoming`] assembles one from a channel's frames and refuses
//! every frame that does not fit, with the error the spec (and RabbitMQ) gives for it.

use amq_protocol::protocol::AMQPClass;
use bytes::{Bytes, BytesMut};

use crate::error::{AmqpError, code};
use crate::frame::{FRAME_OVERHEAD, write_body, write_header, write_method};

/// The class of `Basic`, the only one whose methods carry content.
const BASIC_CLASS: u16 = 60;
/// `Basic.Publish`, named in the error that refuses an oversized message.
const PUBLISH_METHOD: u16 = 40;

/// Appends `method` with its content. `frame_max` is the negotiated maximum (0 = no limit).
pub fn write_content(
    out: &mut BytesMut,
    channel: u16,
    method: &AMQPClass,
    raw_properties: &[u8],
    body: &[u8],
    frame_max: u32,
) {
    write_method(out, channel, method);
    write_header(out, channel, body.len() as u64, raw_properties);
    let chunk = match frame_max {
        0 => body.len().max(1),
        max => max as usize - FRAME_OVERHEAD,
    };
    for part in body.chunks(chunk) {
        write_body(out, channel, part);
    }
}

/// One channel's incoming content: idle, or a message between its method and its last body
/// frame. A channel has one for its whole life; `M` is the method the content belongs to.
#[derive(Debug)]
pub struct Incoming<M> {
    channel: u16,
    /// The largest body accepted (the server's max payload); a larger header is refused before
    /// any of its body is buffered.
    max_body: u64,
    state: State<M>,
}

#[derive(Debug)]
enum State<M> {
    /// No content under way: the next frame on the channel is a method.
    Idle,
    /// After the method: its content header comes next.
    Header(M),
    /// After the header: body frames until the size it gave has come.
    Body(Partial<M>),
}

#[derive(Debug)]
struct Partial<M> {
    method: M,
    size: u64,
    raw_properties: Bytes,
    body: BytesMut,
}

/// A whole message: the method it came with, its properties exactly as sent (flags and fields),
/// and its body.
#[derive(Debug, Clone, PartialEq)]
pub struct Message<M> {
    pub method: M,
    pub raw_properties: Bytes,
    pub body: Bytes,
}

/// A content frame that does not fit where it came. Every one is a connection error except
/// [`ContentError::TooLarge`], which closes only the channel (the stream is still well framed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error(
        "expected content header for class 60, got non content header frame instead on channel {channel}"
    )]
    ExpectedHeader { channel: u16 },
    #[error("unexpected content header on channel {channel}")]
    UnexpectedHeader { channel: u16 },
    #[error("content header for class {class_id}, expected 60")]
    WrongClass { class_id: u16 },
    /// The words are the server's for every protocol, naming its `max-payload` setting.
    #[error("message size {size}: value is larger than max-payload ({max} bytes)")]
    TooLarge { size: u64, max: u64 },
    #[error("unexpected content body on channel {channel}")]
    UnexpectedBody { channel: u16 },
    #[error("content body is longer than its header said")]
    BodyTooLong,
    #[error("content frame on channel {channel}, which is not open")]
    ChannelNotOpen { channel: u16 },
    #[error("content frame on channel 0")]
    ChannelZero,
}

impl From<&ContentError> for AmqpError {
    fn from(e: &ContentError) -> AmqpError {
        match e {
            ContentError::TooLarge { .. } => {
                AmqpError::precondition(e.to_string()).on(BASIC_CLASS, PUBLISH_METHOD)
            }
            ContentError::ChannelNotOpen { .. } => AmqpError::channel_error(e.to_string()),
            _ => AmqpError::new(code::UNEXPECTED_FRAME, e.to_string()),
        }
    }
}

impl<M> Incoming<M> {
    pub fn new(channel: u16, max_body: u64) -> Incoming<M> {
        Incoming { channel, max_body, state: State::Idle }
    }

    /// Whether no message is under way (a method may come).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// A method frame came: refused while a message waits for its header or body.
    pub fn check_method(&self) -> Result<(), ContentError> {
        match self.state {
            State::Idle => Ok(()),
            _ => Err(ContentError::ExpectedHeader { channel: self.channel }),
        }
    }

    /// Starts a message with the method it belongs to; its header comes next.
    pub fn start(&mut self, method: M) -> Result<(), ContentError> {
        self.check_method()?;
        self.state = State::Header(method);
        Ok(())
    }

    /// The content header: the whole message when its body is empty.
    pub fn header(
        &mut self,
        class_id: u16,
        body_size: u64,
        raw_properties: Bytes,
    ) -> Result<Option<Message<M>>, ContentError> {
        // Taken out: on any error below the message is dropped (the connection or the channel
        // closes), on success it moves on to its body.
        let method = match std::mem::replace(&mut self.state, State::Idle) {
            State::Header(method) => method,
            other => {
                self.state = other;
                return Err(ContentError::UnexpectedHeader { channel: self.channel });
            }
        };
        if class_id != BASIC_CLASS {
            return Err(ContentError::WrongClass { class_id });
        }
        if body_size > self.max_body {
            // Refused before any of the body is buffered; the body frames that follow are the
            // caller's to drop while the channel closes.
            return Err(ContentError::TooLarge { size: body_size, max: self.max_body });
        }
        if body_size == 0 {
            return Ok(Some(Message { method, raw_properties, body: Bytes::new() }));
        }
        let body = BytesMut::with_capacity(usize::try_from(body_size).unwrap_or(0));
        self.state = State::Body(Partial { method, size: body_size, raw_properties, body });
        Ok(None)
    }

    /// One body frame: the whole message once the body has the size its header gave.
    pub fn body(&mut self, data: &[u8]) -> Result<Option<Message<M>>, ContentError> {
        let mut partial = match std::mem::replace(&mut self.state, State::Idle) {
            State::Body(partial) => partial,
            other => {
                self.state = other;
                return Err(ContentError::UnexpectedBody { channel: self.channel });
            }
        };
        if partial.body.len() as u64 + data.len() as u64 > partial.size {
            return Err(ContentError::BodyTooLong);
        }
        // Copied, not kept as a slice of the read buffer: a stored message would otherwise hold
        // on to the whole buffer it was read into for as long as it stays in its queue.
        partial.body.extend_from_slice(data);
        if (partial.body.len() as u64) < partial.size {
            self.state = State::Body(partial);
            return Ok(None);
        }
        let Partial { method, raw_properties, body, .. } = partial;
        Ok(Some(Message { method, raw_properties, body: body.freeze() }))
    }

    /// Drops a message under way (its channel is closing).
    pub fn abort(&mut self) {
        self.state = State::Idle;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Scope;
    use crate::frame::{Frame, decode};
    use amq_protocol::protocol::basic;

    /// Feeds one decoded frame the way a connection does.
    fn feed(
        incoming: &mut Incoming<basic::Publish>,
        frame: Frame,
    ) -> Result<Option<Message<basic::Publish>>, ContentError> {
        match frame {
            Frame::Method { method: AMQPClass::Basic(basic::AMQPMethod::Publish(publish)), .. } => {
                incoming.start(publish).map(|()| None)
            }
            Frame::Method { .. } => incoming.check_method().map(|()| None),
            Frame::Header { class_id, body_size, raw_properties, .. } => {
                incoming.header(class_id, body_size, raw_properties)
            }
            Frame::Body { data, .. } => incoming.body(&data),
            Frame::Heartbeat { .. } => Ok(None),
        }
    }

    /// Decodes every frame in `bytes` and feeds them; the results, one per frame.
    fn feed_bytes(
        incoming: &mut Incoming<basic::Publish>,
        bytes: &[u8],
    ) -> Vec<Result<Option<Message<basic::Publish>>, ContentError>> {
        let mut buf = BytesMut::from(bytes);
        let mut results = Vec::new();
        while let Some(frame) = decode(&mut buf, 4096).expect("well-formed frames") {
            results.push(feed(incoming, frame));
        }
        assert!(buf.is_empty(), "every byte was a frame");
        results
    }

    fn publish(routing_key: &str) -> basic::Publish {
        basic::Publish { routing_key: routing_key.into(), ..Default::default() }
    }

    // Basic.Publish to the default exchange, routing key "q", on channel 1.
    const PUBLISH: [u8; 18] = [1, 0, 1, 0, 0, 0, 10, 0, 60, 0, 40, 0, 0, 0, 1, b'q', 0, 0xCE];
    // Its header: class 60, weight 0, body size 5, properties: delivery-mode (flag 0x1000) = 2.
    const HEADER: [u8; 23] = [2, 0, 1, 0, 0, 0, 15, 0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0x10, 0x00, 2, 0xCE];
    const BODY_HEL: [u8; 11] = [3, 0, 1, 0, 0, 0, 3, b'h', b'e', b'l', 0xCE];
    const BODY_LO: [u8; 10] = [3, 0, 1, 0, 0, 0, 2, b'l', b'o', 0xCE];

    #[test]
    fn a_body_split_over_frames_is_one_message_with_the_bytes_as_sent() {
        let mut incoming = Incoming::new(1, 1024);
        let bytes = [&PUBLISH[..], &HEADER, &BODY_HEL, &BODY_LO].concat();
        let results = feed_bytes(&mut incoming, &bytes);
        assert_eq!(results[..3], [Ok(None), Ok(None), Ok(None)]);
        let message = results[3].clone().expect("accepted").expect("complete");
        assert_eq!(message.method, publish("q"));
        assert_eq!(&message.raw_properties[..], &[0x10, 0x00, 2]);
        assert_eq!(&message.body[..], b"hello");
        assert!(incoming.is_idle());
        // The next message starts from scratch.
        assert_eq!(feed_bytes(&mut incoming, &PUBLISH), [Ok(None)]);
        assert!(!incoming.is_idle());
    }

    #[test]
    fn an_empty_body_completes_at_its_header() {
        let mut incoming = Incoming::new(1, 1024);
        let mut header = HEADER;
        header[18] = 0;
        let results = feed_bytes(&mut incoming, &[&PUBLISH[..], &header].concat());
        assert_eq!(
            results,
            [
                Ok(None),
                Ok(Some(Message {
                    method: publish("q"),
                    raw_properties: Bytes::from_static(&[0x10, 0x00, 2]),
                    body: Bytes::new(),
                }))
            ]
        );
        assert!(incoming.is_idle());
    }

    #[test]
    fn a_method_before_the_header_or_the_whole_body_is_refused() {
        let mut incoming = Incoming::<basic::Publish>::new(3, 1024);
        assert_eq!(incoming.check_method(), Ok(()));
        incoming.start(publish("a")).unwrap();
        assert_eq!(incoming.check_method(), Err(ContentError::ExpectedHeader { channel: 3 }));
        assert_eq!(incoming.start(publish("b")), Err(ContentError::ExpectedHeader { channel: 3 }));
        incoming.header(60, 4, Bytes::new()).unwrap();
        incoming.body(b"ab").unwrap();
        let e = incoming.check_method().unwrap_err();
        assert_eq!(e, ContentError::ExpectedHeader { channel: 3 });
        let e = AmqpError::from(&e);
        assert_eq!(
            e.reply_text(),
            "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead on channel 3"
        );
        assert_eq!((e.code, e.scope()), (505, Scope::Connection));
    }

    #[test]
    fn a_header_without_a_method_twice_or_of_another_class_is_refused() {
        let mut incoming = Incoming::new(1, 1024);
        assert_eq!(feed_bytes(&mut incoming, &HEADER), [Err(ContentError::UnexpectedHeader { channel: 1 })]);
        let results = feed_bytes(&mut incoming, &[&PUBLISH[..], &HEADER, &HEADER].concat());
        assert_eq!(results[2], Err(ContentError::UnexpectedHeader { channel: 1 }));
        let e = AmqpError::from(&ContentError::UnexpectedHeader { channel: 1 });
        assert_eq!(e.reply_text(), "UNEXPECTED_FRAME - unexpected content header on channel 1");

        let mut incoming = Incoming::new(1, 1024);
        let mut header = HEADER;
        header[8] = 50;
        let results = feed_bytes(&mut incoming, &[&PUBLISH[..], &header].concat());
        assert_eq!(results[1], Err(ContentError::WrongClass { class_id: 50 }));
        let e = AmqpError::from(&ContentError::WrongClass { class_id: 50 });
        assert_eq!((e.code, e.text.as_str()), (505, "content header for class 50, expected 60"));
    }

    #[test]
    fn a_header_over_the_max_size_closes_only_the_channel_and_drops_the_message() {
        let mut incoming = Incoming::new(1, 4);
        let results = feed_bytes(&mut incoming, &[&PUBLISH[..], &HEADER].concat());
        assert_eq!(results[1], Err(ContentError::TooLarge { size: 5, max: 4 }));
        let e = AmqpError::from(&ContentError::TooLarge { size: 5, max: 4 });
        assert_eq!(
            e.reply_text(),
            "PRECONDITION_FAILED - message size 5: value is larger than max-payload (4 bytes)"
        );
        assert_eq!((e.scope(), e.class_id, e.method_id), (Scope::Channel, 60, 40));
        assert!(incoming.is_idle(), "nothing kept of the refused message");
        // Exactly the max is accepted.
        let mut incoming = Incoming::new(1, 5);
        let results = feed_bytes(&mut incoming, &[&PUBLISH[..], &HEADER, &BODY_HEL, &BODY_LO].concat());
        assert!(matches!(&results[3], Ok(Some(m)) if &m.body[..] == b"hello"));
    }

    #[test]
    fn a_body_without_a_header_or_longer_than_it_said_is_refused() {
        let mut incoming = Incoming::new(1, 1024);
        assert_eq!(feed_bytes(&mut incoming, &BODY_LO), [Err(ContentError::UnexpectedBody { channel: 1 })]);
        let results = feed_bytes(&mut incoming, &[&PUBLISH[..], &BODY_LO].concat());
        assert_eq!(results[1], Err(ContentError::UnexpectedBody { channel: 1 }));
        let e = AmqpError::from(&ContentError::UnexpectedBody { channel: 1 });
        assert_eq!(e.reply_text(), "UNEXPECTED_FRAME - unexpected content body on channel 1");

        let mut incoming = Incoming::new(1, 1024);
        let results = feed_bytes(&mut incoming, &[&PUBLISH[..], &HEADER, &BODY_HEL, &BODY_HEL].concat());
        assert_eq!(results[3], Err(ContentError::BodyTooLong));
        let e = AmqpError::from(&ContentError::BodyTooLong);
        assert_eq!(e.reply_text(), "UNEXPECTED_FRAME - content body is longer than its header said");
    }

    #[test]
    fn content_on_a_channel_not_open_or_channel_0_is_a_connection_error() {
        let e = AmqpError::from(&ContentError::ChannelNotOpen { channel: 7 });
        assert_eq!(e.reply_text(), "CHANNEL_ERROR - content frame on channel 7, which is not open");
        assert_eq!(e.scope(), Scope::Connection);
        let e = AmqpError::from(&ContentError::ChannelZero);
        assert_eq!(e.reply_text(), "UNEXPECTED_FRAME - content frame on channel 0");
        assert_eq!(e.scope(), Scope::Connection);
    }

    #[test]
    fn abort_drops_a_message_under_way() {
        let mut incoming = Incoming::new(1, 1024);
        feed_bytes(&mut incoming, &[&PUBLISH[..], &HEADER, &BODY_HEL].concat());
        incoming.abort();
        assert!(incoming.is_idle());
        assert_eq!(feed_bytes(&mut incoming, &BODY_LO), [Err(ContentError::UnexpectedBody { channel: 1 })]);
    }

    #[test]
    fn a_body_is_split_at_frame_max_and_reassembles() {
        let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let deliver = AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: "c".into(),
            delivery_tag: 9,
            ..Default::default()
        }));
        let mut out = BytesMut::new();
        write_content(&mut out, 1, &deliver, &[], &body, 4096);
        let mut frames = Vec::new();
        while let Some(frame) = decode(&mut out, 4096).unwrap() {
            frames.push(frame);
        }
        assert!(matches!(frames[0], Frame::Method { .. }));
        assert!(matches!(frames[1], Frame::Header { body_size: 10_000, .. }));
        let parts: Vec<&[u8]> = frames[2..]
            .iter()
            .map(|f| match f {
                Frame::Body { data, .. } => &data[..],
                other => panic!("expected a body frame, got {other:?}"),
            })
            .collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![4088, 4088, 1824]);
        assert_eq!(parts.concat(), body);
    }

    #[test]
    fn an_empty_body_has_no_body_frame() {
        let mut out = BytesMut::new();
        let get_ok = AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk::default()));
        write_content(&mut out, 1, &get_ok, &[], &[], 4096);
        assert!(matches!(decode(&mut out, 4096), Ok(Some(Frame::Method { .. }))));
        assert!(matches!(decode(&mut out, 4096), Ok(Some(Frame::Header { body_size: 0, .. }))));
        assert_eq!(decode(&mut out, 4096), Ok(None));
    }

    proptest::proptest! {
        /// However a body is cut into frames, the message has the bytes that were sent.
        #[test]
        fn any_split_of_a_body_reassembles(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            cuts in proptest::collection::vec(1usize..200, 0..8),
        ) {
            let mut incoming = Incoming::new(1, 600);
            incoming.start(publish("q")).unwrap();
            let mut message = incoming.header(60, body.len() as u64, Bytes::new()).unwrap();
            let mut rest = &body[..];
            let mut cuts = cuts.into_iter();
            while !rest.is_empty() {
                proptest::prop_assert!(message.is_none(), "complete before its last byte");
                let n = cuts.next().unwrap_or(rest.len()).min(rest.len());
                message = incoming.body(&rest[..n]).unwrap();
                rest = &rest[n..];
            }
            let message = message.expect("complete after its last byte");
            proptest::prop_assert_eq!(&message.body[..], &body[..]);
            proptest::prop_assert!(incoming.is_idle());
        }
    }
}
