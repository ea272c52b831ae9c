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

/// Every checker's verdict on `history`: locks, queues, kv, in that order.
pub fn check(history: &History) -> Vec<Verdict> {
    let calls = history.calls();
    vec![locks::check(&calls), queues::check(&calls), kv::check(&calls)]
}

/// The verdicts as a run prints them: one line per checker (`locks: valid (120 checked)`, or
/// `INVALID`, with what it could not decide and its notes), then its violations and undecided
/// parts indented below it, the first `SHOWN` of each; the full list stays in the verdicts.
pub fn summary(verdicts: &[Verdict]) -> String {
    const SHOWN: usize = 20;
    let mut out = String::new();
    for verdict in verdicts {
        let judgement = if verdict.valid() { "valid" } else { "INVALID" };
        out += &format!("{}: {judgement} ({} checked", verdict.checker, verdict.checked);
        if !verdict.violations.is_empty() {
            out += &format!(", {} violations", verdict.violations.len());
        }
        if !verdict.inconclusive.is_empty() {
            out += &format!(", {} inconclusive", verdict.inconclusive.len());
        }
        out += ")";
        for note in &verdict.notes {
            out += &format!("; {note}");
        }
        out += "\n";
        for (mark, lines) in [("-", &verdict.violations), ("?", &verdict.inconclusive)] {
            for line in lines.iter().take(SHOWN) {
                out += &format!("  {mark} {line}\n");
            }
            if lines.len() > SHOWN {
                out += &format!("  {mark} and {} more\n", lines.len() - SHOWN);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::*;

    #[test]
    fn the_summary_says_each_verdict_in_a_line_and_lists_what_is_wrong() {
        let history = Script::new()
            .ok(1, 0, 10, acquire("l", 1000), Value::Token(1))
            .ok(2, 5, 20, acquire("l", 1000), Value::Token(2))
            .ok(3, 0, 10, push("q", "m1"), Value::None)
            .ok(3, 11, 20, pop("q"), delivered("q", &["m1"]))
            .ok(4, 0, 10, set("k", "a"), Value::None)
            .ok(4, 11, 20, get("k"), read(Some("a")))
            .history();
        let verdicts = check(&history);
        let summary = summary(&verdicts);
        let lines: Vec<&str> = summary.lines().collect();
        assert_eq!(lines[0], "locks: INVALID (2 checked, 1 violations)");
        assert!(lines[1].starts_with("  - lock l: two valid holds overlap: process 1"), "{summary}");
        assert_eq!(
            lines[2],
            "queues: valid (2 checked); 1 messages; 0 delivered more than once (0 extra deliveries); 0 pushes \
             of unknown outcome delivered, 0 not"
        );
        assert_eq!(lines[3], "kv: valid (2 checked)");
        assert_eq!(lines.len(), 4);
    }
}
