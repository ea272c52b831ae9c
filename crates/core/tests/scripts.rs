//! Scripts in a process with no script host (the Lua side lives in `crates/script`, whose tests
//! run them): the cache still works, and a script is refused without changing anything.

use bytes::Bytes;
use turnstile_core::{Command, CoreError, Eval, Query, Reply, ScriptRef, State, sha1_hex};

#[test]
fn without_a_host_a_script_is_refused_and_nothing_changes() {
    let mut state = State::new();
    let eval = Eval {
        script: ScriptRef::Source(Bytes::from_static(b"return 1")),
        keys: vec![],
        args: vec![],
        session: None,
        budget: 1000,
    };
    let (reply, effects) = state.apply(1, 10, Command::Eval(eval.clone()));
    assert_eq!(reply, Reply::Error(CoreError::Script("ERR scripts are not enabled in this process".into())));
    assert!(effects.is_empty());
    assert_eq!(state.script_shas().count(), 0, "a script that did not run is not cached");
    assert_eq!(state.query(10, Query::Eval(eval)), reply);
    let (reply, _) = state.apply(2, 10, Command::ScriptLoad { source: Bytes::from_static(b"return 1") });
    assert!(matches!(reply, Reply::Error(CoreError::Script(_))), "{reply:?}");
    assert_eq!(state.apply(3, 10, Command::ScriptFlush).0, Reply::Ok);
    let sha = sha1_hex(b"return 1");
    assert_eq!(state.query(10, Query::ScriptExists { shas: vec![sha] }), Reply::Array(vec![Reply::Int(0)]));
    state.check_invariants().unwrap();
}
