//! A RESP connection's transaction: what `MULTI` queued and what `WATCH` read, until `EXEC` turns
//! them into one entry of the log.
//!
//! ```text
//!  MULTI ─► open ─┬─ a write / a read ─► checked against the limits, kept as a step ─► +QUEUED
//!                 ├─ PING ECHO SELECT UNWATCH ─► its reply kept for its place in EXEC's
//!                 ├─ a refused or unparsable command ─► its error; the transaction is marked
//!                 └─ EXEC ─► marked?  -EXECABORT, nothing sent to the log
//!                           else one Command::Exec { watches, steps } through the session
//!                                ─► nil (a watched key changed) | each reply in its own shape
//!  WATCH k … ─► each key's version, read linearizably, kept until EXEC, DISCARD or UNWATCH
//! ```
//!
//! Nothing queued reaches the log before `EXEC`, so a connection (or a server) that dies in
//! between leaves nothing behind; and the `EXEC` entry is applied whole or not at all.
//!
//! Inside a transaction a command that would wait answers at once (Redis's rule for blocking
//! commands): one entry of the log cannot stay half applied while a wait lasts. Connection
//! commands that change the connection (`HELLO`, `AUTH`, `CLIENT ...`, `SESSION ...`) or ask the
//! server about itself (`INFO`, `COMMAND`, `CLUSTER.*`) are refused inside one with Redis's text
//! for commands it does not allow there; `QUIT` acts at once, as in Redis.

use turnstile_core::{Command, Query, Reply, Step};
use turnstile_resp::cmd::{self, Action, ConnCmd, ReplyShape, TxCmd};
use turnstile_resp::{Frame, Protocol};

use super::connection::refused;
use crate::session::{Refused, Session};

/// The connection's transaction state; see the module docs.
#[derive(Debug, Default)]
pub(super) struct Transaction {
    /// From `MULTI` to `EXEC` or `DISCARD`.
    queued: Option<Queued>,
    /// Each watched key with the version `WATCH` read, in the order first watched. A key watched
    /// again keeps its first version, as in Redis: a change between the two still counts.
    watches: Vec<(String, u64)>,
}

#[derive(Debug, Default)]
struct Queued {
    /// What goes to the log, in order.
    steps: Vec<Step>,
    /// One per queued command, in order: how its place in `EXEC`'s reply is filled.
    places: Vec<Place>,
    /// A command was refused while queueing: `EXEC` discards the transaction.
    refused: bool,
}

#[derive(Debug)]
enum Place {
    /// The next step's reply, rendered in this shape.
    Step(ReplyShape),
    /// Answered by the connection itself.
    Local(Frame),
}

impl Transaction {
    /// Whether `request` is to be queued rather than run: inside `MULTI`, everything but `MULTI`,
    /// `EXEC`, `DISCARD`, `WATCH` and `QUIT`.
    pub(super) fn queues(&self, request: &Result<Action, Frame>) -> bool {
        self.queued.is_some()
            && !matches!(
                request,
                Ok(Action::Connection(
                    ConnCmd::Transaction(TxCmd::Multi | TxCmd::Exec | TxCmd::Discard | TxCmd::Watch(_))
                        | ConnCmd::Quit
                ))
            )
    }

    /// Queues a request inside `MULTI` (see [`Transaction::queues`]): `+QUEUED`, or the error
    /// that marks the transaction. Writes are checked against the server's limits now, as Redis
    /// refuses a command over `maxmemory` while queueing, and again when `EXEC` is proposed.
    pub(super) fn queue(&mut self, request: Result<Action, Frame>, session: &Session) -> Frame {
        let queued = self.queued.as_mut().expect("queue is called inside MULTI");
        let (step, place) = match request.map(cmd::pubsub::publish_as_write) {
            Err(error) => return queued.refuse(error),
            Ok(Action::Write { mut cmd, shape }) => {
                cmd.without_wait();
                if let Err(e) = session.admit(&cmd) {
                    return queued.refuse(refused(&e));
                }
                (Some(Step::Write(cmd)), Place::Step(shape))
            }
            Ok(Action::Read { query, shape }) => (Some(Step::Read(query)), Place::Step(shape)),
            Ok(Action::Connection(conn)) => match local_reply(conn) {
                Some(frame) => (None, Place::Local(frame)),
                None => {
                    return queued.refuse(Frame::error("ERR", "Command not allowed inside a transaction"));
                }
            },
        };
        queued.steps.extend(step);
        queued.places.push(place);
        Frame::simple("QUEUED")
    }

    /// Runs `MULTI`, `EXEC`, `DISCARD`, `WATCH` or `UNWATCH` (outside `MULTI`).
    pub(super) async fn run(&mut self, cmd: TxCmd, session: &mut Session, protocol: Protocol) -> Frame {
        match cmd {
            TxCmd::Multi if self.queued.is_some() => Frame::error("ERR", "MULTI calls can not be nested"),
            TxCmd::Multi => {
                self.queued = Some(Queued::default());
                Frame::ok()
            }
            TxCmd::Discard => match self.queued.take() {
                Some(_) => {
                    self.watches.clear();
                    Frame::ok()
                }
                None => Frame::error("ERR", "DISCARD without MULTI"),
            },
            TxCmd::Unwatch => {
                self.watches.clear();
                Frame::ok()
            }
            TxCmd::Watch(_) if self.queued.is_some() => {
                Frame::error("ERR", "WATCH inside MULTI is not allowed")
            }
            TxCmd::Watch(keys) => self.watch(keys, session).await,
            TxCmd::Exec => match self.queued.take() {
                Some(queued) => {
                    let watches = std::mem::take(&mut self.watches);
                    exec(queued, watches, session, protocol).await
                }
                None => Frame::error("ERR", "EXEC without MULTI"),
            },
        }
    }

    async fn watch(&mut self, keys: Vec<String>, session: &mut Session) -> Frame {
        let versions = match session.query(Query::KeyVersions { keys: keys.clone() }).await {
            Ok(Reply::Array(versions)) if versions.len() == keys.len() => versions,
            Ok(other) => return unexpected(&other),
            Err(e) => return refused(&e),
        };
        for (key, version) in keys.into_iter().zip(versions) {
            let Reply::Int(version) = version else { return unexpected(&version) };
            if !self.watches.iter().any(|(watched, _)| *watched == key) {
                self.watches.push((key, u64::try_from(version).unwrap_or(0)));
            }
        }
        Frame::ok()
    }
}

impl Queued {
    fn refuse(&mut self, error: Frame) -> Frame {
        self.refused = true;
        error
    }
}

/// The reply a connection command has inside `MULTI`, kept for `EXEC`; `None` for the ones that
/// are refused there.
fn local_reply(conn: ConnCmd) -> Option<Frame> {
    match conn {
        ConnCmd::Ping(None) => Some(Frame::simple("PONG")),
        ConnCmd::Ping(Some(message)) | ConnCmd::Echo(message) => Some(Frame::Bulk(message)),
        ConnCmd::Select(0) => Some(Frame::ok()),
        ConnCmd::Select(_) => Some(Frame::error("ERR", "DB index is out of range")),
        // EXEC forgets the watched keys anyway, once it has checked them.
        ConnCmd::Transaction(TxCmd::Unwatch) => Some(Frame::ok()),
        _ => None,
    }
}

/// `EXEC`: the queued steps as one entry, or the reason nothing was sent.
async fn exec(
    queued: Queued,
    watches: Vec<(String, u64)>,
    session: &mut Session,
    protocol: Protocol,
) -> Frame {
    let Queued { steps, places, refused: marked } = queued;
    if marked {
        return Frame::error("EXECABORT", "Transaction discarded because of previous errors.");
    }
    let mut replies = if steps.is_empty() && watches.is_empty() {
        // Nothing to apply and nothing to check: no entry needed.
        Vec::new().into_iter()
    } else {
        match session.propose(Command::Exec { session: None, watches, steps }).await {
            Ok(Reply::Array(replies)) => replies.into_iter(),
            Ok(Reply::Nil) => return Frame::NullArray,
            Ok(Reply::Error(e)) => return Frame::error(e.code(), e),
            Ok(other) => return unexpected(&other),
            Err(e @ Refused::Node(_)) => return refused(&e),
            // A limit refused it before it reached the log: nothing was applied.
            Err(e) => return aborted(&e),
        }
    };
    let frames = places
        .into_iter()
        .map(|place| match place {
            Place::Local(frame) => frame,
            Place::Step(shape) => match replies.next() {
                Some(reply) => cmd::render(shape, reply, protocol),
                None => Frame::error("ERR", "internal error: EXEC answered fewer replies than steps"),
            },
        })
        .collect();
    Frame::Array(frames)
}

/// Redis 7's text for a transaction refused as a whole at `EXEC`.
fn aborted(e: &Refused) -> Frame {
    let reason = match e.code() {
        "ERR" => e.to_string(),
        code => format!("{code} {e}"),
    };
    Frame::error("EXECABORT", format_args!("Transaction discarded because of: {reason}"))
}

fn unexpected(reply: &Reply) -> Frame {
    Frame::error("ERR", format_args!("internal error: unexpected reply {reply:?}"))
}
