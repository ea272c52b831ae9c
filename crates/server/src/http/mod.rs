//! The HTTP listener: a JSON API for applications that cannot speak RESP, health checks,
//! Prometheus `/metrics`, the OpenAPI document and the dashboard.
//!
//! ```text
//!  request ─► client.rs: who sent it (Basic / Bearer when users are configured; 401 otherwise)
//!          ─► axum router (built from api::ROUTES) ─► handler ─► Command / Query (same core types as RESP)
//!                                                      │            └─► Session (the user's permissions) ─► node
//!                                                      │  may wait? ─► session of its own (exec.rs), parked on the router
//!  response ◄── JSON body, or an error {code, message} with its HTTP status (error.rs)
//! ```
//!
//! Every route is one entry of [`api::routes`]: the router and `/openapi.json` are both built
//! from that table, so the document cannot drift from what is served.

mod api;
mod backup;
mod client;
mod error;
mod exec;
mod faults;
mod openapi;
mod users;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;

use crate::listener::{Listener, Protocol};
use crate::server::Shared;
use crate::shutdown::Shutdown;
use crate::stats::Stats;

pub use api::{BODY_OPERATIONS, body_command};
pub use error::ApiError;

/// What a request body may hold besides its payload (the JSON around it, escapes).
pub const BODY_OVERHEAD: usize = 64 * 1024;

/// Serves HTTP until shutdown begins; requests in progress are finished.
pub async fn serve(listener: Listener, shared: Arc<Shared>, mut shutdown: Shutdown) {
    let app = router(shared);
    let service = app.into_make_service_with_connect_info::<Peer>();
    let served = axum::serve(listener, service).with_graceful_shutdown(async move { shutdown.recv().await });
    if let Err(e) = served.await {
        tracing::warn!(error = %e, "the HTTP listener stopped");
    }
}

fn router(shared: Arc<Shared>) -> Router {
    // A payload travels as a JSON string: the body may hold the largest payload plus the rest of
    // the request. A body over this is refused with 413 before it is read (by its
    // Content-Length, or as it streams); a payload over max-payload inside a smaller body is
    // refused by the session layer, with the same words.
    let body_limit = shared.limits.max_payload.saturating_add(BODY_OVERHEAD);
    let mut router = Router::new();
    let mut operations: Operations = HashMap::new();
    for route in api::routes() {
        operations.entry(route.path).or_default().push((route.method, route.operation));
        router = router.route(route.path, route.handler);
    }
    if shared.fault_injection {
        router = faults::add_routes(router, &mut operations);
    }
    let operations = Arc::new(operations);
    let stats = shared.stats.clone();
    router
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(middleware::from_fn_with_state(shared.clone(), client::authenticate))
        .layer(middleware::from_fn(move |request, next| {
            measure(operations.clone(), stats.clone(), request, next)
        }))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(shared)
}

/// Route path → (method, operation name) of each route on it.
type Operations = HashMap<&'static str, Vec<(&'static str, &'static str)>>;

/// Counts every request in the metrics under its route's operation name (`unknown` for paths
/// that match no route, so the label set stays bounded).
async fn measure(operations: Arc<Operations>, stats: Arc<Stats>, request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().and_then(|path| operations.get(path.as_str()));
    let operation = matched
        .and_then(|ops| ops.iter().find(|(method, _)| *method == request.method().as_str()))
        .map_or("unknown", |(_, operation)| *operation);
    let started = Instant::now();
    let response = next.run(request).await;
    crate::metrics::record_command(&stats, Protocol::Http, operation, started.elapsed());
    response
}

/// The client's address (`ConnectInfo<Peer>`): without users, admin actions are for loopback.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Listener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Listener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}
