//! The checkpoint: which broker records (partition, offset) are durably stored, so that a
//! redelivered record is acknowledged without being stored twice, and a restart can tell
//! the lines it may keep from the tail written after the last checkpoint.
//!
//! Per partition it holds sorted, disjoint, inclusive offset ranges. Records arrive almost
//! in offset order, so there is usually one range per partition; gaps come from records
//! sent to the dead-letter topic or still in flight elsewhere. The number of ranges is
//! bounded ([`RANGES_PER_PARTITION_MAX`]): past it the lowest gap is closed, on the ground
//! that a gap older than a thousand others belongs to a record the broker has long since
//! settled (dead-lettered, or acknowledged by another member).
//!
//! The file is `<data_dir>/checkpoint.json`, replaced atomically: written to
//! `checkpoint.json.tmp`, synced, renamed over the old one, and the directory synced.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Most ranges kept per partition.
pub const RANGES_PER_PARTITION_MAX: usize = 1024;

const FORMAT_VERSION: u32 = 1;

/// Stored offsets per partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    version: u32,
    /// Partition → sorted disjoint inclusive ranges `[first, last]`.
    partitions: BTreeMap<u32, Vec<(u64, u64)>>,
}

impl Checkpoint {
    /// An empty checkpoint.
    pub fn new() -> Checkpoint {
        Checkpoint { version: FORMAT_VERSION, partitions: BTreeMap::new() }
    }

    /// Whether (partition, offset) is stored.
    pub fn contains(&self, partition: u32, offset: u64) -> bool {
        let Some(ranges) = self.partitions.get(&partition) else { return false };
        let i = ranges.partition_point(|&(_, last)| last < offset);
        ranges.get(i).is_some_and(|&(first, _)| first <= offset)
    }

    /// Marks (partition, offset) stored.
    pub fn insert(&mut self, partition: u32, offset: u64) {
        let ranges = self.partitions.entry(partition).or_default();
        if let Some(last) = ranges.last_mut() {
            if last.1.checked_add(1) == Some(offset) {
                last.1 = offset;
                return;
            }
        }
        let i = ranges.partition_point(|&(_, last)| last < offset);
        if ranges.get(i).is_some_and(|&(first, _)| first <= offset) {
            return;
        }
        let joins_left = i > 0 && ranges[i - 1].1 + 1 == offset;
        let joins_right = ranges.get(i).is_some_and(|&(first, _)| offset + 1 == first);
        match (joins_left, joins_right) {
            (true, true) => {
                ranges[i - 1].1 = ranges[i].1;
                ranges.remove(i);
            }
            (true, false) => ranges[i - 1].1 = offset,
            (false, true) => ranges[i].0 = offset,
            (false, false) => ranges.insert(i, (offset, offset)),
        }
        if ranges.len() > RANGES_PER_PARTITION_MAX {
            ranges[1].0 = ranges[0].0;
            ranges.remove(0);
        }
        debug_assert!(ranges.windows(2).all(|w| w[0].1 + 1 < w[1].0), "ranges overlap");
    }

    /// Records stored per partition (by range size), for logs.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .partitions
            .iter()
            .map(|(p, r)| format!("{p}:{}", r.iter().map(|(a, b)| b - a + 1).sum::<u64>()))
            .collect();
        parts.join(" ")
    }

    /// Reads `<data_dir>/checkpoint.json`; `Ok(None)` if there is none.
    ///
    /// # Errors
    /// An I/O error, or a file that is not a checkpoint (the caller rebuilds from the
    /// JSONL files then).
    pub fn load(data_dir: &Path) -> io::Result<Option<Checkpoint>> {
        let bytes = match fs::read(path(data_dir)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let checkpoint: Checkpoint = serde_json::from_slice(&bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if checkpoint.version != FORMAT_VERSION {
            let detail = format!("checkpoint version {}", checkpoint.version);
            return Err(io::Error::new(io::ErrorKind::InvalidData, detail));
        }
        Ok(Some(checkpoint))
    }

    /// Writes the checkpoint's temporary file (not yet synced or renamed), so that the
    /// batch's sync covers it too; [`Checkpoint::publish`] completes the replacement.
    ///
    /// # Errors
    /// I/O errors.
    pub fn stage(&self, data_dir: &Path) -> io::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(io::Error::other)?;
        let mut file = File::create(tmp_path(data_dir))?;
        file.write_all(&bytes)?;
        Ok(())
    }

    /// Renames the staged file over the checkpoint and syncs the directory. The staged
    /// file's bytes must have been synced already.
    ///
    /// # Errors
    /// I/O errors.
    pub fn publish(data_dir: &Path) -> io::Result<()> {
        Checkpoint::rename_into_place(data_dir)?;
        File::open(data_dir)?.sync_all()
    }

    /// The rename half of [`Checkpoint::publish`]; the caller syncs the directory.
    ///
    /// # Errors
    /// I/O errors.
    pub fn rename_into_place(data_dir: &Path) -> io::Result<()> {
        fs::rename(tmp_path(data_dir), path(data_dir))
    }

    /// [`Checkpoint::stage`], a sync of the file, and [`Checkpoint::publish`].
    ///
    /// # Errors
    /// I/O errors.
    pub fn save(&self, data_dir: &Path) -> io::Result<()> {
        self.stage(data_dir)?;
        File::open(tmp_path(data_dir))?.sync_all()?;
        Checkpoint::publish(data_dir)
    }
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("checkpoint.json")
}

fn tmp_path(data_dir: &Path) -> PathBuf {
    data_dir.join("checkpoint.json.tmp")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_merge_into_ranges_in_any_order() {
        let mut c = Checkpoint::new();
        for o in [0, 1, 2, 5, 4, 9, 3] {
            c.insert(7, o);
        }
        assert_eq!(c.partitions[&7], vec![(0, 5), (9, 9)]);
        assert!(c.contains(7, 0) && c.contains(7, 5) && c.contains(7, 9));
        assert!(!c.contains(7, 6) && !c.contains(7, 10) && !c.contains(8, 0));
        c.insert(7, 2);
        assert_eq!(c.partitions[&7], vec![(0, 5), (9, 9)], "a repeat changes nothing");
    }

    #[test]
    fn the_lowest_gap_closes_when_ranges_run_over_the_bound() {
        let mut c = Checkpoint::new();
        for i in 0..=RANGES_PER_PARTITION_MAX as u64 {
            c.insert(0, i * 2);
        }
        let ranges = &c.partitions[&0];
        assert_eq!(ranges.len(), RANGES_PER_PARTITION_MAX);
        assert_eq!(ranges[0], (0, 2));
        assert!(c.contains(0, 1), "the closed gap counts as stored");
    }

    #[test]
    fn a_saved_checkpoint_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), None);
        let mut c = Checkpoint::new();
        c.insert(3, 10);
        c.save(dir.path()).unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), Some(c));
        fs::write(dir.path().join("checkpoint.json"), b"{torn").unwrap();
        assert!(Checkpoint::load(dir.path()).is_err());
    }
}
