//! TLS for SSL listeners, with rustls: the server certificate and key from
//! PEM files, optional client certificates checked against a CA file
//! (Kafka's `ssl.client.auth`), the client's principal `User:<CN>`, and
//! reloading the files on SIGHUP or when they change on disk.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tracing::{error, info, warn};

/// Kafka's principal for a connection that proved no identity.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// A client that has not finished its handshake by then is dropped, so a
/// silent peer cannot hold a connection slot.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the certificate files' modification times are checked.
pub const POLL_INTERVAL: Duration = Duration::from_secs(3);

/// Kafka's `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    #[default]
    None,
    /// Asked for; a client without one connects as ANONYMOUS.
    Requested,
    Required,
}

impl FromStr for ClientAuth {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(ClientAuth::None),
            "requested" => Ok(ClientAuth::Requested),
            "required" => Ok(ClientAuth::Required),
            _ => Err(format!("ssl_client_auth must be none, requested or required, got `{s}`")),
        }
    }
}

/// The PEM files (librdkafka's `ssl.*.location` names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: {detail}", path.display())]
    Pem { path: PathBuf, detail: String },
    #[error("{}: no PEM certificate in it", .0.display())]
    NoCertificate(PathBuf),
    #[error("ssl_client_auth={0:?} needs ssl_ca_location")]
    NoCa(ClientAuth),
    #[error("client certificate verification: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { path: path.to_path_buf(), detail: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem { path: path.to_path_buf(), detail: format!("no usable private key: {e}") })
}

/// Builds a rustls server config from the files. The ring provider is named
/// explicitly so another crate enabling aws-lc-rs cannot make the choice
/// ambiguous. rustls deprecates ring's provider for lacking post-quantum key
/// exchange; ring avoids aws-lc's C build, and the Kafka clients in use
/// (OpenSSL 3.0, Java) do not offer that exchange yet.
#[allow(deprecated)]
pub fn load(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match (files.client_auth, &files.ca) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (auth, None) => return Err(TlsError::NoCa(auth)),
        (auth, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca)? {
                roots.add(cert)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth == ClientAuth::Requested { verifier.allow_unauthenticated() } else { verifier };
            builder.with_client_cert_verifier(verifier.build()?)
        }
    };
    let config = builder.with_single_cert(certificates(&files.certificate)?, private_key(&files.key)?)?;
    Ok(Arc::new(config))
}

/// Kafka's default principal for a certificate: `User:<subject CN>`, or the
/// whole subject when it has no CN.
pub fn principal(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let name = match subject.iter_common_name().next().and_then(|cn| cn.as_str().ok()) {
        Some(cn) => cn.to_string(),
        None => subject.to_string(),
    };
    Some(format!("User:{name}"))
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake not finished within {}s", HANDSHAKE_TIMEOUT.as_secs())]
    Timeout,
    #[error("TLS handshake failed: {0}")]
    Failed(#[from] std::io::Error),
}

/// The live TLS settings of the SSL listeners; new connections use the
/// config last loaded successfully.
pub struct TlsState {
    files: TlsFiles,
    current: RwLock<Arc<rustls::ServerConfig>>,
    /// Modification times at the last load attempt, good or bad, so a bad
    /// file is reported once rather than at every poll.
    stamps: Mutex<Vec<Option<SystemTime>>>,
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState").field("files", &self.files).finish_non_exhaustive()
    }
}

impl TlsState {
    /// Loads the files; an error here stops the broker's start.
    pub fn new(files: TlsFiles) -> Result<Arc<TlsState>, TlsError> {
        let stamps = stamps(&files);
        let config = load(&files)?;
        Ok(Arc::new(TlsState { files, current: RwLock::new(config), stamps: Mutex::new(stamps) }))
    }

    /// Loads the files again; on failure the previous config stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        *self.stamps.lock() = stamps(&self.files);
        let config = load(&self.files)?;
        *self.current.write() = config;
        Ok(())
    }

    fn changed_on_disk(&self) -> bool {
        *self.stamps.lock() != stamps(&self.files)
    }

    /// Runs the handshake; answers the stream and the client's principal.
    pub async fn accept(&self, stream: TcpStream) -> Result<(TlsStream<TcpStream>, String), HandshakeError> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.current.read().clone());
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await.map_err(|_| HandshakeError::Timeout)??;
        let principal = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(principal)
            .unwrap_or_else(|| ANONYMOUS.to_string());
        Ok((stream, principal))
    }
}

fn stamps(files: &TlsFiles) -> Vec<Option<SystemTime>> {
    [Some(&files.certificate), Some(&files.key), files.ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// Reloads the certificates on SIGHUP and when the files change (polled).
/// Runs until aborted.
pub async fn keep_fresh(tls: Arc<TlsState>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP; certificates reload only when their files change");
            None
        }
    };
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    loop {
        let cause = tokio::select! {
            _ = tick.tick() => {
                let t = tls.clone();
                if !tokio::task::spawn_blocking(move || t.changed_on_disk()).await.unwrap_or(false) {
                    continue;
                }
                "files changed"
            }
            _ = next_hangup(&mut hangup) => "SIGHUP",
        };
        let t = tls.clone();
        match tokio::task::spawn_blocking(move || t.reload()).await {
            Ok(Ok(())) => info!(cause, "TLS certificates reloaded"),
            Ok(Err(e)) => error!(cause, error = %e, "TLS certificates not reloaded; keeping the previous ones"),
            Err(e) => error!(cause, error = %e, "TLS reload task failed; keeping the previous certificates"),
        }
    }
}

async fn next_hangup(hangup: &mut Option<tokio::signal::unix::Signal>) {
    let fired = match hangup {
        Some(s) => s.recv().await.is_some(),
        None => false,
    };
    if !fired {
        // No handler, or its stream ended: never fires again.
        std::future::pending::<()>().await;
    }
}
