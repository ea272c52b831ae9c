//! AMQP 0-9-1 with the real binary: `lapin` as the client, hand-built frames on a raw socket for
//! what no client library sends, RESP (`redis` crate) for the queues both protocols share, and
//! Python's `pika` as a newcomer would use it.
//!
//! The expectations are RabbitMQ's (3.x): each test was checked against a RabbitMQ broker. To
//! check them again, set `TURNSTILE_AMQP_REFERENCE=HOST:PORT` (guest/guest, vhost "/"): the tests
//! then talk to that broker instead of starting Turnstile, with names made unique per run, and
//! skip the RESP parts.

mod common;

use std::future::Future;
use std::io::{ErrorKind as IoErrorKind, Read, Write};
use std::net::TcpStream;
use std::pin::Pin;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{TestServer, peers_required};
use lapin::message::{Delivery, DeliveryResult};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ConsumerDelegate, ErrorKind,
    ExchangeKind, Queue,
};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Bound on any single wait for the broker (a reply, a delivery, a connection).
const WAIT: Duration = Duration::from_secs(10);
/// Polling a state that follows a reply-less AMQP method: at most `POLLS` looks, `POLL` apart.
const POLL: Duration = Duration::from_millis(20);
const POLLS: u32 = 500;
/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// The broker under test and lapin helpers
// ---------------------------------------------------------------------------------------------

struct Broker {
    /// The Turnstile server, or `None` with a reference broker.
    server: Option<TestServer>,
    /// HOST:PORT of the AMQP listener.
    addr: String,
    /// Appended to every queue and exchange name (empty for a fresh Turnstile).
    suffix: String,
}

impl Broker {
    fn start() -> Broker {
        static RUN: AtomicU32 = AtomicU32::new(0);
        match std::env::var("TURNSTILE_AMQP_REFERENCE") {
            Ok(addr) => {
                let nanos =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
                let suffix = format!("-{}-{}", nanos % 1_000_000_000, RUN.fetch_add(1, Ordering::Relaxed));
                Broker { server: None, addr, suffix }
            }
            Err(_) => {
                let server = TestServer::start();
                let addr = server.amqp_addr.clone();
                Broker { server: Some(server), addr, suffix: String::new() }
            }
        }
    }

    /// A queue or exchange name for this test run.
    fn name(&self, base: &str) -> String {
        format!("{base}{}", self.suffix)
    }

    fn url(&self, query: &str) -> String {
        format!("amqp://guest:guest@{}/%2f{query}", self.addr)
    }

    async fn connect(&self) -> Connection {
        self.connect_query("").await
    }

    /// Connects with URI query parameters such as `?frame_max=4096`.
    async fn connect_query(&self, query: &str) -> Connection {
        let url = self.url(query);
        let connect = Connection::connect(&url, ConnectionProperties::default());
        timeout(WAIT, connect).await.expect("AMQP connect timed out").expect("AMQP connect")
    }

    /// A RESP client, or `None` (with a notice) against a reference broker.
    fn resp(&self) -> Option<redis::Connection> {
        match &self.server {
            Some(server) => Some(server.client()),
            None => {
                eprintln!("reference broker: RESP part skipped");
                None
            }
        }
    }
}

async fn channel(conn: &Connection) -> Channel {
    timeout(WAIT, conn.create_channel()).await.expect("channel.open timed out").expect("channel.open")
}

/// A channel in confirm mode.
async fn confirm_channel(conn: &Connection) -> Channel {
    let ch = channel(conn).await;
    within(ch.confirm_select(ConfirmSelectOptions::default())).await.expect("confirm.select");
    ch
}

/// Awaits `fut`, panicking if it takes longer than [`WAIT`].
async fn within<T>(fut: impl Future<Output = T>) -> T {
    timeout(WAIT, fut).await.expect("no reply from the broker within the bound")
}

/// The AMQP reply code an error carries (404, 406, ...), if it is a protocol error.
fn code(error: &lapin::Error) -> Option<u16> {
    match error.kind() {
        ErrorKind::ProtocolError(e) => Some(e.get_id()),
        _ => None,
    }
}

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (key, value) in pairs {
        t.insert((*key).into(), value.clone());
    }
    t
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

fn int(n: i32) -> AMQPValue {
    AMQPValue::LongInt(n)
}

/// Declares a durable queue.
async fn declare(ch: &Channel, name: &str, args: FieldTable) -> Queue {
    within(ch.queue_declare(name.into(), QueueDeclareOptions::durable(), args)).await.expect("queue.declare")
}

/// Ready messages in a queue, by a passive declare.
async fn ready_count(ch: &Channel, name: &str) -> u32 {
    let opts = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    within(ch.queue_declare(name.into(), opts, FieldTable::default()))
        .await
        .expect("passive declare")
        .message_count()
}

/// Publishes and returns the broker's confirmation (`NotRequested` outside confirm mode).
async fn publish_to(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
    mandatory: bool,
) -> Confirmation {
    let opts = BasicPublishOptions { mandatory, ..BasicPublishOptions::default() };
    let confirm =
        within(ch.basic_publish(exchange.into(), key.into(), opts, body, props)).await.expect("publish");
    within(confirm).await.expect("publisher confirm")
}

/// Publishes through the default exchange; in confirm mode, asserts an ack.
async fn publish(ch: &Channel, queue: &str, body: &[u8]) {
    let confirmation = publish_to(ch, "", queue, body, BasicProperties::default(), false).await;
    assert!(!confirmation.is_nack(), "publish of {:?} to {queue} was nacked", String::from_utf8_lossy(body));
}

async fn get(ch: &Channel, queue: &str, no_ack: bool) -> Option<Delivery> {
    within(ch.basic_get(queue.into(), BasicGetOptions { no_ack }))
        .await
        .expect("basic.get")
        .map(|m| m.delivery)
}

fn text(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.data).into_owned()
}

/// Forwards every delivery (and the cancel / error that ends a consumer) into a channel, in the
/// order lapin hands them over (it calls `on_new_delivery` synchronously, in order).
struct Forward(mpsc::UnboundedSender<DeliveryResult>);

impl ConsumerDelegate for Forward {
    fn on_new_delivery(&self, delivery: DeliveryResult) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let _ = self.0.send(delivery);
        Box::pin(std::future::ready(()))
    }
}

/// A consumer whose deliveries are read one at a time, each wait bounded.
struct Sub {
    rx: mpsc::UnboundedReceiver<DeliveryResult>,
}

async fn try_consume(ch: &Channel, queue: &str, tag: &str, opts: BasicConsumeOptions) -> lapin::Result<Sub> {
    try_consume_args(ch, queue, tag, opts, FieldTable::default()).await
}

async fn try_consume_args(
    ch: &Channel,
    queue: &str,
    tag: &str,
    opts: BasicConsumeOptions,
    args: FieldTable,
) -> lapin::Result<Sub> {
    let consumer = within(ch.basic_consume(queue.into(), tag.into(), opts, args)).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    consumer.set_delegate(Forward(tx));
    Ok(Sub { rx })
}

async fn consume(ch: &Channel, queue: &str, tag: &str) -> Sub {
    try_consume(ch, queue, tag, BasicConsumeOptions::default()).await.expect("basic.consume")
}

/// What a consumer saw next.
#[derive(Debug)]
enum Seen {
    Delivery(Box<Delivery>),
    /// The consumer ended (cancelled by either side, or its channel closed).
    Ended,
    Error(lapin::Error),
    /// Nothing within the wait.
    Nothing,
}

impl Sub {
    async fn event(&mut self, wait: Duration) -> Seen {
        match timeout(wait, self.rx.recv()).await {
            Err(_) => Seen::Nothing,
            Ok(None) | Ok(Some(Ok(None))) => Seen::Ended,
            Ok(Some(Ok(Some(d)))) => Seen::Delivery(Box::new(d)),
            Ok(Some(Err(e))) => Seen::Error(e),
        }
    }

    /// The next delivery; panics on anything else.
    async fn next(&mut self) -> Delivery {
        match self.event(WAIT).await {
            Seen::Delivery(d) => *d,
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    /// Asserts that nothing arrives for a short while.
    async fn assert_quiet(&mut self, why: &str) {
        match self.event(QUIET).await {
            Seen::Nothing => {}
            other => panic!("{why}: expected nothing, got {other:?}"),
        }
    }
}

async fn ack(d: &Delivery) {
    assert!(within(d.ack(BasicAckOptions::default())).await.expect("basic.ack"), "ack not sent");
}

// ---------------------------------------------------------------------------------------------
// Basics
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_publish_consume_and_ack() {
    let b = Broker::start();
    let q = b.name("basics");
    let conn = b.connect().await;
    let ch = channel(&conn).await;
    let declared = declare(&ch, &q, FieldTable::default()).await;
    assert_eq!(declared.name().as_str(), q);
    assert_eq!((declared.message_count(), declared.consumer_count()), (0, 0));
    for i in 0..3 {
        publish(&ch, &q, format!("m{i}").as_bytes()).await;
    }
    let mut sub = consume(&ch, &q, "c1").await;
    for i in 0..3 {
        let d = sub.next().await;
        assert_eq!(text(&d), format!("m{i}"));
        assert_eq!((d.exchange.as_str(), d.routing_key.as_str(), d.redelivered), ("", q.as_str(), false));
        ack(&d).await;
    }
    sub.assert_quiet("three published, three delivered").await;
    // Acked messages are gone for good: a second connection sees an empty queue.
    drop(sub);
    within(conn.close(200, "bye".into())).await.expect("connection.close");
    let conn2 = b.connect().await;
    let ch2 = channel(&conn2).await;
    let again = declare(&ch2, &q, FieldTable::default()).await;
    assert_eq!((again.message_count(), again.consumer_count()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_confirms_ack_every_publish_and_nack_a_refused_one() {
    let b = Broker::start();
    let q = b.name("confirmed");
    let full = b.name("full");
    let conn = b.connect().await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, &q, FieldTable::default()).await;
    // Twenty publishes in flight at once, then every confirm.
    let mut pending = Vec::new();
    for i in 0..20 {
        let body = format!("c{i}");
        let opts = BasicPublishOptions::default();
        let props = BasicProperties::default().with_delivery_mode(2);
        pending.push(
            within(ch.basic_publish("".into(), q.as_str().into(), opts, body.as_bytes(), props))
                .await
                .unwrap(),
        );
    }
    for (i, confirm) in pending.into_iter().enumerate() {
        let confirmation = within(confirm).await.expect("confirm");
        assert!(confirmation.is_ack(), "publish {i}: {confirmation:?}");
    }
    assert_eq!(ready_count(&ch, &q).await, 20);

    let args = table(&[("x-max-length", int(2)), ("x-overflow", long("reject-publish"))]);
    declare(&ch, &full, args).await;
    for body in ["a", "b"] {
        let confirmation =
            publish_to(&ch, "", &full, body.as_bytes(), BasicProperties::default(), false).await;
        assert!(confirmation.is_ack(), "{body} fits: {confirmation:?}");
    }
    let confirmation = publish_to(&ch, "", &full, b"c", BasicProperties::default(), false).await;
    assert!(
        confirmation.is_nack(),
        "a publish to a full reject-publish queue is nacked, got {confirmation:?}"
    );
    // The channel goes on; the queue kept the first two.
    assert_eq!(ready_count(&ch, &full).await, 2);
    assert_eq!(get(&ch, &full, true).await.map(|d| text(&d)).as_deref(), Some("a"));
    let confirmation = publish_to(&ch, "", &full, b"d", BasicProperties::default(), false).await;
    assert!(confirmation.is_ack(), "room again after a get: {confirmation:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_limits_unacked_deliveries() {
    let b = Broker::start();
    let q = b.name("prefetch");
    let conn = b.connect().await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, &q, FieldTable::default()).await;
    for i in 0..10 {
        publish(&ch, &q, format!("p{i}").as_bytes()).await;
    }
    within(ch.basic_qos(3, BasicQosOptions::default())).await.expect("basic.qos");
    let mut sub = consume(&ch, &q, "slow").await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(sub.next().await);
    }
    sub.assert_quiet("prefetch 3 with 3 unacked").await;
    assert_eq!(ready_count(&ch, &q).await, 7, "seven wait in the queue");
    ack(&got[0]).await;
    let fourth = sub.next().await;
    assert_eq!(text(&fourth), "p3");
    sub.assert_quiet("prefetch 3 with 3 unacked again").await;
    assert_eq!(ready_count(&ch, &q).await, 6);
    // Acking the rest (multiple) opens the window for three more.
    within(ch.basic_ack(fourth.delivery_tag, BasicAckOptions { multiple: true }))
        .await
        .expect("ack multiple");
    let bodies: Vec<String> =
        [sub.next().await, sub.next().await, sub.next().await].iter().map(text).collect();
    assert_eq!(bodies, ["p4", "p5", "p6"]);
    sub.assert_quiet("prefetch 3 after ack multiple").await;
}

// ---------------------------------------------------------------------------------------------
// Redelivery, dead-lettering, TTL, priority
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_requeue_redelivers_and_the_delivery_limit_dead_letters() {
    let b = Broker::start();
    let q = b.name("limited");
    let dlq = b.name("limited-dlq");
    let conn = b.connect().await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, &dlq, FieldTable::default()).await;
    // RabbitMQ honours x-delivery-limit on quorum queues only.
    let args = table(&[
        ("x-queue-type", long("quorum")),
        ("x-delivery-limit", int(2)),
        ("x-dead-letter-exchange", long("")),
        ("x-dead-letter-routing-key", long(&dlq)),
    ]);
    declare(&ch, &q, args).await;
    publish(&ch, &q, b"poison").await;
    let mut sub = consume(&ch, &q, "nacker").await;
    // x-delivery-limit 2: two returns are allowed; the third return dead-letters (three deliveries).
    for attempt in 0..3 {
        let d = sub.next().await;
        assert_eq!(text(&d), "poison");
        assert_eq!(d.redelivered, attempt > 0, "redelivered flag on delivery {}", attempt + 1);
        let opts = BasicNackOptions { multiple: false, requeue: true };
        assert!(within(d.nack(opts)).await.expect("basic.nack"));
    }
    sub.assert_quiet("past the delivery limit").await;
    let mut dead = consume(&ch, &dlq, "dead").await;
    let d = dead.next().await;
    assert_eq!(text(&d), "poison");
    assert_eq!(d.routing_key.as_str(), dlq, "dead-lettered with x-dead-letter-routing-key");
    assert_eq!(first_death(&d), Some(("delivery_limit".to_owned(), q.clone())));
    ack(&d).await;
    assert_eq!(ready_count(&ch, &q).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_are_dead_lettered() {
    let b = Broker::start();
    let dlx = b.name("expired-dlx");
    let dlq = b.name("expired-dlq");
    let ttl_q = b.name("ttl-queue");
    let plain_q = b.name("per-message-ttl");
    let conn = b.connect().await;
    let ch = confirm_channel(&conn).await;
    within(ch.exchange_declare(
        dlx.as_str().into(),
        ExchangeKind::Fanout,
        durable_exchange(),
        FieldTable::default(),
    ))
    .await
    .expect("exchange.declare");
    declare(&ch, &dlq, FieldTable::default()).await;
    within(ch.queue_bind(
        dlq.as_str().into(),
        dlx.as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("queue.bind");
    let args = table(&[("x-message-ttl", int(100)), ("x-dead-letter-exchange", long(&dlx))]);
    declare(&ch, &ttl_q, args).await;
    declare(&ch, &plain_q, table(&[("x-dead-letter-exchange", long(&dlx))])).await;

    publish(&ch, &ttl_q, b"queue-ttl").await;
    let props = BasicProperties::default().with_expiration("100".into());
    let confirmation = publish_to(&ch, "", &plain_q, b"message-ttl", props, false).await;
    assert!(confirmation.is_ack(), "{confirmation:?}");

    let mut dead = consume(&ch, &dlq, "dead").await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let d = dead.next().await;
        assert_eq!(d.exchange.as_str(), dlx, "delivered from the dead-letter exchange");
        got.push((text(&d), first_death(&d)));
    }
    got.sort();
    let expired = |q: &str| Some(("expired".to_owned(), q.to_owned()));
    assert_eq!(
        got,
        [("message-ttl".to_owned(), expired(&plain_q)), ("queue-ttl".to_owned(), expired(&ttl_q))]
    );
    assert_eq!(get(&ch, &ttl_q, true).await.map(|d| text(&d)), None, "expired, not delivered");
    assert_eq!(get(&ch, &plain_q, true).await.map(|d| text(&d)), None, "expired, not delivered");
}

/// Reason and queue of the first `x-death` entry RabbitMQ adds to a dead letter.
fn first_death(d: &Delivery) -> Option<(String, String)> {
    let headers = d.properties.headers().as_ref()?;
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else { return None };
    let Some(AMQPValue::FieldTable(first)) = deaths.as_slice().first() else { return None };
    let field = |key: &str| match first.inner().get(key) {
        Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_owned()),
        _ => None,
    };
    Some((field("reason")?, field("queue")?))
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_queue_delivers_highest_first() {
    let b = Broker::start();
    let q = b.name("prio");
    let conn = b.connect().await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, &q, table(&[("x-max-priority", int(10))])).await;
    for (body, prio) in [("low", 1), ("mid-a", 5), ("high", 9), ("none", 0), ("mid-b", 5), ("three", 3)] {
        let props = BasicProperties::default().with_priority(prio);
        let confirmation = publish_to(&ch, "", &q, body.as_bytes(), props, false).await;
        assert!(confirmation.is_ack(), "{confirmation:?}");
    }
    let mut order = Vec::new();
    while let Some(d) = get(&ch, &q, true).await {
        order.push(text(&d));
    }
    assert_eq!(order, ["high", "mid-a", "mid-b", "three", "low", "none"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_unroutable_publish_is_returned_with_312_and_still_confirmed() {
    let b = Broker::start();
    let ex = b.name("no-bindings");
    let conn = b.connect().await;
    let ch = confirm_channel(&conn).await;
    within(ch.exchange_declare(
        ex.as_str().into(),
        ExchangeKind::Direct,
        durable_exchange(),
        FieldTable::default(),
    ))
    .await
    .expect("exchange.declare");
    let nowhere = b.name("nowhere");
    for exchange in ["", ex.as_str()] {
        let props = BasicProperties::default().with_message_id("m-1".into());
        let confirmation = publish_to(&ch, exchange, &nowhere, b"lost", props, true).await;
        assert!(confirmation.is_ack(), "exchange {exchange:?}: the confirm of a returned message is an ack");
        let returned =
            confirmation.take_message().expect("a Basic.Return for a mandatory unroutable publish");
        assert_eq!(returned.reply_code, 312, "{returned:?}");
        assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
        assert_eq!(returned.delivery.exchange.as_str(), exchange);
        assert_eq!(returned.delivery.routing_key.as_str(), nowhere);
        assert_eq!(returned.delivery.data, b"lost");
        assert_eq!(returned.delivery.properties.message_id().as_ref().map(|s| s.as_str()), Some("m-1"));
    }
    // Not mandatory: silently dropped, acked, nothing returned.
    let confirmation = publish_to(&ch, "", &nowhere, b"dropped", BasicProperties::default(), false).await;
    assert!(confirmation.is_ack());
    assert!(confirmation.take_message().is_none());
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_of_a_missing_queue_is_404_and_closes_only_that_channel() {
    let b = Broker::start();
    let q = b.name("present");
    let conn = b.connect().await;
    let ch1 = channel(&conn).await;
    let ch2 = confirm_channel(&conn).await;
    declare(&ch2, &q, FieldTable::default()).await;
    let opts = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let err = within(ch1.queue_declare(b.name("missing").into(), opts, FieldTable::default()))
        .await
        .expect_err("passive declare of a missing queue fails");
    assert_eq!(code(&err), Some(404), "{err}");
    // That channel is gone ...
    let after = within(ch1.queue_declare(q.as_str().into(), opts, FieldTable::default())).await;
    assert!(after.is_err(), "the channel that failed is closed: {after:?}");
    // ... its connection and other channels are not.
    publish(&ch2, &q, b"still here").await;
    assert_eq!(ready_count(&ch2, &q).await, 1);
    let ch3 = channel(&conn).await;
    assert_eq!(get(&ch3, &q, true).await.map(|d| text(&d)).as_deref(), Some("still here"));
    assert!(conn.status().connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_with_other_arguments_is_406() {
    let b = Broker::start();
    let q = b.name("redeclared");
    let conn = b.connect().await;
    let ch = channel(&conn).await;
    declare(&ch, &q, table(&[("x-max-length", int(5))])).await;
    // The same again is fine.
    declare(&ch, &q, table(&[("x-max-length", int(5))])).await;
    let err = within(ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::durable(),
        table(&[("x-max-length", int(6))]),
    ))
    .await
    .expect_err("inequivalent x-max-length");
    assert_eq!(code(&err), Some(406), "{err}");
    let ch2 = channel(&conn).await;
    let err = within(ch2.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::durable(),
        table(&[("x-message-ttl", int(1000))]),
    ))
    .await
    .expect_err("an argument the queue was declared without");
    assert_eq!(code(&err), Some(406), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_queue_is_locked_to_its_connection_405() {
    let b = Broker::start();
    let q = b.name("mine");
    let owner = b.connect().await;
    let ch = channel(&owner).await;
    let opts = QueueDeclareOptions { exclusive: true, ..QueueDeclareOptions::default() };
    within(ch.queue_declare(q.as_str().into(), opts, FieldTable::default()))
        .await
        .expect("exclusive declare");
    publish(&ch, &q, b"private").await;

    let other = b.connect().await;
    let ch2 = channel(&other).await;
    let err =
        within(ch2.queue_declare(q.as_str().into(), opts, FieldTable::default())).await.expect_err("locked");
    assert_eq!(code(&err), Some(405), "declare from another connection: {err}");
    let ch3 = channel(&other).await;
    let err = try_consume(&ch3, &q, "intruder", BasicConsumeOptions::default())
        .await
        .err()
        .expect("consume refused");
    assert_eq!(code(&err), Some(405), "consume from another connection: {err}");
    // The owner still uses it.
    assert_eq!(get(&ch, &q, true).await.map(|d| text(&d)).as_deref(), Some("private"));
    // It goes with its connection (soon after: RabbitMQ, too, deletes it after the close-ok).
    within(owner.close(200, "bye".into())).await.expect("close");
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    for look in 1..=POLLS {
        let ch4 = channel(&other).await;
        let err = within(ch4.queue_declare(q.as_str().into(), passive, FieldTable::default()))
            .await
            .expect_err("a passive declare of an exclusive queue from another connection fails");
        match code(&err) {
            Some(404) => break,
            Some(405) if look < POLLS => tokio::time::sleep(POLL).await,
            _ => panic!("an exclusive queue is deleted with its connection: {err}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_of_an_unknown_delivery_tag_is_406() {
    let b = Broker::start();
    let q = b.name("acks");
    let conn = b.connect().await;
    let ch = channel(&conn).await;
    declare(&ch, &q, FieldTable::default()).await;
    let mut sub = consume(&ch, &q, "watcher").await;
    within(ch.basic_ack(99, BasicAckOptions::default())).await.expect("basic.ack is sent");
    match sub.event(WAIT).await {
        Seen::Error(err) => assert_eq!(code(&err), Some(406), "{err}"),
        other => panic!("expected the channel to close with 406, got {other:?}"),
    }
    let ch2 = channel(&conn).await;
    publish(&ch2, &q, b"fine").await;
    assert_eq!(get(&ch2, &q, true).await.map(|d| text(&d)).as_deref(), Some("fine"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_delete_if_empty_refuses_a_queue_with_messages_406() {
    let b = Broker::start();
    let q = b.name("not-empty");
    let conn = b.connect().await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, &q, FieldTable::default()).await;
    publish(&ch, &q, b"x").await;
    let opts = QueueDeleteOptions { if_empty: true, ..QueueDeleteOptions::default() };
    let err = within(ch.queue_delete(q.as_str().into(), opts)).await.expect_err("not empty");
    assert_eq!(code(&err), Some(406), "{err}");
    let ch2 = channel(&conn).await;
    assert_eq!(ready_count(&ch2, &q).await, 1, "still there");
    let deleted =
        within(ch2.queue_delete(q.as_str().into(), QueueDeleteOptions::default())).await.expect("delete");
    assert_eq!(deleted, 1, "queue.delete-ok counts the messages deleted");
}

// ---------------------------------------------------------------------------------------------
// Unacked messages coming back
// ---------------------------------------------------------------------------------------------

async fn take_unacked(b: &Broker, q: &str) -> (Connection, Channel, Sub) {
    let conn = b.connect().await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, q, FieldTable::default()).await;
    for body in ["u1", "u2", "u3"] {
        publish(&ch, q, body.as_bytes()).await;
    }
    let mut sub = consume(&ch, q, "holder").await;
    for body in ["u1", "u2", "u3"] {
        assert_eq!(text(&sub.next().await), body);
    }
    (conn, ch, sub)
}

async fn assert_redelivered_elsewhere(b: &Broker, q: &str) {
    let conn = b.connect().await;
    let ch = channel(&conn).await;
    let mut sub = consume(&ch, q, "heir").await;
    for body in ["u1", "u2", "u3"] {
        let d = sub.next().await;
        assert_eq!((text(&d).as_str(), d.redelivered), (body, true));
        ack(&d).await;
    }
    sub.assert_quiet("three redelivered").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_return_when_their_channel_closes() {
    let b = Broker::start();
    let q = b.name("channel-close");
    let (conn, ch, _sub) = take_unacked(&b, &q).await;
    within(ch.close(200, "done".into())).await.expect("channel.close");
    assert_redelivered_elsewhere(&b, &q).await;
    drop(conn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_return_when_their_connection_closes() {
    let b = Broker::start();
    let q = b.name("connection-close");
    let (conn, _ch, _sub) = take_unacked(&b, &q).await;
    within(conn.close(200, "done".into())).await.expect("connection.close");
    assert_redelivered_elsewhere(&b, &q).await;
}

// ---------------------------------------------------------------------------------------------
// RESP and AMQP on the same queues
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resp_push_is_consumed_over_amqp() {
    let b = Broker::start();
    let Some(mut resp) = b.resp() else { return };
    let payload: Vec<u8> = b"from resp \x00\x01\xff\r\n end".to_vec();
    let _: u64 = redis::cmd("Q.PUSH").arg("shared").arg(&payload).query(&mut resp).expect("Q.PUSH");
    let conn = b.connect().await;
    let ch = channel(&conn).await;
    assert_eq!(ready_count(&ch, "shared").await, 1, "the RESP queue is visible over AMQP");
    let mut sub = consume(&ch, "shared", "amqp-side").await;
    let d = sub.next().await;
    assert_eq!(d.data, payload, "body intact");
    assert!(!d.redelivered);
    ack(&d).await;
    // Basic.Ack has no reply: wait (bounded) for RESP to see it.
    for look in 1..=POLLS {
        let stats: std::collections::HashMap<String, i64> =
            redis::cmd("Q.STATS").arg("shared").query(&mut resp).unwrap();
        let counts = (stats["ready"], stats["in-flight"], stats["acked"]);
        if counts == (0, 0, 1) {
            break;
        }
        assert!(look < POLLS, "the AMQP ack never showed in Q.STATS: {stats:?}");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amqp_publish_is_popped_over_resp_and_consumers_show_in_stats() {
    let b = Broker::start();
    let Some(mut resp) = b.resp() else { return };
    let conn = b.connect().await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, "handoff", FieldTable::default()).await;
    let payload = b"from amqp \x00\xfe".to_vec();
    let confirmation = publish_to(&ch, "", "handoff", &payload, BasicProperties::default(), false).await;
    assert!(confirmation.is_ack());
    type Popped = Vec<(u64, u64, Vec<u8>, u64)>;
    let popped: Option<Popped> = redis::cmd("Q.POP").arg("handoff").query(&mut resp).expect("Q.POP");
    let popped = popped.expect("a message to pop");
    assert_eq!(popped.len(), 1);
    assert_eq!(popped[0].2, payload, "body intact");

    let stats = |resp: &mut redis::Connection| -> std::collections::HashMap<String, i64> {
        redis::cmd("Q.STATS").arg("handoff").query(resp).unwrap()
    };
    assert_eq!(stats(&mut resp)["consumers"], 0);
    let ch2 = channel(&conn).await;
    let _a = consume(&ch, "handoff", "a").await;
    let _b = consume(&ch2, "handoff", "b").await;
    assert_eq!(stats(&mut resp)["consumers"], 2, "two AMQP consumers");
    within(ch2.basic_cancel("b".into(), BasicCancelOptions::default())).await.expect("cancel");
    assert_eq!(stats(&mut resp)["consumers"], 1, "one cancelled");
}

// ---------------------------------------------------------------------------------------------
// Content
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_and_headers_arrive_intact() {
    let b = Broker::start();
    let q = b.name("props");
    let conn = b.connect().await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, &q, table(&[("x-max-priority", int(9))])).await;
    let mut nested = FieldTable::default();
    nested.insert("depth".into(), AMQPValue::LongLongInt(-1_234_567_890_123));
    nested.insert("ok".into(), AMQPValue::Boolean(true));
    let mut list = FieldArray::default();
    list.push(long("one"));
    list.push(int(2));
    list.push(AMQPValue::FieldTable(nested.clone()));
    let headers = table(&[
        ("tenant", long("acme")),
        ("attempt", int(3)),
        ("big", AMQPValue::LongLongInt(1 << 40)),
        ("flag", AMQPValue::Boolean(false)),
        ("ratio", AMQPValue::Double(0.25)),
        ("when", AMQPValue::Timestamp(1_700_000_000)),
        ("nested", AMQPValue::FieldTable(nested)),
        ("list", AMQPValue::FieldArray(list)),
        ("utf8", long("façade ✓")),
    ]);
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("corr-42".into())
        .with_reply_to("replies".into())
        .with_expiration("60000".into())
        .with_message_id("msg-1".into())
        .with_timestamp(1_700_000_123)
        .with_type("order.created".into())
        .with_user_id("guest".into())
        .with_app_id("billing".into());
    let confirmation = publish_to(&ch, "", &q, b"{\"id\":1}", props.clone(), false).await;
    assert!(confirmation.is_ack());
    let mut sub = consume(&ch, &q, "props").await;
    let d = sub.next().await;
    assert_eq!(d.data, b"{\"id\":1}");
    assert_eq!(d.properties, props, "every property and header as published");
    // Requeued (with the consumer gone) and fetched again with Basic.Get: still intact.
    within(ch.basic_cancel("props".into(), BasicCancelOptions::default())).await.expect("cancel");
    assert!(within(d.nack(BasicNackOptions { multiple: false, requeue: true })).await.unwrap());
    let again = get(&ch, &q, true).await.expect("requeued");
    assert!(again.redelivered);
    assert_eq!(again.properties, props);

    // A message without properties has none.
    publish(&ch, &q, b"bare").await;
    let bare = get(&ch, &q, true).await.expect("bare");
    assert_eq!(bare.properties, BasicProperties::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_larger_than_frame_max_is_split_and_reassembled() {
    let b = Broker::start();
    let q = b.name("big");
    let conn = b.connect_query("?frame_max=4096").await;
    assert_eq!(conn.configuration().frame_max(), 4096, "frame_max negotiated");
    let ch = confirm_channel(&conn).await;
    declare(&ch, &q, FieldTable::default()).await;
    let body: Vec<u8> = (0..300 * 1024u32).map(|i| i.wrapping_mul(2_654_435_761).to_be_bytes()[1]).collect();
    let confirmation = publish_to(&ch, "", &q, &body, BasicProperties::default(), false).await;
    assert!(confirmation.is_ack());
    publish(&ch, &q, b"").await;
    let mut sub = consume(&ch, &q, "big").await;
    let d = sub.next().await;
    assert_eq!(d.data.len(), body.len());
    assert!(d.data == body, "300 KiB body reassembled byte for byte");
    let empty = sub.next().await;
    assert!(empty.data.is_empty(), "an empty body stays empty");
    // Another connection with the default frame_max gets the same bytes.
    let conn2 = b.connect().await;
    let ch2 = channel(&conn2).await;
    drop(sub);
    within(ch.close(200, "bye".into())).await.expect("close");
    let again = get(&ch2, &q, true).await.expect("requeued on close");
    assert!(again.data == body);
}

// ---------------------------------------------------------------------------------------------
// Exchanges and routing
// ---------------------------------------------------------------------------------------------

async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) {
    within(ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("queue.bind");
}

/// Drains a queue with Basic.Get, returning the bodies.
async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    while let Some(d) = get(ch, queue, true).await {
        bodies.push(text(&d));
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_fanout_and_direct_exchanges_route_by_binding() {
    let b = Broker::start();
    let conn = b.connect().await;
    let ch = confirm_channel(&conn).await;
    let [q1, q2, q3] = [b.name("orders-one"), b.name("orders-all"), b.name("eu")];
    for q in [&q1, &q2, &q3] {
        declare(&ch, q, FieldTable::default()).await;
    }
    let topic = b.name("events");
    within(ch.exchange_declare(
        topic.as_str().into(),
        ExchangeKind::Topic,
        durable_exchange(),
        FieldTable::default(),
    ))
    .await
    .expect("topic exchange");
    bind(&ch, &q1, &topic, "order.*").await;
    bind(&ch, &q2, &topic, "order.#").await;
    bind(&ch, &q3, &topic, "#.eu").await;
    for key in ["order.created", "order.created.eu", "user.eu", "order", "audit.log"] {
        let confirmation =
            publish_to(&ch, &topic, key, key.as_bytes(), BasicProperties::default(), false).await;
        assert!(confirmation.is_ack());
    }
    assert_eq!(drain(&ch, &q1).await, ["order.created"]);
    assert_eq!(drain(&ch, &q2).await, ["order.created", "order.created.eu", "order"]);
    assert_eq!(drain(&ch, &q3).await, ["order.created.eu", "user.eu"]);

    let fanout = b.name("broadcast");
    within(ch.exchange_declare(
        fanout.as_str().into(),
        ExchangeKind::Fanout,
        durable_exchange(),
        FieldTable::default(),
    ))
    .await
    .expect("fanout exchange");
    bind(&ch, &q1, &fanout, "ignored").await;
    bind(&ch, &q2, &fanout, "").await;
    publish_to(&ch, &fanout, "any.key", b"to all", BasicProperties::default(), false).await;
    assert_eq!(drain(&ch, &q1).await, ["to all"]);
    assert_eq!(drain(&ch, &q2).await, ["to all"]);
    assert_eq!(drain(&ch, &q3).await, Vec::<String>::new());

    let direct = b.name("colours");
    within(ch.exchange_declare(
        direct.as_str().into(),
        ExchangeKind::Direct,
        durable_exchange(),
        FieldTable::default(),
    ))
    .await
    .expect("direct exchange");
    bind(&ch, &q1, &direct, "red").await;
    bind(&ch, &q2, &direct, "red").await;
    bind(&ch, &q2, &direct, "blue").await;
    // Binding twice is a no-op: one copy per queue.
    bind(&ch, &q2, &direct, "blue").await;
    for key in ["red", "blue", "green"] {
        publish_to(&ch, &direct, key, key.as_bytes(), BasicProperties::default(), false).await;
    }
    assert_eq!(drain(&ch, &q1).await, ["red"]);
    assert_eq!(drain(&ch, &q2).await, ["red", "blue"]);
    within(ch.queue_unbind(q2.as_str().into(), direct.as_str().into(), "red".into(), FieldTable::default()))
        .await
        .expect("queue.unbind");
    publish_to(&ch, &direct, "red", b"red again", BasicProperties::default(), false).await;
    assert_eq!(drain(&ch, &q1).await, ["red again"]);
    assert_eq!(drain(&ch, &q2).await, Vec::<String>::new(), "unbound");

    // The built-in amq.direct.
    bind(&ch, &q3, "amq.direct", &q3).await;
    publish_to(&ch, "amq.direct", &q3, b"built-in", BasicProperties::default(), false).await;
    assert_eq!(drain(&ch, &q3).await, ["built-in"]);
}

// ---------------------------------------------------------------------------------------------
// Get, reject, nack, cancel, consumers
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_get_and_get_empty() {
    let b = Broker::start();
    let q = b.name("gets");
    let conn = b.connect().await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, &q, FieldTable::default()).await;
    assert!(get(&ch, &q, false).await.is_none(), "Get-Empty on an empty queue");
    publish(&ch, &q, b"g1").await;
    publish(&ch, &q, b"g2").await;
    let m = within(ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: false }))
        .await
        .unwrap()
        .expect("g1");
    assert_eq!(
        (m.delivery.data.as_slice(), m.message_count),
        (&b"g1"[..], 1),
        "message_count: left after this one"
    );
    ack(&m.delivery).await;
    let m =
        within(ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })).await.unwrap().expect("g2");
    assert_eq!((m.delivery.data.as_slice(), m.message_count), (&b"g2"[..], 0));
    assert!(get(&ch, &q, false).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_reject_requeues_or_dead_letters() {
    let b = Broker::start();
    let q = b.name("rejects");
    let dlq = b.name("rejects-dlq");
    let conn = b.connect().await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, &dlq, FieldTable::default()).await;
    let args = table(&[("x-dead-letter-exchange", long("")), ("x-dead-letter-routing-key", long(&dlq))]);
    declare(&ch, &q, args).await;
    publish(&ch, &q, b"r1").await;
    let d = get(&ch, &q, false).await.expect("r1");
    assert!(within(d.reject(BasicRejectOptions { requeue: true })).await.unwrap());
    let d = get(&ch, &q, false).await.expect("r1 requeued");
    assert_eq!((text(&d).as_str(), d.redelivered), ("r1", true));
    assert!(within(d.reject(BasicRejectOptions { requeue: false })).await.unwrap());
    assert!(get(&ch, &q, false).await.is_none(), "rejected without requeue: gone from the queue");
    let dead = get(&ch, &dlq, true).await.expect("dead-lettered");
    assert_eq!(
        (text(&dead).as_str(), dead.exchange.as_str(), dead.routing_key.as_str()),
        ("r1", "", dlq.as_str())
    );
    assert_eq!(first_death(&dead), Some(("rejected".to_owned(), q.clone())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_multiple_covers_every_earlier_delivery() {
    let b = Broker::start();
    let q = b.name("nacks");
    let conn = b.connect().await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, &q, FieldTable::default()).await;
    for body in ["n1", "n2", "n3", "n4"] {
        publish(&ch, &q, body.as_bytes()).await;
    }
    let mut sub = consume(&ch, &q, "n").await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(sub.next().await);
    }
    // Nack n1..n3 in one go; n4 stays unacked.
    within(ch.basic_nack(got[2].delivery_tag, BasicNackOptions { multiple: true, requeue: true }))
        .await
        .unwrap();
    let mut again = Vec::new();
    for _ in 0..3 {
        let d = sub.next().await;
        assert!(d.redelivered, "{}", text(&d));
        again.push(d);
    }
    assert_eq!(again.iter().map(text).collect::<Vec<_>>(), ["n1", "n2", "n3"]);
    sub.assert_quiet("n4 was not nacked").await;
    // Drop them all (no requeue), multiple from the last tag.
    let last = again.last().unwrap().delivery_tag;
    within(ch.basic_nack(last, BasicNackOptions { multiple: true, requeue: false })).await.unwrap();
    sub.assert_quiet("nack without requeue").await;
    assert_eq!(ready_count(&ch, &q).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_cancel_and_the_server_cancel_when_the_queue_is_deleted() {
    let b = Broker::start();
    let q = b.name("cancelled");
    let conn = b.connect().await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, &q, FieldTable::default()).await;
    let mut sub = consume(&ch, &q, "mine").await;
    publish(&ch, &q, b"c1").await;
    ack(&sub.next().await).await;
    within(ch.basic_cancel("mine".into(), BasicCancelOptions::default())).await.expect("basic.cancel");
    assert!(matches!(sub.event(WAIT).await, Seen::Ended), "the consumer ends on cancel");
    publish(&ch, &q, b"c2").await;
    assert_eq!(ready_count(&ch, &q).await, 1, "a cancelled consumer takes nothing");

    // The server cancels a consumer whose queue is deleted (from another connection).
    let listener = b.connect().await;
    let lch = channel(&listener).await;
    let mut watched = consume(&lch, &q, "watched").await;
    assert_eq!(text(&watched.next().await), "c2");
    let other = channel(&conn).await;
    within(other.queue_delete(q.as_str().into(), QueueDeleteOptions::default())).await.expect("queue.delete");
    match watched.event(WAIT).await {
        Seen::Ended => {}
        seen => panic!("expected a server-sent Basic.Cancel, got {seen:?}"),
    }
    // The consumer's channel is still open.
    let q2 = b.name("after-cancel");
    declare(&lch, &q2, FieldTable::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_consumer_refuses_others_403() {
    let b = Broker::start();
    let q = b.name("solo");
    let conn = b.connect().await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, &q, FieldTable::default()).await;
    let exclusive = BasicConsumeOptions { exclusive: true, ..BasicConsumeOptions::default() };
    let mut sub = try_consume(&ch, &q, "only", exclusive).await.expect("exclusive consume");
    let other = b.connect().await;
    let och = channel(&other).await;
    let err = try_consume(&och, &q, "second", BasicConsumeOptions::default()).await.err().expect("refused");
    assert_eq!(code(&err), Some(403), "{err}");
    let och2 = channel(&other).await;
    let err = try_consume(&och2, &q, "third", exclusive).await.err().expect("refused");
    assert_eq!(code(&err), Some(403), "{err}");
    publish(&ch, &q, b"e").await;
    assert_eq!(text(&sub.next().await), "e");

    // And an exclusive consume is refused while another consumer exists.
    let q2 = b.name("shared-consumers");
    declare(&ch, &q2, FieldTable::default()).await;
    let _plain = consume(&ch, &q2, "plain").await;
    let och3 = channel(&other).await;
    let err = try_consume(&och3, &q2, "wants-all", exclusive).await.err().expect("refused");
    assert_eq!(code(&err), Some(403), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_active_consumer_gets_everything_until_it_cancels() {
    let b = Broker::start();
    let q = b.name("sac");
    let conn = b.connect().await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, &q, table(&[("x-single-active-consumer", AMQPValue::Boolean(true))])).await;
    let ch_a = channel(&conn).await;
    let ch_b = channel(&conn).await;
    let mut a = consume(&ch_a, &q, "a").await;
    let mut bee = consume(&ch_b, &q, "b").await;
    for body in ["s1", "s2", "s3"] {
        publish(&ch, &q, body.as_bytes()).await;
    }
    for body in ["s1", "s2", "s3"] {
        let d = a.next().await;
        assert_eq!(text(&d), body);
        ack(&d).await;
    }
    bee.assert_quiet("the second consumer is not active").await;
    within(ch_a.basic_cancel("a".into(), BasicCancelOptions::default())).await.expect("cancel");
    publish(&ch, &q, b"s4").await;
    let d = bee.next().await;
    assert_eq!(text(&d), "s4", "the second consumer took over");
    ack(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_name_declares_a_server_named_queue() {
    let b = Broker::start();
    let conn = b.connect().await;
    let ch = confirm_channel(&conn).await;
    let opts = QueueDeclareOptions { exclusive: true, ..QueueDeclareOptions::default() };
    let q = within(ch.queue_declare("".into(), opts, FieldTable::default())).await.expect("declare");
    let name = q.name().as_str().to_owned();
    assert!(name.starts_with("amq.gen-") && name.len() > "amq.gen-".len(), "{name}");
    let q2 = within(ch.queue_declare("".into(), opts, FieldTable::default())).await.expect("declare");
    assert_ne!(q2.name().as_str(), name, "each one new");
    publish(&ch, &name, b"to the named one").await;
    assert_eq!(drain(&ch, &name).await, ["to the named one"]);
}

// ---------------------------------------------------------------------------------------------
// Protocol abuse on a raw socket
// ---------------------------------------------------------------------------------------------

const FRAME_METHOD: u8 = 1;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
const PROTOCOL_HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";

#[derive(Debug)]
struct RawFrame {
    kind: u8,
    channel: u16,
    payload: Vec<u8>,
}

impl RawFrame {
    fn method(&self) -> Option<(u16, u16)> {
        (self.kind == FRAME_METHOD && self.payload.len() >= 4).then(|| {
            (
                u16::from_be_bytes([self.payload[0], self.payload[1]]),
                u16::from_be_bytes([self.payload[2], self.payload[3]]),
            )
        })
    }
}

/// A hand-driven AMQP client.
struct Raw {
    stream: TcpStream,
}

fn short_str(out: &mut Vec<u8>, s: &str) {
    out.push(u8::try_from(s.len()).expect("short string"));
    out.extend_from_slice(s.as_bytes());
}

fn long_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&u32::try_from(s.len()).expect("long string").to_be_bytes());
    out.extend_from_slice(s);
}

fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&u32::try_from(payload.len()).expect("frame size").to_be_bytes());
    out.extend_from_slice(payload);
    out.push(FRAME_END);
    out
}

fn method_payload(class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&class.to_be_bytes());
    out.extend_from_slice(&method.to_be_bytes());
    out.extend_from_slice(args);
    out
}

/// A Queue.Declare (passive off, durable) of `name`.
fn queue_declare_args(name: &str) -> Vec<u8> {
    let mut args = vec![0, 0];
    short_str(&mut args, name);
    args.push(0b0000_0010);
    args.extend_from_slice(&0u32.to_be_bytes());
    args
}

impl Raw {
    fn connect(addr: &str) -> Raw {
        let stream = TcpStream::connect(addr).expect("raw connect");
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        Raw { stream }
    }

    /// Connects and runs the handshake up to Connection.Open-Ok with `frame_max` and `heartbeat`
    /// (seconds) in Tune-Ok.
    fn open(addr: &str, frame_max: u32, heartbeat: u16) -> Raw {
        Raw::open_as(addr, frame_max, heartbeat, &[])
    }

    /// As [`Raw::open`], announcing these client capabilities (each `true`) in Start-Ok.
    fn open_as(addr: &str, frame_max: u32, heartbeat: u16, capabilities: &[&str]) -> Raw {
        let mut raw = Raw::connect(addr);
        raw.send(PROTOCOL_HEADER);
        raw.expect_method(0, (10, 10), "connection.start");
        let mut caps = Vec::new();
        for name in capabilities {
            short_str(&mut caps, name);
            caps.extend_from_slice(&[b't', 1]);
        }
        let mut props = Vec::new();
        if !capabilities.is_empty() {
            short_str(&mut props, "capabilities");
            props.push(b'F');
            long_str(&mut props, &caps);
        }
        let mut start_ok = Vec::new();
        long_str(&mut start_ok, &props); // client-properties
        short_str(&mut start_ok, "PLAIN");
        long_str(&mut start_ok, b"\0guest\0guest");
        short_str(&mut start_ok, "en_US");
        raw.send_method(0, 10, 11, &start_ok);
        let tune = raw.expect_method(0, (10, 30), "connection.tune");
        // Tune: channel-max (short), frame-max (long), heartbeat (short); 0 means no limit.
        let server_channel_max = u16::from_be_bytes([tune[0], tune[1]]);
        let server_frame_max = u32::from_be_bytes([tune[2], tune[3], tune[4], tune[5]]);
        let channel_max = if server_channel_max == 0 { 64 } else { server_channel_max.min(64) };
        let frame_max = if server_frame_max == 0 { frame_max } else { frame_max.min(server_frame_max) };
        let mut tune_ok = Vec::new();
        tune_ok.extend_from_slice(&channel_max.to_be_bytes());
        tune_ok.extend_from_slice(&frame_max.to_be_bytes());
        tune_ok.extend_from_slice(&heartbeat.to_be_bytes());
        raw.send_method(0, 10, 31, &tune_ok);
        let mut open = Vec::new();
        short_str(&mut open, "/");
        short_str(&mut open, "");
        open.push(0);
        raw.send_method(0, 10, 40, &open);
        raw.expect_method(0, (10, 41), "connection.open-ok");
        raw
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("raw write");
    }

    fn send_method(&mut self, channel: u16, class: u16, method: u16, args: &[u8]) {
        self.send(&frame(FRAME_METHOD, channel, &method_payload(class, method, args)));
    }

    fn open_channel(&mut self, channel: u16) {
        self.send_method(channel, 20, 10, &[0]);
        self.expect_method(channel, (20, 11), "channel.open-ok");
    }

    /// The next frame, or `None` when the server closed the connection.
    fn read_frame(&mut self) -> Option<RawFrame> {
        let mut header = [0u8; 7];
        if !self.read_exact_or_eof(&mut header) {
            return None;
        }
        let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
        assert!(size < 1 << 20, "absurd frame size {size} in {header:?}");
        let mut payload = vec![0u8; size + 1];
        assert!(self.read_exact_or_eof(&mut payload), "connection closed inside a frame");
        assert_eq!(payload.pop(), Some(FRAME_END), "frame end octet");
        Some(RawFrame { kind: header[0], channel: u16::from_be_bytes([header[1], header[2]]), payload })
    }

    fn read_exact_or_eof(&mut self, buf: &mut [u8]) -> bool {
        let mut filled = 0;
        while filled < buf.len() {
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) => {
                    assert_eq!(filled, 0, "connection closed after {filled} bytes of {}", buf.len());
                    return false;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == IoErrorKind::ConnectionReset => return false,
                Err(e) => panic!("raw read: {e}"),
            }
        }
        true
    }

    /// The next method frame (heartbeats skipped), which must be `want` on `channel`; returns
    /// its arguments.
    fn expect_method(&mut self, channel: u16, want: (u16, u16), what: &str) -> Vec<u8> {
        loop {
            let f = self.read_frame().unwrap_or_else(|| panic!("closed while waiting for {what}"));
            if f.kind == FRAME_HEARTBEAT {
                continue;
            }
            assert_eq!((f.channel, f.method()), (channel, Some(want)), "expected {what}, got {f:?}");
            return f.payload[4..].to_vec();
        }
    }

    /// Expects Connection.Close; answers Close-Ok and checks that the server then closes the
    /// socket. Returns the reply code and text.
    fn expect_connection_close(&mut self) -> (u16, String) {
        let args = self.expect_method(0, (10, 50), "connection.close");
        let code = u16::from_be_bytes([args[0], args[1]]);
        let len = args[2] as usize;
        let text = String::from_utf8_lossy(&args[3..3 + len]).into_owned();
        self.send_method(0, 10, 51, &[]);
        let mut rest = Vec::new();
        while let Some(f) = self.read_frame() {
            rest.push(f);
        }
        assert!(rest.iter().all(|f| f.kind == FRAME_HEARTBEAT), "after connection.close: {rest:?}");
        (code, text)
    }

    /// Publishes `body` to the default exchange, routed to `queue`, on `channel` (no properties).
    fn publish(&mut self, channel: u16, queue: &str, body: &[u8]) {
        let mut args = vec![0, 0];
        short_str(&mut args, "");
        short_str(&mut args, queue);
        args.push(0);
        self.send_method(channel, 60, 40, &args);
        let mut header = Vec::new();
        header.extend_from_slice(&60u16.to_be_bytes());
        header.extend_from_slice(&0u16.to_be_bytes());
        header.extend_from_slice(&(body.len() as u64).to_be_bytes());
        header.extend_from_slice(&0u16.to_be_bytes());
        self.send(&frame(2, channel, &header));
        self.send(&frame(3, channel, body));
    }

    /// The next method frames (heartbeats skipped) until `done` says enough; every one is kept.
    fn methods_until(&mut self, mut done: impl FnMut(&[RawFrame]) -> bool) -> Vec<RawFrame> {
        let mut seen = Vec::new();
        while !done(&seen) {
            let f = self.read_frame().expect("connection open");
            if f.kind != FRAME_HEARTBEAT {
                seen.push(f);
            }
        }
        seen
    }
}

/// Stores three messages in a queue before some abuse; `check_intact` then proves a fresh
/// lapin connection works and they are all still there.
async fn store_kept(b: &Broker) -> String {
    let q = b.name("kept");
    let conn = b.connect().await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, &q, FieldTable::default()).await;
    for body in ["k1", "k2", "k3"] {
        publish(&ch, &q, body.as_bytes()).await;
    }
    within(conn.close(200, "bye".into())).await.expect("close");
    q
}

async fn check_intact(b: &Broker, q: &str) {
    let conn = b.connect().await;
    let ch = channel(&conn).await;
    assert_eq!(ready_count(&ch, q).await, 3, "stored messages survive the abuse");
    assert_eq!(get(&ch, q, false).await.map(|d| text(&d)).as_deref(), Some("k1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_frame_end_octet_is_501_frame_error() {
    let b = Broker::start();
    let kept = store_kept(&b).await;
    let mut raw = Raw::open(&b.addr, 131_072, 0);
    let mut bad = frame(FRAME_METHOD, 1, &method_payload(20, 10, &[0]));
    *bad.last_mut().unwrap() = 0x00;
    raw.send(&bad);
    let (code, text) = raw.expect_connection_close();
    assert_eq!(code, 501, "{text}");
    check_intact(&b, &kept).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_frame_max_is_501() {
    let b = Broker::start();
    let kept = store_kept(&b).await;
    let mut raw = Raw::open(&b.addr, 4096, 0);
    raw.open_channel(1);
    // A well-formed Queue.Declare whose arguments push the frame past the negotiated 4096.
    let mut args = vec![0, 0];
    short_str(&mut args, "too-big");
    args.push(0b0000_0010);
    let mut table = Vec::new();
    short_str(&mut table, "x-padding");
    table.push(b'S');
    long_str(&mut table, &[b'p'; 6000]);
    long_str(&mut args, &table);
    raw.send_method(1, 50, 10, &args);
    let (code, text) = raw.expect_connection_close();
    assert_eq!(code, 501, "{text}");
    check_intact(&b, &kept).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_on_a_channel_never_opened_is_504() {
    let b = Broker::start();
    let kept = store_kept(&b).await;
    let mut raw = Raw::open(&b.addr, 131_072, 0);
    raw.send_method(7, 50, 10, &queue_declare_args("nobody"));
    let (code, text) = raw.expect_connection_close();
    assert_eq!(code, 504, "{text}");
    check_intact(&b, &kept).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_method_is_a_connection_error() {
    let b = Broker::start();
    let kept = store_kept(&b).await;
    let mut raw = Raw::open(&b.addr, 131_072, 0);
    raw.open_channel(1);
    raw.send_method(1, 0x0BAD, 0x0042, &[1, 2, 3]);
    // RabbitMQ 3.10 drops the socket without a Connection.Close (its reader process exits on
    // `unknown_method_id`); a Close, if sent, must say NOT_IMPLEMENTED or COMMAND_INVALID.
    let first = loop {
        match raw.read_frame() {
            Some(f) if f.kind == FRAME_HEARTBEAT => continue,
            other => break other,
        }
    };
    if let Some(f) = first {
        assert_eq!((f.channel, f.method()), (0, Some((10, 50))), "expected connection.close, got {f:?}");
        let code = u16::from_be_bytes([f.payload[4], f.payload[5]]);
        assert!(
            code == 540 || code == 503,
            "reply code {code}: {:?}",
            String::from_utf8_lossy(&f.payload[7..])
        );
        raw.send_method(0, 10, 51, &[]);
        while let Some(f) = raw.read_frame() {
            assert_eq!(f.kind, FRAME_HEARTBEAT, "after connection.close: {f:?}");
        }
    }
    check_intact(&b, &kept).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_protocol_header_is_answered_with_ours_then_closed() {
    let b = Broker::start();
    let kept = store_kept(&b).await;
    for header in [&b"AMQP\x01\x01\x00\x0a"[..], b"AMQP\x00\x01\x00\x00", b"GET / HTTP/1.1\r\n\r\n"] {
        let mut raw = Raw::connect(&b.addr);
        raw.send(header);
        let mut reply = Vec::new();
        // Each read waits at most the read timeout; a server that kept sending would fail the length check.
        loop {
            let mut buf = [0u8; 64];
            match raw.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == IoErrorKind::ConnectionReset => break,
                Err(e) => panic!("{:?}: read failed after {reply:?}: {e}", String::from_utf8_lossy(header)),
            }
            assert!(
                reply.len() <= PROTOCOL_HEADER.len(),
                "more than a protocol header, not closed: {reply:?}"
            );
        }
        assert_eq!(reply, PROTOCOL_HEADER, "reply to {:?}", String::from_utf8_lossy(header));
    }
    check_intact(&b, &kept).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_dropped_after_missed_heartbeats_and_the_server_sends_them() {
    let b = Broker::start();
    let kept = store_kept(&b).await;
    let mut raw = Raw::open(&b.addr, 131_072, 1);
    raw.open_channel(1);
    // Say nothing more. The server must send heartbeats and, hearing none, drop the connection.
    let mut heartbeats = 0;
    let mut others = Vec::new();
    while let Some(f) = raw.read_frame() {
        match f.kind {
            FRAME_HEARTBEAT => {
                assert_eq!((f.channel, f.payload.len()), (0, 0), "a heartbeat is empty, on channel 0");
                heartbeats += 1;
            }
            _ => others.push(f),
        }
        // Dropped after two missed intervals: a handful of heartbeats, not an endless stream.
        assert!(heartbeats <= 20, "still connected after {heartbeats} heartbeats");
    }
    assert!(heartbeats >= 1, "the server sent no heartbeat before dropping the connection");
    // A Connection.Close before the drop is allowed; nothing else.
    assert!(others.iter().all(|f| f.method() == Some((10, 50))), "{others:?}");
    check_intact(&b, &kept).await;
}

// ---------------------------------------------------------------------------------------------
// Python's pika
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pika_as_a_newcomer_would_use_it() {
    let has_pika =
        Command::new("python3").args(["-c", "import pika"]).output().is_ok_and(|o| o.status.success());
    if !has_pika {
        assert!(!peers_required(), "python3 with pika is required in CI but `import pika` failed");
        eprintln!("skipped: python3 with pika is not installed");
        return;
    }
    let b = Broker::start();
    let (host, port) = b.addr.rsplit_once(':').expect("host:port");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pika_client.py");
    let run = tokio::process::Command::new("python3")
        .arg(script)
        .arg(port)
        .env("PIKA_TEST_HOST", host)
        .env("PIKA_TEST_SUFFIX", &b.suffix)
        .kill_on_drop(true)
        .output();
    let out =
        timeout(Duration::from_secs(60), run).await.expect("pika script timed out").expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pika script failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("pika: all checks passed"), "{stdout}\n{stderr}");
    // What it left behind is visible to lapin.
    let conn = b.connect().await;
    let ch = channel(&conn).await;
    assert_eq!(drain(&ch, &b.name("pika-left")).await, ["left by pika"]);
}

/// Past `--max-memory`, a publish is nacked and the connection told `Connection.Blocked` (it said
/// it understands `connection.blocked`); once memory is freed (a purge over RESP) it is told
/// `Unblocked` and publishes are acked again. Turnstile only: RabbitMQ blocks on its memory alarm.
#[test]
fn publishes_past_max_memory_are_nacked_and_the_connection_blocked_until_memory_frees() {
    let server = TestServer::start_with(&["--max-memory", "2500"]);
    let mut raw = Raw::open_as(&server.amqp_addr, 131_072, 0, &["connection.blocked"]);
    raw.open_channel(1);
    raw.send_method(1, 85, 10, &[0]);
    raw.expect_method(1, (85, 11), "confirm.select-ok");
    raw.send_method(1, 50, 10, &queue_declare_args("big"));
    raw.expect_method(1, (50, 11), "queue.declare-ok");
    let body = [b'x'; 1000];
    // One at a time, each confirmed before the next, so each sees the memory of those before it.
    let mut confirms = Vec::new();
    let mut blocked = 0;
    for tag in 1..=3u64 {
        raw.publish(1, "big", &body);
        let frames =
            raw.methods_until(|seen| seen.iter().any(|f| matches!(f.method(), Some((60, 80 | 120)))));
        for f in frames {
            match f.method() {
                Some((60, m @ (80 | 120))) => {
                    let got = u64::from_be_bytes(f.payload[4..12].try_into().unwrap());
                    assert_eq!(got, tag, "confirms in order");
                    confirms.push(if m == 80 { "ack" } else { "nack" });
                }
                Some((10, 60)) => blocked += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(confirms, ["ack", "ack", "nack"], "the third would pass 2500 bytes");
    assert_eq!(blocked, 1, "Connection.Blocked once, with the refusal");
    let purged: i64 = redis::cmd("Q.PURGE").arg("big").query(&mut server.client()).expect("Q.PURGE");
    assert_eq!(purged, 2);
    raw.expect_method(0, (10, 61), "connection.unblocked");
    raw.publish(1, "big", &body);
    let ack = raw.expect_method(1, (60, 80), "basic.ack after unblocked");
    assert_eq!(u64::from_be_bytes(ack[..8].try_into().unwrap()), 4);
}

// ---------------------------------------------------------------------------------------------
// Flow control (`--queue-flow-limit`); Turnstile only
// ---------------------------------------------------------------------------------------------

/// The flow limit of these tests: small, so a test publishes many times it.
const FLOW_LIMIT: u64 = 50;
/// The body of each publish of these tests.
const FLOW_BODY: usize = 200;
/// One publish on the wire: basic.publish with the default exchange and the 4-byte routing key
/// "jobs" (21 bytes), a content header without properties (22), one body frame (8 + body).
const FLOW_PUBLISH_BYTES: u64 = 21 + 22 + 8 + FLOW_BODY as u64;
/// What one read round can carry past the limit: the server reads at most its 16 KiB buffer (and
/// the 64 bytes a full buffer grows by) before it weighs what it read, and the publish it had
/// half-read before that completes in the round. So 66 publishes of these.
const FLOW_ROUND: u64 = (16 * 1024 + 64) / FLOW_PUBLISH_BYTES + 1;

impl Broker {
    /// A Turnstile server with extra flags (no reference broker: these tests are Turnstile's).
    fn turnstile_with(args: &[&str]) -> Broker {
        let server = TestServer::start_with(args);
        let addr = server.amqp_addr.clone();
        Broker { server: Some(server), addr, suffix: String::new() }
    }

    fn resp_client(&self) -> redis::Connection {
        self.server.as_ref().expect("a Turnstile server").client()
    }
}

/// `Q.STATS queue` as a map.
fn queue_stats(con: &mut redis::Connection, queue: &str) -> std::collections::HashMap<String, u64> {
    redis::cmd("Q.STATS").arg(queue).query(con).expect("Q.STATS")
}

/// Polls `check` until it holds, for at most [`WAIT`], without holding a runtime thread.
async fn until_async(what: &str, mut check: impl FnMut() -> bool) {
    timeout(WAIT, async {
        while !check() {
            tokio::time::sleep(POLL).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

/// Waits until a connection is stopped by flow control and settled: what it sent before is all
/// answered (`answered`: its confirms or replies) and stored (the queue's `pushed`), the two
/// agree, and neither has moved over 100 ms of the server's time held (20 looks).
async fn until_stopped_and_settled(resp: &mut redis::Connection, queue: &str, answered: impl Fn() -> u64) {
    until_async("the connection is stopped", || common::info_u64(resp, "clients", "flow_clients") == 1).await;
    let mut last = None;
    until_async("what it sent before is answered", || {
        let now = (answered(), queue_stats(resp, queue)["pushed"]);
        let looked = common::info_u64(resp, "stats", "flow_time_ms");
        match last {
            Some((then, since)) if then == now && looked >= since + 100 => return now.0 == now.1,
            Some((then, _)) if then == now => {}
            _ => last = Some((now, looked)),
        }
        false
    })
    .await;
}

/// Waits while the server holds a connection for `ms` more of its time in flow (it looks again
/// every few ms meanwhile); returns the time in flow it started from.
async fn held_for(resp: &mut redis::Connection, ms: u64) -> u64 {
    let looked = common::info_u64(resp, "stats", "flow_time_ms");
    until_async("the server looked many times", || {
        common::info_u64(resp, "stats", "flow_time_ms") >= looked + ms
    })
    .await;
    looked
}

/// A publisher with confirms on its own connection, which sends numbered bodies as fast as lapin
/// takes them once told to; its confirms are counted as they come, in `acked` and `nacked`.
struct FlowPublisher {
    conn: Connection,
    ch: Channel,
    acked: std::sync::Arc<AtomicU32>,
    nacked: std::sync::Arc<AtomicU32>,
}

impl FlowPublisher {
    async fn connect(b: &Broker) -> FlowPublisher {
        let conn = b.connect().await;
        let ch = confirm_channel(&conn).await;
        let (acked, nacked) =
            (std::sync::Arc::new(AtomicU32::new(0)), std::sync::Arc::new(AtomicU32::new(0)));
        FlowPublisher { conn, ch, acked, nacked }
    }

    /// Starts sending `count` messages to `queue`, in the background.
    fn publish(&self, queue: &str, count: u32) {
        let (tx, mut confirms) = mpsc::unbounded_channel();
        let (ch, queue) = (self.ch.clone(), queue.to_owned());
        tokio::spawn(async move {
            for i in 0..count {
                let body = format!("{i:0width$}", width = FLOW_BODY);
                let opts = BasicPublishOptions::default();
                let props = BasicProperties::default();
                let sent = ch.basic_publish("".into(), queue.as_str().into(), opts, body.as_bytes(), props);
                let Ok(confirm) = sent.await else { return };
                if tx.send(confirm).is_err() {
                    return;
                }
            }
        });
        let (acked, nacked) = (self.acked.clone(), self.nacked.clone());
        tokio::spawn(async move {
            while let Some(confirm) = confirms.recv().await {
                match confirm.await {
                    Ok(Confirmation::Ack(_)) => acked.fetch_add(1, Ordering::Relaxed),
                    _ => nacked.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }

    fn acked(&self) -> u64 {
        u64::from(self.acked.load(Ordering::Relaxed))
    }

    fn nacked(&self) -> u64 {
        u64::from(self.nacked.load(Ordering::Relaxed))
    }
}

/// A publisher far faster than its queue's consumer is stopped once the queue holds the limit, and
/// held — its confirms stop growing, the queue stops growing — while the consumer does not ack;
/// deliveries to the stopped connection's own consumers still reach it. Once the consumer acks
/// again, the publisher is let go: every message is confirmed and consumed exactly once, and the
/// stops are counted in `INFO` and `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_is_held_while_its_queue_is_at_the_flow_limit_and_let_go_as_consumers_catch_up() {
    const TOTAL: u32 = 1000;
    let b = Broker::turnstile_with(&["--queue-flow-limit", &FLOW_LIMIT.to_string()]);
    let server = b.server.as_ref().expect("turnstile");
    let mut resp = b.resp_client();
    let consumer_conn = b.connect().await;
    let cch = channel(&consumer_conn).await;
    declare(&cch, "jobs", FieldTable::default()).await;
    within(cch.basic_qos(1, BasicQosOptions::default())).await.expect("basic.qos");
    let mut worker = consume(&cch, "jobs", "worker").await;

    // The publisher's connection also consumes another queue, without acks.
    let publisher = FlowPublisher::connect(&b).await;
    let side_ch = channel(&publisher.conn).await;
    declare(&side_ch, "side", FieldTable::default()).await;
    let no_ack = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
    let mut side = try_consume(&side_ch, "side", "side", no_ack).await.expect("basic.consume");
    publisher.publish("jobs", TOTAL);
    // The consumer takes one delivery and acks nothing yet.
    let first = worker.next().await;

    // Stopped: every publish it had read is stored and confirmed, and then nothing more comes.
    until_stopped_and_settled(&mut resp, "jobs", || publisher.acked()).await;
    let held = queue_stats(&mut resp, "jobs");
    let (acked, ready) = (publisher.acked(), held["ready"]);
    // It may stop a little before the limit (publishes applied whose confirms are on their way
    // count twice when it looks), but stays stopped only at half the limit or more.
    assert!(ready * 2 >= FLOW_LIMIT, "held below half the limit: {held:?}");
    assert!(ready <= FLOW_LIMIT + FLOW_ROUND, "more than a round past the limit: {held:?}");
    assert!(acked < u64::from(TOTAL));
    // It stays stopped while the server looks again and again (every few ms).
    let looked = held_for(&mut resp, 300).await;
    assert_eq!(publisher.acked(), acked, "confirms while the consumer lags");
    let now = queue_stats(&mut resp, "jobs");
    assert_eq!((now["pushed"], now["ready"]), (held["pushed"], ready), "the queue grew while held");
    assert_eq!(common::info_u64(&mut resp, "clients", "flow_clients"), 1);
    // The stopped connection is still written to: a delivery to its consumer arrives.
    let _: u64 = redis::cmd("Q.PUSH").arg("side").arg("to a held connection").query(&mut resp).unwrap();
    assert_eq!(text(&side.next().await), "to a held connection");

    // The consumer catches up, acking as it goes; a watcher samples the backlog meanwhile.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = std::thread::spawn({
        let (watching, mut resp) = (watching.clone(), server.client());
        move || {
            let mut most = 0;
            while watching.load(Ordering::Relaxed) {
                most = most.max(queue_stats(&mut resp, "jobs")["ready"]);
                std::thread::sleep(Duration::from_millis(2));
            }
            most
        }
    });
    let mut seen = std::collections::BTreeSet::new();
    let mut delivery = first;
    loop {
        assert!(!delivery.redelivered, "{}", text(&delivery));
        assert!(seen.insert(text(&delivery)), "delivered twice: {}", text(&delivery));
        ack(&delivery).await;
        if seen.len() == TOTAL as usize {
            break;
        }
        delivery = worker.next().await;
    }
    watching.store(false, Ordering::Relaxed);
    let most = watcher.join().expect("the watcher");
    assert!(most <= FLOW_LIMIT + FLOW_ROUND, "the backlog reached {most}");
    let expected: std::collections::BTreeSet<String> =
        (0..TOTAL).map(|i| format!("{i:0width$}", width = FLOW_BODY)).collect();
    assert_eq!(seen, expected, "every message consumed once");
    until_async("every publish is confirmed", || publisher.acked() == u64::from(TOTAL)).await;
    assert_eq!(publisher.nacked(), 0);
    worker.assert_quiet("nothing more").await;

    // Counted: INFO and /metrics say the same.
    until_async("no connection held", || common::info_u64(&mut resp, "clients", "flow_clients") == 0).await;
    let stalls = common::info_u64(&mut resp, "stats", "flow_stalls");
    assert!(stalls >= 1);
    let (_, scrape) = common::scrape::Scrape::get(&server.http_addr);
    assert_eq!(scrape.kind("turnstile_flow_stalls_total"), "counter");
    assert!(scrape.value("turnstile_flow_stalls_total", &[]) >= stalls as f64);
    assert!(scrape.value("turnstile_flow_seconds_total", &[]) >= (looked + 300) as f64 / 1000.0);
    assert_eq!(scrape.value("turnstile_connections_flow", &[]), 0.0);
}

/// The same over RESP: a client pipelining `Q.PUSH`es to a queue another connection consumes is
/// read no further once the queue holds the limit (its replies are out; its next pipeline waits in
/// its socket), stays held while the consumer lags, and is let go as the consumer acks: every push
/// answered, every message consumed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resp_pusher_is_held_at_the_flow_limit_and_let_go_as_consumers_catch_up() {
    const TOTAL: u64 = 500;
    const PIPELINE: u64 = 10;
    let b = Broker::turnstile_with(&["--queue-flow-limit", &FLOW_LIMIT.to_string()]);
    let server = b.server.as_ref().expect("turnstile");
    let mut resp = b.resp_client();
    let consumer_conn = b.connect().await;
    let cch = channel(&consumer_conn).await;
    declare(&cch, "jobs", FieldTable::default()).await;
    within(cch.basic_qos(1, BasicQosOptions::default())).await.expect("basic.qos");
    let mut worker = consume(&cch, "jobs", "worker").await;

    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let pusher = std::thread::spawn({
        let (answered, mut con) = (answered.clone(), server.client());
        move || {
            for round in 0..TOTAL / PIPELINE {
                let mut pipe = redis::pipe();
                for i in round * PIPELINE..(round + 1) * PIPELINE {
                    pipe.cmd("Q.PUSH").arg("jobs").arg(format!("{i:0width$}", width = FLOW_BODY));
                }
                let ids: Vec<u64> = pipe.query(&mut con).expect("pushes answered");
                assert_eq!(ids.len() as u64, PIPELINE);
                answered.fetch_add(PIPELINE, Ordering::Relaxed);
            }
        }
    });
    // The consumer takes one delivery and acks nothing yet.
    let first = worker.next().await;

    until_stopped_and_settled(&mut resp, "jobs", || answered.load(Ordering::Relaxed)).await;
    let held = queue_stats(&mut resp, "jobs");
    assert!(held["ready"] * 2 >= FLOW_LIMIT, "held below half the limit: {held:?}");
    // One pipeline per round: at most one past the limit.
    assert!(held["ready"] <= FLOW_LIMIT + PIPELINE, "more than a pipeline past the limit: {held:?}");
    held_for(&mut resp, 300).await;
    assert_eq!(queue_stats(&mut resp, "jobs")["pushed"], held["pushed"], "the queue grew while held");
    assert!(answered.load(Ordering::Relaxed) < TOTAL);

    // The consumer catches up; the pusher is let go and finishes.
    let mut seen = std::collections::BTreeSet::new();
    let mut delivery = first;
    loop {
        assert!(seen.insert(text(&delivery)), "delivered twice: {}", text(&delivery));
        ack(&delivery).await;
        if seen.len() as u64 == TOTAL {
            break;
        }
        delivery = worker.next().await;
    }
    pusher.join().expect("the pusher");
    assert_eq!(answered.load(Ordering::Relaxed), TOTAL);
    let expected: std::collections::BTreeSet<String> =
        (0..TOTAL).map(|i| format!("{i:0width$}", width = FLOW_BODY)).collect();
    assert_eq!(seen, expected, "every message consumed once");
    worker.assert_quiet("nothing more").await;
}

/// The text of message `i` of the flow tests' pushers.
fn job(i: u64) -> String {
    format!("{i:0width$}", width = FLOW_BODY)
}

/// Pushes message 0 to `jobs` and pops it on a connection of its own, which holds it unacked:
/// the queue now has a taker. Returns a client, the popper and the delivery it holds.
fn hold_first_job(server: &TestServer) -> (redis::Connection, redis::Connection, (u64, String)) {
    let (mut resp, mut popper) = (server.client(), server.client());
    let _: u64 = redis::cmd("Q.PUSH").arg("jobs").arg(job(0)).query(&mut resp).expect("Q.PUSH");
    let first = pop_job(&mut popper).expect("a message to pop");
    (resp, popper, first)
}

/// One `Q.POP jobs` on `con`: the delivery's receipt and text, or `None` when none was ready.
fn pop_job(con: &mut redis::Connection) -> Option<(u64, String)> {
    type Popped = Option<Vec<(u64, u64, Vec<u8>, u64)>>;
    let popped: Popped = redis::cmd("Q.POP").arg("jobs").query(con).expect("Q.POP");
    let (_, receipt, body, _) = popped?.pop().expect("one delivery");
    Some((receipt, String::from_utf8(body).expect("text")))
}

/// Pops and acks `jobs` on `popper` (a delivery is acked by the connection that took it), from
/// the delivery it holds, until `total` distinct messages came: each must come once, and they
/// must be messages `0..total`.
async fn pop_all_jobs(popper: &mut redis::Connection, first: (u64, String), total: u64) {
    let mut seen = std::collections::BTreeSet::new();
    let mut delivery = Some(first);
    while (seen.len() as u64) < total {
        match delivery.take() {
            Some((receipt, body)) => {
                assert!(seen.insert(body.clone()), "popped twice: {body}");
                let acked: u64 = redis::cmd("Q.ACK").arg("jobs").arg(receipt).query(popper).expect("Q.ACK");
                assert_eq!(acked, 1, "receipt {receipt} acked");
            }
            // Ran dry before the pusher was let go again: look again shortly.
            None => tokio::time::sleep(POLL).await,
        }
        delivery = pop_job(popper);
    }
    let expected: std::collections::BTreeSet<String> = (0..total).map(job).collect();
    assert_eq!(seen, expected, "every message popped once");
}

/// Runs `push` on a thread of its own. It counts the pushes answered into the returned counter,
/// which starts at 1: message 0 is the popper's, pushed before.
fn spawn_pusher(
    push: impl FnOnce(&std::sync::atomic::AtomicU64) + Send + 'static,
) -> (std::sync::Arc<std::sync::atomic::AtomicU64>, std::thread::JoinHandle<()>) {
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1));
    let pusher = std::thread::spawn({
        let answered = answered.clone();
        move || push(&answered)
    });
    (answered, pusher)
}

/// The popper catches up: it pops and acks all `total` messages, and the pusher, let go,
/// finishes with every push answered.
async fn catch_up(
    popper: &mut redis::Connection,
    first: (u64, String),
    total: u64,
    (answered, pusher): (std::sync::Arc<std::sync::atomic::AtomicU64>, std::thread::JoinHandle<()>),
) {
    pop_all_jobs(popper, first, total).await;
    pusher.join().expect("the pusher");
    assert_eq!(answered.load(Ordering::Relaxed), total);
}

/// A client that pops in a loop without waiting (`Q.POP`, then `Q.ACK`) takes from the queue as
/// a consumer does: while it holds a delivery and lags, a RESP pusher on another connection is
/// held at the limit; as it pops and acks, the pusher is let go, and every message is popped once.
/// The same with the pushes in `MULTI` / `EXEC` transactions instead of plain pipelines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resp_pusher_is_held_while_a_popping_client_lags_and_let_go_as_it_catches_up() {
    for transactions in [false, true] {
        held_while_a_popping_client_lags(transactions).await;
    }
}

async fn held_while_a_popping_client_lags(transactions: bool) {
    // Message 0 is pushed and popped first; the pusher sends the rest.
    const TOTAL: u64 = 501;
    const PIPELINE: u64 = 10;
    let b = Broker::turnstile_with(&["--queue-flow-limit", &FLOW_LIMIT.to_string()]);
    let server = b.server.as_ref().expect("turnstile");
    // The popper holds a delivery before the pusher starts, and acks nothing yet.
    let (mut resp, mut popper, first) = hold_first_job(server);

    let pushing = spawn_pusher({
        let mut con = server.client();
        move |answered| {
            for round in 0..(TOTAL - 1) / PIPELINE {
                let mut pipe = redis::pipe();
                if transactions {
                    pipe.atomic();
                }
                for i in 1 + round * PIPELINE..1 + (round + 1) * PIPELINE {
                    pipe.cmd("Q.PUSH").arg("jobs").arg(job(i));
                }
                let ids: Vec<u64> = pipe.query(&mut con).expect("pushes answered");
                assert_eq!(ids.len() as u64, PIPELINE);
                answered.fetch_add(PIPELINE, Ordering::Relaxed);
            }
        }
    });
    let answered = pushing.0.clone();
    until_stopped_and_settled(&mut resp, "jobs", || answered.load(Ordering::Relaxed)).await;
    let held = queue_stats(&mut resp, "jobs");
    assert!(held["ready"] * 2 >= FLOW_LIMIT, "held below half the limit: {held:?}");
    assert!(held["ready"] <= FLOW_LIMIT + PIPELINE, "more than a pipeline past the limit: {held:?}");
    held_for(&mut resp, 300).await;
    assert_eq!(queue_stats(&mut resp, "jobs")["pushed"], held["pushed"], "the queue grew while held");
    assert!(answered.load(Ordering::Relaxed) < TOTAL);

    catch_up(&mut popper, first, TOTAL, pushing).await;
    assert!(pop_job(&mut popper).is_none(), "nothing more");
}

/// An HTTP publisher (`POST /api/queues/NAME/messages`, one request after another's answer) is
/// held as a RESP one is: the push that takes a consumed queue to the limit is answered once the
/// consumers have taken it below half. Every push answered, every message popped once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_pusher_is_held_at_the_flow_limit_and_let_go_as_consumers_catch_up() {
    const TOTAL: u64 = 150;
    let b = Broker::turnstile_with(&["--queue-flow-limit", &FLOW_LIMIT.to_string()]);
    let server = b.server.as_ref().expect("turnstile");
    // The popper holds message 0 before the HTTP pusher starts.
    let (mut resp, mut popper, first) = hold_first_job(server);

    let pushing = spawn_pusher({
        let http = server.http_addr.clone();
        move |answered| {
            for i in 1..TOTAL {
                let request = serde_json::json!({ "payload": job(i) }).to_string();
                let (status, _, text) = common::http_request(
                    &http,
                    "POST",
                    "/api/queues/jobs/messages",
                    Some(&request),
                    "application/json",
                );
                assert_eq!(status, 200, "push {i}: {text}");
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let answered = pushing.0.clone();

    // The request held is stored but not answered: counted with the answered ones here.
    until_stopped_and_settled(&mut resp, "jobs", || answered.load(Ordering::Relaxed) + 1).await;
    let held = queue_stats(&mut resp, "jobs");
    // One request at a time: the one that reached the limit is the one held.
    assert_eq!(held["ready"], FLOW_LIMIT, "held at the limit: {held:?}");
    held_for(&mut resp, 300).await;
    assert_eq!(queue_stats(&mut resp, "jobs")["pushed"], held["pushed"], "the queue grew while held");
    assert!(answered.load(Ordering::Relaxed) < TOTAL);

    catch_up(&mut popper, first, TOTAL, pushing).await;
}

/// A queue nobody consumes is not throttled, however long: a backlog there is the user's intent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_nobody_consumes_does_not_hold_its_publisher() {
    let total = 10 * u32::try_from(FLOW_LIMIT).expect("a small limit");
    let b = Broker::turnstile_with(&["--queue-flow-limit", &FLOW_LIMIT.to_string()]);
    let mut resp = b.resp_client();
    let conn = b.connect().await;
    declare(&channel(&conn).await, "jobs", FieldTable::default()).await;
    let publisher = FlowPublisher::connect(&b).await;
    publisher.publish("jobs", total);
    until_async("every publish is confirmed", || publisher.acked() == u64::from(total)).await;
    assert_eq!(publisher.nacked(), 0);
    assert_eq!(queue_stats(&mut resp, "jobs")["ready"], u64::from(total));
    assert_eq!(common::info_u64(&mut resp, "stats", "flow_stalls"), 0);
}
