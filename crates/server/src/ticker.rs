//! The ticker: proposes `Tick` when the state machine's next timer is due, and not before.
//!
//! Leases, wait deadlines, delays and TTLs fire on the tick that the leader stamps at or after
//! their due time, so they fire within a few milliseconds of it. An idle server writes nothing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use turnstile_core::{Command, Timestamp};
use turnstile_raft::Node;

use crate::shutdown::Shutdown;

/// The wall clock in ms since the epoch, as the leader stamps it.
pub fn now_ms() -> Timestamp {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

pub async fn run(node: Node, mut shutdown: Shutdown) {
    let mut deadline = node.next_deadline();
    loop {
        let due = *deadline.borrow_and_update();
        let wait = match due {
            Some(at) => Duration::from_millis(at.saturating_sub(now_ms())),
            None => Duration::MAX,
        };
        tokio::select! {
            () = shutdown.recv() => return,
            changed = deadline.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = sleep(wait) => {
                match node.propose(Command::Tick).await {
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "tick not applied");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                // The stamp may land in the same millisecond as the deadline's; if nothing fired,
                // the deadline is unchanged, so step past it rather than spin.
                if *deadline.borrow() == due {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
}

/// `tokio::time::sleep` that accepts "forever".
async fn sleep(d: Duration) {
    if d == Duration::MAX {
        std::future::pending::<()>().await;
    } else {
        tokio::time::sleep(d).await;
    }
}
