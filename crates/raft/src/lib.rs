//! Turnstile's replication layer: the [`turnstile_core::State`] machine driven through openraft.
//!
//! ```text
//!  propose(cmd) ─► batcher ─► Raft::client_write_ff(Batch) ─► LogStore::append ─► Journal
//!  (node/)  (node/batcher.rs) one log entry per batch         (log_store.rs)
//!                                                                   │ committed
//!  reply ◄─ BatchReply[i] ◄─ StateMachineStore::apply ◄────────────┘
//!                              (state_machine.rs) ─► effects channel, next-deadline watch
//! ```
//!
//! Why it is shaped like this:
//!
//! - **One code path.** A single server is a one-voter Raft cluster, so the leader-stamped time,
//!   the log indexes and the snapshot format are the same whether there is one node or five.
//! - **Batching.** Consensus (and, with a durable log, fsync) is paid per log entry, not per
//!   command. Commands that arrive together are coalesced into one [`Batch`], stamped once with
//!   the leader's [`Clock`], and applied in order; each gets its own [`Reply`] back. The batcher
//!   does not wait for one batch to commit before submitting the next, so several entries are in
//!   flight at once (pipelining).
//! - **Determinism.** The state machine never reads a clock: the time of an entry is the `now`
//!   the leader put into the [`Batch`], so every replica computes the same replies and effects.
//!   That stamp comes from the node's [`Clock`] (the wall clock, or a manual one in tests).
//! - **Durable by default.** The log lives in [`LogStore`]: in the journal of `crates/storage` on
//!   disk, its newest entries also in memory for reads; a reply is sent once its entry is on disk
//!   (group commit).
//!
//! See `README.md` in this crate for one proposal traced file by file.

mod clock;
mod data_dir;
mod log_store;
mod network;
mod node;
mod state_machine;

use std::fmt;

use serde::{Deserialize, Serialize};
use turnstile_core::{Command, Reply, Timestamp};

pub use clock::{Clock, ManualClock};
pub use data_dir::{Backup, RestoreError, check_empty, open_meta};
pub use log_store::LogStore;
pub use network::{Deadline, Joining, NoNetwork, NoPeer, PeerClient, TcpNetwork, peek_hello, serve};
pub use node::{
    AdminRequest, Answer, Cluster, ClusterStatus, MemberStatus, Node, NodeConfig, NodeError, NodeStatus,
    Storage,
};
pub use state_machine::{AppliedEffects, EffectHandler, StateMachineStore, StoredSnapshot};
pub use turnstile_storage::{
    BackupHeader, BackupWriter, DataDirMeta, FsyncPolicy, HeldSaves, JournalStats, Options as StorageOptions,
    StorageError, format_cluster_id, random_cluster_id,
};

/// openraft's type configuration for Turnstile: a log entry carries a [`Batch`] of commands
/// and its application yields a [`BatchReply`]. Node ids are `u64`; nodes are
/// [`openraft::BasicNode`] (an address). Written out rather than declared with openraft's macro,
/// which cannot set the responder: ours is [`ReplyTo`], a function called inside apply.
#[derive(Debug, Clone, Copy, Default, Eq, PartialEq, Ord, PartialOrd)]
pub struct TypeConfig {}

impl openraft::RaftTypeConfig for TypeConfig {
    type D = Batch;
    type R = BatchReply;
    type NodeId = u64;
    type Node = openraft::BasicNode;
    type Term = u64;
    type LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, u64>;
    type Vote = openraft::impls::Vote<Self::LeaderId>;
    type Payload = openraft::EntryPayload<Batch, u64, openraft::BasicNode>;
    type Entry = openraft::Entry<<Self::LeaderId as openraft::vote::RaftLeaderId>::Committed, Self::Payload>;
    type Responder<T>
        = ReplyTo<T>
    where
        T: openraft::OptionalSend + 'static;
    type Batch<T>
        = openraft::impls::InlineBatch<T>
    where
        T: openraft::OptionalSend + 'static;
    type AsyncRuntime = openraft::impls::TokioRuntime;
    type ErrorSource = openraft::impls::BoxedErrorSource;
}

/// Where an entry's result goes: a function that openraft's apply calls, on the state machine's
/// task, with the entry's replies — or with `None` when it is dropped unanswered (Raft stopped).
/// The batcher's function hands each proposer its reply there and then: no task, channel or
/// wake-up per entry between apply and the proposers.
pub struct ReplyTo<T>(Option<Box<dyn FnOnce(Option<T>) + Send>>);

impl<T> ReplyTo<T> {
    pub fn new(f: impl FnOnce(Option<T>) + Send + 'static) -> ReplyTo<T> {
        ReplyTo(Some(Box::new(f)))
    }
}

impl<T> fmt::Debug for ReplyTo<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReplyTo")
    }
}

impl<T: openraft::OptionalSend + 'static> openraft::raft::responder::Responder<TypeConfig, T> for ReplyTo<T> {
    fn on_complete(mut self, result: T) {
        if let Some(f) = self.0.take() {
            f(Some(result));
        }
    }
}

impl<T> Drop for ReplyTo<T> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(None);
        }
    }
}

/// The openraft handle with Turnstile's types.
pub type Raft = openraft::Raft<TypeConfig, StateMachineStore>;

/// One log entry: commands that arrived together, stamped once by the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Batch {
    /// The leader's [`Clock`], in ms since the Unix epoch, when it formed the batch.
    pub now: Timestamp,
    pub commands: Vec<Command>,
}

/// openraft logs entries with `Display`; a summary is enough.
impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Batch(now={}, {} commands)", self.now, self.commands.len())
    }
}

/// The replies to one [`Batch`], in command order. Blank and membership entries get an empty one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BatchReply(pub Vec<Reply>);
