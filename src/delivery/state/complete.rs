//! What an attempt's outcome does to its entry and to the pool: the rules of
//! [`PoolState::complete`], one function per kind of outcome.

use super::{
    Completion, Fate, InFlight, Outcome, Persist, PoolState, Settled, Slot, UNKNOWN_MAX_ATTEMPTS,
};
use crate::delivery::outbox::OutboxEntry;

impl PoolState {
    /// Applies the outcome of the attempt at `version` of entry `key`.
    /// `uniform(n)` draws from `0..=n` for the backoff jitter.
    pub(crate) fn complete(
        &mut self,
        key: &str,
        version: u64,
        outcome: Outcome,
        now: u64,
        uniform: &mut impl FnMut(u64) -> u64,
    ) -> Completion {
        let mut done = Completion::default();
        let Some(mut slot) = self.slots.remove(key) else {
            return done;
        };
        let Some(flight) = slot.in_flight.take() else {
            self.slots.insert(key.to_owned(), slot);
            return done;
        };
        let newer = slot.version != version;
        let kept = match outcome {
            Outcome::Delivered => self.delivered(&mut slot, &flight, newer, now, &mut done),
            Outcome::Fail | Outcome::TokenDead => {
                failed(&mut slot, &flight, outcome, newer, now, &mut done)
            }
            Outcome::RetryNow if !slot.retried_now => {
                slot.retried_now = true;
                slot.entry.due_ms = now;
                done.retry_in_ms = Some(0);
                true
            }
            Outcome::Misconfigured => {
                self.pause(&mut slot, now, &mut done);
                true
            }
            Outcome::Retry(after) | Outcome::Unknown(after) => {
                let unknown = matches!(outcome, Outcome::Unknown(_));
                self.back_off(&mut slot, after, unknown, now, uniform, &mut done)
            }
            Outcome::RetryNow => self.back_off(&mut slot, None, false, now, uniform, &mut done),
        };
        if kept {
            self.due.insert((slot.entry.due_ms, key.to_owned()));
            done.persist.push(Persist::Put(key.to_owned()));
            self.slots.insert(key.to_owned(), slot);
        }
        done
    }

    /// The provider took it. Publishes merged while it was out get a push of
    /// their own, scheduled as a new entry would be; true if the slot stays.
    fn delivered(
        &mut self,
        slot: &mut Slot,
        flight: &InFlight,
        newer: bool,
        now: u64,
        done: &mut Completion,
    ) -> bool {
        if self.pause_level > 0 {
            done.health_changed = Some(true);
        }
        self.pause_level = 0;
        self.paused_until = 0;
        if self.settings.min_interval_ms > 0 {
            self.remember_sent(&slot.entry.node, now);
        }
        done.settled = Some(Settled {
            fate: Fate::Delivered,
            publishes: flight.publishes,
            accepted_ms: slot.entry.accepted_ms,
        });
        if !newer {
            done.persist.push(Persist::Delete(slot.entry.key.clone()));
            return false;
        }
        let e = &mut slot.entry;
        e.publishes = e.publishes.saturating_sub(flight.publishes).max(1);
        e.attempts = 0;
        e.accepted_ms = slot.follow_up_since.take().unwrap_or(now);
        e.due_ms = self.first_due(&e.node, e.accepted_ms).max(now);
        slot.retried_now = false;
        true
    }

    /// Our credentials or endpoint are wrong: the whole pool pauses, longer
    /// each time, and the entry waits for the pause to end.
    fn pause(&mut self, slot: &mut Slot, now: u64, done: &mut Completion) {
        if self.pause_level == 0 {
            done.health_changed = Some(false);
        }
        self.pause_level = self.pause_level.saturating_add(1);
        self.paused_until = now.saturating_add(self.settings.retry.ceiling_ms(self.pause_level));
        slot.entry.due_ms = self.paused_until;
        done.retry_in_ms = Some(self.paused_until - now);
    }

    /// A transient failure: the next attempt after the backoff (never before
    /// `Retry-After`), unless that is past the maximum age or an unknown
    /// answer has had its attempts; true if the slot stays.
    fn back_off(
        &mut self,
        slot: &mut Slot,
        after: Option<std::time::Duration>,
        unknown: bool,
        now: u64,
        uniform: &mut impl FnMut(u64) -> u64,
        done: &mut Completion,
    ) -> bool {
        let policy = self.settings.retry;
        slot.entry.attempts = slot.entry.attempts.saturating_add(1);
        let delay = policy.delay_ms(slot.entry.attempts, after, uniform);
        let due = now.saturating_add(delay);
        let fate = if unknown && slot.entry.attempts >= UNKNOWN_MAX_ATTEMPTS {
            Some(Fate::Failed)
        } else if policy.expired(slot.entry.accepted_ms, due) {
            Some(Fate::Expired)
        } else {
            None
        };
        if let Some(fate) = fate {
            done.drop_entry(&slot.entry, fate);
            return false;
        }
        slot.entry.due_ms = due;
        done.retry_in_ms = Some(delay);
        true
    }
}

/// The notification failed or the token is dead: the entry goes with every
/// publish it carried, unless publishes merged after the send (to a token
/// that still works) deserve a try of their own; true if the slot stays.
fn failed(
    slot: &mut Slot,
    flight: &InFlight,
    outcome: Outcome,
    newer: bool,
    now: u64,
    done: &mut Completion,
) -> bool {
    let fate = if outcome == Outcome::Fail {
        Fate::Failed
    } else {
        Fate::TokenDead
    };
    let same_token = slot.entry.push.token == flight.token;
    if !newer || (outcome == Outcome::TokenDead && same_token) {
        done.drop_entry(&slot.entry, fate);
        return false;
    }
    done.settled = Some(Settled {
        fate,
        publishes: flight.publishes,
        accepted_ms: slot.entry.accepted_ms,
    });
    let e = &mut slot.entry;
    e.publishes = e.publishes.saturating_sub(flight.publishes).max(1);
    e.accepted_ms = slot.follow_up_since.take().unwrap_or(now);
    e.due_ms = now;
    true
}

impl Completion {
    /// Drops `entry` with all its publishes.
    fn drop_entry(&mut self, entry: &OutboxEntry, fate: Fate) {
        self.settled = Some(Settled::all_of(entry, fate));
        self.persist.push(Persist::Delete(entry.key.clone()));
    }
}
