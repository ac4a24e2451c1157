//! The HTTP/2 clients of a provider: system roots plus the configured extra CA,
//! ALPN h2 only, PING keepalive on idle connections, and a fixed set of
//! connections that can each be replaced after a failure.

use super::error::BuildError;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
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
    build_client(id, tls_config(id, ca_file)?, timeout, h2_only)
}

/// The rustls configuration: system roots and `ca_file`.
fn tls_config(id: &str, ca_file: Option<&Path>) -> Result<rustls::ClientConfig, BuildError> {
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
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BuildError::new(id, "endpoint", format!("TLS set-up: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A reqwest client over `tls`. Each client keeps its own connection pool, which
/// for an HTTP/2-only client is one multiplexed connection per host.
fn build_client(
    id: &str,
    mut tls: rustls::ClientConfig,
    timeout: Duration,
    h2_only: bool,
) -> Result<reqwest::Client, BuildError> {
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

/// `n` HTTP/2 connections to one provider, used in turn. A connection that failed
/// (transport error, GOAWAY, 5xx) is replaced by a fresh client: its in-flight
/// requests finish on the old one, new requests open a new connection.
pub(crate) struct Connections {
    id: String,
    tls: rustls::ClientConfig,
    timeout: Duration,
    slots: Vec<Mutex<reqwest::Client>>,
    next: AtomicUsize,
}

impl Connections {
    /// Builds `n` clients for provider `id`.
    pub(crate) fn new(
        id: &str,
        ca_file: Option<&Path>,
        timeout: Duration,
        n: usize,
    ) -> Result<Self, BuildError> {
        let tls = tls_config(id, ca_file)?;
        let slots = (0..n.max(1))
            .map(|_| build_client(id, tls.clone(), timeout, true).map(Mutex::new))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            id: id.to_owned(),
            tls,
            timeout,
            slots,
            next: AtomicUsize::new(0),
        })
    }

    /// The next connection, round robin, and its slot for [`Connections::renew`].
    pub(crate) fn pick(&self) -> (usize, reqwest::Client) {
        // `slots` is never empty (`new` makes at least one), so the index is in range.
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let client = self.slots[slot]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        (slot, client)
    }

    /// Replaces the client of `slot`, so the next request on it reconnects.
    pub(crate) fn renew(&self, slot: usize) {
        let Some(fresh) = self.fresh() else { return };
        if let Some(m) = self.slots.get(slot) {
            *m.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
        }
    }

    fn fresh(&self) -> Option<reqwest::Client> {
        match build_client(&self.id, self.tls.clone(), self.timeout, true) {
            Ok(client) => Some(client),
            Err(e) => {
                warn!(provider = %self.id, "cannot build a new HTTP client: {e}");
                None
            }
        }
    }
}
