//! Writes the seed corpora in `fuzz/corpus/<target>/`: real inputs made by the code itself
//! (RESP requests, AMQP frames from the encoder, API bodies, a journal segment the journal wrote,
//! snapshots and a backup of a busy state). Run from the repository root after a format change:
//!
//! ```text
//! cargo run -p turnstile-fuzz --example seeds
//! ```
//! Each file is named by what it holds; the first byte of each is the target's control byte
//! (see each target's docs).

use std::path::{Path, PathBuf};

use amq_protocol::protocol::{basic, channel, connection, exchange, queue};
use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::{Bytes, BytesMut};
use turnstile_amqp::AMQPClass;
use turnstile_amqp::content::write_content;
use turnstile_amqp::frame::properties_bytes;
use turnstile_core::{
    Acquire, Binding, Command, Consume, ExchangeDecl, ExchangeKind, HostId, Mode, Pop, Push, QueueConfig,
    SetExpiry, SetKey, State,
};
use turnstile_resp::{Frame, Protocol};
use turnstile_storage::{BackupHeader, BackupWriter, FsyncPolicy, Journal, Options, Record};

fn main() -> std::io::Result<()> {
    let root = PathBuf::from("fuzz/corpus");
    resp(&root.join("resp_request"))?;
    amqp(&root.join("amqp_frame"))?;
    http(&root.join("http_json"))?;
    journal(&root.join("journal_record"))?;
    snapshot(&root.join("snapshot_restore"))?;
    state(&root.join("state_apply"))?;
    Ok(())
}

fn write(dir: &Path, name: &str, control: u8, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut file = vec![control];
    file.extend_from_slice(bytes);
    std::fs::write(dir.join(name), file)
}

fn multibulk(args: &[&str]) -> BytesMut {
    let mut out = BytesMut::new();
    Frame::Array(args.iter().map(|a| Frame::bulk(Bytes::copy_from_slice(a.as_bytes()))).collect())
        .encode(Protocol::Resp2, &mut out);
    out
}

fn resp(dir: &Path) -> std::io::Result<()> {
    let commands: &[(&str, &[&str])] = &[
        ("lock_acquire", &["LOCK.ACQUIRE", "l", "30000", "WAIT", "100", "OWNER", "o", "KEEP"]),
        ("lock_release", &["LOCK.RELEASE", "l", "1"]),
        ("lock_renew", &["LOCK.RENEW", "l", "1", "5000"]),
        ("fence_check", &["FENCE.CHECK", "l", "1"]),
        ("sem_acquire", &["SEM.ACQUIRE", "s", "3", "1000", "COUNT", "2"]),
        ("q_create", &["Q.CREATE", "q", "MAXLEN", "2", "OVERFLOW", "DROP-HEAD", "DLQ", "d", "LEASE", "100"]),
        ("q_push", &["Q.PUSH", "q", "hello", "DELAY", "5", "PRIORITY", "3", "GROUP", "g", "FENCE", "l", "1"]),
        ("q_pop", &["Q.POP", "q", "COUNT", "2", "LEASE", "1000"]),
        ("q_ack", &["Q.ACK", "q", "2", "3"]),
        ("q_nack", &["Q.NACK", "q", "2", "DELAY", "10", "DEAD"]),
        ("q_redrive", &["Q.REDRIVE", "d", "q", "COUNT", "1"]),
        ("set", &["SET", "k", "v", "NX", "GET", "PX", "100"]),
        ("expire", &["EXPIRE", "k", "10", "GT"]),
        ("hello", &["HELLO", "3", "AUTH", "u", "p", "SETNAME", "n"]),
        ("command_docs", &["COMMAND", "DOCS", "q.push"]),
    ];
    for (name, args) in commands {
        write(dir, name, 0, &multibulk(args))?;
    }
    let mut pipeline = BytesMut::new();
    for (_, args) in commands.iter().take(8) {
        pipeline.extend_from_slice(&multibulk(args));
    }
    write(dir, "pipeline_split", 128, &pipeline)?;
    write(dir, "inline", 1, b"PING\r\nSET k \"a b\\x41\" PX 10\r\n\r\nGET k\n")?;
    write(dir, "replies", 0, b"*3\r\n:1\r\n%1\r\n+a\r\n,1.5\r\n$-1\r\n")
}

fn amqp(dir: &Path) -> std::io::Result<()> {
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(60_000));
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(10));
    args.insert("x-overflow".into(), AMQPValue::LongString("drop-head".into()));
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
    args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString("dead".into()));
    args.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(5));
    let methods: Vec<(&str, AMQPClass)> = vec![
        (
            "start_ok",
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                mechanism: "PLAIN".into(),
                response: "\0guest\0guest".into(),
                locale: "en_US".into(),
                ..Default::default()
            })),
        ),
        (
            "tune_ok",
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: 16,
                frame_max: 131_072,
                heartbeat: 60,
            })),
        ),
        ("channel_open", AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {}))),
        (
            "queue_declare",
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: "q".into(),
                arguments: args.clone(),
                ..Default::default()
            })),
        ),
        (
            "exchange_declare",
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                exchange: "x".into(),
                kind: "topic".into(),
                ..Default::default()
            })),
        ),
        (
            "queue_bind",
            AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                queue: "q".into(),
                exchange: "x".into(),
                routing_key: "a.*".into(),
                ..Default::default()
            })),
        ),
        (
            "basic_qos",
            AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos { prefetch_count: 10, global: true })),
        ),
        (
            "basic_consume",
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: "q".into(),
                consumer_tag: "c".into(),
                ..Default::default()
            })),
        ),
        (
            "basic_ack",
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack { delivery_tag: 3, multiple: true })),
        ),
        (
            "basic_nack",
            AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                delivery_tag: 4,
                multiple: false,
                requeue: true,
            })),
        ),
    ];
    for (name, method) in &methods {
        let mut out = BytesMut::new();
        turnstile_amqp::write_method(&mut out, 1, method);
        write(dir, name, 0, &out)?;
    }
    let mut headers = FieldTable::default();
    headers.insert("h".into(), AMQPValue::FieldTable(args.clone()));
    let properties = basic::AMQPProperties::default()
        .with_content_type("text/plain".into())
        .with_delivery_mode(2)
        .with_priority(4)
        .with_headers(headers);
    let publish = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
        exchange: "x".into(),
        routing_key: "a.b".into(),
        ..Default::default()
    }));
    let mut out = BytesMut::new();
    write_content(&mut out, 1, &publish, &properties_bytes(&properties), &[7u8; 5000], 4096);
    write(dir, "publish_split_body", 200, &out)?;
    // A field table as a body, for the field-table decoder.
    let mut table = BytesMut::new();
    turnstile_amqp::frame::write_body(&mut table, 1, &amqp_table(&args));
    write(dir, "field_table_body", 1, &table)
}

fn amqp_table(table: &FieldTable) -> Vec<u8> {
    amq_protocol::types::generation::gen_field_table(table)(amq_protocol::frame::WriteContext::from(
        Vec::new(),
    ))
    .expect("writing to a Vec")
    .write
}

fn http(dir: &Path) -> std::io::Result<()> {
    let bodies: &[(&str, &str)] = &[
        ("lock_acquire", r#"{"ttl_ms": 30000, "wait_ms": 100, "owner": "o", "shared": true}"#),
        ("lock_renew", r#"{"token": 1, "ttl_ms": 5000}"#),
        ("lock_release", r#"{"token": 1}"#),
        ("semaphore_acquire", r#"{"ttl_ms": 1000, "limit": 3, "count": 2}"#),
        ("semaphore_renew", r#"{"token": 1, "ttl_ms": 10}"#),
        ("semaphore_release", r#"{"token": 1}"#),
        (
            "queue_create",
            r#"{"max_len": 2, "overflow": "drop-head", "max_deliveries": 3, "dead_letter": "d", "lease_ms": 100, "ttl_ms": 1000, "dedup_window_ms": 50}"#,
        ),
        (
            "queue_push",
            r#"{"payload": "h\u00e9llo", "delay_ms": 5, "priority": 9, "dedup": "d", "ttl_ms": 10, "group": "g", "fence": {"lock": "n", "token": 1}}"#,
        ),
        ("queue_pop", r#"{"count": 2, "wait_ms": 0, "lease_ms": 100}"#),
        ("queue_ack", r#"{"receipts": [2, 3], "fence": {"lock": "n", "token": 1}}"#),
        ("queue_nack", r#"{"receipt": 2, "delay_ms": 10, "dead": true}"#),
        ("queue_extend", r#"{"receipt": 2, "lease_ms": 1000}"#),
        ("queue_redrive", r#"{"target": "n", "count": 1}"#),
    ];
    for (operation, body) in bodies {
        let at = turnstile_server::BODY_OPERATIONS.iter().position(|o| o == operation).expect("a body route");
        write(dir, operation, u8::try_from(at).expect("few routes"), body.as_bytes())?;
    }
    Ok(())
}

fn journal(dir: &Path) -> std::io::Result<()> {
    let scratch = tempfile::tempdir()?;
    let (journal, _) =
        Journal::open(scratch.path(), Options { fsync: FsyncPolicy::Never, ..Options::default() })
            .map_err(std::io::Error::other)?;
    let records = vec![
        Record::Vote(b"vote-1".to_vec()),
        Record::Entry { index: 1, data: Bytes::from_static(b"first") },
        Record::Entry { index: 2, data: Bytes::from_static(b"second") },
        Record::Committed(b"c-2".to_vec()),
        Record::TruncateAfter(Some(1)),
        Record::Entry { index: 2, data: Bytes::from_static(b"again") },
        Record::Purge(1),
    ];
    for record in records {
        journal.append(vec![record], Box::new(|result| result.expect("appended")));
    }
    journal.close().map_err(std::io::Error::other)?;
    let segment = std::fs::read(scratch.path().join("log").join(format!("{:020}.seg", 1)))?;
    let written = segment.iter().rposition(|&b| b != 0).map_or(0, |at| at + 1);
    write(dir, "segment", 0, &segment[..written])?;
    let mut zero_tail = segment[..written].to_vec();
    zero_tail.extend_from_slice(&[0; 64]);
    write(dir, "segment_zero_tail", 4, &zero_tail)?;
    // Scripts: tag, argument, data (see `journal_record`), damaged by a cut, a flip, a zeroed range.
    let script = [0u8, 0x31, b'a', b'b', b'c', 1, 3, b'v', b'v', b'v', 0, 0x02, 3, 1, 4, 0, 2, 2, b'c', b'c'];
    for (name, control, place) in [("script_cut", 1u8, 200u8), ("script_flip", 2, 90), ("script_zero", 7, 30)]
    {
        let mut input = vec![place];
        input.extend_from_slice(&script);
        write(dir, name, control, &input)?;
    }
    Ok(())
}

/// A state with something of everything: sessions on two hosts, a held lock with a waiter, a
/// semaphore, queues with ready, delayed and in-flight messages, a consumer, keys with TTLs, an
/// exchange with a binding.
fn busy_state() -> State {
    let mut state = State::new();
    let mut apply = |now: u64, cmd: Command| state.apply(state.applied_index() + 1, now, cmd).0;
    let one = match apply(1, Command::OpenSession { host: HostId(1), secret: 5, timeout: 10_000 }) {
        turnstile_core::Reply::Session(s) => s,
        other => panic!("{other:?}"),
    };
    let two = match apply(1, Command::OpenSession { host: HostId(2), secret: 6, timeout: 10_000 }) {
        turnstile_core::Reply::Session(s) => s,
        other => panic!("{other:?}"),
    };
    let acquire = |session, owner: &str, mode, wait| {
        Command::Acquire(Acquire {
            name: "l".into(),
            mode,
            ttl: 30_000,
            wait,
            owner: Some(owner.into()),
            session: Some(session),
            keep: false,
        })
    };
    apply(2, acquire(one, "a", Mode::Exclusive, 0));
    apply(2, acquire(two, "b", Mode::Exclusive, 5_000));
    let semaphore = Command::Acquire(Acquire {
        name: "s".into(),
        mode: Mode::Permits { limit: 3, count: 2 },
        ttl: 1_000,
        wait: 0,
        owner: None,
        session: Some(one),
        keep: true,
    });
    apply(3, semaphore);
    let config =
        QueueConfig { max_deliveries: 2, dead_letter: Some("dead".into()), ..QueueConfig::default() };
    apply(3, Command::CreateQueue { name: "q".into(), config });
    for i in 0..6u8 {
        let push = Push {
            delay: if i == 5 { 10_000 } else { 0 },
            priority: i % 3,
            group: (i % 2 == 0).then(|| "g".to_owned()),
            properties: Bytes::from_static(b"\x01\x00\x01q"),
            ..Push::new("q", vec![b'm', i])
        };
        apply(4, Command::Push(push));
    }
    let pop = Pop {
        queue: "q".into(),
        session: Some(one),
        count: 2,
        wait: 0,
        lease: Some(5_000),
        auto_ack: false,
        keep: false,
    };
    apply(5, Command::Pop(pop));
    let consume = Consume {
        queue: "q".into(),
        session: two,
        credit: 1,
        lease: None,
        auto_ack: false,
        exclusive: false,
        pool: None,
    };
    apply(6, Command::Consume(consume));
    apply(7, Command::Set(SetKey { expiry: SetExpiry::In(60_000), ..SetKey::new("k", "v") }));
    apply(7, Command::IncrBy { key: "n".into(), delta: 3 });
    let decl = ExchangeDecl {
        name: "x".into(),
        kind: ExchangeKind::Topic,
        durable: true,
        auto_delete: false,
        internal: false,
    };
    apply(8, Command::DeclareExchange(decl));
    apply(8, Command::Bind(Binding { exchange: "x".into(), queue: "q".into(), routing_key: "a.#".into() }));
    apply(9, Command::RetireNode { node: 4 });
    state.check_invariants().expect("a consistent state");
    state
}

fn snapshot(dir: &Path) -> std::io::Result<()> {
    let busy = busy_state().snapshot();
    write(dir, "empty_state", 1, &State::new().snapshot())?;
    write(dir, "busy_state", 1, &busy)?;
    let mut backup = Vec::new();
    let header = BackupHeader { index: 42, cluster_id: 7, created_at: 1_700_000_000_000 };
    let mut writer = BackupWriter::new(&mut backup, &header)?;
    std::io::Write::write_all(&mut writer, &busy)?;
    writer.finish()?;
    write(dir, "busy_backup", 0, &backup)
}

fn state(dir: &Path) -> std::io::Result<()> {
    // Pseudo-random bytes: every input is a valid command sequence for the generator.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for (i, len) in [64usize, 256, 1024, 4096].into_iter().enumerate() {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect();
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(format!("random_{i}")), bytes)?;
    }
    Ok(())
}
