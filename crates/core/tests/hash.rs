//! Hash stories, with Redis's semantics: fields in a key, the key going with its last field, its
//! TTL on the key, WRONGTYPE across types, and every byte counted toward memory limits.

mod common;

use bytes::Bytes;
use common::World;
use turnstile_core::{Command, CoreError, ExpireCondition, Query, Reply, SetKey, State};

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_owned())
}

fn bytes(s: &str) -> Reply {
    Reply::Bytes(b(s))
}

fn hset(key: &str, pairs: &[(&str, &str)]) -> Command {
    Command::HSet { key: key.into(), pairs: pairs.iter().map(|(f, v)| (b(f), b(v))).collect(), nx: false }
}

fn hsetnx(key: &str, field: &str, value: &str) -> Command {
    Command::HSet { key: key.into(), pairs: vec![(b(field), b(value))], nx: true }
}

fn hdel(key: &str, fields: &[&str]) -> Command {
    Command::HDel { key: key.into(), fields: fields.iter().map(|f| b(f)).collect() }
}

fn hget(w: &World, key: &str, field: &str) -> Reply {
    w.query(Query::HGet { key: key.into(), field: b(field) })
}

fn hgetall(w: &World, key: &str) -> Reply {
    w.query(Query::HGetAll { key: key.into(), fields: true, values: true })
}

fn array(items: &[&str]) -> Reply {
    Reply::Array(items.iter().map(|s| bytes(s)).collect())
}

fn wrongtype() -> Reply {
    Reply::Error(CoreError::WrongKind)
}

fn invalid(text: &str) -> Reply {
    Reply::Error(CoreError::InvalidArgument(text.into()))
}

#[test]
fn hset_counts_new_fields_and_replaces_values() {
    let mut w = World::new();
    assert_eq!(w.reply(hset("h", &[("a", "1"), ("b", "2"), ("a", "3")])), Reply::Int(2));
    assert_eq!(hget(&w, "h", "a"), bytes("3"), "the last value of a field named twice wins");
    assert_eq!(w.reply(hset("h", &[("b", "22"), ("c", "3")])), Reply::Int(1));
    assert_eq!(hgetall(&w, "h"), array(&["a", "3", "b", "22", "c", "3"]));
    assert_eq!(w.query(Query::HLen { key: "h".into() }), Reply::Int(3));
    // Key, fields and values: "h" + "a3" + "b22" + "c3".
    assert_eq!(w.state.payload_bytes(), 1 + 2 + 3 + 2);
}

#[test]
fn hsetnx_sets_only_a_missing_field() {
    let mut w = World::new();
    assert_eq!(w.reply(hsetnx("h", "f", "1")), Reply::Int(1));
    let expected = w.unchanged();
    assert_eq!(w.reply(hsetnx("h", "f", "2")), Reply::Int(0));
    assert_eq!(w.state, expected);
    assert_eq!(w.reply(hsetnx("h", "g", "2")), Reply::Int(1));
    assert_eq!(hget(&w, "h", "f"), bytes("1"));
}

#[test]
fn reads_of_fields() {
    let mut w = World::new();
    w.reply(hset("h", &[("a", "1"), ("bb", "long value")]));
    let q = |query| w.query(query);
    assert_eq!(hget(&w, "h", "x"), Reply::Nil);
    assert_eq!(hget(&w, "none", "a"), Reply::Nil);
    assert_eq!(
        q(Query::HMGet { key: "h".into(), fields: vec![b("bb"), b("x"), b("a")] }),
        Reply::Array(vec![bytes("long value"), Reply::Nil, bytes("1")])
    );
    assert_eq!(q(Query::HMGet { key: "none".into(), fields: vec![b("a")] }), Reply::Array(vec![Reply::Nil]));
    assert_eq!(q(Query::HExists { key: "h".into(), field: b("a") }), Reply::Int(1));
    assert_eq!(q(Query::HExists { key: "h".into(), field: b("x") }), Reply::Int(0));
    assert_eq!(q(Query::HGetAll { key: "h".into(), fields: true, values: false }), array(&["a", "bb"]));
    assert_eq!(
        q(Query::HGetAll { key: "h".into(), fields: false, values: true }),
        array(&["1", "long value"])
    );
    assert_eq!(hgetall(&w, "none"), Reply::Array(vec![]));
    assert_eq!(q(Query::HStrLen { key: "h".into(), field: b("bb") }), Reply::Int(10));
    assert_eq!(q(Query::HStrLen { key: "h".into(), field: b("x") }), Reply::Int(0));
    assert_eq!(q(Query::HLen { key: "none".into() }), Reply::Int(0));
    assert_eq!(
        q(Query::HScan { key: "h".into(), pattern: Some(b("b*")) }),
        Reply::Array(vec![bytes("0"), array(&["bb", "long value"])])
    );
}

#[test]
fn hdel_removes_fields_and_the_key_goes_with_the_last() {
    let mut w = World::new();
    w.reply(hset("h", &[("a", "1"), ("b", "2")]));
    w.reply(Command::Expire { key: "h".into(), ttl: 5_000, condition: ExpireCondition::Always });
    assert_eq!(w.reply(hdel("h", &["a", "x", "a"])), Reply::Int(1));
    assert_eq!(w.reply(hdel("h", &["x"])), Reply::Int(0));
    assert_eq!(w.reply(hdel("h", &["b"])), Reply::Int(1));
    assert_eq!(w.query(Query::Exists { keys: vec!["h".into()] }), Reply::Int(0));
    assert_eq!(w.state.payload_bytes(), 0);
    assert_eq!(w.state.next_deadline(), None, "the TTL's timer went with the key");
    assert_eq!(w.reply(hdel("h", &["b"])), Reply::Int(0));
}

#[test]
fn a_hash_expires_with_its_key() {
    let mut w = World::new();
    w.reply(hset("h", &[("a", "1")]));
    w.reply(Command::Expire { key: "h".into(), ttl: 1_000, condition: ExpireCondition::Always });
    // Writing a field keeps the TTL, as in Redis.
    w.reply(hset("h", &[("b", "2")]));
    assert_eq!(w.query(Query::Pttl { key: "h".into() }), Reply::Int(1_000));
    w.advance(999);
    assert_eq!(hget(&w, "h", "b"), bytes("2"));
    w.advance(1);
    assert_eq!(hget(&w, "h", "b"), Reply::Nil);
    assert_eq!(w.state.payload_bytes(), 0);
}

#[test]
fn hincrby_counts_and_refuses_what_is_not_an_integer() {
    let mut w = World::new();
    let incr = |field: &str, delta| Command::HIncrBy { key: "h".into(), field: b(field), delta };
    assert_eq!(w.reply(incr("n", 5)), Reply::Int(5));
    assert_eq!(w.reply(incr("n", -7)), Reply::Int(-2));
    w.reply(hset("h", &[("s", "abc"), ("big", &i64::MAX.to_string())]));
    for (cmd, error) in [
        (incr("s", 1), invalid("hash value is not an integer")),
        (incr("big", 1), Reply::Error(CoreError::Overflow)),
    ] {
        let expected = w.unchanged();
        assert_eq!(w.reply(cmd), error);
        assert_eq!(w.state, expected);
    }
}

#[test]
fn hincrbyfloat_writes_sums_as_redis_does() {
    let mut w = World::new();
    let incr = |field: &str, delta: &str| Command::HIncrByFloat {
        key: "h".into(),
        field: b(field),
        delta: delta.into(),
    };
    assert_eq!(w.reply(incr("f", "10.5")), bytes("10.5"));
    assert_eq!(w.reply(incr("f", "0.1")), bytes("10.6"));
    assert_eq!(w.reply(incr("f", "-0.6")), bytes("10"));
    w.reply(hset("h", &[("s", "abc")]));
    assert_eq!(w.reply(incr("s", "1")), invalid("hash value is not a float"));
    assert_eq!(w.reply(incr("f", "1e308")), bytes(&format!("{:.0}", 1e308 + 10.0)));
    assert_eq!(w.reply(incr("f", "1e308")), invalid("increment would produce NaN or Infinity"));
}

#[test]
fn every_hash_command_refuses_other_types() {
    let mut w = World::new();
    w.reply(Command::Set(SetKey::new("s", "v")));
    for cmd in [
        hset("s", &[("f", "v")]),
        hsetnx("s", "f", "v"),
        hdel("s", &["f"]),
        Command::HIncrBy { key: "s".into(), field: b("f"), delta: 1 },
        Command::HIncrByFloat { key: "s".into(), field: b("f"), delta: "1".into() },
    ] {
        let expected = w.unchanged();
        assert_eq!(w.reply(cmd.clone()), wrongtype(), "{cmd:?}");
        assert_eq!(w.state, expected, "{cmd:?} changed the state");
    }
    for query in [
        Query::HGet { key: "s".into(), field: b("f") },
        Query::HMGet { key: "s".into(), fields: vec![b("f")] },
        Query::HExists { key: "s".into(), field: b("f") },
        Query::HGetAll { key: "s".into(), fields: true, values: true },
        Query::HLen { key: "s".into() },
        Query::HStrLen { key: "s".into(), field: b("f") },
        Query::HScan { key: "s".into(), pattern: None },
    ] {
        assert_eq!(w.query(query.clone()), wrongtype(), "{query:?}");
    }
    // And the string commands refuse a hash; SET replaces it.
    w.reply(hset("h", &[("f", "v")]));
    assert_eq!(w.query(Query::Get { key: "h".into() }), wrongtype());
    assert_eq!(w.reply(Command::IncrBy { key: "h".into(), delta: 1 }), wrongtype());
    assert_eq!(w.reply(Command::Set(SetKey::new("h", "now a string"))), Reply::Ok);
    assert_eq!(w.query(Query::Get { key: "h".into() }), bytes("now a string"));
    // "s" + "v", "h" + its new value.
    assert_eq!(w.state.payload_bytes(), 2 + 1 + "now a string".len() as u64);
}

#[test]
fn a_snapshot_with_hashes_restores_equal() {
    let mut w = World::new();
    w.reply(hset("h1", &[("a", "1"), ("b", "2")]));
    w.reply(hset("h2", &[("x", "y")]));
    w.reply(Command::Expire { key: "h2".into(), ttl: 3_000, condition: ExpireCondition::Always });
    w.reply(Command::HIncrBy { key: "h1".into(), field: b("c"), delta: 3 });
    w.reply(hdel("h1", &["a"]));
    let restored = State::restore(w.state.snapshot().into()).expect("restores");
    assert_eq!(restored, w.state);
    restored.check_invariants().unwrap();
    assert_eq!(w.replay(), w.state);
    w.state = restored;
    assert_eq!(hgetall(&w, "h1"), array(&["b", "2", "c", "3"]));
    w.advance(3_000);
    assert_eq!(hget(&w, "h2", "x"), Reply::Nil, "the TTL survived the snapshot");
}
