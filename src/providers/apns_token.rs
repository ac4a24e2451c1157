//! APNs provider tokens: ES256 JWTs, signed once and reused for 50 minutes (Apple
//! refuses tokens older than 60 minutes and re-signing more than every 20).

use super::error::BuildError;
use super::now_secs;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use std::sync::Mutex;

/// How long a signed token is reused, in seconds.
const REUSE_SECS: u64 = 50 * 60;

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
}

/// Signs and caches the bearer token of one APNs key.
pub(crate) struct ApnsTokenSigner {
    team_id: String,
    header: Header,
    key: EncodingKey,
    cached: Mutex<Option<(String, u64)>>,
}

impl ApnsTokenSigner {
    /// Loads the `.p8` key and signs once to prove it works.
    pub(crate) fn new(
        provider: &str,
        team_id: &str,
        key_id: &str,
        key_pem: &[u8],
    ) -> Result<Self, BuildError> {
        let key = EncodingKey::from_ec_pem(key_pem).map_err(|e| {
            BuildError::new(
                provider,
                "key_file",
                format!("not a PKCS#8 P-256 (.p8) key: {e}"),
            )
        })?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key_id.to_owned());
        header.typ = None;
        let signer = Self {
            team_id: team_id.to_owned(),
            header,
            key,
            cached: Mutex::new(None),
        };
        signer.sign(now_secs()).map_err(|e| {
            BuildError::new(
                provider,
                "key_file",
                format!("cannot sign with this key: {e}"),
            )
        })?;
        Ok(signer)
    }

    fn sign(&self, iat: u64) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(
            &self.header,
            &Claims {
                iss: &self.team_id,
                iat,
            },
            &self.key,
        )
    }

    /// The current token, re-signed when older than 50 minutes.
    pub(crate) fn bearer(&self) -> Result<String, String> {
        let now = now_secs();
        let mut cached = self
            .cached
            .lock()
            .map_err(|_| "token cache poisoned".to_owned())?;
        if let Some((token, iat)) = cached.as_ref()
            && now.saturating_sub(*iat) < REUSE_SECS
        {
            return Ok(token.clone());
        }
        let token = self.sign(now).map_err(|e| e.to_string())?;
        *cached = Some((token.clone(), now));
        Ok(token)
    }

    /// Drops the cached token (after `ExpiredProviderToken`).
    pub(crate) fn invalidate(&self) {
        if let Ok(mut cached) = self.cached.lock() {
            *cached = None;
        }
    }
}
