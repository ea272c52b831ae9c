//! etcd as a peer of `turnstile bench locks`: the lock cycle of etcd's own concurrency API, over
//! the JSON gateway that etcd (3.4 and later) serves on its client port.
//!
//! ```text
//!  open:  connect ─► POST /v3/lease/grant {"TTL": 30} ─► lease ID (one per client)
//!  op:    POST /v3/lock/lock {"name": base64(name), "lease": ID} ─► {"key": K}   (waits in line)
//!         POST /v3/lock/unlock {"key": K}
//!  close: POST /v3/lease/revoke {"ID": ID}   (whatever the lease still holds is released)
//! ```
//!
//! etcd's lock waits until the lock is free: a contended acquire never comes back empty-handed,
//! unlike Turnstile's `LOCK.ACQUIRE` without `WAIT` (a miss, retried). So with one hot lock an
//! etcd op includes its wait in line, and every op is a whole cycle on both.

mod http;

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};

use http::{HttpConnection, Response};

/// The lease each client takes, in seconds: what holds a lock whose client went away.
const LEASE_TTL_SECS: u64 = 30;

/// A lease older than this is replaced before the next op, so no lease runs out under a long
/// run (the gateway's keep-alive is a stream; a new lease is one request).
const LEASE_RENEW_AFTER: Duration = Duration::from_secs(LEASE_TTL_SECS / 3);

/// One bench client's connection to an etcd member and the lease its locks are taken under.
#[derive(Debug)]
pub(super) struct Session {
    http: HttpConnection,
    /// The lease ID as etcd wrote it (a decimal int64), sent back as it came.
    lease: String,
    granted: Instant,
    /// Set by an error reply: the lease may be gone, so the caller opens a new session.
    failed: bool,
}

impl Session {
    /// Connects to `addr` (HOST:PORT of a member's client URL) and takes a lease.
    pub(super) async fn open(addr: &str, timeout: Duration) -> anyhow::Result<Session> {
        let mut http = HttpConnection::connect(addr, timeout).await?;
        let lease = grant(&mut http).await?;
        Ok(Session { http, lease, granted: Instant::now(), failed: false })
    }

    pub(super) fn is_broken(&self) -> bool {
        self.failed || self.http.is_broken()
    }

    /// Locks `name` (waiting in line while others hold it) and unlocks it.
    pub(super) async fn lock_cycle(&mut self, name: &[u8]) -> anyhow::Result<()> {
        let result = self.try_lock_cycle(name).await;
        self.failed |= result.is_err();
        result
    }

    async fn try_lock_cycle(&mut self, name: &[u8]) -> anyhow::Result<()> {
        if self.granted.elapsed() >= LEASE_RENEW_AFTER {
            // The old lease holds nothing between ops: it just runs out.
            self.lease = grant(&mut self.http).await?;
            self.granted = Instant::now();
        }
        let lock = json!({ "name": base64(name), "lease": self.lease });
        let reply = call(&mut self.http, "/v3/lock/lock", &lock).await?;
        let key = lock_key(&reply)?;
        call(&mut self.http, "/v3/lock/unlock", &json!({ "key": key })).await?;
        Ok(())
    }

    /// Revokes the lease, releasing anything it still holds; errors are of no interest then.
    pub(super) async fn close(mut self, timeout: Duration) {
        if !self.http.is_broken() {
            let revoke = json!({ "ID": self.lease });
            let _ = tokio::time::timeout(timeout, call(&mut self.http, "/v3/lease/revoke", &revoke)).await;
        }
    }
}

async fn grant(http: &mut HttpConnection) -> anyhow::Result<String> {
    let reply = call(http, "/v3/lease/grant", &json!({ "TTL": LEASE_TTL_SECS })).await?;
    lease_id(&reply)
}

/// One request; a reply that is not 200 with a JSON object is an error naming the endpoint.
async fn call(http: &mut HttpConnection, path: &str, request: &Value) -> anyhow::Result<Value> {
    let body = serde_json::to_vec(request)?;
    let response = http.post_json(path, &body).await?;
    reply(&response).with_context(|| path.to_owned())
}

/// The JSON of a 200 reply; for any other status, etcd's error message.
fn reply(response: &Response) -> anyhow::Result<Value> {
    let json: Option<Value> = serde_json::from_slice(&response.body).ok();
    if response.status != 200 {
        // The gateway's errors: {"error": "...", "message": "...", "code": N} (a gRPC code).
        let message =
            json.as_ref().and_then(|j| j.get("message").or_else(|| j.get("error"))).and_then(Value::as_str);
        return Err(match message {
            Some(message) => anyhow!("etcd answered HTTP {}: {message}", response.status),
            None => anyhow!(
                "etcd answered HTTP {}: {}",
                response.status,
                crate::bench::report::shorten(&String::from_utf8_lossy(&response.body))
            ),
        });
    }
    match json {
        Some(json @ Value::Object(_)) => Ok(json),
        _ => bail!(
            "not a JSON object: {}",
            crate::bench::report::shorten(&String::from_utf8_lossy(&response.body))
        ),
    }
}

/// The `ID` of a lease grant: an int64, which the gateway writes as a string of digits (some
/// JSON encoders write a number). A grant refused inside a 200 has `error` set.
fn lease_id(reply: &Value) -> anyhow::Result<String> {
    if let Some(error) = reply.get("error").and_then(Value::as_str).filter(|e| !e.is_empty()) {
        bail!("lease grant refused: {error}");
    }
    let id = match reply.get("ID") {
        Some(Value::String(id)) => id.clone(),
        Some(Value::Number(id)) => id.to_string(),
        _ => bail!("a lease grant without an ID: {reply}"),
    };
    id.parse::<i64>().with_context(|| format!("a lease ID that is not an int64: {id:?}"))?;
    Ok(id)
}

/// The `key` a lock reply names (base64, as etcd sends bytes): what unlock takes.
fn lock_key(reply: &Value) -> anyhow::Result<String> {
    match reply.get("key") {
        Some(Value::String(key)) if !key.is_empty() => Ok(key.clone()),
        _ => bail!("a lock reply without a key: {reply}"),
    }
}

/// Standard base64 with padding (RFC 4648 §4): how the gateway takes bytes fields.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let n = group.iter().enumerate().fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// How many leases the etcd member at `addr` holds.
    pub(crate) async fn lease_count(addr: &str) -> anyhow::Result<usize> {
        let mut http = HttpConnection::connect(addr, Duration::from_secs(5)).await?;
        let reply = call(&mut http, "/v3/lease/leases", &json!({})).await?;
        // The gateway leaves out an empty list.
        Ok(reply.get("leases").and_then(Value::as_array).map_or(0, Vec::len))
    }

    #[test]
    fn base64_matches_the_rfc_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
        assert_eq!(base64(b"bench:lock:7"), "YmVuY2g6bG9jazo3");
    }

    fn response(status: u16, body: &str) -> Response {
        Response { status, body: body.as_bytes().to_vec(), keep_alive: true }
    }

    /// Replies as etcd 3.4.23's gateway wrote them.
    #[test]
    fn the_lease_and_the_lock_key_come_from_etcds_replies() -> anyhow::Result<()> {
        let header = r#""header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"2","raft_term":"2"}"#;
        let grant = reply(&response(200, &format!(r#"{{{header},"ID":"4111120483033118725","TTL":"30"}}"#)))?;
        assert_eq!(lease_id(&grant)?, "4111120483033118725");
        assert_eq!(lease_id(&json!({"ID": 7, "TTL": 30}))?, "7");
        let lock = reply(&response(200, &format!(r#"{{{header},"key":"Zm9vLzM5MGRhMjRjMzQwNTc4MDU="}}"#)))?;
        assert_eq!(lock_key(&lock)?, "Zm9vLzM5MGRhMjRjMzQwNTc4MDU=");
        // unlock's reply carries only the header.
        assert!(reply(&response(200, &format!("{{{header}}}"))).is_ok());
        Ok(())
    }

    #[test]
    fn etcds_errors_are_errors_with_its_message() {
        let err = reply(&response(
            500,
            r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":2}"#,
        ))
        .unwrap_err();
        assert_eq!(err.to_string(), "etcd answered HTTP 500: etcdserver: requested lease not found");
        let err = reply(&response(503, "upstream gone")).unwrap_err();
        assert_eq!(err.to_string(), "etcd answered HTTP 503: upstream gone");
        assert!(reply(&response(200, "[1]")).is_err());
        assert!(reply(&response(200, "not json")).is_err());
        assert!(lease_id(&json!({"ID": "0", "error": "etcdserver: too many requests"})).is_err());
        assert!(lease_id(&json!({"ID": "twelve"})).is_err());
        assert!(lease_id(&json!({"TTL": "30"})).is_err());
        assert!(lock_key(&json!({"header": {}})).is_err());
        assert!(lock_key(&json!({"key": ""})).is_err());
    }
}
