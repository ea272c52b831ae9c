//! Redis hashes: a key holding fields and their values (Redisson keeps its locks in one, and
//! lock libraries keep owner records in them).
//!
//! A hash is a [`Value::Hash`] in the one keyspace, so `EXPIRE`, `DEL`, `TYPE`, `RENAME` and
//! `WATCH` treat it like any key. It is created by its first field and deleted with its last
//! ([`State::update_key`] does that). Fields are kept in byte order, so `HGETALL` answers the
//! same on every node. Changes go through `put_key` / `update_key`, which keep the byte count
//! (fields and values count toward `--max-memory`) and stamp the key's version.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::decimal;
use crate::glob::glob_match;
use crate::kv::{KvEntry, Value, float_error};
use crate::{CoreError, Reply, State, Timestamp};

/// A hash's fields, or Redis's WRONGTYPE error.
fn fields(entry: &KvEntry) -> Result<&BTreeMap<Bytes, Bytes>, CoreError> {
    match &entry.value {
        Value::Hash(h) => Ok(h),
        _ => Err(CoreError::WrongKind),
    }
}

/// The bytes a field and its value add to the hash.
fn weight(field: &Bytes, value: &Bytes) -> i64 {
    (field.len() + value.len()) as i64
}

/// Sets a field; returns the bytes the hash gained (negative: lost).
fn insert(hash: &mut BTreeMap<Bytes, Bytes>, field: Bytes, value: Bytes) -> i64 {
    let (field_len, value_len) = (field.len() as i64, value.len() as i64);
    match hash.insert(field, value) {
        Some(old) => value_len - old.len() as i64,
        None => field_len + value_len,
    }
}

impl State {
    /// `HSET key field value [field value ...]` → the number of fields added; with `nx`
    /// (`HSETNX`, one pair) 1 when set, 0 when the field existed.
    pub(crate) fn hset(
        &mut self,
        key: String,
        pairs: Vec<(Bytes, Bytes)>,
        nx: bool,
    ) -> Result<Reply, CoreError> {
        match self.keys.get(&key) {
            None => {
                let hash: BTreeMap<Bytes, Bytes> = pairs.into_iter().collect();
                let added = hash.len() as i64;
                self.put_key(key, Value::Hash(hash), None);
                Ok(Reply::Int(added))
            }
            Some(entry) => {
                let hash = fields(entry)?;
                if nx && pairs.iter().any(|(field, _)| hash.contains_key(field)) {
                    return Ok(Reply::Int(0));
                }
                let added = self.update_hash(&key, |hash| {
                    let (mut added, mut delta) = (0, 0);
                    for (field, value) in pairs {
                        let before = hash.len();
                        delta += insert(hash, field, value);
                        added += (hash.len() - before) as i64;
                    }
                    (added, delta)
                });
                Ok(Reply::Int(added))
            }
        }
    }

    /// `HDEL key field [field ...]` → how many fields were removed.
    pub(crate) fn hdel(&mut self, key: &str, remove: &[Bytes]) -> Result<Reply, CoreError> {
        let Some(entry) = self.keys.get(key) else { return Ok(Reply::Int(0)) };
        let hash = fields(entry)?;
        if !remove.iter().any(|field| hash.contains_key(field)) {
            return Ok(Reply::Int(0));
        }
        let removed = self.update_hash(key, |hash| {
            let (mut removed, mut delta) = (0, 0);
            for field in remove {
                if let Some((field, value)) = hash.remove_entry(field) {
                    removed += 1;
                    delta -= weight(&field, &value);
                }
            }
            (removed, delta)
        });
        Ok(Reply::Int(removed))
    }

    /// `HINCRBY key field delta` → the new value. A missing field counts as 0.
    pub(crate) fn hincr_by(&mut self, key: String, field: Bytes, delta: i64) -> Result<Reply, CoreError> {
        let current = self.hash_field(&key, &field)?;
        let current = match current {
            None => 0,
            Some(v) => std::str::from_utf8(&v)
                .ok()
                .and_then(crate::kv::parse_integer)
                .ok_or_else(|| CoreError::InvalidArgument("hash value is not an integer".into()))?,
        };
        let value = current.checked_add(delta).ok_or(CoreError::Overflow)?;
        self.set_field(key, field, Bytes::from(value.to_string()));
        Ok(Reply::Int(value))
    }

    /// `HINCRBYFLOAT key field delta` → the new value, written as `INCRBYFLOAT` writes it.
    pub(crate) fn hincr_by_float(
        &mut self,
        key: String,
        field: Bytes,
        delta: &str,
    ) -> Result<Reply, CoreError> {
        let current = self.hash_field(&key, &field)?.unwrap_or_else(|| Bytes::from_static(b"0"));
        let sum = decimal::add(&current, delta.as_bytes())
            .map_err(|e| float_error(e, "hash value is not a float"))?;
        let sum = Bytes::from(sum);
        self.set_field(key, field, sum.clone());
        Ok(Reply::Bytes(sum))
    }

    /// A field's value in a stored hash (nil when the key or the field is missing), for the
    /// read-modify-write commands.
    fn hash_field(&self, key: &str, field: &Bytes) -> Result<Option<Bytes>, CoreError> {
        match self.keys.get(key) {
            None => Ok(None),
            Some(entry) => Ok(fields(entry)?.get(field).cloned()),
        }
    }

    /// Sets one field of a hash that is missing or known to be a hash.
    fn set_field(&mut self, key: String, field: Bytes, value: Bytes) {
        if self.keys.contains_key(&key) {
            self.update_hash(&key, |hash| ((), insert(hash, field, value)));
        } else {
            self.put_key(key, Value::Hash(BTreeMap::from([(field, value)])), None);
        }
    }

    /// [`State::update_key`] for a key known to hold a hash.
    fn update_hash<R: Default>(
        &mut self,
        key: &str,
        f: impl FnOnce(&mut BTreeMap<Bytes, Bytes>) -> (R, i64),
    ) -> R {
        self.update_key(key, |value| match value {
            Value::Hash(hash) => f(hash),
            _ => (R::default(), 0),
        })
        .unwrap_or_default()
    }

    pub(crate) fn hget(&self, key: &str, field: &Bytes, now: Timestamp) -> Result<Reply, CoreError> {
        let value = self.live_hash(key, now)?.and_then(|h| h.get(field));
        Ok(value.map_or(Reply::Nil, |v| Reply::Bytes(v.clone())))
    }

    pub(crate) fn hmget(&self, key: &str, wanted: &[Bytes], now: Timestamp) -> Result<Reply, CoreError> {
        let hash = self.live_hash(key, now)?;
        let value =
            |field: &Bytes| hash.and_then(|h| h.get(field)).map_or(Reply::Nil, |v| Reply::Bytes(v.clone()));
        Ok(Reply::Array(wanted.iter().map(value).collect()))
    }

    pub(crate) fn hexists(&self, key: &str, field: &Bytes, now: Timestamp) -> Result<Reply, CoreError> {
        let found = self.live_hash(key, now)?.is_some_and(|h| h.contains_key(field));
        Ok(Reply::Int(i64::from(found)))
    }

    /// `HGETALL` (fields and values), `HKEYS` (fields), `HVALS` (values), in field order.
    pub(crate) fn hgetall(
        &self,
        key: &str,
        with_fields: bool,
        with_values: bool,
        now: Timestamp,
    ) -> Result<Reply, CoreError> {
        let mut out = Vec::new();
        for (field, value) in self.live_hash(key, now)?.into_iter().flatten() {
            if with_fields {
                out.push(Reply::Bytes(field.clone()));
            }
            if with_values {
                out.push(Reply::Bytes(value.clone()));
            }
        }
        Ok(Reply::Array(out))
    }

    pub(crate) fn hlen(&self, key: &str, now: Timestamp) -> Result<Reply, CoreError> {
        Ok(Reply::Int(self.live_hash(key, now)?.map_or(0, |h| h.len() as i64)))
    }

    pub(crate) fn hstrlen(&self, key: &str, field: &Bytes, now: Timestamp) -> Result<Reply, CoreError> {
        let len = self.live_hash(key, now)?.and_then(|h| h.get(field)).map_or(0, Bytes::len);
        Ok(Reply::Int(len as i64))
    }

    /// `HSCAN key cursor [MATCH pattern]`: every matching field and its value in one batch,
    /// with the cursor 0 that ends the scan. Redis answers the same way for hashes small enough
    /// to be a listpack, which is what lock libraries keep; a large hash comes whole too, which
    /// Redis's guarantee allows.
    pub(crate) fn hscan(
        &self,
        key: &str,
        pattern: Option<&[u8]>,
        now: Timestamp,
    ) -> Result<Reply, CoreError> {
        let mut out = Vec::new();
        for (field, value) in self.live_hash(key, now)?.into_iter().flatten() {
            if pattern.is_none_or(|p| glob_match(p, field, false)) {
                out.push(Reply::Bytes(field.clone()));
                out.push(Reply::Bytes(value.clone()));
            }
        }
        Ok(Reply::Array(vec![Reply::Bytes(Bytes::from_static(b"0")), Reply::Array(out)]))
    }

    /// The hash a reader at `now` sees: `None` when the key is missing, WRONGTYPE when it is
    /// not a hash.
    fn live_hash(&self, key: &str, now: Timestamp) -> Result<Option<&BTreeMap<Bytes, Bytes>>, CoreError> {
        self.live_key(key, now).map(fields).transpose()
    }
}
