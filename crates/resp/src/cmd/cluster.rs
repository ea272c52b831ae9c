//! Cluster commands: `CLUSTER.STATUS CLUSTER.ADD CLUSTER.REMOVE CLUSTER.TRANSFER`, what
//! `turnstile cluster` sends. Any node answers them: a follower has the leader run them.
//!
//! They are named with a dot, as Turnstile's own commands are, so that they never meet Redis
//! Cluster's `CLUSTER` command, which cluster-aware client libraries probe.

use super::spec::{Group, Spec, command as cmd, integer, string};
use super::{Action, Args, ClusterCmd, ConnCmd};
use crate::Frame;
use turnstile_core::Category as C;

/// The cluster commands, in the order the docs list them.
pub(super) const COMMANDS: &[Spec] = &[
    cmd("cluster.status", Group::Server, "The cluster as its leader sees it: each member's role, how far its log has caught up and when it last answered; the term, the leader, the commit and applied index.", status)
        .reply("a map: `node` (the node that answered), `leader`, `term`, `commit_index`, `applied_index`, `members` (each a map: `id`, `addr`, `role` — `leader`, `voter` or `learner` —, `matched_index`, `lag`, `last_contact_ms`)"),
    cmd("cluster.add", Group::Server, "Adds a node to the cluster: as a learner first, promoted to voter once it has caught up. Answers when it votes. One membership change at a time; a node id is never reused.", add)
        .args(&[integer("id", "the new node's id, never used in this cluster before"), string("addr", "HOST:PORT of its Raft listener (its `--raft-addr`)")])
        .reply("the status, as CLUSTER.STATUS")
        .errors(&["`ERR node id N is already a member of the cluster`", "`ERR node id N belonged to a node that left the cluster; ...`"])
        .acl(&[C::Admin, C::Dangerous]),
    cmd("cluster.remove", Group::Server, "Removes a node from the cluster and retires its id. Removing the leader makes another node lead.", remove)
        .args(&[integer("id", "the node's id")])
        .reply("the status, as CLUSTER.STATUS")
        .errors(&["`ERR node N is not a member of the cluster`", "`ERR node N is the only voter; a cluster needs one`"])
        .acl(&[C::Admin, C::Dangerous]),
    cmd("cluster.transfer", Group::Server, "Makes another voter the leader (before a rolling restart of the leader, say). Answers once it leads.", transfer)
        .args(&[integer("id", "the voter to lead")])
        .reply("the status, as CLUSTER.STATUS")
        .errors(&["`ERR node N is not a voter of the cluster`"])
        .acl(&[C::Admin, C::Dangerous]),
];

fn status(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    Ok(Action::Connection(ConnCmd::Cluster(ClusterCmd::Status)))
}

fn add(mut args: Args<'_>) -> Result<Action, Frame> {
    let id = args.uint()?;
    let addr = String::from_utf8(args.next()?.to_vec())
        .map_err(|_| Frame::error("ERR", "invalid address (not UTF-8)"))?;
    args.end()?;
    Ok(Action::Connection(ConnCmd::Cluster(ClusterCmd::Add { id, addr })))
}

fn remove(mut args: Args<'_>) -> Result<Action, Frame> {
    let id = args.uint()?;
    args.end()?;
    Ok(Action::Connection(ConnCmd::Cluster(ClusterCmd::Remove { id })))
}

fn transfer(mut args: Args<'_>) -> Result<Action, Frame> {
    let id = args.uint()?;
    args.end()?;
    Ok(Action::Connection(ConnCmd::Cluster(ClusterCmd::TransferLeader { id })))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{error_of, parse_line};
    use super::super::{Action, ClusterCmd, ConnCmd};

    fn cluster(line: &str) -> ClusterCmd {
        match parse_line(line) {
            Ok(Action::Connection(ConnCmd::Cluster(cmd))) => cmd,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn cluster_commands_parse_and_refuse_bad_arguments() {
        assert_eq!(cluster("CLUSTER.STATUS"), ClusterCmd::Status);
        assert_eq!(
            cluster("cluster.add 4 127.0.0.1:7411"),
            ClusterCmd::Add { id: 4, addr: "127.0.0.1:7411".into() }
        );
        assert_eq!(cluster("CLUSTER.REMOVE 2"), ClusterCmd::Remove { id: 2 });
        assert_eq!(cluster("CLUSTER.TRANSFER 3"), ClusterCmd::TransferLeader { id: 3 });
        assert_eq!(error_of("CLUSTER.ADD x 127.0.0.1:1"), "ERR value is not an integer or out of range");
        assert_eq!(error_of("CLUSTER.ADD 4"), "ERR wrong number of arguments for 'cluster.add' command");
        assert_eq!(
            error_of("CLUSTER.REMOVE 2 3"),
            "ERR wrong number of arguments for 'cluster.remove' command"
        );
        assert_eq!(
            error_of("CLUSTER.STATUS now"),
            "ERR wrong number of arguments for 'cluster.status' command"
        );
    }
}
