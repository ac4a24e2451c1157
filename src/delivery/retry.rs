//! When to try again: exponential backoff with full jitter (the shared
//! [`Backoff`]), `Retry-After` as a floor, and a maximum age after which a
//! notification is given up.

use crate::backoff::Backoff;
use std::time::Duration;

/// The retry rules of `[delivery]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// Delay ceilings: `retry_base_ms` doubling up to `retry_max_ms`.
    pub backoff: Backoff,
    /// Age after which a notification is dropped, ms.
    pub max_age_ms: u64,
}

impl RetryPolicy {
    /// The ceiling of the delay after `attempts` failures.
    pub(crate) fn ceiling_ms(&self, attempts: u32) -> u64 {
        self.backoff.ceiling_ms(attempts)
    }

    /// The delay after `attempts` failures: uniform in `[0, ceiling]` (full jitter,
    /// so a storm of failures does not come back in step), and never shorter than
    /// the provider's `Retry-After`. `uniform(n)` draws from `0..=n`.
    pub(crate) fn delay_ms(
        &self,
        attempts: u32,
        retry_after: Option<Duration>,
        uniform: &mut impl FnMut(u64) -> u64,
    ) -> u64 {
        let jittered = self.backoff.full_jitter_ms(attempts, uniform);
        let floor = retry_after.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        jittered.max(floor)
    }

    /// Whether a notification accepted at `accepted_ms` is too old at `now_ms`.
    pub(crate) fn expired(&self, accepted_ms: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(accepted_ms) > self.max_age_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            backoff: Backoff::new(1_000, 60_000).expect("valid"),
            max_age_ms: 3_600_000,
        }
    }

    #[test]
    fn retry_after_is_a_floor() {
        let mut lowest = |_: u64| 0;
        let mut highest = |n: u64| n;
        let after = Some(Duration::from_secs(30));
        assert_eq!(policy().delay_ms(1, after, &mut lowest), 30_000);
        assert_eq!(policy().delay_ms(7, after, &mut highest), 60_000);
        assert_eq!(policy().delay_ms(3, None, &mut highest), 4_000);
    }

    #[test]
    fn max_age() {
        assert!(!policy().expired(1_000, 1_000 + 3_600_000));
        assert!(policy().expired(1_000, 1_001 + 3_600_000));
    }
}
