//! API errors: JSON `{"code", "message"}` with a stable `code` (the RESP error prefixes:
//! `ERR`, `WRONGTYPE`, `DEADLOCK`, `FENCED`, `LOST`, `FULL`, `OOM`, `NOTLEADER`, `CLUSTERDOWN`,
//! `NOAUTH`, `WRONGPASS`, `NOPERM`, ...) and the HTTP status that fits it (401 for the first two,
//! with a challenge added by `client.rs`; 403 for `NOPERM`).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use turnstile_core::CoreError;
use turnstile_raft::NodeError;

use crate::session::{CLUSTER_DOWN, Refused};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// With `NOTLEADER`: where the leader is, for the client to go there.
    pub leader: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    leader: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), leader: None }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "ERR", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body { code: self.code, message: &self.message, leader: self.leader.as_deref() };
        (self.status, Json(body)).into_response()
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> ApiError {
        let status = match &e {
            CoreError::Deadlock { .. } | CoreError::Fenced { .. } => StatusCode::CONFLICT,
            CoreError::LostHold { .. } | CoreError::LostDelivery { .. } => StatusCode::LOCKED,
            CoreError::NoSuchQueue(_) => StatusCode::NOT_FOUND,
            CoreError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            CoreError::WrongType { .. }
            | CoreError::QueueConfigMismatch(_)
            | CoreError::LimitMismatch { .. }
            | CoreError::ModeConflict { .. } => StatusCode::CONFLICT,
            // Another user's hold, delivery or session.
            CoreError::NoPerm(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<Refused> for ApiError {
    fn from(e: Refused) -> ApiError {
        let status = match &e {
            Refused::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Refused::NameTooLong { .. } | Refused::SessionOpen => StatusCode::BAD_REQUEST,
            Refused::OutOfMemory => StatusCode::INSUFFICIENT_STORAGE,
            Refused::NoPerm(_) => StatusCode::FORBIDDEN,
            Refused::Auth(_) => StatusCode::UNAUTHORIZED,
            // The node's refusals have their own statuses (and a leader to name).
            Refused::Node(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        match e {
            Refused::Node(e) => e.into(),
            e => ApiError::new(status, e.code(), e.to_string()),
        }
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> ApiError {
        match e {
            NodeError::NotLeader { leader: Some(addr) } => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "NOTLEADER",
                message: format!("not the leader; the leader is {addr}"),
                leader: Some(addr),
            },
            e @ (NodeError::NotLeader { leader: None } | NodeError::Unavailable(_)) => {
                tracing::debug!(reason = %e, "refused: no leader reachable");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "CLUSTERDOWN", CLUSTER_DOWN)
            }
            // The journal failed (a full disk, say): 507, as a storage that cannot take the
            // request; the text names the cause.
            e @ NodeError::WritesStopped(_) => {
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "ERR", e.to_string())
            }
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "ERR", other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_core_error_has_its_status_and_code() {
        let cases = [
            (CoreError::Deadlock { cycle: vec![] }, StatusCode::CONFLICT, "DEADLOCK"),
            (CoreError::Fenced { lock: "l".into(), token: 1 }, StatusCode::CONFLICT, "FENCED"),
            (CoreError::LostHold { token: 1 }, StatusCode::LOCKED, "LOST"),
            (CoreError::NoSuchQueue("q".into()), StatusCode::NOT_FOUND, "ERR"),
            (CoreError::QueueFull { name: "q".into(), max_len: 1 }, StatusCode::TOO_MANY_REQUESTS, "FULL"),
            (CoreError::BadDuration, StatusCode::BAD_REQUEST, "ERR"),
            (CoreError::NoPerm("hold 3 belongs to another user".into()), StatusCode::FORBIDDEN, "NOPERM"),
        ];
        for (error, status, code) in cases {
            let api = ApiError::from(error);
            assert_eq!((api.status, api.code), (status, code));
        }
    }

    #[test]
    fn each_refusal_has_its_status_and_code() {
        let cases = [
            (Refused::PayloadTooLarge { limit: 8 }, StatusCode::PAYLOAD_TOO_LARGE, "ERR"),
            (
                Refused::NameTooLong { kind: turnstile_core::NameKind::Queue, limit: 8 },
                StatusCode::BAD_REQUEST,
                "ERR",
            ),
            (Refused::OutOfMemory, StatusCode::INSUFFICIENT_STORAGE, "OOM"),
            (Refused::NoPerm(turnstile_core::Denied::Key), StatusCode::FORBIDDEN, "NOPERM"),
            (Refused::Auth(crate::auth::AuthError::NoAuth), StatusCode::UNAUTHORIZED, "NOAUTH"),
            (Refused::Auth(crate::auth::AuthError::WrongPass), StatusCode::UNAUTHORIZED, "WRONGPASS"),
            (
                Refused::Node(NodeError::NotLeader { leader: None }),
                StatusCode::SERVICE_UNAVAILABLE,
                "CLUSTERDOWN",
            ),
            (
                Refused::Node(NodeError::Unavailable("the leader's lease expired".into())),
                StatusCode::SERVICE_UNAVAILABLE,
                "CLUSTERDOWN",
            ),
        ];
        for (refused, status, code) in cases {
            let text = refused.to_string();
            let api = ApiError::from(refused);
            assert_eq!((api.status, api.code), (status, code));
            if code != "CLUSTERDOWN" {
                assert_eq!(api.message, text, "the same words as on every protocol");
            }
        }
    }

    #[test]
    fn a_node_whose_journal_failed_refuses_with_507_and_the_cause() {
        let api = ApiError::from(NodeError::WritesStopped("no space left on device (...)".into()));
        assert_eq!((api.status, api.code), (StatusCode::INSUFFICIENT_STORAGE, "ERR"));
        assert_eq!(api.message, "writes refused: no space left on device (...)");
    }

    #[test]
    fn a_follower_names_the_leader_and_a_node_without_one_says_the_cluster_is_down() {
        let api = ApiError::from(NodeError::NotLeader { leader: Some("10.0.0.2:7379".into()) });
        assert_eq!((api.status, api.code), (StatusCode::SERVICE_UNAVAILABLE, "NOTLEADER"));
        assert_eq!(api.leader.as_deref(), Some("10.0.0.2:7379"));
        let api = ApiError::from(NodeError::NotLeader { leader: None });
        assert_eq!(
            (api.code, api.message.as_str(), api.leader),
            ("CLUSTERDOWN", "no leader reachable", None)
        );
        let api = ApiError::from(NodeError::Unavailable("no quorum answered".into()));
        assert_eq!(
            (api.status, api.code, api.message.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "CLUSTERDOWN", CLUSTER_DOWN)
        );
    }
}
