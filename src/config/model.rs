//! The configuration's shape. Field names are part of the operator interface: keep
//! them stable and document each in `config/pushgate.example.toml`.

pub use super::registrations::RegistrationsConfig;
pub use super::store::{StoreBackend, StoreConfig};
pub use super::telemetry::TelemetryConfig;

pub(crate) use super::store::DEFAULT_SHARDS;
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The XEP-0114 component identity and the servers to connect to.
    pub component: ComponentConfig,
    /// Where registrations live.
    #[serde(default)]
    pub store: StoreConfig,
    /// The HTTP listener (REST unregister, health, metrics).
    #[serde(default)]
    pub http: HttpConfig,
    /// Push providers; `id` is what clients name in the `provider` field.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// Rules for accepting publishes.
    #[serde(default)]
    pub publish: PublishConfig,
    /// Delivery queue and request limits.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// Which registration command dialects are offered.
    #[serde(default)]
    pub commands: CommandsConfig,
    /// Limits on what accounts may register.
    #[serde(default)]
    pub registrations: RegistrationsConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Several nodes sharing one Redis; absent, the gateway runs alone.
    #[serde(default)]
    pub cluster: Option<super::ClusterConfig>,
    /// OpenTelemetry export.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The `*_file` secrets read at load (key, path), for the permission
    /// check (see `files::exposed`).
    #[serde(skip)]
    pub(crate) secret_files: Vec<(String, PathBuf)>,
}

/// A value that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself, for the one place that needs it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `[component]`: who we are to the XMPP servers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentConfig {
    /// The component's JID, a bare domain such as `push.example.com`.
    pub jid: String,
    /// The XEP-0114 shared secret.
    pub secret: Secret,
    /// The servers to connect to; at least one.
    #[serde(default)]
    pub servers: Vec<ServerConfig>,
    /// Seconds of silence after which a whitespace keepalive is sent; also the
    /// idle time before TCP keepalive probes start.
    #[serde(default = "defaults::keepalive_s")]
    pub keepalive_s: u64,
    /// Largest stanza accepted, in bytes; a larger one ends the stream with
    /// `policy-violation`, as XMPP servers do.
    #[serde(default = "defaults::max_stanza_bytes")]
    pub max_stanza_bytes: usize,
    /// First reconnect delay, in milliseconds; doubled after every failure.
    #[serde(default = "defaults::reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay, in milliseconds.
    #[serde(default = "defaults::reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Seconds allowed for TCP connect plus handshake.
    #[serde(default = "defaults::connect_timeout_s")]
    pub connect_timeout_s: u64,
    /// Stanzas handled at once per connection; more wait in the socket buffer.
    #[serde(default = "defaults::max_concurrent_stanzas")]
    pub max_concurrent_stanzas: usize,
}

/// `[[component.servers]]`: one XMPP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Host name or address of the server's component listener.
    pub host: String,
    /// Its port.
    #[serde(default = "defaults::component_port")]
    pub port: u16,
    /// Parallel component connections to this server.
    #[serde(default = "defaults::connections")]
    pub connections: usize,
    /// Direct TLS on the connection (ejabberd `ejabberd_service` with
    /// `tls: true`); needed wherever the link leaves the machine or a
    /// private network.
    #[serde(default)]
    pub tls: bool,
    /// PEM CA certificates trusted for the server's certificate, besides the
    /// system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The name the server's certificate must carry; default `host`.
    #[serde(default)]
    pub tls_name: Option<String>,
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on, `host:port`.
    #[serde(default = "defaults::http_listen")]
    pub listen: String,
    /// PEM certificate chain; with `tls_key_file`, serve HTTPS.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// A second address for `/metrics` and `/readyz` (and `/healthz`), e.g.
    /// loopback or the pod network; `listen` then serves only the REST
    /// unregister and `/healthz`. Plain HTTP.
    #[serde(default)]
    pub admin_listen: Option<String>,
    /// Whole-request deadline (head, body and answer), in milliseconds;
    /// a slower client gets 408 or is disconnected.
    #[serde(default = "defaults::http_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Connections open at once per listener; more wait in the kernel's
    /// backlog until one closes.
    #[serde(default = "defaults::http_max_connections")]
    pub max_connections: usize,
    /// REST calls a minute per client address (IPv6: per /64); more are
    /// answered 429. 0 = no limit.
    #[serde(default = "defaults::rest_per_minute")]
    pub rest_per_minute: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: defaults::http_listen(),
            tls_cert_file: None,
            tls_key_file: None,
            admin_listen: None,
            request_timeout_ms: defaults::http_request_timeout_ms(),
            max_connections: defaults::http_max_connections(),
            rest_per_minute: defaults::rest_per_minute(),
        }
    }
}

/// The kind of push service a provider talks to.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Apple Push Notification service, HTTP/2 with token auth.
    Apns,
    /// Firebase Cloud Messaging HTTP v1.
    Fcm,
}

/// `[[providers]]`: one configured push provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// What clients put in the `provider` field, and what disco lists.
    pub id: String,
    /// `apns` or `fcm`.
    pub kind: ProviderKind,
    /// Base URL; defaults to the production endpoint of the kind.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Extra trusted CA certificates (PEM), for mocks and TLS-intercepting proxies.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// APNs: the app's bundle id, sent as `apns-topic`.
    #[serde(default)]
    pub topic: Option<String>,
    /// APNs token auth: the team id (`iss` of the JWT).
    #[serde(default)]
    pub team_id: Option<String>,
    /// APNs token auth: the key id (`kid` of the JWT).
    #[serde(default)]
    pub key_id: Option<String>,
    /// APNs token auth: the `.p8` ES256 private key.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// APNs certificate auth: the client certificate (PEM, leaf first, the
    /// chain may follow), instead of `team_id`/`key_id`/`key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// APNs certificate auth: the certificate's private key (PEM).
    #[serde(default)]
    pub cert_key_file: Option<PathBuf>,
    /// APNs certificate auth from a PKCS#12 file (a Keychain `.p12` export),
    /// instead of `cert_file`/`cert_key_file`.
    #[serde(default)]
    pub p12_file: Option<PathBuf>,
    /// The `.p12` password (or `p12_password_file`; neither = no password).
    #[serde(default)]
    pub p12_password: Option<Secret>,
    /// A file holding the `.p12` password (a trailing newline is ignored).
    #[serde(default)]
    pub p12_password_file: Option<PathBuf>,
    /// FCM: the service-account JSON of the Firebase project.
    #[serde(default)]
    pub service_account_file: Option<PathBuf>,
    /// FCM: project id, when it differs from the service account's `project_id`.
    #[serde(default)]
    pub project_id: Option<String>,
    /// Seconds allowed for one request to the provider.
    #[serde(default = "defaults::request_timeout_s")]
    pub request_timeout_s: u64,
    /// Requests in flight to this provider at once, spread over `connections`.
    #[serde(default = "defaults::max_in_flight")]
    pub max_in_flight: usize,
    /// HTTP/2 connections to this provider; requests are multiplexed over them.
    #[serde(default = "defaults::connections")]
    pub connections: usize,
}

/// `[publish]`: what makes a publish acceptable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    /// Accept a publish only from the domain of the account that registered the
    /// node. Turn off only when a server publishes under another domain.
    #[serde(default = "defaults::yes")]
    pub require_account_domain: bool,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            require_account_domain: true,
        }
    }
}

/// `[commands]`: the registration dialects clients can use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandsConfig {
    /// Tigase `register-device` / `unregister-device` (Siskin, Beagle, Stork).
    #[serde(default = "defaults::yes")]
    pub tigase: bool,
    /// p2 (Conversations' app server): the provider id behind
    /// `register-push-fcm` / `unregister-push-fcm`; unset = not offered.
    #[serde(default)]
    pub p2_fcm: Option<String>,
    /// p2: the provider id behind `register-push-apns` / `unregister-push-apns`.
    #[serde(default)]
    pub p2_apns: Option<String>,
    /// mod_push_appserver (older Monal) `v1-register-push`: the client's `type`
    /// values mapped to provider ids, e.g. `{ apns = "apns" }`; empty = not offered.
    #[serde(default)]
    pub appserver: std::collections::BTreeMap<String, String>,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        Self {
            tigase: true,
            p2_fcm: None,
            p2_apns: None,
            appserver: Default::default(),
        }
    }
}

/// `[delivery]`: the outbox, retries, coalescing and what a push carries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Notifications pending per provider (queued or waiting for a retry); beyond
    /// it publishes get `wait/service-unavailable`.
    #[serde(default = "defaults::queue_capacity")]
    pub queue_capacity: usize,
    /// Lifetime given to the provider (`apns-expiration`, FCM `ttl`), in seconds.
    #[serde(default = "defaults::expiration_s")]
    pub expiration_s: u64,
    /// Seconds allowed at shutdown for in-flight deliveries; what is left stays in
    /// the outbox for the next start.
    #[serde(default = "defaults::shutdown_grace_s")]
    pub shutdown_grace_s: u64,
    /// First retry delay, in milliseconds; doubled per attempt, with full jitter.
    #[serde(default = "defaults::retry_base_ms")]
    pub retry_base_ms: u64,
    /// Longest retry delay, in milliseconds.
    #[serde(default = "defaults::retry_max_ms")]
    pub retry_max_ms: u64,
    /// Seconds after its publish at which an undelivered notification is dropped.
    #[serde(default = "defaults::max_age_s")]
    pub max_age_s: u64,
    /// Milliseconds a new notification waits before its first attempt, so that
    /// the bursts servers send for one message (ejabberd: one per stanza) merge.
    #[serde(default = "defaults::coalesce_window_ms")]
    pub coalesce_window_ms: u64,
    /// Least milliseconds between two pushes to one node; later publishes merge
    /// into the next push instead of being refused. 0 = no limit.
    #[serde(default)]
    pub min_interval_ms: u64,
    /// Put the message body in the push (alert text and `body` key).
    #[serde(default)]
    pub include_body: bool,
    /// Put the sender's JID and MUC nickname in the push (`sender`, `nickname`).
    #[serde(default)]
    pub include_sender: bool,
    /// Keep the account's JID with its registrations (in clear) and put it in the
    /// push as `account`, which Tigase apps use to tell accounts apart.
    #[serde(default)]
    pub include_account: bool,
    /// The alert text when the body is not included.
    #[serde(default = "defaults::alert_text")]
    pub alert_text: String,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            queue_capacity: defaults::queue_capacity(),
            expiration_s: defaults::expiration_s(),
            shutdown_grace_s: defaults::shutdown_grace_s(),
            retry_base_ms: defaults::retry_base_ms(),
            retry_max_ms: defaults::retry_max_ms(),
            max_age_s: defaults::max_age_s(),
            coalesce_window_ms: defaults::coalesce_window_ms(),
            min_interval_ms: 0,
            include_body: false,
            include_sender: false,
            include_account: false,
            alert_text: defaults::alert_text(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `pushgate=debug`; `RUST_LOG` wins.
    #[serde(default = "defaults::log_level")]
    pub level: String,
    /// `text` or `json`.
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: defaults::log_level(),
            format: LogFormat::default(),
        }
    }
}

mod defaults {

    pub(super) fn keepalive_s() -> u64 {
        60
    }
    pub(super) fn max_stanza_bytes() -> usize {
        65_536
    }
    pub(super) fn reconnect_min_ms() -> u64 {
        500
    }
    pub(super) fn reconnect_max_ms() -> u64 {
        60_000
    }
    pub(super) fn connect_timeout_s() -> u64 {
        10
    }
    pub(super) fn max_concurrent_stanzas() -> usize {
        256
    }
    pub(super) fn component_port() -> u16 {
        5347
    }
    pub(super) fn connections() -> usize {
        1
    }
    pub(super) fn http_listen() -> String {
        "127.0.0.1:8080".to_owned()
    }
    pub(super) fn http_request_timeout_ms() -> u64 {
        10_000
    }
    pub(super) fn http_max_connections() -> usize {
        1024
    }
    pub(super) fn rest_per_minute() -> u32 {
        60
    }
    pub(super) fn request_timeout_s() -> u64 {
        10
    }
    pub(super) fn yes() -> bool {
        true
    }
    pub(super) fn queue_capacity() -> usize {
        10_000
    }
    pub(super) fn max_in_flight() -> usize {
        100
    }
    pub(super) fn expiration_s() -> u64 {
        86_400
    }
    pub(super) fn shutdown_grace_s() -> u64 {
        10
    }
    pub(super) fn retry_base_ms() -> u64 {
        1_000
    }
    pub(super) fn retry_max_ms() -> u64 {
        300_000
    }
    pub(super) fn max_age_s() -> u64 {
        3_600
    }
    pub(super) fn coalesce_window_ms() -> u64 {
        100
    }
    pub(super) fn alert_text() -> String {
        "New message".to_owned()
    }
    pub(super) fn log_level() -> String {
        "info".to_owned()
    }
}
