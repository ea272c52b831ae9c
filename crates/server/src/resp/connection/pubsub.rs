//! Subscribed mode: what a RESP connection may send once it subscribes, the (un)subscribe
//! confirmations, `PUBLISH` through the log, and writing the messages published to it.
//!
//! In RESP2 a subscribed connection is a one-way channel, as in Redis: replies and messages
//! share the socket with nothing to tell them apart, so only the (un)subscribe commands, `PING`
//! (answered `["pong", ""]`, a shape a subscriber can tell from a message), `QUIT` and `RESET`
//! are taken; anything else gets Redis 7's refusal. In RESP3 messages are push frames, so every
//! command is allowed and replies and pushes interleave.

use std::sync::Arc;

use bytes::Bytes;
use turnstile_core::{Command, Reply};
use turnstile_resp::cmd::pubsub::{Notice, confirmation, help, message, refused_when_subscribed};
use turnstile_resp::cmd::{self, Action, PubSubCmd, ReplyShape};
use turnstile_resp::{Frame, Protocol};

use super::{ConnError, Connection, Flow, refused};
use crate::clients::Client;
use crate::pubsub::Kind;

/// The commands a RESP2 subscriber may send, by full name.
const ALLOWED_WHEN_SUBSCRIBED: [&str; 7] =
    ["subscribe", "psubscribe", "unsubscribe", "punsubscribe", "ping", "quit", "reset"];

/// Parses a request as [`cmd::parse`] does, refusing what a RESP2 subscriber may not send. As in
/// Redis, an unknown command or a wrong number of arguments is answered as such first, and the
/// refusal comes before any check of the arguments themselves. (A function of a pair, not a
/// closure: the request loop's future must stay `Send` for every lifetime.)
pub(super) fn parse((args, client): (&Vec<Bytes>, &Arc<Client>)) -> Result<Action, Frame> {
    if client.is_subscriber() && !client.resp3() {
        let name = cmd::full_name(args)?;
        if !ALLOWED_WHEN_SUBSCRIBED.contains(&name) {
            return Err(refused_when_subscribed(name));
        }
    }
    cmd::parse(args)
}

impl Connection {
    /// Whether the connection is in RESP2's subscribed mode.
    pub(super) fn subscribed_resp2(&self) -> bool {
        self.protocol == Protocol::Resp2 && self.client.is_subscriber()
    }

    pub(super) async fn pubsub(&mut self, c: PubSubCmd) -> Result<Flow, ConnError> {
        let pubsub = self.shared.pubsub.clone();
        match c {
            PubSubCmd::Subscribe(names) => self.subscribe(Kind::Channel, names),
            PubSubCmd::PSubscribe(names) => self.subscribe(Kind::Pattern, names),
            PubSubCmd::Unsubscribe(names) => self.unsubscribe(Kind::Channel, names),
            PubSubCmd::PUnsubscribe(names) => self.unsubscribe(Kind::Pattern, names),
            PubSubCmd::Publish { channel, message } => {
                let publish = Command::PubSubPublish { channel: channel.clone(), message };
                let frame = match self.session.propose(publish).await {
                    // Applied: every node delivers it; the count is this node's.
                    Ok(Reply::Int(_)) => integer(pubsub.receivers(&channel)),
                    Ok(other) => cmd::render(ReplyShape::Integer, other, self.protocol),
                    Err(e) => refused(&e),
                };
                self.write(&frame);
            }
            PubSubCmd::Channels(pattern) => {
                let names = pubsub.channels(pattern.as_deref());
                self.write(&Frame::Array(names.into_iter().map(Frame::Bulk).collect()));
            }
            PubSubCmd::NumSub(channels) => {
                let counts = channels
                    .into_iter()
                    .flat_map(|channel| {
                        let count = integer(pubsub.numsub(&channel));
                        [Frame::Bulk(channel), count]
                    })
                    .collect();
                self.write(&Frame::Array(counts));
            }
            PubSubCmd::NumPat => self.write(&integer(pubsub.numpat())),
            PubSubCmd::Help => self.write(&help()),
        }
        Ok(Flow::Continue)
    }

    /// One confirmation per name, each with the count after it, as Redis sends them.
    fn subscribe(&mut self, kind: Kind, names: Vec<Bytes>) {
        let notice = match kind {
            Kind::Channel => Notice::Subscribe,
            Kind::Pattern => Notice::PSubscribe,
        };
        for name in names {
            let count = self.shared.pubsub.subscribe(&self.client, kind, name.clone());
            self.write(&confirmation(notice, Some(name), count));
        }
    }

    /// One confirmation per name dropped (every subscribed one when none is named); with nothing
    /// to drop, one with a nil name and the count, as Redis answers.
    fn unsubscribe(&mut self, kind: Kind, names: Vec<Bytes>) {
        let notice = match kind {
            Kind::Channel => Notice::Unsubscribe,
            Kind::Pattern => Notice::PUnsubscribe,
        };
        let pubsub = self.shared.pubsub.clone();
        let names = if names.is_empty() { pubsub.subscribed(&self.client, kind) } else { names };
        if names.is_empty() {
            self.write(&confirmation(notice, None, self.client.subscription_count()));
        }
        for name in names {
            let count = pubsub.unsubscribe(&self.client, kind, &name);
            self.write(&confirmation(notice, Some(name), count));
        }
    }

    /// Moves the messages waiting in the connection's outbox to its output, oldest first.
    pub(super) fn write_messages(&mut self) {
        for m in self.client.outbox.take() {
            self.write(&message(m.pattern, m.channel, m.message));
        }
    }
}

fn integer(n: usize) -> Frame {
    Frame::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}
