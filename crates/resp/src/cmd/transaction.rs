//! Transactions: `MULTI EXEC DISCARD WATCH UNWATCH`, with Redis 7's syntax and texts.
//!
//! All five are answered by the connection, which keeps the transaction: the commands queued
//! since `MULTI` with the shape each reply is to be rendered in, and the keys `WATCH` read with
//! their versions. `EXEC` then becomes one [`turnstile_core::Command::Exec`] in the log, so the
//! queued commands are applied together on every node, or (a watched key changed) not at all.
//!
//! ```text
//!  MULTI ─► +OK      SET k v ─► +QUEUED      BAD ─► -ERR …, the transaction is marked
//!  EXEC  ─► [each step's reply]  |  nil (a watched key changed)  |  -EXECABORT (marked)
//! ```

use super::spec::{Flag, Group, Keys, Spec, command, key};
use super::{Action, Args, ConnCmd, name};
use crate::Frame;

/// The transaction commands, in the order the docs list them.
pub(super) const COMMANDS: &[Spec] = &[
    command(
        "multi",
        Group::Transactions,
        "Starts a transaction: the commands after it are queued (answered `QUEUED`) until EXEC. Turnstile's own `LOCK.*`, `SEM.*`, `Q.*` and `FENCE.CHECK` may be queued too, so that \"ack message M, release lock L, push N\" commits as one step. A command that would wait (`WAIT ms`) answers at once instead, as a blocking command does inside a Redis transaction. Connection commands other than `PING`, `ECHO`, `SELECT` and `UNWATCH` are refused inside one.",
        multi,
    )
    .reply("`OK`")
    .errors(&[
        "`ERR MULTI calls can not be nested`",
        "`ERR Command not allowed inside a transaction`: a connection command (HELLO, AUTH, CLIENT, INFO ...); the transaction is then discarded at EXEC",
    ])
    .flags(&[Flag::Fast]),
    command(
        "exec",
        Group::Transactions,
        "Applies the queued commands as one entry of the log: every node applies all of them, in order, with no other command in between, or none. A command that fails as it runs gives its error in the reply and the others still run (no rollback, as in Redis).",
        exec,
    )
    .reply("an array with each queued command's reply; nil when a watched key changed since WATCH (nothing was applied)")
    .errors(&[
        "`ERR EXEC without MULTI`",
        "`EXECABORT Transaction discarded because of previous errors.`: a command was refused while queueing",
        "`EXECABORT Transaction discarded because of: ...`: a limit (`max-memory`, `max-payload`, `max-name-len`) refused the transaction; nothing was applied",
    ]),
    command("discard", Group::Transactions, "Drops the queued commands and every watched key.", discard)
        .reply("`OK`")
        .errors(&["`ERR DISCARD without MULTI`"])
        .flags(&[Flag::Fast]),
    command(
        "watch",
        Group::Transactions,
        "Remembers each key's version (read as linearizably as GET), so that the next EXEC applies nothing if any of them changes first: its value, type or TTL, or its expiry. A key that does not exist is remembered as absent; one created and deleted again before EXEC is not seen as changed.",
        watch,
    )
    .args(&[key("key", "a key to watch").multiple()])
    .reply("`OK`")
    .errors(&["`ERR WATCH inside MULTI is not allowed`"])
    .flags(&[Flag::Fast])
    .keys(Keys::ALL),
    command("unwatch", Group::Transactions, "Forgets every watched key.", unwatch).reply("`OK`").flags(&[Flag::Fast]),
];

/// What a transaction command asks of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxCmd {
    Multi,
    Exec,
    Discard,
    /// The keys to watch, in the order given.
    Watch(Vec<String>),
    Unwatch,
}

fn tx(cmd: TxCmd) -> Result<Action, Frame> {
    Ok(Action::Connection(ConnCmd::Transaction(cmd)))
}

fn multi(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    tx(TxCmd::Multi)
}

fn exec(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    tx(TxCmd::Exec)
}

fn discard(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    tx(TxCmd::Discard)
}

fn watch(args: Args<'_>) -> Result<Action, Frame> {
    let keys = args.remaining().iter().map(name).collect::<Result<_, _>>()?;
    tx(TxCmd::Watch(keys))
}

fn unwatch(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    tx(TxCmd::Unwatch)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{error_of, parse_line};
    use super::*;

    fn parsed(line: &str) -> TxCmd {
        match parse_line(line) {
            Ok(Action::Connection(ConnCmd::Transaction(cmd))) => cmd,
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    #[test]
    fn each_command_parses_to_its_transaction_step() {
        assert_eq!(parsed("MULTI"), TxCmd::Multi);
        assert_eq!(parsed("exec"), TxCmd::Exec);
        assert_eq!(parsed("Discard"), TxCmd::Discard);
        assert_eq!(parsed("UNWATCH"), TxCmd::Unwatch);
        assert_eq!(parsed("WATCH b a b"), TxCmd::Watch(vec!["b".into(), "a".into(), "b".into()]));
    }

    #[test]
    fn arity_errors_are_redis_texts() {
        assert_eq!(error_of("MULTI x"), "ERR wrong number of arguments for 'multi' command");
        assert_eq!(error_of("EXEC x"), "ERR wrong number of arguments for 'exec' command");
        assert_eq!(error_of("DISCARD x"), "ERR wrong number of arguments for 'discard' command");
        assert_eq!(error_of("UNWATCH x"), "ERR wrong number of arguments for 'unwatch' command");
        assert_eq!(error_of("WATCH"), "ERR wrong number of arguments for 'watch' command");
    }

    #[test]
    fn watched_keys_are_names() {
        let args = [bytes::Bytes::from_static(b"WATCH"), bytes::Bytes::from_static(b"\xff")];
        assert_eq!(
            super::super::parse(&args).unwrap_err(),
            Frame::Error("ERR invalid name (not UTF-8)".into())
        );
    }
}
