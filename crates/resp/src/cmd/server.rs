//! What client libraries send besides their real work: `CONFIG TIME WAIT READONLY READWRITE RESET`.
//!
//! Libraries probe settings at connect (`CONFIG GET maxmemory`, `notify-keyspace-events`), ask
//! `WAIT` after a write they want replicated, and send `READONLY` to every node of a cluster; a
//! pool sends `RESET` before it hands a connection to its next user. None of these touches the
//! state machine: each becomes a [`ConnCmd`] the connection answers from the server's settings.

use super::spec::{Flag, Group, Spec, block, command as cmd, container, integer, string};
use super::{Action, Args, ConnCmd, int};
use crate::Frame;
use turnstile_core::Category as C;

/// The server commands of this file, in the order the docs list them.
pub(super) const COMMANDS: &[Spec] = &[
    container("config", Group::Server, "The server's settings, as Redis names them, for the client libraries that probe them.", CONFIG),
    cmd("time", Group::Server, "The node's clock. Refused inside scripts, which must be deterministic.", time)
        .reply("`[unix-seconds, microseconds]`, two bulk strings")
        .flags(&[Flag::Fast, Flag::NoScript]),
    cmd("wait", Group::Server, "Answers at once how many other nodes hold every write this connection was answered for: an answer means the write is on a majority of the voters, so that is a majority less one (0 for a single node). It never blocks, whatever the timeout.", wait)
        .args(&[
            integer("numreplicas", "how many the caller wants (not waited for)"),
            integer("timeout", "ms; checked, not waited"),
        ])
        .reply("the number of other nodes that hold every acknowledged write")
        .errors(&["`ERR timeout is not an integer or out of range`", "`ERR timeout is negative`"])
        .flags(&[Flag::NoScript])
        .acl(&[C::Connection]),
    cmd("readonly", Group::Connection, "Accepted, for cluster-aware clients: every node serves reads (linearizable) and writes (forwarded to the leader).", readonly)
        .reply("`OK`")
        .flags(&[Flag::Fast]),
    cmd("readwrite", Group::Connection, "Accepted; undoes READONLY.", readwrite)
        .reply("`OK`")
        .flags(&[Flag::Fast]),
    cmd("reset", Group::Connection, "Makes the connection new again: leaves every channel and pattern, forgets its name and library, goes back to RESP2.", reset)
        .reply("`RESET`")
        .flags(&[Flag::Fast, Flag::NoAuth, Flag::NoScript]),
];

/// `CONFIG`'s subcommands.
const CONFIG: &[Spec] = &[
    cmd("config|get", Group::Server, "The settings whose names match the patterns: the ones client libraries probe, Redis's names and values (`maxmemory`, `maxclients`, `appendonly`, `appendfsync`, `save`, `databases`, `timeout`, `notify-keyspace-events`, `cluster-enabled`, `lua-time-limit`, `busy-reply-threshold`, `client-output-buffer-limit` ...). Unknown names match nothing.", config_get)
        .args(&[string("parameter", "a name or a glob pattern, case-insensitive").multiple()])
        .reply("a map of name to value (a flat array in RESP2); empty when nothing matches")
        .acl(&[C::Admin, C::Dangerous]),
    cmd("config|set", Group::Server, "Refused: Turnstile's settings are given at start (command line or config file).", config_set)
        .args(&[block("data", &[string("parameter", "a setting"), string("value", "its value")], "").multiple()])
        .errors(&["`ERR CONFIG SET is not supported: ...`"])
        .acl(&[C::Admin, C::Dangerous]),
];

/// `CONFIG GET parameter [parameter ...]`.
fn config_get(args: Args<'_>) -> Result<Action, Frame> {
    Ok(Action::Connection(ConnCmd::ConfigGet(args.remaining().to_vec())))
}

/// `CONFIG SET parameter value [parameter value ...]`: parsed so that the refusal can name the
/// first setting.
fn config_set(args: Args<'_>) -> Result<Action, Frame> {
    Ok(Action::Connection(ConnCmd::ConfigSet(args.remaining().first().cloned().unwrap_or_default())))
}

/// `TIME`.
fn time(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    Ok(Action::Connection(ConnCmd::Time))
}

/// `WAIT numreplicas timeout`, checked in Redis 7's order and with its texts.
fn wait(mut args: Args<'_>) -> Result<Action, Frame> {
    let replicas = int(args.next()?)?;
    let timeout = crate::wire::parse_int(args.next()?)
        .ok_or_else(|| Frame::error("ERR", "timeout is not an integer or out of range"))?;
    args.end()?;
    let timeout = u64::try_from(timeout).map_err(|_| Frame::error("ERR", "timeout is negative"))?;
    Ok(Action::Connection(ConnCmd::Wait { replicas, timeout }))
}

/// `READONLY`.
fn readonly(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    Ok(Action::Connection(ConnCmd::ReadOnly(true)))
}

/// `READWRITE`.
fn readwrite(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    Ok(Action::Connection(ConnCmd::ReadOnly(false)))
}

/// `RESET`.
fn reset(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    Ok(Action::Connection(ConnCmd::Reset))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::testing::{conn, error_of};
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(
            conn("CONFIG GET maxmemory max*"),
            ConnCmd::ConfigGet(vec![Bytes::from_static(b"maxmemory"), Bytes::from_static(b"max*")])
        );
        assert_eq!(conn("config set maxmemory 1"), ConnCmd::ConfigSet(Bytes::from_static(b"maxmemory")));
        assert_eq!(conn("TIME"), ConnCmd::Time);
        assert_eq!(conn("WAIT 1 0"), ConnCmd::Wait { replicas: 1, timeout: 0 });
        assert_eq!(conn("wait -1 100"), ConnCmd::Wait { replicas: -1, timeout: 100 });
        assert_eq!(conn("READONLY"), ConnCmd::ReadOnly(true));
        assert_eq!(conn("READWRITE"), ConnCmd::ReadOnly(false));
        assert_eq!(conn("RESET"), ConnCmd::Reset);
    }

    #[test]
    fn errors_are_redis_7s() {
        assert_eq!(error_of("CONFIG"), "ERR wrong number of arguments for 'config' command");
        assert_eq!(error_of("CONFIG GET"), "ERR wrong number of arguments for 'config|get' command");
        assert_eq!(error_of("CONFIG SET a"), "ERR wrong number of arguments for 'config|set' command");
        assert_eq!(error_of("CONFIG FOO"), "ERR unknown subcommand 'FOO'. Try CONFIG HELP.");
        assert_eq!(error_of("WAIT 0"), "ERR wrong number of arguments for 'wait' command");
        assert_eq!(error_of("WAIT x 0"), "ERR value is not an integer or out of range");
        assert_eq!(error_of("WAIT 0 x"), "ERR timeout is not an integer or out of range");
        assert_eq!(error_of("WAIT 0 -1"), "ERR timeout is negative");
        assert_eq!(error_of("TIME x"), "ERR wrong number of arguments for 'time' command");
        assert_eq!(error_of("RESET x"), "ERR wrong number of arguments for 'reset' command");
        assert_eq!(error_of("READONLY x"), "ERR wrong number of arguments for 'readonly' command");
    }
}
