//! [`Node`]: the handle the server uses — start, propose (batched), linearizable read, effects,
//! the next timer deadline, the clock, status, shutdown.
//!
//! ```text
//!  Node::start ─► open_storage ─► Raft::new ─► initialize ─► wait to lead ─┬─► batcher task
//!                 (open.rs)                                                 └─► snapshotter task
//!  Node::start_in_cluster: the same, with TcpNetwork, `serve` on the Raft listener and the
//!  leader hook (RefreshLeases on each leadership) before initialize; waits to know a leader
//!
//!  Node::submit ─► proposal queue ─► batcher ─► Raft::client_write_ff ─► apply: ReplyTo ─► Answer
//!                                   (batcher.rs: batching, the in-flight bound, stamping)
//!  Node::read ─► leads alone? the state as applied : ensure_linearizable, then the state
//!
//!  on a follower: the batcher forwards each batch to the leader (forward.rs), and a read asks
//!  the leader for a read point, waits to have applied up to it, and reads its own state
//! ```
//!
//! - `config.rs`: [`NodeConfig`] and [`Storage`], how a node is started.
//! - `error.rs`: [`NodeError`], and how openraft's errors map onto it.
//! - `batcher.rs`: the task that forms log entries from queued proposals, and hands back replies.
//! - `forward.rs`: where a follower's batches and reads go, and how a leader takes them.
//! - `open.rs`: the data dir's lock, the newest snapshot and the log after it.
//! - `snapshotter.rs`: the task that asks for a snapshot when the log grows as large as the last one.

mod batcher;
mod config;
mod error;
mod forward;
mod membership;
mod open;
mod snapshotter;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use forward::{Forwards, Route, Target};
use openraft::Instant;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::RaftError;
use openraft::raft::WatchChangeHandle;
use openraft::{BasicNode, Config, ReadPolicy, ServerState, SnapshotPolicy};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use turnstile_core::{Command, Reply, State, Timestamp};
use turnstile_storage::{DirLock, Journal, JournalStats};

use crate::network::{NoNetwork, TcpNetwork, serve};
use crate::state_machine::{AppliedEffects, EffectHandler, StateMachineStore};
use crate::{Clock, Raft, TypeConfig};
use batcher::{Proposal, Stats};
use error::{fatal_error, journal_stopped, read_error};
use open::open_storage;

pub use config::{Cluster, NodeConfig, Storage};
pub use membership::{AdminRequest, ClusterStatus, MemberStatus};

pub use error::NodeError;

/// How long [`Node::start`] waits for this node to become leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Figures for INFO and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStatus {
    pub node_id: u64,
    pub term: u64,
    pub leader: Option<u64>,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: &'static str,
    /// The voters of the membership in effect.
    pub members: Vec<u64>,
    /// `None` while the log is empty. (Index 0 is the initial membership entry.)
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// The log index the latest snapshot covers.
    pub snapshot_index: Option<u64>,
    /// Log entries (batches) this node has proposed.
    pub entries_proposed: u64,
    /// Commands this node has proposed; divided by `entries_proposed`, the average batch size.
    pub commands_proposed: u64,
    /// The most commands one proposed entry has carried.
    pub largest_batch: u64,
}

/// A running Turnstile Raft node. Cheap to clone; all clones drive the same node.
#[derive(Debug, Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The durable log, when there is one (for stats and the final sync).
    journal: Option<Arc<Journal>>,
    /// Held for the node's lifetime: no second server may use the data dir.
    _dir_lock: Option<DirLock>,
    node_id: u64,
    /// Stamps every entry (in the batcher); what the server's ticker waits on.
    clock: Clock,
    raft: Raft,
    state_machine: StateMachineStore,
    proposals: mpsc::Sender<Proposal>,
    effects: Mutex<Option<mpsc::UnboundedReceiver<AppliedEffects>>>,
    stats: Arc<Stats>,
    closed: AtomicBool,
    batcher: Mutex<Option<JoinHandle<()>>>,
    /// Asks for snapshots by log size (durable nodes with a size limit only).
    snapshotter: Mutex<Option<JoinHandle<()>>>,
    /// In a cluster: what stops [`serve`] on the Raft listener, and its task.
    serving: Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
    /// In a cluster: the watch that proposes [`Command::RefreshLeases`] on becoming leader.
    leading: Mutex<Option<LeaderHook>>,
    /// In a cluster: how requests made here reach the leader.
    route: Option<Route>,
    /// In a cluster: what this node does, as leader, with forwarded and admin requests.
    door: Option<Arc<Forwards>>,
}

/// openraft's handle of the watch [`on_leading`] starts; dropping it stops the watch.
struct LeaderHook {
    _watch: WatchChangeHandle<TypeConfig>,
}

impl std::fmt::Debug for LeaderHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaderHook")
    }
}

/// Each time this node becomes leader, queues [`Command::RefreshLeases`] and then `more`: a
/// new leader cannot know how long ago the old one last stamped time, so it gives every lease
/// a full TTL from its own clock. Queued straight into the batcher's channel (the node is not
/// built yet when this is set up); replies are not awaited.
fn on_leading(
    raft: &Raft,
    proposals: &mpsc::Sender<Proposal>,
    more: Vec<Command>,
) -> WatchChangeHandle<TypeConfig> {
    let proposals = proposals.clone();
    raft.on_leader_change(
        move |leader| {
            let (proposals, more) = (proposals.clone(), more.clone());
            async move {
                tracing::info!(%leader, "this node leads: refreshing every lease");
                for cmd in std::iter::once(Command::RefreshLeases).chain(more) {
                    let (reply, _answer) = oneshot::channel();
                    if proposals.send(Proposal { cmd, reply }).await.is_err() {
                        return;
                    }
                }
            }
        },
        |leader| async move { tracing::info!(%leader, "this node no longer leads") },
    )
}

/// Whether this node leads but no quorum has acknowledged it within its lease: cut off in a
/// minority, it still calls itself leader, but nothing it proposes can commit until it hears from
/// a quorum again. Never true for a single voter.
pub(crate) fn quorum_silent(raft: &Raft, self_id: u64) -> bool {
    let metrics = raft.metrics();
    let m = metrics.borrow_watched();
    // openraft's leader lease is election_timeout_max.
    let lease = Duration::from_millis(raft.config().election_timeout_max);
    m.state == ServerState::Leader
        && !m.membership_config.membership().voter_ids().eq([self_id])
        && m.last_quorum_acked.as_ref().is_none_or(|at| Instant::elapsed(&**at) >= lease)
}

/// A proposed command's reply, once its log entry is applied.
pub type Answer = oneshot::Receiver<Result<Reply, NodeError>>;

/// What [`Node::enqueue`] did.
enum Enqueued<'a> {
    /// Queued (the answer's receiver) or refused.
    Done(Result<Answer, NodeError>),
    /// The queue was full: this waits for room, then queues.
    Full(Pin<Box<dyn Future<Output = Result<Answer, NodeError>> + Send + 'a>>),
}

impl Node {
    /// Starts a one-voter cluster: opens (or creates) the log and snapshots in the data dir —
    /// the newest snapshot, then the log after it — initializes the cluster on first start, waits
    /// until this node is leader, then proposes [`Command::RefreshLeases`] (so no lease that
    /// survived a restart expires before a full TTL under the new leader).
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        Node::start_with(config, None).await
    }

    /// Starts a node of a cluster of several voters: as [`Node::start`], but talking to the
    /// peers over TCP ([`TcpNetwork`], [`serve`] on the cluster's listener). Every node of a new
    /// cluster initializes it with the same membership (openraft's cluster formation allows
    /// this, and the voting elects one leader); the cluster forms once a majority is up. A node
    /// whose data dir holds a log or a vote has been initialized and never is again.
    ///
    /// Returns once this node knows a leader, or after [`LEADER_TIMEOUT`] without one (then
    /// requests fail with [`NodeError::NotLeader`] until there is one). Each time this node
    /// becomes leader it proposes [`Command::RefreshLeases`], then [`Cluster::on_leading`].
    pub async fn start_in_cluster(config: NodeConfig, cluster: Cluster) -> Result<Node, NodeError> {
        Node::start_with(config, Some(cluster)).await
    }

    async fn start_with(config: NodeConfig, cluster: Option<Cluster>) -> Result<Node, NodeError> {
        let mut raft_config = Config {
            cluster_name: "turnstile".to_string(),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every.max(1)),
            // Purge everything a snapshot covers: the entries are held in memory until purged,
            // and a single voter has no follower that could still need them.
            max_in_snapshot_log_to_keep: 0,
            ..Config::default()
        };
        if cluster.is_some() {
            let election = config.election_timeout_ms.max(10);
            raft_config = Config {
                // A follower waits between one and two election timeouts for a heartbeat; the
                // leader's lease (openraft: election_timeout_max) and then an election timeout
                // pass before another node campaigns, so failover takes about three of them.
                heartbeat_interval: (election / 5).max(1),
                election_timeout_min: election,
                election_timeout_max: election * 2,
                // Our transport applies it per snapshot chunk, not to the whole snapshot.
                install_snapshot_timeout: 2_000,
                // A restarted or briefly cut-off node asks first, so it does not depose a leader
                // the others still follow.
                enable_pre_vote: Some(true),
                // A margin after a snapshot, so a briefly lagging follower is sent entries
                // rather than the whole state.
                max_in_snapshot_log_to_keep: 1_000,
                // A leader that has heard from no quorum for this long steps down, so that a
                // follower it still reaches (a bridge in a partial partition) stops renewing its
                // lease and the connected majority can elect another. The least openraft allows:
                // its lease (election_timeout_max) plus election_timeout_max.
                quorum_loss_probe_interval: Some(election * 4),
                // Entries go to the followers once queued in the leader's journal, not once
                // fsynced there: a commit then waits for the slower of the two fsyncs, not both.
                broadcast_submitted_on_append: Some(true),
                ..raft_config
            };
        }
        let raft_config =
            Arc::new(raft_config.validate().map_err(|e| NodeError::Fatal(format!("raft config: {e}")))?);
        // In a cluster the leader's fsync overlaps the followers' appends: its journal writes
        // behind (append only queues) and openraft sends entries on as soon as they are queued.
        let storage = config.storage.clone().map(|mut storage| {
            storage.options.write_behind |= cluster.is_some();
            storage
        });
        let opened = open_storage(storage.as_ref())?;
        let id = config.node_id;
        let (raft, cluster, route) = match cluster {
            None => {
                let raft = Raft::new(id, raft_config, NoNetwork, opened.log, opened.state_machine.clone())
                    .await
                    .map_err(fatal_error)?;
                (raft, None, None)
            }
            Some(cluster) => {
                let network = TcpNetwork::with_tls(cluster.cluster_id, id, cluster.tls.clone());
                for (&peer, addr) in &cluster.peers {
                    if peer != id {
                        network.set_peer(peer, addr.clone());
                    }
                }
                let route = Route { network: network.clone(), self_id: id };
                let raft = Raft::new(id, raft_config, network, opened.log, opened.state_machine.clone())
                    .await
                    .map_err(fatal_error)?;
                (raft, Some(cluster), Some(route))
            }
        };
        let (state_machine, effects) = (opened.state_machine, opened.effects);

        let max_batch = config.max_batch.max(1);
        let (proposals, queue) = mpsc::channel(max_batch.saturating_mul(4));
        let mut serving = None;
        let mut leading = None;
        let mut door = None;
        let in_cluster = cluster.is_some();
        let members = match cluster {
            None => BTreeMap::from([(id, BasicNode::default())]),
            Some(cluster) => {
                let listener = cluster
                    .listener
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::TcpListener::from_std(cluster.listener))
                    .map_err(|e| NodeError::Fatal(format!("raft listener: {e}")))?;
                let (stop, stopped) = oneshot::channel::<()>();
                let forwards = Arc::new(Forwards {
                    raft: raft.clone(),
                    state_machine: state_machine.clone(),
                    proposals: proposals.clone(),
                    clock: config.clock.clone(),
                    self_id: id,
                    admin: Arc::default(),
                    route: route.clone().expect("a cluster node has a route"),
                });
                door = Some(Arc::clone(&forwards));
                let forwards: crate::network::Handler = Some(forwards);
                let task = tokio::spawn(serve(
                    listener,
                    raft.clone(),
                    cluster.cluster_id,
                    id,
                    forwards,
                    cluster.tls.clone(),
                    async {
                        let _ = stopped.await;
                    },
                ));
                serving = Some((stop, task));
                // Watching before initializing: the first leadership is not missed.
                leading = Some(LeaderHook { _watch: on_leading(&raft, &proposals, cluster.on_leading) });
                cluster.peers.iter().map(|(&peer, addr)| (peer, BasicNode::new(addr))).collect()
            }
        };
        // A node joining a running cluster (no peers) is added by the leader instead.
        let joining = members.is_empty();
        if !joining && !raft.is_initialized().await.map_err(fatal_error)? {
            raft.initialize(members).await.map_err(|e| NodeError::Fatal(format!("initialize: {e}")))?;
        }
        if !in_cluster {
            // Writing before this node leads fails with ForwardToLeader.
            raft.wait(Some(LEADER_TIMEOUT))
                .metrics(
                    |m| m.state == ServerState::Leader && m.current_leader == Some(id),
                    "this node becomes leader",
                )
                .await
                .map_err(|e| NodeError::Fatal(format!("no leadership: {e}")))?;
        } else if joining {
            // Not a member yet: the caller asks to be added once this node serves Raft. Or one
            // that joined before and restarted: the caller must see the membership in its log, so
            // this waits until openraft has published it.
            if raft.is_initialized().await.map_err(fatal_error)? {
                let _ = raft
                    .wait(Some(LEADER_TIMEOUT))
                    .metrics(|m| m.membership_config.membership().get_node(&id).is_some(), "its membership")
                    .await;
            }
        } else if let Err(e) =
            raft.wait(Some(LEADER_TIMEOUT)).metrics(|m| m.current_leader.is_some(), "a leader is known").await
        {
            // Serve anyway: requests are refused until a majority is up and has elected one.
            tracing::warn!(error = %e, "no leader yet; serving, and refusing writes until there is one");
        }

        let stats = Arc::new(Stats::default());
        let in_flight = config.max_in_flight.max(1);
        let batcher = tokio::spawn(batcher::run(
            raft.clone(),
            queue,
            config.clock.clone(),
            max_batch,
            in_flight,
            stats.clone(),
            route.clone(),
            opened.journal.clone(),
        ));
        let snapshotter = match &opened.journal {
            Some(journal) if config.snapshot_log_bytes > 0 => Some(tokio::spawn(snapshotter::run(
                raft.clone(),
                Arc::clone(journal),
                state_machine.clone(),
                config.snapshot_log_bytes,
            ))),
            _ => None,
        };

        let node = Node {
            inner: Arc::new(Inner {
                journal: opened.journal,
                _dir_lock: opened.dir_lock,
                node_id: id,
                clock: config.clock,
                raft,
                state_machine,
                proposals,
                effects: Mutex::new(Some(effects)),
                stats,
                closed: AtomicBool::new(false),
                batcher: Mutex::new(Some(batcher)),
                snapshotter: Mutex::new(snapshotter),
                serving: Mutex::new(serving),
                leading: Mutex::new(leading),
                route,
                door,
            }),
        };
        if !in_cluster {
            node.propose(Command::RefreshLeases).await?;
        }
        Ok(node)
    }

    /// Proposes one command and returns its reply, once its log entry is committed and applied.
    /// Concurrent proposals share log entries (see `batcher.rs`).
    pub async fn propose(&self, cmd: Command) -> Result<Reply, NodeError> {
        let answer = self.submit(cmd).await?;
        // A dropped sender means the batcher or Raft stopped before answering.
        answer.await.map_err(|_| NodeError::ShuttingDown)?
    }

    /// Queues a proposal and returns the receiver of its reply. Proposals submitted one after
    /// another from one task are applied in that order, so a front end can pipeline (a RESP
    /// pipeline's writes, AMQP publishes with confirms) without waiting for each reply.
    ///
    /// The proposal is queued when this is called, not when the future is first polled; the
    /// future waits only while the queue is full. So the future holds no command, and one
    /// awaited inline costs its caller little to create (futures are copied into place).
    pub fn submit(&self, cmd: Command) -> impl Future<Output = Result<Answer, NodeError>> + Send + '_ {
        let queued = self.enqueue(cmd);
        async move {
            match queued {
                Enqueued::Done(result) => result,
                Enqueued::Full(wait) => wait.await,
            }
        }
    }

    /// Puts one proposal in the batcher's queue, or makes the wait for room in it.
    fn enqueue(&self, cmd: Command) -> Enqueued<'_> {
        if let Err(e) = self.check_open() {
            return Enqueued::Done(Err(e));
        }
        // Refused before it is queued: certainly not applied, and no wait for a Raft that stopped.
        if let Some(why) = journal_stopped(self.inner.journal.as_deref()) {
            return Enqueued::Done(Err(NodeError::WritesStopped(why)));
        }
        let (reply, answer) = oneshot::channel();
        match self.inner.proposals.try_send(Proposal { cmd, reply }) {
            Ok(()) => Enqueued::Done(Ok(answer)),
            Err(TrySendError::Full(proposal)) => Enqueued::Full(Box::pin(async move {
                self.inner.proposals.send(proposal).await.map_err(|_| NodeError::ShuttingDown)?;
                Ok(answer)
            })),
            Err(TrySendError::Closed(_)) => Enqueued::Done(Err(NodeError::ShuttingDown)),
        }
    }

    /// Linearizable read: runs `f` on the state once it holds every write whose reply was sent
    /// before this call. See [`Node::read_at`].
    pub async fn read<R>(&self, f: impl FnOnce(&State) -> R) -> Result<R, NodeError> {
        self.read_at(|state, _| f(state)).await
    }

    /// Linearizable read, with the read point's time: runs `f` on the state and the leader's
    /// clock at the read point, once the state holds every write whose reply was sent before
    /// this call.
    ///
    /// - On the leader, openraft's read-index protocol confirms leadership and waits until the
    ///   state machine has applied up to the read index (`ensure_linearizable` does both).
    /// - While this node leads a membership in which it is the only voter, that check is skipped:
    ///   nobody else can lead or commit then, and every write whose reply was sent is already
    ///   applied (replies go out after apply), so the applied state answers linearizably,
    ///   without a round trip through the Raft core.
    /// - On a follower, the leader hands out a read point (the same protocol, run there), and
    ///   this node waits until it has applied up to it, then reads its own state.
    pub async fn read_at<R>(&self, f: impl FnOnce(&State, Timestamp) -> R) -> Result<R, NodeError> {
        self.check_open()?;
        let now = if self.leads_alone() {
            self.inner.clock.now()
        } else {
            let target = match &self.inner.route {
                None => Target::Here,
                Some(route) => route.target(&self.inner.raft).await?,
            };
            match target {
                Target::Here => self.confirm_read_here().await?,
                Target::Leader(leader) => self.wait_for_read_point(leader).await?,
            }
        };
        self.inner
            .state_machine
            .with_state(|state| f(state, now))
            .map_err(|e| NodeError::Fatal(e.to_string()))
    }

    /// The read-index protocol on this node, which leads; returns the time to read at.
    async fn confirm_read_here(&self) -> Result<Timestamp, NodeError> {
        // A poisoned journal has stopped Raft; when this node is the only voter, nobody can have
        // moved on, so the applied state answers (see below) without asking the stopped Raft,
        // which would log an error for every read.
        if self.journal_poisoned() && self.sole_voter() {
            return Ok(self.inner.clock.now());
        }
        // Boxed: openraft's read-index future is large, and inline it would make every read's
        // future (and its callers') that large, to be copied into place on each call.
        match Box::pin(self.inner.raft.ensure_linearizable(ReadPolicy::ReadIndex)).await {
            Ok(_) => {}
            // A poisoned journal stops Raft (no write can be made durable), but what was applied
            // stays true: this node is the only voter, so nobody else can have moved on. Reads
            // keep working; writes are refused.
            Err(RaftError::Fatal(_)) if self.journal_poisoned() => {}
            Err(e) => return Err(read_error(e)),
        }
        Ok(self.inner.clock.now())
    }

    /// A read point from the leader `leader`, and the wait until this node has applied up to it;
    /// returns the leader's time at the read point.
    async fn wait_for_read_point(&self, leader: u64) -> Result<Timestamp, NodeError> {
        let route = self.inner.route.as_ref().expect("only a route names another leader");
        let point = route.read_point(leader).await?;
        if self.inner.state_machine.last_applied_index().is_some_and(|applied| applied >= point.index) {
            return Ok(point.now);
        }
        Box::pin(
            self.inner
                .raft
                .wait(Some(forward::FORWARD_TIMEOUT))
                .applied_index_at_least(Some(point.index), "the read point is applied"),
        )
        .await
        .map_err(|e| NodeError::Unavailable(format!("this node is behind the leader: {e}")))?;
        Ok(point.now)
    }

    /// Runs a membership change or status request on the leader (forwarded there from a
    /// follower) and returns the cluster's status afterwards, as the leader sees it. A single
    /// node (no Raft listener) answers only [`AdminRequest::Status`].
    pub async fn admin(&self, request: AdminRequest) -> Result<ClusterStatus, NodeError> {
        self.check_open()?;
        let Some(door) = &self.inner.door else {
            return match request {
                AdminRequest::Status => Ok(self.local_cluster_status()),
                _ => Err(NodeError::Refused(
                    "this node runs alone (no --peers): membership changes need a node started as part of a cluster"
                        .into(),
                )),
            };
        };
        let status = request == AdminRequest::Status;
        match crate::network::ForwardHandler::admin(door.as_ref(), request).await {
            // No leader: the status this node has is still worth showing.
            Err(NodeError::NotLeader { .. } | NodeError::Unavailable(_)) if status => {
                Ok(self.local_cluster_status())
            }
            done => done,
        }
    }

    /// The cluster's status as this node sees it (replication figures only on the leader).
    pub fn local_cluster_status(&self) -> ClusterStatus {
        membership::local_status(&self.inner.raft, &self.inner.state_machine, self.inner.node_id)
    }

    /// Whether this node is the leader now (in a cluster, that changes: only the leader proposes
    /// ticks).
    pub fn is_leader(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        m.state == ServerState::Leader && m.current_leader == Some(self.inner.node_id)
    }

    /// Whether this node is the leader and the only voter. openraft publishes a membership change
    /// in its metrics before this node can vote for anyone else under it, so a node that another
    /// could replace no longer reads as alone.
    /// Whether this node is the cluster's only voter (whatever Raft's state).
    fn sole_voter(&self) -> bool {
        let id = self.inner.node_id;
        self.inner.raft.metrics().borrow_watched().membership_config.membership().voter_ids().eq([id])
    }

    fn leads_alone(&self) -> bool {
        let id = self.inner.node_id;
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        m.state == ServerState::Leader
            && m.current_leader == Some(id)
            && m.membership_config.membership().voter_ids().eq([id])
    }

    /// Hands the effects of every entry applied from now on to `handler`, inside apply (and
    /// those queued for [`Node::take_effects`] first), instead of the channel. Fails when the
    /// effects were taken already.
    pub fn route_effects(&self, handler: EffectHandler) -> Result<(), NodeError> {
        let queued = self
            .inner
            .effects
            .lock()
            .map_err(|_| NodeError::Fatal("effects lock poisoned".into()))?
            .take()
            .ok_or_else(|| NodeError::Fatal("effects were taken already".into()))?;
        self.inner.state_machine.route_effects(handler, queued).map_err(|e| NodeError::Fatal(e.to_string()))
    }

    /// Effects of every applied entry, in log order: `(log index, effects)`, entries without
    /// effects skipped. Can be taken once (returns `None` afterwards). Unbounded: the apply path
    /// never waits for the consumer, so the consumer must keep up (and effects accumulate until
    /// the receiver is taken).
    pub fn take_effects(&self) -> Option<mpsc::UnboundedReceiver<AppliedEffects>> {
        self.inner.effects.lock().ok()?.take()
    }

    /// The state machine's next timer deadline after the latest apply; the server's ticker
    /// proposes `Command::Tick` when it is due.
    pub fn next_deadline(&self) -> watch::Receiver<Option<Timestamp>> {
        self.inner.state_machine.next_deadline()
    }

    /// The clock this node stamps entries with ([`NodeConfig::clock`]). Whoever decides when
    /// time-driven work is due (the server's ticker) reads and waits on this one, so that with a
    /// manual clock a test's `advance` is what makes ticks happen.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// Figures for INFO and metrics.
    ///
    /// openraft publishes its metrics from the Raft core after the state machine reports back,
    /// so they trail the replies clients already have. `applied_index` is therefore read from the
    /// state machine itself (exact), and `committed_index` / `last_log_index` are raised to at
    /// least it (an applied entry is committed and in the log).
    pub fn status(&self) -> NodeStatus {
        let applied = self.inner.state_machine.last_applied_index();
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        let committed = m.local_committed.map(|id| id.index()).max(applied);
        let stats = &self.inner.stats;
        NodeStatus {
            node_id: self.inner.node_id,
            term: m.current_term,
            leader: m.current_leader,
            role: match m.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            },
            members: m.membership_config.membership().voter_ids().collect(),
            last_log_index: m.last_log_index.max(committed),
            committed_index: committed,
            applied_index: applied,
            snapshot_index: m.snapshot.map(|id| id.index()),
            entries_proposed: stats.entries(),
            commands_proposed: stats.commands(),
            largest_batch: stats.largest(),
        }
    }

    /// Whether this node can reach a leader: it follows one, or it leads and a quorum acknowledged
    /// it within the leader lease. A leader cut off from the others still calls itself leader (its
    /// status says so) but refuses writes once its lease has run out, so readiness must not trust
    /// the role alone.
    pub fn leader_reachable(&self) -> bool {
        let raft = &self.inner.raft;
        let leads = raft.metrics().borrow_watched().state == ServerState::Leader;
        if leads {
            !quorum_silent(raft, self.inner.node_id)
        } else {
            raft.metrics().borrow_watched().current_leader.is_some()
        }
    }

    /// The underlying openraft handle, for what this API does not cover (metrics details,
    /// triggering a snapshot, and later membership changes). Writes should go through
    /// [`Node::propose`].
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// Stops accepting requests, stops the batcher and shuts Raft down. Pending proposals fail
    /// with [`NodeError::ShuttingDown`]. Calling it again does nothing.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        // Queued proposals are dropped with the batcher: their callers see ShuttingDown.
        for task in [&self.inner.batcher, &self.inner.snapshotter] {
            if let Some(task) = task.lock().ok().and_then(|mut t| t.take()) {
                task.abort();
            }
        }
        drop(self.inner.leading.lock().ok().and_then(|mut hook| hook.take()));
        if let Some((stop, task)) = self.inner.serving.lock().ok().and_then(|mut s| s.take()) {
            let _ = stop.send(());
            let _ = task.await;
        }
        self.inner.raft.shutdown().await.map_err(|e| NodeError::Fatal(format!("raft shutdown: {e}")))?;
        if let Some(journal) = &self.inner.journal {
            journal.sync().map_err(|e| NodeError::Fatal(format!("final sync: {e}")))?;
        }
        Ok(())
    }

    /// Makes the journal's next fsync fail, to test poisoning.
    #[doc(hidden)]
    pub fn fail_next_sync_for_test(&self) {
        if let Some(journal) = &self.inner.journal {
            journal.fail_next_sync_for_test();
        }
    }

    /// Makes every journal fsync take `delay` longer until set back to zero, as a slow disk would
    /// (the server's `--fault-injection` hook). False when the log is not durable: nothing to slow.
    #[doc(hidden)]
    pub fn set_sync_delay(&self, delay: std::time::Duration) -> bool {
        self.inner.journal.as_ref().inspect(|journal| journal.set_sync_delay(delay)).is_some()
    }

    /// Makes snapshot writes wait until the returned hold is dropped; `None` without a data dir.
    #[doc(hidden)]
    pub fn hold_snapshot_saves_for_test(&self) -> Option<turnstile_storage::HeldSaves> {
        self.inner.state_machine.hold_snapshot_saves_for_test()
    }

    /// Whether a failed write or fsync has stopped the durable log.
    pub fn journal_poisoned(&self) -> bool {
        self.inner.journal.as_ref().is_some_and(|j| j.is_poisoned())
    }

    /// Runs `f` on the state as this node has applied it so far, with no read-index check: it may
    /// lag what was acknowledged (entries committed and not yet applied here; on a follower, what
    /// the leader has not sent yet). For advisory looks that run often and must stay cheap, such
    /// as flow control's backlog; what a client is answered goes through [`Node::read`].
    pub fn read_applied<R>(&self, f: impl FnOnce(&State) -> R) -> Result<R, NodeError> {
        self.inner.state_machine.with_state(f).map_err(|e| NodeError::Fatal(e.to_string()))
    }

    /// Payload bytes stored after the latest apply, read without a lock (for memory limits).
    pub fn payload_bytes(&self) -> u64 {
        self.inner.state_machine.payload_bytes()
    }

    /// The journal's counters (fsyncs, group sizes, fsync latency), when the log is durable.
    pub fn journal_stats(&self) -> Option<JournalStats> {
        self.inner.journal.as_ref().map(|j| j.stats())
    }

    fn check_open(&self) -> Result<(), NodeError> {
        if self.inner.closed.load(Ordering::Relaxed) { Err(NodeError::ShuttingDown) } else { Ok(()) }
    }
}
