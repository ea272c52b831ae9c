//! Sessions: what a connection owns, so that closing it cleans up in one step.
//!
//! Sessions live in the replicated state, not on the node that serves the connection, so a
//! failover orphans nothing: any node can close a session and every node agrees on what it freed.
//!
//! ```text
//!  host (one server process's run) ── KeepAlive every timeout/3 ──► expires_at = now + timeout
//!    └─ sessions it holds ──► OpenSession { host, secret }      a new session, bound to it
//!                             CloseSession { binding }          the connection closed cleanly
//!                             ResumeSession { secret, host }    moved here: holds and deliveries
//!                                                               stay, waits and consumers end
//!  the host's expiry fires ──► each of its sessions closes as CloseSession would
//! ```
//!
//! A host is a process, not a node: a node restarted after a crash is a new host, so its
//! keep-alives do not keep the sessions of its previous run alive.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::snapshot::TimerList;
use crate::timer::Timer;
use crate::{CoreError, Effect, Millis, QueueId, Reply, SessionId, State, Timestamp, WaitTarget, ensure};

/// One run of a server process that holds sessions' connections: a number it drew at random
/// when it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HostId(pub u64);

/// The host of sessions opened by a binary from before hosts (see
/// [`crate::Command::LegacyOpenSession`]) and of the sessions in a version-5 snapshot. Nobody
/// keeps it alive, and it does not expire for as long as a state can run ([`LEGACY_TIMEOUT`]):
/// those sessions end as they did under that binary, closed by their connection or detached by
/// a restart. An expiry that binary did not have would make a replayed log come out otherwise
/// than it did (a hold released early, a later acquire granted that was refused).
pub const LEGACY_HOST: HostId = HostId(0);

/// [`LEGACY_HOST`]'s timeout: the longest duration a state takes.
pub const LEGACY_TIMEOUT: Millis = crate::MAX_DURATION;

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A host's keep-alive deadline. A snapshot holds all but `sessions`, an index rebuilt from them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Host {
    /// Its sessions close then, unless a keep-alive comes first.
    pub(crate) expires_at: Timestamp,
    /// The timeout its latest keep-alive named: what a new leader gives it again.
    pub(crate) timeout: Millis,
    #[serde(skip)]
    pub(crate) sessions: BTreeSet<SessionId>,
}

/// What ending a session's waits and consumers leaves to do once the rest of it is settled.
struct Ended {
    /// Lock lines that lost a waiter: they may move up.
    lines: BTreeSet<String>,
    /// Queues that lost a consumer: auto-delete ones may go.
    consumer_queues: Vec<QueueId>,
}

/// How a session ends: closed by its connection, or detached from a connection that is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Close,
    Detach,
}

/// What a session owns. A snapshot holds its first four fields: the rest are indexes of holds,
/// waiters, deliveries and consumers that name the session, rebuilt from them on restore.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Session {
    pub(crate) opened_at: Timestamp,
    /// The process that holds its connection and keeps it alive.
    pub(crate) host: HostId,
    pub(crate) secret: u64,
    /// The open or resume that bound it to its current connection: the session's id at open,
    /// a fresh id at each resume.
    pub(crate) binding: u64,
    /// Hold tokens taken without KEEP.
    #[serde(skip)]
    pub(crate) holds: BTreeSet<u64>,
    /// Waiting acquires and pops.
    #[serde(skip)]
    pub(crate) waits: BTreeSet<u64>,
    /// In-flight deliveries: (queue, receipt).
    #[serde(skip)]
    pub(crate) deliveries: BTreeSet<(QueueId, u64)>,
    #[serde(skip)]
    pub(crate) consumers: BTreeSet<(QueueId, u64)>,
    /// Queues exclusive to this session (`QueueConfig::exclusive_owner`): they end with it.
    #[serde(skip)]
    pub(crate) exclusive_queues: BTreeSet<QueueId>,
}

impl Session {
    /// The session an item read from a snapshot names, for rebuilding what it owns.
    pub(crate) fn restored(
        sessions: &mut BTreeMap<SessionId, Session>,
        id: SessionId,
    ) -> Result<&mut Session, String> {
        sessions.get_mut(&id).ok_or_else(|| format!("an item names session {id}, which is not open"))
    }

    /// What a snapshot holds of it: the fields that are not indexes.
    pub(crate) fn snapshot_copy(&self) -> Session {
        Session {
            opened_at: self.opened_at,
            host: self.host,
            secret: self.secret,
            binding: self.binding,
            ..Session::default()
        }
    }
}

impl State {
    /// Rebuilds what a snapshot leaves out about hosts: the sessions each holds, and the
    /// expiry timers.
    pub(crate) fn rebuild_host_indexes(&mut self, timers: &mut TimerList) -> Result<(), String> {
        for (&id, session) in &self.sessions {
            let host = self.hosts.get_mut(&session.host);
            let host = host.ok_or_else(|| {
                format!("session {id} is held by host {}, which is not known", session.host)
            })?;
            host.sessions.insert(id);
        }
        for (&host, known) in &self.hosts {
            timers.push((known.expires_at, Timer::HostExpiry { host }));
        }
        Ok(())
    }
}

impl State {
    pub(crate) fn open_session(
        &mut self,
        host: HostId,
        secret: u64,
        timeout: Millis,
    ) -> Result<Reply, CoreError> {
        self.know_host(host, timeout)?;
        let id = SessionId(self.next_id());
        let session = Session { opened_at: self.clock, host, secret, binding: id.0, ..Session::default() };
        self.sessions.insert(id, session);
        self.hosts.get_mut(&host).expect("host known").sessions.insert(id);
        if let Some(caller) = &self.caller {
            self.session_users.insert(id, caller.user.clone());
        }
        Ok(Reply::Session(id))
    }

    /// Releases holds, drops waits and consumers, and returns in-flight deliveries; unless
    /// `binding` names a binding the session no longer has (`Int(0)`).
    pub(crate) fn close_session(
        &mut self,
        id: SessionId,
        binding: Option<u64>,
        fx: &mut Vec<Effect>,
    ) -> Result<Reply, CoreError> {
        let session = self.session(id)?;
        if binding.is_some_and(|b| b != session.binding) {
            return Ok(Reply::Int(0));
        }
        self.end_session(id, Ending::Close, fx);
        Ok(Reply::Int(1))
    }

    /// Ends every session after a restart, when no connection survived: their waits and
    /// consumers go, but their holds and deliveries stay, owned by no session, until released,
    /// acked or their leases run out (leases the same restart refreshed). Replies the count.
    pub(crate) fn detach_sessions(&mut self, fx: &mut Vec<Effect>) -> Reply {
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for &id in &ids {
            self.end_session(id, Ending::Detach, fx);
        }
        Reply::Int(ids.len() as i64)
    }

    pub(crate) fn keep_alive(&mut self, host: HostId, timeout: Millis) -> Result<Reply, CoreError> {
        let expires_at = self.deadline(timeout)?;
        match self.hosts.get_mut(&host) {
            Some(known) => {
                let old = known.expires_at;
                known.expires_at = expires_at;
                known.timeout = timeout;
                self.timers.reschedule(old, expires_at, Timer::HostExpiry { host });
            }
            None => self.add_host(host, timeout, expires_at),
        }
        Ok(Reply::Ok)
    }

    /// Adds `host` if it is not known, alive for `timeout`: a session is never held by a host
    /// that cannot expire, even when its first keep-alive has not reached the log yet.
    fn know_host(&mut self, host: HostId, timeout: Millis) -> Result<(), CoreError> {
        let expires_at = self.deadline(timeout)?;
        if !self.hosts.contains_key(&host) {
            self.add_host(host, timeout, expires_at);
        }
        Ok(())
    }

    fn add_host(&mut self, host: HostId, timeout: Millis, expires_at: Timestamp) {
        self.hosts.insert(host, Host { expires_at, timeout, sessions: BTreeSet::new() });
        self.timers.add(expires_at, Timer::HostExpiry { host });
    }

    /// Moves a session to `host` under a new binding. Its waits and consumers end first: their
    /// outcomes were to reach the old connection, which nobody reads any more.
    pub(crate) fn resume_session(
        &mut self,
        id: SessionId,
        secret: u64,
        host: HostId,
        timeout: Millis,
        fx: &mut Vec<Effect>,
    ) -> Result<Reply, CoreError> {
        if self.sessions.get(&id).is_none_or(|s| s.secret != secret) {
            return Err(CoreError::NotResumable(id));
        }
        self.check_owner([(id.0, self.session_users.get(&id))], "session")?;
        self.know_host(host, timeout)?;
        let ended = self.end_waits_and_consumers(id);
        let binding = self.next_id();
        let session = self.session_mut(id);
        let old = std::mem::replace(&mut session.host, host);
        session.binding = binding;
        self.hosts.get_mut(&old).expect("a session's host is known").sessions.remove(&id);
        self.hosts.get_mut(&host).expect("host known").sessions.insert(id);
        self.after_waits_ended(ended, fx);
        Ok(Reply::Int(i64::try_from(binding).unwrap_or(i64::MAX)))
    }

    /// A host's keep-alives stopped: every session it held closes, as `CloseSession` would.
    pub(crate) fn host_expired(&mut self, host: HostId, fx: &mut Vec<Effect>) {
        let gone = self.hosts.remove(&host).expect("an expiring host is known");
        self.timers.remove(gone.expires_at, Timer::HostExpiry { host });
        for id in gone.sessions {
            self.end_session(id, Ending::Close, fx);
        }
    }

    fn end_session(&mut self, id: SessionId, ending: Ending, fx: &mut Vec<Effect>) {
        // Its exclusive queues go first, as a `DeleteQueue` of each would (consumers cancelled,
        // messages gone), whether the session is closed or detached.
        for qid in self.sessions[&id].exclusive_queues.clone() {
            let name = self.queues[&qid].name.clone();
            self.delete_queue(&name, fx);
        }
        let ended = self.end_waits_and_consumers(id);
        let session = self.sessions[&id].clone();
        match ending {
            Ending::Close => {
                for token in session.holds {
                    let name = self.holds[&token].clone();
                    self.release(&name, token, fx);
                }
                for (queue, receipt) in session.deliveries {
                    self.return_delivery(queue, receipt, fx);
                }
            }
            Ending::Detach => {
                for token in session.holds {
                    self.detach_hold(token);
                }
                for (queue, receipt) in session.deliveries {
                    self.detach_delivery(queue, receipt);
                }
            }
        }
        self.sessions.remove(&id);
        self.session_users.remove(&id);
        if let Some(host) = self.hosts.get_mut(&session.host) {
            host.sessions.remove(&id);
        }
        self.after_waits_ended(ended, fx);
    }

    /// Takes a session's consumers and waits out of their queues and lines. Consumers go first,
    /// so messages returned next are not handed straight back to them; waits leave every line
    /// before any line moves up, so nothing is granted to this session. The caller then calls
    /// [`State::after_waits_ended`].
    fn end_waits_and_consumers(&mut self, id: SessionId) -> Ended {
        let session = &self.sessions[&id];
        let (consumers, waits) = (session.consumers.clone(), session.waits.clone());
        for &(queue, consumer_id) in &consumers {
            self.remove_consumer(queue, consumer_id);
        }
        let mut lines = BTreeSet::new();
        for wait_id in waits {
            match self.waits[&wait_id].clone() {
                WaitTarget::Lock(name) => {
                    self.remove_lock_waiter(&name, wait_id);
                    lines.insert(name);
                }
                WaitTarget::Pop(queue) => {
                    self.remove_pop_waiter(queue, wait_id);
                }
                WaitTarget::List => {
                    self.remove_list_waiter(wait_id);
                }
            }
        }
        Ended { lines, consumer_queues: consumers.into_iter().map(|(queue, _)| queue).collect() }
    }

    /// Moves up the lines a session's waits left, and deletes the auto-delete queues that just
    /// lost their last consumer.
    fn after_waits_ended(&mut self, ended: Ended, fx: &mut Vec<Effect>) {
        for name in ended.lines {
            self.wake(&name, fx);
        }
        for queue in ended.consumer_queues {
            self.auto_delete_queue(queue, fx);
        }
    }

    pub(crate) fn refresh_leases(&mut self) -> Reply {
        self.refresh_hold_leases();
        self.refresh_delivery_leases();
        self.refresh_hosts();
        Reply::Ok
    }

    /// No host expires before a full timeout from now (a new leader's clock).
    fn refresh_hosts(&mut self) {
        let clock = self.clock;
        for (&host, known) in &mut self.hosts {
            let refreshed = known.expires_at.max(clock + known.timeout);
            self.timers.reschedule(known.expires_at, refreshed, Timer::HostExpiry { host });
            known.expires_at = refreshed;
        }
    }

    pub(crate) fn session(&self, id: SessionId) -> Result<&Session, CoreError> {
        self.sessions.get(&id).ok_or(CoreError::UnknownSession(id))
    }

    /// Refuses `cmd` when its session is at a per-session limit ([`crate::Command::Limited`]):
    /// an acquire while the session has `max_holds` holds and acquires waiting (a lock it holds
    /// already may be acquired again: that takes no new hold), a command that may wait while it
    /// has `max_waits` waits. Holds taken with `KEEP` are not the session's and do not count.
    pub(crate) fn check_session_limits(
        &self,
        limits: crate::SessionLimits,
        cmd: &crate::Command,
    ) -> Result<(), CoreError> {
        use crate::Command;
        let id = match cmd {
            Command::Acquire(a) => a.session,
            Command::Pop(p) => p.session,
            Command::BlockingPop(p) => p.session,
            _ => None,
        };
        // No session: the command itself says so (a wait needs one).
        let Some(session) = id.and_then(|id| self.sessions.get(&id)) else { return Ok(()) };
        if let Command::Acquire(a) = cmd
            && limits.max_holds > 0
        {
            let holds_it = session.holds.iter().any(|token| self.holds.get(token) == Some(&a.name));
            let lock_waits = session
                .waits
                .iter()
                .filter(|w| matches!(self.waits.get(w), Some(WaitTarget::Lock(_))))
                .count();
            if !holds_it && session.holds.len() + lock_waits >= limits.max_holds as usize {
                return Err(CoreError::SessionLimit {
                    setting: "max-holds-per-session".into(),
                    limit: limits.max_holds,
                });
            }
        }
        if cmd.may_wait() && limits.max_waits > 0 && session.waits.len() >= limits.max_waits as usize {
            return Err(CoreError::SessionLimit {
                setting: "max-waits-per-session".into(),
                limit: limits.max_waits,
            });
        }
        Ok(())
    }

    /// The session of an item that references it; its existence is an invariant.
    pub(crate) fn session_mut(&mut self, id: SessionId) -> &mut Session {
        self.sessions.get_mut(&id).expect("items reference only open sessions")
    }

    /// A timed-out wait (lock or pop): take it out of its line and tell its session.
    pub(crate) fn wait_timed_out(&mut self, wait_id: u64, fx: &mut Vec<Effect>) {
        match self.waits[&wait_id].clone() {
            WaitTarget::Lock(name) => {
                let waiter = self.remove_lock_waiter(&name, wait_id);
                fx.push(Effect::WaitTimedOut { session: waiter.session, wait_id, name: name.clone() });
                self.wake(&name, fx);
            }
            WaitTarget::Pop(queue) => {
                let session = self.remove_pop_waiter(queue, wait_id);
                let queue = self.queues[&queue].name.clone();
                fx.push(Effect::PopTimedOut { session, wait_id, queue });
            }
            WaitTarget::List => {
                let waiter = self.remove_list_waiter(wait_id);
                fx.push(Effect::ListWaitDone { session: waiter.session, wait_id, reply: Reply::Nil });
            }
        }
    }

    pub(crate) fn check_sessions(&self) -> Result<(), String> {
        for (host, known) in &self.hosts {
            ensure!(
                self.timers.contains(known.expires_at, &Timer::HostExpiry { host: *host }),
                "host {host}: no expiry timer"
            );
            for id in &known.sessions {
                ensure!(self.sessions.get(id).is_some_and(|s| s.host == *host), "host {host}: session {id}");
            }
        }
        for (id, s) in &self.sessions {
            ensure!(
                self.hosts.get(&s.host).is_some_and(|h| h.sessions.contains(id)),
                "session {id}: its host {} does not list it",
                s.host
            );
            for token in &s.holds {
                let name = self.holds.get(token);
                let hold = name.and_then(|n| self.resources.get(n)).and_then(|r| r.holds.get(token));
                ensure!(
                    hold.is_some_and(|h| h.session == Some(*id)),
                    "session {id}: hold {token} not its own"
                );
            }
            for wait_id in &s.waits {
                ensure!(self.waits.contains_key(wait_id), "session {id}: wait {wait_id} unknown");
            }
            for (queue, receipt) in &s.deliveries {
                let q = self.queues.get(queue);
                ensure!(
                    q.is_some_and(|q| q.in_flight.contains_key(receipt)),
                    "session {id}: delivery {receipt}"
                );
            }
            for (queue, consumer) in &s.consumers {
                let q = self.queues.get(queue);
                ensure!(q.is_some_and(|q| q.consumers.contains_key(consumer)), "session {id}: consumer");
            }
            for queue in &s.exclusive_queues {
                let q = self.queues.get(queue);
                ensure!(
                    q.is_some_and(|q| q.config.exclusive_owner == Some(*id)),
                    "session {id}: exclusive queue {queue} not its own"
                );
            }
        }
        Ok(())
    }
}

/// A session as operators see it (the admin API, the dashboard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub id: SessionId,
    /// The owner name holds and waits of this session go by unless they name another.
    pub default_owner: String,
    /// Time since the session was opened.
    pub age: crate::Millis,
    /// Holds that end with the session (taken without KEEP).
    pub holds: usize,
    pub waits: usize,
    pub deliveries: usize,
    pub consumers: usize,
}

impl State {
    /// Every open session, oldest first.
    pub fn sessions(&self) -> Vec<SessionView> {
        self.sessions
            .iter()
            .map(|(id, s)| SessionView {
                id: *id,
                default_owner: crate::default_owner(*id),
                age: self.clock.saturating_sub(s.opened_at),
                holds: s.holds.len(),
                waits: s.waits.len(),
                deliveries: s.deliveries.len(),
                consumers: s.consumers.len(),
            })
            .collect()
    }
}
