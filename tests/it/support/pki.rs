//! The throw-away CA and provider keys, shared with `pushgate-bench`.

#[path = "../../../src/bin/pushgate-bench/pki.rs"]
mod shared;

pub use shared::TestPki;
