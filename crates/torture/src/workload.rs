//! The clients of a run: each is a thread doing one operation at a time against one node, over
//! RESP or HTTP, and recording every operation it starts. A client moves on to the next node
//! whenever an operation's outcome is unknown (its connection is dropped: a reply still in
//! flight can never be mistaken for the next one's).
//!
//! What an error means is decided here, by the contract the checkers rely on: `Fail` only when
//! the server said the operation certainly did not happen (`-FENCED`, `-LOST`, `-DEADLOCK`,
//! `-TRYAGAIN`, `-NOTLEADER`, a wait that ran out, an ack of nothing); every other error (a
//! timeout, a broken connection, `-CLUSTERDOWN`, "outcome unknown") is `Info`.
//!
//! ```text
//!  client ─► lock cycle:  ACQUIRE (KEEP) ─► [SET f FENCE l token | RENEW]* ─► RELEASE
//!         ─► sem cycle:   SEM.ACQUIRE s0 2 ─► [RENEW] ─► RELEASE
//!         ─► KV:          GET | SET | SET NX          on k0..k9
//!         ─► queues:      Q.PUSH (DELAY, PRIORITY, GROUP) | Q.POP ─► Q.ACK | Q.NACK
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use turnstile_check::{Delivery, Op, Pending, Process, Recorder, Value};

use crate::cluster::{Addrs, Directory};

/// The exclusive locks, each guarding its fenced key `f<k>`.
pub const LOCKS: usize = 3;
/// The semaphore `s0` and its permits.
pub const SEMAPHORE: &str = "s0";
pub const SEMAPHORE_LIMIT: u32 = 2;
/// The plain keys `k0..k9`.
pub const KEYS: usize = 10;
/// A lock's lease: shorter than a pause, so holds do run out under the nemesis.
pub const LEASE_MS: u64 = 1500;
/// A delivery's lease (the queues' `LEASE`).
pub const DELIVERY_LEASE_MS: u64 = 1000;
/// The longest `DELAY` of a push.
pub const MAX_DELAY_MS: u64 = 800;
/// How much earlier than its lease a client stops using a hold, by its own clock.
const MARGIN_MS: u64 = 200;
/// How long a client waits for a reply before it calls the outcome unknown.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(4);

/// The queues and where their dead letters go. `qg` carries groups (and no priorities or
/// delays, so each group's order is the push order); `qa` is the AMQP clients' queue.
pub const QUEUES: [(&str, &str); 3] = [("q0", "q0-dlq"), ("qg", "qg-dlq"), ("qa", "qa-dlq")];
/// Deliveries before a message goes to its dead-letter queue.
pub const MAX_DELIVER: u32 = 3;

/// What every client shares.
#[derive(Debug, Clone)]
pub struct Shared {
    pub recorder: Recorder,
    pub directory: Directory,
    pub stop: Arc<AtomicBool>,
}

/// How an operation ended, per the contract.
enum Ended<T> {
    Ok(T),
    /// Certainly not applied.
    Fail(String),
    /// Unknown.
    Info(String),
}

/// A client thread: one process at a time (a new process after each unknown outcome, since the
/// old operation may still take effect), bound to a rotating node.
pub struct Client {
    index: u64,
    /// Processes are `index + stride * generation`: distinct from every other client's.
    stride: u64,
    generation: u64,
    shared: Shared,
    rng: fastrand::Rng,
    node: usize,
    /// The RESP connection to the bound node, while it works.
    resp: Option<redis::Connection>,
    /// Numbers the client's unique values and message ids.
    counter: u64,
}

impl Client {
    pub fn new(index: u64, stride: u64, seed: u64, shared: Shared) -> Client {
        let rng = fastrand::Rng::with_seed(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index);
        let node = usize::try_from(index).unwrap_or(0);
        Client { index, stride, generation: 0, shared, rng, node, resp: None, counter: 0 }
    }

    /// The process the client records as now.
    fn process(&self) -> Process {
        self.index.wrapping_add(self.stride.wrapping_mul(self.generation))
    }

    fn unique(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}-{}", self.index, self.counter)
    }

    fn now_ms(&self) -> u64 {
        self.shared.recorder.now() / 1_000_000
    }

    /// Runs until the stop flag is set.
    pub fn run(mut self) {
        while !self.shared.stop.load(Ordering::Relaxed) {
            let roll = self.rng.u32(0..100);
            match roll {
                0..=19 => self.lock_cycle(false),
                20..=24 => self.lock_cycle(true),
                25..=32 => self.semaphore_cycle(),
                33..=57 => self.kv(),
                58..=72 => {
                    let http = self.rng.u32(0..4) == 0;
                    self.push(http);
                }
                73..=92 => {
                    let http = self.rng.u32(0..4) == 0;
                    self.pop(http);
                }
                _ => {
                    // A pause between operations, so the nodes' own work (ticks, snapshots)
                    // interleaves with the clients'.
                    std::thread::sleep(Duration::from_millis(self.rng.u64(5..50)));
                }
            }
        }
    }

    /// The addresses of the node the client is bound to, moving on past nodes that are down.
    fn addrs(&mut self) -> Option<Addrs> {
        let directory = self.shared.directory.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = directory.len();
        for step in 0..n {
            let i = (self.node + step) % n;
            if let Some(addrs) = &directory[i] {
                self.node = i;
                return Some(addrs.clone());
            }
        }
        None
    }

    /// After an unknown outcome: drop the connection, take the next node, and record as a new
    /// process from now on.
    fn abandon(&mut self) {
        self.resp = None;
        self.node += 1;
        self.generation += 1;
        // While a leader is missing every node fails at once; retrying at full speed would fill
        // the history with unknown writes, which the linearizability search pays for.
        std::thread::sleep(Duration::from_millis(self.rng.u64(50..250)));
    }

    /// A RESP connection to the bound node (opened if needed).
    fn resp(&mut self) -> Option<&mut redis::Connection> {
        if self.resp.is_none() {
            let Some(addrs) = self.addrs() else {
                std::thread::sleep(Duration::from_millis(50));
                return None;
            };
            let con = redis::Client::open(format!("redis://{}/", addrs.resp))
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
                .and_then(|con| {
                    con.set_read_timeout(Some(REPLY_TIMEOUT))?;
                    con.set_write_timeout(Some(REPLY_TIMEOUT))?;
                    Ok(con)
                });
            match con {
                Ok(con) => self.resp = Some(con),
                Err(_) => {
                    self.node += 1;
                    std::thread::sleep(Duration::from_millis(20));
                    return None;
                }
            }
        }
        self.resp.as_mut()
    }

    /// Sends one RESP command on the bound node; `None` when no node could be reached (nothing
    /// was sent, nothing is recorded).
    fn command(&mut self, cmd: &redis::Cmd) -> Option<Result<redis::Value, redis::RedisError>> {
        let con = self.resp()?;
        Some(cmd.query::<redis::Value>(con))
    }

    /// Records `op`, runs it, completes it as `judge` says, and moves on after an unknown end.
    fn record<T>(
        &mut self,
        op: Op,
        run: impl FnOnce(&mut Client) -> Ended<T>,
        value: impl FnOnce(&T) -> Value,
    ) -> Option<T> {
        let pending: Pending = self.shared.recorder.invoke(self.process(), op);
        match run(self) {
            Ended::Ok(t) => {
                pending.ok(value(&t));
                Some(t)
            }
            Ended::Fail(why) => {
                pending.fail(why);
                None
            }
            Ended::Info(why) => {
                pending.info(why);
                self.abandon();
                None
            }
        }
    }

    /// Runs a RESP command for `record`, judging its reply with `reply`.
    fn resp_op<T>(&mut self, cmd: &redis::Cmd, reply: impl FnOnce(redis::Value) -> Ended<T>) -> Ended<T> {
        match self.command(cmd) {
            None => Ended::Fail("no node reachable; nothing sent".to_owned()),
            Some(Ok(value)) => reply(value),
            Some(Err(e)) => judge_code(e.code().unwrap_or(""), &e.to_string()),
        }
    }

    // ---- locks ----

    fn lock_cycle(&mut self, http: bool) {
        let k = self.rng.usize(0..LOCKS);
        let lock = format!("l{k}");
        self.hold(&lock, None, http, |client, token| {
            let key = format!("f{k}");
            let value = client.unique("w");
            client.fenced_set(&key, &value, &lock_name(k), token);
        });
    }

    fn semaphore_cycle(&mut self) {
        self.hold(SEMAPHORE, Some(SEMAPHORE_LIMIT), false, |client, _| {
            std::thread::sleep(Duration::from_millis(client.rng.u64(10..200)));
        });
    }

    /// Acquires `lock`, then up to three times acts with `act` or renews while the hold is valid
    /// by the client's own clock, then releases it.
    fn hold(&mut self, lock: &str, limit: Option<u32>, http: bool, mut act: impl FnMut(&mut Client, u64)) {
        if self.resp().is_none() && !http {
            return;
        }
        let sent = self.now_ms();
        let op = Op::Acquire { lock: lock.to_owned(), lease_ms: LEASE_MS, limit };
        let wait = self.rng.u64(100..1000);
        let token = if http {
            let body = match limit {
                Some(n) => serde_json::json!({"ttl_ms": LEASE_MS, "wait_ms": wait, "limit": n}),
                None => serde_json::json!({"ttl_ms": LEASE_MS, "wait_ms": wait}),
            };
            let path =
                format!("/api/{}/{lock}/acquire", if limit.is_some() { "semaphores" } else { "locks" });
            self.record(op, |c| c.http_op("POST", &path, &body, acquire_json), |t| Value::Token(*t))
        } else {
            let mut cmd = match limit {
                Some(n) => {
                    let mut cmd = redis::cmd("SEM.ACQUIRE");
                    cmd.arg(lock).arg(n);
                    cmd
                }
                None => {
                    let mut cmd = redis::cmd("LOCK.ACQUIRE");
                    cmd.arg(lock);
                    cmd
                }
            };
            cmd.arg(LEASE_MS).arg("WAIT").arg(wait).arg("KEEP");
            self.record(op, |c| c.resp_op(&cmd, acquire_reply), |t| Value::Token(*t))
        };
        let Some(token) = token else { return };
        let mut valid_until = sent + LEASE_MS - MARGIN_MS;
        for _ in 0..self.rng.u32(1..4) {
            if self.now_ms() >= valid_until {
                break;
            }
            if self.rng.u32(0..3) == 0 {
                let sent = self.now_ms();
                if self.renew(lock, limit, token, http) {
                    valid_until = sent + LEASE_MS - MARGIN_MS;
                } else {
                    break;
                }
            } else {
                act(self, token);
            }
        }
        self.release(lock, limit, token, http);
    }

    fn renew(&mut self, lock: &str, limit: Option<u32>, token: u64, http: bool) -> bool {
        let op = Op::Renew { lock: lock.to_owned(), token, lease_ms: LEASE_MS };
        let done = if http {
            let kind = if limit.is_some() { "semaphores" } else { "locks" };
            let body = serde_json::json!({"token": token, "ttl_ms": LEASE_MS});
            self.record(
                op,
                |c| c.http_op("POST", &format!("/api/{kind}/{lock}/renew"), &body, |_| Ended::Ok(())),
                |()| Value::None,
            )
        } else {
            let mut cmd = redis::cmd(if limit.is_some() { "SEM.RENEW" } else { "LOCK.RENEW" });
            cmd.arg(lock).arg(token).arg(LEASE_MS);
            self.record(op, |c| c.resp_op(&cmd, |_| Ended::Ok(())), |()| Value::None)
        };
        done.is_some()
    }

    fn release(&mut self, lock: &str, limit: Option<u32>, token: u64, http: bool) {
        let op = Op::Release { lock: lock.to_owned(), token };
        if http {
            let kind = if limit.is_some() { "semaphores" } else { "locks" };
            let body = serde_json::json!({"token": token});
            self.record(
                op,
                |c| c.http_op("POST", &format!("/api/{kind}/{lock}/release"), &body, |_| Ended::Ok(())),
                |()| Value::None,
            );
        } else {
            let mut cmd = redis::cmd(if limit.is_some() { "SEM.RELEASE" } else { "LOCK.RELEASE" });
            cmd.arg(lock).arg(token);
            self.record(op, |c| c.resp_op(&cmd, |_| Ended::Ok(())), |()| Value::None);
        }
    }

    fn fenced_set(&mut self, key: &str, value: &str, lock: &str, token: u64) {
        let op = Op::FencedSet { key: key.to_owned(), value: value.to_owned(), lock: lock.to_owned(), token };
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("FENCE").arg(lock).arg(token);
        self.record(op, |c| c.resp_op(&cmd, |_| Ended::Ok(())), |()| Value::None);
    }

    // ---- KV ----

    fn kv(&mut self) {
        let key = format!("k{}", self.rng.usize(0..KEYS));
        match self.rng.u32(0..3) {
            0 => {
                let mut cmd = redis::cmd("GET");
                cmd.arg(&key);
                self.record(Op::Get { key }, |c| c.resp_op(&cmd, read_reply), |v| Value::Read(v.clone()));
            }
            1 => {
                let value = self.unique("v");
                let mut cmd = redis::cmd("SET");
                cmd.arg(&key).arg(&value);
                self.record(Op::Set { key, value }, |c| c.resp_op(&cmd, |_| Ended::Ok(())), |()| Value::None);
            }
            _ => {
                let value = self.unique("v");
                let mut cmd = redis::cmd("SET");
                cmd.arg(&key).arg(&value).arg("NX");
                let set = |v: redis::Value| Ended::Ok(!matches!(v, redis::Value::Nil));
                self.record(Op::SetNx { key, value }, |c| c.resp_op(&cmd, set), |b| Value::Bool(*b));
            }
        }
    }

    // ---- queues ----

    fn push(&mut self, http: bool) {
        let grouped = self.rng.u32(0..3) == 0;
        let queue = if grouped { "qg" } else { "q0" };
        let id = self.unique("m");
        let group = grouped.then(|| format!("g{}", self.rng.u32(0..4)));
        let op = Op::Push { queue: queue.to_owned(), id: id.clone(), group: group.clone() };
        let delay = (!grouped && self.rng.u32(0..4) == 0).then(|| self.rng.u64(1..=MAX_DELAY_MS));
        let priority = (!grouped && self.rng.u32(0..4) == 0).then(|| self.rng.u8(0..10));
        if http {
            let mut body = serde_json::json!({"payload": id});
            if let Some(g) = &group {
                body["group"] = g.clone().into();
            }
            if let Some(d) = delay {
                body["delay_ms"] = d.into();
            }
            if let Some(p) = priority {
                body["priority"] = p.into();
            }
            let path = format!("/api/queues/{queue}/messages");
            self.record(op, |c| c.http_op("POST", &path, &body, |_| Ended::Ok(())), |()| Value::None);
        } else {
            let mut cmd = redis::cmd("Q.PUSH");
            cmd.arg(queue).arg(&id);
            if let Some(g) = &group {
                cmd.arg("GROUP").arg(g);
            }
            if let Some(d) = delay {
                cmd.arg("DELAY").arg(d);
            }
            if let Some(p) = priority {
                cmd.arg("PRIORITY").arg(p);
            }
            self.record(op, |c| c.resp_op(&cmd, |_| Ended::Ok(())), |()| Value::None);
        }
    }

    /// Pops from a queue (now and then from a dead-letter queue), then acks or nacks each
    /// delivery. Group messages are only acked, so each group's order stays the push order.
    fn pop(&mut self, http: bool) {
        let queue = match self.rng.u32(0..10) {
            0..=5 => "q0",
            6..=8 => "qg",
            _ => "q0-dlq",
        };
        let count = self.rng.u32(1..3);
        let deliveries = self.pop_from(queue, count, http);
        for delivery in deliveries.unwrap_or_default() {
            if queue == "q0" && self.rng.u32(0..3) == 0 {
                self.nack(&delivery, http);
            } else {
                self.ack(&delivery, http);
            }
        }
    }

    /// One recorded pop of up to `count` deliveries.
    pub(crate) fn pop_from(&mut self, queue: &str, count: u32, http: bool) -> Option<Vec<Delivery>> {
        let op = Op::Pop { queue: queue.to_owned() };
        let delivered = |d: &Vec<Delivery>| Value::Delivered(d.clone());
        if http {
            let body = serde_json::json!({"count": count, "lease_ms": DELIVERY_LEASE_MS});
            let path = format!("/api/queues/{queue}/pop");
            self.record(op, |c| c.http_op("POST", &path, &body, |json| pop_json(queue, json)), delivered)
        } else {
            let mut cmd = redis::cmd("Q.POP");
            cmd.arg(queue).arg("COUNT").arg(count).arg("LEASE").arg(DELIVERY_LEASE_MS);
            self.record(op, |c| c.resp_op(&cmd, |v| pop_reply(queue, v)), delivered)
        }
    }

    pub(crate) fn ack(&mut self, d: &Delivery, http: bool) {
        let op = Op::Ack { queue: d.queue.clone(), id: d.id.clone(), receipt: d.receipt.clone() };
        let Ok(receipt) = d.receipt.parse::<u64>() else { return };
        if http {
            let body = serde_json::json!({"receipts": [receipt]});
            let path = format!("/api/queues/{}/ack", d.queue);
            let acked = |json: serde_json::Value| count_ended(json["acked"].as_u64(), "acked nothing");
            self.record(op, |c| c.http_op("POST", &path, &body, acked), |()| Value::None);
        } else {
            let mut cmd = redis::cmd("Q.ACK");
            cmd.arg(&d.queue).arg(receipt);
            let acked = |v: redis::Value| count_ended(int(&v), "acked nothing");
            self.record(op, |c| c.resp_op(&cmd, acked), |()| Value::None);
        }
    }

    fn nack(&mut self, d: &Delivery, http: bool) {
        let op = Op::Nack { queue: d.queue.clone(), id: d.id.clone(), receipt: d.receipt.clone() };
        let Ok(receipt) = d.receipt.parse::<u64>() else { return };
        if http {
            let body = serde_json::json!({"receipt": receipt});
            let path = format!("/api/queues/{}/nack", d.queue);
            let nacked = |json: serde_json::Value| {
                count_ended(json["nacked"].as_bool().map(u64::from), "the delivery was not in flight")
            };
            self.record(op, |c| c.http_op("POST", &path, &body, nacked), |()| Value::None);
        } else {
            let mut cmd = redis::cmd("Q.NACK");
            cmd.arg(&d.queue).arg(receipt);
            let nacked = |v: redis::Value| count_ended(int(&v), "the delivery was not in flight");
            self.record(op, |c| c.resp_op(&cmd, nacked), |()| Value::None);
        }
    }

    /// Reads every key the run wrote (`k*` and the fenced `f*`), each until a read succeeds.
    pub(crate) fn read_every_key(&mut self, deadline: std::time::Instant) {
        let keys = (0..KEYS).map(|k| format!("k{k}")).chain((0..LOCKS).map(|k| format!("f{k}")));
        for key in keys {
            let mut cmd = redis::cmd("GET");
            cmd.arg(&key);
            while std::time::Instant::now() < deadline {
                let read = self.record(
                    Op::Get { key: key.clone() },
                    |c| c.resp_op(&cmd, read_reply),
                    |v| Value::Read(v.clone()),
                );
                if read.is_some() {
                    break;
                }
            }
        }
    }

    // ---- HTTP ----

    /// One HTTP request with a JSON body to the bound node, judged by its status and `ok` on a
    /// 200's body.
    fn http_op<T>(
        &mut self,
        method: &str,
        path: &str,
        body: &serde_json::Value,
        ok: impl FnOnce(serde_json::Value) -> Ended<T>,
    ) -> Ended<T> {
        let Some(addrs) = self.addrs() else {
            return Ended::Fail("no node reachable; nothing sent".to_owned());
        };
        match http_request(&addrs.http, method, path, &body.to_string()) {
            Err(HttpError::NotSent(e)) => {
                // Nothing reached the server: try the next node next time.
                self.node += 1;
                Ended::Fail(format!("not sent: {e}"))
            }
            Err(HttpError::Unknown(e)) => Ended::Info(e),
            Ok((200, json)) => ok(json),
            Ok((_, json)) => {
                let code = json["code"].as_str().unwrap_or("");
                judge_code(code, &json.to_string())
            }
        }
    }
}

fn lock_name(k: usize) -> String {
    format!("l{k}")
}

/// Decides an error per the contract, by its code (the RESP prefix, or the HTTP body's `code`).
fn judge_code<T>(code: &str, text: &str) -> Ended<T> {
    match code {
        // The server said so, and the state did not change.
        "FENCED" | "LOST" | "DEADLOCK" | "TRYAGAIN" | "NOTLEADER" => Ended::Fail(text.to_owned()),
        _ => Ended::Info(text.to_owned()),
    }
}

fn count_ended(n: Option<u64>, zero: &str) -> Ended<()> {
    match n {
        Some(0) => Ended::Fail(zero.to_owned()),
        Some(_) => Ended::Ok(()),
        None => Ended::Info("an unexpected reply".to_owned()),
    }
}

fn int(v: &redis::Value) -> Option<u64> {
    match v {
        redis::Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

fn text(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        redis::Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `[token, lease-ms]`, or nil when the wait ran out.
fn acquire_reply(v: redis::Value) -> Ended<u64> {
    match v {
        redis::Value::Array(items) => match items.first().and_then(int) {
            Some(token) => Ended::Ok(token),
            None => Ended::Info(format!("an unexpected grant {items:?}")),
        },
        redis::Value::Nil => Ended::Fail("not granted: the wait ran out".to_owned()),
        other => Ended::Info(format!("an unexpected reply {other:?}")),
    }
}

fn acquire_json(json: serde_json::Value) -> Ended<u64> {
    match (json["granted"].as_bool(), json["token"].as_u64()) {
        (Some(true), Some(token)) => Ended::Ok(token),
        (Some(false), _) => Ended::Fail("not granted: the wait ran out".to_owned()),
        _ => Ended::Info(format!("an unexpected grant {json}")),
    }
}

fn read_reply(v: redis::Value) -> Ended<Option<String>> {
    match v {
        redis::Value::Nil => Ended::Ok(None),
        other => match text(&other) {
            Some(s) => Ended::Ok(Some(s)),
            None => Ended::Info(format!("an unexpected reply {other:?}")),
        },
    }
}

/// `[[id, receipt, payload, deliveries], ...]`, or nil when none came.
fn pop_reply(queue: &str, v: redis::Value) -> Ended<Vec<Delivery>> {
    let items = match v {
        redis::Value::Nil => return Ended::Ok(Vec::new()),
        redis::Value::Array(items) => items,
        other => return Ended::Info(format!("an unexpected reply {other:?}")),
    };
    let mut out = Vec::new();
    for item in items {
        let redis::Value::Array(parts) = item else {
            return Ended::Info("an unexpected delivery".to_owned());
        };
        match (parts.get(1).and_then(text), parts.get(2).and_then(text)) {
            (Some(receipt), Some(payload)) => {
                out.push(Delivery { id: payload, receipt, queue: queue.to_owned() });
            }
            _ => return Ended::Info(format!("an unexpected delivery {parts:?}")),
        }
    }
    Ended::Ok(out)
}

fn pop_json(queue: &str, json: serde_json::Value) -> Ended<Vec<Delivery>> {
    let Some(items) = json["deliveries"].as_array() else {
        return Ended::Info(format!("an unexpected reply {json}"));
    };
    let mut out = Vec::new();
    for d in items {
        match (d["receipt"].as_u64(), d["payload"].as_str()) {
            (Some(receipt), Some(payload)) => out.push(Delivery {
                id: payload.to_owned(),
                receipt: receipt.to_string(),
                queue: queue.to_owned(),
            }),
            _ => return Ended::Info(format!("an unexpected delivery {d}")),
        }
    }
    Ended::Ok(out)
}

/// Why an HTTP request has no status to judge.
enum HttpError {
    /// The connection could not be made: the server got nothing.
    NotSent(String),
    /// The request may have arrived; no reply came.
    Unknown(String),
}

/// One HTTP/1.1 request on a connection of its own (`Connection: close`): the status and the
/// JSON body (`null` when it is not JSON).
fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, serde_json::Value), HttpError> {
    let sock: std::net::SocketAddr = addr.parse().map_err(|e| HttpError::NotSent(format!("{addr}: {e}")))?;
    let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(1))
        .map_err(|e| HttpError::NotSent(format!("connect {addr}: {e}")))?;
    let unknown = |e: std::io::Error| HttpError::Unknown(format!("{method} {path} on {addr}: {e}"));
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(unknown)?;
    stream.set_write_timeout(Some(REPLY_TIMEOUT)).map_err(unknown)?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).map_err(unknown)?;
    stream.write_all(body.as_bytes()).map_err(unknown)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(unknown)?;
    let response = String::from_utf8_lossy(&response);
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        return Err(HttpError::Unknown(format!("{method} {path} on {addr}: a cut reply")));
    };
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
    let Some(status) = status else {
        return Err(HttpError::Unknown(format!("{method} {path} on {addr}: no status in {head:?}")));
    };
    Ok((status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null)))
}

/// Creates the queues (with their dead-letter queues, delivery limit and lease) through any
/// node, trying until one answers; nothing is recorded (a create is no operation the checkers
/// judge).
pub fn create_queues(directory: &Directory, deadline: std::time::Instant) -> anyhow::Result<()> {
    for (queue, dlq) in QUEUES {
        let mut last = String::new();
        let created = (0..).any(|attempt: usize| {
            if std::time::Instant::now() > deadline {
                return true;
            }
            let addrs = {
                let d = directory.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                let up: Vec<Addrs> = d.iter().flatten().cloned().collect();
                if up.is_empty() {
                    return false;
                }
                up[attempt % up.len()].clone()
            };
            let mut cmd = redis::cmd("Q.CREATE");
            cmd.arg(queue)
                .arg("MAXDELIVER")
                .arg(MAX_DELIVER)
                .arg("DLQ")
                .arg(dlq)
                .arg("LEASE")
                .arg(DELIVERY_LEASE_MS);
            let result = redis::Client::open(format!("redis://{}/", addrs.resp))
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
                .and_then(|mut con| {
                    con.set_read_timeout(Some(REPLY_TIMEOUT))?;
                    cmd.query::<redis::Value>(&mut con)
                });
            match result {
                Ok(_) => true,
                Err(e) => {
                    last = e.to_string();
                    std::thread::sleep(Duration::from_millis(100));
                    false
                }
            }
        });
        if !created || std::time::Instant::now() > deadline {
            anyhow::bail!("could not create queue {queue}: {last}");
        }
    }
    Ok(())
}
