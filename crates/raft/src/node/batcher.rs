//! The batcher: one task that turns queued proposals into log entries.
//!
//! **Batching and pipelining.** Every [`super::Node::propose`] puts its command on a queue and
//! waits for its own reply. The batcher takes the first queued proposal plus whatever else is
//! queued at that moment (up to `max_batch`), stamps the batch with the time on the node's
//! [`Clock`] (the leader's), and submits it as one log entry. It does not wait for that entry to
//! commit: it gives the entry a [`ReplyTo`] — a function openraft's apply calls, which splits the
//! [`crate::BatchReply`] back to the proposers, in order ([`deliver`]), there and then, with no
//! task, channel or wake-up per entry in between — and goes on to form the next batch, so
//! several entries are in flight at once — up to `max_in_flight`. That bound is what makes batches
//! grow under load: while the pipeline is full, proposals queue, and the next entry carries all of
//! them. Without it the batcher submits almost every proposal alone (submitting is quick), paying
//! consensus per command: measured with 50 clients, unbounded pipelining gave ~1.3 commands per
//! entry and ~220k proposals/s, a bound of 2 gave ~15 per entry and ~400k/s. With a single client
//! each entry is one command and nothing waits for a timer (no linger).
//!
//! The batcher submits with `client_write_ff` + a responder rather than spawning a
//! `client_write` per batch: `client_write_ff` returns as soon as the entry is queued in the Raft
//! core, so entries enter the log in the order the batches were formed — a connection that
//! pipelines commands sees them applied in the order it sent them — while the result comes back
//! without the batcher.
//!
//! In a cluster a watchdog answers the proposers of every entry in flight, and frees their slots,
//! once this leader has heard from no quorum within its lease ([`watchdog`]).
//!
//! ```text
//!  queue ─recv_many─► Batch { now, commands } ─client_write_ff─► Raft core
//!    ▲                  (one pipeline slot taken)                   │ applied
//!  submit                          ReplyTo → deliver ◄────────────┘ (inside apply)
//!                                    replies[i] ─► proposal i; slot freed
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use openraft::raft::ClientWriteResult;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use turnstile_core::{Command, Reply};
use turnstile_storage::Journal;

use super::NodeError;
use super::error::{journal_stopped, write_error};
use super::forward::{self, Route, Target};
use crate::{Batch, Clock, Raft, ReplyTo, TypeConfig};

/// One queued command and where its reply goes.
#[derive(Debug)]
pub(super) struct Proposal {
    pub(super) cmd: Command,
    pub(super) reply: oneshot::Sender<Result<Reply, NodeError>>,
}

/// What the batcher has submitted, for [`super::NodeStatus`].
#[derive(Debug, Default)]
pub(super) struct Stats {
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

    /// Log entries (batches) submitted.
    pub(super) fn entries(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }

    /// Commands submitted, over all entries.
    pub(super) fn commands(&self) -> u64 {
        self.commands.load(Ordering::Relaxed)
    }

    /// The most commands one entry has carried.
    pub(super) fn largest(&self) -> u64 {
        self.largest.load(Ordering::Relaxed)
    }
}

/// The batcher task: forms batches from the proposal queue and submits them without waiting. In
/// a cluster (`route` given), a batch formed while another node leads is forwarded to it whole
/// instead; it holds its pipeline slot until the leader's replies are in.
// One caller (`Node::start`), which hands over what the task owns; a struct for it would only
// rename these.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    raft: Raft,
    mut queue: mpsc::Receiver<Proposal>,
    clock: Clock,
    max_batch: usize,
    max_in_flight: usize,
    stats: Arc<Stats>,
    route: Option<Route>,
    journal: Option<Arc<Journal>>,
) {
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let in_flight = Arc::new(InFlight::default());
    if let Some(route) = &route {
        tokio::spawn(watchdog(raft.clone(), route.self_id, Arc::downgrade(&in_flight)));
    }
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
        let target = match &route {
            None => Ok(Target::Here),
            Some(route) => route.target(&raft).await,
        };
        match target {
            Ok(Target::Here) => {}
            Ok(Target::Leader(leader)) => {
                let route = route.as_ref().expect("only a route names another leader");
                let count = commands.len();
                match route.forward(leader, commands).await {
                    Ok(pending) => {
                        tokio::spawn(async move {
                            match forward::replies(pending, leader, count).await {
                                Ok(replies) => {
                                    for (waiter, reply) in waiters.into_iter().zip(replies) {
                                        let _ = waiter.send(reply);
                                    }
                                }
                                Err(e) => fail_all(waiters, e),
                            }
                            drop(slot);
                        });
                    }
                    Err(e) => fail_all(waiters, e),
                }
                continue;
            }
            Err(e) => {
                fail_all(waiters, e);
                continue;
            }
        }
        stats.record(commands.len());
        // The state machine takes the latest of the stamps it has applied, so a clock that steps
        // back (the system clock can) does not move its time back.
        let batch = Batch { now: clock.now(), commands };
        let seq = in_flight.insert(waiters, slot);
        let (answering, journal_then) = (in_flight.clone(), journal.clone());
        let reply_to = ReplyTo::new(move |result: Option<ClientWriteResult<TypeConfig>>| {
            // Taken by the watchdog already when this leader was cut off from its quorum.
            let Some(waiters) = answering.take(seq) else { return };
            deliver(result, waiters, journal_then.as_deref());
        });
        if let Err(fatal) = raft.client_write_ff(batch, Some(reply_to)).await {
            // The responder was dropped with the refused write, and answered its proposers.
            tracing::debug!(error = %fatal, "a batch was refused");
        }
    }
}

/// The entries submitted and not yet answered: their proposers' reply channels and pipeline
/// slots, by a sequence number. The entry's [`ReplyTo`] takes its own out when it is applied (or
/// dropped); the watchdog takes them all when this leader is cut off from its quorum.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    entries: Mutex<(u64, HashMap<u64, Entry>)>,
}

type Entry = (Vec<oneshot::Sender<Result<Reply, NodeError>>>, OwnedSemaphorePermit);

impl InFlight {
    fn insert(
        &self,
        waiters: Vec<oneshot::Sender<Result<Reply, NodeError>>>,
        slot: OwnedSemaphorePermit,
    ) -> u64 {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (next, map) = &mut *entries;
        *next += 1;
        map.insert(*next, (waiters, slot));
        *next
    }

    /// The proposers of entry `seq`, whose slot is freed when they are dropped.
    fn take(&self, seq: u64) -> Option<Vec<oneshot::Sender<Result<Reply, NodeError>>>> {
        let entry = self.entries.lock().unwrap_or_else(PoisonError::into_inner).1.remove(&seq);
        entry.map(|(waiters, _slot)| waiters)
    }

    fn take_all(&self) -> Vec<Entry> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.1.drain().map(|(_, entry)| entry).collect()
    }
}

/// While this node leads a cluster: once it has heard from no quorum within its lease, an entry
/// it proposed may wait for as long as the partition lasts, so its proposers are answered
/// instead (the outcome is unknown) and their pipeline slots freed. Checked a few times per
/// lease: an entry normally commits long before the first look.
async fn watchdog(raft: Raft, self_id: u64, in_flight: Weak<InFlight>) {
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        // Gone once the batcher and every entry it submitted are.
        let Some(in_flight) = in_flight.upgrade() else { return };
        if super::quorum_silent(&raft, self_id) {
            for (waiters, _slot) in in_flight.take_all() {
                fail_all(waiters, NodeError::Indeterminate(
                    "this leader lost contact with a quorum before the write committed; it commits only if this node keeps the leadership".into(),
                ));
            }
        }
    }
}

/// Raft stops on a journal failure, and its callers would hear only "fatal" or "shutting down":
/// say what failed instead (a full disk, say). The entry may have reached other nodes before this
/// one failed to write it, so its outcome is unknown.
fn stopped_by_journal(error: NodeError, journal: Option<&Journal>) -> NodeError {
    match (&error, journal_stopped(journal)) {
        (NodeError::Fatal(_) | NodeError::ShuttingDown, Some(why)) => NodeError::Indeterminate(why),
        _ => error,
    }
}

/// Hands each proposer of one entry its own reply, in order, inside apply (or an error for all
/// of them when the entry failed or Raft dropped it unanswered).
fn deliver(
    result: Option<ClientWriteResult<TypeConfig>>,
    waiters: Vec<oneshot::Sender<Result<Reply, NodeError>>>,
    journal: Option<&Journal>,
) {
    let replies = match result {
        Some(Ok(response)) => response.data.0,
        Some(Err(e)) => return fail_all(waiters, stopped_by_journal(write_error(e), journal)),
        // Dropped unanswered: Raft stopped.
        None => return fail_all(waiters, stopped_by_journal(NodeError::ShuttingDown, journal)),
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
