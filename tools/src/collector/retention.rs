//! Retention: old samples leave the API at once and the disk within about an hour.
//!
//! Files are split by hour of sample time (`gpus/<hour>/<uuid>.jsonl`, see
//! [`super::catalog`]), so retention never rewrites a file: it deletes whole hour
//! directories. That is one `unlink` per file, needs no temporary file or checkpoint
//! change, and is safe at any moment: a crash leaves some expired files on disk, which the
//! restart reads back and its first run deletes. The checkpoint keeps the offsets of
//! deleted records, so a redelivery of one is still a duplicate.
//!
//! The rules, with `bound` the time before which everything is deleted (it only moves
//! forward):
//!
//! - **Age** (`retention_hours`): `bound` is at least `now - retention_hours`.
//! - **Size** (`retention_bytes`): while the files hold more bytes than the cap, `bound`
//!   moves to the end of the oldest hour still on disk, never past the start of the current
//!   hour (so the cap can be exceeded by the current hour's files).
//! - A file goes once its end (the end of its hour; for a legacy file, just past its
//!   latest sample) is at or before `bound`. A GPU left without files leaves the catalog
//!   (`/api/v1/gpus`, `/metrics`), and a metric whose latest value is before `bound`
//!   leaves `/metrics`.
//! - Queries never return a sample before [`RetentionState::visible_from_ms`] (`bound`,
//!   or `now - retention_hours` if later), and the writer does not store a record older
//!   than it (acknowledged and counted as expired), so it never writes into an hour
//!   being deleted.
//!
//! The storage writer runs retention between batches ([`super::store::Store::run_retention`]):
//! at start, at every whole hour, and (with a size cap) at most once a minute while the
//! files exceed the cap. A run updates the catalog in memory under its lock (quick: the
//! expired files are the first of each GPU) and hands the paths to a deleter thread, so
//! neither ingestion nor queries wait for the unlinks. A query that already chose a block
//! of a deleted file reads it from its open descriptor or skips it.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use log::{info, warn};

use super::catalog::{hour_of, Catalog};
use super::timestamp::{format_ms_string, now_ms};
use super::Shared;

/// Most `retention_hours` (about 114 years).
pub const HOURS_MAX: u64 = 1_000_000;
/// Least time between two runs started because the files exceed the size cap, ms.
pub const SIZE_RUN_INTERVAL_MS: i64 = 60_000;

/// Settings of retention. Both 0: keep everything for ever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Delete samples older than this many hours (by their time); 0: no age limit.
    pub hours: u64,
    /// Keep the files under this many bytes by deleting the oldest hours; 0: no cap.
    pub bytes: u64,
}

impl RetentionConfig {
    /// Whether anything is ever deleted.
    pub fn enabled(&self) -> bool {
        self.hours > 0 || self.bytes > 0
    }

    /// The age limit in ms (0: none).
    pub fn age_ms(&self) -> i64 {
        (self.hours.min(HOURS_MAX) as i64) * super::catalog::HOUR_MS
    }
}

/// Retention as the queries and the writer see it.
#[derive(Debug)]
pub struct RetentionState {
    /// The age limit, ms; 0: none.
    pub age_ms: AtomicI64,
    /// The size cap, bytes; 0: none.
    pub bytes_max: AtomicU64,
    /// Every sample before this time is deleted or being deleted (`i64::MIN` before the
    /// first run). Only moves forward.
    pub expired_before_ms: AtomicI64,
    /// The time to use instead of the clock, for tests (`i64::MIN`: the clock).
    fixed_now_ms: AtomicI64,
}

impl Default for RetentionState {
    fn default() -> RetentionState {
        RetentionState {
            age_ms: AtomicI64::new(0),
            bytes_max: AtomicU64::new(0),
            expired_before_ms: AtomicI64::new(i64::MIN),
            fixed_now_ms: AtomicI64::new(i64::MIN),
        }
    }
}

impl RetentionState {
    /// Now, ms since the epoch (the clock, unless a test fixed it).
    pub fn now_ms(&self) -> i64 {
        match self.fixed_now_ms.load(Relaxed) {
            i64::MIN => now_ms(),
            fixed => fixed,
        }
    }

    /// Makes [`RetentionState::now_ms`] return `now_ms` (`None`: the clock again). For
    /// tests.
    pub fn set_now_ms(&self, now_ms: Option<i64>) {
        self.fixed_now_ms.store(now_ms.unwrap_or(i64::MIN), Relaxed);
    }

    /// The earliest sample time the API returns and the writer stores at `now_ms`.
    pub fn visible_from_ms(&self, now_ms: i64) -> i64 {
        let age = self.age_ms.load(Relaxed);
        let by_age = if age > 0 { now_ms.saturating_sub(age) } else { i64::MIN };
        by_age.max(self.expired_before_ms.load(Relaxed))
    }
}

/// The new `bound` (see the module docs): every file ending at or before it goes.
///
/// `previous` is the last bound, `stored_bytes` what the files hold now.
pub fn bound(
    catalog: &Catalog,
    config: &RetentionConfig,
    now_ms: i64,
    previous: i64,
    stored_bytes: u64,
) -> i64 {
    let mut bound = previous;
    if config.hours > 0 {
        bound = bound.max(now_ms.saturating_sub(config.age_ms()));
    }
    if config.bytes == 0 {
        return bound;
    }
    // Bytes per file end, for the files the age rule keeps and the size rule may take.
    let size_limit = hour_of(now_ms);
    let mut doomed = 0u64;
    let mut by_end: std::collections::BTreeMap<i64, u64> = std::collections::BTreeMap::new();
    for gpu in catalog.gpus.values() {
        for (key, segment) in &gpu.segments {
            let end = segment.end_ms(*key);
            if end <= bound {
                doomed += segment.file_len;
            } else if end <= size_limit {
                *by_end.entry(end).or_default() += segment.file_len;
            }
        }
    }
    let mut left = stored_bytes.saturating_sub(doomed);
    for (end, bytes) in by_end {
        if left <= config.bytes {
            break;
        }
        left = left.saturating_sub(bytes);
        bound = end;
    }
    bound
}

/// What one run deletes, and what it reports when done.
#[derive(Debug)]
pub struct Job {
    /// Hour directories to delete whole.
    pub dirs: Vec<PathBuf>,
    /// Legacy files to delete.
    pub files: Vec<PathBuf>,
    /// Files of the catalog among them.
    pub segments: u64,
    /// Samples in them.
    pub samples: u64,
    /// Bytes in them.
    pub bytes: u64,
    /// GPUs left without files.
    pub gpus: u64,
    /// Everything before this time is gone.
    pub bound_ms: i64,
    /// Bytes the files hold after the run.
    pub kept_bytes: u64,
    /// When the run started.
    pub started: Instant,
}

enum Message {
    Run(Job),
    Flush(Sender<()>),
}

/// The deleter thread: unlinks what runs hand it, counts and logs each run.
#[derive(Debug)]
pub struct Deleter {
    jobs: Option<Sender<Message>>,
    thread: Option<JoinHandle<()>>,
}

impl Deleter {
    /// Starts the thread.
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub fn start(shared: Arc<Shared>) -> io::Result<Deleter> {
        let (jobs, inbox) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("retention".into())
            .spawn(move || delete_loop(&inbox, &shared))?;
        Ok(Deleter { jobs: Some(jobs), thread: Some(thread) })
    }

    /// Hands over a run's deletions.
    pub fn submit(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(Message::Run(job));
        }
    }

    /// Waits until every run handed over so far is done.
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if let Some(jobs) = &self.jobs {
            if jobs.send(Message::Flush(done)).is_ok() {
                let _ = wait.recv();
            }
        }
    }
}

impl Drop for Deleter {
    /// Finishes the deletions handed over, then ends the thread.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                warn!("the retention thread panicked");
            }
        }
    }
}

fn delete_loop(inbox: &Receiver<Message>, shared: &Shared) {
    for message in inbox {
        match message {
            Message::Run(job) => delete(&job, shared),
            Message::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

fn delete(job: &Job, shared: &Shared) {
    let mut failed = 0usize;
    for dir in &job.dirs {
        match fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!("retention: cannot delete {}: {e}", dir.display());
                failed += 1;
            }
        }
    }
    for file in &job.files {
        match fs::remove_file(file) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!("retention: cannot delete {}: {e}", file.display());
                failed += 1;
            }
        }
    }
    let took = job.started.elapsed();
    let stats = &shared.stats;
    stats.retention_runs.fetch_add(1, Relaxed);
    stats.retention_samples_removed.fetch_add(job.samples, Relaxed);
    stats.retention_bytes_removed.fetch_add(job.bytes, Relaxed);
    stats.retention_files_removed.fetch_add(job.segments, Relaxed);
    stats.retention_gpus_removed.fetch_add(job.gpus, Relaxed);
    stats.retention_last_run_us.store(took.as_micros() as u64, Relaxed);
    stats.retention_last_run_ms.store(now_ms(), Relaxed);
    let mut line = String::from("retention: ");
    if job.dirs.is_empty() && job.files.is_empty() {
        line.push_str("nothing to delete");
    } else {
        let _ = write!(
            line,
            "deleted {} hour directories and {} legacy files ({} GPU files, {} samples, {})",
            job.dirs.len(),
            job.files.len(),
            job.segments,
            job.samples,
            human_bytes(job.bytes)
        );
    }
    if job.bound_ms > i64::MIN {
        let _ = write!(line, " before {}", format_ms_string(job.bound_ms));
    }
    let _ = write!(
        line,
        "; {} GPUs gone; {} kept; {} ms",
        job.gpus,
        human_bytes(job.kept_bytes),
        took.as_millis()
    );
    if failed > 0 {
        let _ = write!(line, "; {failed} could not be deleted (they go at the next run)");
    }
    info!("{line}");
}

/// `1536` → `"1.5 KiB"`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::catalog::{SegmentKey, HOUR_MS};

    fn catalog(hours: &[(i64, u64)]) -> Catalog {
        let mut catalog = Catalog::default();
        let gpu = catalog.gpus.entry(Arc::from("g")).or_default();
        for &(h, bytes) in hours {
            let key = SegmentKey::Hour(h * HOUR_MS);
            gpu.add_line(key, 0, bytes, h * HOUR_MS);
        }
        catalog
    }

    #[test]
    fn the_bound_follows_age_and_size() {
        let c = catalog(&[(0, 100), (1, 100), (2, 100), (3, 100)]);
        let now = 3 * HOUR_MS + 5;
        let age = RetentionConfig { hours: 2, bytes: 0 };
        assert_eq!(bound(&c, &age, now, i64::MIN, 400), HOUR_MS + 5, "hour 0 ends before it");
        assert_eq!(bound(&c, &age, now, 2 * HOUR_MS, 400), 2 * HOUR_MS, "never moves back");
        let size = RetentionConfig { hours: 0, bytes: 250 };
        assert_eq!(bound(&c, &size, now, i64::MIN, 400), 2 * HOUR_MS, "hours 0 and 1 go");
        let tiny = RetentionConfig { hours: 0, bytes: 1 };
        assert_eq!(bound(&c, &tiny, now, i64::MIN, 400), 3 * HOUR_MS, "the current hour stays");
        let both = RetentionConfig { hours: 3, bytes: 350 };
        assert_eq!(bound(&c, &both, now, i64::MIN, 400), HOUR_MS, "size takes hour 0");
        assert_eq!(bound(&c, &RetentionConfig::default(), now, i64::MIN, 400), i64::MIN);
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(10), "10 bytes");
    }

    #[test]
    fn queries_see_the_later_of_age_and_bound() {
        let state = RetentionState::default();
        assert_eq!(state.visible_from_ms(1000), i64::MIN, "no retention: everything");
        state.age_ms.store(100, Relaxed);
        assert_eq!(state.visible_from_ms(1000), 900);
        state.expired_before_ms.store(950, Relaxed);
        assert_eq!(state.visible_from_ms(1000), 950);
        state.set_now_ms(Some(5));
        assert_eq!(state.now_ms(), 5);
        state.set_now_ms(None);
        assert!(state.now_ms() > 5);
    }
}
