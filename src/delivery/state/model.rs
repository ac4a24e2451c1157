//! The values that go in and out of [`super::PoolState`].

use super::super::retry::RetryPolicy;
use crate::providers::Push;
use opentelemetry::trace::SpanContext;
use std::time::Duration;

/// The rules of one pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Entries (pending notifications) at most.
    pub capacity: usize,
    /// Delay of a new entry's first attempt, so bursts merge, ms.
    pub window_ms: u64,
    /// Least time between two pushes to one node, ms (0 = none).
    pub min_interval_ms: u64,
    /// Backoff and maximum age.
    pub retry: RetryPolicy,
}

/// A publish arriving at the pool.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The push node.
    pub node: String,
    /// The provider id.
    pub provider: String,
    /// The push built from the publish.
    pub push: Push,
    /// The publish's span, when it is traced: the provider request that
    /// sends the push becomes its child.
    pub trace: Option<SpanContext>,
}

/// How a publish entered the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// A new entry.
    New,
    /// Merged into a pending entry of the same node.
    Merged,
}

/// The pool holds `capacity` entries already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// A change the store must make, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persist {
    /// Insert or replace the entry with this key, as
    /// [`super::PoolState::entry`] holds it now (read before anything else
    /// changes it: the pool encodes it at once).
    Put(String),
    /// Remove the entry with this key.
    Delete(String),
}

/// One attempt to start: it sends what [`super::PoolState::entry`] holds
/// for its key now.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The entry's key.
    pub key: String,
    /// The entry's version when sent; newer publishes bump it.
    pub version: u64,
    /// The node.
    pub node: String,
    /// The span of a traced publish it carries (boxed: rarely there).
    pub trace: Option<Box<SpanContext>>,
}

/// What an attempt's result means to the schedule (from [`crate::providers::ErrorClass`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The provider accepted it.
    Delivered,
    /// Transient failure: back off.
    Retry(Option<Duration>),
    /// Credentials were renewed: once at once, then as `Retry`.
    RetryNow,
    /// Not in the tables: back off, at most `UNKNOWN_MAX_ATTEMPTS` attempts.
    Unknown(Option<Duration>),
    /// This notification cannot be sent.
    Fail,
    /// The token is dead.
    TokenDead,
    /// Our credentials or endpoint are wrong: keep it and pause the pool.
    Misconfigured,
}

/// The final fate of some publishes; each accepted publish gets exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// A push carrying it was accepted by the provider.
    Delivered,
    /// The provider refused the notification (or an unknown error persisted).
    Failed,
    /// Older than the maximum age.
    Expired,
    /// The device token is dead.
    TokenDead,
    /// The account was removed (Tigase's account-removed event) before it went.
    AccountRemoved,
}

impl Fate {
    /// A label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Fate::Delivered => "delivered",
            Fate::Failed => "failed",
            Fate::Expired => "expired",
            Fate::TokenDead => "token-dead",
            Fate::AccountRemoved => "account-removed",
        }
    }
}

/// Publishes that reached their fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// What happened.
    pub fate: Fate,
    /// How many publishes.
    pub publishes: u32,
    /// When the oldest of them was accepted.
    pub accepted_ms: u64,
}

/// A step of `PoolState::take_due`.
#[derive(Debug, Clone)]
pub enum Step {
    /// Send this.
    Send(Attempt),
    /// Dropped for age before sending.
    Expired(Settled, Persist),
}

/// What [`PoolState::complete`] decided.
#[derive(Debug, Clone, Default)]
pub(crate) struct Completion {
    /// Store changes.
    pub persist: Vec<Persist>,
    /// Publishes settled by it.
    pub settled: Option<Settled>,
    /// The delay of the retry it scheduled, ms.
    pub retry_in_ms: Option<u64>,
    /// `Some(healthy)` when the provider's health changed.
    pub health_changed: Option<bool>,
}
