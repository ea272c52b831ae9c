//! Redis-style keys: one keyspace of typed values (strings, hashes, lists) with Redis's semantics
//! for every option, so the classic `SET key value NX PX ms` lock, counters, and the hashes and
//! lists that Redis lock libraries keep work unchanged.
//!
//! Every change to a key goes through [`State::put_key`], [`State::take_key`] or
//! [`State::update_key`]: they keep the byte count that memory limits read (`key_bytes`) and stamp
//! the key's `version` (what `WATCH` compares); [`State::set_key_expiry`] keeps its timer.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::snapshot::TimerList;
use crate::timer::Timer;
use crate::{
    CoreError, ExpireCondition, Fence, MAX_DURATION, Reply, SetCondition, SetExpiry, SetKey, State,
    Timestamp, ensure,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KvEntry {
    pub(crate) value: Value,
    pub(crate) expires_at: Option<Timestamp>,
    /// The log index of the entry that last changed the key (its value or its TTL): `WATCH`
    /// remembers it and `EXEC` compares. A key written again gets a higher one, even after a
    /// delete, because indexes only grow.
    pub(crate) version: u64,
}

/// What a key holds: Redis's types that lock and queue libraries use. An empty hash or list is
/// never stored: the key goes when its last field or element does, as in Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Value {
    Str(Bytes),
    Hash(BTreeMap<Bytes, Bytes>),
    List(VecDeque<Bytes>),
}

impl Value {
    /// The bytes the value holds, for memory limits: a string's length; a hash's fields and
    /// values; a list's elements. O(size) for hashes and lists: changes in place report their own
    /// difference instead (see [`State::update_key`]).
    pub(crate) fn weight(&self) -> u64 {
        match self {
            Value::Str(v) => v.len() as u64,
            Value::Hash(h) => h.iter().map(|(f, v)| (f.len() + v.len()) as u64).sum(),
            Value::List(l) => l.iter().map(|e| e.len() as u64).sum(),
        }
    }

    /// Redis's `TYPE` name.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Hash(_) => "hash",
            Value::List(_) => "list",
        }
    }

    fn is_empty_collection(&self) -> bool {
        match self {
            Value::Str(_) => false,
            Value::Hash(h) => h.is_empty(),
            Value::List(l) => l.is_empty(),
        }
    }
}

/// A string value, or Redis's WRONGTYPE error.
pub(crate) fn string_value(entry: &KvEntry) -> Result<&Bytes, CoreError> {
    match &entry.value {
        Value::Str(v) => Ok(v),
        _ => Err(CoreError::WrongKind),
    }
}

impl State {
    pub(crate) fn set(&mut self, req: SetKey) -> Result<Reply, CoreError> {
        let SetKey { key, value, condition, expiry, get, fence } = req;
        let new_expiry = match expiry {
            SetExpiry::In(ms) => Some(self.deadline(ms).map_err(|_| invalid_expire("set"))?),
            SetExpiry::None | SetExpiry::KeepTtl => None,
        };
        self.check_fence(fence.as_ref())?;
        let old = self.keys.get(&key);
        // SET replaces a value of any type, but `GET` asks for a string.
        let old_value = match old {
            Some(e) if get => Some(string_value(e)?.clone()),
            _ => None,
        };
        let proceed = match condition {
            SetCondition::Always => true,
            SetCondition::Nx => old.is_none(),
            SetCondition::Xx => old.is_some(),
        };
        let reply = |set: bool| match (get, old_value) {
            (true, Some(v)) => Reply::Bytes(v),
            (true, None) => Reply::Nil,
            (false, _) if set => Reply::Ok,
            (false, _) => Reply::Nil,
        };
        if !proceed {
            return Ok(reply(false));
        }
        let old_expiry = old.and_then(|e| e.expires_at);
        let expires_at = if expiry == SetExpiry::KeepTtl { old_expiry } else { new_expiry };
        self.set_key_expiry(&key, old_expiry, expires_at);
        self.put_key(key, Value::Str(value), expires_at);
        Ok(reply(true))
    }

    pub(crate) fn del(&mut self, keys: &[String], fence: Option<&Fence>) -> Result<Reply, CoreError> {
        self.check_fence(fence)?;
        let mut removed = 0;
        for key in keys {
            if self.delete_key(key).is_some() {
                removed += 1;
            }
        }
        Ok(Reply::Int(removed))
    }

    /// `PEXPIRE key ttl [NX|XX|GT|LT]`: 1 when the TTL was set (or the key deleted), else 0.
    pub(crate) fn expire(&mut self, key: &str, ttl: i64, condition: ExpireCondition) -> Reply {
        let Some(entry) = self.keys.get(key) else { return Reply::Int(0) };
        let current = entry.expires_at;
        // A TTL of zero or less removes the key at once, as Redis does.
        let new = u64::try_from(ttl).ok().filter(|&t| t > 0).map(|t| self.clock + t.min(MAX_DURATION));
        let allowed = match condition {
            ExpireCondition::Always => true,
            ExpireCondition::Nx => current.is_none(),
            ExpireCondition::Xx => current.is_some(),
            // No TTL counts as infinite.
            ExpireCondition::Gt => current.is_some_and(|c| new.unwrap_or(0) > c),
            ExpireCondition::Lt => current.is_none_or(|c| new.unwrap_or(0) < c),
        };
        if !allowed {
            return Reply::Int(0);
        }
        match new {
            Some(at) => {
                self.set_key_expiry(key, current, Some(at));
                let version = self.applied_index;
                let entry = self.keys.get_mut(key).expect("checked above");
                entry.expires_at = Some(at);
                entry.version = version;
            }
            None => {
                self.delete_key(key);
            }
        }
        Reply::Int(1)
    }

    pub(crate) fn incr_by(&mut self, key: &str, delta: i64) -> Result<Reply, CoreError> {
        let entry = self.keys.get(key);
        let current = match entry {
            None => 0,
            Some(e) => std::str::from_utf8(string_value(e)?)
                .ok()
                .filter(|s| is_canonical_integer(s))
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or(CoreError::NotInteger)?,
        };
        let value = current.checked_add(delta).ok_or(CoreError::Overflow)?;
        // INCR keeps the key's TTL.
        let expires_at = entry.and_then(|e| e.expires_at);
        self.put_key(key.to_owned(), Value::Str(Bytes::from(value.to_string())), expires_at);
        Ok(Reply::Int(value))
    }

    pub(crate) fn get(&self, key: &str, now: Timestamp) -> Result<Reply, CoreError> {
        match self.live_key(key, now) {
            Some(e) => Ok(Reply::Bytes(string_value(e)?.clone())),
            None => Ok(Reply::Nil),
        }
    }

    pub(crate) fn exists(&self, keys: &[String], now: Timestamp) -> Reply {
        Reply::Int(keys.iter().filter(|k| self.live_key(k, now).is_some()).count() as i64)
    }

    /// Remaining TTL in ms, -1 without one, -2 when the key does not exist.
    pub(crate) fn pttl(&self, key: &str, now: Timestamp) -> i64 {
        match self.live_key(key, now) {
            None => -2,
            Some(KvEntry { expires_at: None, .. }) => -1,
            Some(KvEntry { expires_at: Some(at), .. }) => (at - now) as i64,
        }
    }

    /// Stores a key (replacing whatever it held), keeping the byte count that memory limits
    /// read and stamping its version. The caller has moved its expiry timer
    /// ([`State::set_key_expiry`]) to `expires_at`.
    pub(crate) fn put_key(&mut self, key: String, value: Value, expires_at: Option<Timestamp>) {
        let (key_len, value_len) = (key.len() as u64, value.weight());
        let entry = KvEntry { value, expires_at, version: self.applied_index };
        match self.keys.insert(key, entry) {
            Some(old) => self.key_bytes = self.key_bytes - old.value.weight() + value_len,
            None => self.key_bytes += key_len + value_len,
        }
    }

    /// Removes a key, keeping the byte count. The caller removes its expiry timer.
    pub(crate) fn take_key(&mut self, key: &str) -> Option<KvEntry> {
        let entry = self.keys.remove(key)?;
        self.key_bytes -= key.len() as u64 + entry.value.weight();
        Some(entry)
    }

    /// Removes a key and its expiry timer: `DEL`'s step for one key.
    pub(crate) fn delete_key(&mut self, key: &str) -> Option<KvEntry> {
        let entry = self.take_key(key)?;
        self.set_key_expiry(key, entry.expires_at, None);
        Some(entry)
    }

    /// Changes a stored key's value in place. `f` returns its result and how many bytes the
    /// value gained (negative: lost), so a hash or list is never weighed whole. A hash or list
    /// left empty is deleted with its timer, as Redis deletes it. `None` when the key is absent.
    #[allow(dead_code)] // the first users are the hash and list commands
    pub(crate) fn update_key<R>(&mut self, key: &str, f: impl FnOnce(&mut Value) -> (R, i64)) -> Option<R> {
        let version = self.applied_index;
        let entry = self.keys.get_mut(key)?;
        let (result, delta) = f(&mut entry.value);
        entry.version = version;
        let empty = entry.value.is_empty_collection();
        self.key_bytes = self.key_bytes.saturating_add_signed(delta);
        if empty {
            self.delete_key(key);
        }
        Some(result)
    }

    /// The key as a reader at `now` sees it: a key past its TTL whose timer has not fired yet is
    /// gone. Inside `apply` every due timer has fired, so this is simply the stored key.
    pub(crate) fn live_key(&self, key: &str, now: Timestamp) -> Option<&KvEntry> {
        self.keys.get(key).filter(|e| e.expires_at.is_none_or(|at| at > now))
    }

    /// The version `WATCH` remembers: the index of the key's last change, or 0 when it does not
    /// exist (a key created since then has a higher one).
    #[allow(dead_code)] // the first user is WATCH
    pub(crate) fn key_version(&self, key: &str, now: Timestamp) -> u64 {
        self.live_key(key, now.max(self.clock)).map_or(0, |e| e.version)
    }

    /// Puts a key back exactly as it was (`None`: absent), version included: how a script over
    /// its budget undoes its key writes. Timers and byte counts follow.
    pub(crate) fn restore_key(&mut self, key: &str, entry: Option<KvEntry>) {
        self.delete_key(key);
        if let Some(entry) = entry {
            self.set_key_expiry(key, None, entry.expires_at);
            self.key_bytes += key.len() as u64 + entry.value.weight();
            self.keys.insert(key.to_owned(), entry);
        }
    }

    pub(crate) fn key_expired(&mut self, key: &str) {
        self.delete_key(key);
    }

    /// Moves, adds or removes a key's expiry timer.
    pub(crate) fn set_key_expiry(&mut self, key: &str, old: Option<Timestamp>, new: Option<Timestamp>) {
        let timer = || Timer::KeyExpiry { key: key.to_owned() };
        match (old, new) {
            (Some(old), Some(new)) => self.timers.reschedule(old, new, timer()),
            (Some(old), None) => self.timers.remove(old, timer()),
            (None, Some(new)) => self.timers.add(new, timer()),
            (None, None) => {}
        }
    }

    /// Rebuilds what a snapshot leaves out about keys (see `snapshot.rs`): the byte count and
    /// the expiry timers.
    pub(crate) fn rebuild_key_indexes(&mut self, timers: &mut TimerList) {
        for (key, entry) in &self.keys {
            self.key_bytes += key.len() as u64 + entry.value.weight();
            if let Some(at) = entry.expires_at {
                timers.push((at, Timer::KeyExpiry { key: key.clone() }));
            }
        }
    }

    pub(crate) fn check_keys(&self) -> Result<(), String> {
        let bytes: u64 = self.keys.iter().map(|(k, e)| k.len() as u64 + e.value.weight()).sum();
        ensure!(bytes == self.key_bytes, "key bytes {} counted, {bytes} stored", self.key_bytes);
        for (key, e) in &self.keys {
            ensure!(!e.value.is_empty_collection(), "key {key}: an empty {} is stored", e.value.type_name());
            ensure!(e.version <= self.applied_index, "key {key}: version {} is ahead of the log", e.version);
            if let Some(at) = e.expires_at {
                ensure!(
                    self.timers.contains(at, &Timer::KeyExpiry { key: key.clone() }),
                    "key {key}: no timer"
                );
            }
        }
        Ok(())
    }
}

/// Redis accepts only plain decimal integers: no sign on zero, no leading zeros, no spaces.
fn is_canonical_integer(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" && s == "0" || !digits.starts_with('0'))
}

fn invalid_expire(command: &str) -> CoreError {
    CoreError::InvalidArgument(format!("invalid expire time in '{command}' command"))
}
