//! Queues: pushing ([`PushBuilder`], [`Client::push_batch`]), popping ([`PopBuilder`]),
//! consuming ([`Consumer`]), and the admin commands.
//!
//! A [`Consumer`] owns one connection — the session its deliveries belong to, so a crashed
//! worker's messages go back to the queue at once — and a task that pops while it has room:
//!
//! ```text
//!  poller task: wait for a free slot (concurrency) ─► Q.POP q COUNT free WAIT 1s ─► Delivery ─► stream
//!               its connection broke, or its node stopped leading ─► SESSION RESUME elsewhere
//!               (the deliveries handed out stay in flight, this consumer's)
//!  handler:     delivery.ack() / nack(delay) / dead()  (any pooled connection; the receipt is global)
//!               └── auto-extend task: Q.EXTEND every third of the lease until then
//! ```

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use turnstile_resp::Frame;

use crate::client::Client;
use crate::conn::{Arg, Cmd, Connection, closed};
use crate::error::{Error, Result};
use crate::reply;
use crate::session::SessionKey;

/// How long one poll of a consumer waits on the server before asking again (and checking
/// whether it was told to stop).
const POLL_WAIT: Duration = Duration::from_secs(1);

/// What happens when a bounded queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Refuse the push ([`Error::Full`]).
    Reject,
    /// Drop the oldest ready message to make room.
    DropHead,
}

/// `Q.CREATE` options: [`Client::create_queue`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until create() is awaited"]
pub struct QueueBuilder {
    client: Client,
    name: String,
    max_len: Option<u64>,
    overflow: Option<Overflow>,
    max_deliveries: Option<u32>,
    dead_letter: Option<String>,
    lease: Option<Duration>,
    ttl: Option<Duration>,
    dedup_window: Option<Duration>,
}

impl QueueBuilder {
    /// Most messages the queue holds.
    pub fn max_len(mut self, max_len: u64) -> Self {
        self.max_len = Some(max_len);
        self
    }
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = Some(overflow);
        self
    }
    /// After this many deliveries a message moves to the dead-letter queue (or is discarded).
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = Some(n);
        self
    }
    pub fn dead_letter(mut self, queue: impl Into<String>) -> Self {
        self.dead_letter = Some(queue.into());
        self
    }
    /// The default lease of a delivery.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }
    /// Messages expire this long after they are pushed.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
    pub fn dedup_window(mut self, window: Duration) -> Self {
        self.dedup_window = Some(window);
        self
    }

    /// `true` when created, `false` when it already existed with this configuration.
    pub async fn create(self) -> Result<bool> {
        let cmd = Cmd::new("Q.CREATE")
            .arg(&self.name)
            .opt("MAXLEN", self.max_len)
            .opt(
                "OVERFLOW",
                self.overflow.map(|o| match o {
                    Overflow::Reject => "reject",
                    Overflow::DropHead => "drop-head",
                }),
            )
            .opt("MAXDELIVER", self.max_deliveries)
            .opt("DLQ", self.dead_letter)
            .opt("LEASE", self.lease)
            .opt("TTL", self.ttl)
            .opt("DEDUP-WINDOW", self.dedup_window);
        Ok(reply::integer(self.client.call(cmd).await?)? == 1)
    }
}

/// One push: [`Client::push`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until send() is awaited"]
pub struct PushBuilder {
    client: Client,
    cmd: Cmd,
}

impl PushBuilder {
    /// Deliver no sooner than this.
    pub fn delay(self, delay: Duration) -> Self {
        self.with("DELAY", delay)
    }
    /// 0-9, higher first (FIFO within a priority).
    pub fn priority(self, priority: u8) -> Self {
        self.with("PRIORITY", priority)
    }
    /// A second push with the same id within the queue's window stores nothing and answers the
    /// first message's id.
    pub fn dedup(self, id: impl Arg) -> Self {
        self.with("DEDUP", id)
    }
    /// The message expires (unconsumed) after this long.
    pub fn ttl(self, ttl: Duration) -> Self {
        self.with("TTL", ttl)
    }
    /// Messages of one group are delivered one at a time, in order.
    pub fn group(self, key: impl Arg) -> Self {
        self.with("GROUP", key)
    }
    /// Push only while `token` is a live hold of `lock` (else [`Error::Fenced`]).
    pub fn fence(mut self, lock: impl Arg, token: u64) -> Self {
        self.cmd = self.cmd.arg("FENCE").arg(lock).arg(token);
        self
    }

    fn with(mut self, keyword: &str, value: impl Arg) -> Self {
        self.cmd = self.cmd.arg(keyword).arg(value);
        self
    }

    /// Pushes; the message id.
    pub async fn send(self) -> Result<u64> {
        reply::unsigned(self.client.call(self.cmd).await?)
    }
}

/// One pop: [`Client::pop`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until fetch() is awaited"]
pub struct PopBuilder {
    client: Client,
    queue: String,
    count: u32,
    wait: Duration,
    lease: Option<Duration>,
}

impl PopBuilder {
    /// Up to this many messages (default 1).
    pub fn count(mut self, count: u32) -> Self {
        self.count = count;
        self
    }
    /// Wait this long for a message when none is ready (default 0).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }
    /// Lease of the deliveries (default: the queue's).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Pops; an empty list when nothing was ready in time. The deliveries are not tied to a
    /// connection (`KEEP`): only their lease returns them, so ack, nack or extend them in time.
    pub async fn fetch(self) -> Result<Vec<Delivery>> {
        let cmd = Cmd::new("Q.POP")
            .arg(&self.queue)
            .arg("COUNT")
            .arg(self.count)
            .opt("WAIT", (!self.wait.is_zero()).then_some(self.wait))
            .opt("LEASE", self.lease)
            .arg("KEEP");
        let frame = self.client.call(cmd).await?;
        let lease = self.lease.unwrap_or_default();
        deliveries(&self.client, &self.queue, frame, lease, None)
    }
}

/// A message handed out under a lease. Finish it with [`Delivery::ack`], [`Delivery::nack`] or
/// [`Delivery::dead`]; a delivery dropped unfinished comes back when its lease ends.
#[derive(Debug)]
pub struct Delivery {
    client: Client,
    queue: String,
    /// The message id (stable across deliveries).
    pub id: u64,
    /// This delivery's receipt: acks and extends name it, so a stale delivery cannot ack a
    /// message handed to someone else since.
    pub receipt: u64,
    pub payload: Bytes,
    /// How many times the message has been delivered, this time included.
    pub deliveries: u32,
    /// Frees a consumer slot when the delivery is finished or dropped.
    _slot: Option<OwnedSemaphorePermit>,
    /// Extends the lease while the handler runs; stopped when the delivery is finished.
    extender: Option<JoinHandle<()>>,
}

impl Delivery {
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Acks: the message is done. `false` if the delivery was no longer in flight (its lease
    /// ran out, or its session closed) — the message may be delivered again. An ack whose
    /// connection broke is sent again (on another node if need be); `false` then may also mean
    /// the first one got through.
    pub async fn ack(mut self) -> Result<bool> {
        self.stop_extending();
        let cmd = Cmd::new("Q.ACK").arg(&self.queue).arg(self.receipt);
        Ok(reply::integer(self.client.call_idempotent(cmd).await?)? == 1)
    }

    /// Gives the message back, to be delivered again after `delay`.
    pub async fn nack(mut self, delay: Duration) -> Result<bool> {
        self.stop_extending();
        let cmd = Cmd::new("Q.NACK").arg(&self.queue).arg(self.receipt).opt("DELAY", Some(delay));
        Ok(reply::integer(self.client.call_idempotent(cmd).await?)? == 1)
    }

    /// Rejects the message: to the dead-letter queue, or discarded when there is none.
    pub async fn dead(mut self) -> Result<bool> {
        self.stop_extending();
        let cmd = Cmd::new("Q.NACK").arg(&self.queue).arg(self.receipt).arg("DEAD");
        Ok(reply::integer(self.client.call_idempotent(cmd).await?)? == 1)
    }

    /// Extends the lease to `lease` from now; [`Error::Lost`] when the delivery is gone.
    pub async fn extend(&self, lease: Duration) -> Result<Duration> {
        extend(&self.client, &self.queue, self.receipt, lease).await
    }

    fn stop_extending(&mut self) {
        if let Some(extender) = self.extender.take() {
            extender.abort();
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.stop_extending();
    }
}

async fn extend(client: &Client, queue: &str, receipt: u64, lease: Duration) -> Result<Duration> {
    let cmd = Cmd::new("Q.EXTEND").arg(queue).arg(receipt).arg(lease);
    Ok(Duration::from_millis(reply::unsigned(client.call_idempotent(cmd).await?)?))
}

/// Reads a `Q.POP` reply. With `auto_extend`, each delivery gets a task extending its lease.
fn deliveries(
    client: &Client,
    queue: &str,
    frame: Frame,
    auto_extend: Duration,
    slots: Option<&mut Vec<OwnedSemaphorePermit>>,
) -> Result<Vec<Delivery>> {
    let Some(items) = reply::array_or_nil(frame)? else { return Ok(Vec::new()) };
    let mut slots = slots;
    items
        .into_iter()
        .map(|item| {
            let [id, receipt, payload, deliveries] = reply::tuple(item)?;
            let receipt = reply::unsigned(receipt)?;
            let extender = (!auto_extend.is_zero()).then(|| {
                let (client, queue) = (client.clone(), queue.to_owned());
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(auto_extend / 3).await;
                        if let Err(e) = extend(&client, &queue, receipt, auto_extend).await {
                            tracing::warn!(queue, receipt, error = %e, "could not extend a delivery's lease");
                            if matches!(e, Error::Lost(_)) {
                                return;
                            }
                        }
                    }
                })
            });
            Ok(Delivery {
                client: client.clone(),
                queue: queue.to_owned(),
                id: reply::unsigned(id)?,
                receipt,
                payload: reply::bulk(payload)?,
                deliveries: u32::try_from(reply::unsigned(deliveries)?).unwrap_or(u32::MAX),
                _slot: slots.as_mut().and_then(|s| s.pop()),
                extender,
            })
        })
        .collect()
}

/// A connection for a consumer whose own broke: its session resumed (on another node if need
/// be), or, when that session is gone, a new one — whose key replaces `session`.
async fn reconnect(client: &Client, session: &mut SessionKey) -> Result<Connection> {
    let give_up = tokio::time::Instant::now() + client.options().retry_for;
    match client.resume(*session, give_up).await {
        Ok(conn) => Ok(conn),
        Err(e) => {
            tracing::warn!(session = session.id, error = %e, "consumer's session not resumed; opening a new one");
            let (conn, key) = client.new_session().await?;
            *session = key;
            Ok(conn)
        }
    }
}

/// A message as `Q.PEEK` shows it (not delivered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: u64,
    pub payload: Bytes,
    pub deliveries: u32,
    pub priority: u8,
    /// Time since it was pushed.
    pub age: Duration,
}

/// `Q.STATS`: gauges then totals since the queue was created, by the server's names
/// (`ready`, `delayed`, `in-flight`, `dead`, `consumers`, ..., `pushed`, `acked`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    pub fields: Vec<(String, i64)>,
}

impl QueueStats {
    /// One field by name; 0 when the server did not send it.
    pub fn get(&self, name: &str) -> i64 {
        self.fields.iter().find(|(k, _)| k == name).map_or(0, |(_, v)| *v)
    }
}

impl Client {
    /// Creates a queue with options (a push to a missing queue creates it with the defaults).
    pub fn create_queue(&self, name: impl Into<String>) -> QueueBuilder {
        QueueBuilder {
            client: self.clone(),
            name: name.into(),
            max_len: None,
            overflow: None,
            max_deliveries: None,
            dead_letter: None,
            lease: None,
            ttl: None,
            dedup_window: None,
        }
    }

    /// Pushes `payload` to `queue`; add options, then [`PushBuilder::send`].
    pub fn push(&self, queue: impl Arg, payload: impl Arg) -> PushBuilder {
        PushBuilder { client: self.clone(), cmd: Cmd::new("Q.PUSH").arg(queue).arg(payload) }
    }

    /// Pushes many messages in one round trip; their ids, in order. A refused push (e.g.
    /// [`Error::Full`]) is that message's `Err`; the others are stored.
    pub async fn push_batch<P: Arg>(
        &self,
        queue: &str,
        payloads: impl IntoIterator<Item = P>,
    ) -> Result<Vec<Result<u64>>> {
        let cmds: Vec<Cmd> = payloads.into_iter().map(|p| Cmd::new("Q.PUSH").arg(queue).arg(p)).collect();
        let replies = self.pipeline(&cmds).await?;
        Ok(replies.into_iter().map(|r| r.and_then(reply::unsigned)).collect())
    }

    /// Pops from `queue`; add options, then [`PopBuilder::fetch`].
    pub fn pop(&self, queue: impl Into<String>) -> PopBuilder {
        PopBuilder { client: self.clone(), queue: queue.into(), count: 1, wait: Duration::ZERO, lease: None }
    }

    /// Acks deliveries by receipt; how many were still in flight.
    pub async fn ack(&self, queue: &str, receipts: &[u64]) -> Result<u64> {
        let cmd = receipts.iter().fold(Cmd::new("Q.ACK").arg(queue), |cmd, r| cmd.arg(*r));
        reply::unsigned(self.call(cmd).await?)
    }

    /// Nacks one delivery by receipt: delivered again after `delay`, or with `dead` rejected
    /// to the dead-letter queue. `false` if it was no longer in flight.
    pub async fn nack(&self, queue: &str, receipt: u64, delay: Duration, dead: bool) -> Result<bool> {
        let cmd = Cmd::new("Q.NACK").arg(queue).arg(receipt).arg("DELAY").arg(delay).flag("DEAD", dead);
        Ok(reply::integer(self.call(cmd).await?)? == 1)
    }

    /// Extends a delivery's lease by receipt.
    pub async fn extend(&self, queue: &str, receipt: u64, lease: Duration) -> Result<Duration> {
        extend(self, queue, receipt, lease).await
    }

    pub async fn queue_stats(&self, queue: &str) -> Result<QueueStats> {
        let pairs = reply::map(self.call(Cmd::new("Q.STATS").arg(queue)).await?)?;
        let fields = pairs.into_iter().map(|(k, v)| Ok((k, reply::integer(v)?))).collect::<Result<_>>()?;
        Ok(QueueStats { fields })
    }

    /// The next `count` ready messages, without delivering them.
    pub async fn peek(&self, queue: &str, count: u32) -> Result<Vec<Message>> {
        let frame = self.call(Cmd::new("Q.PEEK").arg(queue).arg("COUNT").arg(count)).await?;
        let items = reply::array_or_nil(frame)?.unwrap_or_default();
        items
            .into_iter()
            .map(|item| {
                let [id, payload, deliveries, priority, age] = reply::tuple(item)?;
                Ok(Message {
                    id: reply::unsigned(id)?,
                    payload: reply::bulk(payload)?,
                    deliveries: u32::try_from(reply::unsigned(deliveries)?).unwrap_or(u32::MAX),
                    priority: u8::try_from(reply::unsigned(priority)?).unwrap_or(u8::MAX),
                    age: Duration::from_millis(reply::unsigned(age)?),
                })
            })
            .collect()
    }

    /// Removes ready and delayed messages; how many.
    pub async fn purge(&self, queue: &str) -> Result<u64> {
        reply::unsigned(self.call(Cmd::new("Q.PURGE").arg(queue)).await?)
    }

    /// Deletes a queue and every message in it; `false` if there was none.
    pub async fn delete_queue(&self, queue: &str) -> Result<bool> {
        Ok(reply::integer(self.call(Cmd::new("Q.DEL").arg(queue)).await?)? == 1)
    }

    /// Every queue's name, sorted.
    pub async fn queues(&self) -> Result<Vec<String>> {
        let items = reply::array_or_nil(self.call(Cmd::new("Q.LIST")).await?)?.unwrap_or_default();
        items.into_iter().map(reply::text).collect()
    }

    /// Moves up to `count` (all, when `None`) dead letters from `dlq` back to `target`.
    pub async fn redrive(&self, dlq: &str, target: &str, count: Option<u64>) -> Result<u64> {
        reply::unsigned(self.call(Cmd::new("Q.REDRIVE").arg(dlq).arg(target).opt("COUNT", count)).await?)
    }

    /// Consumes `queue`: configure, then [`ConsumerBuilder::start`].
    pub fn consume(&self, queue: impl Into<String>) -> ConsumerBuilder {
        ConsumerBuilder {
            client: self.clone(),
            queue: queue.into(),
            concurrency: 1,
            lease: None,
            auto_extend: false,
        }
    }
}

/// Consumer options: [`Client::consume`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until start() is called"]
pub struct ConsumerBuilder {
    client: Client,
    queue: String,
    concurrency: u32,
    lease: Option<Duration>,
    auto_extend: bool,
}

impl ConsumerBuilder {
    /// Most deliveries handed out and not yet finished at once (default 1).
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = n.max(1);
        self
    }
    /// Lease of each delivery (default: the queue's, 30 s unless configured).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }
    /// Extend each delivery's lease (every third of it) until it is acked, nacked or dropped,
    /// so a slow handler keeps its message. Needs [`ConsumerBuilder::lease`].
    pub fn auto_extend(mut self, on: bool) -> Self {
        self.auto_extend = on;
        self
    }

    /// Starts popping in the background.
    pub async fn start(self) -> Result<Consumer> {
        if self.auto_extend && self.lease.is_none() {
            return Err(Error::Server { code: "ERR".into(), message: "auto_extend needs a lease".into() });
        }
        let (conn, key) = self.client.new_session().await?;
        let slots = Arc::new(Semaphore::new(self.concurrency as usize));
        let stopping = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel(self.concurrency as usize);
        let poller = Poller {
            builder: self,
            conn: Some(conn),
            session: key,
            slots: slots.clone(),
            stopping: stopping.clone(),
            tx,
        };
        let task = tokio::spawn(poller.run());
        Ok(Consumer { rx, task, stopping })
    }
}

/// A stream of deliveries (`Stream<Item = Result<Delivery>>`, or call [`Consumer::next`]).
/// Errors (the connection dropped and could not be reopened) are items; the consumer keeps
/// trying. Ends after [`Consumer::stop`] once the deliveries handed out are finished.
#[derive(Debug)]
pub struct Consumer {
    rx: mpsc::Receiver<Result<Delivery>>,
    task: JoinHandle<()>,
    stopping: Arc<AtomicBool>,
}

impl Consumer {
    /// The next delivery; `None` once stopped.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        self.rx.recv().await
    }

    /// Stops taking new messages. Deliveries already handed out stay valid: the consumer's
    /// connection (their session) stays open until each is finished or dropped.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Stops and waits until the deliveries handed out are finished and the connection closed.
    pub async fn finish(mut self) {
        self.stop();
        // Anything popped but not yet taken from the stream goes back with the session.
        self.rx.close();
        while self.rx.recv().await.is_some() {}
        let _ = (&mut self.task).await;
    }
}

impl futures_core::Stream for Consumer {
    type Item = Result<Delivery>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
    }
}

struct Poller {
    builder: ConsumerBuilder,
    conn: Option<Connection>,
    /// The session the deliveries belong to: resumed on another node when the connection breaks
    /// or its node stops leading, so that the deliveries handed out stay this consumer's.
    session: SessionKey,
    slots: Arc<Semaphore>,
    stopping: Arc<AtomicBool>,
    tx: mpsc::Sender<Result<Delivery>>,
}

impl Poller {
    async fn run(mut self) {
        let b = &self.builder;
        let auto_extend = if b.auto_extend { b.lease.unwrap_or_default() } else { Duration::ZERO };
        while !self.stopping.load(Ordering::SeqCst) && !self.tx.is_closed() {
            // Wait for one free slot, then take every other free one. Meanwhile, watch the
            // connection: when its node dies, the session (and the deliveries being worked on)
            // must be resumed elsewhere before the server's session timeout, not at the next pop.
            let first = tokio::select! {
                first = self.slots.clone().acquire_owned() => first,
                () = closed(&mut self.conn) => {
                    self.conn = None;
                    match reconnect(&b.client, &mut self.session).await {
                        Ok(conn) => self.conn = Some(conn),
                        Err(e) => {
                            if self.tx.send(Err(e)).await.is_err() {
                                return;
                            }
                        }
                    }
                    continue;
                }
            };
            let Ok(first) = first else { return };
            let mut slots = vec![first];
            while let Ok(more) = self.slots.clone().try_acquire_owned() {
                slots.push(more);
            }
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            let count = u32::try_from(slots.len()).unwrap_or(u32::MAX);
            let cmd = Cmd::new("Q.POP")
                .arg(&b.queue)
                .arg("COUNT")
                .arg(count)
                .arg("WAIT")
                .arg(POLL_WAIT)
                .opt("LEASE", b.lease);
            let conn = match &mut self.conn {
                Some(conn) => conn,
                None => match reconnect(&b.client, &mut self.session).await {
                    Ok(conn) => self.conn.insert(conn),
                    Err(e) => {
                        if self.tx.send(Err(e)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                },
            };
            let frame = match conn.call(&cmd).await {
                Ok(frame) => frame,
                // The pop was not made: ask the leader, in the same session.
                Err(e) if b.client.refused_here(&e, conn) => {
                    self.conn = None;
                    continue;
                }
                Err(e) => {
                    if conn.is_broken() {
                        self.conn = None;
                    }
                    // A server error (say, the queue was deleted) would repeat at once: pace it.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if self.tx.send(Err(e)).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            match deliveries(&b.client, &b.queue, frame, auto_extend, Some(&mut slots)) {
                Ok(batch) => {
                    for delivery in batch {
                        if self.stopping.load(Ordering::SeqCst) {
                            // Told to stop while this was on its way: give it back now.
                            let _ = delivery.nack(Duration::ZERO).await;
                            continue;
                        }
                        if let Err(mpsc::error::SendError(Ok(delivery))) = self.tx.send(Ok(delivery)).await {
                            let _ = delivery.nack(Duration::ZERO).await;
                        }
                    }
                }
                Err(e) => {
                    if self.tx.send(Err(e)).await.is_err() {
                        return;
                    }
                }
            }
        }
        // Keep the session (the connection) open until every delivery handed out is finished.
        let _ = self.slots.acquire_many(self.builder.concurrency).await;
    }
}
