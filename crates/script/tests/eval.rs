//! Scripts applied to a state, as the state machine applies them: conversions, the sandbox,
//! the budget's rollback, determinism, and Turnstile's own commands called from Lua.

use bytes::Bytes;
use turnstile_core::{
    Command, CoreError, Eval, HostId, Push, Query, Reply, ScriptRef, SessionId, State, sha1_hex,
};

/// A state driven one entry at a time, with the host installed.
struct World {
    state: State,
    index: u64,
    now: u64,
}

impl World {
    fn new() -> World {
        turnstile_script::install();
        World { state: State::new(), index: 0, now: 1_000 }
    }

    fn apply(&mut self, cmd: Command) -> Reply {
        self.index += 1;
        let (reply, _) = self.state.apply(self.index, self.now, cmd);
        self.state.check_invariants().expect("invariants hold after every step");
        reply
    }

    fn eval(&mut self, source: &str, keys: &[&str], args: &[&str]) -> Reply {
        self.apply(eval(source, keys, args, 1_000_000))
    }

    fn get(&self, key: &str) -> Reply {
        self.state.query(self.now, Query::Get { key: key.into() })
    }

    fn session(&mut self) -> SessionId {
        match self.apply(Command::OpenSession { host: HostId(1), secret: 7, timeout: 60_000 }) {
            Reply::Session(id) => id,
            other => panic!("open session replied {other:?}"),
        }
    }
}

fn eval(source: &str, keys: &[&str], args: &[&str], budget: u64) -> Command {
    Command::Eval(Eval {
        script: ScriptRef::Source(Bytes::copy_from_slice(source.as_bytes())),
        keys: keys.iter().map(|k| Bytes::copy_from_slice(k.as_bytes())).collect(),
        args: args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect(),
        session: None,
        budget,
    })
}

fn error_text(reply: &Reply) -> String {
    match reply {
        Reply::Error(e) => e.to_string(),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn bytes(s: &str) -> Reply {
    Reply::Bytes(Bytes::copy_from_slice(s.as_bytes()))
}

#[test]
fn lua_values_become_redis_replies() {
    let mut w = World::new();
    assert_eq!(w.eval("return 3.99", &[], &[]), Reply::Int(3));
    assert_eq!(w.eval("return -3.99", &[], &[]), Reply::Int(-3));
    assert_eq!(w.eval("return 'x'", &[], &[]), bytes("x"));
    assert_eq!(w.eval("return true", &[], &[]), Reply::Int(1));
    assert_eq!(w.eval("return false", &[], &[]), Reply::Nil);
    assert_eq!(w.eval("return nil", &[], &[]), Reply::Nil);
    assert_eq!(
        w.eval("return {1, 'a', {2}, nil, 5}", &[], &[]),
        Reply::Array(vec![Reply::Int(1), bytes("a"), Reply::Array(vec![Reply::Int(2)])]),
        "an array stops at its first nil"
    );
    assert_eq!(w.eval("return {ok='FINE'}", &[], &[]), Reply::Status("FINE".into()));
    assert_eq!(w.eval("return redis.status_reply('S')", &[], &[]), Reply::Status("S".into()));
    assert_eq!(error_text(&w.eval("return redis.error_reply('MY err')", &[], &[])), "MY err");
    assert_eq!(error_text(&w.eval("return {err='bad'}", &[], &[])), "bad");
    assert_eq!(
        w.eval("return {KEYS[1], KEYS[2], ARGV[1], #ARGV}", &["k1", "k2"], &["a1"]),
        Reply::Array(vec![bytes("k1"), bytes("k2"), bytes("a1"), Reply::Int(1)])
    );
}

#[test]
fn replies_become_lua_values() {
    let mut w = World::new();
    // Nil bulk → false; status → {ok=...}; integer → number; bulk → string.
    assert_eq!(w.eval("return type(redis.call('GET', 'nope'))", &[], &[]), bytes("boolean"));
    assert_eq!(w.eval("return redis.call('SET', 'k', '10').ok", &[], &[]), bytes("OK"));
    assert_eq!(w.eval("return redis.call('INCRBY', 'k', 5) + 1", &[], &[]), Reply::Int(16));
    assert_eq!(w.eval("return redis.call('GET', 'k') .. '!'", &[], &[]), bytes("15!"));
    assert_eq!(w.eval("return redis.call('SET', KEYS[1], 1.5)", &["f"], &[]), Reply::Status("OK".into()));
    assert_eq!(w.get("f"), bytes("1.5"), "numbers are sent as their text");
    // An error reply: redis.pcall returns it, redis.call raises it.
    w.eval("redis.call('SET', 's', 'abc')", &[], &[]);
    assert_eq!(
        w.eval("return redis.pcall('INCR', 's').err", &[], &[]),
        bytes("ERR value is not an integer or out of range")
    );
    let sha = sha1_hex(b"\nreturn redis.call('INCR', 's')");
    assert_eq!(
        error_text(&w.eval("\nreturn redis.call('INCR', 's')", &[], &[])),
        format!("ERR value is not an integer or out of range script: {sha}, on @user_script:2.")
    );
    assert_eq!(
        w.eval("return redis.sha1hex('')", &[], &[]),
        bytes("da39a3ee5e6b4b0d3255bfef95601890afd80709")
    );
}

#[test]
fn call_errors_use_redis_texts() {
    let mut w = World::new();
    let cases = [
        ("return redis.call('nosuch')", "ERR Unknown Redis command called from script"),
        ("return redis.call()", "ERR Please specify at least one argument for this redis lib call"),
        ("return redis.call('get', {})", "ERR Lua redis lib command arguments must be strings or integers"),
        ("return redis.call('get')", "ERR Wrong number of args calling Redis command from script"),
        ("return redis.call('ping')", "ERR This Redis command is not allowed from script"),
        ("return redis.call('eval', 'return 1', 0)", "ERR This Redis command is not allowed from script"),
        ("return redis.call('script', 'flush')", "ERR This Redis command is not allowed from script"),
    ];
    for (source, text) in cases {
        let sha = sha1_hex(source.as_bytes());
        assert_eq!(
            error_text(&w.eval(source, &[], &[])),
            format!("{text} script: {sha}, on @user_script:1.")
        );
    }
    let source = "error('boom')";
    let sha = sha1_hex(source.as_bytes());
    assert_eq!(
        error_text(&w.eval(source, &[], &[])),
        format!("ERR user_script:1: boom script: {sha}, on @user_script:1.")
    );
    let compile = error_text(&w.eval("syntax error here", &[], &[]));
    assert_eq!(
        compile,
        "ERR Error compiling script (new function): user_script:1: '=' expected near 'error'"
    );
    assert_eq!(
        w.state.query(w.now, Query::ScriptExists { shas: vec![sha1_hex(b"syntax error here"), sha] }),
        Reply::Array(vec![Reply::Int(0), Reply::Int(1)]),
        "a script that does not compile is not cached; one that failed running is"
    );
}

#[test]
fn the_sandbox_refuses_globals_and_the_outside_world() {
    let mut w = World::new();
    for (source, text) in [
        ("x = 1", "user_script:1: Attempt to modify a readonly table"),
        ("return y", "user_script:1: Script attempted to access nonexistent global variable 'y'"),
        ("return os.time()", "user_script:1: Script attempted to access nonexistent global variable 'os'"),
        ("return io", "user_script:1: Script attempted to access nonexistent global variable 'io'"),
        (
            "return loadfile",
            "user_script:1: Script attempted to access nonexistent global variable 'loadfile'",
        ),
        ("return require", "user_script:1: Script attempted to access nonexistent global variable 'require'"),
        ("return dofile", "user_script:1: Script attempted to access nonexistent global variable 'dofile'"),
        ("string.upper = nil", "user_script:1: Attempt to modify a readonly table"),
        ("rawset(_G, 'x', 1)", "user_script:1: Attempt to modify a readonly table"),
        ("setmetatable(_G, nil)", "cannot change a protected metatable"),
    ] {
        let sha = sha1_hex(source.as_bytes());
        let got = error_text(&w.eval(source, &[], &[]));
        assert!(got.starts_with("ERR "), "{source}: {got}");
        assert!(got.contains(text), "{source}: {got}");
        assert!(got.ends_with(&format!("script: {sha}, on @user_script:1.")), "{source}: {got}");
    }
    // What one script did to the shared libraries does not reach the next one.
    w.eval("pcall(function() getmetatable('').__index = {} end)", &[], &[]);
    assert_eq!(w.eval("return ('abc'):upper()", &[], &[]), bytes("ABC"));
    // Locals and own tables are the script's to change.
    assert_eq!(w.eval("local t = {} rawset(t, 'a', 2) return t.a", &[], &[]), Reply::Int(2));
}

#[test]
fn math_random_is_the_same_in_every_script() {
    let mut w = World::new();
    let source = "return {math.random(1000), math.random(1000), math.random(1000)}";
    let first = w.eval(source, &[], &[]);
    assert_eq!(w.eval(&format!("{source} -- again"), &[], &[]), first);
    let Reply::Array(draws) = &first else { panic!("{first:?}") };
    assert!(draws.iter().all(|d| matches!(d, Reply::Int(1..=1000))), "{draws:?}");
    assert_ne!(draws[0], draws[1], "{draws:?}");
}

#[test]
fn cjson_round_trips() {
    let mut w = World::new();
    assert_eq!(
        w.eval("return cjson.encode({1, 2, {a=1, b='x'}})", &[], &[]),
        bytes(r#"[1,2,{"a":1,"b":"x"}]"#)
    );
    assert_eq!(w.eval("return cjson.encode({})", &[], &[]), bytes("{}"));
    assert_eq!(w.eval("return cjson.encode(cjson.decode('[null, 2.5]'))", &[], &[]), bytes("[null,2.5]"));
    assert_eq!(w.eval(r#"return cjson.decode('{"a":[1,7]}').a[2]"#, &[], &[]), Reply::Int(7));
    assert!(error_text(&w.eval("return cjson.decode('{')", &[], &[])).starts_with("ERR "));
}

#[test]
fn over_its_budget_a_script_is_stopped_and_its_key_writes_undone() {
    let mut w = World::new();
    w.eval("redis.call('SET', 'kept', 'old') redis.call('SET', 'gone', 'x', 'PX', 5000)", &[], &[]);
    let runaway = "redis.call('SET', 'kept', 'new') redis.call('DEL', 'gone') \
                   redis.call('SET', 'fresh', 'v', 'PX', 100) redis.call('INCR', 'n') \
                   while true do end";
    let reply = w.apply(eval(runaway, &[], &[], 50_000));
    let text = error_text(&reply);
    assert!(text.starts_with("ERR script used more than its budget of 50000 instructions"), "{text}");
    assert_eq!(w.get("kept"), bytes("old"));
    assert_eq!(w.get("gone"), bytes("x"));
    assert_eq!(w.get("fresh"), Reply::Nil);
    assert_eq!(w.get("n"), Reply::Nil);
    assert_eq!(w.state.query(w.now, Query::Pttl { key: "gone".into() }), Reply::Int(5000));
    // A script that catches the budget error with pcall is stopped all the same.
    let catching = "redis.call('SET', 'kept', 'caught') pcall(function() while true do end end) return 1";
    assert!(error_text(&w.apply(eval(catching, &[], &[], 50_000))).contains("budget"));
    assert_eq!(w.get("kept"), bytes("old"));
}

/// Hashes, lists, renames and the other keyspace commands take the undo log too (a key at a
/// time, no copy of the state): the state after the rollback is the one before, snapshot bytes,
/// versions, timers and byte counts included.
#[test]
fn over_its_budget_a_script_s_hash_list_and_rename_writes_are_undone_key_by_key() {
    let mut w = World::new();
    w.eval(
        "redis.call('HSET', 'h', 'a', '1') redis.call('RPUSH', 'l', 'x', 'y', 'z') \
         redis.call('SET', 'from', 'v', 'PX', 5000) redis.call('MSET', 'm1', '1', 'm2', '2')",
        &[],
        &[],
    );
    let runaway = "redis.call('HSET', 'h', 'a', '2', 'b', '3') redis.call('HDEL', 'h', 'a') \
                   redis.call('HINCRBY', 'h', 'n', 5) redis.call('LPOP', 'l') redis.call('LSET', 'l', 0, 'w') \
                   redis.call('LTRIM', 'l', 0, 0) redis.call('RENAME', 'from', 'to') \
                   redis.call('MSET', 'm1', 'x', 'm3', 'y') redis.call('APPEND', 'm2', 'zz') \
                   redis.call('GETDEL', 'm1') redis.call('PERSIST', 'to') while true do end";
    let source = Bytes::copy_from_slice(runaway.as_bytes());
    let mut expected = w.state.clone();
    expected.apply(w.index + 1, w.now, Command::ScriptLoad { source });
    let reply = w.apply(eval(runaway, &[], &[], 200_000));
    assert!(error_text(&reply).contains("budget"), "{reply:?}");
    assert_eq!(w.state.snapshot(), expected.snapshot());
    assert_eq!(w.state.query(w.now, Query::Pttl { key: "from".into() }), Reply::Int(5000));
    assert_eq!(w.get("m2"), bytes("2"));
}

#[test]
fn over_its_budget_a_script_s_lock_and_queue_writes_are_undone_too() {
    let mut w = World::new();
    let session = w.session();
    w.apply(Command::Push(Push::new("jobs", "m1")));
    let before = w.state.clone();
    let runaway = "redis.call('SET', 'k', 'v') \
                   redis.call('LOCK.ACQUIRE', 'L', 10000) \
                   redis.call('Q.PUSH', 'jobs', 'm2') redis.call('Q.POP', 'jobs') \
                   redis.call('SET', 'k2', 'v') while true do end";
    let mut cmd = eval(runaway, &[], &[], 100_000);
    if let Command::Eval(e) = &mut cmd {
        e.session = Some(session);
    }
    w.index += 1;
    let (reply, effects) = w.state.apply(w.index, w.now, cmd);
    w.state.check_invariants().unwrap();
    assert!(error_text(&reply).contains("budget"), "{reply:?}");
    assert!(effects.is_empty(), "{effects:?}");
    let info = w.state.query(w.now, Query::LockInfo { name: "L".into() });
    assert!(format!("{info:?}").contains("\"free\""), "{info:?}");
    assert_eq!(w.get("k"), Reply::Nil);
    assert_eq!(w.get("k2"), Reply::Nil);
    // Everything but the applied index and the script cache is as it was.
    let mut expected = before.clone();
    expected.apply(w.index, w.now, Command::ScriptLoad { source: Bytes::from(runaway) });
    assert_eq!(w.state.snapshot(), expected.snapshot());
}

#[test]
fn a_script_s_own_error_keeps_its_writes() {
    let mut w = World::new();
    let reply = w.eval("redis.call('SET', 'k', 'v') error('after the write')", &[], &[]);
    assert!(error_text(&reply).contains("after the write"));
    assert_eq!(w.get("k"), bytes("v"), "as in Redis, a failing script's writes stay");
}

#[test]
fn scripts_take_locks_and_push_for_the_caller() {
    let mut w = World::new();
    let session = w.session();
    let source = "local grant = redis.call('LOCK.ACQUIRE', KEYS[1], 10000, 'WAIT', 5000) \
                  local id = redis.call('Q.PUSH', KEYS[2], ARGV[1]) \
                  local again = redis.call('LOCK.ACQUIRE', KEYS[1], 10000, 'OWNER', 'other') \
                  return {grant[1], id, again}";
    let mut cmd = eval(source, &["L", "jobs"], &["payload"], 1_000_000);
    if let Command::Eval(e) = &mut cmd {
        e.session = Some(session);
    }
    let reply = w.apply(cmd);
    let Reply::Array(items) = &reply else { panic!("{reply:?}") };
    assert!(matches!(items[0], Reply::Int(t) if t > 0), "{reply:?}");
    assert!(matches!(items[1], Reply::Int(_)), "{reply:?}");
    assert_eq!(items[2], Reply::Nil, "a lock that is taken answers nil at once, never waits");
    let info = format!("{:?}", w.state.query(w.now, Query::LockInfo { name: "L".into() }));
    assert!(info.contains(&format!("session:{}", session.0)), "the hold is the caller's: {info}");
    assert!(!info.contains("WaiterView"), "nobody waits: {info}");
    // The hold goes when the caller's session does.
    w.apply(Command::CloseSession { session, binding: None });
    let info = format!("{:?}", w.state.query(w.now, Query::LockInfo { name: "L".into() }));
    assert!(info.contains("\"free\""), "{info}");
    let stats = format!("{:?}", w.state.query(w.now, Query::QueueStats { name: "jobs".into() }));
    assert!(stats.contains("ready: 1"), "{stats}");
}

#[test]
fn read_only_scripts_refuse_writes() {
    let mut w = World::new();
    w.eval("redis.call('SET', 'k', 'v')", &[], &[]);
    let ro = |source: &str| {
        Query::Eval(Eval {
            script: ScriptRef::Source(Bytes::copy_from_slice(source.as_bytes())),
            keys: vec![],
            args: vec![],
            session: None,
            budget: 1_000_000,
        })
    };
    assert_eq!(w.state.query(w.now, ro("return redis.call('GET', 'k')")), bytes("v"));
    let source = "return redis.call('SET', 'k', 'w')";
    let text = error_text(&w.state.query(w.now, ro(source)));
    let sha = sha1_hex(source.as_bytes());
    assert_eq!(
        text,
        format!(
            "ERR Write commands are not allowed from read-only scripts. script: {sha}, on @user_script:1."
        )
    );
    assert_eq!(w.get("k"), bytes("v"));
}

#[test]
fn evalsha_runs_cached_scripts_and_names_missing_ones() {
    let mut w = World::new();
    let source = "return ARGV[1]";
    let sha = sha1_hex(source.as_bytes());
    let by_sha = |sha: &str| {
        Command::Eval(Eval {
            script: ScriptRef::Sha(sha.into()),
            keys: vec![],
            args: vec![Bytes::from("hi")],
            session: None,
            budget: 1_000_000,
        })
    };
    assert_eq!(w.apply(by_sha(&sha)), Reply::Error(CoreError::NoScript));
    assert_eq!(w.apply(Command::ScriptLoad { source: Bytes::from(source) }), bytes(&sha));
    assert_eq!(w.apply(by_sha(&sha.to_uppercase())), bytes("hi"));
    assert_eq!(w.apply(Command::ScriptFlush), Reply::Ok);
    assert_eq!(w.apply(by_sha(&sha)), Reply::Error(CoreError::NoScript));
    let load = w.apply(Command::ScriptLoad { source: Bytes::from("return (") });
    assert!(error_text(&load).starts_with("ERR Error compiling script (new function): user_script:1:"));
}

#[test]
fn the_same_log_of_scripts_gives_the_same_state_and_snapshot() {
    let log: Vec<Command> = (0..40)
        .map(|i| match i % 4 {
            0 => eval(
                "for i = 1, tonumber(ARGV[1]) do redis.call('INCRBY', KEYS[1], math.random(10)) end \
                 return redis.call('GET', KEYS[1])",
                &["counter"],
                &[&i.to_string()],
                1_000_000,
            ),
            1 => eval("return redis.call('SET', KEYS[1], cjson.encode({n = ARGV[1]}))", &["doc"], &[&i.to_string()], 1_000_000),
            2 => eval("redis.call('Q.PUSH', 'q', ARGV[1]) while true do end", &[], &["x"], 20_000),
            _ => eval("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0", &["doc"], &["nope"], 1_000_000),
        })
        .collect();
    let run = move || {
        let mut w = World::new();
        let replies: Vec<Reply> = log.iter().cloned().map(|cmd| w.apply(cmd)).collect();
        (replies, w.state)
    };
    // Another thread: another VM, as another node would have.
    let (replies_a, a) = run.clone()();
    let (replies_b, b) = std::thread::spawn(run).join().unwrap();
    assert_eq!(replies_a, replies_b);
    assert_eq!(a, b);
    assert_eq!(a.snapshot(), b.snapshot());
    let restored = State::restore(Bytes::from(a.snapshot())).unwrap();
    assert_eq!(restored.script_shas().count(), 4, "the cache is in the snapshot");
}

#[test]
fn the_budget_s_verdict_does_not_depend_on_what_the_vm_ran_before() {
    // Scripts of a growing length against one budget, on a VM that has run another script and
    // on a fresh one (another thread): a count carried over from an earlier script would move
    // the length where the verdict turns on one of them only.
    let lengths: Vec<String> = (4000..7000).step_by(7).map(|n| n.to_string()).collect();
    let verdicts = move |warm_up: bool| {
        let mut w = World::new();
        if warm_up {
            w.eval("local n = 0 for i = 1, 777 do n = n + 1 end return n", &[], &[]);
        }
        lengths
            .iter()
            .map(|n| {
                matches!(w.apply(eval("for i = 1, tonumber(ARGV[1]) do end", &[], &[n], 5_000)), Reply::Nil)
            })
            .collect::<Vec<bool>>()
    };
    let fresh = std::thread::spawn({
        let verdicts = verdicts.clone();
        move || verdicts(false)
    })
    .join()
    .unwrap();
    let warm = verdicts(true);
    assert!(fresh.contains(&true) && fresh.contains(&false), "the edge is inside the range: {fresh:?}");
    assert_eq!(warm, fresh);
}

#[test]
fn tostring_shows_no_addresses() {
    let mut w = World::new();
    assert_eq!(
        w.eval("return {tostring({}), tostring(tostring), tostring(12), tostring('s')}", &[], &[]),
        Reply::Array(vec![bytes("table"), bytes("function"), bytes("12"), bytes("s")])
    );
}
