//! Redis's conversions between Lua values and replies, and `cjson`.
//!
//! A command's reply reaches the script as RESP2 would send it, converted as Redis converts it:
//!
//! ```text
//!   integer ─► number        bulk ─► string        nil bulk / nil array ─► false
//!   array ─► table           status ─► {ok=...}    error ─► {err=...}
//! ```
//!
//! and the script's value goes back the other way: a number is truncated to an integer, `true`
//! is 1, `false` and `nil` are nil, a table with `err` or `ok` is an error or a status, any other
//! table is an array that stops at its first nil.

use bytes::Bytes;
use mlua::{Lua, Table, Value};
use turnstile_core::{CoreError, Reply};
use turnstile_resp::Frame;

/// Nesting deeper than this is refused rather than followed (a table may contain itself).
const MAX_DEPTH: usize = 64;

/// A command's reply (rendered as RESP2) as the script sees it. `Err` is the text of an error
/// reply, which `redis.call` raises and `redis.pcall` returns as `{err=...}`.
pub(crate) fn frame_to_lua(lua: &Lua, frame: Frame) -> mlua::Result<Value> {
    Ok(match frame {
        Frame::Integer(n) => Value::Integer(n),
        Frame::Bulk(b) => Value::String(lua.create_string(&b)?),
        Frame::Verbatim { text, .. } => Value::String(lua.create_string(&text)?),
        Frame::BigNumber(s) => Value::String(lua.create_string(&s)?),
        Frame::Double(d) => Value::String(lua.create_string(d.to_string())?),
        Frame::Boolean(b) => Value::Integer(i64::from(b)),
        Frame::Null | Frame::NullArray => Value::Boolean(false),
        Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => {
            let table = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.into_iter().enumerate() {
                table.raw_set(i + 1, frame_to_lua(lua, item)?)?;
            }
            Value::Table(table)
        }
        Frame::Map(pairs) => {
            let table = lua.create_table_with_capacity(pairs.len() * 2, 0)?;
            for (i, (k, v)) in pairs.into_iter().enumerate() {
                table.raw_set(2 * i + 1, frame_to_lua(lua, k)?)?;
                table.raw_set(2 * i + 2, frame_to_lua(lua, v)?)?;
            }
            Value::Table(table)
        }
        Frame::Simple(s) => Value::Table(single(lua, "ok", &s)?),
        Frame::Error(s) => Value::Table(single(lua, "err", &s)?),
    })
}

/// `{ok=text}` or `{err=text}`.
pub(crate) fn single(lua: &Lua, field: &str, text: &str) -> mlua::Result<Table> {
    let table = lua.create_table()?;
    table.raw_set(field, text)?;
    Ok(table)
}

/// The script's value as a reply.
pub(crate) fn lua_to_reply(value: &Value) -> Reply {
    to_reply(value, 0)
}

fn to_reply(value: &Value, depth: usize) -> Reply {
    match value {
        Value::Nil | Value::Boolean(false) => Reply::Nil,
        Value::Boolean(true) => Reply::Int(1),
        Value::Integer(n) => Reply::Int(*n),
        Value::Number(n) => Reply::Int(truncate(*n)),
        Value::String(s) => Reply::Bytes(Bytes::copy_from_slice(&s.as_bytes())),
        Value::Table(t) if depth >= MAX_DEPTH => {
            let _ = t;
            Reply::Error(CoreError::Script("ERR reached lua stack limit".into()))
        }
        Value::Table(t) => {
            if let Ok(Value::String(err)) = t.raw_get::<Value>("err") {
                return Reply::Error(CoreError::Script(err.to_string_lossy()));
            }
            if let Ok(Value::String(ok)) = t.raw_get::<Value>("ok") {
                return Reply::Status(ok.to_string_lossy());
            }
            let mut items = Vec::new();
            for i in 1.. {
                match t.raw_get::<Value>(i) {
                    Ok(Value::Nil) | Err(_) => break,
                    Ok(item) => items.push(to_reply(&item, depth + 1)),
                }
            }
            Reply::Array(items)
        }
        _ => Reply::Nil,
    }
}

/// A Lua number as Redis makes it an integer reply: toward zero, saturating.
#[allow(clippy::cast_possible_truncation)] // truncation is the conversion Redis defines
fn truncate(n: f64) -> i64 {
    n as i64
}

/// `cjson.encode(value)`: objects' keys are sorted, so the text does not depend on a table's
/// internal layout.
pub(crate) fn json_encode(value: &Value) -> mlua::Result<String> {
    let json = to_json(value, 0)?;
    serde_json::to_string(&json).map_err(mlua::Error::external)
}

fn to_json(value: &Value, depth: usize) -> mlua::Result<serde_json::Value> {
    use serde_json::Value as J;
    if depth >= MAX_DEPTH {
        return Err(mlua::Error::runtime("Cannot serialise, excessive nesting"));
    }
    Ok(match value {
        Value::Nil => J::Null,
        Value::LightUserData(p) if p.0.is_null() => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Integer(n) => J::from(*n),
        Value::Number(n) => number(*n)?,
        Value::String(s) => J::String(s.to_string_lossy()),
        Value::Table(t) => {
            let mut pairs: Vec<(Value, Value)> = t.pairs::<Value, Value>().collect::<mlua::Result<_>>()?;
            let len = t.raw_len();
            if !pairs.is_empty() && pairs.len() == len {
                let mut items = Vec::with_capacity(len);
                for i in 1..=len {
                    items.push(to_json(&t.raw_get::<Value>(i)?, depth + 1)?);
                }
                J::Array(items)
            } else {
                let mut object = Vec::with_capacity(pairs.len());
                for (k, v) in pairs.drain(..) {
                    let key = match &k {
                        Value::String(s) => s.to_string_lossy(),
                        Value::Integer(n) => n.to_string(),
                        Value::Number(n) => n.to_string(),
                        _ => {
                            return Err(mlua::Error::runtime(
                                "Cannot serialise table: table key must be a number or string",
                            ));
                        }
                    };
                    object.push((key, to_json(&v, depth + 1)?));
                }
                object.sort_by(|a, b| a.0.cmp(&b.0));
                J::Object(object.into_iter().collect())
            }
        }
        other => {
            return Err(mlua::Error::runtime(format!(
                "Cannot serialise {}: type not supported",
                other.type_name()
            )));
        }
    })
}

/// Whole numbers print without a fraction, as Redis's cjson prints them (`%.14g`).
#[allow(clippy::cast_possible_truncation)] // only whole numbers well inside i64 are cast
fn number(n: f64) -> mlua::Result<serde_json::Value> {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        return Ok(serde_json::Value::from(n as i64));
    }
    serde_json::Number::from_f64(n)
        .map(serde_json::Value::Number)
        .ok_or_else(|| mlua::Error::runtime("Cannot serialise number: must not be NaN or Inf"))
}

/// `cjson.decode(text)`: JSON `null` is `cjson.null`.
pub(crate) fn json_decode(lua: &Lua, text: &[u8]) -> mlua::Result<Value> {
    let json: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| mlua::Error::runtime(format!("Expected JSON: {e}")))?;
    from_json(lua, json)
}

fn from_json(lua: &Lua, json: serde_json::Value) -> mlua::Result<Value> {
    use serde_json::Value as J;
    Ok(match json {
        J::Null => Value::NULL,
        J::Bool(b) => Value::Boolean(b),
        J::Number(n) => Value::Number(n.as_f64().unwrap_or(0.0)),
        J::String(s) => Value::String(lua.create_string(&s)?),
        J::Array(items) => {
            let table = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.into_iter().enumerate() {
                table.raw_set(i + 1, from_json(lua, item)?)?;
            }
            Value::Table(table)
        }
        J::Object(fields) => {
            let table = lua.create_table_with_capacity(0, fields.len())?;
            for (k, v) in fields {
                table.raw_set(k, from_json(lua, v)?)?;
            }
            Value::Table(table)
        }
    })
}
