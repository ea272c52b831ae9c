//! Queues over RESP with the real binary and the `redis` crate as the client.

mod common;

use std::thread;

use common::TestServer;
use redis::Value;

type Delivery = (u64, u64, String, u64);

fn push(con: &mut redis::Connection, queue: &str, payload: &str, opts: &[&str]) -> u64 {
    redis::cmd("Q.PUSH").arg(queue).arg(payload).arg(opts).query(con).unwrap()
}

fn pop(con: &mut redis::Connection, queue: &str, opts: &[&str]) -> Vec<Delivery> {
    let got: Option<Vec<Delivery>> = redis::cmd("Q.POP").arg(queue).arg(opts).query(con).unwrap();
    got.unwrap_or_default()
}

fn stats(con: &mut redis::Connection, queue: &str) -> std::collections::HashMap<String, i64> {
    redis::cmd("Q.STATS").arg(queue).query(con).unwrap()
}

#[test]
fn push_pop_ack_and_nack() {
    let server = TestServer::start();
    let mut c = server.client();
    let id = push(&mut c, "jobs", "hello", &[]);
    let got = pop(&mut c, "jobs", &[]);
    assert_eq!(got.len(), 1);
    let (got_id, receipt, payload, deliveries) = got[0].clone();
    assert_eq!((got_id, payload.as_str(), deliveries), (id, "hello", 1));
    assert_eq!(pop(&mut c, "jobs", &[]), vec![], "nothing else is ready");
    let nacked: i64 = redis::cmd("Q.NACK").arg("jobs").arg(receipt).query(&mut c).unwrap();
    assert_eq!(nacked, 1);
    let again = pop(&mut c, "jobs", &[]);
    assert_eq!((again[0].0, again[0].3), (id, 2));
    assert!(again[0].1 > receipt, "a new receipt for the new delivery");
    // The old receipt is dead: acking it does nothing.
    let stale: i64 = redis::cmd("Q.ACK").arg("jobs").arg(receipt).query(&mut c).unwrap();
    assert_eq!(stale, 0);
    let acked: i64 = redis::cmd("Q.ACK").arg("jobs").arg(again[0].1).query(&mut c).unwrap();
    assert_eq!(acked, 1);
    let s = stats(&mut c, "jobs");
    assert_eq!((s["ready"], s["in-flight"], s["acked"], s["pushed"]), (0, 0, 1, 1));
}

#[test]
fn a_waiting_pop_is_served_by_a_later_push() {
    let server = TestServer::start();
    let mut consumer = server.client();
    let handle = thread::spawn(move || pop(&mut consumer, "jobs", &["WAIT", "10000"]));
    let mut producer = server.client();
    for _ in 0..500 {
        if stats_or_empty(&mut producer, "jobs").get("waiting-pops") == Some(&1) {
            break;
        }
        thread::sleep(std::time::Duration::from_millis(10));
    }
    let id = push(&mut producer, "jobs", "wake", &[]);
    let got = handle.join().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0, got[0].2.as_str()), (id, "wake"));
    let mut c = server.client();
    assert_eq!(pop(&mut c, "empty", &["WAIT", "150"]), vec![], "a wait that times out returns nil");
}

fn stats_or_empty(con: &mut redis::Connection, queue: &str) -> std::collections::HashMap<String, i64> {
    redis::cmd("Q.STATS").arg(queue).query(con).unwrap_or_default()
}

#[test]
fn extend_keeps_a_delivery_and_lost_leases_redeliver() {
    let server = TestServer::start();
    let mut c = server.client();
    let _: i64 = redis::cmd("Q.CREATE").arg(&["q", "LEASE", "300"]).query(&mut c).unwrap();
    push(&mut c, "q", "m", &[]);
    let first = pop(&mut c, "q", &[]);
    let extended: i64 = redis::cmd("Q.EXTEND").arg("q").arg(first[0].1).arg(60_000).query(&mut c).unwrap();
    assert_eq!(extended, 60_000);
    let _: i64 = redis::cmd("Q.NACK").arg("q").arg(first[0].1).query(&mut c).unwrap();
    let second = pop(&mut c, "q", &[]);
    // Not extended this time: the lease runs out and the message comes back by itself.
    let third = pop(&mut c, "q", &["WAIT", "5000"]);
    assert_eq!(third[0].0, second[0].0);
    assert_eq!(third[0].3, 3);
    let lost = redis::cmd("Q.EXTEND").arg("q").arg(second[0].1).arg(1000).query::<Value>(&mut c).unwrap_err();
    assert_eq!(lost.code(), Some("LOST"));
}

#[test]
fn messages_past_max_deliveries_go_to_the_dead_letter_queue() {
    let server = TestServer::start();
    let mut c = server.client();
    let created: i64 =
        redis::cmd("Q.CREATE").arg(&["work", "MAXDELIVER", "2", "DLQ", "work.dead"]).query(&mut c).unwrap();
    assert_eq!(created, 1);
    let id = push(&mut c, "work", "poison", &[]);
    for _ in 0..2 {
        let d = pop(&mut c, "work", &[]);
        let _: i64 = redis::cmd("Q.NACK").arg("work").arg(d[0].1).query(&mut c).unwrap();
    }
    assert_eq!(pop(&mut c, "work", &[]), vec![]);
    let dead = pop(&mut c, "work.dead", &[]);
    assert_eq!((dead[0].0, dead[0].2.as_str()), (id, "poison"));
    let s = stats(&mut c, "work");
    assert_eq!(s["dead-lettered"], 1);
    // Redrive puts it back.
    let _: i64 = redis::cmd("Q.NACK").arg("work.dead").arg(dead[0].1).query(&mut c).unwrap();
    let moved: i64 = redis::cmd("Q.REDRIVE").arg(&["work.dead", "work"]).query(&mut c).unwrap();
    assert_eq!(moved, 1);
    assert_eq!(pop(&mut c, "work", &[])[0].0, id);
}

#[test]
fn a_delayed_message_appears_once_due() {
    let server = TestServer::start();
    let mut c = server.client();
    let id = push(&mut c, "later", "x", &["DELAY", "400"]);
    assert_eq!(pop(&mut c, "later", &[]), vec![], "not yet due");
    assert_eq!(stats(&mut c, "later")["delayed"], 1);
    let got = pop(&mut c, "later", &["WAIT", "5000"]);
    assert_eq!(got[0].0, id);
}

#[test]
fn priority_order_then_group_order() {
    let server = TestServer::start();
    let mut c = server.client();
    push(&mut c, "p", "low", &["PRIORITY", "1"]);
    push(&mut c, "p", "high", &["PRIORITY", "9"]);
    push(&mut c, "p", "mid", &["PRIORITY", "5"]);
    push(&mut c, "p", "high2", &["PRIORITY", "9"]);
    let order: Vec<String> = pop(&mut c, "p", &["COUNT", "10"]).into_iter().map(|d| d.2).collect();
    assert_eq!(order, vec!["high", "high2", "mid", "low"]);

    push(&mut c, "g", "a1", &["GROUP", "a"]);
    push(&mut c, "g", "a2", &["GROUP", "a"]);
    push(&mut c, "g", "b1", &["GROUP", "b"]);
    let first: Vec<Delivery> = pop(&mut c, "g", &["COUNT", "10"]);
    let names: Vec<&str> = first.iter().map(|d| d.2.as_str()).collect();
    assert_eq!(names, vec!["a1", "b1"], "one message per group in flight");
    let _: i64 = redis::cmd("Q.ACK").arg("g").arg(first[0].1).query(&mut c).unwrap();
    let next = pop(&mut c, "g", &[]);
    assert_eq!(next[0].2, "a2");
}

#[test]
fn dedup_and_maxlen() {
    let server = TestServer::start();
    let mut c = server.client();
    let a = push(&mut c, "d", "x", &["DEDUP", "order-1"]);
    let b = push(&mut c, "d", "x", &["DEDUP", "order-1"]);
    assert_eq!(a, b);
    let _: i64 = redis::cmd("Q.CREATE").arg(&["small", "MAXLEN", "1"]).query(&mut c).unwrap();
    push(&mut c, "small", "1", &[]);
    let full = redis::cmd("Q.PUSH").arg(&["small", "2"]).query::<Value>(&mut c).unwrap_err();
    assert!(full.to_string().contains("full"), "{full}");
    assert_eq!(stats(&mut c, "small")["ready"], 1);
}

#[test]
fn a_closed_connection_returns_its_deliveries() {
    let server = TestServer::start();
    let mut a = server.client();
    let id = push(&mut a, "q", "m", &[]);
    assert_eq!(pop(&mut a, "q", &[])[0].0, id);
    drop(a);
    let mut b = server.client();
    let again = pop(&mut b, "q", &["WAIT", "5000"]);
    assert_eq!((again[0].0, again[0].3), (id, 2));
}

#[test]
fn a_waiting_command_in_a_pipeline_holds_back_the_ones_after_it() {
    let server = TestServer::start();
    let mut raw = server.raw();
    // The push comes after the waiting pop in the same pipeline, so it must not satisfy it:
    // the pop times out empty, then the push runs.
    let reply = common::exchange(&mut raw, b"Q.POP q WAIT 300\r\nQ.PUSH q x\r\n", 9);
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("*-1\r\n:"), "{text:?}");
    let mut c = server.client();
    assert_eq!(pop(&mut c, "q", &[]).len(), 1);
}
