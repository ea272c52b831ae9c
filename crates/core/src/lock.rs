//! Locks (exclusive and shared) and semaphores: holds, leases, and a FIFO line of waiters.
//!
//! ```text
//!   acquire ──► owner already holds it? ── yes ──► same token, lease refreshed
//!                    │ no
//!                    ▼
//!          nobody waiting and compatible? ── yes ──► new hold, next fencing token
//!                    │ no
//!                    ▼
//!          WAIT given? ── no ──► Nil
//!                    │ yes
//!                    ▼
//!          would the wait deadlock? ── yes ──► Deadlock error naming the cycle
//!                    │ no
//!                    ▼
//!          join the back of the line ──► Waiting; later Granted or WaitTimedOut effect
//! ```
//!
//! A release, an expiry or a waiter leaving wakes the line from the front, granting waiters in
//! order while they fit and stopping at the first that does not: no thundering herd, no barging,
//! and a waiting writer is never starved by readers arriving after it.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::session::Session;
use crate::snapshot::TimerList;
use crate::timer::Timer;
use crate::{
    Acquire, CoreError, Effect, HolderView, LockInfo, Millis, Mode, Reply, SessionId, State, Timestamp,
    WaitTarget, WaiterView, default_owner, ensure,
};

/// A lock or a semaphore: who holds it and who waits for it. Removed when both are empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Resource {
    /// Permits of a semaphore; `None` for a lock.
    pub(crate) limit: Option<u32>,
    pub(crate) holds: BTreeMap<u64, Hold>,
    /// Owner → its hold's token (an owner has at most one hold per resource). An index: not in
    /// snapshots.
    #[serde(skip)]
    pub(crate) owners: BTreeMap<String, u64>,
    pub(crate) waiters: VecDeque<Waiter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hold {
    pub(crate) owner: String,
    /// `None` when taken with KEEP (or without a session): only the lease ends it.
    pub(crate) session: Option<SessionId>,
    pub(crate) mode: Mode,
    /// The lease length last asked for, used to refresh leases after a leader change.
    pub(crate) ttl: Millis,
    pub(crate) expires_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Waiter {
    pub(crate) wait_id: u64,
    pub(crate) owner: String,
    pub(crate) session: SessionId,
    pub(crate) mode: Mode,
    pub(crate) ttl: Millis,
    pub(crate) keep: bool,
    pub(crate) deadline: Timestamp,
}

impl Mode {
    /// Permits this mode takes from a semaphore (1 for locks).
    pub(crate) fn permits(self) -> u32 {
        match self {
            Mode::Permits { count, .. } => count,
            Mode::Exclusive | Mode::Shared => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Exclusive => "exclusive",
            Mode::Shared => "shared",
            Mode::Permits { .. } => "permits",
        }
    }
}

impl Resource {
    fn kind(&self) -> &'static str {
        if self.limit.is_some() { "semaphore" } else { "lock" }
    }

    /// Whether a hold in `mode` fits beside the holds of the owners `counts` accepts.
    /// The deadlock detector calls this with some holders treated as already gone.
    pub(crate) fn fits(&self, mode: Mode, counts: impl Fn(&Hold) -> bool) -> bool {
        let mut held = self.holds.values().filter(|h| counts(h));
        match mode {
            Mode::Exclusive => held.next().is_none(),
            Mode::Shared => held.all(|h| h.mode == Mode::Shared),
            Mode::Permits { limit, count } => {
                let used: u64 = held.map(|h| u64::from(h.mode.permits())).sum();
                used + u64::from(count) <= u64::from(limit)
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.holds.is_empty() && self.waiters.is_empty()
    }
}

impl State {
    pub(crate) fn acquire(&mut self, req: Acquire) -> Result<Reply, CoreError> {
        let Acquire { name, mode, ttl, wait, owner, session, keep } = req;
        let expires_at = self.deadline(ttl)?;
        if let Mode::Permits { limit, count } = mode {
            check_permits(limit, count)?;
        }
        let owner = match (owner, session) {
            (Some(owner), _) => owner,
            (None, Some(session)) => default_owner(session),
            (None, None) => return Err(CoreError::InvalidArgument("an owner or a session is needed".into())),
        };
        if let Some(session) = session {
            self.session(session)?;
        }
        if let Some(resource) = self.resources.get(&name) {
            check_kind(&name, resource, mode)?;
            if let Some(&token) = resource.owners.get(&owner) {
                // A retry after a lost reply: the same hold, its lease refreshed.
                if resource.holds[&token].mode != mode {
                    return Err(CoreError::ModeConflict { name, owner });
                }
                self.set_hold_expiry(&name, token, ttl, expires_at);
                return Ok(Reply::Granted { token, lease: ttl });
            }
        }
        let resource = self.resources.entry(name.clone()).or_insert_with(|| Resource {
            limit: match mode {
                Mode::Permits { limit, .. } => Some(limit),
                Mode::Exclusive | Mode::Shared => None,
            },
            holds: BTreeMap::new(),
            owners: BTreeMap::new(),
            waiters: VecDeque::new(),
        });
        if resource.waiters.is_empty() && resource.fits(mode, |_| true) {
            let user = self.user_of(session).or_else(|| self.caller.as_ref().map(|c| c.user.clone()));
            let session = if keep { None } else { session };
            let token = self.grant(&name, owner, session, mode, ttl, user);
            return Ok(Reply::Granted { token, lease: ttl });
        }
        if wait == 0 {
            self.drop_if_empty(&name);
            return Ok(Reply::Nil);
        }
        let Some(session) = session else {
            self.drop_if_empty(&name);
            return Err(CoreError::WaitWithoutSession);
        };
        let deadline = self.deadline(wait)?;
        if let Some(cycle) = self.find_deadlock(&owner, &name, mode) {
            return Err(CoreError::Deadlock { cycle });
        }
        let wait_id = self.next_id();
        let waiter = Waiter { wait_id, owner: owner.clone(), session, mode, ttl, keep, deadline };
        self.resources.get_mut(&name).expect("resource exists").waiters.push_back(waiter);
        self.waits.insert(wait_id, WaitTarget::Lock(name));
        self.owner_waits.entry(owner).or_default().insert(wait_id);
        self.session_mut(session).waits.insert(wait_id);
        self.timers.add(deadline, Timer::WaitDeadline { wait_id });
        Ok(Reply::Waiting { wait_id })
    }

    /// Creates a hold with the next fencing token.
    fn grant(
        &mut self,
        name: &str,
        owner: String,
        session: Option<SessionId>,
        mode: Mode,
        ttl: Millis,
        user: Option<String>,
    ) -> u64 {
        let token = self.next_token();
        if let Some(user) = user {
            self.token_users.insert(token, user);
        }
        let expires_at = self.clock + ttl;
        match self.owner_holds.get_mut(&owner) {
            Some(count) => *count += 1,
            None => {
                self.owner_holds.insert(owner.clone(), 1);
            }
        }
        let resource = self.resources.get_mut(name).expect("resource exists");
        resource.owners.insert(owner.clone(), token);
        resource.holds.insert(token, Hold { owner, session, mode, ttl, expires_at });
        self.holds.insert(token, name.to_owned());
        if let Some(session) = session {
            self.session_mut(session).holds.insert(token);
        }
        self.timers.add(expires_at, Timer::HoldLease { token });
        token
    }

    pub(crate) fn release(&mut self, name: &str, token: u64, fx: &mut Vec<Effect>) -> Reply {
        if self.holds.get(&token).map(String::as_str) != Some(name) {
            return Reply::Int(0);
        }
        self.remove_hold(token);
        self.wake(name, fx);
        Reply::Int(1)
    }

    pub(crate) fn renew(&mut self, name: &str, token: u64, ttl: Millis) -> Result<Reply, CoreError> {
        let expires_at = self.deadline(ttl)?;
        if self.holds.get(&token).map(String::as_str) != Some(name) {
            return Err(CoreError::LostHold { token });
        }
        self.set_hold_expiry(name, token, ttl, expires_at);
        Ok(Reply::Int(ttl as i64))
    }

    fn set_hold_expiry(&mut self, name: &str, token: u64, ttl: Millis, expires_at: Timestamp) {
        let hold = self.resources.get_mut(name).and_then(|r| r.holds.get_mut(&token)).expect("live hold");
        let old = std::mem::replace(&mut hold.expires_at, expires_at);
        hold.ttl = ttl;
        self.timers.reschedule(old, expires_at, Timer::HoldLease { token });
    }

    pub(crate) fn expire_hold(&mut self, token: u64, fx: &mut Vec<Effect>) {
        let name = self.holds[&token].clone();
        let hold = self.remove_hold(token);
        fx.push(Effect::HoldExpired { name: name.clone(), token, owner: hold.owner });
        self.wake(&name, fx);
    }

    /// Keeps a hold but frees it from its session (the session is ending without its holds).
    pub(crate) fn detach_hold(&mut self, token: u64) {
        let name = &self.holds[&token];
        let hold = self.resources.get_mut(name).and_then(|r| r.holds.get_mut(&token)).expect("live hold");
        if let Some(session) = hold.session.take() {
            self.session_mut(session).holds.remove(&token);
        }
    }

    /// Removes a hold from every index, its lease timer included.
    fn remove_hold(&mut self, token: u64) -> Hold {
        let name = self.holds.remove(&token).expect("live hold");
        self.token_users.remove(&token);
        let resource = self.resources.get_mut(&name).expect("resource of a live hold");
        let hold = resource.holds.remove(&token).expect("hold indexed");
        resource.owners.remove(&hold.owner);
        if let Some(count) = self.owner_holds.get_mut(&hold.owner) {
            *count -= 1;
            if *count == 0 {
                self.owner_holds.remove(&hold.owner);
            }
        }
        if let Some(session) = hold.session {
            self.session_mut(session).holds.remove(&token);
        }
        self.timers.remove(hold.expires_at, Timer::HoldLease { token });
        hold
    }

    /// Grants to waiters from the front of the line while they fit; drops the resource when idle.
    pub(crate) fn wake(&mut self, name: &str, fx: &mut Vec<Effect>) {
        loop {
            let Some(resource) = self.resources.get_mut(name) else { return };
            let Some(front) = resource.waiters.front() else { break };
            // An owner that already holds this resource (it also waited from a second
            // connection) is simply confirmed, like a re-acquire.
            let existing = resource.owners.get(&front.owner).copied();
            if existing.is_none() && !resource.fits(front.mode, |_| true) {
                break;
            }
            let waiter = resource.waiters.pop_front().expect("front exists");
            self.forget_wait(waiter.wait_id, &waiter.owner, waiter.session);
            self.timers.remove(waiter.deadline, Timer::WaitDeadline { wait_id: waiter.wait_id });
            let token = match existing {
                Some(token) => {
                    self.set_hold_expiry(name, token, waiter.ttl, self.clock + waiter.ttl);
                    token
                }
                None => {
                    let user = self.user_of(Some(waiter.session));
                    let session = if waiter.keep { None } else { Some(waiter.session) };
                    self.grant(name, waiter.owner, session, waiter.mode, waiter.ttl, user)
                }
            };
            fx.push(Effect::Granted {
                session: waiter.session,
                wait_id: waiter.wait_id,
                name: name.to_owned(),
                token,
                lease: waiter.ttl,
            });
        }
        self.drop_if_empty(name);
    }

    fn drop_if_empty(&mut self, name: &str) {
        if self.resources.get(name).is_some_and(Resource::is_empty) {
            self.resources.remove(name);
        }
    }

    /// Removes a lock waiter's entries from the wait indexes (not from its line, not its timer).
    fn forget_wait(&mut self, wait_id: u64, owner: &str, session: SessionId) {
        self.waits.remove(&wait_id);
        if let Some(waits) = self.owner_waits.get_mut(owner) {
            waits.remove(&wait_id);
            if waits.is_empty() {
                self.owner_waits.remove(owner);
            }
        }
        self.session_mut(session).waits.remove(&wait_id);
    }

    /// Takes a waiter out of its line (deadline passed or session closed), with its timer.
    /// The caller then wakes the line: a writer leaving may unblock the readers after it.
    pub(crate) fn remove_lock_waiter(&mut self, name: &str, wait_id: u64) -> Waiter {
        let resource = self.resources.get_mut(name).expect("resource of a waiter");
        let at = resource.waiters.iter().position(|w| w.wait_id == wait_id).expect("waiter in line");
        let waiter = resource.waiters.remove(at).expect("position is valid");
        self.forget_wait(wait_id, &waiter.owner, waiter.session);
        self.timers.remove(waiter.deadline, Timer::WaitDeadline { wait_id });
        waiter
    }

    /// Whether `token` is a live hold of `lock` at `now`.
    pub(crate) fn fence_holds(&self, lock: &str, token: u64, now: Timestamp) -> bool {
        self.resources.get(lock).and_then(|r| r.holds.get(&token)).is_some_and(|h| h.expires_at > now)
    }

    /// Refuses a fenced write whose token is not a live hold.
    pub(crate) fn check_fence(&self, fence: Option<&crate::Fence>) -> Result<(), CoreError> {
        match fence {
            Some(f) if !self.fence_holds(&f.lock, f.token, self.clock) => {
                Err(CoreError::Fenced { lock: f.lock.clone(), token: f.token })
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn lock_info(&self, name: &str, now: Timestamp) -> Reply {
        let Some(resource) = self.resources.get(name) else {
            return Reply::LockInfo(LockInfo {
                mode: "free".into(),
                limit: 1,
                holders: vec![],
                waiters: vec![],
            });
        };
        let live: Vec<_> = resource.holds.iter().filter(|(_, h)| h.expires_at > now).collect();
        let mode = match (resource.limit, live.first()) {
            (Some(_), _) => "semaphore",
            (None, Some((_, h))) if h.mode == Mode::Shared => "shared",
            (None, Some(_)) => "exclusive",
            (None, None) => "free",
        };
        let holders = live
            .iter()
            .map(|(token, h)| HolderView {
                owner: h.owner.clone(),
                token: **token,
                permits: h.mode.permits(),
                expires_in: h.expires_at - now,
            })
            .collect();
        let waiters = resource
            .waiters
            .iter()
            .map(|w| WaiterView {
                owner: w.owner.clone(),
                wait_id: w.wait_id,
                mode: w.mode.name().to_owned(),
                permits: w.mode.permits(),
                deadline_in: w.deadline.saturating_sub(now),
            })
            .collect();
        Reply::LockInfo(LockInfo {
            mode: mode.to_owned(),
            limit: resource.limit.unwrap_or(1),
            holders,
            waiters,
        })
    }

    /// Moves every hold's expiry to at least `now + its TTL` (after a leader change or restart).
    pub(crate) fn refresh_hold_leases(&mut self) {
        let tokens: Vec<(String, u64)> = self.holds.iter().map(|(t, n)| (n.clone(), *t)).collect();
        for (name, token) in tokens {
            let hold = &self.resources[&name].holds[&token];
            let (ttl, expires_at) = (hold.ttl, hold.expires_at.max(self.clock + hold.ttl));
            self.set_hold_expiry(&name, token, ttl, expires_at);
        }
    }

    /// Rebuilds what a snapshot leaves out about locks (see `snapshot.rs`): owners, holds by
    /// token, waits, owners' waits, each session's holds and waits, and their timers.
    pub(crate) fn rebuild_lock_indexes(&mut self, timers: &mut TimerList) -> Result<(), String> {
        for (name, resource) in &mut self.resources {
            for (&token, hold) in &resource.holds {
                resource.owners.insert(hold.owner.clone(), token);
                *self.owner_holds.entry(hold.owner.clone()).or_default() += 1;
                self.holds.insert(token, name.clone());
                if let Some(session) = hold.session {
                    Session::restored(&mut self.sessions, session)?.holds.insert(token);
                }
                timers.push((hold.expires_at, Timer::HoldLease { token }));
            }
            for w in &resource.waiters {
                self.waits.insert(w.wait_id, WaitTarget::Lock(name.clone()));
                self.owner_waits.entry(w.owner.clone()).or_default().insert(w.wait_id);
                Session::restored(&mut self.sessions, w.session)?.waits.insert(w.wait_id);
                timers.push((w.deadline, Timer::WaitDeadline { wait_id: w.wait_id }));
            }
        }
        Ok(())
    }

    pub(crate) fn check_locks(&self) -> Result<(), String> {
        let mut holds = 0;
        let mut lock_waits = 0;
        for (name, r) in &self.resources {
            ensure!(!r.is_empty(), "resource {name} is empty but kept");
            ensure!(r.owners.len() == r.holds.len(), "{name}: owner index out of step");
            for (token, h) in &r.holds {
                ensure!(self.holds.get(token) == Some(name), "{name}: token {token} not indexed");
                ensure!(r.owners.get(&h.owner) == Some(token), "{name}: owner of {token} not indexed");
                ensure!(*token <= self.last_token, "{name}: token {token} from the future");
                ensure!(
                    self.timers.contains(h.expires_at, &Timer::HoldLease { token: *token }),
                    "{name}: hold {token} has no lease timer"
                );
                if let Some(s) = h.session {
                    ensure!(
                        self.sessions.get(&s).is_some_and(|s| s.holds.contains(token)),
                        "{name}: session index"
                    );
                }
            }
            holds += r.holds.len();
            let exclusive = r.holds.values().filter(|h| h.mode == Mode::Exclusive).count();
            let shared = r.holds.values().filter(|h| h.mode == Mode::Shared).count();
            ensure!(exclusive <= 1, "{name}: {exclusive} exclusive holders");
            ensure!(exclusive == 0 || shared == 0, "{name}: exclusive and shared holders at once");
            if let Some(limit) = r.limit {
                let used: u64 = r.holds.values().map(|h| u64::from(h.mode.permits())).sum();
                ensure!(used <= u64::from(limit), "{name}: {used} permits of {limit} in use");
            }
            // The line only waits when its front cannot be served.
            if let Some(front) = r.waiters.front() {
                ensure!(
                    !r.fits(front.mode, |_| true) && !r.owners.contains_key(&front.owner),
                    "{name}: front waiter could be granted"
                );
            }
            for w in &r.waiters {
                ensure!(
                    self.waits.get(&w.wait_id) == Some(&WaitTarget::Lock(name.clone())),
                    "{name}: waiter {} not indexed",
                    w.wait_id
                );
                ensure!(
                    self.owner_waits.get(&w.owner).is_some_and(|ws| ws.contains(&w.wait_id)),
                    "{name}: owner wait index"
                );
            }
            lock_waits += r.waiters.len();
        }
        ensure!(holds == self.holds.len(), "{} holds indexed, {holds} exist", self.holds.len());
        let mut owner_holds: BTreeMap<&str, u32> = BTreeMap::new();
        for hold in self.resources.values().flat_map(|r| r.holds.values()) {
            *owner_holds.entry(&hold.owner).or_default() += 1;
        }
        ensure!(
            owner_holds.len() == self.owner_holds.len()
                && owner_holds.iter().all(|(owner, n)| self.owner_holds.get(*owner) == Some(n)),
            "holds per owner indexed out of step"
        );
        let indexed: usize = self.owner_waits.values().map(|w| w.len()).sum();
        ensure!(indexed == lock_waits, "{indexed} owner waits indexed, {lock_waits} waiters");
        Ok(())
    }
}

/// A semaphore has at least one permit, and an acquire takes at least one and at most all.
/// Each mistake gets its own text: the limit is checked first, as it is the semaphore's.
fn check_permits(limit: u32, count: u32) -> Result<(), CoreError> {
    let refuse = |text: String| Err(CoreError::InvalidArgument(text));
    if limit == 0 {
        return refuse("a semaphore's limit must be at least 1 permit, not 0".to_owned());
    }
    if count == 0 {
        return refuse("an acquire must take at least 1 permit, not 0".to_owned());
    }
    if count > limit {
        return refuse(format!("cannot take {count} permits of a semaphore whose limit is {limit}"));
    }
    Ok(())
}

fn check_kind(name: &str, resource: &Resource, mode: Mode) -> Result<(), CoreError> {
    match (resource.limit, mode) {
        (None, Mode::Exclusive | Mode::Shared) => Ok(()),
        (Some(limit), Mode::Permits { limit: asked, .. }) if limit == asked => Ok(()),
        (Some(limit), Mode::Permits { limit: asked, .. }) => {
            Err(CoreError::LimitMismatch { name: name.to_owned(), limit, asked })
        }
        (_, mode) => Err(CoreError::WrongType {
            name: name.to_owned(),
            expected: if matches!(mode, Mode::Permits { .. }) { "semaphore" } else { "lock" }.to_owned(),
            found: resource.kind().to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Acquire, Command, Reply, State};

    fn sem(limit: u32, count: u32) -> Reply {
        let acquire = Acquire {
            name: "s".into(),
            mode: Mode::Permits { limit, count },
            ttl: 1_000,
            wait: 0,
            owner: Some("a".into()),
            session: None,
            keep: true,
        };
        State::new().apply(1, 0, Command::Acquire(acquire)).0
    }

    fn error_text(reply: Reply) -> String {
        match reply {
            Reply::Error(e) => e.to_string(),
            other => panic!("{other:?} is not an error"),
        }
    }

    #[test]
    fn each_wrong_permit_count_says_what_is_wrong() {
        assert_eq!(error_text(sem(0, 1)), "a semaphore's limit must be at least 1 permit, not 0");
        assert_eq!(error_text(sem(0, 0)), "a semaphore's limit must be at least 1 permit, not 0");
        assert_eq!(error_text(sem(3, 0)), "an acquire must take at least 1 permit, not 0");
        assert_eq!(error_text(sem(3, 5)), "cannot take 5 permits of a semaphore whose limit is 3");
        assert!(matches!(sem(3, 3), Reply::Granted { .. }));
    }

    /// `max-holds-per-session` and `max-waits-per-session`, carried in the command.
    #[test]
    fn a_session_at_its_limits_is_refused_more_holds_and_waits() {
        let mut state = State::new();
        let mut index = 0;
        let mut apply = |state: &mut State, cmd: Command| {
            index += 1;
            state.apply(index, 0, cmd).0
        };
        let open = Command::OpenSession { host: crate::HostId(1), secret: 7, timeout: 10_000 };
        let (Reply::Session(a), Reply::Session(b)) =
            (apply(&mut state, open.clone()), apply(&mut state, open))
        else {
            panic!("sessions open")
        };
        let limits = crate::SessionLimits { max_holds: 2, max_waits: 1 };
        let acquire = |name: &str, session, wait| {
            let acquire = Acquire {
                name: name.into(),
                mode: Mode::Exclusive,
                ttl: 60_000,
                wait,
                owner: None,
                session: Some(session),
                keep: false,
            };
            limits.wrap(Command::Acquire(acquire))
        };
        let Reply::Granted { token: x, .. } = apply(&mut state, acquire("x", a, 0)) else { panic!("x") };
        assert!(matches!(apply(&mut state, acquire("y", a, 0)), Reply::Granted { .. }));
        assert_eq!(
            error_text(apply(&mut state, acquire("z", a, 0))),
            "max-holds-per-session reached (2): end one of this session's before starting another"
        );
        // Acquiring a lock it holds takes no new hold.
        assert!(matches!(apply(&mut state, acquire("x", a, 0)), Reply::Granted { .. }));
        assert!(matches!(apply(&mut state, Command::Release { name: "x".into(), token: x }), Reply::Int(1)));
        assert!(matches!(apply(&mut state, acquire("z", a, 0)), Reply::Granted { .. }));

        // One wait at most: a second acquire that may wait is refused, one that may not is not.
        assert!(matches!(apply(&mut state, acquire("y", b, 5_000)), Reply::Waiting { .. }));
        assert_eq!(
            error_text(apply(&mut state, acquire("z", b, 5_000))),
            "max-waits-per-session reached (1): end one of this session's before starting another"
        );
        assert!(matches!(apply(&mut state, acquire("w", b, 0)), Reply::Granted { .. }));
        // A waiting acquire counts as a hold to come: b has one hold and one waiting.
        assert_eq!(
            error_text(apply(&mut state, acquire("v", b, 0))),
            "max-holds-per-session reached (2): end one of this session's before starting another"
        );
        // Without the wrapper there is no limit.
        let Command::Limited { command, .. } = acquire("v", b, 0) else { panic!("wrapped") };
        assert!(matches!(apply(&mut state, *command), Reply::Granted { .. }));
        // No limits set: nothing is wrapped.
        let open = crate::SessionLimits::default().wrap(Command::Tick);
        assert_eq!(open, Command::Tick);
    }
}
