//! Users over RESP: `AUTH`, `HELLO ... AUTH`, `ACL ...`, and the gate every request passes
//! before it is acted on.
//!
//! ```text
//!  request ─► Gate::check ─┬─ not authenticated, and not AUTH/HELLO/QUIT/RESET ─► -NOAUTH
//!                          ├─ its user was deleted or turned off ─────────────► connection closed
//!                          ├─ the command table's rules (categories, names) ───► -NOPERM ... command
//!                          ├─ parse
//!                          └─ the keys, locks, queues, channels it names ──────► -NOPERM ... keys
//!                              (the session checks names again, and wraps the command in AsUser)
//! ```
//!
//! Refusals are written to `ACL LOG` (and the `audit` log target) with the client's
//! `CLIENT LIST` line. With no users and no `requirepass`, a connection is the open `default`
//! user and the gate checks nothing, so the plain path pays nothing.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use turnstile_core::{Denied, NameKind};
use turnstile_resp::Frame;
use turnstile_resp::cmd::{self, AclCmd, Action, ConnCmd, PubSubCmd, TxCmd};

use super::{Connection, refused};
use crate::auth::{self, AuthError, Identity, SetUserError};
use crate::clients::Client;
use crate::server::Shared;
use crate::stats::bump;

/// What the request loop checks before it acts on a request; see the module docs. Shared with
/// the loop's request iterator, which runs it as each request is taken, so a pipeline's
/// `AUTH` counts for the requests after it.
#[derive(Debug)]
pub(crate) struct Gate {
    shared: Arc<Shared>,
    state: Mutex<GateState>,
}

#[derive(Debug)]
struct GateState {
    identity: Option<Identity>,
    /// Whether anything is checked: authentication is on, or the connection is a user other
    /// than the open `default`.
    checks: bool,
    /// The user was deleted or turned off: the connection closes.
    gone: bool,
}

impl Gate {
    pub(crate) fn new(shared: Arc<Shared>, identity: Option<Identity>) -> Gate {
        let checks = checks(&shared, identity.as_ref());
        Gate { shared, state: Mutex::new(GateState { identity, checks, gone: false }) }
    }

    /// The connection authenticated as `identity`.
    pub(crate) fn set(&self, identity: Identity) {
        let mut state = self.state();
        state.checks = checks(&self.shared, Some(&identity));
        state.identity = Some(identity);
    }

    /// Whether the connection's user is gone, so it must close.
    pub(crate) fn gone(&self) -> bool {
        self.state().gone
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().expect("gate lock")
    }

    /// Checks and parses one request (`parse` is the loop's parse, subscribed mode's rules in it).
    pub(crate) fn check(
        &self,
        args: &[Bytes],
        client: &Client,
        parse: impl FnOnce() -> Result<Action, Frame>,
    ) -> Result<Action, Frame> {
        let mut state = self.state();
        if !state.checks {
            drop(state);
            return parse();
        }
        let users = &self.shared.users;
        let identity = match state.identity.take() {
            None if cmd::runs_unauthenticated(args) => {
                drop(state);
                return parse();
            }
            None => return Err(Frame::error("NOAUTH", AuthError::NoAuth)),
            Some(identity) => match users.refresh(&identity) {
                Some(now) => now,
                None => {
                    state.gone = true;
                    return Err(Frame::error("NOAUTH", AuthError::NoAuth));
                }
            },
        };
        state.identity = Some(identity.clone());
        drop(state);
        if let Err(name) = cmd::permitted(args, identity.perms()) {
            users.log.record("command", "toplevel", name, identity.name(), &client.line());
            return Err(no_perm(&Denied::Command { user: identity.name().to_owned(), command: name.into() }));
        }
        let action = parse()?;
        if let Some((denied, object)) = denied_name(&identity, &action) {
            users.log.record(reason(&denied), "toplevel", &object, identity.name(), &client.line());
            return Err(no_perm(&denied));
        }
        Ok(action)
    }
}

fn checks(shared: &Shared, identity: Option<&Identity>) -> bool {
    shared.users.required() || identity.is_none_or(|id| id.name() != turnstile_core::DEFAULT_USER)
}

/// The first name of `action` the user may not touch: the refusal and the name.
fn denied_name(identity: &Identity, action: &Action) -> Option<(Denied, String)> {
    let perms = identity.perms();
    let mut found = None;
    let mut look = |kind: NameKind, name: &str| {
        if found.is_none() && !perms.allows_name(kind, name.as_bytes()) {
            let denied = match kind {
                NameKind::Key => Denied::Key,
                other => Denied::Name(other.as_str()),
            };
            found = Some((denied, name.to_owned()));
        }
    };
    // A script's declared keys are checked before it runs, as Redis checks them.
    let declared = match action {
        Action::Write { cmd: turnstile_core::Command::Eval(eval), .. }
        | Action::Read { query: turnstile_core::Query::Eval(eval), .. } => eval.keys.as_slice(),
        _ => &[],
    };
    if let Some(key) = declared.iter().find(|k| !perms.allows_name(NameKind::Key, k)) {
        return Some((Denied::Key, String::from_utf8_lossy(key).into_owned()));
    }
    match action {
        Action::Write { cmd, .. } => cmd.names(&mut look),
        Action::Read { query, .. } => query.names(&mut look),
        Action::Connection(ConnCmd::Transaction(TxCmd::Watch(keys))) => {
            keys.iter().for_each(|k| look(NameKind::Key, k));
        }
        Action::Connection(ConnCmd::PubSub(pubsub)) => {
            let channel = |c: &Bytes| (Denied::Channel, String::from_utf8_lossy(c).into_owned());
            return match pubsub {
                PubSubCmd::Subscribe(names) => names.iter().find(|c| !perms.allows_channel(c)).map(channel),
                PubSubCmd::PSubscribe(names) => {
                    names.iter().find(|c| !perms.allows_channel_pattern(c)).map(channel)
                }
                PubSubCmd::Publish { channel: c, .. } => (!perms.allows_channel(c)).then(|| channel(c)),
                _ => None,
            };
        }
        Action::Connection(_) => {}
    }
    if let Action::Write { cmd: turnstile_core::Command::PubSubPublish { channel: c, .. }, .. } = action
        && !perms.allows_channel(c)
    {
        return Some((Denied::Channel, String::from_utf8_lossy(c).into_owned()));
    }
    found
}

/// `ACL LOG`'s reason for a refusal.
fn reason(denied: &Denied) -> &'static str {
    match denied {
        Denied::Command { .. } => "command",
        Denied::Key => "key",
        Denied::Channel => "channel",
        Denied::Name(kind) => kind,
        Denied::NotOwner(_) => "owner",
    }
}

/// A refusal as Redis 7 words it over RESP (locks, queues and exchanges in the same words as keys).
pub(super) fn no_perm(denied: &Denied) -> Frame {
    let text = match denied {
        Denied::Command { command, .. } => {
            format!("this user has no permissions to run the '{command}' command")
        }
        Denied::Key => "this user has no permissions to access one of the keys used as arguments".into(),
        Denied::Channel => {
            "this user has no permissions to access one of the channels used as arguments".into()
        }
        Denied::Name(kind) => {
            format!("this user has no permissions to access one of the {kind}s used as arguments")
        }
        Denied::NotOwner(what) => format!("{what} belongs to another user"),
    };
    Frame::error("NOPERM", text)
}

impl Connection {
    /// `AUTH [user] pass` and `HELLO ... AUTH user pass` (`command` names which, for `ACL LOG`).
    pub(super) fn authenticate(
        &mut self,
        user: Option<&Bytes>,
        pass: &Bytes,
        command: &str,
    ) -> Result<(), Frame> {
        let users = self.shared.users.clone();
        let name = match user {
            Some(user) => String::from_utf8_lossy(user).into_owned(),
            None => {
                let open = users.table().users.get(turnstile_core::DEFAULT_USER).is_some_and(|u| u.nopass);
                if open {
                    return Err(Frame::error(
                        "ERR",
                        "AUTH <password> called without any password configured for the default user. \
                         Are you sure your configuration is correct?",
                    ));
                }
                turnstile_core::DEFAULT_USER.to_owned()
            }
        };
        let identity = match users.authenticate(&name, pass) {
            Ok(identity) => identity,
            Err(e) => {
                bump(&self.shared.stats.counters.resp_auth_failures);
                users.log.record("auth", "toplevel", command, &name, &self.client.line());
                return Err(Frame::error(e.code(), e));
            }
        };
        let counted = users.connect(&identity).map_err(|e| {
            bump(&self.shared.stats.counters.user_connections_refused);
            Frame::error("ERR", e)
        })?;
        self.counted = Some(counted);
        self.client.set_user(identity.name());
        self.gate.set(identity.clone());
        self.session.set_identity(identity);
        Ok(())
    }

    /// `ACL ...`.
    pub(super) async fn acl(&mut self, c: AclCmd) -> Frame {
        let who = match self.session.who() {
            Ok(who) => who.clone(),
            Err(e) => return refused(&e),
        };
        let table = self.shared.users.table();
        match c {
            AclCmd::WhoAmI => Frame::bulk(who.name().to_owned()),
            AclCmd::Users => Frame::Array(table.users.keys().map(|n| Frame::bulk(n.clone())).collect()),
            AclCmd::List => Frame::Array(table.users.values().map(|u| Frame::bulk(u.rules_text())).collect()),
            AclCmd::GetUser(name) => match table.users.get(&*String::from_utf8_lossy(&name)) {
                Some(user) => getuser(user),
                None => Frame::Null,
            },
            AclCmd::Cat(None) => cmd::categories_text(),
            AclCmd::Cat(Some(category)) => cmd::category_commands(&category),
            AclCmd::Log(count) => {
                let entries = self.shared.users.log.entries(count);
                Frame::Array(entries.iter().map(log_entry).collect())
            }
            AclCmd::LogReset => {
                self.shared.users.log.reset();
                Frame::ok()
            }
            AclCmd::SetUser { name, rules } => {
                let name = String::from_utf8_lossy(&name).into_owned();
                let rules: Vec<String> =
                    rules.iter().map(|r| String::from_utf8_lossy(r).into_owned()).collect();
                auth::audit_admin(
                    who.name(),
                    &self.client.line(),
                    &format!("ACL SETUSER {name} {}", rules.join(" ")),
                );
                let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
                match auth::set_user(&self.shared, &mut self.session, &name, &rules, &cmd::known_command)
                    .await
                {
                    Ok(()) => Frame::ok(),
                    Err(e) => set_user_error(&e),
                }
            }
            AclCmd::DelUser(names) => {
                let names: Vec<String> =
                    names.iter().map(|n| String::from_utf8_lossy(n).into_owned()).collect();
                auth::audit_admin(
                    who.name(),
                    &self.client.line(),
                    &format!("ACL DELUSER {}", names.join(" ")),
                );
                match auth::del_users(&self.shared, &mut self.session, names).await {
                    Ok(n) => Frame::Integer(i64::try_from(n).unwrap_or(i64::MAX)),
                    Err(e) => set_user_error(&e),
                }
            }
        }
    }
}

fn set_user_error(e: &SetUserError) -> Frame {
    match e {
        SetUserError::Refused(e) => refused(e),
        other => Frame::error("ERR", other),
    }
}

/// `ACL GETUSER`'s map, Redis 7's fields (`selectors` always empty) and ours, `locks` and
/// `queues`, in the rules' own syntax.
fn getuser(user: &turnstile_core::User) -> Frame {
    let mut flags = vec![Frame::bulk(if user.enabled { "on" } else { "off" })];
    if user.nopass {
        flags.push(Frame::bulk("nopass"));
    }
    let patterns = |prefix: &str, list: &[String]| {
        Frame::bulk(list.iter().map(|p| format!("{prefix}{p}")).collect::<Vec<_>>().join(" "))
    };
    let p = &user.perms;
    let field = |name: &'static str, value: Frame| (Frame::bulk(name), value);
    Frame::Map(vec![
        field("flags", Frame::Array(flags)),
        field("passwords", Frame::Array(user.passwords.iter().map(|h| Frame::bulk(h.clone())).collect())),
        field("commands", Frame::bulk(commands_text(p))),
        field("keys", patterns("~", &p.keys)),
        field("channels", patterns("&", &p.channels)),
        field("selectors", Frame::Array(vec![])),
        field("locks", patterns("lock~", &p.locks)),
        field("queues", patterns("queue~", &p.queues)),
    ])
}

/// The command rules as Redis 7 shows them: from `-@all` unless they start from `+@all`.
fn commands_text(perms: &turnstile_core::Perms) -> String {
    let text = perms.commands_text();
    if text.starts_with("+@all") || text.starts_with("-@all") { text } else { format!("-@all {text}") }
}

/// One `ACL LOG` entry: Redis 7.0's fields.
fn log_entry(e: &auth::AclLogEntry) -> Frame {
    let field = |name: &'static str, value: Frame| (Frame::bulk(name), value);
    Frame::Map(vec![
        field("count", Frame::Integer(i64::try_from(e.count).unwrap_or(i64::MAX))),
        field("reason", Frame::bulk(e.reason.clone())),
        field("context", Frame::bulk(e.context.clone())),
        field("object", Frame::bulk(e.object.clone())),
        field("username", Frame::bulk(e.username.clone())),
        field("age-seconds", Frame::Double(e.created.elapsed().as_secs_f64())),
        field("client-info", Frame::bulk(e.client_info.clone())),
    ])
}

/// Closes this node's connections whose user was deleted or turned off, as Redis does. Called
/// whenever the user table changed.
pub(crate) fn close_gone(shared: &Shared) {
    let table = shared.users.table();
    for client in shared.clients.list() {
        let user = client.user();
        if !table.users.get(&user).is_some_and(|u| u.enabled) {
            client.kill();
        }
    }
}
