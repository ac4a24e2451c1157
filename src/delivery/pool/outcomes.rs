//! What the pool does with a provider's answer: tell the schedule, count it,
//! log what an operator must act on, and remove the registration of a dead
//! token.

use super::Pool;
use crate::clock::unix_ms as now_ms;
use crate::delivery::state::{Completion, Outcome, Settled};
use crate::errors::chain;
use crate::providers::{Delivered, DeliveryError, ErrorClass};
use crate::registry::DeadToken;
use actix::prelude::*;
use opentelemetry::KeyValue;
use opentelemetry::trace::TraceContextExt as _;
use tracing::{debug, error, info, warn};

/// What the pool keeps of an [`Attempt`](crate::delivery::state::Attempt) while its push is with the provider
/// (the push itself moves into the request).
pub(super) struct InFlight {
    pub(super) key: String,
    pub(super) version: u64,
    pub(super) node: String,
    pub(super) token: String,
    /// When the request left, for its duration.
    pub(super) started: crate::clock::Instant,
    /// Its span, when its publish is traced.
    pub(super) span: Option<opentelemetry::Context>,
}

impl Pool {
    /// `http.client.request.duration` of one request: the status code when
    /// an answer came, `error.type` from the closed set of reason labels.
    fn observe_request(&self, attempt: &InFlight, result: &Result<Delivered, DeliveryError>) {
        let seconds = (crate::clock::now() - attempt.started).as_secs_f64();
        let (status, error) = match result {
            Ok(_) => (
                std::borrow::Cow::Borrowed("200"),
                std::borrow::Cow::Borrowed(""),
            ),
            Err(e @ DeliveryError::Rejected { status, .. }) => (
                std::borrow::Cow::Owned(status.to_string()),
                e.reason_label(),
            ),
            Err(e) => (std::borrow::Cow::Borrowed(""), e.reason_label()),
        };
        if let Some(cx) = &attempt.span {
            let span = cx.span();
            if let Ok(code) = status.parse::<i64>() {
                span.set_attribute(KeyValue::new("http.response.status_code", code));
            }
            if !error.is_empty() {
                span.set_attribute(KeyValue::new("error.type", error.to_string()));
                span.set_status(opentelemetry::trace::Status::error(error.to_string()));
            }
            span.end();
        }
        self.metrics.request_duration.observe(
            &[
                &self.id,
                "POST",
                self.client.server_address(),
                &status,
                &error,
            ],
            seconds,
        );
    }

    pub(super) fn on_result(
        &mut self,
        attempt: InFlight,
        result: Result<Delivered, DeliveryError>,
        ctx: &mut Context<Self>,
    ) {
        let provider = self.id.clone();
        let now = now_ms();
        self.observe_request(&attempt, &result);
        let outcome = match &result {
            Ok(delivered) => {
                self.metrics.deliveries.inc(&[&provider, "delivered"]);
                debug!(provider, node = %attempt.node, id = ?delivered.id, "delivered");
                Outcome::Delivered
            }
            Err(error) => {
                let class = error.class();
                self.metrics.deliveries.inc(&[&provider, class.label()]);
                self.explain(&attempt, error, class, ctx);
                match class {
                    ErrorClass::Retry => Outcome::Retry(error.retry_after()),
                    ErrorClass::RetryNow => Outcome::RetryNow,
                    ErrorClass::Unknown => Outcome::Unknown(error.retry_after()),
                    ErrorClass::FailNotification => Outcome::Fail,
                    ErrorClass::RemoveRegistration => Outcome::TokenDead,
                    ErrorClass::ProviderMisconfigured => Outcome::Misconfigured,
                }
            }
        };
        let done = self.state.complete(
            &attempt.key,
            attempt.version,
            outcome,
            now,
            &mut crate::backoff::uniform,
        );
        self.apply(done, result.err(), now);
    }

    fn apply(&mut self, done: Completion, error: Option<DeliveryError>, now: u64) {
        let provider = self.id.clone();
        if let Some(settled) = done.settled {
            self.settle(settled, now);
        }
        if let (Some(_), Some(e)) = (done.retry_in_ms, &error) {
            self.metrics.retries.inc(&[&provider, &e.reason_label()]);
        }
        match (done.health_changed, error) {
            (Some(false), Some(e)) => {
                let detail = format!("{}: {}", e.hint(), chain(&e));
                error!(provider, "{detail}; notifications are kept and retried");
                self.unhealthy = Some(detail);
                self.metrics.provider_healthy.set(&[&provider], 0);
            }
            (Some(true), _) => {
                info!(provider, "the provider accepts our requests again");
                self.unhealthy = None;
                self.metrics.provider_healthy.set(&[&provider], 1);
            }
            _ => {}
        }
        for change in done.persist {
            self.persist(change);
        }
    }

    pub(super) fn settle(&self, settled: Settled, now: u64) {
        let provider = self.id.as_str();
        self.metrics.notifications.add(
            &[provider, settled.fate.label()],
            u64::from(settled.publishes),
        );
        match settled.fate {
            crate::delivery::state::Fate::Delivered => {
                let seconds = now.saturating_sub(settled.accepted_ms) as f64 / 1000.0;
                self.metrics.delivery_latency.observe(&[provider], seconds);
            }
            crate::delivery::state::Fate::Expired => warn!(
                provider,
                publishes = settled.publishes,
                "notification dropped: older than delivery.max_age_s"
            ),
            _ => {}
        }
    }

    /// Logs a failed attempt, and removes the registration of a dead token.
    fn explain(
        &self,
        attempt: &InFlight,
        error: &DeliveryError,
        class: ErrorClass,
        ctx: &mut Context<Self>,
    ) {
        let provider = self.id.as_str();
        let node = attempt.node.as_str();
        match class {
            ErrorClass::RemoveRegistration => {
                let invalid_since = match error {
                    DeliveryError::Rejected {
                        invalid_since_ms, ..
                    } => *invalid_since_ms,
                    _ => None,
                };
                self.remove_dead_token(attempt, invalid_since, chain(error), ctx);
            }
            ErrorClass::FailNotification => {
                warn!(
                    provider,
                    node,
                    "notification rejected by the provider: {}",
                    chain(error)
                )
            }
            ErrorClass::Unknown => {
                let body = match error {
                    DeliveryError::Rejected { body, .. } => body.as_str(),
                    _ => "",
                };
                warn!(
                    provider,
                    node,
                    body,
                    "unknown answer from the provider ({}); retrying a few times",
                    chain(error)
                )
            }
            ErrorClass::Retry | ErrorClass::RetryNow => {
                debug!(
                    provider,
                    node,
                    "delivery failed, will retry: {}",
                    chain(error)
                )
            }
            ErrorClass::ProviderMisconfigured => {
                debug!(provider, node, "delivery refused: {}", chain(error))
            }
        }
    }

    fn remove_dead_token(
        &self,
        attempt: &InFlight,
        invalid_since: Option<u64>,
        error: String,
        ctx: &mut Context<Self>,
    ) {
        let registry = self.registry.clone();
        let node = attempt.node.clone();
        let token = attempt.token.clone();
        let provider = self.id.clone();
        let removal = async move {
            let removed = registry.drop_dead_token(&node, &token, invalid_since).await;
            (node, removed)
        };
        ctx.spawn(removal.into_actor(self).map(move |(node, result), _, _| match result {
            Ok(DeadToken::Removed) => info!(provider, node, "{error}: the provider says the token is dead; registration removed"),
            Ok(DeadToken::VoipTokenForgotten) => info!(provider, node, "{error}: the VoIP token is dead; calls now go to the main token"),
            Ok(DeadToken::Kept) => info!(provider, node, "{error}: token reported dead but the registration was renewed or replaced; kept"),
            Err(e) => warn!(provider, node, "{error}: token dead but the registration could not be removed: {}", chain(&e)),
        }));
    }
}
