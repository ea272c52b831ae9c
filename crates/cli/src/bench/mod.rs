//! `turnstile bench`: load one workload onto Turnstile and, in the same invocation, onto its peer
//! (Redis or RabbitMQ), one target after the other, and print one table to compare them.
//!
//! ```text
//!  run ─┬─ locks / queues / kv ─► resp::run   over RESP2: Turnstile and Redis
//!       └─ amqp ────────────────► amqp::run   over AMQP 0-9-1: Turnstile and RabbitMQ
//!            each: every --target answers? ─► measure each in turn ─► a table (or JSON), a row per target
//! ```
//!
//! | file | what |
//! |---|---|
//! | `args.rs` | the command line: every flag of both protocols, the workloads, sizes |
//! | `report.rs` | what both protocols share: a run's phases and progress bar, its report, errors on one line, the table |
//! | `resp/mod.rs` | the RESP workloads: targets, settings, measuring, the row |
//! | `resp/client.rs` | one client's loop, and the commands one op sends to Turnstile or to Redis |
//! | `amqp/mod.rs` | `bench amqp`: publishers with confirms and consumers with acks on one queue |
//! | `amqp/ledger.rs` | the stamp in every body, and the ledger of what was confirmed and delivered |
//! | `peers.rs` | (tests) the servers the tests measure: Turnstile in this process, `redis-server` |
//!
//! `resp` and `amqp` do not use each other: what they share is in `args.rs` and `report.rs`.

mod amqp;
mod args;
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
    if args.workload == Workload::Amqp {
        return amqp::run(&args).await;
    }
    resp::run(&args, server).await
}
