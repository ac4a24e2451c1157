//! `[store]`: where registrations and the outbox live.

use super::model::Secret;
use serde::Deserialize;
use std::path::PathBuf;

/// Which registry backend to use.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// redb file in `store.path`: single node, no setup.
    #[default]
    Embedded,
    /// Redis or Redis Cluster: what several gateway nodes share.
    Redis,
}

/// `[store]`. The `path` key is for the embedded backend; the others for Redis.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The backend.
    #[serde(default)]
    pub backend: StoreBackend,
    /// Directory of the embedded store.
    #[serde(default = "store_path")]
    pub path: PathBuf,
    /// One Redis server: `redis://host:6379/0`, or `rediss://` for TLS.
    #[serde(default)]
    pub url: Option<String>,
    /// Seed nodes of a Redis Cluster (with `cluster = true`).
    #[serde(default)]
    pub urls: Vec<String>,
    /// Talk the Redis Cluster protocol (slots, MOVED, failover).
    #[serde(default)]
    pub cluster: bool,
    /// ACL user name (Redis 6+); overrides one in the URL.
    #[serde(default)]
    pub username: Option<String>,
    /// Password (`requirepass` or the ACL user's); overrides one in the URL.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Connections kept open (each multiplexes many requests).
    #[serde(default = "pool_size")]
    pub pool_size: usize,
    /// Limit for opening a connection.
    #[serde(default = "timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Limit for one command or pipeline, answer included.
    #[serde(default = "timeout_ms")]
    pub command_timeout_ms: u64,
    /// Number of shards; fixed for the life of the data (recorded in Redis and
    /// checked at every start).
    #[serde(default = "shards")]
    pub shards: u32,
    /// Registrations kept in memory (0 disables the cache).
    #[serde(default = "cache_entries")]
    pub cache_entries: usize,
    /// Longest a cached registration is used before it is read again.
    #[serde(default = "cache_ttl_s")]
    pub cache_ttl_s: u64,
    /// With `rediss://`: PEM CA certificates that sign the servers'
    /// certificates, trusted instead of the system's (a private CA, as
    /// managed Redis services and cert-manager issue).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// With `rediss://`: a PEM client certificate, for servers that demand
    /// one (`tls-auth-clients yes`); with `tls_key_file`.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// The PEM private key of `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::default(),
            path: store_path(),
            url: None,
            urls: Vec::new(),
            cluster: false,
            username: None,
            password: None,
            pool_size: pool_size(),
            connect_timeout_ms: timeout_ms(),
            command_timeout_ms: timeout_ms(),
            shards: shards(),
            cache_entries: cache_entries(),
            cache_ttl_s: cache_ttl_s(),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

/// The default number of shards.
pub(crate) const DEFAULT_SHARDS: u32 = 1024;

fn store_path() -> PathBuf {
    PathBuf::from("data")
}
fn pool_size() -> usize {
    4
}
fn timeout_ms() -> u64 {
    2_000
}
fn shards() -> u32 {
    DEFAULT_SHARDS
}
fn cache_entries() -> usize {
    100_000
}
fn cache_ttl_s() -> u64 {
    60
}
