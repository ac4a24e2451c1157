//! Trace and span ids on log lines written inside a traced span, so a log
//! shipper can join a line to its trace.

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// An event format with `trace_id` and `span_id` added when a span is
/// current: as the first fields of a JSON object, or at the end of a text
/// line. Lines outside spans are the inner format's, untouched.
pub(super) struct WithTraceIds<F> {
    inner: F,
    json: bool,
}

impl<F> WithTraceIds<F> {
    pub(super) fn text(inner: F) -> Self {
        Self { inner, json: false }
    }

    pub(super) fn json(inner: F) -> Self {
        Self { inner, json: true }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let Some((trace, span)) = super::ids() else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let body = line.trim_end_matches('\n');
        if self.json
            && let Some(rest) = body.strip_prefix('{')
        {
            let comma = if rest.starts_with('}') { "" } else { "," };
            writeln!(
                writer,
                "{{\"trace_id\":\"{trace}\",\"span_id\":\"{span}\"{comma}{rest}"
            )
        } else {
            writeln!(writer, "{body} trace_id={trace} span_id={span}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    };
    use std::sync::{Arc, Mutex};

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut lines) = self.0.lock() {
                lines.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(json: bool, in_span: bool) -> String {
        let lines = Lines::default();
        let out = lines.clone();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || out.clone());
        let dispatch: tracing::Dispatch = if json {
            builder
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .event_format(WithTraceIds::json(tracing_subscriber::fmt::format().json()))
                .into()
        } else {
            builder
                .event_format(WithTraceIds::text(tracing_subscriber::fmt::format()))
                .into()
        };
        let context = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("trace id"),
            SpanId::from_hex("00f067aa0ba902b7").expect("span id"),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let cx = opentelemetry::Context::new().with_remote_span_context(context);
        tracing::dispatcher::with_default(&dispatch, || {
            let _attached = in_span.then(|| cx.attach());
            tracing::warn!(shard = 7, "something to say");
        });
        let bytes = lines.0.lock().map(|l| l.clone()).unwrap_or_default();
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn a_json_line_in_a_span_carries_its_ids() {
        let line = logged(true, true);
        let value: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON object");
        assert_eq!(value["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(value["span_id"], "00f067aa0ba902b7");
        assert_eq!(value["fields"]["message"], "something to say");
        assert_eq!(value["fields"]["shard"], 7);
    }

    #[test]
    fn a_text_line_in_a_span_ends_with_its_ids() {
        let line = logged(false, true);
        assert!(line.contains("something to say"), "{line}");
        assert!(
            line.trim_end()
                .ends_with("trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7"),
            "{line}"
        );
        assert_eq!(line.lines().count(), 1, "{line}");
    }

    #[test]
    fn a_line_outside_spans_has_no_ids() {
        for json in [true, false] {
            let line = logged(json, false);
            assert!(line.contains("something to say"), "{line}");
            assert!(!line.contains("trace_id"), "{line}");
        }
    }
}
