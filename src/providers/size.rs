//! Provider size limits, and fitting a push into them by shortening its text.
//!
//! The payload is always encoded by the provider's own encoder and measured
//! after encoding, so escaping is counted and the result is valid JSON.

use super::Push;
use super::error::DeliveryError;

/// APNs payload limit, bytes.
pub(crate) const APNS_LIMIT: usize = 4096;
/// APNs VoIP payload limit, bytes.
pub(crate) const APNS_VOIP_LIMIT: usize = 5120;
/// FCM data payload limit, bytes.
pub(crate) const FCM_LIMIT: usize = 4096;

const ELLIPSIS: &str = "…";

/// Which text fields are cut, in order: first the body (alert text and `body`
/// key, which carry the same text), then who it is from.
const GROUPS: [&[Field]; 2] = [
    &[Field::AlertBody, Field::Data("body")],
    &[
        Field::AlertTitle,
        Field::Data("sender"),
        Field::Data("nickname"),
    ],
];

#[derive(Clone, Copy)]
enum Field {
    AlertBody,
    AlertTitle,
    Data(&'static str),
}

impl Field {
    fn get_mut(self, push: &mut Push) -> Option<&mut String> {
        match self {
            Field::AlertBody => push.alert_body.as_mut(),
            Field::AlertTitle => push.alert_title.as_mut(),
            Field::Data(key) => push.data.get_mut(key),
        }
    }
}

/// Encodes `push`, shortening its body (then title, sender and nickname) just
/// enough for the encoding to fit `limit`. Fails when what is left over the limit
/// cannot be shortened (an encrypted payload).
pub(crate) fn fit(
    push: &Push,
    limit: usize,
    encode: impl Fn(&Push) -> Vec<u8>,
) -> Result<Vec<u8>, DeliveryError> {
    let bytes = encode(push);
    if bytes.len() <= limit {
        return Ok(bytes);
    }
    let mut current = push.clone();
    for group in GROUPS {
        let originals: Vec<Option<String>> = group
            .iter()
            .map(|f| f.get_mut(&mut current).cloned())
            .collect();
        let longest = originals
            .iter()
            .flatten()
            .map(String::len)
            .max()
            .unwrap_or(0);
        let with_prefix = |keep: usize| {
            let mut candidate = current.clone();
            for (field, original) in group.iter().zip(&originals) {
                if let (Some(text), Some(original)) = (field.get_mut(&mut candidate), original) {
                    *text = prefix(original, keep);
                }
            }
            candidate
        };
        // The longest prefix that fits, by bisection over its byte length.
        let (mut fits, mut too_long) = (None, longest);
        let mut low = 0;
        while low <= too_long {
            let mid = low + (too_long - low) / 2;
            let candidate = with_prefix(mid);
            let encoded = encode(&candidate);
            if encoded.len() <= limit {
                fits = Some(encoded);
                low = mid + 1;
            } else if mid == 0 {
                break;
            } else {
                too_long = mid - 1;
            }
        }
        if let Some(encoded) = fits {
            return Ok(encoded);
        }
        current = with_prefix(0);
    }
    Err(DeliveryError::TooLarge {
        size: encode(&current).len(),
        limit,
    })
}

/// The first `keep` bytes of `text` (at a character boundary) and an ellipsis;
/// `text` itself when it is no longer than that; empty for 0.
fn prefix(text: &str, keep: usize) -> String {
    if keep >= text.len() {
        return text.to_owned();
    }
    let mut end = keep;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if end == 0 {
        String::new()
    } else {
        format!("{}{ELLIPSIS}", &text[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::PushKind;
    use std::collections::BTreeMap;

    fn push(body: &str) -> Push {
        Push {
            token: "t".into(),
            kind: PushKind::Alert,
            collapse_id: None,
            badge: None,
            alert_title: Some("alice@example.com".into()),
            alert_body: Some(body.into()),
            data: BTreeMap::from([("body".to_owned(), body.to_owned())]),
        }
    }

    fn encode(p: &Push) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"b": p.alert_body, "d": p.data})).unwrap_or_default()
    }

    #[test]
    fn small_pushes_are_untouched() {
        let p = push("hello");
        assert_eq!(fit(&p, 4096, encode).ok(), Some(encode(&p)));
    }

    #[test]
    fn long_bodies_are_cut_to_exactly_fit_with_valid_json() {
        // Multi-byte characters and characters JSON escapes, to stress the count.
        for body in [
            "x".repeat(10_000),
            "é\"".repeat(3_000),
            "\u{1}😀".repeat(2_000),
        ] {
            for limit in [200, 1000, 4096] {
                let bytes = fit(&push(&body), limit, encode).expect("fits");
                assert!(bytes.len() <= limit, "{} > {limit}", bytes.len());
                let v: serde_json::Value = serde_json::from_slice(&bytes).expect("valid JSON");
                let text = v["b"].as_str().expect("body kept");
                assert!(text.ends_with(ELLIPSIS), "marked as cut");
                assert!(bytes.len() + 24 > limit, "cut no more than needed");
            }
        }
    }

    #[test]
    fn untrimmable_pushes_fail_as_too_large() {
        let mut p = push("");
        p.alert_body = None;
        p.data = BTreeMap::from([("encrypted".to_owned(), "A".repeat(5000))]);
        match fit(&p, 4096, encode) {
            Err(DeliveryError::TooLarge { limit: 4096, .. }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }
}
