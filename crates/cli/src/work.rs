//! `turnstile queue work QUEUE -- CMD`: a generic worker.
//!
//! ```text
//!  consumer (concurrency N, leases extended while CMD runs)
//!    └─► for each message: CMD < payload  (TURNSTILE_MESSAGE_ID, TURNSTILE_DELIVERIES, TURNSTILE_QUEUE)
//!          exit 0 ─► ack        otherwise ─► nack, delivered again after backoff × 2^(deliveries-1)
//!  SIGINT/SIGTERM once: take nothing new, let running CMDs finish; twice: quit now (the
//!  unfinished messages go back to the queue when the connection closes)
//! ```
//!
//! CMDs run side by side, so their output passes through us a whole line at a time: written
//! straight to the shared stdout, two CMDs' partial lines would splice into one.

use std::io::Write;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;
use turnstile_client::{Client, Delivery};

use crate::exit;

#[derive(Debug, Args)]
pub struct WorkArgs {
    pub queue: String,
    /// How many messages are worked on at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: u32,
    /// Lease of each delivery, extended (every third) while CMD runs.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease: Duration,
    /// Delay before a failed message is delivered again; doubles with each delivery.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub backoff: Duration,
    /// The longest delay between attempts.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub max_backoff: Duration,
    /// The command run for each message (the payload on its stdin).
    #[arg(required = true, last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// What happened to one message.
enum Outcome {
    Acked,
    Retried,
    /// The ack or nack found the delivery gone (lease ran out) or could not reach the server:
    /// it will come again.
    Lost,
}

pub async fn work(client: &Client, args: WorkArgs) -> anyhow::Result<ExitCode> {
    let mut consumer = client
        .consume(&args.queue)
        .concurrency(args.concurrency)
        .lease(args.lease)
        .auto_extend(true)
        .start()
        .await?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut running = JoinSet::new();
    let (mut acked, mut retried, mut lost) = (0u64, 0u64, 0u64);
    let mut stopping = false;
    loop {
        if stopping && running.is_empty() {
            break;
        }
        tokio::select! {
            next = consumer.next(), if !stopping => match next {
                Some(Ok(delivery)) => {
                    let job = Job { command: args.command.clone(), backoff: args.backoff, max_backoff: args.max_backoff };
                    running.spawn(job.run(delivery));
                }
                Some(Err(e)) => eprintln!("turnstile: {e}"),
                None => break,
            },
            Some(done) = running.join_next() => match done? {
                Ok(Outcome::Acked) => acked += 1,
                Ok(Outcome::Retried) => retried += 1,
                Ok(Outcome::Lost) => lost += 1,
                // CMD cannot be run at all: every message would fail the same way.
                Err(e) => return Err(e),
            },
            _ = interrupt.recv() => stopping = stop(&consumer, stopping, running.len())?,
            _ = terminate.recv() => stopping = stop(&consumer, stopping, running.len())?,
        }
    }
    consumer.finish().await;
    eprintln!(
        "turnstile: worked on {}: {acked} acked, {retried} to retry, {lost} to be delivered again (lease lost or server unreachable)",
        acked + retried + lost
    );
    Ok(ExitCode::from(exit::OK))
}

/// What an ack or nack came to. One that fails (the server is away) is not fatal to the worker:
/// the message comes back when its lease ends, and the consumer reconnects.
fn finished(id: u64, what: &str, result: turnstile_client::Result<bool>, done: Outcome) -> Outcome {
    match result {
        Ok(true) => done,
        Ok(false) => Outcome::Lost,
        Err(e) => {
            eprintln!("turnstile: message {id}: {what} failed ({e}); it will be delivered again");
            Outcome::Lost
        }
    }
}

/// The first signal stops taking messages; the second quits at once.
fn stop(consumer: &turnstile_client::Consumer, stopping: bool, running: usize) -> anyhow::Result<bool> {
    if stopping {
        anyhow::bail!("interrupted again: quitting; {running} unfinished message(s) go back to the queue");
    }
    consumer.stop();
    eprintln!("turnstile: stopping: finishing {running} running message(s) (signal again to quit now)");
    Ok(true)
}

struct Job {
    command: Vec<String>,
    backoff: Duration,
    max_backoff: Duration,
}

impl Job {
    async fn run(self, delivery: Delivery) -> anyhow::Result<Outcome> {
        let (program, rest) = self.command.split_first().context("no command given")?;
        let spawned = Command::new(program)
            .args(rest)
            .env("TURNSTILE_QUEUE", delivery.queue())
            .env("TURNSTILE_MESSAGE_ID", delivery.id.to_string())
            .env("TURNSTILE_DELIVERIES", delivery.deliveries.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                // Not the message's fault: give it back untouched (no delay) and stop.
                let _ = delivery.nack(Duration::ZERO).await;
                return Err(e).with_context(|| format!("cannot run {program}"));
            }
        };
        let mut stdin = child.stdin.take().context("CMD's stdin")?;
        let payload = delivery.payload.clone();
        // Written alongside the wait: a CMD that never reads its stdin must not block us.
        let feed = tokio::spawn(async move {
            let _ = stdin.write_all(&payload).await;
        });
        let stdout = tokio::spawn(pass_lines(child.stdout.take().context("CMD's stdout")?, Stream::Stdout));
        let stderr = tokio::spawn(pass_lines(child.stderr.take().context("CMD's stderr")?, Stream::Stderr));
        let status = child.wait().await?;
        feed.abort();
        // Everything CMD wrote is out before its message is settled. (A process CMD left behind
        // that holds the pipes open keeps this waiting, as it would keep a shell's `$(...)`.)
        let _ = tokio::join!(stdout, stderr);
        let (id, deliveries) = (delivery.id, delivery.deliveries);
        if status.success() {
            return Ok(finished(id, "ack", delivery.ack().await, Outcome::Acked));
        }
        let delay = self.delay(deliveries);
        eprintln!(
            "turnstile: message {id} (delivery {deliveries}): {program} failed ({status}); again in {}",
            humantime::format_duration(delay)
        );
        Ok(finished(id, "nack", delivery.nack(delay).await, Outcome::Retried))
    }

    /// `backoff × 2^(deliveries-1)`, at most `max_backoff`.
    fn delay(&self, deliveries: u32) -> Duration {
        let doublings = deliveries.saturating_sub(1).min(31);
        self.backoff.saturating_mul(1 << doublings).min(self.max_backoff)
    }
}

/// Our stdout or stderr, which every CMD's lines go to.
#[derive(Debug, Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// Copies CMD's output to ours a line at a time, each in one write under the stream's lock, so
/// lines of CMDs running at once never splice. A last line without a newline gets one.
async fn pass_lines(from: impl AsyncRead + Unpin, to: Stream) {
    let mut from = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        match from.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        // A short blocking write, as `println!` does; a reader that stops reading our stdout
        // stops us as it would have stopped CMD.
        let written = match to {
            Stream::Stdout => std::io::stdout().lock().write_all(&line),
            Stream::Stderr => std::io::stderr().lock().write_all(&line),
        };
        if written.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let job =
            Job { command: vec![], backoff: Duration::from_secs(1), max_backoff: Duration::from_secs(10) };
        let delays: Vec<u64> = (1..=6).map(|d| job.delay(d).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert_eq!(job.delay(u32::MAX), Duration::from_secs(10));
    }
}
