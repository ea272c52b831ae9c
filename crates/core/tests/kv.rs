//! KV stories, with Redis's semantics: given a state and a command at a time, exactly these replies.

mod common;

use bytes::Bytes;
use common::{World, lock};
use turnstile_core::{
    Command, CoreError, Effect, ExpireCondition, Fence, MAX_DURATION, Millis, Query, Reply, SetCondition,
    SetExpiry, SetKey, State,
};

// ---------------------------------------------------------------------------------------------
// Helpers

fn set(key: &str, value: &str) -> Command {
    Command::Set(SetKey::new(key, value.to_owned()))
}

fn set_with(key: &str, value: &str, f: impl FnOnce(&mut SetKey)) -> Command {
    let mut s = SetKey::new(key, value.to_owned());
    f(&mut s);
    Command::Set(s)
}

fn set_px(key: &str, value: &str, ms: Millis) -> Command {
    set_with(key, value, |s| s.expiry = SetExpiry::In(ms))
}

fn bytes(v: &str) -> Reply {
    Reply::Bytes(Bytes::from(v.to_owned()))
}

fn get(w: &World, key: &str) -> Reply {
    w.query(Query::Get { key: key.into() })
}

fn pttl(w: &World, key: &str) -> Reply {
    w.query(Query::Pttl { key: key.into() })
}

fn exists(w: &World, keys: &[&str]) -> Reply {
    w.query(Query::Exists { keys: keys.iter().map(|k| (*k).to_owned()).collect() })
}

fn del(keys: &[&str]) -> Command {
    Command::Del { keys: keys.iter().map(|k| (*k).to_owned()).collect(), fence: None }
}

fn pexpire(key: &str, ttl: i64, condition: ExpireCondition) -> Command {
    Command::Expire { key: key.into(), ttl, condition }
}

fn incr_by(key: &str, delta: i64) -> Command {
    Command::IncrBy { key: key.into(), delta }
}

// ---------------------------------------------------------------------------------------------
// SET / GET

#[test]
fn set_then_get() {
    let mut w = World::new();
    assert_eq!(get(&w, "k"), Reply::Nil);
    assert_eq!(w.reply(set("k", "v1")), Reply::Ok);
    assert_eq!(get(&w, "k"), bytes("v1"));
    assert_eq!(w.reply(set("k", "v2")), Reply::Ok);
    assert_eq!(get(&w, "k"), bytes("v2"));
    assert_eq!(pttl(&w, "k"), Reply::Int(-1));
    assert_eq!(w.state.payload_bytes(), 3);
}

#[test]
fn set_nx_on_an_existing_key_is_nil_and_changes_nothing() {
    let mut w = World::new();
    assert_eq!(w.reply(set_with("k", "first", |s| s.condition = SetCondition::Nx)), Reply::Ok);
    let expected = w.unchanged();
    assert_eq!(w.reply(set_with("k", "second", |s| s.condition = SetCondition::Nx)), Reply::Nil);
    assert_eq!(w.state, expected);
    assert_eq!(get(&w, "k"), bytes("first"));
    // NX with an expiry that does not apply leaves the key without one.
    assert_eq!(
        w.reply(set_with("k", "third", |s| (s.condition, s.expiry) = (SetCondition::Nx, SetExpiry::In(100)))),
        Reply::Nil
    );
    assert_eq!(pttl(&w, "k"), Reply::Int(-1));
}

#[test]
fn set_xx_on_a_missing_key_is_nil() {
    let mut w = World::new();
    let expected = w.unchanged();
    assert_eq!(w.reply(set_with("k", "v", |s| s.condition = SetCondition::Xx)), Reply::Nil);
    assert_eq!(w.state, expected);
    assert_eq!(get(&w, "k"), Reply::Nil);

    assert_eq!(w.reply(set("k", "v1")), Reply::Ok);
    assert_eq!(w.reply(set_with("k", "v2", |s| s.condition = SetCondition::Xx)), Reply::Ok);
    assert_eq!(get(&w, "k"), bytes("v2"));
}

#[test]
fn set_get_returns_the_old_value() {
    let mut w = World::new();
    let with_get = |s: &mut SetKey| s.get = true;
    // Missing: nil, and the key is set.
    assert_eq!(w.reply(set_with("k", "v1", with_get)), Reply::Nil);
    assert_eq!(get(&w, "k"), bytes("v1"));
    // Existing: the old value, and the key is set.
    assert_eq!(w.reply(set_with("k", "v2", with_get)), bytes("v1"));
    assert_eq!(get(&w, "k"), bytes("v2"));
    // NX GET on an existing key: the old value, and nothing is set.
    assert_eq!(
        w.reply(set_with("k", "v3", |s| (s.get, s.condition) = (true, SetCondition::Nx))),
        bytes("v2")
    );
    assert_eq!(get(&w, "k"), bytes("v2"));
    // XX GET on a missing key: nil, and nothing is set.
    assert_eq!(w.reply(set_with("x", "v", |s| (s.get, s.condition) = (true, SetCondition::Xx))), Reply::Nil);
    assert_eq!(get(&w, "x"), Reply::Nil);
}

#[test]
fn set_px_expires_the_key_at_its_tick() {
    let mut w = World::new();
    assert_eq!(w.reply(set_px("k", "v", 500)), Reply::Ok);
    assert_eq!(pttl(&w, "k"), Reply::Int(500));
    assert_eq!(w.next_deadline(), Some(1_500));

    // A read at a later time already sees it gone, before any tick.
    assert_eq!(w.state.query(1_499, Query::Get { key: "k".into() }), bytes("v"));
    assert_eq!(w.state.query(1_499, Query::Pttl { key: "k".into() }), Reply::Int(1));
    assert_eq!(w.state.query(1_500, Query::Get { key: "k".into() }), Reply::Nil);
    assert_eq!(w.state.query(1_500, Query::Pttl { key: "k".into() }), Reply::Int(-2));
    assert_eq!(w.state.query(1_500, Query::Exists { keys: vec!["k".into()] }), Reply::Int(0));
    w.now = 1_700;
    assert_eq!(get(&w, "k"), Reply::Nil);

    // The tick at the expiry removes it.
    assert_eq!(w.tick_at(1_499), vec![]);
    assert_eq!(get(&w, "k"), bytes("v"));
    assert_eq!(w.tick_at(1_500), vec![]);
    assert_eq!(get(&w, "k"), Reply::Nil);
    assert_eq!(w.next_deadline(), None);
    assert_eq!(w.state.payload_bytes(), 0);
    // It is gone for NX too.
    assert_eq!(w.reply(set_with("k", "again", |s| s.condition = SetCondition::Nx)), Reply::Ok);
}

#[test]
fn keepttl_keeps_the_ttl_and_a_plain_set_clears_it() {
    let mut w = World::new();
    assert_eq!(w.reply(set_px("k", "v1", 1_000)), Reply::Ok);
    w.now = 1_200;
    assert_eq!(w.reply(set_with("k", "v2", |s| s.expiry = SetExpiry::KeepTtl)), Reply::Ok);
    assert_eq!(get(&w, "k"), bytes("v2"));
    assert_eq!(pttl(&w, "k"), Reply::Int(800));
    // A new PX replaces the TTL.
    assert_eq!(w.reply(set_px("k", "v3", 5_000)), Reply::Ok);
    assert_eq!(pttl(&w, "k"), Reply::Int(5_000));
    assert_eq!(w.next_deadline(), Some(6_200));
    // A plain SET clears it.
    assert_eq!(w.reply(set("k", "v4")), Reply::Ok);
    assert_eq!(pttl(&w, "k"), Reply::Int(-1));
    assert_eq!(w.next_deadline(), None);
    assert_eq!(w.tick_at(10_000), vec![]);
    assert_eq!(get(&w, "k"), bytes("v4"));
    // KEEPTTL on a key without a TTL, or a missing one, sets none.
    assert_eq!(w.reply(set_with("n", "v", |s| s.expiry = SetExpiry::KeepTtl)), Reply::Ok);
    assert_eq!(pttl(&w, "n"), Reply::Int(-1));
}

#[test]
fn set_with_an_invalid_expiry_is_refused() {
    let mut w = World::new();
    assert_eq!(w.reply(set("k", "old")), Reply::Ok);
    let invalid = Reply::Error(CoreError::InvalidArgument("invalid expire time in 'set' command".into()));
    let expected = w.unchanged();
    assert_eq!(w.reply(set_px("k", "new", 0)), invalid);
    assert_eq!(w.state, expected);
    let expected = w.unchanged();
    assert_eq!(w.reply(set_px("k", "new", MAX_DURATION + 1)), invalid);
    assert_eq!(w.state, expected);
    assert_eq!(get(&w, "k"), bytes("old"));
}

// ---------------------------------------------------------------------------------------------
// DEL, EXISTS, PEXPIRE, PTTL

#[test]
fn del_counts_removed_keys_and_exists_counts_duplicates() {
    let mut w = World::new();
    assert_eq!(w.reply(set("a", "1")), Reply::Ok);
    assert_eq!(w.reply(set_px("b", "2", 1_000)), Reply::Ok);
    assert_eq!(w.reply(set("c", "3")), Reply::Ok);
    assert_eq!(exists(&w, &["a", "a", "b", "x"]), Reply::Int(3));
    assert_eq!(exists(&w, &[]), Reply::Int(0));

    // A key named twice is removed once.
    assert_eq!(w.reply(del(&["a", "b", "x", "a"])), Reply::Int(2));
    assert_eq!(exists(&w, &["a", "b", "c"]), Reply::Int(1));
    // b's expiry timer went with it.
    assert_eq!(w.next_deadline(), None);
    assert_eq!(w.reply(del(&["a"])), Reply::Int(0));
}

#[test]
fn pexpire_follows_nx_xx_gt_lt() {
    let mut w = World::new();
    assert_eq!(w.reply(pexpire("missing", 1_000, ExpireCondition::Always)), Reply::Int(0));
    assert_eq!(w.reply(set("k", "v")), Reply::Ok);

    // No TTL yet: XX and GT refuse (no TTL counts as infinite), NX sets.
    assert_eq!(w.reply(pexpire("k", 1_000, ExpireCondition::Xx)), Reply::Int(0));
    assert_eq!(w.reply(pexpire("k", 1_000, ExpireCondition::Gt)), Reply::Int(0));
    assert_eq!(pttl(&w, "k"), Reply::Int(-1));
    assert_eq!(w.reply(pexpire("k", 1_000, ExpireCondition::Nx)), Reply::Int(1));
    assert_eq!(pttl(&w, "k"), Reply::Int(1_000));

    // With a TTL: NX refuses, XX sets.
    assert_eq!(w.reply(pexpire("k", 2_000, ExpireCondition::Nx)), Reply::Int(0));
    assert_eq!(w.reply(pexpire("k", 2_000, ExpireCondition::Xx)), Reply::Int(1));
    assert_eq!(pttl(&w, "k"), Reply::Int(2_000));
    // GT only lengthens, LT only shortens.
    assert_eq!(w.reply(pexpire("k", 1_500, ExpireCondition::Gt)), Reply::Int(0));
    assert_eq!(w.reply(pexpire("k", 2_000, ExpireCondition::Gt)), Reply::Int(0));
    assert_eq!(w.reply(pexpire("k", 3_000, ExpireCondition::Gt)), Reply::Int(1));
    assert_eq!(pttl(&w, "k"), Reply::Int(3_000));
    assert_eq!(w.reply(pexpire("k", 4_000, ExpireCondition::Lt)), Reply::Int(0));
    assert_eq!(w.reply(pexpire("k", 500, ExpireCondition::Lt)), Reply::Int(1));
    assert_eq!(pttl(&w, "k"), Reply::Int(500));
    assert_eq!(w.next_deadline(), Some(1_500));

    // LT on a key without a TTL sets one (anything is less than infinite).
    assert_eq!(w.reply(set("n", "v")), Reply::Ok);
    assert_eq!(w.reply(pexpire("n", 10_000, ExpireCondition::Lt)), Reply::Int(1));
    assert_eq!(pttl(&w, "n"), Reply::Int(10_000));

    // The TTL set by PEXPIRE ends the key at its tick.
    assert_eq!(w.tick_at(1_500), vec![]);
    assert_eq!(get(&w, "k"), Reply::Nil);
    assert_eq!(get(&w, "n"), bytes("v"));
}

#[test]
fn pexpire_with_a_ttl_of_zero_or_less_deletes_the_key() {
    let mut w = World::new();
    assert_eq!(w.reply(set_px("a", "1", 1_000)), Reply::Ok);
    assert_eq!(w.reply(set("b", "2")), Reply::Ok);
    assert_eq!(w.reply(set("c", "3")), Reply::Ok);

    assert_eq!(w.reply(pexpire("a", -1, ExpireCondition::Always)), Reply::Int(1));
    assert_eq!(get(&w, "a"), Reply::Nil);
    assert_eq!(w.next_deadline(), None);
    assert_eq!(w.reply(pexpire("b", 0, ExpireCondition::Always)), Reply::Int(1));
    assert_eq!(exists(&w, &["a", "b"]), Reply::Int(0));
    // Conditions still apply: GT never holds for a key without a TTL.
    assert_eq!(w.reply(pexpire("c", -5, ExpireCondition::Gt)), Reply::Int(0));
    assert_eq!(get(&w, "c"), bytes("3"));
    assert_eq!(w.reply(pexpire("c", -5, ExpireCondition::Lt)), Reply::Int(1));
    assert_eq!(get(&w, "c"), Reply::Nil);
    assert_eq!(w.reply(pexpire("c", -5, ExpireCondition::Always)), Reply::Int(0));
}

#[test]
fn pttl_is_minus_two_minus_one_or_the_remaining_time() {
    let mut w = World::new();
    assert_eq!(pttl(&w, "k"), Reply::Int(-2));
    assert_eq!(w.reply(set("k", "v")), Reply::Ok);
    assert_eq!(pttl(&w, "k"), Reply::Int(-1));
    assert_eq!(w.reply(pexpire("k", 10_000, ExpireCondition::Always)), Reply::Int(1));
    assert_eq!(pttl(&w, "k"), Reply::Int(10_000));
    w.now = 4_000;
    assert_eq!(pttl(&w, "k"), Reply::Int(7_000));
    assert_eq!(w.state.query(10_999, Query::Pttl { key: "k".into() }), Reply::Int(1));
    assert_eq!(w.state.query(11_000, Query::Pttl { key: "k".into() }), Reply::Int(-2));
}

// ---------------------------------------------------------------------------------------------
// INCR / INCRBY

#[test]
fn incr_counts_from_zero_on_a_missing_key() {
    let mut w = World::new();
    assert_eq!(w.reply(incr_by("n", 1)), Reply::Int(1));
    assert_eq!(w.reply(incr_by("n", 10)), Reply::Int(11));
    assert_eq!(w.reply(incr_by("n", -20)), Reply::Int(-9));
    assert_eq!(get(&w, "n"), bytes("-9"));
    assert_eq!(w.reply(incr_by("m", -3)), Reply::Int(-3));

    // Values written by SET count when they are plain integers.
    for (value, next) in
        [("0", 1), ("-5", -4), ("41", 42), ("-9223372036854775808", -9_223_372_036_854_775_807)]
    {
        assert_eq!(w.reply(set("s", value)), Reply::Ok);
        assert_eq!(w.reply(incr_by("s", 1)), Reply::Int(next), "INCR on {value:?}");
        assert_eq!(get(&w, "s"), bytes(&next.to_string()));
    }
}

#[test]
fn incr_on_a_value_that_is_not_an_integer_is_refused() {
    let mut w = World::new();
    for value in ["abc", " 1", "1 ", "01", "+1", "-0", "", "1.5", "-", "9223372036854775808"] {
        assert_eq!(w.reply(set("k", value)), Reply::Ok);
        let expected = w.unchanged();
        assert_eq!(w.reply(incr_by("k", 1)), Reply::Error(CoreError::NotInteger), "INCR on {value:?}");
        assert_eq!(w.state, expected, "INCR on {value:?} changed the state");
        assert_eq!(get(&w, "k"), bytes(value));
    }
}

#[test]
fn incr_past_the_range_overflows_and_changes_nothing() {
    let mut w = World::new();
    assert_eq!(w.reply(set("max", "9223372036854775807")), Reply::Ok);
    let expected = w.unchanged();
    assert_eq!(w.reply(incr_by("max", 1)), Reply::Error(CoreError::Overflow));
    assert_eq!(w.state, expected);
    assert_eq!(get(&w, "max"), bytes("9223372036854775807"));

    assert_eq!(w.reply(incr_by("min", i64::MIN)), Reply::Int(i64::MIN));
    let expected = w.unchanged();
    assert_eq!(w.reply(incr_by("min", -1)), Reply::Error(CoreError::Overflow));
    assert_eq!(w.state, expected);
    assert_eq!(get(&w, "min"), bytes("-9223372036854775808"));
}

#[test]
fn incr_keeps_the_ttl() {
    let mut w = World::new();
    assert_eq!(w.reply(set_px("n", "5", 1_000)), Reply::Ok);
    w.now = 1_300;
    assert_eq!(w.reply(incr_by("n", 1)), Reply::Int(6));
    assert_eq!(pttl(&w, "n"), Reply::Int(700));
    assert_eq!(w.next_deadline(), Some(2_000));
    assert_eq!(w.tick_at(2_000), vec![]);
    assert_eq!(get(&w, "n"), Reply::Nil);
    // Expired, it counts from zero again, without a TTL.
    assert_eq!(w.reply(incr_by("n", 1)), Reply::Int(1));
    assert_eq!(pttl(&w, "n"), Reply::Int(-1));
}

// ---------------------------------------------------------------------------------------------
// Fencing and the classic lock

#[test]
fn fenced_set_and_del_apply_only_with_a_live_lock_token() {
    let mut w = World::new();
    let (s1, s2) = (w.session(), w.session());
    assert_eq!(w.reply(lock(s1, "L", 10_000)), Reply::Granted { token: 1, lease: 10_000 });
    let fence = |token| Some(Fence { lock: "L".into(), token });

    assert_eq!(w.reply(set_with("k", "v1", |s| s.fence = fence(1))), Reply::Ok);
    assert_eq!(w.reply(set("other", "x")), Reply::Ok);

    // s1's lease runs out; s2 takes the lock.
    assert_eq!(
        w.tick_at(11_000),
        vec![Effect::HoldExpired { name: "L".into(), token: 1, owner: "session:1".into() }]
    );
    assert_eq!(w.reply(lock(s2, "L", 10_000)), Reply::Granted { token: 2, lease: 10_000 });

    let fenced = Reply::Error(CoreError::Fenced { lock: "L".into(), token: 1 });
    let expected = w.unchanged();
    assert_eq!(w.reply(set_with("k", "stale", |s| s.fence = fence(1))), fenced);
    assert_eq!(w.state, expected);
    let expected = w.unchanged();
    assert_eq!(w.reply(Command::Del { keys: vec!["k".into(), "other".into()], fence: fence(1) }), fenced);
    assert_eq!(w.state, expected);
    // A token of a lock that never existed is refused too.
    let expected = w.unchanged();
    assert_eq!(
        w.reply(set_with("k", "stale", |s| s.fence = Some(Fence { lock: "M".into(), token: 2 }))),
        Reply::Error(CoreError::Fenced { lock: "M".into(), token: 2 })
    );
    assert_eq!(w.state, expected);
    assert_eq!(get(&w, "k"), bytes("v1"));

    // The live token applies.
    assert_eq!(w.reply(set_with("k", "v2", |s| s.fence = fence(2))), Reply::Ok);
    assert_eq!(get(&w, "k"), bytes("v2"));
    assert_eq!(
        w.reply(Command::Del { keys: vec!["k".into(), "other".into()], fence: fence(2) }),
        Reply::Int(2)
    );
    // After release the token is stale.
    assert_eq!(w.reply(Command::Release { name: "L".into(), token: 2 }), Reply::Int(1));
    assert_eq!(
        w.reply(set_with("k", "v3", |s| s.fence = fence(2))),
        Reply::Error(CoreError::Fenced { lock: "L".into(), token: 2 })
    );
    assert_eq!(get(&w, "k"), Reply::Nil);
}

#[test]
fn the_classic_set_nx_px_lock() {
    let mut w = World::new();
    let acquire = |who: &str| {
        set_with("lock", who, |s| (s.condition, s.expiry) = (SetCondition::Nx, SetExpiry::In(30_000)))
    };

    // A takes the lock.
    assert_eq!(w.reply(acquire("A")), Reply::Ok);
    // B tries and fails while A's key lives.
    w.now = 5_000;
    assert_eq!(w.reply(acquire("B")), Reply::Nil);
    assert_eq!(get(&w, "lock"), bytes("A"));
    assert_eq!(pttl(&w, "lock"), Reply::Int(26_000));
    w.now = 30_999;
    assert_eq!(w.reply(acquire("B")), Reply::Nil);

    // A's key expires at 31000; B succeeds.
    assert_eq!(w.tick_at(31_000), vec![]);
    assert_eq!(get(&w, "lock"), Reply::Nil);
    assert_eq!(w.reply(acquire("B")), Reply::Ok);
    assert_eq!(get(&w, "lock"), bytes("B"));
    assert_eq!(pttl(&w, "lock"), Reply::Int(30_000));

    // B releases with DEL; A can take it again.
    assert_eq!(w.reply(del(&["lock"])), Reply::Int(1));
    assert_eq!(w.reply(acquire("A")), Reply::Ok);
}

#[test]
fn replay_and_snapshot_reproduce_the_state() {
    let mut w = World::new();
    let s = w.session();
    w.reply(set("a", "1"));
    w.reply(set_px("b", "2", 500));
    w.reply(set_with("c", "3", |s| (s.condition, s.expiry) = (SetCondition::Nx, SetExpiry::In(5_000))));
    w.reply(incr_by("n", 41));
    w.reply(pexpire("n", 2_000, ExpireCondition::Nx));
    w.reply(lock(s, "L", 10_000));
    w.reply(set_with("f", "x", |k| k.fence = Some(Fence { lock: "L".into(), token: 1 })));
    w.advance(600);
    w.reply(incr_by("n", 1));
    w.reply(set_with("c", "4", |s| s.expiry = SetExpiry::KeepTtl));
    w.reply(del(&["a", "zz"]));
    w.reply(pexpire("f", 7_000, ExpireCondition::Always));
    w.advance(1_500);

    let replayed: State = w.replay();
    assert_eq!(replayed, w.state);
    let restored = State::restore(w.state.snapshot().into()).expect("snapshot restores");
    assert_eq!(restored, w.state);
    assert_eq!(get(&w, "n"), Reply::Nil);
    assert_eq!(get(&w, "c"), bytes("4"));
    assert_eq!(exists(&w, &["a", "b", "c", "f"]), Reply::Int(2));
}
