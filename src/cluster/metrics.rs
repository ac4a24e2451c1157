//! What the cluster counts, rendered after the gateway's own metrics.

use crate::telemetry::{CounterVec, Gauge, HistogramVec};
use std::fmt::Write as _;

/// Cluster metrics. Labels are closed sets: never a node id of a peer (a
/// cluster of 50 would make 50 series per metric), never a shard.
#[derive(Debug)]
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
    pub self_fenced: Gauge,
    /// Writes refused because the shard's owner record had changed.
    pub fenced_writes: Gauge,
}

impl Default for ClusterMetrics {
    fn default() -> Self {
        Self {
            members: Gauge::default(),
            shards_owned: Gauge::default(),
            handoffs: CounterVec::new(&["kind"]),
            forwards: CounterVec::new(&["kind", "outcome"]),
            forwarded_in: CounterVec::new(&["kind"]),
            forward_latency: HistogramVec::new(&["kind"]),
            self_fenced: Gauge::default(),
            fenced_writes: Gauge::default(),
        }
    }
}

impl ClusterMetrics {
    /// Appends the Prometheus text of the cluster metrics to `out`.
    pub fn render(&self, out: &mut String) {
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, v: i64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        gauge(
            out,
            "pushgate_cluster_members",
            "Live cluster members.",
            "gauge",
            self.members.get(),
        );
        gauge(
            out,
            "pushgate_cluster_shards_owned",
            "Shards this node owns.",
            "gauge",
            self.shards_owned.get(),
        );
        gauge(
            out,
            "pushgate_cluster_self_fenced_total",
            "Times this node fenced itself (lease not renewed in time).",
            "counter",
            self.self_fenced.get(),
        );
        gauge(
            out,
            "pushgate_cluster_fenced_writes_total",
            "Writes Redis refused because another node had taken the shard.",
            "counter",
            self.fenced_writes.get(),
        );
        self.handoffs.render(
            "pushgate_cluster_handoffs_total",
            "Shards acquired, released or lost by this node.",
            out,
        );
        self.forwards.render(
            "pushgate_cluster_forwards_total",
            "Work sent to the owner of its shard, by kind and outcome.",
            out,
        );
        self.forwarded_in.render(
            "pushgate_cluster_forwarded_in_total",
            "Work received from peers for shards this node owns, by kind.",
            out,
        );
        self.forward_latency.render(
            "pushgate_cluster_forward_latency_seconds",
            "Round trip of a forwarded call, by kind.",
            out,
        );
    }
}
