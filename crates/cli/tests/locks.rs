//! Locks over RESP with the real binary and the `redis` crate as the client.

mod common;

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::TestServer;
use redis::{Commands, Value};

fn acquire(con: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<Option<(u64, u64)>> {
    redis::cmd("LOCK.ACQUIRE").arg(args).query(con)
}

/// Waits until `name` has `n` waiters (so test threads queue in a known order).
fn wait_for_waiters(con: &mut redis::Connection, name: &str, n: usize) {
    for _ in 0..500 {
        let info: Vec<Value> = redis::cmd("LOCK.INFO").arg(name).query(con).unwrap();
        let waiters = info
            .chunks(2)
            .find(|kv| matches!(&kv[0], Value::BulkString(k) if k == b"waiters"))
            .map(|kv| match &kv[1] {
                Value::Array(w) => w.len(),
                _ => 0,
            })
            .unwrap_or(0);
        if waiters == n {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("{name} never had {n} waiters");
}

#[test]
fn the_classic_set_nx_px_lock_works_unchanged() {
    let server = TestServer::start();
    let (mut a, mut b) = (server.client(), server.client());
    let got: Option<String> =
        redis::cmd("SET").arg(&["lock:job", "a", "NX", "PX", "30000"]).query(&mut a).unwrap();
    assert_eq!(got.as_deref(), Some("OK"));
    let refused: Option<String> =
        redis::cmd("SET").arg(&["lock:job", "b", "NX", "PX", "30000"]).query(&mut b).unwrap();
    assert_eq!(refused, None);
    let ttl: i64 = b.pttl("lock:job").unwrap();
    assert!(ttl > 0 && ttl <= 30_000, "pttl {ttl}");
    let owner: String = b.get("lock:job").unwrap();
    assert_eq!(owner, "a");
    let deleted: i64 = a.del("lock:job").unwrap();
    assert_eq!(deleted, 1);
    let now_b: Option<String> =
        redis::cmd("SET").arg(&["lock:job", "b", "NX", "PX", "30000"]).query(&mut b).unwrap();
    assert_eq!(now_b.as_deref(), Some("OK"));
    // redis-py style: set(key, value, ex=60) / get / delete.
    let _: () = a.set_ex("other", "v", 60).unwrap();
    let v: String = a.get("other").unwrap();
    assert_eq!(v, "v");
    let ttl: i64 = a.ttl("other").unwrap();
    assert_eq!(ttl, 60);
}

#[test]
fn a_blocking_wait_is_granted_when_the_holder_releases() {
    let server = TestServer::start();
    let mut holder = server.client();
    let (t1, lease) = acquire(&mut holder, &["L", "10000"]).unwrap().unwrap();
    assert_eq!(lease, 10_000);
    let mut waiter = server.client();
    // The thread hands the connection back: closing it would release the hold it was granted.
    let handle =
        thread::spawn(move || (acquire(&mut waiter, &["L", "10000", "WAIT", "10000"]).unwrap(), waiter));
    let mut observer = server.client();
    wait_for_waiters(&mut observer, "L", 1);
    let released: i64 = redis::cmd("LOCK.RELEASE").arg("L").arg(t1).query(&mut holder).unwrap();
    assert_eq!(released, 1);
    let (granted, _waiter) = handle.join().unwrap();
    let (t2, _) = granted.expect("granted after the release");
    assert!(t2 > t1, "token {t2} after {t1}");
    let live: i64 = redis::cmd("FENCE.CHECK").arg("L").arg(t2).query(&mut observer).unwrap();
    assert_eq!(live, 1);
}

#[test]
fn three_waiters_are_granted_in_arrival_order() {
    let server = TestServer::start();
    let mut holder = server.client();
    let (t, _) = acquire(&mut holder, &["L", "10000"]).unwrap().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut observer = server.client();
    let mut handles = Vec::new();
    for i in 0..3 {
        let mut con = server.client();
        let order = order.clone();
        handles.push(thread::spawn(move || {
            let (token, _) = acquire(&mut con, &["L", "10000", "WAIT", "15000"]).unwrap().expect("granted");
            order.lock().unwrap().push(i);
            let _: i64 = redis::cmd("LOCK.RELEASE").arg("L").arg(token).query(&mut con).unwrap();
        }));
        wait_for_waiters(&mut observer, "L", i + 1);
    }
    let _: i64 = redis::cmd("LOCK.RELEASE").arg("L").arg(t).query(&mut holder).unwrap();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
}

#[test]
fn a_wait_that_times_out_returns_nil() {
    let server = TestServer::start();
    let (mut a, mut b) = (server.client(), server.client());
    acquire(&mut a, &["L", "10000"]).unwrap().unwrap();
    assert_eq!(acquire(&mut b, &["L", "10000", "WAIT", "200"]).unwrap(), None);
    assert_eq!(acquire(&mut b, &["L", "10000"]).unwrap(), None);
    // The connection is still usable after the timeout.
    let pong: String = redis::cmd("PING").query(&mut b).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn a_disconnect_releases_holds_but_keep_survives_until_its_lease() {
    let server = TestServer::start();
    let mut a = server.client();
    acquire(&mut a, &["plain", "60000"]).unwrap().unwrap();
    let (kept, _) = acquire(&mut a, &["kept", "1500", "KEEP"]).unwrap().unwrap();
    drop(a);
    let mut b = server.client();
    let plain = acquire(&mut b, &["plain", "60000", "WAIT", "5000"]).unwrap();
    assert!(plain.is_some(), "the closed connection's hold was released");
    assert_eq!(acquire(&mut b, &["kept", "1000"]).unwrap(), None, "KEEP outlives its connection");
    let live: i64 = redis::cmd("FENCE.CHECK").arg("kept").arg(kept).query(&mut b).unwrap();
    assert_eq!(live, 1);
    let later = acquire(&mut b, &["kept", "1000", "WAIT", "10000"]).unwrap();
    assert!(later.is_some(), "granted once the KEEP hold's lease ran out");
}

#[test]
fn a_deadlock_between_two_connections_is_refused() {
    let server = TestServer::start();
    let (mut a, mut b) = (server.client(), server.client());
    acquire(&mut a, &["A", "10000"]).unwrap().unwrap();
    let (tb, _) = acquire(&mut b, &["B", "10000"]).unwrap().unwrap();
    let handle = thread::spawn(move || acquire(&mut a, &["B", "10000", "WAIT", "10000"]).unwrap());
    let mut observer = server.client();
    wait_for_waiters(&mut observer, "B", 1);
    let err = acquire(&mut b, &["A", "10000", "WAIT", "10000"]).unwrap_err();
    assert_eq!(err.code(), Some("DEADLOCK"), "{err}");
    assert!(err.to_string().contains("waits for 'A'"), "{err}");
    // b gives up B: a's wait is granted, and b's connection still works.
    let _: i64 = redis::cmd("LOCK.RELEASE").arg("B").arg(tb).query(&mut b).unwrap();
    assert!(handle.join().unwrap().is_some());
}

#[test]
fn semaphores_grant_up_to_their_limit() {
    let server = TestServer::start();
    let mut cons: Vec<_> = (0..3).map(|_| server.client()).collect();
    let sem = |con: &mut redis::Connection, wait: &str| -> Option<(u64, u64)> {
        redis::cmd("SEM.ACQUIRE").arg(&["pool", "2", "10000", "WAIT", wait]).query(con).unwrap()
    };
    let (t0, _) = sem(&mut cons[0], "0").unwrap();
    sem(&mut cons[1], "0").unwrap();
    assert_eq!(sem(&mut cons[2], "0"), None);
    let _: i64 = redis::cmd("SEM.RELEASE").arg("pool").arg(t0).query(&mut cons[0]).unwrap();
    assert!(sem(&mut cons[2], "1000").is_some());
    let err = redis::cmd("LOCK.ACQUIRE").arg(&["pool", "1000"]).query::<Value>(&mut cons[0]).unwrap_err();
    assert_eq!(err.code(), Some("WRONGTYPE"));
}

#[test]
fn a_fenced_set_is_refused_after_the_lock_moved_on() {
    let server = TestServer::start();
    let (mut a, mut b) = (server.client(), server.client());
    let (t1, _) = acquire(&mut a, &["L", "300"]).unwrap().unwrap();
    let ok: String = redis::cmd("SET").arg(&["data", "from-a", "FENCE", "L"]).arg(t1).query(&mut a).unwrap();
    assert_eq!(ok, "OK");
    // a stalls past its lease; b takes the lock.
    let (t2, _) = acquire(&mut b, &["L", "10000", "WAIT", "5000"]).unwrap().unwrap();
    assert!(t2 > t1);
    let err =
        redis::cmd("SET").arg(&["data", "late-a", "FENCE", "L"]).arg(t1).query::<Value>(&mut a).unwrap_err();
    assert_eq!(err.code(), Some("FENCED"), "{err}");
    let value: String = b.get("data").unwrap();
    assert_eq!(value, "from-a");
    let renew = redis::cmd("LOCK.RENEW").arg("L").arg(t1).arg(1000).query::<Value>(&mut a).unwrap_err();
    assert_eq!(renew.code(), Some("LOST"));
}

#[test]
fn hello_3_switches_the_connection_to_resp3_maps() {
    let server = TestServer::start();
    let mut raw = server.raw();
    let hello = common::exchange(&mut raw, b"HELLO 3\r\n", 1);
    assert_eq!(hello[0], b'%', "HELLO 3 replies with a map: {:?}", String::from_utf8_lossy(&hello));
    // Drain the rest of the HELLO map before the next request.
    std::thread::sleep(Duration::from_millis(100));
    raw.set_nonblocking(true).unwrap();
    let mut sink = [0u8; 4096];
    let _ = std::io::Read::read(&mut raw, &mut sink);
    raw.set_nonblocking(false).unwrap();
    let info = common::exchange(&mut raw, b"LOCK.INFO nothing\r\n", 1);
    assert_eq!(info[0], b'%', "LOCK.INFO is a map in RESP3: {:?}", String::from_utf8_lossy(&info));
}

#[test]
fn graceful_shutdown_on_sigterm() {
    let mut server = TestServer::start();
    let mut a = server.client();
    acquire(&mut a, &["L", "10000"]).unwrap().unwrap();
    let status =
        std::process::Command::new("kill").arg("-TERM").arg(server.pid().to_string()).status().unwrap();
    assert!(status.success());
    assert_eq!(server.wait_exit(), Some(0));
}

#[test]
fn info_reports_every_section_with_live_figures() {
    let server = TestServer::start();
    let mut c = server.client();
    let (token, _) = acquire(&mut c, &["L", "10000"]).unwrap().unwrap();
    let info: String = redis::cmd("INFO").query(&mut c).unwrap();
    for section in ["# Server", "# Clients", "# Memory", "# Stats", "# Locks", "# Queues", "# Raft"] {
        assert!(info.contains(section), "INFO lacks {section}:\n{info}");
    }
    assert!(info.contains("holds:1\r\n"), "{info}");
    assert!(info.contains(&format!("last_fencing_token:{token}\r\n")), "{info}");
    assert!(info.contains("leader:1\r\n"), "{info}");
    let only_locks: String = redis::cmd("INFO").arg("locks").query(&mut c).unwrap();
    assert!(only_locks.starts_with("# Locks") && !only_locks.contains("# Raft"), "{only_locks}");
}
