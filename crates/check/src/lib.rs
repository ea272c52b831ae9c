//! Verification of Turnstile's promises against what clients saw: a [`history`] of operations
//! with their real-time bounds, and checkers that judge it — locks and semaphores (no two valid
//! holds overlap, tokens only go up, no stale fenced write accepted), queues (every acknowledged
//! push delivered or still queued, nothing invented, nothing redelivered after its ack, per-group
//! order) and KV (linearizable per key).

pub mod history;
mod kv;
mod linear;
mod locks;
mod queues;
#[cfg(test)]
mod script;

pub use history::{Call, Delivery, Event, History, Kind, Op, Outcome, Pending, Process, Recorder, Value};

/// One checker's judgement of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `locks`, `queues`, `kv`.
    pub checker: &'static str,
    /// The operations it looked at.
    pub checked: usize,
    /// What it found wrong, one line each, naming the operations; empty when valid.
    pub violations: Vec<String>,
    /// What it could not decide within its budget (a KV key whose search ran too long), one line
    /// each. Not a violation: a run with these is valid but was not fully checked.
    pub inconclusive: Vec<String>,
    /// What it counted that the promises allow, for the reader (duplicate deliveries, pushes of
    /// unknown outcome that were delivered).
    pub notes: Vec<String>,
}

impl Verdict {
    pub(crate) fn new(checker: &'static str, checked: usize, violations: Vec<String>) -> Verdict {
        Verdict { checker, checked, violations, inconclusive: Vec::new(), notes: Vec::new() }
    }

    /// No violations. Inconclusive parts do not make a verdict invalid; see `inconclusive`.
    pub fn valid(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Every checker's verdict on `history`.
pub fn check(history: &History) -> Vec<Verdict> {
    let calls = history.calls();
    vec![locks::check(&calls), queues::check(&calls), kv::check(&calls)]
}
