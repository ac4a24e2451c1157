//! Delivery errors and their classification (`docs/protocol.md` §6–7): every failure
//! ends in exactly one [`ErrorClass`], which says what to do about it.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// What a failed delivery means for the notification and the registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: try again later with backoff, on a fresh connection (5xx, 429,
    /// network, GOAWAY).
    Retry,
    /// The credentials were renewed (APNs `ExpiredProviderToken`): try again at once.
    RetryNow,
    /// A status or reason not in the tables: retried with backoff a few times,
    /// and logged with the raw body so the table can learn it.
    Unknown,
    /// The token is dead: remove the registration.
    RemoveRegistration,
    /// This notification cannot be sent (our bug or its content): drop it, keep the
    /// registration.
    FailNotification,
    /// Our credentials or configuration are wrong: keep notifications, alert.
    ProviderMisconfigured,
}

impl ErrorClass {
    /// A label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            ErrorClass::Retry => "retry",
            ErrorClass::RetryNow => "credentials-renewed",
            ErrorClass::Unknown => "unknown",
            ErrorClass::RemoveRegistration => "token-dead",
            ErrorClass::FailNotification => "failed",
            ErrorClass::ProviderMisconfigured => "misconfigured",
        }
    }
}

/// Why a push was not delivered.
#[derive(Debug, Error)]
pub enum DeliveryError {
    /// The provider answered with an error status.
    #[error("HTTP {status} {reason}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The provider's reason or error code (`BadDeviceToken`, `UNREGISTERED`).
        reason: String,
        /// What it means.
        class: ErrorClass,
        /// APNs 410 `timestamp`: when the token became invalid (ms since epoch).
        invalid_since_ms: Option<u64>,
        /// `Retry-After`, if the provider sent one.
        retry_after: Option<Duration>,
        /// The response body, cut to 512 bytes, for the log line of
        /// an unknown error. Providers never echo the device token in it.
        body: String,
    },
    /// The push does not fit the provider's size limit even with the body cut:
    /// what is left (an encrypted payload, say) cannot be shortened.
    #[error("payload of {size} bytes exceeds the limit of {limit} and cannot be trimmed")]
    TooLarge {
        /// Bytes after trimming.
        size: usize,
        /// The provider's limit.
        limit: usize,
    },
    /// The request did not complete (connect, TLS, handshake, send, body, timeout).
    #[error("request failed")]
    Transport(#[from] TransportError),
    /// We could not produce credentials (signing, OAuth2 token endpoint).
    #[error("credentials")]
    Credentials(#[from] CredentialsError),
}

/// Where a request to a provider (or its token endpoint) stopped, with the
/// cause as the source. Never holds the request URL: an APNs path holds the
/// device token.
#[derive(Debug, Error)]
pub enum TransportError {
    /// The path did not make a valid URL with the endpoint.
    #[error("the request URL is not valid")]
    Url,
    /// TCP connect.
    #[error("connecting to {host}:{port}")]
    Connect {
        /// Provider host.
        host: String,
        /// Provider port.
        port: u16,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// TLS handshake.
    #[error("TLS with {host}")]
    Tls {
        /// Provider host.
        host: String,
        /// The TLS error.
        #[source]
        source: std::io::Error,
    },
    /// The server did not agree to HTTP/2 in ALPN.
    #[error("{host} does not offer HTTP/2 (ALPN h2)")]
    NoHttp2 {
        /// Provider host.
        host: String,
    },
    /// HTTP/2 connection preface and settings.
    #[error("HTTP/2 handshake with {host}")]
    Handshake {
        /// Provider host.
        host: String,
        /// The HTTP/2 error.
        #[source]
        source: super::http2::Http2Error,
    },
    /// Sending the request or waiting for the answer's head (reset, GOAWAY).
    #[error("sending the request")]
    Send(#[source] super::http2::Http2Error),
    /// The connection the request was on ended with this error (TLS alert,
    /// GOAWAY, reset).
    #[error("the connection ended")]
    Connection(#[source] Arc<super::http2::Http2Error>),
    /// Reading the answer's body (or it was over 64 KiB).
    #[error("reading the answer")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The whole exchange, connecting included, took longer than allowed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The request's task ended without an answer (the client panicked).
    #[error("the request ended without an answer")]
    Abandoned,
    /// The OAuth2 token endpoint could not be reached.
    #[error("token endpoint {uri}")]
    TokenEndpoint {
        /// The endpoint (`token_uri`; holds no secret).
        uri: String,
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
    /// The token endpoint failed moments ago; not asked again before the
    /// backoff has passed, so that pushes waiting for a token do not each
    /// send it a request.
    #[error(
        "token endpoint {uri} failed {attempts} time(s) in a row; next attempt in {retry_in:?}"
    )]
    TokenEndpointBackoff {
        /// The endpoint.
        uri: String,
        /// Failures in a row.
        attempts: u32,
        /// Until the next attempt.
        retry_in: Duration,
    },
    /// The OAuth2 token endpoint answered with a server error.
    #[error("token endpoint {uri} answered HTTP {status}: {body}")]
    TokenEndpointDown {
        /// The endpoint.
        uri: String,
        /// HTTP status (5xx).
        status: u16,
        /// The start of its answer.
        body: String,
    },
}

impl TransportError {
    /// Whether the server ended the TLS session with an alert that refuses
    /// our client certificate (APNs certificate auth: unknown CA, expired,
    /// none sent). With TLS 1.3 that alert arrives after the handshake, on
    /// the first read, so it is looked for along the whole chain.
    pub(crate) fn is_client_certificate_refused(&self) -> bool {
        use rustls::AlertDescription as A;
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = next {
            let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
                e.downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            });
            if let Some(rustls::Error::AlertReceived(alert)) = tls {
                return matches!(
                    alert,
                    A::BadCertificate
                        | A::UnknownCA
                        | A::CertificateRequired
                        | A::CertificateExpired
                        | A::CertificateRevoked
                        | A::CertificateUnknown
                        | A::UnsupportedCertificate
                        | A::AccessDenied
                );
            }
            next = e.source();
        }
        false
    }
}

/// Why no credentials could be produced for a request.
#[derive(Debug, Error)]
pub enum CredentialsError {
    /// Signing the JWT (APNs provider token, FCM grant) failed.
    #[error("signing the JWT")]
    Sign(#[source] jsonwebtoken::errors::Error),
    /// The token cache's lock was poisoned by a panic.
    #[error("the token cache is unusable")]
    Poisoned,
    /// The token cannot be sent as a header.
    #[error("the token is not a valid header value")]
    HeaderValue(#[source] hyper::header::InvalidHeaderValue),
    /// The OAuth2 token endpoint refused the grant (4xx).
    #[error("token endpoint {uri} refused the grant: HTTP {status}: {body}")]
    Refused {
        /// The endpoint.
        uri: String,
        /// HTTP status.
        status: u16,
        /// The start of its answer.
        body: String,
    },
    /// The OAuth2 token endpoint's answer is not a token.
    #[error("token endpoint answer unreadable")]
    Unreadable(#[source] serde_json::Error),
    /// The APNs client certificate (`cert_file`) has expired.
    #[error("the client certificate expired on {not_after}")]
    CertificateExpired {
        /// Its `notAfter`, as the certificate says it.
        not_after: String,
    },
    /// The provider refused our client certificate in the TLS handshake.
    #[error("the provider refused the client certificate")]
    CertificateRefused(#[source] TransportError),
}

impl DeliveryError {
    /// What to do about it.
    pub fn class(&self) -> ErrorClass {
        match self {
            DeliveryError::Rejected { class, .. } => *class,
            DeliveryError::Transport(_) => ErrorClass::Retry,
            DeliveryError::Credentials(_) => ErrorClass::ProviderMisconfigured,
            DeliveryError::TooLarge { .. } => ErrorClass::FailNotification,
        }
    }

    /// `Retry-After`, when the provider sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DeliveryError::Rejected { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Which credential or setting to check, for the one log line of a
    /// misconfigured provider (and `/readyz`). The tables of reasons live
    /// here, beside the classification, so the pool never reads them.
    pub fn hint(&self) -> &'static str {
        let (status, reason) = match self {
            DeliveryError::Rejected { status, reason, .. } => (*status, reason.as_str()),
            DeliveryError::Credentials(
                CredentialsError::CertificateExpired { .. }
                | CredentialsError::CertificateRefused(_),
            ) => {
                return "APNs refuses the client certificate: check cert_file/cert_key_file or p12_file (expired, not issued by Apple, or not this app's)";
            }
            DeliveryError::Credentials(_) => {
                return "cannot produce credentials: check key_file / service_account_file and the OAuth2 token endpoint";
            }
            _ => return "the provider refuses our requests",
        };
        match reason {
            "InvalidProviderToken" | "MissingProviderToken" => {
                "APNs refuses the provider token: check team_id, key_id and key_file (the .p8 key)"
            }
            "ExpiredProviderToken" => {
                "APNs says a fresh provider token has expired: check this machine's clock"
            }
            "BadCertificate" | "BadCertificateEnvironment" => {
                "APNs refuses the certificate for this endpoint: a development (sandbox) certificate works only with api.sandbox.push.apple.com, a production one only with api.push.apple.com; check cert_file and endpoint"
            }
            "Forbidden" => "APNs forbids this key for the topic: check topic and team_id",
            "BadPath" | "MethodNotAllowed" => "APNs refuses the request path: check the endpoint",
            "THIRD_PARTY_AUTH_ERROR" => {
                "FCM cannot reach APNs for iOS devices: check the APNs key uploaded to Firebase"
            }
            "PERMISSION_DENIED" | "SENDER_ID_MISMATCH" => {
                "FCM denies this service account: check service_account_file and project_id"
            }
            _ if status == 401 => {
                "the provider refuses our bearer token: check service_account_file"
            }
            _ if status == 404 => {
                "the provider does not know this path: check endpoint and project_id"
            }
            _ => "the provider refuses our credentials or endpoint",
        }
    }

    /// A label for the retries metric, from a closed set: a reason or code
    /// of the tables, `unknown` for any other the provider sends, the HTTP
    /// status when it sent none, or the kind of failure.
    pub fn reason_label(&self) -> Cow<'static, str> {
        match self {
            DeliveryError::Rejected { status, reason, .. } if reason.is_empty() => match status {
                400..=599 => Cow::Owned(format!("http-{status}")),
                _ => Cow::Borrowed("http-other"),
            },
            DeliveryError::Rejected { reason, .. } => Cow::Borrowed(
                super::apns_table::KNOWN_REASONS
                    .iter()
                    .chain(super::fcm::KNOWN_CODES)
                    .find(|known| **known == reason.as_str())
                    .copied()
                    .unwrap_or("unknown"),
            ),
            DeliveryError::Transport(_) => Cow::Borrowed("transport"),
            DeliveryError::Credentials(_) => Cow::Borrowed("credentials"),
            DeliveryError::TooLarge { .. } => Cow::Borrowed("too-large"),
        }
    }
}

/// How much of an error body is kept for logs.
pub(crate) const RAW_BODY_LIMIT: usize = 512;

/// `text` cut to 512 bytes at a character boundary.
pub(crate) fn raw_body(text: &str) -> String {
    let mut end = text.len().min(RAW_BODY_LIMIT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Why a provider could not be built; names the configuration key.
#[derive(Debug, Error)]
#[error("providers[{provider}].{key}: {message}")]
pub struct BuildError {
    /// The provider id.
    pub provider: String,
    /// The offending key.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

impl BuildError {
    pub(crate) fn new(provider: &str, key: &'static str, message: impl Into<String>) -> Self {
        Self {
            provider: provider.to_owned(),
            key,
            message: message.into(),
        }
    }
}

/// Parses a `Retry-After` header given in seconds.
pub(crate) fn retry_after(headers: &hyper::header::HeaderMap) -> Option<Duration> {
    headers
        .get(hyper::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(status: u16, reason: &str) -> DeliveryError {
        DeliveryError::Rejected {
            status,
            reason: reason.to_owned(),
            class: ErrorClass::ProviderMisconfigured,
            invalid_since_ms: None,
            retry_after: None,
            body: String::new(),
        }
    }

    #[test]
    fn retry_labels_come_from_a_closed_set() {
        assert_eq!(
            rejected(503, "ServiceUnavailable").reason_label(),
            "ServiceUnavailable"
        );
        assert_eq!(
            rejected(429, "QUOTA_EXCEEDED").reason_label(),
            "QUOTA_EXCEEDED"
        );
        assert_eq!(rejected(503, "made-up-{random}").reason_label(), "unknown");
        assert_eq!(rejected(502, "").reason_label(), "http-502");
        assert_eq!(rejected(299, "").reason_label(), "http-other");
    }

    #[test]
    fn certificate_refusals_name_the_setting_and_the_environment_mix_up() {
        let environment = rejected(403, "BadCertificateEnvironment").hint();
        assert!(
            environment.contains("sandbox") && environment.contains("cert_file"),
            "{environment}"
        );
        let expired = DeliveryError::from(CredentialsError::CertificateExpired {
            not_after: "Jan 1 00:00:00 2099 +00:00".into(),
        });
        assert_eq!(expired.class(), ErrorClass::ProviderMisconfigured);
        assert!(expired.hint().contains("p12_file"), "{}", expired.hint());
        assert!(
            rejected(403, "InvalidProviderToken")
                .hint()
                .contains("key_file")
        );
    }
}
