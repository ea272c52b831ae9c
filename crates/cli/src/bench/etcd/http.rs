//! Just enough HTTP/1.1 for etcd's JSON gateway: a POST with a JSON body on a kept-alive
//! connection, and a response read from its status line, headers and body (Content-Length,
//! chunked, or up to the connection's close).
//!
//! ```text
//!  post ─► "POST path HTTP/1.1" + Host + Content-Length + body ─► write
//!       ◄─ read until parse_response says complete: status, body, whether the connection stays
//! ```
//!
//! A hand-written client rather than a general one: the bench sends three kinds of request to one
//! server, and a loop of a few lines over a `TcpStream` costs the bench less CPU per op (it shares
//! the cores with the servers it measures) than a client built for everything.

use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most a status line and headers may take: etcd sends well under 1 KiB.
const MAX_HEAD: usize = 64 * 1024;

/// The most a body may take: etcd's replies here are a few hundred bytes.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// What a server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
    /// Whether the connection may carry the next request (not `Connection: close`, not
    /// HTTP/1.0 without keep-alive, not a body that ended with the connection).
    pub(crate) keep_alive: bool,
}

/// One kept-alive HTTP/1.1 connection, one request at a time.
#[derive(Debug)]
pub(crate) struct HttpConnection {
    stream: TcpStream,
    /// `Host:` of every request: the address connected to.
    host: String,
    /// What was read and not yet parsed into a response.
    buf: Vec<u8>,
    /// Set while a request is out and when the server will not take another; an exchange cut
    /// short (an error, or a caller's timeout dropping it midway) leaves it set.
    broken: bool,
}

impl HttpConnection {
    pub(crate) async fn connect(addr: &str, timeout: Duration) -> anyhow::Result<HttpConnection> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(stream) => stream.with_context(|| format!("connection to {addr} failed"))?,
            Err(_) => {
                bail!("connection to {addr} failed: no answer within {}", humantime::format_duration(timeout))
            }
        };
        // Requests are small and each waits for its answer: send them at once.
        stream.set_nodelay(true)?;
        Ok(HttpConnection { stream, host: addr.to_owned(), buf: Vec::with_capacity(4096), broken: false })
    }

    /// Whether the connection is unusable: the caller opens another.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    /// `POST path` with a JSON body; the response, whatever its status.
    pub(crate) async fn post_json(&mut self, path: &str, body: &[u8]) -> anyhow::Result<Response> {
        ensure!(!self.broken, "connection to {} is closed", self.host);
        self.broken = true;
        let request = post_request(&self.host, path, body);
        self.stream.write_all(&request).await.with_context(|| format!("POST {path} to {}", self.host))?;
        loop {
            if let Some((response, used)) = parse_response(&self.buf, false)? {
                self.buf.drain(..used);
                self.broken = !response.keep_alive;
                return Ok(response);
            }
            let read = self.stream.read_buf(&mut self.buf).await;
            if read.with_context(|| format!("POST {path} to {}", self.host))? == 0 {
                // The server closed: a body that runs to the close is complete now.
                return match parse_response(&self.buf, true)? {
                    Some((response, _)) => Ok(response),
                    None => Err(anyhow!("{} closed the connection before answering POST {path}", self.host)),
                };
            }
        }
    }
}

/// The bytes of a POST with a JSON body.
fn post_request(host: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// Parses one response from the start of `buf`: `None` until all of it is there, then the
/// response and how many bytes it took. `eof`: the server has closed, so a body with neither a
/// length nor chunks ends here. Interim (1xx) responses are skipped.
pub(crate) fn parse_response(buf: &[u8], eof: bool) -> anyhow::Result<Option<(Response, usize)>> {
    let Some(head_len) = find(buf, b"\r\n\r\n") else {
        ensure!(buf.len() <= MAX_HEAD, "a response head longer than {MAX_HEAD} bytes");
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_len]).context("a response head that is not text")?;
    let body_start = head_len + 4;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let (version, status) = parse_status_line(status_line)?;
    if (100..200).contains(&status) {
        return Ok(parse_response(&buf[body_start..], eof)?.map(|(r, used)| (r, body_start + used)));
    }
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut keep_alive = version == "HTTP/1.1";
    for line in lines {
        let (name, value) =
            line.split_once(':').ok_or_else(|| anyhow!("a response header without a colon: {line:?}"))?;
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            let parsed: usize = value.parse().map_err(|_| anyhow!("a bad Content-Length: {value:?}"))?;
            ensure!(length.is_none_or(|l| l == parsed), "two different Content-Lengths");
            length = Some(parsed);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding is the one that frames the body.
            chunked = value.rsplit(',').next().is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    let rest = &buf[body_start..];
    let (body, used) = if status == 204 || status == 304 {
        (Vec::new(), 0)
    } else if chunked {
        match parse_chunked(rest)? {
            Some(parsed) => parsed,
            None => return Ok(None),
        }
    } else if let Some(length) = length {
        ensure!(length <= MAX_BODY, "a response body of {length} bytes, more than {MAX_BODY}");
        if rest.len() < length {
            return Ok(None);
        }
        (rest[..length].to_vec(), length)
    } else if eof {
        keep_alive = false;
        (rest.to_vec(), rest.len())
    } else {
        ensure!(rest.len() <= MAX_BODY, "a response body of more than {MAX_BODY} bytes");
        return Ok(None);
    };
    Ok(Some((Response { status, body, keep_alive }, body_start + used)))
}

/// `HTTP/1.1 200 OK` → ("HTTP/1.1", 200).
fn parse_status_line(line: &str) -> anyhow::Result<(&str, u16)> {
    let mut parts = line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let bad = || anyhow!("not an HTTP/1 status line: {:?}", super::super::report::shorten(line));
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(bad());
    }
    let status = code.parse().map_err(|_| bad())?;
    Ok((version, status))
}

/// A chunked body: `SIZE[;ext]\r\n DATA\r\n` … `0\r\n` then trailer lines up to an empty one.
/// `None` until the last chunk and the trailers are all there; then the body and the bytes used.
fn parse_chunked(buf: &[u8]) -> anyhow::Result<Option<(Vec<u8>, usize)>> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(line_len) = find(&buf[at..], b"\r\n") else { return Ok(None) };
        let line = std::str::from_utf8(&buf[at..at + line_len]).context("a chunk size that is not text")?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| anyhow!("a bad chunk size: {line:?}"))?;
        at += line_len + 2;
        if size == 0 {
            // Trailers (etcd sends one), each a line, up to an empty line.
            loop {
                let Some(line_len) = find(&buf[at..], b"\r\n") else { return Ok(None) };
                at += line_len + 2;
                if line_len == 0 {
                    return Ok(Some((body, at)));
                }
            }
        }
        ensure!(body.len().saturating_add(size) <= MAX_BODY, "a response body of more than {MAX_BODY} bytes");
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[at..at + size]);
        ensure!(&buf[at + size..at + size + 2] == b"\r\n", "a chunk not followed by CRLF");
        at += size + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What etcd 3.4's gateway sent for a lock on a lease that does not exist: chunked, with a
    /// trailer.
    const ETCD_CHUNKED: &[u8] = b"HTTP/1.1 500 Internal Server Error\r\n\
        Content-Type: application/json\r\nTrailer: Grpc-Trailer-Content-Type\r\n\
        Date: Sun, 06 Dec 2026 16:33:35 GMT\r\nTransfer-Encoding: chunked\r\n\r\n\
        6c\r\n{\"error\":\"etcdserver: requested lease not found\",\"message\":\"etcdserver: \
        requested lease not found\",\"code\":2}\r\n0\r\nGrpc-Trailer-Content-Type: application/grpc\r\n\r\n";

    const LENGTH: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 11\r\n\r\n{\"key\":\"a\"}";

    #[test]
    fn a_body_with_a_content_length() {
        let (response, used) = parse_response(LENGTH, false).unwrap().unwrap();
        assert_eq!(response, Response { status: 200, body: b"{\"key\":\"a\"}".to_vec(), keep_alive: true });
        assert_eq!(used, LENGTH.len());
    }

    #[test]
    fn a_chunked_body_with_a_trailer() {
        let (response, used) = parse_response(ETCD_CHUNKED, false).unwrap().unwrap();
        assert_eq!(response.status, 500);
        assert_eq!(response.body.len(), 0x6c);
        assert!(response.body.starts_with(b"{\"error\":\"etcdserver: requested lease not found\""));
        assert!(response.keep_alive);
        assert_eq!(used, ETCD_CHUNKED.len());

        let several = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
                        3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n";
        let (response, used) = parse_response(several, false).unwrap().unwrap();
        assert_eq!(response.body, b"abc0123456789");
        assert_eq!(used, several.len());
    }

    #[test]
    fn every_cut_short_response_is_incomplete() {
        for whole in [LENGTH, ETCD_CHUNKED] {
            for cut in 0..whole.len() {
                assert_eq!(parse_response(&whole[..cut], false).unwrap(), None, "cut at {cut}");
            }
        }
    }

    #[test]
    fn the_next_response_is_left_in_the_buffer() {
        let two = [LENGTH, ETCD_CHUNKED].concat();
        let (first, used) = parse_response(&two, false).unwrap().unwrap();
        assert_eq!(first.status, 200);
        let (second, rest) = parse_response(&two[used..], false).unwrap().unwrap();
        assert_eq!((second.status, used + rest), (500, two.len()));
    }

    #[test]
    fn interim_responses_are_skipped() {
        let buf = [b"HTTP/1.1 100 Continue\r\n\r\n".as_slice(), LENGTH].concat();
        let (response, used) = parse_response(&buf, false).unwrap().unwrap();
        assert_eq!((response.status, used), (200, buf.len()));
    }

    #[test]
    fn whether_the_connection_stays_open() {
        let keep = |head: &str| parse_response(head.as_bytes(), false).unwrap().unwrap().0.keep_alive;
        assert!(!keep("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keep("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(keep("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"));
        assert!(keep("HTTP/1.1 204 No Content\r\n\r\n"));
    }

    #[test]
    fn a_body_without_a_length_runs_to_the_close() {
        let buf = b"HTTP/1.1 200 OK\r\n\r\n{\"a\":1}";
        assert_eq!(parse_response(buf, false).unwrap(), None);
        let (response, used) = parse_response(buf, true).unwrap().unwrap();
        assert_eq!(
            (response.body.as_slice(), response.keep_alive, used),
            (b"{\"a\":1}".as_slice(), false, buf.len())
        );
    }

    #[test]
    fn what_is_not_http_is_an_error() {
        for bad in [
            "SSH-2.0-OpenSSH\r\n\r\n",
            "HTTP/2 200\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc\r\n",
        ] {
            assert!(parse_response(bad.as_bytes(), false).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_response(&vec![b'x'; MAX_HEAD + 1], false).is_err());
    }

    #[test]
    fn a_post_says_its_length_and_host() {
        let request = post_request("127.0.0.1:2379", "/v3/lock/lock", b"{}");
        assert_eq!(
            request,
            b"POST /v3/lock/lock HTTP/1.1\r\nHost: 127.0.0.1:2379\r\nContent-Type: application/json\r\n\
              Content-Length: 2\r\n\r\n{}"
        );
    }

    /// Two requests on one connection to a server that answers the first with a length and the
    /// second in chunks, each read in small pieces; a third finds the connection closed.
    #[tokio::test]
    async fn one_connection_carries_requests_until_the_server_closes_it() -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await?;
            let mut seen = Vec::new();
            for answer in [LENGTH, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nok\r\n0\r\n\r\n"] {
                let mut request = vec![0; 4096];
                let n = socket.read(&mut request).await?;
                seen.push(String::from_utf8_lossy(&request[..n]).into_owned());
                for piece in answer.chunks(7) {
                    socket.write_all(piece).await?;
                    socket.flush().await?;
                    tokio::task::yield_now().await;
                }
            }
            anyhow::Ok(seen)
        });
        let mut conn = HttpConnection::connect(&addr, Duration::from_secs(5)).await?;
        let first = conn.post_json("/one", b"{\"a\":1}").await?;
        assert_eq!((first.status, first.body.as_slice()), (200, b"{\"key\":\"a\"}".as_slice()));
        assert!(!conn.is_broken());
        let second = conn.post_json("/two", b"{}").await?;
        assert_eq!(second.body, b"ok");
        assert!(conn.is_broken(), "the server said close");
        assert!(conn.post_json("/three", b"{}").await.is_err());
        let seen = server.await??;
        assert!(
            seen[0].starts_with("POST /one HTTP/1.1\r\n") && seen[0].ends_with("\r\n\r\n{\"a\":1}"),
            "{seen:?}"
        );
        assert!(seen[1].starts_with("POST /two HTTP/1.1\r\n"), "{seen:?}");
        Ok(())
    }
}
