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
    redis: RedisServer,
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
        redis,
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

/// What a stream's publishes came to.
#[derive(Default, Debug)]
struct Tally {
    /// Tokens whose publish was answered `result`.
    acked: Vec<String>,
    /// `wait` errors (the server keeps the registration and drops the push).
    waits: usize,
    /// Any other error: never expected.
    others: Vec<(String, String)>,
    /// No answer (the node died under the publish).
    unanswered: usize,
}

/// Sends `xml` and waits for the reply with its id; `None` when the stream
/// ends or nothing comes in time.
async fn try_iq(conn: &mut Component, xml: &str, deadline: Duration) -> Option<xmpp_parsers::minidom::Element> {
    let id = xml.split("id='").nth(1)?.split('\'').next()?.to_owned();
    conn.write(xml).await;
    loop {
        let reply = conn.next_stanza(deadline).await?;
        if reply.attr("id") == Some(id.as_str()) {
            return Some(reply);
        }
    }
}

/// Publishes once to each device, `pause` apart, on `conn`.
async fn publish_each(conn: Component, devices: Vec<(String, String)>, pause: Duration) -> Tally {
    publish_on(conn, devices, pause).await.1
}

/// As [`publish_each`], handing the stream back.
async fn publish_on(
    mut conn: Component,
    devices: Vec<(String, String)>,
    pause: Duration,
) -> (Component, Tally) {
    let mut tally = Tally::default();
    for (token, node) in devices {
        match try_iq(&mut conn, &prosody_publish(&node, "localhost", "hi", None), WAIT).await {
            None => tally.unanswered += 1,
            Some(reply) => match error_of(&reply) {
                None => tally.acked.push(token),
                Some((kind, _)) if kind == "wait" => tally.waits += 1,
                Some(other) => tally.others.push(other),
            },
        }
        tokio::time::sleep(pause).await;
    }
    (conn, tally)
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.acked.extend(other.acked);
        self.waits += other.waits;
        self.others.extend(other.others);
        self.unanswered += other.unanswered;
    }
}

/// Registers `count` devices on `conn`, seeds from `first`.
async fn register_many(conn: &mut Component, first: u16, count: u16) -> Vec<(String, String)> {
    let mut devices = Vec::new();
    for i in first..first + count {
        let token = format!("{i:04x}").repeat(16);
        let reply = conn
            .iq(&register_one_step("bob@localhost/r", "apns", &token, None), WAIT)
            .await;
        devices.push((token, node_of(&reply).expect("registered")));
    }
    devices
}

/// Deliveries beyond the first, over `tokens`.
fn duplicates(mock: &MockProvider, tokens: &[String]) -> usize {
    tokens
        .iter()
        .map(|t| mock.delivered(t).len().saturating_sub(1))
        .sum()
}

/// Waits until every token in `tokens` was delivered; the ones that were not.
async fn undelivered(mock: &MockProvider, tokens: &[String], deadline: Duration) -> Vec<String> {
    eventually(deadline, || async { tokens.iter().all(|t| !mock.delivered(t).is_empty()) }).await;
    tokens
        .iter()
        .filter(|t| mock.delivered(t).is_empty())
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_loses_no_acknowledged_notification() {
    let s = setup().await;
    let (mut nodes, mut conns) = start_nodes(&s, &["n1", "n2", "n3"]).await;
    assert!(settled(&nodes.iter().collect::<Vec<_>>(), SETTLE).await);
    let devices = register_many(&mut conns[0], 0, 600).await;
    let mut groups: Vec<Vec<(String, String)>> = vec![Vec::new(); 3];
    for (i, d) in devices.into_iter().enumerate() {
        groups[i % 3].push(d);
    }
    let pause = Duration::from_millis(15);
    let mut tasks = Vec::new();
    for (conn, group) in conns.into_iter().zip(groups) {
        tasks.push(tokio::spawn(publish_each(conn, group, pause)));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    nodes[1].process.kill9();
    let killed = std::time::Instant::now();
    let survivors: Vec<&Node> = vec![&nodes[0], &nodes[2]];
    assert!(
        settled(&survivors, SETTLE).await,
        "the dead node's shards were not taken over"
    );
    let takeover = killed.elapsed();
    let mut tally = Tally::default();
    for t in tasks {
        tally.add(t.await.expect("publisher"));
    }
    assert!(
        takeover <= Duration::from_millis(super::support::cluster::LEASE_MS) + Duration::from_secs(3),
        "takeover took {takeover:?}"
    );
    assert!(tally.others.is_empty(), "non-wait refusals: {:?}", tally.others);
    assert!(tally.acked.len() > 300, "{tally:?}");
    let lost = undelivered(&s.mock, &tally.acked, Duration::from_secs(15)).await;
    assert!(lost.is_empty(), "{} acknowledged notifications lost of {}", lost.len(), tally.acked.len());
    let dups = duplicates(&s.mock, &tally.acked);
    assert!(dups <= 100, "{dups} duplicates, above the in-flight window");
    eprintln!(
        "kill -9: {} acked, {} wait, {} unanswered, {dups} duplicates, takeover {takeover:?}",
        tally.acked.len(),
        tally.waits,
        tally.unanswered
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_nothing_and_sends_nothing_twice() {
    let s = setup().await;
    let (mut nodes, conns) = start_nodes(&s, &["n1", "n2", "n3"]).await;
    assert!(settled(&nodes.iter().collect::<Vec<_>>(), SETTLE).await);
    let mut conns: Vec<Option<Component>> = conns.into_iter().map(Some).collect();
    let mut first = 0u16;
    let mut tally = Tally::default();
    for i in 0..3 {
        // The load goes through another node's stream while node i restarts.
        let via = (i + 1) % 3;
        let mut conn = conns[via].take().expect("stream");
        let devices = register_many(&mut conn, first, 150).await;
        first += 150;
        let publisher = tokio::spawn(publish_on(conn, devices, Duration::from_millis(10)));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let exit = nodes[i].process.terminate(WAIT);
        assert!(exit.is_some_and(|e| e.success()), "node {i} did not stop cleanly");
        drop(conns[i].take());
        nodes[i].restart();
        conns[i] = Some(s.server.accept(WAIT).await);
        assert!(settled(&nodes.iter().collect::<Vec<_>>(), SETTLE).await, "not settled after restarting node {i}");
        let (conn, t) = publisher.await.expect("publisher");
        conns[via] = Some(conn);
        tally.add(t);
    }
    assert!(tally.others.is_empty(), "non-wait refusals: {:?}", tally.others);
    assert_eq!(tally.unanswered, 0, "{tally:?}");
    let lost = undelivered(&s.mock, &tally.acked, Duration::from_secs(15)).await;
    assert!(lost.is_empty(), "{} acknowledged notifications lost of {}", lost.len(), tally.acked.len());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let twice: Vec<&String> = tally.acked.iter().filter(|t| s.mock.delivered(t).len() > 1).collect();
    assert!(twice.is_empty(), "a graceful hand-over sent something twice: {twice:?}");
    eprintln!("rolling restart: {} acked, {} wait", tally.acked.len(), tally.waits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_cannot_write_after_the_others_took_over() {
    let s = setup().await;
    let (nodes, conns) = start_nodes(&s, &["n1", "n2", "n3"]).await;
    assert!(settled(&nodes.iter().collect::<Vec<_>>(), SETTLE).await);
    let mut conns = conns.into_iter();
    let (mut c1, _c2, c3) = (
        conns.next().expect("n1"),
        conns.next().expect("n2"),
        conns.next().expect("n3"),
    );
    let devices = register_many(&mut c1, 0, 200).await;
    // Slow answers: requests are in flight when the node is paused.
    for (token, _) in &devices {
        s.mock.delay(token, Duration::from_millis(1500));
    }
    let (before, after) = devices.split_at(100);
    let (a, b) = before.split_at(50);
    let first = tokio::join!(
        publish_on(c1, a.to_vec(), Duration::ZERO),
        publish_on(c3, b.to_vec(), Duration::ZERO)
    );
    // Paused while its first requests are in flight (coalescing window, then
    // the mock's slow answers).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let zombie = &nodes[1];
    zombie.process.signal("STOP");
    let survivors: Vec<&Node> = vec![&nodes[0], &nodes[2]];
    assert!(settled(&survivors, SETTLE).await, "the paused node's shards were not taken over");
    for (token, _) in &devices {
        s.mock.delay(token, Duration::ZERO);
    }
    let ((c1, t1), (c3, t3)) = first;
    let (c, d) = after.split_at(50);
    let second = tokio::join!(
        publish_on(c1, c.to_vec(), Duration::ZERO),
        publish_on(c3, d.to_vec(), Duration::ZERO)
    );
    zombie.process.signal("CONT");
    // It notices at once that its lease ran out, and fences itself.
    assert!(
        eventually(Duration::from_secs(3), || async {
            zombie.process.metric("pushgate_cluster_self_fenced_total").await >= 1.0
        })
        .await,
        "the paused node did not fence itself"
    );
    let mut tally = Tally::default();
    for t in [t1, t3, second.0.1, second.1.1] {
        tally.add(t);
    }
    assert!(tally.others.is_empty(), "non-wait refusals: {:?}", tally.others);
    let lost = undelivered(&s.mock, &tally.acked, Duration::from_secs(15)).await;
    assert!(lost.is_empty(), "{} acknowledged notifications lost of {}", lost.len(), tally.acked.len());
    // Whether its in-flight requests' outcomes came back before or after it
    // fenced itself, none of them was written (refused, or dropped unwritten).
    let refused = zombie.process.metric("pushgate_cluster_fenced_writes_total").await;
    assert!(zombie.process.log().contains("fencing this node"));
    // It joins again as a new incarnation and takes its share back.
    assert!(settled(&nodes.iter().collect::<Vec<_>>(), SETTLE).await, "the node did not rejoin");
    let dups = duplicates(&s.mock, &tally.acked);
    assert!(dups <= 100, "{dups} duplicates, above the in-flight window");
    eprintln!(
        "zombie: {} acked, {} wait, {dups} duplicates, {refused} stale writes refused",
        tally.acked.len(),
        tally.waits
    );
}

/// The fencing itself, made to happen: another holder's record is written
/// over a shard a node owns (as a failover that lost the last claim, or a
/// node that took the shard while this one was cut off, would leave it).
/// Redis refuses the owner's next write; the publish is answered `wait`; the
/// node notices, takes the shard back with a higher epoch, and serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_refuses_a_write_made_under_a_replaced_owner_record() {
    let s = setup().await;
    let (nodes, mut conns) = start_nodes(&s, &["n1", "n2", "n3"]).await;
    assert!(settled(&nodes.iter().collect::<Vec<_>>(), SETTLE).await);
    let token = apns_token(0x42);
    let reply = conns[0]
        .iq(&register_one_step("carol@localhost/r", "apns", &token, None), WAIT)
        .await;
    let node = node_of(&reply).expect("registered");
    let key = format!("pg:{{s{}}}:owner", pushgate::registry::shard_of(&node, 1024));
    let record = s.redis.cli(&["GET", &key]).expect("owner record");
    let holder = record.split('|').next().expect("holder").to_owned();
    let owner = nodes.iter().find(|n| n.id == holder).expect("owner is a node");
    s.redis.cli(&["SET", &key, "intruder|0|999"]);

    let reply = conns[0].iq(&prosody_publish(&node, "localhost", "hi", None), WAIT).await;
    assert_eq!(error_of(&reply).map(|e| e.0), Some("wait".to_owned()), "{}", String::from(&reply));
    assert!(owner.process.metric("pushgate_cluster_fenced_writes_total").await >= 1.0);
    // "intruder" is no member: the node takes the shard back, epoch 1000.
    assert!(
        eventually(SETTLE, || async {
            s.redis.cli(&["GET", &key]).is_some_and(|r| r.starts_with(&format!("{holder}|")) && r.ends_with("|1000"))
        })
        .await,
        "the shard was not taken back"
    );
    let mut accepted = false;
    for _ in 0..100 {
        let reply = conns[0].iq(&prosody_publish(&node, "localhost", "hi", None), WAIT).await;
        if error_of(&reply).is_none() {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(accepted, "the node did not serve the shard again");
    assert!(undelivered(&s.mock, &[token], WAIT).await.is_empty());
}
