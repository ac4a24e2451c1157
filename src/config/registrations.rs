//! `[registrations]`: what one account may do.

use super::ConfigIssue;
use serde::Deserialize;

/// `[registrations]`: what one account may do, so that no account (or a
/// server's users acting together) can fill the store or crowd out others.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationsConfig {
    /// Registrations one account may hold; a registration beyond it is
    /// refused with a form error (the existing ones are kept: evicting would
    /// silently stop pushes to a device the user still has). 0 = no cap.
    #[serde(default = "defaults::max_per_account")]
    pub max_per_account: u32,
    /// Registration commands a minute per account (any dialect, blank forms
    /// included); more are answered `wait/resource-constraint`. 0 = no limit.
    #[serde(default = "defaults::commands_per_minute")]
    pub commands_per_minute: u32,
    /// Domains whose accounts may register; empty = every domain. Compared
    /// without regard to case.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// Hours after which a registration never published to is removed,
    /// counted from its last registration (apps register again when they
    /// connect). 0 = never.
    #[serde(default = "defaults::unpublished_expiry_hours")]
    pub unpublished_expiry_hours: f64,
}

impl Default for RegistrationsConfig {
    fn default() -> Self {
        Self {
            max_per_account: defaults::max_per_account(),
            commands_per_minute: defaults::commands_per_minute(),
            allowed_domains: Vec::new(),
            unpublished_expiry_hours: defaults::unpublished_expiry_hours(),
        }
    }
}

impl RegistrationsConfig {
    /// How old a registration never published to may get; `None`: no limit.
    pub(crate) fn unpublished_expiry(&self) -> Option<std::time::Duration> {
        (self.unpublished_expiry_hours > 0.0)
            .then(|| {
                std::time::Duration::try_from_secs_f64(self.unpublished_expiry_hours * 3600.0).ok()
            })
            .flatten()
    }

    /// Whether accounts of `domain` may register.
    pub(crate) fn allows_domain(&self, domain: &str) -> bool {
        self.allowed_domains.is_empty()
            || self
                .allowed_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
    }
}

impl RegistrationsConfig {
    /// Adds what is wrong with `[registrations]` to `issues`.
    pub(crate) fn validate(&self, issues: &mut Vec<ConfigIssue>) {
        let expiry = self.unpublished_expiry_hours;
        if !(expiry.is_finite() && expiry >= 0.0) {
            issues.push(ConfigIssue::new(
                "registrations.unpublished_expiry_hours",
                format!("must be a number of hours, 0 or more, got {expiry}"),
            ));
        }
        for domain in &self.allowed_domains {
            if domain.is_empty() || domain.contains(['@', '/', ' ']) {
                issues.push(ConfigIssue::new(
                    "registrations.allowed_domains",
                    format!("must be bare domains such as example.com, got {domain:?}"),
                ));
            }
        }
    }
}

mod defaults {
    pub(super) fn unpublished_expiry_hours() -> f64 {
        30.0 * 24.0
    }
    pub(super) fn max_per_account() -> u32 {
        20
    }
    pub(super) fn commands_per_minute() -> u32 {
        30
    }
}
