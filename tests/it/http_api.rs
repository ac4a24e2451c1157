//! The HTTP endpoints: Tigase REST unregister, health, readiness, metrics.

use crate::support::gateway::TestConfig;
use crate::support::harness::{Harness, error_of, in_process, next_id, node_of, register_one_step};
use crate::support::xmpp_server::FakeServer;
use crate::support::{SECRET, WAIT, apns_token, eventually};
use rustls::pki_types::pem::PemObject as _;
use serde_json::json;

#[tokio::test]
async fn rest_unregister_on_both_paths() {
    let mut h = Harness::start().await;
    let token_a = apns_token(0x0a);
    let token_b = apns_token(0x0b);
    let node_a = h.register("alice@localhost/r", "apns", &token_a).await;
    let node_b = h.register("alice@localhost/r", "apns", &token_b).await;

    let unregister = |path: &'static str, token: String| {
        let gw = &h.gateway;
        async move {
            gw.post_json(
                path,
                json!({"account": "Alice@localhost", "provider": "apns", "device-token": token.to_uppercase()}),
            )
            .await
        }
    };
    let (status, body) = unregister(
        "/rest/push/unregister-device/push.localhost",
        token_a.clone(),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, r#"{"result":"success"}"#));
    let (status, body) = unregister("/unregister-device/push.localhost", token_b.clone()).await;
    assert_eq!((status, body.as_str()), (200, r#"{"result":"success"}"#));
    let (status, body) = unregister("/unregister-device/push.localhost", token_b.clone()).await;
    assert_eq!((status, body.as_str()), (200, r#"{"result":"failure"}"#));
    let (status, _) = unregister(
        "/rest/push/unregister-device/other.localhost",
        token_a.clone(),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = h
        .gateway
        .post_json(
            "/rest/push/unregister-device/push.localhost",
            json!({"account": "alice@localhost"}),
        )
        .await;
    assert_eq!(status, 404, "a missing field answers 404");

    for node in [node_a, node_b] {
        let reply = h.publish_prosody(&node, "localhost", "hi", None).await;
        assert_eq!(
            error_of(&reply),
            Some(("cancel".into(), "item-not-found".into()))
        );
    }
}

/// A token that reads like a p2 device id (`p2:<id>`: FCM tokens may hold a
/// `:`) derives the node of that p2 device. Neither the REST unregister nor a
/// Tigase registration with it reaches the p2 registration: each identity
/// kind is a namespace of its own.
#[tokio::test]
async fn a_token_posing_as_a_p2_device_id_reaches_nothing() {
    let mut h = Harness::start_with(|mut c| {
        c.extra.push_str("\n[commands]\np2_fcm = \"fcm\"\n");
        c
    })
    .await;
    let reply = h
        .iq(&format!("<iq type='set' id='{}' from='dave@localhost/d' to='push.localhost'><command xmlns='http://jabber.org/protocol/commands' node='register-push-fcm' action='execute'><x xmlns='jabber:x:data' type='submit'><field var='token'><value>fcm-token-of-dave</value></field><field var='device-id'><value>dev1</value></field></x></command></iq>", next_id()))
        .await;
    let node = node_of(&reply).expect("p2 registration");
    let secret = field_of(&reply, "secret");

    let (status, body) = h
        .gateway
        .post_json(
            "/rest/push/unregister-device/push.localhost",
            json!({"account": "dave@localhost", "provider": "fcm", "device-token": "p2:dev1"}),
        )
        .await;
    assert_eq!((status, body.as_str()), (200, r#"{"result":"failure"}"#));

    let reply = h
        .iq(&register_one_step(
            "dave@localhost/d",
            "fcm",
            "p2:dev1",
            None,
        ))
        .await;
    assert_eq!(
        error_of(&reply),
        Some(("cancel".into(), "conflict".into())),
        "{}",
        String::from(&reply)
    );

    // The p2 registration is whole: its secret still opens it.
    let reply = h
        .publish_prosody(&node, "localhost", "hi", Some(&secret))
        .await;
    assert_eq!(error_of(&reply), None, "{}", String::from(&reply));
    let pushes = h.mock.wait_pushes(1, WAIT).await;
    assert!(
        pushes.iter().any(|p| p.body.contains("fcm-token-of-dave")),
        "{pushes:?}"
    );
}

/// REST calls are limited per client address: beyond the minute's budget,
/// 429 without touching the store.
#[tokio::test]
async fn rest_calls_are_rate_limited_per_client() {
    let h = Harness::start_with(|mut c| {
        c.http_keys.push_str("rest_per_minute = 3\n");
        c
    })
    .await;
    let call = || {
        h.gateway.post_json(
            "/rest/push/unregister-device/push.localhost",
            json!({"account": "a@localhost", "provider": "apns", "device-token": "00"}),
        )
    };
    for _ in 0..3 {
        assert_eq!(call().await.0, 200);
    }
    let (status, body) = call().await;
    assert_eq!((status, body.as_str()), (429, r#"{"result":"failure"}"#));
    assert_eq!(h.gateway.status("/healthz").await, Some(200), "not REST");
}

/// The value of field `var` in a completed command's result form.
fn field_of(reply: &xmpp_parsers::minidom::Element, var: &str) -> String {
    reply
        .get_child("command", "http://jabber.org/protocol/commands")
        .and_then(|c| c.get_child("x", "jabber:x:data"))
        .and_then(|x| x.children().find(|f| f.attr("var") == Some(var)))
        .map(|f| f.children().map(|v| v.text()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start(SECRET).await;
    let gateway = in_process(&TestConfig::new(server.port, dir.path()));
    let up = eventually(WAIT, || async {
        gateway.status("/healthz").await.is_some()
    })
    .await;
    assert!(up, "{}", gateway.log());
    assert_eq!(gateway.get("/healthz").await.0, 200);
    let (status, body) = gateway.get("/readyz").await;
    assert_eq!(status, 503, "not ready without a component session: {body}");
    assert!(body.contains("\"component_sessions\":0"), "{body}");
    let _conn = server.accept(WAIT).await;
    assert!(eventually(WAIT, || async { gateway.get("/readyz").await.0 == 200 }).await);
    drop(_conn);
    drop(gateway);

    let mut h = Harness::start().await;
    let node = h
        .register("alice@localhost/r", "apns", &apns_token(1))
        .await;
    h.publish_prosody(&node, "localhost", "hi", None).await;
    h.publish_prosody("unknown", "localhost", "hi", None).await;
    h.mock.wait_pushes(1, WAIT).await;
    let delivered = eventually(WAIT, || async {
        h.gateway
            .get("/metrics")
            .await
            .1
            .contains(r#"pushgate_deliveries_total{outcome="delivered",provider="apns"} 1"#)
    })
    .await;
    let (_, metrics) = h.gateway.get("/metrics").await;
    assert!(delivered, "{metrics}");
    for line in [
        r#"pushgate_publishes_total{outcome="accepted"} 1"#,
        r#"pushgate_publishes_total{outcome="item-not-found"} 1"#,
        "pushgate_registrations 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    assert_eq!(
        crate::support::gateway::family_sum(&metrics, "pushgate_component_sessions_up"),
        1.0,
        "{metrics}"
    );
    assert!(
        metrics.contains("pushgate_component_sessions_up{server=\"127.0.0.1:"),
        "a series per server: {metrics}"
    );
    let request = r#"http_client_request_duration_seconds_count{error_type="",http_request_method="POST",http_response_status_code="200",provider="apns",server_address="127.0.0.1"}"#;
    assert_eq!(
        crate::support::gateway::series_value(&metrics, request),
        1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn the_http_listener_serves_https_when_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mock = crate::support::mock_provider::MockProvider::start(dir.path()).await;
    let cert = dir.path().join("http-cert.pem");
    let key = dir.path().join("http-key.pem");
    std::fs::write(&cert, &mock.pki.server_cert_pem).expect("cert");
    std::fs::write(&key, &mock.pki.server_key_pem).expect("key");
    let server = FakeServer::start(SECRET).await;
    let mut config = TestConfig::new(server.port, dir.path());
    config.http_tls = Some((cert, key));
    let gateway = in_process(&config);
    let _conn = server.accept(WAIT).await;

    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls::pki_types::CertificateDer::pem_file_iter(&mock.pki.ca_file).expect("ca") {
        roots.add(ca.expect("ca cert")).expect("add ca");
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .expect("client");
    let url = gateway.http().replace("http://", "https://");
    let ok = eventually(WAIT, || async {
        client
            .get(format!("{url}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() == 200)
    })
    .await;
    assert!(ok, "{}", gateway.log());
    let r = client
        .post(format!("{url}/rest/push/unregister-device/push.localhost"))
        .body(
            json!({"account": "a@localhost", "provider": "apns", "device-token": apns_token(1)})
                .to_string(),
        )
        .send()
        .await
        .expect("POST over HTTPS");
    assert_eq!(r.status().as_u16(), 404, "no provider apns configured here");
}

/// An admin listener takes `/metrics` and `/readyz` off the public one, and
/// slow clients (a trickled head or body) neither hold `/healthz` up nor
/// keep their connection past the request deadline.
#[tokio::test]
async fn slow_clients_and_the_admin_listener() {
    use crate::support::gateway::{free_port, get};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start(SECRET).await;
    let admin_port = free_port();
    let mut config = TestConfig::new(server.port, dir.path());
    config.http_keys =
        format!("admin_listen = \"127.0.0.1:{admin_port}\"\nrequest_timeout_ms = 500\n");
    let gateway = in_process(&config);
    let admin = format!("http://127.0.0.1:{admin_port}");
    let up = eventually(WAIT, || async {
        gateway.status("/healthz").await.is_some() && get(&admin, "/healthz").await.0 == 200
    })
    .await;
    assert!(up, "{}", gateway.log());

    // Roles: the public listener has no metrics or readiness; the admin one has.
    assert_eq!(gateway.get("/metrics").await.0, 404);
    assert_eq!(gateway.get("/readyz").await.0, 404);
    let (status, metrics) = get(&admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("pushgate_component_sessions_up"),
        "{metrics}"
    );
    assert!(get(&admin, "/readyz").await.1.contains("\"ready\""));
    let (status, body) = gateway
        .post_json(
            "/unregister-device/push.localhost",
            json!({"account": "a@localhost", "provider": "apns", "device-token": "00"}),
        )
        .await;
    // Served (an unknown device): the route's own answer, not the router's 404.
    assert_eq!(body, r#"{"result":"failure"}"#, "{status}");

    // 200 slow clients: half trickle a head, half a body.
    let address = gateway.http().trim_start_matches("http://").to_owned();
    let mut slow = Vec::new();
    for i in 0..200 {
        let mut s = tokio::net::TcpStream::connect(&address)
            .await
            .expect("connect");
        let start: &[u8] = if i % 2 == 0 {
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
        } else {
            b"POST /unregister-device/push.localhost HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"
        };
        s.write_all(start).await.expect("write");
        slow.push(s);
    }
    let started = std::time::Instant::now();
    assert_eq!(gateway.get("/healthz").await.0, 200);
    let waited = started.elapsed();
    assert!(
        waited < std::time::Duration::from_secs(1),
        "/healthz took {waited:?} behind 200 slow clients"
    );
    // Each slow client is answered 408 or cut off at the deadline; none is
    // kept (the read ends instead of waiting for our 5 s guard).
    for (i, mut s) in slow.into_iter().enumerate() {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            s.read_to_end(&mut answer),
        )
        .await;
        assert!(read.is_ok(), "slow client {i} still connected after 5 s");
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "slow client {i} got {text}"
        );
    }
}
