//! `MULTI` / `EXEC` / `DISCARD` / `WATCH` / `UNWATCH` against the real binary: the same replies
//! and error texts as redis-server (byte for byte, for the transaction's own frames), `WATCH`
//! aborting when another connection writes, the `redis` crate's atomic pipelines and its `WATCH`
//! retry loop under contention, Turnstile's own commands inside one `EXEC`, atomicity across a
//! `kill -9`, limits applied to the steps, and a transaction sent to a cluster's follower.
//!
//! Every wait is bounded; none asserts how long anything took.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::cluster::{TestCluster, WAIT};
use common::redis_ref::{RedisRef, reply};
use common::{TestServer, info_u64, until};
use redis::Value;

// ---------------------------------------------------------------------------------------------
// Raw RESP, to compare whole frames (`*-1` and `_` look the same to a client library)

/// A raw connection that sends one command at a time and reads exactly its reply frame.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connects");
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        Raw { stream, buf: Vec::new() }
    }

    /// Sends `line` (arguments split on spaces) and returns its reply frame, escaped.
    fn send(&mut self, line: &str) -> String {
        let args: Vec<&str> = line.split(' ').collect();
        let mut request = format!("*{}\r\n", args.len());
        for arg in &args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        self.stream.write_all(request.as_bytes()).expect("write");
        loop {
            if let Some(end) = frame_end(&self.buf, 0) {
                let frame: Vec<u8> = self.buf.drain(..end).collect();
                return frame.escape_ascii().to_string();
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(n > 0, "closed after {:?}", self.buf.escape_ascii().to_string());
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Bytes as [`Raw::send`] shows them.
fn escaped(frame: &str) -> String {
    frame.as_bytes().escape_ascii().to_string()
}

/// Where the RESP2/RESP3 frame starting at `at` ends, if `buf` holds all of it.
fn frame_end(buf: &[u8], at: usize) -> Option<usize> {
    let line_end = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")? + 2;
    let header = std::str::from_utf8(&buf[at + 1..line_end - 2]).expect("ascii header");
    let count = || header.parse::<i64>().expect("a length");
    match buf[at] {
        b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => Some(line_end),
        b'$' | b'=' | b'!' if count() < 0 => Some(line_end),
        b'$' | b'=' | b'!' => {
            let end = line_end + usize::try_from(count()).unwrap() + 2;
            (buf.len() >= end).then_some(end)
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let items = match count() {
                n if n < 0 => 0,
                n if matches!(buf[at], b'%' | b'|') => 2 * n,
                n => n,
            };
            (0..items).try_fold(line_end, |next, _| frame_end(buf, next))
        }
        other => panic!("unknown frame type {:?}", other as char),
    }
}

/// Runs the same lines on a raw connection to each server and asserts the same frames. `other`
/// lines (prefixed `other:`) go to a second connection: another client writing meanwhile.
fn same_frames(redis: &RedisRef, turnstile: &TestServer, lines: &[&str]) {
    let mut ours = (Raw::connect(turnstile.port()), Raw::connect(turnstile.port()));
    let mut theirs = (Raw::connect(redis.port()), Raw::connect(redis.port()));
    for line in lines {
        let (got, expected) = match line.strip_prefix("other:") {
            Some(line) => (ours.1.send(line), theirs.1.send(line)),
            None => (ours.0.send(line), theirs.0.send(line)),
        };
        assert_eq!(got, expected, "{line:?}: Turnstile (left) and redis-server (right) differ");
    }
}

fn both() -> Option<(RedisRef, TestServer)> {
    let redis = RedisRef::start()?;
    Some((redis, TestServer::start()))
}

// ---------------------------------------------------------------------------------------------
// Redis's replies and texts

#[test]
fn errors_outside_and_inside_multi_are_redis_texts() {
    let Some((redis, turnstile)) = both() else { return };
    same_frames(
        &redis,
        &turnstile,
        &[
            "EXEC",
            "DISCARD",
            "UNWATCH",
            "WATCH",
            "MULTI x",
            "MULTI",
            "MULTI",
            "WATCH a",
            // Neither of those two marks the transaction.
            "EXEC",
            "MULTI",
            "SET a 1",
            "NOSUCHCOMMAND x",
            "GET",
            "SET b 2",
            "EXEC",
            // Nothing queued was applied.
            "GET a",
            "GET b",
            "EXEC",
        ],
    );
}

#[test]
fn exec_answers_each_step_in_place_errors_included() {
    let Some((redis, turnstile)) = both() else { return };
    same_frames(
        &redis,
        &turnstile,
        &[
            "SET text abc",
            "MULTI",
            "SET a 1",
            "INCR text",
            "INCRBY a 41",
            "GET a",
            "PING",
            "PING hello",
            "ECHO hi",
            "SELECT 0",
            "UNWATCH",
            "EXISTS a text none",
            "DEL text",
            "PTTL a",
            "SET c 3 NX GET",
            "EXEC",
            "GET a",
            // An empty transaction is an empty array.
            "MULTI",
            "EXEC",
            // DISCARD drops the queue.
            "MULTI",
            "SET discarded 1",
            "DISCARD",
            "GET discarded",
            "DISCARD",
        ],
    );
}

#[test]
fn watch_aborts_exec_when_another_connection_changes_the_key() {
    let Some((redis, turnstile)) = both() else { return };
    same_frames(
        &redis,
        &turnstile,
        &[
            // A value written by another client.
            "SET w 1",
            "WATCH w",
            "other:SET w 2",
            "MULTI",
            "SET w mine",
            "SET side effect",
            "EXEC",
            "GET w",
            "GET side",
            // EXEC forgot the watch: the next transaction runs.
            "MULTI",
            "SET w again",
            "EXEC",
            // A key created by another client.
            "WATCH fresh",
            "other:SET fresh x",
            "MULTI",
            "GET fresh",
            "EXEC",
            // A TTL set by another client.
            "SET t v",
            "WATCH t",
            "other:PEXPIRE t 100000",
            "MULTI",
            "GET t",
            "EXEC",
            // A key deleted by another client.
            "SET d v",
            "WATCH d",
            "other:DEL d",
            "MULTI",
            "GET d",
            "EXEC",
            // UNWATCH and DISCARD forget the watches.
            "WATCH u",
            "other:SET u 1",
            "UNWATCH",
            "MULTI",
            "SET u 2",
            "EXEC",
            "WATCH u",
            "other:SET u 3",
            "MULTI",
            "DISCARD",
            "MULTI",
            "GET u",
            "EXEC",
            // A watched key nobody touched; another one changed.
            "WATCH calm busy",
            "other:SET unrelated 1",
            "MULTI",
            "SET calm 1",
            "EXEC",
            "WATCH calm busy",
            "other:INCR busy",
            "MULTI",
            "SET calm 2",
            "EXEC",
            "GET calm",
        ],
    );
}

#[test]
fn an_aborted_exec_is_a_null_in_resp3_too() {
    let Some((redis, turnstile)) = both() else { return };
    let mut ours = (Raw::connect(turnstile.port()), Raw::connect(turnstile.port()));
    let mut theirs = (Raw::connect(redis.port()), Raw::connect(redis.port()));
    for raw in [&mut ours.0, &mut theirs.0] {
        assert!(raw.send("HELLO 3").starts_with('%'));
    }
    let run = |pair: &mut (Raw, Raw)| {
        vec![
            pair.0.send("WATCH k"),
            pair.1.send("SET k changed"),
            pair.0.send("MULTI"),
            pair.0.send("SET k mine"),
            pair.0.send("EXEC"),
            pair.0.send("MULTI"),
            pair.0.send("GET k"),
            pair.0.send("EXEC"),
        ]
    };
    let (got, expected) = (run(&mut ours), run(&mut theirs));
    assert_eq!(got, expected);
    assert_eq!(got[4], "_\\r\\n");
}

#[test]
fn connection_commands_inside_multi_are_refused_or_answered_in_exec() {
    let server = TestServer::start();
    let mut raw = Raw::connect(server.port());
    assert_eq!(raw.send("MULTI"), "+OK\\r\\n");
    // Redis would queue these; Turnstile refuses them (the connection's state is not the
    // log's), and the transaction is discarded as for any refused command.
    for line in ["HELLO 3", "CLIENT SETNAME x", "AUTH default x", "INFO", "SESSION INFO"] {
        assert_eq!(raw.send(line), "-ERR Command not allowed inside a transaction\\r\\n", "{line}");
    }
    assert_eq!(raw.send("SET k v"), "+QUEUED\\r\\n");
    assert_eq!(raw.send("EXEC"), "-EXECABORT Transaction discarded because of previous errors.\\r\\n");
    assert_eq!(raw.send("GET k"), "$-1\\r\\n");
    // A syntax error is found while queueing (Redis finds it only at EXEC, and applies the
    // rest): the whole transaction is discarded, which no caller can mistake for a success.
    assert_eq!(raw.send("MULTI"), "+OK\\r\\n");
    assert_eq!(raw.send("SET k v"), "+QUEUED\\r\\n");
    assert_eq!(raw.send("SET k v EX"), "-ERR syntax error\\r\\n");
    assert_eq!(raw.send("EXEC"), "-EXECABORT Transaction discarded because of previous errors.\\r\\n");
    assert_eq!(raw.send("GET k"), "$-1\\r\\n");
    // The connection is still RESP2 and unnamed.
    assert_eq!(raw.send("CLIENT GETNAME"), "$-1\\r\\n");
    // QUIT acts at once, and what was queued is dropped with the connection.
    assert_eq!(raw.send("MULTI"), "+OK\\r\\n");
    assert_eq!(raw.send("SET k v"), "+QUEUED\\r\\n");
    assert_eq!(raw.send("QUIT"), "+OK\\r\\n");
    let mut con = server.client();
    assert_eq!(reply(&mut con, &["GET", "k"]), Ok(Value::Nil));
}

// ---------------------------------------------------------------------------------------------
// Client libraries

#[test]
fn the_redis_crates_atomic_pipelines_and_watch_loop_work() {
    let server = TestServer::start();
    let mut con = server.client();
    let (a, b, got): (String, i64, String) =
        redis::pipe().atomic().set("a", "1").incr("b", 5).get("a").query(&mut con).expect("atomic pipeline");
    assert_eq!((a.as_str(), b, got.as_str()), ("OK", 5, "1"));

    // An error in one step comes back as that step's error; the other steps were applied.
    redis::cmd("SET").arg("text").arg("abc").exec(&mut con).unwrap();
    let result: redis::RedisResult<(i64, i64)> =
        redis::pipe().atomic().incr("text", 1).incr("b", 1).query(&mut con);
    assert!(result.is_err(), "{result:?}");
    assert_eq!(reply(&mut con, &["GET", "b"]), Ok(Value::BulkString(b"6".to_vec())));

    // The WATCH retry loop, from several connections at once: a read-modify-write counter ends
    // exact only if every EXEC that raced another was aborted and retried.
    const WRITERS: usize = 4;
    const EACH: usize = 15;
    let threads: Vec<_> = (0..WRITERS)
        .map(|_| {
            let mut con = server.client();
            std::thread::spawn(move || {
                for _ in 0..EACH {
                    redis::transaction(&mut con, &["counter"], |con, pipe| {
                        let current: Option<i64> = redis::cmd("GET").arg("counter").query(con)?;
                        pipe.set("counter", current.unwrap_or(0) + 1).ignore().query::<Option<()>>(con)
                    })
                    .expect("transaction");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("writer");
    }
    let total: i64 = redis::cmd("GET").arg("counter").query(&mut con).unwrap();
    assert_eq!(total, (WRITERS * EACH) as i64);
}

// ---------------------------------------------------------------------------------------------
// Locks and queues inside a transaction

fn value(con: &mut redis::Connection, args: &[&str]) -> Value {
    reply(con, args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        other => panic!("not an integer: {other:?}"),
    }
}

fn items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        other => panic!("not an array: {other:?}"),
    }
}

#[test]
fn ack_release_and_push_commit_as_one_exec() {
    let server = TestServer::start();
    let mut con = server.client();
    let grant = items(value(&mut con, &["LOCK.ACQUIRE", "L", "60000"]));
    let token = int(&grant[0]).to_string();
    value(&mut con, &["Q.PUSH", "in", "job"]);
    let popped = items(value(&mut con, &["Q.POP", "in"]));
    let receipt = int(&items(popped[0].clone())[1]).to_string();

    let mut raw = Raw::connect(server.port());
    // The raw connection is another session: it can still ack (receipts are the fence) and
    // release (the token is); its own acquire inside the transaction is its session's.
    for line in [
        "MULTI".to_owned(),
        format!("Q.ACK in {receipt}"),
        format!("LOCK.RELEASE L {token}"),
        "Q.PUSH out result".to_owned(),
        format!("FENCE.CHECK L {token}"),
        "LOCK.ACQUIRE L 60000".to_owned(),
    ] {
        let expected = if line == "MULTI" { "+OK\\r\\n" } else { "+QUEUED\\r\\n" };
        assert_eq!(raw.send(&line), expected, "{line}");
    }
    let exec = raw.send("EXEC");
    assert!(exec.starts_with("*5\\r\\n:1\\r\\n:1\\r\\n:"), "{exec}");
    assert!(exec.contains(":0\\r\\n*2\\r\\n:"), "the release is seen by FENCE.CHECK, then L granted: {exec}");

    let stats = |con: &mut redis::Connection, q: &str, field: &str| -> i64 {
        let v: std::collections::HashMap<String, i64> =
            redis::cmd("Q.STATS").arg(q).query(con).expect("Q.STATS");
        v[field]
    };
    assert_eq!(stats(&mut con, "in", "in-flight"), 0);
    assert_eq!(stats(&mut con, "in", "acked"), 1);
    assert_eq!(stats(&mut con, "out", "ready"), 1);
    let holders = common::holder_tokens(&mut con, "L");
    assert_eq!(holders.len(), 1);
    assert!(holders[0] > token.parse().unwrap());

    // A waiting acquire inside MULTI answers at once (nil) instead of blocking the EXEC.
    let mut other = Raw::connect(server.port());
    assert_eq!(other.send("MULTI"), "+OK\\r\\n");
    assert_eq!(other.send("LOCK.ACQUIRE L 1000 WAIT 60000"), "+QUEUED\\r\\n");
    assert_eq!(other.send("Q.POP empty WAIT 60000"), "+QUEUED\\r\\n");
    assert_eq!(other.send("EXEC"), "*2\\r\\n*-1\\r\\n*-1\\r\\n");

    // The hold taken inside the transaction belongs to that connection's session: it goes
    // when the connection closes.
    drop(raw);
    until("the transaction's hold is released with its connection", WAIT, || {
        common::holder_tokens(&mut con, "L").is_empty()
    });
}

// ---------------------------------------------------------------------------------------------
// Limits

#[test]
fn limits_refuse_a_step_while_queueing_and_the_whole_at_exec() {
    let server = TestServer::start_with(&["--max-name-len", "8", "--max-memory", "1500"]);
    let mut raw = Raw::connect(server.port());
    assert_eq!(raw.send("MULTI"), "+OK\\r\\n");
    assert_eq!(raw.send("SET ok 1"), "+QUEUED\\r\\n");
    assert_eq!(raw.send("SET much-too-long 1"), "-ERR key name is longer than max-name-len (8 bytes)\\r\\n");
    assert_eq!(raw.send("EXEC"), "-EXECABORT Transaction discarded because of previous errors.\\r\\n");

    // Each push fits alone, not both together: the transaction is refused whole.
    let payload = "x".repeat(1000);
    assert_eq!(raw.send("MULTI"), "+OK\\r\\n");
    assert_eq!(raw.send("SET ok 1"), "+QUEUED\\r\\n");
    assert_eq!(raw.send(&format!("Q.PUSH q {payload}")), "+QUEUED\\r\\n");
    assert_eq!(raw.send(&format!("Q.PUSH q {payload}")), "+QUEUED\\r\\n");
    assert_eq!(
        raw.send("EXEC"),
        escaped(
            "-EXECABORT Transaction discarded because of: OOM command not allowed when used memory > 'max-memory'\r\n"
        )
    );
    let mut con = server.client();
    assert_eq!(reply(&mut con, &["GET", "ok"]), Ok(Value::Nil));
    assert_eq!(reply(&mut con, &["Q.LIST"]), Ok(Value::Array(vec![])));
}

// ---------------------------------------------------------------------------------------------
// Crashes

#[test]
fn a_kill_before_exec_applies_nothing_and_an_acknowledged_exec_survives_whole() {
    let mut server = TestServer::start();
    let mut committed = Raw::connect(server.port());
    for line in ["MULTI", "SET a 1", "SET b 2", "Q.PUSH q m1", "INCRBY n 7"] {
        committed.send(line);
    }
    let exec = committed.send("EXEC");
    assert!(exec.starts_with("*4\\r\\n+OK\\r\\n+OK\\r\\n:"), "{exec}");

    let mut pending = Raw::connect(server.port());
    for line in ["MULTI", "SET a changed", "SET pending 1", "Q.PUSH q m2", "DEL b"] {
        pending.send(line);
    }
    // Queued, never executed: the server dies with the transaction still on the connection.
    server.kill9();
    server.restart();

    let mut con = server.client();
    let get = |con: &mut redis::Connection, k: &str| reply(con, &["GET", k]);
    assert_eq!(get(&mut con, "a"), Ok(Value::BulkString(b"1".to_vec())));
    assert_eq!(get(&mut con, "b"), Ok(Value::BulkString(b"2".to_vec())));
    assert_eq!(get(&mut con, "n"), Ok(Value::BulkString(b"7".to_vec())));
    assert_eq!(get(&mut con, "pending"), Ok(Value::Nil));
    let peek = items(value(&mut con, &["Q.PEEK", "q", "COUNT", "10"]));
    assert_eq!(peek.len(), 1, "only the acknowledged transaction's push: {peek:?}");
}

// ---------------------------------------------------------------------------------------------
// Cluster

#[test]
fn exec_on_a_follower_is_applied_on_every_node() {
    let cluster = TestCluster::start(3, &[]);
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    let mut on_leader = cluster.node(leader).client();
    let mut raw = Raw::connect(cluster.node(follower).port());

    assert_eq!(raw.send("WATCH k"), "+OK\\r\\n");
    for line in ["MULTI", "SET k v", "INCRBY n 3", "LOCK.ACQUIRE l 60000 KEEP", "GET k"] {
        raw.send(line);
    }
    let exec = raw.send("EXEC");
    assert!(exec.starts_with("*4\\r\\n+OK\\r\\n:3\\r\\n*2\\r\\n:"), "{exec}");
    assert!(exec.ends_with("$1\\r\\nv\\r\\n"), "{exec}");

    // Applied on every node: each one's own state, once it has applied the leader's log.
    let applied = info_u64(&mut on_leader, "raft", "applied_index");
    for node in 0..3 {
        cluster.wait_applied(node, applied);
        let mut con = cluster.node(node).client();
        assert_eq!(reply(&mut con, &["GET", "k"]), Ok(Value::BulkString(b"v".to_vec())), "node {node}");
        assert_eq!(reply(&mut con, &["GET", "n"]), Ok(Value::BulkString(b"3".to_vec())), "node {node}");
        assert_eq!(common::holder_tokens(&mut con, "l").len(), 1, "node {node}");
    }

    // WATCH on the follower sees a write made through the leader.
    assert_eq!(raw.send("WATCH k"), "+OK\\r\\n");
    assert_eq!(reply(&mut on_leader, &["SET", "k", "leader"]), Ok(Value::Okay));
    assert_eq!(raw.send("MULTI"), "+OK\\r\\n");
    assert_eq!(raw.send("SET k from-follower"), "+QUEUED\\r\\n");
    assert_eq!(raw.send("EXEC"), "*-1\\r\\n");
    until("every node keeps the leader's write", WAIT, || {
        (0..3).all(|node| {
            reply(&mut cluster.node(node).client(), &["GET", "k"])
                == Ok(Value::BulkString(b"leader".to_vec()))
        })
    });
}
