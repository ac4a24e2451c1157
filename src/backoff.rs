//! Capped exponential backoff, shared by component reconnects and delivery
//! retries. The randomness is injected (`uniform(n)` draws from `0..=n`), so
//! every rule is tested with chosen draws; `uniform` is the real one.

use thiserror::Error;

/// Delay ceilings that double from `base_ms` with each attempt, up to `max_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    base_ms: u64,
    max_ms: u64,
}

/// Bounds a backoff cannot work with. Refused rather than adjusted: a cap
/// below the first delay is a typo an operator wants to hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub(crate) enum InvalidBackoff {
    /// A first delay of 0 would retry in a tight loop.
    #[error("the first delay must be at least 1 ms")]
    ZeroBase,
    /// The cap is below the first delay.
    #[error("the largest delay ({max_ms} ms) is below the first delay ({base_ms} ms)")]
    MaxBelowBase {
        /// The first delay.
        base_ms: u64,
        /// The cap.
        max_ms: u64,
    },
}

impl Backoff {
    /// A backoff from `base_ms` to `max_ms`.
    pub(crate) fn new(base_ms: u64, max_ms: u64) -> Result<Self, InvalidBackoff> {
        if base_ms == 0 {
            return Err(InvalidBackoff::ZeroBase);
        }
        if max_ms < base_ms {
            return Err(InvalidBackoff::MaxBelowBase { base_ms, max_ms });
        }
        Ok(Self { base_ms, max_ms })
    }

    /// The ceiling for attempt `n` (1 = the first retry): `base · 2^(n-1)`,
    /// capped.
    pub(crate) fn ceiling_ms(&self, attempt: u32) -> u64 {
        let doublings = attempt.saturating_sub(1).min(32);
        self.base_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_ms)
    }

    /// Full jitter, uniform in `[0, ceiling]`: failures of many requests at
    /// once (a provider outage) do not come back in step.
    pub(crate) fn full_jitter_ms(&self, attempt: u32, uniform: &mut impl FnMut(u64) -> u64) -> u64 {
        let ceiling = self.ceiling_ms(attempt);
        uniform(ceiling).min(ceiling)
    }

    /// Equal jitter, uniform in `[ceiling/2, ceiling]`: spread out, but never
    /// much sooner than the ceiling (reconnects to a server that is down).
    pub(crate) fn equal_jitter_ms(
        &self,
        attempt: u32,
        uniform: &mut impl FnMut(u64) -> u64,
    ) -> u64 {
        let ceiling = self.ceiling_ms(attempt);
        let half = ceiling / 2;
        half + uniform(ceiling - half).min(ceiling - half)
    }
}

/// Draws uniformly from `0..=n`.
pub(crate) fn uniform(n: u64) -> u64 {
    rand::random_range(0..=n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lowest(_: u64) -> u64 {
        0
    }

    fn highest(n: u64) -> u64 {
        n
    }

    #[test]
    fn ceilings_double_and_are_capped() {
        let b = Backoff::new(1_000, 60_000).expect("valid");
        let ceilings: Vec<u64> = (1..=8).map(|a| b.ceiling_ms(a)).collect();
        assert_eq!(
            ceilings,
            [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]
        );
        assert_eq!(b.ceiling_ms(0), 1_000);
        assert_eq!(b.ceiling_ms(u32::MAX), 60_000);
    }

    #[test]
    fn jitter_spans_what_it_promises() {
        let b = Backoff::new(100, 1_000).expect("valid");
        assert_eq!(b.full_jitter_ms(3, &mut lowest), 0);
        assert_eq!(b.full_jitter_ms(3, &mut highest), 400);
        assert_eq!(b.equal_jitter_ms(3, &mut lowest), 200);
        assert_eq!(b.equal_jitter_ms(3, &mut highest), 400);
        // A draw out of range cannot push a delay past its ceiling.
        assert_eq!(b.full_jitter_ms(3, &mut |_| u64::MAX), 400);
        assert_eq!(b.equal_jitter_ms(9, &mut |_| u64::MAX), 1_000);
        for _ in 0..100 {
            let d = b.equal_jitter_ms(2, &mut uniform);
            assert!((100..=200).contains(&d), "{d}");
        }
    }

    #[test]
    fn invalid_bounds_are_refused() {
        assert_eq!(Backoff::new(0, 10), Err(InvalidBackoff::ZeroBase));
        assert_eq!(
            Backoff::new(2_000, 1_000),
            Err(InvalidBackoff::MaxBelowBase {
                base_ms: 2_000,
                max_ms: 1_000
            })
        );
        assert!(Backoff::new(5, 5).is_ok());
    }
}
