//! `turnstile bench failover`: how long a cluster takes to accept writes again after its leader
//! dies. It starts a 3-node cluster of this same binary (`--fsync always`, loopback, a temp dir),
//! then, `--kills` times:
//!
//! ```text
//!  find the leader (every node agrees) ─► a write through each other node (they work, connected)
//!  ─► t0, SIGKILL the leader ─► SET through every survivor at once, again and again
//!  ─► the first one acknowledged: failover = now − t0
//!  ─► restart the killed node on its data dir ─► wait until it follows and has applied what
//!     the new leader had committed: three healthy nodes again for the next round
//! ```
//!
//! Then p50 / p90 / max of the failover times, and with --json every kill. Only the processes
//! it started are killed; the cluster is stopped and its dir removed on success, error or Ctrl-C.

mod cluster;

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use turnstile_client::{Cmd, Connection, Frame};

use super::args::BenchArgs;
use super::report::{CONNECT_TIMEOUT, render_table, shorten};
use cluster::Cluster;

/// Nodes in the cluster: the smallest that survives a node's loss.
const NODES: u64 = 3;

/// How long the cluster may take to agree on a leader.
const LEADER_LIMIT: Duration = Duration::from_secs(30);

/// How long a round may wait for its first acknowledged write after the kill.
const WRITE_LIMIT: Duration = Duration::from_secs(30);

/// How long one write may wait for its reply before the client gives up on the connection and
/// tries a fresh one (a write a node holds while it finds the new leader is answered well
/// within this).
const ATTEMPT_LIMIT: Duration = Duration::from_secs(5);

/// The pause after a refused write: short, since it bounds how precisely the end is seen.
const RETRY_PAUSE: Duration = Duration::from_millis(5);

/// How long a restarted node may take to catch up.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(60);

/// The key every round writes.
const KEY: &str = "bench:failover";

/// Runs the kills and prints the figures.
pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let binary = std::env::current_exe()?;
    let mut cluster = Cluster::new(binary, NODES)?;
    let kills = args.failover.kills;
    let outcome = tokio::select! {
        outcome = measure(&mut cluster, kills, !args.json) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    cluster.stop().await;
    let report = Report::new(outcome?);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "failover: a {NODES}-node cluster (fsync always) on loopback; {} kills of the leader with SIGKILL, \
             each timed to the first write a surviving node acknowledged",
            report.kills.len()
        );
        print!("{}", table(&report));
    }
    Ok(())
}

/// One kill and what followed it.
#[derive(Debug, Clone, Serialize)]
struct Kill {
    /// The node killed: the leader then.
    killed: u64,
    /// From SIGKILL to the first acknowledged write, in ms.
    failover_ms: f64,
    /// The node whose write was acknowledged first.
    written_through: u64,
    /// Who leads once the survivors agree.
    new_leader: u64,
    /// From the restart of the killed node to its having caught up, in ms.
    rejoin_ms: f64,
}

/// What `bench failover` prints.
#[derive(Debug, Serialize)]
struct Report {
    nodes: u64,
    p50_ms: f64,
    p90_ms: f64,
    max_ms: f64,
    kills: Vec<Kill>,
}

impl Report {
    fn new(kills: Vec<Kill>) -> Report {
        let mut times: Vec<f64> = kills.iter().map(|k| k.failover_ms).collect();
        times.sort_by(f64::total_cmp);
        Report {
            nodes: NODES,
            p50_ms: percentile(&times, 50),
            p90_ms: percentile(&times, 90),
            max_ms: times.last().copied().unwrap_or(0.0),
            kills,
        }
    }
}

/// The nearest-rank percentile of sorted figures (the smallest one with at least `percent` % of
/// them at or below it); 0 for none.
fn percentile(sorted: &[f64], percent: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (percent * sorted.len()).div_ceil(100);
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn table(report: &Report) -> String {
    let header = ["nodes", "kills", "p50 ms", "p90 ms", "max ms"];
    let row = vec![
        report.nodes.to_string(),
        report.kills.len().to_string(),
        format!("{:.1}", report.p50_ms),
        format!("{:.1}", report.p90_ms),
        format!("{:.1}", report.max_ms),
    ];
    render_table(&header, vec![row], 0)
}

/// Starts the cluster and runs `kills` rounds; `progress`: a line on stderr per kill.
async fn measure(cluster: &mut Cluster, kills: u32, progress: bool) -> anyhow::Result<Vec<Kill>> {
    cluster.start().await?;
    let mut done = Vec::new();
    for round in 1..=kills {
        let kill = kill_the_leader(cluster, round).await?;
        if progress {
            eprintln!(
                "kill {round}/{kills}: node {} (leader); a write through node {} acknowledged {:.1} ms later; \
                 new leader node {}; node {} caught up {:.1} ms after its restart",
                kill.killed,
                kill.written_through,
                kill.failover_ms,
                kill.new_leader,
                kill.killed,
                kill.rejoin_ms
            );
        }
        done.push(kill);
    }
    Ok(done)
}

/// One round, from three healthy nodes back to three healthy nodes.
async fn kill_the_leader(cluster: &mut Cluster, round: u32) -> anyhow::Result<Kill> {
    let leader = cluster.leader(LEADER_LIMIT).await?;
    let value = format!("round {round}");
    // Connected to every survivor, each of which has taken a write: the cluster works, and no
    // connect is timed.
    let mut survivors = Vec::new();
    for id in cluster.ids().into_iter().filter(|&id| id != leader) {
        let addr = cluster.resp_addr(id).ok_or_else(|| anyhow!("node {id} is not running"))?.to_owned();
        let mut conn = Connection::connect(&addr, CONNECT_TIMEOUT).await?;
        set(&mut conn, &value)
            .await
            .map_err(|e| anyhow!("a write through node {id} before the kill: {e}"))?;
        survivors.push(Survivor { id, addr, conn: Some(conn) });
    }

    let killed_at = Instant::now();
    cluster.kill(leader).await?;
    let deadline = killed_at + WRITE_LIMIT;
    let mut writers: FuturesUnordered<_> =
        survivors.into_iter().map(|survivor| survivor.write_until_acknowledged(&value, deadline)).collect();
    let mut failures = Vec::new();
    let (written_through, acknowledged_at) = loop {
        match writers.next().await {
            Some(Ok(first)) => break first,
            Some(Err(e)) => failures.push(format!("{e:#}")),
            None => bail!(
                "round {round}: no write acknowledged after node {leader} was killed: {}",
                failures.join("; ")
            ),
        }
    };
    drop(writers);
    let failover = acknowledged_at - killed_at;
    let new_leader = cluster.leader(LEADER_LIMIT).await?;

    let restarted_at = Instant::now();
    cluster.restart(leader).await?;
    cluster.catch_up(leader, new_leader, CATCH_UP_LIMIT).await?;
    Ok(Kill {
        killed: leader,
        failover_ms: ms(failover),
        written_through,
        new_leader,
        rejoin_ms: ms(restarted_at.elapsed()),
    })
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A node that outlives the kill, and the client that writes through it.
struct Survivor {
    id: u64,
    addr: String,
    conn: Option<Connection>,
}

impl Survivor {
    /// SETs until one is acknowledged (its node and when) or the deadline passes. A refused
    /// write (no leader yet) is retried after a short pause; a broken or silent connection is
    /// replaced.
    async fn write_until_acknowledged(
        mut self,
        value: &str,
        deadline: Instant,
    ) -> anyhow::Result<(u64, Instant)> {
        let mut last_error = String::from("none");
        loop {
            let now = Instant::now();
            if now >= deadline {
                bail!("node {}: nothing acknowledged; the last error: {last_error}", self.id);
            }
            let left = deadline - now;
            match &mut self.conn {
                None => match Connection::connect(&self.addr, CONNECT_TIMEOUT.min(left)).await {
                    Ok(conn) => {
                        self.conn = Some(conn);
                        continue;
                    }
                    Err(e) => last_error = e.to_string(),
                },
                Some(conn) => match tokio::time::timeout(ATTEMPT_LIMIT.min(left), set(conn, value)).await {
                    Ok(Ok(())) => return Ok((self.id, Instant::now())),
                    Ok(Err(e)) => {
                        last_error = e;
                        if conn.is_broken() {
                            self.conn = None;
                        }
                    }
                    Err(_) => {
                        last_error = "no reply".to_owned();
                        // The reply may still come: the connection is out of step, so it goes.
                        self.conn = None;
                    }
                },
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// `SET bench:failover value` → `+OK`; anything else is an error's text.
async fn set(conn: &mut Connection, value: &str) -> Result<(), String> {
    match conn.call(&Cmd::new("SET").arg(KEY).arg(value)).await {
        Ok(Frame::Simple(ok)) if ok == "OK" => Ok(()),
        Ok(other) => Err(shorten(&format!("SET answered {other:?}"))),
        Err(e) => Err(shorten(&e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::bench::args::Workload;
    use crate::bench::args::tests::parse_args;

    #[test]
    fn percentiles_are_nearest_rank() {
        let times: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&times, 50), 10.0);
        assert_eq!(percentile(&times, 90), 18.0);
        assert_eq!(percentile(&times, 100), 20.0);
        assert_eq!(percentile(&times, 0), 1.0);
        assert_eq!(percentile(&[7.0], 50), 7.0);
        assert_eq!(percentile(&[], 50), 0.0);
    }

    fn kill(failover_ms: f64) -> Kill {
        Kill { killed: 1, failover_ms, written_through: 2, new_leader: 3, rejoin_ms: 900.0 }
    }

    #[test]
    fn the_report_sorts_before_it_ranks_and_keeps_every_kill_in_order() {
        let report = Report::new(vec![kill(900.0), kill(450.5), kill(1200.0), kill(700.0)]);
        assert_eq!((report.p50_ms, report.p90_ms, report.max_ms), (700.0, 1200.0, 1200.0));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["kills"][0]["failover_ms"], 900.0);
        assert_eq!(json["kills"][1]["written_through"], 2);
        assert_eq!(json["kills"].as_array().map(Vec::len), Some(4));
        let text = table(&report);
        assert!(text.lines().nth(1).is_some_and(|row| row.ends_with("700.0  1200.0  1200.0")), "{text}");
    }

    #[test]
    fn kills_default_to_twenty_and_must_be_some() {
        let args = parse_args::<BenchArgs>("bench failover").unwrap();
        assert_eq!((args.workload, args.failover.kills), (Workload::Failover, 20));
        assert_eq!(parse_args::<BenchArgs>("bench failover --kills 3 --json").unwrap().failover.kills, 3);
        assert!(parse_args::<BenchArgs>("bench failover --kills 0").is_err());
    }
}
