// ioredis, unchanged, against the server on 127.0.0.1:PORT: Lua scripts defined with
// `defineCommand` (a compare-and-delete lock release and a compare-and-extend, as the Redlock-style
// libraries send them) and `multi()...exec()`.
//
// ioredis sends a defined command as EVAL the first time on a connection and as EVALSHA after;
// when the server answers NOSCRIPT (its script cache was flushed) it sends EVAL again. Each
// check prints `ok: ...`; the first that fails prints `FAILED: ...` and exits 1.
//
// usage: node ioredis_scripts.js PORT

"use strict";

const Redis = require("ioredis");

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  console.error("usage: node ioredis_scripts.js PORT");
  process.exit(2);
}

let passed = 0;
function check(fact, what) {
  if (!fact) {
    console.log(`FAILED: ${what}`);
    process.exit(1);
  }
  passed += 1;
  console.log(`ok: ${what}`);
}

async function rejects(promise, what) {
  try {
    const value = await promise;
    check(false, `${what}: resolved to ${JSON.stringify(value)} instead of failing`);
  } catch (err) {
    check(true, `${what} (${err.message})`);
    return err;
  }
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

const RELEASE = `
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
else
  return 0
end`;

const EXTEND = `
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
else
  return 0
end`;

// What a script's Lua values become in the reply: strings, integers (a number is truncated),
// nested tables, a status reply, nil for false.
const SHAPES = `
return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 0.5, redis.call('exists', KEYS[1]),
        {1, 'two'}, redis.status_reply('FINE'), false, 'after a false'}`;

/** A client of the server with the lock scripts defined; it gives up at once when the server is gone. */
function connect() {
  const redis = new Redis({ host: "127.0.0.1", port, maxRetriesPerRequest: 1, retryStrategy: () => null });
  redis.defineCommand("releaseLock", { numberOfKeys: 1, lua: RELEASE });
  redis.defineCommand("extendLock", { numberOfKeys: 1, lua: EXTEND });
  return redis;
}

async function main() {
  const redis = connect();
  // Which command each call of a defined script went out as: ioredis names it as it writes it.
  const sent = [];
  const send = redis.sendCommand.bind(redis);
  redis.sendCommand = (command, stream) => {
    if (command.constructor.name === "CustomScriptCommand") {
      sent.push(command);
    }
    return send(command, stream);
  };
  const sentAs = () => sent.splice(0).map((command) => command.name);

  redis.defineCommand("shapes", { numberOfKeys: 1, lua: SHAPES });

  const lock = "libs:ioredis:lock";
  await redis.del(lock);
  check((await redis.set(lock, "token-1", "PX", 10000, "NX")) === "OK", "SET NX PX takes the lock");
  check((await redis.set(lock, "token-2", "PX", 10000, "NX")) === null, "a second SET NX PX finds it taken");

  // The lock helpers refuse another token, then work with the owner's.
  check((await redis.releaseLock(lock, "token-2")) === 0, "releaseLock with another token returns 0");
  check(same(sentAs(), ["eval"]), "the first call of a script on a connection went out as EVAL");
  check((await redis.get(lock)) === "token-1", "and left the owner's lock");
  check((await redis.extendLock(lock, "token-2", 60000)) === 0, "extendLock with another token returns 0");
  check((await redis.pttl(lock)) <= 10000, "and left its TTL");
  check((await redis.extendLock(lock, "token-1", 60000)) === 1, "extendLock with the owner's token returns 1");
  check((await redis.pttl(lock)) > 10000, "and set the new TTL");
  check(same(sentAs(), ["eval", "evalsha"]), "the second call of the extend script went out as EVALSHA");

  // A flushed script cache: EVALSHA is answered NOSCRIPT, and ioredis falls back to EVAL.
  const sha = redis.scriptsSet.releaseLock.sha;
  check(same(await redis.script("EXISTS", sha), [1]), "EVAL left the release script in the server's cache");
  check((await redis.releaseLock(lock, "token-2")) === 0, "a call with the script cached");
  check(same(sentAs(), ["evalsha"]), "went out as EVALSHA");
  check((await redis.script("FLUSH")) === "OK", "SCRIPT FLUSH");
  check(same(await redis.script("EXISTS", sha), [0]), "emptied the server's script cache");
  const noscript = await rejects(redis.evalsha(sha, 1, lock, "token-1"), "a bare EVALSHA of it now fails");
  check(noscript.message.startsWith("NOSCRIPT"), "with NOSCRIPT");
  check((await redis.releaseLock(lock, "token-1")) === 1, "releaseLock with the owner's token returns 1");
  const fallback = sentAs();
  check(same(fallback, ["evalsha", "eval"]), `it went out as EVALSHA, was answered NOSCRIPT and was sent again as EVAL: ${fallback}`);
  check((await redis.exists(lock)) === 0, "the lock is released");
  check(same(await redis.script("EXISTS", sha), [1]), "and the script is cached again");
  check((await redis.releaseLock(lock, "token-1")) === 0, "releasing again returns 0");

  // Replies of other shapes, and an error raised by redis.call.
  const shapes = await redis.shapes("libs:ioredis:absent", "one", "2");
  check(same(shapes, ["libs:ioredis:absent", "one", 2, 0, [1, "two"], "FINE", null, "after a false"]),
    `a script's table reply converts as Redis converts it: ${JSON.stringify(shapes)}`);
  await redis.set("libs:ioredis:text", "not a number");
  const failing = await rejects(redis.eval("return redis.call('incr', KEYS[1])", 1, "libs:ioredis:text"),
    "a script whose redis.call fails rejects");
  check(failing.message.includes("not an integer"), "with the command's error");

  // multi()...exec(): every reply, in order, as [error, result] pairs.
  await redis.del("libs:ioredis:k", "libs:ioredis:n");
  const results = await redis.multi().set("libs:ioredis:k", "v").incr("libs:ioredis:n").incrby("libs:ioredis:n", 9)
    .get("libs:ioredis:k").exec();
  check(same(results, [[null, "OK"], [null, 1], [null, 10], [null, "v"]]), `multi().exec() results: ${JSON.stringify(results)}`);

  // Defined scripts inside a transaction, on a new connection (the cache was flushed since this
  // one last sent the extend script as EVAL, and ioredis would send EVALSHA for it).
  const fresh = connect();
  await fresh.set(lock, "token-3");
  const scripted = await fresh.multi().extendLock(lock, "token-3", 5000).releaseLock(lock, "token-3").exec();
  check(same(scripted, [[null, 1], [null, 1]]), `scripts inside multi(): ${JSON.stringify(scripted)}`);
  check((await fresh.exists(lock)) === 0, "the transaction released the lock");
  fresh.disconnect();

  // A command failing when EXEC runs it fails alone.
  const partly = await redis.multi().incr("libs:ioredis:text").set("libs:ioredis:k", "after").exec();
  check(partly[0][0] instanceof Error && partly[0][0].message.includes("not an integer"),
    "a run-time error inside EXEC is that command's result");
  check(same(partly[1], [null, "OK"]), "the next command still ran");
  check((await redis.get("libs:ioredis:k")) === "after", "and its write was applied");

  // A command refused while queued aborts the whole transaction.
  await redis.del("libs:ioredis:aborted");
  const aborted = await rejects(
    redis.multi().set("libs:ioredis:aborted", "applied").call("SET", "libs:ioredis:aborted").exec(),
    "a transaction with a wrong-arity command rejects");
  check(aborted.message.startsWith("EXECABORT"), "with EXECABORT");
  check(Array.isArray(aborted.previousErrors) && aborted.previousErrors.length === 1
    && aborted.previousErrors[0].message.includes("wrong number of arguments"),
    "carrying the queue-time error");
  check((await redis.exists("libs:ioredis:aborted")) === 0, "nothing of the aborted transaction was applied");

  await redis.del("libs:ioredis:k", "libs:ioredis:n", "libs:ioredis:text");
  redis.disconnect();
  console.log(`passed: ${passed} checks`);
}

main().catch((err) => {
  console.log(`FAILED: ${err.stack || err}`);
  process.exit(1);
});
