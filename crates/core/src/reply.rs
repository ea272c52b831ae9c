//! What the state machine answers ([`Reply`]) and what it asks the server to do next ([`Effect`]).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{CoreError, Millis, MsgId, SessionId, Timestamp};

/// The answer to one command or query, sent back to the client that asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Ok,
    /// Nothing: a missing key, a lock not granted without waiting, an empty pop.
    Nil,
    Int(i64),
    Bytes(Bytes),
    Session(SessionId),
    /// A hold was granted (or re-confirmed to its owner) with this fencing token and lease.
    Granted {
        token: u64,
        lease: Millis,
    },
    /// The request waits in line; its outcome arrives later as an [`Effect`] naming `wait_id`.
    Waiting {
        wait_id: u64,
    },
    /// `duplicate` is true when a dedup id matched and `id` is the first message's.
    Pushed {
        id: MsgId,
        duplicate: bool,
    },
    Deliveries(Vec<Delivery>),
    Consumer {
        consumer_id: u64,
    },
    LockInfo(LockInfo),
    QueueStats(QueueStats),
    Messages(Vec<MessageView>),
    Names(Vec<String>),
    /// A publish was stored in `routed` queues; `refused` full queues (overflow reject) did not
    /// take it. A message that matched no queue has both 0.
    Published {
        routed: u32,
        refused: u32,
    },
    QueueConfig(Box<crate::QueueConfig>),
    Error(CoreError),

    // Redis-shaped replies (hashes, lists, transactions, scripts). Last, so that the variant
    // numbers above (forwarded replies) stay.
    /// A list of replies, each rendered as it would be alone: `HGETALL`, `LRANGE`, `EXEC`.
    Array(Vec<Reply>),
    /// A simple string other than `OK`: `TYPE`'s `+hash`, a script's `status_reply`.
    Status(String),
}

impl From<CoreError> for Reply {
    fn from(e: CoreError) -> Reply {
        Reply::Error(e)
    }
}

/// Something the server must act on, produced in the same step as the reply. Effects name the
/// session they belong to, so the node that serves that session's connection can deliver them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    /// A waiting acquire was granted.
    Granted { session: SessionId, wait_id: u64, name: String, token: u64, lease: Millis },
    /// A waiting acquire reached its deadline without being granted.
    WaitTimedOut { session: SessionId, wait_id: u64, name: String },
    /// Messages for a waiting pop (`wait_id`) or a consumer.
    Delivered { session: SessionId, to: Taker, queue: String, deliveries: Vec<Delivery> },
    /// A waiting pop reached its deadline, or its queue was deleted, with nothing delivered.
    PopTimedOut { session: SessionId, wait_id: u64, queue: String },
    /// A consumer was stopped by the server (its queue was deleted).
    ConsumerCancelled { session: SessionId, consumer_id: u64, queue: String },
    /// A hold's lease ran out before it was released or renewed.
    HoldExpired { name: String, token: u64, owner: String },
    /// A delivery's lease ran out before it was acked; the message went back (or to the DLQ).
    DeliveryExpired { queue: String, id: MsgId, receipt: u64 },
    // Pub/sub:
    /// A message published on a channel ([`crate::Command::PubSubPublish`]), for every node's
    /// subscribers. `at` is the state's clock when it was applied: a node that applies the entry
    /// long after (replaying its log at start, catching up after a partition) can tell it is
    /// old news and drop it rather than deliver it late.
    Message { channel: Bytes, message: Bytes, at: Timestamp },

    // Redis lists. Last, so that the variant numbers above (forwarded effects) stay.
    /// A blocking list pop ended: `reply` is its answer (`[key, element]` for `BLPOP`, the
    /// element for `BLMOVE`, nil when it timed out, `WRONGTYPE` when `BLMOVE`'s destination
    /// had become another type).
    ListWaitDone { session: SessionId, wait_id: u64, reply: Reply },

    // Users. Last, for the same reason.
    /// The log-kept layer of the user table changed (`ACL SETUSER` / `DELUSER`): every node's
    /// front ends reload their table from [`crate::State::acl_layer`].
    UsersChanged,
}

/// Who receives a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Taker {
    Pop { wait_id: u64 },
    Consumer { consumer_id: u64 },
}

/// One message handed to a consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: MsgId,
    /// This delivery's own fencing token: ack, nack and extend need it.
    pub receipt: u64,
    pub payload: Bytes,
    pub properties: Bytes,
    /// How many times the message has been delivered, this time included.
    pub deliveries: u32,
    pub priority: u8,
    pub lease: Millis,
    /// Set when the message is a dead letter (it sits in a dead-letter queue).
    pub dead: Option<DeadLetter>,
}

/// Why and from where a message was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub reason: DeadReason,
    pub from: String,
    /// The dead-letter exchange it was routed through and the routing key it was routed with
    /// (always `Some` here); `None` when it went to the `dead_letter` queue.
    pub via: Option<crate::DeadLetterExchange>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeadReason {
    /// Returned after its last allowed delivery.
    MaxDeliveries,
    /// Its TTL ran out.
    Expired,
    /// A consumer rejected it.
    Rejected,
    /// Pushed out of a full queue (`OVERFLOW drop-head`).
    MaxLen,
}

impl DeadReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::MaxDeliveries => "maxdeliveries",
            DeadReason::Expired => "expired",
            DeadReason::Rejected => "rejected",
            DeadReason::MaxLen => "maxlen",
        }
    }
}

/// `LOCK.INFO` / `SEM.INFO`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// "exclusive", "shared", "semaphore", or "free" when nobody holds or waits.
    pub mode: String,
    /// The semaphore's permit count; 1 for locks.
    pub limit: u32,
    pub holders: Vec<HolderView>,
    /// In line order.
    pub waiters: Vec<WaiterView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderView {
    pub owner: String,
    pub token: u64,
    pub permits: u32,
    pub expires_in: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaiterView {
    pub owner: String,
    pub wait_id: u64,
    pub mode: String,
    pub permits: u32,
    pub deadline_in: Millis,
}

/// `Q.STATS`. Gauges first, then totals since the queue was created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    pub ready: u64,
    pub delayed: u64,
    pub in_flight: u64,
    /// Messages in this queue that are dead letters from another queue (counted in the gauges above too).
    pub dead: u64,
    pub consumers: u64,
    pub waiting_pops: u64,
    /// Age of the oldest ready message, 0 when none is ready.
    pub oldest_ready_age: Millis,
    pub payload_bytes: u64,
    pub totals: QueueTotals,
}

/// Every message that entered a queue is either still in it or counted in one way out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueTotals {
    pub pushed: u64,
    /// Pushes answered with an earlier message's id (not stored again).
    pub deduplicated: u64,
    /// Arrived as dead letters from other queues.
    pub dead_letters_in: u64,
    /// Arrived through `Q.REDRIVE`.
    pub redriven_in: u64,
    pub delivered: u64,
    /// Deliveries that came back (nack, lease expiry, session close) to be delivered again.
    pub returned: u64,
    pub acked: u64,
    /// TTL ran out with no dead-letter queue to go to.
    pub expired: u64,
    pub purged: u64,
    /// Pushed out by `OVERFLOW drop-head` with no dead-letter queue to go to.
    pub dropped: u64,
    /// Moved to the dead-letter queue.
    pub dead_lettered: u64,
    /// Dead (max deliveries or rejected) with no dead-letter queue to go to.
    pub discarded: u64,
    pub redriven_out: u64,
}

impl QueueTotals {
    /// Messages that entered the queue.
    pub fn entered(&self) -> u64 {
        self.pushed + self.dead_letters_in + self.redriven_in
    }

    /// Messages that left the queue, each counted once.
    pub fn left(&self) -> u64 {
        self.acked
            + self.expired
            + self.purged
            + self.dropped
            + self.dead_lettered
            + self.discarded
            + self.redriven_out
    }
}

/// A message as `Q.PEEK` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    pub id: MsgId,
    pub payload: Bytes,
    pub priority: u8,
    pub deliveries: u32,
    pub age: Millis,
    pub group: Option<String>,
    pub dead: Option<DeadLetter>,
}
