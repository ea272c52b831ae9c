//! `turnstile bench`: load one workload onto Turnstile and, in the same invocation, onto its peer
//! (Redis, etcd or RabbitMQ), one target after the other, and print one table to compare them; or
//! time a cluster's failover.
//!
//! ```text
//!  run ─┬─ locks / queues / kv ─► resp::run      over RESP2: Turnstile and Redis; etcd (locks) over HTTP
//!       ├─ evalsha / multi ─────► resp::run      the same Lua and transaction commands to both
//!       ├─ amqp ────────────────► amqp::run      over AMQP 0-9-1: Turnstile and RabbitMQ
//!       │    each: every --target answers? ─► measure each in turn ─► a table (or JSON), a row per target
//!       └─ failover ────────────► failover::run  a 3-node cluster of this binary, its leader killed N times
//! ```
//!
//! | file | what |
//! |---|---|
//! | `args.rs` | the command line: every flag of both protocols, the workloads, sizes |
//! | `report.rs` | what both protocols share: a run's phases and progress bar, its report, errors on one line, the table |
//! | `resp/mod.rs` | the RESP workloads: targets, settings, measuring, the row |
//! | `resp/client.rs` | one client's loop, and the commands one op sends to Turnstile, Redis or etcd |
//! | `etcd/mod.rs` | etcd's lock cycle over its JSON gateway: a lease per client, lock, unlock |
//! | `etcd/http.rs` | a minimal HTTP/1.1 client: POST on a kept-alive connection, the response parsed |
//! | `amqp/mod.rs` | `bench amqp`: publishers with confirms and consumers with acks on one queue |
//! | `amqp/ledger.rs` | the stamp in every body, and the ledger of what was confirmed and delivered |
//! | `failover/mod.rs` | `bench failover`: the rounds (kill the leader, time the first write, rejoin), the figures |
//! | `failover/cluster.rs` | the cluster's processes: start, find the leader, kill, restart, catch up, clean up |
//! | `peers.rs` | (tests) the servers the tests measure: Turnstile in this process, `redis-server`, `etcd` |
//!
//! `resp`, `amqp` and `failover` do not use each other: what they share is in `args.rs` and `report.rs`.

mod amqp;
mod args;
mod etcd;
mod failover;
#[cfg(test)]
mod peers;
mod report;
mod resp;

pub use args::BenchArgs;
use args::Workload;

/// Runs the workload against every target in turn and prints one row per target.
/// `server` ("HOST:PORT", or a cluster's list: the first is taken) is the target when no
/// `--target` is given (the AMQP workload has a default target of its own).
pub async fn run(args: BenchArgs, server: &str) -> anyhow::Result<()> {
    match args.workload {
        Workload::Amqp => amqp::run(&args).await,
        Workload::Failover => failover::run(&args).await,
        Workload::Locks | Workload::Queues | Workload::Kv | Workload::Evalsha | Workload::Multi => {
            resp::run(&args, server).await
        }
    }
}
