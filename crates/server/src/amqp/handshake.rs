//! Opening a connection: protocol header, `Start`/`StartOk` (PLAIN or AMQPLAIN against the
//! configured users), `Tune`/`TuneOk`, `Open` of vhost `/`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turnstile_amqp::frame::{FRAME_MIN_SIZE, write_method};
use turnstile_amqp::{
    AMQPClass, AMQPValue, AmqpError, FieldTable, Frame, PROTOCOL_HEADER, code, connection, decode,
};
use turnstile_tls::MaybeTls;

use super::{CHANNEL_MAX, FRAME_MAX, HEARTBEAT};
use crate::auth::{Identity, Users};

/// RabbitMQ's `handshake_timeout`: a client that has not opened its connection by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the client and server agreed on.
#[derive(Debug)]
pub struct Tuned {
    pub frame_max: u32,
    pub channel_max: u16,
    /// Seconds; 0 = no heartbeats.
    pub heartbeat: u16,
    /// Who logged in.
    pub identity: Identity,
    /// The client shows `Connection.Blocked` / `Unblocked` (capability `connection.blocked`).
    pub blocked_notify: bool,
    /// The client handles a server-sent `Basic.Cancel` (capability `consumer_cancel_notify`).
    pub cancel_notify: bool,
}

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("client sent {0:?} instead of the AMQP 0-9-1 protocol header")]
    BadHeader(Vec<u8>),
    #[error("{0}")]
    Refused(AmqpError),
    #[error("client closed the connection during the handshake")]
    Closed,
}

/// Runs the handshake on `stream` up to the client's `Connection.Open`, which the caller answers:
/// [`accept`] once the connection can serve, or [`refuse_open`] with the reason it cannot
/// (RabbitMQ's way to refuse a connection over a limit: the client learns why at connect, which
/// it could not before `Open`, and has sent nothing else yet). Frames that arrive after `Open`
/// stay in `buf`.
pub async fn handshake(
    stream: &mut MaybeTls,
    buf: &mut BytesMut,
    peer: SocketAddr,
    users: &Users,
    client: &str,
) -> Result<Tuned, HandshakeError> {
    let start_ok = start_ok(stream, buf).await?;
    let capabilities = client_capabilities(&start_ok.client_properties);
    let identity = match authenticate(&start_ok, peer, users, client) {
        Ok(identity) => identity,
        Err(e) => return refuse(stream, e).await,
    };
    let mut out = BytesMut::new();
    let tune = connection::Tune { channel_max: CHANNEL_MAX, frame_max: FRAME_MAX, heartbeat: HEARTBEAT };
    write_method(&mut out, 0, &AMQPClass::Connection(connection::AMQPMethod::Tune(tune)));
    stream.write_all(&out).await?;

    let tune_ok = match next_method(stream, buf).await? {
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(ok)) => ok,
        _ => return refuse(stream, AmqpError::command_invalid("expected 'connection.tune_ok'")).await,
    };
    let frame_max = match tune_ok.frame_max {
        0 => FRAME_MAX,
        n if n < FRAME_MIN_SIZE => {
            let e = AmqpError::new(code::NOT_ALLOWED, format!("frame_max={n} < {FRAME_MIN_SIZE} min size"));
            return refuse(stream, e).await;
        }
        n => n.min(FRAME_MAX),
    };
    let channel_max = match tune_ok.channel_max {
        0 => CHANNEL_MAX,
        n => n.min(CHANNEL_MAX),
    };

    let open = match next_method(stream, buf).await? {
        AMQPClass::Connection(connection::AMQPMethod::Open(open)) => open,
        _ => return refuse(stream, AmqpError::command_invalid("expected 'connection.open'")).await,
    };
    if open.virtual_host.as_str() != "/" {
        let e = AmqpError::new(code::NOT_ALLOWED, format!("vhost '{}' not found", open.virtual_host));
        return refuse(stream, e.on(10, 40)).await;
    }
    Ok(Tuned {
        frame_max,
        channel_max,
        heartbeat: tune_ok.heartbeat,
        identity,
        blocked_notify: capabilities.contains(&"connection.blocked"),
        cancel_notify: capabilities.contains(&"consumer_cancel_notify"),
    })
}

/// The protocol header, the server's `Start`, and the client's `StartOk` with its credentials.
async fn start_ok(stream: &mut MaybeTls, buf: &mut BytesMut) -> Result<connection::StartOk, HandshakeError> {
    while buf.len() < PROTOCOL_HEADER.len() {
        if stream.read_buf(buf).await? == 0 {
            return Err(HandshakeError::Closed);
        }
        if !PROTOCOL_HEADER.starts_with(&buf[..buf.len().min(PROTOCOL_HEADER.len())]) {
            break;
        }
    }
    if &buf[..PROTOCOL_HEADER.len().min(buf.len())] != PROTOCOL_HEADER {
        // The spec's answer to a header it does not speak: its own header, then close.
        stream.write_all(PROTOCOL_HEADER).await?;
        return Err(HandshakeError::BadHeader(buf[..buf.len().min(8)].to_vec()));
    }
    let _ = buf.split_to(PROTOCOL_HEADER.len());

    let mut out = BytesMut::new();
    write_method(&mut out, 0, &AMQPClass::Connection(connection::AMQPMethod::Start(start())));
    stream.write_all(&out).await?;

    match next_method(stream, buf).await? {
        AMQPClass::Connection(connection::AMQPMethod::StartOk(ok)) => Ok(ok),
        _ => refuse(stream, AmqpError::command_invalid("expected 'connection.start_ok'")).await,
    }
}

/// Refuses a connection at its login, whatever it logs in as, with `e` (protected mode): the
/// client learns why where a refused login would tell it.
pub async fn deny(stream: &mut MaybeTls, buf: &mut BytesMut, e: AmqpError) -> Result<(), HandshakeError> {
    start_ok(stream, buf).await?;
    refuse(stream, e.on(10, 11)).await
}

/// Answers the client's `Connection.Open`: the connection is open.
pub async fn accept(stream: &mut MaybeTls) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    write_method(&mut out, 0, &AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})));
    stream.write_all(&out).await
}

/// Answers the client's `Connection.Open` with `Connection.Close` carrying `e`, then waits for
/// the client's `CloseOk` (or for it to go), so the close reaches it before the socket is closed.
/// The caller bounds the wait.
pub async fn refuse_open(stream: &mut MaybeTls, e: AmqpError) -> std::io::Result<()> {
    if let Err(HandshakeError::Io(e)) = refuse::<()>(stream, e.on(10, 40)).await {
        return Err(e);
    }
    let mut rest = [0u8; 512];
    while stream.read(&mut rest).await? > 0 {}
    Ok(())
}

/// The server's `Connection.Start`: the capabilities clients check before using an extension.
fn start() -> connection::Start {
    let mut capabilities = FieldTable::default();
    for (name, on) in [
        ("publisher_confirms", true),
        ("exchange_exchange_bindings", false),
        ("basic.nack", true),
        ("consumer_cancel_notify", true),
        ("connection.blocked", true),
        ("consumer_priorities", false),
        ("authentication_failure_close", true),
        ("per_consumer_qos", true),
        ("direct_reply_to", false),
    ] {
        capabilities.insert(name.into(), AMQPValue::Boolean(on));
    }
    let mut props = FieldTable::default();
    props.insert("capabilities".into(), AMQPValue::FieldTable(capabilities));
    props.insert("product".into(), AMQPValue::LongString("Turnstile".into()));
    props.insert("version".into(), AMQPValue::LongString(env!("CARGO_PKG_VERSION").into()));
    props.insert("platform".into(), AMQPValue::LongString("Rust".into()));
    props.insert("cluster_name".into(), AMQPValue::LongString("turnstile".into()));
    props.insert(
        "information".into(),
        AMQPValue::LongString("Turnstile: locks and queues in one replicated state machine".into()),
    );
    connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: props,
        mechanisms: "PLAIN AMQPLAIN".into(),
        locales: "en_US".into(),
    }
}

fn client_capabilities(props: &FieldTable) -> Vec<&'static str> {
    let Some(AMQPValue::FieldTable(caps)) = props.inner().get("capabilities") else {
        return Vec::new();
    };
    ["connection.blocked", "consumer_cancel_notify"]
        .into_iter()
        .filter(|name| matches!(caps.inner().get(*name), Some(AMQPValue::Boolean(true))))
        .collect()
}

/// Checks the credentials in `StartOk` against the user table (the same users as every other
/// protocol; `[amqp-users]` among them); who logged in on success. A refusal has RabbitMQ's
/// words, which say nothing of why (the log and `ACL LOG` do), and is recorded in `ACL LOG`.
fn authenticate(
    ok: &connection::StartOk,
    peer: SocketAddr,
    users: &Users,
    client: &str,
) -> Result<Identity, AmqpError> {
    let mechanism = ok.mechanism.as_str();
    let refused = || {
        AmqpError::access_refused(format!(
            "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
        ))
        .on(10, 11)
    };
    let (user, password) = match mechanism {
        "PLAIN" => {
            // authzid \0 authcid \0 password
            let mut parts = ok.response.as_bytes().splitn(3, |b| *b == 0);
            let (_, user, password) = (parts.next(), parts.next(), parts.next());
            match (user, password) {
                (Some(u), Some(p)) => (String::from_utf8_lossy(u).into_owned(), p.to_vec()),
                _ => return Err(refused()),
            }
        }
        "AMQPLAIN" => {
            // A field table without its length prefix.
            let raw = ok.response.as_bytes();
            let mut with_len = u32::try_from(raw.len()).map_err(|_| refused())?.to_be_bytes().to_vec();
            with_len.extend_from_slice(raw);
            let table = match turnstile_amqp::frame::field_table(&with_len) {
                Some(t) => t,
                None => return Err(refused()),
            };
            let text = |key: &str| match table.inner().get(key) {
                Some(AMQPValue::LongString(s)) => Some(s.as_bytes().to_vec()),
                Some(AMQPValue::ShortString(s)) => Some(s.as_str().as_bytes().to_vec()),
                _ => None,
            };
            match (text("LOGIN"), text("PASSWORD")) {
                (Some(u), Some(p)) => (String::from_utf8_lossy(&u).into_owned(), p),
                _ => return Err(refused()),
            }
        }
        other => {
            return Err(AmqpError::access_refused(format!(
                "unsupported authentication mechanism '{other}'; this server offers PLAIN and AMQPLAIN"
            ))
            .on(10, 11));
        }
    };
    let refuse = |why: &str| {
        tracing::info!(%peer, %user, "amqp login refused: {why}");
        users.log.record("auth", "amqp", &user, &user, client);
        Err(refused())
    };
    let identity = match users.authenticate(&user, &password) {
        Ok(identity) => identity,
        Err(_) => return refuse("bad credentials"),
    };
    // With authentication off the `default` user needs no password; an AMQP login always names
    // a user with one, as before there was a user table.
    if !users.required() && identity.user().nopass {
        return refuse("user has no password and authentication is off");
    }
    if user == "guest" && !peer.ip().to_canonical().is_loopback() {
        return refuse("user 'guest' may only connect from localhost");
    }
    Ok(identity)
}

/// Reads the next method on channel 0 (heartbeats skipped).
async fn next_method(stream: &mut MaybeTls, buf: &mut BytesMut) -> Result<AMQPClass, HandshakeError> {
    loop {
        match decode(buf, FRAME_MAX) {
            Ok(Some(Frame::Method { channel: 0, method })) => return Ok(method),
            Ok(Some(Frame::Heartbeat { .. })) => continue,
            Ok(Some(_)) => {
                return Err(HandshakeError::Refused(AmqpError::unexpected_frame(
                    "expected a method on channel 0",
                )));
            }
            Err(e) => return Err(HandshakeError::Refused(AmqpError::from(&e))),
            Ok(None) => {
                if stream.read_buf(buf).await? == 0 {
                    return Err(HandshakeError::Closed);
                }
            }
        }
    }
}

/// Sends `Connection.Close` with the error and gives up on the connection.
async fn refuse<T>(stream: &mut MaybeTls, e: AmqpError) -> Result<T, HandshakeError> {
    let mut out = BytesMut::new();
    let close = connection::Close {
        reply_code: e.code,
        reply_text: e.reply_text().into(),
        class_id: e.class_id,
        method_id: e.method_id,
    };
    write_method(&mut out, 0, &AMQPClass::Connection(connection::AMQPMethod::Close(close)));
    stream.write_all(&out).await?;
    Err(HandshakeError::Refused(e))
}
