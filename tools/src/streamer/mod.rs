//! `telemetry-streamer`: GPU telemetry CSV (or generated data) to the broker, one JSON
//! [`TelemetryRecord`](crate::telemetry::TelemetryRecord) per row, keyed by the GPU's UUID.
//!
//! ```text
//! CSV file ─▶ source (csv crate → Schema → convert → Prepared JSON)
//!               │  rows of this --shard only; skipped rows counted by reason
//!               ▼
//!           dispatcher: worker = fnv1a(uuid) % workers, chunks over bounded channels
//!               │
//!     ┌─────────┼─────────┐
//!   worker    worker    worker   each: token bucket (--rate), own Producer, pending
//!     │         │         │      records kept until acknowledged, resent after errors
//!     ▼         ▼         ▼
//!            mqd: PUBLISH(topic, key = uuid, JSON)
//! ```
//!
//! Rows go to workers by a hash of the GPU id, not by row number: one GPU's records then
//! travel one producer and one connection, so they reach their partition in file order
//! (row-number spreading would let two workers race the same GPU's rows). The cost is
//! balance: a file with fewer GPUs than workers leaves some workers idle.
//!
//! The record format is specified in `spec/telemetry.md`.

pub mod cell;
pub mod convert;
pub mod labels;
pub mod rate;
pub mod rows;
pub mod run;
pub mod schema;
pub mod source;
pub mod stats;
pub mod synthetic;
pub mod worker;

use std::fmt;
use std::str::FromStr;

pub use convert::{Prepared, Skip, SkipReason};
pub use run::{run, Input, Options, RunError, Summary};
pub use source::{CsvSource, Item, SourceError};

/// Something that yields rows: a CSV file or the generator.
pub trait Source {
    /// The next row of this shard, `None` at the end.
    ///
    /// # Errors
    /// [`SourceError`] when reading cannot go on.
    fn next_item(&mut self) -> Result<Option<Item>, SourceError>;

    /// Data rows read so far, of every shard, for a file; `None` for the generator.
    fn rows_total(&self) -> Option<u64> {
        None
    }
}

impl<R: std::io::Read> Source for CsvSource<R> {
    fn next_item(&mut self) -> Result<Option<Item>, SourceError> {
        CsvSource::next_item(self)
    }

    fn rows_total(&self) -> Option<u64> {
        Some(CsvSource::rows_total(self))
    }
}

/// `--shard I/N`: this instance handles rows whose number (0-based, in file order, header
/// excluded) is `I` modulo `N`, so `N` instances split one file without overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// `I`, below `count`.
    pub index: u64,
    /// `N`, at least 1.
    pub count: u64,
}

impl Shard {
    /// Every row (`0/1`).
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` of `count`.
    ///
    /// # Panics
    /// If `count` is 0 or `index >= count`.
    pub fn new(index: u64, count: u64) -> Shard {
        assert!(index < count, "shard {index}/{count} out of range");
        Shard { index, count }
    }

    /// Whether row `row` (0-based) belongs to this shard.
    pub fn owns(&self, row: u64) -> bool {
        row % self.count == self.index
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Shard, String> {
        let bad = || format!("--shard must be I/N with 0 <= I < N, not {text:?}");
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (i, n) = (
            i.trim().parse::<u64>().map_err(|_| bad())?,
            n.trim().parse::<u64>().map_err(|_| bad())?,
        );
        if n == 0 || i >= n {
            return Err(bad());
        }
        Ok(Shard::new(i, n))
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_partition_rows() {
        let s: Shard = "1/3".parse().unwrap();
        assert_eq!(s, Shard::new(1, 3));
        assert!(s.owns(1) && s.owns(4) && !s.owns(0) && !s.owns(2));
        for bad in ["3/3", "1/0", "x/2", "1", "-1/2", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad:?}");
        }
    }
}
