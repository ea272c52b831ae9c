//! Channel methods: exchanges, queues, bindings, consumers, gets, acks, confirms, flow.

use std::hash::{BuildHasher, Hasher};

use bytes::Bytes;
use turnstile_amqp::args::{QueueArgs, integer};
use turnstile_amqp::{
    AMQPClass, AMQPValue, AmqpError, access, basic, channel, code, confirm, exchange, queue,
};
use turnstile_core::{
    Binding, Command, Consume, CreditPool, ExchangeDecl, ExchangeKind, Pop, Publish, Push, Query, Reply,
};

use super::DELIVERY_LEASE_MS;
use super::connection::{Connection, ConsumerInfo};

impl Connection {
    /// Runs a method on open channel `n`.
    pub(super) async fn on_method(&mut self, n: u16, method: AMQPClass) -> Result<(), AmqpError> {
        match method {
            AMQPClass::Basic(basic::AMQPMethod::Publish(publish)) => {
                if publish.immediate {
                    // As RabbitMQ since 3.0: the flag is refused outright.
                    return Err(AmqpError::not_implemented("immediate=true"));
                }
                let ch = self.channels.get_mut(&n).expect("open channel");
                ch.incoming.start(publish).map_err(|e| AmqpError::from(&e))
            }
            AMQPClass::Basic(basic::AMQPMethod::Ack(ack)) => {
                self.ack(n, ack.delivery_tag, ack.multiple, Settle::Ack).await
            }
            AMQPClass::Basic(basic::AMQPMethod::Nack(nack)) => {
                self.ack(n, nack.delivery_tag, nack.multiple, Settle::Return { requeue: nack.requeue }).await
            }
            AMQPClass::Basic(basic::AMQPMethod::Reject(reject)) => {
                self.ack(n, reject.delivery_tag, false, Settle::Return { requeue: reject.requeue }).await
            }
            method => {
                // Everything else answers in order after the channel's earlier publishes.
                self.settle().await;
                self.on_sync_method(n, method).await
            }
        }
    }

    async fn on_sync_method(&mut self, n: u16, method: AMQPClass) -> Result<(), AmqpError> {
        match method {
            AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                self.release_channel(n).await;
                self.channels.remove(&n);
                self.write(n, &AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})));
                Ok(())
            }
            AMQPClass::Channel(channel::AMQPMethod::Open(_)) => {
                Err(AmqpError::channel_error("second 'channel.open' seen"))
            }
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => Ok(()),
            AMQPClass::Channel(channel::AMQPMethod::Flow(flow)) => {
                let ch = self.channels.get_mut(&n).expect("open channel");
                ch.paused = !flow.active;
                let held = if flow.active { std::mem::take(&mut ch.held) } else { Vec::new() };
                self.write(
                    n,
                    &AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk { active: flow.active })),
                );
                for (consumer_id, queue, d) in held {
                    self.deliver(consumer_id, &queue, d).await;
                }
                Ok(())
            }
            AMQPClass::Channel(channel::AMQPMethod::FlowOk(_)) => Ok(()),
            AMQPClass::Access(access::AMQPMethod::Request(_)) => {
                let ok = access::RequestOk {};
                self.write(n, &AMQPClass::Access(access::AMQPMethod::RequestOk(ok)));
                Ok(())
            }
            AMQPClass::Confirm(confirm::AMQPMethod::Select(select)) => {
                let ch = self.channels.get_mut(&n).expect("open channel");
                if !ch.confirm {
                    ch.confirm = true;
                    ch.next_seq = 1;
                }
                if !select.nowait {
                    self.write(n, &AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})));
                }
                Ok(())
            }
            AMQPClass::Tx(_) => Err(AmqpError::not_implemented(
                "transactions (tx.*) are not supported; use publisher confirms",
            )),
            AMQPClass::Exchange(m) => self.exchange_method(n, m).await,
            AMQPClass::Queue(m) => self.queue_method(n, m).await,
            AMQPClass::Basic(m) => self.basic_method(n, m).await,
            AMQPClass::Connection(_) => {
                Err(AmqpError::channel_error("connection methods belong on channel 0"))
            }
            AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))
            | AMQPClass::Access(access::AMQPMethod::RequestOk(_))
            | AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_)) => {
                Err(AmqpError::command_invalid("a client may not send this method"))
            }
        }
    }

    async fn exchange_method(&mut self, n: u16, method: exchange::AMQPMethod) -> Result<(), AmqpError> {
        match method {
            exchange::AMQPMethod::Declare(d) => {
                let name = d.exchange.to_string();
                if d.passive {
                    self.query(Query::Exchange { name }).await?;
                } else {
                    let kind = match ExchangeKind::parse(d.kind.as_str()) {
                        Some(kind) => kind,
                        None => {
                            return Err(AmqpError::command_invalid(format!(
                                "invalid exchange type '{}' (supported: direct, fanout, topic)",
                                d.kind
                            )));
                        }
                    };
                    if name.is_empty() {
                        return Err(AmqpError::access_refused(
                            "operation not permitted on the default exchange",
                        ));
                    }
                    let decl = ExchangeDecl {
                        name,
                        kind,
                        durable: d.durable,
                        auto_delete: d.auto_delete,
                        internal: d.internal,
                    };
                    self.call(Command::DeclareExchange(decl)).await?;
                }
                if !d.nowait {
                    self.write(
                        n,
                        &AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {})),
                    );
                }
                Ok(())
            }
            exchange::AMQPMethod::Delete(d) => {
                self.call(Command::DeleteExchange { name: d.exchange.to_string(), if_unused: d.if_unused })
                    .await?;
                if !d.nowait {
                    self.write(
                        n,
                        &AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
                    );
                }
                Ok(())
            }
            exchange::AMQPMethod::Bind(_) | exchange::AMQPMethod::Unbind(_) => {
                Err(AmqpError::not_implemented("exchange-to-exchange bindings are not supported"))
            }
            _ => Err(AmqpError::command_invalid("a client may not send this exchange method")),
        }
    }

    /// An empty queue name means the one last declared on the channel.
    fn queue_name(&self, n: u16, name: &str) -> Result<String, AmqpError> {
        if !name.is_empty() {
            return Ok(name.to_owned());
        }
        self.channels[&n]
            .last_queue
            .clone()
            .ok_or_else(|| AmqpError::not_found("no previously declared queue"))
    }

    async fn queue_method(&mut self, n: u16, method: queue::AMQPMethod) -> Result<(), AmqpError> {
        match method {
            queue::AMQPMethod::Declare(d) => {
                let name = match d.queue.as_str() {
                    "" if !d.passive => self.server_name("amq.gen-"),
                    name => self.queue_name(n, name)?,
                };
                if d.passive {
                    self.check_exclusive(&name).await?;
                } else {
                    if name.starts_with("amq.") && !name.starts_with("amq.gen-") {
                        return Err(AmqpError::access_refused(format!(
                            "queue name '{name}' contains reserved prefix 'amq.*'"
                        )));
                    }
                    let args = QueueArgs::parse(&name, &d.arguments)?;
                    let owner = d.exclusive.then_some(self.session);
                    match self.query(Query::QueueConfig { name: name.clone() }).await {
                        Ok(Reply::QueueConfig(existing)) => {
                            if let Some(other) = existing.exclusive_owner
                                && other != self.session
                            {
                                return Err(locked(&name));
                            }
                            args.check_equivalent(&name, &existing)?;
                        }
                        _ => {
                            self.call(Command::CreateQueue {
                                name: name.clone(),
                                config: args.config(owner, d.auto_delete),
                            })
                            .await?;
                        }
                    }
                }
                self.channels.get_mut(&n).expect("open channel").last_queue = Some(name.clone());
                if !d.nowait {
                    let (message_count, consumer_count) = self.counts(&name).await?;
                    let ok = queue::DeclareOk { queue: name.into(), message_count, consumer_count };
                    self.write(n, &AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)));
                }
                Ok(())
            }
            queue::AMQPMethod::Bind(b) => {
                let queue = self.queue_name(n, b.queue.as_str())?;
                let binding = Binding {
                    exchange: b.exchange.to_string(),
                    queue,
                    routing_key: b.routing_key.to_string(),
                };
                self.call_as_owner(Command::Bind(binding)).await?;
                if !b.nowait {
                    self.write(n, &AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})));
                }
                Ok(())
            }
            queue::AMQPMethod::Unbind(b) => {
                let queue = self.queue_name(n, b.queue.as_str())?;
                let binding = Binding {
                    exchange: b.exchange.to_string(),
                    queue,
                    routing_key: b.routing_key.to_string(),
                };
                self.call_as_owner(Command::Unbind(binding)).await?;
                self.write(n, &AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})));
                Ok(())
            }
            queue::AMQPMethod::Purge(p) => {
                let name = self.queue_name(n, p.queue.as_str())?;
                let purged = match self.call_as_owner(Command::PurgeQueue { name }).await? {
                    Reply::Int(n) => n,
                    _ => 0,
                };
                if !p.nowait {
                    let ok = queue::PurgeOk { message_count: u32::try_from(purged).unwrap_or(u32::MAX) };
                    self.write(n, &AMQPClass::Queue(queue::AMQPMethod::PurgeOk(ok)));
                }
                Ok(())
            }
            queue::AMQPMethod::Delete(d) => {
                let name = self.queue_name(n, d.queue.as_str())?;
                let message_count = match self.query(Query::QueueStats { name: name.clone() }).await {
                    Ok(Reply::QueueStats(s)) => {
                        u32::try_from(s.ready + s.delayed + s.in_flight).unwrap_or(u32::MAX)
                    }
                    _ => 0,
                };
                let cmd = Command::DeleteQueue { name, if_unused: d.if_unused, if_empty: d.if_empty };
                self.call_as_owner(cmd).await?;
                if !d.nowait {
                    self.write(
                        n,
                        &AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk { message_count })),
                    );
                }
                Ok(())
            }
            _ => Err(AmqpError::command_invalid("a client may not send this queue method")),
        }
    }

    async fn basic_method(&mut self, n: u16, method: basic::AMQPMethod) -> Result<(), AmqpError> {
        match method {
            basic::AMQPMethod::Qos(qos) => {
                let ch = self.channels.get_mut(&n).expect("open channel");
                if qos.global {
                    ch.global_prefetch = qos.prefetch_count.into();
                } else {
                    ch.prefetch = qos.prefetch_count.into();
                }
                self.write(n, &AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})));
                Ok(())
            }
            basic::AMQPMethod::Consume(c) => {
                let queue = self.queue_name(n, c.queue.as_str())?;
                let tag = match c.consumer_tag.as_str() {
                    "" => self.server_name("amq.ctag-"),
                    tag => tag.to_owned(),
                };
                let ch = &self.channels[&n];
                if ch.consumers.contains_key(&tag) {
                    return Err(AmqpError::new(
                        code::NOT_ALLOWED,
                        format!("attempt to reuse consumer tag '{tag}'"),
                    ));
                }
                let (credit, global) = (ch.prefetch, ch.global_prefetch);
                let consume = Consume {
                    queue: queue.clone(),
                    session: self.session,
                    credit: if c.no_ack { 0 } else { credit },
                    lease: Some(DELIVERY_LEASE_MS),
                    auto_ack: c.no_ack,
                    exclusive: c.exclusive,
                    pool: (global > 0 && !c.no_ack).then_some(CreditPool { id: n.into(), limit: global }),
                };
                let consumer_id = match self.call(Command::Consume(consume)).await? {
                    Reply::Consumer { consumer_id } => consumer_id,
                    other => return Err(AmqpError::internal(format!("consume replied {other:?}"))),
                };
                self.consumers.insert(consumer_id, (n, tag.clone()));
                let ch = self.channels.get_mut(&n).expect("open channel");
                ch.consumers.insert(tag.clone(), ConsumerInfo { id: consumer_id, queue, no_ack: c.no_ack });
                if !c.nowait {
                    let ok = basic::ConsumeOk { consumer_tag: tag.into() };
                    self.write(n, &AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(ok)));
                }
                Ok(())
            }
            basic::AMQPMethod::Cancel(c) => {
                let tag = c.consumer_tag.to_string();
                let ch = self.channels.get_mut(&n).expect("open channel");
                if let Some(info) = ch.consumers.remove(&tag) {
                    self.consumers.remove(&info.id);
                    // Its unacked deliveries stay with the channel until acked or the channel closes.
                    let _ = self.call(Command::Cancel { queue: info.queue, consumer_id: info.id }).await;
                }
                if !c.nowait {
                    let ok = basic::CancelOk { consumer_tag: tag.into() };
                    self.write(n, &AMQPClass::Basic(basic::AMQPMethod::CancelOk(ok)));
                }
                Ok(())
            }
            basic::AMQPMethod::Get(g) => {
                let queue = self.queue_name(n, g.queue.as_str())?;
                let pop = Pop {
                    queue: queue.clone(),
                    session: Some(self.session),
                    count: 1,
                    wait: 0,
                    lease: Some(DELIVERY_LEASE_MS),
                    auto_ack: g.no_ack,
                    keep: false,
                };
                match self.call(Command::Pop(pop)).await? {
                    Reply::Deliveries(deliveries) if !deliveries.is_empty() => {
                        let (ready, _) = self.counts(&queue).await.unwrap_or((0, 0));
                        for d in &deliveries {
                            self.write_get_ok(n, &queue, d, g.no_ack, ready);
                        }
                    }
                    _ => {
                        let empty = basic::GetEmpty {};
                        self.write(n, &AMQPClass::Basic(basic::AMQPMethod::GetEmpty(empty)));
                    }
                }
                Ok(())
            }
            basic::AMQPMethod::Recover(basic::Recover { .. }) | basic::AMQPMethod::RecoverAsync(_) => {
                let is_sync = matches!(method, basic::AMQPMethod::Recover(_));
                let ch = self.channels.get_mut(&n).expect("open channel");
                let returns: Vec<(String, u64)> = std::mem::take(&mut ch.unacked).into_values().collect();
                for (queue, receipt) in returns {
                    self.submit(Command::Nack { queue, receipt, delay: 0, dead_letter: false }).await;
                }
                if is_sync {
                    self.write(n, &AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})));
                }
                Ok(())
            }
            _ => Err(AmqpError::command_invalid("a client may not send this basic method")),
        }
    }

    /// `Basic.Ack` / `Nack` / `Reject` of one tag, or every tag up to it with `multiple` (tag 0
    /// and `multiple`: every outstanding one).
    async fn ack(&mut self, n: u16, tag: u64, multiple: bool, settle: Settle) -> Result<(), AmqpError> {
        let ch = self.channels.get_mut(&n).expect("open channel");
        let settled: Vec<(String, u64)> = if multiple {
            let upto = if tag == 0 { u64::MAX } else { tag };
            if tag != 0 && !ch.unacked.contains_key(&tag) {
                return Err(unknown_tag(tag));
            }
            let rest = ch.unacked.split_off(&upto.saturating_add(1));
            std::mem::replace(&mut ch.unacked, rest).into_values().collect()
        } else {
            match ch.unacked.remove(&tag) {
                Some(entry) => vec![entry],
                None => return Err(unknown_tag(tag)),
            }
        };
        match settle {
            Settle::Ack => {
                // One command per queue, receipts in tag order.
                let mut by_queue: Vec<(String, Vec<u64>)> = Vec::new();
                for (queue, receipt) in settled {
                    match by_queue.iter_mut().find(|(q, _)| *q == queue) {
                        Some((_, receipts)) => receipts.push(receipt),
                        None => by_queue.push((queue, vec![receipt])),
                    }
                }
                for (queue, receipts) in by_queue {
                    self.submit(Command::Ack { queue, receipts, fence: None }).await;
                }
            }
            Settle::Return { requeue } => {
                for (queue, receipt) in settled {
                    self.submit(Command::Nack { queue, receipt, delay: 0, dead_letter: !requeue }).await;
                }
            }
        }
        Ok(())
    }

    /// Runs a queue command as this connection, so another connection's exclusive queue is
    /// refused (`RESOURCE_LOCKED`).
    async fn call_as_owner(&self, command: Command) -> Result<Reply, AmqpError> {
        self.call(Command::InSession { session: self.session, command: Box::new(command) }).await
    }

    /// `(ready messages, consumers)` of a queue, for the `-Ok` replies that report them.
    async fn counts(&self, name: &str) -> Result<(u32, u32), AmqpError> {
        match self.query(Query::QueueStats { name: name.to_owned() }).await? {
            Reply::QueueStats(s) => Ok((
                u32::try_from(s.ready).unwrap_or(u32::MAX),
                u32::try_from(s.consumers).unwrap_or(u32::MAX),
            )),
            other => Err(AmqpError::internal(format!("queue stats replied {other:?}"))),
        }
    }

    /// A passive declare: the queue must exist and not be another connection's exclusive queue.
    async fn check_exclusive(&self, name: &str) -> Result<(), AmqpError> {
        match self.query(Query::QueueConfig { name: name.to_owned() }).await? {
            Reply::QueueConfig(config) => match config.exclusive_owner {
                Some(owner) if owner != self.session => Err(locked(name)),
                _ => Ok(()),
            },
            other => Err(AmqpError::internal(format!("queue config replied {other:?}"))),
        }
    }

    /// A fresh server-made name (`amq.gen-…`, `amq.ctag-…`), unlikely to repeat across restarts.
    fn server_name(&mut self, prefix: &str) -> String {
        self.names += 1;
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(self.names);
        h.write_u64(self.session.0);
        format!("{prefix}{:016x}{:04x}", h.finish(), self.names & 0xffff)
    }
}

#[derive(Debug, Clone, Copy)]
enum Settle {
    Ack,
    Return { requeue: bool },
}

fn unknown_tag(tag: u64) -> AmqpError {
    AmqpError::precondition(format!("unknown delivery tag {tag}"))
}

fn locked(name: &str) -> AmqpError {
    AmqpError::new(
        code::RESOURCE_LOCKED,
        format!(
            "cannot obtain exclusive access to locked queue '{name}' in vhost '/'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration."
        ),
    )
}

/// The core command for a complete published message. Its properties are stored as sent; the
/// ones Turnstile acts on are read from them: `priority`, `expiration` (per-message TTL) and the
/// `x-delay` header (deliver no earlier than that many ms from now).
pub(super) fn publish_command(
    publish: &basic::Publish,
    raw_properties: &Bytes,
    body: Bytes,
) -> Result<Command, AmqpError> {
    let properties = match turnstile_amqp::basic::parse_properties(&raw_properties[..]) {
        Ok((_, p)) => p,
        Err(_) => return Err(AmqpError::new(code::SYNTAX_ERROR, "malformed content properties")),
    };
    let ttl = match properties.expiration() {
        None => None,
        Some(exp) => match exp.as_str().parse::<u64>() {
            Ok(ms) => Some(ms.max(1)),
            Err(_) => return Err(AmqpError::precondition(format!("invalid expiration '{exp}'"))),
        },
    };
    let delay = properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delay"))
        .and_then(|v: &AMQPValue| integer(v))
        .unwrap_or(0);
    let push = Push {
        queue: String::new(),
        payload: body,
        properties: turnstile_amqp::props::encode(
            publish.exchange.as_str(),
            publish.routing_key.as_str(),
            raw_properties,
        ),
        delay,
        priority: properties.priority().unwrap_or(0),
        dedup: None,
        ttl,
        group: None,
        fence: None,
    };
    Ok(Command::Publish(Publish {
        exchange: publish.exchange.to_string(),
        routing_key: publish.routing_key.to_string(),
        push,
    }))
}
