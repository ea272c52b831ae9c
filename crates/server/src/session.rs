//! The session layer: what every front end (RESP, AMQP, HTTP) does with the log, written once.
//!
//! ```text
//!  front end: framing, parsing ─► Command / Query ─► Session ─────────────► node (log, reads)
//!                                                      │ admit: max-payload, max-name-len, max-memory
//!                                                      │ flow:  queue-flow-limit (`flow.rs`): a front
//!                                                      │        end stops reading while it is over
//!                                                      │ bind:  open the session on first need,
//!                                                      │        register with the router for its effects
//!                                                      │ observe: grants, deadlocks (Stats)
//!  front end: rendering ◄── Reply / Refused ◄──────────┤
//!                                                      └ settled(wait): park until the router hands
//!                                                        over the effect that ends the wait
//! ```
//!
//! A session is opened in the log the first time a command needs one (a lock, a pop, a consumer)
//! and closed in the log when the front end is done with it — [`Session::close`], or on drop when
//! a client went away mid-request — which releases its holds (except `KEEP` ones) and returns its
//! deliveries. A limit or a refusal is decided here, so it is the same on every protocol; each
//! front end only renders [`Refused`] in its own way.
//!
//! A session is held by this process (`host.rs`) and has a secret, drawn here when it opens.
//! A client that lost its connection (the node died, the link broke) shows the id and secret on
//! a new connection, to any node: [`Session::resume`] binds that connection to the session,
//! with its holds and deliveries. Its waits do not follow it — their outcomes were to reach the
//! old connection — so the core ends them at the resume, and the client asks again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::mpsc;
use turnstile_core::{Command, Effect, NameKind, Query, Reply, SessionId};
use turnstile_raft::{Answer, NodeError};

use crate::auth::{AuthError, Identity};
use crate::flow::{self, Throttle};
use crate::router::settled;
use crate::server::Shared;
use crate::stats::bump;

/// The limits every front end applies the same way, each with its setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `max-payload`: the largest message body or value, in bytes (Redis: `proto-max-bulk-len`).
    pub max_payload: usize,
    /// `max-name-len`: the longest lock, queue, key or exchange name, in bytes.
    pub max_name_len: usize,
    /// `max-args`: the most arguments in one RESP command.
    pub max_args: usize,
    /// `max-memory`: messages are refused once stored payloads would pass this; 0 = no limit.
    pub max_memory: u64,
    /// `max-clients`: connections open at once, over every protocol.
    pub max_clients: usize,
    /// `script-budget`: the Lua instructions one script may run.
    pub script_budget: u64,
    /// `queue-flow-limit`: ready messages in a consumed queue past which its publishers are
    /// stopped until the consumers take it below half (`flow.rs`); 0 = off.
    pub queue_flow_limit: u64,
}

impl Limits {
    /// What the RESP codec enforces while it reads.
    pub fn resp(&self) -> turnstile_resp::Limits {
        turnstile_resp::Limits {
            max_bulk_len: self.max_payload,
            max_args: self.max_args,
            ..turnstile_resp::Limits::default()
        }
    }
}

/// Why the server did not run a command. Each front end renders it in its own way (a RESP
/// error, an HTTP status, an AMQP close or nack); the text is the same everywhere.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refused {
    #[error("value is larger than max-payload ({limit} bytes)")]
    PayloadTooLarge { limit: usize },
    #[error("{} name is longer than max-name-len ({limit} bytes)", .kind.as_str())]
    NameTooLong { kind: NameKind, limit: usize },
    #[error("command not allowed when used memory > 'max-memory'")]
    OutOfMemory,
    /// A resume on a connection that already has a session of its own.
    #[error("this connection already has a session: resume one before any command that opens one")]
    SessionOpen,
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The user may not run the command or touch one of its names (`NOPERM`).
    #[error("{0}")]
    NoPerm(#[from] turnstile_core::Denied),
    /// The connection has not authenticated, or its user is gone (`NOAUTH`, `WRONGPASS`).
    #[error("{0}")]
    Auth(#[from] crate::auth::AuthError),
}

/// What every front end says when this node can reach no leader, after the code `CLUSTERDOWN`.
pub const CLUSTER_DOWN: &str = "no leader reachable";

impl Refused {
    /// The error code clients see (the RESP error prefix; HTTP's `code`).
    pub fn code(&self) -> &'static str {
        match self {
            Refused::PayloadTooLarge { .. } | Refused::NameTooLong { .. } | Refused::SessionOpen => "ERR",
            Refused::OutOfMemory => "OOM",
            Refused::NoPerm(_) => "NOPERM",
            Refused::Auth(e) => e.code(),
            _ if self.cluster_down() => "CLUSTERDOWN",
            Refused::Node(NodeError::NotLeader { .. }) => "NOTLEADER",
            Refused::Node(_) => "ERR",
        }
    }

    /// Whether the node refused because it can reach no leader: none is known (an election is
    /// under way, or this node is in a minority that cannot elect one), or this node leads
    /// without a quorum (its lease ran out, or a read could not confirm it). Nothing was applied;
    /// another node, or this one after the partition heals, may take the command.
    pub fn cluster_down(&self) -> bool {
        matches!(self, Refused::Node(NodeError::NotLeader { leader: None } | NodeError::Unavailable(_)))
    }
}

/// One client's session, whatever its protocol. See the module docs.
#[derive(Debug)]
pub struct Session {
    shared: Arc<Shared>,
    /// Who the client is: `None` until it authenticates, where authentication is required.
    identity: Option<Identity>,
    /// Whether commands are checked against the user's rules here (by [`Command::categories`]);
    /// RESP checks them itself, by its command table, and leaves only names to the session.
    check_commands: bool,
    /// Opened (or resumed) on first need.
    bound: Option<Bound>,
    /// This session's effects, from the router; there from the moment the session is open, so
    /// no wake-up of a wait it starts can be missed.
    effects: Option<mpsc::UnboundedReceiver<Effect>>,
    /// Flow control: the routes of the messages this connection sent, and whether it is stopped.
    throttle: Throttle,
}

/// The session a connection is bound to.
#[derive(Debug, Clone, Copy)]
struct Bound {
    id: SessionId,
    secret: u64,
    /// The open or resume that bound it here: closing names it, so that a connection whose
    /// session was resumed elsewhere cannot close it there.
    binding: u64,
}

impl Session {
    pub fn new(shared: Arc<Shared>) -> Session {
        let identity = shared.users.unauthenticated();
        let throttle = Throttle::new(shared.limits.queue_flow_limit);
        Session { shared, identity, check_commands: true, bound: None, effects: None, throttle }
    }

    /// Who the client is now; `None` before it authenticates (where it must).
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// The client authenticated as `identity` (`AUTH`, `HELLO`, a login, a request's
    /// credentials). A session already open stays its first user's.
    pub fn set_identity(&mut self, identity: Identity) {
        self.identity = Some(identity);
    }

    /// The front end checks each command's rules itself (RESP, by its command table); the
    /// session then checks only the names a command touches.
    pub fn commands_checked_by_front_end(&mut self) {
        self.check_commands = false;
    }

    /// The client's identity as the user table says now: refused when it never authenticated
    /// (where it must) or its user was deleted or turned off since.
    pub fn who(&mut self) -> Result<&Identity, Refused> {
        let now = match &self.identity {
            None => return Err(AuthError::NoAuth.into()),
            Some(identity) => self.shared.users.refresh(identity),
        };
        self.identity = now;
        self.identity.as_ref().ok_or(Refused::Auth(AuthError::NoAuth))
    }

    /// Checks `cmd` against the user's permissions, and wraps it to run as the user.
    fn permit(&mut self, cmd: Command) -> Result<Command, Refused> {
        let check_commands = self.check_commands;
        let who = self.who()?;
        if check_commands {
            who.check(&cmd)?;
        } else {
            who.perms().check_names(&cmd)?;
        }
        Ok(who.wrap(cmd))
    }

    /// Checks a read against the user's permissions.
    fn permit_query(&mut self, query: &Query) -> Result<(), Refused> {
        let check_commands = self.check_commands;
        let who = self.who()?;
        if check_commands {
            who.check_query(query)?;
        } else {
            who.perms().check_query_names(query)?;
        }
        Ok(())
    }

    /// The session's id, opening it in the log (and registering with the router) the first time.
    pub async fn open(&mut self) -> Result<SessionId, Refused> {
        if let Some(bound) = self.bound {
            return Ok(bound.id);
        }
        let secret = crate::host::secret();
        let open =
            Command::OpenSession { host: self.shared.host, secret, timeout: self.shared.session_timeout };
        let open = self.who()?.wrap(open);
        // Once per session: boxed, so the callers' futures do not carry its state.
        match Box::pin(self.shared.node.propose(open)).await? {
            Reply::Session(id) => {
                self.bind(Bound { id, secret, binding: id.0 });
                Ok(id)
            }
            Reply::Error(e) => Err(NodeError::Fatal(format!("open session refused: {e}")).into()),
            other => Err(NodeError::Fatal(format!("open session replied {other:?}")).into()),
        }
    }

    /// The session's id and secret (what resumes it elsewhere), opening it if needed.
    pub async fn info(&mut self) -> Result<(SessionId, u64), Refused> {
        self.open().await?;
        let bound = self.bound.expect("open binds the session");
        Ok((bound.id, bound.secret))
    }

    /// Binds this connection, which has no session yet, to the open session `id` whose secret
    /// is `secret`, wherever it was opened: its holds and deliveries are this connection's from
    /// now on; its waits and consumers have ended. `Ok(Reply::Error)` when the core refuses (no
    /// such session, or a wrong secret: one text for both).
    pub async fn resume(&mut self, id: SessionId, secret: u64) -> Result<Reply, Refused> {
        if self.bound.is_some() {
            return Err(Refused::SessionOpen);
        }
        let resume = Command::ResumeSession {
            session: id,
            secret,
            host: self.shared.host,
            timeout: self.shared.session_timeout,
        };
        let resume = self.who()?.wrap(resume);
        match Box::pin(self.shared.node.propose(resume)).await? {
            Reply::Int(binding) => {
                let binding = u64::try_from(binding).expect("bindings are ids, never negative");
                self.bind(Bound { id, secret, binding });
                Ok(Reply::Ok)
            }
            refused @ Reply::Error(_) => Ok(refused),
            other => Err(NodeError::Fatal(format!("resume session replied {other:?}")).into()),
        }
    }

    fn bind(&mut self, bound: Bound) {
        self.effects = Some(self.shared.router.register(bound.id, bound.binding));
        self.bound = Some(bound);
    }

    /// Checks `cmd` against the limits; see [`admit`].
    pub fn admit(&self, cmd: &Command) -> Result<(), Refused> {
        admit(&self.shared, cmd)
    }

    /// Admits `cmd` and puts it in the log, bound to this session when it acts for one, without
    /// waiting for its reply: commands submitted one after another are applied in that order, so
    /// a front end can pipeline. [`Session::answer`] awaits the reply.
    pub async fn submit(&mut self, mut cmd: Command) -> Result<Answer, Refused> {
        self.admit(&cmd)?;
        self.throttle.note(&cmd);
        if let Some(slot) = cmd.session_mut() {
            *slot = Some(self.open().await?);
        }
        if let Some(budget) = cmd.script_budget_mut() {
            *budget = self.shared.limits.script_budget;
        }
        // Checked where the session's holds and waits are, in the state machine.
        let cmd = self.shared.session_limits.wrap(cmd);
        let cmd = self.permit(cmd)?;
        Ok(self.shared.node.submit(cmd).await?)
    }

    /// Flow control after a read round (see `flow.rs`): whether the front end must stop reading
    /// because a queue this connection published to in the round has `queue-flow-limit` ready
    /// messages, counting its messages not yet applied (submitted, no reply yet: what `unapplied`
    /// counts) as already there. Cheap when nothing was published: no look at the state, and no
    /// count.
    pub fn flow_check(&mut self, unapplied: impl FnOnce() -> u64) -> bool {
        let (node, sender) = (&self.shared.node, self.bound.map(|b| b.id));
        self.throttle.check(&self.shared.stats, Instant::now(), unapplied, |routes| {
            flow::backlog(node, routes, sender)
        })
    }

    /// While stopped by [`Session::flow_check`]: whether the queues that stopped it are below
    /// half the limit now, and the front end may read again. A front end looks every
    /// [`flow::RECHECK`].
    pub fn flow_released(&mut self, unapplied: impl FnOnce() -> u64) -> bool {
        let (node, sender) = (&self.shared.node, self.bound.map(|b| b.id));
        !self.throttle.recheck(Instant::now(), unapplied, |routes| flow::backlog(node, routes, sender))
    }

    /// Flow control for a front end that reads no more until its replies are out (RESP between
    /// two pipelines; HTTP, whose client sends its next request after the answer): returns at once
    /// unless the pipeline just run took a consumed queue to `queue-flow-limit`; then waits until
    /// that queue is below half of it (or shutdown begins). Nothing is refused: the client's next
    /// requests wait in its socket meanwhile.
    pub async fn flow_wait(&mut self) {
        let sender = self.bound.map(|b| b.id);
        let Shared { node, stats, shutdown, .. } = &*self.shared;
        self.throttle.wait(node, stats, sender, shutdown).await;
    }

    /// A submitted command's reply, counted in the stats.
    pub async fn answer(&self, answer: Answer) -> Result<Reply, Refused> {
        // A dropped sender means the node stopped before answering.
        let reply = answer.await.unwrap_or(Err(NodeError::ShuttingDown))?;
        self.shared.stats.observe(&reply);
        Ok(reply)
    }

    /// Submits `cmd` and waits for its reply. A reply of [`Reply::Waiting`] means the command
    /// waits in line: [`Session::settled`] gives its final reply.
    pub async fn propose(&mut self, cmd: Command) -> Result<Reply, Refused> {
        let answer = self.submit(cmd).await?;
        self.answer(answer).await
    }

    /// Runs queries at one linearizable read point, at the leader's clock (the state machine's
    /// stamps come from it), on whichever node this is.
    pub async fn read(&mut self, mut queries: Vec<Query>) -> Result<Vec<Reply>, Refused> {
        for query in &queries {
            self.permit_query(query)?;
        }
        for budget in queries.iter_mut().filter_map(Query::script_budget_mut) {
            *budget = self.shared.limits.script_budget;
        }
        // A read-only script is checked call by call against its caller's permissions.
        let caller = self
            .identity
            .as_ref()
            .filter(|_| self.shared.users.required() && queries.iter().any(|q| matches!(q, Query::Eval(_))))
            .map(|id| turnstile_core::Caller { user: id.name().to_owned(), perms: id.perms().clone() });
        let replies = self
            .shared
            .node
            .read_at(move |state, now| {
                queries.into_iter().map(|q| state.query_as(now, q, caller.as_ref())).collect::<Vec<_>>()
            })
            .await?;
        Ok(replies)
    }

    /// Runs one query at a linearizable read point.
    pub async fn query(&mut self, query: Query) -> Result<Reply, Refused> {
        Ok(self.read(vec![query]).await?.pop().expect("one reply per query"))
    }

    /// Parks until the state machine settles wait `wait_id` (granted, delivered or timed out)
    /// and returns the reply that ends it. Effects about other waits of this session are
    /// dropped. Cancel-safe: a front end may select on it with its socket and call it again.
    pub async fn settled(&mut self, wait_id: u64) -> Result<Reply, Refused> {
        let _blocked = Blocked::new(&self.shared);
        let effects = self.effects.as_mut().expect("a wait belongs to an open session");
        loop {
            // The router stops (drops the sender) only at shutdown.
            let effect = effects.recv().await.ok_or(NodeError::ShuttingDown)?;
            if let Some(reply) = settled(effect, wait_id) {
                return Ok(reply);
            }
        }
    }

    /// Takes this session's effects (deliveries, cancels, grants) for a front end that handles
    /// them itself, as AMQP's consumers do; `None` before the session is open or once taken.
    pub fn take_effects(&mut self) -> Option<mpsc::UnboundedReceiver<Effect>> {
        self.effects.take()
    }

    /// Closes the session in the log (if it was opened, and was not resumed elsewhere since):
    /// its waits and consumers end, its holds and deliveries are released unless `KEEP`.
    pub async fn close(mut self) {
        if let Some(bound) = self.bound.take() {
            self.shared.router.unregister(bound.id, bound.binding);
            close_in_log(&self.shared, bound).await;
        }
    }
}

/// Checks `cmd` against the server's limits (`max-payload`, `max-name-len`, `max-memory`); a
/// refusal is counted in the stats.
pub fn admit(shared: &Shared, cmd: &Command) -> Result<(), Refused> {
    let result = check(&shared.limits, cmd, || shared.node.payload_bytes());
    match &result {
        Err(Refused::OutOfMemory) => bump(&shared.stats.counters.pushes_refused_oom),
        Err(_) => bump(&shared.stats.counters.limits_refused),
        Ok(()) => {}
    }
    result
}

/// A session dropped without [`Session::close`] (an HTTP client that went away mid-wait) is
/// closed from a task of its own.
impl Drop for Session {
    fn drop(&mut self) {
        if let Some(bound) = self.bound.take() {
            self.shared.router.unregister(bound.id, bound.binding);
            let shared = self.shared.clone();
            tokio::spawn(async move { close_in_log(&shared, bound).await });
        }
    }
}

async fn close_in_log(shared: &Arc<Shared>, bound: Bound) {
    if closed(shared, &bound).await {
        return;
    }
    // No leader now (a partition, an election): this host lives on, so its timeout would never
    // end the session, and its deliveries would stay out and its holds held. The close is asked
    // again until it applies (closing twice is harmless: the binding), from a task of its own so
    // that the connection's end waits for nothing.
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut pause = CLOSE_RETRY_FIRST;
        loop {
            tokio::time::sleep(pause).await;
            if closed(&shared, &bound).await {
                return;
            }
            pause = (pause * 2).min(CLOSE_RETRY_MAX);
        }
    });
}

/// One try at closing a session in the log: false if it should be tried again.
async fn closed(shared: &Shared, bound: &Bound) -> bool {
    let session = bound.id;
    match shared.node.propose(Command::CloseSession { session, binding: Some(bound.binding) }).await {
        Ok(Reply::Int(0)) => tracing::debug!(%session, "session resumed elsewhere; left open"),
        Ok(_) => {}
        // Stopping: the host's timeout (or, for a single node, the next start) ends it.
        Err(NodeError::ShuttingDown) => tracing::debug!(%session, "session left to the host's timeout"),
        Err(e @ (NodeError::NotLeader { .. } | NodeError::Unavailable(_) | NodeError::Indeterminate(_))) => {
            tracing::debug!(%session, error = %e, "session not closed yet; asking again");
            return false;
        }
        Err(e) => tracing::warn!(%session, error = %e, "session not closed; the host's timeout will end it"),
    }
    true
}

/// The first pause before a session's close is asked again, doubled up to [`CLOSE_RETRY_MAX`].
const CLOSE_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(100);
const CLOSE_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// Counts a session as blocked while it lives.
struct Blocked<'a>(&'a Shared);

impl<'a> Blocked<'a> {
    fn new(shared: &'a Shared) -> Blocked<'a> {
        shared.stats.blocked.fetch_add(1, Ordering::Relaxed);
        Blocked(shared)
    }
}

impl Drop for Blocked<'_> {
    fn drop(&mut self) {
        self.0.stats.blocked.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The limits' verdict on `cmd`; `stored` gives the payload bytes stored now (read only for a
/// message, when there is a memory limit).
fn check(limits: &Limits, cmd: &Command, stored: impl FnOnce() -> u64) -> Result<(), Refused> {
    if cmd.payload_len() > limits.max_payload {
        return Err(Refused::PayloadTooLarge { limit: limits.max_payload });
    }
    let mut too_long = None;
    cmd.names(&mut |kind, name| {
        if name.len() > limits.max_name_len && too_long.is_none() {
            too_long = Some(kind);
        }
    });
    if let Some(kind) = too_long {
        return Err(Refused::NameTooLong { kind, limit: limits.max_name_len });
    }
    if let Some(size) = cmd.message_len()
        && limits.max_memory > 0
        && stored().saturating_add(size as u64) > limits.max_memory
    {
        return Err(Refused::OutOfMemory);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use turnstile_core::{Fence, Push, SetKey};

    use super::*;

    fn limits() -> Limits {
        Limits {
            max_payload: 8,
            max_name_len: 4,
            max_args: 16,
            max_memory: 100,
            max_clients: 10,
            script_budget: 1000,
            queue_flow_limit: 0,
        }
    }

    /// A known leader is a redirect; no leader, or a leader without its quorum, is CLUSTERDOWN.
    #[test]
    fn a_node_that_reaches_no_leader_says_clusterdown() {
        let node = |e: NodeError| Refused::Node(e);
        let cases = [
            (node(NodeError::NotLeader { leader: Some("10.0.0.2:7381".into()) }), "NOTLEADER", false),
            (node(NodeError::NotLeader { leader: None }), "CLUSTERDOWN", true),
            (node(NodeError::Unavailable("the leader's lease expired".into())), "CLUSTERDOWN", true),
            (node(NodeError::Indeterminate("discarded".into())), "ERR", false),
            (node(NodeError::ShuttingDown), "ERR", false),
            (Refused::OutOfMemory, "OOM", false),
        ];
        for (refused, code, down) in cases {
            assert_eq!((refused.code(), refused.cluster_down()), (code, down), "{refused}");
        }
    }

    #[test]
    fn payloads_names_and_memory_are_checked_with_the_setting_named() {
        let ok = || 0;
        assert!(check(&limits(), &Command::Push(Push::new("q", "12345678")), ok).is_ok());
        let big = check(&limits(), &Command::Push(Push::new("q", "123456789")), ok).unwrap_err();
        assert_eq!(big.to_string(), "value is larger than max-payload (8 bytes)");
        let big = check(&limits(), &Command::Set(SetKey::new("k", "123456789")), ok).unwrap_err();
        assert_eq!(big.code(), "ERR");

        let long = check(&limits(), &Command::Push(Push::new("queue", "x")), ok).unwrap_err();
        assert_eq!(long.to_string(), "queue name is longer than max-name-len (4 bytes)");
        let mut fenced = Push::new("q", "x");
        fenced.fence = Some(Fence { lock: "a-lock".into(), token: 1 });
        let long = check(&limits(), &Command::Push(fenced), ok).unwrap_err();
        assert_eq!(long.to_string(), "lock name is longer than max-name-len (4 bytes)");
        let del = Command::Del { keys: vec!["k".into(), "long-key".into()], fence: None };
        assert_eq!(
            check(&limits(), &del, ok).unwrap_err().to_string(),
            "key name is longer than max-name-len (4 bytes)"
        );

        // Memory: the message's size counts, and only messages are refused.
        assert!(check(&limits(), &Command::Push(Push::new("q", "1234")), || 96).is_ok());
        let oom = check(&limits(), &Command::Push(Push::new("q", "12345")), || 96).unwrap_err();
        assert_eq!(
            (oom.code(), oom.to_string().as_str()),
            ("OOM", "command not allowed when used memory > 'max-memory'")
        );
        assert!(check(&limits(), &Command::Set(SetKey::new("k", "12345")), || 1000).is_ok());
        let unlimited = Limits { max_memory: 0, ..limits() };
        assert!(check(&unlimited, &Command::Push(Push::new("q", "1")), || u64::MAX).is_ok());
    }
}
