//! The gateway on Redis when Redis misbehaves: down at start, killed and
//! restarted under load, and a Redis Cluster losing a master and failing over.
//! Every publish answered `result` must reach the provider.

use crate::support::gateway::{GatewayProcess, TestConfig};
use crate::support::harness::{counted_publish, error_of, node_of, register_one_step};
use crate::support::mock_provider::{MockProvider, Recorded};
use crate::support::redis::{NODE_TIMEOUT_MS, RedisCluster, RedisServer, cli};
use crate::support::xmpp_server::{Component, FakeServer};
use crate::support::{SECRET, WAIT, apns_token, eventually};
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn unread(push: &Recorded) -> Option<u32> {
    push.json()["unread-messages"]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
}

fn single_redis_keys(redis: &RedisServer) -> String {
    format!(
        "backend = \"redis\"\nurl = \"{}\"\nconnect_timeout_ms = 300\ncommand_timeout_ms = 700\n",
        redis.url()
    )
}

/// What a load run saw: the highest count accepted per node, and the error
/// conditions of refused publishes.
#[derive(Default)]
struct LoadRecord {
    accepted: HashMap<String, u32>,
    accepted_total: usize,
    refused: HashMap<String, usize>,
}

impl LoadRecord {
    /// Publishes `count` to every device once, in order.
    async fn round(&mut self, conn: &mut Component, devices: &[(String, String)], count: u32) {
        for (_, node) in devices {
            let reply = conn
                .iq(
                    &counted_publish(node, count, "bob@localhost", "hi", ""),
                    WAIT,
                )
                .await;
            match error_of(&reply) {
                None => {
                    self.accepted.insert(node.clone(), count);
                    self.accepted_total += 1;
                }
                Some((kind, condition)) => {
                    *self
                        .refused
                        .entry(format!("{kind}/{condition}"))
                        .or_default() += 1;
                }
            }
        }
    }

    /// Nodes whose highest accepted count never reached the provider (a push
    /// with a higher count, from a publish merged into it, supersedes it).
    fn lost(&self, mock: &MockProvider, devices: &[(String, String)]) -> Vec<String> {
        devices
            .iter()
            .filter(|(token, node)| {
                self.accepted.get(node).is_some_and(|&count| {
                    !mock
                        .delivered(token)
                        .iter()
                        .any(|p| unread(p).is_some_and(|n| n >= count))
                })
            })
            .map(|(_, node)| node.clone())
            .collect()
    }

    fn only_wait_errors(&self) -> bool {
        self.refused.keys().all(|k| k.starts_with("wait/"))
    }
}

async fn register_devices(conn: &mut Component, n: u8, seed: u8) -> Vec<(String, String)> {
    let mut devices = Vec::new();
    for i in 0..n {
        let token = apns_token(seed.wrapping_add(i));
        let reply = conn
            .iq(
                // An account per device: one account may hold only a few.
                &register_one_step(&format!("dave{i}@localhost/r"), "apns", &token, None),
                WAIT,
            )
            .await;
        let node = node_of(&reply)
            .unwrap_or_else(|| panic!("registration failed: {}", String::from(&reply)));
        devices.push((token, node));
    }
    devices
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_is_reported_and_recovered_from() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mock = MockProvider::start(dir.path()).await;
    let server = FakeServer::start(SECRET).await;
    let mut redis = RedisServer::reserve(dir.path(), false);
    let mut config = TestConfig::new(server.port, dir.path()).with_mock_providers(&mock);
    config.store_keys = single_redis_keys(&redis);
    let gateway = GatewayProcess::start(&config, dir.path());
    let mut conn = server.accept(WAIT).await;

    let (status, body) = gateway.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("redis unavailable"),
        "readyz says why: {body}"
    );
    let token = apns_token(0x51);
    let reply = conn
        .iq(
            &register_one_step("erin@localhost/r", "apns", &token, None),
            WAIT,
        )
        .await;
    assert_eq!(
        error_of(&reply),
        Some(("wait".into(), "internal-server-error".into()))
    );
    let reply = conn
        .iq(
            &counted_publish("some-node", 1, "bob@localhost", "hi", ""),
            WAIT,
        )
        .await;
    assert_eq!(
        error_of(&reply),
        Some(("wait".into(), "internal-server-error".into())),
        "a publish while the store is down is a wait error"
    );

    redis.launch();
    let ready = eventually(WAIT, || async { gateway.get("/readyz").await.0 == 200 }).await;
    assert!(ready, "{}", gateway.log());
    let reply = conn
        .iq(
            &register_one_step("erin@localhost/r", "apns", &token, None),
            WAIT,
        )
        .await;
    let node = node_of(&reply).expect("registered once Redis is up");
    let reply = conn
        .iq(&counted_publish(&node, 7, "bob@localhost", "hi", ""), WAIT)
        .await;
    assert_eq!(error_of(&reply), None);
    let delivered = eventually(WAIT, || async {
        mock.delivered(&token).iter().any(|p| unread(p) == Some(7))
    })
    .await;
    assert!(delivered);
    assert!(gateway.log().contains("store reached"), "{}", gateway.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_load_loses_no_acknowledged_publish() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mock = MockProvider::start(dir.path()).await;
    let server = FakeServer::start(SECRET).await;
    let mut redis = RedisServer::start(dir.path());
    let mut config = TestConfig::new(server.port, dir.path()).with_mock_providers(&mock);
    config.store_keys = single_redis_keys(&redis);
    config.delivery = "coalesce_window_ms = 0\nretry_base_ms = 100\n".into();
    let gateway = GatewayProcess::start(&config, dir.path());
    let mut conn = server.accept(WAIT).await;
    let devices = register_devices(&mut conn, 20, 0x60).await;

    let mut record = LoadRecord::default();
    for count in 1..=30 {
        if count == 10 {
            redis.kill9();
        }
        if count == 16 {
            redis.launch();
        }
        record.round(&mut conn, &devices, count).await;
    }
    assert!(record.only_wait_errors(), "refusals: {:?}", record.refused);
    assert!(
        !record.refused.is_empty(),
        "publishes during the outage must be refused, not acknowledged"
    );
    assert!(
        devices
            .iter()
            .all(|(_, n)| record.accepted.get(n) == Some(&30)),
        "publishing resumed after the restart without restarting the gateway"
    );
    let all = eventually(Duration::from_secs(15), || async {
        record.lost(&mock, &devices).is_empty()
    })
    .await;
    assert!(all, "lost: {:?}", record.lost(&mock, &devices));
    eprintln!(
        "redis restart under load: {} publishes accepted, refused {:?}",
        record.accepted_total, record.refused
    );
    // Completions reach Redis too: the outbox empties.
    let drained = eventually(WAIT, || async {
        redis
            .cli(&["--scan", "--pattern", "pg:*:outbox"])
            .is_some_and(|keys| keys.is_empty())
    })
    .await;
    assert!(drained, "outbox keys left in Redis");
    drop(gateway);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_killed_and_failed_over_under_load_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = RedisCluster::start(dir.path());
    let mock = MockProvider::start(dir.path()).await;
    let server = FakeServer::start(SECRET).await;
    let mut config = TestConfig::new(server.port, dir.path()).with_mock_providers(&mock);
    config.store_keys = format!("{}command_timeout_ms = 1000\n", cluster.store_toml());
    config.delivery = "coalesce_window_ms = 0\nretry_base_ms = 100\n".into();
    let gateway = GatewayProcess::start(&config, dir.path());
    let mut conn = server.accept(WAIT).await;
    let devices = register_devices(&mut conn, 30, 0x90).await;
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3);
    for &m in &masters {
        let regs = cli(m, &["--scan", "--pattern", "pg:{s*}:reg"]).unwrap_or_default();
        assert!(!regs.is_empty(), "master {m} holds no registrations");
    }

    let mut record = LoadRecord::default();
    let killed = masters[0];
    let failed_over = masters[1];
    let mut count = 0;
    // Load, kill a master, keep loading through the election.
    let started = Instant::now();
    let election = Duration::from_millis(NODE_TIMEOUT_MS * 4);
    while started.elapsed() < election || count < 10 {
        count += 1;
        if count == 5 {
            cluster.node_mut(killed).kill9();
        }
        record.round(&mut conn, &devices, count).await;
    }
    cluster.wait_healthy(Duration::from_secs(20));
    // A manual failover of another master, under load.
    let replica = cluster.replica_of(failed_over);
    assert_eq!(
        cli(replica, &["CLUSTER", "FAILOVER"]).as_deref(),
        Some("OK")
    );
    for _ in 0..5 {
        count += 1;
        record.round(&mut conn, &devices, count).await;
    }
    // Requests resume without a restart: a last round is accepted everywhere.
    let resumed = eventually(Duration::from_secs(20), || async {
        cluster.masters().contains(&replica)
    })
    .await;
    assert!(resumed, "the replica did not take over");
    count += 1;
    record.round(&mut conn, &devices, count).await;
    assert!(
        devices
            .iter()
            .all(|(_, n)| record.accepted.get(n) == Some(&count)),
        "after the failovers every publish is accepted again; refusals so far: {:?}\n{}",
        record.refused,
        gateway.log()
    );
    assert!(record.only_wait_errors(), "refusals: {:?}", record.refused);
    let all = eventually(Duration::from_secs(15), || async {
        record.lost(&mock, &devices).is_empty()
    })
    .await;
    eprintln!(
        "cluster under failover: {} publishes accepted, refused {:?}",
        record.accepted_total, record.refused
    );
    assert!(
        all,
        "accepted {} publishes, lost the latest of {:?}",
        record.accepted_total,
        record.lost(&mock, &devices)
    );
}
