//! The ticker: proposes `Tick` when the state machine's next timer is due, and not before.
//!
//! Leases, wait deadlines, delays and TTLs fire on the tick that the leader stamps at or after
//! their due time, so they fire within a few milliseconds of it. An idle server writes nothing.
//!
//! It waits on the node's clock ([`Node::clock`]), the one the batcher stamps entries with: the
//! tick it proposes once that clock reaches a deadline is stamped at or after the deadline, so it
//! fires it. With a manual clock, advancing it is what makes ticks happen. In a cluster every
//! node runs one, and only the leader's proposes: followers apply the same deadlines and wait.
//!
//! ```text
//!  next_deadline ─► clock.sleep_until(due) ─► propose(Tick) ─► applied: timers ≤ stamp fire,
//!       ▲                                                       the next deadline is published
//!       └───────────────────────────────────────────────────────┘
//! ```

use std::time::Duration;

use turnstile_core::{Command, Timestamp};
use turnstile_raft::{Clock, Node};

use crate::shutdown::Shutdown;

pub async fn run(node: Node, mut shutdown: Shutdown) {
    let mut deadline = node.next_deadline();
    // The next tick waits for the clock to reach at least this, besides the deadline.
    let mut not_before: Timestamp = 0;
    loop {
        let due = *deadline.borrow_and_update();
        tokio::select! {
            () = shutdown.recv() => return,
            changed = deadline.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = sleep_until(node.clock(), due.map(|at| at.max(not_before))) => {
                // Only the leader ticks: its clock stamps every entry, and a follower's ticks
                // would only be forwarded to it. A follower looks again shortly, in case it has
                // become the leader (not on the node's clock, as below).
                if !node.is_leader() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                match node.propose(Command::Tick).await {
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "tick not applied");
                        // Not on the node's clock: this paces retries against a failing node, and a
                        // manual clock that nobody moves would stop them for good.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                // A tick that did not fire the deadline (it failed, or the system clock stepped
                // back before the batcher stamped it) leaves it unchanged; the next one waits
                // until the clock is past it rather than spin.
                let unchanged = *deadline.borrow() == due;
                if let Some(at) = due.filter(|_| unchanged) {
                    not_before = at.saturating_add(1);
                }
            }
        }
    }
}

/// [`Clock::sleep_until`] that accepts "no deadline": that waits forever.
async fn sleep_until(clock: &Clock, at: Option<Timestamp>) {
    match at {
        Some(at) => clock.sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use turnstile_core::{Acquire, Effect, Mode, Query, Reply};
    use turnstile_raft::NodeConfig;

    use super::*;
    use crate::shutdown;

    /// Bounds each wait, so that a ticker that does not tick fails the test instead of hanging it.
    const WAIT: Duration = Duration::from_secs(10);

    async fn start(clock: Clock) -> Node {
        let config = NodeConfig { clock, ..NodeConfig::default() };
        tokio::time::timeout(WAIT, Node::start(config)).await.expect("start in time").expect("start")
    }

    fn kept_lock(name: &str, ttl: u64) -> Command {
        Command::Acquire(Acquire {
            name: name.into(),
            mode: Mode::Exclusive,
            ttl,
            wait: 0,
            owner: Some("cron".into()),
            session: None,
            keep: true,
        })
    }

    /// Nobody but the ticker proposes `Tick` here: moving the node's manual clock past the lease
    /// is what makes it run out, on a tick stamped with the time the clock was moved to. The clock
    /// starts in the year 2200, so a ticker that waited on the wall clock would not tick at all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn advancing_the_nodes_clock_makes_the_ticker_expire_a_lease() {
        const START: Timestamp = 7_258_118_400_000;
        let (clock, hand) = Clock::manual(START);
        let node = start(clock).await;
        let mut effects = node.take_effects().unwrap();
        let (trigger, shutdown) = shutdown::channel();
        let ticker = tokio::spawn(run(node.clone(), shutdown));

        let Reply::Granted { token, .. } = node.propose(kept_lock("report", 30_000)).await.unwrap() else {
            panic!("granted");
        };
        assert_eq!(*node.next_deadline().borrow(), Some(START + 30_000));
        hand.advance(30_000);

        let expired = tokio::time::timeout(WAIT, async {
            loop {
                let (_, fx) = effects.recv().await.expect("effects channel open");
                if let Some(e) = fx.into_iter().find(|e| matches!(e, Effect::HoldExpired { .. })) {
                    return e;
                }
            }
        })
        .await
        .expect("the ticker ticks once the clock reaches the lease's end");
        assert_eq!(expired, Effect::HoldExpired { name: "report".into(), token, owner: "cron".into() });
        let stamped = node.read(|s| s.clock()).await.unwrap();
        assert_eq!(stamped, START + 30_000, "stamped when the clock got there");
        let held = node.read(move |s| s.query(0, Query::FenceCheck { lock: "report".into(), token }));
        assert_eq!(held.await.unwrap(), Reply::Int(0));

        trigger.trigger();
        tokio::time::timeout(WAIT, ticker).await.expect("the ticker stops at shutdown").unwrap();
        node.shutdown().await.unwrap();
    }

    /// A ticker waiting on a clock that nobody moves still stops at shutdown.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_stops_a_ticker_waiting_on_a_clock_that_stands_still() {
        let (clock, _hand) = Clock::manual(5_000);
        let node = start(clock).await;
        node.propose(kept_lock("nightly", 60_000)).await.unwrap();
        let (trigger, shutdown) = shutdown::channel();
        let ticker = tokio::spawn(run(node.clone(), shutdown));
        trigger.trigger();
        tokio::time::timeout(WAIT, ticker).await.expect("the ticker stops at shutdown").unwrap();
        assert_eq!(*node.next_deadline().borrow(), Some(65_000), "no tick fired the lease");
        node.shutdown().await.unwrap();
    }
}
