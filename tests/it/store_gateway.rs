//! The gateway binary on a Redis store: moving an install there with the
//! `store export` / `store import` commands, and what a publish costs in Redis
//! commands, measured with `INFO commandstats`.

use crate::support::gateway::{GatewayProcess, TestConfig, binary};
use crate::support::harness::{
    assert_result, counted_publish, error_of, node_of, register_one_step,
};
use crate::support::mock_provider::MockProvider;
use crate::support::redis::RedisServer;
use crate::support::xmpp_server::FakeServer;
use crate::support::{SECRET, WAIT, apns_token, eventually};
use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

/// Runs `pushgate --config DIR/pushgate.toml store VERB FLAG FILE`, asserts it
/// succeeded, and returns what it printed on standard error.
fn store_command(dir: &std::path::Path, verb: &str, flag: &str, file: &std::path::Path) -> String {
    let out = Command::new(binary())
        .arg("--config")
        .arg(dir.join("pushgate.toml"))
        .args(["store", verb, flag])
        .arg(file)
        .output()
        .expect("run the store command");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "store {verb}: {stderr}");
    stderr
}

/// `pushgate store export` on a stopped single-node install, `store import`
/// into Redis, then the gateway on Redis serves the nodes the server already
/// holds: the migration path from one node to a cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_export_and_import_move_an_install_to_redis() {
    let embedded_dir = tempfile::tempdir().expect("tempdir");
    let redis_dir = tempfile::tempdir().expect("tempdir");
    let mock = MockProvider::start(embedded_dir.path()).await;
    let server = FakeServer::start(SECRET).await;
    let config = TestConfig::new(server.port, embedded_dir.path()).with_mock_providers(&mock);
    let mut gateway = GatewayProcess::start(&config, embedded_dir.path());
    let mut conn = server.accept(WAIT).await;
    let mut devices = Vec::new();
    for i in 0..5u8 {
        let token = apns_token(0xa0 + i);
        let reply = conn
            .iq(
                &register_one_step("frank@localhost/r", "apns", &token, None),
                WAIT,
            )
            .await;
        devices.push((token, node_of(&reply).expect("registered")));
    }
    assert!(gateway.terminate(WAIT).is_some_and(|s| s.success()));
    drop(conn);

    let export = embedded_dir.path().join("export.jsonl");
    let said = store_command(embedded_dir.path(), "export", "--output", &export);
    assert!(said.contains("exported 5 registrations"), "{said}");
    let mode = std::fs::metadata(&export)
        .expect("export file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the export holds the deployment key");

    let redis = RedisServer::start(redis_dir.path());
    let mut redis_config =
        TestConfig::new(server.port, redis_dir.path()).with_mock_providers(&mock);
    redis_config.store_keys = format!("backend = \"redis\"\nurl = \"{}\"\n", redis.url());
    std::fs::write(
        redis_dir.path().join("pushgate.toml"),
        redis_config.to_toml(),
    )
    .expect("config");
    let said = store_command(redis_dir.path(), "import", "--input", &export);
    assert!(said.contains("imported 5 registrations"), "{said}");

    let gateway = GatewayProcess::start(&redis_config, redis_dir.path());
    let mut conn = server.accept(WAIT).await;
    for (_, node) in &devices {
        assert_result(
            &conn
                .iq(&counted_publish(node, 4, "bob@localhost", "hi", ""), WAIT)
                .await,
        );
    }
    let delivered = eventually(WAIT, || async {
        devices
            .iter()
            .all(|(token, _)| mock.delivered(token).len() == 1)
    })
    .await;
    assert!(delivered, "{}", gateway.log());
}

/// `INFO commandstats` as (command, calls).
fn command_calls(redis: &RedisServer) -> std::collections::BTreeMap<String, u64> {
    let info = redis.cli(&["INFO", "commandstats"]).expect("commandstats");
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// The hot path's cost on Redis, measured with `INFO commandstats`: a burst of
/// publishes for cached registrations reads nothing, and writes the outbox in
/// fewer transactions than there are publishes (group commit, completions
/// batched). Prints the figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_for_cached_registrations_cost_batched_outbox_writes_only() {
    const DEVICES: u32 = 200;
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(dir.path());
    let mock = MockProvider::start(dir.path()).await;
    let server = FakeServer::start(SECRET).await;
    let mut config = TestConfig::new(server.port, dir.path()).with_mock_providers(&mock);
    config.store_keys = format!("backend = \"redis\"\nurl = \"{}\"\n", redis.url());
    config.delivery = "coalesce_window_ms = 0\n".into();
    let gateway = GatewayProcess::start(&config, dir.path());
    let mut conn = server.accept(WAIT).await;
    let mut nodes = Vec::new();
    for i in 0..DEVICES {
        let token = format!("{}{i:04x}", &apns_token(0xc0)[..60]);
        let reply = conn
            .iq(
                // An account per device: one account may hold only a few.
                &register_one_step(&format!("gina{i}@localhost/r"), "apns", &token, None),
                WAIT,
            )
            .await;
        nodes.push(node_of(&reply).expect("registered"));
    }
    // Warm the cache: a first publish each, which also marks each
    // registration published (a write, once in its life, whose value the
    // cache keeps unless another write overtook it), then a second, which
    // reads those it did not keep.
    for count in [1, 2] {
        for node in &nodes {
            let reply = conn
                .iq(
                    &counted_publish(node, count, "bob@localhost", "hi", ""),
                    WAIT,
                )
                .await;
            assert_eq!(error_of(&reply), None);
        }
        let warm = eventually(WAIT, || async {
            mock.pushes().len() == count as usize * DEVICES as usize
        })
        .await;
        assert!(warm);
    }
    let outbox_empty = || async {
        redis
            .cli(&["--scan", "--pattern", "pg:*:outbox"])
            .is_some_and(|k| k.is_empty())
    };
    assert!(eventually(WAIT, outbox_empty).await);
    assert_eq!(redis.cli(&["CONFIG", "RESETSTAT"]).as_deref(), Some("OK"));

    // The burst: every publish written before any reply is read.
    for node in &nodes {
        conn.write(&counted_publish(node, 3, "bob@localhost", "hi", ""))
            .await;
    }
    let mut results = 0;
    while results < DEVICES {
        let reply = conn.next_stanza(WAIT).await.expect("a reply");
        assert_eq!(error_of(&reply), None, "{}", String::from(&reply));
        results += 1;
    }
    let delivered = eventually(WAIT, || async {
        mock.pushes().len() == 3 * DEVICES as usize
    })
    .await;
    assert!(delivered);
    assert!(
        eventually(WAIT, outbox_empty).await,
        "completions reach Redis"
    );
    let calls = command_calls(&redis);
    let exec = calls.get("exec").copied().unwrap_or(0);
    eprintln!(
        "{DEVICES} publishes for cached registrations: {calls:?} ({:.2} transactions per publish)",
        exec as f64 / f64::from(DEVICES)
    );
    // `scan`, `info` and `config|resetstat` are this test's own.
    let ours = ["scan", "info", "config|resetstat"];
    let outbox = ["multi", "exec", "hset", "hdel"];
    let unexpected: Vec<&String> = calls
        .keys()
        .filter(|c| !ours.contains(&c.as_str()) && !outbox.contains(&c.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "commands beyond the outbox writes: {calls:?}"
    );
    assert!(
        exec < u64::from(DEVICES),
        "{exec} transactions for {DEVICES} publishes: the group commit does not batch"
    );
    drop(gateway);
}
