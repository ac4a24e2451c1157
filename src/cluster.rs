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
mod link;
mod metrics;
mod peers;
mod router;
mod rpc;
mod streams;

pub use metrics::ClusterMetrics;
pub(crate) use router::{Route, Shared, View};
pub use router::{Router, Unregister};
pub(crate) use rpc::{FORWARD_METHOD, pb};

use crate::config::ClusterConfig;
use crate::delivery::Dispatcher;
use crate::registry::{Fences, Registry};
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

/// A running cluster node: its runtime (gRPC server, channels, coordinator)
/// and how to stop it.
pub struct Cluster {
    runtime: Option<tokio::runtime::Runtime>,
    router: Router,
    stop: watch::Sender<bool>,
    /// Stops the gRPC server, after the hand-over: peers' forwards for the
    /// shards still here are served until they have moved.
    stop_serving: watch::Sender<bool>,
    coordinator: Option<tokio::sync::oneshot::Receiver<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    listener: Option<std::net::TcpListener>,
    config: ClusterConfig,
}

impl Cluster {
    /// Prepares this node: binds the gRPC listener and starts the runtime;
    /// nothing is served until `serve`.
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
        let listener =
            std::net::TcpListener::bind(&config.listen).map_err(|source| ClusterError::Bind {
                address: config.listen.clone(),
                source,
            })?;
        let tls = rpc::Tls::load(config)?;
        // Last: nothing fails after it (a runtime dropped inside the caller's
        // async context would panic).
        // One worker: forwarding is I/O and hand-offs, and with two,
        // parking and waking the workers took a sixth of this runtime's
        // samples (BENCHMARKS.md, "A moderate rate: fewer commits, smaller
        // futures").
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            // `pushgate-bench` finds these threads by this name.
            .thread_name("pushgate-cluster")
            .enable_all()
            .build()
            .map_err(ClusterError::Runtime)?;
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
        let (stop_serving, _) = watch::channel(false);
        Ok(Self {
            runtime: Some(runtime),
            router: Router { shared },
            stop,
            stop_serving,
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
            self.stop_serving.subscribe(),
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
        let _ = self.stop_serving.send(true);
        if let Some(s) = self.server.take() {
            let _ = tokio::time::timeout_at(deadline, s).await;
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Cluster {
    /// A cluster dropped without [`Cluster::leave`] (the gateway failed to
    /// start) stops its runtime without waiting: dropping a runtime inside
    /// an async context would panic.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        let _ = self.stop_serving.send(true);
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
