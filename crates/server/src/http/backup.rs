//! `GET /api/cluster/snapshot`: a backup of the whole state, sent as it is serialized.
//!
//! ```text
//!  Node::read ─► a copy of the state at a linearizable read point (State::snapshot_copy)
//!  blocking thread ─► BackupWriter: header (index, cluster id, now) ─► State::write_snapshot ─► trailer
//!                  ─► 1 MiB chunks ─► bounded channel ─► the response body (chunked)
//! ```
//!
//! The read point is the node's read path, so every write acknowledged before the request began is
//! in the backup. Memory: the copy is the state's maps, its payloads shared with the live state (as
//! for a snapshot); the serialized bytes are never held whole, only the few chunks the channel
//! holds, and the serializer waits while a slow client takes them. A client that goes away stops it.

use std::io::{self, BufWriter, Write};

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::Response;
use bytes::Bytes;
use tokio::sync::mpsc;
use turnstile_raft::{BackupHeader, BackupWriter, format_cluster_id};

use super::ApiError;
use super::client::Client;
use crate::server::Shared;

type App = std::sync::Arc<Shared>;

/// The size of the chunks the body is sent in.
const CHUNK_BYTES: usize = 1 << 20;
/// Chunks made and not yet sent: what a slow client makes the node hold.
const CHUNKS_AHEAD: usize = 4;
/// The serializer's small writes are gathered this much before they are checksummed.
const GATHER_BYTES: usize = 64 * 1024;

/// An admin action: a backup holds every user's data.
pub async fn snapshot(State(app): State<App>, client: Client) -> Result<Response, ApiError> {
    client.admin(&app, "backup", "backup snapshot")?;
    let (copy, index) = app.node.read(|state| (state.snapshot_copy(), state.applied_index())).await?;
    let header = BackupHeader { index, cluster_id: app.cluster_id, created_at: app.node.clock().now() };
    let (chunks, body) = mpsc::channel::<io::Result<Bytes>>(CHUNKS_AHEAD);
    tokio::task::spawn_blocking(move || {
        let sender = ChunkSender { chunks: chunks.clone(), buffer: Vec::with_capacity(CHUNK_BYTES), sent: 0 };
        let written = BackupWriter::new(sender, &header)
            .map(|backup| BufWriter::with_capacity(GATHER_BYTES, backup))
            .and_then(|gathered| copy.write_snapshot(gathered))
            .and_then(|gathered| gathered.into_inner().map_err(io::IntoInnerError::into_error))
            .and_then(BackupWriter::finish)
            .and_then(|mut sender| sender.flush().map(|()| sender.sent));
        // The copy goes here, off the runtime's threads.
        drop(copy);
        match written {
            Ok(bytes) => tracing::info!(index, bytes, "sent a backup"),
            Err(e) if chunks.is_closed() => tracing::info!(index, error = %e, "a backup's client went away"),
            // The body ends with an error: the client sees a cut-off transfer, never a short file.
            Err(e) => drop(chunks.blocking_send(Err(e))),
        }
    });
    let stream =
        futures_util::stream::unfold(
            body,
            |mut body| async move { body.recv().await.map(|chunk| (chunk, body)) },
        );
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_DISPOSITION, format!("attachment; filename=\"turnstile-{index}.snap\""))
        .header("x-turnstile-index", index)
        .header("x-turnstile-cluster-id", format_cluster_id(app.cluster_id))
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "ERR", e.to_string()))
}

/// Hands what is written to the response body in [`CHUNK_BYTES`] chunks, waiting while
/// [`CHUNKS_AHEAD`] are queued; fails once the body is gone.
struct ChunkSender {
    chunks: mpsc::Sender<io::Result<Bytes>>,
    buffer: Vec<u8>,
    /// Bytes handed to the body so far.
    sent: u64,
}

impl ChunkSender {
    fn send(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK_BYTES));
        self.sent += chunk.len() as u64;
        self.chunks
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        if self.buffer.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() { Ok(()) } else { self.send() }
    }
}
