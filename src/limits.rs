//! Per-key rate limits on what outsiders send: registration commands per
//! account, REST calls per client address.
//!
//! A token bucket per key: `per_minute` tokens a minute, at most that many
//! saved up, so a client may spend a minute's budget at once and then one
//! request every `60 / per_minute` seconds. The number of keys is bounded
//! (an attacker choosing keys — accounts on its own server, addresses of a
//! large IPv6 block — must not grow memory): a full table first forgets the
//! buckets that have filled up again (they hold no state), then, if still
//! over three quarters full, arbitrary ones, which only gives those keys a
//! fresh budget. Forgetting in bulk keeps each call O(1) amortized.

use crate::clock::{self, Instant};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;

/// One token bucket per key.
pub(crate) struct KeyedRate<K> {
    per_second: f64,
    capacity: f64,
    max_keys: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn tokens_at(&self, now: Instant, per_second: f64, capacity: f64) -> f64 {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * per_second;
        (self.tokens + refill).min(capacity)
    }
}

impl<K: Hash + Eq + Clone> KeyedRate<K> {
    /// `per_minute` calls a minute per key, for at most `max_keys` keys at
    /// once; `None` when `per_minute` is 0 (no limit).
    pub(crate) fn new(per_minute: u32, max_keys: usize) -> Option<Self> {
        (per_minute > 0).then(|| Self {
            per_second: f64::from(per_minute) / 60.0,
            capacity: f64::from(per_minute),
            max_keys: max_keys.max(4),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one token of `key`'s budget; false when it is spent.
    pub(crate) fn allow(&self, key: &K) -> bool {
        let now = clock::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= self.max_keys && !buckets.contains_key(key) {
            self.forget(&mut buckets, now);
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.capacity,
            at: now,
        });
        let tokens = bucket.tokens_at(now, self.per_second, self.capacity);
        let allowed = tokens >= 1.0;
        *bucket = Bucket {
            tokens: if allowed { tokens - 1.0 } else { tokens },
            at: now,
        };
        allowed
    }

    fn forget(&self, buckets: &mut HashMap<K, Bucket>, now: Instant) {
        let (per_second, capacity) = (self.per_second, self.capacity);
        buckets.retain(|_, b| b.tokens_at(now, per_second, capacity) < capacity);
        let keep = self.max_keys * 3 / 4;
        if buckets.len() > keep {
            let excess: Vec<K> = buckets.keys().take(buckets.len() - keep).cloned().collect();
            for key in excess {
                buckets.remove(&key);
            }
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().map_or(0, |b| b.len())
    }
}

/// The key a client address is limited under: the address itself for IPv4,
/// its /64 for IPv6 (one subscriber's usual allocation, so an attacker with
/// a prefix does not get 2^64 budgets).
pub(crate) fn client_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                for s in segments.iter_mut().skip(4) {
                    *s = 0;
                }
                IpAddr::V6(segments.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_key_spends_its_minute_then_refills_at_the_rate() {
        let limit = KeyedRate::new(6, 100).expect("limited");
        let a = "alice".to_owned();
        for _ in 0..6 {
            assert!(limit.allow(&a));
        }
        assert!(!limit.allow(&a), "the minute's budget is spent");
        assert!(limit.allow(&"bob".to_owned()), "others are not affected");
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!limit.allow(&a), "one token every 10 s");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(limit.allow(&a));
        assert!(!limit.allow(&a));
        assert!(KeyedRate::<String>::new(0, 100).is_none(), "0 = no limit");
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_stays_bounded_and_forgets_idle_keys_first() {
        let limit = KeyedRate::new(60, 100).expect("limited");
        let busy = u32::MAX;
        for _ in 0..60 {
            assert!(limit.allow(&busy));
        }
        for key in 0..10_000 {
            limit.allow(&key);
            assert!(limit.tracked() <= 100);
        }
        // Keys used once a minute ago have refilled: forgotten before any
        // key still being limited.
        tokio::time::advance(Duration::from_secs(61)).await;
        let limit = KeyedRate::new(60, 100).expect("limited");
        for _ in 0..60 {
            assert!(limit.allow(&busy));
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        for key in 0..99 {
            limit.allow(&key);
        }
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(limit.allow(&busy), "a minute later it has refilled");
        for _ in 0..59 {
            limit.allow(&busy);
        }
        limit.allow(&1000);
        assert!(!limit.allow(&busy), "the busy key kept its bucket");
    }

    #[test]
    fn ipv6_clients_are_limited_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("v6");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("v6");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("v6");
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("mapped");
        assert_eq!(
            client_key(mapped),
            "192.0.2.7".parse::<IpAddr>().expect("v4")
        );
    }
}
