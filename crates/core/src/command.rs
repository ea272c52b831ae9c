//! What can be asked of the state machine.
//!
//! A [`Command`] changes state and is replicated through the log; a [`Query`] only reads. Front ends
//! (RESP, AMQP, HTTP) parse their own syntax into these types, so the meaning of an argument is
//! decided once, here, for every protocol.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{HostId, Millis, SessionId, Timestamp};

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
    // Redis lists. Last, so that the variant numbers above (their encoding in the log) stay.
    /// `LPUSH` / `RPUSH` (and `LPUSHX` / `RPUSHX` with `only_if_exists`): elements pushed one by
    /// one at `end`. Replies the list's length after the push (0 when `only_if_exists` found no
    /// list). A list with waiters serves them at the end of the step (see `list.rs`).
    ListPush {
        key: String,
        end: End,
        elements: Vec<Bytes>,
        only_if_exists: bool,
    },
    /// `LPOP` / `RPOP`. Without `count`: the element or nil; with it: up to `count` elements,
    /// or nil when the key does not exist.
    ListPop {
        key: String,
        end: End,
        count: Option<u64>,
    },
    /// `LSET`: replaces the element at `index` (negative counts from the tail).
    ListSet {
        key: String,
        index: i64,
        element: Bytes,
    },
    /// `LREM`: removes `count` elements equal to `element`, from the head (`count > 0`), from the
    /// tail (`count < 0`), or all (`0`). Replies how many went.
    ListRem {
        key: String,
        count: i64,
        element: Bytes,
    },
    /// `LTRIM`: keeps only the elements from `start` to `stop` (inclusive, negative from the tail).
    ListTrim {
        key: String,
        start: i64,
        stop: i64,
    },
    /// `LINSERT`: inserts `element` before (or after) the first element equal to `pivot`.
    /// Replies the new length, -1 when the pivot is not there, 0 when the key does not exist.
    ListInsert {
        key: String,
        before: bool,
        pivot: Bytes,
        element: Bytes,
    },
    /// `LMOVE` (and `RPOPLPUSH`): pops from `source`'s `from` end and pushes onto
    /// `destination`'s `to` end, in one step. Replies the element, or nil when `source` is empty.
    ListMove {
        source: String,
        destination: String,
        from: End,
        to: End,
    },
    /// `BLPOP` / `BRPOP` / `BLMOVE` / `BRPOPLPUSH`: see [`BlockingPop`].
    BlockingPop(BlockingPop),
    // Redis keyspace commands: strings, keys of any type, hashes. Last, so that the variant
    // numbers above (their encoding in the log) stay as they were.
    /// `GETDEL`: the string's value (nil when missing), and the key deleted.
    GetDel {
        key: String,
    },
    /// `GETEX`: the string's value (nil when missing), its TTL changed by `expiry` (`None`
    /// leaves it).
    GetEx {
        key: String,
        expiry: Option<KeyExpiry>,
    },
    /// `MSET` (`Ok`), or with `nx` `MSETNX` (`Int(1)` when every key was set, `Int(0)` when one
    /// existed and none was). Each key replaced whatever it held and lost its TTL, as `SET` does.
    MSet {
        pairs: Vec<(String, Bytes)>,
        nx: bool,
    },
    /// `APPEND`: replies the new length.
    Append {
        key: String,
        value: Bytes,
    },
    /// `INCRBYFLOAT`: replies the new value as Redis writes it. `delta` is the client's text,
    /// checked by the front end: the core adds decimals exactly (see `kv.rs`).
    IncrByFloat {
        key: String,
        delta: String,
    },
    /// `EXPIREAT` / `PEXPIREAT` (seconds converted by the front end): expire at `at` ms since the
    /// epoch; a time not after the state's clock deletes the key.
    ExpireAt {
        key: String,
        at: i64,
        condition: ExpireCondition,
    },
    /// `PERSIST`: `Int(1)` when a TTL was removed, else `Int(0)`.
    Persist {
        key: String,
    },
    /// `RENAME` (`Ok`) / `RENAMENX` (`Int(1)` or `Int(0)` when `to` exists). The TTL moves
    /// with the value; a missing `from` is `no such key`.
    Rename {
        from: String,
        to: String,
        nx: bool,
    },
    /// `FLUSHDB` / `FLUSHALL`: removes every key (locks, semaphores and queues are not keys and
    /// stay). Replies `Ok`.
    FlushKeys,
    /// `HSET` (`Int(fields added)`), or with `nx` `HSETNX` (one pair: `Int(1)` set, `Int(0)` the
    /// field existed). A hash's TTL is kept.
    HSet {
        key: String,
        pairs: Vec<(Bytes, Bytes)>,
        nx: bool,
    },
    /// `HDEL`: replies how many fields were removed; the key goes with its last field.
    HDel {
        key: String,
        fields: Vec<Bytes>,
    },
    /// `HINCRBY`: replies the new value.
    HIncrBy {
        key: String,
        field: Bytes,
        delta: i64,
    },
    /// `HINCRBYFLOAT`: replies the new value as text, as `IncrByFloat`.
    HIncrByFloat {
        key: String,
        field: Bytes,
        delta: String,
    },
    // Pub/sub. Last, as every addition is: variant numbers are in the log.
    /// Publish `message` on `channel` (Redis's `PUBLISH`, also from a script or inside
    /// `MULTI`). The state keeps no subscribers and nothing of the message: the apply only
    /// emits [`crate::Effect::Message`], which every node hands to its own subscribers. Replies
    /// `Int(0)`, the subscribers the state machine knows of; a front end that can count the
    /// subscribers of its own node answers that instead.
    PubSubPublish {
        channel: Bytes,
        message: Bytes,
    },

    // Transactions (MULTI/EXEC). Last, so that the variant numbers above stay.
    /// `EXEC`: the steps queued since `MULTI`, applied in order as this one entry, so that they
    /// are atomic on every node and after a crash. If any watched key's version is no longer the
    /// one `WATCH` read ([`Query::KeyVersions`]), nothing is applied and the reply is `Nil`;
    /// otherwise it is an `Array` of each step's reply. A step that fails gives its error element
    /// and the others still run (Redis's rule: no rollback). Steps never wait (see
    /// [`Command::without_wait`]).
    Exec {
        /// The session the steps that act for one (an acquire, a pop) act for: the front end
        /// binds it as it binds an acquire's ([`Command::session_mut`]), and each such step is
        /// given it when applied. One slot for the whole transaction, since all its steps come
        /// from one connection.
        session: Option<SessionId>,
        /// Each watched key with the version `WATCH` read (0: it did not exist).
        watches: Vec<(String, u64)>,
        steps: Vec<Step>,
    },

    // Users (ACL SETUSER / DELUSER) and who runs a command. Last, so that the variant numbers
    // above stay. See `acl.rs`.
    /// Creates or replaces a user of the table's log-kept layer (over the config file's users):
    /// the whole user, as the proposing node computed it from the rules. Replies OK and emits
    /// [`crate::Effect::UsersChanged`].
    AclSetUser {
        user: crate::User,
    },
    /// Deletes users: a user of the config file stays deleted (a tombstone in the layer).
    /// Replies OK and emits [`crate::Effect::UsersChanged`].
    AclDelUser {
        names: Vec<String>,
    },
    /// Applies `command` for `caller`: a session opened records its user; holds and deliveries
    /// taken record theirs; releasing, renewing, acking or nacking one that another user took,
    /// or resuming their session, is `NoPerm` unless the caller is an admin; a script's
    /// commands are checked against the caller's permissions. A nested wrapper is
    /// `InvalidArgument`.
    AsUser {
        caller: crate::Caller,
        command: Box<Command>,
    },
    /// Applies `command` (an acquire, or a command that may wait) under the proposing node's
    /// per-session limits, carried in the entry the way a script's budget is, so every node
    /// decides alike: refused with [`crate::CoreError::SessionLimit`] when its session already has
    /// `max_holds` holds (taken or waited for) or `max_waits` waits.
    Limited {
        limits: SessionLimits,
        command: Box<Command>,
    },
}

/// `max-holds-per-session` and `max-waits-per-session`; 0 = no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionLimits {
    pub max_holds: u32,
    pub max_waits: u32,
}

impl SessionLimits {
    /// Whether any limit is set.
    pub fn any(self) -> bool {
        self.max_holds > 0 || self.max_waits > 0
    }

    /// `command` under these limits, when they can concern it: an acquire, or a command that
    /// may wait.
    pub fn wrap(self, command: Command) -> Command {
        if !self.any() || !(matches!(command, Command::Acquire(_)) || command.may_wait()) {
            return command;
        }
        Command::Limited { limits: self, command: Box::new(command) }
    }
}

/// One command queued in a transaction: a write, or a read that sees the writes before it (so it
/// runs inside the apply too, not at a read point of its own).
// Most steps are writes: boxing them would cost an allocation each to save room on the reads.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    Write(Command),
    Read(Query),
}

impl Step {
    /// The write commands among `steps`.
    fn writes(steps: &[Step]) -> impl Iterator<Item = &Command> {
        steps.iter().filter_map(|step| match step {
            Step::Write(cmd) => Some(cmd),
            Step::Read(_) => None,
        })
    }
}

impl Command {
    /// The session slot of a command that may act for a session (acquire, pop), so a front
    /// end can parse first and bind the connection's session after.
    pub fn session_mut(&mut self) -> Option<&mut Option<SessionId>> {
        match self {
            Command::Acquire(a) => Some(&mut a.session),
            Command::Pop(p) => Some(&mut p.session),
            Command::BlockingPop(p) => Some(&mut p.session),
            Command::Eval(eval) => Some(&mut eval.session),
            Command::InSession { command, .. }
            | Command::AsUser { command, .. }
            | Command::Limited { command, .. } => command.session_mut(),
            // The transaction's own slot, only when some step needs a session: a transaction of
            // plain key commands opens none.
            Command::Exec { session, steps, .. } => {
                let needs = steps.iter_mut().any(|step| match step {
                    Step::Write(cmd) => cmd.session_mut().is_some(),
                    Step::Read(_) => false,
                });
                needs.then_some(session)
            }
            _ => None,
        }
    }

    /// The instruction budget of a script, so the node that proposes it decides it once for
    /// every node (see [`Eval::budget`]).
    pub fn script_budget_mut(&mut self) -> Option<&mut u64> {
        match self {
            Command::Eval(eval) => Some(&mut eval.budget),
            Command::AsUser { command, .. } | Command::Limited { command, .. } => command.script_budget_mut(),
            _ => None,
        }
    }

    /// Whether the command may wait in line (and so its reply may come much later). A
    /// transaction never does: its steps are applied [`Command::without_wait`].
    pub fn may_wait(&self) -> bool {
        match self {
            Command::Acquire(a) => a.wait > 0,
            Command::Pop(p) => p.wait > 0,
            Command::BlockingPop(p) => p.wait > 0,
            Command::InSession { command, .. }
            | Command::AsUser { command, .. }
            | Command::Limited { command, .. } => command.may_wait(),
            _ => false,
        }
    }

    /// Turns a command that may wait into one that answers at once, as it would when its wait
    /// ran out: what a blocking command does inside a transaction (Redis's rule), since an entry
    /// of the log cannot be left half applied until a wait ends. Every command with a wait
    /// field belongs here.
    pub fn without_wait(&mut self) {
        match self {
            Command::Acquire(a) => a.wait = 0,
            Command::Pop(p) => p.wait = 0,
            Command::BlockingPop(b) => b.wait = 0,
            Command::InSession { command, .. }
            | Command::AsUser { command, .. }
            | Command::Limited { command, .. } => command.without_wait(),
            _ => {}
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
            | Command::PubSubPublish { .. } => {}
            Command::ScriptLoad { .. } | Command::ScriptFlush => {}
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
            // The default exchange is no exchange of anyone's: it routes only to the queue its
            // routing key names, as `PUSH` does, so that queue is the name a publish to it touches
            // (a user limited to `queue~app.*` may publish to `app.x` through it, not to `other`).
            Command::Publish(publish) if publish.exchange.is_empty() => {
                f(Queue, &publish.routing_key);
                fence(&publish.push.fence, f);
            }
            Command::Publish(publish) => {
                f(Exchange, &publish.exchange);
                fence(&publish.push.fence, f);
            }
            Command::InSession { command, .. }
            | Command::AsUser { command, .. }
            | Command::Limited { command, .. } => command.names(f),
            Command::AclSetUser { .. } | Command::AclDelUser { .. } => {}
            // What the steps write is checked as if each were sent alone; watched keys and
            // reads are looked up only, as reads are.
            Command::Exec { steps, .. } => Step::writes(steps).for_each(|cmd| cmd.names(f)),
            Command::GetDel { key }
            | Command::GetEx { key, .. }
            | Command::Append { key, .. }
            | Command::IncrByFloat { key, .. }
            | Command::ExpireAt { key, .. }
            | Command::Persist { key }
            | Command::HSet { key, .. }
            | Command::HDel { key, .. }
            | Command::HIncrBy { key, .. }
            | Command::HIncrByFloat { key, .. } => f(Key, key),
            Command::MSet { pairs, .. } => pairs.iter().for_each(|(key, _)| f(Key, key)),
            Command::Rename { from, to, .. } => {
                f(Key, from);
                f(Key, to);
            }
            Command::FlushKeys => {}
            Command::ListPush { key, .. }
            | Command::ListPop { key, .. }
            | Command::ListSet { key, .. }
            | Command::ListRem { key, .. }
            | Command::ListTrim { key, .. }
            | Command::ListInsert { key, .. } => f(Key, key),
            Command::ListMove { source, destination, .. } => {
                f(Key, source);
                f(Key, destination);
            }
            Command::BlockingPop(p) => {
                p.keys.iter().for_each(|key| f(Key, key));
                if let Some((destination, _)) = &p.to {
                    f(Key, destination);
                }
            }
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
            Command::InSession { command, .. }
            | Command::AsUser { command, .. }
            | Command::Limited { command, .. } => command.payload_len(),
            Command::Exec { steps, .. } => Step::writes(steps).map(Command::payload_len).max().unwrap_or(0),
            Command::MSet { pairs, .. } => pairs.iter().map(|(_, v)| v.len()).max().unwrap_or(0),
            Command::Append { value, .. } => value.len(),
            Command::HSet { pairs, .. } => pairs.iter().map(|(f, v)| f.len().max(v.len())).max().unwrap_or(0),
            Command::HDel { fields, .. } => fields.iter().map(Bytes::len).max().unwrap_or(0),
            Command::HIncrBy { field, .. } | Command::HIncrByFloat { field, .. } => field.len(),
            Command::PubSubPublish { channel, message } => channel.len().max(message.len()),
            Command::ListPush { elements, .. } => elements.iter().map(Bytes::len).max().unwrap_or(0),
            Command::ListSet { element, .. } | Command::ListInsert { element, .. } => element.len(),
            _ => 0,
        }
    }

    /// The bytes a message would add to the queues (body and properties), for the server's
    /// `max-memory` limit; `None` for a command that stores no message. Only messages are
    /// refused for memory, so consumers can keep draining. Elements pushed onto a Redis list
    /// count as messages: a list is a queue its users push to and pop from.
    pub fn message_len(&self) -> Option<usize> {
        match self {
            Command::Push(push) | Command::Publish(Publish { push, .. }) => {
                Some(push.payload.len() + push.properties.len())
            }
            Command::ListPush { elements, .. } => Some(elements.iter().map(Bytes::len).sum()),
            Command::ListInsert { element, .. } | Command::ListSet { element, .. } => Some(element.len()),
            Command::InSession { command, .. }
            | Command::AsUser { command, .. }
            | Command::Limited { command, .. } => command.message_len(),
            // Every message the transaction would store, together: it stores all or none.
            Command::Exec { steps, .. } => {
                Step::writes(steps).filter_map(Command::message_len).reduce(|a, b| a.saturating_add(b))
            }
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

/// An end of a Redis list: `LEFT` is the head, `RIGHT` the tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum End {
    Left,
    Right,
}

/// A Redis blocking pop: `BLPOP` / `BRPOP` (no `to`) or `BLMOVE` / `BRPOPLPUSH` (with `to`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockingPop {
    /// Tried in order; the first that holds elements is popped.
    pub keys: Vec<String>,
    pub from: End,
    /// `BLMOVE`'s destination and the end the element is pushed onto.
    pub to: Option<(String, End)>,
    /// How long to wait when every key is empty: 0 = answer nil at once (what a blocking pop
    /// inside `MULTI` or a script does, as in Redis); [`WAIT_FOREVER`] (or anything past
    /// [`crate::MAX_DURATION`]) = until served (Redis's timeout 0).
    pub wait: Millis,
    /// The session the wait belongs to: waiting needs one, to know whom to answer.
    pub session: Option<SessionId>,
}

/// [`BlockingPop::wait`] for a wait without a deadline.
pub const WAIT_FOREVER: Millis = Millis::MAX;

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

/// How `GETEX` changes a key's TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyExpiry {
    /// Remove the TTL (`PERSIST`).
    Persist,
    /// Expire this long from now (`EX`, `PX`; more than 0).
    In(Millis),
    /// Expire at this time, ms since the epoch (`EXAT`, `PXAT`); a time already past deletes
    /// the key.
    At(Timestamp),
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
    // Redis lists. Last, so that the variant numbers above (forwarded reads) stay.
    /// `LLEN`: 0 for a missing key.
    ListLen {
        key: String,
    },
    /// `LRANGE`: the elements from `start` to `stop` (inclusive, negative from the tail).
    ListRange {
        key: String,
        start: i64,
        stop: i64,
    },
    /// `LINDEX`: the element at `index`, or nil.
    ListIndex {
        key: String,
        index: i64,
    },
    /// `LPOS`: where `element` is. `rank` 1 = the first match from the head, -1 the first from
    /// the tail; `count` None = one index (or nil), Some(0) = every match; `max_len` 0 = look at
    /// every element.
    ListPos {
        key: String,
        element: Bytes,
        rank: i64,
        count: Option<u64>,
        max_len: u64,
    },
    // Transactions (WATCH). Last, so that the variant numbers above stay.
    /// Each key's version, what `WATCH` remembers and [`Command::Exec`] compares: an `Array` of
    /// `Int`, in the order given. The version is the log index of the key's last change (its
    /// value or its TTL), or 0 for a key that does not exist.
    KeyVersions {
        keys: Vec<String>,
    },
    // Redis keyspace reads. Last, so that the variant numbers above (forwarded reads) stay.
    /// `MGET`: an `Array` of each key's value, nil for a missing key or one that is not a
    /// string (Redis's rule: `MGET` never answers `WRONGTYPE`).
    MGet {
        keys: Vec<String>,
    },
    /// `STRLEN`: the string's length, 0 when missing.
    StrLen {
        key: String,
    },
    /// `TYPE`: `Status` `string`, `hash`, `list`, or `none`.
    Type {
        key: String,
    },
    /// `KEYS pattern`: the matching keys, in key order.
    Keys {
        pattern: Bytes,
    },
    /// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`: `Array[Bytes(next cursor),
    /// Array(keys)]`. See `kv.rs` for the cursor.
    Scan {
        cursor: u64,
        pattern: Option<Bytes>,
        count: u64,
        kind: Option<String>,
    },
    /// `DBSIZE`: how many keys exist.
    DbSize,
    /// `OBJECT ENCODING | REFCOUNT | IDLETIME | FREQ key`: nil for a missing key.
    Object {
        key: String,
        field: ObjectField,
    },
    /// `PEXPIRETIME`: when the key expires, in ms since the epoch; -1 without a TTL, -2 when
    /// the key does not exist.
    ExpireTime {
        key: String,
    },
    /// `HGET`: the field's value, or nil.
    HGet {
        key: String,
        field: Bytes,
    },
    /// `HMGET`: an `Array` of the fields' values, nil for a missing one.
    HMGet {
        key: String,
        fields: Vec<Bytes>,
    },
    /// `HEXISTS`: `Int(1)` or `Int(0)`.
    HExists {
        key: String,
        field: Bytes,
    },
    /// `HGETALL`, `HKEYS`, `HVALS`: an `Array` of fields and values (or only one of them), in
    /// field order.
    HGetAll {
        key: String,
        fields: bool,
        values: bool,
    },
    /// `HLEN`: the number of fields.
    HLen {
        key: String,
    },
    /// `HSTRLEN`: the length of the field's value, 0 when missing.
    HStrLen {
        key: String,
        field: Bytes,
    },
    /// `HSCAN key cursor [MATCH pattern]`: the whole hash in one batch (`Array[Bytes("0"),
    /// Array(fields and values)]`), as Redis answers for the small hashes lock libraries keep.
    HScan {
        key: String,
        pattern: Option<Bytes>,
    },
}

/// What `OBJECT` asks about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectField {
    /// The internal representation Redis would use for the value (see `kv.rs`).
    Encoding,
    RefCount,
    /// Seconds since the key was last accessed: Turnstile keeps no access times (reads do not
    /// change replicated state), so 0.
    IdleTime,
    /// The LFU counter, which Redis refuses to give without an LFU eviction policy; Turnstile
    /// evicts nothing, so it refuses the same way.
    Freq,
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
