//! Several gateway processes on one Redis, as a cluster: each with its own
//! directory, HTTP and gRPC ports, and short leases so takeovers happen
//! within seconds.

use super::gateway::{GatewayProcess, TestConfig, free_port};
use super::mock_provider::MockProvider;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The peers' shared secret in tests.
pub const CLUSTER_SECRET: &str = "cluster-secret-for-tests-0123456789";

/// Lease timings of test clusters (ms): lease, renewal, self-fence. Short,
/// so a dead node's work moves within seconds.
pub const LEASE_MS: u64 = 3_000;
const RENEW_MS: u64 = 500;
const FENCE_MS: u64 = 2_000;

/// What a test cluster's nodes share.
pub struct ClusterSpec {
    /// The fake XMPP server's component port.
    pub xmpp_port: u16,
    /// `[store]` keys of the shared Redis.
    pub store_keys: String,
    /// The provider mock's TOML (from [`TestConfig::with_mock_providers`]).
    pub providers: String,
    /// Extra `[delivery]` keys.
    pub delivery: String,
    /// Streams to the XMPP server, cluster-wide.
    pub connections: usize,
    /// Lease, renewal and self-fence times (ms).
    pub lease: (u64, u64, u64),
    /// Extra `[cluster]` keys (TLS files, another secret).
    pub cluster_keys: String,
    /// Parent directory of the nodes' directories.
    pub dir: PathBuf,
}

impl ClusterSpec {
    /// A spec for nodes on `redis_url` connecting to `xmpp_port`.
    pub fn new(xmpp_port: u16, redis_url: &str, mock: &MockProvider, dir: &Path) -> Self {
        let providers = TestConfig::new(xmpp_port, dir)
            .with_mock_providers(mock)
            .extra;
        Self {
            xmpp_port,
            store_keys: format!("backend = \"redis\"\nurl = \"{redis_url}\"\n"),
            providers,
            delivery: String::new(),
            connections: 1,
            lease: (LEASE_MS, RENEW_MS, FENCE_MS),
            cluster_keys: String::new(),
            dir: dir.to_owned(),
        }
    }

    /// The configuration of node `id`.
    pub fn config(&self, id: &str, grpc_port: u16) -> TestConfig {
        let dir = self.dir.join(id);
        std::fs::create_dir_all(&dir).expect("node dir");
        let mut c = TestConfig::new(self.xmpp_port, &dir);
        c.store_keys = self.store_keys.clone();
        c.connections = self.connections;
        c.delivery = self.delivery.clone();
        let secret = if self.cluster_keys.contains("secret =") {
            String::new()
        } else {
            format!("secret = \"{CLUSTER_SECRET}\"\n")
        };
        c.extra = format!(
            "{providers}\n[cluster]\nnode_id = \"{id}\"\nlisten = \"127.0.0.1:{grpc_port}\"\n{secret}lease_ttl_ms = {ttl}\nrenew_ms = {renew}\nfence_after_ms = {fence}\n{keys}",
            keys = self.cluster_keys,
            providers = self.providers,
            ttl = self.lease.0,
            renew = self.lease.1,
            fence = self.lease.2,
        );
        c
    }
}

/// One node of a test cluster.
pub struct Node {
    /// Its node id.
    pub id: String,
    /// The process.
    pub process: GatewayProcess,
    config: TestConfig,
    dir: PathBuf,
}

impl Node {
    /// Starts node `id` of `spec`.
    pub fn start(spec: &ClusterSpec, id: &str) -> Self {
        let config = spec.config(id, free_port());
        let dir = spec.dir.join(id);
        let process = GatewayProcess::start(&config, &dir);
        Self {
            id: id.to_owned(),
            process,
            config,
            dir,
        }
    }

    /// Starts the node again with the same configuration (same id, ports),
    /// stopping it first (SIGTERM) if it still runs: the new process needs
    /// its ports.
    pub fn restart(&mut self) {
        let _ = self.process.terminate(super::WAIT);
        self.process = GatewayProcess::start(&self.config, &self.dir);
    }

    /// Starts the node again with `from` replaced by `to` in its configuration.
    pub fn restart_with(&mut self, from: &str, to: &str) {
        self.config.extra = self.config.extra.replace(from, to);
        self.restart();
    }

    /// Shards this node owns now (0 when it does not answer).
    pub async fn shards_owned(&self) -> f64 {
        if self.process.status("/healthz").await.is_none() {
            return 0.0;
        }
        self.process.metric("pushgate_cluster_shards_owned").await
    }
}

/// Waits until `nodes` own every one of the 1024 shards between them, each
/// some; false after `deadline`.
pub async fn settled(nodes: &[&Node], deadline: Duration) -> bool {
    super::eventually(deadline, || async {
        let mut total = 0.0;
        for n in nodes {
            let owned = n.shards_owned().await;
            if owned < 1.0 {
                return false;
            }
            total += owned;
        }
        (total - 1024.0).abs() < 0.5
    })
    .await
}

/// Sum of one metric series over `nodes`.
pub async fn metric_sum(nodes: &[&Node], series: &str) -> f64 {
    let mut total = 0.0;
    for n in nodes {
        total += n.process.metric(series).await;
    }
    total
}
