//! Turnstile's state machine: locks, semaphores, queues (with AMQP exchanges), sessions and KV, pure
//! and deterministic.
//!
//! ```text
//!   log entry (index, leader's stamp, Command) ──► State::apply ──► (Reply, Vec<Effect>)
//!                                                    │
//!               1. clock = max(clock, stamp)         │  no I/O, no clock reads, no randomness,
//!               2. fire every timer due by then      │  no hash-map iteration: the same log
//!               3. apply the command                 │  gives the same state on every node
//! ```
//!
//! The reply goes to the client that sent the command; effects go to whoever the server must tell
//! (a parked waiter that was granted, a consumer that was sent a message). Reads ([`Query`]) never
//! change state and need no log entry.
//!
//! One 64-bit counter issues every fencing token: each grant and each delivery takes the next
//! value, so tokens are unique and strictly increasing across the whole system, even when one
//! entry grants several holds or makes several deliveries.

mod acl;
mod command;
mod deadlock;
mod decimal;
mod error;
mod exchange;
mod glob;
mod hash;
mod kv;
mod list;
mod lock;
mod queue;
mod reply;
mod script;
mod session;
mod snapshot;
mod timer;
mod transaction;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

pub use acl::{
    Caller, Categories, Category, CommandRule, DEFAULT_USER, Denied, Perms, RuleError, Selector, User,
    hash_secret, is_hash,
};
pub use command::{
    Acquire, Binding, BlockingPop, Command, Consume, CreditPool, End, Eval, ExchangeDecl, ExchangeKind,
    ExpireCondition, Fence, KeyExpiry, Mode, NameKind, ObjectField, Pop, Publish, Push, Query, ScriptRef,
    SessionLimits, SetCondition, SetExpiry, SetKey, Step, WAIT_FOREVER,
};
pub use decimal::parse_float;
pub use error::{CoreError, MAX_DURATION, WaitEdge};
pub use glob::glob_match;
pub use queue::{DeadLetterExchange, Overflow, QueueConfig};
pub use reply::{
    DeadLetter, DeadReason, Delivery, Effect, HolderView, LockInfo, MessageView, QueueStats, QueueTotals,
    Reply, Taker, WaiterView,
};
pub use script::{
    DEFAULT_SCRIPT_BUDGET, ScriptCtx, ScriptHost, ScriptOutcome, install_script_host, sha1_hex,
};
pub use session::{HostId, LEGACY_HOST, LEGACY_TIMEOUT, SessionView};
pub use snapshot::SnapshotError;

use exchange::Exchanges;
use kv::KvEntry;
use list::ListWaiter;
use lock::Resource;
use queue::{CreditPoolState, Queue};
use session::{Host, Session};
use timer::{Timer, Timers};

/// Milliseconds since the Unix epoch, in the leader's clock.
pub type Timestamp = u64;
/// A duration in milliseconds.
pub type Millis = u64;
/// A message id: unique across all queues, increasing in push order.
pub type MsgId = u64;
/// Queues are referred to by number inside the state, so timers stay small.
pub(crate) type QueueId = u64;

/// A client session: one per connection, resumable on another connection (see `session.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The owner name used when an acquire names none: one owner per session.
pub fn default_owner(session: SessionId) -> String {
    format!("session:{}", session.0)
}

/// The whole replicated state. See the crate docs for how it is driven, and `snapshot.rs` for
/// which fields a snapshot holds (the others are indexes, rebuilt on restore).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Never goes backwards: the max of every stamp applied.
    clock: Timestamp,
    /// The log index of the last entry applied, for snapshots.
    applied_index: u64,
    /// The last fencing token issued (grants and deliveries).
    last_token: u64,
    /// The last id issued to a session, waiter, consumer or message.
    last_id: u64,
    sessions: BTreeMap<SessionId, Session>,
    /// The server processes that hold sessions' connections, each with its keep-alive deadline.
    hosts: BTreeMap<HostId, Host>,
    /// Locks and semaphores by name (one namespace for both).
    resources: BTreeMap<String, Resource>,
    /// Live hold token → resource name.
    holds: BTreeMap<u64, String>,
    /// Waiting acquire or pop → what it waits for.
    waits: BTreeMap<u64, WaitTarget>,
    /// Owner → its waiting acquires: the edges of the wait-for graph start here.
    owner_waits: BTreeMap<String, BTreeSet<u64>>,
    /// Owner → how many holds it has (of any resource): the deadlock check skips a new waiter
    /// that holds nothing and waits nowhere else without walking the line it joins.
    owner_holds: BTreeMap<String, u32>,
    queue_ids: BTreeMap<String, QueueId>,
    queues: BTreeMap<QueueId, Queue>,
    keys: BTreeMap<String, KvEntry>,
    /// Key and value bytes of every key, kept as keys change.
    key_bytes: u64,
    /// Every key by its scan hash, the order `SCAN` walks (see `kv.rs`).
    scan_order: BTreeSet<(u64, String)>,
    /// Lua scripts by the SHA-1 of their source in lower-case hex (`SCRIPT LOAD`, `EVAL`): part of
    /// the replicated state, so `EVALSHA` works on every node and after a restart.
    scripts: BTreeMap<String, bytes::Bytes>,
    timers: Timers,
    exchanges: Exchanges,
    /// Ids of nodes that have left the cluster: never given to a new node.
    retired_nodes: BTreeSet<u64>,
    /// Shared prefetch of a session's consumers: (session, pool id) → pool.
    pools: BTreeMap<(SessionId, u64), CreditPoolState>,
    /// Queues whose takers may have gained credit in this step (a pool freed, the single active
    /// consumer changed): served at the end of the step. Always empty between steps.
    to_serve: BTreeSet<QueueId>,
    /// Blocking list pops (`BLPOP`, `BLMOVE`) waiting, by wait id: part of snapshots.
    list_waits: BTreeMap<u64, ListWaiter>,
    /// Key → the list waits on it, oldest first (wait ids grow): an index of `list_waits`.
    list_lines: BTreeMap<String, BTreeSet<u64>>,
    /// Lists pushed to in this step that have waiters, in the order they became ready: served
    /// at the end of the step, as Redis serves blocked clients after the command (or `EXEC`).
    /// Always empty between steps.
    ready_lists: Vec<String>,
    /// The users `ACL SETUSER` / `DELUSER` made, over the config file's: `None` is a deleted
    /// user. Part of snapshots (version 8 on).
    acl_layer: BTreeMap<String, Option<User>>,
    /// The user each session was opened by, for sessions opened under [`Command::AsUser`].
    session_users: BTreeMap<SessionId, String>,
    /// The user each live hold (by token) and delivery (by receipt) was taken for, when it was
    /// taken for one: who may release, renew, ack or nack it (see `acl.rs`).
    token_users: BTreeMap<u64, String>,
    /// Who the command being applied runs for: set by [`Command::AsUser`] for its command only.
    /// Never set between steps.
    caller: Option<Caller>,
}

/// How much the state holds; see [`State::summary`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub sessions: u64,
    /// Locks and semaphores that are held or waited for.
    pub locks: u64,
    pub holds: u64,
    pub lock_waiters: u64,
    pub queues: u64,
    /// Messages stored in all queues (delayed, ready and in flight).
    pub messages: u64,
    pub timers: u64,
    pub keys: u64,
    pub payload_bytes: u64,
    pub last_token: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum WaitTarget {
    Lock(String),
    Pop(QueueId),
    /// A blocking list pop; what it waits on is in `State::list_waits`.
    List,
}

impl State {
    pub fn new() -> State {
        State::default()
    }

    /// Applies one command stamped `now` by the leader, as log entry `index`.
    pub fn apply(&mut self, index: u64, now: Timestamp, cmd: Command) -> (Reply, Vec<Effect>) {
        self.applied_index = self.applied_index.max(index);
        self.clock = self.clock.max(now);
        let mut fx = Vec::new();
        self.fire_due(&mut fx);
        let reply = match self.dispatch(cmd, None, &mut fx) {
            Ok(reply) => reply,
            Err(e) => Reply::Error(e),
        };
        self.serve_pending(&mut fx);
        self.serve_ready_lists(&mut fx);
        (reply, fx)
    }

    /// Applies one command; `actor` is the session it acts for (see [`Command::InSession`]).
    fn dispatch(
        &mut self,
        cmd: Command,
        actor: Option<SessionId>,
        fx: &mut Vec<Effect>,
    ) -> Result<Reply, CoreError> {
        match cmd {
            Command::InSession { session, command } => {
                if actor.is_some() || matches!(*command, Command::InSession { .. }) {
                    return Err(CoreError::InvalidArgument("InSession cannot be nested".into()));
                }
                self.session(session)?;
                self.dispatch(*command, Some(session), fx)
            }
            Command::AsUser { caller, command } => {
                if self.caller.is_some() || matches!(*command, Command::AsUser { .. }) {
                    return Err(CoreError::InvalidArgument("AsUser cannot be nested".into()));
                }
                self.caller = Some(caller);
                let reply = self.dispatch(*command, actor, fx);
                self.caller = None;
                reply
            }
            Command::Limited { limits, command } => {
                if matches!(*command, Command::Limited { .. }) {
                    return Err(CoreError::InvalidArgument("Limited cannot be nested".into()));
                }
                self.check_session_limits(limits, &command)?;
                self.dispatch(*command, actor, fx)
            }
            Command::AclSetUser { user } => {
                self.acl_layer.insert(user.name.clone(), Some(user));
                fx.push(Effect::UsersChanged);
                Ok(Reply::Ok)
            }
            Command::AclDelUser { names } => {
                self.acl_layer.extend(names.into_iter().map(|name| (name, None)));
                fx.push(Effect::UsersChanged);
                Ok(Reply::Ok)
            }
            Command::Tick => Ok(Reply::Ok),
            Command::OpenSession { host, secret, timeout } => self.open_session(host, secret, timeout),
            Command::CloseSession { session, binding } => self.close_session(session, binding, fx),
            Command::LegacyOpenSession => self.open_session(LEGACY_HOST, 0, LEGACY_TIMEOUT),
            Command::LegacyCloseSession { session } => self.close_session(session, None, fx),
            Command::KeepAlive { host, timeout } => self.keep_alive(host, timeout),
            Command::ResumeSession { session, secret, host, timeout } => {
                self.resume_session(session, secret, host, timeout, fx)
            }
            Command::RefreshLeases => Ok(self.refresh_leases()),
            Command::DetachSessions => Ok(self.detach_sessions(fx)),
            Command::RetireNode { node } => {
                self.retired_nodes.insert(node);
                Ok(Reply::Ok)
            }
            Command::Acquire(req) => self.acquire(req),
            Command::Release { name, token } => {
                self.check_token_owner([token], "hold")?;
                Ok(self.release(&name, token, fx))
            }
            Command::Renew { name, token, ttl } => {
                self.check_token_owner([token], "hold")?;
                self.renew(&name, token, ttl)
            }
            Command::CreateQueue { name, config } => self.create_queue(name, config),
            Command::DeleteQueue { name, if_unused, if_empty } => {
                self.delete_queue_checked(&name, if_unused, if_empty, actor, fx)
            }
            Command::PurgeQueue { name } => self.purge_queue(&name, actor),
            Command::Push(push) => self.push(push, fx),
            Command::Pop(pop) => self.pop(pop, fx),
            Command::Ack { queue, receipts, fence } => {
                self.check_token_owner(receipts.iter().copied(), "delivery")?;
                self.ack(&queue, &receipts, fence.as_ref(), fx)
            }
            Command::Nack { queue, receipt, delay, dead_letter } => {
                self.check_token_owner([receipt], "delivery")?;
                self.nack(&queue, receipt, delay, dead_letter, fx)
            }
            Command::Extend { queue, receipt, lease } => {
                self.check_token_owner([receipt], "delivery")?;
                self.extend(&queue, receipt, lease)
            }
            Command::Consume(consume) => self.consume(consume, fx),
            Command::Cancel { queue, consumer_id } => Ok(self.cancel(&queue, consumer_id, fx)),
            Command::Redrive { from, to, count } => self.redrive(&from, to, count, fx),
            Command::DeclareExchange(decl) => self.declare_exchange(decl),
            Command::DeleteExchange { name, if_unused } => self.delete_exchange(&name, if_unused),
            Command::Bind(binding) => self.bind(binding, actor),
            Command::Unbind(binding) => self.unbind(binding, actor),
            Command::Publish(publish) => self.publish(publish, fx),
            Command::Set(set) => self.set(set),
            Command::Del { keys, fence } => self.del(&keys, fence.as_ref()),
            Command::Expire { key, ttl, condition } => Ok(self.expire(&key, ttl, condition)),
            Command::IncrBy { key, delta } => self.incr_by(&key, delta),
            Command::Exec { session, watches, steps } => Ok(self.exec(session, &watches, steps, actor, fx)),
            Command::GetDel { key } => self.get_del(&key),
            Command::GetEx { key, expiry } => self.get_ex(&key, expiry),
            Command::MSet { pairs, nx } => Ok(self.mset(pairs, nx)),
            Command::Append { key, value } => self.append(key, &value),
            Command::IncrByFloat { key, delta } => self.incr_by_float(key, &delta),
            Command::ExpireAt { key, at, condition } => Ok(self.expire_at(&key, at, condition)),
            Command::Persist { key } => Ok(self.persist(&key)),
            Command::Rename { from, to, nx } => self.rename(&from, to, nx),
            Command::FlushKeys => Ok(self.flush_keys()),
            Command::HSet { key, pairs, nx } => self.hset(key, pairs, nx),
            Command::HDel { key, fields } => self.hdel(&key, &fields),
            Command::HIncrBy { key, field, delta } => self.hincr_by(key, field, delta),
            Command::HIncrByFloat { key, field, delta } => self.hincr_by_float(key, field, &delta),
            // Pub/sub:
            Command::PubSubPublish { channel, message } => {
                fx.push(Effect::Message { channel, message, at: self.clock });
                Ok(Reply::Int(0))
            }
            Command::ListPush { key, end, elements, only_if_exists } => {
                self.list_push(key, end, elements, only_if_exists)
            }
            Command::ListPop { key, end, count } => self.list_pop(&key, end, count),
            Command::ListSet { key, index, element } => self.list_set(&key, index, element),
            Command::ListRem { key, count, element } => self.list_rem(&key, count, &element),
            Command::ListTrim { key, start, stop } => self.list_trim(&key, start, stop),
            Command::ListInsert { key, before, pivot, element } => {
                self.list_insert(&key, before, &pivot, element)
            }
            Command::ListMove { source, destination, from, to } => {
                self.list_move(&source, destination, from, to)
            }
            Command::BlockingPop(pop) => self.blocking_pop(pop),
            Command::Eval(eval) => self.eval(eval, fx),
            Command::ScriptLoad { source } => self.script_load(source),
            Command::ScriptFlush => Ok(self.script_flush()),
        }
    }

    /// [`State::query`] for `caller`: a read-only script's calls are checked against the
    /// caller's permissions (other reads were checked by the front end).
    pub fn query_as(&self, now: Timestamp, query: Query, caller: Option<&Caller>) -> Reply {
        match (query, caller) {
            (Query::Eval(eval), Some(caller)) => {
                self.eval_read(now, eval, Some(caller)).unwrap_or_else(Reply::Error)
            }
            (query, _) => self.query(now, query),
        }
    }

    /// Answers a read at `now` (the reader's clock; never earlier than the state's own).
    /// Items whose deadline has passed but whose timer has not fired yet count as gone.
    pub fn query(&self, now: Timestamp, query: Query) -> Reply {
        let now = self.clock.max(now);
        let result = match query {
            Query::LockInfo { name } => Ok(self.lock_info(&name, now)),
            Query::FenceCheck { lock, token } => {
                Ok(Reply::Int(i64::from(self.fence_holds(&lock, token, now))))
            }
            Query::QueueStats { name } => self.queue_stats(&name, now),
            Query::Peek { queue, count } => self.peek(&queue, count, now),
            Query::ListQueues => Ok(Reply::Names(self.queue_ids.keys().cloned().collect())),
            Query::ListLocks => Ok(Reply::Names(self.resources.keys().cloned().collect())),
            Query::Get { key } => self.get(&key, now),
            Query::Exists { keys } => Ok(self.exists(&keys, now)),
            Query::Pttl { key } => Ok(Reply::Int(self.pttl(&key, now))),
            Query::Exchange { name } => self.exchange_exists(&name),
            Query::QueueConfig { name } => {
                self.queue_id(&name).map(|qid| Reply::QueueConfig(Box::new(self.queues[&qid].config.clone())))
            }
            Query::KeyVersions { keys } => Ok(self.key_versions(&keys, now)),
            Query::MGet { keys } => Ok(self.mget(&keys, now)),
            Query::StrLen { key } => self.strlen(&key, now),
            Query::Type { key } => Ok(self.key_type(&key, now)),
            Query::Keys { pattern } => Ok(self.matching_keys(&pattern, now)),
            Query::Scan { cursor, pattern, count, kind } => {
                Ok(self.scan(cursor, pattern.as_deref(), count, kind.as_deref(), now))
            }
            Query::DbSize => Ok(Reply::Int(self.db_size(now))),
            Query::Object { key, field } => self.object(&key, field, now),
            Query::ExpireTime { key } => Ok(Reply::Int(self.expire_time(&key, now))),
            Query::HGet { key, field } => self.hget(&key, &field, now),
            Query::HMGet { key, fields } => self.hmget(&key, &fields, now),
            Query::HExists { key, field } => self.hexists(&key, &field, now),
            Query::HGetAll { key, fields, values } => self.hgetall(&key, fields, values, now),
            Query::HLen { key } => self.hlen(&key, now),
            Query::HStrLen { key, field } => self.hstrlen(&key, &field, now),
            Query::HScan { key, pattern } => self.hscan(&key, pattern.as_deref(), now),
            Query::ListLen { key } => self.list_len(&key, now),
            Query::ListRange { key, start, stop } => self.list_range(&key, start, stop, now),
            Query::ListIndex { key, index } => self.list_index(&key, index, now),
            Query::ListPos { key, element, rank, count, max_len } => {
                self.list_pos(&key, &element, rank, count, max_len, now)
            }
            Query::Eval(eval) => self.eval_read(now, eval, None),
            Query::ScriptExists { shas } => Ok(self.script_exists(&shas)),
        };
        result.unwrap_or_else(Reply::Error)
    }

    /// The state machine's clock: the latest stamp applied.
    pub fn clock(&self) -> Timestamp {
        self.clock
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Whether node id `node` belonged to a node that left the cluster (see
    /// [`Command::RetireNode`]).
    pub fn is_retired_node(&self, node: u64) -> bool {
        self.retired_nodes.contains(&node)
    }

    /// The last fencing token issued.
    pub fn last_token(&self) -> u64 {
        self.last_token
    }

    /// When the next timer is due: the server proposes a `Tick` then, and not before.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.timers.next_due()
    }

    /// Counts for INFO and metrics.
    pub fn summary(&self) -> Summary {
        Summary {
            sessions: self.sessions.len() as u64,
            locks: self.resources.len() as u64,
            holds: self.holds.len() as u64,
            lock_waiters: self.resources.values().map(|r| r.waiters.len() as u64).sum(),
            queues: self.queues.len() as u64,
            messages: self.queues.values().map(|q| q.len() as u64).sum(),
            timers: self.timers.len() as u64,
            keys: self.keys.len() as u64,
            payload_bytes: self.payload_bytes(),
            last_token: self.last_token,
        }
    }

    /// Payload and property bytes of every stored message, plus key and value bytes of every key:
    /// what a memory limit counts. O(number of queues).
    pub fn payload_bytes(&self) -> u64 {
        let queues: u64 = self.queues.values().map(|q| q.payload_bytes).sum();
        queues + self.key_bytes
    }

    /// Fires every timer due at the current clock, in time order. Each handler ends its item
    /// through the same path a command would, and that path removes the timer.
    fn fire_due(&mut self, fx: &mut Vec<Effect>) {
        while let Some((at, timer)) = self.timers.first_due(self.clock) {
            match timer.clone() {
                Timer::HoldLease { token } => self.expire_hold(token, fx),
                Timer::WaitDeadline { wait_id } => self.wait_timed_out(wait_id, fx),
                Timer::DeliveryLease { queue, receipt } => self.delivery_expired(queue, receipt, fx),
                Timer::MessageDue { queue, id } => self.message_due(queue, id, fx),
                Timer::MessageExpiry { queue, id } => self.message_expired(queue, id, fx),
                Timer::DedupExpiry { queue, dedup } => self.dedup_expired(queue, &dedup),
                Timer::KeyExpiry { key } => self.key_expired(&key),
                Timer::HostExpiry { host } => self.host_expired(host, fx),
            }
            if self.timers.contains(at, &timer) {
                debug_assert!(false, "{timer:?} did not clear itself");
                self.timers.remove(at, timer);
            }
        }
    }

    fn next_token(&mut self) -> u64 {
        self.last_token += 1;
        self.last_token
    }

    fn next_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    /// `now + d`, refusing durations that are zero or absurdly long.
    fn deadline(&self, d: Millis) -> Result<Timestamp, CoreError> {
        if d == 0 || d > MAX_DURATION {
            return Err(CoreError::BadDuration);
        }
        Ok(self.clock + d)
    }

    /// Checks every internal index and counter against the data it summarizes. Tests call it
    /// after every step; it is public so the verification suite can, too.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.check_locks()?;
        self.check_queues()?;
        self.check_sessions()?;
        self.check_keys()?;
        self.check_exchanges()?;
        self.check_pools()?;
        self.check_list_waits()?;
        self.check_users()?;
        if !self.to_serve.is_empty() {
            return Err("queues left to serve between steps".into());
        }
        let timers = self.expected_timers();
        if timers != self.timers.len() {
            return Err(format!("{} timers set, {} items have deadlines", self.timers.len(), timers));
        }
        Ok(())
    }

    fn expected_timers(&self) -> usize {
        let holds = self.holds.len();
        // A list wait without a deadline (Redis's timeout 0) has no timer.
        let waits = self.waits.len() - self.list_waits.values().filter(|w| w.deadline.is_none()).count();
        let queues: usize = self.queues.values().map(Queue::timer_count).sum();
        let keys = self.keys.values().filter(|e| e.expires_at.is_some()).count();
        holds + waits + queues + keys + self.hosts.len()
    }
}

/// Reads `Result<(), String>` invariant failures with a location.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}
pub(crate) use ensure;
