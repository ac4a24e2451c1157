//! Shards coming and going (cluster): the pool takes the outbox entries of
//! shards this node now owns, lets go of those it hands over (gracefully:
//! nothing new, in-flight requests finished and committed first), and drops
//! at once those it lost.

use super::Pool;
use crate::delivery::outbox::OutboxEntry;
use crate::registry::shard_of;
use actix::prelude::*;
use std::collections::HashSet;
use tokio::sync::oneshot;
use tracing::{info, warn};

/// The outbox entries of shards this node has just taken; the pool resumes them.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Acquire {
    /// The shards taken (no longer leaving, if they were).
    pub shards: Vec<u32>,
    /// Their entries for this pool's provider.
    pub entries: Vec<OutboxEntry>,
}

/// Hands `shards` over: refuses new publishes for them, lets their requests
/// in flight finish, commits, and forgets their entries (the outbox keeps
/// them for the next owner). True once done; false if the commit failed.
#[derive(Message)]
#[rtype(result = "bool")]
pub(crate) struct Release(pub Vec<u32>);

/// `shards` are gone (taken by another node, or this node fenced itself):
/// forget their entries now, in flight or not, and what was not committed.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Lost(pub Vec<u32>);

/// A release waiting for requests in flight.
pub(super) struct Releasing {
    shards: HashSet<u32>,
    done: oneshot::Sender<bool>,
}

impl Pool {
    fn shard(&self, node: &str) -> u32 {
        shard_of(node, self.registry.shards())
    }

    /// Whether publishes for `node` may be admitted here now.
    pub(super) fn admits(&self, node: &str) -> bool {
        !self.leaving.contains(&self.shard(node)) && self.registry.holds(node)
    }

    /// Forgets the entries of leaving shards that are not in flight, and
    /// finishes each release whose shards hold nothing more.
    ///
    /// Runs after every completed request, so it returns at once unless a
    /// release waits: a finished release's shards stay `leaving` (refused)
    /// until they are taken again or lost, and scanning every entry for
    /// them after each request, for the rest of the process's life, took
    /// 5% of the session threads on every node that had handed a shard over
    /// (BENCHMARKS.md, "Forwarding: results handed over per thread").
    pub(super) fn progress_releases(&mut self, ctx: &mut Context<Self>) {
        if self.releasing.is_empty() {
            return;
        }
        let shards = self.registry.shards();
        let leaving = self.leaving.clone();
        let remaining = self
            .state
            .unload(|node| leaving.contains(&shard_of(node, shards)), false);
        if remaining > 0 {
            return;
        }
        let finished: Vec<Releasing> = self.releasing.drain(..).collect();
        if finished.is_empty() {
            return;
        }
        let committed = self.commit(ctx);
        ctx.spawn(
            async move {
                let ok = committed.await.unwrap_or(false);
                for r in finished {
                    let _ = r.done.send(ok);
                }
            }
            .into_actor(self),
        );
    }

    /// Forgets every change not yet committed for `shards`.
    fn discard_dirty(&mut self, shards: &HashSet<u32>) {
        let count = self.registry.shards();
        self.dirty.retain(|key, _| {
            !shards.contains(&shard_of(crate::registry::node_of_outbox_key(key), count))
        });
    }

    /// Called when Redis refused a flush's writes for `shards`: they are gone.
    pub(super) fn shards_lost(&mut self, shards: &[u32]) {
        let set: HashSet<u32> = shards.iter().copied().collect();
        let count = self.registry.shards();
        let dropped_before = self.state.len();
        self.state
            .unload(|node| set.contains(&shard_of(node, count)), true);
        self.discard_dirty(&set);
        warn!(
            provider = %self.id,
            shards = set.len(),
            entries = dropped_before.saturating_sub(self.state.len()),
            "shards taken over by another node: their pending pushes are its to send now"
        );
    }
}

impl Handler<Acquire> for Pool {
    type Result = ();

    fn handle(&mut self, msg: Acquire, ctx: &mut Context<Self>) {
        for shard in &msg.shards {
            self.leaving.remove(shard);
        }
        if !msg.entries.is_empty() {
            info!(provider = %self.id, shards = msg.shards.len(), pending = msg.entries.len(), "resuming the outbox of shards taken over");
        }
        self.loaded = true;
        self.state.load(msg.entries);
        self.pump(ctx);
    }
}

impl Handler<Release> for Pool {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, msg: Release, ctx: &mut Context<Self>) -> Self::Result {
        let (done, rx) = oneshot::channel();
        self.leaving.extend(msg.0.iter().copied());
        self.releasing.push(Releasing {
            shards: msg.0.into_iter().collect(),
            done,
        });
        self.progress_releases(ctx);
        Box::pin(async move { rx.await.unwrap_or(false) })
    }
}

impl Handler<Lost> for Pool {
    type Result = ();

    fn handle(&mut self, msg: Lost, _ctx: &mut Context<Self>) {
        for shard in &msg.0 {
            self.leaving.remove(shard);
        }
        self.releasing
            .retain(|r| !r.shards.iter().any(|s| msg.0.contains(s)));
        self.shards_lost(&msg.0);
    }
}
