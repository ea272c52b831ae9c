//! Connection commands: `PING ECHO HELLO AUTH SELECT CLIENT INFO COMMAND QUIT`.
//!
//! These never touch the state machine: they become [`ConnCmd`]s that the connection task answers
//! itself (it knows the protocol version, the client's name and id, the server's info). Parsing
//! still checks them as Redis does, so a client library's handshake gets the replies it expects.

use bytes::Bytes;

use super::{Action, Args, ConnCmd, Spec, exactly, int, syntax_error, wrong_arity};
use crate::Frame;

/// `CLIENT`'s subcommands. Anything else is `unknown subcommand '...'. Try CLIENT HELP.`
pub(super) const CLIENT: &[Spec] = &[
    exactly("client|setname", 3, client_setname),
    exactly("client|getname", 2, client_getname),
    exactly("client|id", 2, client_id),
    exactly("client|setinfo", 4, client_setinfo),
];

/// `PING [message]` → `PONG`, or the message as a bulk string.
pub(super) fn ping(args: Args<'_>) -> Result<Action, Frame> {
    match args.remaining() {
        [] => Ok(Action::Connection(ConnCmd::Ping(None))),
        [message] => Ok(Action::Connection(ConnCmd::Ping(Some(message.clone())))),
        _ => Err(wrong_arity("ping")),
    }
}

/// `ECHO message` → the message.
pub(super) fn echo(mut args: Args<'_>) -> Result<Action, Frame> {
    let message = args.next()?.clone();
    args.end()?;
    Ok(Action::Connection(ConnCmd::Echo(message)))
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]` → the server's hello map, in the protocol
/// asked for. Checked in Redis 7's order and with its texts: the version first (an integer, 2 or
/// 3, else `NOPROTO`), then each option.
pub(super) fn hello(args: Args<'_>) -> Result<Action, Frame> {
    let Some((version, options)) = args.remaining().split_first() else {
        return Ok(Action::Connection(ConnCmd::Hello { protover: None, auth: None, setname: None }));
    };
    let protover = crate::wire::parse_int(version)
        .ok_or_else(|| Frame::error("ERR", "Protocol version is not an integer or out of range"))?;
    if !(2..=3).contains(&protover) {
        return Err(Frame::error("NOPROTO", "unsupported protocol version"));
    }
    let (mut auth, mut setname) = (None, None);
    let mut options = options.iter();
    while let Some(option) = options.next() {
        let rest = options.as_slice();
        match (option.to_ascii_uppercase().as_slice(), rest) {
            (b"AUTH", [user, pass, ..]) => {
                auth = Some((user.clone(), pass.clone()));
                options.nth(1);
            }
            (b"SETNAME", [name, ..]) => {
                setname = Some(client_name(name)?);
                options.next();
            }
            _ => {
                let text = format!("Syntax error in HELLO option '{}'", String::from_utf8_lossy(option));
                return Err(Frame::error("ERR", text));
            }
        }
    }
    Ok(Action::Connection(ConnCmd::Hello { protover: Some(protover), auth, setname }))
}

/// `AUTH [user] pass` → `+OK` or an auth error, decided by the server.
pub(super) fn auth(args: Args<'_>) -> Result<Action, Frame> {
    let (user, pass) = match args.remaining() {
        [pass] => (None, pass.clone()),
        [user, pass] => (Some(user.clone()), pass.clone()),
        _ => return Err(syntax_error()),
    };
    Ok(Action::Connection(ConnCmd::Auth { user, pass }))
}

/// `SELECT index` → `+OK` for database 0; the server refuses the others (there is one keyspace).
pub(super) fn select(mut args: Args<'_>) -> Result<Action, Frame> {
    let index = int(args.next()?)?;
    args.end()?;
    Ok(Action::Connection(ConnCmd::Select(index)))
}

/// `CLIENT SETNAME name` → `+OK`. Redis's rule: printable ASCII, no spaces; empty clears the name.
fn client_setname(mut args: Args<'_>) -> Result<Action, Frame> {
    let name = client_name(args.next()?)?;
    args.end()?;
    Ok(Action::Connection(ConnCmd::ClientSetName(name)))
}

/// `CLIENT GETNAME` → the name, or nil.
fn client_getname(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    Ok(Action::Connection(ConnCmd::ClientGetName))
}

/// `CLIENT ID` → the connection's id.
fn client_id(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    Ok(Action::Connection(ConnCmd::ClientId))
}

/// `CLIENT SETINFO LIB-NAME|LIB-VER value` → `+OK`; checked as Redis 7.2 checks it, then ignored.
fn client_setinfo(mut args: Args<'_>) -> Result<Action, Frame> {
    let attr = args.next()?;
    let value = args.next()?;
    args.end()?;
    let attr = String::from_utf8_lossy(attr);
    if !attr.eq_ignore_ascii_case("lib-name") && !attr.eq_ignore_ascii_case("lib-ver") {
        return Err(Frame::error("ERR", format_args!("Unrecognized option '{attr}'")));
    }
    if !printable(value) {
        return Err(Frame::error(
            "ERR",
            format_args!("{attr} cannot contain spaces, newlines or special characters."),
        ));
    }
    Ok(Action::Connection(ConnCmd::ClientSetInfo))
}

/// `INFO [section ...]` → the server's info text; sections are matched in lower case.
pub(super) fn info(args: Args<'_>) -> Result<Action, Frame> {
    let sections = args.remaining().iter().map(|s| String::from_utf8_lossy(s).to_ascii_lowercase()).collect();
    Ok(Action::Connection(ConnCmd::Info(sections)))
}

/// `COMMAND [subcommand [arg ...]]`: client libraries ask it at connect; the server answers
/// what it can (`COUNT`, `DOCS`, `INFO`) from its table.
pub(super) fn command(args: Args<'_>) -> Result<Action, Frame> {
    Ok(Action::Connection(ConnCmd::Command(args.remaining().to_vec())))
}

/// `QUIT` → `+OK`, then the server closes the connection.
pub(super) fn quit(args: Args<'_>) -> Result<Action, Frame> {
    args.end()?;
    Ok(Action::Connection(ConnCmd::Quit))
}

/// A client name as Redis's `validateClientName` allows it.
fn client_name(name: &Bytes) -> Result<Bytes, Frame> {
    if printable(name) {
        Ok(name.clone())
    } else {
        Err(Frame::error("ERR", "Client names cannot contain spaces, newlines or special characters."))
    }
}

/// Every byte is printable ASCII other than space (`'!'..='~'`).
fn printable(text: &[u8]) -> bool {
    text.iter().all(|b| (b'!'..=b'~').contains(b))
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::super::testing::{args, error_of, parse_line};
    use super::*;

    fn conn(line: &str) -> ConnCmd {
        match parse_line(line) {
            Ok(Action::Connection(cmd)) => cmd,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn b(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    #[test]
    fn ping_and_echo() {
        assert_eq!(parse_line("PING"), Ok(Action::Connection(ConnCmd::Ping(None))));
        assert_eq!(conn("ping hello"), ConnCmd::Ping(Some(b("hello"))));
        assert_eq!(error_of("PING a b"), "ERR wrong number of arguments for 'ping' command");
        assert_eq!(conn("ECHO hi"), ConnCmd::Echo(b("hi")));
        assert_eq!(error_of("ECHO"), "ERR wrong number of arguments for 'echo' command");
        assert_eq!(error_of("ECHO a b"), "ERR wrong number of arguments for 'echo' command");
    }

    #[test]
    fn hello_forms() {
        assert_eq!(conn("HELLO"), ConnCmd::Hello { protover: None, auth: None, setname: None });
        assert_eq!(conn("HELLO 3"), ConnCmd::Hello { protover: Some(3), auth: None, setname: None });
        assert_eq!(
            conn("hello 2 auth default secret setname app-1"),
            ConnCmd::Hello {
                protover: Some(2),
                auth: Some((b("default"), b("secret"))),
                setname: Some(b("app-1"))
            }
        );
    }

    #[test]
    fn hello_errors() {
        assert_eq!(error_of("HELLO three"), "ERR Protocol version is not an integer or out of range");
        assert_eq!(error_of("HELLO 4"), "NOPROTO unsupported protocol version");
        assert_eq!(error_of("HELLO 1"), "NOPROTO unsupported protocol version");
        assert_eq!(error_of("HELLO 3 AUTH user"), "ERR Syntax error in HELLO option 'AUTH'");
        assert_eq!(error_of("HELLO 3 SETNAME"), "ERR Syntax error in HELLO option 'SETNAME'");
        assert_eq!(error_of("HELLO 3 FOO"), "ERR Syntax error in HELLO option 'FOO'");
        let mut bad_name = args("HELLO 3 SETNAME x");
        bad_name[3] = b("a b");
        assert_eq!(
            parse(&bad_name),
            Err(Frame::Error(
                "ERR Client names cannot contain spaces, newlines or special characters.".into()
            ))
        );
    }

    #[test]
    fn auth_forms() {
        assert_eq!(conn("AUTH secret"), ConnCmd::Auth { user: None, pass: b("secret") });
        assert_eq!(conn("AUTH me secret"), ConnCmd::Auth { user: Some(b("me")), pass: b("secret") });
        assert_eq!(error_of("AUTH"), "ERR wrong number of arguments for 'auth' command");
        assert_eq!(error_of("AUTH a b c"), "ERR syntax error");
    }

    #[test]
    fn select() {
        assert_eq!(conn("SELECT 0"), ConnCmd::Select(0));
        assert_eq!(conn("SELECT 5"), ConnCmd::Select(5));
        assert_eq!(error_of("SELECT zero"), "ERR value is not an integer or out of range");
        assert_eq!(error_of("SELECT"), "ERR wrong number of arguments for 'select' command");
    }

    #[test]
    fn client_subcommands() {
        assert_eq!(conn("CLIENT SETNAME app"), ConnCmd::ClientSetName(b("app")));
        assert_eq!(conn("client getname"), ConnCmd::ClientGetName);
        assert_eq!(conn("CLIENT ID"), ConnCmd::ClientId);
        assert_eq!(conn("CLIENT SETINFO LIB-NAME redis-py"), ConnCmd::ClientSetInfo);
        assert_eq!(conn("CLIENT SETINFO lib-ver 5.0.1"), ConnCmd::ClientSetInfo);
        let mut empty = args("CLIENT SETNAME x");
        empty[2] = Bytes::new();
        assert_eq!(parse(&empty), Ok(Action::Connection(ConnCmd::ClientSetName(Bytes::new()))));
    }

    #[test]
    fn client_errors() {
        assert_eq!(error_of("CLIENT"), "ERR wrong number of arguments for 'client' command");
        assert_eq!(error_of("CLIENT KILL x"), "ERR unknown subcommand 'KILL'. Try CLIENT HELP.");
        assert_eq!(error_of("CLIENT ID x"), "ERR wrong number of arguments for 'client|id' command");
        assert_eq!(error_of("CLIENT SETINFO color blue"), "ERR Unrecognized option 'color'");
        assert_eq!(
            error_of("CLIENT SETINFO lib-name"),
            "ERR wrong number of arguments for 'client|setinfo' command"
        );
        let mut bad = args("CLIENT SETINFO lib-ver x");
        bad[3] = b("1 2");
        assert_eq!(
            parse(&bad),
            Err(Frame::Error("ERR lib-ver cannot contain spaces, newlines or special characters.".into()))
        );
        let mut bad = args("CLIENT SETNAME x");
        bad[2] = b("new\nline");
        assert_eq!(
            parse(&bad),
            Err(Frame::Error(
                "ERR Client names cannot contain spaces, newlines or special characters.".into()
            ))
        );
    }

    #[test]
    fn info_command_quit() {
        assert_eq!(conn("INFO"), ConnCmd::Info(vec![]));
        assert_eq!(conn("INFO Server CLIENTS"), ConnCmd::Info(vec!["server".into(), "clients".into()]));
        assert_eq!(conn("COMMAND"), ConnCmd::Command(vec![]));
        assert_eq!(conn("COMMAND DOCS get"), ConnCmd::Command(vec![b("DOCS"), b("get")]));
        assert_eq!(conn("QUIT"), ConnCmd::Quit);
        assert_eq!(error_of("QUIT now"), "ERR wrong number of arguments for 'quit' command");
    }
}
