//! KV stories, with Redis's semantics: given a state and a command at a time, exactly these replies.

mod common;

use bytes::Bytes;
use common::{World, lock};
use turnstile_core::{
    Command, CoreError, Effect, ExpireCondition, Fence, KeyExpiry, MAX_DURATION, Millis, ObjectField, Query,
    Reply, SetCondition, SetExpiry, SetKey, State,
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

// ---------------------------------------------------------------------------------------------
// The rest of Redis's string and key commands

fn hset(key: &str, pairs: &[(&str, &str)]) -> Command {
    let pairs = pairs.iter().map(|(f, v)| (Bytes::from(f.to_string()), Bytes::from(v.to_string()))).collect();
    Command::HSet { key: key.into(), pairs, nx: false }
}

fn names(list: &[&str]) -> Reply {
    Reply::Names(list.iter().map(|k| (*k).to_owned()).collect())
}

fn wrongtype() -> Reply {
    Reply::Error(CoreError::WrongKind)
}

fn status(s: &str) -> Reply {
    Reply::Status(s.into())
}

fn type_of(w: &World, key: &str) -> Reply {
    w.query(Query::Type { key: key.into() })
}

#[test]
fn getdel_returns_the_string_and_deletes_it() {
    let mut w = World::new();
    w.reply(set_px("k", "v", 1_000));
    assert_eq!(w.reply(Command::GetDel { key: "k".into() }), bytes("v"));
    assert_eq!(get(&w, "k"), Reply::Nil);
    assert_eq!(w.state.next_deadline(), None, "its expiry timer went with it");
    assert_eq!(w.reply(Command::GetDel { key: "k".into() }), Reply::Nil);
    w.reply(hset("h", &[("f", "v")]));
    let expected = w.unchanged();
    assert_eq!(w.reply(Command::GetDel { key: "h".into() }), wrongtype());
    assert_eq!(w.state, expected);
}

#[test]
fn getex_changes_the_ttl_or_leaves_it() {
    let mut w = World::new();
    let getex = |expiry| Command::GetEx { key: "k".into(), expiry };
    assert_eq!(w.reply(getex(None)), Reply::Nil);
    w.reply(set("k", "v"));
    assert_eq!(w.reply(getex(Some(KeyExpiry::In(5_000)))), bytes("v"));
    assert_eq!(pttl(&w, "k"), Reply::Int(5_000));
    assert_eq!(w.reply(getex(None)), bytes("v"));
    assert_eq!(pttl(&w, "k"), Reply::Int(5_000));
    assert_eq!(w.reply(getex(Some(KeyExpiry::At(w.now + 9_000)))), bytes("v"));
    assert_eq!(pttl(&w, "k"), Reply::Int(9_000));
    assert_eq!(w.reply(getex(Some(KeyExpiry::Persist))), bytes("v"));
    assert_eq!(pttl(&w, "k"), Reply::Int(-1));
    // A time already past answers the value and deletes the key, as Redis does.
    assert_eq!(w.reply(getex(Some(KeyExpiry::At(w.now - 1)))), bytes("v"));
    assert_eq!(get(&w, "k"), Reply::Nil);
    w.reply(hset("k", &[("f", "v")]));
    assert_eq!(w.reply(getex(Some(KeyExpiry::Persist))), wrongtype());
}

#[test]
fn mset_replaces_any_type_and_clears_ttls_and_msetnx_is_all_or_nothing() {
    let mut w = World::new();
    w.reply(set_px("a", "old", 1_000));
    w.reply(hset("h", &[("f", "v")]));
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, Bytes)> {
        list.iter().map(|(k, v)| ((*k).to_owned(), Bytes::from(v.to_string()))).collect()
    };
    assert_eq!(w.reply(Command::MSet { pairs: pairs(&[("a", "1"), ("h", "2")]), nx: false }), Reply::Ok);
    assert_eq!(
        w.query(Query::MGet { keys: vec!["a".into(), "h".into(), "x".into()] }),
        Reply::Array(vec![bytes("1"), bytes("2"), Reply::Nil])
    );
    assert_eq!(pttl(&w, "a"), Reply::Int(-1));
    let expected = w.unchanged();
    assert_eq!(w.reply(Command::MSet { pairs: pairs(&[("new", "1"), ("a", "3")]), nx: true }), Reply::Int(0));
    assert_eq!(w.state, expected, "MSETNX with one existing key sets none");
    assert_eq!(w.reply(Command::MSet { pairs: pairs(&[("n1", "1"), ("n2", "2")]), nx: true }), Reply::Int(1));
    assert_eq!(exists(&w, &["n1", "n2"]), Reply::Int(2));
}

#[test]
fn mget_answers_nil_for_other_types() {
    let mut w = World::new();
    w.reply(set("s", "v"));
    w.reply(hset("h", &[("f", "v")]));
    let reply = w.query(Query::MGet { keys: vec!["h".into(), "s".into()] });
    assert_eq!(reply, Reply::Array(vec![Reply::Nil, bytes("v")]));
}

#[test]
fn append_and_strlen() {
    let mut w = World::new();
    let append = |v: &str| Command::Append { key: "k".into(), value: Bytes::from(v.to_owned()) };
    assert_eq!(w.reply(append("ab")), Reply::Int(2));
    w.reply(pexpire("k", 3_000, ExpireCondition::Always));
    assert_eq!(w.reply(append("cde")), Reply::Int(5));
    assert_eq!(get(&w, "k"), bytes("abcde"));
    assert_eq!(pttl(&w, "k"), Reply::Int(3_000), "APPEND keeps the TTL");
    assert_eq!(w.query(Query::StrLen { key: "k".into() }), Reply::Int(5));
    assert_eq!(w.query(Query::StrLen { key: "none".into() }), Reply::Int(0));
    assert_eq!(w.state.payload_bytes(), 1 + 5);
    w.reply(hset("h", &[("f", "v")]));
    assert_eq!(w.query(Query::StrLen { key: "h".into() }), wrongtype());
    assert_eq!(w.reply(Command::Append { key: "h".into(), value: Bytes::from_static(b"x") }), wrongtype());
}

#[test]
fn incrbyfloat_writes_sums_as_redis_does() {
    let mut w = World::new();
    let incr = |delta: &str| Command::IncrByFloat { key: "f".into(), delta: delta.into() };
    w.reply(set("f", "10.50"));
    w.reply(pexpire("f", 3_000, ExpireCondition::Always));
    assert_eq!(w.reply(incr("0.1")), bytes("10.6"));
    assert_eq!(w.reply(incr("-5")), bytes("5.6"));
    assert_eq!(w.reply(incr("5.0e3")), bytes("5005.6"));
    assert_eq!(pttl(&w, "f"), Reply::Int(3_000), "INCRBYFLOAT keeps the TTL");
    assert_eq!(w.reply(Command::IncrByFloat { key: "new".into(), delta: "3.0".into() }), bytes("3"));
    let invalid = |text: &str| Reply::Error(CoreError::InvalidArgument(text.into()));
    for (delta, error) in
        [("x", "value is not a valid float"), ("inf", "increment would produce NaN or Infinity")]
    {
        let expected = w.unchanged();
        assert_eq!(w.reply(incr(delta)), invalid(error));
        assert_eq!(w.state, expected, "a refused INCRBYFLOAT {delta} changes nothing");
    }
    w.reply(set("f", "abc"));
    assert_eq!(w.reply(incr("1")), invalid("value is not a valid float"));
}

#[test]
fn expireat_in_the_past_deletes_and_persist_removes_the_ttl() {
    let mut w = World::new();
    w.reply(set("k", "v"));
    let at = |at: i64, condition| Command::ExpireAt { key: "k".into(), at, condition };
    assert_eq!(w.reply(at(w.now as i64 + 4_000, ExpireCondition::Always)), Reply::Int(1));
    assert_eq!(pttl(&w, "k"), Reply::Int(4_000));
    assert_eq!(w.query(Query::ExpireTime { key: "k".into() }), Reply::Int(w.now as i64 + 4_000));
    assert_eq!(w.reply(at(w.now as i64 + 9_000, ExpireCondition::Lt)), Reply::Int(0));
    assert_eq!(w.reply(Command::Persist { key: "k".into() }), Reply::Int(1));
    assert_eq!(w.reply(Command::Persist { key: "k".into() }), Reply::Int(0));
    assert_eq!(w.query(Query::ExpireTime { key: "k".into() }), Reply::Int(-1));
    // A time decades away is kept as given, beyond the longest TTL.
    let far = 4_102_444_800_000;
    assert_eq!(w.reply(at(far, ExpireCondition::Always)), Reply::Int(1));
    assert_eq!(w.query(Query::ExpireTime { key: "k".into() }), Reply::Int(far));
    assert_eq!(w.reply(at(1, ExpireCondition::Always)), Reply::Int(1));
    assert_eq!(get(&w, "k"), Reply::Nil);
    assert_eq!(w.query(Query::ExpireTime { key: "k".into() }), Reply::Int(-2));
    assert_eq!(w.reply(Command::Persist { key: "k".into() }), Reply::Int(0));
}

#[test]
fn expire_ttl_and_persist_work_on_hashes() {
    let mut w = World::new();
    w.reply(hset("h", &[("f", "v")]));
    assert_eq!(w.reply(pexpire("h", 2_000, ExpireCondition::Always)), Reply::Int(1));
    assert_eq!(pttl(&w, "h"), Reply::Int(2_000));
    w.advance(2_000);
    assert_eq!(type_of(&w, "h"), status("none"));
    assert_eq!(w.state.payload_bytes(), 0);
}

#[test]
fn type_names_every_kind() {
    let mut w = World::new();
    w.reply(set("s", "v"));
    w.reply(hset("h", &[("f", "v")]));
    let s = w.session();
    w.reply(lock(s, "lock", 10_000));
    assert_eq!(type_of(&w, "s"), status("string"));
    assert_eq!(type_of(&w, "h"), status("hash"));
    assert_eq!(type_of(&w, "lock"), status("none"), "locks are not keys");
    assert_eq!(exists(&w, &["s", "h", "lock"]), Reply::Int(2));
}

#[test]
fn rename_moves_the_value_and_its_ttl() {
    let mut w = World::new();
    let rename = |from: &str, to: &str, nx| Command::Rename { from: from.into(), to: to.into(), nx };
    assert_eq!(
        w.reply(rename("a", "b", false)),
        Reply::Error(CoreError::InvalidArgument("no such key".into()))
    );
    w.reply(set_px("a", "1", 5_000));
    w.reply(hset("b", &[("f", "v")]));
    w.reply(pexpire("b", 1_000, ExpireCondition::Always));
    assert_eq!(w.reply(rename("a", "b", true)), Reply::Int(0));
    assert_eq!(w.reply(rename("a", "a", true)), Reply::Int(0));
    assert_eq!(w.reply(rename("a", "a", false)), Reply::Ok);
    assert_eq!(w.reply(rename("a", "b", false)), Reply::Ok);
    assert_eq!((get(&w, "a"), get(&w, "b")), (Reply::Nil, bytes("1")));
    assert_eq!(pttl(&w, "b"), Reply::Int(5_000), "the TTL moved with the value, the old one is gone");
    assert_eq!(w.reply(rename("b", "c", true)), Reply::Int(1));
    w.advance(5_000);
    assert_eq!(w.query(Query::DbSize), Reply::Int(0));
}

#[test]
fn keys_match_globs_in_key_order() {
    let mut w = World::new();
    for key in ["user:2", "user:10", "job:1", "user:1", "u[x]"] {
        w.reply(set(key, "v"));
    }
    let keys = |pattern: &str| w.query(Query::Keys { pattern: Bytes::from(pattern.to_owned()) });
    assert_eq!(keys("user:*"), names(&["user:1", "user:10", "user:2"]));
    assert_eq!(keys("user:?"), names(&["user:1", "user:2"]));
    assert_eq!(keys("[j-k]*"), names(&["job:1"]));
    assert_eq!(keys("u\\[x\\]"), names(&["u[x]"]));
    assert_eq!(keys("*"), names(&["job:1", "u[x]", "user:1", "user:10", "user:2"]));
    assert_eq!(w.query(Query::DbSize), Reply::Int(5));
}

/// One `SCAN` call: (next cursor, keys).
fn scan(w: &World, cursor: u64, pattern: Option<&str>, count: u64, kind: Option<&str>) -> (u64, Vec<String>) {
    let query = Query::Scan {
        cursor,
        pattern: pattern.map(|p| Bytes::from(p.to_owned())),
        count,
        kind: kind.map(str::to_owned),
    };
    match w.query(query) {
        Reply::Array(parts) => match &parts[..] {
            [Reply::Bytes(next), Reply::Names(keys)] => {
                (std::str::from_utf8(next).unwrap().parse().unwrap(), keys.clone())
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn scan_returns_every_key_present_throughout_while_keys_come_and_go() {
    let mut w = World::new();
    for i in 0..50 {
        w.reply(set(&format!("stay:{i}"), "v"));
    }
    let mut seen = std::collections::BTreeSet::new();
    let (mut cursor, mut calls) = (0, 0);
    loop {
        let (next, keys) = scan(&w, cursor, None, 7, None);
        seen.extend(keys);
        calls += 1;
        // Between calls, keys are added and removed (but never the `stay:` ones).
        w.reply(set(&format!("new:{calls}"), "v"));
        w.reply(del(&[&format!("new:{}", calls - 1)]));
        if next == 0 {
            break;
        }
        assert!(next > cursor, "the cursor moves forward");
        cursor = next;
    }
    for i in 0..50 {
        assert!(seen.contains(&format!("stay:{i}")), "stay:{i} was never returned");
    }
    assert!(calls >= 50 / 7, "COUNT bounds each batch: {calls} calls");
    // The same scan gives the same batches: reads are deterministic.
    assert_eq!(scan(&w, 0, None, 7, None), scan(&w, 0, None, 7, None));
}

#[test]
fn scan_filters_by_pattern_and_type_after_counting() {
    let mut w = World::new();
    w.reply(set("s1", "v"));
    w.reply(set("s2", "v"));
    w.reply(hset("h1", &[("f", "v")]));
    let (next, mut keys) = scan(&w, 0, None, 1_000, Some("hash"));
    assert_eq!((next, keys.clone()), (0, vec!["h1".to_owned()]));
    (_, keys) = scan(&w, 0, Some("s*"), 1_000, None);
    keys.sort();
    assert_eq!(keys, ["s1", "s2"]);
    assert_eq!(scan(&w, 0, None, 1_000, Some("nosuchtype")), (0, vec![]));
}

#[test]
fn object_answers_what_clients_probe() {
    let mut w = World::new();
    w.reply(set("int", "12345"));
    w.reply(set("short", "hello"));
    w.reply(set("long", &"x".repeat(45)));
    w.reply(hset("h", &[("f", "v")]));
    w.reply(hset("big", &[("f", &"x".repeat(65))]));
    let object = |key: &str, field| w.query(Query::Object { key: key.into(), field });
    assert_eq!(object("int", ObjectField::Encoding), bytes("int"));
    assert_eq!(object("short", ObjectField::Encoding), bytes("embstr"));
    assert_eq!(object("long", ObjectField::Encoding), bytes("raw"));
    assert_eq!(object("h", ObjectField::Encoding), bytes("listpack"));
    assert_eq!(object("big", ObjectField::Encoding), bytes("hashtable"));
    assert_eq!(object("none", ObjectField::Encoding), Reply::Nil);
    assert_eq!(object("h", ObjectField::RefCount), Reply::Int(1));
    assert_eq!(object("h", ObjectField::IdleTime), Reply::Int(0));
    assert!(
        matches!(object("h", ObjectField::Freq), Reply::Error(CoreError::InvalidArgument(t)) if t.starts_with("An LFU"))
    );
    assert_eq!(object("none", ObjectField::Freq), Reply::Nil);
}

#[test]
fn flushall_removes_every_key_and_nothing_else() {
    let mut w = World::new();
    let s = w.session();
    w.reply(lock(s, "L", 10_000));
    w.reply(common::push("q", "m"));
    w.reply(set_px("a", "1", 5_000));
    w.reply(hset("h", &[("f", "v")]));
    assert_eq!(w.reply(Command::FlushKeys), Reply::Ok);
    assert_eq!(w.query(Query::DbSize), Reply::Int(0));
    let summary = w.state.summary();
    assert_eq!((summary.keys, summary.holds, summary.messages), (0, 1, 1));
    assert_eq!(w.state.payload_bytes(), 1, "only the message's byte is left");
}

#[test]
fn every_change_stamps_the_key_version() {
    // WATCH compares versions: each write below must give the key a new one.
    let mut w = World::new();
    w.reply(set("k", "1"));
    let mut last = w.state.key_version("k", w.now);
    let steps: Vec<Command> = vec![
        Command::Append { key: "k".into(), value: Bytes::from_static(b"0") },
        Command::IncrByFloat { key: "k".into(), delta: "1".into() },
        Command::GetEx { key: "k".into(), expiry: Some(KeyExpiry::In(9_000)) },
        Command::Persist { key: "k".into() },
        Command::ExpireAt { key: "k".into(), at: 1_000_000, condition: ExpireCondition::Always },
        Command::MSet { pairs: vec![("k".into(), Bytes::from_static(b"2"))], nx: false },
    ];
    for step in steps {
        w.reply(step.clone());
        let now = w.state.key_version("k", w.now);
        assert!(now > last, "{step:?} left the version at {last}");
        last = now;
    }
}

#[test]
fn replay_and_snapshot_reproduce_keys_of_every_type() {
    let mut w = World::new();
    w.reply(set_px("a", "1", 5_000));
    w.reply(hset("h", &[("f1", "v1"), ("f2", "v2")]));
    w.reply(pexpire("h", 8_000, ExpireCondition::Always));
    w.reply(Command::Rename { from: "a".into(), to: "b".into(), nx: false });
    w.reply(Command::IncrByFloat { key: "f".into(), delta: "1.5".into() });
    w.reply(Command::HDel { key: "h".into(), fields: vec![Bytes::from_static(b"f1")] });
    w.advance(100);
    assert_eq!(w.replay(), w.state);
    let restored = State::restore(w.state.snapshot().into()).expect("snapshot restores");
    assert_eq!(restored, w.state);
    restored.check_invariants().unwrap();
    let (next, _) = scan(&w, 0, None, 1, None);
    assert_eq!(
        scan(&w, next, None, 10, None),
        {
            let mut r = World::new();
            r.state = restored;
            r.now = w.now;
            scan(&r, next, None, 10, None)
        },
        "a cursor works on the restored state"
    );
}
