//! The history of a run, recorded the way Jepsen records one: every operation a client starts is
//! an `Invoke` event, and its end is one `Ok` (it happened, with this result), `Fail` (it certainly
//! did not happen) or `Info` (nobody knows: a timeout, a broken connection, "outcome unknown")
//! event of the same process. A process runs one operation at a time, so an invocation and the
//! next completion of its process are a pair. Times are nanoseconds since the run began on one
//! monotonic clock (all clients run in one process), so "A completed before B was invoked" is a
//! real-time order the checkers may rely on.
//!
//! A history is written one JSON event per line (`History::write_jsonl`), so a failing run can
//! be kept and checked again later (`History::read_jsonl`).

use std::fmt;
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Who ran an operation: one client, doing one thing at a time. The nemesis is a process too.
pub type Process = u64;

/// The nemesis's process number: its faults are recorded as `Info` events, for the reader.
pub const NEMESIS: Process = u64::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// What a client asked for. The same value is recorded in the invocation and its completion.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// `LOCK.ACQUIRE lock lease` (`limit: None`), or `SEM.ACQUIRE lock limit lease` (one permit).
    /// Ok: [`Value::Token`]; Fail: not granted (the wait ran out).
    Acquire { lock: String, lease_ms: u64, limit: Option<u32> },
    /// `LOCK.RENEW` / `SEM.RENEW`. Ok: the hold was live and now runs `lease_ms` from the send;
    /// Fail: `-LOST`.
    Renew { lock: String, token: u64, lease_ms: u64 },
    /// `LOCK.RELEASE` / `SEM.RELEASE`. Ok whatever the reply (the client stops using the hold when
    /// it sends this).
    Release { lock: String, token: u64 },
    /// `SET key value FENCE lock token`. Ok: applied; Fail: `-FENCED`.
    FencedSet { key: String, value: String, lock: String, token: u64 },
    /// `GET key`. Ok: [`Value::Read`].
    Get { key: String },
    /// `SET key value`. Ok: applied.
    Set { key: String, value: String },
    /// `SET key value NX`. Ok: [`Value::Bool`], whether it was set.
    SetNx { key: String, value: String },
    /// A push of the message `id` (unique in the run; the payload names it). Ok: acknowledged
    /// (the push's reply, or a publisher confirm).
    Push { queue: String, id: String, group: Option<String> },
    /// A pop or a delivery to a consumer. Ok: [`Value::Delivered`] (possibly empty).
    Pop { queue: String },
    /// An ack of the delivery `receipt` of message `id`. Ok: acknowledged by the server.
    Ack { queue: String, id: String, receipt: String },
    /// A nack (back to the queue, or on to the dead letters past its limit).
    Nack { queue: String, id: String, receipt: String },
    /// A fault the nemesis began or ended (`Info` events only).
    Nemesis { fault: String },
}

/// One message handed to a client.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Delivery {
    /// The message's id in the run (from its payload), not the server's id.
    pub id: String,
    pub receipt: String,
    /// The queue it came from (a dead-letter queue's deliveries name that queue).
    pub queue: String,
}

/// What an operation returned, on its completion event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    None,
    Token(u64),
    Bool(bool),
    Read(Option<String>),
    Delivered(Vec<Delivery>),
    /// Why it failed, or why its outcome is unknown.
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub process: Process,
    pub kind: Kind,
    /// Nanoseconds since the run began.
    pub time: u64,
    pub op: Op,
    pub value: Value,
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Fail,
    /// Unknown: it may have happened at any time after its invocation, or never. An operation
    /// still running when the history ends is unknown too.
    Info,
}

/// An invocation with its completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call<'a> {
    pub process: Process,
    pub op: &'a Op,
    pub outcome: Outcome,
    /// The completion's value (`Value::None` while unknown).
    pub value: &'a Value,
    pub invoked: u64,
    /// When it completed; `None` for an unknown outcome (it may take effect any time later).
    pub completed: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub events: Vec<Event>,
}

const NO_VALUE: Value = Value::None;

impl History {
    /// Every invocation paired with its process's next completion, in invocation order. An
    /// invocation never completed is unknown. Nemesis events are left out.
    pub fn calls(&self) -> Vec<Call<'_>> {
        let mut calls: Vec<Call<'_>> = Vec::new();
        // The open invocation of each process: its index in `calls`.
        let mut open: std::collections::HashMap<Process, usize> = std::collections::HashMap::new();
        for event in &self.events {
            if event.process == NEMESIS {
                continue;
            }
            match event.kind {
                Kind::Invoke => {
                    open.insert(event.process, calls.len());
                    calls.push(Call {
                        process: event.process,
                        op: &event.op,
                        outcome: Outcome::Info,
                        value: &NO_VALUE,
                        invoked: event.time,
                        completed: None,
                    });
                }
                Kind::Ok | Kind::Fail | Kind::Info => {
                    let Some(at) = open.remove(&event.process) else { continue };
                    let call = &mut calls[at];
                    call.value = &event.value;
                    match event.kind {
                        Kind::Ok => {
                            call.outcome = Outcome::Ok;
                            call.completed = Some(event.time);
                        }
                        Kind::Fail => {
                            call.outcome = Outcome::Fail;
                            call.completed = Some(event.time);
                        }
                        _ => {}
                    }
                }
            }
        }
        calls
    }

    pub fn write_jsonl(&self, out: &mut impl Write) -> std::io::Result<()> {
        for event in &self.events {
            serde_json::to_writer(&mut *out, event)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    pub fn read_jsonl(input: impl BufRead) -> std::io::Result<History> {
        let mut events = Vec::new();
        for (n, line) in input.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let event = serde_json::from_str(&line).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("line {}: {e}", n + 1))
            })?;
            events.push(event);
        }
        Ok(History { events })
    }
}

/// Records a history from many clients at once: cheap to clone, one lock per event.
#[derive(Debug, Clone)]
pub struct Recorder {
    start: Instant,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder { start: Instant::now(), events: Arc::default() }
    }

    /// Records an invocation; complete it with [`Pending::ok`], [`Pending::fail`] or
    /// [`Pending::info`]. Dropped without either, it stays unknown.
    pub fn invoke(&self, process: Process, op: Op) -> Pending {
        self.push(process, Kind::Invoke, op.clone(), Value::None);
        Pending { recorder: self.clone(), process, op }
    }

    /// A nemesis fault, begun or ended.
    pub fn nemesis(&self, fault: impl Into<String>) {
        self.push(NEMESIS, Kind::Info, Op::Nemesis { fault: fault.into() }, Value::None);
    }

    /// Nanoseconds since the run began.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn push(&self, process: Process, kind: Kind, op: Op, value: Value) {
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        // Taken under the lock, so the events are in time order.
        let time = self.now();
        events.push(Event { process, kind, time, op, value });
    }

    /// What has been recorded so far.
    pub fn history(&self) -> History {
        History { events: self.events.lock().unwrap_or_else(PoisonError::into_inner).clone() }
    }
}

/// An operation under way.
#[derive(Debug)]
#[must_use = "an operation is completed with ok, fail or info"]
pub struct Pending {
    recorder: Recorder,
    process: Process,
    op: Op,
}

impl Pending {
    pub fn ok(self, value: Value) {
        self.recorder.push(self.process, Kind::Ok, self.op, value);
    }

    pub fn fail(self, why: impl Into<String>) {
        self.recorder.push(self.process, Kind::Fail, self.op, Value::Error(why.into()));
    }

    pub fn info(self, why: impl Into<String>) {
        self.recorder.push(self.process, Kind::Info, self.op, Value::Error(why.into()));
    }
}

/// Nanoseconds since the run began, as milliseconds a reader can compare by eye.
pub fn ms(ns: u64) -> String {
    format!("{}.{:03} ms", ns / 1_000_000, ns % 1_000_000 / 1_000)
}

impl fmt::Display for Op {
    /// The command as a client would type it, near enough to find it in a server log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Acquire { lock, lease_ms, limit: None } => write!(f, "LOCK.ACQUIRE {lock} {lease_ms}"),
            Op::Acquire { lock, lease_ms, limit: Some(limit) } => {
                write!(f, "SEM.ACQUIRE {lock} {limit} {lease_ms}")
            }
            Op::Renew { lock, token, lease_ms } => write!(f, "RENEW {lock} {token} {lease_ms}"),
            Op::Release { lock, token } => write!(f, "RELEASE {lock} {token}"),
            Op::FencedSet { key, value, lock, token } => {
                write!(f, "SET {key} {value:?} FENCE {lock} {token}")
            }
            Op::Get { key } => write!(f, "GET {key}"),
            Op::Set { key, value } => write!(f, "SET {key} {value:?}"),
            Op::SetNx { key, value } => write!(f, "SET {key} {value:?} NX"),
            Op::Push { queue, id, group: None } => write!(f, "PUSH {queue} {id}"),
            Op::Push { queue, id, group: Some(group) } => write!(f, "PUSH {queue} {id} GROUP {group}"),
            Op::Pop { queue } => write!(f, "POP {queue}"),
            Op::Ack { queue, id, receipt } => write!(f, "ACK {queue} {id} ({receipt})"),
            Op::Nack { queue, id, receipt } => write!(f, "NACK {queue} {id} ({receipt})"),
            Op::Nemesis { fault } => write!(f, "nemesis {fault}"),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::None => write!(f, "-"),
            Value::Token(token) => write!(f, "token {token}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Read(None) => write!(f, "nil"),
            Value::Read(Some(value)) => write!(f, "{value:?}"),
            Value::Delivered(deliveries) => {
                let ids: Vec<&str> = deliveries.iter().map(|d| d.id.as_str()).collect();
                write!(f, "[{}]", ids.join(", "))
            }
            Value::Error(why) => write!(f, "error {why:?}"),
        }
    }
}

impl fmt::Display for Call<'_> {
    /// One line a violation can quote: who, what, how it ended, and when.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "process {} {}", self.process, self.op)?;
        match self.outcome {
            Outcome::Ok => write!(f, " -> {}", self.value)?,
            Outcome::Fail => write!(f, " -> failed")?,
            Outcome::Info => write!(f, " -> unknown")?,
        }
        match self.completed {
            Some(completed) => write!(f, " [{} .. {}]", ms(self.invoked), ms(completed)),
            None => write!(f, " [{} .. ?]", ms(self.invoked)),
        }
    }
}
