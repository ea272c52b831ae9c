//! `turnstile torture`: starts a cluster of this very binary behind the fault proxy, runs a mixed
//! workload under a seeded nemesis, and prints the checkers' verdicts (the work is in
//! `turnstile-torture`). `--check FILE` judges a saved history again instead.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use turnstile_torture::{Fault, Options};

use crate::exit;

#[derive(Debug, Args)]
pub struct TortureArgs {
    /// Nodes in the cluster: 1, 3 or 5.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// How long the workload and the nemesis run.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Seeds the schedule of faults and the clients' choices [default: from the clock, printed].
    #[arg(long)]
    seed: Option<u64>,
    /// The faults, comma-separated: kill, pause, partition, slow-disk, restart, membership
    /// (slow-disk starts the nodes with --fault-injection). `none` for no faults.
    #[arg(long, default_value = "kill,pause,partition,slow-disk,restart,membership")]
    nemesis: String,
    /// Client threads (RESP and HTTP; a quarter as many AMQP clients run beside them).
    #[arg(long, default_value_t = 12)]
    clients: usize,
    /// Where to write the history, the seed, the report and every node's log [default: a new
    /// dir under the system temp dir, kept only when the run fails].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Crash torture: this many kill -9 cycles at random moments instead of the nemesis's
    /// schedule (the run lasts at least --duration).
    #[arg(long, value_name = "N")]
    cycles: Option<u32>,
    /// Check a saved history (history.jsonl of an earlier run) instead of running.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["nodes", "duration", "seed", "nemesis", "clients", "out", "cycles"])]
    check: Option<PathBuf>,
}

fn parse_nemesis(list: &str) -> anyhow::Result<BTreeSet<Fault>> {
    if list.trim() == "none" {
        return Ok(BTreeSet::new());
    }
    list.split(',').map(|s| s.trim().parse::<Fault>().map_err(anyhow::Error::msg)).collect()
}

pub fn run(args: TortureArgs) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.check {
        let verdicts = turnstile_torture::check_file(path)?;
        print!("{}", turnstile_torture::summary(&verdicts));
        let valid = verdicts.iter().all(turnstile_torture::CheckVerdict::valid);
        return Ok(if valid { ExitCode::SUCCESS } else { ExitCode::from(exit::VIOLATION) });
    }
    let binary = std::env::current_exe().context("finding the turnstile binary to start the nodes from")?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs())
    });
    let options = Options {
        nodes: args.nodes,
        duration: args.duration,
        seed,
        nemesis: parse_nemesis(&args.nemesis)?,
        clients: args.clients,
        out: args.out,
        cycles: args.cycles,
        ..Options::new(binary)
    };
    eprintln!(
        "torture: seed {seed}, {} node(s), {} ...",
        options.nodes,
        humantime::format_duration(options.duration)
    );
    let report = turnstile_torture::run(options)?;
    println!("{report}");
    Ok(if report.valid() { ExitCode::SUCCESS } else { ExitCode::from(exit::VIOLATION) })
}
