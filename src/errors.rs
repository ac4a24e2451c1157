//! Errors as text for a log line or a readiness answer.
//!
//! The error types of the crate keep their cause as `source()` and say only
//! their own part in `Display` (the stage that failed), as the standard
//! library's convention wants; `chain` puts the two back together where an
//! operator reads them. hyper, reqwest, redb and redis keep the useful part
//! of their errors in their sources too.

use std::error::Error;

/// `e`'s message followed by each of its causes, joined with `": "`.
pub(crate) fn chain(e: &dyn Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        // Some wrappers repeat their cause in their own message.
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("sending the request")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_stage_comes_first_then_each_cause() {
        let e = Outer(std::io::Error::other("connection reset"));
        assert_eq!(chain(&e), "sending the request: connection reset");
    }
}
