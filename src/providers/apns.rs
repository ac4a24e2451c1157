//! The APNs HTTP/2 client (`docs/protocol.md` §6): token or certificate auth,
//! multiplexed connections; its status/reason table is [`super::apns_table`].

use super::apns_cert::ClientCertificate;
use super::apns_table::classify;
use super::apns_token::ApnsTokenSigner;
use super::connections::{Connections, bearer_header};
use super::error::{
    BuildError, CredentialsError, DeliveryError, ErrorClass, raw_body, retry_after,
};
use super::size::{APNS_LIMIT, APNS_VOIP_LIMIT, fit};
use super::tls::tls_config;
use super::{Delivered, Push, PushClient, PushKind, SendFuture};
use crate::clock::unix_secs;
use crate::config::{DeliveryConfig, ProviderConfig};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_ENDPOINT: &str = "https://api.push.apple.com";

/// An APNs provider.
pub(crate) struct ApnsClient {
    inner: Arc<Inner>,
}

struct Inner {
    topic: String,
    expiration_s: u64,
    connections: Connections,
    auth: Auth,
}

/// How we prove who we are to APNs.
enum Auth {
    /// A JWT in `authorization`, signed with the `.p8` key.
    Token(Box<ApnsTokenSigner>),
    /// The TLS client certificate; nothing in the headers.
    Certificate {
        /// `notAfter`, seconds since the epoch.
        not_after: u64,
        /// The same, as the certificate says it.
        not_after_text: String,
    },
}

impl ApnsClient {
    /// Builds the client from its configuration, loading the `.p8` key or the
    /// client certificate (refused when expired).
    pub(crate) fn new(
        config: &ProviderConfig,
        delivery: &DeliveryConfig,
    ) -> Result<Self, BuildError> {
        let id = config.id.as_str();
        let missing = |key: &'static str| BuildError::new(id, key, "required for kind = \"apns\"");
        let (auth, client, topic) = match ClientCertificate::of(config) {
            Some(cert) => {
                let cert = cert?;
                let topic = cert.topic(id, config.topic.as_deref())?;
                let auth = Auth::Certificate {
                    not_after: cert.not_after,
                    not_after_text: cert.not_after_text,
                };
                (auth, Some((cert.chain, cert.key)), topic)
            }
            None => {
                let key_file = config
                    .key_file
                    .as_ref()
                    .ok_or_else(|| missing("key_file"))?;
                let key_pem = std::fs::read(key_file).map_err(|e| {
                    BuildError::new(
                        id,
                        "key_file",
                        format!("cannot read {}: {e}", key_file.display()),
                    )
                })?;
                let signer = ApnsTokenSigner::new(
                    id,
                    config
                        .team_id
                        .as_deref()
                        .ok_or_else(|| missing("team_id"))?,
                    config.key_id.as_deref().ok_or_else(|| missing("key_id"))?,
                    &key_pem,
                )?;
                let topic = config.topic.clone().ok_or_else(|| missing("topic"))?;
                (Auth::Token(Box::new(signer)), None, topic)
            }
        };
        let endpoint = config.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT);
        let connections = Connections::new(
            id,
            endpoint,
            tls_config(id, config.ca_file.as_deref(), client)?,
            Duration::from_secs(config.request_timeout_s),
            config.connections,
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                topic,
                expiration_s: delivery.expiration_s,
                connections,
                auth,
            }),
        })
    }
}

impl PushClient for ApnsClient {
    fn server_address(&self) -> &str {
        self.inner.connections.host()
    }

    fn url_template(&self) -> &'static str {
        "/3/device/{token}"
    }

    fn send(&self, push: &Push) -> SendFuture {
        match self.inner.prepare(push) {
            Ok(request) => {
                let inner = self.inner.clone();
                Box::pin(async move { inner.send(request).await })
            }
            Err(e) => super::failed_send(e),
        }
    }

    fn credentials_expire_at(&self) -> Option<u64> {
        match &self.inner.auth {
            Auth::Certificate { not_after, .. } => Some(*not_after),
            Auth::Token(_) => None,
        }
    }
}

/// A request ready to go: built from the push before the send's future, so
/// the future does not hold (and the pool need not copy) the push.
struct Prepared {
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
    /// The token-based authentication bearer it carries.
    bearer: Option<String>,
}

impl Inner {
    fn prepare(&self, push: &Push) -> Result<Prepared, DeliveryError> {
        let (push_type, priority, topic, limit) = match push.kind {
            PushKind::Alert => ("alert", "10", self.topic.clone(), APNS_LIMIT),
            PushKind::Background => ("background", "5", self.topic.clone(), APNS_LIMIT),
            PushKind::Voip => (
                "voip",
                "10",
                format!("{}.voip", self.topic),
                APNS_VOIP_LIMIT,
            ),
        };
        let body = fit(push, limit, |p| payload(p).to_string().into_bytes())?;
        let mut headers = HeaderMap::with_capacity(8);
        let bearer = match &self.auth {
            Auth::Token(signer) => {
                let bearer = signer.bearer()?;
                headers.insert(AUTHORIZATION, bearer_header(&bearer)?);
                Some(bearer)
            }
            Auth::Certificate {
                not_after,
                not_after_text,
            } => {
                if unix_secs() >= *not_after {
                    return Err(CredentialsError::CertificateExpired {
                        not_after: not_after_text.clone(),
                    }
                    .into());
                }
                None
            }
        };
        // Topic (validated configuration), ids and numbers we generate, and a
        // collapse id derived from the node: all header-safe.
        let mut put = |name: &'static str, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        };
        put("apns-id", &new_apns_id());
        put("apns-topic", &topic);
        put("apns-push-type", push_type);
        put("apns-priority", priority);
        put(
            "apns-expiration",
            &(unix_secs() + self.expiration_s).to_string(),
        );
        if let Some(collapse) = push
            .collapse_id
            .as_deref()
            .filter(|_| push.kind != PushKind::Voip)
        {
            put("apns-collapse-id", collapse);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(Prepared {
            path: format!("/3/device/{}", push.token),
            headers,
            body,
            bearer,
        })
    }

    async fn send(&self, request: Prepared) -> Result<Delivered, DeliveryError> {
        let Prepared {
            path,
            headers,
            body,
            bearer,
        } = request;
        let answer = self
            .connections
            .post(&path, headers, body.into())
            .await
            .map_err(|e| match &self.auth {
                Auth::Certificate { .. } if e.is_client_certificate_refused() => {
                    DeliveryError::from(CredentialsError::CertificateRefused(e))
                }
                _ => e.into(),
            })?;
        let mut result = answer_of(answer.status, &answer.headers, &answer.body);
        if let (
            Err(DeliveryError::Rejected { reason, class, .. }),
            Auth::Token(signer),
            Some(bearer),
        ) = (&mut result, &self.auth, &bearer)
            && reason == "ExpiredProviderToken"
            && !signer.invalidate(bearer)
        {
            // Signed minutes ago and already "expired": the clock is wrong, and
            // re-signing now would only earn TooManyProviderTokenUpdates.
            *class = ErrorClass::ProviderMisconfigured;
        }
        result
    }
}

/// What an APNs answer says: delivered (with its `apns-id`), or why not,
/// classified by the table. Whatever the status, headers and body (the
/// provider-answers fuzz target feeds it all three).
pub fn answer_of(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Delivered, DeliveryError> {
    let apns_id = headers
        .get("apns-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if status == 200 {
        return Ok(Delivered { id: apns_id });
    }
    let text = String::from_utf8_lossy(body);
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let reason = body
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    Err(DeliveryError::Rejected {
        status,
        class: classify(status, &reason),
        invalid_since_ms: body.get("timestamp").and_then(Value::as_u64),
        reason,
        retry_after: retry_after(headers),
        body: raw_body(&text),
    })
}

/// A random UUID (version 4) for `apns-id`, so our logs and Apple's name the
/// same notification.
fn new_apns_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The JSON body: `aps` for the system, the push's data as top-level keys.
pub fn payload(push: &Push) -> Value {
    let mut aps = Map::new();
    match push.kind {
        PushKind::Alert => {
            let mut alert = Map::new();
            if let Some(title) = &push.alert_title {
                alert.insert("title".into(), json!(title));
            }
            alert.insert(
                "body".into(),
                json!(push.alert_body.as_deref().unwrap_or("New message")),
            );
            aps.insert("alert".into(), Value::Object(alert));
            aps.insert("sound".into(), json!("default"));
            aps.insert("mutable-content".into(), json!(1));
        }
        PushKind::Background => {
            aps.insert("content-available".into(), json!(1));
        }
        PushKind::Voip => {}
    }
    if let Some(badge) = push.badge.filter(|_| push.kind != PushKind::Voip) {
        aps.insert("badge".into(), json!(badge));
    }
    let mut root = Map::new();
    root.insert("aps".into(), Value::Object(aps));
    if let Some(count) = push.badge {
        // A number, as Tigase's component sends it (Siskin reads an Int).
        root.insert("unread-messages".into(), json!(count));
    }
    for (k, v) in &push.data {
        root.insert(k.clone(), Value::String(v.clone()));
    }
    Value::Object(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn apns_ids_are_uuids() {
        let id = new_apns_id();
        let parts: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
        assert_eq!(id.as_bytes()[14], b'4');
        assert_ne!(id, new_apns_id());
    }

    #[test]
    fn alert_and_background_payloads() {
        let mut push = Push {
            token: "aa".into(),
            kind: PushKind::Alert,
            collapse_id: None,
            badge: Some(3),
            alert_title: None,
            alert_body: None,
            data: BTreeMap::new(),
        };
        let alert = payload(&push);
        assert_eq!(alert["aps"]["mutable-content"], 1);
        assert_eq!(alert["aps"]["badge"], 3);
        assert_eq!(alert["aps"]["alert"]["body"], "New message");
        assert_eq!(alert["unread-messages"], 3);
        push.kind = PushKind::Background;
        let background = payload(&push);
        assert_eq!(background["aps"]["content-available"], 1);
        assert!(background["aps"].get("alert").is_none());
    }
}
