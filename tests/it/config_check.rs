//! `pushgate check-config`: a valid file passes, a broken one names the key.

use crate::support::gateway::{TestConfig, binary};
use crate::support::mock_provider::MockProvider;
use std::process::Command;

pub(crate) fn check(config: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pushgate.toml");
    std::fs::write(&path, config).expect("write");
    let mut cmd = Command::new(binary());
    cmd.arg("check-config").arg("--config").arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run check-config");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn a_valid_config_passes_and_broken_ones_name_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mock = MockProvider::start(dir.path()).await;
    let good = TestConfig::new(5347, dir.path())
        .with_mock_providers(&mock)
        .to_toml();
    let (ok, out) = check(&good, &[]);
    assert!(ok, "{out}");
    assert!(out.contains("configuration is valid"), "{out}");

    let cases = [
        (
            good.replace("secret = \"s3cr3t\"", "secret = \"\""),
            "component.secret",
        ),
        (
            good.replace("listen = \"127.0.0.1:", "listen = \"nowhere:"),
            "http.listen",
        ),
        (
            good.replace("jid = \"push.localhost\"", "jid = \"user@push.localhost\""),
            "component.jid",
        ),
        (
            good.replace("keepalive_s = 30", "keepalive_s = 30\ncolour = \"red\""),
            "colour",
        ),
        (good.replace("port = 5347", "port = \"high\""), "port"),
        (
            good.replace("AuthKey_TESTKEY01.p8", "missing.p8"),
            "providers[apns].key_file",
        ),
        (
            good.replace("service-account.json", "nope.json"),
            "providers[fcm].service_account_file",
        ),
        (
            good.replace("test-ca.pem", "AuthKey_TESTKEY01.p8"),
            "providers[apns].ca_file",
        ),
        (
            good.replace("topic = \"com.example.app\"\n", ""),
            "providers[apns].topic",
        ),
        (good.replace("kind = \"fcm\"", "kind = \"gcm\""), "kind"),
        (
            format!("{good}\n[telemetry]\notlp_endpoint = \"collector:4317\"\n"),
            "telemetry.otlp_endpoint",
        ),
        (
            format!("{good}\n[telemetry]\notlp_protocol = \"http/json\"\n"),
            "telemetry.otlp_protocol",
        ),
        (
            format!("{good}\n[telemetry.otlp_headers]\n\"Bad Header\" = \"v\"\n"),
            "telemetry.otlp_headers.Bad Header",
        ),
        (
            format!("{good}\n[registrations]\nallowed_domains = [\"user@example.com\"]\n"),
            "registrations.allowed_domains",
        ),
        (
            format!("{good}\n[registrations]\nunpublished_expiry_hours = -1.0\n"),
            "registrations.unpublished_expiry_hours",
        ),
        (
            good.replace("connections = 1\n", "connections = 1\nca_file = \"/etc/ca.pem\"\n"),
            "component.servers.tls",
        ),
        (
            good.replace("connections = 1\n", "connections = 1\ntls = true\nca_file = \"/nonexistent/ca.pem\"\n"),
            "component.servers.tls",
        ),
        (
            good.replace(
                "[store]\n",
                "[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\ntls_ca_file = \"/etc/ca.pem\"\n",
            ),
            "store.tls_ca_file",
        ),
    ];
    for (config, key) in cases {
        let (ok, out) = check(&config, &[]);
        assert!(!ok, "{key}: should fail");
        assert!(out.contains(key), "{key} not named in: {out}");
    }
    // A standard variable asking for a protocol not spoken, a ratio out of range.
    let (ok, out) = check(&good, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]);
    assert!(!ok && out.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{out}");
    let (ok, out) = check(&good, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]);
    assert!(ok, "{out}");
    let (ok, out) = check(
        &format!("{good}\n[telemetry]\ntrace_sample_ratio = 1.5\n"),
        &[],
    );
    assert!(!ok && out.contains("telemetry.trace_sample_ratio"), "{out}");
    // An environment override fixes the file.
    let broken = good.replace("secret = \"s3cr3t\"", "secret = \"\"");
    let (ok, out) = check(&broken, &[("PUSHGATE_COMPONENT__SECRET", "from-env")]);
    assert!(ok, "{out}");
}

#[tokio::test]
async fn the_gateway_refuses_to_start_on_a_bad_key_file_and_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mock = MockProvider::start(dir.path()).await;
    let config = TestConfig::new(5347, dir.path())
        .with_mock_providers(&mock)
        .to_toml()
        .replace("AuthKey_TESTKEY01.p8", "missing.p8");
    let path = dir.path().join("pushgate.toml");
    std::fs::write(&path, config).expect("write");
    let out = Command::new(binary())
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run the gateway");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("providers[apns].key_file"), "{stderr}");
}

/// `[cluster]`: every key is checked, each mistake named; the TLS files are
/// read and parsed.
#[tokio::test]
async fn cluster_settings_are_checked_and_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mock = MockProvider::start(dir.path()).await;
    let mut config = TestConfig::new(5347, dir.path()).with_mock_providers(&mock);
    config.store_keys = "backend = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\n".into();
    let cluster = "\n[cluster]\nnode_id = \"n1\"\nlisten = \"127.0.0.1:7700\"\nsecret = \"0123456789abcdef0123\"\n";
    let good = format!("{}{cluster}", config.to_toml());
    let (ok, out) = check(&good, &[]);
    assert!(ok, "{out}");

    let pem = dir.path().join("garbage.pem");
    std::fs::write(&pem, "not a certificate").expect("write");
    let tls = format!(
        "ca_file = \"{p}\"\ncert_file = \"{p}\"\nkey_file = \"{p}\"\n",
        p = pem.display()
    );
    let cases = [
        (
            good.replace("backend = \"redis\"", "backend = \"embedded\""),
            "store.backend",
        ),
        (
            good.replace("secret = \"0123456789abcdef0123\"", "secret = \"short\""),
            "cluster.secret",
        ),
        (
            good.replace("secret = \"0123456789abcdef0123\"\n", ""),
            "cluster.secret",
        ),
        (
            good.replace("listen = \"127.0.0.1:7700\"", "listen = \"anywhere\""),
            "cluster.listen",
        ),
        (
            format!("{good}lease_ttl_ms = 5000\nfence_after_ms = 6000\n"),
            "cluster.fence_after_ms",
        ),
        (
            format!("{good}ca_file = \"/nonexistent.pem\"\n"),
            "cluster.ca_file",
        ),
        (format!("{good}{tls}"), "cluster.cert_file"),
        (format!("{good}colour = \"red\"\n"), "colour"),
    ];
    for (text, key) in cases {
        let (ok, out) = check(&text, &[]);
        assert!(!ok, "accepted a config that should name {key}");
        assert!(out.contains(key), "{key} not named: {out}");
    }
    // The secret from the environment, as a Kubernetes Secret would give it.
    let bare = good.replace("secret = \"0123456789abcdef0123\"\n", "");
    let (ok, out) = check(
        &bare,
        &[("PUSHGATE_CLUSTER__SECRET", "from-the-environment-0123")],
    );
    assert!(ok, "{out}");
}

/// A cluster node whose gRPC port is taken stops with an error naming
/// `cluster.listen`, not a panic.
#[tokio::test]
async fn a_cluster_node_whose_port_is_taken_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let mut config = TestConfig::new(5347, dir.path());
    config.store_keys = "backend = \"redis\"\nurl = \"redis://127.0.0.1:1/0\"\n".into();
    let text = format!(
        "{}\n[cluster]\nnode_id = \"n1\"\nlisten = \"127.0.0.1:{port}\"\nsecret = \"0123456789abcdef0123\"\n",
        config.to_toml()
    );
    let path = dir.path().join("pushgate.toml");
    std::fs::write(&path, text).expect("write");
    let mut child = Command::new(binary())
        .arg("--config")
        .arg(&path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the gateway");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "still running"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    assert!(!status.success());
    assert!(stderr.contains("cluster.listen"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    drop(taken);
}
