//! A publish followed across two nodes by its trace: the node whose stream
//! it arrived on forwards it to its shard's owner, and the spans of both
//! (publish, gRPC client and server, store write, provider request) reach
//! one OTLP collector under one trace id, without a token, JID or secret in
//! any attribute.

use super::*;
use crate::otlp::{Collector, ReceivedSpan, SpanKind};
use crate::support::cluster::CLUSTER_SECRET;

const FORWARD: &str = "pushgate.cluster.v1.Cluster/Forward";

/// The spans of the first trace in which a publish was forwarded and its
/// push sent by the other node.
fn forwarded_trace(spans: &[ReceivedSpan]) -> Option<Vec<ReceivedSpan>> {
    let clients = spans
        .iter()
        .filter(|s| s.name == FORWARD && s.kind == SpanKind::Client);
    for client in clients {
        let trace: Vec<ReceivedSpan> = spans
            .iter()
            .filter(|s| s.trace_id == client.trace_id)
            .cloned()
            .collect();
        let sent_elsewhere = trace
            .iter()
            .any(|s| s.name == "POST" && s.node != client.node);
        if sent_elsewhere {
            return Some(trace);
        }
    }
    None
}

/// The one span of `trace` named `name`, of `kind`.
fn one<'t>(trace: &'t [ReceivedSpan], name: &str, kind: SpanKind) -> &'t ReceivedSpan {
    let found: Vec<&ReceivedSpan> = trace
        .iter()
        .filter(|s| s.name == name && s.kind == kind)
        .collect();
    assert_eq!(found.len(), 1, "{name} {kind:?} in {trace:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_publish_is_one_trace_across_both_nodes() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let mut s = setup(Mode::Balance, 1).await;
    s.spec.cluster_keys = format!(
        "\n[telemetry]\notlp_endpoint = \"{endpoint}\"\ntrace_sample_ratio = 1.0\nexport_interval_ms = 500\n"
    );
    let nodes = s.start(&["a", "b"]).await;
    // One stream: on one node; about half the devices' shards are the other's.
    let devices = register_many(&s.router, 300, 12).await;
    let tally = publish_each(s.router.clone(), devices.clone(), Duration::ZERO).await;
    assert_eq!(tally.acked.len(), devices.len(), "{tally:?}");
    let tokens: Vec<String> = devices.iter().map(|(t, _)| t.clone()).collect();
    assert!(undelivered(&s.mock, &tokens, WAIT).await.is_empty());

    let found = eventually(WAIT, || async {
        forwarded_trace(&collector.spans()).is_some()
    })
    .await;
    let spans = collector.spans();
    assert!(
        found,
        "no forwarded publish traced across both nodes: {spans:#?}"
    );
    let trace = forwarded_trace(&spans).unwrap_or_default();

    // The chain, parent by parent, over both nodes.
    let publish = one(&trace, "pushgate.publish", SpanKind::Server);
    assert!(publish.parent_span_id.is_empty(), "the root: {publish:?}");
    assert_eq!(publish.attribute("pushgate.outcome"), Some("forwarded"));
    let client = one(&trace, FORWARD, SpanKind::Client);
    assert_eq!(client.parent_span_id, publish.span_id);
    assert_eq!(client.node, publish.node);
    let server = one(&trace, FORWARD, SpanKind::Server);
    assert_eq!(server.parent_span_id, client.span_id, "joined over gRPC");
    assert_ne!(server.node, client.node);
    for rpc in [client, server] {
        assert_eq!(rpc.attribute("rpc.system.name"), Some("grpc"));
        assert_eq!(rpc.attribute("rpc.method"), Some(FORWARD));
    }
    assert_eq!(client.attribute("rpc.response.status_code"), Some("OK"));
    let owned = one(&trace, "pushgate.publish", SpanKind::Internal);
    assert_eq!(owned.parent_span_id, server.span_id);
    assert_eq!(owned.attribute("pushgate.outcome"), Some("accepted"));
    assert_eq!(owned.attribute("pushgate.provider"), Some("apns"));
    let write = one(&trace, "pushgate.store.write", SpanKind::Internal);
    assert_eq!(write.parent_span_id, owned.span_id);
    let request = one(&trace, "POST", SpanKind::Client);
    assert_eq!(request.parent_span_id, owned.span_id);
    assert_eq!(request.attribute("url.template"), Some("/3/device/{token}"));
    assert_eq!(request.attribute("http.request.method"), Some("POST"));
    assert_eq!(request.attribute("http.response.status_code"), Some("200"));

    // Registrations were traced too (one command span each, on the stream's node).
    assert!(
        spans
            .iter()
            .filter(|s| s.name == "pushgate.command")
            .count()
            >= devices.len()
    );

    // No token, node, JID or secret anywhere in what was exported (checked
    // again after the REST unregisters below).
    let forbidden: Vec<String> = devices
        .iter()
        .flat_map(|(token, node)| [token.clone(), node.clone()])
        .chain([CLUSTER_SECRET.to_owned(), SECRET.to_owned(), "@".to_owned()])
        .collect();
    for text in collector.all_span_text() {
        for f in &forbidden {
            assert!(!text.contains(f.as_str()), "{f:?} exported in {text:?}");
        }
    }

    // A REST unregister reaching the stream's node for every device: those
    // the other node owns go there in a unary call, under the REST span.
    let rest_node = nodes
        .iter()
        .find(|n| n.id == client.node)
        .expect("the forwarding node");
    for (i, (token, _)) in devices.iter().enumerate() {
        let account = device_account(300 + u16::try_from(i).expect("few devices"));
        let (status, body) = rest_node
            .process
            .post_json(
                "/rest/push/unregister-device/push.localhost",
                serde_json::json!({"account": account, "provider": "apns", "device-token": token}),
            )
            .await;
        assert_eq!((status, body.contains("success")), (200, true), "{body}");
    }
    let joined = eventually(WAIT, || async {
        let spans = collector.spans();
        spans.iter().any(|rest| {
            rest.name == "pushgate.rest.unregister"
                && rest.kind == SpanKind::Server
                && rest.node == client.node
                && rest.attribute("http.route") == Some("/rest/push/unregister-device/{jid}")
                && spans.iter().any(|s| {
                    s.name == "pushgate.cluster.v1.Cluster/Unregister"
                        && s.kind == SpanKind::Server
                        && s.node != rest.node
                        && s.parent_span_id == rest.span_id
                        && s.trace_id == rest.trace_id
                })
        })
    })
    .await;
    assert!(
        joined,
        "no REST unregister traced into its owner: {:#?}",
        collector.spans()
    );

    // The forward is in the metrics pushed by the node that forwarded it.
    let forwards = eventually(WAIT, || async {
        collector
            .sum("pushgate.cluster.forwards", ("outcome", "ok"))
            .is_some_and(|(v, _)| v >= 1)
    })
    .await;
    assert!(forwards, "pushgate.cluster.forwards over OTLP");
    for text in collector.all_span_text() {
        for f in &forbidden {
            assert!(!text.contains(f.as_str()), "{f:?} exported in {text:?}");
        }
    }
    drop(nodes);
}
