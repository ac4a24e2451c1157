//! Wiring: builds every part from the configuration, runs until the shutdown
//! signal, then stops in order (HTTP, component streams, delivery pools)
//! within one deadline.

mod handler;

pub use handler::PushComponent;

use crate::app::AppContext;
use crate::config::{Config, ConfigIssue, StoreBackend};
use crate::delivery::{Dispatcher, PayloadPolicy};
use crate::http::{self, HttpError, HttpState};
use crate::providers::{self, BuildError, PushClient};
use crate::registry::{Registry, RegistryError};
use crate::telemetry::Metrics;
use crate::xmpp::{Close, Session, SessionSettings, StanzaHandler};
use actix::{Actor, Addr, Arbiter};
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
/// [`crate::config::validate`] has passed already; this reads key, CA and
/// service-account files by building every provider.
pub fn check(config: &Config) -> Vec<ConfigIssue> {
    config
        .providers
        .iter()
        .filter_map(|p| providers::build(p, &config.delivery).err())
        .map(|e| ConfigIssue::new(format!("providers[{}].{}", e.provider, e.key), e.message))
        .collect()
}

/// Runs the gateway until `shutdown` resolves. Must be called inside an actix
/// `System`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), GatewayError> {
    let metrics = Arc::new(Metrics::default());
    let mut clients: Vec<(String, Arc<dyn PushClient>)> = Vec::new();
    for p in &config.providers {
        clients.push((p.id.clone(), providers::build(p, &config.delivery)?));
    }
    if clients.is_empty() {
        warn!("no [[providers]] configured: devices cannot register until one is added");
    }
    let registry = Registry::open(&config.store)?;
    let pool_threads = threads(clients.len())?;
    let handles: Vec<_> = pool_threads.iter().map(Arbiter::handle).collect();
    let dispatcher = Dispatcher::start(&config, clients, &registry, &metrics, &handles)?;
    bring_up_store(&config, &registry, &dispatcher).await;
    let app = AppContext::from_config(&config);
    let server = http::start(
        &config.http,
        HttpState {
            app: app.clone(),
            registry: registry.clone(),
            dispatcher: dispatcher.clone(),
            metrics: metrics.clone(),
        },
    )?;
    let server_handle = server.handle();
    actix::spawn(async move {
        if let Err(e) = server.await {
            warn!("HTTP server stopped: {e}");
        }
    });
    info!(listen = %config.http.listen, "HTTP listening");

    let handler: Arc<dyn StanzaHandler> = Arc::new(Arc::new(PushComponent {
        app,
        registry,
        dispatcher: dispatcher.clone(),
        metrics: metrics.clone(),
        require_account_domain: config.publish.require_account_domain,
        payload: PayloadPolicy::from_config(&config.delivery),
    }));
    let connections = config.component.servers.iter().map(|s| s.connections).sum();
    let arbiters = threads(connections)?;
    let sessions = start_sessions(&config, &handler, &metrics, &arbiters)?;

    shutdown.await;
    // One deadline for every stage: each gets what the previous ones left, so
    // the whole shutdown fits in `shutdown_grace_s` (and in Kubernetes'
    // terminationGracePeriodSeconds when that is set above it).
    let grace = Duration::from_secs(config.delivery.shutdown_grace_s);
    let deadline = crate::clock::now() + grace;
    info!(
        ?grace,
        "shutting down: closing the HTTP listener and component streams"
    );
    if tokio::time::timeout_at(deadline, server_handle.stop(true))
        .await
        .is_err()
    {
        server_handle.stop(false).await;
    }
    let closes = sessions.iter().map(|s| s.send(Close { deadline }));
    let _ = tokio::time::timeout_at(deadline, futures_util::future::join_all(closes)).await;
    for arbiter in &arbiters {
        arbiter.stop();
    }
    if dispatcher.drain(deadline).await {
        info!("deliveries in flight finished and the outbox is committed; bye");
    } else {
        warn!(
            ?grace,
            "shutdown deadline passed with requests still in flight; the outbox keeps them for the next start"
        );
    }
    for thread in &pool_threads {
        thread.stop();
    }
    Ok(())
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
        Err(_) => Err(RegistryError::Storage("no answer at start".to_owned())),
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
            error!("{e}; the gateway cannot serve until it is fixed");
        }
        Err(e) => warn!(
            store = registry.label(),
            "store unavailable: {e}; starting anyway and retrying every second"
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
                    let text = e.to_string();
                    if text != last_error {
                        warn!(store = registry.label(), "store still unavailable: {text}");
                        last_error = text;
                    }
                }
            }
        }
    });
}

async fn connect_and_load(
    registry: &Registry,
    dispatcher: &Dispatcher,
) -> Result<(), RegistryError> {
    registry.connect().await?;
    dispatcher.load_outbox(registry).await
}

/// Starts every component session. Sessions run on their own threads (one
/// arbiter per connection, at most one per CPU), so reading, parsing and
/// answering stanzas happens in parallel with the delivery pools, which stay
/// on the main thread.
fn start_sessions(
    config: &Config,
    handler: &Arc<dyn StanzaHandler>,
    metrics: &Arc<Metrics>,
    arbiters: &[Arbiter],
) -> Result<Vec<Addr<Session>>, ConfigIssue> {
    let c = &config.component;
    let reconnect = c.reconnect_backoff()?;
    let mut sessions = Vec::new();
    for server in &c.servers {
        for n in 0..server.connections {
            let settings = SessionSettings {
                label: format!("{}:{}#{n}", server.host, server.port),
                host: server.host.clone(),
                port: server.port,
                jid: c.jid.clone(),
                secret: c.secret.clone(),
                keepalive: Duration::from_secs(c.keepalive_s),
                max_stanza_bytes: c.max_stanza_bytes,
                reconnect,
                connect_timeout: Duration::from_secs(c.connect_timeout_s),
                max_concurrent: c.max_concurrent_stanzas,
            };
            let session = Session::new(settings, handler.clone(), metrics.clone());
            let arbiter = arbiters
                .get(sessions.len() % arbiters.len().max(1))
                .map(Arbiter::handle);
            sessions.push(match arbiter {
                Some(arbiter) => Session::start_in_arbiter(&arbiter, |_| session),
                None => session.start(),
            });
        }
    }
    Ok(sessions)
}
