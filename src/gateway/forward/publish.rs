//! A publish as it travels to its shard's owner: already read and checked
//! by the node whose stream it arrived on, so the owner does not parse the
//! XML again. Parsing was the largest single cost of a forwarded publish on
//! the owner (BENCHMARKS.md, "A cluster on one machine").

use crate::app::Request;
use crate::app::publish::{Encrypted, Notification, Priority, PublishRequest};
use crate::app::replies::IqHeader;
use crate::cluster::pb;

/// The message for a publish that goes to its owner.
pub(super) fn to_message(
    header: &IqHeader,
    publisher_domain: &str,
    request: PublishRequest,
) -> pb::Publish {
    let PublishRequest {
        node,
        notification: n,
        secret,
    } = request;
    let priority = match n.explicit_priority {
        None => pb::Priority::Unspecified,
        Some(Priority::Low) => pb::Priority::Low,
        Some(Priority::High) => pb::Priority::High,
    };
    pb::Publish {
        id: header.id.clone(),
        from: header.from.clone(),
        to: header.to.clone(),
        publisher_domain: publisher_domain.to_owned(),
        node,
        secret,
        notification: Some(pb::Notification {
            message_count: n.message_count,
            sender: n.sender,
            body: n.body,
            priority: priority.into(),
            encrypted: n.encrypted.map(|e| pb::Encrypted {
                payload: e.payload,
                iv: e.iv,
                kind: e.kind,
            }),
            jingle_sid: n.jingle_sid,
            nickname: n.nickname,
            account_removed: n.account_removed,
        }),
    }
}

/// The request a peer's publish stands for, as if read here.
pub(super) fn from_message(message: pb::Publish) -> Request {
    let n = message.notification.unwrap_or_default();
    // An unknown value (a newer peer's) counts as none: derived from the content.
    let explicit_priority = match pb::Priority::try_from(n.priority) {
        Ok(pb::Priority::Low) => Some(Priority::Low),
        Ok(pb::Priority::High) => Some(Priority::High),
        Ok(pb::Priority::Unspecified) | Err(_) => None,
    };
    Request::Publish {
        header: IqHeader {
            id: message.id,
            from: message.from,
            to: message.to,
        },
        publisher_domain: message.publisher_domain,
        request: PublishRequest {
            node: message.node,
            secret: message.secret,
            notification: Notification {
                message_count: n.message_count,
                sender: n.sender,
                body: n.body,
                explicit_priority,
                encrypted: n.encrypted.map(|e| Encrypted {
                    payload: e.payload,
                    iv: e.iv,
                    kind: e.kind,
                }),
                jingle_sid: n.jingle_sid,
                nickname: n.nickname,
                account_removed: n.account_removed,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> IqHeader {
        IqHeader {
            id: "p1".into(),
            from: Some("example.org".into()),
            to: Some("push.example.org".into()),
        }
    }

    fn round_trip(request: PublishRequest) -> PublishRequest {
        let message = to_message(&header(), "example.org", request);
        // Through the wire format, as a peer receives it.
        let bytes = prost::Message::encode_to_vec(&message);
        let decoded = <pb::Publish as prost::Message>::decode(bytes.as_slice()).expect("decode");
        match from_message(decoded) {
            Request::Publish {
                header: h,
                publisher_domain,
                request,
            } => {
                assert_eq!(h, header());
                assert_eq!(publisher_domain, "example.org");
                request
            }
            _ => panic!("not a publish"),
        }
    }

    #[test]
    fn every_field_of_a_publish_survives_the_trip_to_the_owner() {
        let full = PublishRequest {
            node: "n-1".into(),
            secret: Some("s3cret".into()),
            notification: Notification {
                message_count: Some(0),
                sender: Some("juliet@example.org".into()),
                body: Some("hi".into()),
                explicit_priority: Some(Priority::Low),
                encrypted: Some(Encrypted {
                    payload: "cGF5".into(),
                    iv: "aXY=".into(),
                    kind: Some("voip".into()),
                }),
                jingle_sid: Some("sid".into()),
                nickname: Some("nick".into()),
                account_removed: true,
            },
        };
        assert_eq!(round_trip(full.clone()), full);
        let high = PublishRequest {
            notification: Notification {
                explicit_priority: Some(Priority::High),
                ..Notification::default()
            },
            ..full
        };
        assert_eq!(round_trip(high.clone()), high);
    }

    #[test]
    fn an_empty_publish_stays_empty() {
        let bare = PublishRequest {
            node: "n".into(),
            notification: Notification::default(),
            secret: None,
        };
        assert_eq!(round_trip(bare.clone()), bare);
    }

    #[test]
    fn an_unknown_priority_from_a_newer_peer_is_derived_from_the_content() {
        let mut message = to_message(
            &header(),
            "example.org",
            PublishRequest {
                node: "n".into(),
                notification: Notification::default(),
                secret: None,
            },
        );
        if let Some(n) = message.notification.as_mut() {
            n.priority = 7;
        }
        match from_message(message) {
            Request::Publish { request, .. } => {
                assert_eq!(request.notification.explicit_priority, None);
            }
            _ => panic!("not a publish"),
        }
    }
}
