//! Direct TLS on the component connection (ejabberd's `ejabberd_service`
//! with `tls: true`; XEP-0114 itself has no STARTTLS). Without it the link
//! carries every notification and account name readable, and the handshake
//! is a SHA-1 of the secret and a server-chosen id: fine on loopback or a
//! private network, not across one.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

/// The reading half of a component connection, plain or TLS.
pub(crate) type ReadHalf = Box<dyn AsyncRead + Send + Sync + Unpin>;
/// The writing half of a component connection, plain or TLS.
pub(crate) type WriteHalf = Box<dyn AsyncWrite + Send + Sync + Unpin>;

/// How to wrap a server's connection in TLS.
pub(crate) struct ComponentTls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for ComponentTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ComponentTls({:?})", self.name)
    }
}

impl ComponentTls {
    /// TLS to a server verified as `name` against the system's CAs and
    /// `ca_file`'s; the error says which part is wrong.
    pub(crate) fn new(name: &str, ca_file: Option<&Path>) -> Result<Self, String> {
        let roots = crate::providers::tls::root_store(ca_file)?;
        if roots.is_empty() {
            return Err(
                "no trusted CA certificates: install ca-certificates or set ca_file".into(),
            );
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(name.to_owned())
            .map_err(|_| format!("{name:?} is not a host name or address to verify"))?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// Runs the TLS handshake over `tcp`.
    pub(crate) async fn wrap(&self, tcp: TcpStream) -> std::io::Result<(ReadHalf, WriteHalf)> {
        let tls = self.connector.connect(self.name.clone(), tcp).await?;
        let (read, write) = tokio::io::split(tls);
        Ok((Box::new(read), Box::new(write)))
    }
}

/// A plain connection's halves.
pub(crate) fn plain(tcp: TcpStream) -> (ReadHalf, WriteHalf) {
    let (read, write) = tcp.into_split();
    (Box::new(read), Box::new(write))
}

/// Whether `host` stays on this machine (a plaintext link there is safe).
pub(crate) fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in ["localhost", "127.0.0.1", "127.9.9.9", "::1", "[::1]"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["xmpp.example.com", "10.0.0.5", "prosody", "::2"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn a_bad_ca_file_or_name_is_said() {
        let missing = ComponentTls::new("xmpp.example.com", Some(Path::new("/nonexistent.pem")));
        assert!(missing.is_err_and(|e| e.contains("/nonexistent.pem")));
        let bad_name = ComponentTls::new("bad name!", None);
        assert!(bad_name.is_err_and(|e| e.contains("bad name!")));
    }
}
