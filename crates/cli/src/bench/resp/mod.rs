//! `turnstile bench locks | queues | kv`: a closed-loop load generator that runs one workload
//! against Turnstile and, in the same invocation, against its peers (Redis; etcd for locks), then
//! prints one table to compare them.
//!
//! ```text
//!  run ─► every address of every --target answers? ─► for each target, one after the other:
//!           connect every client (client i to address i % N) ─► clean its bench:* names
//!           ─► spawn the clients ─► merge
//!                │ each: loop { one op; record µs }
//!                └─► ops done ─► progress bar (stderr)
//!      ─► one table (or JSON) with a row per target
//! ```
//!
//! Turnstile and Redis are driven by the same [`Connection`] over RESP2, so the client side
//! costs the same and only the servers differ; etcd is driven over its JSON gateway (`../etcd/`).
//! One op is one whole cycle (acquire + release, push + pop + ack, SET + GET): what an
//! application waits for, not a single command. A target may list several addresses, the nodes
//! of a cluster: its clients are spread over them.

mod client;

use std::hash::{BuildHasher, RandomState};
use std::io::IsTerminal;
use std::str::FromStr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;
use turnstile_client::{Cmd, Connection, Frame};

use super::args::{BenchArgs, Workload};
use super::etcd;
use super::report::{CONNECT_TIMEOUT, Phases, Report, describe, progress_bar, render_table, watch};
use client::{Link, Op, client};

/// Runs a RESP workload against every target in turn and prints one row per target.
/// `server` ("HOST:PORT", or a cluster's list: the first is taken) is the target when no
/// `--target` is given.
pub(super) async fn run(args: &BenchArgs, server: &str) -> anyhow::Result<()> {
    let settings = Settings::new(args)?;
    let targets = match &args.targets {
        targets if !targets.is_empty() => targets
            .iter()
            .map(|url| url.parse().map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<_>>()?,
        _ => vec![default_target(server)?],
    };
    for target in &targets {
        anyhow::ensure!(
            target.peer != Peer::Etcd || settings.workload == Workload::Locks,
            "{target}: etcd is a peer of the locks workload only, not of {}",
            settings.workload.name()
        );
    }
    // A target that is down fails the command now, not after the ones before it took their time.
    for target in &targets {
        let dial = Dial::new(target, settings.tls_ca.as_deref())?;
        for addr in &target.addrs {
            connect(&dial, addr).await?.close().await;
        }
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

/// Which server a target is: it decides the commands an op sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Turnstile,
    Redis,
    /// Over its JSON gateway, locks only.
    Etcd,
}

impl Peer {
    fn scheme(self) -> &'static str {
        match self {
            Peer::Turnstile => "turnstile",
            Peer::Redis => "redis",
            Peer::Etcd => "etcd",
        }
    }

    /// What to start when nothing answers, for the connect error.
    fn program(self) -> &'static str {
        match self {
            Peer::Turnstile => "`turnstile server`",
            Peer::Redis => "redis-server",
            Peer::Etcd => "etcd",
        }
    }
}

/// One server, or one cluster, to measure: `turnstile://HOST:PORT`, `redis://HOST:PORT`,
/// `etcd://HOST:PORT`, each with one address or several comma-separated ones. `turnstiles://`
/// and `rediss://` connect under TLS; `[USER:]PASSWORD@` before the addresses authenticates
/// each connection with `AUTH` first.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    peer: Peer,
    /// Where the clients connect: client i to `addrs[i % addrs.len()]`. Never empty.
    addrs: Vec<String>,
    tls: bool,
    /// The user (or `None`: the default user) and password `AUTH` names.
    auth: Option<(Option<String>, String)>,
}

/// How a client reaches its target: what [`connect`] needs besides the address.
#[derive(Debug, Clone)]
pub(super) struct Dial {
    peer: Peer,
    tls: Option<std::sync::Arc<turnstile_tls::ClientConfig>>,
    auth: Option<(Option<String>, String)>,
}

impl Dial {
    fn new(target: &Target, tls_ca: Option<&std::path::Path>) -> anyhow::Result<Dial> {
        let tls = match (target.tls, tls_ca) {
            (false, _) => None,
            (true, Some(ca)) => Some(turnstile_tls::client_config(ca, None)?),
            (true, None) => {
                anyhow::bail!("{target} is under TLS: give --tls-ca, the CA that signed its certificate")
            }
        };
        Ok(Dial { peer: target.peer, tls, auth: target.auth.clone() })
    }
}

impl Target {
    /// The address client `i` connects to.
    fn addr(&self, i: usize) -> &str {
        &self.addrs[i % self.addrs.len()]
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(url: &str) -> Result<Target, String> {
        let expected = "expected turnstile://HOST:PORT, redis://HOST:PORT or etcd://HOST:PORT, \
                        or several comma-separated HOST:PORT after the scheme";
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!("invalid target {url:?}: {expected}"));
        };
        let (peer, tls) = match scheme {
            "turnstile" => (Peer::Turnstile, false),
            "turnstiles" => (Peer::Turnstile, true),
            "redis" => (Peer::Redis, false),
            "rediss" => (Peer::Redis, true),
            "etcd" => (Peer::Etcd, false),
            other => return Err(format!("unknown scheme {other:?} in target {url:?}: {expected}")),
        };
        let (auth, rest) = match rest.rsplit_once('@') {
            None => (None, rest),
            Some((userinfo, rest)) => {
                let auth = match userinfo.split_once(':') {
                    Some((user, pass)) if !user.is_empty() => (Some(user.to_owned()), pass.to_owned()),
                    Some((_, pass)) => (None, pass.to_owned()),
                    None => (None, userinfo.to_owned()),
                };
                (Some(auth), rest)
            }
        };
        let list = rest.strip_suffix('/').unwrap_or(rest);
        let has_port = |addr: &str| {
            addr.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok()
            })
        };
        let addrs: Vec<String> = list.split(',').map(|addr| addr.trim().to_owned()).collect();
        if let Some(bad) = addrs.iter().find(|addr| !has_port(addr)) {
            return Err(format!("invalid address {bad:?} in target {url:?}: {expected}"));
        }
        Ok(Target { peer, addrs, tls, auth })
    }
}

/// The target without its password.
impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = if self.tls { "s" } else { "" };
        let user = match &self.auth {
            Some((Some(user), _)) => format!("{user}@"),
            Some((None, _)) => "default@".to_owned(),
            None => String::new(),
        };
        write!(f, "{}{s}://{user}{}", self.peer.scheme(), self.addrs.join(","))
    }
}

/// The target when no `--target` is given: the Turnstile server the other commands talk to
/// (`HOST:PORT`, `turnstile://HOST:PORT`, or a cluster's list, of which the bench takes the first).
fn default_target(server: &str) -> anyhow::Result<Target> {
    let addrs = turnstile_client::parse_addrs(server)?;
    let addr = addrs.into_iter().next().context("no server address")?;
    Ok(Target { peer: Peer::Turnstile, addrs: vec![addr], tls: false, auth: None })
}

/// The settings one target is measured with; every target gets the same.
#[derive(Debug, Clone)]
struct Settings {
    workload: Workload,
    clients: usize,
    /// How many names the clients share; client i uses name i % keys.
    keys: usize,
    size: usize,
    /// Locks: how long a Turnstile acquire waits in line; zero: not at all.
    wait: Duration,
    duration: Duration,
    warmup: Duration,
    /// The CA for targets under TLS.
    tls_ca: Option<std::path::PathBuf>,
}

impl Settings {
    fn new(args: &BenchArgs) -> anyhow::Result<Settings> {
        anyhow::ensure!(!args.duration.is_zero(), "--duration must be more than 0");
        anyhow::ensure!(
            args.wait < client::OP_TIMEOUT,
            "--wait must be below {}: an op that takes longer counts as an error",
            humantime::format_duration(client::OP_TIMEOUT)
        );
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
            wait: args.wait,
            duration: args.duration,
            warmup: args.warmup,
            tls_ca: args.tls_ca.clone(),
        })
    }

    /// The names this run uses (more `--keys` than clients leaves some unused).
    fn names(&self) -> Vec<String> {
        (0..self.keys.min(self.clients)).map(|n| self.workload.key(n)).collect()
    }

    /// One line above the table saying what was measured.
    fn summary(&self) -> String {
        let (nouns, size) = match self.workload {
            Workload::Locks if !self.wait.is_zero() => (
                "locks",
                format!(", Turnstile acquires waiting up to {}", humantime::format_duration(self.wait)),
            ),
            Workload::Locks => ("locks", String::new()),
            Workload::Queues => ("queues", format!(", {}-byte payloads", self.size)),
            Workload::Kv => ("keys", format!(", {}-byte values", self.size)),
            Workload::Evalsha => ("locks", ", released by EVALSHA".to_owned()),
            Workload::Multi => ("keys", format!(", 3 commands per EXEC, {}-byte values", self.size)),
            // `bench::run` hands amqp and failover to their own runs before any settings are made.
            Workload::Amqp | Workload::Failover => ("queues", String::new()),
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

/// Connects one client to `addr`; to etcd, that includes taking the client's lease.
async fn connect(dial: &Dial, addr: &str) -> anyhow::Result<Link> {
    let peer = dial.peer;
    let link = match peer {
        Peer::Turnstile | Peer::Redis => {
            let conn = match &dial.tls {
                None => Connection::connect(addr, CONNECT_TIMEOUT).await,
                Some(tls) => Connection::connect_tls(addr, CONNECT_TIMEOUT, tls.clone()).await,
            };
            conn.map(Link::Resp).map_err(Into::into)
        }
        Peer::Etcd => etcd::Session::open(addr, CONNECT_TIMEOUT).await.map(Link::Etcd),
    };
    let mut link =
        link.with_context(|| format!("cannot connect to {addr} — is {} running?", peer.program()))?;
    if let (Some((user, pass)), Link::Resp(conn)) = (&dial.auth, &mut link) {
        let auth = match user {
            Some(user) => Cmd::new("AUTH").arg(user).arg(pass),
            None => Cmd::new("AUTH").arg(pass),
        };
        conn.call(&auth).await.with_context(|| format!("AUTH at {addr}"))?;
    }
    Ok(link)
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
        // Nor is there anything of etcd's to clean over RESP: its locks end with their lease.
        (Peer::Etcd, _) => Vec::new(),
        (Peer::Redis, Workload::Queues) => {
            names.iter().flat_map(|q| [del(q), Cmd::new("DEL").arg(format!("{q}:processing"))]).collect()
        }
        (_, Workload::Locks | Workload::Kv | Workload::Evalsha) => names.iter().map(del).collect(),
        (_, Workload::Multi) => {
            names.iter().flat_map(|k| [del(k), Cmd::new("DEL").arg(format!("{k}:n"))]).collect()
        }
        (_, Workload::Amqp | Workload::Failover) => Vec::new(),
    };
    if !cmds.is_empty() {
        conn.pipeline(&cmds).await.context("cleaning up before the run")?;
    }
    Ok(())
}

/// Loads the lock release script that `evalsha` ops run into every server of the target (the
/// first connections reach every address: client i connects to address i % N), and returns its
/// SHA1 as the servers name it. A server that does not know `SCRIPT LOAD` fails the run here,
/// before anything is measured.
async fn load_release_script(conns: &mut [Link]) -> anyhow::Result<Bytes> {
    let mut sha = None;
    for link in conns {
        let Link::Resp(conn) = link else { anyhow::bail!("evalsha runs over RESP only") };
        let loaded =
            match client::call(conn, Cmd::new("SCRIPT").arg("LOAD").arg(client::RELEASE_SCRIPT)).await? {
                Frame::Bulk(loaded) => loaded,
                other => anyhow::bail!("SCRIPT LOAD answered {other:?}"),
            };
        anyhow::ensure!(
            sha.as_ref().is_none_or(|sha| *sha == loaded),
            "the servers named the script differently"
        );
        sha = Some(loaded);
    }
    sha.context("no connection to load the script on")
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
    /// How a client reconnects.
    dial: Dial,
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
    let dial = Dial::new(target, settings.tls_ca.as_deref())?;
    let mut conns = Vec::with_capacity(settings.clients);
    for i in 0..settings.clients {
        conns.push(connect(&dial, target.addr(i)).await?);
    }
    // What one node of a cluster cleans, every node sees.
    if let Some(Link::Resp(conn)) = conns.first_mut() {
        clean(conn, target.peer, settings).await?;
    }
    let script_sha = match settings.workload {
        Workload::Evalsha => {
            load_release_script(&mut conns[..target.addrs.len().min(settings.clients)]).await?
        }
        _ => Bytes::new(),
    };
    // Redis lock values must differ from any other run's; the hasher's keys are random.
    let nonce = RandomState::new().hash_one(std::process::id());
    let value = Bytes::from(vec![b'v'; settings.size]);
    let start = Instant::now();
    let run = Arc::new(Run {
        dial,
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
                addr: target.addr(i).to_owned(),
                workload: settings.workload,
                client: id,
                processing: Bytes::from(format!("{}:processing", String::from_utf8_lossy(&key))),
                counter: Bytes::from(format!("{}:n", String::from_utf8_lossy(&key))),
                key,
                script_sha: script_sha.clone(),
                value: value.clone(),
                size: settings.size,
                wait_ms: u64::try_from(settings.wait.as_millis()).unwrap_or(u64::MAX),
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

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;

    use turnstile_client::Frame;

    use crate::bench::args::tests::{ArgsCli, parse_args};
    use crate::bench::peers::{EtcdServer, RedisServer, TurnstileServer, refused_port};
    use client::call;

    #[test]
    fn target_reads_turnstile_and_redis_urls() {
        let turnstile: Target = "turnstile://127.0.0.1:7379".parse().unwrap();
        assert_eq!(
            turnstile,
            Target { peer: Peer::Turnstile, addrs: vec!["127.0.0.1:7379".into()], tls: false, auth: None }
        );
        let redis: Target = "redis://localhost:6379/".parse().unwrap();
        assert_eq!(
            redis,
            Target { peer: Peer::Redis, addrs: vec!["localhost:6379".into()], tls: false, auth: None }
        );
        assert_eq!(redis.to_string(), "redis://localhost:6379");
        let v6: Target = "redis://[::1]:6379".parse().unwrap();
        assert_eq!(v6.addrs, ["[::1]:6379"]);
        let etcd: Target = "etcd://127.0.0.1:2379".parse().unwrap();
        assert_eq!(
            etcd,
            Target { peer: Peer::Etcd, addrs: vec!["127.0.0.1:2379".into()], tls: false, auth: None }
        );
    }

    #[test]
    fn a_target_may_be_under_tls_and_authenticate() {
        let t: Target = "turnstiles://alice:s3cret@127.0.0.1:7390".parse().unwrap();
        assert!(t.tls);
        assert_eq!(t.auth, Some((Some("alice".into()), "s3cret".into())));
        assert_eq!(t.to_string(), "turnstiles://alice@127.0.0.1:7390", "no password shown");
        let r: Target = "rediss://pw@localhost:6390".parse().unwrap();
        assert_eq!((r.peer, r.tls, r.auth), (Peer::Redis, true, Some((None, "pw".into()))));
        let err = Dial::new(&"rediss://localhost:6390".parse().unwrap(), None).unwrap_err();
        assert!(err.to_string().contains("--tls-ca"), "{err}");
    }

    #[test]
    fn a_target_may_list_a_clusters_nodes_and_spreads_its_clients_over_them() {
        let cluster: Target = "turnstile://a:1,b:2, c:3/".parse().unwrap();
        assert_eq!(cluster.addrs, ["a:1", "b:2", "c:3"]);
        assert_eq!(cluster.to_string(), "turnstile://a:1,b:2,c:3");
        let spread: Vec<&str> = (0..7).map(|i| cluster.addr(i)).collect();
        assert_eq!(spread, ["a:1", "b:2", "c:3", "a:1", "b:2", "c:3", "a:1"]);
        let one: Target = "etcd://e:2379".parse().unwrap();
        assert!((0..3).all(|i| one.addr(i) == "e:2379"));
        for bad in ["turnstile://a:1,", "turnstile://a:1,,b:2", "etcd://a:1,b", "redis://a:1/x:2"] {
            let err = bad.parse::<Target>().unwrap_err();
            assert!(err.starts_with("invalid address"), "{bad:?}: {err}");
        }
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
        assert_eq!(default_target("turnstile://a:1,b:2").unwrap().addrs, ["a:1"]);
        assert!(default_target("nowhere").is_err());
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
        assert_eq!(Settings::new(&args).unwrap().wait, Duration::ZERO);
        assert_eq!(
            Settings::new(&parse("bench locks --wait 2s").unwrap()).unwrap().wait,
            Duration::from_secs(2)
        );
        let err = Settings::new(&parse("bench locks --wait 10s").unwrap()).unwrap_err();
        assert!(err.to_string().starts_with("--wait must be below 10s"), "{err}");

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

        assert_eq!(parse("bench evalsha").unwrap().workload, Workload::Evalsha);
        assert_eq!(parse("bench multi --clients 50").unwrap().workload, Workload::Multi);
        assert_eq!(Workload::Evalsha.key(3), "bench:evalsha:3");

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

    /// Every workload that runs over RESP.
    const ALL_RESP: [Workload; 5] =
        [Workload::Locks, Workload::Queues, Workload::Kv, Workload::Evalsha, Workload::Multi];

    /// A short run: 4 clients on 2 names, so locks are contended and queues shared.
    fn quick(workload: Workload) -> Settings {
        Settings {
            workload,
            clients: 4,
            keys: 2,
            size: 100,
            wait: Duration::ZERO,
            duration: Duration::from_millis(300),
            warmup: Duration::ZERO,
            tls_ca: None,
        }
    }

    fn assert_clean_run(report: &Report<Row>) {
        let row = &report.row;
        assert!(row.ops > 0, "{row:?}");
        assert_eq!(row.errors, 0, "{row:?}: {:?}", report.first_error);
        // Latencies were recorded, in order.
        assert!(row.p50_ms > 0.0 && row.p50_ms <= row.p99_ms, "{row:?}");
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
        let server = TurnstileServer::start().await?;
        let target = Target {
            peer: Peer::Turnstile,
            addrs: vec![server.resp_addr.to_string()],
            tls: false,
            auth: None,
        };

        for workload in [Workload::Locks, Workload::Queues, Workload::Kv] {
            assert_clean_run(&measure(&target, &quick(workload), false).await?);
        }
        // Acquires that wait in line for a contended lock never come back empty-handed.
        let waiting = Settings { wait: Duration::from_secs(5), ..quick(Workload::Locks) };
        let report = measure(&target, &waiting, false).await?;
        assert_clean_run(&report);
        assert_eq!(report.row.busy_or_empty, 0, "{:?}", report.row);
        // Every message pushed was popped and acked.
        let mut conn = Connection::connect(&target.addrs[0], CONNECT_TIMEOUT).await?;
        for name in quick(Workload::Queues).names() {
            let stats = queue_stats(&mut conn, &name).await?;
            assert_eq!(stats.get("ready"), Some(&0), "{name}: {stats:?}");
            assert_eq!(stats.get("in-flight"), Some(&0), "{name}: {stats:?}");
            assert!(stats["pushed"] > 0, "{name}: {stats:?}");
        }
        drop(conn);

        server.stop().await
    }

    /// The workloads of Redis's Lua scripts and transactions, against Turnstile: the release
    /// script is loaded once, and every op's EXEC answers the transaction's three replies.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn evalsha_and_multi_run_against_turnstile() -> anyhow::Result<()> {
        let server = TurnstileServer::start().await?;
        let target = Target {
            peer: Peer::Turnstile,
            addrs: vec![server.resp_addr.to_string()],
            tls: false,
            auth: None,
        };
        for workload in [Workload::Evalsha, Workload::Multi] {
            let report = measure(&target, &quick(workload), false).await?;
            assert_clean_run(&report);
            if workload == Workload::Multi {
                // Each op's INCR bumped its name's counter once (there is no warmup).
                let mut conn = Connection::connect(&target.addrs[0], CONNECT_TIMEOUT).await?;
                let mut total = 0;
                for name in quick(workload).names() {
                    match call(&mut conn, Cmd::new("GET").arg(format!("{name}:n"))).await? {
                        Frame::Bulk(n) => total += String::from_utf8_lossy(&n).parse::<u64>()?,
                        other => anyhow::bail!("{name}:n is {other:?}"),
                    }
                }
                assert_eq!(total, report.row.ops, "one increment per op");
            }
        }
        server.stop().await
    }

    #[tokio::test]
    async fn a_target_that_is_down_says_what_to_start() {
        let (_held, port) = refused_port();
        for (url, program) in
            [("turnstile", "`turnstile server`"), ("redis", "redis-server"), ("etcd", "etcd")]
        {
            let target: Target = format!("{url}://127.0.0.1:{port}").parse().unwrap();
            let err = connect(&Dial::new(&target, None).unwrap(), &target.addrs[0]).await.unwrap_err();
            let expected = format!("cannot connect to 127.0.0.1:{port} — is {program} running?");
            assert_eq!(err.to_string(), expected);
        }
    }

    /// Two servers in one target: each of them serves half the clients.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_clients_of_a_target_with_several_addresses_go_to_every_one() -> anyhow::Result<()> {
        let servers = [TurnstileServer::start().await?, TurnstileServer::start().await?];
        let target: Target = format!("turnstile://{},{}", servers[0].resp_addr, servers[1].resp_addr)
            .parse()
            .map_err(anyhow::Error::msg)?;
        assert_clean_run(&measure(&target, &quick(Workload::Locks), false).await?);
        for server in &servers {
            let mut conn = Connection::connect(&server.resp_addr.to_string(), CONNECT_TIMEOUT).await?;
            let Frame::Bulk(text) = call(&mut conn, Cmd::new("INFO").arg("stats")).await? else {
                anyhow::bail!("INFO is not a bulk string");
            };
            let text = String::from_utf8_lossy(&text);
            let received = text
                .lines()
                .find_map(|line| line.strip_prefix("total_connections_received:"))
                .and_then(|n| n.trim().parse::<u64>().ok());
            // 2 of the 4 clients, and this connection.
            assert_eq!(received, Some(3), "{}: {text}", server.resp_addr);
        }
        for server in servers {
            server.stop().await?;
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn locks_run_against_etcd_if_installed() -> anyhow::Result<()> {
        let Some(etcd) = EtcdServer::start().await? else {
            assert!(
                std::env::var_os("TURNSTILE_REQUIRE_PEERS").is_none(),
                "etcd (etcd-server) is not installed"
            );
            eprintln!("etcd is not installed: skipped");
            return Ok(());
        };
        let target: Target = format!("etcd://{},{}", etcd.client_addr, etcd.client_addr)
            .parse()
            .map_err(anyhow::Error::msg)?;
        for keys in [1, 2] {
            let settings = Settings { keys, ..quick(Workload::Locks) };
            let report = measure(&target, &settings, false).await?;
            assert_clean_run(&report);
            // etcd's lock waits in line: a contended acquire is never a miss.
            assert_eq!(report.row.busy_or_empty, 0, "{:?}", report.row);
        }
        // Every client revoked its lease when it was done: no lock is left behind.
        assert_eq!(crate::bench::etcd::tests::lease_count(&etcd.client_addr).await?, 0);
        // Only locks are etcd's.
        let args = parse(&format!("bench kv --target etcd://{}", etcd.client_addr))?;
        let err = run(&args, "127.0.0.1:1").await.unwrap_err();
        assert!(err.to_string().contains("etcd is a peer of the locks workload only, not of kv"), "{err}");
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_workload_runs_against_redis_if_installed() -> anyhow::Result<()> {
        let Some(redis) = RedisServer::start().await? else {
            // CI installs the peers and sets this: there, a missing redis-server is a failure.
            assert!(std::env::var_os("TURNSTILE_REQUIRE_PEERS").is_none(), "redis-server is not installed");
            eprintln!("redis-server is not installed: skipped");
            return Ok(());
        };
        let target = Target {
            peer: Peer::Redis,
            addrs: vec![format!("127.0.0.1:{}", redis.port)],
            tls: false,
            auth: None,
        };
        for workload in ALL_RESP {
            assert_clean_run(&measure(&target, &quick(workload), false).await?);
        }
        // Every message pushed was moved and removed: both lists are gone.
        let mut conn = Connection::connect(&target.addrs[0], CONNECT_TIMEOUT).await?;
        for name in quick(Workload::Queues).names() {
            for list in [name.clone(), format!("{name}:processing")] {
                let len = call(&mut conn, Cmd::new("LLEN").arg(&list)).await?;
                assert_eq!(len, Frame::Integer(0), "{list}");
            }
        }
        Ok(())
    }
}
