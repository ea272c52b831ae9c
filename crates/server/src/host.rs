//! This process as the host of its sessions: the number it drew at start, and the task that
//! proposes its keep-alive.
//!
//! ```text
//!  start ─► HostId drawn at random ─► KeepAlive (before the listeners serve)
//!  keep-alive task: every timeout/3 on the node's clock ─► KeepAlive { host, timeout }
//!                   (one log entry per process per interval, whatever its number of sessions)
//! ```
//!
//! If this process dies, its keep-alives stop, and one timeout later (from the last one, or from
//! a new leader's `RefreshLeases`) every session it held closes — unless a client resumed it on
//! another node first. A process that restarts draws a new id, so it never keeps alive the
//! sessions of the run before it.

use std::time::Duration;

use turnstile_core::{Command, HostId, Millis};
use turnstile_raft::{Node, NodeError};

use crate::shutdown::Shutdown;

/// A fresh random number: a host id or a session secret. From the operating system's source,
/// so that a secret cannot be guessed from the ones before it.
pub fn random() -> u64 {
    getrandom::u64().expect("the operating system's random source works")
}

/// A session's secret: 63 random bits, so that it is a RESP integer (a signed 64-bit one).
pub fn secret() -> u64 {
    random() >> 1
}

/// The keep-alive of `host`, saying its sessions live for `timeout` from when it is applied.
pub fn keep_alive(host: HostId, timeout: Millis) -> Command {
    Command::KeepAlive { host, timeout }
}

/// How often the keep-alive is proposed: a third of the timeout, so that two can fail (an
/// election, a slow fsync) before the sessions are at risk.
fn interval(timeout: Millis) -> Millis {
    (timeout / 3).max(1)
}

/// Proposes `host`'s keep-alive every third of `timeout`, on the node's clock, until shutdown.
pub async fn run(node: Node, host: HostId, timeout: Millis, mut shutdown: Shutdown) {
    let mut next = node.clock().now().saturating_add(interval(timeout));
    loop {
        tokio::select! {
            () = shutdown.recv() => return,
            () = node.clock().sleep_until(next) => {}
        }
        // Timed from before the proposal: a slow commit does not stretch the interval.
        next = node.clock().now().saturating_add(interval(timeout));
        let proposed = tokio::select! {
            () = shutdown.recv() => return,
            proposed = node.propose(keep_alive(host, timeout)) => proposed,
        };
        let every = Duration::from_millis(interval(timeout));
        match proposed {
            Ok(_) => {}
            // A follower that cannot forward to the leader serves no session (its writes are
            // refused the same way), so there is nothing at risk.
            Err(e @ NodeError::NotLeader { .. }) => {
                tracing::debug!(%host, error = %e, "keep-alive not applied; next in {every:?}")
            }
            Err(e) => tracing::warn!(%host, error = %e, "keep-alive not applied; next in {every:?}"),
        }
    }
}
