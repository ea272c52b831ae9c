//! [`NodeConfig`]: how to start a [`super::Node`], and [`Storage`]: where it keeps its log.

use crate::Clock;

/// How to start a [`super::Node`].
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
    /// In a cluster: the least time without a heartbeat before a follower starts an election
    /// (the most is twice it; heartbeats go five times as often). See `start_with`.
    pub election_timeout_ms: u64,
    /// What the batcher stamps each entry with, which is all the time the state machine knows;
    /// the server's ticker waits on it too ([`super::Node::clock`]). The system clock by default;
    /// tests pass [`Clock::manual`] to make leases and waits run out when they say.
    pub clock: Clock,
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
            election_timeout_ms: 250,
            clock: Clock::system(),
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

/// How a node of a cluster reaches the others: given to [`super::Node::start_in_cluster`].
#[derive(Debug)]
pub struct Cluster {
    /// Every voter of the initial membership, this node included: id and `host:port` of its
    /// Raft listener. All nodes must be given the same list (it is the membership each
    /// initializes with). Empty for a node that joins a running cluster (`--join`): it never
    /// initializes, and learns the membership from the leader once added.
    pub peers: std::collections::BTreeMap<u64, String>,
    /// Named in every connection's handshake: a node of another cluster is refused.
    pub cluster_id: u64,
    /// This node's Raft listener, bound by the caller (so a taken port fails the start before
    /// anything is created on disk).
    pub listener: std::net::TcpListener,
    /// Commands proposed, after [`turnstile_core::Command::RefreshLeases`], each time this node
    /// becomes leader.
    pub on_leading: Vec<turnstile_core::Command>,
    /// Mutual TLS between the nodes (`tls-peer`), both when listening and when dialing; `None`:
    /// plain TCP.
    pub tls: Option<turnstile_tls::PeerTls>,
}
