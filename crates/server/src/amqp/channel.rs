//! One AMQP channel's state: its publisher confirms, the content it is receiving, its delivery
//! tags and unacked deliveries, its consumers, prefetch and flow. Pure bookkeeping; the
//! [`Machine`](super::machine::Machine) decides what to send and what to put in the log.

use std::collections::BTreeMap;

use turnstile_amqp::content::Incoming;
use turnstile_amqp::{AMQPClass, AmqpError, ShortString, basic};
use turnstile_core::Delivery;

use super::machine::Action;
use super::message::Outgoing;

#[derive(Debug)]
pub(super) struct Channel {
    pub number: u16,
    /// Which opening of a channel this is (counted per connection), so a publish's confirm is
    /// never sent on a later channel that reuses the number.
    pub epoch: u64,
    /// The server sent `Channel.Close` and waits for `CloseOk`; every other frame is dropped.
    pub closing: bool,
    /// `Confirm.Select` was seen; `next_seq` numbers the publishes from then on.
    pub confirm: bool,
    pub next_seq: u64,
    /// Publishes confirmed since the last write, as a run of sequence numbers: one `Basic.Ack`
    /// with `multiple` covers them all.
    pub acks: Option<(u64, u64)>,
    /// The message being published on this channel, between its method and its last body frame.
    pub incoming: Incoming<basic::Publish>,
    pub next_tag: u64,
    /// Delivery tag → the delivery it stands for, for deliveries that need an ack.
    pub unacked: BTreeMap<u64, Unacked>,
    /// Consumer tag → consumer; ordered, so a closing channel cancels them in a fixed order.
    pub consumers: BTreeMap<String, Consumer>,
    /// `Basic.Qos` per consumer (`global = false`) and for the whole channel (`global = true`).
    pub prefetch: u32,
    pub global_prefetch: u32,
    /// `Channel.Flow` stopped deliveries; until it starts them again they are held here.
    pub paused: bool,
    pub held: Vec<Held>,
    /// The queue last declared on this channel (an empty queue name means it).
    pub last_queue: Option<String>,
}

/// A delivery waiting for its ack: where it came from and its receipt there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Unacked {
    pub queue: String,
    pub receipt: u64,
}

#[derive(Debug, Clone)]
pub(super) struct Consumer {
    /// The core's consumer id.
    pub id: u64,
    pub queue: String,
    pub no_ack: bool,
}

/// A delivery that came while `Channel.Flow` had stopped deliveries.
#[derive(Debug)]
pub(super) struct Held {
    pub consumer_id: u64,
    pub queue: String,
    pub delivery: Delivery,
}

/// What a channel gives back when it closes: consumers to cancel, deliveries to return.
#[derive(Debug)]
pub(super) struct Released {
    pub consumers: Vec<Consumer>,
    pub returns: Vec<Unacked>,
}

impl Channel {
    pub fn new(number: u16, epoch: u64, max_body: u64) -> Channel {
        Channel {
            number,
            epoch,
            closing: false,
            confirm: false,
            next_seq: 1,
            acks: None,
            incoming: Incoming::new(number, max_body),
            next_tag: 1,
            unacked: BTreeMap::new(),
            consumers: BTreeMap::new(),
            prefetch: 0,
            global_prefetch: 0,
            paused: false,
            held: Vec::new(),
            last_queue: None,
        }
    }

    /// The confirm sequence number of the next publish, in confirm mode.
    pub fn next_confirm(&mut self) -> Option<u64> {
        self.confirm.then(|| {
            self.next_seq += 1;
            self.next_seq - 1
        })
    }

    /// Publish `seq` is stored (`true`) or refused: a stored one joins the run of acks when it
    /// follows it; anything else sends the run first, so confirms go out in order.
    pub fn confirmed(&mut self, seq: u64, stored: bool, out: &mut Vec<Action>) {
        if stored {
            self.acks = match self.acks {
                Some((first, last)) if last + 1 == seq => Some((first, seq)),
                Some(run) => {
                    self.send_acks(run, out);
                    Some((seq, seq))
                }
                None => Some((seq, seq)),
            };
        } else {
            if let Some(run) = self.acks.take() {
                self.send_acks(run, out);
            }
            let nack = basic::Nack { delivery_tag: seq, multiple: false, requeue: false };
            out.push(Action::send(self.number, AMQPClass::Basic(basic::AMQPMethod::Nack(nack))));
        }
    }

    /// Sends the run of acks gathered so far.
    pub fn flush_confirms(&mut self, out: &mut Vec<Action>) {
        if let Some(run) = self.acks.take() {
            self.send_acks(run, out);
        }
    }

    fn send_acks(&self, (first, last): (u64, u64), out: &mut Vec<Action>) {
        let ack = basic::Ack { delivery_tag: last, multiple: last > first };
        out.push(Action::send(self.number, AMQPClass::Basic(basic::AMQPMethod::Ack(ack))));
    }

    /// Takes the deliveries a `Basic.Ack` / `Nack` / `Reject` names: tag alone, or every tag up
    /// to it with `multiple` (tag 0 with `multiple`: every outstanding one). In tag order.
    pub fn settle(&mut self, tag: u64, multiple: bool) -> Result<Vec<Unacked>, AmqpError> {
        if !multiple {
            return match self.unacked.remove(&tag) {
                Some(unacked) => Ok(vec![unacked]),
                None => Err(unknown_tag(tag)),
            };
        }
        if tag != 0 && !self.unacked.contains_key(&tag) {
            return Err(unknown_tag(tag));
        }
        let upto = if tag == 0 { u64::MAX } else { tag };
        let rest = self.unacked.split_off(&upto.saturating_add(1));
        Ok(std::mem::replace(&mut self.unacked, rest).into_values().collect())
    }

    /// Gives `delivery` this channel's next delivery tag (kept for its ack unless `no_ack`) and
    /// the frames that carry it, with the method `method(tag, redelivered, exchange, routing
    /// key)` makes.
    pub fn message(
        &mut self,
        queue: &str,
        delivery: Delivery,
        no_ack: bool,
        method: impl FnOnce(u64, bool, ShortString, ShortString) -> AMQPClass,
    ) -> Action {
        let delivery_tag = self.next_tag;
        self.next_tag += 1;
        if !no_ack {
            self.unacked.insert(delivery_tag, Unacked { queue: queue.to_owned(), receipt: delivery.receipt });
        }
        let out = Outgoing::of(&delivery, queue);
        let method =
            method(delivery_tag, delivery.deliveries > 1, out.exchange.into(), out.routing_key.into());
        Action::SendContent {
            channel: self.number,
            method,
            properties: out.properties,
            body: delivery.payload,
        }
    }

    /// Ends the channel's consumers and gives back every delivery it has not settled: unacked
    /// in tag order, then held in the order they came.
    pub fn release(&mut self) -> Released {
        let consumers = std::mem::take(&mut self.consumers).into_values().collect();
        let mut returns: Vec<Unacked> = std::mem::take(&mut self.unacked).into_values().collect();
        returns.extend(
            std::mem::take(&mut self.held)
                .into_iter()
                .map(|h| Unacked { queue: h.queue, receipt: h.delivery.receipt }),
        );
        Released { consumers, returns }
    }
}

fn unknown_tag(tag: u64) -> AmqpError {
    AmqpError::precondition(format!("unknown delivery tag {tag}"))
}
