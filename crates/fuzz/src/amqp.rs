//! The AMQP frame decoder, the method and property decoders under it, content assembly, the
//! stored-properties format and queue arguments.

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::basic::{self, AMQPProperties};
use amq_protocol::types::generation::gen_field_table;
use bytes::{Bytes, BytesMut};
use turnstile_amqp::content::Incoming;
use turnstile_amqp::frame::{field_table, properties_bytes};
use turnstile_amqp::{
    AMQPClass, FieldTable, Frame, FrameError, args::QueueArgs, decode, props, queue, write_method,
};
use turnstile_core::{Command, State};

/// The largest frame the server negotiates, and the smallest every peer must take.
const FRAME_MAXES: [u32; 2] = [131_072, turnstile_amqp::frame::FRAME_MIN_SIZE];

/// AMQP frames from arbitrary bytes; the first byte picks the split point and `frame_max`.
///
/// Asserts: the frames and the error are the same however the bytes are split; a decoded
/// method, properties or field table encodes to bytes that decode and encode to the same bytes
/// again; a method frame written again decodes to the same method; content assembly keeps the
/// body size its header gave; stored properties read back as written, and a dead letter's
/// properties still parse; queue arguments the parser accepts make a configuration the core
/// takes and that the same arguments find equivalent.
pub fn amqp_frame(data: &[u8]) {
    let (c, input) = crate::control(data);
    let frame_max = FRAME_MAXES[usize::from(c & 1)];
    let whole = decode_all(&[input], frame_max);
    let cut = crate::split_point(c, input.len());
    let split = decode_all(&[&input[..cut], &input[cut..]], frame_max);
    // Frames hold floats (field tables): compared by their debug text, where NaN equals itself.
    assert_eq!(format!("{whole:?}"), format!("{split:?}"), "the frames depend on the split at {cut}");

    let mut incoming: Incoming<basic::Publish> = Incoming::new(1, 1 << 20);
    for frame in whole.0 {
        match frame {
            Frame::Method { channel, method } => {
                method_round_trip(channel, &method);
                method_arguments(&method);
                let started = match method {
                    AMQPClass::Basic(basic::AMQPMethod::Publish(publish)) => incoming.start(publish),
                    _ => incoming.check_method(),
                };
                if started.is_err() {
                    incoming.abort();
                }
            }
            Frame::Header { class_id, body_size, properties, raw_properties, .. } => {
                properties_round_trip(&properties, &raw_properties);
                stored(&raw_properties);
                match incoming.header(class_id, body_size, raw_properties) {
                    Ok(Some(message)) => assert!(message.body.is_empty() && body_size == 0),
                    Ok(None) => {}
                    Err(_) => incoming.abort(),
                }
            }
            Frame::Body { data, .. } => {
                table_round_trip(&data);
                match incoming.body(&data) {
                    Ok(Some(message)) => assert!(!message.body.is_empty()),
                    Ok(None) => {}
                    Err(_) => incoming.abort(),
                }
            }
            Frame::Heartbeat { .. } => {}
        }
    }
}

type Decoded = (Vec<Frame>, Option<FrameError>);

fn decode_all(reads: &[&[u8]], frame_max: u32) -> Decoded {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            match decode(&mut buf, frame_max) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

/// Writes the method in a frame and decodes it: the same method (by its bytes), whose bytes
/// are stable from then on.
fn method_round_trip(channel: u16, method: &AMQPClass) {
    let mut once = BytesMut::new();
    write_method(&mut once, channel, method);
    let again = match decode(&mut once.clone(), 0) {
        Ok(Some(Frame::Method { channel: c, method })) if c == channel => method,
        other => panic!("{method:?} written as {once:?} decodes as {other:?}"),
    };
    let mut twice = BytesMut::new();
    write_method(&mut twice, channel, &again);
    assert_eq!(once, twice, "{method:?} changes when written and decoded again");
}

fn properties_round_trip(properties: &AMQPProperties, raw: &[u8]) {
    let once = properties_bytes(properties);
    let again = match basic::parse_properties(&once[..]) {
        Ok(([], again)) => again,
        other => panic!("properties {raw:?} written as {once:?} do not parse back: {other:?}"),
    };
    assert_eq!(once, properties_bytes(&again), "properties change when written and parsed again");
}

fn table_round_trip(bytes: &[u8]) {
    let Some(table) = field_table(bytes) else { return };
    let once = table_bytes(&table);
    let again = field_table(&once).unwrap_or_else(|| panic!("table {once:?} does not parse back"));
    assert_eq!(once, table_bytes(&again), "a field table changes when written and parsed again");
}

fn table_bytes(table: &FieldTable) -> Vec<u8> {
    gen_field_table(table)(WriteContext::from(Vec::new())).expect("writing to a Vec cannot fail").write
}

/// A message's properties as the server stores them, and as it rewrites them for a dead letter.
fn stored(raw: &Bytes) {
    let bytes = props::encode("exchange", "key", raw);
    let read = props::Stored::of(&bytes, "queue");
    assert_eq!((read.exchange, read.routing_key, read.raw_properties), ("exchange", "key", &raw[..]));
    let dead = props::with_death(&read, "rejected", "queue").expect("properties that decoded parse again");
    assert!(
        matches!(basic::parse_properties(&dead[..]), Ok(([], _))),
        "a dead letter's properties do not parse"
    );
    // Whatever is stored, reading it gives something: a RESP push stores no properties.
    let _ = props::Stored::of(raw, "queue");
}

/// A declare's arguments, as the server turns them into a queue's configuration.
fn method_arguments(method: &AMQPClass) {
    let AMQPClass::Queue(queue::AMQPMethod::Declare(declare)) = method else { return };
    let name = declare.queue.as_str();
    let Ok(args) = QueueArgs::parse(name, &declare.arguments) else { return };
    let config = args.config(None, declare.auto_delete);
    if let Err(e) = args.check_equivalent(name, &config) {
        panic!("{args:?} is not equivalent to the configuration it made, {config:?}: {}", e.reply_text());
    }
    let mut state = State::new();
    let name = if name.is_empty() { "q" } else { name };
    crate::apply_checked(&mut state, 1, Command::CreateQueue { name: name.to_owned(), config });
}
