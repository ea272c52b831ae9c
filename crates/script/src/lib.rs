//! Lua scripts for Turnstile's state machine: `EVAL` runs here, inside `State::apply`, on every
//! node of a cluster.
//!
//! ```text
//!   State::eval ──► LuaHost::run ──► this thread's VM: the compiled function (cached by SHA-1)
//!                                        │ redis.call('SET', k, v)
//!                                        ▼
//!                     turnstile_resp::cmd::parse ─► Action::Write ─► ctx.write(Command)
//!                                                 └► Action::Read ─► ctx.read(Query)
//!                     cmd::render(shape, reply, RESP2) ─► Lua value ─► back to the script
//! ```
//!
//! A script's calls are parsed exactly as the same command sent over RESP is, so a script sees
//! the same replies and error texts as a client does (converted the Redis way: `convert.rs`).
//!
//! Everything a script can reach is deterministic, because every node must reach the same
//! state: no `os`, `io`, file loading or clock; `math.random` restarts from the same seed in
//! every script; reads come from the state being applied; and the instruction budget is
//! counted by a count hook, whose verdict depends only on the script and its inputs (see
//! `vm.rs`). Globals are read-only, as in Redis 7, so one script cannot change the next one's
//! environment.

mod convert;
mod vm;

use bytes::Bytes;
use turnstile_core::{ScriptCtx, ScriptHost, ScriptOutcome};

/// The [`ScriptHost`] that runs Lua 5.1. Holds nothing: each thread that applies entries has
/// its own VM (a Lua state is not `Send`), made on its first script.
#[derive(Debug, Default, Clone, Copy)]
pub struct LuaHost;

impl ScriptHost for LuaHost {
    fn check(&self, source: &[u8]) -> Result<(), String> {
        vm::with_vm(|vm| vm.compile(&turnstile_core::sha1_hex(source), source).map(drop))
    }

    fn run(
        &self,
        ctx: &mut ScriptCtx<'_>,
        sha: &str,
        source: &[u8],
        keys: &[Bytes],
        args: &[Bytes],
    ) -> ScriptOutcome {
        vm::with_vm(|vm| vm.run(ctx, sha, source, keys, args))
    }
}

/// Installs [`LuaHost`] as this process's script host: the server calls it at start, tests
/// before they apply a script.
pub fn install() {
    turnstile_core::install_script_host(Box::new(LuaHost));
}
