//! The catalog: what the collector knows about every GPU it stores, kept in memory for all
//! of them (the cache holds samples only for some). It answers `/api/v1/gpus` and
//! `/metrics`, and its time index lets a file query read only the blocks of a file that
//! can hold the requested range.
//!
//! The index splits each file into blocks of [`BLOCK_LINES`] lines and keeps, per block,
//! its byte position and the least and greatest time in it (times in a file rise almost
//! always, but a redelivery can write an older one late, so a block keeps both bounds).
//! It costs 32 bytes per 256 samples, rebuilt by scanning the files at start.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::line::Sample;
use super::record::{GpuIdentity, SampleExtra};

/// Lines per index block.
pub const BLOCK_LINES: u32 = 256;

/// One block of a JSONL file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Byte position of its first line.
    pub pos: u64,
    /// Least time in it, ms.
    pub ts_min_ms: i64,
    /// Greatest time in it, ms.
    pub ts_max_ms: i64,
    /// Lines in it.
    pub lines: u32,
}

/// The latest value of one metric of one GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct Latest {
    /// Value.
    pub value: f64,
    /// Time, ms.
    pub ts_ms: i64,
    /// Labels and attributes of its record.
    pub extra: Option<Arc<SampleExtra>>,
}

/// What the collector knows about one GPU.
#[derive(Debug, Clone, Default)]
pub struct GpuState {
    /// Identity attributes, the latest known.
    pub identity: GpuIdentity,
    /// Least sample time, ms (`None` before the first sample).
    pub first_ms: Option<i64>,
    /// Greatest sample time, ms.
    pub last_ms: Option<i64>,
    /// Samples stored.
    pub samples: u64,
    /// Bytes of the JSONL file that are durable and indexed.
    pub file_len: u64,
    /// The time index.
    pub blocks: Vec<Block>,
    /// Latest value per metric.
    pub latest: BTreeMap<Arc<str>, Latest>,
}

impl GpuState {
    /// Accounts for one line of `len` bytes at the end of the file (`pos` must be
    /// `file_len`).
    ///
    /// # Panics
    /// If `pos` is not the end of the indexed file.
    pub fn add_line(&mut self, pos: u64, len: u64, ts_ms: i64) {
        assert_eq!(pos, self.file_len, "lines are indexed in file order");
        assert!(len > 0);
        match self.blocks.last_mut() {
            Some(block) if block.lines < BLOCK_LINES => {
                block.lines += 1;
                block.ts_min_ms = block.ts_min_ms.min(ts_ms);
                block.ts_max_ms = block.ts_max_ms.max(ts_ms);
            }
            _ => self.blocks.push(Block { pos, ts_min_ms: ts_ms, ts_max_ms: ts_ms, lines: 1 }),
        }
        self.file_len = pos + len;
        self.samples += 1;
        self.first_ms = Some(self.first_ms.map_or(ts_ms, |t| t.min(ts_ms)));
        self.last_ms = Some(self.last_ms.map_or(ts_ms, |t| t.max(ts_ms)));
    }

    /// Keeps `sample` as its metric's latest value if it is not older than the one known.
    pub fn note_latest(&mut self, sample: &Sample) {
        let newer = self.latest.get(&sample.metric).is_none_or(|l| l.ts_ms <= sample.ts_ms);
        if newer {
            let latest =
                Latest { value: sample.value, ts_ms: sample.ts_ms, extra: sample.extra.clone() };
            self.latest.insert(Arc::clone(&sample.metric), latest);
        }
    }

    /// The blocks that may hold times in `start_ms..=end_ms`, each with its end position,
    /// ordered by their least time.
    pub fn blocks_for(&self, start_ms: i64, end_ms: i64) -> Vec<(Block, u64)> {
        let mut found: Vec<(Block, u64)> = self
            .blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| b.ts_max_ms >= start_ms && b.ts_min_ms <= end_ms)
            .map(|(i, b)| (*b, self.blocks.get(i + 1).map_or(self.file_len, |n| n.pos)))
            .collect();
        found.sort_by_key(|(b, _)| (b.ts_min_ms, b.pos));
        found
    }
}

/// Every GPU, by id.
#[derive(Debug, Default)]
pub struct Catalog {
    /// GPU id → state.
    pub gpus: BTreeMap<Arc<str>, GpuState>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_the_file_and_filter_by_time() {
        let mut gpu = GpuState::default();
        for i in 0..(BLOCK_LINES as i64 * 2 + 10) {
            gpu.add_line(gpu.file_len, 10, 1000 + i);
        }
        assert_eq!(gpu.blocks.len(), 3);
        assert_eq!(gpu.file_len, 10 * (BLOCK_LINES as u64 * 2 + 10));
        let all = gpu.blocks_for(i64::MIN, i64::MAX);
        assert_eq!(all.last().unwrap().1, gpu.file_len);
        assert_eq!(all[0].1, all[1].0.pos);
        let second = gpu.blocks_for(1000 + 256, 1000 + 300);
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].0.pos, 2560);
        assert!(gpu.blocks_for(0, 999).is_empty());
        assert_eq!((gpu.first_ms, gpu.last_ms), (Some(1000), Some(1000 + 521)));
    }
}
