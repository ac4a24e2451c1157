//! Stored records (a registration, an outbox entry), as a store or an
//! export could hand them back: decoding never panics, and what decodes
//! encodes back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushgate::delivery::OutboxEntry;
use pushgate::registry::Registration;

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = OutboxEntry::decode(data) {
        let again = OutboxEntry::decode(&entry.encode()).expect("re-encoded entry decodes");
        assert_eq!(entry, again);
    }
    if let Ok(registration) = serde_json::from_slice::<Registration>(data) {
        let bytes = serde_json::to_vec(&registration).expect("encodes");
        let again: Registration = serde_json::from_slice(&bytes).expect("re-encoded decodes");
        assert_eq!(registration, again);
    }
});
