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

mod guards;
mod moves;
mod traces;

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
/// The account of device `i` of [`register_many`]: one each, since one
/// account may hold only a few registrations.
fn device_account(i: u16) -> String {
    format!("bob{i}@localhost")
}

async fn register_many(router: &XmppRouter, first: u16, count: u16) -> Vec<(String, String)> {
    let mut devices = Vec::new();
    for i in first..first + count {
        let token = format!("{i:04x}").repeat(16);
        let reply = router
            .must_iq(&register_one_step(
                &format!("{}/r", device_account(i)),
                "apns",
                &token,
                None,
            ))
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
