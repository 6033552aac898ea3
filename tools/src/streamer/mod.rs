//! `telemetry-streamer`: GPU telemetry CSV (or generated data) to the broker, one JSON
//! [`TelemetryRecord`](crate::telemetry::TelemetryRecord) per row, keyed by the GPU's UUID.
//!
//! ```text
//! CSV file ─▶ source (csv crate → Schema → convert → Prepared JSON)
//!               │  rows of this --shard only (fnv1a(uuid) % N); skipped rows counted
//!               ▼
//!           dispatcher: worker = fnv1a(uuid) / N % workers, chunks over bounded channels
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
//! balance: a file with fewer GPUs than workers leaves some workers idle. `--shard` splits
//! a file between processes the same way, by GPU id ([`Shard`]), so a GPU's records keep
//! their file order across a sharded deployment too.
//!
//! The record format is specified in `spec/telemetry.md`.

pub mod cell;
pub mod convert;
pub mod labels;
pub mod line_bound;
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

/// `--shard I/N`: this instance publishes the rows of shard `I` of `N`, so `N` instances
/// (every one reading the whole file) split one file without overlap, and each GPU's rows
/// stay in one instance, in file order.
///
/// A row's shard is `fnv1a_32(key) mod N`, where `key` is the row's GPU id (the record's
/// `uuid` and broker key, as bytes) and `fnv1a_32` is the broker's partitioning hash
/// (`spec/wire.md`, "Partitioning"). A row with no valid GPU id (it is skipped anyway)
/// goes by its row number instead: `row mod N` (0-based, in file order, header excluded).
/// The generator shards by GPU number (see [`synthetic::Synthetic::new`]).
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

    /// Whether `number` is this shard's: `number mod N == I`.
    pub fn owns(&self, number: u64) -> bool {
        number % self.count == self.index
    }

    /// Whether a CSV row is this shard's: by `key_hash`, the FNV-1a hash of its GPU id, if
    /// it has one, else by `row`, its 0-based number.
    pub fn owns_row(&self, key_hash: Option<u32>, row: u64) -> bool {
        self.owns(key_hash.map_or(row, u64::from))
    }

    /// The shard of a GPU id: `fnv1a_32(key) mod N`.
    pub fn of_key(&self, key: &str) -> u64 {
        u64::from(key_hash(key)) % self.count
    }

    /// The worker (of `workers`) that sends a record whose key hashes to `key_hash`. The
    /// hash is divided by `N` first: this shard's hashes are all `I` modulo `N`, so
    /// `key_hash mod workers` alone would leave workers idle whenever `N` and `workers`
    /// share a factor (`--shard 0/2` with 2 workers: every record on worker 0).
    pub fn worker_of(&self, key_hash: u32, workers: usize) -> usize {
        let spread = u64::from(key_hash) / self.count;
        (spread % workers.max(1) as u64) as usize
    }
}

/// FNV-1a (32 bits) of a GPU id: the broker's partitioning hash, used for shards and workers.
pub fn key_hash(key: &str) -> u32 {
    mq_client::protocol::hash::fnv1a_32(key.as_bytes())
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
        // Rows with a GPU id go by its hash, rows without one by their number.
        assert!(s.owns_row(None, 4) && !s.owns_row(None, 5));
        assert!(s.owns_row(Some(7), 0) && !s.owns_row(Some(8), 1));
        for bad in ["3/3", "1/0", "x/2", "1", "-1/2", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_gpus_shard_is_its_fnv1a_hash_modulo_n() {
        // Values from spec/telemetry.md ("Sharding"), checked here byte for byte.
        let key = "GPU-5fd4f087-86f3-7a43-b711-4771313afc50";
        assert_eq!(key_hash(key), mq_client::protocol::hash::fnv1a_32(key.as_bytes()));
        assert_eq!(key_hash("a"), 0xe40c_292c);
        for (key, hash, of_2, of_3) in [
            ("GPU-5fd4f087-86f3-7a43-b711-4771313afc50", 0x567b_ee22, 0, 1),
            ("GPU-1", 0xf415_0efb, 1, 2),
            ("node-1:3", 0xef91_1098, 0, 0),
        ] {
            assert_eq!(key_hash(key), hash, "{key}");
            assert_eq!((Shard::new(0, 2).of_key(key), Shard::new(0, 3).of_key(key)), (of_2, of_3));
        }
        let h = key_hash(key);
        for n in 1..=5 {
            let owners = (0..n).filter(|&i| Shard::new(i, n).owns_row(Some(h), 9)).count();
            assert_eq!(owners, 1, "exactly one of {n} shards owns the GPU");
        }
    }

    #[test]
    fn workers_of_one_shard_all_get_gpus() {
        for (count, workers) in [(1, 2), (2, 2), (2, 4), (3, 3), (4, 2)] {
            for index in 0..count {
                let shard = Shard::new(index, count);
                let mut used = vec![0; workers];
                for g in 0..400 {
                    let h = key_hash(&format!("GPU-{g}"));
                    if shard.owns_row(Some(h), 0) {
                        used[shard.worker_of(h, workers)] += 1;
                    }
                }
                assert!(used.iter().all(|&n| n > 0), "{shard} over {workers} workers: {used:?}");
            }
        }
    }
}
