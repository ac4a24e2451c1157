//! Traces: a span per publish and per command, children for the outbox
//! write, the forward to a shard's owner and the provider request, pushed
//! over OTLP when a collector is configured.
//!
//! Spans are made with the OpenTelemetry API directly rather than through
//! `tracing` spans: a publish that is not sampled then costs one sampler
//! call and no attribute at all (attributes are only set on spans that
//! record), and with tracing off nothing is made. The span being worked in
//! travels as the current OpenTelemetry [`Context`] of the future doing the
//! work ([`within`]), so log lines inside it carry its ids, and with a push
//! (its publish's span context) to the provider request that sends it.
//!
//! Finished spans go through a bounded queue of our own to one exporting
//! task on the OTLP runtime: a full queue or a failed export drops spans and
//! counts them (`pushgate.telemetry.spans.dropped`), and nothing of it ever
//! waits on the gateway's threads. (The SDK's batch processor drops too, but
//! keeps its count private.)

use super::OtlpError;
use crate::config::TelemetryConfig;
use futures_util::future::Either;
use opentelemetry::context::{FutureExt as _, WithContext};
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceId, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter as _, SpanProcessor,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Finished spans waiting for export at most; past it they are dropped.
const QUEUE: usize = 4096;
/// Spans in one export at most.
const BATCH: usize = 512;
/// How long a finished span waits for others before its batch goes.
const BATCH_DELAY: Duration = Duration::from_secs(1);

/// The tracer of this process, when traces are pushed.
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    /// Spans dropped (queue full or export failed).
    pub(crate) dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Traces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traces").finish_non_exhaustive()
    }
}

impl Traces {
    /// Sets up the span export to `endpoint`, its channel and exporting task
    /// on `runtime`.
    pub(crate) fn start(
        config: &TelemetryConfig,
        endpoint: &str,
        resource: Resource,
        runtime: &tokio::runtime::Runtime,
    ) -> Result<Self, OtlpError> {
        let mut exporter = {
            let _entered = runtime.enter();
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(Duration::from_millis(config.otlp_timeout_ms))
                .with_metadata(super::otlp::metadata(config)?)
                .build()
                .map_err(|e| OtlpError::Exporter {
                    endpoint: endpoint.to_owned(),
                    message: e.to_string(),
                })?
        };
        exporter.set_resource(&resource);
        let dropped = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel(QUEUE);
        runtime.spawn(export(exporter, rx, dropped.clone(), endpoint.to_owned()));
        let ratio = config.trace_sample_ratio();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Queue {
                tx,
                dropped: dropped.clone(),
            })
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                ratio,
            ))))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("pushgate");
        info!(endpoint, ratio, "pushing traces over OTLP");
        Ok(Self {
            provider,
            tracer,
            dropped,
        })
    }

    /// A new span named `name` under the current span (a root without one),
    /// as the context to run its work in.
    pub fn span(&self, name: &'static str, kind: SpanKind) -> Context {
        Context::map_current(|parent| self.span_in(name, kind, parent))
    }

    /// A new span named `name` under `parent`.
    pub fn span_in(&self, name: &'static str, kind: SpanKind, parent: &Context) -> Context {
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .start_with_context(&self.tracer, parent);
        parent.with_span(span)
    }

    /// A new span under a span context carried along (a push's publish).
    pub fn span_under(&self, name: &'static str, kind: SpanKind, parent: &SpanContext) -> Context {
        self.span_in(
            name,
            kind,
            &Context::new().with_remote_span_context(parent.clone()),
        )
    }

    /// The provider, for shutdown.
    pub(crate) fn provider(&self) -> SdkTracerProvider {
        self.provider.clone()
    }
}

/// `work` with `cx` as its current context (its span the parent of spans
/// started inside, its ids on log lines); without one, `work` as it is.
/// The span ends when the returned future is dropped, unless a clone of
/// `cx` is kept. A plain function, not an `async fn`: an async wrapper
/// would hold `work` twice in its state, and the stacks of debug builds
/// overflowed on the nested publish futures.
pub fn within<F: Future>(cx: Option<Context>, work: F) -> Either<WithContext<F>, F> {
    match cx {
        Some(cx) => Either::Left(work.with_context(cx)),
        None => Either::Right(work),
    }
}

/// Sets an attribute of the current span, if it records.
/// The value is made only then: without a recording span a note costs a
/// thread-local read.
pub fn note<V: Into<opentelemetry::Value>>(key: &'static str, value: impl FnOnce() -> V) {
    Context::map_current(|cx| note_in(cx, key, value));
}

/// Sets an attribute of the span of `cx`, if it records.
pub fn note_in<V: Into<opentelemetry::Value>>(
    cx: &Context,
    key: &'static str,
    value: impl FnOnce() -> V,
) {
    let span = cx.span();
    if span.is_recording() {
        span.set_attribute(KeyValue::new(key, value().into()));
    }
}

/// The current span's context when it is sampled: what a push carries to
/// its provider request.
pub fn sampled() -> Option<SpanContext> {
    Context::map_current(|cx| {
        let span = cx.span();
        let context = span.span_context();
        context.is_sampled().then(|| context.clone())
    })
}

/// The trace and span id of the current span, for log lines.
pub fn ids() -> Option<(TraceId, SpanId)> {
    Context::map_current(|cx| {
        let span = cx.span();
        let context = span.span_context();
        context
            .is_valid()
            .then(|| (context.trace_id(), context.span_id()))
    })
}

/// The current span as a W3C `traceparent`, for a peer; empty without one.
pub fn traceparent() -> String {
    let mut carrier = HashMap::new();
    Context::map_current(|cx| {
        if cx.span().span_context().is_valid() {
            TraceContextPropagator::new().inject_context(cx, &mut carrier);
        }
    });
    carrier.remove("traceparent").unwrap_or_default()
}

/// The context a peer's `traceparent` stands for (empty if there is none
/// or it cannot be read).
pub fn remote(traceparent: &str) -> Context {
    if traceparent.is_empty() {
        return Context::new();
    }
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    TraceContextPropagator::new().extract(&carrier)
}

enum Job {
    Span(Box<SpanData>),
    /// Export what is queued, then say so.
    Flush(std::sync::mpsc::Sender<()>),
    /// Export what is queued, stop the exporter, then say so.
    Stop(std::sync::mpsc::Sender<()>),
}

/// The span processor: finished spans into the bounded queue.
#[derive(Debug)]
struct Queue {
    tx: mpsc::Sender<Job>,
    dropped: Arc<AtomicU64>,
}

impl Queue {
    /// Sends `job` and waits up to `timeout` for it to be done. (Wall-clock
    /// waits on the caller's thread: the exporting task runs on its own
    /// runtime, whatever the gateway's clock does.)
    fn ask(
        &self,
        job: impl FnOnce(std::sync::mpsc::Sender<()>) -> Job,
        timeout: Duration,
    ) -> OTelSdkResult {
        const PAUSE: Duration = Duration::from_millis(5);
        let (done, wait) = std::sync::mpsc::channel();
        let mut job = job(done);
        let mut tries = timeout.as_millis() / PAUSE.as_millis();
        loop {
            match self.tx.try_send(job) {
                Ok(()) => break,
                Err(mpsc::error::TrySendError::Full(j)) if tries > 0 => {
                    job = j;
                    tries -= 1;
                    std::thread::sleep(PAUSE);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    return Err(OTelSdkError::AlreadyShutdown);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    return Err(OTelSdkError::Timeout(timeout));
                }
            }
        }
        wait.recv_timeout(timeout)
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.tx.try_send(Job::Span(Box::new(span))).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Job::Flush, Duration::from_secs(5))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.ask(Job::Stop, timeout)
    }
}

/// The exporting task: batches of up to [`BATCH`] spans, each sent at
/// most [`BATCH_DELAY`] after its first span finished. A failed export is
/// dropped and counted, and said once in the log until exports work again.
async fn export(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::Receiver<Job>,
    dropped: Arc<AtomicU64>,
    endpoint: String,
) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(BATCH);
    let mut due = None;
    let mut failing = false;
    loop {
        let job = match due {
            Some(at) => tokio::time::timeout_at(at, rx.recv()).await.ok(),
            None => Some(rx.recv().await),
        };
        let (mut send, mut answer, mut stop) = (due.is_some() && job.is_none(), None, false);
        match job {
            Some(Some(Job::Span(span))) => {
                batch.push(*span);
                due.get_or_insert_with(|| crate::clock::now() + BATCH_DELAY);
                send = batch.len() >= BATCH;
            }
            Some(Some(Job::Flush(done))) => (send, answer) = (true, Some(done)),
            Some(Some(Job::Stop(done))) => (send, answer, stop) = (true, Some(done), true),
            Some(None) => (send, stop) = (true, true),
            None => {}
        }
        if send && !batch.is_empty() {
            let spans = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            let count = spans.len() as u64;
            match exporter.export(spans).await {
                Ok(()) if failing => {
                    failing = false;
                    info!(endpoint, "OTLP span export works again");
                }
                Ok(()) => {}
                Err(e) => {
                    dropped.fetch_add(count, Ordering::Relaxed);
                    if !failing {
                        failing = true;
                        warn!(
                            endpoint,
                            "OTLP span export failed (spans dropped and counted): {e}"
                        );
                    }
                }
            }
        }
        if send {
            due = None;
        }
        if stop {
            let _ = exporter.shutdown();
        }
        if let Some(done) = answer {
            let _ = done.send(());
        }
        if stop {
            return;
        }
    }
}
