//! What the server says about itself: `INFO`, `HELLO`, `COMMAND`.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use turnstile_raft::NodeError;
use turnstile_resp::cmd::CommandQuery;
use turnstile_resp::{Frame, Protocol};

use crate::server::Shared;

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

/// `COMMAND` and its subcommands, answered from the command table the parser uses.
pub fn command(query: &CommandQuery) -> Frame {
    turnstile_resp::cmd::command_reply(query)
}

const SECTIONS: [&str; 8] =
    ["server", "clients", "memory", "persistence", "stats", "locks", "queues", "raft"];

/// The `INFO` text for the named sections (all of them when none or `all`/`everything` is named).
pub async fn render(shared: &Shared, sections: &[String]) -> Result<String, NodeError> {
    let all =
        sections.is_empty() || sections.iter().any(|s| s == "all" || s == "everything" || s == "default");
    let wanted = |name: &str| all || sections.iter().any(|s| s == name);
    let summary = shared.node.read(|state| state.summary()).await?;
    let status = shared.node.status();
    let stats = &shared.stats;
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
                line("uptime_in_seconds", &shared.started.elapsed().as_secs());
            }
            "clients" => {
                line("connected_clients", &stats.connected_clients.load(Ordering::Relaxed));
                line("blocked_clients", &stats.blocked_clients.load(Ordering::Relaxed));
                line("maxclients", &shared.max_clients);
                line("sessions", &summary.sessions);
            }
            "memory" => {
                line("used_memory", &resident_bytes().unwrap_or(0));
                line("used_memory_payload", &summary.payload_bytes);
                line("max_memory", &shared.max_memory);
            }
            "persistence" => {
                line("fsync", &format!("{:?}", shared.fsync).to_lowercase());
                if let Some(j) = shared.node.journal_stats() {
                    line("fsyncs", &j.fsyncs);
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
                line("snapshot_index", &opt(status.snapshot_index));
            }
            "stats" => {
                line("total_connections_received", &stats.connections.load(Ordering::Relaxed));
                line("total_commands_processed", &stats.commands.load(Ordering::Relaxed));
                line("rejected_connections", &stats.rejected.load(Ordering::Relaxed));
                line("rejected_pushes_oom", &stats.rejected_oom.load(Ordering::Relaxed));
                line("expired_holds", &shared.router.holds_expired.load(Ordering::Relaxed));
                line("expired_deliveries", &shared.router.deliveries_expired.load(Ordering::Relaxed));
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
                line("term", &status.term);
                line("leader", &status.leader.map_or("none".to_owned(), |l| l.to_string()));
                line("last_log_index", &opt(status.last_log_index));
                line("committed_index", &opt(status.committed_index));
                line("applied_index", &opt(status.applied_index));
                line("entries_proposed", &status.entries_proposed);
                line("commands_proposed", &status.commands_proposed);
                line("largest_batch", &status.largest_batch);
            }
            _ => {}
        }
        out.push_str("\r\n");
    }
    Ok(out)
}

fn opt(v: Option<u64>) -> String {
    v.map_or("none".to_owned(), |v| v.to_string())
}

/// The process's resident memory, from `/proc` (Linux); `None` elsewhere.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
