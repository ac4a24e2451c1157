//! A throw-away CA, a server certificate for 127.0.0.1/localhost, and provider
//! keys: what a gateway needs to talk to a mock APNs/FCM over real TLS.
//!
//! Shared with the integration tests (`tests/it/support/pki.rs` includes this
//! file), so the bench and the tests trust their mocks the same way.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::io;
use std::path::{Path, PathBuf};

/// An RSA key for the mock FCM service account. ring cannot generate RSA keys,
/// so a fixed one is used; it signs only tokens sent to our own mocks.
const SERVICE_ACCOUNT_KEY: &str =
    include_str!("../../../tests/fixtures/test-service-account-key.pem");

/// Key material written into a directory.
pub struct TestPki {
    /// The CA certificate (PEM) to hand to the gateway as `ca_file`.
    pub ca_file: PathBuf,
    /// The CA certificate (PEM), its parameters and key (PEM): to issue more
    /// certificates (the tests' APNs client certificates).
    #[allow(dead_code)]
    pub ca: (String, CertificateParams, String),
    /// Server certificate (PEM), signed by the CA.
    pub server_cert_pem: String,
    /// Server private key (PEM).
    pub server_key_pem: String,
    /// APNs `.p8` key file.
    pub apns_key_file: PathBuf,
    /// The APNs key's public half (PEM), to verify JWTs.
    #[allow(dead_code)]
    pub apns_public_pem: String,
    /// FCM service-account JSON.
    pub service_account_file: PathBuf,
}

fn cert_error(e: rcgen::Error) -> io::Error {
    io::Error::other(e)
}

impl TestPki {
    /// Generates everything under `dir`. `token_uri` goes into the service account.
    pub fn generate(dir: &Path, token_uri: &str) -> io::Result<Self> {
        let ca_key = KeyPair::generate().map_err(cert_error)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "pushgate test CA");
        let ca_cert = ca_params.self_signed(&ca_key).map_err(cert_error)?;
        let ca = (ca_cert.pem(), ca_params.clone(), ca_key.serialize_pem());
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().map_err(cert_error)?;
        let server_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .map_err(cert_error)?;
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .map_err(cert_error)?;

        let ca_file = dir.join("test-ca.pem");
        std::fs::write(&ca_file, ca_cert.pem())?;
        let apns_key = KeyPair::generate().map_err(cert_error)?;
        let apns_key_file = dir.join("AuthKey_TESTKEY01.p8");
        std::fs::write(&apns_key_file, apns_key.serialize_pem())?;
        let service_account = serde_json::json!({
            "type": "service_account",
            "project_id": "test-project",
            "private_key_id": "k1",
            "private_key": SERVICE_ACCOUNT_KEY,
            "client_email": "pushgate@test-project.iam.gserviceaccount.com",
            "token_uri": token_uri,
        });
        let service_account_file = dir.join("service-account.json");
        std::fs::write(&service_account_file, service_account.to_string())?;
        Ok(Self {
            ca_file,
            ca,
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            apns_key_file,
            apns_public_pem: apns_key.public_key_pem(),
            service_account_file,
        })
    }

    /// A rustls server configuration (ALPN h2) with the server certificate.
    pub fn server_tls(&self) -> io::Result<rustls::ServerConfig> {
        let cert = pem_der(&self.server_cert_pem, "CERTIFICATE")?;
        let key = pem_der(&self.server_key_pem, "PRIVATE KEY")?;
        let mut tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![rustls::pki_types::CertificateDer::from(cert)],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
            )
            .map_err(io::Error::other)?;
        tls.alpn_protocols = vec![b"h2".to_vec()];
        Ok(tls)
    }
}

/// The DER bytes of the first `label` block of `pem`.
fn pem_der(pem: &str, label: &str) -> io::Result<Vec<u8>> {
    use base64::Engine as _;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let inner: String = pem
        .split(&begin)
        .nth(1)
        .and_then(|rest| rest.split(&end).next())
        .ok_or_else(|| io::Error::other(format!("no {label} block in PEM")))?
        .lines()
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(inner.trim())
        .map_err(io::Error::other)
}
