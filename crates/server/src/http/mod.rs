//! The HTTP listener: a JSON API for applications that cannot speak RESP, health checks,
//! Prometheus `/metrics`, the OpenAPI document and the dashboard.
//!
//! ```text
//!  request ─► axum router (built from api::ROUTES) ─► handler ─► Command / Query (same core types as RESP)
//!                                                      │            └─► node.propose / node.read
//!                                                      │  may wait? ─► session of its own (exec.rs), parked on the router
//!  response ◄── JSON body, or an error {code, message} with its HTTP status (error.rs)
//! ```
//!
//! Every route is one entry of [`api::routes`]: the router and `/openapi.json` are both built
//! from that table, so the document cannot drift from what is served.

mod api;
mod error;
mod exec;
mod openapi;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use turnstile_core::WaitEdge;

use crate::server::Shared;
use crate::shutdown::Shutdown;

pub use error::ApiError;

/// How many refused deadlocks the dashboard can show.
const RECENT_DEADLOCKS: usize = 20;

/// Serves HTTP until shutdown begins; requests in progress are finished.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, mut shutdown: Shutdown) {
    let listener = CountingListener { inner: listener, shared: shared.clone() };
    let app = router(shared);
    let service = app.into_make_service_with_connect_info::<Peer>();
    let served = axum::serve(listener, service).with_graceful_shutdown(async move { shutdown.recv().await });
    if let Err(e) = served.await {
        tracing::warn!(error = %e, "the HTTP listener stopped");
    }
}

fn router(shared: Arc<Shared>) -> Router {
    // A payload travels as a JSON string: allow for quoting on top of the largest payload.
    let body_limit = shared.limits.max_bulk_len.saturating_mul(2).saturating_add(64 * 1024);
    let mut router = Router::new();
    let mut operations: Operations = HashMap::new();
    for route in api::routes() {
        operations.entry(route.path).or_default().push((route.method, route.operation));
        router = router.route(route.path, route.handler);
    }
    let operations = Arc::new(operations);
    router
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(middleware::from_fn(move |request, next| measure(operations.clone(), request, next)))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(shared)
}

/// Route path → (method, operation name) of each route on it.
type Operations = HashMap<&'static str, Vec<(&'static str, &'static str)>>;

/// Counts every request in the metrics under its route's operation name (`unknown` for paths
/// that match no route, so the label set stays bounded).
async fn measure(operations: Arc<Operations>, request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().and_then(|path| operations.get(path.as_str()));
    let operation = matched
        .and_then(|ops| ops.iter().find(|(method, _)| *method == request.method().as_str()))
        .map_or("unknown", |(_, operation)| *operation);
    let started = Instant::now();
    let response = next.run(request).await;
    crate::metrics::record_command("http", operation, started.elapsed());
    response
}

/// The HTTP listener, counting connections for the metrics (`protocol="http"`) as the RESP
/// accept loop does.
struct CountingListener {
    inner: TcpListener,
    shared: Arc<Shared>,
}

impl axum::serve::Listener for CountingListener {
    type Io = CountedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CountedStream, SocketAddr) {
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let _ = stream.set_nodelay(true);
        self.shared.stats.http_accepted.fetch_add(1, Ordering::Relaxed);
        self.shared.stats.http_connections.fetch_add(1, Ordering::Relaxed);
        (CountedStream { inner: stream, shared: self.shared.clone() }, addr)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An HTTP connection; dropping it takes it off the open-connections gauge.
struct CountedStream {
    inner: TcpStream,
    shared: Arc<Shared>,
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.shared.stats.http_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The client's address, for handlers (`ConnectInfo<Peer>`): admin actions are for loopback.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, CountingListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, CountingListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// The latest waits refused because they would have closed a cycle, newest last.
#[derive(Debug, Default)]
pub struct RecentDeadlocks {
    refused: Mutex<VecDeque<RefusedDeadlock>>,
    /// Every refusal since the start, for the metrics (`refused` keeps only the latest).
    total: AtomicU64,
}

/// One refused wait and the cycle it would have closed.
#[derive(Debug, Clone)]
pub struct RefusedDeadlock {
    pub at: SystemTime,
    pub cycle: Vec<WaitEdge>,
}

impl RecentDeadlocks {
    pub fn record(&self, cycle: &[WaitEdge]) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if refused.len() == RECENT_DEADLOCKS {
            refused.pop_front();
        }
        refused.push_back(RefusedDeadlock { at: SystemTime::now(), cycle: cycle.to_vec() });
    }

    pub fn list(&self) -> Vec<RefusedDeadlock> {
        self.refused.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    /// How many were ever refused.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}
