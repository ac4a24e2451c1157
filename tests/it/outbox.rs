//! The durable outbox and what a push carries: kill -9 with pending and
//! retrying notifications, coalescing of ejabberd's bursts, the payload keys
//! Tigase apps read, and trimming to the providers' size limits.

use crate::delivery::settled;
use crate::support::gateway::{GatewayProcess, TestConfig};
use crate::support::harness::{
    Harness, assert_result, counted_publish, node_of, register_one_step,
};
use crate::support::mock_provider::{Answer, MockProvider};
use crate::support::xmpp_server::FakeServer;
use crate::support::{SECRET, WAIT, apns_token, eventually};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The unread count a delivered push carries (APNs number, FCM string).
fn unread(push: &crate::support::mock_provider::Recorded) -> Option<u64> {
    let body = push.json();
    body["unread-messages"].as_u64().or_else(|| {
        body["message"]["data"]["unread-messages"]
            .as_str()
            .and_then(|v| v.parse().ok())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_pending_and_retrying_notifications_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mock = MockProvider::start(dir.path()).await;
    let server = FakeServer::start(SECRET).await;
    let mut config = TestConfig::new(server.port, dir.path()).with_mock_providers(&mock);
    config.delivery = "retry_base_ms = 100\nretry_max_ms = 400\ncoalesce_window_ms = 0\n".into();
    config.provider_keys = "request_timeout_s = 60\n".into();
    let mut gateway = GatewayProcess::start(&config, dir.path());
    let mut conn = server.accept(WAIT).await;

    // 24 devices: a third answered 503 with Retry-After (scheduled for retry),
    // a third so slow that the requests are in flight at the kill, a third fine.
    let mut devices = Vec::new();
    for i in 0..24u8 {
        let (provider, token) = if i % 4 == 3 {
            ("fcm", format!("fcm-kill-{i}"))
        } else {
            ("apns", apns_token(0x30 + i))
        };
        match i % 3 {
            0 => mock.script(
                &token,
                std::iter::repeat_n(
                    Answer::Status(503, json!({"reason": "ServiceUnavailable"}), Some(2)),
                    100,
                ),
            ),
            1 => mock.delay(&token, Duration::from_secs(60)),
            _ => {}
        }
        let reply = conn
            .iq(
                // An account per device: one account may hold only a few.
                &register_one_step(&format!("grace{i}@localhost/r"), provider, &token, None),
                WAIT,
            )
            .await;
        let node = node_of(&reply).expect("registered");
        devices.push((i, token, node));
    }
    for count in 1..=3 {
        for (_, _, node) in &devices {
            let reply = conn
                .iq(
                    &counted_publish(node, count, "bob@localhost", "hi", ""),
                    WAIT,
                )
                .await;
            assert_result(&reply);
        }
    }
    // The failing ones have failed once, the slow ones are in flight.
    let failing_seen = eventually(WAIT, || async {
        devices
            .iter()
            .filter(|(i, _, _)| i % 3 == 0)
            .all(|(_, t, _)| !mock.attempts(t).is_empty())
    })
    .await;
    assert!(failing_seen);
    assert!(
        eventually(WAIT, || async {
            gateway
                .metric("pushgate_in_flight{provider=\"apns\"}")
                .await
                >= 1.0
        })
        .await
    );
    gateway.kill9();

    // The providers recover; a new process on the same store takes over.
    for (_, token, _) in &devices {
        mock.clear_script(token);
        mock.delay(token, Duration::ZERO);
    }
    let restarted = Instant::now();
    let gateway = GatewayProcess::start(&config, dir.path());
    let _conn = server.accept(WAIT).await;
    // Every device ends with a push carrying the latest count; the failing and
    // slow ones get it from the new process.
    let done = |i: u8, token: &str| {
        mock.delivered(token)
            .iter()
            .any(|p| unread(p) == Some(3) && (i % 3 == 2 || p.at >= restarted))
    };
    let all_delivered = eventually(Duration::from_secs(20), || async {
        devices.iter().all(|(i, token, _)| done(*i, token))
    })
    .await;
    let missing: Vec<&String> = devices
        .iter()
        .filter(|(i, token, _)| !done(*i, token))
        .map(|(_, token, _)| token)
        .collect();
    assert!(all_delivered, "not delivered: {missing:?}");
    // Every one of the 72 acknowledged publishes is accounted for by the new
    // process, except those the first delivered before the kill.
    let before_kill = devices
        .iter()
        .filter(|(_, token, _)| mock.delivered(token).iter().any(|p| p.at < restarted))
        .count();
    assert_eq!(
        before_kill, 8,
        "only the healthy third went out before the kill"
    );
    let gw = &gateway;
    let resumed = eventually(WAIT, || async { settled(&gw.http).await >= 16.0 * 3.0 }).await;
    assert!(
        resumed,
        "the new process settled {} publishes",
        settled(&gw.http).await
    );
    assert!(
        gateway
            .log()
            .contains("resuming notifications from the outbox")
    );
}

const OPEN: &str =
    "include_body = true\ninclude_sender = true\ninclude_account = true\ncoalesce_window_ms = 0\n";

#[tokio::test]
async fn tigase_apps_get_their_keys_when_the_operator_allows() {
    let mut h = Harness::start_with(|mut c| {
        c.delivery = OPEN.into();
        c
    })
    .await;
    let token = apns_token(0x62);
    let node = h.register("ivan@localhost/r", "apns", &token).await;
    let fcm = h.register("ivan@localhost/r", "fcm", "fcm-keys").await;
    let groupchat = "<groupchat xmlns='http://tigase.org/protocol/muc#offline'><nickname>bobby</nickname></groupchat>";
    for n in [&node, &fcm] {
        assert_result(
            &h.iq(&counted_publish(
                n,
                2,
                "room@muc.localhost/bobby",
                "hello",
                groupchat,
            ))
            .await,
        );
    }
    assert!(eventually(WAIT, || async { h.mock.delivered("fcm-keys").len() == 1 }).await);
    assert!(eventually(WAIT, || async { h.mock.delivered(&token).len() == 1 }).await);
    let apns = h.mock.delivered(&token).remove(0).json();
    assert_eq!(apns["account"], "ivan@localhost");
    assert_eq!(apns["unread-messages"], 2);
    assert_eq!(apns["sender"], "room@muc.localhost/bobby");
    assert_eq!(apns["body"], "hello");
    assert_eq!(apns["nickname"], "bobby");
    assert_eq!(apns["aps"]["alert"]["title"], "bobby");
    assert_eq!(apns["aps"]["alert"]["body"], "hello");
    let data = h.mock.delivered("fcm-keys").remove(0).json()["message"]["data"].clone();
    for (key, value) in [
        ("account", "ivan@localhost"),
        ("unread-messages", "2"),
        ("sender", "room@muc.localhost/bobby"),
        ("body", "hello"),
        ("nickname", "bobby"),
    ] {
        assert_eq!(data[key], value, "FCM data {key}: {data}");
    }
}

#[tokio::test]
async fn payloads_are_trimmed_to_the_provider_limit() {
    let mut h = Harness::start_with(|mut c| {
        c.delivery = OPEN.into();
        c
    })
    .await;
    let token = apns_token(0x63);
    let node = h.register("judy@localhost/r", "apns", &token).await;
    let fcm = h.register("judy@localhost/r", "fcm", "fcm-long").await;
    // Multi-byte characters, and characters JSON escapes.
    let body = "é\"ü\\ ".repeat(1500);
    for n in [&node, &fcm] {
        assert_result(
            &h.iq(&counted_publish(n, 1, "bob@localhost", &body, ""))
                .await,
        );
    }
    assert!(eventually(WAIT, || async { h.mock.delivered(&token).len() == 1 }).await);
    assert!(eventually(WAIT, || async { h.mock.delivered("fcm-long").len() == 1 }).await);
    let apns = h.mock.delivered(&token).remove(0);
    assert!(apns.body.len() <= 4096, "{} bytes", apns.body.len());
    assert!(
        apns.body.len() > 3900,
        "cut no more than needed: {}",
        apns.body.len()
    );
    let v: Value = serde_json::from_str(&apns.body).expect("valid JSON");
    assert!(
        v["aps"]["alert"]["body"]
            .as_str()
            .is_some_and(|b| b.ends_with('…'))
    );
    let data = h.mock.delivered("fcm-long").remove(0).json()["message"]["data"].clone();
    let size = serde_json::to_vec(&data).expect("encode").len();
    assert!(size <= 4096 && size > 3900, "FCM data of {size} bytes");
}

#[tokio::test]
async fn an_encrypted_payload_too_large_to_trim_fails_but_a_call_gets_5120_bytes() {
    let mut h = Harness::start_with(|mut c| {
        c.delivery = "coalesce_window_ms = 0\n".into();
        c
    })
    .await;
    let token = apns_token(0x64);
    let voip = apns_token(0x65);
    let reply = h
        .iq(&register_one_step(
            "kim@localhost/r",
            "apns",
            &token,
            Some(&voip),
        ))
        .await;
    let node = node_of(&reply).expect("node");
    let blob = "A".repeat(4500);
    let encrypted = |kind: &str| {
        format!(
            "<iq type='set' from='localhost' to='push.localhost' id='{}'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'><item><notification xmlns='urn:xmpp:push:0'><encrypted xmlns='tigase:push:encrypt:0' iv='aXY='{kind}>{blob}</encrypted></notification></item></publish></pubsub></iq>",
            crate::support::harness::next_id()
        )
    };
    assert_result(&h.iq(&encrypted(" type='voip'")).await);
    assert!(eventually(WAIT, || async { h.mock.delivered(&voip).len() == 1 }).await);
    assert_eq!(
        h.mock.delivered(&voip)[0].json()["encrypted"],
        blob.as_str()
    );
    assert_result(&h.iq(&encrypted("")).await);
    let failed = eventually(WAIT, || async {
        h.gateway
            .metric("pushgate_notifications_total{provider=\"apns\",fate=\"failed\"}")
            .await
            == 1.0
    })
    .await;
    assert!(failed, "{}", h.gateway.log());
    assert!(
        h.mock.attempts(&token).is_empty(),
        "never sent: it would be a 413"
    );
}
