//! The component stream: handshake, disco, bad input, reconnects, shutdown.

use crate::support::gateway::{GatewayProcess, TestConfig};
use crate::support::harness::{
    Harness, TestGateway, assert_result, error_of, next_id, node_of, ping, prosody_publish,
    register_one_step,
};
use crate::support::mock_provider::MockProvider;
use crate::support::xmpp_server::{FakeServer, Verdict};
use crate::support::{SECRET, WAIT};
use std::time::Duration;

#[tokio::test]
async fn disco_describes_a_push_service_with_commands_and_providers() {
    let mut h = Harness::start().await;
    let info = h
        .iq(&format!("<iq type='get' id='{}' from='alice@localhost/phone' to='push.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>", next_id()))
        .await;
    let query = info
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .expect("query");
    assert!(query.children().any(|c| c.name() == "identity"
        && c.attr("category") == Some("pubsub")
        && c.attr("type") == Some("push")));
    let features: Vec<&str> = query.children().filter_map(|c| c.attr("var")).collect();
    for f in [
        "urn:xmpp:push:0",
        "http://jabber.org/protocol/commands",
        "apns",
        "fcm",
    ] {
        assert!(features.contains(&f), "missing feature {f}: {features:?}");
    }
    let items = h
        .iq(&format!("<iq type='get' id='{}' from='alice@localhost/phone' to='push.localhost'><query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/></iq>", next_id()))
        .await;
    let nodes: Vec<String> = items
        .get_child("query", "http://jabber.org/protocol/disco#items")
        .expect("items")
        .children()
        .filter_map(|i| i.attr("node").map(str::to_owned))
        .collect();
    assert_eq!(nodes, ["register-device", "unregister-device"]);
    let pong = h.iq(&ping()).await;
    assert_eq!(pong.attr("type"), Some("result"));
}

#[tokio::test]
async fn malformed_stanzas_get_stanza_errors_and_the_stream_survives() {
    let mut h = Harness::start().await;
    let cases = [
        (
            format!(
                "<iq type='set' id='{}' from='localhost'><a xmlns='x'/><b xmlns='x'/></iq>",
                next_id()
            ),
            ("modify", "bad-request"),
        ),
        (
            format!(
                "<iq type='get' id='{}' from='alice@localhost/r'><vCard xmlns='vcard-temp'/></iq>",
                next_id()
            ),
            ("cancel", "service-unavailable"),
        ),
        (
            format!(
                "<iq type='set' id='{}' from='localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish/></pubsub></iq>",
                next_id()
            ),
            ("modify", "bad-request"),
        ),
        (
            format!(
                "<iq type='set' id='{}' from='alice@localhost/r'><command xmlns='http://jabber.org/protocol/commands'/></iq>",
                next_id()
            ),
            ("modify", "bad-request"),
        ),
        (
            format!(
                "<iq type='whatever' id='{}' from='localhost'><x xmlns='y'/></iq>",
                next_id()
            ),
            ("modify", "bad-request"),
        ),
    ];
    for (xml, (kind, condition)) in cases {
        h.conn
            .write("<message from='bob@localhost'><body>ignored</body></message>")
            .await;
        let reply = h.iq(&xml).await;
        assert_eq!(
            error_of(&reply),
            Some((kind.to_owned(), condition.to_owned())),
            "{xml} -> {}",
            String::from(&reply)
        );
    }
    // Still the same stream: disco answers.
    let info = h
        .iq(&format!("<iq type='get' id='{}' from='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>", next_id()))
        .await;
    assert_eq!(info.attr("type"), Some("result"));
}

#[tokio::test]
async fn an_oversized_stanza_ends_the_stream_with_policy_violation_then_reconnects() {
    let mut h = Harness::start().await;
    let big = format!(
        "<message from='bob@localhost'><body>{}</body></message>",
        "x".repeat(70_000)
    );
    h.conn.write(&big).await;
    let error = h.conn.next_stanza(WAIT).await.expect("a stream error");
    assert_eq!(error.name(), "error");
    assert!(error.has_child("policy-violation", "urn:ietf:params:xml:ns:xmpp-streams"));
    assert!(h.conn.wait_end(WAIT).await);
    let mut again = h.server.accept(WAIT).await;
    let pong = again.iq(&ping(), WAIT).await;
    assert_eq!(pong.attr("type"), Some("result"));
}

#[tokio::test]
async fn an_idle_stream_is_kept_alive_with_whitespace() {
    let mut h = Harness::start_with(|mut c| {
        c.keepalive_s = 1;
        c
    })
    .await;
    let before = h.conn.received_bytes;
    // Nothing to say for a while: only keepalives arrive, and no stanza.
    assert!(
        h.conn
            .next_stanza(Duration::from_millis(2500))
            .await
            .is_none()
    );
    assert!(h.conn.received_bytes >= before + 2, "no keepalive in 2.5 s");
    let pong = h.iq(&ping()).await;
    assert_eq!(pong.attr("type"), Some("result"), "the stream is still up");
}

#[tokio::test]
async fn a_wrong_secret_is_logged_as_such_and_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start(SECRET).await;
    let mut config = TestConfig::new(server.port, dir.path());
    config.secret = "not-the-secret".into();
    let gateway = GatewayProcess::start(&config, dir.path());
    // Refused, and after a back-off tried again.
    for _ in 0..2 {
        let refused = server.accept_with(Verdict::Check, WAIT).await.err();
        assert_eq!(refused.as_deref(), Some("not-authorized"));
    }
    assert!(
        gateway
            .wait_log("component.secret does not match", WAIT)
            .await,
        "{}",
        gateway.log()
    );
}

#[tokio::test]
async fn an_unknown_component_jid_is_logged_as_such() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start(SECRET).await;
    let gateway = GatewayProcess::start(&TestConfig::new(server.port, dir.path()), dir.path());
    assert_eq!(
        server
            .accept_with(Verdict::HostUnknown, WAIT)
            .await
            .err()
            .as_deref(),
        Some("host-unknown")
    );
    assert!(
        gateway
            .wait_log("does not know the component push.localhost", WAIT)
            .await,
        "{}",
        gateway.log()
    );
}

#[tokio::test]
async fn the_gateway_reconnects_when_the_server_goes_away_and_comes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mock = MockProvider::start(dir.path()).await;
    let server = FakeServer::start(SECRET).await;
    let port = server.port;
    let config = TestConfig::new(port, dir.path()).with_mock_providers(&mock);
    let gateway = GatewayProcess::start(&config, dir.path());
    let mut conn = server.accept(WAIT).await;
    let token = crate::support::apns_token(1);
    let reply = conn
        .iq(
            &register_one_step("alice@localhost/phone", "apns", &token, None),
            WAIT,
        )
        .await;
    let node = node_of(&reply).expect("registered");
    // The server crashes: the connection and the listener are gone.
    drop(conn);
    drop(server);
    assert!(
        gateway.wait_log("component session lost", WAIT).await,
        "{}",
        gateway.log()
    );
    assert!(
        gateway.wait_log("connection refused", WAIT).await,
        "{}",
        gateway.log()
    );
    // It comes back on the same port; the gateway finds it by itself.
    let server = FakeServer::restart_on(port, SECRET).await;
    let mut conn = server.accept(WAIT).await;
    let reply = conn
        .iq(&prosody_publish(&node, "localhost", "hello", None), WAIT)
        .await;
    assert_result(&reply);
    assert_eq!(mock.wait_pushes(1, WAIT).await.len(), 1);
}

#[tokio::test]
async fn several_servers_and_connections_are_all_kept_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = FakeServer::start(SECRET).await;
    let b = FakeServer::start(SECRET).await;
    let mut config = TestConfig::new(a.port, dir.path());
    config.xmpp_ports.push(b.port);
    config.connections = 2;
    let gateway = crate::support::harness::in_process(&config);
    let mut conns = Vec::new();
    for server in [&a, &a, &b, &b] {
        conns.push(server.accept(WAIT).await);
    }
    let up =
        crate::support::eventually(WAIT, || async { gateway.sessions_up().await == 4.0 }).await;
    assert!(up, "{}", gateway.get("/metrics").await.1);
    for conn in &mut conns {
        let pong = conn.iq(&ping(), WAIT).await;
        assert_eq!(pong.attr("type"), Some("result"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_deliveries_finish() {
    let mut h = Harness::start_process_with(|c| c).await;
    let token = crate::support::apns_token(0x51);
    h.mock.delay(&token, Duration::from_millis(1500));
    let node = h.register("alice@localhost/phone", "apns", &token).await;
    let reply = h.publish_prosody(&node, "localhost", "hi", None).await;
    assert_eq!(reply.attr("type"), Some("result"));
    // The provider is still answering when the gateway is told to stop.
    wait_in_flight(&h.gateway).await;
    assert!(h.mock.pushes().is_empty());
    let gateway = h.gateway.process();
    let status = tokio::task::block_in_place(|| gateway.terminate(WAIT)).expect("exits");
    assert!(status.success(), "{status:?}\n{}", h.gateway.log());
    let log = h.gateway.log();
    let delivered = format!("node={node}");
    assert!(
        log.lines()
            .any(|l| l.contains("delivered") && l.contains(&delivered)),
        "the in-flight delivery was completed before exit:\n{log}"
    );
    assert!(log.contains("deliveries in flight finished"), "{log}");
}

#[tokio::test]
async fn sigterm_closes_the_stream_and_exits_cleanly() {
    let mut h = Harness::start_process_with(|c| c).await;
    let status = h
        .gateway
        .process()
        .terminate(WAIT)
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", h.gateway.log());
    assert!(h.conn.wait_end(WAIT).await, "no </stream:stream>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_within_one_deadline_and_the_outbox_keeps_what_was_in_flight() {
    let mut h = Harness::start_process_with(|mut c| {
        c.shutdown_grace_s = 3;
        c.provider_keys = "request_timeout_s = 60\n".into();
        c
    })
    .await;
    // The provider never answers within the grace period.
    let token = crate::support::apns_token(0x52);
    h.mock.delay(&token, Duration::from_secs(60));
    let node = h.register("alice@localhost/phone", "apns", &token).await;
    let reply = h.publish_prosody(&node, "localhost", "hi", None).await;
    assert_eq!(reply.attr("type"), Some("result"));
    wait_in_flight(&h.gateway).await;

    let asked = std::time::Instant::now();
    let gateway = h.gateway.process();
    let status = tokio::task::block_in_place(|| gateway.terminate(WAIT)).expect("exits");
    let took = asked.elapsed();
    assert!(status.success(), "{status:?}\n{}", h.gateway.log());
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_millis(4500),
        "exited after {took:?}, not at the 3 s deadline:\n{}",
        h.gateway.log()
    );
    assert!(
        h.gateway.log().contains("shutdown deadline passed"),
        "{}",
        h.gateway.log()
    );

    // The push is still in the outbox: the next process delivers it.
    h.mock.delay(&token, Duration::ZERO);
    h.gateway = TestGateway::Process(crate::support::gateway::GatewayProcess::start(
        &h.config,
        h._dir.path(),
    ));
    let _conn = h.server.accept(WAIT).await;
    let delivered =
        crate::support::eventually(WAIT, || async { !h.mock.delivered(&token).is_empty() }).await;
    assert!(delivered, "{}", h.gateway.log());
}

/// Waits until the gateway has a request to the APNs mock in flight.
async fn wait_in_flight(gateway: &TestGateway) {
    let in_flight = crate::support::eventually(WAIT, || async {
        gateway
            .metric("pushgate_in_flight{provider=\"apns\"}")
            .await
            >= 1.0
    })
    .await;
    assert!(in_flight, "{}", gateway.log());
}

/// Direct TLS on the component link (ejabberd's `tls: true`): the gateway
/// checks the server's certificate against `ca_file` and the address it
/// dials, then serves as usual; a server whose certificate it does not trust
/// is never sent the handshake.
#[tokio::test]
async fn the_component_link_speaks_direct_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mock = MockProvider::start(dir.path()).await;
    let tls = || mock.pki.server_tls().expect("server TLS");
    let server = FakeServer::start_tls(SECRET, tls()).await;
    let mut config = TestConfig::new(server.port, dir.path()).with_mock_providers(&mock);
    config.server_keys = format!("tls = true\nca_file = \"{}\"\n", mock.pki.ca_file.display());
    let _gateway = crate::support::harness::in_process(&config);
    let mut conn = server.accept(WAIT).await;
    let token = crate::support::apns_token(0x71);
    let reply = conn
        .iq(
            &register_one_step("tess@localhost/r", "apns", &token, None),
            WAIT,
        )
        .await;
    let node = node_of(&reply).expect("registered over TLS");
    assert_result(
        &conn
            .iq(&prosody_publish(&node, "localhost", "hi", None), WAIT)
            .await,
    );
    assert_eq!(mock.wait_pushes(1, WAIT).await.len(), 1);

    // Not trusted (no ca_file): the TLS handshake fails, nothing is sent.
    let other_dir = tempfile::tempdir().expect("tempdir");
    let untrusting = FakeServer::start_tls(SECRET, tls()).await;
    let mut config = TestConfig::new(untrusting.port, other_dir.path());
    config.server_keys = "tls = true\n".into();
    let gateway = crate::support::harness::in_process(&config);
    let refused = untrusting.accept_with(Verdict::Check, WAIT).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("TLS handshake failed")),
        "{:?}",
        refused.map(|_| "authenticated")
    );
    assert_eq!(gateway.sessions_up().await, 0.0);
}
