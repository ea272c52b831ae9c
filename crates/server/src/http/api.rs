//! The routes: one [`Route`] each (path, method, summary, schemas, handler). The router and
//! `/openapi.json` are both built from [`routes`].
//!
//! Bodies and replies are JSON with `snake_case` fields; durations are milliseconds (`_ms`).
//! Payloads are JSON strings (UTF-8; bytes that are not UTF-8 are shown lossily).

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::Json;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use turnstile_core::{
    Acquire, Command, Fence, LockInfo, Mode, Overflow, Pop, Push, Query as CoreQuery, QueueConfig,
    QueueStats, Reply,
};

use super::ApiError;
use super::client::Client;
use super::exec::{read, write, write_in_session};
use crate::server::Shared;
use crate::stats::{COUNTERS, Snapshot};

pub(super) type App = Arc<Shared>;
pub(super) type ApiResult = Result<Response, ApiError>;

/// One route: what the router serves and what `/openapi.json` documents.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    /// The operation's name: its metrics label and OpenAPI `operationId`.
    pub operation: &'static str,
    pub summary: &'static str,
    /// JSON schema of the request body, if it has one.
    pub body: Option<Value>,
    /// Query parameters: (name, description).
    pub query: &'static [(&'static str, &'static str)],
    /// JSON schema of the 200 response (`None`: not JSON).
    pub response: Option<Value>,
    pub handler: MethodRouter<App>,
}

/// Every route, in the order the OpenAPI document lists them.
pub fn routes() -> Vec<Route> {
    let int = || json!({"type": "integer", "minimum": 0});
    let string = || json!({"type": "string"});
    let object = |props: Value, required: &[&str]| json!({"type": "object", "properties": props, "required": required});
    let acquire_body = |semaphore: bool| {
        let mut props = json!({
            "ttl_ms": int(), "wait_ms": int(), "owner": string(),
        });
        if semaphore {
            props["limit"] = int();
            props["count"] = int();
        } else {
            props["shared"] = json!({"type": "boolean"});
        }
        object(props, if semaphore { &["limit", "ttl_ms"] } else { &["ttl_ms"] })
    };
    let grant =
        object(json!({"granted": {"type": "boolean"}, "token": int(), "ttl_ms": int()}), &["granted"]);
    let holder = object(
        json!({"owner": string(), "token": int(), "expires_in_ms": int(), "permits": int()}),
        &["owner", "token", "expires_in_ms", "permits"],
    );
    let waiter = object(
        json!({"owner": string(), "mode": string(), "permits": int(), "gives_up_in_ms": int()}),
        &["owner", "mode", "permits", "gives_up_in_ms"],
    );
    let lock = object(
        json!({"name": string(), "kind": string(), "mode": string(), "limit": int(),
               "holders": {"type": "array", "items": holder}, "waiters": {"type": "array", "items": waiter}}),
        &["name", "kind", "mode", "limit", "holders", "waiters"],
    );
    let stats_props: serde_json::Map<String, Value> = std::iter::once(("name".to_owned(), string()))
        .chain(STATS_FIELDS.iter().map(|f| ((*f).to_owned(), int())))
        .collect();
    let stats = object(Value::Object(stats_props), &["name"]);
    let delivery = object(
        json!({"id": int(), "receipt": int(), "payload": string(), "deliveries": int()}),
        &["id", "receipt", "payload", "deliveries"],
    );
    let message = object(
        json!({"id": int(), "payload": string(), "deliveries": int(), "priority": int(), "age_ms": int()}),
        &["id", "payload", "deliveries", "priority", "age_ms"],
    );
    let fence = object(json!({"lock": string(), "token": int()}), &["lock", "token"]);
    let array = |items: &Value| json!({"type": "array", "items": items});
    let count = |name: &str| object(json!({ name: int() }), &[name]);
    let flag = |name: &str| object(json!({ name: {"type": "boolean"} }), &[name]);
    let mut routes = vec![
        Route {
            method: "GET",
            path: "/healthz",
            operation: "healthz",
            summary: "The process is up.",
            body: None,
            query: &[],
            response: Some(object(json!({"status": string()}), &["status"])),
            handler: get(healthz),
        },
        Route {
            method: "GET",
            path: "/readyz",
            operation: "readyz",
            summary: "This node reaches a leader (one that leads without its quorum does not) and has applied the log up to its commit index (503 otherwise).",
            body: None,
            query: &[],
            response: Some(object(
                json!({"status": string(), "leader": int(), "applied_index": int()}),
                &["status"],
            )),
            handler: get(readyz),
        },
        Route {
            method: "GET",
            path: "/api/cluster",
            operation: "cluster_status",
            summary: "The cluster as its leader sees it: members, roles, replication lag and last contact; term, leader, commit and applied index. Any node answers (a follower asks the leader).",
            body: None,
            query: &[],
            response: Some(object(
                json!({"node_id": int(), "leader": int(), "term": int(), "committed_index": int(), "applied_index": int(),
                       "members": {"type": "array", "items": object(json!({"id": int(), "addr": string(), "role": string(),
                           "matched_index": int(), "lag": int(), "last_contact_ms": int()}), &["id", "addr", "role"])}}),
                &["node_id", "term", "members"],
            )),
            handler: get(cluster_status),
        },
        Route {
            method: "GET",
            path: "/metrics",
            operation: "metrics",
            summary: "Prometheus text exposition of every metric.",
            body: None,
            query: &[],
            response: None,
            handler: get(metrics),
        },
        Route {
            method: "GET",
            path: "/openapi.json",
            operation: "openapi",
            summary: "This document.",
            body: None,
            query: &[],
            response: Some(json!({"type": "object"})),
            handler: get(openapi),
        },
        Route {
            method: "GET",
            path: "/",
            operation: "dashboard",
            summary: "The dashboard (HTML).",
            body: None,
            query: &[],
            response: None,
            handler: get(dashboard),
        },
        Route {
            method: "GET",
            path: "/api/overview",
            operation: "overview",
            summary: "Node, leader, uptime, counts, memory; `user` is who the request runs as, `admin` whether it may use the admin actions (an admin user; without users, a loopback client).",
            body: None,
            query: &[],
            response: Some(json!({"type": "object"})),
            handler: get(overview),
        },
        Route {
            method: "GET",
            path: "/api/locks",
            operation: "list_locks",
            summary: "Every lock and semaphore held or waited for whose name the user may touch, with holders and waiters (a user who is not an admin sees only its own).",
            body: None,
            query: &[("prefix", "only names starting with this")],
            response: Some(array(&lock)),
            handler: get(list_locks),
        },
        Route {
            method: "GET",
            path: "/api/locks/{name}",
            operation: "lock_info",
            summary: "Holders and waiters of a lock (mode `free` when nobody holds or waits).",
            body: None,
            query: &[],
            response: Some(lock.clone()),
            handler: get(lock_info),
        },
        Route {
            method: "POST",
            path: "/api/locks/{name}/acquire",
            operation: "lock_acquire",
            summary: "Acquire a lock (exclusive, or `shared`), waiting up to `wait_ms`. The hold is KEEP: only its lease or a release by token ends it. Name an `owner` for re-acquires and deadlock detection across requests (default: the request's own session).",
            body: Some(acquire_body(false)),
            query: &[],
            response: Some(grant.clone()),
            handler: post(lock_acquire),
        },
        Route {
            method: "POST",
            path: "/api/locks/{name}/renew",
            operation: "lock_renew",
            summary: "Renew a hold by token (423 LOST when it is gone).",
            body: Some(object(json!({"token": int(), "ttl_ms": int()}), &["token", "ttl_ms"])),
            query: &[],
            response: Some(count("ttl_ms")),
            handler: post(renew),
        },
        Route {
            method: "POST",
            path: "/api/locks/{name}/release",
            operation: "lock_release",
            summary: "Release a hold by token (403 NOPERM for another user's hold, unless an admin releases it).",
            body: Some(object(json!({"token": int()}), &["token"])),
            query: &[],
            response: Some(flag("released")),
            handler: post(release),
        },
        Route {
            method: "GET",
            path: "/api/semaphores/{name}",
            operation: "semaphore_info",
            summary: "Holders and waiters of a semaphore.",
            body: None,
            query: &[],
            response: Some(lock),
            handler: get(semaphore_info),
        },
        Route {
            method: "POST",
            path: "/api/semaphores/{name}/acquire",
            operation: "semaphore_acquire",
            summary: "Acquire `count` (default 1) of the semaphore's `limit` permits, waiting up to `wait_ms`. KEEP, as for locks.",
            body: Some(acquire_body(true)),
            query: &[],
            response: Some(grant),
            handler: post(semaphore_acquire),
        },
        Route {
            method: "POST",
            path: "/api/semaphores/{name}/renew",
            operation: "semaphore_renew",
            summary: "Renew permits by token.",
            body: Some(object(json!({"token": int(), "ttl_ms": int()}), &["token", "ttl_ms"])),
            query: &[],
            response: Some(count("ttl_ms")),
            handler: post(renew),
        },
        Route {
            method: "POST",
            path: "/api/semaphores/{name}/release",
            operation: "semaphore_release",
            summary: "Release permits by token.",
            body: Some(object(json!({"token": int()}), &["token"])),
            query: &[],
            response: Some(flag("released")),
            handler: post(release),
        },
        Route {
            method: "GET",
            path: "/api/queues",
            operation: "list_queues",
            summary: "Every queue whose name the user may touch, with its gauges and totals, sorted by name.",
            body: None,
            query: &[("prefix", "only names starting with this")],
            response: Some(array(&stats)),
            handler: get(list_queues),
        },
        Route {
            method: "PUT",
            path: "/api/queues/{name}",
            operation: "queue_create",
            summary: "Create a queue (`created` false when it exists with the same configuration; 409 with another).",
            body: Some(object(
                json!({"max_len": int(), "overflow": {"type": "string", "enum": ["reject", "drop-head"]},
                "max_deliveries": int(), "dead_letter": string(), "lease_ms": int(), "ttl_ms": int(), "dedup_window_ms": int()}),
                &[],
            )),
            query: &[],
            response: Some(flag("created")),
            handler: put(queue_create),
        },
        Route {
            method: "GET",
            path: "/api/queues/{name}",
            operation: "queue_stats",
            summary: "A queue's gauges and totals (404 when there is no such queue).",
            body: None,
            query: &[],
            response: Some(stats),
            handler: get(queue_stats),
        },
        Route {
            method: "DELETE",
            path: "/api/queues/{name}",
            operation: "queue_delete",
            summary: "Admin. Delete a queue and every message in it.",
            body: None,
            query: &[],
            response: Some(flag("deleted")),
            handler: delete(queue_delete),
        },
        Route {
            method: "POST",
            path: "/api/queues/{name}/messages",
            operation: "queue_push",
            summary: "Push a message (the queue is created with the defaults if missing). `duplicate` when a dedup id matched. A push that takes a consumed queue to `queue-flow-limit` is answered once its consumers have taken it below half (flow control).",
            body: Some(object(
                json!({"payload": string(), "delay_ms": int(), "priority": {"type": "integer", "minimum": 0, "maximum": 9},
                "dedup": string(), "ttl_ms": int(), "group": string(), "fence": fence.clone()}),
                &["payload"],
            )),
            query: &[],
            response: Some(object(
                json!({"id": int(), "duplicate": {"type": "boolean"}}),
                &["id", "duplicate"],
            )),
            handler: post(queue_push),
        },
        Route {
            method: "GET",
            path: "/api/queues/{name}/messages",
            operation: "queue_peek",
            summary: "The next ready messages, in delivery order, without delivering them.",
            body: None,
            query: &[("count", "how many (default 10)")],
            response: Some(array(&message)),
            handler: get(queue_peek),
        },
        Route {
            method: "POST",
            path: "/api/queues/{name}/pop",
            operation: "queue_pop",
            summary: "Pop up to `count` messages under a lease, waiting up to `wait_ms`. Deliveries are KEEP: ack, nack or extend them by receipt before the lease ends.",
            body: Some(object(json!({"count": int(), "wait_ms": int(), "lease_ms": int()}), &[])),
            query: &[],
            response: Some(object(json!({"deliveries": array(&delivery)}), &["deliveries"])),
            handler: post(queue_pop),
        },
        Route {
            method: "POST",
            path: "/api/queues/{name}/ack",
            operation: "queue_ack",
            summary: "Ack deliveries by receipt; how many were still in flight.",
            body: Some(object(
                json!({"receipts": {"type": "array", "items": int()}, "fence": fence}),
                &["receipts"],
            )),
            query: &[],
            response: Some(count("acked")),
            handler: post(queue_ack),
        },
        Route {
            method: "POST",
            path: "/api/queues/{name}/nack",
            operation: "queue_nack",
            summary: "Give a delivery back (again after `delay_ms`), or with `dead` reject it to the dead-letter queue.",
            body: Some(object(
                json!({"receipt": int(), "delay_ms": int(), "dead": {"type": "boolean"}}),
                &["receipt"],
            )),
            query: &[],
            response: Some(flag("nacked")),
            handler: post(queue_nack),
        },
        Route {
            method: "POST",
            path: "/api/queues/{name}/extend",
            operation: "queue_extend",
            summary: "Extend a delivery's lease by receipt (423 LOST when it is gone).",
            body: Some(object(json!({"receipt": int(), "lease_ms": int()}), &["receipt", "lease_ms"])),
            query: &[],
            response: Some(count("lease_ms")),
            handler: post(queue_extend),
        },
        Route {
            method: "POST",
            path: "/api/queues/{name}/purge",
            operation: "queue_purge",
            summary: "Admin. Remove the ready and delayed messages (in-flight ones stay).",
            body: None,
            query: &[],
            response: Some(count("purged")),
            handler: post(queue_purge),
        },
        Route {
            method: "POST",
            path: "/api/queues/{name}/redrive",
            operation: "queue_redrive",
            summary: "Admin. Move up to `count` (default all) ready messages of this (dead-letter) queue to `target`.",
            body: Some(object(json!({"target": string(), "count": int()}), &["target"])),
            query: &[],
            response: Some(count("moved")),
            handler: post(queue_redrive),
        },
        Route {
            method: "GET",
            path: "/api/sessions",
            operation: "sessions",
            summary: "Every open session (a connection, or an HTTP request that waits); a user who is not an admin sees only its own.",
            body: None,
            query: &[],
            response: Some(array(&object(
                json!({"id": int(), "default_owner": string(), "age_ms": int(),
                "holds": int(), "waits": int(), "deliveries": int(), "consumers": int()}),
                &["id"],
            ))),
            handler: get(sessions),
        },
        Route {
            method: "GET",
            path: "/api/cluster/snapshot",
            operation: "cluster_snapshot",
            summary: "Admin. A backup of the whole state at a linearizable read point, as a file: a header (magic, format version, the log index it covers, the cluster id, when it was taken), the state, a CRC-32C. `turnstile cluster snapshot save` writes it to a file; `turnstile server --restore` starts a new node from it.",
            body: None,
            query: &[],
            response: None,
            handler: get(super::backup::snapshot),
        },
        Route {
            method: "GET",
            path: "/api/wait-for",
            operation: "wait_for",
            summary: "The wait-for graph (owner waits for lock, held or waited for ahead by blocked_by) and recently refused deadlocks with their cycles.",
            body: None,
            query: &[],
            response: Some(json!({"type": "object"})),
            handler: get(wait_for),
        },
    ];
    routes.extend(super::users::routes());
    routes
}

/// `Q.STATS` fields as JSON names, in the order the server reports them.
const STATS_FIELDS: &[&str] = &[
    "ready",
    "delayed",
    "in_flight",
    "dead",
    "consumers",
    "waiting_pops",
    "oldest_ready_age_ms",
    "payload_bytes",
    "pushed",
    "deduplicated",
    "dead_letters_in",
    "redriven_in",
    "delivered",
    "returned",
    "acked",
    "expired",
    "purged",
    "dropped",
    "dead_lettered",
    "discarded",
    "redriven_out",
];

/// Unknown paths: a JSON 404 like every other error.
pub async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ERR",
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
}

/// A known path with another method.
pub async fn method_not_allowed(request: Request) -> ApiError {
    let message = format!("{} is not allowed on {}", request.method(), request.uri().path());
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "ERR", message)
}

/// A JSON body (whatever the `Content-Type` says, so `curl -d` works); bad JSON is a 400, a
/// body past the limit a 413, both in the API's error shape.
pub struct Body<T>(pub(super) T);

impl<T: DeserializeOwned> FromRequest<App> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &App) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, app).await?;
        parse_json(&bytes).map(Body)
    }
}

/// A JSON body that may be left out (then every field takes its default).
pub struct OptionalBody<T>(T);

impl<T: DeserializeOwned + Default> FromRequest<App> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &App) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, app).await?;
        parse_optional_json(&bytes).map(OptionalBody)
    }
}

async fn body_bytes(req: Request, app: &App) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, app).await.map_err(|e| match e.status() {
        // Refused by its length, before or while it streams: in the words every protocol uses.
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ERR",
            format!(
                "request body is larger than {} bytes: {}",
                app.limits.max_payload + super::BODY_OVERHEAD,
                crate::session::Refused::PayloadTooLarge { limit: app.limits.max_payload }
            ),
        ),
        status => ApiError::new(status, "ERR", e.body_text()),
    })
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// An [`OptionalBody`]'s rule: a blank body gives every field its default.
fn parse_optional_json<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(bytes)
}

/// The operations whose route reads a JSON body: those [`body_command`] decodes.
#[doc(hidden)]
pub const BODY_OPERATIONS: &[&str] = &[
    "lock_acquire",
    "lock_renew",
    "lock_release",
    "semaphore_acquire",
    "semaphore_renew",
    "semaphore_release",
    "queue_create",
    "queue_push",
    "queue_pop",
    "queue_ack",
    "queue_nack",
    "queue_extend",
    "queue_redrive",
];

/// The command a route's JSON body makes, decoded and checked exactly as its handler does
/// (the handlers call the same `command` methods), with `name` as the `{name}` of its path.
/// `None` for an operation that takes no body.
///
/// Public but hidden for one reader: the fuzz targets, which feed arbitrary bytes to this
/// decoding without a server to send them to. It stays here, next to the body types, rather
/// than being copied into them, so what is fuzzed is what is served.
#[doc(hidden)]
pub fn body_command(operation: &str, name: &str, body: &[u8]) -> Option<Result<Command, ApiError>> {
    let name = name.to_owned();
    let command = match operation {
        "lock_acquire" => parse_json::<AcquireBody>(body).and_then(|b| b.command(name, false)),
        "semaphore_acquire" => parse_json::<AcquireBody>(body).and_then(|b| b.command(name, true)),
        "lock_renew" | "semaphore_renew" => parse_json::<RenewBody>(body).map(|b| b.command(name)),
        "lock_release" | "semaphore_release" => parse_json::<TokenBody>(body).map(|b| b.command(name)),
        "queue_create" => parse_optional_json::<CreateBody>(body).and_then(|b| b.command(name)),
        "queue_push" => parse_json::<PushBody>(body).and_then(|b| b.command(name)),
        "queue_pop" => parse_optional_json::<PopBody>(body).map(|b| b.command(name)),
        "queue_ack" => parse_json::<AckBody>(body).and_then(|b| b.command(name)),
        "queue_nack" => parse_json::<NackBody>(body).map(|b| b.command(name)),
        "queue_extend" => parse_json::<ExtendBody>(body).map(|b| b.command(name)),
        "queue_redrive" => parse_json::<RedriveBody>(body).map(|b| b.command(name)),
        _ => return None,
    };
    Some(command)
}

pub(super) fn ok(value: impl Serialize) -> ApiResult {
    Ok(Json(value).into_response())
}

fn unexpected(reply: Reply) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "ERR", format!("unexpected reply {reply:?}"))
}

async fn healthz() -> ApiResult {
    ok(json!({"status": "ok"}))
}

/// Ready: this node reaches a leader (a leader cut off from its quorum does not: it refuses writes
/// once its lease is out, though it still calls itself leader) and has applied what it knows is
/// committed.
async fn readyz(State(app): State<App>) -> ApiResult {
    let status = app.node.status();
    let ready = app.node.leader_reachable() && status.applied_index >= status.committed_index;
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "leader": status.leader,
        "applied_index": status.applied_index,
        "committed_index": status.committed_index,
    });
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Ok((code, Json(body)).into_response())
}

async fn cluster_status(State(app): State<App>) -> ApiResult {
    ok(app.node.admin(turnstile_raft::AdminRequest::Status).await.map_err(crate::session::Refused::from)?)
}

async fn metrics(State(app): State<App>) -> ApiResult {
    let text = crate::metrics::render(&app).await;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

async fn openapi() -> ApiResult {
    ok(super::openapi::document(&routes()))
}

async fn dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

async fn overview(State(app): State<App>, client: Client) -> ApiResult {
    let summary = app.node.read(|state| state.summary()).await.map_err(crate::session::Refused::from)?;
    let stats = Snapshot::with_summary(&app, Some(summary));
    let connections: serde_json::Map<String, Value> = stats
        .connections
        .iter()
        .map(|(protocol, c)| {
            let counts = json!({"open": c.open, "accepted": c.accepted, "refused": c.refused});
            (protocol.as_str().to_owned(), counts)
        })
        .collect();
    let counters: serde_json::Map<String, Value> =
        COUNTERS.iter().map(|c| (c.name.to_owned(), json!((c.value)(&stats)))).collect();
    ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "node_id": stats.node.node_id,
        "cluster_id": turnstile_raft::format_cluster_id(app.cluster_id),
        "leader": stats.node.leader,
        "term": stats.node.term,
        "uptime_ms": u64::try_from(stats.uptime.as_millis()).unwrap_or(u64::MAX),
        "resp_addr": app.resp_addr.to_string(),
        "http_addr": app.http_addr.to_string(),
        "amqp_addr": app.amqp_addr.to_string(),
        "applied_index": stats.node.applied_index,
        "commands_total": stats.commands,
        "connected_clients": stats.open_connections(),
        "blocked_clients": stats.blocked,
        "connections": connections,
        "counters": counters,
        "sessions": summary.sessions,
        "locks": summary.locks,
        "holds": summary.holds,
        "lock_waiters": summary.lock_waiters,
        "queues": summary.queues,
        "messages": summary.messages,
        "payload_bytes": stats.payload_bytes,
        "max_memory": stats.max_memory,
        // Whether the admin actions are this client's (the server checks them on every request
        // too): an admin user's, or without users, a loopback client's.
        "admin": client.is_admin(),
        "user": client.name(),
        "authentication": app.users.required(),
    }))
}

#[derive(Deserialize)]
struct PrefixQuery {
    prefix: Option<String>,
}

fn lock_json(name: &str, info: LockInfo) -> Value {
    json!({
        "name": name,
        "kind": if info.mode == "semaphore" { "semaphore" } else { "lock" },
        "mode": info.mode,
        "limit": info.limit,
        "holders": info.holders.iter().map(|h| json!({
            "owner": h.owner, "token": h.token, "expires_in_ms": h.expires_in, "permits": h.permits,
        })).collect::<Vec<_>>(),
        "waiters": info.waiters.iter().map(|w| json!({
            "owner": w.owner, "mode": w.mode, "permits": w.permits, "gives_up_in_ms": w.deadline_in,
        })).collect::<Vec<_>>(),
    })
}

/// The locks a client may see, with their info, read at one point: those whose names its user
/// may touch (all of them, or the one `only` names), and in each only the holders and waiters
/// that are its user's own, unless it is an admin.
async fn all_locks(
    app: &App,
    client: &Client,
    prefix: Option<String>,
    only: Option<String>,
) -> Result<Vec<(String, LockInfo)>, ApiError> {
    match &only {
        Some(name) => client.check_query(app, &CoreQuery::LockInfo { name: name.clone() })?,
        None => client.check_query(app, &CoreQuery::ListLocks)?,
    }
    let perms = client.identity().perms().clone();
    let viewer = client.viewer().map(str::to_owned);
    let locks = app
        .node
        .read_at(move |state, now| {
            let names = match only {
                Some(name) => vec![name],
                None => match state.query(now, CoreQuery::ListLocks) {
                    Reply::Names(names) => names,
                    _ => Vec::new(),
                },
            };
            names
                .into_iter()
                .filter(|n| prefix.as_ref().is_none_or(|p| n.starts_with(p.as_str())))
                .filter(|n| perms.allows_name(turnstile_core::NameKind::Lock, n.as_bytes()))
                .filter_map(|name| match state.query(now, CoreQuery::LockInfo { name: name.clone() }) {
                    Reply::LockInfo(mut info) => {
                        if let Some(me) = viewer.as_deref() {
                            info.holders.retain(|h| state.token_user(h.token) == Some(me));
                            info.waiters.retain(|w| state.wait_user(w.wait_id) == Some(me));
                        }
                        Some((name, info))
                    }
                    _ => None,
                })
                .collect()
        })
        .await
        .map_err(|e| client.refused(app, e.into(), "lock.list"))?;
    Ok(locks)
}

async fn list_locks(State(app): State<App>, client: Client, Query(q): Query<PrefixQuery>) -> ApiResult {
    let locks = all_locks(&app, &client, q.prefix, None).await?;
    ok(locks.into_iter().map(|(name, info)| lock_json(&name, info)).collect::<Vec<_>>())
}

async fn lock_info(State(app): State<App>, client: Client, Path(name): Path<String>) -> ApiResult {
    let mut locks = all_locks(&app, &client, None, Some(name)).await?;
    match locks.pop() {
        Some((name, info)) => ok(lock_json(&name, info)),
        None => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "ERR", "no lock info")),
    }
}

async fn semaphore_info(app: State<App>, client: Client, name: Path<String>) -> ApiResult {
    lock_info(app, client, name).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcquireBody {
    ttl_ms: u64,
    #[serde(default)]
    wait_ms: u64,
    owner: Option<String>,
    #[serde(default)]
    shared: bool,
    /// Semaphores only.
    limit: Option<u32>,
    count: Option<u32>,
}

impl AcquireBody {
    /// The acquire a lock route (`semaphore: false`) or a semaphore route asks for.
    fn command(self, name: String, semaphore: bool) -> Result<Command, ApiError> {
        let mode = if semaphore {
            let Some(limit) = self.limit else { return Err(ApiError::bad_request("limit is required")) };
            if self.shared {
                return Err(ApiError::bad_request("shared is for locks"));
            }
            Mode::Permits { limit, count: self.count.unwrap_or(1) }
        } else {
            if self.limit.is_some() || self.count.is_some() {
                return Err(ApiError::bad_request(
                    "limit and count are for semaphores (/api/semaphores/{name}/acquire)",
                ));
            }
            if self.shared { Mode::Shared } else { Mode::Exclusive }
        };
        Ok(Command::Acquire(Acquire {
            name,
            mode,
            ttl: self.ttl_ms,
            wait: self.wait_ms,
            owner: self.owner,
            session: None,
            keep: true,
        }))
    }
}

async fn acquire(app: &App, client: &Client, cmd: Command) -> ApiResult {
    // Always in a session of its own: it is the owner when the body names none.
    let reply = write_in_session(app, client, cmd).await?;
    match reply {
        Reply::Granted { token, lease } => ok(json!({"granted": true, "token": token, "ttl_ms": lease})),
        Reply::Nil => ok(json!({"granted": false})),
        other => Err(unexpected(other)),
    }
}

async fn lock_acquire(
    State(app): State<App>,
    client: Client,
    Path(name): Path<String>,
    Body(body): Body<AcquireBody>,
) -> ApiResult {
    acquire(&app, &client, body.command(name, false)?).await
}

async fn semaphore_acquire(
    State(app): State<App>,
    client: Client,
    Path(name): Path<String>,
    Body(body): Body<AcquireBody>,
) -> ApiResult {
    acquire(&app, &client, body.command(name, true)?).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewBody {
    token: u64,
    ttl_ms: u64,
}

async fn renew(
    State(app): State<App>,
    client: Client,
    Path(name): Path<String>,
    Body(body): Body<RenewBody>,
) -> ApiResult {
    match write(&app, &client, body.command(name)).await? {
        Reply::Int(lease) => ok(json!({"ttl_ms": lease})),
        other => Err(unexpected(other)),
    }
}

impl RenewBody {
    fn command(self, name: String) -> Command {
        Command::Renew { name, token: self.token, ttl: self.ttl_ms }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    token: u64,
}

async fn release(
    State(app): State<App>,
    client: Client,
    Path(name): Path<String>,
    Body(body): Body<TokenBody>,
) -> ApiResult {
    match write(&app, &client, body.command(name)).await? {
        Reply::Int(n) => ok(json!({"released": n == 1})),
        other => Err(unexpected(other)),
    }
}

impl TokenBody {
    fn command(self, name: String) -> Command {
        Command::Release { name, token: self.token }
    }
}

fn stats_json(name: &str, s: &QueueStats) -> Value {
    let t = &s.totals;
    let values = [
        s.ready,
        s.delayed,
        s.in_flight,
        s.dead,
        s.consumers,
        s.waiting_pops,
        s.oldest_ready_age,
        s.payload_bytes,
        t.pushed,
        t.deduplicated,
        t.dead_letters_in,
        t.redriven_in,
        t.delivered,
        t.returned,
        t.acked,
        t.expired,
        t.purged,
        t.dropped,
        t.dead_lettered,
        t.discarded,
        t.redriven_out,
    ];
    let mut object = serde_json::Map::new();
    object.insert("name".into(), name.into());
    for (field, value) in STATS_FIELDS.iter().zip(values) {
        object.insert((*field).into(), value.into());
    }
    Value::Object(object)
}

/// The queues whose names the client's user may touch.
async fn list_queues(State(app): State<App>, client: Client, Query(q): Query<PrefixQuery>) -> ApiResult {
    client.check_query(&app, &CoreQuery::ListQueues)?;
    let prefix = q.prefix;
    let perms = client.identity().perms().clone();
    let queues = app
        .node
        .read_at(move |state, now| {
            let Reply::Names(names) = state.query(now, CoreQuery::ListQueues) else { return Vec::new() };
            names
                .into_iter()
                .filter(|n| prefix.as_ref().is_none_or(|p| n.starts_with(p.as_str())))
                .filter(|n| perms.allows_name(turnstile_core::NameKind::Queue, n.as_bytes()))
                .filter_map(|name| match state.query(now, CoreQuery::QueueStats { name: name.clone() }) {
                    Reply::QueueStats(stats) => Some(stats_json(&name, &stats)),
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| client.refused(&app, e.into(), "q.list"))?;
    ok(queues)
}

async fn queue_stats(State(app): State<App>, client: Client, Path(name): Path<String>) -> ApiResult {
    match read(&app, &client, CoreQuery::QueueStats { name: name.clone() }).await? {
        Reply::QueueStats(stats) => ok(stats_json(&name, &stats)),
        other => Err(unexpected(other)),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    max_len: Option<u64>,
    overflow: Option<String>,
    max_deliveries: Option<u32>,
    dead_letter: Option<String>,
    lease_ms: Option<u64>,
    ttl_ms: Option<u64>,
    dedup_window_ms: Option<u64>,
}

async fn queue_create(
    State(app): State<App>,
    client: Client,
    Path(name): Path<String>,
    OptionalBody(body): OptionalBody<CreateBody>,
) -> ApiResult {
    match write(&app, &client, body.command(name)?).await? {
        Reply::Int(n) => ok(json!({"created": n == 1})),
        other => Err(unexpected(other)),
    }
}

impl CreateBody {
    fn command(self, name: String) -> Result<Command, ApiError> {
        let body = self;
        let defaults = QueueConfig::default();
        let overflow = match body.overflow.as_deref() {
            None | Some("reject") => Overflow::Reject,
            Some("drop-head") => Overflow::DropHead,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "overflow must be reject or drop-head, not {other:?}"
                )));
            }
        };
        let config = QueueConfig {
            max_len: body.max_len.unwrap_or(defaults.max_len),
            overflow,
            max_deliveries: body.max_deliveries.unwrap_or(defaults.max_deliveries),
            dead_letter: body.dead_letter,
            lease: body.lease_ms.unwrap_or(defaults.lease),
            ttl: body.ttl_ms,
            dedup_window: body.dedup_window_ms.unwrap_or(defaults.dedup_window),
            ..defaults
        };
        Ok(Command::CreateQueue { name, config })
    }
}

async fn queue_delete(State(app): State<App>, client: Client, Path(name): Path<String>) -> ApiResult {
    client.admin(&app, "q.del", &format!("delete queue {name:?}"))?;
    match write(&app, &client, Command::DeleteQueue { name, if_unused: false, if_empty: false }).await? {
        Reply::Int(n) => ok(json!({"deleted": n == 1})),
        other => Err(unexpected(other)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FenceBody {
    lock: String,
    token: u64,
}

impl From<FenceBody> for Fence {
    fn from(f: FenceBody) -> Fence {
        Fence { lock: f.lock, token: f.token }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushBody {
    payload: String,
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    priority: u8,
    dedup: Option<String>,
    ttl_ms: Option<u64>,
    group: Option<String>,
    fence: Option<FenceBody>,
}

async fn queue_push(
    State(app): State<App>,
    client: Client,
    Path(name): Path<String>,
    Body(body): Body<PushBody>,
) -> ApiResult {
    let reply = write(&app, &client, body.command(name)?).await?;
    match reply {
        Reply::Pushed { id, duplicate } => ok(json!({"id": id, "duplicate": duplicate})),
        other => Err(unexpected(other)),
    }
}

impl PushBody {
    fn command(self, queue: String) -> Result<Command, ApiError> {
        if self.priority > 9 {
            return Err(ApiError::bad_request("priority must be between 0 and 9"));
        }
        Ok(Command::Push(Push {
            delay: self.delay_ms,
            priority: self.priority,
            dedup: self.dedup,
            ttl: self.ttl_ms,
            group: self.group,
            fence: self.fence.map(Fence::from),
            ..Push::new(queue, Bytes::from(self.payload))
        }))
    }
}

#[derive(Deserialize)]
struct CountQuery {
    count: Option<u32>,
}

async fn queue_peek(
    State(app): State<App>,
    client: Client,
    Path(queue): Path<String>,
    Query(q): Query<CountQuery>,
) -> ApiResult {
    match read(&app, &client, CoreQuery::Peek { queue, count: q.count.unwrap_or(10) }).await? {
        Reply::Messages(messages) => ok(messages
            .iter()
            .map(|m| {
                json!({
                    "id": m.id, "payload": String::from_utf8_lossy(&m.payload), "deliveries": m.deliveries,
                    "priority": m.priority, "age_ms": m.age,
                })
            })
            .collect::<Vec<_>>()),
        other => Err(unexpected(other)),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PopBody {
    count: Option<u32>,
    #[serde(default)]
    wait_ms: u64,
    lease_ms: Option<u64>,
}

async fn queue_pop(
    State(app): State<App>,
    client: Client,
    Path(queue): Path<String>,
    OptionalBody(body): OptionalBody<PopBody>,
) -> ApiResult {
    let cmd = body.command(queue);
    let reply = if cmd.may_wait() {
        write_in_session(&app, &client, cmd).await?
    } else {
        write(&app, &client, cmd).await?
    };
    let deliveries = match reply {
        Reply::Deliveries(deliveries) => deliveries,
        Reply::Nil => Vec::new(),
        other => return Err(unexpected(other)),
    };
    ok(json!({"deliveries": deliveries.iter().map(|d| json!({
        "id": d.id, "receipt": d.receipt, "payload": String::from_utf8_lossy(&d.payload), "deliveries": d.deliveries,
    })).collect::<Vec<_>>()}))
}

impl PopBody {
    fn command(self, queue: String) -> Command {
        Command::Pop(Pop {
            queue,
            session: None,
            count: self.count.unwrap_or(1),
            wait: self.wait_ms,
            lease: self.lease_ms,
            auto_ack: false,
            keep: true,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    receipts: Vec<u64>,
    fence: Option<FenceBody>,
}

async fn queue_ack(
    State(app): State<App>,
    client: Client,
    Path(queue): Path<String>,
    Body(body): Body<AckBody>,
) -> ApiResult {
    match write(&app, &client, body.command(queue)?).await? {
        Reply::Int(n) => ok(json!({"acked": n})),
        other => Err(unexpected(other)),
    }
}

impl AckBody {
    fn command(self, queue: String) -> Result<Command, ApiError> {
        if self.receipts.is_empty() {
            return Err(ApiError::bad_request("receipts must not be empty"));
        }
        Ok(Command::Ack { queue, receipts: self.receipts, fence: self.fence.map(Fence::from) })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NackBody {
    receipt: u64,
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    dead: bool,
}

async fn queue_nack(
    State(app): State<App>,
    client: Client,
    Path(queue): Path<String>,
    Body(body): Body<NackBody>,
) -> ApiResult {
    match write(&app, &client, body.command(queue)).await? {
        Reply::Int(n) => ok(json!({"nacked": n == 1})),
        other => Err(unexpected(other)),
    }
}

impl NackBody {
    fn command(self, queue: String) -> Command {
        Command::Nack { queue, receipt: self.receipt, delay: self.delay_ms, dead_letter: self.dead }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtendBody {
    receipt: u64,
    lease_ms: u64,
}

async fn queue_extend(
    State(app): State<App>,
    client: Client,
    Path(queue): Path<String>,
    Body(body): Body<ExtendBody>,
) -> ApiResult {
    match write(&app, &client, body.command(queue)).await? {
        Reply::Int(lease) => ok(json!({"lease_ms": lease})),
        other => Err(unexpected(other)),
    }
}

impl ExtendBody {
    fn command(self, queue: String) -> Command {
        Command::Extend { queue, receipt: self.receipt, lease: self.lease_ms }
    }
}

async fn queue_purge(State(app): State<App>, client: Client, Path(name): Path<String>) -> ApiResult {
    client.admin(&app, "q.purge", &format!("purge queue {name:?}"))?;
    match write(&app, &client, Command::PurgeQueue { name }).await? {
        Reply::Int(n) => ok(json!({"purged": n})),
        other => Err(unexpected(other)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedriveBody {
    target: String,
    count: Option<u64>,
}

async fn queue_redrive(
    State(app): State<App>,
    client: Client,
    Path(from): Path<String>,
    Body(body): Body<RedriveBody>,
) -> ApiResult {
    client.admin(&app, "q.redrive", &format!("redrive queue {from:?} to {:?}", body.target))?;
    match write(&app, &client, body.command(from)).await? {
        Reply::Int(n) => ok(json!({"moved": n})),
        other => Err(unexpected(other)),
    }
}

impl RedriveBody {
    fn command(self, from: String) -> Command {
        Command::Redrive { from, to: self.target, count: self.count.unwrap_or(u64::MAX) }
    }
}

/// The open sessions: every one to an admin, else those opened by the client's user.
async fn sessions(State(app): State<App>, client: Client) -> ApiResult {
    let viewer = client.viewer().map(str::to_owned);
    let sessions = app
        .node
        .read(move |state| {
            let mut sessions = state.sessions();
            if let Some(me) = viewer.as_deref() {
                sessions.retain(|s| state.session_user(s.id) == Some(me));
            }
            sessions
        })
        .await?;
    ok(sessions
        .iter()
        .map(|s| {
            json!({
                "id": s.id.0, "default_owner": s.default_owner, "age_ms": s.age, "holds": s.holds,
                "waits": s.waits, "deliveries": s.deliveries, "consumers": s.consumers,
            })
        })
        .collect::<Vec<_>>())
}

/// Edges from each waiter to the holders of the lock it waits for, plus the waiters ahead of
/// it (strict FIFO: a waiter also waits for those), and the latest refused deadlocks.
///
/// A client that is not an admin sees the edges among its own user's holds and waiters, and no
/// refused deadlocks (their cycles name other users' owners).
async fn wait_for(State(app): State<App>, client: Client) -> ApiResult {
    let mut edges = Vec::new();
    for (name, info) in all_locks(&app, &client, None, None).await? {
        for (i, waiter) in info.waiters.iter().enumerate() {
            let ahead =
                info.holders.iter().map(|h| &h.owner).chain(info.waiters[..i].iter().map(|w| &w.owner));
            for blocked_by in ahead.filter(|o| **o != waiter.owner) {
                edges.push(json!({"owner": waiter.owner, "lock": name, "blocked_by": blocked_by}));
            }
        }
    }
    let seen = if client.viewer().is_none() { app.stats.deadlocks.list() } else { Vec::new() };
    let deadlocks: Vec<Value> = seen
        .into_iter()
        .map(|d| {
            let at_ms =
                d.at.duration_since(UNIX_EPOCH).map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(0));
            json!({"at_ms": at_ms, "cycle": d.cycle.iter().map(|e| json!({
                "owner": e.owner, "name": e.name, "blocked_by": e.blocked_by,
            })).collect::<Vec<_>>()})
        })
        .collect();
    ok(json!({"edges": edges, "deadlocks": deadlocks}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_operations_are_the_routes_that_read_a_body() {
        let routes = routes();
        for operation in BODY_OPERATIONS {
            let route = routes.iter().find(|r| r.operation == *operation);
            assert!(route.is_some_and(|r| r.body.is_some()), "{operation} is not a route with a body");
        }
        // The lock, semaphore and queue routes: every one with a body is decoded by `body_command`.
        let data = ["/api/locks", "/api/semaphores", "/api/queues"];
        for route in routes.iter().filter(|r| r.body.is_some() && data.iter().any(|p| r.path.starts_with(p)))
        {
            assert!(BODY_OPERATIONS.contains(&route.operation), "{} is missing", route.operation);
            assert!(body_command(route.operation, "n", b"{").is_some_and(|c| c.is_err()));
        }
    }

    #[test]
    fn a_body_becomes_the_command_its_handler_proposes() {
        let push = br#"{"payload": "hi", "priority": 3, "fence": {"lock": "l", "token": 7}}"#;
        let Some(Ok(Command::Push(push))) = body_command("queue_push", "jobs", push) else { panic!() };
        assert_eq!((push.queue.as_str(), &push.payload[..], push.priority), ("jobs", &b"hi"[..], 3));
        assert_eq!(push.fence, Some(Fence { lock: "l".into(), token: 7 }));
        let refused = body_command("queue_push", "jobs", br#"{"payload": "", "priority": 10}"#);
        assert_eq!(refused.unwrap().unwrap_err().status, StatusCode::BAD_REQUEST);
        let blank = body_command("queue_pop", "jobs", b"  \n");
        assert!(matches!(blank, Some(Ok(Command::Pop(Pop { count: 1, wait: 0, .. })))));
        let semaphore = body_command("semaphore_acquire", "s", br#"{"ttl_ms": 5, "limit": 2}"#);
        assert!(matches!(
            semaphore,
            Some(Ok(Command::Acquire(Acquire { mode: Mode::Permits { limit: 2, count: 1 }, .. })))
        ));
        assert!(body_command("lock_acquire", "l", br#"{"ttl_ms": 5, "limit": 2}"#).unwrap().is_err());
        assert!(body_command("healthz", "", b"{}").is_none());
    }
}
