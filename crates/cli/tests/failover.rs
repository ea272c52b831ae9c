//! The leader of a 3-node cluster is killed with `kill -9` again and again while clients take
//! locks and push, pop and ack messages through every node. The history of what was
//! acknowledged is then checked:
//! - every acknowledged push was delivered, or is still in the queue at the end;
//! - no two holds of one lock overlap while both holders could believe they held it (from the
//!   grant's reply until the release was sent or the lease, counted from the acquire's send,
//!   ran out), and tokens increase in the order the holds began.
//!
//! Bounded: a fixed number of kills, every wait capped; nothing asserts how long anything took.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{TestCluster, WAIT};
use common::until;
use redis::Value;

const KILLS: usize = 10;
/// Lock leases: short, so a hold whose holder lost track of it (its node died) frees soon.
const LEASE_MS: u64 = 2_000;
const LOCKS: [&str; 2] = ["a", "b"];

/// The RESP addresses of the live nodes, as the killer restarts them.
type Addrs = Arc<Mutex<Vec<String>>>;

/// A connection to one of the nodes, rotating to the next after an error.
struct Client {
    addrs: Addrs,
    next: usize,
    con: Option<redis::Connection>,
}

impl Client {
    fn new(addrs: Addrs, first: usize) -> Client {
        Client { addrs, next: first, con: None }
    }

    /// Runs `cmd`; on any error (a refusal, a dead node) the connection is dropped and the next
    /// call goes to the next node.
    fn call(&mut self, cmd: &redis::Cmd) -> Option<Value> {
        if self.con.is_none() {
            let addr = {
                let addrs = self.addrs.lock().unwrap();
                addrs[self.next % addrs.len()].clone()
            };
            self.next += 1;
            let client = redis::Client::open(format!("redis://{addr}")).ok()?;
            let con = client.get_connection_with_timeout(Duration::from_secs(2)).ok()?;
            con.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
            self.con = Some(con);
        }
        match cmd.query::<Value>(self.con.as_mut()?) {
            Ok(value) => Some(value),
            Err(_) => {
                self.con = None;
                None
            }
        }
    }
}

/// One hold as its client saw it.
#[derive(Debug, Clone)]
struct Hold {
    lock: &'static str,
    token: i64,
    /// When the grant's reply arrived.
    from: Instant,
    /// When the release was sent, or the lease (from the acquire's send) ran out: whichever
    /// came first.
    until: Instant,
}

#[derive(Debug, Default)]
struct History {
    holds: Vec<Hold>,
    pushed: BTreeSet<String>,
    delivered: BTreeSet<String>,
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

/// `[[id, receipt, payload, deliveries], ...]` → (receipt, payload) of each.
fn deliveries(v: &Value) -> Vec<(i64, String)> {
    let Value::Array(items) = v else { return Vec::new() };
    items
        .iter()
        .filter_map(|d| match d {
            Value::Array(parts) => match parts.as_slice() {
                [_, Value::Int(receipt), Value::BulkString(payload), _] => {
                    Some((*receipt, String::from_utf8_lossy(payload).into_owned()))
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn leader_kills_under_load_lose_no_acknowledged_push_and_grant_no_lock_twice() {
    let mut cluster = TestCluster::start(3, &[]);
    let addrs: Addrs = Arc::new(Mutex::new((0..3).map(|i| cluster.node(i).addr.clone()).collect()));
    let history = Arc::new(Mutex::new(History::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();

    // Lock takers, two per lock, each starting on another node.
    for (i, lock) in LOCKS.iter().cycle().take(4).enumerate() {
        let (addrs, history, stop) = (addrs.clone(), history.clone(), stop.clone());
        workers.push(std::thread::spawn(move || {
            let mut client = Client::new(addrs, i);
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let Some(reply) = client.call(redis::cmd("LOCK.ACQUIRE").arg(*lock).arg(LEASE_MS)) else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let from = Instant::now();
                let Value::Array(grant) = reply else { continue };
                let Some(token) = grant.first().and_then(int) else { continue };
                std::thread::sleep(Duration::from_millis(5));
                let released = Instant::now();
                client.call(redis::cmd("LOCK.RELEASE").arg(*lock).arg(token));
                let until = released.min(sent + Duration::from_millis(LEASE_MS));
                history.lock().unwrap().holds.push(Hold { lock, token, from, until });
            }
        }));
    }
    // Pushers and consumers, through every node.
    for i in 0..2 {
        let (pusher_addrs, pushed, stop_pushing) = (addrs.clone(), history.clone(), stop.clone());
        workers.push(std::thread::spawn(move || {
            let (addrs, history, stop) = (pusher_addrs, pushed, stop_pushing);
            let mut client = Client::new(addrs, i);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let payload = format!("p{i}-{n}");
                n += 1;
                if client.call(redis::cmd("Q.PUSH").arg("jobs").arg(&payload)).and_then(|v| int(&v)).is_some()
                {
                    history.lock().unwrap().pushed.insert(payload);
                }
            }
        }));
        let (addrs, history, stop) = (addrs.clone(), history.clone(), stop.clone());
        workers.push(std::thread::spawn(move || {
            let mut client = Client::new(addrs, i + 1);
            while !stop.load(Ordering::Relaxed) {
                let Some(reply) =
                    client.call(redis::cmd("Q.POP").arg("jobs").arg("COUNT").arg(10).arg("LEASE").arg(2_000))
                else {
                    continue;
                };
                for (receipt, payload) in deliveries(&reply) {
                    history.lock().unwrap().delivered.insert(payload);
                    client.call(redis::cmd("Q.ACK").arg("jobs").arg(receipt));
                }
            }
        }));
    }

    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_millis(500));
        let killed = cluster.leader();
        cluster.kill9(killed);
        let live: Vec<usize> = (0..3).filter(|&i| i != killed).collect();
        let mut con = cluster.node(live[0]).client();
        until("a write succeeds after the kill", WAIT, || {
            redis::cmd("SET").arg("probe").arg("x").query::<String>(&mut con).is_ok()
        });
        cluster.restart(killed);
        addrs.lock().unwrap()[killed] = cluster.node(killed).addr.clone();
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("worker");
    }

    // Drain: what is still queued (or in flight under a lease that will run out) is popped now.
    let mut client = Client::new(addrs.clone(), 0);
    let drained_by = Instant::now() + WAIT;
    let mut history = Arc::try_unwrap(history).expect("workers done").into_inner().unwrap();
    loop {
        let missing: Vec<&String> = history.pushed.difference(&history.delivered).collect();
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < drained_by, "acknowledged pushes never delivered: {missing:?}");
        let reply = client.call(redis::cmd("Q.POP").arg("jobs").arg("COUNT").arg(100).arg("WAIT").arg(500));
        for (receipt, payload) in reply.as_ref().map(deliveries).unwrap_or_default() {
            history.delivered.insert(payload);
            client.call(redis::cmd("Q.ACK").arg("jobs").arg(receipt));
        }
    }
    assert!(history.pushed.len() > 50, "the load got through: {} pushes", history.pushed.len());

    // Locks: per lock, in the order holds began, each ends before the next begins, and tokens go up.
    let mut by_lock: BTreeMap<&str, Vec<Hold>> = BTreeMap::new();
    for hold in history.holds {
        by_lock.entry(hold.lock).or_default().push(hold);
    }
    for (lock, mut holds) in by_lock {
        assert!(holds.len() > 10, "lock {lock} was taken: {} holds", holds.len());
        holds.sort_by_key(|h| h.from);
        for pair in holds.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!(b.token > a.token, "lock {lock}: token {} after {}", b.token, a.token);
            assert!(
                b.from >= a.until,
                "lock {lock}: hold {} began while hold {} was still valid",
                b.token,
                a.token
            );
        }
    }
}
