//! `Queue.Declare` arguments with RabbitMQ's names, mapped onto a core [`QueueConfig`].
//!
//! | argument                    | core                                                        |
//! |-----------------------------|-------------------------------------------------------------|
//! | `x-message-ttl`             | `ttl`                                                       |
//! | `x-max-length`              | `max_len`                                                   |
//! | `x-overflow`                | `overflow`: `drop-head`; `reject-publish(-dlx)` → reject    |
//! | `x-dead-letter-exchange`    | `dead_letter_exchange` (`""` + a routing key → `dead_letter` queue) |
//! | `x-dead-letter-routing-key` | its routing key                                             |
//! | `x-delivery-limit`          | `max_deliveries = limit + 1` (returns allowed, as in quorum queues) |
//! | `x-max-priority`            | `max_priority` (absent: 0, a FIFO queue, as in RabbitMQ)     |
//! | `x-single-active-consumer`  | `single_active_consumer`                                    |
//! | `x-queue-type`              | `classic` and `quorum` accepted (every queue is replicated and durable) |
//!
//! Other `x-` arguments (`x-expires`, `x-max-length-bytes`, `x-queue-mode`, ...) are accepted and
//! ignored, as RabbitMQ ignores arguments it does not know. A redeclare is checked only against
//! the arguments it gives, so a queue first made by `Q.PUSH` can be declared by an AMQP client.

use amq_protocol::types::{AMQPValue, FieldTable};
use turnstile_core::{DeadLetterExchange, Millis, Overflow, QueueConfig, SessionId};

use crate::error::AmqpError;

/// The arguments a declare gave, each `None` when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueArgs {
    pub ttl: Option<Millis>,
    pub max_len: Option<u64>,
    pub overflow: Option<Overflow>,
    pub dead_letter_exchange: Option<String>,
    pub dead_letter_routing_key: Option<String>,
    pub delivery_limit: Option<u32>,
    pub max_priority: Option<u8>,
    pub single_active_consumer: Option<bool>,
}

impl QueueArgs {
    pub fn parse(queue: &str, args: &FieldTable) -> Result<QueueArgs, AmqpError> {
        let mut parsed = QueueArgs::default();
        for (key, value) in args.inner() {
            let key = key.as_str();
            let invalid = |why: &str| {
                AmqpError::precondition(format!(
                    "invalid arg '{key}' for queue '{queue}' in vhost '/': {why}"
                ))
            };
            match key {
                "x-message-ttl" => {
                    parsed.ttl =
                        Some(non_negative(value).ok_or_else(|| invalid("must be a non-negative integer"))?)
                }
                "x-max-length" => {
                    parsed.max_len =
                        Some(non_negative(value).ok_or_else(|| invalid("must be a non-negative integer"))?)
                }
                "x-delivery-limit" => {
                    let n = non_negative(value).ok_or_else(|| invalid("must be a non-negative integer"))?;
                    parsed.delivery_limit = Some(u32::try_from(n).map_err(|_| invalid("too large"))?);
                }
                "x-max-priority" => {
                    let n = non_negative(value).ok_or_else(|| invalid("must be a non-negative integer"))?;
                    parsed.max_priority = Some(u8::try_from(n).map_err(|_| invalid("must be at most 255"))?);
                }
                "x-overflow" => {
                    parsed.overflow = Some(match string(value).as_deref() {
                        Some("drop-head") => Overflow::DropHead,
                        Some("reject-publish" | "reject-publish-dlx") => Overflow::Reject,
                        _ => return Err(invalid("must be drop-head, reject-publish or reject-publish-dlx")),
                    })
                }
                "x-dead-letter-exchange" => {
                    parsed.dead_letter_exchange =
                        Some(string(value).ok_or_else(|| invalid("must be a string"))?)
                }
                "x-dead-letter-routing-key" => {
                    parsed.dead_letter_routing_key =
                        Some(string(value).ok_or_else(|| invalid("must be a string"))?)
                }
                "x-single-active-consumer" => match value {
                    AMQPValue::Boolean(b) => parsed.single_active_consumer = Some(*b),
                    _ => return Err(invalid("must be a boolean")),
                },
                "x-queue-type" => match string(value).as_deref() {
                    Some("classic" | "quorum") => {}
                    _ => return Err(invalid("supported queue types are classic and quorum")),
                },
                _ => {}
            }
        }
        if parsed.dead_letter_routing_key.is_some() && parsed.dead_letter_exchange.is_none() {
            return Err(AmqpError::precondition(format!(
                "invalid arg 'x-dead-letter-routing-key' for queue '{queue}' in vhost '/': \
                 x-dead-letter-exchange is needed with it"
            )));
        }
        Ok(parsed)
    }

    /// The configuration of a queue created by this declare.
    pub fn config(&self, exclusive_owner: Option<SessionId>, auto_delete: bool) -> QueueConfig {
        let mut config =
            QueueConfig { max_priority: 0, exclusive_owner, auto_delete, ..QueueConfig::default() };
        if let Some(ttl) = self.ttl {
            // A TTL of 0 means "expire unless delivered at once"; the core's shortest is 1 ms.
            config.ttl = Some(ttl.max(1));
        }
        if let Some(max_len) = self.max_len {
            config.max_len = max_len;
        }
        if let Some(overflow) = self.overflow {
            config.overflow = overflow;
        }
        if let Some(limit) = self.delivery_limit {
            config.max_deliveries = limit.saturating_add(1);
        }
        if let Some(p) = self.max_priority {
            config.max_priority = p;
        }
        if let Some(sac) = self.single_active_consumer {
            config.single_active_consumer = sac;
        }
        (config.dead_letter, config.dead_letter_exchange) = self.dead_letter_target();
        config
    }

    fn dead_letter_target(&self) -> (Option<String>, Option<DeadLetterExchange>) {
        match (&self.dead_letter_exchange, &self.dead_letter_routing_key) {
            (None, _) => (None, None),
            (Some(exchange), Some(key)) if exchange.is_empty() => (Some(key.clone()), None),
            (Some(exchange), key) => {
                (None, Some(DeadLetterExchange { exchange: exchange.clone(), routing_key: key.clone() }))
            }
        }
    }

    /// Whether an existing queue matches every argument this declare gave.
    pub fn check_equivalent(&self, queue: &str, existing: &QueueConfig) -> Result<(), AmqpError> {
        let mismatch = |arg: &str, received: String, current: String| {
            Err(AmqpError::precondition(format!(
                "inequivalent arg '{arg}' for queue '{queue}' in vhost '/': received '{received}' but current is '{current}'"
            )))
        };
        let show = |v: Option<u64>| v.map_or("none".to_owned(), |v| v.to_string());
        if let Some(ttl) = self.ttl
            && existing.ttl != Some(ttl.max(1))
        {
            return mismatch("x-message-ttl", ttl.to_string(), show(existing.ttl));
        }
        if let Some(n) = self.max_len
            && existing.max_len != n
        {
            return mismatch("x-max-length", n.to_string(), existing.max_len.to_string());
        }
        if let Some(o) = self.overflow
            && existing.overflow != o
        {
            return mismatch("x-overflow", format!("{o:?}"), format!("{:?}", existing.overflow));
        }
        if let Some(limit) = self.delivery_limit
            && existing.max_deliveries != limit.saturating_add(1)
        {
            let current = existing.max_deliveries.checked_sub(1).map_or("none".to_owned(), |n| n.to_string());
            return mismatch("x-delivery-limit", limit.to_string(), current);
        }
        if let Some(p) = self.max_priority
            && existing.max_priority != p
        {
            return mismatch("x-max-priority", p.to_string(), existing.max_priority.to_string());
        }
        if let Some(sac) = self.single_active_consumer
            && existing.single_active_consumer != sac
        {
            return mismatch(
                "x-single-active-consumer",
                sac.to_string(),
                existing.single_active_consumer.to_string(),
            );
        }
        if self.dead_letter_exchange.is_some() {
            let (dlq, dlx) = self.dead_letter_target();
            if existing.dead_letter != dlq || existing.dead_letter_exchange != dlx {
                let received = format!("{dlq:?} {dlx:?}");
                return mismatch(
                    "x-dead-letter-exchange",
                    received,
                    format!("{:?} {:?}", existing.dead_letter, existing.dead_letter_exchange),
                );
            }
        }
        Ok(())
    }
}

fn non_negative(value: &AMQPValue) -> Option<u64> {
    let n: i128 = match value {
        AMQPValue::ShortShortInt(v) => (*v).into(),
        AMQPValue::ShortShortUInt(v) => (*v).into(),
        AMQPValue::ShortInt(v) => (*v).into(),
        AMQPValue::ShortUInt(v) => (*v).into(),
        AMQPValue::LongInt(v) => (*v).into(),
        AMQPValue::LongUInt(v) => (*v).into(),
        AMQPValue::LongLongInt(v) => (*v).into(),
        _ => return None,
    };
    u64::try_from(n).ok()
}

fn string(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// A header or argument as an integer (e.g. `x-delay`), when it is one.
pub fn integer(value: &AMQPValue) -> Option<u64> {
    non_negative(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    #[test]
    fn rabbitmq_arguments_map_onto_the_queue_config() {
        let args = table(&[
            ("x-message-ttl", AMQPValue::LongInt(60_000)),
            ("x-max-length", AMQPValue::LongLongInt(10)),
            ("x-overflow", AMQPValue::LongString("reject-publish".into())),
            ("x-dead-letter-exchange", AMQPValue::LongString("dlx".into())),
            ("x-delivery-limit", AMQPValue::ShortInt(2)),
            ("x-max-priority", AMQPValue::ShortShortUInt(5)),
            ("x-single-active-consumer", AMQPValue::Boolean(true)),
            ("x-queue-type", AMQPValue::LongString("quorum".into())),
            ("x-expires", AMQPValue::LongInt(1000)),
        ]);
        let parsed = QueueArgs::parse("q", &args).unwrap();
        let config = parsed.config(None, false);
        assert_eq!(config.ttl, Some(60_000));
        assert_eq!(config.max_len, 10);
        assert_eq!(config.overflow, Overflow::Reject);
        assert_eq!(config.max_deliveries, 3);
        assert_eq!(config.max_priority, 5);
        assert!(config.single_active_consumer);
        assert_eq!(config.dead_letter, None);
        assert_eq!(
            config.dead_letter_exchange,
            Some(DeadLetterExchange { exchange: "dlx".into(), routing_key: None })
        );
        assert_eq!(parsed.check_equivalent("q", &config), Ok(()));
    }

    #[test]
    fn no_arguments_is_a_fifo_queue_and_the_default_exchange_dead_letters_to_a_queue() {
        assert_eq!(QueueArgs::default().config(None, false).max_priority, 0);
        let args = table(&[
            ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
            ("x-dead-letter-routing-key", AMQPValue::LongString("dead".into())),
        ]);
        let config = QueueArgs::parse("q", &args).unwrap().config(None, false);
        assert_eq!((config.dead_letter.as_deref(), config.dead_letter_exchange), (Some("dead"), None));
    }

    #[test]
    fn bad_values_are_precondition_failures_naming_the_argument() {
        for (key, value) in [
            ("x-max-length", AMQPValue::LongInt(-1)),
            ("x-message-ttl", AMQPValue::LongString("10".into())),
            ("x-overflow", AMQPValue::LongString("sideways".into())),
            ("x-max-priority", AMQPValue::LongInt(256)),
            ("x-queue-type", AMQPValue::LongString("stream".into())),
            ("x-single-active-consumer", AMQPValue::LongInt(1)),
        ] {
            let e = QueueArgs::parse("q", &table(&[(key, value)])).unwrap_err();
            assert_eq!(e.code, crate::code::PRECONDITION_FAILED);
            assert!(e.text.contains(key), "{e:?}");
        }
        let e = QueueArgs::parse(
            "q",
            &table(&[("x-dead-letter-routing-key", AMQPValue::LongString("k".into()))]),
        );
        assert!(e.is_err());
    }

    #[test]
    fn a_redeclare_is_checked_only_against_the_arguments_it_gives() {
        let existing = QueueConfig::default();
        assert_eq!(QueueArgs::default().check_equivalent("q", &existing), Ok(()));
        let args = QueueArgs::parse("q", &table(&[("x-max-length", AMQPValue::LongInt(5))])).unwrap();
        let e = args.check_equivalent("q", &existing).unwrap_err();
        assert_eq!(
            e.text,
            "inequivalent arg 'x-max-length' for queue 'q' in vhost '/': received '5' but current is '0'"
        );
    }
}
