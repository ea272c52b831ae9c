//! `turnstile bench amqp`: publishers with confirms and consumers with manual acks on one durable
//! queue over AMQP 0-9-1, run against Turnstile's AMQP listener and RabbitMQ in one invocation.
//!
//! ```text
//!  run ─► every --target connects? ─► for each target, one after the other:
//!    declare a fresh durable queue ─► C consumers, each on its own connection (prefetch, manual ack)
//!                                  ─► P publishers, each on its own connection (confirm mode)
//!    publisher: while < W unconfirmed: basic.publish [run | publisher | seq | sent µs | padding]
//!               confirm ─► ledger (acked / nacked), confirm latency
//!    consumer:  delivery ─► ledger (first / duplicate / redelivered), end-to-end latency ─► basic.ack
//!    warmup ─► measured duration ─► publishers stop and wait for their confirms
//!           ─► drain until every confirmed message arrived (or --drain-timeout) ─► delete the queue
//!  ─► one table (or JSON) with a row per target
//! ```
//!
//! Each body starts with who sent it, its sequence number and when, so a consumer knows the
//! end-to-end latency (publish → delivery, one clock: the same process) and the ledger can say
//! afterwards which confirmed messages never arrived (lost) and which arrived twice.

mod ledger;

use std::hash::{BuildHasher, RandomState};
use std::io::IsTerminal;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use futures_util::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use lapin::message::DeliveryResult;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use serde::Serialize;

use super::args::BenchArgs;
use super::report::{CONNECT_TIMEOUT, Phases, Report, describe, progress_bar, render_table, watch};
use ledger::{Confirm, Ledger, Receipt, Stamp, Tally};

/// Measures every target in turn (the default one when no `--target` is given) and prints one
/// row per target.
pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let settings = Settings::new(args)?;
    let targets: Vec<AmqpTarget> = match &args.targets {
        urls if !urls.is_empty() => {
            urls.iter().map(|url| url.parse().map_err(anyhow::Error::msg)).collect::<anyhow::Result<_>>()?
        }
        _ => vec![DEFAULT_TARGET.parse().map_err(anyhow::Error::msg)?],
    };
    // A target that is down fails the command now, not after the ones before it took their time.
    for target in &targets {
        close(&connect(target).await?).await;
    }
    let show_progress = !args.json && std::io::stderr().is_terminal();
    let mut rows = Vec::with_capacity(targets.len());
    for target in &targets {
        let report = measure(target, &settings, show_progress).await?;
        if let Some(first) = &report.first_error {
            eprintln!("{target}: {} errors; the first: {first}", report.row.errors);
        }
        if !report.row.drained {
            eprintln!(
                "{target}: {} confirmed messages had not arrived {} after publishing stopped",
                report.row.tally.lost,
                humantime::format_duration(settings.drain_timeout)
            );
        }
        rows.push(report.row);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{}", settings.summary());
        print!("{}", table(&rows));
    }
    Ok(())
}

/// Turnstile's AMQP listener on its default port, as the guest user on vhost "/".
const DEFAULT_TARGET: &str = "amqp://guest:guest@127.0.0.1:6672/%2f";

/// One server to measure, from `amqp://USER:PASS@HOST:PORT/VHOST[?queue-type=TYPE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AmqpTarget {
    /// What the client connects to: the URI less the `queue-type` parameter.
    uri: String,
    /// The URI without user and password, for the table.
    shown: String,
    /// The queue's x-queue-type for this target; wins over `--queue-type`.
    queue_type: Option<String>,
}

impl FromStr for AmqpTarget {
    type Err = String;

    fn from_str(url: &str) -> Result<AmqpTarget, String> {
        let expected = "expected amqp://USER:PASS@HOST:PORT/VHOST (vhost / is %2f), \
                        optionally with ?queue-type=TYPE";
        let Some(rest) = url.strip_prefix("amqp://") else {
            return Err(format!("invalid target {url:?}: {expected}"));
        };
        let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut queue_type = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            match pair.split_once('=') {
                Some(("queue-type", kind)) if !kind.is_empty() => queue_type = Some(kind.to_owned()),
                Some(("queue-type", _)) => return Err(format!("empty queue-type in target {url:?}")),
                _ => kept.push(pair),
            }
        }
        let uri = match kept.as_slice() {
            [] => format!("amqp://{base}"),
            kept => format!("amqp://{base}?{}", kept.join("&")),
        };
        uri.parse::<lapin::uri::AMQPUri>().map_err(|e| format!("invalid target {url:?}: {e}: {expected}"))?;
        let authority = base.split('/').next().unwrap_or_default();
        let host_port = authority.rsplit_once('@').map_or(authority, |(_userinfo, host_port)| host_port);
        let has_port = host_port
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !has_port {
            return Err(format!("invalid address in target {url:?}: {expected}"));
        }
        let shown = format!("amqp://{host_port}{}", &base[authority.len()..]);
        Ok(AmqpTarget { uri, shown, queue_type })
    }
}

impl std::fmt::Display for AmqpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// The settings every target is measured with.
#[derive(Debug, Clone)]
struct Settings {
    publishers: usize,
    window: usize,
    consumers: usize,
    prefetch: u16,
    size: usize,
    duration: Duration,
    warmup: Duration,
    drain_timeout: Duration,
    /// `--queue-type`: for the targets that do not name their own.
    queue_type: Option<String>,
}

impl Settings {
    fn new(args: &BenchArgs) -> anyhow::Result<Settings> {
        anyhow::ensure!(!args.duration.is_zero(), "--duration must be more than 0");
        anyhow::ensure!(
            args.size >= Stamp::LEN,
            "--size must be at least {} bytes for amqp: every body starts with its publisher, \
             sequence number and send time",
            Stamp::LEN
        );
        let amqp = &args.amqp;
        Ok(Settings {
            publishers: usize::try_from(amqp.publishers)?,
            window: usize::try_from(amqp.window)?,
            consumers: usize::try_from(amqp.consumers)?,
            prefetch: amqp.prefetch,
            size: args.size,
            duration: args.duration,
            warmup: args.warmup,
            drain_timeout: amqp.drain_timeout,
            queue_type: amqp.queue_type.clone(),
        })
    }

    /// The x-queue-type a target's queue is declared with, if any.
    fn queue_type<'a>(&'a self, target: &'a AmqpTarget) -> Option<&'a str> {
        target.queue_type.as_deref().or(self.queue_type.as_deref())
    }

    /// One line above the table saying what was measured.
    fn summary(&self) -> String {
        format!(
            "amqp: {} publishers (confirms, up to {} unconfirmed each), {} consumers (manual ack, \
             prefetch {}), {}-byte persistent messages on one new durable queue per target; {} per \
             target after {} of warmup",
            self.publishers,
            self.window,
            self.consumers,
            self.prefetch,
            self.size,
            humantime::format_duration(self.duration),
            humantime::format_duration(self.warmup),
        )
    }
}

/// A publish whose frames are not written within this, or whose confirm does not come within
/// it, counts as an error: a server that stops answering must not hang the bench.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the drain checks whether every confirmed message has arrived.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// Persistent (AMQP delivery-mode 2): the server writes the message to disk.
const PERSISTENT: u8 = 2;

async fn connect(target: &AmqpTarget) -> anyhow::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name("turnstile bench amqp".into());
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&target.uri, properties)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context(format!(
            "cannot connect to {target} — is `turnstile server` or rabbitmq-server running?"
        ))),
        Err(_) => Err(anyhow!(
            "cannot connect to {target}: no answer within {}",
            humantime::format_duration(CONNECT_TIMEOUT)
        )),
    }
}

/// Closes a connection; its errors are of no interest once the figures are in.
async fn close(conn: &Connection) {
    let _ = tokio::time::timeout(CONNECT_TIMEOUT, conn.close(200, "bench done".into())).await;
}

/// What the publishers and consumers of one target run note, under one lock.
#[derive(Debug)]
struct State {
    ledger: Ledger,
    /// µs from the start of a publish to its ack, for publishes started in the measured window.
    confirm_latency: Histogram<u64>,
    /// µs from the start of a publish to the message's first delivery, for the same publishes.
    e2e_latency: Histogram<u64>,
    /// Acks of publishes started in the measured window.
    published: u64,
    /// First deliveries that arrived in the measured window.
    consumed: u64,
}

/// One run against one target, shared by its publishers, consumers and confirm tasks.
#[derive(Debug)]
struct Run {
    /// The run's mark in every body.
    id: u64,
    phases: Phases,
    state: Mutex<State>,
    /// Acked publishes, warmup included: what the progress bar shows.
    acked: AtomicU64,
    /// Set when the drain is over: consumers cancelled from then on are expected to be.
    closing: AtomicBool,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Run {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn note_error(&self, error: &anyhow::Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(PoisonError::into_inner);
        first.get_or_insert_with(|| describe(error));
    }

    /// Whether a publish started at `sent` is one of the measured ones.
    fn measured(&self, sent: Instant) -> bool {
        sent >= self.phases.measure_from
    }

    /// Notes how the confirm of `publisher`'s message `seq` (sent at `sent`) turned out.
    fn settle(
        &self,
        publisher: usize,
        seq: u64,
        sent: Instant,
        outcome: Result<lapin::Result<Confirmation>, tokio::time::error::Elapsed>,
    ) {
        let latency = sent.elapsed();
        let confirm = match outcome {
            Ok(Ok(Confirmation::Ack(_))) => Confirm::Acked,
            Ok(Ok(Confirmation::Nack(_))) => Confirm::Nacked,
            Ok(Ok(Confirmation::NotRequested)) => {
                self.note_error(&anyhow!("a publish was not confirmed: confirm mode is off"));
                Confirm::Failed
            }
            Ok(Err(e)) => {
                self.note_error(&anyhow::Error::new(e).context("publisher confirm"));
                Confirm::Failed
            }
            Err(_) => {
                let wait = humantime::format_duration(CONFIRM_TIMEOUT);
                self.note_error(&anyhow!("no publisher confirm within {wait}"));
                Confirm::Failed
            }
        };
        let mut state = self.state();
        state.ledger.confirmed(publisher, seq, confirm);
        if confirm == Confirm::Acked {
            self.acked.fetch_add(1, Ordering::Relaxed);
            if self.measured(sent) {
                record(&mut state.confirm_latency, latency);
                state.published += 1;
            }
        }
    }

    /// Notes one delivery and acks it.
    async fn on_delivery(&self, delivery: DeliveryResult) {
        let delivery = match delivery {
            Ok(Some(delivery)) => delivery,
            Ok(None) => {
                if !self.closing.load(Ordering::Relaxed) {
                    self.note_error(&anyhow!("the server cancelled a consumer"));
                }
                return;
            }
            Err(e) => {
                if !self.closing.load(Ordering::Relaxed) {
                    self.note_error(&anyhow::Error::new(e).context("consumer"));
                }
                return;
            }
        };
        let arrived = Instant::now();
        let stamp = Stamp::read(&delivery.data).filter(|stamp| stamp.run == self.id);
        let sent =
            stamp.and_then(|stamp| self.phases.start.checked_add(Duration::from_micros(stamp.sent_us)));
        match (stamp, sent) {
            (Some(stamp), Some(sent)) => {
                let mut state = self.state();
                let receipt = state.ledger.delivered(stamp.publisher, stamp.seq, delivery.redelivered);
                if receipt == Receipt::First {
                    if self.measured(sent) {
                        record(&mut state.e2e_latency, arrived.saturating_duration_since(sent));
                    }
                    let in_window = self.measured(arrived) && arrived < self.phases.end;
                    state.consumed += u64::from(in_window);
                }
            }
            _ => {
                self.state().ledger.unknown();
                self.note_error(&anyhow!("a delivery this run did not publish"));
            }
        }
        if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await
            && !self.closing.load(Ordering::Relaxed)
        {
            self.note_error(&anyhow::Error::new(e).context("basic.ack"));
        }
    }
}

/// Records a latency in µs; the histogram grows as far as the latencies seen.
fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    if histogram.record(micros).is_err() {
        histogram.saturating_record(micros);
    }
}

/// One publisher: publishes while fewer than `window` of its messages are unconfirmed, until
/// the run ends; then waits for its confirms. A failed publish ends it (its connection is gone).
///
/// A lapin publish resolves once its frames are on the socket; the publishes in the window are
/// polled together (one task, so each takes its delivery tag and queues its frames in one step,
/// in order) so that several go out in one write instead of one write per message.
async fn publish(run: Arc<Run>, publisher: usize, channel: Channel, queue: ShortString, settings: Settings) {
    let properties = BasicProperties::default().with_delivery_mode(PERSISTENT);
    let publisher_id = u32::try_from(publisher).unwrap_or(u32::MAX);
    let mut in_flight = FuturesUnordered::new();
    let mut failed = false;
    loop {
        while !failed && in_flight.len() < settings.window {
            let sent = Instant::now();
            if sent >= run.phases.end {
                break;
            }
            let seq = run.state().ledger.sent(publisher);
            let sent_us = u64::try_from((sent - run.phases.start).as_micros()).unwrap_or(u64::MAX);
            let body = Stamp { run: run.id, publisher: publisher_id, seq, sent_us }.body(settings.size);
            let (run, channel, queue, properties) =
                (run.clone(), channel.clone(), queue.clone(), properties.clone());
            in_flight.push(async move {
                let publishing = channel.basic_publish(
                    ShortString::from(""),
                    queue,
                    BasicPublishOptions::default(),
                    &body,
                    properties,
                );
                let failure = match tokio::time::timeout(CONFIRM_TIMEOUT, publishing).await {
                    Ok(Ok(confirm)) => {
                        let outcome = tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await;
                        run.settle(publisher, seq, sent, outcome);
                        return true;
                    }
                    Ok(Err(e)) => anyhow::Error::new(e).context("basic.publish"),
                    Err(_) => anyhow!(
                        "basic.publish not sent within {}",
                        humantime::format_duration(CONFIRM_TIMEOUT)
                    ),
                };
                run.state().ledger.confirmed(publisher, seq, Confirm::Failed);
                run.note_error(&failure);
                false
            });
        }
        match in_flight.next().await {
            Some(published) => failed |= !published,
            // Nothing in flight: the run is over (or publishing failed) and every confirm is in.
            None => break,
        }
    }
}

/// Opens a consumer on its own channel; its deliveries go to [`Run::on_delivery`].
async fn consume(
    run: &Arc<Run>,
    conn: &Connection,
    queue: &ShortString,
    prefetch: u16,
) -> anyhow::Result<()> {
    let channel = conn.create_channel().await.context("channel.open")?;
    channel.basic_qos(prefetch, BasicQosOptions::default()).await.context("basic.qos")?;
    let consumer = channel
        .basic_consume(
            queue.clone(),
            ShortString::from(""),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .context("basic.consume")?;
    let run = run.clone();
    consumer.set_delegate(move |delivery: DeliveryResult| {
        let run = run.clone();
        async move { run.on_delivery(delivery).await }
    });
    Ok(())
}

/// One row of the final table (and one object of the JSON array).
#[derive(Debug, Clone, Serialize)]
struct Row {
    target: String,
    /// The x-queue-type sent, or "default".
    queue_type: String,
    publishers: usize,
    consumers: usize,
    /// Acked publishes started in the measured window, per second.
    published_per_sec: f64,
    /// First deliveries in the measured window, per second.
    consumed_per_sec: f64,
    e2e_p50_ms: f64,
    e2e_p99_ms: f64,
    e2e_p99_9_ms: f64,
    e2e_max_ms: f64,
    confirm_p50_ms: f64,
    confirm_p99_ms: f64,
    #[serde(flatten)]
    tally: Tally,
    /// Whether every acked message arrived before --drain-timeout.
    drained: bool,
    /// Failed publishes, confirms and acks, broken consumers, foreign deliveries.
    errors: u64,
}

/// Declares a new queue, starts the consumers and then the publishers, runs them for the warmup
/// and the duration, drains, deletes the queue and sums up.
async fn measure(
    target: &AmqpTarget,
    settings: &Settings,
    show_progress: bool,
) -> anyhow::Result<Report<Row>> {
    let id = RandomState::new().hash_one(std::process::id());
    let queue = ShortString::from(format!("bench.amqp.{id:016x}"));
    let admin = connect(target).await?;
    let admin_channel = admin.create_channel().await.context("channel.open")?;
    let mut arguments = FieldTable::default();
    let queue_type = settings.queue_type(target);
    if let Some(kind) = queue_type {
        arguments.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from(kind)));
    }
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    admin_channel
        .queue_declare(queue.clone(), durable, arguments)
        .await
        .with_context(|| format!("declaring queue {queue} on {target}"))?;

    // Connections first: their handshakes are not part of the run.
    let mut consumer_conns = Vec::with_capacity(settings.consumers);
    for _ in 0..settings.consumers {
        consumer_conns.push(connect(target).await?);
    }
    let mut publishers = Vec::with_capacity(settings.publishers);
    for _ in 0..settings.publishers {
        let conn = connect(target).await?;
        let channel = conn.create_channel().await.context("channel.open")?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.context("confirm.select")?;
        publishers.push((conn, channel));
    }

    let start = Instant::now();
    let run = Arc::new(Run {
        id,
        phases: Phases {
            start,
            measure_from: start + settings.warmup,
            end: start + settings.warmup + settings.duration,
        },
        state: Mutex::new(State {
            ledger: Ledger::new(settings.publishers),
            confirm_latency: Histogram::new(3)?,
            e2e_latency: Histogram::new(3)?,
            published: 0,
            consumed: 0,
        }),
        acked: AtomicU64::new(0),
        closing: AtomicBool::new(false),
        errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
    });
    for conn in &consumer_conns {
        consume(&run, conn, &queue, settings.prefetch).await?;
    }
    let tasks: Vec<_> = publishers
        .iter()
        .enumerate()
        .map(|(publisher, (_conn, channel))| {
            tokio::spawn(publish(run.clone(), publisher, channel.clone(), queue.clone(), settings.clone()))
        })
        .collect();

    let bar = if show_progress {
        let bar = progress_bar(run.phases.end - start)?;
        let label = format!("{target} amqp{}", queue_type.map(|kind| format!(" {kind}")).unwrap_or_default());
        watch(run.phases, &run.acked, &bar, &label).await;
        bar.set_message(format!("{label}  draining"));
        Some(bar)
    } else {
        None
    };
    for task in tasks {
        task.await.context("a bench publisher panicked")?;
    }
    // Every publish is answered by now: wait for the acked ones to be delivered.
    let drain_until = Instant::now() + settings.drain_timeout;
    let drained = loop {
        if run.state().ledger.missing == 0 {
            break true;
        }
        if Instant::now() >= drain_until {
            break false;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    };
    run.closing.store(true, Ordering::Relaxed);
    for (conn, _channel) in &publishers {
        close(conn).await;
    }
    for conn in &consumer_conns {
        close(conn).await;
    }
    if let Err(e) = admin_channel.queue_delete(queue.clone(), QueueDeleteOptions::default()).await {
        eprintln!("{target}: could not delete queue {queue}: {e}");
    }
    close(&admin).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }

    let state = run.state();
    let tally = state.ledger.tally();
    let ms =
        |histogram: &Histogram<u64>, quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    let per_sec = |count: u64| count as f64 / settings.duration.as_secs_f64();
    let row = Row {
        target: target.to_string(),
        queue_type: queue_type.unwrap_or("default").to_owned(),
        publishers: settings.publishers,
        consumers: settings.consumers,
        published_per_sec: per_sec(state.published),
        consumed_per_sec: per_sec(state.consumed),
        e2e_p50_ms: ms(&state.e2e_latency, 0.5),
        e2e_p99_ms: ms(&state.e2e_latency, 0.99),
        e2e_p99_9_ms: ms(&state.e2e_latency, 0.999),
        e2e_max_ms: state.e2e_latency.max() as f64 / 1000.0,
        confirm_p50_ms: ms(&state.confirm_latency, 0.5),
        confirm_p99_ms: ms(&state.confirm_latency, 0.99),
        tally,
        drained,
        errors: run.errors.load(Ordering::Relaxed),
    };
    drop(state);
    let first_error = run.first_error.lock().unwrap_or_else(PoisonError::into_inner).take();
    Ok(Report { row, first_error })
}

/// The rows as a plain-text table.
fn table(rows: &[Row]) -> String {
    let header = [
        "target",
        "queue",
        "published/s",
        "consumed/s",
        "e2e p50 ms",
        "e2e p99 ms",
        "e2e p99.9 ms",
        "e2e max ms",
        "confirm p50 ms",
        "confirm p99 ms",
        "lost",
        "duplicates",
        "redelivered",
        "nacked",
        "errors",
    ];
    let lines = rows
        .iter()
        .map(|row| {
            vec![
                row.target.clone(),
                row.queue_type.clone(),
                format!("{:.0}", row.published_per_sec),
                format!("{:.0}", row.consumed_per_sec),
                format!("{:.3}", row.e2e_p50_ms),
                format!("{:.3}", row.e2e_p99_ms),
                format!("{:.3}", row.e2e_p99_9_ms),
                format!("{:.3}", row.e2e_max_ms),
                format!("{:.3}", row.confirm_p50_ms),
                format!("{:.3}", row.confirm_p99_ms),
                row.tally.lost.to_string(),
                row.tally.duplicates.to_string(),
                row.tally.redelivered.to_string(),
                row.tally.nacked.to_string(),
                row.errors.to_string(),
            ]
        })
        .collect();
    render_table(&header, lines, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::bench::args::tests::parse_args;
    use crate::bench::peers::{TurnstileServer, refused_port};

    fn parse(line: &str) -> Result<BenchArgs, clap::Error> {
        parse_args(line)
    }

    #[test]
    fn arguments_have_their_defaults_and_parse() {
        let settings = Settings::new(&parse("bench amqp").unwrap()).unwrap();
        assert_eq!(
            (settings.publishers, settings.window, settings.consumers, settings.prefetch, settings.size),
            (4, 128, 4, 256, 1024)
        );
        assert_eq!((settings.duration, settings.warmup), (Duration::from_secs(10), Duration::from_secs(1)));
        assert_eq!((settings.drain_timeout, settings.queue_type), (Duration::from_secs(30), None));

        let args = parse(
            "bench amqp --publishers 2 --window 16 --consumers 3 --prefetch 50 --size 64 --duration 2s \
             --warmup 0s --drain-timeout 5s --queue-type quorum --json \
             --target amqp://guest:guest@127.0.0.1:5672/%2f?queue-type=classic --target amqp://a:b@h:1/v",
        )
        .unwrap();
        let settings = Settings::new(&args).unwrap();
        assert_eq!(
            (settings.publishers, settings.window, settings.consumers, settings.prefetch, settings.size),
            (2, 16, 3, 50, 64)
        );
        assert_eq!((settings.duration, settings.warmup), (Duration::from_secs(2), Duration::ZERO));
        assert_eq!(settings.drain_timeout, Duration::from_secs(5));
        assert!(args.json);
        let targets: Vec<AmqpTarget> = args.targets.iter().map(|url| url.parse().unwrap()).collect();
        // A target's own queue type wins over --queue-type; the others get the flag's.
        assert_eq!(settings.queue_type(&targets[0]), Some("classic"));
        assert_eq!(settings.queue_type(&targets[1]), Some("quorum"));

        for bad in [
            "bench amqp --publishers 0",
            "bench amqp --consumers 0",
            "bench amqp --window 0",
            "bench amqp --prefetch 0",
            "bench amqp --prefetch 65536",
            "bench amqp --drain-timeout soon",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        for refused in ["bench amqp --size 27", "bench amqp --duration 0s"] {
            assert!(Settings::new(&parse(refused).unwrap()).is_err(), "{refused:?} was accepted");
        }
        assert!(Settings::new(&parse("bench amqp --size 28").unwrap()).is_ok());
    }

    #[test]
    fn target_reads_amqp_uris_and_its_queue_type() {
        let target: AmqpTarget = "amqp://guest:guest@127.0.0.1:5672/%2f".parse().unwrap();
        assert_eq!(target.uri, "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(target.to_string(), "amqp://127.0.0.1:5672/%2f");
        assert_eq!(target.queue_type, None);

        let target: AmqpTarget =
            "amqp://u:p@localhost:6672/%2f?heartbeat=10&queue-type=quorum&frame_max=8192".parse().unwrap();
        assert_eq!(target.uri, "amqp://u:p@localhost:6672/%2f?heartbeat=10&frame_max=8192");
        assert_eq!(target.to_string(), "amqp://localhost:6672/%2f");
        assert_eq!(target.queue_type.as_deref(), Some("quorum"));

        let bare: AmqpTarget = "amqp://127.0.0.1:6672".parse().unwrap();
        assert_eq!(
            (bare.uri.as_str(), bare.shown.as_str()),
            ("amqp://127.0.0.1:6672", "amqp://127.0.0.1:6672")
        );
        let default: AmqpTarget = DEFAULT_TARGET.parse().unwrap();
        assert_eq!(default.to_string(), "amqp://127.0.0.1:6672/%2f");
    }

    #[test]
    fn target_refuses_other_schemes_and_bad_addresses() {
        for bad in [
            "turnstile://127.0.0.1:7379",
            "redis://127.0.0.1:6379",
            "amqps://127.0.0.1:5671/%2f",
            "amqp://guest:guest@127.0.0.1/%2f",
            "amqp://guest:guest@:5672/%2f",
            "amqp://127.0.0.1:port",
            "amqp://127.0.0.1:5672/%2f?queue-type=",
            "amqp://127.0.0.1:5672/%2f?heartbeat=often",
            "",
        ] {
            assert!(bad.parse::<AmqpTarget>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn table_has_a_row_per_target_with_aligned_columns() {
        let row = |target: &str, queue_type: &str, lost| Row {
            target: target.into(),
            queue_type: queue_type.into(),
            publishers: 4,
            consumers: 4,
            published_per_sec: 12_345.6,
            consumed_per_sec: 12_300.0,
            e2e_p50_ms: 4.5,
            e2e_p99_ms: 12.25,
            e2e_p99_9_ms: 20.0,
            e2e_max_ms: 31.0,
            confirm_p50_ms: 3.0,
            confirm_p99_ms: 9.5,
            tally: Tally {
                sent: 130_000,
                acked: 130_000,
                nacked: 0,
                unconfirmed: 0,
                delivered: 130_000,
                lost,
                duplicates: 0,
                redelivered: 0,
                foreign: 0,
            },
            drained: true,
            errors: 0,
        };
        let text = table(&[
            row("amqp://127.0.0.1:6672/%2f", "default", 0),
            row("amqp://127.0.0.1:5672/%2f", "quorum", 17),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("target                     queue    published/s  consumed/s"),
            "{text}"
        );
        assert!(lines[1].contains("default        12346       12300"), "{text}");
        assert!(lines[2].contains(" quorum ") && lines[2].contains("   17  "), "{text}");
        assert!(lines.iter().all(|line| line.len() == lines[0].len()), "{text}");
    }

    /// A short run against a Turnstile server in this process: every acked message arrives once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_run_against_turnstile_loses_and_duplicates_nothing() -> anyhow::Result<()> {
        let server = TurnstileServer::start().await?;
        let target: AmqpTarget =
            format!("amqp://guest:guest@{}/%2f", server.amqp_addr).parse().map_err(anyhow::Error::msg)?;

        let settings = Settings {
            publishers: 2,
            window: 8,
            consumers: 2,
            prefetch: 16,
            size: 100,
            duration: Duration::from_millis(300),
            warmup: Duration::ZERO,
            drain_timeout: Duration::from_secs(10),
            queue_type: None,
        };
        let report = measure(&target, &settings, false).await?;
        let row = &report.row;
        assert_eq!(row.errors, 0, "{row:?}: {:?}", report.first_error);
        assert!(row.tally.acked > 0 && row.drained, "{row:?}");
        assert_eq!((row.tally.sent, row.tally.delivered), (row.tally.acked, row.tally.acked), "{row:?}");
        assert_eq!((row.tally.lost, row.tally.duplicates, row.tally.nacked), (0, 0, 0), "{row:?}");
        assert!(row.e2e_p50_ms > 0.0 && row.e2e_p50_ms <= row.e2e_max_ms, "{row:?}");

        server.stop().await
    }

    #[tokio::test]
    async fn a_target_that_is_down_says_what_to_start() {
        let (_held, port) = refused_port();
        let target: AmqpTarget = format!("amqp://guest:guest@127.0.0.1:{port}/%2f").parse().unwrap();
        let err = connect(&target).await.unwrap_err();
        let expected = format!(
            "cannot connect to amqp://127.0.0.1:{port}/%2f — is `turnstile server` or rabbitmq-server running?"
        );
        assert_eq!(err.to_string(), expected);
    }
}
