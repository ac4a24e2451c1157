//! A cluster of gateway processes on one Redis (`[cluster]`): work reaching
//! any node is done by its shard's owner, once.

use crate::support::cluster::{ClusterSpec, Node, metric_sum, settled};
use crate::support::harness::{
    assert_result, error_of, node_of, prosody_publish, register_one_step,
};
use crate::support::mock_provider::MockProvider;
use crate::support::redis::RedisServer;
use crate::support::xmpp_server::{Component, FakeServer};
use crate::support::{SECRET, WAIT, apns_token, eventually};
use std::time::Duration;

/// Time for a cluster to settle: leases, claims, outbox loads.
const SETTLE: Duration = Duration::from_secs(20);

struct Setup {
    _dir: tempfile::TempDir,
    _redis: RedisServer,
    mock: MockProvider,
    server: FakeServer,
    spec: ClusterSpec,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(dir.path());
    let mock = MockProvider::start(dir.path()).await;
    let server = FakeServer::start(SECRET).await;
    let spec = ClusterSpec::new(server.port, &redis.url(), &mock, dir.path());
    Setup {
        _dir: dir,
        _redis: redis,
        mock,
        server,
        spec,
    }
}

/// Starts nodes `ids` in turn, each with its component stream.
async fn start_nodes(s: &Setup, ids: &[&str]) -> (Vec<Node>, Vec<Component>) {
    let mut nodes = Vec::new();
    let mut conns = Vec::new();
    for id in ids {
        nodes.push(Node::start(&s.spec, id));
        conns.push(s.server.accept(WAIT).await);
    }
    (nodes, conns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_the_work_and_each_publish_is_delivered_once() {
    let s = setup().await;
    let (nodes, mut conns) = start_nodes(&s, &["n1", "n2", "n3"]).await;
    let all: Vec<&Node> = nodes.iter().collect();
    assert!(settled(&all, SETTLE).await, "the shards were not spread over the three nodes");

    // Register on n1's stream, publish on n2's and n3's.
    let mut devices = Vec::new();
    for i in 0..24u8 {
        let token = apns_token(i);
        let reply = conns[0]
            .iq(&register_one_step("alice@localhost/r", "apns", &token, None), WAIT)
            .await;
        devices.push((token, node_of(&reply).expect("registered")));
    }
    for (i, (_, node)) in devices.iter().enumerate() {
        let conn = &mut conns[1 + i % 2];
        assert_result(&conn.iq(&prosody_publish(node, "localhost", "hi", None), WAIT).await);
    }
    for (token, _) in &devices {
        assert!(
            eventually(WAIT, || async { !s.mock.delivered(token).is_empty() }).await,
            "a publish was not delivered"
        );
    }
    // Work was forwarded (24 nodes over 3 owners), and nothing twice.
    let forwarded = metric_sum(&all, "pushgate_cluster_forwards_total{kind=\"publish\",outcome=\"ok\"}").await
        + metric_sum(&all, "pushgate_cluster_forwards_total{kind=\"command\",outcome=\"ok\"}").await;
    assert!(forwarded >= 10.0, "only {forwarded} forwards");
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (token, _) in &devices {
        assert_eq!(s.mock.attempts(token).len(), 1, "delivered more than once");
    }

    // The Tigase REST unregister on n3 removes them wherever they live.
    for (token, node) in &devices {
        let (status, body) = nodes[2]
            .process
            .post_json(
                "/rest/push/unregister-device/push.localhost",
                serde_json::json!({"account": "alice@localhost", "provider": "apns", "device-token": token}),
            )
            .await;
        assert_eq!((status, body.contains("success")), (200, true), "{body}");
        let reply = conns[0].iq(&prosody_publish(node, "localhost", "hi", None), WAIT).await;
        assert_eq!(error_of(&reply), Some(("cancel".into(), "item-not-found".into())));
    }
    // Readiness shows the members and who owns what.
    let (status, body) = nodes[0].process.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"members\":[\"n1\",\"n2\",\"n3\"]"), "{body}");
}
