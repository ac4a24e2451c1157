//! OAuth2 access tokens for FCM from a service account (JWT bearer grant, RS256),
//! cached until five minutes before they expire.
//!
//! Done here rather than with `gcp_auth`: its HTTP client has a fixed trust store,
//! so the `ca_file` of a provider could not reach the token endpoint (mocks,
//! TLS-intercepting proxies), and it cannot share our client.

use super::error::{BuildError, CredentialsError, DeliveryError, TransportError};
use crate::clock::{self, Instant};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;
use tokio::sync::Mutex;

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const GRANT_TYPE: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

#[derive(Deserialize)]
struct ServiceAccount {
    client_email: String,
    private_key: String,
    token_uri: String,
    #[serde(default)]
    project_id: Option<String>,
}

#[derive(Serialize)]
struct GrantClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The longest token lifetime believed (Google issues one hour).
const MAX_LIFETIME_S: u64 = 24 * 3600;
/// Most bytes read of the token endpoint's answer (a token is ~1 KiB).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How long the endpoint is left alone after consecutive failures: 1 s,
/// doubling, at most a minute.
const FAILURE_BACKOFF_MS: (u64, u64) = (1_000, 60_000);

/// Consecutive failures of the token endpoint, and when it may be asked again.
#[derive(Default)]
struct Failures {
    count: u32,
    retry_at: Option<Instant>,
}
/// Produces bearer tokens for the FCM v1 API.
pub(crate) struct FcmTokenSource {
    client_email: String,
    token_uri: String,
    key: EncodingKey,
    http: reqwest::Client,
    /// The token and its expiry; its lock makes refreshes single-flight.
    cached: Mutex<Option<(String, Instant)>>,
    /// Guarded by `cached`'s lock too (only touched while holding it).
    failures: std::sync::Mutex<Failures>,
}

impl FcmTokenSource {
    /// Reads the service-account file; returns the source and its `project_id`.
    pub(crate) fn from_file(
        provider: &str,
        path: &Path,
        http: reqwest::Client,
    ) -> Result<(Self, Option<String>), BuildError> {
        let key_name = "service_account_file";
        let text = std::fs::read_to_string(path).map_err(|e| {
            BuildError::new(
                provider,
                key_name,
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let account: ServiceAccount = serde_json::from_str(&text).map_err(|e| {
            BuildError::new(
                provider,
                key_name,
                format!(
                    "{} is not a service-account JSON (client_email, private_key, token_uri): {e}",
                    path.display()
                ),
            )
        })?;
        let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes()).map_err(|e| {
            BuildError::new(
                provider,
                key_name,
                format!("private_key is not an RSA PEM key: {e}"),
            )
        })?;
        let source = Self {
            client_email: account.client_email,
            token_uri: account.token_uri,
            key,
            http,
            cached: Mutex::new(None),
            failures: std::sync::Mutex::new(Failures::default()),
        };
        source.assertion().map_err(|e| {
            BuildError::new(
                provider,
                key_name,
                format!("cannot sign with private_key: {e}"),
            )
        })?;
        Ok((source, account.project_id))
    }

    fn assertion(&self) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = crate::clock::unix_secs();
        jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &GrantClaims {
                iss: &self.client_email,
                scope: SCOPE,
                aud: &self.token_uri,
                iat,
                exp: iat + 3600,
            },
            &self.key,
        )
    }

    /// A valid access token, fetched when none is cached or it is about to
    /// expire. One fetch at a time (the others wait for its token), and after
    /// a failure none until the backoff has passed: an endpoint in trouble
    /// gets one request per backoff step, not one per push.
    pub(crate) async fn bearer(&self) -> Result<String, DeliveryError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, expires)) = cached.as_ref()
            && clock::now() + REFRESH_MARGIN < *expires
        {
            return Ok(token.clone());
        }
        if let Some(wait) = self.backing_off() {
            return Err(wait.into());
        }
        match self.fetch().await {
            Ok((token, lifetime)) => {
                *self.failures() = Failures::default();
                *cached = Some((token.clone(), clock::now() + lifetime));
                Ok(token)
            }
            Err(e) => {
                let mut failures = self.failures();
                failures.count = failures.count.saturating_add(1);
                let (base, max) = FAILURE_BACKOFF_MS;
                let ceiling = crate::backoff::Backoff::new(base, max)
                    .map_or(max, |b| b.ceiling_ms(failures.count));
                failures.retry_at = Some(clock::now() + Duration::from_millis(ceiling));
                Err(e)
            }
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, Failures> {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The error to answer while the endpoint is being left alone.
    fn backing_off(&self) -> Option<TransportError> {
        let failures = self.failures();
        let retry_in = failures.retry_at?.checked_duration_since(clock::now())?;
        Some(TransportError::TokenEndpointBackoff {
            uri: self.token_uri.clone(),
            attempts: failures.count,
            retry_in,
        })
    }

    /// Forgets the cached token (after a 401).
    pub(crate) async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn fetch(&self) -> Result<(String, Duration), DeliveryError> {
        let assertion = self.assertion().map_err(CredentialsError::Sign)?;
        let response = self
            .http
            .post(&self.token_uri)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(format!("grant_type={GRANT_TYPE}&assertion={assertion}"))
            .send()
            .await
            .map_err(|source| TransportError::TokenEndpoint {
                uri: self.token_uri.clone(),
                source,
            })?;
        let status = response.status();
        let answer =
            read_capped(response)
                .await
                .map_err(|source| TransportError::TokenEndpoint {
                    uri: self.token_uri.clone(),
                    source,
                })?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&answer);
            let body: String = text.chars().take(200).collect();
            let uri = self.token_uri.clone();
            let status = status.as_u16();
            return Err(if status >= 500 {
                TransportError::TokenEndpointDown { uri, status, body }.into()
            } else {
                CredentialsError::Refused { uri, status, body }.into()
            });
        }
        let token: TokenResponse =
            serde_json::from_slice(&answer).map_err(CredentialsError::Unreadable)?;
        Ok((
            token.access_token,
            // The endpoint's word, clamped: an absurd lifetime must neither
            // overflow the clock nor keep a token forever.
            Duration::from_secs(token.expires_in.unwrap_or(3600).min(MAX_LIFETIME_S)),
        ))
    }
}

/// The answer's body, at most [`MAX_ANSWER_BYTES`] of it: a hostile or
/// broken endpoint cannot make us buffer more.
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
        body.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        if body.len() >= MAX_ANSWER_BYTES {
            break;
        }
    }
    Ok(body)
}
