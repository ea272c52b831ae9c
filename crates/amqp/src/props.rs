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
    out.put_u8(u8::try_from(s.len()).expect("cut to 255 above"));
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

/// The properties of a dead letter as RabbitMQ delivers one: its headers gain `x-death` (one
/// entry: `count`, `reason`, `queue`, `exchange`, `routing-keys`) and the `x-first-death-*`
/// fields, unless they are already there. `reason` is RabbitMQ's word (`rejected`, `expired`,
/// `maxlen`, `delivery_limit`). `None` when the stored properties do not parse.
pub fn with_death(stored: &Stored<'_>, reason: &str, queue: &str) -> Option<Vec<u8>> {
    use amq_protocol::protocol::basic::{AMQPProperties, parse_properties};
    use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};

    let properties = if stored.raw_properties.is_empty() {
        AMQPProperties::default()
    } else {
        match parse_properties(stored.raw_properties) {
            Ok(([], p)) => p,
            _ => return None,
        }
    };
    let mut headers = properties.headers().clone().unwrap_or_default();
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    if !headers.inner().contains_key("x-death") {
        let mut death = FieldTable::default();
        death.insert("count".into(), AMQPValue::LongLongInt(1));
        death.insert("reason".into(), text(reason));
        death.insert("queue".into(), text(queue));
        death.insert("exchange".into(), text(stored.exchange));
        death.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![text(stored.routing_key)])),
        );
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        );
        headers.insert("x-first-death-reason".into(), text(reason));
        headers.insert("x-first-death-queue".into(), text(queue));
        headers.insert("x-first-death-exchange".into(), text(stored.exchange));
    }
    Some(crate::frame::properties_bytes(&properties.with_headers(headers)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_gains_x_death_and_keeps_its_properties() {
        use amq_protocol::protocol::basic::{AMQPProperties, parse_properties};
        use amq_protocol::types::AMQPValue;
        let raw =
            crate::frame::properties_bytes(&AMQPProperties::default().with_content_type("text/plain".into()));
        let stored = encode("", "work", &raw);
        let with = with_death(&Stored::of(&stored, "work"), "rejected", "work").unwrap();
        let (_, props) = parse_properties(&with[..]).unwrap();
        assert_eq!(props.content_type().as_ref().map(|c| c.as_str()), Some("text/plain"));
        let headers = props.headers().clone().unwrap();
        assert_eq!(
            headers.inner().get("x-first-death-reason"),
            Some(&AMQPValue::LongString("rejected".into()))
        );
        assert!(
            matches!(headers.inner().get("x-death"), Some(AMQPValue::FieldArray(a)) if a.as_slice().len() == 1)
        );
        // A RESP push (no properties) dead-lettered gets headers too.
        let bare = with_death(&Stored::of(b"", "jobs"), "expired", "jobs").unwrap();
        assert!(parse_properties(&bare[..]).unwrap().1.headers().is_some());
    }

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
