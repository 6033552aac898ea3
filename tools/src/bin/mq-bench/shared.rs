//! State the threads of `mq-bench` share: one clock, counters for progress, and the stop
//! signal.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Bytes of the header every bench record starts with (send time, publisher, sequence).
pub const HEADER_BYTES: usize = 16;

/// Counters and the clock, shared by reference between threads.
#[derive(Debug)]
pub struct Shared {
    /// Zero of the send timestamps; publishers and subscribers are one process, so one
    /// monotonic clock serves both ends.
    epoch: Instant,
    /// When publishing began (after every subscription was in place).
    start: OnceLock<Instant>,
    /// Set to end every thread early (timeout).
    pub stop: AtomicBool,
    /// Records handed to producers.
    pub sent: AtomicU64,
    /// Records the broker placed.
    pub placed: AtomicU64,
    /// Distinct records received, per subscriber group.
    pub group_received: Vec<AtomicU64>,
    /// Records every group must receive: known once the publishers are done.
    pub expected: AtomicU64,
}

impl Shared {
    /// Counters for `groups` subscriber groups.
    pub fn new(groups: usize) -> Shared {
        Shared {
            epoch: Instant::now(),
            start: OnceLock::new(),
            stop: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            placed: AtomicU64::new(0),
            group_received: (0..groups).map(|_| AtomicU64::new(0)).collect(),
            expected: AtomicU64::new(u64::MAX),
        }
    }

    /// Marks the start of publishing (once).
    pub fn start_now(&self) -> Instant {
        *self.start.get_or_init(Instant::now)
    }

    /// When publishing started.
    pub fn start_line(&self) -> Instant {
        self.start_now()
    }

    /// `t` in nanoseconds since the shared clock's zero.
    pub fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Records sent that the slowest group has not received yet.
    pub fn lag(&self) -> u64 {
        let slowest = self.group_received.iter().map(|g| g.load(Ordering::Relaxed)).min();
        self.sent.load(Ordering::Relaxed).saturating_sub(slowest.unwrap_or(0))
    }

    /// Distinct records received, summed over groups.
    pub fn received(&self) -> u64 {
        self.group_received.iter().map(|g| g.load(Ordering::Relaxed)).sum()
    }
}
