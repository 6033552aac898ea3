//! Where partitions keep their records: the interface the broker core appends to and reads
//! from, and its implementations ([`memory`] now; the segment log implements the same trait).
//!
//! The core owns one [`PartitionLog`] per partition. Appends return the record's offset;
//! [`PartitionLog::sync`] makes every append so far durable (a no-op in memory), which is
//! what group commit calls once per event-loop turn.

pub mod memory;

use bytes::Bytes;

/// A record as stored and read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Offset in its partition.
    pub offset: u64,
    /// Append time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Partitioning key, if any.
    pub key: Option<Bytes>,
    /// Payload.
    pub value: Bytes,
}

impl StoredRecord {
    /// Bytes this record counts for in retention and stats: key + value.
    pub fn payload_bytes(&self) -> u64 {
        (self.key.as_ref().map_or(0, Bytes::len) + self.value.len()) as u64
    }
}

/// Why storage failed. Named so a publisher gets `STORAGE_FULL` rather than a vague error.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The disk (or the memory budget) is full; nothing was appended.
    #[error("storage full: {0}")]
    Full(String),
    /// Any other I/O failure.
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Retention settings of one partition. Zero means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Keep at most about this many bytes (key + value) per partition.
    pub bytes: u64,
    /// Drop records older than this, in milliseconds.
    pub ms: u64,
}

/// One partition's ordered log of records.
pub trait PartitionLog: std::fmt::Debug + Send {
    /// Appends a record and returns its offset.
    ///
    /// # Errors
    /// [`StorageError::Full`] when there is no room; the log is unchanged then.
    fn append(
        &mut self,
        timestamp_ms: u64,
        key: Option<Bytes>,
        value: Bytes,
    ) -> Result<u64, StorageError>;

    /// Appends up to `max_records` records starting at `from` (or at the oldest held, if
    /// `from` is older) to `out`, stopping once `max_bytes` of payload would be passed
    /// (at least one record is read if any is available).
    ///
    /// # Errors
    /// I/O failures of a disk log.
    fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
        out: &mut Vec<StoredRecord>,
    ) -> Result<(), StorageError>;

    /// The offset the next append will get.
    fn next_offset(&self) -> u64;

    /// The oldest offset still held (equal to `next_offset` when empty).
    fn oldest_offset(&self) -> u64;

    /// Bytes held.
    fn bytes_stored(&self) -> u64;

    /// Segment files (0 for memory).
    fn segments(&self) -> u64;

    /// Makes every append so far durable.
    ///
    /// # Errors
    /// I/O failures.
    fn sync(&mut self) -> Result<(), StorageError>;

    /// Drops the oldest records beyond the retention limits; returns how many were dropped.
    fn apply_retention(&mut self, retention: Retention, now_ms: u64) -> u64;
}
