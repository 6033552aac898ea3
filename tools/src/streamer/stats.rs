//! Counters shared by the reader and the workers, the progress line and the final summary.
//!
//! Every row of this shard ends in exactly one place: skipped (with a reason), failed (a
//! per-record error such as too large), acknowledged, left unacknowledged at exit, or
//! queued and never sent because a stop came first. The summary prints all of them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

use mq_client::ClientError;

use crate::{human_count, human_rate};

use super::convert::SkipReason;

/// Why a record that was read could not be published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// Larger than the broker accepts (`send` refused it).
    TooLarge,
    /// The broker refused it with an error that a retry would not cure.
    Rejected,
}

/// Counts of one run, updated from every thread.
#[derive(Debug, Default)]
pub struct Counters {
    /// Data rows of this shard read (records and skipped rows).
    pub rows: AtomicU64,
    /// Records handed to a producer (resends included).
    pub published: AtomicU64,
    /// Records the broker acknowledged.
    pub acked: AtomicU64,
    /// Records sent again after a lost connection or a retryable error.
    pub resent: AtomicU64,
    /// Skipped rows by [`SkipReason::index`].
    pub skipped: [AtomicU64; SkipReason::ALL.len()],
    /// Records larger than the broker accepts.
    pub too_large: AtomicU64,
    /// Records the broker refused for good.
    pub rejected: AtomicU64,
    /// Rows whose `labels_raw` was partly malformed (still published).
    pub labels_warnings: AtomicU64,
    /// Connections opened by workers (the first ones included).
    pub connects: AtomicU64,
    /// Records sent and not acknowledged when the workers stopped.
    pub unacked: AtomicU64,
    /// Records read but never sent because a stop came first.
    pub unsent: AtomicU64,
    /// The broker's refusal of the token ([`ClientError::is_auth_refused`]), if a worker
    /// met one: the first one; the run then stops, as no retry can help.
    pub auth_refused: OnceLock<ClientError>,
}

impl Counters {
    /// Counts a skipped row.
    pub fn skip(&self, reason: SkipReason) {
        self.skipped[reason.index()].fetch_add(1, Relaxed);
    }

    /// Counts a failed record.
    pub fn fail(&self, reason: FailReason) {
        match reason {
            FailReason::TooLarge => self.too_large.fetch_add(1, Relaxed),
            FailReason::Rejected => self.rejected.fetch_add(1, Relaxed),
        };
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Relaxed);
        Snapshot {
            rows: get(&self.rows),
            published: get(&self.published),
            acked: get(&self.acked),
            resent: get(&self.resent),
            skipped: std::array::from_fn(|i| get(&self.skipped[i])),
            too_large: get(&self.too_large),
            rejected: get(&self.rejected),
            labels_warnings: get(&self.labels_warnings),
            connects: get(&self.connects),
            unacked: get(&self.unacked),
            unsent: get(&self.unsent),
        }
    }
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// See [`Counters::rows`].
    pub rows: u64,
    /// See [`Counters::published`].
    pub published: u64,
    /// See [`Counters::acked`].
    pub acked: u64,
    /// See [`Counters::resent`].
    pub resent: u64,
    /// See [`Counters::skipped`].
    pub skipped: [u64; SkipReason::ALL.len()],
    /// See [`Counters::too_large`].
    pub too_large: u64,
    /// See [`Counters::rejected`].
    pub rejected: u64,
    /// See [`Counters::labels_warnings`].
    pub labels_warnings: u64,
    /// See [`Counters::connects`].
    pub connects: u64,
    /// See [`Counters::unacked`].
    pub unacked: u64,
    /// See [`Counters::unsent`].
    pub unsent: u64,
}

impl Snapshot {
    /// Skipped rows, all reasons.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.iter().sum()
    }

    /// The progress line: `rows 12,345 | published … | acked … | skipped … | 98,765/s`.
    pub fn progress_line(&self, acked_per_s: Option<f64>) -> String {
        format!(
            "rows {} | published {} | acked {} | skipped {} | failed {} | {} acked",
            human_count(self.rows),
            human_count(self.published),
            human_count(self.acked),
            human_count(self.skipped_total()),
            human_count(self.too_large + self.rejected),
            human_rate(acked_per_s),
        )
    }

    /// The final summary, several lines.
    pub fn summary(&self, elapsed: Duration, dry_run: bool) -> String {
        let secs = elapsed.as_secs_f64();
        let rate = (secs > 0.0).then(|| self.acked as f64 / secs);
        let mut out = String::new();
        let done = if dry_run { "printed" } else { "acked" };
        let _ = writeln!(out, "telemetry-streamer summary after {secs:.1} s:");
        let _ = writeln!(out, "  rows read          {}", human_count(self.rows));
        if !dry_run {
            let _ = writeln!(out, "  records published  {}", human_count(self.published));
        }
        let _ =
            writeln!(out, "  records {done:<11}{} ({})", human_count(self.acked), human_rate(rate));
        if !dry_run {
            let _ = writeln!(out, "  resent             {}", human_count(self.resent));
        }
        let _ = writeln!(out, "  skipped rows       {}", human_count(self.skipped_total()));
        for reason in SkipReason::ALL {
            let n = self.skipped[reason.index()];
            if n > 0 {
                let _ = writeln!(out, "    {:<17}{}", reason.name(), human_count(n));
            }
        }
        let _ = writeln!(out, "  too large          {}", human_count(self.too_large));
        let _ = writeln!(out, "  rejected           {}", human_count(self.rejected));
        let _ = writeln!(out, "  labels warnings    {}", human_count(self.labels_warnings));
        if self.unsent > 0 {
            let _ =
                writeln!(out, "  read, not sent     {} (stopped first)", human_count(self.unsent));
        }
        if self.unacked > 0 {
            let _ = writeln!(out, "  {} records unacknowledged", human_count(self.unacked));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_every_nonzero_skip_reason_and_unacked_records() {
        let c = Counters::default();
        c.rows.store(10, Relaxed);
        c.acked.store(7, Relaxed);
        c.skip(SkipReason::BadValue);
        c.skip(SkipReason::BadValue);
        c.unacked.store(1, Relaxed);
        let text = c.snapshot().summary(Duration::from_secs(2), false);
        assert!(text.contains("bad_value        2"), "{text}");
        assert!(!text.contains("ragged_row"), "{text}");
        assert!(text.contains("1 records unacknowledged"), "{text}");
        assert!(text.contains("7 (4/s)"), "{text}");
    }

    #[test]
    fn a_dry_run_summary_says_printed_and_claims_nothing_published() {
        let c = Counters::default();
        c.rows.store(3, Relaxed);
        c.acked.store(3, Relaxed);
        let text = c.snapshot().summary(Duration::from_secs(1), true);
        assert!(text.contains("records printed    3"), "{text}");
        assert!(!text.contains("published"), "{text}");
        assert!(!text.contains("resent"), "{text}");
    }
}
