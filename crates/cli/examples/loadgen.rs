//! A small closed-loop load generator for the lock and queue cycles, run against Turnstile or,
//! with the equivalent Redis commands, against Redis — so both are measured the same way.
//!
//! ```text
//! cargo run --release -p turnstile-cli --example loadgen -- turnstile 127.0.0.1:7379 lock 50 10
//! cargo run --release -p turnstile-cli --example loadgen -- redis     127.0.0.1:6379 queue 50 10
//!                                                           target    address        workload clients seconds
//! ```
//!
//! Workloads, one "cycle" each, every client on its own keys (no contention):
//! - `lock`:  Turnstile `LOCK.ACQUIRE k 30000` + `LOCK.RELEASE k token`;
//!   Redis `SET k v NX PX 30000` + compare-and-delete (`EVAL` of the usual GET==v → DEL script).
//! - `queue`: Turnstile `Q.PUSH q p` + `Q.POP q` + `Q.ACK q receipt`;
//!   Redis's reliable-queue pattern `LPUSH q p` + `LMOVE q processing RIGHT LEFT` + `LREM processing 1 p`.
//!
//! Prints cycles/s and the p50/p99/p99.9 latency of one cycle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const RELEASE_SCRIPT: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [target, addr, workload, clients, seconds] = args.as_slice() else {
        eprintln!("usage: loadgen turnstile|redis HOST:PORT lock|queue CLIENTS SECONDS");
        std::process::exit(2);
    };
    let clients: usize = clients.parse().expect("clients is a number");
    let duration = Duration::from_secs(seconds.parse().expect("seconds is a number"));
    let redis = match target.as_str() {
        "turnstile" => false,
        "redis" => true,
        other => panic!("unknown target {other}"),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let (addr, workload, stop) = (addr.clone(), workload.clone(), stop.clone());
            thread::spawn(move || run_client(i, &addr, &workload, redis, &stop))
        })
        .collect();
    thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut latencies: Vec<Duration> =
        handles.into_iter().flat_map(|h| h.join().expect("client thread")).collect();
    latencies.sort();
    let n = latencies.len();
    // Nearest rank: the latency below which `per_mille`/1000 of the cycles finished.
    let pct = |per_mille: usize| latencies[(n * per_mille / 1000).min(n - 1)];
    println!(
        "{target:9} {workload:5} clients={clients:3} cycles/s={:>8.0}  p50={:>7.3}ms  p99={:>7.3}ms  p99.9={:>7.3}ms",
        n as f64 / duration.as_secs_f64(),
        pct(500).as_secs_f64() * 1e3,
        pct(990).as_secs_f64() * 1e3,
        pct(999).as_secs_f64() * 1e3,
    );
}

fn run_client(i: usize, addr: &str, workload: &str, redis: bool, stop: &AtomicBool) -> Vec<Duration> {
    let client = redis::Client::open(format!("redis://{addr}/")).expect("valid address");
    let mut con = client.get_connection().expect("connects");
    let key = format!("bench:{i}");
    let mut latencies = Vec::with_capacity(100_000);
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        match (workload, redis) {
            ("lock", false) => {
                let (token, _lease): (u64, u64) =
                    redis::cmd("LOCK.ACQUIRE").arg(&key).arg(30_000).query(&mut con).expect("acquire");
                let released: i64 =
                    redis::cmd("LOCK.RELEASE").arg(&key).arg(token).query(&mut con).expect("release");
                assert_eq!(released, 1);
            }
            ("lock", true) => {
                let set: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg("me")
                    .arg("NX")
                    .arg("PX")
                    .arg(30_000)
                    .query(&mut con)
                    .expect("set");
                assert!(set.is_some());
                let released: i64 = redis::cmd("EVAL")
                    .arg(RELEASE_SCRIPT)
                    .arg(1)
                    .arg(&key)
                    .arg("me")
                    .query(&mut con)
                    .expect("eval");
                assert_eq!(released, 1);
            }
            ("queue", false) => {
                let _: u64 = redis::cmd("Q.PUSH").arg(&key).arg("payload").query(&mut con).expect("push");
                let got: Vec<(u64, u64, Vec<u8>, u64)> =
                    redis::cmd("Q.POP").arg(&key).query(&mut con).expect("pop");
                let acked: i64 = redis::cmd("Q.ACK").arg(&key).arg(got[0].1).query(&mut con).expect("ack");
                assert_eq!(acked, 1);
            }
            ("queue", true) => {
                let processing = format!("{key}:processing");
                let _: i64 = redis::cmd("LPUSH").arg(&key).arg("payload").query(&mut con).expect("lpush");
                let got: String = redis::cmd("LMOVE")
                    .arg(&key)
                    .arg(&processing)
                    .arg("RIGHT")
                    .arg("LEFT")
                    .query(&mut con)
                    .expect("lmove");
                let removed: i64 =
                    redis::cmd("LREM").arg(&processing).arg(1).arg(got).query(&mut con).expect("lrem");
                assert_eq!(removed, 1);
            }
            (other, _) => panic!("unknown workload {other}"),
        }
        latencies.push(start.elapsed());
    }
    latencies
}
