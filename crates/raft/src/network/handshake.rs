//! The handshake: before anything else, both ends make sure they are the two nodes of the same
//! cluster that the connecting node meant.
//!
//! ```text
//!  connecting node                                   listener
//!  Hello { cluster_id, from, to, kind } ───────────►  check: same cluster? to == me? from != me?
//!                                       ◄───────────  Welcome { cluster_id, node_id } | Refused(why)
//!  check: same cluster? node_id == to?
//! ```
//!
//! A node given a wrong address must never replicate to the wrong node, or to itself (openraft
//! panics when a leader receives its own appends). So the listener refuses a hello meant for
//! another node, from another cluster, or from itself; and the connecting node checks the
//! welcome too, so a listener that does not check is caught as well. Both sides log why.

use std::fmt;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::error::TransportError;
use super::message::{ConnectionKind, Hello, HelloReply, Refusal};
use super::wire::{self, FrameReader, MAX_HELLO_FRAME, WireError};

/// A refused handshake, as the connecting node reports it: the address it dialed and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub addr: String,
    pub refusal: Refusal,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = &self.addr;
        match self.refusal {
            Refusal::WrongNode { listener, wanted } => {
                write!(f, "peer at {addr} is node {listener}, not node {wanted}")
            }
            Refusal::ClusterMismatch { listener, connecting } => write!(
                f,
                "cluster id mismatch: peer at {addr} is in cluster {listener}, this node in cluster {connecting}"
            ),
            Refusal::SelfConnection { node } => {
                write!(f, "peer at {addr} is this node itself (node {node}): a peer address points back here")
            }
        }
    }
}

/// The listener's check of a hello. A node that asks to join knows neither the cluster nor the
/// node it dialed: only that it is not this node is checked.
pub fn check(hello: &Hello, cluster_id: u64, self_id: u64) -> Result<(), Refusal> {
    if hello.kind == ConnectionKind::Join {
        return if hello.from == self_id { Err(Refusal::SelfConnection { node: self_id }) } else { Ok(()) };
    }
    if hello.cluster_id != cluster_id {
        return Err(Refusal::ClusterMismatch { listener: cluster_id, connecting: hello.cluster_id });
    }
    if hello.from == self_id {
        return Err(Refusal::SelfConnection { node: self_id });
    }
    if hello.to != self_id {
        return Err(Refusal::WrongNode { listener: self_id, wanted: hello.to });
    }
    Ok(())
}

/// The connecting node's check of the listener's welcome: the same rules, from its side.
fn check_welcome(hello: &Hello, cluster_id: u64, node_id: u64) -> Result<(), Refusal> {
    if hello.kind == ConnectionKind::Join {
        return if node_id == hello.from { Err(Refusal::SelfConnection { node: node_id }) } else { Ok(()) };
    }
    if cluster_id != hello.cluster_id {
        return Err(Refusal::ClusterMismatch { listener: cluster_id, connecting: hello.cluster_id });
    }
    if node_id == hello.from {
        return Err(Refusal::SelfConnection { node: node_id });
    }
    if node_id != hello.to {
        return Err(Refusal::WrongNode { listener: node_id, wanted: hello.to });
    }
    Ok(())
}

/// A refusal as the listener logs it.
pub fn listener_view(refusal: &Refusal, hello: &Hello) -> String {
    match *refusal {
        Refusal::WrongNode { listener, wanted } => {
            format!(
                "node {} dialed node {wanted} but reached node {listener}: its address for node {wanted} is wrong",
                hello.from
            )
        }
        Refusal::ClusterMismatch { listener, connecting } => {
            format!(
                "cluster id mismatch: node {} is in cluster {connecting}, this node in cluster {listener}",
                hello.from
            )
        }
        Refusal::SelfConnection { node } => {
            format!("node {node} connected to itself: one of its peer addresses is its own")
        }
    }
}

/// The connecting side: sends `hello` and waits for the welcome; returns the listener's cluster
/// id. The caller bounds the time.
pub async fn greet<R, W>(
    frames: &mut FrameReader<R>,
    write: &mut W,
    hello: &Hello,
    addr: &str,
) -> Result<u64, TransportError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let node = hello.to;
    let wire = |source: WireError| TransportError::Wire { node, addr: addr.to_string(), source };
    let frame = wire::encode(hello, MAX_HELLO_FRAME).map_err(wire)?;
    write.write_all(&frame).await.map_err(|e| wire(e.into()))?;
    let reply = frames.next::<HelloReply>().await.map_err(wire)?;
    let refusal = match reply {
        None => return Err(TransportError::Closed { node, addr: addr.to_string() }),
        Some(HelloReply::Welcome { cluster_id, node_id }) => {
            match check_welcome(hello, cluster_id, node_id) {
                Ok(()) => return Ok(cluster_id),
                Err(refusal) => refusal,
            }
        }
        Some(HelloReply::Refused(refusal)) => refusal,
    };
    Err(TransportError::Refused(Refused { addr: addr.to_string(), refusal }))
}

/// Why the listener side of a handshake ended the connection.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Refused; the text is for the listener's log.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("closed before saying hello")]
    Closed,
}

/// The listening side: reads the hello, checks it and answers. Returns the accepted hello. The
/// caller bounds the time; `frames` should still have the small pre-handshake limit.
pub async fn answer<R, W>(
    frames: &mut FrameReader<R>,
    write: &mut W,
    cluster_id: u64,
    self_id: u64,
) -> Result<Hello, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let hello: Hello = frames.next().await?.ok_or(HandshakeError::Closed)?;
    let (reply, outcome) = match check(&hello, cluster_id, self_id) {
        Ok(()) => (HelloReply::Welcome { cluster_id, node_id: self_id }, Ok(hello)),
        Err(refusal) => {
            let why = listener_view(&refusal, &hello);
            (HelloReply::Refused(refusal), Err(HandshakeError::Refused(why)))
        }
    };
    let frame = wire::encode(&reply, MAX_HELLO_FRAME)?;
    write.write_all(&frame).await.map_err(WireError::from)?;
    outcome
}

/// Which nodes a connection joins, read off its first bytes without taking them: the connecting
/// node's hello names `(from, to)`. `None` until a whole hello has arrived, and for bytes that are
/// not one (the caller bounds how long it waits and how much it reads, as [`answer`] does).
///
/// For whatever sits between two nodes and must tell the pairs apart, such as the fault-injecting
/// proxy of the cluster tests: every node dials the same address for a peer, so the hello is the
/// only place the connecting node is named.
pub fn peek_hello(bytes: &[u8]) -> Option<(u64, u64)> {
    let frame = bytes.get(..bytes.len().min(4 + MAX_HELLO_FRAME))?;
    let hello: Hello = wire::decode(&mut bytes::BytesMut::from(frame), MAX_HELLO_FRAME).ok()??;
    Some((hello.from, hello.to))
}

/// For log lines: `node 3 (127.0.0.1:50212)`.
pub fn describe(hello: &Hello, peer: SocketAddr) -> String {
    format!("node {} ({peer}, {:?} connection)", hello.from, hello.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: u64 = 42;

    fn hello(from: u64, to: u64) -> Hello {
        Hello { cluster_id: CLUSTER, from, to, kind: ConnectionKind::Control }
    }

    #[test]
    fn listener_accepts_the_node_it_is() {
        assert_eq!(check(&hello(1, 2), CLUSTER, 2), Ok(()));
    }

    #[test]
    fn listener_refuses_another_cluster_another_node_and_itself() {
        let other = Hello { cluster_id: 7, ..hello(1, 2) };
        assert_eq!(
            check(&other, CLUSTER, 2),
            Err(Refusal::ClusterMismatch { listener: CLUSTER, connecting: 7 })
        );
        assert_eq!(check(&hello(1, 2), CLUSTER, 3), Err(Refusal::WrongNode { listener: 3, wanted: 2 }));
        // Node 2 was given its own address for a peer: it reached itself.
        assert_eq!(check(&hello(2, 3), CLUSTER, 2), Err(Refusal::SelfConnection { node: 2 }));
        assert_eq!(check(&hello(2, 2), CLUSTER, 2), Err(Refusal::SelfConnection { node: 2 }));
    }

    #[test]
    fn connecting_node_checks_the_welcome_too() {
        assert_eq!(check_welcome(&hello(1, 2), CLUSTER, 2), Ok(()));
        assert_eq!(
            check_welcome(&hello(1, 2), CLUSTER, 3),
            Err(Refusal::WrongNode { listener: 3, wanted: 2 })
        );
        assert_eq!(check_welcome(&hello(1, 2), CLUSTER, 1), Err(Refusal::SelfConnection { node: 1 }));
        assert_eq!(
            check_welcome(&hello(1, 2), 5, 2),
            Err(Refusal::ClusterMismatch { listener: 5, connecting: CLUSTER })
        );
    }

    #[test]
    fn refusals_read_clearly_on_both_sides() {
        let refused = |refusal| Refused { addr: "127.0.0.1:7391".into(), refusal }.to_string();
        assert_eq!(
            refused(Refusal::WrongNode { listener: 3, wanted: 2 }),
            "peer at 127.0.0.1:7391 is node 3, not node 2"
        );
        assert_eq!(
            refused(Refusal::ClusterMismatch { listener: 9, connecting: 42 }),
            "cluster id mismatch: peer at 127.0.0.1:7391 is in cluster 9, this node in cluster 42"
        );
        assert!(refused(Refusal::SelfConnection { node: 1 }).contains("is this node itself (node 1)"));
        assert_eq!(
            listener_view(&Refusal::WrongNode { listener: 3, wanted: 2 }, &hello(1, 2)),
            "node 1 dialed node 2 but reached node 3: its address for node 2 is wrong"
        );
    }

    /// Both halves over an in-memory pipe: node 1 greets with `hello`, node `listener` answers.
    async fn shake(
        hello: Hello,
        listener: u64,
    ) -> (Result<u64, TransportError>, Result<Hello, HandshakeError>) {
        let (client, server) = tokio::io::duplex(1024);
        let (client_read, mut client_write) = tokio::io::split(client);
        let (server_read, mut server_write) = tokio::io::split(server);
        let answering = tokio::spawn(async move {
            let mut frames = FrameReader::new(server_read, MAX_HELLO_FRAME);
            answer(&mut frames, &mut server_write, CLUSTER, listener).await
        });
        let mut frames = FrameReader::new(client_read, MAX_HELLO_FRAME);
        let greeted = greet(&mut frames, &mut client_write, &hello, "127.0.0.1:7391").await;
        (greeted, answering.await.unwrap())
    }

    /// The pair is read from a whole hello, with or without bytes after it; a part of one, a
    /// frame of another wire version or bytes that are not a hello give nothing.
    #[test]
    fn a_hello_names_its_pair_to_whoever_peeks() {
        let mut frame = wire::encode(&hello(3, 2), MAX_HELLO_FRAME).unwrap();
        assert_eq!(peek_hello(&frame), Some((3, 2)));
        for cut in 0..frame.len() {
            assert_eq!(peek_hello(&frame[..cut]), None, "cut at {cut}");
        }
        frame.extend_from_slice(b"the first request");
        assert_eq!(peek_hello(&frame), Some((3, 2)));
        frame[4] = wire::VERSION + 1;
        assert_eq!(peek_hello(&frame), None);
        assert_eq!(peek_hello(b"*1\r\n$4\r\nPING\r\n"), None);
        assert_eq!(peek_hello(&[0xff; 64]), None);
    }

    #[tokio::test]
    async fn both_sides_of_a_refused_handshake() {
        let (greeted, answered) = shake(hello(1, 2), 3).await;
        let err = greeted.unwrap_err();
        assert_eq!(err.to_string(), "peer at 127.0.0.1:7391 is node 3, not node 2");
        assert!(err.is_unreachable());
        match answered {
            Err(HandshakeError::Refused(why)) => {
                assert!(why.contains("dialed node 2 but reached node 3"), "{why}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_joining_node_learns_the_cluster_id_and_may_not_join_itself() {
        let join = |from| Hello { cluster_id: 0, from, to: 0, kind: ConnectionKind::Join };
        let (greeted, answered) = shake(join(4), 2).await;
        assert_eq!(greeted.unwrap(), CLUSTER);
        assert_eq!(answered.unwrap(), join(4));
        let (greeted, _) = shake(join(2), 2).await;
        assert!(greeted.unwrap_err().to_string().contains("is this node itself (node 2)"));
    }

    #[tokio::test]
    async fn an_accepted_handshake() {
        let (greeted, answered) = shake(hello(1, 2), 2).await;
        assert_eq!(greeted.unwrap(), CLUSTER);
        assert_eq!(answered.unwrap(), hello(1, 2));
    }
}
