//! The command line of `turnstile bench`: every flag (the RESP workloads' and `bench amqp`'s),
//! the workloads, and how a size is read.

use std::time::Duration;

use serde::Serialize;

/// `turnstile bench WORKLOAD`: measure one workload against one or more servers, side by side.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// What one op is: locks (acquire + release), queues (push + pop + ack), kv (SET + GET),
    /// evalsha (SET NX PX + EVALSHA of a lock's release script) or multi (MULTI, 3 commands,
    /// EXEC); or amqp: publishers with confirms and consumers with acks on one queue; or
    /// failover: kill -9 a 3-node cluster's leader, again and again, and time the first write
    /// after.
    #[arg(value_enum)]
    pub(super) workload: Workload,
    /// Concurrent clients, each on its own connection, each sending its next op once the last
    /// one is answered.
    #[arg(long, default_value_t = 50, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(super) clients: u32,
    /// How long each target is measured: "10s", "250ms", "5m".
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(super) duration: Duration,
    /// Load run before measuring and left out of the figures, so connections, allocators and
    /// the log are warm.
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(super) warmup: Duration,
    /// Lock, queue or key names the clients share (client i uses name i % N); fewer names than
    /// clients means contention [default: one per client].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(super) keys: Option<u32>,
    /// Locks: how long a Turnstile acquire of a held lock waits in line (`LOCK.ACQUIRE ... WAIT
    /// ms`) instead of coming back empty-handed to be tried again; etcd's lock always waits, and
    /// Redis's `SET NX` cannot. Below the 10 s an op may take [default: 0s, no wait].
    #[arg(long, default_value = "0s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(super) wait: Duration,
    /// Payload (queues) or value (kv) size: bytes, or with a unit (KB = 1000, KiB = 1024, MB, MiB).
    #[arg(long, default_value = "1KiB", value_name = "SIZE", value_parser = parse_size)]
    pub(super) size: usize,
    /// A server to measure, turnstile://HOST:PORT or redis://HOST:PORT, or for locks
    /// etcd://HOST:PORT (its client URL); several comma-separated addresses spread the clients
    /// over a cluster's nodes (client i uses address i % N). amqp: an
    /// amqp://USER:PASS@HOST:PORT/VHOST URI. Repeat it to compare [default: turnstile://<server>;
    /// amqp: amqp://guest:guest@127.0.0.1:6672/%2f].
    #[arg(long = "target", value_name = "URL")]
    pub(super) targets: Vec<String>,
    /// PEM file of the CA certificates that sign the servers' certificates, for the targets
    /// under TLS: `rediss://` and `turnstiles://` (each server's certificate must name the host
    /// of its address).
    #[arg(long, value_name = "FILE")]
    pub(super) tls_ca: Option<std::path::PathBuf>,
    /// Print the results as JSON, and nothing else, on stdout.
    #[arg(long)]
    pub(super) json: bool,
    #[command(flatten)]
    pub(super) amqp: AmqpArgs,
    #[command(flatten)]
    pub(super) failover: FailoverArgs,
}

/// What one op does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Workload {
    /// Turnstile `LOCK.ACQUIRE` + `LOCK.RELEASE`; Redis `SET NX PX` + a compare-and-delete
    /// `EVAL`, the usual single-instance Redis lock.
    Locks,
    /// Turnstile `Q.PUSH` + `Q.POP` + `Q.ACK`; Redis's reliable-queue pattern `LPUSH` + `LMOVE`
    /// to a processing list + `LREM` from it.
    Queues,
    /// `SET` + `GET` of one key, the same commands on both.
    Kv,
    /// AMQP 0-9-1 publishers (with confirms) and consumers (with acks) on one durable queue, so
    /// Turnstile can be compared with RabbitMQ; see `amqp/`.
    Amqp,
    /// Starts a 3-node cluster of this binary, then kills its leader with SIGKILL `--kills`
    /// times and times each failover: kill → the first write a surviving node acknowledges;
    /// see `failover/`.
    Failover,
    /// redis-py's lock cycle, the same commands on both: `SET NX PX`, then `EVALSHA` of the
    /// compare-and-delete release script (loaded once per target with `SCRIPT LOAD`). Against
    /// Turnstile's own locks row, it tells what the Lua path costs a client that keeps its
    /// Redis lock code.
    Evalsha,
    /// `MULTI`, `SET` + `INCR` + `GET`, `EXEC` in one round trip, as a client library's
    /// transactional pipeline sends it; the same commands on both.
    Multi,
}

impl Workload {
    pub(super) fn name(self) -> &'static str {
        match self {
            Workload::Locks => "locks",
            Workload::Queues => "queues",
            Workload::Kv => "kv",
            Workload::Amqp => "amqp",
            Workload::Failover => "failover",
            Workload::Evalsha => "evalsha",
            Workload::Multi => "multi",
        }
    }

    /// The `n`th lock, queue or key name. All start with `bench:`, so nothing else is touched.
    pub(super) fn key(self, n: usize) -> String {
        let noun = match self {
            Workload::Locks => "lock",
            Workload::Queues => "queue",
            Workload::Kv => "kv",
            Workload::Amqp => "amqp",
            Workload::Failover => "failover",
            Workload::Evalsha => "evalsha",
            Workload::Multi => "multi",
        };
        format!("bench:{noun}:{n}")
    }
}

/// The flags only `bench amqp` reads (it also takes --duration, --warmup, --size, --target and
/// --json; --clients and --keys are for the RESP workloads).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Options of bench amqp")]
pub struct AmqpArgs {
    /// Publishers, each on its own connection, with publisher confirms on.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(super) publishers: u32,
    /// Unconfirmed messages each publisher may have out at once.
    #[arg(long, default_value_t = 128, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub(super) window: u32,
    /// Consumers, each on its own connection, acking every message.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(super) consumers: u32,
    /// Unacked deliveries each consumer may hold (basic.qos prefetch-count, per consumer).
    #[arg(long, default_value_t = 256, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub(super) prefetch: u16,
    /// The queue's x-queue-type (RabbitMQ: quorum or classic); a target's `?queue-type=TYPE`
    /// overrides it [default: none sent, the server's default].
    #[arg(long, value_name = "TYPE")]
    pub(super) queue_type: Option<String>,
    /// After publishing stops, how long to wait for every confirmed message to arrive before
    /// counting the missing ones as lost.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(super) drain_timeout: Duration,
}

/// The flags only `bench failover` reads (it also takes --json; it needs no server: it starts
/// its own cluster).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Options of bench failover")]
pub struct FailoverArgs {
    /// How many times the leader is killed; the cluster is whole again before each kill.
    #[arg(long, default_value_t = 20, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(super) kills: u32,
}

/// Reads a size: plain bytes ("100") or with a unit ("4KiB", "1 MB"). KB and MB are powers of
/// ten, KiB and MiB powers of two; units are not case-sensitive.
pub(crate) fn parse_size(text: &str) -> Result<usize, String> {
    let invalid = || format!("invalid size {text:?}: expected bytes, optionally with KB, KiB, MB or MiB");
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: usize = number.parse().map_err(|_| invalid())?;
    let unit: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" => 1024,
        "mb" => 1000 * 1000,
        "mib" => 1024 * 1024,
        _ => return Err(invalid()),
    };
    number.checked_mul(unit).ok_or_else(|| format!("size {text:?} is too large"))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A command line whose only arguments are `A`'s: for the `bench` and `bench amqp` argument tests.
    #[derive(Debug, clap::Parser)]
    pub(crate) struct ArgsCli<A: clap::Args> {
        #[command(flatten)]
        pub(crate) args: A,
    }

    pub(crate) fn parse_args<A: clap::Args>(line: &str) -> Result<A, clap::Error> {
        use clap::Parser;
        ArgsCli::<A>::try_parse_from(line.split_whitespace()).map(|cli| cli.args)
    }

    #[test]
    fn size_reads_bytes_and_units() {
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("1KB"), Ok(1000));
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert_eq!(parse_size("4kib"), Ok(4096));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("1 MiB"), Ok(1 << 20));
        assert_eq!(parse_size(" 16 "), Ok(16));
    }

    #[test]
    fn size_refuses_what_it_cannot_read() {
        for bad in ["", "KiB", "1.5KiB", "-1", "1GiB", "1 K i B", "ten"] {
            assert!(parse_size(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_size("99999999999999999999MiB").is_err());
        assert!(parse_size(&format!("{}MiB", usize::MAX)).unwrap_err().contains("too large"));
    }
}
