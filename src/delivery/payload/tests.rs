//! The payload table.

use super::*;
use crate::app::Encrypted;

fn registration(voip: Option<&str>) -> Registration {
    Registration {
        node: "node1".into(),
        account_hash: "h".into(),
        account: Some("alice@example.com".into()),
        account_domain: "example.com".into(),
        provider: "apns".into(),
        token: "main".into(),
        voip_token: voip.map(str::to_owned),
        secret_hash: None,
        created_ms: 0,
        updated_ms: 0,
        identity: None,
        unpublished: false,
    }
}

fn open_policy() -> PayloadPolicy {
    PayloadPolicy {
        include_body: true,
        include_sender: true,
        include_account: true,
        alert_text: "New message".into(),
    }
}

fn message() -> Notification {
    Notification {
        message_count: Some(2),
        sender: Some("bob@example.com/phone".into()),
        body: Some("hi".into()),
        ..Notification::default()
    }
}

#[test]
fn priority_table() {
    let high = |n: &Notification| {
        build_push(n.clone(), &registration(None), &PayloadPolicy::default()).kind
    };
    let cases = [
        (message(), PushKind::Alert),
        (Notification::default(), PushKind::Background),
        (
            Notification {
                explicit_priority: Some(Priority::Low),
                ..message()
            },
            PushKind::Background,
        ),
        (
            Notification {
                explicit_priority: Some(Priority::High),
                ..Notification::default()
            },
            PushKind::Alert,
        ),
        (
            Notification {
                jingle_sid: Some("s".into()),
                ..Notification::default()
            },
            PushKind::Alert,
        ),
    ];
    for (n, kind) in cases {
        assert_eq!(high(&n), kind, "{n:?}");
    }
}

#[test]
fn nothing_private_leaves_by_default() {
    let p = build_push(message(), &registration(None), &PayloadPolicy::default());
    assert_eq!(p.alert_body.as_deref(), Some("New message"));
    assert_eq!(p.alert_title, None);
    assert_eq!(p.badge, Some(2));
    assert!(p.data.is_empty(), "{:?}", p.data);
    assert_eq!(p.collapse_id.as_deref(), Some("node1"));
}

#[test]
fn tigase_keys_when_the_operator_includes_them() {
    let n = Notification {
        nickname: Some("Bob".into()),
        ..message()
    };
    let p = build_push(n.clone(), &registration(None), &open_policy());
    assert_eq!(p.alert_body.as_deref(), Some("hi"));
    assert_eq!(p.alert_title.as_deref(), Some("Bob"));
    assert_eq!(p.data["account"], "alice@example.com");
    assert_eq!(p.data["sender"], "bob@example.com/phone");
    assert_eq!(p.data["body"], "hi");
    assert_eq!(p.data["nickname"], "Bob");
    // A registration made without include_account has no account to give.
    let mut r = registration(None);
    r.account = None;
    assert!(
        !build_push(n, &r, &open_policy())
            .data
            .contains_key("account")
    );
}

#[test]
fn calls_go_to_the_voip_token() {
    let call = Notification {
        jingle_sid: Some("s".into()),
        ..Notification::default()
    };
    let p = build_push(
        call.clone(),
        &registration(Some("voiptoken")),
        &PayloadPolicy::default(),
    );
    assert_eq!((p.kind, p.token.as_str()), (PushKind::Voip, "voiptoken"));
    assert_eq!(p.collapse_id, None, "calls never collapse");
    let encrypted_call = Notification {
        encrypted: Some(Encrypted {
            payload: "x".into(),
            iv: "y".into(),
            kind: Some("voip".into()),
        }),
        ..Notification::default()
    };
    let p = build_push(
        encrypted_call,
        &registration(Some("voiptoken")),
        &PayloadPolicy::default(),
    );
    assert_eq!(p.kind, PushKind::Voip);
    // Without a VoIP token: an alert to the main token.
    let p = build_push(call, &registration(None), &PayloadPolicy::default());
    assert_eq!((p.kind, p.token.as_str()), (PushKind::Alert, "main"));
}

#[test]
fn encrypted_payload_is_forwarded_verbatim() {
    let n = Notification {
        encrypted: Some(Encrypted {
            payload: "Y2lwaGVy+/=\u{0}AAAA".into(),
            iv: "aXY=".into(),
            kind: None,
        }),
        ..Notification::default()
    };
    let p = build_push(n, &registration(None), &PayloadPolicy::default());
    assert_eq!(p.data["encrypted"], "Y2lwaGVy+/=\u{0}AAAA");
    assert_eq!(p.data["iv"], "aXY=");
}
