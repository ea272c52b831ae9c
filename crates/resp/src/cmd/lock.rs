//! Locks and semaphores: `LOCK.*`, `SEM.*`, `FENCE.CHECK`.
//!
//! Locks and semaphores share one namespace and one set of core commands: a semaphore hold is
//! released and renewed exactly like a lock hold, so `SEM.RELEASE` / `SEM.RENEW` are
//! `Command::Release` / `Command::Renew`. Acquires are parsed with `session: None`; the server
//! binds the connection's session through `Command::session_mut` before proposing.

use turnstile_core::{Acquire, Command, Mode, Query, Reply};

use super::spec::{Flag, Group, Keys, Spec, command, flag, integer as int_arg, key, option, string};
use super::{Action, Args, ReplyShape, integer, millis, name, read, syntax_error, uint32, unexpected, write};
use crate::Frame;

const NAME: super::spec::Arg = key("name", "the lock's name (locks and semaphores share one namespace)");
const TOKEN: super::spec::Arg = int_arg("token", "the fencing token the acquire answered");
const TTL: super::spec::Arg =
    int_arg("ttl-ms", "the lease, in ms: the hold ends when it runs out unless renewed");
const WAIT: super::spec::Arg = option(
    "WAIT",
    int_arg("ms", "how long to wait in line, in ms; without it (or 0) the acquire does not wait"),
);
const OWNER: super::spec::Arg = option(
    "OWNER",
    string("id", "who holds it, for LOCK.INFO and deadlock detection (default: the connection's session)"),
);
const KEEP: super::spec::Arg =
    flag("KEEP", "keep the hold when the connection closes: only its lease or a release ends it");
const DEADLOCK: &str = "`DEADLOCK waiting would deadlock: a waits for 'x' held by b -> ...`: waiting would close a cycle in the wait-for graph; nothing was taken";
const LEASE: &str = "`ERR lease or TTL must be between 1 and 1099511627776 ms`";
const RELEASE: &str = "`1` if the token was a live hold and is now released, `0` if it was not (already released, expired, or never)";
const RENEW: &str = "the new lease in ms, counted from now";
const LOST: &str =
    "`LOST hold N is no longer held`: the hold ended (lease ran out, released, or its connection closed)";
const INFO: &str = "a map: `mode` (`free`, `exclusive`, `shared` or `semaphore`), `limit` (1 for a lock), `holders` (each `[owner, token, expires-in-ms, permits]`), `waiters` (each `[owner, mode, permits, deadline-in-ms]`, in the order they will be served)";

/// `LOCK.*`, `SEM.*` and `FENCE.CHECK`, in the order the docs list them.
pub(super) const COMMANDS: &[Spec] = &[
    command("lock.acquire", Group::Lock, "Takes the lock, exclusive or shared, under a lease, and answers a fencing token. Waits in line (FIFO) up to WAIT ms if it is taken.", lock_acquire)
        .args(&[NAME, TTL, WAIT, OWNER, flag("SHARED", "a shared (read) hold: any number at once, none beside an exclusive one"), KEEP])
        .reply("`[token, lease-ms]` when granted; a nil array when the lock stayed taken (at once without `WAIT`, or when the wait ran out)")
        .errors(&[DEADLOCK, "`ERR owner 'o' already holds 'x' in another mode`", "`WRONGTYPE 'x' is a semaphore, not a lock`", LEASE])
        .flags(&[Flag::Write, Flag::Blocking])
        .keys(Keys::FIRST),
    command("lock.release", Group::Lock, "Releases a hold by its fencing token; the next waiters in line are served.", lock_release)
        .args(&[NAME, TOKEN])
        .reply(RELEASE)
        .flags(&[Flag::Write, Flag::Fast])
        .keys(Keys::FIRST),
    command("lock.renew", Group::Lock, "Gives a live hold a new lease.", lock_renew)
        .args(&[NAME, TOKEN, TTL])
        .reply(RENEW)
        .errors(&[LOST, LEASE])
        .flags(&[Flag::Write, Flag::Fast])
        .keys(Keys::FIRST),
    command("lock.info", Group::Lock, "Who holds the lock and who waits for it.", lock_info)
        .args(&[NAME])
        .reply(INFO)
        .flags(&[Flag::ReadOnly, Flag::Fast])
        .keys(Keys::FIRST),
    command("lock.list", Group::Lock, "Every lock and semaphore that is held or waited for, sorted.", lock_list)
        .reply("an array of names")
        .flags(&[Flag::ReadOnly]),
    command("fence.check", Group::Lock, "Whether a fencing token is a live hold of a lock: the check a guarded resource makes before a write.", fence_check)
        .args(&[key("lock", "the lock's name"), TOKEN])
        .reply("`1` if the token is a live hold of the lock, else `0`")
        .flags(&[Flag::ReadOnly, Flag::Fast])
        .keys(Keys::FIRST),
    command("sem.acquire", Group::Semaphore, "Takes COUNT of a semaphore's permits under a lease, and answers a fencing token. Waits in line (FIFO) up to WAIT ms if too few are free.", sem_acquire)
        .args(&[
            key("name", "the semaphore's name (locks and semaphores share one namespace)"),
            int_arg("limit", "the semaphore's permits in all; every acquire names it, and it must agree with the holders'"),
            TTL,
            option("COUNT", int_arg("n", "how many permits to take (default 1)")),
            WAIT,
            OWNER,
            KEEP,
        ])
        .reply("`[token, lease-ms]` when granted; a nil array when too few permits were free (at once without `WAIT`, or when the wait ran out)")
        .errors(&[
            DEADLOCK,
            "`ERR a semaphore's limit must be at least 1 permit, not 0`",
            "`ERR an acquire must take at least 1 permit, not 0`",
            "`ERR cannot take 5 permits of a semaphore whose limit is 3`",
            "`ERR semaphore 's' has limit 3, not 4`: the limit differs from the one its holders gave",
            "`WRONGTYPE 's' is a lock, not a semaphore`",
            LEASE,
        ])
        .flags(&[Flag::Write, Flag::Blocking])
        .keys(Keys::FIRST),
    command("sem.release", Group::Semaphore, "Releases a semaphore hold (all its permits) by its fencing token.", sem_release)
        .args(&[NAME, TOKEN])
        .reply(RELEASE)
        .flags(&[Flag::Write, Flag::Fast])
        .keys(Keys::FIRST),
    command("sem.renew", Group::Semaphore, "Gives a live semaphore hold a new lease.", sem_renew)
        .args(&[NAME, TOKEN, TTL])
        .reply(RENEW)
        .errors(&[LOST, LEASE])
        .flags(&[Flag::Write, Flag::Fast])
        .keys(Keys::FIRST),
    command("sem.info", Group::Semaphore, "Who holds a semaphore's permits and who waits for them.", sem_info)
        .args(&[NAME])
        .reply(INFO)
        .flags(&[Flag::ReadOnly, Flag::Fast])
        .keys(Keys::FIRST),
];

/// `LOCK.ACQUIRE name ttl-ms [WAIT ms] [OWNER id] [SHARED] [KEEP]` → `[token, lease-ms]`, nil
/// when not granted (at once, or within `WAIT`), or `-DEADLOCK` when waiting would close a cycle.
///
/// Without `WAIT` (or with `WAIT 0`) the acquire does not wait. `SHARED` takes a read lock;
/// `KEEP` keeps the hold when the connection closes (only its lease ends it). Options may come in
/// any order; a repeated one takes its last value, as in Redis's `SET`.
pub(super) fn lock_acquire(mut args: Args<'_>) -> Result<Action, Frame> {
    let name = args.name()?;
    let ttl = args.millis()?;
    let mut acquire =
        Acquire { name, mode: Mode::Exclusive, ttl, wait: 0, owner: None, session: None, keep: false };
    while let Some(keyword) = args.keyword() {
        match keyword.as_slice() {
            b"SHARED" => acquire.mode = Mode::Shared,
            other => acquire_option(&mut args, &mut acquire, other)?,
        }
    }
    write(Command::Acquire(acquire), ReplyShape::Grant)
}

/// `LOCK.RELEASE name token` → 1 if the token was a live hold of the lock, else 0.
pub(super) fn lock_release(args: Args<'_>) -> Result<Action, Frame> {
    release(args)
}

/// `LOCK.RENEW name token ttl-ms` → the new lease in ms, or `-LOST` when the hold is gone.
pub(super) fn lock_renew(args: Args<'_>) -> Result<Action, Frame> {
    renew(args)
}

/// `LOCK.INFO name` → a map: `mode`, `limit`, `holders` (`[owner, token, expires-in-ms, permits]`
/// each; permits is 1 for locks),
/// `waiters` (`[owner, mode, permits, deadline-in-ms]` each, in line order).
pub(super) fn lock_info(args: Args<'_>) -> Result<Action, Frame> {
    info(args)
}

/// `LOCK.LIST` → every lock and semaphore name, sorted (an extension, for operators).
pub(super) fn lock_list(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    read(Query::ListLocks, ReplyShape::Names)
}

/// `SEM.ACQUIRE name limit ttl-ms [COUNT n] [WAIT ms] [OWNER id] [KEEP]` → `[token, lease-ms]`
/// or nil. Takes `COUNT` (default 1) of the semaphore's `limit` permits; every acquire names the
/// limit, and the core refuses one that disagrees with the semaphore's.
pub(super) fn sem_acquire(mut args: Args<'_>) -> Result<Action, Frame> {
    let name = args.name()?;
    let limit = uint32(args.next()?)?;
    let ttl = args.millis()?;
    let mode = Mode::Permits { limit, count: 1 };
    let mut acquire = Acquire { name, mode, ttl, wait: 0, owner: None, session: None, keep: false };
    while let Some(keyword) = args.keyword() {
        match keyword.as_slice() {
            b"COUNT" => acquire.mode = Mode::Permits { limit, count: uint32(args.value()?)? },
            other => acquire_option(&mut args, &mut acquire, other)?,
        }
    }
    write(Command::Acquire(acquire), ReplyShape::Grant)
}

/// `SEM.RELEASE name token` → 1 or 0, as `LOCK.RELEASE`.
pub(super) fn sem_release(args: Args<'_>) -> Result<Action, Frame> {
    release(args)
}

/// `SEM.RENEW name token ttl-ms` → the new lease in ms or `-LOST`, as `LOCK.RENEW`.
pub(super) fn sem_renew(args: Args<'_>) -> Result<Action, Frame> {
    renew(args)
}

/// `SEM.INFO name` → the same map as `LOCK.INFO` (`mode` is `semaphore`, `limit` its permits).
pub(super) fn sem_info(args: Args<'_>) -> Result<Action, Frame> {
    info(args)
}

/// `FENCE.CHECK lock token` → 1 if `token` is a live hold of `lock`, else 0.
pub(super) fn fence_check(mut args: Args<'_>) -> Result<Action, Frame> {
    let lock = args.name()?;
    let token = args.uint()?;
    args.end()?;
    read(Query::FenceCheck { lock, token }, ReplyShape::Integer)
}

/// The options both acquires share: `WAIT ms`, `OWNER id`, `KEEP`. Anything else is a syntax error.
fn acquire_option(args: &mut Args<'_>, acquire: &mut Acquire, keyword: &[u8]) -> Result<(), Frame> {
    match keyword {
        b"WAIT" => acquire.wait = millis(args.value()?)?,
        b"OWNER" => acquire.owner = Some(name(args.value()?)?),
        b"KEEP" => acquire.keep = true,
        _ => return Err(syntax_error()),
    }
    Ok(())
}

fn release(mut args: Args<'_>) -> Result<Action, Frame> {
    let name = args.name()?;
    let token = args.uint()?;
    args.end()?;
    write(Command::Release { name, token }, ReplyShape::Integer)
}

fn renew(mut args: Args<'_>) -> Result<Action, Frame> {
    let name = args.name()?;
    let token = args.uint()?;
    let ttl = args.millis()?;
    args.end()?;
    write(Command::Renew { name, token, ttl }, ReplyShape::Integer)
}

fn info(mut args: Args<'_>) -> Result<Action, Frame> {
    let name = args.name()?;
    args.end()?;
    read(Query::LockInfo { name }, ReplyShape::LockInfo)
}

/// [`ReplyShape::Grant`]: `[token, lease-ms]`; not granted is a nil *array* (`*-1` in RESP2),
/// as Redis answers a blocking pop that timed out.
pub(super) fn render_grant(reply: Reply) -> Frame {
    match reply {
        Reply::Granted { token, lease } => Frame::Array(vec![integer(token), integer(lease)]),
        Reply::Nil => Frame::NullArray,
        other => unexpected(ReplyShape::Grant, &other),
    }
}

/// [`ReplyShape::LockInfo`]: a map with bulk-string keys, as Redis's `XINFO` replies.
pub(super) fn render_lock_info(reply: Reply) -> Frame {
    let Reply::LockInfo(info) = reply else { return unexpected(ReplyShape::LockInfo, &reply) };
    let holders = info
        .holders
        .into_iter()
        .map(|h| {
            Frame::Array(vec![
                Frame::bulk(h.owner),
                integer(h.token),
                integer(h.expires_in),
                integer(h.permits.into()),
            ])
        })
        .collect();
    let waiters = info
        .waiters
        .into_iter()
        .map(|w| {
            Frame::Array(vec![
                Frame::bulk(w.owner),
                Frame::bulk(w.mode),
                integer(w.permits.into()),
                integer(w.deadline_in),
            ])
        })
        .collect();
    Frame::Map(vec![
        (Frame::bulk("mode"), Frame::bulk(info.mode)),
        (Frame::bulk("limit"), integer(info.limit.into())),
        (Frame::bulk("holders"), Frame::Array(holders)),
        (Frame::bulk("waiters"), Frame::Array(waiters)),
    ])
}

#[cfg(test)]
mod tests {
    use turnstile_core::{CoreError, HolderView, LockInfo, WaitEdge, WaiterView};

    use super::super::testing::{bytes, encoded, error_of, parse_line};
    use super::super::{ReplyShape, render};
    use super::*;
    use crate::Protocol;

    fn acquire(name: &str, mode: Mode, ttl: u64) -> Acquire {
        Acquire { name: name.into(), mode, ttl, wait: 0, owner: None, session: None, keep: false }
    }

    fn write_of(line: &str) -> Command {
        match parse_line(line) {
            Ok(Action::Write { cmd, .. }) => cmd,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn lock_acquire_plain() {
        assert_eq!(
            parse_line("LOCK.ACQUIRE orders 5000"),
            Ok(Action::Write {
                cmd: Command::Acquire(acquire("orders", Mode::Exclusive, 5000)),
                shape: ReplyShape::Grant
            })
        );
    }

    #[test]
    fn lock_acquire_with_every_option_in_any_order() {
        let expected = Acquire {
            wait: 250,
            owner: Some("worker-1".into()),
            keep: true,
            ..acquire("orders", Mode::Shared, 5000)
        };
        assert_eq!(
            write_of("lock.acquire orders 5000 keep OWNER worker-1 shared WAIT 250"),
            Command::Acquire(expected)
        );
        // WAIT 0 is "don't wait", the same as no WAIT.
        assert_eq!(write_of("LOCK.ACQUIRE l 10 WAIT 0"), Command::Acquire(acquire("l", Mode::Exclusive, 10)));
        // A repeated option takes its last value.
        let Command::Acquire(a) = write_of("LOCK.ACQUIRE l 10 WAIT 5 WAIT 7") else { panic!() };
        assert_eq!(a.wait, 7);
    }

    #[test]
    fn lock_acquire_errors() {
        assert_eq!(error_of("LOCK.ACQUIRE l"), "ERR wrong number of arguments for 'lock.acquire' command");
        assert_eq!(error_of("LOCK.ACQUIRE l ten"), "ERR value is not an integer or out of range");
        assert_eq!(error_of("LOCK.ACQUIRE l -1"), "ERR value is out of range, must be positive");
        assert_eq!(error_of("LOCK.ACQUIRE l 10 WAIT"), "ERR syntax error");
        assert_eq!(error_of("LOCK.ACQUIRE l 10 WAIT x"), "ERR value is not an integer or out of range");
        assert_eq!(error_of("LOCK.ACQUIRE l 10 OWNER"), "ERR syntax error");
        assert_eq!(error_of("LOCK.ACQUIRE l 10 COUNT 2"), "ERR syntax error");
        assert_eq!(error_of("LOCK.ACQUIRE l 10 FOREVER"), "ERR syntax error");
    }

    #[test]
    fn lock_release_and_renew() {
        assert_eq!(
            parse_line("LOCK.RELEASE l 42"),
            Ok(Action::Write {
                cmd: Command::Release { name: "l".into(), token: 42 },
                shape: ReplyShape::Integer
            })
        );
        assert_eq!(
            parse_line("LOCK.RENEW l 42 3000"),
            Ok(Action::Write {
                cmd: Command::Renew { name: "l".into(), token: 42, ttl: 3000 },
                shape: ReplyShape::Integer
            })
        );
        assert_eq!(error_of("LOCK.RELEASE l"), "ERR wrong number of arguments for 'lock.release' command");
        assert_eq!(
            error_of("LOCK.RELEASE l 1 2"),
            "ERR wrong number of arguments for 'lock.release' command"
        );
        assert_eq!(error_of("LOCK.RELEASE l -3"), "ERR value is not an integer or out of range");
        assert_eq!(error_of("LOCK.RENEW l 1"), "ERR wrong number of arguments for 'lock.renew' command");
        assert_eq!(error_of("LOCK.RENEW l 1 soon"), "ERR value is not an integer or out of range");
    }

    #[test]
    fn lock_info_and_list_are_reads() {
        assert_eq!(
            parse_line("LOCK.INFO l"),
            Ok(Action::Read { query: Query::LockInfo { name: "l".into() }, shape: ReplyShape::LockInfo })
        );
        assert_eq!(
            parse_line("LOCK.LIST"),
            Ok(Action::Read { query: Query::ListLocks, shape: ReplyShape::Names })
        );
        assert_eq!(error_of("LOCK.INFO"), "ERR wrong number of arguments for 'lock.info' command");
        assert_eq!(error_of("LOCK.LIST x"), "ERR wrong number of arguments for 'lock.list' command");
    }

    #[test]
    fn sem_acquire_takes_permits_of_a_limit() {
        assert_eq!(
            write_of("SEM.ACQUIRE pool 10 2000"),
            Command::Acquire(acquire("pool", Mode::Permits { limit: 10, count: 1 }, 2000))
        );
        let expected = Acquire {
            wait: 100,
            owner: Some("w".into()),
            keep: true,
            ..acquire("pool", Mode::Permits { limit: 10, count: 3 }, 2000)
        };
        assert_eq!(
            write_of("SEM.ACQUIRE pool 10 2000 COUNT 3 WAIT 100 OWNER w KEEP"),
            Command::Acquire(expected)
        );
    }

    #[test]
    fn sem_acquire_errors() {
        assert_eq!(
            error_of("SEM.ACQUIRE pool 10"),
            "ERR wrong number of arguments for 'sem.acquire' command"
        );
        assert_eq!(error_of("SEM.ACQUIRE pool many 10"), "ERR value is not an integer or out of range");
        assert_eq!(error_of("SEM.ACQUIRE pool -1 10"), "ERR value is out of range, must be positive");
        assert_eq!(error_of("SEM.ACQUIRE pool 4294967296 10"), "ERR value is not an integer or out of range");
        assert_eq!(error_of("SEM.ACQUIRE pool 10 10 COUNT"), "ERR syntax error");
        assert_eq!(error_of("SEM.ACQUIRE pool 10 10 SHARED"), "ERR syntax error");
    }

    #[test]
    fn sem_release_and_renew_are_the_lock_commands() {
        assert_eq!(write_of("SEM.RELEASE pool 9"), Command::Release { name: "pool".into(), token: 9 });
        assert_eq!(
            write_of("SEM.RENEW pool 9 100"),
            Command::Renew { name: "pool".into(), token: 9, ttl: 100 }
        );
        assert_eq!(
            parse_line("SEM.INFO pool"),
            Ok(Action::Read { query: Query::LockInfo { name: "pool".into() }, shape: ReplyShape::LockInfo })
        );
        assert_eq!(error_of("SEM.RENEW pool 9"), "ERR wrong number of arguments for 'sem.renew' command");
        assert_eq!(error_of("SEM.INFO"), "ERR wrong number of arguments for 'sem.info' command");
    }

    #[test]
    fn fence_check() {
        assert_eq!(
            parse_line("FENCE.CHECK l 77"),
            Ok(Action::Read {
                query: Query::FenceCheck { lock: "l".into(), token: 77 },
                shape: ReplyShape::Integer
            })
        );
        assert_eq!(error_of("FENCE.CHECK l"), "ERR wrong number of arguments for 'fence.check' command");
        assert_eq!(error_of("FENCE.CHECK l x"), "ERR value is not an integer or out of range");
    }

    #[test]
    fn grant_renders_token_and_lease() {
        let frame = render(ReplyShape::Grant, Reply::Granted { token: 17, lease: 5000 }, Protocol::Resp2);
        assert_eq!(encoded(&frame, Protocol::Resp2), bytes(b"*2\r\n:17\r\n:5000\r\n"));
        assert_eq!(encoded(&frame, Protocol::Resp3), bytes(b"*2\r\n:17\r\n:5000\r\n"));
    }

    #[test]
    fn not_granted_renders_a_nil_array() {
        let frame = render(ReplyShape::Grant, Reply::Nil, Protocol::Resp2);
        assert_eq!(encoded(&frame, Protocol::Resp2), bytes(b"*-1\r\n"));
        assert_eq!(encoded(&frame, Protocol::Resp3), bytes(b"_\r\n"));
    }

    #[test]
    fn deadlock_renders_its_cycle() {
        let cycle = vec![WaitEdge { owner: "a".into(), name: "x".into(), blocked_by: "a".into() }];
        let frame = render(ReplyShape::Grant, Reply::Error(CoreError::Deadlock { cycle }), Protocol::Resp3);
        assert_eq!(
            encoded(&frame, Protocol::Resp3),
            bytes(b"-DEADLOCK waiting would deadlock: a waits for 'x' held by a\r\n")
        );
    }

    #[test]
    fn renew_lost_renders_lost() {
        let frame =
            render(ReplyShape::Integer, Reply::Error(CoreError::LostHold { token: 5 }), Protocol::Resp2);
        assert_eq!(encoded(&frame, Protocol::Resp2), bytes(b"-LOST hold 5 is no longer held\r\n"));
        let frame = render(ReplyShape::Integer, Reply::Int(3000), Protocol::Resp2);
        assert_eq!(encoded(&frame, Protocol::Resp2), bytes(b":3000\r\n"));
    }

    #[test]
    fn lock_info_renders_a_map() {
        let info = LockInfo {
            mode: "semaphore".into(),
            limit: 3,
            holders: vec![HolderView { owner: "a".into(), token: 7, permits: 2, expires_in: 900 }],
            waiters: vec![WaiterView {
                owner: "b".into(),
                wait_id: 12,
                mode: "semaphore".into(),
                permits: 2,
                deadline_in: 40,
            }],
        };
        let frame = render(ReplyShape::LockInfo, Reply::LockInfo(info), Protocol::Resp3);
        let body = b"$4\r\nmode\r\n$9\r\nsemaphore\r\n$5\r\nlimit\r\n:3\r\n\
            $7\r\nholders\r\n*1\r\n*4\r\n$1\r\na\r\n:7\r\n:900\r\n:2\r\n\
            $7\r\nwaiters\r\n*1\r\n*4\r\n$1\r\nb\r\n$9\r\nsemaphore\r\n:2\r\n:40\r\n";
        assert_eq!(encoded(&frame, Protocol::Resp3), bytes(&[&b"%4\r\n"[..], body].concat()));
        assert_eq!(encoded(&frame, Protocol::Resp2), bytes(&[&b"*8\r\n"[..], body].concat()));
    }

    #[test]
    fn free_lock_info_has_empty_lists() {
        let info = LockInfo { mode: "free".into(), limit: 1, holders: vec![], waiters: vec![] };
        let frame = render(ReplyShape::LockInfo, Reply::LockInfo(info), Protocol::Resp2);
        assert_eq!(
            encoded(&frame, Protocol::Resp2),
            bytes(b"*8\r\n$4\r\nmode\r\n$4\r\nfree\r\n$5\r\nlimit\r\n:1\r\n$7\r\nholders\r\n*0\r\n$7\r\nwaiters\r\n*0\r\n")
        );
    }
}
