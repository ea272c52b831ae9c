//! The nemesis: one fault at a time on a seeded schedule, each lasting a random 1–6 s, each
//! recorded in the history (`Recorder::nemesis`) when it begins and when it ends.
//!
//! ```text
//!  quiet 0.5–2 s ─► pick a fault ─► begin ─► hold 1–6 s ─► end (heal, resume, restart) ─► ...
//! ```
//!
//! A fault that needs more nodes than the cluster has (a partition of one node, a membership
//! change below three voters) is not picked.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use turnstile_check::Recorder;

use crate::cluster::{CUT, Cluster, State, info};

/// The kinds of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// `kill -9` a random node, the leader, or a majority; restarted when the fault ends.
    Kill,
    /// `SIGSTOP` a node (the leader, or any) for longer than a lock's lease, then `SIGCONT`.
    Pause,
    /// Majority / minority split, a bridge, or a one-way cut, through the proxies.
    Partition,
    /// Every fsync of a node delayed (`PUT /api/faults/fsync-delay`, `--fault-injection`).
    SlowDisk,
    /// A clean stop (SIGTERM) and a start.
    Restart,
    /// A fresh node (a new id) joins, then a follower is removed (its id retired for good).
    Membership,
}

impl Fault {
    pub const ALL: [Fault; 6] =
        [Fault::Kill, Fault::Pause, Fault::Partition, Fault::SlowDisk, Fault::Restart, Fault::Membership];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::SlowDisk => "slow-disk",
            Fault::Restart => "restart",
            Fault::Membership => "membership",
        }
    }

    /// Whether the fault makes sense on a cluster of `nodes`.
    pub fn fits(self, nodes: usize) -> bool {
        match self {
            Fault::Kill | Fault::Pause | Fault::SlowDisk | Fault::Restart => true,
            Fault::Partition | Fault::Membership => nodes >= 3,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Fault, String> {
        Fault::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
            format!("unknown fault {s:?}; the faults are {}", names.join(", "))
        })
    }
}

/// What the nemesis did, for the report.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Faults begun, per kind.
    pub faults: BTreeMap<Fault, u64>,
    /// `kill -9`s (each node counted), and how many landed while a snapshot was being written.
    pub kills: u64,
    pub kills_mid_snapshot: u64,
}

/// The state of a fault under way, to end it.
enum Undo {
    Restart(Vec<usize>),
    Resume(usize),
    Heal,
    FsyncDelay(usize),
    Nothing,
}

pub struct Nemesis<'a> {
    pub cluster: &'a mut Cluster,
    recorder: Recorder,
    rng: fastrand::Rng,
    faults: Vec<Fault>,
    pub tally: Tally,
}

impl<'a> Nemesis<'a> {
    pub fn new(
        cluster: &'a mut Cluster,
        recorder: Recorder,
        seed: u64,
        faults: &BTreeSet<Fault>,
    ) -> Nemesis<'a> {
        let n = cluster.len();
        let faults = faults.iter().copied().filter(|f| f.fits(n)).collect();
        Nemesis { cluster, recorder, rng: fastrand::Rng::with_seed(seed), faults, tally: Tally::default() }
    }

    /// Runs faults one after another until `until`.
    pub fn run(&mut self, until: Instant) -> anyhow::Result<()> {
        while Instant::now() < until {
            sleep_until(Instant::now() + Duration::from_millis(self.rng.u64(500..2000)), until);
            if self.faults.is_empty() || Instant::now() >= until {
                continue;
            }
            let fault = self.faults[self.rng.usize(0..self.faults.len())];
            let (what, undo) = self.begin(fault)?;
            let Some(what) = what else { continue };
            *self.tally.faults.entry(fault).or_default() += 1;
            self.recorder.nemesis(format!("begin {fault}: {what}"));
            std::thread::sleep(Duration::from_millis(self.rng.u64(1000..6000)));
            self.end(undo)?;
            self.recorder.nemesis(format!("end {fault}: {what}"));
        }
        Ok(())
    }

    /// `cycles` crash cycles of every node at random moments: each waits 0.2–2 s, kills -9,
    /// and starts the node again at once.
    pub fn crash_cycles(&mut self, cycles: u32) -> anyhow::Result<()> {
        for cycle in 0..cycles {
            std::thread::sleep(Duration::from_millis(self.rng.u64(200..2000)));
            let nodes = self.cluster.running();
            let Some(&node) = nodes.get(self.rng.usize(0..nodes.len().max(1))) else { continue };
            let what = format!("cycle {} of {cycles}: node {}", cycle + 1, self.cluster.nodes[node].id);
            self.recorder.nemesis(format!("begin kill: {what}"));
            self.kill(&[node]);
            *self.tally.faults.entry(Fault::Kill).or_default() += 1;
            self.cluster.restart(node)?;
            self.recorder.nemesis(format!("end kill: {what}"));
        }
        Ok(())
    }

    /// The running node that leads, by its own and a majority's word; `None` if none does now.
    pub fn leader(&self) -> Option<usize> {
        let members = self.cluster.members();
        let infos: Vec<_> = members.iter().filter_map(|&i| Some((i, self.cluster.raft_info(i)?))).collect();
        let majority = members.len() / 2 + 1;
        infos.iter().find_map(|(i, m)| {
            let id = self.cluster.nodes[*i].id.to_string();
            let followers =
                infos.iter().filter(|(_, o)| o.get("leader") == Some(&id) && o.get("term") == m.get("term"));
            (m.get("role").map(String::as_str) == Some("leader") && followers.count() >= majority)
                .then_some(*i)
        })
    }

    fn pick(&mut self, from: &[usize]) -> Option<usize> {
        (!from.is_empty()).then(|| from[self.rng.usize(0..from.len())])
    }

    fn kill(&mut self, nodes: &[usize]) {
        for &i in nodes {
            if self.cluster.snapshot_in_progress(i) {
                self.tally.kills_mid_snapshot += 1;
            }
            self.cluster.kill9(i);
            self.tally.kills += 1;
        }
    }

    fn ids(&self, nodes: &[usize]) -> Vec<u64> {
        nodes.iter().map(|&i| self.cluster.nodes[i].id).collect()
    }

    /// Begins `fault`: what it does, in words (`None` when it could not be done now), and how to
    /// end it.
    fn begin(&mut self, fault: Fault) -> anyhow::Result<(Option<String>, Undo)> {
        let running = self.cluster.running();
        let members = self.cluster.members();
        let none = Ok((None, Undo::Nothing));
        match fault {
            Fault::Kill => {
                let targets = match self.rng.u32(0..3) {
                    0 if members.len() >= 3 => {
                        let mut shuffled = running.clone();
                        self.rng.shuffle(&mut shuffled);
                        shuffled.truncate(members.len() / 2 + 1);
                        shuffled
                    }
                    1 => self.leader().into_iter().collect(),
                    _ => self.pick(&running).into_iter().collect(),
                };
                if targets.is_empty() {
                    return none;
                }
                let what = format!("kill -9 nodes {:?}", self.ids(&targets));
                self.kill(&targets);
                Ok((Some(what), Undo::Restart(targets)))
            }
            Fault::Pause => {
                let target = if self.rng.bool() { self.leader() } else { None };
                let Some(target) = target.or_else(|| self.pick(&running)) else { return none };
                self.cluster.pause(target)?;
                Ok((Some(format!("SIGSTOP node {}", self.cluster.nodes[target].id)), Undo::Resume(target)))
            }
            Fault::Partition => {
                let mut ids = self.ids(&members);
                self.rng.shuffle(&mut ids);
                let faults = &self.cluster.faults;
                let what = match self.rng.u32(0..4) {
                    0 => {
                        let (minority, majority) = ids.split_at(ids.len() / 2);
                        faults.split(&[minority, majority], CUT);
                        format!("split {minority:?} | {majority:?}")
                    }
                    1 => {
                        // The leader alone on the minority side.
                        let leader = self.leader().map(|i| self.cluster.nodes[i].id).unwrap_or(ids[0]);
                        self.cluster.faults.isolate(leader, CUT);
                        format!("isolate node {leader}")
                    }
                    2 => {
                        let half = ids.len().div_ceil(2);
                        let bridge = ids[half - 1];
                        let (left, right) = (&ids[..half], &ids[half - 1..]);
                        faults.bridge(left, bridge, right, CUT);
                        format!("bridge {left:?} -{bridge}- {right:?}")
                    }
                    _ => {
                        let (from, to) = (ids[0], ids[1]);
                        faults.one_way(from, to);
                        format!("one-way cut {from} -> {to}")
                    }
                };
                Ok((Some(what), Undo::Heal))
            }
            Fault::SlowDisk => {
                let Some(target) = self.pick(&running) else { return none };
                let ms = self.rng.u64(20..300);
                if let Err(e) = self.fsync_delay(target, ms) {
                    bail!("slow-disk on node {}: {e:#}", self.cluster.nodes[target].id);
                }
                let what = format!("fsync delayed {ms} ms on node {}", self.cluster.nodes[target].id);
                Ok((Some(what), Undo::FsyncDelay(target)))
            }
            Fault::Restart => {
                let Some(target) = self.pick(&running) else { return none };
                self.cluster.terminate(target)?;
                Ok((
                    Some(format!("SIGTERM node {}", self.cluster.nodes[target].id)),
                    Undo::Restart(vec![target]),
                ))
            }
            Fault::Membership => self.replace_a_follower(),
        }
    }

    /// Adds a fresh node, then removes a follower: the voters stay at least as many as before.
    fn replace_a_follower(&mut self) -> anyhow::Result<(Option<String>, Undo)> {
        let Some(leader) = self.leader() else { return Ok((None, Undo::Nothing)) };
        let followers: Vec<usize> = self.cluster.running().into_iter().filter(|&i| i != leader).collect();
        let Some(old) = self.pick(&followers) else { return Ok((None, Undo::Nothing)) };
        let Some(new) = self.cluster.add_node(leader)? else { return Ok((None, Undo::Nothing)) };
        let (old_id, new_id) = (self.cluster.nodes[old].id, self.cluster.nodes[new].id);
        let via = self.cluster.addrs(leader).context("the leader's addresses")?.resp;
        // The leader may change meanwhile; any member runs the removal (a follower has the leader
        // do it). Retried until it is done: a node left half in is worse than a slow change.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let removed = redis::Client::open(format!("redis://{via}/"))
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
                .and_then(|mut con| {
                    con.set_read_timeout(Some(Duration::from_secs(20)))?;
                    redis::cmd("CLUSTER.REMOVE").arg(old_id).query::<redis::Value>(&mut con)
                });
            match removed {
                Ok(_) => break,
                Err(e) if e.to_string().contains("not a member") => break,
                Err(e) if Instant::now() > deadline => bail!("CLUSTER.REMOVE {old_id}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        self.cluster.retire(old);
        Ok((Some(format!("node {new_id} joined, node {old_id} removed")), Undo::Nothing))
    }

    fn fsync_delay(&self, node: usize, ms: u64) -> anyhow::Result<()> {
        let addrs = self.cluster.addrs(node).context("a running node")?;
        let status = crate::http_put(
            &addrs.http,
            "/api/faults/fsync-delay",
            &serde_json::json!({"ms": ms}).to_string(),
        )?;
        if status != 200 && status != 204 {
            bail!(
                "PUT /api/faults/fsync-delay answered {status} (is the node started with --fault-injection?)"
            );
        }
        Ok(())
    }

    fn end(&mut self, undo: Undo) -> anyhow::Result<()> {
        match undo {
            Undo::Restart(nodes) => {
                let down: Vec<usize> = nodes
                    .into_iter()
                    .filter(|&i| self.cluster.nodes[i].state == State::Down && !self.cluster.nodes[i].retired)
                    .collect();
                self.cluster.start_nodes(&down)?;
            }
            Undo::Resume(node) => self.cluster.resume_if_paused(node),
            Undo::Heal => self.cluster.faults.heal(),
            Undo::FsyncDelay(node) => {
                // A node killed meanwhile came back without the delay.
                if self.cluster.nodes[node].state == State::Running {
                    self.fsync_delay(node, 0)?;
                }
            }
            Undo::Nothing => {}
        }
        Ok(())
    }
}

/// Sleeps until `at`, or `until` if that is sooner.
fn sleep_until(at: Instant, until: Instant) {
    let at = at.min(until);
    if let Some(left) = at.checked_duration_since(Instant::now()) {
        std::thread::sleep(left);
    }
}

/// Polls every member's `INFO raft` and counts leader changes: each new term seen with a leader
/// after the first.
#[derive(Debug, Default)]
pub struct LeaderWatch {
    last_term: Option<u64>,
    pub failovers: u64,
}

impl LeaderWatch {
    pub fn observe(&mut self, resp_addrs: &[String]) {
        for addr in resp_addrs {
            let Some(m) = info(addr, "raft") else { continue };
            let (Some(term), Some(leader)) =
                (m.get("term").and_then(|t| t.parse::<u64>().ok()), m.get("leader"))
            else {
                continue;
            };
            if leader == "none" {
                continue;
            }
            match self.last_term {
                Some(last) if term > last => {
                    self.failovers += 1;
                    self.last_term = Some(term);
                }
                None => self.last_term = Some(term),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_parses_from_its_name_and_an_unknown_one_is_refused_by_name() {
        for fault in Fault::ALL {
            assert_eq!(fault.name().parse::<Fault>(), Ok(fault));
        }
        let error = "flood".parse::<Fault>().unwrap_err();
        assert!(error.contains("unknown fault \"flood\""), "{error}");
        assert!(error.contains("slow-disk"), "the error lists the faults: {error}");
    }

    #[test]
    fn partitions_and_membership_changes_need_three_nodes() {
        let on_one: Vec<Fault> = Fault::ALL.into_iter().filter(|f| f.fits(1)).collect();
        assert_eq!(on_one, [Fault::Kill, Fault::Pause, Fault::SlowDisk, Fault::Restart]);
        assert!(Fault::ALL.into_iter().all(|f| f.fits(3)));
    }
}
