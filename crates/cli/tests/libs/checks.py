"""What the Python library scripts share: reading the port, checking a fact, waiting for one.

Each script prints one `ok: ...` line per fact it saw hold and ends with `passed: N checks`; the
first fact that does not hold prints `FAILED: ...` and exits 1, so the Rust test that runs the
script (crates/cli/tests/libraries.rs) shows what the library observed, whatever the server is.
"""

import sys
import time

import redis

_passed = 0


def port():
    """The server's port, the script's first argument."""
    if len(sys.argv) < 2 or not sys.argv[1].isdigit():
        sys.exit(f"usage: {sys.argv[0]} PORT")
    return int(sys.argv[1])


def client(port, **options):
    """A redis-py client of the server on 127.0.0.1:port, with timeouts so that a server that
    stops answering fails the script instead of hanging it."""
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=20, socket_connect_timeout=5, **options)


def check(fact, what):
    """Prints `ok: what` if `fact` holds; otherwise `FAILED: what` and exits 1."""
    global _passed
    if not fact:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    _passed += 1
    print(f"ok: {what}", flush=True)


def raises(error, call, what):
    """Checks that `call()` raises `error` (or a subclass) and returns the exception."""
    try:
        result = call()
    except error as e:
        check(True, f"{what} ({type(e).__name__}: {e})")
        return e
    check(False, f"{what}: returned {result!r} instead of raising {error.__name__}")


def until(what, predicate, limit=10.0):
    """Polls `predicate` until it holds, for at most `limit` seconds: the script waits for a
    fact the server shows (a key expired), never for a length of time it hopes is enough."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            check(False, f"timed out waiting until {what}")
        time.sleep(0.02)
    check(True, what)


def done():
    print(f"passed: {_passed} checks", flush=True)
