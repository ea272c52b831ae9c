//! The RESP (Redis protocol) front end: one [`connection::Connection`] per client, and what the
//! server says about itself (`INFO`, `HELLO`, `COMMAND`).

mod connection;
pub mod info;
mod transaction;

pub(crate) use connection::close_gone;

use std::sync::Arc;

use crate::listener::Admitted;
use crate::server::Shared;
use crate::shutdown::Shutdown;

/// Serves one admitted RESP connection until it closes.
pub async fn serve(admitted: Admitted, shared: Arc<Shared>, shutdown: Shutdown) {
    let Admitted { stream, peer, id, slot, tls } = admitted;
    // The verified client certificate's name is where a user can be taken from (not yet).
    if let Some(tls) = tls {
        tracing::debug!(%peer, client_name = ?tls.client_name, "resp client over TLS");
    }
    connection::Connection::new(stream, id, peer, shared).serve(peer, shutdown).await;
    drop(slot);
}
