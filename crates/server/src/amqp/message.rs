//! A message in and out: the core command for a published message, and how a stored message
//! goes out again (exchange, routing key and properties of `Basic.Deliver` / `Basic.GetOk`).

use bytes::Bytes;
use turnstile_amqp::args::integer;
use turnstile_amqp::{AMQPValue, AmqpError, basic, code};
use turnstile_core::{Command, DeadReason, Delivery, Publish, Push};

/// The core command for a complete published message. Its properties are stored as sent; the
/// ones Turnstile acts on are read from them: `priority`, `expiration` (per-message TTL) and the
/// `x-delay` header (deliver no earlier than that many ms from now).
pub(super) fn publish_command(
    publish: &basic::Publish,
    raw_properties: &Bytes,
    body: Bytes,
) -> Result<Command, AmqpError> {
    let properties = match turnstile_amqp::basic::parse_properties(&raw_properties[..]) {
        Ok((_, p)) => p,
        Err(_) => return Err(AmqpError::new(code::SYNTAX_ERROR, "malformed content properties")),
    };
    let ttl = match properties.expiration() {
        None => None,
        Some(exp) => match exp.as_str().parse::<u64>() {
            Ok(ms) => Some(ms.max(1)),
            Err(_) => return Err(AmqpError::precondition(format!("invalid expiration '{exp}'"))),
        },
    };
    let delay = properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delay"))
        .and_then(|v: &AMQPValue| integer(v))
        .unwrap_or(0);
    let push = Push {
        queue: String::new(),
        payload: body,
        properties: turnstile_amqp::props::encode(
            publish.exchange.as_str(),
            publish.routing_key.as_str(),
            raw_properties,
        ),
        delay,
        priority: properties.priority().unwrap_or(0),
        dedup: None,
        ttl,
        group: None,
        fence: None,
    };
    Ok(Command::Publish(Publish {
        exchange: publish.exchange.to_string(),
        routing_key: publish.routing_key.to_string(),
        push,
    }))
}

/// How a stored message goes out: the exchange and routing key it was published with (a dead
/// letter: the dead-letter exchange and key it was routed with) and its properties as sent (a dead
/// letter's gain RabbitMQ's `x-death` headers).
pub(super) struct Outgoing<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub properties: Bytes,
}

impl<'a> Outgoing<'a> {
    pub fn of(d: &'a Delivery, queue: &'a str) -> Outgoing<'a> {
        let stored = turnstile_amqp::props::Stored::of(&d.properties, queue);
        let Some(dead) = &d.dead else {
            return Outgoing {
                exchange: stored.exchange,
                routing_key: stored.routing_key,
                // The stored bytes themselves, not a copy.
                properties: d.properties.slice_ref(stored.raw_properties),
            };
        };
        let reason = match dead.reason {
            DeadReason::MaxDeliveries => "delivery_limit",
            DeadReason::Expired => "expired",
            DeadReason::Rejected => "rejected",
            DeadReason::MaxLen => "maxlen",
        };
        let properties = match turnstile_amqp::props::with_death(&stored, reason, &dead.from) {
            Some(with) => Bytes::from(with),
            None => d.properties.slice_ref(stored.raw_properties),
        };
        // To a dead-letter queue (`x-dead-letter-exchange ""` + a key): the default exchange,
        // routed by the name of the queue it now sits in.
        let (exchange, routing_key) = match &dead.via {
            Some(via) => (via.exchange.as_str(), via.routing_key.as_deref().unwrap_or(dead.from.as_str())),
            None => ("", queue),
        };
        Outgoing { exchange, routing_key, properties }
    }
}
