//! Flow control for queue publishers (`queue-flow-limit`): a connection that publishes to a queue
//! whose consumers are falling behind is stopped before the queue's backlog grows past the limit,
//! and let go once they have caught up — RabbitMQ's "flow" connection state. Nothing is refused or
//! lost: a stopped connection is simply not read, so its client waits on TCP's backpressure, and
//! what it sent before keeps its replies and confirms.
//!
//! ```text
//!  Session::submit(Push / Publish) ─► Throttle::note: the message's route, kept (no lock)
//!  front end, after a read round ───► Throttle::check: one look at the applied state
//!      the fullest consumed queue of those routes + the connection's messages not yet applied
//!        ≥ limit ─► stalled: the front end stops reading (its replies, confirms, deliveries
//!                   and heartbeats still go out)
//!  every RECHECK while stalled ─────► Throttle::recheck ─► < limit / 2 ─► reading again
//! ```
//!
//! The check runs once per read round, not per message: a round's messages are weighed together,
//! under one read lock. So a connection may carry one round past the limit (what it had read when
//! it looked); the messages it proposed and has no reply for yet are counted as if each went to
//! the fullest queue, so nothing older slips past. The look is at the state as this node applied
//! it, with no read index ([`Node::read_applied`]): flow control is advisory, and a look that
//! lags by an entry only moves the stop by that much.
//!
//! Only queues that another session takes from (a consumer, a waiting pop, a delivery it holds)
//! are weighed ([`turnstile_core::State::flow_backlog`]): a backlog nobody consumes is the user's
//! intent (a bulk load, work for later) and `max-memory` bounds it. The gap between the two
//! watermarks keeps a stopped publisher from flapping: it resumes with half the limit still ready,
//! so consumers have work while its next messages arrive.
//!
//! A stopped connection is looked at again every [`RECHECK`] rather than woken by the applied
//! effects: what frees it — other connections' acks and deliveries — makes no effect addressed to
//! it, and waking every publisher on every ack would cost more than a look a few times per
//! consumer drain of half the limit.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use turnstile_core::{Command, SessionId, Step};
use turnstile_raft::Node;

use crate::shutdown::Shutdown;
use crate::stats::{Stats, bump};

/// How often a stopped connection looks again. Short against the time consumers take to drain
/// half the limit (the default's half, 500 messages, is about 40 ms at 12 k/s), so a publisher is
/// let go well before they run dry; long enough that the looks cost nothing next to the messages.
pub const RECHECK: Duration = Duration::from_millis(5);

/// Most distinct routes weighed per read round. A connection that spreads one round over more
/// (a topic publisher with many keys) is weighed by the first ones: flow control is advisory, and
/// the look must stay cheap.
const MAX_ROUTES: usize = 16;

/// Where a message goes: an exchange and a routing key (a push: the default exchange, `""`, and
/// the queue's name).
pub type Route = (String, String);

/// `queue-flow-limit` as a pair of watermarks: stop at the limit, go on below half of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    limit: u64,
}

impl Watermark {
    /// `None` for 0: flow control is off.
    pub fn new(limit: u64) -> Option<Watermark> {
        (limit > 0).then_some(Watermark { limit })
    }

    /// Whether a publisher that would add to a backlog of this many ready messages must stop.
    pub fn stops(self, backlog: u64) -> bool {
        backlog >= self.limit
    }

    /// Whether a stopped publisher may go on: the backlog is below half the limit.
    pub fn releases(self, backlog: u64) -> bool {
        backlog.saturating_mul(2) < self.limit
    }
}

/// One connection's flow control: the routes it published to since it last looked, and whether
/// it is stopped. See the module docs.
#[derive(Debug)]
pub struct Throttle {
    watermark: Option<Watermark>,
    /// Routes of the messages submitted since the last look, each once.
    routes: Vec<Route>,
    stall: Option<Stall>,
}

/// A connection stopped by flow control: counted in the stats while it lasts.
#[derive(Debug)]
struct Stall {
    /// The routes that stopped it, looked at again until it is let go.
    routes: Vec<Route>,
    /// Up to when its time stopped has been added to the stats.
    counted: Instant,
    stats: Arc<Stats>,
}

impl Stall {
    fn count(&mut self, now: Instant) {
        let spent = now.saturating_duration_since(self.counted);
        let micros = u64::try_from(spent.as_micros()).unwrap_or(u64::MAX);
        self.stats.flow_micros.fetch_add(micros, Ordering::Relaxed);
        self.counted = self.counted.max(now);
    }
}

/// Ends the stall, let go or not (the connection closed while stopped).
impl Drop for Stall {
    fn drop(&mut self) {
        self.count(Instant::now());
        self.stats.in_flow.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Throttle {
    /// Flow control at `limit` ready messages per queue; 0 turns it off.
    pub fn new(limit: u64) -> Throttle {
        Throttle { watermark: Watermark::new(limit), routes: Vec::new(), stall: None }
    }

    /// Keeps the route of a message the connection is putting in the log (a push or a publish,
    /// also among a transaction's commands); anything else is not weighed.
    pub fn note(&mut self, cmd: &Command) {
        if self.watermark.is_none() {
            return;
        }
        let (exchange, key) = match cmd {
            Command::Push(push) => ("", push.queue.as_str()),
            Command::Publish(publish) => (publish.exchange.as_str(), publish.routing_key.as_str()),
            Command::Exec { steps, .. } => {
                for step in steps {
                    if let Step::Write(cmd) = step {
                        self.note(cmd);
                    }
                }
                return;
            }
            _ => return,
        };
        if self.routes.len() < MAX_ROUTES && !self.routes.iter().any(|(x, k)| x == exchange && k == key) {
            self.routes.push((exchange.to_owned(), key.to_owned()));
        }
    }

    /// After a read round: weighs the routes noted since the last look, `look` giving their
    /// backlog (`None` when none of their queues is consumed), plus what `unapplied` counts of
    /// the connection's messages (proposed, no reply yet). Stops the connection (true) when that
    /// reaches the limit; does not look at all when nothing was published.
    ///
    /// The unapplied are counted before the look: one applied in between counts twice (the stop
    /// comes a message early) rather than not at all.
    pub fn check(
        &mut self,
        stats: &Arc<Stats>,
        now: Instant,
        unapplied: impl FnOnce() -> u64,
        look: impl FnOnce(&[Route]) -> Option<u64>,
    ) -> bool {
        if self.stall.is_some() {
            return true;
        }
        let Some(watermark) = self.watermark else { return false };
        if self.routes.is_empty() {
            return false;
        }
        let unapplied = unapplied();
        let backlog = look(&self.routes).map(|ready| ready.saturating_add(unapplied));
        if !backlog.is_some_and(|backlog| watermark.stops(backlog)) {
            self.routes.clear();
            return false;
        }
        bump(&stats.counters.flow_stalls);
        stats.in_flow.fetch_add(1, Ordering::Relaxed);
        let routes = std::mem::take(&mut self.routes);
        self.stall = Some(Stall { routes, counted: now, stats: stats.clone() });
        true
    }

    /// While stopped: looks again at the routes that stopped the connection. Lets it go (false)
    /// once their backlog and its `unapplied` messages are below half the limit.
    pub fn recheck(
        &mut self,
        now: Instant,
        unapplied: impl FnOnce() -> u64,
        look: impl FnOnce(&[Route]) -> Option<u64>,
    ) -> bool {
        let (Some(watermark), Some(stall)) = (self.watermark, self.stall.as_mut()) else { return false };
        stall.count(now);
        let unapplied = unapplied();
        let backlog = look(&stall.routes).map(|ready| ready.saturating_add(unapplied));
        if backlog.is_none_or(|backlog| watermark.releases(backlog)) {
            self.stall = None;
            return false;
        }
        true
    }

    /// For a front end that waits in place (RESP between two pipelines, HTTP before it answers a
    /// push or publish): checks, and while stopped looks again every [`RECHECK`] until let go or
    /// until shutdown begins. Every message it submitted has its reply by then, so none is counted
    /// as unapplied.
    pub async fn wait(
        &mut self,
        node: &Node,
        stats: &Arc<Stats>,
        sender: Option<SessionId>,
        shutdown: &Shutdown,
    ) {
        let look = |routes: &[Route]| backlog(node, routes, sender);
        if !self.check(stats, Instant::now(), || 0, look) {
            return;
        }
        let mut shutdown = shutdown.clone();
        loop {
            tokio::select! {
                () = tokio::time::sleep(RECHECK) => {}
                () = shutdown.recv() => {
                    self.stall = None;
                    return;
                }
            }
            if !self.recheck(Instant::now(), || 0, look) {
                return;
            }
        }
    }
}

/// The backlog of `routes` for a publisher of session `sender`: the ready messages of the
/// fullest queue they reach that another session takes from, in the state as this node applied
/// it; `None` when they reach no such queue, or when the state cannot be read (the node is
/// stopping): flow control never holds a connection for those.
pub fn backlog(node: &Node, routes: &[Route], sender: Option<SessionId>) -> Option<u64> {
    node.read_applied(|state| {
        routes.iter().filter_map(|(exchange, key)| state.flow_backlog(exchange, key, sender)).max()
    })
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use turnstile_core::{Command, Consume, HostId, Push, Reply};
    use turnstile_raft::NodeConfig;

    use super::*;

    /// Bounds each wait, so that a publisher never let go fails the test instead of hanging it.
    const WAIT: Duration = Duration::from_secs(10);

    fn push(queue: &str) -> Command {
        Command::Push(Push::new(queue, "m"))
    }

    fn route(queue: &str) -> Route {
        (String::new(), queue.to_owned())
    }

    #[test]
    fn the_watermarks_stop_at_the_limit_and_release_below_half() {
        assert_eq!(Watermark::new(0), None, "0 turns flow control off");
        let w = Watermark::new(50).unwrap();
        assert!(!w.stops(49));
        assert!(w.stops(50));
        assert!(w.stops(u64::MAX));
        assert!(!w.releases(25), "half the limit is not below it");
        assert!(w.releases(24));
        assert!(!w.releases(u64::MAX));
        // A limit of 1 stops at any backlog and releases only an empty one.
        let one = Watermark::new(1).unwrap();
        assert_eq!((one.stops(1), one.releases(0), one.releases(1)), (true, true, false));
    }

    /// The hysteresis, step by step: a round that reaches the limit stops the connection; looks
    /// at a backlog between half and the limit keep it stopped; below half lets it go. Each look
    /// is at the routes the round published to, and the stall is counted once, with its time.
    #[test]
    fn a_throttle_stops_at_the_limit_and_lets_go_below_half() {
        let stats = Arc::new(Stats::default());
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut t = Throttle::new(10);

        // Nothing published: no look at all.
        assert!(!t.check(&stats, at(0), || 0, |_| panic!("looked with no route")));
        // Below the limit: goes on, and the next round starts afresh.
        t.note(&push("jobs"));
        t.note(&push("jobs"));
        t.note(&Command::Ack { queue: "jobs".into(), receipts: vec![1], fence: None });
        assert!(!t.check(
            &stats,
            at(0),
            || 0,
            |routes| {
                assert_eq!(routes, [route("jobs")], "one route, kept once; an ack is not weighed");
                Some(9)
            }
        ));
        assert!(!t.check(&stats, at(0), || 0, |_| panic!("the routes were looked at already")));

        // Unapplied messages do not stop a publisher to queues nobody consumes.
        t.note(&push("jobs"));
        assert!(!t.check(&stats, at(0), || 1_000, |_| None));
        // Its own unapplied messages count: 8 ready + 2 on their way reach the limit.
        t.note(&push("jobs"));
        t.note(&push("other"));
        assert!(t.check(
            &stats,
            at(1),
            || 2,
            |routes| {
                assert_eq!(routes, [route("jobs"), route("other")]);
                Some(8)
            }
        ));
        assert!(t.stall.is_some());
        assert_eq!(stats.counters.flow_stalls.load(Ordering::Relaxed), 1);
        assert_eq!(stats.in_flow.load(Ordering::Relaxed), 1);
        // Stopped, a check does not look again (the front end rechecks on its interval).
        assert!(t.check(&stats, at(1), || 0, |_| panic!("a stopped connection is rechecked, not checked")));

        // Between the watermarks: still stopped. Half the limit is not below it.
        assert!(t.recheck(at(3), || 0, |_| Some(9)));
        assert!(t.recheck(at(5), || 0, |_| Some(5)));
        assert!(t.recheck(at(7), || 1, |_| Some(4)), "its unapplied messages count here too");
        assert_eq!(stats.flow_micros.load(Ordering::Relaxed), 6_000, "counted up to each look");
        // Below half: let go, counted once.
        assert!(!t.recheck(
            at(9),
            || 0,
            |routes| {
                assert_eq!(routes, [route("jobs"), route("other")], "the routes that stopped it");
                Some(4)
            }
        ));
        assert!(t.stall.is_none());
        assert_eq!(stats.in_flow.load(Ordering::Relaxed), 0);
        assert_eq!(stats.counters.flow_stalls.load(Ordering::Relaxed), 1);
        assert!(stats.flow_micros.load(Ordering::Relaxed) >= 8_000);
        // Let go, it starts with no routes: the next round is weighed on its own.
        assert!(!t.check(&stats, at(9), || 0, |_| panic!("no route published since")));
    }

    #[test]
    fn a_throttle_with_limit_zero_never_looks_or_stops() {
        let stats = Arc::new(Stats::default());
        let mut t = Throttle::new(0);
        for _ in 0..100 {
            t.note(&push("jobs"));
        }
        assert!(!t.check(&stats, Instant::now(), || u64::MAX, |_| panic!("looked with flow control off")));
        assert!(!t.recheck(Instant::now(), || u64::MAX, |_| Some(u64::MAX)));
        assert_eq!(stats.counters.flow_stalls.load(Ordering::Relaxed), 0);
    }

    /// A queue whose consumers all went is no longer weighed: its stopped publisher goes on.
    #[test]
    fn a_stopped_publisher_is_let_go_when_its_queue_loses_its_consumers() {
        let stats = Arc::new(Stats::default());
        let mut t = Throttle::new(10);
        t.note(&push("jobs"));
        assert!(t.check(&stats, Instant::now(), || 0, |_| Some(500)));
        assert!(!t.recheck(Instant::now(), || 0, |_| None));
        assert_eq!(stats.in_flow.load(Ordering::Relaxed), 0);
    }

    /// A connection closed while stopped takes its stall out of the gauge.
    #[test]
    fn a_throttle_dropped_while_stopped_leaves_the_gauge() {
        let stats = Arc::new(Stats::default());
        let mut t = Throttle::new(1);
        t.note(&push("jobs"));
        assert!(t.check(&stats, Instant::now(), || 0, |_| Some(1)));
        assert_eq!(stats.in_flow.load(Ordering::Relaxed), 1);
        drop(t);
        assert_eq!(stats.in_flow.load(Ordering::Relaxed), 0);
    }

    async fn propose(node: &Node, cmd: Command) -> Reply {
        tokio::time::timeout(WAIT, node.propose(cmd)).await.expect("applied in time").expect("applied")
    }

    async fn until(what: &str, mut check: impl FnMut() -> bool) {
        tokio::time::timeout(WAIT, async {
            while !check() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
    }

    /// What RESP's `Q.PUSH` goes through ([`Throttle::wait`], from `Session::flow_wait`), on a
    /// real node: pushes that take a consumed queue to the limit hold the pusher until the
    /// consumer has taken it below half; a queue nobody consumes holds nobody.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pusher_waits_until_the_consumer_takes_the_backlog_below_half() {
        let node = tokio::time::timeout(WAIT, Node::start(NodeConfig::default()))
            .await
            .expect("start in time")
            .expect("start");
        let stats = Arc::new(Stats::default());
        let (_trigger, shutdown) = crate::shutdown::channel();
        let open = Command::OpenSession { host: HostId(1), secret: 1, timeout: 60_000 };
        let Reply::Session(worker) = propose(&node, open).await else { panic!("a session") };
        let ready = |node: &Node| node.read_applied(|s| s.flow_backlog("", "jobs", None)).unwrap();

        // No consumer: ten times the limit goes through without a stop.
        let mut pusher = Throttle::new(4);
        for _ in 0..40 {
            propose(&node, push("jobs")).await;
            pusher.note(&push("jobs"));
        }
        tokio::time::timeout(WAIT, pusher.wait(&node, &stats, None, &shutdown)).await.expect("not held");
        assert_eq!(stats.counters.flow_stalls.load(Ordering::Relaxed), 0);

        // A consumer with credit 1 and no acks: 39 stay ready, over the limit of 4.
        let consume = Consume {
            queue: "jobs".into(),
            session: worker,
            credit: 1,
            lease: None,
            auto_ack: false,
            exclusive: false,
            pool: None,
        };
        propose(&node, Command::Consume(consume)).await;
        assert_eq!(ready(&node), Some(39));
        propose(&node, push("jobs")).await;
        pusher.note(&push("jobs"));
        let waiting = tokio::spawn({
            let (node, stats) = (node.clone(), stats.clone());
            async move { pusher.wait(&node, &stats, None, &shutdown).await }
        });
        until("the pusher is stopped", || stats.in_flow.load(Ordering::Relaxed) == 1).await;
        assert_eq!(stats.counters.flow_stalls.load(Ordering::Relaxed), 1);

        // Drained to half the limit (2): still held, however many times it looks again.
        let pop = |count| {
            Command::Pop(turnstile_core::Pop {
                queue: "jobs".into(),
                session: Some(worker),
                count,
                wait: 0,
                lease: None,
                auto_ack: true,
                keep: false,
            })
        };
        propose(&node, pop(38)).await;
        assert_eq!(ready(&node), Some(2));
        let looked = stats.flow_micros.load(Ordering::Relaxed);
        until("two more looks", || stats.flow_micros.load(Ordering::Relaxed) > looked).await;
        let looked = stats.flow_micros.load(Ordering::Relaxed);
        until("two more looks", || stats.flow_micros.load(Ordering::Relaxed) > looked).await;
        assert!(!waiting.is_finished(), "let go at half the limit");
        assert_eq!(stats.in_flow.load(Ordering::Relaxed), 1);

        // One more taken: below half, let go.
        propose(&node, pop(1)).await;
        tokio::time::timeout(WAIT, waiting).await.expect("let go below half").unwrap();
        assert_eq!(stats.in_flow.load(Ordering::Relaxed), 0);
        assert_eq!(stats.counters.flow_stalls.load(Ordering::Relaxed), 1);
        node.shutdown().await.unwrap();
    }
}
