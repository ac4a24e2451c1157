//! Publishes from Prosody and ejabberd, and what reaches APNs and FCM.

use crate::support::gateway::TestConfig;
use crate::support::harness::{
    Harness, assert_result, ejabberd_empty_publish, ejabberd_publish, error_of, next_id, node_of,
    register_one_step,
};
use crate::support::in_process::{launch, on_test_runtime, spawn_here};
use crate::support::mock_provider::MockProvider;
use crate::support::xmpp_server::FakeServer;
use crate::support::{SECRET, WAIT, apns_token, eventually};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[tokio::test]
async fn prosody_publish_becomes_an_apns_alert() {
    let mut h = Harness::start().await;
    let token = apns_token(0xab);
    let node = h.register("alice@localhost/phone", "apns", &token).await;
    let reply = h
        .publish_prosody(&node, "localhost", "New Message!", Some("s"))
        .await;
    assert_result(&reply);
    assert_eq!(reply.attr("to"), Some("localhost"));
    let pushes = h.mock.wait_pushes(1, WAIT).await;
    let push = pushes.first().expect("one push");
    assert_eq!(push.path, format!("/3/device/{token}"));
    assert_eq!(push.header("apns-topic"), Some("com.example.app"));
    assert_eq!(push.header("apns-push-type"), Some("alert"));
    assert_eq!(push.header("apns-priority"), Some("10"));
    assert_eq!(push.header("apns-collapse-id"), Some(node.as_str()));
    assert_eq!(
        push.header("apns-id").map(str::len),
        Some(36),
        "a UUID apns-id"
    );
    let expiration: u64 = push
        .header("apns-expiration")
        .and_then(|v| v.parse().ok())
        .expect("expiration");
    assert!(expiration > now_s() + 3600, "expiration {expiration}");
    // The JWT: ES256, our key id, our team, signed by the configured key.
    let authorization = push.header("authorization").expect("authorization");
    let (scheme, bearer) = authorization.split_once(' ').expect("scheme and token");
    assert!(scheme.eq_ignore_ascii_case("bearer"), "{authorization}");
    let header = jsonwebtoken::decode_header(bearer).expect("JWT header");
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.kid.as_deref(), Some("TESTKEY01"));
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let claims = jsonwebtoken::decode::<Value>(
        bearer,
        &DecodingKey::from_ec_pem(h.mock.pki.apns_public_pem.as_bytes()).expect("public key"),
        &validation,
    )
    .expect("JWT verifies with the configured key")
    .claims;
    assert_eq!(claims["iss"], "TEAM123456");
    assert!(claims["iat"].as_u64().expect("iat") + 60 > now_s());
    let body = push.json();
    assert_eq!(body["aps"]["mutable-content"], 1);
    assert_eq!(body["aps"]["badge"], 1);
    assert!(body["aps"]["alert"]["body"].is_string());
    assert_eq!(body["unread-messages"], 1);
    assert!(
        !push.body.contains("New Message!"),
        "the message body must not leave: {}",
        push.body
    );

    // A second push reuses the JWT and the connection.
    let reply = h.iq(&ejabberd_publish(&node, "localhost")).await;
    assert_eq!(reply.attr("type"), Some("result"));
    let pushes = h.mock.wait_pushes(2, WAIT).await;
    assert_eq!(
        pushes[1].header("authorization"),
        push.header("authorization")
    );
    assert_eq!(h.mock.connections(), 1, "one multiplexed HTTP/2 connection");
}

#[tokio::test]
async fn ejabberd_empty_publish_becomes_a_background_push() {
    let mut h = Harness::start().await;
    let token = apns_token(3);
    let node = h.register("alice@localhost/phone", "apns", &token).await;
    let reply = h.iq(&ejabberd_empty_publish(&node, "localhost")).await;
    assert_eq!(reply.attr("type"), Some("result"));
    let push = h.mock.wait_pushes(1, WAIT).await.remove(0);
    assert_eq!(push.header("apns-push-type"), Some("background"));
    assert_eq!(push.header("apns-priority"), Some("5"));
    let body = push.json();
    assert_eq!(body["aps"]["content-available"], 1);
    assert!(body["aps"].get("alert").is_none());
}

#[tokio::test]
async fn fcm_gets_an_oauth_token_once_and_a_v1_data_message() {
    let mut h = Harness::start_with(|mut c| {
        c.delivery = "coalesce_window_ms = 0\n".into();
        c
    })
    .await;
    let token = "dGVzdC1mY20tdG9rZW4:APA91bH-x_y";
    let node = h.register("alice@localhost/phone", "fcm", token).await;
    // One at a time: a publish arriving before the first is settled would
    // merge into it (the higher priority wins).
    for (n, publish) in [
        ejabberd_publish(&node, "localhost"),
        ejabberd_empty_publish(&node, "localhost"),
    ]
    .iter()
    .enumerate()
    {
        assert_result(&h.iq(publish).await);
        let delivered = "pushgate_notifications_total{provider=\"fcm\",fate=\"delivered\"}";
        let settled = eventually(WAIT, || async {
            h.gateway.metric(delivered).await == (n + 1) as f64
        })
        .await;
        assert!(settled, "push {} delivered", n + 1);
    }
    let pushes = h.mock.pushes();
    let grants = h.mock.grants();
    assert_eq!(grants.len(), 1, "the access token is cached");
    let grant = &grants[0];
    assert!(grant.body.starts_with(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion="
    ));
    let assertion = grant.body.split("assertion=").nth(1).expect("assertion");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[format!("{}/token", h.mock.url)]);
    let claims = jsonwebtoken::decode::<Value>(
        assertion,
        &DecodingKey::from_rsa_pem(include_bytes!("../fixtures/test-service-account-pub.pem"))
            .expect("pub"),
        &validation,
    )
    .expect("grant signed by the service account key")
    .claims;
    assert_eq!(
        claims["iss"],
        "pushgate@test-project.iam.gserviceaccount.com"
    );
    assert_eq!(
        claims["scope"],
        "https://www.googleapis.com/auth/firebase.messaging"
    );

    for (push, priority) in pushes.iter().zip(["high", "normal"]) {
        assert_eq!(push.path, "/v1/projects/test-project/messages:send");
        assert_eq!(push.header("authorization"), Some("Bearer test-access-1"));
        let message = &push.json()["message"];
        assert_eq!(message["token"], token);
        assert_eq!(message["android"]["priority"], priority);
        assert_eq!(message["android"]["collapse_key"], node.as_str());
        assert!(
            message["data"]
                .as_object()
                .expect("data")
                .values()
                .all(Value::is_string)
        );
    }
}

#[tokio::test]
async fn unknown_nodes_foreign_domains_and_wrong_secrets_are_refused() {
    let mut h = Harness::start_with(|mut c| {
        c.extra.push_str("\n[commands]\np2_apns = \"apns\"\n");
        c
    })
    .await;
    let refused = |reply: &xmpp_parsers::minidom::Element| error_of(reply);

    let reply = h
        .publish_prosody("no-such-node", "localhost", "hi", None)
        .await;
    assert_eq!(
        refused(&reply),
        Some(("cancel".into(), "item-not-found".into()))
    );

    let node = h
        .register("alice@localhost/phone", "apns", &apns_token(4))
        .await;
    let reply = h.publish_prosody(&node, "evil.example", "hi", None).await;
    assert_eq!(refused(&reply), Some(("auth".into(), "forbidden".into())));

    // A p2 registration comes with a secret that publishes must carry.
    let reply = h
        .iq(&format!("<iq type='set' id='{}' from='carol@localhost/c' to='push.localhost'><command xmlns='http://jabber.org/protocol/commands' node='register-push-apns' action='execute'><x xmlns='jabber:x:data' type='submit'><field var='token'><value>{}</value></field><field var='device-id'><value>carol-phone</value></field></x></command></iq>", next_id(), apns_token(9)))
        .await;
    let form = reply
        .get_child("command", "http://jabber.org/protocol/commands")
        .and_then(|c| c.get_child("x", "jabber:x:data"))
        .unwrap_or_else(|| panic!("no result form: {}", String::from(&reply)));
    let value = |var: &str| {
        form.children()
            .find(|f| f.attr("var") == Some(var))
            .map(|f| f.children().map(|v| v.text()).collect::<String>())
            .unwrap_or_default()
    };
    assert_eq!(value("jid"), "push.localhost");
    let (secret_node, secret) = (value("node"), value("secret"));
    assert!(secret.len() >= 16, "secret {secret:?}");
    for wrong in [None, Some("wrong")] {
        let reply = h
            .publish_prosody(&secret_node, "localhost", "hi", wrong)
            .await;
        assert_eq!(
            refused(&reply),
            Some(("auth".into(), "not-authorized".into())),
            "{wrong:?}"
        );
    }
    let reply = h
        .publish_prosody(&secret_node, "localhost", "hi", Some(&secret))
        .await;
    assert_result(&reply);
    // Only the accepted publish reached the provider.
    let pushes = h.mock.wait_pushes(1, WAIT).await;
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].path, format!("/3/device/{}", apns_token(9)));

    // The same device registering a new token keeps its node, with a new secret.
    let reply = h
        .iq(&format!("<iq type='set' id='{}' from='carol@localhost/c' to='push.localhost'><command xmlns='http://jabber.org/protocol/commands' node='register-push-apns' action='execute'><x xmlns='jabber:x:data' type='submit'><field var='token'><value>{}</value></field><field var='device-id'><value>carol-phone</value></field></x></command></iq>", next_id(), apns_token(10)))
        .await;
    assert_eq!(
        crate::support::harness::node_of(&reply).as_deref(),
        Some(secret_node.as_str())
    );
    let reply = h
        .publish_prosody(&secret_node, "localhost", "hi", Some(&secret))
        .await;
    assert_eq!(
        refused(&reply),
        Some(("auth".into(), "not-authorized".into())),
        "the old secret is gone"
    );
}

#[tokio::test]
async fn the_domain_check_can_be_turned_off() {
    let mut h = Harness::start_with(|mut c| {
        c.extra
            .push_str("\n[publish]\nrequire_account_domain = false\n");
        c
    })
    .await;
    let node = h
        .register("alice@localhost/phone", "apns", &apns_token(5))
        .await;
    let reply = h.publish_prosody(&node, "other.example", "hi", None).await;
    assert_eq!(reply.attr("type"), Some("result"));
}

#[tokio::test]
async fn a_voip_token_gets_the_call_and_the_encrypted_payload_is_forwarded_verbatim() {
    let mut h = Harness::start().await;
    let voip = apns_token(0x77);
    let reply = h
        .iq(&crate::support::harness::register_one_step(
            "erin@localhost/r",
            "apns",
            &apns_token(0x76),
            Some(&voip),
        ))
        .await;
    let node = crate::support::harness::node_of(&reply).expect("node");
    let call = format!(
        "<iq type='set' from='localhost' to='push.localhost' id='{}'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'><item><notification xmlns='urn:xmpp:push:0'><encrypted xmlns='tigase:push:encrypt:0' iv='aXYxMjM0NTY3ODkw' type='voip'>Y2lwaGVy+/AAAA==</encrypted><jingle xmlns='tigase:push:jingle:0' action='propose' sid='c1'><media>audio</media></jingle></notification></item></publish></pubsub></iq>",
        next_id()
    );
    assert_eq!(h.iq(&call).await.attr("type"), Some("result"));
    let push = h.mock.wait_pushes(1, WAIT).await.remove(0);
    assert_eq!(push.path, format!("/3/device/{voip}"));
    assert_eq!(push.header("apns-topic"), Some("com.example.app.voip"));
    assert_eq!(push.header("apns-push-type"), Some("voip"));
    let body = push.json();
    assert_eq!(body["encrypted"], "Y2lwaGVy+/AAAA==");
    assert_eq!(body["iv"], "aXYxMjM0NTY3ODkw");
}

#[test]
fn the_fcm_access_token_is_refreshed_before_it_expires() {
    on_test_runtime(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let mock = MockProvider::start(dir.path()).await;
        let server = FakeServer::start(SECRET).await;
        let config = TestConfig::new(server.port, dir.path()).with_mock_providers(&mock);
        let stop = spawn_here(launch(&config).0);
        let mut conn = server.accept(WAIT).await;
        // Tokens that expire within the refresh margin (5 minutes) are used once.
        mock.token_lifetime(301);
        let reply = conn
            .iq(
                &register_one_step("alice@localhost/phone", "fcm", "fcm-refresh", None),
                WAIT,
            )
            .await;
        let node = node_of(&reply).expect("registered");
        for n in 1..=2 {
            assert_result(&conn.iq(&ejabberd_publish(&node, "localhost"), WAIT).await);
            let pushes = mock.wait_pushes(n, WAIT).await;
            assert_eq!(
                pushes[n - 1].header("authorization"),
                Some(format!("Bearer test-access-{n}").as_str())
            );
            // The token's last second passes on the gateway's clock, not ours.
            tokio::time::pause();
            tokio::time::advance(std::time::Duration::from_millis(1100)).await;
            tokio::time::resume();
        }
        assert_eq!(mock.grants().len(), 2);
        let _ = stop.send(());
    });
}

#[tokio::test]
async fn a_provider_timeout_is_logged_without_the_device_token() {
    let mut h = Harness::start_process_with(|mut c| {
        c.extra = c.extra.replace(
            "topic = \"com.example.app\"",
            "topic = \"com.example.app\"\nrequest_timeout_s = 1",
        );
        c
    })
    .await;
    let token = apns_token(0x7e);
    h.mock.delay(&token, std::time::Duration::from_secs(3));
    let node = h.register("alice@localhost/phone", "apns", &token).await;
    assert_result(&h.publish_prosody(&node, "localhost", "hi", None).await);
    let logged = eventually(WAIT, || async {
        h.gateway.log().contains("request failed")
    })
    .await;
    let log = h.gateway.log();
    assert!(logged, "{log}");
    assert!(
        !log.contains(&token),
        "the token leaked into the log:\n{log}"
    );
}

/// Tigase's publish when an account is deleted (`docs/protocol.md` §4).
fn tigase_account_removed(node: &str) -> String {
    format!(
        "<iq type='set' from='localhost' to='push.localhost' id='{}'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'><item><notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data'><field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field><field var='message-count'><value>0</value></field></x><event xmlns='http://tigase.org/protocol/account#event' name='account-removed'/></notification></item></publish></pubsub></iq>",
        next_id()
    )
}

#[tokio::test]
async fn tigase_account_removed_drops_the_registration_and_its_pending_push() {
    // A long coalescing window keeps pushes pending, so what the event does to
    // the outbox is seen before anything could be sent.
    let mut h = Harness::start_with(|mut c| {
        c.delivery = "coalesce_window_ms = 600000\n".into();
        c
    })
    .await;
    let gone = h
        .register("alice@localhost/phone", "apns", &apns_token(0x5a))
        .await;
    let kept = h
        .register("bob@localhost/phone", "apns", &apns_token(0x5b))
        .await;
    for node in [&gone, &kept] {
        assert_result(&h.publish_prosody(node, "localhost", "hi", None).await);
    }
    let outbox = "pushgate_outbox_entries{provider=\"apns\"}";
    assert!(eventually(WAIT, || async { h.gateway.metric(outbox).await == 2.0 }).await);

    assert_result(&h.iq(&tigase_account_removed(&gone)).await);

    // The event was not queued as a push (alice's entry would still be there,
    // merged) and alice's pending push went with her registration.
    assert!(
        eventually(WAIT, || async { h.gateway.metric(outbox).await == 1.0 }).await,
        "outbox: {}",
        h.gateway.metric(outbox).await
    );
    let metric = |series: &'static str| h.gateway.metric(series);
    assert_eq!(
        metric("pushgate_publishes_total{outcome=\"account-removed\"}").await,
        1.0
    );
    assert_eq!(
        metric("pushgate_notifications_total{provider=\"apns\",fate=\"account-removed\"}").await,
        1.0
    );
    let reply = h.publish_prosody(&gone, "localhost", "hi", None).await;
    assert_eq!(
        error_of(&reply),
        Some(("cancel".into(), "item-not-found".into()))
    );
    // An event for a node that is already gone is item-not-found too: Tigase
    // ignores the answer, and nothing else is touched.
    let reply = h.iq(&tigase_account_removed(&gone)).await;
    assert_eq!(
        error_of(&reply),
        Some(("cancel".into(), "item-not-found".into()))
    );
    assert_result(&h.publish_prosody(&kept, "localhost", "again", None).await);
    assert!(h.mock.pushes().is_empty(), "nothing reached the provider");
}

#[tokio::test]
async fn an_absurd_token_lifetime_from_the_token_endpoint_is_clamped() {
    let mut h = Harness::start().await;
    // Added to the clock as is, this would overflow it.
    h.mock.token_lifetime(usize::MAX);
    let node = h
        .register("alice@localhost/phone", "fcm", "fcm-forever")
        .await;
    assert_result(&h.iq(&ejabberd_publish(&node, "localhost")).await);
    let delivered = eventually(WAIT, || async {
        !h.mock.delivered("fcm-forever").is_empty()
    })
    .await;
    assert!(delivered, "{}", h.gateway.log());
}

/// The token endpoint in trouble: it is asked once per backoff step however
/// many pushes wait for a token, its answers are read only up to a cap (a
/// 4 MiB error page), a redirect is not followed (it would carry the signed
/// grant elsewhere), and the pushes go out once it issues a token again.
#[tokio::test]
async fn a_failing_token_endpoint_is_asked_once_per_backoff_step() {
    let mut h = Harness::start_with(|mut c| {
        c.delivery = "coalesce_window_ms = 0\nretry_base_ms = 50\nretry_max_ms = 200\n".into();
        c
    })
    .await;
    let stolen = format!("{}/stolen", h.mock.url);
    h.mock.token_answers([
        (503, "x".repeat(4 << 20), None),
        (503, String::new(), None),
        (302, String::new(), Some(stolen)),
    ]);
    let mut tokens = Vec::new();
    for i in 0..20 {
        let token = format!("fcm-backoff-{i}");
        let node = h
            .register(&format!("user{i}@localhost/r"), "fcm", &token)
            .await;
        assert_result(&h.iq(&ejabberd_publish(&node, "localhost")).await);
        tokens.push(token);
    }
    let all = eventually(std::time::Duration::from_secs(20), || async {
        tokens.iter().all(|t| !h.mock.delivered(t).is_empty())
    })
    .await;
    assert!(all, "not every push went out once the endpoint recovered");
    // Pushes were retried every 50-200 ms meanwhile; the endpoint was asked
    // 1 s, 2 s, then 4 s after each failure.
    let grants = h.mock.grants();
    assert_eq!(grants.len(), 4, "503, 503, 302, then a token");
    for (pair, backoff_ms) in grants.windows(2).zip([1000, 2000, 4000]) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= std::time::Duration::from_millis(backoff_ms - 50),
            "asked again after {gap:?}"
        );
    }
    assert!(
        !h.mock.pushes().iter().any(|p| p.path == "/stolen"),
        "the redirect was followed"
    );
}
