//! Wiring: builds every part from the configuration, runs until the shutdown
//! signal, then stops in order (HTTP, component streams, delivery pools)
//! within one deadline.

mod account_limits;
mod forward;
mod handler;
mod sessions;

use account_limits::{AccountLimits, LIMITED_KEYS};
pub(crate) use forward::Forwarded;
pub(crate) use handler::PushComponent;

use crate::app::AppContext;
use crate::cluster::{Cluster, ClusterMetrics};
use crate::config::{Config, ConfigIssue, StoreBackend};
use crate::delivery::{Dispatcher, PayloadPolicy};
use crate::errors::chain;
use crate::http::{self, HttpError, HttpState};
use crate::limits::KeyedRate;
use crate::providers::{self, BuildError};
use crate::registry::{Fences, Registry, RegistryError};
use crate::telemetry::Metrics;
use actix::Arbiter;
use sessions::Sessions;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tracing::{error, info, warn};

/// Pause between attempts to reach a store that was down at start.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// Why the gateway could not start.
#[derive(Debug, Error)]
pub enum GatewayError {
    /// The store could not be opened (embedded) or is misconfigured.
    #[error("store: {0}")]
    Store(#[from] RegistryError),
    /// A provider could not be built.
    #[error(transparent)]
    Provider(#[from] BuildError),
    /// The HTTP server could not start.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// A setting is out of bounds (caught by `check-config` already).
    #[error(transparent)]
    Setting(#[from] ConfigIssue),
    /// A thread's async runtime could not be built.
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// The cluster node could not start.
    #[error("cluster")]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// Threads each runtime may start for blocking work (store writes). Store
/// writes serialize on the store's lock anyway; more threads would only wait
/// there, each holding its own allocator heap (hundreds of MiB under a burst
/// of registrations with the default of 512).
const BLOCKING_THREADS: usize = 8;

/// The single-threaded runtime the gateway's threads (the actix system and
/// the session arbiters) run on.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
}

/// Checks everything that can be checked without the network: the validation of
/// `crate::config::validate` has passed already; this reads key, CA and
/// service-account files by building every provider.
pub fn check(config: &Config) -> Vec<ConfigIssue> {
    let mut issues: Vec<ConfigIssue> = config
        .providers
        .iter()
        .filter_map(|p| providers::build(p, &config.delivery).err())
        .map(|e| ConfigIssue::new(format!("providers[{}].{}", e.provider, e.key), e.message))
        .collect();
    if let Some(cluster) = &config.cluster {
        issues.extend(crate::cluster::check(cluster));
    }
    issues.extend(sessions::stream_settings(config).err());
    issues
}

/// Runs the gateway until `shutdown` resolves. Must be called inside an actix
/// `System`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), GatewayError> {
    Launch::new(config).run(shutdown).await
}

/// A gateway about to run: its configuration, and what a test may hand it
/// instead of what the configuration would make: an HTTP listener already
/// bound (to port 0), provider clients that are not HTTP, the metrics it
/// counts into, and whether it may start threads of its own (without them,
/// everything runs on the caller's thread, so `tokio::time::pause` reaches
/// every timer). Several can run side by side, each in its own actix
/// `System`.
pub struct Launch {
    config: Config,
    http_listener: Option<std::net::TcpListener>,
    clients: Option<providers::Clients>,
    metrics: Arc<Metrics>,
    own_threads: bool,
}

impl Launch {
    /// A gateway built entirely from `config`.
    pub fn new(config: Config) -> Self {
        let node = config.cluster.as_ref().map(|c| c.node_id());
        let metrics =
            Metrics::with_telemetry(&config.telemetry, node.as_deref()).unwrap_or_else(|e| {
                // Observability must not keep the gateway from serving.
                error!("{}; metrics are served at /metrics only", chain(&e));
                Metrics::new()
            });
        Self {
            config,
            http_listener: None,
            clients: None,
            metrics: Arc::new(metrics),
            own_threads: true,
        }
    }

    /// Serves HTTP on `listener` instead of binding `http.listen`.
    pub fn http_listener(mut self, listener: std::net::TcpListener) -> Self {
        self.http_listener = Some(listener);
        self
    }

    /// Uses these clients (by provider id) instead of building them from
    /// `[[providers]]`; the configuration still names the providers.
    pub fn clients(mut self, clients: providers::Clients) -> Self {
        self.clients = Some(clients);
        self
    }

    /// Runs sessions and pools on the caller's thread.
    pub fn on_one_thread(mut self) -> Self {
        self.own_threads = false;
        self
    }

    /// The metrics the gateway will count into.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Runs until `shutdown` resolves, then stops within one deadline. Must
    /// be called inside an actix `System`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), GatewayError> {
        let Launch {
            config,
            http_listener,
            clients,
            metrics,
            own_threads,
        } = self;
        for exposed in crate::config::files::exposed(&config) {
            warn!("{exposed}");
        }
        let clients = match clients {
            Some(clients) => clients,
            None => build_clients(&config)?,
        };
        if clients.is_empty() {
            warn!("no [[providers]] configured: devices cannot register until one is added");
        }
        let threads = |wanted| {
            if own_threads {
                threads(wanted)
            } else {
                Ok(Vec::new())
            }
        };
        let fences = config
            .cluster
            .as_ref()
            .map(|_| Fences::new(config.store.shards.max(1)));
        let registry = Registry::open_fenced(&config.store, fences.clone())?;
        registry.observe(&metrics);
        let pool_threads = threads(clients.len())?;
        let handles: Vec<_> = pool_threads.iter().map(Arbiter::handle).collect();
        let dispatcher = Dispatcher::start(&config, clients, &registry, &metrics, &handles)?;
        let mut cluster = match (&config.cluster, fences) {
            (Some(c), Some(fences)) => {
                let cluster_metrics = ClusterMetrics::new(metrics.meter(), fences.clone());
                Some(Cluster::new(
                    c,
                    registry.shards(),
                    fences,
                    Arc::new(cluster_metrics),
                )?)
            }
            _ => None,
        };
        let router = cluster.as_ref().map(Cluster::router);
        bring_up_store(&config, &registry, &dispatcher).await;
        if let Some(expiry) = config.registrations.unpublished_expiry() {
            actix::spawn(expire_unpublished(
                registry.clone(),
                expiry,
                metrics.clone(),
            ));
        }
        let app = AppContext::from_config(&config);
        let state = HttpState {
            app: app.clone(),
            registry: registry.clone(),
            dispatcher: dispatcher.clone(),
            metrics: metrics.clone(),
            cluster: router.clone(),
            rest_limit: KeyedRate::new(config.http.rest_per_minute, LIMITED_KEYS).map(Arc::new),
        };
        let servers = http::start(&config.http, state, http_listener)?;
        let server_handle = servers.handles();
        servers.spawn();
        let component = Arc::new(PushComponent {
            app,
            registry: registry.clone(),
            dispatcher: dispatcher.clone(),
            metrics: metrics.clone(),
            require_account_domain: config.publish.require_account_domain,
            payload: PayloadPolicy::from_config(&config.delivery),
            cluster: router,
            limits: AccountLimits::new(&config.registrations),
        });
        let settings = sessions::stream_settings(&config)?;
        let slots: Vec<String> = settings.iter().map(|s| s.label.clone()).collect();
        let arbiters = threads(settings.len())?;
        let sessions = Sessions::new(
            settings,
            component.clone(),
            metrics.clone(),
            arbiters.iter().map(Arbiter::handle).collect(),
        );
        match &mut cluster {
            Some(cluster) => {
                let live = sessions.live();
                let wanted = cluster.serve(component, registry, dispatcher.clone(), slots, live)?;
                sessions.follow(wanted);
            }
            None => sessions.start_all(),
        }

        shutdown.await;
        let grace = Duration::from_secs(config.delivery.shutdown_grace_s);
        stop(Running {
            grace,
            http: server_handle,
            sessions,
            cluster,
            dispatcher,
            metrics: metrics.clone(),
        })
        .await;
        for thread in arbiters.iter().chain(&pool_threads) {
            thread.stop();
        }
        Ok(())
    }
}

/// The provider clients `[[providers]]` describes.
fn build_clients(config: &Config) -> Result<providers::Clients, BuildError> {
    config
        .providers
        .iter()
        .map(|p| Ok((p.id.clone(), providers::build(p, &config.delivery)?)))
        .collect()
}

/// Removes the registrations never published to, now and then (a quarter
/// of the expiry, between a second and an hour), for as long as the process
/// runs. An expiry cut short by the shutdown has removed whole registrations
/// only.
async fn expire_unpublished(registry: Registry, expiry: Duration, metrics: Arc<Metrics>) {
    let every = (expiry / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    loop {
        tokio::time::sleep(every).await;
        match tokio::time::timeout(every, registry.expire_unpublished(expiry)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(expired)) => {
                info!(expired, "registrations never published to expired");
                metrics
                    .registration_commands
                    .add(&["unpublished-expiry", "removed"], expired);
            }
            Ok(Err(e)) => warn!("expiring unpublished registrations: {}", chain(&e)),
            Err(_) => warn!(
                ?every,
                "expiring unpublished registrations took too long; continued next time"
            ),
        }
    }
}

/// What a shutdown stops.
struct Running {
    grace: Duration,
    http: http::Handles,
    sessions: Sessions,
    cluster: Option<Cluster>,
    dispatcher: Dispatcher,
    metrics: Arc<Metrics>,
}

/// Stops in order within one deadline: each stage gets what the previous ones
/// left, so the whole shutdown fits in `shutdown_grace_s` (and in Kubernetes'
/// terminationGracePeriodSeconds when that is set above it).
async fn stop(running: Running) {
    let Running {
        grace,
        http,
        sessions,
        cluster,
        dispatcher,
        metrics,
    } = running;
    let deadline = crate::clock::now() + grace;
    info!(
        ?grace,
        "shutting down: closing the HTTP listener and component streams"
    );
    if tokio::time::timeout_at(deadline, http.stop(true))
        .await
        .is_err()
    {
        http.stop(false).await;
    }
    sessions.close_all(deadline).await;
    if let Some(cluster) = cluster {
        // Hands every shard over (in-flight requests finished, outbox
        // committed) and leaves the member list: the peers take over now.
        cluster.leave(deadline).await;
    }
    if dispatcher.drain(deadline).await {
        info!("deliveries in flight finished and the outbox is committed; bye");
    } else {
        warn!(
            ?grace,
            "shutdown deadline passed with requests still in flight; the outbox keeps them for the next start"
        );
    }
    // Last: the final OTLP export carries the counts of the drain.
    metrics.shutdown(deadline).await;
}

/// Threads (actix arbiters) for `wanted` component sessions or provider
/// pools: one each, at most one per CPU (they are then shared in turn).
fn threads(wanted: usize) -> std::io::Result<Vec<Arbiter>> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    (0..wanted.min(cpus))
        .map(|_| {
            let runtime = runtime()?;
            Ok(Arbiter::with_tokio_rt(move || runtime))
        })
        .collect()
}

/// Connects the store and loads the outbox. Tried once before the component
/// streams open, so a healthy store never refuses a first publish; if it fails
/// (Redis down), the gateway starts anyway, answers publishes with
/// `wait/internal-server-error`, says why on `/readyz`, and keeps trying every
/// second in the background.
async fn bring_up_store(config: &Config, registry: &Registry, dispatcher: &Dispatcher) {
    let first_try = Duration::from_millis(config.store.connect_timeout_ms.saturating_mul(2));
    let first = match tokio::time::timeout(first_try, connect_and_load(registry, dispatcher)).await
    {
        Ok(result) => result,
        Err(_) => Err(RegistryError::Timeout(first_try)),
    };
    match first {
        Ok(()) => {
            match config.store.backend {
                StoreBackend::Embedded => {
                    info!(path = %config.store.path.display(), "embedded store ready");
                }
                StoreBackend::Redis => info!(store = registry.label(), "store ready"),
            }
            return;
        }
        Err(e @ RegistryError::ShardMismatch { .. }) => {
            error!("{}; the gateway cannot serve until it is fixed", chain(&e));
        }
        Err(e) => warn!(
            store = registry.label(),
            "store unavailable: {}; starting anyway and retrying every second",
            chain(&e)
        ),
    }
    let registry = registry.clone();
    let dispatcher = dispatcher.clone();
    actix::spawn(async move {
        let mut last_error = String::new();
        loop {
            tokio::time::sleep(STORE_RETRY).await;
            match connect_and_load(&registry, &dispatcher).await {
                Ok(()) => {
                    info!(
                        store = registry.label(),
                        "store reached; publishes are admitted"
                    );
                    return;
                }
                Err(e) => {
                    let text = chain(&e);
                    if text != last_error {
                        warn!(store = registry.label(), "store still unavailable: {text}");
                        last_error = text;
                    }
                }
            }
        }
    });
}

/// Connects the store and loads the outbox; in a cluster the pools start
/// empty and get the outbox of each shard as they take it.
async fn connect_and_load(
    registry: &Registry,
    dispatcher: &Dispatcher,
) -> Result<(), RegistryError> {
    registry.connect().await?;
    if registry.is_fenced() {
        dispatcher.open_empty().await;
        return Ok(());
    }
    dispatcher.load_outbox(registry).await
}
