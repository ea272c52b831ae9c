//! Hand-made histories for the checkers' tests: each call is written as one line with its
//! process, its times in milliseconds and its outcome, and `history()` lays the events out in
//! time order the way a recorder would have.

use crate::{Delivery, Event, History, Kind, Op, Process, Value};

#[derive(Debug, Default)]
pub(crate) struct Script {
    events: Vec<Event>,
}

const MS: u64 = 1_000_000;

impl Script {
    pub(crate) fn new() -> Script {
        Script::default()
    }

    fn call(&mut self, process: Process, invoked: u64, end: Option<(u64, Kind)>, op: Op, value: Value) {
        self.events.push(Event {
            process,
            kind: Kind::Invoke,
            time: invoked * MS,
            op: op.clone(),
            value: Value::None,
        });
        if let Some((completed, kind)) = end {
            assert!(completed > invoked, "a call completes after its invocation");
            self.events.push(Event { process, kind, time: completed * MS, op, value });
        }
    }

    /// A call that happened, with its result.
    pub(crate) fn ok(
        &mut self,
        process: Process,
        invoked: u64,
        completed: u64,
        op: Op,
        value: Value,
    ) -> &mut Self {
        self.call(process, invoked, Some((completed, Kind::Ok)), op, value);
        self
    }

    /// A call that certainly did not happen.
    pub(crate) fn fail(&mut self, process: Process, invoked: u64, completed: u64, op: Op) -> &mut Self {
        self.call(process, invoked, Some((completed, Kind::Fail)), op, Value::Error("refused".into()));
        self
    }

    /// A call whose outcome nobody knows (a timeout at `gave_up`).
    pub(crate) fn info(&mut self, process: Process, invoked: u64, gave_up: u64, op: Op) -> &mut Self {
        self.call(process, invoked, Some((gave_up, Kind::Info)), op, Value::Error("timeout".into()));
        self
    }

    /// The events in time order; events at one instant keep the order they were written in.
    pub(crate) fn history(&self) -> History {
        let mut events = self.events.clone();
        events.sort_by_key(|event| event.time);
        History { events }
    }
}

pub(crate) fn acquire(lock: &str, lease_ms: u64) -> Op {
    Op::Acquire { lock: lock.into(), lease_ms, limit: None }
}

pub(crate) fn sem_acquire(lock: &str, limit: u32, lease_ms: u64) -> Op {
    Op::Acquire { lock: lock.into(), lease_ms, limit: Some(limit) }
}

pub(crate) fn renew(lock: &str, token: u64, lease_ms: u64) -> Op {
    Op::Renew { lock: lock.into(), token, lease_ms }
}

pub(crate) fn release(lock: &str, token: u64) -> Op {
    Op::Release { lock: lock.into(), token }
}

pub(crate) fn fenced_set(key: &str, value: &str, lock: &str, token: u64) -> Op {
    Op::FencedSet { key: key.into(), value: value.into(), lock: lock.into(), token }
}

pub(crate) fn get(key: &str) -> Op {
    Op::Get { key: key.into() }
}

pub(crate) fn set(key: &str, value: &str) -> Op {
    Op::Set { key: key.into(), value: value.into() }
}

pub(crate) fn set_nx(key: &str, value: &str) -> Op {
    Op::SetNx { key: key.into(), value: value.into() }
}

pub(crate) fn push(queue: &str, id: &str) -> Op {
    Op::Push { queue: queue.into(), id: id.into(), group: None }
}

pub(crate) fn push_group(queue: &str, id: &str, group: &str) -> Op {
    Op::Push { queue: queue.into(), id: id.into(), group: Some(group.into()) }
}

pub(crate) fn pop(queue: &str) -> Op {
    Op::Pop { queue: queue.into() }
}

pub(crate) fn ack(queue: &str, id: &str) -> Op {
    Op::Ack { queue: queue.into(), id: id.into(), receipt: format!("r-{id}") }
}

/// A pop's result: these messages of `queue`, each with the receipt `r-<id>`.
pub(crate) fn delivered(queue: &str, ids: &[&str]) -> Value {
    Value::Delivered(
        ids.iter()
            .map(|id| Delivery { id: (*id).into(), receipt: format!("r-{id}"), queue: queue.into() })
            .collect(),
    )
}

pub(crate) fn read(value: Option<&str>) -> Value {
    Value::Read(value.map(str::to_string))
}

/// The helpers every checker's tests use, judging with that module's own `check`: `verdict`,
/// `assert_finds` (a violation line containing a text) and `assert_valid` (no violation, nothing
/// left undecided).
macro_rules! judged_by_check {
    () => {
        fn verdict(history: &crate::History) -> crate::Verdict {
            check(&history.calls())
        }

        fn assert_finds(history: &crate::History, what: &str) {
            let verdict = verdict(history);
            assert!(
                verdict.violations.iter().any(|line| line.contains(what)),
                "expected a violation containing {what:?}, got {:?}",
                verdict.violations
            );
        }

        fn assert_valid(history: &crate::History) -> crate::Verdict {
            let verdict = verdict(history);
            assert!(verdict.valid(), "expected no violations, got {:?}", verdict.violations);
            assert!(verdict.inconclusive.is_empty(), "{:?}", verdict.inconclusive);
            verdict
        }
    };
}
pub(crate) use judged_by_check;
