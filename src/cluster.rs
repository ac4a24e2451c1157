//! The cluster: several gateway nodes on one Redis, each owning a share of
//! the shards, forwarding to each other what belongs to another.
//!
//! - Membership (`coordinator`): each node keeps a lease in Redis (node id,
//!   gRPC address, a per-start incarnation; lease end on Redis' clock),
//!   renews it every `renew_ms`, and fences itself when it could not for
//!   `fence_after_ms`: it gives up every shard, stops sending and writing,
//!   and joins again as a new incarnation.
//! - Ownership (`assign`, `coordinator`): shards go to live members by
//!   rendezvous hashing with a load bound. A node takes a shard by
//!   compare-and-set of its owner record with the next epoch, and every write
//!   of the shard is a script that compares that record first
//!   (`registry::Fences`), so a former owner that was paused or cut off cannot
//!   write after losing it. Hand-over is graceful on join, leave and SIGTERM;
//!   after a crash, the shards are taken once the dead node's lease ends.
//! - Forwarding (`rpc`, `peers`, [`Router`]): a publish, command or REST
//!   unregister for a shard owned elsewhere goes to its owner over gRPC, and
//!   is answered once the owner's write is durable. When the owner is moving
//!   or unreachable, the answer is a `wait` error, never `cancel`.
//!
//! No consensus of our own: Redis' scripts decide who owns what.

mod assign;
mod coordinator;
mod metrics;
mod peers;
mod rpc;
mod streams;

pub use metrics::ClusterMetrics;
pub(crate) use rpc::pb;

use crate::config::ClusterConfig;
use crate::delivery::Dispatcher;
use crate::registry::{DeviceRef, Fences, Member, Registry, RegistryError, shard_of};
use coordinator::Coordinator;
use peers::Peers;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{Notify, watch};

/// Why the cluster could not start.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// A `[cluster]` setting is unusable (checked by `check-config` already).
    #[error("{key}: {message}")]
    Setting {
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The gRPC listener could not be bound.
    #[error("cluster.listen {address}")]
    Bind {
        /// The address.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The cluster's runtime could not start.
    #[error("the cluster runtime could not start")]
    Runtime(#[source] std::io::Error),
    /// A TLS file could not be read.
    #[error("cluster TLS: cannot read {path}")]
    Tls {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Why a device could not be unregistered on its owner.
#[derive(Debug, Error)]
pub enum Unregister {
    /// The shard is moving or its owner is unreachable: try again.
    #[error("the registration's gateway node is changing")]
    Moving,
    /// This node's store failed.
    #[error(transparent)]
    Store(RegistryError),
    /// The owner's store failed; its words.
    #[error("on the owner: {0}")]
    Remote(String),
}

/// What `check-config` can tell about `[cluster]` beyond the validation:
/// the TLS files are read and parsed.
pub fn check(config: &ClusterConfig) -> Vec<crate::config::ConfigIssue> {
    let issue = |message: String| crate::config::ConfigIssue::new("cluster.cert_file", message);
    match rpc::Tls::load(config) {
        Ok(None) => Vec::new(),
        Ok(Some(tls)) => {
            let server = tonic::transport::ServerTlsConfig::new()
                .identity(tls.identity.clone())
                .client_ca_root(tls.ca.clone());
            match tonic::transport::Server::builder().tls_config(server) {
                Ok(_) => Vec::new(),
                Err(e) => vec![issue(format!("unusable certificate, key or CA: {e}"))],
            }
        }
        Err(e) => vec![issue(crate::errors::chain(&e))],
    }
}

/// What the members and the assignment look like from this node.
#[derive(Debug, Default)]
pub(crate) struct View {
    /// Live members, sorted by node id.
    members: Vec<Member>,
    /// The member index owning each shard.
    owners: Vec<usize>,
    /// False while this node is not a member (starting, or fenced).
    joined: bool,
}

impl View {
    fn owner(&self, shard: u32) -> Option<&Member> {
        self.owners
            .get(shard as usize)
            .and_then(|&i| self.members.get(i))
    }
}

/// Where work for a node goes.
#[derive(Debug, Clone)]
pub(crate) enum Route {
    /// This node owns the shard.
    Local,
    /// The owner is the peer at this address.
    Peer {
        /// The shard.
        shard: u32,
        /// Its gRPC address.
        address: String,
    },
    /// Nobody can take it now (moving, or this node is not a member).
    Moving,
}

/// Shared by the router, the coordinator and the status page.
pub(crate) struct Shared {
    node: String,
    fences: Arc<Fences>,
    view: RwLock<Arc<View>>,
    shards: u32,
    forward_timeout: Duration,
    peers: Peers,
    metrics: Arc<ClusterMetrics>,
    /// Woken to make the coordinator look again at once (a peer left).
    nudge: Notify,
}

impl Shared {
    pub(crate) fn view(&self) -> Arc<View> {
        self.view
            .read()
            .map_or_else(|p| p.into_inner().clone(), |v| v.clone())
    }

    fn set_view(&self, view: View) {
        let view = Arc::new(view);
        match self.view.write() {
            Ok(mut v) => *v = view,
            Err(p) => *p.into_inner() = view,
        }
    }
}

/// Decides, for each node id, whether this node or a peer handles it; and
/// carries the forwarded calls. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    shared: Arc<Shared>,
}

impl Router {
    /// The shard of `node`.
    pub(crate) fn shard(&self, node: &str) -> u32 {
        shard_of(node, self.shared.shards)
    }

    /// Where work for `node` goes now. A shard assigned to this node but not
    /// yet taken (it is being handed over) is waited for, up to half the
    /// forward deadline, rather than refused.
    pub(crate) async fn route(&self, node: &str) -> Route {
        let shard = self.shard(node);
        if self.shared.fences.holds(shard) {
            return Route::Local;
        }
        let view = self.shared.view();
        match view.owner(shard) {
            Some(m) if m.node == self.shared.node => {
                if self
                    .shared
                    .fences
                    .wait_held(shard, self.shared.forward_timeout / 2)
                    .await
                {
                    Route::Local
                } else {
                    Route::Moving
                }
            }
            Some(m) if view.joined => Route::Peer {
                shard,
                address: m.address.clone(),
            },
            _ => Route::Moving,
        }
    }

    /// This node's id.
    pub(crate) fn node(&self) -> &str {
        &self.shared.node
    }

    /// Removes `device`'s registration on the owner of its shard (the Tigase
    /// REST unregister): here, or on the peer that owns it.
    pub(crate) async fn unregister(
        &self,
        registry: &Registry,
        device: &DeviceRef<'_>,
    ) -> Result<bool, Unregister> {
        let node = registry.keys().map_err(Unregister::Store)?.node_id(
            device.account,
            device.provider,
            device.identity,
        );
        let (shard, address) = match self.route(&node).await {
            Route::Local => {
                return registry.unregister(device).await.map_err(|e| match e {
                    RegistryError::NotOwner { .. } | RegistryError::Fenced { .. } => {
                        Unregister::Moving
                    }
                    e => Unregister::Store(e),
                });
            }
            Route::Moving => return Err(Unregister::Moving),
            Route::Peer { shard, address } => (shard, address),
        };
        let request = pb::UnregisterRequest {
            route: Some(pb::Route {
                shard,
                from_node: self.shared.node.clone(),
            }),
            account: device.account.to_owned(),
            provider: device.provider.to_owned(),
            token: device.identity.to_owned(),
        };
        let m = &self.shared.metrics;
        let started = crate::clock::now();
        let result = self.shared.peers.unregister(&address, request).await;
        m.forward_latency.observe(
            &["unregister"],
            (crate::clock::now() - started).as_secs_f64(),
        );
        let (label, answer) = match result {
            Ok(pb::unregister_reply::Outcome::Removed(removed)) => ("ok", Ok(removed)),
            Ok(pb::unregister_reply::Outcome::NotOwner(_)) => {
                ("not-owner", Err(Unregister::Moving))
            }
            Ok(pb::unregister_reply::Outcome::StoreError(text)) => {
                ("ok", Err(Unregister::Remote(text)))
            }
            Err(e) => {
                tracing::debug!(
                    shard,
                    "unregister forward failed: {}",
                    crate::errors::chain(&e)
                );
                ("unreachable", Err(Unregister::Moving))
            }
        };
        m.forwards.inc(&["unregister", label]);
        answer
    }

    /// The forwarding client.
    pub(crate) fn peers(&self) -> &Peers {
        &self.shared.peers
    }

    /// The cluster's metrics.
    pub(crate) fn metrics(&self) -> &ClusterMetrics {
        &self.shared.metrics
    }

    /// This node's part, for `/readyz`.
    pub fn status(&self) -> serde_json::Value {
        let view = self.shared.view();
        let owned = self.shared.fences.held().len();
        let mut per_member = std::collections::BTreeMap::new();
        for &i in &view.owners {
            if let Some(m) = view.members.get(i) {
                *per_member.entry(m.node.clone()).or_insert(0usize) += 1;
            }
        }
        serde_json::json!({
            "node": self.shared.node,
            "member": view.joined,
            "members": view.members.iter().map(|m| &m.node).collect::<Vec<_>>(),
            "shards_owned": owned,
            "shards_assigned": per_member,
        })
    }

    /// Appends the cluster's metrics to a `/metrics` page.
    pub fn render_metrics(&self, out: &mut String) {
        let m = &self.shared.metrics;
        m.fenced_writes
            .set(i64::try_from(self.shared.fences.refusals()).unwrap_or(i64::MAX));
        m.render(out);
    }

    /// Whether this node is a member now.
    pub fn is_member(&self) -> bool {
        self.shared.view().joined
    }
}

/// A running cluster node: its runtime (gRPC server, channels, coordinator)
/// and how to stop it.
pub struct Cluster {
    runtime: Option<tokio::runtime::Runtime>,
    router: Router,
    stop: watch::Sender<bool>,
    coordinator: Option<tokio::sync::oneshot::Receiver<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    listener: Option<std::net::TcpListener>,
    config: ClusterConfig,
}

impl Cluster {
    /// Prepares this node: binds the gRPC listener and starts the runtime;
    /// nothing is served until [`Self::serve`].
    pub fn new(
        config: &ClusterConfig,
        shards: u32,
        fences: Arc<Fences>,
        metrics: Arc<ClusterMetrics>,
    ) -> Result<Self, ClusterError> {
        let secret = config.read_secret().map_err(|i| ClusterError::Setting {
            key: "cluster.secret",
            message: i.to_string(),
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pushgate-cluster")
            .enable_all()
            .build()
            .map_err(ClusterError::Runtime)?;
        let listener =
            std::net::TcpListener::bind(&config.listen).map_err(|source| ClusterError::Bind {
                address: config.listen.clone(),
                source,
            })?;
        let tls = rpc::Tls::load(config)?;
        let peers = Peers::new(
            runtime.handle().clone(),
            secret,
            tls,
            Duration::from_millis(config.forward_timeout_ms),
        );
        let shared = Arc::new(Shared {
            node: config.node_id(),
            fences,
            view: RwLock::new(Arc::new(View::default())),
            shards,
            forward_timeout: Duration::from_millis(config.forward_timeout_ms),
            peers,
            metrics,
            nudge: Notify::new(),
        });
        let (stop, _) = watch::channel(false);
        Ok(Self {
            runtime: Some(runtime),
            router: Router { shared },
            stop,
            coordinator: None,
            server: None,
            listener: Some(listener),
            config: config.clone(),
        })
    }

    /// The router the stanza handler and the HTTP routes use.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Serves peers with `handler` and starts taking part: membership,
    /// shards, and the stream slots named in `slots` (`host:port#n`, in
    /// configuration order); the returned receiver says which of those this
    /// node should have a stream open for, and `live` which have a session
    /// running.
    pub(crate) fn serve(
        &mut self,
        handler: Arc<crate::gateway::PushComponent>,
        registry: Registry,
        dispatcher: Dispatcher,
        slots: Vec<String>,
        live: watch::Receiver<std::collections::BTreeSet<usize>>,
    ) -> Result<watch::Receiver<std::collections::BTreeSet<usize>>, ClusterError> {
        let (open, streams) = watch::channel(std::collections::BTreeSet::new());
        let (Some(runtime), Some(listener)) = (&self.runtime, self.listener.take()) else {
            return Ok(streams);
        };
        let shared = self.router.shared.clone();
        self.server = Some(rpc::serve(
            runtime.handle(),
            listener,
            &self.config,
            handler,
            shared.clone(),
            self.stop.subscribe(),
        )?);
        let coordinator = Coordinator::new(
            &self.config,
            shared,
            registry,
            dispatcher,
            self.stop.subscribe(),
            streams::StreamSlots::new(slots, open, live),
        );
        // Its own thread: its store calls fan out over borrowed futures that
        // are not `Send`, so it cannot be a task of a multi-threaded runtime.
        let (done, finished) = tokio::sync::oneshot::channel();
        let runtime = crate::gateway::runtime().map_err(ClusterError::Runtime)?;
        std::thread::Builder::new()
            .name("pushgate-membership".into())
            .spawn(move || {
                runtime.block_on(coordinator.run());
                let _ = done.send(());
            })
            .map_err(ClusterError::Runtime)?;
        self.coordinator = Some(finished);
        Ok(streams)
    }

    /// Leaves the cluster by `deadline`: hands every shard over (requests in
    /// flight finished, the outbox committed), leaves the member list, tells
    /// the peers, and stops serving them.
    pub async fn leave(mut self, deadline: crate::clock::Instant) {
        let _ = self.stop.send(true);
        if let Some(c) = self.coordinator.take() {
            let _ = tokio::time::timeout_at(deadline, c).await;
        }
        if let Some(s) = self.server.take() {
            let _ = tokio::time::timeout_at(deadline, s).await;
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
