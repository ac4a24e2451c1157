//! Delivery: one [`Pool`] actor per configured provider, and the [`Dispatcher`]
//! that routes a job to the pool of its registration's provider.
//!
//! This is the seam for retries and the durable outbox (the delivery issue): a job
//! enters a bounded queue, is sent with at most `max_in_flight` requests at once,
//! and its outcome is classified once ([`crate::providers::ErrorClass`]).

mod payload;
mod pool;

pub use payload::build_push;
pub use pool::{Drain, Job, Pool, Submit};

use actix::Addr;
use std::collections::HashMap;
use thiserror::Error;

/// How long a publish waits for a pool to take its job.
pub const SUBMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a job was not queued.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SubmitError {
    /// No pool for this provider id.
    #[error("provider {0:?} is not configured")]
    UnknownProvider(String),
    /// The pool's queue is full.
    #[error("the delivery queue is full")]
    QueueFull,
    /// The pool has stopped (shutdown).
    #[error("the delivery pool has stopped")]
    Stopped,
}

/// Routes jobs to provider pools.
#[derive(Clone, Default)]
pub struct Dispatcher {
    pools: HashMap<String, Addr<Pool>>,
}

impl Dispatcher {
    /// A dispatcher over the given `(provider id, pool)` pairs.
    pub fn new(pools: impl IntoIterator<Item = (String, Addr<Pool>)>) -> Self {
        Self {
            pools: pools.into_iter().collect(),
        }
    }

    /// Queues `job` on its provider's pool. A pool whose mailbox does not take
    /// the job within [`SUBMIT_TIMEOUT`] counts as full.
    pub async fn submit(&self, job: Job) -> Result<(), SubmitError> {
        let pool = self
            .pools
            .get(&job.provider)
            .ok_or_else(|| SubmitError::UnknownProvider(job.provider.clone()))?;
        match tokio::time::timeout(SUBMIT_TIMEOUT, pool.send(Submit(job))).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(SubmitError::Stopped),
            Err(_) => Err(SubmitError::QueueFull),
        }
    }

    /// Waits until every pool has sent what it holds, or `deadline` passes.
    /// Returns false if something was left.
    pub async fn drain(&self, deadline: std::time::Duration) -> bool {
        let waits = self.pools.values().map(|pool| pool.send(Drain));
        let all = futures_util::future::join_all(waits);
        match tokio::time::timeout(deadline, all).await {
            Ok(results) => results.iter().all(|r| r.is_ok()),
            Err(_) => false,
        }
    }
}
