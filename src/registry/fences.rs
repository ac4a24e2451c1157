//! The shards this node owns in a cluster, each with the owner record it took
//! it under (`node|incarnation|epoch`). Every write of a shard's registrations
//! and outbox carries that record, and Redis refuses the write unless the
//! shard's owner record is still exactly it: a node that was paused or cut off
//! while another took the shard cannot write after it (fencing).
//!
//! A shard is taken in two steps: held (its record may be written under:
//! the pools load its outbox, send and record outcomes), then admitting (new
//! work is accepted for it), so no publish can race its stored entries.
//!
//! The cluster coordinator is the only one that adds shards; writers drop a
//! shard when Redis refuses their record, so they stop at the first refusal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Notify;

/// A shard held: its record, and whether new work is admitted for it yet.
#[derive(Clone)]
struct Held {
    token: Arc<str>,
    admitting: bool,
}

/// Owner records held, by shard, and until when they may be used.
pub struct Fences {
    held: RwLock<Vec<Option<Held>>>,
    /// Past this instant (the last renewal plus `fence_after_ms`) nothing is
    /// held, whatever the coordinator has managed to do: a node that was
    /// paused stops writing and sending the moment it runs again.
    valid_until: std::sync::Mutex<Option<crate::clock::Instant>>,
    /// Woken whenever a shard is taken, for callers waiting on one.
    taken: Notify,
    /// Writes Redis refused because the record had changed.
    refused: AtomicU64,
}

impl Fences {
    /// No shard held, of `shards`.
    pub fn new(shards: u32) -> Arc<Self> {
        Arc::new(Self {
            held: RwLock::new(vec![None; shards as usize]),
            valid_until: std::sync::Mutex::new(None),
            taken: Notify::new(),
            refused: AtomicU64::new(0),
        })
    }

    /// The record `shard` is held under, if this node owns it.
    pub fn token(&self, shard: u32) -> Option<Arc<str>> {
        if !self.valid() {
            return None;
        }
        self.read()
            .get(shard as usize)
            .and_then(|h| h.as_ref().map(|h| h.token.clone()))
    }

    /// Whether this node owns `shard` and admits new work for it.
    pub fn holds(&self, shard: u32) -> bool {
        self.valid()
            && self
                .read()
                .get(shard as usize)
                .is_some_and(|h| h.as_ref().is_some_and(|h| h.admitting))
    }

    /// Whether the lease behind the records is still good by this node's clock.
    pub fn valid(&self) -> bool {
        let until = *self
            .valid_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        until.is_none_or(|t| crate::clock::now() < t)
    }

    /// The lease was renewed: the records may be used until `until`.
    pub fn valid_until(&self, until: crate::clock::Instant) {
        *self
            .valid_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(until);
    }

    /// Records that this node now owns `shard` under `token`; its outbox
    /// may be written, but no new work is admitted until [`Self::admit`].
    pub fn hold(&self, shard: u32, token: Arc<str>) {
        if let Some(slot) = self.write().get_mut(shard as usize) {
            *slot = Some(Held {
                token,
                admitting: false,
            });
        }
    }

    /// Admits new work for `shard`, held since [`Self::hold`] (its stored
    /// entries are loaded).
    pub fn admit(&self, shard: u32) {
        if let Some(Some(held)) = self.write().get_mut(shard as usize) {
            held.admitting = true;
        }
        self.taken.notify_waiters();
    }

    /// Gives `shard` up; true if it was held.
    pub fn release(&self, shard: u32) -> bool {
        self.write()
            .get_mut(shard as usize)
            .and_then(Option::take)
            .is_some()
    }

    /// Gives up `shard` if it is still held under `token`: Redis refused a
    /// write made with it. Counts the refusal.
    pub fn refused(&self, shard: u32, token: &str) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = self.write().get_mut(shard as usize)
            && slot.as_ref().is_some_and(|h| &*h.token == token)
        {
            *slot = None;
        }
    }

    /// Counts `n` writes refused here, before Redis: the shard (or the
    /// lease) was no longer held.
    pub fn count_refused(&self, n: usize) {
        self.refused.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Writes refused so far because the shard had moved on.
    pub fn refusals(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Every shard held, with its record (lease validity aside).
    pub fn held(&self) -> Vec<(u32, Arc<str>)> {
        self.read()
            .iter()
            .enumerate()
            .filter_map(|(i, h)| Some((u32::try_from(i).ok()?, h.as_ref()?.token.clone())))
            .collect()
    }

    /// Gives up every shard (the node fenced itself); returns them.
    pub fn release_all(&self) -> Vec<u32> {
        let mut held = self.write();
        let mut out = Vec::new();
        for (i, slot) in held.iter_mut().enumerate() {
            if slot.take().is_some() {
                out.extend(u32::try_from(i).ok());
            }
        }
        out
    }

    /// Waits up to `limit` for this node to own `shard` (it is being handed
    /// over to it); true once it does.
    pub async fn wait_held(&self, shard: u32, limit: Duration) -> bool {
        let deadline = crate::clock::now() + limit;
        loop {
            let taken = self.taken.notified();
            if self.holds(shard) {
                return true;
            }
            if tokio::time::timeout_at(deadline, taken).await.is_err() {
                return self.holds(shard);
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Option<Held>>> {
        // Every update is one slot assignment: a poisoned lock is consistent.
        self.held
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Option<Held>>> {
        self.held
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_drops_only_the_record_it_was_made_with() {
        let f = Fences::new(4);
        f.hold(1, "a|1|5".into());
        assert!(!f.holds(1), "held, not admitting yet");
        assert_eq!(f.token(1).as_deref(), Some("a|1|5"), "but writable");
        f.admit(1);
        f.refused(1, "a|1|4");
        assert!(f.holds(1), "an older record's refusal leaves the new one");
        f.refused(1, "a|1|5");
        assert!(!f.holds(1));
        assert_eq!(f.refusals(), 2);
        f.hold(7, "x".into());
        assert!(f.held().is_empty(), "out of range is ignored");
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_shard_ends_when_it_is_taken_or_at_the_limit() {
        let f = Fences::new(4);
        assert!(!f.wait_held(2, Duration::from_millis(100)).await);
        let g = f.clone();
        let waiter = tokio::spawn(async move { g.wait_held(2, Duration::from_secs(5)).await });
        tokio::task::yield_now().await;
        f.hold(2, "a|1|1".into());
        f.admit(2);
        assert!(waiter.await.unwrap_or(false));
        assert_eq!(f.release_all(), vec![2]);
    }
}
