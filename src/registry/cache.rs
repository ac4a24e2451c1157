//! A bounded in-process cache of registrations, so that a publish for a known
//! node costs no store round trip.
//!
//! Two generations of a map: lookups read both, inserts go to the young one, and
//! when it is full or older than half the time-to-live it becomes the old one and
//! the previous old one is dropped. So at most `capacity` entries are held and no
//! entry is served longer than the time-to-live, without per-entry bookkeeping.
//! Writers invalidate explicitly; the time-to-live only bounds staleness should
//! another process change the store behind our back.

use super::Registration;
use super::model::Edit;
use crate::clock::{self, Instant};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Generations {
    young: HashMap<String, Arc<Registration>>,
    old: HashMap<String, Arc<Registration>>,
    /// No entry of `young` was read from the store before this.
    young_since: Instant,
    /// No entry of `old` was read from the store before this.
    old_since: Instant,
}

/// Registrations by node, bounded in count and age.
pub(crate) struct RegistrationCache {
    inner: Mutex<Generations>,
    half_capacity: usize,
    ttl: Duration,
    /// Bumped by every invalidation, so that a read that raced with a change
    /// does not put the value it read before the change into the cache.
    epoch: AtomicU64,
}

impl RegistrationCache {
    /// A cache of at most `capacity` entries, each used for at most `ttl`.
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            inner: Mutex::new(Generations {
                young: HashMap::new(),
                old: HashMap::new(),
                young_since: clock::now(),
                old_since: clock::now(),
            }),
            half_capacity: (capacity / 2).max(1),
            ttl,
            epoch: AtomicU64::new(0),
        }
    }

    /// The cached registration of `node`, if fresh: shared, not copied (a
    /// registration is some eight strings, and every publish reads one).
    pub(crate) fn get(&self, node: &str) -> Option<Arc<Registration>> {
        let mut g = self.lock();
        self.rotate_if_due(&mut g);
        g.young.get(node).or_else(|| g.old.get(node)).cloned()
    }

    /// Take before reading the store; pass to [`Self::insert`].
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Remembers `registration`, read from the store after `epoch` was taken,
    /// unless something was invalidated since.
    pub(crate) fn insert(&self, registration: Arc<Registration>, epoch: u64) {
        let mut g = self.lock();
        if self.epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        self.rotate_if_due(&mut g);
        if g.young.len() >= self.half_capacity {
            rotate(&mut g, clock::now());
        }
        g.old.remove(&registration.node);
        g.young.insert(registration.node.clone(), registration);
    }

    /// Forgets `node`: called on every change to its registration.
    pub(crate) fn invalidate(&self, node: &str) {
        let mut g = self.lock();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        g.young.remove(node);
        g.old.remove(node);
    }

    /// Records a write of `node` (`written`: its new value, `None` when
    /// removed) made after `epoch` was taken: the entry is forgotten, and the
    /// new value kept unless something else was invalidated since `epoch`
    /// (another write of ours may have landed after this one; then the next
    /// read fetches whichever is last). Keeping it spares the next publish a
    /// store read after the registration's first publish marks it.
    pub(crate) fn written(&self, node: &str, written: Option<Arc<Registration>>, epoch: u64) {
        let mut g = self.lock();
        let before = self.epoch.fetch_add(1, Ordering::SeqCst);
        g.young.remove(node);
        g.old.remove(node);
        if let Some(registration) = written.filter(|_| before == epoch) {
            self.rotate_if_due(&mut g);
            if g.young.len() >= self.half_capacity {
                rotate(&mut g, clock::now());
            }
            g.young.insert(registration.node.clone(), registration);
        }
    }

    /// Records `edit` of `node`, applied to the store after `epoch` (taken
    /// before the store was read for it) was taken: see [`Self::written`].
    pub(crate) fn applied(&self, node: &str, edit: &Edit, epoch: u64) {
        let value = match edit {
            Edit::Keep => return,
            Edit::Put(r) => Some(Arc::new(r.as_ref().clone())),
            Edit::Remove => None,
        };
        self.written(node, value, epoch);
    }

    /// Forgets everything: called when a shard is no longer this node's, so
    /// nothing read while it was is served after another node took it.
    pub(crate) fn clear(&self) {
        let mut g = self.lock();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        g.young.clear();
        g.old.clear();
    }

    /// Every publish comes through here: the clock is read once.
    fn rotate_if_due(&self, g: &mut Generations) {
        let now = clock::now();
        if now - g.young_since >= self.ttl / 2 {
            rotate(g, now);
        }
        if now - g.old_since >= self.ttl {
            g.old.clear();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // A panic while holding the lock cannot leave the maps inconsistent
        // (every operation is a single map call), so a poisoned lock is usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn rotate(g: &mut Generations, now: Instant) {
    g.old = std::mem::take(&mut g.young);
    g.old_since = g.young_since;
    g.young_since = now;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(node: &str) -> Arc<Registration> {
        Arc::new(Registration::sample(node, "h"))
    }

    #[test]
    fn bounded_and_invalidated() {
        let cache = RegistrationCache::new(4, Duration::from_secs(600));
        for i in 0..10 {
            cache.insert(registration(&format!("n{i}")), cache.epoch());
        }
        let held = (0..10)
            .filter(|i| cache.get(&format!("n{i}")).is_some())
            .count();
        assert!(held <= 4, "{held} entries held");
        assert!(cache.get("n9").is_some(), "the latest insert is kept");
        cache.invalidate("n9");
        assert!(cache.get("n9").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire() {
        let cache = RegistrationCache::new(100, Duration::from_millis(40));
        cache.insert(registration("a"), cache.epoch());
        assert!(cache.get("a").is_some());
        let before_change = cache.epoch();
        cache.invalidate("b");
        cache.insert(registration("b"), before_change);
        assert!(
            cache.get("b").is_none(),
            "a value read before a change is not cached"
        );
        // A write keeps its value, unless another change came in between.
        let mut marked = Registration::sample("b", "h");
        marked.updated_ms = 7;
        let marked = Arc::new(marked);
        let epoch = cache.epoch();
        cache.written("b", Some(marked.clone()), epoch);
        assert_eq!(cache.get("b"), Some(marked.clone()));
        let epoch = cache.epoch();
        cache.invalidate("other");
        cache.written("b", Some(registration("b")), epoch);
        assert!(cache.get("b").is_none(), "a write overtaken is not cached");
        let epoch = cache.epoch();
        cache.written("b", None, epoch);
        assert!(cache.get("b").is_none(), "a removal is forgotten");
        tokio::time::advance(Duration::from_millis(19)).await;
        assert!(cache.get("a").is_some(), "kept within its time-to-live");
        tokio::time::advance(Duration::from_millis(31)).await;
        assert!(cache.get("a").is_none(), "served past its time-to-live");
    }
}
