//! The instrument types the gateway counts with, on the OpenTelemetry SDK:
//! each is one SDK instrument, so `/metrics` (the Prometheus reader) and an
//! OTLP exporter see the same data.
//!
//! Label values are passed in declaration order, as before the SDK, and
//! each combination is bound once: a bound instrument costs a few
//! nanoseconds an update where an unbound one looks its attribute set up
//! every time (~60 ns). The combinations are closed sets (provider ids,
//! outcomes, command names), so the bound handles are bounded too.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{
    BoundCounter, BoundGauge, BoundHistogram, Counter as OtelCounter, Gauge as OtelGauge,
    Histogram, Meter, ObservableCounter, ObservableGauge,
};
use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Upper bounds of the latency histogram buckets, in seconds.
pub(crate) const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Bound handles by label values: found by a hash of the values (no
/// allocation on the hot path), then compared.
struct Bound<T> {
    labels: &'static [&'static str],
    handles: Mutex<HashMap<u64, Bucket<T>>>,
}

/// The handles whose label values hash the same (almost always one).
type Bucket<T> = Vec<(Box<[String]>, T)>;

fn hash_of(values: &[&str]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    values.hash(&mut hasher);
    hasher.finish()
}

impl<T: Clone> Bound<T> {
    fn new(labels: &'static [&'static str]) -> Self {
        Self {
            labels,
            handles: Mutex::new(HashMap::new()),
        }
    }

    /// The handle of `values`, bound with `bind` on first use.
    fn get(&self, values: &[&str], bind: impl FnOnce(&[KeyValue]) -> T) -> T {
        let same = |key: &[String]| {
            key.len() == values.len() && key.iter().zip(values).all(|(a, b)| a == b)
        };
        let mut handles = self
            .handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bucket = handles.entry(hash_of(values)).or_default();
        if let Some((_, handle)) = bucket.iter().find(|(key, _)| same(key)) {
            return handle.clone();
        }
        let attributes: Vec<KeyValue> = self
            .labels
            .iter()
            .zip(values)
            .map(|(l, v)| KeyValue::new(*l, (*v).to_owned()))
            .collect();
        let handle = bind(&attributes);
        let key: Box<[String]> = values.iter().map(|v| (*v).to_owned()).collect();
        bucket.push((key, handle.clone()));
        handle
    }
}

/// Names a metric: the OpenTelemetry name (dotted; the Prometheus reader
/// turns dots into underscores and adds the unit and `_total` suffixes),
/// what it means (`# HELP`), its labels.
#[derive(Clone, Copy)]
pub(crate) struct Spec {
    /// The instrument's name, e.g. `pushgate.deliveries`.
    pub name: &'static str,
    /// Its description.
    pub help: &'static str,
    /// Its unit (`s`, or empty).
    pub unit: &'static str,
    /// Its label names.
    pub labels: &'static [&'static str],
}

/// A [`Spec`] in one line, for the tables of instruments.
pub(crate) const fn spec(
    name: &'static str,
    help: &'static str,
    unit: &'static str,
    labels: &'static [&'static str],
) -> Spec {
    Spec {
        name,
        help,
        unit,
        labels,
    }
}

/// A counter per combination of label values.
pub struct CounterVec {
    counter: OtelCounter<u64>,
    /// The bound counter and a copy of its total, which the SDK cannot be
    /// asked for (tests and in-process checks read it).
    bound: Bound<Arc<(BoundCounter<u64>, AtomicU64)>>,
}

impl CounterVec {
    pub(crate) fn new(meter: &Meter, spec: Spec) -> Self {
        Self {
            counter: meter
                .u64_counter(spec.name)
                .with_description(spec.help)
                .with_unit(spec.unit)
                .build(),
            bound: Bound::new(spec.labels),
        }
    }

    /// Adds one to the counter with these label values (in declaration order).
    pub(crate) fn inc(&self, values: &[&str]) {
        self.add(values, 1);
    }

    /// Adds `n` to the counter with these label values.
    pub fn add(&self, values: &[&str], n: u64) {
        let bound = self.bound(values);
        bound.0.add(n);
        bound.1.fetch_add(n, Ordering::Relaxed);
    }

    /// The counter's total for these label values.
    pub fn get(&self, values: &[&str]) -> u64 {
        self.bound(values).1.load(Ordering::Relaxed)
    }

    fn bound(&self, values: &[&str]) -> Arc<(BoundCounter<u64>, AtomicU64)> {
        let counter = &self.counter;
        self.bound
            .get(values, |a| Arc::new((counter.bind(a), AtomicU64::new(0))))
    }
}

/// A gauge per combination of label values.
pub struct GaugeVec {
    gauge: OtelGauge<i64>,
    /// The bound gauge and a copy of its last value.
    bound: Bound<Arc<(BoundGauge<i64>, AtomicI64)>>,
}

impl GaugeVec {
    pub(crate) fn new(meter: &Meter, spec: Spec) -> Self {
        Self {
            gauge: meter
                .i64_gauge(spec.name)
                .with_description(spec.help)
                .with_unit(spec.unit)
                .build(),
            bound: Bound::new(spec.labels),
        }
    }

    /// Sets the gauge with these label values.
    pub fn set(&self, values: &[&str], v: i64) {
        let bound = self.bound(values);
        bound.0.record(v);
        bound.1.store(v, Ordering::Relaxed);
    }

    /// The gauge's last value for these label values.
    pub fn get(&self, values: &[&str]) -> i64 {
        self.bound(values).1.load(Ordering::Relaxed)
    }

    fn bound(&self, values: &[&str]) -> Arc<(BoundGauge<i64>, AtomicI64)> {
        let gauge = &self.gauge;
        self.bound
            .get(values, |a| Arc::new((gauge.bind(a), AtomicI64::new(0))))
    }
}

/// A latency histogram per combination of label values, in seconds.
pub struct HistogramVec {
    histogram: Histogram<f64>,
    bound: Bound<Arc<BoundHistogram<f64>>>,
}

impl HistogramVec {
    pub(crate) fn new(meter: &Meter, spec: Spec) -> Self {
        Self {
            histogram: meter
                .f64_histogram(spec.name)
                .with_description(spec.help)
                .with_unit(spec.unit)
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            bound: Bound::new(spec.labels),
        }
    }

    /// Records one observation of `seconds`.
    pub(crate) fn observe(&self, values: &[&str], seconds: f64) {
        let histogram = &self.histogram;
        self.bound
            .get(values, |a| Arc::new(histogram.bind(a)))
            .record(seconds);
    }
}

/// A gauge without labels, read when collected.
pub struct Gauge {
    value: Arc<AtomicI64>,
    _observed: ObservableGauge<i64>,
}

impl Gauge {
    pub(crate) fn new(meter: &Meter, spec: Spec) -> Self {
        let value = Arc::new(AtomicI64::new(0));
        let read = value.clone();
        let observed = meter
            .i64_observable_gauge(spec.name)
            .with_description(spec.help)
            .with_unit(spec.unit)
            .with_callback(move |o| o.observe(read.load(Ordering::Relaxed), &[]))
            .build();
        Self {
            value,
            _observed: observed,
        }
    }

    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.value.store(v, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> i64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// A gauge with one label whose values come from the configuration (so
/// the set is bounded), going up and down, read when collected. Changes are
/// rare (a session up or down), so a lock is fine.
pub struct KeyedGauge {
    values: Arc<Mutex<std::collections::BTreeMap<String, i64>>>,
    _observed: ObservableGauge<i64>,
}

impl KeyedGauge {
    pub(crate) fn new(meter: &Meter, spec: Spec) -> Self {
        let values: Arc<Mutex<std::collections::BTreeMap<String, i64>>> = Arc::default();
        let read = values.clone();
        let key = spec.labels.first().copied().unwrap_or("key");
        let observed = meter
            .i64_observable_gauge(spec.name)
            .with_description(spec.help)
            .with_unit(spec.unit)
            .with_callback(move |o| {
                let values = read
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (value, n) in values.iter() {
                    o.observe(*n, &[KeyValue::new(key, value.clone())]);
                }
            })
            .build();
        Self {
            values,
            _observed: observed,
        }
    }

    /// Adds `delta` to the series of `value` (0 makes it appear).
    pub(crate) fn add(&self, value: &str, delta: i64) {
        let mut values = self
            .values
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *values.entry(value.to_owned()).or_default() += delta;
    }

    /// The sum over every value.
    pub fn total(&self) -> i64 {
        self.values
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .sum()
    }
}

/// A counter without labels, read when collected.
pub struct Counter {
    value: Arc<AtomicU64>,
    _observed: ObservableCounter<u64>,
}

impl Counter {
    pub(crate) fn new(meter: &Meter, spec: Spec) -> Self {
        let value = Arc::new(AtomicU64::new(0));
        let read = value.clone();
        let observed = meter
            .u64_observable_counter(spec.name)
            .with_description(spec.help)
            .with_unit(spec.unit)
            .with_callback(move |o| o.observe(read.load(Ordering::Relaxed), &[]))
            .build();
        Self {
            value,
            _observed: observed,
        }
    }

    /// Adds one.
    pub fn inc(&self) {
        self.value.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::metrics::MeterProvider as _;

    #[test]
    fn each_combination_of_label_values_has_its_own_handle() {
        let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder().build();
        let meter = provider.meter("test");
        let spec = Spec {
            name: "c",
            help: "h",
            unit: "",
            labels: &["x", "y"],
        };
        let c = CounterVec::new(&meter, spec);
        c.inc(&["a", "b"]);
        c.add(&["ab", ""], 5);
        c.inc(&["a", "b"]);
        assert_eq!(c.get(&["a", "b"]), 2);
        assert_eq!(c.get(&["ab", ""]), 5);
        assert_eq!(c.get(&["b", "a"]), 0);
        let g = GaugeVec::new(&meter, spec);
        g.set(&["a", "b"], -3);
        assert_eq!(g.get(&["a", "b"]), -3);
    }
}
