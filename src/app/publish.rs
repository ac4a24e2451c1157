//! A XEP-0357 publish, as Prosody, ejabberd and Tigase send it (`docs/protocol.md` §4),
//! turned into a [`Notification`].

use super::forms::Form;
use super::node::XmlNode;
use super::ns;
use super::replies::StanzaFault;

/// How urgently the device should be woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Background refresh; no alert.
    Low,
    /// Show an alert.
    High,
}

/// A Tigase end-to-end encrypted payload, forwarded byte-for-byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encrypted {
    /// Base64 ciphertext, exactly as received.
    pub payload: String,
    /// Base64 IV, exactly as received.
    pub iv: String,
    /// The `type` attribute (`voip` for calls), if any.
    pub kind: Option<String>,
}

/// What a publish tells us about the pending messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notification {
    /// `message-count`, when the server sent a number.
    pub message_count: Option<u32>,
    /// `last-message-sender`, when non-empty.
    pub sender: Option<String>,
    /// `last-message-body`, when non-empty.
    pub body: Option<String>,
    /// Tigase `<priority/>`, when present and valid.
    pub explicit_priority: Option<Priority>,
    /// Tigase `<encrypted/>`.
    pub encrypted: Option<Encrypted>,
    /// Tigase `<jingle/>` call proposal: its session id.
    pub jingle_sid: Option<String>,
    /// Tigase MUC nickname.
    pub nickname: Option<String>,
    /// Tigase's account-removed event: the account is gone, and with it every
    /// reason to wake its devices. Nothing is pushed; the registration goes.
    pub account_removed: bool,
}

impl Notification {
    /// Explicit priority first; otherwise a non-empty body or a call means high.
    pub fn priority(&self) -> Priority {
        self.explicit_priority
            .unwrap_or(if self.body.is_some() || self.is_call() {
                Priority::High
            } else {
                Priority::Low
            })
    }

    /// An incoming call: wants a VoIP push where the device has a VoIP token.
    pub(crate) fn is_call(&self) -> bool {
        self.jingle_sid.is_some()
            || self
                .encrypted
                .as_ref()
                .is_some_and(|e| e.kind.as_deref() == Some("voip"))
    }
}

/// A publish request: the node, the notification, and the publish-options secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    /// The push node.
    pub node: String,
    /// What to notify.
    pub notification: Notification,
    /// `secret` from publish-options, if given.
    pub secret: Option<String>,
}

/// Reads `<pubsub><publish node=…>…</publish><publish-options/></pubsub>`.
pub(crate) fn parse_publish<N: XmlNode>(pubsub: &N) -> Result<PublishRequest, StanzaFault> {
    let publish = pubsub
        .get_child("publish", ns::PUBSUB)
        .ok_or_else(|| StanzaFault::bad_request("pubsub without <publish/>"))?;
    let node = publish
        .attr("node")
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| StanzaFault::new("modify", "bad-request", "<publish/> without a node"))?
        .to_owned();
    let notification = publish
        .get_child("item", ns::PUBSUB)
        .and_then(|item| item.get_child("notification", ns::PUSH))
        .map(parse_notification)
        .unwrap_or_default();
    let secret = pubsub
        .get_child("publish-options", ns::PUBSUB)
        .and_then(Form::child_of)
        .and_then(|f| f.value("secret").map(str::to_owned));
    Ok(PublishRequest {
        node,
        notification,
        secret,
    })
}

/// Reads a `<notification xmlns='urn:xmpp:push:0'/>`. Lenient: unknown elements
/// are ignored, unreadable values are dropped, nothing fails.
pub(crate) fn parse_notification<N: XmlNode>(notification: &N) -> Notification {
    let summary = notification
        .children()
        .filter_map(Form::parse)
        .find(|f| f.form_type() == Some(ns::PUSH_SUMMARY) || f.form_type().is_none());
    let mut n = Notification::default();
    if let Some(form) = &summary {
        n.message_count = form.non_empty("message-count").and_then(|v| v.parse().ok());
        n.sender = form.non_empty("last-message-sender").map(str::to_owned);
        n.body = form.non_empty("last-message-body").map(str::to_owned);
    }
    if let Some(p) = notification.get_child("priority", ns::TIGASE_PRIORITY) {
        n.explicit_priority = match p.text().trim() {
            "high" => Some(Priority::High),
            "low" => Some(Priority::Low),
            _ => None,
        };
    }
    if let Some(e) = notification.get_child("encrypted", ns::TIGASE_ENCRYPT) {
        n.encrypted = Some(Encrypted {
            payload: e.text(),
            iv: e.attr("iv").unwrap_or_default().to_owned(),
            kind: e.attr("type").map(str::to_owned),
        });
    }
    if let Some(j) = notification.get_child("jingle", ns::TIGASE_JINGLE) {
        n.jingle_sid = Some(j.attr("sid").unwrap_or_default().to_owned());
    }
    if let Some(g) = notification.get_child("groupchat", ns::TIGASE_MUC_OFFLINE) {
        n.nickname = g
            .children()
            .find(|c| c.name() == "nickname")
            .map(N::text)
            .filter(|t| !t.is_empty());
    }
    n.account_removed = notification.children().any(|c| {
        c.is("event", ns::TIGASE_ACCOUNT_EVENT) && c.attr("name") == Some(ACCOUNT_REMOVED)
    });
    n
}

/// The `name` of Tigase's account-removed `<event/>` (`docs/protocol.md` §4).
const ACCOUNT_REMOVED: &str = "account-removed";

#[cfg(test)]
pub(crate) mod tests;
