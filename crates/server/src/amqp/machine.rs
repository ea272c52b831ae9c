//! One AMQP connection, after its handshake, as a pure state machine: frames from the client,
//! replies from the log and effects from the state machine in; a list of [`Action`]s out. It
//! does no I/O and reads no clock (the time comes with each input); the shell in
//! `connection.rs` reads and writes the socket, calls the node, and feeds back what comes of it.
//!
//! ```text
//!  Input::Frame ───────┐                                ┌─► Action::Send / SendContent ─► socket
//!  Input::Effect ──────┼─► Machine::handle ─► actions ──┼─► Action::Submit (ordered, unanswered)
//!  Input::Reply{id} ───┘        ▲                       ├─► Action::Propose{id} / Query{id} ─► node
//!                               └──── reply, by id ◄────┘
//! ```
//!
//! Ordering is the machine's job. Publishes are proposed without waiting, and their confirms go
//! out in publish order, runs of acks collapsed into one `multiple` ack when the shell says it is
//! about to write ([`Input::Flush`]); a mandatory publish that went nowhere gets its
//! `Basic.Return` before its confirm. Acks, nacks and rejects are submitted at once. Every other
//! method is synchronous: it first waits until the connection's earlier publishes have their
//! replies (so it sees their effect, as RabbitMQ's per-channel ordering promises), then runs, and
//! while it waits for a reply of its own, frames and effects that come are kept and run after it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hasher;
use std::time::{Duration, Instant};

use bytes::Bytes;
use turnstile_amqp::content::{ContentError, Message};
use turnstile_amqp::{
    AMQPClass, AmqpError, Frame, FrameError, Scope, basic, channel as chan, code, connection,
};
use turnstile_core::{Command, CoreError, Delivery, Effect, Query, Reply, SessionId, Taker};

use super::channel::{Channel, Unacked};
use super::message::publish_command;
use super::methods::Step;

/// How long the server waits for `Connection.CloseOk` after closing a connection.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the machine is given when the connection opens.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The core session this connection is (deliveries, exclusive queues and consumers are its).
    pub session: SessionId,
    /// From `Connection.Tune`: channels above it are a connection error.
    pub channel_max: u16,
    /// The client handles a server-sent `Basic.Cancel` (capability `consumer_cancel_notify`).
    pub cancel_notify: bool,
    /// The client shows `Connection.Blocked` / `Unblocked` (capability `connection.blocked`).
    pub blocked_notify: bool,
    /// The largest message body accepted.
    pub max_payload: u64,
    /// Makes server-made names (`amq.gen-…`, `amq.ctag-…`) differ between connections and
    /// restarts while the machine stays deterministic.
    pub name_seed: u64,
}

/// The id the machine gives a command or query whose reply it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallId(pub u64);

/// Why a proposed command or query has no reply from the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotApplied {
    /// Refused before the log: stored messages are at the memory limit (`--max-memory`).
    MemoryFull,
    /// The log did not take it or could not answer (not the leader, shutting down), as the
    /// error the client is told.
    Log(AmqpError),
}

/// What happens to the connection.
#[derive(Debug)]
pub enum Input {
    /// A frame from the client.
    Frame(Frame),
    /// Bytes that are not a frame: nothing after them can be trusted.
    Unreadable(FrameError),
    /// The reply to an [`Action::Propose`] or [`Action::Query`].
    Reply { id: CallId, reply: Result<Reply, NotApplied> },
    /// An effect for this connection's session: deliveries, a consumer the server cancelled.
    Effect(Effect),
    /// The shell is about to write: runs of confirms gathered so far go out.
    Flush,
    /// About once a second: the close handshake's timeout, and `Connection.Unblocked` once
    /// memory is below the limit again.
    Tick { memory_full: bool },
    /// The server is shutting down.
    Shutdown,
}

/// What the shell is asked to do, in this order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A method frame to the client.
    Send { channel: u16, method: AMQPClass },
    /// A method with its content (`Basic.Deliver`, `Basic.GetOk`, `Basic.Return`): the shell
    /// writes the header and splits the body at `frame_max`.
    SendContent { channel: u16, method: AMQPClass, properties: Bytes, body: Bytes },
    /// A command for the log whose reply nothing waits for (acks, returns, cancels). Still
    /// ordered: it is applied after every command this connection submitted or proposed before.
    Submit(Command),
    /// A command for the log; its reply comes back as [`Input::Reply`] with this id.
    Propose { id: CallId, command: Command },
    /// A read of the state machine; its reply comes back as [`Input::Reply`] with this id.
    Query { id: CallId, query: Query },
    /// A method on an open channel is done, this long after it came (the latency metric).
    Measured { method: &'static str, elapsed: Duration },
    /// The connection is over: write what is queued, then close. `None` when it ended cleanly
    /// (the client closed it, or the server is shutting down).
    End(Option<AmqpError>),
}

impl Action {
    pub fn send(channel: u16, method: AMQPClass) -> Action {
        Action::Send { channel, method }
    }
}

#[derive(Debug)]
pub struct Machine {
    settings: Settings,
    channels: BTreeMap<u16, Channel>,
    /// Core consumer id → (channel, consumer tag).
    consumers: HashMap<u64, (u16, String)>,
    /// Publishes in the log, oldest first: their confirms go out in this order.
    publishes: VecDeque<Publishing>,
    /// The synchronous method under way, when it waits.
    waiting: Option<Waiting>,
    /// Frames and effects that came while a method waited, in the order they came.
    backlog: VecDeque<Ordered>,
    next_call: u64,
    /// Channels opened so far (each opening's epoch).
    opened: u64,
    /// `Connection.Blocked` was sent (publishes refused for memory).
    blocked: bool,
    /// The server sent `Connection.Close` (when, and why) and waits for `CloseOk`.
    closing: Option<(Instant, AmqpError)>,
    ended: bool,
    /// For server-made names (queues, consumer tags).
    names: u64,
    actions: Vec<Action>,
}

/// A publish in the log.
#[derive(Debug)]
struct Publishing {
    id: CallId,
    channel: u16,
    epoch: u64,
    /// Its confirm sequence number, in confirm mode.
    seq: Option<u64>,
    /// Kept for `Basic.Return` when the publish is mandatory.
    returned: Option<Returned>,
    /// Its reply, once in (replies are used in publish order).
    reply: Option<Result<Reply, NotApplied>>,
}

#[derive(Debug)]
struct Returned {
    exchange: String,
    routing_key: String,
    raw_properties: Bytes,
    body: Bytes,
}

/// Inputs whose order matters: kept while a method waits.
#[derive(Debug)]
enum Ordered {
    Frame(Frame),
    Unreadable(FrameError),
    Effect(Effect),
}

/// A method that came on an open channel: its name and when, for the metric; its ids, for the
/// error that may close the channel.
#[derive(Debug, Clone, Copy)]
pub(super) struct Started {
    name: &'static str,
    class_id: u16,
    method_id: u16,
    at: Instant,
}

#[derive(Debug)]
struct Waiting {
    channel: u16,
    started: Started,
    on: Wait,
}

#[derive(Debug)]
enum Wait {
    /// For the connection's earlier publishes to have their replies.
    Settle(AMQPClass),
    /// For the reply to `id`; `step` says what comes next.
    Reply { id: CallId, step: Box<Step> },
}

/// How a synchronous method goes on.
#[derive(Debug)]
pub(super) enum Flow {
    Done,
    /// Boxed: a step can be large (a declare's arguments) and most methods never wait.
    Wait {
        id: CallId,
        step: Box<Step>,
    },
}

impl Machine {
    pub fn new(settings: Settings) -> Machine {
        Machine {
            settings,
            channels: BTreeMap::new(),
            consumers: HashMap::new(),
            publishes: VecDeque::new(),
            waiting: None,
            backlog: VecDeque::new(),
            next_call: 0,
            opened: 0,
            blocked: false,
            closing: None,
            ended: false,
            names: 0,
            actions: Vec::new(),
        }
    }

    /// Whether a method waits for replies. The shell keeps feeding replies (and ticks), and
    /// should hold back frames and effects until it is over: the machine would keep them anyway.
    pub fn is_waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// Moves the actions produced so far to the end of `into`.
    pub fn take_actions(&mut self, into: &mut Vec<Action>) {
        into.append(&mut self.actions);
    }

    pub fn handle(&mut self, now: Instant, input: Input) {
        if self.ended {
            return;
        }
        match input {
            Input::Frame(frame) => self.ordered(now, Ordered::Frame(frame)),
            Input::Unreadable(e) => self.ordered(now, Ordered::Unreadable(e)),
            Input::Effect(effect) => self.ordered(now, Ordered::Effect(effect)),
            Input::Reply { id, reply } => self.on_reply(now, id, reply),
            Input::Flush => self.flush_confirms(),
            Input::Tick { memory_full } => self.on_tick(now, memory_full),
            Input::Shutdown => {
                let e = AmqpError::new(
                    code::CONNECTION_FORCED,
                    "broker forced connection closure with reason 'shutdown'",
                );
                self.actions.push(Action::send(0, close_method(&e)));
                self.end(None);
            }
        }
        // What came while a method waited runs once it is done, until one waits again.
        while self.waiting.is_none() && !self.ended {
            let Some(input) = self.backlog.pop_front() else { break };
            self.run_ordered(now, input);
        }
    }

    fn ordered(&mut self, now: Instant, input: Ordered) {
        if self.waiting.is_some() {
            self.backlog.push_back(input);
        } else {
            self.run_ordered(now, input);
        }
    }

    fn run_ordered(&mut self, now: Instant, input: Ordered) {
        match input {
            Ordered::Frame(frame) => self.on_frame(now, frame),
            Ordered::Unreadable(e) => {
                // Nothing after a bad frame can be trusted: close, and read no more.
                let e = AmqpError::from(&e);
                self.actions.push(Action::send(0, close_method(&e)));
                self.end(Some(e));
            }
            Ordered::Effect(effect) => self.on_effect(effect),
        }
    }

    fn end(&mut self, error: Option<AmqpError>) {
        self.ended = true;
        self.actions.push(Action::End(error));
    }

    fn on_frame(&mut self, now: Instant, frame: Frame) {
        if let Some((_, e)) = &self.closing {
            // After our Connection.Close only its answer counts.
            let e = e.clone();
            match frame {
                Frame::Method {
                    channel: 0,
                    method: AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)),
                } => {
                    self.end(Some(e));
                }
                Frame::Method {
                    channel: 0,
                    method: AMQPClass::Connection(connection::AMQPMethod::Close(_)),
                } => {
                    let ok = connection::CloseOk {};
                    self.actions
                        .push(Action::send(0, AMQPClass::Connection(connection::AMQPMethod::CloseOk(ok))));
                    self.end(Some(e));
                }
                _ => {}
            }
            return;
        }
        let result = match frame {
            Frame::Heartbeat { channel: 0 } => Ok(()),
            Frame::Heartbeat { .. } => {
                Err(AmqpError::new(code::FRAME_ERROR, "heartbeat frame on a channel other than 0"))
            }
            Frame::Method { channel: 0, method } => self.on_connection_method(method),
            Frame::Method { channel, method } => self.on_channel_method(now, channel, method),
            Frame::Header { channel: 0, .. } | Frame::Body { channel: 0, .. } => {
                Err(AmqpError::from(&ContentError::ChannelZero))
            }
            Frame::Header { channel, class_id, body_size, raw_properties, .. } => {
                self.on_content(channel, Content::Header { class_id, body_size, raw_properties })
            }
            Frame::Body { channel, data } => self.on_content(channel, Content::Body(data)),
        };
        if let Err(e) = result {
            self.close_connection(now, e);
        }
    }

    fn on_connection_method(&mut self, method: AMQPClass) -> Result<(), AmqpError> {
        match method {
            AMQPClass::Connection(connection::AMQPMethod::Close(close)) => {
                let session = self.settings.session;
                tracing::debug!(%session, code = close.reply_code, text = %close.reply_text, "client closed");
                let ok = connection::CloseOk {};
                self.actions
                    .push(Action::send(0, AMQPClass::Connection(connection::AMQPMethod::CloseOk(ok))));
                self.end(None);
                Ok(())
            }
            AMQPClass::Connection(
                connection::AMQPMethod::Blocked(_) | connection::AMQPMethod::Unblocked(_),
            ) => Ok(()),
            AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(_)) => {
                let ok = connection::UpdateSecretOk {};
                self.actions
                    .push(Action::send(0, AMQPClass::Connection(connection::AMQPMethod::UpdateSecretOk(ok))));
                Ok(())
            }
            AMQPClass::Connection(_) => {
                Err(AmqpError::command_invalid("unexpected connection method after open")
                    .on(method.get_amqp_class_id(), method.get_amqp_method_id()))
            }
            other => Err(AmqpError::command_invalid("channel methods are not allowed on channel 0")
                .on(other.get_amqp_class_id(), other.get_amqp_method_id())),
        }
    }

    fn check_channel_max(&self, n: u16) -> Result<(), AmqpError> {
        if n > self.settings.channel_max {
            return Err(AmqpError::channel_error(format!(
                "channel {n} is over channel_max {}",
                self.settings.channel_max
            )));
        }
        Ok(())
    }

    /// A method on channel `n` > 0: opens the channel, or runs on it. A channel error closes
    /// only the channel; a connection error comes back as `Err`.
    fn on_channel_method(&mut self, now: Instant, n: u16, method: AMQPClass) -> Result<(), AmqpError> {
        self.check_channel_max(n)?;
        let Some(ch) = self.channels.get_mut(&n) else {
            return match method {
                AMQPClass::Channel(chan::AMQPMethod::Open(_)) => {
                    self.opened += 1;
                    self.channels.insert(n, Channel::new(n, self.opened, self.settings.max_payload));
                    self.actions
                        .push(Action::send(n, AMQPClass::Channel(chan::AMQPMethod::OpenOk(chan::OpenOk {}))));
                    Ok(())
                }
                m => Err(AmqpError::channel_error(format!("expected 'channel.open' on channel {n}"))
                    .on(m.get_amqp_class_id(), m.get_amqp_method_id())),
            };
        };
        if ch.closing {
            self.on_closing_channel(n, &method);
            return Ok(());
        }
        ch.incoming.check_method().map_err(|e| AmqpError::from(&e))?;
        let (class_id, method_id) = (method.get_amqp_class_id(), method.get_amqp_method_id());
        let started = Started {
            name: turnstile_amqp::frame::method_name(class_id, method_id),
            class_id,
            method_id,
            at: now,
        };
        let result = match method {
            AMQPClass::Basic(basic::AMQPMethod::Publish(publish)) => {
                if publish.immediate {
                    // As RabbitMQ since 3.0: the flag is refused outright.
                    Err(AmqpError::not_implemented("immediate=true"))
                } else {
                    ch.incoming.start(publish).map(|()| Flow::Done).map_err(|e| AmqpError::from(&e))
                }
            }
            AMQPClass::Basic(basic::AMQPMethod::Ack(ack)) => {
                self.settle(n, ack.delivery_tag, ack.multiple, Settle::Ack)
            }
            AMQPClass::Basic(basic::AMQPMethod::Nack(nack)) => {
                self.settle(n, nack.delivery_tag, nack.multiple, Settle::Return { requeue: nack.requeue })
            }
            AMQPClass::Basic(basic::AMQPMethod::Reject(reject)) => {
                self.settle(n, reject.delivery_tag, false, Settle::Return { requeue: reject.requeue })
            }
            method if !self.publishes.is_empty() => {
                self.waiting = Some(Waiting { channel: n, started, on: Wait::Settle(method) });
                return Ok(());
            }
            method => {
                self.flush_confirms();
                self.run_sync(n, method)
            }
        };
        self.complete(now, n, started, result);
        Ok(())
    }

    /// After our `Channel.Close`, only its answer (or the client's own `Close`) counts.
    fn on_closing_channel(&mut self, n: u16, method: &AMQPClass) {
        match method {
            AMQPClass::Channel(chan::AMQPMethod::CloseOk(_)) => {
                self.channels.remove(&n);
            }
            AMQPClass::Channel(chan::AMQPMethod::Close(_)) => {
                self.actions
                    .push(Action::send(n, AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {}))));
                self.channels.remove(&n);
            }
            _ => {}
        }
    }

    /// A synchronous method ran, or went on after a reply: it waits again, is done, or failed.
    fn complete(&mut self, now: Instant, n: u16, started: Started, result: Result<Flow, AmqpError>) {
        let e = match result {
            Ok(Flow::Wait { id, step }) => {
                self.waiting = Some(Waiting { channel: n, started, on: Wait::Reply { id, step } });
                return;
            }
            Ok(Flow::Done) => None,
            Err(e) => Some(e),
        };
        let elapsed = now.saturating_duration_since(started.at);
        self.actions.push(Action::Measured { method: started.name, elapsed });
        let Some(e) = e else { return };
        let e = if e.class_id == 0 { e.on(started.class_id, started.method_id) } else { e };
        match e.scope() {
            Scope::Channel => self.close_channel(n, e),
            Scope::Connection => self.close_connection(now, e),
        }
    }

    fn on_reply(&mut self, now: Instant, id: CallId, reply: Result<Reply, NotApplied>) {
        if let Some(at) = self.publishes.iter().position(|p| p.id == id) {
            if matches!(reply, Err(NotApplied::MemoryFull)) {
                // Told at once, not in confirm order: the client should stop publishing now.
                self.block();
            }
            self.publishes[at].reply = Some(reply);
            while self.publishes.front().is_some_and(|p| p.reply.is_some()) {
                let p = self.publishes.pop_front().expect("front checked");
                self.on_published(p);
            }
            if self.publishes.is_empty() {
                match self.waiting.take() {
                    Some(Waiting { channel, started, on: Wait::Settle(method) }) => {
                        self.run_settled(now, channel, started, method);
                    }
                    other => self.waiting = other,
                }
            }
            return;
        }
        match self.waiting.take() {
            Some(Waiting { channel, started, on: Wait::Reply { id: waited, step } }) if waited == id => {
                let reply = match reply {
                    Ok(Reply::Error(e)) => Err(core_error(&e)),
                    Ok(reply) => Ok(reply),
                    Err(NotApplied::Log(e)) => Err(e),
                    Err(NotApplied::MemoryFull) => {
                        Err(AmqpError::precondition(crate::session::Refused::OutOfMemory.to_string()))
                    }
                };
                let result = self.resume(channel, *step, reply);
                self.complete(now, channel, started, result);
            }
            other => {
                self.waiting = other;
                tracing::debug!(session = %self.settings.session, ?id, "reply that nothing waits for");
            }
        }
    }

    /// A synchronous method whose channel's earlier publishes are now applied.
    fn run_settled(&mut self, now: Instant, n: u16, started: Started, method: AMQPClass) {
        // A publish's reply may have closed its channel meanwhile.
        match self.channels.get(&n) {
            None => return,
            Some(ch) if ch.closing => {
                self.on_closing_channel(n, &method);
                return;
            }
            Some(_) => {}
        }
        self.flush_confirms();
        let result = self.run_sync(n, method);
        self.complete(now, n, started, result);
    }

    /// The complete message on channel `n` goes to the log.
    fn publish(&mut self, n: u16, message: Message<basic::Publish>) {
        let Some(ch) = self.channels.get_mut(&n) else { return };
        let seq = ch.next_confirm();
        let epoch = ch.epoch;
        let Message { method: publish, raw_properties, body } = message;
        let returned = publish.mandatory.then(|| Returned {
            exchange: publish.exchange.to_string(),
            routing_key: publish.routing_key.to_string(),
            raw_properties: raw_properties.clone(),
            body: body.clone(),
        });
        let command = match publish_command(&publish, &raw_properties, body) {
            Ok(command) => command,
            Err(e) => {
                self.close_channel(n, e.on(60, 40));
                return;
            }
        };
        let id = self.propose(command);
        self.publishes.push_back(Publishing { id, channel: n, epoch, seq, returned, reply: None });
    }

    /// A publish's reply: `Basic.Return` if it was mandatory and went nowhere, then its confirm.
    fn on_published(&mut self, p: Publishing) {
        let n = p.channel;
        if self.closing.is_some() || self.channels.get(&n).is_none_or(|ch| ch.closing || ch.epoch != p.epoch)
        {
            return;
        }
        let stored = match p.reply.expect("only answered publishes are taken") {
            Ok(Reply::Published { routed, refused }) => {
                if routed == 0
                    && refused == 0
                    && let Some(r) = p.returned
                {
                    let ret = basic::Return {
                        reply_code: code::NO_ROUTE,
                        reply_text: "NO_ROUTE".into(),
                        exchange: r.exchange.as_str().into(),
                        routing_key: r.routing_key.as_str().into(),
                    };
                    self.actions.push(Action::SendContent {
                        channel: n,
                        method: AMQPClass::Basic(basic::AMQPMethod::Return(ret)),
                        properties: r.raw_properties,
                        body: r.body,
                    });
                }
                refused == 0
            }
            Ok(Reply::Error(e @ (CoreError::NoSuchExchange(_) | CoreError::AccessRefused(_)))) => {
                self.close_channel(n, core_error(&e).on(60, 40));
                return;
            }
            Ok(other) => {
                tracing::debug!(session = %self.settings.session, ?other, "publish refused");
                false
            }
            // The log could not take it because this node cannot serve now (no leader
            // reachable, not the leader): the channel closes with the reason, so a publisher
            // with or without confirms learns it; earlier confirms went out already.
            Err(NotApplied::Log(e)) if e.scope() == Scope::Channel => {
                self.flush_confirms();
                self.close_channel(n, e.on(60, 40));
                return;
            }
            Err(e) => {
                tracing::debug!(session = %self.settings.session, error = ?e, "publish not applied");
                false
            }
        };
        let Some(seq) = p.seq else { return };
        let ch = self.channels.get_mut(&n).expect("checked above");
        ch.confirmed(seq, stored, &mut self.actions);
    }

    /// Sends the runs of confirms gathered since the last write, `multiple` where there are several.
    fn flush_confirms(&mut self) {
        for ch in self.channels.values_mut() {
            ch.flush_confirms(&mut self.actions);
        }
    }

    fn block(&mut self) {
        if !self.blocked {
            self.blocked = true;
            if self.settings.blocked_notify {
                let blocked = connection::Blocked { reason: "low on memory".into() };
                self.actions
                    .push(Action::send(0, AMQPClass::Connection(connection::AMQPMethod::Blocked(blocked))));
            }
        }
    }

    fn on_tick(&mut self, now: Instant, memory_full: bool) {
        if let Some((since, e)) = &self.closing
            && now.saturating_duration_since(*since) > CLOSE_TIMEOUT
        {
            let e = e.clone();
            self.end(Some(e));
            return;
        }
        if self.blocked && !memory_full {
            self.blocked = false;
            if self.settings.blocked_notify {
                let unblocked = connection::Unblocked {};
                self.actions.push(Action::send(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Unblocked(unblocked)),
                ));
            }
        }
    }

    /// `Basic.Ack` / `Nack` / `Reject`: the deliveries they name are settled in the log at once.
    fn settle(&mut self, n: u16, tag: u64, multiple: bool, settle: Settle) -> Result<Flow, AmqpError> {
        let ch = self.channels.get_mut(&n).expect("an open channel");
        let settled = ch.settle(tag, multiple)?;
        match settle {
            Settle::Ack => {
                // One command per queue, receipts in tag order.
                let mut by_queue: Vec<(String, Vec<u64>)> = Vec::new();
                for Unacked { queue, receipt } in settled {
                    match by_queue.iter_mut().find(|(q, _)| *q == queue) {
                        Some((_, receipts)) => receipts.push(receipt),
                        None => by_queue.push((queue, vec![receipt])),
                    }
                }
                for (queue, receipts) in by_queue {
                    self.actions.push(Action::Submit(Command::Ack { queue, receipts, fence: None }));
                }
            }
            Settle::Return { requeue } => {
                for Unacked { queue, receipt } in settled {
                    self.submit_nack(queue, receipt, !requeue);
                }
            }
        }
        Ok(Flow::Done)
    }

    pub(super) fn submit_nack(&mut self, queue: String, receipt: u64, dead_letter: bool) {
        self.actions.push(Action::Submit(Command::Nack { queue, receipt, delay: 0, dead_letter }));
    }

    fn on_effect(&mut self, effect: Effect) {
        if self.closing.is_some() {
            // Nothing more goes to a client after Connection.Close; the session's close returns
            // these deliveries.
            return;
        }
        match effect {
            Effect::Delivered { to: Taker::Consumer { consumer_id }, queue, deliveries, .. } => {
                for d in deliveries {
                    self.deliver(consumer_id, &queue, d);
                }
            }
            Effect::ConsumerCancelled { consumer_id, .. } => {
                let Some((n, tag)) = self.consumers.remove(&consumer_id) else { return };
                if let Some(ch) = self.channels.get_mut(&n) {
                    ch.consumers.remove(&tag);
                    if self.settings.cancel_notify && !ch.closing {
                        let cancel = basic::Cancel { consumer_tag: tag.into(), nowait: true };
                        self.actions
                            .push(Action::send(n, AMQPClass::Basic(basic::AMQPMethod::Cancel(cancel))));
                    }
                }
            }
            _ => {}
        }
    }

    /// Sends one delivery to its consumer, holds it while the channel's flow is stopped, or
    /// returns it when the consumer is gone.
    pub(super) fn deliver(&mut self, consumer_id: u64, queue: &str, d: Delivery) {
        let target = self.consumers.get(&consumer_id).and_then(|(n, tag)| {
            let ch = self.channels.get_mut(n)?;
            let no_ack = ch.consumers.get(tag)?.no_ack;
            Some((ch, tag, no_ack))
        });
        let Some((ch, tag, no_ack)) = target else {
            // Delivered before a cancel was applied: back to the queue.
            self.submit_nack(queue.to_owned(), d.receipt, false);
            return;
        };
        if ch.paused {
            ch.held.push(super::channel::Held { consumer_id, queue: queue.to_owned(), delivery: d });
            return;
        }
        let action = ch.message(queue, d, no_ack, |delivery_tag, redelivered, exchange, routing_key| {
            AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: tag.as_str().into(),
                delivery_tag,
                redelivered,
                exchange,
                routing_key,
            }))
        });
        self.actions.push(action);
    }

    fn on_content(&mut self, n: u16, content: Content) -> Result<(), AmqpError> {
        self.check_channel_max(n)?;
        let Some(ch) = self.channels.get_mut(&n) else {
            return Err(AmqpError::from(&ContentError::ChannelNotOpen { channel: n }));
        };
        if ch.closing {
            // Dropped while the channel closes (the rest of a refused message, say).
            return Ok(());
        }
        let result = match content {
            Content::Header { class_id, body_size, raw_properties } => {
                ch.incoming.header(class_id, body_size, raw_properties)
            }
            Content::Body(data) => ch.incoming.body(&data),
        };
        match result {
            Ok(Some(message)) => self.publish(n, message),
            Ok(None) => {}
            Err(e @ ContentError::TooLarge { .. }) => self.close_channel(n, AmqpError::from(&e)),
            Err(e) => return Err(AmqpError::from(&e)),
        }
        Ok(())
    }

    /// Closes channel `n` because of `e`: its consumers stop, its unacked deliveries go back.
    pub(super) fn close_channel(&mut self, n: u16, e: AmqpError) {
        tracing::debug!(session = %self.settings.session, channel = n, error = %e, "closing channel");
        self.release_channel(n);
        if let Some(ch) = self.channels.get_mut(&n) {
            ch.closing = true;
            ch.incoming.abort();
            ch.acks = None;
        }
        let close = chan::Close {
            reply_code: e.code,
            reply_text: e.reply_text().into(),
            class_id: e.class_id,
            method_id: e.method_id,
        };
        self.actions.push(Action::send(n, AMQPClass::Channel(chan::AMQPMethod::Close(close))));
    }

    /// Cancels the channel's consumers and returns its unacked and held deliveries to their queues.
    pub(super) fn release_channel(&mut self, n: u16) {
        let Some(ch) = self.channels.get_mut(&n) else { return };
        let released = ch.release();
        for c in released.consumers {
            self.consumers.remove(&c.id);
            self.actions.push(Action::Submit(Command::Cancel { queue: c.queue, consumer_id: c.id }));
        }
        for Unacked { queue, receipt } in released.returns {
            self.submit_nack(queue, receipt, false);
        }
    }

    fn close_connection(&mut self, now: Instant, e: AmqpError) {
        tracing::info!(session = %self.settings.session, error = %e, "closing amqp connection");
        // Confirms already earned go out first: nothing is sent after the Close.
        self.flush_confirms();
        self.actions.push(Action::send(0, close_method(&e)));
        self.closing = Some((now, e));
    }

    pub(super) fn session(&self) -> SessionId {
        self.settings.session
    }

    pub(super) fn channel(&self, n: u16) -> &Channel {
        &self.channels[&n]
    }

    pub(super) fn channel_mut(&mut self, n: u16) -> &mut Channel {
        self.channels.get_mut(&n).expect("an open channel")
    }

    pub(super) fn remove_channel(&mut self, n: u16) {
        self.channels.remove(&n);
    }

    pub(super) fn send(&mut self, n: u16, method: AMQPClass) {
        self.actions.push(Action::send(n, method));
    }

    pub(super) fn push(&mut self, action: Action) {
        self.actions.push(action);
    }

    pub(super) fn add_consumer(&mut self, consumer_id: u64, n: u16, tag: String) {
        self.consumers.insert(consumer_id, (n, tag));
    }

    pub(super) fn remove_consumer(&mut self, consumer_id: u64) {
        self.consumers.remove(&consumer_id);
    }

    /// Proposes `command`; the method waits for its reply, then goes on with `step`.
    pub(super) fn call(&mut self, command: Command, step: Step) -> Flow {
        Flow::Wait { id: self.propose(command), step: Box::new(step) }
    }

    /// Runs `query`; the method waits for its reply, then goes on with `step`.
    pub(super) fn query(&mut self, query: Query, step: Step) -> Flow {
        let id = self.next_id();
        self.actions.push(Action::Query { id, query });
        Flow::Wait { id, step: Box::new(step) }
    }

    fn propose(&mut self, command: Command) -> CallId {
        let id = self.next_id();
        self.actions.push(Action::Propose { id, command });
        id
    }

    fn next_id(&mut self) -> CallId {
        self.next_call += 1;
        CallId(self.next_call)
    }

    /// A fresh server-made name (`amq.gen-…`, `amq.ctag-…`), unlikely to repeat across restarts.
    pub(super) fn server_name(&mut self, prefix: &str) -> String {
        self.names += 1;
        let mut h = std::hash::DefaultHasher::new();
        h.write_u64(self.settings.name_seed);
        h.write_u64(self.names);
        h.write_u64(self.settings.session.0);
        format!("{prefix}{:016x}{:04x}", h.finish(), self.names & 0xffff)
    }
}

/// A content frame on a channel.
enum Content {
    Header { class_id: u16, body_size: u64, raw_properties: Bytes },
    Body(Bytes),
}

#[derive(Debug, Clone, Copy)]
enum Settle {
    Ack,
    Return { requeue: bool },
}

pub(super) fn close_method(e: &AmqpError) -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
        reply_code: e.code,
        reply_text: e.reply_text().into(),
        class_id: e.class_id,
        method_id: e.method_id,
    }))
}

/// The AMQP error for a refusal from the core.
pub(super) fn core_error(e: &CoreError) -> AmqpError {
    match e {
        CoreError::NoSuchQueue(q) => AmqpError::not_found(format!("no queue '{q}' in vhost '/'")),
        CoreError::NoSuchExchange(_) => AmqpError::not_found(e.to_string()),
        CoreError::AccessRefused(text) => AmqpError::access_refused(text.clone()),
        CoreError::ResourceLocked(text) => AmqpError::new(code::RESOURCE_LOCKED, text.clone()),
        CoreError::Precondition(text) => AmqpError::precondition(text.clone()),
        CoreError::UnknownSession(_) => AmqpError::internal(e.to_string()),
        _ => AmqpError::precondition(e.to_string()),
    }
}

#[cfg(test)]
mod tests;
