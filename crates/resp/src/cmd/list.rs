//! Redis's lists: `LPUSH RPUSH LPUSHX RPUSHX LPOP RPOP LLEN LRANGE LINDEX LSET LREM LTRIM LINSERT
//! LPOS LMOVE RPOPLPUSH` and the blocking `BLPOP BRPOP BLMOVE BRPOPLPUSH`.
//!
//! Redis 7's syntax, error texts and checking order. A blocking pop is parsed with
//! `session: None`; the server binds the connection's session (`Command::session_mut`), and
//! when the pop waits, the connection is parked as `Q.POP WAIT`'s is until the state machine
//! ends the wait (served, timed out, or the session gone).

use bytes::Bytes;
use turnstile_core::{BlockingPop, Command, End, Query, WAIT_FOREVER};

use super::spec::{
    Arg, Flag, Group, Keys, Spec, command, integer as int_arg, key, one_of, option, string, word,
};
use super::{Action, Args, ReplyShape, int, name, read, syntax_error, write, wrong_arity};
use crate::Frame;

const KEY: Arg = key("key", "the list");
const ELEMENT: Arg = string("element", "an element, binary-safe");
const WRONGTYPE: &str = "`WRONGTYPE Operation against a key holding the wrong kind of value`";
const OOM: &str = "`OOM command not allowed when used memory > 'max-memory'`";
const COUNT_RANGE: &str =
    "`ERR value is out of range, must be positive`: a count that is negative or not an integer";
const TIMEOUT_ERRORS: &[&str] = &[
    "`ERR timeout is not a float or out of range`",
    "`ERR timeout is negative`",
    "`ERR timeout is out of range`",
    WRONGTYPE,
];
const TIMEOUT: Arg =
    int_arg("timeout", "seconds to wait, fractions allowed (`0.5`); 0 waits until an element comes");
const WHERE_FROM: Arg = one_of(
    "wherefrom",
    &[word("LEFT", "the head"), word("RIGHT", "the tail")],
    "the end of the source to pop from",
);
const WHERE_TO: Arg = one_of(
    "whereto",
    &[word("LEFT", "the head"), word("RIGHT", "the tail")],
    "the end of the destination to push onto",
);
/// `BLPOP key [key ...] timeout`: every argument but the last is a key.
const ALL_BUT_LAST: Keys = Keys { first: 1, last: -2, step: 1 };
/// `LMOVE source destination ...`. The moves add no bytes, so unlike Redis they are not
/// `denyoom`: a full server can still move work from one list to another.
const FIRST_TWO: Keys = Keys { first: 1, last: 2, step: 1 };

// The arguments the shared entries below take: consts, since only in a const item is a slice
// literal 'static.
const PUSH_ARGS: &[Arg] = &[KEY, ELEMENT.multiple()];
const POP_ARGS: &[Arg] =
    &[KEY, int_arg("count", "pop up to this many (the reply is then an array)").optional()];
const BLOCKING_POP_ARGS: &[Arg] = &[KEY.multiple(), TIMEOUT];

const fn push_spec(name: &'static str, summary: &'static str, parse: super::spec::ParseFn) -> Spec {
    command(name, Group::List, summary, parse)
        .args(PUSH_ARGS)
        .errors(&[WRONGTYPE, OOM])
        .flags(&[Flag::Write, Flag::DenyOom, Flag::Fast])
        .keys(Keys::FIRST)
}

const fn pop_spec(name: &'static str, summary: &'static str, parse: super::spec::ParseFn) -> Spec {
    command(name, Group::List, summary, parse)
        .args(POP_ARGS)
        .reply("the element, or nil; with a count, an array of up to `count` elements, or nil when the key does not exist")
        .errors(&[COUNT_RANGE, WRONGTYPE])
        .flags(&[Flag::Write, Flag::Fast])
        .keys(Keys::FIRST)
}

const fn blocking_pop_spec(name: &'static str, summary: &'static str, parse: super::spec::ParseFn) -> Spec {
    command(name, Group::List, summary, parse)
        .args(BLOCKING_POP_ARGS)
        .reply("`[key, element]`, or nil (a nil array) when the timeout passed")
        .errors(TIMEOUT_ERRORS)
        .flags(&[Flag::Write, Flag::Blocking])
        .keys(ALL_BUT_LAST)
}

/// Redis's list commands, in the order the docs list them.
pub(super) const COMMANDS: &[Spec] = &[
    push_spec("lpush", "Pushes elements onto the head of a list, one after another (the last ends first); creates the list. A client blocked on the key is handed the head.", lpush)
        .reply("the length of the list after the push"),
    push_spec("rpush", "Pushes elements onto the tail of a list; creates the list. A client blocked on the key is handed the head.", rpush)
        .reply("the length of the list after the push"),
    push_spec("lpushx", "Pushes elements onto the head of a list, only if the list exists.", lpushx)
        .reply("the length of the list after the push, 0 when there is no list"),
    push_spec("rpushx", "Pushes elements onto the tail of a list, only if the list exists.", rpushx)
        .reply("the length of the list after the push, 0 when there is no list"),
    pop_spec("lpop", "Removes and answers the first elements of a list; the key goes with its last element.", lpop),
    pop_spec("rpop", "Removes and answers the last elements of a list; the key goes with its last element.", rpop),
    command("llen", Group::List, "The length of a list.", llen)
        .args(&[KEY])
        .reply("the length, 0 when the key does not exist")
        .errors(&[WRONGTYPE])
        .flags(&[Flag::ReadOnly, Flag::Fast])
        .keys(Keys::FIRST),
    command("lrange", Group::List, "The elements from `start` to `stop`, both included; negative indexes count from the tail (-1 is the last).", lrange)
        .args(&[KEY, int_arg("start", "the first index"), int_arg("stop", "the last index")])
        .reply("an array of elements (empty when the range selects none)")
        .errors(&[WRONGTYPE])
        .flags(&[Flag::ReadOnly])
        .keys(Keys::FIRST),
    command("lindex", Group::List, "The element at an index; negative indexes count from the tail.", lindex)
        .args(&[KEY, int_arg("index", "the index")])
        .reply("the element, or nil when the index is out of range")
        .errors(&[WRONGTYPE])
        .flags(&[Flag::ReadOnly])
        .keys(Keys::FIRST),
    command("lset", Group::List, "Replaces the element at an index.", lset)
        .args(&[KEY, int_arg("index", "the index; negative counts from the tail"), ELEMENT])
        .reply("`OK`")
        .errors(&["`ERR no such key`", "`ERR index out of range`", WRONGTYPE, OOM])
        .flags(&[Flag::Write, Flag::DenyOom])
        .keys(Keys::FIRST),
    command("lrem", Group::List, "Removes elements equal to one: `count` from the head (> 0), from the tail (< 0), or all (0).", lrem)
        .args(&[KEY, int_arg("count", "how many, and from which end"), ELEMENT])
        .reply("how many were removed")
        .errors(&[WRONGTYPE])
        .flags(&[Flag::Write])
        .keys(Keys::FIRST),
    command("ltrim", Group::List, "Keeps only the elements from `start` to `stop` (both included, negative from the tail).", ltrim)
        .args(&[KEY, int_arg("start", "the first index kept"), int_arg("stop", "the last index kept")])
        .reply("`OK`")
        .errors(&[WRONGTYPE])
        .flags(&[Flag::Write])
        .keys(Keys::FIRST),
    command("linsert", Group::List, "Inserts an element before or after the first element equal to a pivot.", linsert)
        .args(&[
            KEY,
            one_of("where", &[word("BEFORE", "before the pivot"), word("AFTER", "after the pivot")], "which side"),
            string("pivot", "the element to insert next to"),
            ELEMENT,
        ])
        .reply("the new length; -1 when the pivot is not there, 0 when the key does not exist")
        .errors(&[WRONGTYPE, OOM])
        .flags(&[Flag::Write, Flag::DenyOom])
        .keys(Keys::FIRST),
    command("lpos", Group::List, "Where an element is in a list.", lpos)
        .args(&[
            KEY,
            ELEMENT,
            option("RANK", int_arg("rank", "1 = the first match, 2 the second ...; negative = from the tail")),
            option("COUNT", int_arg("num-matches", "answer this many matches (0 = all) as an array")),
            option("MAXLEN", int_arg("len", "compare at most this many elements (0 = all)")),
        ])
        .reply("the index (from the head) of the match, or nil; with COUNT, an array of indexes")
        .errors(&[
            "`ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list`",
            "`ERR COUNT can't be negative`",
            "`ERR MAXLEN can't be negative`",
            WRONGTYPE,
        ])
        .flags(&[Flag::ReadOnly])
        .keys(Keys::FIRST),
    command("lmove", Group::List, "Pops an element from one end of a list and pushes it onto an end of another (or the same) list, in one step.", lmove)
        .args(&[key("source", "the list to pop from"), key("destination", "the list to push onto"), WHERE_FROM, WHERE_TO])
        .reply("the element moved, or nil when the source is empty")
        .errors(&[WRONGTYPE])
        .flags(&[Flag::Write])
        .keys(FIRST_TWO),
    command("rpoplpush", Group::List, "`LMOVE source destination RIGHT LEFT`.", rpoplpush)
        .args(&[key("source", "the list to pop from"), key("destination", "the list to push onto")])
        .reply("the element moved, or nil when the source is empty")
        .errors(&[WRONGTYPE])
        .flags(&[Flag::Write])
        .keys(FIRST_TWO),
    blocking_pop_spec("blpop", "Pops the head of the first of the lists that has elements; when none has, waits for a push (clients waiting on a key are served in the order they came). The wait is in the replicated state, as a `Q.POP WAIT` is, and ends with the connection.", blpop),
    blocking_pop_spec("brpop", "`BLPOP` from the tail.", brpop),
    command("blmove", Group::List, "`LMOVE` that waits for an element when the source is empty.", blmove)
        .args(&[key("source", "the list to pop from"), key("destination", "the list to push onto"), WHERE_FROM, WHERE_TO, TIMEOUT])
        .reply("the element moved, or nil (a nil array) when the timeout passed")
        .errors(TIMEOUT_ERRORS)
        .flags(&[Flag::Write, Flag::Blocking])
        .keys(FIRST_TWO),
    command("brpoplpush", Group::List, "`BLMOVE source destination RIGHT LEFT timeout`.", brpoplpush)
        .args(&[key("source", "the list to pop from"), key("destination", "the list to push onto"), TIMEOUT])
        .reply("the element moved, or nil (a nil array) when the timeout passed")
        .errors(TIMEOUT_ERRORS)
        .flags(&[Flag::Write, Flag::Blocking])
        .keys(FIRST_TWO),
];

/// `LPUSH key element [element ...]` → the new length.
fn lpush(args: Args<'_>) -> Result<Action, Frame> {
    push(args, End::Left, false)
}

/// `RPUSH key element [element ...]` → the new length.
fn rpush(args: Args<'_>) -> Result<Action, Frame> {
    push(args, End::Right, false)
}

/// `LPUSHX key element [element ...]` → the new length, 0 without a list.
fn lpushx(args: Args<'_>) -> Result<Action, Frame> {
    push(args, End::Left, true)
}

/// `RPUSHX key element [element ...]` → the new length, 0 without a list.
fn rpushx(args: Args<'_>) -> Result<Action, Frame> {
    push(args, End::Right, true)
}

fn push(mut args: Args<'_>, end: End, only_if_exists: bool) -> Result<Action, Frame> {
    let key = args.name()?;
    // Copied out of the read buffer, as `Args::stored` copies: elements are kept.
    let elements = args.remaining().iter().map(|e| Bytes::copy_from_slice(e)).collect();
    write(Command::ListPush { key, end, elements, only_if_exists }, ReplyShape::Integer)
}

/// `LPOP key [count]`.
fn lpop(args: Args<'_>) -> Result<Action, Frame> {
    pop(args, End::Left)
}

/// `RPOP key [count]`.
fn rpop(args: Args<'_>) -> Result<Action, Frame> {
    pop(args, End::Right)
}

/// Without a count: the element or nil (`$-1`). With one: an array, or a nil array (`*-1`) when
/// the key does not exist, as Redis 7 answers.
fn pop(mut args: Args<'_>, end: End) -> Result<Action, Frame> {
    // Redis counts these arguments itself: more than a count is an arity error, not syntax.
    if args.remaining().len() > 2 {
        return Err(wrong_arity(args.command));
    }
    let key = args.name()?;
    let count = match args.keyword() {
        None => None,
        // Redis reads it as a positive long with this one text for both failures.
        Some(arg) => Some(
            int(&arg)
                .ok()
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| Frame::error("ERR", "value is out of range, must be positive"))?,
        ),
    };
    args.end()?;
    let shape = if count.is_some() { ReplyShape::RedisNilArray } else { ReplyShape::Redis };
    write(Command::ListPop { key, end, count }, shape)
}

/// `LLEN key`.
fn llen(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    args.end()?;
    read(Query::ListLen { key }, ReplyShape::Integer)
}

/// `LRANGE key start stop`.
fn lrange(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    let start = int(args.next()?)?;
    let stop = int(args.next()?)?;
    args.end()?;
    read(Query::ListRange { key, start, stop }, ReplyShape::Redis)
}

/// `LINDEX key index`.
fn lindex(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    let index = int(args.next()?)?;
    args.end()?;
    read(Query::ListIndex { key, index }, ReplyShape::Redis)
}

/// `LSET key index element`.
fn lset(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    let index = int(args.next()?)?;
    let element = args.stored()?;
    args.end()?;
    write(Command::ListSet { key, index, element }, ReplyShape::Redis)
}

/// `LREM key count element`.
fn lrem(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    let count = int(args.next()?)?;
    let element = args.stored()?;
    args.end()?;
    write(Command::ListRem { key, count, element }, ReplyShape::Integer)
}

/// `LTRIM key start stop`.
fn ltrim(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    let start = int(args.next()?)?;
    let stop = int(args.next()?)?;
    args.end()?;
    write(Command::ListTrim { key, start, stop }, ReplyShape::Redis)
}

/// `LINSERT key BEFORE|AFTER pivot element`.
fn linsert(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    let before = match args.next()?.to_ascii_uppercase().as_slice() {
        b"BEFORE" => true,
        b"AFTER" => false,
        _ => return Err(syntax_error()),
    };
    let pivot = args.stored()?;
    let element = args.stored()?;
    args.end()?;
    write(Command::ListInsert { key, before, pivot, element }, ReplyShape::Integer)
}

/// `LPOS key element [RANK rank] [COUNT num-matches] [MAXLEN len]`: options in any order, the
/// last of each wins, each checked as it is read (Redis's order of errors).
fn lpos(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    let element = args.stored()?;
    let (mut rank, mut count, mut max_len) = (1, None, 0);
    while let Some(keyword) = args.keyword() {
        match keyword.as_slice() {
            b"RANK" => {
                rank = int(args.value()?)?;
                if rank == 0 {
                    return Err(Frame::error(
                        "ERR",
                        "RANK can't be zero: use 1 to start from the first match, 2 from the second ... or \
                         use negative to start from the end of the list",
                    ));
                }
            }
            b"COUNT" => {
                let n = int(args.value()?)?;
                count = Some(u64::try_from(n).map_err(|_| Frame::error("ERR", "COUNT can't be negative"))?);
            }
            b"MAXLEN" => {
                let n = int(args.value()?)?;
                max_len = u64::try_from(n).map_err(|_| Frame::error("ERR", "MAXLEN can't be negative"))?;
            }
            _ => return Err(syntax_error()),
        }
    }
    read(Query::ListPos { key, element, rank, count, max_len }, ReplyShape::Redis)
}

/// `LMOVE source destination LEFT|RIGHT LEFT|RIGHT`.
fn lmove(mut args: Args<'_>) -> Result<Action, Frame> {
    let source = args.name()?;
    let destination = args.name()?;
    let from = end(args.next()?)?;
    let to = end(args.next()?)?;
    args.end()?;
    write(Command::ListMove { source, destination, from, to }, ReplyShape::Redis)
}

/// `RPOPLPUSH source destination`.
fn rpoplpush(mut args: Args<'_>) -> Result<Action, Frame> {
    let source = args.name()?;
    let destination = args.name()?;
    args.end()?;
    write(Command::ListMove { source, destination, from: End::Right, to: End::Left }, ReplyShape::Redis)
}

/// `BLPOP key [key ...] timeout`.
fn blpop(args: Args<'_>) -> Result<Action, Frame> {
    blocking_pop(args, End::Left)
}

/// `BRPOP key [key ...] timeout`.
fn brpop(args: Args<'_>) -> Result<Action, Frame> {
    blocking_pop(args, End::Right)
}

fn blocking_pop(args: Args<'_>, from: End) -> Result<Action, Frame> {
    let Some((timeout, keys)) = args.remaining().split_last() else { return Err(syntax_error()) };
    let keys = keys.iter().map(name).collect::<Result<Vec<_>, _>>()?;
    let wait = timeout_ms(timeout)?;
    let pop = BlockingPop { keys, from, to: None, wait, session: None };
    write(Command::BlockingPop(pop), ReplyShape::RedisNilArray)
}

/// `BLMOVE source destination LEFT|RIGHT LEFT|RIGHT timeout`.
fn blmove(mut args: Args<'_>) -> Result<Action, Frame> {
    let source = args.name()?;
    let destination = args.name()?;
    let from = end(args.next()?)?;
    let to = end(args.next()?)?;
    let wait = timeout_ms(args.next()?)?;
    args.end()?;
    blocking_move(source, destination, from, to, wait)
}

/// `BRPOPLPUSH source destination timeout`.
fn brpoplpush(mut args: Args<'_>) -> Result<Action, Frame> {
    let source = args.name()?;
    let destination = args.name()?;
    let wait = timeout_ms(args.next()?)?;
    args.end()?;
    blocking_move(source, destination, End::Right, End::Left, wait)
}

/// A blocking move's reply: the element, or on a timeout a nil array, as Redis 7 answers every
/// blocking list command that timed out.
fn blocking_move(
    source: String,
    destination: String,
    from: End,
    to: End,
    wait: u64,
) -> Result<Action, Frame> {
    let pop = BlockingPop { keys: vec![source], from, to: Some((destination, to)), wait, session: None };
    write(Command::BlockingPop(pop), ReplyShape::RedisNilArray)
}

/// `LEFT` or `RIGHT`, in any case.
fn end(arg: &[u8]) -> Result<End, Frame> {
    match arg.to_ascii_uppercase().as_slice() {
        b"LEFT" => Ok(End::Left),
        b"RIGHT" => Ok(End::Right),
        _ => Err(syntax_error()),
    }
}

/// A blocking command's timeout as Redis 7 reads it: seconds as a decimal float (no leading
/// space, nothing after the number), times 1000, rounded up to whole ms; 0 waits forever
/// ([`WAIT_FOREVER`]). Redis turns an infinite or huge value into a negative one when it casts it
/// to an integer, hence its "negative" text for those.
fn timeout_ms(arg: &[u8]) -> Result<u64, Frame> {
    let not_float = || Frame::error("ERR", "timeout is not a float or out of range");
    let text = std::str::from_utf8(arg).map_err(|_| not_float())?;
    if text.is_empty() || text.starts_with(|c: char| c.is_ascii_whitespace()) {
        return Err(not_float());
    }
    let seconds: f64 = text.parse().map_err(|_| not_float())?;
    if seconds.is_nan() {
        return Err(not_float());
    }
    let ms = (seconds * 1000.0).ceil();
    // 2^63 ms: what Redis's cast to a signed 64-bit integer cannot hold.
    if !(0.0..9_223_372_036_854_775_808.0).contains(&ms) {
        return Err(Frame::error("ERR", "timeout is negative"));
    }
    // Whole, positive and below 2^63: the cast neither truncates nor wraps.
    #[allow(clippy::cast_possible_truncation)]
    let ms = ms as u64;
    // Redis adds the time now (in ms) to it and refuses what would overflow; 2^42 ms from the
    // epoch is past the year 2100.
    if ms > i64::MAX.unsigned_abs() - (1 << 42) {
        return Err(Frame::error("ERR", "timeout is out of range"));
    }
    Ok(if ms == 0 { WAIT_FOREVER } else { ms })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Protocol;
    use crate::cmd::testing::{error_of, parse_line};
    use crate::cmd::{Action, render};
    use turnstile_core::Reply;

    fn cmd(line: &str) -> Command {
        match parse_line(line) {
            Ok(Action::Write { cmd, .. }) => cmd,
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    #[test]
    fn pushes_keep_every_element_in_order() {
        assert_eq!(
            cmd("RPUSHX l a b"),
            Command::ListPush {
                key: "l".into(),
                end: End::Right,
                elements: vec![Bytes::from("a"), Bytes::from("b")],
                only_if_exists: true
            }
        );
        assert_eq!(error_of("LPUSH l"), "ERR wrong number of arguments for 'lpush' command");
    }

    #[test]
    fn pop_counts_are_positive_integers_and_change_the_nil() {
        assert_eq!(cmd("LPOP l"), Command::ListPop { key: "l".into(), end: End::Left, count: None });
        assert_eq!(cmd("rpop l 3"), Command::ListPop { key: "l".into(), end: End::Right, count: Some(3) });
        for bad in ["LPOP l -1", "LPOP l x", "LPOP l 1.5"] {
            assert_eq!(error_of(bad), "ERR value is out of range, must be positive", "{bad}");
        }
        assert_eq!(error_of("LPOP l 1 2"), "ERR wrong number of arguments for 'lpop' command");
        let Ok(Action::Write { shape, .. }) = parse_line("LPOP l 2") else { panic!() };
        assert_eq!(render(shape, Reply::Nil, Protocol::Resp2), Frame::NullArray);
        let Ok(Action::Write { shape, .. }) = parse_line("LPOP l") else { panic!() };
        assert_eq!(render(shape, Reply::Nil, Protocol::Resp2), Frame::Null);
    }

    #[test]
    fn timeouts_are_read_as_redis_reads_them() {
        assert_eq!(timeout_ms(b"0"), Ok(WAIT_FOREVER));
        assert_eq!(timeout_ms(b"0.0"), Ok(WAIT_FOREVER));
        assert_eq!(timeout_ms(b"1"), Ok(1000));
        assert_eq!(timeout_ms(b"0.1"), Ok(100));
        assert_eq!(timeout_ms(b"0.0001"), Ok(1), "rounded up to a whole ms");
        assert_eq!(timeout_ms(b"1e1"), Ok(10_000));
        let not_float = Err(Frame::Error("ERR timeout is not a float or out of range".into()));
        for bad in [&b"x"[..], b"1.5x", b" 1", b"", b"nan"] {
            assert_eq!(timeout_ms(bad), not_float, "{:?}", bad.escape_ascii().to_string());
        }
        let negative = Err(Frame::Error("ERR timeout is negative".into()));
        for bad in [&b"-1"[..], b"-0.5", b"inf", b"9223372036854775807"] {
            assert_eq!(timeout_ms(bad), negative, "{:?}", bad.escape_ascii().to_string());
        }
    }

    #[test]
    fn blocking_pops_take_every_key_and_the_timeout_last() {
        assert_eq!(
            cmd("BLPOP a b 1.5"),
            Command::BlockingPop(BlockingPop {
                keys: vec!["a".into(), "b".into()],
                from: End::Left,
                to: None,
                wait: 1500,
                session: None
            })
        );
        assert_eq!(
            cmd("BRPOPLPUSH s d 0"),
            Command::BlockingPop(BlockingPop {
                keys: vec!["s".into()],
                from: End::Right,
                to: Some(("d".into(), End::Left)),
                wait: WAIT_FOREVER,
                session: None
            })
        );
        assert!(cmd("BLPOP a 1").may_wait(), "the server parks it");
        assert_eq!(error_of("BLPOP a"), "ERR wrong number of arguments for 'blpop' command");
        assert_eq!(error_of("BLMOVE s d up LEFT x"), "ERR syntax error", "directions are read first");
        assert_eq!(error_of("BLMOVE s d LEFT LEFT x"), "ERR timeout is not a float or out of range");
    }

    #[test]
    fn linsert_lmove_and_lpos_refuse_what_redis_refuses() {
        assert_eq!(error_of("LINSERT l middle a b"), "ERR syntax error");
        assert_eq!(error_of("LMOVE a b up LEFT"), "ERR syntax error");
        assert_eq!(
            error_of("LPOS l a RANK 0"),
            "ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use \
             negative to start from the end of the list"
        );
        assert_eq!(error_of("LPOS l a COUNT -1"), "ERR COUNT can't be negative");
        assert_eq!(error_of("LPOS l a MAXLEN -1"), "ERR MAXLEN can't be negative");
        assert_eq!(error_of("LPOS l a RANK"), "ERR syntax error");
        assert_eq!(error_of("LPOS l a FOO 1"), "ERR syntax error");
        assert_eq!(error_of("LPOS l a RANK x"), "ERR value is not an integer or out of range");
        assert_eq!(
            parse_line("LPOS l a RANK -2 COUNT 0 MAXLEN 9"),
            Ok(Action::Read {
                query: Query::ListPos {
                    key: "l".into(),
                    element: Bytes::from("a"),
                    rank: -2,
                    count: Some(0),
                    max_len: 9
                },
                shape: ReplyShape::Redis
            })
        );
    }
}
