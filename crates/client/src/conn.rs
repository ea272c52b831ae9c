//! One TCP connection speaking RESP2: commands out as arrays of bulk strings, replies in as
//! [`Frame`]s (parsed by `turnstile-resp`, the codec the server uses).
//!
//! A connection is also a server *session*: holds taken and messages popped on it (without
//! `KEEP`) end when it closes. That is why lock guards and consumers own their connection
//! instead of borrowing one from the pool.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use turnstile_resp::{Frame, parse_frame};
use turnstile_tls::MaybeTls;

use crate::error::{Error, Result};

/// One command: its name and arguments, each sent as a bulk string.
///
/// ```
/// use turnstile_client::Cmd;
///
/// let cmd = Cmd::new("Q.PUSH").arg("jobs").arg(&b"payload"[..]).arg("PRIORITY").arg(5u8);
/// assert_eq!(cmd.args().len(), 5);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    args: Vec<Bytes>,
}

impl Cmd {
    pub fn new(name: &str) -> Cmd {
        Cmd { args: vec![Bytes::copy_from_slice(name.as_bytes())] }
    }

    /// Appends one argument.
    #[must_use]
    pub fn arg(mut self, arg: impl Arg) -> Cmd {
        self.args.push(arg.into_bytes());
        self
    }

    /// Appends `keyword value` when `value` is there.
    #[must_use]
    pub fn opt(self, keyword: &str, value: Option<impl Arg>) -> Cmd {
        match value {
            Some(value) => self.arg(keyword).arg(value),
            None => self,
        }
    }

    /// Appends `keyword` when `on`.
    #[must_use]
    pub fn flag(self, keyword: &str, on: bool) -> Cmd {
        if on { self.arg(keyword) } else { self }
    }

    pub fn args(&self) -> &[Bytes] {
        &self.args
    }

    fn encode(&self, out: &mut BytesMut) {
        out.put_u8(b'*');
        out.put_slice(self.args.len().to_string().as_bytes());
        out.put_slice(b"\r\n");
        for arg in &self.args {
            out.put_u8(b'$');
            out.put_slice(arg.len().to_string().as_bytes());
            out.put_slice(b"\r\n");
            out.put_slice(arg);
            out.put_slice(b"\r\n");
        }
    }
}

/// What can be a command argument: text, bytes, integers, durations (as milliseconds).
pub trait Arg {
    fn into_bytes(self) -> Bytes;
}

impl Arg for &str {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self.as_bytes())
    }
}

impl Arg for String {
    fn into_bytes(self) -> Bytes {
        Bytes::from(self)
    }
}

impl Arg for &String {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self.as_bytes())
    }
}

impl Arg for &[u8] {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl Arg for Vec<u8> {
    fn into_bytes(self) -> Bytes {
        Bytes::from(self)
    }
}

impl Arg for Bytes {
    fn into_bytes(self) -> Bytes {
        self
    }
}

/// A duration goes on the wire as whole milliseconds (rounded up, so `1µs` is not `0` = "none").
impl Arg for Duration {
    fn into_bytes(self) -> Bytes {
        let ms = self.as_nanos().div_ceil(1_000_000);
        Bytes::from(ms.to_string())
    }
}

macro_rules! integer_args {
    ($($t:ty),*) => {$(
        impl Arg for $t {
            fn into_bytes(self) -> Bytes {
                Bytes::from(self.to_string())
            }
        }
    )*};
}
integer_args!(u8, u32, u64, usize, i64);

/// A connection to one server.
#[derive(Debug)]
pub struct Connection {
    addr: String,
    stream: MaybeTls,
    read: BytesMut,
    write: BytesMut,
    /// Set when an I/O or protocol error left the stream in an unknown place; the pool drops it.
    broken: bool,
}

impl Connection {
    /// Connects to one `HOST:PORT`, giving up after `timeout`.
    pub async fn connect(addr: &str, timeout: Duration) -> std::io::Result<Connection> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(Connection::over(addr, MaybeTls::Plain(stream)))
    }

    /// Connects to one `HOST:PORT` under TLS, trusting what `tls` trusts (see
    /// [`turnstile_tls::client_config`]); the server's certificate must name the host. The
    /// handshake counts in `timeout`.
    pub async fn connect_tls(
        addr: &str,
        timeout: Duration,
        tls: std::sync::Arc<turnstile_tls::ClientConfig>,
    ) -> std::io::Result<Connection> {
        let invalid = |e: turnstile_tls::TlsError| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        let name = turnstile_tls::server_name(addr).map_err(invalid)?;
        let stream = tokio::time::timeout(timeout, async {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let tls = turnstile_tls::TlsConnector::from(tls).connect(name, tcp).await?;
            Ok::<_, std::io::Error>(MaybeTls::Tls(Box::new(tls.into())))
        })
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
        Ok(Connection::over(addr, stream))
    }

    fn over(addr: &str, stream: MaybeTls) -> Connection {
        Connection {
            addr: addr.to_owned(),
            stream,
            read: BytesMut::with_capacity(16 * 1024),
            write: BytesMut::with_capacity(4 * 1024),
            broken: false,
        }
    }

    /// The address this connection went to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether an error left this connection unusable.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Marks the connection as not to be reused (it goes to a node that is not the leader).
    pub(crate) fn retire(&mut self) {
        self.broken = true;
    }

    /// Whether an idle connection is closed (or has unexpected bytes waiting): not to be reused.
    pub(crate) fn is_stale(&self) -> bool {
        // Under TLS, bytes waiting may be the server's session tickets, not a close: the next
        // command finds out instead.
        let MaybeTls::Plain(tcp) = &self.stream else { return false };
        let mut probe = [0u8; 1];
        !matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Sends one command and reads its reply. An error reply is `Err` ([`Error::from_reply`]).
    pub async fn call(&mut self, cmd: &Cmd) -> Result<Frame> {
        self.send(std::slice::from_ref(cmd)).await?;
        reply(self.receive().await?)
    }

    /// Sends all `cmds` in one write and reads their replies, in order: one round trip.
    /// The outer `Err` is a broken connection; each inner one is that command's error reply.
    pub async fn pipeline(&mut self, cmds: &[Cmd]) -> Result<Vec<Result<Frame>>> {
        self.send(cmds).await?;
        let mut replies = Vec::with_capacity(cmds.len());
        for _ in cmds {
            replies.push(reply(self.receive().await?));
        }
        Ok(replies)
    }

    /// Writes commands without waiting for replies; read them with [`Connection::receive`].
    pub async fn send(&mut self, cmds: &[Cmd]) -> Result<()> {
        self.write.clear();
        for cmd in cmds {
            cmd.encode(&mut self.write);
        }
        let written = self.stream.write_all(&self.write).await;
        written.map_err(|e| self.fail(e))
    }

    /// Reads the next reply, error replies included (as [`Frame::Error`]).
    pub async fn receive(&mut self) -> Result<Frame> {
        loop {
            match parse_frame(&self.read) {
                Ok(Some((frame, used))) => {
                    let _ = self.read.split_to(used);
                    return Ok(frame);
                }
                Ok(None) => {}
                Err(e) => {
                    self.broken = true;
                    return Err(Error::Protocol(e.to_string()));
                }
            }
            if self.read.capacity() - self.read.len() < 4096 {
                self.read.reserve(16 * 1024);
            }
            match self.stream.read_buf(&mut self.read).await {
                Ok(0) => {
                    let closed = std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "server closed the connection",
                    );
                    return Err(self.fail(closed));
                }
                Ok(_) => {}
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    fn fail(&mut self, source: std::io::Error) -> Error {
        self.broken = true;
        Error::Io { addr: self.addr.clone(), source }
    }
}

/// An error reply becomes the matching [`Error`]; anything else is the reply.
pub(crate) fn reply(frame: Frame) -> Result<Frame> {
    match frame {
        Frame::Error(text) => Err(Error::from_reply(&text)),
        frame => Ok(frame),
    }
}

impl Connection {
    /// Resolves when the server closes the connection (or it fails). For a connection with no
    /// request outstanding: a session whose end must be noticed at once. Cancel-safe.
    pub async fn closed(&mut self) {
        loop {
            if self.read.capacity() - self.read.len() < 512 {
                self.read.reserve(4096);
            }
            match self.stream.read_buf(&mut self.read).await {
                Ok(0) | Err(_) => {
                    self.broken = true;
                    return;
                }
                // Nothing is expected here; keep it for the next `receive` to judge.
                Ok(_) => {}
            }
        }
    }
}

/// Resolves when the connection closes; never, when there is none to watch.
pub(crate) async fn closed(conn: &mut Option<Connection>) {
    match conn {
        Some(conn) => conn.closed().await,
        None => std::future::pending().await,
    }
}
