//! Lua scripts over RESP against the real binary: the release and extend scripts lock
//! libraries send, the script cache (through a crash), Redis's replies for conversions and
//! error texts (checked against redis-server), and the budget undoing a runaway script.

mod common;

use common::TestServer;
use common::redis_ref::{RedisRef, reply, same_replies};
use redis::Value;

/// Compare-and-delete: the owner's token releases the lock, any other token does nothing (the
/// semantics of redis-py's `Lock.release`).
const RELEASE: &str = "\
if redis.call('get', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('del', KEYS[1])
return 1";

/// Compare-and-pexpire: the owner adds to (ARGV[3] = '0') or replaces the lock's TTL (the
/// semantics of redis-py's `Lock.extend`).
const EXTEND: &str = "\
if redis.call('get', KEYS[1]) ~= ARGV[1] then
  return 0
end
local left = redis.call('pttl', KEYS[1])
if left < 0 then
  return 0
end
local ttl = tonumber(ARGV[2])
if ARGV[3] == '0' then
  ttl = ttl + left
end
redis.call('pexpire', KEYS[1], ttl)
return 1";

fn int(con: &mut redis::Connection, args: &[&str]) -> i64 {
    match reply(con, args) {
        Ok(Value::Int(n)) => n,
        other => panic!("{args:?}: {other:?}"),
    }
}

fn text(con: &mut redis::Connection, args: &[&str]) -> String {
    match reply(con, args) {
        Ok(Value::BulkString(b)) => String::from_utf8(b).unwrap(),
        other => panic!("{args:?}: {other:?}"),
    }
}

fn error(con: &mut redis::Connection, args: &[&str]) -> String {
    match reply(con, args) {
        Err(text) => text,
        other => panic!("{args:?}: expected an error, got {other:?}"),
    }
}

#[test]
fn lock_release_and_extend_scripts_work_by_eval_and_evalsha() {
    let server = TestServer::start();
    let mut con = server.client();
    assert_eq!(reply(&mut con, &["SET", "lock", "mine", "NX", "PX", "10000"]), Ok(Value::Okay));

    // Extend: by someone else, refused; by the owner, added to the TTL, or replacing it.
    assert_eq!(int(&mut con, &["EVAL", EXTEND, "1", "lock", "theirs", "5000", "0"]), 0);
    assert_eq!(int(&mut con, &["EVAL", EXTEND, "1", "lock", "mine", "5000", "0"]), 1);
    let pttl = int(&mut con, &["PTTL", "lock"]);
    assert!(pttl > 10_000 && pttl <= 15_000, "{pttl}");
    assert_eq!(int(&mut con, &["EVAL", EXTEND, "1", "lock", "mine", "60000", "1"]), 1);
    assert!(int(&mut con, &["PTTL", "lock"]) > 15_000);

    // Release through the cache, as redis-py does (EVALSHA, falling back to EVAL on NOSCRIPT).
    let sha = text(&mut con, &["SCRIPT", "LOAD", RELEASE]);
    assert_eq!(sha, turnstile_core::sha1_hex(RELEASE.as_bytes()));
    assert_eq!(int(&mut con, &["EVALSHA", &sha, "1", "lock", "theirs"]), 0);
    assert_eq!(text(&mut con, &["GET", "lock"]), "mine", "a non-owner's release changes nothing");
    assert_eq!(int(&mut con, &["EVALSHA", &sha, "1", "lock", "mine"]), 1);
    assert_eq!(reply(&mut con, &["GET", "lock"]), Ok(Value::Nil));
    assert_eq!(int(&mut con, &["EVALSHA", &sha.to_uppercase(), "1", "lock", "mine"]), 0);
}

#[test]
fn the_script_cache_is_loaded_checked_and_flushed() {
    let server = TestServer::start();
    let mut con = server.client();
    let missing = "0123456789012345678901234567890123456789";
    assert_eq!(error(&mut con, &["EVALSHA", missing, "0"]), "NOSCRIPT No matching script. Please use EVAL.");
    let sha = text(&mut con, &["SCRIPT", "LOAD", "return 'loaded'"]);
    // EVAL caches too.
    assert_eq!(text(&mut con, &["EVAL", "return 'evaluated'", "0"]), "evaluated");
    let evaluated = turnstile_core::sha1_hex(b"return 'evaluated'");
    assert_eq!(
        reply(&mut con, &["SCRIPT", "EXISTS", &sha, missing, &evaluated]),
        Ok(Value::Array(vec![Value::Int(1), Value::Int(0), Value::Int(1)]))
    );
    assert_eq!(text(&mut con, &["EVALSHA", &evaluated, "0"]), "evaluated");
    assert_eq!(text(&mut con, &["EVALSHA_RO", &sha, "0"]), "loaded");
    assert_eq!(reply(&mut con, &["SCRIPT", "FLUSH"]), Ok(Value::Okay));
    assert_eq!(
        reply(&mut con, &["SCRIPT", "EXISTS", &sha, &evaluated]),
        Ok(Value::Array(vec![Value::Int(0), Value::Int(0)]))
    );
    assert_eq!(error(&mut con, &["EVALSHA", &sha, "0"]), "NOSCRIPT No matching script. Please use EVAL.");
}

#[test]
fn the_script_cache_survives_kill_9() {
    let mut server = TestServer::start();
    let mut con = server.client();
    let sha = text(&mut con, &["SCRIPT", "LOAD", RELEASE]);
    assert_eq!(reply(&mut con, &["SET", "lock", "mine"]), Ok(Value::Okay));
    server.kill9();
    server.restart();
    let mut con = server.client();
    assert_eq!(reply(&mut con, &["SCRIPT", "EXISTS", &sha]), Ok(Value::Array(vec![Value::Int(1)])));
    assert_eq!(int(&mut con, &["EVALSHA", &sha, "1", "lock", "mine"]), 1);
    assert_eq!(reply(&mut con, &["GET", "lock"]), Ok(Value::Nil));
}

#[test]
fn a_script_over_its_budget_leaves_nothing_written() {
    let server = TestServer::start_with(&["--script-budget", "200000"]);
    let mut con = server.client();
    assert_eq!(reply(&mut con, &["SET", "k", "old"]), Ok(Value::Okay));
    let runaway = "redis.call('SET', KEYS[1], 'new') redis.call('DEL', 'other') \
                   redis.call('LOCK.ACQUIRE', 'L', 10000) redis.call('Q.PUSH', 'jobs', 'm') \
                   while true do end";
    let text = error(&mut con, &["EVAL", runaway, "1", "k"]);
    assert!(text.starts_with("ERR script used more than its budget of 200000 instructions"), "{text}");
    assert_eq!(reply(&mut con, &["GET", "k"]), Ok(Value::BulkString(b"old".to_vec())));
    assert_eq!(reply(&mut con, &["LOCK.LIST"]), Ok(Value::Array(vec![])));
    assert_eq!(reply(&mut con, &["Q.LIST"]), Ok(Value::Array(vec![])));
    // The connection and the server go on; a script within the budget runs.
    assert_eq!(
        int(&mut con, &["EVAL", "local n = 0 for i = 1, 1000 do n = n + i end return n", "0"]),
        500_500
    );
}

#[test]
fn a_script_s_lock_is_the_caller_s() {
    let server = TestServer::start();
    let mut con = server.client();
    let grant = reply(&mut con, &["EVAL", "return redis.call('LOCK.ACQUIRE', KEYS[1], 10000)", "1", "L"]);
    let Ok(Value::Array(grant)) = grant else { panic!("{grant:?}") };
    let Value::Int(token) = grant[0] else { panic!("{grant:?}") };
    // Another connection cannot take it; the caller releases it natively.
    let mut other = server.client();
    assert_eq!(reply(&mut other, &["LOCK.ACQUIRE", "L", "10000"]), Ok(Value::Nil));
    assert_eq!(int(&mut con, &["LOCK.RELEASE", "L", &token.to_string()]), 1);
}

/// The same scripts sent to redis-server and to Turnstile get the same replies: values of every
/// kind, and the error texts clients match on (with the script's SHA-1 and line, as Redis 7
/// words them).
#[test]
fn replies_and_error_texts_are_redis_s() {
    let Some(redis) = RedisRef::start() else { return };
    let server = TestServer::start();
    let (mut r, mut t) = (redis.client(), server.client());
    let loaded = turnstile_core::sha1_hex(b"return 'loaded'");
    let missing = "0123456789012345678901234567890123456789";
    same_replies(
        &mut r,
        &mut t,
        &[
            &["EVAL", "return 3.99", "0"],
            &["EVAL", "return -3.99", "0"],
            &["EVAL", "return 'text'", "0"],
            &["EVAL", "return true", "0"],
            &["EVAL", "return false", "0"],
            &["EVAL", "return nil", "0"],
            &["EVAL", "return {1, 2, 3.7, 'x', nil, 5}", "0"],
            &["EVAL", "return {1, {2, 'a'}, redis.status_reply('S'), false, true}", "0"],
            &["EVAL", "return {ok='fine'}", "0"],
            &["EVAL", "return {err='bad thing'}", "0"],
            &["EVAL", "return redis.error_reply('MY err')", "0"],
            &["EVAL", "return redis.status_reply('FINE')", "0"],
            &["EVAL", "return {KEYS[1], KEYS[2], ARGV[1], ARGV[2]}", "2", "k1", "k2", "a1", "a2"],
            &["EVAL", "return redis.call('set', KEYS[1], ARGV[1])", "1", "s", "abc"],
            &["EVAL", "return redis.call('get', KEYS[1])", "1", "s"],
            &["EVAL", "return redis.call('get', 'missing')", "0"],
            &["EVAL", "return type(redis.call('get', 'missing'))", "0"],
            &["EVAL", "local r = redis.call('set', 'a', 'b') return type(r) .. r.ok", "0"],
            &["EVAL", "return redis.call('set', 'n', 7) and redis.call('incrby', 'n', 3.0)", "0"],
            &["EVAL", "return redis.call('del', 'nothing', 'none')", "0"],
            &["EVAL", "return redis.call('incr', KEYS[1])", "1", "s"],
            &["EVAL", "\nlocal x = 1\nreturn redis.call('incr', KEYS[1])", "1", "s"],
            &["EVAL", "return redis.pcall('incr', KEYS[1])", "1", "s"],
            &["EVAL", "return redis.call('nosuch')", "0"],
            &["EVAL", "return redis.call()", "0"],
            &["EVAL", "return redis.call('get', {})", "0"],
            &["EVAL", "return redis.call('get')", "0"],
            &["EVAL", "error('boom')", "0"],
            &["EVAL", "error('x', 0)", "0"],
            &["EVAL", "error({err='TABLE err'})", "0"],
            &["EVAL", "x = 1", "0"],
            &["EVAL", "return y", "0"],
            &["EVAL", "return os", "0"],
            &["EVAL", "return io", "0"],
            &["EVAL", "return loadfile", "0"],
            &["EVAL", "syntax error here", "0"],
            &["EVAL", "return 1", "-1"],
            &["EVAL", "return 1", "2", "a"],
            &["EVAL", "return 1", "x"],
            &["EVAL"],
            &["EVALSHA", missing, "0"],
            &["EVAL_RO", "return redis.call('set', 'a', 'b')", "1", "a"],
            &["EVAL_RO", "return redis.call('get', KEYS[1])", "1", "s"],
            &["EVAL", "return redis.sha1hex('')", "0"],
            &["EVAL", "return cjson.encode({1, 2, {a=1}})", "0"],
            &["EVAL", "return cjson.encode({a=1, b='x'})", "0"],
            &["EVAL", "return cjson.decode('[1, 2, 3]')", "0"],
            &["EVAL", "return cjson.decode('{\"a\":[1,2.5]}').a[2]", "0"],
            &["SCRIPT", "LOAD", "return 'loaded'"],
            &["SCRIPT", "EXISTS", &loaded, missing],
            &["EVALSHA", &loaded, "0"],
            &["EVALSHA_RO", &loaded, "0"],
            &["SCRIPT", "FLUSH"],
            &["SCRIPT", "EXISTS", &loaded],
            &["SCRIPT", "FLUSH", "NOW"],
            &["SCRIPT", "LOAD", "return ("],
            &["SCRIPT", "NOPE"],
        ],
    );
}
