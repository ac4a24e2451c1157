//! Configuration: a TOML file, overridden by `PUSHGATE_…` environment variables,
//! validated before anything starts so that a mistake is reported by key name.
//!
//! Environment overrides use `__` between path segments, e.g.
//! `PUSHGATE_COMPONENT__SECRET`, `PUSHGATE_HTTP__LISTEN`, and for providers either the
//! index or the id: `PUSHGATE_PROVIDERS__APNS__KEY_FILE`.

mod cluster;
mod env;
pub mod files;
mod model;
mod registrations;
mod store;
mod telemetry;
mod validate;

pub use cluster::{ClusterConfig, LeaseTimings};
pub use model::*;
pub use validate::ConfigIssue;
pub(crate) use validate::validate;

use std::path::Path;
use thiserror::Error;

/// Why a configuration could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file that was asked for.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown/mistyped keys.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file that was read.
        path: String,
        /// What the TOML parser said, naming the key.
        message: String,
    },
    /// An environment override could not be applied.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable's name.
        var: String,
        /// What is wrong with it.
        message: String,
    },
    /// The values parse but do not make sense together.
    #[error("invalid configuration:\n{}", format_issues(.0))]
    Invalid(Vec<ConfigIssue>),
}

fn format_issues(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(|i| format!("  - {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Loads `path`, applies the process environment's overrides, and validates.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    load_from_str(&text, &path.display().to_string(), std::env::vars())
}

/// Parses `text`, applies the given `(name, value)` overrides (only those starting
/// with `PUSHGATE_` are used), and validates. Separate from [`load`] so tests can
/// feed their own environment.
pub fn load_from_str(
    text: &str,
    origin: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: origin.to_owned(),
        message: e.to_string(),
    })?;
    env::apply_overrides(&mut table, vars)?;
    let (unreadable, secret_files) = files::read_secret_files(&mut table);
    if !unreadable.is_empty() {
        return Err(ConfigError::Invalid(unreadable));
    }
    let mut config: Config = table
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
    config.secret_files = secret_files;
    let issues = validate(&config);
    if issues.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(issues))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn the_shipped_configs_are_valid() {
        for (name, text) in [
            ("example", include_str!("../config/pushgate.example.toml")),
            ("local", include_str!("../config/pushgate.local.toml")),
        ] {
            let config =
                load_from_str(text, name, no_env()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!config.component.servers.is_empty(), "{name}");
        }
    }

    #[test]
    fn every_problem_is_reported_by_key() {
        let text = "[component]\njid = 'a@b'\nsecret = ''\n[http]\nlisten = 'x'\n\
                    [[providers]]\nid = 'apns'\nkind = 'apns'\nkey_id = 'K'\n\
                    [[providers]]\nid = 'apns'\nkind = 'fcm'\n";
        let Err(ConfigError::Invalid(issues)) = load_from_str(text, "t", no_env()) else {
            panic!("must be invalid");
        };
        let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
        for key in [
            "component.jid",
            "component.secret",
            "component.servers",
            "http.listen",
            "providers[apns].topic",
            "providers[apns].key_file",
            "providers[apns].id",
            "providers[apns].service_account_file",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
    }

    #[test]
    fn redis_store_settings_are_checked_by_key() {
        let base = "[component]\njid = 'push.example.com'\nsecret = 's'\n\
                    [[component.servers]]\nhost = 'localhost'\n";
        let issues_of = |store: &str| -> Vec<String> {
            match load_from_str(&format!("{base}[store]\n{store}"), "t", no_env()) {
                Ok(_) => Vec::new(),
                Err(ConfigError::Invalid(issues)) => issues.iter().map(|i| i.to_string()).collect(),
                Err(e) => vec![e.to_string()],
            }
        };
        assert!(issues_of("backend = 'redis'\nurl = 'redis://127.0.0.1:6379'\n").is_empty());
        assert!(
            issues_of(
                "backend = 'redis'\ncluster = true\nurls = ['redis://a:1', 'rediss://b:2']\n"
            )
            .is_empty()
        );
        let missing = issues_of("backend = 'redis'\n");
        assert!(
            missing.iter().any(|i| i.starts_with("store.url:")),
            "{missing:?}"
        );
        let bad = issues_of(
            "backend = 'redis'\nurls = ['http://x']\nshards = 0\npool_size = 0\ncommand_timeout_ms = 0\n",
        );
        for key in [
            "store.urls:",
            "store.urls[0]:",
            "store.shards:",
            "store.pool_size:",
            "store.command_timeout_ms:",
        ] {
            assert!(
                bad.iter().any(|i| i.starts_with(key)),
                "{key} missing from {bad:?}"
            );
        }
        let password = load_from_str(
            &format!("{base}[store]\nbackend = 'redis'\nurl = 'redis://h'\npassword = 'hunter2'\n"),
            "t",
            no_env(),
        )
        .expect("valid");
        assert!(!format!("{password:?}").contains("hunter2"));
    }

    #[test]
    fn backoff_bounds_are_refused_by_key_not_adjusted() {
        let base = "[component]\njid = 'push.example.com'\nsecret = 's'\n";
        let servers = "[[component.servers]]\nhost = 'localhost'\n";
        let issues_of = |extra: &str| -> Vec<String> {
            match load_from_str(&format!("{base}{extra}"), "t", no_env()) {
                Ok(_) => Vec::new(),
                Err(ConfigError::Invalid(issues)) => issues.iter().map(|i| i.to_string()).collect(),
                Err(e) => vec![e.to_string()],
            }
        };
        assert!(issues_of(servers).is_empty());
        let swapped = issues_of(&format!(
            "reconnect_min_ms = 5000\nreconnect_max_ms = 1000\n{servers}[delivery]\nretry_base_ms = 0\n"
        ));
        assert_eq!(
            swapped,
            [
                "component.reconnect_max_ms: the largest delay (1000 ms) is below the first delay (5000 ms)",
                "delivery.retry_base_ms: the first delay must be at least 1 ms",
            ],
        );
    }

    #[test]
    fn apns_takes_exactly_one_authentication_method() {
        let base = "[component]\njid = 'push.example.com'\nsecret = 's'\n\
                    [[component.servers]]\nhost = 'localhost'\n\
                    [[providers]]\nid = 'apns'\nkind = 'apns'\n";
        let issues_of = |keys: &str| -> Vec<String> {
            match load_from_str(&format!("{base}{keys}"), "t", no_env()) {
                Ok(_) => Vec::new(),
                Err(ConfigError::Invalid(issues)) => issues.iter().map(|i| i.to_string()).collect(),
                Err(e) => vec![e.to_string()],
            }
        };
        let token = "topic = 'a.b'\nteam_id = 'T'\nkey_id = 'K'\nkey_file = 'k.p8'\n";
        let certificate = "cert_file = 'c.pem'\ncert_key_file = 'c.key'\n";
        assert!(issues_of(token).is_empty());
        assert!(
            issues_of(certificate).is_empty(),
            "the topic comes from the certificate"
        );
        let both = issues_of(&format!("{token}{certificate}"));
        assert!(
            both.iter()
                .any(|i| i.starts_with("providers[apns].cert_file: choose one of token auth")),
            "{both:?}"
        );
        let neither = issues_of("topic = 'a.b'\n");
        assert!(
            neither
                .iter()
                .any(|i| i.starts_with("providers[apns].key_file: APNs needs")),
            "{neither:?}"
        );
        let p12 = "p12_file = 'c.p12'\np12_password = 'pw'\n";
        assert!(issues_of(p12).is_empty());
        let both = issues_of(&format!("{certificate}{p12}"));
        assert!(both.iter().any(|i| i.contains("not several")), "{both:?}");
        let two_passwords = issues_of(&format!("{p12}p12_password_file = 'pw.txt'\n"));
        assert!(
            two_passwords
                .iter()
                .any(|i| i.starts_with("providers[apns].p12_password: p12_password and")),
            "{two_passwords:?}"
        );
        assert!(
            !two_passwords
                .iter()
                .any(|i| i.contains("'pw'") || i.contains("\"pw\"")),
            "the password is never in a message"
        );
        let half = issues_of("cert_file = 'c.pem'\n");
        assert!(
            half.iter()
                .any(|i| i.starts_with("providers[apns].cert_key_file: required")),
            "{half:?}"
        );
    }

    #[test]
    fn secrets_are_not_printed() {
        let config = load_from_str(
            include_str!("../config/pushgate.local.toml"),
            "local",
            no_env(),
        )
        .expect("valid");
        assert!(!format!("{config:?}").contains("s3cr3t"));
    }
}
