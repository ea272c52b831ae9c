//! The fault hooks, served only with `--fault-injection` (tests only, never in production): a
//! torture run's nemesis plays a slow disk through them. Without the flag these routes are not
//! in the router at all, so their paths are unknown (404) like any other, and they are not in
//! `/openapi.json`, which documents the API a user may rely on.
//!
//! ```text
//!  PUT /api/faults/fsync-delay {"ms": N} ─► node.set_sync_delay ─► every journal fdatasync sleeps N ms
//!                                           (0 clears; INFO fsyncs_delayed / turnstile_fsync_delayed_total count them)
//! ```

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::put;
use serde::{Deserialize, Serialize};

use super::api::{ApiResult, App, Body, ok};
use super::client::Client;
use super::{ApiError, Operations};

/// The longest fsync delay a hook may set: a delay is a slow disk, not a stopped one (a stopped
/// disk is a paused process, which the nemesis does with `SIGSTOP`).
pub const MAX_FSYNC_DELAY_MS: u64 = 10_000;

/// Adds the fault hooks to `router`, and their operation names (metrics labels) to `operations`.
pub(super) fn add_routes(router: Router<App>, operations: &mut Operations) -> Router<App> {
    const FSYNC_DELAY: &str = "/api/faults/fsync-delay";
    operations.entry(FSYNC_DELAY).or_default().push(("PUT", "fault_fsync_delay"));
    router.route(FSYNC_DELAY, put(set_fsync_delay))
}

/// The body of `PUT /api/faults/fsync-delay`, and its reply: the delay now in force.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FsyncDelay {
    /// Milliseconds added to every fdatasync of the journal; 0 clears the delay.
    ms: u64,
}

async fn set_fsync_delay(State(app): State<App>, client: Client, Body(delay): Body<FsyncDelay>) -> ApiResult {
    client.admin(&app, "debug", &format!("fault injection: fsync delay {} ms", delay.ms))?;
    if delay.ms > MAX_FSYNC_DELAY_MS {
        return Err(ApiError::bad_request(format!(
            "fsync delay of {} ms is over the limit of {MAX_FSYNC_DELAY_MS} ms",
            delay.ms
        )));
    }
    if !app.node.set_sync_delay(Duration::from_millis(delay.ms)) {
        return Err(ApiError::bad_request("this node has no durable log whose fsyncs could be delayed"));
    }
    if delay.ms == 0 {
        tracing::warn!("fault injection: journal fsyncs are no longer delayed");
    } else {
        tracing::warn!(ms = delay.ms, "fault injection: every journal fsync is delayed");
    }
    ok(delay)
}
