//! What a provider trusts: the system roots plus the configured extra CA; and
//! the plain HTTP client of the OAuth2 token endpoint. The push connections
//! themselves are [`super::connections`].

use super::error::BuildError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// A client certificate chain and its key, presented to the provider.
pub(crate) type ClientIdentity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The system's CA certificates, and those of `ca_file` in addition (PEM);
/// the error says what is wrong with the file.
pub(crate) fn root_store(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    let Some(path) = ca_file else {
        return Ok(roots);
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: bad PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The rustls configuration of provider `id`: system roots, and `ca_file`
/// certificates trusted in addition; `client` is presented when the server
/// asks for a certificate (APNs certificate auth).
pub(crate) fn tls_config(
    id: &str,
    ca_file: Option<&Path>,
    client: Option<ClientIdentity>,
) -> Result<rustls::ClientConfig, BuildError> {
    let roots = root_store(ca_file).map_err(|e| BuildError::new(id, "ca_file", e))?;
    if roots.is_empty() {
        warn!(
            provider = id,
            "no trusted CA certificates found: install ca-certificates or set ca_file"
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // With a client certificate, TLS 1.2: the server judges the certificate
    // inside the handshake, so a refusal is the handshake's error. In 1.3 it
    // arrives after, and a request on the new connection may see only a
    // broken pipe instead of the server's alert.
    let versions: &[&rustls::SupportedProtocolVersion] = match client {
        Some(_) => &[&rustls::version::TLS12],
        None => rustls::DEFAULT_VERSIONS,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| BuildError::new(id, "endpoint", format!("TLS set-up: {e}")))?
        .with_root_certificates(roots);
    match client {
        None => Ok(builder.with_no_client_auth()),
        // The error says what does not fit (a key that is not the
        // certificate's, an unsupported key type), never the key itself.
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| {
            BuildError::new(id, "cert_key_file", format!("unusable with cert_file: {e}"))
        }),
    }
}

/// A reqwest client over `tls` (from [`tls_config`]), for the OAuth2 token
/// endpoint: ALPN offers HTTP/2 and 1.1.
pub(crate) fn token_client(
    id: &str,
    mut tls: rustls::ClientConfig,
    timeout: Duration,
) -> Result<reqwest::Client, BuildError> {
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        // The token_uri is the service account's word; a redirect elsewhere
        // would carry the signed grant to whoever answers there.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout)
        .timeout(timeout)
        .build()
        .map_err(|e| BuildError::new(id, "endpoint", format!("HTTP client: {e}")))
}
