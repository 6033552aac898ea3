//! Validation and normalisation: one broker record (a JSON [`TelemetryRecord`]) becomes a
//! [`Parsed`] record with its samples, or a [`BadReason`] that sends it to the dead-letter
//! topic.
//!
//! This runs on the parse workers, in parallel, and touches nothing shared.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::timestamp::{parse_rfc3339_ms, TS_MS_MAX, TS_MS_MIN};
use crate::telemetry::{valid_gpu_id, TelemetryRecord};

/// The longest metric name, in bytes.
pub const METRIC_BYTES_MAX: usize = 128;
/// Most metrics in one record.
pub const METRICS_PER_RECORD_MAX: usize = 1024;

/// Why a record was refused. Each reason has a counter and a name in `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BadReason {
    /// Not JSON, not an object, or a field of the wrong type.
    BadJson,
    /// No `uuid`, or an empty one.
    MissingGpuId,
    /// A `uuid` outside `[A-Za-z0-9._:-]{1,128}` (it would name a file).
    BadGpuId,
    /// No `timestamp`, or one that is not RFC 3339 in years 0000 to 9999.
    BadTimestamp,
    /// No metrics, a metric value that is not a finite number, or a bad metric name.
    BadValue,
    /// A new GPU beyond `--gpus-max`.
    GpuLimit,
}

impl BadReason {
    /// Every reason, in the order `/stats` lists them.
    pub const ALL: [BadReason; 6] = [
        BadReason::BadJson,
        BadReason::MissingGpuId,
        BadReason::BadGpuId,
        BadReason::BadTimestamp,
        BadReason::BadValue,
        BadReason::GpuLimit,
    ];

    /// The reason's name in `/stats` and `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            BadReason::BadJson => "bad_json",
            BadReason::MissingGpuId => "missing_gpu_id",
            BadReason::BadGpuId => "bad_gpu_id",
            BadReason::BadTimestamp => "bad_timestamp",
            BadReason::BadValue => "bad_value",
            BadReason::GpuLimit => "gpu_limit",
        }
    }

    /// Position in [`BadReason::ALL`].
    pub fn index(self) -> usize {
        BadReason::ALL.iter().position(|r| *r == self).expect("listed")
    }
}

/// A refused record: why, and a short detail for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Bad {
    /// The counted reason.
    pub reason: BadReason,
    /// What exactly was wrong, for a WARN line.
    pub detail: String,
}

fn bad(reason: BadReason, detail: impl Into<String>) -> Bad {
    Bad { reason, detail: detail.into() }
}

/// The GPU's identity attributes as a record states them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuIdentity {
    /// Host name.
    pub hostname: Option<String>,
    /// GPU index on its host.
    pub gpu_index: Option<u32>,
    /// Device name (`nvidia0`).
    pub device: Option<String>,
    /// GPU model.
    pub model: Option<String>,
}

/// What all samples of one record share besides time and GPU: shared, not copied, between
/// the samples in the cache.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SampleExtra {
    /// The source's own time, as the record carried it.
    pub source_timestamp: Option<String>,
    /// Labels (dcgm-exporter `labels_raw`).
    pub labels: BTreeMap<String, String>,
    /// Other attributes.
    pub attributes: BTreeMap<String, Value>,
}

impl SampleExtra {
    /// Whether there is nothing to keep.
    pub fn is_empty(&self) -> bool {
        self.source_timestamp.is_none() && self.labels.is_empty() && self.attributes.is_empty()
    }
}

/// A valid record, normalised: one sample per metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// Broker partition.
    pub partition: u32,
    /// Broker offset.
    pub offset: u64,
    /// The GPU id (valid as a file name).
    pub uuid: String,
    /// Identity attributes.
    pub identity: GpuIdentity,
    /// Processing time, ms since the epoch.
    pub ts_ms: i64,
    /// Metric name and value, sorted by name.
    pub metrics: Vec<(String, f64)>,
    /// Shared by every sample of the record, if not empty.
    pub extra: Option<Arc<SampleExtra>>,
}

/// Validates and normalises one record's payload.
///
/// # Errors
/// The [`Bad`] reason when the record must go to the dead-letter topic.
pub fn parse(partition: u32, offset: u64, payload: &[u8]) -> Result<Parsed, Bad> {
    let record: TelemetryRecord = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => return Err(classify(payload, &e)),
    };
    if record.uuid.is_empty() {
        return Err(bad(BadReason::MissingGpuId, "empty uuid"));
    }
    if !valid_gpu_id(&record.uuid) {
        let shown: String = record.uuid.chars().take(64).collect();
        return Err(bad(BadReason::BadGpuId, format!("uuid {shown:?}")));
    }
    let ts_ms = parse_rfc3339_ms(&record.timestamp).map_err(|e| bad(BadReason::BadTimestamp, e))?;
    debug_assert!((TS_MS_MIN..=TS_MS_MAX).contains(&ts_ms));
    check_metrics(&record.metrics)?;
    let extra = SampleExtra {
        source_timestamp: record.source_timestamp,
        labels: record.labels,
        attributes: record.attributes,
    };
    Ok(Parsed {
        partition,
        offset,
        uuid: record.uuid,
        identity: GpuIdentity {
            hostname: record.hostname,
            gpu_index: record.gpu_index,
            device: record.device,
            model: record.model,
        },
        ts_ms,
        metrics: record.metrics.into_iter().collect(),
        extra: (!extra.is_empty()).then(|| Arc::new(extra)),
    })
}

fn check_metrics(metrics: &BTreeMap<String, f64>) -> Result<(), Bad> {
    if metrics.is_empty() {
        return Err(bad(BadReason::BadValue, "no metrics"));
    }
    if metrics.len() > METRICS_PER_RECORD_MAX {
        return Err(bad(BadReason::BadValue, format!("{} metrics", metrics.len())));
    }
    for (name, value) in metrics {
        if !valid_metric_name(name) {
            let shown: String = name.chars().take(64).collect();
            return Err(bad(BadReason::BadValue, format!("metric name {shown:?}")));
        }
        if !value.is_finite() {
            return Err(bad(BadReason::BadValue, format!("{name} = {value}")));
        }
    }
    Ok(())
}

/// A metric name is 1 to 128 bytes without control characters (names outside the
/// Prometheus alphabet are rewritten only in `/metrics`).
pub fn valid_metric_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= METRIC_BYTES_MAX && !name.chars().any(char::is_control)
}

/// Why `serde_json` refused a payload, in the collector's terms (the slow path, for bad
/// records only).
fn classify(payload: &[u8], error: &serde_json::Error) -> Bad {
    let detail = error.to_string();
    let Ok(value) = serde_json::from_slice::<Value>(payload) else {
        if detail.contains("number out of range") {
            return bad(BadReason::BadValue, detail);
        }
        return bad(BadReason::BadJson, detail);
    };
    let Some(object) = value.as_object() else {
        return bad(BadReason::BadJson, "not a JSON object");
    };
    match object.get("uuid") {
        None | Some(Value::Null) => return bad(BadReason::MissingGpuId, "no uuid"),
        Some(Value::String(_)) => {}
        Some(_) => return bad(BadReason::BadGpuId, "uuid is not a string"),
    }
    match object.get("timestamp") {
        Some(Value::String(_)) => {}
        _ => return bad(BadReason::BadTimestamp, "no timestamp string"),
    }
    match object.get("metrics") {
        Some(Value::Object(m)) if m.values().all(Value::is_number) => {
            bad(BadReason::BadJson, detail)
        }
        _ => bad(BadReason::BadValue, "metrics must map names to numbers"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(payload: &str) -> BadReason {
        parse(0, 0, payload.as_bytes()).unwrap_err().reason
    }

    #[test]
    fn a_wide_record_gives_one_sample_per_metric_in_name_order() {
        let json = r#"{"timestamp":"2026-11-29T09:12:00.123Z","uuid":"GPU-1","hostname":"h",
            "gpu_index":3,"metrics":{"B":2.5,"A":1},"labels":{"k":"v"}}"#;
        let p = parse(4, 17, json.as_bytes()).unwrap();
        assert_eq!((p.partition, p.offset, p.uuid.as_str()), (4, 17, "GPU-1"));
        assert_eq!(p.metrics, vec![("A".to_string(), 1.0), ("B".to_string(), 2.5)]);
        assert_eq!(p.identity.gpu_index, Some(3));
        assert_eq!(p.extra.unwrap().labels["k"], "v");
    }

    #[test]
    fn each_kind_of_bad_record_has_its_reason() {
        let ts = r#""timestamp":"2026-11-29T09:12:00.123Z""#;
        assert_eq!(reason("not json"), BadReason::BadJson);
        assert_eq!(reason("[1,2]"), BadReason::BadJson);
        assert_eq!(reason(&format!(r#"{{{ts},"metrics":{{"A":1}}}}"#)), BadReason::MissingGpuId);
        assert_eq!(
            reason(&format!(r#"{{{ts},"uuid":"","metrics":{{"A":1}}}}"#)),
            BadReason::MissingGpuId
        );
        for id in ["../x", "a/b", "%2e%2e%2f", "/etc/passwd", "a\\u0000b", ".."] {
            let json = format!(r#"{{{ts},"uuid":"{id}","metrics":{{"A":1}}}}"#);
            assert_eq!(reason(&json), BadReason::BadGpuId, "{id}");
        }
        assert_eq!(reason(r#"{"uuid":"g","metrics":{"A":1}}"#), BadReason::BadTimestamp);
        assert_eq!(
            reason(r#"{"timestamp":"noon","uuid":"g","metrics":{"A":1}}"#),
            BadReason::BadTimestamp
        );
        assert_eq!(reason(&format!(r#"{{{ts},"uuid":"g","metrics":{{}}}}"#)), BadReason::BadValue);
        assert_eq!(
            reason(&format!(r#"{{{ts},"uuid":"g","metrics":{{"A":"NaN"}}}}"#)),
            BadReason::BadValue
        );
        assert_eq!(
            reason(&format!(r#"{{{ts},"uuid":"g","metrics":{{"A":1e999}}}}"#)),
            BadReason::BadValue
        );
        assert_eq!(reason(&format!(r#"{{{ts},"uuid":"g"}}"#)), BadReason::BadValue);
    }
}
