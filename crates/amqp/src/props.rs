//! What an AMQP message stores as its core `properties`: the exchange and routing key it was
//! published with and its basic properties exactly as sent.
//!
//! ```text
//!  0x01 | len(1) exchange | len(1) routing key | properties (flags(2) + fields, as on the wire)
//! ```
//! A message pushed over RESP stores nothing here; [`Stored::of`] then gives the default exchange,
//! the queue's name as routing key, and no properties, which is how RabbitMQ would deliver a
//! message published to the default exchange.

use bytes::{BufMut, Bytes, BytesMut};

const FORMAT: u8 = 1;

/// Encodes a published message's routing and properties for storage.
pub fn encode(exchange: &str, routing_key: &str, raw_properties: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(3 + exchange.len() + routing_key.len() + raw_properties.len());
    out.put_u8(FORMAT);
    put_short(&mut out, exchange);
    put_short(&mut out, routing_key);
    out.put_slice(raw_properties);
    out.freeze()
}

fn put_short(out: &mut BytesMut, s: &str) {
    // AMQP short strings are at most 255 bytes; the codec has already refused longer ones.
    let s = &s.as_bytes()[..s.len().min(255)];
    out.put_u8(s.len() as u8);
    out.put_slice(s);
}

/// A stored message's routing and properties, borrowed from its `properties` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    /// Flags and fields; empty means no properties.
    pub raw_properties: &'a [u8],
}

impl<'a> Stored<'a> {
    /// Reads stored properties; anything not written by [`encode`] (a RESP push) reads as a
    /// plain message on the default exchange routed by `queue`.
    pub fn of(stored: &'a [u8], queue: &'a str) -> Stored<'a> {
        Stored::decode(stored).unwrap_or(Stored { exchange: "", routing_key: queue, raw_properties: &[] })
    }

    fn decode(b: &'a [u8]) -> Option<Stored<'a>> {
        let (&format, rest) = b.split_first()?;
        if format != FORMAT {
            return None;
        }
        let (exchange, rest) = take_short(rest)?;
        let (routing_key, raw_properties) = take_short(rest)?;
        Some(Stored { exchange, routing_key, raw_properties })
    }
}

fn take_short(b: &[u8]) -> Option<(&str, &[u8])> {
    let (&len, rest) = b.split_first()?;
    let len = len as usize;
    if rest.len() < len {
        return None;
    }
    Some((std::str::from_utf8(&rest[..len]).ok()?, &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_properties_round_trip() {
        let stored = encode("amq.topic", "a.b", &[0x80, 0, 4, b'j', b's', b'o', b'n']);
        let s = Stored::of(&stored, "q");
        assert_eq!(s.exchange, "amq.topic");
        assert_eq!(s.routing_key, "a.b");
        assert_eq!(s.raw_properties, &[0x80, 0, 4, b'j', b's', b'o', b'n']);
    }

    #[test]
    fn a_resp_push_reads_as_the_default_exchange() {
        assert_eq!(
            Stored::of(b"", "jobs"),
            Stored { exchange: "", routing_key: "jobs", raw_properties: &[] }
        );
        assert_eq!(Stored::of(&[1, 5, b'x'], "jobs").routing_key, "jobs", "truncated reads as none");
    }
}
