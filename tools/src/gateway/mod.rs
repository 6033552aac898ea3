//! `telemetry-gateway`: the collector API over several collectors.
//!
//! - `/api/v1/gpus` asks every collector and merges the lists (a GPU several collectors
//!   hold, say after partitions moved between them, appears once, with the union of what
//!   they know).
//! - `/api/v1/gpus/{gpu_id}/telemetry` goes to the collectors that hold the GPU, known from
//!   their GPU lists (asked again on a miss, or when over 5 s old). With one holder the
//!   answer passes through; with several, their pages are merged in the query's order
//!   (`order=asc` or `desc`; duplicates dropped), which is the order every collector pages
//!   in, so the gateway's cursors (positions in that order) work across them.
//! - `/health` reports each collector's status (200 only if all are healthy), `/stats`
//!   each collector's counters, `/metrics` all their series with a `collector` label.
//! - `/api/v1/overview` merges the collectors' overviews by GPU (the newest `last_seen`
//!   wins); `/api/v1/pipeline` takes the broker's `STATS` from the first collector that has
//!   it and lists each collector's health and counters. Both feed the dashboard, which the
//!   gateway serves at `/` like a collector.
//!
//! Parameters are validated here too, so bad input gets the same 400 as from a collector.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use log::{info, warn};

use crate::api::params::{
    check_gpu_id, parse_series_query, parse_telemetry_query, METRIC_PARAMS_MAX, QUERY_BYTES_MAX,
};
use crate::api::{
    json_bytes, protect, ApiError, DownstreamHealth, DownstreamStats, GatewayStatsBody, GpuInfo,
    GpuList, HealthBody, OverviewBody, OverviewGpu, PipelineBody, PipelineCollector, SeriesBody,
    SeriesBucket, SeriesMetric, StatsBody, TelemetryPage, OVERVIEW_METRICS,
};
use crate::collector::http::{openapi, shutdown_signal, VERSION};
use crate::collector::line::SampleKey;
use crate::collector::query::{encode_cursor, Order, LIMIT_MAX};
use crate::collector::series::{Bucket, SeriesQuery};
use crate::collector::timestamp::{format_ms_string, now_ms, parse_rfc3339_ms};

/// Time a collector has to answer one request.
pub const DOWNSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// Oldest knowledge of which collector holds which GPU a query relies on: a GPU's samples
/// can reach a second collector when partitions move, so the lists are read again.
pub const HOLDERS_MAX_AGE: Duration = Duration::from_secs(5);

/// Settings of a gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// HTTP listen address.
    pub http: SocketAddr,
    /// Base URLs of the collectors (`http://127.0.0.1:8081`).
    pub collectors: Vec<String>,
    /// Bearer token this gateway requires (all but `/health`), if any.
    pub http_token: Option<String>,
    /// Bearer token to send to the collectors, if they require one.
    pub collector_token: Option<String>,
}

/// The gateway's state.
#[derive(Debug)]
struct Gateway {
    client: reqwest::Client,
    collectors: Vec<String>,
    collector_token: Option<String>,
    /// GPU id → indexes of the collectors holding it, from their last lists, and when
    /// those lists were read.
    holders: RwLock<(Holders, Option<Instant>)>,
}

type Shared = Arc<Gateway>;

/// GPU id → indexes of the collectors that list it.
type Holders = HashMap<String, Vec<usize>>;

/// Runs a gateway until SIGINT or SIGTERM.
///
/// # Errors
/// The address cannot be bound, or the HTTP client cannot be built.
pub fn run(config: GatewayConfig) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("http")
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.http).await?;
        let addr = listener.local_addr()?;
        crate::api::warn_if_exposed(addr, config.http_token.as_deref());
        info!("gateway over {} collectors; http listening on {addr}", config.collectors.len());
        let app = router(config).map_err(std::io::Error::other)?;
        let stop = Arc::new(AtomicBool::new(false));
        crate::api::serve(listener, app, shutdown_signal(stop)).await
    })
}

/// The gateway's router, layers included.
///
/// # Errors
/// The HTTP client cannot be built.
pub fn router(config: GatewayConfig) -> Result<Router, reqwest::Error> {
    let client = reqwest::Client::builder().timeout(DOWNSTREAM_TIMEOUT).build()?;
    let collectors = config.collectors.iter().map(|u| normalise_url(u)).collect();
    let gateway = Arc::new(Gateway {
        client,
        collectors,
        collector_token: config.collector_token,
        holders: RwLock::new((HashMap::new(), None)),
    });
    let api = Arc::new(openapi());
    let router = Router::new()
        .route("/health", get(health))
        .route("/api/v1/gpus", get(list_gpus))
        .route("/api/v1/gpus/{gpu_id}/telemetry", get(gpu_telemetry))
        .route("/api/v1/gpus/{gpu_id}/series", get(gpu_series))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/pipeline", get(pipeline))
        .route("/openapi.json", get(move || async move { Json((*api).clone()) }))
        .merge(crate::dashboard::routes())
        .with_state(gateway);
    Ok(protect(router, config.http_token))
}

fn normalise_url(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.starts_with("http://") || url.starts_with("https://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

/// A downstream answer: status and body, or why there is none.
type Fetched = Result<(StatusCode, bytes::Bytes), String>;

impl Gateway {
    async fn fetch(&self, index: usize, path_and_query: &str) -> Fetched {
        let url = format!("{}{path_and_query}", self.collectors[index]);
        let mut request = self.client.get(&url);
        if let Some(token) = &self.collector_token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status =
            StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let body = response.bytes().await.map_err(|e| format!("{url}: {e}"))?;
        Ok((status, body))
    }

    /// Asks the collectors in `indexes` at once; answers in the same order.
    async fn fan_out(self: &Arc<Self>, indexes: &[usize], path_and_query: &str) -> Vec<Fetched> {
        let mut tasks = tokio::task::JoinSet::new();
        for (slot, &index) in indexes.iter().enumerate() {
            let (gateway, path) = (Arc::clone(self), path_and_query.to_string());
            tasks.spawn(async move { (slot, gateway.fetch(index, &path).await) });
        }
        let mut answers: Vec<Fetched> = vec![Err("no answer".into()); indexes.len()];
        while let Some(joined) = tasks.join_next().await {
            if let Ok((slot, fetched)) = joined {
                answers[slot] = fetched;
            }
        }
        answers
    }

    fn all(&self) -> Vec<usize> {
        (0..self.collectors.len()).collect()
    }

    /// Asks every collector for its GPUs; merges them and refreshes `holders`.
    async fn gpu_lists(self: &Arc<Self>) -> Result<Vec<GpuInfo>, ApiError> {
        let answers = self.fan_out(&self.all(), "/api/v1/gpus").await;
        let mut merged: BTreeMap<String, GpuInfo> = BTreeMap::new();
        let mut holders: HashMap<String, Vec<usize>> = HashMap::new();
        let mut answered = 0;
        for (index, answer) in answers.into_iter().enumerate() {
            let list = ok_json::<GpuList>(answer);
            let list = match list {
                Ok(l) => l,
                Err(e) => {
                    warn!("collector {} gave no GPU list: {e}", self.collectors[index]);
                    continue;
                }
            };
            answered += 1;
            for gpu in list.gpus {
                holders.entry(gpu.uuid.clone()).or_default().push(index);
                match merged.get_mut(&gpu.uuid) {
                    Some(known) => merge_gpu(known, gpu),
                    None => {
                        merged.insert(gpu.uuid.clone(), gpu);
                    }
                }
            }
        }
        if answered == 0 && !self.collectors.is_empty() {
            return Err(ApiError::unavailable("no collector answered"));
        }
        *self.holders.write().expect("holders lock") = (holders, Some(Instant::now()));
        Ok(merged.into_values().collect())
    }
}

impl Gateway {
    /// The collectors holding `gpu_id`, from lists at most [`HOLDERS_MAX_AGE`] old.
    async fn holders_of(self: &Arc<Self>, gpu_id: &str) -> Result<Vec<usize>, ApiError> {
        let (mut holders, stale) = {
            let known = self.holders.read().expect("holders lock");
            let stale = known.1.is_none_or(|at| at.elapsed() > HOLDERS_MAX_AGE);
            (known.0.get(gpu_id).cloned(), stale)
        };
        if holders.is_none() || stale {
            self.gpu_lists().await?;
            holders = self.holders.read().expect("holders lock").0.get(gpu_id).cloned();
        }
        holders.ok_or_else(|| ApiError::not_found(format!("no telemetry for GPU {gpu_id}")))
    }
}

/// Folds what another collector knows of a GPU into `known`.
fn merge_gpu(known: &mut GpuInfo, other: GpuInfo) {
    let ms = |t: &Option<String>| t.as_deref().and_then(|t| parse_rfc3339_ms(t).ok());
    let other_is_newer = ms(&other.last_seen) > ms(&known.last_seen);
    if ms(&other.first_seen).is_some_and(|o| ms(&known.first_seen).is_none_or(|k| o < k)) {
        known.first_seen = other.first_seen.clone();
    }
    if other_is_newer {
        known.last_seen = other.last_seen;
        known.hostname = other.hostname.or(known.hostname.take());
        known.gpu_index = other.gpu_index.or(known.gpu_index);
        known.device = other.device.or(known.device.take());
        known.model = other.model.or(known.model.take());
    }
    known.sample_count += other.sample_count;
}

async fn health(State(gateway): State<Shared>) -> Response {
    let answers = gateway.fan_out(&gateway.all(), "/health").await;
    let mut downstream = Vec::new();
    for (url, answer) in gateway.collectors.iter().zip(answers) {
        let entry = match answer {
            Ok((status, body)) => {
                let parsed = serde_json::from_slice::<HealthBody>(&body).ok();
                DownstreamHealth {
                    url: url.clone(),
                    status: parsed.map_or_else(|| "unavailable".to_string(), |h| h.status),
                    http_status: Some(status.as_u16()),
                    error: None,
                }
            }
            Err(e) => DownstreamHealth {
                url: url.clone(),
                status: "unreachable".into(),
                http_status: None,
                error: Some(e),
            },
        };
        downstream.push(entry);
    }
    let ok = downstream.iter().filter(|d| d.status == "ok").count();
    let status = match ok {
        n if n == downstream.len() && n > 0 => "ok",
        0 => "unavailable",
        _ => "degraded",
    };
    let body = HealthBody {
        status: status.into(),
        version: VERSION.into(),
        timestamp: format_ms_string(now_ms()),
        broker: None,
        collectors: Some(downstream),
    };
    let code = if status == "ok" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

async fn list_gpus(State(gateway): State<Shared>) -> Result<Json<GpuList>, ApiError> {
    let gpus = gateway.gpu_lists().await?;
    Ok(Json(GpuList { count: gpus.len(), gpus }))
}

async fn gpu_telemetry(
    State(gateway): State<Shared>,
    gpu_id: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let Path(gpu_id) = gpu_id.map_err(|e| ApiError::bad("gpu_id", e.body_text()))?;
    check_gpu_id(&gpu_id)?;
    let query = parse_telemetry_query(raw.as_deref())?;
    let holders = gateway.holders_of(&gpu_id).await?;
    let path = match &raw {
        Some(q) => format!("/api/v1/gpus/{gpu_id}/telemetry?{q}"),
        None => format!("/api/v1/gpus/{gpu_id}/telemetry"),
    };
    let answers = gateway.fan_out(&holders, &path).await;
    if let [Ok((status, body))] = answers.as_slice() {
        return Ok(json_bytes(*status, body.to_vec()));
    }
    let pages: Vec<TelemetryPage> = match parse_answers(answers, &gpu_id)? {
        Ok(pages) => pages,
        Err(passed_on) => return Ok(passed_on),
    };
    if pages.is_empty() {
        return Err(ApiError::not_found(format!("no telemetry for GPU {gpu_id}")));
    }
    let merged = merge_pages(&gpu_id, pages, query.limit, query.order);
    let bytes = serde_json::to_vec(&merged).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(json_bytes(StatusCode::OK, bytes))
}

/// A collector's answer as `T` if it is a 200 with a readable body; otherwise why not.
fn ok_json<T: serde::de::DeserializeOwned>(answer: Fetched) -> Result<T, String> {
    match answer {
        Ok((StatusCode::OK, body)) => serde_json::from_slice::<T>(&body).map_err(|e| e.to_string()),
        Ok((status, _)) => Err(format!("HTTP {status}")),
        Err(e) => Err(e),
    }
}

/// The collectors' answers about one GPU: the parsed 200 bodies (404s skipped, unreadable
/// ones logged), or the first other answer to pass on as it is (`Ok(Err(response))`), or
/// 503 when a collector holding the GPU is unreachable.
fn parse_answers<T: serde::de::DeserializeOwned, B: AsRef<[u8]>, E: std::fmt::Display>(
    answers: Vec<Result<(StatusCode, B), E>>,
    gpu_id: &str,
) -> Result<Result<Vec<T>, Response>, ApiError> {
    let mut parsed = Vec::new();
    for answer in answers {
        match answer {
            Ok((StatusCode::OK, body)) => match serde_json::from_slice::<T>(body.as_ref()) {
                Ok(value) => parsed.push(value),
                Err(e) => warn!("unreadable answer about {gpu_id}: {e}"),
            },
            Ok((StatusCode::NOT_FOUND, _)) => {}
            Ok((status, body)) => return Ok(Err(json_bytes(status, body.as_ref().to_vec()))),
            Err(e) => {
                return Err(ApiError::unavailable(format!(
                    "a collector holding {gpu_id} is unreachable: {e}"
                )))
            }
        }
    }
    Ok(Ok(parsed))
}

async fn gpu_series(
    State(gateway): State<Shared>,
    gpu_id: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let Path(gpu_id) = gpu_id.map_err(|e| ApiError::bad("gpu_id", e.body_text()))?;
    check_gpu_id(&gpu_id)?;
    let query = parse_series_query(raw.as_deref())?;
    let holders = gateway.holders_of(&gpu_id).await?;
    let path = format!("/api/v1/gpus/{gpu_id}/series?{}", raw.unwrap_or_default());
    let answers = gateway.fan_out(&holders, &path).await;
    if let [Ok((status, body))] = answers.as_slice() {
        return Ok(json_bytes(*status, body.to_vec()));
    }
    let bodies: Vec<SeriesBody> = match parse_answers(answers, &gpu_id)? {
        Ok(bodies) => bodies,
        Err(passed_on) => return Ok(passed_on),
    };
    let shared = shared_buckets(&bodies);
    let mut merged = merge_series(bodies)
        .ok_or_else(|| ApiError::not_found(format!("no telemetry for GPU {gpu_id}")))?;
    if !shared.is_empty() {
        gateway.settle_shared_buckets(&gpu_id, &query, &holders, &shared, &mut merged).await?;
    }
    Ok(Json(merged).into_response())
}

/// Most samples the gateway reads from the collectors to settle the buckets several of
/// them hold (one query, all collectors together). Past it the older shared buckets are
/// left out, and `complete_from` says from when on the answer is whole.
pub const SHARED_SAMPLES_MAX: usize = 2_000_000;
/// Most time ranges of shared buckets read for one query: the nearest ones are joined
/// beyond it (reading a few unshared buckets along), so a query makes few requests.
const SHARED_RANGES_MAX: usize = 8;

/// Per metric, the starts of the buckets that more than one answer holds: the only
/// buckets where a sample several collectors stored can be counted twice.
pub fn shared_buckets(bodies: &[SeriesBody]) -> BTreeMap<String, BTreeSet<i64>> {
    let mut holders: BTreeMap<(&str, i64), usize> = BTreeMap::new();
    for body in bodies {
        for series in &body.series {
            for bucket in &series.buckets {
                *holders.entry((series.metric.as_str(), bucket.0)).or_default() += 1;
            }
        }
    }
    let mut shared: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for ((metric, start), n) in holders {
        if n > 1 {
            shared.entry(metric.to_string()).or_default().insert(start);
        }
    }
    shared
}

/// A time range (inclusive) to read samples of some metrics in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleRange {
    /// First ms.
    pub from_ms: i64,
    /// Last ms.
    pub to_ms: i64,
    /// The metrics whose shared buckets lie in the range, sorted.
    pub metrics: Vec<String>,
}

/// The ranges covering the `shared` buckets of length `step_ms` within the window
/// `[start_ms, end_ms]`: adjacent buckets make one range, and the ranges nearest to each
/// other are joined until at most `ranges_max` remain. Oldest first.
pub fn shared_ranges(
    shared: &BTreeMap<String, BTreeSet<i64>>,
    step_ms: i64,
    (start_ms, end_ms): (i64, i64),
    ranges_max: usize,
) -> Vec<SampleRange> {
    let step_ms = step_ms.max(1);
    let starts: BTreeSet<i64> = shared.values().flatten().copied().collect();
    // (first bucket start, last bucket start)
    let mut spans: Vec<(i64, i64)> = Vec::new();
    for start in starts {
        match spans.last_mut() {
            Some(last) if last.1.saturating_add(step_ms) == start => last.1 = start,
            _ => spans.push((start, start)),
        }
    }
    while spans.len() > ranges_max.max(1) {
        let nearest = (1..spans.len())
            .min_by_key(|&i| spans[i].0.saturating_sub(spans[i - 1].1))
            .expect("two spans or more");
        spans[nearest - 1].1 = spans[nearest].1;
        spans.remove(nearest);
    }
    spans
        .into_iter()
        .map(|(first, last)| {
            let metrics = shared
                .iter()
                .filter(|(_, starts)| starts.range(first..=last).next().is_some())
                .map(|(metric, _)| metric.clone())
                .collect();
            SampleRange {
                from_ms: first.max(start_ms),
                to_ms: last.saturating_add(step_ms - 1).min(end_ms),
                metrics,
            }
        })
        .collect()
}

/// One sample read back to settle shared buckets: its identity (as in telemetry merging:
/// time, partition, offset, metric, the metric as an index into the range's list) and
/// its value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawSample {
    /// Time, ms.
    pub ts_ms: i64,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// Index of the metric in [`SampleRange::metrics`].
    pub metric: u32,
    /// Value.
    pub value: f64,
}

/// The buckets of the shared `(metric, start)` pairs in `range`, from the samples every
/// holder returned: each sample once (by time, partition, offset and metric, the identity
/// telemetry merging uses), whichever collectors hold it. A shared pair without samples
/// maps to `None`.
pub fn settle_range(
    range: &SampleRange,
    shared: &BTreeMap<String, BTreeSet<i64>>,
    step_ms: i64,
    mut samples: Vec<RawSample>,
) -> BTreeMap<(String, i64), Option<Bucket>> {
    let step_ms = step_ms.max(1);
    let key = |s: &RawSample| (s.ts_ms, s.partition, s.offset, s.metric);
    samples.sort_unstable_by_key(key);
    samples.dedup_by(|a, b| key(a) == key(b));
    let mut settled: BTreeMap<(String, i64), Option<Bucket>> = BTreeMap::new();
    for metric in &range.metrics {
        let starts = shared.get(metric).into_iter().flatten();
        for &start in starts.filter(|&&s| s + step_ms > range.from_ms && s <= range.to_ms) {
            settled.insert((metric.clone(), start), None);
        }
    }
    for s in samples {
        if s.ts_ms < range.from_ms || s.ts_ms > range.to_ms {
            continue;
        }
        let Some(metric) = range.metrics.get(s.metric as usize) else { continue };
        let start = s.ts_ms.div_euclid(step_ms) * step_ms;
        if let Some(slot) = settled.get_mut(&(metric.clone(), start)) {
            let one = Bucket { count: 1, min: s.value, max: s.value, sum: s.value };
            match slot {
                Some(bucket) => bucket.merge(&one),
                None => *slot = Some(one),
            }
        }
    }
    settled
}

impl Gateway {
    /// Replaces the buckets of `merged` that several collectors hold (`shared`) by the
    /// buckets of the samples themselves, read from every holder through their telemetry
    /// query and each counted once. Reads at most [`SHARED_SAMPLES_MAX`] samples, newest
    /// ranges first; shared buckets older than that are left out and `complete_from` moves
    /// past them. `samples` is the sum of the counts after.
    async fn settle_shared_buckets(
        self: &Arc<Self>,
        gpu_id: &str,
        query: &SeriesQuery,
        holders: &[usize],
        shared: &BTreeMap<String, BTreeSet<i64>>,
        merged: &mut SeriesBody,
    ) -> Result<(), ApiError> {
        let step_ms = merged.step_ms;
        let ranges =
            shared_ranges(shared, step_ms, (query.start_ms, query.end_ms), SHARED_RANGES_MAX);
        let mut settled: BTreeMap<(String, i64), Option<Bucket>> = BTreeMap::new();
        let mut budget = SHARED_SAMPLES_MAX;
        let mut unsettled_to: Option<i64> = None;
        for range in ranges.iter().rev() {
            if unsettled_to.is_none() {
                match self.read_range(gpu_id, range, holders, budget).await? {
                    Some(samples) => {
                        budget = budget.saturating_sub(samples.len());
                        settled.extend(settle_range(range, shared, step_ms, samples));
                        continue;
                    }
                    None => {
                        warn!(
                            "series of {gpu_id}: over {SHARED_SAMPLES_MAX} samples held by \
                             several collectors; shared buckets before {} left out",
                            format_ms_string(range.to_ms.saturating_add(1))
                        );
                        unsettled_to = Some(range.to_ms);
                    }
                }
            }
            // Over the budget: these shared buckets cannot be told right; leave them out.
            for metric in &range.metrics {
                let starts = shared.get(metric).into_iter().flatten();
                for &start in starts.filter(|&&s| s + step_ms > range.from_ms && s <= range.to_ms) {
                    settled.insert((metric.clone(), start), None);
                }
            }
        }
        let mut samples = 0;
        for series in &mut merged.series {
            series.buckets.retain_mut(|b| match settled.get(&(series.metric.clone(), b.0)) {
                None => true,
                Some(None) => false,
                Some(Some(bucket)) => {
                    *b = (
                        b.0,
                        bucket.count,
                        bucket.min,
                        bucket.max,
                        bucket.sum / bucket.count as f64,
                    );
                    true
                }
            });
            samples += series.buckets.iter().map(|b| b.1).sum::<u64>();
        }
        merged.series.retain(|s| !s.buckets.is_empty());
        merged.samples = samples;
        if let Some(to_ms) = unsettled_to {
            let from = to_ms.saturating_add(1);
            let ms = |t: &Option<String>| t.as_deref().and_then(|t| parse_rfc3339_ms(t).ok());
            if ms(&merged.complete_from).is_none_or(|known| known < from) {
                merged.complete_from = Some(format_ms_string(from));
            }
        }
        Ok(())
    }

    /// Every sample of `range` (its metrics only) from every holder, paging through their
    /// telemetry query at once on all of them; `None` past `budget` samples.
    async fn read_range(
        self: &Arc<Self>,
        gpu_id: &str,
        range: &SampleRange,
        holders: &[usize],
        budget: usize,
    ) -> Result<Option<Vec<RawSample>>, ApiError> {
        let mut tasks = tokio::task::JoinSet::new();
        for &index in holders {
            let (gateway, gpu_id, range) = (Arc::clone(self), gpu_id.to_string(), range.clone());
            tasks.spawn(
                async move { gateway.read_range_from(index, &gpu_id, &range, budget).await },
            );
        }
        let mut samples = Vec::new();
        let mut over = false;
        while let Some(joined) = tasks.join_next().await {
            let read = joined.map_err(|e| ApiError::internal(e.to_string()))?;
            match read.map_err(|e| {
                ApiError::unavailable(format!("a collector holding {gpu_id} is unreachable: {e}"))
            })? {
                Some(part) => samples.extend(part),
                None => over = true,
            }
            over |= samples.len() > budget;
        }
        Ok((!over).then_some(samples))
    }

    /// The samples of `range` one collector holds, page by page; `Ok(None)` past `budget`.
    async fn read_range_from(
        &self,
        index: usize,
        gpu_id: &str,
        range: &SampleRange,
        budget: usize,
    ) -> Result<Option<Vec<RawSample>>, String> {
        let mut params: Vec<(&str, String)> = vec![
            ("start_time", format_ms_string(range.from_ms)),
            ("end_time", format_ms_string(range.to_ms)),
            ("limit", LIMIT_MAX.to_string()),
        ];
        let filter = range.metrics.len() <= METRIC_PARAMS_MAX
            && range.metrics.iter().map(|m| m.len() * 3 + 8).sum::<usize>() < QUERY_BYTES_MAX / 2;
        if filter {
            params.extend(range.metrics.iter().map(|m| ("metric", m.clone())));
        }
        let base = serde_urlencoded::to_string(&params).map_err(|e| e.to_string())?;
        let mut samples = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/gpus/{gpu_id}/telemetry?{base}&cursor={c}"),
                None => format!("/api/v1/gpus/{gpu_id}/telemetry?{base}"),
            };
            let page: TelemetryPage = match self.fetch(index, &path).await? {
                (StatusCode::OK, body) => serde_json::from_slice(&body)
                    .map_err(|e| format!("{}: unreadable page: {e}", self.collectors[index]))?,
                (StatusCode::NOT_FOUND, _) => return Ok(Some(samples)),
                (status, _) => return Err(format!("{}: HTTP {status}", self.collectors[index])),
            };
            for s in page.samples {
                let Ok(metric) = range.metrics.binary_search(&s.metric) else { continue };
                let Ok(ts_ms) = parse_rfc3339_ms(&s.timestamp) else { continue };
                samples.push(RawSample {
                    ts_ms,
                    partition: s.partition,
                    offset: s.offset,
                    metric: metric as u32,
                    value: s.value,
                });
            }
            if samples.len() > budget {
                return Ok(None);
            }
            match page.next_cursor {
                Some(next) if cursor.as_ref() != Some(&next) => cursor = Some(next),
                _ => return Ok(Some(samples)),
            }
        }
    }
}

/// Merges series of the same query from several collectors (the buckets line up, as the
/// step and bucket starts depend on the query only): counts and sums add, least and
/// greatest combine. Right for buckets one collector holds; a bucket several hold may
/// count a sample twice, which [`Gateway::settle_shared_buckets`] then puts right. `None`
/// for no series.
pub fn merge_series(bodies: Vec<SeriesBody>) -> Option<SeriesBody> {
    let mut bodies = bodies.into_iter();
    let mut merged = bodies.next()?;
    let mut metrics: BTreeMap<String, BTreeMap<i64, SeriesBucket>> = BTreeMap::new();
    let mut add = |series: Vec<SeriesMetric>| {
        for s in series {
            let buckets = metrics.entry(s.metric).or_default();
            for b in s.buckets {
                buckets
                    .entry(b.0)
                    .and_modify(|k| {
                        let count = k.1 + b.1;
                        k.4 = (k.4 * k.1 as f64 + b.4 * b.1 as f64) / count.max(1) as f64;
                        k.1 = count;
                        k.2 = k.2.min(b.2);
                        k.3 = k.3.max(b.3);
                    })
                    .or_insert(b);
            }
        }
    };
    add(std::mem::take(&mut merged.series));
    for body in bodies {
        merged.samples += body.samples;
        let ms = |t: &Option<String>| t.as_deref().and_then(|t| parse_rfc3339_ms(t).ok());
        if ms(&body.complete_from) > ms(&merged.complete_from) {
            merged.complete_from = body.complete_from;
        }
        add(body.series);
    }
    merged.source = "merged".into();
    merged.series = metrics
        .into_iter()
        .map(|(metric, buckets)| SeriesMetric { metric, buckets: buckets.into_values().collect() })
        .collect();
    Some(merged)
}

/// Merges pages of the same query from several collectors: samples in key order (or its
/// reverse for [`Order::Desc`]), duplicates (the same record stored by two collectors)
/// once, at most `limit`. Each collector's page holds its first `limit` samples past the
/// cursor in that order, so the merged first `limit` are the first of the union, and the
/// last of them is where the next page starts on every collector.
pub fn merge_pages(
    gpu_id: &str,
    pages: Vec<TelemetryPage>,
    limit: usize,
    order: Order,
) -> TelemetryPage {
    let more_behind = pages.iter().any(|p| p.next_cursor.is_some());
    let mut keyed: Vec<(SampleKey, crate::api::TelemetrySample)> = pages
        .into_iter()
        .flat_map(|p| p.samples)
        .filter_map(|s| {
            let ts_ms = parse_rfc3339_ms(&s.timestamp).ok()?;
            let key = SampleKey {
                ts_ms,
                partition: s.partition,
                offset: s.offset,
                metric: s.metric.clone(),
            };
            Some((key, s))
        })
        .collect();
    match order {
        Order::Asc => keyed.sort_by(|a, b| a.0.cmp(&b.0)),
        Order::Desc => keyed.sort_by(|a, b| b.0.cmp(&a.0)),
    }
    keyed.dedup_by(|a, b| a.0 == b.0);
    let more = more_behind || keyed.len() > limit;
    keyed.truncate(limit);
    let next_cursor = if more { keyed.last().map(|(k, _)| encode_cursor(k)) } else { None };
    let samples: Vec<_> = keyed.into_iter().map(|(_, s)| s).collect();
    TelemetryPage {
        gpu_id: gpu_id.to_string(),
        count: samples.len(),
        source: "merged".into(),
        next_cursor,
        samples,
    }
}

async fn stats(State(gateway): State<Shared>) -> Json<GatewayStatsBody> {
    let answers = gateway.fan_out(&gateway.all(), "/stats").await;
    let collectors = gateway
        .collectors
        .iter()
        .zip(answers)
        .map(|(url, answer)| {
            let parsed = ok_json::<StatsBody>(answer);
            match parsed {
                Ok(stats) => DownstreamStats { url: url.clone(), stats: Some(stats), error: None },
                Err(e) => DownstreamStats { url: url.clone(), stats: None, error: Some(e) },
            }
        })
        .collect();
    Json(GatewayStatsBody { collectors })
}

async fn metrics(State(gateway): State<Shared>) -> Response {
    let answers = gateway.fan_out(&gateway.all(), "/metrics").await;
    let mut texts = Vec::new();
    for (url, answer) in gateway.collectors.iter().zip(answers) {
        match answer {
            Ok((StatusCode::OK, body)) => {
                texts.push((url.clone(), String::from_utf8_lossy(&body).into_owned()))
            }
            Ok((status, _)) => warn!("collector {url} /metrics: HTTP {status}"),
            Err(e) => warn!("collector {url} /metrics: {e}"),
        }
    }
    let text = merge_metrics(&texts);
    ([(header::CONTENT_TYPE, crate::collector::metrics::CONTENT_TYPE)], text).into_response()
}

async fn overview(State(gateway): State<Shared>) -> Result<Json<OverviewBody>, ApiError> {
    let answers = gateway.fan_out(&gateway.all(), "/api/v1/overview").await;
    let mut bodies = Vec::new();
    for (url, answer) in gateway.collectors.iter().zip(answers) {
        let parsed = ok_json::<OverviewBody>(answer);
        match parsed {
            Ok(body) => bodies.push(body),
            Err(e) => warn!("collector {url} gave no overview: {e}"),
        }
    }
    if bodies.is_empty() && !gateway.collectors.is_empty() {
        return Err(ApiError::unavailable("no collector answered"));
    }
    Ok(Json(merge_overviews(bodies)))
}

/// Merges collectors' overviews by GPU: the entry with the newest `last_seen` gives the
/// identity and values; metrics only an older entry has are kept from it.
pub fn merge_overviews(bodies: Vec<OverviewBody>) -> OverviewBody {
    let ms = |t: &Option<String>| t.as_deref().and_then(|t| parse_rfc3339_ms(t).ok());
    let mut merged: BTreeMap<String, OverviewGpu> = BTreeMap::new();
    for gpu in bodies.into_iter().flat_map(|b| b.gpus) {
        match merged.get_mut(&gpu.uuid) {
            None => {
                merged.insert(gpu.uuid.clone(), gpu);
            }
            Some(known) => {
                let (mut newer, older) = if ms(&gpu.last_seen) > ms(&known.last_seen) {
                    (gpu, known.clone())
                } else {
                    (known.clone(), gpu)
                };
                for (metric, value) in older.latest {
                    newer.latest.entry(metric).or_insert(value);
                }
                newer.hostname = newer.hostname.or(older.hostname);
                newer.gpu_index = newer.gpu_index.or(older.gpu_index);
                newer.model = newer.model.or(older.model);
                *known = newer;
            }
        }
    }
    let gpus: Vec<OverviewGpu> = merged.into_values().collect();
    OverviewBody {
        timestamp: format_ms_string(now_ms()),
        metrics: OVERVIEW_METRICS.iter().map(|m| m.to_string()).collect(),
        count: gpus.len(),
        gpus,
    }
}

async fn pipeline(State(gateway): State<Shared>) -> Json<PipelineBody> {
    let answers = gateway.fan_out(&gateway.all(), "/api/v1/pipeline").await;
    let mut broker = None;
    let mut collectors = Vec::new();
    for (url, answer) in gateway.collectors.iter().zip(answers) {
        let parsed = ok_json::<PipelineBody>(answer);
        match parsed {
            Ok(body) => {
                if broker.is_none() && body.broker.as_ref().is_some_and(|b| b.stats.is_some()) {
                    broker = body.broker;
                }
                let own = body.collectors.into_iter().next();
                collectors.push(PipelineCollector {
                    url: Some(url.clone()),
                    health: own.as_ref().and_then(|c| c.health.clone()),
                    stats: own.and_then(|c| c.stats),
                    error: None,
                });
            }
            Err(e) => collectors.push(PipelineCollector {
                url: Some(url.clone()),
                health: None,
                stats: None,
                error: Some(e),
            }),
        }
    }
    Json(PipelineBody { timestamp: format_ms_string(now_ms()), broker, collectors })
}

/// Merges Prometheus text pages: one `# HELP` and `# TYPE` per family, every series with a
/// `collector` label naming where it came from.
pub fn merge_metrics(pages: &[(String, String)]) -> String {
    #[derive(Default)]
    struct Family {
        help: Option<String>,
        kind: Option<String>,
        series: Vec<String>,
    }
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for (url, text) in pages {
        let mut label = String::from("collector=\"");
        for c in url.chars() {
            match c {
                '\\' => label.push_str("\\\\"),
                '"' => label.push_str("\\\""),
                c => label.push(c),
            }
        }
        label.push('"');
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default();
                families
                    .entry(name.to_string())
                    .or_default()
                    .help
                    .get_or_insert_with(|| line.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap_or_default();
                families
                    .entry(name.to_string())
                    .or_default()
                    .kind
                    .get_or_insert_with(|| line.to_string());
            } else if !line.is_empty() && !line.starts_with('#') {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                let name = &line[..end];
                let rest = &line[end..];
                let series = match rest.strip_prefix('{') {
                    Some(labels) if labels.starts_with('}') => format!("{name}{{{label}{labels}"),
                    Some(labels) => format!("{name}{{{label},{labels}"),
                    None => format!("{name}{{{label}}}{rest}"),
                };
                families.entry(name.to_string()).or_default().series.push(series);
            }
        }
    }
    let mut out = String::new();
    for family in families.values() {
        for line in family.help.iter().chain(&family.kind).chain(&family.series) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TelemetrySample;

    fn sample(ts: &str, offset: u64) -> TelemetrySample {
        TelemetrySample {
            timestamp: ts.into(),
            metric: "M".into(),
            value: 1.0,
            partition: 0,
            offset,
            source_timestamp: None,
            labels: BTreeMap::new(),
            attributes: BTreeMap::new(),
        }
    }

    fn page(samples: Vec<TelemetrySample>, more: bool) -> TelemetryPage {
        TelemetryPage {
            gpu_id: "g".into(),
            count: samples.len(),
            source: "file".into(),
            next_cursor: more.then(|| "x".into()),
            samples,
        }
    }

    #[test]
    fn pages_merge_in_order_without_duplicates() {
        let a = page(
            vec![sample("2026-01-01T00:00:01.000Z", 1), sample("2026-01-01T00:00:03.000Z", 3)],
            false,
        );
        let b = page(
            vec![sample("2026-01-01T00:00:02.000Z", 2), sample("2026-01-01T00:00:03.000Z", 3)],
            false,
        );
        let merged = merge_pages("g", vec![a.clone(), b.clone()], 10, Order::Asc);
        let offsets: Vec<u64> = merged.samples.iter().map(|s| s.offset).collect();
        assert_eq!(offsets, [1, 2, 3]);
        assert!(merged.next_cursor.is_none());
        let first_two = merge_pages("g", vec![a.clone(), b.clone()], 2, Order::Asc);
        assert_eq!(first_two.count, 2);
        assert!(first_two.next_cursor.is_some());
        let reverse = |p: &TelemetryPage| {
            let mut p = p.clone();
            p.samples.reverse();
            p
        };
        let newest = merge_pages("g", vec![reverse(&a), reverse(&b)], 2, Order::Desc);
        let offsets: Vec<u64> = newest.samples.iter().map(|s| s.offset).collect();
        assert_eq!(offsets, [3, 2], "newest first, the duplicate once");
        let at = |ts: &str, offset| SampleKey {
            ts_ms: parse_rfc3339_ms(ts).unwrap(),
            partition: 0,
            offset,
            metric: "M".into(),
        };
        let cursor = at("2026-01-01T00:00:02.000Z", 2);
        assert_eq!(newest.next_cursor, Some(encode_cursor(&cursor)), "continues before 2");
    }

    #[test]
    fn series_merge_bucket_by_bucket() {
        let body = |buckets: Vec<SeriesBucket>, samples| SeriesBody {
            gpu_id: "g".into(),
            start_time: "2026-01-01T00:00:00.000Z".into(),
            end_time: "2026-01-01T00:05:00.000Z".into(),
            step_ms: 1000,
            samples,
            source: "cache".into(),
            complete_from: None,
            series: vec![SeriesMetric { metric: "M".into(), buckets }],
        };
        let a = body(vec![(0, 2, 1.0, 3.0, 2.0), (1000, 1, 5.0, 5.0, 5.0)], 3);
        let b = body(vec![(1000, 3, 1.0, 9.0, 3.0)], 3);
        let merged = merge_series(vec![a, b]).unwrap();
        assert_eq!((merged.samples, merged.source.as_str()), (6, "merged"));
        assert_eq!(merged.series[0].buckets, [(0, 2, 1.0, 3.0, 2.0), (1000, 4, 1.0, 9.0, 3.5)]);
        assert!(merge_series(vec![]).is_none());
    }

    fn series_body(series: Vec<(&str, Vec<SeriesBucket>)>) -> SeriesBody {
        SeriesBody {
            gpu_id: "g".into(),
            start_time: String::new(),
            end_time: String::new(),
            step_ms: 1000,
            samples: 0,
            source: "cache".into(),
            complete_from: None,
            series: series
                .into_iter()
                .map(|(metric, buckets)| SeriesMetric { metric: metric.into(), buckets })
                .collect(),
        }
    }

    #[test]
    fn only_buckets_several_collectors_hold_are_shared() {
        let b = |t| (t, 1, 1.0, 1.0, 1.0);
        let a = series_body(vec![("M", vec![b(0), b(1000)]), ("N", vec![b(0)])]);
        let other = series_body(vec![("M", vec![b(1000), b(2000)]), ("N", vec![b(1000)])]);
        let shared = shared_buckets(&[a, other]);
        assert_eq!(shared.len(), 1);
        assert_eq!(shared["M"], BTreeSet::from([1000]));
    }

    #[test]
    fn shared_buckets_make_few_ranges_within_the_window() {
        let shared = BTreeMap::from([
            ("A".to_string(), BTreeSet::from([0, 1000, 2000, 9000])),
            ("B".to_string(), BTreeSet::from([2000, 3000, 20_000])),
        ]);
        let ranges = shared_ranges(&shared, 1000, (500, 20_499), 8);
        let spans: Vec<(i64, i64, Vec<String>)> =
            ranges.into_iter().map(|r| (r.from_ms, r.to_ms, r.metrics)).collect();
        let ab = vec!["A".to_string(), "B".to_string()];
        assert_eq!(
            spans,
            [
                (500, 3999, ab.clone()),
                (9000, 9999, vec!["A".to_string()]),
                (20_000, 20_499, vec!["B".to_string()]),
            ],
            "adjacent buckets join; the window clips the ends"
        );
        let joined = shared_ranges(&shared, 1000, (0, 30_000), 2);
        assert_eq!(joined.len(), 2);
        assert_eq!((joined[0].from_ms, joined[0].to_ms), (0, 9999), "the nearest joined");
        assert_eq!(joined[0].metrics, ab);
    }

    #[test]
    fn settled_buckets_count_each_sample_once() {
        let shared = BTreeMap::from([("A".to_string(), BTreeSet::from([0, 1000, 2000]))]);
        let range = SampleRange { from_ms: 0, to_ms: 2999, metrics: vec!["A".into(), "B".into()] };
        let raw =
            |ts_ms, offset, metric, value| RawSample { ts_ms, partition: 0, offset, metric, value };
        let samples = vec![
            raw(10, 1, 0, 2.0),
            raw(10, 1, 0, 2.0), // the same sample from a second collector
            raw(20, 2, 0, 4.0),
            raw(10, 1, 1, 9.0), // another metric of the same record: not shared
            raw(1500, 3, 0, 7.0),
            raw(20, 3, 0, 6.0), // the same time, another record: a sample of its own
        ];
        let settled = settle_range(&range, &shared, 1000, samples);
        let bucket = |count, min, max, sum| Some(Bucket { count, min, max, sum });
        assert_eq!(
            settled,
            BTreeMap::from([
                (("A".to_string(), 0), bucket(3, 2.0, 6.0, 12.0)),
                (("A".to_string(), 1000), bucket(1, 7.0, 7.0, 7.0)),
                (("A".to_string(), 2000), None),
            ])
        );
    }

    #[test]
    fn overviews_merge_by_gpu_newest_first() {
        let gpu = |seen: &str, util: Option<f64>, temp: f64| OverviewGpu {
            uuid: "g".into(),
            hostname: Some(format!("host-{seen}")),
            gpu_index: Some(0),
            model: None,
            last_seen: Some(format!("2026-01-01T00:00:0{seen}.000Z")),
            latest: util
                .map(|u| ("DCGM_FI_DEV_GPU_UTIL".to_string(), u))
                .into_iter()
                .chain([("DCGM_FI_DEV_GPU_TEMP".to_string(), temp)])
                .collect(),
        };
        let body =
            |gpus| OverviewBody { timestamp: String::new(), metrics: vec![], count: 1, gpus };
        let merged = merge_overviews(vec![
            body(vec![gpu("1", Some(50.0), 40.0)]),
            body(vec![gpu("2", None, 60.0)]),
        ]);
        assert_eq!(merged.count, 1);
        let g = &merged.gpus[0];
        assert_eq!(g.hostname.as_deref(), Some("host-2"));
        assert_eq!(g.latest["DCGM_FI_DEV_GPU_TEMP"], 60.0, "the newer value");
        assert_eq!(g.latest["DCGM_FI_DEV_GPU_UTIL"], 50.0, "kept from the older");
    }

    #[test]
    fn metric_pages_merge_by_family_with_a_collector_label() {
        let one = "# HELP A a\n# TYPE A gauge\nA{gpu=\"0\"} 1\n# HELP c c\n# TYPE c counter\nc 5\n";
        let two = "# HELP A a\n# TYPE A gauge\nA{gpu=\"1\"} 2\n# HELP c c\n# TYPE c counter\nc 7\n";
        let text = merge_metrics(&[("u1".into(), one.into()), ("u2".into(), two.into())]);
        assert_eq!(
            text,
            "# HELP A a\n# TYPE A gauge\nA{collector=\"u1\",gpu=\"0\"} 1\nA{collector=\"u2\",gpu=\"1\"} 2\n\
             # HELP c c\n# TYPE c counter\nc{collector=\"u1\"} 5\nc{collector=\"u2\"} 7\n"
        );
    }
}
