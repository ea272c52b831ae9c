//! The snapshotter: asks for snapshots by the size of the log, next to openraft's own policy,
//! which counts entries ([`super::NodeConfig::snapshot_every`]).

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use turnstile_storage::Journal;

use crate::Raft;
use crate::state_machine::StateMachineStore;

/// How often the size of the log after the last snapshot is looked at (see
/// [`super::NodeConfig::snapshot_log_bytes`]).
const LOG_SIZE_CHECK_EVERY: Duration = Duration::from_millis(100);

/// Asks openraft for a snapshot whenever the log after the last one (what a restart would replay)
/// holds `max(min_bytes, the last snapshot's size)` bytes — the rule Redis uses to rewrite its
/// append-only file — so that log stays about a snapshot's size or less, on disk and in restart
/// time. The purge that follows a snapshot shrinks it again. If one asked for does not come (a
/// failed build), it is asked for again once the log has grown by as much again.
pub(super) async fn run(raft: Raft, journal: Arc<Journal>, state_machine: StateMachineStore, min_bytes: u64) {
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
