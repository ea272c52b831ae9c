//! Pub/sub: `SUBSCRIBE PSUBSCRIBE UNSUBSCRIBE PUNSUBSCRIBE PUBLISH PUBSUB`.
//!
//! All of them are connection commands: subscriptions belong to the connection (and to the node
//! it is connected to), not to the replicated state, so the connection task answers them from the
//! node's registry. `PUBLISH` is the exception in what it does, not in how it is parsed: the
//! connection puts it in the log (so that it reaches the subscribers of every node, and can be
//! part of a script or a transaction) and answers with the number of subscribers on its own node,
//! which only it can count. Its flags are Redis's (`pubsub`, `fast`, no `write`): it changes no
//! state.
//!
//! The confirmations (`subscribe`, `unsubscribe` ...) are built here too, one frame per channel as
//! Redis sends them, so that their layout is tested next to the parser.

use bytes::Bytes;

use super::spec::{Arg, Flag, Group, Spec, command as cmd, container, string};
use super::{Action, Args, ConnCmd};
use crate::Frame;

/// What a pub/sub command asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PubSubCmd {
    /// `SUBSCRIBE channel [channel ...]`.
    Subscribe(Vec<Bytes>),
    /// `PSUBSCRIBE pattern [pattern ...]`.
    PSubscribe(Vec<Bytes>),
    /// `UNSUBSCRIBE [channel ...]`: none named = every channel.
    Unsubscribe(Vec<Bytes>),
    /// `PUNSUBSCRIBE [pattern ...]`: none named = every pattern.
    PUnsubscribe(Vec<Bytes>),
    /// `PUBLISH channel message`.
    Publish { channel: Bytes, message: Bytes },
    /// `PUBSUB CHANNELS [pattern]`.
    Channels(Option<Bytes>),
    /// `PUBSUB NUMSUB [channel ...]`.
    NumSub(Vec<Bytes>),
    /// `PUBSUB NUMPAT`.
    NumPat,
    /// `PUBSUB HELP`.
    Help,
}

impl PubSubCmd {
    /// Whether a RESP2 connection in subscribed mode may send it (Redis's rule: only the
    /// (un)subscribe commands, besides `PING`, `QUIT` and `RESET`).
    pub fn allowed_when_subscribed(&self) -> bool {
        matches!(
            self,
            PubSubCmd::Subscribe(_)
                | PubSubCmd::PSubscribe(_)
                | PubSubCmd::Unsubscribe(_)
                | PubSubCmd::PUnsubscribe(_)
        )
    }
}

const CHANNEL: Arg = string("channel", "a channel's name, any bytes");
const PATTERN: Arg = string("pattern", "a glob pattern: `*`, `?`, `[abc]`, `[^a-z]`, `\\x`");
const CONFIRMS: &str = "for each name, in order, a `[kind, name, count]` push (an array in RESP2), `count` being how many channels and patterns the connection is then subscribed to";

/// The pub/sub commands, in the order the docs list them.
pub(super) const COMMANDS: &[Spec] = &[
    cmd("subscribe", Group::PubSub, "Listens for messages published to channels, on every node of the cluster. In RESP2 the connection then takes only (un)subscribe commands, PING, QUIT and RESET; in RESP3 it takes anything, messages arriving as push frames.", subscribe)
        .args(&[CHANNEL.multiple()])
        .reply(CONFIRMS)
        .flags(&[Flag::PubSub, Flag::NoScript]),
    cmd("psubscribe", Group::PubSub, "Listens for messages published to every channel that matches a pattern (`pmessage` pushes name the pattern too).", psubscribe)
        .args(&[PATTERN.multiple()])
        .reply(CONFIRMS)
        .flags(&[Flag::PubSub, Flag::NoScript]),
    cmd("unsubscribe", Group::PubSub, "Stops listening to channels; to all of them when none is named.", unsubscribe)
        .args(&[CHANNEL.multiple().optional()])
        .reply("a confirmation per channel, as SUBSCRIBE; with no channel subscribed and none named, one with a nil name and 0")
        .flags(&[Flag::PubSub, Flag::NoScript]),
    cmd("punsubscribe", Group::PubSub, "Stops listening to patterns; to all of them when none is named.", punsubscribe)
        .args(&[PATTERN.multiple().optional()])
        .reply("a confirmation per pattern, as UNSUBSCRIBE")
        .flags(&[Flag::PubSub, Flag::NoScript]),
    cmd("publish", Group::PubSub, "Sends a message to a channel's subscribers on every node of the cluster, at most once, as Redis does: a subscriber that is not connected when it is published never sees it. It goes through the log, so it may also be sent from a script or inside MULTI.", publish)
        .args(&[CHANNEL, string("message", "the message, binary-safe")])
        .reply("how many subscribers (channel and matching pattern subscriptions) the node the client is connected to has for it; 0 when sent from a script or inside MULTI, which see no subscribers")
        .flags(&[Flag::PubSub, Flag::Fast]),
    container("pubsub", Group::PubSub, "This node's channels and subscriptions.", PUBSUB),
];

/// `PUBSUB`'s subcommands. They answer for the node the client is connected to, as Redis
/// Cluster's nodes do.
const PUBSUB: &[Spec] = &[
    cmd("pubsub|channels", Group::PubSub, "The channels with at least one subscriber on this node (pattern subscriptions not counted).", channels)
        .args(&[string("pattern", "only channels matching this glob pattern").optional()])
        .reply("an array of channel names")
        .errors(&["`ERR unknown subcommand or wrong number of arguments for 'CHANNELS'. Try PUBSUB HELP.`: more than one pattern"])
        .flags(&[Flag::PubSub]),
    cmd("pubsub|numsub", Group::PubSub, "How many subscribers channels have on this node (pattern subscriptions not counted).", numsub)
        .args(&[CHANNEL.multiple().optional()])
        .reply("a flat array: each channel, then its count")
        .flags(&[Flag::PubSub]),
    cmd("pubsub|numpat", Group::PubSub, "How many distinct patterns are subscribed to on this node.", numpat)
        .reply("the count")
        .flags(&[Flag::PubSub]),
    cmd("pubsub|help", Group::PubSub, "What PUBSUB's subcommands do.", pubsub_help)
        .reply("an array of lines")
        ,
];

/// `PUBLISH` as the log entry it becomes where no connection answers it: inside `MULTI` (a step
/// of `EXEC`) or from a script. Its reply is then the state machine's, which counts no
/// subscribers (0), as Redis Cluster counts only its own node's. Any other action is unchanged.
pub fn publish_as_write(action: Action) -> Action {
    match action {
        Action::Connection(ConnCmd::PubSub(PubSubCmd::Publish { channel, message })) => Action::Write {
            cmd: turnstile_core::Command::PubSubPublish { channel, message },
            shape: super::ReplyShape::Integer,
        },
        other => other,
    }
}

fn conn(cmd: PubSubCmd) -> Result<Action, Frame> {
    Ok(Action::Connection(ConnCmd::PubSub(cmd)))
}

/// `SUBSCRIBE channel [channel ...]`.
fn subscribe(args: Args<'_>) -> Result<Action, Frame> {
    conn(PubSubCmd::Subscribe(args.remaining().to_vec()))
}

/// `PSUBSCRIBE pattern [pattern ...]`.
fn psubscribe(args: Args<'_>) -> Result<Action, Frame> {
    conn(PubSubCmd::PSubscribe(args.remaining().to_vec()))
}

/// `UNSUBSCRIBE [channel ...]`.
fn unsubscribe(args: Args<'_>) -> Result<Action, Frame> {
    conn(PubSubCmd::Unsubscribe(args.remaining().to_vec()))
}

/// `PUNSUBSCRIBE [pattern ...]`.
fn punsubscribe(args: Args<'_>) -> Result<Action, Frame> {
    conn(PubSubCmd::PUnsubscribe(args.remaining().to_vec()))
}

/// `PUBLISH channel message`. Both are copied out of the read buffer: the message travels
/// through the log and may sit in slow subscribers' outboxes for a while.
fn publish(mut args: Args<'_>) -> Result<Action, Frame> {
    let channel = args.stored()?;
    let message = args.stored()?;
    args.end()?;
    conn(PubSubCmd::Publish { channel, message })
}

/// `PUBSUB CHANNELS [pattern]`: Redis checks "at most one pattern" itself, with this text (which
/// quotes the subcommand as typed).
fn channels(args: Args<'_>) -> Result<Action, Frame> {
    match args.remaining() {
        [] => conn(PubSubCmd::Channels(None)),
        [pattern] => conn(PubSubCmd::Channels(Some(pattern.clone()))),
        _ => Err(Frame::error(
            "ERR",
            format_args!(
                "unknown subcommand or wrong number of arguments for '{}'. Try PUBSUB HELP.",
                String::from_utf8_lossy(args.typed)
            ),
        )),
    }
}

/// `PUBSUB NUMSUB [channel ...]`.
fn numsub(args: Args<'_>) -> Result<Action, Frame> {
    conn(PubSubCmd::NumSub(args.remaining().to_vec()))
}

/// `PUBSUB NUMPAT`.
fn numpat(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    conn(PubSubCmd::NumPat)
}

/// `PUBSUB HELP`.
fn pubsub_help(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    conn(PubSubCmd::Help)
}

/// `PUBSUB HELP`'s lines, as Redis words them for the subcommands there are.
pub fn help() -> Frame {
    let lines = [
        "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "CHANNELS [<pattern>]",
        "    Return the currently active channels matching a <pattern> (default: '*').",
        "NUMPAT",
        "    Return number of subscriptions to patterns.",
        "NUMSUB [<channel> ...]",
        "    Return the number of subscribers for the specified channels, excluding",
        "    pattern subscriptions(default: no channels).",
        "HELP",
        "    Prints this help.",
    ];
    Frame::Array(lines.into_iter().map(Frame::simple).collect())
}

/// The kinds of confirmation and message a subscriber is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    Subscribe,
    PSubscribe,
    Unsubscribe,
    PUnsubscribe,
}

impl Notice {
    fn name(self) -> &'static str {
        match self {
            Notice::Subscribe => "subscribe",
            Notice::PSubscribe => "psubscribe",
            Notice::Unsubscribe => "unsubscribe",
            Notice::PUnsubscribe => "punsubscribe",
        }
    }
}

/// `[kind, name, count]`: a push in RESP3, an array in RESP2 ([`Frame::Push`] encodes both).
/// `name` is `None` only for an unsubscribe that had nothing to drop (nil, as Redis sends it).
pub fn confirmation(kind: Notice, name: Option<Bytes>, count: usize) -> Frame {
    Frame::Push(vec![
        Frame::bulk(kind.name()),
        name.map_or(Frame::Null, Frame::Bulk),
        Frame::Integer(i64::try_from(count).unwrap_or(i64::MAX)),
    ])
}

/// `[message, channel, payload]`, or `[pmessage, pattern, channel, payload]` for a pattern
/// subscription.
pub fn message(pattern: Option<Bytes>, channel: Bytes, payload: Bytes) -> Frame {
    match pattern {
        None => Frame::Push(vec![Frame::bulk("message"), Frame::Bulk(channel), Frame::Bulk(payload)]),
        Some(pattern) => Frame::Push(vec![
            Frame::bulk("pmessage"),
            Frame::Bulk(pattern),
            Frame::Bulk(channel),
            Frame::Bulk(payload),
        ]),
    }
}

/// Redis 7's refusal of a command a RESP2 connection may not send while subscribed; `name` is
/// the command's full name (`get`, `client|list`).
pub fn refused_when_subscribed(name: &str) -> Frame {
    Frame::error(
        "ERR",
        format_args!(
            "Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
        ),
    )
}

/// `PING` in RESP2 subscribed mode: `["pong", message or ""]`, as Redis answers it there.
pub fn subscribed_pong(message: Option<Bytes>) -> Frame {
    Frame::Array(vec![Frame::bulk("pong"), Frame::Bulk(message.unwrap_or_default())])
}

#[cfg(test)]
mod tests {
    use super::super::testing::{bytes, encoded, error_of, parse_line};
    use super::*;
    use crate::Protocol;

    fn pubsub(line: &str) -> PubSubCmd {
        match parse_line(line) {
            Ok(Action::Connection(ConnCmd::PubSub(cmd))) => cmd,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn b(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    #[test]
    fn forms() {
        assert_eq!(pubsub("SUBSCRIBE a b"), PubSubCmd::Subscribe(vec![b("a"), b("b")]));
        assert_eq!(pubsub("psubscribe n.*"), PubSubCmd::PSubscribe(vec![b("n.*")]));
        assert_eq!(pubsub("UNSUBSCRIBE"), PubSubCmd::Unsubscribe(vec![]));
        assert_eq!(pubsub("PUNSUBSCRIBE p q"), PubSubCmd::PUnsubscribe(vec![b("p"), b("q")]));
        assert_eq!(pubsub("PUBLISH ch hi"), PubSubCmd::Publish { channel: b("ch"), message: b("hi") });
        assert_eq!(pubsub("PUBSUB CHANNELS"), PubSubCmd::Channels(None));
        assert_eq!(pubsub("pubsub channels n*"), PubSubCmd::Channels(Some(b("n*"))));
        assert_eq!(pubsub("PUBSUB NUMSUB"), PubSubCmd::NumSub(vec![]));
        assert_eq!(pubsub("PUBSUB NUMSUB a b"), PubSubCmd::NumSub(vec![b("a"), b("b")]));
        assert_eq!(pubsub("PUBSUB NUMPAT"), PubSubCmd::NumPat);
        assert_eq!(pubsub("PUBSUB HELP"), PubSubCmd::Help);
    }

    #[test]
    fn errors_are_redis_7s() {
        assert_eq!(error_of("SUBSCRIBE"), "ERR wrong number of arguments for 'subscribe' command");
        assert_eq!(error_of("PSUBSCRIBE"), "ERR wrong number of arguments for 'psubscribe' command");
        assert_eq!(error_of("PUBLISH a"), "ERR wrong number of arguments for 'publish' command");
        assert_eq!(error_of("PUBLISH a b c"), "ERR wrong number of arguments for 'publish' command");
        assert_eq!(error_of("PUBSUB"), "ERR wrong number of arguments for 'pubsub' command");
        assert_eq!(error_of("PUBSUB FOO"), "ERR unknown subcommand 'FOO'. Try PUBSUB HELP.");
        assert_eq!(error_of("PUBSUB NUMPAT x"), "ERR wrong number of arguments for 'pubsub|numpat' command");
        assert_eq!(
            error_of("PUBSUB CHANNELS a b"),
            "ERR unknown subcommand or wrong number of arguments for 'CHANNELS'. Try PUBSUB HELP."
        );
        assert_eq!(
            error_of("pubsub Channels a b"),
            "ERR unknown subcommand or wrong number of arguments for 'Channels'. Try PUBSUB HELP."
        );
    }

    #[test]
    fn confirmations_and_messages_are_pushes_in_resp3_and_arrays_in_resp2() {
        let confirm = confirmation(Notice::Subscribe, Some(b("ch")), 1);
        assert_eq!(encoded(&confirm, Protocol::Resp2), bytes(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"));
        assert_eq!(encoded(&confirm, Protocol::Resp3), bytes(b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"));
        let none = confirmation(Notice::Unsubscribe, None, 0);
        assert_eq!(encoded(&none, Protocol::Resp2), bytes(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"));
        assert_eq!(encoded(&none, Protocol::Resp3), bytes(b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n"));
        let pmessage = message(Some(b("n.*")), b("n.a"), b("x"));
        assert_eq!(
            encoded(&pmessage, Protocol::Resp3),
            bytes(b">4\r\n$8\r\npmessage\r\n$3\r\nn.*\r\n$3\r\nn.a\r\n$1\r\nx\r\n")
        );
        assert_eq!(
            encoded(&message(None, b("c"), b("hi")), Protocol::Resp2),
            bytes(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n")
        );
        assert_eq!(
            encoded(&subscribed_pong(None), Protocol::Resp2),
            bytes(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n")
        );
    }

    #[test]
    fn which_commands_a_resp2_subscriber_may_send() {
        assert!(pubsub("SUBSCRIBE a").allowed_when_subscribed());
        assert!(pubsub("PUNSUBSCRIBE").allowed_when_subscribed());
        assert!(!pubsub("PUBLISH a b").allowed_when_subscribed());
        assert!(!pubsub("PUBSUB NUMPAT").allowed_when_subscribed());
        assert_eq!(
            refused_when_subscribed("get"),
            Frame::Error(
                "ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context".into()
            )
        );
    }
}
