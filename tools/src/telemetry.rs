//! The telemetry record: what the streamer publishes and the collector consumes, one JSON
//! object per broker record, keyed by the GPU's id. `spec/telemetry.md` specifies it with
//! examples for both CSV layouts.
//!
//! ```json
//! {"timestamp":"2026-11-29T09:12:00.123Z","source_timestamp":"2025-07-18T20:42:34Z",
//!  "uuid":"GPU-5fd4f087-86f3-7a43-b711-4771313afc50","hostname":"mtv5-dgx1-hgpu-031",
//!  "gpu_index":0,"device":"nvidia0","model":"NVIDIA H100 80GB HBM3",
//!  "metrics":{"DCGM_FI_DEV_GPU_UTIL":0.0},
//!  "labels":{"DCGM_FI_DRIVER_VERSION":"535.129.03"},"attributes":{}}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The longest GPU id, in bytes.
pub const GPU_ID_BYTES_MAX: usize = 128;

/// One telemetry record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryRecord {
    /// When the streamer processed the row: RFC 3339 UTC with milliseconds
    /// (`2026-11-29T09:12:00.123Z`). Queries filter and order by this time.
    pub timestamp: String,
    /// The time the CSV row carried, as written there, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_timestamp: Option<String>,
    /// The GPU's id: its UUID, or `<hostname>:<gpu_index>` when the CSV has no UUID.
    /// Always matches [`valid_gpu_id`]. Also the broker record's key.
    pub uuid: String,
    /// Host name, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// GPU index on its host, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_index: Option<u32>,
    /// Device name (`nvidia0`), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// GPU model (`NVIDIA H100 80GB HBM3`), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Numeric metrics by name, in dcgm-exporter naming where a known field maps to one
    /// (`DCGM_FI_DEV_GPU_UTIL`); one entry for a long-layout row, many for a wide one.
    pub metrics: BTreeMap<String, f64>,
    /// Labels parsed from `labels_raw` (long DCGM layout), if any.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Every other non-empty cell, converted to a number, boolean or string.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, serde_json::Value>,
}

/// Whether `id` may name a GPU (and so a file): 1 to 128 bytes of `[A-Za-z0-9._:-]`, and
/// not `.` or `..`.
pub fn valid_gpu_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= GPU_ID_BYTES_MAX
        && id != "."
        && id != ".."
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_ids_are_checked_before_they_name_anything() {
        assert!(valid_gpu_id("GPU-5fd4f087-86f3-7a43-b711-4771313afc50"));
        assert!(valid_gpu_id("mtv5-dgx1-hgpu-031:7"));
        for bad in ["", ".", "..", "../x", "a/b", "a\\b", "%2e%2e%2f", "/etc/passwd", "a\0b", "é"]
        {
            assert!(!valid_gpu_id(bad), "{bad:?} accepted");
        }
        assert!(valid_gpu_id(&"a".repeat(128)));
        assert!(!valid_gpu_id(&"a".repeat(129)));
    }

    #[test]
    fn a_record_round_trips_through_json_without_empty_fields() {
        let r = TelemetryRecord {
            timestamp: "2026-11-29T09:12:00.123Z".into(),
            source_timestamp: None,
            uuid: "host:0".into(),
            hostname: Some("host".into()),
            gpu_index: Some(0),
            device: None,
            model: None,
            metrics: BTreeMap::from([("DCGM_FI_DEV_GPU_TEMP".to_string(), 41.0)]),
            labels: BTreeMap::new(),
            attributes: BTreeMap::new(),
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("labels") && !json.contains("device"));
        assert_eq!(serde_json::from_str::<TelemetryRecord>(&json).unwrap(), r);
    }
}
