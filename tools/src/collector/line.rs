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
