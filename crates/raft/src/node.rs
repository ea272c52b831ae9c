//! [`Node`]: the handle the server uses — start, propose (batched), linearizable read, effects,
//! the next timer deadline, status, shutdown.
//!
//! **Batching and pipelining.** Every [`Node::propose`] puts its command on a queue and waits for
//! its own reply. One batcher task takes the first queued proposal plus whatever else is queued
//! at that moment (up to `max_batch`), stamps the batch with the leader's wall clock, and submits
//! it as one log entry. It does not wait for that entry to commit: it hands the entry's completion
//! to a spawned task (which splits the [`crate::BatchReply`] back to the proposers, in order) and
//! goes on to form the next batch, so several entries are in flight at once — up to
//! `max_in_flight`. That bound is what makes batches grow under load: while the pipeline is full,
//! proposals queue, and the next entry carries all of them. Without it the batcher submits almost
//! every proposal alone (submitting is quick), paying consensus per command: measured with 50
//! clients, unbounded pipelining gave ~1.3 commands per entry and ~220k proposals/s, a bound of 2
//! gave ~15 per entry and ~400k/s. With a single client each entry is one command and nothing
//! waits for a timer (no linger).
//!
//! The batcher submits with `client_write_ff` + a responder rather than spawning a
//! `client_write` per batch: `client_write_ff` returns as soon as the entry is queued in the Raft
//! core, so entries enter the log in the order the batches were formed — a connection that
//! pipelines commands sees them applied in the order it sent them — while the wait for the
//! result still happens off the batcher task.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, Fatal, ForwardToLeader, LinearizableReadError, RaftError};
use openraft::impls::ProgressResponder;
use openraft::raft::ClientWriteResult;
use openraft::{BasicNode, Config, ReadPolicy, ServerState, SnapshotPolicy};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use turnstile_core::{Command, Reply, State, Timestamp};

use crate::log_store::{LogStore, ReplayedTail};
use crate::network::NoNetwork;
use crate::state_machine::{AppliedEffects, StateMachineStore};
use crate::{Batch, Raft, TypeConfig};
use turnstile_storage::{DirLock, Journal, JournalStats, SnapshotStore, lock_dir};

/// How long [`Node::start`] waits for this node to become leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the size of the log after the last snapshot is looked at (see
/// [`NodeConfig::snapshot_log_bytes`]).
const LOG_SIZE_CHECK_EVERY: Duration = Duration::from_millis(100);

/// How to start a [`Node`].
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's Raft id; stable across restarts.
    pub node_id: u64,
    /// The most commands one log entry carries.
    pub max_batch: usize,
    /// Where the log and snapshots live; `None` keeps everything in memory (lost on restart).
    pub storage: Option<Storage>,
    /// A snapshot is taken after this many log entries since the last one; the log before it is
    /// then purged. Each snapshot serializes the whole state, so this trades disk and restart
    /// time against snapshot cost.
    pub snapshot_every: u64,
    /// A durable node also takes a snapshot once the log after the last one holds this many
    /// bytes and at least as many as that snapshot: entries vary in size (one can carry hundreds
    /// of 1 KiB pushes), so a count alone bounds neither the disk the log takes nor the time a
    /// restart spends replaying it. 0: by count only.
    pub snapshot_log_bytes: u64,
    /// The most log entries the batcher keeps in flight (submitted, not yet applied). While all
    /// are in flight, proposals queue up and the next batch grows. Default 2: measured on 2 cores
    /// with the in-memory log, 2 beat 4, 16 and unlimited at 8 and 50 clients (fewer, larger
    /// entries); 1 would stop the batcher from forming a batch while one is in flight.
    pub max_in_flight: usize,
}

impl Default for NodeConfig {
    fn default() -> NodeConfig {
        NodeConfig {
            node_id: 1,
            max_batch: 512,
            max_in_flight: 2,
            storage: None,
            snapshot_every: 20_000,
            snapshot_log_bytes: 64 << 20,
        }
    }
}

/// Where and how a node keeps its log and snapshots.
#[derive(Debug, Clone)]
pub struct Storage {
    /// The data dir: `LOCK`, `log/` (the journal) and `snapshots/`.
    pub dir: std::path::PathBuf,
    pub options: turnstile_storage::Options,
}

/// Why a proposal or read failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    /// This node is not the leader; `leader` is the leader's address when known. Nothing was
    /// applied.
    #[error("not the leader (leader: {})", leader.as_deref().unwrap_or("unknown"))]
    NotLeader { leader: Option<String> },
    /// The entry was appended but then discarded by a leader change: it may or may not have been
    /// applied. Retrying is only safe for idempotent commands.
    #[error("outcome unknown: {0}")]
    Indeterminate(String),
    /// Leadership could not be confirmed (no quorum answered); try again later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The node is shutting down (or has stopped); the request was not served.
    #[error("shutting down")]
    ShuttingDown,
    /// Raft stopped on an error (storage failure, panic) or failed to start.
    #[error("fatal: {0}")]
    Fatal(String),
}

/// Figures for INFO and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStatus {
    pub node_id: u64,
    pub term: u64,
    pub leader: Option<u64>,
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
    raft: Raft,
    state_machine: StateMachineStore,
    proposals: mpsc::Sender<Proposal>,
    effects: Mutex<Option<mpsc::UnboundedReceiver<AppliedEffects>>>,
    stats: Arc<Stats>,
    closed: AtomicBool,
    batcher: Mutex<Option<JoinHandle<()>>>,
    /// Asks for snapshots by log size (durable nodes with a size limit only).
    snapshotter: Mutex<Option<JoinHandle<()>>>,
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

#[derive(Debug)]
struct Proposal {
    cmd: Command,
    reply: oneshot::Sender<Result<Reply, NodeError>>,
}

#[derive(Debug, Default)]
struct Stats {
    entries: AtomicU64,
    commands: AtomicU64,
    largest: AtomicU64,
}

impl Stats {
    fn record(&self, commands: usize) {
        let n = u64::try_from(commands).unwrap_or(u64::MAX);
        self.entries.fetch_add(1, Ordering::Relaxed);
        self.commands.fetch_add(n, Ordering::Relaxed);
        self.largest.fetch_max(n, Ordering::Relaxed);
    }
}

impl Node {
    /// Starts a one-voter cluster: opens (or creates) the log and snapshots in the data dir —
    /// the newest snapshot, then the log after it — initializes the cluster on first start, waits
    /// until this node is leader, then proposes [`Command::RefreshLeases`] (so no lease that
    /// survived a restart expires before a full TTL under the new leader).
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let raft_config = Config {
            cluster_name: "turnstile".to_string(),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every.max(1)),
            // Purge everything a snapshot covers: the entries are held in memory until purged,
            // and a single voter has no follower that could still need them. (Clusters will want
            // a margin here so a briefly lagging follower gets entries rather than a snapshot.)
            max_in_snapshot_log_to_keep: 0,
            ..Config::default()
        }
        .validate()
        .map_err(|e| NodeError::Fatal(format!("raft config: {e}")))?;
        let opened = open_storage(config.storage.as_ref())?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            NoNetwork,
            opened.log,
            opened.state_machine.clone(),
        )
        .await
        .map_err(fatal_error)?;
        let (state_machine, effects) = (opened.state_machine, opened.effects);

        if !raft.is_initialized().await.map_err(fatal_error)? {
            let members = BTreeMap::from([(config.node_id, BasicNode::default())]);
            raft.initialize(members).await.map_err(|e| NodeError::Fatal(format!("initialize: {e}")))?;
        }
        // Writing before this node leads fails with ForwardToLeader.
        let id = config.node_id;
        raft.wait(Some(LEADER_TIMEOUT))
            .metrics(
                |m| m.state == ServerState::Leader && m.current_leader == Some(id),
                "this node becomes leader",
            )
            .await
            .map_err(|e| NodeError::Fatal(format!("no leadership: {e}")))?;

        let max_batch = config.max_batch.max(1);
        let (proposals, queue) = mpsc::channel(max_batch.saturating_mul(4));
        let stats = Arc::new(Stats::default());
        let in_flight = config.max_in_flight.max(1);
        let batcher = tokio::spawn(run_batcher(raft.clone(), queue, max_batch, in_flight, stats.clone()));
        let snapshotter = match &opened.journal {
            Some(journal) if config.snapshot_log_bytes > 0 => Some(tokio::spawn(snapshot_by_log_size(
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
                raft,
                state_machine,
                proposals,
                effects: Mutex::new(Some(effects)),
                stats,
                closed: AtomicBool::new(false),
                batcher: Mutex::new(Some(batcher)),
                snapshotter: Mutex::new(snapshotter),
            }),
        };
        node.propose(Command::RefreshLeases).await?;
        Ok(node)
    }

    /// Proposes one command and returns its reply, once its log entry is committed and applied.
    /// Concurrent proposals share log entries (see the module docs).
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

    /// Linearizable read: confirms leadership with openraft's read-index protocol and waits until
    /// the state machine has applied up to the read index (`ensure_linearizable` does both), then
    /// runs `f` on the state. A write whose reply arrived before this call is visible to `f`.
    ///
    /// While this node leads a membership in which it is the only voter, the read-index check is
    /// skipped: nobody else can lead or commit then, and every write whose reply was sent is
    /// already applied (replies go out after apply), so the applied state as it is answers
    /// linearizably, without a round trip through the Raft core.
    pub async fn read<R>(&self, f: impl FnOnce(&State) -> R) -> Result<R, NodeError> {
        self.check_open()?;
        if self.leads_alone() {
            return self.inner.state_machine.with_state(f).map_err(|e| NodeError::Fatal(e.to_string()));
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
        self.inner.state_machine.with_state(f).map_err(|e| NodeError::Fatal(e.to_string()))
    }

    /// Whether this node is the leader and the only voter. openraft publishes a membership change
    /// in its metrics before this node can vote for anyone else under it, so a node that another
    /// could replace no longer reads as alone.
    fn leads_alone(&self) -> bool {
        let id = self.inner.node_id;
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        m.state == ServerState::Leader
            && m.current_leader == Some(id)
            && m.membership_config.membership().voter_ids().eq([id])
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
            last_log_index: m.last_log_index.max(committed),
            committed_index: committed,
            applied_index: applied,
            snapshot_index: m.snapshot.map(|id| id.index()),
            entries_proposed: stats.entries.load(Ordering::Relaxed),
            commands_proposed: stats.commands.load(Ordering::Relaxed),
            largest_batch: stats.largest.load(Ordering::Relaxed),
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

    /// Makes snapshot writes wait until the returned hold is dropped; `None` without a data dir.
    #[doc(hidden)]
    pub fn hold_snapshot_saves_for_test(&self) -> Option<turnstile_storage::HeldSaves> {
        self.inner.state_machine.hold_snapshot_saves_for_test()
    }

    /// Whether a failed write or fsync has stopped the durable log.
    pub fn journal_poisoned(&self) -> bool {
        self.inner.journal.as_ref().is_some_and(|j| j.is_poisoned())
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

/// The batcher task: forms batches from the proposal queue and submits them without waiting.
async fn run_batcher(
    raft: Raft,
    mut queue: mpsc::Receiver<Proposal>,
    max_batch: usize,
    max_in_flight: usize,
    stats: Arc<Stats>,
) {
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let mut taken = Vec::with_capacity(max_batch);
    loop {
        // Wait for a free pipeline slot first: while all are taken, proposals pile up in the
        // queue and the next batch grows.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        // recv_many waits for the first proposal, then takes whatever else is queued, up to the
        // limit.
        if queue.recv_many(&mut taken, max_batch).await == 0 {
            return;
        }
        let (commands, waiters): (Vec<Command>, Vec<_>) = taken.drain(..).map(|p| (p.cmd, p.reply)).unzip();
        stats.record(commands.len());
        let batch = Batch { now: wall_clock_ms(), commands };
        let (responder, done) = ProgressResponder::complete_only();
        match raft.client_write_ff(batch, Some(responder)).await {
            Ok(()) => {
                tokio::spawn(async move {
                    deliver(done, waiters).await;
                    drop(slot);
                });
            }
            Err(fatal) => {
                let err = fatal_error(fatal);
                for waiter in waiters {
                    let _ = waiter.send(Err(err.clone()));
                }
            }
        }
    }
}

/// Asks openraft for a snapshot whenever the log after the last one (what a restart would replay)
/// holds `max(min_bytes, the last snapshot's size)` bytes — the rule Redis uses to rewrite its
/// append-only file — so that log stays about a snapshot's size or less, on disk and in restart
/// time. The purge that follows a snapshot shrinks it again. If one asked for does not come (a
/// failed build), it is asked for again once the log has grown by as much again.
async fn snapshot_by_log_size(
    raft: Raft,
    journal: Arc<Journal>,
    state_machine: StateMachineStore,
    min_bytes: u64,
) {
    // Not at once: a restart that replayed a long log should finish starting first.
    let first = tokio::time::Instant::now() + LOG_SIZE_CHECK_EVERY;
    let mut checks = tokio::time::interval_at(first, LOG_SIZE_CHECK_EVERY);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let latest_snapshot = || raft.metrics().borrow_watched().snapshot;
    let (mut seen, mut asked_at) = (latest_snapshot(), None);
    loop {
        checks.tick().await;
        let snapshot = latest_snapshot();
        if snapshot != seen {
            // Its purge may not be in the log yet: look again next time.
            (seen, asked_at) = (snapshot, None);
            continue;
        }
        let log_bytes = journal.log_bytes();
        let limit = min_bytes.max(state_machine.snapshot_bytes());
        if log_bytes < asked_at.map_or(limit, |at: u64| at.saturating_add(limit)) {
            continue;
        }
        tracing::info!(
            log_bytes,
            limit,
            "the log after the last snapshot passed its size limit; taking a snapshot"
        );
        if raft.trigger().snapshot().await.is_err() {
            // Raft has stopped.
            return;
        }
        asked_at = Some(log_bytes);
    }
}

/// Waits for one entry's result and hands each proposer its own reply, in order.
async fn deliver(
    done: oneshot::Receiver<ClientWriteResult<TypeConfig>>,
    waiters: Vec<oneshot::Sender<Result<Reply, NodeError>>>,
) {
    let replies = match done.await {
        Ok(Ok(response)) => response.data.0,
        Ok(Err(e)) => return fail_all(waiters, write_error(e)),
        // The responder was dropped unanswered: Raft stopped.
        Err(_) => return fail_all(waiters, NodeError::ShuttingDown),
    };
    let count = replies.len();
    let mut replies = replies.into_iter();
    for waiter in waiters {
        let result = replies.next().ok_or_else(|| {
            NodeError::Fatal(format!("state machine returned {count} replies for a larger batch"))
        });
        // The proposer may have given up (its connection closed); nothing to do then.
        let _ = waiter.send(result);
    }
}

fn fail_all(waiters: Vec<oneshot::Sender<Result<Reply, NodeError>>>, err: NodeError) {
    for waiter in waiters {
        let _ = waiter.send(Err(err.clone()));
    }
}

/// Milliseconds since the Unix epoch by this (the leader's) wall clock. The state machine takes
/// the max of the stamps it sees, so a clock that steps back does not move its time back.
fn wall_clock_ms() -> Timestamp {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

fn leader_address(f: &ForwardToLeader<TypeConfig>) -> Option<String> {
    f.leader_node.as_ref().map(|n| n.addr.clone()).filter(|a| !a.is_empty())
}

fn fatal_error(e: Fatal<TypeConfig>) -> NodeError {
    match e {
        Fatal::Stopped => NodeError::ShuttingDown,
        other => NodeError::Fatal(other.to_string()),
    }
}

fn write_error(e: ClientWriteError<TypeConfig>) -> NodeError {
    match e {
        ClientWriteError::ForwardToLeader(f) => NodeError::NotLeader { leader: leader_address(&f) },
        ClientWriteError::LogEntryDiscarded(f) => NodeError::Indeterminate(f.to_string()),
        other => NodeError::Fatal(other.to_string()),
    }
}

fn read_error(e: RaftError<TypeConfig, LinearizableReadError<TypeConfig>>) -> NodeError {
    match e {
        RaftError::APIError(LinearizableReadError::ForwardToLeader(f)) => {
            NodeError::NotLeader { leader: leader_address(&f) }
        }
        RaftError::APIError(other) => NodeError::Unavailable(other.to_string()),
        RaftError::Fatal(f) => fatal_error(f),
    }
}

/// What [`open_storage`] hands to openraft and keeps for the node.
struct Opened {
    log: LogStore,
    state_machine: StateMachineStore,
    effects: mpsc::UnboundedReceiver<AppliedEffects>,
    journal: Option<Arc<Journal>>,
    dir_lock: Option<DirLock>,
}

/// Opens the data dir: its lock, the newest snapshot, the journal after it. Refuses a log whose
/// purged part no snapshot covers (a deleted or older snapshot): starting would lose data.
///
/// The snapshot and the journal are read at the same time, on two threads: each is mostly reading
/// a file into fresh memory, and a restart with a large state waits for both. Then both decode the
/// log's entries, from its two ends, so that the apply after the start reads them from memory.
fn open_storage(storage: Option<&Storage>) -> Result<Opened, NodeError> {
    let Some(storage) = storage else {
        let (state_machine, effects) = StateMachineStore::new();
        return Ok(Opened {
            log: LogStore::in_memory(),
            state_machine,
            effects,
            journal: None,
            dir_lock: None,
        });
    };
    let fatal = |e: &dyn std::fmt::Display| NodeError::Fatal(e.to_string());
    let dir_lock = lock_dir(&storage.dir).map_err(|e| fatal(&e))?;
    let started = std::time::Instant::now();
    let (snapshot, journal) = std::thread::scope(|scope| {
        let (share_tail, shared_tail) = std::sync::mpsc::sync_channel(1);
        let journal = std::thread::Builder::new()
            .name("open-journal".into())
            .spawn_scoped(scope, move || {
                let (journal, mut recovered) =
                    Journal::open(&storage.dir, storage.options.clone()).map_err(|e| fatal(&e))?;
                let read = started.elapsed();
                let entries = recovered.entries.len();
                let tail = Arc::new(ReplayedTail::new(std::mem::take(&mut recovered.entries)));
                let _ = share_tail.send(Arc::clone(&tail));
                tail.decode(true);
                let decoded = started.elapsed() - read;
                Ok::<_, NodeError>((journal, recovered, tail, entries, read, decoded))
            })
            .map_err(|e| fatal(&e));
        let snapshot = SnapshotStore::open(&storage.dir.join("snapshots"))
            .map_err(|e| fatal(&e))
            .and_then(|snapshots| StateMachineStore::open(Some(snapshots)).map_err(|e| fatal(&e)));
        let snapshot_loaded = started.elapsed();
        // The snapshot is in: help decode the log after it, from its oldest end.
        if let (Ok(_), Ok(tail)) = (&snapshot, shared_tail.recv()) {
            tail.decode(false);
        }
        let journal = journal.and_then(|handle| {
            handle.join().unwrap_or_else(|_| Err(NodeError::Fatal("opening the journal panicked".into())))
        });
        (snapshot.map(|opened| (opened, snapshot_loaded)), journal)
    });
    let ((state_machine, effects), snapshot_loaded) = snapshot?;
    let (journal, recovered, tail, entries, journal_read, decoded) = journal?;
    let torn_tail = recovered.torn_tail.clone();
    let purged = recovered.purged;
    let journal = Arc::new(journal);
    let tail = Arc::into_inner(tail).ok_or_else(|| fatal(&"the log tail is still shared"))?;
    let log = LogStore::with_replayed(journal.clone(), recovered, tail).map_err(|e| fatal(&e))?;
    if let Some((file, offset)) = &torn_tail {
        tracing::warn!(file = %file.display(), offset, "cut off a torn last log record (a crash mid-write)");
    }
    if let Some(purged) = purged {
        // The journal keeps the purged entry itself at purged + 1 (see log_store.rs).
        let needed = purged + 1;
        if state_machine.snapshot_index().is_none_or(|covered| covered < needed) {
            return Err(NodeError::Fatal(format!(
                "the log in {} starts after entry {needed}, but no snapshot in {} covers it (missing or older \
                 snapshot); refusing to start rather than lose data",
                storage.dir.display(),
                storage.dir.join("snapshots").display()
            )));
        }
    }
    if let Some(covered) = state_machine.snapshot_index() {
        log.forget_replayed_upto(covered).map_err(|e| fatal(&e))?;
    }
    // snapshot_ms on one thread, then decoding the log's oldest entries; journal_ms, then
    // log_decode_ms decoding its newest, on the other.
    tracing::info!(
        snapshot_index = ?state_machine.snapshot_index(),
        log_entries = entries,
        log_bytes = journal.log_bytes(),
        snapshot_ms = snapshot_loaded.as_millis(),
        journal_ms = journal_read.as_millis(),
        log_decode_ms = decoded.as_millis(),
        total_ms = started.elapsed().as_millis(),
        "opened the data dir"
    );
    Ok(Opened { log, state_machine, effects, journal: Some(journal), dir_lock: Some(dir_lock) })
}
