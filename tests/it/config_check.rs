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
    ];
    for (config, key) in cases {
        let (ok, out) = check(&config, &[]);
        assert!(!ok, "{key}: should fail");
        assert!(out.contains(key), "{key} not named in: {out}");
    }
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
