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
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the collector received.
#[derive(Clone, Default)]
struct Collector {
    requests: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
    /// The `x-tenant` header of each export.
    tenants: Arc<Mutex<Vec<String>>>,
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
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let service = MetricsServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        endpoint
    }

    /// The last value received of sum `name` at a data point carrying
    /// `attribute`, and the resource's `service.name` with it.
    fn sum(&self, name: &str, attribute: (&str, &str)) -> Option<(i64, String)> {
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

/// A collector that is not there: exports fail in the background, counted,
/// and publishes are answered as fast as ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_slows_nothing() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut h = Harness::start_with(|mut c| {
        c.extra.push_str(&format!(
            "\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:{closed}\"\nexport_interval_ms = 100\notlp_timeout_ms = 500\n"
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
}
