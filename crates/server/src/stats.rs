//! What the server counts, and the one [`Snapshot`] of it that `INFO`, `/metrics` and the
//! dashboard all render.
//!
//! ```text
//!  listener ─► Stats.connections[protocol]     ┐
//!  session  ─► Stats (commands, grants, OOM…)  ├─► Snapshot::take ─► INFO text (resp/info.rs)
//!  router   ─► Stats (leases expired, waits)   │                  ├► Prometheus text (metrics.rs)
//!  node, journal, state summary ───────────────┘                  └► /api/overview (dashboard)
//! ```
//!
//! Each counter has one name, given once in [`COUNTERS`]: `INFO` prints it as `name:value`, the
//! metrics as `turnstile_<name>_total` with the same help text.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use turnstile_core::{Summary, WaitEdge};
use turnstile_raft::{ClusterStatus, JournalStats, NodeStatus};

use crate::listener::Protocol;
use crate::server::Shared;

/// How many refused deadlocks the dashboard can show.
const RECENT_DEADLOCKS: usize = 20;

/// The server's counters. Updated with relaxed atomics on the hot path; read by [`Snapshot`].
#[derive(Debug, Default)]
pub struct Stats {
    /// Per protocol, indexed by [`Protocol::index`].
    connections: [Connections; Protocol::ALL.len()],
    /// Sessions parked in a wait (a lock acquire or a pop), over every protocol.
    pub blocked: AtomicU64,
    /// Requests run: RESP commands, AMQP methods, HTTP API calls.
    pub commands: AtomicU64,
    /// Connections that flow control has stopped reading now (`queue-flow-limit`, `flow.rs`).
    pub in_flow: AtomicU64,
    /// Microseconds connections have spent stopped by flow control, summed over connections.
    pub flow_micros: AtomicU64,
    pub counters: Counters,
    /// Waits refused because they would deadlock: the latest few, for the dashboard.
    pub deadlocks: RecentDeadlocks,
}

/// Connections of one protocol.
#[derive(Debug, Default)]
pub struct Connections {
    pub open: AtomicU64,
    /// Accepted and served.
    pub accepted: AtomicU64,
    /// Refused because `max-clients` connections were open.
    pub refused: AtomicU64,
}

/// The counters of [`COUNTERS`], each of one event.
#[derive(Debug, Default)]
pub struct Counters {
    pub lock_grants: AtomicU64,
    pub lock_wait_timeouts: AtomicU64,
    pub lock_leases_expired: AtomicU64,
    pub delivery_leases_expired: AtomicU64,
    pub pushes_refused_oom: AtomicU64,
    pub limits_refused: AtomicU64,
    // Pub/sub:
    pub pubsub_messages: AtomicU64,
    pub pubsub_messages_late: AtomicU64,
    pub pubsub_clients_disconnected: AtomicU64,
    // Users and ACLs:
    pub resp_auth_failures: AtomicU64,
    pub user_connections_refused: AtomicU64,
    // Protection:
    pub protected_mode_refused: AtomicU64,
    pub query_buffer_closed: AtomicU64,
    pub session_limits_refused: AtomicU64,
    // Flow control:
    pub flow_stalls: AtomicU64,
}

/// One counter: its name (INFO field; metric `turnstile_<name>_total`) and what it counts.
#[derive(Debug)]
pub struct Counter {
    pub name: &'static str,
    pub help: &'static str,
    pub value: fn(&Snapshot) -> u64,
}

/// Every counter, as INFO (section `stats`) and the metrics list them.
pub const COUNTERS: &[Counter] = &[
    Counter {
        name: "lock_grants",
        help: "Holds of locks and semaphores granted, at once or after a wait.",
        value: |s| s.lock_grants,
    },
    Counter {
        name: "lock_wait_timeouts",
        help: "Acquires whose wait ran out.",
        value: |s| s.lock_wait_timeouts,
    },
    Counter {
        name: "deadlocks_refused",
        help: "Waits refused because they would have closed a cycle.",
        value: |s| s.deadlocks_refused,
    },
    Counter {
        name: "lock_leases_expired",
        help: "Holds ended by their lease running out.",
        value: |s| s.lock_leases_expired,
    },
    Counter {
        name: "delivery_leases_expired",
        help: "Deliveries returned to their queue by their lease running out.",
        value: |s| s.delivery_leases_expired,
    },
    Counter {
        name: "pushes_refused_oom",
        help: "Pushes and publishes refused by the memory limit (max-memory).",
        value: |s| s.pushes_refused_oom,
    },
    Counter {
        name: "limits_refused",
        help: "Requests refused by a size limit (max-payload, max-name-len, max-args).",
        value: |s| s.limits_refused,
    },
    // Pub/sub:
    Counter {
        name: "pubsub_messages",
        help: "Published messages handed to this node's subscribers (one per receiving subscription).",
        value: |s| s.pubsub_messages,
    },
    Counter {
        name: "pubsub_messages_late",
        help: "Published messages this node applied too long after they were published to deliver (replay at start, catching up).",
        value: |s| s.pubsub_messages_late,
    },
    Counter {
        name: "pubsub_clients_disconnected",
        help: "Subscribers disconnected for reading too slowly (pubsub-output-limit).",
        value: |s| s.pubsub_clients_disconnected,
    },
    // Users and ACLs (RESP):
    Counter {
        name: "resp_auth_failures",
        help: "RESP authentications refused (AUTH, HELLO AUTH): a wrong password, an unknown or disabled user.",
        value: |s| s.resp_auth_failures,
    },
    Counter {
        name: "user_connections_refused",
        help: "Connections and logins refused because their user had max-connections open on this node.",
        value: |s| s.user_connections_refused,
    },
    // Protection:
    Counter {
        name: "protected_mode_refused",
        help: "Connections from other hosts refused because no authentication is configured (protected-mode).",
        value: |s| s.protected_mode_refused,
    },
    Counter {
        name: "query_buffer_closed",
        help: "RESP clients closed for sending more unparsed input than client-query-buffer-limit.",
        value: |s| s.query_buffer_closed,
    },
    Counter {
        name: "session_limits_refused",
        help: "Acquires and waits refused by max-holds-per-session or max-waits-per-session.",
        value: |s| s.session_limits_refused,
    },
    // Flow control:
    Counter {
        name: "flow_stalls",
        help: "Times a publishing connection stopped being read because a queue it publishes to had queue-flow-limit ready messages.",
        value: |s| s.flow_stalls,
    },
];

impl Stats {
    pub fn connections(&self, protocol: Protocol) -> &Connections {
        &self.connections[protocol.index()]
    }

    /// Counts a command's reply: a grant that came at once (grants after a wait arrive as
    /// effects, counted by the router) and a refused deadlock, also as a step of a transaction
    /// (`EXEC`'s array).
    pub fn observe(&self, reply: &turnstile_core::Reply) {
        match reply {
            turnstile_core::Reply::Array(steps) => steps.iter().for_each(|step| self.observe(step)),
            turnstile_core::Reply::Granted { .. } => bump(&self.counters.lock_grants),
            turnstile_core::Reply::Error(turnstile_core::CoreError::Deadlock { cycle }) => {
                self.deadlocks.record(cycle)
            }
            turnstile_core::Reply::Error(turnstile_core::CoreError::SessionLimit { .. }) => {
                bump(&self.counters.session_limits_refused)
            }
            _ => {}
        }
    }
}

pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Connections of one protocol, as read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionCounts {
    pub open: u64,
    pub accepted: u64,
    pub refused: u64,
}

/// Everything the server tells about itself, read at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub uptime: Duration,
    /// Per protocol, in [`Protocol::ALL`]'s order.
    pub connections: [(Protocol, ConnectionCounts); Protocol::ALL.len()],
    pub blocked: u64,
    pub commands: u64,
    pub lock_grants: u64,
    pub lock_wait_timeouts: u64,
    pub deadlocks_refused: u64,
    pub lock_leases_expired: u64,
    pub delivery_leases_expired: u64,
    pub pushes_refused_oom: u64,
    pub limits_refused: u64,
    pub pubsub_messages: u64,
    pub pubsub_messages_late: u64,
    pub pubsub_clients_disconnected: u64,
    // Users and ACLs (RESP):
    pub resp_auth_failures: u64,
    pub user_connections_refused: u64,
    pub protected_mode_refused: u64,
    pub query_buffer_closed: u64,
    pub session_limits_refused: u64,
    pub flow_stalls: u64,
    /// Connections stopped by flow control now.
    pub in_flow: u64,
    /// Time connections have spent stopped by flow control, summed.
    pub flow_time: Duration,
    /// The state's figures; `None` when the state could not be read (no leader, stopping).
    pub summary: Option<Summary>,
    pub node: NodeStatus,
    /// The members as this node sees them: replication figures only when it leads.
    pub cluster: ClusterStatus,
    pub journal: Option<JournalStats>,
    pub journal_poisoned: bool,
    pub payload_bytes: u64,
    pub max_memory: u64,
    pub max_clients: usize,
    pub resident_bytes: Option<u64>,
}

impl Snapshot {
    /// Reads every counter and the node's figures, and the state's summary at a linearizable
    /// read point.
    pub async fn take(shared: &Shared) -> Snapshot {
        let summary = match shared.node.read(|state| state.summary()).await {
            Ok(summary) => Some(summary),
            Err(e) => {
                tracing::debug!(error = %e, "stats without the state's summary");
                None
            }
        };
        Snapshot::with_summary(shared, summary)
    }

    /// Reads every counter and the node's figures, given the state's summary.
    pub fn with_summary(shared: &Shared, summary: Option<Summary>) -> Snapshot {
        let stats = &shared.stats;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let c = &stats.counters;
        Snapshot {
            uptime: shared.started.elapsed(),
            connections: Protocol::ALL.map(|p| {
                let n = stats.connections(p);
                (
                    p,
                    ConnectionCounts {
                        open: load(&n.open),
                        accepted: load(&n.accepted),
                        refused: load(&n.refused),
                    },
                )
            }),
            blocked: load(&stats.blocked),
            commands: load(&stats.commands),
            lock_grants: load(&c.lock_grants),
            lock_wait_timeouts: load(&c.lock_wait_timeouts),
            deadlocks_refused: stats.deadlocks.total(),
            lock_leases_expired: load(&c.lock_leases_expired),
            delivery_leases_expired: load(&c.delivery_leases_expired),
            pushes_refused_oom: load(&c.pushes_refused_oom),
            limits_refused: load(&c.limits_refused),
            pubsub_messages: load(&c.pubsub_messages),
            pubsub_messages_late: load(&c.pubsub_messages_late),
            pubsub_clients_disconnected: load(&c.pubsub_clients_disconnected),
            resp_auth_failures: load(&c.resp_auth_failures),
            user_connections_refused: load(&c.user_connections_refused),
            protected_mode_refused: load(&c.protected_mode_refused),
            query_buffer_closed: load(&c.query_buffer_closed),
            session_limits_refused: load(&c.session_limits_refused),
            flow_stalls: load(&c.flow_stalls),
            in_flow: load(&stats.in_flow),
            flow_time: Duration::from_micros(load(&stats.flow_micros)),
            summary,
            node: shared.node.status(),
            cluster: shared.node.local_cluster_status(),
            journal: shared.node.journal_stats(),
            journal_poisoned: shared.node.journal_poisoned(),
            payload_bytes: shared.node.payload_bytes(),
            max_memory: shared.limits.max_memory,
            max_clients: shared.limits.max_clients,
            resident_bytes: resident_bytes(),
        }
    }

    /// Connections open now, over every protocol.
    pub fn open_connections(&self) -> u64 {
        self.connections.iter().map(|(_, c)| c.open).sum()
    }

    /// Connections ever made, served or refused, over every protocol.
    pub fn connections_received(&self) -> u64 {
        self.connections.iter().map(|(_, c)| c.accepted + c.refused).sum()
    }

    pub fn connections_refused(&self) -> u64 {
        self.connections.iter().map(|(_, c)| c.refused).sum()
    }
}

/// The process's resident memory, from `/proc` (Linux); `None` elsewhere.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The latest waits refused because they would have closed a cycle, newest last.
#[derive(Debug, Default)]
pub struct RecentDeadlocks {
    refused: Mutex<VecDeque<RefusedDeadlock>>,
    /// Every refusal since the start, for the metrics (`refused` keeps only the latest).
    total: AtomicU64,
}

/// One refused wait and the cycle it would have closed.
#[derive(Debug, Clone)]
pub struct RefusedDeadlock {
    pub at: SystemTime,
    pub cycle: Vec<WaitEdge>,
}

impl RecentDeadlocks {
    pub fn record(&self, cycle: &[WaitEdge]) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if refused.len() == RECENT_DEADLOCKS {
            refused.pop_front();
        }
        refused.push_back(RefusedDeadlock { at: SystemTime::now(), cycle: cycle.to_vec() });
    }

    pub fn list(&self) -> Vec<RefusedDeadlock> {
        self.refused.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    /// How many were ever refused.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_names_are_unique_and_valid_metric_names() {
        let mut names: Vec<&str> = COUNTERS.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COUNTERS.len(), "a counter name is used twice");
        for name in names {
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{name}");
            assert!(!name.ends_with("_total"), "{name}: the metric adds _total");
        }
    }

    #[test]
    fn grants_inside_a_transaction_are_counted() {
        use turnstile_core::Reply;
        let stats = Stats::default();
        stats.observe(&Reply::Granted { token: 1, lease: 10 });
        stats.observe(&Reply::Array(vec![Reply::Ok, Reply::Granted { token: 2, lease: 10 }, Reply::Nil]));
        assert_eq!(stats.counters.lock_grants.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn only_the_latest_deadlocks_are_kept_but_all_are_counted() {
        let recent = RecentDeadlocks::default();
        for _ in 0..RECENT_DEADLOCKS + 5 {
            recent.record(&[]);
        }
        assert_eq!(recent.list().len(), RECENT_DEADLOCKS);
        assert_eq!(recent.total(), RECENT_DEADLOCKS as u64 + 5);
    }
}
