//! The machine's stories: given these frames, replies and effects, exactly these actions.

use std::time::{Duration, Instant};

use bytes::Bytes;
use turnstile_amqp::args::QueueArgs;
use turnstile_amqp::{
    AMQPClass, AmqpError, Frame, basic, channel as chan, confirm, connection, exchange, queue,
};
use turnstile_core::{
    Command, Consume, CoreError, Delivery, Effect, ExchangeDecl, ExchangeKind, Pop, Publish, Push, Query,
    QueueConfig, QueueStats, Reply, SessionId, Taker,
};

use super::{Action, CLOSE_TIMEOUT, CallId, Input, Machine, NotApplied, Settings};
use crate::amqp::DELIVERY_LEASE_MS;

const SESSION: SessionId = SessionId(7);
/// Content header properties with no field set, as a client sends them.
const NO_PROPERTIES: [u8; 2] = [0, 0];

/// A client of the machine: feeds inputs at a time the test sets, and collects the actions.
struct Client {
    m: Machine,
    now: Instant,
}

impl Client {
    fn new() -> Client {
        Client::with(|_| {})
    }

    fn with(change: impl FnOnce(&mut Settings)) -> Client {
        let mut settings = Settings {
            session: SESSION,
            channel_max: 16,
            cancel_notify: true,
            blocked_notify: true,
            max_payload: 1024,
            name_seed: 1,
        };
        change(&mut settings);
        Client { m: Machine::new(settings), now: Instant::now() }
    }

    fn feed(&mut self, input: Input) -> Vec<Action> {
        self.m.handle(self.now, input);
        let mut actions = Vec::new();
        self.m.take_actions(&mut actions);
        actions
    }

    fn method(&mut self, n: u16, method: AMQPClass) -> Vec<Action> {
        self.feed(Input::Frame(Frame::Method { channel: n, method }))
    }

    fn header(&mut self, n: u16, body_size: u64) -> Vec<Action> {
        self.feed(Input::Frame(Frame::Header {
            channel: n,
            class_id: 60,
            body_size,
            properties: Box::default(),
            raw_properties: Bytes::from_static(&NO_PROPERTIES),
        }))
    }

    fn body(&mut self, n: u16, data: &'static [u8]) -> Vec<Action> {
        self.feed(Input::Frame(Frame::Body { channel: n, data: Bytes::from_static(data) }))
    }

    fn reply(&mut self, id: u64, reply: Reply) -> Vec<Action> {
        self.feed(Input::Reply { id: CallId(id), reply: Ok(reply) })
    }

    fn open(&mut self, n: u16) {
        let open = AMQPClass::Channel(chan::AMQPMethod::Open(chan::Open {}));
        assert_eq!(
            self.method(n, open),
            [send(n, AMQPClass::Channel(chan::AMQPMethod::OpenOk(chan::OpenOk {})))]
        );
    }

    fn confirm_select(&mut self, n: u16) {
        let select = AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select { nowait: false }));
        assert_eq!(
            self.method(n, select),
            [
                send(n, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {}))),
                measured("confirm.select")
            ]
        );
    }

    /// A whole publish in one body frame; the id of its proposal.
    fn publish(
        &mut self,
        n: u16,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        body: &'static [u8],
    ) -> u64 {
        let method = basic::Publish {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            mandatory,
            ..Default::default()
        };
        assert_eq!(
            self.method(n, AMQPClass::Basic(basic::AMQPMethod::Publish(method))),
            [measured("basic.publish")]
        );
        assert_eq!(self.header(n, body.len() as u64), []);
        let actions = self.body(n, body);
        match &actions[..] {
            [Action::Propose { id, command }] => {
                assert_eq!(*command, publish_command(exchange, routing_key, body));
                id.0
            }
            other => panic!("expected one proposal, got {other:?}"),
        }
    }

    /// Starts consumer `tag` on `queue`; the core calls it `consumer_id`.
    fn consume(&mut self, n: u16, queue: &str, tag: &str, consumer_id: u64) {
        let consume = basic::Consume { queue: queue.into(), consumer_tag: tag.into(), ..Default::default() };
        let actions = self.method(n, AMQPClass::Basic(basic::AMQPMethod::Consume(consume)));
        let id = match &actions[..] {
            [Action::Propose { id, command: Command::Consume(c) }] => {
                assert_eq!(
                    *c,
                    Consume {
                        queue: queue.to_owned(),
                        session: SESSION,
                        credit: 0,
                        lease: Some(DELIVERY_LEASE_MS),
                        auto_ack: false,
                        exclusive: false,
                        pool: None,
                    }
                );
                id.0
            }
            other => panic!("expected a consume proposal, got {other:?}"),
        };
        let ok = basic::ConsumeOk { consumer_tag: tag.into() };
        assert_eq!(
            self.reply(id, Reply::Consumer { consumer_id }),
            [send(n, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(ok))), measured("basic.consume")]
        );
    }

    fn deliver(&mut self, consumer_id: u64, queue: &str, receipts: &[u64]) -> Vec<Action> {
        self.feed(Input::Effect(Effect::Delivered {
            session: SESSION,
            to: Taker::Consumer { consumer_id },
            queue: queue.to_owned(),
            deliveries: receipts.iter().map(|&r| delivery(r)).collect(),
        }))
    }
}

fn send(channel: u16, method: AMQPClass) -> Action {
    Action::Send { channel, method }
}

fn measured(method: &'static str) -> Action {
    Action::Measured { method, elapsed: Duration::ZERO }
}

fn basic(method: basic::AMQPMethod) -> AMQPClass {
    AMQPClass::Basic(method)
}

fn ack(n: u16, delivery_tag: u64, multiple: bool) -> Action {
    send(n, basic(basic::AMQPMethod::Ack(basic::Ack { delivery_tag, multiple })))
}

fn nack(n: u16, delivery_tag: u64) -> Action {
    send(n, basic(basic::AMQPMethod::Nack(basic::Nack { delivery_tag, multiple: false, requeue: false })))
}

fn qos(prefetch_count: u16) -> AMQPClass {
    basic(basic::AMQPMethod::Qos(basic::Qos { prefetch_count, global: false }))
}

fn qos_ok(n: u16) -> Action {
    send(n, basic(basic::AMQPMethod::QosOk(basic::QosOk {})))
}

fn flow(active: bool) -> AMQPClass {
    AMQPClass::Channel(chan::AMQPMethod::Flow(chan::Flow { active }))
}

fn flow_ok(n: u16, active: bool) -> Action {
    send(n, AMQPClass::Channel(chan::AMQPMethod::FlowOk(chan::FlowOk { active })))
}

fn channel_close(n: u16, reply_code: u16, reply_text: &str, class_id: u16, method_id: u16) -> Action {
    let close = chan::Close { reply_code, reply_text: reply_text.into(), class_id, method_id };
    send(n, AMQPClass::Channel(chan::AMQPMethod::Close(close)))
}

fn connection_close(reply_code: u16, reply_text: &str, class_id: u16, method_id: u16) -> Action {
    let close = connection::Close { reply_code, reply_text: reply_text.into(), class_id, method_id };
    send(0, AMQPClass::Connection(connection::AMQPMethod::Close(close)))
}

/// A message as the core hands it out: pushed over RESP (no stored properties), first delivery.
fn delivery(receipt: u64) -> Delivery {
    Delivery {
        id: receipt,
        receipt,
        payload: Bytes::from(format!("m{receipt}")),
        properties: Bytes::new(),
        deliveries: 1,
        priority: 0,
        lease: DELIVERY_LEASE_MS,
        dead: None,
    }
}

/// `Basic.Deliver` of [`delivery`]`(receipt)` from `queue` to consumer `tag` on channel `n`.
fn delivered(n: u16, tag: &str, delivery_tag: u64, queue: &str, receipt: u64) -> Action {
    let deliver = basic::Deliver {
        consumer_tag: tag.into(),
        delivery_tag,
        redelivered: false,
        exchange: "".into(),
        routing_key: queue.into(),
    };
    Action::SendContent {
        channel: n,
        method: basic(basic::AMQPMethod::Deliver(deliver)),
        properties: Bytes::new(),
        body: Bytes::from(format!("m{receipt}")),
    }
}

fn submit_ack(queue: &str, receipts: &[u64]) -> Action {
    Action::Submit(Command::Ack { queue: queue.to_owned(), receipts: receipts.to_vec(), fence: None })
}

fn submit_nack(queue: &str, receipt: u64, dead_letter: bool) -> Action {
    Action::Submit(Command::Nack { queue: queue.to_owned(), receipt, delay: 0, dead_letter })
}

fn submit_cancel(queue: &str, consumer_id: u64) -> Action {
    Action::Submit(Command::Cancel { queue: queue.to_owned(), consumer_id })
}

fn publish_command(exchange: &str, routing_key: &str, body: &'static [u8]) -> Command {
    Command::Publish(Publish {
        exchange: exchange.to_owned(),
        routing_key: routing_key.to_owned(),
        push: Push {
            properties: turnstile_amqp::props::encode(exchange, routing_key, &NO_PROPERTIES),
            ..Push::new(String::new(), Bytes::from_static(body))
        },
    })
}

fn published() -> Reply {
    Reply::Published { routed: 1, refused: 0 }
}

fn stats(ready: u64, consumers: u64) -> Reply {
    Reply::QueueStats(QueueStats { ready, consumers, ..QueueStats::default() })
}

#[test]
fn a_body_split_over_frames_is_one_publish() {
    let mut c = Client::new();
    c.open(1);
    let publish = basic::Publish { routing_key: "jobs".into(), ..Default::default() };
    assert_eq!(c.method(1, basic(basic::AMQPMethod::Publish(publish))), [measured("basic.publish")]);
    assert_eq!(c.header(1, 11), []);
    assert_eq!(c.body(1, b"hello "), []);
    assert_eq!(
        c.body(1, b"world"),
        [Action::Propose { id: CallId(1), command: publish_command("", "jobs", b"hello world") }]
    );
    // Without confirms, a publish's reply sends nothing.
    assert_eq!(c.reply(1, published()), []);
    assert_eq!(c.feed(Input::Flush), []);
}

#[test]
fn confirms_collapse_into_multiple_acks_and_a_refused_publish_breaks_the_run() {
    let mut c = Client::new();
    c.open(1);
    c.confirm_select(1);
    let ids: Vec<u64> = (0..5).map(|_| c.publish(1, "", "jobs", false, b"x")).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    // Replies are used in publish order: the second waits for the first.
    assert_eq!(c.reply(2, published()), []);
    assert_eq!(c.reply(1, published()), []);
    assert_eq!(c.reply(3, Reply::Published { routed: 0, refused: 1 }), [ack(1, 2, true), nack(1, 3)]);
    assert_eq!(c.reply(4, published()), []);
    assert_eq!(c.feed(Input::Flush), [ack(1, 4, false)]);
    assert_eq!(c.feed(Input::Flush), []);
    // A publish the log did not take is nacked too.
    let not_taken = NotApplied::Log(AmqpError::internal("shutting down"));
    assert_eq!(c.feed(Input::Reply { id: CallId(5), reply: Err(not_taken) }), [nack(1, 5)]);
}

#[test]
fn a_mandatory_publish_that_went_nowhere_is_returned_before_its_ack() {
    let mut c = Client::new();
    c.open(1);
    c.confirm_select(1);
    let id = c.publish(1, "amq.direct", "nowhere", true, b"lost");
    let ret = basic::Return {
        reply_code: 312,
        reply_text: "NO_ROUTE".into(),
        exchange: "amq.direct".into(),
        routing_key: "nowhere".into(),
    };
    assert_eq!(
        c.reply(id, Reply::Published { routed: 0, refused: 0 }),
        [Action::SendContent {
            channel: 1,
            method: basic(basic::AMQPMethod::Return(ret)),
            properties: Bytes::from_static(&NO_PROPERTIES),
            body: Bytes::from_static(b"lost"),
        }]
    );
    assert_eq!(c.feed(Input::Flush), [ack(1, 1, false)]);
}

#[test]
fn a_publish_to_a_missing_exchange_closes_its_channel() {
    let mut c = Client::new();
    c.open(1);
    c.confirm_select(1);
    let id = c.publish(1, "nope", "k", false, b"x");
    let missing = CoreError::NoSuchExchange("nope".into());
    let text = format!("NOT_FOUND - {missing}");
    assert_eq!(c.reply(id, Reply::Error(missing)), [channel_close(1, 404, &text, 60, 40)]);
    // No confirm for it, and nothing from the closing channel.
    assert_eq!(c.feed(Input::Flush), []);
}

#[test]
fn a_publish_the_cluster_could_not_take_closes_its_channel_with_the_reason() {
    let mut c = Client::new();
    c.open(1);
    c.confirm_select(1);
    let first = c.publish(1, "", "jobs", false, b"x");
    let second = c.publish(1, "", "jobs", false, b"y");
    let third = c.publish(1, "", "jobs", false, b"z");
    assert_eq!(c.reply(first, published()), []);
    let down = AmqpError::new(320, "CLUSTERDOWN no leader reachable");
    // The earlier publish's confirm goes out first; the refused one closes the channel, and a
    // publish queued behind it answers nothing on the closing channel.
    assert_eq!(
        c.feed(Input::Reply { id: CallId(second), reply: Err(NotApplied::Log(down)) }),
        [
            ack(1, 1, false),
            channel_close(1, 320, "CONNECTION_FORCED - CLUSTERDOWN no leader reachable", 60, 40)
        ]
    );
    assert_eq!(c.reply(third, published()), []);
    assert_eq!(c.feed(Input::Flush), []);
}

#[test]
fn a_synchronous_method_waits_for_the_earlier_publishes_and_their_confirms() {
    let mut c = Client::new();
    c.open(1);
    c.confirm_select(1);
    let id = c.publish(1, "", "jobs", false, b"x");
    let declare = queue::Declare { queue: "jobs".into(), passive: true, ..Default::default() };
    assert_eq!(c.method(1, AMQPClass::Queue(queue::AMQPMethod::Declare(declare))), []);
    assert!(c.m.is_waiting());
    assert_eq!(
        c.reply(id, published()),
        [
            ack(1, 1, false),
            Action::Query { id: CallId(2), query: Query::QueueConfig { name: "jobs".into() } }
        ]
    );
    assert_eq!(
        c.reply(2, Reply::QueueConfig(Box::default())),
        [Action::Query { id: CallId(3), query: Query::QueueStats { name: "jobs".into() } }]
    );
    let ok = queue::DeclareOk { queue: "jobs".into(), message_count: 5, consumer_count: 1 };
    assert_eq!(
        c.reply(3, stats(5, 1)),
        [send(1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok))), measured("queue.declare")]
    );
    assert!(!c.m.is_waiting());
}

#[test]
fn frames_and_effects_that_come_while_a_method_waits_run_after_it_in_order() {
    let mut c = Client::new();
    c.open(1);
    c.consume(1, "q", "c1", 10);
    let purge = queue::Purge { queue: "q".into(), nowait: false };
    let in_session =
        Command::InSession { session: SESSION, command: Box::new(Command::PurgeQueue { name: "q".into() }) };
    assert_eq!(
        c.method(1, AMQPClass::Queue(queue::AMQPMethod::Purge(purge))),
        [Action::Propose { id: CallId(2), command: in_session }]
    );
    assert_eq!(c.deliver(10, "q", &[100]), []);
    assert_eq!(c.method(1, qos(5)), []);
    assert_eq!(
        c.reply(2, Reply::Int(3)),
        [
            send(1, AMQPClass::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk { message_count: 3 }))),
            measured("queue.purge"),
            delivered(1, "c1", 1, "q", 100),
            qos_ok(1),
            measured("basic.qos"),
        ]
    );
}

#[test]
fn a_reply_that_nothing_waits_for_changes_nothing() {
    let mut c = Client::new();
    c.open(1);
    assert_eq!(c.reply(99, Reply::Ok), []);
    assert_eq!(c.method(1, qos(1)), [qos_ok(1), measured("basic.qos")]);
}

#[test]
fn delivery_tags_count_per_channel_and_basic_get_shares_them() {
    let mut c = Client::new();
    c.open(1);
    c.open(2);
    c.consume(1, "a", "c1", 10);
    c.consume(2, "b", "c2", 20);
    assert_eq!(c.deliver(10, "a", &[1, 2]), [delivered(1, "c1", 1, "a", 1), delivered(1, "c1", 2, "a", 2)]);
    assert_eq!(c.deliver(20, "b", &[3]), [delivered(2, "c2", 1, "b", 3)]);
    assert_eq!(c.deliver(10, "a", &[4]), [delivered(1, "c1", 3, "a", 4)]);

    let get = basic::Get { queue: "b".into(), no_ack: false };
    let pop = Pop {
        queue: "b".into(),
        session: Some(SESSION),
        count: 1,
        wait: 0,
        lease: Some(DELIVERY_LEASE_MS),
        auto_ack: false,
        keep: false,
    };
    assert_eq!(
        c.method(2, basic(basic::AMQPMethod::Get(get))),
        [Action::Propose { id: CallId(3), command: Command::Pop(pop) }]
    );
    assert_eq!(
        c.reply(3, Reply::Deliveries(vec![delivery(5)])),
        [Action::Query { id: CallId(4), query: Query::QueueStats { name: "b".into() } }]
    );
    let get_ok = basic::GetOk {
        delivery_tag: 2,
        redelivered: false,
        exchange: "".into(),
        routing_key: "b".into(),
        message_count: 7,
    };
    assert_eq!(
        c.reply(4, stats(7, 1)),
        [
            Action::SendContent {
                channel: 2,
                method: basic(basic::AMQPMethod::GetOk(get_ok)),
                properties: Bytes::new(),
                body: Bytes::from_static(b"m5"),
            },
            measured("basic.get"),
        ]
    );
    // An empty queue: GetEmpty, no tag used.
    let get = basic::Get { queue: "b".into(), ..Default::default() };
    assert!(matches!(
        &c.method(2, basic(basic::AMQPMethod::Get(get)))[..],
        [Action::Propose { id: CallId(5), .. }]
    ));
    assert_eq!(
        c.reply(5, Reply::Deliveries(Vec::new())),
        [send(2, basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {}))), measured("basic.get")]
    );
    assert_eq!(c.deliver(20, "b", &[6]), [delivered(2, "c2", 3, "b", 6)]);
}

#[test]
fn basic_ack_multiple_settles_every_earlier_tag_with_one_command_per_queue() {
    let mut c = Client::new();
    c.open(1);
    c.consume(1, "a", "c1", 10);
    c.consume(1, "b", "c2", 11);
    c.deliver(10, "a", &[100]);
    c.deliver(11, "b", &[200]);
    c.deliver(10, "a", &[101]);
    c.deliver(11, "b", &[201]);
    let ack_method =
        |delivery_tag, multiple| basic(basic::AMQPMethod::Ack(basic::Ack { delivery_tag, multiple }));
    assert_eq!(
        c.method(1, ack_method(3, true)),
        [submit_ack("a", &[100, 101]), submit_ack("b", &[200]), measured("basic.ack")]
    );
    // Tag 0 with `multiple`: every outstanding one.
    assert_eq!(c.method(1, ack_method(0, true)), [submit_ack("b", &[201]), measured("basic.ack")]);
    // Tag 3 again: unknown now, which closes the channel (consumers cancelled in tag order).
    assert_eq!(
        c.method(1, ack_method(3, false)),
        [
            measured("basic.ack"),
            submit_cancel("a", 10),
            submit_cancel("b", 11),
            channel_close(1, 406, "PRECONDITION_FAILED - unknown delivery tag 3", 60, 80),
        ]
    );
}

#[test]
fn reject_and_nack_requeue_or_dead_letter() {
    let mut c = Client::new();
    c.open(1);
    c.consume(1, "a", "c1", 10);
    c.deliver(10, "a", &[100, 101, 102]);
    let reject = basic::Reject { delivery_tag: 2, requeue: false };
    assert_eq!(
        c.method(1, basic(basic::AMQPMethod::Reject(reject))),
        [submit_nack("a", 101, true), measured("basic.reject")]
    );
    let nack = basic::Nack { delivery_tag: 3, multiple: true, requeue: true };
    assert_eq!(
        c.method(1, basic(basic::AMQPMethod::Nack(nack))),
        [submit_nack("a", 100, false), submit_nack("a", 102, false), measured("basic.nack")]
    );
}

#[test]
fn channel_flow_holds_deliveries_and_releases_them_in_order() {
    let mut c = Client::new();
    c.open(1);
    c.consume(1, "a", "c1", 10);
    assert_eq!(c.method(1, flow(false)), [flow_ok(1, false), measured("channel.flow")]);
    assert_eq!(c.deliver(10, "a", &[100, 101]), []);
    assert_eq!(
        c.method(1, flow(true)),
        [
            flow_ok(1, true),
            delivered(1, "c1", 1, "a", 100),
            delivered(1, "c1", 2, "a", 101),
            measured("channel.flow"),
        ]
    );
    assert_eq!(c.deliver(10, "a", &[102]), [delivered(1, "c1", 3, "a", 102)]);
}

#[test]
fn a_consumer_cancelled_by_the_server_is_told_when_the_client_can_hear_it() {
    let cancelled = Effect::ConsumerCancelled { session: SESSION, consumer_id: 10, queue: "a".into() };
    let mut c = Client::new();
    c.open(1);
    c.consume(1, "a", "c1", 10);
    let cancel = basic::Cancel { consumer_tag: "c1".into(), nowait: true };
    assert_eq!(c.feed(Input::Effect(cancelled.clone())), [send(1, basic(basic::AMQPMethod::Cancel(cancel)))]);
    // A delivery that was already on its way goes back.
    assert_eq!(c.deliver(10, "a", &[100]), [submit_nack("a", 100, false)]);
    // The tag is free again.
    c.consume(1, "a", "c1", 11);

    let mut c = Client::with(|s| s.cancel_notify = false);
    c.open(1);
    c.consume(1, "a", "c1", 10);
    assert_eq!(c.feed(Input::Effect(cancelled)), []);
}

#[test]
fn closing_a_channel_cancels_its_consumers_and_returns_unacked_and_held_deliveries() {
    let mut c = Client::new();
    c.open(1);
    c.consume(1, "a", "c1", 10);
    c.deliver(10, "a", &[100, 101]);
    let ack = basic::Ack { delivery_tag: 1, multiple: false };
    assert_eq!(
        c.method(1, basic(basic::AMQPMethod::Ack(ack))),
        [submit_ack("a", &[100]), measured("basic.ack")]
    );
    c.method(1, flow(false));
    assert_eq!(c.deliver(10, "a", &[102]), []);
    let close = chan::Close { reply_code: 200, reply_text: "bye".into(), class_id: 0, method_id: 0 };
    assert_eq!(
        c.method(1, AMQPClass::Channel(chan::AMQPMethod::Close(close))),
        [
            submit_cancel("a", 10),
            submit_nack("a", 101, false),
            submit_nack("a", 102, false),
            send(1, AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {}))),
            measured("channel.close"),
        ]
    );
    assert_eq!(c.deliver(10, "a", &[103]), [submit_nack("a", 103, false)]);
    // Reopened, the channel starts from tag 1 with no consumers.
    c.open(1);
    c.consume(1, "a", "c1", 11);
    assert_eq!(c.deliver(11, "a", &[104]), [delivered(1, "c1", 1, "a", 104)]);
}

#[test]
fn a_channel_error_closes_only_its_channel() {
    let mut c = Client::new();
    c.open(1);
    c.open(2);
    let declare = queue::Declare { queue: "missing".into(), passive: true, ..Default::default() };
    assert_eq!(
        c.method(1, AMQPClass::Queue(queue::AMQPMethod::Declare(declare))),
        [Action::Query { id: CallId(1), query: Query::QueueConfig { name: "missing".into() } }]
    );
    assert_eq!(
        c.reply(1, Reply::Error(CoreError::NoSuchQueue("missing".into()))),
        [
            measured("queue.declare"),
            channel_close(1, 404, "NOT_FOUND - no queue 'missing' in vhost '/'", 50, 10)
        ]
    );
    // Until the client's CloseOk, the channel drops what comes; the other channel goes on.
    assert_eq!(c.method(1, qos(1)), []);
    assert_eq!(c.method(2, qos(1)), [qos_ok(2), measured("basic.qos")]);
    assert_eq!(c.method(1, AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {}))), []);
    c.open(1);
}

#[test]
fn a_connection_error_closes_the_connection_and_ends_it_at_close_ok() {
    let mut c = Client::new();
    let close = connection_close(504, "CHANNEL_ERROR - expected 'channel.open' on channel 3", 60, 10);
    assert_eq!(c.method(3, qos(1)), [close]);
    let e = AmqpError::channel_error("expected 'channel.open' on channel 3").on(60, 10);
    // Only the answer counts now.
    assert_eq!(c.method(1, AMQPClass::Channel(chan::AMQPMethod::Open(chan::Open {}))), []);
    c.now += Duration::from_secs(1);
    assert_eq!(c.feed(Input::Tick { memory_full: false }), []);
    let close_ok = AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {}));
    assert_eq!(c.method(0, close_ok.clone()), [Action::End(Some(e))]);
    assert_eq!(c.method(0, close_ok), []);
}

#[test]
fn nothing_is_sent_after_connection_close_but_the_confirms_earned_before_it() {
    let mut c = Client::new();
    c.open(1);
    c.confirm_select(1);
    c.consume(1, "a", "c1", 10);
    let first = c.publish(1, "", "jobs", false, b"x");
    let second = c.publish(1, "", "jobs", false, b"y");
    assert_eq!(c.reply(first, published()), []);
    assert_eq!(
        c.method(3, qos(1)),
        [
            ack(1, 1, false),
            connection_close(504, "CHANNEL_ERROR - expected 'channel.open' on channel 3", 60, 10)
        ]
    );
    assert_eq!(c.reply(second, published()), []);
    assert_eq!(c.deliver(10, "a", &[100]), []);
    assert_eq!(c.feed(Input::Flush), []);
}

#[test]
fn a_connection_error_without_an_answer_ends_after_the_close_timeout() {
    let mut c = Client::new();
    let heartbeat = Frame::Heartbeat { channel: 2 };
    assert_eq!(
        c.feed(Input::Frame(heartbeat)),
        [connection_close(501, "FRAME_ERROR - heartbeat frame on a channel other than 0", 0, 0)]
    );
    c.now += CLOSE_TIMEOUT;
    assert_eq!(c.feed(Input::Tick { memory_full: false }), []);
    c.now += Duration::from_millis(1);
    let e = AmqpError::new(501, "heartbeat frame on a channel other than 0");
    assert_eq!(c.feed(Input::Tick { memory_full: false }), [Action::End(Some(e))]);
}

#[test]
fn the_client_closing_the_connection_ends_it_cleanly() {
    let mut c = Client::new();
    let close = connection::Close { reply_code: 200, reply_text: "bye".into(), class_id: 0, method_id: 0 };
    assert_eq!(
        c.method(0, AMQPClass::Connection(connection::AMQPMethod::Close(close))),
        [
            send(0, AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {}))),
            Action::End(None)
        ]
    );
    let mut c = Client::new();
    assert_eq!(
        c.feed(Input::Shutdown),
        [
            connection_close(
                320,
                "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'",
                0,
                0
            ),
            Action::End(None),
        ]
    );
}

#[test]
fn a_message_over_the_max_payload_closes_its_channel_and_its_body_is_dropped() {
    let mut c = Client::new();
    c.open(1);
    let publish = basic::Publish { routing_key: "jobs".into(), ..Default::default() };
    c.method(1, basic(basic::AMQPMethod::Publish(publish)));
    assert_eq!(
        c.header(1, 2000),
        [channel_close(
            1,
            406,
            "PRECONDITION_FAILED - message size 2000: value is larger than max-payload (1024 bytes)",
            60,
            40
        )]
    );
    assert_eq!(c.body(1, b"part of it"), []);
    assert_eq!(c.method(1, AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {}))), []);
    // Content on the channel, now closed, is a connection error.
    assert_eq!(
        c.body(1, b"more"),
        [connection_close(504, "CHANNEL_ERROR - content frame on channel 1, which is not open", 0, 0)]
    );
}

#[test]
fn a_method_in_the_middle_of_content_is_a_connection_error() {
    let mut c = Client::new();
    c.open(1);
    let publish = basic::Publish { routing_key: "jobs".into(), ..Default::default() };
    c.method(1, basic(basic::AMQPMethod::Publish(publish)));
    assert_eq!(
        c.method(1, qos(1)),
        [connection_close(
            505,
            "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead on channel 1",
            0,
            0
        )]
    );
}

#[test]
fn publishes_refused_for_memory_block_the_connection_until_memory_frees() {
    let mut c = Client::new();
    c.open(1);
    c.confirm_select(1);
    let first = c.publish(1, "", "jobs", false, b"x");
    let second = c.publish(1, "", "jobs", false, b"y");
    let blocked = connection::Blocked { reason: "low on memory".into() };
    assert_eq!(
        c.feed(Input::Reply { id: CallId(first), reply: Err(NotApplied::MemoryFull) }),
        [send(0, AMQPClass::Connection(connection::AMQPMethod::Blocked(blocked))), nack(1, 1)]
    );
    assert_eq!(c.feed(Input::Reply { id: CallId(second), reply: Err(NotApplied::MemoryFull) }), [nack(1, 2)]);
    assert_eq!(c.feed(Input::Tick { memory_full: true }), []);
    assert_eq!(
        c.feed(Input::Tick { memory_full: false }),
        [send(0, AMQPClass::Connection(connection::AMQPMethod::Unblocked(connection::Unblocked {})))]
    );
    assert_eq!(c.feed(Input::Tick { memory_full: false }), []);
}

#[test]
fn a_confirm_never_goes_to_a_later_channel_with_the_same_number() {
    let mut c = Client::new();
    c.open(1);
    c.confirm_select(1);
    let id = c.publish(1, "", "jobs", false, b"x");
    // The channel is closed (a message over the max) and opened again before the reply comes.
    let publish = basic::Publish { routing_key: "jobs".into(), ..Default::default() };
    c.method(1, basic(basic::AMQPMethod::Publish(publish)));
    assert_eq!(c.header(1, 2000).len(), 1);
    c.method(1, AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {})));
    c.open(1);
    let select = AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select { nowait: false }));
    assert_eq!(c.method(1, select), []);
    assert_eq!(
        c.reply(id, published()),
        [
            send(1, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {}))),
            measured("confirm.select")
        ]
    );
    assert_eq!(c.feed(Input::Flush), []);
}

#[test]
fn a_method_is_measured_from_its_frame_to_its_answer() {
    let mut c = Client::new();
    c.open(1);
    let declare = exchange::Declare { exchange: "x".into(), kind: "direct".into(), ..Default::default() };
    let decl = ExchangeDecl {
        name: "x".into(),
        kind: ExchangeKind::Direct,
        durable: false,
        auto_delete: false,
        internal: false,
    };
    assert_eq!(
        c.method(1, AMQPClass::Exchange(exchange::AMQPMethod::Declare(declare))),
        [Action::Propose { id: CallId(1), command: Command::DeclareExchange(decl) }]
    );
    c.now += Duration::from_millis(5);
    assert_eq!(
        c.reply(1, Reply::Ok),
        [
            send(1, AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {}))),
            Action::Measured { method: "exchange.declare", elapsed: Duration::from_millis(5) },
        ]
    );
}

#[test]
fn queue_declare_creates_a_missing_queue_which_an_empty_name_then_means() {
    let mut c = Client::new();
    c.open(1);
    let declare = queue::Declare { queue: "".into(), exclusive: true, ..Default::default() };
    let actions = c.method(1, AMQPClass::Queue(queue::AMQPMethod::Declare(declare)));
    let name = match &actions[..] {
        [Action::Query { id: CallId(1), query: Query::QueueConfig { name } }] => name.clone(),
        other => panic!("expected a look-up, got {other:?}"),
    };
    assert!(name.starts_with("amq.gen-") && name.len() == "amq.gen-".len() + 20, "{name}");
    let config: QueueConfig = QueueArgs::default().config(Some(SESSION), false);
    assert_eq!(
        c.reply(1, Reply::Error(CoreError::NoSuchQueue(name.clone()))),
        [Action::Propose { id: CallId(2), command: Command::CreateQueue { name: name.clone(), config } }]
    );
    assert_eq!(
        c.reply(2, Reply::Ok),
        [Action::Query { id: CallId(3), query: Query::QueueStats { name: name.clone() } }]
    );
    let ok = queue::DeclareOk { queue: name.as_str().into(), message_count: 0, consumer_count: 0 };
    assert_eq!(
        c.reply(3, stats(0, 0)),
        [send(1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok))), measured("queue.declare")]
    );
    let get = basic::Get { queue: "".into(), ..Default::default() };
    match &c.method(1, basic(basic::AMQPMethod::Get(get)))[..] {
        [Action::Propose { command: Command::Pop(pop), .. }] => assert_eq!(pop.queue, name),
        other => panic!("expected a pop, got {other:?}"),
    }
}

#[test]
fn server_made_names_follow_the_seed() {
    let name = |seed| {
        let mut c = Client::with(|s| s.name_seed = seed);
        c.m.server_name("amq.ctag-")
    };
    assert_eq!(name(1), name(1));
    assert_ne!(name(1), name(2));
}

#[test]
fn another_connections_exclusive_queue_is_locked() {
    let mut c = Client::new();
    c.open(1);
    let declare = queue::Declare { queue: "theirs".into(), ..Default::default() };
    c.method(1, AMQPClass::Queue(queue::AMQPMethod::Declare(declare)));
    let config = QueueConfig { exclusive_owner: Some(SessionId(8)), ..QueueConfig::default() };
    let actions = c.reply(1, Reply::QueueConfig(Box::new(config)));
    let [Action::Measured { .. }, Action::Send { channel: 1, method }] = &actions[..] else {
        panic!("expected the channel to close, got {actions:?}");
    };
    let AMQPClass::Channel(chan::AMQPMethod::Close(close)) = method else {
        panic!("expected Channel.Close, got {method:?}");
    };
    assert_eq!(close.reply_code, 405);
    let locked = "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'theirs'";
    assert!(close.reply_text.as_str().starts_with(locked), "{}", close.reply_text);
}
