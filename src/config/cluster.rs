//! `[cluster]`: several gateway nodes sharing one Redis. Absent, the gateway
//! runs alone, exactly as without it.

use super::model::Secret;
use super::validate::ConfigIssue;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `[cluster]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name among its peers; default `$POD_NAME`, else the host name.
    #[serde(default)]
    pub node_id: Option<String>,
    /// Where the gRPC service listens for peers.
    #[serde(default = "listen")]
    pub listen: String,
    /// The address peers dial (`host:port`); default `$POD_IP` with the port
    /// of `listen`, else `listen` itself when it names one interface.
    #[serde(default)]
    pub advertise: Option<String>,
    /// How long a node's membership lasts without renewal (on Redis' clock).
    #[serde(default = "lease_ttl_ms")]
    pub lease_ttl_ms: u64,
    /// How often the lease is renewed (and shard ownership reconciled).
    #[serde(default = "renew_ms")]
    pub renew_ms: u64,
    /// A node that could not renew for this long fences itself: it stops
    /// sending, closes its streams and rejoins as a new incarnation. Below
    /// `lease_ttl_ms`, so it stops before anyone may take its shards.
    #[serde(default = "fence_after_ms")]
    pub fence_after_ms: u64,
    /// Deadline of one forwarded stanza or call, kept by both ends (sent as
    /// `grpc-timeout` on unary calls).
    #[serde(default = "forward_timeout_ms")]
    pub forward_timeout_ms: u64,
    /// Most shards a node takes or hands over in one round.
    #[serde(default = "max_moves")]
    pub max_moves: usize,
    /// Shared secret every peer call carries (compared in constant time).
    #[serde(default)]
    pub secret: Option<Secret>,
    /// File holding the shared secret instead (a Kubernetes Secret mount).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// CA that signs the peers' certificates: with `cert_file` and
    /// `key_file`, peer traffic is mutual TLS.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// This node's certificate chain (PEM), presented to peers both ways.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The key of `cert_file` (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// The smallest shared secret accepted: it is all that keeps a stranger on
/// the pod network from publishing or registering through a node.
const MIN_SECRET_BYTES: usize = 16;

impl ClusterConfig {
    /// This node's id as configured or found in the environment.
    pub fn node_id(&self) -> String {
        self.node_id
            .clone()
            .or_else(|| env_var("POD_NAME"))
            .unwrap_or_else(host_name)
    }

    /// The address peers dial.
    pub fn advertise(&self) -> String {
        if let Some(a) = &self.advertise {
            return a.clone();
        }
        let Ok(listen) = self.listen.parse::<SocketAddr>() else {
            return self.listen.clone();
        };
        match env_var("POD_IP") {
            Some(ip) if ip.contains(':') => format!("[{ip}]:{}", listen.port()),
            Some(ip) => format!("{ip}:{}", listen.port()),
            None if listen.ip().is_unspecified() => format!("{}:{}", host_name(), listen.port()),
            None => listen.to_string(),
        }
    }

    /// The shared secret, from `secret` or `secret_file`.
    pub fn read_secret(&self) -> Result<Secret, ConfigIssue> {
        match (&self.secret, &self.secret_file) {
            (Some(s), None) => Ok(s.clone()),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|s| Secret::new(s.trim_end_matches(['\r', '\n'])))
                .map_err(|e| {
                    ConfigIssue::new(
                        "cluster.secret_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                }),
            (Some(_), Some(_)) => Err(ConfigIssue::new(
                "cluster.secret",
                "give cluster.secret or cluster.secret_file, not both",
            )),
            (None, None) => Err(ConfigIssue::new(
                "cluster.secret",
                "peers must authenticate: set cluster.secret or cluster.secret_file",
            )),
        }
    }

    /// The lease timings as durations.
    pub fn timings(&self) -> LeaseTimings {
        LeaseTimings {
            ttl: Duration::from_millis(self.lease_ttl_ms),
            renew: Duration::from_millis(self.renew_ms),
            fence_after: Duration::from_millis(self.fence_after_ms),
        }
    }

    /// Everything wrong with the section that can be told without the network.
    pub(crate) fn validate(&self, issues: &mut Vec<ConfigIssue>) {
        if self.listen.parse::<SocketAddr>().is_err() {
            issues.push(ConfigIssue::new(
                "cluster.listen",
                format!(
                    "must be an address such as 0.0.0.0:7700, got {:?}",
                    self.listen
                ),
            ));
        }
        if self.node_id().trim().is_empty() || self.node_id().contains(['|', ' ']) {
            issues.push(ConfigIssue::new(
                "cluster.node_id",
                "must be a non-empty name without spaces or '|'",
            ));
        }
        if self
            .advertise()
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            issues.push(ConfigIssue::new(
                "cluster.advertise",
                format!("must be host:port, got {:?}", self.advertise()),
            ));
        }
        let t = self;
        if t.renew_ms == 0
            || t.renew_ms * 2 > t.fence_after_ms
            || t.fence_after_ms >= t.lease_ttl_ms
        {
            issues.push(ConfigIssue::new(
                "cluster.fence_after_ms",
                format!(
                    "needs 0 < 2 x renew_ms <= fence_after_ms < lease_ttl_ms (a node must stop before its lease ends), got renew {} / fence {} / ttl {}",
                    t.renew_ms, t.fence_after_ms, t.lease_ttl_ms
                ),
            ));
        }
        if self.forward_timeout_ms == 0 {
            issues.push(ConfigIssue::new(
                "cluster.forward_timeout_ms",
                "must be greater than 0",
            ));
        }
        if self.max_moves == 0 {
            issues.push(ConfigIssue::new(
                "cluster.max_moves",
                "must be greater than 0",
            ));
        }
        match self.read_secret() {
            Ok(s) if s.expose().len() < MIN_SECRET_BYTES => issues.push(ConfigIssue::new(
                "cluster.secret",
                format!("must be at least {MIN_SECRET_BYTES} bytes"),
            )),
            Ok(_) => {}
            Err(issue) => issues.push(issue),
        }
        let tls = [&self.ca_file, &self.cert_file, &self.key_file];
        let set = tls.iter().filter(|f| f.is_some()).count();
        if set != 0 && set != 3 {
            issues.push(ConfigIssue::new(
                "cluster.ca_file",
                "mutual TLS needs all of cluster.ca_file, cluster.cert_file and cluster.key_file",
            ));
        }
    }
}

/// How long a lease lasts, how often it is renewed, and when a node that
/// could not renew stops acting as a member.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTimings {
    /// Lease length on Redis' clock.
    pub ttl: Duration,
    /// Renewal period.
    pub renew: Duration,
    /// Time without a renewal after which a node fences itself.
    pub fence_after: Duration,
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| env_var("HOSTNAME"))
        .unwrap_or_else(|| "pushgate".to_owned())
}

fn listen() -> String {
    "0.0.0.0:7700".to_owned()
}
fn lease_ttl_ms() -> u64 {
    10_000
}
fn renew_ms() -> u64 {
    2_000
}
fn fence_after_ms() -> u64 {
    7_000
}
fn forward_timeout_ms() -> u64 {
    2_000
}
fn max_moves() -> usize {
    128
}
