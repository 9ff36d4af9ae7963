//! Request budgets: a token bucket (sustained rate and burst) and a cap on
//! requests in flight, per identity (policy `limits:`, an extension of
//! KES), so one noisy application cannot starve the others. Also used by
//! the adapters for TLS handshakes per client IP.
//!
//! Time is handed in; tokens are counted in millionths, in integers, so
//! the bucket is exact and never drifts.

use std::time::{Duration, Instant};

/// Millionths of a token per token.
const UNIT: u128 = 1_000_000;

/// What one identity may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Requests per second, sustained (`None`: no rate limit).
    pub rate: Option<u32>,
    /// Bucket size: requests that may come at once after a quiet spell.
    pub burst: u32,
    /// Requests in flight at once, including those waiting on the store.
    pub concurrent: Option<u32>,
}

/// A token bucket holding up to `burst` tokens, refilled at `rate` per
/// second; each admitted request takes one.
#[derive(Clone, Debug)]
pub struct Bucket {
    /// Millionths of a token.
    micros: u128,
    at: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn full(burst: u32, now: Instant) -> Self {
        Self { micros: u128::from(burst) * UNIT, at: now }
    }

    fn refill(&mut self, rate: u32, burst: u32, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_nanos();
        // rate tokens per second = rate millionths per microsecond.
        let added = elapsed * u128::from(rate) / 1_000;
        self.micros = (self.micros + added).min(u128::from(burst) * UNIT);
        if now > self.at {
            self.at = now;
        }
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&mut self, rate: u32, burst: u32, now: Instant) -> Result<(), Duration> {
        self.refill(rate, burst, now);
        if self.micros >= UNIT {
            self.micros -= UNIT;
            return Ok(());
        }
        if rate == 0 {
            return Err(Duration::from_secs(u64::MAX / 4));
        }
        let missing = UNIT - self.micros;
        let nanos = (missing * 1_000).div_ceil(u128::from(rate));
        Err(Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
    }

    /// Whether the bucket is full again (an idle entry can be dropped).
    pub fn is_full(&mut self, rate: u32, burst: u32, now: Instant) -> bool {
        self.refill(rate, burst, now);
        self.micros >= u128::from(burst) * UNIT
    }
}

/// A wait as HTTP's `Retry-After`: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs().saturating_add(u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the tests start a simulated clock from the real one
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::full(3, t0);
        for _ in 0..3 {
            assert!(b.take(2, 3, t0).is_ok());
        }
        let wait = b.take(2, 3, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(retry_after_secs(wait), 1);
        assert!(b.take(2, 3, t0 + wait).is_ok());
        assert!(b.take(2, 3, t0 + wait).is_err());
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    proptest! {
        /// In any window of a run, at most `burst + rate x window` requests
        /// are admitted, whatever the arrival times.
        #[test]
        fn never_more_than_burst_plus_rate_times_t(
            rate in 1u32..2000,
            burst in 1u32..100,
            gaps in prop::collection::vec(0u64..50_000_000, 1..400),
        ) {
            let t0 = Instant::now();
            let mut b = Bucket::full(burst, t0);
            let mut t = t0;
            let mut admitted = Vec::new();
            for g in gaps {
                t += Duration::from_nanos(g);
                if b.take(rate, burst, t).is_ok() {
                    admitted.push(t);
                }
            }
            for (i, start) in admitted.iter().enumerate() {
                for (j, end) in admitted.iter().enumerate().skip(i) {
                    let window = end.duration_since(*start).as_secs_f64();
                    let n = (j - i + 1) as f64;
                    prop_assert!(n <= f64::from(burst) + f64::from(rate) * window + 1e-6,
                        "{n} admitted in {window}s (rate {rate}, burst {burst})");
                }
            }
        }

        /// A refused client that waits what it was told is admitted.
        #[test]
        fn waiting_the_answer_is_enough(rate in 1u32..5000, burst in 1u32..50, extra in 0u32..100) {
            let t0 = Instant::now();
            let mut b = Bucket::full(burst, t0);
            let mut t = t0;
            for _ in 0..(burst + extra) {
                let _ = b.take(rate, burst, t);
            }
            if let Err(wait) = b.take(rate, burst, t) {
                t += wait;
                prop_assert!(b.take(rate, burst, t).is_ok());
                // And Retry-After (whole seconds) is never shorter.
                prop_assert!(Duration::from_secs(retry_after_secs(wait)) >= wait);
            }
        }
    }
}
