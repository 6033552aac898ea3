//! The storage writer: appends samples to `<data_dir>/gpus/<uuid>.jsonl`, makes them
//! durable, records them in the checkpoint, and only then lets them be seen (catalog and
//! cache) and acknowledged.
//!
//! A batch is stored in four steps, so that an acknowledged record is always on disk
//! exactly once:
//!
//! 1. Encode: records already in the checkpoint are duplicates (a redelivery) and are
//!    skipped; the others become lines, grouped per GPU.
//! 2. Write each GPU's lines at the end of its file (positioned writes at the indexed
//!    length, so a failed earlier write leaves nothing in the way).
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
//! so coming again) and a torn last line are cut off; unreadable lines in the middle are
//! skipped with a warning. The scan rebuilds the catalog and its time index. Without a
//! checkpoint (first start, or an unreadable one) every complete line is kept and the
//! checkpoint is rebuilt from the lines' (partition, offset).
//!
//! **Paths.** A file is named only from an id that passed [`valid_gpu_id`], joined onto
//! the `gpus` directory and checked to stay in it, and opened with `O_NOFOLLOW`, so a
//! planted symbolic link is refused, not followed.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use log::{info, warn};

use super::catalog::{Catalog, GpuState};
use super::checkpoint::Checkpoint;
use super::line::{encode_line, encode_tail, Line, Sample};
use super::record::{Bad, BadReason, GpuIdentity, Parsed};
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
}

/// What became of one record of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Its samples are stored.
    Stored,
    /// It was stored before (a redelivery).
    Duplicate,
    /// Refused: to the dead-letter topic.
    Refused(Bad),
}

/// The path of `uuid`'s file in `gpus_dir`.
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

/// Open append handles, least recently used closed first.
#[derive(Debug)]
struct Handles {
    files: HashMap<Arc<str>, (File, u64)>,
    tick: u64,
    max: usize,
}

impl Handles {
    fn take(&mut self, uuid: &str) -> Option<File> {
        self.files.remove(uuid).map(|(f, _)| f)
    }

    fn put(&mut self, uuid: Arc<str>, file: File) {
        self.tick += 1;
        self.files.insert(uuid, (file, self.tick));
        while self.files.len() > self.max {
            let oldest = self.files.iter().min_by_key(|(_, (_, t))| *t).map(|(u, _)| Arc::clone(u));
            self.files.remove(&oldest.expect("not empty"));
        }
    }
}

/// One GPU's part of a batch.
#[derive(Debug)]
struct Draft {
    uuid: Arc<str>,
    file: File,
    base_len: u64,
    buf: Vec<u8>,
    /// (length, time) of each line, in order.
    lines: Vec<(u32, i64)>,
    samples: Vec<Sample>,
    identity: GpuIdentity,
    disk_ts_max_ms: Option<i64>,
    /// Whether the GPU is new (counts against `gpus_max`).
    is_new: bool,
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
    /// Holds the data-directory lock while the store lives.
    _lock: File,
}

impl Store {
    /// Locks the data directory, loads the checkpoint and scans the files into the
    /// catalog (see the module docs).
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
        let handles = Handles { files: HashMap::new(), tick: 0, max: config.open_files_max.max(1) };
        let mut store = Store {
            checkpoint: loaded.clone().unwrap_or_else(Checkpoint::new),
            config,
            gpus_dir,
            dir,
            handles,
            metric_names: HashSet::new(),
            shared,
            dir_sync_pending: false,
            _lock: lock,
        };
        store.recover(loaded.as_ref())?;
        store.checkpoint.save(&store.config.data_dir)?;
        Ok(store)
    }

    /// The GPUs directory.
    pub fn gpus_dir(&self) -> &Path {
        &self.gpus_dir
    }

    fn recover(&mut self, loaded: Option<&Checkpoint>) -> io::Result<()> {
        let started = Instant::now();
        let mut catalog = Catalog::default();
        let mut entries: Vec<_> = fs::read_dir(&self.gpus_dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            let uuid = name.to_str().and_then(|n| n.strip_suffix(".jsonl"));
            let Some(uuid) = uuid.filter(|u| valid_gpu_id(u)) else {
                warn!("ignoring {:?} in {}: not <gpu id>.jsonl", name, self.gpus_dir.display());
                continue;
            };
            if !entry.file_type()?.is_file() {
                warn!("ignoring {:?}: not a regular file (a link?); its GPU is refused", name);
                continue;
            }
            let state = self.scan_file(&entry.path(), loaded)?;
            catalog.gpus.insert(Arc::from(uuid), state);
        }
        let samples: u64 = catalog.gpus.values().map(|g| g.samples).sum();
        info!(
            "storage: {} GPUs, {samples} samples in {} ({} ms); checkpoint {}",
            catalog.gpus.len(),
            self.gpus_dir.display(),
            started.elapsed().as_millis(),
            self.checkpoint.describe()
        );
        *self.shared.catalog.write().expect("catalog lock") = catalog;
        Ok(())
    }

    /// Scans one file into a [`GpuState`], cutting what follows the last line it may keep.
    fn scan_file(&mut self, path: &Path, loaded: Option<&Checkpoint>) -> io::Result<GpuState> {
        let file = OpenOptions::new().read(true).write(true).custom_flags(nofollow()).open(path)?;
        let file_len = file.metadata()?.len();
        let mut reader = BufReader::with_capacity(1 << 20, &file);
        let mut state = GpuState::default();
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
            state.file_len = pos;
            state.add_line(pos, n, line.ts_ms);
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
        state.file_len = keep_len;
        Ok(state)
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
        let mut drafts = self.encode(batch, &mut verdicts)?;
        if drafts.is_empty() {
            return Ok(verdicts);
        }
        let before = self.checkpoint.clone();
        if let Err(e) = self.make_durable(batch, &verdicts, &mut drafts) {
            warn!("storing a batch failed: {e}; it will be delivered again");
            if self.dir_sync_pending {
                // Data and checkpoint are synced and in place; only the directory sync
                // failed. Keep the batch (its redelivery is a duplicate) but do not
                // acknowledge it until the directory syncs.
                self.publish(&mut drafts);
                self.return_handles(drafts);
                return Err(e);
            }
            self.checkpoint = before;
            for draft in &drafts {
                if let Err(e) = draft.file.set_len(draft.base_len) {
                    warn!("cannot cut {} back after a failed write: {e}", draft.uuid);
                }
            }
            self.return_handles(drafts);
            return Err(e);
        }
        self.publish(&mut drafts);
        self.return_handles(drafts);
        Ok(verdicts)
    }

    fn make_durable(
        &mut self,
        batch: &[Parsed],
        verdicts: &[Verdict],
        drafts: &mut [Draft],
    ) -> io::Result<()> {
        for draft in drafts.iter() {
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
        self.shared.stats.sync_us_total.fetch_add(sync_us, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn return_handles(&mut self, drafts: Vec<Draft>) {
        for draft in drafts {
            self.handles.put(draft.uuid, draft.file);
        }
    }
}

impl Store {
    /// Step 1: verdicts for every record and the lines of the stored ones, per GPU.
    fn encode(&mut self, batch: &[Parsed], verdicts: &mut Vec<Verdict>) -> io::Result<Vec<Draft>> {
        let shared = Arc::clone(&self.shared);
        let catalog = shared.catalog.read().expect("catalog lock");
        let mut drafts: Vec<Draft> = Vec::new();
        let mut by_gpu: HashMap<&str, usize> = HashMap::new();
        let mut seen_in_batch: HashSet<(u32, u64)> = HashSet::new();
        for record in batch {
            if self.checkpoint.contains(record.partition, record.offset)
                || !seen_in_batch.insert((record.partition, record.offset))
            {
                verdicts.push(Verdict::Duplicate);
                continue;
            }
            let slot = match by_gpu.get(record.uuid.as_str()) {
                Some(&i) => i,
                None => match self.start_draft(
                    &catalog,
                    drafts.iter().filter(|d| d.is_new).count(),
                    &record.uuid,
                )? {
                    Ok(draft) => {
                        by_gpu.insert(&record.uuid, drafts.len());
                        drafts.push(draft);
                        drafts.len() - 1
                    }
                    Err(bad) => {
                        verdicts.push(Verdict::Refused(bad));
                        continue;
                    }
                },
            };
            self.encode_record(&mut drafts[slot], record);
            verdicts.push(Verdict::Stored);
        }
        assert_eq!(verdicts.len(), batch.len());
        Ok(drafts)
    }

    /// Opens the file of a GPU for this batch, or says why its records are refused.
    fn start_draft(
        &mut self,
        catalog: &Catalog,
        new_so_far: usize,
        uuid: &str,
    ) -> io::Result<Result<Draft, Bad>> {
        let known = catalog.gpus.get_key_value(uuid);
        if known.is_none() && catalog.gpus.len() + new_so_far >= self.config.gpus_max {
            let detail = format!("GPU {uuid} would exceed --gpus-max {}", self.config.gpus_max);
            return Ok(Err(Bad { reason: BadReason::GpuLimit, detail }));
        }
        let file = match self.handles.take(uuid) {
            Some(f) => f,
            None => match open_for_append(&gpu_path(&self.gpus_dir, uuid)) {
                Ok(f) => f,
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                    let detail = format!("{uuid}.jsonl is a symbolic link; refused");
                    return Ok(Err(Bad { reason: BadReason::BadGpuId, detail }));
                }
                Err(e) => return Err(e),
            },
        };
        let (uuid, state) = match known {
            Some((u, s)) => (Arc::clone(u), Some(s)),
            None => (Arc::from(uuid), None),
        };
        Ok(Ok(Draft {
            uuid,
            file,
            base_len: state.map_or(0, |s| s.file_len),
            buf: Vec::with_capacity(4096),
            lines: Vec::new(),
            samples: Vec::new(),
            identity: state.map(|s| s.identity.clone()).unwrap_or_default(),
            disk_ts_max_ms: state.and_then(|s| s.last_ms),
            is_new: state.is_none(),
        }))
    }

    fn encode_record(&mut self, draft: &mut Draft, record: &Parsed) {
        let identity = merge_identity(&draft.identity, &record.identity);
        let first_line_of_file = draft.base_len == 0 && draft.lines.is_empty();
        let changed = identity != draft.identity || first_line_of_file;
        let mut tail = encode_tail(record.extra.as_deref(), changed.then_some(&identity));
        if changed {
            draft.identity = identity;
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
            draft.samples.push(Sample {
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
    fn publish(&mut self, drafts: &mut [Draft]) {
        let mut catalog = self.shared.catalog.write().expect("catalog lock");
        let mut samples_total = 0u64;
        for draft in drafts.iter() {
            let state = catalog.gpus.entry(Arc::clone(&draft.uuid)).or_default();
            assert_eq!(
                state.file_len, draft.base_len,
                "file {} changed under the writer",
                draft.uuid
            );
            let mut pos = draft.base_len;
            for &(len, ts_ms) in &draft.lines {
                state.add_line(pos, u64::from(len), ts_ms);
                pos += u64::from(len);
            }
            assert_eq!(pos, draft.base_len + draft.buf.len() as u64);
            for sample in &draft.samples {
                state.note_latest(sample);
            }
            state.identity = draft.identity.clone();
            samples_total += draft.samples.len() as u64;
        }
        drop(catalog);
        let mut cache = self.shared.cache.lock().expect("cache lock");
        for draft in drafts.iter_mut() {
            cache.push(&draft.uuid, draft.disk_ts_max_ms, std::mem::take(&mut draft.samples));
        }
        drop(cache);
        let stats = &self.shared.stats;
        stats.samples_stored.fetch_add(samples_total, std::sync::atomic::Ordering::Relaxed);
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
    use std::io::Write;

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
        let config = StoreConfig { data_dir: dir.to_path_buf(), open_files_max: 2, gpus_max };
        (Store::open(config, Arc::clone(&shared)).unwrap(), shared)
    }

    fn samples_of(shared: &Shared, uuid: &str) -> u64 {
        shared.catalog.read().unwrap().gpus.get(uuid).map_or(0, |g| g.samples)
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
        let len_before = shared.catalog.read().unwrap().gpus["g0"].file_len;
        drop(store);

        let path = dir.path().join("gpus/g0.jsonl");
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
        let path = dir.path().join("gpus/g.jsonl");
        let mut text = fs::read(&path).unwrap();
        text.splice(0..0, b"garbage line\n".iter().copied());
        fs::write(&path, &text).unwrap();
        fs::remove_file(dir.path().join("checkpoint.json")).unwrap();
        let (mut store, shared) = open(dir.path(), 10);
        assert_eq!(samples_of(&shared, "g"), 2);
        assert_eq!(store.write_batch(&[parsed("g", 1, 7, 5)]).unwrap(), [Verdict::Duplicate]);
    }

    /// Goal: a planted link is never followed, and GPUs beyond the cap are refused.
    #[test]
    fn links_and_gpus_beyond_the_cap_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("gpus")).unwrap();
        let target = dir.path().join("target");
        fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("gpus/evil.jsonl")).unwrap();
        let (mut store, _) = open(dir.path(), 2);
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
        assert!(fs::symlink_metadata(dir.path().join("gpus/evil.jsonl"))
            .unwrap()
            .file_type()
            .is_symlink());
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
                let len = fs::metadata(gpu_path(store.gpus_dir(), uuid)).unwrap().len();
                assert_eq!(len, gpu.file_len, "{uuid} cut back to its indexed length");
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
        let config =
            StoreConfig { data_dir: dir.path().to_path_buf(), open_files_max: 2, gpus_max: 10 };
        assert!(Store::open(config, shared).is_err());
    }
}
