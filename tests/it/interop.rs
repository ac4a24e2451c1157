//! Real Prosody and ejabberd, real XMPP clients (slixmpp), the real gateway, and
//! the mock providers. Devices register through their own server in every client
//! dialect, enable push, go offline or hibernate, and messages to them reach the
//! mock as the right pushes; unregistering and dead tokens make each server
//! disable push the way it does (ejabberd at once, Prosody after its error count);
//! provider outages and overload never do.

use crate::support::gateway::GatewayProcess;
use crate::support::interop::Interop;
use crate::support::mock_provider::Recorded;
use crate::support::servers::{Kind, PROSODY_MAX_ERRORS};
use crate::support::{WAIT, apns_token, eventually};
use serde_json::json;
use std::time::Duration;

fn is_alert(push: &Recorded) -> bool {
    push.header("apns-push-type") == Some("alert")
        || push.json()["message"]["android"]["priority"] == "high"
}

async fn every_dialect(kind: Kind) {
    let h = Interop::start(kind).await;
    let alice = apns_token(0xa1);
    let carol = "carol-fcm-token:APA91b";
    let dave = apns_token(0xd4);
    h.register("alice", "tigase", "two", "apns", &alice);
    h.register("carol", "p2-fcm", "one", "fcm", carol);
    h.register("dave", "appserver", "two", "apns", &dave);
    for user in ["alice", "carol", "dave"] {
        h.send(user, 1);
    }
    let pushes = h.expect_pushes(3).await;
    let to = |suffix: &str| {
        pushes
            .iter()
            .find(|p| p.path.ends_with(suffix) || p.body.contains(suffix))
    };
    for (who, token) in [
        ("alice", alice.as_str()),
        ("carol", carol),
        ("dave", dave.as_str()),
    ] {
        let push = to(token).unwrap_or_else(|| panic!("no push for {who}: {pushes:#?}"));
        assert!(
            is_alert(push),
            "{who}: a message with a body is an alert: {push:?}"
        );
        assert!(
            !push.body.contains("hello"),
            "the body never leaves the gateway"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_pushes_offline_messages_in_every_dialect() {
    every_dialect(Kind::Prosody).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejabberd_pushes_offline_messages_in_every_dialect() {
    every_dialect(Kind::Ejabberd).await;
}

async fn hibernation(kind: Kind) {
    let h = Interop::start(kind).await;
    let token = apns_token(0x5b);
    let out = h.client(
        "alice",
        &["register", "--provider", "apns", "--token", &token],
    );
    let node = out["fields"]["node"].as_str().expect("node").to_owned();
    // `--node=…`: a node may start with '-' (base64url), which argparse would
    // take for an option.
    let out = h.client("alice", &["hibernate", &format!("--node={node}")]);
    assert_eq!(out["enabled"], true, "{out}");
    h.send("alice", 1);
    let first = h.mock.wait_pushes(1, WAIT).await;
    assert!(
        first.first().is_some_and(is_alert),
        "{first:#?}\n{}",
        h.server.log_tail()
    );
    // A chat state without a body: a silent push.
    h.client("bob", &["send", "--to", "alice@localhost"]);
    let background = eventually(WAIT, || async {
        h.mock
            .pushes()
            .iter()
            .any(|p| p.header("apns-push-type") == Some("background"))
    })
    .await;
    assert!(
        background,
        "{:#?}\n{}",
        h.mock.pushes(),
        h.server.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_pushes_for_a_hibernated_session() {
    hibernation(Kind::Prosody).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejabberd_pushes_for_a_pending_session() {
    hibernation(Kind::Ejabberd).await;
}

/// How a device is unregistered.
#[derive(Clone, Copy)]
enum Unregister {
    Command,
    Rest,
}

/// After an unregister, the next messages get item-not-found: ejabberd disables
/// push at the first, Prosody when its error count is reached.
async fn unregister_disables_push(kind: Kind, how: Unregister) {
    let h = Interop::start(kind).await;
    let token = apns_token(0x61);
    let node = h.register("alice", "tigase", "one", "apns", &token);
    match how {
        Unregister::Command => {
            let out = h.client(
                "alice",
                &["unregister", "--provider", "apns", "--token", &token],
            );
            assert_eq!(out["status"], "completed", "{out}");
        }
        Unregister::Rest => {
            let (status, body) = h
                .gateway
                .post_json(
                    "/rest/push/unregister-device/push.localhost",
                    json!({"account": "alice@localhost", "provider": "apns", "device-token": token}),
                )
                .await;
            assert_eq!((status, body.as_str()), (200, r#"{"result":"success"}"#));
        }
    }
    let expected = match kind {
        Kind::Ejabberd => 1,
        Kind::Prosody => u64::from(PROSODY_MAX_ERRORS),
    };
    assert_eq!(h.messages_until_disabled("alice", expected).await, expected);
    assert!(h.mock.pushes().is_empty());
    match kind {
        Kind::Ejabberd => {
            let out = h.client("alice", &["disable", &format!("--node={node}")]);
            assert_eq!(
                out["type"], "error",
                "ejabberd forgot the registration: {out}"
            );
        }
        Kind::Prosody => assert!(
            h.server.log().contains("Disabling push notifications"),
            "{}",
            h.server.log_tail()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejabberd_disables_push_at_once_after_unregister_by_command() {
    unregister_disables_push(Kind::Ejabberd, Unregister::Command).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejabberd_disables_push_at_once_after_unregister_by_rest() {
    unregister_disables_push(Kind::Ejabberd, Unregister::Rest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_disables_push_after_its_error_count_after_unregister_by_command() {
    unregister_disables_push(Kind::Prosody, Unregister::Command).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_disables_push_after_its_error_count_after_unregister_by_rest() {
    unregister_disables_push(Kind::Prosody, Unregister::Rest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejabberd_disables_push_for_a_token_the_provider_reports_dead() {
    let h = Interop::start(Kind::Ejabberd).await;
    let token = apns_token(0x63);
    h.register("alice", "tigase", "one", "apns", &token);
    // Invalid since after the registration, so the 410 timestamp guard removes it.
    let later_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() * 1000 + 1000)
        .unwrap_or(0);
    h.mock.respond(
        &token,
        410,
        json!({"reason": "Unregistered", "timestamp": later_ms}),
    );
    h.send("alice", 1);
    h.mock.wait_pushes(1, WAIT).await;
    h.wait_publishes("accepted", 1).await;
    // The next message finds the node gone, and ejabberd disables push.
    assert_eq!(h.messages_until_disabled("alice", 1).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_disables_push_for_a_token_the_provider_reports_dead() {
    let h = Interop::start(Kind::Prosody).await;
    let token = "dead-fcm-token";
    h.mock.respond(token, 404, json!({"error": {"code": 404, "status": "NOT_FOUND", "details": [
        {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}}));
    h.register("carol", "p2-fcm", "two", "fcm", token);
    h.send("carol", 1);
    h.mock.wait_pushes(1, WAIT).await;
    let errors = h
        .messages_until_disabled("carol", u64::from(PROSODY_MAX_ERRORS))
        .await;
    assert_eq!(errors, u64::from(PROSODY_MAX_ERRORS));
}

async fn restart(kind: Kind) {
    let mut h = Interop::start(kind).await;
    let token = apns_token(0x64);
    h.register("alice", "tigase", "one", "apns", &token);
    let status = tokio::task::block_in_place(|| h.gateway.terminate(WAIT)).expect("stops");
    assert!(status.success());
    // The server stays up; a new gateway process on the same store comes back.
    h.gateway = GatewayProcess::start(&h.config, h.dir.path());
    h.wait_ready().await;
    h.send("alice", 1);
    let pushes = h.expect_pushes(1).await;
    assert_eq!(pushes[0].path, format!("/3/device/{token}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_keeps_pushing_after_a_gateway_restart() {
    restart(Kind::Prosody).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejabberd_keeps_pushing_after_a_gateway_restart() {
    restart(Kind::Ejabberd).await;
}

async fn outage_and_overload(kind: Kind) {
    let h = Interop::start_with(kind, |mut c| {
        c.delivery = "queue_capacity = 1\n".into();
        c.provider_keys = "max_in_flight = 1\n".into();
        c
    })
    .await;
    // Two devices: publishes for one node merge, so only a second node can
    // overflow the one-slot queue.
    let tokens = [apns_token(0x65), apns_token(0x66)];
    for token in &tokens {
        h.register("alice", "tigase", "one", "apns", token);
    }
    // The provider is down.
    for token in &tokens {
        h.mock
            .respond(token, 503, json!({"reason": "ServiceUnavailable"}));
    }
    h.send("alice", 3);
    h.mock.wait_pushes(1, WAIT).await;
    // The provider is slow: the one-slot queue overflows.
    for token in &tokens {
        h.mock.respond(token, 200, json!({}));
        h.mock.delay(token, Duration::from_millis(1500));
    }
    h.send("alice", 6);
    h.wait_publishes("overloaded", 1).await;
    // The slow provider works through the queue.
    let drained = eventually(WAIT, || async {
        h.gateway
            .metric("pushgate_outbox_entries{provider=\"apns\"}")
            .await
            == 0.0
    })
    .await;
    assert!(drained, "{}", h.gateway.log());
    // Back to normal: the registrations are still enabled on the server.
    for token in &tokens {
        h.mock.delay(token, Duration::ZERO);
    }
    let before = h.mock.pushes().len();
    h.send("alice", 1);
    let arrived = eventually(WAIT, || async { h.mock.pushes().len() > before }).await;
    assert!(
        arrived,
        "the server disabled push:\n{}",
        h.server.log_tail()
    );
    assert_eq!(h.publishes("item-not-found").await, 0);
    // What the server received is a condition Tigase keeps too: its push
    // module keeps a registration only after these, whatever the type.
    let received = h.server.push_errors_received();
    assert!(!received.is_empty(), "{}", h.server.log_tail());
    let tigase_keeps = [
        "remote-server-timeout",
        "service-unavailable",
        "internal-server-error",
        "bad-request",
    ];
    for (kind, condition) in &received {
        assert_eq!(kind, "wait", "{received:?}");
        assert!(
            tigase_keeps.contains(&condition.as_str()),
            "Tigase would delete the registration after {kind}/{condition}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_keeps_the_registration_through_outage_and_overload() {
    outage_and_overload(Kind::Prosody).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejabberd_keeps_the_registration_through_outage_and_overload() {
    outage_and_overload(Kind::Ejabberd).await;
}
