//! The user table over HTTP: who am I, and (admins) list, set and delete users — the same table
//! and the same log entries as RESP's `ACL SETUSER` / `DELUSER`, so a user made here logs in on
//! every protocol, on every node, after a restart too.
//!
//! ```text
//!  GET    /api/whoami          ─► the request's user, and whether it may use admin actions
//!  GET    /api/users           ─► each user as ACL LIST shows it (password hashes, never passwords)
//!  PUT    /api/users/{name}    ─► {"rules": ["on", ">pw", "+@all"]} ─► auth::set_user ─► the log
//!  DELETE /api/users/{name}    ─► auth::del_users ─► the log
//! ```

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, put};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;
use super::api::{ApiResult, App, Body, Route, ok};
use super::client::Client;
use crate::auth::{self, SetUserError};

/// The user routes, for the route table.
pub(super) fn routes() -> Vec<Route> {
    let string = || json!({"type": "string"});
    let user = json!({"type": "object", "properties": {"name": string(), "enabled": {"type": "boolean"},
        "rules": string()}, "required": ["name", "enabled", "rules"]});
    vec![
        Route {
            method: "GET",
            path: "/api/whoami",
            operation: "whoami",
            summary: "The user this request runs as, and whether it may use the admin actions.",
            body: None,
            query: &[],
            response: Some(
                json!({"type": "object", "properties": {"user": string(), "admin": {"type": "boolean"},
                "authentication": {"type": "boolean"}}, "required": ["user", "admin", "authentication"]}),
            ),
            handler: get(whoami),
        },
        Route {
            method: "GET",
            path: "/api/users",
            operation: "list_users",
            summary: "Admin. Every user, with its rules as `ACL LIST` shows them (passwords as SHA-256 hashes).",
            body: None,
            query: &[],
            response: Some(json!({"type": "array", "items": user.clone()})),
            handler: get(list_users),
        },
        Route {
            method: "PUT",
            path: "/api/users/{name}",
            operation: "set_user",
            summary: "Admin. Creates or changes a user by `ACL SETUSER` rules, applied in order to the user as it is (a new one starts off, with nothing allowed): `on`, `>password`, `+@all`, `-@admin`, `~keys*`, `lock~app:*`, `queue~app:*`, `&channel*`, `reset`, ... Through the log: every node has it, and it survives a restart.",
            body: Some(
                json!({"type": "object", "properties": {"rules": {"type": "array", "items": string()}},
                "required": ["rules"]}),
            ),
            query: &[],
            response: Some(user),
            handler: put(set_user),
        },
        Route {
            method: "DELETE",
            path: "/api/users/{name}",
            operation: "delete_user",
            summary: "Admin. Deletes a user (not `default`); its requests in progress are refused from then on.",
            body: None,
            query: &[],
            response: Some(json!({"type": "object", "properties": {"deleted": {"type": "boolean"}},
                "required": ["deleted"]})),
            handler: delete(delete_user),
        },
    ]
}

async fn whoami(State(app): State<App>, client: Client) -> ApiResult {
    ok(json!({"user": client.name(), "admin": client.is_admin(), "authentication": app.users.required()}))
}

fn user_json(user: &turnstile_core::User) -> Value {
    json!({"name": user.name, "enabled": user.enabled, "rules": user.rules_text()})
}

async fn list_users(State(app): State<App>, client: Client) -> ApiResult {
    client.admin(&app, "acl", "list users")?;
    let table = app.users.table();
    ok(table.users.values().map(|u| user_json(u)).collect::<Vec<_>>())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    rules: Vec<String>,
}

async fn set_user(
    State(app): State<App>,
    client: Client,
    Path(name): Path<String>,
    Body(body): Body<UserBody>,
) -> ApiResult {
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(ApiError::bad_request("a user name must not be empty or contain spaces"));
    }
    // The audit names the rules, not the passwords in them.
    let shown: Vec<&str> =
        body.rules.iter().map(|r| if r.starts_with(['>', '<']) { &r[..1] } else { r.as_str() }).collect();
    client.admin(&app, "acl", &format!("set user {name:?}: {}", shown.join(" ")))?;
    let rules: Vec<&str> = body.rules.iter().map(String::as_str).collect();
    let mut session = client.session(&app);
    auth::set_user(&app, &mut session, &name, &rules, &known_command)
        .await
        .map_err(|e| refused(&app, &client, e))?;
    let table = app.users.table();
    let user = table.users.get(&name).ok_or_else(|| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "ERR", format!("user {name:?} is not in the table"))
    })?;
    ok(user_json(user))
}

async fn delete_user(State(app): State<App>, client: Client, Path(name): Path<String>) -> ApiResult {
    client.admin(&app, "acl", &format!("delete user {name:?}"))?;
    let mut session = client.session(&app);
    let deleted =
        auth::del_users(&app, &mut session, vec![name]).await.map_err(|e| refused(&app, &client, e))?;
    ok(json!({"deleted": deleted == 1}))
}

/// Whether `+name` / `-name` names a command: one of RESP's (HTTP has no command table of its
/// own; its routes are checked by the names of their RESP twins). `name|sub` names a subcommand
/// of a command that exists.
fn known_command(name: &str) -> bool {
    let top = name.split('|').next().unwrap_or(name);
    turnstile_resp::cmd::command_name(&[Bytes::copy_from_slice(top.as_bytes())]).is_some()
}

fn refused(app: &App, client: &Client, e: SetUserError) -> ApiError {
    match e {
        SetUserError::Rule(e) => ApiError::bad_request(e.to_string()),
        SetUserError::Default => ApiError::bad_request(e.to_string()),
        SetUserError::Refused(e) => client.refused(app, e, "acl"),
        SetUserError::Core(message) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "ERR", message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_rules_name_resp_commands() {
        assert!(known_command("q.purge"));
        assert!(known_command("get"));
        assert!(known_command("client|list"));
        assert!(!known_command("no.such.command"));
    }
}
