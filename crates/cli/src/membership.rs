//! `turnstile cluster status | add | remove | transfer-leader`: the cluster's members and changes
//! to them, through any node (a follower has the leader run them).

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Map, Value};
use turnstile_client::{Client, Cmd, Frame, map_reply};

use crate::output;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// The members, their roles, how far each has caught up and when it last answered the
    /// leader; the term, the leader, the commit and applied index.
    Status,
    /// Adds a node: a learner until it has caught up, then a voter. The new node must be running
    /// (started with `--node-id ID --raft-addr ADDR --join ...`, or with no data yet).
    Add {
        /// ID=HOST:PORT: the new node's id (never used in this cluster before) and Raft address.
        #[arg(value_parser = parse_member)]
        member: (u64, String),
    },
    /// Removes a node and retires its id for good.
    Remove { id: u64 },
    /// Makes another voter the leader, e.g. before restarting the leader.
    TransferLeader { id: u64 },
}

fn parse_member(text: &str) -> Result<(u64, String), String> {
    let (id, addr) = text.split_once('=').ok_or_else(|| format!("{text:?} is not ID=HOST:PORT"))?;
    let id = id.trim().parse().map_err(|_| format!("{id:?} is not a node id"))?;
    Ok((id, addr.trim().to_string()))
}

pub async fn cluster(client: &Client, command: ClusterCommand, json: bool) -> anyhow::Result<ExitCode> {
    let cmd = match command {
        ClusterCommand::Status => Cmd::new("CLUSTER.STATUS"),
        ClusterCommand::Add { member: (id, addr) } => Cmd::new("CLUSTER.ADD").arg(id).arg(addr),
        ClusterCommand::Remove { id } => Cmd::new("CLUSTER.REMOVE").arg(id),
        ClusterCommand::TransferLeader { id } => Cmd::new("CLUSTER.TRANSFER").arg(id),
    };
    let status = status_json(client.call(cmd).await?)?;
    output::print(json, &status, || table(&status));
    Ok(ExitCode::SUCCESS)
}

/// The status reply as JSON (a map, or RESP2's flat array of pairs; each member likewise).
fn status_json(frame: Frame) -> anyhow::Result<Value> {
    let mut status = Map::new();
    for (key, value) in map_reply(frame)? {
        let value = match value {
            Frame::Array(members) if key == "members" => Value::Array(
                members.into_iter().map(|m| Ok(Value::Object(fields(m)?))).collect::<anyhow::Result<_>>()?,
            ),
            other => scalar(other),
        };
        status.insert(key, value);
    }
    Ok(Value::Object(status))
}

fn fields(frame: Frame) -> anyhow::Result<Map<String, Value>> {
    Ok(map_reply(frame)?.into_iter().map(|(k, v)| (k, scalar(v))).collect())
}

fn scalar(frame: Frame) -> Value {
    match frame {
        Frame::Integer(n) => Value::from(n),
        Frame::Null | Frame::NullArray => Value::Null,
        Frame::Bulk(b) => Value::String(String::from_utf8_lossy(&b).into_owned()),
        Frame::Simple(s) => Value::String(s),
        other => Value::String(format!("{other:?}")),
    }
}

/// The status as people read it: a line about the cluster, then one per member.
fn table(status: &Value) -> String {
    let field = |v: &Value, k: &str| match &v[k] {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = format!(
        "leader {}  term {}  commit {}  applied {}  (answered by node {})\n",
        field(status, "leader"),
        field(status, "term"),
        field(status, "commit_index"),
        field(status, "applied_index"),
        field(status, "node"),
    );
    out.push_str(&format!(
        "{:>4}  {:<22} {:<8} {:>10} {:>8} {:>14}\n",
        "ID", "ADDR", "ROLE", "MATCHED", "LAG", "LAST CONTACT"
    ));
    for m in status["members"].as_array().into_iter().flatten() {
        let contact = match &m["last_contact_ms"] {
            Value::Number(n) => format!("{n} ms ago"),
            _ => "-".to_string(),
        };
        out.push_str(&format!(
            "{:>4}  {:<22} {:<8} {:>10} {:>8} {:>14}\n",
            field(m, "id"),
            field(m, "addr"),
            field(m, "role"),
            field(m, "matched_index"),
            field(m, "lag"),
            contact
        ));
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_as_id_and_address() {
        assert_eq!(parse_member("4=127.0.0.1:7411").unwrap(), (4, "127.0.0.1:7411".to_string()));
        assert!(parse_member("127.0.0.1:7411").unwrap_err().contains("not ID=HOST:PORT"));
        assert!(parse_member("x=127.0.0.1:7411").unwrap_err().contains("not a node id"));
    }
}
