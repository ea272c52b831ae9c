//! Commands: RESP arguments in, a core [`Command`] or [`Query`] out; the core's [`Reply`] back
//! into a [`Frame`]. One file per command group; this module holds the dispatcher.
//!
//! Parsing and rendering are pure: the server decides how to run an [`Action`] (through the log,
//! as a linearizable read, or on the connection itself) and hands the reply back to [`render`].
//!
//! ```text
//!  args ─► parse ─► the command table (name, arity) ─► lock.rs / queue.rs / kv.rs / connection.rs
//!                     │ unknown name, wrong arity        │ options, integers, names
//!                     └──────────► Err(error Frame) ◄────┘ (Redis's texts, ready to send)
//!
//!  Action::Write { cmd, shape } ─► log ─► Reply ─┐
//!  Action::Read { query, shape } ─► query ─► Reply ─┴─► render(shape, reply, protocol) ─► Frame
//!  Action::Connection(ConnCmd) ─► answered by the connection task itself
//! ```
//!
//! Every group file reads in the same order: its entries in the command table (`spec.rs`: name,
//! arguments, reply, errors, flags), the parse function of each command, then the render
//! functions for the shapes the group promises, then its tests. The same entries answer
//! `COMMAND` (`introspect.rs`) and render `docs/commands.md` (`reference.rs`).

mod cluster;
mod connection;
mod hash;
mod introspect;
mod kv;
mod list;
mod lock;
mod queue;
mod reference;
mod script;
mod spec;
mod transaction;
// Pub/sub and client housekeeping:
pub mod pubsub;
mod server;
// Users and ACLs:
mod acl;

pub use acl::{AclCmd, categories_text, category_commands};
pub use connection::{ClientFilter, ClientType, KillCmd, KillFilters, LibAttr};
pub use introspect::reply as command_reply;
pub use pubsub::PubSubCmd;
pub use reference::markdown as reference_markdown;
pub use transaction::TxCmd;

use bytes::Bytes;
use turnstile_core::{Categories, Command, Fence, Perms, Query, Reply, Selector};

use self::spec::Spec;
use crate::wire::parse_int;
use crate::{Frame, Protocol};

/// What the server must do for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A state change, replicated through the log. If the command acts for a session
    /// ([`Command::session_mut`]), the server binds the connection's session before proposing.
    Write { cmd: Command, shape: ReplyShape },
    /// A read of replicated state.
    Read { query: Query, shape: ReplyShape },
    /// Answered by the connection itself, without touching the state machine.
    Connection(ConnCmd),
}

/// Connection-level commands.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnCmd {
    Ping(Option<Bytes>),
    Echo(Bytes),
    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`. `protover` is 2 or 3 when given:
    /// anything else is refused at parse time with Redis's `NOPROTO` error.
    Hello {
        protover: Option<i64>,
        auth: Option<(Bytes, Bytes)>,
        setname: Option<Bytes>,
    },
    /// `AUTH [user] pass`.
    Auth {
        user: Option<Bytes>,
        pass: Bytes,
    },
    Select(i64),
    /// `CLIENT SETNAME name`; the name is checked as Redis checks it (printable, no spaces),
    /// and empty clears it.
    ClientSetName(Bytes),
    ClientGetName,
    ClientId,
    /// `CLIENT SETINFO attr value`: client libraries send their name and version at connect;
    /// CLIENT LIST shows them. An empty value clears it.
    ClientSetInfo {
        attr: LibAttr,
        value: Bytes,
    },
    /// `INFO [section ...]` (lower-cased; empty = default sections).
    Info(Vec<String>),
    /// `COMMAND` and its subcommands, answered from the command table by [`command_reply`].
    Command(CommandQuery),
    /// `CLUSTER.*`: membership and status, run by the leader.
    Cluster(ClusterCmd),
    /// `SESSION INFO`: the connection's session id and secret, opening the session if needed.
    SessionInfo,
    /// `SESSION RESUME id secret`: bind this connection (which has no session yet) to a session
    /// whose connection went away.
    SessionResume {
        id: u64,
        secret: u64,
    },
    Quit,

    // Transactions. Last, with the other features' variants after it.
    /// `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`: the connection keeps the transaction.
    Transaction(TxCmd),
    /// A `HELP` subcommand's lines (`OBJECT HELP`), sent as simple strings.
    Help(&'static [&'static str]),
    // Pub/sub and client housekeeping:
    /// `SUBSCRIBE`, `PUBLISH`, `PUBSUB` ...: see `pubsub.rs`.
    PubSub(PubSubCmd),
    /// `CLIENT INFO`.
    ClientInfo,
    /// `CLIENT LIST [TYPE type | ID id ...]`.
    ClientList(ClientFilter),
    /// `CLIENT KILL ...`.
    ClientKill(KillCmd),
    /// `CLIENT NO-EVICT on|off`, `CLIENT NO-TOUCH on|off`: answered `+OK`, nothing to change.
    ClientAccepted,
    /// `CONFIG GET pattern [pattern ...]`.
    ConfigGet(Vec<Bytes>),
    /// `CONFIG SET parameter value ...`: refused, naming the first parameter.
    ConfigSet(Bytes),
    /// `TIME`.
    Time,
    /// `WAIT numreplicas timeout` (timeout in ms, never negative).
    Wait {
        replicas: i64,
        timeout: u64,
    },
    /// `READONLY` (true) and `READWRITE` (false).
    ReadOnly(bool),
    /// `RESET`.
    Reset,
    // Users and ACLs:
    /// `ACL ...`: see `acl.rs`.
    Acl(AclCmd),
}

/// What `CLUSTER.*` asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterCmd {
    Status,
    Add { id: u64, addr: String },
    Remove { id: u64 },
    TransferLeader { id: u64 },
}

/// What `COMMAND` was asked.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandQuery {
    /// `COMMAND`: every command's info.
    All,
    /// `COMMAND COUNT`.
    Count,
    /// `COMMAND INFO [name ...]`: none named = all.
    Info(Vec<Bytes>),
    /// `COMMAND DOCS [name ...]`: none named = all.
    Docs(Vec<Bytes>),
    /// `COMMAND LIST [FILTERBY ...]`.
    List(Option<ListFilter>),
    /// `COMMAND HELP`.
    Help,
}

/// `COMMAND LIST FILTERBY ...`.
#[derive(Debug, Clone, PartialEq)]
pub enum ListFilter {
    /// Commands a module added: there are none.
    Module(Bytes),
    /// Commands in an ACL category, `@write` or `write`.
    AclCategory(Bytes),
    /// Names matching a glob pattern (`*`, `?`, `[...]`), case-insensitively.
    Pattern(Bytes),
}

/// The form of reply a command promises, so that [`render`] can turn the core's [`Reply`] into
/// exactly that frame. The shape travels with the [`Action`] because the core's replies are
/// shared by every front end: `Reply::Int(ms)` is a `PTTL` as it is but a `TTL` in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyShape {
    /// An integer (`Reply::Int`): counts, 1/0 answers, leases in ms, `PTTL`.
    Integer,
    /// A Redis value: `+OK`, a bulk string, or nil (`$-1`): `GET`, `SET`.
    Value,
    /// `TTL`: the core's milliseconds rounded to seconds as Redis rounds them; -1 and -2 kept.
    TtlSeconds,
    /// `[token, lease-ms]`, or a nil array when the hold was not granted:
    /// `LOCK.ACQUIRE`, `SEM.ACQUIRE`.
    Grant,
    /// The `LOCK.INFO` / `SEM.INFO` map.
    LockInfo,
    /// `Q.PUSH`: the message id (the first message's when a dedup id matched).
    PushedId,
    /// `Q.POP`: `[[id, receipt, payload, deliveries], ...]`, or a nil array when none.
    Deliveries,
    /// The `Q.STATS` map.
    QueueStats,
    /// `Q.PEEK`: `[[id, payload, deliveries, priority, age-ms], ...]`.
    Messages,
    /// `Q.LIST`, `LOCK.LIST`: an array of bulk strings.
    Names,
    /// A reply in Redis's own terms, nested as it comes: `Ok` → `+OK`, `Status` → a simple
    /// string, `Int` → an integer, `Bytes` → a bulk string, `Nil` → nil, `Array` and `Names` →
    /// arrays (an error inside an array stays an error element, as in `EXEC`'s reply).
    Redis,

    // Redis keyspace commands.
    /// `SETNX`: the core's `SET NX` answer as Redis's integer: `Ok` → 1, nil → 0.
    SetFlag,
    /// `+OK` whatever the core counted: `HMSET`, which is `HSET` answering the old way.
    Done,
    /// `HGETALL`: fields and values alternating in an `Array`, as a RESP3 map (a flat array in
    /// RESP2).
    Pairs,
    /// `EXPIRETIME`: the core's ms since the epoch as whole seconds, cut as Redis cuts them; -1
    /// and -2 kept.
    UnixSeconds,
    /// [`ReplyShape::Redis`], but nil is a nil array (`*-1` in RESP2), as Redis answers a
    /// blocking pop that timed out and `LPOP key count` on a missing key.
    RedisNilArray,
}

/// The command table's name for a request's command (`"lock.acquire"`, `"client"`), whatever
/// case it was sent in; `None` for a command that does not exist. For bounded metric labels.
pub fn command_name(args: &[Bytes]) -> Option<&'static str> {
    lookup(args.first()?).map(|spec| spec.name)
}

/// Parses one request (`args[0]` is the command name, in any case) into what the server must do.
///
/// Errors are the frames to send back, with Redis's texts. Nothing has been done when one is
/// returned, so the connection simply answers it and reads the next request.
pub fn parse(args: &[Bytes]) -> Result<Action, Frame> {
    let (spec, skip) = entry(args)?;
    let parse = spec.parse.ok_or_else(|| wrong_arity(spec.name))?;
    let mut parsed = Args::new(spec.name, &args[skip..]);
    parsed.typed = &args[skip - 1];
    parse(parsed)
}

/// A request's command as Redis's "full name" (`get`, `client|list`) once its name and
/// argument count are known to be right; else the error [`parse`] would answer. Redis checks
/// these before anything about the connection's state (a RESP2 subscriber's context), and the
/// arguments themselves after.
pub fn full_name(args: &[Bytes]) -> Result<&'static str, Frame> {
    entry(args).map(|(spec, _)| spec.name)
}

/// Whether a request may be sent before the connection authenticates (`AUTH`, `HELLO`, `QUIT`,
/// `RESET`). A request the table refuses (an unknown command, a wrong arity) counts as one that
/// may: Redis answers those errors before it looks at authentication.
pub fn runs_unauthenticated(args: &[Bytes]) -> bool {
    entry(args).map_or(true, |(spec, _)| spec.has(spec::Flag::NoAuth))
}

/// Whether `perms`'s command rules let the request's command run: `Err` with the command's full
/// name (`get`, `client|kill`) when they do not. A rule names the command by its categories, by
/// its full name, or (for a subcommand) by its container's name; the last rule that names it
/// decides, as [`Perms::allows_command`] does. A request the table refuses passes: the parse
/// answers its error.
pub fn permitted(args: &[Bytes], perms: &Perms) -> Result<(), &'static str> {
    let Ok((spec, _)) = entry(args) else { return Ok(()) };
    if allows(perms, spec) { Ok(()) } else { Err(spec.name) }
}

fn allows(perms: &Perms, spec: &Spec) -> bool {
    let categories = spec.categories();
    let container = spec.name.split_once('|').map(|(container, _)| container);
    perms.commands.iter().rev().find_map(|rule| {
        let named = match &rule.selector {
            Selector::All => true,
            Selector::Category(c) => categories.contains(*c),
            Selector::Command(name) => name == spec.name || container == Some(name.as_str()),
        };
        named.then_some(rule.allow)
    }) == Some(true)
}

/// The ACL categories of a command by its full name (`get`, `client|list`), in any case.
pub fn categories_of(full_name: &str) -> Option<Categories> {
    let (top, sub) = match full_name.split_once('|') {
        Some((top, sub)) => (top, Some(sub)),
        None => (full_name, None),
    };
    let top = lookup(top.as_bytes())?;
    match sub {
        None => Some(top.categories()),
        Some(sub) => top
            .subcommands
            .iter()
            .find(|s| sub.as_bytes().eq_ignore_ascii_case(subcommand(s.name)))
            .map(Spec::categories),
    }
}

/// Whether `+name` / `-name` names a command of the table: a command or a `container|sub`.
pub fn known_command(name: &str) -> bool {
    categories_of(name).is_some()
}

/// The table entry a request names (the subcommand's for a container), checked for arity, and
/// how many words its name took.
fn entry(args: &[Bytes]) -> Result<(&'static Spec, usize), Frame> {
    let Some((name, rest)) = args.split_first() else { return Err(unknown_command(args)) };
    let Some(top) = lookup(name) else { return Err(unknown_command(args)) };
    let (spec, skip) = match rest.first() {
        Some(sub) if !top.subcommands.is_empty() => {
            match top.subcommands.iter().find(|s| sub.eq_ignore_ascii_case(subcommand(s.name))) {
                Some(spec) => (spec, 2),
                None => return Err(unknown_subcommand(sub, top.name)),
            }
        }
        _ => (top, 1),
    };
    if spec.parse.is_none() || !spec.arity.allows(args.len()) {
        return Err(wrong_arity(spec.name));
    }
    Ok((spec, skip))
}

/// Turns the core's reply into the frame `shape` promises.
///
/// `Reply::Error` becomes `-{code} {message}` for every shape (`-DEADLOCK`, `-FENCED`, `-LOST`,
/// `-WRONGTYPE`, `-ERR` ...). A reply that does not fit the shape (`Reply::Waiting`, which the
/// server resolves before rendering, or a core/front-end mismatch) becomes an internal error
/// frame rather than a panic: one bad reply must not take the connection down.
///
/// `protocol` is taken so that a shape may differ by protocol, as some of Redis's do; today none
/// needs to, because [`Frame::encode`] already makes the RESP2 fallbacks (maps flattened, nulls).
pub fn render(shape: ReplyShape, reply: Reply, protocol: Protocol) -> Frame {
    let _ = protocol;
    if let Reply::Error(e) = reply {
        return error_frame(e);
    }
    match shape {
        ReplyShape::Integer => match reply {
            Reply::Int(n) => Frame::Integer(n),
            other => unexpected(shape, &other),
        },
        ReplyShape::Names => match reply {
            Reply::Names(names) => Frame::Array(names.into_iter().map(Frame::bulk).collect()),
            other => unexpected(shape, &other),
        },
        ReplyShape::Value => kv::render_value(reply),
        ReplyShape::TtlSeconds => kv::render_ttl_seconds(reply),
        ReplyShape::Grant => lock::render_grant(reply),
        ReplyShape::LockInfo => lock::render_lock_info(reply),
        ReplyShape::PushedId => queue::render_pushed_id(reply),
        ReplyShape::Deliveries => queue::render_deliveries(reply),
        ReplyShape::QueueStats => queue::render_queue_stats(reply),
        ReplyShape::Messages => queue::render_messages(reply),
        ReplyShape::Redis => render_redis(reply),
        ReplyShape::SetFlag => kv::render_set_flag(reply),
        ReplyShape::Done => Frame::ok(),
        ReplyShape::Pairs => hash::render_pairs(reply),
        ReplyShape::UnixSeconds => kv::render_unix_seconds(reply),
        ReplyShape::RedisNilArray => match reply {
            Reply::Nil => Frame::NullArray,
            other => render_redis(other),
        },
    }
}

/// [`ReplyShape::Redis`].
fn render_redis(reply: Reply) -> Frame {
    match reply {
        Reply::Ok => Frame::ok(),
        Reply::Status(s) => Frame::Simple(s),
        Reply::Int(n) => Frame::Integer(n),
        Reply::Bytes(b) => Frame::Bulk(b),
        Reply::Nil => Frame::Null,
        Reply::Names(names) => Frame::Array(names.into_iter().map(Frame::bulk).collect()),
        Reply::Array(items) => Frame::Array(items.into_iter().map(render_redis).collect()),
        Reply::Error(e) => error_frame(e),
        other => unexpected(ReplyShape::Redis, &other),
    }
}

/// `-{code} {message}`; a script's error carries its code in its text (`redis.error_reply`
/// may give any), so that text is sent whole.
fn error_frame(e: turnstile_core::CoreError) -> Frame {
    match e {
        turnstile_core::CoreError::Script(text) => Frame::Error(text),
        e => Frame::error(e.code(), e),
    }
}

/// The command table: every command, each group's entries in its own file, in the order the
/// docs list them.
const TABLE: [&[Spec]; 12] = [
    lock::COMMANDS,
    queue::COMMANDS,
    kv::COMMANDS,
    hash::COMMANDS,
    list::COMMANDS,
    connection::COMMANDS,
    cluster::COMMANDS,
    transaction::COMMANDS,
    // Pub/sub and client housekeeping:
    pubsub::COMMANDS,
    server::COMMANDS,
    script::COMMANDS,
    // Users and ACLs:
    acl::COMMANDS,
];

/// Every top-level command (subcommands are inside their container's entry).
fn commands() -> impl Iterator<Item = &'static Spec> {
    TABLE.into_iter().flatten()
}

/// The entry of a top-level command, by name in any case.
fn lookup(name: &[u8]) -> Option<&'static Spec> {
    commands().find(|spec| name.eq_ignore_ascii_case(spec.name.as_bytes()))
}

/// `client|setname` → `setname`.
fn subcommand(full_name: &str) -> &[u8] {
    full_name.split_once('|').map_or(full_name, |(_, sub)| sub).as_bytes()
}

/// A cursor over a command's arguments (after its name), which knows the command's name for
/// error texts. Positional arguments use `next`/`name`/...; options are scanned with
/// [`Args::keyword`] and [`Args::value`], and [`Args::end`] refuses anything left over.
#[derive(Debug)]
struct Args<'a> {
    command: &'static str,
    rest: std::slice::Iter<'a, Bytes>,
    /// The (sub)command's name as the client typed it, for the few texts of Redis's that quote
    /// it so (`PUBSUB CHANNELS`'s).
    typed: &'a [u8],
}

impl<'a> Args<'a> {
    fn new(command: &'static str, args: &'a [Bytes]) -> Args<'a> {
        Args { command, rest: args.iter(), typed: &[] }
    }

    /// The next positional argument. Arity checks run first, so a missing one is an arity error.
    fn next(&mut self) -> Result<&'a Bytes, Frame> {
        self.rest.next().ok_or_else(|| wrong_arity(self.command))
    }

    /// The next positional argument as data to keep (a payload, a value): copied out of the read
    /// buffer, which a slice of it would keep allocated for as long as the item is stored (a 4 KiB
    /// buffer held by each of the few payloads read into it).
    fn stored(&mut self) -> Result<Bytes, Frame> {
        Ok(Bytes::copy_from_slice(self.next()?))
    }

    /// The next positional argument as a name (see [`name`]).
    fn name(&mut self) -> Result<String, Frame> {
        name(self.next()?)
    }

    /// The next positional argument as a token, receipt or count (see [`uint`]).
    fn uint(&mut self) -> Result<u64, Frame> {
        uint(self.next()?)
    }

    /// The next positional argument as a duration in ms (see [`millis`]).
    fn millis(&mut self) -> Result<u64, Frame> {
        millis(self.next()?)
    }

    /// The next argument upper-cased, to match against option keywords; `None` at the end.
    fn keyword(&mut self) -> Option<Vec<u8>> {
        self.rest.next().map(|arg| arg.to_ascii_uppercase())
    }

    /// The value of the option just read: a missing one is a syntax error, as in Redis's `SET`.
    fn value(&mut self) -> Result<&'a Bytes, Frame> {
        self.rest.next().ok_or_else(syntax_error)
    }

    /// `FENCE lock token`, the keyword already read.
    fn fence(&mut self) -> Result<Fence, Frame> {
        let lock = name(self.value()?)?;
        let token = uint(self.value()?)?;
        Ok(Fence { lock, token })
    }

    /// What is left, for commands that take a list (`DEL k1 k2 ...`).
    fn remaining(&self) -> &'a [Bytes] {
        self.rest.as_slice()
    }

    /// Refuses trailing arguments: whatever a command did not consume is a syntax error.
    fn end(self) -> Result<(), Frame> {
        if self.rest.as_slice().is_empty() { Ok(()) } else { Err(syntax_error()) }
    }
}

/// A lock, semaphore, queue or key name, or an owner, dedup or group id: the core keeps these as
/// `String`, so they must be UTF-8. Payloads and values stay bytes.
fn name(arg: &Bytes) -> Result<String, Frame> {
    String::from_utf8(arg.to_vec()).map_err(|_| Frame::error("ERR", "invalid name (not UTF-8)"))
}

/// A signed integer, as strictly as Redis's `string2ll`.
fn int(arg: &[u8]) -> Result<i64, Frame> {
    parse_int(arg).ok_or_else(not_integer)
}

/// A fencing token, receipt, id or count: 0 or more. A negative one is "out of range".
fn uint(arg: &[u8]) -> Result<u64, Frame> {
    u64::try_from(int(arg)?).map_err(|_| not_integer())
}

/// A count that the core keeps as `u32` (semaphore limits and permits, pop and peek counts).
fn uint32(arg: &[u8]) -> Result<u32, Frame> {
    u32::try_from(non_negative(arg)?).map_err(|_| not_integer())
}

/// A duration in milliseconds (TTLs, leases, waits, delays). Negative durations get Redis's
/// text for a value that must not be negative; 0 is passed on (the core knows when it means
/// "don't wait" and when it is refused).
fn millis(arg: &[u8]) -> Result<u64, Frame> {
    non_negative(arg)
}

fn non_negative(arg: &[u8]) -> Result<u64, Frame> {
    u64::try_from(int(arg)?).map_err(|_| Frame::error("ERR", "value is out of range, must be positive"))
}

/// Saturating `u64` → RESP integer. Tokens, ids and counts never come near `i64::MAX`.
fn integer(n: u64) -> Frame {
    Frame::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

fn write(cmd: Command, shape: ReplyShape) -> Result<Action, Frame> {
    Ok(Action::Write { cmd, shape })
}

fn read(query: Query, shape: ReplyShape) -> Result<Action, Frame> {
    Ok(Action::Read { query, shape })
}

fn syntax_error() -> Frame {
    Frame::error("ERR", "syntax error")
}

fn not_integer() -> Frame {
    Frame::error("ERR", "value is not an integer or out of range")
}

fn wrong_arity(command: &str) -> Frame {
    Frame::error("ERR", format_args!("wrong number of arguments for '{command}' command"))
}

/// Redis 7's text: the name cut at 128 bytes, then each argument quoted and followed by a space
/// until the list reaches 128 bytes (the argument that crosses the line is cut short).
fn unknown_command(args: &[Bytes]) -> Frame {
    const LIMIT: usize = 128;
    let name = args.first().map_or(&[][..], |n| &n[..n.len().min(LIMIT)]);
    let mut list = Vec::new();
    for arg in args.iter().skip(1) {
        if list.len() >= LIMIT {
            break;
        }
        let room = LIMIT - list.len();
        list.push(b'\'');
        list.extend_from_slice(&arg[..arg.len().min(room)]);
        list.extend_from_slice(b"' ");
    }
    let hint = args.first().and_then(|name| native_hint(name)).unwrap_or_default();
    Frame::error(
        "ERR",
        format_args!(
            "unknown command '{}', with args beginning with: {}{hint}",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(&list)
        ),
    )
}

/// What to use instead of a Redis command that lock and queue recipes are built on but that is
/// not here, appended to Redis's unknown-command text (whose prefix clients match stays as it
/// is): a user who points such a recipe at Turnstile learns the native command that does the job
/// safely, rather than only that something is missing.
fn native_hint(name: &[u8]) -> Option<&'static str> {
    let name = name.to_ascii_uppercase();
    Some(match name.as_slice() {
        b"XADD" => "(streams are not supported: push with Q.PUSH)",
        b"XREADGROUP" | b"XREAD" | b"XCLAIM" | b"XAUTOCLAIM" => {
            "(streams are not supported: take messages with Q.POP; a lease that runs out redelivers)"
        }
        b"XACK" => "(streams are not supported: acknowledge with Q.ACK)",
        b"XPENDING" | b"XLEN" | b"XINFO" => "(streams are not supported: see a queue with Q.STATS or Q.PEEK)",
        b"XGROUP" => "(streams are not supported: create a queue with Q.CREATE)",
        b"ZADD" | b"ZRANGEBYSCORE" | b"ZPOPMIN" | b"BZPOPMIN" | b"ZREM" => {
            "(sorted sets are not supported: for a delay or priority queue use Q.PUSH with DELAY or PRIORITY)"
        }
        _ => return None,
    })
}

/// Redis 7's text for a container command (`CLIENT`) with an unknown subcommand.
fn unknown_subcommand(sub: &[u8], container: &str) -> Frame {
    let sub = &sub[..sub.len().min(128)];
    Frame::error(
        "ERR",
        format_args!(
            "unknown subcommand '{}'. Try {} HELP.",
            String::from_utf8_lossy(sub),
            container.to_ascii_uppercase()
        ),
    )
}

/// A reply that does not fit the promised shape: a bug between the server and the core, sent
/// as an error so that the client sees it and the connection survives.
fn unexpected(shape: ReplyShape, reply: &Reply) -> Frame {
    let kind = match reply {
        Reply::Ok => "Ok",
        Reply::Nil => "Nil",
        Reply::Int(_) => "Int",
        Reply::Bytes(_) => "Bytes",
        Reply::Session(_) => "Session",
        Reply::Granted { .. } => "Granted",
        Reply::Waiting { .. } => "Waiting",
        Reply::Pushed { .. } => "Pushed",
        Reply::Deliveries(_) => "Deliveries",
        Reply::Consumer { .. } => "Consumer",
        Reply::LockInfo(_) => "LockInfo",
        Reply::QueueStats(_) => "QueueStats",
        Reply::Messages(_) => "Messages",
        Reply::Names(_) => "Names",
        Reply::Published { .. } => "Published",
        Reply::QueueConfig(_) => "QueueConfig",
        Reply::Error(_) => "Error",
        Reply::Array(_) => "Array",
        Reply::Status(_) => "Status",
    };
    Frame::error("ERR", format_args!("internal error: a {kind} reply cannot be rendered as {shape:?}"))
}

/// Helpers for the group files' tests.
#[cfg(test)]
pub(crate) mod testing {
    use bytes::{Bytes, BytesMut};

    use super::{Action, ConnCmd, parse};
    use crate::{Frame, Protocol};

    /// Splits a command line on spaces into arguments.
    pub(crate) fn args(line: &str) -> Vec<Bytes> {
        line.split(' ').map(|a| Bytes::copy_from_slice(a.as_bytes())).collect()
    }

    /// Parses a command line written with spaces between arguments.
    pub(crate) fn parse_line(line: &str) -> Result<Action, Frame> {
        parse(&args(line))
    }

    /// The connection command a command line parses to; panics on anything else.
    pub(crate) fn conn(line: &str) -> ConnCmd {
        match parse_line(line) {
            Ok(Action::Connection(cmd)) => cmd,
            other => panic!("{line}: {other:?}"),
        }
    }

    /// The error text a command line is refused with; panics if it parses.
    pub(crate) fn error_of(line: &str) -> String {
        match parse_line(line) {
            Err(Frame::Error(text)) => text,
            other => panic!("{line:?} gave {other:?}, not an error"),
        }
    }

    /// The bytes of a frame in a protocol, escaped for readable assertion failures.
    pub(crate) fn encoded(frame: &Frame, protocol: Protocol) -> String {
        let mut out = BytesMut::new();
        frame.encode(protocol, &mut out);
        out.escape_ascii().to_string()
    }

    /// A byte string escaped the same way, to compare with [`encoded`].
    pub(crate) fn bytes(expected: &[u8]) -> String {
        expected.escape_ascii().to_string()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use turnstile_core::{CoreError, WaitEdge};

    use super::spec::{Arg, ArgKind, Flag};
    use super::testing::{bytes, encoded, error_of, parse_line};
    use super::*;

    #[test]
    fn unknown_command_uses_redis_7_text() {
        assert_eq!(error_of("foo a b"), "ERR unknown command 'foo', with args beginning with: 'a' 'b' ");
        assert_eq!(error_of("foo"), "ERR unknown command 'foo', with args beginning with: ");
        let frame = parse_line("nope x").unwrap_err();
        assert_eq!(
            encoded(&frame, Protocol::Resp2),
            bytes(b"-ERR unknown command 'nope', with args beginning with: 'x' \r\n")
        );
        assert_eq!(
            parse(&[]).unwrap_err(),
            Frame::Error("ERR unknown command '', with args beginning with: ".into())
        );
    }

    #[test]
    fn recipes_that_cannot_work_name_the_native_command_after_redis_text() {
        assert_eq!(
            error_of("XADD s * f v"),
            "ERR unknown command 'XADD', with args beginning with: 's' '*' 'f' 'v' \
             (streams are not supported: push with Q.PUSH)"
        );
        assert!(error_of("xreadgroup GROUP g c").ends_with(
            "(streams are not supported: take messages with Q.POP; a lease that runs out redelivers)"
        ));
        assert!(
            error_of("ZADD z 1 m")
                .starts_with("ERR unknown command 'ZADD', with args beginning with: 'z' '1' 'm' (")
        );
        assert!(error_of("NOSUCH a").ends_with("'a' "), "others keep Redis's text exactly");
    }

    #[test]
    fn full_names_come_after_the_arity_check() {
        let line = |l: &str| testing::args(l);
        assert_eq!(full_name(&line("get k")), Ok("get"));
        assert_eq!(full_name(&line("CLIENT list")), Ok("client|list"));
        assert_eq!(full_name(&line("get")), Err(wrong_arity("get")));
        assert!(full_name(&line("nope")).is_err());
    }

    #[test]
    fn unknown_command_args_are_cut_at_128_bytes() {
        let long = "x".repeat(200);
        let text = error_of(&format!("foo {long} next"));
        // The first argument may take 128 bytes; with its quotes the list is then full.
        let expected = format!("ERR unknown command 'foo', with args beginning with: '{}' ", "x".repeat(128));
        assert_eq!(text, expected);
        let name = "n".repeat(130);
        let text = error_of(&name);
        assert_eq!(text, format!("ERR unknown command '{}', with args beginning with: ", "n".repeat(128)));
        // A second argument gets only the room left: 128 - (1 + 120 + 2) = 5 bytes.
        let text = error_of(&format!("foo {} abcdefgh", "y".repeat(120)));
        assert_eq!(
            text,
            format!("ERR unknown command 'foo', with args beginning with: '{}' 'abcde' ", "y".repeat(120))
        );
    }

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(parse_line("gEt k"), parse_line("GET k"));
        assert_eq!(parse_line("q.LiSt"), parse_line("Q.LIST"));
        assert!(parse_line("Lock.Info l").is_ok());
    }

    #[test]
    fn arity_errors_name_the_command_in_lower_case() {
        assert_eq!(error_of("GET"), "ERR wrong number of arguments for 'get' command");
        assert_eq!(error_of("GET a b"), "ERR wrong number of arguments for 'get' command");
        assert_eq!(error_of("LOCK.ACQUIRE l"), "ERR wrong number of arguments for 'lock.acquire' command");
        assert_eq!(error_of("CLIENT"), "ERR wrong number of arguments for 'client' command");
        assert_eq!(error_of("client setname"), "ERR wrong number of arguments for 'client|setname' command");
    }

    #[test]
    fn unknown_subcommand_suggests_help() {
        assert_eq!(error_of("client foo bar"), "ERR unknown subcommand 'foo'. Try CLIENT HELP.");
    }

    #[test]
    fn non_utf8_names_are_refused() {
        let args = [Bytes::from_static(b"LOCK.INFO"), Bytes::from_static(b"\xff\xfe")];
        assert_eq!(parse(&args).unwrap_err(), Frame::Error("ERR invalid name (not UTF-8)".into()));
    }

    #[test]
    fn integers_are_as_strict_as_redis() {
        assert_eq!(uint(b"12"), Ok(12));
        for bad in [&b"+1"[..], b"01", b" 1", b"1.0", b"", b"-1", b"99999999999999999999"] {
            assert_eq!(uint(bad), Err(not_integer()), "{:?}", bad.escape_ascii().to_string());
        }
        assert_eq!(millis(b"-5"), Err(Frame::Error("ERR value is out of range, must be positive".into())));
        assert_eq!(uint32(b"4294967296"), Err(not_integer()));
        assert_eq!(uint32(b"4294967295"), Ok(u32::MAX));
    }

    #[test]
    fn core_errors_render_with_their_code() {
        let deadlock = CoreError::Deadlock {
            cycle: vec![
                WaitEdge { owner: "a".into(), name: "l2".into(), blocked_by: "b".into() },
                WaitEdge { owner: "b".into(), name: "l1".into(), blocked_by: "a".into() },
            ],
        };
        let frame = render(ReplyShape::Grant, Reply::Error(deadlock), Protocol::Resp2);
        assert_eq!(
            encoded(&frame, Protocol::Resp2),
            bytes(b"-DEADLOCK waiting would deadlock: a waits for 'l2' held by b -> b waits for 'l1' held by a\r\n")
        );
        let fenced = CoreError::Fenced { lock: "l".into(), token: 7 };
        assert_eq!(
            render(ReplyShape::Value, Reply::Error(fenced), Protocol::Resp3),
            Frame::Error("FENCED token 7 is not a live hold of lock 'l'".into())
        );
        assert_eq!(
            render(ReplyShape::Integer, Reply::Error(CoreError::LostHold { token: 3 }), Protocol::Resp2),
            Frame::Error("LOST hold 3 is no longer held".into())
        );
        assert_eq!(
            render(ReplyShape::Integer, Reply::Error(CoreError::NotInteger), Protocol::Resp2),
            Frame::Error("ERR value is not an integer or out of range".into())
        );
    }

    #[test]
    fn a_reply_that_does_not_fit_is_an_internal_error() {
        let frame = render(ReplyShape::Grant, Reply::Waiting { wait_id: 9 }, Protocol::Resp2);
        assert_eq!(
            frame,
            Frame::Error("ERR internal error: a Waiting reply cannot be rendered as Grant".into())
        );
        let frame = render(ReplyShape::Integer, Reply::Ok, Protocol::Resp2);
        assert_eq!(
            frame,
            Frame::Error("ERR internal error: a Ok reply cannot be rendered as Integer".into())
        );
    }

    #[test]
    fn names_render_as_bulk_strings() {
        let frame = render(ReplyShape::Names, Reply::Names(vec!["a".into(), "bc".into()]), Protocol::Resp3);
        assert_eq!(encoded(&frame, Protocol::Resp3), bytes(b"*2\r\n$1\r\na\r\n$2\r\nbc\r\n"));
        let frame = render(ReplyShape::Names, Reply::Names(vec![]), Protocol::Resp2);
        assert_eq!(encoded(&frame, Protocol::Resp2), bytes(b"*0\r\n"));
    }

    /// Every spec with a parse function: top-level commands and subcommands.
    fn parsable() -> Vec<&'static Spec> {
        commands()
            .flat_map(|spec| std::iter::once(spec).chain(spec.subcommands))
            .filter(|spec| spec.parse.is_some())
            .collect()
    }

    /// The words an argument takes: its keyword, then a sample value (or the first alternative,
    /// or `choice`'s). `full` takes every optional part of a block and repeats what may repeat.
    fn words(arg: &Arg, full: bool, choice: usize) -> Vec<String> {
        let mut out: Vec<String> = match (arg.kind, arg.token) {
            (ArgKind::PureToken, _) | (_, None) => vec![],
            (_, Some(token)) => vec![token.to_owned()],
        };
        let body = match arg.kind {
            ArgKind::Key => vec!["k".to_owned()],
            ArgKind::String => vec!["v".to_owned()],
            // A key count must not count more arguments than the form has.
            ArgKind::Integer if arg.name == "numkeys" => vec!["0".to_owned()],
            ArgKind::Integer => vec!["2".to_owned()],
            ArgKind::Double => vec!["2.5".to_owned()],
            ArgKind::PureToken => vec![arg.token.unwrap_or(arg.name).to_owned()],
            ArgKind::OneOf(alternatives) => words(&alternatives[choice.min(alternatives.len() - 1)], full, 0),
            ArgKind::Block(parts) => {
                parts.iter().filter(|p| full || !p.optional).flat_map(|p| words(p, full, 0)).collect()
            }
        };
        out.extend(body.iter().cloned());
        if full && arg.multiple {
            out.extend(body);
        }
        out
    }

    fn request(spec: &Spec, include: impl Fn(usize, &Arg) -> Option<Vec<String>>) -> Vec<Bytes> {
        let mut line: Vec<String> = spec.name.split('|').map(str::to_ascii_uppercase).collect();
        for (i, arg) in spec.args.iter().enumerate() {
            line.extend(include(i, arg).unwrap_or_default());
        }
        line.into_iter().map(Bytes::from).collect()
    }

    fn parsed(spec: &Spec, request: &[Bytes]) -> Action {
        parse(request).unwrap_or_else(|e| panic!("{}: {request:?} documented but refused: {e:?}", spec.name))
    }

    #[test]
    fn every_documented_form_parses() {
        // Built from each entry's documented arguments, so an argument the docs list but the
        // parser refuses (or a parse function wired to the wrong entry) fails here.
        for spec in parsable() {
            let minimal = request(spec, |_, arg| (!arg.optional).then(|| words(arg, false, 0)));
            parsed(spec, &minimal);
            for (index, option) in spec.args.iter().enumerate().filter(|(_, arg)| arg.optional) {
                let choices = match option.kind {
                    ArgKind::OneOf(alternatives) => alternatives.len(),
                    _ => 1,
                };
                for choice in 0..choices {
                    let with_one = request(spec, |i, arg| {
                        (i == index || !arg.optional).then(|| words(arg, false, choice))
                    });
                    parsed(spec, &with_one);
                }
            }
            parsed(spec, &request(spec, |_, arg| Some(words(arg, true, 0))));
        }
    }

    #[test]
    fn flags_say_where_a_command_goes() {
        for spec in parsable() {
            let minimal = request(spec, |_, arg| (!arg.optional).then(|| words(arg, false, 0)));
            let expected = match parsed(spec, &minimal) {
                Action::Write { .. } => Some(Flag::Write),
                Action::Read { .. } => Some(Flag::ReadOnly),
                Action::Connection(_) => None,
            };
            let declared = spec.flags.iter().copied().find(|f| matches!(f, Flag::Write | Flag::ReadOnly));
            assert_eq!(declared, expected, "{}", spec.name);
        }
    }

    #[test]
    fn the_table_has_one_entry_per_name() {
        let mut names: Vec<&str> = parsable().iter().map(|spec| spec.name).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "a name appears twice");
        assert!(names.len() > 40, "{names:?}");
        for spec in commands() {
            assert_eq!(spec.name, spec.name.to_ascii_lowercase());
            assert!(!spec.summary.is_empty(), "{} has no summary", spec.name);
            for sub in spec.subcommands {
                assert!(sub.name.starts_with(&format!("{}|", spec.name)), "{}", sub.name);
            }
        }
    }
}
