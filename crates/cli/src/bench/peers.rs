//! The servers the bench's tests measure: a Turnstile server in this process, a `redis-server`
//! and an `etcd` they start, and a port where nothing answers.

use std::time::{Duration, Instant};

use turnstile_server::{Clock, Embedded};

/// A Turnstile server in this process ([`Embedded`]: free loopback ports, nothing fsynced) on a
/// temporary data dir that lives as long as it does. The bench measures real time, so the
/// server runs on the system clock.
pub(crate) struct TurnstileServer {
    pub(crate) resp_addr: std::net::SocketAddr,
    pub(crate) amqp_addr: std::net::SocketAddr,
    server: Embedded,
    _dir: tempfile::TempDir,
}

impl TurnstileServer {
    pub(crate) async fn start() -> anyhow::Result<TurnstileServer> {
        let dir = tempfile::tempdir()?;
        let server = Embedded::start(Embedded::config(dir.path()), Clock::system()).await?;
        Ok(TurnstileServer { resp_addr: server.resp_addr, amqp_addr: server.amqp_addr, server, _dir: dir })
    }

    /// Stops the server and waits until it has stopped; an error it stopped with fails the test.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        Ok(self.server.stop().await?)
    }
}

/// A loopback port nothing listens on, held (bound, never listening) while the socket lives:
/// a connect to it is refused, and no server another test starts meanwhile can take it (the
/// port of a dropped listener could be).
pub(crate) fn refused_port() -> (socket2::Socket, u16) {
    let held = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let loopback: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    held.bind(&loopback.into()).unwrap();
    let port = held.local_addr().unwrap().as_socket().unwrap().port();
    (held, port)
}

/// A `redis-server` this test started on a free port, stopped when dropped.
pub(crate) struct RedisServer {
    child: std::process::Child,
    pub(crate) port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// `None` when `redis-server` is not installed.
    pub(crate) async fn start() -> anyhow::Result<Option<RedisServer>> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let spawned = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let redis = RedisServer { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            anyhow::ensure!(Instant::now() < deadline, "redis-server did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Some(redis))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A one-member `etcd` this test started on free ports and a temp data dir, stopped when dropped.
pub(crate) struct EtcdServer {
    child: std::process::Child,
    /// HOST:PORT of its client URL (where the JSON gateway is).
    pub(crate) client_addr: String,
    _dir: tempfile::TempDir,
}

impl EtcdServer {
    /// `None` when `etcd` is not installed.
    pub(crate) async fn start() -> anyhow::Result<Option<EtcdServer>> {
        let dir = tempfile::tempdir()?;
        let free = || -> std::io::Result<u16> {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
        };
        let (client, peer) =
            (format!("http://127.0.0.1:{}", free()?), format!("http://127.0.0.1:{}", free()?));
        let spawned = std::process::Command::new("etcd")
            .args(["--name", "bench", "--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("bench={peer}")])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let client_addr = client.trim_start_matches("http://").to_owned();
        let etcd = EtcdServer { child, client_addr, _dir: dir };
        // Ready once it has elected itself and grants a lease.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match super::etcd::Session::open(&etcd.client_addr, Duration::from_secs(1)).await {
                Ok(session) => {
                    session.close(Duration::from_secs(5)).await;
                    return Ok(Some(etcd));
                }
                Err(e) => anyhow::ensure!(Instant::now() < deadline, "etcd did not get ready: {e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
