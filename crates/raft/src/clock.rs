//! [`Clock`]: where a node's time comes from.
//!
//! The state machine never reads a clock: the only time it knows is the `now` the leader stamps on
//! each [`crate::Batch`], and that stamp is read from the node's `Clock`. The server's ticker waits
//! on the same clock for the state's next deadline, then proposes a `Tick`, so a lease runs out on
//! the first entry stamped at or after its deadline.
//!
//! A server runs on [`Clock::system`]. A test runs on [`Clock::manual`] and moves time by hand
//! with the [`ManualClock`] it gets back: leases run out and waits time out exactly when the test
//! says, and nothing sleeps in real time.
//!
//! ```text
//!  ManualClock::advance / set ─► watch ─┬─► Clock::now          the batcher's stamp
//!                                       └─► Clock::sleep_until  the ticker wakes once now ≥ deadline
//! ```

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use turnstile_core::Timestamp;

/// A source of time in milliseconds since the Unix epoch. Cheap to clone; clones read the same
/// time. The default is [`Clock::system`].
#[derive(Clone, Default)]
pub struct Clock {
    source: Source,
}

#[derive(Clone, Default)]
enum Source {
    #[default]
    System,
    /// The latest time its [`ManualClock`] was moved to.
    Manual(watch::Receiver<Timestamp>),
}

/// The hand that moves a manual [`Clock`]; it only moves forward. Cheap to clone. Once every
/// clone is dropped the clock stands still for good: its `now` stays where it was and a
/// `sleep_until` a later time never returns.
#[derive(Clone)]
pub struct ManualClock {
    time: watch::Sender<Timestamp>,
}

impl Clock {
    /// This machine's wall clock. It can step back (NTP); the state machine takes the latest of
    /// the stamps it has applied, so its time does not follow it back.
    pub fn system() -> Clock {
        Clock { source: Source::System }
    }

    /// A clock that stands at `start` until the returned [`ManualClock`] moves it.
    pub fn manual(start: Timestamp) -> (Clock, ManualClock) {
        let (time, now) = watch::channel(start);
        (Clock { source: Source::Manual(now) }, ManualClock { time })
    }

    /// The time now, in milliseconds since the Unix epoch.
    pub fn now(&self) -> Timestamp {
        match &self.source {
            Source::System => system_now(),
            Source::Manual(now) => *now.borrow(),
        }
    }

    /// Returns once [`Clock::now`] is at or past `at` (at once if it already is). On the system
    /// clock this sleeps, and looks again on waking in case the wall clock stepped back meanwhile;
    /// on a manual clock it returns as soon as the clock is moved far enough.
    pub async fn sleep_until(&self, at: Timestamp) {
        match &self.source {
            Source::System => loop {
                let now = system_now();
                if now >= at {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(at - now)).await;
            },
            Source::Manual(now) => {
                let mut now = now.clone();
                // An error means every ManualClock is gone: the time will never get there.
                if now.wait_for(|now| *now >= at).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

impl ManualClock {
    /// Moves the clock `ms` milliseconds forward.
    pub fn advance(&self, ms: u64) {
        self.time.send_if_modified(|now| {
            let before = *now;
            *now = now.saturating_add(ms);
            *now != before
        });
    }

    /// Moves the clock to `at`; an `at` before the clock's time leaves it where it is, as time
    /// does not go backwards.
    pub fn set(&self, at: Timestamp) {
        self.time.send_if_modified(|now| {
            let moved = at > *now;
            *now = (*now).max(at);
            moved
        });
    }
}

/// Shows the time a manual clock stands at, which is what a failing test wants to know.
impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::System => f.write_str("Clock::System"),
            Source::Manual(now) => write!(f, "Clock::Manual({})", *now.borrow()),
        }
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ManualClock({})", *self.time.borrow())
    }
}

fn system_now() -> Timestamp {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use futures_util::FutureExt;

    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_moved_and_only_forward() {
        let (clock, hand) = Clock::manual(1_000);
        assert_eq!(clock.now(), 1_000);
        hand.advance(250);
        assert_eq!(clock.now(), 1_250);
        hand.set(2_000);
        assert_eq!(clock.now(), 2_000);
        hand.set(1_500);
        assert_eq!(clock.now(), 2_000, "set never moves the clock back");
        hand.advance(0);
        assert_eq!(clock.now(), 2_000);
        hand.advance(u64::MAX);
        assert_eq!(clock.now(), u64::MAX, "advance stops at the end of time rather than wrap");
        assert_eq!(clock.clone().now(), u64::MAX, "clones read the same time");
    }

    /// Polled by hand (one poll, no runtime): a future that is pending stays pending until the
    /// clock reaches its time, whatever real time does.
    #[test]
    fn a_manual_sleep_until_returns_once_the_clock_reaches_its_time_and_not_before() {
        let (clock, hand) = Clock::manual(1_000);
        let mut wake = pin!(clock.sleep_until(1_050));
        assert!((&mut wake).now_or_never().is_none());
        hand.advance(49);
        assert!((&mut wake).now_or_never().is_none(), "1 ms early");
        hand.set(1_010);
        assert!((&mut wake).now_or_never().is_none(), "a set back changes nothing");
        hand.advance(1);
        assert_eq!((&mut wake).now_or_never(), Some(()), "due at exactly 1_050");

        assert_eq!(clock.sleep_until(1_050).now_or_never(), Some(()), "a time already reached");
        assert_eq!(clock.sleep_until(0).now_or_never(), Some(()));
        hand.advance(1_000);
        assert_eq!(clock.sleep_until(2_000).now_or_never(), Some(()), "passed over, not hit");
    }

    /// The same, across tasks: the waiting task is woken by the advance.
    #[tokio::test]
    async fn advancing_a_manual_clock_wakes_a_task_that_sleeps_on_it() {
        let (clock, hand) = Clock::manual(0);
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move {
                clock.sleep_until(30_000).await;
                clock.now()
            }
        });
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        hand.advance(30_000);
        let woke_at = tokio::time::timeout(Duration::from_secs(5), sleeper).await.expect("woken").unwrap();
        assert_eq!(woke_at, 30_000);
    }

    #[test]
    fn a_manual_clock_whose_hand_is_gone_stands_still() {
        let (clock, hand) = Clock::manual(500);
        drop(hand);
        assert_eq!(clock.now(), 500);
        assert_eq!(clock.sleep_until(500).now_or_never(), Some(()));
        assert!(clock.sleep_until(501).now_or_never().is_none());
    }

    #[test]
    fn the_system_clock_reads_the_wall_clock() {
        // Milliseconds, not seconds or microseconds: between 2020 and 2100.
        let now = Clock::default().now();
        assert!((1_577_836_800_000..4_102_444_800_000).contains(&now), "{now}");
        assert_eq!(format!("{:?}", Clock::default()), "Clock::System");
        // A time already passed returns without sleeping (no timer, so no runtime is needed).
        assert_eq!(Clock::system().sleep_until(now).now_or_never(), Some(()));
    }

    #[test]
    fn debug_shows_where_a_manual_clock_stands() {
        let (clock, hand) = Clock::manual(42);
        assert_eq!(format!("{clock:?}"), "Clock::Manual(42)");
        assert_eq!(format!("{hand:?}"), "ManualClock(42)");
    }
}
