//! The user table every front end authenticates against, and who each connection is.
//!
//! ```text
//!  config file: requirepass, [users.*], [amqp-users] ──┐
//!                                                      ├─► Users::reload ─► Table (one Arc, swapped)
//!  the log: ACL SETUSER / DELUSER (State::acl_layer) ──┘        ▲
//!        apply emits Effect::UsersChanged ─► router ─► notify ──┘ (a task re-reads the layer)
//!
//!  front end: AUTH / HTTP Basic, Bearer / AMQP PLAIN ─► Users::authenticate ─► Identity
//!  every command: Session checks Identity's Perms; with authentication on, it runs as
//!                 Command::AsUser, so the state machine knows whose holds are whose
//! ```
//!
//! With neither `requirepass` nor `[users]` configured, authentication is off: every connection
//! is the `default` user with every permission, as in Redis, and nothing is wrapped (the plain
//! path pays nothing). `[amqp-users]` (RabbitMQ-style logins, `guest` by default) are users of
//! the table with every permission; they do not turn authentication on by themselves.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::Notify;
use turnstile_core::{Caller, Command, DEFAULT_USER, Denied, Perms, Query, User, is_hash};

use crate::config::{Config, ConfigError, UserConfig};

/// The users as this node sees them now.
#[derive(Debug)]
pub struct Users {
    /// The config file's users (and the default user it implies).
    config: BTreeMap<String, User>,
    /// Whether clients must authenticate: `requirepass` or `[users]` is set.
    required: bool,
    table: RwLock<Arc<Table>>,
    /// Bumped on every reload: an [`Identity`] refreshes its user when it sees a new one.
    generation: AtomicU64,
    /// Woken when the log's layer changed (the router sees [`turnstile_core::Effect::UsersChanged`]).
    changed: Notify,
    /// Connections open per user here.
    connections: Connections,
    /// `ACL LOG`.
    pub log: AclLog,
}

/// The effective users: the config file's with the log's layer over them.
#[derive(Debug, Default)]
pub struct Table {
    pub users: BTreeMap<String, Arc<User>>,
}

/// Why authentication failed, with Redis's texts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A wrong password, an unknown or disabled user: one text for all, as Redis does.
    #[error("invalid username-password pair or user is disabled.")]
    WrongPass,
    /// The connection has not authenticated and must.
    #[error("Authentication required.")]
    NoAuth,
}

impl AuthError {
    /// The RESP error prefix.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::WrongPass => "WRONGPASS",
            AuthError::NoAuth => "NOAUTH",
        }
    }
}

impl Users {
    /// The table the config file describes, before the log's layer.
    pub fn from_config(config: &Config) -> Result<Users, ConfigError> {
        let required = config.requirepass.is_some() || !config.users.is_empty();
        let mut users = BTreeMap::new();
        // The built-in guest/guest is a convenience for a server nobody else can reach; once
        // authentication is on it would be a well-known password with every permission.
        let builtin_guest = Config::default().amqp_users;
        let amqp_users = if required && config.amqp_users == builtin_guest {
            &BTreeMap::new()
        } else {
            &config.amqp_users
        };
        for (name, password) in amqp_users {
            let mut user = User::open_default();
            user.name = name.clone();
            user.nopass = false;
            user.passwords.insert(turnstile_core::hash_secret(password.as_bytes()));
            users.insert(name.clone(), user);
        }
        let mut default = User::open_default();
        if let Some(pass) = &config.requirepass {
            default.nopass = false;
            default.passwords.insert(turnstile_core::hash_secret(pass.as_bytes()));
        } else if required {
            // Users without requirepass: the default user is off (Redis would leave it open, with
            // every permission, to anyone who does not authenticate). `[users.default]` decides
            // otherwise.
            default.enabled = false;
        }
        users.insert(DEFAULT_USER.to_owned(), default);
        for (name, entry) in &config.users {
            users.insert(name.clone(), user_from_config(name, entry)?);
        }
        let table = Table { users: users.iter().map(|(n, u)| (n.clone(), Arc::new(u.clone()))).collect() };
        Ok(Users {
            config: users,
            required,
            table: RwLock::new(Arc::new(table)),
            generation: AtomicU64::new(0),
            changed: Notify::new(),
            connections: Connections::default(),
            log: AclLog::default(),
        })
    }

    /// Whether clients must authenticate.
    pub fn required(&self) -> bool {
        self.required
    }

    /// The table now.
    pub fn table(&self) -> Arc<Table> {
        self.table.read().expect("users lock").clone()
    }

    /// Rebuilds the table from the config file's users and the log's `layer`.
    pub fn reload(&self, layer: &BTreeMap<String, Option<User>>) {
        let mut users: BTreeMap<String, Arc<User>> =
            self.config.iter().map(|(n, u)| (n.clone(), Arc::new(u.clone()))).collect();
        for (name, user) in layer {
            match user {
                Some(user) => users.insert(name.clone(), Arc::new(user.clone())),
                None => users.remove(name),
            };
        }
        *self.table.write().expect("users lock") = Arc::new(Table { users });
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Says the log's layer changed: [`Users::changes`] wakes.
    pub fn mark_changed(&self) {
        self.changed.notify_one();
    }

    /// Resolves when the log's layer changed since the last call.
    pub async fn changes(&self) {
        self.changed.notified().await;
    }

    /// The user `name` if `password` authenticates it.
    pub fn authenticate(&self, name: &str, password: &[u8]) -> Result<Identity, AuthError> {
        let table = self.table();
        match table.users.get(name) {
            Some(user) if user.accepts_password(password) => Ok(self.identity(user.clone())),
            _ => Err(AuthError::WrongPass),
        }
    }

    /// The user whose bearer token `token` is (HTTP).
    pub fn authenticate_token(&self, token: &[u8]) -> Result<Identity, AuthError> {
        let table = self.table();
        // Hashed once, not once per user.
        let hash = turnstile_core::hash_secret(token);
        let user = table.users.values().find(|u| u.accepts_token_hash(&hash)).ok_or(AuthError::WrongPass)?;
        Ok(self.identity(user.clone()))
    }

    /// Who a connection is before it authenticates: the `default` user when it needs no
    /// password (authentication is off, or it was given `nopass`), else nobody.
    pub fn unauthenticated(&self) -> Option<Identity> {
        let table = self.table();
        let default = table.users.get(DEFAULT_USER)?;
        (default.enabled && default.nopass).then(|| self.identity(default.clone()))
    }

    /// The user `name` as it is now (a client certificate's name, a connection's refresh).
    pub fn user(&self, name: &str) -> Option<Identity> {
        self.table().users.get(name).map(|user| self.identity(user.clone()))
    }

    fn identity(&self, user: Arc<User>) -> Identity {
        Identity { user, generation: self.generation.load(Ordering::Acquire), wrap: self.required }
    }

    /// `identity` as the table says now: `None` if its user was deleted or turned off since
    /// (its connections are then closed, as Redis closes a deleted user's clients).
    pub fn refresh(&self, identity: &Identity) -> Option<Identity> {
        if identity.generation == self.generation.load(Ordering::Acquire) {
            return Some(identity.clone());
        }
        self.user(&identity.user.name).filter(|id| id.user.enabled)
    }
}

fn user_from_config(name: &str, entry: &UserConfig) -> Result<User, ConfigError> {
    let invalid = |what: String| ConfigError::Invalid(format!("users.{name}: {what}"));
    let mut user = User::new(name);
    user.enabled = entry.enabled.unwrap_or(true);
    user.nopass = entry.nopass;
    if let Some(password) = &entry.password {
        user.passwords.insert(turnstile_core::hash_secret(password.as_bytes()));
    }
    if let Some(hash) = &entry.password_sha256 {
        if !is_hash(hash) {
            return Err(invalid("password-sha256 must be 64 lower-case hex digits".into()));
        }
        user.passwords.insert(hash.clone());
    }
    for token in &entry.tokens {
        user.tokens.insert(turnstile_core::hash_secret(token.as_bytes()));
    }
    for hash in &entry.tokens_sha256 {
        if !is_hash(hash) {
            return Err(invalid("tokens-sha256 must be 64 lower-case hex digits each".into()));
        }
        user.tokens.insert(hash.clone());
    }
    // Command rules only here; names come from their own lists.
    for rule in &entry.categories {
        if !rule.starts_with(['+', '-']) {
            return Err(invalid(format!("categories: {rule:?} is not a +… or -… rule")));
        }
        user.apply_rule(rule, &|_| true).map_err(|e| invalid(e.to_string()))?;
    }
    user.perms.keys = entry.keys.clone();
    user.perms.locks = entry.locks.clone();
    user.perms.queues = entry.queues.clone();
    user.perms.channels = entry.channels.clone();
    user.max_connections = entry.max_connections;
    if !user.nopass && user.passwords.is_empty() && user.tokens.is_empty() {
        return Err(invalid("needs a password, password-sha256, tokens or nopass".into()));
    }
    Ok(user)
}

/// Who a connection is: a user of the table, as it was at some generation of it.
#[derive(Debug, Clone)]
pub struct Identity {
    user: Arc<User>,
    generation: u64,
    /// Whether commands run as [`Command::AsUser`] (authentication is on).
    wrap: bool,
}

impl Identity {
    /// Every permission, unwrapped: for the server's own work and for tests.
    pub fn open() -> Identity {
        Identity { user: Arc::new(User::open_default()), generation: 0, wrap: false }
    }

    pub fn name(&self) -> &str {
        &self.user.name
    }

    pub fn user(&self) -> &User {
        &self.user
    }

    pub fn perms(&self) -> &Perms {
        &self.user.perms
    }

    pub fn is_admin(&self) -> bool {
        self.user.perms.is_admin()
    }

    /// Checks a command of a front end without a command table (HTTP, AMQP) against the user's
    /// rules and names; RESP checks its table's rules itself and then only names.
    pub fn check(&self, cmd: &Command) -> Result<(), Denied> {
        self.user.perms.check(&self.user.name, cmd)
    }

    pub fn check_query(&self, query: &Query) -> Result<(), Denied> {
        self.user.perms.check_query(&self.user.name, query)
    }

    /// `cmd`, to run as this user: wrapped when authentication is on. The entry carries the
    /// user's whole permissions only for a script (which checks each of its commands against
    /// them); any other command needs only who the user is and whether an admin, so its entry
    /// stays small (a full copy per entry cost a tenth of the lock cycle's throughput).
    pub fn wrap(&self, cmd: Command) -> Command {
        if !self.wrap {
            return cmd;
        }
        let perms = if cmd.runs_script() {
            self.user.perms.clone()
        } else {
            Perms::admin_only(self.user.perms.is_admin())
        };
        let caller = Caller { user: self.user.name.clone(), perms };
        Command::AsUser { caller, command: Box::new(cmd) }
    }
}

/// Keeps this node's table in step with the log's layer: reads it once the node can read
/// (at start; in a cluster, once a leader is known), then again each time an applied entry
/// changed it.
pub async fn follow(shared: Arc<crate::server::Shared>, mut shutdown: crate::shutdown::Shutdown) {
    loop {
        match shared.node.read(|state| state.acl_layer().clone()).await {
            Ok(layer) => {
                shared.users.reload(&layer);
                crate::resp::close_gone(&shared);
            }
            Err(e) => {
                tracing::debug!(error = %e, "users not reloaded yet; asking again");
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_millis(200)) => continue,
                    () = shutdown.recv() => return,
                }
            }
        }
        tokio::select! {
            () = shared.users.changes() => {}
            () = shutdown.recv() => return,
        }
    }
}

/// Creates or changes user `name` by `ACL SETUSER`-style rules (RESP's `ACL SETUSER`, HTTP's
/// user routes): the rules apply to the user as the table has it now (a new user starts off,
/// with nothing allowed), and the whole result goes through the log, so every node, and every
/// restart, has it. The table here is reloaded before this returns.
pub async fn set_user(
    shared: &crate::server::Shared,
    session: &mut crate::session::Session,
    name: &str,
    rules: &[&str],
    // Sync: the future of a request handler holds it across the log's await, and must be Send.
    known_command: &(dyn Fn(&str) -> bool + Sync),
) -> Result<(), SetUserError> {
    let mut user = shared.users.table().users.get(name).map_or_else(|| User::new(name), |u| (**u).clone());
    user.apply_rules(rules.iter().copied(), known_command)?;
    apply_change(shared, session, Command::AclSetUser { user }).await
}

/// Deletes users (`ACL DELUSER`); the `default` user cannot be. Returns how many existed.
pub async fn del_users(
    shared: &crate::server::Shared,
    session: &mut crate::session::Session,
    names: Vec<String>,
) -> Result<usize, SetUserError> {
    if names.iter().any(|n| n == DEFAULT_USER) {
        return Err(SetUserError::Default);
    }
    let table = shared.users.table();
    let existed = names.iter().filter(|n| table.users.contains_key(*n)).count();
    if existed > 0 {
        apply_change(shared, session, Command::AclDelUser { names }).await?;
    }
    Ok(existed)
}

async fn apply_change(
    shared: &crate::server::Shared,
    session: &mut crate::session::Session,
    change: Command,
) -> Result<(), SetUserError> {
    match session.propose(change).await? {
        turnstile_core::Reply::Ok => {}
        turnstile_core::Reply::Error(e) => return Err(SetUserError::Core(e.to_string())),
        other => return Err(SetUserError::Core(format!("unexpected reply {other:?}"))),
    }
    let layer =
        shared.node.read(|state| state.acl_layer().clone()).await.map_err(crate::session::Refused::from)?;
    shared.users.reload(&layer);
    Ok(())
}

/// Why a user change was refused.
#[derive(Debug, thiserror::Error)]
pub enum SetUserError {
    #[error(transparent)]
    Rule(#[from] turnstile_core::RuleError),
    #[error("The 'default' user cannot be removed")]
    Default,
    #[error(transparent)]
    Refused(#[from] crate::session::Refused),
    #[error("{0}")]
    Core(String),
}

/// Connections open per user on this node, for `max-connections`.
#[derive(Debug, Default)]
pub struct Connections {
    open: std::sync::Mutex<BTreeMap<String, u32>>,
}

/// One connection counted against its user until dropped.
#[derive(Debug)]
pub struct Counted {
    users: Arc<Users>,
    name: String,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut open = self.users.connections.open.lock().expect("connections lock");
        if let Some(n) = open.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.name);
            }
        }
    }
}

impl Users {
    /// Counts a connection of `identity`'s user; refused once it has `max-connections` open.
    pub fn connect(self: &Arc<Self>, identity: &Identity) -> Result<Counted, TooManyConnections> {
        let mut open = self.connections.open.lock().expect("connections lock");
        let n = open.entry(identity.name().to_owned()).or_default();
        let max = identity.user().max_connections;
        if max > 0 && *n >= max {
            return Err(TooManyConnections { user: identity.name().to_owned(), max });
        }
        *n += 1;
        Ok(Counted { users: self.clone(), name: identity.name().to_owned() })
    }
}

/// A user's `max-connections` reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("user {user} has reached max-connections ({max})")]
pub struct TooManyConnections {
    pub user: String,
    pub max: u32,
}

/// What `ACL LOG` shows: authentication failures and permission refusals on this node, newest
/// first, over every protocol. Also written to the server's log (`tracing`, target `audit`),
/// with admin actions.
#[derive(Debug, Default)]
pub struct AclLog {
    entries: std::sync::Mutex<std::collections::VecDeque<AclLogEntry>>,
    next_id: AtomicU64,
}

/// One `ACL LOG` entry (Redis's fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclLogEntry {
    pub entry_id: u64,
    /// `auth`, `command`, `key`, `channel` (Redis's), or ours: `lock`, `queue`, `owner`.
    pub reason: String,
    /// `toplevel`, `multi`, `lua`, or the protocol (`amqp`, `http`).
    pub context: String,
    /// The command, key, channel or user name refused.
    pub object: String,
    pub username: String,
    /// Who, from where: `protocol=resp addr=127.0.0.1:5000 id=7`.
    pub client_info: String,
    pub count: u64,
    pub created: std::time::Instant,
    pub updated: std::time::Instant,
}

/// Redis keeps this many (`acllog-max-len`).
pub const ACL_LOG_MAX: usize = 128;

impl AclLog {
    /// Records a refusal; the same one again (reason, context, object, user, client) within a
    /// minute counts on the newest entry, as Redis's does.
    pub fn record(&self, reason: &str, context: &str, object: &str, username: &str, client_info: &str) {
        tracing::warn!(target: "audit", reason, context, object, username, client = client_info, "refused");
        let now = std::time::Instant::now();
        let mut entries = self.entries.lock().expect("acl log lock");
        if let Some(e) = entries.iter_mut().find(|e| {
            e.reason == reason
                && e.context == context
                && e.object == object
                && e.username == username
                && e.client_info == client_info
                && now.duration_since(e.updated) < std::time::Duration::from_secs(60)
        }) {
            e.count += 1;
            e.updated = now;
            return;
        }
        let entry_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        entries.push_front(AclLogEntry {
            entry_id,
            reason: reason.into(),
            context: context.into(),
            object: object.into(),
            username: username.into(),
            client_info: client_info.into(),
            count: 1,
            created: now,
            updated: now,
        });
        entries.truncate(ACL_LOG_MAX);
    }

    /// The newest `count` entries.
    pub fn entries(&self, count: usize) -> Vec<AclLogEntry> {
        self.entries.lock().expect("acl log lock").iter().take(count).cloned().collect()
    }

    pub fn reset(&self) {
        self.entries.lock().expect("acl log lock").clear();
    }
}

/// Writes an admin action to the server's log: who, from where, what.
pub fn audit_admin(username: &str, client_info: &str, action: &str) {
    tracing::info!(target: "audit", username, client = client_info, action, "admin action");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_toml(text).expect("parses")
    }

    #[test]
    fn without_users_or_requirepass_everyone_is_the_open_default_user() {
        let users = Users::from_config(&Config::default()).unwrap();
        assert!(!users.required());
        let id = users.unauthenticated().expect("no password needed");
        assert_eq!(id.name(), "default");
        assert!(id.is_admin());
        assert_eq!(id.wrap(Command::Tick), Command::Tick, "nothing is wrapped");
        // The AMQP users of old are users of the table too.
        assert!(users.authenticate("guest", b"guest").is_ok());
    }

    #[test]
    fn requirepass_and_users_turn_authentication_on() {
        let users = Users::from_config(&config(
            r#"
            requirepass = "pw"
            [users.alice]
            password = "a"
            categories = ["+@all", "-@admin"]
            locks = ["billing:*"]
            "#,
        ))
        .unwrap();
        assert!(users.required());
        assert!(users.unauthenticated().is_none());
        assert_eq!(users.authenticate("default", b"nope").unwrap_err(), AuthError::WrongPass);
        assert!(users.authenticate("default", b"pw").unwrap().is_admin());
        let alice = users.authenticate("alice", b"a").unwrap();
        assert!(!alice.is_admin());
        assert!(alice.perms().allows_name(turnstile_core::NameKind::Lock, b"billing:1"));
        assert!(!alice.perms().allows_name(turnstile_core::NameKind::Lock, b"other"));
        // An entry carries the user's whole permissions only for a script.
        let Command::AsUser { caller, .. } = alice.wrap(Command::Tick) else { panic!("wrapped") };
        assert_eq!((caller.user.as_str(), caller.perms), ("alice", Perms::admin_only(false)));
        let eval = Command::Eval(turnstile_core::Eval {
            script: turnstile_core::ScriptRef::Sha("0".repeat(40)),
            keys: vec![],
            args: vec![],
            session: None,
            budget: 0,
        });
        let Command::AsUser { caller, .. } = alice.wrap(eval) else { panic!("wrapped") };
        assert_eq!(&caller.perms, alice.perms());
        let admin = users.authenticate("default", b"pw").unwrap();
        let Command::AsUser { caller, .. } = admin.wrap(Command::Tick) else { panic!("wrapped") };
        assert!(caller.is_admin() && caller.perms.keys.is_empty());
    }

    #[test]
    fn users_without_requirepass_turn_the_default_user_off_and_the_builtin_guest_is_gone() {
        let users =
            Users::from_config(&config("[users.alice]\npassword = \"a\"\ncategories = [\"+@all\"]")).unwrap();
        assert!(users.required());
        assert!(users.unauthenticated().is_none(), "nobody is the open default user");
        assert!(users.authenticate("default", b"").is_err());
        assert!(users.authenticate("guest", b"guest").is_err(), "guest/guest is no login once users exist");
        // A guest the operator named stays.
        let users =
            Users::from_config(&config("requirepass = \"pw\"\n[amqp-users]\nguest = \"s3cret\"")).unwrap();
        assert!(users.authenticate("guest", b"s3cret").is_ok());
    }

    #[test]
    fn the_logs_layer_overrides_and_deletes_config_users() {
        let users =
            Users::from_config(&config("[users.alice]\npassword = \"a\"\ncategories = [\"+@all\"]")).unwrap();
        let alice = users.authenticate("alice", b"a").unwrap();
        let mut bob = User::new("bob");
        bob.apply_rules(["on", ">b"], &|_| true).unwrap();
        users.reload(&BTreeMap::from([("alice".to_owned(), None), ("bob".to_owned(), Some(bob))]));
        assert!(users.authenticate("alice", b"a").is_err());
        assert!(users.refresh(&alice).is_none(), "a deleted user's connections end");
        assert!(users.authenticate("bob", b"b").is_ok());
    }

    #[test]
    fn bad_users_are_refused_at_start() {
        for (text, says) in [
            ("[users.a]\ncategories = [\"+@all\"]", "needs a password"),
            ("[users.a]\npassword = \"x\"\ncategories = [\"+@nosuch\"]", "Unknown command or category"),
            ("[users.a]\npassword-sha256 = \"abc\"", "64 lower-case hex"),
            ("[users.a]\npassword = \"x\"\ncategories = [\"allkeys\"]", "is not a +"),
        ] {
            let err = Users::from_config(&config(text)).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn a_users_connections_are_counted_up_to_its_limit() {
        let users = Arc::new(
            Users::from_config(&config("[users.a]\npassword = \"x\"\nmax-connections = 2")).unwrap(),
        );
        let a = users.authenticate("a", b"x").unwrap();
        let first = users.connect(&a).unwrap();
        let _second = users.connect(&a).unwrap();
        assert_eq!(users.connect(&a).unwrap_err().to_string(), "user a has reached max-connections (2)");
        drop(first);
        assert!(users.connect(&a).is_ok(), "a closed connection frees its place");
    }

    #[test]
    fn the_acl_log_counts_repeats_and_keeps_the_newest() {
        let log = AclLog::default();
        log.record("auth", "toplevel", "AUTH", "bob", "addr=1");
        log.record("auth", "toplevel", "AUTH", "bob", "addr=1");
        log.record("key", "multi", "other:1", "alice", "addr=2");
        let entries = log.entries(10);
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[0].reason.as_str(), entries[0].count), ("key", 1));
        assert_eq!((entries[1].reason.as_str(), entries[1].count), ("auth", 2));
        for i in 0..200 {
            log.record("command", "toplevel", &format!("c{i}"), "x", "addr=3");
        }
        assert_eq!(log.entries(1000).len(), ACL_LOG_MAX);
        log.reset();
        assert!(log.entries(10).is_empty());
    }
}
