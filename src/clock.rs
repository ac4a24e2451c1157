//! The one source of time in the gateway.
//!
//! Everything that waits, expires or is scheduled reads time here, never from
//! `std::time` directly (`clippy.toml` forbids it elsewhere), so a test can
//! pause and advance it with `tokio::time::pause`/`advance` instead of
//! sleeping:
//!
//! - [`now`] is tokio's monotonic [`Instant`], for deadlines, TTLs, backoff
//!   and keepalives.
//! - [`unix_ms`] and `unix_secs` are wall-clock time for what leaves the
//!   process (timestamps in the store, JWT `iat`, `apns-expiration`): the wall
//!   clock read once, plus the monotonic time elapsed since. They advance with
//!   paused time, and a step of the system clock after the start (an NTP
//!   correction) does not make scheduled retries jump; the price is that such
//!   a step is not seen until the next start.

#![allow(clippy::disallowed_methods)]

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};
pub use tokio::time::Instant;

/// The monotonic and wall-clock readings taken together at the first use.
struct Origin {
    at: Instant,
    unix_ms: u64,
}

static ORIGIN: OnceLock<Origin> = OnceLock::new();

fn origin() -> &'static Origin {
    ORIGIN.get_or_init(|| Origin {
        at: Instant::now(),
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0),
    })
}

/// The monotonic now: tokio's clock, paused and advanced in tests.
pub fn now() -> Instant {
    Instant::now()
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    let origin = origin();
    let elapsed = now().saturating_duration_since(origin.at);
    origin
        .unix_ms
        .saturating_add(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_secs() -> u64 {
    unix_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn wall_time_follows_the_paused_clock() {
        let before = unix_ms();
        let instant = now();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(now() - instant, Duration::from_secs(3600));
        let after = unix_ms();
        assert!(
            (3_600_000..3_600_050).contains(&(after - before)),
            "{}",
            after - before
        );
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        assert!(unix_secs().abs_diff(wall + 3600) < 5);
    }
}
