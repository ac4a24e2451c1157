//! Provider answers: any status, `retry-after` and `apns-id` header values
//! and body, read as APNs and as FCM. Only 200 is a delivery; anything else
//! is a classified rejection whose metric label comes from the closed set
//! and whose kept body is at most 512 bytes.
#![no_main]

use hyper::header::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use pushgate::providers::{DeliveryError, apns_answer, fcm_answer};

fuzz_target!(|data: &[u8]| {
    let [hi, lo, retry_len, id_len, rest @ ..] = data else {
        return;
    };
    let status = u16::from_be_bytes([*hi, *lo]) % 1000;
    let (retry, rest) = rest.split_at((*retry_len as usize).min(rest.len()));
    let (id, body) = rest.split_at((*id_len as usize).min(rest.len()));
    let mut headers = HeaderMap::new();
    for (name, value) in [("retry-after", retry), ("apns-id", id)] {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(name, value);
        }
    }
    for answer in [apns_answer(status, &headers, body), fcm_answer(status, &headers, body)] {
        match answer {
            Ok(_) => assert_eq!(status, 200),
            Err(e) => {
                assert_ne!(status, 200);
                let label = e.reason_label();
                assert!(
                    label.len() <= 40 && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                    "label {label:?}"
                );
                if let DeliveryError::Rejected { body, reason, .. } = &e {
                    assert!(body.len() <= 512);
                    if !reason.is_empty() && label != "unknown" {
                        assert_eq!(label, reason.as_str());
                    }
                }
                let _ = (e.class(), e.retry_after(), e.hint(), e.to_string());
            }
        }
    }
});
