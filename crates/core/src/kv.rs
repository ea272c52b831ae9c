//! Redis-style string keys: enough for the classic `SET key value NX PX ms` / `DEL key` lock and
//! for counters, with Redis's semantics for every option.

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
    pub(crate) value: Bytes,
    pub(crate) expires_at: Option<Timestamp>,
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
        let old_value = old.map(|e| e.value.clone());
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
        self.put_key(key, KvEntry { value, expires_at });
        Ok(reply(true))
    }

    pub(crate) fn del(&mut self, keys: &[String], fence: Option<&Fence>) -> Result<Reply, CoreError> {
        self.check_fence(fence)?;
        let mut removed = 0;
        for key in keys {
            if let Some(entry) = self.take_key(key) {
                self.set_key_expiry(key, entry.expires_at, None);
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
                self.keys.get_mut(key).expect("checked above").expires_at = Some(at);
            }
            None => {
                self.take_key(key);
                self.set_key_expiry(key, current, None);
            }
        }
        Reply::Int(1)
    }

    pub(crate) fn incr_by(&mut self, key: &str, delta: i64) -> Result<Reply, CoreError> {
        let entry = self.keys.get(key);
        let current = match entry {
            None => 0,
            Some(e) => std::str::from_utf8(&e.value)
                .ok()
                .filter(|s| is_canonical_integer(s))
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or(CoreError::NotInteger)?,
        };
        let value = current.checked_add(delta).ok_or(CoreError::Overflow)?;
        // INCR keeps the key's TTL.
        let expires_at = entry.and_then(|e| e.expires_at);
        self.put_key(key.to_owned(), KvEntry { value: Bytes::from(value.to_string()), expires_at });
        Ok(Reply::Int(value))
    }

    pub(crate) fn get(&self, key: &str, now: Timestamp) -> Reply {
        match self.live_key(key, now) {
            Some(e) => Reply::Bytes(e.value.clone()),
            None => Reply::Nil,
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

    /// Stores a key, keeping the byte count that memory limits read.
    fn put_key(&mut self, key: String, entry: KvEntry) {
        let (key_len, value_len) = (key.len() as u64, entry.value.len() as u64);
        match self.keys.insert(key, entry) {
            Some(old) => self.key_bytes = self.key_bytes - old.value.len() as u64 + value_len,
            None => self.key_bytes += key_len + value_len,
        }
    }

    fn take_key(&mut self, key: &str) -> Option<KvEntry> {
        let entry = self.keys.remove(key)?;
        self.key_bytes -= (key.len() + entry.value.len()) as u64;
        Some(entry)
    }

    fn live_key(&self, key: &str, now: Timestamp) -> Option<&KvEntry> {
        self.keys.get(key).filter(|e| e.expires_at.is_none_or(|at| at > now))
    }

    pub(crate) fn key_expired(&mut self, key: &str) {
        if let Some(entry) = self.take_key(key) {
            self.set_key_expiry(key, entry.expires_at, None);
        }
    }

    /// Moves, adds or removes a key's expiry timer.
    fn set_key_expiry(&mut self, key: &str, old: Option<Timestamp>, new: Option<Timestamp>) {
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
            self.key_bytes += (key.len() + entry.value.len()) as u64;
            if let Some(at) = entry.expires_at {
                timers.push((at, Timer::KeyExpiry { key: key.clone() }));
            }
        }
    }

    pub(crate) fn check_keys(&self) -> Result<(), String> {
        let bytes: u64 = self.keys.iter().map(|(k, e)| (k.len() + e.value.len()) as u64).sum();
        ensure!(bytes == self.key_bytes, "key bytes {} counted, {bytes} stored", self.key_bytes);
        for (key, e) in &self.keys {
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
