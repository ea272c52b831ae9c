//! The AMQP clients: each publishes to `qa` through the default exchange on a confirm channel
//! (a push is Ok once the broker confirms it), and takes messages with `basic.get` or with a
//! consumer of prefetch 1, acking them.
//!
//! A delivery's invocation must be no later than when the server could have sent it. For
//! `basic.get` that is when the get was sent. A consumer's first delivery may come as soon as
//! `basic.consume` is sent, and with prefetch 1 each next one as soon as the previous one's ack
//! arrives: so the pop that the next delivery completes is invoked before that ack is sent (by
//! a process of its own, since the ack is an operation too). An AMQP ack has no reply, so it is
//! recorded as unknown (`Info`): the checkers may assume it took effect, or not.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::task::JoinSet;
use tokio::time::timeout;
use turnstile_check::{Delivery, Op, Process, Value};

use crate::workload::{REPLY_TIMEOUT, Shared};

/// The AMQP clients' queue.
const QUEUE: &str = "qa";

/// The running AMQP clients.
#[derive(Debug)]
pub struct Clients {
    tasks: JoinSet<()>,
}

impl Clients {
    /// Waits for every client to see the stop flag and close its connection.
    pub async fn stop(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Starts `n` AMQP clients on `runtime`; their processes come after the `first` ones.
pub fn start(runtime: &tokio::runtime::Runtime, shared: &Shared, seed: u64, first: u64, n: usize) -> Clients {
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let index = first + u64::try_from(i).unwrap_or(0);
        let client = AmqpClient {
            shared: shared.clone(),
            rng: fastrand::Rng::with_seed(seed.wrapping_mul(0xA24B_AED4_963E_E407) ^ index),
            base: index,
            generation: 0,
            node: i,
            counter: 0,
        };
        tasks.spawn_on(client.run(), runtime.handle());
    }
    Clients { tasks }
}

struct AmqpClient {
    shared: Shared,
    rng: fastrand::Rng,
    /// Processes `base + (1 << 32) * generation`: a new one after each unknown outcome.
    base: u64,
    generation: u64,
    node: usize,
    counter: u64,
}

impl AmqpClient {
    fn process(&self) -> Process {
        self.base + (1 << 32) * self.generation
    }

    async fn run(mut self) {
        while !self.shared.stop.load(Ordering::Relaxed) {
            let Some(addr) = self.next_addr() else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let url = format!("amqp://guest:guest@{addr}/%2f");
            let connected = timeout(REPLY_TIMEOUT, async {
                let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
                let ch = conn.create_channel().await?;
                ch.confirm_select(ConfirmSelectOptions::default()).await?;
                Ok::<_, lapin::Error>((conn, ch))
            })
            .await;
            let Ok(Ok((conn, ch))) = connected else {
                self.node += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            self.session(&ch).await;
            let _ = timeout(Duration::from_secs(1), conn.close(200, "bye".into())).await;
            self.node += 1;
        }
    }

    /// The AMQP address of the next node that runs.
    fn next_addr(&mut self) -> Option<String> {
        let directory = self.shared.directory.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = directory.len();
        (0..n).find_map(|step| {
            let i = (self.node + step) % n;
            directory[i].as_ref().map(|a| {
                self.node = i;
                a.amqp.clone()
            })
        })
    }

    /// Works on one channel until an outcome is unknown (then the connection is left) or the
    /// run stops.
    async fn session(&mut self, ch: &Channel) {
        while !self.shared.stop.load(Ordering::Relaxed) {
            let ok = match self.rng.u32(0..10) {
                0..=4 => self.publish(ch).await,
                5..=7 => self.get(ch).await,
                // A consumer ends its connection (a delivery may be on its way when it stops).
                _ => {
                    self.consume(ch).await;
                    false
                }
            };
            if !ok {
                self.generation += 1;
                tokio::time::sleep(Duration::from_millis(self.rng.u64(50..250))).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(self.rng.u64(5..40))).await;
        }
    }

    /// One publish; false when its outcome is unknown.
    async fn publish(&mut self, ch: &Channel) -> bool {
        self.counter += 1;
        let id = format!("a{}-{}", self.base, self.counter);
        let op = Op::Push { queue: QUEUE.to_owned(), id: id.clone(), group: None };
        let pending = self.shared.recorder.invoke(self.process(), op);
        let confirmed = timeout(REPLY_TIMEOUT, async {
            let confirm = ch
                .basic_publish(
                    "".into(),
                    QUEUE.into(),
                    BasicPublishOptions::default(),
                    id.as_bytes(),
                    BasicProperties::default(),
                )
                .await?;
            confirm.await
        })
        .await;
        match confirmed {
            Ok(Ok(Confirmation::Ack(_))) => {
                pending.ok(Value::None);
                true
            }
            Ok(Ok(other)) => {
                // A nack says the broker could not take it; whether some of it stuck is not
                // said, so it stays unknown.
                pending.info(format!("publisher confirm {other:?}"));
                false
            }
            Ok(Err(e)) => {
                pending.info(e.to_string());
                false
            }
            Err(_) => {
                pending.info("no confirm in time");
                false
            }
        }
    }

    /// A consumer of prefetch 1 for up to five deliveries, acking each; it stops when none comes
    /// within a second. The connection is left after it: the pop under way when it stops is
    /// unknown, and only closing the channel gives an unacked delivery back for sure.
    async fn consume(&mut self, ch: &Channel) {
        // Deliveries are recorded by one process, their acks by another.
        let (pops, acks) = (self.process(), self.process() + (1 << 31));
        if !matches!(timeout(REPLY_TIMEOUT, ch.basic_qos(1, BasicQosOptions::default())).await, Ok(Ok(()))) {
            return;
        }
        let mut pending = self.shared.recorder.invoke(pops, Op::Pop { queue: QUEUE.to_owned() });
        let options = BasicConsumeOptions::default();
        let consumer =
            timeout(REPLY_TIMEOUT, ch.basic_consume(QUEUE.into(), "".into(), options, FieldTable::default()));
        let mut consumer = match consumer.await {
            Ok(Ok(consumer)) => consumer,
            Ok(Err(e)) => {
                pending.info(e.to_string());
                return;
            }
            Err(_) => {
                pending.info("no basic.consume-ok in time");
                return;
            }
        };
        for _ in 0..self.rng.u32(1..6) {
            let delivery = match timeout(Duration::from_secs(1), consumer.next()).await {
                Ok(Some(Ok(delivery))) => delivery,
                Ok(Some(Err(e))) => {
                    pending.info(e.to_string());
                    return;
                }
                Ok(None) => {
                    pending.info("the consumer was cancelled");
                    return;
                }
                Err(_) => break,
            };
            let tag = delivery.delivery_tag;
            let d = Delivery {
                id: String::from_utf8_lossy(&delivery.data).into_owned(),
                receipt: format!("amqp-{}-{}-{tag}", self.base, self.generation),
                queue: QUEUE.to_owned(),
            };
            pending.ok(Value::Delivered(vec![d.clone()]));
            // The next delivery may follow the ack at once: its pop begins first.
            pending = self.shared.recorder.invoke(pops, Op::Pop { queue: QUEUE.to_owned() });
            let ack = self
                .shared
                .recorder
                .invoke(acks, Op::Ack { queue: QUEUE.to_owned(), id: d.id, receipt: d.receipt });
            let sent =
                matches!(timeout(REPLY_TIMEOUT, delivery.ack(BasicAckOptions::default())).await, Ok(Ok(_)));
            ack.info(if sent { "sent; an AMQP ack has no reply" } else { "the ack may not have been sent" });
            if !sent {
                break;
            }
        }
        pending.info("the consumer stopped; a delivery may have been on its way");
    }

    /// One `basic.get`, and an ack of what it got; false when an outcome is unknown.
    async fn get(&mut self, ch: &Channel) -> bool {
        let pending = self.shared.recorder.invoke(self.process(), Op::Pop { queue: QUEUE.to_owned() });
        let got = match timeout(REPLY_TIMEOUT, ch.basic_get(QUEUE.into(), BasicGetOptions { no_ack: false }))
            .await
        {
            Ok(Ok(got)) => got,
            Ok(Err(e)) => {
                pending.info(e.to_string());
                return false;
            }
            Err(_) => {
                pending.info("no basic.get reply in time");
                return false;
            }
        };
        let Some(message) = got else {
            pending.ok(Value::Delivered(Vec::new()));
            return true;
        };
        let tag = message.delivery.delivery_tag;
        let delivery = Delivery {
            id: String::from_utf8_lossy(&message.delivery.data).into_owned(),
            receipt: format!("amqp-{}-{}-{tag}", self.base, self.generation),
            queue: QUEUE.to_owned(),
        };
        pending.ok(Value::Delivered(vec![delivery.clone()]));
        let op = Op::Ack { queue: QUEUE.to_owned(), id: delivery.id, receipt: delivery.receipt };
        let pending = self.shared.recorder.invoke(self.process(), op);
        match timeout(REPLY_TIMEOUT, ch.basic_ack(tag, BasicAckOptions::default())).await {
            Ok(Ok(())) => {
                pending.info("sent; an AMQP ack has no reply");
                self.generation += 1;
                true
            }
            _ => {
                pending.info("the ack may not have been sent");
                false
            }
        }
    }
}
