//! Telemetry queries: the samples of one GPU in a time range, optionally for some metrics
//! only, in [`SampleKey`] order, one page at a time.
//!
//! A query is answered from the cache when the GPU's ring holds the whole range (see
//! [`super::cache`]), else from the GPU's JSONL files. A file query asks the time index for
//! the blocks that can hold the range and reads only those, in order of their least time,
//! and stops as soon as the page is full and no later block can hold an earlier sample.
//!
//! No query returns a sample from before retention's limit
//! ([`super::Shared::visible_from_ms`]): the range starts there at the earliest.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering::Relaxed;

use log::warn;

use super::catalog::SegmentKey;
use super::line::{LineReader, ReadLine, Sample, SampleKey};
use super::store::{open_for_read, segment_path};
use super::Shared;

/// The most samples one page may hold.
pub const LIMIT_MAX: usize = 100_000;
/// Samples per page when the query does not say.
pub const LIMIT_DEFAULT: usize = 1000;

/// A validated query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Earliest time, inclusive, ms.
    pub start_ms: i64,
    /// Latest time, inclusive, ms.
    pub end_ms: i64,
    /// Metrics to return; empty: all.
    pub metrics: Vec<String>,
    /// Most samples to return, 1 to [`LIMIT_MAX`].
    pub limit: usize,
    /// Return only samples after this position (the previous page's last sample).
    pub after: Option<SampleKey>,
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The memory cache.
    Cache,
    /// The JSONL file.
    File,
}

impl Source {
    /// `"cache"` or `"file"`.
    pub fn name(self) -> &'static str {
        match self {
            Source::Cache => "cache",
            Source::File => "file",
        }
    }
}

/// One page of samples.
#[derive(Debug, Clone)]
pub struct Page {
    /// Samples in [`SampleKey`] order.
    pub samples: Vec<Sample>,
    /// The position to continue after, if there are more samples.
    pub next: Option<SampleKey>,
    /// Where it came from.
    pub source: Source,
}

impl Query {
    /// Where reading starts: the range's start, the cursor's time, or retention's limit,
    /// whichever is latest.
    fn effective_start_ms(&self, visible_from_ms: i64) -> i64 {
        let start = self.start_ms.max(visible_from_ms);
        self.after.as_ref().map_or(start, |k| start.max(k.ts_ms))
    }

    fn accepts(&self, metrics: &HashSet<&str>, sample: &Sample) -> bool {
        (metrics.is_empty() || metrics.contains(&*sample.metric))
            && self.after.as_ref().is_none_or(|k| sample.is_after(k))
    }
}

/// Answers `query` from the cache, or `None` if the cache does not hold the whole range.
pub fn from_cache(shared: &Shared, uuid: &str, query: &Query) -> Option<Page> {
    let metrics: HashSet<&str> = query.metrics.iter().map(String::as_str).collect();
    let start = query.effective_start_ms(shared.visible_from_ms());
    let found = {
        let mut cache = shared.cache.lock().expect("cache lock");
        cache.select(uuid, start, query.end_ms, |s| query.accepts(&metrics, s))
    };
    let Some(mut samples) = found else {
        shared.stats.cache_misses.fetch_add(1, Relaxed);
        return None;
    };
    shared.stats.cache_hits.fetch_add(1, Relaxed);
    samples.sort_unstable_by(Sample::cmp_key);
    Some(paginate(samples, query.limit, Source::Cache))
}

/// Answers `query` from the GPU's file; `Ok(None)` if the GPU is unknown.
///
/// # Errors
/// The file cannot be opened or read.
pub fn from_file(shared: &Shared, uuid: &str, query: &Query) -> io::Result<Option<Page>> {
    let start = query.effective_start_ms(shared.visible_from_ms());
    let blocks = {
        let catalog = shared.catalog.read().expect("catalog lock");
        match catalog.gpus.get(uuid) {
            Some(gpu) => gpu.blocks_for(start, query.end_ms),
            None => return Ok(None),
        }
    };
    let metrics: HashSet<&str> = query.metrics.iter().map(String::as_str).collect();
    let mut reader = LineReader::default();
    let mut found: Vec<Sample> = Vec::new();
    let mut bad_lines = 0u64;
    let keep = |ts_ms: i64, metric: &str| {
        ts_ms >= start && ts_ms <= query.end_ms && (metrics.is_empty() || metrics.contains(metric))
    };
    let mut files = SegmentFiles::new(shared, uuid);
    let mut bytes = Vec::new();
    for (i, at) in blocks.iter().enumerate() {
        let Some(file) = files.get(at.segment)? else { continue };
        bytes.resize((at.end - at.block.pos) as usize, 0);
        file.read_exact_at(&mut bytes, at.block.pos)?;
        for text in bytes.split(|&b| b == b'\n').filter(|t| !t.is_empty()) {
            match reader.read(text, keep) {
                ReadLine::Sample(sample) => {
                    if query.after.as_ref().is_none_or(|k| sample.is_after(k)) {
                        found.push(sample);
                    }
                }
                ReadLine::Skipped => {}
                ReadLine::Bad => bad_lines += 1,
            }
        }
        if found.len() > query.limit {
            found.sort_unstable_by(Sample::cmp_key);
            found.truncate(query.limit + 1);
            let last_ts = found[query.limit].ts_ms;
            if blocks.get(i + 1).is_none_or(|next| next.block.ts_min_ms > last_ts) {
                break;
            }
        }
    }
    if bad_lines > 0 {
        warn!("{uuid}.jsonl: {bad_lines} unreadable lines skipped in a query");
    }
    found.sort_unstable_by(Sample::cmp_key);
    Ok(Some(paginate(found, query.limit, Source::File)))
}

/// The files of one GPU a query reads, each opened once. A file retention deleted after
/// the query chose its blocks is skipped: every sample in it is past the retention.
#[derive(Debug)]
pub struct SegmentFiles<'a> {
    shared: &'a Shared,
    uuid: &'a str,
    open: HashMap<SegmentKey, Option<File>>,
}

impl<'a> SegmentFiles<'a> {
    /// None open yet.
    pub fn new(shared: &'a Shared, uuid: &'a str) -> SegmentFiles<'a> {
        SegmentFiles { shared, uuid, open: HashMap::new() }
    }

    /// The file of `segment`; `None` if it is gone.
    ///
    /// # Errors
    /// It cannot be opened.
    pub fn get(&mut self, segment: SegmentKey) -> io::Result<Option<&File>> {
        if !self.open.contains_key(&segment) {
            let path = segment_path(&self.shared.gpus_dir, self.uuid, segment);
            let file = match open_for_read(&path) {
                Ok(f) => Some(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            self.open.insert(segment, file);
        }
        Ok(self.open[&segment].as_ref())
    }
}

fn paginate(mut samples: Vec<Sample>, limit: usize, source: Source) -> Page {
    let next = if samples.len() > limit {
        samples.truncate(limit);
        samples.last().map(Sample::key)
    } else {
        None
    };
    Page { samples, next, source }
}

/// A cursor: the hex of `ts_ms,partition,offset,metric`, opaque to clients.
pub fn encode_cursor(key: &SampleKey) -> String {
    hex::encode(format!("{},{},{},{}", key.ts_ms, key.partition, key.offset, key.metric))
}

/// Reads a cursor made by [`encode_cursor`]; `None` if it is not one.
pub fn decode_cursor(text: &str) -> Option<SampleKey> {
    let bytes = hex::decode(text).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.splitn(4, ',');
    let key = SampleKey {
        ts_ms: parts.next()?.parse().ok()?,
        partition: parts.next()?.parse().ok()?,
        offset: parts.next()?.parse().ok()?,
        metric: parts.next()?.to_string(),
    };
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        let key = SampleKey { ts_ms: -5, partition: 3, offset: 99, metric: "A,B".into() };
        assert_eq!(decode_cursor(&encode_cursor(&key)), Some(key));
        for junk in ["", "zz", "616263", &hex::encode("1,2,x,M")] {
            assert_eq!(decode_cursor(junk), None, "{junk}");
        }
    }
}
