//! Server configuration: defaults, then the TOML file, then `TURNSTILE_*` environment variables
//! and command-line flags (the command line applies those last two, through clap).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Everything the server can be told. Field names are the TOML keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Where the RESP (Redis protocol) listener binds.
    pub resp_addr: SocketAddr,
    /// Where the HTTP listener binds: JSON API, `/metrics`, health checks and the dashboard.
    /// Admin actions on the dashboard are offered only to loopback clients.
    pub http_addr: SocketAddr,
    /// Where the AMQP 0-9-1 (RabbitMQ protocol) listener binds.
    pub amqp_addr: SocketAddr,
    /// AMQP users and their passwords (PLAIN and AMQPLAIN). As in RabbitMQ, `guest` may log in
    /// only from a loopback address.
    pub amqp_users: BTreeMap<String, String>,
    /// This node's id in the cluster; stable across restarts, never reused for another node.
    pub node_id: u64,
    /// Where this node listens for the other nodes of its cluster (Raft's transport). Unset: the
    /// address `peers` gives this node. Without `peers` there is no cluster and it must be unset.
    pub raft_addr: Option<SocketAddr>,
    /// The voters of a new cluster, as text: `1=10.0.0.1:7381,2=10.0.0.2:7381,3=10.0.0.3:7381`
    /// (each node's id and Raft address; the same list on every node, this node among them).
    /// Empty: a single node, a cluster of one voter.
    #[serde(deserialize_with = "peers_from_text")]
    pub peers: BTreeMap<u64, SocketAddr>,
    /// The Raft address (`HOST:PORT`) of any node of a running cluster this node joins: it asks
    /// to be added (a learner until it has caught up, then a voter) under `node-id`, reached at
    /// `raft-addr`. Needs `raft-addr`; excludes `peers`. Kept on restarts: a node that is already
    /// a member only learns the cluster id from it.
    pub join: Option<String>,
    /// Where the Raft log (`log/`), snapshots (`snapshots/`), the `LOCK` file and `turnstile.meta`
    /// (the dir's format version and cluster id) live.
    pub data_dir: PathBuf,
    /// A backup (`turnstile cluster snapshot save`) to start a new cluster of one voter, this
    /// node, from: installed as the first snapshot of `data-dir`, which must be new or empty, under
    /// a new cluster id. Alone, or with `peers` naming only this node so that others can `join`
    /// it. Only for that first start: a restored node restarts without it.
    pub restore: Option<PathBuf>,
    /// Connections open at once, over every protocol; more are refused (RESP: `-ERR max number
    /// of clients reached`; AMQP: `connection.close` 530; HTTP: 503).
    pub max_clients: usize,
    /// Largest message body or value a client may send, in bytes, on every protocol (RESP: any
    /// bulk string; HTTP: a body over this plus 64 KiB is refused before it is read).
    pub max_payload: usize,
    /// Longest lock, queue, key or exchange name, in bytes.
    pub max_name_len: usize,
    /// Most arguments in one RESP command.
    pub max_args: usize,
    /// Most commands coalesced into one log entry.
    pub max_batch: usize,
    /// When a write counts as done: `always` (on disk before the reply; group commit keeps it
    /// fast), `interval` (written before the reply, on disk within `fsync-interval-ms`: a power
    /// loss can lose that much), `never` (the kernel decides when). Under both, the log is also
    /// synced in the background every 4 MiB written, so no segment roll waits for a whole segment.
    pub fsync: Fsync,
    pub fsync_interval_ms: u64,
    /// How long a session outlives the server process that holds its connection, when that
    /// process dies or is cut off: the client has this long to resume the session on another
    /// node (`SESSION RESUME`) before it closes, its holds released and its deliveries returned.
    /// Each process proposes a keep-alive every third of it. A clean disconnect closes a session
    /// at once, whatever this says.
    pub session_timeout_ms: u64,
    /// Pushes are refused with `-OOM` once stored payloads (messages and values) pass this many
    /// bytes; 0 = no limit. Other commands keep working, so consumers can drain.
    pub max_memory: u64,
    /// Flow control for queue publishers: once a queue that has a consumer, a waiting pop or a
    /// delivery not yet acked of another connection holds this many ready messages, connections
    /// publishing or pushing to it are not read until its consumers have taken it below half as many. Nothing is refused: the
    /// publisher waits, as RabbitMQ's "flow" state makes it wait. 0 = off. The default keeps the
    /// wait a message spends in such a queue to about 80 ms at 12,000 messages a second (the
    /// consumers of `turnstile bench amqp` on a 2-core machine), under RabbitMQ's quorum queue
    /// tail; a queue nobody consumes is never throttled (`max-memory` bounds it).
    pub queue_flow_limit: u64,
    /// Lua VM instructions one script (`EVAL`) may run before it is stopped and its writes are
    /// undone. The node that proposes a script puts its own setting in the log entry, so nodes
    /// set differently still agree on every verdict.
    pub script_budget: u64,
    /// A snapshot is taken every this many log entries; the log before it is then deleted.
    pub snapshot_every: u64,
    /// In a cluster: a follower that hears nothing from the leader for between this and twice
    /// this (at random) starts an election; the leader sends heartbeats five times as often.
    /// A leader's death is noticed after its lease (twice this) and an election timeout, so
    /// failover takes about three times this. Raise it where the nodes' clocks or schedulers
    /// stall for longer (busy machines, debug builds).
    pub election_timeout_ms: u64,
    /// A snapshot is also taken once the log since the last one holds this many bytes and at
    /// least as many as that snapshot (so a restart replays at most about a snapshot's worth of
    /// log, however large the entries); 0 = by entry count only.
    pub snapshot_log_bytes: u64,
    /// Operator's choice at start: cut the log at a corrupt record (losing what follows) instead
    /// of refusing to start.
    pub truncate_corrupt: bool,
    /// For tests only, never in production: serve the fault hooks (`PUT /api/faults/fsync-delay`,
    /// which slows every fsync of the journal) that a torture run uses to play a slow disk.
    /// Off, those paths are unknown like any other (404).
    pub fault_injection: bool,
    /// Threads that run connections; 0 = one per core. The log (openraft, the batcher, the state
    /// machine) runs on a thread of its own besides these, and the journal on another.
    pub worker_threads: usize,
    /// Most log entries proposed and not yet applied at once. While they are all in flight,
    /// new commands queue up and form a bigger next entry.
    pub max_in_flight: usize,
    /// Most bytes of pub/sub messages waiting to be written to one subscriber (Redis's hard
    /// `client-output-buffer-limit` for pub/sub clients, 32 MiB): a subscriber that reads slower
    /// than messages come is disconnected past it, rather than letting the server's memory grow.
    pub pubsub_output_limit: u64,
    /// Most bytes of unparsed input one RESP connection may have buffered (a request not yet
    /// complete, and the pipelined ones behind it): a client past it is closed (Redis's
    /// `client-query-buffer-limit`, 1 GiB).
    pub client_query_buffer_limit: u64,
    /// Most holds one session may have (taken without `KEEP`, or waited for); an acquire past
    /// it is refused. 0 = no limit.
    pub max_holds_per_session: u32,
    /// Most waits (acquires and pops waiting in line) one session may have at once; a command
    /// that may wait past it is refused. 0 = no limit.
    pub max_waits_per_session: u32,
    /// Redis's protected mode: while no authentication is configured (no `requirepass`, no
    /// `[users]`), connections from other hosts than this one are answered with an error and
    /// closed (RESP `-DENIED`, AMQP 403, HTTP 403). AMQP is exempt when `[amqp-users]` names a
    /// user other than `guest`: every AMQP login then needs a password the operator chose.
    /// `true`/`false`, or Redis's `"yes"`/`"no"`.
    #[serde(deserialize_with = "yes_no")]
    pub protected_mode: bool,
    /// Where a RESP listener under TLS binds (Redis's `tls-port`); unset: none. It serves the
    /// same commands as `resp-addr`, which stays open beside it.
    pub tls_resp_addr: Option<SocketAddr>,
    /// Where an AMQP listener under TLS (AMQPS) binds; unset: none.
    pub tls_amqp_addr: Option<SocketAddr>,
    /// Where an HTTP listener under TLS (HTTPS) binds; unset: none.
    pub tls_http_addr: Option<SocketAddr>,
    /// PEM file: the certificate chain the TLS listeners (and, with `tls-peer`, this node to its
    /// peers) present, its own certificate first. Read again on `SIGHUP`.
    pub tls_cert: Option<PathBuf>,
    /// PEM file: the private key of `tls-cert`. Read again on `SIGHUP`.
    pub tls_key: Option<PathBuf>,
    /// PEM file: CA certificates. Given, every TLS client must present a certificate one of them
    /// signed (mutual TLS), and its common name is known to the server. Read again on `SIGHUP`.
    pub tls_ca: Option<PathBuf>,
    /// The node-to-node transport under mutual TLS: each node presents `tls-cert` and accepts
    /// only peers whose certificate `tls-ca` signed, and a dialed node's certificate must name
    /// the host of its Raft address. Every node of a cluster must agree on it.
    pub tls_peer: bool,
    /// The `default` user's password (Redis's `requirepass`): set, a client must authenticate
    /// (`AUTH`, HTTP Basic/Bearer, AMQP PLAIN) before anything but the handshake.
    pub requirepass: Option<String>,
    /// Users of every protocol (RESP, AMQP, HTTP), by name: `[users.alice]` tables. With any
    /// user or `requirepass`, authentication is required. `ACL SETUSER` / `DELUSER` change this
    /// table through the log, over what the file says (see `docs/security.md`).
    pub users: BTreeMap<String, UserConfig>,
}

/// One user of the config file: `[users.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct UserConfig {
    /// Off: the user cannot authenticate. On unless said.
    pub enabled: Option<bool>,
    /// The password in plain text (for tests; prefer `password-sha256`).
    pub password: Option<String>,
    /// The SHA-256 of the password in lower-case hex (`echo -n pw | sha256sum`), as Redis's
    /// `#<hash>` rule takes it.
    pub password_sha256: Option<String>,
    /// Any password is accepted (Redis's `nopass`).
    pub nopass: bool,
    /// Command rules in order, Redis's syntax: `["+@all", "-@admin"]`, `["+@lock", "+@read"]`.
    pub categories: Vec<String>,
    /// Name patterns (globs) per kind: the names this user may touch. Empty: none.
    pub keys: Vec<String>,
    pub locks: Vec<String>,
    /// Queues and exchanges.
    pub queues: Vec<String>,
    pub channels: Vec<String>,
    /// HTTP bearer tokens in plain text (for tests; prefer `tokens-sha256`).
    pub tokens: Vec<String>,
    /// HTTP bearer tokens as SHA-256 in lower-case hex.
    pub tokens_sha256: Vec<String>,
    /// Connections this user may have open on this node at once; 0 = no limit.
    pub max_connections: u32,
}

/// The default `queue-flow-limit`; see [`Config::queue_flow_limit`].
pub const DEFAULT_QUEUE_FLOW_LIMIT: u64 = 1000;

/// The default RESP port: Redis's 6379 moved up a thousand, so both can run side by side.
pub const DEFAULT_RESP_PORT: u16 = 7379;
/// The default HTTP port, next to the RESP one.
pub const DEFAULT_HTTP_PORT: u16 = 7380;
/// The default AMQP port: RabbitMQ's 5672 moved up a thousand, like the RESP port.
pub const DEFAULT_AMQP_PORT: u16 = 6672;

impl Default for Config {
    fn default() -> Config {
        Config {
            resp_addr: SocketAddr::from(([127, 0, 0, 1], DEFAULT_RESP_PORT)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], DEFAULT_HTTP_PORT)),
            amqp_addr: SocketAddr::from(([127, 0, 0, 1], DEFAULT_AMQP_PORT)),
            amqp_users: BTreeMap::from([("guest".to_owned(), "guest".to_owned())]),
            data_dir: PathBuf::from("turnstile-data"),
            node_id: 1,
            raft_addr: None,
            peers: BTreeMap::new(),
            join: None,
            restore: None,
            max_clients: 10_000,
            max_payload: 16 * 1024 * 1024,
            max_name_len: 1024,
            max_args: 1024 * 1024,
            max_batch: 512,
            max_in_flight: 2,
            worker_threads: 0,
            fsync: Fsync::Always,
            fsync_interval_ms: 1000,
            session_timeout_ms: 10_000,
            max_memory: 0,
            queue_flow_limit: DEFAULT_QUEUE_FLOW_LIMIT,
            script_budget: turnstile_core::DEFAULT_SCRIPT_BUDGET,
            snapshot_every: 20_000,
            election_timeout_ms: 250,
            snapshot_log_bytes: 64 * 1024 * 1024,
            truncate_corrupt: false,
            fault_injection: false,
            pubsub_output_limit: 32 * 1024 * 1024,
            client_query_buffer_limit: 1024 * 1024 * 1024,
            max_holds_per_session: 0,
            max_waits_per_session: 0,
            protected_mode: true,
            requirepass: None,
            users: BTreeMap::new(),
            tls_resp_addr: None,
            tls_amqp_addr: None,
            tls_http_addr: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_peer: false,
        }
    }
}

/// The `fsync` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    Always,
    Interval,
    Never,
}

impl std::str::FromStr for Fsync {
    type Err = String;

    fn from_str(s: &str) -> Result<Fsync, String> {
        match s {
            "always" => Ok(Fsync::Always),
            "interval" => Ok(Fsync::Interval),
            "never" => Ok(Fsync::Never),
            other => Err(format!("fsync must be always, interval or never, not {other:?}")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML file; keys it leaves out keep their defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Config::from_toml(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })
    }

    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// Refuses settings the server cannot run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("max-clients", self.max_clients),
            ("max-payload", self.max_payload),
            ("max-name-len", self.max_name_len),
            ("max-args", self.max_args),
            ("max-batch", self.max_batch),
            ("max-in-flight", self.max_in_flight),
            ("fsync-interval-ms", usize::try_from(self.fsync_interval_ms).unwrap_or(usize::MAX)),
            ("session-timeout-ms", usize::try_from(self.session_timeout_ms).unwrap_or(usize::MAX)),
            ("snapshot-every", usize::try_from(self.snapshot_every).unwrap_or(usize::MAX)),
            ("election-timeout-ms", usize::try_from(self.election_timeout_ms).unwrap_or(usize::MAX)),
            ("pubsub-output-limit", usize::try_from(self.pubsub_output_limit).unwrap_or(usize::MAX)),
            (
                "client-query-buffer-limit",
                usize::try_from(self.client_query_buffer_limit).unwrap_or(usize::MAX),
            ),
            ("script-budget", usize::try_from(self.script_budget).unwrap_or(usize::MAX)),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
        }
        if self.session_timeout_ms > turnstile_core::MAX_DURATION {
            return Err(ConfigError::Invalid(format!(
                "session-timeout-ms must be at most {} (about 34 years)",
                turnstile_core::MAX_DURATION
            )));
        }
        if self.restore.is_some() {
            // A restore starts a new cluster of one voter, this node. Nodes started beside it from
            // a peers list would start empty and could elect one of them, losing the backup, and a
            // node that joined another cluster would be sent that cluster's state over it: the
            // others join the restored node instead.
            if self.join.is_some() {
                return Err(ConfigError::Invalid(
                    "restore starts a new cluster, it cannot join one: leave out join".into(),
                ));
            }
            if self.peers.keys().any(|&id| id != self.node_id) {
                return Err(ConfigError::Invalid(
                    "restore starts a new cluster of one voter: list only this node in peers (the others join \
                     it with join)"
                        .into(),
                ));
            }
        }
        if let Some(join) = &self.join {
            if !self.peers.is_empty() {
                return Err(ConfigError::Invalid(
                    "join and peers exclude each other: peers start a new cluster, join enters a running one"
                        .into(),
                ));
            }
            if self.raft_addr.is_none() {
                return Err(ConfigError::Invalid(
                    "join needs raft-addr (where the cluster reaches this node)".into(),
                ));
            }
            if join
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                return Err(ConfigError::Invalid(format!("join {join:?} is not a HOST:PORT address")));
            }
        } else if self.peers.is_empty() {
            if self.raft_addr.is_some() {
                return Err(ConfigError::Invalid(
                    "raft-addr needs peers (the cluster's nodes) or join".into(),
                ));
            }
        } else if !self.peers.contains_key(&self.node_id) {
            return Err(ConfigError::Invalid(format!(
                "node-id {} is not among the peers ({})",
                self.node_id,
                peers_text(&self.peers)
            )));
        }
        self.validate_tls()
    }

    /// TLS settings that belong together: the files are read (and refused, naming the file)
    /// when the server starts.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let listeners = [
            ("tls-resp-addr", self.tls_resp_addr),
            ("tls-amqp-addr", self.tls_amqp_addr),
            ("tls-http-addr", self.tls_http_addr),
        ];
        let user = listeners.iter().find(|(_, addr)| addr.is_some()).map(|(name, _)| *name);
        let user = user.or(self.tls_peer.then_some("tls-peer"));
        match (user, &self.tls_cert, &self.tls_key) {
            (Some(name), None, _) => {
                return Err(ConfigError::Invalid(format!("{name} needs tls-cert (and tls-key)")));
            }
            (Some(name), _, None) => return Err(ConfigError::Invalid(format!("{name} needs tls-key"))),
            (None, Some(_), _) | (None, _, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "tls-cert and tls-key are used by a TLS listener (tls-resp-addr, tls-amqp-addr, \
                     tls-http-addr) or tls-peer: give one"
                        .into(),
                ));
            }
            _ => {}
        }
        if self.tls_peer {
            if self.tls_ca.is_none() {
                return Err(ConfigError::Invalid(
                    "tls-peer needs tls-ca: each node checks the other nodes' certificates against it".into(),
                ));
            }
            if !self.in_cluster() {
                return Err(ConfigError::Invalid("tls-peer needs a cluster (peers or join)".into()));
            }
        }
        if self.tls_ca.is_some() && user.is_none() {
            return Err(ConfigError::Invalid("tls-ca needs a TLS listener or tls-peer".into()));
        }
        Ok(())
    }

    /// The TLS files, when any TLS is configured.
    pub fn tls_files(&self) -> Option<turnstile_tls::TlsFiles> {
        Some(turnstile_tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            ca: self.tls_ca.clone(),
        })
    }

    /// Whether this node is one of a cluster of several nodes (it has `peers`, or joins one).
    pub fn in_cluster(&self) -> bool {
        !self.peers.is_empty() || self.join.is_some()
    }

    /// Where the Raft listener binds: `raft-addr`, or else this node's address in `peers`.
    pub fn raft_listen_addr(&self) -> Option<SocketAddr> {
        self.raft_addr.or_else(|| self.peers.get(&self.node_id).copied())
    }

    /// The cluster id a node of a new cluster starts with: derived from the peer list (FNV-1a of
    /// its text, ids in order), which every node is given identically, so that they all agree
    /// without talking (nodes started with different lists refuse each other). It is kept in the
    /// data dir at the first start and read from there afterwards, since the membership outgrows
    /// the list.
    pub fn cluster_id(&self) -> u64 {
        peers_text(&self.peers)
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
    }
}

/// Reads `peers`: `ID=HOST:PORT` pairs separated by commas; ids unique. Empty text: no peers.
pub fn parse_peers(text: &str) -> Result<BTreeMap<u64, SocketAddr>, String> {
    let mut peers = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) =
            pair.split_once('=').ok_or_else(|| format!("a peer is ID=HOST:PORT, not {pair:?}"))?;
        let id: u64 = id.trim().parse().map_err(|_| format!("a peer's id is a number, not {id:?}"))?;
        let addr: SocketAddr =
            addr.trim().parse().map_err(|_| format!("peer {id}'s address is HOST:PORT, not {addr:?}"))?;
        if peers.insert(id, addr).is_some() {
            return Err(format!("peer {id} is listed twice"));
        }
    }
    Ok(peers)
}

/// The peers as `parse_peers` reads them, in id order.
fn peers_text(peers: &BTreeMap<u64, SocketAddr>) -> String {
    peers.iter().map(|(id, addr)| format!("{id}={addr}")).collect::<Vec<_>>().join(",")
}

/// A switch written as a boolean or as Redis writes one, `yes` / `no`.
fn yes_no<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Switch {
        Bool(bool),
        Text(String),
    }
    match Switch::deserialize(d)? {
        Switch::Bool(on) => Ok(on),
        Switch::Text(text) if text == "yes" => Ok(true),
        Switch::Text(text) if text == "no" => Ok(false),
        Switch::Text(text) => Err(serde::de::Error::custom(format!("expected yes or no, not {text:?}"))),
    }
}

fn peers_from_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<u64, SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    parse_peers(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_overrides_only_the_keys_it_names() {
        let c = Config::from_toml("resp-addr = \"127.0.0.1:9999\"\nmax-clients = 5\n").unwrap();
        assert_eq!(c.resp_addr, "127.0.0.1:9999".parse().unwrap());
        assert_eq!(c.max_clients, 5);
        assert_eq!(c.max_payload, Config::default().max_payload);
        let c =
            Config::from_toml("amqp-addr = \"127.0.0.1:5673\"\n[amqp-users]\nalice = \"s3cret\"\n").unwrap();
        assert_eq!(c.amqp_addr, "127.0.0.1:5673".parse().unwrap());
        assert_eq!(c.amqp_users.get("alice").map(String::as_str), Some("s3cret"));
        assert!(!c.amqp_users.contains_key("guest"), "a users table replaces the default guest");
    }

    #[test]
    fn protected_mode_is_on_unless_turned_off_either_way() {
        assert!(Config::default().protected_mode);
        assert!(!Config::from_toml("protected-mode = false").unwrap().protected_mode);
        assert!(!Config::from_toml("protected-mode = \"no\"").unwrap().protected_mode);
        assert!(Config::from_toml("protected-mode = \"yes\"").unwrap().protected_mode);
        assert!(Config::from_toml("protected-mode = \"maybe\"").is_err());
        let c = Config::from_toml("client-query-buffer-limit = 0").unwrap();
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "invalid setting: client-query-buffer-limit must be at least 1"
        );
    }

    #[test]
    fn fsync_reads_from_the_file_and_from_text() {
        let c = Config::from_toml("fsync = \"interval\"\nfsync-interval-ms = 50\n").unwrap();
        assert_eq!(c.snapshot_log_bytes, 64 * 1024 * 1024);
        assert_eq!(Config::from_toml("snapshot-log-bytes = 0").unwrap().snapshot_log_bytes, 0);
        assert_eq!((c.fsync, c.fsync_interval_ms), (Fsync::Interval, 50));
        assert_eq!("never".parse::<Fsync>(), Ok(Fsync::Never));
        assert!("sometimes".parse::<Fsync>().is_err());
        assert!(Config::from_toml("fsync = \"sometimes\"").is_err());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(Config::from_toml("resp-adr = \"127.0.0.1:1\"").is_err());
        assert!(Config::from_toml("max-clients = -1").is_err());
        let peers = parse_peers("1=127.0.0.1:7381, 2=127.0.0.1:7391,3=127.0.0.1:7401").unwrap();
        assert_eq!(peers.len(), 3);
        assert_eq!(parse_peers("1=127.0.0.1:1,1=127.0.0.1:2").unwrap_err(), "peer 1 is listed twice");
        assert!(parse_peers("1=nowhere").is_err() && parse_peers("127.0.0.1:1").is_err());
        let c = Config::from_toml("node-id = 2\npeers = \"1=127.0.0.1:7381,2=127.0.0.1:7391\"\n").unwrap();
        assert_eq!((c.node_id, c.raft_listen_addr()), (2, Some("127.0.0.1:7391".parse().unwrap())));
        assert!(c.validate().is_ok() && c.in_cluster());
        let stranger = Config { node_id: 3, ..c.clone() };
        assert_eq!(
            stranger.validate().unwrap_err().to_string(),
            "invalid setting: node-id 3 is not among the peers (1=127.0.0.1:7381,2=127.0.0.1:7391)"
        );
        let restored = Config { restore: Some("backup.snap".into()), ..c.clone() };
        assert_eq!(
            restored.validate().unwrap_err().to_string(),
            "invalid setting: restore starts a new cluster of one voter: list only this node in peers (the \
             others join it with join)"
        );
        assert!(Config::from_toml("restore = \"b.snap\"").unwrap().validate().is_ok());
        let alone = "restore = \"b.snap\"\nnode-id = 2\npeers = \"2=127.0.0.1:7391\"\n";
        assert!(Config::from_toml(alone).unwrap().validate().is_ok(), "a cluster of this node alone");
        let alone = Config { raft_addr: Some("127.0.0.1:7381".parse().unwrap()), ..Config::default() };
        assert!(alone.validate().is_err());
        assert!(Config::from_toml("peers = \"1=127.0.0.1:1,1=127.0.0.1:2\"").is_err());

        let joins =
            Config::from_toml("node-id = 4\nraft-addr = \"127.0.0.1:7411\"\njoin = \"127.0.0.1:7381\"\n")
                .unwrap();
        assert!(joins.in_cluster() && joins.validate().is_ok());
        let invalid = |toml: &str| Config::from_toml(toml).unwrap().validate().unwrap_err().to_string();
        assert!(invalid("join = \"127.0.0.1:7381\"").contains("join needs raft-addr"));
        assert!(invalid("raft-addr = \"127.0.0.1:7411\"\njoin = \"nowhere\"").contains("not a HOST:PORT"));
        assert!(
            invalid(
                "raft-addr = \"127.0.0.1:7411\"\njoin = \"127.0.0.1:7381\"\npeers = \"1=127.0.0.1:7411\""
            )
            .contains("exclude each other")
        );

        let c = Config::from_toml("session-timeout-ms = 1500").unwrap();
        assert_eq!((c.session_timeout_ms, Config::default().session_timeout_ms), (1500, 10_000));
        let never = Config { session_timeout_ms: 0, ..Config::default() };
        assert_eq!(
            never.validate().unwrap_err().to_string(),
            "invalid setting: session-timeout-ms must be at least 1"
        );
        let forever = Config { session_timeout_ms: u64::MAX, ..Config::default() };
        assert!(forever.validate().unwrap_err().to_string().contains("session-timeout-ms must be at most"));
        let zero = Config { max_clients: 0, ..Config::default() };
        assert_eq!(
            zero.validate().unwrap_err().to_string(),
            "invalid setting: max-clients must be at least 1"
        );
    }

    #[test]
    fn the_script_budget_reads_from_the_file_and_must_allow_something() {
        assert_eq!(Config::default().script_budget, 100_000_000);
        assert_eq!(Config::from_toml("script-budget = 5000").unwrap().script_budget, 5000);
        let none = Config::from_toml("script-budget = 0").unwrap();
        assert_eq!(
            none.validate().unwrap_err().to_string(),
            "invalid setting: script-budget must be at least 1"
        );
    }

    #[test]
    fn tls_settings_that_belong_together_are_refused_apart() {
        let refused = |toml: &str| Config::from_toml(toml).unwrap().validate().unwrap_err().to_string();
        assert_eq!(
            refused("tls-resp-addr = \"127.0.0.1:7390\""),
            "invalid setting: tls-resp-addr needs tls-cert (and tls-key)"
        );
        assert_eq!(
            refused("tls-http-addr = \"127.0.0.1:7390\"\ntls-cert = \"c.pem\""),
            "invalid setting: tls-http-addr needs tls-key"
        );
        assert!(refused("tls-cert = \"c.pem\"\ntls-key = \"k.pem\"").contains("give one"));
        let peer = "tls-peer = true\ntls-cert = \"c.pem\"\ntls-key = \"k.pem\"\npeers = \"1=127.0.0.1:7381\"";
        assert!(refused(peer).contains("tls-peer needs tls-ca"));
        assert!(
            refused("tls-peer = true\ntls-cert = \"c\"\ntls-key = \"k\"\ntls-ca = \"a\"")
                .contains("needs a cluster")
        );
        let good =
            Config::from_toml(&format!("{peer}\ntls-ca = \"ca.pem\"\ntls-amqp-addr = \"127.0.0.1:7391\""))
                .unwrap();
        good.validate().unwrap();
        assert_eq!(good.tls_files().unwrap().ca.as_deref(), Some(std::path::Path::new("ca.pem")));
        assert_eq!(Config::default().tls_files(), None);
    }
}
