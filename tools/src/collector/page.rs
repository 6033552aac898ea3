//! Writes a telemetry page as JSON by hand: the same document as
//! [`crate::api::TelemetryPage`], several times faster than going through `serde`'s
//! struct serialiser, because a page of tens of thousands of samples repeats the same few
//! metric names, times and labels. Field names are constants, each metric name is escaped
//! once per page, each time formatted once, and the labels and attributes of a record
//! (shared by its samples) serialised once.

use std::io::Write;

use super::line::Sample;
use super::query::{encode_cursor, Page};
use super::record::SampleExtra;
use super::timestamp::format_ms;

/// Bytes a sample takes in a page, about; used to size the buffer.
const SAMPLE_BYTES_GUESS: usize = 200;

/// The page as JSON.
pub fn write_page(gpu_id: &str, page: &Page) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + page.samples.len() * SAMPLE_BYTES_GUESS);
    out.extend_from_slice(b"{\"gpu_id\":");
    json_into(&mut out, gpu_id);
    let _ = write!(out, ",\"count\":{},\"source\":\"{}\"", page.samples.len(), page.source.name());
    if let Some(next) = &page.next {
        out.extend_from_slice(b",\"next_cursor\":");
        json_into(&mut out, &encode_cursor(next));
    }
    out.extend_from_slice(b",\"samples\":[");
    let mut writer = SampleWriter::default();
    for (i, sample) in page.samples.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        writer.write(&mut out, sample);
    }
    out.extend_from_slice(b"]}");
    out
}

fn json_into<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Strings, numbers and maps of them serialise into memory without error.
    serde_json::to_writer(out, value).expect("serialise to memory");
}

/// Most distinct metric names whose JSON a page keeps; past it names are escaped each time.
const METRIC_MEMOS_MAX: usize = 64;

/// Memos of one page.
#[derive(Default)]
struct SampleWriter {
    /// (address of a shared metric name, its JSON string).
    metrics: Vec<(usize, Vec<u8>)>,
    last_ts_ms: Option<i64>,
    last_ts: [u8; 24],
    /// The last extra written and its JSON fields (`,"labels":{...}`); records of one
    /// GPU usually have equal extras, so equal content is reused too.
    last_extra: Option<(std::sync::Arc<SampleExtra>, Vec<u8>)>,
}

impl SampleWriter {
    fn write(&mut self, out: &mut Vec<u8>, sample: &Sample) {
        if self.last_ts_ms != Some(sample.ts_ms) {
            self.last_ts = format_ms(sample.ts_ms);
            self.last_ts_ms = Some(sample.ts_ms);
        }
        out.extend_from_slice(b"{\"timestamp\":\"");
        out.extend_from_slice(&self.last_ts);
        out.extend_from_slice(b"\",\"metric\":");
        self.write_metric(out, &sample.metric);
        out.extend_from_slice(b",\"value\":");
        json_into(out, &sample.value);
        out.extend_from_slice(b",\"partition\":");
        push_u64(out, u64::from(sample.partition));
        out.extend_from_slice(b",\"offset\":");
        push_u64(out, sample.offset);
        if let Some(extra) = &sample.extra {
            let same = self
                .last_extra
                .as_ref()
                .is_some_and(|(last, _)| std::sync::Arc::ptr_eq(last, extra) || **last == **extra);
            if !same {
                self.last_extra = Some((std::sync::Arc::clone(extra), extra_json(extra)));
            }
            out.extend_from_slice(&self.last_extra.as_ref().expect("just set").1);
        }
        out.push(b'}');
    }

    fn write_metric(&mut self, out: &mut Vec<u8>, metric: &std::sync::Arc<str>) {
        let key = metric.as_ptr() as usize;
        if let Some((_, json)) = self.metrics.iter().find(|(k, _)| *k == key) {
            out.extend_from_slice(json);
            return;
        }
        let mut json = Vec::new();
        json_into(&mut json, &**metric);
        out.extend_from_slice(&json);
        if self.metrics.len() < METRIC_MEMOS_MAX {
            self.metrics.push((key, json));
        }
    }
}

fn extra_json(extra: &SampleExtra) -> Vec<u8> {
    let mut json = Vec::new();
    if let Some(src) = &extra.source_timestamp {
        json.extend_from_slice(b",\"source_timestamp\":");
        json_into(&mut json, src);
    }
    if !extra.labels.is_empty() {
        json.extend_from_slice(b",\"labels\":");
        json_into(&mut json, &extra.labels);
    }
    if !extra.attributes.is_empty() {
        json.extend_from_slice(b",\"attributes\":");
        json_into(&mut json, &extra.attributes);
    }
    json
}

/// Appends `n` in decimal.
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::api::{TelemetryPage, TelemetrySample};
    use crate::collector::line::SampleKey;
    use crate::collector::query::Source;
    use crate::collector::timestamp::format_ms_string;

    /// Goal: the hand-written JSON is the `TelemetryPage` document. Method: write a page
    /// with shared and distinct extras, parse it as `TelemetryPage`, and compare with the
    /// page built field by field.
    #[test]
    fn the_written_page_parses_as_a_telemetry_page() {
        let extra = Arc::new(SampleExtra {
            source_timestamp: Some("2025-07-18 20:42:34".into()),
            labels: BTreeMap::from([("pci\"".to_string(), "00:1E".to_string())]),
            attributes: BTreeMap::from([("n".to_string(), serde_json::json!([1, "x"]))]),
        });
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("DCGM_A"), Arc::from("odd \"name\""));
        let samples: Vec<Sample> = (0..6)
            .map(|i| Sample {
                ts_ms: 1_795_943_520_000 + i / 2,
                value: i as f64 * 0.5,
                offset: i as u64,
                partition: 2,
                metric: if i % 2 == 0 { Arc::clone(&a) } else { Arc::clone(&b) },
                extra: if i < 4 { Some(Arc::clone(&extra)) } else { None },
            })
            .collect();
        let next = SampleKey { ts_ms: 5, partition: 1, offset: 2, metric: "m".into() };
        let page =
            Page { samples: samples.clone(), next: Some(next.clone()), source: Source::Cache };
        let parsed: TelemetryPage = serde_json::from_slice(&write_page("GPU-1", &page)).unwrap();
        let expected = TelemetryPage {
            gpu_id: "GPU-1".into(),
            count: 6,
            source: "cache".into(),
            next_cursor: Some(encode_cursor(&next)),
            samples: samples
                .iter()
                .map(|s| TelemetrySample {
                    timestamp: format_ms_string(s.ts_ms),
                    metric: s.metric.to_string(),
                    value: s.value,
                    partition: s.partition,
                    offset: s.offset,
                    source_timestamp: s.extra.as_ref().and_then(|e| e.source_timestamp.clone()),
                    labels: s.extra.as_ref().map(|e| e.labels.clone()).unwrap_or_default(),
                    attributes: s.extra.as_ref().map(|e| e.attributes.clone()).unwrap_or_default(),
                })
                .collect(),
        };
        assert_eq!(parsed, expected);
        let mut digits = Vec::new();
        for n in [0, 7, 10, u64::MAX] {
            push_u64(&mut digits, n);
            digits.push(b' ');
        }
        assert_eq!(digits, format!("0 7 10 {} ", u64::MAX).as_bytes());
        let empty = Page { samples: Vec::new(), next: None, source: Source::File };
        let text = String::from_utf8(write_page("g", &empty)).unwrap();
        assert_eq!(text, r#"{"gpu_id":"g","count":0,"source":"file","samples":[]}"#);
    }
}
