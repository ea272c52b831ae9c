//! Lua scripts (`EVAL`, `EVALSHA`, `SCRIPT`): run inside the state machine, so every node runs
//! the same script on the same state and gets the same result.
//!
//! ```text
//!   Command::Eval ─► State::eval ─► source (from the entry, or the cache by SHA-1)
//!                        │
//!                        ▼
//!                 ScriptHost::run(ctx, ...)     the Lua side lives in another crate (it parses
//!                        │  ▲                   the script's calls as RESP does, and the RESP
//!          ctx.write(cmd)│  │reply              crate depends on this one)
//!          ctx.read(query)  │
//!                        ▼  │
//!                 State::dispatch / State::query, on the state being applied
//! ```
//!
//! Over its instruction budget a script is stopped and everything it wrote is undone: keys from
//! an undo log of their entries as they were (cheap: what lock scripts write), anything else
//! (locks, queues) from a copy of the whole state taken before the first such write (rare). A
//! script that fails by itself (`error()`, a failed `redis.call`) keeps its writes, as in Redis.
//!
//! The host is installed once per process ([`install_script_host`]): it is code, not state,
//! and every node runs the same binary. A `OnceLock` rather than a field of [`State`] because
//! states are made in many places (restores, replays, tests) that should not each have to
//! remember it; a state applied without a host answers scripts with an error, the same on
//! every node of a cluster of such processes.

use std::sync::OnceLock;

use bytes::Bytes;
use sha1::{Digest, Sha1};

use crate::kv::KvEntry;
use crate::{
    Caller, Command, CoreError, Effect, Eval, NameKind, Query, Reply, ScriptRef, SessionId, State, Timestamp,
};

/// The budget a script gets when the server is not told otherwise: about a second of Lua.
pub const DEFAULT_SCRIPT_BUDGET: u64 = 100_000_000;

/// Runs scripts for the state machine. One per process; see [`install_script_host`].
pub trait ScriptHost: Send + Sync + 'static {
    /// Compiles `source`: `Err` is the error text (`ERR Error compiling script ...`).
    fn check(&self, source: &[u8]) -> Result<(), String>;

    /// Runs `source`, whose SHA-1 is `sha`, with `KEYS` and `ARGV`, its calls going through
    /// `ctx`. Must be deterministic: the same state and arguments give the same calls and reply.
    fn run(
        &self,
        ctx: &mut ScriptCtx<'_>,
        sha: &str,
        source: &[u8],
        keys: &[Bytes],
        args: &[Bytes],
    ) -> ScriptOutcome;
}

/// How a script ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptOutcome {
    /// It ran: its value (or its error, whose writes stay).
    Done(Reply),
    /// It did not compile: nothing ran, and it is not cached.
    Invalid(String),
    /// It went over its budget: its writes are undone and the caller gets this error text.
    OverBudget(String),
}

static HOST: OnceLock<Box<dyn ScriptHost>> = OnceLock::new();

/// Installs the process's script host. The first call wins; later ones are ignored (tests in
/// one process install the same host many times).
pub fn install_script_host(host: Box<dyn ScriptHost>) {
    let _ = HOST.set(host);
}

fn host() -> Result<&'static dyn ScriptHost, CoreError> {
    HOST.get()
        .map(|h| h.as_ref())
        .ok_or_else(|| CoreError::Script("ERR scripts are not enabled in this process".into()))
}

/// The SHA-1 of a script's source in lower-case hex: its name in the cache, as in Redis.
pub fn sha1_hex(source: &[u8]) -> String {
    let digest = Sha1::digest(source);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a running script may do to the state: its calls, parsed by the host.
#[derive(Debug)]
pub struct ScriptCtx<'a> {
    target: Target<'a>,
    now: Timestamp,
    session: Option<SessionId>,
    budget: u64,
    /// Who runs the script (the entry's [`Command::AsUser`], or the reader): each of its calls
    /// is checked against these permissions. `None` when authentication is off.
    caller: Option<Caller>,
    /// Keys as they were before the script first wrote them, oldest first: `None` for a key
    /// that did not exist.
    undo: Vec<(String, Option<KvEntry>)>,
    /// The whole state before the first write that is not a plain key write, and how many undo
    /// entries came before it.
    saved: Option<(Box<State>, usize)>,
}

#[derive(Debug)]
enum Target<'a> {
    Apply { state: &'a mut State, fx: &'a mut Vec<Effect> },
    Read(&'a State),
}

impl ScriptCtx<'_> {
    /// Whether writes are refused (`EVAL_RO`).
    pub fn read_only(&self) -> bool {
        matches!(self.target, Target::Read(_))
    }

    /// The VM instructions the script may run.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Who runs the script: the host checks each call against the caller's permissions, by
    /// the same rules as the command sent by the client. Only the entry's caller counts, so
    /// every node decides the same.
    pub fn caller(&self) -> Option<&Caller> {
        self.caller.as_ref()
    }

    /// The caller's session, which the script's holds and pops belong to.
    pub fn session(&self) -> Option<SessionId> {
        self.session
    }

    /// Applies one command of the script. It never waits: a lock or pop that would wait in line
    /// answers at once, as Redis's blocking commands do inside scripts.
    pub fn write(&mut self, mut cmd: Command) -> Reply {
        let Target::Apply { state, fx } = &mut self.target else {
            return Reply::Error(CoreError::Script(
                "ERR Write commands are not allowed from read-only scripts.".into(),
            ));
        };
        match cmd {
            Command::Eval(_)
            | Command::ScriptLoad { .. }
            | Command::ScriptFlush
            | Command::InSession { .. }
            | Command::AsUser { .. }
            | Command::AclSetUser { .. }
            | Command::AclDelUser { .. } => {
                return Reply::Error(CoreError::Script(
                    "ERR This Redis command is not allowed from script".into(),
                ));
            }
            _ => cmd.without_wait(),
        }
        if let Some(slot) = cmd.session_mut() {
            *slot = self.session;
        }
        if cmd.may_wait() {
            // A blocking command this does not know how to make answer at once: it would park
            // a waiter for a script that has long finished.
            return Reply::Error(CoreError::Script(
                "ERR This Redis command is not allowed from script".into(),
            ));
        }
        if self.saved.is_none() {
            if let Some(keys) = written_keys(&cmd) {
                for key in keys {
                    let entry = state.keys.get(&key).cloned();
                    self.undo.push((key, entry));
                }
            } else {
                self.saved = Some((Box::new((**state).clone()), self.undo.len()));
            }
        }
        state.dispatch(cmd, None, fx).unwrap_or_else(Reply::Error)
    }

    /// Answers one read of the script, at the state's clock.
    pub fn read(&mut self, query: Query) -> Reply {
        if matches!(query, Query::Eval(_) | Query::ScriptExists { .. }) {
            return Reply::Error(CoreError::Script(
                "ERR This Redis command is not allowed from script".into(),
            ));
        }
        let state: &State = match &self.target {
            Target::Apply { state, .. } => state,
            Target::Read(state) => state,
        };
        state.query(self.now, query)
    }

    /// Puts the state back as it was before the script's first write.
    fn roll_back(self) {
        let Target::Apply { state, .. } = self.target else { return };
        let mut undo = self.undo;
        if let Some((saved, before)) = self.saved {
            *state = *saved;
            undo.truncate(before);
        }
        for (key, entry) in undo.into_iter().rev() {
            state.restore_key(&key, entry);
        }
    }
}

/// The keys a command writes when it writes nothing but keys, for the undo log; `None` for any
/// other command, which makes the script copy the whole state instead. Only commands known to
/// touch nothing else belong here: a command that also wakes a waiter, say, must not.
/// A list push or move may serve a blocked pop (a waiter, another session's effect), and
/// `FLUSHALL` names no keys: those take the copy. A pop never serves anyone (waiters wait only on
/// empty lists).
fn written_keys(cmd: &Command) -> Option<Vec<String>> {
    let keys_only = matches!(
        cmd,
        Command::Set(_)
            | Command::Del { .. }
            | Command::MSet { .. }
            | Command::Rename { .. }
            | Command::Expire { .. }
            | Command::IncrBy { .. }
            | Command::GetDel { .. }
            | Command::GetEx { .. }
            | Command::Append { .. }
            | Command::IncrByFloat { .. }
            | Command::ExpireAt { .. }
            | Command::Persist { .. }
            | Command::HSet { .. }
            | Command::HDel { .. }
            | Command::HIncrBy { .. }
            | Command::HIncrByFloat { .. }
            | Command::ListPop { .. }
            | Command::ListSet { .. }
            | Command::ListRem { .. }
            | Command::ListTrim { .. }
            | Command::ListInsert { .. }
    );
    let mut keys = Vec::new();
    // The keys are the ones the command names (a fence's lock is only read).
    cmd.names(&mut |kind, name| {
        if kind == NameKind::Key {
            keys.push(name.to_owned());
        }
    });
    keys_only.then_some(keys)
}

impl State {
    /// `EVAL`, `EVALSHA`: see [`Command::Eval`].
    pub(crate) fn eval(&mut self, eval: Eval, fx: &mut Vec<Effect>) -> Result<Reply, CoreError> {
        let host = host()?;
        let Eval { script, keys, args, session, budget } = eval;
        let (sha, source, cache) = match script {
            ScriptRef::Source(source) => (sha1_hex(&source), source, true),
            ScriptRef::Sha(sha) => {
                let sha = sha.to_ascii_lowercase();
                let source = self.scripts.get(&sha).cloned().ok_or(CoreError::NoScript)?;
                (sha, source, false)
            }
        };
        let fx_before = fx.len();
        let now = self.clock;
        let caller = self.caller.clone();
        let mut ctx = ScriptCtx {
            target: Target::Apply { state: self, fx },
            now,
            session,
            budget,
            caller,
            undo: Vec::new(),
            saved: None,
        };
        let outcome = host.run(&mut ctx, &sha, &source, &keys, &args);
        let reply = match outcome {
            ScriptOutcome::Done(reply) => reply,
            ScriptOutcome::Invalid(text) => return Err(CoreError::Script(text)),
            ScriptOutcome::OverBudget(text) => {
                ctx.roll_back();
                fx.truncate(fx_before);
                Reply::Error(CoreError::Script(text))
            }
        };
        if cache {
            self.scripts.insert(sha, source);
        }
        Ok(reply)
    }

    /// `EVAL_RO`, `EVALSHA_RO`: a script whose writes are refused, run on a read for `caller`.
    pub(crate) fn eval_read(
        &self,
        now: Timestamp,
        eval: Eval,
        caller: Option<&Caller>,
    ) -> Result<Reply, CoreError> {
        let host = host()?;
        let Eval { script, keys, args, session, budget } = eval;
        let (sha, source) = match script {
            ScriptRef::Source(source) => (sha1_hex(&source), source),
            ScriptRef::Sha(sha) => {
                let sha = sha.to_ascii_lowercase();
                let source = self.scripts.get(&sha).cloned().ok_or(CoreError::NoScript)?;
                (sha, source)
            }
        };
        let mut ctx = ScriptCtx {
            target: Target::Read(self),
            now,
            session,
            budget,
            caller: caller.cloned(),
            undo: Vec::new(),
            saved: None,
        };
        match host.run(&mut ctx, &sha, &source, &keys, &args) {
            ScriptOutcome::Done(reply) => Ok(reply),
            ScriptOutcome::Invalid(text) | ScriptOutcome::OverBudget(text) => Err(CoreError::Script(text)),
        }
    }

    /// `SCRIPT LOAD`: compiles and caches; replies the SHA-1.
    pub(crate) fn script_load(&mut self, source: Bytes) -> Result<Reply, CoreError> {
        host()?.check(&source).map_err(CoreError::Script)?;
        let sha = sha1_hex(&source);
        self.scripts.insert(sha.clone(), source);
        Ok(Reply::Bytes(Bytes::from(sha)))
    }

    /// `SCRIPT FLUSH`.
    pub(crate) fn script_flush(&mut self) -> Reply {
        self.scripts.clear();
        Reply::Ok
    }

    /// `SCRIPT EXISTS`.
    pub(crate) fn script_exists(&self, shas: &[String]) -> Reply {
        let known = |sha: &String| i64::from(self.scripts.contains_key(&sha.to_ascii_lowercase()));
        Reply::Array(shas.iter().map(|sha| Reply::Int(known(sha))).collect())
    }

    /// The cached scripts' SHA-1s, sorted.
    pub fn script_shas(&self) -> impl Iterator<Item = &str> {
        self.scripts.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_is_redis_s() {
        assert_eq!(sha1_hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(sha1_hex(b"return 1"), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }
}
