//! A method that carries content (`Basic.Deliver`, `Basic.GetOk`, `Basic.Return`): the method
//! frame, one content header, and the body split into frames that fit `frame_max`.

use amq_protocol::protocol::AMQPClass;
use bytes::BytesMut;

use crate::frame::{FRAME_OVERHEAD, write_body, write_header, write_method};

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

/// A message being received: after `Basic.Publish`, its header and body frames.
#[derive(Debug)]
pub struct Incoming<M> {
    /// What the content belongs to (the publish's arguments).
    pub method: M,
    /// Set by the header frame.
    pub header: Option<(u64, bytes::Bytes)>,
    pub body: BytesMut,
}

impl<M> Incoming<M> {
    pub fn new(method: M) -> Incoming<M> {
        Incoming { method, header: None, body: BytesMut::new() }
    }

    /// Whether the header has come and the body is whole.
    pub fn complete(&self) -> bool {
        matches!(self.header, Some((size, _)) if self.body.len() as u64 == size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Frame, decode};
    use amq_protocol::protocol::basic;

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
}
