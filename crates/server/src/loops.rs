//! Connection loops: a few threads, each a current-thread runtime that owns a share of the plain
//! RESP connections, so a round of the loop hands the log one message for all the commands its
//! connections read, and gets one message back per log entry ([`Node::run_connection_loop`]).
//!
//! ```text
//!  accept loop (shared runtime) ─ plain socket, round robin ─► loop 1 … loop N (one thread each)
//!                                                                │ connection tasks, flusher,
//!                                                                ▼ dispatcher
//!                                                           the log (batcher, openraft, apply)
//! ```
//!
//! TLS connections, AMQP and HTTP stay on the shared runtime.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::sync::oneshot;
use turnstile_raft::Node;
use turnstile_tls::MaybeTls;

use crate::listener::{Admitted, Slot};

/// The running connection loops.
#[derive(Debug)]
pub struct Loops {
    loops: Vec<Loop>,
    next: AtomicUsize,
}

#[derive(Debug)]
struct Loop {
    handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Loops {
    /// Starts `count` loops for `node`'s proposals; none when `count` is 0.
    pub fn start(count: usize, node: &Node) -> std::io::Result<Loops> {
        let mut loops = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let node = node.clone();
            let thread =
                std::thread::Builder::new().name(format!("turnstile-conn-{i}")).spawn(move || {
                    runtime.block_on(node.run_connection_loop(async {
                        let _ = stopped.await;
                    }));
                    // Connections still on the loop are dropped with the runtime.
                })?;
            loops.push(Loop { handle, stop: Some(stop), thread: Some(thread) });
        }
        Ok(Loops { loops, next: AtomicUsize::new(0) })
    }

    /// Serves an admitted connection: a plain one on the next loop, round robin; anything else
    /// (TLS), or any connection when there are no loops, on the caller's runtime.
    pub fn spawn<F, Fut>(&self, admitted: Admitted, serve: F)
    where
        F: FnOnce(Admitted) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Admitted { stream: MaybeTls::Plain(tcp), peer, tls, id, slot } = admitted else {
            tokio::spawn(serve(admitted));
            return;
        };
        if self.loops.is_empty() {
            tokio::spawn(serve(Admitted { stream: MaybeTls::Plain(tcp), peer, tls, id, slot }));
            return;
        }
        // Taken off this runtime's reactor, to be registered with the loop's.
        let std = match tcp.into_std() {
            Ok(std) => std,
            Err(e) => return tracing::warn!(%peer, error = %e, "could not hand a connection to a loop"),
        };
        let at = self.next.fetch_add(1, Ordering::Relaxed) % self.loops.len();
        self.loops[at].handle.spawn(async move {
            match adopt(std, peer, id, slot) {
                Ok(admitted) => serve(admitted).await,
                Err(e) => tracing::warn!(%peer, error = %e, "could not adopt a connection on its loop"),
            }
        });
    }
}

/// The connection, registered with the runtime this runs on.
fn adopt(std: std::net::TcpStream, peer: SocketAddr, id: u64, slot: Slot) -> std::io::Result<Admitted> {
    let tcp = tokio::net::TcpStream::from_std(std)?;
    Ok(Admitted { stream: MaybeTls::Plain(tcp), peer, tls: None, id, slot })
}

impl Drop for Loops {
    fn drop(&mut self) {
        for l in &mut self.loops {
            if let Some(stop) = l.stop.take() {
                let _ = stop.send(());
            }
        }
        // Not joined: this may run on a runtime's thread, which must not block. Each loop ends
        // as soon as it sees the stop.
        for l in &mut self.loops {
            drop(l.thread.take());
        }
    }
}
