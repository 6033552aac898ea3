//! One stored sample: the in-memory [`Sample`] and its JSONL line in
//! `<data_dir>/gpus/<uuid>.jsonl` (specified in `spec/collector.md`).
//!
//! ```text
//! {"ts":"2026-11-29T09:12:00.123Z","ts_ms":1795943520123,"metric":"DCGM_FI_DEV_GPU_UTIL",
//!  "value":97,"p":3,"o":1234}
//! ```
//!
//! followed, only where the record had them, by `"src_ts"`, `"labels"`, `"attributes"`, and
//! `"gpu"` (hostname, gpu_index, device, model: written on a file's first line and whenever
//! they change, so a restart learns them back from the file). The GPU id is the file name,
//! not a field. `p` and `o` (broker partition and offset) make writes idempotent and order
//! samples of the same millisecond.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::record::{GpuIdentity, SampleExtra};
use super::timestamp::{format_ms, TS_MS_MAX, TS_MS_MIN};

/// One sample: a metric's value of one GPU at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Processing time, ms since the epoch.
    pub ts_ms: i64,
    /// The value.
    pub value: f64,
    /// Broker offset of the record it came in.
    pub offset: u64,
    /// Broker partition of the record it came in.
    pub partition: u32,
    /// Metric name (interned: samples share it).
    pub metric: Arc<str>,
    /// Source time, labels and attributes of its record, if any.
    pub extra: Option<Arc<SampleExtra>>,
}

/// The total order of samples, the same in the cache, the files, every collector and the
/// gateway: time, then partition and offset (the record), then metric name. Pages of a
/// query follow it, and a cursor names a position in it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SampleKey {
    /// Processing time, ms.
    pub ts_ms: i64,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// Metric.
    pub metric: String,
}

impl Sample {
    /// Compares by [`SampleKey`] order without building keys.
    pub fn cmp_key(&self, other: &Sample) -> Ordering {
        (self.ts_ms, self.partition, self.offset, &*self.metric).cmp(&(
            other.ts_ms,
            other.partition,
            other.offset,
            &*other.metric,
        ))
    }

    /// Whether this sample comes after `key` in [`SampleKey`] order.
    pub fn is_after(&self, key: &SampleKey) -> bool {
        (self.ts_ms, self.partition, self.offset, &*self.metric)
            > (key.ts_ms, key.partition, key.offset, key.metric.as_str())
    }

    /// This sample's position in [`SampleKey`] order.
    pub fn key(&self) -> SampleKey {
        SampleKey {
            ts_ms: self.ts_ms,
            partition: self.partition,
            offset: self.offset,
            metric: self.metric.to_string(),
        }
    }
}

/// The bytes every line of one record ends with: `"src_ts"`, `"labels"`, `"attributes"`
/// (those present), and the closing brace and newline.
pub fn encode_tail(extra: Option<&SampleExtra>, gpu: Option<&GpuIdentity>) -> Vec<u8> {
    let mut tail = Vec::new();
    if let Some(extra) = extra {
        if let Some(src) = &extra.source_timestamp {
            tail.extend_from_slice(b",\"src_ts\":");
            json_into(&mut tail, src);
        }
        if !extra.labels.is_empty() {
            tail.extend_from_slice(b",\"labels\":");
            json_into(&mut tail, &extra.labels);
        }
        if !extra.attributes.is_empty() {
            tail.extend_from_slice(b",\"attributes\":");
            json_into(&mut tail, &extra.attributes);
        }
    }
    if let Some(gpu) = gpu {
        tail.extend_from_slice(b",\"gpu\":");
        let line = GpuLine {
            hostname: gpu.hostname.as_deref().map(Cow::Borrowed),
            gpu_index: gpu.gpu_index,
            device: gpu.device.as_deref().map(Cow::Borrowed),
            model: gpu.model.as_deref().map(Cow::Borrowed),
        };
        json_into(&mut tail, &line);
    }
    tail.extend_from_slice(b"}\n");
    tail
}

fn json_into<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Serialising maps of strings and JSON values into a Vec cannot fail.
    serde_json::to_writer(out, value).expect("serialise to memory");
}

/// Appends one sample's line: the head (`ts`, `ts_ms`, `metric`, `value`, `p`, `o`) then
/// the record's `tail` from [`encode_tail`].
///
/// # Panics
/// If `ts_ms` is out of range or `value` is not finite (both are validated on entry).
pub fn encode_line(
    out: &mut Vec<u8>,
    ts_ms: i64,
    metric: &str,
    value: f64,
    partition: u32,
    offset: u64,
    tail: &[u8],
) {
    assert!(value.is_finite(), "non-finite value reached storage");
    assert!(tail.ends_with(b"}\n"));
    out.extend_from_slice(b"{\"ts\":\"");
    out.extend_from_slice(&format_ms(ts_ms));
    out.extend_from_slice(b"\",\"ts_ms\":");
    let _ = write!(out, "{ts_ms}");
    out.extend_from_slice(b",\"metric\":");
    json_into(out, metric);
    out.extend_from_slice(b",\"value\":");
    json_into(out, &value);
    let _ = write!(out, ",\"p\":{partition},\"o\":{offset}");
    out.extend_from_slice(tail);
}

/// The `"gpu"` object of a line.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct GpuLine<'a> {
    /// Host name.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<Cow<'a, str>>,
    /// GPU index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_index: Option<u32>,
    /// Device.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Cow<'a, str>>,
    /// Model.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Cow<'a, str>>,
}

impl GpuLine<'_> {
    /// The identity it states.
    pub fn to_identity(&self) -> GpuIdentity {
        GpuIdentity {
            hostname: self.hostname.as_ref().map(|s| s.to_string()),
            gpu_index: self.gpu_index,
            device: self.device.as_ref().map(|s| s.to_string()),
            model: self.model.as_ref().map(|s| s.to_string()),
        }
    }
}

/// A line read back.
#[derive(Debug, Deserialize)]
pub struct Line<'a> {
    /// Processing time, ms.
    pub ts_ms: i64,
    /// Metric.
    #[serde(borrow)]
    pub metric: Cow<'a, str>,
    /// Value.
    pub value: f64,
    /// Partition.
    pub p: u32,
    /// Offset.
    pub o: u64,
    /// Source time.
    #[serde(default)]
    pub src_ts: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Attributes.
    #[serde(default)]
    pub attributes: BTreeMap<String, Value>,
    /// Identity, on the lines that carry it.
    #[serde(borrow, default)]
    pub gpu: Option<GpuLine<'a>>,
}

impl Line<'_> {
    /// Parses one line (without its newline); `None` if it is not a valid sample line.
    pub fn parse(bytes: &[u8]) -> Option<Line<'_>> {
        let line: Line<'_> = serde_json::from_slice(bytes).ok()?;
        let sane = (TS_MS_MIN..=TS_MS_MAX).contains(&line.ts_ms) && line.value.is_finite();
        sane.then_some(line)
    }

    /// The sample it holds (`metric` is interned by the caller).
    pub fn into_sample(self, metric: Arc<str>) -> Sample {
        let extra = SampleExtra {
            source_timestamp: self.src_ts,
            labels: self.labels,
            attributes: self.attributes,
        };
        Sample {
            ts_ms: self.ts_ms,
            value: self.value,
            offset: self.o,
            partition: self.p,
            metric,
            extra: (!extra.is_empty()).then(|| Arc::new(extra)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_back_as_written() {
        let extra = SampleExtra {
            source_timestamp: Some("2025-07-18T20:42:34Z".into()),
            labels: BTreeMap::from([("pci".to_string(), "00:1\"e".to_string())]),
            attributes: BTreeMap::from([("n".to_string(), Value::from(3))]),
        };
        let gpu =
            GpuIdentity { hostname: Some("h".into()), gpu_index: Some(1), ..Default::default() };
        let tail = encode_tail(Some(&extra), Some(&gpu));
        let mut out = Vec::new();
        encode_line(&mut out, 1_795_943_520_123, "DCGM_FI_DEV_GPU_UTIL", 97.5, 3, 1234, &tail);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with(r#"{"ts":"2026-11-29T09:12:00.123Z","ts_ms":1795943520123,"#));
        assert!(text.ends_with("}\n") && text.matches('\n').count() == 1);
        let line = Line::parse(&out[..out.len() - 1]).unwrap();
        assert_eq!(line.gpu.as_ref().unwrap().to_identity(), gpu);
        let sample = line.into_sample(Arc::from("DCGM_FI_DEV_GPU_UTIL"));
        assert_eq!(
            (sample.ts_ms, sample.value, sample.partition, sample.offset),
            (1_795_943_520_123, 97.5, 3, 1234)
        );
        assert_eq!(sample.extra.as_deref(), Some(&extra));
    }

    #[test]
    fn bare_lines_stay_short_and_junk_is_not_a_line() {
        let mut out = Vec::new();
        encode_line(&mut out, 0, "A", 1.0, 0, 0, &encode_tail(None, None));
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "{\"ts\":\"1970-01-01T00:00:00.000Z\",\"ts_ms\":0,\"metric\":\"A\",\"value\":1.0,\"p\":0,\"o\":0}\n"
        );
        assert!(Line::parse(b"{\"ts_ms\":0").is_none());
        assert!(Line::parse(b"\0\0\0").is_none());
    }
}

/// The fixed head of a line as the collector writes it, read without a JSON parser.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Head<'a> {
    /// Processing time, ms.
    pub ts_ms: i64,
    /// Metric (needs no unescaping).
    pub metric: &'a str,
    /// Value.
    pub value: f64,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// The rest of the line: `}` or `,"src_ts":...}`.
    pub tail: &'a [u8],
}

/// Reads the head written by [`encode_line`]; `None` for anything else (an escaped metric
/// name, a line written by hand), which the caller then reads with [`Line::parse`].
pub fn parse_head(b: &[u8]) -> Option<Head<'_>> {
    let rest = b.strip_prefix(b"{\"ts\":\"")?;
    let rest = rest.get(24..)?.strip_prefix(b"\",\"ts_ms\":")?;
    let (ts_ms, rest) = split_at_byte(rest, b',')?;
    let rest = rest.strip_prefix(b"\"metric\":\"")?;
    let (metric, rest) = split_at_byte(rest, b'"')?;
    if metric.contains(&b'\\') {
        return None;
    }
    let rest = rest.strip_prefix(b",\"value\":")?;
    let (value, rest) = split_at_byte(rest, b',')?;
    let rest = rest.strip_prefix(b"\"p\":")?;
    let (partition, rest) = split_at_byte(rest, b',')?;
    let rest = rest.strip_prefix(b"\"o\":")?;
    let end = rest.iter().position(|c| *c == b',' || *c == b'}')?;
    let head = Head {
        ts_ms: std::str::from_utf8(ts_ms).ok()?.parse().ok()?,
        metric: std::str::from_utf8(metric).ok()?,
        value: std::str::from_utf8(value).ok()?.parse().ok()?,
        partition: std::str::from_utf8(partition).ok()?.parse().ok()?,
        offset: std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?,
        tail: &rest[end..],
    };
    let sane = (TS_MS_MIN..=TS_MS_MAX).contains(&head.ts_ms) && head.value.is_finite();
    (sane && head.tail.ends_with(b"}")).then_some(head)
}

fn split_at_byte(b: &[u8], stop: u8) -> Option<(&[u8], &[u8])> {
    let at = b.iter().position(|c| *c == stop)?;
    Some((&b[..at], &b[at + 1..]))
}

/// The optional fields of a line's tail.
#[derive(Debug, Deserialize)]
struct TailFields {
    #[serde(default)]
    src_ts: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    attributes: BTreeMap<String, Value>,
}

/// What [`LineReader::read`] made of a line.
#[derive(Debug)]
pub enum ReadLine {
    /// A sample `keep` accepted.
    Sample(Sample),
    /// A sample `keep` refused.
    Skipped,
    /// Not a sample line.
    Bad,
}

/// Reads lines into samples for queries: the head without a JSON parser, metric names
/// shared, and the tail (labels, attributes) parsed once for the consecutive lines of a
/// record, which share it.
#[derive(Debug, Default)]
pub struct LineReader {
    names: std::collections::HashMap<String, Arc<str>>,
    last_tail: Vec<u8>,
    last_extra: Option<Arc<SampleExtra>>,
}

impl LineReader {
    /// Reads one line (without its newline); `keep(ts_ms, metric)` decides before the
    /// tail is looked at.
    pub fn read(&mut self, bytes: &[u8], keep: impl Fn(i64, &str) -> bool) -> ReadLine {
        let Some(head) = parse_head(bytes) else {
            return match Line::parse(bytes) {
                Some(line) if keep(line.ts_ms, &line.metric) => {
                    let metric = self.name(&line.metric);
                    ReadLine::Sample(line.into_sample(metric))
                }
                Some(_) => ReadLine::Skipped,
                None => ReadLine::Bad,
            };
        };
        if !keep(head.ts_ms, head.metric) {
            return ReadLine::Skipped;
        }
        let Some(extra) = self.extra(head.tail) else { return ReadLine::Bad };
        ReadLine::Sample(Sample {
            ts_ms: head.ts_ms,
            value: head.value,
            offset: head.offset,
            partition: head.partition,
            metric: self.name(head.metric),
            extra,
        })
    }

    fn name(&mut self, name: &str) -> Arc<str> {
        if let Some(known) = self.names.get(name) {
            return Arc::clone(known);
        }
        let shared: Arc<str> = Arc::from(name);
        self.names.insert(name.to_string(), Arc::clone(&shared));
        shared
    }

    /// The extra of a tail; `None` (outer) if the tail is not valid.
    #[allow(clippy::option_option)]
    fn extra(&mut self, tail: &[u8]) -> Option<Option<Arc<SampleExtra>>> {
        if tail == b"}" {
            return Some(None);
        }
        if tail != self.last_tail.as_slice() {
            let mut object = Vec::with_capacity(tail.len());
            object.push(b'{');
            object.extend_from_slice(tail.strip_prefix(b",")?);
            let fields: TailFields = serde_json::from_slice(&object).ok()?;
            let extra = SampleExtra {
                source_timestamp: fields.src_ts,
                labels: fields.labels,
                attributes: fields.attributes,
            };
            self.last_extra = (!extra.is_empty()).then(|| Arc::new(extra));
            self.last_tail.clear();
            self.last_tail.extend_from_slice(tail);
        }
        Some(self.last_extra.clone())
    }
}

#[cfg(test)]
mod reader_tests {
    use super::*;

    /// Goal: the fast reader and the JSON parser agree on every line the writer makes,
    /// and the reader falls back to the parser for lines it does not recognise.
    #[test]
    fn the_fast_reader_agrees_with_the_parser() {
        let extra = SampleExtra {
            source_timestamp: Some("x".into()),
            labels: BTreeMap::from([("k".to_string(), "v\"".to_string())]),
            attributes: BTreeMap::new(),
        };
        let gpu = GpuIdentity { model: Some("m".into()), ..Default::default() };
        let tails = [
            encode_tail(None, None),
            encode_tail(Some(&extra), Some(&gpu)),
            encode_tail(Some(&extra), None),
        ];
        let mut reader = LineReader::default();
        for (i, tail) in tails.iter().enumerate() {
            for (metric, value) in [("A", 1.5), ("B\"q", -0.0), ("C", 1e300)] {
                let mut out = Vec::new();
                encode_line(&mut out, -5 + i as i64, metric, value, 7, 1 << 40, tail);
                let bytes = &out[..out.len() - 1];
                let expected = Line::parse(bytes).unwrap().into_sample(Arc::from(metric));
                match reader.read(bytes, |_, _| true) {
                    ReadLine::Sample(s) => {
                        assert_eq!(s, expected, "{}", String::from_utf8_lossy(bytes))
                    }
                    other => panic!("{other:?}"),
                }
                assert_eq!(parse_head(bytes).is_some(), !metric.contains('"'));
            }
        }
        assert!(matches!(reader.read(b"{\"ts\":\"x", |_, _| true), ReadLine::Bad));
        let mut out = Vec::new();
        encode_line(&mut out, 0, "A", 1.0, 0, 0, &tails[0]);
        assert!(matches!(reader.read(&out[..out.len() - 1], |_, m| m != "A"), ReadLine::Skipped));
    }
}
