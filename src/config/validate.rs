//! Cross-field checks that serde cannot express. Every problem is collected, not
//! just the first, and each names its key.

use super::{
    ComponentConfig, Config, DeliveryConfig, ProviderConfig, ProviderKind, StoreBackend,
    StoreConfig,
};
use crate::backoff::{Backoff, InvalidBackoff};
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;

/// One thing wrong with the configuration, at one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The key, as written in the file (`providers[apns].topic`).
    pub key: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl ConfigIssue {
    /// An issue at `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigIssue {}

impl ComponentConfig {
    /// The reconnect backoff (`reconnect_min_ms` to `reconnect_max_ms`).
    pub(crate) fn reconnect_backoff(&self) -> Result<Backoff, ConfigIssue> {
        backoff(
            "component.reconnect_min_ms",
            "component.reconnect_max_ms",
            Backoff::new(self.reconnect_min_ms, self.reconnect_max_ms),
        )
    }
}

impl DeliveryConfig {
    /// The retry backoff (`retry_base_ms` to `retry_max_ms`).
    pub(crate) fn retry_backoff(&self) -> Result<Backoff, ConfigIssue> {
        backoff(
            "delivery.retry_base_ms",
            "delivery.retry_max_ms",
            Backoff::new(self.retry_base_ms, self.retry_max_ms),
        )
    }
}

/// Names the key a backoff's bounds went wrong at.
fn backoff(
    base_key: &str,
    max_key: &str,
    built: Result<Backoff, InvalidBackoff>,
) -> Result<Backoff, ConfigIssue> {
    built.map_err(|e| {
        let key = match e {
            InvalidBackoff::ZeroBase => base_key,
            InvalidBackoff::MaxBelowBase { .. } => max_key,
        };
        ConfigIssue::new(key, e.to_string())
    })
}

/// Checks `config` without touching the network or key files; credentials are
/// checked when providers are built (see `gateway::check`).
pub(crate) fn validate(config: &Config) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    validate_component(&config.component, &mut issues);
    store(&config.store, &mut issues);
    if config.http.listen.parse::<SocketAddr>().is_err() {
        issues.push(ConfigIssue::new(
            "http.listen",
            format!(
                "must be an address such as 127.0.0.1:8080, got {:?}",
                config.http.listen
            ),
        ));
    }
    if let Some(admin) = &config.http.admin_listen
        && admin.parse::<SocketAddr>().is_err()
    {
        issues.push(ConfigIssue::new(
            "http.admin_listen",
            format!("must be an address such as 127.0.0.1:9090, got {admin:?}"),
        ));
    }
    if config.http.request_timeout_ms < 100 {
        issues.push(ConfigIssue::new(
            "http.request_timeout_ms",
            "must be at least 100 (a request head alone needs that on a slow link)",
        ));
    }
    if config.http.max_connections == 0 {
        issues.push(ConfigIssue::new(
            "http.max_connections",
            "must be at least 1",
        ));
    }
    if config.http.tls_cert_file.is_some() != config.http.tls_key_file.is_some() {
        issues.push(ConfigIssue::new(
            "http.tls_cert_file",
            "http.tls_cert_file and http.tls_key_file go together",
        ));
    }
    let d = &config.delivery;
    positive(
        &mut issues,
        "delivery.queue_capacity",
        d.queue_capacity as u64,
    );
    positive(&mut issues, "delivery.max_age_s", d.max_age_s);
    issues.extend(d.retry_backoff().err());
    validate_providers(config, &mut issues);
    validate_commands(config, &mut issues);
    for server in &config.component.servers {
        if !server.tls && (server.ca_file.is_some() || server.tls_name.is_some()) {
            issues.push(ConfigIssue::new(
                "component.servers.tls",
                format!(
                    "{}: ca_file and tls_name apply to TLS links: set tls = true",
                    server.host
                ),
            ));
        }
    }
    config.telemetry.validate(&mut issues);
    config.registrations.validate(&mut issues);
    if let Some(cluster) = &config.cluster {
        if config.store.backend != StoreBackend::Redis {
            issues.push(ConfigIssue::new(
                "store.backend",
                "[cluster] needs backend = \"redis\": the nodes share registrations, outbox and leases there",
            ));
        }
        cluster.validate(&mut issues);
    }
    issues
}

fn validate_component(c: &ComponentConfig, issues: &mut Vec<ConfigIssue>) {
    match xmpp_parsers::jid::BareJid::new(&c.jid) {
        Ok(jid) if jid.node().is_none() => {}
        _ => issues.push(ConfigIssue::new(
            "component.jid",
            format!(
                "must be a bare domain such as push.example.com, got {:?}",
                c.jid
            ),
        )),
    }
    if c.secret.expose().is_empty() {
        issues.push(ConfigIssue::new("component.secret", "must not be empty"));
    }
    if c.servers.is_empty() {
        issues.push(ConfigIssue::new(
            "component.servers",
            "at least one [[component.servers]] entry is required",
        ));
    }
    for (i, s) in c.servers.iter().enumerate() {
        if s.host.trim().is_empty() {
            issues.push(ConfigIssue::new(
                format!("component.servers[{i}].host"),
                "must not be empty",
            ));
        }
        if s.port == 0 {
            issues.push(ConfigIssue::new(
                format!("component.servers[{i}].port"),
                "must be 1-65535",
            ));
        }
        if !(1..=64).contains(&s.connections) {
            issues.push(ConfigIssue::new(
                format!("component.servers[{i}].connections"),
                format!("must be 1-64, got {}", s.connections),
            ));
        }
    }
    positive(issues, "component.keepalive_s", c.keepalive_s);
    positive(issues, "component.connect_timeout_s", c.connect_timeout_s);
    positive(
        issues,
        "component.max_concurrent_stanzas",
        c.max_concurrent_stanzas as u64,
    );
    issues.extend(c.reconnect_backoff().err());
    if c.max_stanza_bytes < 4096 {
        issues.push(ConfigIssue::new(
            "component.max_stanza_bytes",
            "must be at least 4096",
        ));
    }
}

fn validate_commands(config: &Config, issues: &mut Vec<ConfigIssue>) {
    let kind_of = |id: &str| config.providers.iter().find(|p| p.id == id).map(|p| p.kind);
    let c = &config.commands;
    for (key, provider, want) in [
        ("commands.p2_fcm", &c.p2_fcm, ProviderKind::Fcm),
        ("commands.p2_apns", &c.p2_apns, ProviderKind::Apns),
    ] {
        let Some(id) = provider else { continue };
        match kind_of(id) {
            None => issues.push(ConfigIssue::new(
                key,
                format!("no [[providers]] with id {id:?}"),
            )),
            Some(kind) if kind != want => issues.push(ConfigIssue::new(
                key,
                format!(
                    "provider {id:?} is kind = {:?}, not {:?}",
                    kind_name(kind),
                    kind_name(want)
                ),
            )),
            Some(_) => {}
        }
    }
    for (kind, id) in &c.appserver {
        if kind_of(id).is_none() {
            issues.push(ConfigIssue::new(
                format!("commands.appserver.{kind}"),
                format!("no [[providers]] with id {id:?}"),
            ));
        }
    }
    if !c.tigase && c.p2_fcm.is_none() && c.p2_apns.is_none() && c.appserver.is_empty() {
        issues.push(ConfigIssue::new(
            "commands",
            "no registration dialect is enabled, so no device can register",
        ));
    }
}

fn validate_providers(config: &Config, issues: &mut Vec<ConfigIssue>) {
    let mut ids = HashSet::new();
    for (i, p) in config.providers.iter().enumerate() {
        let label = if p.id.trim().is_empty() {
            i.to_string()
        } else {
            p.id.clone()
        };
        let key = |field: &str| format!("providers[{label}].{field}");
        if p.id.trim().is_empty() || p.id.chars().any(char::is_whitespace) {
            issues.push(ConfigIssue::new(
                key("id"),
                "must be non-empty without spaces",
            ));
        }
        if !ids.insert(p.id.as_str()) {
            issues.push(ConfigIssue::new(
                key("id"),
                format!("duplicate id {:?}", p.id),
            ));
        }
        if let Some(endpoint) = &p.endpoint
            && reqwest::Url::parse(endpoint)
                .map(|u| !matches!(u.scheme(), "https" | "http"))
                .unwrap_or(true)
        {
            issues.push(ConfigIssue::new(
                key("endpoint"),
                format!("must be an http(s) base URL, got {endpoint:?}"),
            ));
        }
        positive(issues, &key("request_timeout_s"), p.request_timeout_s);
        positive(issues, &key("max_in_flight"), p.max_in_flight as u64);
        if !(1..=16).contains(&p.connections) {
            issues.push(ConfigIssue::new(
                key("connections"),
                format!("must be 1-16, got {}", p.connections),
            ));
        }
        let required = match p.kind {
            ProviderKind::Apns => apns_auth(p, &key, issues),
            ProviderKind::Fcm => {
                if p.cert_file.is_some() || p.cert_key_file.is_some() || p.p12_file.is_some() {
                    issues.push(ConfigIssue::new(
                        key("cert_file"),
                        "only for kind = \"apns\"",
                    ));
                }
                vec![("service_account_file", p.service_account_file.is_some())]
            }
        };
        for (field, present) in required {
            if !present {
                issues.push(ConfigIssue::new(
                    key(field),
                    format!("required for kind = {:?}", kind_name(p.kind)),
                ));
            }
        }
    }
}

/// APNs authenticates with a token key, a PEM client certificate or a
/// PKCS#12 one: exactly one of them; returns the keys the chosen method
/// requires.
fn apns_auth(
    p: &ProviderConfig,
    key: &dyn Fn(&str) -> String,
    issues: &mut Vec<ConfigIssue>,
) -> Vec<(&'static str, bool)> {
    let token = p.team_id.is_some() || p.key_id.is_some() || p.key_file.is_some();
    let pem = p.cert_file.is_some() || p.cert_key_file.is_some();
    let p12 = p.p12_file.is_some() || p.p12_password.is_some() || p.p12_password_file.is_some();
    if p.p12_password.is_some() && p.p12_password_file.is_some() {
        issues.push(ConfigIssue::new(
            key("p12_password"),
            "p12_password and p12_password_file: one or the other",
        ));
    }
    match (token, pem, p12) {
        (true, false, false) => vec![
            ("topic", p.topic.is_some()),
            ("team_id", p.team_id.is_some()),
            ("key_id", p.key_id.is_some()),
            ("key_file", p.key_file.is_some()),
        ],
        (false, true, false) => vec![
            ("cert_file", p.cert_file.is_some()),
            ("cert_key_file", p.cert_key_file.is_some()),
        ],
        (false, false, true) => vec![("p12_file", p.p12_file.is_some())],
        (false, false, false) => {
            issues.push(ConfigIssue::new(
                key("key_file"),
                format!("APNs needs {AUTH_METHODS}"),
            ));
            Vec::new()
        }
        _ => {
            issues.push(ConfigIssue::new(
                key("cert_file"),
                format!("choose one of {AUTH_METHODS}, not several"),
            ));
            Vec::new()
        }
    }
}

/// The ways to authenticate to APNs, for messages.
const AUTH_METHODS: &str = "token auth (team_id, key_id, key_file), certificate auth \
     (cert_file, cert_key_file) or certificate auth from a .p12 (p12_file, p12_password \
     or p12_password_file)";

fn kind_name(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Apns => "apns",
        ProviderKind::Fcm => "fcm",
    }
}

pub(super) fn positive(issues: &mut Vec<ConfigIssue>, key: &str, value: u64) {
    if value == 0 {
        issues.push(ConfigIssue::new(key, "must be greater than 0"));
    }
}

fn store(s: &StoreConfig, issues: &mut Vec<ConfigIssue>) {
    match s.backend {
        StoreBackend::Embedded => {
            if s.path.as_os_str().is_empty() {
                issues.push(ConfigIssue::new("store.path", "must not be empty"));
            }
        }
        StoreBackend::Redis => redis_store(s, issues),
    }
}

fn redis_store(s: &StoreConfig, issues: &mut Vec<ConfigIssue>) {
    let is_redis_url = |u: &str| u.starts_with("redis://") || u.starts_with("rediss://");
    match (&s.url, s.urls.is_empty(), s.cluster) {
        (None, true, _) => issues.push(ConfigIssue::new(
            "store.url",
            "backend = \"redis\" needs store.url (one server) or store.urls (cluster seed nodes)",
        )),
        (Some(_), false, _) => issues.push(ConfigIssue::new(
            "store.urls",
            "give store.url or store.urls, not both",
        )),
        (None, false, false) => issues.push(ConfigIssue::new(
            "store.urls",
            "a list of seed nodes is for a Redis Cluster: set store.cluster = true, or give one store.url",
        )),
        _ => {}
    }
    if let Some(url) = s.url.as_deref().filter(|u| !is_redis_url(u)) {
        issues.push(ConfigIssue::new(
            "store.url",
            format!("must start with redis:// or rediss://, got {url:?}"),
        ));
    }
    for (i, url) in s.urls.iter().enumerate().filter(|(_, u)| !is_redis_url(u)) {
        issues.push(ConfigIssue::new(
            format!("store.urls[{i}]"),
            format!("must start with redis:// or rediss://, got {url:?}"),
        ));
    }
    let tls_files = s.tls_ca_file.is_some() || s.tls_cert_file.is_some();
    let plain = s
        .url
        .iter()
        .chain(&s.urls)
        .any(|u| u.starts_with("redis://"));
    if tls_files && plain {
        issues.push(ConfigIssue::new(
            "store.tls_ca_file",
            "TLS files apply to rediss:// URLs only",
        ));
    }
    if s.tls_cert_file.is_some() != s.tls_key_file.is_some() {
        issues.push(ConfigIssue::new(
            "store.tls_cert_file",
            "store.tls_cert_file and store.tls_key_file go together",
        ));
    }
    if !(1..=65_536).contains(&s.shards) {
        issues.push(ConfigIssue::new(
            "store.shards",
            "must be between 1 and 65536",
        ));
    }
    if !(1..=64).contains(&s.pool_size) {
        issues.push(ConfigIssue::new(
            "store.pool_size",
            "must be between 1 and 64",
        ));
    }
    positive(issues, "store.connect_timeout_ms", s.connect_timeout_ms);
    positive(issues, "store.command_timeout_ms", s.command_timeout_ms);
}
