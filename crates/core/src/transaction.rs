//! Transactions: `MULTI` … `EXEC` as one entry of the log, with `WATCH`'s check first.
//!
//! ```text
//!  Exec { watches, steps } ─► every watched key still at the version WATCH read?
//!                               no  ─► Nil, nothing applied
//!                               yes ─► each step in order, without waiting:
//!                                        a write: dispatched as if sent alone (its effects,
//!                                                 then the queues it freed are served)
//!                                        a read:  answered here, seeing the writes before it
//!                                      ─► Array of the steps' replies (errors as elements)
//! ```
//!
//! Being one entry is what makes a transaction atomic: every node applies all of it or none, and
//! a crash either lost the entry whole (it was never acknowledged) or replays it whole.
//!
//! A key's version is the log index of its last change, and 0 when it does not exist. The one
//! change `WATCH` cannot see is a key that did not exist, was created and then deleted again before
//! `EXEC`: it is back at 0. Every other change is seen, a TTL set or moved and an expiry included.

use crate::{Command, CoreError, Effect, Reply, SessionId, State, Step};

impl State {
    pub(crate) fn exec(
        &mut self,
        session: Option<SessionId>,
        watches: &[(String, u64)],
        steps: Vec<Step>,
        actor: Option<SessionId>,
        fx: &mut Vec<Effect>,
    ) -> Reply {
        // Inside `apply` every due timer has fired, so a key past its TTL is already gone.
        if watches.iter().any(|(key, version)| self.key_version(key, self.clock) != *version) {
            return Reply::Nil;
        }
        let replies = steps.into_iter().map(|step| self.step(step, session, actor, fx)).collect();
        Reply::Array(replies)
    }

    fn step(
        &mut self,
        step: Step,
        session: Option<SessionId>,
        actor: Option<SessionId>,
        fx: &mut Vec<Effect>,
    ) -> Reply {
        match step {
            Step::Read(query) => self.query(self.clock, query),
            Step::Write(Command::Exec { .. }) => {
                Reply::Error(CoreError::InvalidArgument("EXEC cannot be nested".into()))
            }
            Step::Write(mut cmd) => {
                cmd.without_wait();
                if let Some(slot @ None) = cmd.session_mut() {
                    *slot = session;
                }
                let reply = self.dispatch(cmd, actor, fx).unwrap_or_else(Reply::Error);
                // As between two entries: a step that freed credit (an ack, a cancel) has its
                // queues served before the next step looks at them.
                self.serve_pending(fx);
                reply
            }
        }
    }

    /// [`crate::Query::KeyVersions`].
    pub(crate) fn key_versions(&self, keys: &[String], now: crate::Timestamp) -> Reply {
        Reply::Array(
            keys.iter()
                .map(|key| Reply::Int(i64::try_from(self.key_version(key, now)).unwrap_or(i64::MAX)))
                .collect(),
        )
    }
}
