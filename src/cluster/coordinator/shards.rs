//! The shards' side of a round: check the records held, hand over what is
//! assigned elsewhere, take what is assigned here.

use super::Coordinator;
use crate::clock::{self, Instant};
use crate::registry::{Member, RegistryError, shard_owner_key};
use std::collections::HashSet;
use std::sync::Arc;
use tracing::{info, warn};

impl Coordinator {
    /// Drops the shards whose owner record is no longer ours (taken by
    /// another node while this one was slow).
    pub(super) async fn check_held(&mut self) -> Result<(), RegistryError> {
        let held = self.shared.fences.held();
        if held.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = held.iter().map(|(s, _)| shard_owner_key(*s)).collect();
        let records = self.registry.shared()?.records(&keys).await?;
        let lost: Vec<u32> = held
            .iter()
            .zip(records)
            .filter(|((_, token), record)| record.raw != **token)
            .map(|((s, _), _)| *s)
            .collect();
        if !lost.is_empty() {
            warn!(
                shards = lost.len(),
                "shards were taken over by another node"
            );
            self.lose(&lost, "lost");
        }
        Ok(())
    }

    pub(super) fn lose(&self, shards: &[u32], kind: &str) {
        for &s in shards {
            self.shared.fences.release(s);
        }
        self.dispatcher.lose(shards);
        self.registry.clear_cache();
        self.shared
            .metrics
            .handoffs
            .add(&[kind], shards.len() as u64);
    }

    /// Hands over, gracefully, held shards assigned elsewhere (at most
    /// `max_moves`): the pools finish and commit them, then the records are
    /// released for the new owner to take.
    /// Returns true when more remain to hand over than one round moves.
    pub(super) async fn hand_over(&mut self, mine: &HashSet<u32>) -> Result<bool, RegistryError> {
        let mut moving: Vec<(u32, Arc<str>)> = self
            .shared
            .fences
            .held()
            .into_iter()
            .filter(|(s, _)| !mine.contains(s))
            .collect();
        if moving.is_empty() {
            return Ok(false);
        }
        let more = moving.len() > self.max_moves;
        moving.truncate(self.max_moves);
        // Bounded by the renewal period, so the next renewal is never late:
        // what is not finished by then is tried again next round.
        self.release(&moving, clock::now() + self.timings.renew)
            .await?;
        Ok(more)
    }

    /// Hands `moving` over by `deadline`: the pools finish and commit, then
    /// the records are released. What is not finished in time stays held.
    pub(super) async fn release(
        &self,
        moving: &[(u32, Arc<str>)],
        deadline: Instant,
    ) -> Result<(), RegistryError> {
        let shards: Vec<u32> = moving.iter().map(|(s, _)| *s).collect();
        if !self.dispatcher.release(&shards, deadline).await {
            warn!(
                shards = shards.len(),
                "hand-over not finished in time; the shards stay here for now"
            );
            return Ok(());
        }
        for &s in &shards {
            self.shared.fences.release(s);
        }
        self.registry.clear_cache();
        let records: Vec<(String, String)> = moving
            .iter()
            .map(|(s, t)| (shard_owner_key(*s), t.to_string()))
            .collect();
        let released = self.registry.shared()?.release(&records).await?;
        self.shared
            .metrics
            .handoffs
            .add(&["released"], released as u64);
        info!(shards = released, "shards handed over");
        Ok(())
    }

    /// Takes shards assigned here that are free: never taken, released, or
    /// held by a node (incarnation) that is no longer a member. Returns
    /// true if some are still held by a live peer (handing them over).
    pub(super) async fn take(
        &mut self,
        mine: &HashSet<u32>,
        members: &[Member],
    ) -> Result<bool, RegistryError> {
        let mut wanted: Vec<u32> = mine
            .iter()
            .copied()
            .filter(|&s| !self.shared.fences.holds(s))
            .collect();
        if wanted.is_empty() {
            return Ok(false);
        }
        // More than one round takes: the next round comes soon.
        let mut waiting = wanted.len() > self.max_moves;
        wanted.truncate(self.max_moves);
        let store = self.registry.shared()?;
        let keys: Vec<String> = wanted.iter().map(|s| shard_owner_key(*s)).collect();
        let records = store.records(&keys).await?;
        let alive = store.holders_alive(members, &records).await?;
        let mut free = Vec::new();
        for ((&shard, record), alive) in wanted.iter().zip(records).zip(alive) {
            match &record.holder {
                Some(h) if alive && h.0 != self.shared.node => waiting = true,
                _ => free.push((shard, record)),
            }
        }
        if free.is_empty() {
            return Ok(waiting);
        }
        let claims: Vec<(String, String)> = free
            .iter()
            .map(|(s, r)| (shard_owner_key(*s), r.raw.clone()))
            .collect();
        let holder = format!("{}|{}", self.shared.node, self.incarnation);
        let taken: Vec<(u32, String)> = free
            .iter()
            .zip(store.claim(&claims, &holder).await?)
            .filter_map(|((s, _), new)| Some((*s, new?)))
            .collect();
        if taken.is_empty() {
            return Ok(true);
        }
        let shards: Vec<u32> = taken.iter().map(|(s, _)| *s).collect();
        let stolen = free
            .iter()
            .filter(|(s, r)| r.holder.is_some() && shards.contains(s))
            .count();
        // Held first, so the pools may record the outcomes of what they
        // resume; admitting only once the stored entries are in the pools,
        // so no publish races them.
        for (shard, record) in &taken {
            self.shared.fences.hold(*shard, Arc::from(record.as_str()));
        }
        if let Err(e) = self.dispatcher.acquire(&self.registry, &shards).await {
            // Taken again next round, from our own record, with a new epoch.
            for &shard in &shards {
                self.shared.fences.release(shard);
            }
            self.dispatcher.lose(&shards);
            return Err(e);
        }
        for &shard in &shards {
            self.shared.fences.admit(shard);
        }
        self.shared
            .metrics
            .handoffs
            .add(&["acquired"], taken.len() as u64);
        info!(
            shards = taken.len(),
            from_dead_members = stolen,
            "shards taken"
        );
        Ok(waiting)
    }
}
