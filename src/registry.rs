//! Registrations: which device a push node stands for.
//!
//! Node ids are derived, not stored in an index: HMAC-SHA256 under a per-deployment
//! key of (account, provider, token). So registering the same device again gives
//! the same node, and the REST unregister (which only knows account, provider and
//! token) finds it without a secondary index. Accounts are kept only as an HMAC;
//! the account's domain is kept in clear to check who may publish.

mod embedded;
mod keys;
mod model;

pub use embedded::EmbeddedStore;
pub use keys::NodeKeys;
pub use model::{DeviceRef, NewRegistration, OutboxWrite, Registration, now_ms};

use std::path::Path;
use std::sync::Arc;
use thiserror::Error;

/// Why the store could not answer. Always transient from a publisher's point of
/// view: it is answered with a `wait` error, never `cancel`.
#[derive(Debug, Error)]
pub enum RegistryError {
    /// The storage engine failed.
    #[error("store error: {0}")]
    Storage(String),
    /// A stored value could not be decoded.
    #[error("corrupt registration for node {node}: {message}")]
    Corrupt {
        /// The node whose value is unreadable.
        node: String,
        /// The decoder's message.
        message: String,
    },
    /// The blocking worker went away (shutdown).
    #[error("store worker stopped")]
    Stopped,
}

/// What [`Registry::drop_dead_token`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadToken {
    /// The registration is gone.
    Removed,
    /// The registration stays without its VoIP token.
    VoipTokenForgotten,
    /// Renewed since, or the token is no longer the registration's.
    Kept,
}

/// The registry the rest of the gateway talks to: derives ids and delegates
/// storage to the configured backend.
#[derive(Clone)]
pub struct Registry {
    store: Arc<EmbeddedStore>,
    keys: NodeKeys,
}

impl Registry {
    /// Opens (creating if needed) the embedded store in directory `dir`.
    pub fn open_embedded(dir: &Path) -> Result<Self, RegistryError> {
        let store = EmbeddedStore::open(dir)?;
        let keys = NodeKeys::new(store.deployment_key()?);
        Ok(Self {
            store: Arc::new(store),
            keys,
        })
    }

    /// The id derivation in use (for tests and tools).
    pub fn keys(&self) -> &NodeKeys {
        &self.keys
    }

    /// Registers a device for `account` (a bare JID), returning the registration.
    /// Idempotent: the same (account, provider, token) keeps its node and creation time.
    pub async fn register(&self, new: NewRegistration) -> Result<Registration, RegistryError> {
        let registration = new.into_registration(&self.keys, now_ms());
        let store = self.store.clone();
        blocking(move || store.upsert(registration)).await
    }

    /// The registration of `node`, if any.
    pub async fn get(&self, node: &str) -> Result<Option<Registration>, RegistryError> {
        let store = self.store.clone();
        let node = node.to_owned();
        blocking(move || store.get(&node)).await
    }

    /// Removes the registration of `device`; true if there was one.
    pub async fn unregister(&self, device: &DeviceRef<'_>) -> Result<bool, RegistryError> {
        let node = self
            .keys
            .node_id(device.account, device.provider, device.identity);
        let store = self.store.clone();
        blocking(move || store.remove_if(&node, |_| true)).await
    }

    /// Acts on a provider's word that `token` of `node` is dead: the main token
    /// removes the registration, the VoIP token is forgotten (calls then ring as
    /// alerts on the main token). Nothing happens if the device registered again
    /// after `invalid_since_ms` (APNs 410 `timestamp`) or no longer has the token.
    pub async fn drop_dead_token(
        &self,
        node: &str,
        token: &str,
        invalid_since_ms: Option<u64>,
    ) -> Result<DeadToken, RegistryError> {
        let store = self.store.clone();
        let node = node.to_owned();
        let token = token.to_owned();
        blocking(move || {
            let stale = |r: &Registration| invalid_since_ms.is_none_or(|t| r.updated_ms <= t);
            if store.remove_if(&node, |r| r.token == token && stale(r))? {
                return Ok(DeadToken::Removed);
            }
            let forgot = store.update_if(&node, |r| {
                (r.voip_token.as_deref() == Some(token.as_str()) && stale(r)).then(|| {
                    let mut updated = r.clone();
                    updated.voip_token = None;
                    updated
                })
            })?;
            Ok(if forgot {
                DeadToken::VoipTokenForgotten
            } else {
                DeadToken::Kept
            })
        })
        .await
    }

    /// Applies outbox writes in order, durably, in one transaction.
    /// Shared, so a caller can keep the writes to retry them without copying.
    pub async fn outbox_apply(&self, writes: Arc<[OutboxWrite]>) -> Result<(), RegistryError> {
        let store = self.store.clone();
        blocking(move || store.outbox_apply(&writes)).await
    }

    /// Every outbox entry as stored: `(key, value)`.
    pub async fn outbox_load(&self) -> Result<Vec<(String, Vec<u8>)>, RegistryError> {
        let store = self.store.clone();
        blocking(move || store.outbox_load()).await
    }

    /// How many registrations there are.
    pub async fn count(&self) -> Result<u64, RegistryError> {
        let store = self.store.clone();
        blocking(move || store.count()).await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, RegistryError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| RegistryError::Stopped)?
}
