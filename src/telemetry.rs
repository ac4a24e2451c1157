//! Logging set-up and the metrics (OpenTelemetry instruments, served at
//! `/metrics`).

mod instruments;
mod log_ids;
mod metrics;
mod otlp;
mod process;
mod traces;

pub(crate) use instruments::spec;
pub use instruments::{Counter, CounterVec, Gauge, GaugeVec, HistogramVec, KeyedGauge};
pub use metrics::{Metrics, MetricsError};
pub use otlp::OtlpError;
pub use traces::{Traces, ids, note, note_in, remote, sampled, traceparent, within};

use crate::config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Installs the global `tracing` subscriber. `RUST_LOG`, when set, wins over the
/// configured level. Safe to call more than once (later calls do nothing).
/// A line logged inside a traced span carries its `trace_id` and `span_id`.
pub fn init_logging(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Text => builder
            .event_format(log_ids::WithTraceIds::text(
                tracing_subscriber::fmt::format(),
            ))
            .try_init(),
        LogFormat::Json => builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(log_ids::WithTraceIds::json(
                tracing_subscriber::fmt::format().json(),
            ))
            .try_init(),
    };
}
