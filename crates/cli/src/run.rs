//! `turnstile lock run NAME -- CMD`: run a command only while holding a lock.
//!
//! ```text
//!  acquire (wait) ─► spawn CMD (TURNSTILE_FENCING_TOKEN, TURNSTILE_LOCK)
//!                    ├─ CMD exits ─────────► release, exit with CMD's status
//!                    ├─ guard.lost() ──────► SIGTERM CMD, SIGKILL after --grace, exit 4
//!                    └─ SIGTERM/SIGHUP us ─► pass it on to CMD, keep waiting for it
//! ```

use std::process::{ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use turnstile_client::Client;

use crate::exit;
use crate::lock::HoldArgs;

#[derive(Debug, Args)]
pub struct RunArgs {
    pub name: String,
    #[command(flatten)]
    pub hold: HoldArgs,
    /// After SIGTERM, how long CMD has to exit before SIGKILL.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// The command and its arguments.
    #[arg(required = true, last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub async fn run(client: &Client, args: RunArgs) -> anyhow::Result<ExitCode> {
    let builder = args.hold.apply(client.lock(&args.name));
    let guard = crate::lock::take(client, builder, &args.name, false, args.hold.wait).await?;
    let token = guard.fencing_token();
    let (program, rest) = args.command.split_first().context("no command given")?;
    let mut child = Command::new(program)
        .args(rest)
        .env("TURNSTILE_FENCING_TOKEN", token.to_string())
        .env("TURNSTILE_LOCK", &args.name)
        .stdin(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let lost = guard.lost();
    tokio::pin!(lost);
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            why = &mut lost => {
                eprintln!(
                    "turnstile: lost the lock {} (token {token}): {why}; stopping {program}",
                    args.name
                );
                stop(&mut child, args.grace).await?;
                return Ok(ExitCode::from(exit::LOST));
            }
            // Ctrl-C reaches CMD from the terminal itself; these we pass on.
            _ = term.recv() => send(&child, Signal::SIGTERM),
            _ = hangup.recv() => send(&child, Signal::SIGHUP),
        }
    };
    match guard.release().await {
        Ok(true) => {}
        Ok(false) => eprintln!("turnstile: the lock {} was no longer held when {program} exited", args.name),
        // CMD ran to its end under the lock; its status is what the caller needs. The hold ends
        // with its lease (or already ended with the connection).
        Err(e) => eprintln!("turnstile: could not release the lock {}: {e}", args.name),
    }
    Ok(ExitCode::from(status_code(status)))
}

/// SIGTERM, then SIGKILL if CMD is still there after `grace`.
async fn stop(child: &mut Child, grace: Duration) -> anyhow::Result<()> {
    send(child, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        child.start_kill()?;
        child.wait().await?;
    }
    Ok(())
}

fn send(child: &Child, signal: Signal) {
    let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) else { return };
    if let Err(e) = kill(Pid::from_raw(pid), signal) {
        eprintln!("turnstile: cannot send {signal} to {pid}: {e}");
    }
}

/// CMD's exit status as ours, shells' way: 128+N when killed by signal N.
pub fn status_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(exit::ERROR),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(exit::ERROR),
        (None, None) => exit::ERROR,
    }
}
