//! TLS on the shared HTTP/gRPC port (rustls, with the aws-lc-rs provider the HTTP client already
//! uses). The certificate and key are read at start-up and again on [`TlsReloader::reload`] (the
//! binary calls it on SIGHUP), so a renewed certificate is served without a restart; connections
//! already open keep theirs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// `[tls]`: both set, or neither (plain HTTP).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

/// Why a certificate could not be (re)loaded. Names files, never their contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("[tls] needs both `cert` and `key`")]
    Incomplete,
    #[error("TLS certificate {path}: {why}")]
    Cert { path: PathBuf, why: String },
    #[error("TLS key {path}: {why}")]
    Key { path: PathBuf, why: String },
    #[error("TLS: the certificate and key cannot be used together: {0}")]
    Config(String),
}

/// The current TLS settings of a listener, replaceable while it serves.
pub struct TlsReloader {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for TlsReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsReloader")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl TlsReloader {
    /// `None` when no certificate is configured (plain HTTP).
    pub fn from_config(config: &TlsConfig) -> Result<Option<Arc<Self>>, TlsError> {
        match (&config.cert, &config.key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => {
                let server = load(cert, key)?;
                Ok(Some(Arc::new(Self {
                    cert: cert.clone(),
                    key: key.clone(),
                    current: RwLock::new(Arc::new(server)),
                })))
            }
            _ => Err(TlsError::Incomplete),
        }
    }

    /// Reads the certificate and key again; on failure the previous ones stay in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let server = Arc::new(load(&self.cert, &self.key)?);
        match self.current.write() {
            Ok(mut current) => *current = server,
            Err(poisoned) => *poisoned.into_inner() = server,
        }
        Ok(())
    }

    /// An acceptor with the current certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = match self.current.read() {
            Ok(current) => Arc::clone(&current),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        TlsAcceptor::from(config)
    }
}

fn load(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert.to_path_buf(),
            why: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Cert {
            path: cert.to_path_buf(),
            why: "no certificate in the file".into(),
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_path_buf(),
        why: e.to_string(),
    })?;
    let mut server = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    // gRPC needs HTTP/2; HTTP/1.1 stays for plain CDS Hooks clients.
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(server)
}
