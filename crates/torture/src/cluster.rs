//! A cluster of real `turnstile` binaries on loopback, each node's Raft listener behind a
//! [`Proxy`] that applies the shared [`Faults`] table, so the nemesis can partition nodes, crash
//! them (`kill -9`), pause them (`SIGSTOP`) and restart them without root.
//!
//! ```text
//!  node i: --raft-addr <its own port>  --peers 1=<proxy 1>,2=<proxy 2>,...   (the same on all)
//!  node 1 ──► proxy of 2 ──(Faults: rule 1→2)──► node 2's raft-addr
//! ```
//!
//! Every node gets a data dir and a log file (its stderr, appended across restarts) in the run
//! dir. A node that joins later (`--join`) listens where the others dial it, so no proxy stands in
//! front of it: partitions cut only the links it opens. The cluster signals only the processes it
//! started, and dropping it kills them all.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, RwLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use turnstile_proxy::{Faults, Proxy, Rule};

/// How long a node may take to print its ready line: a node of a cluster waits a while for a
/// leader before it reports ready, and a debug build on a busy machine starts slowly.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What a partition does to the links it cuts: packets lost silently, as on a real network.
pub const CUT: Rule = Rule::BlackHole;

/// Where a running node serves its clients. Changes on every start (port 0 picks free ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addrs {
    pub resp: String,
    pub http: String,
    pub amqp: String,
}

/// The client addresses of every slot, shared with the clients: `None` while a node is down.
/// A paused node keeps its entry (its clients find out by their timeouts, as real ones would).
pub type Directory = Arc<RwLock<Vec<Option<Addrs>>>>;

/// Whether a node's process runs, is stopped, or is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Never started, killed, stopped, or removed from the cluster.
    Down,
    Running,
    /// Stopped by SIGSTOP.
    Paused,
}

/// One node: its process (when started), data dir, addresses and flags.
#[derive(Debug)]
pub struct Node {
    pub id: u64,
    pub state: State,
    /// Removed from the cluster: never started again (its id is retired).
    pub retired: bool,
    /// Where the node listens for its peers.
    pub raft_addr: String,
    /// Where its peers dial it: its proxy (or its own listener, for a node that joined).
    pub peer_addr: String,
    pub dir: PathBuf,
    pub log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

/// The settings every node of a run gets.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub election_timeout_ms: u64,
    pub snapshot_every: u64,
    pub session_timeout_ms: u64,
    /// `--fault-injection`: the hooks the slow-disk fault needs.
    pub fault_injection: bool,
}

impl NodeSettings {
    fn flags(&self) -> Vec<String> {
        let mut flags = vec![
            "--election-timeout-ms".to_owned(),
            self.election_timeout_ms.to_string(),
            "--snapshot-every".to_owned(),
            self.snapshot_every.to_string(),
            "--session-timeout-ms".to_owned(),
            self.session_timeout_ms.to_string(),
        ];
        if self.fault_injection {
            flags.push("--fault-injection".to_owned());
        }
        flags
    }
}

#[derive(Debug)]
pub struct Cluster {
    binary: PathBuf,
    run_dir: PathBuf,
    settings: NodeSettings,
    pub nodes: Vec<Node>,
    pub faults: Faults,
    pub directory: Directory,
    /// Dropped before the runtime that runs them.
    proxies: Vec<Proxy>,
    /// Runs the proxies (and the AMQP clients).
    pub runtime: Arc<tokio::runtime::Runtime>,
    next_id: u64,
    last_id: u64,
}

impl Cluster {
    /// Sets up `n` nodes behind their proxies (`n` = 1: one node, no proxy, no peers) and starts
    /// them all. `spare` more node ids are known to the fault table, for nodes added later.
    pub fn start(
        binary: &Path,
        run_dir: &Path,
        n: usize,
        spare: usize,
        settings: NodeSettings,
    ) -> anyhow::Result<Cluster> {
        let runtime = Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("a runtime for the proxies and the AMQP clients")?,
        );
        let last_id = u64::try_from(n + spare).context("node count")?;
        let faults = Faults::new(1..=last_id);
        let raft_addrs: Vec<String> = (0..n).map(|_| free_loopback_addr()).collect::<anyhow::Result<_>>()?;
        let mut proxies = Vec::new();
        if n > 1 {
            for addr in &raft_addrs {
                let target: SocketAddr = addr.parse().context("a loopback address")?;
                let listen: SocketAddr = "127.0.0.1:0".parse().context("an address")?;
                let proxy = runtime
                    .block_on(Proxy::start(listen, target, faults.clone(), turnstile_raft::peek_hello))
                    .context("starting a proxy")?;
                proxies.push(proxy);
            }
        }
        let peers = proxies
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}={}", i + 1, p.addr()))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (i, raft_addr) in raft_addrs.iter().enumerate() {
            let id = u64::try_from(i + 1).context("node id")?;
            let mut args = settings.flags();
            if n > 1 {
                args.extend(
                    ["--node-id", &id.to_string(), "--raft-addr", raft_addr, "--peers", &peers]
                        .map(str::to_owned),
                );
            }
            let peer_addr = proxies.get(i).map_or_else(|| raft_addr.clone(), |p| p.addr().to_string());
            nodes.push(Node::new(run_dir, id, raft_addr.clone(), peer_addr, args)?);
        }
        let directory = Arc::new(RwLock::new(vec![None; n]));
        let mut cluster = Cluster {
            binary: binary.to_path_buf(),
            run_dir: run_dir.to_path_buf(),
            settings,
            nodes,
            faults,
            directory,
            proxies,
            runtime,
            next_id: u64::try_from(n + 1).context("node id")?,
            last_id,
        };
        let all: Vec<usize> = (0..n).collect();
        cluster.start_nodes(&all)?;
        Ok(cluster)
    }

    /// Starts nodes in parallel: each waits a while for a leader before it reports ready, and a
    /// leader needs a majority up.
    pub fn start_nodes(&mut self, which: &[usize]) -> anyhow::Result<()> {
        let starting: Vec<_> = which
            .iter()
            .map(|&i| {
                let node = &self.nodes[i];
                let (binary, dir, log, args) =
                    (self.binary.clone(), node.dir.clone(), node.log.clone(), node.args.clone());
                std::thread::spawn(move || spawn_ready(&binary, &dir, &log, &args))
            })
            .collect();
        let mut failed = None;
        for (&i, handle) in which.iter().zip(starting) {
            match handle.join().map_err(|_| anyhow::anyhow!("the starter thread panicked")).and_then(|r| r) {
                Ok((child, addrs)) => {
                    self.nodes[i].child = Some(child);
                    self.nodes[i].state = State::Running;
                    self.set_addrs(i, Some(addrs));
                }
                Err(e) => {
                    failed.get_or_insert(e.context(format!("node {} did not start", self.nodes[i].id)));
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    fn set_addrs(&self, i: usize, addrs: Option<Addrs>) {
        let mut directory = self.directory.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if directory.len() <= i {
            directory.resize(i + 1, None);
        }
        directory[i] = addrs;
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The nodes that are members (not retired).
    pub fn members(&self) -> Vec<usize> {
        (0..self.len()).filter(|&i| !self.nodes[i].retired).collect()
    }

    /// The members whose process runs (not paused).
    pub fn running(&self) -> Vec<usize> {
        self.members().into_iter().filter(|&i| self.nodes[i].state == State::Running).collect()
    }

    /// Node `i`'s client addresses, if it runs.
    pub fn addrs(&self, i: usize) -> Option<Addrs> {
        self.directory.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(i).cloned().flatten()
    }

    /// Crashes node `i`: SIGKILL (after SIGCONT if it was paused), then reaps it.
    pub fn kill9(&mut self, i: usize) {
        self.resume_if_paused(i);
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.nodes[i].state = State::Down;
        self.set_addrs(i, None);
    }

    /// Stops node `i` as an operator would (SIGTERM), waiting (bounded) for it to exit; a node
    /// that does not is killed.
    pub fn terminate(&mut self, i: usize) -> anyhow::Result<()> {
        self.resume_if_paused(i);
        self.set_addrs(i, None);
        let Some(mut child) = self.nodes[i].child.take() else { return Ok(()) };
        self.nodes[i].state = State::Down;
        signal_pid(child.id(), Signal::SIGTERM)?;
        let deadline = Instant::now() + READY_TIMEOUT;
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("node {} did not stop within {READY_TIMEOUT:?} of SIGTERM", self.nodes[i].id);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Starts node `i` again on its data dir with the same flags, if it is down and a member.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        if self.nodes[i].retired {
            return Ok(());
        }
        if self.nodes[i].state != State::Down {
            self.kill9(i);
        }
        self.start_nodes(&[i])
    }

    /// Stops node `i`'s process (SIGSTOP): it holds its sockets but answers nothing.
    pub fn pause(&mut self, i: usize) -> anyhow::Result<()> {
        if self.nodes[i].state != State::Running {
            return Ok(());
        }
        self.signal(i, Signal::SIGSTOP)?;
        self.nodes[i].state = State::Paused;
        Ok(())
    }

    /// Lets a paused node run again (SIGCONT).
    pub fn resume_if_paused(&mut self, i: usize) {
        if self.nodes[i].state == State::Paused {
            let _ = self.signal(i, Signal::SIGCONT);
            self.nodes[i].state = State::Running;
        }
    }

    /// Whether the node's data dir holds a snapshot being written: a kill now lands mid-snapshot.
    pub fn snapshot_in_progress(&self, i: usize) -> bool {
        std::fs::read_dir(&self.nodes[i].dir).is_ok_and(|entries| {
            entries.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".snap.tmp"))
        })
    }

    /// Adds a fresh node (a new id, never used before) that joins through a running member.
    /// Returns its index, or `None` when the spare ids ran out.
    pub fn add_node(&mut self, via: usize) -> anyhow::Result<Option<usize>> {
        if self.next_id > self.last_id {
            return Ok(None);
        }
        let id = self.next_id;
        self.next_id += 1;
        let raft_addr = free_loopback_addr()?;
        let mut args = self.settings.flags();
        let join = self.nodes[via].peer_addr.clone();
        args.extend(
            ["--node-id", &id.to_string(), "--raft-addr", &raft_addr, "--join", &join].map(str::to_owned),
        );
        let node = Node::new(&self.run_dir, id, raft_addr.clone(), raft_addr, args)?;
        self.nodes.push(node);
        let i = self.nodes.len() - 1;
        self.set_addrs(i, None);
        self.start_nodes(&[i])?;
        Ok(Some(i))
    }

    /// Marks node `i` removed from the membership and stops it for good.
    pub fn retire(&mut self, i: usize) {
        self.kill9(i);
        self.nodes[i].retired = true;
    }

    /// `INFO raft` of node `i`, or `None` if it does not run or does not answer in time.
    pub fn raft_info(&self, i: usize) -> Option<HashMap<String, String>> {
        if self.nodes[i].state != State::Running {
            return None;
        }
        let addrs = self.addrs(i)?;
        info(&addrs.resp, "raft")
    }

    /// Every log file, for the out dir.
    pub fn logs(&self) -> Vec<PathBuf> {
        self.nodes.iter().map(|n| n.log.clone()).collect()
    }

    /// Signals node `i`'s own process, by its pid.
    fn signal(&self, i: usize, signal: Signal) -> anyhow::Result<()> {
        let child = self.nodes[i].child.as_ref().context("a started node")?;
        signal_pid(child.id(), signal)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill9(i);
        }
        // The proxies' tasks end with the runtime; stop them before it goes.
        self.proxies.clear();
    }
}

impl Node {
    fn new(
        run_dir: &Path,
        id: u64,
        raft_addr: String,
        peer_addr: String,
        args: Vec<String>,
    ) -> anyhow::Result<Node> {
        let dir = run_dir.join(format!("node-{id}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let log = run_dir.join(format!("node-{id}.log"));
        Ok(Node { id, state: State::Down, retired: false, raft_addr, peer_addr, dir, log, args, child: None })
    }
}

fn signal_pid(pid: u32, signal: Signal) -> anyhow::Result<()> {
    let pid = i32::try_from(pid).context("a pid")?;
    kill(Pid::from_raw(pid), signal).with_context(|| format!("{signal} to process {pid}"))
}

/// A loopback address with a port that was free a moment ago (bound to port 0, then closed),
/// for a listener the node must be told in advance: its Raft address.
pub fn free_loopback_addr() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr()?.to_string())
}

/// `INFO section` of the server at `addr` as a map of its `key:value` lines; `None` if it does
/// not answer in time.
pub fn info(addr: &str, section: &str) -> Option<HashMap<String, String>> {
    let client = redis::Client::open(format!("redis://{addr}/")).ok()?;
    let mut con = client.get_connection_with_timeout(Duration::from_secs(2)).ok()?;
    con.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    con.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    let text: String = redis::cmd("INFO").arg(section).query(&mut con).ok()?;
    Some(
        text.lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect(),
    )
}

/// Spawns `turnstile server` on `dir` with free loopback ports for every listener, its stderr
/// appended to `log`, and waits (bounded) for its ready line.
fn spawn_ready(binary: &Path, dir: &Path, log: &Path, args: &[String]) -> anyhow::Result<(Child, Addrs)> {
    let stderr: File = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut child = Command::new(binary)
        .args([
            "server",
            "--resp-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--amqp-addr",
            "127.0.0.1:0",
        ])
        .args(["--log", "info"])
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let stdout = child.stdout.take().context("stdout piped")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        // Keep reading: a server that prints again must not find its stdout closed.
        let _ = std::io::copy(&mut reader.take(u64::MAX), &mut std::io::sink());
    });
    let line = match rx.recv_timeout(READY_TIMEOUT) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("no ready line within {READY_TIMEOUT:?} (see {})", log.display());
        }
    };
    // `turnstile VERSION ready: resp=ADDR http=ADDR amqp=ADDR`
    let field =
        |name: &str| line.split_whitespace().find_map(|word| word.strip_prefix(name)).map(str::to_owned);
    let (Some(resp), Some(http), Some(amqp)) = (field("resp="), field("http="), field("amqp=")) else {
        let _ = child.kill();
        let status = child.wait();
        bail!("it printed {line:?} and exited with {status:?} (see {})", log.display());
    };
    Ok((child, Addrs { resp, http, amqp }))
}
