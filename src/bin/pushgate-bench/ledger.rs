//! What happened to every publish: when it was due, how the gateway answered,
//! and which deliveries reached the mock providers. Lock-free per publish
//! (atomics in preallocated slots), so recording costs the bench little.

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Outcome of a publish as the gateway answered it.
const PENDING: u8 = 0;
const ACCEPTED: u8 = 1;
const REFUSED: u8 = 2;

/// Width of a delivery-rate bucket.
pub const BUCKET: Duration = Duration::from_millis(100);

#[derive(Default)]
struct PublishSlot {
    device: AtomicU32,
    due_ns: AtomicU64,
    outcome: AtomicU8,
    deliveries: AtomicU32,
}

#[derive(Default)]
struct DeviceSlot {
    /// 1 + the highest sequence number delivered (or finally refused by the
    /// provider) to this device; 0 for none.
    covered: AtomicU64,
    /// The provider said the token is dead (410 / UNREGISTERED).
    dead: AtomicBool,
}

/// The ledger of the phase running now, shared by the mocks and the readers.
#[derive(Default)]
pub struct CurrentLedger(RwLock<Option<Arc<Ledger>>>);

impl CurrentLedger {
    /// The ledger to record into, if a phase is running.
    pub fn get(&self) -> Option<Arc<Ledger>> {
        self.0.read().ok().and_then(|l| l.clone())
    }

    /// Makes `ledger` the one recorded into.
    pub fn set(&self, ledger: Arc<Ledger>) {
        if let Ok(mut current) = self.0.write() {
            *current = Some(ledger);
        }
    }
}

/// Counters and histograms of one phase.
pub struct Ledger {
    start: Instant,
    /// Sequence number of the first slot: phases never reuse numbers, so a
    /// straggler from an earlier phase is not taken for one of this phase.
    base: u64,
    publishes: Box<[PublishSlot]>,
    devices: Box<[DeviceSlot]>,
    next_index: AtomicU64,
    sent: AtomicU64,
    replies: AtomicU64,
    accepted: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    deliveries: AtomicU64,
    duplicates: AtomicU64,
    misrouted: AtomicU64,
    provider_errors: AtomicU64,
    unknown_deliveries: AtomicU64,
    buckets: Box<[AtomicU64]>,
    reply_latency: Mutex<Histogram<u64>>,
    delivery_latency: Mutex<Histogram<u64>>,
    /// Closed-loop window: a permit comes back when a publish is finished
    /// (delivered, refused by the gateway, or refused for good by a provider),
    /// so the window bounds work in the whole pipeline, not only replies.
    window: Arc<tokio::sync::Semaphore>,
}

/// Latency histograms record microseconds from 1 µs to 10 minutes, 3 digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| unreachable!("constant bounds are valid"))
}

impl Ledger {
    /// Room for `capacity` publishes numbered from `base` to `devices`
    /// devices over `horizon`.
    pub fn new(base: u64, capacity: usize, devices: usize, horizon: Duration) -> Self {
        let buckets = (horizon.as_millis() / BUCKET.as_millis()) as usize + 1;
        Self {
            start: Instant::now(),
            base,
            publishes: (0..capacity).map(|_| PublishSlot::default()).collect(),
            devices: (0..devices).map(|_| DeviceSlot::default()).collect(),
            next_index: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            replies: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            deliveries: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            misrouted: AtomicU64::new(0),
            provider_errors: AtomicU64::new(0),
            unknown_deliveries: AtomicU64::new(0),
            buckets: (0..buckets).map(|_| AtomicU64::new(0)).collect(),
            reply_latency: Mutex::new(histogram()),
            delivery_latency: Mutex::new(histogram()),
            window: Arc::new(tokio::sync::Semaphore::new(0)),
        }
    }

    /// The closed-loop window (empty unless a phase adds permits).
    pub fn window(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.window
    }

    /// The first sequence number after this ledger's.
    pub fn end(&self) -> u64 {
        self.base + self.publishes.len() as u64
    }

    fn slot(&self, seq: u64) -> Option<&PublishSlot> {
        let index = seq.checked_sub(self.base)?;
        (index < self.next_index.load(Ordering::Relaxed))
            .then(|| self.publishes.get(index as usize))
            .flatten()
    }

    /// The instant the ledger's clock counts from.
    pub fn start(&self) -> Instant {
        self.start
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Allocates the next publish for `device`, due at `due` (the time an
    /// open-loop schedule meant to send it: latency counts from there, so a
    /// gateway that slows the sender down is not flattered). `None` when full.
    pub fn allocate(&self, device: u32, due: Instant) -> Option<u64> {
        let index = self.next_index.fetch_add(1, Ordering::Relaxed);
        let slot = self.publishes.get(index as usize)?;
        slot.device.store(device, Ordering::Relaxed);
        let due_ns = due.saturating_duration_since(self.start).as_nanos() as u64;
        slot.due_ns.store(due_ns, Ordering::Relaxed);
        self.sent.fetch_add(1, Ordering::Relaxed);
        Some(self.base + index)
    }

    /// The device a publish went to.
    pub fn device_of(&self, seq: u64) -> Option<u32> {
        self.slot(seq)
            .map(|slot| slot.device.load(Ordering::Relaxed))
    }

    fn micros_since_due(&self, slot: &PublishSlot, now_ns: u64) -> u64 {
        (now_ns.saturating_sub(slot.due_ns.load(Ordering::Relaxed)) / 1000).max(1)
    }

    /// The gateway answered publish `seq`: `None` for a result, else the
    /// `type/condition` of its error.
    pub fn reply(&self, seq: u64, error: Option<String>) {
        let Some(slot) = self.slot(seq) else {
            return;
        };
        let now = self.now_ns();
        self.replies.fetch_add(1, Ordering::Relaxed);
        let outcome = match error {
            None => {
                self.accepted.fetch_add(1, Ordering::Relaxed);
                ACCEPTED
            }
            Some(condition) => {
                if let Ok(mut errors) = self.errors.lock() {
                    *errors.entry(condition).or_default() += 1;
                }
                self.window.add_permits(1);
                REFUSED
            }
        };
        slot.outcome.store(outcome, Ordering::Release);
        if let Ok(mut h) = self.reply_latency.lock() {
            let _ = h.record(self.micros_since_due(slot, now));
        }
    }

    /// A mock provider accepted a push carrying publish `seq` for `device`
    /// (the device its token names).
    pub fn delivered(&self, seq: u64, device: u32) {
        let Some(slot) = self.checked_slot(seq, device) else {
            return;
        };
        let now = self.now_ns();
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        let bucket = (now / BUCKET.as_nanos() as u64) as usize;
        if let Some(b) = self.buckets.get(bucket) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        if slot.deliveries.fetch_add(1, Ordering::Relaxed) > 0 {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.cover(device, seq);
        self.window.add_permits(1);
        if let Ok(mut h) = self.delivery_latency.lock() {
            let _ = h.record(self.micros_since_due(slot, now));
        }
    }

    /// A mock provider refused publish `seq` for good; `dead` if it said the
    /// token is gone (later publishes to the device cannot be delivered).
    pub fn refused_by_provider(&self, seq: u64, device: u32, dead: bool) {
        if self.checked_slot(seq, device).is_none() {
            return;
        }
        self.window.add_permits(1);
        if dead {
            if let Some(d) = self.devices.get(device as usize) {
                d.dead.store(true, Ordering::Relaxed);
            }
        } else {
            self.cover(device, seq);
        }
    }

    /// A mock provider answered a transient error (the gateway should retry).
    pub fn provider_error(&self) {
        self.provider_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A push that named no publish of this run.
    pub fn unknown_delivery(&self) {
        self.unknown_deliveries.fetch_add(1, Ordering::Relaxed);
    }

    fn checked_slot(&self, seq: u64, device: u32) -> Option<&PublishSlot> {
        let Some(expected) = self.device_of(seq) else {
            self.unknown_delivery();
            return None;
        };
        if expected != device {
            self.misrouted.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.slot(seq)
    }

    fn cover(&self, device: u32, seq: u64) {
        if let Some(d) = self.devices.get(device as usize) {
            d.covered.fetch_max(seq + 1, Ordering::Relaxed);
        }
    }

    /// Publishes sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Replies received so far.
    pub fn replies(&self) -> u64 {
        self.replies.load(Ordering::Relaxed)
    }

    /// Deliveries (200s) so far, duplicates included.
    pub fn deliveries(&self) -> u64 {
        self.deliveries.load(Ordering::Relaxed)
    }

    /// Accepted publishes not yet delivered: neither this publish nor a later
    /// one to the same device reached the provider (a later one supersedes it,
    /// as the gateway merges pushes), and the device's token is not dead.
    pub fn outstanding(&self) -> u64 {
        let sent = self.next_index.load(Ordering::Relaxed) as usize;
        let mut missing = 0;
        for (index, slot) in self.publishes.iter().take(sent).enumerate() {
            let seq = self.base + index as u64;
            if slot.outcome.load(Ordering::Acquire) != ACCEPTED {
                continue;
            }
            let Some(device) = self
                .devices
                .get(slot.device.load(Ordering::Relaxed) as usize)
            else {
                continue;
            };
            if !device.dead.load(Ordering::Relaxed) && device.covered.load(Ordering::Relaxed) <= seq
            {
                missing += 1;
            }
        }
        missing
    }

    /// Publishes still waiting for the gateway's answer.
    pub fn unanswered(&self) -> u64 {
        let sent = self.next_index.load(Ordering::Relaxed) as usize;
        self.publishes
            .iter()
            .take(sent)
            .filter(|s| s.outcome.load(Ordering::Acquire) == PENDING)
            .count() as u64
    }

    /// Devices whose token a provider declared dead.
    pub fn dead_devices(&self) -> u64 {
        self.devices
            .iter()
            .filter(|d| d.dead.load(Ordering::Relaxed))
            .count() as u64
    }

    /// Deliveries per second between `from` and `to` (offsets from the start).
    pub fn delivery_rate(&self, from: Duration, to: Duration) -> f64 {
        let first = (from.as_millis() / BUCKET.as_millis()) as usize;
        let last = (to.as_millis() / BUCKET.as_millis()) as usize;
        if last <= first {
            return 0.0;
        }
        let count: u64 = self
            .buckets
            .iter()
            .skip(first)
            .take(last - first)
            .map(|b| b.load(Ordering::Relaxed))
            .sum();
        count as f64 / ((last - first) as f64 * BUCKET.as_secs_f64())
    }

    /// A snapshot of everything counted.
    pub fn totals(&self) -> Totals {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Totals {
            sent: self.sent(),
            replies: self.replies(),
            accepted: load(&self.accepted),
            errors: self.errors.lock().map(|e| e.clone()).unwrap_or_default(),
            deliveries: self.deliveries(),
            duplicates: load(&self.duplicates),
            misrouted: load(&self.misrouted),
            unknown_deliveries: load(&self.unknown_deliveries),
            provider_errors: load(&self.provider_errors),
            dead_devices: self.dead_devices(),
            lost: self.outstanding(),
            unanswered: self.unanswered(),
            reply_latency: Percentiles::of(&self.reply_latency),
            delivery_latency: Percentiles::of(&self.delivery_latency),
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Percentiles {
    fn of(histogram: &Mutex<Histogram<u64>>) -> Self {
        let Ok(h) = histogram.lock() else {
            return Self::default();
        };
        Self {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// The ledger's counts at one moment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Totals {
    /// Publishes sent.
    pub sent: u64,
    /// Replies received.
    pub replies: u64,
    /// `type='result'` replies.
    pub accepted: u64,
    /// Error replies by `type/condition`.
    pub errors: BTreeMap<String, u64>,
    /// Pushes the mocks accepted (200), duplicates included.
    pub deliveries: u64,
    /// Pushes that carried a publish already delivered.
    pub duplicates: u64,
    /// Pushes whose token was not the publish's device.
    pub misrouted: u64,
    /// Pushes that named no publish of this run.
    pub unknown_deliveries: u64,
    /// Transient errors the mocks answered (503, 429…).
    pub provider_errors: u64,
    /// Devices a mock declared dead (410 / UNREGISTERED).
    pub dead_devices: u64,
    /// Accepted, never delivered nor superseded by a delivered later publish.
    pub lost: u64,
    /// Sent and never answered.
    pub unanswered: u64,
    /// Publish → iq reply, µs.
    pub reply_latency: Percentiles,
    /// Publish → delivery at the mock, µs (first delivery of each publish).
    pub delivery_latency: Percentiles,
}

/// Conditions after which Tigase keeps a registration, whatever the error type
/// (`docs/protocol.md` §5).
const TIGASE_KEEPS: [&str; 4] = [
    "remote-server-timeout",
    "service-unavailable",
    "internal-server-error",
    "bad-request",
];

impl Totals {
    /// The `wait/…` replies whose condition a Tigase server deletes the
    /// registration on: "try later" answers that would turn push off.
    pub fn tigase_deletes_on(&self) -> impl Iterator<Item = (&str, u64)> {
        self.errors.iter().filter_map(|(key, count)| {
            let condition = key.strip_prefix("wait/")?;
            (!TIGASE_KEEPS.contains(&condition)).then_some((key.as_str(), *count))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_delivery_covers_earlier_publishes_to_the_same_device() {
        let ledger = Ledger::new(100, 10, 2, Duration::from_secs(1));
        let now = Instant::now();
        let a = ledger.allocate(0, now).unwrap_or_default();
        let b = ledger.allocate(0, now).unwrap_or_default();
        let c = ledger.allocate(1, now).unwrap_or_default();
        for seq in [a, b, c] {
            ledger.reply(seq, None);
        }
        assert_eq!(ledger.outstanding(), 3);
        ledger.delivered(b, 0);
        assert_eq!(ledger.outstanding(), 1, "a is superseded by b");
        ledger.delivered(c, 0);
        assert_eq!(ledger.totals().misrouted, 1);
        ledger.delivered(c, 1);
        ledger.delivered(c, 1);
        let totals = ledger.totals();
        assert_eq!((totals.lost, totals.duplicates), (0, 1));
    }

    #[test]
    fn refused_publishes_are_not_lost_and_dead_devices_are_excused() {
        let ledger = Ledger::new(0, 10, 2, Duration::from_secs(1));
        let now = Instant::now();
        let a = ledger.allocate(0, now).unwrap_or_default();
        let b = ledger.allocate(1, now).unwrap_or_default();
        ledger.reply(a, Some("wait/service-unavailable".into()));
        ledger.reply(b, None);
        assert_eq!(ledger.outstanding(), 1);
        ledger.refused_by_provider(b, 1, true);
        let totals = ledger.totals();
        assert_eq!((totals.lost, totals.dead_devices), (0, 1));
        assert_eq!(totals.errors.get("wait/service-unavailable"), Some(&1));
        assert_eq!(totals.tigase_deletes_on().count(), 0);
    }

    #[test]
    fn only_wait_refusals_tigase_deletes_on_are_flagged() {
        let ledger = Ledger::new(0, 10, 4, Duration::from_secs(1));
        let now = Instant::now();
        let replies = [
            "wait/resource-constraint",
            "wait/service-unavailable",
            "wait/internal-server-error",
            "cancel/item-not-found",
        ];
        for (device, reply) in replies.into_iter().enumerate() {
            let id = ledger.allocate(device as u32, now).unwrap_or_default();
            ledger.reply(id, Some(reply.into()));
        }
        let totals = ledger.totals();
        let flagged: Vec<_> = totals.tigase_deletes_on().collect();
        assert_eq!(flagged, [("wait/resource-constraint", 1)]);
    }
}
