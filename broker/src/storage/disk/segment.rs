//! One segment file: an active segment is pre-sized with fallocate and written through a
//! mutable map; a sealed one is trimmed to its records and mapped read-only. Both keep a
//! sparse index in memory (an entry every `index_interval_bytes` of records) that is saved
//! beside the segment as `{base_offset:020}.index` when it is sealed or closed cleanly.
//!
//! # Index file `{base_offset:020}.index`
//! Entries of 8 bytes, big-endian: `relative_offset u32` (offset − base), `position u32`
//! (byte position of that record in the `.log`). Strictly increasing in both. A missing or
//! inconsistent index is rebuilt by scanning the segment.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use log::{info, warn};
use memmap2::{Mmap, MmapMut};

use super::record::{self, Found, Scan, SEGMENT_HEADER_BYTES};
use crate::storage::StorageError;

/// Bytes of one index entry.
const INDEX_ENTRY_BYTES: usize = 8;

enum Map {
    Active(MmapMut),
    Sealed(Mmap),
    /// An empty sealed file cannot be mapped.
    Empty,
}

impl Map {
    fn bytes(&self) -> &[u8] {
        match self {
            Map::Active(m) => m,
            Map::Sealed(m) => m,
            Map::Empty => &[],
        }
    }
}

/// A range of offsets lost to corruption, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corruption {
    /// First offset that could not be read.
    pub first: u64,
    /// Byte position of the bad record.
    pub position: usize,
    /// What was wrong.
    pub why: &'static str,
}

/// A segment file and its in-memory index.
pub struct Segment {
    /// Offset of the first record; also the file name.
    pub base_offset: u64,
    log_path: PathBuf,
    file: File,
    map: Map,
    /// Bytes used: header plus records.
    pub len: usize,
    /// Bytes the file is pre-sized to (active) or holds (sealed).
    capacity: usize,
    /// Offset after the last record.
    pub next_offset: u64,
    /// Timestamp of the last record (0 if none).
    pub last_timestamp_ms: u64,
    index: Vec<(u32, u32)>,
    index_interval_bytes: usize,
    bytes_since_index: usize,
    synced_len: usize,
    /// Set when a scan stopped at a bad record rather than at the end.
    pub corruption: Option<Corruption>,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("path", &self.log_path)
            .field("base_offset", &self.base_offset)
            .field("next_offset", &self.next_offset)
            .field("len", &self.len)
            .finish()
    }
}

/// `{dir}/{base_offset:020}.log` and `.index`.
pub fn paths(dir: &Path, base_offset: u64) -> (PathBuf, PathBuf) {
    (dir.join(format!("{base_offset:020}.log")), dir.join(format!("{base_offset:020}.index")))
}

/// Digits in a segment file name: enough for every u64.
const NAME_DIGITS: usize = 20;

/// The base offset named by a segment file name: exactly [`NAME_DIGITS`] ASCII digits, then
/// `.log`, as [`paths`] writes it. `None` for anything else, including a sign (`+…`, which
/// `u64::from_str` would accept) and a number above `u64::MAX`.
pub fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Pre-sizes `file` to `len` bytes with real blocks, so that writes through the map can never
/// meet a full disk (which would be SIGBUS, not an error).
fn allocate(file: &File, len: usize) -> Result<(), StorageError> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len as u64) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::NOSPC => {
            Err(StorageError::Full(format!("no space to pre-size a {len}-byte segment")))
        }
        Err(e) => Err(StorageError::Io(e.into())),
    }
}

/// Makes a directory's entries (new, renamed or removed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn map_mut(file: &File) -> io::Result<MmapMut> {
    // SAFETY: the file is ours alone: the data directory is locked against other brokers, the
    // file was pre-sized (fallocate) so every mapped page has blocks behind it, and this
    // process never truncates a file while a map of it is alive (maps are dropped first).
    let map = unsafe { MmapMut::map_mut(file)? };
    // Fault the (zero) pages in now, in one call, rather than one page fault per 4 KiB while
    // appending: appends were 40% page-fault handling without it (`perf`, BENCHMARKS.md).
    // Read, not write, population: write population would dirty every page and make the next
    // flush write the whole segment. Best effort: older kernels lack it.
    let _ = map.advise(memmap2::Advice::PopulateRead);
    Ok(map)
}

fn map_read(file: &File) -> io::Result<Mmap> {
    // SAFETY: as for `map_mut`: nothing truncates a sealed segment while it is mapped; it is
    // only deleted whole by retention after the map is dropped.
    unsafe { Mmap::map(file) }
}

/// Pre-sizes a new segment file, maps it and writes its header; the header and the new
/// directory entry are made durable, so that a crash can never leave a segment file without
/// its header behind once this returns.
fn set_up(
    dir: &Path,
    file: &File,
    base_offset: u64,
    capacity: usize,
    fail_setup: Option<&AtomicBool>,
) -> Result<MmapMut, StorageError> {
    allocate(file, capacity)?;
    if fail_setup.is_some_and(|f| f.load(Ordering::SeqCst)) {
        return Err(StorageError::Io(io::Error::other("injected: segment set-up failed")));
    }
    let mut map = map_mut(file)?;
    record::write_segment_header(&mut map[..SEGMENT_HEADER_BYTES], base_offset);
    map.flush_range(0, SEGMENT_HEADER_BYTES)?;
    sync_dir(dir)?;
    Ok(map)
}

/// Opens a file left at a new segment's name by a creation whose cleanup failed, emptied for
/// reuse, if it holds no record: it is empty, all zeros, or this segment's header followed by
/// zeros.
///
/// # Errors
/// An `AlreadyExists` error naming the file if it holds anything else (it is left as it is),
/// or I/O failures.
fn take_over_leftover(log_path: &Path, base_offset: u64) -> Result<File, StorageError> {
    let file = OpenOptions::new().read(true).write(true).open(log_path)?;
    let holds_nothing = if file.metadata()?.len() == 0 {
        true
    } else {
        let map = map_read(&file)?;
        let zeros_from = match record::read_segment_header(&map) {
            Some(b) if b == base_offset => SEGMENT_HEADER_BYTES,
            _ => 0,
        };
        map[zeros_from..].iter().all(|&b| b == 0)
    };
    if !holds_nothing {
        return Err(StorageError::Io(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} already exists and holds data; a new segment cannot be created there (move it away)",
                log_path.display()
            ),
        )));
    }
    warn!("{}: left by a failed segment creation and holds no record; reused", log_path.display());
    file.set_len(0)?;
    Ok(file)
}

impl Segment {
    /// A segment of `file` with only its header: no records, no index yet.
    fn empty(
        log_path: PathBuf,
        file: File,
        map: Map,
        base_offset: u64,
        capacity: usize,
        index_interval_bytes: usize,
    ) -> Segment {
        Segment {
            base_offset,
            log_path,
            file,
            map,
            len: SEGMENT_HEADER_BYTES,
            capacity,
            next_offset: base_offset,
            last_timestamp_ms: 0,
            index: Vec::new(),
            index_interval_bytes,
            bytes_since_index: 0,
            synced_len: 0,
            corruption: None,
        }
    }

    /// Creates a new active segment at `base_offset`, pre-sized to `capacity` bytes.
    ///
    /// A file of that name left by an earlier attempt whose cleanup failed is taken over if
    /// it holds no record (empty, all zeros, or only this segment's header and zeros); one
    /// that holds anything else is an error and is not touched. `fail_setup` is the test hook
    /// [`super::DiskOptions::fail_segment_setup`].
    ///
    /// # Errors
    /// [`StorageError::Full`] when the disk cannot hold it, I/O failures of pre-sizing, mapping,
    /// flushing the header or syncing the directory. The file is deleted again on every
    /// failure after it was created (a failed deletion is logged), so a later attempt starts
    /// afresh.
    pub fn create(
        dir: &Path,
        base_offset: u64,
        capacity: usize,
        index_interval_bytes: usize,
        fail_setup: Option<&AtomicBool>,
    ) -> Result<Segment, StorageError> {
        let (log_path, _) = paths(dir, base_offset);
        let file = match OpenOptions::new().read(true).write(true).create_new(true).open(&log_path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                take_over_leftover(&log_path, base_offset)?
            }
            Err(e) => return Err(e.into()),
        };
        match set_up(dir, &file, base_offset, capacity, fail_setup) {
            Ok(map) => Ok(Segment::empty(
                log_path,
                file,
                Map::Active(map),
                base_offset,
                capacity,
                index_interval_bytes,
            )),
            Err(e) => {
                drop(file);
                match std::fs::remove_file(&log_path).and_then(|()| sync_dir(dir)) {
                    Ok(()) => {}
                    Err(r) if log_path.exists() => warn!(
                        "{}: not deleted after a failed segment creation: {r}; the next attempt reuses it",
                        log_path.display()
                    ),
                    Err(r) => warn!(
                        "{}: deletion after a failed segment creation not made durable: {r}",
                        log_path.display()
                    ),
                }
                Err(e)
            }
        }
    }

    /// Opens an existing segment. `active` ones are re-extended to `capacity` and writable.
    /// With `trust_len` (clean shutdown) the file length is the end of the records and the
    /// saved index is used if consistent; otherwise the records are scanned, and for an
    /// active segment everything after the last valid record is cut (and logged).
    ///
    /// # Errors
    /// I/O failures, a bad header, or a full disk when re-extending.
    pub fn open(
        dir: &Path,
        base_offset: u64,
        active: bool,
        trust_len: bool,
        capacity: usize,
        index_interval_bytes: usize,
    ) -> Result<Segment, StorageError> {
        let (log_path, index_path) = paths(dir, base_offset);
        let file = OpenOptions::new().read(true).write(active).open(&log_path)?;
        let file_len = file.metadata()?.len() as usize;
        let mut segment =
            Segment::empty(log_path, file, Map::Empty, base_offset, file_len, index_interval_bytes);
        if file_len > 0 {
            segment.map = Map::Sealed(map_read(&segment.file)?);
        }
        match record::read_segment_header(segment.map.bytes()) {
            Some(b) if b == base_offset => {}
            _ if active && segment.map.bytes().iter().all(|&b| b == 0) => {
                // Crashed between creating the file and making its header durable: the file
                // holds nothing, so it starts afresh.
                warn!(
                    "{}: segment without a header and no records; re-initialised",
                    segment.log_path.display()
                );
                segment.map = Map::Empty;
                segment.file.set_len(0)?;
                allocate(&segment.file, capacity)?;
                let mut map = map_mut(&segment.file)?;
                record::write_segment_header(&mut map[..SEGMENT_HEADER_BYTES], base_offset);
                segment.map = Map::Active(map);
                segment.capacity = capacity;
                return Ok(segment);
            }
            _ => {
                return Err(StorageError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} has no valid segment header", segment.log_path.display()),
                )))
            }
        }
        let loaded = trust_len && segment.load_index(&index_path, file_len);
        if !loaded {
            segment.scan_from(SEGMENT_HEADER_BYTES, Some(base_offset));
            if !active && segment.corruption.is_none() && segment.next_offset > base_offset {
                if let Err(e) = segment.save_index() {
                    warn!("{}: rebuilt index not saved: {e}", segment.log_path.display());
                }
            }
        }
        if active {
            segment.reopen_active(capacity, file_len)?;
        } else if let Some(c) = segment.corruption {
            warn!(
                "{}: corrupt record at byte {} (offset {}): {}; offsets from {} to the end of this segment are unreadable",
                segment.log_path.display(),
                c.position,
                c.first,
                c.why,
                c.first
            );
        }
        segment.synced_len = segment.len;
        Ok(segment)
    }

    /// Makes a scanned or trusted segment writable again: cuts anything after the valid
    /// records (zeroing the tail) and re-extends it to `capacity`.
    fn reopen_active(&mut self, capacity: usize, file_len: usize) -> Result<(), StorageError> {
        let tail = self.map.bytes().len().saturating_sub(self.len);
        let tail_is_zero = self.map.bytes()[self.len..].iter().all(|&b| b == 0);
        self.map = Map::Empty;
        if !tail_is_zero {
            warn!(
                "{}: cut {tail} bytes after the last valid record (offset {}){}",
                self.log_path.display(),
                self.next_offset,
                self.corruption.map(|c| format!(": {}", c.why)).unwrap_or_default()
            );
        }
        if !tail_is_zero || file_len < capacity {
            self.file.set_len(self.len as u64)?;
            allocate(&self.file, capacity.max(self.len))?;
        }
        self.capacity = capacity.max(self.len).max(file_len);
        self.map = Map::Active(map_mut(&self.file)?);
        Ok(())
    }

    /// Walks records from `pos` (at offset `expected`, if known), updating the length, the next
    /// offset, the index and the corruption report.
    fn scan_from(&mut self, mut pos: usize, mut expected: Option<u64>) {
        loop {
            let scan = record::decode_at(self.map.bytes(), pos);
            match scan {
                Scan::Record(found) => {
                    if expected.is_some_and(|e| found.offset != e)
                        || found.offset < self.next_offset
                    {
                        self.corruption = Some(Corruption {
                            first: self.next_offset,
                            position: pos,
                            why: "offset out of sequence",
                        });
                        break;
                    }
                    self.note_record(pos, &found);
                    expected = Some(found.offset + 1);
                    pos = found.next;
                }
                Scan::End => break,
                Scan::Torn => {
                    self.corruption = Some(Corruption {
                        first: self.next_offset,
                        position: pos,
                        why: "torn record",
                    });
                    break;
                }
                Scan::Corrupt(why) => {
                    self.corruption =
                        Some(Corruption { first: self.next_offset, position: pos, why });
                    break;
                }
            }
        }
        self.len = pos;
    }

    fn note_record(&mut self, pos: usize, found: &Found) {
        let size = found.next - pos;
        if self.index.is_empty() || self.bytes_since_index >= self.index_interval_bytes {
            self.index.push(((found.offset - self.base_offset) as u32, pos as u32));
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += size;
        self.next_offset = found.offset + 1;
        self.last_timestamp_ms = found.timestamp_ms;
        self.len = found.next;
    }

    /// Loads and checks the saved index, then scans from its last entry. False if the index
    /// is missing or inconsistent (the caller then scans everything).
    fn load_index(&mut self, index_path: &Path, file_len: usize) -> bool {
        let Ok(bytes) = std::fs::read(index_path) else { return false };
        if bytes.is_empty() || bytes.len() % INDEX_ENTRY_BYTES != 0 {
            return false;
        }
        let entries: Vec<(u32, u32)> = bytes
            .chunks_exact(INDEX_ENTRY_BYTES)
            .map(|c| {
                (
                    u32::from_be_bytes(c[0..4].try_into().unwrap()),
                    u32::from_be_bytes(c[4..8].try_into().unwrap()),
                )
            })
            .collect();
        let increasing = entries.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
        let (last_rel, last_pos) = *entries.last().expect("not empty");
        if !increasing
            || entries[0].1 as usize != SEGMENT_HEADER_BYTES
            || last_pos as usize >= file_len
        {
            return false;
        }
        match record::decode_at(self.map.bytes(), last_pos as usize) {
            Scan::Record(f) if f.offset == self.base_offset + u64::from(last_rel) => {}
            _ => return false,
        }
        self.index = entries;
        self.index.pop();
        self.next_offset = self.base_offset + u64::from(last_rel);
        self.bytes_since_index = self.index_interval_bytes;
        self.scan_from(last_pos as usize, Some(self.next_offset));
        true
    }

    /// Writes the index file (temp file, then rename).
    fn save_index(&self) -> io::Result<()> {
        let (_, index_path) =
            paths(self.log_path.parent().expect("segments live in a directory"), self.base_offset);
        let tmp = index_path.with_extension("index.tmp");
        let mut bytes = Vec::with_capacity(self.index.len() * INDEX_ENTRY_BYTES);
        for (rel, pos) in &self.index {
            bytes.extend_from_slice(&rel.to_be_bytes());
            bytes.extend_from_slice(&pos.to_be_bytes());
        }
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_data()?;
        std::fs::rename(&tmp, &index_path)?;
        sync_dir(index_path.parent().expect("in a directory"))
    }

    /// Bytes free for records.
    pub fn room(&self) -> usize {
        match self.map {
            Map::Active(_) => self.capacity - self.len,
            _ => 0,
        }
    }

    /// Appends one record. The caller checked `room()`.
    pub fn append(&mut self, timestamp_ms: u64, key: &[u8], value: &[u8]) -> u64 {
        let size = record::encoded_len(key.len(), value.len());
        assert!(size <= self.room(), "append past the end of {}", self.log_path.display());
        let offset = self.next_offset;
        let pos = self.len;
        let Map::Active(map) = &mut self.map else { unreachable!("room() is 0 unless active") };
        record::encode(&mut map[pos..pos + size], offset, timestamp_ms, key, value);
        let found = Found { offset, timestamp_ms, key: 0..0, value: 0..0, next: pos + size };
        self.note_record(pos, &found);
        offset
    }

    /// Flushes records written since the last flush to disk (msync of the dirty range).
    ///
    /// # Errors
    /// I/O failures.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.synced_len >= self.len {
            return Ok(());
        }
        if let Map::Active(map) = &self.map {
            map.flush_range(self.synced_len, self.len - self.synced_len)?;
        }
        self.synced_len = self.len;
        Ok(())
    }

    /// Records that a file-system-wide flush made everything written so far durable.
    pub fn mark_synced(&mut self) {
        self.synced_len = self.len;
    }

    /// Seals an active segment: flush, save the index, trim the file to its records and map it
    /// read-only.
    ///
    /// # Errors
    /// I/O failures.
    pub fn seal(&mut self) -> io::Result<()> {
        if !matches!(self.map, Map::Active(_)) {
            return Ok(());
        }
        self.sync()?;
        self.save_index()?;
        self.map = Map::Empty;
        self.file.set_len(self.len as u64)?;
        self.file.sync_all()?;
        self.capacity = self.len;
        self.map = Map::Sealed(map_read(&self.file)?);
        Ok(())
    }

    /// Closes an active segment cleanly (graceful shutdown): like `seal`, so the next start
    /// can trust the file length and the index.
    ///
    /// # Errors
    /// I/O failures.
    pub fn close(&mut self) -> io::Result<()> {
        self.seal()
    }

    /// Position of the first record at or after `offset` (an index lookup, then a short scan).
    pub fn position_of(&self, offset: u64) -> usize {
        if offset <= self.base_offset {
            return SEGMENT_HEADER_BYTES;
        }
        let rel = (offset - self.base_offset).min(u64::from(u32::MAX)) as u32;
        let i = self.index.partition_point(|&(r, _)| r <= rel);
        let mut pos = if i == 0 { SEGMENT_HEADER_BYTES } else { self.index[i - 1].1 as usize };
        while pos < self.len {
            match record::decode_at(self.map.bytes(), pos) {
                Scan::Record(f) if f.offset < offset => pos = f.next,
                _ => break,
            }
        }
        pos
    }

    /// The record at `pos`, if valid and within the written length.
    pub fn record_at(&self, pos: usize) -> Scan {
        if pos >= self.len {
            return Scan::End;
        }
        record::decode_at(&self.map.bytes()[..self.len], pos)
    }

    /// The segment's bytes (for copying records out).
    pub fn bytes(&self) -> &[u8] {
        self.map.bytes()
    }

    /// Deletes the segment's files (retention).
    pub fn delete(self) {
        let (log_path, index_path) =
            paths(self.log_path.parent().expect("in a directory"), self.base_offset);
        drop(self.map);
        drop(self.file);
        for p in [log_path, index_path] {
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != io::ErrorKind::NotFound {
                    warn!("cannot delete {}: {e}", p.display());
                }
            }
        }
        info!(
            "retention deleted segment {:020} (offsets {} to {})",
            self.base_offset,
            self.base_offset,
            self.next_offset.saturating_sub(1)
        );
    }
}
