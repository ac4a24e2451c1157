//! Real Prosody and ejabberd, real XMPP clients (slixmpp), the real gateway, and
//! the mock providers: a device registers through its server, enables push, goes
//! offline, and a message to it reaches the mock as the right push.

use crate::support::gateway::{GatewayProcess, TestConfig};
use crate::support::mock_provider::MockProvider;
use crate::support::servers::{Kind, XmppClient, XmppServer};
use crate::support::{JID, SECRET, WAIT, apns_token, eventually};
use serde_json::Value;
use std::time::Duration;
use tempfile::TempDir;

/// One server, the gateway connected to it, and the mock providers.
struct Interop {
    client: XmppClient,
    mock: MockProvider,
    gateway: GatewayProcess,
    server: XmppServer,
    _dir: TempDir,
}

impl Interop {
    async fn start(kind: Kind) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mock = MockProvider::start(dir.path()).await;
        let server =
            tokio::task::block_in_place(|| XmppServer::start(kind, dir.path(), JID, SECRET));
        let config = TestConfig::new(server.component_port, dir.path()).with_mock_providers(&mock);
        let gateway = GatewayProcess::start(&config, dir.path());
        let ready = eventually(Duration::from_secs(20), || async {
            GatewayProcess::client()
                .get(format!("{}/readyz", gateway.http))
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 200)
        })
        .await;
        assert!(
            ready,
            "gateway did not connect to {kind:?}:\n{}\n{}",
            gateway.log(),
            server.log_tail()
        );
        Self {
            client: XmppClient::new(&server),
            mock,
            gateway,
            server,
            _dir: dir,
        }
    }

    fn client(&self, user: &str, args: &[&str]) -> Value {
        tokio::task::block_in_place(|| self.client.run(user, args))
    }

    /// Registers alice's device with `flow` and enables push; returns the node.
    fn register_and_enable(&self, provider: &str, token: &str, flow: &str) -> String {
        let out = self.client(
            "alice",
            &[
                "register",
                "--provider",
                provider,
                "--token",
                token,
                "--flow",
                flow,
                "--enable",
            ],
        );
        assert_eq!(out["status"], "completed", "{out}");
        assert_eq!(out["enabled"], true, "{out}");
        out["fields"]["node"].as_str().expect("node").to_owned()
    }
}

async fn offline_message_is_pushed(kind: Kind, flow: &str) {
    let h = Interop::start(kind).await;
    let token = apns_token(0x5a);
    let node = h.register_and_enable("apns", &token, flow);
    h.client(
        "bob",
        &["send", "--to", "alice@localhost", "--body", "hello"],
    );
    let pushes = h.mock.wait_pushes(1, WAIT).await;
    let push = pushes.first().unwrap_or_else(|| {
        panic!(
            "no push for an offline message:\n{}\n{}",
            h.gateway.log(),
            h.server.log_tail()
        )
    });
    assert_eq!(push.path, format!("/3/device/{token}"));
    assert_eq!(
        push.header("apns-push-type"),
        Some("alert"),
        "a message with a body is an alert"
    );
    assert_eq!(push.header("apns-collapse-id"), Some(node.as_str()));
    assert!(
        !push.body.contains("hello"),
        "the body never leaves the gateway"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_offline_message_two_step_registration() {
    offline_message_is_pushed(Kind::Prosody, "two").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejabberd_offline_message_one_step_registration() {
    offline_message_is_pushed(Kind::Ejabberd, "one").await;
}
