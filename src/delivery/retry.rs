//! When to try again: exponential backoff with full jitter, `Retry-After` as a
//! floor, and a maximum age after which a notification is given up.

use std::time::Duration;

/// The retry rules of `[delivery]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First delay ceiling, ms.
    pub base_ms: u64,
    /// Largest delay ceiling, ms.
    pub max_ms: u64,
    /// Age after which a notification is dropped, ms.
    pub max_age_ms: u64,
}

impl RetryPolicy {
    /// The ceiling of the delay after `attempts` failures: `base · 2^(attempts-1)`,
    /// capped at `max`.
    pub fn ceiling_ms(&self, attempts: u32) -> u64 {
        let doublings = attempts.saturating_sub(1).min(32);
        self.base_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_ms)
    }

    /// The delay after `attempts` failures: uniform in `[0, ceiling]` (full jitter,
    /// so a storm of failures does not come back in step), and never shorter than
    /// the provider's `Retry-After`. `uniform(n)` draws from `0..=n`.
    pub fn delay_ms(
        &self,
        attempts: u32,
        retry_after: Option<Duration>,
        uniform: &mut impl FnMut(u64) -> u64,
    ) -> u64 {
        let jittered = uniform(self.ceiling_ms(attempts));
        let floor = retry_after.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        jittered.max(floor)
    }

    /// Whether a notification accepted at `accepted_ms` is too old at `now_ms`.
    pub fn expired(&self, accepted_ms: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(accepted_ms) > self.max_age_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        base_ms: 1_000,
        max_ms: 60_000,
        max_age_ms: 3_600_000,
    };

    #[test]
    fn ceiling_doubles_and_is_capped() {
        let ceilings: Vec<u64> = (1..=8).map(|a| POLICY.ceiling_ms(a)).collect();
        assert_eq!(
            ceilings,
            [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]
        );
        assert_eq!(POLICY.ceiling_ms(u32::MAX), 60_000);
    }

    #[test]
    fn jitter_spans_zero_to_the_ceiling() {
        let mut lowest = |_: u64| 0;
        let mut highest = |n: u64| n;
        assert_eq!(POLICY.delay_ms(3, None, &mut lowest), 0);
        assert_eq!(POLICY.delay_ms(3, None, &mut highest), 4_000);
    }

    #[test]
    fn retry_after_is_a_floor() {
        let mut lowest = |_: u64| 0;
        let mut highest = |n: u64| n;
        let after = Some(Duration::from_secs(30));
        assert_eq!(POLICY.delay_ms(1, after, &mut lowest), 30_000);
        assert_eq!(POLICY.delay_ms(7, after, &mut highest), 60_000);
    }

    #[test]
    fn max_age() {
        assert!(!POLICY.expired(1_000, 1_000 + 3_600_000));
        assert!(POLICY.expired(1_000, 1_001 + 3_600_000));
    }
}
