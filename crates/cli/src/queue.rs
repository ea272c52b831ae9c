//! `turnstile queue ...`: pushes, pops, acks and the admin commands.

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use turnstile_client::{Client, Overflow};

use crate::exit;
use crate::output::{ms, payload_text, print};

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Push a message (the payload from the argument, or stdin when it is absent or `-`).
    /// Prints the message id.
    Push(PushArgs),
    /// Pop messages under a lease. They stay in flight after this command exits: ack or nack
    /// them by receipt before the lease ends. Prints `id receipt deliveries payload` lines.
    Pop(PopArgs),
    /// Ack deliveries by receipt.
    Ack(AckArgs),
    /// Give a delivery back (after --delay), or with --dead reject it to the dead-letter queue.
    Nack(NackArgs),
    /// Extend a delivery's lease by receipt.
    Extend(ExtendArgs),
    /// A queue's gauges and totals.
    Stats(QueueName),
    /// The next ready messages, without delivering them.
    Peek(PeekArgs),
    /// Remove the ready and delayed messages (in-flight ones stay).
    Purge(QueueName),
    /// Every queue's name.
    List,
    /// Move dead letters back to a queue.
    Redrive(RedriveArgs),
    /// Create a queue with options (a push to a missing queue creates it with the defaults).
    Create(CreateArgs),
    /// Delete a queue and every message in it.
    Delete(QueueName),
    /// Run CMD for each message: ack on exit 0, nack with backoff otherwise.
    Work(crate::work::WorkArgs),
}

#[derive(Debug, Args)]
pub struct QueueName {
    pub queue: String,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    pub queue: String,
    /// The payload; read from stdin when absent or `-`.
    pub payload: Option<String>,
    #[arg(long, value_parser = humantime::parse_duration)]
    pub delay: Option<Duration>,
    /// 0-9, higher first.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=9))]
    pub priority: Option<u8>,
    /// A second push with this id within the queue's dedup window is not stored again.
    #[arg(long)]
    pub dedup: Option<String>,
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    /// Messages of one group are delivered one at a time, in order.
    #[arg(long)]
    pub group: Option<String>,
    /// Push only while this hold is live: `LOCK:TOKEN`.
    #[arg(long, value_name = "LOCK:TOKEN", value_parser = parse_fence)]
    pub fence: Option<(String, u64)>,
}

#[derive(Debug, Args)]
pub struct PopArgs {
    pub queue: String,
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// How long to wait for a message when none is ready.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
    /// Lease of the deliveries [default: the queue's].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub lease: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct AckArgs {
    pub queue: String,
    #[arg(required = true)]
    pub receipts: Vec<u64>,
}

#[derive(Debug, Args)]
pub struct NackArgs {
    pub queue: String,
    pub receipt: u64,
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub delay: Duration,
    /// Reject to the dead-letter queue (or discard when there is none).
    #[arg(long)]
    pub dead: bool,
}

#[derive(Debug, Args)]
pub struct ExtendArgs {
    pub queue: String,
    pub receipt: u64,
    /// The new lease, from now.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease: Duration,
}

#[derive(Debug, Args)]
pub struct PeekArgs {
    pub queue: String,
    #[arg(long, default_value_t = 10)]
    pub count: u32,
}

#[derive(Debug, Args)]
pub struct RedriveArgs {
    /// The dead-letter queue.
    pub dlq: String,
    /// Where the messages go.
    pub target: String,
    /// At most this many [default: all].
    #[arg(long)]
    pub count: Option<u64>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OverflowArg {
    Reject,
    DropHead,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    pub queue: String,
    #[arg(long)]
    pub max_len: Option<u64>,
    /// What a push to a full queue does.
    #[arg(long, value_enum)]
    pub overflow: Option<OverflowArg>,
    /// After this many deliveries a message goes to the dead-letter queue.
    #[arg(long)]
    pub max_deliveries: Option<u32>,
    /// The dead-letter queue.
    #[arg(long)]
    pub dlq: Option<String>,
    /// Default lease of a delivery.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub lease: Option<Duration>,
    /// Messages expire this long after the push.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    #[arg(long, value_parser = humantime::parse_duration)]
    pub dedup_window: Option<Duration>,
}

fn parse_fence(text: &str) -> Result<(String, u64), String> {
    let (lock, token) = text.rsplit_once(':').ok_or("expected LOCK:TOKEN")?;
    let token = token.parse().map_err(|_| format!("{token:?} is not a token"))?;
    Ok((lock.to_owned(), token))
}

#[derive(Debug, Serialize)]
struct DeliveryJson {
    id: u64,
    receipt: u64,
    deliveries: u32,
    payload: String,
}

#[derive(Debug, Serialize)]
struct MessageJson {
    id: u64,
    payload: String,
    deliveries: u32,
    priority: u8,
    age_ms: u64,
}

#[derive(Debug, Serialize)]
struct Count {
    count: u64,
}

pub async fn queue(client: &Client, command: QueueCommand, json: bool) -> anyhow::Result<ExitCode> {
    match command {
        QueueCommand::Push(args) => {
            let payload = match args.payload.as_deref() {
                None | Some("-") => {
                    let mut payload = Vec::new();
                    std::io::stdin().read_to_end(&mut payload).context("reading the payload from stdin")?;
                    payload
                }
                Some(text) => text.as_bytes().to_vec(),
            };
            let mut push = client.push(args.queue.as_str(), payload);
            if let Some(delay) = args.delay {
                push = push.delay(delay);
            }
            if let Some(priority) = args.priority {
                push = push.priority(priority);
            }
            if let Some(dedup) = args.dedup {
                push = push.dedup(dedup);
            }
            if let Some(ttl) = args.ttl {
                push = push.ttl(ttl);
            }
            if let Some(group) = args.group {
                push = push.group(group);
            }
            if let Some((lock, token)) = args.fence {
                push = push.fence(lock, token);
            }
            let id = push.send().await?;
            #[derive(Serialize)]
            struct Pushed {
                id: u64,
            }
            print(json, &Pushed { id }, || id.to_string());
        }
        QueueCommand::Pop(args) => {
            let mut pop = client.pop(&args.queue).count(args.count).wait(args.wait);
            if let Some(lease) = args.lease {
                pop = pop.lease(lease);
            }
            let deliveries = pop.fetch().await?;
            let rows: Vec<DeliveryJson> = deliveries
                .iter()
                .map(|d| DeliveryJson {
                    id: d.id,
                    receipt: d.receipt,
                    deliveries: d.deliveries,
                    payload: payload_text(&d.payload),
                })
                .collect();
            print(json, &rows, || {
                rows.iter()
                    .map(|d| format!("{} {} {} {}", d.id, d.receipt, d.deliveries, d.payload))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            if rows.is_empty() {
                return Ok(ExitCode::from(exit::TIMEOUT));
            }
        }
        QueueCommand::Ack(args) => {
            let count = client.ack(&args.queue, &args.receipts).await?;
            print(json, &Count { count }, || format!("acked {count}"));
            if count < args.receipts.len() as u64 {
                return Ok(ExitCode::from(exit::LOST));
            }
        }
        QueueCommand::Nack(args) => {
            let done = client.nack(&args.queue, args.receipt, args.delay, args.dead).await?;
            print(json, &Count { count: done.into() }, || {
                if done { "nacked" } else { "not in flight (acked, returned or expired)" }.to_owned()
            });
            if !done {
                return Ok(ExitCode::from(exit::LOST));
            }
        }
        QueueCommand::Extend(args) => {
            let lease = client.extend(&args.queue, args.receipt, args.lease).await?;
            #[derive(Serialize)]
            struct Extended {
                lease_ms: u64,
            }
            print(json, &Extended { lease_ms: ms(lease) }, || {
                format!("lease extended to {}", humantime::format_duration(lease))
            });
        }
        QueueCommand::Stats(args) => {
            let stats = client.queue_stats(&args.queue).await?;
            let map: serde_json::Map<String, serde_json::Value> =
                stats.fields.iter().map(|(k, v)| (k.clone(), (*v).into())).collect();
            print(json, &map, || {
                let width = stats.fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
                stats.fields.iter().map(|(k, v)| format!("{k:width$}  {v}")).collect::<Vec<_>>().join("\n")
            });
        }
        QueueCommand::Peek(args) => {
            let messages = client.peek(&args.queue, args.count).await?;
            let rows: Vec<MessageJson> = messages
                .iter()
                .map(|m| MessageJson {
                    id: m.id,
                    payload: payload_text(&m.payload),
                    deliveries: m.deliveries,
                    priority: m.priority,
                    age_ms: ms(m.age),
                })
                .collect();
            print(json, &rows, || {
                rows.iter()
                    .map(|m| {
                        format!(
                            "{} priority={} deliveries={} age={}ms {}",
                            m.id, m.priority, m.deliveries, m.age_ms, m.payload
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        QueueCommand::Purge(args) => {
            let count = client.purge(&args.queue).await?;
            print(json, &Count { count }, || format!("purged {count}"));
        }
        QueueCommand::List => {
            let names = client.queues().await?;
            print(json, &names, || names.join("\n"));
        }
        QueueCommand::Redrive(args) => {
            let count = client.redrive(&args.dlq, &args.target, args.count).await?;
            print(json, &Count { count }, || format!("moved {count}"));
        }
        QueueCommand::Create(args) => {
            let mut create = client.create_queue(&args.queue);
            if let Some(n) = args.max_len {
                create = create.max_len(n);
            }
            if let Some(overflow) = args.overflow {
                create = create.overflow(match overflow {
                    OverflowArg::Reject => Overflow::Reject,
                    OverflowArg::DropHead => Overflow::DropHead,
                });
            }
            if let Some(n) = args.max_deliveries {
                create = create.max_deliveries(n);
            }
            if let Some(dlq) = args.dlq {
                create = create.dead_letter(dlq);
            }
            if let Some(lease) = args.lease {
                create = create.lease(lease);
            }
            if let Some(ttl) = args.ttl {
                create = create.ttl(ttl);
            }
            if let Some(window) = args.dedup_window {
                create = create.dedup_window(window);
            }
            let created = create.create().await?;
            #[derive(Serialize)]
            struct Created {
                created: bool,
            }
            print(json, &Created { created }, || {
                if created { "created" } else { "exists (same configuration)" }.to_owned()
            });
        }
        QueueCommand::Delete(args) => {
            let deleted = client.delete_queue(&args.queue).await?;
            print(json, &Count { count: deleted.into() }, || {
                if deleted { "deleted" } else { "no such queue" }.to_owned()
            });
        }
        QueueCommand::Work(args) => return crate::work::work(client, args).await,
    }
    Ok(ExitCode::SUCCESS)
}
