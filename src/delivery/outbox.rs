//! What the outbox holds: one entry per pending push, keyed by node (or by node
//! and call for VoIP), with its retry schedule. Entries are stored as JSON, so
//! the schedule survives a crash and the format stays readable across versions.

use crate::providers::{Push, PushKind};
use serde::{Deserialize, Serialize};

/// One pending push and its schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The store key: the node, or `node#call#<id>` for a VoIP push.
    pub key: String,
    /// The push node.
    pub node: String,
    /// The provider id.
    pub provider: String,
    /// What to send: the merge of every publish this entry holds.
    pub push: Push,
    /// When the oldest publish it holds was accepted (ms since the epoch); the
    /// maximum age and the delivery latency count from here.
    pub accepted_ms: u64,
    /// When the next attempt is due (ms since the epoch).
    pub due_ms: u64,
    /// Attempts that failed so far.
    pub attempts: u32,
    /// Publishes merged into this entry.
    pub publishes: u32,
}

impl OutboxEntry {
    /// Encodes the entry for the store.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a stored entry.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The store key of a push for `node`. Calls get a key of their own, so they are
/// never merged with messages or with each other.
pub(crate) fn entry_key(node: &str, push: &Push, call_id: u64) -> String {
    if push.kind == PushKind::Voip {
        format!("{node}#call#{call_id:016x}")
    } else {
        node.to_owned()
    }
}

/// Merges a newer push for the same node into an older one: the newer counts and
/// content win, the higher priority wins, and text the newer one lacks (an alert
/// body, followed by a body-less chat-state push) is kept from the older.
pub fn merge(older: &Push, newer: Push) -> Push {
    let mut merged = newer;
    if older.kind > merged.kind {
        merged.kind = older.kind;
    }
    if merged.alert_body.is_none() {
        merged.alert_body.clone_from(&older.alert_body);
    }
    if merged.alert_title.is_none() {
        merged.alert_title.clone_from(&older.alert_title);
    }
    if merged.badge.is_none() {
        merged.badge = older.badge;
    }
    let encrypted_is_new = merged.data.contains_key("encrypted");
    for (key, value) in &older.data {
        // An encrypted payload and its IV travel together: never mix two.
        let paired = key == "encrypted" || key == "iv";
        if !(paired && encrypted_is_new) {
            merged
                .data
                .entry(key.clone())
                .or_insert_with(|| value.clone());
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn push(kind: PushKind, badge: Option<u32>, data: &[(&str, &str)]) -> Push {
        Push {
            token: "t".into(),
            kind,
            collapse_id: Some("n".into()),
            badge,
            alert_title: None,
            alert_body: (kind == PushKind::Alert).then(|| "New message".to_owned()),
            data: data
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn latest_counts_highest_priority() {
        let alert = push(PushKind::Alert, Some(1), &[("body", "hi")]);
        let silent = push(PushKind::Background, Some(2), &[]);
        let m = merge(&alert, silent.clone());
        assert_eq!(m.kind, PushKind::Alert);
        assert_eq!(m.badge, Some(2));
        assert_eq!(m.alert_body.as_deref(), Some("New message"));
        assert_eq!(m.data["body"], "hi");
        let m = merge(&silent, alert);
        assert_eq!((m.kind, m.badge), (PushKind::Alert, Some(1)));
    }

    #[test]
    fn encrypted_pairs_are_never_mixed() {
        let old = push(
            PushKind::Alert,
            None,
            &[("encrypted", "old"), ("iv", "oldiv")],
        );
        let new = push(
            PushKind::Alert,
            None,
            &[("encrypted", "new"), ("iv", "newiv")],
        );
        let m = merge(&old, new);
        assert_eq!(
            (m.data["encrypted"].as_str(), m.data["iv"].as_str()),
            ("new", "newiv")
        );
        let plain = push(PushKind::Alert, None, &[]);
        let m = merge(&old, plain);
        assert_eq!(
            (m.data["encrypted"].as_str(), m.data["iv"].as_str()),
            ("old", "oldiv")
        );
    }

    #[test]
    fn entries_round_trip_and_calls_get_their_own_key() {
        let p = push(PushKind::Voip, None, &[]);
        assert_eq!(entry_key("node", &p, 7), "node#call#0000000000000007");
        assert_eq!(
            entry_key("node", &push(PushKind::Alert, None, &[]), 7),
            "node"
        );
        let e = OutboxEntry {
            key: "node".into(),
            node: "node".into(),
            provider: "apns".into(),
            push: p,
            accepted_ms: 1,
            due_ms: 2,
            attempts: 3,
            publishes: 4,
        };
        assert_eq!(OutboxEntry::decode(&e.encode()).expect("decode"), e);
    }
}
