//! `turnstile cluster ...`: the group of cluster commands. The members' (`status`, `add`, `remove`,
//! `transfer-leader`) are in `membership.rs` and go over RESP through any node; backups are here
//! and go over a node's HTTP API (`--http`).
//!
//! ```text
//!  snapshot save FILE ─► GET /api/cluster/snapshot ─► FILE.tmp (as it arrives) ─► fsync
//!                     ─► checksum and framing checked from disk ─► rename to FILE ─► fsync the dir
//! ```

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use turnstile_storage::{format_cluster_id, verify_backup};

use crate::output::print;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    #[command(flatten)]
    Members(crate::membership::ClusterCommand),
    /// Backups of the whole state, taken from a running node.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save a consistent backup of the whole state to FILE: every write acknowledged before this
    /// command began is in it. The file is checked (checksum) before it takes its name. Start a
    /// new node from it with `turnstile server --restore FILE --data-dir NEW`.
    Save(SaveArgs),
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Where to write the backup (written to FILE.tmp first, then renamed).
    pub file: PathBuf,
    /// The node's HTTP address (its --http-addr); in a cluster, the leader's.
    #[arg(long, env = "TURNSTILE_HTTP", value_name = "HOST:PORT", default_value = "127.0.0.1:7380")]
    pub http: String,
}

pub async fn snapshot(
    command: SnapshotCommand,
    credentials: Option<turnstile_client::Credentials>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match command {
        SnapshotCommand::Save(args) => save(&args.http, &args.file, credentials.as_ref(), json).await,
    }
}

/// What `snapshot save` prints.
#[derive(Debug, Serialize)]
struct Saved {
    file: String,
    index: u64,
    bytes: u64,
    cluster_id: String,
    created_at_ms: u64,
}

async fn save(
    http: &str,
    file: &Path,
    credentials: Option<&turnstile_client::Credentials>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let response = get(http, "/api/cluster/snapshot", credentials).await?;
    let temp = TempFile::new(file);
    let mut out =
        File::create(&temp.path).with_context(|| format!("cannot create {}", temp.path.display()))?;
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.with_context(|| format!("receiving the snapshot from {http}"))?;
        if let Ok(data) = frame.into_data() {
            out.write_all(&data).with_context(|| format!("writing {}", temp.path.display()))?;
        }
    }
    out.sync_all().with_context(|| format!("fsync of {}", temp.path.display()))?;
    drop(out);
    // Read back from the disk, not from what was received: what is checked is what is kept.
    let (header, bytes) = verify_backup(&temp.path)
        .with_context(|| format!("the snapshot received from {http} is not valid"))?;
    temp.keep_as(file)?;
    let saved = Saved {
        file: file.display().to_string(),
        index: header.index,
        bytes,
        cluster_id: format_cluster_id(header.cluster_id),
        created_at_ms: header.created_at,
    };
    print(json, &saved, || {
        format!(
            "saved {}: log index {}, {} bytes, cluster {}",
            saved.file, saved.index, saved.bytes, saved.cluster_id
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// `FILE.tmp`, deleted unless it is renamed to `FILE`: a failed save leaves neither.
struct TempFile {
    path: PathBuf,
    kept: bool,
}

impl TempFile {
    fn new(file: &Path) -> TempFile {
        let mut name = file.as_os_str().to_owned();
        name.push(".tmp");
        TempFile { path: PathBuf::from(name), kept: false }
    }

    /// Renames it to `file` and fsyncs the directory, so that the name survives a crash too.
    fn keep_as(mut self, file: &Path) -> anyhow::Result<()> {
        fs::rename(&self.path, file)
            .with_context(|| format!("renaming {} to {}", self.path.display(), file.display()))?;
        self.kept = true;
        let dir = match file.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .with_context(|| format!("fsync of directory {}", dir.display()))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A GET on a connection of its own; a status other than 200 is an error with the API's message.
async fn get(
    addr: &str,
    path: &str,
    credentials: Option<&turnstile_client::Credentials>,
) -> anyhow::Result<Response<Incoming>> {
    let stream =
        tokio::net::TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP to {addr}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "HTTP connection ended");
        }
    });
    let mut request = Request::get(path).header(hyper::header::HOST, addr);
    if let Some(credentials) = credentials {
        use base64::Engine;
        let user = credentials.user.as_deref().unwrap_or("default");
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", credentials.password));
        request = request.header(hyper::header::AUTHORIZATION, format!("Basic {basic}"));
    }
    let request = request.body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await.with_context(|| format!("GET {path} on {addr}"))?;
    if response.status() == StatusCode::OK {
        return Ok(response);
    }
    let status = response.status();
    let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    match serde_json::from_slice::<ApiError>(&body) {
        Ok(error) => bail!("{addr} refused GET {path}: {} ({}, HTTP {status})", error.message, error.code),
        Err(_) => bail!("{addr} answered GET {path} with HTTP {status}: {}", String::from_utf8_lossy(&body)),
    }
}

/// The API's error body.
#[derive(Debug, serde::Deserialize)]
struct ApiError {
    code: String,
    message: String,
}
