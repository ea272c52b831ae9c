//! Redis lists against the real binary: the non-blocking commands answer exactly as
//! `redis-server` does (error texts included), and the blocking pops park the connection on the
//! state machine's waits: woken by another connection's push, served in arrival order, timed out
//! with a nil array, moved by `BLMOVE`, and across a crash as a parked `Q.POP` is.
//!
//! Every wait is bounded; none asserts how long anything took.

mod common;

use std::thread;
use std::time::Duration;

use common::redis_ref::{RedisRef, same_replies};
use common::{TestServer, exchange, info_u64, until};

const WAIT: Duration = Duration::from_secs(30);

fn blocked(con: &mut redis::Connection) -> u64 {
    info_u64(con, "clients", "blocked_clients")
}

fn sessions(con: &mut redis::Connection) -> u64 {
    info_u64(con, "clients", "sessions")
}

/// Runs a command on its own connection in a thread (it may block), for the test to join.
fn spawn_query<T: redis::FromRedisValue + Send + 'static>(
    server: &TestServer,
    args: &[&str],
) -> thread::JoinHandle<redis::RedisResult<T>> {
    let mut con = server.client();
    con.set_read_timeout(Some(WAIT)).unwrap();
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    thread::spawn(move || cmd.query(&mut con))
}

#[test]
fn non_blocking_list_commands_answer_as_redis_does() {
    let Some(redis) = RedisRef::start() else { return };
    let server = TestServer::start();
    let commands: &[&[&str]] = &[
        &["RPUSH", "l", "a", "b", "c", "b", "d"],
        &["LPUSH", "l", "x", "y"],
        &["LPUSHX", "none", "a"],
        &["RPUSHX", "l", "z"],
        &["LLEN", "l"],
        &["LLEN", "none"],
        &["LRANGE", "l", "0", "-1"],
        &["LRANGE", "l", "-3", "100"],
        &["LRANGE", "l", "5", "2"],
        &["LRANGE", "none", "0", "-1"],
        &["LINDEX", "l", "-1"],
        &["LINDEX", "l", "99"],
        &["LPOS", "l", "b"],
        &["LPOS", "l", "b", "RANK", "-1"],
        &["LPOS", "l", "b", "COUNT", "0"],
        &["LPOS", "l", "b", "RANK", "2", "COUNT", "5", "MAXLEN", "6"],
        &["LPOS", "l", "nope"],
        &["LPOS", "none", "a", "COUNT", "2"],
        &["LSET", "l", "0", "first"],
        &["LREM", "l", "-1", "b"],
        &["LREM", "l", "0", "nope"],
        &["LINSERT", "l", "BEFORE", "c", "new"],
        &["LINSERT", "l", "after", "nope", "new"],
        &["LINSERT", "none", "BEFORE", "a", "new"],
        &["LTRIM", "l", "1", "-2"],
        &["LRANGE", "l", "0", "-1"],
        &["LMOVE", "l", "m", "LEFT", "RIGHT"],
        &["LMOVE", "l", "l", "right", "left"],
        &["RPOPLPUSH", "l", "m"],
        &["RPOPLPUSH", "none", "m"],
        &["LRANGE", "m", "0", "-1"],
        &["LPOP", "l"],
        &["RPOP", "l", "2"],
        &["LPOP", "l", "0"],
        &["LPOP", "none"],
        &["LPOP", "none", "3"],
        &["LPOP", "m", "10"],
        &["EXISTS", "m"],
        // Blocking pops that need not wait answer as their non-blocking kin.
        &["RPUSH", "q", "1", "2"],
        &["BLPOP", "none", "q", "1"],
        &["BRPOP", "q", "0"],
        &["RPUSH", "q", "3"],
        &["BLMOVE", "q", "r", "LEFT", "LEFT", "0.5"],
        &["RPUSH", "q", "4"],
        &["BRPOPLPUSH", "q", "r", "1"],
        &["LRANGE", "r", "0", "-1"],
        // Errors, each with Redis's text.
        &["SET", "s", "v"],
        &["LPUSH", "s", "a"],
        &["LPOP", "s"],
        &["LLEN", "s"],
        &["LRANGE", "s", "0", "1"],
        &["LINDEX", "s", "0"],
        &["LSET", "s", "0", "a"],
        &["LREM", "s", "0", "a"],
        &["LTRIM", "s", "0", "1"],
        &["LINSERT", "s", "BEFORE", "a", "b"],
        &["LPOS", "s", "a"],
        &["LMOVE", "s", "r", "LEFT", "LEFT"],
        &["LMOVE", "r", "s", "LEFT", "LEFT"],
        &["BLPOP", "none", "s", "1"],
        &["BLMOVE", "r", "s", "LEFT", "LEFT", "1"],
        &["GET", "r"],
        &["LSET", "none", "0", "a"],
        &["LSET", "r", "99", "a"],
        &["LPOP", "r", "-1"],
        &["LPOP", "r", "x"],
        &["LPOP", "r", "1", "2"],
        &["LRANGE", "r", "x", "1"],
        &["LINDEX", "r", "1.5"],
        &["LREM", "r", "x", "a"],
        &["LINSERT", "r", "middle", "a", "b"],
        &["LMOVE", "r", "r", "up", "LEFT"],
        &["LPOS", "r", "a", "RANK", "0"],
        &["LPOS", "r", "a", "COUNT", "-1"],
        &["LPOS", "r", "a", "MAXLEN", "-1"],
        &["LPOS", "r", "a", "RANK"],
        &["LPOS", "r", "a", "BOGUS", "1"],
        &["BLPOP", "none", "x"],
        &["BLPOP", "none", "1.5x"],
        &["BLPOP", "none", "-1"],
        &["BLPOP", "none", "inf"],
        &["BLPOP", "none", "nan"],
        &["BLMOVE", "r", "s", "up", "LEFT", "x"],
        &["BLMOVE", "r", "s", "LEFT", "LEFT", "x"],
        &["LPUSH", "l"],
        &["BLPOP", "l"],
        &["LINSERT", "l", "BEFORE", "a"],
        &["RPOPLPUSH", "l"],
    ];
    same_replies(&mut redis.client(), &mut server.client(), commands);
}

/// The bytes on the wire: a blocking pop that timed out is a nil array in RESP2 (`*-1`), as
/// redis-server sends it, for `BLMOVE` too; `LPOP key count` of a missing key as well.
#[test]
fn a_timed_out_blocking_pop_is_a_nil_array() {
    let server = TestServer::start();
    let mut raw = server.raw();
    let got = exchange(&mut raw, b"BLPOP none 0.05\r\n", 5);
    assert_eq!(got, b"*-1\r\n");
    let got = exchange(&mut raw, b"BLMOVE none d LEFT LEFT 0.05\r\n", 5);
    assert_eq!(got, b"*-1\r\n");
    let got = exchange(&mut raw, b"LPOP none 2\r\nLPOP none\r\n", 10);
    assert_eq!(got, b"*-1\r\n$-1\r\n");
    if let Some(redis) = RedisRef::start() {
        let mut raw = std::net::TcpStream::connect(("127.0.0.1", redis.port())).unwrap();
        let got = exchange(&mut raw, b"BLPOP none 0.05\r\nBLMOVE none d LEFT LEFT 0.05\r\n", 10);
        assert_eq!(got, b"*-1\r\n*-1\r\n", "redis-server answers the same");
    }
}

#[test]
fn blpop_is_woken_by_a_push_from_another_connection() {
    let server = TestServer::start();
    let mut con = server.client();
    let waiter = spawn_query::<(String, String)>(&server, &["BLPOP", "a", "jobs", "0"]);
    until("the BLPOP is blocked", WAIT, || blocked(&mut con) == 1);
    let len: i64 = redis::cmd("LPUSH").arg("jobs").arg("j1").query(&mut con).unwrap();
    assert_eq!(len, 1);
    assert_eq!(waiter.join().unwrap().unwrap(), ("jobs".to_owned(), "j1".to_owned()));
    let left: i64 = redis::cmd("LLEN").arg("jobs").query(&mut con).unwrap();
    assert_eq!(left, 0, "the element went to the waiter, not into the list");
    assert_eq!(blocked(&mut con), 0);
}

#[test]
fn blocked_clients_are_served_in_arrival_order() {
    let server = TestServer::start();
    let mut con = server.client();
    let first = spawn_query::<(String, String)>(&server, &["BLPOP", "k", "30"]);
    until("the first client is blocked", WAIT, || blocked(&mut con) == 1);
    let second = spawn_query::<(String, String)>(&server, &["BRPOP", "other", "k", "30"]);
    until("the second client is blocked", WAIT, || blocked(&mut con) == 2);
    let len: i64 = redis::cmd("RPUSH").arg("k").arg("x").arg("y").query(&mut con).unwrap();
    assert_eq!(len, 2);
    assert_eq!(first.join().unwrap().unwrap(), ("k".to_owned(), "x".to_owned()));
    assert_eq!(second.join().unwrap().unwrap(), ("k".to_owned(), "y".to_owned()));
}

#[test]
fn blpop_times_out_with_nil_and_waits_no_more() {
    let server = TestServer::start();
    let mut con = server.client();
    let got: Option<(String, String)> = redis::cmd("BLPOP").arg("k").arg("0.1").query(&mut con).unwrap();
    assert_eq!(got, None);
    // The timed-out wait is gone: a push is stored.
    let len: i64 = redis::cmd("RPUSH").arg("k").arg("v").query(&mut con).unwrap();
    assert_eq!(len, 1);
    let got: Vec<String> = redis::cmd("LRANGE").arg("k").arg("0").arg("-1").query(&mut con).unwrap();
    assert_eq!(got, ["v"]);
}

#[test]
fn blmove_waits_moves_and_wakes_the_destination_waiters() {
    let server = TestServer::start();
    let mut con = server.client();
    let mover = spawn_query::<String>(&server, &["BLMOVE", "src", "dst", "LEFT", "RIGHT", "0"]);
    until("the BLMOVE is blocked", WAIT, || blocked(&mut con) == 1);
    let popper = spawn_query::<(String, String)>(&server, &["BLPOP", "dst", "0"]);
    until("the BLPOP is blocked", WAIT, || blocked(&mut con) == 2);
    let len: i64 = redis::cmd("RPUSH").arg("src").arg("a").arg("b").query(&mut con).unwrap();
    assert_eq!(len, 2);
    assert_eq!(mover.join().unwrap().unwrap(), "a");
    assert_eq!(popper.join().unwrap().unwrap(), ("dst".to_owned(), "a".to_owned()));
    let src: Vec<String> = redis::cmd("LRANGE").arg("src").arg("0").arg("-1").query(&mut con).unwrap();
    let dst: Vec<String> = redis::cmd("LRANGE").arg("dst").arg("0").arg("-1").query(&mut con).unwrap();
    assert_eq!((src, dst), (vec!["b".to_owned()], vec![]));
}

/// A `BLPOP` parked when the server is killed behaves as a parked `Q.POP WAIT` does: its client
/// sees the connection drop (nothing was popped for it); its wait belongs to its session, which
/// lives on in the log until the session's host — the killed process — misses its keep-alives
/// for `session-timeout-ms` after the restart, and then ends with its waits. From then on a push
/// is stored, and new clients block and are woken as before. (In that window the dead wait is
/// still first in line: a push would be handed to it and, unlike a `Q.POP` delivery, which is
/// leased and comes back, be gone — as a Redis `BLPOP` reply lost with its connection is.)
#[test]
fn a_blpop_parked_across_a_crash_ends_with_its_session() {
    let mut server = TestServer::start_with(&["--session-timeout-ms", "1000"]);
    let mut con = server.client();
    let idle_sessions = sessions(&mut con);
    let waiter = spawn_query::<(String, String)>(&server, &["BLPOP", "k", "0"]);
    until("the BLPOP is blocked", WAIT, || blocked(&mut con) == 1);
    server.kill9();
    let outcome = waiter.join().unwrap();
    assert!(outcome.is_err(), "the parked client sees its connection drop: {outcome:?}");
    server.restart();
    let mut con = server.client();
    until("the killed process's session ends", WAIT, || sessions(&mut con) <= idle_sessions);
    let len: i64 = redis::cmd("LPUSH").arg("k").arg("kept").query(&mut con).unwrap();
    assert_eq!(len, 1, "stored: the dead wait no longer takes it");
    let waiter = spawn_query::<(String, String)>(&server, &["BLPOP", "k2", "0"]);
    until("a new BLPOP is blocked", WAIT, || blocked(&mut con) == 1);
    let _: i64 = redis::cmd("RPUSH").arg("k2").arg("v").query(&mut con).unwrap();
    assert_eq!(waiter.join().unwrap().unwrap(), ("k2".to_owned(), "v".to_owned()));
    let got: Vec<String> = redis::cmd("LRANGE").arg("k").arg("0").arg("-1").query(&mut con).unwrap();
    assert_eq!(got, ["kept"]);
}

/// List elements count toward `--max-memory` as queue messages do: a push past it is refused
/// with `-OOM` and stores nothing, while pops (which free memory) still work.
#[test]
fn pushes_past_max_memory_are_refused_and_pops_go_on() {
    let server = TestServer::start_with(&["--max-memory", "1000"]);
    let mut con = server.client();
    let element = "x".repeat(600);
    let len: i64 = redis::cmd("RPUSH").arg("l").arg(&element).query(&mut con).unwrap();
    assert_eq!(len, 1);
    let refused = redis::cmd("RPUSH").arg("l").arg(&element).query::<i64>(&mut con).unwrap_err();
    assert_eq!(refused.code(), Some("OOM"), "{refused}");
    let mut insert = redis::cmd("LINSERT");
    insert.arg("l").arg("BEFORE").arg(&element).arg(&element);
    assert_eq!(insert.query::<i64>(&mut con).unwrap_err().code(), Some("OOM"));
    let mut set = redis::cmd("LSET");
    set.arg("l").arg(0).arg(&element);
    assert_eq!(set.query::<String>(&mut con).unwrap_err().code(), Some("OOM"));
    let len: i64 = redis::cmd("LLEN").arg("l").query(&mut con).unwrap();
    assert_eq!(len, 1, "nothing refused was stored");
    let popped: String = redis::cmd("LPOP").arg("l").query(&mut con).unwrap();
    assert_eq!(popped, element);
    let len: i64 = redis::cmd("RPUSH").arg("l").arg(&element).query(&mut con).unwrap();
    assert_eq!(len, 1, "the memory the pop freed takes a push again");
}
