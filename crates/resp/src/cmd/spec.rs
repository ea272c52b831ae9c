//! The command table's entries: what each command is called, takes, answers and refuses.
//!
//! One [`Spec`] per command (and per subcommand, `client|setname`). It is the single source that
//!
//! ```text
//!            ┌─► cmd::parse      name lookup, arity check, then the group file's parse function
//!   Spec ────┼─► COMMAND ...     COUNT, LIST, INFO (flags, arity, keys), DOCS (summary, arguments)
//!            └─► docs/commands.md   rendered by `reference.rs`; a test keeps the file equal to it
//! ```
//!
//! The arity is not written by hand: it is counted from the documented arguments when the table
//! is built (at compile time), so the parser cannot check a different form than the one the docs
//! describe. The group files (`lock.rs`, `queue.rs`, `kv.rs`, `connection.rs`) each hold the
//! entries of their commands, next to the parse functions the entries point to.

use turnstile_core::{Categories, Category};

use super::{Action, Args};
use crate::Frame;

/// Gets the arguments after the command name (after the subcommand for subcommands).
pub(super) type ParseFn = fn(Args<'_>) -> Result<Action, Frame>;

/// One command the dispatcher knows.
#[derive(Debug)]
pub(super) struct Spec {
    /// Redis's "full name": lower case, `container|sub` for subcommands. Error texts quote it.
    pub(super) name: &'static str,
    pub(super) group: Group,
    /// One or two sentences: what the command does (COMMAND DOCS `summary`).
    pub(super) summary: &'static str,
    /// The arguments after the name, in order (COMMAND DOCS `arguments`).
    pub(super) args: &'static [Arg],
    /// What a successful reply is, in words (the docs only; RESP has no field for it).
    pub(super) reply: &'static str,
    /// The errors this command can answer besides the ones every command shares (arity, syntax,
    /// integers, names), each starting with its code.
    pub(super) errors: &'static [&'static str],
    pub(super) flags: &'static [Flag],
    /// Where the names of the things it acts on (keys, locks, queues) are, as COMMAND INFO says.
    pub(super) keys: Keys,
    /// Counted from `args` by [`Spec::args`]; a container needs at least its subcommand.
    pub(super) arity: Arity,
    /// `None` for a container that does nothing without a subcommand (`CLIENT`).
    pub(super) parse: Option<ParseFn>,
    /// ACL categories besides the ones its flags and group file it under (see
    /// [`Spec::categories`]): `@dangerous` for `KEYS`, `@lock` for a lock command.
    pub(super) acl: &'static [Category],
    /// `acl` is the whole list (Redis's own, where its flags would imply another).
    pub(super) acl_only: bool,
    pub(super) subcommands: &'static [Spec],
}

/// How many arguments a command takes, counting its name (and a container's name), as Redis
/// counts them: its `arity` 3 is `Exactly(3)`, its -3 is `AtLeast(3)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Arity {
    Exactly(usize),
    AtLeast(usize),
}

impl Arity {
    /// Redis's number: positive for a fixed count, negative for a minimum.
    pub(super) fn redis(self) -> i64 {
        match self {
            Arity::Exactly(n) => i64::try_from(n).unwrap_or(i64::MAX),
            Arity::AtLeast(n) => -i64::try_from(n).unwrap_or(i64::MAX),
        }
    }

    pub(super) fn allows(self, count: usize) -> bool {
        match self {
            Arity::Exactly(n) => count == n,
            Arity::AtLeast(n) => count >= n,
        }
    }
}

/// The command groups: Redis's names where Redis has the group, ours for the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Group {
    Lock,
    Semaphore,
    Queue,
    /// Redis's `string`: values by key.
    String,
    /// Redis's `generic`: commands on keys of any type.
    Generic,
    /// Redis's `hash`: fields and values under one key.
    Hash,
    /// Redis's `list`.
    List,
    /// Redis's `scripting`: Lua scripts and their cache.
    Scripting,
    Connection,
    Server,
    /// Redis's `transactions`: MULTI, EXEC, WATCH.
    Transactions,
    // Pub/sub:
    /// Redis's `pubsub`: channels, patterns, publishing.
    PubSub,
}

impl Group {
    /// Every group, in the order the docs list them.
    pub(super) const ALL: [Group; 12] = [
        Group::Lock,
        Group::Semaphore,
        Group::Queue,
        Group::String,
        Group::Generic,
        Group::Hash,
        Group::List,
        Group::Scripting,
        Group::Connection,
        Group::Server,
        Group::Transactions,
        // Pub/sub:
        Group::PubSub,
    ];

    /// The name COMMAND DOCS gives (`group`).
    pub(super) fn name(self) -> &'static str {
        match self {
            Group::Lock => "lock",
            Group::Semaphore => "semaphore",
            Group::Queue => "queue",
            Group::String => "string",
            Group::Generic => "generic",
            Group::Hash => "hash",
            Group::List => "list",
            Group::Scripting => "scripting",
            Group::Connection => "connection",
            Group::Server => "server",
            Group::Transactions => "transactions",
            Group::PubSub => "pubsub",
        }
    }

    /// The heading in the docs.
    pub(super) fn title(self) -> &'static str {
        match self {
            Group::Lock => "Locks and fencing",
            Group::Semaphore => "Semaphores",
            Group::Queue => "Queues",
            Group::String => "Strings",
            Group::Generic => "Keys",
            Group::Hash => "Hashes",
            Group::List => "Lists",
            Group::Scripting => "Scripts",
            Group::Connection => "Connection",
            Group::Server => "Server",
            Group::Transactions => "Transactions",
            Group::PubSub => "Pub/sub",
        }
    }

    /// The ACL categories every command of the group is in: Redis's for its groups, with `@kv`
    /// on the key groups; `@lock` and `@queue` for ours.
    pub(super) fn categories(self) -> &'static [Category] {
        match self {
            Group::String => &[Category::String, Category::Kv],
            Group::Generic => &[Category::Keyspace, Category::Kv],
            Group::Hash => &[Category::Hash, Category::Kv],
            Group::List => &[Category::List, Category::Kv],
            Group::Scripting => &[Category::Scripting],
            Group::Connection => &[Category::Connection],
            Group::Transactions => &[Category::Transaction],
            Group::PubSub => &[Category::PubSub],
            Group::Lock | Group::Semaphore => &[Category::Lock],
            Group::Queue => &[Category::Queue],
            Group::Server => &[],
        }
    }
}

/// COMMAND INFO's command flags, with Redis's meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flag {
    /// Changes replicated state: it goes through the log.
    Write,
    /// Reads replicated state only.
    ReadOnly,
    /// Refused with `-OOM` while stored payloads are past `max-memory`.
    DenyOom,
    /// May park the connection until a wait ends (`WAIT ms`).
    Blocking,
    /// Constant time, no blocking.
    Fast,
    /// Allowed before a client authenticates.
    NoAuth,
    /// Drastic for the whole server (`FLUSHALL`): ACL categories `@admin` and `@dangerous`, so
    /// that a deployment's ACL can keep it from applications.
    Admin,
    // Pub/sub:
    /// Redis's `pubsub`: a pub/sub command.
    PubSub,
    /// Refused inside a script, as Redis refuses it (a script cannot subscribe).
    NoScript,
}

impl Flag {
    pub(super) fn name(self) -> &'static str {
        match self {
            Flag::Write => "write",
            Flag::ReadOnly => "readonly",
            Flag::DenyOom => "denyoom",
            Flag::Blocking => "blocking",
            Flag::Fast => "fast",
            Flag::NoAuth => "no_auth",
            Flag::Admin => "admin",
            Flag::PubSub => "pubsub",
            Flag::NoScript => "noscript",
        }
    }
}

/// COMMAND INFO's legacy key positions: `first`, `last` (negative counts from the end) and
/// `step`, all 0 for a command without keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Keys {
    pub(super) first: i64,
    pub(super) last: i64,
    pub(super) step: i64,
}

impl Keys {
    pub(super) const NONE: Keys = Keys { first: 0, last: 0, step: 0 };
    /// The first argument names the one thing the command acts on.
    pub(super) const FIRST: Keys = Keys { first: 1, last: 1, step: 1 };
    /// Every argument is a key.
    pub(super) const ALL: Keys = Keys { first: 1, last: -1, step: 1 };
    /// Keys and values alternate (`MSET k v k v`).
    pub(super) const PAIRS: Keys = Keys { first: 1, last: -1, step: 2 };
    /// The argument after a subcommand's name (`OBJECT ENCODING key`).
    pub(super) const AFTER_SUBCOMMAND: Keys = Keys { first: 2, last: 2, step: 1 };
}

/// One documented argument, as COMMAND DOCS describes arguments.
#[derive(Debug, Clone, Copy)]
pub(super) struct Arg {
    /// Lower case with hyphens (`ttl-ms`); for a pure token, the token itself.
    pub(super) name: &'static str,
    pub(super) kind: ArgKind,
    /// The keyword before the value (`WAIT` in `WAIT ms`).
    pub(super) token: Option<&'static str>,
    pub(super) optional: bool,
    /// May be repeated (`key [key ...]`).
    pub(super) multiple: bool,
    pub(super) summary: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum ArgKind {
    /// A key, lock, semaphore or queue name: what COMMAND INFO's key positions point at.
    Key,
    String,
    Integer,
    /// A decimal number, exponent allowed (`INCRBYFLOAT`'s increment).
    Double,
    /// A keyword alone (`KEEP`, `NX`).
    PureToken,
    /// Exactly one of these.
    OneOf(&'static [Arg]),
    /// These together, in order.
    Block(&'static [Arg]),
}

impl ArgKind {
    /// COMMAND DOCS's `type`.
    pub(super) fn name(self) -> &'static str {
        match self {
            ArgKind::Key => "key",
            ArgKind::String => "string",
            ArgKind::Integer => "integer",
            ArgKind::Double => "double",
            ArgKind::PureToken => "pure-token",
            ArgKind::OneOf(_) => "oneof",
            ArgKind::Block(_) => "block",
        }
    }
}

const fn arg(name: &'static str, kind: ArgKind, summary: &'static str) -> Arg {
    Arg { name, kind, token: None, optional: false, multiple: false, summary }
}

/// A key, lock, semaphore or queue name.
pub(super) const fn key(name: &'static str, summary: &'static str) -> Arg {
    arg(name, ArgKind::Key, summary)
}

/// Bytes: a payload, a value, an owner id.
pub(super) const fn string(name: &'static str, summary: &'static str) -> Arg {
    arg(name, ArgKind::String, summary)
}

/// An integer, as strictly as Redis reads one.
pub(super) const fn integer(name: &'static str, summary: &'static str) -> Arg {
    arg(name, ArgKind::Integer, summary)
}

/// A decimal number, as Redis's `INCRBYFLOAT` reads one.
pub(super) const fn double(name: &'static str, summary: &'static str) -> Arg {
    arg(name, ArgKind::Double, summary)
}

/// A keyword alone, optional: `KEEP`, `SHARED`.
pub(super) const fn flag(token: &'static str, summary: &'static str) -> Arg {
    arg(token, ArgKind::PureToken, summary).token(token).optional()
}

/// A keyword alone that is one alternative of a [`one_of`].
pub(super) const fn word(token: &'static str, summary: &'static str) -> Arg {
    arg(token, ArgKind::PureToken, summary).token(token)
}

/// `KEYWORD value`, optional: `WAIT ms`.
pub(super) const fn option(token: &'static str, value: Arg) -> Arg {
    value.token(token).optional()
}

pub(super) const fn one_of(name: &'static str, alternatives: &'static [Arg], summary: &'static str) -> Arg {
    arg(name, ArgKind::OneOf(alternatives), summary)
}

pub(super) const fn block(name: &'static str, parts: &'static [Arg], summary: &'static str) -> Arg {
    arg(name, ArgKind::Block(parts), summary)
}

impl Arg {
    pub(super) const fn token(self, token: &'static str) -> Arg {
        Arg { token: Some(token), ..self }
    }

    pub(super) const fn optional(self) -> Arg {
        Arg { optional: true, ..self }
    }

    pub(super) const fn multiple(self) -> Arg {
        Arg { multiple: true, ..self }
    }

    /// How this argument reads in a syntax line: `[WAIT ms]`, `key [key ...]`, `[NX | XX]`.
    pub(super) fn syntax(&self) -> String {
        let inner = match self.kind {
            ArgKind::PureToken => self.token.unwrap_or(self.name).to_owned(),
            ArgKind::OneOf(alternatives) => {
                alternatives.iter().map(Arg::syntax).collect::<Vec<_>>().join(" | ")
            }
            ArgKind::Block(parts) => parts.iter().map(Arg::syntax).collect::<Vec<_>>().join(" "),
            ArgKind::Key | ArgKind::String | ArgKind::Integer | ArgKind::Double => self.name.to_owned(),
        };
        let one = match (self.kind, self.token) {
            (ArgKind::PureToken, _) | (_, None) => inner,
            (_, Some(token)) => format!("{token} {inner}"),
        };
        let one = match self.kind {
            ArgKind::OneOf(_) if !self.optional && self.token.is_none() => format!("<{one}>"),
            _ => one,
        };
        let many = if self.multiple { format!("{one} [{one} ...]") } else { one };
        if self.optional { format!("[{many}]") } else { many }
    }
}

/// A command with its own parse function; the rest comes from the builder methods.
pub(super) const fn command(name: &'static str, group: Group, summary: &'static str, parse: ParseFn) -> Spec {
    Spec { parse: Some(parse), ..blank(name, group, summary) }
}

/// A command that is only a name for its subcommands (`CLIENT`): without one it is an arity error.
pub(super) const fn container(
    name: &'static str,
    group: Group,
    summary: &'static str,
    subcommands: &'static [Spec],
) -> Spec {
    Spec { arity: Arity::AtLeast(2), subcommands, ..blank(name, group, summary) }
}

/// An entry with nothing but its name, group and summary yet.
const fn blank(name: &'static str, group: Group, summary: &'static str) -> Spec {
    Spec {
        name,
        group,
        summary,
        args: &[],
        reply: "",
        errors: &[],
        flags: &[],
        keys: Keys::NONE,
        arity: Arity::Exactly(depth(name)),
        parse: None,
        subcommands: &[],
        acl: &[],
        acl_only: false,
    }
}

/// `FENCE lock token` at the end of a write (`SET`, `DEL`, `Q.PUSH`, `Q.ACK`): a Turnstile
/// extension that makes the write apply only while the token is a live hold of the lock.
pub(super) const FENCE: Arg = block(
    "fence",
    &[key("lock", "a lock's name"), integer("token", "a fencing token of that lock")],
    "apply only while `token` is a live hold of `lock`",
)
.token("FENCE")
.optional();

/// The error of a write whose [`FENCE`] did not match.
pub(super) const FENCED: &str =
    "`FENCED token N is not a live hold of lock 'l'`: the fence did not match; nothing changed";

impl Spec {
    /// Sets the arguments, and the arity counted from them.
    pub(super) const fn args(self, args: &'static [Arg]) -> Spec {
        let (count, variable) = width_of_all(args);
        let count = depth(self.name) + count;
        let arity = if variable || !self.subcommands.is_empty() {
            Arity::AtLeast(count)
        } else {
            Arity::Exactly(count)
        };
        Spec { args, arity, ..self }
    }

    pub(super) const fn reply(self, reply: &'static str) -> Spec {
        Spec { reply, ..self }
    }

    pub(super) const fn errors(self, errors: &'static [&'static str]) -> Spec {
        Spec { errors, ..self }
    }

    pub(super) const fn flags(self, flags: &'static [Flag]) -> Spec {
        Spec { flags, ..self }
    }

    pub(super) const fn keys(self, keys: Keys) -> Spec {
        Spec { keys, ..self }
    }

    /// Subcommands for a command that also works alone (`COMMAND`, `COMMAND COUNT`). Call
    /// before [`Spec::args`]: a command with subcommands takes a variable number of arguments.
    pub(super) const fn subcommands(self, subcommands: &'static [Spec]) -> Spec {
        let arity = match self.arity {
            Arity::Exactly(n) | Arity::AtLeast(n) => Arity::AtLeast(n),
        };
        Spec { subcommands, arity, ..self }
    }

    /// Categories besides those the flags and the group imply.
    pub(super) const fn acl(self, acl: &'static [Category]) -> Spec {
        Spec { acl, ..self }
    }

    /// The categories, all of them: Redis's list where its flags would imply another
    /// (`EVAL` writes, yet is only `@scripting @slow`).
    pub(super) const fn acl_only(self, acl: &'static [Category]) -> Spec {
        Spec { acl, acl_only: true, ..self }
    }

    /// The ACL categories the command is filed under: Redis's for Redis's commands (its flags
    /// imply `@write`, `@read`, `@fast` or `@slow`, `@blocking`, `@admin` `@dangerous`; its group
    /// `@string`, `@keyspace` ...), with `@kv` on every key command and `@lock` / `@queue` on
    /// ours. What `+@…` / `-@…` rules match, and what `COMMAND INFO` and `ACL CAT` show.
    pub(super) fn categories(&self) -> Categories {
        let mut cats = Categories::NONE;
        if self.acl_only {
            return Categories::of(self.acl);
        }
        if self.parse.is_none() {
            // A container alone runs nothing: Redis files it under `@slow` only.
            return cats.with(Category::Slow);
        }
        if self.has(Flag::Write) {
            cats = cats.with(Category::Write);
        }
        if self.has(Flag::ReadOnly) {
            cats = cats.with(Category::Read);
        }
        cats = cats.with(if self.has(Flag::Fast) { Category::Fast } else { Category::Slow });
        if self.has(Flag::Blocking) {
            cats = cats.with(Category::Blocking);
        }
        if self.has(Flag::Admin) {
            cats = cats.with(Category::Admin).with(Category::Dangerous);
        }
        for c in self.group.categories() {
            cats = cats.with(*c);
        }
        for c in self.acl {
            cats = cats.with(*c);
        }
        cats
    }

    pub(super) fn has(&self, flag: Flag) -> bool {
        self.flags.contains(&flag)
    }

    /// The command as typed, in upper case: `LOCK.ACQUIRE`, `CLIENT SETNAME`.
    pub(super) fn display_name(&self) -> String {
        self.name.replace('|', " ").to_ascii_uppercase()
    }

    /// The syntax line: `LOCK.ACQUIRE name ttl-ms [WAIT ms] ...`.
    pub(super) fn syntax(&self) -> String {
        let mut line = self.display_name();
        for arg in self.args {
            line.push(' ');
            line.push_str(&arg.syntax());
        }
        line
    }
}

/// The words that name the command: 1, or 2 for a subcommand (`client|setname`).
const fn depth(name: &str) -> usize {
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'|' {
            return 2;
        }
        i += 1;
    }
    1
}

/// How many words the required arguments take at least, and whether more may come.
const fn width_of_all(args: &[Arg]) -> (usize, bool) {
    let (mut count, mut variable) = (0, false);
    let mut i = 0;
    while i < args.len() {
        let (width, varies) = width(&args[i]);
        if !args[i].optional {
            count += width;
        }
        variable |= varies || args[i].optional || args[i].multiple;
        i += 1;
    }
    (count, variable)
}

/// How many words one argument takes at least, and whether it may take more.
const fn width(arg: &Arg) -> (usize, bool) {
    let keyword = match (arg.kind, arg.token) {
        (ArgKind::PureToken, _) | (_, None) => 0,
        (_, Some(_)) => 1,
    };
    let (words, varies) = match arg.kind {
        ArgKind::Key | ArgKind::String | ArgKind::Integer | ArgKind::Double | ArgKind::PureToken => {
            (1, false)
        }
        ArgKind::Block(parts) => width_of_all(parts),
        ArgKind::OneOf(alternatives) => {
            let (mut least, mut most, mut varies) = (usize::MAX, 0, false);
            let mut i = 0;
            while i < alternatives.len() {
                let (w, v) = width(&alternatives[i]);
                if w < least {
                    least = w;
                }
                if w > most {
                    most = w;
                }
                varies |= v || alternatives[i].optional || alternatives[i].multiple;
                i += 1;
            }
            if alternatives.is_empty() { (0, false) } else { (least, varies || least != most) }
        }
    };
    (keyword + words, varies)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_nothing(_: Args<'_>) -> Result<Action, Frame> {
        Err(Frame::Null)
    }

    // Consts, as in the real table: only in a const are the argument slices 'static.
    const PLAIN: Spec =
        command("x.get", Group::Lock, "", parse_nothing).args(&[key("name", ""), integer("n", "")]);
    const OPTIONS: Spec = command("x.take", Group::Lock, "", parse_nothing).args(&[
        key("name", ""),
        option("WAIT", integer("ms", "")),
        flag("KEEP", ""),
    ]);
    const MANY: Spec = command("x.del", Group::Lock, "", parse_nothing).args(&[key("key", "").multiple()]);
    const SUB: Spec = command("x|set", Group::Lock, "", parse_nothing).args(&[one_of(
        "attr",
        &[string("libname", "").token("LIB-NAME"), string("libver", "").token("LIB-VER")],
        "",
    )]);
    const UNEVEN: Spec = command("x.y", Group::Lock, "", parse_nothing).args(&[one_of(
        "z",
        &[word("A", ""), string("b", "").token("B")],
        "",
    )]);
    const BARE: Spec = command("x", Group::Server, "", parse_nothing)
        .subcommands(&[command("x|count", Group::Server, "", parse_nothing)])
        .args(&[]);
    const SET: Spec = command("set", Group::String, "", parse_nothing).args(&[
        key("key", ""),
        string("value", ""),
        one_of("condition", &[word("NX", ""), word("XX", "")], "").optional(),
        option("EX", integer("seconds", "")),
        block("fence", &[key("lock", ""), integer("token", "")], "").token("FENCE").optional(),
    ]);
    const SECTIONS: Spec = command("info", Group::Server, "", parse_nothing)
        .args(&[string("section", "").multiple().optional()]);

    #[test]
    fn arity_is_counted_from_the_arguments() {
        assert_eq!(PLAIN.arity, Arity::Exactly(3));
        assert_eq!(OPTIONS.arity, Arity::AtLeast(2));
        assert_eq!(MANY.arity, Arity::AtLeast(2));
        assert_eq!(SUB.arity, Arity::Exactly(4), "the container's name, the subcommand, KEYWORD value");
        assert_eq!(UNEVEN.arity, Arity::AtLeast(2));
        assert_eq!(BARE.arity, Arity::AtLeast(1));
        assert_eq!(SET.arity, Arity::AtLeast(3));
        assert_eq!(container("c", Group::Connection, "", &[]).arity, Arity::AtLeast(2));
        assert_eq!(Arity::AtLeast(3).redis(), -3);
        assert_eq!(Arity::Exactly(2).redis(), 2);
        assert!(Arity::AtLeast(2).allows(5) && !Arity::Exactly(2).allows(3));
    }

    #[test]
    fn syntax_reads_like_redis_docs() {
        assert_eq!(SET.syntax(), "SET key value [NX | XX] [EX seconds] [FENCE lock token]");
        assert_eq!(MANY.syntax(), "X.DEL key [key ...]");
        assert_eq!(SUB.syntax(), "X SET <LIB-NAME libname | LIB-VER libver>");
        assert_eq!(SECTIONS.syntax(), "INFO [section [section ...]]");
        assert_eq!(OPTIONS.syntax(), "X.TAKE name [WAIT ms] [KEEP]");
    }
}
