//! KV, judged as one register per key (`Option<String>`, absent at the start): the history of
//! each key must be linearizable ([`crate::linear`]), and since every command touches one key, the
//! whole history is then linearizable too.
//!
//! `GET` reads; `SET` and a fenced `SET` that was applied write; `SET NX` writes only if the key
//! is absent and returns whether it did. Calls that failed never happened and are left out;
//! writes of unknown outcome may have happened at any time after they were sent, or never;
//! reads of unknown outcome tell nothing and are left out.

use std::collections::{BTreeMap, HashMap};

use crate::linear::{self, ABSENT, Done, Effect, Linearizable, Maybe};
use crate::{Call, Op, Outcome, Value, Verdict};

/// Search nodes per key before a key is called undecided. A history that linearizes in order
/// visits about one node per call; this leaves room for a few hundred-fold that in backtracking.
const BUDGET: usize = 1_000_000;

pub fn check(calls: &[Call<'_>]) -> Verdict {
    check_within(calls, BUDGET)
}

/// The calls of one key, as the search sees them.
#[derive(Debug, Default)]
struct Key<'c, 'a> {
    /// The values written, by their index in the search (0 is absent).
    values: Vec<&'a str>,
    index: HashMap<&'a str, linear::Value>,
    done: Vec<Done>,
    done_calls: Vec<&'c Call<'a>>,
    maybe: Vec<Maybe>,
}

impl<'a> Key<'_, 'a> {
    fn value(&mut self, value: &'a str) -> linear::Value {
        *self.index.entry(value).or_insert_with(|| {
            self.values.push(value);
            self.values.len()
        })
    }

    /// Some of the calls, by their index in the search, for a violation's line.
    fn list(&self, calls: &[usize]) -> String {
        const SHOWN: usize = 6;
        let mut list: Vec<String> =
            calls.iter().take(SHOWN).map(|&at| self.done_calls[at].to_string()).collect();
        if calls.len() > SHOWN {
            list.push(format!("and {} more", calls.len() - SHOWN));
        }
        if list.is_empty() { "(none)".to_string() } else { list.join("; ") }
    }

    fn describe(&self, value: linear::Value) -> String {
        match value {
            ABSENT => "absent".to_string(),
            at => format!("{:?}", self.values[at - 1]),
        }
    }
}

pub(crate) fn check_within(calls: &[Call<'_>], budget: usize) -> Verdict {
    let mut checked = 0;
    let mut violations = Vec::new();
    let mut keys: BTreeMap<&str, Key<'_, '_>> = BTreeMap::new();
    for call in calls {
        let (key, written, if_absent) = match call.op {
            Op::Get { key } => (key, None, false),
            Op::Set { key, value } | Op::FencedSet { key, value, .. } => (key, Some(value), false),
            Op::SetNx { key, value } => (key, Some(value), true),
            _ => continue,
        };
        checked += 1;
        let entry = keys.entry(key.as_str()).or_default();
        let Some(completed) = call.completed.filter(|_| call.outcome == Outcome::Ok) else {
            if let (Outcome::Info, Some(value)) = (call.outcome, written) {
                let value = entry.value(value);
                entry.maybe.push(Maybe { value, if_absent, invoked: call.invoked });
            }
            continue;
        };
        let effect = match (written, if_absent, call.value) {
            (None, _, Value::Read(None)) => Effect::Read(ABSENT),
            (None, _, Value::Read(Some(value))) => Effect::Read(entry.value(value)),
            (Some(value), false, _) => Effect::Write(entry.value(value)),
            (Some(value), true, Value::Bool(set)) => Effect::SetNx { value: entry.value(value), set: *set },
            _ => {
                violations.push(format!("key {key}: a call completed without the result it needs: {call}"));
                continue;
            }
        };
        entry.done.push(Done { effect, invoked: call.invoked, completed });
        entry.done_calls.push(call);
    }
    let mut inconclusive = Vec::new();
    for (name, key) in &keys {
        match linear::check(&key.done, &key.maybe, budget) {
            Linearizable::Yes => {}
            Linearizable::No { placed, register, stuck, starved } => {
                let mut line = format!(
                    "key {name}: not linearizable: at best {placed} of {} calls fit in one order (the key then \
                     {}), and none of these could go next: {}",
                    key.done.len(),
                    key.describe(register),
                    key.list(&stuck),
                );
                if !starved.is_empty() {
                    line += &format!("; and these reads would never see their value: {}", key.list(&starved));
                }
                violations.push(line);
            }
            Linearizable::Undecided => inconclusive.push(format!(
                "key {name}: undecided within {budget} search nodes ({} calls completed, {} writes of unknown \
                 outcome)",
                key.done.len(),
                key.maybe.len()
            )),
        }
    }
    let mut verdict = Verdict::new("kv", checked, violations);
    verdict.inconclusive = inconclusive;
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::History;
    use crate::linear::mix;
    use crate::script::*;

    crate::script::judged_by_check!();

    #[test]
    fn a_stale_read_is_found() {
        let history = Script::new()
            .ok(1, 0, 10, set("k", "a"), Value::None)
            .ok(1, 11, 20, set("k", "b"), Value::None)
            .ok(2, 21, 30, get("k"), read(Some("a")))
            .history();
        assert_finds(
            &history,
            "key k: not linearizable: at best 1 of 3 calls fit in one order (the key then \"a\"), and none \
             of these could go next: process 1 SET k \"b\" -> - [11.000 ms .. 20.000 ms]; and these reads \
             would never see their value: process 2 GET k -> \"a\" [21.000 ms .. 30.000 ms]",
        );
        assert_eq!(verdict(&history).checked, 3);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_found() {
        let history = Script::new().ok(2, 0, 10, get("k"), read(Some("z"))).history();
        assert_finds(&history, "key k: not linearizable: at best 0 of 1 calls");
        let absent = Script::new().ok(2, 0, 10, get("k"), read(None)).history();
        assert_valid(&absent);
    }

    #[test]
    fn set_nx_true_twice_is_found() {
        let history = Script::new()
            .ok(1, 0, 10, set_nx("k", "a"), Value::Bool(true))
            .ok(2, 5, 20, set_nx("k", "b"), Value::Bool(true))
            .history();
        assert_finds(&history, "key k: not linearizable");
        let once = Script::new()
            .ok(1, 0, 10, set_nx("k", "a"), Value::Bool(true))
            .ok(2, 5, 20, set_nx("k", "b"), Value::Bool(false))
            .ok(2, 21, 30, get("k"), read(Some("a")))
            .history();
        assert_valid(&once);
    }

    #[test]
    fn overlapping_writes_and_reads_pass_in_either_order() {
        for (first, second) in [("a", "b"), ("b", "a")] {
            let history = Script::new()
                .ok(1, 0, 20, set("k", "a"), Value::None)
                .ok(2, 5, 25, set("k", "b"), Value::None)
                .ok(3, 10, 30, get("k"), read(Some(first)))
                .ok(3, 31, 40, get("k"), read(Some(second)))
                .ok(4, 1, 2, get("k"), read(None))
                .history();
            // `first` then `second` with both writes done: only if `second` was the last write.
            let verdict = verdict(&history);
            assert!(verdict.valid(), "{first} then {second}: {:?}", verdict.violations);
        }
        // But once both writes completed, two reads must agree on which came last.
        let history = Script::new()
            .ok(1, 0, 20, set("k", "a"), Value::None)
            .ok(2, 5, 25, set("k", "b"), Value::None)
            .ok(3, 30, 40, get("k"), read(Some("a")))
            .ok(3, 41, 50, get("k"), read(Some("b")))
            .history();
        assert_finds(&history, "key k: not linearizable");
    }

    #[test]
    fn unknown_writes_may_happen_late_or_never_and_failed_ones_never() {
        let late = Script::new()
            .ok(1, 0, 10, set("k", "a"), Value::None)
            .info(2, 5, 15, set("k", "b"))
            .ok(3, 20, 30, get("k"), read(Some("a")))
            .ok(3, 31, 40, get("k"), read(Some("b")))
            .ok(3, 41, 50, set_nx("k", "c"), Value::Bool(false))
            .history();
        assert_valid(&late);
        let never = Script::new()
            .ok(1, 0, 10, set("k", "a"), Value::None)
            .info(2, 5, 15, set("k", "b"))
            .info(2, 16, 17, get("k"))
            .ok(3, 20, 30, get("k"), read(Some("a")))
            .history();
        assert_valid(&never);
        // Gone, it cannot come back.
        let back = Script::new()
            .info(2, 0, 15, set("k", "b"))
            .ok(3, 20, 30, get("k"), read(Some("b")))
            .ok(1, 31, 40, set("k", "a"), Value::None)
            .ok(3, 41, 50, get("k"), read(Some("b")))
            .history();
        assert_finds(&back, "key k: not linearizable");
        let failed =
            Script::new().fail(2, 0, 15, set("k", "b")).ok(3, 20, 30, get("k"), read(Some("b"))).history();
        assert_finds(&failed, "key k: not linearizable");
        // An unknown SET NX took the key that a later one found taken.
        let taken = Script::new()
            .info(2, 0, 15, set_nx("k", "b"))
            .ok(3, 20, 30, set_nx("k", "c"), Value::Bool(false))
            .ok(3, 31, 40, get("k"), read(Some("b")))
            .history();
        assert_valid(&taken);
    }

    #[test]
    fn fenced_writes_that_applied_are_writes() {
        let history = Script::new()
            .ok(1, 0, 10, fenced_set("k", "a", "l", 1), Value::None)
            .fail(1, 11, 20, fenced_set("k", "b", "l", 1))
            .ok(2, 21, 30, get("k"), read(Some("a")))
            .history();
        assert_valid(&history);
    }

    #[test]
    fn keys_are_judged_apart() {
        let history = Script::new()
            .ok(1, 0, 10, set("x", "a"), Value::None)
            .ok(2, 11, 20, get("y"), read(None))
            .ok(2, 21, 30, get("x"), read(Some("a")))
            .history();
        assert_valid(&history);
    }

    /// A history of `clients` clients on `keys` keys, each call taking effect at a random instant
    /// inside its interval (or, for some of unknown outcome, never), so that it is linearizable
    /// by construction.
    fn random_history(seed: u64, clients: u64, keys: usize, calls: usize) -> History {
        let mut rng = seed;
        let mut below = |n: u64| mix(&mut rng) % n;
        let mut script = Script::new();
        // Per client: when it is free again. Per key: the value, by its effect instants.
        let mut free = vec![0u64; usize::try_from(clients).unwrap()];
        struct Planned {
            process: u64,
            invoked: u64,
            completed: u64,
            effect_at: Option<u64>,
            op: Op,
            unknown: bool,
        }
        let mut planned = Vec::new();
        for n in 0..calls {
            let process = below(clients);
            let invoked = free[usize::try_from(process).unwrap()] + below(3) + 1;
            let completed = invoked + below(15) + 1;
            free[usize::try_from(process).unwrap()] = completed;
            let key = format!("k{}", below(keys as u64));
            let op = match below(10) {
                0..=4 => get(&key),
                5..=7 => set(&key, &format!("v{n}")),
                8 => set_nx(&key, &format!("v{n}")),
                _ => fenced_set(&key, &format!("v{n}"), "l", 1),
            };
            let unknown = !matches!(op, Op::Get { .. }) && below(12) == 0;
            let effect_at = if unknown && below(2) == 0 {
                None
            } else {
                // Effects at half-milliseconds never tie with invocations and completions.
                Some(2 * invoked + 1 + 2 * below(completed - invoked))
            };
            planned.push(Planned { process, invoked, completed, effect_at, op, unknown });
        }
        // Apply in effect order to learn each call's result.
        let mut order: Vec<usize> =
            (0..planned.len()).filter(|&at| planned[at].effect_at.is_some()).collect();
        order.sort_by_key(|&at| planned[at].effect_at);
        let mut store: HashMap<String, String> = HashMap::new();
        let mut results: HashMap<usize, Value> = HashMap::new();
        for at in order {
            let result = match &planned[at].op {
                Op::Get { key } => Value::Read(store.get(key).cloned()),
                Op::Set { key, value } | Op::FencedSet { key, value, .. } => {
                    store.insert(key.clone(), value.clone());
                    Value::None
                }
                Op::SetNx { key, value } => Value::Bool(if store.contains_key(key) {
                    false
                } else {
                    store.insert(key.clone(), value.clone());
                    true
                }),
                _ => unreachable!(),
            };
            results.insert(at, result);
        }
        for (at, call) in planned.into_iter().enumerate() {
            if call.unknown {
                script.info(call.process, call.invoked, call.completed, call.op);
            } else {
                script.ok(call.process, call.invoked, call.completed, call.op, results.remove(&at).unwrap());
            }
        }
        script.history()
    }

    #[test]
    fn random_linearizable_histories_pass() {
        for seed in 0..40 {
            let history = random_history(seed, 6, 2, 200);
            let verdict = verdict(&history);
            assert!(verdict.valid(), "seed {seed}: {:?}", verdict.violations);
            assert!(verdict.inconclusive.is_empty(), "seed {seed}: {:?}", verdict.inconclusive);
            assert_eq!(verdict.checked, 200);
        }
    }

    #[test]
    fn a_stale_read_in_a_long_history_is_found() {
        let mut history = random_history(7, 8, 1, 3000);
        // The last read made to return a value long overwritten: a write from the start.
        let first_write = history.events.iter().find_map(|event| match &event.op {
            Op::Set { value, .. } if event.kind == crate::Kind::Ok => Some(value.clone()),
            _ => None,
        });
        let last_read = history
            .events
            .iter_mut()
            .rev()
            .find(|event| matches!(event.op, Op::Get { .. }) && event.kind == crate::Kind::Ok);
        last_read.unwrap().value = Value::Read(first_write);
        assert_finds(&history, "key k0: not linearizable");
    }

    #[test]
    fn thousands_of_calls_on_one_key_with_many_clients_are_decided() {
        let history = random_history(11, 20, 1, 5000);
        let verdict = assert_valid(&history);
        assert_eq!(verdict.checked, 5000);
    }

    #[test]
    fn a_tangle_beyond_the_budget_is_inconclusive_not_invalid() {
        let history = random_history(3, 20, 1, 2000);
        let verdict = check_within(&history.calls(), 10);
        assert!(verdict.valid(), "{:?}", verdict.violations);
        assert_eq!(verdict.inconclusive.len(), 1, "{:?}", verdict.inconclusive);
        assert!(verdict.inconclusive[0].starts_with("key k0: undecided within 10 search nodes"));
    }
}
