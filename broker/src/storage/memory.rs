//! In-memory partition log (`--storage memory`): a ring of records, bounded by retention.
//!
//! Payloads are the zero-copy `Bytes` slices the codec produced, so an append copies no
//! payload bytes. Memory is bounded only by retention, which is why memory mode has a byte
//! retention by default (see `Config`).

use std::collections::VecDeque;

use bytes::Bytes;

use super::{PartitionLog, Retention, StorageError, StoredRecord};

/// Bookkeeping bytes counted per record on top of its key and value, so that retention by
/// bytes also bounds the memory of many tiny records.
const RECORD_OVERHEAD_BYTES: u64 = 64;

/// A partition held in memory.
#[derive(Debug, Default)]
pub struct MemoryLog {
    records: VecDeque<StoredRecord>,
    /// Offset of `records[0]`, or the next offset when empty.
    base_offset: u64,
    bytes: u64,
    /// Byte retention enforced at every append (0: none), so memory never holds more than
    /// this however fast records arrive; age retention runs on the timer.
    bytes_max: u64,
}

impl MemoryLog {
    /// An empty log whose first record gets offset 0.
    pub fn new() -> MemoryLog {
        MemoryLog::default()
    }

    /// An empty log that keeps at most about `bytes_max` bytes (0: unbounded).
    pub fn with_bytes_max(bytes_max: u64) -> MemoryLog {
        MemoryLog { bytes_max, ..MemoryLog::default() }
    }

    fn record_bytes(record: &StoredRecord) -> u64 {
        record.payload_bytes() + RECORD_OVERHEAD_BYTES
    }

    fn drop_oldest(&mut self) {
        let record = self.records.pop_front().expect("drop_oldest on an empty log");
        self.bytes -= Self::record_bytes(&record);
        self.base_offset += 1;
    }
}

impl PartitionLog for MemoryLog {
    fn append(
        &mut self,
        timestamp_ms: u64,
        key: Option<Bytes>,
        value: Bytes,
    ) -> Result<u64, StorageError> {
        let offset = self.next_offset();
        let record = StoredRecord { offset, timestamp_ms, key, value };
        self.bytes += Self::record_bytes(&record);
        self.records.push_back(record);
        while self.bytes_max > 0 && self.bytes > self.bytes_max && self.records.len() > 1 {
            self.drop_oldest();
        }
        Ok(offset)
    }

    fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
        out: &mut Vec<StoredRecord>,
    ) -> Result<(), StorageError> {
        let start = from.max(self.base_offset) - self.base_offset;
        super::read_within(self.records.iter().skip(start as usize), max_records, max_bytes, out);
        Ok(())
    }

    fn next_offset(&self) -> u64 {
        self.base_offset + self.records.len() as u64
    }

    fn oldest_offset(&self) -> u64 {
        self.base_offset
    }

    fn bytes_stored(&self) -> u64 {
        self.bytes
    }

    fn segments(&self) -> u64 {
        0
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        Ok(())
    }

    fn apply_retention(&mut self, retention: Retention, now_ms: u64) -> u64 {
        let mut dropped = 0;
        while retention.bytes > 0 && self.bytes > retention.bytes && self.records.len() > 1 {
            self.drop_oldest();
            dropped += 1;
        }
        while retention.ms > 0
            && self.records.front().is_some_and(|r| r.timestamp_ms + retention.ms < now_ms)
        {
            self.drop_oldest();
            dropped += 1;
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(log: &mut MemoryLog, n: usize) {
        for i in 0..n {
            log.append(i as u64, None, Bytes::from(vec![b'x'; 100])).unwrap();
        }
    }

    #[test]
    fn offsets_count_up_and_reads_start_where_asked() {
        let mut log = MemoryLog::new();
        append(&mut log, 5);
        assert_eq!(log.next_offset(), 5);
        let mut out = Vec::new();
        log.read(2, 10, usize::MAX, &mut out).unwrap();
        assert_eq!(out.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![2, 3, 4]);
    }

    #[test]
    fn read_stops_at_the_byte_budget_but_returns_at_least_one() {
        let mut log = MemoryLog::new();
        append(&mut log, 5);
        let mut out = Vec::new();
        log.read(0, 10, 250, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        out.clear();
        log.read(0, 10, 1, &mut out).unwrap();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn retention_by_bytes_drops_the_oldest_and_keeps_offsets() {
        let mut log = MemoryLog::new();
        append(&mut log, 10);
        let dropped =
            log.apply_retention(Retention { bytes: 3 * (100 + RECORD_OVERHEAD_BYTES), ms: 0 }, 0);
        assert_eq!(dropped, 7);
        assert_eq!(log.oldest_offset(), 7);
        assert_eq!(log.next_offset(), 10);
        let mut out = Vec::new();
        log.read(0, 10, usize::MAX, &mut out).unwrap();
        assert_eq!(out[0].offset, 7);
    }

    #[test]
    fn a_byte_bound_holds_at_every_append() {
        let mut log = MemoryLog::with_bytes_max(3 * (100 + RECORD_OVERHEAD_BYTES));
        append(&mut log, 10);
        assert_eq!(log.bytes_stored(), 3 * (100 + RECORD_OVERHEAD_BYTES));
        assert_eq!(log.oldest_offset(), 7);
    }

    #[test]
    fn retention_by_age_drops_old_records() {
        let mut log = MemoryLog::new();
        append(&mut log, 10);
        assert_eq!(
            log.apply_retention(Retention { bytes: 0, ms: 5 }, 10),
            5,
            "ages 10..6 ms are older than 5 ms"
        );
        assert_eq!(log.oldest_offset(), 5);
    }
}
