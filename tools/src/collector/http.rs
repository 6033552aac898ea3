//! The collector's HTTP API (axum): `/health`, `/api/v1/gpus`,
//! `/api/v1/gpus/{gpu_id}/telemetry`, `/api/v1/gpus/{gpu_id}/series`, `/api/v1/overview`,
//! `/api/v1/pipeline`, `/stats`, `/metrics` and `/openapi.json`; and the dashboard at `/`
//! ([`crate::dashboard`]).
//!
//! The OpenAPI document is generated from the handlers' annotations ([`openapi`]) and kept
//! in `spec/openapi.json`; a test fails when that file is stale.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::query;
use super::timestamp::{format_ms_string, now_ms};
use super::Shared;
use crate::api::params::{check_gpu_id, parse_series_query, parse_telemetry_query};
use crate::api::{
    json_bytes, protect, ApiError, BrokerHealth, CacheStatsBody, Cursor, ErrorBody, GpuId, GpuInfo,
    GpuList, HealthBody, MetricName, OverviewBody, OverviewGpu, PipelineBody, PipelineCollector,
    RetentionStatsBody, SampleOrder, SeriesBody, SeriesMetric, SeriesParams, StatsAnswer,
    StatsBody, TelemetryPage, TelemetryParams, OVERVIEW_METRICS,
};

/// Version reported by `/health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    shared: Arc<Shared>,
    token: Option<String>,
    group: Arc<str>,
}

impl AppState {
    /// State over `shared`; `token`, if set, is required on every path but `/health`.
    pub fn new(shared: Arc<Shared>, token: Option<String>, group: String) -> AppState {
        AppState { shared, token, group: Arc::from(group) }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "GPU telemetry API",
        version = "1.0.0",
        description = "Telemetry of GPUs as stored by telemetry-collector, also served by \
            telemetry-gateway over several collectors. Errors are JSON: \
            {\"status\":\"error\",\"errorType\":...,\"error\":...,\"param\":...}."
    ),
    // Types only parameters refer to: the routes collect the bodies' schemas, not these.
    components(schemas(GpuId, MetricName, SampleOrder, Cursor)),
    tags(
        (name = "telemetry", description = "GPUs and their samples"),
        (name = "operations", description = "Health, counters and Prometheus metrics")
    )
)]
struct ApiDoc;

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(list_gpus))
        .routes(routes!(gpu_telemetry))
        .routes(routes!(gpu_series))
        .routes(routes!(stats))
        .routes(routes!(metrics))
        .routes(routes!(overview))
        .routes(routes!(pipeline))
}

/// The OpenAPI document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().split_for_parts().1
}

/// The OpenAPI document as `spec/openapi.json` holds it (pretty JSON and a newline).
pub fn openapi_json() -> String {
    let mut text = openapi().to_pretty_json().expect("the document serialises");
    text.push('\n');
    text
}

/// The whole router, layers included.
pub fn router(state: AppState) -> Router {
    let token = state.token.clone();
    let (router, api) = api_router().split_for_parts();
    let api = Arc::new(api);
    let router = router
        .route("/openapi.json", axum::routing::get(move || async move { Json((*api).clone()) }))
        .merge(crate::dashboard::routes())
        .with_state(state);
    protect(router, token)
}

/// Serves until SIGINT or SIGTERM (or until `stop` is set by someone else), then stops
/// accepting and lets requests in progress finish.
///
/// # Errors
/// Accept failures.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    stop: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    crate::api::warn_if_exposed(addr, state.token.as_deref());
    log::info!("http listening on {addr}");
    crate::api::serve(listener, router(state), shutdown_signal(stop)).await
}

/// Resolves on SIGINT or SIGTERM (setting `stop`), or once `stop` is set.
pub async fn shutdown_signal(stop: Arc<AtomicBool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => if stop.load(Relaxed) { break },
        }
    }
    log::info!("shutdown requested");
    stop.store(true, Relaxed);
}

/// Health of the collector and its broker connection.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses(
        (status = 200, description = "Consuming, and the broker answers", body = HealthBody),
        (status = 503, description = "Not consuming, or the broker does not answer",
            body = HealthBody)
    ))]
async fn health(State(state): State<AppState>) -> Response {
    let body = health_body(&state);
    let status = if body.status == "ok" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

fn health_body(state: &AppState) -> HealthBody {
    let stats = &state.shared.stats;
    let healthy = stats.healthy();
    let last_poll = stats.last_poll_ms.load(Relaxed);
    HealthBody {
        status: if healthy { "ok" } else { "unavailable" }.into(),
        version: VERSION.into(),
        timestamp: format_ms_string(now_ms()),
        broker: Some(BrokerHealth {
            connected: stats.broker_up.load(Relaxed),
            consuming: stats.consuming.load(Relaxed),
            group: state.group.to_string(),
            last_poll: (last_poll > 0).then(|| format_ms_string(last_poll)),
        }),
        collectors: None,
    }
}

/// Every GPU with telemetry.
#[utoipa::path(get, path = "/api/v1/gpus", tag = "telemetry",
    responses(
        (status = 200, description = "GPUs by id", body = GpuList),
        (status = 503, description = "Behind a gateway: no collector answers", body = ErrorBody)
    ))]
async fn list_gpus(State(state): State<AppState>) -> Json<GpuList> {
    let catalog = state.shared.catalog.read().expect("catalog lock");
    let gpus: Vec<GpuInfo> = catalog
        .gpus
        .iter()
        .map(|(uuid, g)| GpuInfo {
            uuid: uuid.to_string(),
            hostname: g.identity.hostname.clone(),
            gpu_index: g.identity.gpu_index,
            device: g.identity.device.clone(),
            model: g.identity.model.clone(),
            first_seen: g.first_ms.map(format_ms_string),
            last_seen: g.last_ms.map(format_ms_string),
            sample_count: g.samples,
        })
        .collect();
    Json(GpuList { count: gpus.len(), gpus })
}

/// Samples of one GPU, one page at a time: oldest first, or newest first with
/// `order=desc` (`?order=desc&limit=3`: the latest three).
#[utoipa::path(get, path = "/api/v1/gpus/{gpu_id}/telemetry", tag = "telemetry",
    params(
        ("gpu_id" = GpuId, Path, description = "The GPU's id"),
        TelemetryParams),
    responses(
        (status = 200, description = "A page of samples", body = TelemetryPage),
        (status = 400, description = "A bad parameter or GPU id", body = ErrorBody),
        (status = 404, description = "No such GPU", body = ErrorBody),
        (status = 503, description = "Behind a gateway: a collector holding the GPU \
            does not answer", body = ErrorBody)
    ))]
async fn gpu_telemetry(
    State(state): State<AppState>,
    gpu_id: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let Path(gpu_id) = gpu_id.map_err(|e| ApiError::bad("gpu_id", e.body_text()))?;
    check_gpu_id(&gpu_id)?;
    let query = parse_telemetry_query(raw.as_deref())?;
    let shared = &state.shared;
    if !shared.catalog.read().expect("catalog lock").gpus.contains_key(gpu_id.as_str()) {
        return Err(ApiError::not_found(format!("no telemetry for GPU {gpu_id}")));
    }
    let page = match query::from_cache(shared, &gpu_id, &query) {
        Some(page) => page,
        None => {
            let (shared, id) = (Arc::clone(shared), gpu_id.clone());
            let read =
                tokio::task::spawn_blocking(move || query::from_file(&shared, &id, &query)).await;
            match read {
                Ok(Ok(Some(page))) => page,
                Ok(Ok(None)) => {
                    return Err(ApiError::not_found(format!("no telemetry for GPU {gpu_id}")))
                }
                Ok(Err(e)) => return Err(ApiError::internal(format!("reading GPU {gpu_id}: {e}"))),
                Err(e) => return Err(ApiError::internal(format!("query task failed: {e}"))),
            }
        }
    };
    Ok(json_bytes(StatusCode::OK, super::page::write_page(&gpu_id, &page)))
}

/// A GPU's samples in a window, per metric, in buckets of equal length (count, least,
/// greatest and mean value): what the dashboard charts.
#[utoipa::path(get, path = "/api/v1/gpus/{gpu_id}/series", tag = "telemetry",
    params(
        ("gpu_id" = GpuId, Path, description = "The GPU's id"),
        SeriesParams),
    responses(
        (status = 200, description = "Buckets per metric", body = SeriesBody),
        (status = 400, description = "A bad parameter or GPU id", body = ErrorBody),
        (status = 404, description = "No such GPU", body = ErrorBody),
        (status = 503, description = "Behind a gateway: a collector holding the GPU \
            does not answer", body = ErrorBody)
    ))]
async fn gpu_series(
    State(state): State<AppState>,
    gpu_id: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Json<SeriesBody>, ApiError> {
    let Path(gpu_id) = gpu_id.map_err(|e| ApiError::bad("gpu_id", e.body_text()))?;
    check_gpu_id(&gpu_id)?;
    let query = parse_series_query(raw.as_deref())?;
    let (shared, id, q) = (Arc::clone(&state.shared), gpu_id.clone(), query.clone());
    let read = tokio::task::spawn_blocking(move || super::series::series(&shared, &id, &q)).await;
    let series = match read {
        Ok(Ok(Some(series))) => series,
        Ok(Ok(None)) => return Err(ApiError::not_found(format!("no telemetry for GPU {gpu_id}"))),
        Ok(Err(e)) => return Err(ApiError::internal(format!("reading GPU {gpu_id}: {e}"))),
        Err(e) => return Err(ApiError::internal(format!("query task failed: {e}"))),
    };
    Ok(Json(SeriesBody {
        gpu_id,
        start_time: format_ms_string(query.start_ms),
        end_time: format_ms_string(query.end_ms),
        step_ms: series.step_ms,
        samples: series.samples,
        source: series.source.name().to_string(),
        complete_from: series.complete_from_ms.map(format_ms_string),
        series: series
            .metrics
            .into_iter()
            .map(|(metric, buckets)| SeriesMetric {
                metric,
                buckets: buckets
                    .into_iter()
                    .map(|(t, b)| (t, b.count, b.min, b.max, b.sum / b.count as f64))
                    .collect(),
            })
            .collect(),
    }))
}

/// Counters of the collector.
#[utoipa::path(get, path = "/stats", tag = "operations",
    responses((status = 200, description = "Counters since start: a collector's own, or \
        (from a gateway) each collector's", body = StatsAnswer)))]
async fn stats(State(state): State<AppState>) -> Json<StatsBody> {
    Json(stats_body(&state.shared, &state.group))
}

/// Builds the `/stats` body.
pub fn stats_body(shared: &Shared, group: &str) -> StatsBody {
    let s = &shared.stats;
    let cache = shared.cache.lock().expect("cache lock").stats();
    let (hits, misses) = (s.cache_hits.load(Relaxed), s.cache_misses.load(Relaxed));
    let batches = s.batches.load(Relaxed);
    let lag = s.lag.load(Relaxed);
    StatsBody {
        records_consumed: s.records_consumed.load(Relaxed),
        records_stored: s.records_stored.load(Relaxed),
        records_duplicate: s.records_duplicate.load(Relaxed),
        records_expired: s.records_expired.load(Relaxed),
        samples_stored: s.samples_stored.load(Relaxed),
        stored_bytes: s.stored_bytes.load(Relaxed),
        bad_records: s.bad_counts().into_iter().map(|(r, n)| (r.name().to_string(), n)).collect(),
        batches,
        batch_errors: s.batch_errors.load(Relaxed),
        sync_us_mean: s.sync_us_total.load(Relaxed) / batches.max(1),
        gpus: shared.catalog.read().expect("catalog lock").gpus.len(),
        cache: CacheStatsBody {
            gpus: cache.gpus,
            samples: cache.samples,
            samples_max: cache.samples_max,
            samples_per_gpu: cache.samples_per_gpu,
            evictions: cache.evictions,
            hits,
            misses,
            hit_rate: if hits + misses == 0 { 0.0 } else { hits as f64 / (hits + misses) as f64 },
        },
        retention: retention_body(shared),
        lag: (lag >= 0).then_some(lag as u64),
        group: group.to_string(),
    }
}

fn retention_body(shared: &Shared) -> RetentionStatsBody {
    let (s, r) = (&shared.stats, &shared.retention);
    let visible_from = shared.visible_from_ms();
    let last_run = s.retention_last_run_ms.load(Relaxed);
    RetentionStatsBody {
        hours: (r.age_ms.load(Relaxed) / super::catalog::HOUR_MS) as u64,
        bytes_max: r.bytes_max.load(Relaxed),
        visible_from: (visible_from > i64::MIN).then(|| format_ms_string(visible_from)),
        runs: s.retention_runs.load(Relaxed),
        last_run: (last_run > 0).then(|| format_ms_string(last_run)),
        last_run_ms: s.retention_last_run_us.load(Relaxed) as f64 / 1000.0,
        samples_removed: s.retention_samples_removed.load(Relaxed),
        bytes_removed: s.retention_bytes_removed.load(Relaxed),
        files_removed: s.retention_files_removed.load(Relaxed),
        gpus_removed: s.retention_gpus_removed.load(Relaxed),
    }
}

/// The latest value of every metric of every GPU, and the collector's own counters, in
/// the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4",
        content_type = "text/plain; version=0.0.4", body = String)))]
async fn metrics(State(state): State<AppState>) -> Response {
    let text = super::metrics::render(&state.shared);
    ([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], text).into_response()
}

/// Every GPU with the latest value of a few metrics (utilisation, temperature, power,
/// memory used and free), from the same state as `/metrics`: what the dashboard's
/// overview shows.
#[utoipa::path(get, path = "/api/v1/overview", tag = "telemetry",
    responses(
        (status = 200, description = "GPUs by id, with their latest values", body = OverviewBody),
        (status = 503, description = "Behind a gateway: no collector answers", body = ErrorBody)
    ))]
async fn overview(State(state): State<AppState>) -> Json<OverviewBody> {
    let catalog = state.shared.catalog.read().expect("catalog lock");
    let gpus: Vec<OverviewGpu> = catalog
        .gpus
        .iter()
        .map(|(uuid, g)| OverviewGpu {
            uuid: uuid.to_string(),
            hostname: g.identity.hostname.clone(),
            gpu_index: g.identity.gpu_index,
            model: g.identity.model.clone(),
            last_seen: g.last_ms.map(format_ms_string),
            latest: OVERVIEW_METRICS
                .iter()
                .filter_map(|m| g.latest.get(*m).map(|l| (m.to_string(), l.value)))
                .collect(),
        })
        .collect();
    drop(catalog);
    Json(OverviewBody {
        timestamp: format_ms_string(now_ms()),
        metrics: OVERVIEW_METRICS.iter().map(|m| m.to_string()).collect(),
        count: gpus.len(),
        gpus,
    })
}

/// The broker's `STATS` (read once a second), and this collector's health and counters:
/// what the dashboard's pipeline page shows.
#[utoipa::path(get, path = "/api/v1/pipeline", tag = "operations",
    responses((status = 200, description = "Broker and collector state", body = PipelineBody)))]
async fn pipeline(State(state): State<AppState>) -> Json<PipelineBody> {
    let broker = state.shared.broker.lock().expect("broker lock").clone();
    Json(PipelineBody {
        timestamp: format_ms_string(now_ms()),
        broker: Some(broker),
        collectors: vec![PipelineCollector {
            url: None,
            health: Some(health_body(&state)),
            stats: Some(stats_body(&state.shared, &state.group)),
            error: None,
        }],
    })
}
