//! What the server says about itself: `INFO`, `HELLO`, `COMMAND`.

use std::fmt::Write;

use bytes::Bytes;
use turnstile_raft::ClusterStatus;
use turnstile_resp::cmd::CommandQuery;
use turnstile_resp::{Frame, Protocol};

use crate::server::Shared;
use crate::stats::{COUNTERS, Snapshot};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The `HELLO` reply: the map Redis 7 sends.
pub fn hello(client_id: u64, protocol: Protocol) -> Frame {
    let proto = match protocol {
        Protocol::Resp2 => 2,
        Protocol::Resp3 => 3,
    };
    let field = |k: &str, v: Frame| (Frame::bulk(Bytes::copy_from_slice(k.as_bytes())), v);
    Frame::Map(vec![
        field("server", Frame::bulk("turnstile")),
        field("version", Frame::bulk(VERSION)),
        field("proto", Frame::Integer(proto)),
        field("id", Frame::Integer(i64::try_from(client_id).unwrap_or(i64::MAX))),
        field("mode", Frame::bulk("standalone")),
        field("role", Frame::bulk("master")),
        field("modules", Frame::Array(vec![])),
    ])
}

/// The `CLUSTER.*` reply: the cluster's status as a map, each member a map.
pub fn cluster_status(status: &ClusterStatus) -> Frame {
    let field = |k: &str, v: Frame| (Frame::bulk(Bytes::copy_from_slice(k.as_bytes())), v);
    let int = |n: u64| Frame::Integer(i64::try_from(n).unwrap_or(i64::MAX));
    let maybe = |n: Option<u64>| n.map_or(Frame::Null, int);
    let members = status
        .members
        .iter()
        .map(|m| {
            Frame::Map(vec![
                field("id", int(m.id)),
                field("addr", Frame::bulk(m.addr.clone())),
                field("role", Frame::bulk(m.role.clone())),
                field("matched_index", maybe(m.matched_index)),
                field("lag", maybe(m.lag)),
                field("last_contact_ms", maybe(m.last_contact_ms)),
            ])
        })
        .collect();
    Frame::Map(vec![
        field("node", int(status.node_id)),
        field("leader", maybe(status.leader)),
        field("term", int(status.term)),
        field("commit_index", maybe(status.committed_index)),
        field("applied_index", maybe(status.applied_index)),
        field("members", Frame::Array(members)),
    ])
}

/// `COMMAND` and its subcommands, answered from the command table the parser uses.
pub fn command(query: &CommandQuery) -> Frame {
    turnstile_resp::cmd::command_reply(query)
}

const SECTIONS: [&str; 8] =
    ["server", "clients", "memory", "persistence", "stats", "locks", "queues", "raft"];

/// The `INFO` text for the named sections (all of them when none or `all`/`everything` is named),
/// rendered from one [`Snapshot`]. Fields Redis defines keep Redis's names (tools read them);
/// Turnstile's own counters are named as in [`COUNTERS`].
pub async fn render(shared: &Shared, sections: &[String]) -> String {
    let all =
        sections.is_empty() || sections.iter().any(|s| s == "all" || s == "everything" || s == "default");
    let wanted = |name: &str| all || sections.iter().any(|s| s == name);
    let snapshot = Snapshot::take(shared).await;
    let summary = snapshot.summary.unwrap_or_default();
    let status = &snapshot.node;
    let mut out = String::new();
    for section in SECTIONS.iter().filter(|s| wanted(s)) {
        let _ = write!(out, "# {}{}\r\n", section[..1].to_uppercase(), &section[1..]);
        let mut line = |k: &str, v: &dyn std::fmt::Display| {
            let _ = write!(out, "{k}:{v}\r\n");
        };
        match *section {
            "server" => {
                line("turnstile_version", &VERSION);
                line("redis_version", &"7.2.0");
                line("redis_mode", &"standalone");
                line("process_id", &std::process::id());
                line("tcp_port", &shared.resp_addr.port());
                line("uptime_in_seconds", &snapshot.uptime.as_secs());
            }
            "clients" => {
                line("connected_clients", &snapshot.open_connections());
                for (protocol, counts) in &snapshot.connections {
                    line(&format!("connected_clients_{}", protocol.as_str()), &counts.open);
                }
                line("blocked_clients", &snapshot.blocked);
                line("flow_clients", &snapshot.in_flow);
                line("maxclients", &snapshot.max_clients);
                line("sessions", &summary.sessions);
            }
            "memory" => {
                line("used_memory", &snapshot.resident_bytes.unwrap_or(0));
                line("used_memory_payload", &snapshot.payload_bytes);
                line("max_memory", &snapshot.max_memory);
            }
            "persistence" => {
                line("fsync", &format!("{:?}", shared.fsync).to_lowercase());
                if let Some(j) = &snapshot.journal {
                    line("fsyncs", &j.fsyncs);
                    line("fsyncs_delayed", &j.delayed_fsyncs);
                    line("journal_appends", &j.appends);
                    line("journal_batches", &j.batches);
                    line("journal_bytes", &j.bytes);
                    line("journal_segments", &j.segments);
                    line("journal_log_bytes", &j.log_bytes);
                    line(
                        "group_commit_avg_appends",
                        &format!("{:.2}", j.appends as f64 / j.batches.max(1) as f64),
                    );
                    line("group_commit_max_appends", &j.max_batch_appends);
                    line("fsync_avg_us", &(j.fsync_nanos_total / j.fsyncs.max(1) / 1_000));
                    line("fsync_max_us", &(j.fsync_nanos_max / 1_000));
                }
                line("journal_poisoned", &u8::from(snapshot.journal_poisoned));
                line("snapshot_index", &opt(status.snapshot_index));
            }
            "stats" => {
                line("total_connections_received", &snapshot.connections_received());
                line("total_commands_processed", &snapshot.commands);
                line("rejected_connections", &snapshot.connections_refused());
                for counter in COUNTERS {
                    line(counter.name, &(counter.value)(&snapshot));
                }
                line("flow_time_ms", &snapshot.flow_time.as_millis());
            }
            "locks" => {
                line("locks", &summary.locks);
                line("holds", &summary.holds);
                line("lock_waiters", &summary.lock_waiters);
                line("last_fencing_token", &summary.last_token);
            }
            "queues" => {
                line("queues", &summary.queues);
                line("messages", &summary.messages);
                line("keys", &summary.keys);
                line("timers", &summary.timers);
            }
            "raft" => {
                line("node_id", &status.node_id);
                line("cluster_id", &turnstile_raft::format_cluster_id(shared.cluster_id));
                line("term", &status.term);
                line("leader", &status.leader.map_or("none".to_owned(), |l| l.to_string()));
                line("role", &status.role);
                let members: Vec<String> = status.members.iter().map(u64::to_string).collect();
                line("members", &members.join(","));
                line("last_log_index", &opt(status.last_log_index));
                line("committed_index", &opt(status.committed_index));
                line("applied_index", &opt(status.applied_index));
                line("entries_proposed", &status.entries_proposed);
                line("commands_proposed", &status.commands_proposed);
                line("largest_batch", &status.largest_batch);
                // Per member, as the leader sees its replication (figures only on the leader).
                for m in &snapshot.cluster.members {
                    let value = format!(
                        "addr={},role={},matched={},lag={},last_contact_ms={}",
                        m.addr,
                        m.role,
                        opt(m.matched_index),
                        opt(m.lag),
                        opt(m.last_contact_ms)
                    );
                    line(&format!("member_{}", m.id), &value);
                }
            }
            _ => {}
        }
        out.push_str("\r\n");
    }
    out
}

fn opt(v: Option<u64>) -> String {
    v.map_or("none".to_owned(), |v| v.to_string())
}
