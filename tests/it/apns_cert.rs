//! APNs certificate authentication against a mock that, like APNs, completes
//! the TLS handshake only with a client certificate it trusts.

use crate::config_check::check;
use crate::support::gateway::{GatewayProcess, TestConfig};
use crate::support::harness::{
    TestGateway, assert_result, ejabberd_publish, in_process, register_node,
};
use crate::support::mock_provider::MockProvider;
use crate::support::pki::{ClientCert, Signer, client_cert};
use crate::support::xmpp_server::{Component, FakeServer};
use crate::support::{SECRET, WAIT, apns_token, eventually};

const BUNDLE: &str = "com.example.certapp";

/// 2099-01-01T00:00:00Z, the test certificates' expiry.
const NOT_AFTER: u64 = 4_070_908_800;

/// A gateway with APNs certificate auth `keys` against `mock` (in this
/// process, or the binary when the test reads its log), one device
/// registered and one publish accepted. Returns the gateway, the device token,
/// and the server side of its stream (kept open).
async fn one_publish(
    dir: &std::path::Path,
    mock: &MockProvider,
    keys: &str,
    process: bool,
    seed: u8,
) -> (TestGateway, String, FakeServer, Component) {
    let server = FakeServer::start(SECRET).await;
    let config = TestConfig::new(server.port, dir).with_apns_auth(mock, keys);
    let gateway = if process {
        TestGateway::Process(GatewayProcess::start(&config, dir))
    } else {
        in_process(&config)
    };
    let mut conn = server.accept(WAIT).await;
    let token = apns_token(seed);
    let node = register_node(&mut conn, "carol@localhost/r", "apns", &token).await;
    assert_result(&conn.iq(&ejabberd_publish(&node, "localhost"), WAIT).await);
    (gateway, token, server, conn)
}

async fn mock_and_cert(dir: &std::path::Path, trusted: bool) -> (MockProvider, ClientCert) {
    let mock = MockProvider::start_requiring_client_cert(dir).await;
    let signer = if trusted {
        Signer::TestCa(&mock.pki)
    } else {
        Signer::Stranger
    };
    let cert = client_cert(dir, "apns-cert", signer, BUNDLE, (2099, 1, 1));
    (mock, cert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_delivers_without_a_token_to_the_certificate_topic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mock, cert) = mock_and_cert(dir.path(), true).await;
    let (gateway, token, _server, _conn) =
        one_publish(dir.path(), &mock, &cert.pem_keys(), false, 0xc1).await;

    let pushes = mock.wait_pushes(1, WAIT).await;
    let push = pushes
        .first()
        .expect("delivered over the client-certificate connection");
    assert_eq!(push.path, format!("/3/device/{token}"));
    assert_eq!(
        push.header("authorization"),
        None,
        "no token with a certificate"
    );
    assert_eq!(
        push.header("apns-topic"),
        Some(BUNDLE),
        "the topic is the certificate's UID"
    );
    // Seconds left until 2099-01-01, within the minute the test takes.
    let left = gateway
        .metric("pushgate_provider_certificate_expiry_seconds{provider=\"apns\"}")
        .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let expected = (NOT_AFTER - now) as f64;
    assert!((left - expected).abs() < 60.0, "{left} vs {expected}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_a_misconfiguration_that_keeps_notifications() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mock, cert) = mock_and_cert(dir.path(), false).await;
    let (gateway, _, _server, _conn) =
        one_publish(dir.path(), &mock, &cert.pem_keys(), false, 0xc2).await;

    let unhealthy = eventually(WAIT, || async {
        gateway
            .metric("pushgate_deliveries_total{provider=\"apns\",outcome=\"misconfigured\"}")
            .await
            >= 1.0
            && gateway
                .metric("pushgate_provider_healthy{provider=\"apns\"}")
                .await
                == 0.0
    })
    .await;
    assert!(unhealthy, "{}", gateway.log());
    let kept = eventually(WAIT, || async {
        gateway
            .metric("pushgate_outbox_entries{provider=\"apns\"}")
            .await
            == 1.0
    })
    .await;
    assert!(kept, "the notification is kept: {}", gateway.log());
    let (_, ready) = gateway.get("/readyz").await;
    assert!(
        ready.contains("cert_file"),
        "readyz names the setting: {ready}"
    );
    assert!(mock.pushes().is_empty());
}

#[tokio::test]
async fn check_config_reports_the_expiry_and_refuses_an_expired_certificate_with_its_date() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mock = MockProvider::start_requiring_client_cert(dir.path()).await;
    let valid = client_cert(
        dir.path(),
        "valid",
        Signer::TestCa(&mock.pki),
        BUNDLE,
        (2099, 1, 1),
    );
    let config = TestConfig::new(5347, dir.path()).with_apns_auth(&mock, &valid.pem_keys());
    let (ok, out) = check(&config.to_toml(), &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("providers[apns]: the client certificate expires on") && out.contains("2099"),
        "{out}"
    );

    let expired = client_cert(
        dir.path(),
        "expired",
        Signer::TestCa(&mock.pki),
        BUNDLE,
        (2021, 3, 4),
    );
    let config = TestConfig::new(5347, dir.path()).with_apns_auth(&mock, &expired.pem_keys());
    let (ok, out) = check(&config.to_toml(), &[]);
    assert!(!ok, "an expired certificate must be refused: {out}");
    assert!(out.contains("providers[apns].cert_file"), "{out}");
    assert!(out.contains("expired on") && out.contains("2021"), "{out}");
    let key = std::fs::read_to_string(&expired.key_file).expect("key");
    for line in key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!out.contains(line), "key material in the output: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p12_certificate_delivers_and_its_password_reaches_no_log_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mock, cert) = mock_and_cert(dir.path(), true).await;
    let password = "correct-horse-7f3a";
    let p12 = cert.to_p12(password, true);
    let keys = format!(
        "p12_file = \"{}\"\np12_password = \"{password}\"",
        p12.display()
    );
    // In a process: its log lines are what is checked.
    let (gateway, _, _server, _conn) = one_publish(dir.path(), &mock, &keys, true, 0xc3).await;
    let pushes = mock.wait_pushes(1, WAIT).await;
    let push = pushes.first().expect("delivered with the .p12 certificate");
    assert_eq!(push.header("authorization"), None);
    assert_eq!(push.header("apns-topic"), Some(BUNDLE));

    let log = gateway.log();
    assert!(log.contains("APNs certificate auth"), "{log}");
    assert!(!log.contains(password), "the .p12 password leaked:\n{log}");
    let key = std::fs::read_to_string(&cert.key_file).expect("key");
    for line in key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!log.contains(line), "key material in the log:\n{log}");
    }

    // A wrong password (from a file) is named, and not printed.
    let p12 = cert.to_p12(password, false);
    let password_file = dir.path().join("p12-password");
    std::fs::write(&password_file, "not-the-password-91c\n").expect("password file");
    let keys = format!(
        "p12_file = \"{}\"\np12_password_file = \"{}\"",
        p12.display(),
        password_file.display()
    );
    let config = TestConfig::new(5347, dir.path()).with_apns_auth(&mock, &keys);
    let (ok, out) = check(&config.to_toml(), &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("providers[apns].p12_file") && out.contains("wrong p12_password"),
        "{out}"
    );
    assert!(!out.contains("not-the-password-91c"), "{out}");
}

/// (year, month, day) of `days` days from now (civil calendar, UTC).
fn days_from_now(days: u64) -> (i32, u8, u8) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Howard Hinnant's days-to-civil algorithm.
    let z = (now / 86_400 + days) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_near_its_end_is_warned_about_and_a_topic_it_does_not_list_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mock = MockProvider::start_requiring_client_cert(dir.path()).await;
    let cert = client_cert(
        dir.path(),
        "ending",
        Signer::TestCa(&mock.pki),
        BUNDLE,
        days_from_now(10),
    );
    let server = FakeServer::start(SECRET).await;
    let keys = format!("{}\ntopic = \"com.example.other\"", cert.pem_keys());
    let config = TestConfig::new(server.port, dir.path()).with_apns_auth(&mock, &keys);
    // In a process: the WARN lines are what an operator gets.
    let gateway = GatewayProcess::start(&config, dir.path());
    let _conn = server.accept(WAIT).await;
    assert!(
        gateway.wait_log("expires soon: renew it", WAIT).await,
        "{}",
        gateway.log()
    );
    assert!(
        gateway.log().contains("days_left=9") || gateway.log().contains("days_left=10"),
        "{}",
        gateway.log()
    );
    assert!(
        gateway.log().contains("does not list this topic"),
        "{}",
        gateway.log()
    );
    let left = gateway
        .metric("pushgate_provider_certificate_expiry_seconds{provider=\"apns\"}")
        .await;
    assert!((8.0 * 86_400.0..=10.0 * 86_400.0).contains(&left), "{left}");
}
