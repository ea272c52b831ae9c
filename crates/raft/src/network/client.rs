//! The sending side: [`TcpNetwork`], the factory openraft asks for clients, and [`PeerClient`],
//! what openraft calls to reach one peer.
//!
//! openraft creates clients freely (one per replication stream, one per heartbeat worker, a new
//! one for every vote it broadcasts), so a client holds no connection: the connections live in
//! the network, three per peer, and every client of that peer shares them.
//!
//! ```text
//!  openraft                       PeerClient                       peer's Links
//!  replication ── stream_append ─► pipelined, answered in order ─► Append
//!  heartbeat   ── stream_append ─┐
//!  election    ── vote, pre_vote ┼► one request, one reply ──────► Control
//!  transfer    ── transfer_leader┘
//!  snapshot    ── full_snapshot ─► chunks, one at a time ────────► Snapshot
//! ```
//!
//! Every call is bounded by its `RPCOption::soft_ttl()`, connecting included; a pipelined
//! stream, per reply (openraft's TTL for a stream is per response, not for the whole stream). A
//! call that times out closes its connection.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{RPCError, ReplicationClosed, StreamingError};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{LogIdOf, NodeOf, SnapshotOf, VoteOf};
use openraft::{OptionalSend, RPCTypes, RaftNetworkFactory, RaftNetworkV2};
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout_at};
use turnstile_core::Command;
use turnstile_tls::PeerTls;

use super::connection::{Connection, Deadline, Link};
use super::error::TransportError;
use super::forward::ForwardedReplies;
use super::message::{ConnectionKind, Hello, ReadPoint, ReplyBody, Request, RequestBody};
use super::snapshot;
use super::wire::{self, MAX_FRAME, WireError};
use crate::node::{AdminRequest, ClusterStatus};
use crate::{NodeError, TypeConfig};

/// Most append requests in flight on one pipeline. openraft makes a request of up to
/// `max_payload_entries` entries each, as fast as it can read them from the log; this bounds
/// what is sent ahead of the follower's answers.
const MAX_IN_FLIGHT: usize = 32;

/// The slowest link between two nodes an append is expected to cross, in bytes per second.
/// openraft gives each append reply the heartbeat interval (50 ms by default) as its TTL, which a
/// large append cannot meet: 16 MiB take 130 ms to cross even a 1 Gbit/s link, and decoding and
/// appending them takes time too. So a reply is due within the TTL plus the time its request's
/// bytes take at this rate. Noticing a dead follower does not depend on it: heartbeats go on the
/// control connection, with the TTL alone.
const SLOWEST_LINK: u64 = 8 << 20;

/// The node-to-node network: this node's identity and the addresses of its peers, and the
/// connections to them. Cheap to clone; clones share everything, so the server can keep one to
/// update addresses while openraft holds another.
#[derive(Debug, Clone)]
pub struct TcpNetwork {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    cluster_id: u64,
    self_id: u64,
    peers: Mutex<HashMap<u64, Arc<Peer>>>,
    /// Numbers append streams, so the follower knows where one ends and the next begins.
    next_stream: AtomicU64,
    /// The largest frame sent: [`MAX_FRAME`], smaller in tests.
    frame_limit: usize,
    /// Mutual TLS to every peer (`tls-peer`); `None`: plain TCP.
    tls: Option<PeerTls>,
}

/// One peer: where it listens, and the three connections to it.
#[derive(Debug)]
struct Peer {
    addr: String,
    append: Link,
    control: Link,
    snapshot: Link,
    forward: Link,
}

impl Peer {
    fn new(addr: String) -> Peer {
        Peer {
            addr,
            append: Link::new(ConnectionKind::Append),
            control: Link::new(ConnectionKind::Control),
            snapshot: Link::new(ConnectionKind::Snapshot),
            forward: Link::new(ConnectionKind::Forward),
        }
    }

    fn link(&self, kind: ConnectionKind) -> &Link {
        match kind {
            ConnectionKind::Append => &self.append,
            ConnectionKind::Control => &self.control,
            ConnectionKind::Snapshot => &self.snapshot,
            // A node only joins through `Joining`, never through a peer's link.
            ConnectionKind::Forward | ConnectionKind::Join => &self.forward,
        }
    }

    fn close(&self) {
        for link in [&self.append, &self.control, &self.snapshot, &self.forward] {
            link.close();
        }
    }
}

impl TcpNetwork {
    /// The network of node `self_id` in cluster `cluster_id`, knowing no peer yet: addresses come
    /// from [`TcpNetwork::set_peer`] and from the membership (see [`RaftNetworkFactory`]).
    pub fn new(cluster_id: u64, self_id: u64) -> TcpNetwork {
        TcpNetwork::with_frame_limit(cluster_id, self_id, MAX_FRAME, None)
    }

    /// [`TcpNetwork::new`], every connection under mutual TLS with `tls`.
    pub fn with_tls(cluster_id: u64, self_id: u64, tls: Option<PeerTls>) -> TcpNetwork {
        TcpNetwork::with_frame_limit(cluster_id, self_id, MAX_FRAME, tls)
    }

    /// A network that sends no frame larger than `frame_limit` (smaller than [`MAX_FRAME`] only
    /// in tests, to cut large appends without building 256 MiB of them).
    fn with_frame_limit(
        cluster_id: u64,
        self_id: u64,
        frame_limit: usize,
        tls: Option<PeerTls>,
    ) -> TcpNetwork {
        TcpNetwork {
            shared: Arc::new(Shared {
                cluster_id,
                self_id,
                peers: Mutex::new(HashMap::new()),
                next_stream: AtomicU64::new(1),
                frame_limit,
                tls,
            }),
        }
    }

    /// Sets where node `node` listens (`host:port`). A changed address closes the connections to
    /// the old one; the next call connects to the new one.
    pub fn set_peer(&self, node: u64, addr: impl Into<String>) {
        let addr = addr.into();
        let mut peers = self.shared.peers.lock().unwrap_or_else(PoisonError::into_inner);
        if peers.get(&node).is_some_and(|p| p.addr == addr) {
            return;
        }
        if let Some(old) = peers.insert(node, Arc::new(Peer::new(addr))) {
            old.close();
        }
    }

    fn client(&self, target: u64, node: &NodeOf<TypeConfig>, appends: ConnectionKind) -> PeerClient {
        // The membership is where addresses live once the cluster runs (it is replicated, so a
        // node that joins later learns them). One that is no `host:port` leaves a configured
        // address alone: `BasicNode::default()` is "localhost", which is what a single node's
        // membership holds.
        if dialable(&node.addr) {
            self.set_peer(target, node.addr.as_str());
        }
        PeerClient { shared: Arc::clone(&self.shared), target, appends }
    }

    /// A client of the leader `leader` for forwarded requests (they go on the forward connection).
    fn forward_client(&self, leader: u64) -> PeerClient {
        PeerClient { shared: Arc::clone(&self.shared), target: leader, appends: ConnectionKind::Forward }
    }

    /// Writes `commands` to the leader `leader` as one forwarded batch, by `deadline`, after
    /// every batch forwarded before it (see `forward.rs`). Returns once the batch is written.
    pub async fn forward(
        &self,
        leader: u64,
        commands: Vec<Command>,
        deadline: Deadline,
    ) -> Result<PendingForward, TransportError> {
        let client = self.forward_client(leader);
        let (peer, connection) = client.connection(ConnectionKind::Forward, deadline).await?;
        let id = connection.next_id();
        let frame =
            wire::encode(&Request { id, body: RequestBody::Forward(commands) }, self.shared.frame_limit)
                .map_err(|e| connection.wire(e))?;
        let answer = match timeout_at(deadline.at, connection.send(id, &frame)).await {
            Ok(sent) => sent,
            Err(_) => Err(connection.timeout(deadline)),
        };
        let answer = answer.inspect_err(|_| peer.forward.discard(&connection))?;
        Ok(PendingForward { peer, connection, answer, leader })
    }

    /// Has the leader `leader` run an admin request, by `deadline`.
    pub async fn admin(
        &self,
        leader: u64,
        request: AdminRequest,
        deadline: Deadline,
    ) -> Result<Result<ClusterStatus, NodeError>, TransportError> {
        let client = self.forward_client(leader);
        match client.call(ConnectionKind::Forward, RequestBody::Admin(request), deadline).await? {
            ReplyBody::Admin(done) => Ok(done),
            other => Err(client.unexpected("admin", &other)),
        }
    }

    /// A read point from the leader `leader`, by `deadline`.
    pub async fn read_point(
        &self,
        leader: u64,
        deadline: Deadline,
    ) -> Result<Result<ReadPoint, NodeError>, TransportError> {
        let client = self.forward_client(leader);
        match client.call(ConnectionKind::Forward, RequestBody::ReadIndex, deadline).await? {
            ReplyBody::ReadPoint(point) => Ok(point),
            other => Err(client.unexpected("read-index", &other)),
        }
    }
}

/// A new node's connection to a member of the cluster it is to join (`--join`): the handshake
/// tells it the cluster id, and the member has the leader add it.
#[derive(Debug)]
pub struct Joining {
    connection: Connection,
}

impl Joining {
    /// Connects to the member at `addr` as node `self_id`, by `deadline`.
    /// Under mutual TLS with `tls` when the cluster's transport uses it.
    pub async fn connect(
        addr: &str,
        self_id: u64,
        tls: Option<&PeerTls>,
        deadline: Deadline,
    ) -> Result<Joining, TransportError> {
        let hello = Hello { cluster_id: 0, from: self_id, to: 0, kind: ConnectionKind::Join };
        match timeout_at(deadline.at, Connection::open(addr, hello, tls)).await {
            Ok(connection) => Ok(Joining { connection: connection? }),
            Err(_) => Err(TransportError::ConnectTimeout { node: 0, addr: addr.to_string() }),
        }
    }

    /// The cluster the member belongs to.
    pub fn cluster_id(&self) -> u64 {
        self.connection.cluster_id()
    }

    /// Asks for this node, reached at `raft_addr`, to be added (as a learner, then a voter once
    /// it has caught up: this node must be serving Raft by then). Answers once it is a voter, and
    /// at once if it is one already (a restart while or after joining).
    pub async fn add(
        &self,
        id: u64,
        raft_addr: String,
        deadline: Deadline,
    ) -> Result<Result<ClusterStatus, NodeError>, TransportError> {
        let request = RequestBody::Admin(AdminRequest::Join { id, addr: raft_addr });
        match self.connection.call(request, deadline).await? {
            ReplyBody::Admin(done) => Ok(done),
            ReplyBody::Error(message) => Err(TransportError::Remote { node: 0, message }),
            other => Err(TransportError::Unexpected { node: 0, sent: "admin", got: other.name() }),
        }
    }
}

/// A batch written to the leader by [`TcpNetwork::forward`], its replies not yet in.
#[derive(Debug)]
pub struct PendingForward {
    peer: Arc<Peer>,
    connection: Arc<Connection>,
    answer: oneshot::Receiver<ReplyBody>,
    leader: u64,
}

impl PendingForward {
    /// The leader's replies, by `deadline`; or its refusal of the whole batch (nothing applied).
    /// A broken connection or a timeout leaves the outcome unknown: the leader may have applied
    /// the batch.
    pub async fn replies(
        mut self,
        deadline: Deadline,
    ) -> Result<Result<ForwardedReplies, NodeError>, TransportError> {
        let replied = self.connection.reply(&mut self.answer, deadline).await;
        if replied.as_ref().is_err_and(TransportError::spoils_connection) {
            self.peer.forward.discard(&self.connection);
        }
        match replied? {
            ReplyBody::Forwarded(result) => Ok(result),
            ReplyBody::Error(message) => Err(TransportError::Remote { node: self.leader, message }),
            other => {
                Err(TransportError::Unexpected { node: self.leader, sent: "forward", got: other.name() })
            }
        }
    }
}

/// openraft's three ways to ask for a client map onto the three connections: a heartbeat
/// client sends its appends on the control connection, so heartbeats never wait behind
/// replication; the others send appends on the append connection. Votes always go on the control
/// connection and snapshots on the snapshot connection, whichever client sends them.
impl RaftNetworkFactory<TypeConfig> for TcpNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &NodeOf<TypeConfig>) -> PeerClient {
        self.client(target, node, ConnectionKind::Append)
    }

    async fn new_heartbeat_client(&mut self, target: u64, node: &NodeOf<TypeConfig>) -> PeerClient {
        self.client(target, node, ConnectionKind::Control)
    }

    async fn new_snapshot_client(&mut self, target: u64, node: &NodeOf<TypeConfig>) -> PeerClient {
        self.client(target, node, ConnectionKind::Append)
    }
}

/// What openraft calls to reach one peer. Holds no connection of its own (see the module docs).
#[derive(Debug)]
pub struct PeerClient {
    shared: Arc<Shared>,
    target: u64,
    /// The connection this client's appends go on: `Control` for a heartbeat client.
    appends: ConnectionKind,
}

impl PeerClient {
    fn peer(&self) -> Result<Arc<Peer>, TransportError> {
        if self.target == self.shared.self_id {
            return Err(TransportError::SelfTarget { node: self.target });
        }
        let peers = self.shared.peers.lock().unwrap_or_else(PoisonError::into_inner);
        peers.get(&self.target).cloned().ok_or(TransportError::NoAddress { node: self.target })
    }

    fn hello(&self, kind: ConnectionKind) -> Hello {
        Hello { cluster_id: self.shared.cluster_id, from: self.shared.self_id, to: self.target, kind }
    }

    /// The peer's connection of `kind`, opened if need be, by `deadline`.
    async fn connection(
        &self,
        kind: ConnectionKind,
        deadline: Deadline,
    ) -> Result<(Arc<Peer>, Arc<Connection>), TransportError> {
        let peer = self.peer()?;
        let connection = peer
            .link(kind)
            .connection(&peer.addr, self.hello(kind), self.shared.tls.as_ref(), deadline)
            .await?;
        Ok((peer, connection))
    }

    /// One request and its reply on the connection of `kind`, all by `deadline`.
    pub(super) async fn call(
        &self,
        kind: ConnectionKind,
        body: RequestBody,
        deadline: Deadline,
    ) -> Result<ReplyBody, TransportError> {
        let (peer, connection) = self.connection(kind, deadline).await?;
        let replied = connection.call(body, deadline).await;
        if replied.as_ref().is_err_and(TransportError::spoils_connection) {
            peer.link(kind).discard(&connection);
        }
        match replied? {
            ReplyBody::Error(message) => Err(TransportError::Remote { node: self.target, message }),
            body => Ok(body),
        }
    }

    async fn vote_call(
        &self,
        body: RequestBody,
        option: &RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let sent = body.name();
        match self.call(ConnectionKind::Control, body, Deadline::after(option.soft_ttl())).await {
            Ok(ReplyBody::Vote(response)) => Ok(response),
            Ok(other) => Err(self.unexpected(sent, &other).into_rpc(RPCTypes::Vote, self.shared.self_id)),
            Err(e) => Err(e.into_rpc(RPCTypes::Vote, self.shared.self_id)),
        }
    }

    pub(super) fn unexpected(&self, sent: &'static str, got: &ReplyBody) -> TransportError {
        TransportError::Unexpected { node: self.target, sent, got: got.name() }
    }

    pub(super) fn self_id(&self) -> u64 {
        self.shared.self_id
    }

    fn rpc_error(&self, e: TransportError) -> RPCError<TypeConfig> {
        e.into_rpc(RPCTypes::AppendEntries, self.shared.self_id)
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Bytes;

    /// One append on its own: a pipeline of one. (openraft itself sends appends through
    /// `stream_append`; this is here for the trait.)
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let last = last_log_id(&rpc);
        let (target, self_id) = (self.target, self.shared.self_id);
        let input = futures_util::stream::iter([rpc]);
        let mut output = self.stream_append(input, option).await?;
        match output.next().await {
            Some(Ok(Ok(matched))) if matched == last => Ok(AppendEntriesResponse::Success),
            // Cut short for the frame limit: only the entries up to `matched` were sent.
            Some(Ok(Ok(matched))) => Ok(AppendEntriesResponse::PartialSuccess(matched)),
            Some(Ok(Err(rejected))) => Ok(AppendEntriesResponse::from(Err(rejected))),
            Some(Err(e)) => Err(e),
            // The pipeline answers every request it sent or fails; this is for completeness.
            None => Err(TransportError::Unexpected { node: target, sent: "append", got: "no reply" }
                .into_rpc(RPCTypes::AppendEntries, self_id)),
        }
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        Box::pin(async move {
            let ttl = option.soft_ttl();
            let (peer, connection) =
                self.connection(self.appends, Deadline::after(ttl)).await.map_err(|e| self.rpc_error(e))?;
            let stream = self.shared.next_stream.fetch_add(1, Ordering::Relaxed);
            let pipeline = Pipeline {
                client: self,
                peer,
                connection,
                stream,
                input: Some(input),
                in_flight: VecDeque::new(),
                ttl,
                progress: Instant::now(),
                finished: false,
            };
            let replies = futures_util::stream::unfold(pipeline, |mut pipeline| async move {
                let item = pipeline.next().await?;
                Some((item, pipeline))
            });
            Ok(Box::pin(replies) as BoxStream<'s, _>)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_call(RequestBody::Vote(rpc), &option).await
    }

    /// Overridden: the default grants without asking. A peer that cannot be reached answers an
    /// error here, which openraft does not count as a grant.
    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_call(RequestBody::PreVote(rpc), &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Bytes>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        snapshot::send(self, vote, snapshot, cancel, &option).await
    }

    /// Overridden: the default does not send it, and the new leader then waits for the old
    /// one's lease to run out.
    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let deadline = Deadline::after(option.soft_ttl());
        let self_id = self.shared.self_id;
        match self.call(ConnectionKind::Control, RequestBody::TransferLeader(req), deadline).await {
            Ok(ReplyBody::TransferLeader(response)) => Ok(response),
            Ok(other) => {
                Err(self.unexpected("transfer-leader", &other).into_rpc(RPCTypes::TransferLeader, self_id))
            }
            Err(e) => Err(e.into_rpc(RPCTypes::TransferLeader, self_id)),
        }
    }
}

/// One `stream_append`: requests written as openraft produces them, up to [`MAX_IN_FLIGHT`]
/// ahead of the replies, which are handed back in request order.
struct Pipeline<'s, S> {
    client: &'s PeerClient,
    peer: Arc<Peer>,
    connection: Arc<Connection>,
    /// This stream's number, in every request (see `RequestBody::Append`).
    stream: u64,
    /// `None` once openraft's input ended, or once a request had to be cut short (see
    /// [`Pipeline::send`]).
    input: Option<S>,
    in_flight: VecDeque<InFlight>,
    ttl: Duration,
    /// When the last reply came, or when the pipeline last went from idle to busy: the next
    /// reply is due within `ttl` (and its request's allowance) of it. A follower that keeps
    /// answering is never timed out, however many requests are queued; one that stops is.
    progress: Instant,
    /// After an error: openraft's stream ends there.
    finished: bool,
}

/// A request written and not yet answered.
struct InFlight {
    answer: oneshot::Receiver<ReplyBody>,
    /// Extra time for its reply, for its size (see [`SLOWEST_LINK`]).
    allowance: Duration,
}

/// The time `bytes` take at [`SLOWEST_LINK`].
fn allowance(bytes: usize) -> Duration {
    Duration::from_micros((bytes as u64).saturating_mul(1_000_000) / SLOWEST_LINK)
}

/// What woke the pipeline.
enum Event {
    Reply(Result<ReplyBody, TransportError>),
    Input(Option<AppendEntriesRequest<TypeConfig>>),
}

impl<S> Pipeline<'_, S>
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Unpin,
{
    /// The next reply, in order; `None` once every request was answered and the input ended.
    async fn next(&mut self) -> Option<Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>> {
        if self.finished {
            return None;
        }
        loop {
            let room = self.in_flight.len() < MAX_IN_FLIGHT;
            let (progress, ttl, connection) = (self.progress, self.ttl, &self.connection);
            let due = |front: &InFlight| Deadline {
                at: progress + ttl + front.allowance,
                ttl: ttl + front.allowance,
            };
            let event = match (self.in_flight.front_mut(), self.input.as_mut()) {
                (None, None) => return None,
                (None, Some(input)) => Event::Input(input.next().await),
                (Some(front), Some(input)) if room => {
                    let deadline = due(front);
                    tokio::select! {
                        biased;
                        reply = connection.reply(&mut front.answer, deadline) => Event::Reply(reply),
                        request = input.next() => Event::Input(request),
                    }
                }
                (Some(front), _) => {
                    let deadline = due(front);
                    Event::Reply(connection.reply(&mut front.answer, deadline).await)
                }
            };
            match event {
                Event::Input(None) => self.input = None,
                Event::Input(Some(rpc)) => {
                    let idle = self.in_flight.is_empty();
                    if let Err(e) = self.send(rpc).await {
                        return Some(Err(self.fail(e)));
                    }
                    if idle {
                        self.progress = Instant::now();
                    }
                }
                Event::Reply(reply) => {
                    self.in_flight.pop_front();
                    self.progress = Instant::now();
                    return Some(match reply {
                        Ok(ReplyBody::Appended(result)) => {
                            // A conflict or a higher vote ends openraft's stream too.
                            self.finished = result.is_err();
                            Ok(result)
                        }
                        Ok(ReplyBody::Error(message)) => {
                            Err(self.fail(TransportError::Remote { node: self.client.target, message }))
                        }
                        Ok(other) => Err(self.fail(self.client.unexpected("append", &other))),
                        Err(e) => Err(self.fail(e)),
                    });
                }
            }
        }
    }

    /// Writes one request. One too large for a frame is cut to the entries that fit (halving
    /// until it does) and the input is not read further: the follower's reply then acknowledges
    /// only those, and openraft sends the rest in its next stream.
    async fn send(&mut self, rpc: AppendEntriesRequest<TypeConfig>) -> Result<(), TransportError> {
        let id = self.connection.next_id();
        let mut request = Request { id, body: RequestBody::Append { stream: self.stream, rpc } };
        let frame = loop {
            let too_large = match wire::encode(&request, self.client.shared.frame_limit) {
                Ok(frame) => break frame,
                Err(too_large @ WireError::TooLarge { .. }) => too_large,
                Err(e) => return Err(self.connection.wire(e)),
            };
            match request.body.entries_mut() {
                Some(entries) if entries.len() > 1 => {
                    tracing::debug!(
                        node = self.client.target,
                        entries = entries.len(),
                        "{too_large}: halved"
                    );
                    entries.truncate(entries.len() / 2);
                    self.input = None;
                }
                _ => return Err(self.connection.wire(too_large)),
            }
        };
        let allowance = allowance(frame.len());
        let deadline = Deadline::after(self.ttl + allowance);
        let answer = tokio::time::timeout_at(deadline.at, self.connection.send(id, &frame))
            .await
            .unwrap_or_else(|_| Err(self.connection.timeout(deadline)))?;
        self.in_flight.push_back(InFlight { answer, allowance });
        Ok(())
    }

    /// Ends the stream with `e`; a connection that cannot be trusted any more is closed.
    fn fail(&mut self, e: TransportError) -> RPCError<TypeConfig> {
        self.finished = true;
        if e.spoils_connection() {
            self.peer.link(self.client.appends).discard(&self.connection);
        }
        self.client.rpc_error(e)
    }
}

/// Whether `addr` looks like `host:port`.
pub(crate) fn dialable(addr: &str) -> bool {
    addr.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// The last log id a request carries, or its `prev_log_id` when it carries none.
fn last_log_id(rpc: &AppendEntriesRequest<TypeConfig>) -> Option<LogIdOf<TypeConfig>> {
    rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id)
}

#[cfg(test)]
mod tests {
    use openraft::errors::RPCError;
    use openraft::type_config::alias::{EntryOf, SnapshotMetaOf};
    use openraft::vote::RaftLeaderId;
    use openraft::{BasicNode, EntryPayload};
    use tokio::net::TcpListener;
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
    use tokio::sync::mpsc;
    use tokio::time::timeout;
    use turnstile_core::{Command, SetKey};

    use super::*;
    use crate::Batch;
    use crate::network::handshake;
    use crate::network::message::Reply;
    use crate::network::snapshot::{Assembly, CHUNK};
    use crate::network::wire::{FrameReader, MAX_HELLO_FRAME};

    const CLUSTER: u64 = 42;
    /// Every wait in these tests is bounded by this; none is expected to come near it.
    const WAIT: Duration = Duration::from_secs(10);

    type Vote = VoteOf<TypeConfig>;

    fn log_id(index: u64) -> LogIdOf<TypeConfig> {
        LogIdOf::<TypeConfig>::new(openraft::impls::leader_id_adv::LeaderId::new(1, 1), index)
    }

    /// An append of entries `first..=last` (none when `first > last`), each carrying a value of
    /// `value_len` bytes.
    fn append(first: u64, last: u64, value_len: usize) -> AppendEntriesRequest<TypeConfig> {
        let entries = (first..=last)
            .map(|index| EntryOf::<TypeConfig> {
                log_id: log_id(index),
                payload: EntryPayload::Normal(Batch {
                    now: 1,
                    commands: vec![Command::Set(SetKey::new("k", vec![7u8; value_len]))],
                }),
            })
            .collect();
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: first.checked_sub(1).map(log_id),
            entries,
            leader_commit: None,
        }
    }

    fn option() -> RPCOption {
        RPCOption::new(WAIT)
    }

    /// One accepted connection of a [`FakePeer`], driven by the test.
    struct Accepted {
        kind: ConnectionKind,
        frames: FrameReader<OwnedReadHalf>,
        write: OwnedWriteHalf,
    }

    impl Accepted {
        async fn request(&mut self) -> Option<Request> {
            timeout(WAIT, self.frames.next()).await.expect("a request in time").expect("a readable frame")
        }

        async fn reply(&mut self, id: u64, body: ReplyBody) {
            use tokio::io::AsyncWriteExt;
            let frame = wire::encode(&Reply { id, body }, MAX_FRAME).unwrap();
            self.write.write_all(&frame).await.unwrap();
        }

        /// Answers like a follower that accepts everything, and reports what it was asked.
        async fn answer_all(mut self, log: mpsc::UnboundedSender<(ConnectionKind, &'static str)>) {
            let mut assembly = None;
            while let Ok(Some(request)) = self.frames.next::<Request>().await {
                let _ = log.send((self.kind, request.body.name()));
                let body = match request.body {
                    RequestBody::Append { rpc, .. } => ReplyBody::Appended(Ok(last_log_id(&rpc))),
                    RequestBody::Vote(rpc) | RequestBody::PreVote(rpc) => {
                        ReplyBody::Vote(VoteResponse::new(rpc.vote, None, true))
                    }
                    RequestBody::TransferLeader(_) => ReplyBody::TransferLeader(Ok(())),
                    RequestBody::SnapshotChunk(chunk) => {
                        let index = chunk.index;
                        match Assembly::receive(&mut assembly, chunk) {
                            Ok(None) => ReplyBody::ChunkReceived { index },
                            Ok(Some((vote, snapshot))) => {
                                let _ = log.send((
                                    self.kind,
                                    if snapshot.snapshot[..] == snapshot_data()[..] {
                                        "snapshot intact"
                                    } else {
                                        "snapshot garbled"
                                    },
                                ));
                                ReplyBody::SnapshotInstalled(SnapshotResponse::new(vote))
                            }
                            Err(e) => ReplyBody::Error(e.to_string()),
                        }
                    }
                    // Each command's reply is its position in the batch.
                    RequestBody::Forward(commands) => ReplyBody::Forwarded(Ok((0..commands.len())
                        .map(|i| Ok(turnstile_core::Reply::Int(i as i64)))
                        .collect())),
                    RequestBody::ReadIndex => ReplyBody::ReadPoint(Ok(ReadPoint { index: 9, now: 1_000 })),
                    RequestBody::Admin(_) => ReplyBody::Admin(Err(NodeError::Refused("not here".into()))),
                };
                self.reply(request.id, body).await;
            }
            let _ = log.send((self.kind, "closed"));
        }
    }

    /// A listener that shakes hands as node `node_id` and hands each connection to the test.
    struct FakePeer {
        addr: String,
        accepted: mpsc::UnboundedReceiver<Accepted>,
    }

    impl FakePeer {
        async fn start(node_id: u64) -> FakePeer {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let (tx, accepted) = mpsc::unbounded_channel();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (read, mut write) = stream.into_split();
                    let mut frames = FrameReader::new(read, MAX_HELLO_FRAME);
                    if let Ok(hello) = handshake::answer(&mut frames, &mut write, CLUSTER, node_id).await {
                        frames.set_limit(MAX_FRAME);
                        let _ = tx.send(Accepted { kind: hello.kind, frames, write });
                    }
                }
            });
            FakePeer { addr, accepted }
        }

        async fn accept(&mut self) -> Accepted {
            timeout(WAIT, self.accepted.recv())
                .await
                .expect("a connection in time")
                .expect("listener running")
        }

        /// Answers every connection with [`Accepted::answer_all`]; returns what it was asked.
        fn answer_all(mut self) -> mpsc::UnboundedReceiver<(ConnectionKind, &'static str)> {
            let (log, asked) = mpsc::unbounded_channel();
            tokio::spawn(async move {
                while let Some(accepted) = self.accepted.recv().await {
                    tokio::spawn(accepted.answer_all(log.clone()));
                }
            });
            asked
        }
    }

    /// Two and a half chunks, no two neighbouring bytes alike.
    fn snapshot_data() -> Bytes {
        (0..=250u8).cycle().take(CHUNK * 5 / 2).collect()
    }

    async fn network_to(addr: &str) -> TcpNetwork {
        let network = TcpNetwork::new(CLUSTER, 1);
        network.set_peer(2, addr);
        network
    }

    #[tokio::test]
    async fn each_kind_of_call_goes_on_its_own_connection() {
        let fake = FakePeer::start(2).await;
        let mut network = network_to(&fake.addr).await;
        let mut asked = fake.answer_all();
        let node = BasicNode::default();

        let mut heartbeat = network.new_heartbeat_client(2, &node).await;
        let mut out =
            heartbeat.stream_append(futures_util::stream::iter([append(1, 0, 0)]), option()).await.unwrap();
        assert_eq!(out.next().await.unwrap().unwrap(), Ok(Some(log_id(0))));
        assert!(out.next().await.is_none());
        drop(out);

        let mut client = network.new_client(2, &node).await;
        let vote = VoteRequest::new(Vote::new(2, 1), None);
        assert!(client.vote(vote.clone(), option()).await.unwrap().vote_granted);
        assert!(client.pre_vote(vote, option()).await.unwrap().vote_granted);
        let transfer = TransferLeaderRequest::new(Vote::new_committed(2, 1), 2, None);
        assert_eq!(client.transfer_leader(transfer, option()).await.unwrap(), Ok(()));
        let mut out =
            client.stream_append(futures_util::stream::iter([append(1, 2, 10)]), option()).await.unwrap();
        assert_eq!(out.next().await.unwrap().unwrap(), Ok(Some(log_id(2))));
        drop(out);

        let mut snapshots = network.new_snapshot_client(2, &node).await;
        let snapshot = SnapshotOf::<TypeConfig, Bytes> {
            meta: SnapshotMetaOf::<TypeConfig> {
                last_log_id: Some(log_id(2)),
                last_membership: Default::default(),
            },
            snapshot: snapshot_data(),
        };
        let never = std::future::pending::<ReplicationClosed>();
        let installed =
            snapshots.full_snapshot(Vote::new_committed(1, 1), snapshot, never, option()).await.unwrap();
        assert_eq!(installed.vote, Vote::new_committed(1, 1));

        let deadline = || Deadline::after(WAIT);
        let batch = vec![Command::Tick, Command::Tick, Command::Tick];
        let pending = network.forward(2, batch, deadline()).await.unwrap();
        let replies = pending.replies(deadline()).await.unwrap().unwrap();
        assert_eq!(replies, (0..3).map(|i| Ok(turnstile_core::Reply::Int(i))).collect::<Vec<_>>());
        let point = network.read_point(2, deadline()).await.unwrap().unwrap();
        assert_eq!(point, ReadPoint { index: 9, now: 1_000 });

        let mut seen = Vec::new();
        while let Ok(entry) = asked.try_recv() {
            seen.push(entry);
        }
        use ConnectionKind::{Append, Control, Forward, Snapshot};
        assert_eq!(
            seen,
            [
                (Control, "append"),
                (Control, "vote"),
                (Control, "pre-vote"),
                (Control, "transfer-leader"),
                (Append, "append"),
                (Snapshot, "snapshot chunk"),
                (Snapshot, "snapshot chunk"),
                (Snapshot, "snapshot chunk"),
                (Snapshot, "snapshot intact"),
                (Forward, "forward"),
                (Forward, "read-index"),
            ]
        );
    }

    /// Batches written one after another reach the leader in that order, each answered by id,
    /// even when the leader answers the later one first.
    #[tokio::test]
    async fn forwarded_batches_arrive_in_order_and_are_matched_by_id() {
        let mut fake = FakePeer::start(2).await;
        let network = network_to(&fake.addr).await;
        let deadline = || Deadline::after(WAIT);
        let first = network.forward(2, vec![Command::Tick], deadline()).await.unwrap();
        let second = network.forward(2, vec![Command::Tick, Command::Tick], deadline()).await.unwrap();
        let mut peer = fake.accept().await;
        assert_eq!(peer.kind, ConnectionKind::Forward);
        let (a, b) = (peer.request().await.unwrap(), peer.request().await.unwrap());
        assert!(matches!(&a.body, RequestBody::Forward(c) if c.len() == 1));
        assert!(matches!(&b.body, RequestBody::Forward(c) if c.len() == 2));
        let int = |n| Ok(turnstile_core::Reply::Int(n));
        peer.reply(b.id, ReplyBody::Forwarded(Ok(vec![int(2), int(3)]))).await;
        peer.reply(a.id, ReplyBody::Forwarded(Err(NodeError::NotLeader { leader: None }))).await;
        assert_eq!(second.replies(deadline()).await.unwrap().unwrap(), vec![int(2), int(3)]);
        assert!(matches!(
            first.replies(deadline()).await.unwrap(),
            Err(NodeError::NotLeader { leader: None })
        ));
    }

    /// The second append is written before the first is answered, and the replies come back in
    /// request order even when the peer answers out of order.
    #[tokio::test]
    async fn appends_are_pipelined_and_answered_in_order() {
        let mut fake = FakePeer::start(2).await;
        let mut network = network_to(&fake.addr).await;
        let mut client = network.new_client(2, &BasicNode::default()).await;
        let input = futures_util::stream::iter([append(1, 2, 10), append(3, 4, 10)]);
        let mut out = client.stream_append(input, option()).await.unwrap();
        let mut peer = fake.accept().await;
        assert_eq!(peer.kind, ConnectionKind::Append);

        let follower = async {
            let first = peer.request().await.unwrap();
            // If appends were sent one at a time, this would wait for ever (bounded by WAIT).
            let second = peer.request().await.unwrap();
            let streams = |r: &Request| match &r.body {
                RequestBody::Append { stream, rpc } => (*stream, last_log_id(rpc)),
                other => panic!("expected an append, got {other:?}"),
            };
            let ((stream_1, last_1), (stream_2, last_2)) = (streams(&first), streams(&second));
            assert_eq!(stream_1, stream_2, "one stream_append is one stream");
            peer.reply(second.id, ReplyBody::Appended(Ok(last_2))).await;
            peer.reply(first.id, ReplyBody::Appended(Ok(last_1))).await;
            peer
        };
        let (replies, _peer) =
            tokio::join!(async { (out.next().await, out.next().await, out.next().await) }, follower);
        let (first, second, end) = replies;
        assert_eq!(first.unwrap().unwrap(), Ok(Some(log_id(2))));
        assert_eq!(second.unwrap().unwrap(), Ok(Some(log_id(4))));
        assert!(end.is_none());
    }

    /// A conflict ends the stream: openraft starts a new one from the conflict.
    #[tokio::test]
    async fn an_append_error_ends_the_stream() {
        let mut fake = FakePeer::start(2).await;
        let mut network = network_to(&fake.addr).await;
        let mut client = network.new_client(2, &BasicNode::default()).await;
        let input = futures_util::stream::iter([append(5, 6, 1), append(7, 8, 1)]);
        let mut out = client.stream_append(input, option()).await.unwrap();
        let mut peer = fake.accept().await;
        let follower = async {
            let first = peer.request().await.unwrap();
            let conflict = openraft::raft::StreamAppendError::Conflict(log_id(4));
            peer.reply(first.id, ReplyBody::Appended(Err(conflict))).await;
        };
        let (replies, ()) = tokio::join!(async { (out.next().await, out.next().await) }, follower);
        assert!(matches!(replies.0, Some(Ok(Err(openraft::raft::StreamAppendError::Conflict(_))))));
        assert!(replies.1.is_none());
    }

    /// A request that does not fit in a frame is cut to the entries that do, and the stream ends
    /// after its reply, so openraft resends the rest.
    #[tokio::test]
    async fn an_append_too_large_for_a_frame_is_cut() {
        let mut fake = FakePeer::start(2).await;
        let mut network = TcpNetwork::with_frame_limit(CLUSTER, 1, 4 << 10, None);
        network.set_peer(2, fake.addr.as_str());
        let mut client = network.new_client(2, &BasicNode::default()).await;
        // 8 entries of 1.2 KB: 4 are too many for 4 KiB, 2 fit.
        let input = futures_util::stream::iter([append(1, 8, 1200), append(9, 9, 1200)]);
        let mut out = client.stream_append(input, option()).await.unwrap();
        let mut peer = fake.accept().await;
        let follower = async {
            let request = peer.request().await.unwrap();
            let RequestBody::Append { rpc, .. } = &request.body else { panic!("expected an append") };
            let sent: Vec<u64> = rpc.entries.iter().map(|e| e.log_id.index()).collect();
            peer.reply(request.id, ReplyBody::Appended(Ok(last_log_id(rpc)))).await;
            sent
        };
        let (replies, sent) = tokio::join!(async { (out.next().await, out.next().await) }, follower);
        assert_eq!(sent, [1, 2]);
        assert_eq!(replies.0.unwrap().unwrap(), Ok(Some(log_id(2))));
        assert!(replies.1.is_none(), "the rest waits for the next stream");

        let mut single = network.new_client(2, &BasicNode::default()).await;
        let err = single.append_entries(append(1, 1, 8000), option()).await.unwrap_err();
        assert!(matches!(err, RPCError::Network(_)), "one entry over the limit cannot be sent: {err}");
    }

    /// A reply that does not come in time fails the call and closes the connection; the next
    /// call opens a new one.
    #[tokio::test]
    async fn a_timeout_closes_the_connection() {
        let mut fake = FakePeer::start(2).await;
        let mut network = network_to(&fake.addr).await;
        let mut client = network.new_client(2, &BasicNode::default()).await;
        let vote = VoteRequest::new(Vote::new(2, 1), None);

        let (late, mut first) = tokio::join!(
            client.vote(vote.clone(), RPCOption::new(Duration::from_millis(200))),
            fake.accept()
        );
        assert!(matches!(late, Err(RPCError::Timeout(_))), "{late:?}");
        // The request arrived, and then the connection was closed behind it.
        assert!(matches!(first.request().await.unwrap().body, RequestBody::Vote(_)));
        assert!(first.frames.next::<Request>().await.unwrap().is_none());

        let answered = async {
            let mut second = fake.accept().await;
            let request = second.request().await.unwrap();
            second.reply(request.id, ReplyBody::Vote(VoteResponse::new(Vote::new(2, 1), None, false))).await;
        };
        let (vote, ()) = tokio::join!(client.vote(vote, option()), answered);
        assert!(!vote.unwrap().vote_granted);
    }

    #[tokio::test]
    async fn a_peer_that_cannot_be_reached_is_unreachable() {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        let mut network = network_to(&addr).await;
        let mut client = network.new_client(2, &BasicNode::default()).await;
        let vote = VoteRequest::new(Vote::new(2, 1), None);
        // Never a grant: a pre-vote nobody answered must not count.
        let pre_vote = client.pre_vote(vote.clone(), option()).await;
        assert!(matches!(pre_vote, Err(RPCError::Unreachable(_))), "{pre_vote:?}");
        assert!(matches!(client.vote(vote.clone(), option()).await, Err(RPCError::Unreachable(_))));
        assert!(matches!(
            client.stream_append(futures_util::stream::iter([append(1, 0, 0)]), option()).await,
            Err(RPCError::Unreachable(_))
        ));

        // No address at all, and this node itself: unreachable without a connection attempt.
        let mut unknown = network.new_client(3, &BasicNode::default()).await;
        let err = unknown.vote(vote.clone(), option()).await.unwrap_err();
        assert!(err.to_string().contains("no address is known for node 3"), "{err}");
        let mut itself = network.new_client(1, &BasicNode::new("127.0.0.1:1")).await;
        let err = itself.vote(vote, option()).await.unwrap_err();
        assert!(
            matches!(err, RPCError::Unreachable(_))
                && err.to_string().contains("refusing to connect to itself"),
            "{err}"
        );
    }

    /// The membership's address replaces a configured one, and a changed address is dialed.
    #[tokio::test]
    async fn addresses_come_from_the_membership() {
        let (first, second) = (FakePeer::start(2).await, FakePeer::start(2).await);
        let (first_addr, second_addr) = (first.addr.clone(), second.addr.clone());
        let (mut first_asked, mut second_asked) = (first.answer_all(), second.answer_all());
        let mut network = network_to("127.0.0.1:1").await;
        let vote = VoteRequest::new(Vote::new(2, 1), None);

        let mut client = network.new_client(2, &BasicNode::new(first_addr)).await;
        assert!(client.vote(vote.clone(), option()).await.unwrap().vote_granted);
        assert_eq!(first_asked.recv().await, Some((ConnectionKind::Control, "vote")));

        let mut client = network.new_client(2, &BasicNode::new(second_addr)).await;
        assert!(client.vote(vote, option()).await.unwrap().vote_granted);
        assert_eq!(second_asked.recv().await, Some((ConnectionKind::Control, "vote")));
        // The connection to the old address was closed, not left open.
        let closed = timeout(WAIT, first_asked.recv()).await.expect("the old connection closes");
        assert_eq!(closed, Some((ConnectionKind::Control, "closed")));
    }

    #[test]
    fn large_appends_get_time_to_cross() {
        assert_eq!(allowance(0), Duration::ZERO);
        assert_eq!(allowance(8 << 20), Duration::from_secs(1));
        assert_eq!(allowance(16 << 20), Duration::from_secs(2));
    }

    #[test]
    fn only_host_and_port_is_an_address() {
        assert!(dialable("127.0.0.1:7391") && dialable("node-2:7391") && dialable("[::1]:7391"));
        assert!(!dialable("localhost") && !dialable("") && !dialable(":7391") && !dialable("host:http"));
    }

    #[tokio::test]
    async fn the_wrong_node_is_refused() {
        let fake = FakePeer::start(3).await;
        let addr = fake.addr.clone();
        let _asked = fake.answer_all();
        let mut network = network_to(&addr).await;
        let mut client = network.new_client(2, &BasicNode::default()).await;
        let err = client.vote(VoteRequest::new(Vote::new(2, 1), None), option()).await.unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "{err}");
        assert!(err.to_string().contains(&format!("peer at {addr} is node 3, not node 2")), "{err}");
    }
}
