//! What a registry does differently on a cluster node: every write of a
//! shard goes only to a shard this node owns, under its owner record (see
//! `fences`), and the outbox writes of shards it lost are refused.

use super::redis::RedisStore;
use super::shard::{node_of_outbox_key, shard_of};
use super::{Backend, OutboxWrite, Registry, RegistryError};
use std::collections::HashMap;
use std::sync::Arc;
use tracing::warn;

impl Registry {
    /// Applies outbox writes in order, durably, at once. Shared, so a caller can
    /// keep the writes to retry them without copying. In a cluster, the writes
    /// of shards this node no longer owns are refused (here or by Redis):
    /// returns those shards; everything else is durable.
    pub async fn outbox_apply(
        &self,
        writes: Arc<[OutboxWrite]>,
    ) -> Result<Vec<u32>, RegistryError> {
        self.timed(
            super::observed::Operation::OutboxWrite,
            Box::pin(self.outbox_apply_untimed(writes)),
        )
        .await
    }

    async fn outbox_apply_untimed(
        &self,
        writes: Arc<[OutboxWrite]>,
    ) -> Result<Vec<u32>, RegistryError> {
        self.keys()?;
        let store = match &self.inner.backend {
            Backend::Embedded(_) => {
                let writer = self.inner.writer.as_ref().ok_or(RegistryError::Stopped)?;
                return writer.outbox(writes).await.map(|()| Vec::new());
            }
            Backend::Redis(store) => store,
        };
        let Some(fences) = &self.inner.fences else {
            let all: Vec<&OutboxWrite> = writes.iter().collect();
            return store.outbox_apply(&all, None).await;
        };
        // The record of each shard touched (a few per flush), not of all
        // the shards held; none past the lease's validity.
        let shards = self.inner.shards;
        let valid = fences.valid();
        let mut held: HashMap<u32, Option<Arc<str>>> = HashMap::new();
        let mut mine: Vec<&OutboxWrite> = Vec::with_capacity(writes.len());
        let mut refused: Vec<u32> = Vec::new();
        for w in writes.iter() {
            let shard = shard_of(node_of_outbox_key(&w.key), shards);
            let token = held
                .entry(shard)
                .or_insert_with(|| valid.then(|| fences.token(shard)).flatten());
            if token.is_some() {
                mine.push(w);
            } else {
                refused.push(shard);
            }
        }
        fences.count_refused(refused.len());
        if !mine.is_empty() {
            let fence = |shard| {
                held.get(&shard)
                    .cloned()
                    .flatten()
                    .unwrap_or_else(|| Arc::from(""))
            };
            for shard in store.outbox_apply(&mine, Some(&fence)).await? {
                if let Some(Some(token)) = held.get(&shard) {
                    self.lost(shard, token);
                }
                refused.push(shard);
            }
        }
        refused.sort_unstable();
        refused.dedup();
        Ok(refused)
    }

    /// The record this node writes `shard` under: empty outside a cluster
    /// (not checked), `None` when the shard is not this node's.
    pub(super) fn fence(&self, shard: u32) -> Option<Arc<str>> {
        match &self.inner.fences {
            None => Some(Arc::from("")),
            Some(f) => f.token(shard),
        }
    }

    /// Redis refused a write of `shard` made under `token`: the shard is gone.
    pub(super) fn lost(&self, shard: u32, token: &str) {
        if let Some(f) = &self.inner.fences {
            f.refused(shard, token);
        }
        self.clear_cache();
        warn!(
            shard,
            "another node owns this shard now; its writes from here are refused"
        );
    }

    /// Whether this node may write `node`'s registration and outbox now
    /// (always, outside a cluster).
    pub fn holds(&self, node: &str) -> bool {
        self.inner
            .fences
            .as_ref()
            .is_none_or(|f| f.holds(shard_of(node, self.inner.shards)))
    }

    /// Whether this node may send pushes now: outside a cluster always; in a
    /// cluster while its lease is good by its own clock (a node that was
    /// paused past it sends nothing until it has joined again).
    pub(crate) fn may_send(&self) -> bool {
        self.inner.fences.as_ref().is_none_or(|f| f.valid())
    }

    /// Whether this registry belongs to a cluster node (writes are fenced).
    pub fn is_fenced(&self) -> bool {
        self.inner.fences.is_some()
    }

    /// Forgets every cached registration: a shard left this node.
    pub(crate) fn clear_cache(&self) {
        if let Some(cache) = &self.inner.cache {
            cache.clear();
        }
    }

    /// The Redis store, for cluster membership and ownership.
    pub(crate) fn shared(&self) -> Result<&RedisStore, RegistryError> {
        match &self.inner.backend {
            Backend::Redis(store) => Ok(store),
            Backend::Embedded(_) => Err(RegistryError::NotShared),
        }
    }
}
