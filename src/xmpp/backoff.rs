//! Capped exponential backoff with jitter, for reconnecting.

use std::time::Duration;

/// Delays that double from `min` up to `max`; each delay is drawn between half
/// and all of the current step, so that many gateways restarted together do not
/// reconnect in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    /// A backoff from `min` to `max`; `max` below `min` is raised to `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            step: min,
        }
    }

    /// The next delay; the step then doubles, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let current = self.step;
        self.step = (self.step * 2).min(self.max);
        current / 2 + current.mul_f64(rand::random::<f64>() / 2.0)
    }

    /// Back to the first step (after a connection that held).
    pub fn reset(&mut self) {
        self.step = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000));
        let steps = [100, 200, 400, 800, 1000, 1000, 1000];
        for step in steps {
            let d = b.next_delay();
            assert!(
                d >= ms(step / 2) && d <= ms(step),
                "{d:?} not in [{}, {step}] ms",
                step / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= ms(100));
    }

    #[test]
    fn a_cap_below_the_minimum_is_the_minimum() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        for _ in 0..5 {
            assert!(b.next_delay() <= Duration::from_secs(2));
        }
    }
}
