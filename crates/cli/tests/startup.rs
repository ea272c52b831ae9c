//! `turnstile server` as an operator meets it: `--help`, the logs on stderr (text without colour
//! codes when not on a terminal, or JSON lines), and a refused start that says why once.

mod common;

use std::io::Read;
use std::process::Command;
use std::time::Duration;

use common::{TestServer, run_to_exit};

/// The config file's keys, as the file spells them: the field names `Config` gives serde
/// (kebab-case), read from its `Deserialize` impl so that a new setting is seen here at once.
fn config_keys() -> &'static [&'static str] {
    use serde::de::{self, Deserializer, Visitor};

    #[derive(Debug)]
    struct Fields(&'static [&'static str]);

    impl std::fmt::Display for Fields {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "the fields, not an error")
        }
    }

    impl std::error::Error for Fields {}

    impl de::Error for Fields {
        fn custom<T: std::fmt::Display>(_: T) -> Fields {
            Fields(&[])
        }
    }

    /// Answers every request with an error, except that a struct's field names are kept.
    struct FieldNames;

    impl<'de> Deserializer<'de> for FieldNames {
        type Error = Fields;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Fields> {
            Err(Fields(&[]))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Fields> {
            Err(Fields(fields))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    match <turnstile_server::Config as serde::Deserialize>::deserialize(FieldNames) {
        Err(Fields(fields)) => fields,
        Ok(_) => panic!("Config was read from nothing"),
    }
}

fn turnstile(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_turnstile")).args(args).output().expect("turnstile runs");
    assert!(out.status.success(), "turnstile {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 help")
}

#[test]
fn server_help_lists_every_setting_the_config_file_takes() {
    let keys = config_keys();
    assert!(keys.contains(&"resp-addr") && keys.contains(&"max-args"), "{keys:?}");
    let help = turnstile(&["server", "--help"]);
    for key in keys {
        // A flag of the same name, or a line of its own in the list of file-only settings.
        let flag = format!("--{key}");
        let listed = help.split_whitespace().any(|word| word == flag)
            || help.lines().any(|line| line.starts_with(&format!("  {key} ")));
        assert!(listed, "`turnstile server --help` does not list the config key {key}:\n{help}");
    }
}

/// Starts a server with its stderr piped, talks to it, stops it with SIGTERM, and returns what
/// it logged.
fn logs_of_a_run(args: &[&str]) -> String {
    let (mut server, mut stderr) = TestServer::start_with_stderr(args);
    let mut con = server.client();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).expect("SET");
    drop(con);
    server.terminate();
    let mut logs = String::new();
    stderr.read_to_string(&mut logs).expect("stderr is UTF-8");
    assert_eq!(server.wait_exit(), Some(0), "a stopped server exits 0; it logged:\n{logs}");
    logs
}

#[test]
fn text_logs_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    let logs = logs_of_a_run(&["--log", "info"]);
    assert!(logs.contains(" INFO ") && logs.contains("ready"), "the ready line is logged:\n{logs}");
    assert!(!logs.contains("\x1b["), "colour codes in piped logs:\n{}", logs.escape_debug());
}

#[test]
fn json_logs_are_one_object_per_line() {
    let logs = logs_of_a_run(&["--log", "info", "--log-format", "json"]);
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}")))
        .collect();
    assert!(lines.iter().all(|l| l["level"].is_string() && l["timestamp"].is_string()), "{logs}");
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["fields"]["message"].as_str()).collect();
    assert!(messages.contains(&"ready") && messages.contains(&"stopped"), "{messages:?}");
    let ready = lines.iter().find(|l| l["fields"]["message"] == "ready").expect("ready");
    assert!(ready["fields"]["resp"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")), "{ready}");
}

#[test]
fn a_refused_start_says_its_cause_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").expect("a regular file");
    let (status, output) = run_to_exit(&file, &[], Duration::from_secs(30));
    let status = status.expect("a refused start exits by itself");
    assert!(!status.success(), "{output}");
    let cause = std::io::Error::from_raw_os_error(17).to_string(); // EEXIST: "File exists (os error 17)"
    assert_eq!(output.matches(&cause).count(), 1, "the cause once:\n{output}");
    let path = file.display().to_string();
    assert!(output.contains(&format!("turnstile: cannot create data dir {path}: {cause}")), "{output}");
}

#[test]
fn cluster_settings_that_cannot_work_are_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let refused = |args: &[&str]| {
        let (status, output) = run_to_exit(&data, args, Duration::from_secs(30));
        assert!(!status.expect("a refused start exits by itself").success(), "{output}");
        assert!(!data.exists(), "nothing is created for a refused start");
        output
    };
    let output = refused(&["--node-id", "4", "--peers", "1=127.0.0.1:7381,2=127.0.0.1:7391"]);
    assert!(
        output.contains("node-id 4 is not among the peers (1=127.0.0.1:7381,2=127.0.0.1:7391)"),
        "{output}"
    );
    let output = refused(&["--peers", "1=127.0.0.1:7381,1=127.0.0.1:7391"]);
    assert!(output.contains("peer 1 is listed twice"), "{output}");
    let output = refused(&["--raft-addr", "127.0.0.1:7381"]);
    assert!(output.contains("raft-addr needs peers"), "{output}");
}
