//! The HTTP API's JSON bodies, decoded and checked by the server's own code.

use turnstile_core::{Command, Consume, CreditPool, HostId, Mode, Reply, State};
use turnstile_server::{BODY_OPERATIONS, body_command};

/// A JSON body for one of the routes that read one; the first byte picks the route.
///
/// Asserts: the decoding returns a command or a 400-class error with a message (never a 5xx);
/// a command it accepts applies to a state (with a lock held, a queue with a delivery in
/// flight) whose invariants hold after it.
pub fn http_json(data: &[u8]) {
    let (c, body) = crate::control(data);
    let operation = BODY_OPERATIONS[usize::from(c) % BODY_OPERATIONS.len()];
    let Some(decoded) = body_command(operation, "n", body) else {
        panic!("{operation} is listed as a route with a body but is not decoded");
    };
    let cmd = match decoded {
        Ok(cmd) => cmd,
        Err(e) => {
            assert!(e.status.is_client_error() && !e.message.is_empty(), "{operation}: {e:?}");
            return;
        }
    };
    let mut state = populated();
    let now = state.clock() + 1;
    crate::apply_checked(&mut state, now, cmd);
}

/// A state where the names a body can reach (`n`, and whatever it names itself) meet holds,
/// messages and deliveries: lock `n` held, queue `n` with one message delivered by a pop, one
/// to a consumer sharing a pool of one, and one ready.
fn populated() -> State {
    let mut state = State::new();
    let Reply::Session(session) = crate::apply_checked(
        &mut state,
        1,
        Command::OpenSession { host: HostId(1), secret: 1, timeout: 60_000 },
    ) else {
        panic!("a session opens in an empty state");
    };
    let acquire = turnstile_core::Acquire {
        name: "n".into(),
        mode: Mode::Exclusive,
        ttl: 30_000,
        wait: 0,
        owner: None,
        session: Some(session),
        keep: false,
    };
    crate::apply_checked(&mut state, 2, Command::Acquire(acquire));
    for payload in ["a", "b", "c"] {
        crate::apply_checked(&mut state, 3, Command::Push(turnstile_core::Push::new("n", payload)));
    }
    let pop = turnstile_core::Pop {
        queue: "n".into(),
        session: Some(session),
        count: 1,
        wait: 0,
        lease: None,
        auto_ack: false,
        keep: false,
    };
    crate::apply_checked(&mut state, 4, Command::Pop(pop));
    let consume = Consume {
        queue: "n".into(),
        session,
        credit: 0,
        lease: None,
        auto_ack: false,
        exclusive: false,
        pool: Some(CreditPool { id: 1, limit: 1 }),
    };
    crate::apply_checked(&mut state, 5, Command::Consume(consume));
    state
}
