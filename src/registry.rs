//! Registrations: which device a push node stands for, and the delivery outbox.
//!
//! Node ids are derived, not stored in an index: HMAC-SHA256 under a per-deployment
//! key of (account, provider, token). So registering the same device again gives
//! the same node, and the REST unregister (which only knows account, provider and
//! token) finds it without a secondary index. Accounts are kept only as an HMAC;
//! the account's domain is kept in clear to check who may publish.
//!
//! Two backends behave the same (one test suite runs on both): the embedded redb
//! file, and Redis or Redis Cluster, sharded by node ([`shard_of`]). Every change
//! is a read-decide-write (`Edit`) applied atomically by the backend.

mod cache;
mod edit;
mod embedded;
mod error;
mod expiry;
mod fenced;
mod fences;
mod journal;
mod keys;
mod model;
mod observed;

#[cfg(test)]
pub(crate) use observed::Operation;
mod redis;
mod shard;
mod transfer;
mod writer;

pub(crate) use cache::RegistrationCache;
pub(crate) use embedded::EmbeddedStore;
pub use error::{DeadToken, RegistryError};
pub use fences::Fences;
pub use keys::NodeKeys;
pub(crate) use keys::constant_time_eq;
pub(crate) use model::Edit;
pub use model::{DeviceRef, IdentityKind, NewRegistration, OutboxWrite, Registration};
pub(crate) use redis::{Member, Membership, RedisStore, shard_owner_key, slot_key};
pub use shard::{node_of_outbox_key, shard_of};

/// How much of `bytes` the embedded store's journal reader takes as whole
/// frames, and how many changes those hold: for the `records` fuzz target,
/// which feeds it what a disk could hand back.
pub fn journal_prefix(bytes: &[u8]) -> (usize, usize) {
    let (changes, whole) = journal::read_frames(bytes);
    (whole, changes.len())
}
pub use transfer::{ExportLine, ImportSummary, TransferError};

use crate::config::{DEFAULT_SHARDS, StoreBackend, StoreConfig};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

enum Backend {
    Embedded(Arc<EmbeddedStore>),
    Redis(Box<RedisStore>),
}

struct Inner {
    backend: Backend,
    /// Set once the store has been reached (at once for the embedded one).
    keys: OnceLock<NodeKeys>,
    cache: Option<RegistrationCache>,
    /// Why the store is not connected, until it is.
    not_connected: Mutex<String>,
    label: &'static str,
    shards: u32,
    /// In a cluster, the shards this node owns; every write checks them.
    fences: Option<Arc<Fences>>,
    /// Set by [`Registry::observe`].
    instruments: OnceLock<observed::StoreInstruments>,
    /// The embedded store's registration writer (group commits). Last, so
    /// it is dropped (and its thread joined) after the backend's handle.
    writer: Option<writer::Writer>,
}

/// The registry the rest of the gateway talks to: derives ids, caches, and
/// delegates storage to the configured backend. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl Registry {
    /// The registry `config` describes. The embedded store is opened now (and
    /// fails now); Redis is only prepared: call [`Self::connect`] until it works.
    pub fn open(config: &StoreConfig) -> Result<Self, RegistryError> {
        Self::open_fenced(config, None)
    }

    /// As [`Self::open`], for a cluster node: writes go only to the shards in
    /// `fences`, each checked against its owner record by Redis.
    pub fn open_fenced(
        config: &StoreConfig,
        fences: Option<Arc<Fences>>,
    ) -> Result<Self, RegistryError> {
        let mut registry = Self::open_unfenced(config)?;
        if let Some(inner) = Arc::get_mut(&mut registry.inner) {
            inner.fences = fences;
        }
        Ok(registry)
    }

    fn open_unfenced(config: &StoreConfig) -> Result<Self, RegistryError> {
        let cache = (config.cache_entries > 0).then(|| {
            RegistrationCache::new(
                config.cache_entries,
                Duration::from_secs(config.cache_ttl_s),
            )
        });
        match config.backend {
            StoreBackend::Embedded => {
                Self::open_embedded_sharded(&config.path, config.shards, cache)
            }
            StoreBackend::Redis => {
                let label = if config.cluster {
                    "redis-cluster"
                } else {
                    "redis"
                };
                let backend = Backend::Redis(Box::new(RedisStore::new(config)?));
                Ok(Self::with(backend, None, cache, label, config.shards, None))
            }
        }
    }

    /// Opens (creating if needed) the embedded store in directory `dir`.
    pub fn open_embedded(dir: &Path) -> Result<Self, RegistryError> {
        let defaults = StoreConfig::default();
        let cache = RegistrationCache::new(
            defaults.cache_entries,
            Duration::from_secs(defaults.cache_ttl_s),
        );
        Self::open_embedded_sharded(dir, DEFAULT_SHARDS, Some(cache))
    }

    fn open_embedded_sharded(
        dir: &Path,
        shards: u32,
        cache: Option<RegistrationCache>,
    ) -> Result<Self, RegistryError> {
        let store = EmbeddedStore::open(dir)?;
        let keys = NodeKeys::new(store.deployment_key()?);
        let store = Arc::new(store);
        let writer = writer::Writer::start(store.clone())?;
        let backend = Backend::Embedded(store);
        Ok(Self::with(
            backend,
            Some(keys),
            cache,
            "embedded",
            shards,
            Some(writer),
        ))
    }

    fn with(
        backend: Backend,
        keys: Option<NodeKeys>,
        cache: Option<RegistrationCache>,
        label: &'static str,
        shards: u32,
        writer: Option<writer::Writer>,
    ) -> Self {
        let cell = OnceLock::new();
        if let Some(k) = keys {
            let _ = cell.set(k);
        }
        Self {
            inner: Arc::new(Inner {
                backend,
                keys: cell,
                cache,
                not_connected: Mutex::new("not connected yet".to_owned()),
                label,
                shards: shards.max(1),
                fences: None,
                instruments: OnceLock::new(),
                writer,
            }),
        }
    }

    /// `embedded`, `redis` or `redis-cluster`, for logs and readiness.
    pub fn label(&self) -> &'static str {
        self.inner.label
    }

    /// Reaches the store if not done yet: checks the shard count recorded in
    /// Redis and reads (or creates) the deployment key. Safe to call again.
    pub async fn connect(&self) -> Result<(), RegistryError> {
        if self.inner.keys.get().is_some() {
            return Ok(());
        }
        let Backend::Redis(store) = &self.inner.backend else {
            return Ok(());
        };
        let prepared = match store.prepare().await {
            Ok(key) => store.index_accounts_once().await.map(|()| key),
            Err(e) => Err(e),
        };
        match prepared {
            Ok(key) => {
                let _ = self.inner.keys.set(NodeKeys::new(key));
                Ok(())
            }
            Err(e) => {
                *lock(&self.inner.not_connected) = crate::errors::chain(&e);
                Err(e)
            }
        }
    }

    /// The id derivation in use; an error until the store has been reached.
    pub fn keys(&self) -> Result<&NodeKeys, RegistryError> {
        self.inner
            .keys
            .get()
            .ok_or_else(|| RegistryError::NotConnected(lock(&self.inner.not_connected).clone()))
    }

    /// Whether the store answers now.
    pub async fn check(&self) -> Result<(), RegistryError> {
        self.keys()?;
        match &self.inner.backend {
            Backend::Embedded(store) => {
                let store = store.clone();
                blocking(move || store.count().map(|_| ())).await
            }
            Backend::Redis(store) => store.ping().await,
        }
    }

    /// Registers a device for `account` (a bare JID), returning the registration.
    /// Idempotent: the same (account, provider, token) keeps its node and creation time.
    pub async fn register(&self, new: NewRegistration) -> Result<Registration, RegistryError> {
        let cap = new.max_per_account;
        let registration = new.into_registration(self.keys()?, crate::clock::unix_ms());
        let node = registration.node.clone();
        let kind = registration.identity_kind();
        let applied = self
            .edit(&node, cap, move |old| {
                if old.is_some_and(|old| old.identity_kind() != kind) {
                    return Edit::Keep;
                }
                let mut r = registration.clone();
                if let Some(old) = old {
                    r.created_ms = old.created_ms;
                    r.updated_ms = r.updated_ms.max(old.updated_ms);
                    r.unpublished = old.unpublished;
                }
                Edit::Put(Box::new(r))
            })
            .await?;
        match applied {
            Edit::Put(r) => Ok(*r),
            Edit::Keep => Err(RegistryError::OtherIdentity),
            Edit::Remove => Err(RegistryError::NotStored),
        }
    }

    /// The registration of `node`, if any: from the cache when there is one.
    pub async fn get(&self, node: &str) -> Result<Option<Arc<Registration>>, RegistryError> {
        self.keys()?;
        let cache = self.inner.cache.as_ref();
        if let Some(hit) = cache.and_then(|c| c.get(node)) {
            return Ok(Some(hit));
        }
        let epoch = cache.map(RegistrationCache::epoch);
        let found = match &self.inner.backend {
            // Read in place: a redb read transaction on a cached page takes a
            // few microseconds, less than handing it to the blocking pool
            // (a thread wake-up each way) costs. Writes go to the writer.
            Backend::Embedded(store) => self
                .timed(observed::Operation::Read, async { store.get(node) })
                .await?
                .map(Arc::new),
            Backend::Redis(store) => self
                .timed(observed::Operation::Read, store.get(node))
                .await?
                .map(|bytes| model::decode(node, &bytes).map(Arc::new))
                .transpose()?,
        };
        if let (Some(cache), Some(epoch), Some(r)) = (cache, epoch, &found) {
            cache.insert(Arc::clone(r), epoch);
        }
        Ok(found)
    }

    /// Removes the registration of `device` if it is of the same identity
    /// kind; true if there was one.
    ///
    /// A miss is answered from a read, without a write: the REST endpoint is
    /// public, and a write transaction (fsync'd, one at a time in the
    /// embedded store) per made-up device would let anyone slow every
    /// registration down.
    pub async fn unregister(&self, device: &DeviceRef<'_>) -> Result<bool, RegistryError> {
        let node = self
            .keys()?
            .node_id(device.account, device.provider, device.identity);
        let kind = device.kind;
        let found = self.get(&node).await?;
        if !found.is_some_and(|r| r.identity_kind() == kind) {
            return Ok(false);
        }
        let applied = self
            .edit(&node, 0, move |r| match r {
                Some(r) if r.identity_kind() == kind => Edit::Remove,
                _ => Edit::Keep,
            })
            .await?;
        Ok(applied == Edit::Remove)
    }

    /// Removes the registration of `node`, whatever it holds; true if there was one.
    pub async fn remove(&self, node: &str) -> Result<bool, RegistryError> {
        let applied = self
            .edit(node, 0, |r| {
                if r.is_some() {
                    Edit::Remove
                } else {
                    Edit::Keep
                }
            })
            .await?;
        Ok(applied == Edit::Remove)
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
        let token = token.to_owned();
        let applied = self
            .edit(node, 0, move |r| {
                let Some(r) = r.filter(|r| invalid_since_ms.is_none_or(|t| r.updated_ms <= t))
                else {
                    return Edit::Keep;
                };
                if r.token == token {
                    Edit::Remove
                } else if r.voip_token.as_deref() == Some(token.as_str()) {
                    let mut updated = r.clone();
                    updated.voip_token = None;
                    Edit::Put(Box::new(updated))
                } else {
                    Edit::Keep
                }
            })
            .await?;
        Ok(match applied {
            Edit::Remove => DeadToken::Removed,
            Edit::Put(_) => DeadToken::VoipTokenForgotten,
            Edit::Keep => DeadToken::Kept,
        })
    }

    /// Every outbox entry as stored: `(key, value)`.
    pub async fn outbox_load(&self) -> Result<Vec<(String, Vec<u8>)>, RegistryError> {
        self.keys()?;
        let load = async {
            match &self.inner.backend {
                Backend::Embedded(store) => {
                    let store = store.clone();
                    blocking(move || store.outbox_load()).await
                }
                Backend::Redis(store) => store.outbox_load(None).await,
            }
        };
        self.timed(observed::Operation::OutboxLoad, Box::pin(load))
            .await
    }

    /// The outbox entries of the nodes in `shards` (see [`shard_of`]): what a
    /// gateway that takes over those shards must resume.
    pub async fn outbox_load_shards(
        &self,
        shards: &[u32],
    ) -> Result<Vec<(String, Vec<u8>)>, RegistryError> {
        self.keys()?;
        match &self.inner.backend {
            Backend::Embedded(_) => {
                let count = self.inner.shards;
                let mut entries = self.outbox_load().await?;
                entries
                    .retain(|(key, _)| shards.contains(&shard_of(node_of_outbox_key(key), count)));
                Ok(entries)
            }
            Backend::Redis(store) => store.outbox_load(Some(shards)).await,
        }
    }

    /// The number of shards node ids are spread over (`store.shards`).
    pub fn shards(&self) -> u32 {
        self.inner.shards
    }

    /// How many registrations there are.
    pub async fn count(&self) -> Result<u64, RegistryError> {
        self.keys()?;
        match &self.inner.backend {
            Backend::Embedded(store) => {
                let store = store.clone();
                blocking(move || store.count()).await
            }
            Backend::Redis(store) => store.count().await,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, RegistryError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| RegistryError::Stopped)?
}
