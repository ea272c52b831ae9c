//! One AMQP connection after its handshake: frames in, channel methods, deliveries and publisher
//! confirms out.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use turnstile_amqp::content::{ContentError, Incoming, Message, write_content};
use turnstile_amqp::frame::write_heartbeat;
use turnstile_amqp::props::Stored;
use turnstile_amqp::{
    AMQPClass, AmqpError, Frame, Scope, ShortString, basic, channel, code, connection, decode, write_method,
};
use turnstile_core::{Command, CoreError, DeadReason, Delivery, Effect, Reply, SessionId, Taker};
use turnstile_raft::NodeError;

use super::handshake::{HANDSHAKE_TIMEOUT, Tuned, handshake};
use crate::server::Shared;
use crate::shutdown::Shutdown;

/// How long the server waits for `Connection.CloseOk` after closing a connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Most effects (deliveries) handled before the connection writes and reads again.
const MAX_EFFECTS_PER_WRITE: usize = 256;

type ReplyRx = oneshot::Receiver<Result<Reply, NodeError>>;

pub async fn serve(mut stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>, mut shutdown: Shutdown) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let tuned = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        handshake(&mut stream, &mut buf, peer, &shared.amqp_users),
    )
    .await
    {
        Ok(Ok(tuned)) => tuned,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "amqp handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "amqp handshake timed out");
            return;
        }
    };
    let session = match shared.node.propose(Command::OpenSession).await {
        Ok(Reply::Session(session)) => session,
        other => {
            tracing::warn!(%peer, ?other, "amqp connection without a session");
            let mut out = BytesMut::new();
            let e = AmqpError::internal("cannot open a session; try again");
            write_method(&mut out, 0, &close_method(&e));
            let _ = stream.write_all(&out).await;
            return;
        }
    };
    let effects = shared.router.register(session);
    let (read, write) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_loop(write, rx));
    tracing::debug!(%peer, user = %tuned.user, %session, "amqp connection open");
    let mut conn = Connection {
        shared: shared.clone(),
        session,
        tuned,
        read,
        buf,
        out: BytesMut::with_capacity(16 * 1024),
        tx,
        effects,
        channels: HashMap::new(),
        consumers: HashMap::new(),
        pending: VecDeque::new(),
        last_read: Instant::now(),
        last_write: Instant::now(),
        blocked: false,
        closing: None,
        names: 0,
    };
    match conn.run(&mut shutdown).await {
        Ok(()) => tracing::debug!(%peer, "amqp connection closed"),
        Err(e) => tracing::info!(%peer, error = %e, "amqp connection ended"),
    }
    conn.flush();
    drop(conn.tx);
    shared.router.unregister(session);
    // Unacked deliveries go back to their queues, exclusive queues go, in this one step.
    if let Err(e) = shared.node.propose(Command::CloseSession { session }).await {
        tracing::warn!(%session, error = %e, "session not closed; its leases will end it");
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, writer).await;
}

/// Writes what the connection produces, so a slow reader never stops the connection from
/// reading (a client blocked writing publishes while the server is blocked writing deliveries
/// would be a deadlock).
async fn write_loop(mut write: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Bytes>) {
    while let Some(bytes) = rx.recv().await {
        if write.write_all(&bytes).await.is_err() {
            return;
        }
    }
    let _ = write.shutdown().await;
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum End {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("closed after a connection error: {0}")]
    Error(AmqpError),
    #[error("missed heartbeats from client, timeout: {0}s")]
    Heartbeat(u16),
}

pub(super) struct Connection {
    pub shared: Arc<Shared>,
    pub session: SessionId,
    pub tuned: Tuned,
    read: OwnedReadHalf,
    buf: BytesMut,
    pub out: BytesMut,
    tx: mpsc::UnboundedSender<Bytes>,
    effects: mpsc::UnboundedReceiver<Effect>,
    pub channels: HashMap<u16, Channel>,
    /// Core consumer id → (channel, consumer tag).
    pub consumers: HashMap<u64, (u16, String)>,
    /// Publishes submitted to the log, oldest first; replies arrive in this order.
    pub pending: VecDeque<Pending>,
    last_read: Instant,
    last_write: Instant,
    /// `Connection.Blocked` was sent (publishes refused for memory).
    blocked: bool,
    /// The server sent `Connection.Close` and waits for `CloseOk` until then.
    closing: Option<(Instant, AmqpError)>,
    /// For server-made names (queues, consumer tags).
    pub names: u64,
}

#[derive(Debug)]
pub(super) struct Channel {
    pub closing: bool,
    /// `Confirm.Select` was seen; `next_seq` numbers the publishes from then on.
    pub confirm: bool,
    pub next_seq: u64,
    /// Acks to send, as a run of sequence numbers.
    pub acks: Option<(u64, u64)>,
    pub incoming: Incoming<basic::Publish>,
    pub next_tag: u64,
    /// Delivery tag → (queue, receipt), for deliveries that need an ack.
    pub unacked: BTreeMap<u64, (String, u64)>,
    /// Consumer tag → consumer.
    pub consumers: HashMap<String, ConsumerInfo>,
    /// `Basic.Qos` per consumer (`global = false`) and for the whole channel (`global = true`).
    pub prefetch: u32,
    pub global_prefetch: u32,
    /// `Channel.Flow` active; while not, deliveries are held here.
    pub paused: bool,
    pub held: Vec<(u64, String, Delivery)>,
    /// The queue last declared on this channel (an empty queue name means it).
    pub last_queue: Option<String>,
}

impl Channel {
    fn new(n: u16, max_body: u64) -> Channel {
        Channel {
            closing: false,
            confirm: false,
            next_seq: 1,
            acks: None,
            incoming: Incoming::new(n, max_body),
            next_tag: 1,
            unacked: BTreeMap::new(),
            consumers: HashMap::new(),
            prefetch: 0,
            global_prefetch: 0,
            paused: false,
            held: Vec::new(),
            last_queue: None,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct ConsumerInfo {
    pub id: u64,
    pub queue: String,
    pub no_ack: bool,
}

/// A publish in the log, waiting for its reply.
#[derive(Debug)]
pub(super) struct Pending {
    pub channel: u16,
    /// Its confirm sequence number, in confirm mode.
    pub seq: Option<u64>,
    pub rx: ReplyRx,
    /// Kept for `Basic.Return` when the publish is mandatory.
    pub returned: Option<Returned>,
}

#[derive(Debug)]
pub(super) struct Returned {
    pub exchange: String,
    pub routing_key: String,
    pub raw_properties: Bytes,
    pub body: Bytes,
}

/// A reply that is already known, in the shape of one from the log.
pub(super) fn ready(reply: Result<Reply, NodeError>) -> ReplyRx {
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(reply);
    rx
}

async fn front(pending: &mut VecDeque<Pending>) -> Result<Reply, NodeError> {
    match pending.front_mut() {
        Some(p) => (&mut p.rx).await.unwrap_or(Err(NodeError::ShuttingDown)),
        None => std::future::pending().await,
    }
}

impl Connection {
    async fn run(&mut self, shutdown: &mut Shutdown) -> Result<(), End> {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            loop {
                match decode(&mut self.buf, self.tuned.frame_max) {
                    Ok(Some(frame)) => {
                        if self.on_frame(frame).await? {
                            return Ok(());
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // Nothing after a bad frame can be trusted: close, and read no more.
                        let e = AmqpError::from(&e);
                        self.write(0, &close_method(&e));
                        return Err(End::Error(e));
                    }
                }
            }
            self.flush_acks();
            self.flush();
            tokio::select! {
                read = self.read.read_buf(&mut self.buf) => {
                    if read? == 0 {
                        return Ok(());
                    }
                    self.last_read = Instant::now();
                }
                Some(effect) = self.effects.recv() => {
                    self.on_effect(effect).await;
                    // Deliveries that are already in go out in the same write.
                    for _ in 0..MAX_EFFECTS_PER_WRITE {
                        match self.effects.try_recv() {
                            Ok(effect) => self.on_effect(effect).await,
                            Err(_) => break,
                        }
                    }
                }
                reply = front(&mut self.pending) => {
                    let p = self.pending.pop_front().expect("a pending publish answered");
                    self.on_published(p, reply).await;
                    // Replies that are already in go in the same write.
                    while let Some(mut p) = self.pending.pop_front() {
                        match p.rx.try_recv() {
                            Ok(reply) => self.on_published(p, reply).await,
                            Err(oneshot::error::TryRecvError::Empty) => {
                                self.pending.push_front(p);
                                break;
                            }
                            Err(oneshot::error::TryRecvError::Closed) => {
                                self.on_published(p, Err(NodeError::ShuttingDown)).await;
                            }
                        }
                    }
                }
                _ = tick.tick() => self.housekeeping()?,
                () = shutdown.recv() => {
                    let e = AmqpError::new(code::CONNECTION_FORCED, "broker forced connection closure with reason 'shutdown'");
                    self.write(0, &close_method(&e));
                    return Ok(());
                }
            }
        }
    }

    /// Heartbeats both ways, the end of a close handshake, and lifting `Connection.Blocked`.
    fn housekeeping(&mut self) -> Result<(), End> {
        let heartbeat = self.tuned.heartbeat;
        if heartbeat > 0 {
            let interval = Duration::from_secs(heartbeat.into());
            if self.last_read.elapsed() > interval * 2 {
                return Err(End::Heartbeat(heartbeat));
            }
            if self.last_write.elapsed() >= interval / 2 {
                write_heartbeat(&mut self.out);
            }
        }
        if let Some((since, e)) = &self.closing
            && since.elapsed() > CLOSE_TIMEOUT
        {
            return Err(End::Error(e.clone()));
        }
        if self.blocked && !self.over_memory() {
            self.blocked = false;
            if self.tuned.blocked_notify {
                self.write(
                    0,
                    &AMQPClass::Connection(connection::AMQPMethod::Unblocked(connection::Unblocked {})),
                );
            }
        }
        Ok(())
    }

    fn over_memory(&self) -> bool {
        self.shared.max_memory > 0 && self.shared.node.payload_bytes() >= self.shared.max_memory
    }

    pub fn write(&mut self, channel: u16, method: &AMQPClass) {
        write_method(&mut self.out, channel, method);
    }

    pub fn flush(&mut self) {
        if !self.out.is_empty() {
            let _ = self.tx.send(self.out.split().freeze());
            self.last_write = Instant::now();
        }
    }

    /// Handles one frame; `Ok(true)` when the connection is over (closed cleanly).
    async fn on_frame(&mut self, frame: Frame) -> Result<bool, End> {
        if self.closing.is_some() {
            // After our Connection.Close only its answer counts.
            return match frame {
                Frame::Method {
                    channel: 0,
                    method: AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)),
                } => {
                    let (_, e) = self.closing.take().expect("closing");
                    Err(End::Error(e))
                }
                Frame::Method {
                    channel: 0,
                    method: AMQPClass::Connection(connection::AMQPMethod::Close(_)),
                } => {
                    self.write(
                        0,
                        &AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                    );
                    let (_, e) = self.closing.take().expect("closing");
                    Err(End::Error(e))
                }
                _ => Ok(false),
            };
        }
        let result = match frame {
            Frame::Heartbeat { channel: 0 } => Ok(false),
            Frame::Heartbeat { .. } => {
                Err(AmqpError::new(code::FRAME_ERROR, "heartbeat frame on a channel other than 0"))
            }
            Frame::Method { channel: 0, method } => self.on_connection_method(method),
            Frame::Method { channel, method } => {
                self.on_channel_frame(channel, ChannelFrame::Method(method)).await.map(|()| false)
            }
            Frame::Header { channel: 0, .. } | Frame::Body { channel: 0, .. } => {
                Err(AmqpError::unexpected_frame("content frame on channel 0"))
            }
            Frame::Header { channel, class_id, body_size, raw_properties, .. } => self
                .on_channel_frame(channel, ChannelFrame::Header { class_id, body_size, raw_properties })
                .await
                .map(|()| false),
            Frame::Body { channel, data } => {
                self.on_channel_frame(channel, ChannelFrame::Body(data)).await.map(|()| false)
            }
        };
        match result {
            Ok(done) => Ok(done),
            Err(e) => {
                tracing::info!(session = %self.session, error = %e, "closing amqp connection");
                self.write(0, &close_method(&e));
                self.closing = Some((Instant::now(), e));
                Ok(false)
            }
        }
    }

    fn on_connection_method(&mut self, method: AMQPClass) -> Result<bool, AmqpError> {
        match method {
            AMQPClass::Connection(connection::AMQPMethod::Close(close)) => {
                tracing::debug!(session = %self.session, code = close.reply_code, text = %close.reply_text, "client closed");
                self.write(
                    0,
                    &AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                );
                Ok(true)
            }
            AMQPClass::Connection(
                connection::AMQPMethod::Blocked(_) | connection::AMQPMethod::Unblocked(_),
            ) => Ok(false),
            AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(_)) => {
                self.write(
                    0,
                    &AMQPClass::Connection(connection::AMQPMethod::UpdateSecretOk(
                        connection::UpdateSecretOk {},
                    )),
                );
                Ok(false)
            }
            AMQPClass::Connection(_) => {
                Err(AmqpError::command_invalid("unexpected connection method after open")
                    .on(method.get_amqp_class_id(), method.get_amqp_method_id()))
            }
            other => Err(AmqpError::command_invalid("channel methods are not allowed on channel 0")
                .on(other.get_amqp_class_id(), other.get_amqp_method_id())),
        }
    }

    /// A frame on channel `n` > 0: opens the channel, assembles content, runs methods. A channel
    /// error closes only the channel; a connection error comes back as `Err`.
    async fn on_channel_frame(&mut self, n: u16, frame: ChannelFrame) -> Result<(), AmqpError> {
        if n > self.tuned.channel_max {
            return Err(AmqpError::channel_error(format!(
                "channel {n} is over channel_max {}",
                self.tuned.channel_max
            )));
        }
        let Some(ch) = self.channels.get_mut(&n) else {
            return match frame {
                ChannelFrame::Method(AMQPClass::Channel(channel::AMQPMethod::Open(_))) => {
                    let max_body = self.shared.limits.max_bulk_len as u64;
                    self.channels.insert(n, Channel::new(n, max_body));
                    self.write(n, &AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})));
                    Ok(())
                }
                ChannelFrame::Method(m) => {
                    Err(AmqpError::channel_error(format!("expected 'channel.open' on channel {n}"))
                        .on(m.get_amqp_class_id(), m.get_amqp_method_id()))
                }
                _ => Err(AmqpError::from(&ContentError::ChannelNotOpen { channel: n })),
            };
        };
        if ch.closing {
            // After our Channel.Close, only its answer (or the client's own Close) counts.
            match frame {
                ChannelFrame::Method(AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))) => {
                    self.channels.remove(&n);
                }
                ChannelFrame::Method(AMQPClass::Channel(channel::AMQPMethod::Close(_))) => {
                    self.write(n, &AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})));
                    self.channels.remove(&n);
                }
                _ => {}
            }
            return Ok(());
        }
        match frame {
            ChannelFrame::Method(method) => {
                ch.incoming.check_method().map_err(|e| AmqpError::from(&e))?;
                let (class_id, method_id) = (method.get_amqp_class_id(), method.get_amqp_method_id());
                let started = Instant::now();
                let result = self.on_method(n, method).await;
                crate::metrics::record_command(
                    "amqp",
                    turnstile_amqp::frame::method_name(class_id, method_id),
                    started.elapsed(),
                );
                match result {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        let e = if e.class_id == 0 { e.on(class_id, method_id) } else { e };
                        match e.scope() {
                            Scope::Channel => {
                                self.close_channel(n, e).await;
                                Ok(())
                            }
                            Scope::Connection => Err(e),
                        }
                    }
                }
            }
            ChannelFrame::Header { class_id, body_size, raw_properties } => {
                match ch.incoming.header(class_id, body_size, raw_properties) {
                    Ok(Some(message)) => self.publish(n, message).await,
                    Ok(None) => {}
                    // The body frames that follow are dropped while the channel closes.
                    Err(e @ ContentError::TooLarge { .. }) => {
                        self.close_channel(n, AmqpError::from(&e)).await
                    }
                    Err(e) => return Err(AmqpError::from(&e)),
                }
                Ok(())
            }
            ChannelFrame::Body(data) => {
                match ch.incoming.body(&data) {
                    Ok(Some(message)) => self.publish(n, message).await,
                    Ok(None) => {}
                    Err(e) => return Err(AmqpError::from(&e)),
                }
                Ok(())
            }
        }
    }

    /// Closes channel `n` because of `e`: its consumers stop, its unacked deliveries go back.
    pub async fn close_channel(&mut self, n: u16, e: AmqpError) {
        tracing::debug!(session = %self.session, channel = n, error = %e, "closing channel");
        self.release_channel(n).await;
        if let Some(ch) = self.channels.get_mut(&n) {
            ch.closing = true;
            ch.incoming.abort();
            ch.acks = None;
        }
        let close = channel::Close {
            reply_code: e.code,
            reply_text: e.reply_text().into(),
            class_id: e.class_id,
            method_id: e.method_id,
        };
        self.write(n, &AMQPClass::Channel(channel::AMQPMethod::Close(close)));
    }

    /// Cancels the channel's consumers and returns its unacked and held deliveries to their queues.
    pub async fn release_channel(&mut self, n: u16) {
        let Some(ch) = self.channels.get_mut(&n) else { return };
        let consumers: Vec<ConsumerInfo> = ch.consumers.drain().map(|(_, c)| c).collect();
        let mut returns: Vec<(String, u64)> = std::mem::take(&mut ch.unacked).into_values().collect();
        returns.extend(std::mem::take(&mut ch.held).into_iter().map(|(_, q, d)| (q, d.receipt)));
        for c in consumers {
            self.consumers.remove(&c.id);
            self.submit(Command::Cancel { queue: c.queue, consumer_id: c.id }).await;
        }
        for (queue, receipt) in returns {
            self.submit(Command::Nack { queue, receipt, delay: 0, dead_letter: false }).await;
        }
    }

    /// Puts a command in the log without waiting for its reply (acks, returns, cancels): later
    /// commands from this connection are still applied after it.
    pub async fn submit(&self, cmd: Command) {
        if let Err(e) = self.shared.node.submit(cmd).await {
            tracing::debug!(session = %self.session, error = %e, "command not submitted");
        }
    }

    /// Proposes a command and waits for its reply; a refusal becomes the AMQP error for it.
    pub async fn call(&self, cmd: Command) -> Result<Reply, AmqpError> {
        match self.shared.node.propose(cmd).await {
            Ok(Reply::Error(e)) => Err(core_error(&e)),
            Ok(reply) => Ok(reply),
            Err(e) => Err(node_error(&e)),
        }
    }

    /// Runs a query at the local clock after a read-index check.
    pub async fn query(&self, query: turnstile_core::Query) -> Result<Reply, AmqpError> {
        let reply = self
            .shared
            .node
            .read(move |state| state.query(crate::ticker::now_ms(), query))
            .await
            .map_err(|e| node_error(&e))?;
        match reply {
            Reply::Error(e) => Err(core_error(&e)),
            reply => Ok(reply),
        }
    }

    /// Waits until every publish submitted so far has its reply (and its confirm is written), so
    /// a synchronous method sees their effect, as RabbitMQ's per-channel ordering promises.
    pub async fn settle(&mut self) {
        while let Some(mut p) = self.pending.pop_front() {
            let reply = (&mut p.rx).await.unwrap_or(Err(NodeError::ShuttingDown));
            self.on_published(p, reply).await;
        }
        self.flush_acks();
    }

    /// The complete message on channel `n` goes to the log.
    async fn publish(&mut self, n: u16, message: Message<basic::Publish>) {
        let ch = self.channels.get_mut(&n).expect("publishing channel exists");
        let seq = ch.confirm.then(|| {
            ch.next_seq += 1;
            ch.next_seq - 1
        });
        let Message { method: publish, raw_properties, body } = message;
        let returned = publish.mandatory.then(|| Returned {
            exchange: publish.exchange.to_string(),
            routing_key: publish.routing_key.to_string(),
            raw_properties: raw_properties.clone(),
            body: body.clone(),
        });
        self.shared.stats.commands.fetch_add(1, Ordering::Relaxed);
        let cmd = match super::methods::publish_command(&publish, &raw_properties, body) {
            Ok(cmd) => cmd,
            Err(e) => {
                self.close_channel(n, e.on(60, 40)).await;
                return;
            }
        };
        let rx = if self.shared.over_memory(&cmd) {
            self.shared.stats.rejected_oom.fetch_add(1, Ordering::Relaxed);
            if !self.blocked {
                self.blocked = true;
                if self.tuned.blocked_notify {
                    let blocked = connection::Blocked { reason: "low on memory".into() };
                    self.write(0, &AMQPClass::Connection(connection::AMQPMethod::Blocked(blocked)));
                }
            }
            ready(Ok(Reply::Error(CoreError::InvalidArgument("memory limit reached".into()))))
        } else {
            match self.shared.node.submit(cmd).await {
                Ok(rx) => rx,
                Err(e) => ready(Err(e)),
            }
        };
        self.pending.push_back(Pending { channel: n, seq, rx, returned });
    }

    /// A publish's reply: `Basic.Return` if it was mandatory and went nowhere, then its confirm.
    async fn on_published(&mut self, p: Pending, reply: Result<Reply, NodeError>) {
        let n = p.channel;
        if self.channels.get(&n).is_none_or(|ch| ch.closing) {
            return;
        }
        let stored = match reply {
            Ok(Reply::Published { routed, refused }) => {
                if routed == 0
                    && refused == 0
                    && let Some(r) = &p.returned
                {
                    let ret = basic::Return {
                        reply_code: code::NO_ROUTE,
                        reply_text: "NO_ROUTE".into(),
                        exchange: r.exchange.as_str().into(),
                        routing_key: r.routing_key.as_str().into(),
                    };
                    write_content(
                        &mut self.out,
                        n,
                        &AMQPClass::Basic(basic::AMQPMethod::Return(ret)),
                        &r.raw_properties,
                        &r.body,
                        self.tuned.frame_max,
                    );
                }
                refused == 0
            }
            Ok(Reply::Error(e @ (CoreError::NoSuchExchange(_) | CoreError::AccessRefused(_)))) => {
                self.close_channel(n, core_error(&e).on(60, 40)).await;
                return;
            }
            Ok(other) => {
                tracing::debug!(session = %self.session, ?other, "publish refused");
                false
            }
            Err(e) => {
                tracing::debug!(session = %self.session, error = %e, "publish not applied");
                false
            }
        };
        let Some(seq) = p.seq else { return };
        let ch = self.channels.get_mut(&n).expect("checked above");
        if stored {
            ch.acks = match ch.acks {
                Some((first, last)) if last + 1 == seq => Some((first, seq)),
                Some(run) => {
                    write_ack(&mut self.out, n, run);
                    Some((seq, seq))
                }
                None => Some((seq, seq)),
            };
        } else {
            if let Some(run) = ch.acks.take() {
                write_ack(&mut self.out, n, run);
            }
            let nack = basic::Nack { delivery_tag: seq, multiple: false, requeue: false };
            write_method(&mut self.out, n, &AMQPClass::Basic(basic::AMQPMethod::Nack(nack)));
        }
    }

    /// Writes the runs of acks gathered since the last write, `multiple` where there are several.
    fn flush_acks(&mut self) {
        for (&n, ch) in &mut self.channels {
            if let Some(run) = ch.acks.take() {
                write_ack(&mut self.out, n, run);
            }
        }
    }

    async fn on_effect(&mut self, effect: Effect) {
        match effect {
            Effect::Delivered { to: Taker::Consumer { consumer_id }, queue, deliveries, .. } => {
                for d in deliveries {
                    self.deliver(consumer_id, &queue, d).await;
                }
            }
            Effect::ConsumerCancelled { consumer_id, .. } => {
                let Some((n, tag)) = self.consumers.remove(&consumer_id) else { return };
                if let Some(ch) = self.channels.get_mut(&n) {
                    ch.consumers.remove(&tag);
                    if self.tuned.cancel_notify && !ch.closing {
                        let cancel = basic::Cancel { consumer_tag: tag.into(), nowait: true };
                        self.write(n, &AMQPClass::Basic(basic::AMQPMethod::Cancel(cancel)));
                    }
                }
            }
            _ => {}
        }
    }

    /// Sends one delivery to its consumer, or returns it when the consumer is gone.
    pub async fn deliver(&mut self, consumer_id: u64, queue: &str, d: Delivery) {
        let target = self.consumers.get(&consumer_id).cloned();
        let Some((n, tag)) = target else {
            // Delivered before a cancel was applied: back to the queue.
            self.submit(Command::Nack {
                queue: queue.to_owned(),
                receipt: d.receipt,
                delay: 0,
                dead_letter: false,
            })
            .await;
            return;
        };
        let ch = self.channels.get_mut(&n).expect("a consumer's channel exists");
        let Some(info) = ch.consumers.get(&tag) else { return };
        let no_ack = info.no_ack;
        if ch.paused {
            ch.held.push((consumer_id, queue.to_owned(), d));
            return;
        }
        self.write_message(n, queue, &d, no_ack, |delivery_tag, redelivered, exchange, routing_key| {
            AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: tag.into(),
                delivery_tag,
                redelivered,
                exchange,
                routing_key,
            }))
        });
        if self.out.len() >= 64 * 1024 {
            self.flush();
        }
    }

    /// Writes a `Basic.GetOk` with its message.
    pub fn write_get_ok(&mut self, n: u16, queue: &str, d: &Delivery, no_ack: bool, message_count: u32) {
        self.write_message(n, queue, d, no_ack, |delivery_tag, redelivered, exchange, routing_key| {
            AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                delivery_tag,
                redelivered,
                exchange,
                routing_key,
                message_count,
            }))
        });
    }

    /// Gives `d` channel `n`'s next delivery tag (kept for the ack unless `no_ack`) and writes it
    /// with the method `method(tag, redelivered, exchange, routing key)` makes.
    fn write_message(
        &mut self,
        n: u16,
        queue: &str,
        d: &Delivery,
        no_ack: bool,
        method: impl FnOnce(u64, bool, ShortString, ShortString) -> AMQPClass,
    ) {
        let ch = self.channels.get_mut(&n).expect("channel exists");
        let delivery_tag = ch.next_tag;
        ch.next_tag += 1;
        if !no_ack {
            ch.unacked.insert(delivery_tag, (queue.to_owned(), d.receipt));
        }
        let out = Outgoing::of(d, queue);
        let method = method(delivery_tag, d.deliveries > 1, out.exchange.into(), out.routing_key.into());
        write_content(&mut self.out, n, &method, &out.properties, &d.payload, self.tuned.frame_max);
    }
}

/// A frame for an open channel.
enum ChannelFrame {
    Method(AMQPClass),
    Header { class_id: u16, body_size: u64, raw_properties: Bytes },
    Body(Bytes),
}

/// How a stored message goes out: the exchange and routing key it was published with (a dead
/// letter: the dead-letter exchange and key it was routed with) and its properties as sent (a dead
/// letter's gain RabbitMQ's `x-death` headers).
struct Outgoing<'a> {
    exchange: &'a str,
    routing_key: &'a str,
    properties: std::borrow::Cow<'a, [u8]>,
}

impl<'a> Outgoing<'a> {
    fn of(d: &'a Delivery, queue: &'a str) -> Outgoing<'a> {
        let stored = Stored::of(&d.properties, queue);
        let Some(dead) = &d.dead else {
            return Outgoing {
                exchange: stored.exchange,
                routing_key: stored.routing_key,
                properties: stored.raw_properties.into(),
            };
        };
        let reason = match dead.reason {
            DeadReason::MaxDeliveries => "delivery_limit",
            DeadReason::Expired => "expired",
            DeadReason::Rejected => "rejected",
            DeadReason::MaxLen => "maxlen",
        };
        let properties = match turnstile_amqp::props::with_death(&stored, reason, &dead.from) {
            Some(with) => with.into(),
            None => stored.raw_properties.into(),
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

fn write_ack(out: &mut BytesMut, n: u16, (first, last): (u64, u64)) {
    let ack = basic::Ack { delivery_tag: last, multiple: last > first };
    write_method(out, n, &AMQPClass::Basic(basic::AMQPMethod::Ack(ack)));
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

/// The AMQP error for a command the log could not take.
pub(super) fn node_error(e: &NodeError) -> AmqpError {
    match e {
        NodeError::NotLeader { .. } => {
            AmqpError::new(code::CONNECTION_FORCED, format!("{e}; connect to the leader"))
        }
        _ => AmqpError::internal(e.to_string()),
    }
}
