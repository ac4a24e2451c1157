//! `[telemetry]`: where OpenTelemetry data goes.

use super::ConfigIssue;
use super::model::Secret;
use serde::Deserialize;

/// `[telemetry]`: where OpenTelemetry data is pushed (OTLP), besides the
/// Prometheus page at `/metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The OTLP collector, e.g. `http://otel-collector:4317`; absent: the
    /// standard `OTEL_EXPORTER_OTLP_ENDPOINT`, and without it no push.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// `grpc`, the only one spoken (OTLP/HTTP would need an HTTP/1 client
    /// stack for the exporter; collectors take gRPC on 4317). A set
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` must say the same.
    #[serde(default = "defaults::otlp_protocol")]
    pub otlp_protocol: String,
    /// Headers sent with every export (an API key, a tenant); their values
    /// are never logged.
    #[serde(default)]
    pub otlp_headers: std::collections::BTreeMap<String, Secret>,
    /// Deadline of one export, in milliseconds.
    #[serde(default = "defaults::otlp_timeout_ms")]
    pub otlp_timeout_ms: u64,
    /// Milliseconds between two metric exports.
    #[serde(default = "defaults::export_interval_ms")]
    pub export_interval_ms: u64,
    /// `service.name` of the resource; while it is the default
    /// (`pushgate`), `OTEL_SERVICE_NAME` replaces it when set.
    #[serde(default = "defaults::service_name")]
    pub service_name: String,
    /// More resource attributes (`deployment.environment`, …); the node id,
    /// the version and `k8s.pod.name` (from `POD_NAME`) are added.
    #[serde(default)]
    pub resource_attributes: std::collections::BTreeMap<String, String>,
    /// The share of publishes and commands traced, 0 to 1, for traces that
    /// start here (`parentbased_traceidratio`: a peer's forward follows its
    /// caller's decision). Absent: `OTEL_TRACES_SAMPLER_ARG` when
    /// `OTEL_TRACES_SAMPLER` asks for a ratio, else 0.01.
    #[serde(default)]
    pub trace_sample_ratio: Option<f64>,
    /// The log format for log shippers (`json`, or `text`); when set, it
    /// replaces `[log] format` (the same setting, offered where the rest of
    /// the observability is configured).
    #[serde(default)]
    pub log_format: Option<super::LogFormat>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            otlp_protocol: defaults::otlp_protocol(),
            otlp_headers: Default::default(),
            otlp_timeout_ms: defaults::otlp_timeout_ms(),
            export_interval_ms: defaults::export_interval_ms(),
            service_name: defaults::service_name(),
            resource_attributes: Default::default(),
            trace_sample_ratio: None,
            log_format: None,
        }
    }
}

/// The sampling ratio when neither the configuration nor the environment
/// sets one: enough to see the shape of the traffic, cheap at full load
/// (BENCHMARKS.md, "Telemetry cost").
const DEFAULT_SAMPLE_RATIO: f64 = 0.01;

impl TelemetryConfig {
    /// The trace sampling ratio in force (see `trace_sample_ratio`),
    /// clamped to 0..=1.
    pub fn trace_sample_ratio(&self) -> f64 {
        let from_env = || {
            let sampler = std::env::var("OTEL_TRACES_SAMPLER").ok()?;
            match sampler.as_str() {
                "always_off" | "parentbased_always_off" => Some(0.0),
                "always_on" | "parentbased_always_on" => Some(1.0),
                "traceidratio" | "parentbased_traceidratio" => {
                    std::env::var("OTEL_TRACES_SAMPLER_ARG")
                        .ok()
                        .and_then(|v| v.trim().parse().ok())
                }
                _ => None,
            }
        };
        self.trace_sample_ratio
            .or_else(from_env)
            .unwrap_or(DEFAULT_SAMPLE_RATIO)
            .clamp(0.0, 1.0)
    }
}

impl TelemetryConfig {
    /// Adds what is wrong with `[telemetry]` to `issues`.
    pub(crate) fn validate(&self, issues: &mut Vec<ConfigIssue>) {
        if self.otlp_protocol != "grpc" {
            issues.push(ConfigIssue::new(
                "telemetry.otlp_protocol",
                format!("only \"grpc\" is supported, got {:?}", self.otlp_protocol),
            ));
        }
        // The standard variable, when set, must not ask for another protocol
        // than the one spoken: exports would fail against an HTTP port.
        if let Ok(protocol) = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL")
            && !protocol.is_empty()
            && protocol != "grpc"
        {
            issues.push(ConfigIssue::new(
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                format!("only \"grpc\" is supported (the collector's port 4317), got {protocol:?}"),
            ));
        }
        if let Some(endpoint) = &self.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            issues.push(ConfigIssue::new(
                "telemetry.otlp_endpoint",
                format!("must be an http:// or https:// URL, got {endpoint:?}"),
            ));
        }
        if self.export_interval_ms < 100 {
            issues.push(ConfigIssue::new(
                "telemetry.export_interval_ms",
                "must be at least 100",
            ));
        }
        super::validate::positive(issues, "telemetry.otlp_timeout_ms", self.otlp_timeout_ms);
        if let Some(ratio) = self.trace_sample_ratio
            && !(0.0..=1.0).contains(&ratio)
        {
            issues.push(ConfigIssue::new(
                "telemetry.trace_sample_ratio",
                format!("must be between 0 and 1, got {ratio}"),
            ));
        }
        for (name, value) in &self.otlp_headers {
            let key_ok =
                tonic::metadata::MetadataKey::<tonic::metadata::Ascii>::from_bytes(name.as_bytes())
                    .is_ok();
            let value_ok = value
                .expose()
                .parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>()
                .is_ok();
            if !(key_ok && value_ok) {
                // The value is a credential: only the name is said.
                issues.push(ConfigIssue::new(
                    format!("telemetry.otlp_headers.{name}"),
                    "not a valid gRPC metadata entry (lowercase ASCII name, visible ASCII value)",
                ));
            }
        }
    }
}

mod defaults {
    pub(super) fn otlp_protocol() -> String {
        "grpc".into()
    }
    pub(super) fn otlp_timeout_ms() -> u64 {
        10_000
    }
    pub(super) fn export_interval_ms() -> u64 {
        60_000
    }
    pub(super) fn service_name() -> String {
        "pushgate".into()
    }
}
