//! Series for charts: the samples of one GPU in a time window, reduced to buckets of equal
//! length per metric (count, least, greatest and mean value), so a chart of a day of a
//! fast GPU needs a few hundred points rather than millions of samples.
//!
//! Buckets start at multiples of the step since the epoch, and the step is picked from a
//! fixed ladder ([`STEPS_MS`]) from the window and the points asked for, so the same query
//! gives the same buckets on every collector and a gateway can merge them (counts and sums
//! add, least and greatest combine).
//!
//! The window is read from the cache when it holds all of it, else from the file through
//! the time index, newest blocks first; past [`SCAN_MAX`] samples reading stops and the
//! answer says from when on it is complete. Samples before retention's limit
//! ([`super::Shared::visible_from_ms`]) are left out.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering::Relaxed;

use super::line::{parse_head, Line};
use super::query::{SegmentFiles, Source};
use super::Shared;

/// Most buckets per metric a query may ask for.
pub const POINTS_MAX: usize = 2000;
/// Buckets per metric when the query does not say.
pub const POINTS_DEFAULT: usize = 300;
/// Most samples one query reads from a file; the oldest part of a longer window is left out.
pub const SCAN_MAX: u64 = 2_000_000;

/// Bucket lengths, ms: the step of a query is the shortest at least `(end - start) /
/// points` (whole days beyond the ladder).
pub const STEPS_MS: [i64; 22] = [
    1, 10, 100, 250, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000,
    600_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 10_800_000, 21_600_000, 43_200_000,
];

/// A validated series query.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesQuery {
    /// Window start, inclusive, ms.
    pub start_ms: i64,
    /// Window end, inclusive, ms.
    pub end_ms: i64,
    /// Metrics; empty: all.
    pub metrics: Vec<String>,
    /// Buckets per metric wanted at most, 1 to [`POINTS_MAX`].
    pub points: usize,
}

impl SeriesQuery {
    /// The bucket length for this window and number of points.
    pub fn step_ms(&self) -> i64 {
        let span = self.end_ms.abs_diff(self.start_ms).max(1);
        let wanted = span.div_ceil(self.points.max(1) as u64);
        match STEPS_MS.iter().find(|s| **s as u64 >= wanted) {
            Some(step) => *step,
            None => {
                let days = wanted.div_ceil(86_400_000).min(i64::MAX as u64 / 86_400_000);
                days as i64 * 86_400_000
            }
        }
    }
}

/// One bucket: what the samples in it add up to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Samples.
    pub count: u64,
    /// Least value.
    pub min: f64,
    /// Greatest value.
    pub max: f64,
    /// Sum of the values.
    pub sum: f64,
}

impl Bucket {
    fn of(value: f64) -> Bucket {
        Bucket { count: 1, min: value, max: value, sum: value }
    }

    /// Adds `other`'s samples to this bucket.
    pub fn merge(&mut self, other: &Bucket) {
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }
}

/// Buckets per metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Bucket length, ms.
    pub step_ms: i64,
    /// Metric → bucket start (ms) → bucket.
    pub metrics: BTreeMap<String, BTreeMap<i64, Bucket>>,
    /// Samples counted.
    pub samples: u64,
    /// Set when the window was too long to read whole: the time from which the buckets
    /// hold every sample.
    pub complete_from_ms: Option<i64>,
    /// Where the samples were read.
    pub source: Source,
}

struct Builder<'q> {
    query: &'q SeriesQuery,
    /// The window's start, or retention's limit if later.
    from_ms: i64,
    wanted: HashSet<&'q str>,
    step_ms: i64,
    metrics: BTreeMap<String, BTreeMap<i64, Bucket>>,
    samples: u64,
}

impl<'q> Builder<'q> {
    fn new(query: &'q SeriesQuery, visible_from_ms: i64) -> Builder<'q> {
        Builder {
            query,
            from_ms: query.start_ms.max(visible_from_ms),
            wanted: query.metrics.iter().map(String::as_str).collect(),
            step_ms: query.step_ms(),
            metrics: BTreeMap::new(),
            samples: 0,
        }
    }

    fn keeps(&self, ts_ms: i64, metric: &str) -> bool {
        ts_ms >= self.from_ms
            && ts_ms <= self.query.end_ms
            && (self.wanted.is_empty() || self.wanted.contains(metric))
    }

    fn add(&mut self, ts_ms: i64, metric: &str, value: f64) {
        if !self.keeps(ts_ms, metric) {
            return;
        }
        let start = ts_ms.div_euclid(self.step_ms) * self.step_ms;
        let buckets = match self.metrics.get_mut(metric) {
            Some(b) => b,
            None => self.metrics.entry(metric.to_string()).or_default(),
        };
        buckets
            .entry(start)
            .and_modify(|b| b.merge(&Bucket::of(value)))
            .or_insert(Bucket::of(value));
        self.samples += 1;
    }

    fn finish(self, complete_from_ms: Option<i64>, source: Source) -> Series {
        Series {
            step_ms: self.step_ms,
            metrics: self.metrics,
            samples: self.samples,
            complete_from_ms,
            source,
        }
    }
}

/// The series of `uuid` for `query`; `Ok(None)` if the GPU is unknown.
///
/// # Errors
/// The GPU's file cannot be opened or read.
pub fn series(shared: &Shared, uuid: &str, query: &SeriesQuery) -> io::Result<Option<Series>> {
    let mut builder = Builder::new(query, shared.visible_from_ms());
    let from_ms = builder.from_ms;
    let cached = {
        let mut cache = shared.cache.lock().expect("cache lock");
        cache.select(uuid, from_ms, query.end_ms, |s| builder.keeps(s.ts_ms, &s.metric))
    };
    if let Some(samples) = cached {
        shared.stats.cache_hits.fetch_add(1, Relaxed);
        for s in &samples {
            builder.add(s.ts_ms, &s.metric, s.value);
        }
        return Ok(Some(builder.finish(None, Source::Cache)));
    }
    shared.stats.cache_misses.fetch_add(1, Relaxed);
    let blocks = {
        let catalog = shared.catalog.read().expect("catalog lock");
        match catalog.gpus.get(uuid) {
            Some(gpu) => gpu.blocks_for(from_ms, query.end_ms),
            None => return Ok(None),
        }
    };
    let mut complete_from_ms = None;
    let mut files = SegmentFiles::new(shared, uuid);
    let mut bytes = Vec::new();
    let mut lines = 0u64;
    for (i, at) in blocks.iter().enumerate().rev() {
        if lines >= SCAN_MAX {
            // Blocks are in order of their least time: everything from the least time of
            // the blocks read on is complete.
            complete_from_ms = Some(blocks[i + 1].block.ts_min_ms.max(from_ms));
            break;
        }
        let Some(file) = files.get(at.segment)? else { continue };
        bytes.resize((at.end - at.block.pos) as usize, 0);
        file.read_exact_at(&mut bytes, at.block.pos)?;
        for text in bytes.split(|&b| b == b'\n').filter(|t| !t.is_empty()) {
            lines += 1;
            match parse_head(text) {
                Some(head) => builder.add(head.ts_ms, head.metric, head.value),
                None => {
                    if let Some(line) = Line::parse(text) {
                        builder.add(line.ts_ms, &line.metric, line.value);
                    }
                }
            }
        }
    }
    Ok(Some(builder.finish(complete_from_ms, Source::File)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(span_ms: i64, points: usize) -> SeriesQuery {
        SeriesQuery { start_ms: 0, end_ms: span_ms - 1, metrics: vec![], points }
    }

    #[test]
    fn steps_come_from_the_ladder() {
        assert_eq!(query(300_000, 300).step_ms(), 1_000, "5 min in 300 points");
        assert_eq!(query(3_600_000, 300).step_ms(), 15_000, "1 h: 12 s rounds up to 15 s");
        assert_eq!(query(86_400_000, 300).step_ms(), 300_000, "24 h: 288 s rounds up to 5 min");
        assert_eq!(query(10, 300).step_ms(), 1);
        assert_eq!(query(30 * 86_400_000, 2).step_ms(), 15 * 86_400_000, "whole days");
    }

    #[test]
    fn buckets_align_to_the_epoch_and_add_up() {
        let q = SeriesQuery { start_ms: 0, end_ms: 9_999, metrics: vec!["A".into()], points: 10 };
        let mut b = Builder::new(&q, i64::MIN);
        for (ts, v) in [(-1, 9.0), (0, 1.0), (999, 3.0), (1000, 5.0), (10_000, 7.0)] {
            b.add(ts, "A", v);
        }
        b.add(500, "B", 1.0);
        let s = b.finish(None, Source::Cache);
        assert_eq!(s.samples, 3, "out of the window or another metric: left out");
        let a = &s.metrics["A"];
        assert_eq!(a[&0], Bucket { count: 2, min: 1.0, max: 3.0, sum: 4.0 });
        assert_eq!(a[&1000].count, 1);
    }
}
