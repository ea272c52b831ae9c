//! One RESP connection: read requests, run them, write replies, in order. What reaches the log
//! goes through the connection's [`Session`] (limits, the session, replies, waits); this file is
//! framing, parsing and rendering.
//!
//! ```text
//!  socket ──► buffer ──decode_request──► cmd::parse ──► Action
//!                                                        ├─ Connection  → answered here (PING, HELLO, INFO…)
//!                                                        ├─ Read        → Session::read (read index) → State::query
//!                                                        └─ Write       → Session::submit (admit, log) → Reply
//!                                                                          └─ Waiting? Session::settled parks
//!                                                                             until the router hands the effect over
//!  socket ◄── out buffer ◄── cmd::render ◄─────────────────────────────────┘
//! ```
//!
//! Inside `MULTI`, requests are queued by the connection's [`Transaction`] instead of run, and
//! `EXEC` sends them to the log as one entry (`transaction.rs`).
//!
//! Requests that arrive together (pipelining) are run in order and their replies are written in
//! one go; consecutive writes share log entries and consecutive reads share one read-index check.
//! The session is opened in the log the first time a command needs one (a lock, a pop), and
//! closed in the log when the connection ends, which releases its holds and returns its
//! deliveries.
//!
//! The connection is listed in the node's registry ([`Client`]) while it is open, for CLIENT LIST
//! and CLIENT KILL; messages published to its channels wait in its outbox there and are written
//! whenever it is idle or between two runs of requests. Subscribed mode and the housekeeping
//! commands live in `connection/pubsub.rs` and `connection/housekeeping.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turnstile_core::{Command, Query, Reply, SessionId};
use turnstile_raft::{AdminRequest, Answer, NodeError};
use turnstile_resp::cmd::{self, Action, ConnCmd, ReplyShape};
use turnstile_resp::{Frame, Protocol, ProtocolError, decode_request};
use turnstile_tls::MaybeTls;

use super::info;
use super::transaction::Transaction;
use crate::clients::Client;
use crate::metrics;
use crate::server::Shared;
use crate::session::{CLUSTER_DOWN, Refused, Session};
use crate::shutdown::Shutdown;

/// Replies are flushed once this much is buffered, even in the middle of a pipeline.
const FLUSH_AT: usize = 64 * 1024;
/// Most requests of one pipeline acted on before replies are flushed.
const MAX_RUN: usize = 1024;
/// A read is made with at least this much room in the buffer (it grows by [`READ_CHUNK`] when
/// less is left): a read into a nearly full buffer returns the front of a request, and the rest
/// then costs a second read and a copy into a new buffer.
const READ_ROOM: usize = 2 * 1024;
const READ_CHUNK: usize = 4 * 1024;
/// The most one read asks for. A client that keeps the socket full (a bulk load through a
/// pipeline) gets reads that double up to this, so one round carries up to [`MAX_RUN`] requests
/// and shares one log entry and one fsync, rather than the three or four 1 KiB pushes that fit in
/// [`READ_CHUNK`] (measured: 200k pipelined 1 KiB pushes ran at a third of Redis's rate for that
/// reason alone).
const READ_MAX: usize = 1024 * 1024;

/// Why a connection ended other than by the client closing it cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("client closed the connection while blocked")]
    ClosedWhileBlocked,
    #[error("client sent more than {0} bytes while blocked")]
    FloodWhileBlocked(usize),
    #[error("server is shutting down")]
    Shutdown,
    #[error("closed by CLIENT KILL, or for reading published messages too slowly")]
    Killed,
    #[error(
        "closing client that reached max query buffer length ({buffered} bytes unparsed; client-query-buffer-limit is {limit})"
    )]
    QueryBufferLimit { buffered: usize, limit: u64 },
}

// Pub/sub and client housekeeping:
mod housekeeping;
mod pubsub;
// Users and ACLs:
mod acl;

use acl::Gate;
pub(crate) use acl::close_gone;

pub struct Connection {
    stream: MaybeTls,
    buf: BytesMut,
    out: BytesMut,
    protocol: Protocol,
    /// Opened in the log on first need; see the module docs.
    session: Session,
    /// Local connection number (`CLIENT ID`).
    id: u64,
    /// What CLIENT LIST shows of it (its name among it), and its pub/sub outbox.
    client: Arc<Client>,
    /// Lists `client` in the node's registry until the connection is dropped.
    _registration: housekeeping::Registration,
    shared: Arc<Shared>,
    /// What the codec enforces, from the server's limits.
    limits: turnstile_resp::Limits,
    /// Buffers reused from one pipeline to the next, so a request costs no allocation for them.
    requests: Vec<Vec<Bytes>>,
    writes: Vec<(Command, ReplyShape)>,
    pending: Vec<(Result<Answer, Refused>, ReplyShape)>,
    command_metrics: metrics::RespCommands,
    /// `MULTI`'s queue and `WATCH`'s keys (`transaction.rs`).
    transaction: Transaction,
    /// Who may run what (`acl.rs`).
    gate: Arc<Gate>,
    /// Counts the connection against its user's `max-connections` once it authenticated.
    counted: Option<crate::auth::Counted>,
    /// How much the next read asks for: doubled while reads fill the room they are given, back
    /// to [`READ_CHUNK`] once one does not.
    read_size: usize,
}

/// Whether to keep reading after a request.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Quit,
}

impl Connection {
    pub fn new(stream: MaybeTls, id: u64, peer: SocketAddr, shared: Arc<Shared>) -> Connection {
        let (client, registration) = housekeeping::register(stream.tcp(), id, peer, &shared);
        let mut session = Session::new(shared.clone());
        // Commands are checked by the command table here; the session checks their names.
        session.commands_checked_by_front_end();
        let gate = Arc::new(Gate::new(shared.clone(), session.identity().cloned()));
        Connection {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            out: BytesMut::with_capacity(4 * 1024),
            protocol: Protocol::Resp2,
            session,
            id,
            client,
            _registration: registration,
            limits: shared.limits.resp(),
            shared,
            requests: Vec::new(),
            writes: Vec::new(),
            pending: Vec::new(),
            command_metrics: metrics::RespCommands::default(),
            transaction: Transaction::default(),
            gate,
            counted: None,
            read_size: READ_CHUNK,
        }
    }

    /// Serves the connection until it closes, then closes its session.
    pub async fn serve(mut self, peer: SocketAddr, mut shutdown: Shutdown) {
        let client = self.client.clone();
        // A connection that needs no AUTH (the default user without a password) counts against
        // its user's max-connections from the start.
        if let Some(identity) = self.session.identity().filter(|id| id.user().max_connections > 0).cloned() {
            match self.shared.users.connect(&identity) {
                Ok(counted) => self.counted = Some(counted),
                Err(e) => {
                    crate::stats::bump(&self.shared.stats.counters.user_connections_refused);
                    self.write(&Frame::error("ERR", e));
                    let _ = self.flush().await;
                    return;
                }
            }
        }
        let ended = tokio::select! {
            ended = self.run(&mut shutdown) => ended,
            () = client.killed() => Err(ConnError::Killed),
        };
        match ended {
            Ok(()) => tracing::debug!(%peer, id = self.id, "connection closed"),
            Err(e @ (ConnError::Protocol(_) | ConnError::FloodWhileBlocked(_))) => {
                tracing::info!(%peer, id = self.id, error = %e, "closing connection after bad input");
            }
            Err(e @ ConnError::QueryBufferLimit { .. }) => {
                crate::stats::bump(&self.shared.stats.counters.query_buffer_closed);
                tracing::warn!(%peer, id = self.id, "{e}");
            }
            Err(e) => tracing::debug!(%peer, id = self.id, error = %e, "connection ended"),
        }
        self.session.close().await;
    }

    async fn run(&mut self, shutdown: &mut Shutdown) -> Result<(), ConnError> {
        // One wait for shutdown for the connection's whole life: a new one per read would register
        // and unregister a waiter every time.
        let mut watched = shutdown.clone();
        let stopped = watched.recv();
        tokio::pin!(stopped);
        loop {
            // Take every complete request already buffered (a pipeline), up to a bound.
            let mut requests = std::mem::take(&mut self.requests);
            let mut bad = None;
            while requests.len() < MAX_RUN {
                match decode_request(&mut self.buf, &self.limits) {
                    Ok(Some(request)) => requests.push(request.args),
                    Ok(None) => break,
                    Err(e) => {
                        bad = Some(e);
                        break;
                    }
                }
            }
            let more = requests.len() == MAX_RUN;
            // Requests before a malformed one are answered, as Redis does; then the connection
            // gets the protocol error and is closed.
            if self.handle_all(&requests, shutdown).await? == Flow::Quit {
                return self.flush().await;
            }
            requests.clear();
            self.requests = requests;
            if let Some(e) = bad {
                self.write(&Frame::error("ERR", &e));
                self.flush().await?;
                return Err(e.into());
            }
            self.flush().await?;
            // Flow control: a pipeline that took a consumed queue to queue-flow-limit is the last
            // one read until that queue is below half of it (its replies are out already).
            self.session.flow_wait().await;
            if more {
                continue;
            }
            let room = self.make_read_room();
            tokio::select! {
                read = self.stream.read_buf(&mut self.buf) => {
                    let read = read?;
                    if read == 0 {
                        // A close in the middle of a request is as clean as any other: nothing
                        // half-read was acted on.
                        return Ok(());
                    }
                    self.read_size =
                        if read >= room { (self.read_size * 2).min(READ_MAX) } else { READ_CHUNK };
                    self.check_query_buffer()?;
                }
                () = self.client.outbox.ready() => {}
                () = &mut stopped => return Ok(()),
            }
            self.write_messages();
        }
    }

    /// Runs a pipeline's requests in order. Consecutive writes that cannot wait go to the log
    /// together (each submitted, then the replies awaited); consecutive reads share one read-index
    /// check. A command that may wait runs alone, so the ones after it run after it, as in Redis.
    async fn handle_all(
        &mut self,
        requests: &[Vec<Bytes>],
        shutdown: &mut Shutdown,
    ) -> Result<Flow, ConnError> {
        // For the metrics, each request takes from the start of its pipeline to its reply being
        // ready: what a pipelining client waits for it. Requests run together share an end time.
        let started = Instant::now();
        let mut timed = 0;
        self.shared.stats.commands.fetch_add(requests.len() as u64, Ordering::Relaxed);
        if let Some(last) = requests.last() {
            self.client.command(cmd::full_name(last).unwrap_or("NULL"));
        }
        let client = self.client.clone();
        let gate = self.gate.clone();
        let mut actions =
            requests.iter().zip(std::iter::repeat_n((&client, &gate), requests.len())).map(gated).peekable();
        while let Some(action) = actions.next() {
            if gate.gone() {
                // Its user was deleted or turned off: closed, as Redis closes such clients.
                return Ok(Flow::Quit);
            }
            match action {
                action if self.transaction.queues(&action) => {
                    let frame = self.transaction.queue(action, &self.session);
                    self.write(&frame);
                }
                Err(error) => self.write(&error),
                // The rare kinds run boxed: their futures are large (INFO, a blocking wait), and
                // inline they would be copied into place on every call of this one.
                Ok(Action::Connection(c)) => {
                    if Box::pin(self.connection_command(c)).await? == Flow::Quit {
                        let handled = requests.len() - actions.len();
                        self.command_metrics.record(&requests[timed..handled], started.elapsed());
                        return Ok(Flow::Quit);
                    }
                }
                Ok(Action::Read { query, shape }) => {
                    let mut reads = vec![(query, shape)];
                    while let Some(Ok(Action::Read { query, shape })) =
                        actions.next_if(|a| matches!(a, Ok(Action::Read { .. })))
                    {
                        reads.push((query, shape));
                    }
                    self.run_reads(reads).await;
                }
                Ok(Action::Write { cmd, shape }) if cmd.may_wait() => {
                    Box::pin(self.run_waiting(cmd, shape, shutdown)).await?
                }
                Ok(Action::Write { cmd, shape }) => {
                    let mut writes = std::mem::take(&mut self.writes);
                    writes.push((cmd, shape));
                    while let Some(Ok(Action::Write { cmd, shape })) =
                        actions.next_if(|a| matches!(a, Ok(Action::Write { cmd, .. }) if !cmd.may_wait()))
                    {
                        writes.push((cmd, shape));
                    }
                    self.run_writes(&mut writes).await;
                    self.writes = writes;
                }
            }
            let handled = requests.len() - actions.len();
            self.command_metrics.record(&requests[timed..handled], started.elapsed());
            timed = handled;
            if self.out.len() >= FLUSH_AT {
                self.flush().await?;
            }
        }
        Ok(Flow::Continue)
    }

    async fn run_reads(&mut self, reads: Vec<(Query, ReplyShape)>) {
        let (queries, shapes): (Vec<Query>, Vec<ReplyShape>) = reads.into_iter().unzip();
        match self.session.read(queries).await {
            Ok(replies) => {
                for (reply, shape) in replies.into_iter().zip(shapes) {
                    self.write(&cmd::render(shape, reply, self.protocol));
                }
            }
            Err(e) => shapes.iter().for_each(|_| self.write(&refused(&e))),
        }
    }

    /// Runs consecutive writes; `writes` is left empty. Every command is queued before the
    /// first reply is awaited, so the run shares log entries and is applied in order.
    async fn run_writes(&mut self, writes: &mut Vec<(Command, ReplyShape)>) {
        let mut pending = std::mem::take(&mut self.pending);
        for (cmd, shape) in writes.drain(..) {
            pending.push((self.session.submit(cmd).await, shape));
        }
        for (queued, shape) in pending.drain(..) {
            let reply = match queued {
                Ok(answer) => self.session.answer(answer).await,
                Err(e) => Err(e),
            };
            let frame = match reply {
                Ok(reply) => cmd::render(shape, reply, self.protocol),
                Err(e) => refused(&e),
            };
            self.write(&frame);
        }
        self.pending = pending;
    }

    /// A command that may wait in line: proposed alone, then parked until its wait is settled.
    async fn run_waiting(
        &mut self,
        cmd: Command,
        shape: ReplyShape,
        shutdown: &mut Shutdown,
    ) -> Result<(), ConnError> {
        let frame = match self.session.propose(cmd).await {
            Ok(Reply::Waiting { wait_id }) => {
                // Replies already computed go out before the client is made to wait.
                self.flush().await?;
                match self.wait_for(wait_id, shutdown).await? {
                    Ok(reply) => cmd::render(shape, reply, self.protocol),
                    Err(e) => refused(&e),
                }
            }
            Ok(reply) => cmd::render(shape, reply, self.protocol),
            Err(e) => refused(&e),
        };
        self.write(&frame);
        Ok(())
    }

    /// Parks until the state machine settles wait `wait_id`, reading the socket meanwhile so a
    /// client that goes away is noticed at once (its session closes and its wait is dropped).
    /// Pipelined requests stay buffered.
    async fn wait_for(
        &mut self,
        wait_id: u64,
        shutdown: &mut Shutdown,
    ) -> Result<Result<Reply, Refused>, ConnError> {
        let limit = self.limits.max_bulk_len.saturating_mul(2);
        loop {
            tokio::select! {
                settled = self.session.settled(wait_id) => return Ok(settled),
                read = self.stream.read_buf(&mut self.buf) => {
                    if read? == 0 {
                        return Err(ConnError::ClosedWhileBlocked);
                    }
                    if self.buf.len() > limit {
                        return Err(ConnError::FloodWhileBlocked(limit));
                    }
                    self.check_query_buffer()?;
                }
                () = shutdown.recv() => return Err(ConnError::Shutdown),
            }
        }
    }

    /// `client-query-buffer-limit`: input is read only while fewer than a pipeline's worth of
    /// requests are complete, so what is buffered is at most that and one request being received,
    /// which the codec's own limits (`max-payload`, `max-args`) allow to be very large. A client
    /// past the limit is closed, as Redis closes it, before it costs the server more memory.
    fn check_query_buffer(&self) -> Result<(), ConnError> {
        let limit = self.shared.client_query_buffer_limit;
        if self.buf.len() as u64 > limit {
            return Err(ConnError::QueryBufferLimit { buffered: self.buf.len(), limit });
        }
        Ok(())
    }

    async fn connection_command(&mut self, c: ConnCmd) -> Result<Flow, ConnError> {
        let frame = match c {
            ConnCmd::Ping(message) if self.subscribed_resp2() => cmd::pubsub::subscribed_pong(message),
            ConnCmd::Ping(None) => Frame::simple("PONG"),
            ConnCmd::Ping(Some(message)) | ConnCmd::Echo(message) => Frame::Bulk(message),
            ConnCmd::Hello { protover, auth, setname } => {
                let protocol = match protover {
                    None => self.protocol,
                    Some(2) => Protocol::Resp2,
                    Some(3) => Protocol::Resp3,
                    Some(_) => {
                        self.write(&Frame::error("NOPROTO", "unsupported protocol version"));
                        return Ok(Flow::Continue);
                    }
                };
                if let Some((user, pass)) = auth {
                    if let Err(e) = self.authenticate(Some(&user), &pass, "HELLO") {
                        self.write(&e);
                        return Ok(Flow::Continue);
                    }
                } else if self.session.identity().is_none() {
                    self.write(&Frame::error(
                        "NOAUTH",
                        "HELLO must be called with the client already authenticated, otherwise the HELLO \
                         AUTH <user> <pass> option can be used to authenticate the client and select the RESP \
                         protocol version at the same time",
                    ));
                    return Ok(Flow::Continue);
                }
                if let Some(name) = setname {
                    if let Err(e) = check_client_name(&name) {
                        self.write(&e);
                        return Ok(Flow::Continue);
                    }
                    self.client.set_name(Some(name));
                }
                self.protocol = protocol;
                self.client.set_resp3(protocol == Protocol::Resp3);
                info::hello(self.id, protocol)
            }
            ConnCmd::Auth { user, pass } => match self.authenticate(user.as_ref(), &pass, "AUTH") {
                Ok(()) => Frame::ok(),
                Err(e) => e,
            },
            ConnCmd::Select(0) => Frame::ok(),
            ConnCmd::Select(_) => Frame::error("ERR", "DB index is out of range"),
            ConnCmd::ClientSetName(name) => match check_client_name(&name) {
                Ok(()) => {
                    self.client.set_name(Some(name));
                    Frame::ok()
                }
                Err(e) => e,
            },
            ConnCmd::ClientGetName => self.client.name().map_or(Frame::Null, Frame::Bulk),
            ConnCmd::ClientId => Frame::Integer(i64::try_from(self.id).unwrap_or(i64::MAX)),
            ConnCmd::Help(lines) => Frame::Array(lines.iter().map(|line| Frame::simple(*line)).collect()),
            ConnCmd::ClientSetInfo { attr, value } => {
                self.client.set_lib(attr == cmd::LibAttr::Version, value);
                Frame::ok()
            }
            ConnCmd::Info(sections) => {
                let text = info::render(&self.shared, &sections).await;
                match self.protocol {
                    Protocol::Resp3 => Frame::Verbatim { format: *b"txt", text: text.into() },
                    Protocol::Resp2 => Frame::Bulk(text.into()),
                }
            }
            ConnCmd::Command(args) => info::command(&args),
            ConnCmd::Cluster(request) => match self.shared.node.admin(admin_request(request)).await {
                Ok(status) => info::cluster_status(&status),
                Err(e) => refused(&Refused::Node(e)),
            },
            ConnCmd::SessionInfo => match self.session.info().await {
                Ok((id, secret)) => Frame::Array(vec![integer(id.0), integer(secret)]),
                Err(e) => refused(&e),
            },
            ConnCmd::SessionResume { id, secret } => match self.session.resume(SessionId(id), secret).await {
                Ok(Reply::Error(e)) => Frame::error(e.code(), e),
                Ok(_) => Frame::ok(),
                Err(e) => refused(&e),
            },
            ConnCmd::Quit => {
                self.write(&Frame::ok());
                return Ok(Flow::Quit);
            }
            ConnCmd::Transaction(c) => self.transaction.run(c, &mut self.session, self.protocol).await,
            // Pub/sub and client housekeeping:
            ConnCmd::PubSub(c) => return self.pubsub(c).await,
            // Users and ACLs:
            ConnCmd::Acl(c) => Box::pin(self.acl(c)).await,
            c @ (ConnCmd::ClientInfo
            | ConnCmd::ClientList(_)
            | ConnCmd::ClientKill(_)
            | ConnCmd::ClientAccepted
            | ConnCmd::ConfigGet(_)
            | ConnCmd::ConfigSet(_)
            | ConnCmd::Time
            | ConnCmd::Wait { .. }
            | ConnCmd::ReadOnly(_)
            | ConnCmd::Reset) => return self.housekeeping(c),
        };
        self.write(&frame);
        Ok(Flow::Continue)
    }

    /// See [`READ_ROOM`]. Payloads taken from the buffer share its allocation, so growing it
    /// usually starts a new one rather than moving the unread bytes to the front.
    /// Makes room for the next read, and returns how much there is. A buffer grown for a bulk
    /// load is given back once the load is over and the buffer is empty.
    fn make_read_room(&mut self) -> usize {
        if self.read_size == READ_CHUNK && self.buf.is_empty() && self.buf.capacity() > 4 * READ_CHUNK {
            self.buf = BytesMut::with_capacity(READ_CHUNK);
        }
        let wanted = self.read_size.max(READ_ROOM);
        if self.buf.capacity() - self.buf.len() < wanted {
            self.buf.reserve(self.read_size);
        }
        self.buf.capacity() - self.buf.len()
    }

    fn write(&mut self, frame: &Frame) {
        frame.encode(self.protocol, &mut self.out);
    }

    async fn flush(&mut self) -> Result<(), ConnError> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }
}

/// Ids and secrets are below 2^63: a RESP integer holds them.
fn integer(n: u64) -> Frame {
    Frame::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

fn check_client_name(name: &[u8]) -> Result<(), Frame> {
    if name.iter().all(|b| (b'!'..=b'~').contains(b)) {
        Ok(())
    } else {
        Err(Frame::error("ERR", "Client names cannot contain spaces, newlines or special characters."))
    }
}

/// The gate's check, then the parse (a function of a pair for the same reason as
/// [`pubsub::parse`]).
fn gated((args, (client, gate)): (&Vec<Bytes>, (&Arc<Client>, &Arc<Gate>))) -> Result<Action, Frame> {
    gate.check(args, client, || pubsub::parse((args, client)))
}

/// `CLUSTER.*` as the node's admin request.
fn admin_request(cmd: cmd::ClusterCmd) -> AdminRequest {
    match cmd {
        cmd::ClusterCmd::Status => AdminRequest::Status,
        cmd::ClusterCmd::Add { id, addr } => AdminRequest::Add { id, addr },
        cmd::ClusterCmd::Remove { id } => AdminRequest::Remove { id },
        cmd::ClusterCmd::TransferLeader { id } => AdminRequest::TransferLeader { to: id },
    }
}

/// How a refusal reads to a client. A follower names the leader, so clients can redirect; a node
/// that can reach no leader says so in the words Redis Cluster uses when it cannot serve.
pub(super) fn refused(e: &Refused) -> Frame {
    match e {
        Refused::Node(NodeError::NotLeader { leader: Some(addr) }) => {
            Frame::Error(format!("NOTLEADER {addr}"))
        }
        Refused::NoPerm(denied) => acl::no_perm(denied),
        e if e.cluster_down() => {
            tracing::debug!(reason = %e, "refused: no leader reachable");
            Frame::error("CLUSTERDOWN", CLUSTER_DOWN)
        }
        other => Frame::error(other.code(), other),
    }
}
