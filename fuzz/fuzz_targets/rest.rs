//! The REST unregister's body (and component path, before a NUL byte): it
//! names a device or a status to answer, never a panic; a device has a
//! configured provider, a bare account JID and a token in its normal form.
#![no_main]

mod context;

use libfuzzer_sys::fuzz_target;
use pushgate::app::commands::{normalize_token, provider_kind};
use pushgate::http::read_unregister;

fuzz_target!(|data: &[u8]| {
    let ctx = context::context();
    let (component, body) = match data.iter().position(|b| *b == 0) {
        Some(at) => (String::from_utf8_lossy(&data[..at]).into_owned(), &data[at + 1..]),
        None => ("push.example.com".to_owned(), data),
    };
    match read_unregister(ctx, &component, body) {
        Ok((account, provider, token)) => {
            assert!(!account.contains('/'), "a bare JID: {account}");
            let kind = provider_kind(ctx, &provider).expect("a configured provider");
            assert_eq!(normalize_token(kind, &token).as_ref(), Ok(&token));
        }
        Err(status) => assert!(matches!(status.as_u16(), 200 | 400 | 404), "{status}"),
    }
});
