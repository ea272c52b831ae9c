//! A small harness that reads like a story: a state, a clock the test moves by hand, and the log
//! index advancing with every command. Every step checks the state's invariants.

#![allow(dead_code)] // each test binary uses a different part of the harness

use turnstile_core::{
    Acquire, Command, Consume, Effect, HostId, MAX_DURATION, Millis, Mode, Pop, Push, Query, Reply,
    SessionId, State, Timestamp,
};

/// The host every session of a [`World`] is opened on. Its timeout is the longest there is, so
/// that it outlives any test that does not mean to expire it (`sessions.rs` does).
pub const HOST: HostId = HostId(1);

/// The secret every session of a [`World`] is opened with.
pub const SECRET: u64 = 0x5ec2e7;

/// Opens a session held by [`HOST`].
pub fn open_session() -> Command {
    Command::OpenSession { host: HOST, secret: SECRET, timeout: MAX_DURATION }
}

pub struct World {
    pub state: State,
    pub now: Timestamp,
    index: u64,
    /// Every command applied, to replay.
    pub log: Vec<(u64, Timestamp, Command)>,
}

impl World {
    pub fn new() -> World {
        World { state: State::new(), now: 1_000, index: 0, log: Vec::new() }
    }

    /// Applies a command at the current time; panics if an invariant breaks.
    pub fn apply(&mut self, cmd: Command) -> (Reply, Vec<Effect>) {
        self.index += 1;
        self.log.push((self.index, self.now, cmd.clone()));
        let out = self.state.apply(self.index, self.now, cmd);
        if let Err(e) = self.state.check_invariants() {
            panic!("invariant broken after step {}: {e}\nstate: {:#?}", self.index, self.state);
        }
        out
    }

    /// Applies a command that must produce no effects, and returns its reply.
    pub fn reply(&mut self, cmd: Command) -> Reply {
        let (reply, fx) = self.apply(cmd);
        assert_eq!(fx, vec![], "unexpected effects for reply {reply:?}");
        reply
    }

    pub fn query(&self, q: Query) -> Reply {
        self.state.query(self.now, q)
    }

    /// Moves the clock to `now` and ticks; returns the effects.
    pub fn tick_at(&mut self, now: Timestamp) -> Vec<Effect> {
        self.now = now;
        let (reply, fx) = self.apply(Command::Tick);
        assert_eq!(reply, Reply::Ok);
        fx
    }

    /// The next deadline of anything but [`HOST`] (which expires only in tests that ask it to).
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.state.next_deadline().filter(|&at| at < MAX_DURATION)
    }

    pub fn advance(&mut self, by: Millis) -> Vec<Effect> {
        self.tick_at(self.now + by)
    }

    pub fn session(&mut self) -> SessionId {
        match self.reply(open_session()) {
            Reply::Session(s) => s,
            other => panic!("open session replied {other:?}"),
        }
    }

    pub fn close(&mut self, session: SessionId) -> Vec<Effect> {
        let (reply, fx) = self.apply(Command::CloseSession { session, binding: None });
        assert_eq!(reply, Reply::Int(1));
        fx
    }

    /// Replays the log into a fresh state: it must end identical.
    pub fn replay(&self) -> State {
        replay(&self.log)
    }
}

/// A log of `(index, time, command)` applied to a fresh state.
pub fn replay(log: &[(u64, Timestamp, Command)]) -> State {
    let mut fresh = State::new();
    for (index, now, cmd) in log {
        fresh.apply(*index, *now, cmd.clone());
    }
    fresh
}

/// One step of a random-history test: applies `cmd`, then checks the invariants and that a snapshot
/// restores to an equal state (a snapshot holds no indexes: the restored state rebuilds them).
pub fn apply_checked(state: &mut State, index: u64, now: Timestamp, cmd: &Command) -> (Reply, Vec<Effect>) {
    let (reply, fx) = state.apply(index, now, cmd.clone());
    if let Err(e) = state.check_invariants() {
        panic!("invariant broken after {cmd:?} -> {reply:?}: {e}");
    }
    let snapshot = state.snapshot();
    assert!(state.snapshot_copy().snapshot() == snapshot, "snapshot_copy writes other bytes after {cmd:?}");
    let restored = State::restore(snapshot.into()).expect("snapshot reads back");
    assert_eq!(restored, *state, "restore(snapshot) differs after {cmd:?}");
    (reply, fx)
}

/// An acquire with no wait, no KEEP, owned by the session.
pub fn acquire(session: SessionId, name: &str, mode: Mode, ttl: Millis) -> Acquire {
    Acquire { name: name.into(), mode, ttl, wait: 0, owner: None, session: Some(session), keep: false }
}

pub fn lock(session: SessionId, name: &str, ttl: Millis) -> Command {
    Command::Acquire(acquire(session, name, Mode::Exclusive, ttl))
}

pub fn lock_wait(session: SessionId, name: &str, ttl: Millis, wait: Millis) -> Command {
    Command::Acquire(Acquire { wait, ..acquire(session, name, Mode::Exclusive, ttl) })
}

pub fn push(queue: &str, payload: &str) -> Command {
    Command::Push(Push::new(queue, payload.to_owned()))
}

pub fn pop(session: SessionId, queue: &str, count: u32) -> Command {
    Command::Pop(Pop {
        queue: queue.into(),
        session: Some(session),
        count,
        wait: 0,
        lease: None,
        auto_ack: false,
        keep: false,
    })
}

/// The fencing token of a `Granted` reply.
pub fn token(reply: &Reply) -> u64 {
    match reply {
        Reply::Granted { token, .. } => *token,
        other => panic!("expected a grant, got {other:?}"),
    }
}

/// The deliveries of a reply, as (id, receipt, payload, deliveries).
pub fn deliveries(reply: &Reply) -> Vec<(u64, u64, String, u32)> {
    match reply {
        Reply::Deliveries(ds) => ds
            .iter()
            .map(|d| (d.id, d.receipt, String::from_utf8_lossy(&d.payload).into_owned(), d.deliveries))
            .collect(),
        Reply::Nil => vec![],
        other => panic!("expected deliveries, got {other:?}"),
    }
}

pub fn pushed_id(reply: &Reply) -> u64 {
    match reply {
        Reply::Pushed { id, .. } => *id,
        other => panic!("expected a pushed id, got {other:?}"),
    }
}

impl World {
    /// The state as it would be if the next command changed nothing: the live state after a
    /// `Tick` at the same time and index. A refused command must leave exactly this behind.
    pub fn unchanged(&self) -> State {
        let mut expected = self.state.clone();
        expected.apply(self.index + 1, self.now, Command::Tick);
        expected
    }
}

/// A consumer with `credit`, manual acks and the queue's lease: what a test varies from.
pub fn consumer(session: SessionId, queue: &str, credit: u32) -> Consume {
    Consume {
        queue: queue.into(),
        session,
        credit,
        lease: None,
        auto_ack: false,
        exclusive: false,
        pool: None,
    }
}
