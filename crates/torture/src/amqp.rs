//! The AMQP clients: each publishes to `qa` through the default exchange on a confirm channel
//! (a push is Ok once the broker confirms it) and takes messages with `basic.get`, acking them.
//!
//! `basic.get` is a request with a reply, so a delivery's invocation is when the get was sent:
//! the server cannot have handed the message over earlier. An AMQP ack has no reply, so it is
//! recorded as unknown (`Info`): the checkers may assume it took effect, or not.

use std::sync::atomic::Ordering;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
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
            let ok = if self.rng.bool() { self.publish(ch).await } else { self.get(ch).await };
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
