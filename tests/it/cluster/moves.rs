//! Work moving between nodes: shared, crashed, restarted, paused, scaled.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_the_work_and_each_publish_is_delivered_once() {
    let s = setup(Mode::Balance, 3).await;
    let nodes = s.start(&["n1", "n2", "n3"]).await;
    let all: Vec<&Node> = nodes.iter().collect();
    for n in &nodes {
        assert_eq!(
            n.process.sessions_up().await,
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
    for (i, (token, node)) in (0..).zip(&devices) {
        let (status, body) = nodes[2]
            .process
            .post_json(
                "/rest/push/unregister-device/push.localhost",
                serde_json::json!({"account": device_account(i), "provider": "apns", "device-token": token}),
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
    if !twice.is_empty() {
        let _ = std::process::Command::new("cp")
            .arg("-r")
            .arg(s._dir.path())
            .arg("/tmp/rolling-debug")
            .status();
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
