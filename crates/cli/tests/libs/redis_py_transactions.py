"""redis-py's transactions, unchanged, against the server on 127.0.0.1:PORT: `pipeline(transaction=True)`
(`MULTI` ... `EXEC` in one round trip) and `WATCH` retry loops.

Checked: a transaction's replies; its writes seen all or none by a concurrent reader; 8 processes
each incrementing one counter N times in a `WATCH` retry loop (`r.transaction(fn, key)`) end at
exactly 8 x N; a watched key changed by another client makes `EXEC` fail with `WatchError`; an
error at queue time aborts the whole transaction (EXECABORT, surfacing as redis-py's exception)
and applies none of it; an error at run time inside `EXEC` does not stop the other commands.

usage: redis_py_transactions.py PORT
"""

import multiprocessing

from redis.exceptions import ExecAbortError, ResponseError, WatchError

from checks import check, client, done, port, raises

WRITERS, ROUNDS = 8, 25


def replies(port):
    r = client(port)
    r.delete("libs:tx:a", "libs:tx:n")
    pipe = r.pipeline(transaction=True)
    result = pipe.set("libs:tx:a", "1").incr("libs:tx:n").incrby("libs:tx:n", 41).get("libs:tx:a").execute()
    check(result == [True, 1, 42, b"1"], f"a transaction returns each command's reply: {result}")
    check(r.get("libs:tx:n") == b"42", "and its writes are applied")


def pair_writer(port, rounds):
    """Increments both keys of the pair in one transaction, `rounds` times."""
    r = client(port)
    for _ in range(rounds):
        r.pipeline(transaction=True).incr("libs:tx:x").incr("libs:tx:y").execute()


def all_or_nothing(port):
    """Writers move two keys together in transactions; a reader reading both in a transaction
    never sees one moved without the other."""
    r = client(port)
    r.delete("libs:tx:x", "libs:tx:y")
    writers = [multiprocessing.Process(target=pair_writer, args=(port, ROUNDS)) for _ in range(4)]
    for w in writers:
        w.start()
    torn, reads = [], 0
    while any(w.is_alive() for w in writers) or reads == 0:
        x, y = r.pipeline(transaction=True).get("libs:tx:x").get("libs:tx:y").execute()
        reads += 1
        if x != y:
            torn.append((x, y))
    for w in writers:
        w.join(120)
    check(all(w.exitcode == 0 for w in writers), f"every writer ended well: {[w.exitcode for w in writers]}")
    check(not torn, f"{reads} transactional reads never saw one key written without the other (torn: {torn[:5]})")
    final = [r.get("libs:tx:x"), r.get("libs:tx:y")]
    expected = str(4 * ROUNDS).encode()
    check(final == [expected, expected], f"both keys ended at 4 x {ROUNDS}: {final}")


def counter_worker(port, rounds, retries):
    """Increments the counter `rounds` times by read, then write under WATCH, retrying on
    WatchError (which `r.transaction` does)."""
    r = client(port)
    tries = 0

    def increment(pipe):
        nonlocal tries
        tries += 1
        value = int(pipe.get("libs:tx:counter") or 0)
        pipe.multi()
        pipe.set("libs:tx:counter", value + 1)

    for _ in range(rounds):
        r.transaction(increment, "libs:tx:counter")
    with retries.get_lock():
        retries.value += tries - rounds


def watch_retry_loop(port):
    r = client(port)
    r.delete("libs:tx:counter")
    retries = multiprocessing.Value("i", 0)
    workers = [multiprocessing.Process(target=counter_worker, args=(port, ROUNDS, retries)) for _ in range(WRITERS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(300)
    check(all(w.exitcode == 0 for w in workers), f"all {WRITERS} processes ended well: {[w.exitcode for w in workers]}")
    count = int(r.get("libs:tx:counter") or 0)
    check(
        count == WRITERS * ROUNDS,
        f"counter {count} = {WRITERS} x {ROUNDS} after WATCH retry loops ({retries.value} retries on WatchError)",
    )


def watch_sees_a_change(port):
    """WATCH, another client writes the key, EXEC: nothing of the transaction is applied."""
    r, other = client(port), client(port)
    r.set("libs:tx:watched", "before")
    with r.pipeline(transaction=True) as pipe:
        pipe.watch("libs:tx:watched")
        check(pipe.get("libs:tx:watched") == b"before", "after WATCH, reads are immediate")
        other.set("libs:tx:watched", "changed")
        pipe.multi()
        pipe.set("libs:tx:watched", "mine").set("libs:tx:watch-side", "applied")
        raises(WatchError, pipe.execute, "EXEC after another client changed a watched key fails")
    check(r.get("libs:tx:watched") == b"changed" and r.exists("libs:tx:watch-side") == 0, "none of it was applied")
    with r.pipeline(transaction=True) as pipe:
        pipe.watch("libs:tx:watched")
        pipe.multi()
        pipe.set("libs:tx:watched", "mine")
        check(pipe.execute() == [True], "with nobody writing in between, EXEC applies")
    check(r.get("libs:tx:watched") == b"mine", "the watched key holds the transaction's value")
    with r.pipeline(transaction=True) as pipe:
        pipe.watch("libs:tx:watched")
        pipe.unwatch()
        other.set("libs:tx:watched", "changed again")
        pipe.multi()
        pipe.set("libs:tx:watched", "after unwatch")
        check(pipe.execute() == [True], "after UNWATCH a change no longer aborts EXEC")


def queue_time_error(port):
    """A command refused while queued aborts the transaction: nothing of it is applied."""
    r = client(port)
    r.delete("libs:tx:aborted")
    pipe = r.pipeline(transaction=True)
    pipe.set("libs:tx:aborted", "applied").execute_command("SET", "libs:tx:aborted").incr("libs:tx:aborted")
    error = raises(ResponseError, pipe.execute, "a transaction with a wrong-arity command raises")
    check("wrong number of arguments" in str(error), f"redis-py names the refused command: {error}")
    check(r.exists("libs:tx:aborted") == 0, "none of the aborted transaction's commands were applied")

    pipe = r.pipeline(transaction=True)
    pipe.set("libs:tx:aborted", "applied").execute_command("NO-SUCH-COMMAND", "x")
    error = raises(ResponseError, pipe.execute, "a transaction with an unknown command raises")
    check("unknown command" in str(error), f"the error names the unknown command: {error}")
    check(r.exists("libs:tx:aborted") == 0, "nothing of it was applied")

    # The same by hand on one connection, reading the raw replies: the queue-time error, then
    # EXEC's EXECABORT.
    con = client(port, single_connection_client=True).connection

    def send(*args):
        con.send_command(*args)
        return con.read_response()

    check(send("MULTI") == b"OK", "MULTI is accepted")
    check(send("SET", "libs:tx:aborted", "applied") == b"QUEUED", "a good command is QUEUED")
    raises(ResponseError, lambda: send("SET", "libs:tx:aborted"), "a wrong-arity command is refused at once")
    error = raises(ExecAbortError, lambda: send("EXEC"), "EXEC then fails as ExecAbortError")
    check(str(error) == "Transaction discarded because of previous errors.", f"with Redis's text: {error}")
    check(r.get("libs:tx:aborted") is None, "the good command was not applied either")
    con.disconnect()


def run_time_error(port):
    """A command that fails when EXEC runs it fails alone: the ones around it are applied."""
    r = client(port)
    r.delete("libs:tx:text", "libs:tx:after")
    pipe = r.pipeline(transaction=True)
    pipe.set("libs:tx:text", "not a number").incr("libs:tx:text").set("libs:tx:after", "applied")
    result = pipe.execute(raise_on_error=False)
    check(result[0] is True and result[2] is True, f"the commands around the failing one succeeded: {result}")
    check(isinstance(result[1], ResponseError), f"the failing one's reply is its error: {result[1]}")
    check("not an integer" in str(result[1]), "with Redis's text")
    check(r.get("libs:tx:after") == b"applied", "the command after the failing one was applied")

    r.delete("libs:tx:after")
    pipe = r.pipeline(transaction=True)
    pipe.incr("libs:tx:text").set("libs:tx:after", "applied")
    raises(ResponseError, pipe.execute, "by default redis-py raises the run-time error after EXEC")
    check(r.get("libs:tx:after") == b"applied", "but the server applied the rest")


if __name__ == "__main__":
    PORT = port()
    replies(PORT)
    all_or_nothing(PORT)
    watch_retry_loop(PORT)
    watch_sees_a_change(PORT)
    queue_time_error(PORT)
    run_time_error(PORT)
    done()
