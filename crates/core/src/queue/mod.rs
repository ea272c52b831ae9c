//! Durable queues: at-least-once delivery with leases, retries, delays, priorities, groups,
//! dedup, bounds and dead letters.
//!
//! ```text
//!            push ──► delayed ──(delay over)──► ready ──(pop / consumer)──► in flight ──ack──► gone
//!                       ▲                        ▲  ▲                           │
//!                       └──── nack with delay ───┘  └── nack, lease expiry, ────┤
//!                                                       session close           │
//!   past max deliveries, rejected, TTL over, pushed out of a full queue ────────┴──► dead-letter queue
//!                                                                                    (or counted and gone)
//! ```
//!
//! Every message is in exactly one of delayed, ready or in flight, in exactly one queue, until it
//! leaves; each way out is counted in [`QueueTotals`], so `entered - left == stored` always holds.
//!
//! Ready messages wait in `eligible`, ordered by (priority desc, id): higher priority first,
//! push order within a priority, and a returned message goes back to its old place. A message
//! with a group key is eligible only while it is the oldest message of its group, so a group has
//! at most one message in flight and is delivered in push order.
//!
//! Takers — waiting pops and consumers — stand in one FIFO line; a consumer goes to the back after
//! each message (round robin), a waiting pop leaves once served. A consumer takes a message only
//! while it has credit: its own (`credit`), and its pool's when it shares one with its session's
//! other consumers (AMQP global prefetch). With `single_active_consumer`, only the oldest consumer
//! is served. Anything that frees credit on another queue (a pool's delivery acked, the active
//! consumer gone) marks that queue in `State::to_serve`, served at the end of the step.
//!
//! Pushes and publishes (through an exchange, see `exchange.rs`) store a message the same way;
//! dead letters go to the `dead_letter` queue, else through the `dead_letter_exchange`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::session::Session;
use crate::snapshot::TimerList;
use crate::timer::Timer;
use crate::{
    Consume, CoreError, DeadLetter, DeadReason, Delivery, Effect, Fence, MessageView, Millis, MsgId, Pop,
    Push, QueueId, QueueStats, QueueTotals, Reply, SessionId, State, Taker, Timestamp, WaitTarget, ensure,
};

/// How a queue behaves; set by `Q.CREATE` or defaulted by the first push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueConfig {
    /// Most messages stored (delayed, ready and in flight); 0 = unbounded.
    pub max_len: u64,
    pub overflow: Overflow,
    /// A message returned after this many deliveries is dead-lettered; 0 = unlimited.
    pub max_deliveries: u32,
    /// Where dead letters go; `None` = they are counted and dropped.
    pub dead_letter: Option<String>,
    /// Default delivery lease.
    pub lease: Millis,
    /// Default message TTL; `None` = messages never expire.
    pub ttl: Option<Millis>,
    /// How long a dedup id is remembered.
    pub dedup_window: Millis,
    /// Pushed priorities above this are stored as this (AMQP `x-max-priority`; 0 = FIFO). Default 9.
    pub max_priority: u8,
    /// Dead letters are routed through this exchange (AMQP `x-dead-letter-exchange`) when
    /// `dead_letter` (a queue) is not set.
    pub dead_letter_exchange: Option<DeadLetterExchange>,
    /// An AMQP exclusive queue: deleted when this session closes (and at restart, by DetachSessions);
    /// other sessions' Consume / Pop / Bind / Purge / Delete on it are `ResourceLocked` (the last
    /// three when sent in [`crate::Command::InSession`], since they carry no session of their own),
    /// and so is a `CreateQueue` naming another owner or none.
    pub exclusive_owner: Option<SessionId>,
    /// Deleted when its last consumer goes (cancel or session close), once it has had one.
    pub auto_delete: bool,
    /// Only one consumer receives at a time: the longest-registered one still present.
    pub single_active_consumer: bool,
}

/// Where a queue's dead letters are published (AMQP `x-dead-letter-exchange` and
/// `x-dead-letter-routing-key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterExchange {
    pub exchange: String,
    /// `None` keeps the queue's name as the routing key.
    pub routing_key: Option<String>,
}

impl Default for QueueConfig {
    fn default() -> QueueConfig {
        QueueConfig {
            max_len: 0,
            overflow: Overflow::Reject,
            max_deliveries: 0,
            dead_letter: None,
            lease: 30_000,
            ttl: None,
            dedup_window: 300_000,
            max_priority: 9,
            dead_letter_exchange: None,
            exclusive_owner: None,
            auto_delete: false,
            single_active_consumer: false,
        }
    }
}

/// What a push to a full queue does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overflow {
    /// Refuse the push.
    Reject,
    /// Drop (or dead-letter) the message that would be delivered next, and store the new one.
    DropHead,
}

/// A queue. In a snapshot, the fields marked `skip` are left out: `messages` travel on their own
/// (see `snapshot.rs`), and the others are indexes and counts rebuilt from the messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Queue {
    pub(crate) name: String,
    pub(crate) config: QueueConfig,
    #[serde(skip)]
    pub(crate) messages: BTreeMap<MsgId, Message>,
    /// Every message in state Ready, oldest first.
    #[serde(skip)]
    ready: BTreeSet<MsgId>,
    /// Ready messages that may be delivered now, in delivery order.
    #[serde(skip)]
    eligible: BTreeSet<(Reverse<u8>, MsgId)>,
    #[serde(skip)]
    delayed: u64,
    /// Receipt → message.
    #[serde(skip)]
    pub(crate) in_flight: BTreeMap<u64, MsgId>,
    /// Group key → its stored messages; the first is the only one that may be delivered.
    #[serde(skip)]
    groups: BTreeMap<String, BTreeSet<MsgId>>,
    /// Dedup id → (first message, end of its window).
    dedup: BTreeMap<String, (MsgId, Timestamp)>,
    takers: VecDeque<Taker>,
    pop_waiters: BTreeMap<u64, PopWaiter>,
    pub(crate) consumers: BTreeMap<u64, Consumer>,
    /// Whether a consumer ever registered: an `auto_delete` queue goes with its last consumer
    /// only once it has had one.
    had_consumer: bool,
    /// Messages here that are dead letters from another queue.
    #[serde(skip)]
    dead: u64,
    #[serde(skip)]
    pub(crate) payload_bytes: u64,
    totals: QueueTotals,
}

/// A stored message. `P` is how its bytes are held: `Bytes` in a queue; while a snapshot is read,
/// a slice of the snapshot buffer (see `snapshot.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Message<P = Bytes> {
    payload: P,
    properties: P,
    priority: u8,
    pushed_at: Timestamp,
    /// Deliveries so far.
    deliveries: u32,
    group: Option<String>,
    expires_at: Option<Timestamp>,
    /// Boxed: most messages are not dead letters, and this keeps every message one pointer wide
    /// here, whatever a dead letter records.
    dead: Option<Box<DeadLetter>>,
    state: MsgState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum MsgState {
    Ready,
    Delayed {
        until: Timestamp,
    },
    InFlight {
        receipt: u64,
        lease_until: Timestamp,
        lease: Millis,
        session: Option<SessionId>,
        consumer: Option<u64>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PopWaiter {
    session: SessionId,
    count: u32,
    lease: Millis,
    auto_ack: bool,
    keep: bool,
    deadline: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Consumer {
    session: SessionId,
    credit: u32,
    lease: Millis,
    auto_ack: bool,
    /// An AMQP exclusive consumer: no other consumer may join the queue while it is there.
    exclusive: bool,
    /// The id of the session's credit pool it shares (see [`CreditPoolState`]).
    pool: Option<u64>,
    /// Deliveries not yet acked, nacked or expired. Counted again on restore: not in snapshots.
    #[serde(skip)]
    unacked: u32,
}

/// A session's shared prefetch (AMQP `basic.qos global=true`): its consumers, on any queues,
/// together hold at most `limit` unacked deliveries. It lives while it has consumers. A
/// consumer's deliveries count in the pool while the consumer is there (as in its own `unacked`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CreditPoolState {
    /// 0 = unlimited. Set by the latest `Consume` naming the pool.
    limit: u32,
    /// The sum of its consumers' `unacked`. Rebuilt on restore.
    #[serde(skip)]
    unacked: u32,
    /// (queue, consumer id). Rebuilt on restore.
    #[serde(skip)]
    consumers: BTreeSet<(QueueId, u64)>,
}

impl CreditPoolState {
    fn has_credit(&self) -> bool {
        self.limit == 0 || self.unacked < self.limit
    }
}

/// Credit pools by (session, pool id), as [`State`] holds them.
type Pools = BTreeMap<(SessionId, u64), CreditPoolState>;

impl Consumer {
    fn has_credit(&self, pools: &Pools) -> bool {
        let own = self.credit == 0 || self.unacked < self.credit;
        own && self
            .pool
            .is_none_or(|p| pools.get(&(self.session, p)).is_some_and(CreditPoolState::has_credit))
    }
}

impl<P> Message<P> {
    /// The same message with its bytes held another way.
    pub(crate) fn map_payload<Q>(self, f: impl Fn(P) -> Q) -> Message<Q> {
        Message {
            payload: f(self.payload),
            properties: f(self.properties),
            priority: self.priority,
            pushed_at: self.pushed_at,
            deliveries: self.deliveries,
            group: self.group,
            expires_at: self.expires_at,
            dead: self.dead,
            state: self.state,
        }
    }
}

impl Message {
    fn size(&self) -> u64 {
        (self.payload.len() + self.properties.len()) as u64
    }

    /// The TTL timer runs only while the message waits (delayed or ready): an in-flight message
    /// is not taken from its consumer; its TTL is checked again when it comes back.
    fn ttl_timer_armed(&self) -> bool {
        self.expires_at.is_some() && !matches!(self.state, MsgState::InFlight { .. })
    }
}

impl Queue {
    fn new(name: String, config: QueueConfig) -> Queue {
        Queue {
            name,
            config,
            messages: BTreeMap::new(),
            ready: BTreeSet::new(),
            eligible: BTreeSet::new(),
            delayed: 0,
            in_flight: BTreeMap::new(),
            groups: BTreeMap::new(),
            dedup: BTreeMap::new(),
            takers: VecDeque::new(),
            pop_waiters: BTreeMap::new(),
            consumers: BTreeMap::new(),
            had_consumer: false,
            dead: 0,
            payload_bytes: 0,
            totals: QueueTotals::default(),
        }
    }

    /// What a snapshot writes of this queue — its own fields and its messages (payloads shared, not
    /// copied) — without the indexes it leaves out; see [`State::snapshot_copy`].
    pub(crate) fn snapshot_copy(&self) -> Queue {
        Queue {
            messages: self.messages.clone(),
            dedup: self.dedup.clone(),
            takers: self.takers.clone(),
            pop_waiters: self.pop_waiters.clone(),
            consumers: self.consumers.clone(),
            had_consumer: self.had_consumer,
            payload_bytes: self.payload_bytes,
            totals: self.totals,
            ..Queue::new(self.name.clone(), self.config.clone())
        }
    }

    /// A ready message may be delivered if it has no group or is its group's oldest.
    fn may_deliver(&self, id: MsgId, msg: &Message) -> bool {
        msg.group.as_ref().is_none_or(|g| self.groups[g].first() == Some(&id))
    }

    /// The taker at the front of the line that can take a message now. With a single active
    /// consumer, only the oldest consumer (lowest id) is served; waiting pops still are.
    fn next_taker(&self, pools: &Pools) -> Option<usize> {
        let active = self.active_consumer();
        self.takers.iter().position(|t| match t {
            Taker::Pop { .. } => true,
            Taker::Consumer { consumer_id } => {
                active.is_none_or(|a| a == *consumer_id) && self.consumers[consumer_id].has_credit(pools)
            }
        })
    }

    /// The one consumer served when the queue has `single_active_consumer`.
    fn active_consumer(&self) -> Option<u64> {
        if self.config.single_active_consumer { self.consumers.keys().next().copied() } else { None }
    }

    /// The error for a session that is not the owner of an exclusive queue.
    fn locked(&self) -> CoreError {
        CoreError::ResourceLocked(format!(
            "cannot obtain exclusive access to locked queue '{}' in vhost '/'",
            self.name
        ))
    }

    /// Messages stored, in any state.
    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }

    pub(crate) fn timer_count(&self) -> usize {
        let delays = usize::try_from(self.delayed).unwrap_or(usize::MAX);
        let ttls = self.messages.values().filter(|m| m.ttl_timer_armed()).count();
        delays + ttls + self.in_flight.len() + self.dedup.len()
    }
}

impl State {
    pub(crate) fn create_queue(&mut self, name: String, config: QueueConfig) -> Result<Reply, CoreError> {
        validate_config(&name, &config)?;
        if let Some(qid) = self.queue_ids.get(&name) {
            // Another session's exclusive queue is locked to it; and, as in RabbitMQ, a shared
            // queue cannot be redeclared as exclusive.
            let q = &self.queues[qid];
            return match (q.config.exclusive_owner, config.exclusive_owner) {
                (Some(owner), new) if new != Some(owner) => Err(q.locked()),
                (None, Some(_)) => Err(q.locked()),
                _ if q.config == config => Ok(Reply::Int(0)),
                _ => Err(CoreError::QueueConfigMismatch(name)),
            };
        }
        if let Some(owner) = config.exclusive_owner {
            self.session(owner)?;
        }
        self.insert_queue(name, config);
        Ok(Reply::Int(1))
    }

    fn insert_queue(&mut self, name: String, config: QueueConfig) -> QueueId {
        let qid = self.next_id();
        if let Some(owner) = config.exclusive_owner {
            self.session_mut(owner).exclusive_queues.insert(qid);
        }
        self.queue_ids.insert(name.clone(), qid);
        self.queues.insert(qid, Queue::new(name, config));
        qid
    }

    /// Refuses a session other than the owner of an exclusive queue. Without a session (a
    /// command not sent for one) there is nothing to check.
    pub(crate) fn check_exclusive(&self, qid: QueueId, actor: Option<SessionId>) -> Result<(), CoreError> {
        let q = &self.queues[&qid];
        match (q.config.exclusive_owner, actor) {
            (Some(owner), Some(actor)) if owner != actor => Err(q.locked()),
            _ => Ok(()),
        }
    }

    fn queue_or_create(&mut self, name: &str) -> QueueId {
        match self.queue_ids.get(name) {
            Some(&qid) => qid,
            None => self.insert_queue(name.to_owned(), QueueConfig::default()),
        }
    }

    pub(crate) fn queue_id(&self, name: &str) -> Result<QueueId, CoreError> {
        self.queue_ids.get(name).copied().ok_or_else(|| CoreError::NoSuchQueue(name.to_owned()))
    }

    fn q(&mut self, qid: QueueId) -> &mut Queue {
        self.queues.get_mut(&qid).expect("queue id is live")
    }

    /// `DeleteQueue`: the exclusivity, `if_unused` and `if_empty` checks, then the delete.
    pub(crate) fn delete_queue_checked(
        &mut self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
        actor: Option<SessionId>,
        fx: &mut Vec<Effect>,
    ) -> Result<Reply, CoreError> {
        let Some(&qid) = self.queue_ids.get(name) else { return Ok(Reply::Int(0)) };
        self.check_exclusive(qid, actor)?;
        let q = &self.queues[&qid];
        if if_unused && !q.consumers.is_empty() {
            return Err(CoreError::Precondition(format!("queue '{name}' in vhost '/' in use")));
        }
        if if_empty && !q.messages.is_empty() {
            return Err(CoreError::Precondition(format!("queue '{name}' in vhost '/' not empty")));
        }
        Ok(self.delete_queue(name, fx))
    }

    /// Deletes a queue: its waiting pops time out, its consumers are cancelled, its messages
    /// and bindings go.
    pub(crate) fn delete_queue(&mut self, name: &str, fx: &mut Vec<Effect>) -> Reply {
        let Some(&qid) = self.queue_ids.get(name) else { return Reply::Int(0) };
        let q = &self.queues[&qid];
        let waiters: Vec<u64> = q.pop_waiters.keys().copied().collect();
        let consumers: Vec<(u64, SessionId)> = q.consumers.iter().map(|(id, c)| (*id, c.session)).collect();
        let messages: Vec<MsgId> = q.messages.keys().copied().collect();
        let dedups: Vec<(String, Timestamp)> = q.dedup.iter().map(|(d, (_, at))| (d.clone(), *at)).collect();
        for wait_id in waiters {
            let session = self.remove_pop_waiter(qid, wait_id);
            fx.push(Effect::PopTimedOut { session, wait_id, queue: name.to_owned() });
        }
        for (consumer_id, session) in consumers {
            self.remove_consumer(qid, consumer_id);
            fx.push(Effect::ConsumerCancelled { session, consumer_id, queue: name.to_owned() });
        }
        for id in messages {
            self.remove_message(qid, id);
        }
        for (dedup, at) in dedups {
            self.timers.remove(at, Timer::DedupExpiry { queue: qid, dedup });
        }
        let q = self.queues.remove(&qid).expect("queue id is live");
        if let Some(owner) = q.config.exclusive_owner {
            self.session_mut(owner).exclusive_queues.remove(&qid);
        }
        self.queue_ids.remove(name);
        self.exchanges.unbind_queue(name);
        Reply::Int(1)
    }

    pub(crate) fn purge_queue(&mut self, name: &str, actor: Option<SessionId>) -> Result<Reply, CoreError> {
        let Some(&qid) = self.queue_ids.get(name) else { return Ok(Reply::Int(0)) };
        self.check_exclusive(qid, actor)?;
        let waiting: Vec<MsgId> = self.queues[&qid]
            .messages
            .iter()
            .filter(|(_, m)| !matches!(m.state, MsgState::InFlight { .. }))
            .map(|(id, _)| *id)
            .collect();
        for &id in &waiting {
            self.remove_message(qid, id);
        }
        self.q(qid).totals.purged += waiting.len() as u64;
        Ok(Reply::Int(waiting.len() as i64))
    }

    pub(crate) fn push(&mut self, p: Push, fx: &mut Vec<Effect>) -> Result<Reply, CoreError> {
        if p.priority > 9 {
            return Err(CoreError::InvalidArgument("priority must be between 0 and 9".into()));
        }
        let due = self.check_push(&p)?;
        let qid = self.queue_or_create(&p.queue);
        let (id, duplicate) = self.store_push(qid, p, due, fx)?;
        Ok(Reply::Pushed { id, duplicate })
    }

    /// The checks a push makes before any queue is touched; returns when it is due.
    fn check_push(&self, p: &Push) -> Result<Option<Timestamp>, CoreError> {
        let due = if p.delay > 0 { Some(self.deadline(p.delay)?) } else { None };
        if let Some(ttl) = p.ttl {
            self.deadline(ttl)?;
        }
        self.check_fence(p.fence.as_ref())?;
        Ok(due)
    }

    /// Routes a message through an exchange and stores a copy in every queue it reaches, each
    /// as a push to that queue (its own id, the queue's TTL, bounds and dedup window).
    pub(crate) fn publish(&mut self, p: crate::Publish, fx: &mut Vec<Effect>) -> Result<Reply, CoreError> {
        let exchange = self.exchanges.get(&p.exchange);
        if exchange.is_some_and(|x| x.internal) {
            return Err(CoreError::AccessRefused(format!(
                "cannot publish to internal exchange '{}' in vhost '/'",
                p.exchange
            )));
        }
        let targets = self.route(&p.exchange, &p.routing_key)?;
        let due = self.check_push(&p.push)?;
        let (mut routed, mut refused) = (0, 0);
        for qid in targets {
            let push = Push { queue: self.queues[&qid].name.clone(), ..p.push.clone() };
            match self.store_push(qid, push, due, fx) {
                Ok(_) => routed += 1,
                Err(_) => refused += 1,
            }
        }
        Ok(Reply::Published { routed, refused })
    }

    /// Stores a checked push in queue `qid`: returns its id and whether it was a duplicate, or
    /// `QueueFull` (and nothing changed) when the queue is full and refuses.
    fn store_push(
        &mut self,
        qid: QueueId,
        p: Push,
        due: Option<Timestamp>,
        fx: &mut Vec<Effect>,
    ) -> Result<(MsgId, bool), CoreError> {
        let now = self.clock;
        let q = &self.queues[&qid];
        if let Some(&(id, until)) = p.dedup.as_ref().and_then(|d| q.dedup.get(d)) {
            if until > now {
                self.q(qid).totals.deduplicated += 1;
                return Ok((id, true));
            }
        }
        let max_len = q.config.max_len;
        if max_len > 0 && q.messages.len() as u64 >= max_len {
            let head = q.eligible.first().map(|(_, id)| *id).or_else(|| q.ready.first().copied());
            match (q.config.overflow, head) {
                (Overflow::DropHead, Some(head)) => self.dead_letter(qid, head, DeadReason::MaxLen, fx),
                _ => return Err(CoreError::QueueFull { name: q.name.clone(), max_len }),
            }
        }
        let id = self.next_id();
        let q = self.q(qid);
        let ttl = p.ttl.or(q.config.ttl);
        let priority = p.priority.min(q.config.max_priority);
        if let Some(dedup) = p.dedup {
            let until = now + q.config.dedup_window;
            if let Some((_, old)) = q.dedup.insert(dedup.clone(), (id, until)) {
                self.timers.remove(old, Timer::DedupExpiry { queue: qid, dedup: dedup.clone() });
            }
            self.timers.add(until, Timer::DedupExpiry { queue: qid, dedup });
        }
        let msg = Message {
            payload: p.payload,
            properties: p.properties,
            priority,
            pushed_at: now,
            deliveries: 0,
            group: p.group,
            expires_at: ttl.map(|t| now + t),
            dead: None,
            state: MsgState::Ready,
        };
        self.q(qid).totals.pushed += 1;
        self.insert_message(qid, id, msg, due, fx);
        Ok((id, false))
    }

    /// Stores a message arriving in a queue (pushed, dead-lettered or redriven) and serves it.
    fn insert_message(
        &mut self,
        qid: QueueId,
        id: MsgId,
        msg: Message,
        due: Option<Timestamp>,
        fx: &mut Vec<Effect>,
    ) {
        let q = self.q(qid);
        q.payload_bytes += msg.size();
        q.dead += u64::from(msg.dead.is_some());
        if let Some(group) = &msg.group {
            q.groups.entry(group.clone()).or_default().insert(id);
        }
        q.messages.insert(id, msg);
        let state = match due {
            Some(until) => MsgState::Delayed { until },
            None => MsgState::Ready,
        };
        self.enter_state(qid, id, state);
        self.serve(qid, fx);
    }

    pub(crate) fn pop(&mut self, p: Pop, fx: &mut Vec<Effect>) -> Result<Reply, CoreError> {
        if p.count == 0 {
            return Err(CoreError::InvalidArgument("count must be at least 1".into()));
        }
        if let Some(lease) = p.lease {
            self.deadline(lease)?;
        }
        let deadline = if p.wait > 0 { Some(self.deadline(p.wait)?) } else { None };
        if let Some(session) = p.session {
            self.session(session)?;
        }
        let Some(&qid) = self.queue_ids.get(&p.queue) else {
            if deadline.is_none() {
                return Ok(Reply::Nil);
            }
            // Like Redis's BLPOP on a missing key, a waiting pop waits for the first push.
            let session = p.session.ok_or(CoreError::WaitWithoutSession)?;
            let qid = self.queue_or_create(&p.queue);
            let lease = p.lease.unwrap_or(self.queues[&qid].config.lease);
            let wait_id = self.add_pop_waiter(qid, session, &p, lease, deadline.expect("waiting"));
            return Ok(Reply::Waiting { wait_id });
        };
        self.check_exclusive(qid, p.session)?;
        let lease = p.lease.unwrap_or(self.queues[&qid].config.lease);
        if !self.queues[&qid].eligible.is_empty() {
            let owner = if p.keep { None } else { p.session };
            let deliveries = self.deliver(qid, p.count, owner, None, lease, p.auto_ack);
            self.serve(qid, fx);
            return Ok(Reply::Deliveries(deliveries));
        }
        match (deadline, p.session) {
            (None, _) => Ok(Reply::Nil),
            (Some(_), None) => Err(CoreError::WaitWithoutSession),
            (Some(deadline), Some(session)) => {
                let wait_id = self.add_pop_waiter(qid, session, &p, lease, deadline);
                Ok(Reply::Waiting { wait_id })
            }
        }
    }

    fn add_pop_waiter(
        &mut self,
        qid: QueueId,
        session: SessionId,
        p: &Pop,
        lease: Millis,
        deadline: Timestamp,
    ) -> u64 {
        let wait_id = self.next_id();
        let waiter =
            PopWaiter { session, count: p.count, lease, auto_ack: p.auto_ack, keep: p.keep, deadline };
        let q = self.q(qid);
        q.pop_waiters.insert(wait_id, waiter);
        q.takers.push_back(Taker::Pop { wait_id });
        self.waits.insert(wait_id, WaitTarget::Pop(qid));
        self.session_mut(session).waits.insert(wait_id);
        self.timers.add(deadline, Timer::WaitDeadline { wait_id });
        wait_id
    }

    /// Takes a waiting pop out of its line, with its timer; returns its session.
    pub(crate) fn remove_pop_waiter(&mut self, qid: QueueId, wait_id: u64) -> SessionId {
        let q = self.q(qid);
        let waiter = q.pop_waiters.remove(&wait_id).expect("pop waiter exists");
        q.takers.retain(|t| *t != Taker::Pop { wait_id });
        self.waits.remove(&wait_id);
        self.session_mut(waiter.session).waits.remove(&wait_id);
        self.timers.remove(waiter.deadline, Timer::WaitDeadline { wait_id });
        waiter.session
    }

    pub(crate) fn consume(&mut self, c: Consume, fx: &mut Vec<Effect>) -> Result<Reply, CoreError> {
        if let Some(lease) = c.lease {
            self.deadline(lease)?;
        }
        self.session(c.session)?;
        if let Some(&qid) = self.queue_ids.get(&c.queue) {
            self.check_exclusive(qid, Some(c.session))?;
            let q = &self.queues[&qid];
            if q.consumers.values().any(|x| x.exclusive) || (c.exclusive && !q.consumers.is_empty()) {
                return Err(CoreError::AccessRefused(format!(
                    "queue '{}' in vhost '/' in exclusive use",
                    c.queue
                )));
            }
        }
        let qid = self.queue_or_create(&c.queue);
        let consumer_id = self.next_id();
        let lease = c.lease.unwrap_or(self.queues[&qid].config.lease);
        let consumer = Consumer {
            session: c.session,
            credit: c.credit,
            lease,
            auto_ack: c.auto_ack,
            exclusive: c.exclusive,
            pool: c.pool.map(|p| p.id),
            unacked: 0,
        };
        let q = self.q(qid);
        q.consumers.insert(consumer_id, consumer);
        q.had_consumer = true;
        q.takers.push_back(Taker::Consumer { consumer_id });
        self.session_mut(c.session).consumers.insert((qid, consumer_id));
        if let Some(p) = c.pool {
            let pool = self.pools.entry((c.session, p.id)).or_default();
            pool.consumers.insert((qid, consumer_id));
            // The latest limit wins; a raised one may let the pool's other consumers go on.
            if pool.limit != p.limit {
                pool.limit = p.limit;
                self.to_serve.extend(pool.consumers.iter().map(|(q, _)| *q));
            }
        }
        self.serve(qid, fx);
        Ok(Reply::Consumer { consumer_id })
    }

    pub(crate) fn cancel(&mut self, queue: &str, consumer_id: u64, fx: &mut Vec<Effect>) -> Reply {
        match self.queue_ids.get(queue) {
            Some(&qid) if self.queues[&qid].consumers.contains_key(&consumer_id) => {
                self.remove_consumer(qid, consumer_id);
                self.auto_delete_queue(qid, fx);
                Reply::Int(1)
            }
            _ => Reply::Int(0),
        }
    }

    /// Deletes an `auto_delete` queue that has had a consumer and has none left.
    pub(crate) fn auto_delete_queue(&mut self, qid: QueueId, fx: &mut Vec<Effect>) {
        let Some(q) = self.queues.get(&qid) else { return };
        if q.config.auto_delete && q.had_consumer && q.consumers.is_empty() {
            let name = q.name.clone();
            self.delete_queue(&name, fx);
        }
    }

    /// Removes a consumer; its in-flight deliveries stay until acked, nacked or expired, but no
    /// longer count against its pool. With a single active consumer, the next one takes over.
    pub(crate) fn remove_consumer(&mut self, qid: QueueId, consumer_id: u64) {
        let q = self.q(qid);
        let consumer = q.consumers.remove(&consumer_id).expect("consumer exists");
        q.takers.retain(|t| *t != Taker::Consumer { consumer_id });
        if q.config.single_active_consumer {
            self.to_serve.insert(qid);
        }
        self.session_mut(consumer.session).consumers.remove(&(qid, consumer_id));
        if let Some(id) = consumer.pool {
            let key = (consumer.session, id);
            let pool = self.pools.get_mut(&key).expect("pool of a consumer");
            pool.consumers.remove(&(qid, consumer_id));
            pool.unacked -= consumer.unacked;
            if pool.consumers.is_empty() {
                self.pools.remove(&key);
            } else if consumer.unacked > 0 {
                self.to_serve.extend(pool.consumers.iter().map(|(q, _)| *q));
            }
        }
    }

    /// Serves the queues whose takers gained credit during this step (see `State::to_serve`).
    pub(crate) fn serve_pending(&mut self, fx: &mut Vec<Effect>) {
        while let Some(qid) = self.to_serve.pop_first() {
            if self.queues.contains_key(&qid) {
                self.serve(qid, fx);
            }
        }
    }

    /// Hands ready messages to the takers in line while both last.
    fn serve(&mut self, qid: QueueId, fx: &mut Vec<Effect>) {
        loop {
            let q = &self.queues[&qid];
            if q.eligible.is_empty() {
                return;
            }
            let Some(at) = q.next_taker(&self.pools) else { return };
            let queue = q.name.clone();
            match q.takers[at] {
                Taker::Pop { wait_id } => {
                    let w = q.pop_waiters[&wait_id].clone();
                    self.remove_pop_waiter(qid, wait_id);
                    let owner = if w.keep { None } else { Some(w.session) };
                    let deliveries = self.deliver(qid, w.count, owner, None, w.lease, w.auto_ack);
                    fx.push(Effect::Delivered {
                        session: w.session,
                        to: Taker::Pop { wait_id },
                        queue,
                        deliveries,
                    });
                }
                Taker::Consumer { consumer_id } => {
                    let c = q.consumers[&consumer_id].clone();
                    let q = self.q(qid);
                    let taker = q.takers.remove(at).expect("taker exists");
                    q.takers.push_back(taker);
                    let deliveries =
                        self.deliver(qid, 1, Some(c.session), Some(consumer_id), c.lease, c.auto_ack);
                    let to = Taker::Consumer { consumer_id };
                    fx.push(Effect::Delivered { session: c.session, to, queue, deliveries });
                }
            }
        }
    }

    /// Delivers up to `count` eligible messages, each with its own receipt and lease.
    fn deliver(
        &mut self,
        qid: QueueId,
        count: u32,
        session: Option<SessionId>,
        consumer: Option<u64>,
        lease: Millis,
        auto_ack: bool,
    ) -> Vec<Delivery> {
        let mut out = Vec::new();
        while out.len() < count as usize {
            let Some(&(_, id)) = self.queues[&qid].eligible.first() else { break };
            let receipt = self.next_token();
            let q = self.q(qid);
            q.totals.delivered += 1;
            let msg = q.messages.get_mut(&id).expect("eligible message exists");
            msg.deliveries += 1;
            let delivery = Delivery {
                id,
                receipt,
                payload: msg.payload.clone(),
                properties: msg.properties.clone(),
                deliveries: msg.deliveries,
                priority: msg.priority,
                lease,
                dead: msg.dead.as_deref().cloned(),
            };
            if auto_ack {
                self.remove_message(qid, id);
                self.q(qid).totals.acked += 1;
            } else {
                let lease_until = self.clock + lease;
                self.move_to(qid, id, MsgState::InFlight { receipt, lease_until, lease, session, consumer });
            }
            out.push(delivery);
        }
        out
    }

    pub(crate) fn ack(
        &mut self,
        queue: &str,
        receipts: &[u64],
        fence: Option<&Fence>,
        fx: &mut Vec<Effect>,
    ) -> Result<Reply, CoreError> {
        self.check_fence(fence)?;
        let Some(&qid) = self.queue_ids.get(queue) else { return Ok(Reply::Int(0)) };
        let mut acked = 0;
        for receipt in receipts {
            if let Some(&id) = self.queues[&qid].in_flight.get(receipt) {
                self.remove_message(qid, id);
                self.q(qid).totals.acked += 1;
                acked += 1;
            }
        }
        self.serve(qid, fx);
        Ok(Reply::Int(acked))
    }

    pub(crate) fn nack(
        &mut self,
        queue: &str,
        receipt: u64,
        delay: Millis,
        dead_letter: bool,
        fx: &mut Vec<Effect>,
    ) -> Result<Reply, CoreError> {
        if delay > 0 {
            self.deadline(delay)?;
        }
        let Some(&qid) = self.queue_ids.get(queue) else { return Ok(Reply::Int(0)) };
        let Some(&id) = self.queues[&qid].in_flight.get(&receipt) else { return Ok(Reply::Int(0)) };
        if dead_letter {
            self.dead_letter(qid, id, DeadReason::Rejected, fx);
        } else {
            self.requeue(qid, id, delay, fx);
        }
        Ok(Reply::Int(1))
    }

    pub(crate) fn extend(&mut self, queue: &str, receipt: u64, lease: Millis) -> Result<Reply, CoreError> {
        let until = self.deadline(lease)?;
        let lost = CoreError::LostDelivery { receipt };
        let qid = self.queue_ids.get(queue).copied().ok_or(lost.clone())?;
        let id = self.queues[&qid].in_flight.get(&receipt).copied().ok_or(lost)?;
        self.set_lease(qid, id, until, lease);
        Ok(Reply::Int(lease as i64))
    }

    fn set_lease(&mut self, qid: QueueId, id: MsgId, until: Timestamp, new_lease: Millis) {
        let msg = self.q(qid).messages.get_mut(&id).expect("message exists");
        let MsgState::InFlight { receipt, lease_until, lease, .. } = &mut msg.state else {
            unreachable!("set_lease on a message not in flight")
        };
        let (receipt, old) = (*receipt, *lease_until);
        (*lease_until, *lease) = (until, new_lease);
        self.timers.reschedule(old, until, Timer::DeliveryLease { queue: qid, receipt });
    }

    pub(crate) fn refresh_delivery_leases(&mut self) {
        let mut leases = Vec::new();
        for (&qid, q) in &self.queues {
            for &id in q.in_flight.values() {
                if let MsgState::InFlight { lease_until, lease, .. } = q.messages[&id].state {
                    leases.push((qid, id, lease_until.max(self.clock + lease), lease));
                }
            }
        }
        for (qid, id, until, lease) in leases {
            self.set_lease(qid, id, until, lease);
        }
    }

    /// Keeps a delivery in flight but frees it from its session (the session is ending).
    pub(crate) fn detach_delivery(&mut self, qid: QueueId, receipt: u64) {
        let q = self.q(qid);
        let id = q.in_flight[&receipt];
        let msg = q.messages.get_mut(&id).expect("in-flight message exists");
        if let MsgState::InFlight { session: slot, .. } = &mut msg.state {
            if let Some(session) = slot.take() {
                self.session_mut(session).deliveries.remove(&(qid, receipt));
            }
        }
    }

    /// A delivery that comes back unacked (lease expiry, session close).
    pub(crate) fn return_delivery(&mut self, qid: QueueId, receipt: u64, fx: &mut Vec<Effect>) {
        let id = self.queues[&qid].in_flight[&receipt];
        self.requeue(qid, id, 0, fx);
    }

    pub(crate) fn delivery_expired(&mut self, qid: QueueId, receipt: u64, fx: &mut Vec<Effect>) {
        let id = self.queues[&qid].in_flight[&receipt];
        fx.push(Effect::DeliveryExpired { queue: self.queues[&qid].name.clone(), id, receipt });
        self.requeue(qid, id, 0, fx);
    }

    /// Puts an in-flight message back for another delivery, unless it has used its last one or
    /// its TTL ran out while it was out.
    fn requeue(&mut self, qid: QueueId, id: MsgId, delay: Millis, fx: &mut Vec<Effect>) {
        let q = self.q(qid);
        q.totals.returned += 1;
        let max = q.config.max_deliveries;
        let msg = &q.messages[&id];
        if max > 0 && msg.deliveries >= max {
            self.dead_letter(qid, id, DeadReason::MaxDeliveries, fx);
        } else if msg.expires_at.is_some_and(|at| at <= self.clock) {
            self.dead_letter(qid, id, DeadReason::Expired, fx);
        } else {
            let state =
                if delay > 0 { MsgState::Delayed { until: self.clock + delay } } else { MsgState::Ready };
            self.move_to(qid, id, state);
            self.serve(qid, fx);
        }
    }

    pub(crate) fn message_due(&mut self, qid: QueueId, id: MsgId, fx: &mut Vec<Effect>) {
        self.move_to(qid, id, MsgState::Ready);
        self.serve(qid, fx);
    }

    pub(crate) fn message_expired(&mut self, qid: QueueId, id: MsgId, fx: &mut Vec<Effect>) {
        self.dead_letter(qid, id, DeadReason::Expired, fx);
    }

    pub(crate) fn dedup_expired(&mut self, qid: QueueId, dedup: &str) {
        let (_, until) = self.q(qid).dedup.remove(dedup).expect("dedup entry of a timer");
        self.timers.remove(until, Timer::DedupExpiry { queue: qid, dedup: dedup.to_owned() });
    }

    /// Moves a message to the queue's dead-letter queue, or counts it gone when there is none.
    fn dead_letter(&mut self, qid: QueueId, id: MsgId, reason: DeadReason, fx: &mut Vec<Effect>) {
        let msg = self.remove_message(qid, id);
        // Its leaving may free a consumer's credit or let its group's next message go.
        self.serve(qid, fx);
        let q = &self.queues[&qid];
        let from = q.name.clone();
        let mut via = None;
        let targets = match (&q.config.dead_letter, &q.config.dead_letter_exchange) {
            (Some(dlq), _) => {
                let dlq = dlq.clone();
                vec![self.queue_or_create(&dlq)]
            }
            // Through an exchange: a copy per queue reached, but never back into this queue.
            (None, Some(dlx)) => {
                let key = dlx.routing_key.clone().unwrap_or_else(|| from.clone());
                let routed = self.route(&dlx.exchange, &key).unwrap_or_default();
                via = Some(DeadLetterExchange { exchange: dlx.exchange.clone(), routing_key: Some(key) });
                routed.into_iter().filter(|&t| t != qid).collect()
            }
            (None, None) => Vec::new(),
        };
        let q = self.q(qid);
        if targets.is_empty() {
            match reason {
                DeadReason::Expired => q.totals.expired += 1,
                DeadReason::MaxLen => q.totals.dropped += 1,
                DeadReason::MaxDeliveries | DeadReason::Rejected => q.totals.discarded += 1,
            }
            return;
        }
        q.totals.dead_lettered += 1;
        let dead = Some(DeadLetter { reason, from, via });
        let mut msg = Some(msg);
        let last = targets.len() - 1;
        for (i, target) in targets.into_iter().enumerate() {
            // The first copy keeps the message's id; ids are unique across queues, so each other
            // copy takes a new one.
            let copy_id = if i == 0 { id } else { self.next_id() };
            self.q(target).totals.dead_letters_in += 1;
            let copy = if i == last { msg.take() } else { msg.clone() }.expect("a copy is left");
            self.arrive(target, copy_id, copy, dead.clone(), fx);
        }
    }

    /// A message moved in from another queue (dead-lettered or redriven) starts afresh there:
    /// no deliveries, no group, the target queue's TTL and priority bound.
    fn arrive(
        &mut self,
        qid: QueueId,
        id: MsgId,
        msg: Message,
        dead: Option<DeadLetter>,
        fx: &mut Vec<Effect>,
    ) {
        let config = &self.queues[&qid].config;
        let (ttl, priority) = (config.ttl, msg.priority.min(config.max_priority));
        let msg = Message {
            priority,
            deliveries: 0,
            group: None,
            expires_at: ttl.map(|t| self.clock + t),
            dead: dead.map(Box::new),
            state: MsgState::Ready,
            ..msg
        };
        self.insert_message(qid, id, msg, None, fx);
    }

    pub(crate) fn redrive(
        &mut self,
        from: &str,
        to: String,
        count: u64,
        fx: &mut Vec<Effect>,
    ) -> Result<Reply, CoreError> {
        let source = self.queue_id(from)?;
        if from == to {
            return Err(CoreError::InvalidArgument("redrive source and target must differ".into()));
        }
        let ids: Vec<MsgId> = self.queues[&source]
            .ready
            .iter()
            .take(usize::try_from(count).unwrap_or(usize::MAX))
            .copied()
            .collect();
        let target = self.queue_or_create(&to);
        for &id in &ids {
            let msg = self.remove_message(source, id);
            self.q(source).totals.redriven_out += 1;
            self.q(target).totals.redriven_in += 1;
            self.arrive(target, id, msg, None, fx);
        }
        self.serve(source, fx);
        Ok(Reply::Int(ids.len() as i64))
    }

    /// Takes a message out of its queue entirely (every index, every timer).
    fn remove_message(&mut self, qid: QueueId, id: MsgId) -> Message {
        self.leave_state(qid, id);
        let q = self.q(qid);
        let msg = q.messages.remove(&id).expect("message exists");
        q.payload_bytes -= msg.size();
        q.dead -= u64::from(msg.dead.is_some());
        if let Some(group) = &msg.group {
            let members = q.groups.get_mut(group).expect("group of a message");
            members.remove(&id);
            // The group's next message may now be delivered.
            match members.first().copied() {
                None => {
                    q.groups.remove(group);
                }
                Some(next) if q.messages[&next].state == MsgState::Ready => {
                    q.eligible.insert((Reverse(q.messages[&next].priority), next));
                }
                Some(_) => {}
            }
        }
        msg
    }

    /// Clears a message out of the indexes and timers of its current state (and its TTL timer).
    fn leave_state(&mut self, qid: QueueId, id: MsgId) {
        let q = self.queues.get_mut(&qid).expect("queue id is live");
        let msg = &q.messages[&id];
        if msg.ttl_timer_armed() {
            let at = msg.expires_at.expect("armed");
            self.timers.remove(at, Timer::MessageExpiry { queue: qid, id });
        }
        match msg.state {
            MsgState::Ready => {
                q.ready.remove(&id);
                q.eligible.remove(&(Reverse(msg.priority), id));
            }
            MsgState::Delayed { until } => {
                q.delayed -= 1;
                self.timers.remove(until, Timer::MessageDue { queue: qid, id });
            }
            MsgState::InFlight { receipt, lease_until, session, consumer, .. } => {
                q.in_flight.remove(&receipt);
                if let Some(c) = consumer.and_then(|c| q.consumers.get_mut(&c)) {
                    c.unacked -= 1;
                    if let Some(pool) = c.pool.and_then(|p| self.pools.get_mut(&(c.session, p))) {
                        // Freed credit may let the pool's consumers on other queues go on.
                        if !pool.has_credit() {
                            self.to_serve.extend(pool.consumers.iter().map(|(q, _)| *q));
                        }
                        pool.unacked -= 1;
                    }
                }
                self.timers.remove(lease_until, Timer::DeliveryLease { queue: qid, receipt });
                if let Some(session) = session {
                    self.session_mut(session).deliveries.remove(&(qid, receipt));
                }
            }
        }
    }

    /// Moves a stored message from its state to `state`.
    fn move_to(&mut self, qid: QueueId, id: MsgId, state: MsgState) {
        self.leave_state(qid, id);
        self.enter_state(qid, id, state);
    }

    /// Indexes a message (stored, but in no index yet) in `state`, and arms its timers.
    fn enter_state(&mut self, qid: QueueId, id: MsgId, state: MsgState) {
        let q = self.queues.get_mut(&qid).expect("queue id is live");
        let msg = q.messages.get_mut(&id).expect("message exists");
        msg.state = state.clone();
        let (priority, expires_at) = (msg.priority, msg.expires_at);
        match state {
            MsgState::Ready => {
                q.ready.insert(id);
                if q.may_deliver(id, &q.messages[&id]) {
                    q.eligible.insert((Reverse(priority), id));
                }
            }
            MsgState::Delayed { until } => {
                q.delayed += 1;
                self.timers.add(until, Timer::MessageDue { queue: qid, id });
            }
            MsgState::InFlight { receipt, lease_until, session, consumer, .. } => {
                q.in_flight.insert(receipt, id);
                if let Some(c) = consumer.and_then(|c| q.consumers.get_mut(&c)) {
                    c.unacked += 1;
                    if let Some(pool) = c.pool.and_then(|p| self.pools.get_mut(&(c.session, p))) {
                        pool.unacked += 1;
                    }
                }
                self.timers.add(lease_until, Timer::DeliveryLease { queue: qid, receipt });
                if let Some(session) = session {
                    self.session_mut(session).deliveries.insert((qid, receipt));
                }
            }
        }
        if self.queues[&qid].messages[&id].ttl_timer_armed() {
            self.timers.add(expires_at.expect("armed"), Timer::MessageExpiry { queue: qid, id });
        }
    }

    pub(crate) fn queue_stats(&self, name: &str, now: Timestamp) -> Result<Reply, CoreError> {
        let q = &self.queues[&self.queue_id(name)?];
        let oldest = q.ready.first().map(|id| now.saturating_sub(q.messages[id].pushed_at)).unwrap_or(0);
        Ok(Reply::QueueStats(QueueStats {
            ready: q.ready.len() as u64,
            delayed: q.delayed,
            in_flight: q.in_flight.len() as u64,
            dead: q.dead,
            consumers: q.consumers.len() as u64,
            waiting_pops: q.pop_waiters.len() as u64,
            oldest_ready_age: oldest,
            payload_bytes: q.payload_bytes,
            totals: q.totals,
        }))
    }

    pub(crate) fn peek(&self, name: &str, count: u32, now: Timestamp) -> Result<Reply, CoreError> {
        let q = &self.queues[&self.queue_id(name)?];
        // A message whose TTL has run out is gone to a reader, even before the tick that ends it.
        let views = q
            .eligible
            .iter()
            .map(|(_, id)| (id, &q.messages[id]))
            .filter(|(_, m)| m.expires_at.is_none_or(|at| at > now))
            .take(count as usize)
            .map(|(id, m)| MessageView {
                id: *id,
                payload: m.payload.clone(),
                priority: m.priority,
                deliveries: m.deliveries,
                age: now.saturating_sub(m.pushed_at),
                group: m.group.clone(),
                dead: m.dead.as_deref().cloned(),
            })
            .collect();
        Ok(Reply::Messages(views))
    }

    /// Puts back a queue read from a snapshot, with its messages, and rebuilds what the snapshot
    /// leaves out (see `snapshot.rs`): groups first (a ready message is eligible only as its
    /// group's oldest), then each message's place, counts and timers, then its takers' waits and
    /// sessions. Sets built from id-ordered lists are built in bulk.
    pub(crate) fn restore_queue(
        &mut self,
        qid: QueueId,
        mut q: Queue,
        messages: BTreeMap<MsgId, Message>,
        timers: &mut TimerList,
    ) -> Result<(), String> {
        q.messages = messages;
        for (&id, m) in &q.messages {
            if let Some(group) = &m.group {
                q.groups.entry(group.clone()).or_default().insert(id);
            }
        }
        let (mut ready, mut eligible) = (Vec::new(), Vec::new());
        for (&id, m) in &q.messages {
            q.payload_bytes += m.size();
            q.dead += u64::from(m.dead.is_some());
            if let Some(at) = m.expires_at.filter(|_| m.ttl_timer_armed()) {
                timers.push((at, Timer::MessageExpiry { queue: qid, id }));
            }
            match m.state {
                MsgState::Ready => {
                    ready.push(id);
                    if q.may_deliver(id, m) {
                        eligible.push((Reverse(m.priority), id));
                    }
                }
                MsgState::Delayed { until } => {
                    q.delayed += 1;
                    timers.push((until, Timer::MessageDue { queue: qid, id }));
                }
                MsgState::InFlight { receipt, lease_until, session, consumer, .. } => {
                    q.in_flight.insert(receipt, id);
                    if let Some(c) = consumer.and_then(|c| q.consumers.get_mut(&c)) {
                        c.unacked += 1;
                        if let Some(p) = c.pool {
                            let pool = self.pools.get_mut(&(c.session, p));
                            pool.ok_or_else(|| format!("consumer of a missing pool {p}"))?.unacked += 1;
                        }
                    }
                    timers.push((lease_until, Timer::DeliveryLease { queue: qid, receipt }));
                    if let Some(session) = session {
                        Session::restored(&mut self.sessions, session)?.deliveries.insert((qid, receipt));
                    }
                }
            }
        }
        q.ready = ready.into_iter().collect();
        q.eligible = eligible.into_iter().collect();
        for (&wait_id, w) in &q.pop_waiters {
            self.waits.insert(wait_id, WaitTarget::Pop(qid));
            Session::restored(&mut self.sessions, w.session)?.waits.insert(wait_id);
            timers.push((w.deadline, Timer::WaitDeadline { wait_id }));
        }
        for (&consumer_id, c) in &q.consumers {
            Session::restored(&mut self.sessions, c.session)?.consumers.insert((qid, consumer_id));
            if let Some(p) = c.pool {
                let pool = self.pools.get_mut(&(c.session, p));
                pool.ok_or_else(|| format!("consumer of a missing pool {p}"))?
                    .consumers
                    .insert((qid, consumer_id));
            }
        }
        if let Some(owner) = q.config.exclusive_owner {
            Session::restored(&mut self.sessions, owner)?.exclusive_queues.insert(qid);
        }
        for (dedup, &(_, until)) in &q.dedup {
            timers.push((until, Timer::DedupExpiry { queue: qid, dedup: dedup.clone() }));
        }
        if self.queue_ids.insert(q.name.clone(), qid).is_some() {
            return Err(format!("two queues are named {}", q.name));
        }
        self.queues.insert(qid, q);
        Ok(())
    }

    pub(crate) fn check_queues(&self) -> Result<(), String> {
        let mut seen = BTreeSet::new();
        for (&qid, q) in &self.queues {
            let name = &q.name;
            ensure!(self.queue_ids.get(name) == Some(&qid), "queue {name} not indexed by name");
            let (mut ready, mut delayed, mut in_flight, mut dead, mut bytes) = (0, 0, 0, 0, 0);
            for (&id, m) in &q.messages {
                ensure!(seen.insert(id), "message {id} stored twice");
                ensure!(id <= self.last_id, "message {id} from the future");
                ensure!(m.priority <= q.config.max_priority, "{name}: {id} above the max priority");
                bytes += m.size();
                dead += u64::from(m.dead.is_some());
                if let Some(g) = &m.group {
                    ensure!(
                        q.groups.get(g).is_some_and(|s| s.contains(&id)),
                        "{name}: {id} not in its group"
                    );
                }
                if let Some(at) = m.expires_at.filter(|_| m.ttl_timer_armed()) {
                    ensure!(
                        self.timers.contains(at, &Timer::MessageExpiry { queue: qid, id }),
                        "{name}: {id} ttl"
                    );
                }
                let eligible = q.eligible.contains(&(Reverse(m.priority), id));
                match &m.state {
                    MsgState::Ready => {
                        ready += 1;
                        ensure!(q.ready.contains(&id), "{name}: ready {id} not indexed");
                        ensure!(eligible == q.may_deliver(id, m), "{name}: {id} eligibility wrong");
                    }
                    MsgState::Delayed { until } => {
                        delayed += 1;
                        ensure!(!eligible && !q.ready.contains(&id), "{name}: delayed {id} indexed as ready");
                        ensure!(
                            self.timers.contains(*until, &Timer::MessageDue { queue: qid, id }),
                            "{name}: delay"
                        );
                    }
                    MsgState::InFlight { receipt, lease_until, .. } => {
                        in_flight += 1;
                        ensure!(
                            !eligible && !q.ready.contains(&id),
                            "{name}: in-flight {id} indexed as ready"
                        );
                        ensure!(
                            q.in_flight.get(receipt) == Some(&id),
                            "{name}: receipt {receipt} not indexed"
                        );
                        ensure!(*receipt <= self.last_token, "{name}: receipt from the future");
                        let timer = Timer::DeliveryLease { queue: qid, receipt: *receipt };
                        ensure!(self.timers.contains(*lease_until, &timer), "{name}: lease timer");
                    }
                }
            }
            ensure!(ready == q.ready.len(), "{name}: ready index size");
            ensure!(delayed == q.delayed, "{name}: delayed count");
            ensure!(in_flight == q.in_flight.len(), "{name}: in-flight index size");
            ensure!(dead == q.dead && bytes == q.payload_bytes, "{name}: dead or byte count");
            let stored = q.messages.len() as u64;
            let (entered, left) = (q.totals.entered(), q.totals.left());
            ensure!(entered == left + stored, "{name}: {entered} entered, {left} left, {stored} stored");
            for (g, members) in &q.groups {
                ensure!(!members.is_empty(), "{name}: empty group {g}");
                let out = members
                    .iter()
                    .filter(|id| !matches!(q.messages[id].state, MsgState::Ready | MsgState::Delayed { .. }));
                ensure!(out.count() <= 1, "{name}: group {g} has several messages in flight");
            }
            ensure!(q.takers.len() == q.pop_waiters.len() + q.consumers.len(), "{name}: taker line");
            if !q.eligible.is_empty() {
                ensure!(q.next_taker(&self.pools).is_none(), "{name}: a taker could be served");
            }
            if let Some(owner) = q.config.exclusive_owner {
                let s = self.sessions.get(&owner);
                ensure!(
                    s.is_some_and(|s| s.exclusive_queues.contains(&qid)),
                    "{name}: owner does not list it"
                );
            }
            if q.config.auto_delete && q.had_consumer {
                ensure!(!q.consumers.is_empty(), "{name}: auto-delete queue left without consumers");
            }
            ensure!(q.consumers.is_empty() || q.had_consumer, "{name}: consumers but never had one");
            if q.consumers.values().any(|c| c.exclusive) {
                ensure!(q.consumers.len() == 1, "{name}: an exclusive consumer shares the queue");
            }
            for (cid, c) in &q.consumers {
                let unacked = q
                    .messages
                    .values()
                    .filter(|m| matches!(m.state, MsgState::InFlight { consumer: Some(x), .. } if x == *cid))
                    .count();
                ensure!(unacked == c.unacked as usize, "{name}: consumer {cid} unacked count");
            }
            for (cid, c) in &q.consumers {
                if let Some(p) = c.pool {
                    let pool = self.pools.get(&(c.session, p));
                    ensure!(
                        pool.is_some_and(|p| p.consumers.contains(&(qid, *cid))),
                        "{name}: consumer {cid} pool"
                    );
                }
            }
            for wait_id in q.pop_waiters.keys() {
                ensure!(self.waits.get(wait_id) == Some(&WaitTarget::Pop(qid)), "{name}: pop wait {wait_id}");
            }
        }
        Ok(())
    }
}

fn validate_config(name: &str, c: &QueueConfig) -> Result<(), CoreError> {
    let bad = |what: &str| Err(CoreError::InvalidArgument(what.to_owned()));
    if c.dead_letter.as_deref() == Some(name) {
        return bad("a queue cannot be its own dead-letter queue");
    }
    if c.lease == 0 || c.lease > crate::MAX_DURATION || c.dedup_window > crate::MAX_DURATION {
        return bad("lease must be between 1 ms and the maximum duration");
    }
    if c.ttl.is_some_and(|t| t == 0 || t > crate::MAX_DURATION) {
        return bad("ttl must be at least 1 ms");
    }
    Ok(())
}

impl State {
    /// Each pool: its consumers exist and name it, and its count is the sum of theirs.
    pub(crate) fn check_pools(&self) -> Result<(), String> {
        for ((session, id), pool) in &self.pools {
            ensure!(!pool.consumers.is_empty(), "pool {session}/{id} without consumers");
            let mut unacked = 0;
            for (qid, cid) in &pool.consumers {
                let c = self.queues.get(qid).and_then(|q| q.consumers.get(cid));
                ensure!(
                    c.is_some_and(|c| c.session == *session && c.pool == Some(*id)),
                    "pool {session}/{id}: consumer {cid} is not its own"
                );
                unacked += c.map_or(0, |c| c.unacked);
            }
            ensure!(
                unacked == pool.unacked,
                "pool {session}/{id}: {} unacked counted, {unacked} found",
                pool.unacked
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Message;

    /// What a stored message costs besides its bytes. AMQP added nothing per message (a dead
    /// letter's record is boxed); 208 bytes was the size before it.
    #[test]
    fn a_message_is_no_larger_than_before_amqp() {
        assert!(size_of::<Message>() <= 208, "Message is {} bytes", size_of::<Message>());
    }
}
