//! `turnstile lock ...` and `turnstile sem ...`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Serialize;
use turnstile_client::{Client, Holder, LockBuilder, LockGuard, LockInfo};

use crate::exit;
use crate::output::{ms, print};

#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Run CMD while holding the lock: a distributed flock(1). CMD gets TURNSTILE_FENCING_TOKEN
    /// and TURNSTILE_LOCK; the lease is renewed while it runs; if the lease is lost CMD gets
    /// SIGTERM (SIGKILL after --grace) and turnstile exits with status 4.
    Run(crate::run::RunArgs),
    /// Take the lock and keep it after this command exits (KEEP: only its lease or a release by
    /// token ends it). Prints the fencing token.
    Acquire(AcquireArgs),
    /// Release a hold by its token.
    Release(TokenArgs),
    /// Renew a hold's lease by its token.
    Renew(RenewArgs),
    /// Who holds the lock and who waits.
    Info(NameArgs),
    /// Locks and semaphores that are held or waited for.
    List,
}

#[derive(Debug, Subcommand)]
pub enum SemCommand {
    /// Take permits and keep them after this command exits. Prints the fencing token.
    Acquire(SemAcquireArgs),
    /// Release permits by their token.
    Release(TokenArgs),
    /// Renew permits' lease by their token.
    Renew(RenewArgs),
    /// Who holds permits and who waits.
    Info(NameArgs),
}

/// How long a hold lasts and how long to wait for it.
#[derive(Debug, Args)]
pub struct HoldArgs {
    /// Lease length (renewed while held, by `lock run`).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// How long to wait in line; 0 fails at once when taken.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
    /// Who holds it (shown by `info`; deadlock detection is per owner) [default: the connection].
    #[arg(long)]
    pub owner: Option<String>,
}

impl HoldArgs {
    pub fn apply(&self, builder: LockBuilder) -> LockBuilder {
        let builder = builder.ttl(self.ttl).wait(self.wait);
        match &self.owner {
            Some(owner) => builder.owner(owner),
            None => builder,
        }
    }
}

#[derive(Debug, Args)]
pub struct AcquireArgs {
    pub name: String,
    #[command(flatten)]
    pub hold: HoldArgs,
    /// A shared (read) hold.
    #[arg(long)]
    pub shared: bool,
}

#[derive(Debug, Args)]
pub struct SemAcquireArgs {
    pub name: String,
    /// The semaphore's permits in all.
    #[arg(long)]
    pub limit: u32,
    /// How many to take.
    #[arg(long, default_value_t = 1)]
    pub permits: u32,
    #[command(flatten)]
    pub hold: HoldArgs,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    pub name: String,
    /// The fencing token the acquire printed.
    pub token: u64,
}

#[derive(Debug, Args)]
pub struct RenewArgs {
    pub name: String,
    pub token: u64,
    /// The new lease, from now.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    pub name: String,
}

#[derive(Debug, Serialize)]
struct Granted<'a> {
    name: &'a str,
    token: u64,
    ttl_ms: u64,
}

pub async fn lock(client: &Client, command: LockCommand, json: bool) -> anyhow::Result<ExitCode> {
    match command {
        LockCommand::Run(args) => crate::run::run(client, args).await,
        LockCommand::Acquire(args) => {
            let builder = args.hold.apply(client.lock(&args.name)).keep();
            let builder = if args.shared { builder.shared() } else { builder };
            let guard = take(client, builder, &args.name, false, args.hold.wait).await?;
            granted(guard, &args.name, args.hold.ttl, json)
        }
        LockCommand::Release(args) => release(client, args, false, json).await,
        LockCommand::Renew(args) => renew(client, args, false, json).await,
        LockCommand::Info(args) => info(client, &args.name, false, json).await,
        LockCommand::List => {
            let names = client.locks().await?;
            print(json, &names, || names.join("\n"));
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn sem(client: &Client, command: SemCommand, json: bool) -> anyhow::Result<ExitCode> {
    match command {
        SemCommand::Acquire(args) => {
            let builder =
                args.hold.apply(client.semaphore(&args.name, args.limit)).permits(args.permits).keep();
            let guard = take(client, builder, &args.name, true, args.hold.wait).await?;
            granted(guard, &args.name, args.hold.ttl, json)
        }
        SemCommand::Release(args) => release(client, args, true, json).await,
        SemCommand::Renew(args) => renew(client, args, true, json).await,
        SemCommand::Info(args) => info(client, &args.name, true, json).await,
    }
}

/// Acquires, or says why not: who holds it, and whether it was waited for at all (with
/// `--wait 0` a taken lock is refused at once; nothing "timed out").
pub async fn take(
    client: &Client,
    builder: LockBuilder,
    name: &str,
    semaphore: bool,
    wait: Duration,
) -> anyhow::Result<LockGuard> {
    if let Some(guard) = builder.try_acquire().await? {
        return Ok(guard);
    }
    // Who holds it now: a best effort, as the holder may let go at any moment (or the server may
    // be gone); the refusal stands either way.
    let holders = client.lock_info(name, semaphore).await.map(|info| info.holders).unwrap_or_default();
    Err(exit::Taken { what: taken_what(name, semaphore), wait, holders: holders_text(&holders) }.into())
}

fn taken_what(name: &str, semaphore: bool) -> String {
    if semaphore { format!("the semaphore {name}") } else { format!("the lock {name}") }
}

/// `alice (token 5), bob (token 6)`.
fn holders_text(holders: &[Holder]) -> String {
    let each: Vec<String> =
        holders.iter().map(|h| format!("{} (token {})", h.owner, h.fencing_token)).collect();
    each.join(", ")
}

fn granted(guard: LockGuard, name: &str, ttl: Duration, json: bool) -> anyhow::Result<ExitCode> {
    // A KEEP hold: let it outlive this process; it is renewed or released by token.
    let token = guard.detach();
    print(json, &Granted { name, token, ttl_ms: ms(ttl) }, || token.to_string());
    Ok(ExitCode::SUCCESS)
}

async fn release(client: &Client, args: TokenArgs, semaphore: bool, json: bool) -> anyhow::Result<ExitCode> {
    let released = client.release(&args.name, args.token, semaphore).await?;
    #[derive(Serialize)]
    struct Released {
        released: bool,
    }
    print(json, &Released { released }, || {
        if released { "released" } else { "not held (already released or expired)" }.to_owned()
    });
    Ok(ExitCode::from(if released { exit::OK } else { exit::LOST }))
}

async fn renew(client: &Client, args: RenewArgs, semaphore: bool, json: bool) -> anyhow::Result<ExitCode> {
    let lease = client.renew(&args.name, args.token, args.ttl, semaphore).await?;
    #[derive(Serialize)]
    struct Renewed {
        ttl_ms: u64,
    }
    print(json, &Renewed { ttl_ms: ms(lease) }, || {
        format!("renewed for {}", humantime::format_duration(lease))
    });
    Ok(ExitCode::SUCCESS)
}

async fn info(client: &Client, name: &str, semaphore: bool, json: bool) -> anyhow::Result<ExitCode> {
    let info = client.lock_info(name, semaphore).await?;
    print(json, &InfoJson::from(&info), || info_text(name, &info));
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Serialize)]
struct InfoJson {
    mode: String,
    limit: u32,
    holders: Vec<HolderJson>,
    waiters: Vec<WaiterJson>,
}

#[derive(Debug, Serialize)]
struct HolderJson {
    owner: String,
    token: u64,
    expires_in_ms: u64,
    permits: u32,
}

#[derive(Debug, Serialize)]
struct WaiterJson {
    owner: String,
    mode: String,
    permits: u32,
    gives_up_in_ms: u64,
}

impl From<&LockInfo> for InfoJson {
    fn from(info: &LockInfo) -> InfoJson {
        InfoJson {
            mode: info.mode.clone(),
            limit: info.limit,
            holders: info
                .holders
                .iter()
                .map(|h| HolderJson {
                    owner: h.owner.clone(),
                    token: h.fencing_token,
                    expires_in_ms: ms(h.expires_in),
                    permits: h.permits,
                })
                .collect(),
            waiters: info
                .waiters
                .iter()
                .map(|w| WaiterJson {
                    owner: w.owner.clone(),
                    mode: w.mode.clone(),
                    permits: w.permits,
                    gives_up_in_ms: ms(w.gives_up_in),
                })
                .collect(),
        }
    }
}

fn info_text(name: &str, info: &LockInfo) -> String {
    let mut out = format!("{name}: {}", info.mode);
    if info.mode == "semaphore" {
        out += &format!(" (limit {})", info.limit);
    }
    for h in &info.holders {
        out += &format!(
            "\n  held by {} token {} expires in {} ({} permit{})",
            h.owner,
            h.fencing_token,
            humantime::format_duration(h.expires_in),
            h.permits,
            if h.permits == 1 { "" } else { "s" }
        );
    }
    for (i, w) in info.waiters.iter().enumerate() {
        out += &format!(
            "\n  waiting #{}: {} ({}, {} permit{}) gives up in {}",
            i + 1,
            w.owner,
            w.mode,
            w.permits,
            if w.permits == 1 { "" } else { "s" },
            humantime::format_duration(w.gives_up_in)
        );
    }
    out
}
