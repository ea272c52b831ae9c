//! How client commands print: plain text for people, `--json` for programs. Both go to
//! stdout; messages about what happened go to stderr, so `$(turnstile ...)` captures data only.

use serde::Serialize;

/// Prints `value` as one JSON document, or `text` when not in JSON mode.
pub fn print<T: Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) {
    if json {
        match serde_json::to_string(value) {
            Ok(doc) => println!("{doc}"),
            Err(e) => eprintln!("turnstile: cannot print JSON: {e}"),
        }
    } else {
        let text = text();
        if !text.is_empty() {
            println!("{text}");
        }
    }
}

/// A payload shown as text: UTF-8 as is, anything else lossily.
pub fn payload_text(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).into_owned()
}

/// Milliseconds of a duration, for JSON fields named `..._ms`.
pub fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
