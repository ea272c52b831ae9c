//! Locks and semaphores, judged by what a client may assume, not by what the server did.
//!
//! A client that was granted a hold may act on it (a fenced write, say) from the moment the grant
//! reached it until the earliest of: the moment it sends the release, and the end of its lease
//! counted from when it *sent* the acquire (the server started the lease later, so this end is
//! never later than the server's). Each renewal the server confirmed, sent while the hold was
//! still valid, moves that end to its own send time plus its lease. Renewals of unknown outcome
//! move nothing: the client cannot count on them.
//!
//! ```text
//!   acquire sent ──── grant received ════ valid ════ release sent ─ ─ ─ lease end
//!        │                                   (or: acquire sent + lease, + each Ok renew)
//! ```
//!
//! On those validity windows, per lock:
//! - exclusive: no two windows overlap; a semaphore of `n`: never more than `n` at one instant;
//! - tokens: a grant that completed before another was sent has the smaller token, and no
//!   token is handed out twice;
//! - fencing: a fenced write the server accepted must not have been sent after its token's
//!   release completed, nor (exclusive locks) after a grant with a greater token completed.
//!
//! Acquires that failed or whose outcome is unknown hold nothing a client could use, so they are
//! left out; a grant that arrived after its lease had already run out is valid for no time at all.

use std::collections::{BTreeMap, HashMap};

use crate::history::ms;
use crate::{Call, Op, Outcome, Value, Verdict};

/// A granted hold and the window in which its client may use it.
#[derive(Debug)]
struct Hold<'c, 'a> {
    grant: &'c Call<'a>,
    /// When the grant reached the client.
    start: u64,
    /// The earliest of the release's send and the lease's end, as the client counts them.
    end: u64,
}

impl Hold<'_, '_> {
    fn valid(&self) -> bool {
        self.start < self.end
    }

    fn describe(&self) -> String {
        format!("{} (valid {} .. {})", self.grant, ms(self.start), ms(self.end))
    }
}

/// Everything that happened to one lock.
#[derive(Debug, Default)]
struct Lock<'c, 'a> {
    grants: Vec<(&'c Call<'a>, u64)>,
    renews: Vec<&'c Call<'a>>,
    releases: Vec<&'c Call<'a>>,
    fenced_sets: Vec<&'c Call<'a>>,
    /// The fewest holders any acquire of this lock allowed (1 for an exclusive lock).
    limit: u32,
    exclusive: bool,
}

pub fn check(calls: &[Call<'_>]) -> Verdict {
    let mut violations = Vec::new();
    let mut checked = 0;
    let mut locks: BTreeMap<&str, Lock<'_, '_>> = BTreeMap::new();
    for call in calls {
        let lock = match call.op {
            Op::Acquire { lock, .. }
            | Op::Renew { lock, .. }
            | Op::Release { lock, .. }
            | Op::FencedSet { lock, .. } => lock,
            _ => continue,
        };
        checked += 1;
        let entry = locks.entry(lock.as_str()).or_insert_with(|| Lock { limit: u32::MAX, ..Lock::default() });
        match call.op {
            Op::Acquire { limit, .. } => {
                entry.limit = entry.limit.min(limit.unwrap_or(1));
                entry.exclusive |= limit.is_none();
                if call.outcome != Outcome::Ok {
                    continue;
                }
                match call.value {
                    Value::Token(token) => entry.grants.push((call, *token)),
                    _ => violations.push(format!("lock {lock}: a grant without a token: {call}")),
                }
            }
            Op::Renew { .. } => entry.renews.push(call),
            Op::Release { .. } => entry.releases.push(call),
            _ => entry.fenced_sets.push(call),
        }
    }
    for (name, lock) in &locks {
        check_tokens(name, lock, &mut violations);
        let holds = holds(lock);
        if lock.exclusive || lock.limit <= 1 {
            check_exclusive(name, &holds, &mut violations);
        } else {
            check_limit(name, lock.limit, &holds, &mut violations);
        }
        check_fenced_sets(name, lock, &mut violations);
    }
    Verdict::new("locks", checked, violations)
}

/// Each grant's validity window (see the module's doc).
fn holds<'c, 'a>(lock: &Lock<'c, 'a>) -> Vec<Hold<'c, 'a>> {
    let mut by_token: HashMap<u64, (Vec<&Call<'_>>, Vec<&Call<'_>>)> = HashMap::new();
    for call in &lock.renews {
        if let Op::Renew { token, .. } = call.op {
            by_token.entry(*token).or_default().0.push(call);
        }
    }
    for call in &lock.releases {
        if let Op::Release { token, .. } = call.op {
            by_token.entry(*token).or_default().1.push(call);
        }
    }
    let mut holds = Vec::with_capacity(lock.grants.len());
    for &(grant, token) in &lock.grants {
        let Some(start) = grant.completed else { continue };
        let Op::Acquire { lease_ms, .. } = grant.op else { continue };
        let (renews, releases) = by_token.get(&token).map(|(a, b)| (&a[..], &b[..])).unwrap_or_default();
        // Whatever its reply, the client stopped using the hold when it sent the release.
        let released = releases
            .iter()
            .map(|release| release.invoked)
            .filter(|&sent| sent >= grant.invoked)
            .min()
            .unwrap_or(u64::MAX);
        let mut expires = grant.invoked.saturating_add(lease_ms.saturating_mul(1_000_000));
        let mut renews: Vec<&Call<'_>> = renews
            .iter()
            .copied()
            .filter(|r| r.outcome == Outcome::Ok && r.invoked >= grant.invoked)
            .collect();
        renews.sort_by_key(|renew| renew.invoked);
        for renew in renews {
            let Op::Renew { lease_ms, .. } = renew.op else { continue };
            if renew.invoked < expires.min(released) {
                expires = expires.max(renew.invoked.saturating_add(lease_ms.saturating_mul(1_000_000)));
            }
        }
        holds.push(Hold { grant, start, end: expires.min(released) });
    }
    holds
}

/// No two valid holds of an exclusive lock overlap.
fn check_exclusive(name: &str, holds: &[Hold<'_, '_>], violations: &mut Vec<String>) {
    let mut valid: Vec<&Hold<'_, '_>> = holds.iter().filter(|hold| hold.valid()).collect();
    valid.sort_by_key(|hold| (hold.start, hold.end));
    // Each hold against the earlier one that reaches furthest: any overlap shows up there.
    let mut furthest: Option<&Hold<'_, '_>> = None;
    for hold in valid {
        if let Some(earlier) = furthest {
            if hold.start < earlier.end {
                violations.push(format!(
                    "lock {name}: two valid holds overlap: {} and {}",
                    earlier.describe(),
                    hold.describe()
                ));
            }
        }
        if furthest.is_none_or(|earlier| hold.end > earlier.end) {
            furthest = Some(hold);
        }
    }
}

/// At no instant more than `limit` valid holds of a semaphore.
fn check_limit(name: &str, limit: u32, holds: &[Hold<'_, '_>], violations: &mut Vec<String>) {
    // (instant, +1 start / -1 end, hold); at one instant ends go first: windows are half-open.
    let mut edges: Vec<(u64, i8, usize)> = Vec::new();
    for (at, hold) in holds.iter().enumerate().filter(|(_, hold)| hold.valid()) {
        edges.push((hold.start, 1, at));
        edges.push((hold.end, -1, at));
    }
    edges.sort_by_key(|&(instant, step, _)| (instant, step));
    let mut valid: Vec<usize> = Vec::new();
    let mut over = false;
    for (instant, step, at) in edges {
        if step < 0 {
            valid.retain(|&other| other != at);
            over = valid.len() > limit as usize;
            continue;
        }
        valid.push(at);
        // One line for each time the count goes over the limit, not one per extra holder.
        if valid.len() > limit as usize && !over {
            over = true;
            let who: Vec<String> = valid.iter().map(|&at| holds[at].describe()).collect();
            violations.push(format!(
                "semaphore {name}: {} valid holds at {} with a limit of {limit}: {}",
                valid.len(),
                ms(instant),
                who.join("; ")
            ));
        }
    }
}

/// Tokens go up in real-time order of grants and never repeat.
fn check_tokens(name: &str, lock: &Lock<'_, '_>, violations: &mut Vec<String>) {
    let mut seen: HashMap<u64, &Call<'_>> = HashMap::new();
    for &(grant, token) in &lock.grants {
        if let Some(first) = seen.insert(token, grant) {
            violations.push(format!("lock {name}: token {token} granted twice: {first} and {grant}"));
        }
    }
    let mut by_completion: Vec<(&Call<'_>, u64)> = lock.grants.clone();
    by_completion.sort_by_key(|(grant, _)| grant.completed);
    let mut by_invocation: Vec<(&Call<'_>, u64)> = lock.grants.clone();
    by_invocation.sort_by_key(|(grant, _)| grant.invoked);
    // The greatest token among the grants completed before the current one was sent.
    let mut greatest: Option<(&Call<'_>, u64)> = None;
    let mut next = 0;
    for (later, token) in by_invocation {
        while next < by_completion.len() && by_completion[next].0.completed.is_some_and(|c| c < later.invoked)
        {
            if greatest.is_none_or(|(_, max)| by_completion[next].1 > max) {
                greatest = Some(by_completion[next]);
            }
            next += 1;
        }
        if let Some((earlier, max)) = greatest {
            if max > token {
                violations.push(format!(
                    "lock {name}: token went down: {earlier} completed before {later} was sent"
                ));
            }
        }
    }
}

/// No stale fenced write accepted.
fn check_fenced_sets(name: &str, lock: &Lock<'_, '_>, violations: &mut Vec<String>) {
    let mut released: HashMap<u64, &Call<'_>> = HashMap::new();
    for release in &lock.releases {
        let (Op::Release { token, .. }, Some(completed), Outcome::Ok) =
            (release.op, release.completed, release.outcome)
        else {
            continue;
        };
        let first = released.entry(*token).or_insert(release);
        if first.completed.is_some_and(|c| completed < c) {
            *first = release;
        }
    }
    // Grants by completion, each with the greatest-token grant completed up to it.
    let mut grants: Vec<(&Call<'_>, u64)> = lock.grants.clone();
    grants.sort_by_key(|(grant, _)| grant.completed);
    let mut greatest: Vec<(u64, &Call<'_>, u64)> = Vec::with_capacity(grants.len());
    for (grant, token) in grants {
        let Some(completed) = grant.completed else { continue };
        match greatest.last() {
            Some(&(_, best, max)) if max >= token => greatest.push((completed, best, max)),
            _ => greatest.push((completed, grant, token)),
        }
    }
    for write in &lock.fenced_sets {
        let Op::FencedSet { token, .. } = write.op else { continue };
        if write.outcome != Outcome::Ok {
            continue;
        }
        if let Some(release) = released.get(token).filter(|r| r.completed.is_some_and(|c| c < write.invoked))
        {
            violations.push(format!(
                "lock {name}: fenced write accepted after its release: {release}, then {write}"
            ));
        }
        if !lock.exclusive {
            continue;
        }
        let before = greatest.partition_point(|&(completed, _, _)| completed < write.invoked);
        if let Some(&(_, newer, max)) = before.checked_sub(1).map(|at| &greatest[at]) {
            if max > *token {
                violations.push(format!(
                    "lock {name}: stale fenced write accepted: {newer} completed before {write} was sent"
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::*;
    use crate::{History, Value};

    crate::script::judged_by_check!();

    #[test]
    fn a_double_grant_is_found() {
        let history = Script::new()
            .ok(1, 0, 10, acquire("l", 1000), Value::Token(1))
            .ok(2, 5, 20, acquire("l", 1000), Value::Token(2))
            .ok(1, 500, 510, release("l", 1), Value::None)
            .history();
        assert_finds(&history, "lock l: two valid holds overlap: process 1 LOCK.ACQUIRE l 1000 -> token 1");
        let verdict = verdict(&history);
        assert_eq!(verdict.violations.len(), 1, "{:?}", verdict.violations);
        assert!(verdict.violations[0].contains("process 2"), "{:?}", verdict.violations);
        assert_eq!(verdict.checked, 3);
    }

    #[test]
    fn back_to_back_holds_pass() {
        let history = Script::new()
            .ok(1, 0, 10, acquire("l", 1000), Value::Token(1))
            .ok(2, 5, 105, acquire("l", 1000), Value::Token(2))
            .ok(1, 100, 104, release("l", 1), Value::None)
            .ok(2, 200, 201, release("l", 2), Value::None)
            .ok(3, 202, 210, acquire("l", 1000), Value::Token(3))
            .history();
        assert_valid(&history);
    }

    #[test]
    fn an_expired_hold_counts_from_the_acquire_send() {
        // The lease ran from 0 to 100 ms as the client counts it, though the grant came at 10.
        let history = Script::new()
            .ok(1, 0, 10, acquire("l", 100), Value::Token(1))
            .ok(2, 50, 101, acquire("l", 100), Value::Token(2))
            .history();
        assert_valid(&history);
        // Counted from the grant's completion instead, it would still run at 101 ms.
        let late = Script::new()
            .ok(1, 0, 10, acquire("l", 100), Value::Token(1))
            .ok(2, 50, 99, acquire("l", 100), Value::Token(2))
            .history();
        assert_finds(&late, "two valid holds overlap");
    }

    #[test]
    fn renewals_extend_validity() {
        let renewed = Script::new()
            .ok(1, 0, 10, acquire("l", 100), Value::Token(1))
            .ok(1, 80, 85, renew("l", 1, 100), Value::None)
            .ok(2, 50, 150, acquire("l", 1000), Value::Token(2))
            .history();
        // Valid until 180 ms: the second grant at 150 overlaps.
        assert_finds(&renewed, "two valid holds overlap");
        let later = Script::new()
            .ok(1, 0, 10, acquire("l", 100), Value::Token(1))
            .ok(1, 80, 85, renew("l", 1, 100), Value::None)
            .ok(2, 50, 181, acquire("l", 1000), Value::Token(2))
            .history();
        assert_valid(&later);
    }

    #[test]
    fn renewals_that_failed_came_late_or_are_unknown_extend_nothing() {
        let history = Script::new()
            .ok(1, 0, 10, acquire("l", 100), Value::Token(1))
            .fail(1, 20, 25, renew("l", 1, 1000))
            .info(1, 30, 40, renew("l", 1, 1000))
            // Sent after the lease had run out: the server may say yes, the client cannot count on it.
            .ok(1, 101, 102, renew("l", 1, 1000), Value::None)
            .ok(2, 50, 120, acquire("l", 100), Value::Token(2))
            .history();
        assert_valid(&history);
    }

    #[test]
    fn failed_and_unknown_acquires_are_ignored() {
        let history = Script::new()
            .ok(1, 0, 10, acquire("l", 1000), Value::Token(1))
            .fail(2, 5, 20, acquire("l", 1000))
            .info(3, 6, 30, acquire("l", 1000))
            .history();
        assert_valid(&history);
        assert_eq!(verdict(&history).checked, 3);
    }

    #[test]
    fn concurrent_acquires_of_different_locks_pass() {
        let history = Script::new()
            .ok(1, 0, 10, acquire("a", 1000), Value::Token(1))
            .ok(2, 0, 10, acquire("b", 1000), Value::Token(2))
            .ok(3, 0, 10, acquire("c", 1000), Value::Token(3))
            .history();
        assert_valid(&history);
    }

    #[test]
    fn a_token_that_goes_down_is_found() {
        let history = Script::new()
            .ok(1, 0, 10, acquire("l", 100), Value::Token(7))
            .ok(1, 20, 21, release("l", 7), Value::None)
            .ok(2, 30, 40, acquire("l", 100), Value::Token(5))
            .history();
        assert_finds(&history, "lock l: token went down: process 1 LOCK.ACQUIRE l 100 -> token 7");
        // Concurrent grants may take their tokens in either order.
        let concurrent = Script::new()
            .ok(1, 0, 10, acquire("l", 100), Value::Token(7))
            .ok(2, 5, 15, acquire("l", 100), Value::Token(5))
            .ok(2, 16, 17, release("l", 5), Value::None)
            .history();
        let verdict = verdict(&concurrent);
        assert!(
            !verdict.violations.iter().any(|line| line.contains("went down")),
            "{:?}",
            verdict.violations
        );
    }

    #[test]
    fn a_repeated_token_is_found() {
        let history = Script::new()
            .ok(1, 0, 10, acquire("l", 100), Value::Token(3))
            .ok(1, 20, 21, release("l", 3), Value::None)
            .ok(2, 30, 40, acquire("l", 100), Value::Token(3))
            .history();
        assert_finds(&history, "lock l: token 3 granted twice");
    }

    #[test]
    fn a_fenced_write_after_a_greater_grant_is_found() {
        let history = Script::new()
            .ok(1, 0, 10, acquire("l", 100), Value::Token(1))
            .ok(2, 50, 110, acquire("l", 100), Value::Token(2))
            .ok(1, 120, 130, fenced_set("k", "x", "l", 1), Value::None)
            .history();
        assert_finds(
            &history,
            "lock l: stale fenced write accepted: process 2 LOCK.ACQUIRE l 100 -> token 2",
        );
        // Refused, or sent before the greater grant completed: fine.
        let fine = Script::new()
            .ok(1, 0, 10, acquire("l", 100), Value::Token(1))
            .ok(1, 20, 30, fenced_set("k", "x", "l", 1), Value::None)
            .ok(2, 50, 110, acquire("l", 100), Value::Token(2))
            .ok(1, 105, 130, fenced_set("k", "y", "l", 1), Value::None)
            .fail(1, 131, 140, fenced_set("k", "z", "l", 1))
            .history();
        assert_valid(&fine);
    }

    #[test]
    fn a_fenced_write_after_its_release_is_found() {
        let history = Script::new()
            .ok(1, 0, 10, acquire("l", 1000), Value::Token(1))
            .ok(1, 20, 30, release("l", 1), Value::None)
            .ok(2, 40, 50, fenced_set("k", "x", "l", 1), Value::None)
            .history();
        assert_finds(&history, "lock l: fenced write accepted after its release");
    }

    #[test]
    fn a_semaphore_over_its_limit_is_found() {
        let history = Script::new()
            .ok(1, 0, 10, sem_acquire("s", 2, 1000), Value::Token(1))
            .ok(2, 0, 10, sem_acquire("s", 2, 1000), Value::Token(2))
            .ok(3, 0, 20, sem_acquire("s", 2, 1000), Value::Token(3))
            .history();
        assert_finds(&history, "semaphore s: 3 valid holds at 20.000 ms with a limit of 2");
        let within = Script::new()
            .ok(1, 0, 10, sem_acquire("s", 2, 1000), Value::Token(1))
            .ok(2, 0, 10, sem_acquire("s", 2, 1000), Value::Token(2))
            .ok(1, 15, 16, release("s", 1), Value::None)
            .ok(3, 0, 20, sem_acquire("s", 2, 1000), Value::Token(3))
            // Two semaphore holds may both write through their fences.
            .ok(2, 21, 22, fenced_set("k", "x", "s", 2), Value::None)
            .ok(3, 21, 22, fenced_set("k", "y", "s", 3), Value::None)
            .history();
        assert_valid(&within);
    }

    #[test]
    fn a_history_survives_its_json_lines() {
        let history = Script::new()
            .ok(1, 0, 10, acquire("l", 1000), Value::Token(1))
            .ok(2, 5, 20, acquire("l", 1000), Value::Token(2))
            .history();
        let mut bytes = Vec::new();
        history.write_jsonl(&mut bytes).unwrap();
        let again = History::read_jsonl(&bytes[..]).unwrap();
        assert_eq!(verdict(&again), verdict(&history));
        assert!(!verdict(&again).valid());
    }
}
