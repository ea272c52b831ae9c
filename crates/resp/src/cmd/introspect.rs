//! `COMMAND` and its subcommands, answered from the command table in Redis 7's reply shapes.
//!
//! Client libraries call `COMMAND` or `COMMAND DOCS` when they connect, redis-cli builds its
//! typing hints from `COMMAND DOCS`, and cluster-aware clients read key positions from
//! `COMMAND INFO`. Everything here is read from the same [`Spec`]s the parser dispatches on.
//!
//! ```text
//!  COMMAND [INFO name ...]  ─► [[name, arity, flags, first-key, last-key, key-step,
//!                                acl-categories, tips, key-specs, subcommands], ...]
//!  COMMAND DOCS [name ...]  ─► {name: {summary, since, group, arguments, subcommands}, ...}
//!  COMMAND COUNT / LIST     ─► a number / names
//! ```

use super::spec::{Arg, ArgKind, Flag, Keys, Spec};
use super::{CommandQuery, ListFilter, commands, lookup};
use crate::Frame;

/// The Turnstile version every command in the table first appeared in (COMMAND DOCS `since`).
/// A command added later gets a `since` of its own in its entry.
const SINCE: &str = "0.1.0";

/// The reply to `COMMAND ...`.
pub fn reply(query: &CommandQuery) -> Frame {
    match query {
        CommandQuery::All => Frame::Array(commands().map(info).collect()),
        CommandQuery::Count => Frame::Integer(i64::try_from(commands().count()).unwrap_or(i64::MAX)),
        CommandQuery::Info(names) if names.is_empty() => Frame::Array(commands().map(info).collect()),
        CommandQuery::Info(names) => {
            Frame::Array(names.iter().map(|name| find(name).map_or(Frame::Null, info)).collect())
        }
        CommandQuery::Docs(names) => {
            let specs: Vec<&Spec> = if names.is_empty() {
                commands().collect()
            } else {
                names.iter().filter_map(|name| find(name)).collect()
            };
            Frame::Map(specs.into_iter().map(|spec| (Frame::bulk(spec.name), docs(spec))).collect())
        }
        CommandQuery::List(filter) => Frame::Array(
            commands()
                .flat_map(|spec| std::iter::once(spec).chain(spec.subcommands))
                .filter(|spec| filter.as_ref().is_none_or(|filter| listed(spec, filter)))
                .map(|spec| Frame::bulk(spec.name))
                .collect(),
        ),
        CommandQuery::Help => Frame::Array(HELP.iter().map(|line| Frame::simple(*line)).collect()),
    }
}

const HELP: &[&str] = &[
    "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "(no subcommand)",
    "    Return details about all Turnstile commands.",
    "COUNT",
    "    Return the total number of commands in this Turnstile server.",
    "LIST [FILTERBY (MODULE <module-name>|ACLCAT <category>|PATTERN <pattern>)]",
    "    Return a list of all commands in this Turnstile server.",
    "INFO [<command-name> ...]",
    "    Return details about multiple Turnstile commands.",
    "    If no command names are given, documentation details for all",
    "    commands are returned.",
    "DOCS [<command-name> ...]",
    "    Return documentation details about multiple Turnstile commands.",
    "    If no command names are given, documentation details for all",
    "    commands are returned.",
    "HELP",
    "    Print this help.",
];

/// A command by name in any case; `container|sub` finds a subcommand, as in Redis.
fn find(name: &[u8]) -> Option<&'static Spec> {
    match name.iter().position(|&b| b == b'|') {
        None => lookup(name),
        Some(bar) => {
            let sub = &name[bar + 1..];
            lookup(&name[..bar])?.subcommands.iter().find(|spec| {
                spec.name.split_once('|').is_some_and(|(_, own)| sub.eq_ignore_ascii_case(own.as_bytes()))
            })
        }
    }
}

/// Whether `COMMAND LIST FILTERBY ...` keeps this command.
fn listed(spec: &Spec, filter: &ListFilter) -> bool {
    match filter {
        ListFilter::Module(_) => false,
        ListFilter::AclCategory(category) => {
            let category = category.strip_prefix(b"@").unwrap_or(category);
            spec.categories().iter().any(|c| category.eq_ignore_ascii_case(c.as_str().as_bytes()))
        }
        ListFilter::Pattern(pattern) => glob(pattern, spec.name.as_bytes()),
    }
}

/// One command's COMMAND INFO entry: Redis 7's ten fields.
fn info(spec: &Spec) -> Frame {
    let Keys { first, last, step } = spec.keys;
    Frame::Array(vec![
        Frame::bulk(spec.name),
        Frame::Integer(spec.arity.redis()),
        Frame::Set(spec.flags.iter().map(|flag| Frame::simple(flag.name())).collect()),
        Frame::Integer(first),
        Frame::Integer(last),
        Frame::Integer(step),
        Frame::Set(spec.categories().iter().map(|c| Frame::simple(format!("@{}", c.as_str()))).collect()),
        Frame::Array(vec![]),
        Frame::Array(key_specs(spec)),
        Frame::Array(spec.subcommands.iter().map(info).collect()),
    ])
}

/// Redis 7's key specifications for the legacy range: the keys begin at an index and run to
/// a last one (relative to the first; -1 is the last argument).
fn key_specs(spec: &Spec) -> Vec<Frame> {
    let Keys { first, last, step } = spec.keys;
    if first == 0 {
        return vec![];
    }
    let access = if spec.has(Flag::Write) { ["RW", "UPDATE"] } else { ["RO", "ACCESS"] };
    let last_key = if last < 0 { last } else { last - first };
    vec![map(vec![
        ("flags", Frame::Set(access.into_iter().map(Frame::simple).collect())),
        (
            "begin_search",
            map(vec![("type", Frame::bulk("index")), ("spec", map(vec![("index", Frame::Integer(first))]))]),
        ),
        (
            "find_keys",
            map(vec![
                ("type", Frame::bulk("range")),
                (
                    "spec",
                    map(vec![
                        ("lastkey", Frame::Integer(last_key)),
                        ("keystep", Frame::Integer(step)),
                        ("limit", Frame::Integer(0)),
                    ]),
                ),
            ]),
        ),
    ])]
}

/// One command's COMMAND DOCS entry.
fn docs(spec: &Spec) -> Frame {
    let mut fields = vec![
        ("summary", Frame::bulk(spec.summary)),
        ("since", Frame::bulk(SINCE)),
        ("group", Frame::bulk(spec.group.name())),
    ];
    if !spec.args.is_empty() {
        let top_level_keys = spec.keys.first > 0;
        fields.push((
            "arguments",
            Frame::Array(spec.args.iter().map(|a| argument(a, top_level_keys)).collect()),
        ));
    }
    if !spec.subcommands.is_empty() {
        let subcommands = spec.subcommands.iter().map(|sub| (Frame::bulk(sub.name), docs(sub))).collect();
        fields.push(("subcommands", Frame::Map(subcommands)));
    }
    map(fields)
}

/// One argument as COMMAND DOCS describes it. `key_spec` is whether a key here is the one the
/// command's key spec points at (only positional keys at the top level are).
fn argument(arg: &Arg, key_spec: bool) -> Frame {
    let name = match arg.kind {
        ArgKind::PureToken => arg.name.to_ascii_lowercase(),
        _ => arg.name.to_owned(),
    };
    let mut fields = vec![("name", Frame::bulk(name)), ("type", Frame::bulk(arg.kind.name()))];
    if key_spec && matches!(arg.kind, ArgKind::Key) && arg.token.is_none() {
        fields.push(("key_spec_index", Frame::Integer(0)));
    }
    if let Some(token) = arg.token {
        fields.push(("token", Frame::bulk(token)));
    }
    if !arg.summary.is_empty() {
        fields.push(("summary", Frame::bulk(arg.summary)));
    }
    let flags: Vec<Frame> = [(arg.optional, "optional"), (arg.multiple, "multiple")]
        .into_iter()
        .filter(|(set, _)| *set)
        .map(|(_, flag)| Frame::simple(flag))
        .collect();
    if !flags.is_empty() {
        fields.push(("flags", Frame::Set(flags)));
    }
    if let ArgKind::OneOf(parts) | ArgKind::Block(parts) = arg.kind {
        fields.push(("arguments", Frame::Array(parts.iter().map(|a| argument(a, false)).collect())));
    }
    map(fields)
}

fn map(fields: Vec<(&'static str, Frame)>) -> Frame {
    Frame::Map(fields.into_iter().map(|(key, value)| (Frame::bulk(key), value)).collect())
}

/// Redis's glob, case-insensitive as `COMMAND LIST FILTERBY PATTERN` uses it: `*`, `?`,
/// `[abc]`, `[a-z]`, `[^x]`, and `\` to take the next character as it is (the same matcher as
/// `KEYS` and `SCAN MATCH`).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    turnstile_core::glob_match(pattern, text, true)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::testing::{bytes, encoded};
    use super::*;
    use crate::Protocol;

    /// Command names as a client sends them.
    fn names(list: &[&str]) -> Vec<Bytes> {
        list.iter().map(|n| Bytes::copy_from_slice(n.as_bytes())).collect()
    }

    fn field<'a>(frame: &'a Frame, key: &str) -> Option<&'a Frame> {
        let Frame::Map(pairs) = frame else { panic!("{frame:?} is not a map") };
        pairs.iter().find(|(k, _)| *k == Frame::bulk(key.to_owned())).map(|(_, v)| v)
    }

    #[test]
    fn count_is_the_number_of_top_level_commands() {
        let count = commands().count();
        assert_eq!(reply(&CommandQuery::Count), Frame::Integer(i64::try_from(count).unwrap()));
        let Frame::Array(all) = reply(&CommandQuery::All) else { panic!() };
        assert_eq!(all.len(), count);
        assert_eq!(reply(&CommandQuery::Info(vec![])), Frame::Array(all));
    }

    #[test]
    fn info_gives_redis_7s_ten_fields() {
        let frame = reply(&CommandQuery::Info(names(&["LOCK.ACQUIRE", "nope", "client|id"])));
        let Frame::Array(entries) = frame else { panic!() };
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1], Frame::Null, "an unknown name is nil");
        let Frame::Array(acquire) = &entries[0] else { panic!() };
        assert_eq!(acquire.len(), 10);
        assert_eq!(acquire[0], Frame::bulk("lock.acquire"));
        assert_eq!(acquire[1], Frame::Integer(-3));
        assert_eq!(acquire[2], Frame::Set(vec![Frame::simple("write"), Frame::simple("blocking")]));
        assert_eq!(acquire[3..6], [Frame::Integer(1), Frame::Integer(1), Frame::Integer(1)]);
        assert_eq!(
            acquire[6],
            Frame::Set(["@write", "@slow", "@blocking", "@lock"].into_iter().map(Frame::simple).collect())
        );
        let Frame::Array(specs) = &acquire[8] else { panic!() };
        assert_eq!(
            encoded(&specs[0], Protocol::Resp2),
            bytes(
                b"*6\r\n$5\r\nflags\r\n*2\r\n+RW\r\n+UPDATE\r\n\
                  $12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n*2\r\n$5\r\nindex\r\n:1\r\n\
                  $9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n\
                  *6\r\n$7\r\nlastkey\r\n:0\r\n$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n"
            )
        );
        let Frame::Array(id) = &entries[2] else { panic!() };
        assert_eq!((&id[0], &id[1]), (&Frame::bulk("client|id"), &Frame::Integer(2)));
    }

    #[test]
    fn a_container_lists_its_subcommands() {
        let Frame::Array(entries) = reply(&CommandQuery::Info(names(&["client"]))) else { panic!() };
        let Frame::Array(client) = &entries[0] else { panic!() };
        assert_eq!(client[1], Frame::Integer(-2));
        let Frame::Array(subs) = &client[9] else { panic!() };
        let subs: Vec<&Frame> = subs
            .iter()
            .map(|s| match s {
                Frame::Array(fields) => &fields[0],
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            subs,
            [
                "client|setname",
                "client|getname",
                "client|id",
                "client|setinfo",
                "client|info",
                "client|list",
                "client|kill",
                "client|no-evict",
                "client|no-touch"
            ]
            .map(Frame::bulk)
            .iter()
            .collect::<Vec<_>>()
        );
    }

    #[test]
    fn docs_describe_arguments_as_redis_does() {
        let frame = reply(&CommandQuery::Docs(names(&["q.pop", "nope"])));
        let Frame::Map(entries) = &frame else { panic!() };
        assert_eq!(entries.len(), 1, "unknown names are left out");
        assert_eq!(entries[0].0, Frame::bulk("q.pop"));
        let docs = &entries[0].1;
        assert_eq!(field(docs, "group"), Some(&Frame::bulk("queue")));
        assert_eq!(field(docs, "since"), Some(&Frame::bulk(SINCE)));
        let Some(Frame::Array(args)) = field(docs, "arguments") else { panic!() };
        assert_eq!(
            args[0],
            map(vec![
                ("name", Frame::bulk("name")),
                ("type", Frame::bulk("key")),
                ("key_spec_index", Frame::Integer(0)),
                ("summary", Frame::bulk("the queue's name")),
            ])
        );
        assert_eq!(field(&args[2], "token"), Some(&Frame::bulk("WAIT")));
        assert_eq!(field(&args[2], "type"), Some(&Frame::bulk("integer")));
        assert_eq!(field(&args[2], "flags"), Some(&Frame::Set(vec![Frame::simple("optional")])));
        let keep = &args[4];
        assert_eq!(field(keep, "name"), Some(&Frame::bulk("keep")));
        assert_eq!(field(keep, "type"), Some(&Frame::bulk("pure-token")));
    }

    #[test]
    fn docs_of_all_commands_nest_subcommands() {
        let Frame::Map(all) = reply(&CommandQuery::Docs(vec![])) else { panic!() };
        assert_eq!(all.len(), commands().count());
        let (_, client) = all.iter().find(|(name, _)| *name == Frame::bulk("client")).unwrap();
        let Some(Frame::Map(subs)) = field(client, "subcommands") else { panic!() };
        assert_eq!(subs[0].0, Frame::bulk("client|setname"));
        let Frame::Map(one) = reply(&CommandQuery::Docs(names(&["CLIENT|SETNAME"]))) else { panic!() };
        assert_eq!(one[0].0, Frame::bulk("client|setname"));
    }

    #[test]
    fn list_filters_by_pattern_and_category() {
        let list = |filter| match reply(&CommandQuery::List(filter)) {
            Frame::Array(names) => names,
            other => panic!("{other:?}"),
        };
        let all = list(None);
        assert!(all.contains(&Frame::bulk("client|setname")), "subcommands are listed");
        assert!(all.len() > commands().count());
        let semaphores = list(Some(ListFilter::Pattern(Bytes::from_static(b"SEM.*"))));
        assert_eq!(semaphores, ["sem.acquire", "sem.release", "sem.renew", "sem.info"].map(Frame::bulk));
        let blocking = list(Some(ListFilter::AclCategory(Bytes::from_static(b"@blocking"))));
        assert_eq!(blocking[..3], ["lock.acquire", "sem.acquire", "q.pop"].map(Frame::bulk));
        assert!(blocking.contains(&Frame::bulk("blpop")), "{blocking:?}");
        assert!(!blocking.contains(&Frame::bulk("lpop")), "{blocking:?}");
        assert_eq!(list(Some(ListFilter::Module(Bytes::from_static(b"x")))), vec![]);
    }

    #[test]
    fn glob_matches_as_redis_does() {
        assert!(glob(b"q.*", b"q.push"));
        assert!(glob(b"Q.P?SH", b"q.push"));
        assert!(glob(b"[gs]et", b"set"));
        assert!(glob(b"[a-f]*", b"del"));
        assert!(!glob(b"[^a-f]*", b"del"));
        assert!(glob(b"lock\\.*", b"lock.info"));
        assert!(!glob(b"lock", b"lock.info"));
        // A class never closed runs to the end of the pattern, as in Redis.
        assert!(glob(b"[abc", b"a"));
        assert!(!glob(b"[abc", b"ab"));
    }

    #[test]
    fn help_names_every_subcommand() {
        let Frame::Array(lines) = reply(&CommandQuery::Help) else { panic!() };
        for sub in ["COUNT", "LIST", "INFO", "DOCS", "HELP"] {
            assert!(lines.iter().any(|l| matches!(l, Frame::Simple(t) if t.starts_with(sub))), "{sub}");
        }
    }
}
