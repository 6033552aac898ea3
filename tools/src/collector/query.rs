//! Telemetry queries: the samples of one GPU in a time range, optionally for some metrics
//! only, in [`SampleKey`] order (oldest first) or its reverse (newest first), one page at a
//! time. A cursor is a position in that order: the next page holds the samples past it in
//! the query's direction.
//!
//! A query is answered from the cache when the GPU's ring holds the whole range (see
//! [`super::cache`]), else from the GPU's JSONL files. A file query asks the time index for
//! the blocks that can hold the range and reads only those, in order of their least time
//! (oldest first) or greatest time (newest first), and stops as soon as the page is full
//! and no further block can hold a sample that belongs before the page's end.
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

/// The order of a page's samples: `asc`, oldest first (the default), or `desc`, newest
/// first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// [`SampleKey`] order: time, then partition, offset and metric.
    #[default]
    Asc,
    /// The reverse: the latest sample first.
    Desc,
}

impl Order {
    /// `"asc"` or `"desc"`.
    pub fn name(self) -> &'static str {
        match self {
            Order::Asc => "asc",
            Order::Desc => "desc",
        }
    }

    /// Reads `asc` or `desc`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Order> {
        [Order::Asc, Order::Desc].into_iter().find(|o| o.name() == text)
    }

    /// Sorts `samples` in this order.
    pub fn sort(self, samples: &mut [Sample]) {
        match self {
            Order::Asc => samples.sort_unstable_by(Sample::cmp_key),
            Order::Desc => samples.sort_unstable_by(|a, b| b.cmp_key(a)),
        }
    }
}

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
    /// Oldest or newest first.
    pub order: Order,
    /// Return only samples past this position in `order` (the previous page's last
    /// sample): after it ascending, before it descending.
    pub cursor: Option<SampleKey>,
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
    /// The times to read, inclusive: the range, narrowed by retention's limit and, on the
    /// side the query moves away from, by the cursor's time.
    fn effective_range(&self, visible_from_ms: i64) -> (i64, i64) {
        let (start, end) = (self.start_ms.max(visible_from_ms), self.end_ms);
        match (&self.cursor, self.order) {
            (None, _) => (start, end),
            (Some(k), Order::Asc) => (start.max(k.ts_ms), end),
            (Some(k), Order::Desc) => (start, end.min(k.ts_ms)),
        }
    }

    /// Whether `sample` lies past the cursor in the query's direction.
    fn past_cursor(&self, sample: &Sample) -> bool {
        match (&self.cursor, self.order) {
            (None, _) => true,
            (Some(k), Order::Asc) => sample.is_after(k),
            (Some(k), Order::Desc) => is_before(sample, k),
        }
    }

    fn accepts(&self, metrics: &HashSet<&str>, sample: &Sample) -> bool {
        (metrics.is_empty() || metrics.contains(&*sample.metric)) && self.past_cursor(sample)
    }
}

/// Answers `query` from the cache, or `None` if the cache does not hold the whole range.
pub fn from_cache(shared: &Shared, uuid: &str, query: &Query) -> Option<Page> {
    let metrics: HashSet<&str> = query.metrics.iter().map(String::as_str).collect();
    let (start, end) = query.effective_range(shared.visible_from_ms());
    let found = {
        let mut cache = shared.cache.lock().expect("cache lock");
        cache.select(uuid, start, end, |s| query.accepts(&metrics, s))
    };
    let Some(mut samples) = found else {
        shared.stats.cache_misses.fetch_add(1, Relaxed);
        return None;
    };
    shared.stats.cache_hits.fetch_add(1, Relaxed);
    query.order.sort(&mut samples);
    Some(paginate(samples, query.limit, Source::Cache))
}

/// Answers `query` from the GPU's file; `Ok(None)` if the GPU is unknown.
///
/// # Errors
/// The file cannot be opened or read.
pub fn from_file(shared: &Shared, uuid: &str, query: &Query) -> io::Result<Option<Page>> {
    let (start, end) = query.effective_range(shared.visible_from_ms());
    let mut blocks = {
        let catalog = shared.catalog.read().expect("catalog lock");
        match catalog.gpus.get(uuid) {
            Some(gpu) => gpu.blocks_for(start, end),
            None => return Ok(None),
        }
    };
    if query.order == Order::Desc {
        blocks.sort_by_key(|r| std::cmp::Reverse((r.block.ts_max_ms, r.segment, r.block.pos)));
    }
    let metrics: HashSet<&str> = query.metrics.iter().map(String::as_str).collect();
    let mut reader = LineReader::default();
    let mut found: Vec<Sample> = Vec::new();
    let mut bad_lines = 0u64;
    let keep = |ts_ms: i64, metric: &str| {
        ts_ms >= start && ts_ms <= end && (metrics.is_empty() || metrics.contains(metric))
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
                    if query.past_cursor(&sample) {
                        found.push(sample);
                    }
                }
                ReadLine::Skipped => {}
                ReadLine::Bad => bad_lines += 1,
            }
        }
        if found.len() > query.limit {
            query.order.sort(&mut found);
            found.truncate(query.limit + 1);
            let last_ts = found[query.limit].ts_ms;
            // Blocks come in the page's direction: once the next one holds only times
            // beyond the page's end, no further one can hold a sample for the page.
            let done = blocks.get(i + 1).is_none_or(|next| match query.order {
                Order::Asc => next.block.ts_min_ms > last_ts,
                Order::Desc => next.block.ts_max_ms < last_ts,
            });
            if done {
                break;
            }
        }
    }
    if bad_lines > 0 {
        warn!("{uuid}.jsonl: {bad_lines} unreadable lines skipped in a query");
    }
    query.order.sort(&mut found);
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

/// Whether `sample` comes before `key` in [`SampleKey`] order.
fn is_before(sample: &Sample, key: &SampleKey) -> bool {
    (sample.ts_ms, sample.partition, sample.offset, &*sample.metric)
        < (key.ts_ms, key.partition, key.offset, key.metric.as_str())
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

/// Hex digits of a cursor's fixed part: time (16), partition (8), offset (16).
const CURSOR_FIXED_HEX: usize = 40;
/// Longest metric name a cursor holds, bytes (as a stored metric name at most).
pub const CURSOR_METRIC_BYTES_MAX: usize = crate::collector::record::METRIC_BYTES_MAX;
/// The pattern of a cursor, as the OpenAPI document states it: every text it matches is
/// a position [`decode_cursor`] reads, and nothing else is.
pub const CURSOR_PATTERN: &str = "^[0-9a-f]{40}([0-9a-f]{2}){0,128}$";

/// A cursor: a position in [`SampleKey`] order, in lowercase hex: the time as 16 digits
/// (offset by 2^63, so every 16 digits are a time), the partition as 8, the offset as 16,
/// then the metric name's bytes. Fixed widths make every text of [`CURSOR_PATTERN`] a
/// position, so the schema can say exactly which cursors the API takes.
pub fn encode_cursor(key: &SampleKey) -> String {
    let ts = (key.ts_ms as u64) ^ (1 << 63);
    format!("{ts:016x}{:08x}{:016x}{}", key.partition, key.offset, hex::encode(&key.metric))
}

/// Reads a cursor made by [`encode_cursor`] (or any text of [`CURSOR_PATTERN`]); `None`
/// for anything else. A metric part that is not UTF-8 is read lossily: it still names a
/// position, between the metrics around it.
pub fn decode_cursor(text: &str) -> Option<SampleKey> {
    let lower_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
    let metric_hex = text.len().checked_sub(CURSOR_FIXED_HEX)?;
    if !text.bytes().all(|b| lower_hex(&b))
        || !metric_hex.is_multiple_of(2)
        || metric_hex / 2 > CURSOR_METRIC_BYTES_MAX
    {
        return None;
    }
    let field = |from: usize, to: usize| u64::from_str_radix(&text[from..to], 16).ok();
    let metric = hex::decode(&text[CURSOR_FIXED_HEX..]).ok()?;
    Some(SampleKey {
        ts_ms: (field(0, 16)? ^ (1 << 63)) as i64,
        partition: field(16, 24)? as u32,
        offset: field(24, 40)?,
        metric: String::from_utf8_lossy(&metric).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: cursors round-trip, every text of the documented pattern is a cursor, and
    /// nothing else is. Method: extreme keys through encode and decode; texts the pattern
    /// takes and near misses it refuses.
    #[test]
    fn cursors_round_trip_and_match_their_pattern() {
        let longest = "M".repeat(CURSOR_METRIC_BYTES_MAX);
        for key in [
            SampleKey { ts_ms: -5, partition: 3, offset: 99, metric: "A,B é".into() },
            SampleKey { ts_ms: i64::MIN, partition: 0, offset: 0, metric: String::new() },
            SampleKey { ts_ms: i64::MAX, partition: u32::MAX, offset: u64::MAX, metric: longest },
        ] {
            let text = encode_cursor(&key);
            assert!(matches_pattern(&text), "{text}");
            assert_eq!(decode_cursor(&text), Some(key));
        }
        let zeros = "0".repeat(40);
        let key = decode_cursor(&format!("{zeros}ff")).expect("any bytes are a position");
        assert_eq!((key.ts_ms, key.metric.as_str()), (i64::MIN, "\u{fffd}"));
        let long = format!("{zeros}{}", "61".repeat(CURSOR_METRIC_BYTES_MAX + 1));
        let upper = format!("{}A", "0".repeat(41));
        for junk in ["", "zz", &"0".repeat(39), &format!("{zeros}6"), &long, &upper] {
            assert!(!matches_pattern(junk), "{junk}");
            assert_eq!(decode_cursor(junk), None, "{junk}");
        }
    }

    /// [`CURSOR_PATTERN`], by hand (no regex crate for one test).
    fn matches_pattern(text: &str) -> bool {
        let hex = text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        hex && text.len() >= 40 && text.len().is_multiple_of(2) && text.len() <= 40 + 2 * 128
    }
}
