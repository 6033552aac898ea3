//! A token bucket: at most `rate` records per second on average, in bursts of at most a
//! tenth of a second's worth (and at least one record).

use std::time::{Duration, Instant};

/// Paces one worker.
#[derive(Debug)]
pub struct RateLimiter {
    per_s: f64,
    tokens: f64,
    burst: f64,
    last: Instant,
}

impl RateLimiter {
    /// A limiter of `per_s` records per second; 0 means no limit.
    pub fn new(per_s: f64) -> RateLimiter {
        let burst = (per_s / 10.0).max(1.0);
        RateLimiter { per_s, tokens: 1.0, burst, last: Instant::now() }
    }

    /// Whether the limiter lets everything through.
    pub fn unlimited(&self) -> bool {
        self.per_s <= 0.0
    }

    /// Takes a token if one is there (`None`), else says how long until one is.
    pub fn take(&mut self, now: Instant) -> Option<Duration> {
        if self.unlimited() {
            return None;
        }
        let earned = now.saturating_duration_since(self.last).as_secs_f64() * self.per_s;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            None
        } else {
            Some(Duration::from_secs_f64((1.0 - self.tokens) / self.per_s))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts tokens granted over `seconds` of simulated time, asking every millisecond.
    fn granted(per_s: f64, seconds: u64) -> u64 {
        let mut limiter = RateLimiter::new(per_s);
        let start = limiter.last;
        let mut n = 0;
        for ms in 0..seconds * 1000 {
            let now = start + Duration::from_millis(ms);
            while limiter.take(now).is_none() {
                n += 1;
            }
        }
        n
    }

    #[test]
    fn the_average_rate_is_kept() {
        for per_s in [5.0, 100.0, 2500.0] {
            let n = granted(per_s, 10) as f64;
            let expected = per_s * 10.0;
            assert!((n - expected).abs() <= expected * 0.02 + 2.0, "{per_s}/s gave {n}");
        }
    }

    #[test]
    fn the_wait_is_until_the_next_token_and_zero_means_unlimited() {
        let mut limiter = RateLimiter::new(10.0);
        let now = limiter.last;
        assert_eq!(limiter.take(now), None);
        let wait = limiter.take(now).unwrap();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        let mut free = RateLimiter::new(0.0);
        assert!((0..1000).all(|_| free.take(now).is_none()));
    }
}
