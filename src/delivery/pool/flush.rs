//! The pool's group commit: outbox changes collect in `dirty` and go to the
//! store in one transaction per flush; who waits decides when it starts.
//!
//! Changes nobody waits for (a delivered entry's removal, a retry's new due
//! time) do not start a flush of their own: they ride with the next
//! publish's, or go within [`LAZY_FLUSH`]. Losing them in a crash only
//! resends sooner or twice (at-least-once). And flushes start at most every
//! [`MIN_FLUSH_INTERVAL`]: at a moderate rate a commit (an fsync) per one or
//! two publishes took two fifths of the gateway's CPU (BENCHMARKS.md, "A
//! moderate rate: fewer commits, smaller futures").

use super::Pool;
use crate::delivery::state::Persist;
use crate::registry::OutboxWrite;
use actix::prelude::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::{debug, error, info};

/// Pause before flushing again after the store failed.
const FLUSH_RETRY: Duration = Duration::from_secs(1);
/// Longest a change nobody waits for stays unwritten (unless a flush is
/// failing). Bounds what a crash can resend twice beyond the requests in
/// flight: at 2,500 deliveries/s per provider, about 50.
const LAZY_FLUSH: Duration = Duration::from_millis(20);
/// Shortest time between the starts of two flushes: what a publish may wait
/// for company before its commit. Under load a flush takes longer than this
/// and nothing waits.
const MIN_FLUSH_INTERVAL: Duration = Duration::from_millis(2);

/// How long to wait before flushing: `None` for at once. Someone waits
/// (`urgent`): at once, unless the last flush started less than
/// [`MIN_FLUSH_INTERVAL`] ago (`since`); nobody waits: [`LAZY_FLUSH`].
fn flush_delay(urgent: bool, since: Option<Duration>) -> Option<Duration> {
    if !urgent {
        return Some(LAZY_FLUSH);
    }
    match since {
        Some(since) if since < MIN_FLUSH_INTERVAL => Some(MIN_FLUSH_INTERVAL - since),
        _ => None,
    }
}

impl Pool {
    /// Queues `change` for the next flush, a put encoded now: the entry is
    /// not copied, and the flush only moves bytes.
    pub(super) fn persist(&mut self, change: Persist) {
        match change {
            Persist::Put(key) => {
                if let Some(entry) = self.state.entry(&key) {
                    let value = entry.encode();
                    self.dirty.insert(key, Some(value));
                }
            }
            Persist::Delete(key) => {
                self.dirty.insert(key, None);
            }
        }
    }

    /// Flushes what `dirty` holds now; the receiver learns whether it was committed.
    pub(super) fn commit(&mut self, ctx: &mut Context<Self>) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        self.dirty_waiters.push(tx);
        self.flush(ctx);
        rx
    }

    /// Starts a flush of `dirty` unless one is running. With nothing to
    /// write and no flush running, every waiter's changes are committed.
    /// Changes nobody waits for (and no drain) are flushed within
    /// [`LAZY_FLUSH`] instead of at once.
    pub(super) fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing {
            return;
        }
        if self.dirty.is_empty() {
            for waiter in self.dirty_waiters.drain(..) {
                let _ = waiter.send(true);
            }
            return;
        }
        let urgent = !self.dirty_waiters.is_empty() || !self.idle_waiters.is_empty();
        let now = crate::clock::now();
        let since = self.last_flush.map(|t| now - t);
        let Some(wait) = flush_delay(urgent, since) else {
            return self.flush_now(ctx);
        };
        let at = now + wait;
        if self.flush_armed.is_none_or(|armed| at < armed) {
            self.flush_armed = Some(at);
            ctx.run_later(wait, |act, ctx| {
                if act.flush_armed.is_some_and(|t| t <= crate::clock::now()) {
                    act.flush_armed = None;
                }
                act.flush_now(ctx);
            });
        }
    }

    /// Writes what `dirty` holds now in one transaction, unless a flush runs.
    fn flush_now(&mut self, ctx: &mut Context<Self>) {
        if self.flushing || self.dirty.is_empty() {
            return;
        }
        self.flushing = true;
        self.last_flush = Some(crate::clock::now());
        self.metrics.outbox_flushes.inc(&[&self.id]);
        let writes: Arc<[OutboxWrite]> = self
            .dirty
            .drain()
            .map(|(key, value)| OutboxWrite { key, value })
            .collect();
        let waiters = std::mem::take(&mut self.dirty_waiters);
        let registry = self.registry.clone();
        let retry = Arc::clone(&writes);
        ctx.spawn(
            async move { registry.outbox_apply(writes).await }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    act.flushing = false;
                    let ok = match result {
                        Ok(refused) if !refused.is_empty() => {
                            act.shards_lost(&refused);
                            false
                        }
                        Ok(_) => {
                            if let Some(failures) = act.flush_failures.take() {
                                info!(provider = %act.id, failures, "the outbox can be written again; publishes are admitted");
                            }
                            true
                        }
                        Err(e) => {
                            act.flush_failed(&e, &retry, ctx);
                            false
                        }
                    };
                    for waiter in waiters {
                        let _ = waiter.send(ok);
                    }
                    if ok {
                        act.flush(ctx);
                    }
                    act.wake_if_idle();
                }),
        );
    }

    /// Puts the writes of a failed flush back (unless changed since), logs the
    /// first failure of a run, and retries in [`FLUSH_RETRY`].
    fn flush_failed(
        &mut self,
        error: &crate::registry::RegistryError,
        writes: &[OutboxWrite],
        ctx: &mut Context<Self>,
    ) {
        let failures = self.flush_failures.get_or_insert(0);
        *failures += 1;
        if *failures == 1 {
            error!(provider = %self.id, "cannot write the outbox: {}; publishes are refused until it works (retried every second, logged again when it recovers)", crate::errors::chain(error));
        } else {
            debug!(provider = %self.id, "outbox write failed again: {}", crate::errors::chain(error));
        }
        for w in writes {
            self.dirty
                .entry(w.key.clone())
                .or_insert_with(|| w.value.clone());
        }
        ctx.run_later(FLUSH_RETRY, |act, ctx| act.flush(ctx));
    }
}

#[cfg(test)]
mod tests {
    use super::{LAZY_FLUSH, MIN_FLUSH_INTERVAL, flush_delay};
    use std::time::Duration;

    #[test]
    fn a_publish_flushes_at_once_unless_a_flush_just_started() {
        assert_eq!(flush_delay(true, None), None, "the first flush");
        assert_eq!(flush_delay(true, Some(MIN_FLUSH_INTERVAL)), None);
        assert_eq!(flush_delay(true, Some(Duration::from_secs(5))), None);
        assert_eq!(
            flush_delay(true, Some(Duration::from_micros(500))),
            Some(MIN_FLUSH_INTERVAL - Duration::from_micros(500)),
            "waits out the rest of the interval, for company"
        );
    }

    #[test]
    fn changes_nobody_waits_for_go_lazily_whatever_the_last_flush() {
        for since in [None, Some(Duration::ZERO), Some(Duration::from_secs(9))] {
            assert_eq!(flush_delay(false, since), Some(LAZY_FLUSH));
        }
    }
}
