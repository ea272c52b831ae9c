//! Connection loops: proposals handed to the log once per round, replies handed back once per
//! entry.
//!
//! A connection loop is a thread running a current-thread runtime that owns some connections
//! ([`super::Node::run_connection_loop`] makes one). Without it, every command crossed threads
//! twice on its own: a queue operation and a wake-up of the batcher on the way in, and a wake-up
//! of its connection's task on the way out. On a loop:
//!
//! - **In, once per round.** A proposal made on the loop goes into the loop's outbox; the first
//!   one of a round wakes the loop's flusher task, which the runtime queues behind every task
//!   already woken in that round, so it runs once they have all had their turn and sends the
//!   whole outbox to the batcher as one message.
//! - **Out, once per entry.** Each proposal names its loop's inbox ([`Waiter::home`]); when its
//!   entry is applied, the batcher sends each loop the outcomes of its proposers in one message
//!   ([`Homes`]), and the loop's dispatcher task completes their channels there, on the loop's
//!   own thread, where waking a task costs a push on its run queue.
//!
//! ```text
//!  loop thread                                   log thread
//!  conn task ─push─► outbox ─flusher─► Round ──► batcher ─► entry … applied ─► answer_all
//!  conn task ◄─oneshot─ dispatcher ◄── Vec<(reply, outcome)> ◄── one message per loop ◄┘
//! ```

use std::cell::RefCell;
use std::sync::Arc;

use tokio::sync::{Notify, mpsc, oneshot};

use super::batcher::{Outcome, Proposal, Queued, Waiter};

/// A connection loop's inbox: where the outcomes of its proposers go, a batch at a time.
pub(super) type Inbox = mpsc::UnboundedSender<Vec<(oneshot::Sender<Outcome>, Outcome)>>;

/// The loop this thread runs, if it runs one.
struct Home {
    /// The node whose proposals the outbox collects (its `Inner`'s address).
    node: usize,
    outbox: Vec<Proposal>,
    inbox: Inbox,
    /// Wakes the flusher: the outbox holds a round.
    flush: Arc<Notify>,
    /// Wakes proposers that found the outbox full: the flusher took it.
    room: Arc<Notify>,
    /// Most proposals the outbox holds.
    limit: usize,
}

thread_local! {
    static HOME: RefCell<Option<Home>> = const { RefCell::new(None) };
}

/// What became of a proposal offered to this thread's loop.
pub(super) enum Pushed {
    /// In the outbox: it goes with this round.
    Queued,
    /// The outbox is full; offer it again once `room` is notified.
    Full(Proposal, Arc<Notify>),
    /// This thread runs no loop of this node: queue it directly.
    Elsewhere(Proposal),
}

/// Offers a proposal of `node` to the loop this thread runs.
pub(super) fn push(node: usize, cmd: turnstile_core::Command, tx: oneshot::Sender<Outcome>) -> Pushed {
    HOME.with(|home| {
        let mut home = home.borrow_mut();
        let Some(home) = home.as_mut().filter(|home| home.node == node) else {
            return Pushed::Elsewhere(Proposal { cmd, reply: Waiter { tx, home: None } });
        };
        let proposal = Proposal { cmd, reply: Waiter { tx, home: Some(home.inbox.clone()) } };
        if home.outbox.len() >= home.limit {
            return Pushed::Full(proposal, home.room.clone());
        }
        if home.outbox.is_empty() {
            home.flush.notify_one();
        }
        home.outbox.push(proposal);
        Pushed::Queued
    })
}

/// Offers a proposal that already has its waiter (one that found the outbox full).
pub(super) fn push_again(node: usize, proposal: Proposal) -> Pushed {
    let Proposal { cmd, reply: Waiter { tx, .. } } = proposal;
    push(node, cmd, tx)
}

/// Runs this thread's loop for `node` until `stop` resolves: installs the outbox and inbox, and
/// runs the flusher and the dispatcher as tasks of this thread's runtime (a current-thread one).
pub(super) async fn run(
    node: usize,
    proposals: mpsc::Sender<Queued>,
    limit: usize,
    stop: impl std::future::Future<Output = ()>,
) {
    let (inbox, answers) = mpsc::unbounded_channel();
    let (flush, room) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let installed = Home { node, outbox: Vec::new(), inbox, flush: flush.clone(), room: room.clone(), limit };
    HOME.with(|home| *home.borrow_mut() = Some(installed));
    let flusher = tokio::spawn(flusher(proposals, flush, room));
    let dispatcher = tokio::spawn(dispatcher(answers));
    stop.await;
    // Proposals still in the outbox are dropped: their proposers hear that the node stopped.
    HOME.with(|home| home.borrow_mut().take());
    flusher.abort();
    dispatcher.abort();
}

/// Sends each round's outbox to the batcher as one message.
async fn flusher(proposals: mpsc::Sender<Queued>, flush: Arc<Notify>, room: Arc<Notify>) {
    let mut capacity = 0;
    loop {
        flush.notified().await;
        let round = HOME.with(|home| {
            home.borrow_mut()
                .as_mut()
                .map(|home| std::mem::replace(&mut home.outbox, Vec::with_capacity(capacity)))
        });
        let Some(round) = round else { return };
        room.notify_waiters();
        if round.is_empty() {
            continue;
        }
        capacity = capacity.max(round.len());
        if proposals.send(Queued::Round(round)).await.is_err() {
            return;
        }
    }
}

/// Completes the channels of this loop's proposers as their outcomes come.
async fn dispatcher(mut answers: mpsc::UnboundedReceiver<Vec<(oneshot::Sender<Outcome>, Outcome)>>) {
    while let Some(batch) = answers.recv().await {
        for (tx, outcome) in batch {
            // The proposer may have given up (its connection closed); nothing to do then.
            let _ = tx.send(outcome);
        }
    }
}

/// The outcomes of one entry bound for connection loops, grouped by loop.
#[derive(Default)]
pub(super) struct Homes(Vec<(Inbox, Vec<(oneshot::Sender<Outcome>, Outcome)>)>);

impl Homes {
    pub(super) fn add(&mut self, home: Inbox, tx: oneshot::Sender<Outcome>, outcome: Outcome) {
        // As many loops as cores: a short list.
        match self.0.iter_mut().find(|(inbox, _)| inbox.same_channel(&home)) {
            Some((_, batch)) => batch.push((tx, outcome)),
            None => self.0.push((home, vec![(tx, outcome)])),
        }
    }

    /// One message per loop. A loop that stopped dropped its receiver: its proposers hear that
    /// the node stopped when the channels are dropped with the message.
    pub(super) fn send(self) {
        for (inbox, batch) in self.0 {
            let _ = inbox.send(batch);
        }
    }
}
