//! Counters and health of one collector, shared (lock-free) between the consumer thread,
//! the storage writer and the HTTP handlers.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

use super::record::BadReason;

/// Counters since start, and the status the consumer thread reports.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records received from the broker (redeliveries included).
    pub records_consumed: AtomicU64,
    /// Records whose samples were stored.
    pub records_stored: AtomicU64,
    /// Samples stored.
    pub samples_stored: AtomicU64,
    /// Records already stored, received again, acknowledged without storing.
    pub records_duplicate: AtomicU64,
    /// Records whose time was already past the retention when they arrived: acknowledged,
    /// not stored.
    pub records_expired: AtomicU64,
    /// Bytes of the JSONL files (durable and indexed).
    pub stored_bytes: AtomicU64,
    /// Retention runs completed.
    pub retention_runs: AtomicU64,
    /// Samples deleted by retention.
    pub retention_samples_removed: AtomicU64,
    /// Bytes deleted by retention.
    pub retention_bytes_removed: AtomicU64,
    /// Files deleted by retention.
    pub retention_files_removed: AtomicU64,
    /// GPUs that retention left without samples (gone from the catalog).
    pub retention_gpus_removed: AtomicU64,
    /// When the last retention run ended, ms since the epoch (0: none yet).
    pub retention_last_run_ms: AtomicI64,
    /// How long the last retention run took, microseconds.
    pub retention_last_run_us: AtomicU64,
    /// Records refused, per [`BadReason`] (index by [`BadReason::index`]).
    pub records_bad: [AtomicU64; BadReason::ALL.len()],
    /// Batches stored (each: write, sync, checkpoint, ack).
    pub batches: AtomicU64,
    /// Batches that failed to store (their records were NACKed for a later retry).
    pub batch_errors: AtomicU64,
    /// Total time spent in syncs, microseconds.
    pub sync_us_total: AtomicU64,
    /// Telemetry queries answered from the cache.
    pub cache_hits: AtomicU64,
    /// Telemetry queries answered from files.
    pub cache_misses: AtomicU64,
    /// The group's lag on the topic as the broker last reported it (`-1`: unknown).
    pub lag: AtomicI64,
    /// Whether the broker answered the last check.
    pub broker_up: AtomicBool,
    /// Whether the consumer is subscribed and running.
    pub consuming: AtomicBool,
    /// Time of the last successful poll, ms since the epoch.
    pub last_poll_ms: AtomicI64,
}

impl Stats {
    /// Fresh counters; lag unknown, broker not yet seen.
    pub fn new() -> Stats {
        Stats { lag: AtomicI64::new(-1), ..Stats::default() }
    }

    /// Counts one refused record.
    pub fn count_bad(&self, reason: BadReason) {
        self.records_bad[reason.index()].fetch_add(1, Relaxed);
    }

    /// Refused records per reason, in [`BadReason::ALL`] order.
    pub fn bad_counts(&self) -> Vec<(BadReason, u64)> {
        BadReason::ALL.iter().map(|r| (*r, self.records_bad[r.index()].load(Relaxed))).collect()
    }

    /// Whether the collector is healthy: consuming, and the broker answered its last check.
    pub fn healthy(&self) -> bool {
        self.consuming.load(Relaxed) && self.broker_up.load(Relaxed)
    }
}
