//! Redis's string keys: `GET SET DEL EXISTS EXPIRE PEXPIRE TTL PTTL INCR INCRBY DECR DECRBY`.
//!
//! Enough for the classic `SET key value NX PX ms` / `DEL key` lock and for counters, with Redis
//! 7's syntax, error texts and checking order (options first, then their values). One extension:
//! `SET` and `DEL` take a trailing `FENCE lock token`, which makes them apply only while `token`
//! is a live hold of `lock` (else `-FENCED` and nothing changes).

use bytes::Bytes;
use turnstile_core::{Command, ExpireCondition, Fence, Query, Reply, SetCondition, SetExpiry, SetKey};

use super::spec::{
    Arg, FENCE, FENCED, Flag, Group, Keys, Spec, command, integer as int_arg, key, one_of, string, word,
};
use super::{Action, Args, ReplyShape, int, name, read, syntax_error, uint, unexpected, write};
use crate::Frame;

const KEY: Arg = key("key", "the key");
const NOT_INTEGER: &str = "`ERR value is not an integer or out of range`: the stored value is not an integer";
const OVERFLOW: &str = "`ERR increment or decrement would overflow`";
const EXPIRE_CONDITION: Arg = one_of(
    "condition",
    &[
        word("NX", "only if the key has no TTL"),
        word("XX", "only if the key has a TTL"),
        word("GT", "only if the new TTL is greater than the current one"),
        word("LT", "only if the new TTL is less than the current one"),
    ],
    "when to set it (XX with LT is refused)",
)
.optional();

/// Redis's string and key commands, in the order the docs list them.
pub(super) const COMMANDS: &[Spec] = &[
    command("get", Group::String, "The value of a key.", get)
        .args(&[KEY])
        .reply("the value, or nil")
        .flags(&[Flag::ReadOnly, Flag::Fast])
        .keys(Keys::FIRST),
    command(
        "set",
        Group::String,
        "Sets a key's value, with Redis 7's options: the classic lock is `SET key value NX PX ms`.",
        set,
    )
    .args(&[
        KEY,
        string("value", "the value, binary-safe"),
        one_of(
            "condition",
            &[word("NX", "only if the key does not exist"), word("XX", "only if it exists")],
            "when to set it",
        )
        .optional(),
        word("GET", "answer the old value instead of OK").optional(),
        one_of(
            "expiration",
            &[
                int_arg("seconds", "expire after this many seconds").token("EX"),
                int_arg("milliseconds", "expire after this many ms").token("PX"),
                word("KEEPTTL", "keep the key's TTL"),
            ],
            "the key's TTL (default: none, and a TTL it had is removed)",
        )
        .optional(),
        FENCE,
    ])
    .reply("`OK`; nil when NX or XX kept it from being set; with GET, the old value or nil")
    .errors(&[
        "`ERR invalid expire time in 'set' command`",
        "`OOM command not allowed when used memory > 'max-memory'`",
        FENCED,
    ])
    .flags(&[Flag::Write, Flag::DenyOom])
    .keys(Keys::FIRST),
    command("setex", Group::String, "Sets a key's value and its TTL in seconds.", setex)
        .args(&[KEY, int_arg("seconds", "the TTL"), string("value", "the value")])
        .reply("`OK`")
        .errors(&["`ERR invalid expire time in 'setex' command`"])
        .flags(&[Flag::Write, Flag::DenyOom])
        .keys(Keys::FIRST),
    command("psetex", Group::String, "Sets a key's value and its TTL in ms.", psetex)
        .args(&[KEY, int_arg("milliseconds", "the TTL"), string("value", "the value")])
        .reply("`OK`")
        .errors(&["`ERR invalid expire time in 'psetex' command`"])
        .flags(&[Flag::Write, Flag::DenyOom])
        .keys(Keys::FIRST),
    command("incr", Group::String, "Adds 1 to the integer a key holds (a missing key counts as 0).", incr)
        .args(&[KEY])
        .reply("the new value")
        .errors(&[NOT_INTEGER, OVERFLOW])
        .flags(&[Flag::Write, Flag::DenyOom, Flag::Fast])
        .keys(Keys::FIRST),
    command("incrby", Group::String, "Adds an amount to the integer a key holds.", incrby)
        .args(&[KEY, int_arg("increment", "what to add")])
        .reply("the new value")
        .errors(&[NOT_INTEGER, OVERFLOW])
        .flags(&[Flag::Write, Flag::DenyOom, Flag::Fast])
        .keys(Keys::FIRST),
    command("decr", Group::String, "Subtracts 1 from the integer a key holds.", decr)
        .args(&[KEY])
        .reply("the new value")
        .errors(&[NOT_INTEGER, OVERFLOW])
        .flags(&[Flag::Write, Flag::DenyOom, Flag::Fast])
        .keys(Keys::FIRST),
    command("decrby", Group::String, "Subtracts an amount from the integer a key holds.", decrby)
        .args(&[KEY, int_arg("decrement", "what to subtract")])
        .reply("the new value")
        .errors(&[NOT_INTEGER, OVERFLOW, "`ERR decrement would overflow`"])
        .flags(&[Flag::Write, Flag::DenyOom, Flag::Fast])
        .keys(Keys::FIRST),
    command(
        "del",
        Group::Generic,
        "Deletes keys. A trailing `FENCE lock token` is read as a fence only when a key comes before it.",
        del,
    )
    .args(&[KEY.multiple(), FENCE])
    .reply("how many keys were removed")
    .errors(&[FENCED])
    .flags(&[Flag::Write])
    .keys(Keys::ALL),
    command("exists", Group::Generic, "How many of the keys exist (a key named twice counts twice).", exists)
        .args(&[KEY.multiple()])
        .reply("the count")
        .flags(&[Flag::ReadOnly, Flag::Fast])
        .keys(Keys::ALL),
    command("expire", Group::Generic, "Sets a key's TTL in seconds; 0 or less deletes the key.", expire)
        .args(&[KEY, int_arg("seconds", "the TTL"), EXPIRE_CONDITION])
        .reply("`1` if the TTL was set, `0` if the key is missing or the condition failed")
        .errors(&[
            "`ERR invalid expire time in 'expire' command`",
            "`ERR Unsupported option X`",
            "`ERR NX and XX, GT or LT options at the same time are not compatible`",
        ])
        .flags(&[Flag::Write, Flag::Fast])
        .keys(Keys::FIRST),
    command("pexpire", Group::Generic, "Sets a key's TTL in ms; 0 or less deletes the key.", pexpire)
        .args(&[KEY, int_arg("milliseconds", "the TTL"), EXPIRE_CONDITION])
        .reply("`1` if the TTL was set, `0` if the key is missing or the condition failed")
        .errors(&[
            "`ERR Unsupported option X`",
            "`ERR NX and XX, GT or LT options at the same time are not compatible`",
        ])
        .flags(&[Flag::Write, Flag::Fast])
        .keys(Keys::FIRST),
    command("ttl", Group::Generic, "A key's TTL in seconds, rounded to the nearest as Redis rounds it.", ttl)
        .args(&[KEY])
        .reply("the seconds left; -1 when the key has no TTL, -2 when it does not exist")
        .flags(&[Flag::ReadOnly, Flag::Fast])
        .keys(Keys::FIRST),
    command("pttl", Group::Generic, "A key's TTL in ms.", pttl)
        .args(&[KEY])
        .reply("the ms left; -1 when the key has no TTL, -2 when it does not exist")
        .flags(&[Flag::ReadOnly, Flag::Fast])
        .keys(Keys::FIRST),
];

/// `GET key` → the value, or nil.
pub(super) fn get(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    args.end()?;
    read(Query::Get { key }, ReplyShape::Value)
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|KEEPTTL] [FENCE lock token]` → `+OK`, or nil when
/// `NX`/`XX` kept it from being set; with `GET`, the old value (or nil) instead.
///
/// As in Redis, every option is checked before any value: `NX` with `XX`, or two of
/// `EX`/`PX`/`KEEPTTL`, is a syntax error; then an expiry of 0 or less (or seconds that would
/// overflow as ms) is `invalid expire time in 'set' command`.
pub(super) fn set(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    let value = args.stored()?;
    let mut set = SetKey::new(key, value);
    let mut expire: Option<(Unit, &Bytes)> = None;
    let mut keep_ttl = false;
    let mut fence = None;
    while let Some(keyword) = args.keyword() {
        match keyword.as_slice() {
            b"NX" if set.condition != SetCondition::Xx => set.condition = SetCondition::Nx,
            b"XX" if set.condition != SetCondition::Nx => set.condition = SetCondition::Xx,
            b"GET" => set.get = true,
            b"KEEPTTL" if expire.is_none() => keep_ttl = true,
            // EX twice is allowed (the last wins), EX with PX is not: Redis's rules.
            b"EX" if !keep_ttl && expire.is_none_or(|(u, _)| u == Unit::Seconds) => {
                expire = Some((Unit::Seconds, args.value()?));
            }
            b"PX" if !keep_ttl && expire.is_none_or(|(u, _)| u == Unit::Millis) => {
                expire = Some((Unit::Millis, args.value()?));
            }
            b"FENCE" => fence = Some((args.value()?, args.value()?)),
            _ => return Err(syntax_error()),
        }
    }
    set.expiry = match expire {
        Some((unit, ttl)) => SetExpiry::In(set_ttl(unit, ttl)?),
        None if keep_ttl => SetExpiry::KeepTtl,
        None => SetExpiry::None,
    };
    if let Some((lock, token)) = fence {
        set.fence = Some(Fence { lock: name(lock)?, token: uint(token)? });
    }
    write(Command::Set(set), ReplyShape::Value)
}

/// `SETEX key seconds value` → `+OK` (what many client libraries send for "set with expiry").
pub(super) fn setex(args: Args<'_>) -> Result<Action, Frame> {
    set_with_ttl(args, Unit::Seconds)
}

/// `PSETEX key ms value` → `+OK`.
pub(super) fn psetex(args: Args<'_>) -> Result<Action, Frame> {
    set_with_ttl(args, Unit::Millis)
}

fn set_with_ttl(mut args: Args<'_>, unit: Unit) -> Result<Action, Frame> {
    let key = args.name()?;
    let ttl = args.next()?;
    let value = args.next()?.clone();
    args.end()?;
    int(ttl)?;
    let ttl = ttl_ms(unit, ttl)
        .ok_or_else(|| invalid_expire(if unit == Unit::Seconds { "setex" } else { "psetex" }))?;
    write(Command::Set(SetKey { expiry: SetExpiry::In(ttl), ..SetKey::new(key, value) }), ReplyShape::Value)
}

/// `DEL key [key ...] [FENCE lock token]` → how many keys were removed.
///
/// A key may be called `FENCE`, so the fence is recognised only in its one place: when the
/// third argument from the end is `FENCE` and at least one key comes before it. `DEL a FENCE b 1`
/// is therefore a fenced delete of `a`; to delete keys named like that, send them in another
/// order or in two commands.
pub(super) fn del(args: Args<'_>) -> Result<Action, Frame> {
    let all = args.remaining();
    let (keys, fence) = match all {
        [keys @ .., keyword, lock, token] if !keys.is_empty() && keyword.eq_ignore_ascii_case(b"FENCE") => {
            (keys, Some(Fence { lock: name(lock)?, token: uint(token)? }))
        }
        _ => (all, None),
    };
    let keys = keys.iter().map(name).collect::<Result<_, _>>()?;
    write(Command::Del { keys, fence }, ReplyShape::Integer)
}

/// `EXISTS key [key ...]` → how many of the keys exist (a key named twice counts twice).
pub(super) fn exists(args: Args<'_>) -> Result<Action, Frame> {
    let keys = args.remaining().iter().map(name).collect::<Result<_, _>>()?;
    read(Query::Exists { keys }, ReplyShape::Integer)
}

/// `EXPIRE key seconds [NX|XX|GT|LT]` → 1 if the TTL was set (a TTL of 0 or less deletes the
/// key), 0 if the key is missing or the condition failed. Seconds that overflow as ms are
/// `invalid expire time in 'expire' command`.
pub(super) fn expire(args: Args<'_>) -> Result<Action, Frame> {
    expire_in(args, Unit::Seconds)
}

/// `PEXPIRE key ms [NX|XX|GT|LT]`, as `EXPIRE` in milliseconds.
pub(super) fn pexpire(args: Args<'_>) -> Result<Action, Frame> {
    expire_in(args, Unit::Millis)
}

/// `TTL key` → seconds left, rounded to the nearest as Redis does; -1 without a TTL, -2 when the
/// key does not exist. Read from the core's `PTTL`.
pub(super) fn ttl(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    args.end()?;
    read(Query::Pttl { key }, ReplyShape::TtlSeconds)
}

/// `PTTL key` → milliseconds left; -1 without a TTL, -2 when the key does not exist.
pub(super) fn pttl(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    args.end()?;
    read(Query::Pttl { key }, ReplyShape::Integer)
}

/// `INCR key` → the new value. A missing key counts as 0; a value that is not a canonical
/// integer is the core's `value is not an integer or out of range`.
pub(super) fn incr(args: Args<'_>) -> Result<Action, Frame> {
    incr_by(args, Some(1))
}

/// `INCRBY key delta` → the new value; overflow is `increment or decrement would overflow`.
pub(super) fn incrby(args: Args<'_>) -> Result<Action, Frame> {
    incr_by(args, None)
}

/// `DECR key` → the new value.
pub(super) fn decr(args: Args<'_>) -> Result<Action, Frame> {
    incr_by(args, Some(-1))
}

/// `DECRBY key delta` → the new value. `DECRBY k -9223372036854775808` cannot be negated and
/// gets Redis's `decrement would overflow`.
pub(super) fn decrby(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    let delta = int(args.next()?)?;
    args.end()?;
    let delta = delta.checked_neg().ok_or_else(|| Frame::error("ERR", "decrement would overflow"))?;
    write(Command::IncrBy { key, delta }, ReplyShape::Integer)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Seconds,
    Millis,
}

/// `SET`'s `EX`/`PX` value in ms: an integer, above 0, and not overflowing when made ms.
fn set_ttl(unit: Unit, arg: &[u8]) -> Result<u64, Frame> {
    int(arg)?;
    ttl_ms(unit, arg).ok_or_else(|| invalid_expire("set"))
}

/// A positive TTL in `unit` as ms, if it is an integer that fits.
fn ttl_ms(unit: Unit, arg: &[u8]) -> Option<u64> {
    let ttl = int(arg).ok()?;
    let ms = match unit {
        Unit::Seconds => ttl.checked_mul(1000),
        Unit::Millis => Some(ttl),
    };
    ms.and_then(|ms| u64::try_from(ms).ok()).filter(|&ms| ms > 0)
}

fn invalid_expire(command: &str) -> Frame {
    Frame::error("ERR", format_args!("invalid expire time in '{command}' command"))
}

/// `EXPIRE`/`PEXPIRE`: flags first (Redis's texts for unknown and incompatible ones), then the
/// TTL, which may be negative (the key is deleted) but must fit in ms.
fn expire_in(mut args: Args<'_>, unit: Unit) -> Result<Action, Frame> {
    let command = args.command;
    let key = args.name()?;
    let ttl = args.next()?;
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for option in args.remaining() {
        match option.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => {
                let text = format!("Unsupported option {}", String::from_utf8_lossy(option));
                return Err(Frame::error("ERR", text));
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err(Frame::error("ERR", "NX and XX, GT or LT options at the same time are not compatible"));
    }
    if gt && lt {
        return Err(Frame::error("ERR", "GT and LT options at the same time are not compatible"));
    }
    let condition = match (nx, xx, gt, lt) {
        (true, ..) => ExpireCondition::Nx,
        // GT already needs a TTL to compare with (no TTL counts as infinite), so XX adds nothing.
        (_, _, true, _) => ExpireCondition::Gt,
        // The core's LT passes a key without TTL; XX would have to refuse it, and the core has no
        // condition for "has a TTL and the new one is less". Refused rather than ignored.
        (_, true, _, true) => {
            return Err(Frame::error("ERR", "XX and LT options at the same time are not supported"));
        }
        (_, _, _, true) => ExpireCondition::Lt,
        (_, true, ..) => ExpireCondition::Xx,
        _ => ExpireCondition::Always,
    };
    let ttl = int(ttl)?;
    let ttl = match unit {
        Unit::Seconds => ttl
            .checked_mul(1000)
            .ok_or_else(|| Frame::error("ERR", format_args!("invalid expire time in '{command}' command")))?,
        Unit::Millis => ttl,
    };
    write(Command::Expire { key, ttl, condition }, ReplyShape::Integer)
}

/// `INCR`/`DECR` with a fixed delta, `INCRBY` with the delta from the arguments.
fn incr_by(mut args: Args<'_>, fixed: Option<i64>) -> Result<Action, Frame> {
    let key = args.name()?;
    let delta = match fixed {
        Some(delta) => delta,
        None => int(args.next()?)?,
    };
    args.end()?;
    write(Command::IncrBy { key, delta }, ReplyShape::Integer)
}

/// [`ReplyShape::Value`]: `+OK`, a bulk string, or nil (`$-1` in RESP2, `_` in RESP3).
pub(super) fn render_value(reply: Reply) -> Frame {
    match reply {
        Reply::Ok => Frame::ok(),
        Reply::Bytes(value) => Frame::Bulk(value),
        Reply::Nil => Frame::Null,
        other => unexpected(ReplyShape::Value, &other),
    }
}

/// [`ReplyShape::TtlSeconds`]: Redis's `(ms + 500) / 1000`, so 1499 ms is 1 s and 1500 ms is 2 s;
/// -1 (no TTL) and -2 (no key) pass unchanged.
pub(super) fn render_ttl_seconds(reply: Reply) -> Frame {
    match reply {
        Reply::Int(ms) if ms < 0 => Frame::Integer(ms),
        Reply::Int(ms) => Frame::Integer(ms.saturating_add(500) / 1000),
        other => unexpected(ReplyShape::TtlSeconds, &other),
    }
}

#[cfg(test)]
mod tests {
    use turnstile_core::CoreError;

    use super::super::testing::{bytes, encoded, error_of, parse_line};
    use super::super::{ReplyShape, parse, render};
    use super::*;
    use crate::Protocol;

    fn write_of(line: &str) -> Command {
        match parse_line(line) {
            Ok(Action::Write { cmd, .. }) => cmd,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn set_of(line: &str) -> SetKey {
        match write_of(line) {
            Command::Set(set) => set,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn fence(lock: &str, token: u64) -> Option<Fence> {
        Some(Fence { lock: lock.into(), token })
    }

    #[test]
    fn get() {
        assert_eq!(
            parse_line("GET k"),
            Ok(Action::Read { query: Query::Get { key: "k".into() }, shape: ReplyShape::Value })
        );
        assert_eq!(error_of("GET"), "ERR wrong number of arguments for 'get' command");
        assert_eq!(error_of("GET a b"), "ERR wrong number of arguments for 'get' command");
    }

    #[test]
    fn set_plain_and_binary_value() {
        assert_eq!(
            parse_line("SET k v"),
            Ok(Action::Write { cmd: Command::Set(SetKey::new("k", "v")), shape: ReplyShape::Value })
        );
        let args = [Bytes::from_static(b"SET"), Bytes::from_static(b"k"), Bytes::from_static(b"\xff\x00")];
        let Ok(Action::Write { cmd: Command::Set(set), .. }) = parse(&args) else { panic!() };
        assert_eq!(set.value, Bytes::from_static(b"\xff\x00"));
    }

    #[test]
    fn set_the_classic_lock() {
        assert_eq!(
            set_of("SET lock me NX PX 30000"),
            SetKey {
                condition: SetCondition::Nx,
                expiry: SetExpiry::In(30_000),
                ..SetKey::new("lock", "me")
            }
        );
        assert_eq!(
            set_of("set k v ex 10 xx get"),
            SetKey {
                condition: SetCondition::Xx,
                expiry: SetExpiry::In(10_000),
                get: true,
                ..SetKey::new("k", "v")
            }
        );
        assert_eq!(set_of("SET k v KEEPTTL").expiry, SetExpiry::KeepTtl);
        // Redis lets an option repeat; the last value wins.
        assert_eq!(set_of("SET k v EX 1 EX 2").expiry, SetExpiry::In(2000));
        assert_eq!(set_of("SET k v NX NX").condition, SetCondition::Nx);
    }

    #[test]
    fn setex_and_psetex_set_with_an_expiry() {
        let expiry = |line: &str| match write_of(line) {
            Command::Set(set) => (set.key, set.value, set.expiry),
            other => panic!("{other:?}"),
        };
        assert_eq!(expiry("SETEX k 60 v"), ("k".to_owned(), Bytes::from("v"), SetExpiry::In(60_000)));
        assert_eq!(expiry("PSETEX k 1500 v"), ("k".to_owned(), Bytes::from("v"), SetExpiry::In(1_500)));
        assert_eq!(error_of("SETEX k 0 v"), "ERR invalid expire time in 'setex' command");
        assert_eq!(error_of("PSETEX k -5 v"), "ERR invalid expire time in 'psetex' command");
        assert_eq!(error_of("SETEX k soon v"), "ERR value is not an integer or out of range");
        assert_eq!(error_of("SETEX k 5"), "ERR wrong number of arguments for 'setex' command");
    }

    #[test]
    fn set_with_fence() {
        assert_eq!(
            set_of("SET k v PX 100 FENCE leader 9"),
            SetKey { expiry: SetExpiry::In(100), fence: fence("leader", 9), ..SetKey::new("k", "v") }
        );
        assert_eq!(error_of("SET k v FENCE leader"), "ERR syntax error");
        assert_eq!(error_of("SET k v FENCE leader nine"), "ERR value is not an integer or out of range");
    }

    #[test]
    fn set_syntax_errors() {
        assert_eq!(error_of("SET k"), "ERR wrong number of arguments for 'set' command");
        assert_eq!(error_of("SET k v NX XX"), "ERR syntax error");
        assert_eq!(error_of("SET k v XX NX"), "ERR syntax error");
        assert_eq!(error_of("SET k v EX 1 PX 1"), "ERR syntax error");
        assert_eq!(error_of("SET k v KEEPTTL EX 1"), "ERR syntax error");
        assert_eq!(error_of("SET k v PX 1 KEEPTTL"), "ERR syntax error");
        assert_eq!(error_of("SET k v EX"), "ERR syntax error");
        assert_eq!(error_of("SET k v EXAT 1"), "ERR syntax error");
        assert_eq!(error_of("SET k v extra"), "ERR syntax error");
        // Options are checked before values, as in Redis.
        assert_eq!(error_of("SET k v EX nope NX XX"), "ERR syntax error");
    }

    #[test]
    fn set_expire_errors() {
        assert_eq!(error_of("SET k v EX 0"), "ERR invalid expire time in 'set' command");
        assert_eq!(error_of("SET k v PX -5"), "ERR invalid expire time in 'set' command");
        assert_eq!(error_of("SET k v EX 9223372036854776"), "ERR invalid expire time in 'set' command");
        assert_eq!(error_of("SET k v EX 1.5"), "ERR value is not an integer or out of range");
    }

    #[test]
    fn del_keys_and_fence() {
        assert_eq!(
            parse_line("DEL a b"),
            Ok(Action::Write {
                cmd: Command::Del { keys: vec!["a".into(), "b".into()], fence: None },
                shape: ReplyShape::Integer
            })
        );
        assert_eq!(
            write_of("DEL a b fence leader 4"),
            Command::Del { keys: vec!["a".into(), "b".into()], fence: fence("leader", 4) }
        );
        // A key called FENCE is still a key when FENCE is not in the fence's place.
        assert_eq!(write_of("DEL FENCE"), Command::Del { keys: vec!["FENCE".into()], fence: None });
        assert_eq!(
            write_of("DEL FENCE a b"),
            Command::Del { keys: vec!["FENCE".into(), "a".into(), "b".into()], fence: None }
        );
        assert_eq!(error_of("DEL"), "ERR wrong number of arguments for 'del' command");
        assert_eq!(error_of("DEL a FENCE l x"), "ERR value is not an integer or out of range");
    }

    #[test]
    fn exists() {
        assert_eq!(
            parse_line("EXISTS a a b"),
            Ok(Action::Read {
                query: Query::Exists { keys: vec!["a".into(), "a".into(), "b".into()] },
                shape: ReplyShape::Integer
            })
        );
        assert_eq!(error_of("EXISTS"), "ERR wrong number of arguments for 'exists' command");
    }

    #[test]
    fn expire_converts_seconds() {
        assert_eq!(
            parse_line("EXPIRE k 10"),
            Ok(Action::Write {
                cmd: Command::Expire { key: "k".into(), ttl: 10_000, condition: ExpireCondition::Always },
                shape: ReplyShape::Integer
            })
        );
        assert_eq!(
            write_of("PEXPIRE k 1500 gt"),
            Command::Expire { key: "k".into(), ttl: 1500, condition: ExpireCondition::Gt }
        );
        assert_eq!(
            write_of("EXPIRE k -1"),
            Command::Expire { key: "k".into(), ttl: -1000, condition: ExpireCondition::Always }
        );
        let condition = |line| match write_of(line) {
            Command::Expire { condition, .. } => condition,
            other => panic!("{other:?}"),
        };
        assert_eq!(condition("EXPIRE k 1 NX"), ExpireCondition::Nx);
        assert_eq!(condition("EXPIRE k 1 XX"), ExpireCondition::Xx);
        assert_eq!(condition("EXPIRE k 1 LT"), ExpireCondition::Lt);
        assert_eq!(condition("EXPIRE k 1 XX GT"), ExpireCondition::Gt);
    }

    #[test]
    fn expire_errors() {
        assert_eq!(error_of("EXPIRE k"), "ERR wrong number of arguments for 'expire' command");
        assert_eq!(error_of("EXPIRE k soon"), "ERR value is not an integer or out of range");
        assert_eq!(error_of("EXPIRE k 9223372036854776"), "ERR invalid expire time in 'expire' command");
        assert_eq!(error_of("EXPIRE k -9223372036854776"), "ERR invalid expire time in 'expire' command");
        assert_eq!(
            write_of("PEXPIRE k 9223372036854775807"),
            Command::Expire { key: "k".into(), ttl: i64::MAX, condition: ExpireCondition::Always }
        );
        assert_eq!(error_of("EXPIRE k 1 FOO"), "ERR Unsupported option FOO");
        assert_eq!(
            error_of("PEXPIRE k 1 NX GT"),
            "ERR NX and XX, GT or LT options at the same time are not compatible"
        );
        assert_eq!(error_of("EXPIRE k 1 GT LT"), "ERR GT and LT options at the same time are not compatible");
        assert_eq!(error_of("EXPIRE k 1 XX LT"), "ERR XX and LT options at the same time are not supported");
        // Flags are checked before the TTL, as in Redis.
        assert_eq!(error_of("EXPIRE k soon FOO"), "ERR Unsupported option FOO");
    }

    #[test]
    fn ttl_and_pttl_read_the_core_pttl() {
        assert_eq!(
            parse_line("TTL k"),
            Ok(Action::Read { query: Query::Pttl { key: "k".into() }, shape: ReplyShape::TtlSeconds })
        );
        assert_eq!(
            parse_line("PTTL k"),
            Ok(Action::Read { query: Query::Pttl { key: "k".into() }, shape: ReplyShape::Integer })
        );
        assert_eq!(error_of("TTL"), "ERR wrong number of arguments for 'ttl' command");
        assert_eq!(error_of("PTTL a b"), "ERR wrong number of arguments for 'pttl' command");
    }

    #[test]
    fn counters() {
        let incr = |key: &str, delta| Command::IncrBy { key: key.into(), delta };
        assert_eq!(parse_line("INCR n"), Ok(Action::Write { cmd: incr("n", 1), shape: ReplyShape::Integer }));
        assert_eq!(write_of("DECR n"), incr("n", -1));
        assert_eq!(write_of("INCRBY n -7"), incr("n", -7));
        assert_eq!(write_of("DECRBY n 7"), incr("n", -7));
        assert_eq!(write_of("DECRBY n 9223372036854775807"), incr("n", -i64::MAX));
        assert_eq!(error_of("DECRBY n -9223372036854775808"), "ERR decrement would overflow");
        assert_eq!(error_of("INCRBY n 1.5"), "ERR value is not an integer or out of range");
        assert_eq!(error_of("INCR"), "ERR wrong number of arguments for 'incr' command");
        assert_eq!(error_of("INCR a b"), "ERR wrong number of arguments for 'incr' command");
        assert_eq!(error_of("INCRBY n"), "ERR wrong number of arguments for 'incrby' command");
        assert_eq!(error_of("DECRBY n 1 2"), "ERR wrong number of arguments for 'decrby' command");
    }

    #[test]
    fn set_renders_ok_nil_and_old_value() {
        let ok = render(ReplyShape::Value, Reply::Ok, Protocol::Resp2);
        assert_eq!(encoded(&ok, Protocol::Resp2), bytes(b"+OK\r\n"));
        // SET NX on an existing key.
        let nil = render(ReplyShape::Value, Reply::Nil, Protocol::Resp2);
        assert_eq!(encoded(&nil, Protocol::Resp2), bytes(b"$-1\r\n"));
        assert_eq!(encoded(&nil, Protocol::Resp3), bytes(b"_\r\n"));
        let old = render(ReplyShape::Value, Reply::Bytes(Bytes::from_static(b"old")), Protocol::Resp2);
        assert_eq!(encoded(&old, Protocol::Resp2), bytes(b"$3\r\nold\r\n"));
    }

    #[test]
    fn ttl_rounds_like_redis() {
        let ttl =
            |ms| encoded(&render(ReplyShape::TtlSeconds, Reply::Int(ms), Protocol::Resp2), Protocol::Resp2);
        assert_eq!(ttl(1499), bytes(b":1\r\n"));
        assert_eq!(ttl(1500), bytes(b":2\r\n"));
        assert_eq!(ttl(499), bytes(b":0\r\n"));
        assert_eq!(ttl(10_000), bytes(b":10\r\n"));
        assert_eq!(ttl(-1), bytes(b":-1\r\n"));
        assert_eq!(ttl(-2), bytes(b":-2\r\n"));
        // PTTL is the core's number as it is.
        let pttl = render(ReplyShape::Integer, Reply::Int(1499), Protocol::Resp2);
        assert_eq!(encoded(&pttl, Protocol::Resp2), bytes(b":1499\r\n"));
    }

    #[test]
    fn incr_errors_keep_the_core_texts() {
        let frame = render(ReplyShape::Integer, Reply::Error(CoreError::Overflow), Protocol::Resp2);
        assert_eq!(
            encoded(&frame, Protocol::Resp2),
            bytes(b"-ERR increment or decrement would overflow\r\n")
        );
        let frame = render(ReplyShape::Integer, Reply::Error(CoreError::NotInteger), Protocol::Resp2);
        assert_eq!(
            encoded(&frame, Protocol::Resp2),
            bytes(b"-ERR value is not an integer or out of range\r\n")
        );
    }
}
