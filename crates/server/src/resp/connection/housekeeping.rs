//! What client libraries send besides their work: `CLIENT INFO | LIST | KILL`, `CONFIG GET`,
//! `TIME`, `WAIT`, `READONLY`, `READWRITE`, `RESET`; and the connection's entry in the node's
//! registry of connections, which those read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::net::TcpStream;
use turnstile_resp::cmd::{ClientFilter, ClientType, ConnCmd, KillCmd, KillFilters};
use turnstile_resp::{Frame, Protocol, glob};

use super::{ConnError, Connection, Flow};
use crate::clients::Client;
use crate::config::Fsync;
use crate::server::Shared;

/// Keeps a connection in the registry; dropping it (however the connection's task ends) takes
/// it out, with every channel and pattern it was subscribed to.
#[derive(Debug)]
pub(super) struct Registration {
    shared: Arc<Shared>,
    client: Arc<Client>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.pubsub.forget(&self.client);
        self.shared.clients.remove(self.client.id);
    }
}

/// Lists a new connection in the node's registry.
pub(super) fn register(
    stream: &TcpStream,
    id: u64,
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> (Arc<Client>, Registration) {
    let laddr = stream.local_addr().unwrap_or(shared.resp_addr);
    let client = Arc::new(Client::new(id, peer, laddr, fd(stream), shared.pubsub_output_limit));
    shared.clients.register(client.clone());
    (client.clone(), Registration { shared: shared.clone(), client })
}

#[cfg(unix)]
fn fd(stream: &TcpStream) -> i64 {
    use std::os::fd::AsRawFd;
    i64::from(stream.as_raw_fd())
}

#[cfg(not(unix))]
fn fd(_: &TcpStream) -> i64 {
    -1
}

impl Connection {
    pub(super) fn housekeeping(&mut self, c: ConnCmd) -> Result<Flow, ConnError> {
        let frame = match c {
            ConnCmd::ClientInfo => self.text(self.client.line() + "\n"),
            ConnCmd::ClientList(filter) => {
                let clients = match filter {
                    ClientFilter::Ids(ids) => ids
                        .into_iter()
                        .filter_map(|id| u64::try_from(id).ok().and_then(|id| self.shared.clients.get(id)))
                        .collect(),
                    ClientFilter::All => self.shared.clients.list(),
                    ClientFilter::Type(kind) => {
                        self.shared.clients.list().into_iter().filter(|c| of_type(c, kind)).collect()
                    }
                };
                self.text(clients.iter().map(|c| c.line() + "\n").collect())
            }
            ConnCmd::ClientKill(kill) => return Ok(self.kill(kill)),
            ConnCmd::ClientAccepted => Frame::ok(),
            ConnCmd::ConfigGet(patterns) => self.config_get(&patterns),
            ConnCmd::ConfigSet(name) => Frame::error(
                "ERR",
                format_args!(
                    "CONFIG SET is not supported (asked to set '{}'): Turnstile's settings are given at start, \
                     on the command line, in TURNSTILE_* variables or in the config file",
                    String::from_utf8_lossy(&name)
                ),
            ),
            ConnCmd::Time => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                Frame::Array(vec![
                    Frame::bulk(now.as_secs().to_string()),
                    Frame::bulk(now.subsec_micros().to_string()),
                ])
            }
            // Every write this connection was answered for is on a majority of the voters
            // already (that is when it is answered): the other nodes that surely hold it are that
            // majority less one. Waiting would not make more of them certain, so it answers at
            // once, whatever the timeout.
            ConnCmd::Wait { .. } => {
                let status = self.shared.node.local_cluster_status();
                let voters = status.members.iter().filter(|m| m.role != "learner").count();
                Frame::Integer(i64::try_from(voters / 2).unwrap_or(0))
            }
            ConnCmd::ReadOnly(on) => {
                self.client.set_readonly(on);
                Frame::ok()
            }
            ConnCmd::Reset => {
                self.shared.pubsub.forget(&self.client);
                drop(self.client.outbox.take());
                self.client.reset();
                // RESET also discards MULTI's queue and WATCH's keys, as Redis's does.
                self.transaction = super::Transaction::default();
                self.protocol = Protocol::Resp2;
                Frame::simple("RESET")
            }
            other => Frame::error("ERR", format_args!("internal error: {other:?} is not housekeeping")),
        };
        self.write(&frame);
        Ok(Flow::Continue)
    }

    /// `CLIENT KILL`: closes the other matching connections at once; a connection that kills
    /// itself is answered first, then closed, as in Redis.
    fn kill(&mut self, kill: KillCmd) -> Flow {
        let action = format!("CLIENT KILL {kill:?}");
        crate::auth::audit_admin(&self.client.user(), &self.client.line(), &action);
        let clients = self.shared.clients.list();
        let (matching, old_form): (Vec<&Arc<Client>>, bool) = match &kill {
            KillCmd::Addr(addr) => (clients.iter().filter(|c| same_addr(c.addr, addr)).collect(), true),
            KillCmd::Filters(filters) => {
                (clients.iter().filter(|c| self.matches(c, filters)).collect(), false)
            }
        };
        let mut myself = false;
        for client in &matching {
            if client.id == self.id {
                myself = true;
            } else {
                client.kill();
            }
        }
        let frame = match (old_form, matching.len()) {
            (true, 0) => Frame::error("ERR", "No such client"),
            (true, _) => Frame::ok(),
            (false, n) => Frame::Integer(i64::try_from(n).unwrap_or(i64::MAX)),
        };
        self.write(&frame);
        if myself { Flow::Quit } else { Flow::Continue }
    }

    fn matches(&self, client: &Client, filters: &KillFilters) -> bool {
        !(filters.skip_me && client.id == self.id)
            && filters.id.is_none_or(|id| id == client.id)
            && filters.kind.is_none_or(|kind| of_type(client, kind))
            && filters.addr.as_ref().is_none_or(|addr| same_addr(client.addr, addr))
            && filters.laddr.as_ref().is_none_or(|addr| same_addr(client.laddr, addr))
    }

    /// `CONFIG GET`: each setting once, in the table's order, whichever patterns matched it.
    fn config_get(&self, patterns: &[Bytes]) -> Frame {
        let settings = settings(&self.shared);
        let pairs = settings
            .into_iter()
            .filter(|(name, _)| patterns.iter().any(|p| glob::matches(p, name.as_bytes(), true)))
            .map(|(name, value)| (Frame::bulk(name), Frame::bulk(value)))
            .collect();
        Frame::Map(pairs)
    }

    /// Text for CLIENT INFO and LIST: a verbatim string in RESP3, a bulk string in RESP2.
    fn text(&self, text: String) -> Frame {
        match self.protocol {
            Protocol::Resp3 => Frame::Verbatim { format: *b"txt", text: text.into() },
            Protocol::Resp2 => Frame::Bulk(text.into()),
        }
    }
}

/// Redis's client types: there is no replication of Redis's kind here, so no connection is a
/// master or a replica; a subscriber is `pubsub`, any other `normal`.
fn of_type(client: &Client, kind: ClientType) -> bool {
    match kind {
        ClientType::Normal => !client.is_subscriber(),
        ClientType::PubSub => client.is_subscriber(),
        ClientType::Master | ClientType::Replica => false,
    }
}

fn same_addr(addr: SocketAddr, text: &[u8]) -> bool {
    addr.to_string().as_bytes() == text
}

/// The settings `CONFIG GET` answers, Redis's names with this server's values: what client
/// libraries and tools probe. Each says what Turnstile does in Redis's terms (the log is an
/// append-only file that is always on; nothing is evicted; one database).
fn settings(shared: &Shared) -> Vec<(&'static str, String)> {
    let limits = &shared.limits;
    let appendfsync = match shared.fsync {
        Fsync::Always => "always",
        Fsync::Interval => "everysec",
        Fsync::Never => "no",
    };
    vec![
        ("maxmemory", limits.max_memory.to_string()),
        ("maxmemory-policy", "noeviction".into()),
        ("maxclients", limits.max_clients.to_string()),
        ("proto-max-bulk-len", limits.max_payload.to_string()),
        ("save", String::new()),
        ("appendonly", "yes".into()),
        ("appendfsync", appendfsync.into()),
        ("databases", "1".into()),
        ("timeout", "0".into()),
        ("tcp-keepalive", "0".into()),
        ("notify-keyspace-events", String::new()),
        ("cluster-enabled", "no".into()),
        ("lua-time-limit", "5000".into()),
        ("busy-reply-threshold", "5000".into()),
        (
            "client-output-buffer-limit",
            format!("normal 0 0 0 slave 0 0 0 pubsub {} 0 0", shared.pubsub_output_limit),
        ),
        ("replica-read-only", "yes".into()),
        ("port", shared.resp_addr.port().to_string()),
        ("bind", shared.resp_addr.ip().to_string()),
    ]
}
