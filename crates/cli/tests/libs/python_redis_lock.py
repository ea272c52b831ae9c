"""python-redis-lock (`redis_lock.Lock`), unchanged, against the server on 127.0.0.1:PORT.

The library takes its lock with `SET NX EX`, and a waiter sleeps in `BLPOP` on a signal list that
the release script (run by `EVALSHA`) pushes to; renewals and `reset` are scripts too. Checked:
two processes contending for one lock never overlap (each appends to a shared file inside the
critical section, and a read-modify-write counter ends exact), `auto_renewal` keeps a lock past
its `expire`, `release`, and `reset` freeing a lock someone else holds and waking its waiter.

usage: python_redis_lock.py PORT WORKDIR
"""

import multiprocessing
import os
import sys
import threading
import time

import redis_lock

from checks import check, client, done, port, raises, until

CONTENDED = "libs-contended"
COUNTER = "libs:redis-lock:counter"


def contend(port, journal, times):
    """`times` critical sections under the contended lock, each writing its entry and exit to
    the journal and doing a slow read-modify-write of the counter."""
    con = client(port)
    me = os.getpid()
    for i in range(times):
        with redis_lock.Lock(con, CONTENDED, expire=30):
            with open(journal, "a") as f:
                f.write(f"enter {me} {i}\n")
            value = int(con.get(COUNTER) or 0)
            time.sleep(0.005)
            con.set(COUNTER, value + 1)
            with open(journal, "a") as f:
                f.write(f"leave {me} {i}\n")


def two_processes(port, workdir):
    """Two processes take turns; the journal shows every critical section whole."""
    r = client(port)
    r.delete(COUNTER, "lock:" + CONTENDED, "lock-signal:" + CONTENDED)
    journal = os.path.join(workdir, "journal")
    open(journal, "w").close()
    times = 20
    processes = [multiprocessing.Process(target=contend, args=(port, journal, times)) for _ in range(2)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(120)
    check(all(p.exitcode == 0 for p in processes), f"both processes ended well: {[p.exitcode for p in processes]}")
    lines = [line.split() for line in open(journal).read().splitlines()]
    check(len(lines) == 2 * 2 * times, f"the journal has an entry and an exit for each of the {2 * times} sections")
    pairs = [(lines[i], lines[i + 1]) for i in range(0, len(lines), 2)]
    whole = all(a[0] == "enter" and b[0] == "leave" and a[1:] == b[1:] for a, b in pairs)
    check(whole, "no process entered while the other was inside: every entry is followed by its own exit")
    holders = {a[1] for a, _ in pairs}
    check(len(holders) == 2, "both processes held the lock")
    count = int(r.get(COUNTER) or 0)
    check(count == 2 * times, f"counter {count} = 2 x {times}")
    check(r.exists("lock:" + CONTENDED) == 0, "the last holder released the lock")


def auto_renewal(port):
    """A lock with a 1 s expire outlives it while its renewal thread runs; without renewal it
    expires."""
    r = client(port)
    plain = redis_lock.Lock(r, "libs-expiring", expire=1)
    check(plain.acquire(blocking=False), "a lock with expire=1 and no renewal is acquired")
    check(0 < r.pttl("lock:libs-expiring") <= 1000, "its key expires within 1 s")
    until("the lock without renewal expired", lambda: not plain.locked())
    raises(redis_lock.NotAcquired, plain.release, "releasing the expired lock is refused")

    renewed = redis_lock.Lock(r, "libs-renewed", expire=1, auto_renewal=True)
    check(renewed.acquire(blocking=False), "a lock with expire=1 and auto_renewal is acquired")
    # Three times its expire: only renewals (each an extend script) can keep it.
    time.sleep(3)
    check(renewed.get_owner_id() == renewed.id, "3 s later the renewed lock is still its owner's")
    check(0 < r.pttl("lock:libs-renewed") <= 1000, "and its key still expires within 1 s of the last renewal")
    renewed.release()
    check(not renewed.locked(), "release stopped the renewals and freed the lock")
    time.sleep(1.5)
    check(not renewed.locked(), "no renewal took the lock back after its release")


def release_and_reset(port):
    """release frees the lock and refuses a second time; reset frees a lock held by another
    and wakes whoever waits for it."""
    r = client(port)
    name = "libs-reset"
    r.delete("lock:" + name, "lock-signal:" + name)
    holder = redis_lock.Lock(r, name, expire=30)
    check(holder.acquire(), "a blocking acquire of a free lock")
    check(holder.locked() and holder.get_owner_id() == holder.id, "the key holds the holder's id")
    check(not redis_lock.Lock(r, name, expire=30).acquire(blocking=False), "a second Lock cannot acquire it")
    raises(redis_lock.NotAcquired, redis_lock.Lock(r, name, expire=30).release, "a Lock that does not hold it cannot release it")
    holder.release()
    check(not holder.locked(), "release freed the lock")
    raises(redis_lock.NotAcquired, holder.release, "releasing again is refused")

    check(holder.acquire(), "the holder takes it again")
    # The waiter's acquire may wait 20 s in BLPOP; only the signal that reset pushes gets it the
    # lock within the 10 s the check below waits.
    waiter = redis_lock.Lock(client(port), name, expire=30)
    outcome, leave = {}, threading.Event()

    def wait_then_hold():
        outcome["acquired"] = waiter.acquire(timeout=20)
        leave.wait(30)
        if outcome["acquired"]:
            waiter.release()

    thread = threading.Thread(target=wait_then_hold)
    thread.start()
    until("the waiter is blocked on the signal list", lambda: blocked_clients(r) >= 1)
    redis_lock.Lock(r, name, expire=30).reset()
    until("reset by another Lock woke the waiter, which took the lock", lambda: holder.get_owner_id() == waiter.id)
    raises(redis_lock.NotAcquired, holder.release, "the reset holder can no longer release")
    leave.set()
    thread.join(30)
    check(outcome.get("acquired") is True, "the waiter's acquire returned True")
    check(not holder.locked(), "the waiter released in turn: the lock is free")


def blocked_clients(r):
    """Clients blocked in BLPOP (or another blocking command), from `INFO clients`."""
    return int(r.info("clients").get("blocked_clients", 0))


if __name__ == "__main__":
    PORT = port()
    if len(sys.argv) < 3:
        sys.exit(f"usage: {sys.argv[0]} PORT WORKDIR")
    two_processes(PORT, sys.argv[2])
    auto_renewal(PORT)
    release_and_reset(PORT)
    done()
