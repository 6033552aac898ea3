//! The storage writer: appends samples to `<data_dir>/gpus/<hour>/<uuid>.jsonl`, makes them
//! durable, records them in the checkpoint, and only then lets them be seen (catalog and
//! cache) and acknowledged. Between batches it runs retention ([`super::retention`]).
//!
//! A GPU's samples go to one file per hour of their time (UTC; `<hour>` is
//! `YYYY-MM-DDTHH`), so retention deletes whole files. A file written before files were
//! split by hour (`gpus/<uuid>.jsonl`) is read as the GPU's oldest file, never written
//! again, and deleted whole once its latest sample expired.
//!
//! A batch is stored in four steps, so that an acknowledged record is always on disk
//! exactly once:
//!
//! 1. Encode: records already in the checkpoint are duplicates (a redelivery) and are
//!    skipped, records older than the retention are expired (acknowledged, not stored);
//!    the others become lines, grouped per GPU and hour.
//! 2. Write each file's lines at its end (positioned writes at the indexed length, so a
//!    failed earlier write leaves nothing in the way).
//! 3. Stage the new checkpoint, `syncfs` once (file data, new directory entries and the
//!    staged checkpoint in one call), rename the checkpoint into place and sync the
//!    directory.
//! 4. Update the catalog and the cache; the caller then acknowledges the batch.
//!
//! If step 2 or 3 fails (a full disk, say), every file is cut back to its length before the
//! batch and the checkpoint is left as it was: the caller NACKs the batch and the broker
//! delivers it again later. The one exception is a failed directory sync after the rename:
//! then the batch is durable and kept (its redelivery is a duplicate), but nothing is
//! acknowledged until a later directory sync succeeds.
//!
//! **Restart.** [`Store::open`] loads the checkpoint and scans every file: lines of records
//! the checkpoint does not hold (written after the last checkpoint, never acknowledged,
//! so coming again) and a torn last line are cut off (a file left empty is deleted);
//! unreadable lines in the middle are skipped with a warning. The scan rebuilds the
//! catalog and its time index. Without a checkpoint (first start, or an unreadable one)
//! every complete line is kept and the checkpoint is rebuilt from the lines' (partition,
//! offset). Then retention runs once. Lines of one batch are at the end of every file
//! they went to, so cutting each file on its own is the same as cutting the batch.
//!
//! **Paths.** A file is named only from an id that passed [`valid_gpu_id`] and an hour the
//! writer formats, joined onto the `gpus` directory and checked to stay in it, and opened
//! with `O_NOFOLLOW`, so a planted symbolic link is refused, not followed; an hour
//! directory that is not a real directory is refused too.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::catalog::{hour_of, Catalog, SegmentKey, HOUR_MS};
use super::checkpoint::Checkpoint;
use super::line::{encode_line, encode_tail, Line, Sample};
use super::record::{Bad, BadReason, GpuIdentity, Parsed};
use super::retention::{self, Deleter, Job, RetentionConfig, SIZE_RUN_INTERVAL_MS};
use super::timestamp::{format_ms, parse_rfc3339_ms};
use super::Shared;
use crate::telemetry::valid_gpu_id;

/// Most distinct metric names shared between samples; past it each sample gets its own copy.
const METRIC_NAMES_MAX: usize = 65_536;

/// Settings of the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Most JSONL files kept open between batches.
    pub open_files_max: usize,
    /// Most GPUs; records of new GPUs beyond it are refused.
    pub gpus_max: usize,
    /// What to delete, and when.
    pub retention: RetentionConfig,
}

/// What became of one record of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Its samples are stored.
    Stored,
    /// It was stored before (a redelivery).
    Duplicate,
    /// Its time is before what retention keeps: acknowledged, not stored.
    Expired,
    /// Refused: to the dead-letter topic.
    Refused(Bad),
}

/// The path of `uuid`'s legacy file (`gpus/<uuid>.jsonl`, from before files were split by
/// hour).
///
/// # Panics
/// If `uuid` is not a valid GPU id (callers check first), or the path would leave
/// `gpus_dir`.
pub fn gpu_path(gpus_dir: &Path, uuid: &str) -> PathBuf {
    assert!(valid_gpu_id(uuid), "invalid GPU id reached a path");
    let path = gpus_dir.join(format!("{uuid}.jsonl"));
    assert_eq!(path.parent(), Some(gpus_dir), "GPU path leaves the data directory");
    path
}

/// The name of the directory of the hour starting at `hour_ms`: `YYYY-MM-DDTHH` (UTC).
pub fn hour_dir_name(hour_ms: i64) -> String {
    let text = format_ms(hour_ms);
    String::from_utf8_lossy(&text[..13]).into_owned()
}

/// The hour an hour directory's name stands for; `None` if it is not one.
pub fn parse_hour_dir(name: &str) -> Option<i64> {
    if name.len() != 13 || !name.is_ascii() {
        return None;
    }
    let ms = parse_rfc3339_ms(&format!("{name}:00:00Z")).ok()?;
    (hour_dir_name(ms) == name).then_some(ms)
}

/// The path of one of `uuid`'s files.
///
/// # Panics
/// If `uuid` is not a valid GPU id (callers check first), or the path would leave
/// `gpus_dir`.
pub fn segment_path(gpus_dir: &Path, uuid: &str, key: SegmentKey) -> PathBuf {
    match key {
        SegmentKey::Legacy => gpu_path(gpus_dir, uuid),
        SegmentKey::Hour(hour) => {
            let dir = gpus_dir.join(hour_dir_name(hour));
            assert_eq!(dir.parent(), Some(gpus_dir), "hour directory leaves the data directory");
            gpu_path(&dir, uuid)
        }
    }
}

/// Open append handles, least recently used closed first.
#[derive(Debug)]
struct Handles {
    files: HashMap<(Arc<str>, i64), (File, u64)>,
    tick: u64,
    max: usize,
}

impl Handles {
    fn take(&mut self, uuid: &Arc<str>, hour: i64) -> Option<File> {
        self.files.remove(&(Arc::clone(uuid), hour)).map(|(f, _)| f)
    }

    fn put(&mut self, uuid: Arc<str>, hour: i64, file: File) {
        self.tick += 1;
        self.files.insert((uuid, hour), (file, self.tick));
        while self.files.len() > self.max {
            let oldest = self.files.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| k.clone());
            self.files.remove(&oldest.expect("not empty"));
        }
    }
}

/// One GPU's part of a batch.
#[derive(Debug)]
struct GpuDraft {
    uuid: Arc<str>,
    identity: GpuIdentity,
    disk_ts_max_ms: Option<i64>,
    /// Whether the GPU is new (counts against `gpus_max`).
    is_new: bool,
    /// Its samples, in arrival order.
    samples: Vec<Sample>,
}

/// One file's part of a batch.
#[derive(Debug)]
struct Draft {
    /// Index of its GPU's [`GpuDraft`].
    gpu: usize,
    hour: i64,
    file: File,
    base_len: u64,
    buf: Vec<u8>,
    /// (length, time) of each line, in order.
    lines: Vec<(u32, i64)>,
}

/// The storage writer. One per collector; it alone writes the files and the checkpoint.
#[derive(Debug)]
pub struct Store {
    config: StoreConfig,
    gpus_dir: PathBuf,
    dir: File,
    checkpoint: Checkpoint,
    handles: Handles,
    metric_names: HashSet<Arc<str>>,
    shared: Arc<Shared>,
    /// The checkpoint was renamed but the directory sync after it failed.
    dir_sync_pending: bool,
    /// Hour directories on disk (checked to be real directories).
    hours_on_disk: BTreeSet<i64>,
    /// When retention runs next (ms since the epoch).
    next_run_ms: i64,
    /// When the size cap is checked next.
    next_size_check_ms: i64,
    /// Unlinks what retention deletes.
    deleter: Deleter,
    /// Holds the data-directory lock while the store lives.
    _lock: File,
}

impl Store {
    /// Locks the data directory, loads the checkpoint, scans the files into the catalog
    /// (see the module docs) and runs retention once.
    ///
    /// # Errors
    /// The directory cannot be created or is locked by another collector, or a file
    /// cannot be read or cut.
    pub fn open(config: StoreConfig, shared: Arc<Shared>) -> io::Result<Store> {
        let gpus_dir = config.data_dir.join("gpus");
        fs::create_dir_all(&gpus_dir)?;
        let lock = File::create(config.data_dir.join("collector.lock"))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |_| {
                io::Error::other(format!(
                    "{} is in use by another collector",
                    config.data_dir.display()
                ))
            },
        )?;
        let dir = File::open(&config.data_dir)?;
        let loaded = match Checkpoint::load(&config.data_dir) {
            Ok(c) => c,
            Err(e) => {
                warn!("checkpoint unreadable ({e}); rebuilding it from the JSONL files");
                None
            }
        };
        let retention = &shared.retention;
        retention.age_ms.store(config.retention.age_ms(), Relaxed);
        retention.bytes_max.store(config.retention.bytes, Relaxed);
        let handles = Handles { files: HashMap::new(), tick: 0, max: config.open_files_max.max(1) };
        let mut store = Store {
            checkpoint: loaded.clone().unwrap_or_else(Checkpoint::new),
            config,
            gpus_dir,
            dir,
            handles,
            metric_names: HashSet::new(),
            deleter: Deleter::start(Arc::clone(&shared))?,
            shared,
            dir_sync_pending: false,
            hours_on_disk: BTreeSet::new(),
            next_run_ms: i64::MIN,
            next_size_check_ms: i64::MIN,
            _lock: lock,
        };
        store.recover(loaded.as_ref())?;
        store.checkpoint.save(&store.config.data_dir)?;
        store.retain_if_due();
        Ok(store)
    }

    /// The GPUs directory.
    pub fn gpus_dir(&self) -> &Path {
        &self.gpus_dir
    }

    fn recover(&mut self, loaded: Option<&Checkpoint>) -> io::Result<()> {
        let started = Instant::now();
        let mut catalog = Catalog::default();
        let mut legacy = Vec::new();
        let mut hours = Vec::new();
        for entry in fs::read_dir(&self.gpus_dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let text = name.to_str();
            let file_type = entry.file_type()?;
            if let Some(hour) = text.and_then(parse_hour_dir) {
                if file_type.is_dir() {
                    hours.push((hour, entry.path()));
                } else {
                    warn!("ignoring {:?} in {}: not a directory", name, self.gpus_dir.display());
                }
                continue;
            }
            match text.and_then(|n| n.strip_suffix(".jsonl")).filter(|u| valid_gpu_id(u)) {
                Some(uuid) if file_type.is_file() => legacy.push((uuid.to_string(), entry.path())),
                Some(_) => warn!("ignoring {:?}: not a regular file (a link?)", name),
                None => warn!(
                    "ignoring {:?} in {}: neither <hour> nor <gpu id>.jsonl",
                    name,
                    self.gpus_dir.display()
                ),
            }
        }
        // Oldest first, so that each GPU's identity ends up as its newest file states it.
        legacy.sort();
        hours.sort();
        for (uuid, path) in legacy {
            self.scan_file(&mut catalog, &uuid, SegmentKey::Legacy, &path, loaded)?;
        }
        for (hour, dir) in hours {
            self.hours_on_disk.insert(hour);
            let mut files: Vec<_> = fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
            files.sort_by_key(|e| e.file_name());
            for entry in files {
                let name = entry.file_name();
                let uuid = name.to_str().and_then(|n| n.strip_suffix(".jsonl"));
                let Some(uuid) = uuid.filter(|u| valid_gpu_id(u)) else {
                    warn!("ignoring {:?} in {}: not <gpu id>.jsonl", name, dir.display());
                    continue;
                };
                if !entry.file_type()?.is_file() {
                    warn!("ignoring {:?} in {}: not a regular file (a link?)", name, dir.display());
                    continue;
                }
                self.scan_file(&mut catalog, uuid, SegmentKey::Hour(hour), &entry.path(), loaded)?;
            }
        }
        catalog.gpus.retain(|_, g| !g.segments.is_empty());
        let samples: u64 = catalog.gpus.values().map(|g| g.samples).sum();
        let bytes: u64 = catalog.gpus.values().map(|g| g.bytes).sum();
        let files: usize = catalog.gpus.values().map(|g| g.segments.len()).sum();
        info!(
            "storage: {} GPUs, {samples} samples, {files} files, {} in {} ({} ms); checkpoint {}",
            catalog.gpus.len(),
            retention::human_bytes(bytes),
            self.gpus_dir.display(),
            started.elapsed().as_millis(),
            self.checkpoint.describe()
        );
        self.shared.stats.stored_bytes.store(bytes, Relaxed);
        *self.shared.catalog.write().expect("catalog lock") = catalog;
        Ok(())
    }

    /// Scans one file into its GPU's state, cutting what follows the last line it may
    /// keep; a file left empty is deleted.
    fn scan_file(
        &mut self,
        catalog: &mut Catalog,
        uuid: &str,
        key: SegmentKey,
        path: &Path,
        loaded: Option<&Checkpoint>,
    ) -> io::Result<()> {
        let file = OpenOptions::new().read(true).write(true).custom_flags(nofollow()).open(path)?;
        let file_len = file.metadata()?.len();
        let mut reader = BufReader::with_capacity(1 << 20, &file);
        let state = match catalog.gpus.get_mut(uuid) {
            Some(s) => s,
            None => catalog.gpus.entry(Arc::from(uuid)).or_default(),
        };
        let (mut pos, mut keep_len, mut skipped) = (0u64, 0u64, 0u64);
        let mut bytes = Vec::new();
        loop {
            bytes.clear();
            let n = reader.read_until(b'\n', &mut bytes)? as u64;
            if n == 0 || bytes.last() != Some(&b'\n') {
                break;
            }
            let Some(line) = Line::parse(&bytes[..bytes.len() - 1]) else {
                skipped += 1;
                pos += n;
                continue;
            };
            if loaded.is_some_and(|c| !c.contains(line.p, line.o)) {
                break;
            }
            self.checkpoint.insert(line.p, line.o);
            if let Some(gpu) = &line.gpu {
                state.identity = gpu.to_identity();
            }
            // Lines skipped as unreadable before this one stay in the file but not in the
            // index: the index starts each block at a readable line.
            state.skip_to(key, pos);
            state.add_line(key, pos, n, line.ts_ms);
            let metric = self.intern(&line.metric);
            state.note_latest(&line.into_sample(metric));
            pos += n;
            keep_len = pos;
        }
        if skipped > 0 {
            warn!("{}: {skipped} unreadable lines skipped", path.display());
        }
        if file_len > keep_len {
            warn!(
                "{}: cut {} bytes after the last checkpointed line (torn or unacknowledged tail)",
                path.display(),
                file_len - keep_len
            );
            file.set_len(keep_len)?;
        }
        if keep_len == 0 {
            drop(file);
            fs::remove_file(path)?;
            info!("{}: deleted (empty)", path.display());
            return Ok(());
        }
        Ok(())
    }

    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(known) = self.metric_names.get(name) {
            return Arc::clone(known);
        }
        let name: Arc<str> = Arc::from(name);
        if self.metric_names.len() < METRIC_NAMES_MAX {
            self.metric_names.insert(Arc::clone(&name));
        }
        name
    }
}

impl Store {
    /// Stores a batch (see the module docs) and returns one verdict per record, in order.
    ///
    /// # Errors
    /// A write or sync failure: nothing of the batch is stored or visible, and every record
    /// of it should be delivered again.
    pub fn write_batch(&mut self, batch: &[Parsed]) -> io::Result<Vec<Verdict>> {
        if self.dir_sync_pending {
            // The last batch's checkpoint rename is not yet durable: no acknowledgement
            // (not even of duplicates) until it is.
            self.dir.sync_all()?;
            self.dir_sync_pending = false;
        }
        let mut verdicts = Vec::with_capacity(batch.len());
        let (mut gpus, drafts) = self.encode(batch, &mut verdicts)?;
        if drafts.is_empty() {
            return Ok(verdicts);
        }
        let before = self.checkpoint.clone();
        if let Err(e) = self.make_durable(batch, &verdicts, &drafts) {
            warn!("storing a batch failed: {e}; it will be delivered again");
            if self.dir_sync_pending {
                // Data and checkpoint are synced and in place; only the directory sync
                // failed. Keep the batch (its redelivery is a duplicate) but do not
                // acknowledge it until the directory syncs.
                self.publish(&mut gpus, &drafts);
                self.return_handles(&gpus, drafts);
                return Err(e);
            }
            self.checkpoint = before;
            for draft in &drafts {
                if let Err(e) = draft.file.set_len(draft.base_len) {
                    let uuid = &gpus[draft.gpu].uuid;
                    warn!("cannot cut {uuid} ({}) back after a failed write: {e}", draft.hour);
                }
            }
            self.return_handles(&gpus, drafts);
            return Err(e);
        }
        self.publish(&mut gpus, &drafts);
        self.return_handles(&gpus, drafts);
        Ok(verdicts)
    }

    fn make_durable(
        &mut self,
        batch: &[Parsed],
        verdicts: &[Verdict],
        drafts: &[Draft],
    ) -> io::Result<()> {
        for draft in drafts {
            draft.file.write_all_at(&draft.buf, draft.base_len)?;
        }
        for (record, verdict) in batch.iter().zip(verdicts) {
            if *verdict == Verdict::Stored {
                self.checkpoint.insert(record.partition, record.offset);
            }
        }
        self.checkpoint.stage(&self.config.data_dir)?;
        let started = Instant::now();
        rustix::fs::syncfs(&self.dir)?;
        Checkpoint::rename_into_place(&self.config.data_dir)?;
        if let Err(e) = self.dir.sync_all() {
            self.dir_sync_pending = true;
            return Err(e);
        }
        let sync_us = started.elapsed().as_micros() as u64;
        self.shared.stats.sync_us_total.fetch_add(sync_us, Relaxed);
        Ok(())
    }

    fn return_handles(&mut self, gpus: &[GpuDraft], drafts: Vec<Draft>) {
        for draft in drafts {
            self.handles.put(Arc::clone(&gpus[draft.gpu].uuid), draft.hour, draft.file);
        }
    }

    /// Step 1: verdicts for every record and the lines of the stored ones, per GPU and
    /// hour.
    fn encode(
        &mut self,
        batch: &[Parsed],
        verdicts: &mut Vec<Verdict>,
    ) -> io::Result<(Vec<GpuDraft>, Vec<Draft>)> {
        let shared = Arc::clone(&self.shared);
        let visible_from_ms = shared.visible_from_ms();
        let catalog = shared.catalog.read().expect("catalog lock");
        let mut gpus: Vec<GpuDraft> = Vec::new();
        let mut by_gpu: HashMap<&str, usize> = HashMap::new();
        let mut drafts: Vec<Draft> = Vec::new();
        let mut by_file: HashMap<(usize, i64), usize> = HashMap::new();
        let mut seen_in_batch: HashSet<(u32, u64)> = HashSet::new();
        for record in batch {
            if self.checkpoint.contains(record.partition, record.offset)
                || !seen_in_batch.insert((record.partition, record.offset))
            {
                verdicts.push(Verdict::Duplicate);
                continue;
            }
            if record.ts_ms < visible_from_ms {
                // Never written, so never in an hour being deleted. Kept in the checkpoint
                // (saved with the next batch that stores something) like a stored record.
                self.checkpoint.insert(record.partition, record.offset);
                verdicts.push(Verdict::Expired);
                continue;
            }
            let gpu = match by_gpu.get(record.uuid.as_str()) {
                Some(&i) => i,
                None => {
                    // A new GPU counts once it has a sample (its file may yet be refused).
                    let new_so_far =
                        gpus.iter().filter(|g| g.is_new && !g.samples.is_empty()).count();
                    match self.start_gpu(&catalog, new_so_far, &record.uuid) {
                        Ok(g) => {
                            by_gpu.insert(&record.uuid, gpus.len());
                            gpus.push(g);
                            gpus.len() - 1
                        }
                        Err(bad) => {
                            verdicts.push(Verdict::Refused(bad));
                            continue;
                        }
                    }
                }
            };
            let hour = hour_of(record.ts_ms);
            let slot = match by_file.get(&(gpu, hour)) {
                Some(&i) => i,
                None => match self.start_draft(&catalog, &gpus[gpu], gpu, hour)? {
                    Ok(draft) => {
                        by_file.insert((gpu, hour), drafts.len());
                        drafts.push(draft);
                        drafts.len() - 1
                    }
                    Err(bad) => {
                        verdicts.push(Verdict::Refused(bad));
                        continue;
                    }
                },
            };
            self.encode_record(&mut gpus[gpu], &mut drafts[slot], record);
            verdicts.push(Verdict::Stored);
        }
        assert_eq!(verdicts.len(), batch.len());
        Ok((gpus, drafts))
    }

    /// A GPU's part of this batch, or why its records are refused.
    fn start_gpu(&self, catalog: &Catalog, new_so_far: usize, uuid: &str) -> Result<GpuDraft, Bad> {
        let known = catalog.gpus.get_key_value(uuid);
        if known.is_none() && catalog.gpus.len() + new_so_far >= self.config.gpus_max {
            let detail = format!("GPU {uuid} would exceed --gpus-max {}", self.config.gpus_max);
            return Err(Bad { reason: BadReason::GpuLimit, detail });
        }
        let (uuid, state) = match known {
            Some((u, s)) => (Arc::clone(u), Some(s)),
            None => (Arc::from(uuid), None),
        };
        Ok(GpuDraft {
            uuid,
            identity: state.map(|s| s.identity.clone()).unwrap_or_default(),
            disk_ts_max_ms: state.and_then(|s| s.last_ms),
            is_new: state.is_none(),
            samples: Vec::new(),
        })
    }

    /// Opens a GPU's file of an hour for this batch, or says why its records are refused.
    fn start_draft(
        &mut self,
        catalog: &Catalog,
        gpu: &GpuDraft,
        index: usize,
        hour: i64,
    ) -> io::Result<Result<Draft, Bad>> {
        let uuid = &gpu.uuid;
        let file = match self.handles.take(uuid, hour) {
            Some(f) => f,
            None => {
                self.make_hour_dir(hour)?;
                let path = segment_path(&self.gpus_dir, uuid, SegmentKey::Hour(hour));
                match open_for_append(&path) {
                    Ok(f) => f,
                    Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                        let detail = format!("{uuid}.jsonl is a symbolic link; refused");
                        return Ok(Err(Bad { reason: BadReason::BadGpuId, detail }));
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let base_len =
            catalog.gpus.get(&**uuid).map_or(0, |s| s.segment_len(SegmentKey::Hour(hour)));
        Ok(Ok(Draft {
            gpu: index,
            hour,
            file,
            base_len,
            buf: Vec::with_capacity(4096),
            lines: Vec::new(),
        }))
    }

    /// Creates the directory of an hour if it is not there (the batch's `syncfs` makes its
    /// entry durable); refuses one that is not a real directory.
    fn make_hour_dir(&mut self, hour: i64) -> io::Result<()> {
        if self.hours_on_disk.contains(&hour) {
            return Ok(());
        }
        let path = self.gpus_dir.join(hour_dir_name(hour));
        match fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !fs::symlink_metadata(&path)?.is_dir() {
                    let detail = format!("{} is not a directory (a link?)", path.display());
                    return Err(io::Error::other(detail));
                }
            }
            Err(e) => return Err(e),
        }
        self.hours_on_disk.insert(hour);
        Ok(())
    }

    fn encode_record(&mut self, gpu: &mut GpuDraft, draft: &mut Draft, record: &Parsed) {
        let identity = merge_identity(&gpu.identity, &record.identity);
        let first_line_of_file = draft.base_len == 0 && draft.lines.is_empty();
        let changed = identity != gpu.identity || first_line_of_file;
        let mut tail = encode_tail(record.extra.as_deref(), changed.then_some(&identity));
        if changed {
            gpu.identity = identity;
        }
        for (name, value) in &record.metrics {
            let start = draft.buf.len();
            encode_line(
                &mut draft.buf,
                record.ts_ms,
                name,
                *value,
                record.partition,
                record.offset,
                &tail,
            );
            draft.lines.push(((draft.buf.len() - start) as u32, record.ts_ms));
            let metric = self.intern(name);
            gpu.samples.push(Sample {
                ts_ms: record.ts_ms,
                value: *value,
                offset: record.offset,
                partition: record.partition,
                metric,
                extra: record.extra.clone(),
            });
            if changed {
                // The identity goes on the record's first line only.
                tail = encode_tail(record.extra.as_deref(), None);
            }
        }
    }

    /// Step 4: makes the batch visible in the catalog and the cache, and counts it.
    fn publish(&mut self, gpus: &mut [GpuDraft], drafts: &[Draft]) {
        let mut catalog = self.shared.catalog.write().expect("catalog lock");
        let mut bytes_total = 0u64;
        for draft in drafts {
            let uuid = &gpus[draft.gpu].uuid;
            let state = catalog.gpus.entry(Arc::clone(uuid)).or_default();
            let key = SegmentKey::Hour(draft.hour);
            assert_eq!(
                state.segment_len(key),
                draft.base_len,
                "file {uuid} {} changed under the writer",
                draft.hour
            );
            let mut pos = draft.base_len;
            for &(len, ts_ms) in &draft.lines {
                state.add_line(key, pos, u64::from(len), ts_ms);
                pos += u64::from(len);
            }
            assert_eq!(pos, draft.base_len + draft.buf.len() as u64);
            bytes_total += draft.buf.len() as u64;
        }
        let mut samples_total = 0u64;
        for gpu in gpus.iter() {
            if gpu.samples.is_empty() {
                continue;
            }
            let state = catalog.gpus.get_mut(&gpu.uuid).expect("a GPU with lines has a state");
            for sample in &gpu.samples {
                state.note_latest(sample);
            }
            state.identity = gpu.identity.clone();
            samples_total += gpu.samples.len() as u64;
        }
        drop(catalog);
        let mut cache = self.shared.cache.lock().expect("cache lock");
        for gpu in gpus.iter_mut() {
            if !gpu.samples.is_empty() {
                cache.push(&gpu.uuid, gpu.disk_ts_max_ms, std::mem::take(&mut gpu.samples));
            }
        }
        drop(cache);
        let stats = &self.shared.stats;
        stats.samples_stored.fetch_add(samples_total, Relaxed);
        stats.stored_bytes.fetch_add(bytes_total, Relaxed);
    }
}

impl Store {
    /// How long until retention is next due (at most an hour); the writer waits for a
    /// batch at most this long.
    pub fn retention_due_in(&self) -> Duration {
        let retention = &self.config.retention;
        if !retention.enabled() {
            return Duration::from_secs(3600);
        }
        let now = self.shared.retention.now_ms();
        let mut due = self.next_run_ms;
        if retention.bytes > 0 {
            due = due.min(self.next_size_check_ms);
        }
        Duration::from_millis(due.saturating_sub(now).clamp(0, HOUR_MS) as u64)
    }

    /// Runs retention if it is due: at every whole hour (and at start), and with a size
    /// cap, at most once a minute while the files exceed it. The writer calls it between
    /// batches.
    pub fn retain_if_due(&mut self) {
        let retention = self.config.retention;
        if !retention.enabled() {
            return;
        }
        let now = self.shared.retention.now_ms();
        // A clock set back by more than an hour would otherwise hold the next run.
        let hourly =
            now >= self.next_run_ms || self.next_run_ms.saturating_sub(now) > HOUR_MS + 1000;
        let mut over_cap = false;
        if retention.bytes > 0 && now >= self.next_size_check_ms {
            over_cap = self.shared.stats.stored_bytes.load(Relaxed) > retention.bytes;
            if !over_cap {
                self.next_size_check_ms = now + SIZE_RUN_INTERVAL_MS;
            }
        }
        if hourly || over_cap {
            self.run_retention(now);
        }
    }

    /// One retention run at `now_ms` (see [`super::retention`]): forgets the expired files
    /// in the catalog, closes their handles, and hands their paths to the deleter thread.
    pub fn run_retention(&mut self, now_ms: i64) {
        let started = Instant::now();
        self.next_run_ms = hour_of(now_ms) + HOUR_MS + 100;
        self.next_size_check_ms = now_ms + SIZE_RUN_INTERVAL_MS;
        let shared = Arc::clone(&self.shared);
        let stored_bytes = shared.stats.stored_bytes.load(Relaxed);
        let previous = shared.retention.expired_before_ms.load(Relaxed);
        let mut catalog = shared.catalog.write().expect("catalog lock");
        let bound =
            retention::bound(&catalog, &self.config.retention, now_ms, previous, stored_bytes);
        let mut job = Job {
            dirs: Vec::new(),
            files: Vec::new(),
            segments: 0,
            samples: 0,
            bytes: 0,
            gpus: 0,
            bound_ms: bound,
            kept_bytes: 0,
            started,
        };
        let mut emptied: Vec<Arc<str>> = Vec::new();
        for (uuid, gpu) in catalog.gpus.iter_mut() {
            // Keys are in time order (the legacy file first), so the expired files are the
            // first ones.
            let doomed: Vec<SegmentKey> = gpu
                .segments
                .iter()
                .take_while(|(k, s)| **k == SegmentKey::Legacy || s.end_ms(**k) <= bound)
                .filter(|(k, s)| s.end_ms(**k) <= bound)
                .map(|(k, _)| *k)
                .collect();
            for key in doomed {
                let segment = gpu.remove_segment(key).expect("listed");
                job.segments += 1;
                job.samples += segment.samples;
                job.bytes += segment.file_len;
                if key == SegmentKey::Legacy {
                    job.files.push(gpu_path(&self.gpus_dir, uuid));
                }
            }
            gpu.latest.retain(|_, l| l.ts_ms >= bound);
            if gpu.segments.is_empty() {
                emptied.push(Arc::clone(uuid));
            }
        }
        for uuid in &emptied {
            catalog.gpus.remove(uuid);
        }
        shared.retention.expired_before_ms.fetch_max(bound, Relaxed);
        drop(catalog);
        if !emptied.is_empty() {
            let mut cache = shared.cache.lock().expect("cache lock");
            for uuid in &emptied {
                cache.forget(uuid);
            }
        }
        job.gpus = emptied.len() as u64;
        job.kept_bytes = stored_bytes.saturating_sub(job.bytes);
        shared.stats.stored_bytes.fetch_sub(job.bytes, Relaxed);
        let hours: Vec<i64> =
            self.hours_on_disk.iter().copied().take_while(|h| h + HOUR_MS <= bound).collect();
        for hour in &hours {
            self.hours_on_disk.remove(hour);
            job.dirs.push(self.gpus_dir.join(hour_dir_name(*hour)));
        }
        // Close the handles of deleted files: an open one would keep its blocks allocated.
        self.handles.files.retain(|(_, hour), _| hour + HOUR_MS > bound);
        self.deleter.submit(job);
    }

    /// Waits until the files of every retention run so far are deleted (for tests).
    pub fn wait_for_deletions(&self) {
        self.deleter.flush();
    }
}

/// The identity after a record: its stated attributes win, unstated ones stay.
fn merge_identity(known: &GpuIdentity, stated: &GpuIdentity) -> GpuIdentity {
    GpuIdentity {
        hostname: stated.hostname.clone().or_else(|| known.hostname.clone()),
        gpu_index: stated.gpu_index.or(known.gpu_index),
        device: stated.device.clone().or_else(|| known.device.clone()),
        model: stated.model.clone().or_else(|| known.model.clone()),
    }
}

fn nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Opens (creating if needed) a GPU file for writing, never through a symbolic link.
fn open_for_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create(true).truncate(false).custom_flags(nofollow()).open(path)
}

/// Opens a GPU file for reading, never through a symbolic link.
///
/// # Errors
/// I/O errors (`ELOOP` for a link).
pub fn open_for_read(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).custom_flags(nofollow()).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::query::{self, Query};
    use std::collections::BTreeMap;
    use std::io::Write;

    /// 2026-11-29T08:00:00Z, a whole hour.
    const T: i64 = 1_795_939_200_000;
    const H: i64 = HOUR_MS;
    const MIN: i64 = 60_000;

    fn parsed(uuid: &str, partition: u32, offset: u64, ts_ms: i64) -> Parsed {
        Parsed {
            partition,
            offset,
            uuid: uuid.into(),
            identity: GpuIdentity { hostname: Some("h".into()), ..GpuIdentity::default() },
            ts_ms,
            metrics: vec![("A".into(), 1.0), ("B".into(), 2.0)],
            extra: None,
        }
    }

    fn open(dir: &Path, gpus_max: usize) -> (Store, Arc<Shared>) {
        let shared = Arc::new(Shared::new(dir, 100, 1000));
        let config = StoreConfig {
            data_dir: dir.to_path_buf(),
            open_files_max: 2,
            gpus_max,
            retention: RetentionConfig::default(),
        };
        (Store::open(config, Arc::clone(&shared)).unwrap(), shared)
    }

    /// A store with `retention` whose clock stands at `now_ms`.
    fn open_at(dir: &Path, hours: u64, bytes: u64, now_ms: i64) -> (Store, Arc<Shared>) {
        let shared = Arc::new(Shared::new(dir, 4, 1000));
        shared.retention.set_now_ms(Some(now_ms));
        let config = StoreConfig {
            data_dir: dir.to_path_buf(),
            open_files_max: 2,
            gpus_max: 100_000,
            retention: RetentionConfig { hours, bytes },
        };
        (Store::open(config, Arc::clone(&shared)).unwrap(), shared)
    }

    fn samples_of(shared: &Shared, uuid: &str) -> u64 {
        shared.catalog.read().unwrap().gpus.get(uuid).map_or(0, |g| g.samples)
    }

    fn hour_path(dir: &Path, uuid: &str, ts_ms: i64) -> PathBuf {
        segment_path(&dir.join("gpus"), uuid, SegmentKey::Hour(hour_of(ts_ms)))
    }

    /// Every line on disk: (hour directory or "" for a legacy file, GPU, partition, offset,
    /// metric, time).
    fn lines_on_disk(dir: &Path) -> Vec<(String, String, u32, u64, String, i64)> {
        let mut out = Vec::new();
        let mut read = |sub: &str, path: &Path| {
            let gpu = path.file_stem().unwrap().to_string_lossy().into_owned();
            for text in fs::read_to_string(path).unwrap().lines() {
                let line = Line::parse(text.as_bytes()).expect("every line on disk parses");
                let metric = line.metric.to_string();
                out.push((sub.to_string(), gpu.clone(), line.p, line.o, metric, line.ts_ms));
            }
        };
        for entry in fs::read_dir(dir.join("gpus")).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                let name = entry.file_name().to_string_lossy().into_owned();
                for file in fs::read_dir(entry.path()).unwrap() {
                    read(&name, &file.unwrap().path());
                }
            } else {
                read("", &entry.path());
            }
        }
        out.sort();
        out
    }

    fn hour_dirs(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir.join("gpus"))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Every sample time the API returns for `uuid` (all time, from the files; and from the
    /// cache when it answers, which must agree).
    fn served(shared: &Shared, uuid: &str) -> Vec<i64> {
        let times = served_from_files(shared, uuid);
        if let Some(cached) = query::from_cache(shared, uuid, &everything()) {
            let cached: Vec<i64> = cached.samples.iter().map(|s| s.ts_ms).collect();
            assert_eq!(cached, times, "the cache and the files agree");
        }
        times
    }

    fn everything() -> Query {
        Query {
            start_ms: i64::MIN,
            end_ms: i64::MAX,
            metrics: Vec::new(),
            limit: query::LIMIT_MAX,
            order: query::Order::Asc,
            cursor: None,
        }
    }

    fn served_from_files(shared: &Shared, uuid: &str) -> Vec<i64> {
        match query::from_file(shared, uuid, &everything()).unwrap() {
            Some(page) => page.samples.iter().map(|s| s.ts_ms).collect(),
            None => Vec::new(),
        }
    }

    /// Goal: a redelivery after a restart stores nothing twice, and a torn or
    /// unacknowledged tail is cut. Method: store, close, append a torn line and a whole
    /// line of a record the checkpoint does not hold, reopen, store the batch again.
    #[test]
    fn reopening_cuts_the_tail_and_redeliveries_are_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let batch: Vec<Parsed> =
            (0..10).map(|o| parsed(if o % 2 == 0 { "g0" } else { "g1" }, 0, o, o as i64)).collect();
        let (mut store, shared) = open(dir.path(), 10);
        assert!(store.write_batch(&batch).unwrap().iter().all(|v| *v == Verdict::Stored));
        let len_before = shared.catalog.read().unwrap().gpus["g0"].bytes;
        drop(store);

        let path = hour_path(dir.path(), "g0", 0);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        let mut extra = Vec::new();
        encode_line(&mut extra, 99, "A", 1.0, 0, 500, &encode_tail(None, None));
        file.write_all(&extra).unwrap();
        file.write_all(b"{\"ts\":\"2026-11-29T09:1").unwrap();
        drop(file);

        let (mut store, shared) = open(dir.path(), 10);
        assert_eq!(fs::metadata(&path).unwrap().len(), len_before, "tail cut");
        assert_eq!((samples_of(&shared, "g0"), samples_of(&shared, "g1")), (10, 10));
        assert_eq!(
            shared.catalog.read().unwrap().gpus["g0"].identity.hostname.as_deref(),
            Some("h")
        );
        let again = store.write_batch(&batch).unwrap();
        assert!(again.iter().all(|v| *v == Verdict::Duplicate), "{again:?}");
        assert_eq!(fs::metadata(&path).unwrap().len(), len_before);
        let next = [parsed("g0", 0, 500, 99)];
        assert_eq!(
            store.write_batch(&next).unwrap(),
            [Verdict::Stored],
            "the cut record comes again"
        );
        assert_eq!(samples_of(&shared, "g0"), 12);
    }

    /// Goal: without a checkpoint every whole line is kept and the checkpoint is rebuilt
    /// from the lines; an unreadable line in the middle is skipped, not fatal.
    #[test]
    fn a_lost_checkpoint_is_rebuilt_from_the_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path(), 10);
        store.write_batch(&[parsed("g", 1, 7, 5)]).unwrap();
        drop(store);
        let path = hour_path(dir.path(), "g", 5);
        let mut text = fs::read(&path).unwrap();
        text.splice(0..0, b"garbage line\n".iter().copied());
        fs::write(&path, &text).unwrap();
        fs::remove_file(dir.path().join("checkpoint.json")).unwrap();
        let (mut store, shared) = open(dir.path(), 10);
        assert_eq!(samples_of(&shared, "g"), 2);
        assert_eq!(shared.catalog.read().unwrap().gpus["g"].bytes, text.len() as u64);
        assert_eq!(store.write_batch(&[parsed("g", 1, 7, 5)]).unwrap(), [Verdict::Duplicate]);
    }

    /// Goal: a planted link is never followed (in an hour directory or where a legacy file
    /// would be), and GPUs beyond the cap are refused.
    #[test]
    fn links_and_gpus_beyond_the_cap_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let hour = dir.path().join("gpus").join(hour_dir_name(0));
        fs::create_dir_all(&hour).unwrap();
        let target = dir.path().join("target");
        fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, hour.join("evil.jsonl")).unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("gpus/old.jsonl")).unwrap();
        let (mut store, shared) = open(dir.path(), 2);
        let verdicts = store
            .write_batch(&[
                parsed("evil", 0, 0, 1),
                parsed("a", 0, 1, 1),
                parsed("b", 0, 2, 1),
                parsed("c", 0, 3, 1),
            ])
            .unwrap();
        let reasons: Vec<Option<BadReason>> = verdicts
            .iter()
            .map(|v| match v {
                Verdict::Refused(bad) => Some(bad.reason),
                _ => None,
            })
            .collect();
        assert_eq!(reasons, [Some(BadReason::BadGpuId), None, None, Some(BadReason::GpuLimit)]);
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        assert!(fs::symlink_metadata(hour.join("evil.jsonl")).unwrap().file_type().is_symlink());
        assert!(!shared.catalog.read().unwrap().gpus.contains_key("old"), "a link is not read");
    }

    /// Goal: a full disk fails the batch cleanly (files cut back, checkpoint unchanged, no
    /// panic) and the same batch stores once space is back. Method: a 64 KiB tmpfs (needs
    /// root and permission to mount; elsewhere the test says why it did not run).
    #[test]
    fn a_full_disk_fails_the_batch_and_the_retry_stores_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status();
        if !mounted.is_ok_and(|s| s.success()) {
            eprintln!("skipping the disk-full test: cannot mount a tmpfs here (needs root)");
            return;
        }
        let result = std::panic::catch_unwind(|| {
            fs::write(dir.path().join("filler"), vec![0u8; 24 * 1024]).unwrap();
            let (mut store, shared) = open(dir.path(), 10);
            let batch_of = |i: u64| -> Vec<Parsed> {
                (0..10)
                    .map(|k| parsed(&format!("g{}", k % 3), 0, i * 10 + k, (i * 10 + k) as i64))
                    .collect()
            };
            let mut i = 0;
            let failed = loop {
                let batch = batch_of(i);
                if store.write_batch(&batch).is_err() {
                    break batch;
                }
                i += 1;
                assert!(i < 10_000, "a 64 KiB filesystem never filled");
            };
            let stored: u64 = shared.catalog.read().unwrap().gpus.values().map(|g| g.samples).sum();
            assert_eq!(stored, i * 20, "nothing of the failed batch is visible");
            for (uuid, gpu) in &shared.catalog.read().unwrap().gpus {
                for (key, segment) in &gpu.segments {
                    let len =
                        fs::metadata(segment_path(store.gpus_dir(), uuid, *key)).unwrap().len();
                    assert_eq!(len, segment.file_len, "{uuid} cut back to its indexed length");
                }
            }
            assert!(!store.checkpoint.contains(0, i * 10), "the failed batch is not checkpointed");
            fs::remove_file(dir.path().join("filler")).unwrap();
            assert!(store.write_batch(&failed).unwrap().iter().all(|v| *v == Verdict::Stored));
            drop(store);
            let (_, shared) = open(dir.path(), 10);
            let samples: u64 =
                shared.catalog.read().unwrap().gpus.values().map(|g| g.samples).sum();
            assert_eq!(samples, (i + 1) * 20, "every stored record once after a reopen");
        });
        let _ = std::process::Command::new("umount").arg(dir.path()).status();
        result.unwrap();
    }

    #[test]
    fn a_second_store_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, shared) = open(dir.path(), 10);
        let config = StoreConfig {
            data_dir: dir.path().to_path_buf(),
            open_files_max: 2,
            gpus_max: 10,
            retention: RetentionConfig::default(),
        };
        assert!(Store::open(config, shared).is_err());
    }

    #[test]
    fn hour_directories_are_named_by_their_utc_hour() {
        assert_eq!(hour_dir_name(T), "2026-11-29T08");
        assert_eq!(parse_hour_dir("2026-11-29T08"), Some(T));
        assert_eq!(hour_dir_name(-1), "1969-12-31T23");
        for junk in ["2026-11-29T24", "2026-11-29", "2026-11-29T08:00", "GPU-1", "2026-13-01T00"] {
            assert_eq!(parse_hour_dir(junk), None, "{junk}");
        }
    }

    /// Goal: a sample past the retention is not returned from the moment it is, and its
    /// hour's file is deleted at the next run; newer samples stay; a GPU left without files
    /// leaves the catalog; a record already expired on arrival is acknowledged, not stored.
    /// Method: a store with 2 hours of retention on a fixed clock; samples over 4 hours;
    /// move the clock, query, run, look at the disk, the catalog and the counters.
    #[test]
    fn expired_samples_leave_the_api_at_once_and_the_disk_at_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, shared) = open_at(dir.path(), 2, 0, T);
        let mut batch = vec![parsed("old", 0, 0, T + 10 * MIN)];
        batch.extend((0..4).map(|h| parsed("g", 1, h as u64, T + h * H + 10 * MIN)));
        assert!(store.write_batch(&batch).unwrap().iter().all(|v| *v == Verdict::Stored));
        assert_eq!(hour_dirs(dir.path()).len(), 4);
        let old_bytes = shared.catalog.read().unwrap().gpus["old"].bytes;
        let g_first_hour =
            shared.catalog.read().unwrap().gpus["g"].segments[&SegmentKey::Hour(T)].file_len;

        // 3.5 hours later everything before T + 1h30 is past the retention.
        let now = T + 3 * H + 30 * MIN;
        shared.retention.set_now_ms(Some(now));
        assert_eq!(
            served(&shared, "g"),
            [T + 2 * H + 10 * MIN; 2]
                .into_iter()
                .chain([T + 3 * H + 10 * MIN; 2])
                .collect::<Vec<_>>(),
            "hidden before any run"
        );
        assert!(served(&shared, "old").is_empty());
        assert_eq!(lines_on_disk(dir.path()).len(), 10, "nothing deleted yet");

        store.retain_if_due();
        store.wait_for_deletions();
        assert_eq!(
            hour_dirs(dir.path()),
            ["2026-11-29T09", "2026-11-29T10", "2026-11-29T11"],
            "the hour of T ended before the limit and is gone; T + 1h ends after it"
        );
        assert!(lines_on_disk(dir.path()).iter().all(|l| l.5 >= T + H));
        let catalog = shared.catalog.read().unwrap();
        assert!(!catalog.gpus.contains_key("old"), "no samples left: gone from the list");
        let g = &catalog.gpus["g"];
        assert_eq!((g.samples, g.first_ms), (6, Some(T + H + 10 * MIN)));
        drop(catalog);
        assert_eq!(served(&shared, "g").len(), 4, "T + 1h10 is on disk but hidden");
        let stats = &shared.stats;
        assert_eq!(stats.retention_runs.load(Relaxed), 2, "at open, and at the hour");
        assert_eq!(stats.retention_samples_removed.load(Relaxed), 4);
        assert_eq!(stats.retention_files_removed.load(Relaxed), 2);
        assert_eq!(stats.retention_bytes_removed.load(Relaxed), old_bytes + g_first_hour);
        assert_eq!(stats.retention_gpus_removed.load(Relaxed), 1);
        assert!(stats.retention_last_run_ms.load(Relaxed) > 0);
        let on_disk: u64 = walk_bytes(&dir.path().join("gpus"));
        assert_eq!(stats.stored_bytes.load(Relaxed), on_disk);
        let page = crate::collector::metrics::render(&shared);
        assert!(!page.contains("UUID=\"old\""), "{page}");
        assert!(page.contains("collector_retention_samples_removed_total 4\n"), "{page}");

        let late = [parsed("g", 1, 10, T + H), parsed("g", 1, 11, now)];
        assert_eq!(store.write_batch(&late).unwrap(), [Verdict::Expired, Verdict::Stored]);
        assert_eq!(store.write_batch(&late[..1]).unwrap(), [Verdict::Duplicate]);
        assert!(!lines_on_disk(dir.path()).iter().any(|l| l.3 == 10), "never written");
        assert!(hour_dirs(dir.path()).len() == 3, "no hour directory made again");
    }

    fn walk_bytes(path: &Path) -> u64 {
        let mut total = 0;
        for entry in fs::read_dir(path).unwrap() {
            let entry = entry.unwrap();
            total += if entry.file_type().unwrap().is_dir() {
                walk_bytes(&entry.path())
            } else {
                entry.metadata().unwrap().len()
            };
        }
        total
    }

    /// Goal: 0 hours and 0 bytes keep everything, however old.
    #[test]
    fn zero_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, shared) = open_at(dir.path(), 0, 0, T + 10_000 * H);
        let verdicts = store.write_batch(&[parsed("g", 0, 0, 0), parsed("g", 0, 1, T)]).unwrap();
        assert_eq!(verdicts, [Verdict::Stored, Verdict::Stored]);
        store.retain_if_due();
        store.wait_for_deletions();
        assert_eq!(served(&shared, "g").len(), 4);
        assert_eq!(lines_on_disk(dir.path()).len(), 4);
        assert_eq!(shared.stats.retention_runs.load(Relaxed), 0, "never runs");
        assert_eq!(store.retention_due_in(), Duration::from_secs(3600));
    }

    /// Goal: with a size cap the oldest hours go first until the files fit, but never the
    /// current hour.
    #[test]
    fn a_size_cap_deletes_the_oldest_hours_first() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, shared) = open_at(dir.path(), 0, 0, T);
        let batch: Vec<Parsed> = (0..4).map(|h| parsed("g", 0, h as u64, T + h * H)).collect();
        store.write_batch(&batch).unwrap();
        let per_hour = shared.catalog.read().unwrap().gpus["g"].bytes / 4;
        drop(store);

        let now = T + 3 * H + MIN;
        let (mut store, shared) = open_at(dir.path(), 0, 2 * per_hour + 1, now);
        store.wait_for_deletions();
        assert_eq!(hour_dirs(dir.path()), ["2026-11-29T10", "2026-11-29T11"]);
        assert_eq!(shared.stats.stored_bytes.load(Relaxed), 2 * per_hour);
        assert_eq!(shared.retention.expired_before_ms.load(Relaxed), T + 2 * H);
        assert_eq!(store.write_batch(&[parsed("g", 0, 9, T + H)]).unwrap(), [Verdict::Expired]);
        drop(store);

        let (store, _) = open_at(dir.path(), 0, 1, now);
        store.wait_for_deletions();
        assert_eq!(hour_dirs(dir.path()), ["2026-11-29T11"], "the current hour stays");
    }

    /// Goal: retention running between batches while samples keep coming (some already
    /// too old, some late into older hours) and queries keep reading never loses a sample
    /// that is still within the retention, never serves one that is not, and leaves a
    /// directory a restart reads back the same. Method: 6 hours in 5-minute steps of a
    /// fixed clock, a batch per step with times up to 90 minutes back, retention of 1
    /// hour, a thread querying all the while; then compare disk, API and a reopened store
    /// with what was stored.
    #[test]
    fn retention_while_ingesting_keeps_everything_newer() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, shared) = open_at(dir.path(), 1, 0, T);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut queries = 0u64;
                while !stop.load(Relaxed) {
                    for uuid in ["g0", "g1", "g2"] {
                        let from = shared.visible_from_ms();
                        let times = served_from_files(&shared, uuid);
                        assert!(times.iter().all(|t| *t >= from), "an expired sample served");
                        queries += 1;
                    }
                }
                queries
            })
        };
        let mut stored: BTreeMap<(u32, u64), i64> = BTreeMap::new();
        let mut offset = 0u64;
        let mut seed = 7u64;
        for step in 0..72 {
            let now = T + step * 5 * MIN;
            shared.retention.set_now_ms(Some(now));
            let batch: Vec<Parsed> = (0..30)
                .map(|i| {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    let back = (seed >> 33) as i64 % (90 * MIN);
                    offset += 1;
                    parsed(&format!("g{}", i % 3), 0, offset, now - back)
                })
                .collect();
            for (record, verdict) in batch.iter().zip(store.write_batch(&batch).unwrap()) {
                match verdict {
                    Verdict::Stored => {
                        stored.insert((record.partition, record.offset), record.ts_ms);
                    }
                    Verdict::Expired => assert!(record.ts_ms < shared.visible_from_ms()),
                    other => panic!("{other:?}"),
                }
            }
            store.retain_if_due();
        }
        stop.store(true, Relaxed);
        assert!(reader.join().unwrap() > 0);
        store.wait_for_deletions();
        let limit = shared.visible_from_ms();
        assert!(shared.stats.retention_runs.load(Relaxed) >= 6);

        let wanted: Vec<(u64, i64)> =
            stored.iter().filter(|(_, ts)| **ts >= limit).map(|((_, o), ts)| (*o, *ts)).collect();
        let disk = lines_on_disk(dir.path());
        let on_disk: BTreeMap<u64, i64> = disk.iter().map(|l| (l.3, l.5)).collect();
        assert_eq!(disk.len(), 2 * on_disk.len(), "each record's 2 samples, once");
        for (o, ts) in &wanted {
            assert_eq!(on_disk.get(o), Some(ts), "record {o} within the retention is on disk");
        }
        assert!(disk.iter().all(|l| l.5 >= hour_of(limit)), "nothing of a deleted hour left");
        assert!(disk.iter().all(|l| stored.contains_key(&(l.2, l.3))), "only stored records");
        let mut api: Vec<i64> =
            ["g0", "g1", "g2"].iter().flat_map(|u| served(&shared, u)).collect();
        api.sort();
        let mut expected: Vec<i64> = wanted.iter().flat_map(|(_, ts)| [*ts, *ts]).collect();
        expected.sort();
        assert_eq!(api, expected, "the API serves exactly the samples within the retention");

        let counts: Vec<u64> = ["g0", "g1", "g2"].iter().map(|u| samples_of(&shared, u)).collect();
        drop(store);
        let (_store, shared) = open_at(dir.path(), 1, 0, T + 71 * 5 * MIN);
        let again: Vec<u64> = ["g0", "g1", "g2"].iter().map(|u| samples_of(&shared, u)).collect();
        assert_eq!(again, counts, "a restart reads back the same");
    }

    /// Goal: a crash at any point of a run leaves a directory the restart handles: files
    /// of expired hours partly deleted, an hour directory emptied but not removed, and an
    /// unacknowledged tail in the current hour's file. Method: build that state by hand
    /// (what a kill in the middle of the deleter's work leaves), reopen, and check disk,
    /// API and redeliveries.
    #[test]
    fn a_crash_in_the_middle_of_a_run_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open_at(dir.path(), 2, 0, T);
        let mut batch = Vec::new();
        for h in 0..5 {
            for g in 0..3 {
                let offset = (h * 3 + g) as u64;
                batch.push(parsed(&format!("g{g}"), 0, offset, T + h * H + MIN));
            }
        }
        store.write_batch(&batch).unwrap();
        drop(store);
        // The run at T + 4h30 deletes the hours of T and T + 1h; the crash came after one
        // file of T's hour was unlinked and all of T + 1h's, before their directories went.
        fs::remove_file(hour_path(dir.path(), "g0", T)).unwrap();
        for g in 0..3 {
            fs::remove_file(hour_path(dir.path(), &format!("g{g}"), T + H)).unwrap();
        }
        // And a batch was being written into the current hour, never checkpointed.
        let current = hour_path(dir.path(), "g1", T + 4 * H);
        let mut tail = Vec::new();
        encode_line(&mut tail, T + 4 * H + 2 * MIN, "A", 1.0, 0, 99, &encode_tail(None, None));
        OpenOptions::new().append(true).open(&current).unwrap().write_all(&tail).unwrap();

        let now = T + 4 * H + 30 * MIN;
        let (mut store, shared) = open_at(dir.path(), 2, 0, now);
        store.wait_for_deletions();
        assert_eq!(hour_dirs(dir.path()), ["2026-11-29T10", "2026-11-29T11", "2026-11-29T12"]);
        assert!(lines_on_disk(dir.path()).iter().all(|l| l.3 != 99), "the tail was cut");
        assert_eq!(samples_of(&shared, "g1"), 6, "3 hours of 2 samples");
        assert_eq!(
            served(&shared, "g1"),
            [T + 3 * H + MIN, T + 3 * H + MIN, T + 4 * H + MIN, T + 4 * H + MIN]
        );
        let verdicts = store.write_batch(&batch).unwrap();
        assert!(verdicts.iter().all(|v| *v == Verdict::Duplicate), "deleted or kept, stored once");
        let redelivered = [parsed("g1", 0, 99, T + 4 * H + 2 * MIN)];
        assert_eq!(store.write_batch(&redelivered).unwrap(), [Verdict::Stored]);
        assert_eq!(samples_of(&shared, "g1"), 8);
    }

    /// Measures a run at scale (not a check; `cargo test --release -p mq-tools --lib
    /// retention_run_time -- --ignored --nocapture`): 1,000 GPUs × 24 hours × 100 samples
    /// (24,000 files, 2.4 million samples), then a run that deletes 12 hours. Prints the
    /// time the catalog is locked (what queries and the writer can wait for) and the time
    /// until the last unlink (on the deleter thread).
    #[test]
    #[ignore]
    fn retention_run_time() {
        let dir =
            tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or("/var/tmp".into())).unwrap();
        let (mut store, shared) = open_at(dir.path(), 0, 0, T + 24 * H);
        let started = Instant::now();
        let mut offset = 0u64;
        for h in 0..24 {
            for part in 0..10 {
                let batch: Vec<Parsed> = (0..5000)
                    .map(|i| {
                        offset += 1;
                        let gpu = (part * 5000 + i) % 1000;
                        let ts = T + h * H + (part * 5 + i / 1000) * 1000;
                        parsed(&format!("GPU-{gpu:04}"), 0, offset, ts)
                    })
                    .collect();
                store.write_batch(&batch).unwrap();
            }
        }
        let stored = shared.stats.stored_bytes.load(Relaxed);
        eprintln!(
            "stored {} samples, {} in {:?}",
            shared.stats.samples_stored.load(Relaxed),
            retention::human_bytes(stored),
            started.elapsed()
        );
        drop(store);
        let started = Instant::now();
        let (store, shared) = open_at(dir.path(), 12, 0, T + 24 * H + MIN);
        let opened = started.elapsed();
        store.wait_for_deletions();
        let removed = shared.stats.retention_samples_removed.load(Relaxed);
        let files = shared.stats.retention_files_removed.load(Relaxed);
        let run_us = shared.stats.retention_last_run_us.load(Relaxed);
        eprintln!("open (scan + run) {opened:?}; run removed {files} files, {removed} samples");
        eprintln!("run, catalog update to last unlink: {:.1} ms", run_us as f64 / 1000.0);
        drop(store);
        let (mut store, _) = open_at(dir.path(), 0, 0, T + 24 * H + MIN);
        let started = Instant::now();
        store.config.retention = RetentionConfig { hours: 6, bytes: 0 };
        store.run_retention(T + 24 * H + MIN);
        let locked = started.elapsed();
        store.wait_for_deletions();
        eprintln!(
            "second run (6 more hours, 6,000 files): {:.2} ms in the writer (catalog locked), \
             {:.1} ms to the last unlink",
            locked.as_secs_f64() * 1000.0,
            started.elapsed().as_secs_f64() * 1000.0
        );
        assert_eq!(removed, 1_200_000);
    }

    /// Goal: a file of the layout before hours (`gpus/<uuid>.jsonl`) is served as the GPU's
    /// oldest file, never written to, and deleted whole once its newest sample expired.
    #[test]
    fn a_legacy_file_is_read_and_deleted_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open_at(dir.path(), 0, 0, T);
        store.write_batch(&[parsed("g", 0, 0, T), parsed("g", 0, 1, T + 30 * MIN)]).unwrap();
        drop(store);
        let legacy = dir.path().join("gpus/g.jsonl");
        fs::rename(hour_path(dir.path(), "g", T), &legacy).unwrap();
        fs::remove_dir(dir.path().join("gpus").join(hour_dir_name(T))).unwrap();

        let (mut store, shared) = open_at(dir.path(), 3, 0, T + 2 * H);
        assert_eq!(served(&shared, "g").len(), 4);
        assert_eq!(store.write_batch(&[parsed("g", 0, 2, T + 2 * H)]).unwrap(), [Verdict::Stored]);
        assert_eq!(fs::read_to_string(&legacy).unwrap().lines().count(), 4, "not written to");
        assert!(hour_path(dir.path(), "g", T + 2 * H).exists());
        assert_eq!(served(&shared, "g").len(), 6);

        store.run_retention(T + 3 * H + 15 * MIN);
        store.wait_for_deletions();
        assert!(legacy.exists(), "its sample at T + 30 min is still within 3 hours");
        store.run_retention(T + 3 * H + 31 * MIN);
        store.wait_for_deletions();
        assert!(!legacy.exists());
        assert_eq!(samples_of(&shared, "g"), 2);
    }
}
