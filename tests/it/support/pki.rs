//! A throw-away CA, a server certificate for 127.0.0.1/localhost, and provider keys.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::{Path, PathBuf};

/// Key material written into a temporary directory.
pub struct TestPki {
    /// The CA certificate (PEM) to hand to the gateway as `ca_file`.
    pub ca_file: PathBuf,
    /// Server certificate chain (PEM).
    pub server_cert_pem: String,
    /// Server private key (PEM).
    pub server_key_pem: String,
    /// APNs `.p8` key file.
    pub apns_key_file: PathBuf,
    /// The APNs key's public half (PEM), to verify JWTs.
    pub apns_public_pem: String,
    /// FCM service-account JSON.
    pub service_account_file: PathBuf,
}

impl TestPki {
    /// Generates everything under `dir`. `token_uri` goes into the service account.
    pub fn generate(dir: &Path, token_uri: &str) -> Self {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "pushgate test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().expect("server key");
        let server_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .expect("server cert");

        let ca_file = dir.join("test-ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).expect("write CA");
        let apns_key = KeyPair::generate().expect("APNs key");
        let apns_key_file = dir.join("AuthKey_TESTKEY01.p8");
        std::fs::write(&apns_key_file, apns_key.serialize_pem()).expect("write p8");
        let sa_key = include_str!("../../fixtures/test-service-account-key.pem");
        let service_account = serde_json::json!({
            "type": "service_account",
            "project_id": "test-project",
            "private_key_id": "k1",
            "private_key": sa_key,
            "client_email": "pushgate@test-project.iam.gserviceaccount.com",
            "token_uri": token_uri,
        });
        let service_account_file = dir.join("service-account.json");
        std::fs::write(&service_account_file, service_account.to_string()).expect("write SA");
        Self {
            ca_file,
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            apns_key_file,
            apns_public_pem: apns_key.public_key_pem(),
            service_account_file,
        }
    }
}
