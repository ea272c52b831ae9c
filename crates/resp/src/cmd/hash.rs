//! Redis's hashes: `HSET HMSET HSETNX HGET HMGET HDEL HEXISTS HINCRBY HINCRBYFLOAT HGETALL HKEYS
//! HVALS HLEN HSTRLEN HSCAN`, with Redis 7's syntax and error texts.
//!
//! A hash is a key like any other (`EXPIRE`, `DEL`, `TYPE`, `RENAME` work on it) that holds
//! fields and their values; it goes when its last field does. Fields and values are bytes.

use bytes::Bytes;
use turnstile_core::{Command, Query, Reply, parse_float};

use super::kv::{scan_count, scan_cursor};
use super::spec::{Arg, Flag, Group, Keys, Spec, block, command, double, integer as int_arg, key, string};
use super::{Action, Args, ReplyShape, int, read, unexpected, write, wrong_arity};
use crate::Frame;

const KEY: Arg = key("key", "the hash");
const FIELD: Arg = string("field", "a field");
const FIELD_VALUE: Arg =
    block("data", &[string("field", "a field"), string("value", "its value")], "a field and its value");
const WRONGTYPE: &str = "`WRONGTYPE Operation against a key holding the wrong kind of value`";

/// Redis's hash commands, in the order the docs list them.
pub(super) const COMMANDS: &[Spec] = &[
    command("hset", Group::Hash, "Sets fields of a hash, creating it if needed; its TTL is kept.", hset)
        .args(&[KEY, FIELD_VALUE.multiple()])
        .reply("how many fields were added (not counting those replaced)")
        .errors(&[WRONGTYPE])
        .flags(&[Flag::Write, Flag::DenyOom, Flag::Fast])
        .keys(Keys::FIRST),
    command("hmset", Group::Hash, "Sets fields of a hash, as HSET, answering `OK` (the older form).", hmset)
        .args(&[KEY, FIELD_VALUE.multiple()])
        .reply("`OK`")
        .errors(&[WRONGTYPE])
        .flags(&[Flag::Write, Flag::DenyOom, Flag::Fast])
        .keys(Keys::FIRST),
    command("hsetnx", Group::Hash, "Sets a field only if the hash does not have it.", hsetnx)
        .args(&[KEY, FIELD, string("value", "its value")])
        .reply("`1` if set, `0` if the field existed")
        .errors(&[WRONGTYPE])
        .flags(&[Flag::Write, Flag::DenyOom, Flag::Fast])
        .keys(Keys::FIRST),
    command("hget", Group::Hash, "A field's value.", hget)
        .args(&[KEY, FIELD])
        .reply("the value, or nil when the hash or the field is missing")
        .errors(&[WRONGTYPE])
        .flags(&[Flag::ReadOnly, Flag::Fast])
        .keys(Keys::FIRST),
    command("hmget", Group::Hash, "Several fields' values.", hmget)
        .args(&[KEY, FIELD.multiple()])
        .reply("an array of the values, nil for a missing field")
        .errors(&[WRONGTYPE])
        .flags(&[Flag::ReadOnly, Flag::Fast])
        .keys(Keys::FIRST),
    command("hdel", Group::Hash, "Deletes fields; the hash goes with its last field.", hdel)
        .args(&[KEY, FIELD.multiple()])
        .reply("how many fields were removed")
        .errors(&[WRONGTYPE])
        .flags(&[Flag::Write, Flag::Fast])
        .keys(Keys::FIRST),
    command("hexists", Group::Hash, "Whether the hash has the field.", hexists)
        .args(&[KEY, FIELD])
        .reply("`1` or `0`")
        .errors(&[WRONGTYPE])
        .flags(&[Flag::ReadOnly, Flag::Fast])
        .keys(Keys::FIRST),
    command("hincrby", Group::Hash, "Adds to the integer in a field (a missing one counts as 0).", hincrby)
        .args(&[KEY, FIELD, int_arg("increment", "what to add")])
        .reply("the new value")
        .errors(&[
            "`ERR hash value is not an integer`",
            "`ERR increment or decrement would overflow`",
            WRONGTYPE,
        ])
        .flags(&[Flag::Write, Flag::DenyOom, Flag::Fast])
        .keys(Keys::FIRST),
    command(
        "hincrbyfloat",
        Group::Hash,
        "Adds a decimal number to a field, written as INCRBYFLOAT writes it.",
        hincrbyfloat,
    )
    .args(&[KEY, FIELD, double("increment", "a decimal number, exponent allowed (`5.0e3`)")])
    .reply("the new value, as a bulk string")
    .errors(&[
        "`ERR value is not a valid float`: the increment is not a number",
        "`ERR value is NaN or Infinity`",
        "`ERR hash value is not a float`",
        "`ERR increment would produce NaN or Infinity`",
        WRONGTYPE,
    ])
    .flags(&[Flag::Write, Flag::DenyOom, Flag::Fast])
    .keys(Keys::FIRST),
    command("hgetall", Group::Hash, "Every field and value, in field order.", hgetall)
        .args(&[KEY])
        .reply("a map of fields to values (RESP2: a flat array `[field, value, ...]`)")
        .errors(&[WRONGTYPE])
        .flags(&[Flag::ReadOnly])
        .keys(Keys::FIRST),
    command("hkeys", Group::Hash, "Every field, in field order.", hkeys)
        .args(&[KEY])
        .reply("an array of the fields")
        .errors(&[WRONGTYPE])
        .flags(&[Flag::ReadOnly])
        .keys(Keys::FIRST),
    command("hvals", Group::Hash, "Every value, in field order.", hvals)
        .args(&[KEY])
        .reply("an array of the values")
        .errors(&[WRONGTYPE])
        .flags(&[Flag::ReadOnly])
        .keys(Keys::FIRST),
    command("hlen", Group::Hash, "How many fields the hash has.", hlen)
        .args(&[KEY])
        .reply("the count; 0 when the hash does not exist")
        .errors(&[WRONGTYPE])
        .flags(&[Flag::ReadOnly, Flag::Fast])
        .keys(Keys::FIRST),
    command("hstrlen", Group::Hash, "The length of a field's value.", hstrlen)
        .args(&[KEY, FIELD])
        .reply("the length; 0 when the field is missing")
        .errors(&[WRONGTYPE])
        .flags(&[Flag::ReadOnly, Flag::Fast])
        .keys(Keys::FIRST),
    command(
        "hscan",
        Group::Hash,
        "The hash's fields and values, in one batch with the cursor 0 (as Redis answers for the \
         small hashes it keeps as listpacks); COUNT is accepted and the whole hash comes anyway.",
        hscan,
    )
    .args(&[
        KEY,
        int_arg("cursor", "0 (any cursor starts again)"),
        string("pattern", "only fields matching this glob").token("MATCH").optional(),
        int_arg("count", "accepted, as a hint").token("COUNT").optional(),
    ])
    .reply("`[0, [field, value, ...]]`")
    .errors(&["`ERR invalid cursor`", WRONGTYPE])
    .flags(&[Flag::ReadOnly])
    .keys(Keys::FIRST),
];

/// `HSET key field value [field value ...]` → how many fields were added.
fn hset(args: Args<'_>) -> Result<Action, Frame> {
    let (key, pairs) = fields_and_values(args)?;
    write(Command::HSet { key, pairs, nx: false }, ReplyShape::Integer)
}

/// `HMSET key field value [field value ...]` → `+OK`.
fn hmset(args: Args<'_>) -> Result<Action, Frame> {
    let (key, pairs) = fields_and_values(args)?;
    write(Command::HSet { key, pairs, nx: false }, ReplyShape::Done)
}

/// The key and pairs of `HSET`/`HMSET`: a field without its value is Redis's arity error.
fn fields_and_values(mut args: Args<'_>) -> Result<(String, Vec<(Bytes, Bytes)>), Frame> {
    let command = args.command;
    let key = args.name()?;
    let rest = args.remaining();
    if rest.len() % 2 != 0 {
        return Err(wrong_arity(command));
    }
    let pairs = rest.chunks_exact(2).map(|p| (Bytes::copy_from_slice(&p[0]), Bytes::copy_from_slice(&p[1])));
    Ok((key, pairs.collect()))
}

/// `HSETNX key field value` → 1 if set, 0 if the field existed.
fn hsetnx(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    let field = args.stored()?;
    let value = args.stored()?;
    args.end()?;
    write(Command::HSet { key, pairs: vec![(field, value)], nx: true }, ReplyShape::Integer)
}

/// `HGET key field` → the value, or nil.
fn hget(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    let field = args.next()?.clone();
    args.end()?;
    read(Query::HGet { key, field }, ReplyShape::Value)
}

/// `HMGET key field [field ...]` → the values, nil for missing fields.
fn hmget(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    let fields = args.remaining().to_vec();
    read(Query::HMGet { key, fields }, ReplyShape::Redis)
}

/// `HDEL key field [field ...]` → how many were removed.
fn hdel(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    let fields = args.remaining().to_vec();
    write(Command::HDel { key, fields }, ReplyShape::Integer)
}

/// `HEXISTS key field` → 1 or 0.
fn hexists(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    let field = args.next()?.clone();
    args.end()?;
    read(Query::HExists { key, field }, ReplyShape::Integer)
}

/// `HINCRBY key field increment` → the new value.
fn hincrby(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    let field = args.stored()?;
    let delta = int(args.next()?)?;
    args.end()?;
    write(Command::HIncrBy { key, field, delta }, ReplyShape::Integer)
}

/// `HINCRBYFLOAT key field increment` → the new value. Unlike `INCRBYFLOAT`, Redis checks the
/// increment before the key, so it is checked here.
fn hincrbyfloat(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    let field = args.stored()?;
    let delta = args.next()?;
    args.end()?;
    let number = parse_float(delta).ok_or_else(|| Frame::error("ERR", "value is not a valid float"))?;
    if !number.is_finite() {
        return Err(Frame::error("ERR", "value is NaN or Infinity"));
    }
    let delta = String::from_utf8_lossy(delta).into_owned();
    write(Command::HIncrByFloat { key, field, delta }, ReplyShape::Value)
}

fn whole(mut args: Args<'_>, fields: bool, values: bool, shape: ReplyShape) -> Result<Action, Frame> {
    let key = args.name()?;
    args.end()?;
    read(Query::HGetAll { key, fields, values }, shape)
}

/// `HGETALL key` → a map of fields to values.
fn hgetall(args: Args<'_>) -> Result<Action, Frame> {
    whole(args, true, true, ReplyShape::Pairs)
}

/// `HKEYS key` → the fields.
fn hkeys(args: Args<'_>) -> Result<Action, Frame> {
    whole(args, true, false, ReplyShape::Redis)
}

/// `HVALS key` → the values.
fn hvals(args: Args<'_>) -> Result<Action, Frame> {
    whole(args, false, true, ReplyShape::Redis)
}

/// `HLEN key` → the number of fields.
fn hlen(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    args.end()?;
    read(Query::HLen { key }, ReplyShape::Integer)
}

/// `HSTRLEN key field` → the length of the value.
fn hstrlen(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    let field = args.next()?.clone();
    args.end()?;
    read(Query::HStrLen { key, field }, ReplyShape::Integer)
}

/// `HSCAN key cursor [MATCH pattern] [COUNT count]` → `[0, [field, value, ...]]`. Options are
/// checked as `SCAN` checks them (`TYPE` is `SCAN`'s alone: a syntax error here).
fn hscan(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    scan_cursor(args.next()?)?;
    let mut pattern = None;
    while let Some(keyword) = args.keyword() {
        match keyword.as_slice() {
            b"MATCH" => pattern = Some(args.value()?.clone()),
            b"COUNT" => {
                scan_count(args.value()?)?;
            }
            _ => return Err(super::syntax_error()),
        }
    }
    read(Query::HScan { key, pattern }, ReplyShape::Redis)
}

/// [`ReplyShape::Pairs`]: `[f1, v1, f2, v2]` as a map.
pub(super) fn render_pairs(reply: Reply) -> Frame {
    match reply {
        Reply::Array(items) => {
            let mut items = items.into_iter();
            let mut pairs = Vec::new();
            while let (Some(Reply::Bytes(field)), Some(Reply::Bytes(value))) = (items.next(), items.next()) {
                pairs.push((Frame::Bulk(field), Frame::Bulk(value)));
            }
            Frame::Map(pairs)
        }
        other => unexpected(ReplyShape::Pairs, &other),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{bytes, encoded, error_of, parse_line};
    use super::super::{parse, render};
    use super::*;
    use crate::Protocol;

    fn b(s: &str) -> Bytes {
        Bytes::from(s.to_owned())
    }

    fn action(line: &str) -> Action {
        parse_line(line).unwrap_or_else(|e| panic!("{line}: {e:?}"))
    }

    #[test]
    fn hset_and_hmset_take_pairs() {
        let pairs = vec![(b("a"), b("1")), (b("b"), b("2"))];
        assert_eq!(
            action("HSET h a 1 b 2"),
            Action::Write {
                cmd: Command::HSet { key: "h".into(), pairs: pairs.clone(), nx: false },
                shape: ReplyShape::Integer
            }
        );
        assert_eq!(
            action("hmset h a 1 b 2"),
            Action::Write {
                cmd: Command::HSet { key: "h".into(), pairs, nx: false },
                shape: ReplyShape::Done
            }
        );
        assert_eq!(
            action("HSETNX h a 1"),
            Action::Write {
                cmd: Command::HSet { key: "h".into(), pairs: vec![(b("a"), b("1"))], nx: true },
                shape: ReplyShape::Integer
            }
        );
        for line in ["HSET h", "HSET h a", "HSET h a 1 b", "HMSET h a 1 b"] {
            let name = line.split(' ').next().unwrap().to_ascii_lowercase();
            assert_eq!(
                error_of(line),
                format!("ERR wrong number of arguments for '{name}' command"),
                "{line}"
            );
        }
        assert_eq!(error_of("HSETNX h a"), "ERR wrong number of arguments for 'hsetnx' command");
    }

    #[test]
    fn reads() {
        assert_eq!(
            action("HGET h f"),
            Action::Read { query: Query::HGet { key: "h".into(), field: b("f") }, shape: ReplyShape::Value }
        );
        assert_eq!(
            action("HMGET h a b"),
            Action::Read {
                query: Query::HMGet { key: "h".into(), fields: vec![b("a"), b("b")] },
                shape: ReplyShape::Redis
            }
        );
        assert_eq!(
            action("HGETALL h"),
            Action::Read {
                query: Query::HGetAll { key: "h".into(), fields: true, values: true },
                shape: ReplyShape::Pairs
            }
        );
        assert_eq!(
            action("HKEYS h"),
            Action::Read {
                query: Query::HGetAll { key: "h".into(), fields: true, values: false },
                shape: ReplyShape::Redis
            }
        );
        assert_eq!(error_of("HGET h"), "ERR wrong number of arguments for 'hget' command");
        assert_eq!(error_of("HMGET h"), "ERR wrong number of arguments for 'hmget' command");
        assert_eq!(error_of("HLEN h x"), "ERR wrong number of arguments for 'hlen' command");
    }

    #[test]
    fn increments_check_their_numbers() {
        assert_eq!(
            action("HINCRBY h f -3"),
            Action::Write {
                cmd: Command::HIncrBy { key: "h".into(), field: b("f"), delta: -3 },
                shape: ReplyShape::Integer
            }
        );
        assert_eq!(error_of("HINCRBY h f 1.5"), "ERR value is not an integer or out of range");
        assert_eq!(
            action("HINCRBYFLOAT h f 2.5e1"),
            Action::Write {
                cmd: Command::HIncrByFloat { key: "h".into(), field: b("f"), delta: "2.5e1".into() },
                shape: ReplyShape::Value
            }
        );
        assert_eq!(error_of("HINCRBYFLOAT h f x"), "ERR value is not a valid float");
        assert_eq!(error_of("HINCRBYFLOAT h f nan"), "ERR value is not a valid float");
        assert_eq!(error_of("HINCRBYFLOAT h f inf"), "ERR value is NaN or Infinity");
    }

    #[test]
    fn hscan_options() {
        assert_eq!(
            action("HSCAN h 0 MATCH f* COUNT 5"),
            Action::Read {
                query: Query::HScan { key: "h".into(), pattern: Some(b("f*")) },
                shape: ReplyShape::Redis
            }
        );
        assert_eq!(error_of("HSCAN h x"), "ERR invalid cursor");
        assert_eq!(error_of("HSCAN h 0 COUNT 0"), "ERR syntax error");
        assert_eq!(error_of("HSCAN h 0 COUNT x"), "ERR value is not an integer or out of range");
        assert_eq!(error_of("HSCAN h 0 TYPE hash"), "ERR syntax error");
        assert_eq!(error_of("HSCAN h 0 MATCH"), "ERR syntax error");
    }

    #[test]
    fn hgetall_is_a_map_in_resp3_and_flat_in_resp2() {
        let reply = Reply::Array(vec![Reply::Bytes(b("a")), Reply::Bytes(b("1"))]);
        let frame = render(ReplyShape::Pairs, reply, Protocol::Resp3);
        assert_eq!(encoded(&frame, Protocol::Resp3), bytes(b"%1\r\n$1\r\na\r\n$1\r\n1\r\n"));
        assert_eq!(encoded(&frame, Protocol::Resp2), bytes(b"*2\r\n$1\r\na\r\n$1\r\n1\r\n"));
        let frame = render(ReplyShape::Done, Reply::Int(2), Protocol::Resp2);
        assert_eq!(encoded(&frame, Protocol::Resp2), bytes(b"+OK\r\n"));
        let args = [Bytes::from_static(b"HGET"), Bytes::from_static(b"h"), Bytes::from_static(b"\xff")];
        assert!(parse(&args).is_ok(), "fields are bytes");
    }
}
