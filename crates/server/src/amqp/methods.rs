//! Synchronous channel methods: exchanges, queues, bindings, consumers, gets, qos, recover,
//! confirms, flow. A method that needs the log or a query asks for it and names the [`Step`] it
//! goes on with when the reply comes; the [`Machine`] keeps the step and feeds the reply back.
//!
//! ```text
//!  Queue.Declare ─► Query QueueConfig ─► QueueLooked ─┬─ exists: check ──────────┐
//!                                                     └─ missing: Propose Create ─► QueueCreated
//!                   DeclareOk ◄─ QueueCounted ◄─ Query QueueStats ◄──────────────┘
//! ```

use turnstile_amqp::args::QueueArgs;
use turnstile_amqp::{AMQPClass, AmqpError, access, basic, channel, code, confirm, exchange, queue};
use turnstile_core::{
    Binding, Command, Consume, CreditPool, Delivery, ExchangeDecl, ExchangeKind, Pop, Query, Reply,
};

use super::DELIVERY_LEASE_MS;
use super::channel::Consumer;
use super::machine::{Flow, Machine};

/// What a method does with the reply it waits for.
#[derive(Debug)]
pub(super) enum Step {
    /// Sends `ok` (unless `None`: `nowait`) once the reply is not an error.
    Answer { ok: Option<AMQPClass> },
    /// `Queue.Declare` has the queue's config (or an error: the queue does not exist).
    QueueLooked { name: String, declare: Declare },
    /// `Queue.Declare` created the queue.
    QueueCreated { name: String, nowait: bool },
    /// `Queue.Declare` counted the queue's messages and consumers.
    QueueCounted { name: String },
    /// `Queue.Purge` purged.
    Purged { nowait: bool },
    /// `Queue.Delete` counted the queue's messages (0 if it cannot), then deletes it.
    DeleteCounted { delete: Command, nowait: bool },
    /// `Queue.Delete` deleted the queue.
    Deleted { message_count: u32, nowait: bool },
    /// `Basic.Consume` started the consumer.
    Consumed { queue: String, tag: String, no_ack: bool, nowait: bool },
    /// `Basic.Cancel` stopped the consumer; a refusal is ignored (it is gone either way).
    Cancelled { tag: String, nowait: bool },
    /// `Basic.Get` popped.
    Popped { queue: String, no_ack: bool },
    /// `Basic.Get` counted the queue's ready messages for `GetOk`.
    GetCounted { queue: String, no_ack: bool, deliveries: Vec<Delivery> },
}

/// A `Queue.Declare` between its look-up and its answer.
#[derive(Debug)]
pub(super) struct Declare {
    /// `None` for a passive declare (it only checks), else the arguments it declares with.
    args: Option<QueueArgs>,
    exclusive: bool,
    auto_delete: bool,
    nowait: bool,
}

impl Machine {
    /// Runs a synchronous method on open channel `n`.
    pub(super) fn run_sync(&mut self, n: u16, method: AMQPClass) -> Result<Flow, AmqpError> {
        match method {
            AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                self.release_channel(n);
                self.remove_channel(n);
                self.send(n, AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})));
                Ok(Flow::Done)
            }
            AMQPClass::Channel(channel::AMQPMethod::Open(_)) => {
                Err(AmqpError::channel_error("second 'channel.open' seen"))
            }
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(_) | channel::AMQPMethod::FlowOk(_)) => {
                Ok(Flow::Done)
            }
            AMQPClass::Channel(channel::AMQPMethod::Flow(flow)) => {
                let ch = self.channel_mut(n);
                ch.paused = !flow.active;
                let held = if flow.active { std::mem::take(&mut ch.held) } else { Vec::new() };
                let ok = channel::FlowOk { active: flow.active };
                self.send(n, AMQPClass::Channel(channel::AMQPMethod::FlowOk(ok)));
                for h in held {
                    self.deliver(h.consumer_id, &h.queue, h.delivery);
                }
                Ok(Flow::Done)
            }
            AMQPClass::Access(access::AMQPMethod::Request(_)) => {
                self.send(n, AMQPClass::Access(access::AMQPMethod::RequestOk(access::RequestOk {})));
                Ok(Flow::Done)
            }
            AMQPClass::Confirm(confirm::AMQPMethod::Select(select)) => {
                let ch = self.channel_mut(n);
                if !ch.confirm {
                    ch.confirm = true;
                    ch.next_seq = 1;
                }
                if !select.nowait {
                    self.send(n, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})));
                }
                Ok(Flow::Done)
            }
            AMQPClass::Tx(_) => Err(AmqpError::not_implemented(
                "transactions (tx.*) are not supported; use publisher confirms",
            )),
            AMQPClass::Exchange(m) => self.exchange_method(m),
            AMQPClass::Queue(m) => self.queue_method(n, m),
            AMQPClass::Basic(m) => self.basic_method(n, m),
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

    /// Goes on with a method that waited for a reply (a refusal from the core or the log is
    /// already an `Err` here).
    pub(super) fn resume(
        &mut self,
        n: u16,
        step: Step,
        reply: Result<Reply, AmqpError>,
    ) -> Result<Flow, AmqpError> {
        match step {
            Step::Answer { ok } => {
                reply?;
                if let Some(ok) = ok {
                    self.send(n, ok);
                }
                Ok(Flow::Done)
            }
            Step::QueueLooked { name, declare } => self.queue_looked(n, name, declare, reply),
            Step::QueueCreated { name, nowait } => {
                reply?;
                Ok(self.queue_declared(n, name, nowait))
            }
            Step::QueueCounted { name } => {
                let (message_count, consumer_count) = counts(reply?)?;
                let ok = queue::DeclareOk { queue: name.into(), message_count, consumer_count };
                self.send(n, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)));
                Ok(Flow::Done)
            }
            Step::Purged { nowait } => {
                let purged = match reply? {
                    Reply::Int(n) => n,
                    _ => 0,
                };
                if !nowait {
                    let ok = queue::PurgeOk { message_count: u32::try_from(purged).unwrap_or(u32::MAX) };
                    self.send(n, AMQPClass::Queue(queue::AMQPMethod::PurgeOk(ok)));
                }
                Ok(Flow::Done)
            }
            Step::DeleteCounted { delete, nowait } => {
                let message_count = match reply {
                    Ok(Reply::QueueStats(s)) => {
                        u32::try_from(s.ready + s.delayed + s.in_flight).unwrap_or(u32::MAX)
                    }
                    _ => 0,
                };
                Ok(self.call_as_owner(delete, Step::Deleted { message_count, nowait }))
            }
            Step::Deleted { message_count, nowait } => {
                reply?;
                if !nowait {
                    let ok = queue::DeleteOk { message_count };
                    self.send(n, AMQPClass::Queue(queue::AMQPMethod::DeleteOk(ok)));
                }
                Ok(Flow::Done)
            }
            Step::Consumed { queue, tag, no_ack, nowait } => {
                let consumer_id = match reply? {
                    Reply::Consumer { consumer_id } => consumer_id,
                    other => return Err(AmqpError::internal(format!("consume replied {other:?}"))),
                };
                self.add_consumer(consumer_id, n, tag.clone());
                self.channel_mut(n)
                    .consumers
                    .insert(tag.clone(), Consumer { id: consumer_id, queue, no_ack });
                if !nowait {
                    let ok = basic::ConsumeOk { consumer_tag: tag.into() };
                    self.send(n, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(ok)));
                }
                Ok(Flow::Done)
            }
            Step::Cancelled { tag, nowait } => {
                self.cancel_ok(n, tag, nowait);
                Ok(Flow::Done)
            }
            Step::Popped { queue, no_ack } => match reply? {
                Reply::Deliveries(deliveries) if !deliveries.is_empty() => {
                    let stats = Query::QueueStats { name: queue.clone() };
                    Ok(self.query(stats, Step::GetCounted { queue, no_ack, deliveries }))
                }
                _ => {
                    self.send(n, AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})));
                    Ok(Flow::Done)
                }
            },
            Step::GetCounted { queue, no_ack, deliveries } => {
                let (message_count, _) = reply.and_then(counts).unwrap_or((0, 0));
                for d in deliveries {
                    let ch = self.channel_mut(n);
                    let action =
                        ch.message(&queue, d, no_ack, |delivery_tag, redelivered, exchange, routing_key| {
                            AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                                delivery_tag,
                                redelivered,
                                exchange,
                                routing_key,
                                message_count,
                            }))
                        });
                    self.push(action);
                }
                Ok(Flow::Done)
            }
        }
    }

    fn exchange_method(&mut self, method: exchange::AMQPMethod) -> Result<Flow, AmqpError> {
        match method {
            exchange::AMQPMethod::Declare(d) => {
                let ok = (!d.nowait)
                    .then_some(AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {})));
                let name = d.exchange.to_string();
                if d.passive {
                    return Ok(self.query(Query::Exchange { name }, Step::Answer { ok }));
                }
                let Some(kind) = ExchangeKind::parse(d.kind.as_str()) else {
                    return Err(AmqpError::command_invalid(format!(
                        "invalid exchange type '{}' (supported: direct, fanout, topic)",
                        d.kind
                    )));
                };
                if name.is_empty() {
                    return Err(AmqpError::access_refused("operation not permitted on the default exchange"));
                }
                let decl = ExchangeDecl {
                    name,
                    kind,
                    durable: d.durable,
                    auto_delete: d.auto_delete,
                    internal: d.internal,
                };
                Ok(self.call(Command::DeclareExchange(decl), Step::Answer { ok }))
            }
            exchange::AMQPMethod::Delete(d) => {
                let ok = (!d.nowait)
                    .then_some(AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})));
                let delete = Command::DeleteExchange { name: d.exchange.to_string(), if_unused: d.if_unused };
                Ok(self.call(delete, Step::Answer { ok }))
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
        self.channel(n).last_queue.clone().ok_or_else(|| AmqpError::not_found("no previously declared queue"))
    }

    fn queue_method(&mut self, n: u16, method: queue::AMQPMethod) -> Result<Flow, AmqpError> {
        match method {
            queue::AMQPMethod::Declare(d) => {
                let name = match d.queue.as_str() {
                    "" if !d.passive => self.server_name("amq.gen-"),
                    name => self.queue_name(n, name)?,
                };
                let args = if d.passive {
                    None
                } else {
                    if name.starts_with("amq.") && !name.starts_with("amq.gen-") {
                        return Err(AmqpError::access_refused(format!(
                            "queue name '{name}' contains reserved prefix 'amq.*'"
                        )));
                    }
                    Some(QueueArgs::parse(&name, &d.arguments)?)
                };
                let declare =
                    Declare { args, exclusive: d.exclusive, auto_delete: d.auto_delete, nowait: d.nowait };
                let look = Query::QueueConfig { name: name.clone() };
                Ok(self.query(look, Step::QueueLooked { name, declare }))
            }
            queue::AMQPMethod::Bind(b) => {
                let queue = self.queue_name(n, b.queue.as_str())?;
                let binding = Binding {
                    exchange: b.exchange.to_string(),
                    queue,
                    routing_key: b.routing_key.to_string(),
                };
                let ok = (!b.nowait).then_some(AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})));
                Ok(self.call_as_owner(Command::Bind(binding), Step::Answer { ok }))
            }
            queue::AMQPMethod::Unbind(b) => {
                let queue = self.queue_name(n, b.queue.as_str())?;
                let binding = Binding {
                    exchange: b.exchange.to_string(),
                    queue,
                    routing_key: b.routing_key.to_string(),
                };
                // Unbind has no nowait: its answer always goes.
                let ok = Some(AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})));
                Ok(self.call_as_owner(Command::Unbind(binding), Step::Answer { ok }))
            }
            queue::AMQPMethod::Purge(p) => {
                let name = self.queue_name(n, p.queue.as_str())?;
                Ok(self.call_as_owner(Command::PurgeQueue { name }, Step::Purged { nowait: p.nowait }))
            }
            queue::AMQPMethod::Delete(d) => {
                let name = self.queue_name(n, d.queue.as_str())?;
                let stats = Query::QueueStats { name: name.clone() };
                let delete = Command::DeleteQueue { name, if_unused: d.if_unused, if_empty: d.if_empty };
                Ok(self.query(stats, Step::DeleteCounted { delete, nowait: d.nowait }))
            }
            _ => Err(AmqpError::command_invalid("a client may not send this queue method")),
        }
    }

    /// `Queue.Declare` with the queue's config in `reply`: a passive declare checks it exists
    /// and may be used here; a declare checks an existing queue is the same, or creates it.
    fn queue_looked(
        &mut self,
        n: u16,
        name: String,
        declare: Declare,
        reply: Result<Reply, AmqpError>,
    ) -> Result<Flow, AmqpError> {
        let Some(args) = declare.args else {
            match reply? {
                Reply::QueueConfig(config) => self.check_owner(&name, config.exclusive_owner)?,
                other => return Err(AmqpError::internal(format!("queue config replied {other:?}"))),
            }
            return Ok(self.queue_declared(n, name, declare.nowait));
        };
        if let Ok(Reply::QueueConfig(existing)) = reply {
            self.check_owner(&name, existing.exclusive_owner)?;
            args.check_equivalent(&name, &existing)?;
            return Ok(self.queue_declared(n, name, declare.nowait));
        }
        let owner = declare.exclusive.then_some(self.session());
        let create =
            Command::CreateQueue { name: name.clone(), config: args.config(owner, declare.auto_delete) };
        Ok(self.call(create, Step::QueueCreated { name, nowait: declare.nowait }))
    }

    /// The declared queue becomes the channel's last one; `DeclareOk` reports its counts.
    fn queue_declared(&mut self, n: u16, name: String, nowait: bool) -> Flow {
        self.channel_mut(n).last_queue = Some(name.clone());
        if nowait {
            return Flow::Done;
        }
        let stats = Query::QueueStats { name: name.clone() };
        self.query(stats, Step::QueueCounted { name })
    }

    /// Another connection's exclusive queue is refused.
    fn check_owner(&self, name: &str, owner: Option<turnstile_core::SessionId>) -> Result<(), AmqpError> {
        match owner {
            Some(owner) if owner != self.session() => Err(locked(name)),
            _ => Ok(()),
        }
    }

    fn basic_method(&mut self, n: u16, method: basic::AMQPMethod) -> Result<Flow, AmqpError> {
        match method {
            basic::AMQPMethod::Qos(qos) => {
                let ch = self.channel_mut(n);
                if qos.global {
                    ch.global_prefetch = qos.prefetch_count.into();
                } else {
                    ch.prefetch = qos.prefetch_count.into();
                }
                self.send(n, AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})));
                Ok(Flow::Done)
            }
            basic::AMQPMethod::Consume(c) => {
                let queue = self.queue_name(n, c.queue.as_str())?;
                let tag = match c.consumer_tag.as_str() {
                    "" => self.server_name("amq.ctag-"),
                    tag => tag.to_owned(),
                };
                let ch = self.channel(n);
                if ch.consumers.contains_key(&tag) {
                    return Err(AmqpError::new(
                        code::NOT_ALLOWED,
                        format!("attempt to reuse consumer tag '{tag}'"),
                    ));
                }
                let (credit, global) = (ch.prefetch, ch.global_prefetch);
                let consume = Consume {
                    queue: queue.clone(),
                    session: self.session(),
                    credit: if c.no_ack { 0 } else { credit },
                    lease: Some(DELIVERY_LEASE_MS),
                    auto_ack: c.no_ack,
                    exclusive: c.exclusive,
                    pool: (global > 0 && !c.no_ack).then_some(CreditPool { id: n.into(), limit: global }),
                };
                let step = Step::Consumed { queue, tag, no_ack: c.no_ack, nowait: c.nowait };
                Ok(self.call(Command::Consume(consume), step))
            }
            basic::AMQPMethod::Cancel(c) => {
                let tag = c.consumer_tag.to_string();
                let Some(consumer) = self.channel_mut(n).consumers.remove(&tag) else {
                    self.cancel_ok(n, tag, c.nowait);
                    return Ok(Flow::Done);
                };
                self.remove_consumer(consumer.id);
                // Its unacked deliveries stay with the channel until acked or the channel closes.
                let cancel = Command::Cancel { queue: consumer.queue, consumer_id: consumer.id };
                Ok(self.call(cancel, Step::Cancelled { tag, nowait: c.nowait }))
            }
            basic::AMQPMethod::Get(g) => {
                let queue = self.queue_name(n, g.queue.as_str())?;
                let pop = Pop {
                    queue: queue.clone(),
                    session: Some(self.session()),
                    count: 1,
                    wait: 0,
                    lease: Some(DELIVERY_LEASE_MS),
                    auto_ack: g.no_ack,
                    keep: false,
                };
                Ok(self.call(Command::Pop(pop), Step::Popped { queue, no_ack: g.no_ack }))
            }
            basic::AMQPMethod::Recover(_) | basic::AMQPMethod::RecoverAsync(_) => {
                let returns = std::mem::take(&mut self.channel_mut(n).unacked);
                for unacked in returns.into_values() {
                    self.submit_nack(unacked.queue, unacked.receipt, false);
                }
                if matches!(method, basic::AMQPMethod::Recover(_)) {
                    self.send(n, AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})));
                }
                Ok(Flow::Done)
            }
            _ => Err(AmqpError::command_invalid("a client may not send this basic method")),
        }
    }

    fn cancel_ok(&mut self, n: u16, tag: String, nowait: bool) {
        if !nowait {
            let ok = basic::CancelOk { consumer_tag: tag.into() };
            self.send(n, AMQPClass::Basic(basic::AMQPMethod::CancelOk(ok)));
        }
    }

    /// Proposes a queue command as this connection, so another connection's exclusive queue is
    /// refused (`RESOURCE_LOCKED`).
    fn call_as_owner(&mut self, command: Command, step: Step) -> Flow {
        let session = self.session();
        self.call(Command::InSession { session, command: Box::new(command) }, step)
    }
}

/// `(ready messages, consumers)` from a queue's stats, for the `-Ok` replies that report them.
fn counts(reply: Reply) -> Result<(u32, u32), AmqpError> {
    match reply {
        Reply::QueueStats(s) => {
            Ok((u32::try_from(s.ready).unwrap_or(u32::MAX), u32::try_from(s.consumers).unwrap_or(u32::MAX)))
        }
        other => Err(AmqpError::internal(format!("queue stats replied {other:?}"))),
    }
}

fn locked(name: &str) -> AmqpError {
    AmqpError::new(
        code::RESOURCE_LOCKED,
        format!(
            "cannot obtain exclusive access to locked queue '{name}' in vhost '/'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration."
        ),
    )
}
