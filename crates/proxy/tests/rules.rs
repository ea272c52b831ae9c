//! Each rule at work on real TCP: echo servers stand in for nodes, and test clients say who they
//! are with a first line `FROM>TO`. Every wait is bounded; the only time asserted is the delay the
//! proxy promises to add, a lower bound it enforces itself.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use turnstile_proxy::{Faults, LinkStats, Proxy, Rule};

/// The bound on every wait; far more than any step needs.
const WAIT: Duration = Duration::from_secs(20);

/// `FROM>TO\n` names the pair.
fn identify(bytes: &[u8]) -> Option<(u64, u64)> {
    let line = std::str::from_utf8(&bytes[..bytes.iter().position(|&b| b == b'\n')?]).ok()?;
    let (from, to) = line.split_once('>')?;
    Some((from.parse().ok()?, to.parse().ok()?))
}

/// A stand-in for a node: echoes what it receives, and also sends whatever the test tells it to
/// on one of its connections (to show what the proxy does to bytes coming from the node's side).
struct Echo {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
    /// Each accepted connection's mouth, in the order they came.
    mouths: Arc<Mutex<Vec<mpsc::UnboundedSender<Vec<u8>>>>>,
}

impl Echo {
    async fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (received, accepted) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mouths = Arc::new(Mutex::new(Vec::new()));
        let echo =
            Echo { addr, received: received.clone(), accepted: accepted.clone(), mouths: mouths.clone() };
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                accepted.fetch_add(1, Ordering::SeqCst);
                let (mouth, mut said) = mpsc::unbounded_channel();
                mouths.lock().unwrap().push(mouth);
                let received = received.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        tokio::select! {
                            read = stream.read(&mut buf) => match read {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    received.fetch_add(n as u64, Ordering::SeqCst);
                                    if stream.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            },
                            Some(words) = said.recv() => {
                                if stream.write_all(&words).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        echo
    }

    /// Sends `words` on the `n`-th connection accepted.
    fn say(&self, n: usize, words: &[u8]) {
        self.mouths.lock().unwrap()[n].send(words.to_vec()).unwrap();
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Node 2 (an echo server) behind a proxy, in a cluster of nodes 1 to 3.
async fn node_2() -> (Faults, Echo, Proxy) {
    let faults = Faults::new(1..=3);
    let echo = Echo::start().await;
    let proxy =
        Proxy::start("127.0.0.1:0".parse().unwrap(), echo.addr, faults.clone(), identify).await.unwrap();
    (faults, echo, proxy)
}

/// Connects to `proxy` as node `from` dialing node `to`.
async fn connect(proxy: &Proxy, from: u64, to: u64) -> TcpStream {
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream.write_all(format!("{from}>{to}\n").as_bytes()).await.unwrap();
    stream
}

/// Reads exactly `n` bytes, within the wait.
async fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut got = vec![0u8; n];
    tokio::time::timeout(WAIT, stream.read_exact(&mut got)).await.expect("bytes within the wait").unwrap();
    got
}

/// Whether the peer closed `stream`: reads until the end (bytes before it do not matter).
async fn closed(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    match tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe)
        }
        Err(_) => false,
    }
}

/// Nothing has arrived on `stream` and it is still open.
fn silent_and_open(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(stream.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn pass_forwards_both_ways_in_order() {
    let (faults, echo, proxy) = node_2().await;
    assert_eq!(proxy.target(), echo.addr);
    let mut stream = connect(&proxy, 1, 2).await;
    for word in [&b"one "[..], b"two ", b"three"] {
        stream.write_all(word).await.unwrap();
    }
    assert_eq!(read_n(&mut stream, 4 + 13).await, b"1>2\none two three");
    echo.say(0, b"hi");
    assert_eq!(read_n(&mut stream, 2).await, b"hi", "bytes from the node's side pass too");
    let stats = faults.stats(1, 2);
    assert_eq!(stats.connections, 1);
    assert_eq!(stats.bytes_passed, 2 * 17 + 2);
    assert_eq!(faults.stats(2, 1), LinkStats::default(), "counted per directed pair");
}

#[tokio::test]
async fn drop_closes_open_connections_and_refuses_new_ones() {
    let (faults, echo, proxy) = node_2().await;
    let mut open = connect(&proxy, 1, 2).await;
    assert_eq!(read_n(&mut open, 4).await, b"1>2\n");
    let mut other_pair = connect(&proxy, 3, 2).await;
    assert_eq!(read_n(&mut other_pair, 4).await, b"3>2\n");

    faults.set(1, 2, Rule::Drop);
    assert!(closed(&mut open).await, "an open connection is closed");
    let mut new = connect(&proxy, 1, 2).await;
    assert!(closed(&mut new).await, "a new one is closed once it says who it is");
    assert_eq!(echo.accepted(), 2, "the refused one never reached the node");
    assert_eq!(faults.stats(1, 2).dropped, 2);

    other_pair.write_all(b"still").await.unwrap();
    assert_eq!(read_n(&mut other_pair, 5).await, b"still", "another pair is untouched");
    faults.heal();
    let mut again = connect(&proxy, 1, 2).await;
    assert_eq!(read_n(&mut again, 4).await, b"1>2\n");
}

#[tokio::test]
async fn black_hole_swallows_bytes_both_ways_then_closes_what_lost_bytes() {
    let (faults, echo, proxy) = node_2().await;
    let mut open = connect(&proxy, 1, 2).await;
    assert_eq!(read_n(&mut open, 4).await, b"1>2\n");
    let mut idle = connect(&proxy, 1, 2).await;
    assert_eq!(read_n(&mut idle, 4).await, b"1>2\n");
    let received = echo.received();

    faults.set(1, 2, Rule::BlackHole);
    open.write_all(b"into the hole").await.unwrap();
    until("the proxy swallowed the bytes", || faults.stats(1, 2).bytes_discarded >= 13).await;
    echo.say(0, b"from the node");
    until("the proxy swallowed the node's bytes too", || faults.stats(1, 2).bytes_discarded >= 13 + 13).await;
    assert_eq!(echo.received(), received, "nothing reached the node");
    assert!(silent_and_open(&open), "the connection is held open, silent");

    // A connection made meanwhile is swallowed whole: its hello never reaches the node.
    let accepted = echo.accepted();
    let mut late = connect(&proxy, 1, 2).await;
    until("the late hello is swallowed", || faults.stats(1, 2).connections == 3).await;
    assert!(silent_and_open(&late));
    assert_eq!(echo.accepted(), accepted);

    faults.heal();
    assert!(closed(&mut open).await, "bytes were lost on it: closed when the hole lifts");
    assert!(closed(&mut late).await, "its hello was lost: closed too");
    assert_eq!(faults.stats(1, 2).closed_after_loss, 2);
    idle.write_all(b"ok").await.unwrap();
    assert_eq!(read_n(&mut idle, 2).await, b"ok", "a connection that lost nothing goes on");
}

#[tokio::test]
async fn delay_holds_each_chunk_keeps_the_order_and_applies_to_open_connections() {
    let (faults, _echo, proxy) = node_2().await;
    let mut stream = connect(&proxy, 1, 2).await;
    assert_eq!(read_n(&mut stream, 4).await, b"1>2\n");

    let delay = Duration::from_millis(150);
    faults.set(1, 2, Rule::Delay(delay));
    for word in [&b"a"[..], b"b", b"c"] {
        stream.write_all(word).await.unwrap();
    }
    assert_eq!(read_n(&mut stream, 3).await, b"abc");
    // The proxy held chunks on the way in and again on the way back (counted, not timed).
    assert!(faults.stats(1, 2).chunks_delayed >= 2);
}

#[tokio::test]
async fn one_way_cuts_only_the_connections_one_node_opens() {
    let faults = Faults::new(1..=2);
    let (echo_1, echo_2) = (Echo::start().await, Echo::start().await);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let proxy_1 = Proxy::start(any, echo_1.addr, faults.clone(), identify).await.unwrap();
    let proxy_2 = Proxy::start(any, echo_2.addr, faults.clone(), identify).await.unwrap();

    faults.one_way(1, 2);
    let one_to_two = connect(&proxy_2, 1, 2).await;
    let mut two_to_one = connect(&proxy_1, 2, 1).await;
    two_to_one.write_all(b"reply").await.unwrap();
    assert_eq!(read_n(&mut two_to_one, 9).await, b"2>1\nreply", "2 still reaches 1");
    until("1's hello to 2 is swallowed", || faults.stats(1, 2).bytes_discarded >= 4).await;
    assert!(silent_and_open(&one_to_two), "1 no longer reaches 2");
    assert_eq!(echo_2.accepted(), 0);
    assert_eq!(faults.stats(2, 1).bytes_discarded, 0);
}

#[tokio::test]
async fn a_connection_that_never_says_who_it_is_is_closed() {
    let (_faults, echo, proxy) = node_2().await;
    let mut stranger = TcpStream::connect(proxy.addr()).await.unwrap();
    // No line end in the proxy's whole hello allowance: it gives up.
    let _ = stranger.write_all(&vec![b'x'; 80 << 10]).await;
    assert!(closed(&mut stranger).await);
    assert_eq!(echo.accepted(), 0);
}

#[tokio::test]
async fn dropping_the_proxy_closes_its_connections() {
    let (_faults, _echo, proxy) = node_2().await;
    let mut stream = connect(&proxy, 3, 2).await;
    assert_eq!(read_n(&mut stream, 4).await, b"3>2\n");
    drop(proxy);
    assert!(closed(&mut stream).await);
}
