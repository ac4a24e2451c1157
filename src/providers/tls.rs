//! The HTTP/2 client shared by a provider: system roots plus the configured extra
//! CA, ALPN h2 only, PING keepalive on idle connections.

use super::error::BuildError;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// Builds the client for provider `id`. `ca_file` certificates are trusted in
/// addition to the system's. With `h2_only` the client speaks HTTP/2 without
/// fallback (APNs, FCM send); otherwise ALPN picks HTTP/2 or 1.1 (OAuth2 endpoints).
pub(crate) fn http_client(
    id: &str,
    ca_file: Option<&Path>,
    timeout: Duration,
    h2_only: bool,
) -> Result<reqwest::Client, BuildError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| {
                BuildError::new(
                    id,
                    "ca_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?
            .collect::<Result<_, _>>()
            .map_err(|e| {
                BuildError::new(id, "ca_file", format!("{}: bad PEM: {e}", path.display()))
            })?;
        if certs.is_empty() {
            return Err(BuildError::new(
                id,
                "ca_file",
                format!("{} holds no certificate", path.display()),
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| BuildError::new(id, "ca_file", format!("{}: {e}", path.display())))?;
        }
    }
    if roots.is_empty() {
        warn!(
            provider = id,
            "no trusted CA certificates found: install ca-certificates or set ca_file"
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BuildError::new(id, "endpoint", format!("TLS set-up: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut builder = reqwest::Client::builder();
    if h2_only {
        tls.alpn_protocols = vec![b"h2".to_vec()];
        builder = builder.http2_prior_knowledge();
    } else {
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    builder
        .use_preconfigured_tls(tls)
        .http2_keep_alive_interval(Duration::from_secs(60))
        .http2_keep_alive_timeout(Duration::from_secs(20))
        .http2_keep_alive_while_idle(true)
        .connect_timeout(timeout)
        .timeout(timeout)
        .build()
        .map_err(|e| BuildError::new(id, "endpoint", format!("HTTP client: {e}")))
}
