//! The pool actor of one provider: admits publishes into the durable outbox,
//! sends what is due with at most `max_in_flight` requests at once, and applies
//! each outcome (`docs/protocol.md` §6–7) through [`PoolState`].
//!
//! Durability is a group commit: outbox changes collect in `dirty` (one per key,
//! the latest wins) while a flush runs, then go to the store in one transaction.
//! A publish is answered only after the flush holding its entry has committed.
//! When a flush starts is `flush`'s to decide: a publish's at once unless
//! one just started, changes nobody waits for (a delivered entry's removal)
//! lazily.

mod flush;
mod messages;
mod outcomes;
mod shards;

pub(crate) use messages::{Drain, Forget, Submit};
pub use messages::{Load, PoolStatus, Status};
pub(crate) use shards::{Acquire, Lost, Release};

use super::state::{Attempt, PoolState, Step};
use crate::clock::unix_ms as now_ms;
use crate::providers::{Delivered, DeliveryError, PushClient, TransportError};
use crate::registry::Registry;
use crate::telemetry::Metrics;
use actix::prelude::*;
use messages::Sent;
use outcomes::InFlight;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::warn;

/// How often gauges are refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);
/// A client certificate with less life than this is warned about.
const EXPIRY_WARNING_SECS: i64 = 30 * 24 * 3600;
/// How often that warning repeats.
const EXPIRY_WARNING_EVERY_MS: u64 = 24 * 3600 * 1000;

/// The pool actor of one provider.
pub(crate) struct Pool {
    id: String,
    client: Arc<dyn PushClient>,
    registry: Registry,
    metrics: Arc<Metrics>,
    state: PoolState,
    max_in_flight: usize,
    /// The most one attempt may take before it counts as failed.
    attempt_deadline: Duration,
    in_flight: usize,
    wake: Option<(u64, SpawnHandle)>,
    /// Changes not yet flushed, latest per key: the encoded entry, or
    /// `None` to remove it.
    dirty: HashMap<String, Option<Vec<u8>>>,
    dirty_waiters: Vec<oneshot::Sender<bool>>,
    flushing: bool,
    /// When the earliest scheduled flush runs (lazy, or after the interval).
    flush_armed: Option<crate::clock::Instant>,
    /// When the last flush started.
    last_flush: Option<crate::clock::Instant>,
    draining: bool,
    idle_waiters: Vec<oneshot::Sender<()>>,
    unhealthy: Option<String>,
    /// When the certificate expiry warning was last logged.
    expiry_warned_ms: Option<u64>,
    /// Consecutive failed flushes, while the store refuses writes.
    flush_failures: Option<u64>,
    /// False until the outbox entries of this provider are loaded ([`Load`]);
    /// publishes are refused until then, so none can race a stored entry.
    loaded: bool,
    /// Shards being handed, or handed, to another node: no publish admitted
    /// for them. A shard stays here after its release is done, until it is
    /// taken again (`Acquire`) or lost: the coordinator lets go of the
    /// shard's fence only after the release, and nothing may be admitted
    /// for it in between.
    leaving: std::collections::HashSet<u32>,
    /// Hand-overs waiting for their requests in flight.
    releasing: Vec<shards::Releasing>,
}

impl Pool {
    /// A pool for provider `id` over `state`; it admits publishes once sent
    /// [`Load`] with the entries the store holds for it.
    pub(crate) fn new(
        id: String,
        client: Arc<dyn PushClient>,
        registry: Registry,
        metrics: Arc<Metrics>,
        state: PoolState,
        max_in_flight: usize,
        attempt_deadline: Duration,
    ) -> Self {
        Self {
            id,
            client,
            registry,
            metrics,
            state,
            max_in_flight: max_in_flight.max(1),
            attempt_deadline,
            in_flight: 0,
            wake: None,
            dirty: HashMap::new(),
            dirty_waiters: Vec::new(),
            flushing: false,
            flush_armed: None,
            last_flush: None,
            draining: false,
            idle_waiters: Vec::new(),
            unhealthy: None,
            loaded: false,
            flush_failures: None,
            expiry_warned_ms: None,
            leaving: std::collections::HashSet::new(),
            releasing: Vec::new(),
        }
    }

    /// Starts what is due, then sets the timer for the next due entry.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let now = now_ms();
        // A cluster node past its lease sends nothing: the shards may be
        // another's now. The coordinator fences it at once, which unloads them.
        if self.registry.may_send() {
            let free = self.max_in_flight.saturating_sub(self.in_flight);
            for step in self.state.take_due(now, free) {
                match step {
                    Step::Send(attempt) => self.send(attempt, ctx),
                    Step::Expired(settled, change) => {
                        self.settle(settled, now);
                        self.persist(change);
                    }
                }
            }
        }
        self.flush(ctx);
        self.arm_timer(ctx, now);
        self.wake_if_idle();
    }

    fn arm_timer(&mut self, ctx: &mut Context<Self>, now: u64) {
        let next = if self.in_flight >= self.max_in_flight {
            None // a completion pumps again
        } else if !self.registry.may_send() {
            // Look again shortly rather than spin on what cannot be sent.
            self.state.next_wake().map(|t| t.max(now + 100))
        } else {
            self.state.next_wake()
        };
        if self.wake.as_ref().map(|(at, _)| *at) == next {
            return;
        }
        if let Some((_, handle)) = self.wake.take() {
            ctx.cancel_future(handle);
        }
        if let Some(at) = next {
            let delay = Duration::from_millis(at.saturating_sub(now));
            let handle = ctx.run_later(delay, |act, ctx| {
                act.wake = None;
                act.pump(ctx);
            });
            self.wake = Some((at, handle));
        }
    }

    /// Starts one request as a task of its own that reports back with
    /// [`Sent`]. Not an actor future: actix polls every future spawned on a
    /// context whenever one of them wakes, which with hundreds in flight cost
    /// more than the requests themselves (BENCHMARKS.md). At most
    /// `max_in_flight` run, so at most that many reports are ever queued.
    fn send(&mut self, attempt: Attempt, ctx: &mut Context<Self>) {
        self.in_flight += 1;
        let Attempt {
            key,
            version,
            node,
            trace,
        } = attempt;
        let span = trace.and_then(|parent| self.request_span(&parent));
        // The request is built from the entry where it is held: no copy.
        // (It is there: `take_due` just marked it in flight.)
        let (token, request) = match self.state.entry(&key) {
            Some(entry) => (entry.push.token.clone(), self.client.send(&entry.push)),
            None => (
                String::new(),
                crate::providers::failed_send(TransportError::Abandoned.into()),
            ),
        };
        let sending = InFlight {
            key,
            version,
            node,
            token,
            started: crate::clock::now(),
            span,
        };
        let deadline = self.attempt_deadline;
        let report = Report {
            pool: ctx.address(),
            sending: Some(sending),
        };
        actix::spawn(async move {
            let result = match tokio::time::timeout(deadline, request).await {
                Ok(result) => result,
                Err(_) => Err(TransportError::Timeout(deadline).into()),
            };
            report.send(result);
        });
    }

    /// The HTTP client span of a request sending a traced publish: named
    /// and described by the semantic conventions, with the path as a
    /// template (the real one holds the token).
    fn request_span(
        &self,
        parent: &opentelemetry::trace::SpanContext,
    ) -> Option<opentelemetry::Context> {
        use crate::telemetry::note_in;
        let traces = self.metrics.traces()?;
        let cx = traces.span_under("POST", opentelemetry::trace::SpanKind::Client, parent);
        note_in(&cx, "http.request.method", || "POST");
        note_in(&cx, "server.address", || {
            self.client.server_address().to_owned()
        });
        note_in(&cx, "url.template", || self.client.url_template());
        note_in(&cx, "network.protocol.version", || "2");
        note_in(&cx, "pushgate.provider", || self.id.clone());
        Some(cx)
    }

    fn wake_if_idle(&mut self) {
        let idle = self.in_flight == 0
            && !self.flushing
            && self.dirty.is_empty()
            && !self.state.due_now(now_ms());
        if idle {
            for waiter in self.idle_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    fn refresh_gauges(&mut self) {
        let p = [self.id.as_str()];
        let now = now_ms();
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.metrics.outbox_entries.set(&p, gauge(self.state.len()));
        self.metrics
            .queue_depth
            .set(&p, gauge(self.state.queued(now)));
        self.metrics.in_flight.set(&p, gauge(self.in_flight));
        let oldest = self
            .state
            .oldest_accepted()
            .map_or(0, |t| now.saturating_sub(t) / 1000);
        self.metrics
            .oldest_pending_seconds
            .set(&p, i64::try_from(oldest).unwrap_or(i64::MAX));
        self.watch_certificate(now);
    }

    /// The client certificate's remaining life as a gauge, and a WARN once a
    /// day (the first at start) while it has less than 30 days left, so an
    /// alert can fire before pushes stop.
    fn watch_certificate(&mut self, now_ms: u64) {
        let Some(expires) = self.client.credentials_expire_at() else {
            return;
        };
        let now = now_ms / 1000;
        let left = i64::try_from(expires).unwrap_or(i64::MAX) - i64::try_from(now).unwrap_or(0);
        self.metrics
            .certificate_expiry_seconds
            .set(&[self.id.as_str()], left);
        let due = self
            .expiry_warned_ms
            .is_none_or(|at| now_ms.saturating_sub(at) >= EXPIRY_WARNING_EVERY_MS);
        if left < EXPIRY_WARNING_SECS && due {
            self.expiry_warned_ms = Some(now_ms);
            warn!(
                provider = %self.id,
                days_left = left / 86_400,
                "the APNs client certificate (cert_file) expires soon: renew it before pushes stop"
            );
        }
    }
}

/// Reports one attempt back to its pool exactly once: with its result, or,
/// when the task ends without one (the client panicked, the runtime is going
/// away), as a failed attempt, so the entry is retried rather than stranded
/// with a request forever "in flight".
struct Report {
    pool: Addr<Pool>,
    sending: Option<InFlight>,
}

impl Report {
    fn send(mut self, result: Result<Delivered, DeliveryError>) {
        if let Some(sending) = self.sending.take() {
            self.pool.do_send(Sent { sending, result });
        }
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if let Some(sending) = self.sending.take() {
            let result = Err(TransportError::Abandoned.into());
            self.pool.do_send(Sent { sending, result });
        }
    }
}

impl Actor for Pool {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.metrics.provider_healthy.set(&[&self.id], 1);
        self.refresh_gauges();
        ctx.run_interval(GAUGE_INTERVAL, |act, _| act.refresh_gauges());
    }
}
