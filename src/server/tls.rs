//! rustls server configuration: PEM certificate chain and key, ALPN h2 + http/1.1, ring provider.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// Why TLS could not be set up; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.cert `{0}`: {1}")]
    Cert(String, String),
    #[error("tls.key `{0}`: {1}")]
    Key(String, String),
    #[error("tls: {0}")]
    Config(#[from] rustls::Error),
}

/// Loads the certificate chain and key and builds the server config.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_name = cert.display().to_string();
    let key_name = key.display().to_string();
    let cert_pem =
        std::fs::read(cert).map_err(|e| TlsError::Cert(cert_name.clone(), e.to_string()))?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert(cert_name.clone(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Cert(cert_name, "no PEM certificate found".into()));
    }
    let key_pem = std::fs::read(key).map_err(|e| TlsError::Key(key_name.clone(), e.to_string()))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| TlsError::Key(key_name.clone(), e.to_string()))?
        .ok_or_else(|| TlsError::Key(key_name, "no PEM private key found".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
