//! One AMQP connection's I/O after its handshake. The protocol is the [`Machine`]'s; this file
//! reads frames and feeds them to it, carries out its actions (writes, and calls to the node
//! through [`Session`]), feeds replies and effects back, and keeps the heartbeats.
//!
//! ```text
//!  read half ─► decode ─► Machine::handle ─► actions ─┬─► out buffer ─► writer task ─► write half
//!  router ─── effects ─────────►  ▲                   ├─► Session::submit / propose / query
//!  replies, oldest first ─────────┘ ◄─────────────────┘
//! ```
//!
//! Flow control (`crate::flow`): after each read round the session weighs the queues the round
//! published to. At `queue-flow-limit` the read half is left alone — the client's publishes wait
//! in its socket, as under RabbitMQ's "flow" state — until a look every [`flow::RECHECK`] finds
//! them below half of it. Everything else goes on meanwhile: replies and confirms of what was
//! read, deliveries to this connection's consumers, heartbeats both ways (the write side never
//! waits on the read side).

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::sync::oneshot::error::TryRecvError;
use tokio::time::Sleep;
use turnstile_amqp::content::write_content;
use turnstile_amqp::frame::write_heartbeat;
use turnstile_amqp::{AmqpError, code, decode, write_method};
use turnstile_core::{Effect, Reply};
use turnstile_raft::Answer;
use turnstile_tls::MaybeTls;
use turnstile_tls::{ReadHalf, WriteHalf};

use super::handshake::{HANDSHAKE_TIMEOUT, Tuned, accept, handshake, refuse_open};
use super::machine::{Action, CLOSE_TIMEOUT, CallId, Input, Machine, NotApplied, Settings};
use super::session::{Proposed, Session, answered};
use crate::flow;
use crate::listener::Protocol;
use crate::server::Shared;
use crate::shutdown::Shutdown;

/// How long the writer gets to send what is left once the connection is over.
const WRITER_TIMEOUT: Duration = Duration::from_secs(2);

/// Most effects (deliveries) handled before the connection writes and reads again.
const MAX_EFFECTS_PER_WRITE: usize = 256;

/// Deliveries are handed to the writer once this much is queued, not only at the end of a batch.
const FLUSH_AT: usize = 64 * 1024;

pub async fn serve(
    mut stream: MaybeTls,
    peer: SocketAddr,
    id: u64,
    shared: Arc<Shared>,
    mut shutdown: Shutdown,
) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let client = super::client_info(peer, id);
    let tuned = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        handshake(&mut stream, &mut buf, peer, &shared.users, &client),
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
    // The user's `max-connections`, counted until the connection ends; past it the connection
    // is refused at `Connection.Open` with RabbitMQ's words for its per-user limit.
    let _counted = match shared.users.connect(&tuned.identity) {
        Ok(counted) => counted,
        Err(e) => {
            crate::stats::bump(&shared.stats.counters.user_connections_refused);
            tracing::info!(%peer, user = %e.user, "amqp connection refused: {e}");
            let e = AmqpError::new(
                code::NOT_ALLOWED,
                format!(
                    "access to vhost '/' refused for user '{}': user connection limit ({}) is reached \
                     (max-connections)",
                    e.user, e.max
                ),
            );
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, refuse_open(&mut stream, e)).await;
            return;
        }
    };
    // The session is opened (a log entry) before `Connection.Open` is answered, so a node that
    // cannot open one (no leader reachable) refuses the connection at connect, with the reason,
    // before the client sends anything else.
    let user = tuned.identity.name().to_owned();
    let (session, effects) = match Session::open(&shared, tuned.identity.clone(), client).await {
        Ok(opened) => opened,
        Err(e) => {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, refuse_open(&mut stream, e)).await;
            return;
        }
    };
    if let Err(e) = accept(&mut stream).await {
        tracing::info!(%peer, error = %e, "amqp connection lost while opening");
        session.close().await;
        return;
    }
    let machine = Machine::new(Settings {
        session: session.id(),
        channel_max: tuned.channel_max,
        cancel_notify: tuned.cancel_notify,
        blocked_notify: tuned.blocked_notify,
        max_payload: session.max_payload(),
        name_seed: std::collections::hash_map::RandomState::new().build_hasher().finish(),
    });
    let (read, write) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_loop(write, rx));
    tracing::debug!(%peer, %user, session = %session.id(), "amqp connection open");
    let mut conn = Connection {
        session,
        machine,
        tuned,
        read,
        buf,
        out: BytesMut::with_capacity(16 * 1024),
        tx,
        effects,
        replies: VecDeque::new(),
        actions: Vec::new(),
        ended: None,
        flow: None,
        last_read: Instant::now(),
        last_write: Instant::now(),
    };
    match conn.run(&mut shutdown).await {
        Ok(()) => tracing::debug!(%peer, "amqp connection closed"),
        Err(e) => tracing::info!(%peer, error = %e, "amqp connection ended"),
    }
    conn.flush();
    let Connection { session, tx, .. } = conn;
    drop(tx);
    session.close().await;
    let _ = tokio::time::timeout(WRITER_TIMEOUT, writer).await;
}

/// Writes what the connection produces, so a slow reader never stops the connection from
/// reading (a client blocked writing publishes while the server is blocked writing deliveries
/// would be a deadlock).
async fn write_loop(mut write: WriteHalf, mut rx: mpsc::UnboundedReceiver<Bytes>) {
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

struct Connection {
    session: Session,
    machine: Machine,
    tuned: Tuned,
    read: ReadHalf,
    buf: BytesMut,
    out: BytesMut,
    tx: mpsc::UnboundedSender<Bytes>,
    effects: mpsc::UnboundedReceiver<Effect>,
    /// Proposals in the log, oldest first; their replies arrive in this order.
    replies: VecDeque<(CallId, Answer)>,
    /// The machine's actions being carried out (kept between batches for its allocation).
    actions: Vec<Action>,
    /// Set by [`Action::End`]: the connection is over, with this error if any.
    ended: Option<Option<AmqpError>>,
    /// Set while flow control has stopped reading: when to look again.
    flow: Option<Pin<Box<Sleep>>>,
    last_read: Instant,
    last_write: Instant,
}

impl Connection {
    async fn run(&mut self, shutdown: &mut Shutdown) -> Result<(), End> {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Frames already read go to the machine; while a method waits for the log, the rest
            // stay in the buffer and nothing more is read, so one client's wait is its own.
            while self.ended.is_none() && !self.machine.is_waiting() {
                match decode(&mut self.buf, self.tuned.frame_max) {
                    Ok(Some(frame)) => self.feed(Input::Frame(frame)).await,
                    Ok(None) => break,
                    Err(e) => self.feed(Input::Unreadable(e)).await,
                }
            }
            self.feed(Input::Flush).await;
            self.flush();
            if let Some(ended) = self.ended.take() {
                return ended.map_or(Ok(()), |e| Err(End::Error(e)));
            }
            if self.flow.is_none() && self.session.flow_check(|| unapplied(&self.replies)) {
                self.flow = Some(Box::pin(tokio::time::sleep(flow::RECHECK)));
            }
            let waiting = self.machine.is_waiting();
            let stopped = waiting || self.flow.is_some();
            tokio::select! {
                read = self.read.read_buf(&mut self.buf), if !stopped => {
                    if read? == 0 {
                        return Ok(());
                    }
                    self.last_read = Instant::now();
                }
                Some(effect) = self.effects.recv(), if !waiting => {
                    self.feed(Input::Effect(effect)).await;
                    // Deliveries that are already in go out in the same write.
                    for _ in 0..MAX_EFFECTS_PER_WRITE {
                        match self.effects.try_recv() {
                            Ok(effect) => self.feed(Input::Effect(effect)).await,
                            Err(_) => break,
                        }
                    }
                }
                reply = front(&mut self.replies) => {
                    let (id, _) = self.replies.pop_front().expect("the front reply came");
                    self.feed(Input::Reply { id, reply }).await;
                    // Replies that are already in go in the same write.
                    while let Some((id, answer)) = self.replies.front_mut() {
                        let reply = match answer.try_recv() {
                            Ok(reply) => answered(Some(reply)),
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Closed) => answered(None),
                        };
                        let id = *id;
                        self.replies.pop_front();
                        self.feed(Input::Reply { id, reply }).await;
                    }
                }
                () = recheck(&mut self.flow) => {
                    if self.session.flow_released(|| unapplied(&self.replies)) {
                        self.flow = None;
                    } else if let Some(sleep) = &mut self.flow {
                        sleep.as_mut().reset(tokio::time::Instant::now() + flow::RECHECK);
                    }
                }
                _ = tick.tick() => self.housekeeping(stopped).await?,
                () = shutdown.recv() => self.feed(Input::Shutdown).await,
            }
        }
    }

    /// Heartbeats both ways; the machine's own timers (close handshake, `Connection.Blocked`).
    async fn housekeeping(&mut self, stopped: bool) -> Result<(), End> {
        let heartbeat = self.tuned.heartbeat;
        if heartbeat > 0 {
            let interval = Duration::from_secs(heartbeat.into());
            if stopped {
                // Nothing is read while a method waits or flow control holds the connection: that
                // silence is ours, not the client's.
                self.last_read = Instant::now();
            }
            if self.last_read.elapsed() > interval * 2 {
                return Err(End::Heartbeat(heartbeat));
            }
            if self.last_write.elapsed() >= interval / 2 {
                write_heartbeat(&mut self.out);
            }
        }
        let memory_full = self.session.memory_full();
        self.feed(Input::Tick { memory_full }).await;
        Ok(())
    }

    /// Gives the machine one input and carries out what it asks for, replies known at once
    /// included.
    async fn feed(&mut self, input: Input) {
        self.machine.handle(Instant::now(), input);
        loop {
            let mut actions = std::mem::take(&mut self.actions);
            self.machine.take_actions(&mut actions);
            if actions.is_empty() {
                self.actions = actions;
                return;
            }
            for action in actions.drain(..) {
                self.carry_out(action).await;
            }
            self.actions = actions;
        }
    }

    async fn carry_out(&mut self, action: Action) {
        match action {
            Action::Send { channel, method } => write_method(&mut self.out, channel, &method),
            Action::SendContent { channel, method, properties, body } => {
                write_content(&mut self.out, channel, &method, &properties, &body, self.tuned.frame_max);
                if self.out.len() >= FLUSH_AT {
                    self.flush();
                }
            }
            Action::Submit(command) => self.session.submit(command).await,
            Action::Propose { id, command } => match self.session.propose(command).await {
                Proposed::Pending(answer) => self.replies.push_back((id, answer)),
                Proposed::Known(reply) => self.machine.handle(Instant::now(), Input::Reply { id, reply }),
            },
            Action::Query { id, query } => {
                let reply = self.session.query(query).await;
                self.machine.handle(Instant::now(), Input::Reply { id, reply });
            }
            Action::Measured { method, elapsed } => {
                crate::metrics::record_command(self.session.stats(), Protocol::Amqp, method, elapsed)
            }
            Action::End(error) => self.ended = Some(error),
        }
    }

    fn flush(&mut self) {
        if !self.out.is_empty() {
            let _ = self.tx.send(self.out.split().freeze());
            self.last_write = Instant::now();
        }
    }
}

/// Proposals whose reply has not come: not applied yet (a reply is sent once its entry is).
fn unapplied(replies: &VecDeque<(CallId, Answer)>) -> u64 {
    replies.iter().filter(|(_, answer)| answer.is_empty()).count() as u64
}

/// Resolves when a connection stopped by flow control should look again; never when it reads.
async fn recheck(flow: &mut Option<Pin<Box<Sleep>>>) {
    match flow {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The reply to the oldest proposal in the log, when it comes.
async fn front(replies: &mut VecDeque<(CallId, Answer)>) -> Result<Reply, NotApplied> {
    match replies.front_mut() {
        Some((_, answer)) => answered(answer.await.ok()),
        None => std::future::pending().await,
    }
}
