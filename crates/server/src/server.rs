//! Starting and stopping the server: the listeners, the node, the router and the ticker.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};

use turnstile_core::{HostId, Millis};
use turnstile_raft::{
    Backup, Clock, Cluster, DataDirMeta, Deadline, FsyncPolicy, Joining, Node, NodeConfig, NodeError,
    RestoreError, Storage, StorageError, StorageOptions, check_empty, format_cluster_id, open_meta,
    random_cluster_id,
};

use turnstile_tls::{PeerTls, ServerTls};

use crate::clients::Clients;
use crate::config::{Config, ConfigError, Fsync};
use crate::listener::{Listener, Protocol};
use crate::pubsub::PubSub;
use crate::router::Router;
use crate::session::Limits;
use crate::shutdown::{self, Shutdown, ShutdownTrigger};
use crate::stats::Stats;
use crate::{host, ticker};

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    pub node: Node,
    pub router: Arc<Router>,
    /// This node's pub/sub subscribers (the router delivers published messages to them).
    pub pubsub: Arc<PubSub>,
    /// This node's RESP connections, for CLIENT LIST and CLIENT KILL.
    pub clients: Clients,
    /// `pubsub-output-limit`: the bytes of messages one subscriber may have waiting.
    pub pubsub_output_limit: u64,
    /// `client-query-buffer-limit`: the bytes of unparsed input one RESP client may have buffered.
    pub client_query_buffer_limit: u64,
    /// `protected-mode`: without authentication, only loopback clients are served (`listener.rs`).
    pub protected_mode: bool,
    /// `max-holds-per-session` and `max-waits-per-session`, carried in the commands they concern.
    pub session_limits: turnstile_core::SessionLimits,
    pub limits: Limits,
    pub stats: Arc<Stats>,
    pub started: Instant,
    pub resp_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub amqp_addr: SocketAddr,
    /// Where the Raft listener is, in a cluster.
    pub raft_addr: Option<SocketAddr>,
    /// Where the TLS listeners are, those configured.
    pub tls_addrs: TlsAddrs,
    /// The cluster this node belongs to, as kept in its data dir (backups carry it).
    pub cluster_id: u64,
    /// AMQP users and passwords.
    pub amqp_users: std::collections::BTreeMap<String, String>,
    /// The users of every protocol (see `auth.rs`).
    pub users: Arc<crate::auth::Users>,
    /// One per connection open, over every protocol: `max-clients` of them.
    pub client_slots: Arc<Semaphore>,
    /// The last connection id given out (`CLIENT ID`).
    pub next_client_id: AtomicU64,
    pub fsync: Fsync,
    /// `fault-injection`: whether the HTTP listener serves the fault hooks (tests only).
    pub fault_injection: bool,
    /// This process, as the host of the sessions of its connections (see `host.rs`).
    pub host: HostId,
    /// `session-timeout-ms`: how long the sessions of this process outlive its keep-alives.
    pub session_timeout: Millis,
    /// Resolves when shutdown begins: HTTP requests parked in a wait end then (RESP connections
    /// get their own copy).
    pub shutdown: Shutdown,
}

/// How long a start waits to read the users `ACL SETUSER` changed (see `Server::start`).
const USERS_FIRST_READ: std::time::Duration = std::time::Duration::from_secs(2);

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
    /// The data dir's meta file: of a newer format, damaged, or the dir is locked.
    #[error("cannot open the data dir")]
    DataDirMeta(#[source] StorageError),
    #[error("cannot restore from {path}")]
    Restore { path: std::path::PathBuf, source: RestoreError },
    #[error("data dir {dir} belongs to cluster {ours}, but {member} (join) is in cluster {theirs}")]
    OtherCluster { dir: std::path::PathBuf, ours: String, member: String, theirs: String },
    #[error("raft node")]
    Node(#[from] NodeError),
    #[error("TLS")]
    Tls(#[from] turnstile_tls::TlsError),
}

/// The addresses of the TLS listeners; each `None` when not configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsAddrs {
    pub resp: Option<SocketAddr>,
    pub amqp: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
}

/// A started server: listening, with its node leading.
#[derive(Debug)]
pub struct Server {
    resp: Listener,
    http: Listener,
    amqp: Listener,
    tls_resp: Option<Listener>,
    tls_http: Option<Listener>,
    tls_amqp: Option<Listener>,
    /// The certificate the TLS listeners (and the node's peer transport) present.
    tls: Option<Arc<ServerTls>>,
    shared: Arc<Shared>,
    trigger: ShutdownTrigger,
    shutdown: Shutdown,
    log_runtime: LogRuntime,
}

/// The log's own runtime, one thread: openraft, the batcher and the state machine run there, so
/// their turn on the path of every write never waits in a run queue behind the connections' tasks
/// (with many busy connections that wait, not the fsync, was most of a write's latency).
///
/// Timers only, no I/O driver, for a single node: its log does no network I/O, and without the driver an idle log thread sleeps on
/// a condition variable instead of in `epoll_wait`, so waking it for a proposal costs fewer
/// syscalls (measured: a third fewer `epoll_wait`s; a current-thread runtime on a thread of its
/// own measured slower than this one-worker runtime; docs/benchmarks.md). A node of a cluster
/// talks to its peers from here, so it gets the I/O driver.
#[derive(Debug)]
struct LogRuntime(Option<tokio::runtime::Runtime>);

impl LogRuntime {
    fn start(network: bool) -> std::io::Result<LogRuntime> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(1).thread_name("turnstile-log").enable_time();
        if network {
            builder.enable_io();
        }
        let runtime = builder.build()?;
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

/// How long a joining node waits to reach the member it was given.
const JOIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Reaches the member a joining node was given: the handshake that tells it the cluster's id.
async fn join_handshake(member: &str, id: u64, tls: Option<&PeerTls>) -> Result<Joining, NodeError> {
    Joining::connect(member, id, tls, Deadline::after(JOIN_CONNECT_TIMEOUT))
        .await
        .map_err(|e| NodeError::Unavailable(format!("cannot reach {member} to join: {e}")))
}

/// Asks the member to have this node added, until it is or [`JOIN_TIMEOUT`] has passed. A
/// refusal that may pass (no leader yet, an election, another membership change in progress) is
/// retried; one that will not (the id is taken or retired) ends the start.
async fn join_cluster(join: &Joining, id: u64, raft_addr: String) -> Result<(), NodeError> {
    let deadline = Deadline::after(JOIN_TIMEOUT);
    loop {
        let outcome = join
            .add(id, raft_addr.clone(), deadline)
            .await
            .map_err(|e| NodeError::Unavailable(format!("joining failed: {e}")))?;
        match outcome {
            Ok(_) => return Ok(()),
            Err(e @ (NodeError::NotLeader { .. } | NodeError::Unavailable(_)))
                if tokio::time::Instant::now() + JOIN_RETRY < deadline.at =>
            {
                tracing::info!(error = %e, "not added yet; asking again");
                tokio::time::sleep(JOIN_RETRY).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The pause between a joining node's requests to be added.
const JOIN_RETRY: Duration = Duration::from_millis(500);

/// How long a joining node waits to be added: it is sent the whole log (or a snapshot) first.
const JOIN_TIMEOUT: Duration = Duration::from_secs(120);

impl Server {
    /// Binds every listener, then opens the data dir and starts the node. Port 0 picks a free
    /// port: see [`Server::resp_addr`]. Nothing is created on disk unless every listener is bound.
    pub async fn start(config: Config) -> Result<Server, ServerError> {
        Server::start_with_clock(config, Clock::system()).await
    }

    /// [`Server::start`] with the clock the leader stamps entries with (and reads and ticks
    /// use): tests pass a manual one and advance it instead of sleeping.
    pub async fn start_with_clock(config: Config, clock: Clock) -> Result<Server, ServerError> {
        config.validate()?;
        // Before any entry is applied: a script in the log must run the same on every start.
        turnstile_script::install();
        // A backup to restore is checked whole, and the data dir found empty, before anything is
        // bound or created: a refused restore leaves no trace.
        let restore = match &config.restore {
            Some(path) => {
                let refused = |source| ServerError::Restore { path: path.clone(), source };
                let backup = Backup::read(path).map_err(refused)?;
                check_empty(&config.data_dir).map_err(refused)?;
                Some((path, backup))
            }
            None => None,
        };
        // The certificate files are read before anything is bound: a bad one refuses the start,
        // naming the file.
        let tls = config.tls_files().map(ServerTls::load).transpose()?.map(Arc::new);
        let peer_tls = match (&tls, config.tls_peer) {
            (Some(tls), true) => Some(PeerTls::new(tls.clone())?),
            _ => None,
        };
        let bound = Bound::bind(&config).await?;
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| ServerError::DataDir { path: config.data_dir.clone(), source })?;
        // A node that joins learns the cluster id from the member it was given (its welcome); the
        // membership comes from the leader once this node is added. A data dir that already
        // belongs to a cluster knows both: a joined node restarts without that member, which may
        // have left the cluster since (it asks again below only if it never was added).
        let known = DataDirMeta::read(&config.data_dir).map_err(ServerError::DataDirMeta)?.is_some();
        let joining = match &config.join {
            Some(member) if !known => Some(join_handshake(member, config.node_id, peer_tls.as_ref()).await?),
            _ => None,
        };
        let meta = match restore {
            Some((path, backup)) => install(&config, path, &backup)?,
            None => data_dir_meta(&config, joining.as_ref())?,
        };
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
            node_id: config.node_id,
            max_batch: config.max_batch,
            max_in_flight: config.max_in_flight,
            storage: Some(storage),
            snapshot_every: config.snapshot_every,
            election_timeout_ms: config.election_timeout_ms,
            snapshot_log_bytes: config.snapshot_log_bytes,
            clock,
        };
        let tls_addrs = bound.tls_addrs();
        let log_runtime = LogRuntime::start(bound.raft.is_some())
            .map_err(|e| ServerError::Node(NodeError::Fatal(e.to_string())))?;
        let raft_addr = bound.raft.as_ref().map(|(_, addr)| *addr);
        let started = match bound.raft {
            None => log_runtime.handle().spawn(Node::start(node_config)),
            Some((listener, _)) => {
                let cluster = Cluster {
                    peers: match &joining {
                        Some(_) => std::collections::BTreeMap::new(),
                        None => config.peers.iter().map(|(&id, addr)| (id, addr.to_string())).collect(),
                    },
                    cluster_id: meta.cluster_id,
                    listener,
                    // Sessions belong to the cluster: those of a dead node's connections live
                    // on until their host's timeout, for their clients to resume elsewhere.
                    on_leading: vec![],
                    tls: peer_tls.clone(),
                };
                log_runtime.handle().spawn(Node::start_in_cluster(node_config, cluster))
            }
        };
        let node = started.await.map_err(|e| ServerError::Node(NodeError::Fatal(e.to_string())))??;
        if let (Some(member), Some(raft_addr)) = (&config.join, config.raft_addr) {
            let id = config.node_id;
            // A learner asks again too: its promotion to voter may have been cut short.
            if !node.local_cluster_status().members.iter().any(|m| m.id == id && m.role != "learner") {
                let join = match joining {
                    Some(join) => join,
                    None => {
                        let join = join_handshake(member, id, peer_tls.as_ref()).await?;
                        same_cluster(&config, &meta, member, &join)?;
                        join
                    }
                };
                tracing::info!(id, %raft_addr, "asking to join the cluster; answered once this node has caught up");
                join_cluster(&join, id, raft_addr.to_string()).await?;
                tracing::info!(id, "joined the cluster as a voter");
            }
        }
        // The sessions of a previous run live on as a dead node's do in a cluster: until their
        // host's timeout (counted again from this start), for their clients to resume them; then
        // they close, releasing what they held and returning their deliveries. (Detaching them at
        // once kept a delivery with no session under its lease: 30 minutes for AMQP's.)
        // Before any connection is served: a session is never opened by a host the log does not
        // know yet (`OpenSession` would add it all the same, with the same timeout).
        let host = HostId(host::random());
        let timeout = config.session_timeout_ms;
        match node.propose(host::keep_alive(host, timeout)).await {
            Ok(_) => {}
            // A node of a cluster may start before there is a leader, or as a follower (which
            // serves no session until it can forward); its task tries again.
            Err(e) if config.in_cluster() => {
                tracing::debug!(%host, error = %e, "first keep-alive not applied")
            }
            Err(e) => return Err(e.into()),
        }
        let limits = Limits {
            max_payload: config.max_payload,
            max_name_len: config.max_name_len,
            max_args: config.max_args,
            max_memory: config.max_memory,
            max_clients: config.max_clients,
            script_budget: config.script_budget,
            queue_flow_limit: config.queue_flow_limit,
        };
        let users = Arc::new(crate::auth::Users::from_config(&config)?);
        let (trigger, shutdown) = shutdown::channel();
        let stats = Arc::new(Stats::default());
        let pubsub = Arc::new(PubSub::new(stats.clone(), node.clock().clone()));
        let shared = Arc::new(Shared {
            router: Arc::new(Router::new(stats.clone(), pubsub.clone(), users.clone())),
            node,
            pubsub,
            clients: Clients::default(),
            pubsub_output_limit: config.pubsub_output_limit,
            client_query_buffer_limit: config.client_query_buffer_limit,
            protected_mode: config.protected_mode,
            session_limits: turnstile_core::SessionLimits {
                max_holds: config.max_holds_per_session,
                max_waits: config.max_waits_per_session,
            },
            client_slots: Arc::new(Semaphore::new(limits.max_clients)),
            limits,
            stats,
            started: Instant::now(),
            resp_addr: bound.resp_addr,
            http_addr: bound.http_addr,
            amqp_addr: bound.amqp_addr,
            raft_addr,
            tls_addrs,
            cluster_id: meta.cluster_id,
            amqp_users: config.amqp_users.clone(),
            users,
            next_client_id: AtomicU64::new(0),
            fsync: config.fsync,
            fault_injection: config.fault_injection,
            host,
            session_timeout: timeout,
            shutdown: shutdown.clone(),
        });
        // The users `ACL SETUSER` changed, before any client can log in: a user deleted or changed
        // there must not log in with what the config file says. A node of a cluster that has no
        // leader yet cannot read; `auth::follow` reads as soon as it can.
        match tokio::time::timeout(USERS_FIRST_READ, shared.node.read(|s| s.acl_layer().clone())).await {
            Ok(Ok(layer)) => shared.users.reload(&layer),
            _ => tracing::info!(
                "users changed by ACL SETUSER not read yet; the config file's apply until they are"
            ),
        }
        Ok(Server {
            resp: Listener::new(bound.resp, Protocol::Resp, shared.clone()),
            http: Listener::new(bound.http, Protocol::Http, shared.clone()),
            amqp: Listener::new(bound.amqp, Protocol::Amqp, shared.clone()),
            tls_resp: tls_listener(bound.tls_resp, Protocol::Resp, &shared, &tls),
            tls_http: tls_listener(bound.tls_http, Protocol::Http, &shared, &tls),
            tls_amqp: tls_listener(bound.tls_amqp, Protocol::Amqp, &shared, &tls),
            tls,
            shared,
            trigger,
            shutdown,
            log_runtime,
        })
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

    /// Where the other nodes of the cluster reach this one; `None` for a single node.
    pub fn raft_addr(&self) -> Option<SocketAddr> {
        self.shared.raft_addr
    }

    /// Where the TLS listeners are, those configured.
    pub fn tls_addrs(&self) -> TlsAddrs {
        self.shared.tls_addrs
    }

    /// The certificate of the TLS listeners and the peer transport, to reload (`SIGHUP`).
    pub fn tls(&self) -> Option<Arc<ServerTls>> {
        self.tls.clone()
    }

    /// Serves until `stop` resolves, then shuts down gracefully: stop accepting, let every
    /// connection close its session, stop the node.
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<(), ServerError> {
        let Server {
            resp,
            http,
            amqp,
            tls_resp,
            tls_http,
            tls_amqp,
            tls: _,
            shared,
            trigger,
            shutdown,
            log_runtime,
        } = self;
        crate::listener::warn_if_exposed(&shared);
        let router = shared.router.install(&shared.node, shutdown.clone());
        let ticker = tokio::spawn(ticker::run(shared.node.clone(), shutdown.clone()));
        let users = tokio::spawn(crate::auth::follow(shared.clone(), shutdown.clone()));
        let keep_alive = tokio::spawn(host::run(
            shared.node.clone(),
            shared.host,
            shared.session_timeout,
            shutdown.clone(),
        ));
        let http = tokio::spawn(crate::http::serve(http, shared.clone(), shutdown.clone()));
        let https =
            tls_http.map(|https| tokio::spawn(crate::http::serve(https, shared.clone(), shutdown.clone())));

        // Each connection holds a clone of `done`; when all are dropped, every connection is over.
        let (done, mut all_done) = mpsc::channel::<()>(1);
        let serve_resp =
            resp.serve_each(&done, |admitted| crate::resp::serve(admitted, shared.clone(), shutdown.clone()));
        let serve_amqp =
            amqp.serve_each(&done, |admitted| crate::amqp::serve(admitted, shared.clone(), shutdown.clone()));
        let serve_tls_resp = serve_optional(tls_resp.as_ref(), &done, |admitted| {
            crate::resp::serve(admitted, shared.clone(), shutdown.clone())
        });
        let serve_tls_amqp = serve_optional(tls_amqp.as_ref(), &done, |admitted| {
            crate::amqp::serve(admitted, shared.clone(), shutdown.clone())
        });
        tokio::select! {
            _ = async { tokio::join!(serve_resp, serve_amqp, serve_tls_resp, serve_tls_amqp) } => {}
            () = stop => tracing::info!("shutting down"),
        }
        trigger.trigger();
        drop((resp, amqp, tls_resp, tls_amqp));
        drop(done);
        let _ = all_done.recv().await;
        let _ = ticker.await;
        let _ = users.await;
        let _ = keep_alive.await;
        let _ = http.await;
        if let Some(https) = https {
            let _ = https.await;
        }
        shared.node.shutdown().await?;
        let _ = router.await;
        drop(log_runtime);
        Ok(())
    }
}

/// The data dir's meta, written at its first start: a node of a new cluster takes the id every
/// node computes alike from the peers list, a joining node the one of the cluster it joins, a
/// single node a random one. Later starts keep the stored id, whatever the peers list says now
/// (nodes are added and removed after formation); a node told to join another cluster than the
/// one its data dir belongs to is refused.
fn data_dir_meta(config: &Config, joining: Option<&Joining>) -> Result<DataDirMeta, ServerError> {
    let from_peers = (!config.peers.is_empty()).then(|| config.cluster_id());
    let first = joining.map(Joining::cluster_id).or(from_peers);
    let meta = open_meta(&config.data_dir, || first.map_or_else(random_cluster_id, Ok))
        .map_err(ServerError::DataDirMeta)?;
    if let (Some(join), Some(member)) = (joining, &config.join) {
        same_cluster(config, &meta, member, join)?;
    }
    if let Some(from_peers) = from_peers.filter(|id| *id != meta.cluster_id) {
        tracing::warn!(
            cluster_id = %format_cluster_id(meta.cluster_id),
            peers_would_give = %format_cluster_id(from_peers),
            "the cluster id in the data dir is not the one the peers list gives (the list changed since the \
             cluster formed, or it was restored from a backup); keeping the stored one"
        );
    }
    tracing::info!(dir = %config.data_dir.display(), cluster_id = %format_cluster_id(meta.cluster_id), "data dir");
    Ok(meta)
}

/// Refuses to join `member`'s cluster with a data dir of another.
fn same_cluster(
    config: &Config,
    meta: &DataDirMeta,
    member: &str,
    join: &Joining,
) -> Result<(), ServerError> {
    if join.cluster_id() == meta.cluster_id {
        return Ok(());
    }
    Err(ServerError::OtherCluster {
        dir: config.data_dir.clone(),
        ours: format_cluster_id(meta.cluster_id),
        member: member.to_owned(),
        theirs: format_cluster_id(join.cluster_id()),
    })
}

/// Makes the (empty) data dir that of a new cluster of one voter, this node, its first snapshot
/// the backup at `path`.
fn install(config: &Config, path: &std::path::Path, backup: &Backup) -> Result<DataDirMeta, ServerError> {
    // With peers (this node alone), its Raft address is what the nodes that join it will dial.
    let raft_addr = config.peers.get(&config.node_id).map(ToString::to_string);
    let meta = backup
        .install(&config.data_dir, config.node_id, raft_addr.as_deref())
        .map_err(|source| ServerError::Restore { path: path.to_owned(), source })?;
    let header = backup.header();
    tracing::info!(
        file = %path.display(),
        dir = %config.data_dir.display(),
        index = header.index,
        from_cluster = %format_cluster_id(header.cluster_id),
        cluster_id = %format_cluster_id(meta.cluster_id),
        "restored a backup into a new data dir, under a new cluster id"
    );
    Ok(meta)
}

/// The listeners, bound before anything else is done.
struct Bound {
    /// The Raft listener of a node of a cluster, as a std listener: the node serves it on the
    /// log's runtime, not on the one it was bound on.
    raft: Option<(std::net::TcpListener, SocketAddr)>,
    resp: TcpListener,
    resp_addr: SocketAddr,
    http: TcpListener,
    http_addr: SocketAddr,
    amqp: TcpListener,
    amqp_addr: SocketAddr,
    tls_resp: Option<(TcpListener, SocketAddr)>,
    tls_http: Option<(TcpListener, SocketAddr)>,
    tls_amqp: Option<(TcpListener, SocketAddr)>,
}

impl Bound {
    async fn bind(config: &Config) -> Result<Bound, ServerError> {
        let (resp, resp_addr) = bind(config.resp_addr).await?;
        let (http, http_addr) = bind(config.http_addr).await?;
        let (amqp, amqp_addr) = bind(config.amqp_addr).await?;
        let raft = match config.raft_listen_addr() {
            Some(addr) => {
                let (listener, bound) = bind(addr).await?;
                Some((listener.into_std().map_err(|source| ServerError::Bind { addr, source })?, bound))
            }
            None => None,
        };
        let tls_resp = bind_optional(config.tls_resp_addr).await?;
        let tls_http = bind_optional(config.tls_http_addr).await?;
        let tls_amqp = bind_optional(config.tls_amqp_addr).await?;
        Ok(Bound { raft, resp, resp_addr, http, http_addr, amqp, amqp_addr, tls_resp, tls_http, tls_amqp })
    }

    fn tls_addrs(&self) -> TlsAddrs {
        let addr = |bound: &Option<(TcpListener, SocketAddr)>| bound.as_ref().map(|(_, addr)| *addr);
        TlsAddrs { resp: addr(&self.tls_resp), amqp: addr(&self.tls_amqp), http: addr(&self.tls_http) }
    }
}

/// [`Listener::serve_each`] on a listener that may not be configured (then it never ends).
async fn serve_optional<F, Fut>(listener: Option<&Listener>, done: &mpsc::Sender<()>, serve: F)
where
    F: Fn(crate::listener::Admitted) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    match listener {
        Some(listener) => listener.serve_each(done, serve).await,
        None => std::future::pending().await,
    }
}

async fn bind_optional(addr: Option<SocketAddr>) -> Result<Option<(TcpListener, SocketAddr)>, ServerError> {
    match addr {
        Some(addr) => Ok(Some(bind(addr).await?)),
        None => Ok(None),
    }
}

/// A TLS listener, when one is bound (a TLS listener is bound only with a certificate: the
/// config says so before anything is).
fn tls_listener(
    bound: Option<(TcpListener, SocketAddr)>,
    protocol: Protocol,
    shared: &Arc<Shared>,
    tls: &Option<Arc<ServerTls>>,
) -> Option<Listener> {
    let (listener, _) = bound?;
    let tls = tls.clone().expect("validate refuses a TLS listener without a certificate");
    Some(Listener::with_tls(listener, protocol, shared.clone(), tls))
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServerError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| ServerError::Bind { addr, source })?;
    Ok((listener, bound))
}
