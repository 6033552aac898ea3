//! Durable storage (`--storage disk`): per partition, a directory of segment files written
//! through memory maps, with crash recovery and retention by whole segments.
//!
//! ```text
//! <data_dir>/LOCK                                  exclusive lock, holds the owner's pid
//! <data_dir>/clean_shutdown                        present only after a graceful stop
//! <data_dir>/groups.checkpoint                     committed offsets of every group (JSON)
//! <data_dir>/topics/<topic>/topic.json             partitions and retention
//! <data_dir>/topics/<topic>/<partition>/{base:020}.log / .index
//! ```
//!
//! `spec/storage.md` specifies every file byte by byte, what each `--fsync` mode promises, and
//! what recovery does.

pub mod record;
pub mod segment;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use log::{info, warn};

use super::{PartitionLog, Retention, StorageError, StoredRecord, TopicMeta};
use record::{Scan, SEGMENT_HEADER_BYTES};
use segment::{Corruption, Segment};

/// Settings of disk storage.
#[derive(Debug, Clone)]
pub struct DiskOptions {
    /// Segment size: files are pre-sized to this and rolled when full.
    pub segment_bytes: usize,
    /// A sparse index entry every this many bytes of records.
    pub index_interval_bytes: usize,
    /// Recently appended records kept in memory per partition, so consumers that keep up
    /// read without touching the maps.
    pub recent_bytes: usize,
    /// Test hook: while set, pre-sizing a segment fails as if the disk were full.
    pub fail_allocation: Option<Arc<AtomicBool>>,
    /// Test hook: while set, flushes (`syncfs`) fail as if the disk reported an I/O error.
    pub fail_flush: Option<Arc<AtomicBool>>,
    /// Test hook: each flush first sleeps this many milliseconds (a slow disk).
    pub flush_delay_ms: Option<Arc<AtomicU64>>,
    /// Test hook: while set, creating a segment fails after its file was pre-sized, as if
    /// mapping it, flushing its header or syncing its directory failed.
    pub fail_segment_setup: Option<Arc<AtomicBool>>,
}

impl Default for DiskOptions {
    fn default() -> Self {
        DiskOptions {
            segment_bytes: 32 * 1024 * 1024,
            index_interval_bytes: 4096,
            recent_bytes: 1024 * 1024,
            fail_allocation: None,
            fail_flush: None,
            flush_delay_ms: None,
            fail_segment_setup: None,
        }
    }
}

/// One partition on disk.
pub struct DiskLog {
    dir: PathBuf,
    /// Sealed segments by base offset.
    sealed: BTreeMap<u64, Segment>,
    active: Segment,
    options: DiskOptions,
    recent: VecDeque<StoredRecord>,
    recent_bytes: usize,
    dirty: bool,
    /// Ranges found corrupt in sealed segments, for reports.
    pub corruptions: Vec<Corruption>,
}

impl std::fmt::Debug for DiskLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskLog")
            .field("dir", &self.dir)
            .field("segments", &(self.sealed.len() + 1))
            .finish()
    }
}

impl DiskLog {
    /// Opens the partition in `dir` (creating it if empty), recovering as needed: with
    /// `clean` the last graceful shutdown is trusted, otherwise the active segment is scanned
    /// and cut after its last valid record.
    ///
    /// # Errors
    /// I/O failures or a full disk.
    pub fn open(dir: &Path, clean: bool, options: DiskOptions) -> Result<DiskLog, StorageError> {
        std::fs::create_dir_all(dir)?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            // Only canonical names (`{base:020}.log`) are segments; anything else is left alone.
            match segment::parse_name(&name) {
                Some(base) => bases.push(base),
                None if name.ends_with(".log") => {
                    warn!("{}: {name} is not a segment name; ignored", dir.display())
                }
                None => {}
            }
        }
        bases.sort_unstable();
        let mut sealed = BTreeMap::new();
        let mut corruptions = Vec::new();
        let active = match bases.split_last() {
            None => Segment::create(
                dir,
                0,
                options.segment_bytes,
                options.index_interval_bytes,
                options.fail_segment_setup.as_deref(),
            )?,
            Some((&last, older)) => {
                for &base in older {
                    let s = Segment::open(dir, base, false, true, 0, options.index_interval_bytes)?;
                    corruptions.extend(s.corruption);
                    sealed.insert(base, s);
                }
                Segment::open(
                    dir,
                    last,
                    true,
                    clean,
                    options.segment_bytes,
                    options.index_interval_bytes,
                )?
            }
        };
        let ends = sealed.values().map(|s| (s.base_offset, s.next_offset));
        let starts = sealed.values().skip(1).map(|s| s.base_offset).chain([active.base_offset]);
        for ((base, next), following) in ends.zip(starts) {
            if next > following {
                warn!("{}: segment {base} overlaps the next one (ends at {next}, next starts at {following})", dir.display());
            } else if next < following {
                warn!(
                    "{}: offsets {next} to {} are missing (segment {base} ends early)",
                    dir.display(),
                    following - 1
                );
            }
        }
        let log = DiskLog {
            dir: dir.to_path_buf(),
            sealed,
            active,
            options,
            recent: VecDeque::new(),
            recent_bytes: 0,
            dirty: false,
            corruptions,
        };
        Ok(log)
    }

    fn roll(&mut self, record_bytes: usize) -> Result<(), StorageError> {
        if self.options.fail_allocation.as_ref().is_some_and(|f| f.load(Ordering::SeqCst)) {
            return Err(StorageError::Full("injected: no space to pre-size a segment".into()));
        }
        let capacity = self.options.segment_bytes.max(SEGMENT_HEADER_BYTES + record_bytes);
        let base = self.active.next_offset;
        let next = Segment::create(
            &self.dir,
            base,
            capacity,
            self.options.index_interval_bytes,
            self.options.fail_segment_setup.as_deref(),
        )?;
        let mut old = std::mem::replace(&mut self.active, next);
        // Even if sealing fails the old segment stays readable (still mapped); the error goes
        // to the publisher, and the next start recovers the segment by scanning it.
        let sealed = old.seal();
        self.sealed.insert(old.base_offset, old);
        sealed.map_err(StorageError::Io)
    }

    fn segment_for(&self, offset: u64) -> Option<&Segment> {
        if offset >= self.active.base_offset {
            return Some(&self.active);
        }
        self.sealed
            .range(..=offset)
            .next_back()
            .map(|(_, s)| s)
            .or_else(|| self.sealed.values().next())
    }

    fn next_segment_after(&self, base: u64) -> Option<&Segment> {
        if base >= self.active.base_offset {
            return None;
        }
        self.sealed.range(base + 1..).next().map(|(_, s)| s).or(Some(&self.active))
    }

    /// Closes the partition cleanly: flush and trim the active segment, save its index.
    ///
    /// # Errors
    /// I/O failures.
    pub fn close(&mut self) -> io::Result<()> {
        self.active.close()
    }
}

impl PartitionLog for DiskLog {
    fn append(
        &mut self,
        timestamp_ms: u64,
        key: Option<Bytes>,
        value: Bytes,
    ) -> Result<u64, StorageError> {
        let key_bytes = key.as_deref().unwrap_or_default();
        let size = record::encoded_len(key_bytes.len(), value.len());
        if size > self.active.room() {
            self.roll(size)?;
        }
        let offset = self.active.append(timestamp_ms, key_bytes, &value);
        self.dirty = true;
        let stored = StoredRecord { offset, timestamp_ms, key, value };
        self.recent_bytes += stored.payload_bytes() as usize;
        self.recent.push_back(stored);
        while self.recent_bytes > self.options.recent_bytes && self.recent.len() > 1 {
            let old = self.recent.pop_front().expect("not empty");
            self.recent_bytes -= old.payload_bytes() as usize;
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
        let from = from.max(self.oldest_offset());
        if let Some(first) = self.recent.front() {
            if from >= first.offset {
                let skip = (from - first.offset) as usize;
                super::read_within(self.recent.iter().skip(skip), max_records, max_bytes, out);
                return Ok(());
            }
        }
        let Some(mut segment) = self.segment_for(from) else { return Ok(()) };
        let mut pos = segment.position_of(from);
        let (mut taken, mut bytes) = (0, 0);
        while taken < max_records {
            match segment.record_at(pos) {
                Scan::Record(f) => {
                    let size = f.key.len() + f.value.len();
                    if bytes > 0 && bytes + size > max_bytes {
                        break;
                    }
                    let data = segment.bytes();
                    out.push(StoredRecord {
                        offset: f.offset,
                        timestamp_ms: f.timestamp_ms,
                        key: (!f.key.is_empty())
                            .then(|| Bytes::copy_from_slice(&data[f.key.clone()])),
                        value: Bytes::copy_from_slice(&data[f.value.clone()]),
                    });
                    taken += 1;
                    bytes += size;
                    pos = f.next;
                }
                _ => match self.next_segment_after(segment.base_offset) {
                    Some(next) => {
                        segment = next;
                        pos = SEGMENT_HEADER_BYTES;
                    }
                    None => break,
                },
            }
        }
        Ok(())
    }

    fn next_offset(&self) -> u64 {
        self.active.next_offset
    }

    fn oldest_offset(&self) -> u64 {
        self.sealed.values().next().unwrap_or(&self.active).base_offset
    }

    fn bytes_stored(&self) -> u64 {
        (self.sealed.values().map(|s| s.len).sum::<usize>() + self.active.len) as u64
    }

    fn segments(&self) -> u64 {
        self.sealed.len() as u64 + 1
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        if self.dirty {
            self.active.sync()?;
            self.dirty = false;
        }
        Ok(())
    }

    fn dirty(&self) -> bool {
        self.dirty
    }

    fn mark_synced(&mut self) {
        self.active.mark_synced();
        self.dirty = false;
    }

    fn apply_retention(&mut self, retention: Retention, now_ms: u64) -> u64 {
        let mut dropped = 0;
        while let Some((&base, oldest)) = self.sealed.iter().next() {
            let over_bytes = retention.bytes > 0 && self.bytes_stored() > retention.bytes;
            let too_old = retention.ms > 0 && oldest.last_timestamp_ms + retention.ms < now_ms;
            if !over_bytes && !too_old {
                break;
            }
            let segment = self.sealed.remove(&base).expect("listed above");
            dropped += segment.next_offset - segment.base_offset;
            segment.delete();
        }
        dropped
    }

    fn close(&mut self) -> Result<(), StorageError> {
        DiskLog::close(self)?;
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically: a temp file, fsync, rename, fsync of the directory.
///
/// # Errors
/// I/O failures; `path` is then unchanged.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// `syncfs` of the file system holding `file`, unless the test hook `fail` is set.
fn flush_filesystem(
    file: &File,
    fail: Option<&AtomicBool>,
    delay_ms: Option<&AtomicU64>,
) -> io::Result<()> {
    if let Some(ms) = delay_ms.map(|d| d.load(Ordering::SeqCst)).filter(|ms| *ms > 0) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    if fail.is_some_and(|f| f.load(Ordering::SeqCst)) {
        return Err(io::Error::other("injected: flush failed"));
    }
    rustix::fs::syncfs(file).map_err(io::Error::from)
}

/// The data directory: its lock, topics, checkpoint and clean-shutdown marker.
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
    /// The locked `LOCK` file; also the handle `syncfs` is called on (any file of the file
    /// system will do, and this one is always open).
    lock: File,
    /// Whether the previous run stopped gracefully.
    pub clean: bool,
    options: DiskOptions,
}

const CLEAN_MARKER: &str = "clean_shutdown";
const CHECKPOINT: &str = "groups.checkpoint";

impl DataDir {
    /// Opens (or creates) the data directory and locks it for this process.
    ///
    /// # Errors
    /// [`StorageError::Io`] with a clear message when another `mqd` holds the lock.
    pub fn open(root: &Path, options: DiskOptions) -> Result<DataDir, StorageError> {
        std::fs::create_dir_all(root.join("topics"))?;
        let lock_path = root.join("LOCK");
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let owner = std::fs::read_to_string(&lock_path).unwrap_or_default();
                return Err(StorageError::Io(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "data directory {} is locked by another mqd (pid {}); stop it or choose another --data-dir",
                        root.display(),
                        owner.trim()
                    ),
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        lock.set_len(0)?;
        write!(lock, "{}", std::process::id())?;
        let marker = root.join(CLEAN_MARKER);
        let clean = marker.exists();
        if clean {
            std::fs::remove_file(&marker)?;
            File::open(root)?.sync_all()?;
        } else if std::fs::read_dir(root.join("topics"))?.next().is_some() {
            info!(
                "{}: no clean-shutdown marker; recovering by scanning active segments",
                root.display()
            );
        }
        Ok(DataDir { root: root.to_path_buf(), lock, clean, options })
    }

    fn topic_dir(&self, topic: &str) -> PathBuf {
        self.root.join("topics").join(topic)
    }

    /// Every topic on disk with its settings.
    ///
    /// # Errors
    /// I/O failures.
    pub fn topics(&self) -> Result<Vec<(String, TopicMeta)>, StorageError> {
        let mut topics = Vec::new();
        for entry in std::fs::read_dir(self.root.join("topics"))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta_path = entry.path().join("topic.json");
            match std::fs::read(&meta_path)
                .ok()
                .and_then(|b| serde_json::from_slice::<TopicMeta>(&b).ok())
            {
                Some(meta)
                    if !(1..=mq_protocol::limits::PARTITIONS_MAX).contains(&meta.partitions) =>
                {
                    warn!(
                        "{}: topic.json gives {} partitions; topic skipped",
                        entry.path().display(),
                        meta.partitions
                    )
                }
                Some(meta) if mq_protocol::names::validate_name("topic", &name).is_ok() => {
                    topics.push((name, meta))
                }
                _ => warn!("{}: no readable topic.json; topic skipped", entry.path().display()),
            }
        }
        topics.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(topics)
    }

    /// Creates a new topic: its partitions, then its `topic.json`.
    ///
    /// The topic's directory must not exist yet (an empty one is taken over). One that exists
    /// was not loaded at start: its `topic.json` is missing, unreadable or gives a partition
    /// count out of range, or a creation stopped half-way (a crash). Its records must neither
    /// be mixed into the new topic nor deleted unasked, so the creation is refused until the
    /// operator repairs or removes it. A creation that fails removes what it made, so that a
    /// later one can succeed.
    ///
    /// # Errors
    /// [`StorageError::Io`] of kind `AlreadyExists` naming the directory if it exists and is
    /// not empty; storage failures such as a full disk.
    pub fn create_topic(
        &self,
        topic: &str,
        meta: &TopicMeta,
    ) -> Result<Vec<DiskLog>, StorageError> {
        let dir = self.topic_dir(topic);
        match std::fs::symlink_metadata(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Ok(m) if m.is_dir() && std::fs::read_dir(&dir)?.next().is_none() => {}
            Ok(_) => {
                return Err(StorageError::Io(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists but was not loaded at start (no readable topic.json, a partition count out of range, or a creation that stopped half-way); topic {topic} cannot be created over it: repair its topic.json and restart mqd, or remove the directory",
                        dir.display()
                    ),
                )))
            }
            Err(e) => return Err(e.into()),
        }
        let created = (0..meta.partitions)
            .map(|p| self.open_partition(topic, p))
            .collect::<Result<Vec<_>, _>>()
            .and_then(|logs| self.save_topic(topic, meta).map(|()| logs));
        if created.is_err() {
            // The partitions opened so far were dropped (unmapped) by `collect` or `and_then`;
            // everything in the directory was made by this call.
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    if let Err(e) = segment::sync_dir(&self.root.join("topics")) {
                        warn!("{}: removal not made durable: {e}", dir.display());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => warn!(
                    "{}: not removed after the failed creation of topic {topic}: {e}; creating it again fails until the directory is removed",
                    dir.display()
                ),
            }
        }
        created
    }

    /// Saves a new topic's settings.
    ///
    /// # Errors
    /// I/O failures.
    pub fn save_topic(&self, topic: &str, meta: &TopicMeta) -> Result<(), StorageError> {
        let dir = self.topic_dir(topic);
        std::fs::create_dir_all(&dir)?;
        write_atomic(
            &dir.join("topic.json"),
            &serde_json::to_vec_pretty(meta).expect("serializes"),
        )?;
        segment::sync_dir(&self.root.join("topics"))?;
        Ok(())
    }

    /// Opens one partition of a topic.
    ///
    /// # Errors
    /// I/O failures or a full disk.
    pub fn open_partition(&self, topic: &str, partition: u32) -> Result<DiskLog, StorageError> {
        let dir = self.topic_dir(topic).join(partition.to_string());
        let mut options = self.options.clone();
        if options.fail_allocation.as_ref().is_some_and(|f| f.load(Ordering::SeqCst))
            && !dir.exists()
        {
            return Err(StorageError::Full("injected: no space for a new partition".into()));
        }
        options.fail_allocation = self.options.fail_allocation.clone();
        let fresh = !dir.exists();
        let log = DiskLog::open(&dir, self.clean, options)?;
        if fresh {
            segment::sync_dir(&self.topic_dir(topic))?;
        }
        Ok(log)
    }

    /// The saved group checkpoint, if any.
    pub fn load_checkpoint(&self) -> Option<Vec<u8>> {
        std::fs::read(self.root.join(CHECKPOINT)).ok()
    }

    /// Replaces the group checkpoint atomically.
    ///
    /// # Errors
    /// I/O failures.
    pub fn save_checkpoint(&self, bytes: &[u8]) -> Result<(), StorageError> {
        write_atomic(&self.checkpoint_path(), bytes)?;
        Ok(())
    }

    /// Where the group checkpoint is kept.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.root.join(CHECKPOINT)
    }

    /// Flushes everything written on the data directory's file system (`syncfs`).
    ///
    /// # Errors
    /// I/O failures, including write-back errors since the last call.
    pub fn sync_filesystem(&self) -> Result<(), StorageError> {
        let options = &self.options;
        flush_filesystem(
            &self.lock,
            options.fail_flush.as_deref(),
            options.flush_delay_ms.as_deref(),
        )
        .map_err(StorageError::Io)
    }

    /// A function that flushes the data directory's file system (`syncfs`), for the
    /// flusher thread or the event loop.
    ///
    /// # Errors
    /// I/O failures duplicating the descriptor.
    pub fn flush_fn(&self) -> io::Result<super::FlushFn> {
        let file = self.lock.try_clone()?;
        let fail = self.options.fail_flush.clone();
        let delay = self.options.flush_delay_ms.clone();
        Ok(Box::new(move || flush_filesystem(&file, fail.as_deref(), delay.as_deref())))
    }

    /// Writes the clean-shutdown marker (after every partition was closed).
    ///
    /// # Errors
    /// I/O failures.
    pub fn mark_clean(&self) -> Result<(), StorageError> {
        write_atomic(&self.root.join(CLEAN_MARKER), b"clean\n")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
