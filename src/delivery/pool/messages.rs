//! What the pool is asked: admit a publish, forget a removed account's node,
//! drain for shutdown, report status.

use super::InFlight;
use super::Pool;
use crate::clock::unix_ms as now_ms;
use crate::delivery::SubmitError;
use crate::delivery::outbox::OutboxEntry;
use crate::delivery::state::{Admission, Arrival};
use crate::providers::{Delivered, DeliveryError};
use actix::prelude::*;
use tokio::sync::oneshot;

/// Admits one publish.
#[derive(Message)]
#[rtype(result = "Result<(), SubmitError>")]
pub(crate) struct Submit(pub Arrival);

/// Drops every pending push of a node whose account is gone; resolves once the
/// outbox no longer holds them.
#[derive(Message)]
#[rtype(result = "Result<(), SubmitError>")]
pub(crate) struct Forget(pub String);

/// The outbox entries the store holds for this pool's provider; the pool
/// resumes them and starts admitting publishes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Load(pub Vec<OutboxEntry>);

/// Stops admitting, and resolves once nothing is in flight, nothing is due and
/// every outbox change is committed. Scheduled retries stay in the outbox.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Drain;

/// Asks for the pool's health and load.
#[derive(Message)]
#[rtype(result = "PoolStatus")]
pub struct Status;

/// A pool's health and load, for `/readyz`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PoolStatus {
    /// False while the provider refuses our credentials or endpoint.
    pub healthy: bool,
    /// The last refusal, when unhealthy.
    pub detail: Option<String>,
    /// Pending pushes.
    pub pending: usize,
    /// Requests in flight.
    pub in_flight: usize,
}

impl Handler<Submit> for Pool {
    type Result = ResponseFuture<Result<(), SubmitError>>;

    fn handle(&mut self, msg: Submit, ctx: &mut Context<Self>) -> Self::Result {
        if self.draining {
            return Box::pin(async { Err(SubmitError::Stopped) });
        }
        if !self.loaded {
            return Box::pin(async { Err(SubmitError::Starting) });
        }
        if !self.admits(&msg.0.node) {
            return Box::pin(async { Err(SubmitError::NotOwner) });
        }
        let admission = match self.state.accept(msg.0, now_ms()) {
            Ok((admission, change)) => {
                self.persist(change);
                admission
            }
            Err(_) => return Box::pin(async { Err(SubmitError::QueueFull) }),
        };
        if admission == Admission::Merged {
            self.metrics.coalesced.inc(&[&self.id]);
        }
        self.commit_and_pump(ctx)
    }
}

impl Pool {
    /// Flushes what the message changed and starts what is due; the answer
    /// resolves once the change is durable.
    fn commit_and_pump(
        &mut self,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<(), SubmitError>> {
        let durable = self.commit(ctx);
        self.pump(ctx);
        Box::pin(async move {
            match durable.await {
                Ok(true) => Ok(()),
                _ => Err(SubmitError::NotDurable),
            }
        })
    }
}

impl Handler<Forget> for Pool {
    type Result = ResponseFuture<Result<(), SubmitError>>;

    fn handle(&mut self, msg: Forget, ctx: &mut Context<Self>) -> Self::Result {
        if !self.loaded {
            return Box::pin(async { Err(SubmitError::Starting) });
        }
        let dropped = self.state.forget(&msg.0);
        if dropped.is_empty() {
            return Box::pin(async { Ok(()) });
        }
        let now = now_ms();
        for (settled, change) in dropped {
            self.settle(settled, now);
            self.persist(change);
        }
        self.commit_and_pump(ctx)
    }
}

/// A request of [`Pool::send`] finished.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Sent {
    pub(super) sending: InFlight,
    pub(super) result: Result<Delivered, DeliveryError>,
}

impl Handler<Sent> for Pool {
    type Result = ();

    fn handle(&mut self, msg: Sent, ctx: &mut Context<Self>) {
        self.in_flight -= 1;
        self.on_result(msg.sending, msg.result, ctx);
        self.progress_releases(ctx);
        self.pump(ctx);
    }
}

impl Handler<Load> for Pool {
    type Result = ();

    fn handle(&mut self, msg: Load, ctx: &mut Context<Self>) {
        if self.loaded {
            return;
        }
        self.loaded = true;
        if !msg.0.is_empty() {
            tracing::info!(provider = %self.id, pending = msg.0.len(), "resuming notifications from the outbox");
        }
        self.state.load(msg.0);
        self.pump(ctx);
    }
}

impl Handler<Drain> for Pool {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: Drain, _ctx: &mut Context<Self>) -> Self::Result {
        self.draining = true;
        let (tx, rx) = oneshot::channel();
        self.idle_waiters.push(tx);
        self.wake_if_idle();
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<Status> for Pool {
    type Result = MessageResult<Status>;

    fn handle(&mut self, _msg: Status, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(PoolStatus {
            healthy: self.unhealthy.is_none(),
            detail: self.unhealthy.clone(),
            pending: self.state.len(),
            in_flight: self.in_flight,
        })
    }
}
