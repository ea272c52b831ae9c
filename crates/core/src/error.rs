//! Errors a client sees. Each has a stable code (the RESP error prefix, the HTTP `code` field):
//! codes are never renamed or reused, since clients match on them.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{Millis, SessionId};

/// A refused command. The state is unchanged whenever a command replies with one of these.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum CoreError {
    /// Waiting would close a cycle in the wait-for graph.
    #[error("waiting would deadlock: {}", cycle_text(.cycle))]
    Deadlock { cycle: Vec<WaitEdge> },
    #[error("token {token} is not a live hold of lock '{lock}'")]
    Fenced { lock: String, token: u64 },
    /// A renew of a hold that is gone: its lease ran out or it was released.
    #[error("hold {token} is no longer held")]
    LostHold { token: u64 },
    /// An extend of a delivery that is gone: acked, nacked, or its lease ran out.
    #[error("delivery {receipt} is no longer held")]
    LostDelivery { receipt: u64 },
    #[error("'{name}' is a {found}, not a {expected}")]
    WrongType { name: String, expected: String, found: String },
    #[error("value is not an integer or out of range")]
    NotInteger,
    #[error("increment or decrement would overflow")]
    Overflow,
    #[error("{0}")]
    InvalidArgument(String),
    #[error("no such queue '{0}'")]
    NoSuchQueue(String),
    #[error("queue '{name}' is full (max length {max_len})")]
    QueueFull { name: String, max_len: u64 },
    #[error("queue '{0}' exists with a different configuration")]
    QueueConfigMismatch(String),
    #[error("semaphore '{name}' has limit {limit}, not {asked}")]
    LimitMismatch { name: String, limit: u32, asked: u32 },
    #[error("owner '{owner}' already holds '{name}' in another mode")]
    ModeConflict { name: String, owner: String },
    #[error("unknown session {0}")]
    UnknownSession(SessionId),
    /// A resume named a session that is not open or a secret that is not its own: one text for
    /// both, so that resuming does not tell which session ids exist.
    #[error("no session {0} with that secret (it has ended, or the secret is wrong)")]
    NotResumable(SessionId),
    #[error("waiting needs a session")]
    WaitWithoutSession,
    #[error("lease or TTL must be between 1 and {max} ms", max = crate::MAX_DURATION)]
    BadDuration,
    #[error("no exchange '{0}' in vhost '/'")]
    NoSuchExchange(String),
    /// A declaration that does not match what exists, or a delete whose condition fails (AMQP 406).
    #[error("{0}")]
    Precondition(String),
    /// Reserved names, internal exchanges, exclusive consumers (AMQP 403).
    #[error("{0}")]
    AccessRefused(String),
    /// Another session's exclusive queue (AMQP 405).
    #[error("{0}")]
    ResourceLocked(String),

    // Redis's keyspace. Last, so that the variant numbers above (forwarded replies) stay.
    /// A key command met a key of another type: Redis's `WRONGTYPE` error, word for word.
    #[error("Operation against a key holding the wrong kind of value")]
    WrongKind,

    // Lua scripts. Last, for the same reason.
    /// `EVALSHA` of a script that is not in the cache: Redis's `NOSCRIPT`, word for word.
    #[error("No matching script. Please use EVAL.")]
    NoScript,
    /// A script's error, its code included (`ERR user_script:1: boom script: ...`, or whatever
    /// `redis.error_reply` was given): RESP sends the text whole. Unlike the other errors, the
    /// writes the script made before it failed stay, as in Redis; see `script.rs`.
    #[error("{0}")]
    Script(String),

    // Users. Last, for the same reason.
    /// A user acting on what another user owns, or a script's command the caller may not run:
    /// Redis's `NOPERM`, with its texts (see [`crate::Denied`]).
    #[error("{0}")]
    NoPerm(String),

    // Per-session limits. Last, for the same reason.
    /// A session at `max-holds-per-session` or `max-waits-per-session` (`setting`).
    #[error("{setting} reached ({limit}): end one of this session's before starting another")]
    SessionLimit { setting: String, limit: u32 },
}

impl CoreError {
    /// The stable code: the RESP error prefix and the HTTP error `code`.
    pub fn code(&self) -> &'static str {
        match self {
            CoreError::Deadlock { .. } => "DEADLOCK",
            CoreError::Fenced { .. } => "FENCED",
            CoreError::LostHold { .. } | CoreError::LostDelivery { .. } => "LOST",
            CoreError::WrongType { .. } | CoreError::WrongKind => "WRONGTYPE",
            CoreError::QueueFull { .. } => "FULL",
            CoreError::NoScript => "NOSCRIPT",
            CoreError::NoPerm(_) => "NOPERM",
            _ => "ERR",
        }
    }
}

/// One edge of a deadlock cycle: `owner` waits for `name`, which `blocked_by` holds or waits for ahead of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitEdge {
    pub owner: String,
    pub name: String,
    pub blocked_by: String,
}

fn cycle_text(cycle: &[WaitEdge]) -> String {
    let edges: Vec<String> = cycle
        .iter()
        .map(|e| format!("{} waits for '{}' held by {}", e.owner, e.name, e.blocked_by))
        .collect();
    edges.join(" -> ")
}

/// Durations above this are refused, so `now + duration` can never overflow.
pub const MAX_DURATION: Millis = 1 << 40;
