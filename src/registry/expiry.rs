//! Registrations never published to expire: an account (or a script using
//! many) registering devices its server never publishes for fills the store
//! otherwise, and the per-account cap would count them for ever.
//!
//! A registration is marked published by its first accepted publish (one
//! write in its life); one still unmarked whose last registration is older
//! than `registrations.unpublished_expiry_hours` is removed. Apps register
//! again when they connect, which restarts the clock. In a cluster each
//! node expires only the shards it holds, through the same fenced writes.

use super::model::{Edit, decode};
use super::{Backend, Registration, Registry, RegistryError, blocking};

/// Registrations read at a time from the embedded store.
const PAGE: usize = 10_000;

impl Registry {
    /// Marks `node` as published to (its first publish); nothing if it is.
    pub async fn mark_published(&self, node: &str) -> Result<(), RegistryError> {
        self.edit(node, 0, |r| match r {
            Some(r) if r.unpublished => {
                let mut published = r.clone();
                published.unpublished = false;
                Edit::Put(Box::new(published))
            }
            _ => Edit::Keep,
        })
        .await
        .map(|_| ())
    }

    /// Removes the registrations never published to and last registered
    /// more than `older_than` ago; returns how many. Reads a page (embedded)
    /// or a shard (Redis) at a time, so memory stays small.
    pub async fn expire_unpublished(
        &self,
        older_than: std::time::Duration,
    ) -> Result<u64, RegistryError> {
        let age = u64::try_from(older_than.as_millis()).unwrap_or(u64::MAX);
        let cutoff = crate::clock::unix_ms().saturating_sub(age);
        let mut expired = 0;
        match &self.inner.backend {
            Backend::Embedded(store) => {
                let mut after: Option<String> = None;
                loop {
                    let (store, from) = (store.clone(), after.clone());
                    let page = blocking(move || store.registrations_after(from, PAGE)).await?;
                    let Some((last, _)) = page.last() else { break };
                    after = Some(last.clone());
                    expired += self.expire_among(page, cutoff).await?;
                }
            }
            Backend::Redis(store) => {
                let shards: Vec<u32> = match &self.inner.fences {
                    Some(fences) => fences.held().into_iter().map(|(s, _)| s).collect(),
                    None => (0..self.inner.shards).collect(),
                };
                for shard in shards {
                    let stored = store.shard_registrations(shard).await?;
                    expired += self.expire_among(stored, cutoff).await?;
                }
            }
        }
        Ok(expired)
    }

    async fn expire_among(
        &self,
        stored: Vec<(String, Vec<u8>)>,
        cutoff: u64,
    ) -> Result<u64, RegistryError> {
        let stale = move |r: &Registration| r.unpublished && r.updated_ms <= cutoff;
        let mut expired = 0;
        for (node, bytes) in stored {
            if !decode(&node, &bytes).is_ok_and(|r| stale(&r)) {
                continue;
            }
            // Decided again inside the write: a publish or a registration
            // since the read keeps it.
            let applied = self
                .edit(&node, 0, move |r| match r {
                    Some(r) if stale(r) => Edit::Remove,
                    _ => Edit::Keep,
                })
                .await;
            match applied {
                Ok(Edit::Remove) => expired += 1,
                Ok(_) | Err(RegistryError::NotOwner { .. } | RegistryError::Fenced { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(expired)
    }
}
