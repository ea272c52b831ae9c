//! [`Client`]: the addresses of a cluster, the leader last seen, and a pool of idle connections.
//!
//! ```text
//!  client.call(cmd) ─► pool (idle connection, or connect: leader hint, then each address from
//!                      │                          the next one in turn, with backoff until
//!                      │                          `retry_for` runs out)
//!                      ├─► reply                  ─► connection back to the pool
//!                      └─► -NOTLEADER / -TRYAGAIN / -CLUSTERDOWN ─► remember the leader if it
//!                                                   is one of ours, else try the next address
//! ```
//!
//! A command is retried only when it cannot have been applied: the connect failed, or the node
//! refused it as not the leader (or with no leader to name). A connection that breaks
//! mid-request is an [`Error::Io`]: the write may or may not have happened, and only the caller
//! knows whether repeating it is safe — [`Client::call_idempotent`] is for those that are.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use turnstile_resp::Frame;

use crate::conn::{Cmd, Connection};
use crate::error::{Error, Result};

/// The default server address, as `turnstile server` binds it.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7379";

/// The longest pause between two attempts while a cluster has no leader.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// How a [`Client`] connects.
#[derive(Debug, Clone)]
pub struct Options {
    /// Most idle connections kept for reuse.
    pub pool_size: usize,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// How long to keep trying (with backoff) before a connect fails for good.
    pub retry_for: Duration,
    /// Who each connection authenticates as (`AUTH`) before anything else, on a server that
    /// requires it.
    pub credentials: Option<Credentials>,
}

/// A user and password for `AUTH`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `None`: Redis's `AUTH password`, the `default` user.
    pub user: Option<String>,
    pub password: String,
}

/// Never prints the password.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).finish_non_exhaustive()
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            pool_size: 16,
            connect_timeout: Duration::from_secs(2),
            retry_for: Duration::from_secs(5),
            credentials: None,
        }
    }
}

/// A handle to a Turnstile server or cluster. Cheap to clone; clones share the pool.
///
/// ```no_run
/// # async fn demo() -> turnstile_client::Result<()> {
/// let client = turnstile_client::Client::connect("turnstile://127.0.0.1:7379").await?;
/// let id = client.push("emails", "hello").send().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    addrs: Vec<String>,
    options: Options,
    /// The node that last answered as leader (or told us who is).
    leader: Mutex<Option<String>>,
    /// The index in `addrs` of the address to try first after the leader hint: moved past a
    /// node that refused or failed, so that the next attempt goes to the next one.
    next: AtomicUsize,
    idle: Mutex<Vec<Connection>>,
}

impl Client {
    /// Connects to `url`: `HOST:PORT`, `turnstile://HOST:PORT`, or several comma-separated
    /// addresses of one cluster. Fails if no address answers within [`Options::retry_for`].
    pub async fn connect(url: &str) -> Result<Client> {
        Client::with_options(url, Options::default()).await
    }

    pub async fn with_options(url: &str, options: Options) -> Result<Client> {
        let client = Client {
            shared: Arc::new(Shared {
                addrs: parse_addrs(url)?,
                options,
                leader: Mutex::new(None),
                next: AtomicUsize::new(0),
                idle: Mutex::new(Vec::new()),
            }),
        };
        // Prove the address now: a wrong port is best reported by `connect`, not later.
        let mut conn = client.connection().await?;
        conn.call(&Cmd::new("PING")).await?;
        Ok(client)
    }

    pub(crate) fn options(&self) -> &Options {
        &self.shared.options
    }

    /// The addresses this client was given.
    pub fn addrs(&self) -> &[String] {
        &self.shared.addrs
    }

    /// Sends one command on a pooled connection, following `-NOTLEADER` redirects and waiting
    /// out an election (up to [`Options::retry_for`]).
    pub async fn call(&self, cmd: Cmd) -> Result<Frame> {
        let mut retry = Retry::new(&self.shared.options);
        loop {
            let mut conn = self.connection().await?;
            match conn.call(&cmd).await {
                Err(e) if self.refused_here(&e, &mut conn) && retry.again().await => {}
                other => return other,
            }
        }
    }

    /// [`Client::call`] for a command that is safe to send twice (a renew, an ack, a release by
    /// token): also retried, on another node if need be, when the connection broke before its
    /// reply came. The reply is then the second attempt's (an ack that the first attempt made
    /// counts 0 the second time).
    pub async fn call_idempotent(&self, cmd: Cmd) -> Result<Frame> {
        let mut retry = Retry::new(&self.shared.options);
        loop {
            let mut conn = self.connection().await?;
            match conn.call(&cmd).await {
                Err(e) if self.refused_here(&e, &mut conn) && retry.again().await => {}
                // A node that forwarded the command to a leader that died meanwhile cannot tell
                // whether it was applied (`-ERR outcome unknown: ...`): safe to send again here.
                Err(Error::Server { code, message })
                    if code == "ERR" && message.starts_with("outcome unknown") && retry.again().await =>
                {
                    conn.retire();
                }
                Err(Error::Io { addr, source }) => {
                    self.skip(&addr);
                    if !retry.again().await {
                        return Err(Error::Io { addr, source });
                    }
                }
                other => return other,
            }
        }
    }

    /// Whether `e` is a refusal of this node that another may not make: not the leader, or no
    /// leader (an election). Then the connection is retired, and the next attempt goes to the
    /// leader it named, if it is one of our addresses, or else to the next address.
    pub(crate) fn refused_here(&self, e: &Error, conn: &mut Connection) -> bool {
        let Error::Server { code, message } = e else { return false };
        if !matches!(code.as_str(), "NOTLEADER" | "TRYAGAIN" | "CLUSTERDOWN") {
            return false;
        }
        conn.retire();
        self.skip(conn.addr());
        if code == "NOTLEADER" {
            self.redirect(message);
        }
        true
    }

    /// Sends `cmds` in one round trip on one connection; one result per command, in order.
    pub async fn pipeline(&self, cmds: &[Cmd]) -> Result<Vec<Result<Frame>>> {
        let mut conn = self.connection().await?;
        conn.pipeline(cmds).await
    }

    /// A connection from the pool (or a new one); it goes back to the pool when dropped.
    pub async fn connection(&self) -> Result<Pooled> {
        // An idle connection the server closed meanwhile would fail the command after it was
        // sent; skip those, so only a connection that breaks mid-request is an error.
        let idle = loop {
            let conn = lock(&self.shared.idle).pop();
            match conn {
                Some(conn) if conn.is_stale() => drop(conn),
                other => break other,
            }
        };
        let conn = match idle {
            Some(conn) => conn,
            None => self.open().await?,
        };
        Ok(Pooled { conn: Some(conn), client: self.clone() })
    }

    /// A new connection that is not returned to the pool: a session of its own, for holds and
    /// deliveries that must end when it closes.
    pub async fn dedicated(&self) -> Result<Connection> {
        self.open().await
    }

    /// Connects to the leader hint, else to each address in turn (from the next one), with
    /// backoff between rounds.
    pub(crate) async fn open(&self) -> Result<Connection> {
        let options = &self.shared.options;
        let give_up = Instant::now() + options.retry_for;
        let mut backoff = Duration::from_millis(25);
        loop {
            let hint = lock(&self.shared.leader).clone();
            let addrs = &self.shared.addrs;
            let first = self.shared.next.load(Ordering::Relaxed) % addrs.len();
            let mut last_error = None;
            for addr in hint.iter().chain(addrs[first..].iter()).chain(addrs[..first].iter()) {
                match Connection::connect(addr, options.connect_timeout).await {
                    Ok(mut conn) => {
                        if let Some(credentials) = &options.credentials {
                            // A refusal (a wrong password) is final: another node has the same users.
                            let auth = match &credentials.user {
                                Some(user) => Cmd::new("AUTH").arg(user).arg(&credentials.password),
                                None => Cmd::new("AUTH").arg(&credentials.password),
                            };
                            conn.call(&auth).await?;
                        }
                        return Ok(conn);
                    }
                    Err(e) => {
                        self.skip(addr);
                        last_error = Some(e);
                    }
                }
            }
            let now = Instant::now();
            if now >= give_up {
                let source = last_error.unwrap_or_else(|| std::io::Error::other("no address"));
                return Err(Error::Connect { addrs: self.shared.addrs.join(","), source });
            }
            tokio::time::sleep(backoff.min(give_up - now)).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// `-NOTLEADER host:port`: go there next, if it is one of our addresses (a node names the
    /// leader by its cluster address, which may not be where its clients connect). Idle
    /// connections point at the old node: drop them.
    fn redirect(&self, leader: &str) {
        let leader = leader.trim();
        let known = self.shared.addrs.iter().any(|a| a == leader);
        tracing::debug!(leader, known, "refused by a node that is not the leader");
        *lock(&self.shared.leader) = known.then(|| leader.to_owned());
        lock(&self.shared.idle).clear();
    }

    /// `addr` refused or failed: the next attempt starts with the address after it, and it is no
    /// longer taken for the leader.
    pub(crate) fn skip(&self, addr: &str) {
        let mut hint = lock(&self.shared.leader);
        if hint.as_deref() == Some(addr) {
            *hint = None;
        }
        if let Some(i) = self.shared.addrs.iter().position(|a| a == addr) {
            self.shared.next.store((i + 1) % self.shared.addrs.len(), Ordering::Relaxed);
        }
    }

    fn put_back(&self, conn: Connection) {
        let mut idle = lock(&self.shared.idle);
        if !conn.is_broken() && idle.len() < self.shared.options.pool_size {
            idle.push(conn);
        }
    }
}

/// A pooled connection; derefs to [`Connection`] and returns to the pool on drop unless broken.
#[derive(Debug)]
pub struct Pooled {
    conn: Option<Connection>,
    client: Client,
}

impl std::ops::Deref for Pooled {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("present until drop")
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("present until drop")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.client.put_back(conn);
        }
    }
}

/// Paces the attempts of one request while nodes refuse it (an election) or fail: doubling
/// pauses, until [`Options::retry_for`] has passed.
#[derive(Debug)]
pub(crate) struct Retry {
    give_up: Instant,
    backoff: Duration,
}

impl Retry {
    pub(crate) fn new(options: &Options) -> Retry {
        Retry::until(Instant::now() + options.retry_for)
    }

    pub(crate) fn until(give_up: Instant) -> Retry {
        Retry { give_up, backoff: Duration::from_millis(10) }
    }

    /// Waits before the next attempt; `false` (at once) when there is no time left for one.
    pub(crate) async fn again(&mut self) -> bool {
        let now = Instant::now();
        if now >= self.give_up {
            return false;
        }
        tokio::time::sleep(self.backoff.min(self.give_up - now)).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        true
    }
}

/// Reads `HOST:PORT`, `turnstile://HOST:PORT` or a comma-separated list of either.
pub fn parse_addrs(url: &str) -> Result<Vec<String>> {
    let list = url.trim();
    let list = list.strip_prefix("turnstile://").unwrap_or(list);
    let addrs: Vec<String> = list
        .split(',')
        .map(|a| a.trim().strip_prefix("turnstile://").unwrap_or(a.trim()).trim_end_matches('/').to_owned())
        .collect();
    let valid = |a: &String| {
        a.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok()
        })
    };
    if addrs.is_empty() || !addrs.iter().all(valid) {
        return Err(Error::InvalidAddress(url.to_owned()));
    }
    Ok(addrs)
}

/// A poisoned pool lock only means another task panicked mid-push: the list is still sound.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(parse_addrs("127.0.0.1:7379").unwrap(), ["127.0.0.1:7379"]);
        assert_eq!(parse_addrs("turnstile://a:1,b:2").unwrap(), ["a:1", "b:2"]);
        assert_eq!(parse_addrs("turnstile://a:1, turnstile://b:2/").unwrap(), ["a:1", "b:2"]);
        for bad in ["", "a", "a:", ":1", "a:99999", "redis://a:1", "a:1,"] {
            assert!(matches!(parse_addrs(bad), Err(Error::InvalidAddress(_))), "{bad}");
        }
    }
}
