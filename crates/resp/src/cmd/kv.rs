//! Redis's strings and the commands on keys of any type: `GET SET SETNX SETEX PSETEX GETSET
//! GETDEL GETEX MGET MSET MSETNX APPEND STRLEN INCR INCRBY INCRBYFLOAT DECR DECRBY`, `DEL UNLINK
//! EXISTS TOUCH TYPE RENAME RENAMENX KEYS SCAN DBSIZE FLUSHDB FLUSHALL OBJECT`, and the TTL
//! commands `EXPIRE PEXPIRE EXPIREAT PEXPIREAT PERSIST TTL PTTL EXPIRETIME PEXPIRETIME`.
//!
//! Locks, semaphores and queues are not keys: `TYPE` of a lock's name is `none`, and `FLUSHALL`
//! leaves them alone, so clearing a Redis cache never frees a lock someone holds.
//!
//! Enough for the classic `SET key value NX PX ms` / `DEL key` lock and for counters, with Redis
//! 7's syntax, error texts and checking order (options first, then their values). One extension:
//! `SET` and `DEL` take a trailing `FENCE lock token`, which makes them apply only while `token`
//! is a live hold of `lock` (else `-FENCED` and nothing changes).

use bytes::Bytes;
use turnstile_core::{
    Command, ExpireCondition, Fence, KeyExpiry, ObjectField, Query, Reply, SetCondition, SetExpiry, SetKey,
};

use super::spec::{
    Arg, FENCE, FENCED, Flag, Group, Keys, Spec, block, command, container, double, integer as int_arg, key,
    one_of, string, word,
};
use super::{
    Action, Args, ConnCmd, ReplyShape, int, name, read, syntax_error, uint, unexpected, write, wrong_arity,
};
use crate::Frame;
use turnstile_core::Category as C;

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
    // The rest of Redis's string commands.
    command(
        "setnx",
        Group::String,
        "Sets a key's value only if the key does not exist: the classic lock recipe.",
        setnx,
    )
    .args(&[KEY, string("value", "the value")])
    .reply("`1` if the key was set, `0` if it existed")
    .flags(&[Flag::Write, Flag::DenyOom, Flag::Fast])
    .keys(Keys::FIRST),
    command(
        "getset",
        Group::String,
        "Sets a key's value and answers the old one (`SET key value GET`).",
        getset,
    )
    .args(&[KEY, string("value", "the new value")])
    .reply("the old value, or nil")
    .errors(&[WRONGTYPE])
    .flags(&[Flag::Write, Flag::DenyOom, Flag::Fast])
    .keys(Keys::FIRST),
    command("getdel", Group::String, "Answers a key's value and deletes the key.", getdel)
        .args(&[KEY])
        .reply("the value, or nil")
        .errors(&[WRONGTYPE])
        .flags(&[Flag::Write, Flag::Fast])
        .keys(Keys::FIRST),
    command("getex", Group::String, "Answers a key's value and sets or removes its TTL.", getex)
        .args(&[
            KEY,
            one_of(
                "expiration",
                &[
                    int_arg("seconds", "expire after this many seconds").token("EX"),
                    int_arg("milliseconds", "expire after this many ms").token("PX"),
                    int_arg("unix-time-seconds", "expire at this Unix time").token("EXAT"),
                    int_arg("unix-time-milliseconds", "expire at this Unix time in ms").token("PXAT"),
                    word("PERSIST", "remove the TTL"),
                ],
                "the new TTL (default: unchanged); a time already past deletes the key",
            )
            .optional(),
        ])
        .reply("the value, or nil")
        .errors(&["`ERR invalid expire time in 'getex' command`", WRONGTYPE])
        .flags(&[Flag::Write, Flag::Fast])
        .keys(Keys::FIRST),
    command("mget", Group::String, "The values of several keys.", mget)
        .args(&[KEY.multiple()])
        .reply("an array of the values; nil for a missing key or one that is not a string")
        .flags(&[Flag::ReadOnly, Flag::Fast])
        .keys(Keys::ALL),
    command("mset", Group::String, "Sets several keys at once (one log entry), removing their TTLs.", mset)
        .args(&[KEY_VALUE.multiple()])
        .reply("`OK`")
        .flags(&[Flag::Write, Flag::DenyOom])
        .keys(Keys::PAIRS),
    command("msetnx", Group::String, "Sets several keys at once only if none of them exists.", msetnx)
        .args(&[KEY_VALUE.multiple()])
        .reply("`1` if every key was set, `0` if one existed and none was set")
        .flags(&[Flag::Write, Flag::DenyOom])
        .keys(Keys::PAIRS),
    command(
        "append",
        Group::String,
        "Appends to a key's value (a missing key counts as empty); keeps its TTL.",
        append,
    )
    .args(&[KEY, string("value", "what to append")])
    .reply("the value's new length")
    .errors(&[WRONGTYPE])
    .flags(&[Flag::Write, Flag::DenyOom, Flag::Fast])
    .keys(Keys::FIRST),
    command("strlen", Group::String, "The length of a key's value.", strlen)
        .args(&[KEY])
        .reply("the length; 0 when the key does not exist")
        .errors(&[WRONGTYPE])
        .flags(&[Flag::ReadOnly, Flag::Fast])
        .keys(Keys::FIRST),
    command(
        "incrbyfloat",
        Group::String,
        "Adds a decimal number to a key's value. The sum is exact for numbers written with up to 38 \
         digits, and kept with at most 17 digits after the point as Redis writes it (`10.5` + `0.1` \
         is `10.6`); Redis's own sums of large numbers may show its rounding error in the last \
         digits instead.",
        incrbyfloat,
    )
    .args(&[KEY, double("increment", "a decimal number, exponent allowed (`5.0e3`)")])
    .reply("the new value, as a bulk string")
    .errors(&[
        "`ERR value is not a valid float`: the value or the increment is not a number",
        "`ERR increment would produce NaN or Infinity`",
        WRONGTYPE,
    ])
    .flags(&[Flag::Write, Flag::DenyOom, Flag::Fast])
    .keys(Keys::FIRST),
    // Keys of any type.
    command(
        "type",
        Group::Generic,
        "The type of a key's value. Locks, semaphores and queues are not keys: their names are `none` here.",
        key_type,
    )
    .args(&[KEY])
    .reply("`string`, `hash`, `list`, or `none`, as a simple string")
    .flags(&[Flag::ReadOnly, Flag::Fast])
    .keys(Keys::FIRST),
    command(
        "rename",
        Group::Generic,
        "Renames a key, replacing what the new name held; the TTL moves with it.",
        rename,
    )
    .args(&[KEY, key("newkey", "the new name")])
    .reply("`OK`")
    .errors(&["`ERR no such key`"])
    .flags(&[Flag::Write])
    .keys(Keys::ALL),
    command("renamenx", Group::Generic, "Renames a key only if the new name does not exist.", renamenx)
        .args(&[KEY, key("newkey", "the new name")])
        .reply("`1` if renamed, `0` if the new name exists")
        .errors(&["`ERR no such key`"])
        .flags(&[Flag::Write, Flag::Fast])
        .keys(Keys::ALL),
    command("keys", Group::Generic, "Every key matching a glob pattern, in key order.", keys)
        .args(&[string("pattern", "`*` any bytes, `?` one, `[a-z]` `[^a]` a class, `\\` escapes")])
        .reply("an array of the key names")
        .flags(&[Flag::ReadOnly])
        .acl(&[C::Dangerous]),
    command(
        "scan",
        Group::Generic,
        "Walks the keys a batch at a time. The cursor is a number to pass back (0 starts, 0 again \
         ends): it holds no state, so it works on any connection and any node, and every key that \
         exists for the whole walk is returned at least once while other keys come and go.",
        scan,
    )
    .args(&[
        int_arg("cursor", "0, or the cursor the last batch answered"),
        string("pattern", "only keys matching this glob").token("MATCH").optional(),
        int_arg("count", "how many keys to look at (default 10), before MATCH and TYPE filter them")
            .token("COUNT")
            .optional(),
        string("type", "only keys of this type: `string`, `hash`, `list`").token("TYPE").optional(),
    ])
    .reply("`[next cursor, [key ...]]`; a batch may be empty before the walk ends")
    .errors(&["`ERR invalid cursor`"])
    .flags(&[Flag::ReadOnly]),
    command(
        "dbsize",
        Group::Generic,
        "How many keys exist (locks, semaphores and queues are not keys).",
        dbsize,
    )
    .reply("the count")
    .flags(&[Flag::ReadOnly, Flag::Fast]),
    command(
        "flushdb",
        Group::Generic,
        "Deletes every key; locks, semaphores and queues stay. As FLUSHALL: there is one database.",
        flushall,
    )
    .acl_only(&[C::Keyspace, C::Write, C::Slow, C::Dangerous, C::Kv])
    .args(&[FLUSH_MODE])
    .reply("`OK`")
    .flags(&[Flag::Write, Flag::Admin]),
    command(
        "flushall",
        Group::Generic,
        "Deletes every key; locks, semaphores and queues stay (they are not keys). One log entry, \
         applied on every node.",
        flushall,
    )
    .acl_only(&[C::Keyspace, C::Write, C::Slow, C::Dangerous, C::Kv])
    .args(&[FLUSH_MODE])
    .reply("`OK`")
    .flags(&[Flag::Write, Flag::Admin]),
    command(
        "touch",
        Group::Generic,
        "How many of the keys exist (Turnstile keeps no access times to update).",
        touch,
    )
    .args(&[KEY.multiple()])
    .reply("the count")
    .flags(&[Flag::ReadOnly, Flag::Fast])
    .keys(Keys::ALL),
    command("unlink", Group::Generic, "Deletes keys, as DEL.", unlink)
        .args(&[KEY.multiple()])
        .reply("how many keys were removed")
        .flags(&[Flag::Write, Flag::Fast])
        .keys(Keys::ALL),
    container(
        "object",
        Group::Generic,
        "What Redis would say about a key's internals, for clients that probe them.",
        OBJECT,
    ),
    command("persist", Group::Generic, "Removes a key's TTL.", persist)
        .args(&[KEY])
        .reply("`1` if a TTL was removed, `0` if the key is missing or had none")
        .flags(&[Flag::Write, Flag::Fast])
        .keys(Keys::FIRST),
    command(
        "expireat",
        Group::Generic,
        "Sets when a key expires, as a Unix time in seconds; a time past deletes it.",
        expireat,
    )
    .args(&[KEY, int_arg("unix-time-seconds", "when"), EXPIRE_CONDITION])
    .reply("`1` if the TTL was set, `0` if the key is missing or the condition failed")
    .errors(&[
        "`ERR invalid expire time in 'expireat' command`",
        "`ERR Unsupported option X`",
        "`ERR NX and XX, GT or LT options at the same time are not compatible`",
    ])
    .flags(&[Flag::Write, Flag::Fast])
    .keys(Keys::FIRST),
    command("pexpireat", Group::Generic, "Sets when a key expires, as a Unix time in ms.", pexpireat)
        .args(&[KEY, int_arg("unix-time-milliseconds", "when"), EXPIRE_CONDITION])
        .reply("`1` if the TTL was set, `0` if the key is missing or the condition failed")
        .errors(&[
            "`ERR Unsupported option X`",
            "`ERR NX and XX, GT or LT options at the same time are not compatible`",
        ])
        .flags(&[Flag::Write, Flag::Fast])
        .keys(Keys::FIRST),
    command("expiretime", Group::Generic, "When a key expires, as a Unix time in seconds.", expiretime)
        .args(&[KEY])
        .reply("the time; -1 when the key has no TTL, -2 when it does not exist")
        .flags(&[Flag::ReadOnly, Flag::Fast])
        .keys(Keys::FIRST),
    command("pexpiretime", Group::Generic, "When a key expires, as a Unix time in ms.", pexpiretime)
        .args(&[KEY])
        .reply("the time; -1 when the key has no TTL, -2 when it does not exist")
        .flags(&[Flag::ReadOnly, Flag::Fast])
        .keys(Keys::FIRST),
];

const WRONGTYPE: &str = "`WRONGTYPE Operation against a key holding the wrong kind of value`";
const KEY_VALUE: Arg =
    block("data", &[key("key", "a key"), string("value", "its value")], "a key and its value");
const FLUSH_MODE: Arg = one_of(
    "flush-type",
    &[word("ASYNC", "accepted; the flush is one log entry either way"), word("SYNC", "the same")],
    "Redis's choice of how to free memory",
)
.optional();

/// `OBJECT`'s subcommands.
const OBJECT: &[Spec] = &[
    command(
        "object|encoding",
        Group::Generic,
        "The encoding Redis 7 would use for the value: `int`, `embstr` or `raw` for strings; \
         `listpack` or `hashtable` for hashes; `listpack` or `quicklist` for lists, by Redis's \
         default size thresholds.",
        object_encoding,
    )
    .args(&[KEY])
    .reply("the encoding, or nil when the key does not exist")
    .flags(&[Flag::ReadOnly])
    .keys(Keys::AFTER_SUBCOMMAND),
    command("object|refcount", Group::Generic, "The value's reference count: always 1.", object_refcount)
        .args(&[KEY])
        .reply("1, or nil when the key does not exist")
        .flags(&[Flag::ReadOnly])
        .keys(Keys::AFTER_SUBCOMMAND),
    command(
        "object|idletime",
        Group::Generic,
        "Seconds since the key was used: always 0, as reads change no replicated state.",
        object_idletime,
    )
    .args(&[KEY])
    .reply("0, or nil when the key does not exist")
    .flags(&[Flag::ReadOnly])
    .keys(Keys::AFTER_SUBCOMMAND),
    command(
        "object|freq",
        Group::Generic,
        "The LFU counter, refused as Redis refuses it without an LFU eviction policy (Turnstile evicts nothing).",
        object_freq,
    )
    .args(&[KEY])
    .reply("nil when the key does not exist")
    .errors(&["`ERR An LFU maxmemory policy is not selected, access frequency not tracked. ...`"])
    .flags(&[Flag::ReadOnly])
    .keys(Keys::AFTER_SUBCOMMAND),
    command("object|help", Group::Generic, "The subcommands, one per line.", object_help)
        .reply("an array of simple strings"),
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
    expire_in(args, Unit::Seconds, false)
}

/// `PEXPIRE key ms [NX|XX|GT|LT]`, as `EXPIRE` in milliseconds.
pub(super) fn pexpire(args: Args<'_>) -> Result<Action, Frame> {
    expire_in(args, Unit::Millis, false)
}

/// `EXPIREAT key unix-seconds [NX|XX|GT|LT]`, as `EXPIRE` at a time; one already past deletes
/// the key.
pub(super) fn expireat(args: Args<'_>) -> Result<Action, Frame> {
    expire_in(args, Unit::Seconds, true)
}

/// `PEXPIREAT key unix-ms [NX|XX|GT|LT]`.
pub(super) fn pexpireat(args: Args<'_>) -> Result<Action, Frame> {
    expire_in(args, Unit::Millis, true)
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

/// `SETNX key value` → 1 if set, 0 if the key existed: `SET key value NX` answered as an integer.
pub(super) fn setnx(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    let value = args.stored()?;
    args.end()?;
    let set = SetKey { condition: SetCondition::Nx, ..SetKey::new(key, value) };
    write(Command::Set(set), ReplyShape::SetFlag)
}

/// `GETSET key value` → the old value (or nil): `SET key value GET`.
pub(super) fn getset(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    let value = args.stored()?;
    args.end()?;
    write(Command::Set(SetKey { get: true, ..SetKey::new(key, value) }), ReplyShape::Value)
}

/// `GETDEL key` → the value (or nil); the key is deleted.
pub(super) fn getdel(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    args.end()?;
    write(Command::GetDel { key }, ReplyShape::Value)
}

/// `GETEX key [EX s | PX ms | EXAT unix-s | PXAT unix-ms | PERSIST]` → the value (or nil).
///
/// Redis's rules: options first (two different ones are a syntax error, the same one twice
/// takes the last value), then the value, which must be above 0 and fit in ms.
pub(super) fn getex(mut args: Args<'_>) -> Result<Action, Frame> {
    let command = args.command;
    let key = args.name()?;
    let mut chosen: Option<(Vec<u8>, Option<&Bytes>)> = None;
    while let Some(keyword) = args.keyword() {
        let takes_value = matches!(keyword.as_slice(), b"EX" | b"PX" | b"EXAT" | b"PXAT");
        if !takes_value && keyword != b"PERSIST" {
            return Err(syntax_error());
        }
        if chosen.as_ref().is_some_and(|(other, _)| *other != keyword) {
            return Err(syntax_error());
        }
        let value = if takes_value { Some(args.value()?) } else { None };
        chosen = Some((keyword, value));
    }
    let invalid = || Frame::error("ERR", format_args!("invalid expire time in '{command}' command"));
    let expiry = match chosen {
        None => None,
        Some((_, None)) => Some(KeyExpiry::Persist),
        Some((keyword, Some(value))) => {
            let n = int(value)?;
            let ms = match keyword.as_slice() {
                b"EX" | b"EXAT" => n.checked_mul(1000).filter(|_| n > 0),
                _ => Some(n).filter(|&n| n > 0),
            };
            let ms = ms.and_then(|ms| u64::try_from(ms).ok()).ok_or_else(invalid)?;
            Some(if keyword.ends_with(b"AT") { KeyExpiry::At(ms) } else { KeyExpiry::In(ms) })
        }
    };
    write(Command::GetEx { key, expiry }, ReplyShape::Value)
}

/// `MGET key [key ...]` → each value; nil for a missing key or one of another type.
pub(super) fn mget(args: Args<'_>) -> Result<Action, Frame> {
    let keys = args.remaining().iter().map(name).collect::<Result<_, _>>()?;
    read(Query::MGet { keys }, ReplyShape::Redis)
}

/// `MSET key value [key value ...]` → `+OK`.
pub(super) fn mset(args: Args<'_>) -> Result<Action, Frame> {
    let pairs = key_value_pairs(&args)?;
    write(Command::MSet { pairs, nx: false }, ReplyShape::Value)
}

/// `MSETNX key value [key value ...]` → 1 if every key was set, 0 if none was.
pub(super) fn msetnx(args: Args<'_>) -> Result<Action, Frame> {
    let pairs = key_value_pairs(&args)?;
    write(Command::MSet { pairs, nx: true }, ReplyShape::Integer)
}

/// The pairs of `MSET`: a key without its value is Redis's arity error.
fn key_value_pairs(args: &Args<'_>) -> Result<Vec<(String, Bytes)>, Frame> {
    let rest = args.remaining();
    if rest.len() % 2 != 0 {
        return Err(wrong_arity(args.command));
    }
    rest.chunks_exact(2).map(|pair| Ok((name(&pair[0])?, Bytes::copy_from_slice(&pair[1])))).collect()
}

/// `APPEND key value` → the new length.
pub(super) fn append(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    let value = args.stored()?;
    args.end()?;
    write(Command::Append { key, value }, ReplyShape::Integer)
}

/// `STRLEN key` → the value's length, 0 when missing.
pub(super) fn strlen(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    args.end()?;
    read(Query::StrLen { key }, ReplyShape::Integer)
}

/// `INCRBYFLOAT key increment` → the new value. The increment is checked by the core, after
/// the key's type, in Redis's order (WRONGTYPE first).
pub(super) fn incrbyfloat(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    let delta = args.next()?;
    args.end()?;
    // Not UTF-8 is not a number either; the core words the error.
    let delta = String::from_utf8_lossy(delta).into_owned();
    write(Command::IncrByFloat { key, delta }, ReplyShape::Value)
}

/// `TYPE key` → `+string`, `+hash`, `+list` or `+none`.
pub(super) fn key_type(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    args.end()?;
    read(Query::Type { key }, ReplyShape::Redis)
}

/// `RENAME key newkey` → `+OK`.
pub(super) fn rename(args: Args<'_>) -> Result<Action, Frame> {
    renaming(args, false)
}

/// `RENAMENX key newkey` → 1, or 0 when `newkey` exists.
pub(super) fn renamenx(args: Args<'_>) -> Result<Action, Frame> {
    renaming(args, true)
}

fn renaming(mut args: Args<'_>, nx: bool) -> Result<Action, Frame> {
    let from = args.name()?;
    let to = args.name()?;
    args.end()?;
    let shape = if nx { ReplyShape::Integer } else { ReplyShape::Redis };
    write(Command::Rename { from, to, nx }, shape)
}

/// `KEYS pattern` → the matching keys, in key order.
pub(super) fn keys(mut args: Args<'_>) -> Result<Action, Frame> {
    let pattern = args.next()?.clone();
    args.end()?;
    read(Query::Keys { pattern }, ReplyShape::Names)
}

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]` → `[cursor, [key ...]]`.
pub(super) fn scan(mut args: Args<'_>) -> Result<Action, Frame> {
    let cursor = scan_cursor(args.next()?)?;
    let (mut pattern, mut count, mut kind) = (None, 10, None);
    while let Some(keyword) = args.keyword() {
        match keyword.as_slice() {
            b"MATCH" => pattern = Some(args.value()?.clone()),
            b"COUNT" => count = scan_count(args.value()?)?,
            b"TYPE" => kind = Some(String::from_utf8_lossy(args.value()?).into_owned()),
            _ => return Err(syntax_error()),
        }
    }
    read(Query::Scan { cursor, pattern, count, kind }, ReplyShape::Redis)
}

/// A `SCAN`/`HSCAN` cursor: an unsigned 64-bit number (a negative one wraps, as Redis's
/// `strtoull` makes it).
pub(super) fn scan_cursor(arg: &[u8]) -> Result<u64, Frame> {
    let text = std::str::from_utf8(arg).unwrap_or_default();
    text.parse::<u64>()
        .ok()
        .or_else(|| text.parse::<i64>().ok().map(|n| n as u64))
        .ok_or_else(|| Frame::error("ERR", "invalid cursor"))
}

/// `COUNT n`: an integer, at least 1 (Redis answers a smaller one with a syntax error).
pub(super) fn scan_count(arg: &[u8]) -> Result<u64, Frame> {
    u64::try_from(int(arg)?).ok().filter(|&n| n >= 1).ok_or_else(syntax_error)
}

/// `DBSIZE` → the number of keys.
pub(super) fn dbsize(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    read(Query::DbSize, ReplyShape::Integer)
}

/// `FLUSHALL [ASYNC|SYNC]` and `FLUSHDB` → `+OK`; every key goes.
pub(super) fn flushall(mut args: Args<'_>) -> Result<Action, Frame> {
    if let Some(mode) = args.keyword() {
        if mode != b"ASYNC" && mode != b"SYNC" {
            return Err(syntax_error());
        }
    }
    args.end()?;
    write(Command::FlushKeys, ReplyShape::Value)
}

/// `TOUCH key [key ...]` → how many exist (access times are not kept, so nothing changes).
pub(super) fn touch(args: Args<'_>) -> Result<Action, Frame> {
    exists(args)
}

/// `UNLINK key [key ...]` → how many were removed: `DEL` (freeing memory is never deferred).
pub(super) fn unlink(args: Args<'_>) -> Result<Action, Frame> {
    let keys = args.remaining().iter().map(name).collect::<Result<_, _>>()?;
    write(Command::Del { keys, fence: None }, ReplyShape::Integer)
}

fn object_field(mut args: Args<'_>, field: ObjectField) -> Result<Action, Frame> {
    let key = args.name()?;
    args.end()?;
    let shape = if field == ObjectField::Encoding { ReplyShape::Value } else { ReplyShape::Redis };
    read(Query::Object { key, field }, shape)
}

fn object_encoding(args: Args<'_>) -> Result<Action, Frame> {
    object_field(args, ObjectField::Encoding)
}

fn object_refcount(args: Args<'_>) -> Result<Action, Frame> {
    object_field(args, ObjectField::RefCount)
}

fn object_idletime(args: Args<'_>) -> Result<Action, Frame> {
    object_field(args, ObjectField::IdleTime)
}

fn object_freq(args: Args<'_>) -> Result<Action, Frame> {
    object_field(args, ObjectField::Freq)
}

/// `OBJECT HELP` → Redis's help text.
fn object_help(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    Ok(Action::Connection(ConnCmd::Help(&[
        "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "ENCODING <key>",
        "    Return the kind of internal representation used in order to store the value",
        "    associated with a <key>.",
        "FREQ <key>",
        "    Return the access frequency index of the <key>. The returned integer is",
        "    proportional to the logarithm of the recent access frequency of the key.",
        "IDLETIME <key>",
        "    Return the idle time of the <key>, that is the approximated number of",
        "    seconds elapsed since the last access to the key.",
        "REFCOUNT <key>",
        "    Return the number of references of the value associated with the specified",
        "    <key>.",
        "HELP",
        "    Prints this help.",
    ])))
}

/// `PERSIST key` → 1 if a TTL was removed, else 0.
pub(super) fn persist(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    args.end()?;
    write(Command::Persist { key }, ReplyShape::Integer)
}

/// `EXPIRETIME key` → the Unix time in seconds it expires at; -1 without a TTL, -2 missing.
pub(super) fn expiretime(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    args.end()?;
    read(Query::ExpireTime { key }, ReplyShape::UnixSeconds)
}

/// `PEXPIRETIME key` → the same in ms.
pub(super) fn pexpiretime(mut args: Args<'_>) -> Result<Action, Frame> {
    let key = args.name()?;
    args.end()?;
    read(Query::ExpireTime { key }, ReplyShape::Integer)
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
fn expire_in(mut args: Args<'_>, unit: Unit, absolute: bool) -> Result<Action, Frame> {
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
    let cmd = if absolute {
        Command::ExpireAt { key, at: ttl, condition }
    } else {
        Command::Expire { key, ttl, condition }
    };
    write(cmd, ReplyShape::Integer)
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

/// [`ReplyShape::SetFlag`]: `SETNX`'s 1 when set, 0 when the key existed.
pub(super) fn render_set_flag(reply: Reply) -> Frame {
    match reply {
        Reply::Ok => Frame::Integer(1),
        Reply::Nil => Frame::Integer(0),
        other => unexpected(ReplyShape::SetFlag, &other),
    }
}

/// [`ReplyShape::UnixSeconds`]: ms cut to whole seconds, as Redis's `EXPIRETIME` does; -1 and
/// -2 pass unchanged.
pub(super) fn render_unix_seconds(reply: Reply) -> Frame {
    match reply {
        Reply::Int(ms) if ms < 0 => Frame::Integer(ms),
        Reply::Int(ms) => Frame::Integer(ms / 1000),
        other => unexpected(ReplyShape::UnixSeconds, &other),
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

    fn read_of(line: &str) -> (Query, ReplyShape) {
        match parse_line(line) {
            Ok(Action::Read { query, shape }) => (query, shape),
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn setnx_and_getset_are_set_with_options() {
        assert_eq!(
            parse_line("SETNX k v"),
            Ok(Action::Write {
                cmd: Command::Set(SetKey { condition: SetCondition::Nx, ..SetKey::new("k", "v") }),
                shape: ReplyShape::SetFlag
            })
        );
        assert_eq!(set_of("GETSET k v"), SetKey { get: true, ..SetKey::new("k", "v") });
        assert_eq!(error_of("SETNX k"), "ERR wrong number of arguments for 'setnx' command");
        let one = render(ReplyShape::SetFlag, Reply::Ok, Protocol::Resp2);
        let zero = render(ReplyShape::SetFlag, Reply::Nil, Protocol::Resp2);
        assert_eq!((one, zero), (Frame::Integer(1), Frame::Integer(0)));
    }

    #[test]
    fn getex_options() {
        let getex = |line| match write_of(line) {
            Command::GetEx { expiry, .. } => expiry,
            other => panic!("{other:?}"),
        };
        assert_eq!(getex("GETEX k"), None);
        assert_eq!(getex("GETEX k EX 2"), Some(KeyExpiry::In(2_000)));
        assert_eq!(getex("getex k px 5"), Some(KeyExpiry::In(5)));
        assert_eq!(getex("GETEX k EXAT 1700000000"), Some(KeyExpiry::At(1_700_000_000_000)));
        assert_eq!(getex("GETEX k PXAT 1700000000123"), Some(KeyExpiry::At(1_700_000_000_123)));
        assert_eq!(getex("GETEX k PERSIST"), Some(KeyExpiry::Persist));
        assert_eq!(
            getex("GETEX k EX 1 EX 3"),
            Some(KeyExpiry::In(3_000)),
            "the same option twice: the last wins"
        );
        assert_eq!(error_of("GETEX k EX 0"), "ERR invalid expire time in 'getex' command");
        assert_eq!(error_of("GETEX k EXAT -1"), "ERR invalid expire time in 'getex' command");
        assert_eq!(error_of("GETEX k EX 9223372036854776"), "ERR invalid expire time in 'getex' command");
        assert_eq!(error_of("GETEX k EX x"), "ERR value is not an integer or out of range");
        assert_eq!(error_of("GETEX k PERSIST EX 1"), "ERR syntax error");
        assert_eq!(error_of("GETEX k EX 1 PX 1"), "ERR syntax error");
        assert_eq!(error_of("GETEX k EX"), "ERR syntax error");
        assert_eq!(error_of("GETEX k FOO"), "ERR syntax error");
    }

    #[test]
    fn mset_takes_pairs() {
        assert_eq!(
            write_of("MSET a 1 b 2"),
            Command::MSet {
                pairs: vec![("a".into(), Bytes::from("1")), ("b".into(), Bytes::from("2"))],
                nx: false
            }
        );
        assert_eq!(
            write_of("MSETNX a 1"),
            Command::MSet { pairs: vec![("a".into(), Bytes::from("1"))], nx: true }
        );
        assert_eq!(error_of("MSET a"), "ERR wrong number of arguments for 'mset' command");
        assert_eq!(error_of("MSET a 1 b"), "ERR wrong number of arguments for 'mset' command");
        assert_eq!(error_of("MSETNX a 1 b"), "ERR wrong number of arguments for 'msetnx' command");
        assert_eq!(
            read_of("MGET a b"),
            (Query::MGet { keys: vec!["a".into(), "b".into()] }, ReplyShape::Redis)
        );
    }

    #[test]
    fn strings_and_keys_parse_to_their_commands() {
        assert_eq!(write_of("APPEND k v"), Command::Append { key: "k".into(), value: Bytes::from("v") });
        assert_eq!(
            write_of("INCRBYFLOAT k 1.5"),
            Command::IncrByFloat { key: "k".into(), delta: "1.5".into() }
        );
        assert_eq!(write_of("GETDEL k"), Command::GetDel { key: "k".into() });
        assert_eq!(write_of("PERSIST k"), Command::Persist { key: "k".into() });
        assert_eq!(write_of("RENAME a b"), Command::Rename { from: "a".into(), to: "b".into(), nx: false });
        assert_eq!(write_of("RENAMENX a b"), Command::Rename { from: "a".into(), to: "b".into(), nx: true });
        assert_eq!(
            write_of("UNLINK a FENCE"),
            Command::Del { keys: vec!["a".into(), "FENCE".into()], fence: None }
        );
        assert_eq!(write_of("FLUSHALL"), Command::FlushKeys);
        assert_eq!(write_of("flushall async"), Command::FlushKeys);
        assert_eq!(write_of("FLUSHDB SYNC"), Command::FlushKeys);
        assert_eq!(error_of("FLUSHALL foo"), "ERR syntax error");
        assert_eq!(error_of("FLUSHALL SYNC ASYNC"), "ERR syntax error");
        assert_eq!(read_of("STRLEN k").0, Query::StrLen { key: "k".into() });
        assert_eq!(read_of("TYPE k"), (Query::Type { key: "k".into() }, ReplyShape::Redis));
        assert_eq!(read_of("KEYS *").0, Query::Keys { pattern: Bytes::from("*") });
        assert_eq!(read_of("DBSIZE").0, Query::DbSize);
        assert_eq!(read_of("TOUCH a b").0, Query::Exists { keys: vec!["a".into(), "b".into()] });
        assert_eq!(read_of("EXPIRETIME k"), (Query::ExpireTime { key: "k".into() }, ReplyShape::UnixSeconds));
        assert_eq!(read_of("PEXPIRETIME k"), (Query::ExpireTime { key: "k".into() }, ReplyShape::Integer));
        assert_eq!(error_of("RENAME a"), "ERR wrong number of arguments for 'rename' command");
        assert_eq!(error_of("KEYS"), "ERR wrong number of arguments for 'keys' command");
        assert_eq!(error_of("DBSIZE x"), "ERR wrong number of arguments for 'dbsize' command");
    }

    #[test]
    fn expireat_is_absolute() {
        assert_eq!(
            write_of("EXPIREAT k 1700000000 GT"),
            Command::ExpireAt { key: "k".into(), at: 1_700_000_000_000, condition: ExpireCondition::Gt }
        );
        assert_eq!(
            write_of("PEXPIREAT k 5"),
            Command::ExpireAt { key: "k".into(), at: 5, condition: ExpireCondition::Always }
        );
        assert_eq!(error_of("EXPIREAT k 9223372036854776"), "ERR invalid expire time in 'expireat' command");
        assert_eq!(error_of("EXPIREAT k 1 foo"), "ERR Unsupported option foo");
        let seconds = render(ReplyShape::UnixSeconds, Reply::Int(1_700_000_000_999), Protocol::Resp2);
        assert_eq!(seconds, Frame::Integer(1_700_000_000));
        assert_eq!(render(ReplyShape::UnixSeconds, Reply::Int(-2), Protocol::Resp2), Frame::Integer(-2));
    }

    #[test]
    fn scan_options_and_cursor() {
        let scan = |line| match read_of(line).0 {
            Query::Scan { cursor, pattern, count, kind } => (cursor, pattern, count, kind),
            other => panic!("{other:?}"),
        };
        assert_eq!(scan("SCAN 0"), (0, None, 10, None));
        assert_eq!(
            scan("scan 42 match user:* count 100 type hash"),
            (42, Some(Bytes::from("user:*")), 100, Some("hash".into()))
        );
        assert_eq!(scan("SCAN 18446744073709551615").0, u64::MAX);
        assert_eq!(scan("SCAN -1").0, u64::MAX, "wraps as Redis's strtoull does");
        assert_eq!(error_of("SCAN x"), "ERR invalid cursor");
        assert_eq!(error_of("SCAN 18446744073709551616"), "ERR invalid cursor");
        assert_eq!(error_of("SCAN 0 COUNT 0"), "ERR syntax error");
        assert_eq!(error_of("SCAN 0 COUNT x"), "ERR value is not an integer or out of range");
        assert_eq!(error_of("SCAN 0 MATCH"), "ERR syntax error");
        assert_eq!(error_of("SCAN 0 FOO bar"), "ERR syntax error");
    }

    #[test]
    fn object_subcommands() {
        assert_eq!(
            read_of("OBJECT ENCODING k"),
            (Query::Object { key: "k".into(), field: ObjectField::Encoding }, ReplyShape::Value)
        );
        assert_eq!(read_of("object freq k").0, Query::Object { key: "k".into(), field: ObjectField::Freq });
        assert!(
            matches!(parse_line("OBJECT HELP"), Ok(Action::Connection(ConnCmd::Help(lines))) if lines.len() == 15)
        );
        assert_eq!(error_of("OBJECT"), "ERR wrong number of arguments for 'object' command");
        assert_eq!(
            error_of("OBJECT ENCODING"),
            "ERR wrong number of arguments for 'object|encoding' command"
        );
        assert_eq!(error_of("OBJECT FOO k"), "ERR unknown subcommand 'FOO'. Try OBJECT HELP.");
    }
}
