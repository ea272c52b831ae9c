//! TLS on every listener and between the nodes, against the real binary with clients nobody
//! here wrote: redis-cli and redis-py for RESP, pika for AMQPS, curl for HTTPS. Certificates
//! are made here with rcgen: a CA, the server's certificate (naming 127.0.0.1), clients'
//! certificates, and a second CA that nothing trusts.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{TestServer, free_loopback_addr, peers_required, run_to_exit, until};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// Certificates written as PEM files into a temporary dir.
struct Pki {
    dir: tempfile::TempDir,
}

/// A CA that can sign certificates.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: PathBuf,
}

/// A certificate and its key, as files.
struct Identity {
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        Pki { dir: tempfile::tempdir().expect("temp dir") }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca(&self, name: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("{name} CA"));
        let cert = params.self_signed(&key).expect("self-signed");
        let pem = self.path(&format!("{name}-ca.pem"));
        std::fs::write(&pem, cert.pem()).expect("write");
        Ca { issuer: Issuer::new(params, key), pem }
    }

    /// A certificate `ca` signs for `common_name`, naming 127.0.0.1 and localhost.
    fn identity(&self, ca: &Ca, file: &str, common_name: &str) -> Identity {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, common_name);
        let cert = params.signed_by(&key, &ca.issuer).expect("signed");
        let identity =
            Identity { cert: self.path(&format!("{file}.pem")), key: self.path(&format!("{file}.key")) };
        std::fs::write(&identity.cert, cert.pem()).expect("write");
        std::fs::write(&identity.key, key.serialize_pem()).expect("write");
        identity
    }
}

fn text(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn port(addr: &str) -> &str {
    addr.rsplit(':').next().expect("a port")
}

/// Whether `tool` runs here; in CI it must.
fn have(tool: &str, check: &[&str]) -> bool {
    let found = Command::new(tool).args(check).output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(!peers_required(), "{tool} is required in CI");
        eprintln!("skipped: {tool} is not installed");
    }
    found
}

/// `redis-cli --tls` against `addr` with the given extra flags; its stdout, or `None` on failure.
fn redis_cli(addr: &str, flags: &[&str], command: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", port(addr), "--tls"])
        .args(flags)
        .args(command)
        .output()
        .expect("redis-cli runs");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    // redis-cli prints connection errors and exits 1; a refused handshake may also show up as an
    // empty reply or an error line.
    (out.status.success() && !stdout.is_empty() && !stdout.starts_with("Could not connect")).then_some(stdout)
}

/// A server with a TLS listener for each protocol, certificate `server` and, given, `ca` for
/// client certificates.
fn tls_server(server: &Identity, client_ca: Option<&Path>) -> (TestServer, String, String, String) {
    let (resp, amqp, http) = (free_loopback_addr(), free_loopback_addr(), free_loopback_addr());
    let mut args = vec![
        "--tls-resp-addr",
        &resp,
        "--tls-amqp-addr",
        &amqp,
        "--tls-http-addr",
        &http,
        "--tls-cert",
        text(&server.cert),
        "--tls-key",
        text(&server.key),
    ];
    if let Some(ca) = client_ca {
        args.extend(["--tls-ca", text(ca)]);
    }
    let started = TestServer::start_with(&args);
    (started, resp.clone(), amqp.clone(), http.clone())
}

#[test]
fn redis_cli_and_redis_py_speak_resp_over_tls_and_the_plain_listener_sees_the_same_keys() {
    if !have("redis-cli", &["--version"]) || !have("python3", &["-c", "import redis"]) {
        return;
    }
    let pki = Pki::new();
    let ca = pki.ca("main");
    let server_id = pki.identity(&ca, "server", "turnstile");
    let (server, resp, _, _) = tls_server(&server_id, None);
    let ca_flags = ["--cacert", text(&ca.pem)];
    assert_eq!(redis_cli(&resp, &ca_flags, &["PING"]).as_deref(), Some("PONG"));
    assert_eq!(redis_cli(&resp, &ca_flags, &["SET", "tls:cli", "over-tls"]).as_deref(), Some("OK"));
    assert_eq!(redis_cli(&resp, &ca_flags, &["GET", "tls:cli"]).as_deref(), Some("over-tls"));
    // A client that does not trust the CA refuses the server's certificate.
    let other = pki.ca("other");
    assert_eq!(redis_cli(&resp, &["--cacert", text(&other.pem)], &["PING"]), None);

    let script = format!(
        "import redis\n\
         r = redis.Redis(host='127.0.0.1', port={port}, ssl=True, ssl_ca_certs={ca:?})\n\
         r.set('tls:py', 'from-python')\n\
         print(r.get('tls:cli').decode())\n",
        port = port(&resp),
        ca = text(&ca.pem),
    );
    let out = Command::new("python3").args(["-c", &script]).output().expect("python3 runs");
    assert!(out.status.success(), "redis-py failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "over-tls");
    let mut plain = server.client();
    let value: String = redis::cmd("GET").arg("tls:py").query(&mut plain).expect("GET");
    assert_eq!(value, "from-python");
}

#[test]
fn curl_reads_the_api_over_https_and_refuses_an_untrusted_certificate() {
    if !have("curl", &["--version"]) {
        return;
    }
    let pki = Pki::new();
    let ca = pki.ca("main");
    let (_server, _, _, http) = tls_server(&pki.identity(&ca, "server", "turnstile"), None);
    let url = format!("https://127.0.0.1:{}/api/cluster", port(&http));
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "20", "--cacert", text(&ca.pem), &url])
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("\"node_id\":1"), "{body}");
    // Without the CA, curl cannot verify the server (exit 60).
    let untrusted = Command::new("curl").args(["-sS", "--max-time", "20", &url]).output().expect("curl runs");
    assert_eq!(untrusted.status.code(), Some(60), "{}", String::from_utf8_lossy(&untrusted.stderr));
}

#[test]
fn pika_publishes_and_gets_over_amqps() {
    if !have("python3", &["-c", "import pika"]) {
        return;
    }
    let pki = Pki::new();
    let ca = pki.ca("main");
    let (_server, _, amqp, _) = tls_server(&pki.identity(&ca, "server", "turnstile"), None);
    let script = format!(
        "import ssl, pika\n\
         context = ssl.create_default_context(cafile={ca:?})\n\
         params = pika.ConnectionParameters(host='127.0.0.1', port={port}, \
             ssl_options=pika.SSLOptions(context, '127.0.0.1'))\n\
         connection = pika.BlockingConnection(params)\n\
         channel = connection.channel()\n\
         channel.queue_declare(queue='tls-jobs', durable=True)\n\
         channel.basic_publish(exchange='', routing_key='tls-jobs', body=b'sealed')\n\
         method, _, body = channel.basic_get(queue='tls-jobs', auto_ack=True)\n\
         print(body.decode())\n\
         connection.close()\n",
        ca = text(&ca.pem),
        port = port(&amqp),
    );
    let out = Command::new("python3").args(["-c", &script]).output().expect("python3 runs");
    assert!(out.status.success(), "pika failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "sealed");
}

#[test]
fn with_a_client_ca_a_client_without_a_certificate_is_refused_and_one_the_ca_signed_is_served() {
    if !have("redis-cli", &["--version"]) {
        return;
    }
    let pki = Pki::new();
    let ca = pki.ca("main");
    let (_server, resp, _, _) = tls_server(&pki.identity(&ca, "server", "turnstile"), Some(&ca.pem));
    assert_eq!(redis_cli(&resp, &["--cacert", text(&ca.pem)], &["PING"]), None);
    let client = pki.identity(&ca, "client", "billing-worker");
    let with_cert = ["--cacert", text(&ca.pem), "--cert", text(&client.cert), "--key", text(&client.key)];
    assert_eq!(redis_cli(&resp, &with_cert, &["PING"]).as_deref(), Some("PONG"));
    // A certificate another CA signed is refused too.
    let other = pki.ca("other");
    let stranger = pki.identity(&other, "stranger", "stranger");
    let with_stranger =
        ["--cacert", text(&ca.pem), "--cert", text(&stranger.cert), "--key", text(&stranger.key)];
    assert_eq!(redis_cli(&resp, &with_stranger, &["PING"]), None);
}

#[test]
fn sighup_reloads_the_certificate_and_a_connection_opened_before_keeps_working() {
    if !have("redis-cli", &["--version"]) || !have("python3", &["-c", "import redis"]) {
        return;
    }
    let pki = Pki::new();
    let (first, second) = (pki.ca("first"), pki.ca("second"));
    let live = Identity { cert: pki.path("live.pem"), key: pki.path("live.key") };
    let old = pki.identity(&first, "old", "turnstile");
    std::fs::copy(&old.cert, &live.cert).expect("copy");
    std::fs::copy(&old.key, &live.key).expect("copy");
    let (server, resp, _, _) = tls_server(&live, None);
    assert_eq!(redis_cli(&resp, &["--cacert", text(&first.pem)], &["PING"]).as_deref(), Some("PONG"));

    // A redis-py connection opened now, under the old certificate, used again after the reload.
    let script = format!(
        "import redis, sys\n\
         r = redis.Redis(host='127.0.0.1', port={port}, ssl=True, ssl_ca_certs={ca:?}, single_connection_client=True)\n\
         r.set('before', 'reload')\n\
         print('open', flush=True)\n\
         sys.stdin.readline()\n\
         r.set('after', 'reload')\n\
         print(r.get('before').decode(), flush=True)\n",
        port = port(&resp),
        ca = text(&first.pem),
    );
    let mut held = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut lines = BufReader::new(held.stdout.take().expect("stdout"));
    let mut line = String::new();
    lines.read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "open");

    // A broken file first: the reload is refused and the old certificate stays.
    std::fs::write(&live.cert, "not a certificate\n").expect("write");
    hangup(&server);
    let new = pki.identity(&second, "new", "turnstile");
    until("the old certificate is still served after a failed reload", Duration::from_secs(10), || {
        redis_cli(&resp, &["--cacert", text(&first.pem)], &["PING"]).as_deref() == Some("PONG")
    });
    std::fs::copy(&new.cert, &live.cert).expect("copy");
    std::fs::copy(&new.key, &live.key).expect("copy");
    hangup(&server);
    until("new handshakes get the certificate the second CA signed", Duration::from_secs(10), || {
        redis_cli(&resp, &["--cacert", text(&second.pem)], &["PING"]).as_deref() == Some("PONG")
    });
    assert_eq!(redis_cli(&resp, &["--cacert", text(&first.pem)], &["PING"]), None);

    held.stdin.take().expect("stdin").write_all(b"go\n").expect("write");
    line.clear();
    lines.read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "reload", "the connection opened before the reload stopped working");
    assert!(held.wait().expect("wait").success());
    let mut plain = server.client();
    let after: String = redis::cmd("GET").arg("after").query(&mut plain).expect("GET");
    assert_eq!(after, "reload");
}

fn hangup(server: &TestServer) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(server.pid()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
}

#[test]
fn a_certificate_file_that_cannot_be_used_refuses_the_start_naming_it() {
    let pki = Pki::new();
    let ca = pki.ca("main");
    let good = pki.identity(&ca, "server", "turnstile");
    let garbage = pki.path("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN NOTHING-----\n").expect("write");
    let dir = tempfile::tempdir().expect("temp dir");
    let resp = free_loopback_addr();
    let missing = pki.path("missing.key");
    let cases: [(&[&str], &str); 3] = [
        (&["--tls-cert", text(&garbage), "--tls-key", text(&good.key)], "garbage.pem"),
        (&["--tls-cert", text(&good.cert), "--tls-key", text(&missing)], "missing.key"),
        (&["--tls-cert", text(&good.cert)], "needs tls-key"),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["--tls-resp-addr", &resp];
        args.extend_from_slice(flags);
        let (status, output) = run_to_exit(dir.path(), &args, Duration::from_secs(30));
        assert!(status.is_some_and(|s| !s.success()), "started with {flags:?}: {output}");
        assert!(output.contains(expected), "{flags:?}: {output}");
    }
}

#[test]
fn a_cluster_with_tls_peer_replicates_and_a_node_of_another_ca_cannot_join() {
    let pki = Pki::new();
    let ca = pki.ca("cluster");
    let raft: Vec<String> = (0..3).map(|_| free_loopback_addr()).collect();
    let peers = raft.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect::<Vec<_>>().join(",");
    let nodes: Vec<TestServer> = (0..3)
        .map(|i| {
            let id = pki.identity(&ca, &format!("node{}", i + 1), &format!("node-{}", i + 1));
            let node_id = (i + 1).to_string();
            TestServer::start_with(&[
                "--node-id",
                &node_id,
                "--peers",
                &peers,
                "--election-timeout-ms",
                "500",
                "--tls-peer",
                "--tls-cert",
                text(&id.cert),
                "--tls-key",
                text(&id.key),
                "--tls-ca",
                text(&ca.pem),
            ])
        })
        .collect();
    let mut first = nodes[0].client();
    until("the cluster elects a leader and takes a write", Duration::from_secs(60), || {
        redis::cmd("SET").arg("replicated").arg("over-tls").query::<String>(&mut first).is_ok()
    });
    let mut third = nodes[2].client();
    until("the write reaches the third node", Duration::from_secs(30), || {
        redis::cmd("GET").arg("replicated").query::<Option<String>>(&mut third).ok().flatten().as_deref()
            == Some("over-tls")
    });

    // A fourth node whose certificate another CA signed (and which trusts only that CA).
    let other = pki.ca("other");
    let id = pki.identity(&other, "node4", "node-4");
    let dir = tempfile::tempdir().expect("temp dir");
    let own = free_loopback_addr();
    let (status, output) = run_to_exit(
        dir.path(),
        &[
            "--node-id",
            "4",
            "--raft-addr",
            &own,
            "--join",
            &raft[0],
            "--tls-peer",
            "--tls-cert",
            text(&id.cert),
            "--tls-key",
            text(&id.key),
            "--tls-ca",
            text(&other.pem),
        ],
        Duration::from_secs(60),
    );
    assert!(status.is_some_and(|s| !s.success()), "a node of another CA joined: {output}");
    assert!(output.contains("TLS handshake"), "{output}");
    let members = redis::cmd("GET").arg("replicated").query::<String>(&mut first).expect("GET");
    assert_eq!(members, "over-tls");
}
