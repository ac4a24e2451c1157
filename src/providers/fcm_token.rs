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
/// Produces bearer tokens for the FCM v1 API.
pub(crate) struct FcmTokenSource {
    client_email: String,
    token_uri: String,
    key: EncodingKey,
    http: reqwest::Client,
    cached: Mutex<Option<(String, Instant)>>,
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

    /// A valid access token, fetched when none is cached or it is about to expire.
    pub(crate) async fn bearer(&self) -> Result<String, DeliveryError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, expires)) = cached.as_ref()
            && clock::now() + REFRESH_MARGIN < *expires
        {
            return Ok(token.clone());
        }
        let (token, lifetime) = self.fetch().await?;
        *cached = Some((token.clone(), clock::now() + lifetime));
        Ok(token)
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
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let body: String = text.chars().take(200).collect();
            let uri = self.token_uri.clone();
            let status = status.as_u16();
            return Err(if status >= 500 {
                TransportError::TokenEndpointDown { uri, status, body }.into()
            } else {
                CredentialsError::Refused { uri, status, body }.into()
            });
        }
        let token: TokenResponse = response
            .json()
            .await
            .map_err(CredentialsError::Unreadable)?;
        Ok((
            token.access_token,
            // The endpoint's word, clamped: an absurd lifetime must neither
            // overflow the clock nor keep a token forever.
            Duration::from_secs(token.expires_in.unwrap_or(3600).min(MAX_LIFETIME_S)),
        ))
    }
}
