//! One real XMPP server with the gateway connected to it and the mock
//! providers, and the steps the interop scenarios are made of.

use super::gateway::{GatewayProcess, TestConfig};
use super::mock_provider::{MockProvider, Recorded};
use super::servers::{Kind, XmppServer};
use super::xmpp_client::XmppClient;
use super::{JID, SECRET, WAIT, eventually};
use serde_json::Value;
use std::time::Duration;
use tempfile::TempDir;

/// Time given to a server to publish (or not) after a message.
pub const SETTLE: Duration = Duration::from_millis(1500);

/// One server, the gateway connected to it, and the mock providers.
pub struct Interop {
    /// Runs client.py against the server.
    pub client: XmppClient,
    /// The mock APNs/FCM.
    pub mock: MockProvider,
    /// The gateway process (replaceable, for restarts).
    pub gateway: GatewayProcess,
    /// Its configuration.
    pub config: TestConfig,
    /// The XMPP server.
    pub server: XmppServer,
    /// Everything on disk; dropped last.
    pub dir: TempDir,
}

impl Interop {
    /// `kind` with the gateway (all dialects on) connected to it.
    pub async fn start(kind: Kind) -> Self {
        Self::start_with(kind, |c| c).await
    }

    /// Like [`Interop::start`], with the configuration adjusted.
    pub async fn start_with(kind: Kind, adjust: impl FnOnce(TestConfig) -> TestConfig) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mock = MockProvider::start(dir.path()).await;
        let server =
            tokio::task::block_in_place(|| XmppServer::start(kind, dir.path(), JID, SECRET));
        let mut config =
            TestConfig::new(server.component_port, dir.path()).with_mock_providers(&mock);
        config
            .extra
            .push_str("\n[commands]\np2_fcm = \"fcm\"\nappserver = { apns = \"apns\" }\n");
        let config = adjust(config);
        let gateway = GatewayProcess::start(&config, dir.path());
        let h = Self {
            client: XmppClient::new(&server),
            mock,
            gateway,
            config,
            server,
            dir,
        };
        h.wait_ready().await;
        h
    }

    /// Waits until the gateway has a component session.
    pub async fn wait_ready(&self) {
        let ready = eventually(Duration::from_secs(20), || async {
            self.gateway.status("/readyz").await == Some(200)
        })
        .await;
        assert!(
            ready,
            "gateway not connected:\n{}\n{}",
            self.gateway.log(),
            self.server.log_tail()
        );
    }

    /// Runs a client.py subcommand as `user`.
    pub fn client(&self, user: &str, args: &[&str]) -> Value {
        tokio::task::block_in_place(|| self.client.run(user, args))
    }

    /// Registers `user`'s device and enables push with the result; returns the node.
    pub fn register(
        &self,
        user: &str,
        dialect: &str,
        flow: &str,
        provider: &str,
        token: &str,
    ) -> String {
        let out = self.client(
            user,
            &[
                "register",
                "--dialect",
                dialect,
                "--flow",
                flow,
                "--provider",
                provider,
                "--token",
                token,
                "--enable",
            ],
        );
        assert_eq!(out["status"], "completed", "{user} {dialect}: {out}");
        assert_eq!(out["enabled"], true, "{user} {dialect}: {out}");
        out["fields"]["node"].as_str().expect("node").to_owned()
    }

    /// bob sends `count` messages to `to`.
    pub fn send(&self, to: &str, count: u32) {
        let to = format!("{to}@localhost");
        self.client(
            "bob",
            &[
                "send",
                "--to",
                &to,
                "--body",
                "hello",
                "--count",
                &count.to_string(),
            ],
        );
    }

    /// Waits for `n` pushes in all, lets the server settle, and checks no more came.
    pub async fn expect_pushes(&self, n: usize) -> Vec<Recorded> {
        let pushes = self.mock.wait_pushes(n, WAIT).await;
        assert!(
            pushes.len() >= n,
            "{} of {n} pushes:\n{}\n{}",
            pushes.len(),
            self.gateway.log(),
            self.server.log_tail()
        );
        tokio::time::sleep(SETTLE).await;
        let pushes = self.mock.pushes();
        assert_eq!(pushes.len(), n, "exactly {n} pushes: {pushes:#?}");
        pushes
    }

    /// How many publishes the gateway answered with `outcome`.
    pub async fn publishes(&self, outcome: &str) -> u64 {
        let metrics = self.gateway.get("/metrics").await.1;
        let series = format!("pushgate_publishes_total{{outcome=\"{outcome}\"}}");
        super::gateway::series_value(&metrics, &series) as u64
    }

    /// Waits until `n` publishes were answered with `outcome`.
    pub async fn wait_publishes(&self, outcome: &str, n: u64) {
        let ok = eventually(WAIT, || async { self.publishes(outcome).await >= n }).await;
        assert!(
            ok,
            "{n} publishes answered {outcome}: {}\n{}",
            self.publishes(outcome).await,
            self.server.log_tail()
        );
    }

    /// Sends one message per round until the server stops publishing to the dead
    /// node: proves it disabled push. Returns the item-not-found answers it took.
    pub async fn messages_until_disabled(&self, user: &str, max: u64) -> u64 {
        for round in 1..=max + 1 {
            let before = self.publishes("item-not-found").await;
            self.send(user, 1);
            tokio::time::sleep(SETTLE).await;
            if self.publishes("item-not-found").await == before {
                return round - 1;
            }
        }
        panic!(
            "{:?} kept publishing to a gone node:\n{}",
            self.server.kind,
            self.server.log_tail()
        );
    }
}
