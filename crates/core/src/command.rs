//! What can be asked of the state machine.
//!
//! A [`Command`] changes state and is replicated through the log; a [`Query`] only reads. Front ends
//! (RESP, AMQP, HTTP) parse their own syntax into these types, so the meaning of an argument is
//! decided once, here, for every protocol.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{HostId, Millis, SessionId};

/// A state-changing request. Every variant is applied at a leader-stamped time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Advance the clock and fire everything due (leases, wait deadlines, delays, TTLs).
    Tick,
    /// Start a session, as a binary before sessions had hosts wrote it: kept at its place so
    /// that a log written then still reads. Applied as [`Command::OpenSession`] held by
    /// [`crate::LEGACY_HOST`] (nobody keeps it alive; the start that replays it detaches every
    /// session anyway). New entries use `OpenSession`.
    LegacyOpenSession,
    /// End a session, as a binary before bindings wrote it: applied as
    /// [`Command::CloseSession`] without a binding. New entries use `CloseSession`.
    LegacyCloseSession {
        session: SessionId,
    },
    /// End every session after a restart (no connection survives one): their waits and
    /// consumers are dropped, their holds and deliveries stay until released, acked or expired.
    /// Replies the number of sessions ended.
    DetachSessions,
    /// Extend every hold and in-flight delivery so that none expires before `now + its TTL`,
    /// and every host so that none expires before `now + its timeout`. Proposed by a node that
    /// has just become leader (or restarted), so that clock differences between nodes and
    /// downtime never shorten a lease, and the hosts that lost their keep-alives' way to the
    /// log during the election get a full timeout to send the next one.
    RefreshLeases,

    /// Take an exclusive or shared lock, or permits of a semaphore.
    Acquire(Acquire),
    /// Give back a hold. Replies `Int(1)` if the token was a live hold of `name`, else `Int(0)`.
    Release {
        name: String,
        token: u64,
    },
    /// Extend a hold's lease to `now + ttl`. Replies `Int(lease)` or the `Lost` error.
    Renew {
        name: String,
        token: u64,
        ttl: Millis,
    },

    /// Create a queue with a configuration. Replies `Int(1)` when created, `Int(0)` when it
    /// already exists with the same configuration, and an error when the configuration differs.
    CreateQueue {
        name: String,
        config: crate::QueueConfig,
    },
    /// Delete a queue and every message in it. Replies `Int(1)` or `Int(0)` if it did not exist.
    DeleteQueue {
        name: String,
        /// Refuse (`Precondition`) while the queue has consumers.
        if_unused: bool,
        /// Refuse (`Precondition`) while the queue stores messages (ready, delayed or in flight).
        if_empty: bool,
    },
    /// Remove every ready and delayed message (in-flight ones stay). Replies the count removed.
    PurgeQueue {
        name: String,
    },
    Push(Push),
    Pop(Pop),
    Ack {
        queue: String,
        receipts: Vec<u64>,
        fence: Option<Fence>,
    },
    /// Return a delivery. With `dead_letter` the message is rejected: it goes to the dead-letter
    /// queue (or is discarded when there is none) instead of being redelivered.
    Nack {
        queue: String,
        receipt: u64,
        delay: Millis,
        dead_letter: bool,
    },
    /// Extend a delivery's lease to `now + lease`. Replies `Int(lease)` or the `Lost` error.
    Extend {
        queue: String,
        receipt: u64,
        lease: Millis,
    },
    /// Register a consumer that is pushed messages while it has credit. Replies
    /// [`crate::Reply::Consumer`]; deliveries arrive as [`crate::Effect::Delivered`].
    Consume(Consume),
    /// Stop a consumer. Its in-flight messages stay in flight until acked, nacked or expired.
    Cancel {
        queue: String,
        consumer_id: u64,
    },
    /// Move up to `count` ready messages from `from` (usually a dead-letter queue) to `to`, as
    /// fresh messages. Replies the count moved.
    Redrive {
        from: String,
        to: String,
        count: u64,
    },

    /// Redis `SET`.
    Set(SetKey),
    /// Redis `DEL`. Replies the number of keys removed.
    Del {
        keys: Vec<String>,
        fence: Option<Fence>,
    },
    /// Redis `PEXPIRE` (and `EXPIRE`, converted by the front end). `ttl <= 0` deletes the key.
    Expire {
        key: String,
        ttl: i64,
        condition: ExpireCondition,
    },
    /// Redis `INCRBY` (and `INCR`). Replies the new value.
    IncrBy {
        key: String,
        delta: i64,
    },

    // AMQP 0-9-1. Last, so that the variant numbers of the commands above (their encoding in
    // the log) stay as they were.
    /// Declare an exchange. Replies `Int(1)` created, `Int(0)` when it exists with the same
    /// kind and flags, `Precondition` error when it differs. Names starting with `amq.` may only be
    /// redeclared equivalently (the four built-ins); declaring a new `amq.*` name is `AccessRefused`.
    DeclareExchange(ExchangeDecl),
    /// Replies `Int(1)` or `Int(0)` if it did not exist. `if_unused` with bindings → `Precondition`.
    /// The built-ins ("" and amq.*) cannot be deleted: `AccessRefused`.
    DeleteExchange {
        name: String,
        if_unused: bool,
    },
    /// Bind a queue to an exchange. Replies `Ok` (binding twice is a no-op). Errors: `NoSuchExchange`,
    /// `NoSuchQueue`, `AccessRefused` for the default exchange "".
    Bind(Binding),
    /// Replies `Ok` also when there was no such binding; errors as `Bind`.
    Unbind(Binding),
    /// Route a message through an exchange to every matching queue (one copy per queue, a queue
    /// matched by several bindings gets one copy). Replies `Reply::Published`. Errors: `NoSuchExchange`,
    /// `AccessRefused` for an internal exchange.
    Publish(Publish),

    /// Apply `command` on behalf of `session` (an AMQP channel's connection): `Bind`, `Unbind`,
    /// `PurgeQueue` and `DeleteQueue` of a queue exclusive to another session are then
    /// `ResourceLocked`. Those commands carry no session of their own, so without this wrapper
    /// they are not checked (as a `Pop` without a session is not). Replies what `command` replies;
    /// `UnknownSession` if the session is not open; a nested wrapper is `InvalidArgument`.
    InSession {
        session: SessionId,
        command: Box<Command>,
    },

    // Sessions that outlive their connection. Last, for the same reason as AMQP's.
    /// `host` is alive: its sessions live until `now + timeout` at least. One per server
    /// process per interval, whatever its number of sessions. A host not known yet is added.
    KeepAlive {
        host: HostId,
        timeout: Millis,
    },
    /// Bind an open session to a new connection, on `host`, when its own went away (its node
    /// died, or the link broke): holds and deliveries stay; waits and consumers end, as their
    /// outcomes went to the old connection. Replies `Int(binding)`, the number `CloseSession`
    /// names from then on; `NotResumable` for a session that is not open or a wrong secret.
    ResumeSession {
        session: SessionId,
        secret: u64,
        host: HostId,
        timeout: Millis,
    },
    /// Start a session (one per client connection), held by `host`. Replies
    /// [`crate::Reply::Session`]; the id is also the number of this first binding (see
    /// `CloseSession`). A host not known yet is added, alive for `timeout` from now.
    OpenSession {
        host: HostId,
        /// What a client must show to resume the session elsewhere; chosen at random by the
        /// node that proposes this (the state machine draws nothing at random).
        secret: u64,
        timeout: Millis,
    },
    /// End a session: release its holds, drop its waiters and consumers, return its in-flight
    /// messages to their queues, all in this one step. With `binding`, only if the session is
    /// still bound by that open or resume: a connection whose session was resumed elsewhere
    /// since must not end it (then the reply is `Int(0)`).
    CloseSession {
        session: SessionId,
        binding: Option<u64>,
    },
    /// Records that node `node` left the cluster's membership for good: its id is never given to
    /// a new node (a node that reused it could replay the old node's votes and log). Replies OK.
    RetireNode {
        node: u64,
    },

    // Lua scripts (EVAL, SCRIPT). Last, for the same reason as AMQP's.
    /// Run a Lua script inside the state machine (`EVAL`, `EVALSHA`): every node runs it on the
    /// same state, so it is deterministic. Replies the script's value converted the Redis way;
    /// `NoScript` when `Sha` names no cached script; a script error raised by the script keeps
    /// its writes (Redis's rule), going over its budget undoes them. See `script.rs`.
    Eval(Eval),
    /// Compile a script and add it to the cache (`SCRIPT LOAD`). Replies its SHA-1 in hex.
    ScriptLoad {
        source: Bytes,
    },
    /// Empty the script cache (`SCRIPT FLUSH`). Replies OK.
    ScriptFlush,
}

impl Command {
    /// The session slot of a command that may act for a session (acquire, pop), so a front
    /// end can parse first and bind the connection's session after.
    pub fn session_mut(&mut self) -> Option<&mut Option<SessionId>> {
        match self {
            Command::Acquire(a) => Some(&mut a.session),
            Command::Pop(p) => Some(&mut p.session),
            Command::Eval(eval) => Some(&mut eval.session),
            Command::InSession { command, .. } => command.session_mut(),
            _ => None,
        }
    }

    /// The instruction budget of a script, so the node that proposes it decides it once for
    /// every node (see [`Eval::budget`]).
    pub fn script_budget_mut(&mut self) -> Option<&mut u64> {
        match self {
            Command::Eval(eval) => Some(&mut eval.budget),
            _ => None,
        }
    }

    /// Whether the command may wait in line (and so its reply may come much later).
    pub fn may_wait(&self) -> bool {
        match self {
            Command::Acquire(a) => a.wait > 0,
            Command::Pop(p) => p.wait > 0,
            Command::InSession { command, .. } => command.may_wait(),
            _ => false,
        }
    }
}

/// What a name in a command names, for the server's limit on name length (`max-name-len`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Lock,
    Queue,
    Key,
    Exchange,
}

impl NameKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NameKind::Lock => "lock",
            NameKind::Queue => "queue",
            NameKind::Key => "key",
            NameKind::Exchange => "exchange",
        }
    }
}

impl Command {
    /// Calls `f` with every name the command would store or look up: locks (fences included),
    /// queues (a dead-letter queue included), keys and exchanges. Allocates nothing, so a front
    /// end can check every command it is sent.
    pub fn names(&self, f: &mut impl FnMut(NameKind, &str)) {
        use NameKind::{Exchange, Key, Lock, Queue};
        let fence = |fence: &Option<Fence>, f: &mut dyn FnMut(NameKind, &str)| {
            if let Some(fence) = fence {
                f(Lock, &fence.lock);
            }
        };
        match self {
            Command::Tick
            | Command::OpenSession { .. }
            | Command::CloseSession { .. }
            | Command::DetachSessions
            | Command::RetireNode { .. }
            | Command::LegacyOpenSession
            | Command::LegacyCloseSession { .. }
            | Command::RefreshLeases
            | Command::KeepAlive { .. }
            | Command::ResumeSession { .. }
            | Command::ScriptLoad { .. }
            | Command::ScriptFlush => {}
            // A script's keys are checked by the commands it runs, which the limits do not see
            // (they are parsed inside the state machine); here they are only bytes.
            Command::Eval(_) => {}
            Command::Acquire(Acquire { name, .. })
            | Command::Release { name, .. }
            | Command::Renew { name, .. } => f(Lock, name),
            Command::CreateQueue { name, config } => {
                f(Queue, name);
                if let Some(dlq) = &config.dead_letter {
                    f(Queue, dlq);
                }
                if let Some(dlx) = &config.dead_letter_exchange {
                    f(Exchange, &dlx.exchange);
                }
            }
            Command::DeleteQueue { name, .. } | Command::PurgeQueue { name } => f(Queue, name),
            Command::Push(push) => {
                f(Queue, &push.queue);
                fence(&push.fence, f);
            }
            Command::Pop(Pop { queue, .. })
            | Command::Nack { queue, .. }
            | Command::Extend { queue, .. }
            | Command::Consume(Consume { queue, .. })
            | Command::Cancel { queue, .. } => f(Queue, queue),
            Command::Ack { queue, fence: fenced, .. } => {
                f(Queue, queue);
                fence(fenced, f);
            }
            Command::Redrive { from, to, .. } => {
                f(Queue, from);
                f(Queue, to);
            }
            Command::Set(set) => {
                f(Key, &set.key);
                fence(&set.fence, f);
            }
            Command::Del { keys, fence: fenced } => {
                keys.iter().for_each(|key| f(Key, key));
                fence(fenced, f);
            }
            Command::Expire { key, .. } | Command::IncrBy { key, .. } => f(Key, key),
            Command::DeclareExchange(ExchangeDecl { name, .. }) | Command::DeleteExchange { name, .. } => {
                f(Exchange, name)
            }
            Command::Bind(binding) | Command::Unbind(binding) => {
                f(Exchange, &binding.exchange);
                f(Queue, &binding.queue);
            }
            Command::Publish(publish) => {
                f(Exchange, &publish.exchange);
                fence(&publish.push.fence, f);
            }
            Command::InSession { command, .. } => command.names(f),
        }
    }

    /// The longest single value the command carries (a message's body, a key's value), for the
    /// server's `max-payload` limit.
    pub fn payload_len(&self) -> usize {
        match self {
            Command::Push(push) | Command::Publish(Publish { push, .. }) => push.payload.len(),
            Command::Set(set) => set.value.len(),
            Command::Eval(eval) => eval.keys.iter().chain(&eval.args).map(Bytes::len).max().unwrap_or(0),
            Command::ScriptLoad { source } => source.len(),
            Command::InSession { command, .. } => command.payload_len(),
            _ => 0,
        }
    }

    /// The bytes a message would add to the queues (body and properties), for the server's
    /// `max-memory` limit; `None` for a command that stores no message. Only messages are
    /// refused for memory, so consumers can keep draining.
    pub fn message_len(&self) -> Option<usize> {
        match self {
            Command::Push(push) | Command::Publish(Publish { push, .. }) => {
                Some(push.payload.len() + push.properties.len())
            }
            Command::InSession { command, .. } => command.message_len(),
            _ => None,
        }
    }
}

/// A lock, read/write lock or semaphore acquire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acquire {
    pub name: String,
    pub mode: Mode,
    /// Lease length; the hold ends this long after it is granted (or last renewed).
    pub ttl: Millis,
    /// How long to wait in line when the hold cannot be granted at once; 0 = don't wait.
    pub wait: Millis,
    /// Who is acquiring. Deadlock detection and idempotent re-acquire are per owner.
    /// `None` means the session's default owner ([`crate::default_owner`]).
    pub owner: Option<String>,
    /// The session the hold and the wait belong to. Waiting needs a session, to know whom to wake.
    pub session: Option<SessionId>,
    /// Keep the hold when the session closes (only its lease ends it).
    pub keep: bool,
}

/// What an acquire asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Mode {
    /// A lock held by one owner at a time.
    Exclusive,
    /// A read lock: any number of shared holders, no exclusive one.
    Shared,
    /// `count` of a semaphore's `limit` permits.
    Permits { limit: u32, count: u32 },
}

/// `FENCE lock token`: apply the command only while `token` is a live hold of `lock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub lock: String,
    pub token: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    pub queue: String,
    pub payload: Bytes,
    /// Opaque message properties (AMQP headers and the like), delivered unchanged.
    pub properties: Bytes,
    /// Deliver no earlier than `now + delay`.
    pub delay: Millis,
    /// 0–9, higher is delivered first.
    pub priority: u8,
    /// A second push with the same id within the queue's dedup window returns the first id.
    pub dedup: Option<String>,
    /// Message lifetime; overrides the queue's default TTL.
    pub ttl: Option<Millis>,
    /// Messages with the same group key are delivered one at a time, in push order.
    pub group: Option<String>,
    pub fence: Option<Fence>,
}

impl Push {
    /// A plain push with every option at its default.
    pub fn new(queue: impl Into<String>, payload: impl Into<Bytes>) -> Push {
        Push {
            queue: queue.into(),
            payload: payload.into(),
            properties: Bytes::new(),
            delay: 0,
            priority: 0,
            dedup: None,
            ttl: None,
            group: None,
            fence: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pop {
    pub queue: String,
    pub session: Option<SessionId>,
    /// Up to this many messages (at least 1).
    pub count: u32,
    /// Wait this long for a message when none is ready; 0 = answer at once.
    pub wait: Millis,
    /// Lease of the deliveries; `None` takes the queue's default.
    pub lease: Option<Millis>,
    /// Finish each message as it is delivered (AMQP `no-ack`): at-most-once.
    pub auto_ack: bool,
    /// Leave the deliveries in flight when the session closes (only their lease returns them),
    /// so another connection — a later `turnstile queue ack` — can finish them.
    pub keep: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consume {
    pub queue: String,
    pub session: SessionId,
    /// Most unacked deliveries at a time (AMQP prefetch); 0 = unlimited.
    pub credit: u32,
    pub lease: Option<Millis>,
    pub auto_ack: bool,
    /// AMQP exclusive consumer: refused while the queue has another consumer, and while it
    /// lasts every other consumer of the queue is refused.
    pub exclusive: bool,
    /// A prefetch shared with the session's other consumers in the same pool.
    pub pool: Option<CreditPool>,
}

/// Channel-wide prefetch (AMQP `basic.qos global=true`): consumers of one session sharing a pool
/// id are together given at most `limit` unacked deliveries (0 = unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditPool {
    pub id: u64,
    pub limit: u32,
}

/// An AMQP `exchange.declare`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeDecl {
    pub name: String,
    pub kind: ExchangeKind,
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Only other exchanges (dead-lettering, here) may publish to it, not clients.
    pub internal: bool,
}

/// How an exchange picks the queues a message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ExchangeKind {
    /// Bindings whose key equals the routing key.
    Direct,
    /// Every bound queue.
    Fanout,
    /// Bindings whose pattern (`*` one word, `#` any number of words) matches the routing key.
    Topic,
}

impl ExchangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
        }
    }

    pub fn parse(s: &str) -> Option<ExchangeKind> {
        match s {
            "direct" => Some(ExchangeKind::Direct),
            "fanout" => Some(ExchangeKind::Fanout),
            "topic" => Some(ExchangeKind::Topic),
            _ => None,
        }
    }
}

/// A queue bound to an exchange with a routing key (a pattern for topic exchanges).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Binding {
    pub exchange: String,
    pub queue: String,
    pub routing_key: String,
}

/// An AMQP `basic.publish`: a push routed by an exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publish {
    pub exchange: String,
    pub routing_key: String,
    /// The message and its options. `push.queue` is ignored; `push.priority` is clamped to each
    /// target queue's `max_priority` rather than refused above 9.
    pub push: Push,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetKey {
    pub key: String,
    pub value: Bytes,
    pub condition: SetCondition,
    pub expiry: SetExpiry,
    /// Reply the old value (Redis `SET ... GET`).
    pub get: bool,
    pub fence: Option<Fence>,
}

impl SetKey {
    /// A plain `SET key value`.
    pub fn new(key: impl Into<String>, value: impl Into<Bytes>) -> SetKey {
        SetKey {
            key: key.into(),
            value: value.into(),
            condition: SetCondition::Always,
            expiry: SetExpiry::None,
            get: false,
            fence: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetCondition {
    Always,
    /// Only if the key does not exist.
    Nx,
    /// Only if the key exists.
    Xx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetExpiry {
    /// Remove any TTL.
    None,
    /// Keep the key's current TTL.
    KeepTtl,
    /// Expire this long from now (must be > 0).
    In(Millis),
}

/// Redis 7's `EXPIRE key ttl [NX|XX|GT|LT]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpireCondition {
    Always,
    /// Only when the key has no TTL.
    Nx,
    /// Only when the key has a TTL.
    Xx,
    /// Only when the new TTL is greater (no TTL counts as infinite).
    Gt,
    /// Only when the new TTL is less (no TTL counts as infinite).
    Lt,
}

/// A read. Reads never change state, so they need no log entry; the server runs them after a
/// read-index check, at the local clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    /// Holders and waiters of a lock or semaphore.
    LockInfo {
        name: String,
    },
    /// `Int(1)` if `token` is a live hold of `lock`, else `Int(0)`.
    FenceCheck {
        lock: String,
        token: u64,
    },
    QueueStats {
        name: String,
    },
    /// The next `count` ready messages, in delivery order, without delivering them.
    Peek {
        queue: String,
        count: u32,
    },
    /// Every queue name, sorted.
    ListQueues,
    /// Every lock and semaphore name, sorted.
    ListLocks,
    Get {
        key: String,
    },
    /// How many of `keys` exist (a key named twice counts twice, as in Redis).
    Exists {
        keys: Vec<String>,
    },
    /// Remaining TTL in ms; -1 without a TTL, -2 when the key does not exist.
    Pttl {
        key: String,
    },
    /// `Ok` if the exchange exists (the built-ins always do), else `NoSuchExchange`.
    Exchange {
        name: String,
    },
    /// The queue's stored configuration: [`crate::Reply::QueueConfig`], or `NoSuchQueue`.
    QueueConfig {
        name: String,
    },

    // Lua scripts (EVAL_RO, SCRIPT EXISTS). Last, so that the variant numbers above stay.
    /// A read-only script (`EVAL_RO`, `EVALSHA_RO`): its writes are refused, so it needs no log
    /// entry. Replies as [`Command::Eval`].
    Eval(Eval),
    /// `SCRIPT EXISTS sha ...`: `Array` of `Int(1)` or `Int(0)`, one per SHA in order.
    ScriptExists {
        shas: Vec<String>,
    },
}

impl Query {
    /// The instruction budget of a read-only script: a read runs on one node only, so that
    /// node's own setting is the one that counts.
    pub fn script_budget_mut(&mut self) -> Option<&mut u64> {
        match self {
            Query::Eval(eval) => Some(&mut eval.budget),
            _ => None,
        }
    }
}

/// `EVAL` and its variants: which script, its `KEYS` and `ARGV`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eval {
    pub script: ScriptRef,
    pub keys: Vec<Bytes>,
    pub args: Vec<Bytes>,
    /// The caller's session: a `LOCK.ACQUIRE` or `Q.POP` the script runs is the caller's.
    pub session: Option<SessionId>,
    /// Lua VM instructions the script may run before it is stopped and its writes are undone.
    /// Carried in the entry, so nodes configured differently still agree on the verdict.
    pub budget: u64,
}

/// The script an [`Eval`] runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScriptRef {
    /// `EVAL`: the source itself (also added to the cache).
    Source(Bytes),
    /// `EVALSHA`: a cached script's SHA-1, lower-case hex, looked up when the entry is applied,
    /// so a missing script is `NOSCRIPT` on every node alike.
    Sha(String),
}
