//! Durable queues: `Q.*`.
//!
//! Messages are pushed with options, popped under a lease, and acked, nacked or extended by
//! the receipt their delivery carries. `Q.POP` is parsed with `session: None`; the server binds
//! the connection's session through `Command::session_mut`, so deliveries return to the queue
//! when the connection closes.

use turnstile_core::{Command, Overflow, Pop, Push, Query, QueueConfig, Reply};

use super::spec::{
    Arg, FENCE, FENCED, Flag, Group, Keys, Spec, command, flag, integer as int_arg, key, one_of, option,
    string, word,
};
use super::{
    Action, Args, ReplyShape, int, integer, millis, name, read, syntax_error, uint, uint32, unexpected,
    write, wrong_arity,
};
use crate::Frame;
use turnstile_core::Category as C;

const QUEUE: Arg = key("name", "the queue's name");
const RECEIPT: Arg = int_arg("receipt", "the receipt the delivery carried (a fencing token of its own)");
const NO_QUEUE: &str = "`ERR no such queue 'q'`";

/// `Q.*`, in the order the docs list them.
pub(super) const COMMANDS: &[Spec] = &[
    command("q.create", Group::Queue, "Creates a queue with its settings; options left out take the defaults. A queue is also created, with the defaults, by its first push or by a pop that waits.", create)
        .args(&[
            QUEUE,
            option("MAXLEN", int_arg("n", "most messages stored (delayed, ready and in flight); 0 = unbounded (default)")),
            option(
                "OVERFLOW",
                one_of("policy", &[word("REJECT", "refuse the push with -FULL (default)"), word("DROP-HEAD", "drop the oldest ready message")], "what a push to a full queue does"),
            ),
            option("MAXDELIVER", int_arg("n", "a message returned after this many deliveries is dead-lettered; 0 = unlimited (default)")),
            option("DLQ", key("queue", "where dead letters go (default: counted and dropped)")),
            option("LEASE", int_arg("ms", "the delivery lease when a pop names none (default 30000)")),
            option("TTL", int_arg("ms", "messages not delivered within this are dropped (default: never)")),
            option("DEDUP-WINDOW", int_arg("ms", "how long a DEDUP id is remembered (default 300000)")),
        ])
        .reply("`1` when created; `0` when it exists with the same settings")
        .errors(&[
            "`ERR queue 'q' exists with a different configuration`",
            "`ERR a queue cannot be its own dead-letter queue`",
            "`ERR lease must be between 1 ms and the maximum duration`",
            "`ERR ttl must be at least 1 ms`",
        ])
        .flags(&[Flag::Write])
        .keys(Keys::FIRST),
    command("q.push", Group::Queue, "Stores a message (creating the queue with the defaults if needed) and answers its id.", push)
        .args(&[
            QUEUE,
            string("payload", "the message, binary-safe"),
            option("DELAY", int_arg("ms", "deliverable only after this long")),
            option("PRIORITY", int_arg("0-9", "higher is served first; FIFO within a priority (default 0)")),
            option("DEDUP", string("id", "a second push with the same id within the queue's dedup window stores nothing and answers the first message's id")),
            option("TTL", int_arg("ms", "dropped if not delivered within this (default: the queue's)")),
            option("GROUP", string("key", "messages of one group are delivered one at a time, in order")),
            FENCE,
        ])
        .reply("the message's id (the first message's when a DEDUP id matched)")
        .errors(&[
            "`FULL queue 'q' is full (max length N)`: the queue is at MAXLEN with OVERFLOW REJECT",
            "`OOM command not allowed when used memory > 'max-memory'`",
            "`ERR priority must be between 0 and 9`",
            FENCED,
        ])
        .flags(&[Flag::Write, Flag::DenyOom, Flag::Fast])
        .keys(Keys::FIRST),
    command("q.pop", Group::Queue, "Delivers up to COUNT ready messages under a lease, waiting up to WAIT ms for one. Ack each by its receipt before the lease runs out, or it is delivered again.", pop)
        .args(&[
            QUEUE,
            option("COUNT", int_arg("n", "most messages to take (default 1)")),
            option("WAIT", int_arg("ms", "how long to wait when none is ready; without it (or 0) the pop does not wait")),
            option("LEASE", int_arg("ms", "the deliveries' lease (default: the queue's)")),
            flag("KEEP", "keep the deliveries when the connection closes: only their lease returns them, so another connection may ack them"),
        ])
        .reply("an array of deliveries, each `[id, receipt, payload, deliveries]` (`deliveries` counts this one); a nil array when none came")
        .errors(&["`ERR count must be at least 1`"])
        .flags(&[Flag::Write, Flag::Blocking])
        .keys(Keys::FIRST),
    command("q.ack", Group::Queue, "Acknowledges deliveries by their receipts: the messages are done and gone.", ack)
        .args(&[QUEUE, RECEIPT.multiple(), FENCE])
        .reply("how many were acked (a receipt no longer in flight counts 0)")
        .errors(&[FENCED])
        .flags(&[Flag::Write, Flag::Fast])
        .keys(Keys::FIRST),
    command("q.nack", Group::Queue, "Gives a delivery back: delivered again after DELAY, or with DEAD moved to the dead-letter queue (dropped when there is none).", nack)
        .args(&[
            QUEUE,
            RECEIPT,
            option("DELAY", int_arg("ms", "deliver it again after this long (default: at once)")),
            flag("DEAD", "reject it: dead-letter it instead of delivering it again"),
        ])
        .reply("`1` if the delivery was in flight, else `0`")
        .flags(&[Flag::Write, Flag::Fast])
        .keys(Keys::FIRST),
    command("q.extend", Group::Queue, "Gives a delivery a new lease, for work that takes longer than the lease.", extend)
        .args(&[QUEUE, RECEIPT, int_arg("ms", "the new lease, from now")])
        .reply("the new lease in ms")
        .errors(&["`LOST delivery N is no longer held`: the lease ran out, or it was acked or given back"])
        .flags(&[Flag::Write, Flag::Fast])
        .keys(Keys::FIRST),
    command("q.stats", Group::Queue, "A queue's gauges and its totals since it was created.", stats)
        .args(&[QUEUE])
        .reply("a map: gauges `ready delayed in-flight dead consumers waiting-pops oldest-ready-age-ms payload-bytes`, then totals `pushed deduplicated dead-letters-in redriven-in delivered returned acked expired purged dropped dead-lettered discarded redriven-out`")
        .errors(&[NO_QUEUE])
        .flags(&[Flag::ReadOnly, Flag::Fast])
        .keys(Keys::FIRST),
    command("q.peek", Group::Queue, "The next ready messages in delivery order, without delivering them.", peek)
        .args(&[QUEUE, option("COUNT", int_arg("n", "how many to show (default 1)"))])
        .reply("an array of messages, each `[id, payload, deliveries, priority, age-ms]`")
        .errors(&[NO_QUEUE])
        .flags(&[Flag::ReadOnly])
        .keys(Keys::FIRST),
    command("q.purge", Group::Queue, "Removes every ready and delayed message; deliveries in flight stay.", purge)
        .args(&[QUEUE])
        .reply("how many messages were removed")
        .flags(&[Flag::Write])
        .keys(Keys::FIRST)
        .acl(&[C::Dangerous]),
    command("q.del", Group::Queue, "Deletes a queue with every message in it.", del)
        .args(&[QUEUE])
        .reply("`1` if the queue existed, else `0`")
        .flags(&[Flag::Write])
        .keys(Keys::FIRST)
        .acl(&[C::Dangerous]),
    command("q.list", Group::Queue, "Every queue's name, sorted.", list)
        .reply("an array of names")
        .flags(&[Flag::ReadOnly]),
    command("q.redrive", Group::Queue, "Moves ready messages from a dead-letter queue to another queue, as fresh messages.", redrive)
        .args(&[
            key("dlq", "the queue to move messages from"),
            key("target", "the queue to move them to"),
            option("COUNT", int_arg("n", "most messages to move (default: all)")),
        ])
        .reply("how many messages moved")
        .errors(&[NO_QUEUE, "`ERR redrive source and target must differ`"])
        .flags(&[Flag::Write])
        .keys(Keys { first: 1, last: 2, step: 1 })
        .acl(&[C::Dangerous]),
];

/// `Q.CREATE name [MAXLEN n] [OVERFLOW reject|drop-head] [MAXDELIVER n] [DLQ name] [LEASE ms]
/// [TTL ms] [DEDUP-WINDOW ms]` → 1 when created, 0 when it exists with the same configuration,
/// an error when it exists with another. Options left out take the defaults
/// ([`QueueConfig::default`]): unbounded, unlimited deliveries, no DLQ, 30 s lease, no TTL,
/// 5 min dedup window.
pub(super) fn create(mut args: Args<'_>) -> Result<Action, Frame> {
    let queue = args.name()?;
    let mut config = QueueConfig::default();
    while let Some(keyword) = args.keyword() {
        match keyword.as_slice() {
            b"MAXLEN" => config.max_len = uint(args.value()?)?,
            b"OVERFLOW" => {
                config.overflow = match args.value()?.to_ascii_lowercase().as_slice() {
                    b"reject" => Overflow::Reject,
                    b"drop-head" => Overflow::DropHead,
                    _ => return Err(syntax_error()),
                }
            }
            b"MAXDELIVER" => config.max_deliveries = uint32(args.value()?)?,
            b"DLQ" => config.dead_letter = Some(name(args.value()?)?),
            b"LEASE" => config.lease = millis(args.value()?)?,
            b"TTL" => config.ttl = Some(millis(args.value()?)?),
            b"DEDUP-WINDOW" => config.dedup_window = millis(args.value()?)?,
            _ => return Err(syntax_error()),
        }
    }
    write(Command::CreateQueue { name: queue, config }, ReplyShape::Integer)
}

/// `Q.PUSH name payload [DELAY ms] [PRIORITY 0-9] [DEDUP id] [TTL ms] [GROUP key]
/// [FENCE lock token]` → the message id. A queue that does not exist is created with the
/// defaults. With `DEDUP`, a second push of the same id within the window answers the first
/// message's id and stores nothing. The payload is binary-safe.
pub(super) fn push(mut args: Args<'_>) -> Result<Action, Frame> {
    let queue = args.name()?;
    let payload = args.stored()?;
    let mut push = Push::new(queue, payload);
    while let Some(keyword) = args.keyword() {
        match keyword.as_slice() {
            b"DELAY" => push.delay = millis(args.value()?)?,
            b"PRIORITY" => {
                push.priority = int(args.value()?)
                    .ok()
                    .and_then(|p| u8::try_from(p).ok())
                    .filter(|p| *p <= 9)
                    .ok_or_else(|| Frame::error("ERR", "priority must be between 0 and 9"))?;
            }
            b"DEDUP" => push.dedup = Some(name(args.value()?)?),
            b"TTL" => push.ttl = Some(millis(args.value()?)?),
            b"GROUP" => push.group = Some(name(args.value()?)?),
            b"FENCE" => push.fence = Some(args.fence()?),
            _ => return Err(syntax_error()),
        }
    }
    write(Command::Push(push), ReplyShape::PushedId)
}

/// `Q.POP name [COUNT n] [WAIT ms] [LEASE ms] [KEEP]` → `[[id, receipt, payload, deliveries], ...]`,
/// or nil when nothing is ready (within `WAIT`). Always the array-of-arrays form, whatever the
/// count, so a client reads one shape. `COUNT` defaults to 1; `LEASE` to the queue's lease.
/// With `KEEP` the deliveries outlive the connection (only their lease returns them), so
/// another connection can ack them, as `LOCK.ACQUIRE ... KEEP` does for holds.
pub(super) fn pop(mut args: Args<'_>) -> Result<Action, Frame> {
    let queue = args.name()?;
    let mut pop = Pop { queue, session: None, count: 1, wait: 0, lease: None, auto_ack: false, keep: false };
    while let Some(keyword) = args.keyword() {
        match keyword.as_slice() {
            b"COUNT" => pop.count = uint32(args.value()?)?,
            b"WAIT" => pop.wait = millis(args.value()?)?,
            b"LEASE" => pop.lease = Some(millis(args.value()?)?),
            b"KEEP" => pop.keep = true,
            _ => return Err(syntax_error()),
        }
    }
    write(Command::Pop(pop), ReplyShape::Deliveries)
}

/// `Q.ACK name receipt [receipt ...] [FENCE lock token]` → how many were acked (receipts no
/// longer in flight count 0). `FENCE`, when given, must come last.
pub(super) fn ack(mut args: Args<'_>) -> Result<Action, Frame> {
    let queue = args.name()?;
    let mut receipts = Vec::with_capacity(args.remaining().len());
    let mut fence = None;
    while let Some(arg) = args.keyword() {
        if arg == b"FENCE" {
            fence = Some(args.fence()?);
            break;
        }
        receipts.push(uint(&arg)?);
    }
    args.end()?;
    if receipts.is_empty() {
        return Err(wrong_arity("q.ack"));
    }
    write(Command::Ack { queue, receipts, fence }, ReplyShape::Integer)
}

/// `Q.NACK name receipt [DELAY ms] [DEAD]` → 1 if the delivery was in flight, else 0. The message
/// is delivered again after `DELAY` (default at once); with `DEAD` it is rejected instead: moved
/// to the dead-letter queue, or discarded when there is none.
pub(super) fn nack(mut args: Args<'_>) -> Result<Action, Frame> {
    let queue = args.name()?;
    let receipt = args.uint()?;
    let (mut delay, mut dead_letter) = (0, false);
    while let Some(keyword) = args.keyword() {
        match keyword.as_slice() {
            b"DELAY" => delay = millis(args.value()?)?,
            b"DEAD" => dead_letter = true,
            _ => return Err(syntax_error()),
        }
    }
    write(Command::Nack { queue, receipt, delay, dead_letter }, ReplyShape::Integer)
}

/// `Q.EXTEND name receipt ms` → the new lease in ms, or `-LOST` when the delivery is gone.
pub(super) fn extend(mut args: Args<'_>) -> Result<Action, Frame> {
    let queue = args.name()?;
    let receipt = args.uint()?;
    let lease = args.millis()?;
    args.end()?;
    write(Command::Extend { queue, receipt, lease }, ReplyShape::Integer)
}

/// `Q.STATS name` → a map of gauges (`ready`, `delayed`, `in-flight`, `dead`, `consumers`,
/// `waiting-pops`, `oldest-ready-age-ms`, `payload-bytes`) then totals since creation.
/// A missing queue is the core's `no such queue` error.
pub(super) fn stats(mut args: Args<'_>) -> Result<Action, Frame> {
    let name = args.name()?;
    args.end()?;
    read(Query::QueueStats { name }, ReplyShape::QueueStats)
}

/// `Q.PEEK name [COUNT n]` → the next `n` (default 1) ready messages in delivery order, each
/// `[id, payload, deliveries, priority, age-ms]`, without delivering them.
pub(super) fn peek(mut args: Args<'_>) -> Result<Action, Frame> {
    let queue = args.name()?;
    let mut count = 1;
    while let Some(keyword) = args.keyword() {
        match keyword.as_slice() {
            b"COUNT" => count = uint32(args.value()?)?,
            _ => return Err(syntax_error()),
        }
    }
    read(Query::Peek { queue, count }, ReplyShape::Messages)
}

/// `Q.PURGE name` → how many ready and delayed messages were removed (in-flight ones stay).
pub(super) fn purge(mut args: Args<'_>) -> Result<Action, Frame> {
    let name = args.name()?;
    args.end()?;
    write(Command::PurgeQueue { name }, ReplyShape::Integer)
}

/// `Q.DEL name` → 1 if the queue existed (it is gone with every message), else 0.
pub(super) fn del(mut args: Args<'_>) -> Result<Action, Frame> {
    let name = args.name()?;
    args.end()?;
    write(Command::DeleteQueue { name, if_unused: false, if_empty: false }, ReplyShape::Integer)
}

/// `Q.LIST` → every queue name, sorted.
pub(super) fn list(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    read(Query::ListQueues, ReplyShape::Names)
}

/// `Q.REDRIVE dlq target [COUNT n]` → how many ready messages moved from `dlq` to `target`, as
/// fresh messages. Without `COUNT`, all of them.
pub(super) fn redrive(mut args: Args<'_>) -> Result<Action, Frame> {
    let from = args.name()?;
    let to = args.name()?;
    let mut count = u64::MAX;
    while let Some(keyword) = args.keyword() {
        match keyword.as_slice() {
            b"COUNT" => count = uint(args.value()?)?,
            _ => return Err(syntax_error()),
        }
    }
    write(Command::Redrive { from, to, count }, ReplyShape::Integer)
}

/// [`ReplyShape::PushedId`]: the id as an integer, whether or not it was a duplicate.
pub(super) fn render_pushed_id(reply: Reply) -> Frame {
    match reply {
        Reply::Pushed { id, .. } => integer(id),
        other => unexpected(ReplyShape::PushedId, &other),
    }
}

/// [`ReplyShape::Deliveries`]: `[[id, receipt, payload, deliveries], ...]`; nothing delivered
/// is a nil array (`*-1` in RESP2), as Redis answers a blocking pop that timed out.
pub(super) fn render_deliveries(reply: Reply) -> Frame {
    match reply {
        Reply::Deliveries(deliveries) if !deliveries.is_empty() => {
            // Into a fresh vector: collected in place, the deliveries' buffer would be reused and
            // then reallocated to the frames' size.
            let mut frames = Vec::with_capacity(deliveries.len());
            frames.extend(deliveries.into_iter().map(|d| {
                Frame::Array(vec![
                    integer(d.id),
                    integer(d.receipt),
                    Frame::Bulk(d.payload),
                    integer(d.deliveries.into()),
                ])
            }));
            Frame::Array(frames)
        }
        Reply::Deliveries(_) | Reply::Nil => Frame::NullArray,
        other => unexpected(ReplyShape::Deliveries, &other),
    }
}

/// [`ReplyShape::QueueStats`]: gauges, then every total, with hyphenated bulk-string keys.
pub(super) fn render_queue_stats(reply: Reply) -> Frame {
    let Reply::QueueStats(s) = reply else { return unexpected(ReplyShape::QueueStats, &reply) };
    let t = s.totals;
    let fields = [
        ("ready", s.ready),
        ("delayed", s.delayed),
        ("in-flight", s.in_flight),
        ("dead", s.dead),
        ("consumers", s.consumers),
        ("waiting-pops", s.waiting_pops),
        ("oldest-ready-age-ms", s.oldest_ready_age),
        ("payload-bytes", s.payload_bytes),
        ("pushed", t.pushed),
        ("deduplicated", t.deduplicated),
        ("dead-letters-in", t.dead_letters_in),
        ("redriven-in", t.redriven_in),
        ("delivered", t.delivered),
        ("returned", t.returned),
        ("acked", t.acked),
        ("expired", t.expired),
        ("purged", t.purged),
        ("dropped", t.dropped),
        ("dead-lettered", t.dead_lettered),
        ("discarded", t.discarded),
        ("redriven-out", t.redriven_out),
    ];
    Frame::Map(fields.into_iter().map(|(key, value)| (Frame::bulk(key), integer(value))).collect())
}

/// [`ReplyShape::Messages`]: `[[id, payload, deliveries, priority, age-ms], ...]`.
pub(super) fn render_messages(reply: Reply) -> Frame {
    let Reply::Messages(messages) = reply else { return unexpected(ReplyShape::Messages, &reply) };
    Frame::Array(
        messages
            .into_iter()
            .map(|m| {
                Frame::Array(vec![
                    integer(m.id),
                    Frame::Bulk(m.payload),
                    integer(m.deliveries.into()),
                    integer(m.priority.into()),
                    integer(m.age),
                ])
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use turnstile_core::{CoreError, Delivery, Fence, MessageView, QueueStats, QueueTotals};

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

    fn fence(lock: &str, token: u64) -> Option<Fence> {
        Some(Fence { lock: lock.into(), token })
    }

    #[test]
    fn create_with_defaults() {
        assert_eq!(
            parse_line("Q.CREATE jobs"),
            Ok(Action::Write {
                cmd: Command::CreateQueue { name: "jobs".into(), config: QueueConfig::default() },
                shape: ReplyShape::Integer
            })
        );
    }

    #[test]
    fn create_with_every_option() {
        let config = QueueConfig {
            max_len: 1000,
            overflow: Overflow::DropHead,
            max_deliveries: 5,
            dead_letter: Some("jobs-dlq".into()),
            lease: 10_000,
            ttl: Some(60_000),
            dedup_window: 1_000,
            ..QueueConfig::default()
        };
        assert_eq!(
            write_of(
                "Q.CREATE jobs maxlen 1000 OVERFLOW DROP-HEAD MAXDELIVER 5 DLQ jobs-dlq LEASE 10000 \
                 TTL 60000 DEDUP-WINDOW 1000"
            ),
            Command::CreateQueue { name: "jobs".into(), config }
        );
        let Command::CreateQueue { config, .. } = write_of("Q.CREATE q OVERFLOW reject") else { panic!() };
        assert_eq!(config.overflow, Overflow::Reject);
    }

    #[test]
    fn create_errors() {
        assert_eq!(error_of("Q.CREATE"), "ERR wrong number of arguments for 'q.create' command");
        assert_eq!(error_of("Q.CREATE q OVERFLOW block"), "ERR syntax error");
        assert_eq!(error_of("Q.CREATE q MAXLEN"), "ERR syntax error");
        assert_eq!(error_of("Q.CREATE q MAXLEN lots"), "ERR value is not an integer or out of range");
        assert_eq!(
            error_of("Q.CREATE q MAXDELIVER 4294967296"),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(error_of("Q.CREATE q LEASE -1"), "ERR value is out of range, must be positive");
        assert_eq!(error_of("Q.CREATE q PRIORITY 3"), "ERR syntax error");
    }

    #[test]
    fn push_plain_and_binary_payload() {
        assert_eq!(
            parse_line("Q.PUSH jobs hello"),
            Ok(Action::Write { cmd: Command::Push(Push::new("jobs", "hello")), shape: ReplyShape::PushedId })
        );
        let args =
            [Bytes::from_static(b"Q.PUSH"), Bytes::from_static(b"jobs"), Bytes::from_static(b"\x00\xff\r\n")];
        let Ok(Action::Write { cmd: Command::Push(push), .. }) = parse(&args) else { panic!() };
        assert_eq!(push.payload, Bytes::from_static(b"\x00\xff\r\n"));
    }

    /// A stored payload must not keep the read buffer it came in alive (see `Args::stored`).
    #[test]
    fn a_pushed_payload_is_copied_out_of_the_read_buffer() {
        let request = Bytes::from_static(b"Q.PUSHjobspayload-bytes");
        let args = [request.slice(0..6), request.slice(6..10), request.slice(10..)];
        let Ok(Action::Write { cmd: Command::Push(push), .. }) = parse(&args) else { panic!() };
        assert_eq!(push.payload, args[2]);
        let buffer = request.as_ptr_range();
        assert!(!buffer.contains(&push.payload.as_ptr()), "the payload is a slice of the request");
    }

    #[test]
    fn push_with_every_option() {
        let expected = Push {
            delay: 500,
            priority: 9,
            dedup: Some("order-7".into()),
            ttl: Some(60_000),
            group: Some("customer-3".into()),
            fence: fence("leader", 12),
            ..Push::new("jobs", "p")
        };
        assert_eq!(
            write_of(
                "Q.PUSH jobs p DELAY 500 PRIORITY 9 DEDUP order-7 TTL 60000 GROUP customer-3 FENCE leader 12"
            ),
            Command::Push(expected)
        );
    }

    #[test]
    fn push_errors() {
        assert_eq!(error_of("Q.PUSH jobs"), "ERR wrong number of arguments for 'q.push' command");
        assert_eq!(error_of("Q.PUSH jobs p PRIORITY 10"), "ERR priority must be between 0 and 9");
        assert_eq!(error_of("Q.PUSH jobs p PRIORITY -1"), "ERR priority must be between 0 and 9");
        assert_eq!(error_of("Q.PUSH jobs p PRIORITY high"), "ERR priority must be between 0 and 9");
        assert_eq!(error_of("Q.PUSH jobs p DELAY soon"), "ERR value is not an integer or out of range");
        assert_eq!(error_of("Q.PUSH jobs p FENCE leader"), "ERR syntax error");
        assert_eq!(error_of("Q.PUSH jobs p FENCE leader x"), "ERR value is not an integer or out of range");
        assert_eq!(error_of("Q.PUSH jobs p URGENT"), "ERR syntax error");
    }

    #[test]
    fn pop_defaults_and_options() {
        assert_eq!(
            parse_line("Q.POP jobs"),
            Ok(Action::Write {
                cmd: Command::Pop(Pop {
                    queue: "jobs".into(),
                    session: None,
                    count: 1,
                    wait: 0,
                    lease: None,
                    auto_ack: false,
                    keep: false
                }),
                shape: ReplyShape::Deliveries
            })
        );
        assert_eq!(
            write_of("Q.POP jobs COUNT 10 WAIT 2000 LEASE 60000 KEEP"),
            Command::Pop(Pop {
                queue: "jobs".into(),
                session: None,
                count: 10,
                wait: 2000,
                lease: Some(60_000),
                auto_ack: false,
                keep: true
            })
        );
    }

    #[test]
    fn pop_errors() {
        assert_eq!(error_of("Q.POP"), "ERR wrong number of arguments for 'q.pop' command");
        assert_eq!(error_of("Q.POP jobs COUNT"), "ERR syntax error");
        assert_eq!(error_of("Q.POP jobs COUNT -2"), "ERR value is out of range, must be positive");
        assert_eq!(error_of("Q.POP jobs WAIT x"), "ERR value is not an integer or out of range");
        assert_eq!(error_of("Q.POP jobs BLOCK 5"), "ERR syntax error");
    }

    #[test]
    fn ack_receipts_and_fence() {
        assert_eq!(
            parse_line("Q.ACK jobs 5 6 7"),
            Ok(Action::Write {
                cmd: Command::Ack { queue: "jobs".into(), receipts: vec![5, 6, 7], fence: None },
                shape: ReplyShape::Integer
            })
        );
        assert_eq!(
            write_of("Q.ACK jobs 5 fence leader 3"),
            Command::Ack { queue: "jobs".into(), receipts: vec![5], fence: fence("leader", 3) }
        );
    }

    #[test]
    fn ack_errors() {
        assert_eq!(error_of("Q.ACK jobs"), "ERR wrong number of arguments for 'q.ack' command");
        assert_eq!(error_of("Q.ACK jobs FENCE l 3"), "ERR wrong number of arguments for 'q.ack' command");
        assert_eq!(error_of("Q.ACK jobs 5 x"), "ERR value is not an integer or out of range");
        assert_eq!(error_of("Q.ACK jobs 5 FENCE l"), "ERR syntax error");
        assert_eq!(error_of("Q.ACK jobs 5 FENCE l 3 6"), "ERR syntax error");
    }

    #[test]
    fn nack_delay_and_dead() {
        assert_eq!(
            parse_line("Q.NACK jobs 5"),
            Ok(Action::Write {
                cmd: Command::Nack { queue: "jobs".into(), receipt: 5, delay: 0, dead_letter: false },
                shape: ReplyShape::Integer
            })
        );
        assert_eq!(
            write_of("Q.NACK jobs 5 DEAD DELAY 100"),
            Command::Nack { queue: "jobs".into(), receipt: 5, delay: 100, dead_letter: true }
        );
        assert_eq!(error_of("Q.NACK jobs"), "ERR wrong number of arguments for 'q.nack' command");
        assert_eq!(error_of("Q.NACK jobs 5 DELAY"), "ERR syntax error");
        assert_eq!(error_of("Q.NACK jobs 5 REQUEUE"), "ERR syntax error");
        assert_eq!(error_of("Q.NACK jobs r"), "ERR value is not an integer or out of range");
    }

    #[test]
    fn extend() {
        assert_eq!(
            parse_line("Q.EXTEND jobs 5 30000"),
            Ok(Action::Write {
                cmd: Command::Extend { queue: "jobs".into(), receipt: 5, lease: 30_000 },
                shape: ReplyShape::Integer
            })
        );
        assert_eq!(error_of("Q.EXTEND jobs 5"), "ERR wrong number of arguments for 'q.extend' command");
        assert_eq!(error_of("Q.EXTEND jobs 5 -1"), "ERR value is out of range, must be positive");
    }

    #[test]
    fn reads_stats_peek_list() {
        assert_eq!(
            parse_line("Q.STATS jobs"),
            Ok(Action::Read {
                query: Query::QueueStats { name: "jobs".into() },
                shape: ReplyShape::QueueStats
            })
        );
        assert_eq!(
            parse_line("Q.PEEK jobs"),
            Ok(Action::Read {
                query: Query::Peek { queue: "jobs".into(), count: 1 },
                shape: ReplyShape::Messages
            })
        );
        assert_eq!(
            parse_line("Q.PEEK jobs COUNT 20"),
            Ok(Action::Read {
                query: Query::Peek { queue: "jobs".into(), count: 20 },
                shape: ReplyShape::Messages
            })
        );
        assert_eq!(
            parse_line("Q.LIST"),
            Ok(Action::Read { query: Query::ListQueues, shape: ReplyShape::Names })
        );
        assert_eq!(error_of("Q.STATS"), "ERR wrong number of arguments for 'q.stats' command");
        assert_eq!(error_of("Q.STATS a b"), "ERR wrong number of arguments for 'q.stats' command");
        assert_eq!(error_of("Q.PEEK jobs 20"), "ERR syntax error");
        assert_eq!(error_of("Q.LIST x"), "ERR wrong number of arguments for 'q.list' command");
    }

    #[test]
    fn purge_del_redrive() {
        assert_eq!(write_of("Q.PURGE jobs"), Command::PurgeQueue { name: "jobs".into() });
        assert_eq!(
            write_of("Q.DEL jobs"),
            Command::DeleteQueue { name: "jobs".into(), if_unused: false, if_empty: false }
        );
        assert_eq!(
            parse_line("Q.REDRIVE dlq jobs"),
            Ok(Action::Write {
                cmd: Command::Redrive { from: "dlq".into(), to: "jobs".into(), count: u64::MAX },
                shape: ReplyShape::Integer
            })
        );
        assert_eq!(
            write_of("Q.REDRIVE dlq jobs COUNT 50"),
            Command::Redrive { from: "dlq".into(), to: "jobs".into(), count: 50 }
        );
        assert_eq!(error_of("Q.PURGE"), "ERR wrong number of arguments for 'q.purge' command");
        assert_eq!(error_of("Q.DEL a b"), "ERR wrong number of arguments for 'q.del' command");
        assert_eq!(error_of("Q.REDRIVE dlq"), "ERR wrong number of arguments for 'q.redrive' command");
        assert_eq!(error_of("Q.REDRIVE dlq jobs COUNT"), "ERR syntax error");
        assert_eq!(error_of("Q.REDRIVE dlq jobs ALL"), "ERR syntax error");
    }

    #[test]
    fn pushed_id_renders_an_integer() {
        let frame = render(ReplyShape::PushedId, Reply::Pushed { id: 42, duplicate: true }, Protocol::Resp2);
        assert_eq!(encoded(&frame, Protocol::Resp2), bytes(b":42\r\n"));
        let full = CoreError::QueueFull { name: "q".into(), max_len: 2 };
        let frame = render(ReplyShape::PushedId, Reply::Error(full), Protocol::Resp2);
        assert_eq!(encoded(&frame, Protocol::Resp2), bytes(b"-FULL queue 'q' is full (max length 2)\r\n"));
    }

    fn delivery(id: u64, receipt: u64, payload: &'static [u8], deliveries: u32) -> Delivery {
        Delivery {
            id,
            receipt,
            payload: Bytes::from_static(payload),
            properties: Bytes::new(),
            deliveries,
            priority: 0,
            lease: 30_000,
            dead: None,
        }
    }

    #[test]
    fn deliveries_render_as_array_of_arrays() {
        let reply = Reply::Deliveries(vec![delivery(3, 10, b"a", 1), delivery(4, 11, b"bc", 2)]);
        let frame = render(ReplyShape::Deliveries, reply, Protocol::Resp3);
        let expected = b"*2\r\n*4\r\n:3\r\n:10\r\n$1\r\na\r\n:1\r\n*4\r\n:4\r\n:11\r\n$2\r\nbc\r\n:2\r\n";
        assert_eq!(encoded(&frame, Protocol::Resp2), bytes(expected));
        assert_eq!(encoded(&frame, Protocol::Resp3), bytes(expected));
    }

    #[test]
    fn nothing_delivered_renders_a_nil_array() {
        for reply in [Reply::Nil, Reply::Deliveries(vec![])] {
            let frame = render(ReplyShape::Deliveries, reply, Protocol::Resp2);
            assert_eq!(encoded(&frame, Protocol::Resp2), bytes(b"*-1\r\n"));
            assert_eq!(encoded(&frame, Protocol::Resp3), bytes(b"_\r\n"));
        }
    }

    #[test]
    fn extend_lost_renders_lost() {
        let frame = render(
            ReplyShape::Integer,
            Reply::Error(CoreError::LostDelivery { receipt: 8 }),
            Protocol::Resp2,
        );
        assert_eq!(encoded(&frame, Protocol::Resp2), bytes(b"-LOST delivery 8 is no longer held\r\n"));
    }

    fn stats() -> QueueStats {
        QueueStats {
            ready: 1,
            delayed: 2,
            in_flight: 3,
            dead: 4,
            consumers: 5,
            waiting_pops: 6,
            oldest_ready_age: 7,
            payload_bytes: 8,
            totals: QueueTotals {
                pushed: 9,
                deduplicated: 10,
                dead_letters_in: 11,
                redriven_in: 12,
                delivered: 13,
                returned: 14,
                acked: 15,
                expired: 16,
                purged: 17,
                dropped: 18,
                dead_lettered: 19,
                discarded: 20,
                redriven_out: 21,
            },
        }
    }

    const STATS_BODY: &[u8] = b"$5\r\nready\r\n:1\r\n$7\r\ndelayed\r\n:2\r\n$9\r\nin-flight\r\n:3\r\n\
        $4\r\ndead\r\n:4\r\n$9\r\nconsumers\r\n:5\r\n$12\r\nwaiting-pops\r\n:6\r\n\
        $19\r\noldest-ready-age-ms\r\n:7\r\n$13\r\npayload-bytes\r\n:8\r\n\
        $6\r\npushed\r\n:9\r\n$12\r\ndeduplicated\r\n:10\r\n$15\r\ndead-letters-in\r\n:11\r\n\
        $11\r\nredriven-in\r\n:12\r\n$9\r\ndelivered\r\n:13\r\n$8\r\nreturned\r\n:14\r\n\
        $5\r\nacked\r\n:15\r\n$7\r\nexpired\r\n:16\r\n$6\r\npurged\r\n:17\r\n$7\r\ndropped\r\n:18\r\n\
        $13\r\ndead-lettered\r\n:19\r\n$9\r\ndiscarded\r\n:20\r\n$12\r\nredriven-out\r\n:21\r\n";

    #[test]
    fn stats_render_as_a_map_in_resp3() {
        let frame = render(ReplyShape::QueueStats, Reply::QueueStats(stats()), Protocol::Resp3);
        assert_eq!(encoded(&frame, Protocol::Resp3), bytes(&[&b"%21\r\n"[..], STATS_BODY].concat()));
    }

    #[test]
    fn stats_render_as_a_flat_array_in_resp2() {
        let frame = render(ReplyShape::QueueStats, Reply::QueueStats(stats()), Protocol::Resp2);
        assert_eq!(encoded(&frame, Protocol::Resp2), bytes(&[&b"*42\r\n"[..], STATS_BODY].concat()));
    }

    #[test]
    fn stats_of_a_missing_queue_is_the_core_error() {
        let frame =
            render(ReplyShape::QueueStats, Reply::Error(CoreError::NoSuchQueue("q".into())), Protocol::Resp2);
        assert_eq!(encoded(&frame, Protocol::Resp2), bytes(b"-ERR no such queue 'q'\r\n"));
    }

    #[test]
    fn peek_renders_message_views() {
        let view = MessageView {
            id: 5,
            payload: Bytes::from_static(b"hi"),
            priority: 3,
            deliveries: 2,
            age: 1500,
            group: None,
            dead: None,
        };
        let frame = render(ReplyShape::Messages, Reply::Messages(vec![view]), Protocol::Resp2);
        assert_eq!(
            encoded(&frame, Protocol::Resp2),
            bytes(b"*1\r\n*5\r\n:5\r\n$2\r\nhi\r\n:2\r\n:3\r\n:1500\r\n")
        );
        let frame = render(ReplyShape::Messages, Reply::Messages(vec![]), Protocol::Resp2);
        assert_eq!(encoded(&frame, Protocol::Resp2), bytes(b"*0\r\n"));
    }
}
