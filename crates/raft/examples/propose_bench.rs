//! Throughput of `Node::propose` on one node with the in-memory log.
//!
//! `cargo run --release -p turnstile-raft --example propose_bench`
//!
//! For C = 1, 8 and 50 concurrent proposers, each proposing `IncrBy` on its own key in a closed
//! loop (wait for the reply, propose again) for ~3 s: proposals/s, log entries/s and the average
//! number of commands per entry.

use std::time::{Duration, Instant};

use turnstile_core::{Command, Reply};
use turnstile_raft::{Node, NodeConfig};

const RUN: Duration = Duration::from_secs(3);

#[tokio::main]
async fn main() {
    let started = Instant::now();
    let node = Node::start(NodeConfig::default()).await.expect("start");
    println!("node started in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
    // Nobody consumes effects here; IncrBy makes none, but take the receiver anyway.
    let _effects = node.take_effects();

    println!("{:>4} {:>14} {:>12} {:>10} {:>10}", "C", "proposals/s", "entries/s", "avg batch", "max batch");
    for clients in [1usize, 8, 50] {
        let before = node.status();
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let node = node.clone();
            tasks.push(tokio::spawn(async move {
                let key = format!("bench-{clients}-{c}");
                let mut done = 0u64;
                while t0.elapsed() < RUN {
                    let reply = node.propose(Command::IncrBy { key: key.clone(), delta: 1 }).await.unwrap();
                    done += 1;
                    assert_eq!(reply, Reply::Int(i64::try_from(done).unwrap()));
                }
                done
            }));
        }
        let mut proposals = 0u64;
        for t in tasks {
            proposals += t.await.unwrap();
        }
        let secs = t0.elapsed().as_secs_f64();
        let after = node.status();
        let entries = after.entries_proposed - before.entries_proposed;
        let commands = after.commands_proposed - before.commands_proposed;
        assert_eq!(commands, proposals);
        println!(
            "{:>4} {:>14.0} {:>12.0} {:>10.2} {:>10}",
            clients,
            proposals as f64 / secs,
            entries as f64 / secs,
            commands as f64 / entries as f64,
            after.largest_batch,
        );
    }
    node.shutdown().await.expect("shutdown");
}
