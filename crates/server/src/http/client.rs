//! Who sent a request, and what they may do beyond their command rules.
//!
//! ```text
//!  request ─► authenticate (middleware): an open path (OPEN_PATHS)? ─► handler, as anyone
//!               │ authentication off: the default user (Authorization is not looked at)
//!               │ on:  Authorization: Basic user:password ─► Users::authenticate
//!               │                     Bearer token        ─► Users::authenticate_token
//!               │      none ─► Users::unauthenticated (the default user, if it needs no password)
//!               │      refused ─► 401 + WWW-Authenticate (a wrong one in ACL LOG, audit line)
//!               │      counted against the user's max-connections while it runs
//!               └ Client { identity, addr } in the request's extensions ─► handler (extractor)
//!  handler ─► Client::session ─► Session (checks the user's rules and names, runs as the user)
//!          ─► Client::admin for the admin actions: checked here, on the server, never only in the page
//! ```
//!
//! An HTTP request has no connection to hang a login on: every request carries its credentials,
//! and is one "connection" of its user for as long as it runs.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use turnstile_core::{Denied, Query};

use super::api::App;
use super::{ApiError, Peer};
use crate::auth::{AuthError, Identity, audit_admin};
use crate::server::Shared;
use crate::session::{Refused, Session};

/// Paths served to anyone, authentication on or off: the health checks (a load balancer or an
/// orchestrator has no credentials), the dashboard's page itself (it holds no data: it asks for
/// credentials and then reads the API with them) and the API's description.
pub const OPEN_PATHS: &[&str] = &["/healthz", "/readyz", "/", "/openapi.json"];

/// The challenge of a 401: either scheme will do.
pub const CHALLENGE: &str = r#"Basic realm="turnstile", Bearer realm="turnstile""#;

/// The challenge of a 401 to a script (`X-Requested-With: XMLHttpRequest`, as the dashboard
/// sends): a browser answers a Basic challenge with its own login dialog, over the page's form.
const SCRIPT_CHALLENGE: &str = r#"Bearer realm="turnstile""#;

/// Who sent a request. Handlers take it as an argument (it is in the request's extensions once
/// [`authenticate`] let the request through).
#[derive(Debug, Clone)]
pub struct Client {
    identity: Identity,
    addr: SocketAddr,
    /// Whether the server requires authentication (`requirepass` or `[users]`).
    authenticated: bool,
}

/// Authenticates every request but those to [`OPEN_PATHS`]; see the module docs.
pub async fn authenticate(State(app): State<App>, mut request: Request, next: Next) -> Response {
    if OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    // Every listener gives the peer's address; without one, the client counts as not local.
    let addr = request
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |ConnectInfo(Peer(addr))| *addr);
    let script = is_script(request.headers());
    let authenticated = app.users.required();
    let identity = if authenticated { identify(&app, request.headers(), addr) } else { Ok(None) };
    let identity = match identity {
        Ok(Some(identity)) => identity,
        Ok(None) => match app.users.unauthenticated() {
            Some(identity) => identity,
            None => {
                return challenge(ApiError::from(Refused::Auth(AuthError::NoAuth)).into_response(), script);
            }
        },
        Err(e) => return challenge(e.into_response(), script),
    };
    // One connection of its user while it runs: counted only where users exist to count.
    let _counted = if authenticated {
        match app.users.connect(&identity) {
            Ok(counted) => Some(counted),
            Err(e) => {
                return ApiError::new(StatusCode::TOO_MANY_REQUESTS, "ERR", e.to_string()).into_response();
            }
        }
    } else {
        None
    };
    request.extensions_mut().insert(Client { identity, addr, authenticated });
    let response = next.run(request).await;
    // A user deleted or turned off while the request ran: the session refused it with 401.
    challenge(response, script)
}

/// The identity the request's `Authorization` names; `None` when it has none.
fn identify(app: &Shared, headers: &HeaderMap, addr: SocketAddr) -> Result<Option<Identity>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let credentials = Credentials::parse(value.as_bytes());
    let identity = match &credentials {
        Credentials::Basic { user, password } => app.users.authenticate(user, password),
        Credentials::Bearer(token) => app.users.authenticate_token(token),
        Credentials::Malformed => Err(AuthError::WrongPass),
    };
    identity.map(Some).map_err(|e| {
        let info = client_info(addr);
        app.users.log.record("auth", "http", "AUTH", credentials.user(), &info);
        ApiError::from(Refused::Auth(e))
    })
}

/// What an `Authorization` header holds.
#[derive(Debug, PartialEq, Eq)]
enum Credentials {
    /// `user:password`, base64; an empty user is the default user (`curl -u :password`), as a
    /// one-argument `AUTH` is.
    Basic {
        user: String,
        password: Vec<u8>,
    },
    Bearer(Vec<u8>),
    /// Another scheme, or not decodable: refused as wrong credentials.
    Malformed,
}

impl Credentials {
    fn parse(value: &[u8]) -> Credentials {
        let text = String::from_utf8_lossy(value);
        let (scheme, rest) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            return Credentials::Bearer(rest.as_bytes().to_vec());
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Credentials::Malformed;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
            return Credentials::Malformed;
        };
        let Some(colon) = decoded.iter().position(|b| *b == b':') else { return Credentials::Malformed };
        let user = String::from_utf8_lossy(&decoded[..colon]).into_owned();
        let user = if user.is_empty() { turnstile_core::DEFAULT_USER.to_owned() } else { user };
        Credentials::Basic { user, password: decoded[colon + 1..].to_vec() }
    }

    /// The user name tried, for `ACL LOG`.
    fn user(&self) -> &str {
        match self {
            Credentials::Basic { user, .. } => user,
            Credentials::Bearer(_) => "(bearer token)",
            Credentials::Malformed => "(malformed)",
        }
    }
}

fn is_script(headers: &HeaderMap) -> bool {
    headers.get("x-requested-with").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"XMLHttpRequest"))
}

/// Adds the challenge to a 401.
fn challenge(mut response: Response, script: bool) -> Response {
    if response.status() == StatusCode::UNAUTHORIZED {
        let value = if script { SCRIPT_CHALLENGE } else { CHALLENGE };
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
    }
    response
}

/// How `ACL LOG` and the audit lines name an HTTP client.
fn client_info(addr: SocketAddr) -> String {
    format!("protocol=http addr={addr}")
}

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Client, ApiError> {
        parts.extensions.get::<Client>().cloned().ok_or_else(|| {
            // Only a route listed in OPEN_PATHS can get here: a mistake in this file.
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "ERR", "an open route asked who the client is")
        })
    }
}

impl Client {
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn name(&self) -> &str {
        self.identity.name()
    }

    /// Whether the client may use the admin actions: with authentication on, a user who may run
    /// `@admin`; off, a client on this machine (loopback), as the dashboard always offered them.
    pub fn is_admin(&self) -> bool {
        if self.authenticated { self.identity.is_admin() } else { self.addr.ip().is_loopback() }
    }

    /// Whose holds, waiters and sessions a listing shows this client: `None` for everyone's
    /// (an admin), else this user's own.
    pub fn viewer(&self) -> Option<&str> {
        (!self.identity.is_admin()).then(|| self.identity.name())
    }

    /// A session that runs commands as this client's user (checked against its rules and names).
    pub fn session(&self, shared: &std::sync::Arc<Shared>) -> Session {
        let mut session = Session::new(shared.clone());
        session.set_identity(self.identity.clone());
        session
    }

    /// Refuses an admin action to a client that is not an admin (403 `NOPERM`, in `ACL LOG`);
    /// lets it through with an audit line otherwise. `command` names it as `ACL` rules and
    /// `-NOPERM` texts do (`q.purge`, `acl`); `action` says what it does, for the audit.
    pub fn admin(&self, app: &Shared, command: &str, action: &str) -> Result<(), ApiError> {
        if self.is_admin() {
            audit_admin(self.name(), &client_info(self.addr), action);
            return Ok(());
        }
        app.users.log.record("command", "http", command, self.name(), &client_info(self.addr));
        let message = if self.authenticated {
            Denied::Command { user: self.name().to_owned(), command: command.to_owned() }.to_string()
        } else {
            format!(
                "'{command}' is an admin action, for clients on this machine (loopback) while no users are configured"
            )
        };
        Err(ApiError::new(StatusCode::FORBIDDEN, "NOPERM", message))
    }

    /// Checks a read the handler makes itself (a listing read at one point with the node's
    /// state): the user's rules for it, and its names.
    pub fn check_query(&self, app: &Shared, query: &Query) -> Result<(), ApiError> {
        self.identity
            .check_query(query)
            .map_err(|d| self.refused(app, Refused::NoPerm(d), query.categories().0))
    }

    /// The API error for a refusal, recorded in `ACL LOG` when it was a permission (`command`:
    /// what was refused, as `-NOPERM` texts name it).
    pub fn refused(&self, app: &Shared, refused: Refused, command: &str) -> ApiError {
        if let Refused::NoPerm(denied) = &refused {
            let reason = match denied {
                Denied::Command { .. } => "command",
                Denied::Key => "key",
                Denied::Channel => "channel",
                Denied::Name(kind) => kind,
                Denied::NotOwner(_) => "owner",
            };
            app.users.log.record(reason, "http", command, self.name(), &client_info(self.addr));
        }
        refused.into()
    }

    /// Records the core's refusal of another user's hold, delivery or session (`NOPERM`).
    pub fn refused_by_owner(&self, app: &Shared, what: &str) {
        app.users.log.record("owner", "http", what, self.name(), &client_info(self.addr));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(text: &str) -> Vec<u8> {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(text)).into_bytes()
    }

    #[test]
    fn authorization_headers_are_read_as_basic_or_bearer() {
        assert_eq!(
            Credentials::parse(&basic("alice:pa:ss")),
            Credentials::Basic { user: "alice".into(), password: b"pa:ss".to_vec() },
            "the password is everything after the first colon"
        );
        assert_eq!(
            Credentials::parse(&basic(":pw")),
            Credentials::Basic { user: "default".into(), password: b"pw".to_vec() }
        );
        assert_eq!(Credentials::parse(b"bearer  t0k"), Credentials::Bearer(b"t0k".to_vec()));
        for bad in [&b"Basic !!!"[..], &basic("no colon"), b"Bearer", b"Digest x", b""] {
            assert_eq!(Credentials::parse(bad), Credentials::Malformed, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn without_users_admin_actions_are_for_loopback_clients_only() {
        let open = |addr: &str| Client {
            identity: Identity::open(),
            addr: addr.parse().unwrap(),
            authenticated: false,
        };
        assert!(open("127.0.0.1:5000").is_admin());
        assert!(open("[::1]:5000").is_admin());
        assert!(
            !open("10.1.2.3:5000").is_admin(),
            "the default user has every permission, but not from afar"
        );
        let authenticated = Client { authenticated: true, ..open("10.1.2.3:5000") };
        assert!(authenticated.is_admin(), "with users, an admin user is one from anywhere");
    }
}
