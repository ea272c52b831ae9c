//! Prometheus metrics, served as `GET /metrics` in the text exposition format (version 0.0.4).
//!
//! ```text
//!  per command (hot path)                          per scrape (render)
//!  RESP connection ─┐                              recorder.render() ──► turnstile_commands_total,
//!  HTTP handler  ───┴► record_command ─► cached                          turnstile_command_duration_seconds
//!                      Counter + Histogram ─────►  node.read: Summary, every queue's QueueStats ──┐
//!                      (metrics facade,            node.status(), journal_stats(),               ├► written here
//!                       PrometheusRecorder)        Stats and Router counters ────────────────────┘
//! ```
//!
//! Only what is measured per command goes through the `metrics` facade. Everything else already
//! has a home (the state, the node, the journal, the counters in `Stats` and the `Router`), so it
//! is read at scrape time and written here: nothing is counted twice, and a deleted queue simply
//! stops appearing. Per-queue series are capped at [`MAX_QUEUES`]; the rest are summed under
//! `queue="_other"`.
//!
//! The recorder is process-wide (tests run several servers in one process; they share it), so
//! the command families count every server in the process, while everything written here is the
//! scraped server's own.

use std::collections::HashMap;
use std::fmt::{Display, Write};
use std::sync::{Once, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use metrics::{Counter, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use turnstile_core::{Query, QueueStats, Reply, State, Summary};
use turnstile_raft::{ClusterStatus, JournalStats};

use crate::listener::Protocol;
use crate::resp::info;
use crate::server::Shared;
use crate::stats::{COUNTERS, ConnectionCounts, Snapshot, Stats};

/// Queues shown by name; the others are summed under [`OTHER`].
const MAX_QUEUES: usize = 100;
/// The `queue` label of the queues beyond [`MAX_QUEUES`].
const OTHER: &str = "_other";
/// The `command` label of a RESP command the table does not know.
const UNKNOWN: &str = "unknown";
/// Most distinct command names kept per protocol; later ones count as [`UNKNOWN`]. The names
/// come from fixed tables, so this only guards against a caller passing free text.
const MAX_COMMAND_NAMES: usize = 128;

const COMMANDS_TOTAL: &str = "turnstile_commands_total";
const COMMAND_DURATION: &str = "turnstile_command_duration_seconds";
/// Buckets of [`COMMAND_DURATION`]: 100 µs to 10 s.
const LATENCY_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// How often histogram samples are folded into their buckets between scrapes, so that a server
/// nobody scrapes does not keep every sample.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The `command` label of a RESP request: its name as the command table spells it, or
/// `unknown`, so the label set stays bounded whatever clients send.
pub fn resp_command_name(args: &[Bytes]) -> &'static str {
    turnstile_resp::cmd::command_name(args).unwrap_or(UNKNOWN)
}

/// Counts one command (in the server's total too) and its latency. `command` must come from a
/// fixed table (AMQP's method names, HTTP's operation names). RESP counts through
/// [`RespCommands`], which caches the handles per connection.
pub fn record_command(stats: &Stats, protocol: Protocol, command: &str, elapsed: Duration) {
    stats.commands.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    exporter().handles(protocol.as_str(), command).record(elapsed);
}

/// One RESP connection's way to count its requests: it keeps the handles of the last few command
/// names it was sent (as sent, in their case), so a repeated command skips the command table and
/// the registry's lock.
#[derive(Default)]
pub struct RespCommands {
    recent: Vec<(Box<[u8]>, CommandHandles)>,
}

impl RespCommands {
    /// How many names a connection keeps; a client sending more kinds takes the longer way for
    /// the rest.
    const KEEP: usize = 8;

    /// Counts requests that took `elapsed` each.
    pub fn record(&mut self, requests: &[Vec<Bytes>], elapsed: Duration) {
        for args in requests {
            let sent = args.first().map_or(&[][..], |name| &name[..]);
            if let Some((_, handles)) = self.recent.iter().find(|(name, _)| **name == *sent) {
                handles.record(elapsed);
                continue;
            }
            let handles = exporter().handles("resp", resp_command_name(args));
            handles.record(elapsed);
            if self.recent.len() < Self::KEEP {
                self.recent.push((sent.into(), handles));
            }
        }
    }
}

/// The Prometheus text exposition of every metric: the command families, then the state's
/// gauges and the server's [`Snapshot`].
pub async fn render(shared: &Shared) -> String {
    let mut out = Exposition { out: exporter().recorder.handle().render() };
    let state = match shared.node.read_at(StateGauges::read).await {
        Ok(state) => Some(state),
        // Not readable (shutting down, no leader): the process-level families still help.
        Err(e) => {
            tracing::debug!(error = %e, "metrics without the state's gauges");
            None
        }
    };
    let snapshot = Snapshot::with_summary(shared, state.as_ref().map(|s| s.summary));
    if let Some(state) = state {
        out.state(state);
    }
    out.server(&snapshot);
    out.out
}

/// The recorder and the handles of the command families, made once per process.
struct Exporter {
    recorder: PrometheusRecorder,
    /// protocol → command → handles: registering a key allocates, so it is done once per name.
    commands: RwLock<HashMap<&'static str, HashMap<Box<str>, CommandHandles>>>,
}

#[derive(Clone)]
struct CommandHandles {
    count: Counter,
    duration: Histogram,
}

impl CommandHandles {
    fn record(&self, elapsed: Duration) {
        self.count.increment(1);
        self.duration.record(elapsed.as_secs_f64());
    }
}

fn exporter() -> &'static Exporter {
    static EXPORTER: OnceLock<Exporter> = OnceLock::new();
    static INSTALL: Once = Once::new();
    let exporter = EXPORTER.get_or_init(Exporter::new);
    // Also the global recorder, so the facade's macros land here too. Our own handles are
    // registered on `recorder` directly and work even if another recorder was installed first.
    INSTALL.call_once(|| {
        if metrics::set_global_recorder(&exporter.recorder).is_err() {
            tracing::debug!("a metrics recorder was already installed; /metrics keeps its own");
        }
    });
    exporter
}

impl Exporter {
    fn new() -> Exporter {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(COMMAND_DURATION.to_owned()), &LATENCY_BUCKETS)
            .expect("the latency buckets are not empty")
            .build_recorder();
        recorder.describe_counter(
            KeyName::from_const_str(COMMANDS_TOTAL),
            None,
            SharedString::const_str("Commands run, by command and protocol."),
        );
        recorder.describe_histogram(
            KeyName::from_const_str(COMMAND_DURATION),
            None,
            SharedString::const_str(
                "Command latency, by command and protocol: from the request (for RESP, its pipeline) \
                 being read to its reply being ready, waits included.",
            ),
        );
        let handle = recorder.handle();
        let upkeep = std::thread::Builder::new().name("metrics-upkeep".to_owned()).spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
        if let Err(e) = upkeep {
            tracing::warn!(error = %e, "no metrics upkeep thread: latency samples wait for a scrape");
        }
        Exporter { recorder, commands: RwLock::default() }
    }

    /// The handles of one command family, registered on first use.
    fn handles(&self, protocol: &'static str, command: &str) -> CommandHandles {
        {
            let handles = self.commands.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(handles) = handles.get(protocol).and_then(|by_name| by_name.get(command)) {
                return handles.clone();
            }
        }
        self.register(protocol, command)
    }

    fn register(&self, protocol: &'static str, command: &str) -> CommandHandles {
        let mut handles = self.commands.write().unwrap_or_else(PoisonError::into_inner);
        let by_name = handles.entry(protocol).or_default();
        let command = if by_name.contains_key(command) || by_name.len() < MAX_COMMAND_NAMES {
            command
        } else {
            UNKNOWN
        };
        if let Some(existing) = by_name.get(command) {
            return existing.clone();
        }
        let labels = || vec![Label::new("command", command.to_owned()), Label::new("protocol", protocol)];
        let metadata = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));
        let registered = CommandHandles {
            count: self.recorder.register_counter(&Key::from_parts(COMMANDS_TOTAL, labels()), &metadata),
            duration: self
                .recorder
                .register_histogram(&Key::from_parts(COMMAND_DURATION, labels()), &metadata),
        };
        by_name.insert(command.into(), registered.clone());
        registered
    }
}

/// What one scrape reads from the state, under one read.
#[derive(Debug)]
struct StateGauges {
    summary: Summary,
    /// Every queue, by name.
    queues: Vec<(String, QueueRow)>,
}

impl StateGauges {
    /// O(number of queues), under the state's read lock.
    fn read(state: &State, now: u64) -> StateGauges {
        let names = match state.query(now, Query::ListQueues) {
            Reply::Names(names) => names,
            _ => Vec::new(),
        };
        let queues = names
            .into_iter()
            .filter_map(|name| match state.query(now, Query::QueueStats { name: name.clone() }) {
                Reply::QueueStats(stats) => Some((name, QueueRow::from(&stats))),
                _ => None,
            })
            .collect();
        StateGauges { summary: state.summary(), queues }
    }
}

/// One queue's series (or the sum of several, for `_other`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct QueueRow {
    ready: u64,
    delayed: u64,
    in_flight: u64,
    /// Dead letters stored here; also counted in `ready`, `delayed` or `in_flight`.
    dead_letters: u64,
    consumers: u64,
    waiting_pops: u64,
    /// For a sum of queues, the oldest of them.
    oldest_ready_age_ms: u64,
    payload_bytes: u64,
    pushed: u64,
    delivered: u64,
    acked: u64,
    returned: u64,
    dead_lettered: u64,
    expired: u64,
}

impl From<&QueueStats> for QueueRow {
    fn from(s: &QueueStats) -> QueueRow {
        QueueRow {
            ready: s.ready,
            delayed: s.delayed,
            in_flight: s.in_flight,
            dead_letters: s.dead,
            consumers: s.consumers,
            waiting_pops: s.waiting_pops,
            oldest_ready_age_ms: s.oldest_ready_age,
            payload_bytes: s.payload_bytes,
            pushed: s.totals.pushed,
            delivered: s.totals.delivered,
            acked: s.totals.acked,
            returned: s.totals.returned,
            dead_lettered: s.totals.dead_lettered,
            expired: s.totals.expired,
        }
    }
}

impl QueueRow {
    /// Messages stored: what the queues are ranked by.
    fn messages(&self) -> u64 {
        self.ready + self.delayed + self.in_flight
    }

    fn add(&mut self, other: &QueueRow) {
        self.ready += other.ready;
        self.delayed += other.delayed;
        self.in_flight += other.in_flight;
        self.dead_letters += other.dead_letters;
        self.consumers += other.consumers;
        self.waiting_pops += other.waiting_pops;
        self.oldest_ready_age_ms = self.oldest_ready_age_ms.max(other.oldest_ready_age_ms);
        self.payload_bytes += other.payload_bytes;
        self.pushed += other.pushed;
        self.delivered += other.delivered;
        self.acked += other.acked;
        self.returned += other.returned;
        self.dead_lettered += other.dead_lettered;
        self.expired += other.expired;
    }
}

/// The `cap` queues with the most messages (ties by name), then the rest summed as `_other`.
///
/// A queue really named `_other` is always part of the sum, so no two series share a label set.
/// The `_other` totals are sums over a changing set of queues, so they can go down when a queue
/// enters the top `cap` or is deleted; Prometheus reads that as a counter reset.
fn cap_queues(mut queues: Vec<(String, QueueRow)>, cap: usize) -> Vec<(String, QueueRow)> {
    let mut other: Option<QueueRow> = None;
    queues.retain(|(name, row)| {
        if name == OTHER {
            other.get_or_insert_default().add(row);
        }
        name != OTHER
    });
    queues.sort_unstable_by(|(a_name, a), (b_name, b)| {
        b.messages().cmp(&a.messages()).then(a_name.cmp(b_name))
    });
    for (_, row) in queues.drain(cap.min(queues.len())..) {
        other.get_or_insert_default().add(&row);
    }
    if let Some(other) = other {
        queues.push((OTHER.to_owned(), other));
    }
    queues
}

/// A per-queue family besides `turnstile_queue_messages`, read from a [`QueueRow`].
struct QueueFamily {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&QueueRow) -> u64,
}

const fn gauge(name: &'static str, help: &'static str, value: fn(&QueueRow) -> u64) -> QueueFamily {
    QueueFamily { name, kind: "gauge", help, value }
}

const fn counter(name: &'static str, help: &'static str, value: fn(&QueueRow) -> u64) -> QueueFamily {
    QueueFamily { name, kind: "counter", help, value }
}

const QUEUE_FAMILIES: &[QueueFamily] = &[
    gauge(
        "turnstile_queue_dead_letters",
        "Dead letters stored in the queue (also counted in turnstile_queue_messages).",
        |q| q.dead_letters,
    ),
    gauge("turnstile_queue_consumers", "Consumers subscribed to the queue.", |q| q.consumers),
    gauge("turnstile_queue_waiting_pops", "Q.POP calls waiting for a message.", |q| q.waiting_pops),
    gauge("turnstile_queue_payload_bytes", "Payload and property bytes stored.", |q| q.payload_bytes),
    counter("turnstile_queue_pushed_total", "Messages pushed.", |q| q.pushed),
    counter("turnstile_queue_delivered_total", "Deliveries made.", |q| q.delivered),
    counter("turnstile_queue_acked_total", "Deliveries acked.", |q| q.acked),
    counter(
        "turnstile_queue_returned_total",
        "Deliveries that came back to be delivered again (nack, lease expiry, session close).",
        |q| q.returned,
    ),
    counter("turnstile_queue_dead_lettered_total", "Messages moved to the dead-letter queue.", |q| {
        q.dead_lettered
    }),
    counter(
        "turnstile_queue_expired_total",
        "Messages whose TTL ran out with no dead-letter queue to go to.",
        |q| q.expired,
    ),
];

/// A per-protocol connection family: name, type, help, and its value in [`ConnectionCounts`].
type ConnectionFamily = (&'static str, &'static str, &'static str, fn(&ConnectionCounts) -> u64);

/// Prometheus text, written one whole family at a time: `# HELP`, `# TYPE`, then its samples.
#[derive(Debug, Default)]
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        if !self.out.is_empty() && !self.out.ends_with('\n') {
            self.out.push('\n');
        }
        let _ = write!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                escape_label_value(value, &mut self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family of one sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, labels: &[(&str, &str)], value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, labels, value);
    }

    fn gauge(&mut self, name: &str, help: &str, value: impl Display) {
        self.single(name, "gauge", help, &[], value);
    }

    fn counter(&mut self, name: &str, help: &str, value: impl Display) {
        self.single(name, "counter", help, &[], value);
    }

    /// What the state holds: sessions, locks, queues.
    fn state(&mut self, state: StateGauges) {
        let s = &state.summary;
        self.gauge("turnstile_sessions", "Sessions open (RESP connections and HTTP waits).", s.sessions);
        self.gauge("turnstile_locks", "Locks and semaphores held or waited for.", s.locks);
        self.gauge("turnstile_lock_holds", "Holds of locks and semaphores.", s.holds);
        self.gauge("turnstile_lock_waiters", "Acquires waiting in line.", s.lock_waiters);
        self.gauge("turnstile_keys", "Keys stored.", s.keys);
        self.queues(state.queues.len(), &cap_queues(state.queues, MAX_QUEUES));
    }

    fn queues(&mut self, count: usize, shown: &[(String, QueueRow)]) {
        self.gauge("turnstile_queues", "Queues.", count);
        let name = "turnstile_queue_messages";
        self.family(name, "gauge", "Messages stored, by state.");
        for (queue, row) in shown {
            for (state, value) in
                [("ready", row.ready), ("delayed", row.delayed), ("in_flight", row.in_flight)]
            {
                self.sample(name, &[("queue", queue), ("state", state)], value);
            }
        }
        let name = "turnstile_queue_oldest_ready_age_seconds";
        self.family(name, "gauge", "Age of the oldest ready message; 0 when none is ready.");
        for (queue, row) in shown {
            self.sample(name, &[("queue", queue)], seconds_from_millis(row.oldest_ready_age_ms));
        }
        for family in QUEUE_FAMILIES {
            self.family(family.name, family.kind, family.help);
            for (queue, row) in shown {
                self.sample(family.name, &[("queue", queue)], (family.value)(row));
            }
        }
    }

    /// What the server, the node and the journal count, and the process.
    fn server(&mut self, snapshot: &Snapshot) {
        self.single(
            "turnstile_build_info",
            "gauge",
            "Always 1; the version is a label.",
            &[("version", info::VERSION)],
            1,
        );
        self.gauge(
            "turnstile_uptime_seconds",
            "Seconds since the server started.",
            snapshot.uptime.as_secs_f64(),
        );

        let families: [ConnectionFamily; 3] = [
            ("turnstile_connections", "gauge", "Connections open.", |c| c.open),
            ("turnstile_connections_accepted_total", "counter", "Connections accepted and served.", |c| {
                c.accepted
            }),
            (
                "turnstile_connections_rejected_total",
                "counter",
                "Connections refused because max-clients connections were open.",
                |c| c.refused,
            ),
        ];
        for (name, kind, help, value) in families {
            self.family(name, kind, help);
            for (protocol, counts) in &snapshot.connections {
                self.sample(name, &[("protocol", protocol.as_str())], value(counts));
            }
        }
        self.gauge(
            "turnstile_connections_blocked",
            "Sessions parked in a wait (lock acquire, pop), over every protocol.",
            snapshot.blocked,
        );
        for counter in COUNTERS {
            let name = format!("turnstile_{}_total", counter.name);
            self.counter(&name, counter.help, (counter.value)(snapshot));
        }
        self.gauge(
            "turnstile_connections_flow",
            "Connections flow control has stopped reading (queue-flow-limit), over every protocol.",
            snapshot.in_flow,
        );
        self.counter(
            "turnstile_flow_seconds_total",
            "Seconds connections have spent stopped by flow control, summed over connections.",
            snapshot.flow_time.as_secs_f64(),
        );

        let status = &snapshot.node;
        self.gauge("turnstile_raft_term", "Current Raft term.", status.term);
        self.gauge(
            "turnstile_raft_leader",
            "The leader's node id; 0 when there is none.",
            status.leader.unwrap_or(0),
        );
        self.gauge(
            "turnstile_raft_is_leader",
            "1 if this node leads.",
            u8::from(status.leader == Some(status.node_id)),
        );
        self.gauge(
            "turnstile_raft_last_log_index",
            "Index of the last log entry; 0 when the log is empty.",
            status.last_log_index.unwrap_or(0),
        );
        self.gauge(
            "turnstile_raft_committed_index",
            "Index of the last committed entry.",
            status.committed_index.unwrap_or(0),
        );
        self.gauge(
            "turnstile_raft_applied_index",
            "Index of the last applied entry.",
            status.applied_index.unwrap_or(0),
        );
        self.gauge(
            "turnstile_raft_snapshot_index",
            "Index the latest snapshot covers; 0 when none.",
            status.snapshot_index.unwrap_or(0),
        );
        self.counter(
            "turnstile_raft_entries_proposed_total",
            "Log entries (batches of commands) proposed.",
            status.entries_proposed,
        );
        self.counter(
            "turnstile_raft_commands_proposed_total",
            "Commands proposed.",
            status.commands_proposed,
        );

        self.members(&snapshot.cluster);
        if let Some(journal) = &snapshot.journal {
            self.journal(journal);
        }
        self.gauge(
            "turnstile_journal_poisoned",
            "1 once a failed write or fsync has stopped the durable log.",
            u8::from(snapshot.journal_poisoned),
        );

        self.gauge(
            "turnstile_payload_bytes",
            "Payload bytes stored (messages, keys and values).",
            snapshot.payload_bytes,
        );
        self.gauge(
            "turnstile_max_memory_bytes",
            "Limit on payload bytes; 0 = no limit.",
            snapshot.max_memory,
        );
        if let Some(bytes) = snapshot.resident_bytes {
            self.gauge("turnstile_process_resident_memory_bytes", "Resident memory of the process.", bytes);
        }
    }

    /// Each member's replication, as the leader sees it (a follower has no figures to show).
    fn members(&mut self, cluster: &ClusterStatus) {
        let figures: Vec<_> = cluster.members.iter().filter(|m| m.lag.is_some()).collect();
        if figures.is_empty() {
            return;
        }
        self.family(
            "turnstile_raft_member_lag",
            "gauge",
            "Log entries a member is behind the leader, as the leader sees it.",
        );
        for m in &figures {
            self.sample(
                "turnstile_raft_member_lag",
                &[("node", &m.id.to_string()), ("role", &m.role)],
                m.lag.unwrap_or(0),
            );
        }
        self.family(
            "turnstile_raft_member_last_contact_seconds",
            "gauge",
            "Seconds since a member last answered the leader.",
        );
        for m in figures.iter().filter(|m| m.last_contact_ms.is_some()) {
            let seconds = m.last_contact_ms.unwrap_or(0) as f64 / 1000.0;
            self.sample(
                "turnstile_raft_member_last_contact_seconds",
                &[("node", &m.id.to_string())],
                seconds,
            );
        }
    }

    fn journal(&mut self, j: &JournalStats) {
        self.counter("turnstile_fsync_total", "fdatasync calls on journal segments.", j.fsyncs);
        self.counter(
            "turnstile_fsync_delayed_total",
            "fdatasync calls slowed by a fault hook (--fault-injection only).",
            j.delayed_fsyncs,
        );
        self.fsync_histogram(j);
        self.gauge(
            "turnstile_fsync_max_duration_seconds",
            "The slowest fsync so far.",
            seconds_from_nanos(j.fsync_nanos_max),
        );
        self.counter("turnstile_journal_records_total", "Records written to the journal.", j.records);
        self.counter("turnstile_journal_bytes_written_total", "Bytes written to journal segments.", j.bytes);
        self.counter("turnstile_journal_appends_total", "Appends to the journal.", j.appends);
        self.counter("turnstile_journal_batches_total", "Groups of appends written together.", j.batches);
        self.gauge(
            "turnstile_fsync_batch_size_last",
            "Appends in the latest group written together (one fsync under fsync=always).",
            j.last_batch_appends,
        );
        self.gauge(
            "turnstile_fsync_batch_size_max",
            "Appends in the largest group so far.",
            j.max_batch_appends,
        );
        self.gauge("turnstile_journal_segments", "Journal segment files on disk.", j.segments);
        self.gauge(
            "turnstile_journal_log_bytes",
            "Bytes of log entries after the latest snapshot: what a restart replays.",
            j.log_bytes,
        );
    }

    /// The journal's fsync latency histogram: bucket `i` counts fsyncs under 2^i µs and not
    /// under 2^(i-1) µs, so it is cumulative up to `le` = 2^i µs. Its last bucket also holds
    /// everything slower, so it only counts towards `+Inf`.
    fn fsync_histogram(&mut self, j: &JournalStats) {
        let name = "turnstile_fsync_duration_seconds";
        self.family(name, "histogram", "fsync latency.");
        let bucket = format!("{name}_bucket");
        let (last, bounded) = j.fsync_micros_log2.split_last().expect("the histogram has buckets");
        let mut cumulative = 0u64;
        for (i, count) in bounded.iter().enumerate() {
            cumulative += count;
            let le = JournalStats::fsync_bucket_upper_micros(i) as f64 / 1e6;
            self.sample(&bucket, &[("le", &le.to_string())], cumulative);
        }
        cumulative += last;
        self.sample(&bucket, &[("le", "+Inf")], cumulative);
        self.sample(&format!("{name}_sum"), &[], seconds_from_nanos(j.fsync_nanos_total));
        self.sample(&format!("{name}_count"), &[], cumulative);
    }
}

/// Escapes a label value as the text format requires: `\` `"` and newline.
fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn seconds_from_millis(ms: u64) -> f64 {
    Duration::from_millis(ms).as_secs_f64()
}

fn seconds_from_nanos(nanos: u64) -> f64 {
    Duration::from_nanos(nanos).as_secs_f64()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use turnstile_raft::JournalStats;

    use super::{
        Exposition, MAX_QUEUES, OTHER, QueueRow, RespCommands, cap_queues, exporter, resp_command_name,
    };

    /// The exposition without its `# HELP` lines, each of which must come right before its
    /// family's `# TYPE` line.
    fn without_help(text: &str) -> Vec<&str> {
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if let Some(family) = line.strip_prefix("# TYPE ").and_then(|rest| rest.split(' ').next()) {
                let help = i.checked_sub(1).map(|before| lines[before]);
                assert!(help.is_some_and(|h| h.starts_with(&format!("# HELP {family} "))), "{line}");
            }
        }
        lines.into_iter().filter(|line| !line.starts_with("# HELP ")).collect()
    }

    fn row(ready: u64, age_ms: u64) -> QueueRow {
        QueueRow { ready, oldest_ready_age_ms: age_ms, pushed: ready, ..QueueRow::default() }
    }

    #[test]
    fn the_fullest_queues_are_shown_and_the_rest_summed_as_other() {
        // q000 has 0 messages, q001 has 1 ... q104 has 104; x and y tie with 50 with q050.
        let mut queues: Vec<(String, QueueRow)> = (0..105).map(|i| (format!("q{i:03}"), row(i, i))).collect();
        queues.push(("y".to_owned(), row(50, 1)));
        queues.push(("x".to_owned(), row(50, 1)));
        let shown = cap_queues(queues, MAX_QUEUES);

        assert_eq!(shown.len(), MAX_QUEUES + 1);
        assert_eq!(shown[0].0, "q104");
        // 104..=50 is 55 queues, then the ties with 50 by name: q050, x, y; then 49 down to 7.
        let names: Vec<&str> = shown.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(&names[54..58], &["q050", "x", "y", "q049"]);
        assert_eq!(names[99], "q007");
        let (name, other) = &shown[100];
        assert_eq!(name, OTHER);
        assert_eq!(other.ready, (0..7).sum::<u64>());
        assert_eq!(other.pushed, (0..7).sum::<u64>());
        assert_eq!(other.oldest_ready_age_ms, 6, "the oldest of the summed queues");
    }

    #[test]
    fn few_queues_are_all_shown_and_a_queue_named_other_is_always_summed() {
        let shown = cap_queues(vec![("b".to_owned(), row(1, 0)), ("a".to_owned(), row(1, 0))], MAX_QUEUES);
        assert_eq!(shown, vec![("a".to_owned(), row(1, 0)), ("b".to_owned(), row(1, 0))]);

        let mut queues: Vec<(String, QueueRow)> = (0..3).map(|i| (format!("q{i}"), row(i, 0))).collect();
        queues.push((OTHER.to_owned(), row(100, 9)));
        let shown = cap_queues(queues, 2);
        let names: Vec<&str> = shown.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["q2", "q1", OTHER]);
        assert_eq!(shown[2].1.ready, 100, "the queue named _other plus q0");
        assert_eq!(shown[2].1.oldest_ready_age_ms, 9);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = Exposition::default();
        out.family("turnstile_test", "gauge", "A test.");
        out.sample("turnstile_test", &[("queue", "a\"b\\c\nd"), ("state", "ready")], 3);
        assert_eq!(
            out.out,
            "# HELP turnstile_test A test.\n# TYPE turnstile_test gauge\n\
             turnstile_test{queue=\"a\\\"b\\\\c\\nd\",state=\"ready\"} 3\n"
        );
    }

    #[test]
    fn queue_families_are_written_whole() {
        let mut out = Exposition::default();
        let shown = cap_queues(vec![("a".to_owned(), row(2, 1500)), ("b".to_owned(), row(1, 0))], MAX_QUEUES);
        out.queues(2, &shown);
        // Each family's TYPE, then all its samples, before the next family begins.
        let expected = [
            "# TYPE turnstile_queues gauge",
            "turnstile_queues 2",
            "# TYPE turnstile_queue_messages gauge",
            r#"turnstile_queue_messages{queue="a",state="ready"} 2"#,
            r#"turnstile_queue_messages{queue="a",state="delayed"} 0"#,
            r#"turnstile_queue_messages{queue="a",state="in_flight"} 0"#,
            r#"turnstile_queue_messages{queue="b",state="ready"} 1"#,
            r#"turnstile_queue_messages{queue="b",state="delayed"} 0"#,
            r#"turnstile_queue_messages{queue="b",state="in_flight"} 0"#,
            "# TYPE turnstile_queue_oldest_ready_age_seconds gauge",
            r#"turnstile_queue_oldest_ready_age_seconds{queue="a"} 1.5"#,
            r#"turnstile_queue_oldest_ready_age_seconds{queue="b"} 0"#,
            "# TYPE turnstile_queue_dead_letters gauge",
            r#"turnstile_queue_dead_letters{queue="a"} 0"#,
            r#"turnstile_queue_dead_letters{queue="b"} 0"#,
            "# TYPE turnstile_queue_consumers gauge",
            r#"turnstile_queue_consumers{queue="a"} 0"#,
            r#"turnstile_queue_consumers{queue="b"} 0"#,
            "# TYPE turnstile_queue_waiting_pops gauge",
            r#"turnstile_queue_waiting_pops{queue="a"} 0"#,
            r#"turnstile_queue_waiting_pops{queue="b"} 0"#,
            "# TYPE turnstile_queue_payload_bytes gauge",
            r#"turnstile_queue_payload_bytes{queue="a"} 0"#,
            r#"turnstile_queue_payload_bytes{queue="b"} 0"#,
            "# TYPE turnstile_queue_pushed_total counter",
            r#"turnstile_queue_pushed_total{queue="a"} 2"#,
            r#"turnstile_queue_pushed_total{queue="b"} 1"#,
            "# TYPE turnstile_queue_delivered_total counter",
            r#"turnstile_queue_delivered_total{queue="a"} 0"#,
            r#"turnstile_queue_delivered_total{queue="b"} 0"#,
            "# TYPE turnstile_queue_acked_total counter",
            r#"turnstile_queue_acked_total{queue="a"} 0"#,
            r#"turnstile_queue_acked_total{queue="b"} 0"#,
            "# TYPE turnstile_queue_returned_total counter",
            r#"turnstile_queue_returned_total{queue="a"} 0"#,
            r#"turnstile_queue_returned_total{queue="b"} 0"#,
            "# TYPE turnstile_queue_dead_lettered_total counter",
            r#"turnstile_queue_dead_lettered_total{queue="a"} 0"#,
            r#"turnstile_queue_dead_lettered_total{queue="b"} 0"#,
            "# TYPE turnstile_queue_expired_total counter",
            r#"turnstile_queue_expired_total{queue="a"} 0"#,
            r#"turnstile_queue_expired_total{queue="b"} 0"#,
        ];
        assert_eq!(without_help(&out.out), expected);
    }

    #[test]
    fn the_fsync_histogram_is_cumulative() {
        let mut journal =
            JournalStats { fsyncs: 4, fsync_nanos_total: 3_000_500_000, ..JournalStats::default() };
        journal.fsync_micros_log2[0] = 1; // under 1 µs
        journal.fsync_micros_log2[3] = 2; // 4 µs up to 8 µs
        *journal.fsync_micros_log2.last_mut().unwrap() = 1; // slower than the last bound
        let mut out = Exposition::default();
        out.fsync_histogram(&journal);
        // Bounds of 2^i µs; the slowest fsync counts only towards +Inf.
        let expected = r#"# HELP turnstile_fsync_duration_seconds fsync latency.
# TYPE turnstile_fsync_duration_seconds histogram
turnstile_fsync_duration_seconds_bucket{le="0.000001"} 1
turnstile_fsync_duration_seconds_bucket{le="0.000002"} 1
turnstile_fsync_duration_seconds_bucket{le="0.000004"} 1
turnstile_fsync_duration_seconds_bucket{le="0.000008"} 3
turnstile_fsync_duration_seconds_bucket{le="0.000016"} 3
turnstile_fsync_duration_seconds_bucket{le="0.000032"} 3
turnstile_fsync_duration_seconds_bucket{le="0.000064"} 3
turnstile_fsync_duration_seconds_bucket{le="0.000128"} 3
turnstile_fsync_duration_seconds_bucket{le="0.000256"} 3
turnstile_fsync_duration_seconds_bucket{le="0.000512"} 3
turnstile_fsync_duration_seconds_bucket{le="0.001024"} 3
turnstile_fsync_duration_seconds_bucket{le="0.002048"} 3
turnstile_fsync_duration_seconds_bucket{le="0.004096"} 3
turnstile_fsync_duration_seconds_bucket{le="0.008192"} 3
turnstile_fsync_duration_seconds_bucket{le="0.016384"} 3
turnstile_fsync_duration_seconds_bucket{le="0.032768"} 3
turnstile_fsync_duration_seconds_bucket{le="0.065536"} 3
turnstile_fsync_duration_seconds_bucket{le="0.131072"} 3
turnstile_fsync_duration_seconds_bucket{le="0.262144"} 3
turnstile_fsync_duration_seconds_bucket{le="0.524288"} 3
turnstile_fsync_duration_seconds_bucket{le="1.048576"} 3
turnstile_fsync_duration_seconds_bucket{le="2.097152"} 3
turnstile_fsync_duration_seconds_bucket{le="4.194304"} 3
turnstile_fsync_duration_seconds_bucket{le="+Inf"} 4
turnstile_fsync_duration_seconds_sum 3.0005
turnstile_fsync_duration_seconds_count 4
"#;
        assert_eq!(out.out, expected);
    }

    #[test]
    fn a_connection_counts_repeated_commands_through_its_own_handles() {
        let count = |command: &str| {
            let series = format!("turnstile_commands_total{{command=\"{command}\",protocol=\"resp\"}} ");
            let text = exporter().recorder.handle().render();
            let value = text.lines().find_map(|line| line.strip_prefix(&series));
            value.map_or(0.0, |v| v.parse::<f64>().unwrap())
        };
        let args = |name: &str| vec![Bytes::copy_from_slice(name.as_bytes()), Bytes::from_static(b"x")];
        // Other tests count commands in this process too: only increases are compared, and
        // `sem.info` is sent by no other test.
        let (before, unknown_before) = (count("sem.info"), count("unknown"));
        let mut commands = RespCommands::default();
        let sent: Vec<_> = ["SEM.INFO", "sem.info", "Sem.Info", "SEM.INFO", "NOSUCH"].map(args).into();
        commands.record(&sent, Duration::from_millis(1));
        commands.record(&sent[..2], Duration::from_millis(1));
        assert_eq!(count("sem.info") - before, 6.0);
        assert!(count("unknown") - unknown_before >= 1.0);
        // Each spelling is kept once, and no more than KEEP of them.
        assert_eq!(commands.recent.len(), 4);
        let many: Vec<_> = (0..20).map(|i| args(&format!("nosuch{i}"))).collect();
        commands.record(&many, Duration::from_millis(1));
        assert_eq!(commands.recent.len(), RespCommands::KEEP);
        assert!(count("unknown") - unknown_before >= 21.0);
    }

    #[test]
    fn resp_command_names_come_from_the_command_table() {
        let args = |name: &'static str| vec![Bytes::from_static(name.as_bytes()), Bytes::from_static(b"x")];
        assert_eq!(resp_command_name(&args("Q.PUSH")), "q.push");
        assert_eq!(resp_command_name(&args("client")), "client");
        assert_eq!(resp_command_name(&args("FLUSHALL")), "flushall");
        assert_eq!(resp_command_name(&args("NOSUCH.COMMAND")), "unknown");
        assert_eq!(resp_command_name(&[]), "unknown");
    }
}
