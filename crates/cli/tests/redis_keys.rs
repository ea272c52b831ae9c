//! Redis's string, key and hash commands against the real binary, checked against a real
//! `redis-server`: the same commands sent to both get the same replies, error texts included.
//! Replies that cannot match (SCAN cursors, KEYS order, OBJECT REFCOUNT) are checked for their
//! shape and facts instead. Then a hash across a kill -9, and FLUSHALL sparing locks and queues.

mod common;

use std::collections::BTreeSet;

use common::redis_ref::{RedisRef, reply, same_replies};
use common::{TestServer, holder_tokens};
use redis::Value;

/// Both servers, each with a connection, emptied first.
fn pair() -> Option<(RedisRef, TestServer, redis::Connection, redis::Connection)> {
    let redis = RedisRef::start()?;
    let server = TestServer::start();
    let (mut r, mut t) = (redis.client(), server.client());
    same_replies(&mut r, &mut t, &[&["FLUSHALL"]]);
    Some((redis, server, r, t))
}

#[test]
fn string_commands_answer_as_redis_does() {
    let Some((_redis, _server, mut r, mut t)) = pair() else { return };
    same_replies(
        &mut r,
        &mut t,
        &[
            // SETNX, GETSET, GETDEL
            &["SETNX", "lock", "me"],
            &["SETNX", "lock", "you"],
            &["GET", "lock"],
            &["GETSET", "lock", "new"],
            &["GETSET", "missing", "v"],
            &["GETDEL", "lock"],
            &["GETDEL", "lock"],
            &["SETNX", "k"],
            &["GETSET", "k"],
            &["GETDEL"],
            // GETEX
            &["SET", "g", "v"],
            &["GETEX", "g"],
            &["GETEX", "g", "EX", "100"],
            &["TTL", "g"],
            &["GETEX", "g", "PERSIST"],
            &["TTL", "g"],
            &["GETEX", "g", "EXAT", "4102444800"],
            &["EXPIRETIME", "g"],
            &["GETEX", "g", "PXAT", "4102444800123"],
            &["PEXPIRETIME", "g"],
            &["GETEX", "g", "EX", "0"],
            &["GETEX", "g", "PX", "-1"],
            &["GETEX", "g", "EXAT", "0"],
            &["GETEX", "g", "EX", "9223372036854776"],
            &["GETEX", "g", "EX", "soon"],
            &["GETEX", "g", "EX"],
            &["GETEX", "g", "PERSIST", "EX", "1"],
            &["GETEX", "g", "EX", "1", "PX", "1"],
            &["GETEX", "g", "FOO"],
            &["GETEX", "missing"],
            &["GETEX", "g", "EXAT", "1"],
            &["EXISTS", "g"],
            &["GETEX"],
            // MGET, MSET, MSETNX
            &["MSET", "a", "1", "b", "2"],
            &["MGET", "a", "b", "nope"],
            &["MSETNX", "a", "9", "c", "3"],
            &["MGET", "a", "c"],
            &["MSETNX", "c", "3", "d", "4"],
            &["MGET", "c", "d"],
            &["MSET", "a"],
            &["MSET", "a", "1", "b"],
            &["MSETNX", "a", "1", "b"],
            &["MGET"],
            // APPEND, STRLEN
            &["APPEND", "s", "Hello"],
            &["APPEND", "s", " World"],
            &["GET", "s"],
            &["STRLEN", "s"],
            &["STRLEN", "nope"],
            &["APPEND", "s"],
            &["STRLEN"],
            // INCRBYFLOAT
            &["SET", "f", "10.50"],
            &["INCRBYFLOAT", "f", "0.1"],
            &["INCRBYFLOAT", "f", "-5"],
            &["INCRBYFLOAT", "f2", "5.0e3"],
            &["INCRBYFLOAT", "f2", "-0.5"],
            &["INCRBYFLOAT", "f3", "3"],
            &["INCRBYFLOAT", "f3", "0.25"],
            &["INCRBYFLOAT", "f", "abc"],
            &["INCRBYFLOAT", "f", "nan"],
            &["INCRBYFLOAT", "f", "inf"],
            &["INCRBYFLOAT", "s", "1"],
            &["INCRBYFLOAT", "f"],
            // Counters keep working as before.
            &["INCR", "n"],
            &["DECRBY", "n", "5"],
            &["INCR", "s"],
        ],
    );
}

#[test]
fn key_commands_answer_as_redis_does() {
    let Some((_redis, _server, mut r, mut t)) = pair() else { return };
    same_replies(
        &mut r,
        &mut t,
        &[
            &["SET", "s", "v"],
            &["HSET", "h", "f", "v"],
            // EXISTS and TYPE see every type.
            &["EXISTS", "s", "h", "nope", "s"],
            &["TYPE", "s"],
            &["TYPE", "h"],
            &["TYPE", "nope"],
            &["TYPE"],
            // RENAME, RENAMENX
            &["RENAME", "nope", "x"],
            &["RENAMENX", "nope", "x"],
            &["SET", "t", "tv", "EX", "100"],
            &["RENAME", "t", "t2"],
            &["TTL", "t2"],
            &["GET", "t"],
            &["RENAMENX", "t2", "s"],
            &["RENAMENX", "t2", "t2"],
            &["RENAME", "t2", "t2"],
            &["RENAME", "t2", "h"],
            &["TYPE", "h"],
            &["TTL", "h"],
            &["RENAMENX", "h", "fresh"],
            &["RENAME", "a"],
            &["RENAMENX", "a"],
            // TOUCH, UNLINK, DBSIZE
            &["TOUCH", "s", "fresh", "nope"],
            &["DBSIZE"],
            &["UNLINK", "s", "nope"],
            &["DBSIZE"],
            &["TOUCH"],
            &["UNLINK"],
            &["DBSIZE", "x"],
            // TTLs on every type: EXPIRE, EXPIREAT, PERSIST, EXPIRETIME
            &["HSET", "h2", "a", "1"],
            &["EXPIRE", "h2", "100"],
            &["TTL", "h2"],
            &["PERSIST", "h2"],
            &["PERSIST", "h2"],
            &["PERSIST", "nope"],
            &["TTL", "h2"],
            &["EXPIREAT", "h2", "4102444800"],
            &["EXPIRETIME", "h2"],
            &["PEXPIRETIME", "h2"],
            &["EXPIREAT", "h2", "4102444801", "LT"],
            &["EXPIREAT", "h2", "4102444801", "GT"],
            &["EXPIRETIME", "h2"],
            &["PEXPIREAT", "h2", "4102444800500", "NX"],
            &["PEXPIREAT", "h2", "4102444800500", "XX"],
            &["PEXPIRETIME", "h2"],
            &["EXPIRETIME", "nope"],
            &["SET", "plain", "v"],
            &["EXPIRETIME", "plain"],
            &["EXPIREAT", "plain", "1"],
            &["EXISTS", "plain"],
            &["EXPIREAT", "nope", "4102444800"],
            &["EXPIREAT", "h2", "soon"],
            &["EXPIREAT", "h2", "1", "FOO"],
            &["EXPIREAT", "h2", "9223372036854776"],
            &["EXPIREAT", "h2", "1", "NX", "XX"],
            &["EXPIREAT", "h2"],
            &["PEXPIREAT", "h2"],
            &["EXPIRETIME"],
            &["PEXPIRETIME"],
            &["PERSIST"],
            // SET replaces any type.
            &["SET", "h2", "now a string"],
            &["TYPE", "h2"],
            &["EXPIRETIME", "h2"],
            // OBJECT
            &["SET", "int", "12345"],
            &["SET", "short", "hello"],
            &["SET", "long", "0123456789012345678901234567890123456789-long"],
            &["HSET", "small", "f", "v"],
            &["HSET", "big", "f", "0123456789012345678901234567890123456789012345678901234567890123456789"],
            &["OBJECT", "ENCODING", "int"],
            &["OBJECT", "ENCODING", "short"],
            &["OBJECT", "ENCODING", "long"],
            &["OBJECT", "ENCODING", "small"],
            &["OBJECT", "ENCODING", "big"],
            &["OBJECT", "ENCODING", "nope"],
            &["OBJECT", "FREQ", "short"],
            &["OBJECT", "FREQ", "nope"],
            &["OBJECT", "IDLETIME", "nope"],
            &["OBJECT", "REFCOUNT", "nope"],
            &["OBJECT", "HELP"],
            &["OBJECT"],
            &["OBJECT", "ENCODING"],
            &["OBJECT", "HELP", "x"],
            &["OBJECT", "foo", "k"],
            // KEYS and SCAN refuse what Redis refuses.
            &["KEYS"],
            &["KEYS", "nothing*"],
            &["SCAN"],
            &["SCAN", "x"],
            &["SCAN", "18446744073709551616"],
            &["SCAN", "0", "COUNT", "0"],
            &["SCAN", "0", "COUNT", "x"],
            &["SCAN", "0", "MATCH"],
            &["SCAN", "0", "TYPE"],
            &["SCAN", "0", "FOO", "bar"],
            &["SCAN", "0", "TYPE", "nosuchtype"],
            // SELECT, FLUSHDB, FLUSHALL
            &["SELECT", "0"],
            &["SELECT", "x"],
            &["SELECT"],
            &["FLUSHALL", "foo"],
            &["FLUSHALL", "SYNC", "ASYNC"],
            &["FLUSHDB", "foo"],
            &["FLUSHDB", "ASYNC"],
            &["DBSIZE"],
            &["SET", "x", "1"],
            &["FLUSHALL", "SYNC"],
            &["DBSIZE"],
        ],
    );
}

#[test]
fn hash_commands_answer_as_redis_does() {
    let Some((_redis, _server, mut r, mut t)) = pair() else { return };
    same_replies(
        &mut r,
        &mut t,
        &[
            // Fields written in order, so that Redis's listpack order is field order too.
            &["HSET", "h", "a", "1", "b", "2"],
            &["HSET", "h", "b", "20", "c", "3"],
            &["HMSET", "h", "d", "4"],
            &["HSETNX", "h", "a", "x"],
            &["HSETNX", "h", "e", "5"],
            &["HGET", "h", "a"],
            &["HGET", "h", "nope"],
            &["HGET", "nope", "a"],
            &["HMGET", "h", "a", "nope", "c"],
            &["HMGET", "nope", "a"],
            &["HGETALL", "h"],
            &["HGETALL", "nope"],
            &["HKEYS", "h"],
            &["HVALS", "h"],
            &["HLEN", "h"],
            &["HLEN", "nope"],
            &["HSTRLEN", "h", "b"],
            &["HSTRLEN", "h", "nope"],
            &["HEXISTS", "h", "a"],
            &["HEXISTS", "h", "nope"],
            &["HSCAN", "h", "0"],
            &["HSCAN", "h", "0", "MATCH", "[ab]"],
            &["HSCAN", "h", "0", "COUNT", "1"],
            // HINCRBY, HINCRBYFLOAT
            &["HINCRBY", "h", "a", "5"],
            &["HINCRBY", "h", "new", "-3"],
            &["HINCRBY", "h", "a", "1.5"],
            &["HSET", "h", "s", "abc", "big", "9223372036854775807", "fl", "10.50"],
            &["HINCRBY", "h", "s", "1"],
            &["HINCRBY", "h", "big", "1"],
            &["HINCRBYFLOAT", "h", "fl", "0.1"],
            &["HINCRBYFLOAT", "h", "fresh", "2.5e1"],
            &["HINCRBYFLOAT", "h", "s", "1"],
            &["HINCRBYFLOAT", "h", "fl", "x"],
            &["HINCRBYFLOAT", "h", "fl", "nan"],
            &["HINCRBYFLOAT", "h", "fl", "inf"],
            // HDEL, and the key going with its last field
            &["HDEL", "h", "a", "nope", "a"],
            &["HDEL", "nope", "a"],
            &["HSET", "one", "f", "v"],
            &["EXPIRE", "one", "100"],
            &["TTL", "one"],
            &["HSET", "one", "g", "w"],
            &["TTL", "one"],
            &["HDEL", "one", "f", "g"],
            &["EXISTS", "one"],
            &["TYPE", "one"],
            // WRONGTYPE both ways
            &["SET", "str", "v"],
            &["HSET", "str", "f", "v"],
            &["HSETNX", "str", "f", "v"],
            &["HMSET", "str", "f", "v"],
            &["HGET", "str", "f"],
            &["HMGET", "str", "f"],
            &["HDEL", "str", "f"],
            &["HEXISTS", "str", "f"],
            &["HINCRBY", "str", "f", "1"],
            &["HINCRBYFLOAT", "str", "f", "1"],
            &["HGETALL", "str"],
            &["HKEYS", "str"],
            &["HVALS", "str"],
            &["HLEN", "str"],
            &["HSTRLEN", "str", "f"],
            &["HSCAN", "str", "0"],
            &["GET", "h"],
            &["GETSET", "h", "v"],
            &["GETDEL", "h"],
            &["GETEX", "h"],
            &["APPEND", "h", "x"],
            &["STRLEN", "h"],
            &["INCR", "h"],
            &["INCRBYFLOAT", "h", "1"],
            &["SET", "h", "v", "GET"],
            &["MGET", "h", "str"],
            // Arity and syntax
            &["HSET", "h"],
            &["HSET", "h", "a"],
            &["HSET", "h", "a", "1", "b"],
            &["HMSET", "h", "a"],
            &["HSETNX", "h", "a"],
            &["HGET", "h"],
            &["HMGET", "h"],
            &["HDEL", "h"],
            &["HEXISTS", "h"],
            &["HINCRBY", "h", "a"],
            &["HINCRBYFLOAT", "h", "a"],
            &["HGETALL"],
            &["HKEYS"],
            &["HVALS"],
            &["HLEN"],
            &["HSTRLEN", "h"],
            &["HSCAN", "h"],
            &["HSCAN", "h", "x"],
            &["HSCAN", "h", "0", "COUNT", "0"],
            &["HSCAN", "h", "0", "TYPE", "hash"],
            &["HSCAN", "h", "0", "MATCH"],
        ],
    );
}

/// The keys of a `SCAN` reply and its next cursor.
fn scan_batch(con: &mut redis::Connection, args: &[&str]) -> (u64, Vec<String>) {
    let (cursor, keys): (String, Vec<String>) = redis::cmd("SCAN").arg(args).query(con).expect("SCAN");
    (cursor.parse().expect("the cursor is a number"), keys)
}

#[test]
fn keys_and_scan_find_what_redis_finds() {
    let Some((_redis, _server, mut r, mut t)) = pair() else { return };
    for con in [&mut r, &mut t] {
        for i in 0..40 {
            let _: () = redis::cmd("SET").arg(format!("user:{i}")).arg("v").query(con).unwrap();
        }
        let _: () = redis::cmd("HSET").arg("user:h").arg("f").arg("v").query(con).unwrap();
        let _: () = redis::cmd("SET").arg("job:[1]").arg("v").query(con).unwrap();
    }
    // KEYS: the same keys (Redis answers in its table's order, Turnstile in key order).
    for pattern in ["*", "user:?", "user:[1-2]*", "job:\\[1\\]", "*:h", "nothing"] {
        let theirs: Vec<String> = redis::cmd("KEYS").arg(pattern).query(&mut r).unwrap();
        let ours: Vec<String> = redis::cmd("KEYS").arg(pattern).query(&mut t).unwrap();
        let mut sorted = ours.clone();
        sorted.sort();
        assert_eq!(ours, sorted, "KEYS {pattern} comes in key order");
        assert_eq!(
            ours.iter().collect::<BTreeSet<_>>(),
            theirs.iter().collect::<BTreeSet<_>>(),
            "KEYS {pattern}"
        );
    }
    // SCAN: a full walk finds the same keys, whatever the batches.
    for args in [vec![], vec!["MATCH", "user:1*"], vec!["TYPE", "hash"], vec!["COUNT", "3", "TYPE", "string"]]
    {
        let mut found = Vec::new();
        for con in [&mut r, &mut t] {
            let mut keys = BTreeSet::new();
            let mut cursor = 0;
            let mut calls = 0;
            loop {
                let mut call = vec![cursor.to_string()];
                call.extend(args.iter().map(|a| (*a).to_owned()));
                let call: Vec<&str> = call.iter().map(String::as_str).collect();
                let (next, batch) = scan_batch(con, &call);
                keys.extend(batch);
                calls += 1;
                assert!(calls < 1_000, "SCAN {args:?} never ends");
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            found.push(keys);
        }
        assert_eq!(found[1], found[0], "SCAN {args:?}: Turnstile (right) and redis-server (left)");
    }
    // COUNT bounds the work of one call.
    let (next, batch) = scan_batch(&mut t, &["0", "COUNT", "5"]);
    assert!(next != 0 && batch.len() <= 6, "{next} {batch:?}");
    // A cursor needs no connection: another one goes on from it.
    let mut other = _server.client();
    let (_, more) = scan_batch(&mut other, &[&next.to_string(), "COUNT", "1000"]);
    let all: BTreeSet<String> = batch.into_iter().chain(more).collect();
    assert_eq!(all.len(), 42, "one walk over two connections found every key");
}

#[test]
fn object_refcount_and_idletime_have_redis_shapes() {
    let Some((_redis, server, mut r, mut t)) = pair() else { return };
    for con in [&mut r, &mut t] {
        let _: () = redis::cmd("SET").arg("k").arg("some text").query(con).unwrap();
        for field in ["REFCOUNT", "IDLETIME"] {
            let value = reply(con, &["OBJECT", field, "k"]);
            assert!(matches!(value, Ok(Value::Int(n)) if n >= 0), "OBJECT {field}: {value:?}");
        }
    }
    // OBJECT ENCODING never fails for an existing key of any type Turnstile has.
    let mut c = server.client();
    let _: () = redis::cmd("HSET").arg("h").arg("f").arg("v").query(&mut c).unwrap();
    assert_eq!(reply(&mut c, &["OBJECT", "ENCODING", "h"]), Ok(Value::BulkString(b"listpack".to_vec())));
    // COMMAND INFO files FLUSHALL as a dangerous admin command.
    let info = reply(&mut c, &["COMMAND", "INFO", "FLUSHALL"]).expect("COMMAND INFO");
    let text = format!("{info:?}");
    assert!(text.contains("admin") && text.contains("@dangerous"), "{text}");
}

#[test]
fn a_hash_survives_kill9_and_flushall_spares_locks_and_queues() {
    let mut server = TestServer::start();
    let mut c = server.client();
    let _: i64 = redis::cmd("HSET").arg(&["owners", "a", "1", "b", "2"]).query(&mut c).unwrap();
    let _: i64 = redis::cmd("EXPIRE").arg(&["owners", "3600"]).query(&mut c).unwrap();
    let _: String = redis::cmd("INCRBYFLOAT").arg(&["f", "1.5"]).query(&mut c).unwrap();
    let _: Value = redis::cmd("LOCK.ACQUIRE").arg(&["L", "600000", "KEEP"]).query(&mut c).unwrap();
    let _: u64 = redis::cmd("Q.PUSH").arg(&["jobs", "job-1"]).query(&mut c).unwrap();
    let tokens = holder_tokens(&mut c, "L");
    assert_eq!(tokens.len(), 1);

    server.kill9();
    server.restart();
    let mut c = server.client();
    let all: Vec<String> = redis::cmd("HGETALL").arg("owners").query(&mut c).unwrap();
    assert_eq!(all, ["a", "1", "b", "2"], "the hash came back whole");
    let ttl: i64 = redis::cmd("TTL").arg("owners").query(&mut c).unwrap();
    assert!((3590..=3600).contains(&ttl), "its TTL came back: {ttl}");
    let f: String = redis::cmd("GET").arg("f").query(&mut c).unwrap();
    assert_eq!(f, "1.5");

    let ok: String = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    assert_eq!(ok, "OK");
    let size: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(size, 0);
    assert_eq!(holder_tokens(&mut c, "L"), tokens, "FLUSHALL left the lock held");
    let popped: Vec<(u64, u64, String, u64)> = redis::cmd("Q.POP").arg("jobs").query(&mut c).unwrap();
    assert_eq!(popped.len(), 1, "FLUSHALL left the queue's message");
    assert_eq!(popped[0].2, "job-1");
    let kind: String = redis::cmd("TYPE").arg("L").query(&mut c).unwrap();
    assert_eq!(kind, "none", "a lock is not a key");
}
