//! Redis-style keys: one keyspace of typed values (strings, hashes, lists) with Redis's semantics
//! for every option, so the classic `SET key value NX PX ms` lock, counters, and the hashes and
//! lists that Redis lock libraries keep work unchanged.
//!
//! Every change to a key goes through [`State::put_key`], [`State::take_key`] or
//! [`State::update_key`]: they keep the byte count that memory limits read (`key_bytes`) and the
//! order `SCAN` walks (`scan_order`), and stamp the key's `version` (what `WATCH` compares);
//! [`State::set_key_expiry`] keeps its timer.
//!
//! Reads answer in an order that is the same on every node (they also run inside scripts):
//! `KEYS` in key order, `SCAN` in the order of a fixed hash of the key, whose value is the cursor
//! (see [`State::scan`]), hash fields in byte order.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::decimal::{self, FloatError};
use crate::glob::glob_match;
use crate::snapshot::TimerList;
use crate::timer::Timer;
use crate::{
    CoreError, ExpireCondition, Fence, KeyExpiry, MAX_DURATION, ObjectField, Reply, SetCondition, SetExpiry,
    SetKey, State, Timestamp, ensure,
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

    /// What Redis 7's `OBJECT ENCODING` would answer for this value with its default settings:
    /// strings are `int` (an integer in canonical form), `embstr` (up to 44 bytes) or `raw`;
    /// hashes `listpack` up to 128 fields of at most 64 bytes, else `hashtable`; lists
    /// `listpack` up to 8 KiB, else `quicklist`. Redis keeps an encoding a value has outgrown
    /// even after it shrinks again; Turnstile stores no encoding, so it answers from the value
    /// as it is now.
    pub(crate) fn encoding(&self) -> &'static str {
        match self {
            Value::Str(v) => {
                let int = v.len() <= 20
                    && std::str::from_utf8(v)
                        .is_ok_and(|s| is_canonical_integer(s) && s.parse::<i64>().is_ok());
                if int {
                    "int"
                } else if v.len() <= 44 {
                    "embstr"
                } else {
                    "raw"
                }
            }
            Value::Hash(h) if h.len() <= 128 && h.iter().all(|(f, v)| f.len() <= 64 && v.len() <= 64) => {
                "listpack"
            }
            Value::Hash(_) => "hashtable",
            Value::List(_) if self.weight() <= 8 * 1024 => "listpack",
            Value::List(_) => "quicklist",
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
        // A TTL of zero or less removes the key at once, as Redis does.
        let at = u64::try_from(ttl).ok().filter(|&t| t > 0).map(|t| self.clock + t.min(MAX_DURATION));
        self.expire_when(key, at, condition)
    }

    /// `PEXPIREAT key ms [NX|XX|GT|LT]`: as `PEXPIRE`, at a time; one not after the clock
    /// deletes the key.
    pub(crate) fn expire_at(&mut self, key: &str, at: i64, condition: ExpireCondition) -> Reply {
        // A time is kept as given (a client's `EXPIREAT` of 2100 reads back as 2100): unlike a
        // TTL, it cannot overflow when added to the clock.
        let at = u64::try_from(at).ok().filter(|&at| at > self.clock);
        self.expire_when(key, at, condition)
    }

    /// Sets a key's expiry to `new` (`None`: already past, so the key goes) if `condition`
    /// allows: `Int(1)`, else `Int(0)`.
    fn expire_when(&mut self, key: &str, new: Option<Timestamp>, condition: ExpireCondition) -> Reply {
        let Some(entry) = self.keys.get(key) else { return Reply::Int(0) };
        let current = entry.expires_at;
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
            Some(at) => self.retime_key(key, Some(at)),
            None => {
                self.delete_key(key);
            }
        }
        Reply::Int(1)
    }

    /// Gives a stored key a new expiry (`None`: none), moving its timer and stamping its version.
    fn retime_key(&mut self, key: &str, expires_at: Option<Timestamp>) {
        let version = self.applied_index;
        let Some(entry) = self.keys.get_mut(key) else { return };
        let old = std::mem::replace(&mut entry.expires_at, expires_at);
        entry.version = version;
        self.set_key_expiry(key, old, expires_at);
    }

    /// `PERSIST key`: 1 when a TTL was removed, 0 when the key is missing or had none.
    pub(crate) fn persist(&mut self, key: &str) -> Reply {
        match self.keys.get(key) {
            Some(KvEntry { expires_at: Some(_), .. }) => {
                self.retime_key(key, None);
                Reply::Int(1)
            }
            _ => Reply::Int(0),
        }
    }

    /// `GETDEL key`: the string, then the key is gone.
    pub(crate) fn get_del(&mut self, key: &str) -> Result<Reply, CoreError> {
        let Some(entry) = self.keys.get(key) else { return Ok(Reply::Nil) };
        let value = string_value(entry)?.clone();
        self.delete_key(key);
        Ok(Reply::Bytes(value))
    }

    /// `GETEX key [EX|PX|EXAT|PXAT|PERSIST]`: the string, its TTL changed.
    pub(crate) fn get_ex(&mut self, key: &str, expiry: Option<KeyExpiry>) -> Result<Reply, CoreError> {
        let Some(entry) = self.keys.get(key) else { return Ok(Reply::Nil) };
        let value = string_value(entry)?.clone();
        let had_ttl = entry.expires_at.is_some();
        match expiry {
            None => {}
            Some(KeyExpiry::Persist) if had_ttl => self.retime_key(key, None),
            Some(KeyExpiry::Persist) => {}
            Some(KeyExpiry::In(ms)) => {
                let at = self.clock + ms.clamp(1, MAX_DURATION);
                self.retime_key(key, Some(at));
            }
            Some(KeyExpiry::At(at)) if at <= self.clock => {
                self.delete_key(key);
            }
            Some(KeyExpiry::At(at)) => self.retime_key(key, Some(at)),
        }
        Ok(Reply::Bytes(value))
    }

    /// `MSET` / `MSETNX` (`nx`): every key set as `SET` sets it, or (`MSETNX`) none when one
    /// exists.
    pub(crate) fn mset(&mut self, pairs: Vec<(String, Bytes)>, nx: bool) -> Reply {
        if nx && pairs.iter().any(|(key, _)| self.keys.contains_key(key)) {
            return Reply::Int(0);
        }
        for (key, value) in pairs {
            let old_expiry = self.keys.get(&key).and_then(|e| e.expires_at);
            self.set_key_expiry(&key, old_expiry, None);
            self.put_key(key, Value::Str(value), None);
        }
        if nx { Reply::Int(1) } else { Reply::Ok }
    }

    /// `APPEND key value`: the new length. A missing key is created; the TTL is kept.
    pub(crate) fn append(&mut self, key: String, value: &[u8]) -> Result<Reply, CoreError> {
        let (mut joined, expires_at) = match self.keys.get(&key) {
            Some(e) => (string_value(e)?.to_vec(), e.expires_at),
            None => (Vec::new(), None),
        };
        joined.extend_from_slice(value);
        let len = joined.len() as i64;
        self.put_key(key, Value::Str(Bytes::from(joined)), expires_at);
        Ok(Reply::Int(len))
    }

    /// `INCRBYFLOAT key delta`: the new value, written as Redis writes it (see `decimal.rs`).
    /// The TTL is kept.
    pub(crate) fn incr_by_float(&mut self, key: String, delta: &str) -> Result<Reply, CoreError> {
        let (current, expires_at) = match self.keys.get(&key) {
            Some(e) => (string_value(e)?.clone(), e.expires_at),
            None => (Bytes::from_static(b"0"), None),
        };
        let sum = decimal::add(&current, delta.as_bytes())
            .map_err(|e| float_error(e, "value is not a valid float"))?;
        self.put_key(key, Value::Str(Bytes::from(sum.clone())), expires_at);
        Ok(Reply::Bytes(Bytes::from(sum)))
    }

    /// `RENAME` / `RENAMENX` (`nx`): the value and its TTL move to `to`, replacing what it held.
    pub(crate) fn rename(&mut self, from: &str, to: String, nx: bool) -> Result<Reply, CoreError> {
        if !self.keys.contains_key(from) {
            return Err(CoreError::InvalidArgument("no such key".into()));
        }
        let done = if nx { Reply::Int(1) } else { Reply::Ok };
        if from == to {
            return Ok(if nx { Reply::Int(0) } else { Reply::Ok });
        }
        if nx && self.keys.contains_key(&to) {
            return Ok(Reply::Int(0));
        }
        let entry = self.delete_key(from).expect("checked above");
        self.delete_key(&to);
        self.set_key_expiry(&to, None, entry.expires_at);
        self.put_key(to, entry.value, entry.expires_at);
        Ok(done)
    }

    /// `FLUSHALL`: every key goes (locks, semaphores and queues are not keys).
    pub(crate) fn flush_keys(&mut self) -> Reply {
        let keys: Vec<String> = self.keys.keys().cloned().collect();
        for key in keys {
            self.delete_key(&key);
        }
        Reply::Ok
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

    /// `MGET`: each key's string, nil for a missing key and for one of another type.
    pub(crate) fn mget(&self, keys: &[String], now: Timestamp) -> Reply {
        let value = |key: &String| match self.live_key(key, now).map(|e| &e.value) {
            Some(Value::Str(v)) => Reply::Bytes(v.clone()),
            _ => Reply::Nil,
        };
        Reply::Array(keys.iter().map(value).collect())
    }

    pub(crate) fn strlen(&self, key: &str, now: Timestamp) -> Result<Reply, CoreError> {
        match self.live_key(key, now) {
            Some(e) => Ok(Reply::Int(string_value(e)?.len() as i64)),
            None => Ok(Reply::Int(0)),
        }
    }

    /// `TYPE key`: `string`, `hash`, `list`, or `none`.
    pub(crate) fn key_type(&self, key: &str, now: Timestamp) -> Reply {
        let name = self.live_key(key, now).map_or("none", |e| e.value.type_name());
        Reply::Status(name.to_owned())
    }

    /// `KEYS pattern`: every live key matching it, in key order.
    pub(crate) fn matching_keys(&self, pattern: &[u8], now: Timestamp) -> Reply {
        let names = self
            .keys
            .iter()
            .filter(|(key, e)| {
                e.expires_at.is_none_or(|at| at > now) && glob_match(pattern, key.as_bytes(), false)
            })
            .map(|(key, _)| key.clone())
            .collect();
        Reply::Names(names)
    }

    /// `SCAN cursor [MATCH p] [COUNT n] [TYPE t]`: `[next cursor, keys]`.
    ///
    /// Keys are walked in the order of a hash of their name (FNV-1a, the same on every node
    /// and every release), and the cursor is the hash to go on from: 0 to start, 0 again when the
    /// walk is done. A key present for the whole scan is returned, since it keeps its hash and
    /// the walk never skips a hash; keys added or removed meanwhile may or may not be — Redis's
    /// guarantee. The cursor is a plain number (clients parse it as one), holds no state, and
    /// works on any connection and any node. As in Redis, `COUNT` is the number of keys looked
    /// at (never splitting keys with the same hash), before `MATCH` and `TYPE` filter them, so
    /// a batch may come back empty before the walk is done.
    pub(crate) fn scan(
        &self,
        cursor: u64,
        pattern: Option<&[u8]>,
        count: u64,
        kind: Option<&str>,
        now: Timestamp,
    ) -> Reply {
        let mut last = None;
        let mut next = 0;
        let mut names = Vec::new();
        for (looked, (hash, key)) in (0u64..).zip(self.scan_order.range((cursor, String::new())..)) {
            if looked >= count.max(1) && last != Some(*hash) {
                next = *hash;
                break;
            }
            last = Some(*hash);
            let Some(entry) = self.live_key(key, now) else { continue };
            if pattern.is_none_or(|p| glob_match(p, key.as_bytes(), false))
                && kind.is_none_or(|k| k.eq_ignore_ascii_case(entry.value.type_name()))
            {
                names.push(key.clone());
            }
        }
        Reply::Array(vec![Reply::Bytes(Bytes::from(next.to_string())), Reply::Names(names)])
    }

    /// `DBSIZE`: the live keys.
    pub(crate) fn db_size(&self, now: Timestamp) -> i64 {
        self.keys.values().filter(|e| e.expires_at.is_none_or(|at| at > now)).count() as i64
    }

    /// `OBJECT ... key`: what clients probe, answered as Redis would for the value (nil when
    /// the key is missing).
    pub(crate) fn object(&self, key: &str, field: ObjectField, now: Timestamp) -> Result<Reply, CoreError> {
        let Some(entry) = self.live_key(key, now) else { return Ok(Reply::Nil) };
        match field {
            ObjectField::Encoding => Ok(Reply::Bytes(Bytes::from_static(entry.value.encoding().as_bytes()))),
            ObjectField::RefCount => Ok(Reply::Int(1)),
            ObjectField::IdleTime => Ok(Reply::Int(0)),
            ObjectField::Freq => Err(CoreError::InvalidArgument(
                "An LFU maxmemory policy is not selected, access frequency not tracked. Please note that \
                 when switching between policies at runtime LRU and LFU data will take some time to adjust."
                    .into(),
            )),
        }
    }

    /// When the key expires, ms since the epoch; -1 without a TTL, -2 when it does not exist.
    pub(crate) fn expire_time(&self, key: &str, now: Timestamp) -> i64 {
        match self.live_key(key, now) {
            None => -2,
            Some(KvEntry { expires_at: None, .. }) => -1,
            Some(KvEntry { expires_at: Some(at), .. }) => i64::try_from(*at).unwrap_or(i64::MAX),
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
    /// read and the scan order, and stamping its version. The caller has moved its expiry timer
    /// ([`State::set_key_expiry`]) to `expires_at`.
    pub(crate) fn put_key(&mut self, key: String, value: Value, expires_at: Option<Timestamp>) {
        let (key_len, value_len) = (key.len() as u64, value.weight());
        let entry = KvEntry { value, expires_at, version: self.applied_index };
        let hash = scan_hash(&key);
        match self.keys.insert(key.clone(), entry) {
            Some(old) => self.key_bytes = self.key_bytes - old.value.weight() + value_len,
            None => {
                self.key_bytes += key_len + value_len;
                self.scan_order.insert((hash, key));
            }
        }
    }

    /// Removes a key, keeping the byte count. The caller removes its expiry timer.
    pub(crate) fn take_key(&mut self, key: &str) -> Option<KvEntry> {
        let entry = self.keys.remove(key)?;
        self.key_bytes -= key.len() as u64 + entry.value.weight();
        self.scan_order.remove(&(scan_hash(key), key.to_owned()));
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
    pub fn key_version(&self, key: &str, now: Timestamp) -> u64 {
        self.live_key(key, now.max(self.clock)).map_or(0, |e| e.version)
    }

    /// Puts a key back exactly as it was (`None`: absent), version included: how a script over
    /// its budget undoes its key writes. Timers and byte counts follow.
    pub(crate) fn restore_key(&mut self, key: &str, entry: Option<KvEntry>) {
        self.delete_key(key);
        if let Some(entry) = entry {
            self.set_key_expiry(key, None, entry.expires_at);
            self.key_bytes += key.len() as u64 + entry.value.weight();
            self.scan_order.insert((scan_hash(key), key.to_owned()));
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
            self.scan_order.insert((scan_hash(key), key.clone()));
            if let Some(at) = entry.expires_at {
                timers.push((at, Timer::KeyExpiry { key: key.clone() }));
            }
        }
    }

    pub(crate) fn check_keys(&self) -> Result<(), String> {
        let bytes: u64 = self.keys.iter().map(|(k, e)| k.len() as u64 + e.value.weight()).sum();
        ensure!(bytes == self.key_bytes, "key bytes {} counted, {bytes} stored", self.key_bytes);
        ensure!(
            self.scan_order.len() == self.keys.len()
                && self.scan_order.iter().all(|(h, k)| *h == scan_hash(k) && self.keys.contains_key(k)),
            "the scan order does not list exactly the keys"
        );
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

/// A stored integer as Redis reads one (`INCR`, `HINCRBY`): canonical, and fitting in 64 bits.
pub(crate) fn parse_integer(s: &str) -> Option<i64> {
    if is_canonical_integer(s) { s.parse().ok() } else { None }
}

/// Redis accepts only plain decimal integers: no sign on zero, no leading zeros, no spaces.
fn is_canonical_integer(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" && s == "0" || !digits.starts_with('0'))
}

/// The hash that orders `SCAN`: 64-bit FNV-1a of the key's bytes. Part of the protocol (a
/// client's cursor is one of these), so it must never change.
fn scan_hash(key: &str) -> u64 {
    key.bytes()
        .fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Redis's texts for a float sum refused; `stored` is the one for a stored value that is not a
/// number (it differs between strings and hash fields).
pub(crate) fn float_error(e: FloatError, stored: &str) -> CoreError {
    let text = match e {
        FloatError::Stored => stored,
        FloatError::Increment => "value is not a valid float",
        FloatError::NotFinite => "increment would produce NaN or Infinity",
    };
    CoreError::InvalidArgument(text.into())
}

fn invalid_expire(command: &str) -> CoreError {
    CoreError::InvalidArgument(format!("invalid expire time in '{command}' command"))
}
