//! One behaviour suite for every registry backend: embedded, a single Redis and
//! a three-master Redis Cluster (each started by the test on free loopback ports).

use crate::support::redis::{RedisCluster, RedisServer};
use pushgate::config::{StoreBackend, StoreConfig};
use pushgate::registry::{
    DeadToken, DeviceRef, ExportLine, IdentityKind, NewRegistration, OutboxWrite, Registry,
    RegistryError, TransferError, node_of_outbox_key, shard_of,
};

fn new(account: &str, token: &str) -> NewRegistration {
    NewRegistration {
        account: account.into(),
        provider: "apns".into(),
        token: token.into(),
        voip_token: None,
        secret: None,
        device_id: None,
        keep_account: false,
        max_per_account: 0,
    }
}

fn redis_config(url: Option<String>, urls: Vec<String>) -> StoreConfig {
    StoreConfig {
        backend: StoreBackend::Redis,
        cluster: url.is_none(),
        url,
        urls,
        ..StoreConfig::default()
    }
}

async fn connected(config: &StoreConfig) -> Registry {
    let registry = Registry::open(config).expect("open");
    registry.connect().await.expect("connect");
    registry
}

fn put(key: &str, value: &str) -> OutboxWrite {
    OutboxWrite {
        key: key.into(),
        value: Some(value.as_bytes().to_vec()),
    }
}

/// The behaviour every backend must have. `config` is opened, dropped and
/// opened again to check what survives.
async fn shared_suite(config: StoreConfig) {
    let reg = connected(&config).await;
    assert_eq!(reg.count().await.expect("count"), 0, "starts empty");

    // Register is idempotent: same node, creation time kept.
    let a = reg
        .register(new("alice@example.com", "aa"))
        .await
        .expect("register");
    let again = reg
        .register(new("alice@example.com", "aa"))
        .await
        .expect("again");
    assert_eq!(
        (a.node.as_str(), a.created_ms),
        (again.node.as_str(), again.created_ms)
    );
    assert!(again.updated_ms >= a.updated_ms);
    assert_eq!(
        reg.get(&a.node).await.expect("get"),
        Some(std::sync::Arc::new(again.clone()))
    );

    // The secret is kept as a hash and checked.
    let mut with_secret = new("bob@example.org", "bb");
    with_secret.secret = Some("s3".into());
    let b = reg.register(with_secret).await.expect("register b");
    let keys = reg.keys().expect("keys");
    assert!(b.accepts_secret(keys, Some("s3")));
    assert!(!b.accepts_secret(keys, Some("nope")));
    assert!(!b.accepts_secret(keys, None));

    // Counts for metrics.
    for i in 0..40 {
        reg.register(new(&format!("user{i}@example.net"), &format!("t{i}")))
            .await
            .expect("register many");
    }
    assert_eq!(reg.count().await.expect("count"), 42);

    // Dead token with the 410 timestamp guard.
    assert_eq!(
        reg.drop_dead_token(&a.node, "aa", Some(again.updated_ms - 1))
            .await
            .expect("guard"),
        DeadToken::Kept,
        "renewed after the token was reported dead"
    );
    assert_eq!(
        reg.drop_dead_token(&a.node, "other", None)
            .await
            .expect("other token"),
        DeadToken::Kept
    );
    assert_eq!(
        reg.drop_dead_token(&a.node, "aa", Some(again.updated_ms + 1))
            .await
            .expect("remove"),
        DeadToken::Removed
    );
    assert_eq!(reg.get(&a.node).await.expect("get removed"), None);

    // A dead VoIP token is forgotten, the registration kept.
    let mut voip = new("carol@example.com", "cc");
    voip.voip_token = Some("vv".into());
    let c = reg.register(voip).await.expect("register voip");
    assert_eq!(
        reg.drop_dead_token(&c.node, "vv", None)
            .await
            .expect("voip"),
        DeadToken::VoipTokenForgotten
    );
    let kept = reg.get(&c.node).await.expect("get").expect("kept");
    assert_eq!(
        (kept.token.as_str(), kept.voip_token.as_deref()),
        ("cc", None)
    );

    // Unregister by (account, provider, token), through the cache.
    let device = DeviceRef {
        account: "bob@example.org",
        provider: "apns",
        identity: "bb",
        kind: IdentityKind::Token,
    };
    assert!(reg.get(&b.node).await.expect("cached").is_some());
    assert!(reg.unregister(&device).await.expect("unregister"));
    assert!(!reg.unregister(&device).await.expect("twice"));
    assert_eq!(
        reg.get(&b.node).await.expect("get"),
        None,
        "the cache was invalidated"
    );

    // Outbox: add, reschedule (new value), complete (delete), per node and call.
    let call_key = format!("{}#call#01", c.node);
    reg.outbox_apply(vec![put(&c.node, "1"), put(&call_key, "call")].into())
        .await
        .expect("add");
    reg.outbox_apply(vec![put(&c.node, "2")].into())
        .await
        .expect("reschedule");
    reg.outbox_apply(
        vec![OutboxWrite {
            key: call_key.clone(),
            value: None,
        }]
        .into(),
    )
    .await
    .expect("complete");
    let loaded = reg.outbox_load().await.expect("load");
    assert_eq!(loaded, [(c.node.clone(), b"2".to_vec())]);

    // Per shard: what a gateway taking over some shards loads.
    let others: Vec<String> = (0..30).map(|i| format!("node-{i}")).collect();
    let writes: Vec<OutboxWrite> = others
        .iter()
        .map(|n| put(&format!("{n}#call#7"), n))
        .collect();
    reg.outbox_apply(writes.into()).await.expect("add many");
    let shards = reg.shards();
    let shard_of_c = shard_of(&c.node, shards);
    let one_shard = reg.outbox_load_shards(&[shard_of_c]).await.expect("shard");
    assert!(one_shard.contains(&(c.node.clone(), b"2".to_vec())));
    assert!(
        one_shard
            .iter()
            .all(|(k, _)| shard_of(node_of_outbox_key(k), shards) == shard_of_c),
        "only that shard's entries"
    );
    let all_shards: Vec<u32> = (0..shards).collect();
    assert_eq!(
        reg.outbox_load_shards(&all_shards)
            .await
            .expect("all")
            .len(),
        31
    );
    let done: Vec<OutboxWrite> = others
        .iter()
        .map(|n| OutboxWrite {
            key: format!("{n}#call#7"),
            value: None,
        })
        .collect();
    reg.outbox_apply(done.into()).await.expect("complete many");
    assert_eq!(reg.count().await.expect("count"), 41);

    // Everything survives a reopen, and the node derivation is the same.
    drop(reg);
    let reg = connected(&config).await;
    assert_eq!(reg.count().await.expect("count"), 41);
    assert_eq!(reg.outbox_load().await.expect("load").len(), 1);
    let renewed = reg
        .register(new("carol@example.com", "cc"))
        .await
        .expect("renew");
    assert_eq!((renewed.node, renewed.created_ms), (c.node, c.created_ms));

    // Identity kinds are namespaces: a token spelled like a p2 device id
    // derives that device's node, and still neither overwrites nor removes
    // its registration.
    let device = NewRegistration {
        device_id: Some("p2:dev1".into()),
        secret: Some("s3cret".into()),
        ..new("dave@example.com", "dd")
    };
    let d = reg.register(device).await.expect("p2 device");
    assert!(matches!(
        reg.register(new("dave@example.com", "p2:dev1")).await,
        Err(RegistryError::OtherIdentity)
    ));
    let as_token = DeviceRef {
        account: "dave@example.com",
        provider: "apns",
        identity: "p2:dev1",
        kind: IdentityKind::Token,
    };
    assert!(!reg.unregister(&as_token).await.expect("as token"));
    assert_eq!(reg.get(&d.node).await.expect("get").as_deref(), Some(&d));
    let as_device = DeviceRef {
        kind: IdentityKind::DeviceId,
        ..as_token
    };
    assert!(reg.unregister(&as_device).await.expect("as device"));

    // The per-account cap: new registrations beyond it are refused, a
    // renewal of one held is not, and a removal makes room.
    let capped = |token: &str| NewRegistration {
        max_per_account: 3,
        ..new("erin@example.com", token)
    };
    for token in ["e1", "e2", "e3"] {
        reg.register(capped(token)).await.expect("under the cap");
    }
    assert!(matches!(
        reg.register(capped("e4")).await,
        Err(RegistryError::AccountFull { cap: 3 })
    ));
    reg.register(capped("e2")).await.expect("a renewal");
    reg.register(NewRegistration {
        max_per_account: 3,
        ..new("frank@example.com", "f1")
    })
    .await
    .expect("another account");
    let e1 = DeviceRef {
        account: "erin@example.com",
        provider: "apns",
        identity: "e1",
        kind: IdentityKind::Token,
    };
    assert!(reg.unregister(&e1).await.expect("unregister"));
    reg.register(capped("e4")).await.expect("room again");
    assert!(matches!(
        reg.register(capped("e5")).await,
        Err(RegistryError::AccountFull { cap: 3 })
    ));

    // Registrations never published to expire; one published to does not,
    // and registering it again keeps it marked.
    let quiet = reg
        .register(new("gus@example.com", "g1"))
        .await
        .expect("g1");
    let used = reg
        .register(new("gus@example.com", "g2"))
        .await
        .expect("g2");
    assert!(quiet.unpublished && used.unpublished);
    reg.mark_published(&used.node).await.expect("mark");
    let again = reg
        .register(new("gus@example.com", "g2"))
        .await
        .expect("again");
    assert!(!again.unpublished, "a renewal keeps the mark");
    let hour = std::time::Duration::from_secs(3600);
    assert_eq!(
        reg.expire_unpublished(hour).await.expect("expire"),
        0,
        "all younger"
    );
    let expired = reg
        .expire_unpublished(std::time::Duration::ZERO)
        .await
        .expect("expire");
    assert!(expired >= 1, "{expired}");
    assert_eq!(reg.get(&quiet.node).await.expect("get"), None);
    assert!(reg.get(&used.node).await.expect("get").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_on_the_embedded_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    shared_suite(StoreConfig {
        path: dir.path().join("data"),
        ..StoreConfig::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_on_a_single_redis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(dir.path());
    let config = redis_config(Some(redis.url()), Vec::new());
    shared_suite(config.clone()).await;

    // Keys carry the shard as a hash tag.
    let keys = redis.cli(&["--scan", "--pattern", "*"]).expect("scan");
    assert!(!keys.is_empty());
    for key in keys.lines() {
        assert!(
            key.starts_with("pg:{s") || key.starts_with("pg:{meta}:") || key.starts_with("pg:{a"),
            "unexpected key {key}"
        );
    }
    // An account's node set is rebuilt where it is missing (registrations
    // from before the sets existed), and a stale entry does not count.
    let reg = connected(&config).await;
    for token in ["h1", "h2", "h3"] {
        reg.register(new("hal@example.com", token))
            .await
            .expect("register");
    }
    let hal = reg.keys().expect("keys").account_hash("hal@example.com");
    let set = format!("pg:{{a{hal}}}:nodes");
    assert_eq!(
        redis.cli(&["SCARD", &set]).as_deref(),
        Some("3"),
        "hal holds three"
    );
    redis.cli(&["DEL", &set, "pg:{meta}:account_index"]);
    let reg = connected(&config).await;
    assert_eq!(redis.cli(&["SCARD", &set]).as_deref(), Some("3"), "rebuilt");
    let capped = |token: &str| NewRegistration {
        max_per_account: 4,
        ..new("hal@example.com", token)
    };
    redis.cli(&["SADD", &set, "gone-node"]);
    reg.register(capped("h6"))
        .await
        .expect("the stale entry is not counted");
    assert!(matches!(
        reg.register(capped("h7")).await,
        Err(RegistryError::AccountFull { cap: 4 })
    ));
    assert_eq!(
        redis.cli(&["SISMEMBER", &set, "gone-node"]).as_deref(),
        Some("0")
    );
    // The shard count is recorded and a different one refused.
    assert_eq!(
        redis.cli(&["GET", "pg:{meta}:shards"]).as_deref(),
        Some("1024")
    );
    let other = Registry::open(&StoreConfig {
        shards: 512,
        ..config
    })
    .expect("open");
    match other.connect().await {
        Err(e @ RegistryError::ShardMismatch { .. }) => {
            assert!(e.to_string().contains("store.shards = 1024"), "{e}");
        }
        other => panic!("a different shard count was accepted: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_on_a_redis_cluster_spreads_shards_over_every_master() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = RedisCluster::start(dir.path());
    let config = redis_config(None, cluster.urls());
    shared_suite(config.clone()).await;
    // The suite ends by expiring what was never published to: register
    // afresh (30 nodes, over shards all over the slots) to see the spread.
    let reg = connected(&config).await;
    for i in 0..30 {
        reg.register(new(&format!("spread{i}@example.com"), "s"))
            .await
            .expect("register");
    }
    for master in cluster.masters() {
        assert!(
            cluster.dbsize(master) > 0,
            "master {master} holds no keys: shards are not spread"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_from_embedded_imports_into_redis_with_the_same_nodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = Registry::open_embedded(&dir.path().join("data")).expect("embedded");
    let mut nodes = Vec::new();
    for i in 0..25 {
        nodes.push(
            embedded
                .register(new(&format!("u{i}@example.com"), &format!("tok{i}")))
                .await
                .expect("register")
                .node,
        );
    }
    embedded
        .outbox_apply(vec![put(&nodes[0], "pending")].into())
        .await
        .expect("outbox");
    let mut export = Vec::new();
    let summary = embedded.export(&mut export).await.expect("export");
    assert_eq!((summary.registrations, summary.outbox), (25, 1));
    let text = String::from_utf8(export.clone()).expect("utf-8");
    assert_eq!(
        text.lines().count(),
        27,
        "header, 25 registrations, 1 outbox entry"
    );
    assert!(matches!(
        serde_json::from_str::<ExportLine>(text.lines().next().expect("header")),
        Ok(ExportLine::Header { .. })
    ));

    let redis = RedisServer::start(dir.path());
    let target = connected(&redis_config(Some(redis.url()), Vec::new())).await;
    let imported = target.import(export.as_slice()).await.expect("import");
    assert_eq!((imported.registrations, imported.outbox), (25, 1));
    // A fresh process on the target derives the same nodes.
    drop(target);
    let target = connected(&redis_config(Some(redis.url()), Vec::new())).await;
    assert_eq!(target.count().await.expect("count"), 25);
    for node in &nodes {
        assert!(
            target.get(node).await.expect("get").is_some(),
            "node {node} missing"
        );
    }
    let again = target
        .register(new("u3@example.com", "tok3"))
        .await
        .expect("register again");
    assert_eq!(again.node, nodes[3]);
    assert_eq!(target.outbox_load().await.expect("outbox").len(), 1);

    // A store holding registrations under another key refuses the import.
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = Registry::open_embedded(other_dir.path()).expect("other");
    other
        .register(new("x@example.com", "x"))
        .await
        .expect("register");
    match other.import(export.as_slice()).await {
        Err(TransferError::KeyMismatch(1)) => {}
        result => panic!("import into a foreign store: {result:?}"),
    }
    match target.import(&b"{\"registration\":1}\n"[..]).await {
        Err(TransferError::Format { line: 1, .. }) => {}
        result => panic!("a file without a header: {result:?}"),
    }
}

/// `rediss://` with a private CA and a client certificate: the store talks
/// to a Redis that demands both, and one without the client certificate is
/// refused by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_a_private_ca_and_a_client_certificate() {
    use crate::support::pki::{Signer, client_cert};
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pushgate_pki(dir.path());
    let (cert, key) = (dir.path().join("redis.pem"), dir.path().join("redis.key"));
    std::fs::write(&cert, &pki.server_cert_pem).expect("cert");
    std::fs::write(&key, &pki.server_key_pem).expect("key");
    let client = client_cert(
        dir.path(),
        "gateway",
        Signer::TestCa(&pki),
        "gateway",
        (2040, 1, 1),
    );
    let redis = RedisServer::start_tls(
        dir.path(),
        &pki.ca_file,
        &cert,
        &key,
        (&client.cert_file, &client.key_file),
    );
    let url = format!("rediss://localhost:{}", redis.port);
    let config = StoreConfig {
        tls_ca_file: Some(pki.ca_file.clone()),
        tls_cert_file: Some(client.cert_file.clone()),
        tls_key_file: Some(client.key_file.clone()),
        ..redis_config(Some(url.clone()), Vec::new())
    };
    let reg = connected(&config).await;
    let a = reg
        .register(new("tls@example.com", "t1"))
        .await
        .expect("register over TLS");
    assert_eq!(
        reg.get(&a.node).await.expect("get"),
        Some(std::sync::Arc::new(a.clone()))
    );
    assert_eq!(
        redis
            .cli(&["HLEN", &format!("pg:{{s{}}}:reg", shard_of(&a.node, 1024))])
            .as_deref(),
        Some("1")
    );

    let without_client_cert = StoreConfig {
        tls_cert_file: None,
        tls_key_file: None,
        ..config
    };
    let refused = Registry::open(&without_client_cert).expect("open");
    assert!(
        refused.connect().await.is_err(),
        "connected without a client certificate"
    );
}

fn pushgate_pki(dir: &std::path::Path) -> crate::support::pki::TestPki {
    crate::support::pki::TestPki::generate(dir, "https://127.0.0.1:1/token").expect("pki")
}
