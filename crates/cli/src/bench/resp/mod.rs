//! `turnstile bench`: a closed-loop load generator that runs one workload against Turnstile and,
//! in the same invocation, against its peer (Redis), then prints one table to compare them.
//!
//! ```text
//!  run ─► every --target answers? ─► for each target, one after the other:
//!           connect every client ─► clean its bench:* names ─► spawn the clients ─► merge
//!                                                                │ each: loop { one op; record µs }
//!                               progress bar (stderr) ◄── ops done ┘
//!      ─► one table (or JSON) with a row per target
//! ```
//!
//! Both kinds of target are driven by the same [`Connection`] over RESP2, so the client side
//! costs the same and only the servers differ. One op is one whole cycle (acquire + release,
//! push + pop + ack, SET + GET): what an application waits for, not a single command.
//!
//! `bench amqp` is another kind of load (publishers and consumers over AMQP 0-9-1, Turnstile
//! against RabbitMQ): it lives in `bench_amqp.rs` and shares this file's table, progress bar and
//! argument parsing.

use std::hash::{BuildHasher, RandomState};
use std::io::IsTerminal;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use turnstile_client::{Cmd, Connection, Frame};

/// `turnstile bench WORKLOAD`: measure one workload against one or more servers, side by side.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// What one op is: locks (acquire + release), queues (push + pop + ack) or kv (SET + GET);
    /// or amqp: publishers with confirms and consumers with acks on one queue.
    #[arg(value_enum)]
    workload: Workload,
    /// Concurrent clients, each on its own connection, each sending its next op once the last
    /// one is answered.
    #[arg(long, default_value_t = 50, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    clients: u32,
    /// How long each target is measured: "10s", "250ms", "5m".
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// Load run before measuring and left out of the figures, so connections, allocators and
    /// the log are warm.
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) warmup: Duration,
    /// Lock, queue or key names the clients share (client i uses name i % N); fewer names than
    /// clients means contention [default: one per client].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    keys: Option<u32>,
    /// Payload (queues) or value (kv) size: bytes, or with a unit (KB = 1000, KiB = 1024, MB, MiB).
    #[arg(long, default_value = "1KiB", value_name = "SIZE", value_parser = parse_size)]
    pub(crate) size: usize,
    /// A server to measure, turnstile://HOST:PORT or redis://HOST:PORT (amqp: an
    /// amqp://USER:PASS@HOST:PORT/VHOST URI); repeat it to compare [default: turnstile://<server>;
    /// amqp: amqp://guest:guest@127.0.0.1:6672/%2f].
    #[arg(long = "target", value_name = "URL")]
    pub(crate) targets: Vec<String>,
    /// Print the results as JSON, and nothing else, on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) amqp: crate::bench_amqp::AmqpArgs,
}

/// Runs the workload against every target in turn and prints one row per target.
/// `server` ("HOST:PORT", or a cluster's list: the first is taken) is the target when no
/// `--target` is given.
pub async fn run(args: BenchArgs, server: &str) -> anyhow::Result<()> {
    if args.workload == Workload::Amqp {
        return crate::bench_amqp::run(&args).await;
    }
    let settings = Settings::new(&args)?;
    let targets = match &args.targets {
        targets if !targets.is_empty() => targets
            .iter()
            .map(|url| url.parse().map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<_>>()?,
        _ => vec![default_target(server)?],
    };
    // A target that is down fails the command now, not after the ones before it took their time.
    for target in &targets {
        connect(target).await?;
    }
    let show_progress = !args.json && std::io::stderr().is_terminal();
    let mut rows = Vec::with_capacity(targets.len());
    for target in &targets {
        let report = measure(target, &settings, show_progress).await?;
        if let Some(first) = &report.first_error {
            eprintln!("{target}: {} errors; the first: {first}", report.row.errors);
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

/// What one op does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Workload {
    /// Turnstile `LOCK.ACQUIRE` + `LOCK.RELEASE`; Redis `SET NX PX` + a compare-and-delete
    /// `EVAL`, the usual single-instance Redis lock.
    Locks,
    /// Turnstile `Q.PUSH` + `Q.POP` + `Q.ACK`; Redis's reliable-queue pattern `LPUSH` + `LMOVE`
    /// to a processing list + `LREM` from it.
    Queues,
    /// `SET` + `GET` of one key, the same commands on both.
    Kv,
    /// AMQP 0-9-1 publishers (with confirms) and consumers (with acks) on one durable queue, so
    /// Turnstile can be compared with RabbitMQ; see `bench_amqp.rs`.
    Amqp,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Locks => "locks",
            Workload::Queues => "queues",
            Workload::Kv => "kv",
            Workload::Amqp => "amqp",
        }
    }

    /// The `n`th lock, queue or key name. All start with `bench:`, so nothing else is touched.
    fn key(self, n: usize) -> String {
        let noun = match self {
            Workload::Locks => "lock",
            Workload::Queues => "queue",
            Workload::Kv => "kv",
            Workload::Amqp => "amqp",
        };
        format!("bench:{noun}:{n}")
    }
}

/// Which server a target is: it decides the commands an op sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Turnstile,
    Redis,
}

impl Peer {
    fn scheme(self) -> &'static str {
        match self {
            Peer::Turnstile => "turnstile",
            Peer::Redis => "redis",
        }
    }

    /// What to start when nothing answers, for the connect error.
    fn program(self) -> &'static str {
        match self {
            Peer::Turnstile => "`turnstile server`",
            Peer::Redis => "redis-server",
        }
    }
}

/// One server to measure, from `turnstile://HOST:PORT` or `redis://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    peer: Peer,
    addr: String,
}

impl FromStr for Target {
    type Err = String;

    fn from_str(url: &str) -> Result<Target, String> {
        let expected = "expected turnstile://HOST:PORT or redis://HOST:PORT";
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!("invalid target {url:?}: {expected}"));
        };
        let peer = match scheme {
            "turnstile" => Peer::Turnstile,
            "redis" => Peer::Redis,
            other => return Err(format!("unknown scheme {other:?} in target {url:?}: {expected}")),
        };
        let addr = rest.strip_suffix('/').unwrap_or(rest);
        let has_port =
            addr.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !has_port {
            return Err(format!("invalid address in target {url:?}: {expected}"));
        }
        Ok(Target { peer, addr: addr.to_owned() })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.peer.scheme(), self.addr)
    }
}

/// The target when no `--target` is given: the Turnstile server the other commands talk to
/// (`HOST:PORT`, `turnstile://HOST:PORT`, or a cluster's list, of which the bench takes the first).
fn default_target(server: &str) -> anyhow::Result<Target> {
    let addrs = turnstile_client::parse_addrs(server)?;
    let addr = addrs.into_iter().next().context("no server address")?;
    Ok(Target { peer: Peer::Turnstile, addr })
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

/// The settings one target is measured with; every target gets the same.
#[derive(Debug, Clone)]
struct Settings {
    workload: Workload,
    clients: usize,
    /// How many names the clients share; client i uses name i % keys.
    keys: usize,
    size: usize,
    duration: Duration,
    warmup: Duration,
}

impl Settings {
    fn new(args: &BenchArgs) -> anyhow::Result<Settings> {
        anyhow::ensure!(!args.duration.is_zero(), "--duration must be more than 0");
        let clients = usize::try_from(args.clients)?;
        let keys = match args.keys {
            Some(keys) => usize::try_from(keys)?,
            None => clients,
        };
        Ok(Settings {
            workload: args.workload,
            clients,
            keys,
            size: args.size,
            duration: args.duration,
            warmup: args.warmup,
        })
    }

    /// The names this run uses (more `--keys` than clients leaves some unused).
    fn names(&self) -> Vec<String> {
        (0..self.keys.min(self.clients)).map(|n| self.workload.key(n)).collect()
    }

    /// One line above the table saying what was measured.
    fn summary(&self) -> String {
        let (nouns, size) = match self.workload {
            Workload::Locks => ("locks", String::new()),
            Workload::Queues => ("queues", format!(", {}-byte payloads", self.size)),
            Workload::Kv => ("keys", format!(", {}-byte values", self.size)),
            // `run` hands amqp to bench_amqp before any RESP settings are made.
            Workload::Amqp => ("queues", String::new()),
        };
        format!(
            "{}: {} clients on {} {nouns}{size}; {} per target after {} of warmup",
            self.workload.name(),
            self.clients,
            self.keys.min(self.clients),
            humantime::format_duration(self.duration),
            humantime::format_duration(self.warmup),
        )
    }
}

/// How long a client waits to connect.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// An op not answered within this counts as an error and its connection is replaced: a server
/// that stops answering must not hang the bench.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause after a failed reconnect, so a server that is gone is not hammered.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
/// Lock leases, in ms: far longer than an op, so no hold expires while it is measured.
const LEASE_MS: u64 = 30_000;
/// The usual Redis lock release: delete the key only if it still holds this client's value.
const RELEASE_SCRIPT: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
/// How often the progress bar is redrawn.
const PROGRESS_TICK: Duration = Duration::from_millis(500);

async fn connect(target: &Target) -> anyhow::Result<Connection> {
    Connection::connect(&target.addr, CONNECT_TIMEOUT)
        .await
        .with_context(|| format!("cannot connect to {} — is {} running?", target.addr, target.peer.program()))
}

/// Empties what an earlier run left under the names this run uses, so every run starts alike.
/// Error replies are ignored: a queue that does not exist yet cannot be purged, and that is fine.
async fn clean(conn: &mut Connection, peer: Peer, settings: &Settings) -> anyhow::Result<()> {
    let names = settings.names();
    let del = |name: &String| Cmd::new("DEL").arg(name);
    let cmds: Vec<Cmd> = match (peer, settings.workload) {
        (Peer::Turnstile, Workload::Queues) => names.iter().map(|q| Cmd::new("Q.PURGE").arg(q)).collect(),
        // A Turnstile hold ends with the connection that took it: an earlier run left none.
        (Peer::Turnstile, Workload::Locks) => Vec::new(),
        (Peer::Redis, Workload::Queues) => {
            names.iter().flat_map(|q| [del(q), Cmd::new("DEL").arg(format!("{q}:processing"))]).collect()
        }
        (_, Workload::Locks | Workload::Kv) => names.iter().map(del).collect(),
        (_, Workload::Amqp) => Vec::new(),
    };
    if !cmds.is_empty() {
        conn.pipeline(&cmds).await.context("cleaning up before the run")?;
    }
    Ok(())
}

/// What measuring one target gave: its row (each workload family has its own) and the text of
/// the first error, if there was one (the count alone does not say what broke).
#[derive(Debug)]
pub(crate) struct Report<R> {
    pub(crate) row: R,
    pub(crate) first_error: Option<String>,
}

/// One row of the final table (and one object of the JSON array).
#[derive(Debug, Clone, Serialize)]
struct Row {
    target: String,
    workload: Workload,
    clients: usize,
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    p99_9_ms: f64,
    max_ms: f64,
    /// Ops finished in the measured window.
    ops: u64,
    /// Acquires that found the lock held, pops that found the queue empty: contention, not errors.
    busy_or_empty: u64,
    /// Error replies, unexpected replies and broken connections, warmup included.
    errors: u64,
}

/// One run against one target, shared by its clients.
#[derive(Debug)]
struct Run {
    target: Target,
    /// Ops started from here on are measured; before it is warmup.
    measure_from: Instant,
    /// No op starts after this.
    end: Instant,
    /// Ops done so far, warmup included: what the progress bar shows.
    done: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Run {
    fn note_error(&self, error: &anyhow::Error) {
        let mut first = self.first_error.lock().unwrap_or_else(PoisonError::into_inner);
        first.get_or_insert_with(|| describe(error));
    }
}

/// Connects the clients, cleans up, runs them for the warmup and the duration, and merges what
/// they measured.
async fn measure(target: &Target, settings: &Settings, show_progress: bool) -> anyhow::Result<Report<Row>> {
    let mut conns = Vec::with_capacity(settings.clients);
    for _ in 0..settings.clients {
        conns.push(connect(target).await?);
    }
    if let Some(conn) = conns.first_mut() {
        clean(conn, target.peer, settings).await?;
    }
    // Redis lock values must differ from any other run's; the hasher's keys are random.
    let nonce = RandomState::new().hash_one(std::process::id());
    let value = Bytes::from(vec![b'v'; settings.size]);
    let start = Instant::now();
    let run = Arc::new(Run {
        target: target.clone(),
        measure_from: start + settings.warmup,
        end: start + settings.warmup + settings.duration,
        done: AtomicU64::new(0),
        first_error: Mutex::new(None),
    });
    let clients: Vec<_> = (0u64..)
        .zip(conns)
        .enumerate()
        .map(|(i, (id, conn))| {
            let key = Bytes::from(settings.workload.key(i % settings.keys));
            let op = Op {
                peer: target.peer,
                workload: settings.workload,
                client: id,
                processing: Bytes::from(format!("{}:processing", String::from_utf8_lossy(&key))),
                key,
                value: value.clone(),
                size: settings.size,
                nonce,
                count: 0,
            };
            tokio::spawn(client(op, conn, run.clone()))
        })
        .collect();

    let bar = if show_progress {
        let bar = progress_bar(run.end - start)?;
        let label = format!("{target} {}", settings.workload.name());
        watch(Phases { start, measure_from: run.measure_from, end: run.end }, &run.done, &bar, &label).await;
        Some(bar)
    } else {
        None
    };

    let mut latency = Histogram::<u64>::new(3)?;
    let (mut ops, mut busy_or_empty, mut errors) = (0, 0, 0);
    for client in clients {
        let stats = client.await.context("a bench client panicked")?;
        latency.add(&stats.latency)?;
        ops += stats.ops;
        busy_or_empty += stats.misses;
        errors += stats.errors;
    }
    debug_assert_eq!(latency.len(), ops, "one latency per measured op");
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let ms = |micros: u64| micros as f64 / 1000.0;
    let row = Row {
        target: target.to_string(),
        workload: settings.workload,
        clients: settings.clients,
        ops_per_sec: ops as f64 / settings.duration.as_secs_f64(),
        p50_ms: ms(latency.value_at_quantile(0.5)),
        p99_ms: ms(latency.value_at_quantile(0.99)),
        p99_9_ms: ms(latency.value_at_quantile(0.999)),
        max_ms: ms(latency.max()),
        ops,
        busy_or_empty,
        errors,
    };
    let first_error = run.first_error.lock().unwrap_or_else(PoisonError::into_inner).take();
    Ok(Report { row, first_error })
}

/// When a target's run starts, when its warmup ends and measuring starts, and when it ends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Phases {
    pub(crate) start: Instant,
    pub(crate) measure_from: Instant,
    pub(crate) end: Instant,
}

/// A progress bar on stderr for a run of `total`, drawn by [`watch`].
pub(crate) fn progress_bar(total: Duration) -> anyhow::Result<ProgressBar> {
    let bar = ProgressBar::with_draw_target(Some(millis(total)), ProgressDrawTarget::stderr());
    bar.set_style(ProgressStyle::with_template("{bar:30} {msg}")?.progress_chars("=> "));
    Ok(bar)
}

/// Redraws the progress bar until the run ends, with the rate at which `done` grows.
pub(crate) async fn watch(phases: Phases, done: &AtomicU64, bar: &ProgressBar, label: &str) {
    let total = phases.end - phases.start;
    let (mut last_at, mut last_done) = (Instant::now(), 0);
    loop {
        tokio::time::sleep(PROGRESS_TICK).await;
        let now = Instant::now();
        let done = done.load(Ordering::Relaxed);
        let rate = (done - last_done) as f64 / (now - last_at).as_secs_f64();
        (last_at, last_done) = (now, done);
        let elapsed = (now - phases.start).min(total);
        let phase = if now < phases.measure_from { " (warmup)" } else { "" };
        bar.set_position(millis(elapsed));
        bar.set_message(format!(
            "{label}  {:.1}s / {:.1}s{phase}  {rate:.0} ops/s",
            elapsed.as_secs_f64(),
            total.as_secs_f64()
        ));
        if now >= phases.end {
            return;
        }
    }
}

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// What one client measured.
#[derive(Debug)]
struct ClientStats {
    /// Microseconds per op.
    latency: Histogram<u64>,
    ops: u64,
    misses: u64,
    errors: u64,
}

/// One client: ops back to back on its connection until the run ends. An error is counted and
/// the op is not; a connection the error broke is replaced before the next op.
async fn client(mut op: Op, conn: Connection, run: Arc<Run>) -> ClientStats {
    // Auto-resizing: it grows only as far as the latencies seen, which keeps many clients cheap.
    let latency = Histogram::new(3).expect("3 significant figures is a valid precision");
    let mut stats = ClientStats { latency, ops: 0, misses: 0, errors: 0 };
    let mut conn = Some(conn);
    loop {
        let started = Instant::now();
        if started >= run.end {
            return stats;
        }
        let Some(live) = conn.as_mut() else {
            match connect(&run.target).await {
                Ok(fresh) => conn = Some(fresh),
                Err(e) => {
                    stats.errors += 1;
                    run.note_error(&e);
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
            }
            continue;
        };
        let measured = started >= run.measure_from;
        match tokio::time::timeout(OP_TIMEOUT, op.run(live)).await {
            Ok(Ok(Outcome::Done)) => {
                run.done.fetch_add(1, Ordering::Relaxed);
                if measured {
                    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    // `record` grows the histogram; `saturating_record` would clamp to its size.
                    if stats.latency.record(micros).is_err() {
                        stats.latency.saturating_record(micros);
                    }
                    stats.ops += 1;
                }
            }
            Ok(Ok(Outcome::Miss)) => stats.misses += u64::from(measured),
            Ok(Err(e)) => {
                stats.errors += 1;
                run.note_error(&e);
                if live.is_broken() {
                    conn = None;
                }
            }
            Err(_) => {
                stats.errors += 1;
                run.note_error(&anyhow!("no reply within {}", humantime::format_duration(OP_TIMEOUT)));
                // The reply may still come: the connection is out of step, so it goes.
                conn = None;
            }
        }
    }
}

/// How an op ended when the server answered as expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    /// The lock was held by another client or the queue was empty: tried again next loop.
    Miss,
}

/// One client's op: what it sends, on which names.
#[derive(Debug)]
struct Op {
    peer: Peer,
    workload: Workload,
    client: u64,
    key: Bytes,
    /// Redis queues: the list a moved message waits in until `LREM` (the "ack") removes it.
    processing: Bytes,
    /// kv: the value every `SET` writes (one buffer shared by all clients).
    value: Bytes,
    /// Queues: the payload size.
    size: usize,
    /// Makes Redis lock values unique across runs.
    nonce: u64,
    /// Ops this client started: makes payloads and lock values unique within the run.
    count: u64,
}

impl Op {
    async fn run(&mut self, conn: &mut Connection) -> anyhow::Result<Outcome> {
        self.count += 1;
        match (self.workload, self.peer) {
            (Workload::Locks, Peer::Turnstile) => self.turnstile_lock(conn).await,
            (Workload::Locks, Peer::Redis) => self.redis_lock(conn).await,
            (Workload::Queues, Peer::Turnstile) => self.turnstile_queue(conn).await,
            (Workload::Queues, Peer::Redis) => self.redis_queue(conn).await,
            (Workload::Kv, _) => self.kv(conn).await,
            (Workload::Amqp, _) => Err(anyhow!("the amqp workload does not run over RESP")),
        }
    }

    /// `LOCK.ACQUIRE name ttl` → `[token, lease-ms]`, or nil while another client holds it;
    /// then `LOCK.RELEASE name token` → 1.
    async fn turnstile_lock(&self, conn: &mut Connection) -> anyhow::Result<Outcome> {
        let reply = call(conn, Cmd::new("LOCK.ACQUIRE").arg(self.key.clone()).arg(LEASE_MS)).await?;
        if is_nil(&reply) {
            return Ok(Outcome::Miss);
        }
        let token = granted_token(&reply).ok_or_else(|| unexpected("LOCK.ACQUIRE", &reply))?;
        let released = call(conn, Cmd::new("LOCK.RELEASE").arg(self.key.clone()).arg(token)).await?;
        expect_one("LOCK.RELEASE", &released)?;
        Ok(Outcome::Done)
    }

    /// `SET name value NX PX ttl` → `+OK`, or nil while another client holds it; then the
    /// compare-and-delete script → 1.
    async fn redis_lock(&self, conn: &mut Connection) -> anyhow::Result<Outcome> {
        let value = Bytes::from(format!("{:016x}:{}:{}", self.nonce, self.client, self.count));
        let set = Cmd::new("SET").arg(self.key.clone()).arg(value.clone()).arg("NX").arg("PX").arg(LEASE_MS);
        match call(conn, set).await? {
            Frame::Simple(ok) if ok == "OK" => {}
            reply if is_nil(&reply) => return Ok(Outcome::Miss),
            reply => return Err(unexpected("SET", &reply)),
        }
        let release = Cmd::new("EVAL").arg(RELEASE_SCRIPT).arg(1u8).arg(self.key.clone()).arg(value);
        expect_one("EVAL", &call(conn, release).await?)?;
        Ok(Outcome::Done)
    }

    /// `Q.PUSH q payload` → id; `Q.POP q` → `[[id, receipt, payload, deliveries]]`, or nil when
    /// other clients took what was there; `Q.ACK q receipt` → 1.
    async fn turnstile_queue(&self, conn: &mut Connection) -> anyhow::Result<Outcome> {
        let pushed = call(conn, Cmd::new("Q.PUSH").arg(self.key.clone()).arg(self.payload())).await?;
        expect_integer("Q.PUSH", &pushed)?;
        let popped = call(conn, Cmd::new("Q.POP").arg(self.key.clone())).await?;
        if is_nil(&popped) {
            return Ok(Outcome::Miss);
        }
        let receipt = popped_receipt(&popped).ok_or_else(|| unexpected("Q.POP", &popped))?;
        let acked = call(conn, Cmd::new("Q.ACK").arg(self.key.clone()).arg(receipt)).await?;
        expect_one("Q.ACK", &acked)?;
        Ok(Outcome::Done)
    }

    /// `LPUSH q payload`; `LMOVE q q:processing RIGHT LEFT` → the oldest payload, or nil when
    /// other clients took what was there; `LREM q:processing 1 payload` → 1.
    async fn redis_queue(&self, conn: &mut Connection) -> anyhow::Result<Outcome> {
        let pushed = call(conn, Cmd::new("LPUSH").arg(self.key.clone()).arg(self.payload())).await?;
        expect_integer("LPUSH", &pushed)?;
        let lmove =
            Cmd::new("LMOVE").arg(self.key.clone()).arg(self.processing.clone()).arg("RIGHT").arg("LEFT");
        let payload = match call(conn, lmove).await? {
            Frame::Bulk(payload) => payload,
            reply if is_nil(&reply) => return Ok(Outcome::Miss),
            reply => return Err(unexpected("LMOVE", &reply)),
        };
        let removed = call(conn, Cmd::new("LREM").arg(self.processing.clone()).arg(1u8).arg(payload)).await?;
        expect_one("LREM", &removed)?;
        Ok(Outcome::Done)
    }

    /// `SET key value` → `+OK`; `GET key` → a value of the size written (with shared keys,
    /// maybe another client's: they are all the same size).
    async fn kv(&self, conn: &mut Connection) -> anyhow::Result<Outcome> {
        match call(conn, Cmd::new("SET").arg(self.key.clone()).arg(self.value.clone())).await? {
            Frame::Simple(ok) if ok == "OK" => {}
            reply => return Err(unexpected("SET", &reply)),
        }
        match call(conn, Cmd::new("GET").arg(self.key.clone())).await? {
            Frame::Bulk(value) if value.len() == self.value.len() => Ok(Outcome::Done),
            reply => Err(unexpected("GET", &reply)),
        }
    }

    /// A queue payload of `size` bytes that starts with this client's id and op count, so every
    /// message is distinct, as real ones are. (Below 16 bytes the tag is cut and payloads may
    /// repeat; `LREM` then removes an equal one, so the lists still balance.)
    fn payload(&self) -> Bytes {
        let mut payload = vec![b'.'; self.size];
        let tag = [self.client.to_be_bytes(), self.count.to_be_bytes()].concat();
        let n = tag.len().min(payload.len());
        payload[..n].copy_from_slice(&tag[..n]);
        Bytes::from(payload)
    }
}

/// Sends one command; an error reply or a broken connection is an error naming the command.
async fn call(conn: &mut Connection, cmd: Cmd) -> anyhow::Result<Frame> {
    let reply = conn.call(&cmd).await;
    reply.with_context(|| String::from_utf8_lossy(&cmd.args()[0]).into_owned())
}

/// Nil, as a bulk (`$-1`) or as an array (`*-1`): servers differ in which they send.
fn is_nil(reply: &Frame) -> bool {
    matches!(reply, Frame::Null | Frame::NullArray)
}

/// The token of a `LOCK.ACQUIRE` grant, `[token, lease-ms]`.
fn granted_token(reply: &Frame) -> Option<i64> {
    let Frame::Array(grant) = reply else { return None };
    let [Frame::Integer(token), Frame::Integer(_lease)] = grant.as_slice() else { return None };
    Some(*token)
}

/// The receipt of the one delivery in a `Q.POP` reply, `[[id, receipt, payload, deliveries]]`.
fn popped_receipt(reply: &Frame) -> Option<i64> {
    let Frame::Array(deliveries) = reply else { return None };
    let [Frame::Array(delivery)] = deliveries.as_slice() else { return None };
    let [Frame::Integer(_id), Frame::Integer(receipt), Frame::Bulk(_payload), Frame::Integer(_deliveries)] =
        delivery.as_slice()
    else {
        return None;
    };
    Some(*receipt)
}

fn expect_integer(command: &str, reply: &Frame) -> anyhow::Result<()> {
    match reply {
        Frame::Integer(_) => Ok(()),
        _ => Err(unexpected(command, reply)),
    }
}

fn expect_one(command: &str, reply: &Frame) -> anyhow::Result<()> {
    match reply {
        Frame::Integer(1) => Ok(()),
        _ => Err(unexpected(command, reply)),
    }
}

/// A reply of the wrong shape.
fn unexpected(command: &str, reply: &Frame) -> anyhow::Error {
    anyhow!("{command}: unexpected reply {}", shorten(&format!("{reply:?}")))
}

/// An error and its causes on one line, each cause once (an I/O error's text is often already in
/// the message that wraps it), cut short.
pub(crate) fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain().map(ToString::to_string) {
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    shorten(&text)
}

/// At most 200 characters: replies and error replies may quote a whole payload.
fn shorten(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The rows as a plain-text table: names left-aligned, figures right-aligned.
fn table(rows: &[Row]) -> String {
    let header = [
        "target",
        "workload",
        "clients",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "ops",
        "busy/empty",
        "errors",
    ];
    let lines = rows
        .iter()
        .map(|row| {
            vec![
                row.target.clone(),
                row.workload.name().to_owned(),
                row.clients.to_string(),
                format!("{:.0}", row.ops_per_sec),
                format!("{:.3}", row.p50_ms),
                format!("{:.3}", row.p99_ms),
                format!("{:.3}", row.p99_9_ms),
                format!("{:.3}", row.max_ms),
                row.ops.to_string(),
                row.busy_or_empty.to_string(),
                row.errors.to_string(),
            ]
        })
        .collect();
    render_table(&header, lines, 2)
}

/// A plain-text table: the first `names` columns left-aligned, the figures after them
/// right-aligned, every column as wide as its widest cell.
pub(crate) fn render_table(header: &[&str], rows: Vec<Vec<String>>, names: usize) -> String {
    let lines: Vec<Vec<String>> =
        std::iter::once(header.iter().map(|cell| (*cell).to_owned()).collect()).chain(rows).collect();
    let mut widths = vec![0; header.len()];
    for line in &lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .enumerate()
            .map(
                |(column, (cell, &width))| {
                    if column < names { format!("{cell:<width$}") } else { format!("{cell:>width$}") }
                },
            )
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use std::collections::HashMap;

    use turnstile_server::{Config, Fsync, Server};

    /// A loopback port nothing listens on, held (bound, never listening) while the socket lives:
    /// a connect to it is refused, and no server another test starts meanwhile can take it (the
    /// port of a dropped listener could be).
    pub(crate) fn refused_port() -> (socket2::Socket, u16) {
        let held = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let loopback: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        held.bind(&loopback.into()).unwrap();
        let port = held.local_addr().unwrap().as_socket().unwrap().port();
        (held, port)
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

    #[test]
    fn target_reads_turnstile_and_redis_urls() {
        let turnstile: Target = "turnstile://127.0.0.1:7379".parse().unwrap();
        assert_eq!(turnstile, Target { peer: Peer::Turnstile, addr: "127.0.0.1:7379".into() });
        let redis: Target = "redis://localhost:6379/".parse().unwrap();
        assert_eq!(redis, Target { peer: Peer::Redis, addr: "localhost:6379".into() });
        assert_eq!(redis.to_string(), "redis://localhost:6379");
        let v6: Target = "redis://[::1]:6379".parse().unwrap();
        assert_eq!(v6.addr, "[::1]:6379");
    }

    #[test]
    fn target_refuses_other_schemes_and_bad_addresses() {
        let err = "http://127.0.0.1:80".parse::<Target>().unwrap_err();
        assert!(err.contains("unknown scheme \"http\""), "{err}");
        for bad in ["127.0.0.1:7379", "turnstile://127.0.0.1", "redis://:6379", "redis://host:port", ""] {
            assert!(bad.parse::<Target>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn default_target_is_the_server_address() {
        let target = default_target("127.0.0.1:7379").unwrap();
        assert_eq!(target.to_string(), "turnstile://127.0.0.1:7379");
        assert_eq!(default_target("turnstile://a:1,b:2").unwrap().addr, "a:1");
        assert!(default_target("nowhere").is_err());
    }

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

    fn parse(line: &str) -> Result<BenchArgs, clap::Error> {
        parse_args(line)
    }

    #[test]
    fn arguments_have_their_defaults_and_parse() {
        use clap::CommandFactory;
        ArgsCli::<BenchArgs>::command().debug_assert();
        let args = parse("bench locks").unwrap();
        assert_eq!((args.workload, args.clients, args.keys), (Workload::Locks, 50, None));
        assert_eq!((args.duration, args.warmup), (Duration::from_secs(10), Duration::from_secs(1)));
        assert_eq!((args.size, args.targets.len(), args.json), (1024, 0, false));

        let args = parse(
            "bench queues --clients 8 --keys 2 --duration 250ms --warmup 0s --size 4KiB \
             --target turnstile://a:1 --target redis://b:2 --json",
        )
        .unwrap();
        assert_eq!((args.workload, args.clients, args.keys), (Workload::Queues, 8, Some(2)));
        assert_eq!((args.duration, args.warmup), (Duration::from_millis(250), Duration::ZERO));
        assert_eq!((args.size, args.json), (4096, true));
        let targets: Vec<String> = args.targets.iter().map(ToString::to_string).collect();
        assert_eq!(targets, ["turnstile://a:1", "redis://b:2"]);
        let settings = Settings::new(&args).unwrap();
        assert_eq!((settings.clients, settings.keys), (8, 2));

        for bad in [
            "bench",
            "bench sets",
            "bench kv --clients 0",
            "bench kv --duration soon",
            "bench kv --size 1GiB",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Settings::new(&parse("bench kv --duration 0s").unwrap()).is_err());
    }

    #[test]
    fn table_aligns_every_column() {
        let row = |target: &str, ops| Row {
            target: target.into(),
            workload: Workload::Locks,
            clients: 50,
            ops_per_sec: 23_783.6,
            p50_ms: 2.0204,
            p99_ms: 3.9,
            p99_9_ms: 5.5,
            max_ms: 12.25,
            ops,
            busy_or_empty: 0,
            errors: 0,
        };
        let text = table(&[row("turnstile://127.0.0.1:7379", 237_836), row("redis://127.0.0.1:6379", 7)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("target                      workload  clients  ops/s"), "{text}");
        assert!(lines[1].contains("locks  ") && lines[1].contains("23784   2.020"), "{text}");
        assert!(lines.iter().all(|line| line.len() == lines[0].len()), "{text}");
    }

    #[test]
    fn describe_names_each_cause_once_and_cuts_long_text() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let error = anyhow::Error::new(turnstile_client::Error::Io { addr: "h:1".into(), source: io })
            .context("Q.POP");
        assert_eq!(describe(&error), "Q.POP: connection to h:1 failed: reset by peer");
        let long = "é".repeat(300);
        assert_eq!(shorten(&long).chars().count(), 201);
        assert_eq!(shorten("short"), "short");
    }

    /// A short run: 4 clients on 2 names, so locks are contended and queues shared.
    fn quick(workload: Workload) -> Settings {
        Settings {
            workload,
            clients: 4,
            keys: 2,
            size: 100,
            duration: Duration::from_millis(300),
            warmup: Duration::ZERO,
        }
    }

    fn assert_clean_run(report: &Report<Row>) {
        let row = &report.row;
        assert!(row.ops > 0, "{row:?}");
        assert_eq!(row.errors, 0, "{row:?}: {:?}", report.first_error);
        // Every op is at least two round trips over loopback: well above 10 µs.
        assert!(row.p50_ms > 0.01, "{row:?}");
        assert!(
            row.p50_ms <= row.p99_ms && row.p99_ms <= row.p99_9_ms && row.p99_9_ms <= row.max_ms,
            "{row:?}"
        );
    }

    /// `Q.STATS` as a name → value map (a map reply is a flat array in RESP2).
    async fn queue_stats(conn: &mut Connection, queue: &str) -> anyhow::Result<HashMap<String, i64>> {
        let reply = call(conn, Cmd::new("Q.STATS").arg(queue)).await?;
        let pairs: Vec<(Frame, Frame)> = match reply {
            Frame::Map(pairs) => pairs,
            Frame::Array(flat) => {
                let mut flat = flat.into_iter();
                std::iter::from_fn(|| Some((flat.next()?, flat.next()?))).collect()
            }
            other => anyhow::bail!("Q.STATS answered {other:?}"),
        };
        let mut stats = HashMap::new();
        for pair in pairs {
            if let (Frame::Bulk(name), Frame::Integer(value)) = pair {
                stats.insert(String::from_utf8_lossy(&name).into_owned(), value);
            }
        }
        Ok(stats)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_workload_runs_against_turnstile() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let config = Config {
            resp_addr: "127.0.0.1:0".parse()?,
            http_addr: "127.0.0.1:0".parse()?,
            amqp_addr: "127.0.0.1:0".parse()?,
            data_dir: dir.path().to_owned(),
            fsync: Fsync::Never,
            ..Config::default()
        };
        let server = Server::start(config).await?;
        let target = Target { peer: Peer::Turnstile, addr: server.resp_addr().to_string() };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));

        for workload in [Workload::Locks, Workload::Queues, Workload::Kv] {
            assert_clean_run(&measure(&target, &quick(workload), false).await?);
        }
        // Every message pushed was popped and acked.
        let mut conn = connect(&target).await?;
        for name in quick(Workload::Queues).names() {
            let stats = queue_stats(&mut conn, &name).await?;
            assert_eq!(stats.get("ready"), Some(&0), "{name}: {stats:?}");
            assert_eq!(stats.get("in-flight"), Some(&0), "{name}: {stats:?}");
            assert!(stats["pushed"] > 0, "{name}: {stats:?}");
        }
        drop(conn);

        let _ = stop.send(());
        serving.await??;
        Ok(())
    }

    #[tokio::test]
    async fn a_target_that_is_down_says_what_to_start() {
        let (_held, port) = refused_port();
        for (url, program) in [("turnstile", "`turnstile server`"), ("redis", "redis-server")] {
            let target: Target = format!("{url}://127.0.0.1:{port}").parse().unwrap();
            let err = connect(&target).await.unwrap_err();
            let expected = format!("cannot connect to 127.0.0.1:{port} — is {program} running?");
            assert_eq!(err.to_string(), expected);
        }
    }

    /// A `redis-server` this test started on a free port, stopped when dropped.
    struct RedisServer {
        child: std::process::Child,
        port: u16,
        _dir: tempfile::TempDir,
    }

    impl RedisServer {
        /// `None` when `redis-server` is not installed.
        async fn start() -> anyhow::Result<Option<RedisServer>> {
            let dir = tempfile::tempdir()?;
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let spawned = std::process::Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(dir.path())
                .stdout(std::process::Stdio::null())
                .spawn();
            let child = match spawned {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let redis = RedisServer { child, port, _dir: dir };
            let deadline = Instant::now() + Duration::from_secs(5);
            while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                anyhow::ensure!(Instant::now() < deadline, "redis-server did not listen on {port}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(Some(redis))
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_workload_runs_against_redis_if_installed() -> anyhow::Result<()> {
        let Some(redis) = RedisServer::start().await? else {
            // CI installs the peers and sets this: there, a missing redis-server is a failure.
            assert!(std::env::var_os("TURNSTILE_REQUIRE_PEERS").is_none(), "redis-server is not installed");
            eprintln!("redis-server is not installed: skipped");
            return Ok(());
        };
        let target = Target { peer: Peer::Redis, addr: format!("127.0.0.1:{}", redis.port) };
        for workload in [Workload::Locks, Workload::Queues, Workload::Kv] {
            assert_clean_run(&measure(&target, &quick(workload), false).await?);
        }
        // Every message pushed was moved and removed: both lists are gone.
        let mut conn = connect(&target).await?;
        for name in quick(Workload::Queues).names() {
            for list in [name.clone(), format!("{name}:processing")] {
                let len = call(&mut conn, Cmd::new("LLEN").arg(&list)).await?;
                assert_eq!(len, Frame::Integer(0), "{list}");
            }
        }
        Ok(())
    }
}
