//! Delivery against providers that misbehave: every row of the APNs and FCM
//! error tables (`docs/protocol.md` §6–7), resets and GOAWAY, `Retry-After`, a
//! misconfigured provider, and a stuck provider beside a healthy one.

use crate::support::harness::{Harness, assert_result, ejabberd_publish, error_of};
use crate::support::mock_provider::Answer;
use crate::support::{WAIT, apns_token, eventually};
use serde_json::{Value, json};
use std::time::Duration;

/// Fast retries, no coalescing delay: the table runs in seconds.
const FAST: &str = "retry_base_ms = 100\nretry_max_ms = 400\ncoalesce_window_ms = 0\n";

/// What a row's first answer must lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The registration is removed: the next publish gets item-not-found.
    Removed,
    /// This notification is dropped without retry; the registration stays.
    FailedKept,
    /// Retried until delivered, at least `min_gap` after the failure.
    Retried { min_gap: Duration },
    /// Not in the tables: retried a few times, then given up; registration kept.
    UnknownCapped,
}

fn fcm_error(status: u16, rpc: &str, code: Option<&str>) -> Value {
    let details: Vec<Value> = code
        .map(|c| vec![json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": c})])
        .unwrap_or_default();
    json!({"error": {"code": status, "status": rpc, "details": details}})
}

fn rows() -> Vec<(&'static str, String, Answer, Expect)> {
    let now_ms = crate::support::now_ms();
    let apns = |reason: &str| json!({ "reason": reason });
    let retried = Expect::Retried {
        min_gap: Duration::ZERO,
    };
    let mut rows = Vec::new();
    let mut seed = 0x10;
    let mut add = |provider: &'static str, answer: Answer, expect: Expect| {
        seed += 1;
        let token = if provider == "apns" {
            apns_token(seed)
        } else {
            format!("fcm-token-{seed}")
        };
        rows.push((provider, token, answer, expect));
    };
    use Answer::Status;
    // APNs (§6).
    add(
        "apns",
        Status(
            410,
            json!({"reason": "Unregistered", "timestamp": now_ms + 3_600_000}),
            None,
        ),
        Expect::Removed,
    );
    add(
        "apns",
        Status(
            410,
            json!({"reason": "ExpiredToken", "timestamp": now_ms + 3_600_000}),
            None,
        ),
        Expect::Removed,
    );
    // Registered again after the token was reported dead: kept.
    add(
        "apns",
        Status(
            410,
            json!({"reason": "Unregistered", "timestamp": 1000}),
            None,
        ),
        Expect::FailedKept,
    );
    add(
        "apns",
        Status(400, apns("BadDeviceToken"), None),
        Expect::Removed,
    );
    add(
        "apns",
        Status(400, apns("DeviceTokenNotForTopic"), None),
        Expect::Removed,
    );
    for reason in [
        "BadCollapseId",
        "BadExpirationDate",
        "BadPriority",
        "BadTopic",
        "MissingTopic",
        "PayloadEmpty",
        "TopicDisallowed",
    ] {
        add("apns", Status(400, apns(reason), None), Expect::FailedKept);
    }
    add(
        "apns",
        Status(413, apns("PayloadTooLarge"), None),
        Expect::FailedKept,
    );
    add("apns", Status(429, apns("TooManyRequests"), None), retried);
    add(
        "apns",
        Status(500, apns("InternalServerError"), None),
        retried,
    );
    add(
        "apns",
        Status(503, apns("ServiceUnavailable"), Some(1)),
        Expect::Retried {
            min_gap: Duration::from_secs(1),
        },
    );
    add("apns", Status(503, apns("Shutdown"), None), retried);
    // A token signed seconds ago cannot have expired (the clock is off): kept and
    // retried after the pool's pause rather than re-signed in a loop.
    add(
        "apns",
        Status(403, apns("ExpiredProviderToken"), None),
        retried,
    );
    for reason in [
        "InvalidProviderToken",
        "BadCertificate",
        "BadCertificateEnvironment",
        "Forbidden",
        "MissingProviderToken",
    ] {
        add("apns", Status(403, apns(reason), None), retried);
    }
    add(
        "apns",
        Status(400, apns("SomethingAppleAddsNextYear"), None),
        Expect::UnknownCapped,
    );
    // FCM (§7).
    add(
        "fcm",
        Status(404, fcm_error(404, "NOT_FOUND", Some("UNREGISTERED")), None),
        Expect::Removed,
    );
    add(
        "fcm",
        Status(
            403,
            fcm_error(403, "PERMISSION_DENIED", Some("SENDER_ID_MISMATCH")),
            None,
        ),
        Expect::Removed,
    );
    add(
        "fcm",
        Status(
            400,
            fcm_error(400, "INVALID_ARGUMENT", Some("INVALID_ARGUMENT")),
            None,
        ),
        Expect::FailedKept,
    );
    add(
        "fcm",
        Status(
            429,
            fcm_error(429, "RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED")),
            Some(1),
        ),
        Expect::Retried {
            min_gap: Duration::from_secs(1),
        },
    );
    add(
        "fcm",
        Status(
            503,
            fcm_error(503, "UNAVAILABLE", Some("UNAVAILABLE")),
            None,
        ),
        retried,
    );
    add(
        "fcm",
        Status(500, fcm_error(500, "INTERNAL", Some("INTERNAL")), None),
        retried,
    );
    add(
        "fcm",
        Status(
            401,
            fcm_error(401, "UNAUTHENTICATED", Some("THIRD_PARTY_AUTH_ERROR")),
            None,
        ),
        retried,
    );
    add(
        "fcm",
        Status(400, fcm_error(400, "FAILED_PRECONDITION", None), None),
        Expect::UnknownCapped,
    );
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_of_the_error_tables() {
    // In a process: what it logs (and does not) is part of the test.
    let mut h = Harness::start_process_with(|mut c| {
        c.delivery = FAST.into();
        c
    })
    .await;
    let rows = rows();
    let mut nodes = Vec::new();
    for (i, (provider, token, answer, expect)) in rows.iter().enumerate() {
        match expect {
            // A dead token stays dead, whatever is published next.
            Expect::Removed => {
                if let Answer::Status(status, body, _) = answer {
                    h.mock.respond(token, *status, body.clone());
                }
            }
            Expect::UnknownCapped => h
                .mock
                .script(token, std::iter::repeat_n(answer.clone(), 10)),
            _ => h.mock.script(token, [answer.clone()]),
        }
        // An account per device: one account may hold only a few.
        let account = format!("dave{i}@localhost/r");
        let node = h.register(&account, provider, token).await;
        assert_result(&h.iq(&ejabberd_publish(&node, "localhost")).await);
        nodes.push(node);
    }
    for ((provider, token, answer, expect), node) in rows.iter().zip(&nodes) {
        let row = format!("{provider} {answer:?}");
        match *expect {
            Expect::Removed => {
                let mut gone = false;
                for _ in 0..100 {
                    let reply = h.iq(&ejabberd_publish(node, "localhost")).await;
                    if error_of(&reply) == Some(("cancel".into(), "item-not-found".into())) {
                        gone = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                assert!(gone, "{row}: the registration should be removed");
                assert!(h.mock.delivered(token).is_empty(), "{row}");
            }
            Expect::Retried { min_gap } => {
                let delivered =
                    eventually(WAIT, || async { !h.mock.delivered(token).is_empty() }).await;
                let attempts = h.mock.attempts(token);
                assert!(
                    delivered,
                    "{row}: never delivered after {} attempts",
                    attempts.len()
                );
                assert_eq!(attempts.len(), 2, "{row}: one failure, one success");
                let gap = attempts[1].at.duration_since(attempts[0].at);
                assert!(
                    gap >= min_gap,
                    "{row}: retried after {gap:?}, Retry-After was {min_gap:?}"
                );
            }
            Expect::FailedKept => {
                let answered =
                    eventually(WAIT, || async { h.mock.attempts(token).len() == 1 }).await;
                assert!(answered, "{row}");
                // Still registered: the next publish is accepted and delivered,
                // and the failed one was never retried.
                assert_result(&h.iq(&ejabberd_publish(node, "localhost")).await);
                let delivered =
                    eventually(WAIT, || async { h.mock.delivered(token).len() == 1 }).await;
                assert!(delivered, "{row}");
                assert_eq!(
                    h.mock.attempts(token).len(),
                    2,
                    "{row}: no retry of a failed notification"
                );
            }
            Expect::UnknownCapped => {
                let capped = eventually(WAIT, || async { h.mock.attempts(token).len() >= 5 }).await;
                assert!(
                    capped,
                    "{row}: {:?}",
                    h.mock
                        .attempts(token)
                        .iter()
                        .map(|r| r.status)
                        .collect::<Vec<_>>()
                );
                // Every answer is applied once counted; the fifth gives up.
                let unknown = format!(
                    "pushgate_deliveries_total{{provider=\"{provider}\",outcome=\"unknown\"}}"
                );
                let counted =
                    eventually(WAIT, || async { h.gateway.metric(&unknown).await >= 5.0 }).await;
                assert!(counted, "{row}: five unknown answers counted");
                // Four retries were scheduled; the fifth answer scheduled none.
                // (A reason not in the tables is labelled "unknown".)
                let retries =
                    format!("pushgate_retries_total{{provider=\"{provider}\",reason=\"unknown\"}}");
                assert_eq!(h.gateway.metric(&retries).await, 4.0, "{row}");
                assert_eq!(
                    h.mock.attempts(token).len(),
                    5,
                    "{row}: five attempts, then given up"
                );
                assert!(h.mock.delivered(token).is_empty());
                let reply = h.iq(&ejabberd_publish(node, "localhost")).await;
                assert_result(&reply);
            }
        }
    }
    let log = h.gateway.log();
    assert!(
        log.contains("SomethingAppleAddsNextYear"),
        "unknown reasons are logged with the body"
    );
    assert!(
        log.contains("FAILED_PRECONDITION"),
        "unknown FCM errors are logged with the body"
    );
    for (_, token, _, _) in &rows {
        assert!(
            !log.contains(token.as_str()),
            "a device token leaked into the log"
        );
    }
    // Every accepted publish reaches exactly one fate.
    let gateway = &h.gateway;
    let balanced = eventually(WAIT, || async {
        let accepted = gateway
            .metric("pushgate_publishes_total{outcome=\"accepted\"}")
            .await;
        settled(gateway.http()).await == accepted
    })
    .await;
    assert!(
        balanced,
        "accepted publishes != settled ones:\n{}",
        gateway.get("/metrics").await.1
    );
}

/// The sum of `pushgate_notifications_total` over providers and fates.
pub async fn settled(http: &str) -> f64 {
    let mut total = 0.0;
    for provider in ["apns", "fcm"] {
        for fate in [
            "delivered",
            "failed",
            "expired",
            "token-dead",
            "account-removed",
        ] {
            total += crate::support::gateway::metric(
                http,
                &format!("pushgate_notifications_total{{provider=\"{provider}\",fate=\"{fate}\"}}"),
            )
            .await;
        }
    }
    total
}

#[tokio::test]
async fn resets_and_goaway_reconnect_and_retry() {
    let mut h = Harness::start_with(|mut c| {
        c.delivery = FAST.into();
        c
    })
    .await;
    let cases = [
        ("apns", apns_token(0x81), Answer::Reset),
        (
            "apns",
            apns_token(0x82),
            Answer::GoAway(503, json!({"reason": "Shutdown"})),
        ),
        ("fcm", "fcm-reset".to_owned(), Answer::Reset),
    ];
    for (provider, token, answer) in cases {
        let before = h.mock.connections();
        h.mock.script(&token, [answer.clone()]);
        let node = h.register("dave@localhost/r", provider, &token).await;
        assert_result(&h.iq(&ejabberd_publish(&node, "localhost")).await);
        let delivered = eventually(WAIT, || async { h.mock.delivered(&token).len() == 1 }).await;
        assert!(
            delivered,
            "{provider} {answer:?}: {:?}",
            h.mock.attempts(&token).len()
        );
        assert_eq!(h.mock.attempts(&token).len(), 2, "{provider} {answer:?}");
        assert!(
            h.mock.connections() > before,
            "{provider} {answer:?}: a new connection"
        );
    }
}

#[tokio::test]
async fn a_misconfigured_provider_keeps_its_notifications_and_says_which_credential() {
    // In a process: the one log line an operator gets is part of the test.
    let mut h = Harness::start_process_with(|mut c| {
        c.delivery = "retry_base_ms = 100\nretry_max_ms = 300\n".into();
        c
    })
    .await;
    let token = apns_token(0x91);
    h.mock
        .respond(&token, 403, json!({"reason": "InvalidProviderToken"}));
    let node = h.register("erin@localhost/r", "apns", &token).await;
    let fcm_node = h.register("erin@localhost/r", "fcm", "fcm-healthy").await;
    assert_result(&h.iq(&ejabberd_publish(&node, "localhost")).await);
    let unhealthy = eventually(WAIT, || async {
        let (_, body) = h.gateway.get("/readyz").await;
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        v["providers"]["apns"]["healthy"] == false
    })
    .await;
    let (_, body) = h.gateway.get("/readyz").await;
    assert!(unhealthy, "{body}");
    assert!(
        body.contains("key_file"),
        "readyz names the credential: {body}"
    );
    assert_eq!(
        h.gateway
            .metric("pushgate_provider_healthy{provider=\"apns\"}")
            .await,
        0.0
    );
    // Other pools are not affected.
    assert_result(&h.iq(&ejabberd_publish(&fcm_node, "localhost")).await);
    assert!(
        eventually(WAIT, || async {
            h.mock.delivered("fcm-healthy").len() == 1
        })
        .await
    );
    // Several refusals, one clear log line.
    assert!(eventually(WAIT, || async { h.mock.attempts(&token).len() >= 4 }).await);
    let lines = h
        .gateway
        .log()
        .matches("APNs refuses the provider token")
        .count();
    assert_eq!(lines, 1, "{}", h.gateway.log());
    // Fixed (say, the key was replaced): the kept notification goes out.
    h.mock.respond(&token, 200, json!({}));
    assert!(eventually(WAIT, || async { h.mock.delivered(&token).len() == 1 }).await);
    assert!(
        eventually(WAIT, || async {
            h.gateway
                .metric("pushgate_provider_healthy{provider=\"apns\"}")
                .await
                == 1.0
        })
        .await
    );
    assert!(h.gateway.log().contains("accepts our requests again"));
}

#[tokio::test]
async fn a_stuck_provider_does_not_stall_another() {
    let mut h = Harness::start_with(|mut c| {
        c.delivery = FAST.into();
        c
    })
    .await;
    h.mock.delay("fcm-stuck", Duration::from_secs(8));
    let stuck = h.register("frank@localhost/r", "fcm", "fcm-stuck").await;
    assert_result(&h.iq(&ejabberd_publish(&stuck, "localhost")).await);
    assert!(
        eventually(WAIT, || async {
            h.gateway
                .metric("pushgate_in_flight{provider=\"fcm\"}")
                .await
                >= 1.0
        })
        .await
    );
    let started = std::time::Instant::now();
    for seed in 0xa0..0xa5 {
        let token = apns_token(seed);
        let node = h.register("frank@localhost/r", "apns", &token).await;
        assert_result(&h.iq(&ejabberd_publish(&node, "localhost")).await);
        assert!(eventually(WAIT, || async { h.mock.delivered(&token).len() == 1 }).await);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "APNs waited for FCM: {:?}",
        started.elapsed()
    );
    assert!(
        h.mock.delivered("fcm-stuck").is_empty(),
        "FCM is still stuck"
    );
}
