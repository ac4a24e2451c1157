//! The pool actor of one provider: a bounded queue and a cap on requests in flight.

use super::SubmitError;
use crate::providers::{DeliveryError, ErrorClass, Push, PushClient};
use crate::registry::Registry;
use crate::telemetry::Metrics;
use actix::prelude::*;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

/// One notification for one device.
#[derive(Debug, Clone)]
pub struct Job {
    /// The push node (for logs and registration removal; never the token).
    pub node: String,
    /// The provider id.
    pub provider: String,
    /// What to send.
    pub push: Push,
    /// When the publish was accepted.
    pub accepted_at: Instant,
}

/// Queues a job; answered at once with `QueueFull` when the queue is full.
#[derive(Message)]
#[rtype(result = "Result<(), SubmitError>")]
pub struct Submit(pub Job);

/// Resolves once the queue is empty and nothing is in flight.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

/// The pool actor of one provider.
pub struct Pool {
    id: String,
    client: Arc<dyn PushClient>,
    registry: Registry,
    metrics: Arc<Metrics>,
    queue: VecDeque<Job>,
    capacity: usize,
    in_flight: usize,
    max_in_flight: usize,
    idle_waiters: Vec<oneshot::Sender<()>>,
}

impl Pool {
    /// A pool for provider `id`.
    pub fn new(
        id: String,
        client: Arc<dyn PushClient>,
        registry: Registry,
        metrics: Arc<Metrics>,
        capacity: usize,
        max_in_flight: usize,
    ) -> Self {
        Self {
            id,
            client,
            registry,
            metrics,
            queue: VecDeque::new(),
            capacity,
            in_flight: 0,
            max_in_flight,
            idle_waiters: Vec::new(),
        }
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        while self.in_flight < self.max_in_flight {
            let Some(job) = self.queue.pop_front() else {
                break;
            };
            self.in_flight += 1;
            let attempt = self.client.send(job.push.clone());
            ctx.spawn(attempt.into_actor(self).map(move |result, act, ctx| {
                act.in_flight -= 1;
                act.on_result(job, result, ctx);
                act.pump(ctx);
                act.wake_if_idle();
            }));
        }
    }

    fn wake_if_idle(&mut self) {
        if self.queue.is_empty() && self.in_flight == 0 {
            for waiter in self.idle_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    fn on_result(
        &mut self,
        job: Job,
        result: Result<crate::providers::Delivered, DeliveryError>,
        ctx: &mut Context<Self>,
    ) {
        let provider = self.id.as_str();
        let error = match result {
            Ok(delivered) => {
                self.metrics.deliveries.inc(&[provider, "delivered"]);
                debug!(provider, node = %job.node, id = ?delivered.id, latency = ?job.accepted_at.elapsed(), "delivered");
                return;
            }
            Err(e) => e,
        };
        let class = error.class();
        self.metrics.deliveries.inc(&[provider, class.label()]);
        match class {
            ErrorClass::RemoveRegistration => {
                let invalid_since = match &error {
                    DeliveryError::Rejected {
                        invalid_since_ms, ..
                    } => *invalid_since_ms,
                    _ => None,
                };
                let registry = self.registry.clone();
                let removal = async move {
                    registry
                        .remove_dead_token(&job.node, &job.push.token, invalid_since)
                        .await
                        .map(|removed| (job.node, removed))
                };
                let provider = provider.to_owned();
                ctx.spawn(removal.into_actor(self).map(move |result, _, _| match result {
                    Ok((node, true)) => info!(provider, node, "{error}: the provider says the token is dead; registration removed"),
                    Ok((node, false)) => info!(provider, node, "{error}: token reported dead but the registration was renewed or replaced; kept"),
                    Err(e) => warn!(provider, "{error}: token dead but the registration could not be removed: {e}"),
                }));
            }
            ErrorClass::ProviderMisconfigured => warn!(
                provider,
                node = %job.node,
                "delivery refused, check this provider's credentials and endpoint: {error}"
            ),
            ErrorClass::FailNotification => {
                warn!(provider, node = %job.node, "notification rejected by the provider: {error}")
            }
            ErrorClass::Retry => {
                warn!(provider, node = %job.node, "delivery failed (transient, not retried yet): {error}")
            }
        }
    }
}

impl Actor for Pool {
    type Context = Context<Self>;
}

impl Handler<Submit> for Pool {
    type Result = Result<(), SubmitError>;

    fn handle(&mut self, msg: Submit, ctx: &mut Context<Self>) -> Self::Result {
        if self.queue.len() >= self.capacity {
            return Err(SubmitError::QueueFull);
        }
        self.queue.push_back(msg.0);
        self.pump(ctx);
        Ok(())
    }
}

impl Handler<Drain> for Pool {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: Drain, _ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.idle_waiters.push(tx);
        self.wake_if_idle();
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
