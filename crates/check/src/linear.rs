//! Is one register's history linearizable? A Wing–Gong–Lowe search: build the sequential order
//! one call at a time, each time choosing a call that may go next (no call still left out
//! completed before it was invoked) and whose result the register agrees with; back up when
//! stuck. Lowe's memo makes it practical: a node is the set of calls placed so far and the
//! register's value, and a node met twice is explored once.
//!
//! Calls of unknown outcome may take effect at any time after their invocation, or never. Placing
//! them freely would multiply the nodes by every subset of them, so they are placed only where
//! a call that completed needs them: just before a read of the value they wrote, or before a
//! `SET NX` that found the key taken when it was still absent. That loses no linearization: with
//! only sets and set-if-absent (no deletes), a run of unknown calls before a call has the effect
//! of its one last effective member, and a run that the next call does not need can move past
//! it (it reads, or finds the key taken, either way) or be dropped (it overwrites). The memo then
//! also prunes by dominance: a node with the same calls and value as one explored before, but
//! more of the unknown calls used up, has fewer choices left, so it cannot succeed where that one
//! failed.
//!
//! The search is bounded by a budget of nodes: a history too tangled to decide in it is reported
//! as such, not guessed.

use std::collections::HashMap;

/// The register's value: an index into the values the history wrote; [`ABSENT`] for none.
pub(crate) type Value = usize;

pub(crate) const ABSENT: Value = 0;

/// What a call that completed did to the register, and saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// A read that returned this value.
    Read(Value),
    /// A write (a plain or fenced `SET`).
    Write(Value),
    /// `SET NX`, with whether it set the value.
    SetNx { value: Value, set: bool },
}

/// A call that completed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Done {
    pub effect: Effect,
    pub invoked: u64,
    pub completed: u64,
}

/// A write of unknown outcome: it may take effect at any time after `invoked`, or never.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Maybe {
    pub value: Value,
    /// A `SET NX`: it writes only if the key is absent.
    pub if_absent: bool,
    pub invoked: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Linearizable {
    Yes,
    /// No order fits. The search got furthest with `placed` calls in order and the register at
    /// `register`; then none of `stuck` (indices into the calls) could go next, some because
    /// they would leave the reads in `starved` without their value for good.
    No {
        placed: usize,
        register: Value,
        stuck: Vec<usize>,
        starved: Vec<usize>,
    },
    /// The budget of nodes ran out.
    Undecided,
}

/// One way to take the next step: place `done`, after `maybe` if it needs it.
#[derive(Debug, Clone, Copy)]
struct Move {
    done: usize,
    maybe: Option<usize>,
    /// The register after the step.
    value: Value,
}

#[derive(Debug)]
struct Frame {
    moves: Vec<Move>,
    next: usize,
    /// The first call not yet placed, by invocation and by completion.
    first_invoked: usize,
    first_completed: usize,
}

/// The search's position: what is placed, and the register.
struct Search<'h> {
    done: &'h [Done],
    maybe: &'h [Maybe],
    by_invocation: Vec<usize>,
    by_completion: Vec<usize>,
    /// Unknown writes in invocation order, and by the value they write.
    maybe_by_invocation: Vec<usize>,
    maybe_by_value: HashMap<Value, Vec<usize>>,
    placed: Vec<bool>,
    used: Vec<usize>,
    placed_count: usize,
    /// A Zobrist hash of `placed`: the memo's key, with the register.
    hash: u128,
    keys: Vec<u128>,
    register: Value,
    /// Per value: the reads of it not placed yet, and the writes of it that could still come
    /// (not placed, or unknown and unused).
    readers: Vec<u32>,
    writers: Vec<u32>,
    /// The values starved: read by a call not placed yet, but neither in the register nor
    /// coming from any write. A node with one is a dead end, however far its search would go.
    starved: usize,
}

pub(crate) fn check(done: &[Done], maybe: &[Maybe], budget: usize) -> Linearizable {
    if done.is_empty() {
        return Linearizable::Yes;
    }
    let mut by_invocation: Vec<usize> = (0..done.len()).collect();
    by_invocation.sort_by_key(|&at| done[at].invoked);
    let mut by_completion: Vec<usize> = (0..done.len()).collect();
    by_completion.sort_by_key(|&at| done[at].completed);
    let mut maybe_by_invocation: Vec<usize> = (0..maybe.len()).collect();
    maybe_by_invocation.sort_by_key(|&at| maybe[at].invoked);
    let mut maybe_by_value: HashMap<Value, Vec<usize>> = HashMap::new();
    for &at in &maybe_by_invocation {
        maybe_by_value.entry(maybe[at].value).or_default().push(at);
    }
    let mut seed = 0x5eed_u64;
    let keys =
        (0..done.len()).map(|_| u128::from(mix(&mut seed)) << 64 | u128::from(mix(&mut seed))).collect();
    let mut search = Search {
        done,
        maybe,
        by_invocation,
        by_completion,
        maybe_by_invocation,
        maybe_by_value,
        placed: vec![false; done.len()],
        used: Vec::new(),
        placed_count: 0,
        hash: 0,
        keys,
        register: ABSENT,
        readers: Vec::new(),
        writers: Vec::new(),
        starved: 0,
    };
    let values = done
        .iter()
        .map(|call| match call.effect {
            Effect::Read(value) | Effect::Write(value) | Effect::SetNx { value, .. } => value,
        })
        .chain(maybe.iter().map(|write| write.value))
        .max()
        .unwrap_or(ABSENT)
        + 1;
    search.readers = vec![0; values];
    search.writers = vec![0; values];
    for call in done {
        match call.effect {
            Effect::Read(value) => search.readers[value] += 1,
            Effect::Write(value) | Effect::SetNx { value, set: true } => search.writers[value] += 1,
            Effect::SetNx { set: false, .. } => {}
        }
    }
    for write in maybe {
        search.writers[write.value] += 1;
    }
    search.starved = (0..values).filter(|&value| search.is_starved(value)).count();
    search.run(budget)
}

impl Search<'_> {
    fn run(&mut self, budget: usize) -> Linearizable {
        // (value, used unknown calls, sorted) of every node met, per (placed, register).
        let mut memo: HashMap<(u128, Value), Vec<Vec<usize>>> = HashMap::new();
        let mut nodes = 0;
        let root = self.frame(0, 0);
        let mut furthest = (0, ABSENT, self.stuck(&root), self.starving());
        if self.starved > 0 {
            let (placed, register, stuck, starved) = furthest;
            return Linearizable::No { placed, register, stuck, starved };
        }
        let mut stack = vec![root];
        // The move into each frame but the root, with the register before it.
        let mut path: Vec<(Move, Value)> = Vec::new();
        while let Some(frame) = stack.last_mut() {
            let Some(&step) = frame.moves.get(frame.next) else {
                stack.pop();
                if let Some((step, before)) = path.pop() {
                    self.undo(step, before);
                }
                continue;
            };
            frame.next += 1;
            let (first_invoked, first_completed) = (frame.first_invoked, frame.first_completed);
            let before = self.register;
            self.apply(step);
            if self.starved > 0 {
                if furthest.0 == self.placed_count - 1 && furthest.3.is_empty() {
                    furthest.3 = self.starving();
                }
                self.undo(step, before);
                continue;
            }
            if self.placed_count == self.done.len() {
                return Linearizable::Yes;
            }
            let mut used = self.used.clone();
            used.sort_unstable();
            let met = memo.entry((self.hash, self.register)).or_default();
            if met.iter().any(|earlier| is_subset(earlier, &used)) {
                self.undo(step, before);
                continue;
            }
            met.retain(|earlier| !is_subset(&used, earlier));
            met.push(used);
            nodes += 1;
            if nodes > budget {
                return Linearizable::Undecided;
            }
            let child = self.frame(first_invoked, first_completed);
            if self.placed_count > furthest.0 {
                furthest = (self.placed_count, self.register, self.stuck(&child), Vec::new());
            }
            path.push((step, before));
            stack.push(child);
        }
        let (placed, register, stuck, starved) = furthest;
        Linearizable::No { placed, register, stuck, starved }
    }

    fn apply(&mut self, step: Move) {
        let before = self.register;
        self.recount(step, before, |search| {
            search.placed[step.done] = true;
            search.placed_count += 1;
            search.hash ^= search.keys[step.done];
            if let Some(maybe) = step.maybe {
                search.used.push(maybe);
            }
            search.register = step.value;
            search.count(step, -1);
        });
    }

    fn undo(&mut self, step: Move, before: Value) {
        self.recount(step, before, |search| {
            search.placed[step.done] = false;
            search.placed_count -= 1;
            search.hash ^= search.keys[step.done];
            if step.maybe.is_some() {
                search.used.pop();
            }
            search.register = before;
            search.count(step, 1);
        });
    }

    /// Takes a step's calls out of (`-1`) or back into (`1`) the readers and writers to come.
    fn count(&mut self, step: Move, by: i32) {
        let change = |count: &mut u32| *count = count.checked_add_signed(by).unwrap_or(0);
        match self.done[step.done].effect {
            Effect::Read(value) => change(&mut self.readers[value]),
            Effect::Write(value) | Effect::SetNx { value, set: true } => change(&mut self.writers[value]),
            Effect::SetNx { set: false, .. } => {}
        }
        if let Some(maybe) = step.maybe {
            change(&mut self.writers[self.maybe[maybe].value]);
        }
    }

    /// Runs `change` (a step or its undoing) and keeps `starved` right: only the values the
    /// step touches can change their state.
    fn recount(&mut self, step: Move, before: Value, change: impl FnOnce(&mut Self)) {
        let call = match self.done[step.done].effect {
            Effect::Read(value) | Effect::Write(value) | Effect::SetNx { value, .. } => value,
        };
        let maybe = step.maybe.map_or(call, |maybe| self.maybe[maybe].value);
        let mut touched = [before, step.value, call, maybe];
        touched.sort_unstable();
        let mut last = None;
        for &value in &touched {
            if last != Some(value) && self.is_starved(value) {
                self.starved -= 1;
            }
            last = Some(value);
        }
        change(self);
        let mut last = None;
        for &value in &touched {
            if last != Some(value) && self.is_starved(value) {
                self.starved += 1;
            }
            last = Some(value);
        }
    }

    /// The reads not placed yet whose value can no longer come.
    fn starving(&self) -> Vec<usize> {
        (0..self.done.len())
            .filter(|&at| !self.placed[at])
            .filter(|&at| matches!(self.done[at].effect, Effect::Read(value) if self.is_starved(value)))
            .collect()
    }

    fn is_starved(&self, value: Value) -> bool {
        let at = value;
        self.readers[at] > 0 && self.writers[at] == 0 && self.register != value
    }

    /// The moves from the current node. A call may go next if no call left out completed before
    /// it was invoked: it was invoked by the earliest completion among those left out.
    fn frame(&self, mut first_invoked: usize, mut first_completed: usize) -> Frame {
        while self.placed[self.by_invocation[first_invoked]] {
            first_invoked += 1;
        }
        while self.placed[self.by_completion[first_completed]] {
            first_completed += 1;
        }
        let deadline = self.done[self.by_completion[first_completed]].completed;
        let register = self.register;
        // A call that may go next, leaves the register as it is and agrees with it (a read of
        // the value, a `SET NX` that finds the key taken) goes next: any order that places it
        // later can place it now instead (it leaves out no call that completed before it was
        // invoked, and the calls between see the same register), so there is nothing to choose.
        let neutral = self.window(first_invoked, deadline).find(|&at| match self.done[at].effect {
            Effect::Read(value) => value == register,
            Effect::SetNx { set: false, .. } => register != ABSENT,
            _ => false,
        });
        if let Some(at) = neutral {
            let moves = vec![Move { done: at, maybe: None, value: register }];
            return Frame { moves, next: 0, first_invoked, first_completed };
        }
        let mut moves = Vec::new();
        for at in self.window(first_invoked, deadline) {
            match self.done[at].effect {
                Effect::Write(value) => moves.push(Move { done: at, maybe: None, value }),
                // No neutral call here: a read disagrees with the register, a `SET NX` that found
                // the key taken sees it absent.
                Effect::Read(ABSENT) => {}
                Effect::Read(value) => {
                    // Only an unknown write of this very value can make the read true.
                    let writers = self.maybe_by_value.get(&value).map(Vec::as_slice).unwrap_or_default();
                    for &maybe in writers {
                        let write = self.maybe[maybe];
                        if write.invoked > deadline {
                            break;
                        }
                        if (!write.if_absent || register == ABSENT) && !self.used.contains(&maybe) {
                            moves.push(Move { done: at, maybe: Some(maybe), value });
                        }
                    }
                }
                Effect::SetNx { value, set: true } => {
                    if register == ABSENT {
                        moves.push(Move { done: at, maybe: None, value });
                    }
                }
                Effect::SetNx { set: false, .. } => {
                    // The key was taken: by any unknown write, which leaves its own value.
                    for &maybe in &self.maybe_by_invocation {
                        let write = self.maybe[maybe];
                        if write.invoked > deadline {
                            break;
                        }
                        if !self.used.contains(&maybe) {
                            moves.push(Move { done: at, maybe: Some(maybe), value: write.value });
                        }
                    }
                }
            }
        }
        moves.sort_by_key(|step| self.done[step.done].completed);
        Frame { moves, next: 0, first_invoked, first_completed }
    }

    /// The calls not placed yet that were invoked by `deadline`, in invocation order.
    fn window(&self, first_invoked: usize, deadline: u64) -> impl Iterator<Item = usize> + '_ {
        self.by_invocation[first_invoked..]
            .iter()
            .copied()
            .take_while(move |&at| self.done[at].invoked <= deadline)
            .filter(|&at| !self.placed[at])
    }

    /// The calls that could have gone next from a frame (for the report of a failure).
    fn stuck(&self, frame: &Frame) -> Vec<usize> {
        let deadline = self.done[self.by_completion[frame.first_completed]].completed;
        self.window(frame.first_invoked, deadline).collect()
    }
}

/// Whether sorted `a` is within sorted `b`.
fn is_subset(a: &[usize], b: &[usize]) -> bool {
    let mut b = b.iter();
    a.iter().all(|x| b.any(|y| y == x))
}

/// splitmix64: the memo's hash keys, the same on every run.
pub(crate) fn mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every order, every unknown write anywhere or nowhere: the definition, for small histories.
    fn by_definition(
        done: &[Done],
        maybe: &[Maybe],
        placed: &mut Vec<bool>,
        used: &mut Vec<bool>,
        register: Value,
    ) -> bool {
        if placed.iter().all(|&p| p) {
            return true;
        }
        let deadline =
            (0..done.len()).filter(|&at| !placed[at]).map(|at| done[at].completed).min().unwrap_or(u64::MAX);
        for at in 0..done.len() {
            if placed[at] || done[at].invoked > deadline {
                continue;
            }
            let next = match done[at].effect {
                Effect::Read(value) if value == register => Some(register),
                Effect::Read(_) => None,
                Effect::Write(value) => Some(value),
                Effect::SetNx { value, set: true } if register == ABSENT => Some(value),
                Effect::SetNx { set: false, .. } if register != ABSENT => Some(register),
                Effect::SetNx { .. } => None,
            };
            if let Some(next) = next {
                placed[at] = true;
                let fits = by_definition(done, maybe, placed, used, next);
                placed[at] = false;
                if fits {
                    return true;
                }
            }
        }
        for at in 0..maybe.len() {
            if used[at] || maybe[at].invoked > deadline {
                continue;
            }
            let next = if maybe[at].if_absent && register != ABSENT { register } else { maybe[at].value };
            used[at] = true;
            let fits = by_definition(done, maybe, placed, used, next);
            used[at] = false;
            if fits {
                return true;
            }
        }
        false
    }

    #[test]
    fn the_search_agrees_with_the_definition_on_small_histories() {
        let mut rng = 1;
        let mut below = |n: u64| usize::try_from(mix(&mut rng) % n).unwrap();
        let (mut yes, mut no) = (0, 0);
        for _ in 0..4000 {
            let done: Vec<Done> = (0..1 + below(6))
                .map(|_| {
                    let invoked = below(20) as u64;
                    let completed = invoked + 1 + below(8) as u64;
                    let value = below(3);
                    let effect = match below(4) {
                        0 | 1 => Effect::Read(value),
                        2 => Effect::Write(1 + value % 2),
                        _ => Effect::SetNx { value: 1 + value % 2, set: below(2) == 0 },
                    };
                    Done { effect, invoked, completed }
                })
                .collect();
            let maybe: Vec<Maybe> = (0..below(3))
                .map(|_| Maybe { value: 1 + below(2), if_absent: below(3) == 0, invoked: below(20) as u64 })
                .collect();
            let expected = by_definition(
                &done,
                &maybe,
                &mut vec![false; done.len()],
                &mut vec![false; maybe.len()],
                ABSENT,
            );
            let found = check(&done, &maybe, 1_000_000);
            assert_eq!(found == Linearizable::Yes, expected, "{done:?} {maybe:?}: {found:?}");
            if expected { yes += 1 } else { no += 1 }
        }
        // Both answers were put to the test.
        assert!(yes > 500 && no > 500, "{yes} linearizable, {no} not");
    }
}
