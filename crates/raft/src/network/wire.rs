//! Frames: how one message is laid out on a node-to-node TCP connection.
//!
//! ```text
//!  0       4         5
//!  ┌───────┬─────────┬──────────────────────────────┐
//!  │ len   │ version │ postcard-encoded message     │   len = 1 + message bytes (u32, big-endian)
//!  └───────┴─────────┴──────────────────────────────┘
//! ```
//!
//! The version byte is in every frame, not only in the handshake, so a node that meets a peer of
//! another wire version says so plainly instead of failing to decode. A frame longer than the
//! reader's limit is refused as soon as its length is read, before any of it is buffered: the
//! limit is small until the handshake is done, so a stranger cannot make a node allocate much.
//!
//! [`encode`] and [`decode`] do no I/O and are tested byte by byte; [`FrameReader`] is the thin
//! async loop that feeds [`decode`] from a socket.

use bytes::{Buf, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The wire format this build speaks. Bump it when a message changes shape.
pub const VERSION: u8 = 1;

/// The most bytes after the length field (version byte included) a frame may have. A log
/// entry larger than this cannot be replicated; an append request of several entries that
/// exceeds it is sent in parts (see `client.rs`).
pub const MAX_FRAME: usize = 256 << 20;

/// The limit before the handshake is done: a hello and its answer are a few dozen bytes.
pub const MAX_HELLO_FRAME: usize = 4 << 10;

/// The most a [`FrameReader`] makes room for at once, while a frame is arriving.
const READ_STEP: usize = 1 << 20;

/// The length field and the version byte.
const HEADER: usize = 5;

/// Why a frame could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    TooLarge { len: usize, limit: usize },
    #[error("peer speaks wire version {got}, this node speaks {VERSION}")]
    Version { got: u8 },
    #[error("undecodable frame: {0}")]
    Decode(postcard::Error),
    #[error("frame has {0} bytes after its message")]
    Trailing(usize),
    #[error("unencodable message: {0}")]
    Encode(postcard::Error),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Encodes `msg` as one frame, refusing one longer than `limit`.
pub fn encode<T: Serialize>(msg: &T, limit: usize) -> Result<Vec<u8>, WireError> {
    let mut frame = postcard::to_extend(msg, vec![0u8; HEADER]).map_err(WireError::Encode)?;
    let len = frame.len() - 4;
    let too_large = WireError::TooLarge { len, limit };
    if len > limit {
        return Err(too_large);
    }
    let prefix = u32::try_from(len).map_err(|_| too_large)?;
    frame[..4].copy_from_slice(&prefix.to_be_bytes());
    frame[4] = VERSION;
    Ok(frame)
}

/// Takes one frame's message off the front of `buf`: `None` while the frame is incomplete (read
/// more and call again). A length over `limit` is refused before the frame's body arrives.
pub fn decode<T: DeserializeOwned>(buf: &mut BytesMut, limit: usize) -> Result<Option<T>, WireError> {
    let Some(prefix) = buf.first_chunk::<4>() else { return Ok(None) };
    // A u32 always fits in a usize on the targets Turnstile builds for (32 and 64 bits).
    let len = u32::from_be_bytes(*prefix) as usize;
    if len > limit {
        return Err(WireError::TooLarge { len, limit });
    }
    if len == 0 {
        return Err(WireError::Decode(postcard::Error::DeserializeUnexpectedEnd));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let version = buf[4];
    if version != VERSION {
        return Err(WireError::Version { got: version });
    }
    let body = &buf[HEADER..4 + len];
    let (msg, rest) = postcard::take_from_bytes(body).map_err(WireError::Decode)?;
    if !rest.is_empty() {
        return Err(WireError::Trailing(rest.len()));
    }
    buf.advance(4 + len);
    Ok(Some(msg))
}

/// Reads frames off one side of a connection.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    limit: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, limit: usize) -> FrameReader<R> {
        FrameReader { inner, buf: BytesMut::with_capacity(8 << 10), limit }
    }

    /// Raises (or lowers) the frame limit, once the handshake has said who is talking.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// The next message; `None` when the peer closed the connection between frames.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, WireError> {
        loop {
            if let Some(msg) = decode(&mut self.buf, self.limit)? {
                return Ok(Some(msg));
            }
            // Room for the rest of a large frame, read in few large reads rather than many small
            // ones; a step at a time, so a length alone does not make the buffer grow.
            if let Some(prefix) = self.buf.first_chunk::<4>() {
                let missing = (4 + u32::from_be_bytes(*prefix) as usize).saturating_sub(self.buf.len());
                self.buf.reserve(missing.min(READ_STEP));
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() { Ok(None) } else { Err(WireError::Truncated) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        id: u64,
        name: String,
    }

    fn sample() -> Sample {
        Sample { id: 300, name: "ab".into() }
    }

    /// The exact layout: length, version, then postcard (300 as a varint is `ac 02`).
    #[test]
    fn frame_layout() {
        let frame = encode(&sample(), MAX_FRAME).unwrap();
        assert_eq!(frame, [0, 0, 0, 6, VERSION, 0xac, 0x02, 2, b'a', b'b']);
    }

    #[test]
    fn round_trip_and_leaves_the_next_frame() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&encode(&sample(), MAX_FRAME).unwrap());
        buf.extend_from_slice(&encode(&Sample { id: 1, name: String::new() }, MAX_FRAME).unwrap());
        assert_eq!(decode::<Sample>(&mut buf, MAX_FRAME).unwrap(), Some(sample()));
        assert_eq!(
            decode::<Sample>(&mut buf, MAX_FRAME).unwrap(),
            Some(Sample { id: 1, name: String::new() })
        );
        assert!(buf.is_empty());
        assert_eq!(decode::<Sample>(&mut buf, MAX_FRAME).unwrap(), None);
    }

    /// Every prefix of a frame is "not yet": nothing is consumed, and the full frame decodes.
    #[test]
    fn truncated_frame_waits_for_more() {
        let frame = encode(&sample(), MAX_FRAME).unwrap();
        for cut in 0..frame.len() {
            let mut buf = BytesMut::from(&frame[..cut]);
            assert_eq!(decode::<Sample>(&mut buf, MAX_FRAME).unwrap(), None, "cut at {cut}");
            assert_eq!(buf.len(), cut, "nothing consumed at cut {cut}");
            buf.extend_from_slice(&frame[cut..]);
            assert_eq!(decode::<Sample>(&mut buf, MAX_FRAME).unwrap(), Some(sample()));
        }
    }

    /// An oversized length is refused from the 4 length bytes alone, without waiting for a body.
    #[test]
    fn oversized_length_is_refused() {
        let mut buf = BytesMut::from(&[0x01, 0x00, 0x00, 0x00][..]);
        match decode::<Sample>(&mut buf, MAX_HELLO_FRAME) {
            Err(WireError::TooLarge { len, limit }) => assert_eq!((len, limit), (1 << 24, MAX_HELLO_FRAME)),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn encode_refuses_over_the_limit() {
        let big = Sample { id: 1, name: "x".repeat(100) };
        assert!(matches!(encode(&big, 50), Err(WireError::TooLarge { len: 103, limit: 50 })));
    }

    #[test]
    fn other_version_is_named() {
        let mut frame = encode(&sample(), MAX_FRAME).unwrap();
        frame[4] = 7;
        let err = decode::<Sample>(&mut BytesMut::from(&frame[..]), MAX_FRAME).unwrap_err();
        assert_eq!(err.to_string(), format!("peer speaks wire version 7, this node speaks {VERSION}"));
    }

    #[test]
    fn trailing_bytes_and_garbage_are_refused() {
        let mut frame = encode(&sample(), MAX_FRAME).unwrap();
        frame.push(0);
        frame[3] += 1;
        assert!(matches!(
            decode::<Sample>(&mut BytesMut::from(&frame[..]), MAX_FRAME),
            Err(WireError::Trailing(1))
        ));
        let garbage = [0, 0, 0, 3, VERSION, 0xff, 0xff];
        assert!(matches!(
            decode::<Sample>(&mut BytesMut::from(&garbage[..]), MAX_FRAME),
            Err(WireError::Decode(_))
        ));
        let empty = [0, 0, 0, 0];
        assert!(matches!(
            decode::<Sample>(&mut BytesMut::from(&empty[..]), MAX_FRAME),
            Err(WireError::Decode(_))
        ));
    }

    #[tokio::test]
    async fn reader_reads_frames_split_anywhere_and_sees_the_end() {
        let mut bytes = encode(&sample(), MAX_FRAME).unwrap();
        bytes.extend(encode(&Sample { id: 2, name: "c".into() }, MAX_FRAME).unwrap());
        let (mut tx, rx) = tokio::io::duplex(3);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            tx.write_all(&bytes).await.unwrap();
        });
        let mut reader = FrameReader::new(rx, MAX_FRAME);
        assert_eq!(reader.next::<Sample>().await.unwrap(), Some(sample()));
        assert_eq!(reader.next::<Sample>().await.unwrap(), Some(Sample { id: 2, name: "c".into() }));
        writer.await.unwrap();
        assert_eq!(reader.next::<Sample>().await.unwrap(), None);
    }

    #[tokio::test]
    async fn reader_reports_a_frame_cut_by_the_close() {
        let frame = encode(&sample(), MAX_FRAME).unwrap();
        let mut reader = FrameReader::new(&frame[..frame.len() - 1], MAX_FRAME);
        assert!(matches!(reader.next::<Sample>().await, Err(WireError::Truncated)));
    }
}
