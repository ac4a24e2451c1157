//! The FCM request body written straight into bytes.
//!
//! [`super::fcm::data`] and [`super::fcm::message`] say what is sent, as
//! `serde_json` values; building those trees, encoding the data map to
//! measure it, parsing it back and encoding the whole message again were
//! 4.2% of the gateway's CPU at full load (BENCHMARKS.md, "Third round,
//! again: less per delivery"). The bytes written here are the same, key
//! order included (a `serde_json` map sorts its keys); the tests hold them
//! to it.

use super::{Push, PushKind};
use std::collections::BTreeMap;

/// The encoded `data` map of `push`: what FCM's 4096-byte limit counts.
pub(crate) fn data_bytes(push: &Push) -> Vec<u8> {
    let badge = push.badge.map(|count| count.to_string());
    // Later entries replace earlier ones, as in [`super::fcm::data`].
    let mut entries: BTreeMap<&str, &str> = BTreeMap::new();
    if let Some(count) = &badge {
        entries.insert("unread-messages", count);
    }
    if let Some(title) = &push.alert_title {
        entries.insert("title", title);
    }
    for (key, value) in &push.data {
        entries.insert(key, value);
    }
    let mut out = Vec::with_capacity(256);
    out.push(b'{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(&mut out, key);
        out.push(b':');
        string(&mut out, value);
    }
    out.push(b'}');
    out
}

/// The v1 message around an encoded `data` map (from [`data_bytes`]).
pub(crate) fn message_bytes(push: &Push, data: &[u8], expiration_s: u64) -> Vec<u8> {
    let priority = match push.kind {
        PushKind::Alert | PushKind::Voip => "high",
        PushKind::Background => "normal",
    };
    let mut out = Vec::with_capacity(data.len() + push.token.len() + 128);
    out.extend_from_slice(b"{\"message\":{\"android\":{");
    if let Some(collapse) = &push.collapse_id {
        out.extend_from_slice(b"\"collapse_key\":");
        string(&mut out, collapse);
        out.push(b',');
    }
    out.extend_from_slice(b"\"priority\":");
    string(&mut out, priority);
    out.extend_from_slice(b",\"ttl\":\"");
    out.extend_from_slice(expiration_s.to_string().as_bytes());
    out.extend_from_slice(b"s\"},\"data\":");
    out.extend_from_slice(data);
    out.extend_from_slice(b",\"token\":");
    string(&mut out, &push.token);
    out.extend_from_slice(b"}}");
    out
}

/// `text` as a JSON string, escaped by `serde_json`'s own rules.
fn string(out: &mut Vec<u8>, text: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::fcm::{data, message};

    fn push(
        kind: PushKind,
        badge: Option<u32>,
        title: Option<&str>,
        data: &[(&str, &str)],
    ) -> Push {
        Push {
            token: "tok\"en\u{1}é".into(),
            kind,
            collapse_id: (kind != PushKind::Voip).then(|| "node/\u{7f}\\".to_owned()),
            badge,
            alert_title: title.map(str::to_owned),
            alert_body: Some("ignored by FCM".into()),
            data: data
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn the_same_bytes_as_the_json_values() {
        let pushes = [
            push(
                PushKind::Alert,
                Some(3),
                Some("Tïtle \"q\""),
                &[("body", "hi\n\t<&>"), ("sender", "a@b")],
            ),
            push(PushKind::Background, None, None, &[]),
            push(
                PushKind::Voip,
                Some(0),
                None,
                &[("encrypted", "AAA="), ("iv", "BB==")],
            ),
            // Data keys that collide with the ones made from the push win.
            push(
                PushKind::Alert,
                Some(7),
                Some("t"),
                &[("title", "data's"), ("unread-messages", "x"), ("a", "")],
            ),
        ];
        for p in &pushes {
            let reference = serde_json::to_vec(&data(p)).expect("encodes");
            let direct = data_bytes(p);
            assert_eq!(
                String::from_utf8_lossy(&direct),
                String::from_utf8_lossy(&reference)
            );
            let reference = serde_json::to_vec(&message(p, data(p), 2_419_200)).expect("encodes");
            let direct = message_bytes(p, &direct, 2_419_200);
            assert_eq!(
                String::from_utf8_lossy(&direct),
                String::from_utf8_lossy(&reference)
            );
        }
    }
}
