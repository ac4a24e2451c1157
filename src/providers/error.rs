//! Delivery errors and their classification (`docs/protocol.md` §6–7): every failure
//! ends in exactly one [`ErrorClass`], which says what to do about it.

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
    /// The request did not complete (connect, TLS, timeout, reset).
    #[error("request failed: {0}")]
    Transport(String),
    /// We could not produce credentials (signing, OAuth2 token endpoint).
    #[error("credentials: {0}")]
    Credentials(String),
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

    /// A short label for the retries metric: the provider's reason, or the kind
    /// of failure.
    pub fn reason_label(&self) -> String {
        match self {
            DeliveryError::Rejected { status, reason, .. } if reason.is_empty() => {
                format!("http-{status}")
            }
            DeliveryError::Rejected { reason, .. } => reason.chars().take(40).collect(),
            DeliveryError::Transport(_) => "transport".to_owned(),
            DeliveryError::Credentials(_) => "credentials".to_owned(),
            DeliveryError::TooLarge { .. } => "too-large".to_owned(),
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

/// The error and its sources, which is where hyper and reqwest keep the
/// useful part. Callers strip any URL first: an APNs URL holds the token.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
