//! [`NodeError`]: why a proposal or read failed, and how openraft's errors map onto it.
//!
//! openraft's errors are generic over the type config and distinguish more cases than a caller
//! can act on; a front end needs to know only whether to redirect (`NotLeader`), whether the write
//! may have happened (`Indeterminate`), whether to retry later (`Unavailable`) or stop.

use openraft::errors::{
    ClientWriteError, Fatal, ForwardReason, ForwardToLeader, LinearizableReadError, RaftError,
};

use crate::TypeConfig;

/// Why a proposal or read failed. Serializable: a leader sends it back to the follower that
/// forwarded the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
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
    /// The request was refused as asked (a membership change that cannot be made, say); the
    /// text says why. Nothing changed.
    #[error("{0}")]
    Refused(String),
    /// The node is shutting down (or has stopped); the request was not served.
    #[error("shutting down")]
    ShuttingDown,
    /// Raft stopped on an error (storage failure, panic) or failed to start.
    #[error("fatal: {0}")]
    Fatal(String),
    /// This node's log stopped taking writes because its journal failed a write or fsync (a full
    /// disk, say; the text names it). Nothing was applied; reads keep working. See
    /// [`writes_stopped`].
    #[error("writes refused: {0}")]
    WritesStopped(String),
}

/// Why `journal` takes no more writes, if it has failed.
pub(crate) fn journal_stopped(journal: Option<&turnstile_storage::Journal>) -> Option<String> {
    journal?.poisoned_by().map(|cause| writes_stopped(&cause))
}

/// Why a node whose journal failed takes no more writes, in the words every front end shows: the
/// cause first (`no space left on device` for a full disk, as Redis's `-MISCONF` puts it), then
/// what the operator does. Writes stay refused until a restart even once space is freed: the
/// journal cannot tell a failed write from a failed fsync after the fact, and after a failed
/// fsync the page cache may hold writes the disk never took (PostgreSQL's "fsyncgate"), so only a
/// replay from the files is trusted.
pub(crate) fn writes_stopped(cause: &turnstile_storage::StorageError) -> String {
    let what =
        if cause.is_no_space() { "no space left on device" } else { "the disk failed a write or fsync" };
    format!(
        "{what} ({cause}); this node's log stopped taking writes at that failure and reads still work; free \
         space or fix the disk, then restart the server: nothing acknowledged is lost"
    )
}

fn leader_address(f: &ForwardToLeader<TypeConfig>) -> Option<String> {
    f.leader_node.as_ref().map(|n| n.addr.clone()).filter(|a| !a.is_empty())
}

/// A leader whose lease ran out (no quorum acknowledged it lately) still leads but refuses
/// writes: that is "retry later", not a redirect to anyone.
fn forward_error(f: &ForwardToLeader<TypeConfig>) -> NodeError {
    match f.reason {
        ForwardReason::LeaseExpired => NodeError::Unavailable(format!("the leader's lease expired: {f}")),
        _ => NodeError::NotLeader { leader: leader_address(f) },
    }
}

pub(super) fn fatal_error(e: Fatal<TypeConfig>) -> NodeError {
    match e {
        Fatal::Stopped => NodeError::ShuttingDown,
        other => NodeError::Fatal(other.to_string()),
    }
}

pub(super) fn write_error(e: ClientWriteError<TypeConfig>) -> NodeError {
    match e {
        ClientWriteError::ForwardToLeader(f) => forward_error(&f),
        ClientWriteError::LogEntryDiscarded(f) => NodeError::Indeterminate(f.to_string()),
        other => NodeError::Fatal(other.to_string()),
    }
}

pub(super) fn read_error(e: RaftError<TypeConfig, LinearizableReadError<TypeConfig>>) -> NodeError {
    match e {
        RaftError::APIError(LinearizableReadError::ForwardToLeader(f)) => forward_error(&f),
        RaftError::APIError(other) => NodeError::Unavailable(other.to_string()),
        RaftError::Fatal(f) => fatal_error(f),
    }
}
