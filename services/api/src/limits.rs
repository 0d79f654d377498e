//! Per-subject rate limits (DESIGN §7): a token bucket per token `sub`.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// A keyed token bucket; `None` inside when the limit is off.
#[derive(Debug)]
pub struct Limiter {
    buckets: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
    /// Checks since idle buckets were last dropped (so memory follows active subjects).
    checks: AtomicU64,
}

/// Drop idle buckets after this many checks.
const PRUNE_EVERY: u64 = 10_000;

impl Limiter {
    /// `per_second` steady rate with `burst` on top; `per_second == 0` allows everything.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let buckets = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            buckets,
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one token of `key`'s bucket, or says how long to wait for one.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let Some(buckets) = &self.buckets else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            buckets.retain_recent();
        }
        buckets
            .check_key(&key.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_is_limited_after_its_burst_and_others_are_not() {
        let limiter = Limiter::new(1, 3);
        for _ in 0..3 {
            assert!(limiter.check("a").is_ok());
        }
        let wait = limiter.check("a").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(limiter.check("b").is_ok(), "buckets are per subject");
        let off = Limiter::new(0, 0);
        assert!((0..10_000).all(|_| off.check("a").is_ok()));
    }
}
