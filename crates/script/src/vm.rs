//! One sandboxed Lua 5.1 VM per thread, and how a script runs in it.
//!
//! The sandbox, made once per VM:
//! - only the base, `table`, `string` and `math` libraries, less whatever reaches outside or
//!   depends on the process (`dofile`, `loadfile`, `require`, `module`, `print`,
//!   `collectgarbage`, `gcinfo`, `getfenv`, `setfenv`, `newproxy`, `coroutine`);
//! - `math.random` and `math.randomseed` replaced by a generator that restarts from the same
//!   seed in every script, as Redis's does;
//! - the globals, and every library table, are read-only proxies: assigning to one is
//!   `Attempt to modify a readonly table`, reading a global that does not exist is
//!   `Script attempted to access nonexistent global variable`, as in Redis 7; `rawset` refuses
//!   them, and their metatables (the string metatable's too) are hidden;
//! - `tostring` of a table or function is its type alone: an address would differ between nodes.
//!
//! The budget: a count hook fires every [`STEP`] instructions and adds them to the script's
//! count; past its budget the hook raises an error, and keeps raising it at every later step
//! even if the script catches it with `pcall`, so the script ends; the run is then reported
//! over budget whatever it returned. Instruction counts depend only on the code and its
//! inputs, so every node reaches the same verdict.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;
use mlua::{Function, HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Table, Value, VmState};
use turnstile_core::{Reply, ScriptCtx, ScriptOutcome};
use turnstile_resp::cmd::{self, Action, ReplyShape};
use turnstile_resp::{Frame, Protocol};

use crate::convert::{frame_to_lua, json_decode, json_encode, lua_to_reply, single};

/// Instructions between two looks at the budget: the budget is kept to within this many.
const STEP: u32 = 1000;
/// Compiled scripts kept per VM before the cache starts over (they are compiled again on use).
const MAX_FUNCTIONS: usize = 1000;
/// The name scripts are compiled under: errors read `user_script:LINE: ...`, as in Redis.
const CHUNK: &str = "@user_script";

thread_local! {
    static VM: RefCell<Option<Vm>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's VM, made on first use.
pub(crate) fn with_vm<R>(f: impl FnOnce(&mut Vm) -> R) -> R {
    VM.with(|cell| {
        let mut slot = cell.borrow_mut();
        let vm = slot.get_or_insert_with(|| Vm::new().expect("the Lua sandbox is built from fixed code"));
        f(vm)
    })
}

/// What the hook and the callbacks share with the run that started them.
#[derive(Debug, Default)]
struct Meter {
    used: Cell<u64>,
    budget: Cell<u64>,
    over: Cell<bool>,
    /// The script line where the last error was raised, for the `on @user_script:N.` suffix.
    error_line: Cell<Option<usize>>,
    /// `math.random`'s state (48 bits, as `rand48`'s).
    seed: Cell<u64>,
}

pub(crate) struct Vm {
    lua: Lua,
    /// The table behind the read-only globals: where `KEYS` and `ARGV` are put.
    globals: Table,
    /// The table behind the read-only `redis`: each run puts its `call` and `pcall` there.
    redis: Table,
    xpcall: Function,
    handler: Function,
    functions: HashMap<String, Function>,
    meter: Rc<Meter>,
}

impl Vm {
    fn new() -> mlua::Result<Vm> {
        let lua = Lua::new_with(StdLib::TABLE | StdLib::STRING | StdLib::MATH, LuaOptions::default())?;
        let globals = lua.globals();
        for name in [
            "dofile",
            "loadfile",
            "require",
            "module",
            "print",
            "collectgarbage",
            "gcinfo",
            "getfenv",
            "setfenv",
            "newproxy",
            "coroutine",
            "package",
        ] {
            globals.raw_set(name, Value::Nil)?;
        }
        let meter = Rc::new(Meter::default());
        install_random(&lua, &globals, &meter)?;
        install_redis(&lua, &globals)?;
        let redis: Table = globals.raw_get("redis")?;
        let env: Table = lua.load(SANDBOX).set_name("=sandbox").call(globals.clone())?;
        lua.set_globals(env)?;
        let xpcall: Function = globals.raw_get("xpcall")?;
        let handler = {
            let meter = meter.clone();
            lua.create_function(move |lua, err: Value| {
                meter.error_line.set(user_line(lua));
                Ok(err)
            })?
        };
        Ok(Vm { lua, globals, redis, xpcall, handler, functions: HashMap::new(), meter })
    }

    /// The compiled script, from the cache or compiled now; `Err` is Redis's compile error text.
    pub(crate) fn compile(&mut self, sha: &str, source: &[u8]) -> Result<Function, String> {
        if let Some(f) = self.functions.get(sha) {
            return Ok(f.clone());
        }
        let f = self.lua.load(source).set_name(CHUNK).into_function().map_err(|e| {
            let message = match &e {
                mlua::Error::SyntaxError { message, .. } => message.clone(),
                other => other.to_string(),
            };
            format!("ERR Error compiling script (new function): {message}")
        })?;
        if self.functions.len() >= MAX_FUNCTIONS {
            self.functions.clear();
        }
        self.functions.insert(sha.to_owned(), f.clone());
        Ok(f)
    }

    pub(crate) fn run(
        &mut self,
        ctx: &mut ScriptCtx<'_>,
        sha: &str,
        source: &[u8],
        keys: &[Bytes],
        args: &[Bytes],
    ) -> ScriptOutcome {
        let f = match self.compile(sha, source) {
            Ok(f) => f,
            Err(text) => return ScriptOutcome::Invalid(text),
        };
        let meter = self.meter.clone();
        meter.used.set(0);
        meter.budget.set(ctx.budget());
        meter.over.set(false);
        meter.error_line.set(None);
        meter.seed.set(SEED);
        // Set anew for every script: setting the hook restarts its count, which would otherwise
        // carry what the previous script on this VM left, and this VM's history is its own.
        if let Err(e) = self.set_hook() {
            return ScriptOutcome::Done(script_error(format!("ERR {e} script: {sha}")));
        }
        let result = self.call(ctx, f, keys, args);
        // Drop what the script left in the VM (its tables, KEYS and ARGV) before the next one.
        let _ = self.globals.raw_set("KEYS", Value::Nil);
        let _ = self.globals.raw_set("ARGV", Value::Nil);
        if meter.over.get() {
            return ScriptOutcome::OverBudget(format!(
                "ERR script used more than its budget of {} instructions; its writes were undone script: {sha}",
                ctx.budget()
            ));
        }
        let line = || meter.error_line.get().map_or_else(|| "?".to_owned(), |n| n.to_string());
        ScriptOutcome::Done(match result {
            Ok(Ok(reply)) => reply,
            Ok(Err(ErrorValue::Reply(text))) => {
                script_error(format!("{text} script: {sha}, on @user_script:{}.", line()))
            }
            Ok(Err(ErrorValue::Message(text))) => {
                script_error(format!("ERR {text} script: {sha}, on @user_script:{}.", line()))
            }
            Err(e) => script_error(format!("ERR {e} script: {sha}")),
        })
    }

    /// The budget's count hook: see the module docs.
    fn set_hook(&self) -> mlua::Result<()> {
        let meter = self.meter.clone();
        self.lua.set_hook(HookTriggers::new().every_nth_instruction(STEP), move |_, _| {
            let used = meter.used.get().saturating_add(u64::from(STEP));
            meter.used.set(used);
            if used > meter.budget.get() {
                meter.over.set(true);
                return Err(mlua::Error::runtime("script over its instruction budget"));
            }
            Ok(VmState::Continue)
        })
    }

    /// Runs the script in a protected call, with this run's `redis.call` wired to `ctx`.
    fn call(
        &self,
        ctx: &mut ScriptCtx<'_>,
        f: Function,
        keys: &[Bytes],
        args: &[Bytes],
    ) -> mlua::Result<Result<Reply, ErrorValue>> {
        let lua = &self.lua;
        self.globals.raw_set(
            "KEYS",
            lua.create_sequence_from(
                keys.iter().map(|k| lua.create_string(k)).collect::<mlua::Result<Vec<_>>>()?,
            )?,
        )?;
        self.globals.raw_set(
            "ARGV",
            lua.create_sequence_from(
                args.iter().map(|a| lua.create_string(a)).collect::<mlua::Result<Vec<_>>>()?,
            )?,
        )?;
        let meter = &self.meter;
        let ctx = RefCell::new(ctx);
        lua.scope(|scope| {
            // Rust functions rather than Lua wrappers: a Lua function called in a tail call
            // (`return redis.call(...)`) would take the script's frame, and with it the line
            // that error texts name.
            let call = scope.create_function(|lua, args: MultiValue| {
                match dispatch(lua, &mut ctx.borrow_mut(), meter, args)? {
                    Ok(value) => Ok(value),
                    Err(text) => Err(mlua::Error::external(CallFailed(text))),
                }
            })?;
            let pcall = scope.create_function(|lua, args: MultiValue| {
                match dispatch(lua, &mut ctx.borrow_mut(), meter, args)? {
                    Ok(value) => Ok(value),
                    Err(text) => Ok(Value::Table(single(lua, "err", &text)?)),
                }
            })?;
            self.redis.raw_set("call", call)?;
            self.redis.raw_set("pcall", pcall)?;
            let (ok, value): (bool, Value) = self.xpcall.call((f, self.handler.clone()))?;
            self.redis.raw_set("call", Value::Nil)?;
            self.redis.raw_set("pcall", Value::Nil)?;
            if ok {
                return Ok(Ok(lua_to_reply(&value)));
            }
            Ok(Err(match &value {
                Value::Table(t) => match t.raw_get::<Value>("err")? {
                    Value::String(s) => ErrorValue::Reply(s.to_string_lossy()),
                    _ => ErrorValue::Message("unknown error".into()),
                },
                Value::String(s) => ErrorValue::Message(s.to_string_lossy()),
                Value::Error(e) => match call_failure(e) {
                    Some(text) => ErrorValue::Reply(text.to_owned()),
                    None => ErrorValue::Message(e.to_string()),
                },
                other => ErrorValue::Message(other.to_string().unwrap_or_else(|_| "unknown error".into())),
            }))
        })
    }
}

/// The error `redis.call` raises: the command's error reply.
#[derive(Debug)]
struct CallFailed(String);

impl std::fmt::Display for CallFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CallFailed {}

/// The reply text of a failed `redis.call`, however mlua wrapped it on the way out.
fn call_failure(e: &mlua::Error) -> Option<&str> {
    match e {
        mlua::Error::ExternalError(inner) => inner.downcast_ref::<CallFailed>().map(|c| c.0.as_str()),
        mlua::Error::CallbackError { cause, .. } => call_failure(cause),
        mlua::Error::WithContext { cause, .. } => call_failure(cause),
        _ => None,
    }
}

/// What a script raised.
enum ErrorValue {
    /// An error reply (`{err=...}`, from a failed `redis.call`): sent as it is.
    Reply(String),
    /// A Lua error (`error('boom')`, a runtime error): sent after `ERR `.
    Message(String),
}

fn script_error(text: String) -> Reply {
    Reply::Error(turnstile_core::CoreError::Script(text))
}

/// The line of the innermost user script frame on the stack, for error texts.
fn user_line(lua: &Lua) -> Option<usize> {
    (1..64).find_map(|level| {
        lua.inspect_stack(level, |d| {
            let source = d.source();
            (source.source.as_deref() == Some(CHUNK)).then(|| d.current_line()).flatten()
        })
        .flatten()
    })
}

/// One `redis.call` or `redis.pcall`: the reply as a Lua value, or the text of its error reply
/// (which `redis.call` raises and `redis.pcall` returns as `{err=...}`).
fn dispatch(
    lua: &Lua,
    ctx: &mut ScriptCtx<'_>,
    meter: &Meter,
    args: MultiValue,
) -> mlua::Result<Result<Value, String>> {
    let failed = |text: &str| -> mlua::Result<Result<Value, String>> {
        meter.error_line.set(user_line(lua));
        Ok(Err(text.to_owned()))
    };
    if args.is_empty() {
        return failed("ERR Please specify at least one argument for this redis lib call");
    }
    let mut words = Vec::with_capacity(args.len());
    for arg in args {
        match arg {
            Value::String(s) => words.push(Bytes::copy_from_slice(&s.as_bytes())),
            Value::Integer(_) | Value::Number(_) => match lua.coerce_string(arg)? {
                Some(s) => words.push(Bytes::copy_from_slice(&s.as_bytes())),
                None => return failed("ERR Lua redis lib command arguments must be strings or integers"),
            },
            _ => return failed("ERR Lua redis lib command arguments must be strings or integers"),
        }
    }
    if cmd::command_name(&words).is_none() {
        return failed("ERR Unknown Redis command called from script");
    }
    // The caller's rules, by the command table as for the same command sent by a client.
    let perms = ctx.caller().map(|caller| caller.perms.clone());
    if let Some(perms) = &perms
        && cmd::permitted(&words, perms).is_err()
    {
        return failed("ERR The user executing the script can't run this command or subcommand");
    }
    // PUBLISH from a script is a write like any other (its reply counts no subscribers).
    let frame = match cmd::parse(&words).map(cmd::pubsub::publish_as_write) {
        Err(Frame::Error(text)) if text.starts_with("ERR wrong number of arguments") => {
            return failed("ERR Wrong number of args calling Redis command from script");
        }
        Err(Frame::Error(text)) => return failed(&text),
        Err(other) => other,
        Ok(action) if let Some(text) = perms.as_ref().and_then(|p| denied_name(p, &action)) => {
            return failed(text);
        }
        Ok(Action::Write { .. }) if ctx.read_only() => {
            return failed("ERR Write commands are not allowed from read-only scripts.");
        }
        Ok(Action::Write { cmd, shape }) => render(shape, ctx.write(cmd)),
        Ok(Action::Read { query, shape }) => render(shape, ctx.read(query)),
        Ok(Action::Connection(_)) => return failed("ERR This Redis command is not allowed from script"),
    };
    match frame {
        Frame::Error(text) => failed(&text),
        frame => Ok(Ok(frame_to_lua(lua, frame)?)),
    }
}

/// Redis's text for a script's call that names what its caller may not touch.
fn denied_name(perms: &turnstile_core::Perms, action: &Action) -> Option<&'static str> {
    let denied = match action {
        Action::Write { cmd, .. } => perms.check_names(cmd).err(),
        Action::Read { query, .. } => perms.check_query_names(query).err(),
        Action::Connection(_) => None,
    };
    denied.map(|d| match d {
        turnstile_core::Denied::Channel => {
            "ERR The user executing the script can't publish to the channel mentioned in the command"
        }
        turnstile_core::Denied::Name("lock") => {
            "ERR The user executing the script can't access at least one of the locks mentioned in the command arguments"
        }
        turnstile_core::Denied::Name(_) => {
            "ERR The user executing the script can't access at least one of the queues mentioned in the command arguments"
        }
        _ => "ERR The user executing the script can't access at least one of the keys mentioned in the command arguments",
    })
}

fn render(shape: ReplyShape, reply: Reply) -> Frame {
    cmd::render(shape, reply, Protocol::Resp2)
}

/// `redis.*` (but `call` and `pcall`, set for each run) and `cjson.*`.
fn install_redis(lua: &Lua, globals: &Table) -> mlua::Result<()> {
    let redis = lua.create_table()?;
    redis.raw_set(
        "sha1hex",
        lua.create_function(|_, s: mlua::String| Ok(turnstile_core::sha1_hex(&s.as_bytes())))?,
    )?;
    redis.raw_set(
        "error_reply",
        lua.create_function(|lua, s: mlua::String| single(lua, "err", &s.to_string_lossy()))?,
    )?;
    redis.raw_set(
        "status_reply",
        lua.create_function(|lua, s: mlua::String| single(lua, "ok", &s.to_string_lossy()))?,
    )?;
    // Logging would be a side effect outside the state; scripts may call it, and it does nothing.
    redis.raw_set("log", lua.create_function(|_, _: MultiValue| Ok(()))?)?;
    // Effects replication is the only replication here (the script itself is the log entry).
    redis.raw_set("replicate_commands", lua.create_function(|_, ()| Ok(true))?)?;
    redis.raw_set("set_repl", lua.create_function(|_, _: MultiValue| Ok(()))?)?;
    for (name, value) in [("LOG_DEBUG", 0), ("LOG_VERBOSE", 1), ("LOG_NOTICE", 2), ("LOG_WARNING", 3)] {
        redis.raw_set(name, value)?;
    }
    for (name, value) in
        [("REPL_NONE", 0), ("REPL_AOF", 1), ("REPL_SLAVE", 2), ("REPL_REPLICA", 2), ("REPL_ALL", 3)]
    {
        redis.raw_set(name, value)?;
    }
    globals.raw_set("redis", redis)?;

    let cjson = lua.create_table()?;
    cjson.raw_set("encode", lua.create_function(|_, v: Value| json_encode(&v))?)?;
    cjson.raw_set("decode", lua.create_function(|lua, s: mlua::String| json_decode(lua, &s.as_bytes()))?)?;
    cjson.raw_set("null", Value::NULL)?;
    globals.raw_set("cjson", cjson)?;
    Ok(())
}

/// `rand48`'s state after `srand48(0)`: every script starts from it.
const SEED: u64 = 0x330E;

/// `math.random` and `math.randomseed` on a generator the VM owns, reset for every script, so
/// that two nodes draw the same numbers (the C library's `rand` is neither reset nor the same
/// on every platform).
fn install_random(lua: &Lua, globals: &Table, meter: &Rc<Meter>) -> mlua::Result<()> {
    let math: Table = globals.raw_get("math")?;
    let state = meter.clone();
    math.raw_set(
        "random",
        lua.create_function(move |_, (m, n): (Option<f64>, Option<f64>)| {
            let next = state.seed.get().wrapping_mul(0x5DEE_CE66D).wrapping_add(0xB) & ((1 << 48) - 1);
            state.seed.set(next);
            let r = (next >> 17) as f64 / f64::from(1u32 << 31);
            Ok(match (m, n) {
                (None, _) => r,
                (Some(m), None) => (r * m.floor()).floor() + 1.0,
                (Some(m), Some(n)) => (r * (n.floor() - m.floor() + 1.0)).floor() + m.floor(),
            })
        })?,
    )?;
    let state = meter.clone();
    math.raw_set(
        "randomseed",
        lua.create_function(move |_, seed: f64| {
            #[allow(clippy::cast_possible_truncation)] // as srand48 takes it: the low bits
            let seed = seed as i64 as u64;
            state.seed.set(((seed & 0xFFFF_FFFF) << 16) | 0x330E);
            Ok(())
        })?,
    )?;
    Ok(())
}

/// Run once per VM with the real globals; returns the read-only globals.
const SANDBOX: &str = r#"
local G = ...
local error, ipairs, rawget, rawset, setmetatable, tostring = error, ipairs, rawget, rawset, setmetatable, tostring
local function readonly()
  error("Attempt to modify a readonly table", 2)
end
local protected = {}
for _, name in ipairs({"string", "table", "math", "redis", "cjson"}) do
  local proxy = setmetatable({}, { __index = G[name], __newindex = readonly, __metatable = false })
  protected[proxy] = true
  G[name] = proxy
end
local env = setmetatable({}, {
  __index = function(_, name)
    local value = rawget(G, name)
    if value == nil then
      error("Script attempted to access nonexistent global variable '" .. tostring(name) .. "'", 2)
    end
    return value
  end,
  __newindex = readonly,
  __metatable = false,
})
protected[env] = true
G._G = env
-- A table's or function's address differs from node to node: its text must not show it.
local tostring0, type = tostring, type
G.tostring = function(v)
  local kind = type(v)
  if (kind == "table" or kind == "function" or kind == "userdata" or kind == "thread")
      and not (getmetatable(v) and getmetatable(v).__tostring) then
    return kind
  end
  return tostring0(v)
end
G.rawset = function(t, k, v)
  if protected[t] then error("Attempt to modify a readonly table", 2) end
  return rawset(t, k, v)
end
getmetatable("").__metatable = false
return env
"#;
