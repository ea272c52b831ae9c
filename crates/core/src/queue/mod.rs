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
//!
//! This file holds the types; the steps live by noun:
//!
//! | file | what |
//! |---|---|
//! | `lifecycle.rs` | create, delete, purge; exclusive and auto-delete queues |
//! | `push.rs` | push and publish: checks, dedup, the bound and its overflow |
//! | `store.rs` | the indexes and timers of each message state; every move between states; restore |
//! | `delivery.rs` | pops, consumers and their line; `serve` and `deliver` |
//! | `settlement.rs` | ack, nack, extend, lease expiry, session close; requeue |
//! | `dead_letter.rs` | dead-lettering (to a queue or through an exchange) and redrive |
//! | `query.rs` | stats and peek |
//! | `invariants.rs` | the consistency checks |

mod dead_letter;
mod delivery;
mod invariants;
mod lifecycle;
mod push;
mod query;
mod settlement;
mod store;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{CoreError, DeadLetter, Millis, MsgId, QueueId, QueueTotals, SessionId, State, Taker, Timestamp};

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
    pub(crate) fn queue_id(&self, name: &str) -> Result<QueueId, CoreError> {
        self.queue_ids.get(name).copied().ok_or_else(|| CoreError::NoSuchQueue(name.to_owned()))
    }

    fn q(&mut self, qid: QueueId) -> &mut Queue {
        self.queues.get_mut(&qid).expect("queue id is live")
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
