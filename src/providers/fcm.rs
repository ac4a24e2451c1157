//! The FCM HTTP v1 client (`docs/protocol.md` §7): data messages, one token per request
//! over a shared HTTP/2 connection, and the error-code table.

use super::connections::{Connections, bearer_header};
use super::error::{BuildError, DeliveryError, ErrorClass, raw_body, retry_after};
use super::fcm_body::{data_bytes, message_bytes};
use super::fcm_token::FcmTokenSource;
use super::size::{FCM_LIMIT, fit};
use super::tls::{tls_config, token_client};
use super::{Delivered, Push, PushClient, PushKind, SendFuture};
use crate::config::{DeliveryConfig, ProviderConfig};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_ENDPOINT: &str = "https://fcm.googleapis.com";
const FCM_ERROR_TYPE: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";

/// An FCM provider.
pub(crate) struct FcmClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// The send method's path under the endpoint.
    send_path: String,
    expiration_s: u64,
    connections: Connections,
    tokens: FcmTokenSource,
}

/// FCM's default `Retry-After` for QUOTA_EXCEEDED when the header is missing.
const QUOTA_RETRY_AFTER: Duration = Duration::from_secs(60);

impl FcmClient {
    /// Builds the client, reading the service account.
    pub(crate) fn new(
        config: &ProviderConfig,
        delivery: &DeliveryConfig,
    ) -> Result<Self, BuildError> {
        let id = config.id.as_str();
        let timeout = Duration::from_secs(config.request_timeout_s);
        let path = config.service_account_file.as_ref().ok_or_else(|| {
            BuildError::new(id, "service_account_file", "required for kind = \"fcm\"")
        })?;
        let tls = tls_config(id, config.ca_file.as_deref(), None)?;
        let token_http = token_client(id, tls.clone(), timeout)?;
        let (tokens, account_project) = FcmTokenSource::from_file(id, path, token_http)?;
        let project = config
            .project_id
            .clone()
            .or(account_project)
            .ok_or_else(|| {
                BuildError::new(
                    id,
                    "project_id",
                    "the service account has no project_id; set it here",
                )
            })?;
        let endpoint = config
            .endpoint
            .as_deref()
            .unwrap_or(DEFAULT_ENDPOINT)
            .trim_end_matches('/');
        Ok(Self {
            inner: Arc::new(Inner {
                send_path: format!("/v1/projects/{project}/messages:send"),
                expiration_s: delivery.expiration_s,
                connections: Connections::new(id, endpoint, tls, timeout, config.connections)?,
                tokens,
            }),
        })
    }
}

impl PushClient for FcmClient {
    fn server_address(&self) -> &str {
        self.inner.connections.host()
    }

    fn url_template(&self) -> &'static str {
        "/v1/projects/{project}/messages:send"
    }

    fn send(&self, push: &Push) -> SendFuture {
        // The body is written before the future: it does not hold (and the
        // pool need not copy) the push.
        let body = match fit(push, FCM_LIMIT, data_bytes) {
            Ok(data) => message_bytes(push, &data, self.inner.expiration_s),
            Err(e) => return super::failed_send(e),
        };
        let inner = self.inner.clone();
        Box::pin(async move { inner.send(body).await })
    }
}

impl Inner {
    async fn send(&self, body: Vec<u8>) -> Result<Delivered, DeliveryError> {
        let bearer = self.tokens.bearer().await?;
        let mut headers = HeaderMap::with_capacity(2);
        headers.insert(AUTHORIZATION, bearer_header(&bearer)?);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let answer = self
            .connections
            .post(&self.send_path, headers, body.into())
            .await?;
        if answer.status == 401 {
            self.tokens.invalidate().await;
        }
        answer_of(answer.status, &answer.headers, &answer.body)
    }
}

/// What an FCM answer says: delivered (with the message name), or why not,
/// classified by the table. Whatever the status, headers and body (the
/// provider-answers fuzz target feeds it all three).
pub fn answer_of(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Delivered, DeliveryError> {
    let text = String::from_utf8_lossy(body);
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status == 200 {
        return Ok(Delivered {
            id: body.get("name").and_then(Value::as_str).map(str::to_owned),
        });
    }
    let reason = error_code(&body);
    let mut retry_after = retry_after(headers);
    if reason == "QUOTA_EXCEEDED" {
        retry_after = retry_after.or(Some(QUOTA_RETRY_AFTER));
    }
    Err(DeliveryError::Rejected {
        status,
        class: classify(status, &reason),
        reason,
        invalid_since_ms: None,
        retry_after,
        body: raw_body(&text),
    })
}

/// The `data` map: string values only, as FCM requires. Its encoding is what
/// FCM's 4096-byte limit counts. Requests are written by
/// [`super::fcm_body`], byte for byte the encoding of this and [`message`].
pub fn data(push: &Push) -> Value {
    let mut data = serde_json::Map::new();
    if let Some(count) = push.badge {
        data.insert("unread-messages".into(), json!(count.to_string()));
    }
    if let Some(title) = &push.alert_title {
        data.insert("title".into(), json!(title));
    }
    for (k, v) in &push.data {
        data.insert(k.clone(), json!(v));
    }
    Value::Object(data)
}

/// The v1 message: `data` (see [`data`]), Android priority, TTL and collapse key.
pub fn message(push: &Push, data: Value, expiration_s: u64) -> Value {
    let priority = match push.kind {
        PushKind::Alert | PushKind::Voip => "high",
        PushKind::Background => "normal",
    };
    let mut android = json!({ "priority": priority, "ttl": format!("{expiration_s}s") });
    if let Some(collapse) = &push.collapse_id {
        android["collapse_key"] = json!(collapse);
    }
    json!({ "message": { "token": push.token, "data": data, "android": android } })
}

/// `error.details[FcmError].errorCode` first, then `error.status`.
fn error_code(body: &Value) -> String {
    let error = &body["error"];
    error["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["@type"] == FCM_ERROR_TYPE)
        .and_then(|d| d["errorCode"].as_str())
        .or_else(|| error["status"].as_str())
        .unwrap_or("")
        .to_owned()
}

/// Every code [`classify`] knows: the only ones that become metric labels.
pub(crate) const KNOWN_CODES: &[&str] = &[
    "UNREGISTERED",
    "SENDER_ID_MISMATCH",
    "INVALID_ARGUMENT",
    "QUOTA_EXCEEDED",
    "RESOURCE_EXHAUSTED",
    "UNAVAILABLE",
    "INTERNAL",
    "THIRD_PARTY_AUTH_ERROR",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "NOT_FOUND",
];

/// The FCM error table (`docs/protocol.md` §7): the FcmError code first, then the
/// `google.rpc` status. Anything else is [`ErrorClass::Unknown`].
pub(crate) fn classify(status: u16, code: &str) -> ErrorClass {
    // Every code named here is in KNOWN_CODES (the metric labels).
    use ErrorClass::*;
    match (status, code) {
        (_, "UNREGISTERED" | "SENDER_ID_MISMATCH") => RemoveRegistration,
        (_, "INVALID_ARGUMENT") => FailNotification,
        (_, "QUOTA_EXCEEDED" | "RESOURCE_EXHAUSTED" | "UNAVAILABLE" | "INTERNAL") => Retry,
        (_, "THIRD_PARTY_AUTH_ERROR" | "PERMISSION_DENIED" | "UNAUTHENTICATED") => {
            ProviderMisconfigured
        }
        (401 | 403, _) | (404, "NOT_FOUND" | "") => ProviderMisconfigured,
        (429 | 500 | 502 | 503 | 504, _) => Retry,
        _ => Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn error_code_table() {
        let table = [
            (404, "UNREGISTERED", ErrorClass::RemoveRegistration),
            (403, "SENDER_ID_MISMATCH", ErrorClass::RemoveRegistration),
            (400, "INVALID_ARGUMENT", ErrorClass::FailNotification),
            (429, "QUOTA_EXCEEDED", ErrorClass::Retry),
            (503, "UNAVAILABLE", ErrorClass::Retry),
            (500, "INTERNAL", ErrorClass::Retry),
            (
                401,
                "THIRD_PARTY_AUTH_ERROR",
                ErrorClass::ProviderMisconfigured,
            ),
            (401, "UNAUTHENTICATED", ErrorClass::ProviderMisconfigured),
            (404, "NOT_FOUND", ErrorClass::ProviderMisconfigured),
            (403, "PERMISSION_DENIED", ErrorClass::ProviderMisconfigured),
            (429, "RESOURCE_EXHAUSTED", ErrorClass::Retry),
            (502, "", ErrorClass::Retry),
            (400, "UNSPECIFIED_ERROR", ErrorClass::Unknown),
            (400, "FAILED_PRECONDITION", ErrorClass::Unknown),
            (418, "", ErrorClass::Unknown),
        ];
        for (status, code, class) in table {
            assert_eq!(classify(status, code), class, "{status} {code}");
        }
    }

    #[test]
    fn reads_the_fcm_error_code_before_the_status() {
        let body = json!({"error": {"code": 404, "status": "NOT_FOUND", "details": [
            {"@type": "type.googleapis.com/google.rpc.BadRequest"},
            {"@type": FCM_ERROR_TYPE, "errorCode": "UNREGISTERED"}]}});
        assert_eq!(error_code(&body), "UNREGISTERED");
        assert_eq!(
            error_code(&json!({"error": {"status": "UNAVAILABLE"}})),
            "UNAVAILABLE"
        );
        assert_eq!(error_code(&Value::Null), "");
    }

    #[test]
    fn message_has_string_data_and_android_priority() {
        let push = Push {
            token: "tok".into(),
            kind: PushKind::Background,
            collapse_id: Some("node".into()),
            badge: Some(2),
            alert_title: None,
            alert_body: None,
            data: BTreeMap::from([("iv".to_owned(), "aXY=".to_owned())]),
        };
        let m = message(&push, data(&push), 60);
        assert_eq!(m["message"]["token"], "tok");
        assert_eq!(m["message"]["data"]["unread-messages"], "2");
        assert_eq!(m["message"]["data"]["iv"], "aXY=");
        assert_eq!(m["message"]["android"]["priority"], "normal");
        assert_eq!(m["message"]["android"]["ttl"], "60s");
        assert_eq!(m["message"]["android"]["collapse_key"], "node");
    }
}
