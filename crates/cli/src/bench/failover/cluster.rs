//! The cluster `bench failover` kills the leader of: `turnstile server` processes of this same
//! binary on loopback, each with a data dir and a log file of its own under one temp dir.
//!
//! Only the processes started here are ever signalled, each by its own handle; every wait is
//! bounded; the processes are killed and the temp dir removed when the cluster is stopped or
//! dropped (an error, Ctrl-C).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures_util::future::try_join_all;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use turnstile_client::{Cmd, Connection, Frame};

/// How long a node may take to print its ready line (a node of a new cluster waits a while for
/// a leader before it does).
const READY_LIMIT: Duration = Duration::from_secs(30);

/// How long a killed node may take to be reaped.
const EXIT_LIMIT: Duration = Duration::from_secs(10);

/// How long one `INFO raft` may take, connect included.
const INFO_LIMIT: Duration = Duration::from_secs(2);

/// The pause between two looks at the cluster's state.
const POLL: Duration = Duration::from_millis(20);

/// How much of a node's log an error quotes.
const LOG_TAIL_LINES: usize = 20;

/// The cluster: its nodes, whether running or not, and where they keep their data.
#[derive(Debug)]
pub(super) struct Cluster {
    /// The `turnstile` binary every node runs.
    binary: PathBuf,
    /// Holds every node's data dir and log; removed with the cluster.
    dir: PathBuf,
    /// `--peers`: every node's id and Raft address, the same on every node.
    peers: String,
    nodes: Vec<Node>,
}

#[derive(Debug)]
struct Node {
    id: u64,
    raft_addr: String,
    data_dir: PathBuf,
    log: PathBuf,
    /// `None` while the node is down.
    process: Option<Process>,
}

/// A running node.
#[derive(Debug)]
struct Process {
    child: Child,
    /// Where it serves RESP (a free port it picked, new at every start).
    resp_addr: String,
    /// Kept open, read no further than the ready line: a server writing to a pipe nobody holds
    /// would get an error.
    _stdout: BufReader<ChildStdout>,
}

impl Cluster {
    /// A cluster of `size` nodes with fresh Raft ports and an empty temp dir; nothing runs yet.
    pub(super) fn new(binary: PathBuf, size: u64) -> anyhow::Result<Cluster> {
        let dir = temp_dir()?;
        // Every listener held at once, so no two nodes get the same port; released just before
        // the nodes bind them.
        let listeners = (0..size)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<Vec<_>>>()
            .context("finding free loopback ports")?;
        let mut nodes = Vec::new();
        for (id, listener) in (1..).zip(&listeners) {
            let data_dir = dir.join(format!("node-{id}"));
            nodes.push(Node {
                id,
                raft_addr: listener.local_addr()?.to_string(),
                log: dir.join(format!("node-{id}.log")),
                data_dir,
                process: None,
            });
        }
        let peers = nodes.iter().map(|n| format!("{}={}", n.id, n.raft_addr)).collect::<Vec<_>>().join(",");
        Ok(Cluster { binary, dir, peers, nodes })
    }

    /// Starts every node at once (a node reports ready only once the cluster has formed).
    pub(super) async fn start(&mut self) -> anyhow::Result<()> {
        let spawned = self.nodes.iter().map(|node| self.spawn(node)).collect::<anyhow::Result<Vec<_>>>()?;
        let ready = try_join_all(
            spawned.into_iter().zip(&self.nodes).map(|((child, stdout), node)| ready(node, child, stdout)),
        )
        .await?;
        for (node, process) in self.nodes.iter_mut().zip(ready) {
            node.process = Some(process);
        }
        Ok(())
    }

    pub(super) fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Where node `id` serves RESP, if it is running.
    pub(super) fn resp_addr(&self, id: u64) -> Option<&str> {
        self.node(id).ok()?.process.as_ref().map(|p| p.resp_addr.as_str())
    }

    /// Waits until one running node says it leads and every running node names it as leader.
    pub(super) async fn leader(&mut self, limit: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + limit;
        loop {
            self.check_running()?;
            if let Some(leader) = self.agreed_leader().await {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                bail!(
                    "no leader that every running node follows within {}",
                    humantime::format_duration(limit)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn agreed_leader(&self) -> Option<u64> {
        let mut views = Vec::new();
        for addr in self.nodes.iter().filter_map(|n| n.process.as_ref()).map(|p| &p.resp_addr) {
            views.push(info_raft(addr).await.ok()?);
        }
        let mut leaders = views.iter().filter(|view| view.get("role").is_some_and(|r| r == "leader"));
        let leader = leaders.next()?.get("node_id")?.clone();
        let agreed = leaders.next().is_none() && views.iter().all(|view| view.get("leader") == Some(&leader));
        agreed.then(|| leader.parse().ok()).flatten()
    }

    /// Kills node `id` with SIGKILL and reaps it.
    pub(super) async fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self.node_mut(id)?;
        let mut process = node.process.take().ok_or_else(|| anyhow!("node {id} is not running"))?;
        process.child.start_kill().with_context(|| format!("killing node {id}"))?;
        tokio::time::timeout(EXIT_LIMIT, process.child.wait())
            .await
            .map_err(|_| {
                anyhow!(
                    "node {id} was still running {} after SIGKILL",
                    humantime::format_duration(EXIT_LIMIT)
                )
            })?
            .with_context(|| format!("reaping node {id}"))?;
        Ok(())
    }

    /// Starts node `id` again on its data dir (it rejoins as a member of the cluster).
    pub(super) async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self.node(id)?;
        anyhow::ensure!(node.process.is_none(), "node {id} is already running");
        let (child, stdout) = self.spawn(node)?;
        let process = ready(node, child, stdout).await?;
        self.node_mut(id)?.process = Some(process);
        Ok(())
    }

    /// Waits until node `id` follows `leader` and has applied everything the leader had
    /// committed when this was called.
    pub(super) async fn catch_up(&mut self, id: u64, leader: u64, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        let leader_text = leader.to_string();
        let mut committed = None;
        loop {
            self.check_running()?;
            if committed.is_none() {
                let addr = self.resp_addr(leader).ok_or_else(|| anyhow!("node {leader} is not running"))?;
                committed = info_raft(addr).await.ok().and_then(|view| number(&view, "committed_index"));
            }
            if let Some(committed) = committed {
                let addr = self.resp_addr(id).ok_or_else(|| anyhow!("node {id} is not running"))?;
                if let Ok(view) = info_raft(addr).await {
                    let follows = view.get("role").is_some_and(|r| r == "follower")
                        && view.get("leader") == Some(&leader_text);
                    if follows && number(&view, "applied_index").is_some_and(|applied| applied >= committed) {
                        return Ok(());
                    }
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "node {id} had not caught up with leader {leader} within {}",
                    humantime::format_duration(limit)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Kills every node still running, waits for each, and removes the temp dir.
    pub(super) async fn stop(mut self) {
        for node in &mut self.nodes {
            if let Some(mut process) = node.process.take() {
                let _ = process.child.start_kill();
                let _ = tokio::time::timeout(EXIT_LIMIT, process.child.wait()).await;
            }
        }
        // `Drop` removes the dir.
    }

    /// An error, with the end of its log, if a node that should be running has exited.
    fn check_running(&mut self) -> anyhow::Result<()> {
        for node in &mut self.nodes {
            if let Some(process) = &mut node.process
                && let Some(status) = process.child.try_wait()?
            {
                bail!("node {} exited ({status}); the end of its log:\n{}", node.id, log_tail(&node.log));
            }
        }
        Ok(())
    }

    fn node(&self, id: u64) -> anyhow::Result<&Node> {
        self.nodes.iter().find(|n| n.id == id).ok_or_else(|| anyhow!("no node {id}"))
    }

    fn node_mut(&mut self, id: u64) -> anyhow::Result<&mut Node> {
        self.nodes.iter_mut().find(|n| n.id == id).ok_or_else(|| anyhow!("no node {id}"))
    }

    /// Starts `turnstile server` for `node`: its own flags only (no TURNSTILE_* variable of
    /// the caller's reaches it), `--fsync always`, every client listener on a port it picks,
    /// warnings and errors appended to its log file.
    fn spawn(&self, node: &Node) -> anyhow::Result<(Child, BufReader<ChildStdout>)> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("opening {}", node.log.display()))?;
        let mut command = Command::new(&self.binary);
        command
            .arg("server")
            .args(["--node-id", &node.id.to_string(), "--raft-addr", &node.raft_addr, "--peers", &self.peers])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--resp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--amqp-addr", "127.0.0.1:0"])
            .args(["--fsync", "always", "--log", "warn", "--log-format", "text"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("TURNSTILE_") {
                command.env_remove(name);
            }
        }
        let mut child =
            command.spawn().with_context(|| format!("starting {} server", self.binary.display()))?;
        let stdout = child.stdout.take().context("the server's stdout is piped")?;
        Ok((child, BufReader::new(stdout)))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for process in self.nodes.iter_mut().filter_map(|n| n.process.as_mut()) {
            let _ = process.child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits (bounded) for a spawned node's ready line, `turnstile VERSION ready: resp=ADDR ...`.
async fn ready(node: &Node, mut child: Child, mut stdout: BufReader<ChildStdout>) -> anyhow::Result<Process> {
    let mut line = String::new();
    let read = tokio::time::timeout(READY_LIMIT, stdout.read_line(&mut line)).await;
    let failed =
        |what: String| anyhow!("node {} {what}; the end of its log:\n{}", node.id, log_tail(&node.log));
    match read {
        Err(_) => {
            return Err(failed(format!(
                "printed no ready line within {}",
                humantime::format_duration(READY_LIMIT)
            )));
        }
        Ok(Err(e)) => return Err(failed(format!("could not be read from: {e}"))),
        Ok(Ok(0)) => {
            let status = tokio::time::timeout(EXIT_LIMIT, child.wait()).await;
            let status = status.ok().and_then(Result::ok).map_or("?".to_owned(), |s| s.to_string());
            return Err(failed(format!("exited ({status}) before it was ready")));
        }
        Ok(Ok(_)) => {}
    }
    let resp_addr =
        ready_field(&line, "resp=").ok_or_else(|| failed(format!("printed {line:?}, not its ready line")))?;
    Ok(Process { child, resp_addr, _stdout: stdout })
}

/// The value of `name` (e.g. `resp=`) in a ready line.
fn ready_field(line: &str, name: &str) -> Option<String> {
    line.split_whitespace().find_map(|word| word.strip_prefix(name)).map(str::to_owned)
}

/// `INFO raft` of the node at `addr`, as field → value.
async fn info_raft(addr: &str) -> anyhow::Result<HashMap<String, String>> {
    let ask = async {
        let mut conn = Connection::connect(addr, INFO_LIMIT).await?;
        let reply = conn.call(&Cmd::new("INFO").arg("raft")).await?;
        match reply {
            Frame::Bulk(text) => Ok(parse_info(&String::from_utf8_lossy(&text))),
            other => Err(anyhow!("INFO raft answered {other:?}")),
        }
    };
    tokio::time::timeout(INFO_LIMIT, ask).await.map_err(|_| anyhow!("INFO raft: no answer from {addr}"))?
}

/// `INFO` text (`# Section` headers, `field:value` lines) as field → value.
pub(super) fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once(':'))
        .map(|(field, value)| (field.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

fn number(view: &HashMap<String, String>, field: &str) -> Option<u64> {
    view.get(field)?.parse().ok()
}

/// A new empty dir under the system's temp dir, named after this process and the time.
fn temp_dir() -> anyhow::Result<PathBuf> {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("turnstile-bench-failover-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The last lines of a node's log, for an error.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
    if tail.is_empty() { "(empty)".to_owned() } else { tail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_text_becomes_fields() {
        let text = "# Raft\r\nnode_id:2\r\nterm:7\r\nleader:3\r\nrole:follower\r\n\
                    member_1:addr=127.0.0.1:1,role=voter,matched=none\r\n\r\n";
        let info = parse_info(text);
        assert_eq!(info["node_id"], "2");
        assert_eq!(info["leader"], "3");
        assert_eq!(info["role"], "follower");
        assert_eq!(info["member_1"], "addr=127.0.0.1:1,role=voter,matched=none");
        assert_eq!(info.len(), 5);
        assert_eq!(number(&info, "term"), Some(7));
        assert_eq!(number(&info, "role"), None);
    }

    #[test]
    fn the_ready_line_gives_the_resp_address() {
        let line = "turnstile 0.1.0 ready: resp=127.0.0.1:4001 http=127.0.0.1:4002 amqp=127.0.0.1:4003 raft=127.0.0.1:4004\n";
        assert_eq!(ready_field(line, "resp=").as_deref(), Some("127.0.0.1:4001"));
        assert_eq!(ready_field(line, "raft=").as_deref(), Some("127.0.0.1:4004"));
        assert_eq!(ready_field("error: address in use", "resp="), None);
    }

    #[test]
    fn a_new_cluster_has_distinct_ports_and_no_process_until_started() -> anyhow::Result<()> {
        let cluster = Cluster::new(PathBuf::from("/nonexistent/turnstile"), 3)?;
        assert_eq!(cluster.ids(), [1, 2, 3]);
        let addrs: std::collections::HashSet<&str> =
            cluster.nodes.iter().map(|n| n.raft_addr.as_str()).collect();
        assert_eq!(addrs.len(), 3);
        assert!(
            cluster.peers.starts_with("1=127.0.0.1:") && cluster.peers.matches(',').count() == 2,
            "{}",
            cluster.peers
        );
        assert_eq!(cluster.resp_addr(1), None);
        let dir = cluster.dir.clone();
        assert!(dir.is_dir());
        drop(cluster);
        assert!(!dir.exists(), "dropping the cluster removes its dir");
        Ok(())
    }

    #[tokio::test]
    async fn a_binary_that_is_not_there_fails_the_start_and_leaves_nothing() -> anyhow::Result<()> {
        let mut cluster = Cluster::new(PathBuf::from("/nonexistent/turnstile"), 3)?;
        let dir = cluster.dir.clone();
        let err = cluster.start().await.unwrap_err();
        assert!(format!("{err:#}").contains("starting /nonexistent/turnstile server"), "{err:#}");
        cluster.stop().await;
        assert!(!dir.exists());
        Ok(())
    }
}
