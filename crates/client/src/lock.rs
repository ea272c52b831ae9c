//! Locks, read/write locks and semaphores: [`LockBuilder`] → [`LockGuard`].
//!
//! A guard owns its own connection — the server session its hold belongs to — and a task that
//! keeps the hold alive:
//!
//! ```text
//!  SESSION INFO + acquire ─► [token, lease] ─► keeper task ──(a third of the lease)──► RENEW
//!                                   │  valid_until passes first ─────────► lost: Expired
//!                                   │  RENEW says -LOST ─────────────────► lost: Revoked
//!                                   │  the connection closes, or its node no longer leads
//!                                   │    ─► SESSION RESUME on another node (the hold stays)
//!                                   │       └─ the session is gone ─────► lost: Disconnected
//!                                   └─ release() or drop ───────────────► RELEASE, task ends
//! ```
//!
//! The server keeps a session whose node died for its session timeout, so a guard whose node is
//! killed resumes its session on another node of the cluster and keeps its hold (see
//! `session.rs`).
//!
//! `valid_until` is measured from when the acquire or renew was *sent*, on the local monotonic
//! clock: the server's lease started later than that, so the guard's idea of its validity ends
//! no later than the server's does. Between the send and the reply the guard does not count the
//! hold as valid for longer than it can prove.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use turnstile_resp::Frame;

use crate::client::Client;
use crate::conn::{Cmd, Connection, closed};
use crate::error::{Error, Result};
use crate::reply;
use crate::session::SessionKey;

/// What a hold is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A lock with one holder at a time.
    Exclusive,
    /// A read lock: any number of shared holders, no exclusive one.
    Shared,
    /// `count` of a semaphore's `limit` permits.
    Semaphore { limit: u32, count: u32 },
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Exclusive | Kind::Shared => "LOCK",
            Kind::Semaphore { .. } => "SEM",
        }
    }
}

/// Why a guard no longer guarantees its hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Lost {
    /// The lease ran out (on the local clock, conservatively) before a renewal succeeded.
    #[error("the lease ran out before it could be renewed")]
    Expired,
    /// The server says the hold is gone (its lease ended, or it was released elsewhere).
    #[error("the server no longer has the hold: {0}")]
    Revoked(String),
    /// The guard's connection closed, and with it the session the hold belonged to.
    #[error("the connection closed (the server releases a hold when its session ends): {0}")]
    Disconnected(String),
}

/// Builds an acquire: [`Client::lock`] or [`Client::semaphore`].
///
/// ```no_run
/// # async fn demo(client: turnstile_client::Client) -> turnstile_client::Result<()> {
/// use std::time::Duration;
///
/// let guard = client.lock("reports").ttl(Duration::from_secs(10)).wait(Duration::from_secs(5)).acquire().await?;
/// println!("holding with fencing token {}", guard.fencing_token());
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until acquire() is awaited"]
pub struct LockBuilder {
    client: Client,
    name: String,
    kind: Kind,
    ttl: Duration,
    wait: Duration,
    owner: Option<String>,
    keep: bool,
}

impl Client {
    /// An exclusive lock named `name` (call [`LockBuilder::shared`] for a read lock).
    pub fn lock(&self, name: impl Into<String>) -> LockBuilder {
        LockBuilder::new(self, name.into(), Kind::Exclusive)
    }

    /// One permit of the semaphore `name` that has `limit` permits in all.
    pub fn semaphore(&self, name: impl Into<String>, limit: u32) -> LockBuilder {
        LockBuilder::new(self, name.into(), Kind::Semaphore { limit, count: 1 })
    }
}

impl LockBuilder {
    fn new(client: &Client, name: String, kind: Kind) -> LockBuilder {
        LockBuilder {
            client: client.clone(),
            name,
            kind,
            ttl: Duration::from_secs(30),
            wait: Duration::ZERO,
            owner: None,
            keep: false,
        }
    }

    /// Lease length (default 30 s). The guard renews it at about a third.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long to wait in line when the lock is taken (default 0: fail at once).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Who is acquiring, for deadlock detection and `LOCK.INFO` (default: the connection).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// A shared (read) hold of a lock.
    pub fn shared(mut self) -> Self {
        if self.kind == Kind::Exclusive {
            self.kind = Kind::Shared;
        }
        self
    }

    /// How many permits of a semaphore (default 1).
    pub fn permits(mut self, count: u32) -> Self {
        if let Kind::Semaphore { count: slot, .. } = &mut self.kind {
            *slot = count;
        }
        self
    }

    /// Keep the hold when the connection closes (only its lease ends it): for a hold that
    /// outlives this process, released later by token.
    pub fn keep(mut self) -> Self {
        self.keep = true;
        self
    }

    /// Acquires, waiting up to [`LockBuilder::wait`]. [`Error::Timeout`] when the wait ran out,
    /// [`Error::Deadlock`] when waiting would close a cycle.
    pub async fn acquire(self) -> Result<LockGuard> {
        let name = self.name.clone();
        self.try_acquire().await?.ok_or(Error::Timeout(name))
    }

    /// Like [`LockBuilder::acquire`], but a lock that stayed taken is `Ok(None)`.
    pub async fn try_acquire(self) -> Result<Option<LockGuard>> {
        let started = Instant::now();
        let mut sent = started;
        let (mut conn, key, mut reply) = self.client.call_in_session(&self.acquire_cmd(self.wait)).await?;
        // The connection broke (or its node stopped leading) while the acquire was out: resume
        // the session elsewhere and ask again for what is left of the wait. The same session is
        // the same owner, so a grant whose reply was lost comes back as the same hold.
        let give_up = started + self.wait + self.client.options().retry_for;
        loop {
            match reply {
                Err(Error::Io { .. }) if Instant::now() < give_up => {}
                Err(e) if self.client.refused_here(&e, &mut conn) && Instant::now() < give_up => {}
                _ => break,
            }
            conn = self.client.resume(key, give_up).await?;
            sent = Instant::now();
            reply = conn.call(&self.acquire_cmd(self.wait.saturating_sub(started.elapsed()))).await;
        }
        let Some(grant) = reply::array_or_nil(reply?)? else { return Ok(None) };
        let [token, lease] = <[Frame; 2]>::try_from(grant)
            .map_err(|_| Error::Protocol("a grant is [token, lease-ms]".into()))?;
        let token = reply::unsigned(token)?;
        let lease = Duration::from_millis(reply::unsigned(lease)?);
        let hold = Hold {
            client: self.client,
            name: self.name,
            kind: self.kind,
            token,
            ttl: self.ttl,
            keep: self.keep,
        };
        Ok(Some(LockGuard::start(hold, conn, key, sent + lease, lease).await?))
    }

    /// `LOCK.ACQUIRE` (or `SEM.ACQUIRE`) waiting up to `wait`.
    fn acquire_cmd(&self, wait: Duration) -> Cmd {
        let mut cmd = Cmd::new(&format!("{}.ACQUIRE", self.kind.prefix())).arg(&self.name);
        if let Kind::Semaphore { limit, .. } = self.kind {
            cmd = cmd.arg(limit);
        }
        cmd = cmd.arg(self.ttl);
        if let Kind::Semaphore { count, .. } = self.kind {
            cmd = cmd.arg("COUNT").arg(count);
        }
        cmd.opt("WAIT", (!wait.is_zero()).then_some(wait))
            .opt("OWNER", self.owner.as_ref())
            .flag("SHARED", self.kind == Kind::Shared)
            .flag("KEEP", self.keep)
    }
}

/// What the keeper needs to renew and release a hold.
#[derive(Debug, Clone)]
struct Hold {
    client: Client,
    name: String,
    kind: Kind,
    token: u64,
    ttl: Duration,
    keep: bool,
}

impl Hold {
    fn renew_cmd(&self) -> Cmd {
        Cmd::new(&format!("{}.RENEW", self.kind.prefix())).arg(&self.name).arg(self.token).arg(self.ttl)
    }

    fn release_cmd(&self) -> Cmd {
        Cmd::new(&format!("{}.RELEASE", self.kind.prefix())).arg(&self.name).arg(self.token)
    }
}

/// A granted hold. Renewed in the background; released by [`LockGuard::release`] or on drop.
///
/// Use [`LockGuard::fencing_token`] with every write the lock protects (`FENCE name token`),
/// and stop working when [`LockGuard::lost`] resolves.
#[derive(Debug)]
pub struct LockGuard {
    name: String,
    token: u64,
    lost: watch::Receiver<Option<Lost>>,
    valid_until: Arc<Mutex<Instant>>,
    /// Tells the keeper how to end; dropping it means [`End::Release`] without waiting.
    end: Option<oneshot::Sender<End>>,
    keeper: Option<JoinHandle<()>>,
}

impl LockGuard {
    async fn start(
        hold: Hold,
        mut conn: Connection,
        key: SessionKey,
        valid_until: Instant,
        lease: Duration,
    ) -> Result<LockGuard> {
        let (mut valid_until, mut lease) = (valid_until, lease);
        // A grant that came after a long wait may already be past its provable validity:
        // prove it again before handing it out.
        if valid_until <= Instant::now() {
            let sent = Instant::now();
            let frame = conn.call(&hold.renew_cmd()).await?;
            lease = Duration::from_millis(reply::unsigned(frame)?);
            valid_until = sent + lease;
        }
        let (lost_tx, lost) = watch::channel(None);
        let (end, end_rx) = oneshot::channel();
        let shared_valid_until = Arc::new(Mutex::new(valid_until));
        let keeper = Keeper {
            hold: hold.clone(),
            conn: Some(conn),
            session: key,
            valid_until,
            lease,
            shared_valid_until: shared_valid_until.clone(),
            lost: lost_tx,
        };
        let keeper = tokio::spawn(keeper.run(end_rx));
        Ok(LockGuard {
            name: hold.name,
            token: hold.token,
            lost,
            valid_until: shared_valid_until,
            end: Some(end),
            keeper: Some(keeper),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fencing token of this hold: pass it along with every write the lock protects.
    pub fn fencing_token(&self) -> u64 {
        self.token
    }

    /// Until when (local monotonic clock) the hold is guaranteed, as far as this guard can prove.
    pub fn valid_until(&self) -> Instant {
        *self.valid_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the hold is lost, if it is.
    pub fn is_lost(&self) -> Option<Lost> {
        self.lost.borrow().clone()
    }

    /// Resolves when the hold can no longer be guaranteed. Does not borrow the guard, so it
    /// can be raced against the work the lock protects.
    pub fn lost(&self) -> impl Future<Output = Lost> + Send + 'static {
        let mut lost = self.lost.clone();
        async move {
            loop {
                if let Some(why) = lost.borrow_and_update().clone() {
                    return why;
                }
                if lost.changed().await.is_err() {
                    // The keeper is gone without saying why: the hold is no longer watched.
                    return lost.borrow().clone().unwrap_or(Lost::Expired);
                }
            }
        }
    }

    /// Stops renewing and watching without releasing, and gives back the fencing token: for a
    /// [`LockBuilder::keep`] hold handed to someone else (renewed or released by token later).
    /// A hold taken without `keep` ends when its connection closes, which this does.
    pub fn detach(mut self) -> u64 {
        if let Some(end) = self.end.take() {
            let _ = end.send(End::Detach);
        }
        self.token
    }

    /// Releases the hold: `true` if it was still held, `false` if it had already ended.
    pub async fn release(mut self) -> Result<bool> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let Some(end) = self.end.take() else { return Ok(false) };
        if end.send(End::Release(reply_tx)).is_err() {
            return Ok(false);
        }
        let released = reply_rx.await.unwrap_or(Ok(false));
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.await;
        }
        released
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Dropping `end` tells the keeper to release and stop; it finishes on its own.
        self.end.take();
    }
}

/// How a guard ends.
#[derive(Debug)]
enum End {
    /// Release, and say whether it was still held.
    Release(oneshot::Sender<Result<bool>>),
    /// Stop without releasing.
    Detach,
}

/// The task that renews a hold and watches its connection.
struct Keeper {
    hold: Hold,
    /// `None` after the connection broke, for a `KEEP` hold that outlives it.
    conn: Option<Connection>,
    /// What resumes the hold's session on another node when the connection breaks.
    session: SessionKey,
    valid_until: Instant,
    lease: Duration,
    shared_valid_until: Arc<Mutex<Instant>>,
    lost: watch::Sender<Option<Lost>>,
}

impl Keeper {
    async fn run(mut self, mut end: oneshot::Receiver<End>) {
        loop {
            // Renew once a third of the lease has gone by (two thirds remain).
            let renew_at = self.valid_until.checked_sub(self.lease * 2 / 3).unwrap_or(self.valid_until);
            let outcome = tokio::select! {
                asked = &mut end => {
                    match asked {
                        Ok(End::Detach) => {}
                        Ok(End::Release(reply)) => {
                            let _ = reply.send(self.release().await);
                        }
                        // The guard was dropped.
                        Err(_) => drop(self.release().await),
                    }
                    return;
                }
                () = sleep_until(self.valid_until) => Err(Lost::Expired),
                () = closed(&mut self.conn), if !self.hold.keep => self.resume().await,
                () = sleep_until(renew_at) => self.renew().await,
            };
            if let Err(why) = outcome {
                tracing::warn!(lock = %self.hold.name, token = self.hold.token, %why, "hold lost");
                let _ = self.lost.send(Some(why));
                self.conn = None;
                // Nothing left to keep; answer a release with "no longer held".
                if let Ok(End::Release(reply)) = end.await {
                    let _ = reply.send(Ok(false));
                }
                return;
            }
        }
    }

    /// Takes the hold's session to a new connection (another node, when this one died or no
    /// longer leads), within the hold's validity.
    async fn resume(&mut self) -> Result<(), Lost> {
        self.conn = None;
        let give_up = self.valid_until.min(Instant::now() + self.hold.client.options().retry_for);
        match self.hold.client.resume(self.session, give_up).await {
            Ok(conn) => {
                tracing::info!(lock = %self.hold.name, addr = conn.addr(), "hold's session resumed");
                self.conn = Some(conn);
                Ok(())
            }
            Err(e) => Err(Lost::Disconnected(format!("its session could not be resumed: {e}"))),
        }
    }

    /// One renewal, given up when the validity runs out first. On a hold's own connection that
    /// broke or whose node stopped leading, the session is resumed elsewhere and the renewal
    /// sent again (a renewal is safe to repeat).
    async fn renew(&mut self) -> Result<(), Lost> {
        let sent = Instant::now();
        let cmd = self.hold.renew_cmd();
        let valid_until = self.valid_until;
        let mut result = self.renew_once(&cmd, valid_until).await?;
        if !self.hold.keep
            && let Some(conn) = &mut self.conn
            && let Err(e) = &result
            && (matches!(e, Error::Io { .. } | Error::Protocol(_)) || self.hold.client.refused_here(e, conn))
        {
            tracing::debug!(lock = %self.hold.name, error = %e, "renew failed; resuming the session");
            self.resume().await?;
            result = self.renew_once(&cmd, valid_until).await?;
        }
        match result.and_then(reply::unsigned) {
            Ok(ms) => {
                self.lease = Duration::from_millis(ms);
                self.valid_until = sent + self.lease;
                *self.shared_valid_until.lock().unwrap_or_else(|p| p.into_inner()) = self.valid_until;
                Ok(())
            }
            Err(Error::Lost(text)) => Err(Lost::Revoked(text)),
            Err(e @ (Error::Io { .. } | Error::Connect { .. } | Error::Protocol(_))) if self.hold.keep => {
                // The hold outlives the connection: try again from the pool until the lease is gone.
                tracing::debug!(lock = %self.hold.name, error = %e, "renew failed; retrying");
                self.conn = None;
                let retry = (Instant::now() + Duration::from_millis(100)).min(self.valid_until);
                sleep_until(retry).await;
                Ok(())
            }
            Err(e @ (Error::Io { .. } | Error::Connect { .. } | Error::Protocol(_))) => {
                Err(Lost::Disconnected(e.to_string()))
            }
            Err(e) => Err(Lost::Revoked(e.to_string())),
        }
    }

    /// Sends `cmd` once: on the hold's connection, or through the pool when it has none.
    /// `Err(Lost::Expired)` when the validity runs out first.
    async fn renew_once(&mut self, cmd: &Cmd, valid_until: Instant) -> Result<Result<Frame>, Lost> {
        let call = async {
            match &mut self.conn {
                Some(conn) => conn.call(cmd).await,
                None => self.hold.client.call_idempotent(cmd.clone()).await,
            }
        };
        tokio::select! {
            result = call => Ok(result),
            () = sleep_until(valid_until) => Err(Lost::Expired),
        }
    }

    async fn release(&mut self) -> Result<bool> {
        let cmd = self.hold.release_cmd();
        let frame = match &mut self.conn {
            // A release by token is safe to repeat: through the pool if this connection broke.
            Some(conn) => match conn.call(&cmd).await {
                Err(Error::Io { .. }) => self.hold.client.call_idempotent(cmd).await,
                other => other,
            },
            None => self.hold.client.call_idempotent(cmd).await,
        };
        Ok(reply::integer(frame?)? == 1)
    }
}

/// `LOCK.INFO` / `SEM.INFO`: who holds a lock and who waits for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    /// `free`, `exclusive`, `shared` or `semaphore`.
    pub mode: String,
    /// A semaphore's permits in all (1 for a lock).
    pub limit: u32,
    pub holders: Vec<Holder>,
    /// In the order they will be served.
    pub waiters: Vec<Waiter>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub owner: String,
    pub fencing_token: u64,
    /// Time left on the lease.
    pub expires_in: Duration,
    pub permits: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    pub owner: String,
    /// `exclusive`, `shared` or `permits`.
    pub mode: String,
    pub permits: u32,
    /// Time left before the waiter gives up.
    pub gives_up_in: Duration,
}

impl Client {
    /// Releases a hold by token (for holds taken with `KEEP`, e.g. by `turnstile lock acquire`).
    /// `true` if it was held. `semaphore` picks `SEM.RELEASE` over `LOCK.RELEASE`.
    pub async fn release(&self, name: &str, token: u64, semaphore: bool) -> Result<bool> {
        let cmd = Cmd::new(if semaphore { "SEM.RELEASE" } else { "LOCK.RELEASE" }).arg(name).arg(token);
        Ok(reply::integer(self.call_idempotent(cmd).await?)? == 1)
    }

    /// Renews a hold by token; the new lease, or [`Error::Lost`].
    pub async fn renew(&self, name: &str, token: u64, ttl: Duration, semaphore: bool) -> Result<Duration> {
        let cmd = Cmd::new(if semaphore { "SEM.RENEW" } else { "LOCK.RENEW" }).arg(name).arg(token).arg(ttl);
        Ok(Duration::from_millis(reply::unsigned(self.call_idempotent(cmd).await?)?))
    }

    /// Who holds `name` and who waits; `semaphore` picks `SEM.INFO`.
    pub async fn lock_info(&self, name: &str, semaphore: bool) -> Result<LockInfo> {
        let cmd = Cmd::new(if semaphore { "SEM.INFO" } else { "LOCK.INFO" }).arg(name);
        let mut pairs = reply::map(self.call(cmd).await?)?;
        let small = |frame| {
            u32::try_from(reply::unsigned(frame)?).map_err(|_| Error::Protocol("count too big".into()))
        };
        let holders = reply::array(reply::field(&mut pairs, "holders")?)?
            .into_iter()
            .map(|h| {
                let [owner, token, expires_in, permits] = reply::tuple(h)?;
                Ok(Holder {
                    owner: reply::text(owner)?,
                    fencing_token: reply::unsigned(token)?,
                    expires_in: Duration::from_millis(reply::unsigned(expires_in)?),
                    permits: small(permits)?,
                })
            })
            .collect::<Result<_>>()?;
        let waiters = reply::array(reply::field(&mut pairs, "waiters")?)?
            .into_iter()
            .map(|w| {
                let [owner, mode, permits, gives_up_in] = reply::tuple(w)?;
                Ok(Waiter {
                    owner: reply::text(owner)?,
                    mode: reply::text(mode)?,
                    permits: small(permits)?,
                    gives_up_in: Duration::from_millis(reply::unsigned(gives_up_in)?),
                })
            })
            .collect::<Result<_>>()?;
        Ok(LockInfo {
            mode: reply::text(reply::field(&mut pairs, "mode")?)?,
            limit: small(reply::field(&mut pairs, "limit")?)?,
            holders,
            waiters,
        })
    }

    /// Names of the locks and semaphores that are held or waited for.
    pub async fn locks(&self) -> Result<Vec<String>> {
        let items = reply::array_or_nil(self.call(Cmd::new("LOCK.LIST")).await?)?.unwrap_or_default();
        items.into_iter().map(reply::text).collect()
    }

    /// Whether `token` is a live hold of `lock` right now.
    pub async fn fence_check(&self, lock: &str, token: u64) -> Result<bool> {
        Ok(reply::integer(self.call(Cmd::new("FENCE.CHECK").arg(lock).arg(token)).await?)? == 1)
    }
}
