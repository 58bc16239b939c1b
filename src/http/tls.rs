//! HTTPS served directly: the certificate chain and private key read from PEM files (`server.tls`), rustls with
//! the ring provider, HTTP/1.1 only. Built with the `tls` feature; without it a configured certificate is refused
//! at start rather than served as plain HTTP.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the server's certificate and key are (`[server.tls]`). Absent by default: plain HTTP, for a service
/// behind a TLS-terminating proxy on the same host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls: this build has no TLS support (build with the `tls` feature)")]
    NotBuilt,
    #[error("tls certificate {path}: cannot be read")]
    Certificate {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("tls certificate {path}: holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("tls key {path}: cannot be read")]
    Key {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("tls: certificate and key are refused")]
    Refused {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl From<TlsError> for std::io::Error {
    fn from(e: TlsError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
    }
}

#[cfg(feature = "tls")]
pub(super) type Acceptor = tokio_rustls::TlsAcceptor;

/// The acceptor for `config`, or none for plain HTTP.
#[cfg(feature = "tls")]
pub(super) fn acceptor(config: Option<&TlsConfig>) -> Result<Option<Acceptor>, TlsError> {
    use std::sync::Arc;

    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;

    let Some(config) = config else { return Ok(None) };
    let cert_error = |source: rustls_pki_types::pem::Error| TlsError::Certificate { path: config.cert.clone(), source: source.into() };
    let chain = CertificateDer::pem_file_iter(&config.cert)
        .map_err(cert_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(cert_error)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: config.cert.clone() });
    }
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| TlsError::Key { path: config.key.clone(), source: e.into() })?;
    let refused = |e: rustls::Error| TlsError::Refused { source: e.into() };
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(refused)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(refused)?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))))
}

/// Without the `tls` feature there is never an acceptor.
#[cfg(not(feature = "tls"))]
#[derive(Debug, Clone)]
pub(super) enum Acceptor {}

#[cfg(not(feature = "tls"))]
impl Acceptor {
    pub(super) async fn accept(&self, _stream: tokio::net::TcpStream) -> std::io::Result<tokio::net::TcpStream> {
        match *self {}
    }
}

#[cfg(not(feature = "tls"))]
pub(super) fn acceptor(config: Option<&TlsConfig>) -> Result<Option<Acceptor>, TlsError> {
    match config {
        None => Ok(None),
        Some(_) => Err(TlsError::NotBuilt),
    }
}
