//! APNs certificate authentication: the client certificate an operator
//! exported from Apple (PEM certificate and key), and what it says about
//! itself: when it expires and which topics it may push to.

use super::error::BuildError;
use crate::clock::unix_secs;
use crate::config::ProviderConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use tracing::{info, warn};
use x509_parser::der_parser::ber::BerObjectContent;
use x509_parser::der_parser::parse_der;
use x509_parser::oid_registry::{OID_USERID, Oid};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Apple's extension listing the topics a certificate covers (bundle id,
/// `.voip`, `.complication`).
const TOPICS_OID: &[u64] = &[1, 2, 840, 113_635, 100, 6, 3, 6];

/// A loaded client certificate and key, and the facts read from the leaf.
pub(crate) struct ClientCertificate {
    /// Leaf first, then any intermediates, as presented in the TLS handshake.
    pub(crate) chain: Vec<CertificateDer<'static>>,
    /// The certificate's private key.
    pub(crate) key: PrivateKeyDer<'static>,
    /// `notAfter`, seconds since the Unix epoch.
    pub(crate) not_after: u64,
    /// `notAfter` as the certificate says it, for messages.
    pub(crate) not_after_text: String,
    /// The subject's UID: the app's bundle id, the default `apns-topic`.
    pub(crate) uid: Option<String>,
    /// The topics of Apple's topics extension, when the certificate has one.
    pub(crate) topics: Vec<String>,
    /// The key it came from (`cert_file`, `p12_file`), for messages.
    pub(crate) source: &'static str,
}

impl ClientCertificate {
    /// Reads `cert_file` and `cert_key_file` of provider `id`; every problem
    /// names the key it is about. The key's contents never reach a message.
    pub(crate) fn load(id: &str, cert_file: &Path, key_file: &Path) -> Result<Self, BuildError> {
        let chain = CertificateDer::pem_file_iter(cert_file)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                BuildError::new(
                    id,
                    "cert_file",
                    format!("{}: not a PEM certificate: {e}", cert_file.display()),
                )
            })?;
        let key = PrivateKeyDer::from_pem_file(key_file).map_err(|_| {
            BuildError::new(
                id,
                "cert_key_file",
                format!("{}: no PEM private key in it", key_file.display()),
            )
        })?;
        Self::assemble(chain, key, "cert_file").map_err(|why| {
            BuildError::new(id, "cert_file", format!("{}: {why}", cert_file.display()))
        })
    }

    /// Reads a PKCS#12 file (`p12_file`) with `password`. A wrong password is
    /// said to be wrong; the password itself is never in a message.
    pub(crate) fn load_p12(id: &str, file: &Path, password: &str) -> Result<Self, BuildError> {
        let bad =
            |why: String| BuildError::new(id, "p12_file", format!("{}: {why}", file.display()));
        let data = std::fs::read(file).map_err(|e| bad(format!("cannot read: {e}")))?;
        let store = p12_keystore::KeyStore::from_pkcs12(&data, password).map_err(|e| {
            bad(format!(
                "cannot open (wrong p12_password, or not a PKCS#12 file): {e}"
            ))
        })?;
        let (_, entry) = store
            .private_key_chain()
            .ok_or_else(|| bad("holds no private key with its certificate".to_owned()))?;
        let chain = entry
            .chain()
            .iter()
            .map(|c| CertificateDer::from(c.as_der().to_vec()))
            .collect();
        let key = PrivateKeyDer::Pkcs8(entry.key().to_vec().into());
        Self::assemble(chain, key, "p12_file").map_err(bad)
    }

    /// The certificate from its chain (leaf first) and key, with what the
    /// leaf says of itself; `source` is the key it was configured with.
    fn assemble(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        source: &'static str,
    ) -> Result<Self, String> {
        let leaf = chain.first().ok_or("holds no certificate")?;
        let (not_after, not_after_text, uid, topics) = read_leaf(leaf)?;
        Ok(Self {
            chain,
            key,
            not_after,
            not_after_text,
            uid,
            topics,
            source,
        })
    }

    /// The certificate `config` names, PEM or PKCS#12; `None` for token auth.
    pub(crate) fn of(config: &ProviderConfig) -> Option<Result<Self, BuildError>> {
        let id = config.id.as_str();
        if let (Some(cert), Some(key)) = (&config.cert_file, &config.cert_key_file) {
            return Some(Self::load(id, cert, key));
        }
        let file = config.p12_file.as_ref()?;
        Some(p12_password(config).and_then(|password| Self::load_p12(id, file, &password)))
    }

    /// The `apns-topic` of certificate auth: the configured topic, else the
    /// certificate's UID. An expired certificate stops the start here; a topic
    /// the certificate does not list is only a warning (Apple decides).
    pub(crate) fn topic(&self, id: &str, configured: Option<&str>) -> Result<String, BuildError> {
        let now = unix_secs();
        if self.not_after <= now {
            return Err(BuildError::new(
                id,
                self.source,
                format!("the certificate expired on {}", self.not_after_text),
            ));
        }
        let topic = match (configured, &self.uid) {
            (Some(topic), _) => topic.to_owned(),
            (None, Some(uid)) => uid.clone(),
            (None, None) => {
                return Err(BuildError::new(
                    id,
                    "topic",
                    "required: the certificate has no UID to take the topic from",
                ));
            }
        };
        if !self.covers(&topic) {
            warn!(
                provider = id,
                topic,
                "the APNs certificate does not list this topic; Apple will refuse its pushes"
            );
        }
        info!(provider = id, expires = %self.not_after_text, topic, "APNs certificate auth");
        Ok(topic)
    }

    /// Whether a push to `topic` is covered: the UID, or a topic of Apple's
    /// topics extension (which lists `.voip` and `.complication` topics too).
    pub(crate) fn covers(&self, topic: &str) -> bool {
        self.uid.as_deref() == Some(topic) || self.topics.iter().any(|t| t == topic)
    }
}

/// The `.p12` password: `p12_password`, else the first line of
/// `p12_password_file`, else none.
fn p12_password(config: &ProviderConfig) -> Result<String, BuildError> {
    if let Some(password) = &config.p12_password {
        return Ok(password.expose().to_owned());
    }
    let Some(path) = &config.p12_password_file else {
        return Ok(String::new());
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        BuildError::new(
            &config.id,
            "p12_password_file",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// What the leaf says of itself.
type LeafFacts = (u64, String, Option<String>, Vec<String>);

/// (notAfter, notAfter as text, subject UID, listed topics) of a DER certificate.
fn read_leaf(der: &CertificateDer<'_>) -> Result<LeafFacts, String> {
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("the certificate cannot be read: {e}"))?;
    let not_after = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
    let not_after_text = cert.validity().not_after.to_string();
    let uid = cert
        .subject()
        .iter_by_oid(&OID_USERID)
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_owned);
    let topics_oid = Oid::from(TOPICS_OID).map_err(|_| "bad topics OID".to_owned())?;
    let topics = cert
        .extensions()
        .iter()
        .find(|e| e.oid == topics_oid)
        .map(|e| topics_of(e.value))
        .unwrap_or_default();
    Ok((not_after, not_after_text, uid, topics))
}

/// The strings of Apple's topics extension: a sequence of topic names, each
/// followed by a sequence of their kinds (`app`, `voip`, …), which are skipped.
fn topics_of(value: &[u8]) -> Vec<String> {
    let Ok((_, seq)) = parse_der(value) else {
        return Vec::new();
    };
    let BerObjectContent::Sequence(items) = seq.content else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| item.as_str().ok().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::CredentialsError;

    /// DER: tag, short length, content.
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag, u8::try_from(content.len()).expect("short")];
        out.extend_from_slice(content);
        out
    }

    #[test]
    fn apples_topics_extension_lists_the_topics_and_skips_their_kinds() {
        let mut items = tlv(0x0c, b"com.example.app");
        items.extend(tlv(0x30, &tlv(0x0c, b"app")));
        items.extend(tlv(0x0c, b"com.example.app.voip"));
        items.extend(tlv(0x30, &tlv(0x0c, b"voip")));
        let topics = topics_of(&tlv(0x30, &items));
        assert_eq!(topics, ["com.example.app", "com.example.app.voip"]);
        assert!(topics_of(b"\x04\x00").is_empty(), "not a sequence");
        assert!(topics_of(b"").is_empty());

        let cert = ClientCertificate {
            chain: Vec::new(),
            key: PrivateKeyDer::Pkcs8(Vec::new().into()),
            not_after: 0,
            not_after_text: String::new(),
            uid: Some("com.example.app".into()),
            topics,
            source: "cert_file",
        };
        assert!(cert.covers("com.example.app"));
        assert!(cert.covers("com.example.app.voip"));
        assert!(!cert.covers("com.example.other"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_certificate_that_expires_while_running_makes_the_provider_misconfigured() {
        use crate::providers::{DeliveryError, ErrorClass, Push, PushClient, PushKind};
        let dir = tempfile::tempdir().expect("tempdir");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(
            rcgen::DnType::CustomDnType(vec![0, 9, 2342, 19_200_300, 100, 1, 1]),
            "com.example.app",
        );
        params.not_after = rcgen::date_time_ymd(2099, 1, 1);
        let cert = params.self_signed(&key).expect("cert");
        let (cert_file, key_file) = (dir.path().join("c.pem"), dir.path().join("c.key"));
        std::fs::write(&cert_file, cert.pem()).expect("write");
        std::fs::write(&key_file, key.serialize_pem()).expect("write");
        let config: crate::config::ProviderConfig = toml::from_str(&format!(
            "id = 'apns'\nkind = 'apns'\ncert_file = '{}'\ncert_key_file = '{}'\n",
            cert_file.display(),
            key_file.display()
        ))
        .expect("provider config");
        let client =
            crate::providers::ApnsClient::new(&config, &Default::default()).expect("valid now");
        assert_eq!(client.credentials_expire_at(), Some(4_070_908_800));

        // The clock passes the certificate's end: nothing is sent, and the
        // answer is the misconfiguration that keeps notifications.
        let until_2100 = 4_102_444_800 - crate::clock::unix_secs();
        tokio::time::advance(std::time::Duration::from_secs(until_2100)).await;
        let push = Push {
            token: "aa".into(),
            kind: PushKind::Alert,
            collapse_id: None,
            badge: None,
            alert_title: None,
            alert_body: None,
            data: std::collections::BTreeMap::new(),
        };
        let error = client.send(&push).await.expect_err("expired");
        assert!(
            matches!(&error, DeliveryError::Credentials(CredentialsError::CertificateExpired { not_after }) if not_after.contains("2099")),
            "{error:?}"
        );
        assert_eq!(error.class(), ErrorClass::ProviderMisconfigured);
    }
}
