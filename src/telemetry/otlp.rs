//! Pushing the metrics to an OpenTelemetry collector over OTLP/gRPC.
//!
//! The SDK's periodic reader collects on a thread of its own and hands each
//! batch to the exporter, whose gRPC channel lives on a small runtime owned
//! here: nothing of it runs on the gateway's threads, so a collector that is
//! slow or gone never holds up a publish. An export that fails is dropped
//! (the next one carries the cumulative values again), counted, and said
//! once in the log until exports work again.

use crate::config::TelemetryConfig;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, Temporality};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use thiserror::Error;
use tracing::{info, warn};

/// Why OTLP export could not be set up.
#[derive(Debug, Error)]
pub enum OtlpError {
    /// The runtime for the exporter's channel.
    #[error("OTLP export: cannot start its runtime")]
    Runtime(#[source] std::io::Error),
    /// A header name or value that gRPC metadata cannot carry (the value is
    /// not repeated).
    #[error("telemetry.otlp_headers: {0:?} is not a valid gRPC metadata entry")]
    Header(String),
    /// The exporter refused its settings.
    #[error("OTLP export to {endpoint}: {message}")]
    Exporter {
        /// The endpoint.
        endpoint: String,
        /// What the SDK said.
        message: String,
    },
}

/// Where to push, from `[telemetry]` or `OTEL_EXPORTER_OTLP_ENDPOINT`.
pub(crate) fn endpoint(config: &TelemetryConfig) -> Option<String> {
    config
        .otlp_endpoint
        .clone()
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .filter(|e| !e.is_empty())
}

/// The resource every exported metric carries: service name and version,
/// the node id and pod name when known, and the configured attributes.
pub(crate) fn resource(config: &TelemetryConfig, node: Option<&str>) -> Resource {
    let mut attributes = vec![KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))];
    if let Some(node) = node {
        attributes.push(KeyValue::new("service.instance.id", node.to_owned()));
    }
    if let Ok(pod) = std::env::var("POD_NAME") {
        attributes.push(KeyValue::new("k8s.pod.name", pod));
    }
    attributes.extend(
        config
            .resource_attributes
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
    );
    // The configured name, unless it is the default and the standard
    // variable names the service (OTEL_RESOURCE_ATTRIBUTES is read by the
    // SDK; the attributes here win over it).
    let service_name = match std::env::var("OTEL_SERVICE_NAME") {
        Ok(name) if !name.is_empty() && config.service_name == "pushgate" => name,
        _ => config.service_name.clone(),
    };
    Resource::builder()
        .with_service_name(service_name)
        .with_attributes(attributes)
        .build()
}

/// The periodic reader pushing to `endpoint`, and what it needs kept: the
/// runtime its channel runs on (shared with the span export), and its count
/// of failed exports.
pub(crate) struct Push {
    /// The reader, for the meter provider.
    pub reader: PeriodicReader<Reporting>,
    /// The channel's runtime.
    pub runtime: tokio::runtime::Runtime,
    /// Exports that failed.
    pub failures: Arc<AtomicU64>,
}

/// The runtime OTLP channels and the span export run on: one thread of
/// their own, off the gateway's.
fn runtime() -> Result<tokio::runtime::Runtime, OtlpError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp")
        .enable_all()
        .build()
        .map_err(OtlpError::Runtime)
}

/// `otlp_headers` as gRPC metadata.
pub(crate) fn metadata(
    config: &TelemetryConfig,
) -> Result<tonic::metadata::MetadataMap, OtlpError> {
    let mut metadata = tonic::metadata::MetadataMap::new();
    for (name, value) in &config.otlp_headers {
        let key = tonic::metadata::MetadataKey::from_bytes(name.as_bytes())
            .map_err(|_| OtlpError::Header(name.clone()))?;
        let value = value
            .expose()
            .parse()
            .map_err(|_| OtlpError::Header(name.clone()))?;
        metadata.insert(key, value);
    }
    Ok(metadata)
}

/// Sets up the push to `endpoint`.
pub(crate) fn reader(config: &TelemetryConfig, endpoint: &str) -> Result<Push, OtlpError> {
    let runtime = runtime()?;
    let exporter = {
        let _entered = runtime.enter();
        opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_millis(config.otlp_timeout_ms))
            .with_metadata(metadata(config)?)
            .build()
            .map_err(|e| OtlpError::Exporter {
                endpoint: endpoint.to_owned(),
                message: e.to_string(),
            })?
    };
    let failures = Arc::new(AtomicU64::new(0));
    let reporting = Reporting {
        inner: exporter,
        endpoint: endpoint.to_owned(),
        failing: AtomicBool::new(false),
        failures: failures.clone(),
    };
    let reader = PeriodicReader::builder(reporting)
        .with_interval(Duration::from_millis(config.export_interval_ms))
        .build();
    info!(endpoint, "pushing metrics over OTLP");
    Ok(Push {
        reader,
        runtime,
        failures,
    })
}

/// The OTLP exporter, saying in the log when exports start failing and when
/// they work again (once each, not per export), and counting failures.
pub(crate) struct Reporting {
    inner: opentelemetry_otlp::MetricExporter,
    endpoint: String,
    failing: AtomicBool,
    failures: Arc<AtomicU64>,
}

impl std::fmt::Debug for Reporting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporting")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl PushMetricExporter for Reporting {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        match &result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    info!(endpoint = %self.endpoint, "OTLP metric export works again");
                }
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    warn!(
                        endpoint = %self.endpoint,
                        "OTLP metric export failed (dropped; the next export carries the totals again): {e}"
                    );
                }
            }
        }
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}
