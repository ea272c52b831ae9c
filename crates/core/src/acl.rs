//! Users and what each may do: one table for every protocol (RESP, AMQP, HTTP).
//!
//! ```text
//!  User ─ enabled, passwords (SHA-256), tokens (SHA-256), max-connections
//!    └── Perms ─ command rules, in order:  +@all -@admin +config …   (the last rule that
//!                                          names a command or one of its categories wins)
//!              ─ name patterns per kind:   keys ~app:*   locks lock~billing:*
//!                                          queues queue~jobs:*   channels &news.*
//! ```
//!
//! The table itself is the front ends' (`turnstile-server`'s `auth`): the users of the config file,
//! with the changes `ACL SETUSER` / `ACL DELUSER` made on top of them. Those changes are log
//! entries ([`crate::Command::AclSetUser`], [`crate::Command::AclDelUser`]) carrying the whole
//! resulting user, computed by the node that proposed it, so every node and every restart agree.
//!
//! Inside the state machine a user matters in two places, both for commands a front end wrapped
//! in [`crate::Command::AsUser`]: who owns a hold or a delivery (only that user, or an admin, may
//! release, renew, ack or nack it by token or receipt: a token is a fencing number, not a
//! credential), and what a script may touch (each `redis.call` is checked against the caller's
//! [`Perms`]). The rule syntax is Redis's `ACL SETUSER` for the subset kept here, with one
//! addition for the kinds of names Redis does not have: `lock~PATTERN`, `queue~PATTERN` (queues
//! and exchanges), `alllocks`, `allqueues`, `resetlocks`, `resetqueues`.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::glob::glob_match;
use crate::{Command, NameKind, Query, Step};

/// The command categories of `ACL CAT`: Redis's, plus `lock`, `queue` and `kv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Category {
    Keyspace,
    Read,
    Write,
    String,
    Hash,
    List,
    PubSub,
    Admin,
    Fast,
    Slow,
    Blocking,
    Dangerous,
    Connection,
    Transaction,
    Scripting,
    /// Locks, read/write locks, semaphores and fences.
    Lock,
    /// Queues and exchanges, over every protocol.
    Queue,
    /// Every key command: strings, hashes, lists and the keyspace.
    Kv,
}

impl Category {
    pub const ALL: [Category; 18] = [
        Category::Keyspace,
        Category::Read,
        Category::Write,
        Category::String,
        Category::Hash,
        Category::List,
        Category::PubSub,
        Category::Admin,
        Category::Fast,
        Category::Slow,
        Category::Blocking,
        Category::Dangerous,
        Category::Connection,
        Category::Transaction,
        Category::Scripting,
        Category::Lock,
        Category::Queue,
        Category::Kv,
    ];

    /// Its name in rules and in `ACL CAT`, without the `@`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Category::Keyspace => "keyspace",
            Category::Read => "read",
            Category::Write => "write",
            Category::String => "string",
            Category::Hash => "hash",
            Category::List => "list",
            Category::PubSub => "pubsub",
            Category::Admin => "admin",
            Category::Fast => "fast",
            Category::Slow => "slow",
            Category::Blocking => "blocking",
            Category::Dangerous => "dangerous",
            Category::Connection => "connection",
            Category::Transaction => "transaction",
            Category::Scripting => "scripting",
            Category::Lock => "lock",
            Category::Queue => "queue",
            Category::Kv => "kv",
        }
    }

    pub fn parse(name: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str().eq_ignore_ascii_case(name))
    }

    const fn bit(self) -> u32 {
        1 << self as u32
    }
}

/// A set of categories.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Categories(u32);

impl Categories {
    pub const NONE: Categories = Categories(0);

    pub const fn of(list: &[Category]) -> Categories {
        let mut bits = 0;
        let mut i = 0;
        while i < list.len() {
            bits |= list[i].bit();
            i += 1;
        }
        Categories(bits)
    }

    pub const fn with(self, c: Category) -> Categories {
        Categories(self.0 | c.bit())
    }

    pub const fn contains(self, c: Category) -> bool {
        self.0 & c.bit() != 0
    }

    pub const fn union(self, other: Categories) -> Categories {
        Categories(self.0 | other.0)
    }

    pub fn iter(self) -> impl Iterator<Item = Category> {
        Category::ALL.into_iter().filter(move |c| self.contains(*c))
    }
}

/// What one command rule names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Selector {
    /// `+@all`, `allcommands`; `-@all`, `nocommands`.
    All,
    Category(Category),
    /// One command by its RESP name, lower case (`+get`, `-flushall`).
    Command(String),
}

/// One `+…` or `-…` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRule {
    pub allow: bool,
    pub selector: Selector,
}

/// What a user may run and touch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Perms {
    /// In the order given; the last that names a command (or one of its categories, or all)
    /// decides. None: nothing is allowed.
    pub commands: Vec<CommandRule>,
    /// Glob patterns (Redis's `KEYS` syntax) per kind of name; `*` allows every name.
    pub keys: Vec<String>,
    pub locks: Vec<String>,
    /// Queue and exchange names.
    pub queues: Vec<String>,
    pub channels: Vec<String>,
}

/// Why a user may not run a command: each with Redis's `-NOPERM` text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("User {user} has no permissions to run the '{command}' command")]
    Command { user: String, command: String },
    #[error("No permissions to access a key")]
    Key,
    #[error("No permissions to access a channel")]
    Channel,
    /// Ours: locks, queues and exchanges are kinds Redis has no word for.
    #[error("No permissions to access a {0}")]
    Name(&'static str),
    /// A hold, delivery or session of another user.
    #[error("{0} belongs to another user")]
    NotOwner(String),
}

impl Perms {
    /// Everything: the default user's when no authentication is configured.
    pub fn all() -> Perms {
        let all = || vec!["*".to_owned()];
        Perms {
            commands: vec![CommandRule { allow: true, selector: Selector::All }],
            keys: all(),
            locks: all(),
            queues: all(),
            channels: all(),
        }
    }

    /// What a log entry carries of a user that runs no script: only whether it is an admin.
    pub fn admin_only(admin: bool) -> Perms {
        let commands = if admin {
            vec![CommandRule { allow: true, selector: Selector::Category(Category::Admin) }]
        } else {
            Vec::new()
        };
        Perms { commands, ..Perms::default() }
    }

    /// Whether the command named `name` (RESP's name, lower case; for a command of another
    /// protocol, the name of its RESP twin) in `categories` is allowed.
    pub fn allows_command(&self, name: &str, categories: Categories) -> bool {
        self.commands.iter().rev().find_map(|rule| {
            let named = match &rule.selector {
                Selector::All => true,
                Selector::Category(c) => categories.contains(*c),
                Selector::Command(cmd) => cmd.eq_ignore_ascii_case(name),
            };
            named.then_some(rule.allow)
        }) == Some(true)
    }

    /// Whether every command of `category` is allowed, as far as category rules say: an admin
    /// is a user with `@admin`.
    pub fn allows_category(&self, category: Category) -> bool {
        self.commands.iter().rev().find_map(|rule| match &rule.selector {
            Selector::All => Some(rule.allow),
            Selector::Category(c) if *c == category => Some(rule.allow),
            _ => None,
        }) == Some(true)
    }

    /// Whether the user is an admin: may run `@admin` commands, and act on other users' holds,
    /// deliveries and sessions.
    pub fn is_admin(&self) -> bool {
        self.allows_category(Category::Admin)
    }

    fn patterns(&self, kind: NameKind) -> &[String] {
        match kind {
            NameKind::Key => &self.keys,
            NameKind::Lock => &self.locks,
            NameKind::Queue | NameKind::Exchange => &self.queues,
        }
    }

    /// Whether a name of `kind` is allowed.
    pub fn allows_name(&self, kind: NameKind, name: &[u8]) -> bool {
        self.patterns(kind).iter().any(|p| p == "*" || glob_match(p.as_bytes(), name, false))
    }

    /// Whether a pub/sub channel is allowed.
    pub fn allows_channel(&self, channel: &[u8]) -> bool {
        self.channels.iter().any(|p| p == "*" || glob_match(p.as_bytes(), channel, false))
    }

    /// Whether a subscription pattern is allowed: as in Redis, only a pattern given word for
    /// word (a user with `&news.*` may `PSUBSCRIBE news.*`, not `*`).
    pub fn allows_channel_pattern(&self, pattern: &[u8]) -> bool {
        self.channels.iter().any(|p| p == "*" || p.as_bytes() == pattern)
    }

    /// Whether every name `cmd` touches is allowed (a transaction's reads included); the first
    /// that is not, refused.
    pub fn check_names(&self, cmd: &Command) -> Result<(), Denied> {
        if let Command::Exec { steps, .. } = cmd {
            for step in steps {
                match step {
                    Step::Write(cmd) => self.check_names(cmd)?,
                    Step::Read(query) => self.check_query_names(query)?,
                }
            }
            return Ok(());
        }
        if let Command::InSession { command, .. }
        | Command::AsUser { command, .. }
        | Command::Limited { command, .. } = cmd
        {
            return self.check_names(command);
        }
        let mut denied = None;
        cmd.names(&mut |kind, name| {
            if denied.is_none() && !self.allows_name(kind, name.as_bytes()) {
                denied = Some(name_denied(kind));
            }
        });
        if let Command::PubSubPublish { channel, .. } = cmd
            && !self.allows_channel(channel)
        {
            return Err(Denied::Channel);
        }
        denied.map_or(Ok(()), Err)
    }

    /// Whether every name `query` reads is allowed.
    pub fn check_query_names(&self, query: &Query) -> Result<(), Denied> {
        let mut denied = None;
        query.names(&mut |kind, name| {
            if denied.is_none() && !self.allows_name(kind, name.as_bytes()) {
                denied = Some(name_denied(kind));
            }
        });
        denied.map_or(Ok(()), Err)
    }

    /// The check of a command from a front end without RESP's command table (HTTP, AMQP): its
    /// categories ([`Command::categories`]) under the name of its RESP twin, then its names.
    pub fn check(&self, user: &str, cmd: &Command) -> Result<(), Denied> {
        if let Command::Exec { steps, .. } = cmd {
            for step in steps {
                match step {
                    Step::Write(cmd) => self.check(user, cmd)?,
                    Step::Read(query) => self.check_query(user, query)?,
                }
            }
            return Ok(());
        }
        if let Command::InSession { command, .. } = cmd {
            return self.check(user, command);
        }
        let (name, categories) = cmd.categories();
        if !self.allows_command(name, categories) {
            return Err(Denied::Command { user: user.to_owned(), command: name.to_owned() });
        }
        self.check_names(cmd)
    }

    /// [`Perms::check`] for a read.
    pub fn check_query(&self, user: &str, query: &Query) -> Result<(), Denied> {
        let (name, categories) = query.categories();
        if !self.allows_command(name, categories) {
            return Err(Denied::Command { user: user.to_owned(), command: name.to_owned() });
        }
        self.check_query_names(query)
    }

    /// The command rules as `ACL GETUSER` and `ACL LIST` show them: `+@all -@admin +config`.
    pub fn commands_text(&self) -> String {
        if self.commands.is_empty() {
            return "-@all".into();
        }
        let rules: Vec<String> = self
            .commands
            .iter()
            .map(|rule| {
                let sign = if rule.allow { '+' } else { '-' };
                match &rule.selector {
                    Selector::All => format!("{sign}@all"),
                    Selector::Category(c) => format!("{sign}@{}", c.as_str()),
                    Selector::Command(name) => format!("{sign}{name}"),
                }
            })
            .collect();
        rules.join(" ")
    }
}

fn name_denied(kind: NameKind) -> Denied {
    match kind {
        NameKind::Key => Denied::Key,
        other => Denied::Name(other.as_str()),
    }
}

/// A user of every protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    /// `on` / `off`: a disabled user cannot authenticate (its open connections are closed by
    /// the front ends when it is disabled).
    pub enabled: bool,
    /// Any password is accepted (Redis's `nopass`).
    pub nopass: bool,
    /// SHA-256 of each password, lower-case hex (Redis's `#<hash>`).
    pub passwords: BTreeSet<String>,
    /// SHA-256 of each HTTP bearer token, lower-case hex.
    pub tokens: BTreeSet<String>,
    pub perms: Perms,
    /// Connections this user may have open on one node at once; 0 = no limit.
    pub max_connections: u32,
}

/// Why a rule was refused, with Redis's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Error in ACL SETUSER modifier '{rule}': {reason}")]
pub struct RuleError {
    pub rule: String,
    pub reason: String,
}

/// The SHA-256 of a secret in lower-case hex, as Redis's `ACL GETUSER` shows passwords.
pub fn hash_secret(secret: &[u8]) -> String {
    let digest = Sha256::digest(secret);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `hash` is a SHA-256 in lower-case hex.
pub fn is_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl User {
    /// A new user as `ACL SETUSER name` creates it: off, no password, no commands, no names.
    pub fn new(name: impl Into<String>) -> User {
        User {
            name: name.into(),
            enabled: false,
            nopass: false,
            passwords: BTreeSet::new(),
            tokens: BTreeSet::new(),
            perms: Perms::default(),
            max_connections: 0,
        }
    }

    /// The `default` user when nothing is configured: on, any password, everything allowed.
    pub fn open_default() -> User {
        User { enabled: true, nopass: true, perms: Perms::all(), ..User::new(DEFAULT_USER) }
    }

    /// Whether `password` authenticates this user (who must be on).
    pub fn accepts_password(&self, password: &[u8]) -> bool {
        self.enabled && (self.nopass || self.passwords.contains(&hash_secret(password)))
    }

    /// Whether the bearer token whose [`hash_secret`] is `hash` is one of this user's (who must
    /// be on). The caller hashes once for the whole table.
    pub fn accepts_token_hash(&self, hash: &str) -> bool {
        self.enabled && self.tokens.contains(hash)
    }

    /// Applies `ACL SETUSER` rules in order. `known_command` says whether `+name` / `-name`
    /// names a command (the RESP table knows; the core does not).
    pub fn apply_rules<'a>(
        &mut self,
        rules: impl IntoIterator<Item = &'a str>,
        known_command: &dyn Fn(&str) -> bool,
    ) -> Result<(), RuleError> {
        for rule in rules {
            self.apply_rule(rule, known_command)?;
        }
        Ok(())
    }

    /// Applies one rule; see [`User::apply_rules`].
    pub fn apply_rule(&mut self, rule: &str, known_command: &dyn Fn(&str) -> bool) -> Result<(), RuleError> {
        let refuse = |reason: &str| RuleError { rule: rule.to_owned(), reason: reason.to_owned() };
        let syntax = || refuse("Syntax error");
        let lower = rule.to_ascii_lowercase();
        let perms = &mut self.perms;
        match lower.as_str() {
            "on" => self.enabled = true,
            "off" => self.enabled = false,
            "nopass" => {
                self.nopass = true;
                self.passwords.clear();
            }
            "resetpass" => {
                self.nopass = false;
                self.passwords.clear();
            }
            "allkeys" => perms.keys = vec!["*".into()],
            "resetkeys" => perms.keys.clear(),
            "allchannels" => perms.channels = vec!["*".into()],
            "resetchannels" => perms.channels.clear(),
            "alllocks" => perms.locks = vec!["*".into()],
            "resetlocks" => perms.locks.clear(),
            "allqueues" => perms.queues = vec!["*".into()],
            "resetqueues" => perms.queues.clear(),
            "allcommands" => perms.commands = vec![CommandRule { allow: true, selector: Selector::All }],
            "nocommands" => perms.commands.clear(),
            "reset" => {
                let name = std::mem::take(&mut self.name);
                *self = User::new(name);
            }
            _ => {
                let (first, rest) = rule.split_at(rule.chars().next().map_or(0, char::len_utf8));
                match first {
                    ">" => {
                        self.passwords.insert(hash_secret(rest.as_bytes()));
                        self.nopass = false;
                    }
                    "<" => {
                        if !self.passwords.remove(&hash_secret(rest.as_bytes())) {
                            return Err(refuse("no such password"));
                        }
                    }
                    "#" | "!" => {
                        if !is_hash(rest) {
                            return Err(refuse(
                                "The password hash must be exactly 64 characters and contain only \
                                 lowercase hexadecimal characters",
                            ));
                        }
                        if first == "#" {
                            self.passwords.insert(rest.to_owned());
                            self.nopass = false;
                        } else if !self.passwords.remove(rest) {
                            return Err(refuse("no such password"));
                        }
                    }
                    "~" => add_pattern(&mut perms.keys, rest),
                    "&" => add_pattern(&mut perms.channels, rest),
                    "+" | "-" => {
                        let allow = first == "+";
                        let selector = if let Some(category) = rest.strip_prefix('@') {
                            if category.eq_ignore_ascii_case("all") {
                                Selector::All
                            } else {
                                Selector::Category(
                                    Category::parse(category)
                                        .ok_or_else(|| refuse("Unknown command or category name in ACL"))?,
                                )
                            }
                        } else if known_command(&rest.to_ascii_lowercase()) {
                            Selector::Command(rest.to_ascii_lowercase())
                        } else {
                            return Err(refuse("Unknown command or category name in ACL"));
                        };
                        if selector == Selector::All {
                            // Everything before it no longer decides anything.
                            perms.commands.clear();
                        }
                        perms.commands.retain(|r| r.selector != selector);
                        perms.commands.push(CommandRule { allow, selector });
                    }
                    _ => {
                        if let Some(pattern) = lower.strip_prefix("lock~").map(|_| &rule[5..]) {
                            add_pattern(&mut perms.locks, pattern);
                        } else if let Some(pattern) = lower.strip_prefix("queue~").map(|_| &rule[6..]) {
                            add_pattern(&mut perms.queues, pattern);
                        } else {
                            return Err(syntax());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The user as rules, as `ACL LIST` shows it: `user alice on #… ~app:* &* +@all -@admin`.
    pub fn rules_text(&self) -> String {
        let mut parts =
            vec![format!("user {}", self.name), if self.enabled { "on" } else { "off" }.to_owned()];
        if self.nopass {
            parts.push("nopass".into());
        }
        parts.extend(self.passwords.iter().map(|hash| format!("#{hash}")));
        let patterns = |all: &str, prefix: &str, list: &[String], parts: &mut Vec<String>| {
            if list.iter().any(|p| p == "*") {
                parts.push(all.to_owned());
            } else {
                parts.extend(list.iter().map(|p| format!("{prefix}{p}")));
            }
        };
        patterns("~*", "~", &self.perms.keys, &mut parts);
        patterns("&*", "&", &self.perms.channels, &mut parts);
        patterns("alllocks", "lock~", &self.perms.locks, &mut parts);
        patterns("allqueues", "queue~", &self.perms.queues, &mut parts);
        parts.push(self.perms.commands_text());
        parts.join(" ")
    }
}

fn add_pattern(list: &mut Vec<String>, pattern: &str) {
    if !list.iter().any(|p| p == pattern || p == "*") {
        if pattern == "*" {
            list.clear();
        }
        list.push(pattern.to_owned());
    }
}

/// The name of the user a connection is before it authenticates, as in Redis.
pub const DEFAULT_USER: &str = "default";

/// Who a front end ran a command for ([`crate::Command::AsUser`]): the user's name, and their
/// permissions as the proposing node knew them (so a script is checked the same on every node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub user: String,
    pub perms: Perms,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.perms.is_admin()
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(_: &str) -> bool {
        true
    }

    fn user(rules: &str) -> User {
        let mut user = User::new("alice");
        user.apply_rules(rules.split_whitespace(), &any).unwrap();
        user
    }

    #[test]
    fn the_last_rule_naming_a_command_decides() {
        use Category::*;
        let u = user("on +@all -@admin +config");
        let p = &u.perms;
        assert!(p.allows_command("get", Categories::of(&[Read, Kv])));
        assert!(!p.allows_command("acl", Categories::of(&[Admin, Slow])));
        assert!(p.allows_command("config", Categories::of(&[Admin, Slow])));
        assert!(!p.is_admin());
        let u = user("+@lock -@write");
        assert!(!u.perms.allows_command("lock.acquire", Categories::of(&[Lock, Write])));
        assert!(u.perms.allows_command("lock.info", Categories::of(&[Lock, Read])));
        let u = user("-@write +@lock");
        assert!(u.perms.allows_command("lock.acquire", Categories::of(&[Lock, Write])));
        assert!(!u.perms.allows_command("set", Categories::of(&[Write, Kv])));
        // Nothing named: nothing allowed.
        assert!(!User::new("bob").perms.allows_command("ping", Categories::of(&[Fast])));
        // +@all forgets what came before.
        assert_eq!(user("-get +@all").perms.commands_text(), "+@all");
    }

    #[test]
    fn names_are_checked_per_kind() {
        let u = user("~app:* lock~billing:* queue~jobs.* &news.*");
        let p = &u.perms;
        assert!(p.allows_name(NameKind::Key, b"app:1"));
        assert!(!p.allows_name(NameKind::Key, b"other:1"));
        assert!(p.allows_name(NameKind::Lock, b"billing:7"));
        assert!(!p.allows_name(NameKind::Lock, b"app:1"));
        assert!(p.allows_name(NameKind::Exchange, b"jobs.x"));
        assert!(p.allows_channel(b"news.sport"));
        assert!(p.allows_channel_pattern(b"news.*"));
        assert!(!p.allows_channel_pattern(b"*"));
        let push = Command::Push(crate::Push::new("jobs.a", "x"));
        assert_eq!(p.check_names(&push), Ok(()));
        let push = Command::Push(crate::Push::new("mail", "x"));
        assert_eq!(p.check_names(&push).unwrap_err().to_string(), "No permissions to access a queue");
        // A publish to the default exchange touches the queue its routing key names; to any
        // other exchange, that exchange.
        let publish = |exchange: &str, key: &str| {
            Command::Publish(crate::Publish {
                exchange: exchange.into(),
                routing_key: key.into(),
                push: crate::Push::new("", "x"),
            })
        };
        assert_eq!(p.check_names(&publish("", "jobs.a")), Ok(()));
        assert_eq!(p.check_names(&publish("", "mail")), Err(Denied::Name("queue")));
        assert_eq!(p.check_names(&publish("jobs.x", "mail")), Ok(()));
        assert_eq!(p.check_names(&publish("amq.topic", "jobs.a")), Err(Denied::Name("exchange")));
    }

    #[test]
    fn passwords_are_kept_hashed_and_rules_have_redis_errors() {
        let mut u = user("on >s3cret");
        assert!(u.accepts_password(b"s3cret"));
        assert!(!u.accepts_password(b"wrong"));
        assert!(u.rules_text().contains(&format!("#{}", hash_secret(b"s3cret"))));
        assert!(!u.rules_text().contains("s3cret "));
        u.apply_rule("off", &any).unwrap();
        assert!(!u.accepts_password(b"s3cret"), "a user that is off cannot log in");
        let err = u.apply_rule("bogus", &any).unwrap_err();
        assert_eq!(err.to_string(), "Error in ACL SETUSER modifier 'bogus': Syntax error");
        let err = u.apply_rule("+@nosuch", &any).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Error in ACL SETUSER modifier '+@nosuch': Unknown command or category name in ACL"
        );
        assert!(u.apply_rule("#abc", &any).is_err());
        assert_eq!(
            hash_secret(b"foobared"),
            "1b58ee375b42e41f0e48ef2ff27d10a5b1f6924a9acdcdba7cae868e7adce6bf"
        );
        let mut u = user("on >a >b");
        u.apply_rule("<a", &any).unwrap();
        assert!(!u.accepts_password(b"a") && u.accepts_password(b"b"));
        u.apply_rule("reset", &any).unwrap();
        assert_eq!(u, User::new("alice"));
    }
}

/// Shorthands for the category lists below.
mod cats {
    use super::Categories;
    use super::Category::*;

    pub const LOCK_WRITE: Categories = Categories::of(&[Lock, Write, Fast]);
    pub const LOCK_READ: Categories = Categories::of(&[Lock, Read, Fast]);
    pub const QUEUE_WRITE: Categories = Categories::of(&[Queue, Write, Fast]);
    pub const QUEUE_READ: Categories = Categories::of(&[Queue, Read]);
    pub const QUEUE_DANGER: Categories = Categories::of(&[Queue, Write, Dangerous, Slow]);
    pub const STRING_WRITE: Categories = Categories::of(&[Kv, String, Write, Fast]);
    pub const STRING_READ: Categories = Categories::of(&[Kv, String, Read, Fast]);
    pub const KEYSPACE_WRITE: Categories = Categories::of(&[Kv, Keyspace, Write, Fast]);
    pub const KEYSPACE_READ: Categories = Categories::of(&[Kv, Keyspace, Read, Fast]);
    pub const KEYSPACE_SCAN: Categories = Categories::of(&[Kv, Keyspace, Read, Slow]);
    pub const HASH_WRITE: Categories = Categories::of(&[Kv, Hash, Write, Fast]);
    pub const HASH_READ: Categories = Categories::of(&[Kv, Hash, Read, Fast]);
    pub const LIST_WRITE: Categories = Categories::of(&[Kv, List, Write, Fast]);
    pub const LIST_READ: Categories = Categories::of(&[Kv, List, Read, Slow]);
    pub const SCRIPT: Categories = Categories::of(&[Scripting, Slow]);
    pub const SESSION: Categories = Categories::of(&[Connection, Fast]);
    pub const ADMIN: Categories = Categories::of(&[Admin, Slow, Dangerous]);
}

impl Command {
    /// The name of the command's RESP twin (what `+name` / `-name` rules and `-NOPERM` texts
    /// name) and its categories: how HTTP and AMQP, which have no command table, check a user's
    /// rules. RESP checks the same rules through its table, whose entries agree with these.
    pub fn categories(&self) -> (&'static str, Categories) {
        use Category::{Blocking, Dangerous, Transaction};
        use cats::*;
        let blocking =
            |name, base: Categories, waits: bool| (name, if waits { base.with(Blocking) } else { base });
        match self {
            Command::Tick
            | Command::LegacyOpenSession
            | Command::LegacyCloseSession { .. }
            | Command::DetachSessions
            | Command::RefreshLeases
            | Command::KeepAlive { .. }
            | Command::RetireNode { .. } => ("debug", ADMIN),
            Command::OpenSession { .. } | Command::CloseSession { .. } | Command::ResumeSession { .. } => {
                ("session", SESSION)
            }
            Command::Acquire(a) => match a.mode {
                crate::Mode::Permits { .. } => blocking("sem.acquire", LOCK_WRITE, a.wait > 0),
                _ => blocking("lock.acquire", LOCK_WRITE, a.wait > 0),
            },
            Command::Release { .. } => ("lock.release", LOCK_WRITE),
            Command::Renew { .. } => ("lock.renew", LOCK_WRITE),
            Command::CreateQueue { .. } => ("q.create", QUEUE_WRITE),
            Command::DeleteQueue { .. } => ("q.del", QUEUE_DANGER),
            Command::PurgeQueue { .. } => ("q.purge", QUEUE_DANGER),
            Command::Push(_) => ("q.push", QUEUE_WRITE),
            Command::Pop(p) => blocking("q.pop", QUEUE_WRITE, p.wait > 0),
            Command::Ack { .. } => ("q.ack", QUEUE_WRITE),
            Command::Nack { .. } => ("q.nack", QUEUE_WRITE),
            Command::Extend { .. } => ("q.extend", QUEUE_WRITE),
            Command::Consume(_) => ("q.consume", QUEUE_WRITE),
            Command::Cancel { .. } => ("q.cancel", QUEUE_WRITE),
            Command::Redrive { .. } => ("q.redrive", QUEUE_DANGER),
            Command::DeclareExchange(_) => ("exchange.declare", QUEUE_WRITE),
            Command::DeleteExchange { .. } => ("exchange.delete", QUEUE_DANGER),
            Command::Bind(_) => ("queue.bind", QUEUE_WRITE),
            Command::Unbind(_) => ("queue.unbind", QUEUE_WRITE),
            Command::Publish(_) => ("basic.publish", QUEUE_WRITE),
            Command::Set(_) => ("set", STRING_WRITE),
            Command::Del { .. } => ("del", KEYSPACE_WRITE),
            Command::Expire { .. } => ("pexpire", KEYSPACE_WRITE),
            Command::IncrBy { .. } => ("incrby", STRING_WRITE),
            Command::GetDel { .. } => ("getdel", STRING_WRITE),
            Command::GetEx { .. } => ("getex", STRING_WRITE),
            Command::MSet { .. } => ("mset", STRING_WRITE),
            Command::Append { .. } => ("append", STRING_WRITE),
            Command::IncrByFloat { .. } => ("incrbyfloat", STRING_WRITE),
            Command::ExpireAt { .. } => ("pexpireat", KEYSPACE_WRITE),
            Command::Persist { .. } => ("persist", KEYSPACE_WRITE),
            Command::Rename { .. } => ("rename", KEYSPACE_WRITE),
            Command::FlushKeys => ("flushall", KEYSPACE_WRITE.with(Dangerous)),
            Command::HSet { .. } => ("hset", HASH_WRITE),
            Command::HDel { .. } => ("hdel", HASH_WRITE),
            Command::HIncrBy { .. } => ("hincrby", HASH_WRITE),
            Command::HIncrByFloat { .. } => ("hincrbyfloat", HASH_WRITE),
            Command::ListPush { .. } => ("lpush", LIST_WRITE),
            Command::ListPop { .. } => ("lpop", LIST_WRITE),
            Command::ListSet { .. } => ("lset", LIST_WRITE),
            Command::ListRem { .. } => ("lrem", LIST_WRITE),
            Command::ListTrim { .. } => ("ltrim", LIST_WRITE),
            Command::ListInsert { .. } => ("linsert", LIST_WRITE),
            Command::ListMove { .. } => ("lmove", LIST_WRITE),
            Command::BlockingPop(p) => blocking("blpop", LIST_WRITE, p.wait > 0),
            Command::PubSubPublish { .. } => ("publish", Categories::of(&[Category::PubSub, Category::Fast])),
            Command::Exec { .. } => ("exec", Categories::of(&[Transaction, Category::Slow])),
            Command::Eval(_) => ("eval", SCRIPT),
            Command::ScriptLoad { .. } => ("script", SCRIPT),
            Command::ScriptFlush => ("script", SCRIPT.with(Dangerous)),
            Command::AclSetUser { .. } | Command::AclDelUser { .. } => ("acl", ADMIN),
            Command::InSession { command, .. }
            | Command::AsUser { command, .. }
            | Command::Limited { command, .. } => command.categories(),
        }
    }
}

impl Command {
    /// Whether applying the command runs a Lua script (whose commands are checked against the
    /// caller's permissions in the state machine).
    pub fn runs_script(&self) -> bool {
        match self {
            Command::Eval(_) => true,
            Command::Exec { steps, .. } => {
                steps.iter().any(|step| matches!(step, Step::Write(cmd) if cmd.runs_script()))
            }
            Command::InSession { command, .. } | Command::AsUser { command, .. } => command.runs_script(),
            _ => false,
        }
    }
}

impl Query {
    /// As [`Command::categories`], for reads.
    pub fn categories(&self) -> (&'static str, Categories) {
        use Category::Dangerous;
        use cats::*;
        match self {
            Query::LockInfo { .. } => ("lock.info", LOCK_READ),
            Query::FenceCheck { .. } => ("fence.check", LOCK_READ),
            Query::ListLocks => ("lock.list", LOCK_READ),
            Query::QueueStats { .. } => ("q.stats", QUEUE_READ),
            Query::Peek { .. } => ("q.peek", QUEUE_READ),
            Query::ListQueues => ("q.list", QUEUE_READ),
            Query::Exchange { .. } => ("exchange.info", QUEUE_READ),
            Query::QueueConfig { .. } => ("q.config", QUEUE_READ),
            Query::Get { .. } => ("get", STRING_READ),
            Query::MGet { .. } => ("mget", STRING_READ),
            Query::StrLen { .. } => ("strlen", STRING_READ),
            Query::Exists { .. } => ("exists", KEYSPACE_READ),
            Query::Pttl { .. } => ("pttl", KEYSPACE_READ),
            Query::Type { .. } => ("type", KEYSPACE_READ),
            Query::Object { .. } => ("object", KEYSPACE_READ),
            Query::ExpireTime { .. } => ("expiretime", KEYSPACE_READ),
            Query::DbSize => ("dbsize", KEYSPACE_READ),
            Query::Keys { .. } => ("keys", KEYSPACE_SCAN.with(Dangerous)),
            Query::Scan { .. } => ("scan", KEYSPACE_SCAN),
            Query::KeyVersions { .. } => ("watch", Categories::of(&[Category::Transaction, Category::Fast])),
            Query::HGet { .. } => ("hget", HASH_READ),
            Query::HMGet { .. } => ("hmget", HASH_READ),
            Query::HExists { .. } => ("hexists", HASH_READ),
            Query::HGetAll { .. } => ("hgetall", HASH_READ),
            Query::HLen { .. } => ("hlen", HASH_READ),
            Query::HStrLen { .. } => ("hstrlen", HASH_READ),
            Query::HScan { .. } => ("hscan", HASH_READ),
            Query::ListLen { .. } => ("llen", LIST_READ),
            Query::ListRange { .. } => ("lrange", LIST_READ),
            Query::ListIndex { .. } => ("lindex", LIST_READ),
            Query::ListPos { .. } => ("lpos", LIST_READ),
            Query::Eval(_) => ("eval_ro", SCRIPT),
            Query::ScriptExists { .. } => ("script", SCRIPT),
        }
    }

    /// Calls `f` with every name the read looks up (listings and scripts name none: a script's
    /// names are checked by the commands it runs).
    pub fn names(&self, f: &mut impl FnMut(NameKind, &str)) {
        use NameKind::{Exchange, Key, Lock, Queue};
        match self {
            Query::LockInfo { name } => f(Lock, name),
            Query::FenceCheck { lock, .. } => f(Lock, lock),
            Query::QueueStats { name } | Query::QueueConfig { name } => f(Queue, name),
            Query::Peek { queue, .. } => f(Queue, queue),
            Query::Exchange { name } => f(Exchange, name),
            Query::Exists { keys } | Query::MGet { keys } | Query::KeyVersions { keys } => {
                keys.iter().for_each(|k| f(Key, k))
            }
            Query::Get { key }
            | Query::Pttl { key }
            | Query::StrLen { key }
            | Query::Type { key }
            | Query::Object { key, .. }
            | Query::ExpireTime { key }
            | Query::HGet { key, .. }
            | Query::HMGet { key, .. }
            | Query::HExists { key, .. }
            | Query::HGetAll { key, .. }
            | Query::HLen { key }
            | Query::HStrLen { key, .. }
            | Query::HScan { key, .. }
            | Query::ListLen { key }
            | Query::ListRange { key, .. }
            | Query::ListIndex { key, .. }
            | Query::ListPos { key, .. } => f(Key, key),
            Query::ListQueues
            | Query::ListLocks
            | Query::Keys { .. }
            | Query::Scan { .. }
            | Query::DbSize
            | Query::Eval(_)
            | Query::ScriptExists { .. } => {}
        }
    }
}

/// The users' part of the state machine: see the module docs.
impl crate::State {
    /// The users `ACL SETUSER` / `DELUSER` made, over the config file's (`None`: deleted).
    pub fn acl_layer(&self) -> &std::collections::BTreeMap<String, Option<User>> {
        &self.acl_layer
    }

    /// The user a session was opened by, if it was opened for one.
    pub fn session_user(&self, session: crate::SessionId) -> Option<&str> {
        self.session_users.get(&session).map(String::as_str)
    }

    /// The user a live hold (by token) or delivery (by receipt) was taken for, if any.
    pub fn token_user(&self, token: u64) -> Option<&str> {
        self.token_users.get(&token).map(String::as_str)
    }

    /// The user whose session waits in a lock's line with wait `wait_id`, if it was opened for
    /// one (listings show other users' waiters to admins only).
    pub fn wait_user(&self, wait_id: u64) -> Option<&str> {
        let Some(crate::WaitTarget::Lock(name)) = self.waits.get(&wait_id) else { return None };
        let waiter = self.resources.get(name)?.waiters.iter().find(|w| w.wait_id == wait_id)?;
        self.session_user(waiter.session)
    }

    /// Records whose KEEP deliveries are: they belong to no session (only their lease ends
    /// them), but they are still the popping user's, so another user cannot ack or nack them
    /// by receipt.
    pub(crate) fn own_kept_deliveries(&mut self, user: Option<String>, receipts: &[u64]) {
        let Some(user) = user else { return };
        for receipt in receipts {
            self.token_users.insert(*receipt, user.clone());
        }
    }

    /// Who a pop being applied now pops for: its session's user, else the caller's.
    pub(crate) fn popping_user(&self, session: Option<crate::SessionId>) -> Option<String> {
        self.user_of(session).or_else(|| self.caller.as_ref().map(|c| c.user.clone()))
    }

    /// The user a hold or delivery taken for `session` now belongs to.
    pub(crate) fn user_of(&self, session: Option<crate::SessionId>) -> Option<String> {
        session.and_then(|s| self.session_users.get(&s).cloned())
    }

    /// Refuses the command being applied when it acts on a hold or delivery (by token or
    /// receipt) another user took, unless its caller is an admin. What was taken for no user
    /// (before users were configured) is anybody's, as it was then.
    pub(crate) fn check_token_owner(
        &self,
        tokens: impl IntoIterator<Item = u64>,
        what: &str,
    ) -> Result<(), crate::CoreError> {
        self.check_owner(tokens.into_iter().map(|t| (t, self.token_users.get(&t))), what)
    }

    /// As [`State::check_token_owner`], with each id's owner given.
    pub(crate) fn check_owner<'a>(
        &self,
        owned: impl IntoIterator<Item = (u64, Option<&'a String>)>,
        what: &str,
    ) -> Result<(), crate::CoreError> {
        let Some(caller) = &self.caller else { return Ok(()) };
        for (id, owner) in owned {
            if owner.is_some_and(|owner| *owner != caller.user) && !caller.is_admin() {
                return Err(crate::CoreError::NoPerm(Denied::NotOwner(format!("{what} {id}")).to_string()));
            }
        }
        Ok(())
    }

    /// Who the command being applied runs for (a script checks its commands against it).
    pub fn caller(&self) -> Option<&Caller> {
        self.caller.as_ref()
    }
}

impl crate::State {
    /// Owners are recorded only for what is live, and no caller outlives its command.
    pub(crate) fn check_users(&self) -> Result<(), String> {
        if let Some(id) = self.session_users.keys().find(|id| !self.sessions.contains_key(id)) {
            return Err(format!("session {id} has a user but is not open"));
        }
        let in_flight = |receipt: &u64| self.queues.values().any(|q| q.in_flight.contains_key(receipt));
        if let Some(token) = self.token_users.keys().find(|t| !self.holds.contains_key(t) && !in_flight(t)) {
            return Err(format!("token {token} has a user but is neither a hold nor a delivery"));
        }
        if self.caller.is_some() {
            return Err("a caller is left set between steps".into());
        }
        Ok(())
    }
}
