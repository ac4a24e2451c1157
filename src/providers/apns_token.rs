//! APNs provider tokens: ES256 JWTs, signed once and reused for 50 minutes (Apple
//! refuses tokens older than 60 minutes and re-signing more than every 20).

use super::error::BuildError;
use super::error::CredentialsError;
use crate::clock::unix_secs as now_secs;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use std::sync::Mutex;

/// How long a signed token is reused, in seconds.
const REUSE_SECS: u64 = 50 * 60;
/// Apple answers TooManyProviderTokenUpdates to tokens re-signed faster than this.
const MIN_RESIGN_SECS: u64 = 20 * 60;

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
}

/// Signs and caches the bearer token of one APNs key.
pub struct ApnsTokenSigner {
    team_id: String,
    header: Header,
    key: EncodingKey,
    cached: Mutex<Option<(String, u64)>>,
}

impl ApnsTokenSigner {
    /// Loads the `.p8` key and signs once to prove it works.
    pub fn new(
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
    pub fn bearer(&self) -> Result<String, CredentialsError> {
        self.bearer_at(now_secs())
    }

    fn bearer_at(&self, now: u64) -> Result<String, CredentialsError> {
        let mut cached = self.cached.lock().map_err(|_| CredentialsError::Poisoned)?;
        if let Some((token, iat)) = cached.as_ref()
            && now.saturating_sub(*iat) < REUSE_SECS
        {
            return Ok(token.clone());
        }
        let token = self.sign(now).map_err(CredentialsError::Sign)?;
        *cached = Some((token.clone(), now));
        Ok(token)
    }

    /// After `ExpiredProviderToken` for a request sent with `used`: drops the
    /// cached token so the next request re-signs, and says whether a retry can
    /// use a renewed token. False when `used` is still the current token and
    /// younger than 20 minutes: Apple forbids re-signing that often, and a token
    /// that young being "expired" means the clock is wrong.
    pub(crate) fn invalidate(&self, used: &str) -> bool {
        self.invalidate_at(used, now_secs())
    }

    fn invalidate_at(&self, used: &str, now: u64) -> bool {
        let Ok(mut cached) = self.cached.lock() else {
            return false;
        };
        match cached.as_ref() {
            // Renewed already by another request's answer.
            Some((token, _)) if token != used => true,
            Some((_, iat)) if now.saturating_sub(*iat) < MIN_RESIGN_SECS => false,
            _ => {
                *cached = None;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> ApnsTokenSigner {
        let key = rcgen::KeyPair::generate().expect("P-256 key");
        ApnsTokenSigner::new("apns", "TEAM", "KEY", key.serialize_pem().as_bytes()).expect("signer")
    }

    #[test]
    fn reused_for_50_minutes_and_resigned_no_sooner_than_20() {
        let s = signer();
        let t = 1_000_000;
        let first = s.bearer_at(t).expect("sign");
        assert_eq!(s.bearer_at(t + 49 * 60).expect("reuse"), first);
        let second = s.bearer_at(t + 51 * 60).expect("re-sign");
        assert_ne!(second, first);
        let t2 = t + 51 * 60;
        assert!(
            !s.invalidate_at(&second, t2 + 10 * 60),
            "too young to re-sign"
        );
        assert_eq!(s.bearer_at(t2 + 10 * 60).expect("kept"), second);
        assert!(
            s.invalidate_at(&first, t2 + 10 * 60),
            "an old token: retry with the current one"
        );
        assert_eq!(s.bearer_at(t2 + 10 * 60).expect("kept"), second);
        assert!(s.invalidate_at(&second, t2 + 21 * 60));
        assert_ne!(s.bearer_at(t2 + 21 * 60).expect("re-signed"), second);
    }
}
