//! The torture run: a cluster of real `turnstile` binaries behind the fault proxy, many clients
//! recording a mixed workload over RESP, HTTP and AMQP, a nemesis injecting faults on a seeded
//! schedule, and at the end the checkers' verdicts on the history.
//!
//! ```text
//!  run(Options)
//!   ├─ cluster.rs   start 1/3/5 nodes (data dirs and logs in the run dir), proxies, spare ids
//!   ├─ workload.rs  client threads: locks + fenced writes, semaphore, KV, queues (RESP, HTTP)
//!   ├─ amqp.rs      AMQP clients: publish with confirms, basic.get + ack
//!   ├─ nemesis.rs   kill / pause / partition / slow-disk / restart / membership, or crash cycles
//!   └─ end: heal, restart, converge, wait past the leases, drain, read every key, check
//! ```
//!
//! The same seed draws the same schedule and the same operations; the timing of a real cluster
//! does the rest, so a run is reproducible in what it tries, not in what it sees.

mod amqp;
mod cluster;
mod nemesis;
mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use turnstile_check::{History, Op, Outcome, Recorder, Verdict};

pub use cluster::{Addrs, Cluster, NodeSettings};
pub use nemesis::Fault;
pub use turnstile_check::{Verdict as CheckVerdict, summary};

use crate::cluster::State;
use crate::nemesis::{LeaderWatch, Nemesis};
use crate::workload::{Client, Shared};

/// What a run does.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `turnstile` binary to start the nodes from.
    pub binary: PathBuf,
    /// 1, 3 or 5.
    pub nodes: usize,
    /// How long the workload and the nemesis run (with `cycles`: the workload's least time).
    pub duration: Duration,
    pub seed: u64,
    pub nemesis: BTreeSet<Fault>,
    /// Client threads (RESP and HTTP); a quarter as many AMQP clients run beside them.
    pub clients: usize,
    /// Where the history, seed, report and node logs go (always written when given; on a
    /// failing run a new dir under the system temp dir otherwise).
    pub out: Option<PathBuf>,
    /// Crash cycles instead of the nemesis's schedule: this many `kill -9`s at random moments.
    pub cycles: Option<u32>,
}

impl Options {
    /// The defaults of `turnstile torture`.
    pub fn new(binary: PathBuf) -> Options {
        Options {
            binary,
            nodes: 3,
            duration: Duration::from_secs(60),
            seed: 1,
            nemesis: Fault::ALL.into_iter().collect(),
            clients: 12,
            out: None,
            cycles: None,
        }
    }
}

/// Operations of one kind, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
}

/// What a run saw and what the checkers said.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub nodes: usize,
    pub nemesis: Vec<Fault>,
    pub duration: Duration,
    pub cycles: Option<u32>,
    /// Per operation kind (`acquire`, `fenced-set`, `push`, ...).
    pub operations: BTreeMap<&'static str, Counts>,
    /// Faults begun, per kind.
    pub faults: BTreeMap<&'static str, u64>,
    pub kills: u64,
    /// Kills that found a snapshot being written in the node's data dir.
    pub kills_mid_snapshot: u64,
    /// Leader changes the run saw (each new term with a leader after the first).
    pub failovers: u64,
    pub verdicts: Vec<Verdict>,
    /// Messages the drain could not reach: still in flight under a lease longer than the run
    /// waits (a queue's `in-flight` gauge after the drain), per queue.
    pub stranded: BTreeMap<String, u64>,
    pub wall: Duration,
    /// Where the history and logs were written, if they were.
    pub out: Option<PathBuf>,
}

impl Report {
    /// Every checker found the history valid.
    pub fn valid(&self) -> bool {
        self.verdicts.iter().all(Verdict::valid)
    }

    pub fn total(&self) -> Counts {
        self.operations.values().fold(Counts::default(), |a, c| Counts {
            ok: a.ok + c.ok,
            fail: a.fail + c.fail,
            info: a.info + c.info,
        })
    }

    pub fn faults_total(&self) -> u64 {
        self.faults.values().sum()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nemesis: Vec<&str> = self.nemesis.iter().map(|f| f.name()).collect();
        writeln!(
            f,
            "torture: seed {}, {} node(s), nemesis {}, {}{}",
            self.seed,
            self.nodes,
            if nemesis.is_empty() { "none".to_owned() } else { nemesis.join(",") },
            humantime_secs(self.duration),
            self.cycles.map(|c| format!(", {c} crash cycles")).unwrap_or_default()
        )?;
        let t = self.total();
        writeln!(
            f,
            "operations: {} ({} ok, {} fail, {} info)",
            t.ok + t.fail + t.info,
            t.ok,
            t.fail,
            t.info
        )?;
        for (kind, c) in &self.operations {
            writeln!(f, "  {kind:<11} {:>7} ok {:>6} fail {:>6} info", c.ok, c.fail, c.info)?;
        }
        let faults: Vec<String> = self.faults.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(
            f,
            "faults: {} ({}); kill -9: {} ({} mid-snapshot); failovers: {}",
            self.faults_total(),
            if faults.is_empty() { "none".to_owned() } else { faults.join(", ") },
            self.kills,
            self.kills_mid_snapshot,
            self.failovers
        )?;
        if !self.stranded.is_empty() {
            let list: Vec<String> = self.stranded.iter().map(|(q, n)| format!("{q} {n}")).collect();
            writeln!(f, "still in flight after the drain (not drained): {}", list.join(", "))?;
        }
        // One line per checker, its violations (and what it could not decide) below.
        write!(f, "{}", turnstile_check::summary(&self.verdicts))?;
        write!(f, "wall time: {}", humantime_secs(self.wall))?;
        if let Some(out) = &self.out {
            write!(f, "\nhistory and logs: {}", out.display())?;
        }
        Ok(())
    }
}

fn humantime_secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The short name of an operation's kind, for the counts.
fn kind(op: &Op) -> &'static str {
    match op {
        Op::Acquire { limit: None, .. } => "acquire",
        Op::Acquire { .. } => "sem-acquire",
        Op::Renew { .. } => "renew",
        Op::Release { .. } => "release",
        Op::FencedSet { .. } => "fenced-set",
        Op::Get { .. } => "get",
        Op::Set { .. } => "set",
        Op::SetNx { .. } => "set-nx",
        Op::Push { .. } => "push",
        Op::Pop { .. } => "pop",
        Op::Ack { .. } => "ack",
        Op::Nack { .. } => "nack",
        Op::Nemesis { .. } => "nemesis",
    }
}

/// Checks a saved history again (`turnstile torture --check FILE.jsonl`).
pub fn check_file(path: &Path) -> anyhow::Result<Vec<Verdict>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let history = History::read_jsonl(std::io::BufReader::new(file))
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(turnstile_check::check(&history))
}

/// Runs the torture: starts the cluster, runs the workload under the nemesis, ends it cleanly,
/// and checks the history. `Err` when the run itself broke (a node that would not start, a
/// cluster that never converged); the run dir then keeps the logs, named in the error.
pub fn run(options: Options) -> anyhow::Result<Report> {
    if ![1, 3, 5].contains(&options.nodes) {
        bail!("--nodes must be 1, 3 or 5 (got {})", options.nodes);
    }
    if options.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let run_dir = match &options.out {
        Some(out) => out.clone(),
        None => std::env::temp_dir().join(format!(
            "turnstile-torture-{}-{}-{}",
            options.seed,
            std::process::id(),
            Recorder::new().now() % 1_000_000
        )),
    };
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let result = run_in(&options, &run_dir);
    match result {
        Ok((mut report, history)) => {
            if !report.valid() || options.out.is_some() {
                write_out(&run_dir, &report, &history)?;
                report.out = Some(run_dir.clone());
            }
            if report.valid() {
                remove_data_dirs(&run_dir, options.out.is_none());
            }
            Ok(report)
        }
        Err(e) => Err(e.context(format!("the run broke; its node logs are in {}", run_dir.display()))),
    }
}

fn write_out(dir: &Path, report: &Report, history: &History) -> anyhow::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(dir.join("history.jsonl"))?);
    history.write_jsonl(&mut file)?;
    file.flush()?;
    std::fs::write(dir.join("seed"), format!("{}\n", report.seed))?;
    std::fs::write(dir.join("report.txt"), format!("{report}\n"))?;
    Ok(())
}

/// After a valid run: the nodes' data dirs go (the logs stay when the dir was asked for; the
/// whole run dir goes when it was a temporary one).
fn remove_data_dirs(run_dir: &Path, whole: bool) {
    if whole {
        let _ = std::fs::remove_dir_all(run_dir);
        return;
    }
    if let Ok(entries) = std::fs::read_dir(run_dir) {
        for entry in entries.flatten() {
            if entry.path().is_dir() && entry.file_name().to_string_lossy().starts_with("node-") {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

fn run_in(options: &Options, run_dir: &Path) -> anyhow::Result<(Report, History)> {
    let started = Instant::now();
    let slow_disk = options.nemesis.contains(&Fault::SlowDisk);
    let settings = NodeSettings {
        election_timeout_ms: 500,
        snapshot_every: 300,
        session_timeout_ms: 3000,
        fault_injection: slow_disk,
    };
    // Spare ids for the nodes the membership fault adds (one per change; a run makes few).
    let spare = if options.nemesis.contains(&Fault::Membership) && options.nodes >= 3 { 16 } else { 0 };
    let mut cluster = Cluster::start(&options.binary, run_dir, options.nodes, spare, settings)?;
    let recorder = Recorder::new();
    let stop = Arc::new(AtomicBool::new(false));
    let shared =
        Shared { recorder: recorder.clone(), directory: cluster.directory.clone(), stop: stop.clone() };
    workload::create_queues(&cluster.directory, Instant::now() + Duration::from_secs(60))?;

    let clients = u64::try_from(options.clients).context("clients")?;
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let client = Client::new(i, clients, options.seed, shared.clone());
            std::thread::spawn(move || client.run())
        })
        .collect();
    let amqp_clients = (options.clients / 4).max(1);
    let amqp = amqp::start(&cluster.runtime, &shared, options.seed, clients, amqp_clients);

    let watch = {
        let (directory, stop) = (cluster.directory.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut watch = LeaderWatch::default();
            while !stop.load(Ordering::Relaxed) {
                let addrs: Vec<String> = directory
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .iter()
                    .flatten()
                    .map(|a| a.resp.clone())
                    .collect();
                watch.observe(&addrs);
                std::thread::sleep(Duration::from_millis(300));
            }
            watch.failovers
        })
    };

    let until = started + options.duration;
    let mut nemesis = Nemesis::new(&mut cluster, recorder.clone(), options.seed, &options.nemesis);
    let faulted = match options.cycles {
        Some(cycles) => nemesis.crash_cycles(cycles),
        None => nemesis.run(until),
    };
    let tally = nemesis.tally.clone();
    // Whatever the nemesis did, the workload runs its time.
    if let Some(left) = until.checked_duration_since(Instant::now()) {
        std::thread::sleep(left);
    }
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    cluster.runtime.block_on(amqp.stop());
    let failovers = watch.join().unwrap_or(0);
    faulted?;

    // Heal, resume, restart: every member up and talking.
    cluster.faults.heal();
    for i in cluster.members() {
        cluster.resume_if_paused(i);
    }
    let down: Vec<usize> =
        cluster.members().into_iter().filter(|&i| cluster.nodes[i].state == State::Down).collect();
    cluster.start_nodes(&down)?;
    converge(&cluster)?;
    // Past every lease and delay: holds run out, deliveries in flight come back, delayed
    // messages are ready.
    std::thread::sleep(Duration::from_millis(
        workload::LEASE_MS.max(workload::DELIVERY_LEASE_MS) + workload::MAX_DELAY_MS + 1000,
    ));
    // The drain's processes come after every client's.
    drain(&shared, 1 << 48)?;
    let stranded = stranded(&cluster);

    let history = recorder.history();
    let verdicts = turnstile_check::check(&history);
    let mut operations: BTreeMap<&'static str, Counts> = BTreeMap::new();
    for call in history.calls() {
        let c = operations.entry(kind(call.op)).or_default();
        match call.outcome {
            Outcome::Ok => c.ok += 1,
            Outcome::Fail => c.fail += 1,
            Outcome::Info => c.info += 1,
        }
    }
    let report = Report {
        seed: options.seed,
        nodes: options.nodes,
        // Crash cycles replace the schedule: kills only.
        nemesis: if options.cycles.is_some() {
            vec![Fault::Kill]
        } else {
            options.nemesis.iter().copied().collect()
        },
        duration: options.duration,
        cycles: options.cycles,
        operations,
        faults: tally.faults.iter().map(|(f, n)| (f.name(), *n)).collect(),
        kills: tally.kills,
        kills_mid_snapshot: tally.kills_mid_snapshot,
        failovers,
        verdicts,
        stranded,
        wall: started.elapsed(),
        out: None,
    };
    Ok((report, history))
}

/// Waits (bounded) until one member leads, every member follows it in its term, and every member
/// has applied the same index.
fn converge(cluster: &Cluster) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = String::new();
    while Instant::now() < deadline {
        let members = cluster.members();
        let infos: Vec<_> = members.iter().filter_map(|&i| cluster.raft_info(i)).collect();
        if infos.len() == members.len() {
            let same = |key: &str| infos.iter().all(|m| m.get(key) == infos[0].get(key));
            let led =
                infos.iter().filter(|m| m.get("role").map(String::as_str) == Some("leader")).count() == 1;
            if led
                && same("leader")
                && same("term")
                && same("applied_index")
                && infos[0].get("leader").is_some_and(|l| l != "none")
            {
                return Ok(());
            }
            last = format!("{infos:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("the cluster did not converge (one leader, every node applied the same index) within 90 s: {last}")
}

/// Pops every queue and dead-letter queue until a whole pass finds nothing twice, a delivery
/// lease apart (an ack whose outcome was unknown may bring its message back), acking each
/// delivery; then reads every key. All recorded as ordinary operations.
fn drain(shared: &Shared, process: u64) -> anyhow::Result<()> {
    let mut client = Client::new(process, 1, 0, shared.clone());
    let queues: Vec<&str> = workload::QUEUES.iter().flat_map(|(q, d)| [*q, *d]).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut quiet_passes = 0;
    while quiet_passes < 2 {
        if Instant::now() > deadline {
            bail!("the queues did not drain within 120 s");
        }
        let mut found = false;
        for queue in &queues {
            loop {
                match client.pop_from(queue, 10, false) {
                    Some(deliveries) if deliveries.is_empty() => break,
                    Some(deliveries) => {
                        found = true;
                        for d in &deliveries {
                            client.ack(d, false);
                        }
                    }
                    // Unknown or refused: try again (on the next node).
                    None => found = true,
                }
                if Instant::now() > deadline {
                    break;
                }
            }
        }
        if found {
            quiet_passes = 0;
        } else {
            quiet_passes += 1;
            if quiet_passes < 2 {
                std::thread::sleep(Duration::from_millis(workload::DELIVERY_LEASE_MS + 500));
            }
        }
    }
    client.read_every_key(deadline);
    Ok(())
}

/// The queues' `in-flight` gauges after the drain, where not zero (asked of any running member;
/// empty if none answers).
fn stranded(cluster: &Cluster) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Some(addrs) = cluster.running().into_iter().find_map(|i| cluster.addrs(i)) else { return out };
    let Ok(mut con) = redis::Client::open(format!("redis://{}/", addrs.resp))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
    else {
        return out;
    };
    for (queue, dlq) in workload::QUEUES {
        for name in [queue, dlq] {
            let Ok(stats) = redis::cmd("Q.STATS").arg(name).query::<Vec<redis::Value>>(&mut con) else {
                continue;
            };
            let in_flight = stats.chunks(2).find_map(|kv| match kv {
                [redis::Value::BulkString(k), redis::Value::Int(n)] if k == b"in-flight" => {
                    u64::try_from(*n).ok()
                }
                _ => None,
            });
            if let Some(n) = in_flight.filter(|&n| n > 0) {
                out.insert(name.to_owned(), n);
            }
        }
    }
    out
}

/// One HTTP `PUT` with a JSON body; the status.
pub(crate) fn http_put(addr: &str, path: &str, body: &str) -> anyhow::Result<u16> {
    let mut stream = std::net::TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {response:?}"))
}
