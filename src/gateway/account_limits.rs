//! `[registrations]` limits on the commands arriving on this node's
//! streams: allowed account domains and a command rate per account.

use crate::app::StanzaFault;
use crate::config::RegistrationsConfig;
use crate::limits::KeyedRate;

/// How many keys (accounts, client addresses) a rate limit tracks at once.
pub(crate) const LIMITED_KEYS: usize = 100_000;

/// `[registrations]` as the handler applies it to commands arriving on its
/// streams (a peer's forwarded command was checked where it arrived).
pub(crate) struct AccountLimits {
    pub(super) config: RegistrationsConfig,
    rate: Option<KeyedRate<String>>,
}

impl AccountLimits {
    pub(crate) fn new(config: &RegistrationsConfig) -> Self {
        Self {
            config: config.clone(),
            rate: KeyedRate::new(config.commands_per_minute, LIMITED_KEYS),
        }
    }

    /// Why `account` may not send a command now, with the metric outcome.
    pub(super) fn refusal(&self, account: &str) -> Option<(&'static str, StanzaFault)> {
        let domain = account.rsplit_once('@').map_or(account, |(_, d)| d);
        if !self.config.allows_domain(domain) {
            let fault = StanzaFault::new(
                "cancel",
                "forbidden",
                "accounts of this domain may not register here",
            );
            return Some(("forbidden", fault));
        }
        if self
            .rate
            .as_ref()
            .is_some_and(|r| !r.allow(&account.to_owned()))
        {
            let fault = StanzaFault::new(
                "wait",
                "resource-constraint",
                "too many registration commands from this account; try again in a minute",
            );
            return Some(("rate-limited", fault));
        }
        None
    }
}
