//! One client: ops back to back on its own connection until the run ends, and what one op sends
//! to Turnstile, Redis or etcd for each workload.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use bytes::Bytes;
use hdrhistogram::Histogram;
use turnstile_client::{Cmd, Connection, Frame};

use super::{Peer, Run, connect};
use crate::bench::args::Workload;
use crate::bench::etcd;
use crate::bench::report::shorten;

/// An op not answered within this counts as an error and its connection is replaced: a server
/// that stops answering must not hang the bench.
pub(super) const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause after a failed reconnect, so a server that is gone is not hammered.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// Lock leases, in ms: far longer than an op, so no hold expires while it is measured.
const LEASE_MS: u64 = 30_000;

/// How long a client, once done, waits for etcd to revoke its lease.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The usual Redis lock release: delete the key only if it still holds this client's value. It
/// does what redis-py's `Lock.release` script does (and python-redis-lock's, less its signal).
pub(super) const RELEASE_SCRIPT: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// What one client measured.
#[derive(Debug)]
pub(super) struct ClientStats {
    /// Microseconds per op.
    pub(super) latency: Histogram<u64>,
    pub(super) ops: u64,
    pub(super) misses: u64,
    pub(super) errors: u64,
}

/// What a client talks over: RESP to Turnstile and Redis, an HTTP session to etcd.
#[derive(Debug)]
pub(super) enum Link {
    Resp(Connection),
    Etcd(etcd::Session),
}

impl Link {
    fn is_broken(&self) -> bool {
        match self {
            Link::Resp(conn) => conn.is_broken(),
            Link::Etcd(session) => session.is_broken(),
        }
    }

    /// Ends the link: an etcd session revokes its lease (the lock it may hold goes with it), a
    /// RESP connection just closes (the server releases its holds).
    pub(super) async fn close(self) {
        if let Link::Etcd(session) = self {
            session.close(CLOSE_TIMEOUT).await;
        }
    }
}

/// One client: ops back to back on its connection until the run ends. An error is counted and
/// the op is not; a connection the error broke is replaced before the next op.
pub(super) async fn client(mut op: Op, conn: Link, run: Arc<Run>) -> ClientStats {
    // Auto-resizing: it grows only as far as the latencies seen, which keeps many clients cheap.
    let latency = Histogram::new(3).expect("3 significant figures is a valid precision");
    let mut stats = ClientStats { latency, ops: 0, misses: 0, errors: 0 };
    let mut conn = Some(conn);
    loop {
        let started = Instant::now();
        if started >= run.end {
            if let Some(link) = conn {
                link.close().await;
            }
            return stats;
        }
        let Some(live) = conn.as_mut() else {
            match connect(&run.dial, &op.addr).await {
                Ok(fresh) => conn = Some(fresh),
                Err(e) => {
                    stats.errors += 1;
                    run.note_error(&e);
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
            }
            continue;
        };
        let measured = started >= run.measure_from;
        match tokio::time::timeout(OP_TIMEOUT, op.run(live)).await {
            Ok(Ok(Outcome::Done)) => {
                run.done.fetch_add(1, Ordering::Relaxed);
                if measured {
                    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    // `record` grows the histogram; `saturating_record` would clamp to its size.
                    if stats.latency.record(micros).is_err() {
                        stats.latency.saturating_record(micros);
                    }
                    stats.ops += 1;
                }
            }
            Ok(Ok(Outcome::Miss)) => stats.misses += u64::from(measured),
            Ok(Err(e)) => {
                stats.errors += 1;
                run.note_error(&e);
                if live.is_broken()
                    && let Some(broken) = conn.take()
                {
                    broken.close().await;
                }
            }
            Err(_) => {
                stats.errors += 1;
                run.note_error(&anyhow!("no reply within {}", humantime::format_duration(OP_TIMEOUT)));
                // The reply may still come: the connection is out of step, so it goes.
                conn = None;
            }
        }
    }
}

/// How a Redis lock cycle sends its release script.
#[derive(Debug, Clone, Copy)]
enum Release {
    /// The script's text, every time.
    Eval,
    /// Its SHA1, the script loaded beforehand: what client libraries send.
    Evalsha,
}

impl Release {
    fn command(self) -> &'static str {
        match self {
            Release::Eval => "EVAL",
            Release::Evalsha => "EVALSHA",
        }
    }
}

/// How an op ended when the server answered as expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    /// The lock was held by another client or the queue was empty: tried again next loop.
    Miss,
}

/// One client's op: what it sends, on which names.
#[derive(Debug)]
pub(super) struct Op {
    pub(super) peer: Peer,
    /// The address this client connects (and reconnects) to.
    pub(super) addr: String,
    pub(super) workload: Workload,
    pub(super) client: u64,
    pub(super) key: Bytes,
    /// Redis queues: the list a moved message waits in until `LREM` (the "ack") removes it.
    pub(super) processing: Bytes,
    /// Multi: the key each transaction's `INCR` bumps.
    pub(super) counter: Bytes,
    /// Evalsha: the release script's SHA1, as `SCRIPT LOAD` answered it.
    pub(super) script_sha: Bytes,
    /// kv: the value every `SET` writes (one buffer shared by all clients).
    pub(super) value: Bytes,
    /// Queues: the payload size.
    pub(super) size: usize,
    /// Turnstile locks: `WAIT` for an acquire, in ms; 0 sends none.
    pub(super) wait_ms: u64,
    /// Makes Redis lock values unique across runs.
    pub(super) nonce: u64,
    /// Ops this client started: makes payloads and lock values unique within the run.
    pub(super) count: u64,
}

impl Op {
    async fn run(&mut self, link: &mut Link) -> anyhow::Result<Outcome> {
        self.count += 1;
        let conn = match link {
            Link::Resp(conn) => conn,
            Link::Etcd(session) => return self.etcd_lock(session).await,
        };
        match (self.workload, self.peer) {
            (Workload::Locks, Peer::Turnstile) => self.turnstile_lock(conn).await,
            (Workload::Locks, Peer::Redis) => self.redis_lock(conn, Release::Eval).await,
            (Workload::Evalsha, _) => self.redis_lock(conn, Release::Evalsha).await,
            (Workload::Multi, _) => self.multi(conn).await,
            (Workload::Queues, Peer::Turnstile) => self.turnstile_queue(conn).await,
            (Workload::Queues, Peer::Redis) => self.redis_queue(conn).await,
            (Workload::Kv, _) => self.kv(conn).await,
            (Workload::Amqp | Workload::Failover, _) | (_, Peer::Etcd) => {
                Err(anyhow!("{} on {} does not run over RESP", self.workload.name(), self.peer.scheme()))
            }
        }
    }

    /// etcd's lock (waiting in line while another client holds it) and unlock.
    async fn etcd_lock(&self, session: &mut etcd::Session) -> anyhow::Result<Outcome> {
        match self.workload {
            Workload::Locks => session.lock_cycle(&self.key).await.map(|()| Outcome::Done),
            other => Err(anyhow!("etcd runs the locks workload only, not {}", other.name())),
        }
    }

    /// `LOCK.ACQUIRE name ttl [WAIT ms]` → `[token, lease-ms]`, or nil while another client
    /// holds it (past the wait); then `LOCK.RELEASE name token` → 1.
    async fn turnstile_lock(&self, conn: &mut Connection) -> anyhow::Result<Outcome> {
        let acquire = Cmd::new("LOCK.ACQUIRE").arg(self.key.clone()).arg(LEASE_MS);
        let acquire = if self.wait_ms > 0 { acquire.arg("WAIT").arg(self.wait_ms) } else { acquire };
        let reply = call(conn, acquire).await?;
        if is_nil(&reply) {
            return Ok(Outcome::Miss);
        }
        let token = granted_token(&reply).ok_or_else(|| unexpected("LOCK.ACQUIRE", &reply))?;
        let released = call(conn, Cmd::new("LOCK.RELEASE").arg(self.key.clone()).arg(token)).await?;
        expect_one("LOCK.RELEASE", &released)?;
        Ok(Outcome::Done)
    }

    /// `SET name value NX PX ttl` → `+OK`, or nil while another client holds it; then the
    /// compare-and-delete script, by `EVAL` or `EVALSHA` → 1.
    async fn redis_lock(&self, conn: &mut Connection, by: Release) -> anyhow::Result<Outcome> {
        let value = Bytes::from(format!("{:016x}:{}:{}", self.nonce, self.client, self.count));
        let set = Cmd::new("SET").arg(self.key.clone()).arg(value.clone()).arg("NX").arg("PX").arg(LEASE_MS);
        match call(conn, set).await? {
            Frame::Simple(ok) if ok == "OK" => {}
            reply if is_nil(&reply) => return Ok(Outcome::Miss),
            reply => return Err(unexpected("SET", &reply)),
        }
        let release = match by {
            Release::Eval => Cmd::new("EVAL").arg(RELEASE_SCRIPT),
            Release::Evalsha => Cmd::new("EVALSHA").arg(self.script_sha.clone()),
        };
        let released = call(conn, release.arg(1u8).arg(self.key.clone()).arg(value)).await?;
        expect_one(by.command(), &released)?;
        Ok(Outcome::Done)
    }

    /// `MULTI`, `SET key value`, `INCR key:n`, `GET key`, `EXEC` in one write → `+OK`, three
    /// `+QUEUED`, then `[OK, n, value]`: the value this transaction wrote, whoever shares the key.
    async fn multi(&self, conn: &mut Connection) -> anyhow::Result<Outcome> {
        let transaction = [
            Cmd::new("MULTI"),
            Cmd::new("SET").arg(self.key.clone()).arg(self.value.clone()),
            Cmd::new("INCR").arg(self.counter.clone()),
            Cmd::new("GET").arg(self.key.clone()),
            Cmd::new("EXEC"),
        ];
        let names = ["MULTI", "SET", "INCR", "GET", "EXEC"];
        let mut replies = names.into_iter().zip(conn.pipeline(&transaction).await.context("MULTI")?);
        for (name, reply) in replies.by_ref().take(names.len() - 1) {
            let expected = if name == "MULTI" { "OK" } else { "QUEUED" };
            match reply.context(name)? {
                Frame::Simple(text) if text == expected => {}
                reply => return Err(unexpected(name, &reply)),
            }
        }
        let exec = replies.next().context("no reply to EXEC")?.1.context("EXEC")?;
        match &exec {
            Frame::Array(results) => match results.as_slice() {
                [Frame::Simple(ok), Frame::Integer(_), Frame::Bulk(value)]
                    if ok == "OK" && *value == self.value =>
                {
                    Ok(Outcome::Done)
                }
                _ => Err(unexpected("EXEC", &exec)),
            },
            _ => Err(unexpected("EXEC", &exec)),
        }
    }

    /// `Q.PUSH q payload` → id; `Q.POP q` → `[[id, receipt, payload, deliveries]]`, or nil when
    /// other clients took what was there; `Q.ACK q receipt` → 1.
    async fn turnstile_queue(&self, conn: &mut Connection) -> anyhow::Result<Outcome> {
        let pushed = call(conn, Cmd::new("Q.PUSH").arg(self.key.clone()).arg(self.payload())).await?;
        expect_integer("Q.PUSH", &pushed)?;
        let popped = call(conn, Cmd::new("Q.POP").arg(self.key.clone())).await?;
        if is_nil(&popped) {
            return Ok(Outcome::Miss);
        }
        let receipt = popped_receipt(&popped).ok_or_else(|| unexpected("Q.POP", &popped))?;
        let acked = call(conn, Cmd::new("Q.ACK").arg(self.key.clone()).arg(receipt)).await?;
        expect_one("Q.ACK", &acked)?;
        Ok(Outcome::Done)
    }

    /// `LPUSH q payload`; `LMOVE q q:processing RIGHT LEFT` → the oldest payload, or nil when
    /// other clients took what was there; `LREM q:processing 1 payload` → 1.
    async fn redis_queue(&self, conn: &mut Connection) -> anyhow::Result<Outcome> {
        let pushed = call(conn, Cmd::new("LPUSH").arg(self.key.clone()).arg(self.payload())).await?;
        expect_integer("LPUSH", &pushed)?;
        let lmove =
            Cmd::new("LMOVE").arg(self.key.clone()).arg(self.processing.clone()).arg("RIGHT").arg("LEFT");
        let payload = match call(conn, lmove).await? {
            Frame::Bulk(payload) => payload,
            reply if is_nil(&reply) => return Ok(Outcome::Miss),
            reply => return Err(unexpected("LMOVE", &reply)),
        };
        let removed = call(conn, Cmd::new("LREM").arg(self.processing.clone()).arg(1u8).arg(payload)).await?;
        expect_one("LREM", &removed)?;
        Ok(Outcome::Done)
    }

    /// `SET key value` → `+OK`; `GET key` → a value of the size written (with shared keys,
    /// maybe another client's: they are all the same size).
    async fn kv(&self, conn: &mut Connection) -> anyhow::Result<Outcome> {
        match call(conn, Cmd::new("SET").arg(self.key.clone()).arg(self.value.clone())).await? {
            Frame::Simple(ok) if ok == "OK" => {}
            reply => return Err(unexpected("SET", &reply)),
        }
        match call(conn, Cmd::new("GET").arg(self.key.clone())).await? {
            Frame::Bulk(value) if value.len() == self.value.len() => Ok(Outcome::Done),
            reply => Err(unexpected("GET", &reply)),
        }
    }

    /// A queue payload of `size` bytes that starts with this client's id and op count, so every
    /// message is distinct, as real ones are. (Below 16 bytes the tag is cut and payloads may
    /// repeat; `LREM` then removes an equal one, so the lists still balance.)
    fn payload(&self) -> Bytes {
        let mut payload = vec![b'.'; self.size];
        let tag = [self.client.to_be_bytes(), self.count.to_be_bytes()].concat();
        let n = tag.len().min(payload.len());
        payload[..n].copy_from_slice(&tag[..n]);
        Bytes::from(payload)
    }
}

/// Sends one command; an error reply or a broken connection is an error naming the command.
pub(super) async fn call(conn: &mut Connection, cmd: Cmd) -> anyhow::Result<Frame> {
    let reply = conn.call(&cmd).await;
    reply.with_context(|| String::from_utf8_lossy(&cmd.args()[0]).into_owned())
}

/// Nil, as a bulk (`$-1`) or as an array (`*-1`): servers differ in which they send.
fn is_nil(reply: &Frame) -> bool {
    matches!(reply, Frame::Null | Frame::NullArray)
}

/// The token of a `LOCK.ACQUIRE` grant, `[token, lease-ms]`.
fn granted_token(reply: &Frame) -> Option<i64> {
    let Frame::Array(grant) = reply else { return None };
    let [Frame::Integer(token), Frame::Integer(_lease)] = grant.as_slice() else { return None };
    Some(*token)
}

/// The receipt of the one delivery in a `Q.POP` reply, `[[id, receipt, payload, deliveries]]`.
fn popped_receipt(reply: &Frame) -> Option<i64> {
    let Frame::Array(deliveries) = reply else { return None };
    let [Frame::Array(delivery)] = deliveries.as_slice() else { return None };
    let [Frame::Integer(_id), Frame::Integer(receipt), Frame::Bulk(_payload), Frame::Integer(_deliveries)] =
        delivery.as_slice()
    else {
        return None;
    };
    Some(*receipt)
}

fn expect_integer(command: &str, reply: &Frame) -> anyhow::Result<()> {
    match reply {
        Frame::Integer(_) => Ok(()),
        _ => Err(unexpected(command, reply)),
    }
}

fn expect_one(command: &str, reply: &Frame) -> anyhow::Result<()> {
    match reply {
        Frame::Integer(1) => Ok(()),
        _ => Err(unexpected(command, reply)),
    }
}

/// A reply of the wrong shape.
fn unexpected(command: &str, reply: &Frame) -> anyhow::Error {
    anyhow!("{command}: unexpected reply {}", shorten(&format!("{reply:?}")))
}
