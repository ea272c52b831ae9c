//! A server inside the calling process, on free loopback ports: what tests of the client
//! library and `turnstile bench`'s self-checks start, instead of each writing its own.

use std::net::SocketAddr;
use std::path::Path;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use turnstile_raft::Clock;

use crate::config::{Config, Fsync};
use crate::server::{Server, ServerError};

/// A running in-process server. [`Embedded::stop`] stops it gracefully; dropping it stops it
/// too (connections close as at any shutdown).
#[derive(Debug)]
pub struct Embedded {
    pub resp_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub amqp_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
}

impl Embedded {
    /// The defaults on `data_dir`, every listener on a free loopback port, and `fsync = never`
    /// (a test's writes need not reach the disk to be read back after a graceful stop).
    pub fn config(data_dir: &Path) -> Config {
        let free = SocketAddr::from(([127, 0, 0, 1], 0));
        Config {
            resp_addr: free,
            http_addr: free,
            amqp_addr: free,
            data_dir: data_dir.to_owned(),
            fsync: Fsync::Never,
            ..Config::default()
        }
    }

    /// Starts `config` with `clock` and serves it on a task of the current runtime.
    pub async fn start(config: Config, clock: Clock) -> Result<Embedded, ServerError> {
        let server = Server::start_with_clock(config, clock).await?;
        let (resp_addr, http_addr, amqp_addr) = (server.resp_addr(), server.http_addr(), server.amqp_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Ok(Embedded { resp_addr, http_addr, amqp_addr, stop: Some(stop), task: Some(task) })
    }

    /// Stops the server gracefully and waits until it has stopped.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => {
                task.await.map_err(|e| ServerError::Node(turnstile_raft::NodeError::Fatal(e.to_string())))?
            }
            None => Ok(()),
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
