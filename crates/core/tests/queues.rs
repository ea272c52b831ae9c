//! Queue stories: given a state and a command at a time, exactly these replies and effects.

mod common;

use bytes::Bytes;
use common::{World, lock, pop, push};
use turnstile_core::{
    Command, Consume, CoreError, DeadLetter, DeadReason, Delivery, Effect, Fence, MessageView, Millis,
    Overflow, Pop, Push, Query, QueueConfig, QueueStats, QueueTotals, Reply, SessionId, State, Taker,
};

// ---------------------------------------------------------------------------------------------
// Helpers

/// A delivery of priority 0 with no properties that is not a dead letter.
fn msg(id: u64, receipt: u64, payload: &str, deliveries: u32, lease: Millis) -> Delivery {
    Delivery {
        id,
        receipt,
        payload: Bytes::from(payload.to_owned()),
        properties: Bytes::new(),
        deliveries,
        priority: 0,
        lease,
        dead: None,
    }
}

fn dead(d: Delivery, reason: DeadReason, from: &str) -> Delivery {
    Delivery { dead: Some(DeadLetter { reason, from: from.into(), via: None }), ..d }
}

fn prio(d: Delivery, priority: u8) -> Delivery {
    Delivery { priority, ..d }
}

fn view(id: u64, payload: &str, priority: u8, age: Millis, group: Option<&str>) -> MessageView {
    MessageView {
        id,
        payload: Bytes::from(payload.to_owned()),
        priority,
        deliveries: 0,
        age,
        group: group.map(str::to_owned),
        dead: None,
    }
}

fn pop_with(session: SessionId, queue: &str, count: u32, wait: Millis, lease: Option<Millis>) -> Command {
    Command::Pop(Pop {
        queue: queue.into(),
        session: Some(session),
        count,
        wait,
        lease,
        auto_ack: false,
        keep: false,
    })
}

fn pop_wait(session: SessionId, queue: &str, wait: Millis) -> Command {
    pop_with(session, queue, 1, wait, None)
}

fn pop_lease(session: SessionId, queue: &str, count: u32, lease: Millis) -> Command {
    pop_with(session, queue, count, 0, Some(lease))
}

fn push_with(queue: &str, payload: &str, f: impl FnOnce(&mut Push)) -> Command {
    let mut p = Push::new(queue, payload.to_owned());
    f(&mut p);
    Command::Push(p)
}

fn pushed(id: u64) -> Reply {
    Reply::Pushed { id, duplicate: false }
}

fn create(name: &str, config: QueueConfig) -> Command {
    Command::CreateQueue { name: name.into(), config }
}

fn ack(queue: &str, receipts: &[u64]) -> Command {
    Command::Ack { queue: queue.into(), receipts: receipts.to_vec(), fence: None }
}

fn nack(queue: &str, receipt: u64, delay: Millis) -> Command {
    Command::Nack { queue: queue.into(), receipt, delay, dead_letter: false }
}

fn reject(queue: &str, receipt: u64) -> Command {
    Command::Nack { queue: queue.into(), receipt, delay: 0, dead_letter: true }
}

fn extend(queue: &str, receipt: u64, lease: Millis) -> Command {
    Command::Extend { queue: queue.into(), receipt, lease }
}

fn consume(session: SessionId, queue: &str, credit: u32) -> Command {
    Command::Consume(common::consumer(session, queue, credit))
}

fn delivered(session: SessionId, to: Taker, queue: &str, deliveries: Vec<Delivery>) -> Effect {
    Effect::Delivered { session, to, queue: queue.into(), deliveries }
}

fn to_pop(wait_id: u64) -> Taker {
    Taker::Pop { wait_id }
}

fn to_consumer(consumer_id: u64) -> Taker {
    Taker::Consumer { consumer_id }
}

fn stats(w: &World, queue: &str) -> QueueStats {
    match w.query(Query::QueueStats { name: queue.into() }) {
        Reply::QueueStats(s) => s,
        other => panic!("expected stats of {queue}, got {other:?}"),
    }
}

fn peek(w: &World, queue: &str, count: u32) -> Reply {
    w.query(Query::Peek { queue: queue.into(), count })
}

fn totals(f: impl FnOnce(&mut QueueTotals)) -> QueueTotals {
    let mut t = QueueTotals::default();
    f(&mut t);
    t
}

fn queues(w: &World) -> Reply {
    w.query(Query::ListQueues)
}

fn names(names: &[&str]) -> Reply {
    Reply::Names(names.iter().map(|n| (*n).to_owned()).collect())
}

const LEASE: Millis = 30_000;

// ---------------------------------------------------------------------------------------------
// Push, pop, ack

#[test]
fn push_then_pop_then_ack_leaves_nothing_but_totals() {
    let mut w = World::new();
    let s = w.session(); // id 1
    // The first push creates the queue (id 2) and stores message 3.
    assert_eq!(w.reply(push("jobs", "hello")), pushed(3));
    assert_eq!(queues(&w), names(&["jobs"]));

    w.now = 1_100;
    assert_eq!(w.reply(pop(s, "jobs", 1)), Reply::Deliveries(vec![msg(3, 1, "hello", 1, LEASE)]));
    assert_eq!(
        stats(&w, "jobs"),
        QueueStats {
            in_flight: 1,
            payload_bytes: 5,
            totals: totals(|t| (t.pushed, t.delivered) = (1, 1)),
            ..QueueStats::default()
        }
    );
    // The lease runs from the pop.
    assert_eq!(w.next_deadline(), Some(1_100 + LEASE));

    w.now = 1_200;
    assert_eq!(w.reply(ack("jobs", &[1])), Reply::Int(1));
    assert_eq!(
        stats(&w, "jobs"),
        QueueStats {
            totals: totals(|t| (t.pushed, t.delivered, t.acked) = (1, 1, 1)),
            ..QueueStats::default()
        }
    );
    // Acking twice finds nothing; no lease is left to expire.
    assert_eq!(w.reply(ack("jobs", &[1])), Reply::Int(0));
    assert_eq!(w.next_deadline(), None);
    assert_eq!(w.advance(60_000), vec![]);
}

#[test]
fn pop_on_an_empty_or_missing_queue_is_nil() {
    let mut w = World::new();
    let s = w.session();
    // A pop without WAIT on a queue that does not exist answers nil and creates nothing.
    assert_eq!(w.reply(pop(s, "nowhere", 1)), Reply::Nil);
    assert_eq!(queues(&w), names(&[]));

    assert_eq!(w.reply(create("jobs", QueueConfig::default())), Reply::Int(1));
    assert_eq!(w.reply(pop(s, "jobs", 5)), Reply::Nil);
    assert_eq!(stats(&w, "jobs"), QueueStats::default());
}

#[test]
fn a_waiting_pop_parks_and_the_next_push_is_delivered_to_it() {
    let mut w = World::new();
    let s = w.session(); // 1
    // Like BLPOP on a missing key: the queue is created (2) and the pop waits (3).
    assert_eq!(w.reply(pop_wait(s, "jobs", 5_000)), Reply::Waiting { wait_id: 3 });
    assert_eq!(stats(&w, "jobs"), QueueStats { waiting_pops: 1, ..QueueStats::default() });

    w.now = 1_200;
    let (reply, fx) = w.apply(push("jobs", "x"));
    assert_eq!(reply, pushed(4));
    assert_eq!(fx, vec![delivered(s, to_pop(3), "jobs", vec![msg(4, 1, "x", 1, LEASE)])]);
    assert_eq!(
        stats(&w, "jobs"),
        QueueStats {
            in_flight: 1,
            payload_bytes: 1,
            totals: totals(|t| (t.pushed, t.delivered) = (1, 1)),
            ..QueueStats::default()
        }
    );
    // The wait's deadline went with it: nothing times out later.
    assert_eq!(w.tick_at(6_000), vec![]);
}

#[test]
fn a_waiting_pop_times_out() {
    let mut w = World::new();
    let s = w.session();
    assert_eq!(w.reply(pop_wait(s, "jobs", 5_000)), Reply::Waiting { wait_id: 3 });
    assert_eq!(w.tick_at(5_999), vec![]);
    assert_eq!(w.tick_at(6_000), vec![Effect::PopTimedOut { session: s, wait_id: 3, queue: "jobs".into() }]);
    assert_eq!(stats(&w, "jobs").waiting_pops, 0);
    // A later push finds nobody waiting.
    assert_eq!(w.reply(push("jobs", "late")), pushed(4));
    assert_eq!(stats(&w, "jobs").ready, 1);
}

#[test]
fn waiting_pops_are_served_first_come_first_served() {
    let mut w = World::new();
    let (s1, s2) = (w.session(), w.session()); // 1, 2
    assert_eq!(w.reply(pop_wait(s1, "jobs", 5_000)), Reply::Waiting { wait_id: 4 }); // queue 3
    w.now = 1_010;
    assert_eq!(w.reply(pop_wait(s2, "jobs", 5_000)), Reply::Waiting { wait_id: 5 });

    w.now = 1_020;
    let (reply, fx) = w.apply(push("jobs", "a"));
    assert_eq!(reply, pushed(6));
    assert_eq!(fx, vec![delivered(s1, to_pop(4), "jobs", vec![msg(6, 1, "a", 1, LEASE)])]);

    let (reply, fx) = w.apply(push("jobs", "b"));
    assert_eq!(reply, pushed(7));
    assert_eq!(fx, vec![delivered(s2, to_pop(5), "jobs", vec![msg(7, 2, "b", 1, LEASE)])]);

    // s1's deadline (6000) passes with s1 already served: no timeout for anyone.
    assert_eq!(w.tick_at(6_010), vec![]);
}

#[test]
fn higher_priority_first_fifo_within_a_priority() {
    let mut w = World::new();
    let s = w.session(); // 1, queue 2
    assert_eq!(w.reply(push_with("jobs", "a", |p| p.priority = 0)), pushed(3));
    assert_eq!(w.reply(push_with("jobs", "b", |p| p.priority = 5)), pushed(4));
    assert_eq!(w.reply(push_with("jobs", "c", |p| p.priority = 5)), pushed(5));
    assert_eq!(w.reply(push_with("jobs", "d", |p| p.priority = 9)), pushed(6));
    assert_eq!(w.reply(push_with("jobs", "e", |p| p.priority = 0)), pushed(7));
    assert_eq!(
        w.reply(push_with("jobs", "f", |p| p.priority = 10)),
        Reply::Error(CoreError::InvalidArgument("priority must be between 0 and 9".into()))
    );

    assert_eq!(
        w.reply(pop(s, "jobs", 10)),
        Reply::Deliveries(vec![
            prio(msg(6, 1, "d", 1, LEASE), 9),
            prio(msg(4, 2, "b", 1, LEASE), 5),
            prio(msg(5, 3, "c", 1, LEASE), 5),
            msg(3, 4, "a", 1, LEASE),
            msg(7, 5, "e", 1, LEASE),
        ])
    );
}

#[test]
fn a_delayed_message_is_invisible_until_its_tick() {
    let mut w = World::new();
    let s = w.session();
    assert_eq!(w.reply(push_with("jobs", "later", |p| p.delay = 500)), pushed(3));
    assert_eq!(w.reply(pop(s, "jobs", 1)), Reply::Nil);
    assert_eq!(peek(&w, "jobs", 10), Reply::Messages(vec![]));
    assert_eq!(
        stats(&w, "jobs"),
        QueueStats {
            delayed: 1,
            payload_bytes: 5,
            totals: totals(|t| t.pushed = 1),
            ..QueueStats::default()
        }
    );
    assert_eq!(w.next_deadline(), Some(1_500));

    assert_eq!(w.reply(pop_wait(s, "jobs", 10_000)), Reply::Waiting { wait_id: 4 });
    assert_eq!(w.tick_at(1_499), vec![]);
    assert_eq!(w.tick_at(1_500), vec![delivered(s, to_pop(4), "jobs", vec![msg(3, 1, "later", 1, LEASE)])]);
}

// ---------------------------------------------------------------------------------------------
// Leases, extend, nack

#[test]
fn an_expired_lease_redelivers_and_the_old_receipt_is_dead() {
    let mut w = World::new();
    let s = w.session();
    assert_eq!(w.reply(push("jobs", "job")), pushed(3));
    assert_eq!(w.reply(pop_lease(s, "jobs", 1, 1_000)), Reply::Deliveries(vec![msg(3, 1, "job", 1, 1_000)]));

    assert_eq!(w.tick_at(1_999), vec![]);
    assert_eq!(w.tick_at(2_000), vec![Effect::DeliveryExpired { queue: "jobs".into(), id: 3, receipt: 1 }]);
    assert_eq!(
        stats(&w, "jobs"),
        QueueStats {
            ready: 1,
            oldest_ready_age: 1_000,
            payload_bytes: 3,
            totals: totals(|t| (t.pushed, t.delivered, t.returned) = (1, 1, 1)),
            ..QueueStats::default()
        }
    );

    // Second delivery: a new receipt, deliveries = 2.
    assert_eq!(w.reply(pop(s, "jobs", 1)), Reply::Deliveries(vec![msg(3, 2, "job", 2, LEASE)]));
    // The first consumer's receipt is refused by ack and extend.
    assert_eq!(w.reply(ack("jobs", &[1])), Reply::Int(0));
    assert_eq!(w.reply(extend("jobs", 1, 5_000)), Reply::Error(CoreError::LostDelivery { receipt: 1 }));
    assert_eq!(stats(&w, "jobs").in_flight, 1);
    // The live receipt acks.
    assert_eq!(w.reply(ack("jobs", &[1, 2])), Reply::Int(1));
    assert_eq!(stats(&w, "jobs").totals.acked, 1);
}

#[test]
fn extend_moves_the_lease() {
    let mut w = World::new();
    let s = w.session();
    assert_eq!(w.reply(push("jobs", "job")), pushed(3));
    assert_eq!(w.reply(pop_lease(s, "jobs", 1, 1_000)), Reply::Deliveries(vec![msg(3, 1, "job", 1, 1_000)]));

    w.now = 1_800;
    assert_eq!(w.reply(extend("jobs", 1, 0)), Reply::Error(CoreError::BadDuration));
    assert_eq!(w.reply(extend("jobs", 1, 5_000)), Reply::Int(5_000));
    assert_eq!(w.reply(extend("other", 1, 5_000)), Reply::Error(CoreError::LostDelivery { receipt: 1 }));
    assert_eq!(w.next_deadline(), Some(6_800));
    assert_eq!(w.tick_at(2_000), vec![]);
    assert_eq!(w.tick_at(6_799), vec![]);
    assert_eq!(w.tick_at(6_800), vec![Effect::DeliveryExpired { queue: "jobs".into(), id: 3, receipt: 1 }]);
}

#[test]
fn nack_with_a_delay_returns_the_message_later() {
    let mut w = World::new();
    let s = w.session();
    assert_eq!(w.reply(push("jobs", "job")), pushed(3));
    assert_eq!(w.reply(pop(s, "jobs", 1)), Reply::Deliveries(vec![msg(3, 1, "job", 1, LEASE)]));

    w.now = 1_100;
    assert_eq!(w.reply(nack("jobs", 1, 500)), Reply::Int(1));
    assert_eq!(w.reply(nack("jobs", 1, 500)), Reply::Int(0));
    assert_eq!(
        stats(&w, "jobs"),
        QueueStats {
            delayed: 1,
            payload_bytes: 3,
            totals: totals(|t| (t.pushed, t.delivered, t.returned) = (1, 1, 1)),
            ..QueueStats::default()
        }
    );
    assert_eq!(w.reply(pop(s, "jobs", 1)), Reply::Nil);
    assert_eq!(w.tick_at(1_599), vec![]);
    assert_eq!(w.reply(pop(s, "jobs", 1)), Reply::Nil);
    assert_eq!(w.tick_at(1_600), vec![]);
    assert_eq!(w.reply(pop(s, "jobs", 1)), Reply::Deliveries(vec![msg(3, 2, "job", 2, LEASE)]));
}

// ---------------------------------------------------------------------------------------------
// Dead letters

#[test]
fn past_max_deliveries_a_message_goes_to_the_dead_letter_queue() {
    let mut w = World::new();
    let s = w.session(); // 1
    let config =
        QueueConfig { max_deliveries: 2, dead_letter: Some("jobs.dlq".into()), ..QueueConfig::default() };
    assert_eq!(w.reply(create("jobs", config)), Reply::Int(1)); // 2
    assert_eq!(w.reply(push("jobs", "job")), pushed(3));

    assert_eq!(w.reply(pop(s, "jobs", 1)), Reply::Deliveries(vec![msg(3, 1, "job", 1, LEASE)]));
    w.now = 1_100;
    assert_eq!(w.reply(nack("jobs", 1, 0)), Reply::Int(1));
    assert_eq!(w.reply(pop(s, "jobs", 1)), Reply::Deliveries(vec![msg(3, 2, "job", 2, LEASE)]));
    w.now = 1_200;
    // The second return is past the limit: dead-lettered, the DLQ created on the way (4).
    assert_eq!(w.reply(nack("jobs", 2, 0)), Reply::Int(1));
    assert_eq!(queues(&w), names(&["jobs", "jobs.dlq"]));
    assert_eq!(
        stats(&w, "jobs"),
        QueueStats {
            totals: totals(|t| (t.pushed, t.delivered, t.returned, t.dead_lettered) = (1, 2, 2, 1)),
            ..QueueStats::default()
        }
    );
    assert_eq!(
        stats(&w, "jobs.dlq"),
        QueueStats {
            ready: 1,
            dead: 1,
            oldest_ready_age: 200,
            payload_bytes: 3,
            totals: totals(|t| t.dead_letters_in = 1),
            ..QueueStats::default()
        }
    );
    // In the DLQ it starts afresh (deliveries 1) and says why and where from.
    assert_eq!(
        w.reply(pop(s, "jobs.dlq", 1)),
        Reply::Deliveries(vec![dead(msg(3, 3, "job", 1, LEASE), DeadReason::MaxDeliveries, "jobs")])
    );
}

#[test]
fn past_max_deliveries_without_a_dead_letter_queue_the_message_is_discarded() {
    let mut w = World::new();
    let s = w.session();
    let config = QueueConfig { max_deliveries: 1, ..QueueConfig::default() };
    assert_eq!(w.reply(create("jobs", config)), Reply::Int(1));
    assert_eq!(w.reply(push("jobs", "job")), pushed(3));
    assert_eq!(w.reply(pop_lease(s, "jobs", 1, 1_000)), Reply::Deliveries(vec![msg(3, 1, "job", 1, 1_000)]));
    assert_eq!(w.tick_at(2_000), vec![Effect::DeliveryExpired { queue: "jobs".into(), id: 3, receipt: 1 }]);
    assert_eq!(
        stats(&w, "jobs"),
        QueueStats {
            totals: totals(|t| (t.pushed, t.delivered, t.returned, t.discarded) = (1, 1, 1, 1)),
            ..QueueStats::default()
        }
    );
    assert_eq!(queues(&w), names(&["jobs"]));
    assert_eq!(w.reply(pop(s, "jobs", 1)), Reply::Nil);
}

#[test]
fn a_rejected_message_is_dead_lettered_or_discarded() {
    let mut w = World::new();
    let s = w.session(); // 1
    let config = QueueConfig { dead_letter: Some("dlq".into()), ..QueueConfig::default() };
    assert_eq!(w.reply(create("jobs", config)), Reply::Int(1)); // 2
    assert_eq!(w.reply(push("jobs", "bad")), pushed(3));
    assert_eq!(w.reply(push("plain", "worse")), pushed(5)); // plain = 4

    assert_eq!(w.reply(pop(s, "jobs", 1)), Reply::Deliveries(vec![msg(3, 1, "bad", 1, LEASE)]));
    assert_eq!(w.reply(pop(s, "plain", 1)), Reply::Deliveries(vec![msg(5, 2, "worse", 1, LEASE)]));

    // Rejected with a DLQ (created now, 6): moved there, not counted as returned.
    assert_eq!(w.reply(reject("jobs", 1)), Reply::Int(1));
    assert_eq!(stats(&w, "jobs").totals, totals(|t| (t.pushed, t.delivered, t.dead_lettered) = (1, 1, 1)));
    assert_eq!(
        w.reply(pop(s, "dlq", 1)),
        Reply::Deliveries(vec![dead(msg(3, 3, "bad", 1, LEASE), DeadReason::Rejected, "jobs")])
    );

    // Rejected without a DLQ: counted as discarded.
    assert_eq!(w.reply(reject("plain", 2)), Reply::Int(1));
    assert_eq!(
        stats(&w, "plain"),
        QueueStats {
            totals: totals(|t| (t.pushed, t.delivered, t.discarded) = (1, 1, 1)),
            ..QueueStats::default()
        }
    );
    // The receipt is gone.
    assert_eq!(w.reply(reject("plain", 2)), Reply::Int(0));
}

#[test]
fn an_expired_message_goes_to_the_dead_letter_queue() {
    let mut w = World::new();
    let s = w.session(); // 1
    let config = QueueConfig { ttl: Some(1_000), dead_letter: Some("dlq".into()), ..QueueConfig::default() };
    assert_eq!(w.reply(create("jobs", config)), Reply::Int(1)); // 2
    assert_eq!(w.reply(push("jobs", "a")), pushed(3)); // queue TTL: expires at 2000
    assert_eq!(w.reply(push_with("jobs", "b", |p| p.ttl = Some(300))), pushed(4)); // expires at 1300
    assert_eq!(w.reply(push_with("jobs", "c", |p| p.ttl = Some(0))), Reply::Error(CoreError::BadDuration));

    assert_eq!(w.tick_at(1_299), vec![]);
    assert_eq!(w.tick_at(1_300), vec![]);
    assert_eq!(stats(&w, "jobs").ready, 1);
    assert_eq!(stats(&w, "dlq").ready, 1);
    assert_eq!(w.tick_at(2_000), vec![]);
    assert_eq!(
        stats(&w, "jobs"),
        QueueStats { totals: totals(|t| (t.pushed, t.dead_lettered) = (2, 2)), ..QueueStats::default() }
    );
    // The DLQ delivers in its own order (by id), each marked expired from jobs.
    assert_eq!(
        w.reply(pop(s, "dlq", 10)),
        Reply::Deliveries(vec![
            dead(msg(3, 1, "a", 1, LEASE), DeadReason::Expired, "jobs"),
            dead(msg(4, 2, "b", 1, LEASE), DeadReason::Expired, "jobs"),
        ])
    );
}

#[test]
fn an_expired_message_without_a_dead_letter_queue_is_counted_expired() {
    let mut w = World::new();
    let config = QueueConfig { ttl: Some(1_000), ..QueueConfig::default() };
    assert_eq!(w.reply(create("jobs", config)), Reply::Int(1));
    assert_eq!(w.reply(push("jobs", "a")), pushed(2));
    assert_eq!(w.tick_at(1_999), vec![]);
    assert_eq!(stats(&w, "jobs").ready, 1);
    assert_eq!(w.tick_at(2_000), vec![]);
    assert_eq!(
        stats(&w, "jobs"),
        QueueStats { totals: totals(|t| (t.pushed, t.expired) = (1, 1)), ..QueueStats::default() }
    );
    assert_eq!(queues(&w), names(&["jobs"]));
}

#[test]
fn an_in_flight_message_is_not_expired_until_it_comes_back() {
    let mut w = World::new();
    let s = w.session(); // 1
    let config = QueueConfig { ttl: Some(1_000), dead_letter: Some("dlq".into()), ..QueueConfig::default() };
    assert_eq!(w.reply(create("jobs", config)), Reply::Int(1)); // 2
    assert_eq!(w.reply(push("jobs", "a")), pushed(3));
    assert_eq!(w.reply(push("jobs", "b")), pushed(4));
    assert_eq!(w.reply(push("jobs", "c")), pushed(5));
    assert_eq!(
        w.reply(pop_lease(s, "jobs", 3, 5_000)),
        Reply::Deliveries(vec![msg(3, 1, "a", 1, 5_000), msg(4, 2, "b", 1, 5_000), msg(5, 3, "c", 1, 5_000)])
    );
    // The TTL passes while all three are out: nothing happens to them.
    assert_eq!(w.tick_at(2_000), vec![]);
    assert_eq!(stats(&w, "jobs").in_flight, 3);

    // An ack after the TTL still counts.
    w.now = 2_500;
    assert_eq!(w.reply(ack("jobs", &[1])), Reply::Int(1));
    // A nack after the TTL: it comes back expired, so it is dead-lettered instead.
    assert_eq!(w.reply(nack("jobs", 2, 0)), Reply::Int(1));
    // A lease expiry after the TTL: the same.
    assert_eq!(w.tick_at(6_000), vec![Effect::DeliveryExpired { queue: "jobs".into(), id: 5, receipt: 3 }]);
    assert_eq!(
        stats(&w, "jobs"),
        QueueStats {
            totals: totals(
                |t| (t.pushed, t.delivered, t.acked, t.returned, t.dead_lettered) = (3, 3, 1, 2, 2)
            ),
            ..QueueStats::default()
        }
    );
    assert_eq!(
        w.reply(pop(s, "dlq", 10)),
        Reply::Deliveries(vec![
            dead(msg(4, 4, "b", 1, LEASE), DeadReason::Expired, "jobs"),
            dead(msg(5, 5, "c", 1, LEASE), DeadReason::Expired, "jobs"),
        ])
    );
}

// ---------------------------------------------------------------------------------------------
// Groups, dedup, bounds

#[test]
fn a_group_has_one_message_in_flight_in_push_order() {
    let mut w = World::new();
    let s = w.session(); // 1, queue 2
    assert_eq!(w.reply(push_with("jobs", "a", |p| p.group = Some("g1".into()))), pushed(3));
    assert_eq!(w.reply(push_with("jobs", "b", |p| p.group = Some("g1".into()))), pushed(4));
    assert_eq!(w.reply(push_with("jobs", "c", |p| p.group = Some("g2".into()))), pushed(5));
    assert_eq!(w.reply(push("jobs", "d")), pushed(6));

    // b waits behind a; other groups and ungrouped messages are not blocked.
    assert_eq!(
        w.reply(pop(s, "jobs", 10)),
        Reply::Deliveries(vec![msg(3, 1, "a", 1, LEASE), msg(5, 2, "c", 1, LEASE), msg(6, 3, "d", 1, LEASE)])
    );
    assert_eq!(w.reply(pop(s, "jobs", 10)), Reply::Nil);
    assert_eq!(stats(&w, "jobs").ready, 1);

    assert_eq!(w.reply(pop_wait(s, "jobs", 10_000)), Reply::Waiting { wait_id: 7 });
    // Finishing another group's message releases nothing.
    assert_eq!(w.reply(ack("jobs", &[2, 3])), Reply::Int(2));
    // Acking a releases b, straight to the waiting pop.
    w.now = 1_500;
    let (reply, fx) = w.apply(ack("jobs", &[1]));
    assert_eq!(reply, Reply::Int(1));
    assert_eq!(fx, vec![delivered(s, to_pop(7), "jobs", vec![msg(4, 4, "b", 1, LEASE)])]);
}

#[test]
fn a_dedup_id_within_the_window_returns_the_first_id() {
    let mut w = World::new();
    let s = w.session(); // 1
    let config = QueueConfig { dedup_window: 1_000, ..QueueConfig::default() };
    assert_eq!(w.reply(create("jobs", config)), Reply::Int(1)); // 2
    let with_dedup = |p: &mut Push| p.dedup = Some("order-7".into());
    assert_eq!(w.reply(push_with("jobs", "first", with_dedup)), pushed(3));

    w.now = 1_500;
    assert_eq!(w.reply(push_with("jobs", "second", with_dedup)), Reply::Pushed { id: 3, duplicate: true });
    assert_eq!(
        stats(&w, "jobs"),
        QueueStats {
            ready: 1,
            oldest_ready_age: 500,
            payload_bytes: 5,
            totals: totals(|t| (t.pushed, t.deduplicated) = (1, 1)),
            ..QueueStats::default()
        }
    );

    // The window ends at 2000; after it the same id stores a new message.
    assert_eq!(w.tick_at(2_000), vec![]);
    assert_eq!(w.reply(push_with("jobs", "third", with_dedup)), pushed(4));
    assert_eq!(
        w.reply(pop(s, "jobs", 10)),
        Reply::Deliveries(vec![msg(3, 1, "first", 1, LEASE), msg(4, 2, "third", 1, LEASE)])
    );
}

#[test]
fn a_full_queue_rejects_a_push_and_stores_nothing() {
    let mut w = World::new();
    let s = w.session();
    let config = QueueConfig { max_len: 2, ..QueueConfig::default() };
    assert_eq!(w.reply(create("bounded", config)), Reply::Int(1));
    assert_eq!(w.reply(push("bounded", "a")), pushed(3));
    assert_eq!(w.reply(push("bounded", "b")), pushed(4));

    let full = Reply::Error(CoreError::QueueFull { name: "bounded".into(), max_len: 2 });
    let expected = w.unchanged();
    assert_eq!(w.reply(push_with("bounded", "c", |p| p.dedup = Some("d".into()))), full);
    assert_eq!(w.state, expected);

    // In-flight messages count toward the bound too.
    assert_eq!(w.reply(pop(s, "bounded", 1)), Reply::Deliveries(vec![msg(3, 1, "a", 1, LEASE)]));
    let expected = w.unchanged();
    assert_eq!(w.reply(push("bounded", "c")), full);
    assert_eq!(w.state, expected);
    assert_eq!(
        stats(&w, "bounded"),
        QueueStats {
            ready: 1,
            in_flight: 1,
            payload_bytes: 2,
            totals: totals(|t| (t.pushed, t.delivered) = (2, 1)),
            ..QueueStats::default()
        }
    );
}

#[test]
fn drop_head_drops_the_next_message_to_deliver() {
    let mut w = World::new();
    let s = w.session(); // 1
    let config = QueueConfig { max_len: 2, overflow: Overflow::DropHead, ..QueueConfig::default() };
    assert_eq!(w.reply(create("bounded", config)), Reply::Int(1)); // 2
    assert_eq!(w.reply(push("bounded", "a")), pushed(3));
    assert_eq!(w.reply(push_with("bounded", "b", |p| p.priority = 9)), pushed(4));
    // b would be delivered next (priority 9), so b is the one pushed out.
    assert_eq!(w.reply(push("bounded", "c")), pushed(5));
    assert_eq!(
        stats(&w, "bounded"),
        QueueStats {
            ready: 2,
            payload_bytes: 2,
            totals: totals(|t| (t.pushed, t.dropped) = (3, 1)),
            ..QueueStats::default()
        }
    );
    assert_eq!(
        w.reply(pop(s, "bounded", 10)),
        Reply::Deliveries(vec![msg(3, 1, "a", 1, LEASE), msg(5, 2, "c", 1, LEASE)])
    );
}

#[test]
fn drop_head_with_a_dead_letter_queue_dead_letters_the_head() {
    let mut w = World::new();
    let s = w.session(); // 1
    let config = QueueConfig {
        max_len: 2,
        overflow: Overflow::DropHead,
        dead_letter: Some("overflow".into()),
        ..QueueConfig::default()
    };
    assert_eq!(w.reply(create("bounded", config)), Reply::Int(1)); // 2
    assert_eq!(w.reply(push("bounded", "a")), pushed(3));
    assert_eq!(w.reply(push("bounded", "b")), pushed(4));
    assert_eq!(w.reply(push("bounded", "c")), pushed(6)); // the DLQ took id 5
    assert_eq!(stats(&w, "bounded").totals, totals(|t| (t.pushed, t.dead_lettered) = (3, 1)));
    assert_eq!(
        w.reply(pop(s, "overflow", 10)),
        Reply::Deliveries(vec![dead(msg(3, 1, "a", 1, LEASE), DeadReason::MaxLen, "bounded")])
    );
    assert_eq!(
        w.reply(pop(s, "bounded", 10)),
        Reply::Deliveries(vec![msg(4, 2, "b", 1, LEASE), msg(6, 3, "c", 1, LEASE)])
    );
}

// ---------------------------------------------------------------------------------------------
// Consumers, auto-ack, sessions

#[test]
fn consumers_take_turns() {
    let mut w = World::new();
    let (s1, s2) = (w.session(), w.session()); // 1, 2
    assert_eq!(w.reply(consume(s1, "jobs", 0)), Reply::Consumer { consumer_id: 4 }); // queue 3
    assert_eq!(w.reply(consume(s2, "jobs", 0)), Reply::Consumer { consumer_id: 5 });
    assert_eq!(stats(&w, "jobs").consumers, 2);

    let (reply, fx) = w.apply(push("jobs", "a"));
    assert_eq!(reply, pushed(6));
    assert_eq!(fx, vec![delivered(s1, to_consumer(4), "jobs", vec![msg(6, 1, "a", 1, LEASE)])]);
    let (reply, fx) = w.apply(push("jobs", "b"));
    assert_eq!(reply, pushed(7));
    assert_eq!(fx, vec![delivered(s2, to_consumer(5), "jobs", vec![msg(7, 2, "b", 1, LEASE)])]);
    let (reply, fx) = w.apply(push("jobs", "c"));
    assert_eq!(reply, pushed(8));
    assert_eq!(fx, vec![delivered(s1, to_consumer(4), "jobs", vec![msg(8, 3, "c", 1, LEASE)])]);
}

#[test]
fn credit_limits_what_a_consumer_has_in_flight() {
    let mut w = World::new();
    let (s1, s2) = (w.session(), w.session()); // 1, 2
    assert_eq!(w.reply(consume(s1, "jobs", 1)), Reply::Consumer { consumer_id: 4 }); // queue 3
    assert_eq!(w.reply(consume(s2, "jobs", 1)), Reply::Consumer { consumer_id: 5 });

    let (_, fx) = w.apply(push("jobs", "a"));
    assert_eq!(fx, vec![delivered(s1, to_consumer(4), "jobs", vec![msg(6, 1, "a", 1, LEASE)])]);
    let (_, fx) = w.apply(push("jobs", "b"));
    assert_eq!(fx, vec![delivered(s2, to_consumer(5), "jobs", vec![msg(7, 2, "b", 1, LEASE)])]);
    // Both are at their credit: c waits.
    assert_eq!(w.reply(push("jobs", "c")), pushed(8));
    assert_eq!(
        stats(&w, "jobs"),
        QueueStats {
            ready: 1,
            in_flight: 2,
            consumers: 2,
            payload_bytes: 3,
            totals: totals(|t| (t.pushed, t.delivered) = (3, 2)),
            ..QueueStats::default()
        }
    );

    // s1 acks: its credit comes back and c goes to it at once.
    w.now = 1_500;
    let (reply, fx) = w.apply(ack("jobs", &[1]));
    assert_eq!(reply, Reply::Int(1));
    assert_eq!(fx, vec![delivered(s1, to_consumer(4), "jobs", vec![msg(8, 3, "c", 1, LEASE)])]);
}

#[test]
fn auto_ack_finishes_a_message_as_it_is_delivered() {
    let mut w = World::new();
    let s = w.session(); // 1, queue 2
    assert_eq!(w.reply(push("jobs", "a")), pushed(3));
    assert_eq!(w.reply(push("jobs", "b")), pushed(4));
    let auto_pop = Pop {
        queue: "jobs".into(),
        session: Some(s),
        count: 1,
        wait: 0,
        lease: None,
        auto_ack: true,
        keep: false,
    };
    assert_eq!(w.reply(Command::Pop(auto_pop)), Reply::Deliveries(vec![msg(3, 1, "a", 1, LEASE)]));
    assert_eq!(
        stats(&w, "jobs"),
        QueueStats {
            ready: 1,
            payload_bytes: 1,
            totals: totals(|t| (t.pushed, t.delivered, t.acked) = (2, 1, 1)),
            ..QueueStats::default()
        }
    );
    assert_eq!(w.reply(ack("jobs", &[1])), Reply::Int(0));

    // An auto-ack consumer's credit is never used up.
    let c = Consume {
        queue: "jobs".into(),
        session: s,
        credit: 1,
        lease: None,
        auto_ack: true,
        exclusive: false,
        pool: None,
    };
    let (reply, fx) = w.apply(Command::Consume(c));
    assert_eq!(reply, Reply::Consumer { consumer_id: 5 });
    assert_eq!(fx, vec![delivered(s, to_consumer(5), "jobs", vec![msg(4, 2, "b", 1, LEASE)])]);
    let (_, fx) = w.apply(push("jobs", "c"));
    assert_eq!(fx, vec![delivered(s, to_consumer(5), "jobs", vec![msg(6, 3, "c", 1, LEASE)])]);
    assert_eq!(
        stats(&w, "jobs"),
        QueueStats {
            consumers: 1,
            totals: totals(|t| (t.pushed, t.delivered, t.acked) = (3, 3, 3)),
            ..QueueStats::default()
        }
    );
    assert_eq!(w.next_deadline(), None);
}

#[test]
fn closing_a_session_returns_its_messages_and_removes_its_takers() {
    let mut w = World::new();
    let (s1, s2) = (w.session(), w.session()); // 1, 2
    assert_eq!(w.reply(consume(s1, "jobs", 1)), Reply::Consumer { consumer_id: 4 }); // queue 3
    assert_eq!(w.reply(pop_wait(s1, "other", 10_000)), Reply::Waiting { wait_id: 6 }); // queue 5
    let (_, fx) = w.apply(push("jobs", "a"));
    assert_eq!(fx, vec![delivered(s1, to_consumer(4), "jobs", vec![msg(7, 1, "a", 1, LEASE)])]);
    assert_eq!(w.reply(consume(s2, "jobs", 1)), Reply::Consumer { consumer_id: 8 });

    // s1 goes away: a goes back, keeping its delivery count, and straight to s2's consumer.
    w.now = 2_000;
    assert_eq!(w.close(s1), vec![delivered(s2, to_consumer(8), "jobs", vec![msg(7, 2, "a", 2, LEASE)])]);
    assert_eq!(
        stats(&w, "jobs"),
        QueueStats {
            in_flight: 1,
            consumers: 1,
            payload_bytes: 1,
            totals: totals(|t| (t.pushed, t.delivered, t.returned) = (1, 2, 1)),
            ..QueueStats::default()
        }
    );
    // s1's waiting pop is gone, silently.
    assert_eq!(stats(&w, "other"), QueueStats::default());
    assert_eq!(w.reply(push("other", "x")), pushed(9));
    assert_eq!(w.tick_at(11_000), vec![]);

    // Closing s2 with nobody left: the message is ready again, delivered twice so far.
    assert_eq!(w.close(s2), vec![]);
    let s3 = w.session();
    assert_eq!(w.reply(pop(s3, "jobs", 1)), Reply::Deliveries(vec![msg(7, 3, "a", 3, LEASE)]));
}

#[test]
fn kept_deliveries_outlive_their_session_until_the_lease_ends() {
    let mut w = World::new();
    let (s1, s2) = (w.session(), w.session()); // 1, 2
    assert_eq!(w.reply(push("jobs", "a")), pushed(4)); // queue 3
    let kept = |session, wait| {
        Command::Pop(Pop {
            queue: "jobs".into(),
            session: Some(session),
            count: 1,
            wait,
            lease: None,
            auto_ack: false,
            keep: true,
        })
    };
    assert_eq!(w.reply(kept(s1, 0)), Reply::Deliveries(vec![msg(4, 1, "a", 1, LEASE)]));
    // A waiting kept pop is served later, still free of its session.
    assert_eq!(w.reply(kept(s2, 10_000)), Reply::Waiting { wait_id: 5 });
    let (_, fx) = w.apply(push("jobs", "b"));
    assert_eq!(fx, vec![delivered(s2, Taker::Pop { wait_id: 5 }, "jobs", vec![msg(6, 2, "b", 1, LEASE)])]);

    // Both sessions go: nothing comes back, and another session can ack what they popped.
    assert_eq!(w.close(s1), vec![]);
    assert_eq!(w.close(s2), vec![]);
    assert_eq!(stats(&w, "jobs").in_flight, 2);
    assert_eq!(w.reply(ack("jobs", &[1])), Reply::Int(1));
    // The lease still ends the other one.
    assert_eq!(
        w.advance(LEASE + 1),
        vec![Effect::DeliveryExpired { queue: "jobs".into(), id: 6, receipt: 2 }]
    );
    let s3 = w.session();
    assert_eq!(w.reply(pop(s3, "jobs", 1)), Reply::Deliveries(vec![msg(6, 3, "b", 2, LEASE)]));
}

#[test]
fn deleting_a_queue_cancels_its_consumers_and_waiting_pops() {
    let mut w = World::new();
    let (s1, s2, s3) = (w.session(), w.session(), w.session()); // 1, 2, 3
    assert_eq!(w.reply(push("jobs", "m")), pushed(5)); // queue 4
    assert_eq!(w.reply(pop(s3, "jobs", 1)), Reply::Deliveries(vec![msg(5, 1, "m", 1, LEASE)]));
    assert_eq!(w.reply(pop_wait(s1, "jobs", 10_000)), Reply::Waiting { wait_id: 6 });
    assert_eq!(w.reply(consume(s2, "jobs", 0)), Reply::Consumer { consumer_id: 7 });

    let (reply, fx) =
        w.apply(Command::DeleteQueue { name: "jobs".into(), if_unused: false, if_empty: false });
    assert_eq!(reply, Reply::Int(1));
    assert_eq!(
        fx,
        vec![
            Effect::PopTimedOut { session: s1, wait_id: 6, queue: "jobs".into() },
            Effect::ConsumerCancelled { session: s2, consumer_id: 7, queue: "jobs".into() },
        ]
    );
    assert_eq!(queues(&w), names(&[]));
    assert_eq!(
        w.query(Query::QueueStats { name: "jobs".into() }),
        Reply::Error(CoreError::NoSuchQueue("jobs".into()))
    );
    assert_eq!(
        w.reply(Command::DeleteQueue { name: "jobs".into(), if_unused: false, if_empty: false }),
        Reply::Int(0)
    );
    // The in-flight message went with the queue.
    assert_eq!(w.reply(ack("jobs", &[1])), Reply::Int(0));
    assert_eq!(w.next_deadline(), None);
    assert_eq!(w.close(s3), vec![]);
    assert_eq!(w.close(s1), vec![]);
    assert_eq!(w.close(s2), vec![]);
}

#[test]
fn purge_removes_ready_and_delayed_but_not_in_flight() {
    let mut w = World::new();
    let s = w.session(); // 1, queue 2
    assert_eq!(w.reply(push("jobs", "a")), pushed(3));
    assert_eq!(w.reply(push_with("jobs", "b", |p| p.delay = 1_000)), pushed(4));
    assert_eq!(w.reply(push("jobs", "c")), pushed(5));
    assert_eq!(w.reply(pop(s, "jobs", 1)), Reply::Deliveries(vec![msg(3, 1, "a", 1, LEASE)]));

    assert_eq!(w.reply(Command::PurgeQueue { name: "jobs".into() }), Reply::Int(2));
    assert_eq!(
        stats(&w, "jobs"),
        QueueStats {
            in_flight: 1,
            payload_bytes: 1,
            totals: totals(|t| (t.pushed, t.delivered, t.purged) = (3, 1, 2)),
            ..QueueStats::default()
        }
    );
    assert_eq!(w.tick_at(2_000), vec![]);
    assert_eq!(w.reply(pop(s, "jobs", 10)), Reply::Nil);
    assert_eq!(w.reply(ack("jobs", &[1])), Reply::Int(1));
    assert_eq!(w.reply(Command::PurgeQueue { name: "nope".into() }), Reply::Int(0));
}

#[test]
fn redrive_moves_dead_letters_back_as_fresh_messages() {
    let mut w = World::new();
    let s = w.session(); // 1
    let config = QueueConfig { max_deliveries: 1, dead_letter: Some("dlq".into()), ..QueueConfig::default() };
    assert_eq!(w.reply(create("jobs", config)), Reply::Int(1)); // 2
    assert_eq!(w.reply(push("jobs", "a")), pushed(3));
    assert_eq!(w.reply(push("jobs", "b")), pushed(4));
    assert_eq!(
        w.reply(pop(s, "jobs", 2)),
        Reply::Deliveries(vec![msg(3, 1, "a", 1, LEASE), msg(4, 2, "b", 1, LEASE)])
    );
    assert_eq!(w.reply(nack("jobs", 1, 0)), Reply::Int(1));
    assert_eq!(w.reply(nack("jobs", 2, 0)), Reply::Int(1));
    assert_eq!(stats(&w, "dlq").ready, 2);
    assert_eq!(stats(&w, "dlq").dead, 2);

    let redrive = |count| Command::Redrive { from: "dlq".into(), to: "jobs".into(), count };
    assert_eq!(w.reply(redrive(1)), Reply::Int(1));
    // Fresh: no deliveries so far, not marked dead.
    assert_eq!(w.reply(pop(s, "jobs", 10)), Reply::Deliveries(vec![msg(3, 3, "a", 1, LEASE)]));
    assert_eq!(
        stats(&w, "dlq"),
        QueueStats {
            ready: 1,
            dead: 1,
            payload_bytes: 1,
            totals: totals(|t| (t.dead_letters_in, t.redriven_out) = (2, 1)),
            ..QueueStats::default()
        }
    );
    assert_eq!(
        stats(&w, "jobs").totals,
        totals(|t| (t.pushed, t.delivered, t.returned, t.dead_lettered, t.redriven_in) = (2, 3, 2, 2, 1))
    );
    assert_eq!(w.reply(redrive(10)), Reply::Int(1));
    assert_eq!(w.reply(redrive(10)), Reply::Int(0));
    assert_eq!(
        w.reply(Command::Redrive { from: "jobs".into(), to: "jobs".into(), count: 1 }),
        Reply::Error(CoreError::InvalidArgument("redrive source and target must differ".into()))
    );
    assert_eq!(
        w.reply(Command::Redrive { from: "nope".into(), to: "jobs".into(), count: 1 }),
        Reply::Error(CoreError::NoSuchQueue("nope".into()))
    );
}

// ---------------------------------------------------------------------------------------------
// Fencing, configuration, reads, tokens

#[test]
fn fenced_push_and_ack_apply_only_with_a_live_lock_token() {
    let mut w = World::new();
    let (s1, s2) = (w.session(), w.session()); // 1, 2
    assert_eq!(w.reply(lock(s1, "L", 10_000)), Reply::Granted { token: 1, lease: 10_000 });
    let fence = |token| Some(Fence { lock: "L".into(), token });

    assert_eq!(w.reply(push_with("jobs", "a", |p| p.fence = fence(1))), pushed(4)); // queue 3
    assert_eq!(w.reply(pop(s2, "jobs", 1)), Reply::Deliveries(vec![msg(4, 2, "a", 1, LEASE)]));

    // s1's lease runs out and s2 takes the lock.
    assert_eq!(
        w.tick_at(11_000),
        vec![Effect::HoldExpired { name: "L".into(), token: 1, owner: "session:1".into() }]
    );
    assert_eq!(w.reply(lock(s2, "L", 10_000)), Reply::Granted { token: 3, lease: 10_000 });

    // The old holder's writes are refused and change nothing.
    let fenced = Reply::Error(CoreError::Fenced { lock: "L".into(), token: 1 });
    let expected = w.unchanged();
    assert_eq!(w.reply(push_with("jobs", "stale", |p| p.fence = fence(1))), fenced);
    assert_eq!(w.state, expected);
    let expected = w.unchanged();
    assert_eq!(w.reply(push_with("fresh-queue", "stale", |p| p.fence = fence(1))), fenced);
    assert_eq!(w.state, expected);
    let expected = w.unchanged();
    assert_eq!(w.reply(Command::Ack { queue: "jobs".into(), receipts: vec![2], fence: fence(1) }), fenced);
    assert_eq!(w.state, expected);

    // The live token works.
    assert_eq!(
        w.reply(Command::Ack { queue: "jobs".into(), receipts: vec![2], fence: fence(3) }),
        Reply::Int(1)
    );
    assert_eq!(w.reply(push_with("jobs", "b", |p| p.fence = fence(3))), pushed(5));
    assert_eq!(queues(&w), names(&["jobs"]));
}

#[test]
fn create_queue_is_idempotent_and_validates_its_config() {
    let mut w = World::new();
    let config = QueueConfig { max_len: 10, lease: 5_000, ..QueueConfig::default() };
    assert_eq!(w.reply(create("jobs", config.clone())), Reply::Int(1));
    assert_eq!(w.reply(create("jobs", config.clone())), Reply::Int(0));
    assert_eq!(
        w.reply(create("jobs", QueueConfig { max_len: 11, ..config })),
        Reply::Error(CoreError::QueueConfigMismatch("jobs".into()))
    );
    // A queue that a push created has the default configuration.
    assert_eq!(w.reply(push("auto", "x")), pushed(3));
    assert_eq!(w.reply(create("auto", QueueConfig::default())), Reply::Int(0));

    let expected = w.unchanged();
    assert_eq!(
        w.reply(create("loop", QueueConfig { dead_letter: Some("loop".into()), ..QueueConfig::default() })),
        Reply::Error(CoreError::InvalidArgument("a queue cannot be its own dead-letter queue".into()))
    );
    assert_eq!(w.state, expected);
    let expected = w.unchanged();
    assert_eq!(
        w.reply(create("zero", QueueConfig { lease: 0, ..QueueConfig::default() })),
        Reply::Error(CoreError::InvalidArgument(
            "lease must be between 1 ms and the maximum duration".into()
        ))
    );
    assert_eq!(w.state, expected);
    assert_eq!(
        w.reply(create("zero", QueueConfig { ttl: Some(0), ..QueueConfig::default() })),
        Reply::Error(CoreError::InvalidArgument("ttl must be at least 1 ms".into()))
    );
    assert_eq!(queues(&w), names(&["auto", "jobs"]));
}

#[test]
fn peek_shows_delivery_order_without_delivering() {
    let mut w = World::new();
    let s = w.session(); // 1, queue 2
    assert_eq!(w.reply(push("jobs", "a")), pushed(3));
    assert_eq!(w.reply(push_with("jobs", "b", |p| p.priority = 9)), pushed(4));
    assert_eq!(w.reply(push_with("jobs", "c", |p| p.group = Some("g".into()))), pushed(5));
    assert_eq!(w.reply(push_with("jobs", "d", |p| p.group = Some("g".into()))), pushed(6));

    w.now = 1_500;
    assert_eq!(
        peek(&w, "jobs", 10),
        Reply::Messages(vec![
            view(4, "b", 9, 500, None),
            view(3, "a", 0, 500, None),
            view(5, "c", 0, 500, Some("g")),
        ])
    );
    assert_eq!(peek(&w, "jobs", 1), Reply::Messages(vec![view(4, "b", 9, 500, None)]));
    assert_eq!(peek(&w, "nope", 1), Reply::Error(CoreError::NoSuchQueue("nope".into())));
    assert_eq!(stats(&w, "jobs").totals.delivered, 0);
    assert_eq!(w.reply(pop(s, "jobs", 1)), Reply::Deliveries(vec![prio(msg(4, 1, "b", 1, LEASE), 9)]));
}

#[test]
fn stats_report_the_age_of_the_oldest_ready_message() {
    let mut w = World::new();
    let s = w.session(); // 1, queue 2
    assert_eq!(w.reply(push("jobs", "a")), pushed(3));
    w.now = 1_500;
    assert_eq!(w.reply(push("jobs", "b")), pushed(4));
    w.now = 2_000;
    assert_eq!(stats(&w, "jobs").oldest_ready_age, 1_000);
    assert_eq!(w.reply(pop(s, "jobs", 1)), Reply::Deliveries(vec![msg(3, 1, "a", 1, LEASE)]));
    assert_eq!(stats(&w, "jobs").oldest_ready_age, 500);
    // A read at a later time sees an older message.
    match w.state.query(2_600, Query::QueueStats { name: "jobs".into() }) {
        Reply::QueueStats(st) => assert_eq!(st.oldest_ready_age, 1_100),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.reply(pop(s, "jobs", 1)), Reply::Deliveries(vec![msg(4, 2, "b", 1, LEASE)]));
    assert_eq!(stats(&w, "jobs").oldest_ready_age, 0);
}

#[test]
fn tokens_strictly_increase_across_deliveries_and_lock_grants() {
    let mut w = World::new();
    let s = w.session(); // 1
    let mut tokens = Vec::new();
    assert_eq!(w.reply(lock(s, "L1", 10_000)), Reply::Granted { token: 1, lease: 10_000 });
    tokens.push(1);
    for p in ["a", "b", "c"] {
        w.reply(push("jobs", p));
    }
    // One pop, three deliveries: three tokens.
    let reply = w.reply(pop(s, "jobs", 3));
    assert_eq!(
        reply,
        Reply::Deliveries(vec![msg(3, 2, "a", 1, LEASE), msg(4, 3, "b", 1, LEASE), msg(5, 4, "c", 1, LEASE)])
    );
    tokens.extend(common::deliveries(&reply).iter().map(|d| d.1));
    assert_eq!(w.reply(lock(s, "L2", 10_000)), Reply::Granted { token: 5, lease: 10_000 });
    tokens.push(5);
    // A redelivery takes a new token too.
    assert_eq!(w.reply(nack("jobs", 2, 0)), Reply::Int(1));
    assert_eq!(w.reply(pop(s, "jobs", 1)), Reply::Deliveries(vec![msg(3, 6, "a", 2, LEASE)]));
    tokens.push(6);
    assert_eq!(w.state.last_token(), 6);
    assert!(tokens.windows(2).all(|p| p[0] < p[1]), "{tokens:?}");
}

#[test]
fn replay_and_snapshot_reproduce_the_state() {
    let mut w = World::new();
    let (s1, s2) = (w.session(), w.session());
    let config = QueueConfig {
        max_deliveries: 2,
        dead_letter: Some("dlq".into()),
        ttl: Some(5_000),
        dedup_window: 2_000,
        ..QueueConfig::default()
    };
    w.reply(create("jobs", config));
    w.apply(consume(s1, "jobs", 1));
    w.apply(push_with("jobs", "a", |p| p.group = Some("g".into())));
    w.apply(push_with("jobs", "b", |p| p.group = Some("g".into())));
    w.apply(push_with("jobs", "c", |p| p.dedup = Some("x".into())));
    w.apply(push_with("jobs", "d", |p| p.delay = 700));
    w.apply(push_with("jobs", "e", |p| p.priority = 7));
    w.apply(pop_wait(s2, "other", 3_000));
    w.apply(pop_lease(s2, "jobs", 2, 1_000));
    w.apply(lock(s2, "L", 4_000));
    w.advance(1_200);
    w.apply(Command::Set(turnstile_core::SetKey::new("k", "v")));
    w.advance(2_000);
    w.close(s1);
    w.advance(3_000);

    let replayed: State = w.replay();
    assert_eq!(replayed, w.state);
    let restored = State::restore(w.state.snapshot().into()).expect("snapshot restores");
    assert_eq!(restored, w.state);
    // And they go on identically.
    let mut live = w.state.clone();
    let mut copy = restored;
    let a = live.apply(1_000, w.now + 60_000, Command::Tick);
    let b = copy.apply(1_000, w.now + 60_000, Command::Tick);
    assert_eq!(a, b);
    assert_eq!(live, copy);
}

// ---------------------------------------------------------------------------------------------
// Stories that probe edges (see the report for the ones that fail)

/// A consumer at its credit limit regains credit when its delivery is rejected, and must then
/// be served the next ready message, exactly as after an ack.
#[test]
fn a_consumer_regains_credit_when_its_delivery_is_dead_lettered() {
    let mut w = World::new();
    let s = w.session(); // 1
    assert_eq!(w.reply(consume(s, "jobs", 1)), Reply::Consumer { consumer_id: 3 }); // queue 2
    let (_, fx) = w.apply(push("jobs", "a"));
    assert_eq!(fx, vec![delivered(s, to_consumer(3), "jobs", vec![msg(4, 1, "a", 1, LEASE)])]);
    assert_eq!(w.reply(push("jobs", "b")), pushed(5));

    let (reply, fx) = w.apply(reject("jobs", 1));
    assert_eq!(reply, Reply::Int(1));
    assert_eq!(fx, vec![delivered(s, to_consumer(3), "jobs", vec![msg(5, 2, "b", 1, LEASE)])]);
}

/// The same through max deliveries: the expired delivery is dead-lettered, the consumer's
/// credit comes back, and the next message must go to it in the same step.
#[test]
fn a_consumer_regains_credit_when_its_delivery_expires_past_max_deliveries() {
    let mut w = World::new();
    let s = w.session(); // 1
    let config = QueueConfig { max_deliveries: 1, lease: 1_000, ..QueueConfig::default() };
    assert_eq!(w.reply(create("jobs", config)), Reply::Int(1)); // 2
    assert_eq!(w.reply(consume(s, "jobs", 1)), Reply::Consumer { consumer_id: 3 });
    let (_, fx) = w.apply(push("jobs", "a"));
    assert_eq!(fx, vec![delivered(s, to_consumer(3), "jobs", vec![msg(4, 1, "a", 1, 1_000)])]);
    assert_eq!(w.reply(push("jobs", "b")), pushed(5));

    assert_eq!(
        w.tick_at(2_000),
        vec![
            Effect::DeliveryExpired { queue: "jobs".into(), id: 4, receipt: 1 },
            delivered(s, to_consumer(3), "jobs", vec![msg(5, 2, "b", 1, 1_000)]),
        ]
    );
}

/// Rejecting a group's head lets the group's next message through, to a pop that is waiting.
#[test]
fn rejecting_a_groups_head_releases_the_next_message() {
    let mut w = World::new();
    let s = w.session(); // 1, queue 2
    assert_eq!(w.reply(push_with("jobs", "a", |p| p.group = Some("g".into()))), pushed(3));
    assert_eq!(w.reply(push_with("jobs", "b", |p| p.group = Some("g".into()))), pushed(4));
    assert_eq!(w.reply(pop(s, "jobs", 10)), Reply::Deliveries(vec![msg(3, 1, "a", 1, LEASE)]));
    assert_eq!(w.reply(pop_wait(s, "jobs", 10_000)), Reply::Waiting { wait_id: 5 });

    let (reply, fx) = w.apply(reject("jobs", 1));
    assert_eq!(reply, Reply::Int(1));
    assert_eq!(fx, vec![delivered(s, to_pop(5), "jobs", vec![msg(4, 2, "b", 1, LEASE)])]);
}

/// Reads count an item whose deadline has passed as gone even before its timer fires
/// (`State::query`'s contract): a peek after a message's TTL must not show it.
#[test]
fn peek_after_a_messages_ttl_does_not_show_it() {
    let mut w = World::new();
    assert_eq!(w.reply(push_with("jobs", "short", |p| p.ttl = Some(500))), pushed(2));
    assert_eq!(w.reply(push("jobs", "long")), pushed(3));
    assert_eq!(
        w.state.query(1_499, Query::Peek { queue: "jobs".into(), count: 10 }),
        Reply::Messages(vec![view(2, "short", 0, 499, None), view(3, "long", 0, 499, None)])
    );
    assert_eq!(
        w.state.query(1_500, Query::Peek { queue: "jobs".into(), count: 10 }),
        Reply::Messages(vec![view(3, "long", 0, 500, None)])
    );
}
