//! Redis lists: `LPUSH`, `LPOP`, `LRANGE`, `LMOVE` ... and the blocking pops (`BLPOP`, `BRPOP`,
//! `BLMOVE`), with Redis's semantics, on the keyspace of `kv.rs` (a list is a [`Value::List`];
//! its bytes count toward memory limits through the key helpers).
//!
//! ```text
//!  BLPOP k1 k2 t ─► a key holds elements? ─yes─► popped now (the first such key, in order)
//!                    │ no (and t > 0)
//!                    ▼
//!                  ListWaiter in list_waits, its id in each key's line (oldest first), in the
//!                  session's waits, a WaitDeadline timer unless t is forever
//!
//!  LPUSH k1 ... ─► stored; k1 has a line ─► ready_lists ─(end of the step)─► the oldest waiter of
//!                  k1 pops (BLMOVE pushes on: its destination may serve its own waiters next)
//!                  ─► Effect::ListWaitDone { reply } to the waiter's session
//!  deadline ─► Effect::ListWaitDone { reply: nil };  session closed or resumed ─► the wait ends
//! ```
//!
//! Waiters are served at the end of the step, as Redis serves blocked clients once the command
//! (or the whole `EXEC`) has run: `LPUSH k a b` with a waiter replies 2, the waiter gets `b` and
//! `a` stays. Between steps no list with elements has a waiter, so an element pushed to a key
//! that clients wait on never stays stored while one of them waits. The line is by wait id, and
//! ids grow, so the longest-waiting client is served first, as in Redis.

use std::collections::{BTreeSet, VecDeque};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::kv::Value;
use crate::session::Session;
use crate::snapshot::TimerList;
use crate::timer::Timer;
use crate::{
    BlockingPop, CoreError, Effect, End, MAX_DURATION, Reply, SessionId, State, Timestamp, WaitTarget, ensure,
};

/// A blocking pop waiting for an element: primary data (in snapshots); its line positions, its
/// entry in `State::waits` and the session's waits, and its timer are indexes of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ListWaiter {
    pub(crate) session: SessionId,
    /// The keys it waits on, in the order given (the first to get an element serves it).
    pub(crate) keys: Vec<String>,
    pub(crate) from: End,
    /// `BLMOVE`'s destination.
    pub(crate) to: Option<(String, End)>,
    /// `None`: waits until served or its session ends (Redis's timeout 0).
    pub(crate) deadline: Option<Timestamp>,
}

type List = VecDeque<Bytes>;

/// The list a key holds, or WRONGTYPE.
fn as_list(value: &Value) -> Result<&List, CoreError> {
    match value {
        Value::List(l) => Ok(l),
        _ => Err(CoreError::WrongKind),
    }
}

/// The list inside a value its caller has checked.
fn list_mut(value: &mut Value) -> &mut List {
    match value {
        Value::List(l) => l,
        _ => panic!("a list command changed a {} in place", value.type_name()),
    }
}

/// Bytes as the signed delta [`State::update_key`] takes.
fn delta(bytes: usize) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

fn length(l: &List) -> i64 {
    i64::try_from(l.len()).unwrap_or(i64::MAX)
}

/// Redis's `start`/`stop` (inclusive, negative from the tail) as a range of indexes; `None` when
/// it selects nothing.
fn range(len: usize, start: i64, stop: i64) -> Option<(usize, usize)> {
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    let start = if start < 0 { (start + len).max(0) } else { start };
    let stop = if stop < 0 { stop + len } else { stop };
    if start > stop || start >= len {
        return None;
    }
    let stop = stop.min(len - 1);
    Some((usize::try_from(start).ok()?, usize::try_from(stop).ok()?))
}

/// An index (negative from the tail) inside a list of `len`, if it is one.
fn index(len: usize, index: i64) -> Option<usize> {
    let len_i = i64::try_from(len).ok()?;
    let i = if index < 0 { index + len_i } else { index };
    usize::try_from(i).ok().filter(|&i| i < len)
}

fn push(l: &mut List, end: End, element: Bytes) {
    match end {
        End::Left => l.push_front(element),
        End::Right => l.push_back(element),
    }
}

fn pop(l: &mut List, end: End) -> Option<Bytes> {
    match end {
        End::Left => l.pop_front(),
        End::Right => l.pop_back(),
    }
}

impl State {
    /// The list at `key` inside a step (every due timer fired): `None` when there is none.
    fn list_at(&self, key: &str) -> Result<Option<&List>, CoreError> {
        self.keys.get(key).map(|e| as_list(&e.value)).transpose()
    }

    /// The list at `key` as a reader at `now` sees it.
    fn live_list(&self, key: &str, now: Timestamp) -> Result<Option<&List>, CoreError> {
        self.live_key(key, now).map(|e| as_list(&e.value)).transpose()
    }

    /// Pushes onto the list at `key`, creating it when there is none (the caller checked that
    /// no other type is there), and marks it for its waiters. Returns the new length.
    fn push_elements(&mut self, key: &str, end: End, elements: Vec<Bytes>) -> i64 {
        let len = if self.keys.contains_key(key) {
            self.update_key(key, |value| {
                let l = list_mut(value);
                let added: usize = elements.iter().map(Bytes::len).sum();
                elements.into_iter().for_each(|e| push(l, end, e));
                (length(l), delta(added))
            })
            .expect("the key exists")
        } else {
            let mut l = List::with_capacity(elements.len());
            elements.into_iter().for_each(|e| push(&mut l, end, e));
            let len = length(&l);
            self.put_key(key.to_owned(), Value::List(l), None);
            len
        };
        if self.list_lines.contains_key(key) && !self.ready_lists.iter().any(|k| k == key) {
            self.ready_lists.push(key.to_owned());
        }
        len
    }

    /// Pops up to `count` elements from the list at `key` (which the caller checked is one); the
    /// key goes with its last element.
    fn pop_elements(&mut self, key: &str, end: End, count: usize) -> Vec<Bytes> {
        self.update_key(key, |value| {
            let l = list_mut(value);
            let out: Vec<Bytes> = std::iter::from_fn(|| pop(l, end)).take(count).collect();
            let lost: usize = out.iter().map(Bytes::len).sum();
            (out, -delta(lost))
        })
        .unwrap_or_default()
    }

    pub(crate) fn list_push(
        &mut self,
        key: String,
        end: End,
        elements: Vec<Bytes>,
        only_if_exists: bool,
    ) -> Result<Reply, CoreError> {
        if elements.is_empty() {
            return Err(CoreError::InvalidArgument("a push needs at least one element".into()));
        }
        if self.list_at(&key)?.is_none() && only_if_exists {
            return Ok(Reply::Int(0));
        }
        Ok(Reply::Int(self.push_elements(&key, end, elements)))
    }

    pub(crate) fn list_pop(&mut self, key: &str, end: End, count: Option<u64>) -> Result<Reply, CoreError> {
        if self.list_at(key)?.is_none() {
            return Ok(Reply::Nil);
        }
        Ok(match count {
            None => self.pop_elements(key, end, 1).pop().map_or(Reply::Nil, Reply::Bytes),
            Some(n) => {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                Reply::Array(self.pop_elements(key, end, n).into_iter().map(Reply::Bytes).collect())
            }
        })
    }

    pub(crate) fn list_set(&mut self, key: &str, at: i64, element: Bytes) -> Result<Reply, CoreError> {
        let Some(l) = self.list_at(key)? else {
            return Err(CoreError::InvalidArgument("no such key".into()));
        };
        let Some(i) = index(l.len(), at) else {
            return Err(CoreError::InvalidArgument("index out of range".into()));
        };
        self.update_key(key, |value| {
            let slot = &mut list_mut(value)[i];
            let change = delta(element.len()) - delta(slot.len());
            *slot = element;
            ((), change)
        });
        Ok(Reply::Ok)
    }

    pub(crate) fn list_rem(&mut self, key: &str, count: i64, element: &Bytes) -> Result<Reply, CoreError> {
        let Some(l) = self.list_at(key)? else { return Ok(Reply::Int(0)) };
        // Nothing to remove changes nothing: the key's version (what WATCH compares) stays.
        if !l.contains(element) {
            return Ok(Reply::Int(0));
        }
        let limit =
            if count == 0 { usize::MAX } else { usize::try_from(count.unsigned_abs()).unwrap_or(usize::MAX) };
        let removed = self.update_key(key, |value| {
            let l = list_mut(value);
            let mut kept = List::with_capacity(l.len());
            let mut removed = 0;
            let mut take = |e: &Bytes| {
                let gone = removed < limit && e == element;
                removed += usize::from(gone);
                gone
            };
            if count < 0 {
                l.drain(..).rev().filter(|e| !take(e)).for_each(|e| kept.push_front(e));
            } else {
                l.drain(..).filter(|e| !take(e)).for_each(|e| kept.push_back(e));
            }
            *l = kept;
            (removed, -delta(removed * element.len()))
        });
        Ok(Reply::Int(removed.map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX))))
    }

    pub(crate) fn list_trim(&mut self, key: &str, start: i64, stop: i64) -> Result<Reply, CoreError> {
        let Some(l) = self.list_at(key)? else { return Ok(Reply::Ok) };
        let keep = range(l.len(), start, stop);
        self.update_key(key, |value| {
            let l = list_mut(value);
            let before: usize = l.iter().map(Bytes::len).sum();
            match keep {
                Some((first, last)) => {
                    l.truncate(last + 1);
                    l.drain(..first);
                }
                None => l.clear(),
            }
            let after: usize = l.iter().map(Bytes::len).sum();
            ((), delta(after) - delta(before))
        });
        Ok(Reply::Ok)
    }

    pub(crate) fn list_insert(
        &mut self,
        key: &str,
        before: bool,
        pivot: &Bytes,
        element: Bytes,
    ) -> Result<Reply, CoreError> {
        let Some(l) = self.list_at(key)? else { return Ok(Reply::Int(0)) };
        let Some(at) = l.iter().position(|e| e == pivot) else { return Ok(Reply::Int(-1)) };
        let at = if before { at } else { at + 1 };
        let len = self.update_key(key, |value| {
            let l = list_mut(value);
            let added = delta(element.len());
            l.insert(at, element);
            (length(l), added)
        });
        // An insert lengthens a list that has elements, so it has no waiters to serve.
        Ok(Reply::Int(len.expect("the key exists")))
    }

    pub(crate) fn list_move(
        &mut self,
        source: &str,
        destination: String,
        from: End,
        to: End,
    ) -> Result<Reply, CoreError> {
        if self.list_at(source)?.is_none() {
            return Ok(Reply::Nil);
        }
        self.list_at(&destination)?;
        Ok(Reply::Bytes(self.move_one(source, from, &destination, to)))
    }

    /// Pops one element of the list at `source` and pushes it onto `destination` (both checked).
    fn move_one(&mut self, source: &str, from: End, destination: &str, to: End) -> Bytes {
        let element = self.pop_elements(source, from, 1).pop().expect("a stored list has elements");
        self.push_elements(destination, to, vec![element.clone()]);
        element
    }

    /// What a blocking pop answers when `key` has an element for it: `[key, element]`, or the
    /// element moved (`BLMOVE`).
    fn pop_for(&mut self, key: &str, from: End, to: Option<&(String, End)>) -> Reply {
        match to {
            Some((destination, end)) => Reply::Bytes(self.move_one(key, from, destination, *end)),
            None => {
                let element = self.pop_elements(key, from, 1).pop().expect("a stored list has elements");
                Reply::Array(vec![
                    Reply::Bytes(Bytes::copy_from_slice(key.as_bytes())),
                    Reply::Bytes(element),
                ])
            }
        }
    }

    /// `BLPOP` and friends: the first key holding elements is popped now; with none, the pop
    /// waits in every key's line (unless `wait` is 0: nil at once). As in Redis, keys are looked
    /// at in order and one of another type is WRONGTYPE; `BLMOVE`'s destination is checked only
    /// when there is an element to move.
    pub(crate) fn blocking_pop(&mut self, p: BlockingPop) -> Result<Reply, CoreError> {
        if p.keys.is_empty() {
            return Err(CoreError::InvalidArgument("a blocking pop needs at least one key".into()));
        }
        for key in &p.keys {
            if self.list_at(key)?.is_some() {
                if let Some((destination, _)) = &p.to {
                    self.list_at(destination)?;
                }
                return Ok(self.pop_for(key, p.from, p.to.as_ref()));
            }
        }
        if p.wait == 0 {
            return Ok(Reply::Nil);
        }
        let session = p.session.ok_or(CoreError::WaitWithoutSession)?;
        self.session(session)?;
        let deadline = (p.wait <= MAX_DURATION).then(|| self.clock + p.wait);
        let wait_id = self.next_id();
        for key in &p.keys {
            self.list_lines.entry(key.clone()).or_default().insert(wait_id);
        }
        self.waits.insert(wait_id, WaitTarget::List);
        self.session_mut(session).waits.insert(wait_id);
        if let Some(at) = deadline {
            self.timers.add(at, Timer::WaitDeadline { wait_id });
        }
        let waiter = ListWaiter { session, keys: p.keys, from: p.from, to: p.to, deadline };
        self.list_waits.insert(wait_id, waiter);
        Ok(Reply::Waiting { wait_id })
    }

    /// Takes a list wait out of every line it is in, with its timer.
    pub(crate) fn remove_list_waiter(&mut self, wait_id: u64) -> ListWaiter {
        let waiter = self.list_waits.remove(&wait_id).expect("list wait exists");
        for key in &waiter.keys {
            if let Some(line) = self.list_lines.get_mut(key) {
                line.remove(&wait_id);
                if line.is_empty() {
                    self.list_lines.remove(key);
                }
            }
        }
        self.waits.remove(&wait_id);
        self.session_mut(waiter.session).waits.remove(&wait_id);
        if let Some(at) = waiter.deadline {
            self.timers.remove(at, Timer::WaitDeadline { wait_id });
        }
        waiter
    }

    /// Serves the lists pushed to in this step, each to its waiters in line order while it has
    /// elements. A `BLMOVE` served pushes on, and its destination's waiters come next.
    pub(crate) fn serve_ready_lists(&mut self, fx: &mut Vec<Effect>) {
        while !self.ready_lists.is_empty() {
            let key = self.ready_lists.remove(0);
            self.serve_list(&key, fx);
        }
    }

    fn serve_list(&mut self, key: &str, fx: &mut Vec<Effect>) {
        while let Some(&wait_id) = self.list_lines.get(key).and_then(BTreeSet::first) {
            // Pushed to and emptied (or replaced) again in the same step: nothing to hand out.
            if !matches!(self.list_at(key), Ok(Some(_))) {
                return;
            }
            let waiter = self.remove_list_waiter(wait_id);
            let reply = match &waiter.to {
                // The destination became another type while it waited: the element stays, the
                // waiter gets the error its command would have got.
                Some((destination, _)) if self.list_at(destination).is_err() => CoreError::WrongKind.into(),
                to => self.pop_for(key, waiter.from, to.as_ref()),
            };
            fx.push(Effect::ListWaitDone { session: waiter.session, wait_id, reply });
        }
    }

    pub(crate) fn list_len(&self, key: &str, now: Timestamp) -> Result<Reply, CoreError> {
        Ok(Reply::Int(self.live_list(key, now)?.map_or(0, length)))
    }

    pub(crate) fn list_range(
        &self,
        key: &str,
        start: i64,
        stop: i64,
        now: Timestamp,
    ) -> Result<Reply, CoreError> {
        let Some(l) = self.live_list(key, now)? else { return Ok(Reply::Array(Vec::new())) };
        let items = match range(l.len(), start, stop) {
            Some((first, last)) => l.range(first..=last).cloned().map(Reply::Bytes).collect(),
            None => Vec::new(),
        };
        Ok(Reply::Array(items))
    }

    pub(crate) fn list_index(&self, key: &str, at: i64, now: Timestamp) -> Result<Reply, CoreError> {
        let element = self.live_list(key, now)?.and_then(|l| index(l.len(), at).map(|i| l[i].clone()));
        Ok(element.map_or(Reply::Nil, Reply::Bytes))
    }

    /// `LPOS`: the indexes (from the head) of the matches, skipping the first `|rank| - 1`,
    /// looking at no more than `max_len` elements from the end `rank`'s sign names.
    pub(crate) fn list_pos(
        &self,
        key: &str,
        element: &Bytes,
        rank: i64,
        count: Option<u64>,
        max_len: u64,
        now: Timestamp,
    ) -> Result<Reply, CoreError> {
        if rank == 0 {
            return Err(CoreError::InvalidArgument(
                "RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use \
                 negative to start from the end of the list"
                    .into(),
            ));
        }
        let l = self.live_list(key, now)?;
        let looked = match max_len {
            0 => usize::MAX,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let wanted = match count {
            None => 1,
            Some(0) => usize::MAX,
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let skip = usize::try_from(rank.unsigned_abs() - 1).unwrap_or(usize::MAX);
        let matches: Vec<i64> = match l {
            None => Vec::new(),
            Some(l) => {
                let indexed = l.iter().enumerate();
                let candidates: Box<dyn Iterator<Item = (usize, &Bytes)>> =
                    if rank > 0 { Box::new(indexed) } else { Box::new(indexed.rev()) };
                candidates
                    .take(looked)
                    .filter(|(_, e)| *e == element)
                    .skip(skip)
                    .take(wanted)
                    .map(|(i, _)| i64::try_from(i).unwrap_or(i64::MAX))
                    .collect()
            }
        };
        Ok(match count {
            None => matches.first().map_or(Reply::Nil, |&i| Reply::Int(i)),
            Some(_) => Reply::Array(matches.into_iter().map(Reply::Int).collect()),
        })
    }

    /// Rebuilds what a snapshot leaves out about list waits: the lines, the wait targets, the
    /// sessions' waits and the deadline timers.
    pub(crate) fn rebuild_list_indexes(&mut self, timers: &mut TimerList) -> Result<(), String> {
        for (&wait_id, w) in &self.list_waits {
            for key in &w.keys {
                self.list_lines.entry(key.clone()).or_default().insert(wait_id);
            }
            self.waits.insert(wait_id, WaitTarget::List);
            Session::restored(&mut self.sessions, w.session)?.waits.insert(wait_id);
            if let Some(at) = w.deadline {
                timers.push((at, Timer::WaitDeadline { wait_id }));
            }
        }
        Ok(())
    }

    pub(crate) fn check_list_waits(&self) -> Result<(), String> {
        ensure!(self.ready_lists.is_empty(), "lists left to serve between steps: {:?}", self.ready_lists);
        for (wait_id, w) in &self.list_waits {
            ensure!(self.waits.get(wait_id) == Some(&WaitTarget::List), "list wait {wait_id}: not in waits");
            ensure!(
                self.sessions.get(&w.session).is_some_and(|s| s.waits.contains(wait_id)),
                "list wait {wait_id}: its session {} does not list it",
                w.session
            );
            ensure!(!w.keys.is_empty(), "list wait {wait_id}: no keys");
            for key in &w.keys {
                ensure!(
                    self.list_lines.get(key).is_some_and(|line| line.contains(wait_id)),
                    "list wait {wait_id}: not in the line of {key}"
                );
                ensure!(
                    !matches!(self.list_at(key), Ok(Some(_))),
                    "list wait {wait_id}: waits on {key}, which holds elements"
                );
            }
            if let Some(at) = w.deadline {
                ensure!(
                    self.timers.contains(at, &Timer::WaitDeadline { wait_id: *wait_id }),
                    "list wait {wait_id}: no timer"
                );
            }
        }
        for (key, line) in &self.list_lines {
            ensure!(!line.is_empty(), "{key}: an empty line is kept");
            for wait_id in line {
                ensure!(
                    self.list_waits.get(wait_id).is_some_and(|w| w.keys.contains(key)),
                    "{key}: line names wait {wait_id}, which does not wait on it"
                );
            }
        }
        let targets = self.waits.values().filter(|t| **t == WaitTarget::List).count();
        ensure!(
            targets == self.list_waits.len(),
            "{targets} list wait targets, {} list waits",
            self.list_waits.len()
        );
        Ok(())
    }
}
