//! The scheduling core of a pool, without I/O: which entries are pending, which
//! are due, and what an attempt's outcome does to them. Time and randomness come
//! from the caller, so every rule is tested with a controllable clock.

mod complete;
mod model;

pub(crate) use model::{Admission, Completion, Settings};
pub use model::{Arrival, Attempt, Fate, Full, Outcome, Persist, Settled, Step};

use super::outbox::{OutboxEntry, entry_key, merge};
use crate::providers::PushKind;
use opentelemetry::trace::SpanContext;
use std::collections::{BTreeSet, HashMap};

/// Attempts allowed for an outcome the tables do not know.
pub(crate) const UNKNOWN_MAX_ATTEMPTS: u32 = 5;

#[derive(Debug)]
struct InFlight {
    publishes: u32,
    token: String,
}

#[derive(Debug)]
struct Slot {
    entry: OutboxEntry,
    version: u64,
    in_flight: Option<InFlight>,
    /// First publish merged while an attempt was in flight.
    follow_up_since: Option<u64>,
    retried_now: bool,
    /// The first traced publish it holds: its attempts are that span's
    /// children (not stored: a resumed entry is sent untraced).
    trace: Option<SpanContext>,
}

/// Pending entries of one provider and their schedule.
#[derive(Debug)]
pub(crate) struct PoolState {
    settings: Settings,
    slots: HashMap<String, Slot>,
    due: BTreeSet<(u64, String)>,
    last_sent: HashMap<String, u64>,
    paused_until: u64,
    pause_level: u32,
    next_call: u64,
}

impl PoolState {
    /// An empty state.
    pub(crate) fn new(settings: Settings) -> Self {
        Self {
            settings,
            slots: HashMap::new(),
            due: BTreeSet::new(),
            last_sent: HashMap::new(),
            paused_until: 0,
            pause_level: 0,
            next_call: 0,
        }
    }

    /// Takes over entries found in the store at start-up, with their schedule.
    pub(crate) fn load(&mut self, entries: impl IntoIterator<Item = OutboxEntry>) {
        for entry in entries {
            self.next_call = self.next_call.max(call_id(&entry.key).saturating_add(1));
            self.due.insert((entry.due_ms, entry.key.clone()));
            self.slots.insert(
                entry.key.clone(),
                Slot {
                    entry,
                    version: 0,
                    in_flight: None,
                    follow_up_since: None,
                    retried_now: false,
                    trace: None,
                },
            );
        }
    }

    /// Admits a publish: merged into the node's pending entry if there is one
    /// (calls never are), else a new entry due after the coalescing window and
    /// the node's minimum interval.
    pub(crate) fn accept(
        &mut self,
        arrival: Arrival,
        now: u64,
    ) -> Result<(Admission, Persist), Full> {
        let key = entry_key(&arrival.node, &arrival.push, self.next_call);
        if let Some(slot) = self.slots.get_mut(&key) {
            if slot.trace.is_none() {
                slot.trace = arrival.trace;
            }
            slot.entry.push = merge(&slot.entry.push, arrival.push);
            slot.entry.publishes = slot.entry.publishes.saturating_add(1);
            slot.version += 1;
            if slot.in_flight.is_some() && slot.follow_up_since.is_none() {
                slot.follow_up_since = Some(now);
            }
            return Ok((Admission::Merged, Persist::Put(key)));
        }
        if self.slots.len() >= self.settings.capacity {
            return Err(Full);
        }
        let due_ms = if arrival.push.kind == PushKind::Voip {
            self.next_call += 1;
            now
        } else {
            self.first_due(&arrival.node, now)
        };
        let entry = OutboxEntry {
            key: key.clone(),
            node: arrival.node,
            provider: arrival.provider,
            push: arrival.push,
            accepted_ms: now,
            due_ms,
            attempts: 0,
            publishes: 1,
        };
        self.due.insert((due_ms, key.clone()));
        self.slots.insert(
            key.clone(),
            Slot {
                entry,
                version: 0,
                in_flight: None,
                follow_up_since: None,
                retried_now: false,
                trace: arrival.trace,
            },
        );
        Ok((Admission::New, Persist::Put(key)))
    }

    fn first_due(&self, node: &str, accepted: u64) -> u64 {
        let after_window = accepted.saturating_add(self.settings.window_ms);
        match self.last_sent.get(node) {
            Some(sent) if self.settings.min_interval_ms > 0 => {
                after_window.max(sent.saturating_add(self.settings.min_interval_ms))
            }
            _ => after_window,
        }
    }

    /// Starts up to `max` attempts that are due at `now`, dropping entries past
    /// their maximum age on the way. Nothing starts while the pool is paused.
    pub(crate) fn take_due(&mut self, now: u64, max: usize) -> Vec<Step> {
        let mut steps = Vec::new();
        let mut sent = 0;
        while sent < max && now >= self.paused_until {
            let Some((due, key)) = self.due.first().cloned() else {
                break;
            };
            if due > now {
                break;
            }
            self.due.remove(&(due, key.clone()));
            let Some(slot) = self.slots.get_mut(&key) else {
                continue;
            };
            if self.settings.retry.expired(slot.entry.accepted_ms, now) {
                let settled = Settled::all_of(&slot.entry, Fate::Expired);
                self.slots.remove(&key);
                steps.push(Step::Expired(settled, Persist::Delete(key)));
                continue;
            }
            slot.in_flight = Some(InFlight {
                publishes: slot.entry.publishes,
                token: slot.entry.push.token.clone(),
            });
            steps.push(Step::Send(Attempt {
                key,
                version: slot.version,
                node: slot.entry.node.clone(),
                trace: slot.trace.clone().map(Box::new),
            }));
            sent += 1;
        }
        steps
    }

    /// Drops every entry of `node`, pending or in flight (its result will find
    /// nothing to apply to): its account is gone. Returns what was dropped.
    pub(crate) fn forget(&mut self, node: &str) -> Vec<(Settled, Persist)> {
        let keys: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, slot)| slot.entry.node == node)
            .map(|(key, _)| key.clone())
            .collect();
        self.last_sent.remove(node);
        let mut dropped = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(slot) = self.slots.remove(&key) else {
                continue;
            };
            self.due.remove(&(slot.entry.due_ms, key.clone()));
            dropped.push((
                Settled::all_of(&slot.entry, Fate::AccountRemoved),
                Persist::Delete(key),
            ));
        }
        dropped
    }

    /// Lets go of the entries of nodes for which `gone` holds, without
    /// touching the outbox: their shard now belongs to another gateway node,
    /// which resumes them from the store. Entries in flight stay unless
    /// `in_flight_too` (their result then finds nothing to apply to). Returns
    /// how many entries of such nodes are still held (in flight).
    pub(crate) fn unload(&mut self, gone: impl Fn(&str) -> bool, in_flight_too: bool) -> usize {
        let mut remaining = 0;
        let due = &mut self.due;
        self.slots.retain(|key, slot| {
            if !gone(&slot.entry.node) {
                return true;
            }
            if slot.in_flight.is_some() && !in_flight_too {
                remaining += 1;
                return true;
            }
            due.remove(&(slot.entry.due_ms, key.clone()));
            false
        });
        self.last_sent.retain(|node, _| !gone(node));
        remaining
    }

    fn remember_sent(&mut self, node: &str, now: u64) {
        if self.last_sent.len() >= self.settings.capacity.max(1024) {
            let horizon = now.saturating_sub(self.settings.min_interval_ms);
            self.last_sent.retain(|_, sent| *sent > horizon);
        }
        self.last_sent.insert(node.to_owned(), now);
    }

    /// When the next attempt is due (ms since the epoch), if anything is waiting.
    pub(crate) fn next_wake(&self) -> Option<u64> {
        self.due
            .first()
            .map(|(due, _)| (*due).max(self.paused_until))
    }

    /// Whether something is due at `now` and could be sent.
    pub(crate) fn due_now(&self, now: u64) -> bool {
        self.next_wake().is_some_and(|t| t <= now)
    }

    /// The entry held for `key`, if any.
    pub(crate) fn entry(&self, key: &str) -> Option<&OutboxEntry> {
        self.slots.get(key).map(|slot| &slot.entry)
    }

    /// Entries held (pending, scheduled or in flight).
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no entry is held.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Entries due at `now` and not in flight: the queue depth.
    pub(crate) fn queued(&self, now: u64) -> usize {
        self.due.iter().take_while(|(due, _)| *due <= now).count()
    }

    /// When the oldest held publish was accepted.
    pub(crate) fn oldest_accepted(&self) -> Option<u64> {
        self.slots.values().map(|s| s.entry.accepted_ms).min()
    }

    /// Whether the pool is paused for misconfiguration.
    #[cfg(test)]
    pub(crate) fn paused(&self) -> bool {
        self.pause_level > 0
    }
}

impl Settled {
    /// Every publish `entry` holds.
    fn all_of(entry: &OutboxEntry, fate: Fate) -> Self {
        Self {
            fate,
            publishes: entry.publishes,
            accepted_ms: entry.accepted_ms,
        }
    }
}

/// The call counter embedded in a VoIP entry key, 0 for others.
fn call_id(key: &str) -> u64 {
    key.rsplit_once("#call#")
        .and_then(|(_, id)| u64::from_str_radix(id, 16).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
