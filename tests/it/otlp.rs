//! OTLP export against an in-process collector (a tonic server of the OTLP
//! metrics service, as opentelemetry-otlp's own tests do): the same
//! instruments `/metrics` shows arrive over OTLP, with their attributes and
//! the resource; a collector that is not there slows nothing down.

use crate::support::harness::{Harness, assert_result};
use crate::support::{WAIT, apns_token, eventually};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
pub(crate) use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the collector received.
#[derive(Clone, Default)]
pub(crate) struct Collector {
    requests: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
    /// The `x-tenant` header of each export.
    tenants: Arc<Mutex<Vec<String>>>,
    /// Span exports.
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

/// A span as received, with what the test looks at.
#[derive(Debug, Clone)]
pub(crate) struct ReceivedSpan {
    /// `service.instance.id` of the node that sent it.
    pub node: String,
    pub name: String,
    pub kind: SpanKind,
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    pub parent_span_id: Vec<u8>,
    /// String and integer attributes, as text.
    pub attributes: Vec<(String, String)>,
}

impl ReceivedSpan {
    /// The value of attribute `key`.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if let Ok(mut traces) = self.traces.lock() {
            traces.push(request.into_inner());
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// An attribute value as text (strings and integers; others empty).
fn text_of(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        _ => String::new(),
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let tenant = request
            .metadata()
            .get("x-tenant")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if let Ok(mut tenants) = self.tenants.lock() {
            tenants.push(tenant);
        }
        if let Ok(mut requests) = self.requests.lock() {
            requests.push(request.into_inner());
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Serves on a free loopback port; returns its `http://` endpoint.
    pub(crate) async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let service = MetricsServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .add_service(TraceServiceServer::new(self.clone()))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        endpoint
    }

    /// Every span received so far.
    pub(crate) fn spans(&self) -> Vec<ReceivedSpan> {
        let Ok(traces) = self.traces.lock() else {
            return Vec::new();
        };
        let mut spans = Vec::new();
        for resource in traces.iter().flat_map(|r| &r.resource_spans) {
            let node = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.instance.id")
                .map(|a| text_of(a.value.as_ref()))
                .unwrap_or_default();
            for span in resource.scope_spans.iter().flat_map(|s| &s.spans) {
                spans.push(ReceivedSpan {
                    node: node.clone(),
                    name: span.name.clone(),
                    kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                    trace_id: span.trace_id.clone(),
                    span_id: span.span_id.clone(),
                    parent_span_id: span.parent_span_id.clone(),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|a| (a.key.clone(), text_of(a.value.as_ref())))
                        .collect(),
                });
            }
        }
        spans
    }

    /// Every string attribute value received, of spans and resources, and
    /// every span name: where no token, JID or secret may appear.
    pub(crate) fn all_span_text(&self) -> Vec<String> {
        let Ok(traces) = self.traces.lock() else {
            return Vec::new();
        };
        let mut texts = Vec::new();
        for resource in traces.iter().flat_map(|r| &r.resource_spans) {
            for a in resource.resource.iter().flat_map(|r| &r.attributes) {
                texts.push(text_of(a.value.as_ref()));
            }
            for span in resource.scope_spans.iter().flat_map(|s| &s.spans) {
                texts.push(span.name.clone());
                for a in &span.attributes {
                    texts.push(text_of(a.value.as_ref()));
                }
                for event in &span.events {
                    texts.push(event.name.clone());
                    texts.extend(event.attributes.iter().map(|a| text_of(a.value.as_ref())));
                }
                if let Some(status) = &span.status {
                    texts.push(status.message.clone());
                }
            }
        }
        texts
    }

    /// The last value received of sum `name` at a data point carrying
    /// `attribute`, and the resource's `service.name` with it.
    pub(crate) fn sum(&self, name: &str, attribute: (&str, &str)) -> Option<(i64, String)> {
        let requests = self.requests.lock().ok()?;
        let mut found = None;
        for request in requests.iter() {
            for resource in &request.resource_metrics {
                let service = resource
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|a| a.key == "service.name")
                    .and_then(|a| a.value.as_ref())
                    .and_then(|v| match &v.value {
                        Some(Value::StringValue(s)) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                let metrics = resource.scope_metrics.iter().flat_map(|s| &s.metrics);
                for metric in metrics.filter(|m| m.name == name) {
                    let Some(Data::Sum(sum)) = &metric.data else {
                        continue;
                    };
                    for point in &sum.data_points {
                        let matches = point.attributes.iter().any(|a| {
                            a.key == attribute.0
                                && matches!(
                                    a.value.as_ref().and_then(|v| v.value.as_ref()),
                                    Some(Value::StringValue(s)) if s == attribute.1
                                )
                        });
                        if matches {
                            let value = match point.value {
                                Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(v)) => v,
                                Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(v)) => v as i64,
                                None => 0,
                            };
                            found = Some((value, service.clone()));
                        }
                    }
                }
            }
        }
        found
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_pushed_over_otlp_with_the_resource() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let mut h = Harness::start_with(|mut c| {
        c.extra.push_str(&format!(
            "\n[telemetry]\notlp_endpoint = \"{endpoint}\"\nexport_interval_ms = 200\nservice_name = \"pushgate-test\"\nresource_attributes = {{ \"deployment.environment\" = \"ci\" }}\n[telemetry.otlp_headers]\nx-tenant = \"t1\"\n"
        ));
        c
    })
    .await;
    let node = h
        .register("olga@localhost/r", "apns", &apns_token(0x61))
        .await;
    assert_result(&h.publish_prosody(&node, "localhost", "hi", None).await);
    let pushed = eventually(WAIT, || async {
        collector.sum("pushgate.publishes", ("outcome", "accepted"))
            == Some((1, "pushgate-test".to_owned()))
    })
    .await;
    assert!(
        pushed,
        "{:?}",
        collector.sum("pushgate.publishes", ("outcome", "accepted"))
    );
    // The same instrument on the Prometheus page.
    assert_eq!(
        h.gateway
            .metric("pushgate_publishes_total{outcome=\"accepted\"}")
            .await,
        1.0
    );
    let delivered = eventually(WAIT, || async {
        collector
            .sum("pushgate.deliveries", ("outcome", "delivered"))
            .is_some_and(|(v, _)| v == 1)
    })
    .await;
    assert!(delivered);
    let tenants = collector.tenants.lock().expect("tenants").clone();
    assert!(tenants.iter().all(|t| t == "t1"), "{tenants:?}");
    let environment = collector.requests.lock().expect("requests").iter().any(|r| {
        r.resource_metrics.iter().flat_map(|m| &m.resource).any(|res| {
            res.attributes.iter().any(|a| {
                a.key == "deployment.environment"
                    && matches!(a.value.as_ref().and_then(|v| v.value.as_ref()), Some(Value::StringValue(s)) if s == "ci")
            })
        })
    });
    assert!(environment, "the configured resource attribute");
}

/// A collector that is not there: metric and span exports fail in the
/// background, counted, and publishes are answered as fast as ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_slows_nothing() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut h = Harness::start_with(|mut c| {
        c.extra.push_str(&format!(
            "\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:{closed}\"\nexport_interval_ms = 100\notlp_timeout_ms = 500\ntrace_sample_ratio = 1.0\n"
        ));
        c
    })
    .await;
    let node = h
        .register("pia@localhost/r", "apns", &apns_token(0x62))
        .await;
    let failing = eventually(WAIT, || async {
        h.gateway
            .metric("pushgate_telemetry_export_failures_total")
            .await
            >= 2.0
    })
    .await;
    assert!(failing, "exports to a closed port did not fail");
    for _ in 0..20 {
        let started = std::time::Instant::now();
        assert_result(&h.publish_prosody(&node, "localhost", "hi", None).await);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a publish waited {:?}",
            started.elapsed()
        );
    }
    // Every publish traced, every span lost with the collector: counted.
    let dropped = eventually(WAIT, || async {
        h.gateway
            .metric("pushgate_telemetry_spans_dropped_total")
            .await
            >= 20.0
    })
    .await;
    assert!(
        dropped,
        "{}",
        h.gateway
            .metric("pushgate_telemetry_spans_dropped_total")
            .await
    );
}

/// `[telemetry] log_format = "json"`: a line logged inside a traced publish
/// is a JSON object carrying the trace and span ids of that publish's span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_inside_a_traced_publish_carry_its_ids() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let mut h = Harness::start_process_with(|mut c| {
        c.extra.push_str(&format!(
            "\n[telemetry]\notlp_endpoint = \"{endpoint}\"\ntrace_sample_ratio = 1.0\nlog_format = \"json\"\n"
        ));
        c
    })
    .await;
    let node = h
        .register("quinn@localhost/r", "apns", &apns_token(0x63))
        .await;
    // From a domain that does not own the node: refused, with a warning
    // logged inside the publish's span.
    let reply = h.publish_prosody(&node, "other.example", "hi", None).await;
    assert!(
        crate::support::harness::error_of(&reply).is_some(),
        "{reply:?}"
    );
    let found = eventually(WAIT, || async {
        h.gateway.log().contains("does not own the node")
            && collector
                .spans()
                .iter()
                .any(|s| s.attribute("pushgate.outcome") == Some("forbidden"))
    })
    .await;
    let log = h.gateway.log();
    assert!(found, "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("does not own the node"))
        .unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    let span = collector
        .spans()
        .into_iter()
        .find(|s| s.attribute("pushgate.outcome") == Some("forbidden"))
        .expect("the publish span");
    assert_eq!(value["trace_id"], hex::encode(&span.trace_id), "{line}");
    assert_eq!(value["span_id"], hex::encode(&span.span_id), "{line}");
    // Every line is JSON, in or out of a span.
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
}
