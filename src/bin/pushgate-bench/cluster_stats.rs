//! What the gateways of a multi-node run say about forwarding, read from
//! their `/metrics`: how many publishes were forwarded to their owner, and
//! how long the forwards took.

use std::collections::BTreeMap;

/// Sums over every node at one moment.
#[derive(Debug, Clone, Default)]
pub struct ForwardStats {
    /// Publishes received on the nodes' streams (every outcome).
    pub publishes: f64,
    /// Publishes forwarded to their owner and answered.
    pub forwarded: f64,
    /// Forward latency histogram of publishes: bucket bound (s) → count.
    pub buckets: BTreeMap<u64, f64>,
}

impl ForwardStats {
    /// Reads every node's `/metrics` (HTTP on `ports`).
    pub async fn read(ports: &[u16]) -> Self {
        let mut stats = Self::default();
        let client = reqwest::Client::new();
        for port in ports {
            let Ok(response) = client
                .get(format!("http://127.0.0.1:{port}/metrics"))
                .send()
                .await
            else {
                continue;
            };
            let text = response.text().await.unwrap_or_default();
            for line in text.lines() {
                let Some((series, value)) = line.rsplit_once(' ') else {
                    continue;
                };
                let Ok(value) = value.parse::<f64>() else {
                    continue;
                };
                if series.starts_with("pushgate_publishes_total{") {
                    stats.publishes += value;
                } else if series
                    == "pushgate_cluster_forwards_total{kind=\"publish\",outcome=\"ok\"}"
                {
                    stats.forwarded += value;
                } else if let Some(le) = series
                    .strip_prefix(
                        "pushgate_cluster_forward_latency_seconds_bucket{kind=\"publish\",le=\"",
                    )
                    .and_then(|rest| rest.strip_suffix("\"}"))
                {
                    // Keyed in µs so the bounds sort; +Inf last.
                    let bound = le.parse::<f64>().map_or(u64::MAX, |s| (s * 1e6) as u64);
                    *stats.buckets.entry(bound).or_default() += value;
                }
            }
        }
        stats
    }

    /// What happened between `before` and `self`: the share of publishes
    /// forwarded, and the forward latency's 99th percentile as the bound of
    /// the histogram bucket it falls in (ms).
    pub fn since(&self, before: &Self) -> (f64, Option<f64>) {
        let publishes = self.publishes - before.publishes;
        let forwarded = self.forwarded - before.forwarded;
        let share = if publishes > 0.0 {
            forwarded / publishes
        } else {
            0.0
        };
        let counts: Vec<(u64, f64)> = self
            .buckets
            .iter()
            .map(|(bound, n)| {
                (
                    *bound,
                    n - before.buckets.get(bound).copied().unwrap_or(0.0),
                )
            })
            .collect();
        let total = counts.last().map_or(0.0, |(_, n)| *n);
        let p99 = (total > 0.0)
            .then(|| counts.iter().find(|(_, n)| *n >= total * 0.99))
            .flatten()
            .map(|(bound, _)| *bound as f64 / 1000.0);
        (share, p99)
    }
}
