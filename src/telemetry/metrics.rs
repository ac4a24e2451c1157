//! Every metric the gateway exports, as OpenTelemetry instruments of one
//! meter provider. `/metrics` is its Prometheus reader's registry in text
//! form (names as before the SDK: dots become underscores, counters get
//! `_total`, seconds `_seconds`; no `otel_scope_*` labels); an OTLP exporter
//! added to the same provider pushes the same instruments.

use super::instruments::{CounterVec, Gauge, GaugeVec, HistogramVec, KeyedGauge, spec};
use crate::config::TelemetryConfig;
use opentelemetry::metrics::{Meter, MeterProvider as _, ObservableCounter};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::Encoder as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the Prometheus reader could not be made of (never expected: it
/// only fails on a registry conflict, and each provider has its own).
#[derive(Debug, thiserror::Error)]
#[error("metrics set-up: {0}")]
pub struct MetricsError(String);

/// Every metric the gateway exports.
pub struct Metrics {
    /// Publishes received, by outcome (`accepted`, `item-not-found`, …).
    pub publishes: CounterVec,
    /// Accepted publishes by their final fate, per provider: every accepted
    /// publish ends in exactly one of delivered, failed, expired, token-dead,
    /// account-removed.
    pub notifications: CounterVec,
    /// Publishes merged into a pending push of the same node, per provider.
    pub coalesced: CounterVec,
    /// Outbox flushes (one store transaction each), per provider.
    pub outbox_flushes: CounterVec,
    /// Delivery attempts, by provider id and outcome.
    pub deliveries: CounterVec,
    /// Retries scheduled, by provider and reason.
    pub retries: CounterVec,
    /// Publish accepted → provider 2xx, per provider.
    pub delivery_latency: HistogramVec,
    /// Provider requests, by provider, method, server, status and error
    /// (`http.client.request.duration`).
    pub request_duration: HistogramVec,
    /// Outbox entries (pending pushes), per provider.
    pub outbox_entries: GaugeVec,
    /// Entries due and waiting for a free request slot, per provider.
    pub queue_depth: GaugeVec,
    /// Requests in flight, per provider.
    pub in_flight: GaugeVec,
    /// Age of the oldest pending publish, per provider, seconds.
    pub oldest_pending_seconds: GaugeVec,
    /// 1 when the provider accepts our credentials, 0 while it refuses them.
    pub provider_healthy: GaugeVec,
    /// Seconds until a provider's client certificate expires (negative once
    /// expired), per provider using certificate auth.
    pub certificate_expiry_seconds: GaugeVec,
    /// Registration commands, by command and outcome.
    pub registration_commands: CounterVec,
    /// Registrations in the store (refreshed on scrape).
    pub registrations: Gauge,
    /// Component sessions currently authenticated, per server (`host:port`
    /// as configured; 0 while a configured server has none).
    pub sessions_up: KeyedGauge,
    /// The provider every instrument belongs to, and its Prometheus reader's
    /// registry.
    provider: SdkMeterProvider,
    registry: prometheus::Registry,
    meter: Meter,
    /// With OTLP push: the exporter's runtime and failed exports.
    push: Option<PushState>,
    /// With OTLP push: the tracer (traces go where the metrics go).
    traces: Option<super::Traces>,
    _process: super::process::ProcessMetrics,
}

/// What an OTLP push keeps alive.
struct PushState {
    /// Taken on drop: a runtime may not be dropped in an async context, but
    /// it may be shut down in the background.
    runtime: Option<tokio::runtime::Runtime>,
    _failures: ObservableCounter<u64>,
    _spans_dropped: ObservableCounter<u64>,
}

impl Drop for PushState {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Metrics {
    /// Every instrument, on a new meter provider whose Prometheus reader
    /// serves `/metrics`; nothing pushed.
    pub fn new() -> Self {
        Self::build(SdkMeterProvider::builder(), None)
    }

    /// As [`Self::new`], also pushing over OTLP when `[telemetry]` (or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`) names a collector; `node` names this
    /// process in the resource.
    pub fn with_telemetry(
        config: &TelemetryConfig,
        node: Option<&str>,
    ) -> Result<Self, super::OtlpError> {
        let Some(endpoint) = super::otlp::endpoint(config) else {
            return Ok(Self::new());
        };
        let push = super::otlp::reader(config, &endpoint)?;
        let resource = super::otlp::resource(config, node);
        let traces = super::Traces::start(config, &endpoint, resource.clone(), &push.runtime)?;
        let builder = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(push.reader);
        let mut metrics = Self::build(
            builder,
            Some((push.runtime, push.failures, traces.dropped.clone())),
        );
        metrics.traces = Some(traces);
        Ok(metrics)
    }

    fn build(
        builder: opentelemetry_sdk::metrics::MeterProviderBuilder,
        push: Option<(tokio::runtime::Runtime, Arc<AtomicU64>, Arc<AtomicU64>)>,
    ) -> Self {
        let registry = prometheus::Registry::new();
        let reader = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .scope_info_enabled(false)
            .without_target_info()
            .build();
        let provider = match reader {
            Ok(reader) => builder.with_reader(reader).build(),
            // A fresh registry cannot conflict; were it to, the gateway still
            // counts (for OTLP, if any) rather than stop.
            Err(e) => {
                tracing::error!("{}", MetricsError(e.to_string()));
                builder.build()
            }
        };
        let meter = provider.meter("pushgate");
        let push = push.map(|(runtime, failures, spans_dropped)| PushState {
            runtime: Some(runtime),
            _failures: meter
                .u64_observable_counter("pushgate.telemetry.export_failures")
                .with_description(
                    "OTLP metric exports that failed (each dropped; the next carries the totals).",
                )
                .with_callback(move |o| o.observe(failures.load(Ordering::Relaxed), &[]))
                .build(),
            _spans_dropped: meter
                .u64_observable_counter("pushgate.telemetry.spans.dropped")
                .with_description(
                    "Finished spans not exported: the export queue was full or the export failed.",
                )
                .with_callback(move |o| o.observe(spans_dropped.load(Ordering::Relaxed), &[]))
                .build(),
        });
        let m = &meter;
        let provider_label: &'static [&'static str] = &["provider"];
        Self {
            publishes: CounterVec::new(
                m,
                spec(
                    "pushgate.publishes",
                    "XEP-0357 publishes received, by outcome.",
                    "",
                    &["outcome"],
                ),
            ),
            notifications: CounterVec::new(
                m,
                spec(
                    "pushgate.notifications",
                    "Accepted publishes by final fate; their sum equals the accepted publishes once the outbox is empty.",
                    "",
                    &["provider", "fate"],
                ),
            ),
            coalesced: CounterVec::new(
                m,
                spec(
                    "pushgate.coalesced",
                    "Publishes merged into a pending push for the same node.",
                    "",
                    provider_label,
                ),
            ),
            outbox_flushes: CounterVec::new(
                m,
                spec(
                    "pushgate.outbox.flushes",
                    "Outbox flushes: store transactions (an fsync on the embedded store) carrying outbox changes.",
                    "",
                    provider_label,
                ),
            ),
            deliveries: CounterVec::new(
                m,
                spec(
                    "pushgate.deliveries",
                    "Delivery attempts to push providers, by provider and outcome.",
                    "",
                    &["provider", "outcome"],
                ),
            ),
            retries: CounterVec::new(
                m,
                spec(
                    "pushgate.retries",
                    "Retries scheduled, by provider and reason.",
                    "",
                    &["provider", "reason"],
                ),
            ),
            delivery_latency: HistogramVec::new(
                m,
                spec(
                    "pushgate.delivery.latency",
                    "From publish accepted to the provider's 2xx.",
                    "s",
                    provider_label,
                ),
            ),
            request_duration: HistogramVec::new(
                m,
                spec(
                    "http.client.request.duration",
                    "Requests to push providers, from sending to the answer or the failure.",
                    "s",
                    &[
                        "provider",
                        "http.request.method",
                        "server.address",
                        "http.response.status_code",
                        "error.type",
                    ],
                ),
            ),
            outbox_entries: GaugeVec::new(
                m,
                spec(
                    "pushgate.outbox.entries",
                    "Pending pushes in the outbox.",
                    "",
                    provider_label,
                ),
            ),
            queue_depth: GaugeVec::new(
                m,
                spec(
                    "pushgate.queue.depth",
                    "Pushes due and waiting for a request slot.",
                    "",
                    provider_label,
                ),
            ),
            in_flight: GaugeVec::new(
                m,
                spec(
                    "pushgate.in_flight",
                    "Requests to the provider in flight.",
                    "",
                    provider_label,
                ),
            ),
            oldest_pending_seconds: GaugeVec::new(
                m,
                spec(
                    "pushgate.oldest_pending",
                    "Age of the oldest pending publish.",
                    "s",
                    provider_label,
                ),
            ),
            provider_healthy: GaugeVec::new(
                m,
                spec(
                    "pushgate.provider.healthy",
                    "1 while the provider accepts our credentials and endpoint.",
                    "",
                    provider_label,
                ),
            ),
            certificate_expiry_seconds: GaugeVec::new(
                m,
                spec(
                    "pushgate.provider.certificate_expiry",
                    "Seconds until the provider's client certificate expires (negative once expired).",
                    "s",
                    provider_label,
                ),
            ),
            registration_commands: CounterVec::new(
                m,
                spec(
                    "pushgate.registration.commands",
                    "Register/unregister requests, by command and outcome.",
                    "",
                    &["command", "outcome"],
                ),
            ),
            registrations: Gauge::new(
                m,
                spec(
                    "pushgate.registrations",
                    "Registrations in the store.",
                    "",
                    &[],
                ),
            ),
            sessions_up: KeyedGauge::new(
                m,
                spec(
                    "pushgate.component.sessions_up",
                    "Authenticated component sessions, per XMPP server (host:port as configured).",
                    "",
                    &["server"],
                ),
            ),
            provider,
            registry,
            _process: super::process::ProcessMetrics::new(&meter),
            meter,
            push,
            traces: None,
        }
    }

    /// The tracer, when traces are pushed.
    pub fn traces(&self) -> Option<&super::Traces> {
        self.traces.as_ref()
    }

    /// Stops the meter provider by `deadline`: an OTLP push exports one
    /// last time (from its own thread, so waiting here blocks nothing
    /// else); `/metrics` goes on answering with the last values.
    pub async fn shutdown(&self, deadline: crate::clock::Instant) {
        if self.push.is_none() {
            return;
        }
        let provider = self.provider.clone();
        let tracer = self.traces.as_ref().map(|t| t.provider());
        let left = deadline.saturating_duration_since(crate::clock::now());
        let stop = tokio::task::spawn_blocking(move || {
            if let Some(tracer) = tracer
                && let Err(e) = tracer.shutdown_with_timeout(left / 2)
            {
                tracing::debug!("tracer provider shutdown: {e}");
            }
            provider.shutdown_with_timeout(left)
        });
        if let Ok(Ok(Err(e))) = tokio::time::timeout_at(deadline, stop).await {
            tracing::debug!("meter provider shutdown: {e}");
        }
    }

    /// The meter other parts (the cluster) make their instruments with.
    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// The provider, for an OTLP exporter to join and for shutdown.
    pub fn provider(&self) -> &SdkMeterProvider {
        &self.provider
    }

    /// The Prometheus text exposition of every instrument.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!("metrics not rendered: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
