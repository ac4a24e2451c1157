//! The HTTPS server configuration.

use super::HttpError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// A rustls server config from PEM files.
pub(super) fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, HttpError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|iter| iter.collect::<Result<_, _>>())
        .map_err(|e| HttpError::Tls {
            key: "http.tls_cert_file",
            message: format!("{}: {e}", cert.display()),
        })?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| HttpError::Tls {
        key: "http.tls_key_file",
        message: format!("{}: {e}", key.display()),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| HttpError::Tls {
        key: "http.tls_cert_file",
        message: e.to_string(),
    })?
    .with_no_client_auth()
    .with_single_cert(certs, key_der)
    .map_err(|e| HttpError::Tls {
        key: "http.tls_key_file",
        message: e.to_string(),
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
