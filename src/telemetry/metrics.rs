//! A small Prometheus text-format registry: counters with labels and gauges.
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
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Subtracts one.
    pub fn dec(&self) {
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

/// A counter per combination of label values.
#[derive(Debug)]
pub struct CounterVec {
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl CounterVec {
    fn new(labels: &'static [&'static str]) -> Self {
        Self {
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds one to the counter with these label values (in declaration order).
    pub fn inc(&self, values: &[&str]) {
        let key = values.iter().map(|v| (*v).to_owned()).collect();
        if let Ok(mut map) = self.values.lock() {
            *map.entry(key).or_insert(0) += 1;
        }
    }

    /// The counter's value for these label values.
    pub fn get(&self, values: &[&str]) -> u64 {
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        self.values
            .lock()
            .ok()
            .and_then(|m| m.get(&key).copied())
            .unwrap_or(0)
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        let Ok(map) = self.values.lock() else { return };
        for (values, count) in map.iter() {
            let labels: Vec<String> = self
                .labels
                .iter()
                .zip(values)
                .map(|(l, v)| format!("{l}=\"{}\"", escape_label(v)))
                .collect();
            let _ = writeln!(out, "{name}{{{}}} {count}", labels.join(","));
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
    /// Delivery attempts, by provider id and outcome.
    pub deliveries: CounterVec,
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
            deliveries: CounterVec::new(&["provider", "outcome"]),
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
        self.publishes.render(
            "pushgate_publishes_total",
            "XEP-0357 publishes received, by outcome.",
            &mut out,
        );
        self.deliveries.render(
            "pushgate_deliveries_total",
            "Delivery attempts to push providers, by provider and outcome.",
            &mut out,
        );
        self.registration_commands.render(
            "pushgate_registration_commands_total",
            "Register/unregister requests, by command and outcome.",
            &mut out,
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
}
