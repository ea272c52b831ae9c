//! AMQP logins against the users of every protocol, with `lapin` as the client: a wrong password
//! is refused with RabbitMQ's 403 (and recorded in the audit log), a user limited to some queues
//! is refused the others in RabbitMQ's words with its channel closed, `guest` from loopback works
//! as before while authentication is off, and a user's `max-connections` is enforced.

mod common;

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

use common::TestServer;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ErrorKind};
use tokio::time::timeout;

/// Bound on any single wait for the server.
const WAIT: Duration = Duration::from_secs(10);

const USERS: &str = r#"
[users.admin]
password = "adminpw"
categories = ["+@all"]
keys = ["*"]
locks = ["*"]
queues = ["*"]
channels = ["*"]

[users.alice]
password = "alicepw"
categories = ["+@all", "-@admin"]
queues = ["app.*"]

[users.capped]
password = "cappedpw"
categories = ["+@all"]
queues = ["*"]
max-connections = 2
"#;

fn url(server: &TestServer, user: &str, password: &str) -> String {
    format!("amqp://{user}:{password}@{}/%2f", server.amqp_addr)
}

async fn connect(url: &str) -> Result<Connection, lapin::Error> {
    timeout(WAIT, Connection::connect(url, ConnectionProperties::default())).await.expect("connect timed out")
}

/// The reply code and text of a protocol error.
fn refusal(error: &lapin::Error) -> (u16, String) {
    match error.kind() {
        ErrorKind::ProtocolError(e) => (e.get_id(), e.get_message().to_string()),
        other => panic!("expected an AMQP protocol error, got {other:?} ({error})"),
    }
}

#[tokio::test]
async fn a_wrong_password_is_refused_with_403_and_audited() {
    let config = common::config_file(USERS);
    let (server, stderr) = TestServer::start_with_stderr(&["--config", config.path().to_str().unwrap()]);
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });

    let err = connect(&url(&server, "alice", "wrong")).await.expect_err("a wrong password is refused");
    assert_eq!(
        refusal(&err),
        (
            403,
            "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the \
             broker logfile."
                .to_owned()
        )
    );
    // An unknown user gets the same words, and so does guest once users are configured (it is
    // not among them).
    let err = connect(&url(&server, "nobody", "x")).await.expect_err("an unknown user is refused");
    assert_eq!(refusal(&err).0, 403);

    // The audit log names the refused login: reason, protocol, user and where from.
    let audited = loop {
        match lines.recv_timeout(WAIT) {
            Ok(line) if line.contains("audit") && line.contains("\"amqp\"") && line.contains("alice") => {
                break line;
            }
            Ok(_) => continue,
            Err(_) => panic!("no audit line for the refused login"),
        }
    };
    assert!(audited.contains("\"auth\"") && audited.contains("protocol=amqp addr=127.0.0.1:"), "{audited}");

    // And so does `ACL LOG`, as for RESP's refusals.
    let mut con = server.client();
    let _: () = redis::cmd("AUTH").arg("admin").arg("adminpw").query(&mut con).expect("AUTH");
    let log: Vec<redis::Value> = redis::cmd("ACL").arg("LOG").query(&mut con).expect("ACL LOG");
    let entries = format!("{log:?}");
    assert!(
        entries.contains("amqp") && entries.contains("alice") && entries.contains("auth"),
        "ACL LOG has the refused AMQP login: {entries}"
    );

    // The right password logs in.
    let conn = connect(&url(&server, "alice", "alicepw")).await.expect("alice logs in");
    conn.close(200, "bye".into()).await.expect("close");
}

#[tokio::test]
async fn a_user_limited_to_app_queues_is_refused_the_others_in_rabbitmqs_words() {
    let (server, _dir) = TestServer::start_with_config(USERS, &[]);
    let conn = connect(&url(&server, "alice", "alicepw")).await.expect("alice logs in");

    // Her own queue: declare, publish (default exchange, confirmed), get, consume.
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    ch.queue_declare("app.x".into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect("declare app.x");
    for body in [&b"one"[..], b"two"] {
        let confirm = ch
            .basic_publish(
                "".into(),
                "app.x".into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack(), "publish to app.x confirmed");
    }
    let got =
        ch.basic_get("app.x".into(), BasicGetOptions::default()).await.expect("get").expect("a message");
    assert_eq!(got.delivery.data, b"one");
    got.delivery.ack(BasicAckOptions::default()).await.expect("ack");
    let _consumer = ch
        .basic_consume("app.x".into(), "c".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume app.x");

    // Another queue: the declare is refused, and the channel closed with RabbitMQ's text.
    let other = conn.create_channel().await.expect("channel");
    let err = other
        .queue_declare("other".into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect_err("declare other refused");
    assert_eq!(
        refusal(&err),
        (403, "ACCESS_REFUSED - access to queue 'other' in vhost '/' refused for user 'alice'".to_owned())
    );
    assert!(!other.status().connected(), "the refused channel is closed");

    // Publishing to it through the default exchange: the channel is closed with the same words.
    let other = conn.create_channel().await.expect("channel");
    other.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let published = other
        .basic_publish(
            "".into(),
            "other".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await;
    let err = match published {
        Ok(confirm) => confirm.await.expect_err("publish to other refused"),
        Err(e) => e,
    };
    assert_eq!(
        refusal(&err),
        (403, "ACCESS_REFUSED - access to queue 'other' in vhost '/' refused for user 'alice'".to_owned())
    );

    // An exchange outside her patterns is refused by name.
    let other = conn.create_channel().await.expect("channel");
    let err = other
        .exchange_declare(
            "audit.events".into(),
            lapin::ExchangeKind::Fanout,
            lapin::options::ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("declare audit.events refused");
    assert_eq!(
        refusal(&err),
        (
            403,
            "ACCESS_REFUSED - access to exchange 'audit.events' in vhost '/' refused for user 'alice'"
                .to_owned()
        )
    );

    // Consuming another queue (declared by someone allowed to) is refused the same way.
    let admin = connect(&url(&server, "admin", "adminpw")).await.expect("admin logs in");
    let ach = admin.create_channel().await.expect("channel");
    ach.queue_declare("other".into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect("admin declares other");
    let other = conn.create_channel().await.expect("channel");
    let err = other
        .basic_consume("other".into(), "c".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect_err("consume other refused");
    assert_eq!(refusal(&err).0, 403, "{err}");

    // The connection and the allowed channel are still fine.
    assert!(conn.status().connected() && ch.status().connected());
    ch.queue_declare("app.y".into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect("alice still declares her queues");
}

#[tokio::test]
async fn guest_from_loopback_works_while_authentication_is_off() {
    let server = TestServer::start();
    let conn = connect(&url(&server, "guest", "guest")).await.expect("guest logs in from loopback");
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_declare("anything".into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect("guest has every queue");
    // Authentication off: the default user has no password, but an AMQP login always names a
    // user with one, as before.
    let err = connect(&url(&server, "default", "whatever")).await.expect_err("default refused");
    assert_eq!(refusal(&err).0, 403);
    let err = connect(&url(&server, "guest", "wrong")).await.expect_err("wrong guest password refused");
    assert_eq!(refusal(&err).0, 403);
}

#[tokio::test]
async fn a_users_max_connections_are_enforced_and_freed_on_close() {
    let (server, _dir) = TestServer::start_with_config(USERS, &[]);
    let first = connect(&url(&server, "capped", "cappedpw")).await.expect("first");
    let second = connect(&url(&server, "capped", "cappedpw")).await.expect("second");
    let err = connect(&url(&server, "capped", "cappedpw")).await.expect_err("third refused");
    assert_eq!(
        refusal(&err),
        (
            530,
            "NOT_ALLOWED - access to vhost '/' refused for user 'capped': user connection limit (2) is reached \
             (max-connections)"
                .to_owned()
        )
    );
    // Another user is not counted against it.
    let alice = connect(&url(&server, "alice", "alicepw")).await.expect("alice is not capped's");
    let mut con = server.client();
    let _: () = redis::cmd("AUTH").arg("admin").arg("adminpw").query(&mut con).expect("AUTH");
    assert_eq!(common::info_u64(&mut con, "stats", "user_connections_refused"), 1);

    // A closed connection frees its place (once the server has seen it go).
    first.close(200, "bye".into()).await.expect("close");
    let mut third = None;
    for _ in 0..100 {
        match connect(&url(&server, "capped", "cappedpw")).await {
            Ok(conn) => {
                third = Some(conn);
                break;
            }
            Err(e) => {
                assert_eq!(refusal(&e).0, 530);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(third.is_some(), "a third connection once the first closed");
    drop((second, alice));
}
