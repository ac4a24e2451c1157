//! The gateway binary as a child process, with a generated configuration.

use super::mock_provider::MockProvider;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// A free loopback port for a server a test starts by port number.
///
/// Taken below the kernel's ephemeral range (32768 and up on Linux), so no
/// `bind(0)` listener or outgoing connection of a parallel test can take it
/// between this check and the server's own bind; a counter keeps this process
/// from handing out the same port twice, and the start depends on the process
/// id so that two test processes rarely overlap.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 1000) as u16 * 10,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(port < 32_768, "ran out of test ports");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Builds a configuration for a test gateway.
pub struct TestConfig {
    /// Component port of the fake server(s).
    pub xmpp_ports: Vec<u16>,
    /// Connections per server.
    pub connections: usize,
    /// The component secret the gateway uses.
    pub secret: String,
    /// The HTTP port.
    pub http_port: u16,
    /// The store directory.
    pub store: PathBuf,
    /// Extra TOML appended at the end (providers, options).
    pub extra: String,
    /// HTTPS certificate and key files for the HTTP listener.
    pub http_tls: Option<(PathBuf, PathBuf)>,
    /// Extra keys of the `[delivery]` table.
    pub delivery: String,
    /// `component.keepalive_s`.
    pub keepalive_s: u64,
    /// Extra keys for every `[[providers]]` entry of the mocks.
    pub provider_keys: String,
    /// Extra keys of the `[store]` table (a Redis backend).
    pub store_keys: String,
    /// `delivery.shutdown_grace_s`.
    pub shutdown_grace_s: u64,
    /// Extra keys of the `[http]` table.
    pub http_keys: String,
    /// Extra keys of each `[[component.servers]]` table.
    pub server_keys: String,
}

impl TestConfig {
    /// A configuration for one fake server on `xmpp_port`, storing under `dir`.
    pub fn new(xmpp_port: u16, dir: &Path) -> Self {
        Self {
            xmpp_ports: vec![xmpp_port],
            connections: 1,
            secret: super::SECRET.to_owned(),
            http_port: free_port(),
            store: dir.join("data"),
            extra: String::new(),
            http_tls: None,
            delivery: String::new(),
            keepalive_s: 30,
            provider_keys: String::new(),
            store_keys: String::new(),
            shutdown_grace_s: 5,
            http_keys: String::new(),
            server_keys: String::new(),
        }
    }

    /// Adds an APNs provider `apns` (token auth) and an FCM provider `fcm`
    /// pointing at `mock`.
    pub fn with_mock_providers(self, mock: &MockProvider) -> Self {
        let token = format!(
            "topic = \"com.example.app\"\nteam_id = \"TEAM123456\"\nkey_id = \"TESTKEY01\"\nkey_file = \"{}\"",
            mock.pki.apns_key_file.display()
        );
        self.with_apns_auth(mock, &token)
    }

    /// Adds an APNs provider `apns` authenticating with `auth` (its keys: a
    /// token key, or a certificate whose UID is the topic) and an FCM
    /// provider `fcm`, pointing at `mock`.
    pub fn with_apns_auth(mut self, mock: &MockProvider, auth: &str) -> Self {
        self.extra.push_str(&format!(
            r#"
[[providers]]
id = "apns"
kind = "apns"
endpoint = "{url}"
ca_file = "{ca}"
{auth}
{{keys}}
[[providers]]
id = "fcm"
kind = "fcm"
endpoint = "{url}"
ca_file = "{ca}"
service_account_file = "{sa}"
{{keys}}
"#,
            url = mock.url,
            ca = mock.pki.ca_file.display(),
            sa = mock.pki.service_account_file.display(),
        ));
        self
    }

    /// The TOML text.
    pub fn to_toml(&self) -> String {
        let extra = self.extra.replace("{keys}", &self.provider_keys);
        let mut text = format!(
            r#"[component]
jid = "{jid}"
secret = "{secret}"
keepalive_s = {keepalive}
reconnect_min_ms = 100
reconnect_max_ms = 400

[store]
path = "{store}"
{store_keys}

[http]
listen = "127.0.0.1:{http}"
{http_keys}

[delivery]
shutdown_grace_s = {grace}
{delivery}
[log]
level = "pushgate=debug,info"
"#,
            jid = super::JID,
            secret = self.secret,
            store = self.store.display(),
            store_keys = self.store_keys,
            http = self.http_port,
            http_keys = self.http_keys,
            delivery = self.delivery,
            keepalive = self.keepalive_s,
            grace = self.shutdown_grace_s,
        );
        if let Some((cert, key)) = &self.http_tls {
            text = text.replace(
                "[http]\n",
                &format!(
                    "[http]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
                    cert.display(),
                    key.display()
                ),
            );
        }
        for port in &self.xmpp_ports {
            text.push_str(&format!(
                "\n[[component.servers]]\nhost = \"127.0.0.1\"\nport = {port}\nconnections = {}\n{}",
                self.connections, self.server_keys
            ));
        }
        text.push_str(&extra);
        text
    }
}

/// The running gateway; killed on drop if still running.
pub struct GatewayProcess {
    child: Child,
    log_path: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub http: String,
}

/// The path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_pushgate")
}

impl GatewayProcess {
    /// Writes `config` into `dir` and starts the gateway on it.
    pub fn start(config: &TestConfig, dir: &Path) -> Self {
        let config_path = dir.join("pushgate.toml");
        std::fs::write(&config_path, config.to_toml()).expect("write config");
        let log_path = dir.join(format!("gateway-{}.log", super::gateway::free_port()));
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut command = Command::new(binary());
        // Only the generated file configures the gateway under test.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("PUSHGATE_") {
                command.env_remove(name);
            }
        }
        let child = command
            .arg("--config")
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the gateway binary");
        Self {
            child,
            log_path,
            http: format!("http://127.0.0.1:{}", config.http_port),
        }
    }

    /// Everything the gateway logged so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_log(&self, needle: &str, deadline: Duration) -> bool {
        super::eventually(deadline, || async { self.log().contains(needle) }).await
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self, deadline: Duration) -> Option<ExitStatus> {
        self.signal("TERM");
        let start = std::time::Instant::now();
        while start.elapsed() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends signal `name` (`STOP`, `CONT`, …) to the process.
    pub fn signal(&self, name: &str) {
        super::signal(self.child.id(), name);
    }

    /// Kills the process with SIGKILL (no shutdown at all) and waits for it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// See [`metric`].
    pub async fn metric(&self, series: &str) -> f64 {
        metric(&self.http, series).await
    }

    /// Authenticated component sessions, over every server.
    pub async fn sessions_up(&self) -> f64 {
        family_sum(
            &get(&self.http, "/metrics").await.1,
            "pushgate_component_sessions_up",
        )
    }

    /// See [`status`].
    pub async fn status(&self, path: &str) -> Option<u16> {
        status(&self.http, path).await
    }

    /// See [`get`].
    pub async fn get(&self, path: &str) -> (u16, String) {
        get(&self.http, path).await
    }

    /// See [`post_json`].
    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> (u16, String) {
        post_json(&self.http, path, body).await
    }
}

/// An HTTP client for a gateway's endpoints.
pub fn client() -> reqwest::Client {
    super::init_crypto();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

/// The value of the metric line starting with `series` (name and labels
/// exactly as rendered) at the gateway serving `http`, 0 when absent.
pub async fn metric(http: &str, series: &str) -> f64 {
    let (_, text) = get(http, "/metrics").await;
    series_value(&text, series)
}

/// The sum of every series of family `name` in a Prometheus text page.
pub fn family_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(s, _)| parse_series(s).0 == name)
        .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
        .sum()
}

/// The value of `series` (`name` or `name{label="value",…}`, labels in any
/// order) in a Prometheus text page; 0 when absent.
pub fn series_value(text: &str, series: &str) -> f64 {
    let wanted = parse_series(series);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(s, _)| parse_series(s) == wanted)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn parse_series(series: &str) -> (String, std::collections::BTreeSet<String>) {
    match series.split_once('{') {
        None => (series.trim().to_owned(), Default::default()),
        Some((name, labels)) => (
            name.to_owned(),
            labels
                .trim_end_matches('}')
                .split("\",")
                .filter(|l| !l.is_empty())
                .map(|l| l.trim_end_matches('"').to_owned())
                .collect(),
        ),
    }
}

/// The status of GET `path`, or `None` while nothing listens.
pub async fn status(http: &str, path: &str) -> Option<u16> {
    client()
        .get(format!("{http}{path}"))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// GET `path`; (status, body).
pub async fn get(http: &str, path: &str) -> (u16, String) {
    let r = client()
        .get(format!("{http}{path}"))
        .send()
        .await
        .expect("GET");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// POST a JSON body to `path`; (status, body).
pub async fn post_json(http: &str, path: &str, body: serde_json::Value) -> (u16, String) {
    let r = client()
        .post(format!("{http}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- gateway log ---\n{}\n--- end ---", self.log());
        }
    }
}
