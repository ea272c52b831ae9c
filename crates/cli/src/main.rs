//! `turnstile`: the command line. `turnstile server` runs the server; `lock`, `sem`, `queue`,
//! `cluster` (members, backups) and `bench` talk to one; `torture` runs a cluster of it under faults.

mod bench;
mod cluster;
mod exit;
mod lock;
mod logging;
mod membership;
mod output;
mod queue;
mod run;
mod torture;
mod work;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use logging::LogFormat;
use tracing_subscriber::filter::{LevelFilter, Targets};
use turnstile_server::{Config, Server};

/// Distributed locks and durable queues in one server.
#[derive(Debug, Parser)]
#[command(name = "turnstile", version, about, after_help = exit::HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (in the foreground; stops gracefully on SIGINT or SIGTERM).
    #[command(after_help = SERVER_HELP)]
    Server(Box<ServerArgs>),
    /// Locks: run a command under one, acquire, release, renew, inspect.
    Lock {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: lock::LockCommand,
    },
    /// Semaphores: acquire permits, release, renew, inspect.
    Sem {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: lock::SemCommand,
    },
    /// Queues: push, pop, ack, inspect, and `work` to run a command per message.
    Queue {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: queue::QueueCommand,
    },
    /// The cluster: status, add and remove nodes, move the leadership, backups.
    Cluster {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Load-test a server (or Redis or RabbitMQ, for comparison) and print a table.
    Bench {
        /// The default target, HOST:PORT (`--target` picks others, Redis included).
        #[arg(long, env = "TURNSTILE_SERVER", default_value = turnstile_client::DEFAULT_ADDR)]
        server: String,
        #[command(flatten)]
        args: bench::BenchArgs,
    },
    /// Verification: a cluster of this binary under a workload and injected faults (kill -9,
    /// pauses, partitions, ...), its history judged by the checkers.
    Torture(Box<torture::TortureArgs>),
}

/// Which server a client command talks to, and how it prints.
#[derive(Debug, Args)]
struct Target {
    /// HOST:PORT or turnstile://HOST:PORT; several comma-separated for a cluster.
    #[arg(long, global = true, env = "TURNSTILE_SERVER", default_value = turnstile_client::DEFAULT_ADDR)]
    server: String,
    /// Print data as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// The user to authenticate as, on a server with users [default: `default`].
    #[arg(long, global = true, env = "TURNSTILE_USER")]
    user: Option<String>,
    /// The password to authenticate with (`AUTH`; HTTP Basic for `cluster snapshot save`), on a
    /// server that requires one. Prefer the environment variable: a flag shows in `ps`.
    #[arg(long, global = true, env = "TURNSTILE_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

impl Target {
    fn credentials(&self) -> Option<turnstile_client::Credentials> {
        let password = self.password.clone()?;
        Some(turnstile_client::Credentials { user: self.user.clone(), password })
    }
}

/// What `turnstile server --help` says after the flags: the setting that only the file takes.
const SERVER_HELP: &str = "\
Config file only:
  amqp-users  AMQP users (PLAIN and AMQPLAIN): an [amqp-users] table of name = \"password\" lines,
              which replaces the default guest = \"guest\" (guest may log in from loopback only)
  users       users of every protocol: [users.NAME] tables (password, categories, keys, locks,
              queues, channels, tokens, max-connections); see docs/security.md

Every flag above but --config and the logging ones is also a config file key of the same name,
e.g. max-clients = 5000. Later sources win: defaults, the file, TURNSTILE_* variables, flags.";

/// Settings come from, in rising order: defaults, the config file, environment variables, flags.
#[derive(Debug, Args)]
struct ServerArgs {
    /// A TOML config file; its keys are the flag names, e.g. `resp-addr = "127.0.0.1:7379"`.
    #[arg(long, env = "TURNSTILE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the log and snapshots live [default: ./turnstile-data]. One server per dir.
    #[arg(long, env = "TURNSTILE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the RESP (Redis protocol) listener [default: 127.0.0.1:7379]; port 0 picks one.
    #[arg(long, env = "TURNSTILE_RESP_ADDR", value_name = "HOST:PORT")]
    resp_addr: Option<SocketAddr>,
    /// Address of the HTTP listener: JSON API, /metrics, /healthz, the dashboard at /
    /// [default: 127.0.0.1:7380]; port 0 picks one.
    #[arg(long, env = "TURNSTILE_HTTP_ADDR", value_name = "HOST:PORT")]
    http_addr: Option<SocketAddr>,
    /// Address of the AMQP 0-9-1 (RabbitMQ protocol) listener [default: 127.0.0.1:6672]; port 0
    /// picks one. Logins are the users of every protocol, `amqp-users` among them [default:
    /// guest/guest, loopback only].
    #[arg(long, env = "TURNSTILE_AMQP_ADDR", value_name = "HOST:PORT")]
    amqp_addr: Option<SocketAddr>,
    /// This node's id in its cluster; stable across restarts, never reused [default: 1].
    #[arg(long, env = "TURNSTILE_NODE_ID", value_name = "ID")]
    node_id: Option<u64>,
    /// Where this node listens for the other nodes of its cluster [default: its address in --peers].
    #[arg(long, env = "TURNSTILE_RAFT_ADDR", value_name = "HOST:PORT")]
    raft_addr: Option<SocketAddr>,
    /// The voters of a new cluster, this node among them, the same list on every node:
    /// ID=HOST:PORT,... (Raft addresses). The cluster forms once a majority of them is up.
    /// Without it: a single node.
    #[arg(long, env = "TURNSTILE_PEERS", value_name = "ID=HOST:PORT,...", value_parser = turnstile_server::parse_peers)]
    peers: Option<BTreeMap<u64, SocketAddr>>,
    /// Join a running cluster through any of its nodes (its Raft address): this node asks to be
    /// added under --node-id, reached at --raft-addr. Instead of --peers.
    #[arg(long, env = "TURNSTILE_JOIN", value_name = "HOST:PORT", conflicts_with = "peers")]
    join: Option<String>,
    /// Start a new node from a backup (`turnstile cluster snapshot save`): it becomes the first
    /// snapshot of --data-dir, which must be new or empty, under a new cluster id, this node the
    /// only voter. For that first start only. Not with --join; with --peers, list this node only
    /// (others then join it with --join).
    #[arg(long, env = "TURNSTILE_RESTORE", value_name = "FILE")]
    restore: Option<PathBuf>,
    /// Most client connections at once [default: 10000].
    #[arg(long, env = "TURNSTILE_MAX_CLIENTS", value_name = "N")]
    max_clients: Option<usize>,
    /// The `default` user's password, as Redis's `requirepass`: clients must then authenticate
    /// (`AUTH password`, `HELLO 3 AUTH default password`) before anything else.
    #[arg(long, env = "TURNSTILE_REQUIREPASS", value_name = "PASSWORD", hide_env_values = true)]
    requirepass: Option<String>,
    /// Largest payload, key or value a client may send, in bytes [default: 16777216].
    #[arg(long, env = "TURNSTILE_MAX_PAYLOAD", value_name = "BYTES")]
    max_payload: Option<usize>,
    /// Longest lock, queue, key or exchange name, in bytes [default: 1024].
    #[arg(long, env = "TURNSTILE_MAX_NAME_LEN", value_name = "BYTES")]
    max_name_len: Option<usize>,
    /// Most arguments in one command, its name included [default: 1048576].
    #[arg(long, env = "TURNSTILE_MAX_ARGS", value_name = "N")]
    max_args: Option<usize>,
    /// Most commands coalesced into one log entry [default: 512].
    #[arg(long, env = "TURNSTILE_MAX_BATCH", value_name = "N")]
    max_batch: Option<usize>,
    /// Most bytes of pub/sub messages waiting for one slow subscriber before it is disconnected
    /// [default: 33554432].
    #[arg(long, env = "TURNSTILE_PUBSUB_OUTPUT_LIMIT", value_name = "BYTES")]
    pubsub_output_limit: Option<u64>,
    /// Most bytes of unparsed input one RESP client may have buffered before it is closed
    /// [default: 1073741824].
    #[arg(long, env = "TURNSTILE_CLIENT_QUERY_BUFFER_LIMIT", value_name = "BYTES")]
    client_query_buffer_limit: Option<u64>,
    /// yes: while no password or user is configured, only clients on this host are served; others
    /// are refused (RESP -DENIED, AMQP and HTTP 403). no: everyone is served [default: yes].
    #[arg(long, env = "TURNSTILE_PROTECTED_MODE", value_name = "yes|no", value_parser = yes_no)]
    protected_mode: Option<bool>,
    /// Most holds one session may have (taken, or waited for); 0 = no limit [default: 0].
    #[arg(long, env = "TURNSTILE_MAX_HOLDS_PER_SESSION", value_name = "N")]
    max_holds_per_session: Option<u32>,
    /// Most waits (acquires, pops) one session may have at once; 0 = no limit [default: 0].
    #[arg(long, env = "TURNSTILE_MAX_WAITS_PER_SESSION", value_name = "N")]
    max_waits_per_session: Option<u32>,
    /// Most log entries in flight at once [default: 2].
    #[arg(long, env = "TURNSTILE_MAX_IN_FLIGHT", value_name = "N")]
    max_in_flight: Option<usize>,
    /// Threads for connections and the log; 0 = one per core [default: 0].
    #[arg(long, env = "TURNSTILE_WORKER_THREADS", value_name = "N")]
    worker_threads: Option<usize>,
    /// When a write counts as done: always (on disk before the reply), interval, never [default: always].
    #[arg(long, env = "TURNSTILE_FSYNC", value_name = "POLICY")]
    fsync: Option<turnstile_server::Fsync>,
    /// With --fsync interval: how often written data is forced to disk [default: 1000].
    #[arg(long, env = "TURNSTILE_FSYNC_INTERVAL_MS", value_name = "MS")]
    fsync_interval_ms: Option<u64>,
    /// How long a session outlives this process when it dies or is cut off, for its client to
    /// resume it on another node [default: 10000].
    #[arg(long, env = "TURNSTILE_SESSION_TIMEOUT_MS", value_name = "MS")]
    session_timeout_ms: Option<u64>,
    /// Refuse pushes with -OOM once stored payloads pass this many bytes; 0 = no limit [default: 0].
    #[arg(long, env = "TURNSTILE_MAX_MEMORY", value_name = "BYTES")]
    max_memory: Option<u64>,
    /// Flow control: once a consumed queue holds this many ready messages, connections publishing
    /// or pushing to it are not read until its consumers take it below half; 0 = off
    /// [default: 1000].
    #[arg(long, env = "TURNSTILE_QUEUE_FLOW_LIMIT", value_name = "MESSAGES")]
    queue_flow_limit: Option<u64>,
    /// Lua instructions one script may run before it is stopped and its writes undone
    /// [default: 100000000].
    #[arg(long, env = "TURNSTILE_SCRIPT_BUDGET", value_name = "INSTRUCTIONS")]
    script_budget: Option<u64>,
    /// Take a snapshot every this many log entries [default: 20000].
    #[arg(long, env = "TURNSTILE_SNAPSHOT_EVERY", value_name = "ENTRIES")]
    snapshot_every: Option<u64>,
    /// In a cluster: a follower that hears nothing from the leader for this long (up to twice
    /// it) starts an election; failover takes about three times this [default: 250].
    #[arg(long, env = "TURNSTILE_ELECTION_TIMEOUT_MS", value_name = "MS")]
    election_timeout_ms: Option<u64>,
    /// Also take a snapshot once the log since the last one holds this many bytes and at least
    /// as many as that snapshot; 0 = by entry count only [default: 67108864].
    #[arg(long, env = "TURNSTILE_SNAPSHOT_LOG_BYTES", value_name = "BYTES")]
    snapshot_log_bytes: Option<u64>,
    /// Also serve RESP under TLS here (Redis's tls-port); needs --tls-cert and --tls-key.
    #[arg(long, env = "TURNSTILE_TLS_RESP_ADDR", value_name = "ADDR")]
    tls_resp_addr: Option<SocketAddr>,
    /// Also serve AMQP under TLS (AMQPS) here; needs --tls-cert and --tls-key.
    #[arg(long, env = "TURNSTILE_TLS_AMQP_ADDR", value_name = "ADDR")]
    tls_amqp_addr: Option<SocketAddr>,
    /// Also serve HTTP under TLS (HTTPS) here; needs --tls-cert and --tls-key.
    #[arg(long, env = "TURNSTILE_TLS_HTTP_ADDR", value_name = "ADDR")]
    tls_http_addr: Option<SocketAddr>,
    /// PEM certificate chain of the TLS listeners and of --tls-peer; read again on SIGHUP.
    #[arg(long, env = "TURNSTILE_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert; read again on SIGHUP.
    #[arg(long, env = "TURNSTILE_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificates: TLS clients must then present a certificate they signed (mutual
    /// TLS); read again on SIGHUP.
    #[arg(long, env = "TURNSTILE_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Mutual TLS between the nodes of a cluster, with --tls-cert, --tls-key and --tls-ca.
    #[arg(long, env = "TURNSTILE_TLS_PEER", value_parser = clap::builder::FalseyValueParser::new())]
    tls_peer: bool,
    /// Start even if the log has a corrupt record: cut it there, losing everything after it.
    #[arg(long)]
    truncate_corrupt: bool,
    /// FOR TESTS ONLY, NEVER IN PRODUCTION: serve fault hooks on the HTTP listener
    /// (PUT /api/faults/fsync-delay {"ms": N} slows every journal fsync by N ms, 0 clears), for
    /// torture runs that play a slow disk. Without it those paths answer 404.
    #[arg(long, env = "TURNSTILE_FAULT_INJECTION", value_parser = clap::builder::FalseyValueParser::new())]
    fault_injection: bool,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, env = "TURNSTILE_LOG", value_name = "LEVEL", default_value = "info")]
    log: LevelFilter,
    /// Log lines on stderr as text (coloured only on a terminal) or as JSON, one object a line.
    #[arg(long, env = "TURNSTILE_LOG_FORMAT", value_name = "FORMAT", value_enum, default_value_t)]
    log_format: LogFormat,
}

impl ServerArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        // A flag (or its environment variable) wins over the file.
        fn set<T: Clone>(setting: &mut T, flag: &Option<T>) {
            if let Some(value) = flag {
                *setting = value.clone();
            }
        }
        set(&mut config.data_dir, &self.data_dir);
        set(&mut config.resp_addr, &self.resp_addr);
        set(&mut config.http_addr, &self.http_addr);
        set(&mut config.amqp_addr, &self.amqp_addr);
        set(&mut config.node_id, &self.node_id);
        set(&mut config.peers, &self.peers);
        if self.join.is_some() {
            config.join = self.join.clone();
        }
        if self.raft_addr.is_some() {
            config.raft_addr = self.raft_addr;
        }
        if self.restore.is_some() {
            config.restore.clone_from(&self.restore);
        }
        if self.requirepass.is_some() {
            config.requirepass.clone_from(&self.requirepass);
        }
        set(&mut config.max_clients, &self.max_clients);
        set(&mut config.max_payload, &self.max_payload);
        set(&mut config.max_name_len, &self.max_name_len);
        set(&mut config.max_args, &self.max_args);
        set(&mut config.max_batch, &self.max_batch);
        set(&mut config.max_in_flight, &self.max_in_flight);
        set(&mut config.pubsub_output_limit, &self.pubsub_output_limit);
        set(&mut config.client_query_buffer_limit, &self.client_query_buffer_limit);
        set(&mut config.protected_mode, &self.protected_mode);
        set(&mut config.max_holds_per_session, &self.max_holds_per_session);
        set(&mut config.max_waits_per_session, &self.max_waits_per_session);
        set(&mut config.worker_threads, &self.worker_threads);
        set(&mut config.fsync, &self.fsync);
        set(&mut config.fsync_interval_ms, &self.fsync_interval_ms);
        set(&mut config.session_timeout_ms, &self.session_timeout_ms);
        set(&mut config.max_memory, &self.max_memory);
        set(&mut config.queue_flow_limit, &self.queue_flow_limit);
        set(&mut config.script_budget, &self.script_budget);
        set(&mut config.snapshot_every, &self.snapshot_every);
        set(&mut config.election_timeout_ms, &self.election_timeout_ms);
        set(&mut config.snapshot_log_bytes, &self.snapshot_log_bytes);
        for (setting, flag) in [
            (&mut config.tls_resp_addr, self.tls_resp_addr),
            (&mut config.tls_amqp_addr, self.tls_amqp_addr),
            (&mut config.tls_http_addr, self.tls_http_addr),
        ] {
            if flag.is_some() {
                *setting = flag;
            }
        }
        for (setting, flag) in [
            (&mut config.tls_cert, &self.tls_cert),
            (&mut config.tls_key, &self.tls_key),
            (&mut config.tls_ca, &self.tls_ca),
        ] {
            if flag.is_some() {
                setting.clone_from(flag);
            }
        }
        config.tls_peer |= self.tls_peer;
        config.truncate_corrupt |= self.truncate_corrupt;
        config.fault_injection |= self.fault_injection;
        config.validate()?;
        Ok(config)
    }
}

/// A yes/no flag, in Redis's words.
fn yes_no(text: &str) -> Result<bool, String> {
    match text {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => Err(format!("expected yes or no, not {other:?}")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => server(*args).map(|()| ExitCode::SUCCESS),
        Command::Lock { target, command } => {
            client_command(&target, async |client| lock::lock(client, command, target.json).await)
        }
        Command::Sem { target, command } => {
            client_command(&target, async |client| lock::sem(client, command, target.json).await)
        }
        Command::Queue { target, command } => {
            client_command(&target, async |client| queue::queue(client, command, target.json).await)
        }
        Command::Cluster { target, command: cluster::ClusterCommand::Members(command) } => {
            client_command(&target, async |client| membership::cluster(client, command, target.json).await)
        }
        Command::Cluster { target, command: cluster::ClusterCommand::Snapshot { command } } => {
            quiet_logging();
            let credentials = target.credentials();
            tokio_runtime().and_then(|rt| rt.block_on(cluster::snapshot(command, credentials, target.json)))
        }
        Command::Bench { server, args } => {
            tokio_runtime().and_then(|rt| rt.block_on(bench::run(args, &server))).map(|()| ExitCode::SUCCESS)
        }
        Command::Torture(args) => {
            // The AMQP client logs every connection the nemesis breaks; those are expected.
            let level = LevelFilter::ERROR;
            logging::init(
                LogFormat::Text,
                Targets::new().with_default(level).with_target("lapin", LevelFilter::OFF),
            );
            torture::run(*args)
        }
    };
    result.unwrap_or_else(|e| exit::report(&e))
}

/// Connects to the target server and runs one client command.
fn client_command(
    target: &Target,
    command: impl AsyncFnOnce(&turnstile_client::Client) -> anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    quiet_logging();
    tokio_runtime()?.block_on(async {
        let options = turnstile_client::Options { credentials: target.credentials(), ..Default::default() };
        let client = turnstile_client::Client::with_options(&target.server, options).await?;
        command(&client).await
    })
}

/// A client command logs errors only, unless TURNSTILE_LOG is set (then everything down to debug).
fn quiet_logging() {
    let level =
        if std::env::var_os("TURNSTILE_LOG").is_some() { LevelFilter::DEBUG } else { LevelFilter::ERROR };
    logging::init(LogFormat::Text, Targets::new().with_default(level));
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio_runtime_with(0)
}

/// A multi-threaded runtime with `workers` threads; 0 = one per core.
fn tokio_runtime_with(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        builder.worker_threads(workers);
    }
    builder.enable_all().build().context("starting tokio")
}

fn server(args: ServerArgs) -> anyhow::Result<()> {
    // openraft reports every election step at info and some routine races (a message from the
    // term a single node just left) at warn; keep those for debug runs.
    let openraft = if args.log >= LevelFilter::DEBUG { args.log } else { LevelFilter::ERROR };
    let filter = Targets::new().with_default(args.log).with_target("openraft", openraft);
    logging::init(args.log_format, filter);
    let config = args.config()?;
    // Every connection is a file descriptor: take all the process may have.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < config.max_clients as u64 + 64 => {
            tracing::warn!(
                limit,
                max_clients = config.max_clients,
                "file descriptor limit is below max-clients"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not raise the file descriptor limit"),
    }
    tokio_runtime_with(config.worker_threads)?.block_on(async {
        let server = Server::start(config).await?;
        // Scripts and tests read this line to learn the address (port 0 picks a free one).
        let raft = server.raft_addr().map(|addr| format!(" raft={addr}")).unwrap_or_default();
        let tls = server.tls_addrs();
        let tls = [("tls-resp", tls.resp), ("tls-http", tls.http), ("tls-amqp", tls.amqp)]
            .into_iter()
            .filter_map(|(name, addr)| addr.map(|addr| format!(" {name}={addr}")))
            .collect::<String>();
        println!(
            "turnstile {} ready: resp={} http={} amqp={}{raft}{tls}",
            env!("CARGO_PKG_VERSION"),
            server.resp_addr(),
            server.http_addr(),
            server.amqp_addr()
        );
        tracing::info!(resp = %server.resp_addr(), http = %server.http_addr(), amqp = %server.amqp_addr(), "ready");
        if let Some(tls) = server.tls() {
            tokio::spawn(reload_on_hangup(tls));
        }
        server.run(stop_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Reads the TLS certificate, key and CA again on each SIGHUP. New handshakes use them; open
/// connections keep the session they have. A file that cannot be used keeps the old ones.
async fn reload_on_hangup(tls: std::sync::Arc<turnstile_server::ServerTls>) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(e) => {
            return tracing::warn!(error = %e, "cannot listen for SIGHUP: TLS certificates will not reload");
        }
    };
    while hangup.recv().await.is_some() {
        let cert = tls.files().cert.display().to_string();
        match tls.reload() {
            Ok(()) => tracing::info!(%cert, "SIGHUP: reloaded the TLS certificate, key and CA"),
            Err(e) => {
                tracing::error!(%cert, "SIGHUP: TLS certificate not reloaded, keeping the current one: {:#}", anyhow::Error::new(e))
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// clap's own consistency checks over every subcommand (unique names, valid defaults).
    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
