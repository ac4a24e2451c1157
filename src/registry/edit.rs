//! Edits of one registration, atomic in either store: the embedded
//! store's writer applies them in its group commit, Redis by
//! compare-and-set; the cache learns of each.

use super::model::{self, Edit};
use super::redis::Cas;
use super::{
    Backend, Registration, RegistrationCache, Registry, RegistryError, embedded, observed, shard_of,
};

/// How many times a Redis compare-and-set is retried when the value changed
/// between the read and the write.
const EDIT_ATTEMPTS: usize = 16;

impl Registry {
    /// Applies `decide` to the registration of `node` atomically: a write
    /// transaction in the embedded store, a compare-and-set (retried while the
    /// value changes underneath) in Redis. A new registration is refused when
    /// its account already holds `cap` (0: no cap). Returns what was applied.
    pub(super) async fn edit(
        &self,
        node: &str,
        cap: u32,
        decide: impl Fn(Option<&Registration>) -> Edit + Send + 'static,
    ) -> Result<Edit, RegistryError> {
        // Boxed: the edit's future is large, and every caller's future
        // would otherwise carry it (a debug build's stack overflowed).
        self.timed(
            observed::Operation::Write,
            Box::pin(self.edit_untimed(node, cap, decide)),
        )
        .await
    }

    async fn edit_untimed(
        &self,
        node: &str,
        cap: u32,
        decide: impl Fn(Option<&Registration>) -> Edit + Send + 'static,
    ) -> Result<Edit, RegistryError> {
        self.keys()?;
        let store = match &self.inner.backend {
            Backend::Embedded(_) => {
                let writer = self.inner.writer.as_ref().ok_or(RegistryError::Stopped)?;
                let job = embedded::EditJob {
                    node: node.to_owned(),
                    cap,
                    decide: Box::new(decide),
                };
                let epoch = self.inner.cache.as_ref().map(RegistrationCache::epoch);
                let applied = writer.edit(job).await;
                if let (Some(cache), Some(epoch)) = (&self.inner.cache, epoch) {
                    match &applied {
                        Ok(edit) => cache.applied(node, edit, epoch),
                        // It may have landed (a commit whose journal write
                        // failed, say): read it again next time.
                        Err(_) => cache.invalidate(node),
                    }
                }
                return applied;
            }
            Backend::Redis(store) => store,
        };
        let shard = shard_of(node, self.inner.shards);
        let Some(fence) = self.fence(shard) else {
            if let Some(f) = &self.inner.fences {
                f.count_refused(1);
            }
            return Err(RegistryError::NotOwner { shard });
        };
        for _ in 0..EDIT_ATTEMPTS {
            let epoch = self.inner.cache.as_ref().map(RegistrationCache::epoch);
            let raw = store.get(node).await?;
            let current = raw
                .as_deref()
                .map(|bytes| model::decode(node, bytes))
                .transpose()?;
            let edit = decide(current.as_ref());
            let new = match &edit {
                Edit::Keep => return Ok(edit),
                Edit::Remove => None,
                Edit::Put(r) => Some(model::encode(r)?),
            };
            let added = match (&current, &edit) {
                (None, Edit::Put(r)) => Some(r.account_hash.as_str()),
                _ => None,
            };
            if let Some(account) = added
                && cap > 0
                && !store.account_has_room(account, cap).await?
            {
                return Err(RegistryError::AccountFull { cap });
            }
            match store
                .compare_and_set(node, raw.as_deref(), new.as_deref(), &fence)
                .await?
            {
                Cas::Written => {
                    // After the write: a read that raced with it is not cached.
                    if let (Some(cache), Some(epoch)) = (&self.inner.cache, epoch) {
                        cache.applied(node, &edit, epoch);
                    }
                    let removed = match (&current, &edit) {
                        (Some(r), Edit::Remove) => Some(r.account_hash.as_str()),
                        _ => None,
                    };
                    if let Some((account, present)) =
                        added.map(|a| (a, true)).or(removed.map(|a| (a, false)))
                    {
                        // Stored already. A set not updated is off by one: a
                        // failed add lets one more registration through the
                        // cap, a failed removal leaves a stale entry, which
                        // the cap check drops.
                        if let Err(e) = store.account_node(account, node, present).await {
                            tracing::warn!(
                                "account's node set not updated: {}",
                                crate::errors::chain(&e)
                            );
                        }
                    }
                    return Ok(edit);
                }
                Cas::Changed => {}
                Cas::Fenced => {
                    self.lost(shard, &fence);
                    return Err(RegistryError::Fenced { shard });
                }
            }
        }
        Err(RegistryError::Contended {
            node: node.to_owned(),
            attempts: EDIT_ATTEMPTS,
        })
    }
}
