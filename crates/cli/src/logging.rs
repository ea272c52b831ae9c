//! Where `turnstile`'s own log lines go and how they look: stderr, as text for people (coloured
//! only when stderr is a terminal) or as one JSON object per line for log shippers.

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt;
use tracing_subscriber::prelude::*;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// `2024-01-01T00:00:00Z  INFO target: message key=value`, coloured on a terminal only.
    #[default]
    Text,
    /// one JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`).
    Json,
}

/// Installs the subscriber for the whole process. Colour codes only reach a terminal: in a file,
/// a pipe or a journal they would be noise around every word.
pub fn init(format: LogFormat, filter: Targets) {
    let (text, json) = match format {
        LogFormat::Text => {
            let layer = fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
            (Some(layer), None)
        }
        LogFormat::Json => (None, Some(fmt::layer().json().with_writer(std::io::stderr))),
    };
    tracing_subscriber::registry().with(text).with(json).with(filter).init();
}
