//! Connection commands: `PING ECHO HELLO AUTH SELECT CLIENT SESSION INFO COMMAND QUIT`.
//!
//! `CLIENT LIST`, `CLIENT INFO` and `CLIENT KILL` reach the node's registry of RESP connections
//! (every connection there, not just this one); the rest concern the caller alone.
//!
//! These never touch the state machine: they become [`ConnCmd`]s that the connection task answers
//! itself (it knows the protocol version, the client's name and id, the server's info). Parsing
//! still checks them as Redis does, so a client library's handshake gets the replies it expects.

use bytes::Bytes;

use super::spec::{Arg, Flag, Group, Spec, block, command as cmd, container, integer, one_of, string, word};
use super::{Action, Args, CommandQuery, ConnCmd, ListFilter, int, syntax_error, uint, wrong_arity};
use crate::Frame;
use turnstile_core::Category as C;

const COMMAND_NAMES: Arg =
    string("command-name", "a command's name; `container|sub` names a subcommand").multiple().optional();

/// The connection and server commands, in the order the docs list them.
pub(super) const COMMANDS: &[Spec] = &[
    cmd("ping", Group::Connection, "Checks that the server answers.", ping)
        .args(&[string("message", "answered instead of PONG").optional()])
        .reply("`PONG`, or the message")
        .flags(&[Flag::Fast]),
    cmd("echo", Group::Connection, "Answers its argument.", echo)
        .args(&[string("message", "what to answer")])
        .reply("the message")
        .flags(&[Flag::Fast]),
    cmd("hello", Group::Connection, "Picks the protocol (RESP2 or RESP3), optionally authenticates and names the connection, and answers the server's details. Client libraries send it first.", hello)
        .args(&[block(
            "arguments",
            &[
                integer("protover", "2 or 3"),
                block("auth", &[string("username", "the user"), string("password", "its password")], "authenticate as AUTH does")
                    .token("AUTH")
                    .optional(),
                string("clientname", "name the connection, as CLIENT SETNAME does").token("SETNAME").optional(),
            ],
            "",
        )
        .optional()])
        .reply("a map: `server` (`turnstile`), `version`, `proto`, `id`, `mode`, `role`, `modules`")
        .errors(&[
            "`NOPROTO unsupported protocol version`",
            "`ERR Protocol version is not an integer or out of range`",
            "`ERR Syntax error in HELLO option 'X'`",
            "`WRONGPASS invalid username-password pair or user is disabled.`",
        ])
        .flags(&[Flag::Fast, Flag::NoAuth]),
    cmd("auth", Group::Connection, "Authenticates the connection as a user of the server's table (`default` when no user is named). Needed before any other command once `requirepass` or users are configured.", auth)
        .args(&[string("username", "the user (default: `default`)").optional(), string("password", "its password")])
        .reply("`OK`")
        .errors(&[
            "`WRONGPASS invalid username-password pair or user is disabled.`",
            "`ERR AUTH <password> called without any password configured for the default user. ...`",
            "`ERR user NAME has reached max-connections (N)`",
        ])
        .flags(&[Flag::Fast, Flag::NoAuth]),
    cmd("select", Group::Connection, "Picks a database: there is one keyspace, database 0.", select)
        .args(&[integer("index", "0")])
        .reply("`OK`")
        .errors(&["`ERR DB index is out of range`: any index but 0"])
        .flags(&[Flag::Fast]),
    container("client", Group::Connection, "The connection's name, id and library; this node's connections (list, kill).", CLIENT),
    container("session", Group::Connection, "The connection's session: what holds and deliveries belong to, and how a client takes it to another connection (another node) when its own went away.", SESSION),
    cmd("info", Group::Server, "The server's state as `key:value` lines in `# Section`s: server, clients, memory, persistence, stats, locks, queues, raft.", info)
        .args(&[string("section", "a section's name, or `all`; none = every section").multiple().optional()])
        .reply("the text (a verbatim string in RESP3, a bulk string in RESP2)")
        .acl(&[C::Dangerous]),
    cmd("command", Group::Server, "Every command's details, from the same table the parser and this reference are built from.", command_all)
        .subcommands(COMMAND)
        .reply("an array with each command's COMMAND INFO entry")
        .acl(&[C::Connection]),
    cmd("quit", Group::Connection, "Closes the connection once the reply is sent.", quit).reply("`OK`").flags(&[Flag::Fast, Flag::NoAuth]),
];

/// `CLIENT`'s subcommands. Anything else is `unknown subcommand '...'. Try CLIENT HELP.`
const CLIENT: &[Spec] = &[
    cmd(
        "client|setname",
        Group::Connection,
        "Names the connection (printable, no spaces); an empty name clears it.",
        client_setname,
    )
    .acl_only(&[C::Connection, C::Slow])
    .args(&[string("connection-name", "the name")])
    .reply("`OK`")
    .errors(&["`ERR Client names cannot contain spaces, newlines or special characters.`"])
    .flags(&[Flag::Fast]),
    cmd("client|getname", Group::Connection, "The connection's name.", client_getname)
        .reply("the name, or nil")
        .flags(&[Flag::Fast])
        .acl_only(&[C::Connection, C::Slow]),
    cmd("client|id", Group::Connection, "The connection's id.", client_id)
        .reply("the id")
        .flags(&[Flag::Fast])
        .acl_only(&[C::Connection, C::Slow]),
    cmd(
        "client|setinfo",
        Group::Connection,
        "Records the client library's name or version, which client libraries send when they connect; CLIENT LIST and CLIENT INFO show them.",
        client_setinfo,
    )
    .args(&[one_of(
        "attr",
        &[
            string("libname", "the library's name").token("LIB-NAME"),
            string("libver", "the library's version").token("LIB-VER"),
        ],
        "",
    )])
    .reply("`OK`")
    .errors(&[
        "`ERR Unrecognized option 'x'`",
        "`ERR lib-name cannot contain spaces, newlines or special characters.`",
    ])
    .flags(&[Flag::Fast]),
    // Client housekeeping:
    cmd("client|info", Group::Connection, "This connection, as one line of CLIENT LIST.", client_info)
        .reply("the line (a verbatim string in RESP3)"),
    cmd("client|list", Group::Connection, "This node's RESP connections, one line each, in Redis's `field=value` format: `id addr laddr fd name age idle flags db sub psub ssub multi ... cmd user redir resp lib-name lib-ver`.", client_list)
        .args(&[one_of(
            "filter",
            &[
                CLIENT_TYPE,
                integer("client-id", "only these connections").multiple().token("ID"),
            ],
            "",
        )
        .optional()])
        .reply("the lines, each ending in a newline (a verbatim string in RESP3)")
        .errors(&["`ERR Unknown client type 'x'`", "`ERR Invalid client ID`"])
        .acl(&[C::Admin, C::Dangerous]),
    cmd("client|kill", Group::Connection, "Closes connections of this node. The old form names one address and answers OK; the new form takes filters (all must match) and answers how many it closed, the caller's own connection left out unless `SKIPME no`.", client_kill)
        .args(&[one_of(
            "filter",
            &[
                string("ip:port", "the old form: the connection from this address"),
                one_of(
                    "new-format",
                    &[
                        integer("client-id", "the connection with this id (CLIENT ID)").token("ID"),
                        CLIENT_TYPE,
                        string("username", "connections of this user: only `default` exists").token("USER"),
                        string("ip:port", "the connection from this address").token("ADDR"),
                        string("ip:port", "connections to this local address").token("LADDR"),
                        one_of("yes/no", &[word("YES", ""), word("NO", "")], "whether to spare the caller (default yes)")
                            .token("SKIPME"),
                    ],
                    "",
                )
                .multiple(),
            ],
            "",
        )])
        .reply("`OK` (old form), or the number of connections closed")
        .errors(&[
            "`ERR No such client`: the old form matched none",
            "`ERR client-id should be greater than 0`",
            "`ERR Unknown client type 'x'`",
            "`ERR No such user 'x'`",
        ])
        .acl(&[C::Admin, C::Dangerous]),
    cmd("client|no-evict", Group::Connection, "Accepted: Turnstile never evicts clients.", client_accepted)
        .args(&[ON_OFF])
        .reply("`OK`")
        .flags(&[Flag::Fast])
        .acl_only(&[C::Admin, C::Connection, C::Dangerous, C::Slow]),
    cmd("client|no-touch", Group::Connection, "Accepted: keys keep no access times to spare.", client_accepted)
        .args(&[ON_OFF])
        .reply("`OK`")
        .flags(&[Flag::Fast]),
];

const CLIENT_TYPE: Arg = one_of(
    "client-type",
    &[
        word("NORMAL", "connections that are not subscribed"),
        word("MASTER", "none: Turnstile has no Redis replication"),
        word("SLAVE", "none"),
        word("REPLICA", "none"),
        word("PUBSUB", "subscribed connections"),
    ],
    "",
)
.token("TYPE");

const ON_OFF: Arg = one_of("enabled", &[word("ON", ""), word("OFF", "")], "");

/// `SESSION`'s subcommands. Anything else is `unknown subcommand '...'. Try SESSION HELP.`
const SESSION: &[Spec] = &[
    cmd(
        "session|info",
        Group::Connection,
        "The connection's session id and secret, opening the session if it is not open yet. Keep both to resume the session on another connection.",
        session_info,
    )
    .reply("`[id, secret]`, two integers"),
    cmd(
        "session|resume",
        Group::Connection,
        "Makes an open session this connection's, when the connection that had it went away (its node died, the link broke): holds and deliveries stay; waits and consumers ended, so ask again. Send it before any command that would open a session. Unless resumed within the server's session-timeout-ms of its node's last keep-alive, a session closes as if disconnected.",
        session_resume,
    )
    .args(&[integer("id", "the session's id"), integer("secret", "its secret")])
    .reply("`OK`")
    .errors(&[
        "`ERR no session ID with that secret (it has ended, or the secret is wrong)`: one text for both",
        "`ERR this connection already has a session: resume one before any command that opens one`",
    ]),
];

/// `COMMAND`'s subcommands, answered from the table itself.
const COMMAND: &[Spec] = &[
    cmd("command|count", Group::Server, "How many commands there are (subcommands not counted).", command_count).reply("the count")
        .acl(&[C::Connection]),
    cmd("command|docs", Group::Server, "Commands' documentation as Redis 7 gives it; redis-cli builds its hints from it.", command_docs)
        .args(&[COMMAND_NAMES])
        .reply("a map from each named command (all when none is named; unknown names left out) to its docs: `summary`, `since`, `group`, `arguments` (each with `name`, `type`, and `token`, `flags`, `arguments` where they apply), `subcommands`")
        .acl(&[C::Connection]),
    cmd("command|info", Group::Server, "Commands' details as Redis 7 gives them.", command_info)
        .args(&[COMMAND_NAMES])
        .reply("an array with, for each named command (all when none is named), `[name, arity, flags, first-key, last-key, key-step, acl-categories, tips, key-specs, subcommands]`, or nil for an unknown name")
        .acl(&[C::Connection]),
    cmd("command|list", Group::Server, "Every command's name, subcommands included.", command_list)
        .args(&[one_of(
            "filterby",
            &[
                string("module-name", "commands of a module (there are none)").token("MODULE"),
                string("category", "commands in an ACL category (`@write`, `@read`, ...)").token("ACLCAT"),
                string("pattern", "names matching a glob pattern").token("PATTERN"),
            ],
            "",
        )
        .token("FILTERBY")
        .optional()])
        .reply("an array of names")
        .acl(&[C::Connection]),
    cmd("command|help", Group::Server, "What COMMAND's subcommands do.", command_help).reply("an array of lines")
        .acl(&[C::Connection]),
];

/// `PING [message]` → `PONG`, or the message as a bulk string.
pub(super) fn ping(args: Args<'_>) -> Result<Action, Frame> {
    match args.remaining() {
        [] => Ok(Action::Connection(ConnCmd::Ping(None))),
        [message] => Ok(Action::Connection(ConnCmd::Ping(Some(message.clone())))),
        _ => Err(wrong_arity("ping")),
    }
}

/// `ECHO message` → the message.
pub(super) fn echo(mut args: Args<'_>) -> Result<Action, Frame> {
    let message = args.next()?.clone();
    args.end()?;
    Ok(Action::Connection(ConnCmd::Echo(message)))
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]` → the server's hello map, in the protocol
/// asked for. Checked in Redis 7's order and with its texts: the version first (an integer, 2 or
/// 3, else `NOPROTO`), then each option.
pub(super) fn hello(args: Args<'_>) -> Result<Action, Frame> {
    let Some((version, options)) = args.remaining().split_first() else {
        return Ok(Action::Connection(ConnCmd::Hello { protover: None, auth: None, setname: None }));
    };
    let protover = crate::wire::parse_int(version)
        .ok_or_else(|| Frame::error("ERR", "Protocol version is not an integer or out of range"))?;
    if !(2..=3).contains(&protover) {
        return Err(Frame::error("NOPROTO", "unsupported protocol version"));
    }
    let (mut auth, mut setname) = (None, None);
    let mut options = options.iter();
    while let Some(option) = options.next() {
        let rest = options.as_slice();
        match (option.to_ascii_uppercase().as_slice(), rest) {
            (b"AUTH", [user, pass, ..]) => {
                auth = Some((user.clone(), pass.clone()));
                options.nth(1);
            }
            (b"SETNAME", [name, ..]) => {
                setname = Some(client_name(name)?);
                options.next();
            }
            _ => {
                let text = format!("Syntax error in HELLO option '{}'", String::from_utf8_lossy(option));
                return Err(Frame::error("ERR", text));
            }
        }
    }
    Ok(Action::Connection(ConnCmd::Hello { protover: Some(protover), auth, setname }))
}

/// `AUTH [user] pass` → `+OK` or an auth error, decided by the server.
pub(super) fn auth(args: Args<'_>) -> Result<Action, Frame> {
    let (user, pass) = match args.remaining() {
        [pass] => (None, pass.clone()),
        [user, pass] => (Some(user.clone()), pass.clone()),
        _ => return Err(syntax_error()),
    };
    Ok(Action::Connection(ConnCmd::Auth { user, pass }))
}

/// `SELECT index` → `+OK` for database 0; the server refuses the others (there is one keyspace).
pub(super) fn select(mut args: Args<'_>) -> Result<Action, Frame> {
    let index = int(args.next()?)?;
    args.end()?;
    Ok(Action::Connection(ConnCmd::Select(index)))
}

/// `CLIENT SETNAME name` → `+OK`. Redis's rule: printable ASCII, no spaces; empty clears the name.
fn client_setname(mut args: Args<'_>) -> Result<Action, Frame> {
    let name = client_name(args.next()?)?;
    args.end()?;
    Ok(Action::Connection(ConnCmd::ClientSetName(name)))
}

/// `CLIENT GETNAME` → the name, or nil.
fn client_getname(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    Ok(Action::Connection(ConnCmd::ClientGetName))
}

/// `CLIENT ID` → the connection's id.
fn client_id(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    Ok(Action::Connection(ConnCmd::ClientId))
}

/// `CLIENT SETINFO LIB-NAME|LIB-VER value` → `+OK`; checked as Redis 7.2 checks it, kept for
/// CLIENT LIST. An empty value clears it.
fn client_setinfo(mut args: Args<'_>) -> Result<Action, Frame> {
    let attr = args.next()?;
    let value = args.next()?;
    args.end()?;
    let text = String::from_utf8_lossy(attr);
    let attr = if text.eq_ignore_ascii_case("lib-name") {
        LibAttr::Name
    } else if text.eq_ignore_ascii_case("lib-ver") {
        LibAttr::Version
    } else {
        return Err(Frame::error("ERR", format_args!("Unrecognized option '{text}'")));
    };
    if !printable(value) {
        return Err(Frame::error(
            "ERR",
            format_args!("{text} cannot contain spaces, newlines or special characters."),
        ));
    }
    Ok(Action::Connection(ConnCmd::ClientSetInfo { attr, value: value.clone() }))
}

/// Which library detail `CLIENT SETINFO` sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibAttr {
    Name,
    Version,
}

/// Redis's client types (`TYPE` in CLIENT LIST and CLIENT KILL). There is no Redis replication
/// here, so no connection is ever a master or a replica; the names are still accepted, as
/// libraries send them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientType {
    Normal,
    Master,
    Replica,
    PubSub,
}

impl ClientType {
    /// Redis's `getClientTypeByName`, or its error.
    fn parse(name: &[u8]) -> Result<ClientType, Frame> {
        match name.to_ascii_lowercase().as_slice() {
            b"normal" => Ok(ClientType::Normal),
            b"master" => Ok(ClientType::Master),
            b"slave" | b"replica" => Ok(ClientType::Replica),
            b"pubsub" => Ok(ClientType::PubSub),
            _ => Err(Frame::error(
                "ERR",
                format_args!("Unknown client type '{}'", String::from_utf8_lossy(name)),
            )),
        }
    }
}

/// Which connections `CLIENT LIST` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFilter {
    All,
    Type(ClientType),
    /// These ids, in this order (unknown ones left out); ids are not checked for sign, as in Redis.
    Ids(Vec<i64>),
}

/// What `CLIENT KILL` was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillCmd {
    /// `CLIENT KILL ip:port`: that connection, the caller's own included; `-ERR No such client`
    /// when there is none.
    Addr(Bytes),
    /// `CLIENT KILL filter value ...`: every connection matching all of them.
    Filters(KillFilters),
}

/// The new form's filters; `None` matches any connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KillFilters {
    pub id: Option<u64>,
    pub kind: Option<ClientType>,
    pub addr: Option<Bytes>,
    pub laddr: Option<Bytes>,
    /// Leave the caller's own connection alone (the default, `SKIPME yes`).
    pub skip_me: bool,
}

/// `CLIENT INFO` → this connection's line.
fn client_info(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    Ok(Action::Connection(ConnCmd::ClientInfo))
}

/// `CLIENT LIST [TYPE type | ID id ...]`, checked as Redis 7 checks it.
fn client_list(args: Args<'_>) -> Result<Action, Frame> {
    let filter = match args.remaining() {
        [] => ClientFilter::All,
        [kw, kind] if kw.eq_ignore_ascii_case(b"TYPE") => ClientFilter::Type(ClientType::parse(kind)?),
        [kw, ids @ ..] if kw.eq_ignore_ascii_case(b"ID") && !ids.is_empty() => ClientFilter::Ids(
            ids.iter()
                .map(|id| crate::wire::parse_int(id).ok_or_else(|| Frame::error("ERR", "Invalid client ID")))
                .collect::<Result<_, _>>()?,
        ),
        _ => return Err(syntax_error()),
    };
    Ok(Action::Connection(ConnCmd::ClientList(filter)))
}

/// `CLIENT KILL ip:port` or `CLIENT KILL filter value [filter value ...]`, with Redis 7's texts.
fn client_kill(args: Args<'_>) -> Result<Action, Frame> {
    let rest = args.remaining();
    if let [addr] = rest {
        return Ok(Action::Connection(ConnCmd::ClientKill(KillCmd::Addr(addr.clone()))));
    }
    let mut filters = KillFilters { skip_me: true, ..KillFilters::default() };
    for pair in rest.chunks(2) {
        let [option, value] = pair else { return Err(syntax_error()) };
        match option.to_ascii_uppercase().as_slice() {
            b"ID" => {
                let id = crate::wire::parse_int(value)
                    .and_then(|id| u64::try_from(id).ok())
                    .filter(|&id| id > 0)
                    .ok_or_else(|| Frame::error("ERR", "client-id should be greater than 0"))?;
                filters.id = Some(id);
            }
            b"TYPE" => filters.kind = Some(ClientType::parse(value)?),
            b"USER" if value.as_ref() == b"default" => {}
            b"USER" => {
                return Err(Frame::error(
                    "ERR",
                    format_args!("No such user '{}'", String::from_utf8_lossy(value)),
                ));
            }
            b"ADDR" => filters.addr = Some(value.clone()),
            b"LADDR" => filters.laddr = Some(value.clone()),
            b"SKIPME" if value.eq_ignore_ascii_case(b"yes") => filters.skip_me = true,
            b"SKIPME" if value.eq_ignore_ascii_case(b"no") => filters.skip_me = false,
            _ => return Err(syntax_error()),
        }
    }
    Ok(Action::Connection(ConnCmd::ClientKill(KillCmd::Filters(filters))))
}

/// `CLIENT NO-EVICT on|off`, `CLIENT NO-TOUCH on|off` → `+OK`; anything but on/off is a syntax
/// error, as in Redis.
fn client_accepted(mut args: Args<'_>) -> Result<Action, Frame> {
    let value = args.next()?;
    args.end()?;
    if value.eq_ignore_ascii_case(b"on") || value.eq_ignore_ascii_case(b"off") {
        Ok(Action::Connection(ConnCmd::ClientAccepted))
    } else {
        Err(syntax_error())
    }
}

/// `SESSION INFO` → `[id, secret]`.
fn session_info(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    Ok(Action::Connection(ConnCmd::SessionInfo))
}

/// `SESSION RESUME id secret` → `+OK`, or the core's refusal.
fn session_resume(mut args: Args<'_>) -> Result<Action, Frame> {
    let id = uint(args.next()?)?;
    let secret = uint(args.next()?)?;
    args.end()?;
    Ok(Action::Connection(ConnCmd::SessionResume { id, secret }))
}

/// `INFO [section ...]` → the server's info text; sections are matched in lower case.
pub(super) fn info(args: Args<'_>) -> Result<Action, Frame> {
    let sections = args.remaining().iter().map(|s| String::from_utf8_lossy(s).to_ascii_lowercase()).collect();
    Ok(Action::Connection(ConnCmd::Info(sections)))
}

/// `COMMAND` → every command's details. Client libraries ask it (or `COMMAND DOCS`) at connect.
fn command_all(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    Ok(Action::Connection(ConnCmd::Command(CommandQuery::All)))
}

/// `COMMAND COUNT` → how many commands.
fn command_count(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    Ok(Action::Connection(ConnCmd::Command(CommandQuery::Count)))
}

/// `COMMAND DOCS [name ...]` → docs of the named commands, or of all.
fn command_docs(args: Args<'_>) -> Result<Action, Frame> {
    Ok(Action::Connection(ConnCmd::Command(CommandQuery::Docs(args.remaining().to_vec()))))
}

/// `COMMAND INFO [name ...]` → details of the named commands, or of all.
fn command_info(args: Args<'_>) -> Result<Action, Frame> {
    Ok(Action::Connection(ConnCmd::Command(CommandQuery::Info(args.remaining().to_vec()))))
}

/// `COMMAND LIST [FILTERBY MODULE name | ACLCAT category | PATTERN pattern]` → names.
fn command_list(args: Args<'_>) -> Result<Action, Frame> {
    let filter = match args.remaining() {
        [] => None,
        [filterby, kind, value] if filterby.eq_ignore_ascii_case(b"FILTERBY") => {
            Some(match kind.to_ascii_uppercase().as_slice() {
                b"MODULE" => ListFilter::Module(value.clone()),
                b"ACLCAT" => ListFilter::AclCategory(value.clone()),
                b"PATTERN" => ListFilter::Pattern(value.clone()),
                _ => return Err(syntax_error()),
            })
        }
        _ => return Err(syntax_error()),
    };
    Ok(Action::Connection(ConnCmd::Command(CommandQuery::List(filter))))
}

/// `COMMAND HELP` → what the subcommands do.
fn command_help(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    Ok(Action::Connection(ConnCmd::Command(CommandQuery::Help)))
}

/// `QUIT` → `+OK`, then the server closes the connection.
pub(super) fn quit(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    Ok(Action::Connection(ConnCmd::Quit))
}

/// A client name as Redis's `validateClientName` allows it.
fn client_name(name: &Bytes) -> Result<Bytes, Frame> {
    if printable(name) {
        Ok(name.clone())
    } else {
        Err(Frame::error("ERR", "Client names cannot contain spaces, newlines or special characters."))
    }
}

/// Every byte is printable ASCII other than space (`'!'..='~'`).
fn printable(text: &[u8]) -> bool {
    text.iter().all(|b| (b'!'..=b'~').contains(b))
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::super::testing::{args, conn, error_of, parse_line};
    use super::*;

    fn b(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    #[test]
    fn ping_and_echo() {
        assert_eq!(parse_line("PING"), Ok(Action::Connection(ConnCmd::Ping(None))));
        assert_eq!(conn("ping hello"), ConnCmd::Ping(Some(b("hello"))));
        assert_eq!(error_of("PING a b"), "ERR wrong number of arguments for 'ping' command");
        assert_eq!(conn("ECHO hi"), ConnCmd::Echo(b("hi")));
        assert_eq!(error_of("ECHO"), "ERR wrong number of arguments for 'echo' command");
        assert_eq!(error_of("ECHO a b"), "ERR wrong number of arguments for 'echo' command");
    }

    #[test]
    fn hello_forms() {
        assert_eq!(conn("HELLO"), ConnCmd::Hello { protover: None, auth: None, setname: None });
        assert_eq!(conn("HELLO 3"), ConnCmd::Hello { protover: Some(3), auth: None, setname: None });
        assert_eq!(
            conn("hello 2 auth default secret setname app-1"),
            ConnCmd::Hello {
                protover: Some(2),
                auth: Some((b("default"), b("secret"))),
                setname: Some(b("app-1"))
            }
        );
    }

    #[test]
    fn hello_errors() {
        assert_eq!(error_of("HELLO three"), "ERR Protocol version is not an integer or out of range");
        assert_eq!(error_of("HELLO 4"), "NOPROTO unsupported protocol version");
        assert_eq!(error_of("HELLO 1"), "NOPROTO unsupported protocol version");
        assert_eq!(error_of("HELLO 3 AUTH user"), "ERR Syntax error in HELLO option 'AUTH'");
        assert_eq!(error_of("HELLO 3 SETNAME"), "ERR Syntax error in HELLO option 'SETNAME'");
        assert_eq!(error_of("HELLO 3 FOO"), "ERR Syntax error in HELLO option 'FOO'");
        let mut bad_name = args("HELLO 3 SETNAME x");
        bad_name[3] = b("a b");
        assert_eq!(
            parse(&bad_name),
            Err(Frame::Error(
                "ERR Client names cannot contain spaces, newlines or special characters.".into()
            ))
        );
    }

    #[test]
    fn auth_forms() {
        assert_eq!(conn("AUTH secret"), ConnCmd::Auth { user: None, pass: b("secret") });
        assert_eq!(conn("AUTH me secret"), ConnCmd::Auth { user: Some(b("me")), pass: b("secret") });
        assert_eq!(error_of("AUTH"), "ERR wrong number of arguments for 'auth' command");
        assert_eq!(error_of("AUTH a b c"), "ERR syntax error");
    }

    #[test]
    fn select() {
        assert_eq!(conn("SELECT 0"), ConnCmd::Select(0));
        assert_eq!(conn("SELECT 5"), ConnCmd::Select(5));
        assert_eq!(error_of("SELECT zero"), "ERR value is not an integer or out of range");
        assert_eq!(error_of("SELECT"), "ERR wrong number of arguments for 'select' command");
    }

    #[test]
    fn client_subcommands() {
        assert_eq!(conn("CLIENT SETNAME app"), ConnCmd::ClientSetName(b("app")));
        assert_eq!(conn("client getname"), ConnCmd::ClientGetName);
        assert_eq!(conn("CLIENT ID"), ConnCmd::ClientId);
        assert_eq!(
            conn("CLIENT SETINFO LIB-NAME redis-py"),
            ConnCmd::ClientSetInfo { attr: LibAttr::Name, value: b("redis-py") }
        );
        assert_eq!(
            conn("CLIENT SETINFO lib-ver 5.0.1"),
            ConnCmd::ClientSetInfo { attr: LibAttr::Version, value: b("5.0.1") }
        );
        let mut empty = args("CLIENT SETNAME x");
        empty[2] = Bytes::new();
        assert_eq!(parse(&empty), Ok(Action::Connection(ConnCmd::ClientSetName(Bytes::new()))));
    }

    #[test]
    fn client_errors() {
        assert_eq!(error_of("CLIENT"), "ERR wrong number of arguments for 'client' command");
        assert_eq!(error_of("CLIENT FLY x"), "ERR unknown subcommand 'FLY'. Try CLIENT HELP.");
        assert_eq!(error_of("CLIENT ID x"), "ERR wrong number of arguments for 'client|id' command");
        assert_eq!(error_of("CLIENT SETINFO color blue"), "ERR Unrecognized option 'color'");
        assert_eq!(
            error_of("CLIENT SETINFO lib-name"),
            "ERR wrong number of arguments for 'client|setinfo' command"
        );
        let mut bad = args("CLIENT SETINFO lib-ver x");
        bad[3] = b("1 2");
        assert_eq!(
            parse(&bad),
            Err(Frame::Error("ERR lib-ver cannot contain spaces, newlines or special characters.".into()))
        );
        let mut bad = args("CLIENT SETNAME x");
        bad[2] = b("new\nline");
        assert_eq!(
            parse(&bad),
            Err(Frame::Error(
                "ERR Client names cannot contain spaces, newlines or special characters.".into()
            ))
        );
    }

    #[test]
    fn client_list_and_info() {
        assert_eq!(conn("CLIENT INFO"), ConnCmd::ClientInfo);
        assert_eq!(conn("CLIENT LIST"), ConnCmd::ClientList(ClientFilter::All));
        assert_eq!(
            conn("client list type PubSub"),
            ConnCmd::ClientList(ClientFilter::Type(ClientType::PubSub))
        );
        assert_eq!(
            conn("CLIENT LIST TYPE slave"),
            ConnCmd::ClientList(ClientFilter::Type(ClientType::Replica))
        );
        assert_eq!(conn("CLIENT LIST ID 3 -1 0"), ConnCmd::ClientList(ClientFilter::Ids(vec![3, -1, 0])));
        assert_eq!(error_of("CLIENT LIST TYPE bar"), "ERR Unknown client type 'bar'");
        assert_eq!(error_of("CLIENT LIST ID x"), "ERR Invalid client ID");
        assert_eq!(error_of("CLIENT LIST TYPE"), "ERR syntax error");
        assert_eq!(error_of("CLIENT LIST ID"), "ERR syntax error");
        assert_eq!(error_of("CLIENT LIST foo"), "ERR syntax error");
        assert_eq!(error_of("CLIENT INFO x"), "ERR wrong number of arguments for 'client|info' command");
    }

    #[test]
    fn client_kill_forms_and_errors() {
        assert_eq!(conn("CLIENT KILL 1.2.3.4:5"), ConnCmd::ClientKill(KillCmd::Addr(b("1.2.3.4:5"))));
        assert_eq!(conn("CLIENT KILL addr"), ConnCmd::ClientKill(KillCmd::Addr(b("addr"))), "old form");
        assert_eq!(
            conn("CLIENT KILL ID 7 type pubsub SKIPME no USER default"),
            ConnCmd::ClientKill(KillCmd::Filters(KillFilters {
                id: Some(7),
                kind: Some(ClientType::PubSub),
                skip_me: false,
                ..KillFilters::default()
            }))
        );
        assert_eq!(
            conn("CLIENT KILL ADDR 1.2.3.4:5 LADDR 127.0.0.1:7379"),
            ConnCmd::ClientKill(KillCmd::Filters(KillFilters {
                addr: Some(b("1.2.3.4:5")),
                laddr: Some(b("127.0.0.1:7379")),
                skip_me: true,
                ..KillFilters::default()
            }))
        );
        assert_eq!(error_of("CLIENT KILL"), "ERR wrong number of arguments for 'client|kill' command");
        for bad in ["x", "0", "-3", "1.5"] {
            assert_eq!(error_of(&format!("CLIENT KILL ID {bad}")), "ERR client-id should be greater than 0");
        }
        assert_eq!(error_of("CLIENT KILL TYPE foo"), "ERR Unknown client type 'foo'");
        assert_eq!(error_of("CLIENT KILL USER bob"), "ERR No such user 'bob'");
        assert_eq!(error_of("CLIENT KILL ID 1 SKIPME maybe"), "ERR syntax error");
        assert_eq!(error_of("CLIENT KILL ID 1 ID"), "ERR syntax error");
        assert_eq!(error_of("CLIENT KILL MAXAGE 1"), "ERR syntax error");
    }

    #[test]
    fn no_evict_and_no_touch_are_accepted() {
        assert_eq!(conn("CLIENT NO-EVICT on"), ConnCmd::ClientAccepted);
        assert_eq!(conn("client no-touch OFF"), ConnCmd::ClientAccepted);
        assert_eq!(error_of("CLIENT NO-EVICT maybe"), "ERR syntax error");
        assert_eq!(
            error_of("CLIENT NO-EVICT"),
            "ERR wrong number of arguments for 'client|no-evict' command"
        );
    }

    #[test]
    fn session_subcommands() {
        assert_eq!(conn("SESSION INFO"), ConnCmd::SessionInfo);
        assert_eq!(
            conn("session resume 12 9223372036854775807"),
            ConnCmd::SessionResume { id: 12, secret: i64::MAX as u64 }
        );
        assert_eq!(error_of("SESSION"), "ERR wrong number of arguments for 'session' command");
        assert_eq!(error_of("SESSION INFO x"), "ERR wrong number of arguments for 'session|info' command");
        assert_eq!(
            error_of("SESSION RESUME 1"),
            "ERR wrong number of arguments for 'session|resume' command"
        );
        assert_eq!(
            error_of("SESSION RESUME 1 2 3"),
            "ERR wrong number of arguments for 'session|resume' command"
        );
        assert_eq!(error_of("SESSION RESUME one 2"), "ERR value is not an integer or out of range");
        assert_eq!(error_of("SESSION RESUME 1 -2"), "ERR value is not an integer or out of range");
        assert_eq!(error_of("SESSION KILL"), "ERR unknown subcommand 'KILL'. Try SESSION HELP.");
    }

    #[test]
    fn info_command_quit() {
        assert_eq!(conn("INFO"), ConnCmd::Info(vec![]));
        assert_eq!(conn("INFO Server CLIENTS"), ConnCmd::Info(vec!["server".into(), "clients".into()]));
        assert_eq!(conn("COMMAND"), ConnCmd::Command(CommandQuery::All));
        assert_eq!(conn("command count"), ConnCmd::Command(CommandQuery::Count));
        assert_eq!(conn("COMMAND DOCS get"), ConnCmd::Command(CommandQuery::Docs(vec![b("get")])));
        assert_eq!(conn("COMMAND INFO"), ConnCmd::Command(CommandQuery::Info(vec![])));
        assert_eq!(conn("COMMAND LIST"), ConnCmd::Command(CommandQuery::List(None)));
        assert_eq!(
            conn("COMMAND LIST filterby pattern q.*"),
            ConnCmd::Command(CommandQuery::List(Some(ListFilter::Pattern(b("q.*")))))
        );
        assert_eq!(error_of("COMMAND LIST FILTERBY colour red"), "ERR syntax error");
        assert_eq!(error_of("COMMAND LIST x"), "ERR syntax error");
        assert_eq!(error_of("COMMAND COUNT x"), "ERR wrong number of arguments for 'command|count' command");
        assert_eq!(error_of("COMMAND FOO"), "ERR unknown subcommand 'FOO'. Try COMMAND HELP.");
        assert_eq!(conn("QUIT"), ConnCmd::Quit);
        assert_eq!(error_of("QUIT now"), "ERR wrong number of arguments for 'quit' command");
    }
}
