//! One gateway wired to a fake XMPP server and a mock provider, plus the stanzas
//! real servers send (`docs/protocol.md` §2, §4).

use super::gateway::{self, GatewayProcess, TestConfig};
use super::in_process::{InProcess, launch};
use super::mock_provider::MockProvider;
use super::xmpp_server::{Component, FakeServer};
use super::{WAIT, ns_child};
use std::sync::atomic::{AtomicU64, Ordering};
use tempfile::TempDir;
use xmpp_parsers::minidom::Element;

/// Everything a test needs.
pub struct Harness {
    /// The mock APNs/FCM.
    pub mock: MockProvider,
    /// The fake server's listener.
    pub server: FakeServer,
    /// The gateway: in this process unless the test needs the process.
    pub gateway: TestGateway,
    /// Its configuration (to start it again).
    pub config: TestConfig,
    /// The authenticated component stream.
    pub conn: Component,
    /// Temporary directory (config, store, keys, logs), removed on drop: last, so
    /// the gateway's log can still be printed when a test fails.
    pub _dir: TempDir,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The gateway of a [`Harness`]: the binary as a child process, or in this
/// process. Both serve HTTP, which is how tests read their metrics.
pub enum TestGateway {
    /// A child process.
    Process(GatewayProcess),
    /// On a thread of this process.
    InProcess(InProcess),
}

impl TestGateway {
    /// `http://127.0.0.1:PORT`.
    pub fn http(&self) -> &str {
        match self {
            TestGateway::Process(p) => &p.http,
            TestGateway::InProcess(g) => &g.http,
        }
    }

    /// The child process; panics for a gateway in this process (the test
    /// should have started it with [`Harness::start_process_with`]).
    pub fn process(&mut self) -> &mut GatewayProcess {
        match self {
            TestGateway::Process(p) => p,
            TestGateway::InProcess(_) => panic!("this test needs Harness::start_process_with"),
        }
    }

    /// What the process logged; a gateway in this process logs nowhere, so
    /// its metrics stand in for a failing test's diagnostics.
    pub fn log(&self) -> String {
        match self {
            TestGateway::Process(p) => p.log(),
            TestGateway::InProcess(g) => g.metrics.render(),
        }
    }

    /// See [`gateway::metric`].
    pub async fn metric(&self, series: &str) -> f64 {
        gateway::metric(self.http(), series).await
    }

    /// Authenticated component sessions, over every server.
    pub async fn sessions_up(&self) -> f64 {
        let (_, text) = gateway::get(self.http(), "/metrics").await;
        gateway::family_sum(&text, "pushgate_component_sessions_up")
    }

    /// See [`gateway::status`].
    pub async fn status(&self, path: &str) -> Option<u16> {
        gateway::status(self.http(), path).await
    }

    /// See [`gateway::get`].
    pub async fn get(&self, path: &str) -> (u16, String) {
        gateway::get(self.http(), path).await
    }

    /// See [`gateway::post_json`].
    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> (u16, String) {
        gateway::post_json(self.http(), path, body).await
    }
}

/// A gateway for `config` on a thread of this process.
pub fn in_process(config: &TestConfig) -> TestGateway {
    let (launch, http) = launch(config);
    TestGateway::InProcess(InProcess::start(launch, http))
}

/// Registers `token` at `provider` for `from` in one step over `conn`;
/// returns the node.
pub async fn register_node(
    conn: &mut Component,
    from: &str,
    provider: &str,
    token: &str,
) -> String {
    let reply = conn
        .iq(&register_one_step(from, provider, token, None), WAIT)
        .await;
    node_of(&reply).unwrap_or_else(|| panic!("registration failed: {}", String::from(&reply)))
}

/// A fresh stanza id.
pub fn next_id() -> String {
    format!("t{}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

impl Harness {
    /// A gateway in this process with both mock providers, connected.
    pub async fn start() -> Self {
        Self::start_with(|c| c).await
    }

    /// Like [`Harness::start`], with the configuration adjusted by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(TestConfig) -> TestConfig) -> Self {
        Self::start_as(false, adjust).await
    }

    /// Like [`Harness::start_with`], with the gateway binary as a child
    /// process: for what needs the process (signals, its log lines).
    pub async fn start_process_with(adjust: impl FnOnce(TestConfig) -> TestConfig) -> Self {
        Self::start_as(true, adjust).await
    }

    async fn start_as(process: bool, adjust: impl FnOnce(TestConfig) -> TestConfig) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mock = MockProvider::start(dir.path()).await;
        let server = FakeServer::start(super::SECRET).await;
        let config = adjust(TestConfig::new(server.port, dir.path()).with_mock_providers(&mock));
        let gateway = if process {
            TestGateway::Process(GatewayProcess::start(&config, dir.path()))
        } else {
            let (launch, http) = launch(&config);
            TestGateway::InProcess(InProcess::start(launch, http))
        };
        let conn = server.accept(WAIT).await;
        Self {
            mock,
            server,
            gateway,
            config,
            conn,
            _dir: dir,
        }
    }

    /// Sends an iq and returns the reply.
    pub async fn iq(&mut self, xml: &str) -> Element {
        self.conn.iq(xml, WAIT).await
    }

    /// Registers `token` at `provider` for `from` in one step; returns the node.
    pub async fn register(&mut self, from: &str, provider: &str, token: &str) -> String {
        register_node(&mut self.conn, from, provider, token).await
    }

    /// Publishes Prosody's offline-message shape to `node` from `domain`.
    pub async fn publish_prosody(
        &mut self,
        node: &str,
        domain: &str,
        body: &str,
        secret: Option<&str>,
    ) -> Element {
        self.iq(&prosody_publish(node, domain, body, secret)).await
    }
}

/// `register-device` submitted in one step (`action='execute'` with the form).
pub fn register_one_step(from: &str, provider: &str, token: &str, voip: Option<&str>) -> String {
    let voip = voip
        .map(|v| format!("<field var='device-second-token'><value>{v}</value></field>"))
        .unwrap_or_default();
    format!(
        "<iq type='set' id='{id}' from='{from}' to='push.localhost' xml:lang='en'><command xmlns='http://jabber.org/protocol/commands' node='register-device' action='execute'><x xmlns='jabber:x:data' type='submit'><field var='provider'><value>{provider}</value></field><field var='device-token'><value>{token}</value></field>{voip}</x></command></iq>",
        id = next_id()
    )
}

/// The `node` field of a completed registration, if the reply is one.
pub fn node_of(reply: &Element) -> Option<String> {
    let command = ns_child(reply, "command", "http://jabber.org/protocol/commands")?;
    if command.attr("status") != Some("completed") {
        return None;
    }
    let x = command.get_child("x", "jabber:x:data")?;
    x.children()
        .find(|f| f.attr("var") == Some("node"))
        .and_then(|f| f.get_child("value", "jabber:x:data"))
        .map(Element::text)
}

/// Prosody's publish (summary form `type='form'`, placeholders, publish-options).
pub fn prosody_publish(node: &str, domain: &str, body: &str, secret: Option<&str>) -> String {
    let options = secret
        .map(|s| format!("<publish-options><x type='submit' xmlns='jabber:x:data'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>{s}</value></field></x></publish-options>"))
        .unwrap_or_default();
    let body = if body.is_empty() {
        "<field type='text-single' var='last-message-body'/>".to_owned()
    } else {
        format!("<field type='text-single' var='last-message-body'><value>{body}</value></field>")
    };
    format!(
        "<iq type='set' from='{domain}' to='push.localhost' id='{id}'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'><item><notification xmlns='urn:xmpp:push:0'><x type='form' xmlns='jabber:x:data'><field type='hidden' var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field><field type='text-single' var='message-count'><value>1</value></field><field type='text-single' var='pending-subscription-count'/><field type='jid-single' var='last-message-sender'/>{body}</x></notification></item></publish>{options}</pubsub></iq>",
        id = next_id()
    )
}

/// A Tigase-style publish: summary form with a real message count, sender and
/// body, plus any extension elements (`<priority/>`, `<groupchat/>`, …).
pub fn counted_publish(node: &str, count: u32, sender: &str, body: &str, extra: &str) -> String {
    format!(
        "<iq type='set' from='localhost' to='push.localhost' id='{id}'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'><item><notification xmlns='urn:xmpp:push:0'><x type='submit' xmlns='jabber:x:data'><field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field><field var='message-count'><value>{count}</value></field><field var='last-message-sender'><value>{sender}</value></field><field var='last-message-body'><value>{body}</value></field></x>{extra}</notification></item></publish></pubsub></iq>",
        id = next_id()
    )
}

/// ejabberd's publish of a stanza without body: no form at all.
pub fn ejabberd_empty_publish(node: &str, domain: &str) -> String {
    format!(
        "<iq to='push.localhost' from='{domain}' type='set' id='rr-{id}/UHJxmZ0=-1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'><item><notification xmlns='urn:xmpp:push:0'/></item></publish></pubsub></iq>",
        id = next_id()
    )
}

/// ejabberd's publish with a body (summary form `type='submit'` with a label).
pub fn ejabberd_publish(node: &str, domain: &str) -> String {
    format!(
        "<iq to='push.localhost' from='{domain}' type='set' id='rr-{id}'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'><item><notification xmlns='urn:xmpp:push:0'><x type='submit' xmlns='jabber:x:data'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:push:summary</value></field><field var='last-message-body' type='text-single' label='The body text of the last received message'><value>New message</value></field></x></notification></item></publish></pubsub></iq>",
        id = next_id()
    )
}

/// (type, condition) of an error reply, or `None` for a result.
pub fn error_of(reply: &Element) -> Option<(String, String)> {
    if reply.attr("type") != Some("error") {
        return None;
    }
    let error = reply.children().find(|c| c.name() == "error")?;
    let condition = error
        .children()
        .find(|c| c.ns() == "urn:ietf:params:xml:ns:xmpp-stanzas" && c.name() != "text")?;
    Some((
        error.attr("type").unwrap_or_default().to_owned(),
        condition.name().to_owned(),
    ))
}

/// A XEP-0199 ping from the server, with a fresh id.
pub fn ping() -> String {
    format!(
        "<iq type='get' id='{}' from='localhost' to='push.localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
        next_id()
    )
}

/// Panics, showing the reply, unless it is `type='result'`.
#[track_caller]
pub fn assert_result(reply: &Element) {
    assert_eq!(
        reply.attr("type"),
        Some("result"),
        "{}",
        String::from(reply)
    );
}
