//! The client against a real server (started in this process on a free port, temp data dir).
//!
//! The server runs on a manual clock: its leases, waits and delays end only when a test moves
//! that clock, never while a test runs in real time. What keeps real time is the client's own
//! timers (a guard renewing, a delivery extending itself, reconnect backoff).

use std::net::SocketAddr;
use std::time::Duration;

use tempfile::TempDir;
use tokio::time::{Instant, sleep, timeout};
use turnstile_client::{Client, Cmd, Error, Frame, Lost, Overflow};
use turnstile_server::{Clock, Config, Embedded, ManualClock};

/// Where every test's server clock starts: any fixed time will do, a fixed one reads the same
/// in every run.
const START_MS: u64 = 1_700_000_000_000;

struct TestServer {
    server: Embedded,
    /// The server's clock.
    clock: ManualClock,
    dir: TempDir,
}

impl TestServer {
    async fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        TestServer::start_in(dir, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// On `dir` with the RESP listener on `resp_addr` (the other listeners on free ports).
    async fn start_in(dir: TempDir, resp_addr: SocketAddr) -> TestServer {
        let config = Config { resp_addr, ..Embedded::config(dir.path()) };
        let (clock, hand) = Clock::manual(START_MS);
        let server = Embedded::start(config, clock).await.unwrap();
        TestServer { server, clock: hand, dir }
    }

    fn addr(&self) -> String {
        self.server.resp_addr.to_string()
    }

    async fn client(&self) -> Client {
        Client::connect(&format!("turnstile://{}", self.addr())).await.unwrap()
    }

    /// Stops gracefully (connections are closed) and gives back the data dir.
    async fn stop(self) -> TempDir {
        self.server.stop().await.unwrap();
        self.dir
    }
}

/// Polls `check` until it holds, for at most 5 s.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        sleep(Duration::from_millis(20)).await;
    }
}

const MS: fn(u64) -> Duration = Duration::from_millis;

/// The index of the last log entry the server applied (`INFO raft`).
async fn applied_index(client: &Client) -> u64 {
    let Frame::Bulk(text) = client.call(Cmd::new("INFO").arg("raft")).await.unwrap() else {
        panic!("INFO is a bulk string")
    };
    let text = String::from_utf8(text.to_vec()).unwrap();
    let value = text.lines().find_map(|line| line.strip_prefix("applied_index:"));
    value.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no applied_index in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_renews_its_lease_past_several_ttls() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let lease = MS(600);
    let guard = client.lock("renewed").ttl(lease).acquire().await.unwrap();
    let first_valid_until = guard.valid_until();
    // The guard renews on its own timer, a third of a lease in real time. The server's time moves
    // two thirds of a lease at a time, each step once a renewal has landed at the time the last
    // step reached (the full lease is left then): five steps, more than three leases. A hold
    // nobody renewed would have run out at the second step.
    for _ in 0..5 {
        server.clock.advance(400);
        eventually("the guard renewed at the server's new time", async || {
            let info = client.lock_info("renewed", false).await.unwrap();
            info.holders.first().is_some_and(|holder| holder.expires_in == lease)
        })
        .await;
    }

    assert_eq!(guard.is_lost(), None);
    assert!(guard.valid_until() > first_valid_until, "the guard's validity moved on");
    let info = client.lock_info("renewed", false).await.unwrap();
    assert_eq!(info.holders.len(), 1);
    assert_eq!(info.holders[0].fencing_token, guard.fencing_token());
    assert!(client.fence_check("renewed", guard.fencing_token()).await.unwrap());
    assert!(client.lock("renewed").try_acquire().await.unwrap().is_none(), "still held");

    let token = guard.fencing_token();
    assert!(guard.release().await.unwrap());
    let next = client.lock("renewed").acquire().await.unwrap();
    assert!(next.fencing_token() > token, "tokens increase");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_guard_releases_the_hold() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let guard = client.lock("dropped").ttl(Duration::from_secs(60)).acquire().await.unwrap();
    let token = guard.fencing_token();
    drop(guard);
    // Well before the 60 s lease: the drop released it.
    let next = client.lock("dropped").wait(Duration::from_secs(5)).acquire().await.unwrap();
    assert!(next.fencing_token() > token);
    assert!(!client.fence_check("dropped", token).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_fires_when_the_server_stops() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let guard = client.lock("watched").ttl(Duration::from_secs(30)).acquire().await.unwrap();
    let lost = guard.lost();
    server.stop().await;
    // The guard first tries to resume its session elsewhere, for the client's `retry_for` (5 s):
    // there is nowhere else, and the stop closed the session anyway.
    let why = timeout(Duration::from_secs(20), lost).await.expect("lost() fires well before the 30 s lease");
    assert!(matches!(&why, Lost::Disconnected(text) if text.contains("could not be resumed")), "{why:?}");
    assert_eq!(guard.is_lost(), Some(why));
    assert!(!guard.release().await.unwrap(), "nothing left to release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_fires_when_the_server_revokes_the_hold() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let guard = client.lock("revoked").ttl(MS(300)).keep().acquire().await.unwrap();
    // Someone with the token releases it behind the guard's back: the next renew says LOST.
    assert!(client.release("revoked", guard.fencing_token(), false).await.unwrap());
    let why = timeout(Duration::from_secs(5), guard.lost()).await.unwrap();
    assert!(matches!(why, Lost::Revoked(_)), "{why:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_holds_survive_their_connection_and_are_released_by_token() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let guard = client.lock("kept").ttl(Duration::from_secs(30)).keep().acquire().await.unwrap();
    let token = guard.fencing_token();
    // Let go of the guard without releasing (as `turnstile lock acquire` does before it exits).
    assert_eq!(guard.detach(), token);
    let other = server.client().await;
    assert!(other.fence_check("kept", token).await.unwrap());
    assert_eq!(
        other.renew("kept", token, Duration::from_secs(10), false).await.unwrap(),
        Duration::from_secs(10)
    );
    assert!(other.release("kept", token, false).await.unwrap());
    assert!(matches!(other.renew("kept", token, MS(100), false).await, Err(Error::Lost(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_deadlocks_are_distinct_errors() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let a1 = client.lock("L1").owner("a").acquire().await.unwrap();
    let b2 = client.lock("L2").owner("b").acquire().await.unwrap();

    // c waits in line (it shows among the waiters), then its wait runs out on the server's
    // clock: not a millisecond early, and then Timeout.
    let c_waits = tokio::spawn({
        let client = client.clone();
        async move { client.lock("L1").owner("c").wait(MS(500)).acquire().await }
    });
    let gives_up_in = async || {
        let info = client.lock_info("L1", false).await.unwrap();
        info.waiters.iter().find(|w| w.owner == "c").map(|w| w.gives_up_in)
    };
    eventually("c waits for L1", async || gives_up_in().await.is_some()).await;
    assert_eq!(gives_up_in().await, Some(MS(500)), "the server's clock stood still meanwhile");
    server.clock.advance(499);
    assert_eq!(gives_up_in().await, Some(MS(1)));
    server.clock.advance(1);
    let waited = timeout(Duration::from_secs(5), c_waits).await.expect("the wait ran out").unwrap();
    assert!(matches!(waited, Err(Error::Timeout(ref name)) if name == "L1"), "{waited:?}");
    assert!(client.lock_info("L1", false).await.unwrap().waiters.is_empty());

    // b waits for L1 (held by a); a asking for L2 (held by b) would close the cycle.
    let b_waits = tokio::spawn({
        let client = client.clone();
        async move { client.lock("L1").owner("b").wait(Duration::from_secs(10)).acquire().await }
    });
    eventually("b waits for L1", async || !client.lock_info("L1", false).await.unwrap().waiters.is_empty())
        .await;
    let refused = client.lock("L2").owner("a").wait(Duration::from_secs(10)).acquire().await;
    assert!(matches!(refused, Err(Error::Deadlock(_))), "{refused:?}");

    drop(a1);
    let b1 = b_waits.await.unwrap().unwrap();
    assert!(b1.fencing_token() > b2.fencing_token());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_locks_and_semaphores() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let r1 = client.lock("rw").shared().acquire().await.unwrap();
    let r2 = client.lock("rw").shared().acquire().await.unwrap();
    assert!(client.lock("rw").try_acquire().await.unwrap().is_none(), "no writer while readers hold");
    assert_eq!(client.lock_info("rw", false).await.unwrap().mode, "shared");
    drop((r1, r2));
    let writer = client.lock("rw").wait(Duration::from_secs(5)).acquire().await.unwrap();
    assert!(writer.release().await.unwrap());

    let p1 = client.semaphore("pool", 3).permits(2).acquire().await.unwrap();
    let p2 = client.semaphore("pool", 3).acquire().await.unwrap();
    assert!(client.semaphore("pool", 3).try_acquire().await.unwrap().is_none(), "all 3 permits taken");
    let info = client.lock_info("pool", true).await.unwrap();
    assert_eq!((info.limit, info.holders.iter().map(|h| h.permits).sum::<u32>()), (3, 3));
    assert!(p1.release().await.unwrap());
    let p3 = client.semaphore("pool", 3).permits(2).acquire().await.unwrap();
    assert!(p3.fencing_token() > p2.fencing_token());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_pop_ack_and_the_queue_admin_commands() {
    let server = TestServer::start().await;
    let client = server.client().await;
    assert!(client.create_queue("jobs").max_len(2).overflow(Overflow::Reject).create().await.unwrap());
    assert!(!client.create_queue("jobs").max_len(2).overflow(Overflow::Reject).create().await.unwrap());
    let low = client.push("jobs", "low").send().await.unwrap();
    let high = client.push("jobs", "high").priority(9).send().await.unwrap();
    assert!(matches!(client.push("jobs", "x").send().await, Err(Error::Full(_))));
    let peeked = client.peek("jobs", 10).await.unwrap();
    assert_eq!(peeked.iter().map(|m| m.id).collect::<Vec<_>>(), [high, low]);

    let popped = client.pop("jobs").count(10).fetch().await.unwrap();
    assert_eq!(
        popped.iter().map(|d| (d.id, &d.payload[..])).collect::<Vec<_>>(),
        [(high, &b"high"[..]), (low, b"low")]
    );
    let stats = client.queue_stats("jobs").await.unwrap();
    assert_eq!((stats.get("ready"), stats.get("in-flight")), (0, 2));
    let mut popped = popped.into_iter();
    assert!(popped.next().unwrap().ack().await.unwrap());
    let second = popped.next().unwrap();
    assert_eq!(second.extend(Duration::from_secs(60)).await.unwrap(), Duration::from_secs(60));
    assert!(second.nack(Duration::ZERO).await.unwrap());
    assert_eq!(client.queue_stats("jobs").await.unwrap().get("ready"), 1);
    assert_eq!(client.purge("jobs").await.unwrap(), 1);

    // Batches: one round trip, one id each; a dedup id stores one copy.
    let ids = client.push_batch("batch", ["a", "b", "c"]).await.unwrap();
    let ids: Vec<u64> = ids.into_iter().map(Result::unwrap).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let d1 = client.push("batch", "d").dedup("once").send().await.unwrap();
    assert_eq!(client.push("batch", "d again").dedup("once").send().await.unwrap(), d1);
    assert_eq!(client.queue_stats("batch").await.unwrap().get("ready"), 4);
    assert_eq!(client.queues().await.unwrap(), ["batch", "jobs"]);
    assert!(client.delete_queue("batch").await.unwrap());
    assert!(client.pop("batch").fetch().await.unwrap().is_empty());

    // Fenced pushes apply only under a live hold.
    let guard = client.lock("writer").acquire().await.unwrap();
    client.push("fenced", "ok").fence("writer", guard.fencing_token()).send().await.unwrap();
    let stale = guard.fencing_token();
    guard.release().await.unwrap();
    assert!(matches!(
        client.push("fenced", "late").fence("writer", stale).send().await,
        Err(Error::Fenced(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn popped_messages_outlive_the_connection_until_acked_elsewhere() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client.push("kept", "m").send().await.unwrap();
    let delivery = client.pop("kept").fetch().await.unwrap().pop().unwrap();
    let receipt = delivery.receipt;
    drop(client); // every connection of that client closes
    let other = server.client().await;
    assert_eq!(other.queue_stats("kept").await.unwrap().get("in-flight"), 1);
    assert_eq!(other.ack("kept", &[receipt]).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_respects_its_concurrency_limit() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client.push_batch("work", (0..10).map(|i| format!("m{i}"))).await.unwrap();
    let mut consumer = client.consume("work").concurrency(3).start().await.unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(consumer.next().await.unwrap().unwrap());
    }
    assert!(timeout(MS(300), consumer.next()).await.is_err(), "a fourth needs a free slot");
    assert_eq!(client.queue_stats("work").await.unwrap().get("in-flight"), 3);
    assert!(held.pop().unwrap().ack().await.unwrap());
    let fourth = timeout(Duration::from_secs(5), consumer.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(fourth.payload, "m3");

    // Stopping: nothing new, the deliveries handed out stay valid until finished.
    consumer.stop();
    held.push(fourth);
    for delivery in held {
        assert!(delivery.ack().await.unwrap());
    }
    consumer.finish().await;
    let stats = client.queue_stats("work").await.unwrap();
    assert_eq!((stats.get("acked"), stats.get("in-flight"), stats.get("ready")), (4, 0, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacked_messages_go_to_the_dead_letter_queue_after_max_deliveries() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client.create_queue("flaky").max_deliveries(3).dead_letter("flaky.dlq").create().await.unwrap();
    client.push("flaky", "poison").send().await.unwrap();
    let mut consumer = client.consume("flaky").start().await.unwrap();
    for attempt in 1..=3 {
        let delivery = consumer.next().await.unwrap().unwrap();
        assert_eq!(delivery.deliveries, attempt);
        assert!(delivery.nack(MS(10)).await.unwrap());
        // Back in the queue once its delay is over, on the server's clock.
        server.clock.advance(10);
    }
    eventually("the message is dead-lettered", async || {
        client.queue_stats("flaky.dlq").await.is_ok_and(|s| s.get("ready") == 1)
    })
    .await;
    assert_eq!(client.redrive("flaky.dlq", "flaky", None).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_extend_keeps_a_slow_handlers_message() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client.push("slow", "m").send().await.unwrap();
    let mut consumer = client.consume("slow").lease(MS(300)).auto_extend(true).start().await.unwrap();
    let delivery = consumer.next().await.unwrap().unwrap();
    // The delivery extends itself on its own timer, a third of a lease in real time. The server's
    // time moves two thirds of a lease at a time, each step once an extension has landed at the
    // time the last step reached: six steps, four leases. A lease nobody extended would have run
    // out at the second step. No delivery's lease can be read back, so "landed" is read from
    // the log: with one message held by a consumer of concurrency 1, only the extensions write.
    // Two entries after the step, as the first may have been stamped just before it; the second
    // was sent after the first was answered.
    for _ in 0..6 {
        server.clock.advance(200);
        let before = applied_index(&client).await;
        eventually("two extensions after the step", async || applied_index(&client).await >= before + 2)
            .await;
    }
    let stats = client.queue_stats("slow").await.unwrap();
    assert_eq!((stats.get("returned"), stats.get("in-flight")), (0, 1));
    assert!(delivery.ack().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_consumer_returns_its_unfinished_messages() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client.push("crash", "m").send().await.unwrap();
    let mut consumer = client.consume("crash").start().await.unwrap();
    let delivery = consumer.next().await.unwrap().unwrap();
    // Dropped unfinished, with its consumer: the consumer's connection (the deliveries'
    // session) closes, and the message goes back at once rather than when its lease ends (the
    // server's clock stands still: the lease never ends here). The consumer goes first: told to
    // stop only after the delivery freed its slot, it may already have sent its next poll, and
    // that ends when its wait runs out on the server's clock.
    drop(consumer);
    drop(delivery);
    eventually("the message is ready again", async || {
        client.queue_stats("crash").await.unwrap().get("ready") == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_follows_notleader_redirects() {
    let server = TestServer::start().await;
    // A "follower" that answers PING and redirects everything else to the real server.
    let follower = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let follower_addr = follower.local_addr().unwrap().to_string();
    let leader = server.addr();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = follower.accept().await {
            let leader = leader.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    let reply = if buf[..n].windows(4).any(|w| w == b"PING") {
                        "+PONG\r\n".to_owned()
                    } else {
                        format!("-NOTLEADER {leader}\r\n")
                    };
                    if socket.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    // The follower comes first in the list: the redirect, to the other address, is what gets a
    // command to the leader. (A redirect to an address the client was not given is not followed:
    // nodes of a cluster name the leader by its cluster address, not by its RESP one.)
    let client = Client::connect(&format!("turnstile://{follower_addr},{}", server.addr())).await.unwrap();
    let id = client.push("redirected", "m").send().await.unwrap();
    let direct = server.client().await;
    assert_eq!(direct.peek("redirected", 1).await.unwrap()[0].id, id);
    // Dedicated connections (guards) follow it too.
    let guard = client.lock("redirected").acquire().await.unwrap();
    assert!(direct.fence_check("redirected", guard.fencing_token()).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reconnects_after_a_server_restart() {
    let server = TestServer::start().await;
    let addr = server.server.resp_addr;
    let client = server.client().await;
    client.push("restart", "before").send().await.unwrap();
    let dir = server.stop().await;
    // Down for a moment; the next call waits (with backoff) for it to come back. The moment is
    // real time for the client's reconnect loop to fail in a few times; the server's time has no
    // part in it.
    let restarted = tokio::spawn(async move {
        sleep(MS(300)).await;
        TestServer::start_in(dir, addr).await
    });
    let id = client.push("restart", "after").send().await.unwrap();
    let _server = restarted.await.unwrap();
    assert_eq!(client.queue_stats("restart").await.unwrap().get("ready"), 2);
    assert!(id > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_nothing_says_so() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let options = turnstile_client::Options { retry_for: MS(200), ..Default::default() };
    let err = Client::with_options(&addr.to_string(), options).await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("is `turnstile server` running?"), "{err}");
    assert!(matches!(Client::connect("redis://x:1").await, Err(Error::InvalidAddress(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_commands_and_error_replies() {
    let server = TestServer::start().await;
    let client = server.client().await;
    assert_eq!(client.call(Cmd::new("SET").arg("k").arg("v")).await.unwrap(), Frame::Simple("OK".into()));
    let err = client.call(Cmd::new("NOPE")).await.unwrap_err();
    assert_eq!(err.code(), Some("ERR"));
    // The connection that got the error is still good.
    assert_eq!(client.call(Cmd::new("GET").arg("k")).await.unwrap(), Frame::Bulk("v".into()));
}
