//! A cluster of gateway processes on one Redis (`[cluster]`): work reaching
//! any node is done by its shard's owner, once; nodes die, pause, restart
//! and the acknowledged notifications all arrive.

use crate::support::cluster::{ClusterSpec, LEASE_MS, Node, metric_sum, settled};
use crate::support::harness::{error_of, node_of, prosody_publish, register_one_step};
use crate::support::mock_provider::MockProvider;
use crate::support::redis::{RedisCluster, RedisServer};
use crate::support::xmpp_router::{Mode, XmppRouter};
use crate::support::{SECRET, WAIT, apns_token, eventually};
use std::sync::Arc;
use std::time::Duration;

/// Time for a cluster to settle: leases, claims, outbox loads.
const SETTLE: Duration = Duration::from_secs(20);
/// How long a test publish waits for its answer.
const ANSWER: Duration = Duration::from_secs(3);

/// The Redis the nodes share.
enum Store {
    Single(RedisServer),
    Cluster(RedisCluster),
}

struct Setup {
    _dir: tempfile::TempDir,
    store: Store,
    mock: MockProvider,
    router: Arc<XmppRouter>,
    spec: ClusterSpec,
}

async fn setup(mode: Mode, connections: usize) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(dir.path());
    let mock = MockProvider::start(dir.path()).await;
    let router = Arc::new(XmppRouter::start(mode, SECRET).await);
    let mut spec = ClusterSpec::new(router.port, &redis.url(), &mock, dir.path());
    spec.connections = connections;
    Setup {
        _dir: dir,
        store: Store::Single(redis),
        mock,
        router,
        spec,
    }
}

impl Setup {
    fn redis(&self) -> &RedisServer {
        match &self.store {
            Store::Single(r) => r,
            Store::Cluster(_) => panic!("this test needs a single Redis"),
        }
    }

    /// Starts nodes `ids` and waits until they share every shard and the
    /// server has its configured streams.
    async fn start(&self, ids: &[&str]) -> Vec<Node> {
        let nodes: Vec<Node> = ids.iter().map(|id| Node::start(&self.spec, id)).collect();
        self.settle(&nodes.iter().collect::<Vec<_>>()).await;
        nodes
    }

    async fn settle(&self, nodes: &[&Node]) {
        assert!(
            settled(nodes, SETTLE).await,
            "the shards were not spread over the nodes"
        );
        let want = self.spec.connections;
        assert!(
            eventually(SETTLE, || async { self.router.streams() == want }).await,
            "{} streams, not {want}",
            self.router.streams()
        );
    }
}

/// What publishes came to.
#[derive(Default, Debug)]
struct Tally {
    /// Tokens whose publish was answered `result`.
    acked: Vec<String>,
    /// `wait` errors (the server keeps the registration and drops the push).
    waits: usize,
    /// Any other error: never expected.
    others: Vec<(String, String)>,
    /// No answer (the stream ended under the publish).
    unanswered: usize,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.acked.extend(other.acked);
        self.waits += other.waits;
        self.others.extend(other.others);
        self.unanswered += other.unanswered;
    }
}

/// Publishes once to each device, `pause` apart, through the server.
async fn publish_each(
    router: Arc<XmppRouter>,
    devices: Vec<(String, String)>,
    pause: Duration,
) -> Tally {
    let mut tally = Tally::default();
    for (token, node) in devices {
        match router
            .iq(&prosody_publish(&node, "localhost", "hi", None), ANSWER)
            .await
        {
            None => tally.unanswered += 1,
            Some(reply) => match error_of(&reply) {
                None => tally.acked.push(token),
                Some((kind, _)) if kind == "wait" => tally.waits += 1,
                Some(other) => tally.others.push(other),
            },
        }
        tokio::time::sleep(pause).await;
    }
    tally
}

/// `publish_each` over `groups` at once.
async fn publish_groups(
    router: &Arc<XmppRouter>,
    groups: Vec<Vec<(String, String)>>,
    pause: Duration,
) -> Vec<tokio::task::JoinHandle<Tally>> {
    groups
        .into_iter()
        .map(|g| tokio::spawn(publish_each(router.clone(), g, pause)))
        .collect()
}

async fn join(tasks: Vec<tokio::task::JoinHandle<Tally>>) -> Tally {
    let mut tally = Tally::default();
    for t in tasks {
        tally.add(t.await.expect("publisher"));
    }
    tally
}

/// Registers `count` devices, seeds from `first`.
async fn register_many(router: &XmppRouter, first: u16, count: u16) -> Vec<(String, String)> {
    let mut devices = Vec::new();
    for i in first..first + count {
        let token = format!("{i:04x}").repeat(16);
        let reply = router
            .must_iq(&register_one_step("bob@localhost/r", "apns", &token, None))
            .await;
        devices.push((token, node_of(&reply).expect("registered")));
    }
    devices
}

fn split(devices: Vec<(String, String)>, parts: usize) -> Vec<Vec<(String, String)>> {
    let mut groups = vec![Vec::new(); parts];
    for (i, d) in devices.into_iter().enumerate() {
        groups[i % parts].push(d);
    }
    groups
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
    eventually(deadline, || async {
        tokens.iter().all(|t| !mock.delivered(t).is_empty())
    })
    .await;
    tokens
        .iter()
        .filter(|t| mock.delivered(t).is_empty())
        .cloned()
        .collect()
}

/// The checks every scenario ends with: no refusal but `wait`, nothing
/// acknowledged lost; returns the duplicates.
async fn nothing_lost(s: &Setup, tally: &Tally) -> usize {
    assert!(
        tally.others.is_empty(),
        "non-wait refusals: {:?}",
        tally.others
    );
    let lost = undelivered(&s.mock, &tally.acked, Duration::from_secs(15)).await;
    assert!(
        lost.is_empty(),
        "{} acknowledged notifications lost of {}",
        lost.len(),
        tally.acked.len()
    );
    duplicates(&s.mock, &tally.acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_the_work_and_each_publish_is_delivered_once() {
    let s = setup(Mode::Balance, 3).await;
    let nodes = s.start(&["n1", "n2", "n3"]).await;
    let all: Vec<&Node> = nodes.iter().collect();
    for n in &nodes {
        assert_eq!(
            n.process.metric("pushgate_component_sessions_up").await,
            1.0,
            "each node holds one stream"
        );
    }
    let devices = register_many(&s.router, 0, 24).await;
    let tally = publish_each(s.router.clone(), devices.clone(), Duration::ZERO).await;
    assert_eq!(tally.acked.len(), devices.len(), "{tally:?}");
    assert_eq!(nothing_lost(&s, &tally).await, 0);
    let forwarded = metric_sum(
        &all,
        "pushgate_cluster_forwards_total{kind=\"publish\",outcome=\"ok\"}",
    )
    .await
        + metric_sum(
            &all,
            "pushgate_cluster_forwards_total{kind=\"command\",outcome=\"ok\"}",
        )
        .await;
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
                serde_json::json!({"account": "bob@localhost", "provider": "apns", "device-token": token}),
            )
            .await;
        assert_eq!((status, body.contains("success")), (200, true), "{body}");
        let reply = s
            .router
            .must_iq(&prosody_publish(node, "localhost", "hi", None))
            .await;
        assert_eq!(
            error_of(&reply),
            Some(("cancel".into(), "item-not-found".into()))
        );
    }
    // Readiness shows the members and who owns what.
    let (status, body) = nodes[0].process.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"members\":[\"n1\",\"n2\",\"n3\"]"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_loses_no_acknowledged_notification() {
    let s = setup(Mode::Balance, 3).await;
    let mut nodes = s.start(&["n1", "n2", "n3"]).await;
    let devices = register_many(&s.router, 0, 600).await;
    let tasks = publish_groups(&s.router, split(devices, 3), Duration::from_millis(15)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    nodes[1].process.kill9();
    let killed = std::time::Instant::now();
    let survivors: Vec<&Node> = vec![&nodes[0], &nodes[2]];
    assert!(
        settled(&survivors, SETTLE).await,
        "the dead node's shards were not taken over"
    );
    let takeover = killed.elapsed();
    assert!(
        eventually(SETTLE, || async { s.router.streams() == 3 }).await,
        "the dead node's stream slot was not taken over"
    );
    let streams_back = killed.elapsed();
    let tally = join(tasks).await;
    let limit = Duration::from_millis(LEASE_MS) + Duration::from_secs(3);
    assert!(takeover <= limit, "shard takeover took {takeover:?}");
    assert!(
        streams_back <= limit,
        "stream takeover took {streams_back:?}"
    );
    assert!(tally.acked.len() > 300, "{tally:?}");
    let dups = nothing_lost(&s, &tally).await;
    assert!(dups <= 100, "{dups} duplicates, above the in-flight window");
    eprintln!(
        "kill -9: {} acked, {} wait, {} unanswered, {dups} duplicates, shards back in {takeover:?}, streams in {streams_back:?}",
        tally.acked.len(),
        tally.waits,
        tally.unanswered
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_nothing_and_sends_nothing_twice() {
    let mut s = setup(Mode::Balance, 3).await;
    // The default lease: nothing here may depend on one running out (on a
    // busy machine a 3 s lease can, and that is the crash path, not this one).
    s.spec.lease = (10_000, 2_000, 7_000);
    let mut nodes = s.start(&["n1", "n2", "n3"]).await;
    let devices = register_many(&s.router, 0, 450).await;
    let mut groups = split(devices, 3).into_iter();
    let mut tally = Tally::default();
    for i in 0..3 {
        let group = groups.next().expect("group");
        let publisher = tokio::spawn(publish_each(
            s.router.clone(),
            group,
            Duration::from_millis(10),
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let exit = nodes[i].process.terminate(WAIT);
        assert!(
            exit.is_some_and(|e| e.success()),
            "node {i} did not stop cleanly"
        );
        nodes[i].restart();
        s.settle(&nodes.iter().collect::<Vec<_>>()).await;
        tally.add(publisher.await.expect("publisher"));
    }
    let dups = nothing_lost(&s, &tally).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let twice: Vec<&String> = tally
        .acked
        .iter()
        .filter(|t| s.mock.delivered(t).len() > 1)
        .collect();
    for n in &nodes {
        assert_eq!(
            n.process.metric("pushgate_cluster_self_fenced_total").await,
            0.0,
            "{} fenced itself",
            n.id
        );
    }
    assert!(
        twice.is_empty(),
        "a graceful hand-over sent {dups} twice: {twice:?}"
    );
    eprintln!(
        "rolling restart: {} acked, {} wait, {} unanswered",
        tally.acked.len(),
        tally.waits,
        tally.unanswered
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_stops_and_rejoins_and_nothing_is_lost() {
    let s = setup(Mode::Balance, 3).await;
    let nodes = s.start(&["n1", "n2", "n3"]).await;
    let devices = register_many(&s.router, 0, 200).await;
    // Slow answers: requests are in flight when the node is paused.
    for (token, _) in &devices {
        s.mock.delay(token, Duration::from_millis(1500));
    }
    let (before, after) = devices.split_at(100);
    let first =
        join(publish_groups(&s.router, split(before.to_vec(), 2), Duration::ZERO).await).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let zombie = &nodes[1];
    zombie.process.signal("STOP");
    let survivors: Vec<&Node> = vec![&nodes[0], &nodes[2]];
    assert!(
        settled(&survivors, SETTLE).await,
        "the paused node's shards were not taken over"
    );
    for (token, _) in &devices {
        s.mock.delay(token, Duration::ZERO);
    }
    // Its stream is still open (paused, not dead): publishes sent there are
    // not answered; the others are.
    let second =
        join(publish_groups(&s.router, split(after.to_vec(), 2), Duration::ZERO).await).await;
    zombie.process.signal("CONT");
    assert!(
        eventually(Duration::from_secs(3), || async {
            zombie
                .process
                .metric("pushgate_cluster_self_fenced_total")
                .await
                >= 1.0
        })
        .await,
        "the paused node did not fence itself"
    );
    let mut tally = first;
    tally.add(second);
    let dups = nothing_lost(&s, &tally).await;
    assert!(dups <= 100, "{dups} duplicates, above the in-flight window");
    s.settle(&nodes.iter().collect::<Vec<_>>()).await;
    let refused = zombie
        .process
        .metric("pushgate_cluster_fenced_writes_total")
        .await;
    eprintln!(
        "paused node: {} acked, {} wait, {} unanswered, {dups} duplicates, {refused} stale writes refused",
        tally.acked.len(),
        tally.waits,
        tally.unanswered
    );
}

/// The fencing itself, made to happen: another holder's record is written
/// over a shard a node owns (as a failover that lost the last claim, or a
/// node that took the shard while this one was cut off, would leave it).
/// Redis refuses the owner's next write; the publish is answered `wait`; the
/// node notices, takes the shard back with a higher epoch, and serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_refuses_a_write_made_under_a_replaced_owner_record() {
    let s = setup(Mode::Balance, 1).await;
    let nodes = s.start(&["n1", "n2", "n3"]).await;
    let token = apns_token(0x42);
    let reply = s
        .router
        .must_iq(&register_one_step(
            "carol@localhost/r",
            "apns",
            &token,
            None,
        ))
        .await;
    let node = node_of(&reply).expect("registered");
    let key = format!(
        "pg:{{s{}}}:owner",
        pushgate::registry::shard_of(&node, 1024)
    );
    let record = s.redis().cli(&["GET", &key]).expect("owner record");
    let holder = record.split('|').next().expect("holder").to_owned();
    let owner = nodes
        .iter()
        .find(|n| n.id == holder)
        .expect("owner is a node");
    s.redis().cli(&["SET", &key, "intruder|0|999"]);

    let reply = s
        .router
        .must_iq(&prosody_publish(&node, "localhost", "hi", None))
        .await;
    assert_eq!(
        error_of(&reply).map(|e| e.0),
        Some("wait".to_owned()),
        "{}",
        String::from(&reply)
    );
    assert!(
        owner
            .process
            .metric("pushgate_cluster_fenced_writes_total")
            .await
            >= 1.0
    );
    // "intruder" is no member: the node takes the shard back, epoch 1000.
    let retaken = format!("{holder}|");
    assert!(
        eventually(SETTLE, || async {
            s.redis()
                .cli(&["GET", &key])
                .is_some_and(|r| r.starts_with(&retaken) && r.ends_with("|1000"))
        })
        .await,
        "the shard was not taken back"
    );
    let mut accepted = false;
    for _ in 0..100 {
        let reply = s
            .router
            .must_iq(&prosody_publish(&node, "localhost", "hi", None))
            .await;
        if error_of(&reply).is_none() {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(accepted, "the node did not serve the shard again");
    assert!(undelivered(&s.mock, &[token], WAIT).await.is_empty());
}

/// Each kind of server keeps exactly its configured streams while the
/// holder of one dies: the cluster never opens a second stream to Prosody
/// (so never draws a `<conflict/>`), and takes a dead holder's slot over
/// within the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_server_sees_its_configured_streams() {
    for (mode, connections) in [(Mode::KickNew, 1), (Mode::KickOld, 1), (Mode::Balance, 2)] {
        let s = setup(mode, connections).await;
        let mut nodes = s.start(&["n1", "n2", "n3"]).await;
        assert_eq!(s.router.most_streams(), connections, "{mode:?}");
        // Kill a holder of a stream.
        let mut holder = None;
        for (i, n) in nodes.iter().enumerate() {
            if n.process.metric("pushgate_component_sessions_up").await >= 1.0 {
                holder = Some(i);
            }
        }
        let holder = holder.expect("a node holds a stream");
        let opened = s.router.opened();
        nodes[holder].process.kill9();
        let killed = std::time::Instant::now();
        assert!(
            eventually(SETTLE, || async {
                s.router.opened() > opened && s.router.streams() == connections
            })
            .await,
            "{mode:?}: the slot was not taken over"
        );
        let back = killed.elapsed();
        assert!(
            back <= Duration::from_millis(LEASE_MS) + Duration::from_secs(3),
            "{mode:?}: {back:?}"
        );
        let reply = s.router.must_iq(&crate::support::harness::ping()).await;
        assert_eq!(reply.attr("type"), Some("result"));
        assert_eq!(
            s.router.most_streams(),
            connections,
            "{mode:?}: more streams than configured"
        );
        assert_eq!(
            s.router.conflicts(),
            0,
            "{mode:?}: the cluster fought over a slot"
        );
        eprintln!("{mode:?}: {connections} stream(s), slot back in {back:?}");
    }
}

/// Shards `nodes` have taken so far.
async fn acquired(nodes: &[&Node]) -> f64 {
    metric_sum(nodes, "pushgate_cluster_handoffs_total{kind=\"acquired\"}").await
}

/// Scaling out and in under load: nothing lost, and the shards that move are
/// close to the fewest that must.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_three_to_five_to_two_moves_about_the_minimum() {
    let s = setup(Mode::Balance, 2).await;
    let mut nodes = s.start(&["n1", "n2", "n3"]).await;
    let devices = register_many(&s.router, 0, 900).await;
    let mut phases = split(devices, 3).into_iter();
    let pause = Duration::from_millis(5);

    let before = acquired(&nodes.iter().collect::<Vec<_>>()).await;
    let load = publish_groups(&s.router, vec![phases.next().expect("load")], pause).await;
    nodes.push(Node::start(&s.spec, "n4"));
    nodes.push(Node::start(&s.spec, "n5"));
    s.settle(&nodes.iter().collect::<Vec<_>>()).await;
    let mut tally = join(load).await;
    let out = acquired(&nodes.iter().collect::<Vec<_>>()).await - before;
    // The fewest: 3 -> 4 -> 5 moves 1024/4 + 1024/5 (a few move twice).
    let least_out = 1024.0 / 4.0 + 1024.0 / 5.0;
    assert!(
        out <= least_out * 1.3,
        "3 -> 5 moved {out} shards (least {least_out})"
    );

    let load = publish_groups(&s.router, vec![phases.next().expect("load")], pause).await;
    let survivors_before = acquired(&[&nodes[0], &nodes[1]]).await;
    for node in nodes.iter_mut().skip(2) {
        node.process.signal("TERM");
    }
    for node in nodes.iter_mut().skip(2) {
        assert!(
            node.process.terminate(WAIT).is_some_and(|e| e.success()),
            "{} did not stop cleanly",
            node.id
        );
    }
    let survivors: Vec<&Node> = vec![&nodes[0], &nodes[1]];
    s.settle(&survivors).await;
    tally.add(join(load).await);
    let back = acquired(&survivors).await - survivors_before;
    // The fewest: whatever the three leaving nodes held, about 3/5 of all.
    let least_in = 1024.0 * 3.0 / 5.0;
    assert!(
        back <= least_in * 1.3,
        "5 -> 2 moved {back} shards (least {least_in})"
    );

    tally.add(
        publish_each(
            s.router.clone(),
            phases.next().expect("load"),
            Duration::ZERO,
        )
        .await,
    );
    let dups = nothing_lost(&s, &tally).await;
    eprintln!(
        "scale: 3->5 moved {out} (least {least_out}), 5->2 moved {back} (least {least_in}); {} acked, {} wait, {} unanswered, {dups} duplicates",
        tally.acked.len(),
        tally.waits,
        tally.unanswered
    );
}

/// The cluster on a Redis Cluster (3 masters with replicas) while the master
/// holding the member list fails over under load: nothing acknowledged is
/// lost, every refusal is `wait`, and the nodes settle again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_a_master_failover_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisCluster::start(dir.path());
    let mock = MockProvider::start(dir.path()).await;
    let router = Arc::new(XmppRouter::start(Mode::Balance, SECRET).await);
    let mut spec = ClusterSpec::new(router.port, "redis://unused", &mock, dir.path());
    spec.store_keys = redis.store_toml();
    spec.connections = 2;
    let s = Setup {
        _dir: dir,
        store: Store::Cluster(redis),
        mock,
        router,
        spec,
    };
    let Store::Cluster(redis) = &s.store else {
        unreachable!("set just above")
    };
    let nodes = s.start(&["n1", "n2", "n3"]).await;
    let devices = register_many(&s.router, 0, 300).await;
    let load = publish_groups(&s.router, split(devices, 2), Duration::from_millis(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let master = redis
        .masters()
        .into_iter()
        .find(|&m| {
            crate::support::redis::cli(m, &["EXISTS", "pg:{m}:members"]).as_deref() == Some("1")
        })
        .expect("the master holding the member list");
    let replica = redis.replica_of(master);
    assert_eq!(
        crate::support::redis::cli(replica, &["CLUSTER", "FAILOVER"]).as_deref(),
        Some("OK")
    );
    assert!(
        eventually(SETTLE, || async { redis.masters().contains(&replica) }).await,
        "the replica was not promoted"
    );
    let tally = join(load).await;
    s.settle(&nodes.iter().collect::<Vec<_>>()).await;
    let dups = nothing_lost(&s, &tally).await;
    assert!(dups <= 100, "{dups} duplicates");
    eprintln!(
        "redis cluster failover: {} acked, {} wait, {} unanswered, {dups} duplicates",
        tally.acked.len(),
        tally.waits,
        tally.unanswered
    );
}

/// Peers talk over mutual TLS, and a call without the shared secret is
/// refused by the callee (over TLS, so it is the secret that fails): the
/// publish is answered `wait`; with the secret right, it is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_use_mutual_tls_and_refuse_calls_without_the_secret() {
    let mut s = setup(Mode::Balance, 2).await;
    let pki = &s.mock.pki;
    let dir = s.spec.dir.clone();
    let (cert, key) = (dir.join("peer.pem"), dir.join("peer.key"));
    std::fs::write(&cert, &pki.server_cert_pem).expect("cert");
    std::fs::write(&key, &pki.server_key_pem).expect("key");
    s.spec.cluster_keys = format!(
        "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        pki.ca_file.display(),
        cert.display(),
        key.display()
    );
    let mut nodes = s.start(&["n1", "n2"]).await;
    let secret = crate::support::cluster::CLUSTER_SECRET;
    let wrong = "not-the-cluster-secret-at-all-0000";
    nodes[1].restart_with(
        &format!("secret = \"{secret}\""),
        &format!("secret = \"{wrong}\""),
    );
    s.settle(&nodes.iter().collect::<Vec<_>>()).await;
    // Registrations land on both owners; about half are forwarded, and refused.
    let mut refused = 0;
    for i in 0..20u16 {
        let token = format!("{i:04x}").repeat(16);
        let reply = s
            .router
            .must_iq(&register_one_step("dan@localhost/r", "apns", &token, None))
            .await;
        match error_of(&reply) {
            None => {}
            Some((kind, condition)) => {
                assert_eq!(
                    (kind.as_str(), condition.as_str()),
                    ("wait", "service-unavailable")
                );
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "no registration needed a forward");
    let in_before = metric_sum(
        &nodes.iter().collect::<Vec<_>>(),
        "pushgate_cluster_forwarded_in_total{kind=\"stanza\"}",
    )
    .await;
    assert_eq!(
        in_before, 0.0,
        "a call without the secret reached a handler"
    );
    let logs = format!("{}{}", nodes[0].process.log(), nodes[1].process.log());
    assert!(
        logs.contains("wrong cluster secret"),
        "the refusal is not the secret's"
    );

    nodes[1].restart_with(
        &format!("secret = \"{wrong}\""),
        &format!("secret = \"{secret}\""),
    );
    s.settle(&nodes.iter().collect::<Vec<_>>()).await;
    let devices = register_many(&s.router, 100, 20).await;
    let tally = publish_each(s.router.clone(), devices, Duration::ZERO).await;
    assert_eq!(tally.acked.len(), 20, "{tally:?}");
    assert_eq!(nothing_lost(&s, &tally).await, 0);
    let forwarded_in = metric_sum(
        &nodes.iter().collect::<Vec<_>>(),
        "pushgate_cluster_forwarded_in_total{kind=\"stanza\"}",
    )
    .await;
    assert!(forwarded_in > 0.0, "nothing was forwarded over TLS");
}
