//! Users inside the state machine: who owns a session, a hold and a delivery, and the log-kept
//! layer of the user table.

mod common;

use bytes::Bytes;
use common::{HOST, SECRET, World, open_session};
use turnstile_core::{
    Acquire, Caller, Command, CoreError, Effect, Mode, Pop, Push, Reply, SessionId, State, User,
};

fn caller(user: &str, rules: &str) -> Caller {
    let mut u = User::new(user);
    u.apply_rules(rules.split_whitespace(), &|_| true).unwrap();
    Caller { user: user.into(), perms: u.perms }
}

fn alice() -> Caller {
    caller("alice", "on +@all -@admin ~* alllocks allqueues")
}

fn bob() -> Caller {
    caller("bob", "on +@all -@admin ~* alllocks allqueues")
}

fn admin() -> Caller {
    caller("root", "on +@all ~* alllocks allqueues")
}

fn as_user(caller: Caller, command: Command) -> Command {
    Command::AsUser { caller, command: Box::new(command) }
}

fn session_of(w: &mut World, who: Caller) -> SessionId {
    match w.reply(as_user(who, open_session())) {
        Reply::Session(s) => s,
        other => panic!("open replied {other:?}"),
    }
}

fn acquire(name: &str, session: SessionId, wait: u64, keep: bool) -> Command {
    Command::Acquire(Acquire {
        name: name.into(),
        mode: Mode::Exclusive,
        ttl: 60_000,
        wait,
        owner: None,
        session: Some(session),
        keep,
    })
}

fn token(reply: Reply) -> u64 {
    match reply {
        Reply::Granted { token, .. } => token,
        other => panic!("expected a grant, got {other:?}"),
    }
}

fn no_perm(reply: &Reply) -> bool {
    matches!(reply, Reply::Error(e @ CoreError::NoPerm(_)) if e.code() == "NOPERM")
}

#[test]
fn only_the_owner_or_an_admin_releases_or_renews_a_hold_by_token() {
    let mut w = World::new();
    let a = session_of(&mut w, alice());
    let t = token(w.reply(as_user(alice(), acquire("x", a, 0, false))));
    assert_eq!(w.state.token_user(t), Some("alice"));

    let release = || Command::Release { name: "x".into(), token: t };
    let refused = w.reply(as_user(bob(), release()));
    assert!(no_perm(&refused), "{refused:?}");
    let Reply::Error(e) = &refused else { unreachable!() };
    assert_eq!(e.to_string(), format!("hold {t} belongs to another user"));
    let renew = Command::Renew { name: "x".into(), token: t, ttl: 1_000 };
    assert!(no_perm(&w.reply(as_user(bob(), renew.clone()))));
    assert_eq!(w.reply(as_user(alice(), renew)), Reply::Int(1_000));
    assert_eq!(w.reply(as_user(alice(), release())), Reply::Int(1));
    assert_eq!(w.state.token_user(t), None, "a released hold has no owner left");

    // An admin may release anybody's.
    let t = token(w.reply(as_user(alice(), acquire("x", a, 0, false))));
    assert_eq!(w.reply(as_user(admin(), Command::Release { name: "x".into(), token: t })), Reply::Int(1));
}

#[test]
fn a_kept_hold_stays_its_users_after_the_session_ends() {
    let mut w = World::new();
    let a = session_of(&mut w, alice());
    let t = token(w.reply(as_user(alice(), acquire("kept", a, 0, true))));
    w.apply(Command::CloseSession { session: a, binding: None });
    assert_eq!(w.state.session_user(a), None);
    assert_eq!(w.state.token_user(t), Some("alice"));
    assert!(no_perm(&w.reply(as_user(bob(), Command::Release { name: "kept".into(), token: t }))));
    assert_eq!(w.reply(as_user(alice(), Command::Release { name: "kept".into(), token: t })), Reply::Int(1));
}

#[test]
fn a_waiter_granted_by_another_users_release_gets_its_own_user() {
    let mut w = World::new();
    let a = session_of(&mut w, alice());
    let b = session_of(&mut w, bob());
    let t = token(w.reply(as_user(alice(), acquire("x", a, 0, false))));
    assert!(matches!(w.reply(as_user(bob(), acquire("x", b, 10_000, false))), Reply::Waiting { .. }));
    let (_, fx) = w.apply(as_user(alice(), Command::Release { name: "x".into(), token: t }));
    let granted = fx
        .iter()
        .find_map(|e| match e {
            Effect::Granted { token, .. } => Some(*token),
            _ => None,
        })
        .expect("bob is granted");
    assert_eq!(w.state.token_user(granted), Some("bob"));
}

#[test]
fn deliveries_are_acked_only_by_their_user() {
    let mut w = World::new();
    w.reply(Command::Push(Push::new("q", "m")));
    let a = session_of(&mut w, alice());
    let pop = Pop {
        queue: "q".into(),
        session: Some(a),
        count: 1,
        wait: 0,
        lease: None,
        auto_ack: false,
        keep: false,
    };
    let receipt = match w.reply(as_user(alice(), Command::Pop(pop))) {
        Reply::Deliveries(d) => d[0].receipt,
        other => panic!("{other:?}"),
    };
    assert_eq!(w.state.token_user(receipt), Some("alice"));
    let ack = Command::Ack { queue: "q".into(), receipts: vec![receipt], fence: None };
    assert!(no_perm(&w.reply(as_user(bob(), ack.clone()))));
    let nack = Command::Nack { queue: "q".into(), receipt, delay: 0, dead_letter: false };
    assert!(no_perm(&w.reply(as_user(bob(), nack))));
    assert_eq!(w.reply(as_user(alice(), ack)), Reply::Int(1));
    assert_eq!(w.state.token_user(receipt), None);
}

#[test]
fn kept_deliveries_are_acked_only_by_their_user_with_or_without_a_session() {
    let mut w = World::new();
    let pop = |session, wait| Pop {
        queue: "q".into(),
        session,
        count: 1,
        wait,
        lease: None,
        auto_ack: false,
        keep: true,
    };
    let receipt = |reply: Reply| match reply {
        Reply::Deliveries(d) => d[0].receipt,
        other => panic!("{other:?}"),
    };
    // Popped at once, in no session (HTTP's plain pop): the caller's.
    w.reply(Command::Push(Push::new("q", "m1")));
    let r = receipt(w.reply(as_user(alice(), Command::Pop(pop(None, 0)))));
    assert_eq!(w.state.token_user(r), Some("alice"));
    let ack = |r| Command::Ack { queue: "q".into(), receipts: vec![r], fence: None };
    assert!(no_perm(&w.reply(as_user(bob(), ack(r)))));
    assert_eq!(w.reply(as_user(alice(), ack(r))), Reply::Int(1));

    // Waited for, then served by bob's push: still alice's (her session's), not the pusher's.
    let a = session_of(&mut w, alice());
    assert!(matches!(w.reply(as_user(alice(), Command::Pop(pop(Some(a), 10_000)))), Reply::Waiting { .. }));
    let (_, fx) = w.apply(as_user(bob(), Command::Push(Push::new("q", "m2"))));
    let r = fx
        .iter()
        .find_map(|e| match e {
            Effect::Delivered { deliveries, .. } => Some(deliveries[0].receipt),
            _ => None,
        })
        .expect("alice's pop is served");
    w.apply(Command::CloseSession { session: a, binding: None });
    assert_eq!(w.state.token_user(r), Some("alice"), "a kept delivery outlives its session");
    let nack = Command::Nack { queue: "q".into(), receipt: r, delay: 0, dead_letter: false };
    assert!(no_perm(&w.reply(as_user(bob(), nack.clone()))));
    assert_eq!(w.reply(as_user(admin(), nack)), Reply::Int(1));
    assert_eq!(w.state.token_user(r), None);
}

#[test]
fn a_lock_waiter_names_its_sessions_user() {
    let mut w = World::new();
    let a = session_of(&mut w, alice());
    let b = session_of(&mut w, bob());
    token(w.reply(as_user(alice(), acquire("x", a, 0, false))));
    let Reply::Waiting { wait_id } = w.reply(as_user(bob(), acquire("x", b, 10_000, false))) else {
        panic!("bob waits")
    };
    assert_eq!(w.state.wait_user(wait_id), Some("bob"));
    assert_eq!(w.state.wait_user(wait_id + 1000), None);
    let s = w.session();
    let Reply::Waiting { wait_id } = w.reply(acquire("x", s, 10_000, false)) else { panic!("waits") };
    assert_eq!(w.state.wait_user(wait_id), None, "a session opened for no user");
}

#[test]
fn a_session_is_resumed_only_by_its_user() {
    let mut w = World::new();
    let a = session_of(&mut w, alice());
    let resume = Command::ResumeSession { session: a, secret: SECRET, host: HOST, timeout: 60_000 };
    assert!(no_perm(&w.apply(as_user(bob(), resume.clone())).0));
    assert!(matches!(w.apply(as_user(alice(), resume)).0, Reply::Int(_)));
}

#[test]
fn what_no_user_took_is_anybodys_and_commands_without_a_caller_are_unchecked() {
    let mut w = World::new();
    let s = w.session();
    let t = token(w.reply(acquire("x", s, 0, false)));
    assert_eq!(w.state.token_user(t), None);
    assert_eq!(w.reply(as_user(bob(), Command::Release { name: "x".into(), token: t })), Reply::Int(1));
    let a = session_of(&mut w, alice());
    let t = token(w.reply(as_user(alice(), acquire("x", a, 0, false))));
    assert_eq!(w.reply(Command::Release { name: "x".into(), token: t }), Reply::Int(1));
}

#[test]
fn users_set_and_deleted_are_a_layer_in_the_state_and_its_snapshots() {
    let mut w = World::new();
    let mut carol = User::new("carol");
    carol.apply_rules(["on", ">pw", "+@read", "~app:*"], &|_| true).unwrap();
    let (reply, fx) = w.apply(Command::AclSetUser { user: carol.clone() });
    assert_eq!((reply, fx), (Reply::Ok, vec![Effect::UsersChanged]));
    let (_, fx) = w.apply(Command::AclDelUser { names: vec!["alice".into()] });
    assert_eq!(fx, vec![Effect::UsersChanged]);
    assert_eq!(w.state.acl_layer().get("carol"), Some(&Some(carol)));
    assert_eq!(w.state.acl_layer().get("alice"), Some(&None), "a deleted user is a tombstone");
    let a = session_of(&mut w, alice());
    w.reply(as_user(alice(), acquire("x", a, 0, true)));
    let restored = State::restore(Bytes::from(w.state.snapshot())).expect("restores");
    assert_eq!(restored, w.state);
    assert_eq!(restored.session_user(a), Some("alice"));
}

#[test]
fn wrappers_do_not_nest() {
    let mut w = World::new();
    let nested = as_user(alice(), as_user(bob(), Command::Tick));
    assert!(matches!(w.reply(nested), Reply::Error(CoreError::InvalidArgument(_))));
}
