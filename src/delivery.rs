//! Delivery: one `Pool` actor per configured provider, the durable outbox it
//! keeps in the store, and the [`Dispatcher`] that routes a publish to its pool.
//!
//! A publish is answered `result` only once its push is in the outbox; it leaves
//! the outbox when delivered or finally failed. Retries (exponential backoff
//! with full jitter, `Retry-After` as a floor) are scheduled in the outbox, so a
//! crash or restart resumes them. Publishes for a node that arrive while its
//! push is still waiting merge into it (coalescing).

mod outbox;
mod payload;
mod pool;
mod retry;
mod state;

pub use outbox::{OutboxEntry, merge};
pub use payload::{PayloadPolicy, build_push};
pub(crate) use pool::{Acquire, Drain, Forget, Lost, Pool, Release, Submit};
pub use pool::{Load, PoolStatus, Status};
pub(crate) use retry::RetryPolicy;
pub use state::{Arrival, Attempt, Fate, Full, Outcome, Persist, Settled, Step};
pub(crate) use state::{PoolState, Settings};

use crate::config::{Config, ConfigIssue};
use crate::registry::{OutboxWrite, Registry, RegistryError};
use crate::telemetry::Metrics;
use actix::{Actor, Addr, ArbiterHandle};
use futures_util::FutureExt as _;
use futures_util::future::Either;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use thiserror::Error;
use tracing::{info, warn};

/// How long a publish waits for its pool to take it and commit it to the outbox.
pub(crate) const SUBMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a status request waits for a pool.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a publish was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SubmitError {
    /// No pool for this provider id.
    #[error("provider {0:?} is not configured")]
    UnknownProvider(String),
    /// The pool holds `queue_capacity` pending pushes.
    #[error("the delivery queue is full")]
    QueueFull,
    /// The outbox write failed or timed out, so the publish is not durable.
    #[error("the outbox could not be written")]
    NotDurable,
    /// The pool has stopped (shutdown).
    #[error("the delivery pool has stopped")]
    Stopped,
    /// The outbox is not loaded yet (the store has not been reached since the start).
    #[error("the outbox is not loaded yet")]
    Starting,
    /// In a cluster: the node's shard is not (or no longer) this node's.
    #[error("the node's shard is not owned here")]
    NotOwner,
}

/// Routes publishes to provider pools.
#[derive(Clone, Default)]
pub struct Dispatcher {
    pools: HashMap<String, Addr<Pool>>,
    loaded: Arc<AtomicBool>,
}

impl Dispatcher {
    /// Starts one pool per provider client, spread over `threads` in turn
    /// (on the current thread if there are none): a pool and its HTTP/2
    /// connections share a thread, and one thread per provider keeps a busy
    /// provider from starving the others. They admit nothing until
    /// `Self::load_outbox` has handed them what the store holds.
    pub fn start(
        config: &Config,
        clients: crate::providers::Clients,
        registry: &Registry,
        metrics: &Arc<Metrics>,
        threads: &[ArbiterHandle],
    ) -> Result<Self, ConfigIssue> {
        let settings = settings(config)?;
        let mut pools = HashMap::new();
        let mut threads = threads.iter().cycle();
        for (id, client) in clients {
            let Some(provider) = config.providers.iter().find(|p| p.id == id) else {
                continue;
            };
            let pool = Pool::new(
                id.clone(),
                client,
                registry.clone(),
                metrics.clone(),
                PoolState::new(settings),
                provider.max_in_flight,
                attempt_deadline(provider.request_timeout_s),
            );
            let addr = match threads.next() {
                Some(thread) => Pool::start_in_arbiter(thread, |_| pool),
                None => pool.start(),
            };
            pools.insert(id, addr);
        }
        Ok(Self {
            pools,
            loaded: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Reads the outbox and hands each pool its entries, once; the pools then
    /// admit publishes. Entries of providers no longer configured stay stored.
    pub(crate) async fn load_outbox(&self, registry: &Registry) -> Result<(), RegistryError> {
        if self.is_loaded() {
            return Ok(());
        }
        let mut stored = load_outbox(registry).await?;
        for (id, pool) in &self.pools {
            let entries = stored.remove(id).unwrap_or_default();
            pool.send(Load(entries))
                .await
                .map_err(|_| RegistryError::Stopped)?;
        }
        for (provider, entries) in stored {
            warn!(
                provider,
                entries = entries.len(),
                "the outbox holds notifications for a provider that is no longer configured; they are kept until it is"
            );
        }
        self.loaded.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// In a cluster: the pools start with no shard, so nothing to load; they
    /// admit publishes for the shards they are then handed ([`Self::acquire`]).
    pub(crate) async fn open_empty(&self) {
        for pool in self.pools.values() {
            let _ = pool.send(Load(Vec::new())).await;
        }
        self.loaded.store(true, Ordering::SeqCst);
    }

    /// Reads the outbox of `shards`, just taken, and hands each pool its
    /// entries. Unreadable entries are removed, as at start.
    pub(crate) async fn acquire(
        &self,
        registry: &Registry,
        shards: &[u32],
    ) -> Result<(), RegistryError> {
        let mut stored = by_provider(registry, registry.outbox_load_shards(shards).await?).await?;
        for (id, pool) in &self.pools {
            let entries = stored.remove(id).unwrap_or_default();
            pool.send(Acquire {
                shards: shards.to_vec(),
                entries,
            })
            .await
            .map_err(|_| RegistryError::Stopped)?;
        }
        Ok(())
    }

    /// Hands `shards` over gracefully (see [`Release`]); true once every pool
    /// has, by `deadline`.
    pub(crate) async fn release(&self, shards: &[u32], deadline: crate::clock::Instant) -> bool {
        let waits = self
            .pools
            .values()
            .map(|pool| pool.send(Release(shards.to_vec())));
        match tokio::time::timeout_at(deadline, futures_util::future::join_all(waits)).await {
            Ok(results) => results.into_iter().all(|r| r.unwrap_or(false)),
            Err(_) => false,
        }
    }

    /// `shards` are gone: every pool forgets their entries now.
    pub(crate) fn lose(&self, shards: &[u32]) {
        for pool in self.pools.values() {
            pool.do_send(Lost(shards.to_vec()));
        }
    }

    /// Whether the outbox is loaded and publishes are admitted.
    pub(crate) fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::SeqCst)
    }

    /// Admits `arrival` into its provider's pool; resolves once it is durable.
    ///
    /// The arrival goes to the pool when this is called, so the future
    /// holds only the wait for the answer: it sits inside every publish's
    /// future (and a forwarded one's), which is allocated and copied per
    /// publish, and an `async fn` here kept the arrival in it twice over.
    pub fn submit(
        &self,
        arrival: Arrival,
    ) -> impl Future<Output = Result<(), SubmitError>> + use<> {
        match self.pool(&arrival.provider) {
            Ok(pool) => Either::Left(durable(pool.send(Submit(arrival)))),
            Err(e) => Either::Right(std::future::ready(Err(e))),
        }
    }

    /// Drops the pending pushes of `node` from `provider`'s pool and outbox
    /// (its account was removed); resolves once that is durable.
    pub async fn forget(&self, provider: &str, node: &str) -> Result<(), SubmitError> {
        durable(self.pool(provider)?.send(Forget(node.to_owned()))).await
    }

    /// The pool of `provider`.
    fn pool(&self, provider: &str) -> Result<&Addr<Pool>, SubmitError> {
        self.pools
            .get(provider)
            .ok_or_else(|| SubmitError::UnknownProvider(provider.to_owned()))
    }

    /// Every pool's health and load, by provider id.
    pub async fn status(&self) -> BTreeMap<String, Option<PoolStatus>> {
        let mut out = BTreeMap::new();
        for (id, pool) in &self.pools {
            let status = tokio::time::timeout(STATUS_TIMEOUT, pool.send(Status))
                .await
                .ok()
                .and_then(Result::ok);
            out.insert(id.clone(), status);
        }
        out
    }

    /// Stops admitting and waits until every pool has sent what is due and
    /// committed its outbox, or `deadline` passes. Returns false if something
    /// was still in flight.
    pub async fn drain(&self, deadline: crate::clock::Instant) -> bool {
        let waits = self.pools.values().map(|pool| pool.send(Drain));
        let all = futures_util::future::join_all(waits);
        match tokio::time::timeout_at(deadline, all).await {
            Ok(results) => results.iter().all(Result::is_ok),
            Err(_) => false,
        }
    }
}

/// The most one attempt may take, whatever the client does inside: a token
/// fetch and a request each bounded by `request_timeout_s`, with room to
/// spare. Past it the attempt counts as failed and is retried.
fn attempt_deadline(request_timeout_s: u64) -> Duration {
    Duration::from_secs(request_timeout_s.saturating_mul(3).saturating_add(5))
}

fn settings(config: &Config) -> Result<Settings, ConfigIssue> {
    let d = &config.delivery;
    Ok(Settings {
        capacity: d.queue_capacity,
        window_ms: d.coalesce_window_ms,
        min_interval_ms: d.min_interval_ms,
        retry: RetryPolicy {
            backoff: d.retry_backoff()?,
            max_age_ms: d.max_age_s.saturating_mul(1000),
        },
    })
}

/// The outbox entries in the store, by provider. Entries that cannot be decoded
/// are logged and removed: they would otherwise block nothing but never leave.
async fn load_outbox(
    registry: &Registry,
) -> Result<HashMap<String, Vec<OutboxEntry>>, RegistryError> {
    by_provider(registry, registry.outbox_load().await?).await
}

/// Stored outbox entries decoded and grouped by provider.
async fn by_provider(
    registry: &Registry,
    stored: Vec<(String, Vec<u8>)>,
) -> Result<HashMap<String, Vec<OutboxEntry>>, RegistryError> {
    let mut by_provider: HashMap<String, Vec<OutboxEntry>> = HashMap::new();
    let mut corrupt = Vec::new();
    for (key, bytes) in stored {
        match OutboxEntry::decode(&bytes) {
            Ok(entry) => by_provider
                .entry(entry.provider.clone())
                .or_default()
                .push(entry),
            Err(e) => {
                warn!(key, "dropping an unreadable outbox entry: {e}");
                corrupt.push(OutboxWrite { key, value: None });
            }
        }
    }
    if !corrupt.is_empty() {
        registry.outbox_apply(corrupt.into()).await?;
    }
    let total: usize = by_provider.values().map(Vec::len).sum();
    if total > 0 {
        info!(pending = total, "outbox loaded");
    }
    Ok(by_provider)
}

/// A pool's answer to `request`, waited for at most [`SUBMIT_TIMEOUT`].
/// (A combinator, not an `async fn`: one would hold the request twice.)
fn durable<M>(
    request: actix::dev::Request<Pool, M>,
) -> impl Future<Output = Result<(), SubmitError>> + use<M>
where
    M: actix::Message<Result = Result<(), SubmitError>> + Send + 'static,
    Pool: actix::Handler<M>,
{
    tokio::time::timeout(SUBMIT_TIMEOUT, request).map(|answer| match answer {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(SubmitError::Stopped),
        Err(_) => Err(SubmitError::NotDurable),
    })
}
