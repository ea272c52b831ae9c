//! Starting and stopping the server: the node, the listener, the router and the ticker.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

use turnstile_core::Command;
use turnstile_raft::{FsyncPolicy, Node, NodeConfig, NodeError, Storage, StorageOptions};
use turnstile_resp::Limits;

use crate::config::{Config, ConfigError, Fsync};
use crate::connection::Connection;
use crate::router::Router;
use crate::shutdown::{self, Shutdown, ShutdownTrigger};
use crate::ticker;

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    pub node: Node,
    pub router: Arc<Router>,
    pub limits: Limits,
    pub stats: Stats,
    pub started: Instant,
    pub resp_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub amqp_addr: SocketAddr,
    /// AMQP users and passwords.
    pub amqp_users: std::collections::BTreeMap<String, String>,
    pub max_clients: usize,
    /// See [`Config::max_memory`]; 0 = no limit.
    pub max_memory: u64,
    pub fsync: Fsync,
    /// Resolves when shutdown begins: HTTP requests parked in a wait end then (RESP connections
    /// get their own copy).
    pub shutdown: Shutdown,
}

impl Shared {
    /// Whether `cmd` is a push that would take stored payloads past the memory limit.
    pub fn over_memory(&self, cmd: &Command) -> bool {
        match cmd {
            Command::Push(push) | Command::Publish(turnstile_core::Publish { push, .. })
                if self.max_memory > 0 =>
            {
                let size = (push.payload.len() + push.properties.len()) as u64;
                self.node.payload_bytes() + size > self.max_memory
            }
            _ => false,
        }
    }
}

/// Counters for INFO and the metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU64,
    /// HTTP connections open now, and accepted in all.
    pub http_connections: AtomicU64,
    pub http_accepted: AtomicU64,
    /// AMQP connections open now.
    pub amqp_connections: AtomicU64,
    /// Connections served (`connections` less `rejected`, counted on its own so that the metric
    /// never appears to go down while a refusal is under way).
    pub accepted: AtomicU64,
    pub connected_clients: AtomicU64,
    pub blocked_clients: AtomicU64,
    pub commands: AtomicU64,
    pub rejected: AtomicU64,
    /// Pushes refused by the memory limit.
    pub rejected_oom: AtomicU64,
    /// Acquires granted at once (grants after a wait are counted by the router).
    pub immediate_grants: AtomicU64,
    /// Waits refused because they would deadlock: the latest few, for the dashboard.
    pub deadlocks: crate::http::RecentDeadlocks,
}

/// Why the server could not start or stopped. The cause of each is its `source`, not part of its
/// text, so that a printer of the whole chain (`{:#}`, the command line's) says it once.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot create data dir {path}")]
    DataDir { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot listen on {addr}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("raft node")]
    Node(#[from] NodeError),
}

/// A started server: listening, with its node leading.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    http_listener: TcpListener,
    amqp_listener: TcpListener,
    shared: Arc<Shared>,
    trigger: ShutdownTrigger,
    shutdown: Shutdown,
    log_runtime: LogRuntime,
}

/// The log's own runtime, one thread: openraft, the batcher and the state machine run there, so
/// their turn on the path of every write never waits in a run queue behind the connections' tasks
/// (with many busy connections that wait, not the fsync, was most of a write's latency).
///
/// Timers only, no I/O driver: the log does no network I/O (a cluster's Raft network will need
/// `enable_io` back, or a runtime of its own), and without the driver an idle log thread sleeps on
/// a condition variable instead of in `epoll_wait`, so waking it for a proposal costs fewer
/// syscalls (measured: a third fewer `epoll_wait`s; a current-thread runtime on a thread of its
/// own measured slower than this one-worker runtime; docs/benchmarks.md).
#[derive(Debug)]
struct LogRuntime(Option<tokio::runtime::Runtime>);

impl LogRuntime {
    fn start() -> std::io::Result<LogRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("turnstile-log")
            .enable_time()
            .build()?;
        Ok(LogRuntime(Some(runtime)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("the log runtime lives as long as the server").handle()
    }
}

impl Drop for LogRuntime {
    fn drop(&mut self) {
        // Dropped from async code (the end of `Server::run`): it must not block.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Server {
    /// Starts the node and binds the listener. Port 0 picks a free port: see [`Server::resp_addr`].
    pub async fn start(config: Config) -> Result<Server, ServerError> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| ServerError::DataDir { path: config.data_dir.clone(), source })?;
        let listener = TcpListener::bind(config.resp_addr)
            .await
            .map_err(|source| ServerError::Bind { addr: config.resp_addr, source })?;
        let resp_addr =
            listener.local_addr().map_err(|source| ServerError::Bind { addr: config.resp_addr, source })?;
        let http_listener = TcpListener::bind(config.http_addr)
            .await
            .map_err(|source| ServerError::Bind { addr: config.http_addr, source })?;
        let http_addr = http_listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr: config.http_addr, source })?;
        let amqp_listener = TcpListener::bind(config.amqp_addr)
            .await
            .map_err(|source| ServerError::Bind { addr: config.amqp_addr, source })?;
        let amqp_addr = amqp_listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr: config.amqp_addr, source })?;
        let fsync = match config.fsync {
            Fsync::Always => FsyncPolicy::Always,
            Fsync::Interval => FsyncPolicy::Interval(Duration::from_millis(config.fsync_interval_ms)),
            Fsync::Never => FsyncPolicy::Never,
        };
        let storage = Storage {
            dir: config.data_dir.clone(),
            options: StorageOptions {
                fsync,
                truncate_corrupt: config.truncate_corrupt,
                ..StorageOptions::default()
            },
        };
        let node_config = NodeConfig {
            node_id: 1,
            max_batch: config.max_batch,
            max_in_flight: config.max_in_flight,
            storage: Some(storage),
            snapshot_every: config.snapshot_every,
            snapshot_log_bytes: config.snapshot_log_bytes,
        };
        let log_runtime =
            LogRuntime::start().map_err(|e| ServerError::Node(NodeError::Fatal(e.to_string())))?;
        let node = log_runtime
            .handle()
            .spawn(Node::start(node_config))
            .await
            .map_err(|e| ServerError::Node(NodeError::Fatal(e.to_string())))??;
        // No connection outlives a restart: end the sessions of the previous run (their holds and
        // deliveries stay under their leases, which the node refreshed when it started).
        node.propose(Command::DetachSessions).await?;
        let limits =
            Limits { max_bulk_len: config.max_payload, max_args: config.max_args, ..Limits::default() };
        let (trigger, shutdown) = shutdown::channel();
        let shared = Arc::new(Shared {
            node,
            router: Arc::new(Router::default()),
            limits,
            stats: Stats::default(),
            started: Instant::now(),
            resp_addr,
            http_addr,
            amqp_addr,
            amqp_users: config.amqp_users.clone(),
            max_clients: config.max_clients,
            max_memory: config.max_memory,
            fsync: config.fsync,
            shutdown: shutdown.clone(),
        });
        Ok(Server { listener, http_listener, amqp_listener, shared, trigger, shutdown, log_runtime })
    }

    pub fn resp_addr(&self) -> SocketAddr {
        self.shared.resp_addr
    }

    /// Where the HTTP API, `/metrics` and the dashboard are served.
    pub fn http_addr(&self) -> SocketAddr {
        self.shared.http_addr
    }

    /// Where the AMQP 0-9-1 listener is.
    pub fn amqp_addr(&self) -> SocketAddr {
        self.shared.amqp_addr
    }

    /// Serves until `stop` resolves, then shuts down gracefully: stop accepting, let every
    /// connection close its session, stop the node.
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<(), ServerError> {
        let Server { listener, http_listener, amqp_listener, shared, trigger, shutdown, log_runtime } = self;
        let effects = shared.node.take_effects().expect("effects are taken once, here");
        let router = tokio::spawn({
            let (router, shutdown) = (shared.router.clone(), shutdown.clone());
            async move { router.run(effects, shutdown).await }
        });
        let ticker = tokio::spawn(ticker::run(shared.node.clone(), shutdown.clone()));
        let http = tokio::spawn(crate::http::serve(http_listener, shared.clone(), shutdown.clone()));

        // Each connection holds a clone of `done`; when all are dropped, every connection is over.
        let (done, mut all_done) = mpsc::channel::<()>(1);
        let accept = accept_loop(&listener, &shared, &shutdown, &done);
        let amqp_accept = crate::amqp::accept_loop(&amqp_listener, &shared, &shutdown, &done);
        tokio::select! {
            _ = async { tokio::join!(accept, amqp_accept) } => {}
            () = stop => tracing::info!("shutting down"),
        }
        trigger.trigger();
        drop(listener);
        drop(amqp_listener);
        drop(done);
        let _ = all_done.recv().await;
        let _ = ticker.await;
        let _ = http.await;
        shared.node.shutdown().await?;
        let _ = router.await;
        drop(log_runtime);
        Ok(())
    }
}

async fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    shutdown: &Shutdown,
    done: &mpsc::Sender<()>,
) {
    let slots = Arc::new(Semaphore::new(shared.max_clients));
    let mut next_id = 0u64;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        shared.stats.connections.fetch_add(1, Ordering::Relaxed);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, "refused: max number of clients reached");
            tokio::spawn(refuse(stream));
            continue;
        };
        shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let connection = Connection::new(stream, next_id, shared.clone());
        let (shared, shutdown, done) = (shared.clone(), shutdown.clone(), done.clone());
        tokio::spawn(async move {
            shared.stats.connected_clients.fetch_add(1, Ordering::Relaxed);
            connection.serve(shutdown).await;
            shared.stats.connected_clients.fetch_sub(1, Ordering::Relaxed);
            drop((slot, done));
        });
    }
}

async fn refuse(mut stream: TcpStream) {
    let _ = stream.write_all(b"-ERR max number of clients reached\r\n").await;
    let _ = stream.shutdown().await;
}
