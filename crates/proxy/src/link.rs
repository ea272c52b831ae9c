//! One proxied connection, once it has said which pair of nodes it joins: two pumps, one per
//! direction, each applying the pair's rule to every chunk and again whenever the rules change.
//!
//! ```text
//!  node `from` ── client ─► pump ─(rule)─► upstream ──► node `to`
//!              ◄─────────── pump ◄─(rule)─ upstream ◄──
//!                 each pump: read ─► queue of (due, chunk) ─► write when due
//! ```
//!
//! Delays are a queue, not a sleep before each write: a pump keeps reading while earlier chunks
//! wait, so a delay adds latency without also capping the bytes per second.
//!
//! A black hole discards bytes, and TCP never loses bytes in the middle of a stream. So when the
//! hole lifts, a connection that lost some is closed rather than passed on: passing what follows
//! would hand a node a stream no real network produces (a frame without its start). The node sees
//! a closed connection and opens a new one, as after a real partition long enough to time out.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::faults::{Counters, Faults, Rule};

/// The most bytes one direction holds while they wait out a delay; past it, it stops reading.
const MAX_QUEUED: usize = 4 << 20;

/// The most bytes read at once.
const CHUNK: usize = 16 << 10;

/// The pair a connection joins and where its rule comes from.
#[derive(Debug)]
pub(crate) struct Pair {
    pub(crate) from: u64,
    pub(crate) to: u64,
    pub(crate) faults: Faults,
    pub(crate) counters: Arc<Counters>,
}

impl Pair {
    pub(crate) fn rule(&self) -> Rule {
        self.faults.rule(self.from, self.to)
    }
}

/// How one direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Its reader closed and everything queued was written: the close was passed on, and the other
    /// direction may still be sending.
    Closed,
    /// A rule, an error or a lost byte ended it: the whole connection goes.
    Cut,
}

/// Forwards `client` ⇄ `upstream` under the pair's rule, starting with `hello` (the bytes read to
/// learn the pair) towards the upstream, until both sides closed or a rule cut the connection.
pub(crate) async fn forward(client: TcpStream, upstream: TcpStream, hello: Vec<u8>, pair: &Pair) {
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let up = pump(client_read, upstream_write, hello, pair);
    let down = pump(upstream_read, client_write, Vec::new(), pair);
    tokio::pin!(up, down);
    // Dropping the other pump's future closes its halves.
    tokio::select! {
        ended = &mut up => {
            if ended == Ended::Closed {
                (&mut down).await;
            }
        }
        ended = &mut down => {
            if ended == Ended::Closed {
                (&mut up).await;
            }
        }
    }
}

/// A connection that came while its pair was black-holed: nothing goes anywhere (no upstream was
/// opened), and since its hello was lost it ends once the hole lifts or it closes.
pub(crate) async fn swallow(mut client: TcpStream, hello: Vec<u8>, pair: &Pair) {
    let mut rules = pair.faults.watch();
    Counters::add(&pair.counters.bytes_discarded, hello.len());
    let mut buf = vec![0u8; CHUNK];
    loop {
        // Read after subscribing, so a change made since the caller looked is not missed.
        match pair.rule() {
            Rule::BlackHole => {}
            Rule::Drop => return Counters::add(&pair.counters.dropped, 1),
            Rule::Pass | Rule::Delay(_) => return Counters::add(&pair.counters.closed_after_loss, 1),
        }
        tokio::select! {
            read = client.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => Counters::add(&pair.counters.bytes_discarded, n),
            },
            changed = rules.changed() => {
                if changed.is_err() {
                    return;
                }
                rules.borrow_and_update();
            }
        }
    }
}

/// One direction: reads chunks from `read`, queues them with the time each is due (now, or after
/// a delay), writes each to `write` when due, and re-reads the rule on every change.
async fn pump<R, W>(mut read: R, mut write: W, first: Vec<u8>, pair: &Pair) -> Ended
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut rules = pair.faults.watch();
    let mut rule = pair.rule();
    let mut queue = Queue::default();
    let mut lost = false;
    let mut eof = false;
    if !first.is_empty() {
        lost |= queue.admit(first, rule, &pair.counters);
    }
    let mut buf = vec![0u8; CHUNK];
    loop {
        if eof && queue.is_empty() {
            let _ = write.shutdown().await;
            return Ended::Closed;
        }
        let due = queue.due();
        tokio::select! {
            read = read.read(&mut buf), if !eof && queue.bytes < MAX_QUEUED => match read {
                // A black hole would swallow the close too; ending the connection instead keeps a
                // closed node's connections from piling up in the proxy.
                Ok(0) if rule == Rule::BlackHole => return Ended::Cut,
                Ok(0) => eof = true,
                Ok(n) => lost |= queue.admit(buf[..n].to_vec(), rule, &pair.counters),
                Err(_) => return Ended::Cut,
            },
            () = sleep_until(due), if due.is_some() => {
                let chunk = queue.pop();
                if write.write_all(&chunk).await.is_err() {
                    return Ended::Cut;
                }
                Counters::add(&pair.counters.bytes_passed, chunk.len());
            },
            changed = rules.changed() => {
                if changed.is_err() {
                    return Ended::Cut;
                }
                rules.borrow_and_update();
                rule = pair.rule();
                match rule {
                    Rule::Drop => {
                        Counters::add(&pair.counters.dropped, 1);
                        return Ended::Cut;
                    }
                    Rule::BlackHole => lost |= queue.discard(&pair.counters),
                    Rule::Pass | Rule::Delay(_) if lost => {
                        Counters::add(&pair.counters.closed_after_loss, 1);
                        return Ended::Cut;
                    }
                    Rule::Pass | Rule::Delay(_) => {}
                }
            }
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Chunks waiting to be written, each with the time it is due.
#[derive(Debug, Default)]
struct Queue {
    chunks: VecDeque<(Instant, Vec<u8>)>,
    bytes: usize,
}

impl Queue {
    /// Takes a chunk that was just read, under `rule`; whether it was discarded.
    fn admit(&mut self, chunk: Vec<u8>, rule: Rule, counters: &Counters) -> bool {
        let delay = match rule {
            Rule::Pass => Duration::ZERO,
            Rule::Delay(delay) => {
                Counters::add(&counters.chunks_delayed, 1);
                delay
            }
            // A pump ends as soon as its pair is dropped; a chunk read in between goes nowhere.
            Rule::BlackHole | Rule::Drop => {
                Counters::add(&counters.bytes_discarded, chunk.len());
                return true;
            }
        };
        self.bytes += chunk.len();
        self.chunks.push_back((Instant::now() + delay, chunk));
        false
    }

    /// The time the oldest chunk is due; chunks are written in the order they came.
    fn due(&self) -> Option<Instant> {
        self.chunks.front().map(|(due, _)| *due)
    }

    fn pop(&mut self) -> Vec<u8> {
        let Some((_, chunk)) = self.chunks.pop_front() else { return Vec::new() };
        self.bytes -= chunk.len();
        chunk
    }

    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Drops every chunk still waiting (a black hole came down on them); whether there were any.
    fn discard(&mut self, counters: &Counters) -> bool {
        Counters::add(&counters.bytes_discarded, self.bytes);
        let lost = !self.chunks.is_empty();
        self.chunks.clear();
        self.bytes = 0;
        lost
    }
}
