"""redis-py's `Lock` (`r.lock(...)`), unchanged, against the server on 127.0.0.1:PORT.

It takes the lock with `SET NX PX` and releases, extends and reacquires it with Lua scripts run by
`EVALSHA` (loaded with `SCRIPT LOAD` when the server answers NOSCRIPT). Checked: acquire, a
blocking acquire that gives up while another holds the lock, `extend`, `reacquire`, a release by
a non-owner refused, a release after expiry refused, and threads and processes excluding each
other.

usage: redis_py_lock.py PORT
"""

import multiprocessing
import threading
import time

from redis.exceptions import LockError, LockNotOwnedError

from checks import check, client, done, port, raises, until

COUNTER = "libs:redis-py:lock:counter"
SHARED = "libs:redis-py:lock:shared"


def critical_sections(port, times, inside=None, overlaps=None):
    """`times` critical sections under the lock, each a slow read-modify-write of COUNTER."""
    con = client(port)
    for _ in range(times):
        with con.lock(SHARED, timeout=30, sleep=0.01, blocking_timeout=60):
            if inside is not None:
                with inside["guard"]:
                    inside["now"] += 1
                    if inside["now"] > 1:
                        overlaps.append(inside["now"])
            value = int(con.get(COUNTER) or 0)
            time.sleep(0.002)
            con.set(COUNTER, value + 1)
            if inside is not None:
                with inside["guard"]:
                    inside["now"] -= 1


def in_process(port, times):
    critical_sections(port, times)


def one_lock(port):
    """One lock, its owner and another client."""
    r = client(port)
    NAME = "libs:redis-py:lock"
    r.delete(NAME)

    # Acquire: the key holds the lock's token, with the timeout as its TTL.
    owner = r.lock(NAME, timeout=10)
    check(owner.acquire(blocking=False), "a free lock is acquired")
    check(owner.owned() and owner.locked(), "the lock is owned by its acquirer and seen as locked")
    token = r.get(NAME)
    check(token == owner.local.token, f"the key holds the owner's token {token!r}")
    check(0 < r.pttl(NAME) <= 10_000, "the key expires within the lock's timeout")

    # Another client's acquire gives up, blocking or not, while the lock is held.
    other = r.lock(NAME, timeout=10, sleep=0.05)
    check(not other.acquire(blocking=False), "a non-blocking acquire of a held lock fails")
    check(
        not other.acquire(blocking=True, blocking_timeout=0.3),
        "a blocking acquire of a held lock gives up after its blocking_timeout",
    )
    check(r.lock(NAME, blocking_timeout=0.2, sleep=0.05).acquire() is False, "so does one with blocking_timeout set at creation")
    check(not other.owned() and r.get(NAME) == token, "the failed acquires left the owner's token")

    # extend adds to the TTL (or replaces it); reacquire sets it back to the timeout.
    check(owner.extend(5), "extend(5) by the owner")
    check(r.pttl(NAME) > 10_000, f"extend added to the TTL: {r.pttl(NAME)} ms left")
    check(owner.extend(2, replace_ttl=True), "extend(2, replace_ttl=True) by the owner")
    check(0 < r.pttl(NAME) <= 2_000, f"the TTL was replaced: {r.pttl(NAME)} ms left")
    check(owner.reacquire(), "reacquire by the owner")
    check(2_000 < r.pttl(NAME) <= 10_000, f"reacquire set the TTL back to the timeout: {r.pttl(NAME)} ms left")

    # A non-owner cannot release, extend or reacquire: the server's script compares tokens.
    raises(LockError, other.release, "a release by a client holding no token is refused")
    # A client that believes it holds the lock with a stale token (its own hold expired and the
    # lock was taken since) is refused by the scripts themselves.
    other.local.token = b"a-stale-token"
    raises(LockNotOwnedError, lambda: other.extend(5), "the extend script refuses another token")
    raises(LockNotOwnedError, other.reacquire, "the reacquire script refuses another token")
    raises(LockNotOwnedError, other.release, "the release script refuses another token")
    check(r.get(NAME) == token and owner.owned(), "the owner still holds the lock")

    # The owner releases: the key is gone, and a second release is refused.
    owner.release()
    check(r.get(NAME) is None and not owner.locked(), "the owner's release deleted the key")
    raises(LockError, owner.release, "releasing again is refused")
    check(other.acquire(blocking=False), "the released lock is acquired by the other client")
    other.release()

    # A lock whose timeout passed is gone: its holder can no longer release or extend it.
    short = r.lock(NAME, timeout=0.3)
    check(short.acquire(blocking=False), "a lock with a 300 ms timeout is acquired")
    until("the lock's key expired", lambda: r.exists(NAME) == 0)
    raises(LockNotOwnedError, lambda: short.extend(1), "extending an expired lock is refused")
    raises(LockNotOwnedError, short.release, "releasing an expired lock is refused")


def shared_lock(port):
    """The same lock name across threads and processes: a read-modify-write of a counter inside
    the critical section ends exact only if no two holders overlap."""
    r = client(port)
    THREADS, PROCESSES, TIMES = 4, 4, 15
    r.delete(COUNTER, SHARED)
    inside, overlaps = {"guard": threading.Lock(), "now": 0}, []
    threads = [threading.Thread(target=critical_sections, args=(port, TIMES, inside, overlaps)) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(not overlaps, f"no two threads were inside the lock at once (overlaps seen: {overlaps})")
    count = int(r.get(COUNTER) or 0)
    check(count == THREADS * TIMES, f"threads: counter {count} = {THREADS} x {TIMES}")

    r.delete(COUNTER)
    processes = [multiprocessing.Process(target=in_process, args=(port, TIMES)) for _ in range(PROCESSES)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(120)
    check(all(p.exitcode == 0 for p in processes), f"every process ended well: {[p.exitcode for p in processes]}")
    count = int(r.get(COUNTER) or 0)
    check(count == PROCESSES * TIMES, f"processes: counter {count} = {PROCESSES} x {TIMES}")
    check(r.exists(SHARED) == 0, "the last holder released the shared lock")

    r.delete(COUNTER)


if __name__ == "__main__":
    PORT = port()
    one_lock(PORT)
    shared_lock(PORT)
    done()
