//! The catalog: what the collector knows about every GPU it stores, kept in memory for all
//! of them (the cache holds samples only for some). It answers `/api/v1/gpus` and
//! `/metrics`, and its time index lets a file query read only the blocks of the files that
//! can hold the requested range.
//!
//! A GPU's samples are in one file per hour of sample time ([`SegmentKey::Hour`]:
//! `gpus/<hour>/<uuid>.jsonl`), plus, for data written before files were split by hour,
//! one older file ([`SegmentKey::Legacy`]: `gpus/<uuid>.jsonl`). Retention deletes whole
//! hours (see [`super::retention`]).
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

/// An hour, ms: the span of time one file holds.
pub const HOUR_MS: i64 = 3_600_000;

/// The start of the hour `ts_ms` is in (UTC hours: the epoch is a whole hour).
pub fn hour_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(HOUR_MS) * HOUR_MS
}

/// Which of a GPU's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SegmentKey {
    /// `gpus/<uuid>.jsonl`, written before files were split by hour: read, never written
    /// again, deleted whole.
    Legacy,
    /// `gpus/<hour>/<uuid>.jsonl`: the samples whose time is in the hour starting at this
    /// time (ms).
    Hour(i64),
}

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

/// A block to read: its file, the block, and the position where it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    /// The file.
    pub segment: SegmentKey,
    /// The block.
    pub block: Block,
    /// Byte position just past its last line.
    pub end: u64,
}

/// One file of a GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Bytes of the file that are durable and indexed.
    pub file_len: u64,
    /// The time index.
    pub blocks: Vec<Block>,
    /// Samples in it.
    pub samples: u64,
    /// Least sample time, ms.
    pub first_ms: i64,
    /// Greatest sample time, ms.
    pub last_ms: i64,
}

impl Default for Segment {
    fn default() -> Segment {
        Segment {
            file_len: 0,
            blocks: Vec::new(),
            samples: 0,
            first_ms: i64::MAX,
            last_ms: i64::MIN,
        }
    }
}

impl Segment {
    /// The time before which every sample of the file lies: the end of its hour, or just
    /// past the latest sample of a legacy file. Retention deletes the file once this is
    /// past.
    pub fn end_ms(&self, key: SegmentKey) -> i64 {
        match key {
            SegmentKey::Hour(h) => h + HOUR_MS,
            SegmentKey::Legacy => self.last_ms.saturating_add(1),
        }
    }
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
    /// Bytes of its files that are durable and indexed.
    pub bytes: u64,
    /// Its files.
    pub segments: BTreeMap<SegmentKey, Segment>,
    /// Latest value per metric.
    pub latest: BTreeMap<Arc<str>, Latest>,
}

impl GpuState {
    /// The durable, indexed length of one of its files (0 if it has none).
    pub fn segment_len(&self, key: SegmentKey) -> u64 {
        self.segments.get(&key).map_or(0, |s| s.file_len)
    }

    /// Accounts for one line of `len` bytes at the end of file `key` (`pos` must be its
    /// length).
    ///
    /// # Panics
    /// If `pos` is not the end of the indexed file.
    pub fn add_line(&mut self, key: SegmentKey, pos: u64, len: u64, ts_ms: i64) {
        let segment = self.segments.entry(key).or_default();
        assert_eq!(pos, segment.file_len, "lines are indexed in file order");
        assert!(len > 0);
        match segment.blocks.last_mut() {
            Some(block) if block.lines < BLOCK_LINES => {
                block.lines += 1;
                block.ts_min_ms = block.ts_min_ms.min(ts_ms);
                block.ts_max_ms = block.ts_max_ms.max(ts_ms);
            }
            _ => segment.blocks.push(Block { pos, ts_min_ms: ts_ms, ts_max_ms: ts_ms, lines: 1 }),
        }
        segment.file_len = pos + len;
        segment.samples += 1;
        segment.first_ms = segment.first_ms.min(ts_ms);
        segment.last_ms = segment.last_ms.max(ts_ms);
        self.bytes += len;
        self.samples += 1;
        self.first_ms = Some(self.first_ms.map_or(ts_ms, |t| t.min(ts_ms)));
        self.last_ms = Some(self.last_ms.map_or(ts_ms, |t| t.max(ts_ms)));
    }

    /// Moves the indexed end of file `key` forward to `pos`, past lines left out of the
    /// index (unreadable ones, which stay in the file).
    ///
    /// # Panics
    /// If `pos` is before the indexed end.
    pub fn skip_to(&mut self, key: SegmentKey, pos: u64) {
        let segment = self.segments.entry(key).or_default();
        assert!(pos >= segment.file_len, "the index only grows");
        self.bytes += pos - segment.file_len;
        segment.file_len = pos;
    }

    /// Forgets one of its files (retention deleted it); the totals and time bounds follow.
    pub fn remove_segment(&mut self, key: SegmentKey) -> Option<Segment> {
        let segment = self.segments.remove(&key)?;
        self.samples -= segment.samples;
        self.bytes -= segment.file_len;
        let with_samples = || self.segments.values().filter(|s| s.samples > 0);
        self.first_ms = with_samples().map(|s| s.first_ms).min();
        self.last_ms = with_samples().map(|s| s.last_ms).max();
        Some(segment)
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

    /// The blocks that may hold times in `start_ms..=end_ms`, ordered by their least time.
    pub fn blocks_for(&self, start_ms: i64, end_ms: i64) -> Vec<BlockRef> {
        let mut found: Vec<BlockRef> = Vec::new();
        for (key, segment) in &self.segments {
            if segment.samples == 0 || segment.last_ms < start_ms || segment.first_ms > end_ms {
                continue;
            }
            let blocks = &segment.blocks;
            found.extend(
                blocks
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.ts_max_ms >= start_ms && b.ts_min_ms <= end_ms)
                    .map(|(i, b)| BlockRef {
                        segment: *key,
                        block: *b,
                        end: blocks.get(i + 1).map_or(segment.file_len, |n| n.pos),
                    }),
            );
        }
        found.sort_by_key(|r| (r.block.ts_min_ms, r.segment, r.block.pos));
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
        let key = SegmentKey::Hour(0);
        for i in 0..(BLOCK_LINES as i64 * 2 + 10) {
            gpu.add_line(key, gpu.segment_len(key), 10, 1000 + i);
        }
        let segment = &gpu.segments[&key];
        assert_eq!(segment.blocks.len(), 3);
        assert_eq!(segment.file_len, 10 * (BLOCK_LINES as u64 * 2 + 10));
        let all = gpu.blocks_for(i64::MIN, i64::MAX);
        assert_eq!(all.last().unwrap().end, segment.file_len);
        assert_eq!(all[0].end, all[1].block.pos);
        let second = gpu.blocks_for(1000 + 256, 1000 + 300);
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].block.pos, 2560);
        assert!(gpu.blocks_for(0, 999).is_empty());
        assert_eq!((gpu.first_ms, gpu.last_ms), (Some(1000), Some(1000 + 521)));
    }

    #[test]
    fn removing_a_segment_updates_the_totals() {
        let mut gpu = GpuState::default();
        for h in 0..3 {
            let key = SegmentKey::Hour(h * HOUR_MS);
            for i in 0..4 {
                gpu.add_line(key, gpu.segment_len(key), 7, h * HOUR_MS + i);
            }
        }
        assert_eq!((gpu.samples, gpu.bytes), (12, 84));
        assert_eq!(gpu.blocks_for(HOUR_MS, 2 * HOUR_MS - 1).len(), 1, "other hours left out");
        let gone = gpu.remove_segment(SegmentKey::Hour(0)).unwrap();
        assert_eq!(gone.samples, 4);
        assert_eq!((gpu.samples, gpu.bytes), (8, 56));
        assert_eq!((gpu.first_ms, gpu.last_ms), (Some(HOUR_MS), Some(2 * HOUR_MS + 3)));
        gpu.remove_segment(SegmentKey::Hour(HOUR_MS));
        gpu.remove_segment(SegmentKey::Hour(2 * HOUR_MS));
        assert_eq!((gpu.samples, gpu.first_ms, gpu.last_ms), (0, None, None));
        assert_eq!(hour_of(-1), -HOUR_MS);
        assert_eq!(Segment::default().end_ms(SegmentKey::Hour(HOUR_MS)), 2 * HOUR_MS);
    }
}
