//! `/openapi.json`: the OpenAPI 3 document, generated from the route table, so it lists exactly
//! the routes the router serves.

use serde_json::{Map, Value, json};

use super::api::Route;

pub fn document(routes: &[Route]) -> Value {
    let mut paths = Map::new();
    for route in routes {
        let mut parameters: Vec<Value> = path_params(route.path)
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        parameters.extend(route.query.iter().map(|(name, description)| {
            json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": "string"}})
        }));
        let ok = match &route.response {
            Some(schema) => json!({"description": "OK", "content": {"application/json": {"schema": schema}}}),
            None => json!({"description": "OK"}),
        };
        let mut operation = json!({
            "operationId": route.operation,
            "summary": route.summary,
            "parameters": parameters,
            "responses": {"200": ok, "default": {"$ref": "#/components/responses/Error"}},
        });
        if super::client::OPEN_PATHS.contains(&route.path) {
            operation["security"] = json!([]);
        }
        if let Some(body) = &route.body {
            operation["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": body}}});
        }
        let item = paths.entry(route.path.to_owned()).or_insert_with(|| json!({}));
        item[route.method.to_ascii_lowercase()] = operation;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Turnstile HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Locks, semaphores and queues over HTTP/JSON. Durations are milliseconds. Holds and deliveries taken over HTTP are KEEP: only their lease, or a release / ack / nack by token or receipt, ends them. When the server has users (requirepass or [users]), every route but the health checks, the dashboard page and this document needs HTTP Basic (user:password) or a Bearer token of a user; each request runs with that user's permissions.",
        },
        "security": [{"basic": []}, {"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string", "description": "Stable: ERR, WRONGTYPE, DEADLOCK, FENCED, LOST, FULL, OOM, NOTLEADER, CLUSTERDOWN, TRYAGAIN, NOAUTH, WRONGPASS, NOPERM"},
                        "message": {"type": "string"},
                        "leader": {"type": "string", "description": "With NOTLEADER: the leader's address"},
                    },
                },
            },
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic", "description": "A user's name and password; an empty name is the default user (requirepass)."},
                "bearer": {"type": "http", "scheme": "bearer", "description": "One of a user's tokens (config `tokens` / `tokens-sha256`)."},
            },
            "responses": {
                "Error": {
                    "description": "400 bad input, 401 NOAUTH / WRONGPASS (no or wrong credentials; with WWW-Authenticate), 403 NOPERM (the user may not run this, touch this name, or act on another user's hold or delivery; admin actions), 404 no such queue or route, 429 max-connections of the user reached, 409 DEADLOCK / FENCED / conflicting configuration, 413 body too large, 423 LOST, 429 FULL, 503 NOTLEADER / CLUSTERDOWN / TRYAGAIN, 507 OOM",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
            },
        },
    })
}

/// The `{name}` segments of a path.
fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}
