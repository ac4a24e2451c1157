//! What a push looks like: the mapping from a notification and its registration to
//! a provider-independent [`Push`].
//!
//! Nothing from the message (body, sender) goes to the provider: the alert text is
//! generic, and only counts and the Tigase encrypted payload (opaque to us and to
//! the provider) are forwarded.

use crate::app::{Notification, Priority};
use crate::providers::{Push, PushKind};
use crate::registry::Registration;
use std::collections::BTreeMap;

/// Builds the push for `notification` to the device of `registration`.
pub fn build_push(notification: &Notification, registration: &Registration) -> Push {
    let voip_token = registration
        .voip_token
        .as_ref()
        .filter(|_| notification.is_call());
    let (kind, token) = match (voip_token, notification.priority()) {
        (Some(voip), _) => (PushKind::Voip, voip.clone()),
        (None, Priority::High) => (PushKind::Alert, registration.token.clone()),
        (None, Priority::Low) => (PushKind::Background, registration.token.clone()),
    };
    let mut data = BTreeMap::new();
    if let Some(count) = notification.message_count {
        data.insert("unread-messages".to_owned(), count.to_string());
    }
    if let Some(e) = &notification.encrypted {
        data.insert("encrypted".to_owned(), e.payload.clone());
        data.insert("iv".to_owned(), e.iv.clone());
    }
    Push {
        token,
        kind,
        collapse_id: (kind != PushKind::Voip).then(|| registration.node.clone()),
        badge: notification.message_count,
        alert_body: None,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Encrypted;

    fn registration(voip: Option<&str>) -> Registration {
        Registration {
            node: "node1".into(),
            account_hash: "h".into(),
            account_domain: "example.com".into(),
            provider: "apns".into(),
            token: "main".into(),
            voip_token: voip.map(str::to_owned),
            secret_hash: None,
            created_ms: 0,
            updated_ms: 0,
        }
    }

    #[test]
    fn kind_follows_priority_and_calls() {
        let body = Notification {
            body: Some("hi".into()),
            message_count: Some(2),
            ..Notification::default()
        };
        let p = build_push(&body, &registration(None));
        assert_eq!(
            (p.kind, p.token.as_str(), p.badge),
            (PushKind::Alert, "main", Some(2))
        );
        assert_eq!(p.collapse_id.as_deref(), Some("node1"));
        assert_eq!(p.data["unread-messages"], "2");
        assert!(!p.data.values().any(|v| v == "hi"), "the body never leaves");

        let empty = Notification::default();
        assert_eq!(
            build_push(&empty, &registration(None)).kind,
            PushKind::Background
        );

        let call = Notification {
            jingle_sid: Some("s".into()),
            ..Notification::default()
        };
        let p = build_push(&call, &registration(Some("voiptoken")));
        assert_eq!((p.kind, p.token.as_str()), (PushKind::Voip, "voiptoken"));
        assert_eq!(p.collapse_id, None);
        // No VoIP token: an ordinary push to the main token.
        assert_eq!(build_push(&call, &registration(None)).token, "main");
    }

    #[test]
    fn encrypted_payload_is_forwarded_verbatim() {
        let n = Notification {
            encrypted: Some(Encrypted {
                payload: "Y2lwaGVy+/=".into(),
                iv: "aXY=".into(),
                kind: None,
            }),
            ..Notification::default()
        };
        let p = build_push(&n, &registration(None));
        assert_eq!(p.data["encrypted"], "Y2lwaGVy+/=");
        assert_eq!(p.data["iv"], "aXY=");
    }
}
