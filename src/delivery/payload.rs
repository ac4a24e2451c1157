//! What a push looks like: the one mapping from a notification and its
//! registration to a provider-independent [`Push`] (`docs/protocol.md` §4).
//!
//! - Priority: Tigase `<priority/>` first; else a non-empty body (or a call) is
//!   high. High is an alert, low a silent background push.
//! - Calls (Tigase jingle, or encrypted `type='voip'`) go as VoIP pushes to the
//!   registration's second token when it has one.
//! - Keys Tigase apps read: `account`, `unread-messages`, `sender`, `body`,
//!   `encrypted`, `iv`, `nickname`. The encrypted payload is forwarded verbatim;
//!   account, sender and body only when the operator says so, otherwise the alert
//!   shows a generic text.

use crate::app::{Notification, Priority};
use crate::config::DeliveryConfig;
use crate::providers::{Push, PushKind};
use crate::registry::Registration;
use std::collections::BTreeMap;

/// What the operator lets leave the gateway (`[delivery] include_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadPolicy {
    /// Message body as the alert text and `body` key.
    pub include_body: bool,
    /// Sender JID and MUC nickname (`sender`, `nickname`, alert title).
    pub include_sender: bool,
    /// The account JID (`account`), where the registration kept it.
    pub include_account: bool,
    /// Alert text when the body is not included.
    pub alert_text: String,
}

impl PayloadPolicy {
    /// The policy of `[delivery]`.
    pub(crate) fn from_config(delivery: &DeliveryConfig) -> Self {
        Self {
            include_body: delivery.include_body,
            include_sender: delivery.include_sender,
            include_account: delivery.include_account,
            alert_text: delivery.alert_text.clone(),
        }
    }
}

impl Default for PayloadPolicy {
    fn default() -> Self {
        Self::from_config(&DeliveryConfig::default())
    }
}

/// Builds the push for `notification` to the device of `registration`.
///
/// The notification is taken, not borrowed: its strings (an encrypted
/// payload may be kilobytes) move into the push instead of being copied,
/// and only a value the push holds twice (the body as alert text and
/// `body` key, the sender as title and `sender` key) is cloned.
pub fn build_push(
    notification: Notification,
    registration: &Registration,
    policy: &PayloadPolicy,
) -> Push {
    let voip_token = registration
        .voip_token
        .as_ref()
        .filter(|_| notification.is_call());
    let (kind, token) = match (voip_token, notification.priority()) {
        (Some(voip), _) => (PushKind::Voip, voip.clone()),
        (None, Priority::High) => (PushKind::Alert, registration.token.clone()),
        (None, Priority::Low) => (PushKind::Background, registration.token.clone()),
    };
    let Notification {
        message_count,
        sender,
        body,
        encrypted,
        nickname,
        ..
    } = notification;
    let alert_body = match (&body, kind) {
        (_, PushKind::Background) => None,
        (Some(body), _) if policy.include_body => Some(body.clone()),
        _ => Some(policy.alert_text.clone()),
    };
    let alert_title = if policy.include_sender && kind == PushKind::Alert {
        nickname.clone().or_else(|| sender.clone())
    } else {
        None
    };
    let mut data = BTreeMap::new();
    let mut put = |key: &str, value: Option<String>| {
        if let Some(v) = value {
            data.insert(key.to_owned(), v);
        }
    };
    if policy.include_account {
        put("account", registration.account.clone());
    }
    if policy.include_sender {
        put("sender", sender);
        put("nickname", nickname);
    }
    if policy.include_body {
        put("body", body);
    }
    if let Some(e) = encrypted {
        put("encrypted", Some(e.payload));
        put("iv", Some(e.iv));
    }
    Push {
        token,
        kind,
        collapse_id: (kind != PushKind::Voip).then(|| registration.node.clone()),
        badge: message_count,
        alert_title,
        alert_body,
        data,
    }
}

#[cfg(test)]
mod tests;
