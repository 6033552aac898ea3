//! Reconnect delays: exponential backoff with full jitter, bounded in attempts and time.
//!
//! Attempt `n` (counting from 0) waits a uniformly random time in
//! `[0, min(cap, base × 2^n)]` ("full jitter"): clients that lost the same broker at the same
//! moment spread their reconnects out instead of arriving together. The policy gives up
//! after `attempts_max` attempts or once `elapsed_max` has passed since the first failure,
//! whichever comes first, so a broker that is gone for good yields an error, not a hang.

use std::time::{Duration, Instant};

/// How reconnects are paced and when they stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Upper bound of the first delay.
    pub base: Duration,
    /// Largest upper bound of any delay.
    pub cap: Duration,
    /// Most connection attempts before giving up; `None` for no bound on the count.
    pub attempts_max: Option<u32>,
    /// Longest time to keep trying, from the first failed attempt; `None` for no bound.
    pub elapsed_max: Option<Duration>,
}

impl Default for BackoffConfig {
    /// 50 ms doubling up to 2 s per delay, for at most 30 s.
    fn default() -> Self {
        BackoffConfig {
            base: Duration::from_millis(50),
            cap: Duration::from_secs(2),
            attempts_max: None,
            elapsed_max: Some(Duration::from_secs(30)),
        }
    }
}

impl BackoffConfig {
    /// A policy that never retries: the first failure is final.
    pub fn never() -> BackoffConfig {
        BackoffConfig { attempts_max: Some(1), ..BackoffConfig::default() }
    }

    /// The upper bound of the delay after failed attempt `attempt` (0-based):
    /// `min(cap, base × 2^attempt)`, without overflow.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.checked_mul(factor).map_or(self.cap, |d| d.min(self.cap))
    }
}

/// The state of one run of reconnect attempts.
#[derive(Debug)]
pub struct Backoff {
    config: BackoffConfig,
    attempts: u32,
    started: Option<Instant>,
    rng: fastrand::Rng,
}

impl Backoff {
    /// A fresh run with a randomly seeded generator.
    pub fn new(config: BackoffConfig) -> Backoff {
        Backoff { config, attempts: 0, started: None, rng: fastrand::Rng::new() }
    }

    /// A fresh run with a fixed seed (tests).
    pub fn with_seed(config: BackoffConfig, seed: u64) -> Backoff {
        Backoff { config, attempts: 0, started: None, rng: fastrand::Rng::with_seed(seed) }
    }

    /// Failed attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Records a failed attempt made at `now` and returns how long to wait before the next
    /// one, or `None` if the policy is exhausted (give up).
    pub fn fail(&mut self, now: Instant) -> Option<Duration> {
        let started = *self.started.get_or_insert(now);
        let attempt = self.attempts;
        self.attempts += 1;
        if self.config.attempts_max.is_some_and(|max| self.attempts >= max) {
            return None;
        }
        let elapsed = now.saturating_duration_since(started);
        let ceiling = self.config.ceiling(attempt);
        let delay = self.jitter(ceiling);
        match self.config.elapsed_max {
            Some(max) if elapsed >= max => None,
            // Never sleep past the deadline: the last attempt happens at it.
            Some(max) => Some(delay.min(max - elapsed)),
            None => Some(delay),
        }
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempts = 0;
        self.started = None;
    }

    fn jitter(&mut self, ceiling: Duration) -> Duration {
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.u64(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BackoffConfig {
        BackoffConfig {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(500),
            attempts_max: None,
            elapsed_max: None,
        }
    }

    #[test]
    fn ceilings_double_from_base_up_to_cap() {
        let c = config();
        let ms: Vec<u128> = (0..8).map(|n| c.ceiling(n).as_millis()).collect();
        assert_eq!(ms, [10, 20, 40, 80, 160, 320, 500, 500]);
        assert_eq!(c.ceiling(u32::MAX), c.cap, "huge attempt counts do not overflow");
    }

    #[test]
    fn every_delay_lies_between_zero_and_its_ceiling() {
        let c = config();
        for seed in 0..50 {
            let mut b = Backoff::with_seed(c.clone(), seed);
            let now = Instant::now();
            for n in 0..20 {
                let delay = b.fail(now).expect("no bound configured");
                assert!(delay <= c.ceiling(n), "attempt {n}: {delay:?} > {:?}", c.ceiling(n));
            }
        }
    }

    #[test]
    fn delays_are_jittered_not_fixed() {
        let mut b = Backoff::with_seed(config(), 7);
        let now = Instant::now();
        for _ in 0..6 {
            b.fail(now);
        }
        let delays: std::collections::HashSet<Duration> =
            (0..20).map(|_| b.fail(now).unwrap()).collect();
        assert!(delays.len() > 10, "full jitter spreads delays: {delays:?}");
    }

    #[test]
    fn gives_up_after_the_attempt_bound() {
        let c = BackoffConfig { attempts_max: Some(3), ..config() };
        let mut b = Backoff::with_seed(c, 1);
        let now = Instant::now();
        assert!(b.fail(now).is_some());
        assert!(b.fail(now).is_some());
        assert_eq!(b.fail(now), None, "the third failure is the last");
        assert_eq!(b.attempts(), 3);
    }

    #[test]
    fn gives_up_after_the_time_bound_and_never_sleeps_past_it() {
        let c = BackoffConfig { elapsed_max: Some(Duration::from_millis(100)), ..config() };
        let mut b = Backoff::with_seed(c, 2);
        let t0 = Instant::now();
        assert!(b.fail(t0).is_some());
        for _ in 0..10 {
            let delay = b.fail(t0 + Duration::from_millis(95)).unwrap();
            assert!(delay <= Duration::from_millis(5), "{delay:?} would overshoot the bound");
        }
        assert_eq!(b.fail(t0 + Duration::from_millis(100)), None);
    }

    #[test]
    fn reset_starts_a_new_run() {
        let c = BackoffConfig { attempts_max: Some(2), ..config() };
        let mut b = Backoff::with_seed(c, 3);
        let now = Instant::now();
        b.fail(now);
        assert_eq!(b.fail(now), None);
        b.reset();
        assert!(b.fail(now).is_some());
    }

    #[test]
    fn never_gives_up_at_the_first_failure() {
        let mut b = Backoff::new(BackoffConfig::never());
        assert_eq!(b.fail(Instant::now()), None);
    }
}
