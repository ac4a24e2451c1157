//! Component stream slots: each configured server's `connections` streams
//! are slots (`host:port#n`) held by nodes with the same records as shards
//! (`node|incarnation|epoch`, taken by compare-and-set, stolen only from
//! nodes that are no longer members), spread by the same rendezvous hashing.
//! So each XMPP server sees its configured number of streams cluster-wide,
//! never one per node: stock Prosody accepts one stream per component JID
//! and answers a second with `<conflict/>`, or with
//! `component_conflict_resolve = "kick_old"` lets it replace the first; the
//! nodes never fight over a slot, because only its holder connects.
//!
//! The holder's sessions are opened and closed by the gateway, which
//! watches the set of slots this node holds and reports the sessions still
//! running. A slot handed over is released only once its stream has closed,
//! so the next holder never connects while the old stream is still open
//! (which Prosody would answer with `<conflict/>`).

use super::assign::assign_bounded;
use crate::registry::{Member, RedisStore, RegistryError, slot_key};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// How long a handed-over stream stays closed before its slot is released:
/// time for the server to notice the close, so the next holder's stream is
/// never taken for a second one (Prosody would refuse it with `<conflict/>`).
const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// The slots this node holds, and the set the gateway opens streams for.
pub(crate) struct StreamSlots {
    /// Every slot, in configuration order.
    names: Vec<String>,
    /// Slot index → the record it is held under.
    held: BTreeMap<usize, String>,
    /// Slots handed over whose stream is still closing, with their records.
    closing: BTreeMap<usize, String>,
    /// When each closing slot's session was first seen gone.
    closed_at: BTreeMap<usize, crate::clock::Instant>,
    /// The slots the gateway should have a stream open for.
    open: watch::Sender<BTreeSet<usize>>,
    /// The slots the gateway has a session running for (closing included).
    live: watch::Receiver<BTreeSet<usize>>,
}

impl StreamSlots {
    pub(crate) fn new(
        names: Vec<String>,
        open: watch::Sender<BTreeSet<usize>>,
        live: watch::Receiver<BTreeSet<usize>>,
    ) -> Self {
        Self {
            names,
            held: BTreeMap::new(),
            closing: BTreeMap::new(),
            closed_at: BTreeMap::new(),
            open,
            live,
        }
    }

    fn publish(&self) {
        let set: BTreeSet<usize> = self.held.keys().copied().collect();
        self.open.send_if_modified(|open| {
            let changed = *open != set;
            *open = set;
            changed
        });
    }

    /// Brings the held slots in line with the assignment over `members`;
    /// true while a handed-over stream is still closing (look again soon).
    pub(crate) async fn reconcile(
        &mut self,
        store: &RedisStore,
        members: &[Member],
        me: &str,
        holder: &str,
    ) -> Result<bool, RegistryError> {
        if self.names.is_empty() {
            return Ok(false);
        }
        let names: Vec<&str> = members.iter().map(|m| m.node.as_str()).collect();
        let count = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        let mine: BTreeSet<usize> = assign_bounded(&names, count, 1.0)
            .into_iter()
            .enumerate()
            .filter(|(_, i)| members.get(*i).is_some_and(|m| m.node == me))
            .map(|(slot, _)| slot)
            .collect();
        self.check_held(store).await?;
        self.hand_back(&mine);
        self.release_closed(store).await?;
        self.take(store, &mine, members, holder).await?;
        self.publish();
        Ok(!self.closing.is_empty())
    }

    /// Drops slots whose record is no longer ours.
    async fn check_held(&mut self, store: &RedisStore) -> Result<(), RegistryError> {
        let held: Vec<(usize, String)> = self.held.iter().map(|(i, r)| (*i, r.clone())).collect();
        let keys: Vec<String> = held.iter().map(|(i, _)| self.key(*i)).collect();
        for ((slot, mine), record) in held.iter().zip(store.records(&keys).await?) {
            if record.raw != *mine {
                warn!(slot = %self.name(*slot), "stream slot taken by another node; closing our stream");
                self.held.remove(slot);
            }
        }
        Ok(())
    }

    /// Closes the streams of slots assigned elsewhere; they are released
    /// once closed ([`Self::release_closed`]).
    fn hand_back(&mut self, mine: &BTreeSet<usize>) {
        let leaving: Vec<usize> = self
            .held
            .keys()
            .copied()
            .filter(|i| !mine.contains(i))
            .collect();
        for slot in leaving {
            if let Some(record) = self.held.remove(&slot) {
                info!(slot = %self.name(slot), "stream slot assigned elsewhere; closing our stream");
                self.closing.insert(slot, record);
            }
        }
        self.publish();
    }

    /// Releases the handed-over slots whose stream closed at least
    /// [`CLOSE_GRACE`] ago.
    async fn release_closed(&mut self, store: &RedisStore) -> Result<(), RegistryError> {
        let live = self.live.borrow().clone();
        let now = crate::clock::now();
        for slot in self.closing.keys() {
            if !live.contains(slot) {
                self.closed_at.entry(*slot).or_insert(now);
            }
        }
        let closed: Vec<(usize, String)> = self
            .closing
            .iter()
            .filter(|(i, _)| {
                self.closed_at
                    .get(i)
                    .is_some_and(|t| now - *t >= CLOSE_GRACE)
            })
            .map(|(i, r)| (*i, r.clone()))
            .collect();
        if closed.is_empty() {
            return Ok(());
        }
        let records: Vec<(String, String)> = closed
            .iter()
            .map(|(i, r)| (self.key(*i), r.clone()))
            .collect();
        store.release(&records).await?;
        for (slot, _) in closed {
            self.closing.remove(&slot);
            self.closed_at.remove(&slot);
            info!(slot = %self.name(slot), "stream slot handed over");
        }
        Ok(())
    }

    /// Takes free slots assigned here.
    async fn take(
        &mut self,
        store: &RedisStore,
        mine: &BTreeSet<usize>,
        members: &[Member],
        holder: &str,
    ) -> Result<(), RegistryError> {
        let wanted: Vec<usize> = mine
            .iter()
            .copied()
            .filter(|i| !self.held.contains_key(i))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = wanted.iter().map(|i| self.key(*i)).collect();
        let records = store.records(&keys).await?;
        let alive = store.holders_alive(members, &records).await?;
        let mut claims = Vec::new();
        let mut slots = Vec::new();
        for (((slot, key), record), alive) in wanted.iter().zip(keys).zip(records).zip(alive) {
            if alive {
                continue; // its holder hands it over at its next round
            }
            claims.push((key, record.raw));
            slots.push(*slot);
        }
        for (slot, taken) in slots.into_iter().zip(store.claim(&claims, holder).await?) {
            if let Some(record) = taken {
                info!(slot = %self.name(slot), "stream slot taken; connecting");
                self.held.insert(slot, record);
            }
        }
        Ok(())
    }

    /// Closes every stream at once (the node fenced itself); the records
    /// are left to lapse with the lease.
    pub(crate) fn drop_all(&mut self) {
        self.held.clear();
        self.closing.clear();
        self.closed_at.clear();
        self.publish();
    }

    /// Closes every stream and, once closed (or by `deadline`), releases
    /// the slots (graceful leave).
    pub(crate) async fn release_all(
        &mut self,
        store: &RedisStore,
        deadline: crate::clock::Instant,
    ) {
        let records: Vec<(String, String)> = self
            .held
            .iter()
            .chain(&self.closing)
            .map(|(i, r)| (self.key(*i), r.clone()))
            .collect();
        self.drop_all();
        let mut live = self.live.clone();
        let _ = tokio::time::timeout_at(deadline, live.wait_for(BTreeSet::is_empty)).await;
        let grace_end = deadline.min(crate::clock::now() + CLOSE_GRACE);
        tokio::time::sleep_until(grace_end).await;
        if let Err(e) = store.release(&records).await {
            warn!(
                "stream slots not released (they lapse with the lease): {}",
                crate::errors::chain(&e)
            );
        }
    }

    fn key(&self, slot: usize) -> String {
        slot_key(&self.name(slot))
    }

    fn name(&self, slot: usize) -> String {
        self.names.get(slot).cloned().unwrap_or_default()
    }
}
