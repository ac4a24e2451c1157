//! A small Prometheus text-format registry: counters, gauges and histograms with
//! labels.
//!
//! Kept in-process and dependency-free on purpose; the OpenTelemetry exporter can
//! read the same values when it lands.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

/// A gauge that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds one.
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Subtracts one.
    pub(crate) fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Values of one type per combination of label values.
#[derive(Debug)]
struct Family<T> {
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, T>>,
}

fn key(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

fn label_text(labels: &[&str], values: &[String], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .zip(values)
        .map(|(l, v)| format!("{l}=\"{}\"", escape_label(v)))
        .collect();
    if let Some((l, v)) = extra {
        parts.push(format!("{l}=\"{v}\""));
    }
    parts.join(",")
}

impl<T: Copy + Default + std::fmt::Display> Family<T> {
    pub(crate) fn new(labels: &'static [&'static str]) -> Self {
        Self {
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    fn update(&self, values: &[&str], f: impl FnOnce(&mut T)) {
        if let Ok(mut map) = self.values.lock() {
            f(map.entry(key(values)).or_default());
        }
    }

    fn get(&self, values: &[&str]) -> T {
        self.values
            .lock()
            .ok()
            .and_then(|m| m.get(&key(values)).copied())
            .unwrap_or_default()
    }

    fn render(&self, name: &str, help: &str, kind: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        let Ok(map) = self.values.lock() else { return };
        for (values, v) in map.iter() {
            let _ = writeln!(
                out,
                "{name}{{{}}} {v}",
                label_text(self.labels, values, None)
            );
        }
    }
}

/// A counter per combination of label values.
#[derive(Debug)]
pub struct CounterVec(Family<u64>);

impl CounterVec {
    pub(crate) fn new(labels: &'static [&'static str]) -> Self {
        Self(Family::new(labels))
    }

    /// Adds one to the counter with these label values (in declaration order).
    pub(crate) fn inc(&self, values: &[&str]) {
        self.add(values, 1);
    }

    /// Adds `n` to the counter with these label values.
    pub fn add(&self, values: &[&str], n: u64) {
        self.0.update(values, |v| *v += n);
    }

    /// The counter's value for these label values.
    pub fn get(&self, values: &[&str]) -> u64 {
        self.0.get(values)
    }

    pub(crate) fn render(&self, name: &str, help: &str, out: &mut String) {
        self.0.render(name, help, "counter", out);
    }
}

/// A gauge per combination of label values.
#[derive(Debug)]
pub struct GaugeVec(Family<i64>);

impl GaugeVec {
    pub(crate) fn new(labels: &'static [&'static str]) -> Self {
        Self(Family::new(labels))
    }

    /// Sets the gauge with these label values.
    pub fn set(&self, values: &[&str], v: i64) {
        self.0.update(values, |g| *g = v);
    }

    /// The gauge's value for these label values.
    pub fn get(&self, values: &[&str]) -> i64 {
        self.0.get(values)
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        self.0.render(name, help, "gauge", out);
    }
}

/// Upper bounds of the latency histogram buckets, in seconds.
const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0,
];

#[derive(Debug, Default, Clone)]
struct Buckets {
    counts: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// A latency histogram per combination of label values, in seconds.
#[derive(Debug)]
pub struct HistogramVec {
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, Buckets>>,
}

impl HistogramVec {
    pub(crate) fn new(labels: &'static [&'static str]) -> Self {
        Self {
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records one observation of `seconds`.
    pub(crate) fn observe(&self, values: &[&str], seconds: f64) {
        let Ok(mut map) = self.values.lock() else {
            return;
        };
        let b = map.entry(key(values)).or_default();
        for (bound, count) in LATENCY_BUCKETS.iter().zip(b.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        b.count += 1;
        b.sum += seconds;
    }

    /// Observations recorded with these label values.
    pub fn count(&self, values: &[&str]) -> u64 {
        self.values
            .lock()
            .ok()
            .and_then(|m| m.get(&key(values)).map(|b| b.count))
            .unwrap_or(0)
    }

    pub(crate) fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let Ok(map) = self.values.lock() else { return };
        for (values, b) in map.iter() {
            for (bound, count) in LATENCY_BUCKETS.iter().zip(b.counts) {
                let le = bound.to_string();
                let labels = label_text(self.labels, values, Some(("le", &le)));
                let _ = writeln!(out, "{name}_bucket{{{labels}}} {count}");
            }
            let labels = label_text(self.labels, values, Some(("le", "+Inf")));
            let _ = writeln!(out, "{name}_bucket{{{labels}}} {}", b.count);
            let labels = label_text(self.labels, values, None);
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", b.sum);
            let _ = writeln!(out, "{name}_count{{{labels}}} {}", b.count);
        }
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Every metric the gateway exports.
#[derive(Debug)]
pub struct Metrics {
    /// Publishes received, by outcome (`accepted`, `item-not-found`, …).
    pub publishes: CounterVec,
    /// Accepted publishes by their final fate, per provider: every accepted
    /// publish ends in exactly one of delivered, failed, expired, token-dead,
    /// account-removed.
    pub notifications: CounterVec,
    /// Publishes merged into a pending push of the same node, per provider.
    pub coalesced: CounterVec,
    /// Delivery attempts, by provider id and outcome.
    pub deliveries: CounterVec,
    /// Retries scheduled, by provider and reason.
    pub retries: CounterVec,
    /// Publish accepted → provider 2xx, per provider.
    pub delivery_latency: HistogramVec,
    /// Outbox entries (pending pushes), per provider.
    pub outbox_entries: GaugeVec,
    /// Entries due and waiting for a free request slot, per provider.
    pub queue_depth: GaugeVec,
    /// Requests in flight, per provider.
    pub in_flight: GaugeVec,
    /// Age of the oldest pending publish, per provider, seconds.
    pub oldest_pending_seconds: GaugeVec,
    /// 1 when the provider accepts our credentials, 0 while it refuses them.
    pub provider_healthy: GaugeVec,
    /// Seconds until a provider's client certificate expires (negative once
    /// expired), per provider using certificate auth.
    pub certificate_expiry_seconds: GaugeVec,
    /// Registration commands, by command and outcome.
    pub registration_commands: CounterVec,
    /// Registrations in the store (refreshed on scrape).
    pub registrations: Gauge,
    /// Component sessions currently authenticated.
    pub sessions_up: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            publishes: CounterVec::new(&["outcome"]),
            notifications: CounterVec::new(&["provider", "fate"]),
            coalesced: CounterVec::new(&["provider"]),
            deliveries: CounterVec::new(&["provider", "outcome"]),
            retries: CounterVec::new(&["provider", "reason"]),
            delivery_latency: HistogramVec::new(&["provider"]),
            outbox_entries: GaugeVec::new(&["provider"]),
            queue_depth: GaugeVec::new(&["provider"]),
            in_flight: GaugeVec::new(&["provider"]),
            oldest_pending_seconds: GaugeVec::new(&["provider"]),
            provider_healthy: GaugeVec::new(&["provider"]),
            certificate_expiry_seconds: GaugeVec::new(&["provider"]),
            registration_commands: CounterVec::new(&["command", "outcome"]),
            registrations: Gauge::default(),
            sessions_up: Gauge::default(),
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition of all metrics.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let o = &mut out;
        self.publishes.render(
            "pushgate_publishes_total",
            "XEP-0357 publishes received, by outcome.",
            o,
        );
        self.notifications.render(
            "pushgate_notifications_total",
            "Accepted publishes by final fate; their sum equals the accepted publishes once the outbox is empty.",
            o,
        );
        self.coalesced.render(
            "pushgate_coalesced_total",
            "Publishes merged into a pending push for the same node.",
            o,
        );
        self.deliveries.render(
            "pushgate_deliveries_total",
            "Delivery attempts to push providers, by provider and outcome.",
            o,
        );
        self.retries.render(
            "pushgate_retries_total",
            "Retries scheduled, by provider and reason.",
            o,
        );
        self.delivery_latency.render(
            "pushgate_delivery_latency_seconds",
            "From publish accepted to the provider's 2xx.",
            o,
        );
        self.outbox_entries.render(
            "pushgate_outbox_entries",
            "Pending pushes in the outbox.",
            o,
        );
        self.queue_depth.render(
            "pushgate_queue_depth",
            "Pushes due and waiting for a request slot.",
            o,
        );
        self.in_flight.render(
            "pushgate_in_flight",
            "Requests to the provider in flight.",
            o,
        );
        self.oldest_pending_seconds.render(
            "pushgate_oldest_pending_seconds",
            "Age of the oldest pending publish.",
            o,
        );
        self.provider_healthy.render(
            "pushgate_provider_healthy",
            "1 while the provider accepts our credentials and endpoint.",
            o,
        );
        self.certificate_expiry_seconds.render(
            "pushgate_provider_certificate_expiry_seconds",
            "Seconds until the provider's client certificate expires (negative once expired).",
            o,
        );
        self.registration_commands.render(
            "pushgate_registration_commands_total",
            "Register/unregister requests, by command and outcome.",
            o,
        );
        let _ = writeln!(
            out,
            "# HELP pushgate_registrations Registrations in the store.\n# TYPE pushgate_registrations gauge\npushgate_registrations {}",
            self.registrations.get()
        );
        let _ = writeln!(
            out,
            "# HELP pushgate_component_sessions_up Authenticated component sessions.\n# TYPE pushgate_component_sessions_up gauge\npushgate_component_sessions_up {}",
            self.sessions_up.get()
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_counters_and_gauges() {
        let m = Metrics::default();
        m.deliveries.inc(&["apns", "delivered"]);
        m.deliveries.inc(&["apns", "delivered"]);
        m.sessions_up.inc();
        let text = m.render();
        assert!(
            text.contains("pushgate_deliveries_total{provider=\"apns\",outcome=\"delivered\"} 2")
        );
        assert!(text.contains("pushgate_component_sessions_up 1"));
    }

    #[test]
    fn renders_histograms_cumulatively() {
        let m = Metrics::default();
        m.delivery_latency.observe(&["fcm"], 0.004);
        m.delivery_latency.observe(&["fcm"], 0.5);
        let text = m.render();
        for line in [
            "pushgate_delivery_latency_seconds_bucket{provider=\"fcm\",le=\"0.002\"} 0",
            "pushgate_delivery_latency_seconds_bucket{provider=\"fcm\",le=\"0.005\"} 1",
            "pushgate_delivery_latency_seconds_bucket{provider=\"fcm\",le=\"0.5\"} 2",
            "pushgate_delivery_latency_seconds_bucket{provider=\"fcm\",le=\"+Inf\"} 2",
            "pushgate_delivery_latency_seconds_count{provider=\"fcm\"} 2",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        m.queue_depth.set(&["fcm"], 3);
        assert!(
            m.render()
                .contains("pushgate_queue_depth{provider=\"fcm\"} 3")
        );
    }
}
