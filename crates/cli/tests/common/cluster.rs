//! A cluster of real `turnstile` binaries on loopback, with a fault-injecting proxy
//! (`turnstile-proxy`) in front of every node's Raft listener, so a test can partition nodes,
//! crash them (`kill -9`) and pause them (`SIGSTOP`) without root.
//!
//! ```text
//!  node i: --raft-addr <its own port>  --peers 1=<proxy 1>,2=<proxy 2>,...   (the same on all)
//!  node 1 ──► proxy of 2 ──(Faults: rule 1→2)──► node 2's raft-addr
//! ```
//!
//! Nodes are numbered from 0 in the harness (`node(0)` has node id 1). Every wait is bounded, and
//! the harness signals only the processes it started; dropping it resumes paused nodes and kills
//! every node.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use turnstile_proxy::{Faults, Proxy, Rule};

use super::{TestServer, free_loopback_addr, until};

/// The bound on each wait for the cluster to get somewhere; far more than any step needs.
pub const WAIT: Duration = Duration::from_secs(30);

/// `--node-id`, `--raft-addr`, `--peers`, `--election-timeout-ms` and their values: the flags
/// before a test's own.
const OWN_FLAGS: usize = 8;

/// Several debug builds on two busy cores stall for longer than the default election timeout
/// allows, and a stalled heartbeat would start needless elections: the tests' nodes wait longer.
const ELECTION_TIMEOUT_MS: &str = "500";

/// What a partition does to the links it cuts: packets lost silently, as on a real network, so
/// nodes learn of it only by their own timeouts.
const CUT: Rule = Rule::BlackHole;

/// Whether a node's process runs, is stopped, or is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Process {
    /// Never started, or killed.
    Down,
    Running,
    /// Stopped by SIGSTOP.
    Paused,
}

/// One node: its process (when started), data dir and addresses.
struct Member {
    server: Option<TestServer>,
    process: Process,
    /// Where the node listens for its peers.
    raft_addr: String,
    /// Where its peers dial it: its proxy. What `-NOTLEADER` names.
    peer_addr: String,
    dir: tempfile::TempDir,
}

pub struct TestCluster {
    members: Vec<Member>,
    /// The flags every node gets: node id, Raft address, peers, and the test's extra flags.
    args: Vec<Vec<String>>,
    faults: Faults,
    /// Dropped before the runtime that runs them.
    _proxies: Vec<Proxy>,
    runtime: tokio::runtime::Runtime,
}

impl TestCluster {
    /// Starts `n` nodes behind their proxies, each with `extra` flags, and waits until each is
    /// ready (a node of a cluster reports ready once it knows a leader, or after its own wait).
    pub fn start(n: usize, extra: &[&str]) -> TestCluster {
        let all: Vec<usize> = (0..n).collect();
        TestCluster::start_some(n, &all, extra)
    }

    /// Sets up `n` nodes and their proxies but starts only the nodes `started` (the others can be
    /// started later with [`TestCluster::start_node`]).
    pub fn start_some(n: usize, started: &[usize], extra: &[&str]) -> TestCluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the proxies");
        let faults = Faults::new(1..=node_id(n - 1));
        let raft_addrs: Vec<String> = (0..n).map(|_| free_loopback_addr()).collect();
        let proxies: Vec<Proxy> = raft_addrs
            .iter()
            .map(|addr| {
                let target: SocketAddr = addr.parse().expect("a loopback address");
                let listen: SocketAddr = "127.0.0.1:0".parse().expect("an address");
                runtime
                    .block_on(Proxy::start(listen, target, faults.clone(), turnstile_raft::peek_hello))
                    .expect("a proxy listens")
            })
            .collect();
        let peers = proxies
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}={}", node_id(i), p.addr()))
            .collect::<Vec<_>>()
            .join(",");
        let args = (0..n)
            .map(|i| {
                let own = [
                    "--node-id",
                    &node_id(i).to_string(),
                    "--raft-addr",
                    &raft_addrs[i],
                    "--peers",
                    &peers,
                    "--election-timeout-ms",
                    ELECTION_TIMEOUT_MS,
                ]
                .map(str::to_owned);
                own.into_iter().chain(extra.iter().map(|a| (*a).to_owned())).collect()
            })
            .collect();
        let members = (0..n)
            .map(|i| Member {
                server: None,
                process: Process::Down,
                raft_addr: raft_addrs[i].clone(),
                peer_addr: proxies[i].addr().to_string(),
                dir: tempfile::tempdir().expect("temp dir"),
            })
            .collect();
        let mut cluster = TestCluster { members, args, faults, _proxies: proxies, runtime };
        cluster.start_nodes(started);
        cluster
    }

    /// Starts nodes in parallel: each waits a while for a leader before it reports ready, and a
    /// leader needs a majority up.
    fn start_nodes(&mut self, which: &[usize]) {
        let starting: Vec<_> = which
            .iter()
            .map(|&i| {
                assert!(self.members[i].server.is_none(), "node {i} was started already");
                let dir: PathBuf = self.members[i].dir.path().to_path_buf();
                let args = self.args[i].clone();
                std::thread::spawn(move || {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    TestServer::start_in(&dir, &args)
                })
            })
            .collect();
        for (&i, handle) in which.iter().zip(starting) {
            self.members[i].server = Some(handle.join().expect("node starts"));
            self.members[i].process = Process::Running;
        }
    }

    /// Starts node `i`, set up but not started before.
    pub fn start_node(&mut self, i: usize) {
        self.start_nodes(&[i]);
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Node `i`'s server: its RESP client, its RESP, HTTP and AMQP addresses.
    pub fn node(&self, i: usize) -> &TestServer {
        self.members[i].server.as_ref().unwrap_or_else(|| panic!("node {i} was never started"))
    }

    /// Node `i`'s Raft id.
    pub fn id(&self, i: usize) -> u64 {
        node_id(i)
    }

    /// Where node `i`'s peers dial it (its proxy): the address `-NOTLEADER` gives for it.
    pub fn peer_addr(&self, i: usize) -> &str {
        &self.members[i].peer_addr
    }

    /// Where node `i` itself listens for its peers.
    pub fn raft_addr(&self, i: usize) -> &str {
        &self.members[i].raft_addr
    }

    /// The rules between the nodes (by node id), for faults the helpers here do not name.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Runs `future` on the runtime that runs the proxies (for async clients such as lapin).
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// `INFO raft` of node `i`, or `None` if it is not running or does not answer in time.
    pub fn raft_info(&self, i: usize) -> Option<HashMap<String, String>> {
        if self.members[i].process != Process::Running {
            return None;
        }
        let client = redis::Client::open(self.node(i).url()).ok()?;
        let mut con = client.get_connection_with_timeout(Duration::from_secs(2)).ok()?;
        con.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let text: String = redis::cmd("INFO").arg("raft").query(&mut con).ok()?;
        Some(
            text.lines()
                .filter_map(|line| line.split_once(':'))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect(),
        )
    }

    /// The log index node `i` has applied; `None` if it does not answer or has applied nothing yet
    /// (a restarted node, until it has heard from the leader).
    pub fn applied_index(&self, i: usize) -> Option<u64> {
        self.raft_info(i)?.get("applied_index")?.parse().ok()
    }

    /// Waits until node `i` has applied the log up to `index`.
    pub fn wait_applied(&self, i: usize, index: u64) {
        until(&format!("node {} applies up to {index}", self.id(i)), WAIT, || {
            self.applied_index(i).is_some_and(|applied| applied >= index)
        });
    }

    /// Waits until a running node leads and a majority of the cluster (itself included) report
    /// it as leader in its term; returns it. An old leader cut off in a minority still calls
    /// itself leader, but no majority follows it once the others elected another; right after a
    /// partition, use [`TestCluster::leader_among`] the side that should elect one.
    pub fn leader(&self) -> usize {
        let majority = self.len() / 2 + 1;
        let mut found = None;
        until("a node leads and a majority follows it", WAIT, || {
            let infos: Vec<_> = (0..self.len()).filter_map(|i| Some((i, self.raft_info(i)?))).collect();
            found = infos.iter().find_map(|(i, m)| {
                let id = self.id(*i).to_string();
                let followers = infos.iter().filter(|(_, o)| o["leader"] == id && o["term"] == m["term"]);
                (m["role"] == "leader" && followers.count() >= majority).then_some(*i)
            });
            found.is_some()
        });
        found.expect("a leader")
    }

    /// Waits until one of `nodes` leads and every one of them that runs follows it, in its term;
    /// returns it. For a side of a partition: right after a cut, the nodes on the other side may
    /// still report the leader they had.
    pub fn leader_among(&self, nodes: &[usize]) -> usize {
        let mut found = None;
        until("one of the nodes leads and the others follow it", WAIT, || {
            let running = nodes.iter().filter(|&&i| self.members[i].process == Process::Running);
            let Some(infos) = running.map(|&i| Some((i, self.raft_info(i)?))).collect::<Option<Vec<_>>>()
            else {
                return false;
            };
            let Some((leader, m)) = infos.iter().find(|(_, m)| m["role"] == "leader") else { return false };
            found = Some(*leader);
            let (id, term) = (self.id(*leader).to_string(), &m["term"]);
            infos.iter().all(|(_, m)| m["leader"] == id && &m["term"] == term)
        });
        found.expect("a leader")
    }

    /// Crashes node `i`: SIGKILL (after SIGCONT if it was paused), then reaps it.
    pub fn kill9(&mut self, i: usize) {
        self.resume_if_paused(i);
        if let Some(server) = self.members[i].server.as_mut() {
            server.kill9();
        }
        self.members[i].process = Process::Down;
    }

    /// Kills node `i` if it runs and starts it again on its data dir with the same flags; its
    /// Raft and peer addresses stay, its RESP, HTTP and AMQP addresses change.
    pub fn restart(&mut self, i: usize) {
        self.resume_if_paused(i);
        self.members[i].server.as_mut().unwrap_or_else(|| panic!("node {i} was never started")).restart();
        self.members[i].process = Process::Running;
    }

    /// Like [`TestCluster::restart`], with other extra flags (kept for later restarts).
    pub fn restart_with(&mut self, i: usize, extra: &[&str]) {
        let own = self.args[i].iter().take(OWN_FLAGS).cloned();
        self.args[i] = own.chain(extra.iter().map(|a| (*a).to_owned())).collect();
        self.resume_if_paused(i);
        let args: Vec<&str> = self.args[i].iter().map(String::as_str).collect();
        let server = self.members[i].server.as_mut().unwrap_or_else(|| panic!("node {i} was never started"));
        server.restart_with(&args);
        self.members[i].process = Process::Running;
    }

    /// Stops node `i`'s process (SIGSTOP): it holds its sockets but answers nothing.
    pub fn pause(&mut self, i: usize) {
        assert_eq!(self.members[i].process, Process::Running, "only a running node is paused");
        self.signal(i, Signal::SIGSTOP);
        self.members[i].process = Process::Paused;
    }

    /// Lets a paused node `i` run again (SIGCONT).
    pub fn resume(&mut self, i: usize) {
        assert_eq!(self.members[i].process, Process::Paused, "only a paused node is resumed");
        self.resume_if_paused(i);
    }

    /// Asks node `i` to stop, as an operator would (SIGTERM).
    pub fn terminate(&self, i: usize) {
        self.node(i).terminate();
    }

    /// Waits for node `i` to exit by itself (after a signal) and returns its exit code.
    pub fn wait_exit(&mut self, i: usize) -> Option<i32> {
        let code = self.members[i].server.as_mut().expect("a started node").wait_exit();
        self.members[i].process = Process::Down;
        code
    }

    /// Cuts node `i` off from every other node, both ways; the others still talk.
    pub fn isolate(&self, i: usize) {
        self.faults.isolate(self.id(i), CUT);
    }

    /// Cuts the nodes `left` off from the nodes `right`, both ways; each side still talks within.
    pub fn split(&self, left: &[usize], right: &[usize]) {
        let ids = |side: &[usize]| side.iter().map(|&i| self.id(i)).collect::<Vec<_>>();
        self.faults.split(&[&ids(left), &ids(right)], CUT);
    }

    /// Every link passes again.
    pub fn heal(&self) {
        self.faults.heal();
    }

    fn resume_if_paused(&mut self, i: usize) {
        if self.members[i].process == Process::Paused {
            self.signal(i, Signal::SIGCONT);
            self.members[i].process = Process::Running;
        }
    }

    /// Signals node `i`'s own process, by its pid.
    fn signal(&self, i: usize, signal: Signal) {
        let pid = i32::try_from(self.node(i).pid()).expect("a pid");
        kill(Pid::from_raw(pid), signal).unwrap_or_else(|e| panic!("{signal} to node {i}: {e}"));
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            // A stopped process would still die of SIGKILL, but resumed first it also lets go of
            // anything a test left it holding. Each TestServer kills its process when dropped.
            if self.members[i].process == Process::Paused
                && let Ok(pid) = i32::try_from(self.node(i).pid())
            {
                let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
            }
            drop(self.members[i].server.take());
        }
    }
}

/// Node ids start at 1.
fn node_id(i: usize) -> u64 {
    u64::try_from(i).expect("a node index") + 1
}
