//! What AMQP 0-9-1 needs from the core: exchanges and bindings, publish routing, queue options
//! (max priority, dead-letter exchanges, exclusive and auto-delete queues, a single active
//! consumer), exclusive consumers and shared credit pools.

mod common;

use bytes::Bytes;
use common::{World, consumer, deliveries, pop, push};
use turnstile_core::{
    Binding, Command, Consume, CoreError, CreditPool, DeadLetter, DeadLetterExchange, DeadReason, Effect,
    ExchangeDecl, ExchangeKind, Pop, Publish, Push, Query, QueueConfig, QueueStats, Reply, SessionId, State,
    Taker,
};

fn declare(name: &str, kind: ExchangeKind) -> ExchangeDecl {
    ExchangeDecl { name: name.into(), kind, durable: true, auto_delete: false, internal: false }
}

fn bind(exchange: &str, queue: &str, key: &str) -> Command {
    Command::Bind(Binding { exchange: exchange.into(), queue: queue.into(), routing_key: key.into() })
}

fn unbind(exchange: &str, queue: &str, key: &str) -> Command {
    Command::Unbind(Binding { exchange: exchange.into(), queue: queue.into(), routing_key: key.into() })
}

fn publish(exchange: &str, key: &str, payload: &str) -> Command {
    Command::Publish(Publish {
        exchange: exchange.into(),
        routing_key: key.into(),
        push: Push::new("ignored", payload.to_owned()),
    })
}

fn published(routed: u32) -> Reply {
    Reply::Published { routed, refused: 0 }
}

fn create(name: &str, config: QueueConfig) -> Command {
    Command::CreateQueue { name: name.into(), config }
}

fn consumer_id(reply: &Reply) -> u64 {
    match reply {
        Reply::Consumer { consumer_id } => *consumer_id,
        other => panic!("expected a consumer, got {other:?}"),
    }
}

fn stats(w: &World, queue: &str) -> QueueStats {
    match w.query(Query::QueueStats { name: queue.into() }) {
        Reply::QueueStats(s) => s,
        other => panic!("stats of {queue}: {other:?}"),
    }
}

fn ready(w: &World, queue: &str) -> u64 {
    stats(w, queue).ready
}

fn exists(w: &World, queue: &str) -> bool {
    match w.query(Query::ListQueues) {
        Reply::Names(names) => names.iter().any(|n| n == queue),
        other => panic!("{other:?}"),
    }
}

fn err(e: CoreError) -> Reply {
    Reply::Error(e)
}

/// The payloads of the deliveries in some effects, with who got them.
fn delivered_payloads(fx: &[Effect]) -> Vec<(Taker, String)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Delivered { to, deliveries, .. } => Some((*to, deliveries)),
            _ => None,
        })
        .flat_map(|(to, ds)| ds.iter().map(move |d| (to, String::from_utf8_lossy(&d.payload).into_owned())))
        .collect()
}

/// Receipts of the deliveries in some effects.
fn receipts(fx: &[Effect]) -> Vec<u64> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Delivered { deliveries, .. } => Some(deliveries.iter().map(|d| d.receipt)),
            _ => None,
        })
        .flatten()
        .collect()
}

fn world_with_queues(names: &[&str]) -> World {
    let mut w = World::new();
    for name in names {
        assert_eq!(w.reply(create(name, QueueConfig::default())), Reply::Int(1));
    }
    w
}

#[test]
fn a_direct_exchange_routes_by_equal_key_one_copy_per_queue() {
    let mut w = world_with_queues(&["a", "b", "c"]);
    assert_eq!(w.reply(Command::DeclareExchange(declare("x", ExchangeKind::Direct))), Reply::Int(1));
    w.reply(bind("x", "a", "red"));
    w.reply(bind("x", "b", "red"));
    w.reply(bind("x", "b", "red")); // twice: a no-op
    w.reply(bind("x", "b", "blue"));
    w.reply(bind("x", "c", "green"));
    assert_eq!(w.reply(publish("x", "red", "1")), published(2));
    assert_eq!(w.reply(publish("x", "blue", "2")), published(1));
    assert_eq!(w.reply(publish("x", "purple", "3")), published(0));
    assert_eq!((ready(&w, "a"), ready(&w, "b"), ready(&w, "c")), (1, 2, 0));
    // The built-in amq.direct routes the same way.
    w.reply(bind("amq.direct", "c", "k"));
    assert_eq!(w.reply(publish("amq.direct", "k", "4")), published(1));
    assert_eq!(ready(&w, "c"), 1);
}

#[test]
fn a_fanout_exchange_routes_to_every_bound_queue_once() {
    let mut w = world_with_queues(&["a", "b", "c"]);
    w.reply(bind("amq.fanout", "a", "x"));
    w.reply(bind("amq.fanout", "a", "y"));
    w.reply(bind("amq.fanout", "b", ""));
    assert_eq!(w.reply(publish("amq.fanout", "whatever", "m")), published(2));
    assert_eq!((ready(&w, "a"), ready(&w, "b"), ready(&w, "c")), (1, 1, 0));
}

#[test]
fn a_topic_exchange_matches_patterns() {
    let mut w = world_with_queues(&["all", "eu", "one", "tail"]);
    w.reply(bind("amq.topic", "all", "#"));
    w.reply(bind("amq.topic", "eu", "eu.#"));
    w.reply(bind("amq.topic", "one", "*.orders"));
    w.reply(bind("amq.topic", "tail", "#.orders"));
    w.reply(bind("amq.topic", "tail", "eu.*")); // a second match of the same queue: still one copy
    assert_eq!(w.reply(publish("amq.topic", "eu.orders", "1")), published(4));
    assert_eq!(w.reply(publish("amq.topic", "orders", "2")), published(2)); // all, tail (not *.orders)
    assert_eq!(w.reply(publish("amq.topic", "eu", "3")), published(2)); // all, eu.# (# is zero words)
    assert_eq!(w.reply(publish("amq.topic", "us.orders.big", "4")), published(1));
    let counts: Vec<u64> = ["all", "eu", "one", "tail"].iter().map(|q| ready(&w, q)).collect();
    assert_eq!(counts, vec![4, 2, 1, 2]);
}

#[test]
fn the_default_exchange_routes_by_queue_name_and_takes_no_bindings() {
    let mut w = world_with_queues(&["jobs"]);
    assert_eq!(w.reply(publish("", "jobs", "m")), published(1));
    assert_eq!(w.reply(publish("", "missing", "m")), published(0));
    assert!(!exists(&w, "missing"), "publish never creates a queue");
    let refused = CoreError::AccessRefused("operation not permitted on the default exchange".into());
    assert_eq!(w.reply(bind("", "jobs", "k")), err(refused.clone()));
    assert_eq!(w.reply(unbind("", "jobs", "k")), err(refused.clone()));
    assert_eq!(w.reply(Command::DeleteExchange { name: "".into(), if_unused: false }), err(refused));
    assert_eq!(w.query(Query::Exchange { name: "".into() }), Reply::Ok);
}

#[test]
fn publish_and_bind_errors() {
    let mut w = world_with_queues(&["q"]);
    let unchanged = w.unchanged();
    let missing = CoreError::NoSuchExchange("nope".into());
    assert_eq!(w.reply(publish("nope", "k", "m")), err(missing.clone()));
    assert_eq!(w.state, unchanged);
    assert_eq!(missing.to_string(), "no exchange 'nope' in vhost '/'");
    assert_eq!(w.reply(bind("nope", "q", "k")), err(missing.clone()));
    assert_eq!(w.reply(unbind("nope", "q", "k")), err(missing));
    assert_eq!(w.reply(bind("amq.topic", "nq", "k")), err(CoreError::NoSuchQueue("nq".into())));
    // Unbinding what was never bound is fine.
    assert_eq!(w.reply(unbind("amq.topic", "q", "k")), Reply::Ok);

    let internal = ExchangeDecl { internal: true, ..declare("hidden", ExchangeKind::Fanout) };
    w.reply(Command::DeclareExchange(internal));
    w.reply(bind("hidden", "q", ""));
    assert_eq!(
        w.reply(publish("hidden", "", "m")),
        err(CoreError::AccessRefused("cannot publish to internal exchange 'hidden' in vhost '/'".into()))
    );
    assert_eq!(ready(&w, "q"), 0);
}

#[test]
fn declare_is_idempotent_and_refuses_a_different_kind_or_flags() {
    let mut w = World::new();
    let decl = declare("x", ExchangeKind::Topic);
    assert_eq!(w.reply(Command::DeclareExchange(decl.clone())), Reply::Int(1));
    assert_eq!(w.reply(Command::DeclareExchange(decl.clone())), Reply::Int(0));
    assert_eq!(
        w.reply(Command::DeclareExchange(declare("x", ExchangeKind::Direct))),
        err(CoreError::Precondition(
            "inequivalent arg 'type' for exchange 'x' in vhost '/': received 'direct' but current is 'topic'"
                .into()
        ))
    );
    let durable = w.reply(Command::DeclareExchange(ExchangeDecl { durable: false, ..decl.clone() }));
    assert!(matches!(durable, Reply::Error(CoreError::Precondition(m)) if m.contains("'durable'")));
    let auto = w.reply(Command::DeclareExchange(ExchangeDecl { auto_delete: true, ..decl.clone() }));
    assert!(matches!(auto, Reply::Error(CoreError::Precondition(m)) if m.contains("'auto_delete'")));
    assert_eq!(w.query(Query::Exchange { name: "x".into() }), Reply::Ok);
    assert_eq!(w.query(Query::Exchange { name: "y".into() }), err(CoreError::NoSuchExchange("y".into())));
}

#[test]
fn amq_names_are_reserved_and_the_built_ins_redeclare_equivalently() {
    let mut w = World::new();
    assert_eq!(w.reply(Command::DeclareExchange(declare("amq.topic", ExchangeKind::Topic))), Reply::Int(0));
    assert_eq!(w.reply(Command::DeclareExchange(declare("amq.direct", ExchangeKind::Direct))), Reply::Int(0));
    assert_eq!(w.reply(Command::DeclareExchange(declare("amq.fanout", ExchangeKind::Fanout))), Reply::Int(0));
    let wrong = w.reply(Command::DeclareExchange(declare("amq.fanout", ExchangeKind::Topic)));
    assert!(matches!(wrong, Reply::Error(CoreError::Precondition(_))), "{wrong:?}");
    assert_eq!(
        w.reply(Command::DeclareExchange(declare("amq.mine", ExchangeKind::Direct))),
        err(CoreError::AccessRefused("exchange name 'amq.mine' contains reserved prefix 'amq.*'".into()))
    );
    assert_eq!(
        w.query(Query::Exchange { name: "amq.mine".into() }),
        err(CoreError::NoSuchExchange("amq.mine".into()))
    );
    let delete = w.reply(Command::DeleteExchange { name: "amq.topic".into(), if_unused: false });
    assert!(matches!(delete, Reply::Error(CoreError::AccessRefused(_))), "{delete:?}");
    assert_eq!(w.query(Query::Exchange { name: "amq.topic".into() }), Reply::Ok);
}

#[test]
fn delete_exchange_if_unused_and_its_bindings_go_with_it() {
    let mut w = world_with_queues(&["q"]);
    w.reply(Command::DeclareExchange(declare("x", ExchangeKind::Fanout)));
    w.reply(bind("x", "q", ""));
    assert_eq!(
        w.reply(Command::DeleteExchange { name: "x".into(), if_unused: true }),
        err(CoreError::Precondition("exchange 'x' in vhost '/' in use".into()))
    );
    assert_eq!(w.reply(Command::DeleteExchange { name: "x".into(), if_unused: false }), Reply::Int(1));
    assert_eq!(w.reply(Command::DeleteExchange { name: "x".into(), if_unused: false }), Reply::Int(0));
    // Declared again, it starts without the old binding.
    w.reply(Command::DeclareExchange(declare("x", ExchangeKind::Fanout)));
    assert_eq!(w.reply(publish("x", "", "m")), published(0));
    // Unused, if_unused deletes.
    assert_eq!(w.reply(Command::DeleteExchange { name: "x".into(), if_unused: true }), Reply::Int(1));
}

#[test]
fn unbind_stops_the_route() {
    let mut w = world_with_queues(&["q"]);
    w.reply(bind("amq.direct", "q", "k"));
    assert_eq!(w.reply(publish("amq.direct", "k", "1")), published(1));
    w.reply(unbind("amq.direct", "q", "k"));
    assert_eq!(w.reply(publish("amq.direct", "k", "2")), published(0));
    assert_eq!(ready(&w, "q"), 1);
}

#[test]
fn deleting_a_queue_removes_its_bindings_and_an_auto_delete_exchange_goes_with_its_last() {
    let mut w = world_with_queues(&["a", "b"]);
    let auto = ExchangeDecl { auto_delete: true, ..declare("auto", ExchangeKind::Fanout) };
    w.reply(Command::DeclareExchange(auto));
    w.reply(bind("auto", "a", ""));
    w.reply(bind("auto", "b", ""));
    w.reply(bind("amq.fanout", "a", ""));
    assert_eq!(
        w.reply(Command::DeleteQueue { name: "a".into(), if_unused: false, if_empty: false }),
        Reply::Int(1)
    );
    // A queue of the same name later is not bound.
    w.reply(create("a", QueueConfig::default()));
    assert_eq!(w.reply(publish("amq.fanout", "", "m")), published(0));
    assert_eq!(w.reply(publish("auto", "", "m")), published(1));
    // The last binding goes by unbind: the exchange goes with it.
    w.reply(unbind("auto", "b", ""));
    assert_eq!(
        w.query(Query::Exchange { name: "auto".into() }),
        err(CoreError::NoSuchExchange("auto".into()))
    );

    // And by queue deletion.
    let auto = ExchangeDecl { auto_delete: true, ..declare("auto2", ExchangeKind::Direct) };
    w.reply(Command::DeclareExchange(auto));
    w.reply(bind("auto2", "b", "k"));
    w.reply(Command::DeleteQueue { name: "b".into(), if_unused: false, if_empty: false });
    assert_eq!(
        w.query(Query::Exchange { name: "auto2".into() }),
        err(CoreError::NoSuchExchange("auto2".into()))
    );
}

#[test]
fn publish_takes_the_push_path_for_each_queue() {
    let mut w = World::new();
    w.reply(create("small", QueueConfig { max_len: 1, ..QueueConfig::default() }));
    w.reply(create("ttl", QueueConfig { ttl: Some(1_000), ..QueueConfig::default() }));
    w.reply(bind("amq.fanout", "small", ""));
    w.reply(bind("amq.fanout", "ttl", ""));
    assert_eq!(w.reply(publish("amq.fanout", "", "1")), published(2));
    // The full queue refuses, which is not an error of the publish.
    assert_eq!(w.reply(publish("amq.fanout", "", "2")), Reply::Published { routed: 1, refused: 1 });
    assert_eq!(ready(&w, "small"), 1);
    assert_eq!(ready(&w, "ttl"), 2);
    // The queue's TTL applies to published copies.
    w.advance(1_000);
    assert_eq!(ready(&w, "ttl"), 0);
    assert_eq!(stats(&w, "ttl").totals.expired, 2);
    // Dedup, per queue.
    let dedup = |payload: &str| {
        Command::Publish(Publish {
            exchange: "".into(),
            routing_key: "ttl".into(),
            push: Push { dedup: Some("d".into()), ..Push::new("", payload.to_owned()) },
        })
    };
    assert_eq!(w.reply(dedup("a")), published(1));
    assert_eq!(w.reply(dedup("b")), published(1));
    assert_eq!(ready(&w, "ttl"), 1);
    assert_eq!(stats(&w, "ttl").totals.deduplicated, 1);
}

#[test]
fn published_copies_wake_a_waiting_pop() {
    let mut w = world_with_queues(&["q"]);
    let s = w.session();
    let (reply, _) = w.apply(Command::Pop(turnstile_core::Pop { wait: 5_000, ..pop_one(s, "q") }));
    let Reply::Waiting { wait_id } = reply else { panic!("{reply:?}") };
    let (reply, fx) = w.apply(publish("", "q", "hello"));
    assert_eq!(reply, published(1));
    assert_eq!(delivered_payloads(&fx), vec![(Taker::Pop { wait_id }, "hello".to_owned())]);
}

fn pop_one(s: SessionId, queue: &str) -> turnstile_core::Pop {
    match pop(s, queue, 1) {
        Command::Pop(p) => p,
        _ => unreachable!(),
    }
}

#[test]
fn priorities_are_clamped_to_max_priority_and_zero_is_fifo() {
    let mut w = World::new();
    w.reply(create("p3", QueueConfig { max_priority: 3, ..QueueConfig::default() }));
    w.reply(create("fifo", QueueConfig { max_priority: 0, ..QueueConfig::default() }));
    let s = w.session();
    let with_priority = |queue: &str, payload: &str, priority: u8| {
        Command::Publish(Publish {
            exchange: "".into(),
            routing_key: queue.into(),
            push: Push { priority, ..Push::new("", payload.to_owned()) },
        })
    };
    // Publish takes any priority (no 0..9 error) and stores at most the queue's max.
    assert_eq!(w.reply(with_priority("p3", "low", 1)), published(1));
    assert_eq!(w.reply(with_priority("p3", "huge", 200)), published(1));
    assert_eq!(w.reply(with_priority("p3", "three", 3)), published(1));
    let (reply, _) = w.apply(pop(s, "p3", 3));
    let Reply::Deliveries(ds) = reply else { panic!("{reply:?}") };
    let got: Vec<(&[u8], u8)> = ds.iter().map(|d| (&d.payload[..], d.priority)).collect();
    assert_eq!(got, vec![(&b"huge"[..], 3), (&b"three"[..], 3), (&b"low"[..], 1)]);

    // A plain push keeps its 0..9 check, and is clamped too.
    let push_p = |payload: &str, priority: u8| {
        Command::Push(Push { priority, ..Push::new("fifo", payload.to_owned()) })
    };
    assert!(matches!(w.reply(push_p("x", 10)), Reply::Error(CoreError::InvalidArgument(_))));
    w.reply(push_p("first", 1));
    w.reply(push_p("second", 9));
    w.reply(push_p("third", 5));
    let got: Vec<String> = deliveries(&w.apply(pop(s, "fifo", 3)).0).into_iter().map(|d| d.2).collect();
    assert_eq!(got, vec!["first", "second", "third"]);
}

#[test]
fn dead_letters_are_routed_through_the_dead_letter_exchange() {
    let mut w = world_with_queues(&["dl.a", "dl.b", "other"]);
    let dlx = DeadLetterExchange { exchange: "amq.topic".into(), routing_key: None };
    let config = QueueConfig { dead_letter_exchange: Some(dlx), ..QueueConfig::default() };
    w.reply(create("work", config));
    w.reply(bind("amq.topic", "dl.a", "work"));
    w.reply(bind("amq.topic", "dl.b", "#"));
    w.reply(bind("amq.topic", "other", "nothing"));
    // A copy routed back into the queue it leaves is discarded.
    w.reply(bind("amq.topic", "work", "work"));
    let s = w.session();
    w.apply(push("work", "m"));
    let (reply, _) = w.apply(pop(s, "work", 1));
    let receipt = deliveries(&reply)[0].1;
    let (reply, _) = w.apply(Command::Nack { queue: "work".into(), receipt, delay: 0, dead_letter: true });
    assert_eq!(reply, Reply::Int(1));
    assert_eq!((ready(&w, "dl.a"), ready(&w, "dl.b"), ready(&w, "other"), ready(&w, "work")), (1, 1, 0, 0));
    let work = stats(&w, "work").totals;
    assert_eq!((work.dead_lettered, work.discarded), (1, 0));
    assert_eq!(stats(&w, "dl.b").totals.dead_letters_in, 1);
    for q in ["dl.a", "dl.b"] {
        let (reply, _) = w.apply(pop(s, q, 1));
        let Reply::Deliveries(ds) = reply else { panic!("{reply:?}") };
        let via = DeadLetterExchange { exchange: "amq.topic".into(), routing_key: Some("work".into()) };
        let dead = DeadLetter { reason: DeadReason::Rejected, from: "work".into(), via: Some(via) };
        assert_eq!(ds[0].dead, Some(dead));
        assert_eq!(ds[0].payload, Bytes::from_static(b"m"));
    }
}

#[test]
fn a_dead_letter_routing_key_overrides_and_no_match_counts_as_no_dlq() {
    let mut w = world_with_queues(&["dl"]);
    let keyed = DeadLetterExchange { exchange: "amq.direct".into(), routing_key: Some("dead".into()) };
    w.reply(create(
        "keyed",
        QueueConfig { ttl: Some(100), dead_letter_exchange: Some(keyed), ..QueueConfig::default() },
    ));
    w.reply(bind("amq.direct", "dl", "dead"));
    // Only its own queue matches: nothing else, so it is counted expired.
    let looped = DeadLetterExchange { exchange: "".into(), routing_key: None };
    w.reply(create(
        "looped",
        QueueConfig { ttl: Some(100), dead_letter_exchange: Some(looped), ..QueueConfig::default() },
    ));
    let gone = DeadLetterExchange { exchange: "gone".into(), routing_key: None };
    w.reply(create(
        "gone",
        QueueConfig { ttl: Some(100), dead_letter_exchange: Some(gone), ..QueueConfig::default() },
    ));
    for q in ["keyed", "looped", "gone"] {
        w.apply(push(q, "m"));
    }
    w.advance(100);
    assert_eq!(ready(&w, "dl"), 1);
    assert_eq!(stats(&w, "keyed").totals.dead_lettered, 1);
    let Reply::Messages(views) = w.query(Query::Peek { queue: "dl".into(), count: 1 }) else { panic!() };
    let via = DeadLetterExchange { exchange: "amq.direct".into(), routing_key: Some("dead".into()) };
    let dead = DeadLetter { reason: DeadReason::Expired, from: "keyed".into(), via: Some(via) };
    assert_eq!(views[0].dead, Some(dead));
    assert_eq!(ready(&w, "looped"), 0);
    assert_eq!(stats(&w, "looped").totals.expired, 1);
    assert_eq!(stats(&w, "gone").totals.expired, 1);
    assert_eq!(stats(&w, "gone").totals.dead_lettered, 0);
}

#[test]
fn a_dead_letter_takes_the_priority_bound_of_the_queue_it_arrives_in() {
    let mut w = World::new();
    w.reply(create("fifo-dl", QueueConfig { max_priority: 0, ..QueueConfig::default() }));
    w.reply(create("src", QueueConfig { dead_letter: Some("fifo-dl".into()), ..QueueConfig::default() }));
    let s = w.session();
    w.apply(Command::Push(Push { priority: 7, ..Push::new("src", "m") }));
    let receipt = deliveries(&w.apply(pop(s, "src", 1)).0)[0].1;
    w.apply(Command::Nack { queue: "src".into(), receipt, delay: 0, dead_letter: true });
    let (reply, _) = w.apply(pop(s, "fifo-dl", 1));
    let Reply::Deliveries(ds) = reply else { panic!("{reply:?}") };
    assert_eq!(ds[0].priority, 0);
}

#[test]
fn a_dead_letter_queue_wins_over_a_dead_letter_exchange() {
    let mut w = world_with_queues(&["viaq", "viax"]);
    w.reply(bind("amq.fanout", "viax", ""));
    let config = QueueConfig {
        max_len: 1,
        overflow: turnstile_core::Overflow::DropHead,
        dead_letter: Some("viaq".into()),
        dead_letter_exchange: Some(DeadLetterExchange { exchange: "amq.fanout".into(), routing_key: None }),
        ..QueueConfig::default()
    };
    w.reply(create("src", config));
    w.apply(push("src", "1"));
    w.apply(push("src", "2"));
    assert_eq!((ready(&w, "viaq"), ready(&w, "viax")), (1, 0));
}

fn exclusive_world() -> (World, SessionId, SessionId) {
    let mut w = World::new();
    let (owner, other) = (w.session(), w.session());
    let config = QueueConfig { exclusive_owner: Some(owner), ..QueueConfig::default() };
    assert_eq!(w.reply(create("mine", config)), Reply::Int(1));
    (w, owner, other)
}

fn locked() -> Reply {
    err(CoreError::ResourceLocked(
        "cannot obtain exclusive access to locked queue 'mine' in vhost '/'".into(),
    ))
}

fn as_session(session: SessionId, command: Command) -> Command {
    Command::InSession { session, command: Box::new(command) }
}

#[test]
fn an_exclusive_queue_is_locked_to_other_sessions() {
    let (mut w, owner, other) = exclusive_world();
    w.apply(push("mine", "m"));
    let delete = Command::DeleteQueue { name: "mine".into(), if_unused: false, if_empty: false };
    let redeclare = QueueConfig { exclusive_owner: Some(other), ..QueueConfig::default() };
    for cmd in [
        Command::Consume(consumer(other, "mine", 0)),
        pop(other, "mine", 1),
        as_session(other, bind("amq.direct", "mine", "k")),
        as_session(other, unbind("amq.direct", "mine", "k")),
        as_session(other, Command::PurgeQueue { name: "mine".into() }),
        as_session(other, delete.clone()),
        create("mine", redeclare),
        create("mine", QueueConfig::default()),
    ] {
        let unchanged = w.unchanged();
        assert_eq!(w.reply(cmd.clone()), locked(), "{cmd:?}");
        assert_eq!(w.state, unchanged, "{cmd:?} changed the state");
    }
    // Anyone may publish to it; the owner may do everything.
    assert_eq!(w.reply(publish("", "mine", "n")), published(1));
    let same = QueueConfig { exclusive_owner: Some(owner), ..QueueConfig::default() };
    assert_eq!(w.reply(create("mine", same)), Reply::Int(0));
    assert_eq!(w.reply(as_session(owner, bind("amq.direct", "mine", "k"))), Reply::Ok);
    assert_eq!(deliveries(&w.apply(pop(owner, "mine", 1)).0).len(), 1);
    assert_eq!(w.reply(as_session(owner, Command::PurgeQueue { name: "mine".into() })), Reply::Int(1));
    assert_eq!(w.reply(as_session(owner, delete)), Reply::Int(1));
    // A shared queue cannot be redeclared as exclusive.
    w.reply(create("shared", QueueConfig::default()));
    let exclusive = QueueConfig { exclusive_owner: Some(owner), ..QueueConfig::default() };
    let refused = w.reply(create("shared", exclusive));
    assert!(matches!(refused, Reply::Error(CoreError::ResourceLocked(_))), "{refused:?}");
    // The wrapper needs an open session and does not nest.
    let ghost = SessionId(999);
    assert_eq!(w.reply(as_session(ghost, Command::Tick)), err(CoreError::UnknownSession(ghost)));
    let nested = w.reply(as_session(owner, as_session(owner, Command::Tick)));
    assert!(matches!(nested, Reply::Error(CoreError::InvalidArgument(_))), "{nested:?}");
}

#[test]
fn an_exclusive_queue_goes_when_its_owner_closes() {
    let (mut w, owner, _) = exclusive_world();
    w.reply(bind("amq.fanout", "mine", ""));
    let c = consumer_id(&w.reply(Command::Consume(consumer(owner, "mine", 0))));
    w.apply(push("mine", "m"));
    let fx = w.close(owner);
    assert!(
        fx.contains(&Effect::ConsumerCancelled { session: owner, consumer_id: c, queue: "mine".into() }),
        "{fx:?}"
    );
    assert!(!exists(&w, "mine"));
    assert_eq!(w.reply(publish("amq.fanout", "", "m")), published(0));
}

#[test]
fn an_exclusive_queue_goes_at_restart() {
    let (mut w, _, other) = exclusive_world();
    w.reply(create("shared", QueueConfig::default()));
    w.apply(push("mine", "m"));
    let (reply, _) = w.apply(Command::DetachSessions);
    assert_eq!(reply, Reply::Int(2));
    assert!(!exists(&w, "mine"));
    assert!(exists(&w, "shared"));
    let _ = other;
    // An exclusive queue of a session that is not open cannot be created.
    let ghost = QueueConfig { exclusive_owner: Some(SessionId(12345)), ..QueueConfig::default() };
    assert_eq!(w.reply(create("ghost", ghost)), err(CoreError::UnknownSession(SessionId(12345))));
}

#[test]
fn an_auto_delete_queue_goes_with_its_last_consumer() {
    let mut w = World::new();
    let (a, b) = (w.session(), w.session());
    w.reply(create("auto", QueueConfig { auto_delete: true, ..QueueConfig::default() }));
    // Never consumed: it stays.
    w.apply(push("auto", "m"));
    assert!(exists(&w, "auto"));
    let ca = consumer_id(&w.apply(Command::Consume(consumer(a, "auto", 0))).0);
    let cb = consumer_id(&w.reply(Command::Consume(consumer(b, "auto", 0))));
    assert_eq!(w.reply(Command::Cancel { queue: "auto".into(), consumer_id: ca }), Reply::Int(1));
    assert!(exists(&w, "auto"), "one consumer is left");
    let _ = cb;
    w.close(b);
    assert!(!exists(&w, "auto"), "its last consumer's session closed");

    // By cancel, too.
    w.reply(create("auto", QueueConfig { auto_delete: true, ..QueueConfig::default() }));
    let c = consumer_id(&w.reply(Command::Consume(consumer(a, "auto", 0))));
    assert_eq!(w.reply(Command::Cancel { queue: "auto".into(), consumer_id: c }), Reply::Int(1));
    assert!(!exists(&w, "auto"));
}

#[test]
fn an_exclusive_consumer_keeps_the_queue_to_itself() {
    let mut w = world_with_queues(&["q"]);
    let (a, b) = (w.session(), w.session());
    let in_use = err(CoreError::AccessRefused("queue 'q' in vhost '/' in exclusive use".into()));
    let plain = consumer_id(&w.reply(Command::Consume(consumer(a, "q", 0))));
    let exclusive = Command::Consume(Consume { exclusive: true, ..consumer(b, "q", 0) });
    assert_eq!(w.reply(exclusive.clone()), in_use);
    w.reply(Command::Cancel { queue: "q".into(), consumer_id: plain });
    let only = consumer_id(&w.reply(exclusive.clone()));
    assert_eq!(w.reply(Command::Consume(consumer(a, "q", 0))), in_use);
    assert_eq!(w.reply(exclusive), in_use);
    w.reply(Command::Cancel { queue: "q".into(), consumer_id: only });
    assert!(matches!(w.reply(Command::Consume(consumer(a, "q", 0))), Reply::Consumer { .. }));
}

#[test]
fn a_single_active_consumer_gets_everything_until_it_goes() {
    let mut w = World::new();
    w.reply(create("sac", QueueConfig { single_active_consumer: true, ..QueueConfig::default() }));
    let (a, b) = (w.session(), w.session());
    let first = consumer_id(&w.reply(Command::Consume(consumer(a, "sac", 1))));
    let second = consumer_id(&w.reply(Command::Consume(consumer(b, "sac", 0))));
    let (_, fx) = w.apply(push("sac", "1"));
    assert_eq!(delivered_payloads(&fx), vec![(Taker::Consumer { consumer_id: first }, "1".to_owned())]);
    // The active consumer is out of credit: the next message waits rather than go to `second`.
    let (_, fx) = w.apply(push("sac", "2"));
    assert_eq!(fx, vec![]);
    w.apply(push("sac", "3"));
    assert_eq!(ready(&w, "sac"), 2);
    // The active one goes: `second` takes over and gets what waited, and its own unacked
    // delivery comes back to it too when its session closes.
    let fx = w.close(a);
    let got = delivered_payloads(&fx);
    let to_second = Taker::Consumer { consumer_id: second };
    assert_eq!(got, vec![(to_second, "1".into()), (to_second, "2".into()), (to_second, "3".into())]);
}

#[test]
fn a_credit_pool_limits_unacked_across_consumers() {
    let mut w = world_with_queues(&["q1", "q2"]);
    let s = w.session();
    let pool = Some(CreditPool { id: 1, limit: 2 });
    let c1 = consumer_id(&w.reply(Command::Consume(Consume { pool, ..consumer(s, "q1", 0) })));
    let c2 = consumer_id(&w.reply(Command::Consume(Consume { pool, ..consumer(s, "q2", 0) })));
    let mut rs = Vec::new();
    for (q, payload) in [("q1", "a"), ("q2", "b"), ("q1", "c"), ("q2", "d")] {
        let (_, fx) = w.apply(push(q, payload));
        rs.extend(receipts(&fx));
    }
    assert_eq!(rs.len(), 2, "only two unacked in the pool");
    assert_eq!((ready(&w, "q1"), ready(&w, "q2")), (1, 1));
    // An ack lets the next one through (here, on the same queue).
    let (_, fx) = w.apply(Command::Ack { queue: "q2".into(), receipts: vec![rs[1]], fence: None });
    let got = delivered_payloads(&fx);
    assert_eq!(got, vec![(Taker::Consumer { consumer_id: c2 }, "d".to_owned())]);
    assert_eq!((ready(&w, "q1"), ready(&w, "q2")), (1, 0));
    // Acking on q1 serves q1's waiting message.
    let (_, fx) = w.apply(Command::Ack { queue: "q1".into(), receipts: vec![rs[0]], fence: None });
    assert_eq!(delivered_payloads(&fx), vec![(Taker::Consumer { consumer_id: c1 }, "c".to_owned())]);
    // An ack on one queue serves the pool's consumer of the other (at the end of the step).
    w.apply(push("q2", "e"));
    assert_eq!(ready(&w, "q2"), 1);
    let in_flight_q1 = match w.query(Query::QueueStats { name: "q1".into() }) {
        Reply::QueueStats(s) => s.in_flight,
        other => panic!("{other:?}"),
    };
    assert_eq!(in_flight_q1, 1);
    let c_receipt = receipts(&fx)[0];
    let (_, fx) = w.apply(Command::Ack { queue: "q1".into(), receipts: vec![c_receipt], fence: None });
    assert_eq!(delivered_payloads(&fx), vec![(Taker::Consumer { consumer_id: c2 }, "e".to_owned())]);
}

#[test]
fn the_latest_consume_sets_a_pools_limit_and_auto_ack_never_counts() {
    let mut w = world_with_queues(&["q"]);
    let s = w.session();
    let one = Some(CreditPool { id: 7, limit: 1 });
    w.reply(Command::Consume(Consume { pool: one, ..consumer(s, "q", 0) }));
    w.apply(push("q", "a"));
    w.apply(push("q", "b"));
    assert_eq!(ready(&w, "q"), 1);
    // A second consumer raises the pool's limit: the waiting message goes at once.
    let three = Some(CreditPool { id: 7, limit: 3 });
    let (_, fx) = w.apply(Command::Consume(Consume { pool: three, ..consumer(s, "q", 0) }));
    assert_eq!(delivered_payloads(&fx).len(), 1);
    assert_eq!(ready(&w, "q"), 0);

    // An auto-ack consumer in a full pool is never held back.
    let t = w.session();
    let full = Some(CreditPool { id: 1, limit: 1 });
    w.reply(create("r", QueueConfig::default()));
    w.reply(Command::Consume(Consume { pool: full, auto_ack: true, ..consumer(t, "r", 0) }));
    for i in 0..3 {
        let (_, fx) = w.apply(push("r", &i.to_string()));
        assert_eq!(delivered_payloads(&fx).len(), 1);
    }
}

#[test]
fn delete_queue_if_unused_and_if_empty() {
    let mut w = world_with_queues(&["q"]);
    let s = w.session();
    let delete = |if_unused, if_empty| Command::DeleteQueue { name: "q".into(), if_unused, if_empty };
    let c = consumer_id(&w.reply(Command::Consume(consumer(s, "q", 0))));
    assert_eq!(
        w.reply(delete(true, false)),
        err(CoreError::Precondition("queue 'q' in vhost '/' in use".into()))
    );
    w.reply(Command::Cancel { queue: "q".into(), consumer_id: c });
    w.apply(push("q", "m"));
    let (reply, _) = w.apply(pop(s, "q", 1));
    assert_eq!(deliveries(&reply).len(), 1);
    // In flight counts as not empty.
    assert_eq!(
        w.reply(delete(true, true)),
        err(CoreError::Precondition("queue 'q' in vhost '/' not empty".into()))
    );
    assert_eq!(w.reply(delete(true, false)), Reply::Int(1));
    assert_eq!(w.reply(delete(true, true)), Reply::Int(0));
}

#[test]
fn query_queue_config_returns_the_stored_config() {
    let mut w = World::new();
    let s = w.session();
    let config = QueueConfig {
        max_priority: 4,
        auto_delete: true,
        exclusive_owner: Some(s),
        single_active_consumer: true,
        dead_letter_exchange: Some(DeadLetterExchange {
            exchange: "x".into(),
            routing_key: Some("k".into()),
        }),
        ..QueueConfig::default()
    };
    w.reply(create("q", config.clone()));
    assert_eq!(w.query(Query::QueueConfig { name: "q".into() }), Reply::QueueConfig(Box::new(config)));
    assert_eq!(w.query(Query::QueueConfig { name: "n".into() }), err(CoreError::NoSuchQueue("n".into())));
}

#[test]
fn a_snapshot_keeps_exchanges_bindings_pools_and_the_new_options() {
    let mut w = world_with_queues(&["plain", "dl"]);
    let (a, b) = (w.session(), w.session());
    w.reply(Command::DeclareExchange(ExchangeDecl {
        auto_delete: true,
        ..declare("events", ExchangeKind::Topic)
    }));
    w.reply(Command::DeclareExchange(ExchangeDecl {
        internal: true,
        ..declare("dlx", ExchangeKind::Fanout)
    }));
    w.reply(bind("events", "plain", "a.#"));
    w.reply(bind("amq.direct", "plain", "k"));
    w.reply(bind("dlx", "dl", ""));
    let config = QueueConfig {
        max_priority: 5,
        exclusive_owner: Some(a),
        auto_delete: true,
        single_active_consumer: true,
        dead_letter_exchange: Some(DeadLetterExchange { exchange: "dlx".into(), routing_key: None }),
        ..QueueConfig::default()
    };
    w.reply(create("mine", config));
    w.reply(bind("events", "mine", "#"));
    let pool = Some(CreditPool { id: 3, limit: 2 });
    w.reply(Command::Consume(Consume { pool, ..consumer(a, "mine", 0) }));
    w.reply(Command::Consume(Consume { pool, ..consumer(a, "plain", 0) }));
    w.apply(Command::Consume(Consume { exclusive: true, ..consumer(b, "dl", 0) }));
    for i in 0..5 {
        w.apply(publish("events", "a.b", &i.to_string()));
    }
    let bytes = Bytes::from(w.state.snapshot());
    let mut restored = State::restore(bytes).unwrap();
    restored.check_invariants().unwrap();
    assert_eq!(restored, w.state);
    assert_eq!(w.replay(), w.state);
    // And it goes on the same way: an ack frees pool credit on both.
    let next = Command::Ack { queue: "plain".into(), receipts: vec![1, 2], fence: None };
    let again = restored.apply(w.state.applied_index() + 1, w.now, next.clone());
    let live = w.apply(next);
    assert_eq!(live.0, Reply::Int(1));
    assert_eq!(delivered_payloads(&live.1).len(), 1, "{live:?}");
    assert_eq!(live, again);
    assert_eq!(restored, w.state);
    let close = Command::CloseSession { session: a, binding: None };
    let again = restored.apply(w.state.applied_index() + 1, w.now, close.clone());
    assert_eq!(w.apply(close), again);
    assert_eq!(restored, w.state);
    assert!(!exists(&w, "mine"));
}

/// Flow control's look at a backlog (`State::flow_backlog`): the ready messages of the queues a
/// publish would go to, counted only where a session other than the publisher's takes from them.
#[test]
fn the_flow_backlog_is_the_ready_count_of_queues_another_session_takes_from() {
    let mut w = world_with_queues(&["jobs", "audit", "idle", "empty"]);
    let (publisher, worker) = (w.session(), w.session());
    w.reply(Command::DeclareExchange(declare("fan", ExchangeKind::Fanout)));
    w.reply(bind("fan", "jobs", ""));
    w.reply(bind("fan", "audit", ""));
    for i in 0..6 {
        w.apply(publish("fan", "", &i.to_string()));
    }
    w.apply(push("audit", "extra"));
    let backlog = |w: &World, exchange: &str, key: &str, sender| w.state.flow_backlog(exchange, key, sender);
    // Nobody takes from either queue: a backlog kept on purpose, however long.
    assert_eq!(backlog(&w, "fan", "", Some(publisher)), None);
    assert_eq!(backlog(&w, "", "jobs", None), None);

    // The publisher's own consumer does not count; another session's does.
    w.apply(Command::Consume(consumer(publisher, "audit", 1)));
    assert_eq!((ready(&w, "jobs"), ready(&w, "audit")), (6, 6));
    assert_eq!(backlog(&w, "", "audit", Some(publisher)), None);
    assert_eq!(backlog(&w, "", "audit", Some(worker)), Some(6));
    assert_eq!(backlog(&w, "", "audit", None), Some(6));
    w.apply(Command::Consume(consumer(worker, "jobs", 2)));
    assert_eq!(ready(&w, "jobs"), 4);
    // Through an exchange: the fullest of the queues the message would join.
    assert_eq!(backlog(&w, "fan", "", Some(publisher)), Some(4));
    assert_eq!(backlog(&w, "fan", "", None), Some(6));
    assert_eq!(backlog(&w, "amq.fanout", "", None), None, "routed nowhere");
    assert_eq!(backlog(&w, "nope", "", None), None, "no such exchange");
    assert_eq!(backlog(&w, "", "missing", None), None, "no such queue");
    // A consumed queue that is empty weighs 0, which is not nothing.
    w.apply(Command::Consume(consumer(worker, "empty", 1)));
    assert_eq!(backlog(&w, "", "empty", Some(publisher)), Some(0));

    // A waiting pop takes from a queue too: here one that waits behind a group's first message.
    let grouped = |payload: &str| {
        let mut p = Push::new("idle", payload.to_owned());
        p.group = Some("g".into());
        Command::Push(p)
    };
    w.apply(grouped("first"));
    assert_eq!(backlog(&w, "", "idle", Some(publisher)), None, "nobody has taken from it yet");
    // A delivery another session holds counts: a client that pops in a loop, without waiting.
    w.apply(common::pop(worker, "idle", 1));
    w.apply(grouped("second"));
    assert_eq!(backlog(&w, "", "idle", Some(publisher)), Some(1), "in flight to another session");
    assert_eq!(backlog(&w, "", "idle", Some(worker)), None, "its own delivery does not count");
    let wait = Command::Pop(Pop { wait: 60_000, ..pop_command(worker, "idle") });
    assert!(matches!(w.apply(wait).0, Reply::Waiting { .. }));
    assert_eq!(backlog(&w, "", "idle", Some(publisher)), Some(1));
    assert_eq!(backlog(&w, "", "idle", Some(worker)), None);
}

fn pop_command(session: SessionId, queue: &str) -> Pop {
    match common::pop(session, queue, 1) {
        Command::Pop(pop) => pop,
        other => unreachable!("{other:?}"),
    }
}

/// Random AMQP-style histories: exchanges, bindings, publishes, exclusive and auto-delete
/// queues, pools, exclusive consumers, dead-letter exchanges, sessions closing and a restart.
/// After every step the state's invariants hold and a snapshot restores it exactly; at the
/// end, replaying the log gives the same state.
mod model {
    use super::*;
    use proptest::prelude::*;

    const QUEUES: [&str; 5] = ["A", "B", "C", "D", "E"];
    const EXCHANGES: [&str; 4] = ["", "amq.topic", "amq.fanout", "X"];
    /// Binding keys (patterns, for the topic exchange) and publish routing keys.
    const KEYS: [&str; 4] = ["A", "a.b", "#", "*.b"];
    const ROUTES: [&str; 5] = ["A", "B", "C", "D", "a.b"];

    #[derive(Debug, Clone)]
    enum Op {
        Open,
        Close { s: usize },
        Detach,
        Declare { q: usize, s: usize },
        Delete { q: usize, if_unused: bool, if_empty: bool, s: Option<usize> },
        Purge { q: usize, s: usize },
        Bind { x: usize, q: usize, key: usize, unbind: bool, s: Option<usize> },
        Exchange { delete: bool },
        Publish { x: usize, key: usize, priority: u8, ttl: Option<u64> },
        Consume { s: usize, q: usize, credit: u32, pool: Option<(u64, u32)>, exclusive: bool, auto_ack: bool },
        Cancel { pick: usize },
        Pop { s: usize, q: usize },
        Ack { pick: usize },
        Nack { pick: usize, dead: bool },
        Advance { ms: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        let s = 0..4usize;
        let q = 0..QUEUES.len();
        prop_oneof![
            2 => Just(Op::Open),
            1 => s.clone().prop_map(|s| Op::Close { s }),
            1 => Just(Op::Detach),
            4 => (q.clone(), s.clone()).prop_map(|(q, s)| Op::Declare { q, s }),
            1 => (q.clone(), any::<bool>(), any::<bool>(), prop::option::of(s.clone()))
                .prop_map(|(q, if_unused, if_empty, s)| Op::Delete { q, if_unused, if_empty, s }),
            1 => (q.clone(), s.clone()).prop_map(|(q, s)| Op::Purge { q, s }),
            4 => (1..EXCHANGES.len(), q.clone(), 0..KEYS.len(), prop::bool::weighted(0.2), prop::option::of(s.clone()))
                .prop_map(|(x, q, key, unbind, s)| Op::Bind { x, q, key, unbind, s }),
            2 => prop::bool::weighted(0.2).prop_map(|delete| Op::Exchange { delete }),
            8 => (0..EXCHANGES.len(), 0..ROUTES.len(), 0..12u8, prop::option::weighted(0.2, 50..2_000u64))
                .prop_map(|(x, key, priority, ttl)| Op::Publish { x, key, priority, ttl }),
            5 => (s.clone(), q.clone(), 0..3u32, prop::option::weighted(0.5, (0..2u64, 0..3u32)), prop::bool::weighted(0.15), prop::bool::weighted(0.1))
                .prop_map(|(s, q, credit, pool, exclusive, auto_ack)| Op::Consume { s, q, credit, pool, exclusive, auto_ack }),
            1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
            2 => (s.clone(), q.clone()).prop_map(|(s, q)| Op::Pop { s, q }),
            5 => any::<usize>().prop_map(|pick| Op::Ack { pick }),
            2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, dead)| Op::Nack { pick, dead }),
            3 => prop_oneof![Just(0u64), 1..500u64, 500..3_000u64].prop_map(|ms| Op::Advance { ms }),
        ]
    }

    /// Each queue name has one configuration (E is exclusive to the declaring session).
    fn config(q: usize, owner: SessionId) -> QueueConfig {
        let topic_dlx = DeadLetterExchange { exchange: "amq.topic".into(), routing_key: Some("a.b".into()) };
        match QUEUES[q] {
            "A" => QueueConfig {
                single_active_consumer: true,
                max_deliveries: 2,
                lease: 700,
                dead_letter_exchange: Some(topic_dlx),
                ..QueueConfig::default()
            },
            "B" => QueueConfig {
                auto_delete: true,
                max_priority: 2,
                max_len: 3,
                dead_letter_exchange: Some(DeadLetterExchange { exchange: "X".into(), routing_key: None }),
                ..QueueConfig::default()
            },
            "C" => QueueConfig {
                max_len: 4,
                overflow: turnstile_core::Overflow::DropHead,
                dead_letter_exchange: Some(DeadLetterExchange {
                    exchange: "amq.fanout".into(),
                    routing_key: None,
                }),
                ..QueueConfig::default()
            },
            "D" => QueueConfig { max_priority: 0, lease: 500, ..QueueConfig::default() },
            _ => QueueConfig { exclusive_owner: Some(owner), auto_delete: true, ..QueueConfig::default() },
        }
    }

    #[derive(Default)]
    struct Seen {
        sessions: Vec<SessionId>,
        /// (queue, receipt) of every delivery seen.
        receipts: Vec<(String, u64)>,
        consumers: Vec<(String, u64)>,
    }

    impl Seen {
        fn session(&self, s: usize) -> SessionId {
            // Mostly a live session; now and then one that is gone.
            match s {
                3 => self.sessions.first().map_or(SessionId(9_999), |s| SessionId(s.0 - 1)),
                _ => pick(&self.sessions, s).unwrap_or(SessionId(9_999)),
            }
        }

        fn observe(&mut self, cmd: &Command, reply: &Reply, fx: &[Effect]) {
            match (cmd, reply) {
                (Command::OpenSession { .. }, Reply::Session(s)) => self.sessions.push(*s),
                (Command::CloseSession { session, .. }, Reply::Int(1)) => {
                    self.sessions.retain(|s| s != session)
                }
                (Command::DetachSessions, _) => self.sessions.clear(),
                (Command::Consume(c), Reply::Consumer { consumer_id }) => {
                    self.consumers.push((c.queue.clone(), *consumer_id))
                }
                (Command::Pop(p), Reply::Deliveries(ds)) => {
                    self.receipts.extend(ds.iter().map(|d| (p.queue.clone(), d.receipt)))
                }
                _ => {}
            }
            for e in fx {
                if let Effect::Delivered { queue, deliveries, .. } = e {
                    self.receipts.extend(deliveries.iter().map(|d| (queue.clone(), d.receipt)));
                }
            }
        }
    }

    fn pick<T: Clone>(items: &[T], pick: usize) -> Option<T> {
        if items.is_empty() { None } else { Some(items[pick % items.len()].clone()) }
    }

    fn in_session(seen: &Seen, s: Option<usize>, cmd: Command) -> Command {
        match s {
            Some(s) => Command::InSession { session: seen.session(s), command: Box::new(cmd) },
            None => cmd,
        }
    }

    fn to_command(op: &Op, seen: &Seen) -> Command {
        // After a restart, clients come back before they do anything.
        if seen.sessions.is_empty() && !matches!(op, Op::Advance { .. }) {
            return common::open_session();
        }
        match *op {
            Op::Open => common::open_session(),
            Op::Close { s } => Command::CloseSession { session: seen.session(s), binding: None },
            Op::Detach => Command::DetachSessions,
            Op::Declare { q, s } => {
                Command::CreateQueue { name: QUEUES[q].into(), config: config(q, seen.session(s)) }
            }
            Op::Delete { q, if_unused, if_empty, s } => {
                in_session(seen, s, Command::DeleteQueue { name: QUEUES[q].into(), if_unused, if_empty })
            }
            Op::Purge { q, s } => in_session(seen, Some(s), Command::PurgeQueue { name: QUEUES[q].into() }),
            Op::Bind { x, q, key, unbind, s } => {
                let b = Binding {
                    exchange: EXCHANGES[x].into(),
                    queue: QUEUES[q].into(),
                    routing_key: KEYS[key].into(),
                };
                in_session(seen, s, if unbind { Command::Unbind(b) } else { Command::Bind(b) })
            }
            Op::Exchange { delete: true } => Command::DeleteExchange { name: "X".into(), if_unused: false },
            Op::Exchange { delete: false } => Command::DeclareExchange(ExchangeDecl {
                auto_delete: true,
                ..declare("X", ExchangeKind::Topic)
            }),
            Op::Publish { x, key, priority, ttl } => Command::Publish(Publish {
                exchange: EXCHANGES[x].into(),
                routing_key: ROUTES[key].into(),
                push: Push { priority, ttl, ..Push::new("", "m") },
            }),
            Op::Consume { s, q, credit, pool, exclusive, auto_ack } => Command::Consume(Consume {
                pool: pool.map(|(id, limit)| CreditPool { id, limit }),
                exclusive,
                auto_ack,
                lease: Some(600),
                ..consumer(seen.session(s), QUEUES[q], credit)
            }),
            Op::Cancel { pick: p } => match pick(&seen.consumers, p) {
                Some((queue, consumer_id)) => Command::Cancel { queue, consumer_id },
                None => Command::Tick,
            },
            Op::Pop { s, q } => pop(seen.session(s), QUEUES[q], 2),
            Op::Ack { pick: p } => match pick(&seen.receipts, p) {
                Some((queue, r)) => Command::Ack { queue, receipts: vec![r], fence: None },
                None => Command::Tick,
            },
            Op::Nack { pick: p, dead } => match pick(&seen.receipts, p) {
                Some((queue, receipt)) => Command::Nack { queue, receipt, delay: 0, dead_letter: dead },
                None => Command::Tick,
            },
            Op::Advance { .. } => Command::Tick,
        }
    }

    fn run(ops: Vec<Op>) {
        let mut state = State::new();
        let mut seen = Seen::default();
        let mut log = Vec::new();
        let mut now = 1_000;
        let setup = [common::open_session(), common::open_session(), common::open_session()];
        let cmds = setup.into_iter().map(Ok).chain(ops.iter().map(Err));
        for (i, item) in cmds.enumerate() {
            let cmd = match item {
                Ok(cmd) => cmd,
                Err(op) => {
                    if let Op::Advance { ms } = op {
                        now += ms;
                    }
                    to_command(op, &seen)
                }
            };
            let index = i as u64 + 1;
            log.push((index, now, cmd.clone()));
            let (reply, fx) = common::apply_checked(&mut state, index, now, &cmd);
            seen.observe(&cmd, &reply, &fx);
        }
        assert_eq!(common::replay(&log), state, "replaying the log gave a different state");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn random_amqp_histories_keep_every_invariant(ops in prop::collection::vec(op(), 1..120)) {
            run(ops);
        }
    }
}
