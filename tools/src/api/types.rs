//! Response bodies of the API, with their OpenAPI schemas.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The error envelope (as the Prometheus HTTP API's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Always `"error"`.
    #[schema(example = "error")]
    pub status: String,
    /// `bad_data`, `not_found`, `unauthorized`, `unavailable` or `internal`.
    #[serde(rename = "errorType")]
    #[schema(example = "bad_data")]
    pub error_type: String,
    /// What was wrong, for people.
    #[schema(example = "limit must be an integer from 1 to 100000")]
    pub error: String,
    /// The query or path parameter at fault, if one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "limit")]
    pub param: Option<String>,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthBody {
    /// `ok` (200); otherwise `unavailable` or `degraded` (503).
    #[schema(example = "ok")]
    pub status: String,
    /// Version of the server.
    #[schema(example = "0.1.0")]
    pub version: String,
    /// When this answer was made (RFC 3339, UTC).
    #[schema(format = DateTime, max_length = 64, example = "2026-11-29T09:12:00.123Z")]
    pub timestamp: String,
    /// The collector's broker connection (collectors only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<BrokerHealth>,
    /// Each collector behind a gateway (gateways only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collectors: Option<Vec<DownstreamHealth>>,
}

/// A collector's broker connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BrokerHealth {
    /// The broker answered the last check (once a second).
    pub connected: bool,
    /// The consumer is subscribed to the topic.
    pub consuming: bool,
    /// Consumer group.
    pub group: String,
    /// Time of the last successful poll, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub last_poll: Option<String>,
}

/// One collector as a gateway sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DownstreamHealth {
    /// The collector's base URL.
    pub url: String,
    /// Its status (`ok`, `unavailable`), or `unreachable`.
    pub status: String,
    /// Its HTTP status, if it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Why it is not healthy, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One GPU with telemetry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GpuInfo {
    /// The GPU id (its UUID, or `<hostname>:<gpu_index>`).
    #[schema(example = "GPU-5fd4f087-86f3-7a43-b711-4771313afc50")]
    pub uuid: String,
    /// Host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "mtv5-dgx1-hgpu-031")]
    pub hostname: Option<String>,
    /// GPU index on its host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 0)]
    pub gpu_index: Option<u32>,
    /// Device name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "nvidia0")]
    pub device: Option<String>,
    /// GPU model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "NVIDIA H100 80GB HBM3")]
    pub model: Option<String>,
    /// Earliest sample time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub first_seen: Option<String>,
    /// Latest sample time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub last_seen: Option<String>,
    /// Samples stored.
    pub sample_count: u64,
}

/// `GET /api/v1/gpus`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GpuList {
    /// Number of GPUs.
    pub count: usize,
    /// The GPUs, by id.
    pub gpus: Vec<GpuInfo>,
}

/// One sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TelemetrySample {
    /// Processing time (RFC 3339, UTC, ms).
    #[schema(format = DateTime, max_length = 64, example = "2026-11-29T09:12:00.123Z")]
    pub timestamp: String,
    /// Metric name (dcgm-exporter naming).
    #[schema(example = "DCGM_FI_DEV_GPU_UTIL")]
    pub metric: String,
    /// Value.
    #[schema(example = 97.0)]
    pub value: f64,
    /// Broker partition of the record it came in.
    pub partition: u32,
    /// Broker offset of the record it came in.
    pub offset: u64,
    /// The source's own time, as it was written there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_timestamp: Option<String>,
    /// Labels of the record.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Other attributes of the record.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub attributes: BTreeMap<String, serde_json::Value>,
}

/// `GET /api/v1/gpus/{gpu_id}/telemetry`: one page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TelemetryPage {
    /// The GPU id.
    pub gpu_id: String,
    /// Samples in this page.
    pub count: usize,
    /// Where the page came from: `cache`, `file`, or `merged` (a gateway over several
    /// collectors).
    #[schema(value_type = AnswerSource, example = "cache")]
    pub source: String,
    /// Pass as `cursor` (with the same other parameters) to get the next page; absent on
    /// the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Cursor>)]
    pub next_cursor: Option<String>,
    /// Samples ordered by time, then partition, offset and metric; newest first for
    /// `order=desc`.
    pub samples: Vec<TelemetrySample>,
}

/// A GPU id in a path: 1 to 128 characters of `A-Z a-z 0-9 . _ : -`, but not `.` or
/// `..`.
#[derive(Debug)]
pub struct GpuId;

/// A metric name in a query: 1 to 128 characters, no control characters.
#[derive(Debug)]
pub struct MetricName;

/// A telemetry cursor: a position in sample order, as `next_cursor` gives it.
#[derive(Debug)]
pub struct Cursor;

/// A string schema of the OpenAPI document, its constraints from the constants the code
/// checks with (so the two cannot drift apart).
fn string_schema(
    description: &str,
    (min, max): (usize, usize),
    pattern: &str,
    example: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .min_length(Some(min))
        .max_length(Some(max))
        .pattern(Some(pattern))
        .examples([serde_json::json!(example)])
        .into()
}

impl utoipa::PartialSchema for GpuId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(
            "A GPU id: its UUID, or `<hostname>:<gpu_index>`. 1 to 128 characters of \
             A-Z a-z 0-9 . _ : -, but not `.` or `..`.",
            (1, crate::telemetry::GPU_ID_BYTES_MAX),
            crate::api::params::GPU_ID_PATTERN,
            "GPU-5fd4f087-86f3-7a43-b711-4771313afc50",
        )
    }
}
impl ToSchema for GpuId {}

impl utoipa::PartialSchema for MetricName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(
            "A metric name: 1 to 128 characters, no control characters (Unicode Cc).",
            (1, crate::api::params::METRIC_PARAM_CHARS_MAX),
            crate::api::params::METRIC_PATTERN,
            "DCGM_FI_DEV_GPU_UTIL",
        )
    }
}
impl ToSchema for MetricName {}

impl utoipa::PartialSchema for Cursor {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use crate::collector::query::{CURSOR_METRIC_BYTES_MAX, CURSOR_PATTERN};
        string_schema(
            "A position in sample order, as `next_cursor` gives it: 40 lowercase hex \
             digits, then up to 128 bytes in hex. Any such text is a position.",
            (40, 40 + 2 * CURSOR_METRIC_BYTES_MAX),
            CURSOR_PATTERN,
            "800001950e7a25c00000000300000000000000634443474d5f46495f4445565f4750555f5554494c",
        )
    }
}
impl ToSchema for Cursor {}

/// The order of a telemetry page: `asc`, oldest first, or `desc`, newest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SampleOrder {
    /// Oldest first: time, then partition, offset and metric.
    #[default]
    Asc,
    /// Newest first: the reverse.
    Desc,
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AnswerSource {
    /// The collector's memory cache.
    Cache,
    /// The collector's files.
    File,
    /// A gateway's merge of several collectors' answers.
    Merged,
}

/// Query parameters of `GET /api/v1/gpus/{gpu_id}/telemetry`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TelemetryParams {
    /// Earliest sample time, inclusive (RFC 3339 `date-time`; an offset, lowercase `t` or
    /// `z` and any number of fraction digits are fine). Default: the beginning. Not after
    /// `end_time` (400).
    #[param(value_type = Option<String>, format = DateTime, max_length = 64, example = "2026-11-29T09:00:00Z")]
    pub start_time: Option<String>,
    /// Latest sample time, inclusive (RFC 3339 `date-time`). Default: the end.
    #[param(value_type = Option<String>, format = DateTime, max_length = 64, example = "2026-11-29T10:00:00Z")]
    pub end_time: Option<String>,
    /// Only these metrics (repeat the parameter for several, at most 32). Default: all.
    /// A name no sample has matches nothing (200, no samples).
    #[param(value_type = Option<Vec<MetricName>>, max_items = 32, explode = true,
        style = Form)]
    pub metric: Option<Vec<String>>,
    /// Most samples in the page.
    #[param(minimum = 1, maximum = 100000, default = 1000, example = 1000)]
    pub limit: Option<u32>,
    /// `asc`: oldest first (the default, so a client paging from `start_time` forward
    /// keeps working); `desc`: newest first, so `?order=desc&limit=3` is the latest three
    /// samples. Cursors continue in the order asked.
    #[param(value_type = Option<SampleOrder>, default = "asc")]
    pub order: Option<SampleOrder>,
    /// `next_cursor` of the previous page (give the other parameters again, unchanged):
    /// the page holds the samples past it in `order`.
    #[param(value_type = Option<Cursor>)]
    pub cursor: Option<String>,
}

/// The cache part of `/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CacheStatsBody {
    /// GPUs with samples in the cache.
    pub gpus: usize,
    /// Samples held.
    pub samples: usize,
    /// Samples held at most (all GPUs).
    pub samples_max: usize,
    /// Samples held at most per GPU.
    pub samples_per_gpu: usize,
    /// Whole GPUs evicted.
    pub evictions: u64,
    /// Telemetry queries answered from the cache.
    pub hits: u64,
    /// Telemetry queries answered from files.
    pub misses: u64,
    /// hits / (hits + misses); 0 before the first query.
    pub hit_rate: f64,
}

/// The retention part of `/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RetentionStatsBody {
    /// `--retention-hours`: samples older than this are deleted; 0: kept for ever.
    pub hours: u64,
    /// `--retention-bytes`: the cap on the files' size; 0: none.
    pub bytes_max: u64,
    /// The earliest sample time queries return now (RFC 3339); absent without retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visible_from: Option<String>,
    /// Runs completed since start.
    pub runs: u64,
    /// When the last run ended (RFC 3339); absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// How long the last run took, from the catalog update to the last unlink, ms.
    pub last_run_ms: f64,
    /// Samples deleted since start.
    pub samples_removed: u64,
    /// Bytes deleted since start.
    pub bytes_removed: u64,
    /// Files deleted since start.
    pub files_removed: u64,
    /// GPUs left without samples, so gone from the list, since start.
    pub gpus_removed: u64,
}

/// `GET /stats` of a collector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatsBody {
    /// Records received from the broker (redeliveries included).
    pub records_consumed: u64,
    /// Records stored.
    pub records_stored: u64,
    /// Records received again after being stored; acknowledged, not stored twice.
    pub records_duplicate: u64,
    /// Records whose time was already past the retention when they arrived;
    /// acknowledged, not stored.
    #[serde(default)]
    pub records_expired: u64,
    /// Samples stored.
    pub samples_stored: u64,
    /// Bytes the JSONL files hold now.
    #[serde(default)]
    pub stored_bytes: u64,
    /// Records sent to the dead-letter topic, by reason (`bad_json`, `missing_gpu_id`,
    /// `bad_gpu_id`, `bad_timestamp`, `bad_value`, `gpu_limit`).
    pub bad_records: BTreeMap<String, u64>,
    /// Batches stored.
    pub batches: u64,
    /// Batches that failed to store (NACKed, to come again).
    pub batch_errors: u64,
    /// Mean time of a batch's sync, microseconds.
    pub sync_us_mean: u64,
    /// GPUs stored.
    pub gpus: usize,
    /// The cache.
    pub cache: CacheStatsBody,
    /// Retention: its settings and what it deleted.
    #[serde(default)]
    pub retention: RetentionStatsBody,
    /// Records of the topic not yet acknowledged by the group, as the broker last said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
    /// Consumer group.
    pub group: String,
}

/// One collector in a gateway's `/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DownstreamStats {
    /// The collector's base URL.
    pub url: String,
    /// Its `/stats`, if it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<StatsBody>,
    /// Why not, if it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /stats` of a gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GatewayStatsBody {
    /// Each collector.
    pub collectors: Vec<DownstreamStats>,
}

/// `GET /stats`: a collector's counters, or a gateway's list of its collectors' (the one
/// path whose body differs between the two).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StatsAnswer {
    /// From a collector.
    Collector(Box<StatsBody>),
    /// From a gateway.
    Gateway(GatewayStatsBody),
}

/// The metrics `/api/v1/overview` reports per GPU (their latest values).
pub const OVERVIEW_METRICS: [&str; 5] = [
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
];

/// One GPU in `/api/v1/overview`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OverviewGpu {
    /// The GPU id.
    #[schema(example = "GPU-5fd4f087-86f3-7a43-b711-4771313afc50")]
    pub uuid: String,
    /// Host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "mtv5-dgx1-hgpu-031")]
    pub hostname: Option<String>,
    /// GPU index on its host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_index: Option<u32>,
    /// GPU model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Latest sample time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub last_seen: Option<String>,
    /// Latest value of each of `metrics` the GPU has reported (others are absent).
    #[schema(example = json!({"DCGM_FI_DEV_GPU_UTIL": 97.0, "DCGM_FI_DEV_GPU_TEMP": 64.0}))]
    pub latest: BTreeMap<String, f64>,
}

/// `GET /api/v1/overview`: every GPU with the latest value of a few metrics, for the
/// dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OverviewBody {
    /// When this answer was made (RFC 3339, UTC): compare `last_seen` with it.
    pub timestamp: String,
    /// The metrics reported in `latest`.
    pub metrics: Vec<String>,
    /// Number of GPUs.
    pub count: usize,
    /// The GPUs, by id.
    pub gpus: Vec<OverviewGpu>,
}

/// The broker as a collector's monitor last read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BrokerView {
    /// The broker addresses the collector was given (it talks to the first that answers).
    pub addrs: Vec<String>,
    /// When `stats` was read (RFC 3339, UTC); absent before the first answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_at: Option<String>,
    /// The broker's `STATS` document (`spec/wire.md`, "Admin documents"): topics with
    /// partitions, groups with lag, in-flight, acked, redelivered and dead-lettered counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub stats: Option<serde_json::Value>,
    /// The broker's `INFO` document (version, storage, fsync, limits), from connecting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub info: Option<serde_json::Value>,
    /// Why the last read failed, if it did (`stats` is then the last good one, if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One collector in `/api/v1/pipeline`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PipelineCollector {
    /// The collector's base URL (behind a gateway; absent on a collector's own answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Its `/health`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthBody>,
    /// Its `/stats`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<StatsBody>,
    /// Why it did not answer, if it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /api/v1/pipeline`: the broker's `STATS` and each collector's health and counters,
/// for the dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PipelineBody {
    /// When this answer was made (RFC 3339, UTC).
    pub timestamp: String,
    /// The broker (from the first collector that has its `STATS`, behind a gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<BrokerView>,
    /// The collector, or each collector behind a gateway.
    pub collectors: Vec<PipelineCollector>,
}

/// One bucket of a series: start (ms since the epoch), sample count, least, greatest and
/// mean value.
pub type SeriesBucket = (i64, u64, f64, f64, f64);

/// One metric in `/api/v1/gpus/{gpu_id}/series`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SeriesMetric {
    /// Metric name.
    #[schema(example = "DCGM_FI_DEV_GPU_UTIL")]
    pub metric: String,
    /// Buckets with samples, by time: `[start_ms, count, min, max, mean]` each, `start_ms`
    /// a multiple of `step_ms` since the epoch. Buckets without samples are left out.
    #[schema(value_type = Vec<Vec<f64>>, example = json!([[1795943520000_i64, 12, 3.0, 97.0, 54.5]]))]
    pub buckets: Vec<SeriesBucket>,
}

/// `GET /api/v1/gpus/{gpu_id}/series`: a GPU's samples in a window, per metric, in buckets
/// of equal length, for charts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SeriesBody {
    /// The GPU id.
    pub gpu_id: String,
    /// Window start (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub start_time: String,
    /// Window end (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub end_time: String,
    /// Bucket length, ms: the shortest of 1, 10, 100, 250, 500 ms, 1, 2, 5, 10, 15, 30 s,
    /// 1, 2, 5, 10, 15, 30 min, 1, 2, 3, 6, 12 h (then whole days) at least
    /// `(end_time - start_time) / points`.
    pub step_ms: i64,
    /// Samples counted.
    pub samples: u64,
    /// `cache`, `file`, or `merged` (a gateway over several collectors).
    #[schema(value_type = AnswerSource)]
    pub source: String,
    /// Set when the window held too many samples to read (over 2,000,000): the buckets
    /// are complete from this time on, older ones are missing or partial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete_from: Option<String>,
    /// Metrics with samples in the window, by name.
    pub series: Vec<SeriesMetric>,
}

/// Query parameters of `GET /api/v1/gpus/{gpu_id}/series`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeriesParams {
    /// Window start, inclusive (RFC 3339 `date-time`). Required; not after `end_time`
    /// (400).
    #[param(format = DateTime, max_length = 64, example = "2026-11-29T09:00:00Z")]
    pub start_time: String,
    /// Window end, inclusive (RFC 3339 `date-time`). Required.
    #[param(format = DateTime, max_length = 64, example = "2026-11-29T10:00:00Z")]
    pub end_time: String,
    /// Only these metrics (repeat the parameter for several, at most 32). Default: all.
    #[param(value_type = Option<Vec<MetricName>>, max_items = 32, explode = true,
        style = Form)]
    pub metric: Option<Vec<String>>,
    /// Most buckets per metric.
    #[param(minimum = 1, maximum = 2000, default = 300, example = 300)]
    pub points: Option<u32>,
}
