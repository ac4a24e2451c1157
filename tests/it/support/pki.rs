//! The throw-away CA and provider keys, shared with `pushgate-bench`, and the
//! APNs client certificates of the certificate-auth tests.

#[path = "../../../src/bin/pushgate-bench/pki.rs"]
mod shared;

pub use shared::TestPki;

use rcgen::{CertificateParams, DnType, Issuer, KeyPair};
use std::path::{Path, PathBuf};

/// The OID of a subject's UID (where Apple puts the bundle id).
const UID: &[u64] = &[0, 9, 2342, 19_200_300, 100, 1, 1];
/// Apple's topics extension.
const TOPICS: &[u64] = &[1, 2, 840, 113_635, 100, 6, 3, 6];

/// Who signs a client certificate.
pub enum Signer<'a> {
    /// The test CA the mock APNs trusts.
    TestCa(&'a TestPki),
    /// A CA nobody trusts.
    Stranger,
}

/// A client certificate and key written as PEM files.
pub struct ClientCert {
    /// The certificate.
    pub cert_file: PathBuf,
    /// Its key.
    pub key_file: PathBuf,
}

impl ClientCert {
    /// The provider keys of PEM certificate auth.
    pub fn pem_keys(&self) -> String {
        format!(
            "cert_file = \"{}\"\ncert_key_file = \"{}\"",
            self.cert_file.display(),
            self.key_file.display()
        )
    }

    /// Packs the certificate and key into a PKCS#12 file protected by
    /// `password`, encrypted with the legacy 3DES of older Keychain exports
    /// or with AES-256; returns its path.
    pub fn to_p12(&self, password: &str, legacy: bool) -> PathBuf {
        use rustls::pki_types::pem::PemObject as _;
        let cert = rustls::pki_types::CertificateDer::from_pem_file(&self.cert_file).expect("cert");
        let key =
            rustls::pki_types::PrivatePkcs8KeyDer::from_pem_file(&self.key_file).expect("key");
        let chain = p12_keystore::PrivateKeyChain::new(
            key.secret_pkcs8_der(),
            [1u8, 2, 3, 4],
            [p12_keystore::Certificate::from_der(cert.as_ref()).expect("cert")],
        );
        let mut store = p12_keystore::KeyStore::new();
        store.add_entry("apns", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        let algorithm = if legacy {
            p12_keystore::EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc
        } else {
            p12_keystore::EncryptionAlgorithm::PbeWithHmacSha256AndAes256
        };
        let data = store
            .writer(password)
            .encryption_algorithm(algorithm)
            .write()
            .expect("PKCS#12");
        let path = self
            .cert_file
            .with_extension(if legacy { "legacy.p12" } else { "p12" });
        std::fs::write(&path, data).expect("write .p12");
        path
    }
}

/// An APNs-style client certificate for `uid` (subject UID, and the topics
/// extension listing it and its `.voip` topic), signed by `signer`, valid
/// until `not_after` (year, month, day), written under `dir` as `name`.
pub fn client_cert(
    dir: &Path,
    name: &str,
    signer: Signer<'_>,
    uid: &str,
    not_after: (i32, u8, u8),
) -> ClientCert {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, format!("Apple Push Services: {uid}"));
    params
        .distinguished_name
        .push(DnType::CustomDnType(UID.to_vec()), uid);
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
        TOPICS,
        topics_extension(&[uid, &format!("{uid}.voip")]),
    )];
    let cert = match signer {
        Signer::TestCa(pki) => {
            let ca_key = KeyPair::from_pem(&pki.ca.2).expect("CA key");
            let issuer = Issuer::new(pki.ca.1.clone(), ca_key);
            params.signed_by(&key, &issuer).expect("sign")
        }
        Signer::Stranger => {
            let ca_key = KeyPair::generate().expect("key");
            let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
            ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            ca.distinguished_name
                .push(DnType::CommonName, "someone else's CA");
            let issuer = Issuer::new(ca, ca_key);
            params.signed_by(&key, &issuer).expect("sign")
        }
    };
    let cert_file = dir.join(format!("{name}.pem"));
    let key_file = dir.join(format!("{name}.key"));
    std::fs::write(&cert_file, cert.pem()).expect("cert");
    std::fs::write(&key_file, key.serialize_pem()).expect("key");
    ClientCert {
        cert_file,
        key_file,
    }
}

/// DER of Apple's topics extension: SEQUENCE { UTF8String topic, SEQUENCE { UTF8String kind } … }.
fn topics_extension(topics: &[&str]) -> Vec<u8> {
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 128 {
            out.push(len as u8);
        } else {
            out.extend([0x81, len as u8]);
        }
        out.extend_from_slice(content);
        out
    }
    let mut items = Vec::new();
    for topic in topics {
        items.extend(tlv(0x0c, topic.as_bytes()));
        items.extend(tlv(0x30, &tlv(0x0c, b"app")));
    }
    tlv(0x30, &items)
}

impl TestPki {
    /// The mock's TLS configuration when it demands a client certificate
    /// issued by the test CA, as APNs does for certificate auth.
    pub fn server_tls_requiring_client_cert(&self) -> rustls::ServerConfig {
        use rustls::pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        let ca = rustls::pki_types::CertificateDer::from_pem_slice(self.ca.0.as_bytes())
            .expect("CA PEM");
        roots.add(ca).expect("CA");
        let verifier = rustls::server::WebPkiClientVerifier::builder(roots.into())
            .build()
            .expect("verifier");
        let cert =
            rustls::pki_types::CertificateDer::from_pem_slice(self.server_cert_pem.as_bytes())
                .expect("server cert");
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes())
            .expect("server key");
        let mut tls = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert], key)
            .expect("server TLS");
        tls.alpn_protocols = vec![b"h2".to_vec()];
        tls
    }
}
