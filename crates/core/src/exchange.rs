//! Exchanges (AMQP 0-9-1): named routers that pick, for a message and its routing key, the
//! queues it is stored in.
//!
//! ```text
//!   Publish { exchange, routing_key } ──► route ──► {queue, queue, …} (each at most once)
//!                                                        │
//!                                                        └──► the same path as a Push, per queue
//!
//!   ""           the default exchange: the queue named by the routing key, if it exists
//!   direct       bindings whose key equals the routing key
//!   fanout       every bound queue
//!   topic        bindings whose pattern matches: '.'-separated words, `*` one word, `#` any number
//! ```
//!
//! The built-ins ("", `amq.direct`, `amq.fanout`, `amq.topic`) always exist and are never stored;
//! bindings to them are. Bindings name queues by name; deleting a queue removes its bindings, and
//! an `auto_delete` exchange goes with its last binding.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{Binding, CoreError, ExchangeDecl, ExchangeKind, QueueId, Reply, SessionId, State, ensure};

/// A declared exchange's kind and flags (its name is its key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Exchange {
    pub(crate) kind: ExchangeKind,
    pub(crate) durable: bool,
    pub(crate) auto_delete: bool,
    pub(crate) internal: bool,
}

/// The default exchange: routes by queue name, takes no bindings.
pub(crate) const DEFAULT_EXCHANGE: &str = "";

/// The built-ins, which exist without being declared, durable and never deleted.
fn builtin(name: &str) -> Option<Exchange> {
    let kind = match name {
        DEFAULT_EXCHANGE | "amq.direct" => ExchangeKind::Direct,
        "amq.fanout" => ExchangeKind::Fanout,
        "amq.topic" => ExchangeKind::Topic,
        _ => return None,
    };
    Some(Exchange { kind, durable: true, auto_delete: false, internal: false })
}

/// Every exchange and binding. `by_queue` is an index of `bindings`, rebuilt on restore.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Exchanges {
    /// Declared exchanges, built-ins excluded.
    declared: BTreeMap<String, Exchange>,
    /// Exchange → its bindings as (routing key, queue): a direct route is one range.
    bindings: BTreeMap<String, BTreeSet<(String, String)>>,
    /// Queue → its bindings as (exchange, routing key).
    #[serde(skip)]
    by_queue: BTreeMap<String, BTreeSet<(String, String)>>,
}

impl Exchanges {
    pub(crate) fn get(&self, name: &str) -> Option<Exchange> {
        builtin(name).or_else(|| self.declared.get(name).copied())
    }

    /// Rebuilds `by_queue` from `bindings` (after a restore).
    pub(crate) fn rebuild_index(&mut self) {
        for (exchange, set) in &self.bindings {
            for (key, queue) in set {
                self.by_queue.entry(queue.clone()).or_default().insert((exchange.clone(), key.clone()));
            }
        }
    }

    fn bind(&mut self, b: Binding) {
        self.by_queue.entry(b.queue.clone()).or_default().insert((b.exchange.clone(), b.routing_key.clone()));
        self.bindings.entry(b.exchange).or_default().insert((b.routing_key, b.queue));
    }

    /// Removes one binding; deletes its exchange when that was its last and it is `auto_delete`.
    fn unbind(&mut self, exchange: &str, key: &str, queue: &str) {
        let pair = (key.to_owned(), queue.to_owned());
        if let Some(set) = self.bindings.get_mut(exchange) {
            if set.remove(&pair) && set.is_empty() {
                self.bindings.remove(exchange);
                if self.declared.get(exchange).is_some_and(|x| x.auto_delete) {
                    self.declared.remove(exchange);
                }
            }
        }
        if let Some(set) = self.by_queue.get_mut(queue) {
            set.remove(&(exchange.to_owned(), key.to_owned()));
            if set.is_empty() {
                self.by_queue.remove(queue);
            }
        }
    }

    /// Removes every binding of a queue (it is being deleted).
    pub(crate) fn unbind_queue(&mut self, queue: &str) {
        for (exchange, key) in self.by_queue.get(queue).cloned().unwrap_or_default() {
            self.unbind(&exchange, &key, queue);
        }
    }

    /// The names of the queues bound to `exchange` that `key` routes to, each once, sorted.
    /// The default exchange is left to the caller (it needs the queue list).
    fn bound_targets(&self, exchange: &str, kind: ExchangeKind, key: &str) -> BTreeSet<String> {
        let Some(set) = self.bindings.get(exchange) else { return BTreeSet::new() };
        match kind {
            ExchangeKind::Direct => {
                let from = (key.to_owned(), String::new());
                set.range(from..).take_while(|(k, _)| k == key).map(|(_, q)| q.clone()).collect()
            }
            ExchangeKind::Fanout => set.iter().map(|(_, q)| q.clone()).collect(),
            ExchangeKind::Topic => {
                set.iter().filter(|(p, _)| topic_matches(p, key)).map(|(_, q)| q.clone()).collect()
            }
        }
    }
}

/// Whether an AMQP topic pattern matches a routing key. Both are '.'-separated words (an empty
/// word is a word); in the pattern `*` stands for exactly one word and `#` for zero or more.
/// Dynamic programming over (pattern word, key word): O(pattern × key), whatever the `#`s.
pub(crate) fn topic_matches(pattern: &str, key: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    // row[j]: does the pattern from word i on match the key from word j on? Built from the end.
    let mut row = vec![false; k.len() + 1];
    row[k.len()] = true;
    for i in (0..p.len()).rev() {
        let mut next = vec![false; k.len() + 1];
        for j in (0..=k.len()).rev() {
            next[j] = match p[i] {
                "#" => row[j] || (j < k.len() && next[j + 1]),
                "*" => j < k.len() && row[j + 1],
                word => j < k.len() && k[j] == word && row[j + 1],
            };
        }
        row = next;
    }
    row[0]
}

fn default_exchange_refused() -> CoreError {
    CoreError::AccessRefused("operation not permitted on the default exchange".into())
}

fn inequivalent(arg: &str, name: &str, received: impl ToString, current: impl ToString) -> CoreError {
    CoreError::Precondition(format!(
        "inequivalent arg '{arg}' for exchange '{name}' in vhost '/': received '{}' but current is '{}'",
        received.to_string(),
        current.to_string()
    ))
}

impl State {
    pub(crate) fn declare_exchange(&mut self, d: ExchangeDecl) -> Result<Reply, CoreError> {
        if d.name == DEFAULT_EXCHANGE {
            return Err(default_exchange_refused());
        }
        let wanted =
            Exchange { kind: d.kind, durable: d.durable, auto_delete: d.auto_delete, internal: d.internal };
        let Some(current) = self.exchanges.get(&d.name) else {
            if d.name.starts_with("amq.") {
                return Err(CoreError::AccessRefused(format!(
                    "exchange name '{}' contains reserved prefix 'amq.*'",
                    d.name
                )));
            }
            self.exchanges.declared.insert(d.name, wanted);
            return Ok(Reply::Int(1));
        };
        let name = &d.name;
        if current.kind != wanted.kind {
            return Err(inequivalent("type", name, wanted.kind.as_str(), current.kind.as_str()));
        }
        if current.durable != wanted.durable {
            return Err(inequivalent("durable", name, wanted.durable, current.durable));
        }
        if current.auto_delete != wanted.auto_delete {
            return Err(inequivalent("auto_delete", name, wanted.auto_delete, current.auto_delete));
        }
        if current.internal != wanted.internal {
            return Err(inequivalent("internal", name, wanted.internal, current.internal));
        }
        Ok(Reply::Int(0))
    }

    pub(crate) fn delete_exchange(&mut self, name: &str, if_unused: bool) -> Result<Reply, CoreError> {
        if name == DEFAULT_EXCHANGE {
            return Err(default_exchange_refused());
        }
        if builtin(name).is_some() {
            return Err(CoreError::AccessRefused(format!(
                "deletion of system exchange '{name}' in vhost '/' refused"
            )));
        }
        if !self.exchanges.declared.contains_key(name) {
            return Ok(Reply::Int(0));
        }
        let bound: Vec<(String, String)> =
            self.exchanges.bindings.get(name).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        if if_unused && !bound.is_empty() {
            return Err(CoreError::Precondition(format!("exchange '{name}' in vhost '/' in use")));
        }
        for (key, queue) in bound {
            self.exchanges.unbind(name, &key, &queue);
        }
        self.exchanges.declared.remove(name);
        Ok(Reply::Int(1))
    }

    /// The checks `Bind` and `Unbind` share; returns the queue's id.
    fn binding_target(&self, b: &Binding, actor: Option<SessionId>) -> Result<QueueId, CoreError> {
        if b.exchange == DEFAULT_EXCHANGE {
            return Err(default_exchange_refused());
        }
        if self.exchanges.get(&b.exchange).is_none() {
            return Err(CoreError::NoSuchExchange(b.exchange.clone()));
        }
        let qid = self.queue_id(&b.queue)?;
        self.check_exclusive(qid, actor)?;
        Ok(qid)
    }

    pub(crate) fn bind(&mut self, b: Binding, actor: Option<SessionId>) -> Result<Reply, CoreError> {
        self.binding_target(&b, actor)?;
        self.exchanges.bind(b);
        Ok(Reply::Ok)
    }

    pub(crate) fn unbind(&mut self, b: Binding, actor: Option<SessionId>) -> Result<Reply, CoreError> {
        self.binding_target(&b, actor)?;
        self.exchanges.unbind(&b.exchange, &b.routing_key, &b.queue);
        Ok(Reply::Ok)
    }

    /// The queues a message published to `exchange` with `key` goes to, in id order, each once.
    /// `Err` when the exchange does not exist.
    pub(crate) fn route(&self, exchange: &str, key: &str) -> Result<Vec<QueueId>, CoreError> {
        let x = self.exchanges.get(exchange).ok_or_else(|| CoreError::NoSuchExchange(exchange.to_owned()))?;
        let ids: BTreeSet<QueueId> = if exchange == DEFAULT_EXCHANGE {
            self.queue_ids.get(key).copied().into_iter().collect()
        } else {
            let names = self.exchanges.bound_targets(exchange, x.kind, key);
            names.iter().filter_map(|n| self.queue_ids.get(n).copied()).collect()
        };
        Ok(ids.into_iter().collect())
    }

    pub(crate) fn exchange_exists(&self, name: &str) -> Result<Reply, CoreError> {
        match self.exchanges.get(name) {
            Some(_) => Ok(Reply::Ok),
            None => Err(CoreError::NoSuchExchange(name.to_owned())),
        }
    }

    pub(crate) fn check_exchanges(&self) -> Result<(), String> {
        let mut count = 0;
        for (exchange, set) in &self.exchanges.bindings {
            ensure!(!set.is_empty(), "exchange {exchange}: empty binding set kept");
            ensure!(exchange != DEFAULT_EXCHANGE, "a binding to the default exchange");
            ensure!(self.exchanges.get(exchange).is_some(), "bindings of a missing exchange {exchange}");
            for (key, queue) in set {
                count += 1;
                ensure!(self.queue_ids.contains_key(queue), "{exchange} is bound to missing queue {queue}");
                let indexed = self.exchanges.by_queue.get(queue);
                ensure!(
                    indexed.is_some_and(|s| s.contains(&(exchange.clone(), key.clone()))),
                    "binding {exchange} -> {queue} not indexed"
                );
            }
        }
        let indexed: usize = self.exchanges.by_queue.values().map(BTreeSet::len).sum();
        ensure!(indexed == count, "{indexed} bindings indexed by queue, {count} stored");
        for name in self.exchanges.declared.keys() {
            ensure!(builtin(name).is_none(), "built-in {name} stored");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::topic_matches;

    #[test]
    fn topic_patterns() {
        let cases = [
            ("a.#", "a", true),
            ("a.#", "a.b.c", true),
            ("a.#", "b.a", false),
            ("#.c", "c", true),
            ("#.c", "a.b.c", true),
            ("#.c", "a.b.c.d", false),
            ("*.b", "b", false),
            ("*.b", "a.b", true),
            ("*.b", "a.a.b", false),
            ("#", "", true),
            ("#", "anything.at.all", true),
            ("*", "", true),
            ("*", "a.b", false),
            ("a.*.c", "a.b.c", true),
            ("a.*.c", "a..c", true),
            ("a.*.c", "a.c", false),
            ("a.#.c", "a.c", true),
            ("a.#.c", "a.x.y.c", true),
            ("#.#", "a", true),
            ("#.*", "", true),
            ("#.*.#", "", true),
            ("*.*", "a", false),
            ("a..b", "a..b", true),
            ("a..b", "a.b", false),
            ("a.b", "a.b", true),
            ("a.b", "a.bc", false),
            ("", "", true),
            ("", "a", false),
            ("stock.#.nyse", "stock.usd.nyse", true),
            ("stock.#.nyse", "stock.nyse.x", false),
        ];
        for (pattern, key, expected) in cases {
            assert_eq!(topic_matches(pattern, key), expected, "pattern {pattern:?} key {key:?}");
        }
    }

    #[test]
    fn many_hashes_stay_cheap() {
        let pattern = vec!["#"; 200].join(".") + ".x";
        let key = vec!["a"; 200].join(".");
        assert!(!topic_matches(&pattern, &key));
        assert!(topic_matches(&pattern, &(key + ".x")));
    }
}
