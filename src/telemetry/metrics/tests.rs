//! The Prometheus page's names, types, help and catalogue.

use super::*;

#[test]
fn renders_labelled_counters_and_gauges_with_help() {
    let m = Metrics::default();
    m.deliveries.inc(&["apns", "delivered"]);
    m.deliveries.inc(&["apns", "delivered"]);
    m.sessions_up.add("xmpp.example.org:5347", 1);
    let text = m.render();
    for line in [
        "# HELP pushgate_deliveries_total Delivery attempts to push providers, by provider and outcome.",
        "# TYPE pushgate_deliveries_total counter",
        "pushgate_deliveries_total{outcome=\"delivered\",provider=\"apns\"} 2",
        "pushgate_component_sessions_up{server=\"xmpp.example.org:5347\"} 1",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert!(!text.contains("otel_scope"), "{text}");
    assert!(!text.contains("target_info"), "{text}");
}

#[test]
fn renders_histograms_cumulatively() {
    let m = Metrics::default();
    m.delivery_latency.observe(&["fcm"], 0.004);
    m.delivery_latency.observe(&["fcm"], 0.5);
    let text = m.render();
    for line in [
        "pushgate_delivery_latency_seconds_bucket{provider=\"fcm\",le=\"0.002\"} 0",
        "pushgate_delivery_latency_seconds_bucket{provider=\"fcm\",le=\"0.005\"} 1",
        "pushgate_delivery_latency_seconds_bucket{provider=\"fcm\",le=\"0.5\"} 2",
        "pushgate_delivery_latency_seconds_bucket{provider=\"fcm\",le=\"+Inf\"} 2",
        "pushgate_delivery_latency_seconds_count{provider=\"fcm\"} 2",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    m.queue_depth.set(&["fcm"], 3);
    assert!(
        m.render()
            .contains("pushgate_queue_depth{provider=\"fcm\"} 3")
    );
}

/// The Prometheus names are the operator interface (dashboards, alerts):
/// every instrument, touched once, renders under its name from before
/// the SDK, with help text and type.
#[test]
fn every_family_keeps_its_prometheus_name() {
    let m = Metrics::default();
    let fences = crate::registry::Fences::new(4);
    let c = crate::cluster::ClusterMetrics::new(m.meter(), fences);
    let p = &["apns"];
    m.publishes.inc(&["accepted"]);
    m.notifications.inc(&["apns", "delivered"]);
    m.coalesced.inc(p);
    m.outbox_flushes.inc(p);
    m.deliveries.inc(&["apns", "delivered"]);
    m.retries.inc(&["apns", "transport"]);
    m.delivery_latency.observe(p, 0.1);
    m.request_duration.observe(
        &["apns", "POST", "api.push.apple.com", "410", "Unregistered"],
        0.02,
    );
    for g in [
        &m.outbox_entries,
        &m.queue_depth,
        &m.in_flight,
        &m.oldest_pending_seconds,
        &m.provider_healthy,
        &m.certificate_expiry_seconds,
    ] {
        g.set(p, 1);
    }
    m.registration_commands.inc(&["register-device", "ok"]);
    m.registrations.set(1);
    m.sessions_up.add("xmpp.example.org:5347", 1);
    c.members.set(1);
    c.shards_owned.set(1);
    c.handoffs.inc(&["acquired"]);
    c.forwards.inc(&["publish", "ok"]);
    c.forwarded_in.inc(&["publish"]);
    c.forward_latency.observe(&["publish"], 0.01);
    c.self_fenced.inc();
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = crate::registry::Registry::open_embedded(dir.path()).expect("store");
    registry.observe(&m);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        registry.get("no-such-node").await.expect("read");
        let failed: Result<(), _> = registry
            .timed(crate::registry::Operation::Write, async {
                Err(crate::registry::RegistryError::Stopped)
            })
            .await;
        assert!(failed.is_err());
    });
    let text = m.render();
    let mut families: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    families.sort_unstable();
    let expected = [
        ("http_client_request_duration_seconds", "histogram"),
        ("process_cpu_time_seconds_total", "counter"),
        ("process_memory_usage_bytes", "gauge"),
        ("pushgate_cluster_fenced_writes_total", "counter"),
        ("pushgate_cluster_forward_latency_seconds", "histogram"),
        ("pushgate_cluster_forwarded_in_total", "counter"),
        ("pushgate_cluster_forwards_total", "counter"),
        ("pushgate_cluster_handoffs_total", "counter"),
        ("pushgate_cluster_members", "gauge"),
        ("pushgate_cluster_self_fenced_total", "counter"),
        ("pushgate_cluster_shards_owned", "gauge"),
        ("pushgate_coalesced_total", "counter"),
        ("pushgate_component_sessions_up", "gauge"),
        ("pushgate_deliveries_total", "counter"),
        ("pushgate_delivery_latency_seconds", "histogram"),
        ("pushgate_in_flight", "gauge"),
        ("pushgate_notifications_total", "counter"),
        ("pushgate_oldest_pending_seconds", "gauge"),
        ("pushgate_outbox_entries", "gauge"),
        ("pushgate_outbox_flushes_total", "counter"),
        ("pushgate_provider_certificate_expiry_seconds", "gauge"),
        ("pushgate_provider_healthy", "gauge"),
        ("pushgate_publishes_total", "counter"),
        ("pushgate_queue_depth", "gauge"),
        ("pushgate_registration_commands_total", "counter"),
        ("pushgate_registrations", "gauge"),
        ("pushgate_retries_total", "counter"),
        ("pushgate_store_errors_total", "counter"),
        ("pushgate_store_operation_duration_seconds", "histogram"),
    ];
    assert_eq!(families, expected, "{text}");
    let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
    assert_eq!(helps, expected.len(), "a # HELP per family: {text}");
    assert!(
        text.contains("pushgate_store_operation_duration_seconds_count{backend=\"embedded\",operation=\"read\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("pushgate_store_errors_total{backend=\"embedded\",operation=\"write\"} 1"),
        "{text}"
    );
    // Semantic-convention attributes, as Prometheus labels.
    assert!(
        text.contains("http_client_request_duration_seconds_count{error_type=\"Unregistered\",http_request_method=\"POST\",http_response_status_code=\"410\",provider=\"apns\",server_address=\"api.push.apple.com\"} 1"),
        "{text}"
    );
    // The README's catalogue has a row for each.
    let readme = include_str!("../../../README.md");
    for (name, kind) in expected {
        let row = readme
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("| `{name}` |")));
        assert!(
            row.is_some_and(|r| r.contains(&format!("| {kind} |"))),
            "README catalogue row for {name} ({kind})"
        );
    }
}
