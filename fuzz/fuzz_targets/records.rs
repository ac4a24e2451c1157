//! Stored records (a registration, an outbox entry, the embedded store's
//! journal), as a store or an export could hand them back: decoding never
//! panics, what decodes encodes back to the same value, and the journal's
//! whole frames are a prefix that reads the same alone.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushgate::delivery::OutboxEntry;
use pushgate::registry::{Registration, journal_prefix};

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
    let (whole, changes) = journal_prefix(data);
    let prefix = data.get(..whole).expect("the whole frames are within the input");
    assert_eq!(journal_prefix(prefix), (whole, changes));
});
