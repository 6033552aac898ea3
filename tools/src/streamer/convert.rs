//! One CSV row (its cells, trimmed) into a [`TelemetryRecord`], or the reason it is skipped;
//! and the record into a [`Prepared`] JSON payload whose `timestamp` is filled in when it
//! is sent.
//!
//! Identity first: the `uuid` cell, else `<hostname>:<gpu index>`; it must pass
//! [`valid_gpu_id`]. Then the metrics: long layout, `{metric_name: value}`; wide layout,
//! every other cell that holds a number. Every other non-empty cell is an attribute.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::telemetry::{valid_gpu_id, TelemetryRecord};

use super::cell;
use super::labels;
use super::schema::{Layout, Role, Schema};

/// Why a row is not published. Each reason has its own counter and a stable name
/// (`spec/telemetry.md`, "Skipped rows").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// The row has a different number of cells than the header.
    RaggedRow,
    /// A cell is not valid UTF-8.
    BadUtf8,
    /// The row is longer than the row limit.
    RowTooLarge,
    /// Neither a UUID nor a host name with a GPU index.
    MissingGpuId,
    /// The GPU id has characters outside `[A-Za-z0-9._:-]` or is too long.
    InvalidGpuId,
    /// Long layout: the metric name is empty.
    MissingMetric,
    /// Long layout: the value is not a finite number.
    BadValue,
}

impl SkipReason {
    /// Every reason, in the order summaries print them.
    pub const ALL: [SkipReason; 7] = [
        SkipReason::RaggedRow,
        SkipReason::BadUtf8,
        SkipReason::RowTooLarge,
        SkipReason::MissingGpuId,
        SkipReason::InvalidGpuId,
        SkipReason::MissingMetric,
        SkipReason::BadValue,
    ];

    /// The reason's name in logs and summaries (`missing_gpu_id`).
    pub fn name(self) -> &'static str {
        match self {
            SkipReason::RaggedRow => "ragged_row",
            SkipReason::BadUtf8 => "bad_utf8",
            SkipReason::RowTooLarge => "row_too_large",
            SkipReason::MissingGpuId => "missing_gpu_id",
            SkipReason::InvalidGpuId => "invalid_gpu_id",
            SkipReason::MissingMetric => "missing_metric",
            SkipReason::BadValue => "bad_value",
        }
    }

    /// Position in [`SkipReason::ALL`], for counter arrays.
    pub fn index(self) -> usize {
        SkipReason::ALL.iter().position(|&r| r == self).expect("every reason is listed")
    }
}

/// A row that was not turned into a record: why, and a detail for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// The counted reason.
    pub reason: SkipReason,
    /// What exactly was wrong, for people (`expected 12 cells, got 9`).
    pub detail: String,
}

impl Skip {
    /// A skip with its detail.
    pub fn new(reason: SkipReason, detail: impl Into<String>) -> Skip {
        Skip { reason, detail: detail.into() }
    }
}

/// A converted row: the record (its `timestamp` not set yet) and whether its labels cell
/// was partly malformed (a warning, not a skip).
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// The record; `timestamp` holds [`TIMESTAMP_PLACEHOLDER`].
    pub record: TelemetryRecord,
    /// Whether `labels_raw` had text that did not parse.
    pub labels_malformed: bool,
}

/// What `timestamp` holds until the record is sent: as long as every real value.
pub const TIMESTAMP_PLACEHOLDER: &str = "0000-00-00T00:00:00.000Z";

/// Length of an RFC 3339 UTC time with milliseconds (`2026-11-29T09:12:00.123Z`).
pub const TIMESTAMP_BYTES: usize = 24;

/// Converts one row of cells (as many as the header has columns).
///
/// # Errors
/// The [`Skip`] that says why the row cannot be published.
pub fn convert(schema: &Schema, cells: &[&str]) -> Result<Converted, Skip> {
    debug_assert_eq!(cells.len(), schema.columns.len());
    let cell = |at: Option<usize>| at.map(|i| cells[i]).filter(|c| !cell::is_missing(c));
    let hostname = cell(schema.hostname);
    let index_text = cell(schema.gpu_index);
    let gpu_index = index_text.and_then(|t| t.parse::<u32>().ok());
    let Some(uuid) = gpu_id(cell(schema.uuid), hostname, gpu_index) else {
        return Err(Skip::new(SkipReason::MissingGpuId, missing_id_detail(schema)));
    };
    let uuid = uuid.into_owned();
    if !valid_gpu_id(&uuid) {
        let shown: String = uuid.chars().take(64).collect();
        return Err(Skip::new(SkipReason::InvalidGpuId, format!("GPU id {shown:?}")));
    }
    let mut record = TelemetryRecord {
        timestamp: TIMESTAMP_PLACEHOLDER.to_string(),
        source_timestamp: cell(schema.time).map(str::to_string),
        uuid,
        hostname: hostname.map(str::to_string),
        gpu_index,
        device: cell(schema.device).map(str::to_string),
        model: cell(schema.model).map(str::to_string),
        metrics: BTreeMap::new(),
        labels: BTreeMap::new(),
        attributes: BTreeMap::new(),
    };
    let mut labels_malformed = false;
    if schema.layout == Layout::Long {
        let (name, value) = long_metric(schema, cells)?;
        record.metrics.insert(name.to_string(), value);
        if let Some(raw) = cell(schema.labels) {
            let parsed = labels::parse(raw);
            record.labels = parsed.map;
            labels_malformed = parsed.malformed;
        }
    }
    fill_fields(schema, cells, &mut record);
    if gpu_index.is_none() {
        if let (Some(text), Some(i)) = (index_text, schema.gpu_index) {
            record.attributes.insert(schema.columns[i].attribute.clone(), text.into());
        }
    }
    Ok(Converted { record, labels_malformed })
}

/// A row's GPU id from its identity cells (trimmed, missing ones `None`): the UUID, else
/// `<host>:<index>`; `None` when the row has neither. Not validated here.
pub fn gpu_id<'c>(
    uuid: Option<&'c str>,
    host: Option<&str>,
    index: Option<u32>,
) -> Option<Cow<'c, str>> {
    match (uuid, host, index) {
        (Some(uuid), _, _) => Some(Cow::Borrowed(uuid)),
        (None, Some(host), Some(index)) => Some(Cow::Owned(format!("{host}:{index}"))),
        _ => None,
    }
}

/// The key that picks a row's `--shard`: the GPU id [`convert`] gives the row (the record's
/// `uuid` and broker key), computed from the identity cells alone. `cell(i)` is column `i`'s
/// trimmed text, `None` if it is not UTF-8. `None` when the row has no valid id (no UUID
/// and no host with a u32 index, an identity cell that is not UTF-8, or an id that fails
/// [`valid_gpu_id`]): such a row goes by row number. The caller checks the cell count.
pub fn shard_key<'c>(
    schema: &Schema,
    cell: impl Fn(usize) -> Option<&'c str>,
) -> Option<Cow<'c, str>> {
    let mut cells: [Option<&'c str>; 3] = [None; 3];
    for (slot, at) in cells.iter_mut().zip([schema.uuid, schema.hostname, schema.gpu_index]) {
        if let Some(i) = at {
            let text = cell(i)?;
            *slot = Some(text).filter(|t| !cell::is_missing(t));
        }
    }
    let [uuid, host, index] = cells;
    let id = gpu_id(uuid, host, index.and_then(|t| t.parse::<u32>().ok()))?;
    valid_gpu_id(&id).then_some(id)
}

fn missing_id_detail(schema: &Schema) -> &'static str {
    if schema.has_identity() {
        "empty uuid, and no host name with a numeric gpu index"
    } else {
        "the file has no uuid column, nor hostname and gpu index columns"
    }
}

/// The metric of a long-layout row.
fn long_metric<'c>(schema: &Schema, cells: &[&'c str]) -> Result<(&'c str, f64), Skip> {
    let name = schema.metric_name.map_or("", |i| cells[i]);
    if name.is_empty() {
        return Err(Skip::new(SkipReason::MissingMetric, "empty metric_name"));
    }
    let text = schema.value.map_or("", |i| cells[i]);
    match cell::parse_number(text) {
        Some(value) => Ok((name, value)),
        None => {
            let shown: String = text.chars().take(32).collect();
            Err(Skip::new(SkipReason::BadValue, format!("{name} value {shown:?} is not a number")))
        }
    }
}

/// Ordinary columns: metrics (wide layout, numeric cells) and attributes.
fn fill_fields(schema: &Schema, cells: &[&str], record: &mut TelemetryRecord) {
    for (column, &text) in schema.columns.iter().zip(cells) {
        if column.role != Role::Field || cell::is_missing(text) {
            continue;
        }
        if schema.layout == Layout::Wide {
            if let Some(n) = cell::parse_number(text) {
                record.metrics.insert(column.metric.clone(), n);
                continue;
            }
        }
        if let Some(value) = cell::attribute(text) {
            record.attributes.insert(column.attribute.clone(), value);
        }
    }
}

/// A record serialized once, ready to send any number of times: the broker key (the GPU
/// id) and the JSON text, whose first field is `timestamp` with a placeholder that
/// [`Prepared::write`] overwrites in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The broker record key: the GPU id.
    pub key: Box<str>,
    /// FNV-1a of the key (`fnv1a_32`, as the broker's partitioning), which picks the
    /// record's shard and worker (computed once).
    pub key_hash: u32,
    json: Box<[u8]>,
}

/// Where the timestamp's text starts in the JSON: after `{"timestamp":"`.
const TIMESTAMP_AT: usize = 14;

impl Prepared {
    /// Serializes `record` (its `timestamp` must be [`TIMESTAMP_PLACEHOLDER`]).
    ///
    /// # Panics
    /// If `timestamp` is not the placeholder, or is not the first field of the JSON (a
    /// change to [`TelemetryRecord`] that this code must follow).
    pub fn new(record: &TelemetryRecord) -> Prepared {
        assert_eq!(record.timestamp, TIMESTAMP_PLACEHOLDER, "set when sent");
        let json = serde_json::to_vec(record).expect("a record always serializes");
        assert_eq!(&json[..TIMESTAMP_AT], br#"{"timestamp":""#, "timestamp comes first");
        let key_hash = super::key_hash(&record.uuid);
        let key = record.uuid.clone().into_boxed_str();
        Prepared { key, key_hash, json: json.into_boxed_slice() }
    }

    /// The JSON length in bytes.
    pub fn len(&self) -> usize {
        self.json.len()
    }

    /// Whether the JSON is empty (never: kept for the `len` convention).
    pub fn is_empty(&self) -> bool {
        self.json.is_empty()
    }

    /// Writes the JSON with `timestamp` into `out` (cleared first).
    pub fn write(&self, timestamp: &[u8; TIMESTAMP_BYTES], out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.json);
        out[TIMESTAMP_AT..TIMESTAMP_AT + TIMESTAMP_BYTES].copy_from_slice(timestamp);
    }
}

/// The processing time as RFC 3339 UTC with milliseconds, formatted once per millisecond.
#[derive(Debug, Default)]
pub struct Clock {
    millis: i64,
    text: [u8; TIMESTAMP_BYTES],
}

impl Clock {
    /// The current time's text.
    pub fn now(&mut self) -> [u8; TIMESTAMP_BYTES] {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        if millis != self.millis || self.text[0] == 0 {
            self.millis = millis;
            self.text = format_millis(millis);
        }
        self.text
    }
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
///
/// # Panics
/// For times outside the years 1000 to 9999, which do not fit the fixed width.
pub fn format_millis(millis: i64) -> [u8; TIMESTAMP_BYTES] {
    let time = jiff::Timestamp::from_millisecond(millis).expect("time in range");
    let text = format!("{time:.3}");
    text.as_bytes().try_into().expect("a 24-byte RFC 3339 time")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(header: &str) -> Schema {
        Schema::from_header(&header.split(',').collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(&format_millis(0), b"1970-01-01T00:00:00.000Z");
        assert_eq!(&format_millis(1_752_871_354_007), b"2025-07-18T20:42:34.007Z");
        let now = Clock::default().now();
        assert!(now.starts_with(b"20") && now.ends_with(b"Z"), "{now:?}");
    }

    #[test]
    fn the_prepared_json_gets_its_timestamp_in_place() {
        let s = schema("uuid,temperature.gpu");
        let c = convert(&s, &["GPU-1", "41"]).unwrap();
        let p = Prepared::new(&c.record);
        let mut out = Vec::new();
        p.write(b"2026-11-29T09:12:00.123Z", &mut out);
        let back: TelemetryRecord = serde_json::from_slice(&out).unwrap();
        assert_eq!(back.timestamp, "2026-11-29T09:12:00.123Z");
        assert_eq!(back.metrics["DCGM_FI_DEV_GPU_TEMP"], 41.0);
        assert_eq!(&*p.key, "GPU-1");
    }

    #[test]
    fn identity_falls_back_to_host_and_index_and_is_validated() {
        let s = schema("hostname,gpu_id,uuid,power.draw");
        let c = convert(&s, &["node-1", "3", "", "250 W"]).unwrap();
        assert_eq!(c.record.uuid, "node-1:3");
        assert_eq!(c.record.gpu_index, Some(3));
        let skip = |cells: &[&str]| convert(&s, cells).unwrap_err().reason;
        assert_eq!(skip(&["node-1", "", "", "1"]), SkipReason::MissingGpuId);
        assert_eq!(skip(&["node-1", "x", "", "1"]), SkipReason::MissingGpuId);
        assert_eq!(skip(&["", "", "[N/A]", "1"]), SkipReason::MissingGpuId);
        assert_eq!(skip(&["node/1", "0", "", "1"]), SkipReason::InvalidGpuId);
        assert_eq!(skip(&["n", "0", "../../etc/x", "1"]), SkipReason::InvalidGpuId);
    }

    #[test]
    fn the_shard_key_is_the_records_uuid_or_none() {
        let s = schema("hostname,gpu_id,uuid,metric_name,value");
        let key =
            |cells: &[&'static str]| shard_key(&s, |i| Some(cells[i])).map(|k| k.into_owned());
        for cells in [
            ["node-1", "3", "GPU-1", "M", "1"],
            ["node-1", "3", "", "M", "1"],
            ["node-1", "3", "[N/A]", "", "x"], // skipped for its metric: the key still counts
            ["", "", "GPU-2", "M", "NaN"],
        ] {
            let id = convert(&s, &cells).map(|c| c.record.uuid);
            let expected =
                if cells[2].starts_with("GPU") { cells[2].to_string() } else { "node-1:3".into() };
            assert_eq!(key(&cells).as_deref(), Some(expected.as_str()), "{cells:?}");
            if let Ok(id) = id {
                assert_eq!(id, expected);
            }
        }
        for cells in [
            ["node-1", "x", "", "M", "1"],
            ["", "0", "N/A", "M", "1"],
            ["n", "0", "../../etc/x", "M", "1"],
            ["node/1", "0", "", "M", "1"],
        ] {
            assert_eq!(key(&cells), None, "{cells:?}");
            let reason = convert(&s, &cells).unwrap_err().reason;
            assert!(matches!(reason, SkipReason::MissingGpuId | SkipReason::InvalidGpuId));
        }
        // An identity cell that is not UTF-8: no key (the row is skipped as bad_utf8).
        assert_eq!(shard_key(&s, |i| (i != 2).then_some("1")), None);
        // A column that plays no identity role may be anything.
        assert!(shard_key(&s, |i| (i != 4).then_some("1")).is_some());
    }

    #[test]
    fn long_rows_need_a_metric_name_and_a_finite_value() {
        let s = schema("uuid,metric_name,value,labels_raw,pod");
        let c = convert(&s, &["GPU-1", "DCGM_FI_DEV_GPU_UTIL", "97", "gpu=\"0\"", "p"]).unwrap();
        assert_eq!(c.record.metrics["DCGM_FI_DEV_GPU_UTIL"], 97.0);
        assert_eq!(c.record.labels["gpu"], "0");
        assert_eq!(c.record.attributes["pod"], "p");
        assert!(!c.labels_malformed);
        let c = convert(&s, &["GPU-1", "M", "1", "gpu=\"0\",oops", ""]).unwrap();
        assert!(c.labels_malformed);
        assert_eq!(c.record.labels["gpu"], "0");
        for bad in ["NaN", "inf", "", "high", "[N/A]"] {
            let e = convert(&s, &["GPU-1", "M", bad, "", ""]).unwrap_err();
            assert_eq!(e.reason, SkipReason::BadValue, "{bad:?}");
        }
        let e = convert(&s, &["GPU-1", "", "1", "", ""]).unwrap_err();
        assert_eq!(e.reason, SkipReason::MissingMetric);
    }

    #[test]
    fn wide_rows_split_numbers_into_metrics_and_the_rest_into_attributes() {
        let s =
            schema("uuid,pstate,fan.speed [%],persistence_mode,ecc.errors,pcie.link.width.current");
        let c = convert(&s, &["GPU-1", "P0", "[N/A]", "Enabled", "", "16"]).unwrap();
        let r = c.record;
        assert_eq!(r.metrics, BTreeMap::from([("pcie_link_width_current".into(), 16.0)]));
        assert_eq!(r.attributes["pstate"], "P0");
        assert_eq!(r.attributes["persistence_mode"], true);
        assert_eq!(r.attributes.len(), 2);
    }
}
