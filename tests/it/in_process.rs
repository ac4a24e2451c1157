//! The whole gateway in this process: several side by side, and one whose
//! clock is paused once the stanzas are exchanged, so what used to take
//! seconds of sleeping (coalescing windows, Retry-After, backoff) takes none
//! and the assertions are on exact times and metric values.

use crate::support::gateway::TestConfig;
use crate::support::harness::{assert_result, ejabberd_publish, register_node};
use crate::support::in_process::{
    InProcess, Reply, ScriptedClient, launch_scripted, on_test_runtime, spawn_here,
};
use crate::support::xmpp_server::FakeServer;
use crate::support::{SECRET, WAIT, apns_token};
use pushgate::providers::ErrorClass;
use std::time::Duration;
use tokio::time::{Instant, sleep_until};

/// Lets every task that is ready run (a spawned request, a flush) without
/// moving the clock.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[test]
fn a_burst_is_one_push_after_the_window_and_retry_after_is_honoured_to_the_millisecond() {
    on_test_runtime(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = FakeServer::start(SECRET).await;
        let mut config = TestConfig::new(server.port, dir.path()).with_scripted_providers();
        config.delivery =
            "coalesce_window_ms = 1000\nretry_base_ms = 100\nretry_max_ms = 400\n".into();
        let apns = ScriptedClient::default();
        let (launch, _http) = launch_scripted(&config, &apns);
        let metrics = launch.metrics();
        let stop = spawn_here(launch);
        let mut conn = server.accept(WAIT).await;

        let token = apns_token(0x70);
        let node = register_node(&mut conn, "heidi@localhost/r", "apns", &token).await;
        apns.script(
            &token,
            [Reply::Refuse {
                status: 503,
                reason: "ServiceUnavailable",
                class: ErrorClass::Retry,
                retry_after: Some(Duration::from_secs(30)),
            }],
        );
        let accepted = Instant::now();
        for _ in 0..6 {
            assert_result(&conn.iq(&ejabberd_publish(&node, "localhost"), WAIT).await);
        }
        tokio::time::pause();
        // The window (from the first publish) has not closed in real time.
        assert!(Instant::now() - accepted < Duration::from_millis(900));

        // The burst waits out the coalescing window, then goes as one push.
        sleep_until(accepted + Duration::from_millis(990)).await;
        settle().await;
        assert!(apns.sent().is_empty(), "nothing before the window closes");
        sleep_until(accepted + Duration::from_millis(1600)).await;
        settle().await;
        let sent = apns.sent_to(&token);
        assert_eq!(sent.len(), 1, "one push for the burst");
        assert_eq!(metrics.coalesced.get(&["apns"]), 5);

        // Refused with Retry-After: 30 s, far above the 100-400 ms backoff.
        sleep_until(sent[0].at + Duration::from_millis(29_999)).await;
        settle().await;
        assert_eq!(apns.sent_to(&token).len(), 1, "no retry before Retry-After");
        sleep_until(sent[0].at + Duration::from_millis(30_001)).await;
        settle().await;
        let sent = apns.sent_to(&token);
        assert_eq!(sent.len(), 2, "retried once Retry-After passed");
        // Never sooner; a timer tick (1 ms) later at most.
        let gap = sent[1].at - sent[0].at;
        assert!(
            (Duration::from_secs(30)..=Duration::from_millis(30_002)).contains(&gap),
            "{gap:?}"
        );
        assert_eq!(metrics.retries.get(&["apns", "ServiceUnavailable"]), 1);
        assert_eq!(metrics.notifications.get(&["apns", "delivered"]), 6);
        assert_eq!(metrics.publishes.get(&["accepted"]), 6);
        // An hour later nothing more was sent.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        settle().await;
        assert_eq!(apns.sent().len(), 2);
        tokio::time::resume();
        let _ = stop.send(());
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_run_side_by_side_in_one_process() {
    let apns = ScriptedClient::default();
    let mut running = Vec::new();
    for seed in [0x80u8, 0x81] {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = FakeServer::start(SECRET).await;
        let config = TestConfig::new(server.port, dir.path()).with_scripted_providers();
        let (launch, http) = launch_scripted(&config, &apns);
        let gateway = InProcess::start(launch, http);
        let mut conn = server.accept(WAIT).await;
        let token = apns_token(seed);
        let node = register_node(&mut conn, "ivan@localhost/r", "apns", &token).await;
        assert_result(&conn.iq(&ejabberd_publish(&node, "localhost"), WAIT).await);
        running.push((gateway, token, conn, server, dir));
    }
    for (gateway, token, _, _, _) in &running {
        let delivered = crate::support::eventually(WAIT, || async {
            gateway.metrics.notifications.get(&["apns", "delivered"]) == 1
        })
        .await;
        assert!(delivered, "each gateway delivers its own push");
        assert_eq!(apns.sent_to(token).len(), 1);
        assert_eq!(gateway.metrics.publishes.get(&["accepted"]), 1);
        let status = reqwest::get(format!("{}/healthz", gateway.http))
            .await
            .map(|r| r.status().as_u16());
        assert_eq!(status.ok(), Some(200), "each serves HTTP on its own port");
    }
    for (gateway, _, mut conn, _, _) in running {
        assert_eq!(gateway.stop(), Ok(()));
        assert!(
            conn.wait_end(WAIT).await,
            "the stream was closed on shutdown"
        );
    }
}

#[test]
fn a_client_that_panics_or_never_answers_does_not_strand_the_push() {
    on_test_runtime(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = FakeServer::start(SECRET).await;
        let mut config = TestConfig::new(server.port, dir.path()).with_scripted_providers();
        config.delivery =
            "coalesce_window_ms = 0\nretry_base_ms = 100\nretry_max_ms = 400\n".into();
        // An attempt may take 3 × 2 s + 5 s = 11 s at most.
        config.provider_keys = "request_timeout_s = 2\n".into();
        let apns = ScriptedClient::default();
        let (launch, _http) = launch_scripted(&config, &apns);
        let metrics = launch.metrics();
        let stop = spawn_here(launch);
        let mut conn = server.accept(WAIT).await;
        let (panics, hangs) = (apns_token(0x90), apns_token(0x91));
        apns.script(&panics, [Reply::Panic]);
        apns.script(&hangs, [Reply::Hang]);
        for token in [&panics, &hangs] {
            let node = register_node(&mut conn, "judy@localhost/r", "apns", token).await;
            assert_result(&conn.iq(&ejabberd_publish(&node, "localhost"), WAIT).await);
        }
        tokio::time::pause();
        let start = Instant::now();
        sleep_until(start + Duration::from_secs(30)).await;
        settle().await;
        for token in [&panics, &hangs] {
            assert_eq!(apns.sent_to(token).len(), 2, "tried, then retried");
        }
        let hang = apns.sent_to(&hangs);
        assert!(
            hang[1].at - hang[0].at >= Duration::from_secs(11),
            "after the deadline"
        );
        assert_eq!(metrics.notifications.get(&["apns", "delivered"]), 2);
        assert_eq!(
            metrics.in_flight.get(&["apns"]),
            0,
            "nothing left in flight"
        );
        tokio::time::resume();
        let _ = stop.send(());
    });
}
