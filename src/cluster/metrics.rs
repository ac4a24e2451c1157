//! What the cluster counts: instruments on the gateway's meter provider, so
//! they appear on the same `/metrics` page and in the same OTLP export.

use crate::registry::Fences;
use crate::telemetry::{Counter, CounterVec, Gauge, HistogramVec, spec};
use opentelemetry::metrics::{Meter, ObservableCounter};
use std::sync::Arc;

/// Cluster metrics. Labels are closed sets: never a node id of a peer (a
/// cluster of 50 would make 50 series per metric), never a shard.
pub struct ClusterMetrics {
    /// Live members as last read.
    pub members: Gauge,
    /// Shards this node owns.
    pub shards_owned: Gauge,
    /// Shards acquired, released (gracefully) and lost (taken from us, or
    /// dropped when this node fenced itself).
    pub handoffs: CounterVec,
    /// Calls to owners, by kind (publish, command, unregister) and outcome
    /// (ok, not-owner, unreachable).
    pub forwards: CounterVec,
    /// Calls received from peers, by kind.
    pub forwarded_in: CounterVec,
    /// Forward round trip, by kind.
    pub forward_latency: HistogramVec,
    /// Times this node fenced itself.
    pub self_fenced: Counter,
    /// Writes refused because the shard's owner record had changed, read
    /// from the fences when collected.
    _fenced_writes: ObservableCounter<u64>,
}

impl ClusterMetrics {
    /// The cluster's instruments on `meter`; refused writes are read from
    /// `fences`.
    pub fn new(meter: &Meter, fences: Arc<Fences>) -> Self {
        let kind: &'static [&'static str] = &["kind"];
        Self {
            members: Gauge::new(
                meter,
                spec("pushgate.cluster.members", "Live cluster members.", "", &[]),
            ),
            shards_owned: Gauge::new(
                meter,
                spec(
                    "pushgate.cluster.shards_owned",
                    "Shards this node owns.",
                    "",
                    &[],
                ),
            ),
            handoffs: CounterVec::new(
                meter,
                spec(
                    "pushgate.cluster.handoffs",
                    "Shards acquired, released or lost by this node.",
                    "",
                    kind,
                ),
            ),
            forwards: CounterVec::new(
                meter,
                spec(
                    "pushgate.cluster.forwards",
                    "Work sent to the owner of its shard, by kind and outcome.",
                    "",
                    &["kind", "outcome"],
                ),
            ),
            forwarded_in: CounterVec::new(
                meter,
                spec(
                    "pushgate.cluster.forwarded_in",
                    "Work received from peers for shards this node owns, by kind.",
                    "",
                    kind,
                ),
            ),
            forward_latency: HistogramVec::new(
                meter,
                spec(
                    "pushgate.cluster.forward.latency",
                    "Round trip of a forwarded call, by kind.",
                    "s",
                    kind,
                ),
            ),
            self_fenced: Counter::new(
                meter,
                spec(
                    "pushgate.cluster.self_fenced",
                    "Times this node fenced itself (lease not renewed in time).",
                    "",
                    &[],
                ),
            ),
            _fenced_writes: meter
                .u64_observable_counter("pushgate.cluster.fenced_writes")
                .with_description("Writes Redis refused because another node had taken the shard.")
                .with_callback(move |o| o.observe(fences.refusals(), &[]))
                .build(),
        }
    }
}

impl std::fmt::Debug for ClusterMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterMetrics").finish_non_exhaustive()
    }
}
