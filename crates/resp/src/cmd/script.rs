//! Lua scripts: `EVAL EVALSHA EVAL_RO EVALSHA_RO SCRIPT`.
//!
//! The script and its arguments become one log entry (`EVAL_RO` a read), and the state machine
//! runs it on every node; see `turnstile_core`'s `script.rs` for how, and the `turnstile-script`
//! crate for the Lua side. Here only the arguments are read, with Redis 7's texts for a bad
//! key count.

use bytes::Bytes;
use turnstile_core::{Command, DEFAULT_SCRIPT_BUDGET, Eval, Query, ScriptRef};

use super::spec::{Flag, Group, Spec, command, container, integer, key, one_of, string, word};
use super::{Action, Args, ReplyShape, int, read, write};
use crate::Frame;
use turnstile_core::Category as C;

const NUMKEYS: &str =
    "`ERR Number of keys can't be greater than number of args`, `ERR Number of keys can't be negative`";
const SCRIPT_ERROR: &str = "the script's own error, as Redis words it: `ERR user_script:1: ... script: <sha>, on @user_script:1.`, or a failed `redis.call`'s error";
const OVER_BUDGET: &str =
    "`ERR script used more than its budget of N instructions ...`: stopped, and its writes were undone";

/// The scripting commands, in the order the docs list them.
pub(super) const COMMANDS: &[Spec] = &[
    command(
        "eval",
        Group::Scripting,
        "Runs a Lua script inside the state machine, atomically, on every node. The script is cached by its SHA-1.",
        eval,
    )
    .acl_only(&[C::Scripting, C::Slow])
    .args(EVAL_ARGS)
    .reply("the script's value, converted as Redis converts it")
    .errors(&[NUMKEYS, SCRIPT_ERROR, OVER_BUDGET])
    .flags(&[Flag::Write, Flag::DenyOom]),
    command("evalsha", Group::Scripting, "Runs a cached script by its SHA-1.", evalsha)
        .args(EVALSHA_ARGS)
        .reply("the script's value")
        .errors(&["`NOSCRIPT No matching script. Please use EVAL.`", NUMKEYS, SCRIPT_ERROR, OVER_BUDGET])
        .flags(&[Flag::Write, Flag::DenyOom])
        .acl_only(&[C::Scripting, C::Slow]),
    command("eval_ro", Group::Scripting, "Runs a Lua script that may only read.", eval_ro)
        .args(EVAL_ARGS)
        .reply("the script's value")
        .errors(&["`ERR Write commands are not allowed from read-only scripts. ...`", NUMKEYS, SCRIPT_ERROR])
        .flags(&[Flag::ReadOnly])
        .acl_only(&[C::Scripting, C::Slow]),
    command("evalsha_ro", Group::Scripting, "Runs a cached script that may only read.", evalsha_ro)
        .args(EVALSHA_ARGS)
        .reply("the script's value")
        .errors(&["`NOSCRIPT No matching script. Please use EVAL.`", NUMKEYS, SCRIPT_ERROR])
        .flags(&[Flag::ReadOnly])
        .acl_only(&[C::Scripting, C::Slow]),
    container("script", Group::Scripting, "The script cache, which is replicated state: it survives restarts and is the same on every node.", SCRIPT),
];

const EVAL_ARGS: &[super::spec::Arg] = &[
    string("script", "the Lua source"),
    integer("numkeys", "how many of the following arguments are keys"),
    key("key", "a key, in `KEYS`").multiple().optional(),
    string("arg", "an argument, in `ARGV`").multiple().optional(),
];

const EVALSHA_ARGS: &[super::spec::Arg] = &[
    string("sha1", "the script's SHA-1 in hex"),
    integer("numkeys", "how many of the following arguments are keys"),
    key("key", "a key, in `KEYS`").multiple().optional(),
    string("arg", "an argument, in `ARGV`").multiple().optional(),
];

/// `SCRIPT`'s subcommands.
const SCRIPT: &[Spec] = &[
    command("script|load", Group::Scripting, "Compiles a script and adds it to the cache.", script_load)
        .args(&[string("script", "the Lua source")])
        .reply("the script's SHA-1, in lower-case hex")
        .errors(&["`ERR Error compiling script (new function): user_script:1: ...`"])
        .flags(&[Flag::Write, Flag::DenyOom])
        .acl_only(&[C::Scripting, C::Slow]),
    command("script|exists", Group::Scripting, "Whether scripts are in the cache.", script_exists)
        .args(&[string("sha1", "a script's SHA-1").multiple()])
        .reply("an array of 1 (cached) or 0, one per SHA-1")
        .flags(&[Flag::ReadOnly])
        .acl_only(&[C::Scripting, C::Slow]),
    command("script|flush", Group::Scripting, "Empties the script cache on every node.", script_flush)
        .args(&[one_of(
            "mode",
            &[word("ASYNC", "accepted, as Redis does"), word("SYNC", "accepted, as Redis does")],
            "how Redis frees the memory; the same here either way",
        )
        .optional()])
        .reply("`OK`")
        .flags(&[Flag::Write])
        .acl_only(&[C::Scripting, C::Slow]),
];

/// `EVAL script numkeys [key ...] [arg ...]` → the script's value.
fn eval(args: Args<'_>) -> Result<Action, Frame> {
    let eval = eval_args(args, |source| ScriptRef::Source(Bytes::copy_from_slice(source)))?;
    write(Command::Eval(eval), ReplyShape::Redis)
}

/// `EVALSHA sha1 numkeys [key ...] [arg ...]` → the cached script's value, or `NOSCRIPT`.
fn evalsha(args: Args<'_>) -> Result<Action, Frame> {
    let eval = eval_args(args, sha)?;
    write(Command::Eval(eval), ReplyShape::Redis)
}

/// `EVAL_RO script numkeys [key ...] [arg ...]`: a read, so it is not cached (a cache entry is
/// replicated state, which a read does not change).
fn eval_ro(args: Args<'_>) -> Result<Action, Frame> {
    let eval = eval_args(args, |source| ScriptRef::Source(Bytes::copy_from_slice(source)))?;
    read(Query::Eval(eval), ReplyShape::Redis)
}

/// `EVALSHA_RO sha1 numkeys [key ...] [arg ...]`.
fn evalsha_ro(args: Args<'_>) -> Result<Action, Frame> {
    let eval = eval_args(args, sha)?;
    read(Query::Eval(eval), ReplyShape::Redis)
}

/// A SHA-1 as the cache names it; one that is not even hex simply names no script.
fn sha(arg: &Bytes) -> ScriptRef {
    ScriptRef::Sha(String::from_utf8_lossy(arg).to_ascii_lowercase())
}

/// The script, `numkeys`, then the keys and the arguments, with Redis's checks in its order.
/// The budget is the default until the server puts its own setting in.
fn eval_args(mut args: Args<'_>, script: impl FnOnce(&Bytes) -> ScriptRef) -> Result<Eval, Frame> {
    let script = script(args.next()?);
    let numkeys = int(args.next()?)?;
    let rest = args.remaining();
    let numkeys =
        usize::try_from(numkeys).map_err(|_| Frame::error("ERR", "Number of keys can't be negative"))?;
    if numkeys > rest.len() {
        return Err(Frame::error("ERR", "Number of keys can't be greater than number of args"));
    }
    let copy = |args: &[Bytes]| args.iter().map(|a| Bytes::copy_from_slice(a)).collect();
    let (keys, argv) = rest.split_at(numkeys);
    Ok(Eval { script, keys: copy(keys), args: copy(argv), session: None, budget: DEFAULT_SCRIPT_BUDGET })
}

/// `SCRIPT LOAD script` → its SHA-1.
fn script_load(mut args: Args<'_>) -> Result<Action, Frame> {
    let source = args.stored()?;
    args.end()?;
    write(Command::ScriptLoad { source }, ReplyShape::Redis)
}

/// `SCRIPT EXISTS sha1 [sha1 ...]` → `[1, 0, ...]`.
fn script_exists(args: Args<'_>) -> Result<Action, Frame> {
    let shas = args.remaining().iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect();
    read(Query::ScriptExists { shas }, ReplyShape::Redis)
}

/// `SCRIPT FLUSH [ASYNC|SYNC]` → `OK`.
fn script_flush(mut args: Args<'_>) -> Result<Action, Frame> {
    match args.keyword().as_deref() {
        None | Some(b"ASYNC" | b"SYNC") => {}
        Some(_) => {
            return Err(Frame::error("ERR", "SCRIPT FLUSH only support SYNC|ASYNC option"));
        }
    }
    args.end()?;
    write(Command::ScriptFlush, ReplyShape::Redis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::testing::{error_of, parse_line};

    #[test]
    fn eval_splits_keys_from_arguments() {
        let Ok(Action::Write { cmd: Command::Eval(eval), shape: ReplyShape::Redis }) =
            parse_line("EVAL return 2 k1 k2 a1")
        else {
            panic!("not an eval write");
        };
        assert_eq!(eval.script, ScriptRef::Source(Bytes::from("return")));
        assert_eq!(eval.keys, vec![Bytes::from("k1"), Bytes::from("k2")]);
        assert_eq!(eval.args, vec![Bytes::from("a1")]);
        assert_eq!(eval.budget, DEFAULT_SCRIPT_BUDGET);
    }

    #[test]
    fn evalsha_is_looked_up_in_lower_case_and_ro_is_a_read() {
        let Ok(Action::Read { query: Query::Eval(eval), .. }) = parse_line("EVALSHA_RO ABCdef 0") else {
            panic!("not a read");
        };
        assert_eq!(eval.script, ScriptRef::Sha("abcdef".into()));
        assert!(matches!(parse_line("eval_ro x 0"), Ok(Action::Read { .. })));
    }

    #[test]
    fn bad_key_counts_get_redis_texts() {
        assert_eq!(error_of("EVAL x -1"), "ERR Number of keys can't be negative");
        assert_eq!(error_of("EVAL x 2 a"), "ERR Number of keys can't be greater than number of args");
        assert_eq!(error_of("EVAL x y"), "ERR value is not an integer or out of range");
        assert_eq!(error_of("EVALSHA x"), "ERR wrong number of arguments for 'evalsha' command");
    }

    #[test]
    fn script_subcommands() {
        assert!(matches!(
            parse_line("SCRIPT LOAD x"),
            Ok(Action::Write { cmd: Command::ScriptLoad { .. }, .. })
        ));
        assert!(matches!(
            parse_line("script flush async"),
            Ok(Action::Write { cmd: Command::ScriptFlush, .. })
        ));
        assert_eq!(error_of("SCRIPT FLUSH NOW"), "ERR SCRIPT FLUSH only support SYNC|ASYNC option");
        let Ok(Action::Read { query: Query::ScriptExists { shas }, .. }) = parse_line("SCRIPT EXISTS a b")
        else {
            panic!("not a read");
        };
        assert_eq!(shas, ["a", "b"]);
        assert_eq!(error_of("SCRIPT KILLALL"), "ERR unknown subcommand 'KILLALL'. Try SCRIPT HELP.");
    }
}
