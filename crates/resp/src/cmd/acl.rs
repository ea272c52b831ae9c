//! Users and permissions: `ACL WHOAMI | LIST | CAT | USERS | GETUSER | SETUSER | DELUSER | LOG`.
//!
//! Parsing only: the connection answers each from the server's user table (`ACL SETUSER` and
//! `DELUSER` through the log, so that every node has the same users). `ACL CAT` is answered here,
//! from the command table's categories, which are the ones rules match.

use bytes::Bytes;
use turnstile_core::Category as C;

use super::spec::{Group, Spec, command as cmd, container, integer, one_of, string, word};
use super::{Action, Args, ConnCmd, commands};
use crate::Frame;

/// What `ACL` asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclCmd {
    WhoAmI,
    List,
    Users,
    /// `ACL CAT [category]`: answered by [`category_commands`] / [`categories_text`].
    Cat(Option<Bytes>),
    GetUser(Bytes),
    SetUser {
        name: Bytes,
        rules: Vec<Bytes>,
    },
    DelUser(Vec<Bytes>),
    /// `ACL LOG [count]`: the newest `count` entries (10 by default).
    Log(usize),
    LogReset,
}

/// The `ACL` command, in the order the docs list its subcommands.
pub(super) const COMMANDS: &[Spec] = &[container(
    "acl",
    Group::Server,
    "Users and what each may run and touch: the same users for RESP, AMQP and HTTP. Changes go through the log, so every node has them and they survive restarts.",
    ACL,
)];

const ADMIN: &[C] = &[C::Admin, C::Slow, C::Dangerous];

const ACL: &[Spec] = &[
    cmd("acl|whoami", Group::Server, "The user this connection is authenticated as.", whoami)
        .reply("the user's name")
        .acl_only(&[C::Slow]),
    cmd("acl|users", Group::Server, "Every user's name, sorted.", users)
        .reply("an array of names")
        .acl_only(ADMIN),
    cmd("acl|list", Group::Server, "Every user as rules, one line each: `user alice on #<sha256> ~app:* &* lock~app:* allqueues +@all -@admin`.", list)
        .reply("an array of lines")
        .acl_only(ADMIN),
    cmd("acl|getuser", Group::Server, "One user's details: `flags`, `passwords` (SHA-256s), `commands`, `keys`, `channels` as Redis gives them, then `locks` and `queues`.", getuser)
        .args(&[string("username", "the user")])
        .reply("a map, or nil for no such user")
        .acl_only(ADMIN),
    cmd("acl|setuser", Group::Server, "Creates a user (off, with nothing allowed) or changes one, by Redis's rules: `on` `off` `>pass` `<pass` `#sha256` `!sha256` `nopass` `resetpass` `~keys` `allkeys` `resetkeys` `&channels` `allchannels` `resetchannels` `+cmd` `-cmd` `+@category` `-@category` `allcommands` `nocommands` `reset`; and ours: `lock~pattern` `alllocks` `resetlocks` `queue~pattern` (queues and exchanges) `allqueues` `resetqueues`. The whole result is one log entry.", setuser)
        .args(&[string("username", "the user"), string("rule", "a rule, applied in order").multiple().optional()])
        .reply("`OK`")
        .errors(&["`ERR Error in ACL SETUSER modifier '...': Syntax error` (and Redis's other rule errors)"])
        .acl_only(ADMIN),
    cmd("acl|deluser", Group::Server, "Deletes users; their connections are closed. The `default` user cannot be deleted.", deluser)
        .args(&[string("username", "a user").multiple()])
        .reply("how many existed")
        .errors(&["`ERR The 'default' user cannot be removed`"])
        .acl_only(ADMIN),
    cmd("acl|cat", Group::Server, "The categories rules may name, or the commands in one.", cat)
        .args(&[string("category", "a category, without `@`").optional()])
        .reply("an array of names")
        .errors(&["`ERR Unknown category 'x'`"])
        .acl_only(&[C::Slow]),
    cmd("acl|log", Group::Server, "This node's refusals, newest first: failed authentications and commands, keys, channels, locks and queues a user may not touch. Repeats within a minute count on one entry.", log)
        .args(&[one_of("operation", &[integer("count", "how many (default 10)"), word("RESET", "empty the log")], "").optional()])
        .reply("an array of maps: `count`, `reason`, `context`, `object`, `username`, `age-seconds`, `client-info`; `OK` for RESET")
        .acl_only(ADMIN),
    cmd("acl|help", Group::Server, "What ACL's subcommands do.", help).reply("an array of lines").acl_only(&[C::Slow]),
];

fn whoami(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    Ok(acl(AclCmd::WhoAmI))
}

fn users(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    Ok(acl(AclCmd::Users))
}

fn list(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    Ok(acl(AclCmd::List))
}

fn getuser(mut args: Args<'_>) -> Result<Action, Frame> {
    let name = args.next()?.clone();
    args.end()?;
    Ok(acl(AclCmd::GetUser(name)))
}

fn setuser(mut args: Args<'_>) -> Result<Action, Frame> {
    let name = args.next()?.clone();
    Ok(acl(AclCmd::SetUser { name, rules: args.remaining().to_vec() }))
}

fn deluser(args: Args<'_>) -> Result<Action, Frame> {
    Ok(acl(AclCmd::DelUser(args.remaining().to_vec())))
}

fn cat(mut args: Args<'_>) -> Result<Action, Frame> {
    let category = args.remaining().first().cloned();
    if category.is_some() {
        args.next()?;
    }
    args.end()?;
    Ok(acl(AclCmd::Cat(category)))
}

/// `ACL LOG [count | RESET]`, with Redis's texts; a negative count shows nothing.
fn log(mut args: Args<'_>) -> Result<Action, Frame> {
    let Some(arg) = args.remaining().first().cloned() else { return Ok(acl(AclCmd::Log(10))) };
    args.next()?;
    args.end()?;
    if arg.eq_ignore_ascii_case(b"reset") {
        return Ok(acl(AclCmd::LogReset));
    }
    let count = super::int(&arg)?;
    Ok(acl(AclCmd::Log(usize::try_from(count).unwrap_or(0))))
}

fn help(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    Ok(Action::Connection(ConnCmd::Help(HELP)))
}

const HELP: &[&str] = &[
    "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CAT [<category>]",
    "    List all commands that belong to <category>, or all command categories",
    "    when no category is specified.",
    "DELUSER <username> [<username> ...]",
    "    Delete a list of users.",
    "GETUSER <username>",
    "    Get the user's details.",
    "LIST",
    "    Show users details in config file format.",
    "LOG [<count> | RESET]",
    "    Show the ACL log entries.",
    "SETUSER <username> <attribute> [<attribute> ...]",
    "    Create or modify a user with the specified attributes.",
    "USERS",
    "    List all the registered usernames.",
    "WHOAMI",
    "    Return the current connection username.",
    "HELP",
    "    Prints this help.",
];

fn acl(cmd: AclCmd) -> Action {
    Action::Connection(ConnCmd::Acl(cmd))
}

/// `ACL CAT`: every category's name, Redis's and ours.
pub fn categories_text() -> Frame {
    Frame::Array(C::ALL.iter().map(|c| Frame::bulk(c.as_str())).collect())
}

/// `ACL CAT category`: the full names of the commands in it (subcommands as `container|sub`),
/// or Redis's error for a category that does not exist.
pub fn category_commands(category: &[u8]) -> Frame {
    let Some(category) = std::str::from_utf8(category).ok().and_then(C::parse) else {
        return Frame::error("ERR", format_args!("Unknown category '{}'", String::from_utf8_lossy(category)));
    };
    let mut names = Vec::new();
    for spec in commands() {
        let runnable = std::iter::once(spec).filter(|s| s.parse.is_some()).chain(spec.subcommands);
        names.extend(runnable.filter(|s| s.categories().contains(category)).map(|s| Frame::bulk(s.name)));
    }
    Frame::Array(names)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{conn, error_of};
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn forms() {
        assert_eq!(conn("ACL WHOAMI"), ConnCmd::Acl(AclCmd::WhoAmI));
        assert_eq!(conn("acl users"), ConnCmd::Acl(AclCmd::Users));
        assert_eq!(conn("ACL CAT"), ConnCmd::Acl(AclCmd::Cat(None)));
        assert_eq!(conn("ACL CAT lock"), ConnCmd::Acl(AclCmd::Cat(Some(b("lock")))));
        assert_eq!(
            conn("ACL SETUSER alice on >pw ~app:*"),
            ConnCmd::Acl(AclCmd::SetUser { name: b("alice"), rules: vec![b("on"), b(">pw"), b("~app:*")] })
        );
        assert_eq!(conn("ACL SETUSER bob"), ConnCmd::Acl(AclCmd::SetUser { name: b("bob"), rules: vec![] }));
        assert_eq!(conn("ACL DELUSER a b"), ConnCmd::Acl(AclCmd::DelUser(vec![b("a"), b("b")])));
        assert_eq!(conn("ACL LOG"), ConnCmd::Acl(AclCmd::Log(10)));
        assert_eq!(conn("ACL LOG 3"), ConnCmd::Acl(AclCmd::Log(3)));
        assert_eq!(conn("ACL LOG -1"), ConnCmd::Acl(AclCmd::Log(0)));
        assert_eq!(conn("ACL LOG reset"), ConnCmd::Acl(AclCmd::LogReset));
        assert_eq!(conn("ACL GETUSER x"), ConnCmd::Acl(AclCmd::GetUser(b("x"))));
    }

    #[test]
    fn errors_are_redis_7s() {
        assert_eq!(error_of("ACL"), "ERR wrong number of arguments for 'acl' command");
        assert_eq!(error_of("ACL WHOAMI x"), "ERR wrong number of arguments for 'acl|whoami' command");
        assert_eq!(error_of("ACL SETUSER"), "ERR wrong number of arguments for 'acl|setuser' command");
        assert_eq!(error_of("ACL FOO"), "ERR unknown subcommand 'FOO'. Try ACL HELP.");
        assert_eq!(error_of("ACL LOG x"), "ERR value is not an integer or out of range");
        let Frame::Error(e) = category_commands(b"nosuch") else { panic!() };
        assert_eq!(e, "ERR Unknown category 'nosuch'");
    }

    #[test]
    fn categories_list_their_commands() {
        let Frame::Array(admin) = category_commands(b"admin") else { panic!() };
        for name in ["acl|setuser", "client|kill", "config|get"] {
            assert!(admin.contains(&Frame::bulk(name)), "{name} is @admin");
        }
        assert!(!admin.contains(&Frame::bulk("get")));
        let Frame::Array(locks) = category_commands(b"LOCK") else { panic!() };
        assert!(locks.contains(&Frame::bulk("lock.acquire")) && locks.contains(&Frame::bulk("sem.acquire")));
        assert!(!locks.contains(&Frame::bulk("q.push")));
    }

    /// HTTP and AMQP check users' rules by the core's categories of a command (those of its RESP
    /// twin); RESP by this table. A rule must mean the same on every protocol: the table files
    /// each command at least where the core files its twin.
    #[test]
    fn the_table_files_each_command_where_the_core_does() {
        let requests = [
            "LOCK.ACQUIRE l 1000",
            "LOCK.ACQUIRE l 1000 WAIT 10",
            "LOCK.RELEASE l 1",
            "LOCK.RENEW l 1 100",
            "LOCK.INFO l",
            "LOCK.LIST",
            "SEM.ACQUIRE s 2 1000",
            "SEM.RELEASE s 1",
            "SEM.INFO s",
            "FENCE.CHECK l 1",
            "Q.CREATE q",
            "Q.PUSH q m",
            "Q.POP q",
            "Q.POP q WAIT 10",
            "Q.ACK q 1",
            "Q.NACK q 1",
            "Q.EXTEND q 1 100",
            "Q.STATS q",
            "Q.PEEK q",
            "Q.LIST",
            "Q.PURGE q",
            "Q.DEL q",
            "Q.REDRIVE q dlq",
            "SET k v",
            "SETNX k v",
            "GET k",
            "MGET a b",
            "MSET a 1 b 2",
            "DEL k",
            "UNLINK k",
            "EXISTS k",
            "EXPIRE k 10",
            "PEXPIRE k 10",
            "TTL k",
            "PTTL k",
            "PERSIST k",
            "INCR k",
            "DECRBY k 2",
            "INCRBYFLOAT k 1.5",
            "APPEND k v",
            "STRLEN k",
            "GETDEL k",
            "GETEX k",
            "RENAME a b",
            "TYPE k",
            "KEYS *",
            "SCAN 0",
            "DBSIZE",
            "FLUSHALL",
            "EXPIRETIME k",
            "HSET h f v",
            "HGET h f",
            "HDEL h f",
            "HGETALL h",
            "HINCRBY h f 1",
            "HLEN h",
            "HSCAN h 0",
            "LPUSH l a",
            "RPOP l",
            "LRANGE l 0 -1",
            "LLEN l",
            "LINDEX l 0",
            "LSET l 0 a",
            "LREM l 0 a",
            "LTRIM l 0 1",
            "LMOVE a b LEFT RIGHT",
            "BLPOP l 1",
            "LPOS l a",
            "EVAL x 0",
            "EVAL_RO x 0",
            "SCRIPT LOAD x",
            "SCRIPT EXISTS x",
            "WATCH k",
        ];
        let mut wrong = Vec::new();
        for request in requests {
            let args: Vec<Bytes> = request.split(' ').map(b).collect();
            let (spec, _) = super::super::entry(&args).expect(request);
            let (twin, core) = match super::super::parse(&args) {
                Ok(Action::Write { cmd, .. }) => cmd.categories(),
                Ok(Action::Read { query, .. }) => query.categories(),
                Ok(Action::Connection(ConnCmd::Transaction(super::super::TxCmd::Watch(keys)))) => {
                    turnstile_core::Query::KeyVersions { keys }.categories()
                }
                other => panic!("{request}: {other:?}"),
            };
            let table = spec.categories();
            // Speed is description, not permission: the table says it per command as Redis does,
            // the core per kind of command.
            let missing: Vec<_> =
                core.iter().filter(|c| !table.contains(*c) && !matches!(c, C::Fast | C::Slow)).collect();
            if !missing.is_empty() {
                wrong.push(format!("{request} ({}, twin {twin}) lacks {missing:?}", spec.name));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
