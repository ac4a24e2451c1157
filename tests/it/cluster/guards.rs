//! What keeps a cluster honest: fencing in Redis, the servers' stream
//! rules, a Redis Cluster failover, the peers' TLS and secret.

use super::*;

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
            if n.process.sessions_up().await >= 1.0 {
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
    let mut in_before = 0.0;
    for kind in ["command", "publish"] {
        in_before += metric_sum(
            &nodes.iter().collect::<Vec<_>>(),
            &format!("pushgate_cluster_forwarded_in_total{{kind=\"{kind}\"}}"),
        )
        .await;
    }
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
        "pushgate_cluster_forwarded_in_total{kind=\"publish\"}",
    )
    .await;
    assert!(forwarded_in > 0.0, "no publish was forwarded over TLS");
}
