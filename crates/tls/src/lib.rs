//! TLS for Turnstile's listeners and for the node-to-node transport: certificates and keys read
//! from PEM files, rustls configs with the `ring` provider (and no other, so no process-wide
//! default has to be chosen), and a server certificate that [`ServerTls::reload`] swaps in place.
//!
//! ```text
//!  --tls-cert, --tls-key ─► CertifiedKey ─► ReloadableCert ─┬─► ServerConfig (every TLS listener;
//!  --tls-ca (optional)  ─► RootCertStore ─► client verifier ┘     client certs required with a CA)
//!                                                           └─► ClientConfig (a node dialing a peer)
//!  SIGHUP ─► reload(): read the files again; new handshakes get the new certificate, open
//!            connections keep theirs; a bad file keeps the old one and says why
//! ```
//!
//! - `pem.rs`: reading the files, each error naming the file.
//! - `name.rs`: the common name of a certificate's subject (a short DER walk).
//! - `stream.rs`: [`MaybeTls`], one stream type for plain and TLS connections.

mod name;
mod pem;
mod stream;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig, SignatureScheme};
use tokio::net::TcpStream;

pub use name::common_name;
pub use pem::PemError;
pub use rustls::ClientConfig;
pub use stream::{MaybeTls, ReadHalf, WriteHalf};
pub use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

/// The certificate files of a node: its own chain and key, and optionally the CA its clients'
/// (and peers') certificates must be signed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the certificate chain, this node's own certificate first.
    pub cert: PathBuf,
    /// PEM: the private key of the first certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM: the CA certificates that sign the certificates clients must present. Unset: clients
    /// present none.
    pub ca: Option<PathBuf>,
}

/// Why a TLS setting cannot be used: the file it concerns is named.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf, source: rustls::Error },
    #[error("the key in {path} is of a kind this server cannot sign with")]
    Key { path: PathBuf, source: rustls::Error },
    #[error("the CA certificates in {path} cannot verify client certificates")]
    Ca { path: PathBuf, source: rustls::server::VerifierBuilderError },
    #[error("cannot use a certificate of {path}")]
    Root { path: PathBuf, source: rustls::Error },
    #[error("a peer's TLS needs a CA (tls-ca) to check the other nodes' certificates")]
    PeerWithoutCa,
    #[error("{0:?} is not a name or address a certificate can be checked against")]
    ServerName(String),
    #[error("TLS settings")]
    Config(#[source] rustls::Error),
}

/// The one crypto provider of every config built here. rustls marks ring's deprecated because
/// it lacks the post-quantum key exchange; ring is what this project builds with (a C-free
/// crypto crate, no large native build), and its classical key exchanges are what Redis's and
/// RabbitMQ's TLS clients offer today.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What was verified of a TLS connection's client, for whoever decides what it may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// The common name (CN) of the subject of the client's certificate, when it presented one
    /// (and so, with `tls-ca`, one the CA signed) and the subject has one.
    pub client_name: Option<String>,
}

impl TlsInfo {
    /// What the handshake of `connection` established.
    pub fn of(connection: &rustls::ServerConnection) -> TlsInfo {
        let client_name =
            connection.peer_certificates().and_then(|chain| chain.first()).and_then(|c| common_name(c));
        TlsInfo { client_name }
    }
}

/// The current certificate and key, swapped whole by [`ServerTls::reload`]: a handshake takes
/// the one current when it starts, and keeps it to the end.
#[derive(Debug)]
pub struct ReloadableCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = key;
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A node dialing a peer presents the same certificate as its listeners.
impl ResolvesClientCert for ReloadableCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The TLS side of a server's listeners: the config new handshakes use, rebuilt by
/// [`ServerTls::reload`].
pub struct ServerTls {
    files: TlsFiles,
    cert: Arc<ReloadableCert>,
    /// Rebuilt when the CA is read again; the certificate is swapped inside `cert` either way.
    config: RwLock<Arc<ServerConfig>>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").field("files", &self.files).finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the files; any that cannot be used refuses the whole, naming the file.
    pub fn load(files: TlsFiles) -> Result<ServerTls, TlsError> {
        let cert = Arc::new(ReloadableCert { current: RwLock::new(certified_key(&files)?) });
        let config = server_config(&files, cert.clone())?;
        Ok(ServerTls { files, cert, config: RwLock::new(config) })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// An acceptor for one handshake, with the certificate (and CA) current now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.read().unwrap_or_else(PoisonError::into_inner).clone())
    }

    /// Reads the certificate, key and CA again. On success new handshakes use them; connections
    /// already open are not touched. On failure nothing changes and the error says which file.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = certified_key(&self.files)?;
        // The CA first: a bad CA file must not leave a new certificate behind half a reload.
        let config = server_config(&self.files, self.cert.clone())?;
        self.cert.set(key);
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }

    /// The certificate the next handshake presents (its DER), for logs and tests.
    pub fn current_certificate(&self) -> rustls::pki_types::CertificateDer<'static> {
        self.cert.current().cert[0].clone()
    }

    /// The dialing side's config for a node's transport to its peers: the same certificate as a
    /// client certificate (reloaded with it), and the CA as the only trusted root. Needs the CA.
    pub fn peer_client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let ca = self.files.ca.as_deref().ok_or(TlsError::PeerWithoutCa)?;
        let roots = roots(ca)?;
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_root_certificates(roots)
            .with_client_cert_resolver(self.cert.clone());
        Ok(Arc::new(config))
    }
}

/// Both ends of a node's transport to its peers under mutual TLS: its listener's side and its
/// dialing side, with the same certificate and CA.
#[derive(Debug, Clone)]
pub struct PeerTls {
    server: Arc<ServerTls>,
    client: Arc<ClientConfig>,
}

impl PeerTls {
    /// Needs a CA: each node checks the other's certificate against it, both ways.
    pub fn new(server: Arc<ServerTls>) -> Result<PeerTls, TlsError> {
        let client = server.peer_client_config()?;
        Ok(PeerTls { server, client })
    }

    /// The listening side's handshake on an accepted connection.
    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<MaybeTls> {
        let stream = self.server.acceptor().accept(tcp).await?;
        Ok(MaybeTls::Tls(Box::new(stream.into())))
    }

    /// The dialing side's handshake on a connection to `addr` (`HOST:PORT`), whose certificate
    /// must name that host.
    pub async fn connect(&self, addr: &str, tcp: TcpStream) -> std::io::Result<MaybeTls> {
        let name = server_name(addr).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let stream = TlsConnector::from(self.client.clone()).connect(name, tcp).await?;
        Ok(MaybeTls::Tls(Box::new(stream.into())))
    }
}

/// A client's config that trusts only the CA certificates in `ca` (tools and tests).
pub fn client_config(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots(ca)?);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let files = TlsFiles { cert: cert.into(), key: key.into(), ca: None };
            let key = certified_key(&files)?;
            builder.with_client_cert_resolver(Arc::new(ReloadableCert { current: RwLock::new(key) }))
        }
    };
    Ok(Arc::new(config))
}

/// The name a dialed address's certificate must carry: the host part of `HOST:PORT` (an IP
/// address or a DNS name).
pub fn server_name(addr: &str) -> Result<ServerName<'static>, TlsError> {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|_| TlsError::ServerName(addr.to_owned()))
}

fn certified_key(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = pem::certificates(&files.cert)?;
    let key = pem::private_key(&files.key)?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::Key { path: files.key.clone(), source })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(source) => {
            return Err(TlsError::KeyMismatch { cert: files.cert.clone(), key: files.key.clone(), source });
        }
    }
    Ok(Arc::new(certified))
}

fn roots(ca: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in pem::certificates(ca)? {
        roots.add(cert).map_err(|source| TlsError::Root { path: ca.into(), source })?;
    }
    Ok(Arc::new(roots))
}

fn server_config(files: &TlsFiles, cert: Arc<ReloadableCert>) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let builder = match &files.ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
                .build()
                .map_err(|source| TlsError::Ca { path: ca.clone(), source })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    Ok(Arc::new(builder.with_cert_resolver(cert)))
}

#[cfg(test)]
mod tests;
