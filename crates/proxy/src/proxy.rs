//! [`Proxy`]: the listener in front of one node, which learns the pair each connection joins from
//! its first bytes and hands it to `link.rs` under that pair's rule.
//!
//! ```text
//!  accept ─► read until `identify` names (from, to) ─► rule(from, to)
//!              (bounded: IDENTIFY_TIMEOUT, MAX_HELLO)    ├ Drop      ─► close
//!                                                       ├ BlackHole ─► swallow (no upstream)
//!                                                       └ Pass/Delay ─► connect target ─► forward
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::faults::{Counters, Faults, Rule};
use crate::link::{Pair, forward, swallow};

/// Reads which nodes a connection joins, `(from, to)`, off the bytes it sent first: `None` until
/// they say (the proxy reads more and asks again). For Turnstile's nodes that is
/// `turnstile_raft::peek_hello`; a test can use any first line it likes.
pub type Identify = fn(&[u8]) -> Option<(u64, u64)>;

/// How long a new connection has to say who it is. A node sends its hello as soon as it connects.
const IDENTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// The most bytes read while waiting for `identify` to name the pair.
const MAX_HELLO: usize = 64 << 10;

/// How long connecting to the node behind the proxy may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A proxy in front of one node's listener. Dropping it stops it and closes every connection it
/// carries.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on `listen` (port 0: any free one) and forwards each connection to `target` under
    /// the rules of `faults`. Must be called within a tokio runtime, which then runs the proxy.
    pub async fn start(
        listen: SocketAddr,
        target: SocketAddr,
        faults: Faults,
        identify: Identify,
    ) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(accept(listener, target, faults, identify));
        Ok(Proxy { addr, target, task })
    }

    /// Where the proxy listens: the address the other nodes are given for this node.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node's own listener, where connections are forwarded.
    pub fn target(&self) -> SocketAddr {
        self.target
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The accept task owns the connections' tasks: aborting it aborts them.
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, faults: Faults, identify: Identify) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    connections.spawn(serve(client, target, faults.clone(), identify));
                }
                // Out of file descriptors, most likely: try again once some are closed.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// One accepted connection, from its first byte to its close.
async fn serve(mut client: TcpStream, target: SocketAddr, faults: Faults, identify: Identify) {
    let _ = client.set_nodelay(true);
    let Ok(Some((hello, (from, to)))) =
        tokio::time::timeout(IDENTIFY_TIMEOUT, read_hello(&mut client, identify)).await
    else {
        return;
    };
    let pair = Pair { from, to, counters: faults.counters(from, to), faults };
    Counters::add(&pair.counters.connections, 1);
    match pair.rule() {
        Rule::Drop => return Counters::add(&pair.counters.dropped, 1),
        Rule::BlackHole => return swallow(client, hello, &pair).await,
        Rule::Pass | Rule::Delay(_) => {}
    }
    let Ok(Ok(upstream)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await else {
        // The node is down: the connecting node sees its connection closed, as it would have seen
        // its connect refused.
        return;
    };
    let _ = upstream.set_nodelay(true);
    forward(client, upstream, hello, &pair).await;
}

/// Reads until `identify` names the pair; the bytes read so far (to be forwarded) and the pair.
async fn read_hello(client: &mut TcpStream, identify: Identify) -> Option<(Vec<u8>, (u64, u64))> {
    let mut hello = Vec::with_capacity(256);
    let mut buf = [0u8; 4096];
    while hello.len() < MAX_HELLO {
        let n = client.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        hello.extend_from_slice(&buf[..n]);
        if let Some(pair) = identify(&hello) {
            return Some((hello, pair));
        }
    }
    None
}
