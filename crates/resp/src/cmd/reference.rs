//! `docs/commands.md`, rendered from the command table.
//!
//! The file is committed so that it can be read on GitHub and in a clone without building, and a
//! test compares it with [`markdown`] so that it cannot drift from what the parser accepts:
//! `UPDATE_DOCS=1 cargo test -p turnstile-resp` writes it again after a change to the table.

use std::fmt::Write;

use super::commands;
use super::spec::{Arg, ArgKind, Group, Keys, Spec};

/// The whole reference, as `docs/commands.md` holds it.
pub fn markdown() -> String {
    let mut out = String::from(HEADER);
    out.push_str("\n## Index\n\n| command | what it does |\n|---|---|\n");
    for group in Group::ALL {
        for spec in commands().filter(|spec| spec.group == group) {
            for spec in std::iter::once(spec).chain(spec.subcommands) {
                let _ = writeln!(
                    out,
                    "| [{}](#{}) | {} |",
                    spec.display_name(),
                    anchor(spec),
                    cell(spec.summary)
                );
            }
        }
    }
    for group in Group::ALL {
        let _ = write!(out, "\n## {}\n", group.title());
        for spec in commands().filter(|spec| spec.group == group) {
            section(&mut out, spec);
            for sub in spec.subcommands {
                section(&mut out, sub);
            }
        }
    }
    out
}

const HEADER: &str = "\
# RESP commands

<!-- Rendered from the command table in crates/resp/src/cmd/ (each group file's COMMANDS).
     Do not edit: change the table and run `UPDATE_DOCS=1 cargo test -p turnstile-resp`. -->

Every command Turnstile's RESP listener (`--resp-addr`, default `127.0.0.1:7379`) accepts, with
its arguments, replies and errors. Names are case-insensitive; options may come in any order
unless a syntax line says otherwise. `COMMAND DOCS`, `COMMAND INFO` and `COMMAND COUNT` answer from
the same table this page is rendered from, and the parser finds each command and checks its
argument count there too.

A hold (`LOCK.ACQUIRE`, `SEM.ACQUIRE`) and a delivery (`Q.POP`) belong to the connection that took
them: they end when it closes, unless taken with `KEEP`, and in any case when their lease runs out.
Durations are in milliseconds unless an argument says seconds.

## Errors any command may answer

- `ERR unknown command 'x', with args beginning with: 'a' ` and
  `ERR unknown subcommand 'x'. Try CLIENT HELP.`
- `ERR wrong number of arguments for 'x' command`: fewer or more arguments than the syntax line
  allows.
- `ERR syntax error`: an unknown option, an option without its value, or arguments left over.
- `ERR value is not an integer or out of range`, and `ERR value is out of range, must be positive`
  for a negative duration or count.
- `ERR invalid name (not UTF-8)`: names, owners, ids and keys are UTF-8 text; payloads and values
  are any bytes.
- `ERR Protocol error: invalid bulk length: value is larger than max-payload (N bytes)` and
  `ERR Protocol error: invalid multibulk length: more than max-args (N) arguments`: a request over
  the server's `max-payload` or `max-args`; the connection is closed after it, as Redis does.
- `ERR queue name is longer than max-name-len (N bytes)` (and `lock`, `key`, `exchange`): a name
  over the server's `max-name-len`; nothing changed.
- `OOM command not allowed when used memory > 'max-memory'`: a push that would take stored
  payloads past the server's `max-memory`; consumers can still drain.
- `NOTLEADER host:port`: this node of a cluster is not the leader, which is at `host:port` (its
  Raft address); nothing changed.
- `CLUSTERDOWN no leader reachable`: this node of a cluster can reach no leader (an election is
  under way, or it is cut off in a minority); nothing changed. Try another node, or again later.
- `TRYAGAIN ...`: the command could not be run now (the server is stopping); nothing changed.
- `ERR ...` with the storage's reason after a failed fsync: writes are refused from then on,
  reads still work.
";

/// One command's section: heading, syntax, summary, arguments, reply, errors, flags.
fn section(out: &mut String, spec: &Spec) {
    let _ = write!(out, "\n### {}\n\n```\n{}\n```\n\n{}\n", spec.display_name(), spec.syntax(), spec.summary);
    if !spec.args.is_empty() {
        out.push_str("\n| argument | meaning |\n|---|---|\n");
        for arg in spec.args {
            let _ = writeln!(out, "| `{}` | {} |", cell(&arg.syntax()), cell(&meaning(arg)));
        }
    }
    if spec.parse.is_none() {
        let subs: Vec<String> =
            spec.subcommands.iter().map(|sub| format!("`{}`", sub.display_name())).collect();
        let _ = writeln!(out, "\nOne of its subcommands: {}.", subs.join(", "));
    } else {
        let _ = writeln!(out, "\n**Reply:** {}.", spec.reply);
    }
    if !spec.errors.is_empty() {
        out.push_str("\n**Errors:**\n");
        for error in spec.errors {
            let _ = writeln!(out, "- {error}");
        }
    }
    let flags: Vec<&str> = spec.flags.iter().map(|flag| flag.name()).collect();
    let flags = if flags.is_empty() { String::new() } else { format!(" · flags: {}", flags.join(", ")) };
    let keys = match spec.keys {
        Keys { first: 0, .. } => String::new(),
        Keys { first, last: -1, .. } => format!(" · names from argument {first} on"),
        Keys { first, last, .. } if first == last => format!(" · name: argument {first}"),
        Keys { first, last, .. } => format!(" · names: arguments {first} to {last}"),
    };
    let _ = writeln!(out, "\n<sub>arity {}{flags}{keys}</sub>", spec.arity.redis());
}

/// An argument's summary, then what each alternative or part means.
fn meaning(arg: &Arg) -> String {
    let mut text = arg.summary.to_owned();
    if let ArgKind::OneOf(parts) | ArgKind::Block(parts) = arg.kind {
        let parts: Vec<String> = parts
            .iter()
            .filter(|part| !part.summary.is_empty())
            .map(|part| format!("`{}`: {}", part.syntax(), meaning(part)))
            .collect();
        if !parts.is_empty() {
            if !text.is_empty() {
                text.push_str(". ");
            }
            text.push_str(&parts.join("; "));
        }
    }
    text
}

/// GitHub's anchor for a `### NAME` heading: lower case, spaces as `-`, dots and bars dropped.
fn anchor(spec: &Spec) -> String {
    spec.display_name()
        .to_ascii_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Text for a table cell: a `|` would end the cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the rendered reference lives, from this crate's directory.
    const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/commands.md");

    #[test]
    fn docs_commands_md_is_rendered_from_the_table() {
        let rendered = markdown();
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(PATH, &rendered).expect("docs/commands.md is writable");
        }
        let committed = std::fs::read_to_string(PATH).unwrap_or_default();
        assert!(
            committed == rendered,
            "docs/commands.md differs from the command table; run `UPDATE_DOCS=1 cargo test -p turnstile-resp` \
             and commit the result (first differing line: {:?})",
            committed.lines().zip(rendered.lines()).find(|(a, b)| a != b)
        );
    }

    #[test]
    fn every_command_and_subcommand_has_a_section() {
        let text = markdown();
        for spec in commands() {
            for spec in std::iter::once(spec).chain(spec.subcommands) {
                assert!(text.contains(&format!("\n### {}\n", spec.display_name())), "{}", spec.name);
                assert!(text.contains(&format!("(#{})", anchor(spec))), "{}", spec.name);
            }
        }
    }

    #[test]
    fn a_section_shows_syntax_arguments_reply_and_errors() {
        let text = markdown();
        let start = text.find("\n### LOCK.ACQUIRE\n").expect("section");
        let section = &text[start..start + text[start + 1..].find("\n### ").unwrap()];
        assert!(section.contains("```\nLOCK.ACQUIRE name ttl-ms [WAIT ms] [OWNER id] [SHARED] [KEEP]\n```"));
        assert!(section.contains("| `[KEEP]` | keep the hold when the connection closes"));
        assert!(section.contains("**Reply:** `[token, lease-ms]` when granted"));
        assert!(section.contains("- `DEADLOCK waiting would deadlock"));
        assert!(section.contains("<sub>arity -3 · flags: write, blocking · name: argument 1</sub>"));
        assert!(text.contains("| `[NX \\| XX]` |"), "bars in cells are escaped");
    }
}
